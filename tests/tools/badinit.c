/* A test plugin (map) whose init misbehaves as its `init` parameter says:
 * "ok" starts, "fail" fails with a message, "hang" never returns, "crash"
 * dies of SIGSEGV, "exit" ends the process with status 7. process passes
 * items through. For the init probe (core/pipeline/plugin_probe.c). */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx/plugin.h>

static const mpx_param_def_t params[] = {
    {"init", MPX_PARAM_STRING, "ok", false, "ok, fail, hang, crash or exit"},
};

static int init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *how = mpx_param_str(ctx, "init");
  (void)state;
  if (strcmp(how, "fail") == 0) return mpx_plugin_fail(ctx, "badinit refuses to start");
  if (strcmp(how, "hang") == 0)
    for (;;) pause();
  if (strcmp(how, "crash") == 0) {
    signal(SIGSEGV, SIG_DFL);
    raise(SIGSEGV);
  }
  if (strcmp(how, "exit") == 0) exit(7);
  return 0;
}

static int process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  (void)state;
  return mpx_emit(ctx, in, len);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "badinit",
    .version = "1",
    .description = "test plugin: an init that fails, hangs, crashes or exits",
    .kind = MPX_PLUGIN_MAP,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .init = init,
    .process = process,
};
