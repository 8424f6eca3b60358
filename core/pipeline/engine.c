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
 * End of stream: once the source is done, stage k's last partial batch is
 * submitted when every stage before it is idle; a reduce stage then emits
 * its final merge downstream.
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
#include "engine_proto.h"
#include "internal.h"
#include "mpx/pipeline.h"
#include "plugin_host.h"
#include "plugin_probe.h"

#define AUTO_BATCH 1024
#define AUTO_BATCH_BYTES ((size_t)256 << 10)
/* Into a chain that ends in a reduce, each batch costs the coordinator a
 * merge of its partial into the total: bigger batches, fewer merges. */
#define REDUCE_BATCH (16 * AUTO_BATCH)
#define REDUCE_BATCH_BYTES ((size_t)4 << 20)

typedef struct eng_s eng_t;
typedef struct stage_s stage_t;

typedef struct job_s {
  stage_t *s;
  uint64_t seq;
  mpx_wbuf_t batch;         /* the argument, kept for splitting and dead letters */
  uint32_t n;
  struct job_s *parent;     /* a single item split from parent */
  uint32_t sub;             /* its index in the parent */
  uint32_t pending;         /* parent: singles not yet done */
  mpx_wbuf_t *subout;       /* parent, ordered: each single's outputs */
  mpx_wbuf_t out;           /* ordered: outputs waiting for their turn */
  uint32_t nout;
  struct job_s *next;       /* reorder list */
  mpx_pool_loan_t loan;     /* batch is this arena block (zero-copy) */
  bool loaned;              /* submitted from a loan: ... */
  mpx_async_t *a;           /* ... whose handle keeps the block until job_free */
  uint32_t attempts;        /* a single item: the runs that failed on it */
  double t_sent;            /* handed to the pool, ... */
  unsigned ahead;           /* ... with this many of its chain's jobs per worker */
  struct job_s *qnext;      /* its chain's queue */
  mpx_async_t *h;           /* in its pool: the handle, until a callback ... */
  struct job_s *lprev, *lnext; /* ... takes it off its chain's live list */
} job_t;

struct stage_s {
  eng_t *e;
  size_t idx;
  mpx__cfg_stage_t *cfg;
  const mpx_plugin_t *d;
  const char *path;
  const mpx_codec_t *codec;
  mpx_plugin_ctx_t *ctx;    /* local instance: source, sink, reduce merger */
  void *state;
  mpx_pool_t *pool;          /* a chain's head only */
  stage_t *head, *tail;      /* its chain: stages fused into one set of workers */
  unsigned parts;            /* a source run in parts by its chain's workers;
                              * 0: it runs here */
  mpx_pool_loan_t loan;     /* source: an emit_reserve open in the next stage's arena */
  unsigned workers;
  size_t batch, batch_bytes; /* a batch is sent when it has either */
  bool keep_order; /* outputs in input order: ordered here or next */
  pthread_mutex_t mu;
  mpx_wbuf_t pend;
  uint32_t pend_n;
  uint64_t next_seq, next_out;
  job_t *rob;               /* ordered: answers waiting, by seq */
  mpx_wbuf_t total, tmp;    /* reduce: the running merge */
  bool have_total;
  /* under e->mu */
  uint64_t in, out, failed, inflight;
  job_t *q_head, *q_tail;     /* a chain's jobs not yet in its pool */
  job_t *live;                /* ... and those in it (a terminated pool
                               * calls no callback for some) */
  unsigned in_pool;           /* jobs in its pool, at most pool_cap(): */
  double job_time;            /* a job's time in a worker, smoothed (s) */
  char last_death[1024];      /* how its last worker death was reported */
  uint64_t retries;           /* runs of items repeated after a failure */
  uint64_t restarts;          /* from the pool, taken before it is freed */
  uint64_t zero_copy;         /* items that came in place in its arena */
  double t_first, t_last;
};

struct eng_s {
  mpx__cfg_t *cfg;
  stage_t *st;
  size_t n;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t queued;          /* items submitted to worker stages, not answered */
  size_t cap;
  int fatal;
  char fatal_msg[1024];
  FILE *dl;
  pthread_mutex_t dl_mu;
  uint64_t dead;
  double t0;
  uint64_t expect;          /* the source's size_hint at its start; 0: unknown */
  uint32_t parts_done;      /* a source in parts: parts answered */
  atomic_bool stopping;     /* after the first SIGINT: nothing new starts */
  bool ended;               /* tearing down: nothing more goes downstream */
  unsigned pools_shut;      /* pools whose shutdown is over */
  uint64_t dropped;         /* items that never reached a worker for it */
  bool progress;            /* a progress line is being drawn */
};

/* SIGINT: the first stops the source and lets what is in workers finish;
 * the second stops at once, as SIGTERM does. */
static volatile sig_atomic_t sig_ints, sig_term;
static void on_signal(int sig) {
  if (sig == SIGTERM) sig_term = 1;
  else sig_ints++;
}
static bool stop_now(void) { return sig_term || sig_ints >= 2; }
static bool signalled(void) { return sig_term || sig_ints > 0; }
static bool stopping(eng_t *e) { return atomic_load(&e->stopping); }

static double now(void) { return mpx__now(); }

static void set_fatal(eng_t *e, int rc, const char *fmt, ...) MPX_PRINTF(3, 4);
static void set_fatal(eng_t *e, int rc, const char *fmt, ...) {
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

/* ---- dead letters -------------------------------------------------------------- */

static void json_str(FILE *f, const void *data, size_t len) {
  const unsigned char *p = data;
  fputc('"', f);
  for (size_t i = 0; i < len; i++) {
    unsigned c = p[i];
    if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
    else if (c == '\n') fputs("\\n", f);
    else if (c == '\t') fputs("\\t", f);
    else if (c < 0x20 || c >= 0x7f) fprintf(f, "\\u%04x", c);
    else fputc((int)c, f);
  }
  fputc('"', f);
}

/* One JSON line: the stage, the item (bytes outside printable ASCII as
 * \u00XX, one per byte), the error and the attempts. */
static void dead_letter(stage_t *s, const void *item, size_t len,
                        const char *err, unsigned attempts) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  s->failed++;
  e->dead++;
  pthread_mutex_unlock(&e->mu);
  if (e->dl == NULL) return;
  pthread_mutex_lock(&e->dl_mu);
  fputs("{\"stage\":", e->dl);
  json_str(e->dl, s->cfg->name, strlen(s->cfg->name));
  fputs(",\"item\":", e->dl);
  json_str(e->dl, item, len);
  fputs(",\"error\":", e->dl);
  json_str(e->dl, err, strlen(err));
  fprintf(e->dl, ",\"attempts\":%u}\n", attempts);
  fflush(e->dl);
  pthread_mutex_unlock(&e->dl_mu);
}

/* ---- moving items ------------------------------------------------------------------ */

static void submit(stage_t *s, job_t *j, bool front);
static void push(stage_t *s, const void *data, size_t len);
static void job_free(job_t *j);

/* Items that will not run: the run is stopping. */
static void count_dropped(eng_t *e, uint64_t n) {
  pthread_mutex_lock(&e->mu);
  e->dropped += n;
  pthread_mutex_unlock(&e->mu);
}

/* Items leaving stage s (in order), to the next stage. */
static void forward(stage_t *s, const uint8_t *items, size_t len, uint32_t n) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  s->out += n;
  s->t_last = now();
  bool ended = e->ended;
  pthread_mutex_unlock(&e->mu);
  if (s->idx + 1 >= e->n || ended) return;
  mpx__rd_t r = mpx__rd_make(items, len);
  for (uint32_t i = 0; i < n; i++) {
    const void *d;
    uint32_t l;
    if (mpx__rd_bytes32(&r, &d, &l) != 0) break;
    push(&e->st[s->idx + 1], d, l);
  }
}

/* Submit s's pending batch (drop it once the run is stopping); under
 * s->mu. */
static void flush_pend(stage_t *s) {
  if (s->pend_n == 0) return;
  if (stopping(s->e)) {
    count_dropped(s->e, s->pend_n);
    s->pend.len = 0;
    s->pend_n = 0;
    return;
  }
  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    set_fatal(s->e, MPX_ENOMEM, "out of memory");
    return;
  }
  j->s = s;
  j->seq = s->next_seq++;
  j->batch = s->pend;
  j->n = s->pend_n;
  memcpy(j->batch.data, &j->n, 4);
  mpx_wbuf_init(&s->pend);
  s->pend_n = 0;
  submit(s, j, false);
}

static void push(stage_t *s, const void *data, size_t len) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  if (s->in++ == 0) s->t_first = now();
  pthread_mutex_unlock(&e->mu);
  pthread_mutex_lock(&s->mu);
  if (s->pool == NULL) {
    /* A sink here, one item at a time, its errors retried at once. */
    unsigned attempts = 0, retries = s->cfg->opts.retries;
    while (mpx__ctx_call_process(s->ctx, s->state, data, len) != 0) {
      attempts++;
      if (mpx__ctx_permanent(s->ctx) || attempts > retries) {
        dead_letter(s, data, len, mpx_last_error(), attempts);
        break;
      }
      pthread_mutex_lock(&e->mu);
      s->retries++;
      pthread_mutex_unlock(&e->mu);
    }
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&e->mu);
    s->out++;
    s->t_last = now();
    pthread_mutex_unlock(&e->mu);
    return;
  }
  if (stopping(e)) {
    /* Nothing new goes to a worker once the run is stopping. */
    pthread_mutex_unlock(&s->mu);
    count_dropped(e, 1);
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
  if (s->pend_n >= s->batch || s->pend.len >= s->batch_bytes) flush_pend(s);
  pthread_mutex_unlock(&s->mu);
}

static void job_free(job_t *j) {
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
    job_free(h);
  }
}

/* A top-level job is over: its outputs (items, n) go on. */
static void job_finish(stage_t *s, job_t *j, const uint8_t *items, size_t len,
                       uint32_t n) {
  eng_t *e = s->e;
  stage_t *t = s->tail;
  pthread_mutex_lock(&s->mu);
  if (t->d->kind == MPX_PLUGIN_REDUCE) {
    /* Merge each partial into the total (the reduce's own lock when it
     * is fused after a head: a later stage's lock, allowed). */
    if (t != s) pthread_mutex_lock(&t->mu);
    mpx__rd_t r = mpx__rd_make(items, len);
    for (uint32_t i = 0; i < n; i++) {
      const void *d;
      uint32_t l;
      if (mpx__rd_bytes32(&r, &d, &l) != 0) break;
      t->tmp.len = 0;
      if (mpx__ctx_call_merge(t->ctx, t->state, t->total.data, t->total.len, d, l) != 0) {
        set_fatal(e, MPX_ETASK, "%s", mpx_last_error());
        break;
      }
      mpx_wbuf_t tb = t->total;
      t->total = t->tmp;
      t->tmp = tb;
      t->have_total = true;
    }
    if (t != s) pthread_mutex_unlock(&t->mu);
    job_free(j);
  } else if (s->keep_order) {
    if (j->out.data == NULL || j->out.data != items) {
      j->out.len = 0;
      mpx_wbuf_append(&j->out, items, len);
    }
    j->nout = n;
    release_in_order(s, j);
  } else {
    forward(t, items, len, n);
    job_free(j);
  }
  pthread_mutex_unlock(&s->mu);
  pthread_mutex_lock(&e->mu);
  if (s->parts) e->parts_done++;
  s->inflight--;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* The item i of a batch. */
static int batch_item(const job_t *j, uint32_t i, const void **d, uint32_t *l) {
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
  job_free(c);
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
  else job_finish(s, p, all.data, all.len, total);
  mpx_wbuf_free(&all);
}

/* A job is over without outputs. */
static void finish_empty(stage_t *s, job_t *j) {
  if (j->parent) sub_finish(j, NULL, 0, 0);
  else job_finish(s, j, NULL, 0, 0);
}

/* A batch's answer (engine_proto.h) from s's chain. */
static void answer(stage_t *s, job_t *j, const uint8_t *res, size_t len) {
  eng_t *e = s->e;
  mpx__rd_t r = mpx__rd_make(res, len);
  uint32_t nout, nfail, nst;
  if (mpx__rd_u32(&r, &nout) != 0 || mpx__rd_u32(&r, &nfail) != 0 || mpx__rd_u32(&r, &nst) != 0 ||
      nst != (uint32_t)(s->tail->idx - s->idx + 1) || (size_t)(r.end - r.p) < 12 * (size_t)nst) {
    set_fatal(e, MPX_EPROTO, "stage '%s': malformed answer", s->cfg->name);
    return;
  }
  const uint8_t *counts = (const uint8_t *)r.p;
  r.p += 12 * (size_t)nst;
  const uint8_t *items = (const uint8_t *)r.p;
  for (uint32_t i = 0; i < nout; i++) {
    const void *d;
    uint32_t l;
    if (mpx__rd_bytes32(&r, &d, &l) != 0) {
      set_fatal(e, MPX_EPROTO, "stage '%s': malformed answer", s->cfg->name);
      return;
    }
  }
  size_t items_len = (size_t)((const uint8_t *)r.p - items);
  /* The fused stages' figures; the head's in and the tail's out are
   * counted where items enter and leave the chain. Every stage's retries
   * (its plugin's errors, retried in the worker). */
  double t = now();
  pthread_mutex_lock(&e->mu);
  for (uint32_t k = 0; k < nst; k++) {
    stage_t *m = &e->st[s->idx + k];
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
    if (k > 0) dead_letter(&e->st[s->idx + k], d, l, msg, att);
    else if (batch_item(j, idx, &d, &l) == 0) dead_letter(s, d, l, msg, att);
  }
  pthread_mutex_lock(&e->mu);
  e->queued -= j->n;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
  if (j->parent) sub_finish(j, items, items_len, nout);
  else job_finish(s, j, items, items_len, nout);
}

static void dispatch(stage_t *s);

/* A job of s's has left its pool. */
static void left_pool(stage_t *s, job_t *j) {
  eng_t *e = s->e;
  pthread_mutex_lock(&e->mu);
  s->in_pool--;
  e->queued -= j->n;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* A callback has the job: off its chain's live list. */
static void unlive(stage_t *s, job_t *j) {
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
  unlive(s, j);
  const void *res;
  size_t len;
  bool loaned = j->loaned; /* then job_free frees a */
  if (loaned) j->a = a;
  /* Its time in a worker: its wait for an answer, shared with the jobs
   * that were ahead of it there. */
  double t = (now() - j->t_sent) / (j->ahead ? j->ahead : 1);
  pthread_mutex_lock(&s->e->mu);
  s->in_pool--;
  s->job_time = s->job_time > 0 ? 0.75 * s->job_time + 0.25 * t : t + 1e-9;
  pthread_mutex_unlock(&s->e->mu);
  if (mpx_async_get(a, &res, &len, 0) == 0) answer(s, j, res, len);
  if (!loaned) mpx_async_free(a);
  dispatch(s);
}

/* A job split off parent p: its items [first, first + n). */
static job_t *child(job_t *p, uint32_t first, uint32_t n) {
  job_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->s = p->s;
  c->parent = p;
  c->sub = first;
  c->n = n;
  int rc = mpx_wbuf_append(&c->batch, &n, 4);
  for (uint32_t i = 0; rc == 0 && i < n; i++) {
    const void *d;
    uint32_t l;
    if (batch_item(p, first + i, &d, &l) != 0) rc = -1;
    if (rc == 0) rc = mpx_wbuf_append(&c->batch, &l, 4);
    if (rc == 0) rc = mpx_wbuf_append(&c->batch, d, l);
  }
  if (rc != 0) {
    mpx_wbuf_free(&c->batch);
    free(c);
    return NULL;
  }
  return c;
}

/* A single item failed for good (or a charged run it has no retry left
 * for): dead-lettered, its job over. */
static void give_up(stage_t *s, job_t *j, const char *msg) {
  const void *d;
  uint32_t l;
  if (batch_item(j, 0, &d, &l) == 0) dead_letter(s, d, l, msg, j->attempts ? j->attempts : 1);
  finish_empty(s, j);
}

/* How many times the pool ran a job whose worker kept dying: it runs it
 * again `retries` times (mpx_pool_opts_t.retries, from the stage's). */
static uint32_t pool_attempts(const stage_t *s) {
  return (uint32_t)s->cfg->opts.retries + 1;
}

/* Splits batch j, whose worker kept dying (or whose flush failed), into
 * jobs run again: at the item that hung (hung < j->n, the worker said
 * which), the items before it (they ran, but their outputs died with the
 * worker) and those after it (they never ran), the one that hung going to
 * the dead letters with the pool's attempts (it hung in each); else every
 * item alone, none charged with the batch's deaths. */
static void split(stage_t *s, job_t *j, uint32_t hung, const char *msg) {
  eng_t *e = s->e;
  job_t *kids[3] = {NULL, NULL, NULL};
  uint32_t nk = 0, n = j->n;
  j->subout = calloc(n, sizeof *j->subout);
  bool ok = j->subout != NULL;
  for (uint32_t i = 0; ok && i < n; i++) mpx_wbuf_init(&j->subout[i]);
  if (ok && hung < n) {
    if (hung > 0) ok = (kids[nk++] = child(j, 0, hung)) != NULL;
    if (ok) ok = (kids[nk++] = child(j, hung, 1)) != NULL;
    if (ok && hung + 1 < n) ok = (kids[nk++] = child(j, hung + 1, n - hung - 1)) != NULL;
    if (ok) kids[hung > 0]->attempts = pool_attempts(s);
    if (ok) {
      j->pending = nk;
      for (uint32_t i = 0; i < nk; i++) {
        if (kids[i]->attempts) give_up(s, kids[i], msg);
        else submit(s, kids[i], true);
      }
      return;
    }
  } else if (ok) {
    j->pending = n;
    for (uint32_t i = 0; i < n; i++) {
      job_t *c = child(j, i, 1);
      if (c == NULL) {
        set_fatal(e, MPX_ENOMEM, "out of memory");
        return;
      }
      submit(s, c, true);
    }
    return;
  }
  for (uint32_t i = 0; i < nk; i++) job_free(kids[i]);
  set_fatal(e, MPX_ENOMEM, "out of memory");
}

/* The batch item whose run ended its worker by timeout (engine_proto.h),
 * or UINT32_MAX. */
static uint32_t hung_item(const char *msg) {
  const char *m = strstr(msg, ENGINE_TIMEOUT_MARK);
  if (m == NULL) return UINT32_MAX;
  char *end;
  unsigned long k = strtoul(m + strlen(ENGINE_TIMEOUT_MARK), &end, 10);
  return end != m + strlen(ENGINE_TIMEOUT_MARK) && *end == ')' && k < UINT32_MAX
             ? (uint32_t)k : UINT32_MAX;
}

static void on_err(mpx_async_t *a, void *arg) {
  job_t *j = arg;
  stage_t *s = j->s;
  eng_t *e = s->e;
  unlive(s, j);
  const void *res;
  size_t len;
  int rc = mpx_async_get(a, &res, &len, 0);
  char msg[1024];
  snprintf(msg, sizeof msg, "%s", mpx_async_error(a));
  if (j->loaned) {
    /* A copy of the argument, to run it again: the block goes back. */
    mpx_wbuf_t b;
    mpx_wbuf_init(&b);
    if (mpx_wbuf_append(&b, j->batch.data, j->batch.len) != 0) {
      set_fatal(e, MPX_ENOMEM, "out of memory");
      return;
    }
    j->batch = b;
    j->loaned = false;
  }
  mpx_async_free(a);
  left_pool(s, j);
  bool death = rc == MPX_EWORKER || rc == MPX_ETIMEDOUT;
  uint32_t hung = death ? hung_item(msg) : UINT32_MAX;
  if (death) {
    pthread_mutex_lock(&e->mu);
    snprintf(s->last_death, sizeof s->last_death, "%s", msg);
    pthread_mutex_unlock(&e->mu);
  }
  if (hung != UINT32_MAX)
    snprintf(msg, sizeof msg, "timed out: ran past the stage's timeout of %g s (its worker "
             "was stopped)", s->cfg->opts.timeout);
  if (rc == MPX_EBROKEN || rc == MPX_ECANCELED || rc == MPX_ECLOSED) {
    /* The run is over; the job ends without outputs. */
    set_fatal(e, rc, "stage '%s': %s", s->cfg->name, msg);
    finish_empty(s, j);
  } else if (s->parts) {
    /* A source that fails fails the run, in parts as when it runs here
     * (the pool ran a part whose worker died again, up to retries). */
    uint32_t part[3];
    memcpy(part, j->batch.data, sizeof part);
    set_fatal(e, rc, "stage '%s' (part %u of %u): %s", s->cfg->name, part[1], part[2], msg);
    job_finish(s, j, NULL, 0, 0);
  } else if (stopping(e)) {
    count_dropped(e, j->n); /* nothing runs again once the run is stopping */
    finish_empty(s, j);
  } else if (j->n > 1) {
    split(s, j, hung, msg);
  } else {
    j->attempts = death ? pool_attempts(s) : 1;
    give_up(s, j, msg);
  }
  dispatch(s);
}

/* How many jobs s's pool may hold: what its workers take (pool.c: two
 * each, eight while a job takes under 100 us). Under e->mu. */
static unsigned pool_cap(const stage_t *s) {
  return (s->job_time > 0 && s->job_time < 100e-6 ? 8 : 2) * s->workers;
}

/* Hands s's queued jobs to its pool while it holds fewer than pool_cap()
 * (none once the run is stopping: wait_for drops them). */
static void dispatch(stage_t *s) {
  eng_t *e = s->e;
  for (;;) {
    pthread_mutex_lock(&e->mu);
    job_t *j = s->q_head;
    if (j == NULL || s->in_pool >= pool_cap(s) || stopping(e) || e->fatal) {
      pthread_mutex_unlock(&e->mu);
      return;
    }
    s->q_head = j->qnext;
    if (s->q_head == NULL) s->q_tail = NULL;
    j->qnext = NULL;
    s->in_pool++;
    j->ahead = (s->in_pool + s->workers - 1) / s->workers;
    j->t_sent = now();
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
                                     j->batch.len, on_ok, on_err, j, &a);
    } else {
      rc = mpx_pool_apply_async(s->pool, MPX_FUNC(mpx_pipeline_task), j->batch.data,
                                j->batch.len, on_ok, on_err, j, &a);
    }
    if (rc == 0) {
      j->h = a;
      j->lnext = s->live;
      if (s->live) s->live->lprev = j;
      s->live = j;
    }
    pthread_mutex_unlock(&e->mu);
    if (rc != 0) {
      set_fatal(e, rc, "stage '%s': %s", s->cfg->name, mpx_last_error());
      pthread_mutex_lock(&e->mu);
      s->in_pool--;
      e->queued -= j->n;
      if (j->parent == NULL) s->inflight--;
      pthread_cond_broadcast(&e->cv);
      pthread_mutex_unlock(&e->mu);
      job_free(j);
      return;
    }
  }
}

/* Queues j for s's pool (front: a job run again, or split from one that
 * failed, ahead of the rest; a new one counts in s->inflight). */
static void submit(stage_t *s, job_t *j, bool front) {
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
  dispatch(s);
}

/* Once the run is stopping: every job still queued ends without running.
 * Called where no stage lock is held. */
static void drop_queued(eng_t *e) {
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
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
      finish_empty(s, j);
      j = next;
    }
  }
}

/* ---- set-up ---------------------------------------------------------------------------- */

static int wait_for(eng_t *e, bool (*pred)(eng_t *, size_t), size_t k);
static bool has_room(eng_t *e, size_t k);

/* One more output of s, emitted here (a source's, a reduce's final). A
 * source's time runs from its first output to its last. */
static void counted_out(stage_t *s) {
  double t = now();
  pthread_mutex_lock(&s->e->mu);
  if (s->out++ == 0 && s->in == 0) s->t_first = t;
  s->t_last = t;
  pthread_mutex_unlock(&s->e->mu);
}

static int emit_to_next(void *arg, const void *data, size_t len) {
  stage_t *s = arg;
  eng_t *e = s->e;
  /* Backpressure reaches into the source: one generate call may emit
   * many items, and each waits for room. Once the run is stopping, the
   * source's emits fail, so that its generate returns at once. */
  if (s->idx == 0) {
    int rc = wait_for(e, has_room, 0);
    if (rc == 0 && stopping(e))
      rc = mpx__err(MPX_ECANCELED, "the run is stopping (interrupted)");
    if (rc != 0) return rc;
  }
  counted_out(s);
  if (s->idx + 1 < e->n) push(&e->st[s->idx + 1], data, len);
  return 0;
}

/* Zero-copy from the source: an item of MPX_POOL_ARENA_THRESHOLD bytes or
 * more that the source writes with mpx_emit_reserve goes straight into a
 * block of the next stage's arena, as a batch of its own (uint32 1, uint32
 * len, the bytes), which the worker reads in place. */
static void *source_reserve(void *arg, size_t len) {
  stage_t *s = arg;
  eng_t *e = s->e;
  stage_t *next = &e->st[1];
  if (len < MPX_POOL_ARENA_THRESHOLD || len > UINT32_MAX - 8 || next->pool == NULL)
    return NULL;
  if (wait_for(e, has_room, 0) != 0 || stopping(e)) return NULL; /* emit then says why */
  if (mpx_pool_loan(next->pool, len + 8, &s->loan) != 0) return NULL;
  return (uint8_t *)s->loan.data + 8;
}

static void source_cancel(void *arg) {
  stage_t *s = arg;
  mpx_pool_loan_cancel(s->e->st[1].pool, &s->loan);
}

static int source_commit(void *arg, size_t used) {
  stage_t *s = arg;
  eng_t *e = s->e;
  stage_t *next = &e->st[1];
  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    source_cancel(s);
    return mpx__err(MPX_ENOMEM, "out of memory");
  }
  uint32_t hdr[2] = {1, (uint32_t)used};
  memcpy(s->loan.data, hdr, sizeof hdr);
  counted_out(s);
  pthread_mutex_lock(&e->mu);
  if (next->in++ == 0) next->t_first = now();
  next->zero_copy++;
  pthread_mutex_unlock(&e->mu);
  j->s = next;
  j->n = 1;
  j->loan = s->loan;
  s->loan = (mpx_pool_loan_t){0};
  mpx_wbuf_init_fixed(&j->batch, j->loan.data, j->loan.len);
  j->batch.len = used + 8;
  pthread_mutex_lock(&next->mu);
  flush_pend(next); /* what came before goes first */
  j->seq = next->next_seq++;
  pthread_mutex_unlock(&next->mu);
  submit(next, j, false);
  return 0;
}

static const mpx__reserve_hooks_t source_hooks = {
    .reserve = source_reserve, .commit = source_commit, .cancel = source_cancel};

static int emit_to_tmp(void *arg, const void *data, size_t len) {
  stage_t *s = arg;
  return mpx_wbuf_append(&s->tmp, data, len);
}

static int make_kv(const mpx__cfg_stage_t *c, mpx__kv_t **kv) {
  *kv = calloc(c->n_params ? c->n_params : 1, sizeof **kv);
  if (*kv == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < c->n_params; i++)
    (*kv)[i] = (mpx__kv_t){c->params[i].key, c->params[i].value};
  return 0;
}

/* Load and validate stage i: its plugin, codec and params. */
static int stage_load(eng_t *e, size_t i) {
  stage_t *s = &e->st[i];
  mpx__cfg_stage_t *c = &e->cfg->stages[i];
  mpx__plugin_t *pl;
  int rc;
  s->e = e;
  s->idx = i;
  s->cfg = c;
  pthread_mutex_init(&s->mu, NULL);
  mpx_wbuf_init(&s->pend);
  mpx_wbuf_init(&s->total);
  mpx_wbuf_init(&s->tmp);
  if ((rc = mpx__plugin_load(&pl, c->plugin)) != 0)
    return mpx__cfg_error_at(e->cfg, c->plugin_line, c->plugin_col, "%s",
                             mpx_last_error());
  s->d = mpx__plugin_desc(pl);
  s->path = mpx__plugin_path(pl);
  bool first = i == 0, last = i + 1 == e->n;
  mpx_plugin_kind_t k = s->d->kind;
  if ((k == MPX_PLUGIN_SOURCE) != first)
    return mpx__cfg_error_at(e->cfg, c->plugin_line, c->plugin_col,
                             "plugin '%s' is a %s: %s", s->d->name,
                             mpx_plugin_kind_name(k),
                             first ? "the first stage must be a source"
                                   : "only the first stage can be a source");
  if (k == MPX_PLUGIN_SINK && !last)
    return mpx__cfg_error_at(e->cfg, c->plugin_line, c->plugin_col,
                             "plugin '%s' is a sink: only the last stage can be one",
                             s->d->name);
  if ((rc = mpx_codec_load(&s->codec, c->opts.codec)) != 0)
    return mpx__cfg_error_at(e->cfg, c->opts.at[MPX__CFG_CODEC].line,
                             c->opts.at[MPX__CFG_CODEC].col, "%s", mpx_last_error());
  mpx__kv_t *kv;
  size_t bad = 0;
  if ((rc = make_kv(c, &kv)) != 0) return rc;
  rc = mpx__ctx_new(&s->ctx, s->d, c->name, kv, c->n_params, &bad, 0, 1, s->codec,
                    emit_to_next, s);
  free(kv);
  if (rc != 0) {
    if (bad < c->n_params)
      return mpx__cfg_error_at(e->cfg, c->params[bad].line, c->params[bad].col, "%s",
                               mpx_last_error());
    return mpx__cfg_error_at(e->cfg, c->line, c->col, "%s", mpx_last_error());
  }
  s->workers = c->opts.workers ? c->opts.workers : (unsigned)mpx_cpu_count();
  s->batch = c->opts.batch ? c->opts.batch : AUTO_BATCH;
  s->keep_order = c->opts.ordered ||
                  (i + 1 < e->n && e->cfg->stages[i + 1].opts.ordered);
  return 0;
}

/* Whether stage i+1 can run in stage i's workers, fused into its chain:
 * both take items in workers (maps, or a reduce at the chain's end), with
 * the same workers, transport, retries and timeout (one pool serves the
 * chain, so these are its). A fused chain moves each item through all its
 * stages in the worker: no trip through the coordinator in between. */
static bool fusable(eng_t *e, size_t i) {
  stage_t *a = &e->st[i], *b = &e->st[i + 1];
  const mpx__cfg_opts_t *x = &a->cfg->opts, *y = &b->cfg->opts;
  return a->d->kind == MPX_PLUGIN_MAP &&
         (b->d->kind == MPX_PLUGIN_MAP || b->d->kind == MPX_PLUGIN_REDUCE) &&
         a->workers == b->workers && x->transport == y->transport &&
         x->retries == y->retries && x->timeout == y->timeout &&
         b->idx - a->head->idx + 1 < ENGINE_MAX_CHAIN;
}

/* A source that splits (MPX_PLUGIN_SPLITS) and is given `workers` (in its
 * stage, or by `defaults`) runs in parts, in the workers of the chain
 * after it, which it heads. The parts' outputs come back in no particular
 * order, so no stage may ask for order; and a map or reduce must follow.
 * Asked for in the stage itself, what stands in the way is an error;
 * through `defaults`, the source quietly runs here. 0 or MPX_ECONFIG. */
static int plan_source(eng_t *e) {
  stage_t *src = &e->st[0], *next = e->n > 1 ? &e->st[1] : NULL;
  const mpx__cfg_stage_t *c = src->cfg;
  unsigned bit = 1u << MPX__CFG_WORKERS;
  bool own = c->opts.set & bit, asked = own || (e->cfg->defaults.set & bit);
  if (!asked || src->d->kind != MPX_PLUGIN_SOURCE) return 0;
  const char *why = NULL;
  bool ordered = false;
  for (size_t i = 0; i < e->n; i++) ordered = ordered || e->st[i].cfg->opts.ordered;
  if (!(mpx__plugin_flags(src->d) & MPX_PLUGIN_SPLITS))
    why = "its plugin does not split its stream (MPX_PLUGIN_SPLITS)";
  else if (next == NULL || next->d->kind == MPX_PLUGIN_SINK)
    why = "a map or reduce stage must follow it, to run it in its workers";
  else if (ordered)
    why = "its parts come back in no particular order, and a stage is ordered";
  if (why && own)
    return mpx__cfg_error_at(e->cfg, c->opts.at[MPX__CFG_WORKERS].line,
                             c->opts.at[MPX__CFG_WORKERS].col,
                             "stage '%s': a source with workers runs in parallel, "
                             "but %s", c->name, why);
  if (why) return 0;
  /* Lent to the chain (lend_workers) unless its first stage has its own. */
  if (own && src->workers != next->workers) {
    char v[16];
    snprintf(v, sizeof v, "%u", c->opts.workers);
    return mpx__cfg_error_at(e->cfg, c->opts.at[MPX__CFG_WORKERS].line,
                             c->opts.at[MPX__CFG_WORKERS].col,
                             "stage '%s': workers %s would be ignored: a source in parts "
                             "runs in the %u workers stage '%s' gives itself; give both "
                             "the same workers, or leave them out of '%s'", c->name,
                             c->opts.workers ? v : "auto",
                             next->workers, next->cfg->name, next->cfg->name);
  }
  /* Many more parts than workers: a part's outputs come back at once, and
   * a faster worker takes more of them. */
  src->parts = 64 * next->workers;
  return 0;
}

/* The options a source or a sink cannot use, given in its own stage, are
 * refused rather than ignored: both run in this process (a source in
 * parts with the options of the chain after it, but its codec). */
static int refuse_unused(eng_t *e) {
  const unsigned all = (1u << MPX__CFG_NOPTS) - 1, ordered = 1u << MPX__CFG_ORDERED;
  const unsigned codec = 1u << MPX__CFG_CODEC, workers = 1u << MPX__CFG_WORKERS;
  for (size_t i = 0; i < e->n; i++) {
    mpx_plugin_kind_t k = e->st[i].d->kind;
    int rc = 0;
    if (k == MPX_PLUGIN_SOURCE)
      rc = mpx__cfg_refuse_unused(e->cfg, i, all & (codec | ordered | workers),
                                  "a source (it runs in mpx run, or in parts with the "
                                  "options of the stage after it)");
    else if (k == MPX_PLUGIN_SINK)
      rc = mpx__cfg_refuse_unused(e->cfg, i, ordered,
                                  "a sink (it runs in mpx run, in one instance)");
    if (rc != 0) return rc;
  }
  return 0;
}

/* A splitting source given `workers` in its own stage lends them to the
 * chain after it, which runs its parts: the maps up to and including the
 * first reduce that do not give their own workers take the source's (a
 * stage's own option beats `defaults`, here as anywhere). */
static void lend_workers(eng_t *e) {
  stage_t *src = &e->st[0];
  unsigned bit = 1u << MPX__CFG_WORKERS;
  if (src->d->kind != MPX_PLUGIN_SOURCE || !(src->cfg->opts.set & bit) ||
      !(mpx__plugin_flags(src->d) & MPX_PLUGIN_SPLITS))
    return;
  for (size_t i = 1; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if ((s->d->kind != MPX_PLUGIN_MAP && s->d->kind != MPX_PLUGIN_REDUCE) ||
        (s->cfg->opts.set & bit))
      break;
    s->workers = src->workers;
    if (s->d->kind == MPX_PLUGIN_REDUCE) break;
  }
}

/* Chains: each stage is its own head and tail, then fusable neighbours
 * join their predecessor's chain, and a source run in parts heads the
 * chain after it. A head keeps order when any stage of its chain, or the
 * stage after it, asks for it. */
static int plan_chains(eng_t *e) {
  lend_workers(e);
  for (size_t i = 0; i < e->n; i++) e->st[i].head = e->st[i].tail = &e->st[i];
  for (size_t i = 1; i + 1 < e->n; i++) {
    if (!fusable(e, i)) continue;
    stage_t *h = e->st[i].head, *b = &e->st[i + 1];
    b->head = h;
    h->tail = b;
    h->keep_order = h->keep_order || b->keep_order;
  }
  int rc = plan_source(e);
  if (rc != 0) return rc;
  if ((rc = refuse_unused(e)) != 0) return rc;
  stage_t *src = &e->st[0];
  if (src->parts) {
    stage_t *next = &e->st[1];
    src->tail = next->tail;
    for (size_t m = 1; m <= src->tail->idx; m++) e->st[m].head = src;
    src->workers = next->workers;
    src->batch = 1;
  }
  for (size_t i = 1; i < e->n; i++) {
    stage_t *h = &e->st[i];
    bool auto_batch = h->cfg->opts.batch == 0;
    h->batch_bytes = AUTO_BATCH_BYTES;
    if (h->head == h && h->tail->d->kind == MPX_PLUGIN_REDUCE && auto_batch) {
      h->batch = REDUCE_BATCH;
      h->batch_bytes = REDUCE_BATCH_BYTES;
    }
  }
  return 0;
}

/* Appends stage s's part of a worker's arguments (engine_proto.h). */
static int wargs_stage(stage_t *s, mpx_wbuf_t *args) {
  mpx_wbuf_t params;
  mpx_wbuf_init(&params);
  int rc = mpx__ctx_params_encode(s->ctx, &params);
  const mpx__cfg_stage_t *c = s->cfg;
  engine_wstage_t w = {.kind = s->d->kind,
                       .path_len = (uint32_t)strlen(s->path) + 1,
                       .stage_len = (uint32_t)strlen(c->name) + 1,
                       .codec_len = (uint32_t)strlen(c->opts.codec) + 1,
                       .params_len = (uint32_t)params.len,
                       .retries = (uint32_t)c->opts.retries,
                       .timeout = c->opts.timeout};
  if (rc == 0) rc = mpx_wbuf_append(args, &w, sizeof w);
  if (rc == 0) rc = mpx_wbuf_append(args, s->path, w.path_len);
  if (rc == 0) rc = mpx_wbuf_append(args, c->name, w.stage_len);
  if (rc == 0) rc = mpx_wbuf_append(args, c->opts.codec, w.codec_len);
  if (rc == 0) rc = mpx_wbuf_append(args, params.data, params.len);
  mpx_wbuf_free(&params);
  return rc;
}

/* Start stage i: its local instance, or (a chain's head) the pool that
 * runs its chain. */
static int stage_start(eng_t *e, size_t i) {
  stage_t *s = &e->st[i];
  mpx__cfg_stage_t *c = s->cfg;
  mpx_plugin_kind_t k = s->d->kind;
  int rc;
  if ((k == MPX_PLUGIN_SOURCE && s->parts == 0) || k == MPX_PLUGIN_SINK ||
      k == MPX_PLUGIN_REDUCE) {
    /* Reduce: the local instance only merges. */
    if (k == MPX_PLUGIN_REDUCE) mpx__ctx_set_emit(s->ctx, emit_to_tmp, s);
    if (k == MPX_PLUGIN_SOURCE) {
      mpx__reserve_hooks_t h = source_hooks;
      h.arg = s;
      mpx__ctx_set_reserve(s->ctx, &h);
    }
    if ((rc = mpx__ctx_call_init(s->ctx, &s->state)) != 0) return rc;
  }
  if ((k == MPX_PLUGIN_SOURCE && s->parts == 0) || k == MPX_PLUGIN_SINK || s->head != s)
    return 0;
  mpx_wbuf_t args;
  mpx_wbuf_init(&args);
  engine_wargs_t a = {.version = ENGINE_WARGS_VERSION,
                      .n_stages = (uint32_t)(s->tail->idx - s->idx + 1)};
  rc = mpx_wbuf_append(&args, &a, sizeof a);
  for (size_t m = s->idx; rc == 0 && m <= s->tail->idx; m++) rc = wargs_stage(&e->st[m], &args);
  if (rc != 0) {
    mpx_wbuf_free(&args);
    return rc;
  }
  const mpx__cfg_t *g = e->cfg;
  /* A source in parts runs with the options of the chain it heads; a
   * part's items are not known in advance, so no timeout applies. */
  const mpx__cfg_opts_t *po = s->parts ? &e->st[1].cfg->opts : &c->opts;
  mpx_pool_opts_t o = {
      .processes = s->workers, .initializer = mpx_pipeline_worker_init,
      .initargs = args.data, .initargs_len = args.len,
      .start_method = MPX_START_SPAWN, .transport = po->transport,
      /* A task whose worker died is run again by the pool; the timeout is
       * kept per item by the worker's watchdog, not per task by the pool. */
      .retries = po->retries == 0 ? -1 : po->retries, .task_timeout = 0,
      .chunksize = 1, .restart = g->supervisor.restart,
      .max_restarts = g->supervisor.max_restarts > 0 ? (unsigned)g->supervisor.max_restarts : 0,
      .restart_period = g->supervisor.period,
      .backoff_min = g->supervisor.backoff_min, .backoff_max = g->supervisor.backoff_max,
      .name = c->name};
  rc = mpx_pool_new(&s->pool, &o);
  mpx_wbuf_free(&args);
  return rc;
}

/* ---- running ----------------------------------------------------------------------------- */

static bool idle_upto(eng_t *e, size_t k) {
  for (size_t j = 0; j <= k && j < e->n; j++)
    if (e->st[j].inflight) return false;
  return true;
}

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
    if (s->head && s->head->pool) flush_pend(s); /* drops it */
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
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
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
    set_fatal(e, MPX_EBROKEN, "stage '%s': no worker left to run its pending items "
              "(supervisor restart: temporary replaces none); the last one: %s",
              s->cfg->name, why);
    return;
  }
}

/* Waits for pred(e, k), checking signals (the first SIGINT starts the
 * stop: enter_stopping) and the stages' workers. Main thread, no stage
 * lock held. 0, or MPX_EINTR after SIGTERM or a second SIGINT, or the
 * fatal error. */
static int wait_for(eng_t *e, bool (*pred)(eng_t *, size_t), size_t k) {
  for (;;) {
    if (stop_now()) return MPX_EINTR;
    if (sig_ints > 0) enter_stopping(e);
    if (stopping(e)) drop_queued(e); /* any queued since */
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
    pthread_cond_timedwait(&e->cv, &e->mu, &ts);
    pthread_mutex_unlock(&e->mu);
  }
}

static bool has_room(eng_t *e, size_t k) {
  (void)k;
  return e->queued < e->cap;
}

/* The share of the source's items through the first worker stages (0..1),
 * or -1 when it cannot tell: its items, less those still in workers,
 * against its size_hint; or its parts answered. Under e->mu. */
static double source_done(const eng_t *e) {
  const stage_t *src = &e->st[0];
  if (src->parts) return (double)e->parts_done / src->parts;
  if (e->expect == 0) return -1;
  uint64_t through = src->out > e->queued ? src->out - e->queued : 0;
  return (double)(through < e->expect ? through : e->expect) / (double)e->expect;
}

/* One line, rewritten in place: items per stage, the rate at the end, and
 * when the source knows its size, how far it is and the time left. */
static void progress_line(eng_t *e, FILE *f, bool final) {
  char line[1024];
  size_t n = 0;
  pthread_mutex_lock(&e->mu);
  for (size_t i = 0; i < e->n && n < sizeof line; i++) {
    stage_t *s = &e->st[i];
    n += (size_t)snprintf(line + n, sizeof line - n, "%s%s %llu", i ? " | " : "",
                          s->cfg->name, (unsigned long long)(i == 0 ? s->out : s->in));
  }
  double dt = now() - e->t0, done = source_done(e);
  uint64_t last = e->st[e->n - 1].out;
  pthread_mutex_unlock(&e->mu);
  if (n < sizeof line)
    n += (size_t)snprintf(line + n, sizeof line - n, "  %.1f s, %.0f/s", dt,
                          dt > 0 ? (double)last / dt : 0.0);
  if (done >= 0 && n < sizeof line) {
    n += (size_t)snprintf(line + n, sizeof line - n, ", %.0f%%", 100 * done);
    if (!final && done > 0.01 && done < 1)
      n += (size_t)snprintf(line + n, sizeof line - n, ", ETA %.0f s", dt * (1 - done) / done);
  }
  fprintf(f, "\r%s   %s", line, final ? "\n" : "");
  fflush(f);
}

static atomic_bool progress_stop;
static void *progress_main(void *arg) {
  eng_t *e = arg;
  while (!atomic_load(&progress_stop)) {
    progress_line(e, stderr, false);
    struct timespec ts = {0, 200 * 1000000L};
    nanosleep(&ts, NULL);
  }
  return NULL;
}

static void fill_stats(eng_t *e, mpx_pipeline_stats_t *st) {
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&e->mu);
  st->n_stages = e->n < MPX_PIPELINE_MAX_STAGES ? e->n : MPX_PIPELINE_MAX_STAGES;
  for (size_t i = 0; i < st->n_stages; i++) {
    stage_t *s = &e->st[i];
    mpx_stage_stats_t *o = &st->stage[i];
    snprintf(o->name, sizeof o->name, "%s", s->cfg->name);
    snprintf(o->plugin, sizeof o->plugin, "%s", s->d ? s->d->name : s->cfg->plugin);
    snprintf(o->kind, sizeof o->kind, "%s", s->d ? mpx_plugin_kind_name(s->d->kind) : "?");
    o->workers = s->d && (s->d->kind == MPX_PLUGIN_MAP || s->d->kind == MPX_PLUGIN_REDUCE ||
                          s->parts)
                     ? s->workers : 0;
    o->in = s->in;
    o->out = s->out;
    o->failed = s->failed;
    /* A stage that never started its clock (no item came in: a part
     * failed before it) has no time, not the time since boot. */
    o->seconds = s->t_first > 0 && s->t_last > s->t_first ? s->t_last - s->t_first : 0;
    o->retries = s->retries;
    o->restarts = s->restarts;
    o->zero_copy = s->zero_copy;
    snprintf(o->runs_in, sizeof o->runs_in, "%s",
             s->head && s->head != s ? s->head->cfg->name : "");
  }
  st->dead_lettered = e->dead;
  snprintf(st->dead_letter, sizeof st->dead_letter, "%s",
           e->cfg->dead_letter ? e->cfg->dead_letter : "");
  st->interrupted = signalled();
  st->seconds = now() - e->t0;
  pthread_mutex_unlock(&e->mu);
}

static void print_summary(const mpx_pipeline_stats_t *st, FILE *f) {
  fprintf(f, "%-16s %-7s %7s %12s %12s %12s %8s %8s %8s %9s\n", "stage", "kind",
          "workers", "in", "out", "rate/s", "failed", "retries", "restarts", "time");
  for (size_t i = 0; i < st->n_stages; i++) {
    const mpx_stage_stats_t *s = &st->stage[i];
    uint64_t n = i == 0 ? s->out : s->in;
    fprintf(f, "%-16s %-7s %7u %12llu %12llu %12.0f %8llu %8llu %8llu %8.3fs\n", s->name,
            s->kind, s->workers, (unsigned long long)s->in, (unsigned long long)s->out,
            s->seconds > 0 ? (double)n / s->seconds : 0.0, (unsigned long long)s->failed,
            (unsigned long long)s->retries, (unsigned long long)s->restarts, s->seconds);
  }
  for (size_t i = 0; i < st->n_stages; i++) {
    const mpx_stage_stats_t *s = &st->stage[i];
    if (s->runs_in[0] && (i + 1 == st->n_stages || strcmp(st->stage[i + 1].runs_in, s->runs_in) != 0))
      fprintf(f, "(fused: %s ran in %s's workers)\n", s->name, s->runs_in);
  }
  fprintf(f, "total %.3f s, %llu dead-lettered%s\n", st->seconds,
          (unsigned long long)st->dead_lettered, st->interrupted ? ", interrupted" : "");
}

/* path "-": standard output, after everything the sinks wrote there. */
static int write_json(const mpx_pipeline_stats_t *st, const char *path, const char *name) {
  bool out = strcmp(path, "-") == 0;
  FILE *f = out ? stdout : fopen(path, "w");
  if (f == NULL) return mpx__err_errno("cannot write '%s'", path);
  fprintf(f, "{\"pipeline\":");
  json_str(f, name, strlen(name));
  fprintf(f, ",\"seconds\":%.6f,\"dead_lettered\":%llu,\"interrupted\":%s,\"stages\":[",
          st->seconds, (unsigned long long)st->dead_lettered, st->interrupted ? "true" : "false");
  for (size_t i = 0; i < st->n_stages; i++) {
    const mpx_stage_stats_t *s = &st->stage[i];
    fprintf(f, "%s{\"name\":", i ? "," : "");
    json_str(f, s->name, strlen(s->name));
    fprintf(f, ",\"plugin\":");
    json_str(f, s->plugin, strlen(s->plugin));
    fprintf(f, ",\"kind\":\"%s\",\"workers\":%u,\"in\":%llu,\"out\":%llu,\"failed\":%llu,"
               "\"retries\":%llu,\"restarts\":%llu,\"zero_copy\":%llu,\"seconds\":%.6f,"
               "\"runs_in\":",
            s->kind, s->workers, (unsigned long long)s->in, (unsigned long long)s->out,
            (unsigned long long)s->failed, (unsigned long long)s->retries,
            (unsigned long long)s->restarts, (unsigned long long)s->zero_copy, s->seconds);
    if (s->runs_in[0]) json_str(f, s->runs_in, strlen(s->runs_in));
    else fputs("null", f);
    fputc('}', f);
  }
  fprintf(f, "]}\n");
  if (out) return fflush(f) == 0 && !ferror(f) ? 0 : mpx__err_errno("cannot write stdout");
  return fclose(f) == 0 ? 0 : mpx__err_errno("cannot write '%s'", path);
}

static void on_pool_shut(mpx_pool_t *p, void *arg) {
  (void)p;
  eng_t *e = arg;
  pthread_mutex_lock(&e->mu);
  e->pools_shut++;
  pthread_cond_broadcast(&e->cv);
  pthread_mutex_unlock(&e->mu);
}

/* The source to its end (or a signal), then each stage's tail. */
static bool has_part_room(eng_t *e, size_t k) {
  (void)k;
  return e->st[0].inflight < 2 * (uint64_t)e->st[0].workers;
}

/* A source run in parts: each part a task of its chain, two in flight per
 * worker, so that a signal stops it after what is running. */
static int drive_parts(eng_t *e) {
  stage_t *src = &e->st[0];
  int rc;
  src->t_first = now();
  for (uint32_t i = 0; i < src->parts && !signalled(); i++) {
    if ((rc = wait_for(e, has_part_room, 0)) != 0) return rc;
    job_t *j = calloc(1, sizeof *j);
    uint32_t part[3] = {ENGINE_PART, i, src->parts};
    if (j == NULL || mpx_wbuf_append(&j->batch, part, sizeof part) != 0) {
      free(j);
      return set_fatal(e, MPX_ENOMEM, "out of memory"), MPX_ENOMEM;
    }
    j->s = src;
    j->n = 1;
    pthread_mutex_lock(&src->mu);
    j->seq = src->next_seq++;
    pthread_mutex_unlock(&src->mu);
    submit(src, j, false);
  }
  return 0;
}

static int drive(eng_t *e) {
  stage_t *src = &e->st[0];
  int rc = 0;
  if (src->parts && (rc = drive_parts(e)) != 0) return rc;
  while (src->parts == 0) {
    if (signalled()) break;
    if ((rc = wait_for(e, has_room, 0)) != 0) return rc;
    if (stopping(e)) break;
    int g = mpx__ctx_call_generate(src->ctx, src->state);
    if (signalled()) break; /* its error, if any, is the stop's */
    if (g < 0) return set_fatal(e, g, "%s", mpx_last_error()), g;
    if (g == 0) break;
  }
  for (size_t k = 1; k < e->n; k++) {
    if ((rc = wait_for(e, idle_upto, k - 1)) != 0) return rc;
    stage_t *s = &e->st[k];
    pthread_mutex_lock(&s->mu);
    if (s->pool) flush_pend(s);
    pthread_mutex_unlock(&s->mu);
    if (s->d->kind == MPX_PLUGIN_REDUCE) {
      if ((rc = wait_for(e, idle_upto, k)) != 0) return rc;
      pthread_mutex_lock(&s->mu);
      mpx__ctx_set_emit(s->ctx, emit_to_next, s);
      mpx__ctx_set_final(s->ctx, true);
      rc = mpx__ctx_call_merge(s->ctx, s->state, s->total.data, s->total.len, NULL, 0);
      pthread_mutex_unlock(&s->mu);
      if (rc != 0) return set_fatal(e, rc, "%s", mpx_last_error()), rc;
    }
  }
  if ((rc = wait_for(e, idle_upto, e->n - 1)) != 0) return rc;
  stage_t *last = &e->st[e->n - 1];
  if (last->d->kind == MPX_PLUGIN_SINK && mpx__ctx_call_flush(last->ctx, last->state) != 0)
    return set_fatal(e, MPX_ETASK, "%s", mpx_last_error()), MPX_ETASK;
  return 0;
}

int mpx_pipeline_run(const mpx_pipeline_opts_t *o, mpx_pipeline_stats_t *st) {
  int rc;
  if (o == NULL || o->file == NULL) return mpx__err(MPX_EINVAL, "pipeline: no file");
  eng_t *e = calloc(1, sizeof *e);
  if (e == NULL) return mpx__err(MPX_ENOMEM, "out of memory");
  pthread_mutex_init(&e->mu, NULL);
  pthread_mutex_init(&e->dl_mu, NULL);
  mpx__cond_init_monotonic(&e->cv);
  if ((rc = mpx__cfg_parse_file(&e->cfg, o->file)) != 0) goto out;
  for (size_t i = 0; i < o->n_sets; i++)
    if ((rc = mpx__cfg_set(e->cfg, o->sets[i])) != 0) goto out;
  e->n = e->cfg->n_stages;
  if (e->n > MPX_PIPELINE_MAX_STAGES) {
    rc = mpx__cfg_error_at(e->cfg, 0, 0, "more than %d stages", MPX_PIPELINE_MAX_STAGES);
    goto out;
  }
  e->st = calloc(e->n, sizeof *e->st);
  if (e->st == NULL) {
    rc = mpx__err(MPX_ENOMEM, "out of memory");
    goto out;
  }
  for (size_t i = 0; i < e->n; i++)
    if ((rc = stage_load(e, i)) != 0) goto out;
  if ((rc = plan_chains(e)) != 0) goto out;
  /* Each stage's plugin starts once in a throw-away process, before any
   * worker: one that cannot is a config error (plugin_probe.h). */
  for (size_t i = 0; i < e->n && rc == 0; i++) {
    stage_t *s = &e->st[i];
    bool pooled = s->d->kind == MPX_PLUGIN_MAP || s->d->kind == MPX_PLUGIN_REDUCE;
    rc = mpx__plugin_probe(s->ctx, s->parts ? s->parts : pooled ? s->workers : 1, o->check_only);
    if (rc == MPX_ECONFIG)
      rc = mpx__cfg_error_at(e->cfg, s->cfg->line, s->cfg->col, "%s", mpx_last_error());
  }
  if (rc != 0 || o->check_only) goto out;
  /* A queue before each chain of worker stages, plus what its workers
   * hold: two batches each (the pool keeps two in flight per worker). */
  size_t chains = 0, held = 0;
  for (size_t i = e->st[0].parts ? 0 : 1; i < e->n; i++) {
    stage_t *h = &e->st[i];
    if (h->d->kind == MPX_PLUGIN_SINK || h->head != h) continue;
    chains++;
    held += 2 * (size_t)h->workers * h->batch;
  }
  e->cap = e->cfg->queue_capacity * (chains ? chains : 1) + held;
  if (e->cfg->dead_letter && (e->dl = fopen(e->cfg->dead_letter, "w")) == NULL) {
    rc = mpx__err_errno("cannot open the dead-letter file '%s'", e->cfg->dead_letter);
    goto out;
  }
  struct sigaction sa = {0}, old_int, old_term;
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sig_ints = sig_term = 0;
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  e->t0 = now();
  for (size_t i = 0; i < e->n && rc == 0; i++) rc = stage_start(e, i);
  pthread_t pth;
  bool prog = o->progress == MPX_PROGRESS_ALWAYS ||
              (o->progress == MPX_PROGRESS_AUTO && isatty(2));
  atomic_store(&progress_stop, false);
  if (rc == 0 && prog && pthread_create(&pth, NULL, progress_main, e) != 0) prog = false;
  e->progress = prog;
  if (rc == 0 && e->st[0].parts == 0 && e->st[0].ctx && e->st[0].state)
    e->expect = mpx__ctx_call_size_hint(e->st[0].ctx, e->st[0].state);
  if (rc == 0) rc = drive(e);
  if (rc == 0 && signalled()) {
    pthread_mutex_lock(&e->mu);
    unsigned long long dropped = e->dropped;
    pthread_mutex_unlock(&e->mu);
    rc = mpx__err(MPX_EINTR, "interrupted (SIGINT): the source was stopped, what was in "
                  "workers finished, %llu item%s dropped", dropped, dropped == 1 ? "" : "s");
  } else if (rc == MPX_EINTR) {
    rc = mpx__err(MPX_EINTR, "%s: stopped at once, the workers terminated",
                  sig_term ? "terminated (SIGTERM)" : "interrupted again (SIGINT)");
  }
  /* The cause, before stopping the pools adds its own (cancelled jobs). */
  char why[sizeof e->fatal_msg] = "";
  pthread_mutex_lock(&e->mu);
  if (rc != 0 && rc == e->fatal) snprintf(why, sizeof why, "%s", e->fatal_msg);
  pthread_mutex_unlock(&e->mu);
  if (prog) {
    atomic_store(&progress_stop, true);
    pthread_join(pth, NULL);
    progress_line(e, stderr, true);
  }
  /* Pools: a clean end waits for nothing; an error or a second signal
   * stops them at once. */
  for (size_t i = 0; i < e->n; i++) {
    if (e->st[i].pool == NULL) continue;
    if (rc != 0 && !(rc == MPX_EINTR && !stop_now())) mpx_pool_terminate(e->st[i].pool);
    else mpx_pool_close(e->st[i].pool);
  }
  /* Wait for each pool's shutdown: then no callback will come, and the
   * jobs still live (a terminated pool calls none for those it cancels)
   * and those still queued (a fatal error stopped the dispatch) end here,
   * nothing going downstream any more. */
  unsigned pools = 0;
  for (size_t i = 0; i < e->n; i++)
    if (e->st[i].pool && mpx_pool_shutdown(e->st[i].pool, on_pool_shut, e) == 0) pools++;
  pthread_mutex_lock(&e->mu);
  while (e->pools_shut < pools) pthread_cond_wait(&e->cv, &e->mu);
  e->ended = true;
  pthread_mutex_unlock(&e->mu);
  atomic_store(&e->stopping, true);
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    while (s->live) {
      job_t *j = s->live;
      mpx_async_t *h = j->h;
      unlive(s, j);
      mpx_async_free(h);
      if (j->loaned) j->a = NULL; /* its block went back with h */
      finish_empty(s, j);
    }
  }
  drop_queued(e);
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (s->pool == NULL) continue;
    mpx_pool_stats_t ps;
    mpx_pool_stats(s->pool, &ps);
    mpx_pool_free(s->pool);
    s->pool = NULL;
    s->restarts = ps.restarts;
    s->retries += ps.retries;
  }
  mpx_pipeline_stats_t local;
  fill_stats(e, &local);
  if (st) *st = local;
  if (o->summary) print_summary(&local, stderr);
  if (o->stats_json) {
    int jrc = write_json(&local, o->stats_json, e->cfg->name);
    if (rc == 0) rc = jrc;
  }
  if (rc != 0 && why[0]) mpx__err(rc, "%s", why);
  sigaction(SIGINT, &old_int, NULL);
  sigaction(SIGTERM, &old_term, NULL);
out:
  if (e->dl) fclose(e->dl);
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
      job_free(j);
    }
    pthread_mutex_destroy(&s->mu);
  }
  if (rc != 0 && st && e->cfg == NULL) memset(st, 0, sizeof *st);
  free(e->st);
  mpx__cfg_free(e->cfg);
  pthread_mutex_destroy(&e->mu);
  pthread_mutex_destroy(&e->dl_mu);
  pthread_cond_destroy(&e->cv);
  free(e);
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
