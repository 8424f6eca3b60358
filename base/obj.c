/* mpx_obj: reference-counted dynamic values.
 *
 * One allocation per object; a copied str/bytes/bigint payload lives right
 * after the header. Maps keep entries in an insertion-ordered array and,
 * past a few entries, an open-addressing index of entry numbers, so
 * inserting n distinct keys stays O(n) even for hostile input (a decoder
 * checks every key for a duplicate). Release is iterative, so a deep
 * structure cannot overflow the stack when it dies. */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mpx/obj.h"

#define IMMORTAL UINT32_MAX
#define F_EXTERNAL 1u /* payload not ours: call release(ctx) */
#define F_TAGGED 2u   /* payload not ours: call release_tag(ctx, tag) */
#define F_INLINE 4u   /* container slots live in the object's allocation */
#define INLINE_SLOTS 16 /* pointers a container may keep inline */
#define INDEX_MIN 8   /* maps longer than this get a hash index */
#define MAX_WALK 100000 /* depth past which equal/hash/dump give up */

struct mpx_obj_s {
  _Atomic uint32_t rc;
  uint8_t type;
  uint8_t flags;
  union {
    int b;
    int64_t i;
    double f;
    struct {
      char *p;
      size_t len;
      union {
        void (*release)(void *ctx);                   /* F_EXTERNAL */
        void (*release_tag)(void *ctx, uint64_t tag); /* F_TAGGED */
      };
      void *ctx;
      uint64_t tag;
    } s; /* str, bytes, bigint */
    struct {
      mpx_obj_t **v;
      size_t len, cap;
    } a; /* array, tuple */
    struct {
      mpx_obj_t **kv; /* key i at 2i, value at 2i+1 */
      size_t len, cap;
      uint32_t *index; /* entry number + 1, 0 = empty */
      size_t index_cap; /* a power of two, or 0 */
    } m;
    struct {
      mpx_opaque_kind_t kind;
      char *module, *name;
      mpx_obj_t *args, *state;
    } o;
  } u;
};

static mpx_obj_t null_obj = {IMMORTAL, MPX_OBJ_NULL, 0, {0}};
static mpx_obj_t true_obj = {IMMORTAL, MPX_OBJ_BOOL, 0, {.b = 1}};
static mpx_obj_t false_obj = {IMMORTAL, MPX_OBJ_BOOL, 0, {.b = 0}};

static mpx_obj_t *alloc(mpx_obj_type_t t, size_t extra) {
  mpx_obj_t *o = malloc(sizeof *o + extra);
  if (o == NULL) {
    mpx__err(MPX_ENOMEM, "out of memory for a %s", mpx_obj_type_name(t));
    return NULL;
  }
  memset(o, 0, sizeof *o);
  atomic_init(&o->rc, 1);
  o->type = (uint8_t)t;
  return o;
}

/* ---- constructors ------------------------------------------------------ */

mpx_obj_t *mpx_obj_null(void) { return &null_obj; }
mpx_obj_t *mpx_obj_bool(int v) { return v ? &true_obj : &false_obj; }

mpx_obj_t *mpx_obj_int(int64_t v) {
  mpx_obj_t *o = alloc(MPX_OBJ_INT, 0);
  if (o) o->u.i = v;
  return o;
}

mpx_obj_t *mpx_obj_float(double v) {
  mpx_obj_t *o = alloc(MPX_OBJ_FLOAT, 0);
  if (o) o->u.f = v;
  return o;
}

static mpx_obj_t *payload(mpx_obj_type_t t, const void *p, size_t len) {
  if (p == NULL && len > 0) {
    mpx__err(MPX_EINVAL, "NULL payload of %zu bytes", len);
    return NULL;
  }
  if (len > SIZE_MAX - sizeof(mpx_obj_t) - 1) {
    mpx__err(MPX_ENOMEM, "payload of %zu bytes", len);
    return NULL;
  }
  mpx_obj_t *o = alloc(t, len + 1);
  if (o == NULL) return NULL;
  o->u.s.p = (char *)(o + 1);
  if (len) memcpy(o->u.s.p, p, len);
  o->u.s.p[len] = '\0';
  o->u.s.len = len;
  return o;
}

mpx_obj_t *mpx_obj_str(const char *s, size_t len) {
  if (s != NULL && len == SIZE_MAX) len = strlen(s);
  return payload(MPX_OBJ_STR, s, len);
}

mpx_obj_t *mpx_obj_bytes(const void *p, size_t len) {
  return payload(MPX_OBJ_BYTES, p, len);
}

static mpx_obj_t *external(mpx_obj_type_t t, const void *p, size_t len,
                           void (*release)(void *), void *ctx) {
  if (p == NULL && len > 0) {
    mpx__err(MPX_EINVAL, "NULL payload of %zu bytes", len);
    return NULL;
  }
  mpx_obj_t *o = alloc(t, 0);
  if (o == NULL) return NULL;
  o->flags = F_EXTERNAL;
  o->u.s.p = (char *)p;
  o->u.s.len = len;
  o->u.s.release = release;
  o->u.s.ctx = ctx;
  return o;
}

mpx_obj_t *mpx_obj_str_external(const char *s, size_t len,
                                void (*release)(void *), void *ctx) {
  return external(MPX_OBJ_STR, s, len, release, ctx);
}

mpx_obj_t *mpx_obj_bytes_external(const void *p, size_t len,
                                  void (*release)(void *), void *ctx) {
  return external(MPX_OBJ_BYTES, p, len, release, ctx);
}

mpx_obj_t *mpx__obj_bytes_tagged(const void *p, size_t len,
                                 void (*release)(void *ctx, uint64_t tag),
                                 void *ctx, uint64_t tag) {
  mpx_obj_t *o = external(MPX_OBJ_BYTES, p, len, NULL, ctx);
  if (o == NULL) return NULL;
  o->flags = F_TAGGED;
  o->u.s.release_tag = release;
  o->u.s.tag = tag;
  return o;
}

mpx_obj_t *mpx_obj_bigint(const void *le, size_t n) {
  const uint8_t *b = le;
  if (b == NULL || n == 0) {
    mpx__err(MPX_EINVAL, "bigint needs at least one byte");
    return NULL;
  }
  /* Drop sign-extension bytes that change nothing. */
  while (n > 1 && ((b[n - 1] == 0x00 && !(b[n - 2] & 0x80)) ||
                   (b[n - 1] == 0xff && (b[n - 2] & 0x80))))
    n--;
  if (n <= 8) {
    uint64_t v = (b[n - 1] & 0x80) ? ~UINT64_C(0) : 0;
    for (size_t i = n; i-- > 0;) v = (v << 8) | b[i];
    return mpx_obj_int((int64_t)v);
  }
  return payload(MPX_OBJ_BIGINT, b, n);
}

static mpx_obj_t *seq(mpx_obj_type_t t, size_t cap) {
  if (cap > 0 && cap <= INLINE_SLOTS) {
    /* Small containers (most decoded records) take one allocation. */
    mpx_obj_t *o = alloc(t, cap * sizeof(mpx_obj_t *));
    if (o) {
      o->flags = F_INLINE;
      o->u.a.v = (mpx_obj_t **)(o + 1);
      o->u.a.cap = cap;
    }
    return o;
  }
  mpx_obj_t *o = alloc(t, 0);
  if (o && cap) {
    o->u.a.v = cap <= SIZE_MAX / sizeof *o->u.a.v
                   ? malloc(cap * sizeof *o->u.a.v) : NULL;
    if (o->u.a.v == NULL) {
      free(o);
      mpx__err(MPX_ENOMEM, "array of %zu", cap);
      return NULL;
    }
    o->u.a.cap = cap;
  }
  return o;
}

mpx_obj_t *mpx_obj_array(size_t cap) { return seq(MPX_OBJ_ARRAY, cap); }
mpx_obj_t *mpx_obj_tuple(size_t cap) { return seq(MPX_OBJ_TUPLE, cap); }

mpx_obj_t *mpx_obj_map(size_t cap) {
  if (cap > 0 && 2 * cap <= INLINE_SLOTS) {
    mpx_obj_t *o = alloc(MPX_OBJ_MAP, 2 * cap * sizeof(mpx_obj_t *));
    if (o) {
      o->flags = F_INLINE;
      o->u.m.kv = (mpx_obj_t **)(o + 1);
      o->u.m.cap = cap;
    }
    return o;
  }
  mpx_obj_t *o = alloc(MPX_OBJ_MAP, 0);
  if (o && cap) {
    o->u.m.kv = cap <= SIZE_MAX / 2 / sizeof *o->u.m.kv
                    ? malloc(2 * cap * sizeof *o->u.m.kv) : NULL;
    if (o->u.m.kv == NULL) {
      free(o);
      mpx__err(MPX_ENOMEM, "map of %zu", cap);
      return NULL;
    }
    o->u.m.cap = cap;
  }
  return o;
}

mpx_obj_t *mpx_obj_opaque(mpx_opaque_kind_t kind, const char *module,
                          const char *name, mpx_obj_t *args,
                          mpx_obj_t *state) {
  size_t lm, ln;
  if (module == NULL || name == NULL || kind > MPX_OPAQUE_NEWOBJ) {
    mpx_obj_release(args);
    mpx_obj_release(state);
    mpx__err(MPX_EINVAL, "opaque object needs a kind, module and name");
    return NULL;
  }
  /* The null object and NULL both mean "none", so that formats with only
   * one way to say it round-trip equal. */
  if (args == &null_obj) args = NULL;
  if (state == &null_obj) state = NULL;
  lm = strlen(module);
  ln = strlen(name);
  mpx_obj_t *o = alloc(MPX_OBJ_OPAQUE, lm + ln + 2);
  if (o == NULL) {
    mpx_obj_release(args);
    mpx_obj_release(state);
    return NULL;
  }
  o->u.o.kind = kind;
  o->u.o.module = (char *)(o + 1);
  memcpy(o->u.o.module, module, lm + 1);
  o->u.o.name = o->u.o.module + lm + 1;
  memcpy(o->u.o.name, name, ln + 1);
  o->u.o.args = args;
  o->u.o.state = state;
  return o;
}

/* ---- containers --------------------------------------------------------- */

/* Grows a container's slot array; `inline_` says the slots live in the
 * object itself (F_INLINE), which moves them to the heap. */
static int grow(void **p, size_t *cap, size_t need, size_t elem,
                uint8_t *flags) {
  size_t nc = *cap ? *cap : 4;
  while (nc < need) {
    if (nc > SIZE_MAX / 2 / elem) return MPX_ENOMEM;
    nc *= 2;
  }
  int was_inline = flags && (*flags & F_INLINE);
  void *np = was_inline ? malloc(nc * elem) : realloc(*p, nc * elem);
  if (np == NULL) return MPX_ENOMEM;
  if (was_inline) {
    memcpy(np, *p, *cap * elem);
    *flags &= (uint8_t)~F_INLINE;
  }
  *p = np;
  *cap = nc;
  return 0;
}

int mpx_obj_append(mpx_obj_t *s, mpx_obj_t *item) {
  if (s == NULL || item == NULL ||
      (s->type != MPX_OBJ_ARRAY && s->type != MPX_OBJ_TUPLE)) {
    mpx_obj_release(item);
    return mpx__err(MPX_EINVAL, "append: needs an array or tuple and an item");
  }
  if (s->u.a.len == s->u.a.cap &&
      grow((void **)&s->u.a.v, &s->u.a.cap, s->u.a.len + 1,
           sizeof *s->u.a.v, &s->flags) != 0) {
    mpx_obj_release(item);
    return mpx__err(MPX_ENOMEM, "append: array of %zu", s->u.a.len + 1);
  }
  s->u.a.v[s->u.a.len++] = item;
  return 0;
}

/* Finds key: its entry number, or -1; *slot is where it is or would go
 * in the index (when there is one). */
static long map_find(const mpx_obj_t *m, const mpx_obj_t *key, uint64_t h,
                     size_t *slot) {
  if (m->u.m.index_cap == 0) {
    for (size_t i = 0; i < m->u.m.len; i++)
      if (mpx_obj_equal(m->u.m.kv[2 * i], key)) return (long)i;
    return -1;
  }
  size_t mask = m->u.m.index_cap - 1;
  for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
    uint32_t e = m->u.m.index[s];
    if (e == 0) {
      *slot = s;
      return -1;
    }
    if (mpx_obj_equal(m->u.m.kv[2 * (e - 1)], key)) {
      *slot = s;
      return (long)(e - 1);
    }
  }
}

static int map_reindex(mpx_obj_t *m, size_t cap) {
  uint32_t *idx = calloc(cap, sizeof *idx);
  if (idx == NULL) return MPX_ENOMEM;
  free(m->u.m.index);
  m->u.m.index = idx;
  m->u.m.index_cap = cap;
  for (size_t i = 0; i < m->u.m.len; i++) {
    size_t s = (size_t)mpx_obj_hash(m->u.m.kv[2 * i]) & (cap - 1);
    while (idx[s]) s = (s + 1) & (cap - 1);
    idx[s] = (uint32_t)(i + 1);
  }
  return 0;
}

int mpx_obj_map_set(mpx_obj_t *m, mpx_obj_t *key, mpx_obj_t *val) {
  size_t slot = 0;
  if (m == NULL || key == NULL || val == NULL || m->type != MPX_OBJ_MAP) {
    mpx_obj_release(key);
    mpx_obj_release(val);
    return mpx__err(MPX_EINVAL, "map_set: needs a map, a key and a value");
  }
  uint64_t h = m->u.m.index_cap ? mpx_obj_hash(key) : 0;
  long at = map_find(m, key, h, &slot);
  if (at >= 0) {
    mpx_obj_release(m->u.m.kv[2 * at + 1]);
    m->u.m.kv[2 * at + 1] = val;
    mpx_obj_release(key);
    return 0;
  }
  if (m->u.m.len >= UINT32_MAX - 1 ||
      (m->u.m.len == m->u.m.cap &&
       grow((void **)&m->u.m.kv, &m->u.m.cap, m->u.m.len + 1,
            2 * sizeof *m->u.m.kv, &m->flags) != 0)) {
    mpx_obj_release(key);
    mpx_obj_release(val);
    return mpx__err(MPX_ENOMEM, "map of %zu entries", m->u.m.len + 1);
  }
  size_t i = m->u.m.len++;
  m->u.m.kv[2 * i] = key;
  m->u.m.kv[2 * i + 1] = val;
  if (m->u.m.index_cap) {
    if (2 * m->u.m.len <= m->u.m.index_cap) {
      m->u.m.index[slot] = (uint32_t)(i + 1);
      return 0;
    }
    if (map_reindex(m, 2 * m->u.m.index_cap) == 0) return 0;
  } else if (m->u.m.len <= INDEX_MIN || map_reindex(m, 32) == 0) {
    return 0;
  }
  /* No memory for the index: drop it and fall back to scanning. */
  free(m->u.m.index);
  m->u.m.index = NULL;
  m->u.m.index_cap = 0;
  return 0;
}

int mpx_obj_map_set_str(mpx_obj_t *m, const char *key, mpx_obj_t *val) {
  mpx_obj_t *k = key ? mpx_obj_str(key, SIZE_MAX) : NULL;
  if (k == NULL) {
    mpx_obj_release(val);
    return key ? MPX_ENOMEM : mpx__err(MPX_EINVAL, "NULL key");
  }
  return mpx_obj_map_set(m, k, val);
}

/* ---- reference counting --------------------------------------------------- */

mpx_obj_t *mpx_obj_retain(mpx_obj_t *o) {
  if (o && atomic_load_explicit(&o->rc, memory_order_relaxed) != IMMORTAL)
    atomic_fetch_add_explicit(&o->rc, 1, memory_order_relaxed);
  return o;
}

/* Drops one reference; returns 1 when that was the last. */
static int unref(mpx_obj_t *o) {
  uint32_t rc = atomic_load_explicit(&o->rc, memory_order_acquire);
  if (rc == IMMORTAL) return 0;
  /* The only reference is ours: nobody else can touch the count, so the
   * locked decrement (the dearest step of freeing a tree) is skipped. */
  if (rc == 1) return 1;
  return atomic_fetch_sub_explicit(&o->rc, 1, memory_order_acq_rel) == 1;
}

/* The work list of a release: a small array on the caller's stack that
 * moves to the heap only for wide or deep structures. */
typedef struct {
  mpx_obj_t **v;
  size_t n, cap;
  mpx_obj_t *local[32];
} work_t;

static int work_push(work_t *w, mpx_obj_t *o) {
  if (w->n == w->cap) {
    size_t cap = w->cap * 2;
    mpx_obj_t **v = w->v == w->local ? malloc(cap * sizeof *v)
                                      : realloc(w->v, cap * sizeof *v);
    if (v == NULL) return MPX_ENOMEM;
    if (w->v == w->local) memcpy(v, w->local, sizeof w->local);
    w->v = v;
    w->cap = cap;
  }
  w->v[w->n++] = o;
  return 0;
}

static void destroy(mpx_obj_t *o, work_t *w);

/* Drops a child's reference; a child that dies joins the work list (or,
 * with no memory for the list, is destroyed right here). */
static void drop_child(mpx_obj_t *k, work_t *w) {
  if (k == NULL || !unref(k)) return;
  if (work_push(w, k) != 0) {
    work_t w2 = {NULL, 0, 32, {0}};
    w2.v = w2.local;
    destroy(k, &w2);
    while (w2.n > 0) destroy(w2.v[--w2.n], &w2);
    if (w2.v != w2.local) free(w2.v);
  }
}

/* Frees o's own memory and hands its children to the work list. */
static void destroy(mpx_obj_t *o, work_t *w) {
  switch (o->type) {
    case MPX_OBJ_STR: case MPX_OBJ_BYTES: case MPX_OBJ_BIGINT:
      if ((o->flags & F_EXTERNAL) && o->u.s.release)
        o->u.s.release(o->u.s.ctx);
      if ((o->flags & F_TAGGED) && o->u.s.release_tag)
        o->u.s.release_tag(o->u.s.ctx, o->u.s.tag);
      break;
    case MPX_OBJ_ARRAY: case MPX_OBJ_TUPLE:
      for (size_t i = 0; i < o->u.a.len; i++) drop_child(o->u.a.v[i], w);
      if (!(o->flags & F_INLINE)) free(o->u.a.v);
      break;
    case MPX_OBJ_MAP:
      for (size_t i = 0; i < 2 * o->u.m.len; i++) drop_child(o->u.m.kv[i], w);
      if (!(o->flags & F_INLINE)) free(o->u.m.kv);
      free(o->u.m.index);
      break;
    case MPX_OBJ_OPAQUE:
      drop_child(o->u.o.args, w);
      drop_child(o->u.o.state, w);
      break;
    default:
      break;
  }
  free(o);
}

void mpx_obj_release(mpx_obj_t *o) {
  work_t w;
  if (o == NULL || !unref(o)) return;
  w.v = w.local;
  w.n = 0;
  w.cap = 32;
  destroy(o, &w);
  while (w.n > 0) destroy(w.v[--w.n], &w);
  if (w.v != w.local) free(w.v);
}

/* ---- accessors ---------------------------------------------------------- */

mpx_obj_type_t mpx_obj_type(const mpx_obj_t *o) {
  return o ? (mpx_obj_type_t)o->type : MPX_OBJ_NULL;
}

const char *mpx_obj_type_name(mpx_obj_type_t t) {
  static const char *const names[] = {"null", "bool", "int", "bigint",
                                      "float", "str", "bytes", "array",
                                      "tuple", "map", "opaque"};
  return (unsigned)t < MPX__ARRAY_SIZE(names) ? names[t] : "unknown";
}

int mpx_obj_get_bool(const mpx_obj_t *o) {
  return o && o->type == MPX_OBJ_BOOL ? o->u.b : 0;
}
int64_t mpx_obj_get_int(const mpx_obj_t *o) {
  return o && o->type == MPX_OBJ_INT ? o->u.i : 0;
}
double mpx_obj_get_float(const mpx_obj_t *o) {
  return o && o->type == MPX_OBJ_FLOAT ? o->u.f : 0.0;
}

static const void *payload_of(const mpx_obj_t *o, mpx_obj_type_t t,
                              size_t *len) {
  if (o == NULL || o->type != t) {
    if (len) *len = 0;
    return NULL;
  }
  if (len) *len = o->u.s.len;
  return o->u.s.p;
}

const char *mpx_obj_str_data(const mpx_obj_t *o, size_t *len) {
  return payload_of(o, MPX_OBJ_STR, len);
}
const void *mpx_obj_bytes_data(const mpx_obj_t *o, size_t *len) {
  return payload_of(o, MPX_OBJ_BYTES, len);
}
const void *mpx_obj_bigint_data(const mpx_obj_t *o, size_t *len) {
  return payload_of(o, MPX_OBJ_BIGINT, len);
}

size_t mpx_obj_len(const mpx_obj_t *o) {
  if (o == NULL) return 0;
  switch (o->type) {
    case MPX_OBJ_STR: case MPX_OBJ_BYTES: return o->u.s.len;
    case MPX_OBJ_ARRAY: case MPX_OBJ_TUPLE: return o->u.a.len;
    case MPX_OBJ_MAP: return o->u.m.len;
    default: return 0;
  }
}

mpx_obj_t *mpx_obj_item(const mpx_obj_t *s, size_t i) {
  if (s == NULL || (s->type != MPX_OBJ_ARRAY && s->type != MPX_OBJ_TUPLE) ||
      i >= s->u.a.len)
    return NULL;
  return s->u.a.v[i];
}

mpx_obj_t *mpx_obj_map_key(const mpx_obj_t *m, size_t i) {
  return m && m->type == MPX_OBJ_MAP && i < m->u.m.len ? m->u.m.kv[2 * i]
                                                       : NULL;
}

mpx_obj_t *mpx_obj_map_value(const mpx_obj_t *m, size_t i) {
  return m && m->type == MPX_OBJ_MAP && i < m->u.m.len ? m->u.m.kv[2 * i + 1]
                                                       : NULL;
}

mpx_obj_t *mpx_obj_map_get(const mpx_obj_t *m, const mpx_obj_t *key) {
  size_t slot;
  if (m == NULL || key == NULL || m->type != MPX_OBJ_MAP) return NULL;
  long at = map_find(m, key, m->u.m.index_cap ? mpx_obj_hash(key) : 0, &slot);
  return at < 0 ? NULL : m->u.m.kv[2 * at + 1];
}

mpx_obj_t *mpx_obj_map_get_str(const mpx_obj_t *m, const char *key) {
  mpx_obj_t k;
  if (key == NULL) return NULL;
  /* A str on the stack: lookups need no allocation. */
  memset(&k, 0, sizeof k);
  k.rc = IMMORTAL;
  k.type = MPX_OBJ_STR;
  k.u.s.p = (char *)key;
  k.u.s.len = strlen(key);
  return mpx_obj_map_get(m, &k);
}

#define OPAQUE_GET(field, def)                                      \
  (o && o->type == MPX_OBJ_OPAQUE ? o->u.o.field : (def))
mpx_opaque_kind_t mpx_obj_opaque_kind(const mpx_obj_t *o) {
  return OPAQUE_GET(kind, MPX_OPAQUE_GLOBAL);
}
const char *mpx_obj_opaque_module(const mpx_obj_t *o) {
  return OPAQUE_GET(module, NULL);
}
const char *mpx_obj_opaque_name(const mpx_obj_t *o) {
  return OPAQUE_GET(name, NULL);
}
mpx_obj_t *mpx_obj_opaque_args(const mpx_obj_t *o) {
  return OPAQUE_GET(args, NULL);
}
mpx_obj_t *mpx_obj_opaque_state(const mpx_obj_t *o) {
  return OPAQUE_GET(state, NULL);
}

/* ---- equality and hashing --------------------------------------------------- */

static int eq(const mpx_obj_t *a, const mpx_obj_t *b, int depth) {
  if (a == b) return 1;
  if (a == NULL || b == NULL || a->type != b->type || depth > MAX_WALK)
    return 0;
  switch (a->type) {
    case MPX_OBJ_NULL: return 1;
    case MPX_OBJ_BOOL: return a->u.b == b->u.b;
    case MPX_OBJ_INT: return a->u.i == b->u.i;
    case MPX_OBJ_FLOAT:
      return a->u.f == b->u.f || (isnan(a->u.f) && isnan(b->u.f));
    case MPX_OBJ_STR: case MPX_OBJ_BYTES: case MPX_OBJ_BIGINT:
      return a->u.s.len == b->u.s.len &&
             (a->u.s.len == 0 || memcmp(a->u.s.p, b->u.s.p, a->u.s.len) == 0);
    case MPX_OBJ_ARRAY: case MPX_OBJ_TUPLE:
      if (a->u.a.len != b->u.a.len) return 0;
      for (size_t i = 0; i < a->u.a.len; i++)
        if (!eq(a->u.a.v[i], b->u.a.v[i], depth + 1)) return 0;
      return 1;
    case MPX_OBJ_MAP:
      if (a->u.m.len != b->u.m.len) return 0;
      for (size_t i = 0; i < 2 * a->u.m.len; i++)
        if (!eq(a->u.m.kv[i], b->u.m.kv[i], depth + 1)) return 0;
      return 1;
    case MPX_OBJ_OPAQUE:
      return a->u.o.kind == b->u.o.kind &&
             strcmp(a->u.o.module, b->u.o.module) == 0 &&
             strcmp(a->u.o.name, b->u.o.name) == 0 &&
             eq(a->u.o.args, b->u.o.args, depth + 1) &&
             eq(a->u.o.state, b->u.o.state, depth + 1);
    default: return 0;
  }
}

int mpx_obj_equal(const mpx_obj_t *a, const mpx_obj_t *b) {
  return eq(a, b, 0);
}

static uint64_t mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  return h * 0xff51afd7ed558ccdULL;
}

static uint64_t hash_bytes(uint64_t h, const void *p, size_t n) {
  const unsigned char *b = p;
  for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
  return h;
}

static uint64_t hsh(const mpx_obj_t *o, int depth) {
  uint64_t h = 0xcbf29ce484222325ULL;
  if (o == NULL) return h;
  h = mix(h, o->type);
  if (depth > MAX_WALK) return h;
  switch (o->type) {
    case MPX_OBJ_BOOL: return mix(h, (uint64_t)o->u.b);
    case MPX_OBJ_INT: return mix(h, (uint64_t)o->u.i);
    case MPX_OBJ_FLOAT: {
      double f = o->u.f == 0.0 ? 0.0 : isnan(o->u.f) ? NAN : o->u.f;
      uint64_t bits;
      memcpy(&bits, &f, sizeof bits);
      return mix(h, bits);
    }
    case MPX_OBJ_STR: case MPX_OBJ_BYTES: case MPX_OBJ_BIGINT:
      return hash_bytes(h, o->u.s.p, o->u.s.len);
    case MPX_OBJ_ARRAY: case MPX_OBJ_TUPLE:
      for (size_t i = 0; i < o->u.a.len; i++)
        h = mix(h, hsh(o->u.a.v[i], depth + 1));
      return h;
    case MPX_OBJ_MAP:
      for (size_t i = 0; i < 2 * o->u.m.len; i++)
        h = mix(h, hsh(o->u.m.kv[i], depth + 1));
      return h;
    case MPX_OBJ_OPAQUE:
      h = hash_bytes(h, o->u.o.module, strlen(o->u.o.module));
      h = hash_bytes(h, o->u.o.name, strlen(o->u.o.name));
      h = mix(h, hsh(o->u.o.args, depth + 1));
      return mix(h, hsh(o->u.o.state, depth + 1));
    default: return h;
  }
}

uint64_t mpx_obj_hash(const mpx_obj_t *o) { return hsh(o, 0); }

/* ---- dump ----------------------------------------------------------------- */

#define DUMP_BYTES 64 /* payload bytes shown before eliding */
#define DUMP_ITEMS 32 /* container items shown before eliding */

typedef struct {
  char *buf;
  size_t cap, len;
} out_t;

static void put(out_t *w, const char *s, size_t n) {
  if (w->len < w->cap) {
    size_t room = w->cap - w->len;
    memcpy(w->buf + w->len, s, n < room ? n : room);
  }
  w->len += n;
}

static void putf(out_t *w, const char *fmt, ...) MPX_PRINTF(2, 3);
static void putf(out_t *w, const char *fmt, ...) {
  char tmp[64];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  if (n > 0) put(w, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

static void put_quoted(out_t *w, const char *pre, const unsigned char *p,
                       size_t n) {
  size_t shown = n > DUMP_BYTES ? DUMP_BYTES : n;
  put(w, pre, strlen(pre));
  put(w, "'", 1);
  for (size_t i = 0; i < shown; i++) {
    unsigned char c = p[i];
    if (c == '\'' || c == '\\') {
      char e[2] = {'\\', (char)c};
      put(w, e, 2);
    } else if (c >= 0x20 && c < 0x7f) {
      put(w, (const char *)&c, 1);
    } else if (c == '\n') {
      put(w, "\\n", 2);
    } else {
      putf(w, "\\x%02x", c);
    }
  }
  put(w, "'", 1);
  if (shown < n) putf(w, "...(%zu bytes)", n);
}

static void dump(out_t *w, const mpx_obj_t *o, int depth) {
  if (o == NULL) {
    put(w, "NULL", 4);
    return;
  }
  if (depth > 64) {
    put(w, "...", 3);
    return;
  }
  switch (o->type) {
    case MPX_OBJ_NULL: put(w, "None", 4); return;
    case MPX_OBJ_BOOL: o->u.b ? put(w, "True", 4) : put(w, "False", 5); return;
    case MPX_OBJ_INT: putf(w, "%lld", (long long)o->u.i); return;
    case MPX_OBJ_FLOAT:
      if (isnan(o->u.f)) put(w, "nan", 3);
      else if (isinf(o->u.f)) o->u.f > 0 ? put(w, "inf", 3) : put(w, "-inf", 4);
      else putf(w, "%.17g", o->u.f);
      return;
    case MPX_OBJ_STR: put_quoted(w, "", (const unsigned char *)o->u.s.p, o->u.s.len); return;
    case MPX_OBJ_BYTES: put_quoted(w, "b", (const unsigned char *)o->u.s.p, o->u.s.len); return;
    case MPX_OBJ_BIGINT: {
      /* Hex of the two's-complement value, most significant byte first. */
      size_t n = o->u.s.len;
      const unsigned char *b = (const unsigned char *)o->u.s.p;
      put(w, "bigint(0x", 9);
      for (size_t i = n; i-- > 0;) putf(w, "%02x", b[i]);
      put(w, ")", 1);
      return;
    }
    case MPX_OBJ_ARRAY: case MPX_OBJ_TUPLE: {
      int tup = o->type == MPX_OBJ_TUPLE;
      put(w, tup ? "(" : "[", 1);
      for (size_t i = 0; i < o->u.a.len; i++) {
        if (i) put(w, ", ", 2);
        if (i == DUMP_ITEMS) {
          putf(w, "...(%zu items)", o->u.a.len);
          break;
        }
        dump(w, o->u.a.v[i], depth + 1);
      }
      if (tup && o->u.a.len == 1) put(w, ",", 1);
      put(w, tup ? ")" : "]", 1);
      return;
    }
    case MPX_OBJ_MAP:
      put(w, "{", 1);
      for (size_t i = 0; i < o->u.m.len; i++) {
        if (i) put(w, ", ", 2);
        if (i == DUMP_ITEMS) {
          putf(w, "...(%zu entries)", o->u.m.len);
          break;
        }
        dump(w, o->u.m.kv[2 * i], depth + 1);
        put(w, ": ", 2);
        dump(w, o->u.m.kv[2 * i + 1], depth + 1);
      }
      put(w, "}", 1);
      return;
    case MPX_OBJ_OPAQUE:
      put(w, "<", 1);
      put(w, o->u.o.module, strlen(o->u.o.module));
      put(w, ".", 1);
      put(w, o->u.o.name, strlen(o->u.o.name));
      if (o->u.o.args) dump(w, o->u.o.args, depth + 1);
      if (o->u.o.state) {
        put(w, " ", 1);
        dump(w, o->u.o.state, depth + 1);
      }
      put(w, ">", 1);
      return;
    default:
      put(w, "?", 1);
  }
}

size_t mpx_obj_dump(const mpx_obj_t *o, char *buf, size_t n) {
  out_t w = {buf, n ? n - 1 : 0, 0};
  dump(&w, o, 0);
  if (n) buf[w.len < n - 1 ? w.len : n - 1] = '\0';
  return w.len;
}

/* ---- UTF-8 ------------------------------------------------------------------ */

int mpx_utf8_valid(const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  while (p < end) {
    unsigned c = *p;
    if (c < 0x80) {
      p++;
      continue;
    }
    size_t n;
    unsigned min, cp;
    if ((c & 0xe0) == 0xc0) { n = 2; min = 0x80; cp = c & 0x1f; }
    else if ((c & 0xf0) == 0xe0) { n = 3; min = 0x800; cp = c & 0x0f; }
    else if ((c & 0xf8) == 0xf0) { n = 4; min = 0x10000; cp = c & 0x07; }
    else return 0;
    if ((size_t)(end - p) < n) return 0;
    for (size_t i = 1; i < n; i++) {
      if ((p[i] & 0xc0) != 0x80) return 0;
      cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    p += n;
  }
  return 1;
}
