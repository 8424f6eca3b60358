/* libFuzzer target for the pipeline config (core/pipeline/config.c, from the static
 * library): parse arbitrary bytes as a pipeline file. An input may end
 * with a line "#--set" (a YAML comment) followed by overrides, one per
 * line, applied to what parsed. Whatever the input: no crash, no leak, a
 * failure leaves nothing and names the file or the override, and a
 * config that parsed keeps its invariants through every override. */
#define _GNU_SOURCE /* memmem */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "../../core/pipeline/config.h"

static void check(const mpx__cfg_t *c) {
  size_t i, j;
  if (c->n_stages == 0 || c->stages == NULL || c->name == NULL ||
      c->defaults.codec == NULL || c->queue_capacity == 0 ||
      c->supervisor.period <= 0 ||
      c->supervisor.backoff_max < c->supervisor.backoff_min)
    __builtin_trap();
  for (i = 0; i < c->n_stages; i++) {
    const mpx__cfg_stage_t *s = &c->stages[i];
    if (s->name == NULL || s->name[0] == '\0' || s->plugin == NULL ||
        s->opts.codec == NULL || s->opts.workers > MPX__CFG_MAX_WORKERS ||
        s->opts.retries < 0 || !(s->opts.timeout >= 0))
      __builtin_trap();
    for (j = 0; j < i; j++)
      if (strcmp(c->stages[j].name, s->name) == 0) __builtin_trap();
    for (j = 0; j < s->n_params; j++)
      if (s->params[j].key == NULL || s->params[j].value == NULL)
        __builtin_trap();
  }
}

static void set(mpx__cfg_t *c, const char *a) {
  int rc = mpx__cfg_set(c, a);
  if (rc != 0 && rc != MPX_ENOMEM &&
      (rc != MPX_ECONFIG || strncmp(mpx_last_error(), "--set", 5) != 0))
    __builtin_trap();
  check(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  static const char marker[] = "\n#--set\n";
  const uint8_t *sets = NULL, *end = d + n;
  size_t ylen = n;
  mpx__cfg_t *c = (mpx__cfg_t *)&ylen;
  int rc;
  const uint8_t *m = memmem(d, n, marker, sizeof marker - 1);
  if (m != NULL) {
    ylen = (size_t)(m - d);
    sets = m + sizeof marker - 1;
  }
  rc = mpx__cfg_parse_mem(&c, "fuzz.yaml", d, ylen);
  if (rc != 0) {
    if (c != NULL || (rc != MPX_ECONFIG && rc != MPX_ENOMEM) ||
        strncmp(mpx_last_error(), "fuzz.yaml", 9) != 0)
      __builtin_trap();
    return 0;
  }
  check(c);
  while (sets != NULL && sets < end) {
    const uint8_t *nl = memchr(sets, '\n', (size_t)(end - sets));
    size_t len = nl ? (size_t)(nl - sets) : (size_t)(end - sets);
    char *a = malloc(len + 1);
    if (a == NULL) break;
    memcpy(a, sets, len);
    a[len] = '\0';
    if (strlen(a) == len) set(c, a); /* a line with a NUL cannot be argv */
    free(a);
    sets = nl ? nl + 1 : end;
  }
  set(c, "0.workers=2");
  set(c, "pipeline.defaults.codec=json");
  if (c->stages[0].n_params > 0 &&
      mpx__cfg_error_at(c, c->stages[0].params[0].line,
                        c->stages[0].params[0].col, "%s",
                        c->stages[0].params[0].value) != MPX_ECONFIG)
    __builtin_trap();
  mpx__cfg_free(c);
  return 0;
}
