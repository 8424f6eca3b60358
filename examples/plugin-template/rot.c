/* rot: a map that rotates the ASCII letters of each item by `shift`
 * places in the alphabet (the Caesar cipher; shift 13 is rot13, its own
 * inverse). Everything else passes through unchanged.
 *
 * The template for a plugin of your own: a parameter declared in the
 * descriptor and checked in init, per-instance state, zero-copy output.
 * See README.md here and docs/plugins.md in the mpx sources. */
#include <stdint.h>
#include <stdlib.h>

#include <mpx/plugin.h>

typedef struct {
  int shift; /* 0..25 */
} rot_t;

static int rot_init(mpx_plugin_ctx_t *ctx, void **state) {
  int64_t shift = mpx_param_int(ctx, "shift");
  rot_t *r;
  if (shift < -25 || shift > 25)
    return mpx_plugin_fail(ctx, "shift must be between -25 and 25, got %lld",
                           (long long)shift);
  if ((r = malloc(sizeof *r)) == NULL) return MPX_ENOMEM;
  r->shift = (int)((shift + 26) % 26);
  *state = r;
  return 0;
}

static void rot_fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  free(state);
}

static int rot_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                       size_t len) {
  const rot_t *r = state;
  const unsigned char *s = in;
  /* Written in place in the output, then committed: no copy. */
  unsigned char *out = mpx_emit_reserve(ctx, len);
  if (out == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    if (c >= 'a' && c <= 'z') c = (unsigned char)('a' + (c - 'a' + r->shift) % 26);
    else if (c >= 'A' && c <= 'Z') c = (unsigned char)('A' + (c - 'A' + r->shift) % 26);
    out[i] = c;
  }
  return mpx_emit_commit(ctx, len);
}

static const mpx_param_def_t rot_params[] = {
    /* name   type           default required description */
    {"shift", MPX_PARAM_INT, "13", false, "places to rotate letters by (-25..25)"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "rot", /* the file must be mpx_task_rot.so */
    .version = "1.0",
    .description = "rotate ASCII letters by `shift` places (rot13 by default)",
    .kind = MPX_PLUGIN_MAP,
    .params = rot_params,
    .n_params = sizeof rot_params / sizeof rot_params[0],
    .init = rot_init,
    .fini = rot_fini,
    .process = rot_process,
};
