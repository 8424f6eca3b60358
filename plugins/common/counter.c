/* A counting hash map for the reduce plugins: see counter.h. Open
 * addressing with linear probing, at most half full. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "counter.h"

static uint64_t hash_bytes(const void *p, size_t n) {
  const unsigned char *s = p;
  uint64_t h = 0xcbf29ce484222325u; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * 0x100000001b3u;
  return h ^ (h >> 29);
}

void counter_init(counter_t *c) { memset(c, 0, sizeof *c); }

void counter_clear(counter_t *c) {
  for (size_t i = 0; i < c->cap; i++) {
    free(c->slots[i].key);
    c->slots[i].key = NULL;
  }
  c->n = 0;
}

void counter_free(counter_t *c) {
  counter_clear(c);
  free(c->slots);
  counter_init(c);
}

static int grow(counter_t *c) {
  size_t cap = c->cap ? c->cap * 2 : 64;
  counter_entry_t *s = calloc(cap, sizeof *s);
  if (s == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < c->cap; i++) {
    counter_entry_t *e = &c->slots[i];
    if (e->key == NULL) continue;
    size_t j = (size_t)e->hash & (cap - 1);
    while (s[j].key != NULL) j = (j + 1) & (cap - 1);
    s[j] = *e;
  }
  free(c->slots);
  c->slots = s;
  c->cap = cap;
  return 0;
}

int counter_add(counter_t *c, const void *key, size_t len, uint64_t n) {
  uint64_t h = hash_bytes(key, len);
  size_t j;
  if (len > UINT32_MAX) return MPX_E2BIG;
  if ((c->n + 1) * 2 > c->cap && grow(c) != 0) return MPX_ENOMEM;
  for (j = (size_t)h & (c->cap - 1); c->slots[j].key != NULL;
       j = (j + 1) & (c->cap - 1)) {
    counter_entry_t *e = &c->slots[j];
    if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0) {
      e->count += n;
      return 0;
    }
  }
  char *k = malloc(len ? len : 1);
  if (k == NULL) return MPX_ENOMEM;
  if (len) memcpy(k, key, len);
  c->slots[j] = (counter_entry_t){k, (uint32_t)len, h, n};
  c->n++;
  return 0;
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
  int rc;
  while (s < end) {
    if (end - s < 4) return MPX_EINVAL;
    uint64_t klen = get_le(s, 4);
    s += 4;
    if ((uint64_t)(end - s) < klen + 8) return MPX_EINVAL;
    if ((rc = counter_add(c, s, (size_t)klen, get_le(s + klen, 8))) != 0)
      return rc;
    s += klen + 8;
  }
  return 0;
}

static int by_key(const void *a, const void *b) {
  const counter_entry_t *x = *(counter_entry_t *const *)a;
  const counter_entry_t *y = *(counter_entry_t *const *)b;
  int r = memcmp(x->key, y->key, x->len < y->len ? x->len : y->len);
  if (r != 0) return r;
  return x->len < y->len ? -1 : x->len > y->len;
}

static int by_count(const void *a, const void *b) {
  const counter_entry_t *x = *(counter_entry_t *const *)a;
  const counter_entry_t *y = *(counter_entry_t *const *)b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return by_key(a, b);
}

/* The entries in order, malloc'd (NULL with n 0: none). */
static int sorted(const counter_t *c, int (*cmp)(const void *, const void *),
                  counter_entry_t ***out) {
  counter_entry_t **v = NULL;
  size_t k = 0;
  *out = NULL;
  if (c->n == 0) return 0;
  if ((v = malloc(c->n * sizeof *v)) == NULL) return MPX_ENOMEM;
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i].key != NULL) v[k++] = &c->slots[i];
  qsort(v, k, sizeof *v, cmp);
  *out = v;
  return 0;
}

int counter_emit_partial(const counter_t *c, mpx_plugin_ctx_t *ctx) {
  counter_entry_t **v;
  size_t total = 0;
  int rc;
  if ((rc = sorted(c, by_key, &v)) != 0) return rc;
  for (size_t i = 0; i < c->n; i++) total += 12 + (size_t)v[i]->len;
  unsigned char *out = mpx_emit_reserve(ctx, total), *p = out;
  if (out == NULL) {
    free(v);
    return MPX_ENOMEM;
  }
  for (size_t i = 0; i < c->n; i++) {
    put_le(p, v[i]->len, 4);
    memcpy(p + 4, v[i]->key, v[i]->len);
    put_le(p + 4 + v[i]->len, v[i]->count, 8);
    p += 12 + v[i]->len;
  }
  free(v);
  return mpx_emit_commit(ctx, total);
}

int counter_emit_top(const counter_t *c, mpx_plugin_ctx_t *ctx, uint64_t k) {
  counter_entry_t **v;
  int rc;
  if ((rc = sorted(c, by_count, &v)) != 0) return rc;
  for (size_t i = 0; i < c->n && i < k && rc == 0; i++) {
    char num[24];
    int n = snprintf(num, sizeof num, "%llu ", (unsigned long long)v[i]->count);
    char *out = mpx_emit_reserve(ctx, (size_t)n + v[i]->len);
    if (out == NULL) {
      rc = MPX_ENOMEM;
      break;
    }
    memcpy(out, num, (size_t)n);
    memcpy(out + n, v[i]->key, v[i]->len);
    rc = mpx_emit_commit(ctx, (size_t)n + v[i]->len);
  }
  free(v);
  return rc;
}

int counter_emit_partitions(const counter_t *c, mpx_plugin_ctx_t *ctx, unsigned n) {
  size_t *size = calloc(n, sizeof *size), *at = calloc(n, sizeof *at);
  uint32_t *part = malloc((c->cap ? c->cap : 1) * sizeof *part);
  unsigned char *buf = NULL;
  size_t total = 0;
  int rc = MPX_ENOMEM;
  if (size == NULL || at == NULL || part == NULL) goto out;
  /* Two passes: the size of each partition's partial, then the entries
   * written at their partition's offset in one buffer. */
  for (size_t i = 0; i < c->cap; i++) {
    const counter_entry_t *e = &c->slots[i];
    if (e->key == NULL) continue;
    part[i] = mpx_key_hash(e->key, e->len) % n;
    size[part[i]] += 12 + (size_t)e->len;
    total += 12 + (size_t)e->len;
  }
  if ((buf = malloc(total ? total : 1)) == NULL) goto out;
  for (unsigned p = 1; p < n; p++) at[p] = at[p - 1] + size[p - 1];
  for (size_t i = 0; i < c->cap; i++) {
    const counter_entry_t *e = &c->slots[i];
    if (e->key == NULL) continue;
    unsigned char *w = buf + at[part[i]];
    put_le(w, e->len, 4);
    memcpy(w + 4, e->key, e->len);
    put_le(w + 4 + e->len, e->count, 8);
    at[part[i]] += 12 + (size_t)e->len;
  }
  rc = 0;
  for (unsigned p = 0; p < n && rc == 0; p++)
    if (size[p] > 0) rc = mpx_emit_partition(ctx, p, buf + at[p] - size[p], size[p]);
out:
  free(size);
  free(at);
  free(part);
  free(buf);
  return rc;
}

int counter_emit_flush(const counter_t *c, mpx_plugin_ctx_t *ctx) {
  unsigned n = mpx_partitions(ctx);
  return n > 0 ? counter_emit_partitions(c, ctx, n) : counter_emit_partial(c, ctx);
}
