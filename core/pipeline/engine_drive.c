/* The pipeline engine: driving a run (engine_int.h, mpx__eng_drive). The
 * sources run to their end (a splitting source as parts in its chain's
 * workers, the others here, a generate call each in turn), then the end
 * of the stream goes through the graph in topological order: each
 * stage's last batch once everything before it is idle, a reduce's final
 * step (or its partitions' final outputs), the sinks' flush. */
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "engine_proto.h"
#include "internal.h"
#include "plugin_host.h"

/* Whether the stages up to position k of the topological order have
 * nothing in flight (so nothing more will reach those after them). */
static bool idle_upto(eng_t *e, size_t k) {
  for (size_t j = 0; j <= k && j < e->n; j++)
    if (e->st[e->g.order[j]].inflight) return false;
  return true;
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
  src->t_first = mpx__now();
  for (uint32_t i = 0; i < src->parts && !mpx__eng_signalled(); i++) {
    if ((rc = mpx__eng_wait_for(e, has_part_room, 0)) != 0) return rc;
    job_t *j = calloc(1, sizeof *j);
    uint32_t part[3] = {ENGINE_PART, i, src->parts};
    if (j == NULL || mpx_wbuf_append(&j->batch, part, sizeof part) != 0) {
      free(j);
      return mpx__eng_set_fatal(e, MPX_ENOMEM, "out of memory"), MPX_ENOMEM;
    }
    j->s = src;
    j->n = 1;
    pthread_mutex_lock(&src->mu);
    j->seq = src->next_seq++;
    pthread_mutex_unlock(&src->mu);
    mpx__eng_submit(src, j, false);
  }
  return 0;
}

/* Every source that runs here, a generate call each in turn, to their
 * ends (or a signal). */
static int drive_sources(eng_t *e) {
  bool more = true;
  int rc;
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    s->more = s->d->kind == MPX_PLUGIN_SOURCE && s->parts == 0;
  }
  while (more) {
    more = false;
    for (size_t i = 0; i < e->n; i++) {
      stage_t *s = &e->st[i];
      if (!s->more) continue;
      if (mpx__eng_signalled()) return 0;
      if ((rc = mpx__eng_wait_for(e, mpx__eng_has_room, 0)) != 0) return rc;
      if (mpx__eng_stopping(e)) return 0;
      int g = mpx__ctx_call_generate(s->ctx, s->state);
      if (mpx__eng_signalled()) return 0; /* its error, if any, is the stop's */
      if (g < 0) return mpx__eng_set_fatal(e, g, "%s", mpx_last_error()), g;
      s->more = g > 0;
      more = more || g > 0;
    }
  }
  return 0;
}

/* A reduce's final step here: the fold's flush, or the last merge. */
static int reduce_final(stage_t *s) {
  int rc;
  pthread_mutex_lock(&s->mu);
  mpx__ctx_set_emit_to(s->ctx, mpx__eng_emit_local, s);
  mpx__ctx_set_final(s->ctx, true);
  if (s->folds) rc = mpx__ctx_call_flush(s->ctx, s->state);
  else rc = mpx__ctx_call_merge(s->ctx, s->state, s->total.data, s->total.len, NULL, 0);
  pthread_mutex_unlock(&s->mu);
  return rc != 0 ? (mpx__eng_set_fatal(s->e, rc, "%s", mpx_last_error()), rc) : 0;
}

/* The end of the stream, stage by stage in topological order: a stage's
 * last partial batch goes once everything before it is idle; a reduce
 * then takes its final step (a partitioned one in its partitions). */
static int drain(eng_t *e) {
  int rc;
  for (size_t k = 0; k < e->n; k++) {
    stage_t *s = &e->st[e->g.order[k]];
    if (s->d->kind == MPX_PLUGIN_SOURCE) continue;
    if (k > 0 && (rc = mpx__eng_wait_for(e, idle_upto, k - 1)) != 0) return rc;
    pthread_mutex_lock(&s->mu);
    if (s->pool) mpx__eng_flush_pend(s);
    pthread_mutex_unlock(&s->mu);
    if (s->d->kind != MPX_PLUGIN_REDUCE) continue;
    if ((rc = mpx__eng_wait_for(e, idle_upto, k)) != 0) return rc;
    if ((rc = s->nparts ? mpx__eng_part_finish(s) : reduce_final(s)) != 0) return rc;
  }
  if ((rc = mpx__eng_wait_for(e, idle_upto, e->n - 1)) != 0) return rc;
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (s->d->kind == MPX_PLUGIN_SINK && mpx__ctx_call_flush(s->ctx, s->state) != 0)
      return mpx__eng_set_fatal(e, MPX_ETASK, "%s", mpx_last_error()), MPX_ETASK;
  }
  return 0;
}

int mpx__eng_drive(eng_t *e) {
  int rc = 0;
  if (e->st[0].parts && (rc = drive_parts(e)) != 0) return rc;
  if ((rc = drive_sources(e)) != 0) return rc;
  return drain(e);
}
