/* mpx-worker: the program the spawn start method execs. All of its logic
 * lives in libmpx, so it always matches the library that started it. */
#include <mpx.h>

int main(int argc, char **argv) { return mpx__worker_main(argc, argv); }
