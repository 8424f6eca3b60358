/* The SyncManager typeids a manager serves, with CPython's exposed method
 * names and Python's semantics (queue.Queue, dict, list, managers.Value,
 * array.array, threading's Lock, RLock, Semaphore, BoundedSemaphore,
 * Event, Condition, Barrier, managers.Namespace, and the Iterator that
 * dict.__iter__ hands out). Everything runs on the manager's loop: a
 * method that would block parks its call (mpx__mobj_park) and the object
 * answers it later (mpx__mcall_complete), so no client ever blocks the
 * loop or another client. Python's exception classes travel as opaque
 * names (mpx/manager.h). */
#include "manager_types.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manager_wire.h"

/* ---- helpers shared by the types ------------------------------------------ */

void mpx__mobj_park(mpx__mobj_t *o, mpx__mcall_t *c) {
  c->wnext = NULL;
  c->wprev = o->waiters_tail;
  if (o->waiters_tail) o->waiters_tail->wnext = c;
  else o->waiters = c;
  o->waiters_tail = c;
}

void mpx__mobj_unpark(mpx__mobj_t *o, mpx__mcall_t *c) {
  if (c->wprev) c->wprev->wnext = c->wnext;
  else o->waiters = c->wnext;
  if (c->wnext) c->wnext->wprev = c->wprev;
  else o->waiters_tail = c->wprev;
  c->wprev = c->wnext = NULL;
}

int mpx__mcall_return(mpx__mcall_t *c, mpx_obj_t *val) {
  c->kind = MPX__K_RETURN;
  c->payload = val ? val : mpx_obj_null();
  return MPX__M_DONE;
}

int mpx__mcall_raise(mpx__mcall_t *c, const char *module, const char *name,
                     mpx_obj_t *args) {
  c->kind = MPX__K_ERROR;
  c->payload = mpx_obj_opaque(MPX_OPAQUE_REDUCE, module, name,
                              args ? args : mpx_obj_tuple(0), NULL);
  return MPX__M_DONE;
}

int mpx__mcall_raisef(mpx__mcall_t *c, const char *module, const char *name,
                      const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  c->kind = MPX__K_ERROR;
  c->payload = mpx__wire_exception(module, name, buf);
  return MPX__M_DONE;
}

int mpx__mcall_traceback(mpx__mcall_t *c, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  c->kind = MPX__K_TRACEBACK;
  c->payload = mpx_obj_str(buf, SIZE_MAX);
  return MPX__M_DONE;
}

static int type_error(mpx__mcall_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int type_error(mpx__mcall_t *c, const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return mpx__mcall_raisef(c, "builtins", "TypeError", "%s", buf);
}

/* An exception whose one argument is a value (KeyError(key)). */
static int raise_with(mpx__mcall_t *c, const char *name, const mpx_obj_t *v) {
  mpx_obj_t *a = mpx_obj_tuple(1);
  if (a) mpx_obj_append(a, mpx_obj_retain((mpx_obj_t *)v));
  return mpx__mcall_raise(c, "builtins", name, a);
}

static const char *py_type_name(const mpx_obj_t *o) {
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
static int bind(mpx__mcall_t *c, const char *const *names, size_t required,
                const mpx_obj_t **out) {
  size_t n = 0, np = mpx_obj_len(c->args);
  while (names[n]) n++;
  if (np > n) {
    type_error(c, "%s() takes at most %zu arguments (%zu given)", c->method, n,
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
      type_error(c, "%s() got an unexpected keyword argument", c->method);
      return -1;
    }
    if (out[i] != NULL) {
      type_error(c, "%s() got multiple values for argument '%s'", c->method,
                 names[i]);
      return -1;
    }
    out[i] = mpx_obj_map_value(c->kwds, k);
  }
  for (size_t i = 0; i < required; i++)
    if (out[i] == NULL) {
      type_error(c, "%s() missing required argument '%s'", c->method, names[i]);
      return -1;
    }
  return 0;
}

/* A constructor's arguments, bound as those of a call to `method` (c's own
 * args are the create request's). On an error c's reply is set: -1. */
static int bind_new(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                    const mpx_obj_t *kwds, const char *const *names,
                    size_t required, const mpx_obj_t **out) {
  mpx__mcall_t tmp = *c;
  tmp.args = args;
  tmp.kwds = kwds;
  tmp.method = method;
  if (bind(&tmp, names, required, out) == 0) return 0;
  c->kind = tmp.kind;
  c->payload = tmp.payload;
  return -1;
}

#define BIND(c, req, out, ...)                                          \
  do {                                                                  \
    static const char *const names_[] = {__VA_ARGS__, NULL};            \
    if (bind((c), names_, (req), (out)) != 0) return MPX__M_DONE;        \
  } while (0)

/* A TypeError unless a call to `method` got no arguments: 0 or -1. The
 * constructors pass their own; NO_ARGS a method call's. */
static int no_args(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                   const mpx_obj_t *kwds) {
  if (mpx_obj_len(args) || mpx_obj_len(kwds)) {
    type_error(c, "%s() takes no arguments", method);
    return -1;
  }
  return 0;
}

#define NO_ARGS(c)                                                      \
  do {                                                                  \
    if (no_args((c), (c)->method, (c)->args, (c)->kwds) != 0)           \
      return MPX__M_DONE;                                               \
  } while (0)

static bool truthy(const mpx_obj_t *o) {
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

static bool is_int(const mpx_obj_t *o) {
  mpx_obj_type_t t = mpx_obj_type(o);
  return t == MPX_OBJ_INT || t == MPX_OBJ_BOOL;
}

static int64_t int_of(const mpx_obj_t *o) {
  return mpx_obj_type(o) == MPX_OBJ_BOOL ? mpx_obj_get_bool(o)
                                         : mpx_obj_get_int(o);
}

static bool is_num(const mpx_obj_t *o) {
  return is_int(o) || mpx_obj_type(o) == MPX_OBJ_FLOAT;
}

static double num_of(const mpx_obj_t *o) {
  return mpx_obj_type(o) == MPX_OBJ_FLOAT ? mpx_obj_get_float(o)
                                          : (double)int_of(o);
}

/* An int argument (Python's __index__): 0, or -1 with a TypeError set. */
static int want_int(mpx__mcall_t *c, const mpx_obj_t *o, int64_t *v) {
  if (is_int(o)) {
    *v = int_of(o);
    return 0;
  }
  if (mpx_obj_type(o) == MPX_OBJ_BIGINT) {
    mpx__mcall_raisef(c, "builtins", "OverflowError",
                      "Python int too large to convert to C ssize_t");
    return -1;
  }
  type_error(c, "'%s' object cannot be interpreted as an integer",
             py_type_name(o));
  return -1;
}

/* Python's ==, close enough: numbers by value across bool/int/float,
 * sequences item by item, the rest as mpx_obj_equal. */
static bool py_eq(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (is_num(a) && is_num(b)) {
    if (is_int(a) && is_int(b)) return int_of(a) == int_of(b);
    return num_of(a) == num_of(b);
  }
  mpx_obj_type_t ta = mpx_obj_type(a), tb = mpx_obj_type(b);
  if ((ta == MPX_OBJ_TUPLE || ta == MPX_OBJ_ARRAY) && ta == tb) {
    size_t n = mpx_obj_len(a);
    if (n != mpx_obj_len(b)) return false;
    for (size_t i = 0; i < n; i++)
      if (!py_eq(mpx_obj_item(a, i), mpx_obj_item(b, i))) return false;
    return true;
  }
  return mpx_obj_equal(a, b) != 0;
}

/* A hash consistent with py_eq. */
static uint64_t py_hash(const mpx_obj_t *o) {
  if (is_int(o)) return (uint64_t)int_of(o) * 0x9e3779b97f4a7c15ull;
  if (mpx_obj_type(o) == MPX_OBJ_FLOAT) {
    double d = mpx_obj_get_float(o);
    if (d == floor(d) && fabs(d) < 9.2e18)
      return (uint64_t)(int64_t)d * 0x9e3779b97f4a7c15ull;
    return mpx_obj_hash(o);
  }
  if (mpx_obj_type(o) == MPX_OBJ_TUPLE) {
    uint64_t h = 0x345678;
    for (size_t i = 0; i < mpx_obj_len(o); i++)
      h = (h ^ py_hash(mpx_obj_item(o, i))) * 1000003u;
    return h;
  }
  return mpx_obj_hash(o);
}

/* Whether Python could hash it: no lists, dicts or sets inside. */
static const char *unhashable(const mpx_obj_t *o) {
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_ARRAY: return "list";
  case MPX_OBJ_MAP: return "dict";
  case MPX_OBJ_TUPLE:
    for (size_t i = 0; i < mpx_obj_len(o); i++) {
      const char *u = unhashable(mpx_obj_item(o, i));
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

/* The operands of the last comparison py_cmp found unordered (a < b), for
 * Python's message. */
static _Thread_local const mpx_obj_t *unordered_a, *unordered_b;

/* Python's ordering for sort: -1/0/1, or -2 when the types do not order. */
static int py_cmp(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (is_num(a) && is_num(b)) {
    if (is_int(a) && is_int(b)) {
      int64_t x = int_of(a), y = int_of(b);
      return x < y ? -1 : x > y;
    }
    double x = num_of(a), y = num_of(b);
    return x < y ? -1 : x > y;
  }
  mpx_obj_type_t ta = mpx_obj_type(a), tb = mpx_obj_type(b);
  if (ta != tb) {
    unordered_a = a;
    unordered_b = b;
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
      if (py_eq(x, y)) continue;
      return py_cmp(x, y);
    }
    return la < lb ? -1 : la > lb;
  }
  unordered_a = a;
  unordered_b = b;
  return -2;
}

/* A timeout argument: None/absent is forever (-1), as is more than 1e9.
 * Below zero it is the ValueError negmsg (Queue, Semaphore, Lock); with
 * negmsg NULL, zero or below does not wait (Event, Condition, Barrier, as
 * threading's waits do). Returns 0, or -1 (ValueError/TypeError set). */
static int want_timeout(mpx__mcall_t *c, const mpx_obj_t *t, double *out,
                        const char *negmsg) {
  if (t == NULL || mpx_obj_type(t) == MPX_OBJ_NULL) {
    *out = -1;
    return 0;
  }
  if (!is_num(t)) {
    type_error(c, "'%s' object cannot be interpreted as a timeout",
               py_type_name(t));
    return -1;
  }
  double d = num_of(t);
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

static mpx__mobj_t *obj_alloc(size_t size, const mpx__mtype_t *t) {
  mpx__mobj_t *o = calloc(1, size);
  if (o) o->type = t;
  return o;
}

static mpx__mobj_t *nomem(mpx__mcall_t *c) {
  mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return NULL;
}

static mpx_obj_t *tuple_of(size_t n, ...) {
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

static size_t dump(const mpx_obj_t *o, char *buf, size_t n) {
  return mpx_obj_dump(o, buf, n);
}

#define STREQ(a, b) (strcmp((a), (b)) == 0)

/* ---- a growable vector of values (list, queue, array) ----------------------- */

typedef struct {
  mpx_obj_t **v;
  size_t head, len, cap; /* a ring: items head..head+len (mod cap) */
} vec_t;

static mpx_obj_t **vec_at(vec_t *a, size_t i) {
  return &a->v[(a->head + i) % a->cap];
}

static int vec_grow(vec_t *a, size_t need) {
  if (need <= a->cap) return 0;
  size_t cap = a->cap ? a->cap : 8;
  while (cap < need) cap *= 2;
  mpx_obj_t **v = malloc(cap * sizeof *v);
  if (v == NULL) return -1;
  for (size_t i = 0; i < a->len; i++) v[i] = *vec_at(a, i);
  free(a->v);
  a->v = v;
  a->head = 0;
  a->cap = cap;
  return 0;
}

/* Steals x. */
static int vec_push(vec_t *a, mpx_obj_t *x) {
  if (vec_grow(a, a->len + 1) != 0) {
    mpx_obj_release(x);
    return -1;
  }
  *vec_at(a, a->len++) = x;
  return 0;
}

static mpx_obj_t *vec_popleft(vec_t *a) {
  mpx_obj_t *x = a->v[a->head];
  a->head = (a->head + 1) % a->cap;
  a->len--;
  return x;
}

/* Inserts x (stolen) before index i (0..len). */
static int vec_insert(vec_t *a, size_t i, mpx_obj_t *x) {
  if (vec_grow(a, a->len + 1) != 0) {
    mpx_obj_release(x);
    return -1;
  }
  for (size_t j = a->len; j > i; j--) *vec_at(a, j) = *vec_at(a, j - 1);
  *vec_at(a, i) = x;
  a->len++;
  return 0;
}

/* Removes index i and returns it (the caller's reference). */
static mpx_obj_t *vec_remove(vec_t *a, size_t i) {
  mpx_obj_t *x = *vec_at(a, i);
  for (size_t j = i; j + 1 < a->len; j++) *vec_at(a, j) = *vec_at(a, j + 1);
  a->len--;
  return x;
}

static void vec_clear(vec_t *a) {
  for (size_t i = 0; i < a->len; i++) mpx_obj_release(*vec_at(a, i));
  a->len = 0;
  a->head = 0;
}

static void vec_free(vec_t *a) {
  vec_clear(a);
  free(a->v);
  a->v = NULL;
  a->cap = 0;
}

static mpx_obj_t *vec_to_array(vec_t *a) {
  mpx_obj_t *r = mpx_obj_array(a->len);
  for (size_t i = 0; r && i < a->len; i++)
    if (mpx_obj_append(r, mpx_obj_retain(*vec_at(a, i))) != 0) {
      mpx_obj_release(r);
      return NULL;
    }
  return r;
}

/* Appends the items of a list/tuple (retained). */
static int vec_extend(vec_t *a, const mpx_obj_t *seq) {
  size_t n = mpx_obj_len(seq);
  if (vec_grow(a, a->len + n) != 0) return -1;
  for (size_t i = 0; i < n; i++)
    *vec_at(a, a->len++) = mpx_obj_retain(mpx_obj_item(seq, i));
  return 0;
}

static void vec_repr(vec_t *a, const char *open, const char *close, char *buf,
                     size_t n) {
  size_t off = 0;
  off += (size_t)snprintf(buf, n, "%s", open);
  for (size_t i = 0; i < a->len && off + 8 < n; i++) {
    if (i) off += (size_t)snprintf(buf + off, n - off, ", ");
    if (off < n) off += dump(*vec_at(a, i), buf + off, n - off);
  }
  if (off < n) snprintf(buf + off, n - off, "%s", close);
}

/* An iterable argument as a sequence of values: list/tuple as they are, a
 * dict's keys, a str's characters, bytes' ints. New reference or NULL
 * (TypeError set). */
static mpx_obj_t *iterable(mpx__mcall_t *c, const mpx_obj_t *o) {
  mpx_obj_type_t t = mpx_obj_type(o);
  if (t == MPX_OBJ_ARRAY || t == MPX_OBJ_TUPLE) return mpx_obj_retain((mpx_obj_t *)o);
  if ((t == MPX_OBJ_STR || t == MPX_OBJ_BYTES) && mpx_obj_len(o) > ((size_t)1 << 20)) {
    /* one object per character: bounded, so a request cannot make the
     * server allocate far beyond its own size */
    mpx__mcall_raisef(c, "builtins", "MemoryError",
                      "mpx manager: iterating a %s of %zu bytes (limit 1 MiB)",
                      py_type_name(o), mpx_obj_len(o));
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
      if (!is_int(mpx_obj_item(a, i))) goto not_iterable_r;
    if (na == 1) v[1] = int_of(mpx_obj_item(a, 0));
    for (size_t i = 0; na > 1 && i < na; i++) v[i] = int_of(mpx_obj_item(a, i));
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
    type_error(c, "'%s' object is not iterable", py_type_name(o));
    return NULL;
  }
  return r;
}

/* ---- slices ----------------------------------------------------------------- */

/* A builtins.slice(start, stop, step) opaque: 1, with Python's
 * PySlice_AdjustIndices result; 0 when o is no slice; -1 on a bad one
 * (error set). */
static int get_slice(mpx__mcall_t *c, const mpx_obj_t *o, size_t len,
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
    if (v[i] && mpx_obj_type(v[i]) != MPX_OBJ_NULL && !is_int(v[i])) {
      type_error(c, "slice indices must be integers or None or have an "
                 "__index__ method");
      return -1;
    }
  if (v[2] && is_int(v[2])) st = int_of(v[2]);
  if (st == 0) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "slice step cannot be zero");
    return -1;
  }
  if (v[0] && is_int(v[0])) {
    b = int_of(v[0]);
    if (b < 0) { b += L; if (b < 0) b = st < 0 ? -1 : 0; }
    else if (b >= L) b = st < 0 ? L - 1 : L;
  } else {
    b = st < 0 ? L - 1 : 0;
  }
  if (v[1] && is_int(v[1])) {
    e = int_of(v[1]);
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
static int norm_index(int64_t i, size_t len, size_t *out) {
  if (i < 0) i += (int64_t)len;
  if (i < 0 || (uint64_t)i >= len) return -1;
  *out = (size_t)i;
  return 0;
}

/* ================================================================== Queue */

enum { Q_GET = 1, Q_PUT, Q_JOIN };

typedef struct {
  mpx__mobj_t h;
  vec_t items;
  int64_t maxsize;
  int64_t unfinished;
} queue_t;

static const char *const queue_exposed[] = {
    "empty", "full", "get", "get_nowait", "join", "put", "put_nowait",
    "qsize", "task_done", NULL};

static bool q_full(queue_t *q) {
  return q->maxsize > 0 && (int64_t)q->items.len >= q->maxsize;
}

/* Moves items to parked getters and parked puts into free room, and
 * answers joiners, until nothing moves. */
static void q_pump(queue_t *q) {
  bool moved = true;
  while (moved) {
    moved = false;
    for (mpx__mcall_t *c = q->h.waiters, *nx; c; c = nx) {
      nx = c->wnext;
      if (c->phase == Q_GET && q->items.len > 0) {
        mpx__mobj_unpark(&q->h, c);
        mpx__mcall_return(c, vec_popleft(&q->items));
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
      if (c->phase == Q_PUT && !q_full(q)) {
        mpx__mobj_unpark(&q->h, c);
        const mpx_obj_t *item = mpx_obj_item(c->args, 0);
        if (item == NULL) item = mpx_obj_map_get_str(c->kwds, "item");
        if (vec_push(&q->items, mpx_obj_retain((mpx_obj_t *)item)) != 0) {
          mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
        } else {
          q->unfinished++;
          mpx__mcall_return(c, NULL);
        }
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
      if (c->phase == Q_JOIN && q->unfinished == 0) {
        mpx__mobj_unpark(&q->h, c);
        mpx__mcall_return(c, NULL);
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
    }
  }
}

static mpx__mobj_t *queue_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"maxsize", NULL};
  int64_t maxsize = 0;
  if (bind_new(c, "Queue", args, kwds, names, 0, a) != 0 ||
      (a[0] && want_int(c, a[0], &maxsize) != 0))
    return NULL;
  queue_t *q = (queue_t *)obj_alloc(sizeof *q, NULL);
  if (q == NULL) return nomem(c);
  q->maxsize = maxsize;
  return &q->h;
}

static void queue_destroy(mpx__mobj_t *o) {
  queue_t *q = (queue_t *)o;
  vec_free(&q->items);
  free(q);
}

static int queue_get(queue_t *q, mpx__mcall_t *c, bool block, double timeout) {
  if (q->items.len > 0) {
    int r = mpx__mcall_return(c, vec_popleft(&q->items));
    q_pump(q); /* room for a parked put */
    return r;
  }
  if (!block || timeout == 0)
    return mpx__mcall_raise(c, "queue", "Empty", NULL);
  c->phase = Q_GET;
  c->timeout = timeout;
  mpx__mobj_park(&q->h, c);
  return MPX__M_PARKED;
}

static int queue_put(queue_t *q, mpx__mcall_t *c, const mpx_obj_t *item,
                     bool block, double timeout) {
  if (!q_full(q)) {
    if (vec_push(&q->items, mpx_obj_retain((mpx_obj_t *)item)) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    q->unfinished++;
    q_pump(q); /* a parked get */
    return mpx__mcall_return(c, NULL);
  }
  if (!block || timeout == 0)
    return mpx__mcall_raise(c, "queue", "Full", NULL);
  c->phase = Q_PUT;
  c->timeout = timeout;
  mpx__mobj_park(&q->h, c);
  return MPX__M_PARKED;
}

static int queue_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  queue_t *q = (queue_t *)o;
  const mpx_obj_t *a[3];
  double t;
  const char *m = c->method;
  static const char *neg = "'timeout' must be a non-negative number";
  if (STREQ(m, "get")) {
    BIND(c, 0, a, "block", "timeout");
    bool block = a[0] == NULL || truthy(a[0]);
    if (block && want_timeout(c, a[1], &t, neg) != 0) return MPX__M_DONE;
    return queue_get(q, c, block, block ? t : 0);
  }
  if (STREQ(m, "get_nowait")) {
    NO_ARGS(c);
    return queue_get(q, c, false, 0);
  }
  if (STREQ(m, "put")) {
    BIND(c, 1, a, "item", "block", "timeout");
    bool block = a[1] == NULL || truthy(a[1]);
    if (block && want_timeout(c, a[2], &t, neg) != 0) return MPX__M_DONE;
    return queue_put(q, c, a[0], block, block ? t : 0);
  }
  if (STREQ(m, "put_nowait")) {
    BIND(c, 1, a, "item");
    return queue_put(q, c, a[0], false, 0);
  }
  if (STREQ(m, "qsize")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_int((int64_t)q->items.len));
  }
  if (STREQ(m, "empty")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_bool(q->items.len == 0));
  }
  if (STREQ(m, "full")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_bool(q_full(q)));
  }
  if (STREQ(m, "task_done")) {
    NO_ARGS(c);
    if (q->unfinished <= 0)
      return mpx__mcall_raisef(c, "builtins", "ValueError",
                               "task_done() called too many times");
    q->unfinished--;
    if (q->unfinished == 0) q_pump(q);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "join")) {
    NO_ARGS(c);
    if (q->unfinished == 0) return mpx__mcall_return(c, NULL);
    c->phase = Q_JOIN;
    c->timeout = -1;
    mpx__mobj_park(&q->h, c);
    return MPX__M_PARKED;
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", m);
}

static void queue_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mobj_unpark(o, c);
  if (c->phase == Q_GET) mpx__mcall_raise(c, "queue", "Empty", NULL);
  else mpx__mcall_raise(c, "queue", "Full", NULL);
  mpx__mcall_complete(c);
}

static void unpark_only(mpx__mobj_t *o, mpx__mcall_t *c) { mpx__mobj_unpark(o, c); }

static void addr_repr(mpx__mobj_t *o, const char *what, char *buf, size_t n) {
  snprintf(buf, n, "<%s object at 0x%s>", what, o->ident);
}

static void queue_repr(mpx__mobj_t *o, char *buf, size_t n) {
  addr_repr(o, "queue.Queue", buf, n);
}

static const mpx__mtype_t queue_type = {
    "Queue", queue_exposed, NULL, queue_create, queue_destroy, queue_call,
    queue_expire, unpark_only, NULL, NULL, queue_repr};
static const mpx__mtype_t joinable_queue_type = {
    "JoinableQueue", queue_exposed, NULL, queue_create, queue_destroy,
    queue_call, queue_expire, unpark_only, NULL, NULL, queue_repr};

/* =========================================================== dict (ordered) */

typedef struct {
  mpx_obj_t *k, *v; /* k NULL: a deleted slot */
  uint64_t h;
} dent_t;

typedef struct {
  mpx__mobj_t h;
  dent_t *e;
  size_t n_e, cap_e, live;
  uint32_t *idx; /* open addressing: entry index + 1, 0 empty */
  size_t cap_i;  /* power of two */
} dict_t;

static const char *const dict_exposed[] = {
    "__contains__", "__delitem__", "__getitem__", "__iter__", "__len__",
    "__setitem__", "clear", "copy", "get", "items", "keys", "pop", "popitem",
    "setdefault", "update", "values", NULL};

static int dict_rehash(dict_t *d, size_t min_cap) {
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
static size_t dict_slot(dict_t *d, const mpx_obj_t *k, uint64_t h, int *found) {
  size_t s = h & (d->cap_i - 1), tomb = SIZE_MAX;
  for (;;) {
    uint32_t x = d->idx[s];
    if (x == 0) {
      *found = 0;
      return tomb != SIZE_MAX ? tomb : s;
    }
    dent_t *e = &d->e[x - 1];
    if (e->k == NULL) {
      if (tomb == SIZE_MAX) tomb = s;
    } else if (e->h == h && py_eq(e->k, k)) {
      *found = 1;
      return s;
    }
    s = (s + 1) & (d->cap_i - 1);
  }
}

static dent_t *dict_find(dict_t *d, const mpx_obj_t *k) {
  int f;
  if (d->cap_i == 0) return NULL;
  size_t s = dict_slot(d, k, py_hash(k), &f);
  return f ? &d->e[d->idx[s] - 1] : NULL;
}

/* Sets k -> v (both retained here). 0 or -1 (out of memory). */
static int dict_set(dict_t *d, const mpx_obj_t *k, const mpx_obj_t *v) {
  uint64_t h = py_hash(k);
  int f;
  if (d->cap_i == 0 || (d->n_e + 1) * 2 > d->cap_i) {
    if (dict_rehash(d, d->live + 1) != 0) return -1;
  }
  size_t s = dict_slot(d, k, h, &f);
  if (f) {
    dent_t *e = &d->e[d->idx[s] - 1];
    mpx_obj_release(e->v);
    e->v = mpx_obj_retain((mpx_obj_t *)v);
    return 0;
  }
  if (d->n_e == d->cap_e) {
    size_t cap = d->cap_e ? d->cap_e * 2 : 8;
    dent_t *ne = realloc(d->e, cap * sizeof *ne);
    if (ne == NULL) return -1;
    d->e = ne;
    d->cap_e = cap;
  }
  if (d->n_e >= UINT32_MAX - 1) return -1;
  d->e[d->n_e] = (dent_t){mpx_obj_retain((mpx_obj_t *)k),
                          mpx_obj_retain((mpx_obj_t *)v), h};
  d->idx[s] = (uint32_t)(++d->n_e);
  d->live++;
  return 0;
}

/* Removes an entry; returns its value (the caller's). */
static mpx_obj_t *dict_take(dict_t *d, dent_t *e) {
  mpx_obj_t *v = e->v;
  mpx_obj_release(e->k);
  e->k = NULL;
  e->v = NULL;
  d->live--;
  return v;
}

static void dict_clear(dict_t *d) {
  for (size_t i = 0; i < d->n_e; i++)
    if (d->e[i].k) {
      mpx_obj_release(d->e[i].k);
      mpx_obj_release(d->e[i].v);
    }
  d->n_e = d->live = 0;
  if (d->idx) memset(d->idx, 0, d->cap_i * sizeof *d->idx);
}

static mpx_obj_t *dict_map(dict_t *d) {
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
static mpx_obj_t *dict_list(dict_t *d, int what) {
  mpx_obj_t *a = mpx_obj_array(d->live);
  for (size_t i = 0; a && i < d->n_e; i++) {
    dent_t *e = &d->e[i];
    if (!e->k) continue;
    mpx_obj_t *x = what == 0 ? mpx_obj_retain(e->k)
                   : what == 1 ? mpx_obj_retain(e->v)
                               : tuple_of(2, mpx_obj_retain(e->k), mpx_obj_retain(e->v));
    if (mpx_obj_append(a, x) != 0) {
      mpx_obj_release(a);
      return NULL;
    }
  }
  return a;
}

static int check_key(mpx__mcall_t *c, const mpx_obj_t *k) {
  const char *u = unhashable(k);
  if (u) {
    type_error(c, "unhashable type: '%s'", u);
    return -1;
  }
  return 0;
}

/* dict.update's argument: a map, or a sequence of pairs. */
static int dict_update(dict_t *d, mpx__mcall_t *c, const mpx_obj_t *src) {
  if (mpx_obj_type(src) == MPX_OBJ_MAP) {
    for (size_t i = 0; i < mpx_obj_len(src); i++) {
      if (check_key(c, mpx_obj_map_key(src, i)) != 0) return -1;
      if (dict_set(d, mpx_obj_map_key(src, i), mpx_obj_map_value(src, i)) != 0)
        goto oom;
    }
    return 0;
  }
  mpx_obj_t *seq = iterable(c, src);
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
    if (dict_set(d, mpx_obj_item(p, 0), mpx_obj_item(p, 1)) != 0) {
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

static int dict_update_kw(dict_t *d, mpx__mcall_t *c, const mpx_obj_t *kw) {
  for (size_t i = 0; i < mpx_obj_len(kw); i++)
    if (dict_set(d, mpx_obj_map_key(kw, i), mpx_obj_map_value(kw, i)) != 0) {
      mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
      return -1;
    }
  return 0;
}

static mpx__mobj_t *dict_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  dict_t *d = (dict_t *)obj_alloc(sizeof *d, NULL);
  if (d == NULL) return nomem(c);
  if (mpx_obj_len(args) > 1) {
    type_error(c, "dict expected at most 1 argument, got %zu", mpx_obj_len(args));
    goto fail;
  }
  if (mpx_obj_len(args) == 1 && dict_update(d, c, mpx_obj_item(args, 0)) != 0)
    goto fail;
  if (dict_update_kw(d, c, kwds) != 0) goto fail;
  return &d->h;
fail:
  dict_clear(d);
  free(d->e);
  free(d->idx);
  free(d);
  return NULL;
}

static void dict_destroy(mpx__mobj_t *o) {
  dict_t *d = (dict_t *)o;
  dict_clear(d);
  free(d->e);
  free(d->idx);
  free(d);
}

static mpx__mobj_t *iter_new(mpx_obj_t *items); /* steals */

static int dict_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  dict_t *d = (dict_t *)o;
  const mpx_obj_t *a[2];
  const char *m = c->method;
  dent_t *e;
  if (STREQ(m, "__getitem__")) {
    BIND(c, 1, a, "key");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if ((e = dict_find(d, a[0])) == NULL) return raise_with(c, "KeyError", a[0]);
    return mpx__mcall_return(c, mpx_obj_retain(e->v));
  }
  if (STREQ(m, "__setitem__")) {
    BIND(c, 2, a, "key", "value");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if (dict_set(d, a[0], a[1]) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__delitem__")) {
    BIND(c, 1, a, "key");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if ((e = dict_find(d, a[0])) == NULL) return raise_with(c, "KeyError", a[0]);
    mpx_obj_release(dict_take(d, e));
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__contains__")) {
    BIND(c, 1, a, "key");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    return mpx__mcall_return(c, mpx_obj_bool(dict_find(d, a[0]) != NULL));
  }
  if (STREQ(m, "__len__")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_int((int64_t)d->live));
  }
  if (STREQ(m, "__iter__")) {
    NO_ARGS(c);
    mpx_obj_t *keys = dict_list(d, 0);
    if (keys == NULL || (c->proxy = iter_new(keys)) == NULL)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    c->kind = MPX__K_PROXY;
    return MPX__M_DONE;
  }
  if (STREQ(m, "get")) {
    BIND(c, 1, a, "key", "default");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if ((e = dict_find(d, a[0])) != NULL)
      return mpx__mcall_return(c, mpx_obj_retain(e->v));
    return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)a[1]));
  }
  if (STREQ(m, "setdefault")) {
    BIND(c, 1, a, "key", "default");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if ((e = dict_find(d, a[0])) != NULL)
      return mpx__mcall_return(c, mpx_obj_retain(e->v));
    const mpx_obj_t *v = a[1] ? a[1] : mpx_obj_null();
    if (dict_set(d, a[0], v) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)v));
  }
  if (STREQ(m, "pop")) {
    BIND(c, 1, a, "key", "default");
    if (check_key(c, a[0]) != 0) return MPX__M_DONE;
    if ((e = dict_find(d, a[0])) != NULL) return mpx__mcall_return(c, dict_take(d, e));
    if (a[1]) return mpx__mcall_return(c, mpx_obj_retain((mpx_obj_t *)a[1]));
    return raise_with(c, "KeyError", a[0]);
  }
  if (STREQ(m, "popitem")) {
    NO_ARGS(c);
    for (size_t i = d->n_e; i-- > 0;)
      if (d->e[i].k) {
        mpx_obj_t *k = mpx_obj_retain(d->e[i].k);
        mpx_obj_t *v = dict_take(d, &d->e[i]);
        d->n_e = i; /* the tail is all deleted now */
        dict_rehash(d, d->live + 1);
        return mpx__mcall_return(c, tuple_of(2, k, v));
      }
    return mpx__mcall_raisef(c, "builtins", "KeyError",
                             "popitem(): dictionary is empty");
  }
  if (STREQ(m, "keys") || STREQ(m, "values") || STREQ(m, "items")) {
    NO_ARGS(c);
    int what = m[0] == 'k' ? 0 : m[0] == 'v' ? 1 : 2;
    return mpx__mcall_return(c, dict_list(d, what));
  }
  if (STREQ(m, "copy")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, dict_map(d));
  }
  if (STREQ(m, "clear")) {
    NO_ARGS(c);
    dict_clear(d);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "update")) {
    if (mpx_obj_len(c->args) > 1)
      return type_error(c, "update expected at most 1 argument, got %zu",
                        mpx_obj_len(c->args));
    if (mpx_obj_len(c->args) == 1 && dict_update(d, c, mpx_obj_item(c->args, 0)) != 0)
      return MPX__M_DONE;
    if (dict_update_kw(d, c, c->kwds) != 0) return MPX__M_DONE;
    return mpx__mcall_return(c, NULL);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", m);
}

static mpx_obj_t *dict_value(mpx__mobj_t *o) { return dict_map((dict_t *)o); }

static void dict_repr(mpx__mobj_t *o, char *buf, size_t n) {
  mpx_obj_t *m = dict_map((dict_t *)o);
  if (m) dump(m, buf, n);
  else snprintf(buf, n, "{...}");
  mpx_obj_release(m);
}

static const mpx__mtype_t dict_type = {
    "dict", dict_exposed, "Iterator", dict_create, dict_destroy, dict_call,
    NULL, NULL, NULL, dict_value, dict_repr};

/* ==================================================================== list */

typedef struct {
  mpx__mobj_t h;
  vec_t v;
} list_t;

static const char *const list_exposed[] = {
    "__add__", "__contains__", "__delitem__", "__getitem__", "__len__",
    "__mul__", "__reversed__", "__rmul__", "__setitem__", "append", "count",
    "extend", "index", "insert", "pop", "remove", "reverse", "sort",
    "__imul__", NULL};

static mpx__mobj_t *list_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  if (mpx_obj_len(args) > 1 || mpx_obj_len(kwds) > 0) {
    type_error(c, "list expected at most 1 argument");
    return NULL;
  }
  list_t *l = (list_t *)obj_alloc(sizeof *l, NULL);
  if (l == NULL) return nomem(c);
  if (mpx_obj_len(args) == 1) {
    mpx_obj_t *seq = iterable(c, mpx_obj_item(args, 0));
    if (seq == NULL || vec_extend(&l->v, seq) != 0) {
      if (seq) nomem(c);
      mpx_obj_release(seq);
      vec_free(&l->v);
      free(l);
      return NULL;
    }
    mpx_obj_release(seq);
  }
  return &l->h;
}

static void list_destroy(mpx__mobj_t *o) {
  list_t *l = (list_t *)o;
  vec_free(&l->v);
  free(l);
}

static int idx_error(mpx__mcall_t *c, const mpx_obj_t *i) {
  return type_error(c, "list indices must be integers or slices, not %s",
                    py_type_name(i));
}

static _Thread_local int cmp_err;
static int sort_cmp(const void *x, const void *y) {
  int r = py_cmp(*(mpx_obj_t *const *)x, *(mpx_obj_t *const *)y);
  if (r == -2) {
    cmp_err = 1;
    return 0;
  }
  return r;
}

/* A stable merge sort (Python's sort is stable), with py_cmp. */
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

static mpx_obj_t *repeat(vec_t *v, int64_t n) {
  if (n < 0) n = 0;
  if (n > 0 && v->len > ((size_t)1 << 22) / (size_t)n) return NULL;
  mpx_obj_t *r = mpx_obj_array(v->len * (size_t)n);
  for (int64_t k = 0; r && k < n; k++)
    for (size_t i = 0; i < v->len; i++) mpx_obj_append(r, mpx_obj_retain(*vec_at(v, i)));
  return r;
}

static int list_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  list_t *l = (list_t *)o;
  vec_t *v = &l->v;
  const mpx_obj_t *a[3];
  const char *m = c->method;
  int64_t i64, st, sp, step;
  size_t i, cnt;
  int s;
  if (STREQ(m, "__len__")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_int((int64_t)v->len));
  }
  if (STREQ(m, "append")) {
    BIND(c, 1, a, "object");
    if (vec_push(v, mpx_obj_retain((mpx_obj_t *)a[0])) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__getitem__")) {
    BIND(c, 1, a, "index");
    if ((s = get_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
    if (s == 1) {
      mpx_obj_t *r = mpx_obj_array(cnt);
      for (size_t k = 0; r && k < cnt; k++)
        mpx_obj_append(r, mpx_obj_retain(*vec_at(v, (size_t)(st + (int64_t)k * step))));
      return mpx__mcall_return(c, r);
    }
    if (!is_int(a[0])) return idx_error(c, a[0]);
    if (norm_index(int_of(a[0]), v->len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError", "list index out of range");
    return mpx__mcall_return(c, mpx_obj_retain(*vec_at(v, i)));
  }
  if (STREQ(m, "__setitem__")) {
    BIND(c, 2, a, "index", "value");
    if ((s = get_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
    if (s == 1) {
      mpx_obj_t *seq = iterable(c, a[1]);
      if (seq == NULL) return MPX__M_DONE;
      size_t n = mpx_obj_len(seq);
      if (step == 1) {
        if (sp < st) sp = st;
        for (int64_t k = sp - 1; k >= st; k--) mpx_obj_release(vec_remove(v, (size_t)k));
        for (size_t k = 0; k < n; k++)
          if (vec_insert(v, (size_t)st + k, mpx_obj_retain(mpx_obj_item(seq, k))) != 0) break;
      } else if (n != cnt) {
        mpx_obj_release(seq);
        return mpx__mcall_raisef(c, "builtins", "ValueError",
                                 "attempt to assign sequence of size %zu to "
                                 "extended slice of size %zu", n, cnt);
      } else {
        for (size_t k = 0; k < n; k++) {
          mpx_obj_t **p = vec_at(v, (size_t)(st + (int64_t)k * step));
          mpx_obj_release(*p);
          *p = mpx_obj_retain(mpx_obj_item(seq, k));
        }
      }
      mpx_obj_release(seq);
      return mpx__mcall_return(c, NULL);
    }
    if (!is_int(a[0])) return idx_error(c, a[0]);
    if (norm_index(int_of(a[0]), v->len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError",
                               "list assignment index out of range");
    mpx_obj_release(*vec_at(v, i));
    *vec_at(v, i) = mpx_obj_retain((mpx_obj_t *)a[1]);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__delitem__")) {
    BIND(c, 1, a, "index");
    if ((s = get_slice(c, a[0], v->len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
    if (s == 1) {
      /* delete from the highest index down so the others stay put */
      for (size_t k = cnt; k-- > 0;) {
        int64_t at = st + (int64_t)k * step;
        if (step < 0) at = st + (int64_t)(cnt - 1 - k) * step;
        mpx_obj_release(vec_remove(v, (size_t)at));
      }
      return mpx__mcall_return(c, NULL);
    }
    if (!is_int(a[0])) return idx_error(c, a[0]);
    if (norm_index(int_of(a[0]), v->len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError",
                               "list assignment index out of range");
    mpx_obj_release(vec_remove(v, i));
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__contains__") || STREQ(m, "count")) {
    BIND(c, 1, a, "value");
    int64_t n = 0;
    for (i = 0; i < v->len; i++)
      if (py_eq(*vec_at(v, i), a[0])) n++;
    if (m[0] == '_') return mpx__mcall_return(c, mpx_obj_bool(n > 0));
    return mpx__mcall_return(c, mpx_obj_int(n));
  }
  if (STREQ(m, "index")) {
    BIND(c, 1, a, "value", "start", "stop");
    int64_t b = 0, e = (int64_t)v->len, L = (int64_t)v->len;
    if (a[1] && want_int(c, a[1], &b) != 0) return MPX__M_DONE;
    if (a[2] && want_int(c, a[2], &e) != 0) return MPX__M_DONE;
    if (b < 0) { b += L; if (b < 0) b = 0; }
    if (e < 0) { e += L; if (e < 0) e = 0; }
    if (e > L) e = L;
    for (int64_t k = b; k < e; k++)
      if (py_eq(*vec_at(v, (size_t)k), a[0])) return mpx__mcall_return(c, mpx_obj_int(k));
    char buf[200];
    dump(a[0], buf, sizeof buf);
    return mpx__mcall_raisef(c, "builtins", "ValueError", "%s is not in list", buf);
  }
  if (STREQ(m, "remove")) {
    BIND(c, 1, a, "value");
    for (i = 0; i < v->len; i++)
      if (py_eq(*vec_at(v, i), a[0])) {
        mpx_obj_release(vec_remove(v, i));
        return mpx__mcall_return(c, NULL);
      }
    return mpx__mcall_raisef(c, "builtins", "ValueError",
                             "list.remove(x): x not in list");
  }
  if (STREQ(m, "insert")) {
    BIND(c, 2, a, "index", "object");
    if (want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
    int64_t L = (int64_t)v->len;
    if (i64 < 0) { i64 += L; if (i64 < 0) i64 = 0; }
    if (i64 > L) i64 = L;
    if (vec_insert(v, (size_t)i64, mpx_obj_retain((mpx_obj_t *)a[1])) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "pop")) {
    BIND(c, 0, a, "index");
    i64 = -1;
    if (a[0] && want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
    if (v->len == 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError", "pop from empty list");
    if (norm_index(i64, v->len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError", "pop index out of range");
    return mpx__mcall_return(c, vec_remove(v, i));
  }
  if (STREQ(m, "extend")) {
    BIND(c, 1, a, "iterable");
    mpx_obj_t *seq = iterable(c, a[0]);
    if (seq == NULL) return MPX__M_DONE;
    int r = vec_extend(v, seq);
    mpx_obj_release(seq);
    if (r != 0) return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "reverse")) {
    NO_ARGS(c);
    for (size_t x = 0, y = v->len; x + 1 < y; x++, y--) {
      mpx_obj_t *t = *vec_at(v, x);
      *vec_at(v, x) = *vec_at(v, y - 1);
      *vec_at(v, y - 1) = t;
    }
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__reversed__")) {
    NO_ARGS(c);
    mpx_obj_t *r = mpx_obj_array(v->len);
    for (size_t k = v->len; r && k-- > 0;) mpx_obj_append(r, mpx_obj_retain(*vec_at(v, k)));
    return mpx__mcall_return(c, r);
  }
  if (STREQ(m, "sort")) {
    BIND(c, 0, a, "key", "reverse");
    if (mpx_obj_len(c->args) > 0) return type_error(c, "sort() takes no positional arguments");
    if (a[0] && mpx_obj_type(a[0]) != MPX_OBJ_NULL)
      return type_error(c, "sort(key=...) cannot run on an mpx manager: "
                        "no Python code runs here");
    if (v->len < 2) return mpx__mcall_return(c, NULL);
    mpx_obj_t **flat = malloc(v->len * sizeof *flat), **tmp = malloc(v->len * sizeof *tmp);
    if (flat == NULL || tmp == NULL) {
      free(flat);
      free(tmp);
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    }
    for (size_t k = 0; k < v->len; k++) flat[k] = *vec_at(v, k);
    cmp_err = 0;
    msort(flat, tmp, v->len, truthy(a[1]));
    free(tmp);
    if (cmp_err) {
      /* CPython's sort meets the first unordered pair in its first run,
       * comparing each item with the one before it (in reverse order for
       * reverse=True): name the types of that comparison, as it does. */
      bool rev = truthy(a[1]);
      for (size_t k = 1; k < v->len; k++) {
        const mpx_obj_t *x = *vec_at(v, rev ? v->len - 1 - k : k);
        const mpx_obj_t *y = *vec_at(v, rev ? v->len - k : k - 1);
        if (py_cmp(x, y) == -2) break;
      }
      free(flat);
      return type_error(c, "'<' not supported between instances of '%s' and '%s'",
                        py_type_name(unordered_a), py_type_name(unordered_b));
    }
    for (size_t k = 0; k < v->len; k++) *vec_at(v, k) = flat[k];
    free(flat);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__add__")) {
    BIND(c, 1, a, "value");
    if (mpx_obj_type(a[0]) != MPX_OBJ_ARRAY)
      return type_error(c, "can only concatenate list (not \"%s\") to list",
                        py_type_name(a[0]));
    mpx_obj_t *r = vec_to_array(v);
    for (size_t k = 0; r && k < mpx_obj_len(a[0]); k++)
      mpx_obj_append(r, mpx_obj_retain(mpx_obj_item(a[0], k)));
    return mpx__mcall_return(c, r);
  }
  if (STREQ(m, "__mul__") || STREQ(m, "__rmul__") || STREQ(m, "__imul__")) {
    BIND(c, 1, a, "value");
    if (want_int(c, a[0], &i64) != 0) return MPX__M_DONE;
    mpx_obj_t *r = repeat(v, i64);
    if (r == NULL) return mpx__mcall_raisef(c, "builtins", "MemoryError", "too large");
    if (m[2] != 'i') return mpx__mcall_return(c, r);
    vec_clear(v);
    int rc = vec_extend(v, r);
    mpx_obj_release(r);
    if (rc != 0) return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    return mpx__mcall_return(c, NULL);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", m);
}

static mpx_obj_t *list_value(mpx__mobj_t *o) { return vec_to_array(&((list_t *)o)->v); }

static void list_repr(mpx__mobj_t *o, char *buf, size_t n) {
  vec_repr(&((list_t *)o)->v, "[", "]", buf, n);
}

static const mpx__mtype_t list_type = {
    "list", list_exposed, NULL, list_create, list_destroy, list_call,
    NULL, NULL, NULL, list_value, list_repr};

/* ================================================================ Iterator */

typedef struct {
  mpx__mobj_t h;
  mpx_obj_t *items;
  size_t pos;
} iter_t;

static const char *const iter_exposed[] = {"__next__", "send", "throw", "close", NULL};
static const mpx__mtype_t iter_type;

static mpx__mobj_t *iter_new(mpx_obj_t *items) {
  iter_t *it = (iter_t *)obj_alloc(sizeof *it, &iter_type);
  if (it == NULL) {
    mpx_obj_release(items);
    return NULL;
  }
  it->items = items;
  return &it->h;
}

static mpx__mobj_t *iter_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  (void)kwds;
  if (mpx_obj_len(args) != 1) {
    type_error(c, "Iterator expects one iterable");
    return NULL;
  }
  mpx_obj_t *seq = iterable(c, mpx_obj_item(args, 0));
  if (seq == NULL) return NULL;
  mpx__mobj_t *o = iter_new(seq);
  return o ? o : nomem(c);
}

static void iter_destroy(mpx__mobj_t *o) {
  mpx_obj_release(((iter_t *)o)->items);
  free(o);
}

static int iter_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  iter_t *it = (iter_t *)o;
  if (STREQ(c->method, "__next__") || STREQ(c->method, "send")) {
    if (it->pos >= mpx_obj_len(it->items))
      return mpx__mcall_raise(c, "builtins", "StopIteration", NULL);
    return mpx__mcall_return(c, mpx_obj_retain(mpx_obj_item(it->items, it->pos++)));
  }
  if (STREQ(c->method, "close")) {
    it->pos = mpx_obj_len(it->items);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(c->method, "throw")) {
    it->pos = mpx_obj_len(it->items);
    if (mpx_obj_len(c->args) >= 1 && mpx_obj_type(mpx_obj_item(c->args, 0)) == MPX_OBJ_OPAQUE) {
      c->kind = MPX__K_ERROR;
      c->payload = mpx_obj_retain(mpx_obj_item(c->args, 0));
      return MPX__M_DONE;
    }
    return type_error(c, "throw() expects an exception");
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", c->method);
}

static void iter_repr(mpx__mobj_t *o, char *buf, size_t n) {
  addr_repr(o, "dict_keyiterator", buf, n);
}

static const mpx__mtype_t iter_type = {
    "Iterator", iter_exposed, NULL, iter_create, iter_destroy, iter_call,
    NULL, NULL, NULL, NULL, iter_repr};

/* =================================================================== Value */

typedef struct {
  mpx__mobj_t h;
  mpx_obj_t *typecode, *value;
} value_t;

static const char *const value_exposed[] = {"get", "set", NULL};

static mpx__mobj_t *value_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  static const char *const names[] = {"typecode", "value", "lock", NULL};
  if (bind_new(c, "Value", args, kwds, names, 2, a) != 0) return NULL;
  value_t *v = (value_t *)obj_alloc(sizeof *v, NULL);
  if (v == NULL) return nomem(c);
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

static int value_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  value_t *v = (value_t *)o;
  const mpx_obj_t *a[1];
  if (STREQ(c->method, "get")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_retain(v->value));
  }
  if (STREQ(c->method, "set")) {
    BIND(c, 1, a, "value");
    mpx_obj_release(v->value);
    v->value = mpx_obj_retain((mpx_obj_t *)a[0]);
    return mpx__mcall_return(c, NULL);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", c->method);
}

/* A plain Python object as protocol 2+ pickles it: cls.__new__(cls) and
 * its __dict__ as state. */
static mpx_obj_t *plain_object(const char *name, mpx_obj_t *state) {
  return mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "multiprocessing.managers", name,
                        mpx_obj_tuple(0), state);
}

static mpx_obj_t *value_value(mpx__mobj_t *o) {
  value_t *v = (value_t *)o;
  mpx_obj_t *st = mpx_obj_map(2);
  if (st == NULL) return NULL;
  mpx_obj_map_set_str(st, "_typecode", mpx_obj_retain(v->typecode));
  mpx_obj_map_set_str(st, "_value", mpx_obj_retain(v->value));
  return plain_object("Value", st);
}

static void value_repr(mpx__mobj_t *o, char *buf, size_t n) {
  value_t *v = (value_t *)o;
  char t[64], x[256];
  dump(v->typecode, t, sizeof t);
  dump(v->value, x, sizeof x);
  snprintf(buf, n, "Value(%s, %s)", t, x);
}

static const mpx__mtype_t value_type = {
    "Value", value_exposed, NULL, value_create, value_destroy, value_call,
    NULL, NULL, NULL, value_value, value_repr};

/* =================================================================== Array */

typedef struct {
  mpx__mobj_t h;
  char tc;
  vec_t v;
} array_t;

static const char *const array_exposed[] = {"__len__", "__getitem__", "__setitem__", NULL};

/* Converts x for typecode tc (array.array's checks): a new reference, or
 * NULL with the error set. */
static mpx_obj_t *array_item(mpx__mcall_t *c, char tc, const mpx_obj_t *x) {
  if (tc == 'f' || tc == 'd') {
    if (!is_num(x)) {
      type_error(c, "must be real number, not %s", py_type_name(x));
      return NULL;
    }
    return mpx_obj_float(num_of(x));
  }
  if (tc == 'u' || tc == 'w') {
    size_t n;
    const char *s = mpx_obj_str_data(x, &n);
    size_t k = 1;
    while (s && k < n && ((uint8_t)s[k] & 0xc0) == 0x80) k++;
    if (s == NULL || n == 0 || k != n) {
      type_error(c, "array item must be unicode character");
      return NULL;
    }
    return mpx_obj_retain((mpx_obj_t *)x);
  }
  if (!is_int(x)) {
    type_error(c, "'%s' object cannot be interpreted as an integer",
               py_type_name(x));
    return NULL;
  }
  int64_t v = int_of(x), lo, hi;
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
  if (bind_new(c, "Array", args, kwds, names, 2, a) != 0) return NULL;
  size_t n;
  const char *tc = mpx_obj_str_data(a[0], &n);
  if (tc == NULL || n != 1 || strchr("bBuwhHiIlLqQfd", tc[0]) == NULL) {
    mpx__mcall_raisef(c, "builtins", "ValueError",
                      "bad typecode (must be b, B, u, w, h, H, i, I, l, L, q, Q, f or d)");
    return NULL;
  }
  array_t *arr = (array_t *)obj_alloc(sizeof *arr, NULL);
  if (arr == NULL) return nomem(c);
  arr->tc = tc[0];
  mpx_obj_t *seq = NULL;
  if (is_int(a[1])) {
    if (int_of(a[1]) < 0 || int_of(a[1]) > (1 << 20)) {
      mpx__mcall_raisef(c, "builtins", "ValueError",
                        "Array size must be 0..1048576 (give a sequence for more)");
      goto fail;
    }
    /* sharedctypes style: Array('i', 10) is ten zeros (array.array
     * refuses an int; accepting it costs nothing) */
    int64_t k = int_of(a[1]);
    for (int64_t j = 0; j < k; j++)
      if (vec_push(&arr->v, strchr("fd", arr->tc) ? mpx_obj_float(0) : mpx_obj_int(0)) != 0)
        goto oom;
    return &arr->h;
  }
  if ((seq = iterable(c, a[1])) == NULL) goto fail;
  for (size_t j = 0; j < mpx_obj_len(seq); j++) {
    mpx_obj_t *x = array_item(c, arr->tc, mpx_obj_item(seq, j));
    if (x == NULL) goto fail;
    if (vec_push(&arr->v, x) != 0) goto oom;
  }
  mpx_obj_release(seq);
  return &arr->h;
oom:
  nomem(c);
fail:
  mpx_obj_release(seq);
  vec_free(&arr->v);
  free(arr);
  return NULL;
}

static void array_destroy(mpx__mobj_t *o) {
  vec_free(&((array_t *)o)->v);
  free(o);
}

static int array_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  array_t *arr = (array_t *)o;
  const mpx_obj_t *a[2];
  size_t i, cnt;
  int64_t st, sp, step;
  int s;
  if (STREQ(c->method, "__len__")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_int((int64_t)arr->v.len));
  }
  if (STREQ(c->method, "__getitem__")) {
    BIND(c, 1, a, "index");
    if ((s = get_slice(c, a[0], arr->v.len, &st, &sp, &step, &cnt)) < 0) return MPX__M_DONE;
    if (s == 1) {
      /* an array.array, as CPython's server returns (what protocol 2
       * writes for one: array.array(typecode, [items])) */
      mpx_obj_t *r = mpx_obj_array(cnt), *args = mpx_obj_tuple(2);
      for (size_t k = 0; r && k < cnt; k++)
        mpx_obj_append(r, mpx_obj_retain(*vec_at(&arr->v, (size_t)(st + (int64_t)k * step))));
      if (r == NULL || args == NULL ||
          mpx_obj_append(args, c->py2 ? mpx_obj_bytes(&arr->tc, 1) : mpx_obj_str(&arr->tc, 1)) != 0 ||
          mpx_obj_append(args, r) != 0) {
        if (args == NULL) mpx_obj_release(r);
        mpx_obj_release(args);
        nomem(c);
        return MPX__M_DONE;
      }
      return mpx__mcall_return(c, mpx_obj_opaque(MPX_OPAQUE_REDUCE, "array", "array", args, NULL));
    }
    if (!is_int(a[0]))
      return type_error(c, "array indices must be integers");
    if (norm_index(int_of(a[0]), arr->v.len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError", "array index out of range");
    return mpx__mcall_return(c, mpx_obj_retain(*vec_at(&arr->v, i)));
  }
  if (STREQ(c->method, "__setitem__")) {
    BIND(c, 2, a, "index", "value");
    if (mpx_obj_type(a[0]) == MPX_OBJ_OPAQUE && STREQ(mpx_obj_opaque_module(a[0]), "builtins") &&
        STREQ(mpx_obj_opaque_name(a[0]), "slice")) {
      if (mpx_obj_type(a[1]) == MPX_OBJ_OPAQUE && STREQ(mpx_obj_opaque_module(a[1]), "array"))
        return type_error(c, "assigning an array to an Array slice is not supported by "
                          "mpx's manager; assign the items one by one");
      return type_error(c, "can only assign array (not \"%s\") to array slice",
                        py_type_name(a[1]));
    }
    if (!is_int(a[0]))
      return type_error(c, "array indices must be integers");
    if (norm_index(int_of(a[0]), arr->v.len, &i) != 0)
      return mpx__mcall_raisef(c, "builtins", "IndexError",
                               "array assignment index out of range");
    mpx_obj_t *x = array_item(c, arr->tc, a[1]);
    if (x == NULL) return MPX__M_DONE;
    mpx_obj_release(*vec_at(&arr->v, i));
    *vec_at(&arr->v, i) = x;
    return mpx__mcall_return(c, NULL);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", c->method);
}

static mpx_obj_t *array_value(mpx__mobj_t *o) { return vec_to_array(&((array_t *)o)->v); }

static void array_repr(mpx__mobj_t *o, char *buf, size_t n) {
  array_t *arr = (array_t *)o;
  char open[16];
  snprintf(open, sizeof open, "array('%c', [", arr->tc);
  vec_repr(&arr->v, open, "])", buf, n);
}

static const mpx__mtype_t array_type = {
    "Array", array_exposed, NULL, array_create, array_destroy, array_call,
    NULL, NULL, NULL, array_value, array_repr};

/* =============================================================== Namespace */

typedef struct {
  mpx__mobj_t h;
  dict_t attrs; /* only its table is used */
} ns_t;

static const char *const ns_exposed[] = {"__getattribute__", "__setattr__",
                                         "__delattr__", NULL};

static mpx__mobj_t *ns_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                              mpx__mcall_t *c) {
  if (mpx_obj_len(args) > 0) {
    type_error(c, "Namespace() takes keyword arguments only");
    return NULL;
  }
  ns_t *n = (ns_t *)obj_alloc(sizeof *n, NULL);
  if (n == NULL) return nomem(c);
  if (dict_update_kw(&n->attrs, c, kwds) != 0) {
    dict_clear(&n->attrs);
    free(n->attrs.e);
    free(n->attrs.idx);
    free(n);
    return NULL;
  }
  return &n->h;
}

static void ns_destroy(mpx__mobj_t *o) {
  ns_t *n = (ns_t *)o;
  dict_clear(&n->attrs);
  free(n->attrs.e);
  free(n->attrs.idx);
  free(n);
}

static int attr_error(mpx__mcall_t *c, const mpx_obj_t *name, const char *what) {
  size_t len;
  const char *s = mpx_obj_str_data(name, &len);
  return mpx__mcall_raisef(c, "builtins", "AttributeError",
                           "'%s' object has no attribute '%.*s'", what,
                           (int)(len > 200 ? 200 : len), s ? s : "?");
}

static int ns_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  ns_t *n = (ns_t *)o;
  const mpx_obj_t *a[2];
  dent_t *e;
  const char *m = c->method;
  if (STREQ(m, "__getattribute__") || STREQ(m, "__delattr__") ||
      STREQ(m, "__setattr__")) {
    if (m[2] == 's') {
      BIND(c, 2, a, "name", "value");
    } else {
      BIND(c, 1, a, "name");
    }
    if (mpx_obj_type(a[0]) != MPX_OBJ_STR)
      return type_error(c, "attribute name must be string, not '%s'",
                        py_type_name(a[0]));
    if (m[2] == 's') {
      if (dict_set(&n->attrs, a[0], a[1]) != 0)
        return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
      return mpx__mcall_return(c, NULL);
    }
    if ((e = dict_find(&n->attrs, a[0])) == NULL) return attr_error(c, a[0], "Namespace");
    if (m[2] == 'g') return mpx__mcall_return(c, mpx_obj_retain(e->v));
    mpx_obj_release(dict_take(&n->attrs, e));
    return mpx__mcall_return(c, NULL);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", m);
}

static mpx_obj_t *ns_value(mpx__mobj_t *o) {
  mpx_obj_t *st = dict_map(&((ns_t *)o)->attrs);
  return st ? plain_object("Namespace", st) : NULL;
}

static int key_cmp(const void *x, const void *y) {
  return py_cmp((*(const dent_t *const *)x)->k, (*(const dent_t *const *)y)->k);
}

static void ns_repr(mpx__mobj_t *o, char *buf, size_t n) {
  ns_t *ns = (ns_t *)o;
  dent_t **es = malloc((ns->attrs.live + 1) * sizeof *es);
  size_t k = 0, off;
  for (size_t i = 0; es && i < ns->attrs.n_e; i++) {
    size_t l;
    const char *s = mpx_obj_str_data(ns->attrs.e[i].k, &l);
    if (ns->attrs.e[i].k && s && l > 0 && s[0] != '_') es[k++] = &ns->attrs.e[i];
  }
  if (es) qsort(es, k, sizeof *es, key_cmp);
  off = (size_t)snprintf(buf, n, "Namespace(");
  for (size_t i = 0; i < k && off + 8 < n; i++) {
    size_t l;
    const char *s = mpx_obj_str_data(es[i]->k, &l);
    off += (size_t)snprintf(buf + off, n - off, "%s%.*s=", i ? ", " : "", (int)l, s);
    if (off < n) off += dump(es[i]->v, buf + off, n - off);
  }
  if (off < n) snprintf(buf + off, n - off, ")");
  free(es);
}

static const mpx__mtype_t ns_type = {
    "Namespace", ns_exposed, NULL, ns_create, ns_destroy, ns_call,
    NULL, NULL, NULL, ns_value, ns_repr};

/* ============================== Lock, RLock, Semaphore, BoundedSemaphore */

enum { K_LOCK, K_RLOCK, K_SEM, K_BSEM, K_COND };
enum { L_ACQUIRE = 1, C_NOTIFY, C_REACQUIRE };

/* One shape for every lock-like object. A Lock and an RLock (and a
 * Condition's lock) remember the connection holding them, so a
 * connection that goes away releases what it held. */
typedef struct {
  mpx__mobj_t h;
  int kind;
  int64_t value;     /* semaphores: the counter; locks: 1 free, 0 held */
  int64_t bound;     /* BoundedSemaphore: the initial value */
  mpx__msess_t *owner;
  int64_t count;     /* RLock recursion */
} lock_t;

static const char *const acquirer_exposed[] = {"acquire", "release", NULL};
static const char *const cond_exposed[] = {"acquire", "release", "wait",
                                           "notify", "notify_all", NULL};

static bool is_rlock(lock_t *l) { return l->kind == K_RLOCK || l->kind == K_COND; }

static void take(lock_t *l, mpx__msess_t *who, int64_t count) {
  if (l->kind == K_SEM || l->kind == K_BSEM) {
    l->value--;
    return;
  }
  l->value = 0;
  l->owner = who;
  l->count = count;
  if (who) mpx__msess_held(who, +1);
}

static void drop_owner(lock_t *l) {
  if (l->owner) mpx__msess_held(l->owner, -1);
  l->owner = NULL;
  l->count = 0;
  l->value = 1;
}

/* Hands the lock (or semaphore units) to parked acquirers, FIFO. */
static void lock_pump(lock_t *l) {
  for (mpx__mcall_t *c = l->h.waiters, *nx; c && l->value > 0; c = nx) {
    nx = c->wnext;
    if (c->phase == L_ACQUIRE) {
      mpx__mobj_unpark(&l->h, c);
      take(l, c->owner, 1);
      mpx__mcall_return(c, mpx_obj_bool(1));
      mpx__mcall_complete(c);
    } else if (c->phase == C_REACQUIRE) {
      mpx__mobj_unpark(&l->h, c);
      take(l, c->owner, c->aux >> 1);
      mpx__mcall_return(c, mpx_obj_bool((int)(c->aux & 1)));
      mpx__mcall_complete(c);
    }
  }
}

static mpx__mobj_t *lock_new(int kind, int64_t value, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)obj_alloc(sizeof *l, NULL);
  if (l == NULL) return nomem(c);
  l->kind = kind;
  l->value = value;
  l->bound = value;
  return &l->h;
}

static mpx__mobj_t *lock_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  if (no_args(c, "Lock", args, kwds) != 0) return NULL;
  return lock_new(K_LOCK, 1, c);
}

static mpx__mobj_t *rlock_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  if (no_args(c, "RLock", args, kwds) != 0) return NULL;
  return lock_new(K_RLOCK, 1, c);
}

static mpx__mobj_t *sem_create2(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c, int kind) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"value", NULL};
  int64_t v = 1;
  if (bind_new(c, kind == K_SEM ? "Semaphore" : "BoundedSemaphore", args, kwds,
               names, 0, a) != 0 ||
      (a[0] && want_int(c, a[0], &v) != 0))
    return NULL;
  if (v < 0) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "semaphore initial value must be >= 0");
    return NULL;
  }
  return lock_new(kind, v, c);
}

static mpx__mobj_t *sem_create(const mpx_obj_t *a, const mpx_obj_t *k, mpx__mcall_t *c) {
  return sem_create2(a, k, c, K_SEM);
}
static mpx__mobj_t *bsem_create(const mpx_obj_t *a, const mpx_obj_t *k, mpx__mcall_t *c) {
  return sem_create2(a, k, c, K_BSEM);
}

static mpx__mobj_t *cond_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"lock", NULL};
  if (bind_new(c, "Condition", args, kwds, names, 0, a) != 0) return NULL;
  if (a[0] && mpx_obj_type(a[0]) != MPX_OBJ_NULL) {
    type_error(c, "Condition(lock): an mpx manager makes its own RLock; "
               "pass no lock");
    return NULL;
  }
  return lock_new(K_COND, 1, c);
}

static void lock_destroy(mpx__mobj_t *o) {
  lock_t *l = (lock_t *)o;
  if (l->owner) mpx__msess_held(l->owner, -1);
  free(l);
}

static int lock_acquire(lock_t *l, mpx__mcall_t *c) {
  const mpx_obj_t *a[2];
  double t;
  BIND(c, 0, a, "blocking", "timeout");
  bool block = a[0] == NULL || truthy(a[0]);
  bool semlike = l->kind == K_SEM || l->kind == K_BSEM;
  bool has_t = a[1] && mpx_obj_type(a[1]) != MPX_OBJ_NULL &&
               !(!semlike && is_num(a[1]) && num_of(a[1]) == -1);
  if (!block && has_t)
    return mpx__mcall_raisef(c, "builtins", "ValueError",
                             semlike ? "can't specify timeout for non-blocking acquire"
                                     : "can't specify a timeout for a non-blocking call");
  /* threading.Lock's -1 is forever, as no timeout is: has_t is false. */
  if (want_timeout(c, has_t ? a[1] : NULL, &t, "timeout value must be positive") != 0)
    return MPX__M_DONE;
  if (is_rlock(l) && l->value == 0 && l->owner == c->owner && c->owner) {
    l->count++;
    return mpx__mcall_return(c, mpx_obj_bool(1));
  }
  /* FIFO: a free lock is still handed to earlier waiters first */
  bool queued = false;
  for (mpx__mcall_t *w = l->h.waiters; w && !queued; w = w->wnext)
    queued = w->phase != C_NOTIFY;
  if (l->value > 0 && !queued) {
    take(l, c->owner, 1);
    return mpx__mcall_return(c, mpx_obj_bool(1));
  }
  if (!block || t == 0) return mpx__mcall_return(c, mpx_obj_bool(0));
  c->phase = L_ACQUIRE;
  c->timeout = t;
  mpx__mobj_park(&l->h, c);
  return MPX__M_PARKED;
}

static int lock_release(lock_t *l, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  switch (l->kind) {
  case K_LOCK:
    NO_ARGS(c);
    if (l->value > 0)
      return mpx__mcall_raisef(c, "builtins", "RuntimeError", "release unlocked lock");
    drop_owner(l);
    break;
  case K_RLOCK:
  case K_COND:
    NO_ARGS(c);
    if (l->value > 0 || l->owner != c->owner)
      return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                               "cannot release un-acquired lock");
    if (--l->count > 0) return mpx__mcall_return(c, NULL);
    drop_owner(l);
    break;
  default: {
    BIND(c, 0, a, "n");
    int64_t n = 1;
    if (a[0] && want_int(c, a[0], &n) != 0) return MPX__M_DONE;
    if (n < 1)
      return mpx__mcall_raisef(c, "builtins", "ValueError", "n must be one or more");
    if (l->kind == K_BSEM && l->value + n > l->bound)
      return mpx__mcall_raisef(c, "builtins", "ValueError",
                               "Semaphore released too many times");
    l->value += n;
  }
  }
  lock_pump(l);
  return mpx__mcall_return(c, NULL);
}

static int cond_wait(lock_t *l, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  double t;
  BIND(c, 0, a, "timeout");
  if (l->value > 0 || l->owner != c->owner)
    return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                             "cannot wait on un-acquired lock");
  if (want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
  c->aux = l->count << 1; /* the recursion to restore; bit 0: notified */
  drop_owner(l);
  c->phase = C_NOTIFY;
  c->timeout = t;
  mpx__mobj_park(&l->h, c);
  lock_pump(l);
  return MPX__M_PARKED;
}

static int cond_notify(lock_t *l, mpx__mcall_t *c, bool all) {
  const mpx_obj_t *a[1];
  int64_t n = 1;
  if (all) {
    NO_ARGS(c);
    n = INT64_MAX;
  } else {
    BIND(c, 0, a, "n");
    if (a[0] && want_int(c, a[0], &n) != 0) return MPX__M_DONE;
  }
  if (l->value > 0 || l->owner != c->owner)
    return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                             "cannot notify on un-acquired lock");
  /* Notified waiters queue for the lock (behind earlier acquirers, as a
   * woken thread would); the notifier holds it now, so none runs yet. */
  for (mpx__mcall_t *w = l->h.waiters; w && n > 0; w = w->wnext)
    if (w->phase == C_NOTIFY) {
      w->phase = C_REACQUIRE;
      w->aux |= 1; /* its timer, if it fires now, changes nothing */
      n--;
    }
  return mpx__mcall_return(c, NULL);
}

static int lock_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  if (STREQ(c->method, "acquire")) return lock_acquire(l, c);
  if (STREQ(c->method, "release")) return lock_release(l, c);
  if (l->kind == K_COND) {
    if (STREQ(c->method, "wait")) return cond_wait(l, c);
    if (STREQ(c->method, "notify")) return cond_notify(l, c, false);
    if (STREQ(c->method, "notify_all")) return cond_notify(l, c, true);
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", c->method);
}

/* Timer ran out: an acquire answers False; a Condition.wait stops waiting
 * for notify (result False) but must still get the lock back. */
static int lock_expire_(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  if (c->phase == C_NOTIFY) {
    c->phase = C_REACQUIRE;
    lock_pump(l);
    return 0;
  }
  if (c->phase == C_REACQUIRE) return 0;
  mpx__mobj_unpark(o, c);
  mpx__mcall_return(c, mpx_obj_bool(0));
  return 1;
}

static void lock_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  if (lock_expire_(o, c)) mpx__mcall_complete(c);
}

static void lock_owner_gone(mpx__mobj_t *o, mpx__msess_t *s) {
  lock_t *l = (lock_t *)o;
  if (l->owner == s && l->value == 0) {
    drop_owner(l);
    lock_pump(l);
  }
}

static void lock_repr(mpx__mobj_t *o, char *buf, size_t n) {
  lock_t *l = (lock_t *)o;
  switch (l->kind) {
  case K_LOCK:
    snprintf(buf, n, "<%s _thread.lock object at 0x%s>",
             l->value ? "unlocked" : "locked", o->ident);
    break;
  case K_RLOCK:
    snprintf(buf, n, "<%s _thread.RLock object owner=%d count=%" PRId64 " at 0x%s>",
             l->value ? "unlocked" : "locked", l->value ? 0 : 1, l->count, o->ident);
    break;
  case K_COND: {
    int64_t w = 0;
    for (mpx__mcall_t *c = o->waiters; c; c = c->wnext) w += c->phase == C_NOTIFY;
    snprintf(buf, n, "<Condition(<%s _thread.RLock object count=%" PRId64 ">, %" PRId64 ")>",
             l->value ? "unlocked" : "locked", l->count, w);
    break;
  }
  default:
    snprintf(buf, n, "<threading.%sSemaphore at 0x%s: value=%" PRId64 ">",
             l->kind == K_BSEM ? "Bounded" : "", o->ident, l->value);
  }
}

static const mpx__mtype_t lock_type = {
    "Lock", acquirer_exposed, NULL, lock_create, lock_destroy, lock_call,
    lock_expire, unpark_only, lock_owner_gone, NULL, lock_repr};
static const mpx__mtype_t rlock_type = {
    "RLock", acquirer_exposed, NULL, rlock_create, lock_destroy, lock_call,
    lock_expire, unpark_only, lock_owner_gone, NULL, lock_repr};
static const mpx__mtype_t sem_type = {
    "Semaphore", acquirer_exposed, NULL, sem_create, lock_destroy, lock_call,
    lock_expire, unpark_only, NULL, NULL, lock_repr};
static const mpx__mtype_t bsem_type = {
    "BoundedSemaphore", acquirer_exposed, NULL, bsem_create, lock_destroy,
    lock_call, lock_expire, unpark_only, NULL, NULL, lock_repr};
static const mpx__mtype_t cond_type = {
    "Condition", cond_exposed, NULL, cond_create, lock_destroy, lock_call,
    lock_expire, unpark_only, lock_owner_gone, NULL, lock_repr};

/* =================================================================== Event */

typedef struct {
  mpx__mobj_t h;
  bool flag;
} event_t;

static const char *const event_exposed[] = {"is_set", "set", "clear", "wait", NULL};

static mpx__mobj_t *event_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  if (no_args(c, "Event", args, kwds) != 0) return NULL;
  event_t *e = (event_t *)obj_alloc(sizeof *e, NULL);
  return e ? &e->h : nomem(c);
}

static void plain_destroy(mpx__mobj_t *o) { free(o); }

static int event_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  event_t *e = (event_t *)o;
  const mpx_obj_t *a[1];
  double t;
  if (STREQ(c->method, "is_set")) {
    NO_ARGS(c);
    return mpx__mcall_return(c, mpx_obj_bool(e->flag));
  }
  if (STREQ(c->method, "set")) {
    NO_ARGS(c);
    e->flag = true;
    while (o->waiters) {
      mpx__mcall_t *w = o->waiters;
      mpx__mobj_unpark(o, w);
      mpx__mcall_return(w, mpx_obj_bool(1));
      mpx__mcall_complete(w);
    }
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(c->method, "clear")) {
    NO_ARGS(c);
    e->flag = false;
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(c->method, "wait")) {
    BIND(c, 0, a, "timeout");
    if (want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
    if (e->flag) return mpx__mcall_return(c, mpx_obj_bool(1));
    if (t == 0) return mpx__mcall_return(c, mpx_obj_bool(0));
    c->timeout = t;
    mpx__mobj_park(o, c);
    return MPX__M_PARKED;
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", c->method);
}

static void event_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mobj_unpark(o, c);
  mpx__mcall_return(c, mpx_obj_bool(0));
  mpx__mcall_complete(c);
}

static void event_repr(mpx__mobj_t *o, char *buf, size_t n) {
  snprintf(buf, n, "<threading.Event at 0x%s: %s>", o->ident,
           ((event_t *)o)->flag ? "set" : "unset");
}

static const mpx__mtype_t event_type = {
    "Event", event_exposed, NULL, event_create, plain_destroy, event_call,
    event_expire, unpark_only, NULL, NULL, event_repr};

/* ================================================================= Barrier */

typedef struct {
  mpx__mobj_t h;
  int64_t parties, count;
  double timeout; /* the default for wait(); -1 none */
  bool broken;
} barrier_t;

static const char *const barrier_exposed[] = {"__getattribute__", "wait",
                                              "abort", "reset", NULL};

static mpx__mobj_t *barrier_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                   mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  static const char *const names[] = {"parties", "action", "timeout", NULL};
  int64_t parties;
  double t;
  if (bind_new(c, "Barrier", args, kwds, names, 1, a) != 0 ||
      want_int(c, a[0], &parties) != 0 || want_timeout(c, a[2], &t, NULL) != 0)
    return NULL;
  if (a[1] && mpx_obj_type(a[1]) != MPX_OBJ_NULL) {
    type_error(c, "Barrier(action=...) cannot run on an mpx manager: no "
               "Python code runs here");
    return NULL;
  }
  if (parties < 1) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "parties must be > 0");
    return NULL;
  }
  barrier_t *b = (barrier_t *)obj_alloc(sizeof *b, NULL);
  if (b == NULL) return nomem(c);
  b->parties = parties;
  b->timeout = t;
  return &b->h;
}

static void barrier_fail_all(barrier_t *b) {
  while (b->h.waiters) {
    mpx__mcall_t *w = b->h.waiters;
    mpx__mobj_unpark(&b->h, w);
    mpx__mcall_raise(w, "threading", "BrokenBarrierError", NULL);
    mpx__mcall_complete(w);
  }
  b->count = 0;
}

static int barrier_call(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  const mpx_obj_t *a[1];
  double t;
  const char *m = c->method;
  if (STREQ(m, "wait")) {
    BIND(c, 0, a, "timeout");
    if (want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
    if (a[0] == NULL || mpx_obj_type(a[0]) == MPX_OBJ_NULL) t = b->timeout;
    if (b->broken) return mpx__mcall_raise(c, "threading", "BrokenBarrierError", NULL);
    int64_t index = b->count++;
    if (b->count == b->parties) {
      while (o->waiters) { /* everyone waiting gets its own index */
        mpx__mcall_t *w = o->waiters;
        mpx__mobj_unpark(o, w);
        mpx__mcall_return(w, mpx_obj_int(w->aux));
        mpx__mcall_complete(w);
      }
      b->count = 0;
      return mpx__mcall_return(c, mpx_obj_int(index));
    }
    c->aux = index;
    c->timeout = t;
    mpx__mobj_park(o, c);
    return MPX__M_PARKED;
  }
  if (STREQ(m, "abort")) {
    NO_ARGS(c);
    b->broken = true;
    barrier_fail_all(b);
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "reset")) {
    NO_ARGS(c);
    barrier_fail_all(b);
    b->broken = false;
    return mpx__mcall_return(c, NULL);
  }
  if (STREQ(m, "__getattribute__")) {
    BIND(c, 1, a, "name");
    size_t sl;
    const char *s = mpx_obj_type(a[0]) == MPX_OBJ_STR ? mpx_obj_str_data(a[0], &sl) : "";
    if (STREQ(s, "parties")) return mpx__mcall_return(c, mpx_obj_int(b->parties));
    if (STREQ(s, "n_waiting")) return mpx__mcall_return(c, mpx_obj_int(b->count));
    if (STREQ(s, "broken")) return mpx__mcall_return(c, mpx_obj_bool(b->broken));
    return attr_error(c, a[0], "Barrier");
  }
  return mpx__mcall_traceback(c, "AttributeError: no method %s", m);
}

/* A waiter's time ran out: the barrier breaks for everyone. */
static void barrier_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  mpx__mobj_unpark(o, c);
  b->broken = true;
  mpx__mcall_raise(c, "threading", "BrokenBarrierError", NULL);
  mpx__mcall_complete(c);
  barrier_fail_all(b);
}

/* A waiter's connection went away: the barrier breaks, as it would when a
 * waiting thread were interrupted. */
static void barrier_drop(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  mpx__mobj_unpark(o, c);
  b->broken = true;
  barrier_fail_all(b);
}

static void barrier_repr(mpx__mobj_t *o, char *buf, size_t n) {
  barrier_t *b = (barrier_t *)o;
  if (b->broken) snprintf(buf, n, "<threading.Barrier at 0x%s: broken>", o->ident);
  else
    snprintf(buf, n, "<threading.Barrier at 0x%s: waiters=%" PRId64 "/%" PRId64 ">",
             o->ident, b->count, b->parties);
}

static const mpx__mtype_t barrier_type = {
    "Barrier", barrier_exposed, NULL, barrier_create, plain_destroy,
    barrier_call, barrier_expire, barrier_drop, NULL, NULL, barrier_repr};

/* ================================================================ registry */

const mpx__mtype_t *const mpx__mtypes[] = {
    &queue_type, &joinable_queue_type, &dict_type, &list_type, &value_type,
    &array_type, &lock_type, &rlock_type, &sem_type, &bsem_type, &event_type,
    &cond_type, &barrier_type, &ns_type, &iter_type, NULL};

const mpx__mtype_t *mpx__mtype_find(const char *name) {
  for (size_t i = 0; mpx__mtypes[i]; i++)
    if (STREQ(mpx__mtypes[i]->name, name)) return mpx__mtypes[i];
  return NULL;
}
