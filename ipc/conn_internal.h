/* Internal: what core/ tells ipc/conn.c about processes. Not installed.
 *
 * ipc/ sits below core/, so conn.c never calls into the process code: an
 * MPX_WAIT_PROCESS item of mpx_conn_wait is turned into its sentinel (the
 * pidfd) by a function that core/process/process.c registers here when
 * the library is loaded. */
#ifndef MPX_IPC_CONN_INTERNAL_H
#define MPX_IPC_CONN_INTERNAL_H

#include "mpx/process.h"

/* The sentinel of p (>= 0), or a negative error code when it has none
 * (not started, or closed); *name is set to p's name either way. */
typedef int (*mpx__wait_sentinel_fn)(const mpx_process_t *p,
                                     const char **name);

void mpx__conn_set_wait_sentinel(mpx__wait_sentinel_fn fn);

#endif /* MPX_IPC_CONN_INTERNAL_H */
