/* A test plugin (source) that makes big items in place: `count` items of
 * `size` bytes, item x filled by blob_fill(x) (blob.h, the test's oracle)
 * and then its first 8 bytes set to x, each written with
 * mpx_emit_reserve, so that a worker stage after it receives them in its
 * arena without a copy. */
#include <stdint.h>
#include <string.h>

#include <mpx/plugin.h>

#include "blob.h"

typedef struct {
  int64_t next;
} blobsrc_t;

static const mpx_param_def_t params[] = {
    {"count", MPX_PARAM_INT, "16", false, "items"},
    {"size", MPX_PARAM_INT, "1048576", false, "bytes per item (at least 8)"},
};

static int init(mpx_plugin_ctx_t *ctx, void **state) {
  static blobsrc_t one; /* a source has one instance */
  if (mpx_param_int(ctx, "size") < 8) return mpx_plugin_fail(ctx, "size below 8");
  one.next = 0;
  *state = &one;
  return 0;
}

static int generate(mpx_plugin_ctx_t *ctx, void *state) {
  blobsrc_t *b = state;
  int64_t count = mpx_param_int(ctx, "count"), size = mpx_param_int(ctx, "size");
  if (b->next >= count) return 0;
  unsigned char *p = mpx_emit_reserve(ctx, (size_t)size);
  if (p == NULL) return MPX_ENOMEM;
  blob_fill(p, (size_t)size, (uint64_t)b->next);
  memcpy(p, &b->next, 8);
  int rc = mpx_emit_commit(ctx, (size_t)size);
  b->next++;
  return rc != 0 ? rc : b->next < count;
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "blobsrc",
    .version = "1",
    .description = "test plugin: count items of size bytes, written in place",
    .kind = MPX_PLUGIN_SOURCE,
    .params = params,
    .n_params = sizeof params / sizeof params[0],
    .init = init,
    .generate = generate,
};
