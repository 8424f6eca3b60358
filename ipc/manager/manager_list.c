/* list, as a managed object: a ring of values (mpx__mvec_t) with
 * Python's list methods, slices included. sort and index compare with
 * Python's ordering and == (mpx__mt_cmp, mpx__mt_eq). */
#include "manager_types.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
  mpx__mobj_t h;
  mpx__mvec_t v;
} list_t;

static mpx__mobj_t *list_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  if (mpx_obj_len(args) > 1 || mpx_obj_len(kwds) > 0) {
    mpx__mt_type_error(c, "list expected at most 1 argument");
    return NULL;
  }
  list_t *l = (list_t *)mpx__mt_alloc(sizeof *l, NULL);
  if (l == NULL) return mpx__mt_nomem(c);
  if (mpx_obj_len(args) == 1) {
    mpx_obj_t *seq = mpx__mt_iterable(c, mpx_obj_item(args, 0));
    if (seq == NULL || mpx__mvec_extend(&l->v, seq) != 0) {
      if (seq) mpx__mt_nomem(c);
      mpx_obj_release(seq);
      mpx__mvec_free(&l->v);
      free(l);
      return NULL;
    }
    mpx_obj_release(seq);
  }
  return &l->h;
}

static void list_destroy(mpx__mobj_t *o) {
  list_t *l = (list_t *)o;
  mpx__mvec_free(&l->v);
  free(l);
}

static int idx_error(mpx__mcall_t *c, const mpx_obj_t *i) {
  return mpx__mt_type_error(c, "list indices must be integers or slices, not %s",
                    mpx__mt_type_name(i));
}

static _Thread_local int cmp_err;
static int sort_cmp(const void *x, const void *y) {
  int r = mpx__mt_cmp(*(mpx_obj_t *const *)x, *(mpx_obj_t *const *)y);
  if (r == -2) {
    cmp_err = 1;
    return 0;
  }
  return r;
}

/* A stable merge sort (Python's sort is stable), with mpx__mt_cmp. */
static void msort(mpx_obj_t **a, mpx_obj_t **tmp, size_t n, bool rev) {
  if (n < 2) return;
  size_t h = n / 2;
  msort(a, tmp, h, rev);
  msort(a + h, tmp, n - h, rev);
  size_t i = 0, j = h, k = 0;
  while (i < h && j < n) {
    int r = sort_cmp(&a[j], &a[i]);
    /* take the right one first only when strictly ordered before */
    bool right = rev ? r > 0 : r < 0;
    tmp[k++] = right ? a[j++] : a[i++];
  }
  while (i < h) tmp[k++] = a[i++];
  while (j < n) tmp[k++] = a[j++];
  memcpy(a, tmp, n * sizeof *a);
}

static mpx_obj_t *repeat(mpx__mvec_t *v, int64_t n) {
  if (n < 0) n = 0;
  if (n > 0 && v->len > ((size_t)1 << 22) / (size_t)n) return NULL;
  mpx_obj_t *r = mpx_obj_array(v->len * (size_t)n);
  for (int64_t k = 0; r && k < n; k++)
    for (size_t i = 0; i < v->len; i++) mpx_obj_append(r, mpx_obj_retain(*mpx__mvec_at(v, i)));
  return r;
}

static mpx__mvec_t *vec_of(mpx__mobj_t *o) { return &((list_t *)o)->v; }

static int m_len(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_int((int64_t)vec_of(o)->len));
}

static int m_append(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "object");
  if (mpx__mvec_push(vec_of(o), mpx_obj_retain((mpx_obj_t *)a[0])) != 0)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

static int m_getitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  int64_t st, sp, step;
  size_t i, cnt;
  int s;
  BIND(c, 1, a, "index");
  if ((s = mpx__mt_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
  if (s == 1) {
    mpx_obj_t *r = mpx_obj_array(cnt);
    for (size_t k = 0; r && k < cnt; k++)
      mpx_obj_append(r, mpx_obj_retain(*mpx__mvec_at(v, (size_t)(st + (int64_t)k * step))));
    return mpx__mcall_return(c, r);
  }
  if (!mpx__mt_is_int(a[0])) return idx_error(c, a[0]);
  if (mpx__mt_index(mpx__mt_int_of(a[0]), v->len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError", "list index out of range");
  return mpx__mcall_return(c, mpx_obj_retain(*mpx__mvec_at(v, i)));
}

/* l[start:stop:step] = iterable: a plain slice may change the length, an
 * extended one must match it. */
static int set_slice(mpx__mvec_t *v, mpx__mcall_t *c, const mpx_obj_t *val,
                     int64_t st, int64_t sp, int64_t step, size_t cnt) {
  mpx_obj_t *seq = mpx__mt_iterable(c, val);
  if (seq == NULL) return MPX__M_DONE;
  size_t n = mpx_obj_len(seq);
  if (step == 1) {
    if (sp < st) sp = st;
    for (int64_t k = sp - 1; k >= st; k--) mpx_obj_release(mpx__mvec_remove(v, (size_t)k));
    for (size_t k = 0; k < n; k++)
      if (mpx__mvec_insert(v, (size_t)st + k, mpx_obj_retain(mpx_obj_item(seq, k))) != 0) break;
  } else if (n != cnt) {
    mpx_obj_release(seq);
    return mpx__mcall_raisef(c, "builtins", "ValueError",
                             "attempt to assign sequence of size %zu to "
                             "extended slice of size %zu", n, cnt);
  } else {
    for (size_t k = 0; k < n; k++) {
      mpx_obj_t **p = mpx__mvec_at(v, (size_t)(st + (int64_t)k * step));
      mpx_obj_release(*p);
      *p = mpx_obj_retain(mpx_obj_item(seq, k));
    }
  }
  mpx_obj_release(seq);
  return mpx__mcall_return(c, NULL);
}

static int m_setitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[2];
  int64_t st, sp, step;
  size_t i, cnt;
  int s;
  BIND(c, 2, a, "index", "value");
  if ((s = mpx__mt_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
  if (s == 1) return set_slice(v, c, a[1], st, sp, step, cnt);
  if (!mpx__mt_is_int(a[0])) return idx_error(c, a[0]);
  if (mpx__mt_index(mpx__mt_int_of(a[0]), v->len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError",
                             "list assignment index out of range");
  mpx_obj_release(*mpx__mvec_at(v, i));
  *mpx__mvec_at(v, i) = mpx_obj_retain((mpx_obj_t *)a[1]);
  return mpx__mcall_return(c, NULL);
}

static int m_delitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  int64_t st, sp, step;
  size_t i, cnt;
  int s;
  BIND(c, 1, a, "index");
  if ((s = mpx__mt_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
  if (s == 1) {
    /* delete from the highest index down so the others stay put */
    for (size_t k = cnt; k-- > 0;) {
      int64_t at = st + (int64_t)k * step;
      if (step < 0) at = st + (int64_t)(cnt - 1 - k) * step;
      mpx_obj_release(mpx__mvec_remove(v, (size_t)at));
    }
    return mpx__mcall_return(c, NULL);
  }
  if (!mpx__mt_is_int(a[0])) return idx_error(c, a[0]);
  if (mpx__mt_index(mpx__mt_int_of(a[0]), v->len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError",
                             "list assignment index out of range");
  mpx_obj_release(mpx__mvec_remove(v, i));
  return mpx__mcall_return(c, NULL);
}

/* __contains__ and count. */
static int m_count(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "value");
  int64_t n = 0;
  for (size_t i = 0; i < v->len; i++)
    if (mpx__mt_eq(*mpx__mvec_at(v, i), a[0])) n++;
  if (c->method[0] == '_') return mpx__mcall_return(c, mpx_obj_bool(n > 0));
  return mpx__mcall_return(c, mpx_obj_int(n));
}

static int m_index(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[3];
  BIND(c, 1, a, "value", "start", "stop");
  int64_t b = 0, e = (int64_t)v->len, L = (int64_t)v->len;
  if (a[1] && mpx__mt_want_int(c, a[1], &b) != 0) return MPX__M_DONE;
  if (a[2] && mpx__mt_want_int(c, a[2], &e) != 0) return MPX__M_DONE;
  if (b < 0) { b += L; if (b < 0) b = 0; }
  if (e < 0) { e += L; if (e < 0) e = 0; }
  if (e > L) e = L;
  for (int64_t k = b; k < e; k++)
    if (mpx__mt_eq(*mpx__mvec_at(v, (size_t)k), a[0])) return mpx__mcall_return(c, mpx_obj_int(k));
  char buf[200];
  mpx_obj_dump(a[0], buf, sizeof buf);
  return mpx__mcall_raisef(c, "builtins", "ValueError", "%s is not in list", buf);
}

static int m_remove(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "value");
  for (size_t i = 0; i < v->len; i++)
    if (mpx__mt_eq(*mpx__mvec_at(v, i), a[0])) {
      mpx_obj_release(mpx__mvec_remove(v, i));
      return mpx__mcall_return(c, NULL);
    }
  return mpx__mcall_raisef(c, "builtins", "ValueError",
                           "list.remove(x): x not in list");
}

static int m_insert(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[2];
  int64_t i64;
  BIND(c, 2, a, "index", "object");
  if (mpx__mt_want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
  int64_t L = (int64_t)v->len;
  if (i64 < 0) { i64 += L; if (i64 < 0) i64 = 0; }
  if (i64 > L) i64 = L;
  if (mpx__mvec_insert(v, (size_t)i64, mpx_obj_retain((mpx_obj_t *)a[1])) != 0)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

static int m_pop(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  int64_t i64 = -1;
  size_t i;
  BIND(c, 0, a, "index");
  if (a[0] && mpx__mt_want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
  if (v->len == 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError", "pop from empty list");
  if (mpx__mt_index(i64, v->len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError", "pop index out of range");
  return mpx__mcall_return(c, mpx__mvec_remove(v, i));
}

static int m_extend(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "iterable");
  mpx_obj_t *seq = mpx__mt_iterable(c, a[0]);
  if (seq == NULL) return MPX__M_DONE;
  int r = mpx__mvec_extend(vec_of(o), seq);
  mpx_obj_release(seq);
  if (r != 0) return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

static int m_reverse(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  NO_ARGS(c);
  for (size_t x = 0, y = v->len; x + 1 < y; x++, y--) {
    mpx_obj_t *t = *mpx__mvec_at(v, x);
    *mpx__mvec_at(v, x) = *mpx__mvec_at(v, y - 1);
    *mpx__mvec_at(v, y - 1) = t;
  }
  return mpx__mcall_return(c, NULL);
}

static int m_reversed(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  NO_ARGS(c);
  mpx_obj_t *r = mpx_obj_array(v->len);
  for (size_t k = v->len; r && k-- > 0;) mpx_obj_append(r, mpx_obj_retain(*mpx__mvec_at(v, k)));
  return mpx__mcall_return(c, r);
}

/* CPython's sort meets the first unordered pair in its first run,
 * comparing each item with the one before it (in reverse order for
 * reverse=True): name the types of that comparison, as it does. */
static int sort_type_error(mpx__mvec_t *v, mpx__mcall_t *c, bool rev) {
  for (size_t k = 1; k < v->len; k++) {
    const mpx_obj_t *x = *mpx__mvec_at(v, rev ? v->len - 1 - k : k);
    const mpx_obj_t *y = *mpx__mvec_at(v, rev ? v->len - k : k - 1);
    if (mpx__mt_cmp(x, y) == -2) break;
  }
  return mpx__mt_type_error(c, "'<' not supported between instances of '%s' and '%s'",
                            mpx__mt_type_name(mpx__mt_unordered_a),
                            mpx__mt_type_name(mpx__mt_unordered_b));
}

static int m_sort(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[2];
  BIND(c, 0, a, "key", "reverse");
  if (mpx_obj_len(c->args) > 0) return mpx__mt_type_error(c, "sort() takes no positional arguments");
  if (a[0] && mpx_obj_type(a[0]) != MPX_OBJ_NULL)
    return mpx__mt_type_error(c, "sort(key=...) cannot run on an mpx manager: "
                              "no Python code runs here");
  if (v->len < 2) return mpx__mcall_return(c, NULL);
  mpx_obj_t **flat = malloc(v->len * sizeof *flat), **tmp = malloc(v->len * sizeof *tmp);
  if (flat == NULL || tmp == NULL) {
    free(flat);
    free(tmp);
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  }
  for (size_t k = 0; k < v->len; k++) flat[k] = *mpx__mvec_at(v, k);
  cmp_err = 0;
  msort(flat, tmp, v->len, mpx__mt_truthy(a[1]));
  free(tmp);
  if (cmp_err) {
    free(flat);
    return sort_type_error(v, c, mpx__mt_truthy(a[1]));
  }
  for (size_t k = 0; k < v->len; k++) *mpx__mvec_at(v, k) = flat[k];
  free(flat);
  return mpx__mcall_return(c, NULL);
}

static int m_add(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "value");
  if (mpx_obj_type(a[0]) != MPX_OBJ_ARRAY)
    return mpx__mt_type_error(c, "can only concatenate list (not \"%s\") to list",
                              mpx__mt_type_name(a[0]));
  mpx_obj_t *r = mpx__mvec_to_array(vec_of(o));
  for (size_t k = 0; r && k < mpx_obj_len(a[0]); k++)
    mpx_obj_append(r, mpx_obj_retain(mpx_obj_item(a[0], k)));
  return mpx__mcall_return(c, r);
}

/* __mul__ and __rmul__ answer a new list; __imul__ repeats in place. */
static int m_mul(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mvec_t *v = vec_of(o);
  const mpx_obj_t *a[1];
  int64_t i64;
  BIND(c, 1, a, "value");
  if (mpx__mt_want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
  mpx_obj_t *r = repeat(v, i64);
  if (r == NULL) return mpx__mcall_raisef(c, "builtins", "MemoryError", "too large");
  if (c->method[2] != 'i') return mpx__mcall_return(c, r);
  mpx__mvec_clear(v);
  int rc = mpx__mvec_extend(v, r);
  mpx_obj_release(r);
  if (rc != 0) return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

/* CPython's exposed order. */
static const mpx__mmethod_t list_methods[] = {
    {"__add__", m_add},           {"__contains__", m_count},
    {"__delitem__", m_delitem},   {"__getitem__", m_getitem},
    {"__len__", m_len},           {"__mul__", m_mul},
    {"__reversed__", m_reversed}, {"__rmul__", m_mul},
    {"__setitem__", m_setitem},   {"append", m_append},
    {"count", m_count},           {"extend", m_extend},
    {"index", m_index},           {"insert", m_insert},
    {"pop", m_pop},               {"remove", m_remove},
    {"reverse", m_reverse},       {"sort", m_sort},
    {"__imul__", m_mul},          {NULL, NULL}};

static mpx_obj_t *list_value(mpx__mobj_t *o) { return mpx__mvec_to_array(vec_of(o)); }

static void list_repr(mpx__mobj_t *o, char *buf, size_t n) {
  mpx__mvec_repr(vec_of(o), "[", "]", buf, n);
}

const mpx__mtype_t mpx__mlist_type = {
    .name = "list", .methods = list_methods, .create = list_create,
    .destroy = list_destroy, .value = list_value, .repr = list_repr};
