/* A test plugin (map) over items that start with an 8-byte int64 x (and
 * may be longer: the rest is ignored): emits x (8 bytes), except that
 * it dies of SIGSEGV on items x with x % crash_mod == crash_rem, sleeps
 * forever on item hang_on, fails with a message on item fail_on, and
 * sleeps delay_ms per item. Negative values switch a behaviour off. */
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mpx/plugin.h>

static const mpx_param_def_t params[] = {
    {"crash_mod", MPX_PARAM_INT, "-1", false, "crash when x % crash_mod == crash_rem"},
    {"crash_rem", MPX_PARAM_INT, "0", false, ""},
    {"hang_on", MPX_PARAM_INT, "-1", false, "hang on this item"},
    {"fail_on", MPX_PARAM_INT, "-1", false, "fail this item with a message"},
    {"delay_ms", MPX_PARAM_INT, "0", false, "milliseconds of sleep per item"},
};

static int process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  (void)state;
  int64_t x;
  if (len < 8) return mpx_plugin_fail(ctx, "want 8 bytes or more, got %zu", len);
  memcpy(&x, in, 8);
  int64_t mod = mpx_param_int(ctx, "crash_mod");
  if (mod > 0 && x % mod == mpx_param_int(ctx, "crash_rem")) {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
  if (x == mpx_param_int(ctx, "hang_on"))
    for (;;) pause();
  if (x == mpx_param_int(ctx, "fail_on")) return mpx_plugin_fail(ctx, "refusing %lld", (long long)x);
  int64_t d = mpx_param_int(ctx, "delay_ms");
  if (d > 0) {
    struct timespec ts = {d / 1000, (d % 1000) * 1000000L};
    nanosleep(&ts, NULL);
  }
  return mpx_emit(ctx, &x, 8);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "crashy",
    .version = "1",
    .description = "test plugin: crashes, hangs or fails on chosen items",
    .kind = MPX_PLUGIN_MAP,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .process = process,
};
