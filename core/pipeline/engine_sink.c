/* The pipeline engine: sinks. Each sink runs in a thread of its own,
 * taking what its queue holds in one go and calling its plugin's process
 * once per item, its errors retried at once up to the stage's retries,
 * then dead-lettered. The items it holds count as queued (e->queued), so
 * a sink slower than the rest makes the sources wait: backpressure, not
 * a stalled engine loop. Its process runs in that thread only; its init,
 * flush (once the stream has ended and the sink is idle) and fini in the
 * main thread, never at the same time. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine_int.h"
#include "internal.h"
#include "plugin_host.h"
#include "rd.h"

/* A sink's thread is woken once an eighth of the run's queue capacity
 * waits for it (at most SINK_WAKE items), or when a batch of items is in
 * (mpx__eng_sinks_kick), or when something waits for room; not for every
 * item, which would make producer and sinks take turns an item at a
 * time, nor so late that the producer waits for room meanwhile. */
#define SINK_WAKE 4096
static uint32_t wake_at(const eng_t *e) {
  size_t w = e->cap / 4;
  return w < 1 ? 1 : w > SINK_WAKE ? SINK_WAKE : (uint32_t)w;
}
/* And at the latest after this long (a safety net: every path above
 * kicks). */
#define SINK_NAP_NS (10 * 1000 * 1000L)

void mpx__eng_sink_put(stage_t *s, const void *data, size_t len) {
  eng_t *e = s->e;
  uint32_t l = (uint32_t)len;
  pthread_mutex_lock(&s->mu);
  int rc = mpx_wbuf_append(&s->sink_q, &l, 4);
  if (rc == 0) rc = mpx_wbuf_append(&s->sink_q, data, len);
  if (rc == 0) s->sink_n++;
  if (s->sink_waiting && s->sink_n >= wake_at(e)) pthread_cond_signal(&s->sink_cv);
  pthread_mutex_unlock(&s->mu);
  if (rc != 0) {
    mpx__eng_set_fatal(e, MPX_ENOMEM, "out of memory");
    return;
  }
  pthread_mutex_lock(&e->mu);
  if (s->in++ == 0) s->t_first = mpx__now();
  e->queued++;
  s->inflight++;
  pthread_mutex_unlock(&e->mu);
}

void mpx__eng_sinks_kick(eng_t *e) {
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (!s->sink_on) continue;
    pthread_mutex_lock(&s->mu);
    if (s->sink_waiting && s->sink_n > 0) pthread_cond_signal(&s->sink_cv);
    pthread_mutex_unlock(&s->mu);
  }
}

/* One item, retried at once on error, then dead-lettered. */
static void sink_one(stage_t *s, const void *data, uint32_t len) {
  unsigned attempts = 0, retries = s->cfg->opts.retries;
  while (mpx__ctx_call_process(s->ctx, s->state, data, len) != 0) {
    attempts++;
    if (mpx__ctx_permanent(s->ctx) || attempts > retries) {
      mpx__eng_dead_letter(s, data, len, mpx_last_error(), attempts);
      return;
    }
    pthread_mutex_lock(&s->e->mu);
    s->retries++;
    pthread_mutex_unlock(&s->e->mu);
  }
}

/* Waits for items (or the end) and takes them all: their count, 0 at the
 * end. */
static uint32_t sink_take(stage_t *s, mpx_wbuf_t *b) {
  pthread_mutex_lock(&s->mu);
  while (s->sink_n < wake_at(s->e) && !s->sink_stop) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_nsec += SINK_NAP_NS;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    s->sink_waiting = true;
    int w = pthread_cond_timedwait(&s->sink_cv, &s->mu, &ts);
    s->sink_waiting = false;
    if (s->sink_n > 0 && w == 0) break; /* kicked */
    if (s->sink_n > 0 && w == ETIMEDOUT) break;
  }
  uint32_t n = s->sink_n;
  mpx_wbuf_t t = s->sink_q;
  s->sink_q = *b;
  s->sink_q.len = 0;
  *b = t;
  s->sink_n = 0;
  pthread_mutex_unlock(&s->mu);
  return n;
}

static void *sink_main(void *arg) {
  stage_t *s = arg;
  eng_t *e = s->e;
  mpx_wbuf_t b;
  mpx_wbuf_init(&b);
  uint32_t n;
  while ((n = sink_take(s, &b)) > 0) {
    mpx__rd_t r = mpx__rd_make(b.data, b.len);
    uint32_t done = 0, dropped = 0;
    for (; done < n; done++) {
      const void *d;
      uint32_t l;
      if (mpx__rd_bytes32(&r, &d, &l) != 0) break;
      if (mpx__eng_stop_now()) break; /* SIGTERM, a second SIGINT: at once */
      sink_one(s, d, l);
    }
    dropped = n - done;
    double t = mpx__now();
    pthread_mutex_lock(&e->mu);
    s->out += done;
    s->t_last = t;
    e->queued -= n;
    e->dropped += dropped;
    s->inflight -= n;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
  }
  mpx_wbuf_free(&b);
  return NULL;
}

int mpx__eng_sinks_start(eng_t *e) {
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (s->d->kind != MPX_PLUGIN_SINK) continue;
    mpx__cond_init_monotonic(&s->sink_cv);
    mpx_wbuf_init(&s->sink_q);
    if (pthread_create(&s->sink_th, NULL, sink_main, s) != 0) {
      pthread_cond_destroy(&s->sink_cv);
      return mpx__err(MPX_ENOMEM, "stage '%s': cannot start its thread", s->cfg->name);
    }
    s->sink_on = true;
  }
  return 0;
}

void mpx__eng_sinks_stop(eng_t *e) {
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (!s->sink_on) continue;
    pthread_mutex_lock(&s->mu);
    s->sink_stop = true;
    pthread_cond_signal(&s->sink_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->sink_th, NULL);
    s->sink_on = false;
    pthread_cond_destroy(&s->sink_cv);
    mpx_wbuf_free(&s->sink_q);
  }
}
