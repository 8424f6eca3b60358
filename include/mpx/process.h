/* mpx: processes, after Python's multiprocessing.Process.
 *
 * A process is created with a target and its arguments (bytes), started
 * with one of three start methods, then joined:
 *
 *   mpx_process_opts_t o = {0};
 *   o.target = work;  o.args = &n;  o.args_len = sizeof n;
 *   mpx_process_t *p;
 *   if (mpx_process_new(&p, &o) == 0 && mpx_process_start(p) == 0) {
 *     mpx_process_join(p, -1);
 *     mpx_process_exitcode(p, &code);
 *   }
 *   mpx_process_free(p);
 *
 * Start methods:
 *  - fork: the child is a copy of the caller and calls the target pointer.
 *    Fast, but a copy of a multi-threaded caller inherits locks that other
 *    threads held; mpx logs a warning the first time that happens.
 *  - forkserver: a single-threaded server, exec'd from the same program on
 *    first use (it never runs main()), forks the children. Children start
 *    from the program's initial state, like Python's forkserver: globals
 *    hold their static initial values and no lock of the caller is held.
 *    Target pointers may lie in the program or in any shared object.
 *  - spawn: the child execs mpx-worker, which dlopens a shared object and
 *    calls a symbol: the target must be "path/lib.so:symbol" (or a pointer
 *    to an exported function of a shared object). A missing file or symbol
 *    fails mpx_process_start() with MPX_EPLUGIN / MPX_ENOSYM and a message
 *    naming both.
 *
 * Handles are not thread-safe: use one handle from one thread at a time.
 * Different handles may be used from different threads.
 *
 * Ownership: mpx_process_new gives the caller a handle it ends with
 * mpx_process_free; strings returned about a process are borrowed from
 * its handle. */
#ifndef MPX_PROCESS_H
#define MPX_PROCESS_H

#include <stdbool.h>
#include <sys/types.h>
#include "common.h"

typedef struct mpx_process_s mpx_process_t;

typedef enum {
  MPX_START_DEFAULT = 0, /* mpx_get_start_method() */
  MPX_START_FORK = 1,
  MPX_START_FORKSERVER = 2,
  MPX_START_SPAWN = 3
} mpx_start_method_t;

/* The child's entry point. `args` is the child's own copy of the bytes given
 * at creation (NULL when args_len is 0). The return value is the exit code
 * (0..255). Returning from it flushes stdout and stderr and ends the child
 * with _exit(), so atexit handlers copied from a fork parent do not run
 * twice; other FILE streams the target wrote must be closed by it (or it
 * can call exit() itself, which flushes everything). */
typedef int (*mpx_target_fn)(const void *args, size_t len);

typedef struct {
  /* Exactly one of target and target_spec. target_spec is
   * "path/lib.so:symbol" and works with every start method; a pointer works
   * with fork and forkserver, and with spawn when it names an exported
   * function of a shared object. */
  mpx_target_fn target;
  const char *target_spec;
  const void *args;   /* copied by mpx_process_new */
  size_t args_len;
  const char *name;   /* copied; default "Process-N" ("Process-N:M" nested) */
  /* Killed when its parent dies, even by SIGKILL. Under fork and spawn the
   * kernel's death signal follows the *thread* that started the child:
   * start daemons from a long-lived thread (forkserver has no such limit). */
  bool daemon;
  mpx_start_method_t start_method;
  /* File descriptors the child gets at the same numbers. Under fork every
   * descriptor is inherited anyway; forkserver children get only
   * stdin/stdout/stderr and these; spawn children also get whatever the
   * caller left without close-on-exec. At most 14 under forkserver. The
   * caller keeps ownership. */
  const int *pass_fds;
  size_t n_pass_fds;
} mpx_process_opts_t;

#ifdef __cplusplus
extern "C" {
#endif

/* Creates an unstarted process. Copies everything it needs from opts.
 * On success *p is owned by the caller: release it with mpx_process_free().
 * MPX_EINVAL when opts name no target or both kinds of target.
 * Own: *p is yours: mpx_process_free; copies name, target_spec, args and
 * the pass_fds array (the descriptors stay yours: not dup'd, not closed). */
MPX_API int mpx_process_new(mpx_process_t **p, const mpx_process_opts_t *opts);

/* Starts the child; allowed once (MPX_ESTATE after that). For spawn (and
 * for target_spec with any method) a target that cannot be resolved fails
 * here, with mpx_last_error() naming the file and the symbol. */
MPX_API int mpx_process_start(mpx_process_t *p);

/* Waits until the child has exited and reaps it. timeout in seconds:
 * negative waits forever, 0 polls. Returns 0 once exited (the exit code is
 * then available), MPX_ETIMEDOUT when it is still running, MPX_ESTATE when
 * it was never started. Joining a process that was already joined returns 0
 * at once. */
MPX_API int mpx_process_join(mpx_process_t *p, double timeout);

/* 1 from a successful start until the child has exited, 0 otherwise. Reaps
 * the child if it has exited. */
MPX_API int mpx_process_is_alive(mpx_process_t *p);

/* Sends SIGTERM, SIGKILL or SIGINT. Signals go through the pidfd, so they
 * never reach an unrelated process that reused the pid. 0 also when the
 * child has already exited; MPX_ESTATE when it was never started. */
MPX_API int mpx_process_terminate(mpx_process_t *p);
MPX_API int mpx_process_kill(mpx_process_t *p);
MPX_API int mpx_process_interrupt(mpx_process_t *p);
MPX_API int mpx_process_signal(mpx_process_t *p, int signum);

/* The exit code: the value the target returned or passed to exit(), or
 * minus the signal number when a signal killed it (-9 for SIGKILL).
 * Returns 0 and sets *code once the child has exited and been reaped by
 * join or is_alive; MPX_EBUSY while it runs; MPX_ESTATE if never started. */
MPX_API int mpx_process_exitcode(mpx_process_t *p, int *code);

/* The child's pid; 0 before start. */
MPX_API pid_t mpx_process_pid(const mpx_process_t *p);

/* A descriptor that becomes readable when the child exits: a pidfd, usable
 * with poll, epoll and uv_poll. Owned by the handle (do not close it); it
 * stays valid until mpx_process_close() or _free(). MPX_ESTATE before start.
 * Own: the descriptor is borrowed until mpx_process_close / _free. */
MPX_API int mpx_process_sentinel(const mpx_process_t *p);

/* Name (owned by the handle), daemon flag and start method actually used.
 * Own: the name is borrowed until mpx_process_free. */
MPX_API const char *mpx_process_name(const mpx_process_t *p);
MPX_API bool mpx_process_daemon(const mpx_process_t *p);
MPX_API mpx_start_method_t mpx_process_start_method(const mpx_process_t *p);

/* Releases the descriptors of an exited child; the handle keeps its pid,
 * name and exit code. MPX_EBUSY while the child runs. */
MPX_API int mpx_process_close(mpx_process_t *p);

/* Frees the handle. A child still running is left running and detached: it
 * is no longer listed by mpx_active_children(), which still reaps it when
 * it exits, so it never stays a zombie. NULL is allowed. */
MPX_API void mpx_process_free(mpx_process_t *p);

/* Reaps every child that has exited, then stores up to `max` handles of the
 * children still running in out[] (borrowed: valid until their owner frees
 * them) and returns how many are running (which may exceed max). out may be
 * NULL when max is 0.
 * Own: the handles in out[] are borrowed until their owner frees them;
 * out itself stays yours. */
MPX_API int mpx_active_children(mpx_process_t **out, size_t max);

/* The calling process: a borrowed handle with the name, pid and daemon flag
 * (join, start and signals return MPX_ESTATE on it). The main process is
 * called "MainProcess".
 * Own: returns a static handle, borrowed until the process ends; never
 * free it. */
MPX_API mpx_process_t *mpx_current_process(void);

/* The process that started this one (through mpx), or NULL in a process
 * mpx did not start. Borrowed. mpx_process_is_alive() and the sentinel work
 * on it: the sentinel becomes readable when the parent dies.
 * Own: returns a static handle, borrowed until the process ends; never
 * free it. */
MPX_API mpx_process_t *mpx_parent_process(void);

/* The number of CPUs this process may run on (its affinity mask), or the
 * MPX_CPU_COUNT environment variable when set to a positive integer. At
 * least 1. */
MPX_API int mpx_cpu_count(void);

/* The default start method: fork unless mpx_set_start_method() or the
 * MPX_START_METHOD environment variable ("fork", "forkserver", "spawn")
 * says otherwise. */
MPX_API mpx_start_method_t mpx_get_start_method(void);
MPX_API int mpx_set_start_method(mpx_start_method_t method);
/* Own: returns a static string, borrowed until the process ends. */
MPX_API const char *mpx_start_method_name(mpx_start_method_t method);
/* Parses "fork", "forkserver" or "spawn"; MPX_EINVAL otherwise.
 * Own: borrows s for the call. */
MPX_API int mpx_start_method_parse(const char *s, mpx_start_method_t *method);

/* Starts the forkserver now rather than on first use, e.g. before the
 * program creates threads. Idempotent. */
MPX_API int mpx_forkserver_start(void);

#ifdef __cplusplus
}
#endif
#endif /* MPX_PROCESS_H */
