/* topk: a reduce that counts its items (each item whole is a key: a URL,
 * a user id...) and finally emits the k most frequent as "COUNT KEY",
 * by count descending, ties by key ascending (bytewise).
 *
 * Partials carry every key's count (format of common/counter.h): the top
 * k of a union is not the union of top ks, so nothing is cut before the
 * final step. Memory grows with the number of distinct keys. fold adds a
 * partial into the live state (merge stays, for engines before ABI 1.2).
 *
 * Partitioned (`partition_by: key`), each partition holds its own keys
 * and emits its own top k. As no key is in two partitions, the global top
 * k is among those lines: a following topk with `counted: true`, which
 * reads "COUNT KEY" items and adds COUNT to KEY, picks it. */
#include <stdbool.h>
#include <stdlib.h>

#include "counter.h"

typedef struct {
  counter_t c;
  uint64_t k;
  bool counted; /* items are "COUNT KEY" */
} topk_t;

static int topk_init(mpx_plugin_ctx_t *ctx, void **state) {
  int64_t k = mpx_param_int(ctx, "k");
  topk_t *t;
  if (k < 1) return mpx_plugin_fail(ctx, "k must be at least 1, got %lld",
                                    (long long)k);
  if ((t = malloc(sizeof *t)) == NULL) return MPX_ENOMEM;
  counter_init(&t->c);
  t->k = (uint64_t)k;
  t->counted = mpx_param_bool(ctx, "counted");
  *state = t;
  return 0;
}

static void topk_fini(mpx_plugin_ctx_t *ctx, void *state) {
  topk_t *t = state;
  (void)ctx;
  if (t == NULL) return;
  counter_free(&t->c);
  free(t);
}

static int topk_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                        size_t len) {
  topk_t *t = state;
  uint64_t n = 1;
  if (t->counted) {
    /* "COUNT KEY": decimal digits, one space, the key (any bytes). */
    const char *s = in;
    size_t i = 0;
    n = 0;
    while (i < len && s[i] >= '0' && s[i] <= '9' && i < 19) n = n * 10 + (uint64_t)(s[i++] - '0');
    if (i == 0 || i == len || s[i] != ' ')
      return mpx_plugin_fail_permanent(ctx, "counted: want \"COUNT KEY\" (COUNT "
                                       "of 1 to 19 digits, one space), got '%.*s'",
                                       (int)(len < 80 ? len : 80), s);
    in = s + i + 1;
    len -= i + 1;
  }
  int rc = counter_add(&t->c, in, len, n);
  if (rc == MPX_E2BIG) return mpx_plugin_fail(ctx, "key of %zu bytes", len);
  if (rc == MPX_EOVERFLOW)
    return mpx_plugin_fail_permanent(ctx, "the count of key '%.*s' leaves the uint64 range",
                                     (int)(len < 60 ? len : 60), (const char *)in);
  return rc;
}

static int topk_flush(mpx_plugin_ctx_t *ctx, void *state) {
  topk_t *t = state;
  int rc = mpx_reduce_final(ctx) ? counter_emit_top(&t->c, ctx, t->k)
                                 : counter_emit_flush(&t->c, ctx);
  counter_clear(&t->c);
  return rc;
}

static int topk_fold(mpx_plugin_ctx_t *ctx, void *state, const void *partial,
                     size_t len) {
  topk_t *t = state;
  int rc = counter_add_partial(&t->c, partial, len);
  return counter_fold_error(ctx, rc);
}

static int topk_merge(mpx_plugin_ctx_t *ctx, void *state, const void *a,
                      size_t alen, const void *b, size_t blen) {
  topk_t *t = state;
  counter_t c;
  int rc;
  counter_init(&c);
  if ((rc = counter_add_partial(&c, a, alen)) == 0)
    rc = counter_add_partial(&c, b, blen);
  rc = counter_fold_error(ctx, rc);
  if (rc == 0)
    rc = mpx_reduce_final(ctx) ? counter_emit_top(&c, ctx, t->k)
                               : counter_emit_partial(&c, ctx);
  counter_free(&c);
  return rc;
}

static const mpx_param_def_t topk_params[] = {
    {"k", MPX_PARAM_INT, "10", false, "how many keys to emit (at least 1)"},
    {"counted", MPX_PARAM_BOOL, "false", false,
     "items are \"COUNT KEY\" lines (a partitioned topk's): add COUNT to KEY"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "topk",
    .version = "1.1",
    .description = "the k most frequent items, as \"COUNT KEY\" lines",
    .kind = MPX_PLUGIN_REDUCE,
    .params = topk_params,
    .n_params = sizeof topk_params / sizeof topk_params[0],
    .init = topk_init,
    .fini = topk_fini,
    .process = topk_process,
    .flush = topk_flush,
    .merge = topk_merge,
    .fold = topk_fold,
};
