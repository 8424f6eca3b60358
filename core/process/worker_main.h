/* Internal: the mpx-worker program's entry point (core/process/spawn.c).
 * Not installed. tools/worker/mpx-worker.c, linked to libmpx.so, includes
 * this file and calls it, so the symbol stays exported (MPX_API) though no
 * public header declares it. */
#ifndef MPX_CORE_PROCESS_WORKER_MAIN_H
#define MPX_CORE_PROCESS_WORKER_MAIN_H

#include "mpx/common.h"

MPX_API int mpx__worker_main(int argc, char **argv);

#endif /* MPX_CORE_PROCESS_WORKER_MAIN_H */
