/* The pipeline engine: set-up. Each stage's plugin is loaded and checked,
 * the worker stages planned into chains (stages fused into one set of
 * workers) and a splittable source into parts, then each chain's pool
 * started. Also the emit hooks of the stages that run here. */
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


/* ---- set-up ---------------------------------------------------------------------------- */


/* One more output of s, emitted here (a source's, a reduce's final). A
 * source's time runs from its first output to its last. */
static void counted_out(stage_t *s) {
  double t = mpx__now();
  pthread_mutex_lock(&s->e->mu);
  if (s->out++ == 0 && s->in == 0) s->t_first = t;
  s->t_last = t;
  pthread_mutex_unlock(&s->e->mu);
}

/* An output of a stage that runs here (a source, a reduce's final step),
 * to the stages that read its port. */
int mpx__eng_emit_local(void *arg, mpx__tag_t tag, const void *data, size_t len) {
  stage_t *s = arg;
  eng_t *e = s->e;
  /* Backpressure reaches into the source: one generate call may emit
   * many items, and each waits for room. Once the run is stopping, the
   * source's emits fail, so that its generate returns at once. */
  if (s->d->kind == MPX_PLUGIN_SOURCE) {
    int rc = mpx__eng_wait_for(e, mpx__eng_has_room, 0);
    if (rc == 0 && mpx__eng_stopping(e))
      rc = mpx__err(MPX_ECANCELED, "the run is stopping (interrupted)");
    if (rc != 0) return rc;
  }
  if (len > UINT32_MAX) return mpx__err(MPX_E2BIG, "an item of %zu bytes", len);
  counted_out(s);
  mpx__eng_route_out(s, tag.port, data, (uint32_t)len);
  return 0;
}

int mpx__eng_emit_to_next(void *arg, const void *data, size_t len) {
  return mpx__eng_emit_local(arg, (mpx__tag_t){0}, data, len);
}

/* The one stage that reads s, when s has exactly one reader (of port 0)
 * and it reads nothing else: the zero-copy and parts planning need it. */
static stage_t *sole_reader(stage_t *s) {
  eng_t *e = s->e;
  size_t first, count, all = 0;
  for (size_t i = 0; i < e->g.n_edges; i++) all += e->g.edges[i].from == s->idx;
  mpx__graph_outs(&e->g, (uint32_t)s->idx, 0, &first, &count);
  if (all != 1 || count != 1) return NULL;
  uint32_t to = e->g.edges[first].to;
  return mpx__graph_n_in(&e->g, to) == 1 ? &e->st[to] : NULL;
}

/* Zero-copy from the source: an item of MPX_POOL_ARENA_THRESHOLD bytes or
 * more that the source writes with mpx_emit_reserve goes straight into a
 * block of the next stage's arena, as a batch of its own (uint32 1, uint32
 * len, the bytes), which the worker reads in place. */
static void *source_reserve(void *arg, size_t len) {
  stage_t *s = arg;
  eng_t *e = s->e;
  stage_t *next = sole_reader(s);
  if (len < MPX_POOL_ARENA_THRESHOLD || len > UINT32_MAX - 8 || next == NULL ||
      next->pool == NULL)
    return NULL;
  if (mpx__eng_wait_for(e, mpx__eng_has_room, 0) != 0 || mpx__eng_stopping(e)) return NULL; /* emit then says why */
  if (mpx_pool_loan(next->pool, len + 8, &s->loan) != 0) return NULL;
  s->loan_to = next;
  return (uint8_t *)s->loan.data + 8;
}

static void source_cancel(void *arg) {
  stage_t *s = arg;
  mpx_pool_loan_cancel(s->loan_to->pool, &s->loan);
}

static int source_commit(void *arg, size_t used) {
  stage_t *s = arg;
  eng_t *e = s->e;
  stage_t *next = s->loan_to;
  job_t *j = calloc(1, sizeof *j);
  if (j == NULL) {
    source_cancel(s);
    return mpx__err(MPX_ENOMEM, "out of memory");
  }
  uint32_t hdr[2] = {1, (uint32_t)used};
  memcpy(s->loan.data, hdr, sizeof hdr);
  counted_out(s);
  pthread_mutex_lock(&e->mu);
  if (next->in++ == 0) next->t_first = mpx__now();
  next->zero_copy++;
  pthread_mutex_unlock(&e->mu);
  j->s = next;
  j->n = 1;
  j->loan = s->loan;
  s->loan = (mpx_pool_loan_t){0};
  mpx_wbuf_init_fixed(&j->batch, j->loan.data, j->loan.len);
  j->batch.len = used + 8;
  pthread_mutex_lock(&next->mu);
  mpx__eng_flush_pend(next); /* what came before goes first */
  j->seq = next->next_seq++;
  pthread_mutex_unlock(&next->mu);
  mpx__eng_submit(next, j, false);
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
int mpx__eng_stage_load(eng_t *e, size_t i) {
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
  bool first = i == 0, last = i + 1 == e->n, linear = true;
  for (size_t m = 0; m < e->n; m++) linear = linear && !e->cfg->stages[m].inputs_given;
  mpx_plugin_kind_t k = s->d->kind;
  /* A chain's rules; a graph's are the graph's (graph.h). */
  if (linear && (k == MPX_PLUGIN_SOURCE) != first)
    return mpx__cfg_error_at(e->cfg, c->plugin_line, c->plugin_col,
                             "plugin '%s' is a %s: %s", s->d->name,
                             mpx_plugin_kind_name(k),
                             first ? "the first stage must be a source"
                                   : "only the first stage can be a source");
  if (linear && k == MPX_PLUGIN_SINK && !last)
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
                    mpx__eng_emit_to_next, s);
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
  /* In a graph: b is all that reads a, and a all that b reads (a chain
   * is consecutive stages, each item going down it in the worker). */
  return sole_reader(a) == b && a->d->kind == MPX_PLUGIN_MAP &&
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
/* Only the first stage's source runs in parts: another source given
 * `workers` in its own stage is refused (it would run here regardless). */
static int refuse_other_parts(eng_t *e) {
  unsigned bit = 1u << MPX__CFG_WORKERS;
  for (size_t i = 1; i < e->n; i++) {
    const stage_t *s = &e->st[i];
    if (s->d->kind != MPX_PLUGIN_SOURCE || !(s->cfg->opts.set & bit)) continue;
    return mpx__cfg_error_at(e->cfg, s->cfg->opts.at[MPX__CFG_WORKERS].line,
                             s->cfg->opts.at[MPX__CFG_WORKERS].col,
                             "stage '%s': only the first stage's source can run in parts "
                             "(with workers); this one would run in mpx run: put it first, "
                             "or leave out its workers", s->cfg->name);
  }
  return 0;
}

static int plan_source(eng_t *e) {
  stage_t *src = &e->st[0], *next = sole_reader(&e->st[0]);
  int orc = refuse_other_parts(e);
  if (orc != 0) return orc;
  const mpx__cfg_stage_t *c = src->cfg;
  unsigned bit = 1u << MPX__CFG_WORKERS;
  bool own = c->opts.set & bit, asked = own || (e->cfg->defaults.set & bit);
  if (!asked || src->d->kind != MPX_PLUGIN_SOURCE) return 0;
  const char *why = NULL;
  bool ordered = false;
  for (size_t i = 0; i < e->n; i++) ordered = ordered || e->st[i].cfg->opts.ordered;
  if (!(mpx__plugin_flags(src->d) & MPX_PLUGIN_SPLITS))
    why = "its plugin does not split its stream (MPX_PLUGIN_SPLITS)";
  else if (next == NULL || next != &e->st[1] || next->d->kind == MPX_PLUGIN_SINK)
    why = "a map or reduce stage must follow it, to run it in its workers (the one stage "
          "that reads it, next in the file, reading nothing else)";
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
        (s->cfg->opts.set & bit) || sole_reader(&e->st[i - 1]) != s)
      break;
    s->workers = src->workers;
    if (s->d->kind == MPX_PLUGIN_REDUCE) break;
  }
}

/* Chains: each stage is its own head and tail, then fusable neighbours
 * join their predecessor's chain, and a source run in parts heads the
 * chain after it. A head keeps order when any stage of its chain, or the
 * stage after it, asks for it. */
/* A stage keeps order when it asks for it or any stage reading it does. */
static void plan_order(eng_t *e) {
  for (size_t i = 0; i < e->g.n_edges; i++) {
    const mpx__gedge_t *g = &e->g.edges[i];
    if (e->st[g->to].cfg->opts.ordered) e->st[g->from].keep_order = true;
  }
}

int mpx__eng_plan_chains(eng_t *e) {
  plan_order(e);
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
  for (size_t i = 0; i < e->n; i++)
    e->st[i].folds = e->st[i].d->kind == MPX_PLUGIN_REDUCE && mpx__plugin_has_fold(e->st[i].d);
  return mpx__eng_plan_partitions(e);
}

/* Appends stage s's part of a worker's arguments (engine_proto.h). */
int mpx__eng_wargs_stage(stage_t *s, mpx_wbuf_t *args) {
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

void mpx__eng_pool_opts(const stage_t *s, mpx_pool_opts_t *o) {
  const mpx__cfg_t *g = s->e->cfg;
  /* A source in parts runs with the options of the chain it heads; a
   * part's items are not known in advance, so no timeout applies. */
  const mpx__cfg_opts_t *po = s->parts ? &s->e->st[1].cfg->opts : &s->cfg->opts;
  *o = (mpx_pool_opts_t){
      .processes = s->workers, .initializer = mpx_pipeline_worker_init,
      .start_method = MPX_START_SPAWN, .transport = po->transport,
      /* A task whose worker died is run again by the pool; the timeout is
       * kept per item by the worker's watchdog, not per task by the pool. */
      .retries = po->retries == 0 ? -1 : po->retries, .task_timeout = 0,
      .chunksize = 1, .restart = g->supervisor.restart,
      .max_restarts = g->supervisor.max_restarts > 0 ? (unsigned)g->supervisor.max_restarts : 0,
      .restart_period = g->supervisor.period,
      .backoff_min = g->supervisor.backoff_min, .backoff_max = g->supervisor.backoff_max,
      .name = s->cfg->name, .loop = &s->e->loop};
}

/* Start stage i: its local instance, or (a chain's head) the pool that
 * runs its chain. */
int mpx__eng_stage_start(eng_t *e, size_t i) {
  stage_t *s = &e->st[i];
  mpx_plugin_kind_t k = s->d->kind;
  int rc;
  if ((k == MPX_PLUGIN_SOURCE && s->parts == 0) || k == MPX_PLUGIN_SINK ||
      (k == MPX_PLUGIN_REDUCE && s->nparts == 0)) {
    /* Reduce: the local instance only merges (into tmp), or folds. */
    if (k == MPX_PLUGIN_REDUCE) mpx__ctx_set_emit(s->ctx, emit_to_tmp, s);
    if (k == MPX_PLUGIN_SOURCE) {
      mpx__reserve_hooks_t h = source_hooks;
      h.arg = s;
      mpx__ctx_set_reserve(s->ctx, &h);
      mpx__ctx_set_emit_to(s->ctx, mpx__eng_emit_local, s);
    }
    if ((rc = mpx__ctx_call_init(s->ctx, &s->state)) != 0) return rc;
  }
  for (unsigned q = 0; q < s->nparts; q++)
    if ((rc = mpx__eng_part_start(e, &s->parts_st[q])) != 0) return rc;
  if ((k == MPX_PLUGIN_SOURCE && s->parts == 0) || k == MPX_PLUGIN_SINK || s->head != s)
    return 0;
  mpx_wbuf_t args;
  mpx_wbuf_init(&args);
  engine_wargs_t a = {.version = ENGINE_WARGS_VERSION,
                      .n_stages = (uint32_t)(s->tail->idx - s->idx + 1),
                      .mode = ENGINE_MODE_CHAIN, .partitions = s->tail->nparts};
  rc = mpx_wbuf_append(&args, &a, sizeof a);
  for (size_t m = s->idx; rc == 0 && m <= s->tail->idx; m++) rc = mpx__eng_wargs_stage(&e->st[m], &args);
  if (rc != 0) {
    mpx_wbuf_free(&args);
    return rc;
  }
  mpx_pool_opts_t o;
  mpx__eng_pool_opts(s, &o);
  o.initargs = args.data;
  o.initargs_len = args.len;
  rc = mpx_pool_new(&s->pool, &o);
  mpx_wbuf_free(&args);
  return rc;
}
