/* What the typeids a manager serves share (manager_types.h): errors,
 * argument binding, Python's view of values, small object helpers, and
 * the registry of shipped types. Everything runs on the manager's loop: a
 * method that would block parks its call (mpx__mobj_park) and the object
 * answers it later (mpx__mcall_complete), so no client ever blocks the
 * loop or another client. */
#include "manager_types.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_wire.h"

/* ---- errors and argument binding --------------------------------------------- */

int mpx__mt_type_error(mpx__mcall_t *c, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return mpx__mcall_raisef(c, "builtins", "TypeError", "%s", buf);
}

/* An exception whose one argument is a value (KeyError(key)). */
int mpx__mt_raise_with(mpx__mcall_t *c, const char *name, const mpx_obj_t *v) {
  mpx_obj_t *a = mpx_obj_tuple(1);
  if (a) mpx_obj_append(a, mpx_obj_retain((mpx_obj_t *)v));
  return mpx__mcall_raise(c, "builtins", name, a);
}

const char *mpx__mt_type_name(const mpx_obj_t *o) {
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_NULL: return "NoneType";
  case MPX_OBJ_BOOL: return "bool";
  case MPX_OBJ_INT: case MPX_OBJ_BIGINT: return "int";
  case MPX_OBJ_FLOAT: return "float";
  case MPX_OBJ_STR: return "str";
  case MPX_OBJ_BYTES: return "bytes";
  case MPX_OBJ_ARRAY: return "list";
  case MPX_OBJ_TUPLE: return "tuple";
  case MPX_OBJ_MAP: return "dict";
  default: return mpx_obj_opaque_name(o);
  }
}

/* Argument binding: positional i or keyword names[i]. Sets a TypeError
 * reply and returns -1 for too many positionals, an unknown or repeated
 * keyword, or fewer than `required`. */
int mpx__mt_bind(mpx__mcall_t *c, const char *const *names, size_t required,
                const mpx_obj_t **out) {
  size_t n = 0, np = mpx_obj_len(c->args);
  while (names[n]) n++;
  if (np > n) {
    mpx__mt_type_error(c, "%s() takes at most %zu arguments (%zu given)", c->method, n,
               np);
    return -1;
  }
  for (size_t i = 0; i < n; i++) out[i] = i < np ? mpx_obj_item(c->args, i) : NULL;
  for (size_t k = 0; k < mpx_obj_len(c->kwds); k++) {
    const mpx_obj_t *key = mpx_obj_map_key(c->kwds, k);
    size_t len;
    const char *s = mpx_obj_str_data(key, &len);
    size_t i = 0;
    for (; s && i < n; i++)
      if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) break;
    if (s == NULL || i == n) {
      mpx__mt_type_error(c, "%s() got an unexpected keyword argument", c->method);
      return -1;
    }
    if (out[i] != NULL) {
      mpx__mt_type_error(c, "%s() got multiple values for argument '%s'", c->method,
                 names[i]);
      return -1;
    }
    out[i] = mpx_obj_map_value(c->kwds, k);
  }
  for (size_t i = 0; i < required; i++)
    if (out[i] == NULL) {
      mpx__mt_type_error(c, "%s() missing required argument '%s'", c->method, names[i]);
      return -1;
    }
  return 0;
}

/* A constructor's arguments, bound as those of a call to `method` (c's own
 * args are the create request's). On an error c's reply is set: -1. */
int mpx__mt_bind_new(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                    const mpx_obj_t *kwds, const char *const *names,
                    size_t required, const mpx_obj_t **out) {
  mpx__mcall_t tmp = *c;
  tmp.args = args;
  tmp.kwds = kwds;
  tmp.method = method;
  if (mpx__mt_bind(&tmp, names, required, out) == 0) return 0;
  c->kind = tmp.kind;
  c->payload = tmp.payload;
  return -1;
}


int mpx__mt_no_args(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                   const mpx_obj_t *kwds) {
  if (mpx_obj_len(args) || mpx_obj_len(kwds)) {
    mpx__mt_type_error(c, "%s() takes no arguments", method);
    return -1;
  }
  return 0;
}




/* ---- Python's view of values ---------------------------------------------- */

bool mpx__mt_truthy(const mpx_obj_t *o) {
  if (o == NULL) return false;
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_NULL: return false;
  case MPX_OBJ_BOOL: return mpx_obj_get_bool(o) != 0;
  case MPX_OBJ_INT: return mpx_obj_get_int(o) != 0;
  case MPX_OBJ_FLOAT: return mpx_obj_get_float(o) != 0.0;
  case MPX_OBJ_STR: case MPX_OBJ_BYTES: case MPX_OBJ_ARRAY:
  case MPX_OBJ_TUPLE: case MPX_OBJ_MAP: return mpx_obj_len(o) != 0;
  default: return true;
  }
}

/* An int argument (Python's __index__): 0, or -1 with a TypeError set. */
int mpx__mt_want_int(mpx__mcall_t *c, const mpx_obj_t *o, int64_t *v) {
  if (mpx__mt_is_int(o)) {
    *v = mpx__mt_int_of(o);
    return 0;
  }
  if (mpx_obj_type(o) == MPX_OBJ_BIGINT) {
    mpx__mcall_raisef(c, "builtins", "OverflowError",
                      "Python int too large to convert to C ssize_t");
    return -1;
  }
  mpx__mt_type_error(c, "'%s' object cannot be interpreted as an integer",
             mpx__mt_type_name(o));
  return -1;
}

/* Python's ==, close enough: numbers by value across bool/int/float,
 * sequences item by item, the rest as mpx_obj_equal. */
bool mpx__mt_eq(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (mpx__mt_is_num(a) && mpx__mt_is_num(b)) {
    if (mpx__mt_is_int(a) && mpx__mt_is_int(b)) return mpx__mt_int_of(a) == mpx__mt_int_of(b);
    return mpx__mt_num_of(a) == mpx__mt_num_of(b);
  }
  mpx_obj_type_t ta = mpx_obj_type(a), tb = mpx_obj_type(b);
  if ((ta == MPX_OBJ_TUPLE || ta == MPX_OBJ_ARRAY) && ta == tb) {
    size_t n = mpx_obj_len(a);
    if (n != mpx_obj_len(b)) return false;
    for (size_t i = 0; i < n; i++)
      if (!mpx__mt_eq(mpx_obj_item(a, i), mpx_obj_item(b, i))) return false;
    return true;
  }
  return mpx_obj_equal(a, b) != 0;
}

/* A hash consistent with mpx__mt_eq. */
uint64_t mpx__mt_hash(const mpx_obj_t *o) {
  if (mpx__mt_is_int(o)) return (uint64_t)mpx__mt_int_of(o) * 0x9e3779b97f4a7c15ull;
  if (mpx_obj_type(o) == MPX_OBJ_FLOAT) {
    double d = mpx_obj_get_float(o);
    if (d == floor(d) && fabs(d) < 9.2e18)
      return (uint64_t)(int64_t)d * 0x9e3779b97f4a7c15ull;
    return mpx_obj_hash(o);
  }
  if (mpx_obj_type(o) == MPX_OBJ_TUPLE) {
    uint64_t h = 0x345678;
    for (size_t i = 0; i < mpx_obj_len(o); i++)
      h = (h ^ mpx__mt_hash(mpx_obj_item(o, i))) * 1000003u;
    return h;
  }
  return mpx_obj_hash(o);
}

/* Whether Python could hash it: no lists, dicts or sets inside. */
const char *mpx__mt_unhashable(const mpx_obj_t *o) {
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_ARRAY: return "list";
  case MPX_OBJ_MAP: return "dict";
  case MPX_OBJ_TUPLE:
    for (size_t i = 0; i < mpx_obj_len(o); i++) {
      const char *u = mpx__mt_unhashable(mpx_obj_item(o, i));
      if (u) return u;
    }
    return NULL;
  case MPX_OBJ_OPAQUE:
    if (strcmp(mpx_obj_opaque_module(o), "builtins") == 0 &&
        (strcmp(mpx_obj_opaque_name(o), "set") == 0 ||
         strcmp(mpx_obj_opaque_name(o), "bytearray") == 0))
      return mpx_obj_opaque_name(o);
    return NULL;
  default: return NULL;
  }
}

/* The operands of the last comparison mpx__mt_cmp found unordered (a < b), for
 * Python's message. */
_Thread_local const mpx_obj_t *mpx__mt_unordered_a, *mpx__mt_unordered_b;

/* Python's ordering for sort: -1/0/1, or -2 when the types do not order. */
int mpx__mt_cmp(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (mpx__mt_is_num(a) && mpx__mt_is_num(b)) {
    if (mpx__mt_is_int(a) && mpx__mt_is_int(b)) {
      int64_t x = mpx__mt_int_of(a), y = mpx__mt_int_of(b);
      return x < y ? -1 : x > y;
    }
    double x = mpx__mt_num_of(a), y = mpx__mt_num_of(b);
    return x < y ? -1 : x > y;
  }
  mpx_obj_type_t ta = mpx_obj_type(a), tb = mpx_obj_type(b);
  if (ta != tb) {
    mpx__mt_unordered_a = a;
    mpx__mt_unordered_b = b;
    return -2;
  }
  if (ta == MPX_OBJ_STR || ta == MPX_OBJ_BYTES) {
    size_t la, lb;
    const void *pa = ta == MPX_OBJ_STR ? (const void *)mpx_obj_str_data(a, &la)
                                       : mpx_obj_bytes_data(a, &la);
    const void *pb = ta == MPX_OBJ_STR ? (const void *)mpx_obj_str_data(b, &lb)
                                       : mpx_obj_bytes_data(b, &lb);
    int r = memcmp(pa, pb, la < lb ? la : lb);
    if (r) return r < 0 ? -1 : 1;
    return la < lb ? -1 : la > lb;
  }
  if (ta == MPX_OBJ_TUPLE || ta == MPX_OBJ_ARRAY) {
    size_t la = mpx_obj_len(a), lb = mpx_obj_len(b);
    for (size_t i = 0; i < la && i < lb; i++) {
      const mpx_obj_t *x = mpx_obj_item(a, i), *y = mpx_obj_item(b, i);
      if (mpx__mt_eq(x, y)) continue;
      return mpx__mt_cmp(x, y);
    }
    return la < lb ? -1 : la > lb;
  }
  mpx__mt_unordered_a = a;
  mpx__mt_unordered_b = b;
  return -2;
}

/* A timeout argument: None/absent is forever (-1), as is more than 1e9.
 * Below zero it is the ValueError negmsg (Queue, Semaphore, Lock); with
 * negmsg NULL, zero or below does not wait (Event, Condition, Barrier, as
 * threading's waits do). Returns 0, or -1 (ValueError/TypeError set). */
int mpx__mt_want_timeout(mpx__mcall_t *c, const mpx_obj_t *t, double *out,
                        const char *negmsg) {
  if (t == NULL || mpx_obj_type(t) == MPX_OBJ_NULL) {
    *out = -1;
    return 0;
  }
  if (!mpx__mt_is_num(t)) {
    mpx__mt_type_error(c, "'%s' object cannot be interpreted as a timeout",
               mpx__mt_type_name(t));
    return -1;
  }
  double d = mpx__mt_num_of(t);
  if (isnan(d)) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "Invalid value NaN (not a number)");
    return -1;
  }
  if (negmsg == NULL && d <= 0) {
    *out = 0;
    return 0;
  }
  if (d < 0) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "%s", negmsg);
    return -1;
  }
  *out = d > 1e9 ? -1 : d;
  return 0;
}

mpx__mobj_t *mpx__mt_alloc(size_t size, const mpx__mtype_t *t) {
  mpx__mobj_t *o = calloc(1, size);
  if (o) o->type = t;
  return o;
}

mpx__mobj_t *mpx__mt_nomem(mpx__mcall_t *c) {
  mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return NULL;
}

mpx_obj_t *mpx__mt_tuple(size_t n, ...) {
  va_list ap;
  mpx_obj_t *t = mpx_obj_tuple(n);
  va_start(ap, n);
  for (size_t i = 0; i < n; i++) {
    mpx_obj_t *x = va_arg(ap, mpx_obj_t *);
    if (t) mpx_obj_append(t, x);
    else mpx_obj_release(x);
  }
  va_end(ap);
  return t;
}

/* ---- small object helpers -------------------------------------------------- */

int mpx__mt_attr_error(mpx__mcall_t *c, const mpx_obj_t *name, const char *what) {
  size_t len;
  const char *s = mpx_obj_str_data(name, &len);
  return mpx__mcall_raisef(c, "builtins", "AttributeError",
                           "'%s' object has no attribute '%.*s'", what,
                           (int)(len > 200 ? 200 : len), s ? s : "?");
}

void mpx__mt_unpark_only(mpx__mobj_t *o, mpx__mcall_t *c) { mpx__mobj_unpark(o, c); }

void mpx__mt_addr_repr(mpx__mobj_t *o, const char *what, char *buf, size_t n) {
  snprintf(buf, n, "<%s object at 0x%s>", what, o->ident);
}

void mpx__mt_free(mpx__mobj_t *o) { free(o); }

/* A plain Python object as protocol 2+ pickles it: cls.__new__(cls) and
 * its __dict__ as state. */
mpx_obj_t *mpx__mt_plain_object(const char *name, mpx_obj_t *state) {
  return mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "multiprocessing.managers", name,
                        mpx_obj_tuple(0), state);
}

/* ---- the registry ---------------------------------------------------------- */

const mpx__mtype_t *const mpx__mtypes[] = {
    &mpx__mqueue_type, &mpx__mjoinable_queue_type, &mpx__mdict_type,
    &mpx__mlist_type, &mpx__mvalue_type, &mpx__marray_type, &mpx__mlock_type,
    &mpx__mrlock_type, &mpx__msem_type, &mpx__mbsem_type, &mpx__mevent_type,
    &mpx__mcond_type, &mpx__mbarrier_type, &mpx__mns_type, &mpx__miter_type,
    NULL};

const mpx__mtype_t *mpx__mtype_find(const char *name) {
  for (size_t i = 0; mpx__mtypes[i]; i++)
    if (STREQ(mpx__mtypes[i]->name, name)) return mpx__mtypes[i];
  return NULL;
}
