/* range: a source of the integers start, start+step, ... up to stop
 * (excluded), as Python's range(start, stop, step). Each item is an
 * 8-byte little-endian int64. The workers of the stage split the range
 * round-robin: worker i of n emits the elements i, i+n, i+2n, ... */
#include <stdint.h>
#include <stdlib.h>

#include <mpx/plugin.h>

#define BATCH 4096

typedef struct {
  int64_t start, step;
  uint64_t next;   /* index of the next element to emit */
  uint64_t len;    /* elements in the whole range */
  uint64_t stride; /* the stage's worker count */
} range_t;

/* Elements of range(start, stop, step), step != 0. The differences are
 * taken modulo 2^64, where they are exact. */
static uint64_t range_len(int64_t start, int64_t stop, int64_t step) {
  if (step > 0 && start < stop)
    return ((uint64_t)stop - (uint64_t)start - 1) / (uint64_t)step + 1;
  if (step < 0 && start > stop)
    return ((uint64_t)start - (uint64_t)stop - 1) / (0 - (uint64_t)step) + 1;
  return 0;
}

static int range_init(mpx_plugin_ctx_t *ctx, void **state) {
  range_t *r;
  int64_t stop = mpx_param_int(ctx, "stop");
  if (mpx_param_int(ctx, "step") == 0)
    return mpx_plugin_fail(ctx, "step must not be 0");
  if ((r = calloc(1, sizeof *r)) == NULL) return MPX_ENOMEM;
  r->start = mpx_param_int(ctx, "start");
  r->step = mpx_param_int(ctx, "step");
  r->len = range_len(r->start, stop, r->step);
  r->next = mpx_worker_index(ctx);
  r->stride = mpx_worker_count(ctx);
  *state = r;
  return 0;
}

static void range_fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  free(state);
}

static int range_generate(mpx_plugin_ctx_t *ctx, void *state) {
  range_t *r = state;
  unsigned char le[8];
  int rc;
  for (int n = 0; n < BATCH && r->next < r->len; n++) {
    /* start + next * step: exact modulo 2^64, and the result fits. */
    uint64_t v = (uint64_t)r->start + r->next * (uint64_t)r->step;
    for (int i = 0; i < 8; i++) le[i] = (unsigned char)(v >> (8 * i));
    if ((rc = mpx_emit(ctx, le, sizeof le)) != 0) return rc;
    /* Past the end: stop before next + stride could wrap around. */
    r->next = r->len - r->next > r->stride ? r->next + r->stride : r->len;
  }
  return r->next < r->len ? 1 : 0;
}

static uint64_t range_size_hint(mpx_plugin_ctx_t *ctx, void *state) {
  range_t *r = state;
  (void)ctx;
  return r->next < r->len ? (r->len - r->next - 1) / r->stride + 1 : 0;
}

static const mpx_param_def_t range_params[] = {
    {"start", MPX_PARAM_INT, "0", false, "first value"},
    {"stop", MPX_PARAM_INT, NULL, true, "end of the range (excluded)"},
    {"step", MPX_PARAM_INT, "1", false, "difference between values (not 0)"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "range",
    .version = "1.0",
    .description = "the integers of range(start, stop, step), as 8-byte "
                   "little-endian int64",
    .kind = MPX_PLUGIN_SOURCE,
    .params = range_params,
    .n_params = sizeof range_params / sizeof range_params[0],
    .init = range_init,
    .fini = range_fini,
    .generate = range_generate,
    .size_hint = range_size_hint,
    .flags = MPX_PLUGIN_SPLITS,
};
