/* A test plugin (map) over items that start with an 8-byte int64 x:
 * emits x, except that item flaky_on fails its first flaky_times tries in
 * this process (then succeeds), item fail_on fails every time, and item
 * permanent_on fails with mpx_plugin_fail_permanent (no retry can fix
 * it). Negative values switch a behaviour off. */
#include <stdint.h>
#include <string.h>

#include <mpx/plugin.h>

static const mpx_param_def_t params[] = {
    {"flaky_on", MPX_PARAM_INT, "-1", false, "fail this item its first flaky_times tries"},
    {"flaky_times", MPX_PARAM_INT, "1", false, ""},
    {"fail_on", MPX_PARAM_INT, "-1", false, "fail this item every time"},
    {"permanent_on", MPX_PARAM_INT, "-1", false, "fail this item for good"},
};

static int64_t tries; /* of flaky_on, in this process */

static int process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  (void)state;
  int64_t x;
  if (len < 8) return mpx_plugin_fail(ctx, "want 8 bytes or more, got %zu", len);
  memcpy(&x, in, 8);
  if (x == mpx_param_int(ctx, "flaky_on") && tries++ < mpx_param_int(ctx, "flaky_times"))
    return mpx_plugin_fail(ctx, "flaky %lld, try %lld", (long long)x, (long long)tries);
  if (x == mpx_param_int(ctx, "fail_on")) return mpx_plugin_fail(ctx, "refusing %lld", (long long)x);
  if (x == mpx_param_int(ctx, "permanent_on"))
    return mpx_plugin_fail_permanent(ctx, "bad input %lld", (long long)x);
  return mpx_emit(ctx, &x, 8);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "flaky",
    .version = "1",
    .description = "test plugin: fails chosen items for a while, always, or for good",
    .kind = MPX_PLUGIN_MAP,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .process = process,
};
