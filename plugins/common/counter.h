/* A counting hash map (byte-string key -> uint64 count) shared by the
 * reduce plugins wordcount and topk, with their partial-result format
 * and their final output.
 *
 * Partial format (opaque to mpx, read only by these plugins): the entries
 * sorted by key (bytewise, a prefix before the longer key; in any order
 * in a partitioned stage's partials), each
 *   u32 key length (little-endian), the key bytes, u64 count (LE).
 * No header: zero bytes is the empty partial. Sorting makes the encoding
 * canonical, so equal maps give equal bytes whatever order they were
 * built in.
 *
 * Final output: one item per key, "COUNT KEY" (decimal count, a space,
 * the key's bytes), by count descending, then key ascending. */
#ifndef MPX_PLUGINS_COUNTER_H
#define MPX_PLUGINS_COUNTER_H

#include <stddef.h>
#include <stdint.h>
#include <mpx/plugin.h>

#include "bump.h"

/* A key of up to COUNTER_INLINE bytes lives in its slot: a lookup then
 * touches one cache line. Longer keys live in the counter's arena. */
#define COUNTER_INLINE 16

typedef struct {
  uint64_t count;
  uint32_t hash; /* mpx_key_hash of the key: its partition, its slot */
  uint32_t len1; /* the key's length + 1; 0: an empty slot */
  union {
    unsigned char in[COUNTER_INLINE];
    unsigned char *out;
  } k;
} counter_entry_t;

typedef struct {
  counter_entry_t *slots;
  size_t cap;    /* a power of two (1 << bits), or 0 */
  unsigned bits;
  size_t n;
  bump_t keys;   /* where the long keys live */
} counter_t;

void counter_init(counter_t *c);
void counter_free(counter_t *c);
/* Forgets every key, keeps the table. */
void counter_clear(counter_t *c);
/* count[key] += n. 0, MPX_ENOMEM, MPX_E2BIG (a key of 4 GiB - 1 or more),
 * MPX_EOVERFLOW (the count would leave uint64; it is left as it was). */
int counter_add(counter_t *c, const void *key, size_t len, uint64_t n);
/* A key and what to add to its count, for counter_add_many. */
typedef struct {
  const void *key;
  size_t len;
  uint64_t n;
} counter_item_t;
#define COUNTER_MANY 32
/* counter_add for each of k <= COUNTER_MANY items, faster than one by one
 * on a big table (their slots are fetched together). Errors as
 * counter_add; the items before a failing one are added. */
int counter_add_many(counter_t *c, const counter_item_t *it, size_t k);
/* Adds every entry of a partial. 0, MPX_EINVAL (malformed), MPX_ENOMEM,
 * MPX_EOVERFLOW (as counter_add). On failure the entries before the bad
 * one are in. */
int counter_add_partial(counter_t *c, const void *p, size_t len);
/* A fold's or merge's rc from counter_add_partial, with the reason said
 * (mpx_plugin_fail) for a malformed partial or an overflowing count. */
int counter_fold_error(mpx_plugin_ctx_t *ctx, int rc);
/* Emits the partial of c as one item. */
int counter_emit_partial(const counter_t *c, mpx_plugin_ctx_t *ctx);
/* For a partitioned stage (n = mpx_partitions(ctx) > 0): one partial per
 * partition that has keys, each holding exactly the keys k with
 * mpx_key_hash(k) % n == p, sent with mpx_emit_partition. These are not
 * sorted (a fold does not need it, and a flush of millions of keys would
 * pay for it): the entries come in table order. */
int counter_emit_partitions(const counter_t *c, mpx_plugin_ctx_t *ctx, unsigned n);
/* The non-final flush of wordcount and topk: counter_emit_partitions when
 * the stage is partitioned, else counter_emit_partial. */
int counter_emit_flush(const counter_t *c, mpx_plugin_ctx_t *ctx);
/* Emits the final output: the first k keys (k = UINT64_MAX: all). */
int counter_emit_top(const counter_t *c, mpx_plugin_ctx_t *ctx, uint64_t k);

#endif /* MPX_PLUGINS_COUNTER_H */
