/* aggregate's state: a hash map from a key (bytes) to its row count and,
 * per value field, the sum, min and max; its partial format and its final
 * output.
 *
 * Numbers are either exact fixed-point (decimals >= 0: int64 counts of
 * 10^-decimals, so sums do not depend on the order of summation) or
 * doubles (decimals -1).
 *
 * Partial format (read only by aggregate; zero bytes is the empty
 * partial):
 *   header: 'A', u8 mode (0 doubles, 1 fixed-point), u16 LE number of
 *           value fields (nv);
 *   entries: u32 LE key length, the key, u64 LE row count, then per value
 *           field its sum, min and max, 8 bytes LE each (an int64, or a
 *           double's bits).
 * Entries are sorted by key (bytewise) in a plain partial, canonical
 * bytes; in a partitioned stage's per-partition partials they come in
 * table order.
 *
 * Final output, one item per key, sorted by key bytewise:
 *   KEY SEP COUNT (SEP SUM SEP MIN SEP MAX SEP MEAN) per value field
 * fixed-point numbers with exactly `decimals` digits after a '.' (none
 * for 0), the mean rounded half away from zero, never "-0"; doubles as
 * %.17g, the mean sum / count. */
#ifndef MPX_PLUGINS_AGG_H
#define MPX_PLUGINS_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <mpx/plugin.h>

#include "bump.h"

typedef union {
  int64_t i;
  double d;
} num_t;

typedef struct {
  char *key; /* NULL: an empty slot; the key shares one block with v */
  uint32_t len;
  uint64_t hash; /* mpx_key_hash of the key: its slot, its partition */
  uint64_t count;
  num_t *v; /* sum, min, max per value field */
} agg_entry_t;

typedef struct {
  agg_entry_t *slots;
  size_t cap, n;
  size_t nv;
  int decimals; /* -1: doubles */
  bump_t blocks; /* where the entries' blocks (stats, then key) live */
} agg_t;

/* A value's text [s, s+len) as a number, 0 or -1 when it is not one.
 * Fixed point: "[+-]digits[.digits]" with at most d digits after the
 * point (more only when they are zeros), as a count of 10^-d in int64.
 * Double: a finite number as strtod reads it, the whole text, no
 * whitespace around it, less than 128 bytes. */
int agg_parse_fixed(const char *s, size_t len, int d, int64_t *out);
int agg_parse_double(const char *s, size_t len, double *out);

void agg_init(agg_t *t, size_t nv, int decimals);
void agg_free(agg_t *t);
void agg_clear(agg_t *t);
/* Adds one row (nv values). 0, MPX_ENOMEM, MPX_E2BIG (a key of 4 GiB),
 * MPX_EOVERFLOW (a fixed-point sum leaves int64; the state is unchanged). */
int agg_add_row(agg_t *t, const void *key, size_t len, const num_t *vals);
/* Adds a partial. 0, MPX_EINVAL (malformed, or made with other settings),
 * MPX_ENOMEM, MPX_EOVERFLOW (a key's count would leave uint64 or its
 * fixed-point sum int64; that key is unchanged, the entries before it are
 * in). */
int agg_add_partial(agg_t *t, const void *p, size_t len);
/* The non-final flush: one sorted partial, or with n > 0 partitions one
 * partial per partition that has keys (mpx_emit_partition). */
int agg_emit_partial(const agg_t *t, mpx_plugin_ctx_t *ctx, unsigned n);
/* The final output, fields separated by sep. */
int agg_emit_final(const agg_t *t, mpx_plugin_ctx_t *ctx, char sep);

#endif /* MPX_PLUGINS_AGG_H */
