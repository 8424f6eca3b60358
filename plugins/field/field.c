/* field: a map that splits each item on a separator and emits one of its
 * fields, as Python's item.split(separator)[index] would: every
 * occurrence of the separator (left to right, not overlapping) ends a
 * field, so n occurrences make n + 1 fields, empty ones included, and an
 * item without the separator is one field, itself. index counts from 0,
 * or from the end when negative (-1: the last field). An item with too
 * few fields emits nothing (a filter, not an error). The separator is any
 * non-empty byte string: " " (the default), "\t" in YAML double quotes,
 * ", ", "::". */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mpx/plugin.h>

typedef struct {
  char *sep;
  size_t sep_len;
  int64_t index;
} field_t;

static int field_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *sep = mpx_param_str(ctx, "separator");
  field_t *f;
  if (sep[0] == '\0')
    return mpx_plugin_fail(ctx, "separator must not be empty");
  if ((f = calloc(1, sizeof *f)) == NULL) return MPX_ENOMEM;
  if ((f->sep = strdup(sep)) == NULL) {
    free(f);
    return MPX_ENOMEM;
  }
  f->sep_len = strlen(sep);
  f->index = mpx_param_int(ctx, "index");
  *state = f;
  return 0;
}

static void field_fini(mpx_plugin_ctx_t *ctx, void *state) {
  field_t *f = state;
  (void)ctx;
  if (f == NULL) return;
  free(f->sep);
  free(f);
}

/* The next separator in [p, end), or NULL. */
static const char *next_sep(const field_t *f, const char *p, const char *end) {
  return memmem(p, (size_t)(end - p), f->sep, f->sep_len);
}

static int field_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                         size_t len) {
  const field_t *f = state;
  const char *p = len ? in : "", *end = p + len, *s;
  uint64_t want;
  if (f->index >= 0) {
    want = (uint64_t)f->index;
  } else {
    /* Count the fields to find the one -index from the end. */
    uint64_t n = 1;
    for (const char *q = p; (s = next_sep(f, q, end)) != NULL; q = s + f->sep_len)
      n++;
    if ((uint64_t)0 - (uint64_t)f->index > n) return 0;
    want = n - ((uint64_t)0 - (uint64_t)f->index);
  }
  for (uint64_t i = 0; i < want; i++) {
    if ((s = next_sep(f, p, end)) == NULL) return 0; /* too few fields */
    p = s + f->sep_len;
  }
  s = next_sep(f, p, end);
  return mpx_emit(ctx, p, (size_t)((s ? s : end) - p));
}

static const mpx_param_def_t field_params[] = {
    {"separator", MPX_PARAM_STRING, " ", false,
     "the bytes that separate fields (not empty)"},
    {"index", MPX_PARAM_INT, "0", false,
     "the field to emit, from 0; negative counts from the end (-1: the last)"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "field",
    .version = "1.0",
    .description = "split each item on a separator and emit field number "
                   "index (nothing when there are too few fields)",
    .kind = MPX_PLUGIN_MAP,
    .params = field_params,
    .n_params = sizeof field_params / sizeof field_params[0],
    .init = field_init,
    .fini = field_fini,
    .process = field_process,
};
