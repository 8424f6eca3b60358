/* fill (bench): a source of `count` items of `size` bytes, each written in
 * place with mpx_emit_reserve (so into the next stage's arena: zero-copy)
 * by one memcpy from a pattern made at init, its first 8 bytes then set
 * to the item's index. What a producer that has its data at hand costs:
 * one write of every byte. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <mpx/plugin.h>

typedef struct {
  int64_t count, next;
  size_t size;
  unsigned char *pattern;
} fill_t;

static int fill_init(mpx_plugin_ctx_t *ctx, void **state) {
  int64_t size = mpx_param_int(ctx, "size");
  if (size < 8 || size > ((int64_t)1 << 30)) return mpx_plugin_fail(ctx, "size must be 8 B .. 1 GiB");
  fill_t *f = calloc(1, sizeof *f);
  if (f == NULL || (f->pattern = malloc((size_t)size)) == NULL) {
    free(f);
    return MPX_ENOMEM;
  }
  f->size = (size_t)size;
  f->count = mpx_param_int(ctx, "count");
  uint64_t x = 88172645463325252u; /* xorshift64 */
  for (size_t i = 0; i < f->size; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    f->pattern[i] = (unsigned char)x;
  }
  *state = f;
  return 0;
}

static void fill_fini(mpx_plugin_ctx_t *ctx, void *state) {
  fill_t *f = state;
  (void)ctx;
  if (f) free(f->pattern);
  free(f);
}

static int fill_generate(mpx_plugin_ctx_t *ctx, void *state) {
  fill_t *f = state;
  for (int n = 0; n < 16 && f->next < f->count; n++, f->next++) {
    unsigned char *p = mpx_emit_reserve(ctx, f->size);
    if (p == NULL) return MPX_ENOMEM;
    memcpy(p, f->pattern, f->size);
    memcpy(p, &f->next, 8);
    int rc = mpx_emit_commit(ctx, f->size);
    if (rc != 0) return rc;
  }
  return f->next < f->count ? 1 : 0;
}

static uint64_t fill_size_hint(mpx_plugin_ctx_t *ctx, void *state) {
  fill_t *f = state;
  (void)ctx;
  return (uint64_t)(f->count - f->next);
}

static const mpx_param_def_t fill_params[] = {
    {"count", MPX_PARAM_INT, "4096", false, "items"},
    {"size", MPX_PARAM_INT, "1048576", false, "bytes per item"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "fill",
    .version = "1",
    .description = "bench: count items of size bytes, written in place",
    .kind = MPX_PLUGIN_SOURCE,
    .params = fill_params,
    .n_params = sizeof fill_params / sizeof fill_params[0],
    .init = fill_init,
    .fini = fill_fini,
    .generate = fill_generate,
    .size_hint = fill_size_hint,
};
