/* aggregate's keyed statistics: see agg.h. Open addressing with linear
 * probing, at most half full, as common/counter.c. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "parts.h"

#define HEADER 4

/* A key's slot: the high bits of its mpx_key_hash after a multiply, so
 * that the keys of one partition (equal hash % partitions) still spread
 * over the table. */
static size_t slot_of(uint64_t h, size_t cap) {
  return (size_t)(((uint32_t)h * 0x9e3779b1u) & 0xffffffffu) * cap >> 32;
}


/* "[+-]digits[.digits]" with at most d digits after the point (more only
 * when they are zeros), as a count of 10^-d. */
int agg_parse_fixed(const char *s, size_t len, int d, int64_t *out) {
  size_t i = 0;
  bool neg = false, digits = false;
  uint64_t v = 0, lim = (uint64_t)INT64_MAX;
  int frac = -1;
  if (i < len && (s[i] == '+' || s[i] == '-')) neg = s[i++] == '-';
  for (; i < len; i++) {
    if (s[i] == '.' && frac < 0) {
      frac = 0;
      continue;
    }
    if (s[i] < '0' || s[i] > '9') return -1;
    digits = true;
    if (frac >= 0 && frac++ >= d) {
      if (s[i] != '0') return -1; /* more precision than decimals */
      continue;
    }
    if (v > (lim - (uint64_t)(s[i] - '0')) / 10) return -1;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  if (!digits) return -1;
  for (int k = frac < 0 ? 0 : frac; k < d; k++) {
    if (v > lim / 10) return -1;
    v *= 10;
  }
  *out = neg ? -(int64_t)v : (int64_t)v;
  return 0;
}

int agg_parse_double(const char *s, size_t len, double *out) {
  char buf[128], *end;
  if (len == 0 || len >= sizeof buf) return -1;
  memcpy(buf, s, len);
  buf[len] = '\0';
  *out = strtod(buf, &end);
  /* strtod skips leading whitespace: the value would not be the number alone. */
  return end == buf + len && isfinite(*out) && !isspace((unsigned char)buf[0]) ? 0 : -1;
}

void agg_init(agg_t *t, size_t nv, int decimals) {
  memset(t, 0, sizeof *t);
  t->nv = nv;
  t->decimals = decimals;
}

void agg_clear(agg_t *t) {
  if (t->n) memset(t->slots, 0, t->cap * sizeof *t->slots);
  bump_free(&t->blocks);
  t->n = 0;
}

void agg_free(agg_t *t) {
  agg_clear(t);
  free(t->slots);
  agg_init(t, t->nv, t->decimals);
}

static int grow(agg_t *t) {
  size_t cap = t->cap ? t->cap * 2 : 64;
  agg_entry_t *s = calloc(cap, sizeof *s);
  if (s == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < t->cap; i++) {
    agg_entry_t *e = &t->slots[i];
    if (e->key == NULL) continue;
    size_t j = slot_of(e->hash, cap);
    while (s[j].key != NULL) j = (j + 1) & (cap - 1);
    s[j] = *e;
  }
  free(t->slots);
  t->slots = s;
  t->cap = cap;
  return 0;
}

/* The entry of key, NULL when absent; *slot is where it is or would go. */
static agg_entry_t *find(const agg_t *t, const void *key, size_t len, uint64_t h,
                         size_t *slot) {
  size_t j;
  for (j = slot_of(h, t->cap); t->slots[j].key != NULL; j = (j + 1) & (t->cap - 1)) {
    agg_entry_t *e = &t->slots[j];
    if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) return e;
  }
  *slot = j;
  return NULL;
}

/* Room for k more keys (at most half full). */
static int room(agg_t *t, size_t k) {
  while ((t->n + k) * 2 > t->cap)
    if (grow(t) != 0) return MPX_ENOMEM;
  return 0;
}

/* The entry of key (hash h: its mpx_key_hash), made (count 0) when new;
 * the table has room. */
static int lookup_hashed(agg_t *t, const void *key, size_t len, uint64_t h, agg_entry_t **out) {
  size_t j;
  if (len > UINT32_MAX) return MPX_E2BIG;
  if ((*out = find(t, key, len, h, &j)) != NULL) return 0;
  /* One block: the stats, then the key. */
  num_t *v = bump_get(&t->blocks, 3 * t->nv * sizeof *v + (len ? len : 1));
  if (v == NULL) return MPX_ENOMEM;
  char *k = (char *)(v + 3 * t->nv);
  if (len) memcpy(k, key, len);
  t->slots[j] = (agg_entry_t){k, (uint32_t)len, h, 0, v};
  t->n++;
  *out = &t->slots[j];
  return 0;
}

static int lookup(agg_t *t, const void *key, size_t len, agg_entry_t **out) {
  if (room(t, 1) != 0) return MPX_ENOMEM;
  return lookup_hashed(t, key, len, mpx_key_hash(key, len), out);
}

/* Adds (count, stats) into e: the merge of two rows' statistics. The
 * count and fixed-point sums are checked first, so an overflow changes
 * nothing. */
static int combine(const agg_t *t, agg_entry_t *e, uint64_t count, const num_t *v) {
  if (e->count == 0) {
    memcpy(e->v, v, 3 * t->nv * sizeof *v);
    e->count = count;
    return 0;
  }
  if (e->count > UINT64_MAX - count) return MPX_EOVERFLOW; /* a count of 0 would divide */
  for (size_t i = 0; t->decimals >= 0 && i < t->nv; i++) {
    int64_t s;
    if (__builtin_add_overflow(e->v[3 * i].i, v[3 * i].i, &s)) return MPX_EOVERFLOW;
  }
  for (size_t i = 0; i < t->nv; i++) {
    num_t *d = &e->v[3 * i];
    const num_t *s = &v[3 * i];
    if (t->decimals >= 0) {
      d[0].i += s[0].i;
      if (s[1].i < d[1].i) d[1].i = s[1].i;
      if (s[2].i > d[2].i) d[2].i = s[2].i;
    } else {
      d[0].d += s[0].d;
      if (s[1].d < d[1].d) d[1].d = s[1].d;
      if (s[2].d > d[2].d) d[2].d = s[2].d;
    }
  }
  e->count += count;
  return 0;
}

int agg_add_row(agg_t *t, const void *key, size_t len, const num_t *vals) {
  num_t st[3 * 64];
  agg_entry_t *e;
  int rc;
  for (size_t i = 0; i < t->nv; i++) st[3 * i] = st[3 * i + 1] = st[3 * i + 2] = vals[i];
  if ((rc = lookup(t, key, len, &e)) != 0) return rc;
  return combine(t, e, 1, st); /* a new entry never overflows */
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++, v >>= 8) p[i] = (unsigned char)v;
}

static uint64_t bits_of(num_t v) {
  uint64_t b;
  memcpy(&b, &v, sizeof b);
  return b;
}

static num_t num_of(uint64_t b) {
  num_t v;
  memcpy(&v, &b, sizeof v);
  return v;
}

/* A partial's entry, parsed. */
typedef struct {
  const unsigned char *key, *stats;
  size_t len;
  uint64_t count, h;
} pentry_t;
#define GROUP 32

/* Folds a group of parsed entries: their hashes and slots fetched first,
 * so that a big table's cache misses overlap. */
static int add_group(agg_t *t, pentry_t *g, size_t k) {
  num_t st[3 * 64];
  int rc = room(t, k);
  for (size_t i = 0; rc == 0 && i < k; i++) {
    g[i].h = mpx_key_hash(g[i].key, g[i].len);
    __builtin_prefetch(&t->slots[slot_of(g[i].h, t->cap)]);
  }
  for (size_t i = 0; rc == 0 && i < k; i++) {
    agg_entry_t *e;
    for (size_t j = 0; j < 3 * t->nv; j++) st[j] = num_of(get_le(g[i].stats + 8 * j, 8));
    if ((rc = lookup_hashed(t, g[i].key, g[i].len, g[i].h, &e)) == 0)
      rc = combine(t, e, g[i].count, st);
  }
  return rc;
}

int agg_add_partial(agg_t *t, const void *p, size_t len) {
  const unsigned char *s = p, *end = s + len;
  pentry_t g[GROUP];
  size_t k = 0;
  int rc = 0;
  if (len == 0) return 0;
  if (len < HEADER || s[0] != 'A' || s[1] != (t->decimals >= 0) ||
      get_le(s + 2, 2) != t->nv)
    return MPX_EINVAL;
  size_t entry = 12 + 24 * t->nv; /* besides the key */
  for (s += HEADER; s < end && rc == 0;) {
    if ((size_t)(end - s) < 4) return MPX_EINVAL;
    uint64_t klen = get_le(s, 4);
    if ((uint64_t)(end - s) < klen + entry) return MPX_EINVAL;
    const unsigned char *q = s + 4 + klen;
    g[k] = (pentry_t){s + 4, q + 8, (size_t)klen, get_le(q, 8), 0};
    if (g[k].count == 0) return MPX_EINVAL;
    s = q + 8 + 24 * t->nv;
    if (++k == GROUP) {
      rc = add_group(t, g, k);
      k = 0;
    }
  }
  return rc == 0 ? add_group(t, g, k) : rc;
}

static size_t entry_size(const agg_t *t, const agg_entry_t *e) {
  return 12 + (size_t)e->len + 24 * t->nv;
}

static unsigned char *put_entry(const agg_t *t, unsigned char *w, const agg_entry_t *e) {
  put_le(w, e->len, 4);
  memcpy(w + 4, e->key, e->len);
  w += 4 + e->len;
  put_le(w, e->count, 8);
  for (size_t i = 0; i < 3 * t->nv; i++) put_le(w + 8 + 8 * i, bits_of(e->v[i]), 8);
  return w + 8 + 24 * t->nv;
}

static void put_header(const agg_t *t, unsigned char *w) {
  w[0] = 'A';
  w[1] = t->decimals >= 0;
  put_le(w + 2, t->nv, 2);
}

static int by_key(const void *a, const void *b) {
  const agg_entry_t *x = *(agg_entry_t *const *)a;
  const agg_entry_t *y = *(agg_entry_t *const *)b;
  int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
  if (r != 0) return r;
  return x->len < y->len ? -1 : x->len > y->len;
}

/* The entries sorted by key, malloc'd (NULL when there are none). */
static int sorted(const agg_t *t, agg_entry_t ***out) {
  size_t k = 0;
  *out = NULL;
  if (t->n == 0) return 0;
  agg_entry_t **v = malloc(t->n * sizeof *v);
  if (v == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < t->cap; i++)
    if (t->slots[i].key != NULL) v[k++] = &t->slots[i];
  qsort(v, k, sizeof *v, by_key);
  *out = v;
  return 0;
}

static int emit_one(const agg_t *t, mpx_plugin_ctx_t *ctx) {
  agg_entry_t **v;
  size_t total = HEADER;
  int rc;
  if (t->n == 0) return mpx_emit(ctx, "", 0);
  if ((rc = sorted(t, &v)) != 0) return rc;
  for (size_t i = 0; i < t->n; i++) total += entry_size(t, v[i]);
  unsigned char *out = mpx_emit_reserve(ctx, total), *w = out;
  if (out == NULL) {
    free(v);
    return MPX_ENOMEM;
  }
  put_header(t, w);
  w += HEADER;
  for (size_t i = 0; i < t->n; i++) w = put_entry(t, w, v[i]);
  free(v);
  return mpx_emit_commit(ctx, total);
}

static int emit_partitions(const agg_t *t, mpx_plugin_ctx_t *ctx, unsigned n) {
  parts_t p;
  int rc = parts_init(&p, n, HEADER);
  uint32_t *part = malloc((t->cap ? t->cap : 1) * sizeof *part);
  if (part == NULL) rc = MPX_ENOMEM;
  for (size_t i = 0; rc == 0 && i < t->cap; i++) {
    const agg_entry_t *e = &t->slots[i];
    if (e->key == NULL) continue;
    part[i] = (uint32_t)(e->hash % n); /* its mpx_key_hash */
    parts_count(&p, part[i], entry_size(t, e));
  }
  if (rc == 0) rc = parts_layout(&p);
  for (unsigned q = 0; rc == 0 && q < n; q++)
    if (parts_used(&p, q)) put_header(t, parts_header(&p, q));
  for (size_t i = 0; rc == 0 && i < t->cap; i++)
    if (t->slots[i].key != NULL)
      put_entry(t, parts_put(&p, part[i], entry_size(t, &t->slots[i])), &t->slots[i]);
  free(part);
  if (rc != 0) {
    parts_free(&p);
    return rc;
  }
  return parts_emit(&p, ctx);
}

int agg_emit_partial(const agg_t *t, mpx_plugin_ctx_t *ctx, unsigned n) {
  return n > 0 ? emit_partitions(t, ctx, n) : emit_one(t, ctx);
}

/* v (a count of 10^-d) as decimal text with d digits after the point. */
static int put_fixed(char *w, int64_t v, int d) {
  uint64_t a = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v, p = 1;
  for (int i = 0; i < d; i++) p *= 10;
  if (d == 0) return sprintf(w, "%s%llu", v < 0 ? "-" : "", (unsigned long long)a);
  return sprintf(w, "%s%llu.%0*llu", v < 0 ? "-" : "", (unsigned long long)(a / p), d,
                 (unsigned long long)(a % p));
}

/* sum / count rounded half away from zero, in the same unit. */
static int64_t mean_fixed(int64_t sum, uint64_t count) {
  uint64_t a = sum < 0 ? (uint64_t)0 - (uint64_t)sum : (uint64_t)sum;
  uint64_t q = a / count, r = a % count;
  if (r >= count - r) q++;
  if (sum >= 0) return (int64_t)q;
  /* q is 2^63 only for INT64_MIN over one row: not negated as an int64. */
  return q > (uint64_t)INT64_MAX ? INT64_MIN : -(int64_t)q;
}

static int emit_row(const agg_t *t, mpx_plugin_ctx_t *ctx, const agg_entry_t *e, char sep) {
  /* Each number takes at most 26 bytes ("-" 19 digits "." and 18 more
   * would not fit an int64 anyway; %.17g is at most 24). */
  size_t cap = (size_t)e->len + 24 + t->nv * 4 * 48;
  char *out = mpx_emit_reserve(ctx, cap), *w = out;
  if (out == NULL) return MPX_ENOMEM;
  memcpy(w, e->key, e->len);
  w += e->len;
  w += sprintf(w, "%c%llu", sep, (unsigned long long)e->count);
  for (size_t i = 0; i < t->nv; i++) {
    const num_t *s = &e->v[3 * i];
    if (t->decimals >= 0) {
      int64_t m[4] = {s[0].i, s[1].i, s[2].i, mean_fixed(s[0].i, e->count)};
      for (int j = 0; j < 4; j++) {
        *w++ = sep;
        w += put_fixed(w, m[j], t->decimals);
      }
    } else {
      double m[4] = {s[0].d, s[1].d, s[2].d, s[0].d / (double)e->count};
      for (int j = 0; j < 4; j++) w += sprintf(w, "%c%.17g", sep, m[j]);
    }
  }
  return mpx_emit_commit(ctx, (size_t)(w - out));
}

int agg_emit_final(const agg_t *t, mpx_plugin_ctx_t *ctx, char sep) {
  agg_entry_t **v;
  int rc;
  if ((rc = sorted(t, &v)) != 0) return rc;
  for (size_t i = 0; i < t->n && rc == 0; i++) rc = emit_row(t, ctx, v[i], sep);
  free(v);
  return rc;
}
