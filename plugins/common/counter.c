/* A counting hash map for the reduce plugins: see counter.h. Open
 * addressing with linear probing, at most half full. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bump.h"
#include "counter.h"
#include "parts.h"

static const unsigned char *key_of(const counter_entry_t *e) {
  return e->len1 - 1 <= COUNTER_INLINE ? e->k.in : e->k.out;
}

/* The slot of hash h: its high bits after a multiply, so that keys of
 * one partition (equal h % partitions) still spread over the table. */
static size_t slot_of(uint32_t h, unsigned bits) {
  return (size_t)((uint32_t)(h * 0x9e3779b1u) >> (32 - bits));
}

static unsigned char *arena_put(counter_t *c, const void *key, size_t len) {
  unsigned char *p = bump_get(&c->keys, len);
  if (p != NULL) memcpy(p, key, len);
  return p;
}

void counter_init(counter_t *c) { memset(c, 0, sizeof *c); }

void counter_clear(counter_t *c) {
  if (c->n) memset(c->slots, 0, c->cap * sizeof *c->slots);
  bump_free(&c->keys);
  c->n = 0;
}

void counter_free(counter_t *c) {
  counter_clear(c);
  free(c->slots);
  counter_init(c);
}

static int grow(counter_t *c) {
  unsigned bits = c->cap ? c->bits + 1 : 6;
  size_t cap = (size_t)1 << bits;
  counter_entry_t *s = calloc(cap, sizeof *s);
  if (s == NULL || bits > 31) {
    free(s);
    return MPX_ENOMEM;
  }
  for (size_t i = 0; i < c->cap; i++) {
    counter_entry_t *e = &c->slots[i];
    if (e->len1 == 0) continue;
    size_t j = slot_of(e->hash, bits);
    while (s[j].len1 != 0) j = (j + 1) & (cap - 1);
    s[j] = *e;
  }
  free(c->slots);
  c->slots = s;
  c->cap = cap;
  c->bits = bits;
  return 0;
}

/* count[key] += n for a key whose hash is h; the table has room. */
static int insert(counter_t *c, const void *key, size_t len, uint32_t h, uint64_t n) {
  size_t j;
  for (j = slot_of(h, c->bits); c->slots[j].len1 != 0; j = (j + 1) & (c->cap - 1)) {
    counter_entry_t *e = &c->slots[j];
    if (e->hash == h && e->len1 == len + 1 && memcmp(key_of(e), key, len) == 0) {
      if (e->count > UINT64_MAX - n) return MPX_EOVERFLOW; /* never wraps */
      e->count += n;
      return 0;
    }
  }
  counter_entry_t *e = &c->slots[j];
  if (len <= COUNTER_INLINE) {
    memcpy(e->k.in, key, len);
  } else if ((e->k.out = arena_put(c, key, len)) == NULL) {
    return MPX_ENOMEM;
  }
  e->count = n;
  e->hash = h;
  e->len1 = (uint32_t)len + 1;
  c->n++;
  return 0;
}

/* Room for k more keys (at most half full). */
static int room(counter_t *c, size_t k) {
  while ((c->n + k) * 2 > c->cap)
    if (grow(c) != 0) return MPX_ENOMEM;
  return 0;
}

int counter_add(counter_t *c, const void *key, size_t len, uint64_t n) {
  if (len >= UINT32_MAX - 1) return MPX_E2BIG;
  if (room(c, 1) != 0) return MPX_ENOMEM;
  return insert(c, key, len, mpx_key_hash(key, len), n);
}

int counter_add_many(counter_t *c, const counter_item_t *it, size_t k) {
  uint32_t h[COUNTER_MANY];
  int rc = 0;
  if (k > COUNTER_MANY) return MPX_E2BIG;
  for (size_t i = 0; i < k; i++)
    if (it[i].len >= UINT32_MAX - 1) return MPX_E2BIG;
  if (room(c, k) != 0) return MPX_ENOMEM;
  /* The hashes and the slots' cache lines first, so that the misses of a
   * table bigger than the cache overlap instead of coming one by one. */
  for (size_t i = 0; i < k; i++) {
    h[i] = mpx_key_hash(it[i].key, it[i].len);
    __builtin_prefetch(&c->slots[slot_of(h[i], c->bits)]);
  }
  for (size_t i = 0; i < k && rc == 0; i++) rc = insert(c, it[i].key, it[i].len, h[i], it[i].n);
  return rc;
}

static uint64_t get_le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

static void put_le(unsigned char *p, uint64_t v, int n) {
  for (int i = 0; i < n; i++, v >>= 8) p[i] = (unsigned char)v;
}

int counter_add_partial(counter_t *c, const void *p, size_t len) {
  const unsigned char *s = p, *end = s + len;
  counter_item_t it[COUNTER_MANY];
  size_t k = 0;
  int rc = 0;
  while (s < end && rc == 0) {
    if (end - s < 4) return MPX_EINVAL;
    uint64_t klen = get_le(s, 4);
    s += 4;
    if ((uint64_t)(end - s) < klen + 8) return MPX_EINVAL;
    it[k++] = (counter_item_t){s, (size_t)klen, get_le(s + klen, 8)};
    s += klen + 8;
    if (k == COUNTER_MANY) {
      rc = counter_add_many(c, it, k);
      k = 0;
    }
  }
  return rc == 0 ? counter_add_many(c, it, k) : rc;
}

/* Bytewise, a prefix before the longer key. */
static int by_key(const void *a, const void *b) {
  const counter_entry_t *x = a, *y = b;
  uint32_t xl = x->len1 - 1, yl = y->len1 - 1;
  int r = memcmp(key_of(x), key_of(y), xl < yl ? xl : yl);
  if (r != 0) return r;
  return xl < yl ? -1 : xl > yl;
}

static int by_count(const void *a, const void *b) {
  const counter_entry_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return by_key(a, b);
}

/* Copies of the entries in order, malloc'd (NULL with n 0: none): sorted
 * in place, a short key travelling with its entry, no pointer chased. */
static int sorted(const counter_t *c, int (*cmp)(const void *, const void *),
                  counter_entry_t **out) {
  counter_entry_t *v = NULL;
  size_t k = 0;
  *out = NULL;
  if (c->n == 0) return 0;
  if ((v = malloc(c->n * sizeof *v)) == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i].len1 != 0) v[k++] = c->slots[i];
  qsort(v, k, sizeof *v, cmp);
  *out = v;
  return 0;
}

int counter_emit_partial(const counter_t *c, mpx_plugin_ctx_t *ctx) {
  counter_entry_t *v;
  size_t total = 0;
  int rc;
  if ((rc = sorted(c, by_key, &v)) != 0) return rc;
  for (size_t i = 0; i < c->n; i++) total += 11 + (size_t)v[i].len1;
  unsigned char *out = mpx_emit_reserve(ctx, total), *p = out;
  if (out == NULL) {
    free(v);
    return MPX_ENOMEM;
  }
  for (size_t i = 0; i < c->n; i++) {
    size_t len = v[i].len1 - 1;
    put_le(p, len, 4);
    memcpy(p + 4, key_of(&v[i]), len);
    put_le(p + 4 + len, v[i].count, 8);
    p += 12 + len;
  }
  free(v);
  return mpx_emit_commit(ctx, total);
}

int counter_emit_top(const counter_t *c, mpx_plugin_ctx_t *ctx, uint64_t k) {
  counter_entry_t *v;
  int rc;
  if ((rc = sorted(c, by_count, &v)) != 0) return rc;
  for (size_t i = 0; i < c->n && i < k && rc == 0; i++) {
    char num[24];
    size_t len = v[i].len1 - 1;
    int n = snprintf(num, sizeof num, "%llu ", (unsigned long long)v[i].count);
    char *out = mpx_emit_reserve(ctx, (size_t)n + len);
    if (out == NULL) {
      rc = MPX_ENOMEM;
      break;
    }
    memcpy(out, num, (size_t)n);
    memcpy(out + n, key_of(&v[i]), len);
    rc = mpx_emit_commit(ctx, (size_t)n + len);
  }
  free(v);
  return rc;
}

int counter_emit_partitions(const counter_t *c, mpx_plugin_ctx_t *ctx, unsigned n) {
  parts_t p;
  int rc = parts_init(&p, n, 0);
  for (size_t i = 0; rc == 0 && i < c->cap; i++)
    if (c->slots[i].len1 != 0) parts_count(&p, c->slots[i].hash % n, 11 + (size_t)c->slots[i].len1);
  if (rc == 0) rc = parts_layout(&p);
  for (size_t i = 0; rc == 0 && i < c->cap; i++) {
    const counter_entry_t *e = &c->slots[i];
    if (e->len1 == 0) continue;
    size_t len = e->len1 - 1;
    unsigned char *w = parts_put(&p, e->hash % n, 12 + len); /* hash: its mpx_key_hash */
    put_le(w, len, 4);
    memcpy(w + 4, key_of(e), len);
    put_le(w + 4 + len, e->count, 8);
  }
  if (rc != 0) {
    parts_free(&p);
    return rc;
  }
  return parts_emit(&p, ctx);
}

int counter_fold_error(mpx_plugin_ctx_t *ctx, int rc) {
  if (rc == MPX_EINVAL) return mpx_plugin_fail(ctx, "malformed partial");
  if (rc == MPX_EOVERFLOW) return mpx_plugin_fail(ctx, "a count leaves the uint64 range");
  return rc;
}

int counter_emit_flush(const counter_t *c, mpx_plugin_ctx_t *ctx) {
  unsigned n = mpx_partitions(ctx);
  return n > 0 ? counter_emit_partitions(c, ctx, n) : counter_emit_partial(c, ctx);
}
