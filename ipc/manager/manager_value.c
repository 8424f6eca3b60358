/* Value and Array (managers.Value, array.array): one value with a
 * typecode the manager keeps but does not check (as CPython's Value), and
 * a typed array whose items are checked and converted per typecode. */
#include "manager_types.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Value ------------------------------------------------------------------ */

typedef struct {
  mpx__mobj_t h;
  mpx_obj_t *typecode, *value;
} value_t;

static mpx__mobj_t *value_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  static const char *const names[] = {"typecode", "value", "lock", NULL};
  if (mpx__mt_bind_new(c, "Value", args, kwds, names, 2, a) != 0) return NULL;
  value_t *v = (value_t *)mpx__mt_alloc(sizeof *v, NULL);
  if (v == NULL) return mpx__mt_nomem(c);
  v->typecode = mpx_obj_retain((mpx_obj_t *)a[0]);
  v->value = mpx_obj_retain((mpx_obj_t *)a[1]);
  return &v->h;
}

static void value_destroy(mpx__mobj_t *o) {
  value_t *v = (value_t *)o;
  mpx_obj_release(v->typecode);
  mpx_obj_release(v->value);
  free(v);
}

static int value_get(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_retain(((value_t *)o)->value));
}

static int value_set(mpx__mobj_t *o, mpx__mcall_t *c) {
  value_t *v = (value_t *)o;
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "value");
  mpx_obj_release(v->value);
  v->value = mpx_obj_retain((mpx_obj_t *)a[0]);
  return mpx__mcall_return(c, NULL);
}

static const mpx__mmethod_t value_methods[] = {
    {"get", value_get}, {"set", value_set}, {NULL, NULL}};



static mpx_obj_t *value_value(mpx__mobj_t *o) {
  value_t *v = (value_t *)o;
  mpx_obj_t *st = mpx_obj_map(2);
  if (st == NULL) return NULL;
  mpx_obj_map_set_str(st, "_typecode", mpx_obj_retain(v->typecode));
  mpx_obj_map_set_str(st, "_value", mpx_obj_retain(v->value));
  return mpx__mt_plain_object("Value", st);
}

static void value_repr(mpx__mobj_t *o, char *buf, size_t n) {
  value_t *v = (value_t *)o;
  char t[64], x[256];
  mpx_obj_dump(v->typecode, t, sizeof t);
  mpx_obj_dump(v->value, x, sizeof x);
  snprintf(buf, n, "Value(%s, %s)", t, x);
}

const mpx__mtype_t mpx__mvalue_type = {
    .name = "Value", .methods = value_methods, .create = value_create,
    .destroy = value_destroy, .value = value_value, .repr = value_repr};

/* ---- Array ------------------------------------------------------------------ */

typedef struct {
  mpx__mobj_t h;
  char tc;
  mpx__mvec_t v;
} array_t;

/* Converts x for typecode tc (array.array's checks): a new reference, or
 * NULL with the error set. */
static mpx_obj_t *array_item(mpx__mcall_t *c, char tc, const mpx_obj_t *x) {
  if (tc == 'f' || tc == 'd') {
    if (!mpx__mt_is_num(x)) {
      mpx__mt_type_error(c, "must be real number, not %s", mpx__mt_type_name(x));
      return NULL;
    }
    return mpx_obj_float(mpx__mt_num_of(x));
  }
  if (tc == 'u' || tc == 'w') {
    size_t n;
    const char *s = mpx_obj_str_data(x, &n);
    size_t k = 1;
    while (s && k < n && ((uint8_t)s[k] & 0xc0) == 0x80) k++;
    if (s == NULL || n == 0 || k != n) {
      mpx__mt_type_error(c, "array item must be unicode character");
      return NULL;
    }
    return mpx_obj_retain((mpx_obj_t *)x);
  }
  if (!mpx__mt_is_int(x)) {
    mpx__mt_type_error(c, "'%s' object cannot be interpreted as an integer",
               mpx__mt_type_name(x));
    return NULL;
  }
  int64_t v = mpx__mt_int_of(x), lo, hi;
  switch (tc) {
  case 'b': lo = INT8_MIN; hi = INT8_MAX; break;
  case 'B': lo = 0; hi = UINT8_MAX; break;
  case 'h': lo = INT16_MIN; hi = INT16_MAX; break;
  case 'H': lo = 0; hi = UINT16_MAX; break;
  case 'i': lo = INT32_MIN; hi = INT32_MAX; break;
  case 'I': lo = 0; hi = UINT32_MAX; break;
  case 'l': case 'q': lo = INT64_MIN; hi = INT64_MAX; break;
  default: lo = 0; hi = INT64_MAX; break; /* L, Q: beyond int64 is a bigint */
  }
  if (v < lo || v > hi) {
    mpx__mcall_raisef(c, "builtins", "OverflowError",
                      v < lo ? "signed integer is less than minimum"
                             : "signed integer is greater than maximum");
    return NULL;
  }
  return mpx_obj_int(v);
}

static mpx__mobj_t *array_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  static const char *const names[] = {"typecode", "sequence", "lock", NULL};
  if (mpx__mt_bind_new(c, "Array", args, kwds, names, 2, a) != 0) return NULL;
  size_t n;
  const char *tc = mpx_obj_str_data(a[0], &n);
  if (tc == NULL || n != 1 || strchr("bBuwhHiIlLqQfd", tc[0]) == NULL) {
    mpx__mcall_raisef(c, "builtins", "ValueError",
                      "bad typecode (must be b, B, u, w, h, H, i, I, l, L, q, Q, f or d)");
    return NULL;
  }
  array_t *arr = (array_t *)mpx__mt_alloc(sizeof *arr, NULL);
  if (arr == NULL) return mpx__mt_nomem(c);
  arr->tc = tc[0];
  mpx_obj_t *seq = NULL;
  if (mpx__mt_is_int(a[1])) {
    if (mpx__mt_int_of(a[1]) < 0 || mpx__mt_int_of(a[1]) > (1 << 20)) {
      mpx__mcall_raisef(c, "builtins", "ValueError",
                        "Array size must be 0..1048576 (give a sequence for more)");
      goto fail;
    }
    /* sharedctypes style: Array('i', 10) is ten zeros (array.array
     * refuses an int; accepting it costs nothing) */
    int64_t k = mpx__mt_int_of(a[1]);
    for (int64_t j = 0; j < k; j++)
      if (mpx__mvec_push(&arr->v, strchr("fd", arr->tc) ? mpx_obj_float(0) : mpx_obj_int(0)) != 0)
        goto oom;
    return &arr->h;
  }
  if ((seq = mpx__mt_iterable(c, a[1])) == NULL) goto fail;
  for (size_t j = 0; j < mpx_obj_len(seq); j++) {
    mpx_obj_t *x = array_item(c, arr->tc, mpx_obj_item(seq, j));
    if (x == NULL) goto fail;
    if (mpx__mvec_push(&arr->v, x) != 0) goto oom;
  }
  mpx_obj_release(seq);
  return &arr->h;
oom:
  mpx__mt_nomem(c);
fail:
  mpx_obj_release(seq);
  mpx__mvec_free(&arr->v);
  free(arr);
  return NULL;
}

static void array_destroy(mpx__mobj_t *o) {
  mpx__mvec_free(&((array_t *)o)->v);
  free(o);
}

static int array_len(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_int((int64_t)((array_t *)o)->v.len));
}

/* arr[start:stop:step]: an array.array, as CPython's server returns (what
 * protocol 2 writes for one: array.array(typecode, [items])). */
static int array_slice(array_t *arr, mpx__mcall_t *c, int64_t st, int64_t step,
                       size_t cnt) {
  mpx_obj_t *r = mpx_obj_array(cnt), *args = mpx_obj_tuple(2);
  for (size_t k = 0; r && k < cnt; k++)
    mpx_obj_append(r, mpx_obj_retain(*mpx__mvec_at(&arr->v, (size_t)(st + (int64_t)k * step))));
  if (r == NULL || args == NULL ||
      mpx_obj_append(args, c->py2 ? mpx_obj_bytes(&arr->tc, 1) : mpx_obj_str(&arr->tc, 1)) != 0 ||
      mpx_obj_append(args, r) != 0) {
    if (args == NULL) mpx_obj_release(r);
    mpx_obj_release(args);
    mpx__mt_nomem(c);
    return MPX__M_DONE;
  }
  return mpx__mcall_return(c, mpx_obj_opaque(MPX_OPAQUE_REDUCE, "array", "array", args, NULL));
}

static int array_getitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  array_t *arr = (array_t *)o;
  const mpx_obj_t *a[1];
  size_t i, cnt;
  int64_t st, sp, step;
  int s;
  BIND(c, 1, a, "index");
  if ((s = mpx__mt_slice(c, a[0], arr->v.len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
  if (s == 1) return array_slice(arr, c, st, step, cnt);
  if (!mpx__mt_is_int(a[0]))
    return mpx__mt_type_error(c, "array indices must be integers");
  if (mpx__mt_index(mpx__mt_int_of(a[0]), arr->v.len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError", "array index out of range");
  return mpx__mcall_return(c, mpx_obj_retain(*mpx__mvec_at(&arr->v, i)));
}

static int array_setitem(mpx__mobj_t *o, mpx__mcall_t *c) {
  array_t *arr = (array_t *)o;
  const mpx_obj_t *a[2];
  size_t i;
  BIND(c, 2, a, "index", "value");
  if (mpx_obj_type(a[0]) == MPX_OBJ_OPAQUE && STREQ(mpx_obj_opaque_module(a[0]), "builtins") &&
      STREQ(mpx_obj_opaque_name(a[0]), "slice")) {
    if (mpx_obj_type(a[1]) == MPX_OBJ_OPAQUE && STREQ(mpx_obj_opaque_module(a[1]), "array"))
      return mpx__mt_type_error(c, "assigning an array to an Array slice is not supported by "
                                "mpx's manager; assign the items one by one");
    return mpx__mt_type_error(c, "can only assign array (not \"%s\") to array slice",
                              mpx__mt_type_name(a[1]));
  }
  if (!mpx__mt_is_int(a[0]))
    return mpx__mt_type_error(c, "array indices must be integers");
  if (mpx__mt_index(mpx__mt_int_of(a[0]), arr->v.len, &i) != 0)
    return mpx__mcall_raisef(c, "builtins", "IndexError",
                             "array assignment index out of range");
  mpx_obj_t *x = array_item(c, arr->tc, a[1]);
  if (x == NULL) return MPX__M_DONE;
  mpx_obj_release(*mpx__mvec_at(&arr->v, i));
  *mpx__mvec_at(&arr->v, i) = x;
  return mpx__mcall_return(c, NULL);
}

static const mpx__mmethod_t array_methods[] = {
    {"__len__", array_len}, {"__getitem__", array_getitem},
    {"__setitem__", array_setitem}, {NULL, NULL}};

static mpx_obj_t *array_value(mpx__mobj_t *o) { return mpx__mvec_to_array(&((array_t *)o)->v); }

static void array_repr(mpx__mobj_t *o, char *buf, size_t n) {
  array_t *arr = (array_t *)o;
  char open[16];
  snprintf(open, sizeof open, "array('%c', [", arr->tc);
  mpx__mvec_repr(&arr->v, open, "])", buf, n);
}

const mpx__mtype_t mpx__marray_type = {
    .name = "Array", .methods = array_methods, .create = array_create,
    .destroy = array_destroy, .value = array_value, .repr = array_repr};
