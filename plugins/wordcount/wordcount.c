/* wordcount: a reduce that counts words.
 *
 * A word is a maximal run of ASCII letters, digits and apostrophes, with
 * its leading and trailing apostrophes removed ("'tis" -> "tis", "don't"
 * stays, "rock'n'roll" stays); a run of apostrophes alone is no word.
 * Every other byte separates words (so UTF-8 letters beyond ASCII do
 * too). Case is kept: "The" and "the" are two words.
 *
 * Partials are the counts, in the format of common/counter.h: one per
 * flush, or in a partitioned stage one per partition with words
 * (mpx_emit_partition). fold adds a partial into the live state; merge
 * (for engines before ABI 1.2) adds two into a fresh one. The final output
 * is one item per word, "COUNT WORD", by count descending, then word
 * ascending (bytewise): in a partitioned stage each partition emits its
 * own words so, one partition after another. */
#include <stdlib.h>

#include "counter.h"

static int is_word(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '\'';
}

static int wc_init(mpx_plugin_ctx_t *ctx, void **state) {
  counter_t *c = malloc(sizeof *c);
  (void)ctx;
  if (c == NULL) return MPX_ENOMEM;
  counter_init(c);
  *state = c;
  return 0;
}

static void wc_fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  if (state == NULL) return;
  counter_free(state);
  free(state);
}

static int wc_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                      size_t len) {
  const unsigned char *p = in, *end = p + len;
  counter_item_t words[COUNTER_MANY];
  size_t k = 0;
  int rc = 0;
  (void)ctx;
  while (p < end && rc == 0) {
    while (p < end && !is_word(*p)) p++;
    const unsigned char *w = p;
    while (p < end && is_word(*p)) p++;
    const unsigned char *e = p;
    while (w < e && *w == '\'') w++;
    while (e > w && e[-1] == '\'') e--;
    if (e > w) words[k++] = (counter_item_t){w, (size_t)(e - w), 1};
    if (k == COUNTER_MANY) {
      rc = counter_add_many(state, words, k);
      k = 0;
    }
  }
  /* Only running out of memory fails here, and then the words before the
   * failing one stay counted (as they did one by one): out of memory, the
   * state cannot be kept as it was. */
  return rc == 0 ? counter_add_many(state, words, k) : rc;
}

static int wc_flush(mpx_plugin_ctx_t *ctx, void *state) {
  int rc = mpx_reduce_final(ctx) ? counter_emit_top(state, ctx, UINT64_MAX)
                                 : counter_emit_flush(state, ctx);
  counter_clear(state);
  return rc;
}

static int wc_fold(mpx_plugin_ctx_t *ctx, void *state, const void *partial,
                   size_t len) {
  int rc = counter_add_partial(state, partial, len);
  return counter_fold_error(ctx, rc);
}

static int wc_merge(mpx_plugin_ctx_t *ctx, void *state, const void *a,
                    size_t alen, const void *b, size_t blen) {
  counter_t c;
  int rc;
  (void)state;
  counter_init(&c);
  if ((rc = counter_add_partial(&c, a, alen)) == 0)
    rc = counter_add_partial(&c, b, blen);
  rc = counter_fold_error(ctx, rc);
  if (rc == 0)
    rc = mpx_reduce_final(ctx) ? counter_emit_top(&c, ctx, UINT64_MAX)
                               : counter_emit_partial(&c, ctx);
  counter_free(&c);
  return rc;
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "wordcount",
    .version = "1.1",
    .description = "count the words of the text items; emits \"COUNT WORD\" "
                   "lines, most frequent first",
    .kind = MPX_PLUGIN_REDUCE,
    .init = wc_init,
    .fini = wc_fini,
    .process = wc_process,
    .flush = wc_flush,
    .merge = wc_merge,
    .fold = wc_fold,
};
