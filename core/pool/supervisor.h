/* Internal: the OTP-style supervisor that pools (and later pipeline stages)
 * use to run their workers. Not a public header: the pool and pipeline
 * options expose its policy. Its functions are hidden in libmpx.so; the
 * supervisor suite links the static library to call them.
 *
 * A supervisor owns `n` worker slots on a libuv loop. For each start (and
 * restart) of slot i it asks its owner to fill the process options
 * (prepare), starts the process with the process API (or through a zygote
 * that prepare names, core/process/forkserver.h), and then watches it through its
 * pidfd (uv_poll), or for the child of a forkserver or zygote through the
 * pipe its wait status arrives on: no SIGCHLD, no polling. It captures the
 * worker's stderr through a pipe (the supervisor passes the write end to
 * the child in pass_fds and tells prepare its number, which the owner
 * hands to the worker; mpx__sup_worker_init(fd) in the child moves it onto
 * fd 2), relays every line to its own stderr prefixed with
 * "[<name> worker <i> pid <pid>] " (one write() per line), and keeps the
 * last lines of each worker for error messages. A line longer than
 * MPX__SUP_LINE_MAX bytes is cut there; the rest of it is dropped.
 *
 * When a worker exits, the owner hears of it (exited, with the exit code
 * and those last lines) before any restart. All the stderr the worker
 * wrote has been read by then. Then the policy decides:
 *  - PERMANENT: always restarted; TRANSIENT: restarted only after an
 *    abnormal exit (a signal or a non-zero code); TEMPORARY: never.
 *  - A retirement (mpx__sup_retire(), e.g. maxtasksperchild) that ends
 *    with exit code 0 is restarted at once, whatever the policy, and is
 *    not counted against the intensity.
 *  - A start that fails (prepare() or mpx_process_start() returns an
 *    error) counts as an abnormal exit with code 127: exited() reports it
 *    with pid 0 and the error message as `tail`, and the same policy
 *    applies, so a worker that can never start breaks the supervisor
 *    instead of looping.
 *  - Intensity: more than max_restarts restarts within `period` seconds
 *    breaks the supervisor: no more restarts, every live worker is killed
 *    (SIGKILL; exited() is still reported for each), and broken() is
 *    called once with a message naming the cause, e.g.
 *    "pool-1: 4 restarts in 10.0 s (limit 3); last: worker 1 (pid 123)
 *    killed by signal 11 (SIGSEGV); stderr: <its last line>".
 *  - Empty: when the last worker has ended and the policy starts no
 *    other (TEMPORARY, or TRANSIENT after normal exits), empty() is
 *    called once with the cause, so an owner with work pending can fail
 *    it rather than wait for a worker that will never come.
 *  - Backoff: the k-th consecutive abnormal exit of a slot waits
 *    min(backoff_min * 2^(k-1), backoff_max) before the restart (uv_timer);
 *    a worker that lived longer than backoff_max resets k, and so does a
 *    normal exit (code 0), which is restarted at once.
 *
 * Everything runs on the loop thread: every function here must be called on
 * it, and every callback is called on it. Callbacks may call
 * mpx__sup_kill, _retire, _stop and the queries, never mpx__sup_free.
 * mpx__sup_start calls prepare() and started() for the first starts; the
 * other callbacks (exited, broken, and every restart) come from the loop,
 * never from inside mpx__sup_start. */
#ifndef MPX_CORE_SUPERVISOR_H
#define MPX_CORE_SUPERVISOR_H

#include <stdbool.h>
#include <sys/types.h>
#include <uv.h>

#include "mpx/process.h"

/* Lines of stderr kept per worker for messages, and the longest line kept
 * or relayed (bytes, without the newline). */
#define MPX__SUP_TAIL_LINES 8
#define MPX__SUP_LINE_MAX 512
/* max_restarts value meaning "no limit". */
#define MPX__SUP_UNLIMITED 0xffffffffu

typedef enum {
  MPX__RESTART_PERMANENT = 0,
  MPX__RESTART_TRANSIENT = 1,
  MPX__RESTART_TEMPORARY = 2
} mpx__restart_t;

typedef struct mpx__sup_s mpx__sup_t;

/* One start of a slot. The supervisor sets stderr_fd (the write end of
 * the worker's stderr pipe, in this process and, at the same number, in
 * the child) and zeroes opts before calling prepare; prepare fills opts
 * and tells the worker the number (in its args). The supervisor appends
 * stderr_fd to its own copy of opts.pass_fds (the owner's array is not
 * modified), so prepare may list at most 13 descriptors. When opts.name
 * is NULL the process is named "<name>-worker-<idx>". Everything opts
 * points to must stay valid until the start has happened; when prepare
 * returned 0, the supervisor then calls `release` (if set), whether the
 * start worked or not. A prepare that fails cleans up after itself
 * (release is not called) and should leave a message for
 * mpx_last_error(). */
typedef struct mpx__zygote_s mpx__zygote_t;

typedef struct {
  int stderr_fd;
  mpx_process_opts_t opts;
  void (*release)(void *owner_arg, unsigned idx);
  /* Set (with the fork start method) to have the fork done by this zygote
   * (forkserver.h) instead of by this process, which may have threads. */
  mpx__zygote_t *zygote;
} mpx__sup_start_t;

typedef struct {
  const char *name;          /* log prefix, copied: "pool-1"; NULL: "sup" */
  unsigned n;                /* worker slots, at least 1 */
  mpx__restart_t restart;
  /* Intensity: at most max_restarts restarts in `period` seconds. Both 0:
   * the defaults, 5 restarts in 5 s. period <= 0 with max_restarts > 0:
   * 5 s. max_restarts 0 with a period: the first restart breaks it.
   * MPX__SUP_UNLIMITED: no limit. Otherwise at most 1000000. */
  unsigned max_restarts;
  double period;
  /* Seconds; 0, 0: restart at once. backoff_max below backoff_min is
   * taken as backoff_min. */
  double backoff_min, backoff_max;
  bool quiet;                /* do not relay stderr (still kept for messages) */
  void *arg;                 /* passed to every callback */
  /* Fill the process options for (re)starting slot idx. Non-zero: that
   * start fails as if the process had exited with code 127. Required. */
  int (*prepare)(void *arg, unsigned idx, mpx__sup_start_t *st);
  /* Slot idx runs pid (after mpx_process_start succeeded). Optional. */
  void (*started)(void *arg, unsigned idx, pid_t pid);
  /* Slot idx's process ended: exitcode as mpx_process_exitcode (negative:
   * signal; 255 when its status was lost), `tail`: its last stderr lines
   * (at most MPX__SUP_TAIL_LINES, joined by '\n', no final newline;
   * "" if none), valid during the call. A start that failed is reported
   * with pid 0, exitcode 127 and the error message as tail. Called before
   * any restart decision. Optional. */
  void (*exited)(void *arg, unsigned idx, pid_t pid, int exitcode,
                 const char *tail);
  /* The intensity was exceeded (or a start failed past it); `why` names
   * the cause, valid during the call. Called once. Optional. */
  void (*broken)(void *arg, const char *why);
  /* No worker is left and none will be started again: the last one ended
   * and the policy restarts none (TEMPORARY, or TRANSIENT after normal
   * exits), outside mpx__sup_stop. `why` names the policy and the last
   * end, e.g. "pool-1: no worker left: worker 1 (pid 123) killed by
   * signal 9 (SIGKILL); restart policy temporary"; valid during the call.
   * Called once, after exited(); never after broken(). Optional. */
  void (*empty)(void *arg, const char *why);
} mpx__sup_opts_t;

/* A supervisor on loop; nothing starts until mpx__sup_start. MPX_EINVAL
 * for bad options (n == 0, no prepare, an unknown policy, a negative or
 * NaN backoff, a NaN period, max_restarts too large). */
int mpx__sup_new(mpx__sup_t **out, uv_loop_t *loop,
                         const mpx__sup_opts_t *o);
/* Start every slot. A slot whose start fails is handled by the policy
 * (from the loop), so this returns 0 even then; MPX_ESTATE when called a
 * second time or after mpx__sup_stop. */
int mpx__sup_start(mpx__sup_t *s);
/* Send a signal to slot idx's worker (through its pidfd). 0 also when no
 * worker runs there; MPX_EINVAL for idx >= n. */
int mpx__sup_kill(mpx__sup_t *s, unsigned idx, int sig);
/* Slot idx's worker is retiring normally (it will exit 0 by itself):
 * restart it without counting it against the intensity. Ignored when no
 * worker runs there. */
void mpx__sup_retire(mpx__sup_t *s, unsigned idx);
/* Stop supervising: no more restarts (a pending backoff restart is
 * cancelled); live workers get SIGTERM, and SIGKILL after `grace`
 * seconds (negative: never). exited() is still reported for each. May be
 * called again, e.g. with a shorter grace. */
void mpx__sup_stop(mpx__sup_t *s, double grace);
/* Workers running now (started and not yet reported by exited()); whether
 * the supervisor is broken. */
unsigned mpx__sup_alive(const mpx__sup_t *s);
bool mpx__sup_broken(const mpx__sup_t *s);
/* pid of slot idx's worker, 0 if none. */
pid_t mpx__sup_pid(const mpx__sup_t *s, unsigned idx);
/* Restarts so far (all slots, retirements excluded). */
unsigned mpx__sup_restarts(const mpx__sup_t *s);
/* Close every handle (killing live workers with SIGKILL and reaping them
 * before it returns) and free the supervisor once the loop has run their
 * close callbacks: call it on the loop thread, outside the supervisor's
 * callbacks, then let the loop run (uv_run) until it has no more handles
 * of the supervisor. No callback is called after this. NULL is allowed. */
void mpx__sup_free(mpx__sup_t *s);

/* In a worker process, first thing: move the stderr pipe `fd` onto fd 2
 * (and make stderr line-buffered). A no-op for fd < 0. */
void mpx__sup_worker_init(int fd);

#endif
