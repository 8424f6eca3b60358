/* The pool coordinator.
 *
 * A pool runs a libuv loop (on a thread of its own, or the caller's loop)
 * with a transport hub (one link per worker) and a supervisor (pidfds,
 * stderr relay, restarts). A call that would wait for the loop on the
 * loop's own thread returns MPX_EDEADLK instead. Calls from
 * user threads build a request, hand it to the loop under `mu` and wake it
 * (uv_async); the loop cuts requests into jobs (one or more tasks sent in
 * one message), keeps up to DEPTH jobs in flight per worker, and delivers
 * each answer into its request under `mu`, waking the callers (`cv`).
 *
 * A job's answer is one frame, so its results arrive all or none. When a
 * worker dies, its jobs of several tasks are split into single tasks and
 * requeued (the death is charged to no task yet); a single task's death
 * counts as an attempt, and past `retries` the task fails with the
 * worker's exit and last stderr lines. The link is closed before anything
 * is requeued, so an answer still buffered from the dead worker is never
 * delivered next to its retry.
 *
 * Lifetimes: a request is referenced by its caller and, while it has
 * tasks not yet answered or dropped, by the loop; both counts live under
 * `mu` and the last one frees it.
 *
 * Large items (pool_proto.h) go through the pool's arena. An argument
 * block is the coordinator's: apply's is made by apply_async and imap's
 * by imap_fill (in the caller's thread) and belong to the request or the
 * imap slot; map's and map_fixed's are made when the job is sent and
 * belong to the job (job_t.lent) until it ends, answered or not, so a
 * retry resends the same blocks. A result block arrives owned by its
 * worker; on_answer checks and takes it, then it is copied out and freed,
 * or kept as the result (apply, imap) and freed with it. exited() reclaims
 * whatever a dead worker owned, after closing its link.
 *
 * The loop is the pool's own (a thread runs it) or the caller's
 * (opts.loop). Both run the same code; the difference is how the pool
 * ends: mpx_pool_free stops the own thread after join, while a shutdown
 * (mpx_pool_shutdown, or mpx_pool_free with a caller's loop) is a state
 * driven by the loop: `shut` set, wait for no work, stop the workers, wait
 * for them to be gone, close every handle, then one more turn of the loop
 * (the `fin` timer) so that every close callback has run before the
 * shutdown callback and the pool's memory goes. */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

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

static _Atomic unsigned pool_seq;

/* ---- SIGINT while a caller waits ---------------------------------------------- */

static volatile sig_atomic_t sigint_count;
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;
static bool sig_installed;

static void on_sigint(int sig) {
  (void)sig;
  sigint_count++;
}

static void sigint_hold(void) {
  pthread_mutex_lock(&sig_mu);
  if (sig_users++ == 0) {
    struct sigaction old, sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, NULL, &old);
    /* Only over the default: a program's own handler stays in charge. */
    sig_installed = old.sa_handler == SIG_DFL;
    if (sig_installed) sigaction(SIGINT, &sa, NULL);
  }
  pthread_mutex_unlock(&sig_mu);
}

static void sigint_release(void) {
  pthread_mutex_lock(&sig_mu);
  if (--sig_users == 0 && sig_installed) {
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sig_installed = false;
  }
  pthread_mutex_unlock(&sig_mu);
}

/* ---- waking the loop and knowing its thread ------------------------------------ */

/* Any thread: wake the loop, unless its async is closed (shut down). A
 * sender that saw it open is waited for by close_wake(). */
static void wake(mpx_pool_t *p) {
  atomic_fetch_add(&p->wake_users, 1);
  if (!atomic_load(&p->wake_closed)) uv_async_send(&p->wake);
  atomic_fetch_sub(&p->wake_users, 1);
}

/* Loop thread: no uv_async_send after this, then close the async. */
static void close_wake(mpx_pool_t *p, uv_close_cb cb) {
  atomic_store(&p->wake_closed, true);
  while (atomic_load(&p->wake_users) != 0) sched_yield();
  uv_close((uv_handle_t *)&p->wake, cb);
}

/* Loop thread: remember it (the caller's loop may run on any thread). */
static void note_loop_thread(mpx_pool_t *p) {
  pthread_t self = pthread_self();
  if (!atomic_load_explicit(&p->have_tid, memory_order_relaxed) ||
      !pthread_equal(self, atomic_load_explicit(&p->loop_tid,
                                                memory_order_relaxed))) {
    atomic_store_explicit(&p->loop_tid, self, memory_order_relaxed);
    atomic_store_explicit(&p->have_tid, true, memory_order_release);
  }
}

static bool on_loop_thread(mpx_pool_t *p) {
  return atomic_load_explicit(&p->have_tid, memory_order_acquire) &&
         pthread_equal(pthread_self(), atomic_load_explicit(
                                            &p->loop_tid, memory_order_relaxed));
}

static int deadlock(mpx_pool_t *p) {
  return mpx__err(MPX_EDEADLK, "%s: a call that waits for the pool's loop, "
                  "made on the loop's thread, would never return", p->name);
}

/* ---- arena blocks ------------------------------------------------------------------ */

static void block_release(mpx_pool_t *p, mpx_ref_t ref) {
  if (ref && mpx_arena_release(p->arena, ref) != 0)
    MPX__WARN("%s: arena block %#llx: %s", p->name, (unsigned long long)ref,
              mpx_last_error());
}

/* A copy of d in a new arena block (never waits), or 0 when it has no room. */
static mpx_ref_t block_copy(mpx_pool_t *p, const void *d, size_t l) {
  mpx_ref_t ref;
  if (p->arena == NULL || mpx_arena_alloc(p->arena, l, 0, &ref) != 0) return 0;
  memcpy(mpx_arena_ptr(p->arena, ref), d, l);
  return ref;
}

/* ---- requests ------------------------------------------------------------------ */

static void slot_clear(mpx_pool_t *p, islot_t *s) {
  if (s->in_ref) block_release(p, s->in_ref);
  else free(s->in);
  if (s->out_ref) block_release(p, s->out_ref);
  else free(s->out);
  free(s->err);
  *s = (islot_t){0};
}

static void req_free(req_t *r) {
  mpx_pool_t *p = r->p;
  if (r->aref) block_release(p, r->aref);
  else free(r->acopy);
  free(r->err);
  if (r->res_ref) block_release(p, r->res_ref);
  else free(r->res);
  if (r->ring) {
    for (size_t i = 0; i < r->W; i++) slot_clear(p, &r->ring[i]);
    free(r->ring);
  }
  free(r->fifo);
  free(r);
}

/* Under mu. */
static void req_unref(req_t *r) {
  if (--r->refs == 0) req_free(r);
}

static const char *exit_text(int code, char *buf, size_t n) {
  if (code >= 0) {
    snprintf(buf, n, "exited with code %d", code);
  } else {
    const char *abbr = sigabbrev_np(-code);
    snprintf(buf, n, "was killed by signal %d (SIG%s)", -code,
             abbr ? abbr : "?");
  }
  return buf;
}

/* Under mu: the whole call ends with rc (broken, cancelled). */
static void req_finish(mpx_pool_t *p, req_t *r, int call_rc) {
  if (r->complete) return;
  r->complete = true;
  if (call_rc != 0 && r->call_rc == 0) r->call_rc = call_rc;
  p->live_reqs--;
  pthread_cond_broadcast(&p->cv);
  if (p->live_reqs == 0 && p->shut) wake(p); /* the shutdown goes on */
}

static req_t *req_new(mpx_pool_t *p, int kind) {
  req_t *r = calloc(1, sizeof *r);
  if (r == NULL) return NULL;
  r->p = p;
  r->kind = kind;
  r->refs = 1;
  return r;
}

/* Finds or adds the function; under mu. */
static int fn_id_of(mpx_pool_t *p, mpx_func_t f, uint32_t *id) {
  if ((f.fn == NULL) == (f.spec == NULL))
    return mpx__err(MPX_EINVAL, "pool: name a task by a pointer or a spec");
  for (size_t i = 0; i < p->nfns; i++) {
    if (f.fn ? p->fns[i].f.fn == f.fn
             : (p->fns[i].f.spec && strcmp(p->fns[i].f.spec, f.spec) == 0)) {
      *id = (uint32_t)i;
      return 0;
    }
  }
  fnent_t e = {0};
  mpx_start_method_t m = p->o.start_method;
  int rc = 0;
  if (f.spec) {
    e.kind = PM_FN_SPEC;
    e.str = strdup(f.spec);
  } else if (m == MPX_START_FORK) {
    e.kind = PM_FN_PTR;
    e.addr = (uint64_t)(uintptr_t)f.fn;
    e.str = strdup("");
  } else if (m == MPX_START_FORKSERVER) {
    mpx__target_loc_t loc;
    if ((rc = mpx__target_locate((mpx_target_fn)(void *)f.fn, &loc)) != 0)
      return rc;
    e.kind = PM_FN_LOC;
    e.addr = loc.offset;
    e.str = (char *)loc.object;
  } else {
    if ((rc = mpx__target_spec_of((mpx_target_fn)(void *)f.fn, &e.str)) != 0)
      return rc;
    e.kind = PM_FN_SPEC;
  }
  if (e.str == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  e.f.fn = f.fn;
  e.f.spec = f.spec ? e.str : NULL;
  fnent_t *n = realloc(p->fns, (p->nfns + 1) * sizeof *n);
  if (n == NULL) {
    free(e.str);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  p->fns = n;
  p->fns[p->nfns] = e;
  *id = (uint32_t)p->nfns++;
  return 0;
}

/* Hands a request to the loop. On success the loop holds a reference. */
static int submit(mpx_pool_t *p, req_t *r, mpx_func_t f) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  if (p->broken)
    rc = mpx__err(MPX_EBROKEN, "%s", p->why);
  else if (p->terminated)
    rc = mpx__err(MPX_ECANCELED, "pool: terminated");
  else if (p->closed)
    rc = mpx__err(MPX_ECLOSED, "pool: closed");
  else
    rc = fn_id_of(p, f, &r->fn_id);
  if (rc == 0) {
    r->refs++;
    r->listed = true;
    r->live = r->n;
    p->live_reqs++;
    if (p->incoming_tail) p->incoming_tail->next = r;
    else p->incoming = r;
    p->incoming_tail = r;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc == 0) wake(p);
  return rc;
}

/* Asks the loop to drop what is left of a request. */
static void cancel(mpx_pool_t *p, req_t *r) {
  pthread_mutex_lock(&p->mu);
  if (!r->cancelled) {
    r->cancelled = true;
    p->cancels = true;
    req_finish(p, r, MPX_ECANCELED);
  }
  pthread_mutex_unlock(&p->mu);
  wake(p);
}

/* Waits for `done(r)` under mu. 0, MPX_ETIMEDOUT, MPX_EINTR, MPX_EDEADLK
 * (it would wait on the loop's thread). */
static int wait_until(mpx_pool_t *p, bool (*done)(void *), void *r,
                      double timeout) {
  int rc = 0;
  if (timeout != 0 && on_loop_thread(p)) {
    pthread_mutex_lock(&p->mu);
    bool ready = done(r);
    pthread_mutex_unlock(&p->mu);
    return ready ? 0 : deadlock(p);
  }
  if (timeout == 0) {
    /* A poll never waits: no SIGINT handler (two system calls) for it. */
    pthread_mutex_lock(&p->mu);
    bool ready = done(r);
    pthread_mutex_unlock(&p->mu);
    return ready ? 0 : mpx__err(MPX_ETIMEDOUT, "pool: timed out waiting");
  }
  double deadline = mpx__deadline(timeout);
  sigint_hold();
  sig_atomic_t sig0 = sigint_count;
  pthread_mutex_lock(&p->mu);
  while (!done(r)) {
    if (sigint_count != sig0) {
      rc = mpx__err(MPX_EINTR, "pool: interrupted (SIGINT)");
      break;
    }
    double now = mpx__now();
    if (deadline >= 0 && now >= deadline) {
      rc = mpx__err(MPX_ETIMEDOUT, "pool: timed out waiting");
      break;
    }
    double until = now + WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    struct timespec ts;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
  pthread_mutex_unlock(&p->mu);
  sigint_release();
  return rc;
}

static bool req_complete(void *r) { return ((req_t *)r)->complete; }

/* The outcome of a finished call (under mu or after it completed). */
static int req_result(req_t *r) {
  if (r->call_rc != 0) {
    mpx_pool_t *p = r->p;
    if (r->call_rc == MPX_EBROKEN) return mpx__err(MPX_EBROKEN, "%s", p->why);
    return mpx__err(r->call_rc, "pool: %s",
                    r->call_rc == MPX_ECANCELED ? "terminated" : "call failed");
  }
  if (r->rc != 0) return mpx__err(r->rc, "%s", r->err ? r->err : "task failed");
  return 0;
}

/* Runs a blocking call: wait, cancel on interruption, drop the caller's
 * reference. */
static int run_call(mpx_pool_t *p, req_t *r, double timeout) {
  int rc = wait_until(p, req_complete, r, timeout);
  if (rc != 0) cancel(p, r);
  pthread_mutex_lock(&p->mu);
  if (rc == 0) rc = req_result(r);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

/* ---- the loop: jobs ----------------------------------------------------------------- */

/* Item i's argument, and its arena block when it has one already. */
static void item_in(req_t *r, size_t i, const void **d, size_t *l,
                    mpx_ref_t *ref) {
  *ref = 0;
  switch (r->kind) {
    case R_APPLY:
      *d = r->acopy;
      *l = r->alen;
      *ref = r->aref;
      break;
    case R_MAP:
      *d = r->in[i].data;
      *l = r->in[i].len;
      break;
    case R_FIXED:
      *d = r->fin + i * r->in_size;
      *l = r->in_size;
      break;
    default: {
      islot_t *s = &r->ring[i % r->W];
      *d = s->in;
      *l = s->in_len;
      *ref = s->in_ref;
    }
  }
}

/* Under mu: one task's outcome. d/l: the result or the failure's message;
 * ref: the arena block holding the result (taken by the coordinator), or
 * 0. Returns true when the block was kept as the result (apply, imap: the
 * caller reads it in place), else it is the caller's to free. */
static bool deliver(mpx_pool_t *p, req_t *r, size_t i, int rc,
                    const void *d, size_t l, mpx_ref_t ref) {
  char *err = NULL;
  if (r->complete && r->kind != R_IMAP) return false; /* cancelled, broken */
  if (r->cancelled) return false;
  if (rc == 0 && r->kind == R_FIXED && l > r->out_size) {
    rc = MPX_ETASK;
    char m[128];
    snprintf(m, sizeof m, "result of %zu bytes is longer than out_size %zu", l,
             r->out_size);
    d = m;
    l = strlen(m);
    err = strndup(d, l);
  } else if (rc != 0) {
    err = strndup(d ? d : "", l);
  }
  void *copy = NULL;
  bool keep = ref && rc == 0 && (r->kind == R_APPLY || r->kind == R_IMAP);
  if (keep) {
    copy = (void *)d;
  } else if (rc == 0 && r->kind != R_FIXED && l > 0) {
    copy = malloc(l);
    if (copy == NULL) {
      rc = MPX_ENOMEM;
      err = strdup("out of memory for the result");
    } else {
      memcpy(copy, d, l);
    }
  }
  if (rc == 0) p->st.tasks_done++;
  else p->st.tasks_failed++;
  if (rc != 0 && r->rc == 0) {
    r->rc = rc;
    free(r->err);
    r->err = err ? strdup(err) : NULL;
  }
  switch (r->kind) {
    case R_APPLY:
      r->res = copy;
      r->res_ref = keep ? ref : 0;
      r->res_len = rc == 0 ? l : 0;
      free(err);
      break;
    case R_MAP:
      r->out[i] = (mpx_pool_result_t){copy, rc == 0 ? l : 0, rc, err};
      break;
    case R_FIXED:
      if (rc == 0 && l == 8) memcpy(r->fout + i * r->out_size, d, 8);
      else if (rc == 0 && l) memcpy(r->fout + i * r->out_size, d, l);
      if (r->frc) r->frc[i] = rc;
      free(err);
      break;
    default: {
      islot_t *s = &r->ring[i % r->W];
      s->out = copy;
      s->out_ref = keep ? ref : 0;
      s->out_len = rc == 0 ? l : 0;
      s->rc = rc;
      s->err = err;
      s->done = true;
      if (r->fifo) r->fifo[(r->fifo_head + r->fifo_len++) % r->W] = i;
    }
  }
  r->done++;
  if (r->kind == R_IMAP) pthread_cond_broadcast(&p->cv);
  else if (r->done == r->n) req_finish(p, r, 0);
  return keep;
}

/* Loop thread: the argument blocks made for the job go back to the arena. */
static void job_unlend(mpx_pool_t *p, job_t *j) {
  if (j->lent == NULL) return;
  for (size_t i = 0; i < j->n; i++) block_release(p, j->lent[i]);
  free(j->lent);
  j->lent = NULL;
}

/* Loop thread, under mu: a job is over (answered, failed or dropped); its
 * argument blocks go back to the arena. Under the same hold of mu as the
 * delivery of its last result: a caller woken by that delivery finds the
 * arena without them (docs/pool.md: empty once the work is done). */
static void job_end_locked(mpx_pool_t *p, job_t *j) {
  job_unlend(p, j);
  j->r->live -= j->n; /* sweep() unlists the request once nothing is live */
  free(j);
}

static void job_end(mpx_pool_t *p, job_t *j) {
  pthread_mutex_lock(&p->mu);
  job_end_locked(p, j);
  pthread_mutex_unlock(&p->mu);
}

static void after_complete(mpx_pool_t *p, req_t *r);
static void drop_dead(mpx_pool_t *p);

/* Loop thread: unlist requests the loop is done with. */
static void sweep(mpx_pool_t *p) {
  req_t **pp = &p->active, *prev = NULL;
  while (*pp) {
    req_t *r = *pp;
    pthread_mutex_lock(&p->mu);
    bool over = r->live == 0 &&
                (r->cancelled || (r->kind != R_IMAP && r->complete) ||
                 (r->kind == R_IMAP && r->complete));
    pthread_mutex_unlock(&p->mu);
    if (over) {
      *pp = r->next;
      if (p->active_tail == r) p->active_tail = prev;
      after_complete(p, r);
    } else {
      prev = r;
      pp = &r->next;
    }
  }
}

/* Loop thread: callbacks, then the loop's reference goes. */
static void after_complete(mpx_pool_t *p, req_t *r) {
  if (r->kind != R_IMAP && !r->cancelled) {
    mpx_async_cb cb = r->call_rc == 0 && r->rc == 0 ? r->cb : r->ecb;
    if (cb) cb(r, r->arg);
  }
  pthread_mutex_lock(&p->mu);
  r->listed = false;
  req_unref(r);
  pthread_mutex_unlock(&p->mu);
}

static job_t *next_job(mpx_pool_t *p) {
  job_t *j;
  while ((j = p->retry) != NULL) {
    p->retry = j->next;
    if (p->retry == NULL) p->retry_tail = NULL;
    j->next = NULL;
    /* A call that ended since (cancelled, timed out) may have taken its
     * inputs back: never read them again. */
    pthread_mutex_lock(&p->mu);
    bool over = j->r->cancelled || j->r->complete;
    pthread_mutex_unlock(&p->mu);
    if (!over) return j;
    job_end(p, j);
  }
  for (req_t *r = p->active; r; r = r->next) {
    size_t n;
    pthread_mutex_lock(&p->mu);
    bool skip = r->cancelled || r->complete;
    n = r->n;
    pthread_mutex_unlock(&p->mu);
    if (skip || r->next_item >= n) continue;
    j = calloc(1, sizeof *j);
    if (j == NULL) return NULL;
    j->r = r;
    j->first = r->next_item;
    j->n = n - r->next_item < r->chunk ? n - r->next_item : r->chunk;
    r->next_item += j->n;
    return j;
  }
  return NULL;
}

static int send_defines(mpx_pool_t *p, worker_t *w, uint32_t upto) {
  while (w->ndefined <= upto) {
    pthread_mutex_lock(&p->mu);
    fnent_t e = p->fns[w->ndefined];
    pthread_mutex_unlock(&p->mu);
    pm_define_t d = {.type = PM_DEFINE, .kind = e.kind, .fn_id = w->ndefined,
                     .addr = e.addr};
    p->sbuf.len = 0;
    mpx_wbuf_append(&p->sbuf, &d, sizeof d);
    mpx_wbuf_append(&p->sbuf, e.str, strlen(e.str) + 1);
    int rc = mpx_link_send(w->link, p->sbuf.data, p->sbuf.len);
    if (rc != 0) return rc;
    w->ndefined++;
  }
  return 0;
}

static void requeue(mpx_pool_t *p, job_t *j, bool front) {
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

/* Loop thread: a job of several tasks becomes single tasks at the front of
 * the retry queue, in order, keeping their argument blocks. */
static void split_job(mpx_pool_t *p, job_t *j) {
  for (size_t i = j->n; i-- > 0;) {
    job_t *s = calloc(1, sizeof *s);
    if (s == NULL) break;
    s->r = j->r;
    s->first = j->first + i;
    s->n = 1;
    s->attempts = j->attempts;
    if (j->lent && j->lent[i] && (s->lent = malloc(sizeof *s->lent)) != NULL) {
      s->lent[0] = j->lent[i];
      j->lent[i] = 0;
    }
    requeue(p, s, true);
  }
  job_unlend(p, j);
  j->n = 0;
  free(j);
}

static void start_clock(mpx_pool_t *p, job_t *j) {
  j->deadline = p->o.task_timeout > 0
                    ? mpx__now() + p->o.task_timeout * (double)j->n
                    : 0;
}

static int send_job(mpx_pool_t *p, worker_t *w, job_t *j) {
  req_t *r = j->r;
  int rc = send_defines(p, w, r->fn_id);
  if (rc != 0) return rc;
  pm_task_t h = {.type = PM_TASK, .fn_id = r->fn_id, .job = ++p->next_job,
                 .n = (uint32_t)j->n};
  j->id = h.job;
  p->sbuf.len = 0;
  mpx_wbuf_append(&p->sbuf, &h, sizeof h);
  uint64_t by_ref = 0, inl = 0;
  for (size_t i = 0; i < j->n; i++) {
    const void *d;
    size_t l;
    mpx_ref_t ref;
    item_in(r, j->first + i, &d, &l, &ref);
    if (ref == 0 && j->lent) ref = j->lent[i]; /* sent before: a retry */
    if (ref == 0 && l > MPX_POOL_ARENA_THRESHOLD && p->arena) {
      /* One copy, into a block the job keeps until it ends. */
      if (j->lent == NULL) j->lent = calloc(j->n, sizeof *j->lent);
      if (j->lent) ref = j->lent[i] = block_copy(p, d, l);
      if (ref == 0) inl++; /* full: inline */
    }
    pm_ref_t pr = {ref, l};
    uint32_t lw = (uint32_t)l;
    if (ref) {
      d = &pr;
      l = sizeof pr;
      lw = PM_ITEM_REF | (uint32_t)sizeof pr;
      by_ref++;
    } else if (l > PM_ITEM_LEN) {
      return mpx__err(MPX_E2BIG, "an argument of %zu bytes: too large to "
                      "send inline, and the arena has no room for it", l);
    }
    if (p->sbuf.cap - p->sbuf.len < 4 + l &&
        (rc = mpx_wbuf_reserve(&p->sbuf, 4 + l)) != 0)
      return rc;
    uint8_t *o = p->sbuf.data + p->sbuf.len;
    memcpy(o, &lw, 4);
    if (l == 8) memcpy(o + 4, d, 8); /* the common fixed size, inlined */
    else if (l) memcpy(o + 4, d, l);
    p->sbuf.len += 4 + l;
  }
  if ((rc = mpx_link_send(w->link, p->sbuf.data, p->sbuf.len)) != 0) return rc;
  /* In send order: the worker runs them in that order, so the first is
   * the one running (its clock is the one that ticks). */
  j->next = NULL;
  job_t **pp = &w->inflight;
  while (*pp) pp = &(*pp)->next;
  *pp = j;
  if (w->ninflight++ == 0) {
    start_clock(p, j);
    w->run_from = mpx__now();
  }
  pthread_mutex_lock(&p->mu);
  p->st.messages++;
  p->st.arena_args += by_ref;
  p->st.arena_inline += inl;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

static void fail_job(mpx_pool_t *p, job_t *j, int rc, const char *msg);

static bool worker_has_retried(const worker_t *w) {
  for (const job_t *j = w->inflight; j; j = j->next)
    if (j->retried) return true;
  return false;
}

/* Jobs a worker may have in flight. DEPTH keeps the work spread over the
 * workers; but a worker that answers faster than a wake-up crosses CPUs
 * (measured: about 20 µs on a 2-vCPU VM, against 1.3 µs on one CPU) would
 * sit idle, then wait for the loop, after each answer: with short jobs, a
 * deeper queue lets it go on to the next job (and the loop read several
 * answers per wake-up), at a cost in balance of at most
 * DEPTH_SHORT x SHORT_JOB of work queued behind a worker. */
static unsigned depth_of(const worker_t *w) {
  return w->job_time > 0 && w->job_time < SHORT_JOB ? DEPTH_SHORT : DEPTH;
}

/* On an answer: the time since the job began to run (as far as the loop
 * knows: sent to an idle worker, or the previous answer read), smoothed;
 * the next job in flight begins now. */
static void note_job_time(worker_t *w) {
  double now = mpx__now(), t = now - w->run_from;
  if (t < 0) t = 0;
  w->job_time = w->job_time > 0 ? 0.75 * w->job_time + 0.25 * t : t + 1e-9;
  w->run_from = now;
  atomic_store_explicit(&w->p->short_jobs, w->job_time < SHORT_JOB,
                        memory_order_relaxed);
}

static void pump(mpx_pool_t *p) {
  bool progress = true;
  while (progress) {
    progress = false;
    for (unsigned k = 0; k < p->n; k++) {
      worker_t *w = &p->w[(p->rr + k) % p->n];
      if (!w->ready || w->retiring || w->link == NULL || w->ninflight >= depth_of(w))
        continue;
      if (p->o.maxtasksperchild &&
          w->tasks + w->ninflight >= p->o.maxtasksperchild)
        continue; /* counted in jobs: a retiring worker's last ones */
      /* Jobs back from a dead worker (the retry queue, always taken
       * first) run alone on their worker: if it dies again, the job it
       * ran is the one to charge, never a neighbour whose answer was
       * still in the socket. */
      if (w->ninflight > 0 && (p->retry != NULL || worker_has_retried(w)))
        continue;
      job_t *j = next_job(p);
      if (j == NULL) {
        progress = false;
        goto retire;
      }
      int rc = send_job(p, w, j);
      if (rc == MPX_E2BIG) { /* an item that cannot travel: it fails alone */
        if (j->n > 1) split_job(p, j);
        else fail_job(p, j, MPX_E2BIG, mpx_last_error());
        progress = true;
        continue;
      }
      if (rc != 0) {
        requeue(p, j, true);
        mpx__sup_kill(p->sup, w->idx, SIGKILL); /* its link is broken */
        continue;
      }
      progress = true;
    }
    p->rr++;
  }
retire:
  for (unsigned k = 0; k < p->n; k++) {
    worker_t *w = &p->w[k];
    if (w->retiring && !w->quit_sent && w->ninflight == 0 && w->link) {
      pm_hdr_t q = {.type = PM_QUIT};
      mpx_link_send(w->link, &q, sizeof q);
      mpx__sup_retire(p->sup, w->idx);
      w->quit_sent = true;
    }
  }
}

/* ---- the loop: workers ---------------------------------------------------------------- */

/* Loop thread, under mu: items [k, n) of a job whose answer stopped
 * making sense at item k go back to the front of the queue (k > 0: the
 * others were delivered), keeping their argument blocks; the job ends
 * with k items. */
static void job_cut(mpx_pool_t *p, job_t *j, size_t k) {
  job_t *rest = calloc(1, sizeof *rest);
  if (rest && j->lent && (rest->lent = calloc(j->n - k, sizeof *rest->lent)) == NULL) {
    free(rest);
    rest = NULL;
  }
  if (rest == NULL) { /* cannot requeue them: they fail */
    for (size_t i = k; i < j->n; i++)
      deliver(p, j->r, j->first + i, MPX_ENOMEM, "out of memory", 13, 0);
    return;
  }
  rest->r = j->r;
  rest->first = j->first + k;
  rest->n = j->n - k;
  rest->attempts = j->attempts;
  for (size_t i = k; j->lent && i < j->n; i++) {
    rest->lent[i - k] = j->lent[i];
    j->lent[i] = 0;
  }
  requeue(p, rest, true); /* it carries the n - k tasks still live */
  j->n = k;
}

static void on_answer(mpx_pool_t *p, worker_t *w, const uint8_t *m, size_t len) {
  pm_answer_t a;
  if (len < sizeof a) goto bad;
  memcpy(&a, m, sizeof a);
  job_t **pp = &w->inflight, *j = NULL;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->id == a.job) {
      j = *pp;
      *pp = j->next;
      break;
    }
  if (j == NULL || a.n != j->n) {
    if (j) { /* back where it was: the worker's death handles it */
      j->next = *pp;
      *pp = j;
    }
    goto bad;
  }
  w->ninflight--;
  note_job_time(w);
  if (w->inflight && pp == &w->inflight) start_clock(p, w->inflight);
  /* Items are checked as they are delivered; from the first one that
   * makes no sense on, the job goes back to the queue. A result block
   * must be live and the worker's own: then it is taken. */
  size_t off = sizeof a;
  uint32_t i;
  uint64_t by_ref = 0;
  pthread_mutex_lock(&p->mu);
  for (i = 0; i < a.n; i++) {
    pm_item_t it;
    if (off + sizeof it > len) break;
    memcpy(&it, m + off, sizeof it);
    uint32_t l = it.len & PM_ITEM_LEN;
    if (l > len - off - sizeof it) break;
    const void *d = m + off + sizeof it;
    size_t dl = l;
    mpx_ref_t ref = 0;
    if (it.len & PM_ITEM_REF) {
      pm_ref_t r;
      if (l != sizeof r || p->arena == NULL) break;
      memcpy(&r, d, sizeof r);
      size_t cap = mpx_arena_block_size(p->arena, r.ref);
      if (cap == 0 || cap < r.len || mpx_arena_owner(p->arena, r.ref) != w->pid)
        break;
      mpx_arena_give(p->arena, r.ref, p->self); /* ours from now on */
      ref = r.ref;
      d = mpx_arena_ptr(p->arena, ref);
      dl = (size_t)r.len;
      by_ref++;
    }
    off += sizeof it + l;
    if (!deliver(p, j->r, j->first + i, it.rc, d, dl, ref) && ref)
      block_release(p, ref);
  }
  p->st.arena_results += by_ref;
  bool malformed = i < a.n;
  if (malformed) job_cut(p, j, i);
  w->tasks += j->n;
  job_end_locked(p, j); /* before a woken caller can look at the arena */
  pthread_mutex_unlock(&p->mu);
  if (p->o.maxtasksperchild && w->tasks >= p->o.maxtasksperchild)
    w->retiring = true;
  if (!malformed) return;
bad:
  MPX__WARN("%s: worker %u sent a malformed answer; killing it", p->name,
            w->idx);
  mpx__sup_kill(p->sup, w->idx, SIGKILL);
}

static void on_msg(mpx_link_t *l, const void *data, size_t len, void *arg) {
  worker_t *w = arg;
  mpx_pool_t *p = w->p;
  (void)l;
  if (len == 0) return;
  uint8_t type = *(const uint8_t *)data;
  if (type == PM_READY && len >= sizeof(pm_ready_t)) {
    w->ready = true;
  } else if (type == PM_ANSWER) {
    on_answer(p, w, data, len);
  } else {
    MPX__WARN("%s: worker %u sent message type %d; killing it", p->name,
              w->idx, type);
    mpx__sup_kill(p->sup, w->idx, SIGKILL);
  }
  pump(p);
  sweep(p);
}

static void on_link_close(mpx_link_t *l, int status, void *arg) {
  worker_t *w = arg;
  if (w->link == l) w->link = NULL;
  /* End of file: the worker is exiting, and its pidfd will say how. Any
   * other end of the link while it lives is a protocol failure. */
  if (status != MPX_EPIPE && w->alive) mpx__sup_kill(w->p->sup, w->idx, SIGKILL);
}

static void release_start(void *arg, unsigned idx) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  if (w->child_fd >= 0) close(w->child_fd);
  w->child_fd = -1;
  free(w->wargs);
  w->wargs = NULL;
}

static int prepare(void *arg, unsigned idx, mpx__sup_start_t *st) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  int sv[2], rc;
  if (w->link) { /* left by a start that failed after adding it */
    mpx_link_t *l = w->link;
    w->link = NULL;
    mpx_link_close(l);
  }
  if (p->zygote && !mpx__zygote_alive(p->zygote)) {
    /* Killed from outside (its workers died with it): it cannot be made
     * again now that the pool has its thread, so fork from here. */
    MPX__WARN("%s: its zygote died; forking workers from this process from "
              "now on", p->name);
    mpx__zygote_free(p->zygote);
    p->zygote = NULL;
  }
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    return mpx__err_errno("%s: socketpair", p->name);
  if ((rc = mpx_hub_add(p->hub, sv[0], on_msg, on_link_close, w, &w->link)) != 0) {
    close(sv[0]);
    close(sv[1]);
    return rc;
  }
  w->child_fd = sv[1];
  const char *s = "";
  uint8_t kind = PM_FN_NONE;
  uint64_t addr = 0;
  char *owned = NULL;
  if (p->o.initializer_spec) {
    kind = PM_FN_SPEC;
    s = p->o.initializer_spec;
  } else if (p->o.initializer) {
    mpx_target_fn f = (mpx_target_fn)(void *)p->o.initializer;
    if (p->o.start_method == MPX_START_FORK) {
      kind = PM_FN_PTR;
      addr = (uint64_t)(uintptr_t)f;
    } else if (p->o.start_method == MPX_START_FORKSERVER) {
      mpx__target_loc_t loc;
      if ((rc = mpx__target_locate(f, &loc)) != 0) return rc;
      kind = PM_FN_LOC;
      addr = loc.offset;
      s = owned = (char *)loc.object;
    } else {
      if ((rc = mpx__target_spec_of(f, &owned)) != 0) return rc;
      kind = PM_FN_SPEC;
      s = owned;
    }
  }
  size_t sl = strlen(s) + 1;
  size_t total = sizeof(pm_wargs_t) + sl + p->o.initargs_len;
  w->wargs = malloc(total);
  if (w->wargs == NULL) {
    free(owned);
    return mpx__err(MPX_ENOMEM, "%s: out of memory", p->name);
  }
  /* The arena: inherited under fork, its segment's descriptor otherwise. */
  size_t npass = 0;
  w->pass[npass++] = sv[1];
  int arena_fd = -1;
  uint64_t arena_addr = 0;
  if (p->arena && p->o.start_method == MPX_START_FORK)
    arena_addr = (uint64_t)(uintptr_t)p->arena;
  else if (p->arena)
    w->pass[npass++] = arena_fd = mpx_segment_fd(mpx_arena_segment(p->arena));
  pm_wargs_t a = {.version = PM_WARGS_VERSION, .index = idx,
                  .nworkers = p->n, .link_fd = sv[1],
                  .stderr_fd = st->stderr_fd, .transport = (int32_t)p->transport,
                  .arena_fd = arena_fd, .arena_addr = arena_addr,
                  .init_kind = kind, .init_addr = addr,
                  .init_str_len = (uint32_t)sl,
                  .initargs_len = (uint32_t)p->o.initargs_len};
  snprintf(a.name, sizeof a.name, "%s", p->name);
  memcpy(w->wargs, &a, sizeof a);
  memcpy(w->wargs + sizeof a, s, sl);
  if (p->o.initargs_len)
    memcpy(w->wargs + sizeof a + sl, p->o.initargs, p->o.initargs_len);
  free(owned);
  memset(&st->opts, 0, sizeof st->opts);
  st->opts.target = mpx_pool_worker_main;
  st->opts.args = w->wargs;
  st->opts.args_len = total;
  st->opts.start_method = p->o.start_method;
  st->opts.daemon = true;
  st->opts.pass_fds = w->pass;
  st->opts.n_pass_fds = npass;
  st->zygote = p->zygote; /* never a fork from this threaded process */
  st->release = release_start;
  w->ready = w->retiring = w->quit_sent = false;
  w->tasks = 0;
  w->ndefined = 0;
  return 0;
}

static void started(void *arg, unsigned idx, pid_t pid) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  w->pid = pid;
  w->alive = true;
  w->job_time = 0; /* a new process: its pace is not known yet */
  pthread_mutex_lock(&p->mu);
  p->st.started++;
  p->alive++;
  pthread_mutex_unlock(&p->mu);
}

static void fail_job(mpx_pool_t *p, job_t *j, int rc, const char *msg) {
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < j->n; i++)
    deliver(p, j->r, j->first + i, rc, msg, strlen(msg), 0);
  job_end_locked(p, j);
  pthread_mutex_unlock(&p->mu);
}

static void exited(void *arg, unsigned idx, pid_t pid, int code,
                   const char *tail) {
  mpx_pool_t *p = arg;
  worker_t *w = &p->w[idx];
  if (w->link) {
    mpx_link_t *l = w->link;
    w->link = NULL;
    mpx_link_close(l); /* nothing more from the dead worker */
  }
  bool was_alive = w->alive;
  w->alive = w->ready = false;
  /* Its link is closed: no answer of it will be read. Free the blocks it
   * held (a result being written, an answer that was not read). */
  if (p->arena && pid > 0) {
    int n = mpx_arena_reclaim(p->arena, pid);
    if (n > 0) {
      MPX__DEBUG("%s: %d arena block%s of worker %u (pid %d) reclaimed",
                 p->name, n, n == 1 ? "" : "s", idx, (int)pid);
      pthread_mutex_lock(&p->mu);
      p->st.arena_reclaimed += (uint64_t)n;
      pthread_mutex_unlock(&p->mu);
    }
  }
  char how[96], msg[1024];
  exit_text(code, how, sizeof how);
  MPX__DEBUG("%s: worker %u (pid %d) %s with %u job%s in flight", p->name, idx,
             (int)pid, how, w->ninflight, w->ninflight == 1 ? "" : "s");
  job_t *j = w->inflight;
  w->inflight = NULL;
  w->ninflight = 0;
  /* Only the first job was running: the others go back untouched, ahead
   * of everything else, in their order. */
  job_t *rest = j ? j->next : NULL;
  if (rest) {
    job_t *last = rest;
    rest->retried = true;
    while (last->next) {
      last = last->next;
      last->retried = true;
    }
    last->next = p->retry;
    if (p->retry == NULL) p->retry_tail = last;
    p->retry = rest;
  }
  if (j) j->next = NULL;
  while (j) {
    job_t *next = j->next;
    j->next = NULL;
    pthread_mutex_lock(&p->mu);
    bool dropped = j->r->cancelled || j->r->complete;
    pthread_mutex_unlock(&p->mu);
    if (dropped) {
      job_end(p, j);
    } else if (j->n > 1) {
      split_job(p, j); /* the one that killed it fails alone */
    } else if (++j->attempts > (unsigned)(p->retries < 0 ? 0 : p->retries)) {
      if (j->timed_out)
        snprintf(msg, sizeof msg,
                 "task timed out after %g s (worker %u, pid %d, killed)%s%s",
                 p->o.task_timeout, idx, (int)pid, tail[0] ? "; stderr: " : "",
                 tail);
      else
        snprintf(msg, sizeof msg, "worker %u (pid %d) %s after %u attempt%s%s%s",
                 idx, (int)pid, how, j->attempts, j->attempts > 1 ? "s" : "",
                 tail[0] ? "; last stderr:\n" : "", tail);
      fail_job(p, j, j->timed_out ? MPX_ETIMEDOUT : MPX_EWORKER, msg);
    } else {
      j->timed_out = false;
      pthread_mutex_lock(&p->mu);
      p->st.retries++;
      pthread_mutex_unlock(&p->mu);
      requeue(p, j, true);
    }
    j = next;
  }
  pthread_mutex_lock(&p->mu);
  p->st.restarts = mpx__sup_restarts(p->sup);
  if (was_alive) p->alive--;
  if (p->stopping && p->alive == 0) {
    p->workers_gone = true;
    pthread_cond_broadcast(&p->cv);
    if (p->shut) wake(p); /* the shutdown goes on (outside this callback) */
  }
  pthread_mutex_unlock(&p->mu);
  pump(p);
  sweep(p);
}

/* The supervisor will run no worker again (restarts past the intensity,
 * or none left under a policy that restarts none): every pending and
 * later call fails with MPX_EBROKEN and `why`. */
static void broken(void *arg, const char *why) {
  mpx_pool_t *p = arg;
  pthread_mutex_lock(&p->mu);
  p->broken = true;
  p->st.broken = true;
  snprintf(p->why, sizeof p->why, "%s", why);
  for (req_t *r = p->incoming; r; r = r->next) req_finish(p, r, MPX_EBROKEN);
  for (req_t *r = p->active; r; r = r->next) req_finish(p, r, MPX_EBROKEN);
  p->cancels = true; /* requests still incoming are dropped at the wake */
  pthread_mutex_unlock(&p->mu);
  MPX__ERROR("broken: %s", why); /* why names the pool (the supervisor's name) */
  drop_dead(p);
  sweep(p);
  wake(p);
}

/* ---- the loop: wake-ups ------------------------------------------------------------- */

static void stop_workers(mpx_pool_t *p, double grace) {
  pthread_mutex_lock(&p->mu);
  bool already = p->stopping;
  p->stopping = true;
  if (p->alive == 0) {
    p->workers_gone = true;
    pthread_cond_broadcast(&p->cv);
  }
  pthread_mutex_unlock(&p->mu);
  if (already) return;
  for (unsigned k = 0; k < p->n; k++) {
    worker_t *w = &p->w[k];
    if (w->link && w->ready) {
      pm_hdr_t q = {.type = PM_QUIT};
      mpx_link_send(w->link, &q, sizeof q);
    }
  }
  mpx_hub_flush(p->hub);
  mpx__sup_stop(p->sup, grace);
}

static void on_tick(uv_timer_t *t) {
  mpx_pool_t *p = t->data;
  double now = mpx__now();
  for (unsigned k = 0; k < p->n; k++) {
    worker_t *w = &p->w[k];
    job_t *j = w->inflight; /* the one running */
    if (j && j->deadline > 0 && now > j->deadline && !j->timed_out) {
      j->timed_out = true;
      mpx__sup_kill(p->sup, w->idx, SIGKILL);
    }
  }
}

static void close_cb(uv_handle_t *h) { (void)h; }

/* Loop thread: drop what is not yet running of requests that are over
 * (cancelled, broken, terminated). */
static void drop_dead(mpx_pool_t *p) {
  job_t **pp = &p->retry;
  p->retry_tail = NULL;
  while (*pp) {
    job_t *j = *pp;
    pthread_mutex_lock(&p->mu);
    bool drop = j->r->cancelled || j->r->complete;
    pthread_mutex_unlock(&p->mu);
    if (drop) {
      *pp = j->next;
      job_end(p, j);
    } else {
      p->retry_tail = j;
      pp = &j->next;
    }
  }
  for (req_t *r = p->active; r; r = r->next) {
    pthread_mutex_lock(&p->mu);
    if ((r->cancelled || r->complete) && r->next_item < r->n) {
      r->live -= r->n - r->next_item;
      r->next_item = r->n;
    }
    pthread_mutex_unlock(&p->mu);
  }
}

static void pool_release(mpx_pool_t *p);

/* The shutdown's last steps: the async's close callback (every handle of
 * the pool is closing by then), a timer for one more turn of the loop (so
 * every close callback of this turn has run), its close callback. */
static void on_fin_closed(uv_handle_t *h) {
  mpx_pool_t *p = h->data;
  pthread_mutex_lock(&p->mu);
  mpx_pool_shutdown_cb cb = p->shut_cb;
  void *arg = p->shut_arg;
  pthread_mutex_unlock(&p->mu);
  if (cb) cb(p, arg); /* may call mpx_pool_free: it sets free_when_done */
  pthread_mutex_lock(&p->mu);
  p->handles_closed = true;
  bool release = p->free_when_done && p->user_loop;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  /* After the unlock, p may be freed by a waiting mpx_pool_free. */
  if (release) pool_release(p);
}

static void on_fin(uv_timer_t *t) {
  uv_close((uv_handle_t *)t, on_fin_closed);
}

static void on_wake_closed(uv_handle_t *h) {
  mpx_pool_t *p = h->data;
  uv_timer_init(p->L, &p->fin);
  p->fin.data = p;
  uv_timer_start(&p->fin, on_fin, 0, 0);
}

static void on_wake(uv_async_t *a) {
  mpx_pool_t *p = a->data;
  if (p->user_loop) note_loop_thread(p);
  pthread_mutex_lock(&p->mu);
  req_t *in = p->incoming;
  p->incoming = p->incoming_tail = NULL;
  bool cancels = p->cancels, stop = p->stop_req, quit = p->quit_loop;
  bool term = p->terminated, shut = p->shut;
  if (shut && p->live_reqs == 0) stop = true; /* as join does */
  p->cancels = false;
  if (p->broken)
    for (req_t *r = in; r; r = r->next) req_finish(p, r, MPX_EBROKEN);
  if (term) {
    for (req_t *r = in; r; r = r->next) req_finish(p, r, MPX_ECANCELED);
    for (req_t *r = p->active; r; r = r->next) req_finish(p, r, MPX_ECANCELED);
  }
  pthread_mutex_unlock(&p->mu);
  while (in) {
    req_t *r = in;
    in = r->next;
    r->next = NULL;
    if (p->active_tail) p->active_tail->next = r;
    else p->active = r;
    p->active_tail = r;
  }
  if (cancels || term) drop_dead(p);
  if (term) stop_workers(p, 0.2);
  else if (stop) stop_workers(p, 2.0);
  if (shut && !quit) { /* the workers are gone: close everything */
    pthread_mutex_lock(&p->mu);
    quit = p->workers_gone;
    pthread_mutex_unlock(&p->mu);
  }
  if (!quit || p->quit_started) {
    pump(p);
    sweep(p);
    return;
  }
  p->quit_started = true;
  /* Shut down: nothing of the loop's may stay open, nothing listed may
   * stay referenced. */
  pthread_mutex_lock(&p->mu);
  for (req_t *r = p->active; r; r = r->next) {
    r->cancelled = true;
    req_finish(p, r, MPX_ECANCELED);
  }
  pthread_mutex_unlock(&p->mu);
  drop_dead(p);
  for (unsigned k = 0; k < p->n; k++) {
    job_t *j = p->w[k].inflight;
    p->w[k].inflight = NULL;
    p->w[k].ninflight = 0;
    while (j) {
      job_t *nx = j->next;
      job_end(p, j);
      j = nx;
    }
  }
  sweep(p);
  mpx__sup_free(p->sup);
  p->sup = NULL;
  mpx_hub_free(p->hub);
  p->hub = NULL;
  if (p->have_tick) uv_close((uv_handle_t *)&p->tick, close_cb);
  /* mpx_pool_free on the own thread joins it when uv_run returns; a
   * shutdown ends with its callback once every handle is closed. */
  close_wake(p, shut ? on_wake_closed : close_cb);
}

static void loop_main(void *arg) {
  mpx_pool_t *p = arg;
  note_loop_thread(p);
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGINT);
  pthread_sigmask(SIG_BLOCK, &s, NULL); /* SIGINT is for the callers */
  uv_run(p->L, UV_RUN_DEFAULT);
  /* mpx_pool_free from a callback left the pool to this thread. */
  pthread_mutex_lock(&p->mu);
  bool release = p->free_when_done;
  pthread_mutex_unlock(&p->mu);
  if (release) {
    uv_loop_close(p->L);
    pool_release(p);
  }
}

/* ---- the pool ------------------------------------------------------------------------- */

int mpx_pool_new(mpx_pool_t **out, const mpx_pool_opts_t *opts) {
  int rc;
  if (out == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *out = NULL;
  mpx_pool_t *p = calloc(1, sizeof *p);
  if (p == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  if (opts) p->o = *opts;
  mpx_pool_opts_t *o = &p->o;
  if (o->task_timeout < 0 || isnan(o->task_timeout) || o->restart > 2 ||
      o->backoff_min < 0 || o->backoff_max < 0 || o->restart_period < 0) {
    free(p);
    return mpx__err(MPX_EINVAL, "pool: option out of range");
  }
  p->n = o->processes ? o->processes : (unsigned)mpx_cpu_count();
  if (o->start_method == MPX_START_DEFAULT) o->start_method = mpx_get_start_method();
  p->retries = o->retries == 0 ? 2 : o->retries;
  if (o->name) snprintf(p->name, sizeof p->name, "%s", o->name);
  else snprintf(p->name, sizeof p->name, "pool-%u", ++pool_seq);
  o->name = p->name;
  if (o->initargs_len) {
    void *c = malloc(o->initargs_len);
    if (c == NULL) {
      free(p);
      return mpx__err(MPX_ENOMEM, "pool: out of memory");
    }
    memcpy(c, o->initargs, o->initargs_len);
    o->initargs = c;
  }
  if (o->initializer_spec) o->initializer_spec = strdup(o->initializer_spec);
  if ((rc = mpx_transport_resolve(o->transport, &p->transport)) != 0) goto fail;
  p->st.transport = p->transport;
  p->self = getpid();
  if (o->arena_size != MPX_POOL_ARENA_OFF) {
    mpx_arena_opts_t ao = {.size = o->arena_size ? o->arena_size : ARENA_DEFAULT};
    if ((rc = mpx_arena_new(&p->arena, &ao)) != 0) goto fail;
  }
  /* Fork workers, restarts included, come from a copy of this process made
   * now: the pool's thread does not exist yet, and a restart never forks
   * from a process that has it. After the arena, which they inherit. */
  if (o->start_method == MPX_START_FORK &&
      (rc = mpx__zygote_new(&p->zygote, p->name)) != 0)
    goto fail;
  p->user_loop = o->loop != NULL;
  p->L = o->loop ? o->loop : &p->own_loop;
  p->w = calloc(p->n, sizeof *p->w);
  if (p->w == NULL) {
    rc = mpx__err(MPX_ENOMEM, "pool: out of memory");
    goto fail;
  }
  for (unsigned k = 0; k < p->n; k++) {
    p->w[k].p = p;
    p->w[k].idx = k;
    p->w[k].child_fd = -1;
  }
  pthread_mutex_init(&p->mu, NULL);
  mpx__cond_init_monotonic(&p->cv);
  mpx_wbuf_init(&p->sbuf);
  if (!p->user_loop && (rc = uv_loop_init(&p->own_loop)) != 0) {
    rc = mpx__err(MPX_ENOMEM, "pool: uv_loop_init: %s", uv_strerror(rc));
    goto fail;
  }
  if ((rc = uv_async_init(p->L, &p->wake, on_wake)) != 0) {
    rc = mpx__err(MPX_ENOMEM, "pool: uv_async_init: %s", uv_strerror(rc));
    if (!p->user_loop) uv_loop_close(&p->own_loop);
    goto fail;
  }
  p->wake.data = p;
  if (o->task_timeout > 0) {
    uv_timer_init(p->L, &p->tick);
    p->tick.data = p;
    double iv = o->task_timeout / 4;
    if (iv > 0.05) iv = 0.05;
    uint64_t ms = (uint64_t)(iv * 1000) + 1;
    uv_timer_start(&p->tick, on_tick, ms, ms);
    p->have_tick = true;
  }
  if ((rc = mpx_hub_new(&p->hub, p->L, p->transport)) != 0) goto fail_loop;
  mpx__sup_opts_t so = {
      .name = p->name, .n = p->n, .restart = (mpx__restart_t)o->restart,
      .max_restarts = o->max_restarts ? o->max_restarts : 10 + 2 * p->n,
      .period = o->restart_period > 0 ? o->restart_period : 5,
      .backoff_min = o->backoff_min > 0 ? o->backoff_min : 0.01,
      .backoff_max = o->backoff_max > 0 ? o->backoff_max : 1.0,
      .quiet = o->quiet, .arg = p, .prepare = prepare, .started = started,
      .exited = exited, .broken = broken, .empty = broken};
  if ((rc = mpx__sup_new(&p->sup, p->L, &so)) != 0) goto fail_loop;
  if ((rc = mpx__sup_start(p->sup)) != 0) goto fail_loop;
  if (p->user_loop) {
    /* This thread is the loop's, or the loop's first turn says which. */
    note_loop_thread(p);
    wake(p);
  } else if (uv_thread_create(&p->thread, loop_main, p) != 0) {
    rc = mpx__err(MPX_ENOMEM, "pool: cannot start its thread");
    goto fail_loop;
  }
  *out = p;
  return 0;
fail_loop:
  if (p->sup) mpx__sup_free(p->sup);
  if (p->hub) mpx_hub_free(p->hub);
  if (p->have_tick) uv_close((uv_handle_t *)&p->tick, close_cb);
  if (p->user_loop) {
    /* The caller's loop finishes the closes, then the pool frees itself. */
    p->free_when_done = true;
    close_wake(p, on_wake_closed);
    return rc;
  }
  uv_close((uv_handle_t *)&p->wake, close_cb);
  uv_run(&p->own_loop, UV_RUN_DEFAULT);
  uv_loop_close(&p->own_loop);
fail:
  mpx__zygote_free(p->zygote);
  free(p->w);
  free((void *)o->initargs);
  free((void *)o->initializer_spec);
  mpx_wbuf_free(&p->sbuf);
  mpx_arena_free(p->arena);
  free(p);
  return rc;
}

static size_t auto_chunk(mpx_pool_t *p, size_t n, size_t item_bytes) {
  if (p->o.chunksize) return p->o.chunksize;
  size_t c = (n + 4 * p->n - 1) / (4 * p->n);
  size_t cap = CHUNK_BYTES / (item_bytes + 4);
  if (cap < 1) cap = 1;
  if (c > cap) c = cap;
  return c ? c : 1;
}

int mpx_pool_apply(mpx_pool_t *p, mpx_func_t f, const void *in, size_t len,
                   void **out, size_t *out_len, double timeout) {
  if (p == NULL || out == NULL || out_len == NULL || (in == NULL && len))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *out = NULL;
  *out_len = 0;
  if (on_loop_thread(p)) return deadlock(p);
  mpx_async_t *a;
  int rc = mpx_pool_apply_async(p, f, in, len, NULL, NULL, NULL, &a);
  if (rc != 0) return rc;
  rc = run_call(p, a, timeout);
  if (rc == 0 && a->res_ref) {
    /* The worker's block: one copy into the caller's buffer. */
    if ((*out = malloc(a->res_len)) == NULL) {
      rc = mpx__err(MPX_ENOMEM, "pool: out of memory for a %zu-byte result",
                    a->res_len);
    } else {
      memcpy(*out, a->res, a->res_len);
      *out_len = a->res_len;
    }
  } else if (rc == 0) {
    *out = a->res;
    *out_len = a->res_len;
    a->res = NULL;
  }
  mpx_async_free(a);
  return rc;
}

/* Submits r with its callbacks; on success *out is its handle, on
 * failure r is freed. */
static int submit_async(mpx_pool_t *p, req_t *r, mpx_func_t f, mpx_async_cb callback,
                        mpx_async_cb error_callback, void *arg, mpx_async_t **out) {
  r->cb = callback;
  r->ecb = error_callback;
  r->arg = arg;
  int rc = submit(p, r, f);
  if (rc != 0) {
    req_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* Submits r (its argument set) as one apply; frees r on failure. */
static int apply_submit(mpx_pool_t *p, req_t *r, mpx_func_t f, size_t len,
                        mpx_async_cb callback, mpx_async_cb error_callback,
                        void *arg, mpx_async_t **out) {
  r->alen = len;
  r->n = 1;
  r->chunk = 1;
  return submit_async(p, r, f, callback, error_callback, arg, out);
}

int mpx_pool_apply_async(mpx_pool_t *p, mpx_func_t f, const void *in,
                         size_t len, mpx_async_cb callback,
                         mpx_async_cb error_callback, void *arg,
                         mpx_async_t **out) {
  if (p == NULL || out == NULL || (in == NULL && len))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = req_new(p, R_APPLY);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  /* A large argument: copied once, into a block the worker reads. */
  if (len > MPX_POOL_ARENA_THRESHOLD && (r->aref = block_copy(p, in, len))) {
    r->acopy = mpx_arena_ptr(p->arena, r->aref);
  } else if (len > PM_ITEM_LEN) {
    free(r);
    return mpx__err(MPX_E2BIG, "pool: an argument of %zu bytes is too large "
                    "to send inline and the arena has no room", len);
  } else if (len) {
    if ((r->acopy = malloc(len)) == NULL) {
      free(r);
      return mpx__err(MPX_ENOMEM, "pool: out of memory");
    }
    memcpy(r->acopy, in, len);
  }
  return apply_submit(p, r, f, len, callback, error_callback, arg, out);
}

int mpx_pool_loan(mpx_pool_t *p, size_t len, mpx_pool_loan_t *loan) {
  if (p == NULL || loan == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *loan = (mpx_pool_loan_t){0};
  if (p->arena == NULL)
    return mpx__err(MPX_ENOTSUP, "pool: no arena (opts.arena_size is off)");
  if (mpx_arena_alloc(p->arena, len ? len : 1, 0, &loan->ref) != 0)
    return mpx__err(MPX_ENOBUFS, "pool: the arena has no room for %zu bytes now", len);
  loan->data = mpx_arena_ptr(p->arena, loan->ref);
  loan->len = len;
  return 0;
}

void mpx_pool_loan_cancel(mpx_pool_t *p, mpx_pool_loan_t *loan) {
  if (p == NULL || loan == NULL || loan->ref == 0) return;
  block_release(p, loan->ref);
  *loan = (mpx_pool_loan_t){0};
}

int mpx_pool_apply_async_loan(mpx_pool_t *p, mpx_func_t f, mpx_pool_loan_t *loan,
                              size_t used, mpx_async_cb callback,
                              mpx_async_cb error_callback, void *arg,
                              mpx_async_t **out) {
  if (p == NULL || loan == NULL || out == NULL || loan->ref == 0)
    return mpx__err(MPX_EINVAL, "pool: NULL argument or an empty loan");
  if (used > loan->len) {
    mpx_pool_loan_cancel(p, loan);
    return mpx__err(MPX_EINVAL, "pool: %zu bytes used of a %zu-byte loan",
                    used, loan->len);
  }
  req_t *r = req_new(p, R_APPLY);
  if (r == NULL) {
    mpx_pool_loan_cancel(p, loan);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  r->aref = loan->ref;
  r->acopy = loan->data;
  *loan = (mpx_pool_loan_t){0};
  return apply_submit(p, r, f, used, callback, error_callback, arg, out);
}

int mpx_async_arg(const mpx_async_t *a, const void **data, size_t *len) {
  if (a == NULL || data == NULL || len == NULL || a->kind != R_APPLY)
    return mpx__err(MPX_EINVAL, "pool: not an apply_async handle");
  *data = a->acopy;
  *len = a->alen;
  return 0;
}

int mpx_async_wait(mpx_async_t *a, double timeout) {
  if (a == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  return wait_until(a->p, req_complete, a, timeout);
}

int mpx_async_get(mpx_async_t *a, const void **data, size_t *len,
                  double timeout) {
  if (a == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  int rc = wait_until(a->p, req_complete, a, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&a->p->mu);
  rc = req_result(a);
  *data = rc == 0 ? a->res : NULL;
  *len = rc == 0 ? a->res_len : 0;
  pthread_mutex_unlock(&a->p->mu);
  return rc;
}

bool mpx_async_ready(const mpx_async_t *a) {
  if (a == NULL) return false;
  pthread_mutex_lock(&a->p->mu);
  bool r = a->complete;
  pthread_mutex_unlock(&a->p->mu);
  return r;
}

bool mpx_async_successful(const mpx_async_t *a) {
  if (a == NULL) return false;
  pthread_mutex_lock(&a->p->mu);
  bool r = a->complete && a->call_rc == 0 && a->rc == 0;
  pthread_mutex_unlock(&a->p->mu);
  return r;
}

const char *mpx_async_error(const mpx_async_t *a) {
  if (a == NULL) return "";
  pthread_mutex_lock(&a->p->mu);
  const char *e = !a->complete ? ""
                  : a->call_rc == MPX_EBROKEN ? a->p->why
                  : a->call_rc != 0 ? mpx_strerror(a->call_rc)
                  : a->err ? a->err : "";
  pthread_mutex_unlock(&a->p->mu);
  return e;
}

/* Under mu, as the caller lets go of an apply: when no job uses its
 * blocks any more and no callback will read them, they go back to the
 * arena now rather than when the loop drops its reference, so that the
 * arena is empty when mpx_pool_apply returns. */
static void apply_release_early(req_t *r) {
  if (r->kind != R_APPLY || r->refs < 2 || !r->complete || r->live != 0 ||
      r->cb != NULL || r->ecb != NULL)
    return;
  if (r->aref) {
    block_release(r->p, r->aref);
    r->aref = 0;
    r->acopy = NULL;
  }
  if (r->res_ref) {
    block_release(r->p, r->res_ref);
    r->res_ref = 0;
    r->res = NULL;
  }
}

void mpx_async_free(mpx_async_t *a) {
  if (a == NULL) return;
  mpx_pool_t *p = a->p;
  /* A map writes into the caller's array: stop it first. */
  if (a->kind == R_MAP && !mpx_async_ready(a)) cancel(p, a);
  pthread_mutex_lock(&p->mu);
  apply_release_early(a);
  req_unref(a);
  pthread_mutex_unlock(&p->mu);
}

static int map_common(mpx_pool_t *p, req_t *r, mpx_func_t f, double timeout) {
  if (on_loop_thread(p)) {
    req_free(r);
    return deadlock(p);
  }
  if (r->n == 0) {
    req_free(r);
    return 0;
  }
  int rc = submit(p, r, f);
  if (rc != 0) {
    req_free(r);
    return rc;
  }
  rc = run_call(p, r, timeout);
  pthread_mutex_lock(&p->mu);
  req_unref(r);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

static req_t *map_req(mpx_pool_t *p, const mpx_conn_buf_t *in, size_t n,
                      mpx_pool_result_t *out) {
  memset(out, 0, n * sizeof *out);
  req_t *r = req_new(p, R_MAP);
  if (r == NULL) return NULL;
  size_t bytes = 0;
  for (size_t i = 0; i < n && i < 64; i++) bytes += in[i].len;
  r->in = in;
  r->out = out;
  r->n = n;
  r->chunk = auto_chunk(p, n, n ? bytes / (n < 64 ? n : 64) : 0);
  return r;
}

int mpx_pool_map(mpx_pool_t *p, mpx_func_t f, const mpx_conn_buf_t *in,
                 size_t n, mpx_pool_result_t *out, double timeout) {
  if (p == NULL || (n && (in == NULL || out == NULL)))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = map_req(p, in, n, out);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  return map_common(p, r, f, timeout);
}

int mpx_pool_map_async(mpx_pool_t *p, mpx_func_t f, const mpx_conn_buf_t *in,
                       size_t n, mpx_pool_result_t *out, mpx_async_cb callback,
                       mpx_async_cb error_callback, void *arg,
                       mpx_async_t **handle) {
  if (p == NULL || handle == NULL || n == 0 || in == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument or no inputs");
  req_t *r = map_req(p, in, n, out);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  return submit_async(p, r, f, callback, error_callback, arg, handle);
}

void mpx_pool_results_free(mpx_pool_result_t *out, size_t n) {
  for (size_t i = 0; out && i < n; i++) {
    free(out[i].data);
    free(out[i].error);
    out[i].data = NULL;
    out[i].error = NULL;
  }
}

int mpx_pool_map_fixed(mpx_pool_t *p, mpx_func_t f, const void *in,
                       size_t in_size, size_t n, void *out, size_t out_size,
                       int *rc, double timeout) {
  if (p == NULL || (n && ((in == NULL && in_size) || (out == NULL && out_size))))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = req_new(p, R_FIXED);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  r->fin = in;
  r->in_size = in_size;
  r->fout = out;
  r->out_size = out_size;
  r->frc = rc;
  if (rc) memset(rc, 0, n * sizeof *rc);
  r->n = n;
  r->chunk = auto_chunk(p, n, in_size);
  return map_common(p, r, f, timeout);
}

/* ---- imap ------------------------------------------------------------------------------ */

struct mpx_imap_s {
  mpx_pool_t *p;
  req_t *r;
  mpx_iter_fn next;
  void *arg;
  bool ordered, exhausted;
  bool auto_window; /* the default window: 2 x DEPTH per worker, up to
                       2 x DEPTH_SHORT per worker while the jobs are short */
  int iter_rc;
  size_t returned; /* results handed out */
  size_t next_out; /* ordered: the next index to hand out */
  size_t cur;      /* the slot handed out last (freed at the next call) */
  bool have_cur;
};

int mpx_pool_imap(mpx_pool_t *p, mpx_func_t f, mpx_iter_fn next, void *arg,
                  bool ordered, size_t window, mpx_imap_t **out) {
  if (p == NULL || next == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  mpx_imap_t *it = calloc(1, sizeof *it);
  req_t *r = req_new(p, R_IMAP);
  bool auto_window = window == 0;
  if (window == 0) window = 2 * (size_t)p->n * DEPTH_SHORT;
  if (it == NULL || r == NULL ||
      (r->ring = calloc(window, sizeof *r->ring)) == NULL ||
      (!ordered && (r->fifo = calloc(window, sizeof *r->fifo)) == NULL)) {
    free(it);
    if (r) req_free(r);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  r->W = window;
  r->chunk = (auto_window ? 2 * (size_t)p->n * DEPTH : window) / (2 * (size_t)p->n);
  if (r->chunk < 1) r->chunk = 1;
  if (p->o.chunksize) r->chunk = p->o.chunksize;
  int rc = submit(p, r, f);
  if (rc != 0) {
    req_free(r);
    free(it);
    return rc;
  }
  it->p = p;
  it->r = r;
  it->next = next;
  it->arg = arg;
  it->ordered = ordered;
  it->auto_window = auto_window;
  *out = it;
  return 0;
}

/* Pull inputs until the window is full. */
static void imap_fill(mpx_imap_t *it) {
  req_t *r = it->r;
  mpx_pool_t *p = it->p;
  size_t n = r->n, added = 0, window = r->W;
  if (it->auto_window &&
      !atomic_load_explicit(&p->short_jobs, memory_order_relaxed))
    window = 2 * (size_t)p->n * DEPTH;
  while (!it->exhausted && n - it->returned < window && !r->ring[n % r->W].busy) {
    const void *d;
    size_t l;
    int rc = it->next(it->arg, &d, &l);
    if (rc <= 0) {
      it->exhausted = true;
      it->iter_rc = rc;
      break;
    }
    islot_t *s = &r->ring[n % r->W];
    slot_clear(p, s);
    /* A large argument goes straight into an arena block. */
    mpx_ref_t ref = l > MPX_POOL_ARENA_THRESHOLD ? block_copy(p, d, l) : 0;
    void *c = ref ? mpx_arena_ptr(p->arena, ref) : l ? malloc(l) : NULL;
    if (l && c == NULL) {
      it->exhausted = true;
      it->iter_rc = mpx__err(l > PM_ITEM_LEN ? MPX_E2BIG : MPX_ENOMEM,
                             "pool: no room for an argument of %zu bytes", l);
      break;
    }
    if (l && !ref) memcpy(c, d, l);
    *s = (islot_t){.in = c, .in_len = l, .in_ref = ref, .busy = true};
    n++;
    added++;
  }
  if (added) {
    pthread_mutex_lock(&p->mu);
    r->n = n;
    r->live += added;
    pthread_mutex_unlock(&p->mu);
    wake(p);
  }
}

static bool imap_ready(void *arg) {
  mpx_imap_t *it = arg;
  req_t *r = it->r;
  if (r->call_rc != 0) return true;
  if (it->ordered)
    return it->next_out < r->n && r->ring[it->next_out % r->W].done;
  return r->fifo_len > 0 || it->returned == r->n;
}

int mpx_imap_next(mpx_imap_t *it, const void **data, size_t *len,
                  size_t *index, double timeout) {
  if (it == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = it->r;
  mpx_pool_t *p = it->p;
  *data = NULL;
  *len = 0;
  if (it->have_cur) {
    slot_clear(p, &r->ring[it->cur % r->W]);
    it->have_cur = false;
  }
  imap_fill(it);
  pthread_mutex_lock(&p->mu);
  bool end = it->returned == r->n && it->exhausted;
  pthread_mutex_unlock(&p->mu);
  if (end) return it->iter_rc < 0 ? it->iter_rc : 0;
  int rc = wait_until(p, imap_ready, it, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&p->mu);
  if (r->call_rc != 0) {
    rc = req_result(r);
    pthread_mutex_unlock(&p->mu);
    return rc;
  }
  size_t i;
  if (it->ordered) {
    i = it->next_out++;
  } else {
    i = r->fifo[r->fifo_head];
    r->fifo_head = (r->fifo_head + 1) % r->W;
    r->fifo_len--;
  }
  islot_t *s = &r->ring[i % r->W];
  it->returned++;
  it->cur = i;
  it->have_cur = true;
  if (index) *index = i;
  if (s->rc != 0) {
    rc = mpx__err(s->rc, "%s", s->err ? s->err : "task failed");
  } else {
    *data = s->out;
    *len = s->out_len;
    rc = 1;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void mpx_imap_free(mpx_imap_t *it) {
  if (it == NULL) return;
  mpx_pool_t *p = it->p;
  req_t *r = it->r;
  cancel(p, r);
  pthread_mutex_lock(&p->mu);
  /* Every task has ended and no more will be cut (cancelled): no job
   * reads the ring, so its blocks (the last result handed out among them)
   * go back to the arena now, not when the loop drops its reference. */
  if (r->live == 0)
    for (size_t i = 0; i < r->W; i++) slot_clear(p, &r->ring[i]);
  req_unref(r);
  pthread_mutex_unlock(&p->mu);
  free(it);
}

/* ---- objects ------------------------------------------------------------------------------ */

int mpx_pool_apply_obj(mpx_pool_t *p, mpx_func_t f, const mpx_codec_t *codec,
                       const mpx_obj_t *arg, mpx_obj_t **result,
                       double timeout) {
  if (codec == NULL || arg == NULL || result == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *result = NULL;
  mpx_wbuf_t b;
  mpx_wbuf_init(&b);
  int rc = mpx_codec_encode(codec, arg, &b, NULL);
  void *res = NULL;
  size_t rlen = 0;
  if (rc == 0) rc = mpx_pool_apply(p, f, b.data, b.len, &res, &rlen, timeout);
  mpx_wbuf_free(&b);
  if (rc == 0) rc = mpx_codec_decode(codec, res, rlen, NULL, result);
  free(res);
  return rc;
}

int mpx_pool_starmap(mpx_pool_t *p, mpx_func_t f, const mpx_codec_t *codec,
                     const mpx_obj_t *args, mpx_obj_t **results,
                     double timeout) {
  if (codec == NULL || args == NULL || results == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *results = NULL;
  size_t n = mpx_obj_len(args);
  mpx_wbuf_t *enc = calloc(n ? n : 1, sizeof *enc);
  mpx_conn_buf_t *in = calloc(n ? n : 1, sizeof *in);
  mpx_pool_result_t *out = calloc(n ? n : 1, sizeof *out);
  int rc = enc && in && out ? 0 : mpx__err(MPX_ENOMEM, "pool: out of memory");
  for (size_t i = 0; rc == 0 && i < n; i++) {
    mpx_wbuf_init(&enc[i]);
    rc = mpx_codec_encode(codec, mpx_obj_item(args, i), &enc[i], NULL);
    in[i] = (mpx_conn_buf_t){enc[i].data, enc[i].len};
  }
  if (rc == 0) rc = mpx_pool_map(p, f, in, n, out, timeout);
  if (rc == 0) {
    mpx_obj_t *arr = mpx_obj_array(n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
      mpx_obj_t *o;
      rc = mpx_codec_decode(codec, out[i].data, out[i].len, NULL, &o);
      if (rc == 0) rc = mpx_obj_append(arr, o);
    }
    if (rc == 0) *results = arr;
    else mpx_obj_release(arr);
  }
  if (out) mpx_pool_results_free(out, n);
  for (size_t i = 0; enc && i < n; i++) mpx_wbuf_free(&enc[i]);
  free(enc);
  free(in);
  free(out);
  return rc;
}

/* ---- lifetime ------------------------------------------------------------------------------ */

int mpx_pool_close(mpx_pool_t *p) {
  if (p == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  pthread_mutex_lock(&p->mu);
  p->closed = true;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

int mpx_pool_terminate(mpx_pool_t *p) {
  if (p == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  pthread_mutex_lock(&p->mu);
  p->closed = p->terminated = true;
  pthread_mutex_unlock(&p->mu);
  wake(p);
  return 0;
}

static bool no_work(void *p) { return ((mpx_pool_t *)p)->live_reqs == 0; }
static bool gone(void *p) { return ((mpx_pool_t *)p)->workers_gone; }
static bool shut_down(void *p) { return ((mpx_pool_t *)p)->handles_closed; }

int mpx_pool_join(mpx_pool_t *p, double timeout) {
  if (p == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  pthread_mutex_lock(&p->mu);
  bool closed = p->closed;
  pthread_mutex_unlock(&p->mu);
  if (!closed) return mpx__err(MPX_ESTATE, "pool: join before close");
  double deadline = mpx__deadline(timeout);
  int rc = wait_until(p, no_work, p, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&p->mu);
  p->stop_req = true;
  pthread_mutex_unlock(&p->mu);
  wake(p);
  double left = deadline < 0 ? -1 : deadline - mpx__now();
  return wait_until(p, gone, p, deadline >= 0 && left < 0 ? 0 : left);
}

/* Under mu: start a shutdown (or keep the one started). */
static void begin_shutdown(mpx_pool_t *p) {
  p->closed = true;
  p->shut = true;
  pthread_cond_broadcast(&p->cv);
}

int mpx_pool_shutdown(mpx_pool_t *p, mpx_pool_shutdown_cb cb, void *arg) {
  if (p == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  pthread_mutex_lock(&p->mu);
  bool again = p->shut;
  if (!again) {
    p->shut_cb = cb;
    p->shut_arg = arg;
    begin_shutdown(p);
  }
  pthread_mutex_unlock(&p->mu);
  if (again) return mpx__err(MPX_ESTATE, "%s: already shutting down", p->name);
  wake(p);
  return 0;
}

/* Everything the pool holds, once its handles are closed and its loop
 * (the own one) is closed or is the caller's. */
static void pool_release(mpx_pool_t *p) {
  for (size_t i = 0; i < p->nfns; i++) free(p->fns[i].str);
  free(p->fns);
  for (unsigned k = 0; p->w && k < p->n; k++) free(p->w[k].wargs);
  free(p->w);
  free((void *)p->o.initargs);
  free((void *)p->o.initializer_spec);
  mpx_wbuf_free(&p->sbuf);
  mpx__zygote_free(p->zygote); /* its children were reaped through it */
  if (p->arena) {
    mpx_arena_stats_t as;
    if (mpx_arena_stats(p->arena, &as) == 0 && as.n_allocated)
      MPX__DEBUG("%s: %zu arena blocks still allocated at free (a result "
                 "handle not freed?)", p->name, as.n_allocated);
    mpx_arena_free(p->arena);
  }
  pthread_mutex_destroy(&p->mu);
  pthread_cond_destroy(&p->cv);
  free(p);
}

void mpx_pool_free(mpx_pool_t *p) {
  if (p == NULL) return;
  bool mine = on_loop_thread(p);
  pthread_mutex_lock(&p->mu);
  bool closed = p->closed, busy = p->live_reqs > 0, shut = p->shut;
  bool done = p->handles_closed;
  pthread_mutex_unlock(&p->mu);
  if (!closed && busy) {
    MPX__WARN("%s: freed while busy and not closed: terminating it", p->name);
    mpx_pool_terminate(p);
  }
  if (p->user_loop || shut || mine) {
    /* The loop ends the pool: a shutdown. */
    if (!done) {
      pthread_mutex_lock(&p->mu);
      begin_shutdown(p);
      done = p->handles_closed;
      if (!done && mine) p->free_when_done = true;
      pthread_mutex_unlock(&p->mu);
      if (!done && mine) {
        /* On the loop's thread: the rest happens as the loop runs. The
         * own thread frees the pool when its loop returns. */
        wake(p);
        if (!p->user_loop) pthread_detach(p->thread);
        return;
      }
      if (!done) {
        wake(p);
        while (wait_until(p, shut_down, p, -1) == MPX_EINTR) {
        }
      }
    }
    if (!p->user_loop) {
      uv_thread_join(&p->thread);
      uv_loop_close(&p->own_loop);
    }
    pool_release(p);
    return;
  }
  mpx_pool_close(p);
  while (mpx_pool_join(p, -1) == MPX_EINTR) {
  }
  pthread_mutex_lock(&p->mu);
  p->quit_loop = true;
  pthread_mutex_unlock(&p->mu);
  wake(p);
  uv_thread_join(&p->thread);
  uv_loop_close(&p->own_loop);
  pool_release(p);
}

int mpx_pool_stats(mpx_pool_t *p, mpx_pool_stats_t *st) {
  if (p == NULL || st == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  pthread_mutex_lock(&p->mu);
  *st = p->st;
  st->workers = p->alive;
  pthread_mutex_unlock(&p->mu);
  mpx_arena_stats_t as;
  if (p->arena && mpx_arena_stats(p->arena, &as) == 0) {
    st->arena_size = as.capacity;
    st->arena_used = as.used;
    st->arena_blocks = as.n_allocated;
  }
  return 0;
}
