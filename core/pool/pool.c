/* The pool: its lifetime (new, close, terminate, join, shutdown, free) and
 * its statistics. The rest of the coordinator is cut by concept; see
 * pool_internal.h for the map.
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
 * How the pool ends depends on its loop (pool_wake.c): mpx_pool_free stops
 * the own thread after join; a shutdown (mpx_pool_shutdown, or
 * mpx_pool_free with a caller's loop) is driven by the loop and ends once
 * every handle is closed. */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pool_internal.h"

static _Atomic unsigned pool_seq;

/* ---- new -------------------------------------------------------------------------- */

/* The options, checked and copied: the pool keeps its own initargs and
 * initializer spec. On failure nothing is held but p itself. */
static int take_opts(mpx_pool_t *p, const mpx_pool_opts_t *opts) {
  if (opts) p->o = *opts;
  mpx_pool_opts_t *o = &p->o;
  if (o->task_timeout < 0 || isnan(o->task_timeout) || o->restart > 2 ||
      o->backoff_min < 0 || o->backoff_max < 0 || o->restart_period < 0)
    return mpx__err(MPX_EINVAL, "pool: option out of range");
  p->n = o->processes ? o->processes : (unsigned)mpx_cpu_count();
  if (o->start_method == MPX_START_DEFAULT) o->start_method = mpx_get_start_method();
  p->retries = o->retries == 0 ? 2 : o->retries;
  if (o->name) snprintf(p->name, sizeof p->name, "%s", o->name);
  else snprintf(p->name, sizeof p->name, "pool-%u", ++pool_seq);
  o->name = p->name;
  if (o->initargs_len) {
    void *c = malloc(o->initargs_len);
    if (c == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
    memcpy(c, o->initargs, o->initargs_len);
    o->initargs = c;
  }
  if (o->initializer_spec && (o->initializer_spec = strdup(o->initializer_spec)) == NULL) {
    /* Without it the workers would start with no initializer: fail. The
     * caller frees only p, so the initargs copy goes here. */
    if (o->initargs_len) free((void *)o->initargs);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  return 0;
}

/* What the workers need before the loop: the transport, the arena, the
 * zygote, the worker table. */
static int make_parts(mpx_pool_t *p) {
  mpx_pool_opts_t *o = &p->o;
  int rc;
  if ((rc = mpx_transport_resolve(o->transport, &p->transport)) != 0) return rc;
  p->st.transport = p->transport;
  p->self = getpid();
  if (o->arena_size != MPX_POOL_ARENA_OFF) {
    mpx_arena_opts_t ao = {.size = o->arena_size ? o->arena_size : ARENA_DEFAULT};
    if ((rc = mpx_arena_new(&p->arena, &ao)) != 0) return rc;
  }
  /* Fork workers, restarts included, come from a copy of this process made
   * now: the pool's thread does not exist yet, and a restart never forks
   * from a process that has it. After the arena, which they inherit. */
  if (o->start_method == MPX_START_FORK &&
      (rc = mpx__zygote_new(&p->zygote, p->name)) != 0)
    return rc;
  p->user_loop = o->loop != NULL;
  p->L = o->loop ? o->loop : &p->own_loop;
  p->w = calloc(p->n, sizeof *p->w);
  if (p->w == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  for (unsigned k = 0; k < p->n; k++) {
    p->w[k].p = p;
    p->w[k].idx = k;
    p->w[k].child_fd = -1;
  }
  return 0;
}

/* The lock and condition callers and the loop share (the condition on the
 * monotonic clock, as mpx__deadline is), and the loop's send buffer. */
static void init_sync(mpx_pool_t *p) {
  pthread_mutex_init(&p->mu, NULL);
  mpx__cond_init_monotonic(&p->cv);
  mpx_wbuf_init(&p->sbuf);
}

/* The hub, the supervisor and its first workers, then the loop runs. */
static int start(mpx_pool_t *p) {
  int rc;
  if ((rc = mpx_hub_new(&p->hub, p->L, p->transport)) != 0) return rc;
  if ((rc = mpx__pool_sup_new(p)) != 0) return rc;
  if ((rc = mpx__sup_start(p->sup)) != 0) return rc;
  return mpx__pool_loop_start(p);
}

/* A new pool that failed before its loop had handles: what it holds. */
static void undo(mpx_pool_t *p) {
  mpx__zygote_free(p->zygote);
  free(p->w);
  free((void *)p->o.initargs);
  free((void *)p->o.initializer_spec);
  mpx_wbuf_free(&p->sbuf);
  mpx_arena_free(p->arena);
  free(p);
}

int mpx_pool_new(mpx_pool_t **out, const mpx_pool_opts_t *opts) {
  int rc;
  if (out == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *out = NULL;
  mpx_pool_t *p = calloc(1, sizeof *p);
  if (p == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  if ((rc = take_opts(p, opts)) != 0) {
    free(p); /* the options point at the caller's memory still */
    return rc;
  }
  if ((rc = make_parts(p)) != 0) goto fail;
  init_sync(p);
  if ((rc = mpx__pool_loop_open(p)) != 0) goto fail;
  if ((rc = start(p)) != 0) {
    if (p->sup) mpx__sup_free(p->sup);
    if (p->hub) mpx_hub_free(p->hub);
    if (mpx__pool_loop_abandon(p)) return rc; /* the caller's loop frees it */
    goto fail;
  }
  *out = p;
  return 0;
fail:
  undo(p);
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
  mpx__pool_wake(p);
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
  int rc = mpx__pool_wait(p, no_work, p, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&p->mu);
  p->stop_req = true;
  pthread_mutex_unlock(&p->mu);
  mpx__pool_wake(p);
  double left = deadline < 0 ? -1 : deadline - mpx__now();
  return mpx__pool_wait(p, gone, p, deadline >= 0 && left < 0 ? 0 : left);
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
  mpx__pool_wake(p);
  return 0;
}

/* Everything the pool holds, once its handles are closed and its loop
 * (the own one) is closed or is the caller's. */
void mpx__pool_release(mpx_pool_t *p) {
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
  bool mine = mpx__pool_on_loop_thread(p);
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
        mpx__pool_wake(p);
        if (!p->user_loop) pthread_detach(p->thread);
        return;
      }
      if (!done) {
        mpx__pool_wake(p);
        while (mpx__pool_wait(p, shut_down, p, -1) == MPX_EINTR) {
        }
      }
    }
    if (!p->user_loop) {
      uv_thread_join(&p->thread);
      uv_loop_close(&p->own_loop);
    }
    mpx__pool_release(p);
    return;
  }
  mpx_pool_close(p);
  while (mpx_pool_join(p, -1) == MPX_EINTR) {
  }
  pthread_mutex_lock(&p->mu);
  p->quit_loop = true;
  pthread_mutex_unlock(&p->mu);
  mpx__pool_wake(p);
  uv_thread_join(&p->thread);
  uv_loop_close(&p->own_loop);
  mpx__pool_release(p);
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
