/* mpx-worker: the program the spawn start method execs. All of its logic
 * lives in libmpx, so it always matches the library that started it. */
#include "worker_main.h" /* core/process/: not a public header */

int main(int argc, char **argv) { return mpx__worker_main(argc, argv); }
