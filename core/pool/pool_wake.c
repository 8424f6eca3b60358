/* The pool's loop handles: the loop (the pool's own, run by a thread, or
 * the caller's: opts.loop), the wake-up (uv_async) by which callers hand
 * it requests, the tick that enforces task_timeout, and the pool's end.
 *
 * Both loops run the same code; the difference is how the pool ends:
 * mpx_pool_free stops the own thread after join, while a shutdown
 * (mpx_pool_shutdown, or mpx_pool_free with a caller's loop) is a state
 * driven by the loop: `shut` set, wait for no work, stop the workers, wait
 * for them to be gone, close every handle, then one more turn of the loop
 * (the `fin` timer) so that every close callback has run before the
 * shutdown callback and the pool's memory goes. */
#include <pthread.h>
#include <sched.h>
#include <signal.h>

#include "pool_internal.h"

/* ---- the loop's thread ---------------------------------------------------------- */

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

/* ---- wake-ups ------------------------------------------------------------------- */

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
void mpx__pool_drop_dead(mpx_pool_t *p) {
  job_t **pp = &p->retry;
  p->retry_tail = NULL;
  while (*pp) {
    job_t *j = *pp;
    pthread_mutex_lock(&p->mu);
    bool drop = j->r->cancelled || j->r->complete;
    pthread_mutex_unlock(&p->mu);
    if (drop) {
      *pp = j->next;
      mpx__pool_job_end(p, j);
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
  if (release) mpx__pool_release(p);
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

/* on_wake(), once the loop is to quit: nothing of the loop's may stay
 * open, nothing listed may stay referenced. */
static void close_all(mpx_pool_t *p, bool shut) {
  pthread_mutex_lock(&p->mu);
  for (req_t *r = p->active; r; r = r->next) {
    r->cancelled = true;
    mpx__pool_req_finish(p, r, MPX_ECANCELED);
  }
  pthread_mutex_unlock(&p->mu);
  mpx__pool_drop_dead(p);
  for (unsigned k = 0; k < p->n; k++) {
    job_t *j = p->w[k].inflight;
    p->w[k].inflight = NULL;
    p->w[k].ninflight = 0;
    while (j) {
      job_t *nx = j->next;
      mpx__pool_job_end(p, j);
      j = nx;
    }
  }
  mpx__pool_sweep(p);
  mpx__sup_free(p->sup);
  p->sup = NULL;
  mpx_hub_free(p->hub);
  p->hub = NULL;
  if (p->have_tick) uv_close((uv_handle_t *)&p->tick, close_cb);
  /* mpx_pool_free on the own thread joins it when uv_run returns; a
   * shutdown ends with its callback once every handle is closed. */
  close_wake(p, shut ? on_wake_closed : close_cb);
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
    for (req_t *r = in; r; r = r->next) mpx__pool_req_finish(p, r, MPX_EBROKEN);
  if (term) {
    for (req_t *r = in; r; r = r->next) mpx__pool_req_finish(p, r, MPX_ECANCELED);
    for (req_t *r = p->active; r; r = r->next) mpx__pool_req_finish(p, r, MPX_ECANCELED);
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
  if (cancels || term) mpx__pool_drop_dead(p);
  if (term) stop_workers(p, 0.2);
  else if (stop) stop_workers(p, 2.0);
  if (shut && !quit) { /* the workers are gone: close everything */
    pthread_mutex_lock(&p->mu);
    quit = p->workers_gone;
    pthread_mutex_unlock(&p->mu);
  }
  if (!quit || p->quit_started) {
    mpx__pool_pump(p);
    mpx__pool_sweep(p);
    return;
  }
  p->quit_started = true;
  close_all(p, shut);
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
    mpx__pool_release(p);
  }
}

/* ---- set-up ------------------------------------------------------------------------ */

int mpx__pool_loop_open(mpx_pool_t *p) {
  int rc;
  if (!p->user_loop && (rc = uv_loop_init(&p->own_loop)) != 0)
    return mpx__err(MPX_ENOMEM, "pool: uv_loop_init: %s", uv_strerror(rc));
  if ((rc = uv_async_init(p->L, &p->wake, on_wake)) != 0) {
    rc = mpx__err(MPX_ENOMEM, "pool: uv_async_init: %s", uv_strerror(rc));
    if (!p->user_loop) uv_loop_close(&p->own_loop);
    return rc;
  }
  p->wake.data = p;
  if (p->o.task_timeout > 0) {
    uv_timer_init(p->L, &p->tick);
    p->tick.data = p;
    double iv = p->o.task_timeout / 4;
    if (iv > 0.05) iv = 0.05;
    uint64_t ms = (uint64_t)(iv * 1000) + 1;
    uv_timer_start(&p->tick, on_tick, ms, ms);
    p->have_tick = true;
  }
  return 0;
}

int mpx__pool_loop_start(mpx_pool_t *p) {
  if (p->user_loop) {
    /* This thread is the loop's, or the loop's first turn says which. */
    note_loop_thread(p);
    mpx__pool_wake(p);
  } else if (uv_thread_create(&p->thread, loop_main, p) != 0) {
    return mpx__err(MPX_ENOMEM, "pool: cannot start its thread");
  }
  return 0;
}

bool mpx__pool_loop_abandon(mpx_pool_t *p) {
  if (p->have_tick) uv_close((uv_handle_t *)&p->tick, close_cb);
  if (p->user_loop) {
    /* The caller's loop finishes the closes, then the pool frees itself. */
    p->free_when_done = true;
    close_wake(p, on_wake_closed);
    return true;
  }
  uv_close((uv_handle_t *)&p->wake, close_cb);
  uv_run(&p->own_loop, UV_RUN_DEFAULT);
  uv_loop_close(&p->own_loop);
  return false;
}
