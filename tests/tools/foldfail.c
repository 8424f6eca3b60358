/* A test plugin (reduce) over int64 items: sums them. Partitioned, each
 * batch's sum goes to partition 0 as one partial (mpx_emit_partition);
 * its fold refuses a partial whose sum is fail_above or more, so that a
 * partition's fold fails. The final output is the sum, 8 bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mpx/plugin.h>

static const mpx_param_def_t params[] = {
    {"fail_above", MPX_PARAM_INT, "-1", false, "fold refuses a partial of this sum or more"},
};

static int init(mpx_plugin_ctx_t *ctx, void **state) {
  (void)ctx;
  return (*state = calloc(1, sizeof(int64_t))) ? 0 : MPX_ENOMEM;
}

static void fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  free(state);
}

static int process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  int64_t x;
  if (len != 8) return mpx_plugin_fail_permanent(ctx, "want 8 bytes");
  memcpy(&x, in, 8);
  *(int64_t *)state += x;
  return 0;
}

static int flush(mpx_plugin_ctx_t *ctx, void *state) {
  int64_t s = *(int64_t *)state;
  *(int64_t *)state = 0;
  if (!mpx_reduce_final(ctx) && mpx_partitions(ctx) > 0) return mpx_emit_partition(ctx, 0, &s, 8);
  return mpx_emit(ctx, &s, 8);
}

static int fold(mpx_plugin_ctx_t *ctx, void *state, const void *p, size_t len) {
  int64_t x, limit = mpx_param_int(ctx, "fail_above");
  if (len != 8) return mpx_plugin_fail(ctx, "a partial of %zu bytes", len);
  memcpy(&x, p, 8);
  if (limit >= 0 && x >= limit) return mpx_plugin_fail(ctx, "refusing a partial of sum %lld", (long long)x);
  *(int64_t *)state += x;
  return 0;
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "foldfail",
    .version = "1",
    .description = "test plugin: sums int64 items; its fold refuses big partials",
    .kind = MPX_PLUGIN_REDUCE,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .init = init,
    .fini = fini,
    .process = process,
    .flush = flush,
    .fold = fold,
};
