/* Internal: zygotes, forkservers made by fork() rather than exec.
 *
 * A pool of fork workers restarts them from its loop thread; a fork() there
 * would be a fork of a multi-threaded process (the child may inherit a
 * lock another thread held, and mpx warns about it). So at creation, while
 * the caller has not started the pool's thread, the pool forks a zygote:
 * a single-threaded copy of the caller that serves fork requests over a
 * socket (the forkserver's protocol and server loop, core/process/forkserver.c).
 * Every worker is forked from it, so each one, restarted or not, starts
 * from the caller's state at pool creation time and calls the target by
 * its pointer (object + offset, the same mapping).
 *
 * The zygote reaps its children and sends each wait status through the
 * child's status pipe (a process handle started through it works as a
 * forkserver child's). It is the workers' parent: their death signal
 * follows it, and it kills its daemon children and exits when the
 * caller's process ends (its pidfd) or the zygote is freed. */
#ifndef MPX_CORE_FORKSERVER_H
#define MPX_CORE_FORKSERVER_H

#include <stdbool.h>
#include <sys/types.h>

#include "process_internal.h"

typedef struct mpx__zygote_s mpx__zygote_t;

/* Forks a zygote of the calling process (logging, as a fork would, when
 * the process has other threads). MPX_ENOMEM, or the fork's error. */
int mpx__zygote_new(mpx__zygote_t **out, const char *name);
/* As mpx__forkserver_fork, through z: the child runs
 * req->object + req->offset. Any thread; calls are serialised. MPX_EBROKEN
 * when the zygote is gone. */
int mpx__zygote_fork(mpx__zygote_t *z, const mpx__fs_request_t *req,
                     pid_t *pid, int *pidfd, int *status_fd);
/* Whether the zygote still runs (it never writes first: a readable
 * socket means it is gone). */
bool mpx__zygote_alive(mpx__zygote_t *z);
/* Ends the zygote (SIGKILL: its children must have been reaped through it
 * already) and reaps it. NULL is allowed. */
void mpx__zygote_free(mpx__zygote_t *z);

/* Starts p (a new handle) through z: as mpx_process_start with the fork
 * method, the fork done by the zygote. In core/process/process.c. */
int mpx__process_start_zygote(mpx_process_t *p, mpx__zygote_t *z);
/* The status pipe of a forkserver's or zygote's child (readable once its
 * wait status is there), or -1. In core/process/process.c. */
int mpx__process_status_fd(const mpx_process_t *p);
/* Logs once per process when fork() is used by a multi-threaded process.
 * In core/process/process.c. */
void mpx__fork_warn_threads(void);

#endif
