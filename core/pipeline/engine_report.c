/* The pipeline engine: what a run reports. Dead letters (a JSON line per
 * failed item), the stats, the summary table and the stats JSON. */
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
void mpx__eng_dead_letter(stage_t *s, const void *item, size_t len,
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

/* This process's peak resident memory, KiB: VmHWM, which starts anew at
 * exec (getrusage's ru_maxrss does not: a program started by a big
 * process would report its parent's peak), 0 when unknown. */
static uint64_t peak_rss_kb(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  unsigned long long kb = 0;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "VmHWM: %llu kB", &kb) == 1) break;
  if (f) fclose(f);
  return kb;
}

void mpx__eng_fill_stats(eng_t *e, mpx_pipeline_stats_t *st) {
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
    o->partitions = s->nparts;
  }
  st->peak_rss_kb = peak_rss_kb();
  st->dead_lettered = e->dead;
  snprintf(st->dead_letter, sizeof st->dead_letter, "%s",
           e->cfg->dead_letter ? e->cfg->dead_letter : "");
  st->interrupted = mpx__eng_signalled();
  st->seconds = mpx__now() - e->t0;
  pthread_mutex_unlock(&e->mu);
}

void mpx__eng_print_summary(const mpx_pipeline_stats_t *st, FILE *f) {
  fprintf(f, "%-16s %-7s %7s %12s %12s %12s %8s %8s %8s %9s\n", "stage", "kind",
          "workers", "in", "out", "rate/s", "failed", "retries", "restarts", "time");
  for (size_t i = 0; i < st->n_stages; i++) {
    const mpx_stage_stats_t *s = &st->stage[i];
    uint64_t n = strcmp(s->kind, "source") == 0 ? s->out : s->in;
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
  for (size_t i = 0; i < st->n_stages; i++)
    if (st->stage[i].partitions)
      fprintf(f, "(partitioned: %s in %u partitions, each in a worker of its own)\n",
              st->stage[i].name, st->stage[i].partitions);
  fprintf(f, "total %.3f s, %llu dead-lettered%s\n", st->seconds,
          (unsigned long long)st->dead_lettered, st->interrupted ? ", interrupted" : "");
}

/* path "-": standard output, after everything the sinks wrote there. */
int mpx__eng_write_json(const mpx_pipeline_stats_t *st, const char *path, const char *name) {
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
               "\"partitions\":%u,\"runs_in\":",
            s->kind, s->workers, (unsigned long long)s->in, (unsigned long long)s->out,
            (unsigned long long)s->failed, (unsigned long long)s->retries,
            (unsigned long long)s->restarts, (unsigned long long)s->zero_copy, s->seconds,
            s->partitions);
    if (s->runs_in[0]) json_str(f, s->runs_in, strlen(s->runs_in));
    else fputs("null", f);
    fputc('}', f);
  }
  fprintf(f, "],\"coordinator_peak_rss_kb\":%llu}\n", (unsigned long long)st->peak_rss_kb);
  if (out) return fflush(f) == 0 && !ferror(f) ? 0 : mpx__err_errno("cannot write stdout");
  return fclose(f) == 0 ? 0 : mpx__err_errno("cannot write '%s'", path);
}
