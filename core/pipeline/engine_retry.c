/* The pipeline engine: a batch that failed (engine.c). A worker's death
 * or a plugin's error is retried by the pool; a batch that still fails is
 * split, at the item that ran past the stage's timeout (dead-lettered) or
 * into single items, so a poisonous item fails alone. */
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
    if (mpx__eng_batch_item(p, first + i, &d, &l) != 0) rc = -1;
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
  if (mpx__eng_batch_item(j, 0, &d, &l) == 0) mpx__eng_dead_letter(s, d, l, msg, j->attempts ? j->attempts : 1);
  mpx__eng_finish_empty(s, j);
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
        else mpx__eng_submit(s, kids[i], true);
      }
      return;
    }
  } else if (ok) {
    j->pending = n;
    for (uint32_t i = 0; i < n; i++) {
      job_t *c = child(j, i, 1);
      if (c == NULL) {
        mpx__eng_set_fatal(e, MPX_ENOMEM, "out of memory");
        return;
      }
      mpx__eng_submit(s, c, true);
    }
    return;
  }
  for (uint32_t i = 0; i < nk; i++) mpx__eng_job_free(kids[i]);
  mpx__eng_set_fatal(e, MPX_ENOMEM, "out of memory");
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

void mpx__eng_on_err(mpx_async_t *a, void *arg) {
  job_t *j = arg;
  stage_t *s = j->s;
  eng_t *e = s->e;
  mpx__eng_unlive(s, j);
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
      mpx__eng_set_fatal(e, MPX_ENOMEM, "out of memory");
      return;
    }
    j->batch = b;
    j->loaned = false;
  }
  mpx_async_free(a);
  mpx__eng_left_pool(s, j);
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
    mpx__eng_set_fatal(e, rc, "stage '%s': %s", s->cfg->name, msg);
    mpx__eng_finish_empty(s, j);
  } else if (s->part_of) {
    /* A partition's task is no item to dead-letter: a fold that fails
     * (a partial its plugin refuses), or an owner that kept dying past the
     * pool's retries, fails the run. */
    mpx__eng_set_fatal(e, rc, "stage '%s' (partition %u of %u): %s", s->cfg->name,
                       s->part_index, s->part_of->nparts, msg);
    mpx__eng_finish_empty(s, j);
  } else if (s->parts) {
    /* A source that fails fails the run, in parts as when it runs here
     * (the pool ran a part whose worker died again, up to retries). */
    uint32_t part[3];
    memcpy(part, j->batch.data, sizeof part);
    mpx__eng_set_fatal(e, rc, "stage '%s' (part %u of %u): %s", s->cfg->name, part[1], part[2], msg);
    mpx__eng_job_finish(s, j, NULL, 0, 0);
  } else if (mpx__eng_stopping(e)) {
    mpx__eng_count_dropped(e, j->n); /* nothing runs again once the run is stopping */
    mpx__eng_finish_empty(s, j);
  } else if (j->n > 1) {
    split(s, j, hung, msg);
  } else {
    j->attempts = death ? pool_attempts(s) : 1;
    give_up(s, j, msg);
  }
  mpx__eng_dispatch(s);
}
