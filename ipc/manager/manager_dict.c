/* dict, as a managed object: an insertion-ordered hash table (Python's
 * dict order) keyed with Python's == and hash (mpx__mt_eq, mpx__mt_hash).
 * Namespace keeps its attributes in the same table (mpx__mdict_*). */
#include "manager_types.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the ordered table ----------------------------------------------------------- */

static int dict_rehash(mpx__mdict_t *d, size_t min_cap) {
  /* compact the entries, then rebuild the index */
  size_t j = 0;
  for (size_t i = 0; i < d->n_e; i++)
    if (d->e[i].k) d->e[j++] = d->e[i];
  d->n_e = j;
  size_t cap = 8;
  while (cap < min_cap * 2) cap *= 2;
  uint32_t *idx = calloc(cap, sizeof *idx);
  if (idx == NULL) return -1;
  free(d->idx);
  d->idx = idx;
  d->cap_i = cap;
  for (size_t i = 0; i < d->n_e; i++) {
    size_t s = d->e[i].h & (cap - 1);
    while (idx[s]) s = (s + 1) & (cap - 1);
    idx[s] = (uint32_t)(i + 1);
  }
  return 0;
}

/* The slot in idx holding key, or where it would go (*found 0). */
static size_t dict_slot(mpx__mdict_t *d, const mpx_obj_t *k, uint64_t h, int *found) {
  size_t s = h & (d->cap_i - 1), tomb = SIZE_MAX;
  for (;;) {
    uint32_t x = d->idx[s];
    if (x == 0) {
      *found = 0;
      return tomb != SIZE_MAX ? tomb : s;
    }
    mpx__mdent_t *e = &d->e[x - 1];
    if (e->k == NULL) {
      if (tomb == SIZE_MAX) tomb = s;
    } else if (e->h == h && mpx__mt_eq(e->k, k)) {
      *found = 1;
      return s;
    }
    s = (s + 1) & (d->cap_i - 1);
  }
}

mpx__mdent_t *mpx__mdict_find(mpx__mdict_t *d, const mpx_obj_t *k) {
  int f;
  if (d->cap_i == 0) return NULL;
  size_t s = dict_slot(d, k, mpx__mt_hash(k), &f);
  return f ? &d->e[d->idx[s] - 1] : NULL;
}

/* Sets k -> v (both retained here). 0 or -1 (out of memory). */
int mpx__mdict_set(mpx__mdict_t *d, const mpx_obj_t *k, const mpx_obj_t *v) {
  uint64_t h = mpx__mt_hash(k);
  int f;
  if (d->cap_i == 0 || (d->n_e + 1) * 2 > d->cap_i) {
    if (dict_rehash(d, d->live + 1) != 0) return -1;
  }
  size_t s = dict_slot(d, k, h, &f);
  if (f) {
    mpx__mdent_t *e = &d->e[d->idx[s] - 1];
    mpx_obj_release(e->v);
    e->v = mpx_obj_retain((mpx_obj_t *)v);
    return 0;
  }
  if (d->n_e == d->cap_e) {
    size_t cap = d->cap_e ? d->cap_e * 2 : 8;
    mpx__mdent_t *ne = realloc(d->e, cap * sizeof *ne);
    if (ne == NULL) return -1;
    d->e = ne;
    d->cap_e = cap;
  }
  if (d->n_e >= UINT32_MAX - 1) return -1;
  d->e[d->n_e] = (mpx__mdent_t){mpx_obj_retain((mpx_obj_t *)k),
                          mpx_obj_retain((mpx_obj_t *)v), h};
  d->idx[s] = (uint32_t)(++d->n_e);
  d->live++;
  return 0;
}

/* Removes an entry; returns its value (the caller's). */
mpx_obj_t *mpx__mdict_take(mpx__mdict_t *d, mpx__mdent_t *e) {
  mpx_obj_t *v = e->v;
  mpx_obj_release(e->k);
  e->k = NULL;
  e->v = NULL;
  d->live--;
  return v;
}

void mpx__mdict_clear(mpx__mdict_t *d) {
  for (size_t i = 0; i < d->n_e; i++)
    if (d->e[i].k) {
      mpx_obj_release(d->e[i].k);
      mpx_obj_release(d->e[i].v);
    }
  d->n_e = d->live = 0;
  if (d->idx) memset(d->idx, 0, d->cap_i * sizeof *d->idx);
}

mpx_obj_t *mpx__mdict_map(mpx__mdict_t *d) {
  mpx_obj_t *m = mpx_obj_map(d->live);
  for (size_t i = 0; m && i < d->n_e; i++)
    if (d->e[i].k &&
        mpx_obj_map_set(m, mpx_obj_retain(d->e[i].k), mpx_obj_retain(d->e[i].v)) != 0) {
      mpx_obj_release(m);
      return NULL;
    }
  return m;
}

/* 0: keys, 1: values, 2: items */
static mpx_obj_t *dict_list(mpx__mdict_t *d, int what) {
  mpx_obj_t *a = mpx_obj_array(d->live);
  for (size_t i = 0; a && i < d->n_e; i++) {
    mpx__mdent_t *e = &d->e[i];
    if (!e->k) continue;
    mpx_obj_t *x = what == 0 ? mpx_obj_retain(e->k)
                   : what == 1 ? mpx_obj_retain(e->v)
                               : mpx__mt_tuple(2, mpx_obj_retain(e->k), mpx_obj_retain(e->v));
    if (mpx_obj_append(a, x) != 0) {
      mpx_obj_release(a);
      return NULL;
    }
  }
  return a;
}

void mpx__mdict_fini(mpx__mdict_t *d) {
  mpx__mdict_clear(d);
  free(d->e);
  free(d->idx);
  d->e = NULL;
  d->idx = NULL;
  d->n_e = d->cap_e = d->cap_i = 0;
}

/* ---- the dict type ------------------------------------------------------------ */

static int check_key(mpx__mcall_t *c, const mpx_obj_t *k) {
  const char *u = mpx__mt_unhashable(k);
  if (u) {
    mpx__mt_type_error(c, "unhashable type: '%s'", u);
    return -1;
  }
  return 0;
}

/* dict.update's argument: a map, or a sequence of pairs. */
static int dict_update(mpx__mdict_t *d, mpx__mcall_t *c, const mpx_obj_t *src) {
  if (mpx_obj_type(src) == MPX_OBJ_MAP) {
    for (size_t i = 0; i < mpx_obj_len(src); i++) {
      if (check_key(c, mpx_obj_map_key(src, i)) != 0) return -1;
      if (mpx__mdict_set(d, mpx_obj_map_key(src, i), mpx_obj_map_value(src, i)) != 0)
        goto oom;
    }
    return 0;
  }
  mpx_obj_t *seq = mpx__mt_iterable(c, src);
  if (seq == NULL) return -1;
  for (size_t i = 0; i < mpx_obj_len(seq); i++) {
    const mpx_obj_t *p = mpx_obj_item(seq, i);
    mpx_obj_type_t t = mpx_obj_type(p);
    if ((t != MPX_OBJ_TUPLE && t != MPX_OBJ_ARRAY) || mpx_obj_len(p) != 2) {
      mpx_obj_release(seq);
      mpx__mcall_raisef(c, "builtins", "ValueError",
                        "dictionary update sequence element #%zu has the "
                        "wrong length", i);
      return -1;
    }
    if (check_key(c, mpx_obj_item(p, 0)) != 0) {
      mpx_obj_release(seq);
      return -1;
    }
    if (mpx__mdict_set(d, mpx_obj_item(p, 0), mpx_obj_item(p, 1)) != 0) {
      mpx_obj_release(seq);
      goto oom;
    }
  }
  mpx_obj_release(seq);
  return 0;
oom:
  mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return -1;
}

int mpx__mdict_update_kw(mpx__mdict_t *d, mpx__mcall_t *c, const mpx_obj_t *kw) {
  for (size_t i = 0; i < mpx_obj_len(kw); i++)
    if (mpx__mdict_set(d, mpx_obj_map_key(kw, i), mpx_obj_map_value(kw, i)) != 0) {
      mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
      return -1;
    }
  return 0;
}

static mpx__mobj_t *dict_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)mpx__mt_alloc(sizeof *d, NULL);
  if (d == NULL) return mpx__mt_nomem(c);
  if (mpx_obj_len(args) > 1) {
    mpx__mt_type_error(c, "dict expected at most 1 argument, got %zu", mpx_obj_len(args));
    goto fail;
  }
  if (mpx_obj_len(args) == 1 && dict_update(d, c, mpx_obj_item(args, 0)) != 0)
    goto fail;
  if (mpx__mdict_update_kw(d, c, kwds) != 0) goto fail;
  return &d->h;
fail:
  mpx__mdict_fini(d);
  free(d);
  return NULL;
}

static void dict_destroy(mpx__mobj_t *o) {
  mpx__mdict_fini((mpx__mdict_t *)o);
  free(o);
}

static int m_getitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  mpx__mdent_t *e;
  BIND(c, 1, a, "key");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find((mpx__mdict_t *)o, a[0])) == NULL)
    return mpx__mt_raise_with(c, "KeyError", a[0]);
  return mpx__mcall_return(c, mpx_obj_retain(e->v));
}

static int m_setitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[2];
  BIND(c, 2, a, "key", "value");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if (mpx__mdict_set((mpx__mdict_t *)o, a[0], a[1]) != 0)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

static int m_delitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)o;
  const mpx_obj_t *a[1];
  mpx__mdent_t *e;
  BIND(c, 1, a, "key");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find(d, a[0])) == NULL) return mpx__mt_raise_with(c, "KeyError", a[0]);
  mpx_obj_release(mpx__mdict_take(d, e));
  return mpx__mcall_return(c, NULL);
}

static int m_contains(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "key");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  return mpx__mcall_return(c, mpx_obj_bool(mpx__mdict_find((mpx__mdict_t *)o, a[0]) != NULL));
}

static int m_len(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_int((int64_t)((mpx__mdict_t *)o)->live));
}

/* A new Iterator over a copy of the keys (method_to_typeid: a proxy). */
static int m_iter(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  mpx_obj_t *keys = dict_list((mpx__mdict_t *)o, 0);
  if (keys == NULL || (c->proxy = mpx__miter_new(keys)) == NULL)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  c->kind = MPX__K_PROXY;
  return MPX__M_DONE;
}

static int m_get(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[2];
  mpx__mdent_t *e;
  BIND(c, 1, a, "key", "default");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find((mpx__mdict_t *)o, a[0])) != NULL)
    return mpx__mcall_return(c, mpx_obj_retain(e->v));
  return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)a[1]));
}

static int m_setdefault(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)o;
  const mpx_obj_t *a[2];
  mpx__mdent_t *e;
  BIND(c, 1, a, "key", "default");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find(d, a[0])) != NULL)
    return mpx__mcall_return(c, mpx_obj_retain(e->v));
  const mpx_obj_t *v = a[1] ? a[1] : mpx_obj_null();
  if (mpx__mdict_set(d, a[0], v) != 0)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)v));
}

static int m_pop(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)o;
  const mpx_obj_t *a[2];
  mpx__mdent_t *e;
  BIND(c, 1, a, "key", "default");
  if (check_key(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find(d, a[0])) != NULL) return mpx__mcall_return(c, mpx__mdict_take(d, e));
  if (a[1]) return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)a[1]));
  return mpx__mt_raise_with(c, "KeyError", a[0]);
}

static int m_popitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)o;
  NO_ARGS(c);
  for (size_t i = d->n_e; i-- > 0;)
    if (d->e[i].k) {
      mpx_obj_t *k = mpx_obj_retain(d->e[i].k);
      mpx_obj_t *v = mpx__mdict_take(d, &d->e[i]);
      d->n_e = i; /* the tail is all deleted now */
      dict_rehash(d, d->live + 1);
      return mpx__mcall_return(c, mpx__mt_tuple(2, k, v));
    }
  return mpx__mcall_raisef(c, "builtins", "KeyError",
                           "popitem(): dictionary is empty");
}

/* keys, values, items: lists (CPython's proxy gets them as lists too). */
static int m_view(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  const char *m = c->method;
  int what = m[0] == 'k' ? 0 : m[0] == 'v' ? 1 : 2;
  return mpx__mcall_return(c, dict_list((mpx__mdict_t *)o, what));
}

static int m_copy(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx__mdict_map((mpx__mdict_t *)o));
}

static int m_clear(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  mpx__mdict_clear((mpx__mdict_t *)o);
  return mpx__mcall_return(c, NULL);
}

static int m_update(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *d = (mpx__mdict_t *)o;
  if (mpx_obj_len(c->args) > 1)
    return mpx__mt_type_error(c, "update expected at most 1 argument, got %zu",
                              mpx_obj_len(c->args));
  if (mpx_obj_len(c->args) == 1 && dict_update(d, c, mpx_obj_item(c->args, 0)) != 0)
    return MPX__M_DONE;
  if (mpx__mdict_update_kw(d, c, c->kwds) != 0) return MPX__M_DONE;
  return mpx__mcall_return(c, NULL);
}

/* CPython's exposed order. */
static const mpx__mmethod_t dict_methods[] = {
    {"__contains__", m_contains}, {"__delitem__", m_delitem},
    {"__getitem__", m_getitem},   {"__iter__", m_iter},
    {"__len__", m_len},           {"__setitem__", m_setitem},
    {"clear", m_clear},           {"copy", m_copy},
    {"get", m_get},               {"items", m_view},
    {"keys", m_view},             {"pop", m_pop},
    {"popitem", m_popitem},       {"setdefault", m_setdefault},
    {"update", m_update},         {"values", m_view},
    {NULL, NULL}};

static mpx_obj_t *dict_value(mpx__mobj_t *o) { return mpx__mdict_map((mpx__mdict_t *)o); }

static void dict_repr(mpx__mobj_t *o, char *buf, size_t n) {
  mpx_obj_t *m = mpx__mdict_map((mpx__mdict_t *)o);
  if (m) mpx_obj_dump(m, buf, n);
  else snprintf(buf, n, "{...}");
  mpx_obj_release(m);
}

const mpx__mtype_t mpx__mdict_type = {
    .name = "dict", .methods = dict_methods, .iter_typeid = "Iterator",
    .create = dict_create, .destroy = dict_destroy, .value = dict_value,
    .repr = dict_repr};
