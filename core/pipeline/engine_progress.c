/* The pipeline engine: the progress line on standard error, redrawn by a
 * thread of its own while the run goes on. */
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
  double dt = mpx__now() - e->t0, done = source_done(e);
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

void mpx__eng_progress_begin(eng_t *e, bool want, bool start) {
  atomic_store(&progress_stop, false);
  e->progress_th_on = false;
  if (start && want) {
    if (pthread_create(&e->progress_th, NULL, progress_main, e) == 0)
      e->progress_th_on = true;
    else
      want = false;
  }
  e->progress = want;
}

void mpx__eng_progress_end(eng_t *e) {
  if (!e->progress) return;
  atomic_store(&progress_stop, true);
  if (e->progress_th_on) pthread_join(e->progress_th, NULL);
  progress_line(e, stderr, true);
}
