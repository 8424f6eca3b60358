/* A test plugin (map) that makes big items: each 8-byte int64 x in, one
 * item of `size` bytes out, filled from x by a 64-bit LCG (blob_fill in
 * blob.h, which the test uses as its oracle). With range 0..n it turns a
 * few bytes of input into n * size bytes flowing through the pipeline. */
#include <stdint.h>
#include <string.h>

#include <mpx/plugin.h>

#include "blob.h"

static const mpx_param_def_t params[] = {
    {"size", MPX_PARAM_INT, "1048576", false, "bytes per output item"},
};

static int process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  (void)state;
  int64_t x, size = mpx_param_int(ctx, "size");
  if (len != 8) return mpx_plugin_fail(ctx, "want 8 bytes, got %zu", len);
  if (size < 0 || size > ((int64_t)1 << 30)) return mpx_plugin_fail(ctx, "bad size");
  memcpy(&x, in, 8);
  unsigned char *out = mpx_emit_reserve(ctx, (size_t)size);
  if (out == NULL) return MPX_ENOMEM;
  blob_fill(out, (size_t)size, (uint64_t)x);
  return mpx_emit_commit(ctx, (size_t)size);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "blob",
    .version = "1",
    .description = "test plugin: each int64 x -> `size` bytes made from x",
    .kind = MPX_PLUGIN_MAP,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .process = process,
};
