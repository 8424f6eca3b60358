/* Internal: what the pieces of the pool coordinator share.
 *
 * The coordinator is cut by concept:
 *   pool.c          the API of a pool's lifetime: new, close, join,
 *                   terminate, shutdown, free, stats
 *   pool_req.c      requests: their arena blocks, the function table,
 *                   handing one to the loop, its outcome
 *   pool_wait.c     a caller waiting for the loop (deadline, SIGINT, the
 *                   loop's own thread)
 *   pool_call.c     apply, apply_async, loans, map, map_async, map_fixed
 *   pool_imap.c     imap and imap_unordered
 *   pool_obj.c      the calls on objects (a codec around apply and map)
 *   pool_loop.c     the loop's work: jobs cut from requests, sent, answered
 *   pool_children.c the loop's side of the worker processes (supervisor
 *                   callbacks: start, exit, broken)
 *   pool_wake.c     the loop's handles: set-up, wake-ups, the timeout tick,
 *                   the shutdown's steps, the own thread
 *
 * The per-task path (submit, wake, the answer, delivery, the caller's
 * return) stays within one file where it can, and what it shares across
 * files and the compiler inlined before the split is `static inline` here,
 * so the split adds no call to it (the library is not built with LTO). */
#ifndef MPX_CORE_POOL_INTERNAL_H
#define MPX_CORE_POOL_INTERNAL_H

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "process_internal.h"
#include "mpx/pool.h"
#include "pool_proto.h"
#include "forkserver.h"
#include "supervisor.h"

#define DEPTH 2                      /* jobs in flight per worker */
#define DEPTH_SHORT 8                /* ... when its jobs are short: */
#define SHORT_JOB 100e-6             /* a worker's smoothed job time below this */
#define CHUNK_BYTES ((size_t)256 << 10) /* automatic chunks: argument bytes */
#define WAIT_SLICE 0.02              /* callers re-check SIGINT this often */
#define ARENA_DEFAULT ((size_t)64 << 20)

typedef struct mpx_async_s req_t;
typedef struct worker_s worker_t;

enum { R_APPLY, R_MAP, R_FIXED, R_IMAP };

typedef struct job_s {
  struct job_s *next;
  req_t *r;
  uint64_t id;
  size_t first, n;
  unsigned attempts;
  bool timed_out;
  bool retried; /* came back from a dead worker */
  double deadline;
  mpx_ref_t *lent; /* n argument blocks made at send (0: none), or NULL */
} job_t;

typedef struct {
  void *in;        /* malloc'd, or the memory of in_ref */
  size_t in_len;
  void *out;       /* malloc'd, or the memory of out_ref */
  size_t out_len;
  mpx_ref_t in_ref, out_ref; /* arena blocks, or 0 */
  int rc;
  char *err;
  bool done;
  bool busy; /* filled and not yet handed out */
} islot_t;

struct mpx_async_s {
  req_t *next; /* the loop's list of active requests */
  mpx_pool_t *p;
  int kind;
  uint32_t fn_id;
  size_t n, next_item, chunk;
  size_t live;         /* loop: tasks in jobs or waiting to be cut */
  /* inputs */
  const mpx_conn_buf_t *in;
  const uint8_t *fin;
  size_t in_size;
  void *acopy;      /* malloc'd, or the memory of aref */
  size_t alen;
  mpx_ref_t aref;
  /* outputs */
  mpx_pool_result_t *out;
  uint8_t *fout;
  size_t out_size;
  int *frc;
  islot_t *ring;
  size_t W;
  size_t *fifo; /* imap unordered: completed indices */
  size_t fifo_head, fifo_len;
  /* under mu */
  size_t done;
  int rc;
  char *err;
  void *res;        /* malloc'd, or the memory of res_ref */
  size_t res_len;
  mpx_ref_t res_ref;
  bool complete, cancelled, listed;
  int refs;
  int call_rc;
  mpx_async_cb cb, ecb;
  void *arg;
};

struct worker_s {
  mpx_pool_t *p;
  unsigned idx;
  mpx_link_t *link;
  pid_t pid;
  bool ready, retiring, quit_sent, alive;
  job_t *inflight;
  unsigned ninflight, ndefined;
  double run_from; /* when its first job in flight began to run, as the loop knows */
  double job_time; /* its time per job, smoothed (s); 0 until an answer came */
  uint64_t tasks;
  int child_fd;
  int pass[2];
  uint8_t *wargs;
};

typedef struct {
  mpx_func_t f;
  uint8_t kind;
  uint64_t addr;
  char *str;
} fnent_t;

struct mpx_pool_s {
  mpx_pool_opts_t o;
  char name[32];
  unsigned n;
  int retries;
  uv_loop_t *L;        /* &own_loop, or the caller's */
  uv_loop_t own_loop;
  bool user_loop;
  uv_thread_t thread;
  _Atomic bool have_tid;       /* loop_tid is set */
  _Atomic(pthread_t) loop_tid; /* the thread running the loop */
  uv_async_t wake;
  uv_timer_t tick;
  uv_timer_t fin;      /* shutdown: one more turn of the loop */
  bool have_tick;
  mpx_arena_t *arena;  /* or NULL */
  mpx__zygote_t *zygote; /* fork workers are forked by it; or NULL */
  pid_t self;
  mpx_hub_t *hub;
  mpx__sup_t *sup;
  worker_t *w;
  mpx_transport_t transport;
  /* loop thread only */
  req_t *active, *active_tail;
  job_t *retry, *retry_tail;
  uint64_t next_job;
  mpx_wbuf_t sbuf;
  unsigned rr;
  bool quit_started;
  /* under mu */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  req_t *incoming, *incoming_tail;
  fnent_t *fns;
  size_t nfns;
  bool closed, terminated, stopping, stop_req, quit_loop, workers_gone;
  bool broken, cancels;
  bool shut;           /* a shutdown was asked for */
  _Atomic bool wake_closed;   /* no uv_async_send any more */
  _Atomic unsigned wake_users; /* threads inside wake() */
  _Atomic bool short_jobs;     /* loop: the last answer came from a worker
                                  whose jobs are short (depth_of) */
  bool handles_closed; /* the shutdown is over */
  bool free_when_done; /* mpx_pool_free on the loop's thread came first */
  mpx_pool_shutdown_cb shut_cb;
  void *shut_arg;
  char why[512];
  size_t live_reqs; /* requests submitted and not complete */
  unsigned alive;
  mpx_pool_stats_t st;
};

/* ---- pool.c ---- */

/* Everything the pool holds, once its handles are closed and its loop
 * (the own one) is closed or is the caller's. */
void mpx__pool_release(mpx_pool_t *p);

/* ---- pool_req.c ---- */

void mpx__pool_slot_clear(mpx_pool_t *p, islot_t *s);
void mpx__pool_req_free(req_t *r);
int mpx__pool_submit(mpx_pool_t *p, req_t *r, mpx_func_t f);
int mpx__pool_req_result(req_t *r);

/* ---- pool_wait.c ---- */

int mpx__pool_deadlock(mpx_pool_t *p);
int mpx__pool_wait(mpx_pool_t *p, bool (*done)(void *), void *r,
                   double timeout);
bool mpx__pool_req_complete(void *r);
int mpx__pool_run_call(mpx_pool_t *p, req_t *r, double timeout);

/* ---- pool_loop.c ---- */

void mpx__pool_job_end_locked(mpx_pool_t *p, job_t *j);
void mpx__pool_split_job(mpx_pool_t *p, job_t *j);
void mpx__pool_fail_job(mpx_pool_t *p, job_t *j, int rc, const char *msg);
void mpx__pool_pump(mpx_pool_t *p);
void mpx__pool_sweep(mpx_pool_t *p);
void mpx__pool_on_msg(mpx_link_t *l, const void *data, size_t len, void *arg);

/* ---- pool_children.c ---- */

/* The pool's supervisor, its callbacks set (mpx__sup_new). */
int mpx__pool_sup_new(mpx_pool_t *p);

/* ---- pool_wake.c ---- */

/* The loop's handles (the own loop, the wake-up, the timeout tick). On
 * failure nothing of them is left. */
int mpx__pool_loop_open(mpx_pool_t *p);
/* The loop runs the pool from now on (the own thread starts). */
int mpx__pool_loop_start(mpx_pool_t *p);
/* A start that failed after mpx__pool_loop_open: closes the handles.
 * Returns true when the caller's loop finishes that and then frees the
 * pool itself; false when they are closed and the pool is the caller's to
 * undo. */
bool mpx__pool_loop_abandon(mpx_pool_t *p);
void mpx__pool_drop_dead(mpx_pool_t *p);

/* ---- shared inline: the per-task path ---- */

/* Arena blocks (pool_proto.h: items over MPX_POOL_ARENA_THRESHOLD). */
static inline void mpx__pool_block_release(mpx_pool_t *p, mpx_ref_t ref) {
  if (ref && mpx_arena_release(p->arena, ref) != 0)
    MPX__WARN("%s: arena block %#llx: %s", p->name, (unsigned long long)ref,
              mpx_last_error());
}

/* A copy of d in a new arena block (never waits), or 0 when it has no room. */
static inline mpx_ref_t mpx__pool_block_copy(mpx_pool_t *p, const void *d,
                                             size_t l) {
  mpx_ref_t ref;
  if (p->arena == NULL || mpx_arena_alloc(p->arena, l, 0, &ref) != 0) return 0;
  memcpy(mpx_arena_ptr(p->arena, ref), d, l);
  return ref;
}

/* Any thread: wake the loop, unless its async is closed (shut down). A
 * sender that saw it open is waited for by the close (pool_wake.c). */
static inline void mpx__pool_wake(mpx_pool_t *p) {
  atomic_fetch_add(&p->wake_users, 1);
  if (!atomic_load(&p->wake_closed)) uv_async_send(&p->wake);
  atomic_fetch_sub(&p->wake_users, 1);
}

static inline bool mpx__pool_on_loop_thread(mpx_pool_t *p) {
  return atomic_load_explicit(&p->have_tid, memory_order_acquire) &&
         pthread_equal(pthread_self(), atomic_load_explicit(
                                            &p->loop_tid, memory_order_relaxed));
}

/* Under mu. */
static inline void mpx__pool_req_unref(req_t *r) {
  if (--r->refs == 0) mpx__pool_req_free(r);
}

/* Under mu: the whole call ends with rc (broken, cancelled). */
static inline void mpx__pool_req_finish(mpx_pool_t *p, req_t *r, int call_rc) {
  if (r->complete) return;
  r->complete = true;
  if (call_rc != 0 && r->call_rc == 0) r->call_rc = call_rc;
  p->live_reqs--;
  pthread_cond_broadcast(&p->cv);
  if (p->live_reqs == 0 && p->shut) mpx__pool_wake(p); /* the shutdown goes on */
}

static inline req_t *mpx__pool_req_new(mpx_pool_t *p, int kind) {
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->p = p;
  r->kind = kind;
  r->refs = 1;
  return r;
}

/* Asks the loop to drop what is left of a request. */
static inline void mpx__pool_cancel(mpx_pool_t *p, req_t *r) {
  pthread_mutex_lock(&p->mu);
  if (!r->cancelled) {
    r->cancelled = true;
    p->cancels = true;
    mpx__pool_req_finish(p, r, MPX_ECANCELED);
  }
  pthread_mutex_unlock(&p->mu);
  mpx__pool_wake(p);
}

/* Loop thread: a job goes back to the retry queue (front: ahead of
 * everything else). */
static inline void mpx__pool_requeue(mpx_pool_t *p, job_t *j, bool front) {
  j->next = NULL;
  j->retried = true;
  if (front) {
    j->next = p->retry;
    p->retry = j;
    if (p->retry_tail == NULL) p->retry_tail = j;
  } else {
    if (p->retry_tail) p->retry_tail->next = j;
    else p->retry = j;
    p->retry_tail = j;
  }
}

/* Loop thread: a job is over (mpx__pool_job_end_locked, taking mu). */
static inline void mpx__pool_job_end(mpx_pool_t *p, job_t *j) {
  pthread_mutex_lock(&p->mu);
  mpx__pool_job_end_locked(p, j);
  pthread_mutex_unlock(&p->mu);
}

#endif
