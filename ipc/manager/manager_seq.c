/* Sequences for the manager's types (manager_types.h): the ring of values
 * that list, Queue and Array keep, Python iterables as arguments, and
 * slices. */
#include "manager_types.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growable ring of values ---------------------------------------------- */

int mpx__mvec_grow(mpx__mvec_t *a, size_t need) {
  if (need <= a->cap) return 0;
  size_t cap = a->cap ? a->cap : 8;
  while (cap < need) cap *= 2;
  mpx_obj_t **v = malloc(cap * sizeof *v);
  if (v == NULL) return -1;
  for (size_t i = 0; i < a->len; i++) v[i] = *mpx__mvec_at(a, i);
  free(a->v);
  a->v = v;
  a->head = 0;
  a->cap = cap;
  return 0;
}

/* Steals x. */
int mpx__mvec_push(mpx__mvec_t *a, mpx_obj_t *x) {
  if (mpx__mvec_grow(a, a->len + 1) != 0) {
    mpx_obj_release(x);
    return -1;
  }
  *mpx__mvec_at(a, a->len++) = x;
  return 0;
}

mpx_obj_t *mpx__mvec_popleft(mpx__mvec_t *a) {
  mpx_obj_t *x = a->v[a->head];
  a->head = (a->head + 1) % a->cap;
  a->len--;
  return x;
}

/* Inserts x (stolen) before index i (0..len). */
int mpx__mvec_insert(mpx__mvec_t *a, size_t i, mpx_obj_t *x) {
  if (mpx__mvec_grow(a, a->len + 1) != 0) {
    mpx_obj_release(x);
    return -1;
  }
  for (size_t j = a->len; j > i; j--) *mpx__mvec_at(a, j) = *mpx__mvec_at(a, j - 1);
  *mpx__mvec_at(a, i) = x;
  a->len++;
  return 0;
}

/* Removes index i and returns it (the caller's reference). */
mpx_obj_t *mpx__mvec_remove(mpx__mvec_t *a, size_t i) {
  mpx_obj_t *x = *mpx__mvec_at(a, i);
  for (size_t j = i; j + 1 < a->len; j++) *mpx__mvec_at(a, j) = *mpx__mvec_at(a, j + 1);
  a->len--;
  return x;
}

void mpx__mvec_clear(mpx__mvec_t *a) {
  for (size_t i = 0; i < a->len; i++) mpx_obj_release(*mpx__mvec_at(a, i));
  a->len = 0;
  a->head = 0;
}

void mpx__mvec_free(mpx__mvec_t *a) {
  mpx__mvec_clear(a);
  free(a->v);
  a->v = NULL;
  a->cap = 0;
}

mpx_obj_t *mpx__mvec_to_array(mpx__mvec_t *a) {
  mpx_obj_t *r = mpx_obj_array(a->len);
  for (size_t i = 0; r && i < a->len; i++)
    if (mpx_obj_append(r, mpx_obj_retain(*mpx__mvec_at(a, i))) != 0) {
      mpx_obj_release(r);
      return NULL;
    }
  return r;
}

/* Appends the items of a list/tuple (retained). */
int mpx__mvec_extend(mpx__mvec_t *a, const mpx_obj_t *seq) {
  size_t n = mpx_obj_len(seq);
  if (mpx__mvec_grow(a, a->len + n) != 0) return -1;
  for (size_t i = 0; i < n; i++)
    *mpx__mvec_at(a, a->len++) = mpx_obj_retain(mpx_obj_item(seq, i));
  return 0;
}

void mpx__mvec_repr(mpx__mvec_t *a, const char *open, const char *close, char *buf,
                     size_t n) {
  size_t off = 0;
  off += (size_t)snprintf(buf, n, "%s", open);
  for (size_t i = 0; i < a->len && off + 8 < n; i++) {
    if (i) off += (size_t)snprintf(buf + off, n - off, ", ");
    if (off < n) off += mpx_obj_dump(*mpx__mvec_at(a, i), buf + off, n - off);
  }
  if (off < n) snprintf(buf + off, n - off, "%s", close);
}

/* An iterable argument as a sequence of values: list/tuple as they are, a
 * dict's keys, a str's characters, bytes' ints. New reference or NULL
 * (TypeError set). */
mpx_obj_t *mpx__mt_iterable(mpx__mcall_t *c, const mpx_obj_t *o) {
  mpx_obj_type_t t = mpx_obj_type(o);
  if (t == MPX_OBJ_ARRAY || t == MPX_OBJ_TUPLE) return mpx_obj_retain((mpx_obj_t *)o);
  if ((t == MPX_OBJ_STR || t == MPX_OBJ_BYTES) && mpx_obj_len(o) > ((size_t)1 << 20)) {
    /* one object per character: bounded, so a request cannot make the
     * server allocate far beyond its own size */
    mpx__mcall_raisef(c, "builtins", "MemoryError",
                      "mpx manager: iterating a %s of %zu bytes (limit 1 MiB)",
                      mpx__mt_type_name(o), mpx_obj_len(o));
    return NULL;
  }
  mpx_obj_t *r = mpx_obj_array(mpx_obj_len(o));
  if (r == NULL) return NULL;
  if (t == MPX_OBJ_MAP) {
    for (size_t i = 0; i < mpx_obj_len(o); i++)
      mpx_obj_append(r, mpx_obj_retain(mpx_obj_map_key(o, i)));
  } else if (t == MPX_OBJ_BYTES) {
    size_t n;
    const uint8_t *p = mpx_obj_bytes_data(o, &n);
    for (size_t i = 0; i < n; i++) mpx_obj_append(r, mpx_obj_int(p[i]));
  } else if (t == MPX_OBJ_STR) {
    size_t n, i = 0;
    const char *s = mpx_obj_str_data(o, &n);
    while (i < n) { /* one code point at a time */
      size_t k = 1;
      while (i + k < n && ((uint8_t)s[i + k] & 0xc0) == 0x80) k++;
      mpx_obj_append(r, mpx_obj_str(s + i, k));
      i += k;
    }
  } else if (t == MPX_OBJ_OPAQUE && mpx_obj_opaque_kind(o) == MPX_OPAQUE_REDUCE &&
             STREQ(mpx_obj_opaque_module(o), "builtins") &&
             (STREQ(mpx_obj_opaque_name(o), "range") ||
              STREQ(mpx_obj_opaque_name(o), "set") ||
              STREQ(mpx_obj_opaque_name(o), "frozenset"))) {
    const mpx_obj_t *a = mpx_obj_opaque_args(o);
    if (mpx_obj_opaque_name(o)[0] != 'r') {
      /* set / frozenset: args is a 1-tuple holding the items (pickle.c) */
      mpx_obj_release(r);
      const mpx_obj_t *items = mpx_obj_len(a) == 1 ? mpx_obj_item(a, 0) : NULL;
      if (mpx_obj_type(items) != MPX_OBJ_ARRAY) goto not_iterable;
      return mpx_obj_retain((mpx_obj_t *)items);
    }
    /* range(start, stop, step), expanded */
    int64_t v[3] = {0, 0, 1};
    size_t na = mpx_obj_len(a);
    if (na < 1 || na > 3) goto not_iterable_r;
    for (size_t i = 0; i < na; i++)
      if (!mpx__mt_is_int(mpx_obj_item(a, i))) goto not_iterable_r;
    if (na == 1) v[1] = mpx__mt_int_of(mpx_obj_item(a, 0));
    for (size_t i = 0; na > 1 && i < na; i++) v[i] = mpx__mt_int_of(mpx_obj_item(a, i));
    if (v[2] == 0) goto not_iterable_r;
    for (int64_t x = v[0], k = 0; v[2] > 0 ? x < v[1] : x > v[1]; x += v[2], k++) {
      if (k >= (1 << 22)) {
        mpx_obj_release(r);
        mpx__mcall_raisef(c, "builtins", "MemoryError",
                          "mpx manager: a range of more than 4 M items");
        return NULL;
      }
      if (mpx_obj_append(r, mpx_obj_int(x)) != 0) break;
      if ((v[2] > 0 && x > INT64_MAX - v[2]) || (v[2] < 0 && x < INT64_MIN - v[2])) break;
    }
  } else {
  not_iterable_r:
    mpx_obj_release(r);
  not_iterable:
    mpx__mt_type_error(c, "'%s' object is not iterable", mpx__mt_type_name(o));
    return NULL;
  }
  return r;
}

/* ---- slices ----------------------------------------------------------------- */

/* A builtins.slice(start, stop, step) opaque: 1, with Python's
 * PySlice_AdjustIndices result; 0 when o is no slice; -1 on a bad one
 * (error set). */
int mpx__mt_slice(mpx__mcall_t *c, const mpx_obj_t *o, size_t len,
                     int64_t *start, int64_t *stop, int64_t *step,
                     size_t *count) {
  if (mpx_obj_type(o) != MPX_OBJ_OPAQUE ||
      mpx_obj_opaque_kind(o) != MPX_OPAQUE_REDUCE ||
      !STREQ(mpx_obj_opaque_module(o), "builtins") ||
      !STREQ(mpx_obj_opaque_name(o), "slice"))
    return 0;
  const mpx_obj_t *a = mpx_obj_opaque_args(o);
  const mpx_obj_t *v[3] = {NULL, NULL, NULL};
  size_t na = mpx_obj_len(a);
  if (na == 1) v[1] = mpx_obj_item(a, 0);
  else
    for (size_t i = 0; i < na && i < 3; i++) v[i] = mpx_obj_item(a, i);
  int64_t st = 1, b, e, L = (int64_t)len;
  for (int i = 0; i < 3; i++)
    if (v[i] && mpx_obj_type(v[i]) != MPX_OBJ_NULL && !mpx__mt_is_int(v[i])) {
      mpx__mt_type_error(c, "slice indices must be integers or None or have an "
                 "__index__ method");
      return -1;
    }
  if (v[2] && mpx__mt_is_int(v[2])) st = mpx__mt_int_of(v[2]);
  if (st == 0) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "slice step cannot be zero");
    return -1;
  }
  if (v[0] && mpx__mt_is_int(v[0])) {
    b = mpx__mt_int_of(v[0]);
    if (b < 0) { b += L; if (b < 0) b = st < 0 ? -1 : 0; }
    else if (b >= L) b = st < 0 ? L - 1 : L;
  } else {
    b = st < 0 ? L - 1 : 0;
  }
  if (v[1] && mpx__mt_is_int(v[1])) {
    e = mpx__mt_int_of(v[1]);
    if (e < 0) { e += L; if (e < 0) e = st < 0 ? -1 : 0; }
    else if (e >= L) e = st < 0 ? L - 1 : L;
  } else {
    e = st < 0 ? -1 : L;
  }
  int64_t n = 0;
  if (st < 0) { if (e < b) n = (b - e - 1) / (-st) + 1; }
  else if (b < e) n = (e - b - 1) / st + 1;
  *start = b; *stop = e; *step = st; *count = (size_t)n;
  return 1;
}

/* Index i into len items (negative from the end): 0 or -1. */
int mpx__mt_index(int64_t i, size_t len, size_t *out) {
  if (i < 0) i += (int64_t)len;
  if (i < 0 || (uint64_t)i >= len) return -1;
  *out = (size_t)i;
  return 0;
}
