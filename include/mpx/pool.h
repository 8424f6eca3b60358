/* mpx: process pools (Python's multiprocessing.Pool) that never hang.
 *
 *   static int square(mpx_task_t *t, const void *in, size_t len) {
 *     int64_t x; memcpy(&x, in, sizeof x); x *= x;
 *     return mpx_task_result(t, &x, sizeof x);
 *   }
 *   mpx_pool_t *p;
 *   mpx_pool_new(&p, NULL);                         // one worker per CPU
 *   int64_t in[1000], out[1000];  ...
 *   mpx_pool_map_fixed(p, MPX_FUNC(square), in, sizeof *in, 1000,
 *                      out, sizeof *out, NULL, -1);   // NULL: no per-task codes
 *   mpx_pool_close(p); mpx_pool_join(p, -1); mpx_pool_free(p);
 *
 * Tasks. A task function runs in a worker process on one argument (bytes)
 * and produces one result (bytes) with mpx_task_result() or fails with
 * mpx_task_fail() (or by returning non-zero). It is named by a pointer
 * (fork and forkserver) or by "path/lib.so:symbol" (every start method;
 * spawn needs it, or a pointer to an exported function of a shared
 * object). Objects travel through a codec with the *_obj calls.
 *
 * Failures. A worker that dies (a crash, a SIGKILL, an exit) is replaced
 * by the supervisor (restart policy, intensity, backoff: see the options)
 * and every task it was running is run again on another worker, up to
 * `retries` times; then that task fails with MPX_EWORKER and a message
 * naming the signal or exit code and the worker's last stderr lines. A
 * batch of tasks sent together is split into single tasks when its worker
 * dies, so one poisonous input fails alone and the others succeed. A
 * result is delivered once: a worker that dies mid-batch delivers nothing
 * of it, and the retry delivers each result once. A task over
 * `task_timeout` gets its worker killed and follows the same path
 * (MPX_ETIMEDOUT once out of retries). When restarts exceed the
 * intensity, the pool is broken: every waiting call returns MPX_EBROKEN
 * at once with mpx_last_error() naming the cause, and later calls too.
 * So is a pool whose last worker ended when its policy restarts none
 * (TEMPORARY; TRANSIENT after normal exits): "pool-1: no worker left:
 * worker 1 (pid 4242) killed by signal 9 (SIGKILL); restart policy
 * temporary". Pending tasks fail then, not after their timeouts.
 *
 * Fork workers. Under MPX_START_FORK (the default) every worker, the
 * first ones and every restart, is forked by the pool's zygote: a
 * single-threaded copy of the caller that mpx_pool_new makes before the
 * pool's thread exists. A worker starts from the caller's state at
 * mpx_pool_new (not what changed or was loaded after), and no restart
 * forks from a process that has the pool's thread.
 *
 * Threads. Every mpx_pool_* call may come from any thread, with the
 * limits below. The pool runs its workers' links, pidfds, timers and
 * callbacks on a libuv loop: by default a thread of its own with its own
 * loop; with opts.loop, the caller's loop (see "The caller's loop").
 * Callbacks (apply_async's callback and error_callback, map_async's) run
 * on the loop's thread: they must be quick and must not block on the
 * pool. The calls that wait for the loop return MPX_EDEADLK on the loop's
 * thread instead of hanging: apply, map, map_fixed, starmap and apply_obj
 * always; mpx_imap_next, join, mpx_async_wait and mpx_async_get when they
 * would have to wait (timeout other than 0 and nothing ready yet; with
 * timeout 0 they only poll). The loop's thread is the pool's own thread,
 * or with opts.loop the thread running that loop (the thread that called
 * mpx_pool_new until the loop's first turn). A callback may call the
 * non-blocking ones, mpx_pool_shutdown and mpx_pool_free (which then does
 * not wait: see "Ending").
 *
 * The caller's loop (opts.loop). The pool adds its handles (an async, a
 * timer, its workers' links and pidfds) to that loop and starts no thread.
 *  - mpx_pool_new must be called on the loop's thread, or before the loop
 *    runs: it adds handles to the loop (uv_* calls are not thread-safe).
 *  - Callbacks run on the loop's thread, inside uv_run. Nothing happens
 *    while the loop does not run: no task is sent, no result delivered.
 *  - The blocking calls work from any other thread while the loop runs,
 *    and return MPX_EDEADLK on the loop's thread (above). The other calls
 *    (apply_async, map_async, imap, mpx_imap_next and mpx_async_get with
 *    timeout 0, close, terminate, stats, mpx_pool_shutdown) work anywhere.
 *  - The pool's handles keep the loop alive until the pool is shut down.
 *    To end it from inside the loop: mpx_pool_shutdown(p, cb, arg) (after
 *    mpx_pool_terminate(p) to cancel what is pending rather than finish
 *    it), then keep the loop running; cb runs on the loop's thread once
 *    every handle of the pool is closed, and mpx_pool_free(p) then only
 *    releases memory (from cb or later, any thread). Or mpx_pool_free(p)
 *    on the loop's thread: it starts the same shutdown, returns at once,
 *    and the pool frees itself when its handles are closed (run the loop
 *    until then: uv_run returns once nothing else is on it). On another
 *    thread, mpx_pool_free(p) waits for the shutdown (the loop must be
 *    running).
 *
 * Large items. An argument or result of more than MPX_POOL_ARENA_THRESHOLD
 * bytes travels through a shared-memory arena that the pool and its
 * workers map (opts.arena_size): the argument is copied once into a block
 * that the worker reads in place (the task's `in` points into it), and a
 * result set with mpx_task_result_buf is written by the task straight
 * into a block (mpx_task_result copies its bytes into one). The caller then gets it with one copy
 * (apply's malloc'd result, map's results, map_fixed's out) or none
 * (mpx_async_get and mpx_imap_next hand out the block's memory itself).
 * When the arena is full the item travels through the socket as usual:
 * no task fails for it. A worker that dies leaves no block behind: the
 * coordinator frees the arguments it lent and reclaims whatever the
 * worker had allocated.
 *
 * Signals. Workers ignore SIGINT. A blocking call (apply, map, imap's
 * next, join) that receives SIGINT in the calling thread returns MPX_EINTR
 * within milliseconds, with the pool still usable: the call's remaining
 * tasks are cancelled (those already running finish and are discarded).
 * mpx installs its SIGINT handler only for the duration of the call, and
 * only when the program's SIGINT disposition is the default.
 *
 * Ending. close() refuses new work; join() waits for submitted work and
 * the workers' exit; free() after close waits for submitted work too
 * (Python's `with Pool()` terminates it). terminate() stops at once:
 * pending calls return MPX_ECANCELED. Freeing a pool that is busy and not
 * closed logs a warning and terminates it rather than hanging.
 * mpx_pool_shutdown() does what free() does without waiting and calls
 * back when it is over. free() on the loop's thread (in a callback, or on
 * the caller's loop's thread) does not wait either: it starts that
 * shutdown and the pool frees itself when it is over (on its own thread
 * after that thread's loop returns; on the caller's loop once its handles
 * are closed).
 *
 * Ownership: the pool (mpx_pool_new) and every mpx_async_t / mpx_imap_t
 * handle are the caller's, ended with their *_free; results returned
 * through out-pointers are malloc'd and the caller's; arguments are
 * copied unless a function says it borrows them. */
#ifndef MPX_POOL_H
#define MPX_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common.h"
#include "codec.h"
#include "conn.h"
#include "obj.h"
#include "process.h"
#include "transport.h"

/* The caller's libuv loop, if it gives one (opts.loop): declared, not
 * included, so that a program that passes no loop needs no libuv headers
 * (<uv.h> names it uv_loop_t). */
struct uv_loop_s;

typedef struct mpx_pool_s mpx_pool_t;
typedef struct mpx_task_s mpx_task_t;
typedef struct mpx_async_s mpx_async_t;
typedef struct mpx_imap_s mpx_imap_t;

/* ---- tasks (worker side) ---------------------------------------------------- */

/* A task. in/len: the argument, valid during the call (a large one is
 * read in place in the pool's arena: never write through it). 0: success (with
 * the result set by mpx_task_result, or an empty result); non-zero: the
 * task failed (message from mpx_task_fail, else "task returned N"). */
typedef int (*mpx_task_fn)(mpx_task_t *t, const void *in, size_t len);

/* How a task is named: a pointer or a "path/lib.so:symbol" spec. */
typedef struct {
  mpx_task_fn fn;
  const char *spec;
} mpx_func_t;
#define MPX_FUNC(f) ((mpx_func_t){.fn = (f), .spec = NULL})
#define MPX_FUNC_SPEC(s) ((mpx_func_t){.fn = NULL, .spec = (s)})

/* Set the task's result (copied; a later call replaces it).
 * Own: copies data. */
MPX_API int mpx_task_result(mpx_task_t *t, const void *data, size_t len);
/* Room for a result of len bytes, to write in place (replaces any result
 * set before); NULL when out of memory. Above MPX_POOL_ARENA_THRESHOLD it
 * is a block of the pool's arena when there is room (the zero-copy path:
 * the caller reads what the task wrote there), else the answer's buffer.
 * Valid until the task returns or sets another result.
 * Own: returns room borrowed until the task returns or sets another
 * result. */
MPX_API void *mpx_task_result_buf(mpx_task_t *t, size_t len);
/* Fail the task with a message; returns MPX_ETASK (return it). */
MPX_API int mpx_task_fail(mpx_task_t *t, const char *fmt, ...)
    MPX_PRINTF(2, 3);
/* The worker's index (0..processes-1) and the pool's worker count. */
MPX_API unsigned mpx_task_worker(const mpx_task_t *t);
MPX_API unsigned mpx_task_workers(const mpx_task_t *t);
/* What the initializer stored with mpx_task_set_state() in this worker.
 * Own: returns the pointer given to mpx_task_set_state (yours, not mpx's). */
MPX_API void *mpx_task_state(const mpx_task_t *t);

/* A worker initializer: runs once in each worker before its first task,
 * with the pool's initargs. Non-zero: the worker exits with that code (a
 * failed start, counted by the restart intensity). */
typedef int (*mpx_pool_init_fn)(const void *args, size_t len);
/* From an initializer: per-worker state for mpx_task_state().
 * Own: keeps state (not copied) for the worker's life; it stays yours. */
MPX_API void mpx_task_set_state(void *state);
/* In a worker process (its initializer or a task): the worker's index and
 * the pool's worker count; 0 and 0 outside a pool worker. */
MPX_API unsigned mpx_pool_worker_index(void);
MPX_API unsigned mpx_pool_worker_count(void);

/* ---- the pool ------------------------------------------------------------------ */

typedef enum {
  MPX_RESTART_PERMANENT = 0, /* always replace a worker that ended */
  MPX_RESTART_TRANSIENT = 1, /* only after an abnormal end */
  MPX_RESTART_TEMPORARY = 2  /* never (the pool shrinks; with no worker
                                left it is broken: MPX_EBROKEN) */
} mpx_restart_t;

/* Items (arguments, results) of more than this many bytes travel through
 * the pool's arena when it has room (see "Large items"). */
#define MPX_POOL_ARENA_THRESHOLD ((size_t)64 << 10)
/* opts.arena_size: no arena; every item travels through the sockets. */
#define MPX_POOL_ARENA_OFF ((size_t)-1)

typedef struct {
  unsigned processes;             /* 0: mpx_cpu_count() */
  mpx_pool_init_fn initializer;   /* or initializer_spec "lib.so:symbol" */
  const char *initializer_spec;
  const void *initargs;           /* copied */
  size_t initargs_len;
  unsigned maxtasksperchild;      /* 0: unlimited */
  mpx_start_method_t start_method;
  mpx_transport_t transport;      /* AUTO: uring where the kernel allows */
  int retries;                    /* per task after a worker death; 0: 2,
                                     negative: none */
  double task_timeout;            /* seconds per task; 0: none */
  size_t chunksize;               /* map: tasks per message; 0: automatic */
  mpx_restart_t restart;
  unsigned max_restarts;          /* intensity; 0: 10 + 2 per process ... */
  double restart_period;          /* ... in this many seconds; 0: 5 */
  double backoff_min, backoff_max;/* seconds; 0: 0.01 and 1 */
  const char *name;               /* log prefix; default "pool-N" */
  bool quiet;                     /* do not relay worker stderr */
  size_t arena_size;              /* bytes of shared memory for large items
                                     (a memfd, mapped by the pool and its
                                     workers; pages are used as touched);
                                     0: 64 MiB; MPX_POOL_ARENA_OFF: none */
  struct uv_loop_s *loop;         /* NULL: the pool runs its own thread and
                                     loop; else the caller's loop (see
                                     "The caller's loop") */
} mpx_pool_opts_t;

#ifdef __cplusplus
extern "C" {
#endif

/* Starts the workers. opts may be NULL. The pool is the caller's
 * (mpx_pool_free). Start failures (a task library that cannot load, an
 * initializer that fails) are retried by the supervisor and break the
 * pool past the intensity; mpx_pool_new itself fails only for bad
 * options or resources (MPX_EINVAL, MPX_ENOMEM, MPX_ENOTSUP for a
 * transport the kernel refuses, an arena that cannot be created). With
 * opts.loop: call it on the loop's thread or before the loop runs.
 * Own: *out is yours: mpx_pool_free; copies name (up to the pool's name
 * buffer), initializer_spec and initargs; keeps opts->loop until the pool
 * is freed (the loop stays yours). */
MPX_API int mpx_pool_new(mpx_pool_t **out, const mpx_pool_opts_t *opts);

/* ---- one task -------------------------------------------------------------- */

/* Runs f(in) on a worker and waits. *out (malloc'd, the caller's; NULL
 * for an empty result) and *out_len receive the result. Returns 0, the
 * task's failure (MPX_ETASK, MPX_EWORKER, MPX_ETIMEDOUT for the task's own
 * timeout) with the message in mpx_last_error(), MPX_ETIMEDOUT when
 * `timeout` (the caller's wait) ran out (the task is cancelled),
 * MPX_EINTR, MPX_EBROKEN, MPX_ECLOSED (pool closed), MPX_ECANCELED,
 * MPX_EDEADLK on the loop's thread.
 * Own: *out is yours: free; borrows in for the call; copies f.spec. */
MPX_API int mpx_pool_apply(mpx_pool_t *p, mpx_func_t f, const void *in,
                           size_t len, void **out, size_t *out_len,
                           double timeout);

typedef void (*mpx_async_cb)(mpx_async_t *a, void *arg);

/* Submits f(in) (in is copied: into the arena when it is large) and
 * returns at once with a handle (the caller's: mpx_async_free, which may
 * come before the result: the result is then dropped). callback (success)
 * or error_callback (failure) is called once, on the loop's thread, when
 * the task ends; both may be NULL. MPX_E2BIG for an argument of 2 GiB or
 * more that the arena cannot take.
 * Own: *out is yours: mpx_async_free; copies in and f.spec; keeps arg
 * (not copied) until the callback has run or the handle is freed. */
MPX_API int mpx_pool_apply_async(mpx_pool_t *p, mpx_func_t f, const void *in,
                                 size_t len, mpx_async_cb callback,
                                 mpx_async_cb error_callback, void *arg,
                                 mpx_async_t **out);

/* Zero-copy arguments: a block of the pool's arena lent to the caller,
 * who writes the argument in place and submits it with
 * mpx_pool_apply_async_loan(); the worker reads that same memory. */
typedef struct {
  void *data;   /* len bytes to write */
  size_t len;
  uint64_t ref; /* the arena block; 0 for no loan */
} mpx_pool_loan_t;

/* Lends len bytes of the arena (never waits). MPX_ENOTSUP: the pool has no
 * arena; MPX_ENOBUFS: no room now (use mpx_pool_apply_async, which copies,
 * or wait for results to come back). On 0 the loan is the caller's until
 * submitted or cancelled.
 * Own: the block in *loan is yours until mpx_pool_apply_async_loan or
 * mpx_pool_loan_cancel; loan->data is borrowed until then. */
MPX_API int mpx_pool_loan(mpx_pool_t *p, size_t len, mpx_pool_loan_t *loan);
/* Gives an unsubmitted loan back; a no-op for an empty one. */
MPX_API void mpx_pool_loan_cancel(mpx_pool_t *p, mpx_pool_loan_t *loan);
/* As mpx_pool_apply_async with the first `used` bytes of the loan as the
 * argument. Takes the loan (empties *loan), also when it fails. The
 * argument stays readable with mpx_async_arg() until mpx_async_free.
 * Own: takes the loan, also on failure; *out and arg as
 * mpx_pool_apply_async. */
MPX_API int mpx_pool_apply_async_loan(mpx_pool_t *p, mpx_func_t f,
                                      mpx_pool_loan_t *loan, size_t used,
                                      mpx_async_cb callback,
                                      mpx_async_cb error_callback, void *arg,
                                      mpx_async_t **out);
/* The argument of an apply_async (or _loan) handle, borrowed until
 * mpx_async_free: to retry it elsewhere or report it after a failure.
 * Own: *data is borrowed until mpx_async_free. */
MPX_API int mpx_async_arg(const mpx_async_t *a, const void **data, size_t *len);

/* Waits for the result: 0 when ready, MPX_ETIMEDOUT, MPX_EINTR, MPX_EDEADLK
 * (on the loop's thread with a timeout other than 0). */
MPX_API int mpx_async_wait(mpx_async_t *a, double timeout);
/* The result, borrowed from the handle (valid until mpx_async_free; a
 * large result is the arena block the worker wrote, not a copy).
 * Returns 0 or the task's failure as mpx_pool_apply, MPX_ETIMEDOUT if not
 * ready within timeout, MPX_EDEADLK as mpx_async_wait.
 * Own: *data is borrowed until mpx_async_free. */
MPX_API int mpx_async_get(mpx_async_t *a, const void **data, size_t *len,
                          double timeout);
MPX_API bool mpx_async_ready(const mpx_async_t *a);
/* Ready and succeeded. */
MPX_API bool mpx_async_successful(const mpx_async_t *a);
/* The failure's message ("" while pending or after a success).
 * Own: returns a string borrowed until mpx_async_free (the pool's, the
 * handle's or a static one; never free it). */
MPX_API const char *mpx_async_error(const mpx_async_t *a);
MPX_API void mpx_async_free(mpx_async_t *a);

/* ---- many tasks ------------------------------------------------------------------- */

/* One result of mpx_pool_map. data: malloc'd, the caller's (free it, or
 * mpx_pool_results_free); error: the failure's message (malloc'd) or
 * NULL. */
typedef struct {
  void *data;
  size_t len;
  int rc;
  char *error;
} mpx_pool_result_t;

/* f over n inputs, results in order into out[0..n). The inputs must stay
 * valid until the call returns. Tasks go to the workers `chunksize` at a
 * time (automatic: about four messages per worker, at most 64 KiB of
 * arguments each). Returns 0 when every task succeeded, else the first
 * failure's code (every out[i] still has its own rc and error), or
 * MPX_ETIMEDOUT / MPX_EINTR / MPX_EBROKEN / MPX_ECLOSED for the call.
 * Own: borrows in for the call; out[i].data and out[i].error are yours:
 * mpx_pool_results_free (or free each). */
MPX_API int mpx_pool_map(mpx_pool_t *p, mpx_func_t f, const mpx_conn_buf_t *in,
                         size_t n, mpx_pool_result_t *out, double timeout);
/* mpx_pool_map without waiting: in and out must stay valid until the
 * handle is ready; callback / error_callback run once on the pool's
 * thread when every task has ended (error_callback when one failed).
 * mpx_async_get / _wait report the call's outcome (no data). Freeing the
 * handle before it is ready cancels the rest of the map: nothing is
 * written into out after mpx_async_free returns.
 * Own: *handle is yours: mpx_async_free; keeps in and out until the
 * handle is ready or freed; out[i] as mpx_pool_map. */
MPX_API int mpx_pool_map_async(mpx_pool_t *p, mpx_func_t f,
                               const mpx_conn_buf_t *in, size_t n,
                               mpx_pool_result_t *out, mpx_async_cb callback,
                               mpx_async_cb error_callback, void *arg,
                               mpx_async_t **handle);

/* Frees the data and messages of out[0..n) (not out itself). */
MPX_API void mpx_pool_results_free(mpx_pool_result_t *out, size_t n);

/* The fast path for fixed-size arguments and results: input i is
 * in + i*in_size, and its result (at most out_size bytes; a longer one
 * fails the task) is written at out + i*out_size. rc, when not NULL,
 * receives each task's status (0 or its failure code). Returns as
 * mpx_pool_map.
 * Own: borrows in, out and rc for the call. */
MPX_API int mpx_pool_map_fixed(mpx_pool_t *p, mpx_func_t f, const void *in,
                               size_t in_size, size_t n, void *out,
                               size_t out_size, int *rc, double timeout);

/* An input source for imap: fill *data / *len with the next argument
 * (borrowed until the next call; it is copied) and return 1, or return
 * 0 at the end, or a negative error (which ends the imap with it). Runs
 * in the thread that calls mpx_imap_next. */
typedef int (*mpx_iter_fn)(void *arg, const void **data, size_t *len);

/* Lazy map over an iterator: at most `window` tasks in flight or waiting
 * to be taken (0: 4 per worker, 16 while the tasks take under 100 µs
 * each ... Python 3.15's buffersize), so an
 * endless input uses bounded memory. ordered: results in input order
 * (imap), else in completion order (imap_unordered). The handle is the
 * caller's: mpx_imap_free stops pulling input and drops what is left.
 * Own: *out is yours: mpx_imap_free; keeps arg (not copied) until then;
 * each item next gives is copied. */
MPX_API int mpx_pool_imap(mpx_pool_t *p, mpx_func_t f, mpx_iter_fn next,
                          void *arg, bool ordered, size_t window,
                          mpx_imap_t **out);
/* The next result: 1 with *data / *len (borrowed until the next call; a
 * large result is the arena block the worker wrote) and *index (its input
 * position; may be NULL); 0 at the end; or a negative code: the task's
 * failure (the imap goes on: call again for the next), or MPX_ETIMEDOUT /
 * MPX_EINTR / MPX_EBROKEN for the call, MPX_EDEADLK on the loop's thread
 * with a timeout other than 0.
 * Own: *data is borrowed until the next mpx_imap_next or mpx_imap_free. */
MPX_API int mpx_imap_next(mpx_imap_t *it, const void **data, size_t *len,
                          size_t *index, double timeout);
MPX_API void mpx_imap_free(mpx_imap_t *it);

/* ---- objects ------------------------------------------------------------------------------ */

/* apply with an mpx_obj argument and result, encoded with codec (the
 * worker's task sees the encoding and answers with one).
 * Own: borrows codec and arg for the call; *result is yours:
 * mpx_obj_release. */
MPX_API int mpx_pool_apply_obj(mpx_pool_t *p, mpx_func_t f,
                               const mpx_codec_t *codec, const mpx_obj_t *arg,
                               mpx_obj_t **result, double timeout);
/* Python's starmap: each element of args (an array of argument tuples,
 * any mpx_obj sequence) is encoded with codec and passed to f; results
 * decoded into *results (a new array, the caller's).
 * Own: borrows codec and args for the call; *results is yours:
 * mpx_obj_release. */
MPX_API int mpx_pool_starmap(mpx_pool_t *p, mpx_func_t f,
                             const mpx_codec_t *codec, const mpx_obj_t *args,
                             mpx_obj_t **results, double timeout);

/* ---- lifetime --------------------------------------------------------------------------- */

MPX_API int mpx_pool_close(mpx_pool_t *p);
/* Stops the workers now; pending calls return MPX_ECANCELED. */
MPX_API int mpx_pool_terminate(mpx_pool_t *p);
/* After close or terminate: waits until the submitted work is done and
 * the workers have exited. MPX_ESTATE before close; MPX_ETIMEDOUT;
 * MPX_EINTR; MPX_EDEADLK on the loop's thread when it would have to wait
 * (timeout other than 0). */
MPX_API int mpx_pool_join(mpx_pool_t *p, double timeout);

typedef void (*mpx_pool_shutdown_cb)(mpx_pool_t *p, void *arg);

/* Ends the pool without waiting, from any thread (the loop's included):
 * closes it (as mpx_pool_close), lets the submitted work finish (call
 * mpx_pool_terminate first to cancel it instead), stops the workers and
 * closes every handle of the pool; then cb (may be NULL) runs once on the
 * loop's thread. After that, mpx_pool_free(p) only releases memory and
 * may be called from cb or later from any thread; mpx_pool_stats and
 * mpx_async_* still work until then. MPX_ESTATE when a shutdown was
 * already started. With the pool's own thread it works too (cb runs on
 * that thread).
 * Own: keeps arg (not copied) until cb has run. */
MPX_API int mpx_pool_shutdown(mpx_pool_t *p, mpx_pool_shutdown_cb cb,
                              void *arg);

/* Frees the pool: closes it, waits for the submitted work (terminating a
 * pool that is busy and not closed, with a warning), stops the workers,
 * releases everything. Handles (mpx_async_t, mpx_imap_t) must be freed
 * before, and no call of another thread may still be inside the pool. On the loop's thread (a callback, or the thread of the caller's
 * loop) it does not wait: it starts mpx_pool_shutdown (keeping a callback
 * given to it) and the pool frees itself once its handles are closed
 * (keep running the caller's loop until then). With opts.loop on another
 * thread, it waits for that while the loop runs. After
 * mpx_pool_shutdown's callback it only releases memory. */
MPX_API void mpx_pool_free(mpx_pool_t *p);

typedef struct {
  unsigned workers;       /* alive now */
  uint64_t started;       /* worker processes started, restarts included */
  uint64_t restarts;      /* restarts after an end the policy counts */
  uint64_t tasks_done;    /* tasks that succeeded */
  uint64_t tasks_failed;  /* tasks that failed (their own error or out of retries) */
  uint64_t retries;       /* task runs repeated after a worker died */
  uint64_t messages;      /* task messages sent to workers */
  bool broken;
  mpx_transport_t transport; /* the one in use */
  /* The arena (all 0 without one). */
  size_t arena_size;      /* bytes the arena's heap manages */
  size_t arena_used;      /* bytes in allocated blocks now, headers included */
  size_t arena_blocks;    /* allocated blocks now */
  uint64_t arena_args;    /* arguments sent to workers as arena blocks (a
                             retry sends its block again and counts again) */
  uint64_t arena_results; /* results received through the arena */
  uint64_t arena_inline;  /* large arguments sent inline: the arena was full */
  uint64_t arena_reclaimed; /* blocks freed for dead workers */
} mpx_pool_stats_t;
MPX_API int mpx_pool_stats(mpx_pool_t *p, mpx_pool_stats_t *st);

/* The worker entry point (for spawn, mpx-worker calls it by name). Not
 * for direct use. */
MPX_API int mpx_pool_worker_main(const void *args, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MPX_POOL_H */
