/* The pipeline engine (mpx/pipeline.h).
 *
 * The calling thread runs the source plugin; every map or reduce stage is
 * a pool of spawned workers (engine_worker.c); sinks run in this process.
 * Items pushed into a worker stage collect in its pending batch, which is
 * submitted (apply_async) when full. A batch's answer arrives on the
 * stage pool's thread: its failures are dead-lettered, its outputs pushed
 * into the next stage (in input order for an ordered stage, through a
 * reorder list), a reduce stage's partial merged into the stage's total.
 * Retries: a plugin's error is retried in the worker (engine_worker.c); a
 * task whose worker died is run again by the pool, `retries` times. A
 * batch that still fails is split: at the item that ran past the stage's
 * timeout (the worker says which: engine_proto.h), which is dead-lettered,
 * the others run again; else into single items, none charged with the
 * batch's deaths, so a poisonous item fails alone.
 *
 * Each chain keeps at most two jobs per worker in its pool (what its
 * workers hold: one running, one ready; eight while its jobs are short,
 * as the pool sends them); the rest wait in the chain's queue here. So the first SIGINT can drop everything not yet in a worker
 * and finish only what is; SIGTERM, or a second SIGINT, stops at once.
 *
 * End of stream (engine_drive.c): once the sources are done, each stage's
 * last partial batch is submitted when every stage before it (in
 * topological order) is idle; a reduce then takes its final step.
 *
 * Locks: e->mu guards the counters and the condition the main thread
 * waits on; each stage's s->mu guards its pending batch, reorder list and
 * reduce total; a thread holding a stage's lock may take a later stage's,
 * never an earlier one's. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "engine_int.h"
#include "engine_proto.h"
#include "internal.h"
#include "mpx/pipeline.h"
#include "plugin_host.h"
#include "plugin_probe.h"



void mpx__eng_set_fatal(eng_t *e, int rc, const char *fmt, ...) {
  pthread_mutex_lock(&e->mu);
  if (e->fatal == 0) {
    e->fatal = rc;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->fatal_msg, sizeof e->fatal_msg, fmt, ap);
    va_end(ap);
  }
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* ---- moving items ------------------------------------------------------------------ */


/* Items that will not run: the run is stopping. */
void mpx__eng_count_dropped(eng_t *e, uint64_t n) {
  pthread_mutex_lock(&e->mu);
  e->dropped += n;
  pthread_mutex_unlock(&e->mu);
}

/* Item d leaving stage s by `port`: to every stage that reads that port
 * (none: dropped). A copy into each reader's batch. */
void mpx__eng_route_out(stage_t *s, uint32_t port, const void *d, uint32_t l) {
  eng_t *e = s->e;
  size_t first, count;
  mpx__graph_outs(&e->g, (uint32_t)s->idx, port, &first, &count);
  for (size_t k = 0; k < count; k++) mpx__eng_push(&e->st[e->g.edges[first + k].to], d, l);
}

/* Tagged items leaving stage s (in order; engine_proto.h), to the stages
 * that read their ports. */
static void forward(stage_t *s, const uint8_t *items, size_t len, uint32_t n) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  s->out += n;
  s->t_last = mpx__now();
  bool ended = e->ended;
  pthread_mutex_unlock(&e->mu);
  if (ended) return;
  mpx__rd_t r = mpx__rd_make(items, len);
  for (uint32_t i = 0; i < n; i++) {
    const void *d;
    uint32_t l, tag, hash;
    if (engine_rd_item(&r, &tag, &hash, &d, &l) != 0) break;
    mpx__eng_route_out(s, tag & ENGINE_TAG_PORT, d, l);
  }
  mpx__eng_sinks_kick(e); /* an answer's items are in: the sinks may take them */
}

/* Submit s's pending batch (drop it once the run is stopping); under
 * s->mu. */
void mpx__eng_flush_pend(stage_t *s) {
  if (s->pend_n == 0) return;
  if (mpx__eng_stopping(s->e)) {
    mpx__eng_count_dropped(s->e, s->pend_n);
    s->pend.len = 0;
    s->pend_n = 0;
    return;
  }
  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    mpx__eng_set_fatal(s->e, MPX_ENOMEM, "out of memory");
    return;
  }
  j->s = s;
  j->seq = s->next_seq++;
  j->batch = s->pend;
  j->n = s->pend_n;
  memcpy(j->batch.data, &j->n, 4);
  mpx_wbuf_init(&s->pend);
  s->pend_n = 0;
  mpx__eng_submit(s, j, false);
}

void mpx__eng_push(stage_t *s, const void *data, size_t len) {
  eng_t *e = s->e;
  if (s->pool == NULL) {
    mpx__eng_sink_put(s, data, len); /* its thread runs it (engine_sink.c) */
    return;
  }
  pthread_mutex_lock(&e->mu);
  if (s->in++ == 0) s->t_first = mpx__now();
  pthread_mutex_unlock(&e->mu);
  pthread_mutex_lock(&s->mu);
  if (mpx__eng_stopping(e)) {
    /* Nothing new goes to a worker once the run is stopping. */
    pthread_mutex_unlock(&s->mu);
    mpx__eng_count_dropped(e, 1);
    return;
  }
  if (s->pend_n == 0) {
    uint32_t z = 0;
    mpx_wbuf_append(&s->pend, &z, 4);
  }
  uint32_t l = (uint32_t)len;
  mpx_wbuf_append(&s->pend, &l, 4);
  mpx_wbuf_append(&s->pend, data, len);
  s->pend_n++;
  if (s->pend_n >= s->batch || s->pend.len >= s->batch_bytes) mpx__eng_flush_pend(s);
  pthread_mutex_unlock(&s->mu);
}

void mpx__eng_job_free(job_t *j) {
  if (j == NULL) return;
  if (j->a) mpx_async_free(j->a); /* a loan's block goes back with it */
  else if (j->loan.ref) mpx_pool_loan_cancel(j->s->pool, &j->loan);
  mpx_wbuf_free(&j->batch);
  mpx_wbuf_free(&j->out);
  if (j->subout) {
    for (uint32_t i = 0; i < j->n; i++) mpx_wbuf_free(&j->subout[i]);
    free(j->subout);
  }
  free(j);
}

/* Under s->mu: an ordered stage's answers go out in seq order. */
static void release_in_order(stage_t *s, job_t *j) {
  job_t **pp = &s->rob;
  while (*pp && (*pp)->seq < j->seq) pp = &(*pp)->next;
  j->next = *pp;
  *pp = j;
  while (s->rob && s->rob->seq == s->next_out) {
    job_t *h = s->rob;
    s->rob = h->next;
    s->next_out++;
    forward(s->tail, h->out.data, h->out.len, h->nout);
    mpx__eng_job_free(h);
  }
}

/* A top-level job is over: its outputs (items, n) go on. */
/* Each partial of a chain's answer into its reduce's running total: by
 * fold, or by merge into the total's bytes. Under t->mu. */
static void reduce_total(stage_t *t, const uint8_t *items, size_t len, uint32_t n) {
  eng_t *e = t->e;
  mpx__rd_t r = mpx__rd_make(items, len);
  for (uint32_t i = 0; i < n; i++) {
    const void *d;
    uint32_t l, tag, hash;
    if (engine_rd_item(&r, &tag, &hash, &d, &l) != 0) break;
    int rc;
    if (t->folds) {
      rc = mpx__ctx_call_fold(t->ctx, t->state, d, l);
    } else {
      t->tmp.len = 0;
      rc = mpx__ctx_call_merge(t->ctx, t->state, t->total.data, t->total.len, d, l);
      mpx_wbuf_t tb = t->total;
      t->total = t->tmp;
      t->tmp = tb;
    }
    if (rc != 0) {
      mpx__eng_set_fatal(e, MPX_ETASK, "%s", mpx_last_error());
      break;
    }
    t->have_total = true;
  }
}

static void job_done(stage_t *s) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  if (s->parts) e->parts_done++;
  s->inflight--;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

void mpx__eng_job_finish(stage_t *s, job_t *j, const uint8_t *items, size_t len,
                         uint32_t n) {
  stage_t *t = s->tail;
  if (s->part_of) {
    /* A partition's final outputs leave as its stage's; no lock of its
     * own is held meanwhile (it comes after every stage). */
    if (n) forward(s->part_of, items, len, n);
    mpx__eng_job_free(j);
    job_done(s);
    return;
  }
  pthread_mutex_lock(&s->mu);
  if (t->d->kind == MPX_PLUGIN_REDUCE) {
    /* The reduce's own lock when it is fused after a head: a later
     * stage's lock, allowed. */
    if (t != s) pthread_mutex_lock(&t->mu);
    if (t->nparts) mpx__eng_part_route(t, items, len, n);
    else reduce_total(t, items, len, n);
    if (t != s) pthread_mutex_unlock(&t->mu);
    mpx__eng_job_free(j);
  } else if (s->keep_order) {

    if (j->out.data == NULL || j->out.data != items) {
      j->out.len = 0;
      mpx_wbuf_append(&j->out, items, len);
    }
    j->nout = n;
    release_in_order(s, j);
  } else {
    forward(t, items, len, n);
    mpx__eng_job_free(j);
  }
  pthread_mutex_unlock(&s->mu);
  job_done(s);
}

/* The item i of a batch. */
int mpx__eng_batch_item(const job_t *j, uint32_t i, const void **d, uint32_t *l) {
  if (j->batch.len < 4) return -1;
  mpx__rd_t r = mpx__rd_make(j->batch.data + 4, j->batch.len - 4);
  for (uint32_t k = 0; k <= i; k++)
    if (mpx__rd_bytes32(&r, d, l) != 0) return -1;
  return 0;
}

/* A job split from a parent (a single item, or a run of items from the
 * parent's item `sub`) is over with outputs (or none). */
static void sub_finish(job_t *c, const uint8_t *items, size_t len, uint32_t n) {
  job_t *p = c->parent;
  stage_t *s = c->s;
  bool last;
  pthread_mutex_lock(&s->mu);
  if (s->keep_order || s->tail->d->kind == MPX_PLUGIN_REDUCE) {
    mpx_wbuf_append(&p->subout[c->sub], &n, 4);
    mpx_wbuf_append(&p->subout[c->sub], items, len);
    items = NULL;
  }
  last = --p->pending == 0;
  pthread_mutex_unlock(&s->mu);
  if (items && n) forward(s->tail, items, len, n);
  mpx__eng_job_free(c);
  if (!last) return;
  /* Put the parent's outputs back together in item order. */
  mpx_wbuf_t all;
  mpx_wbuf_init(&all);
  uint32_t total = 0;
  if (p->subout) {
    for (uint32_t i = 0; i < p->n; i++) {
      mpx_wbuf_t *b = &p->subout[i];
      if (b->len < 4) continue;
      uint32_t k;
      memcpy(&k, b->data, 4);
      total += k;
      mpx_wbuf_append(&all, b->data + 4, b->len - 4);
    }
  }
  if (p->parent) sub_finish(p, all.data, all.len, total);
  else mpx__eng_job_finish(s, p, all.data, all.len, total);
  mpx_wbuf_free(&all);
}

/* A job is over without outputs. */
void mpx__eng_finish_empty(stage_t *s, job_t *j) {
  if (j->parent) sub_finish(j, NULL, 0, 0);
  else mpx__eng_job_finish(s, j, NULL, 0, 0);
}

/* A batch's answer (engine_proto.h) from s's chain. */
static void answer(stage_t *s, job_t *j, const uint8_t *res, size_t len) {
  eng_t *e = s->e;
  mpx__rd_t r = mpx__rd_make(res, len);
  uint32_t nout, nfail, nst;
  if (mpx__rd_u32(&r, &nout) != 0 || mpx__rd_u32(&r, &nfail) != 0 || mpx__rd_u32(&r, &nst) != 0 ||
      nst != (uint32_t)(s->tail->idx - s->idx + 1) || (size_t)(r.end - r.p) < 12 * (size_t)nst) {
    mpx__eng_set_fatal(e, MPX_EPROTO, "stage '%s': malformed answer", s->cfg->name);
    return;
  }
  const uint8_t *counts = (const uint8_t *)r.p;
  r.p += 12 * (size_t)nst;
  const uint8_t *items = (const uint8_t *)r.p;
  for (uint32_t i = 0; i < nout; i++) {
    const void *d;
    uint32_t l, tag, hash;
    if (engine_rd_item(&r, &tag, &hash, &d, &l) != 0) {
      mpx__eng_set_fatal(e, MPX_EPROTO, "stage '%s': malformed answer", s->cfg->name);
      return;
    }
  }
  size_t items_len = (size_t)((const uint8_t *)r.p - items);
  /* The fused stages' figures; the head's in and the tail's out are
   * counted where items enter and leave the chain. Every stage's retries
   * (its plugin's errors, retried in the worker). */
  double t = mpx__now();
  pthread_mutex_lock(&e->mu);
  for (uint32_t k = 0; k < nst; k++) {
    stage_t *m = mpx__eng_stage(e, s->idx + k);
    uint32_t io[3];
    memcpy(io, counts + 12 * (size_t)k, sizeof io);
    m->retries += io[2];
    if (nst == 1) continue;
    if (k > 0 && io[0]) {
      if (m->in == 0 && m->t_first == 0) m->t_first = t;
      m->in += io[0];
    }
    if (m != s->tail) m->out += io[1];
    if (m->t_first == 0) m->t_first = t;
    m->t_last = t;
  }
  pthread_mutex_unlock(&e->mu);
  for (uint32_t i = 0; i < nfail; i++) {
    uint32_t k, idx, att, ml, l;
    const void *m, *d;
    if (mpx__rd_u32(&r, &k) != 0 || mpx__rd_u32(&r, &idx) != 0 || mpx__rd_u32(&r, &att) != 0 ||
        mpx__rd_bytes32(&r, &d, &l) != 0 || mpx__rd_bytes32(&r, &m, &ml) != 0 || k >= nst)
      break;
    char msg[1024];
    snprintf(msg, sizeof msg, "%.*s", (int)ml, (const char *)m);
    if (k > 0) mpx__eng_dead_letter(mpx__eng_stage(e, s->idx + k), d, l, msg, att);
    else if (mpx__eng_batch_item(j, idx, &d, &l) == 0) mpx__eng_dead_letter(s, d, l, msg, att);
  }
  uint64_t next = 0;
  if (s->part_of && mpx__rd_u64(&r, &next) != 0) {
    mpx__eng_set_fatal(e, MPX_EPROTO, "stage '%s': malformed answer", s->cfg->name);
    return;
  }
  pthread_mutex_lock(&e->mu);
  e->queued -= j->n;
  s->more_from = next;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
  if (j->parent) sub_finish(j, items, items_len, nout);
  else mpx__eng_job_finish(s, j, items, items_len, nout);
}


/* A job of s's has left its pool. */
void mpx__eng_left_pool(stage_t *s, job_t *j) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  s->in_pool--;
  e->queued -= j->n;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* A callback has the job: off its chain's live list. */
void mpx__eng_unlive(stage_t *s, job_t *j) {
  pthread_mutex_lock(&s->e->mu);
  if (j->lprev) j->lprev->lnext = j->lnext;
  else if (s->live == j) s->live = j->lnext;
  if (j->lnext) j->lnext->lprev = j->lprev;
  j->lprev = j->lnext = NULL;
  j->h = NULL;
  pthread_mutex_unlock(&s->e->mu);
}

static void on_ok(mpx_async_t *a, void *arg) {
  job_t *j = arg;
  stage_t *s = j->s;
  mpx__eng_unlive(s, j);
  const void *res;
  size_t len;
  bool loaned = j->loaned; /* then job_free frees a */
  if (loaned) j->a = a;
  /* Its time in a worker: its wait for an answer, shared with the jobs
   * that were ahead of it there. */
  double t = (mpx__now() - j->t_sent) / (j->ahead ? j->ahead : 1);
  pthread_mutex_lock(&s->e->mu);
  s->in_pool--;
  s->job_time = s->job_time > 0 ? 0.75 * s->job_time + 0.25 * t : t + 1e-9;
  pthread_mutex_unlock(&s->e->mu);
  if (mpx_async_get(a, &res, &len, 0) == 0) answer(s, j, res, len);
  if (!loaned) mpx_async_free(a);
  mpx__eng_dispatch(s);
}

/* How many jobs s's pool may hold: what its workers take (pool_loop.c: two
 * each, eight while a job takes under 100 us). Under e->mu. */
static unsigned pool_cap(const stage_t *s) {
  return (s->job_time > 0 && s->job_time < 100e-6 ? 8 : 2) * s->workers;
}

/* Hands s's queued jobs to its pool while it holds fewer than pool_cap()
 * (none once the run is stopping: wait_for drops them). */
void mpx__eng_dispatch(stage_t *s) {
  eng_t *e = s->e;
  for (;;) {
    pthread_mutex_lock(&e->mu);
    job_t *j = s->q_head;
    if (j == NULL || s->in_pool >= pool_cap(s) || mpx__eng_stopping(e) || e->fatal) {
      pthread_mutex_unlock(&e->mu);
      return;
    }
    s->q_head = j->qnext;
    if (s->q_head == NULL) s->q_tail = NULL;
    j->qnext = NULL;
    s->in_pool++;
    j->ahead = (s->in_pool + s->workers - 1) / s->workers;
    j->t_sent = mpx__now();
    /* e->mu stays held until the job is on the live list: its callbacks
     * (the pool's thread) take it off there first. */
    mpx_async_t *a;
    int rc;
    if (j->loan.ref) {
      /* The handle keeps the block (the batch) until the job is freed; the
       * callbacks may run before this returns, so j is not touched after. */
      j->loaned = true;
      mpx_pool_loan_t loan = j->loan;
      j->loan = (mpx_pool_loan_t){0};
      rc = mpx_pool_apply_async_loan(s->pool, MPX_FUNC(mpx_pipeline_task), &loan,
                                     j->batch.len, on_ok, mpx__eng_on_err, j, &a);
    } else {
      rc = mpx_pool_apply_async(s->pool, MPX_FUNC(mpx_pipeline_task), j->batch.data,
                                j->batch.len, on_ok, mpx__eng_on_err, j, &a);
    }
    if (rc == 0) {
      j->h = a;
      j->lnext = s->live;
      if (s->live) s->live->lprev = j;
      s->live = j;
    }
    pthread_mutex_unlock(&e->mu);
    if (rc != 0) {
      mpx__eng_set_fatal(e, rc, "stage '%s': %s", s->cfg->name, mpx_last_error());
      pthread_mutex_lock(&e->mu);
      s->in_pool--;
      e->queued -= j->n;
      if (j->parent == NULL) s->inflight--;
      pthread_cond_broadcast(&e->cv);
      pthread_mutex_unlock(&e->mu);
      mpx__eng_job_free(j);
      return;
    }
  }
}

/* Queues j for s's pool (front: a job run again, or split from one that
 * failed, ahead of the rest; a new one counts in s->inflight). */
void mpx__eng_submit(stage_t *s, job_t *j, bool front) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  e->queued += j->n;
  if (j->parent == NULL && !front) s->inflight++;
  if (front) {
    j->qnext = s->q_head;
    s->q_head = j;
    if (s->q_tail == NULL) s->q_tail = j;
  } else {
    if (s->q_tail) s->q_tail->qnext = j;
    else s->q_head = j;
    s->q_tail = j;
  }
  pthread_mutex_unlock(&e->mu);
  mpx__eng_dispatch(s);
}

/* Once the run is stopping: every job still queued ends without running.
 * Called where no stage lock is held. */
static void drop_queued(eng_t *e) {
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    pthread_mutex_lock(&e->mu);
    job_t *j = s->q_head;
    s->q_head = s->q_tail = NULL;
    pthread_mutex_unlock(&e->mu);
    while (j) {
      job_t *next = j->qnext;
      pthread_mutex_lock(&e->mu);
      e->queued -= j->n;
      e->dropped += j->n;
      pthread_mutex_unlock(&e->mu);
      mpx__eng_finish_empty(s, j);
      j = next;
    }
  }
}

/* ---- running ----------------------------------------------------------------------------- */


static void print_notice(eng_t *e, const char *fmt, ...) MPX_PRINTF(2, 3);
static void print_notice(eng_t *e, const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  fprintf(stderr, "%smpx: %s\n", e->progress ? "\n" : "", line);
  fflush(stderr);
}

/* The first SIGINT: the source stops, what has not reached a worker is
 * dropped (pending batches, queued jobs), what is in workers finishes.
 * Main thread, no stage lock held. */
static void enter_stopping(eng_t *e) {
  if (atomic_exchange(&e->stopping, true)) return;
  stage_t *src = &e->st[0];
  if (src->ctx) mpx__ctx_cancel(src->ctx);
  for (size_t i = 1; i < e->n; i++) {
    stage_t *s = &e->st[i];
    pthread_mutex_lock(&s->mu);
    if (s->head && s->head->pool) mpx__eng_flush_pend(s); /* drops it */
    pthread_mutex_unlock(&s->mu);
  }
  drop_queued(e);
  uint64_t running = 0;
  pthread_mutex_lock(&e->mu);
  running = e->queued;
  pthread_mutex_unlock(&e->mu);
  print_notice(e, "interrupted: the source is stopped; finishing the %llu item%s in workers, "
               "dropping the rest (Ctrl-C again to stop now)",
               (unsigned long long)running, running == 1 ? "" : "s");
}

/* A chain whose pool replaces no worker (restart: temporary) and has none
 * left cannot run what it has pending: the run fails, with the cause. */
static void check_workers(eng_t *e) {
  if (e->cfg->supervisor.restart != MPX_RESTART_TEMPORARY) return;
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    if (s->pool == NULL) continue;
    pthread_mutex_lock(&e->mu);
    uint64_t pending = s->inflight;
    pthread_mutex_unlock(&e->mu);
    mpx_pool_stats_t ps;
    if (pending == 0 || mpx_pool_stats(s->pool, &ps) != 0 || ps.workers > 0) continue;
    char why[1024];
    pthread_mutex_lock(&e->mu);
    snprintf(why, sizeof why, "%s", s->last_death[0] ? s->last_death : "no death reported");
    pthread_mutex_unlock(&e->mu);
    mpx__eng_set_fatal(e, MPX_EBROKEN, "stage '%s': no worker left to run its pending items "
              "(supervisor restart: temporary replaces none); the last one: %s",
              s->cfg->name, why);
    return;
  }
}

/* Waits for pred(e, k), checking signals (the first SIGINT starts the
 * stop: enter_stopping) and the stages' workers. Main thread, no stage
 * lock held. 0, or MPX_EINTR after SIGTERM or a second SIGINT, or the
 * fatal error. */
int mpx__eng_wait_for(eng_t *e, bool (*pred)(eng_t *, size_t), size_t k) {
  for (;;) {
    if (mpx__eng_stop_now()) return MPX_EINTR;
    if (mpx__eng_signalled()) enter_stopping(e); /* a first SIGINT */
    if (mpx__eng_stopping(e)) drop_queued(e); /* any queued since */
    check_workers(e);
    pthread_mutex_lock(&e->mu);
    if (pred(e, k) || e->fatal) {
      int rc = e->fatal;
      pthread_mutex_unlock(&e->mu);
      return rc;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += 50 * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_unlock(&e->mu);
    mpx__eng_sinks_kick(e); /* what waits for room may be in a sink's queue */
    pthread_mutex_lock(&e->mu);
    if (!pred(e, k) && !e->fatal) pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    pthread_mutex_unlock(&e->mu);
  }
}

bool mpx__eng_has_room(eng_t *e, size_t k) {
  (void)k;
  return e->queued < e->cap;
}

static void on_pool_shut(mpx_pool_t *p, void *arg) {
  (void)p;
  eng_t *e = arg;
  pthread_mutex_lock(&e->mu);
  e->pools_shut++;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}


/* ---- a run, step by step ---------------------------------------------------------------- */

static eng_t *eng_new(void) {
  eng_t *e = calloc(1, sizeof *e);
  if (e == NULL) return NULL;
  e->loop_ready = uv_loop_init(&e->loop) == 0;
  pthread_mutex_init(&e->mu, NULL);
  pthread_mutex_init(&e->dl_mu, NULL);
  mpx__cond_init_monotonic(&e->cv);
  return e;
}

static void eng_free(eng_t *e) {
  if (e->dl) fclose(e->dl);
  if (e->loop_ready && uv_loop_close(&e->loop) != 0)
    MPX__ERROR("pipeline: the engine loop still has handles at the end");
  for (size_t i = 0; e->st && i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (s->ctx) {
      if (s->state) mpx__ctx_call_fini(s->ctx, s->state);
      mpx__ctx_free(s->ctx);
    }
    mpx_wbuf_free(&s->pend);
    mpx_wbuf_free(&s->total);
    mpx_wbuf_free(&s->tmp);
    while (s->rob) {
      job_t *j = s->rob;
      s->rob = j->next;
      mpx__eng_job_free(j);
    }
    pthread_mutex_destroy(&s->mu);
  }
  for (size_t i = e->n; e->pst && i < e->n_all; i++) mpx__eng_part_free(mpx__eng_stage(e, i));
  free(e->pst);
  free(e->st);
  mpx__graph_free(&e->g);
  free(e->nodes);
  mpx__cfg_free(e->cfg);
  pthread_mutex_destroy(&e->mu);
  pthread_mutex_destroy(&e->dl_mu);
  pthread_cond_destroy(&e->cv);
  free(e);
}

/* Each stage's plugin starts once in a throw-away process, before any
 * worker: one that cannot is a config error (plugin_probe.h). */
static int probe_stages(eng_t *e, bool check_only) {
  int rc = 0;
  for (size_t i = 0; i < e->n && rc == 0; i++) {
    stage_t *s = &e->st[i];
    bool pooled = s->d->kind == MPX_PLUGIN_MAP || s->d->kind == MPX_PLUGIN_REDUCE;
    rc = mpx__plugin_probe(s->ctx, s->parts ? s->parts : pooled ? s->workers : 1, check_only);
    if (rc == MPX_ECONFIG)
      rc = mpx__cfg_error_at(e->cfg, s->cfg->line, s->cfg->col, "%s", mpx_last_error());
  }
  return rc;
}

/* The graph of the loaded stages: their kinds and ports (graph.h). */
static int build_graph(eng_t *e) {
  if ((e->nodes = calloc(e->n, sizeof *e->nodes)) == NULL)
    return mpx__err(MPX_ENOMEM, "out of memory");
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    e->nodes[i] = (mpx__gnode_t){s->d->kind, mpx__ctx_port_count(s->ctx),
                                 mpx__ctx_port_names(s->ctx)};
  }
  e->n_all = e->n;
  return mpx__graph_build(&e->g, e->cfg, e->nodes);
}

/* `mpx check --graph`: the graph as Graphviz DOT to path ("-": stdout). */
static int write_dot(eng_t *e, const char *path) {
  bool out = strcmp(path, "-") == 0;
  FILE *f = out ? stdout : fopen(path, "w");
  if (f == NULL) return mpx__err_errno("cannot open '%s'", path);
  int rc = mpx__graph_dot(&e->g, e->cfg, e->nodes, f);
  if (out ? fflush(f) != 0 : fclose(f) != 0) rc = rc ? rc : mpx__err_errno("writing '%s'", path);
  return rc;
}

/* The config with its --set assignments, each stage loaded, planned and
 * probed: all a --check does. */
static int eng_load(eng_t *e, const mpx_pipeline_opts_t *o) {
  int rc;
  if ((rc = mpx__cfg_parse_file(&e->cfg, o->file)) != 0) return rc;
  for (size_t i = 0; i < o->n_sets; i++)
    if ((rc = mpx__cfg_set(e->cfg, o->sets[i])) != 0) return rc;
  e->n = e->cfg->n_stages;
  if (e->n > MPX_PIPELINE_MAX_STAGES)
    return mpx__cfg_error_at(e->cfg, 0, 0, "more than %d stages", MPX_PIPELINE_MAX_STAGES);
  e->st = calloc(e->n, sizeof *e->st);
  if (e->st == NULL) return mpx__err(MPX_ENOMEM, "out of memory");
  for (size_t i = 0; i < e->n; i++)
    if ((rc = mpx__eng_stage_load(e, i)) != 0) return rc;
  if ((rc = build_graph(e)) != 0) return rc;
  if ((rc = mpx__eng_plan_chains(e)) != 0) return rc;
  if ((rc = probe_stages(e, o->check_only)) != 0) return rc;
  return o->check_only && o->graph_dot ? write_dot(e, o->graph_dot) : 0;
}

/* A queue before each chain of worker stages and each sink, plus what
 * the workers hold: two batches each (the pool keeps two in flight per
 * worker). */
static size_t queue_cap(const eng_t *e) {
  size_t queues = 0, held = 0;
  for (size_t i = e->st[0].parts ? 0 : 1; i < e->n; i++) {
    const stage_t *h = &e->st[i];
    if (h->d->kind == MPX_PLUGIN_SOURCE && h->parts == 0) continue;
    if (h->head != h) continue;
    queues++; /* a sink's queue counts as one too (engine_sink.c) */
    if (h->d->kind != MPX_PLUGIN_SINK) held += 2 * (size_t)h->workers * h->batch;
  }
  return e->cfg->queue_capacity * (queues ? queues : 1) + held;
}

/* Starts the stages and the progress line, runs the source to its end and
 * each stage's tail; a stop by signal becomes its message. */
static void *loop_main(void *arg) {
  eng_t *e = arg;
  uv_run(&e->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* The pools, all made, start on the engine loop; the sinks' threads. */
static int start_loop(eng_t *e) {
  if (!e->loop_ready) return mpx__err(MPX_ENOMEM, "pipeline: cannot make the engine loop");
  if (pthread_create(&e->loop_th, NULL, loop_main, e) != 0)
    return mpx__err(MPX_ENOMEM, "pipeline: cannot start the engine loop's thread");
  e->loop_on = true;
  return mpx__eng_sinks_start(e);
}

static int start_and_drive(eng_t *e, const mpx_pipeline_opts_t *o) {
  int rc = 0;
  for (size_t i = 0; i < e->n && rc == 0; i++) rc = mpx__eng_stage_start(e, i);
  /* Even after a failed start: the pools made must run to shut down. */
  int lrc = start_loop(e);
  if (rc == 0) rc = lrc;
  bool prog = o->progress == MPX_PROGRESS_ALWAYS ||
              (o->progress == MPX_PROGRESS_AUTO && isatty(2));
  mpx__eng_progress_begin(e, prog, rc == 0);
  if (rc == 0 && e->st[0].parts == 0 && e->st[0].ctx && e->st[0].state)
    e->expect = mpx__ctx_call_size_hint(e->st[0].ctx, e->st[0].state);
  if (rc == 0) rc = mpx__eng_drive(e);
  if (rc == 0 && mpx__eng_signalled()) {
    pthread_mutex_lock(&e->mu);
    unsigned long long dropped = e->dropped;
    pthread_mutex_unlock(&e->mu);
    rc = mpx__err(MPX_EINTR, "interrupted (SIGINT): the source was stopped, what was in "
                  "workers finished, %llu item%s dropped", dropped, dropped == 1 ? "" : "s");
  } else if (rc == MPX_EINTR) {
    rc = mpx__err(MPX_EINTR, "%s: stopped at once, the workers terminated",
                  mpx__eng_sigterm() ? "terminated (SIGTERM)" : "interrupted again (SIGINT)");
  }
  return rc;
}

/* Pools: a clean end waits for nothing; an error or a second signal stops
 * them at once. Then waits for each pool's shutdown: no callback will come
 * after, and nothing goes downstream any more. */
static void stop_pools(eng_t *e, int rc) {
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    if (s->pool == NULL) continue;
    if (rc != 0 && !(rc == MPX_EINTR && !mpx__eng_stop_now())) mpx_pool_terminate(s->pool);
    else mpx_pool_close(s->pool);
  }
  unsigned pools = 0;
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    if (s->pool && mpx_pool_shutdown(s->pool, on_pool_shut, e) == 0) pools++;
  }
  pthread_mutex_lock(&e->mu);
  while (e->loop_on && e->pools_shut < pools) pthread_cond_wait(&e->cv, &e->mu);
  e->ended = true;
  pthread_mutex_unlock(&e->mu);
  atomic_store(&e->stopping, true);
  /* Every pool's handles are closed: the loop has nothing left. */
  if (e->loop_on) pthread_join(e->loop_th, NULL);
  e->loop_on = false;
}

/* After stop_pools: the jobs still live (a terminated pool calls no
 * callback for those it cancels) and those still queued (a fatal error
 * stopped the dispatch) end here; the pools are freed, their counts kept. */
static void end_jobs(eng_t *e) {
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    while (s->live) {
      job_t *j = s->live;
      mpx_async_t *h = j->h;
      mpx__eng_unlive(s, j);
      mpx_async_free(h);
      if (j->loaned) j->a = NULL; /* its block went back with h */
      mpx__eng_finish_empty(s, j);
    }
  }
  drop_queued(e);
  for (size_t i = 0; i < e->n_all; i++) {
    stage_t *s = mpx__eng_stage(e, i);
    if (s->pool == NULL) continue;
    mpx_pool_stats_t ps;
    mpx_pool_stats(s->pool, &ps);
    mpx_pool_free(s->pool);
    s->pool = NULL;
    stage_t *own = s->part_of ? s->part_of : s; /* a partition's are its stage's */
    own->restarts += ps.restarts;
    own->retries += ps.retries;
  }
}

/* The stats to st, the summary table, the stats JSON: rc, or the JSON's
 * error when the run went well. */
static int report(eng_t *e, const mpx_pipeline_opts_t *o, mpx_pipeline_stats_t *st, int rc) {
  mpx_pipeline_stats_t local;
  mpx__eng_fill_stats(e, &local);
  if (st) *st = local;
  if (o->summary) mpx__eng_print_summary(&local, stderr);
  if (o->stats_json) {
    int jrc = mpx__eng_write_json(&local, o->stats_json, e->cfg->name);
    if (rc == 0) rc = jrc;
  }
  return rc;
}

/* The run proper, once loaded: from the dead-letter file to the report. */
static int eng_run(eng_t *e, const mpx_pipeline_opts_t *o, mpx_pipeline_stats_t *st) {
  mpx__eng_sigsave_t old;
  int rc;
  e->cap = queue_cap(e);
  if (e->cfg->dead_letter && (e->dl = fopen(e->cfg->dead_letter, "w")) == NULL)
    return mpx__err_errno("cannot open the dead-letter file '%s'", e->cfg->dead_letter);
  mpx__eng_signals_catch(&old);
  e->t0 = mpx__now();
  rc = start_and_drive(e, o);
  /* The cause, before stopping the pools adds its own (cancelled jobs). */
  char why[sizeof e->fatal_msg] = "";
  pthread_mutex_lock(&e->mu);
  if (rc != 0 && rc == e->fatal) snprintf(why, sizeof why, "%s", e->fatal_msg);
  pthread_mutex_unlock(&e->mu);
  mpx__eng_progress_end(e);
  stop_pools(e, rc);
  end_jobs(e);
  mpx__eng_sinks_stop(e);
  rc = report(e, o, st, rc);
  if (rc != 0 && why[0]) mpx__err(rc, "%s", why);
  mpx__eng_signals_restore(&old);
  return rc;
}

int mpx_pipeline_run(const mpx_pipeline_opts_t *o, mpx_pipeline_stats_t *st) {
  int rc;
  if (o == NULL || o->file == NULL) return mpx__err(MPX_EINVAL, "pipeline: no file");
  eng_t *e = eng_new();
  if (e == NULL) return mpx__err(MPX_ENOMEM, "out of memory");
  rc = eng_load(e, o);
  if (rc == 0 && !o->check_only) rc = eng_run(e, o, st);
  if (rc != 0 && st && e->cfg == NULL) memset(st, 0, sizeof *st);
  eng_free(e);
  return rc;
}

/* ---- listing ------------------------------------------------------------------------------ */

int mpx_plugin_list(unsigned what, mpx_plugin_list_fn cb, void *arg) {
  if (cb == NULL) return mpx__err(MPX_EINVAL, "NULL callback");
  return mpx__plugin_scan(what, cb, arg);
}

int mpx_plugin_find(const char *name_or_path, const mpx_plugin_t **desc,
                    const char **path) {
  mpx__plugin_t *p;
  int rc = mpx__plugin_load(&p, name_or_path);
  if (rc != 0) return rc;
  if (desc) *desc = mpx__plugin_desc(p);
  if (path) *path = mpx__plugin_path(p);
  return 0;
}
