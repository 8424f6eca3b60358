/* Shared values and arrays (Python's sharedctypes): typed data in an arena
 * block, preceded by a small header and, unless raw, its own lock.
 *
 * A handle holds one reference to the block, taken by the process that
 * created or attached it. A fork child's inherited copy of a handle holds
 * none: freeing it there frees only the copy, so a child that exits
 * cleanly never frees its parent's value. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ident.h"
#include "internal.h"
#include "lock_internal.h"
#include "mpx/shm.h"

#define VALUE_MAGIC 0x6d707856u /* "mpxV" */
#define DEFAULT_HEAP ((size_t)64 << 20)

typedef struct {
  uint32_t magic;
  uint16_t type;
  uint16_t lock_kind;
  uint64_t len;
  uint64_t pad_[6];
  mpx_lock_t lock; /* unused when raw or user-locked */
} vhdr_t;          /* 128 bytes: the data after it stays 16-byte aligned */

_Static_assert(sizeof(vhdr_t) % 16 == 0, "value header alignment");

typedef struct {
  mpx_arena_t *arena;
  mpx_ref_t ref;
  pid_t pid; /* the process whose reference this handle holds */
  vhdr_t *h;
  char *data;
  mpx_lock_t *lock;
  mpx_ctype_t type;
  size_t len;
} shared_t;

/* Both public handle types are this struct as its first member. */
struct mpx_shared_value_s {
  shared_t s;
};
struct mpx_shared_array_s {
  shared_t s;
};

/* ---- types ---------------------------------------------------------- */

static const struct {
  const char *name;
  size_t size;
} ctypes[] = {
    [MPX_CT_INT8] = {"int8", 1},     [MPX_CT_UINT8] = {"uint8", 1},
    [MPX_CT_INT16] = {"int16", 2},   [MPX_CT_UINT16] = {"uint16", 2},
    [MPX_CT_INT32] = {"int32", 4},   [MPX_CT_UINT32] = {"uint32", 4},
    [MPX_CT_INT64] = {"int64", 8},   [MPX_CT_UINT64] = {"uint64", 8},
    [MPX_CT_FLOAT] = {"float", 4},   [MPX_CT_DOUBLE] = {"double", 8},
    [MPX_CT_CHAR] = {"char", 1},
};

size_t mpx_ctype_size(mpx_ctype_t t) {
  return (unsigned)t < MPX__ARRAY_SIZE(ctypes) ? ctypes[t].size : 0;
}

const char *mpx_ctype_name(mpx_ctype_t t) {
  return mpx_ctype_size(t) ? ctypes[t].name : "unknown";
}

mpx_ctype_t mpx_ctype_from_code(char code) {
  switch (code) {
    case 'b': return MPX_CT_INT8;
    case 'B': return MPX_CT_UINT8;
    case 'h': return MPX_CT_INT16;
    case 'H': return MPX_CT_UINT16;
    case 'i': return MPX_CT_INT32;
    case 'I': return MPX_CT_UINT32;
    case 'l': case 'q': return MPX_CT_INT64; /* C long is 64-bit on LP64 */
    case 'L': case 'Q': return MPX_CT_UINT64;
    case 'f': return MPX_CT_FLOAT;
    case 'd': return MPX_CT_DOUBLE;
    case 'c': return MPX_CT_CHAR;
    default: return (mpx_ctype_t)0;
  }
}

/* ---- the default heap --------------------------------------------------- */

static mpx_arena_t *default_heap;
static int default_heap_rc;
static pthread_once_t default_once = PTHREAD_ONCE_INIT;

static void make_default_heap(void) {
  mpx_arena_opts_t o = {0};
  const char *env = getenv("MPX_HEAP_SIZE");
  o.size = env && atoll(env) > 0 ? (size_t)atoll(env) : DEFAULT_HEAP;
  default_heap_rc = mpx_arena_new(&default_heap, &o);
}

static int heap_of(const mpx_shared_opts_t *o, mpx_arena_t **a) {
  if (o && o->arena) {
    *a = o->arena;
    return 0;
  }
  pthread_once(&default_once, make_default_heap);
  *a = default_heap;
  return default_heap_rc;
}

int mpx_shared_heap(mpx_arena_t **out) {
  if (out == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  return heap_of(NULL, out);
}

/* ---- common ------------------------------------------------------------ */

static int create(shared_t *s, mpx_ctype_t type, size_t len, const void *init,
                  const mpx_shared_opts_t *o) {
  int rc;
  size_t esz = mpx_ctype_size(type);
  mpx_shared_lock_t kind = o ? o->lock_kind : MPX_SHARED_RLOCK;
  if (esz == 0) return mpx__err(MPX_EINVAL, "unknown ctype %d", (int)type);
  if (len == 0 || len > (SIZE_MAX - sizeof(vhdr_t)) / esz)
    return mpx__err(MPX_EINVAL, "array length %zu", len);
  if (kind > MPX_SHARED_USER_LOCK)
    return mpx__err(MPX_EINVAL, "unknown lock kind %d", (int)kind);
  if (kind == MPX_SHARED_USER_LOCK && (o->lock == NULL))
    return mpx__err(MPX_EINVAL, "MPX_SHARED_USER_LOCK without a lock");
  if ((rc = heap_of(o, &s->arena)) != 0) return rc;
  if ((rc = mpx_arena_alloc(s->arena, sizeof(vhdr_t) + esz * len, 0,
                            &s->ref)) != 0)
    return rc;
  s->h = mpx_arena_ptr(s->arena, s->ref);
  memset(s->h, 0, sizeof *s->h);
  s->h->type = (uint16_t)type;
  s->h->lock_kind = (uint16_t)kind;
  s->h->len = len;
  s->data = (char *)(s->h + 1);
  if (init) memcpy(s->data, init, esz * len);
  else memset(s->data, 0, esz * len);
  if (kind == MPX_SHARED_RLOCK) rc = mpx_rlock_init(&s->h->lock);
  else if (kind == MPX_SHARED_LOCK) rc = mpx_lock_init(&s->h->lock);
  if (rc != 0) {
    mpx_arena_release(s->arena, s->ref);
    return rc;
  }
  s->lock = kind == MPX_SHARED_USER_LOCK ? o->lock
            : kind == MPX_SHARED_RAW     ? NULL
                                         : &s->h->lock;
  s->type = type;
  s->len = len;
  s->pid = mpx__pid();
  __atomic_store_n(&s->h->magic, VALUE_MAGIC, __ATOMIC_RELEASE);
  return 0;
}

static int attach(shared_t *s, mpx_arena_t *a, mpx_ref_t ref) {
  int rc;
  if (a == NULL) return mpx__err(MPX_EINVAL, "NULL arena");
  if ((rc = mpx_arena_retain(a, ref)) != 0) return rc;
  vhdr_t *h = mpx_arena_ptr(a, ref);
  size_t esz = h ? mpx_ctype_size((mpx_ctype_t)h->type) : 0;
  if (h == NULL || __atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != VALUE_MAGIC
      || esz == 0 || h->len == 0 ||
      h->len > (mpx_arena_block_size(a, ref) - sizeof *h) / esz) {
    mpx_arena_release(a, ref);
    return mpx__err(MPX_EINVAL, "block 0x%llx holds no shared value",
                    (unsigned long long)ref);
  }
  if (h->lock_kind == MPX_SHARED_USER_LOCK) {
    mpx_arena_release(a, ref);
    return mpx__err(MPX_ENOTSUP, "a value with a caller-supplied lock can "
                    "only be inherited, not attached");
  }
  s->arena = a;
  s->ref = ref;
  s->h = h;
  s->data = (char *)(h + 1);
  s->lock = h->lock_kind == MPX_SHARED_RAW ? NULL : &h->lock;
  s->type = (mpx_ctype_t)h->type;
  s->len = (size_t)h->len;
  s->pid = mpx__pid();
  return 0;
}

static void drop(shared_t *s) {
  if (s->pid == mpx__pid()) mpx_arena_release(s->arena, s->ref);
}

static int lock(shared_t *s) {
  if (s->lock == NULL) return 0;
  int rc = mpx_lock_acquire(s->lock, -1);
  if (rc == MPX_EOWNERDEAD) {
    /* Plain data: nothing to repair beyond what the dead writer left. */
    MPX__WARN("shared %s: a process died holding its lock",
              mpx_ctype_name(s->type));
    return mpx_lock_consistent(s->lock);
  }
  return rc;
}

static void unlock(shared_t *s) {
  if (s->lock) mpx_lock_release(s->lock);
}

/* Copies n elements at `start` out (to `out`) or in (from `in`). */
static int copy(shared_t *s, size_t start, size_t n, void *out,
                const void *in) {
  size_t esz = mpx_ctype_size(s->type);
  int rc;
  if (start > s->len || n > s->len - start)
    return mpx__err(MPX_ERANGE, "elements [%zu, %zu) of an array of %zu",
                    start, start + n, s->len);
  if (n == 0) return 0;
  if ((rc = lock(s)) != 0) return rc;
  char *p = s->data + start * esz;
  if (out != NULL) memcpy(out, p, n * esz);
  else if (in != NULL) memcpy(p, in, n * esz);
  unlock(s);
  return 0;
}

/* The handle types both wrap a shared_t: one allocation path for both. */
static int new_handle(shared_t **out, mpx_ctype_t type, size_t len,
                      const void *init, const mpx_shared_opts_t *opts,
                      mpx_arena_t *arena, mpx_ref_t ref) {
  int rc;
  *out = calloc(1, sizeof **out);
  if (*out == NULL) return mpx__err(MPX_ENOMEM, "shared value handle");
  rc = arena ? attach(*out, arena, ref) : create(*out, type, len, init, opts);
  if (rc != 0) {
    free(*out);
    *out = NULL;
  }
  return rc;
}

/* The public handles are a shared_t with another name. */
#define NEW_HANDLE(out, T, ...)                                        \
  do {                                                                 \
    shared_t *h_;                                                      \
    int rc_;                                                           \
    if ((out) == NULL) return mpx__err(MPX_EINVAL, "NULL argument");   \
    rc_ = new_handle(&h_, __VA_ARGS__);                                \
    *(out) = (T *)h_;                                                  \
    return rc_;                                                        \
  } while (0)

/* ---- values -------------------------------------------------------------- */

int mpx_shared_value_new(mpx_shared_value_t **out, mpx_ctype_t type,
                         const void *init, const mpx_shared_opts_t *opts) {
  NEW_HANDLE(out, mpx_shared_value_t, type, 1, init, opts, NULL, 0);
}

int mpx_shared_value_attach(mpx_shared_value_t **out, mpx_arena_t *arena,
                            mpx_ref_t ref) {
  if (arena == NULL) return mpx__err(MPX_EINVAL, "NULL arena");
  NEW_HANDLE(out, mpx_shared_value_t, 0, 0, NULL, NULL, arena, ref);
}

mpx_ref_t mpx_shared_value_ref(const mpx_shared_value_t *v) { return v->s.ref; }
mpx_ctype_t mpx_shared_value_type(const mpx_shared_value_t *v) {
  return v->s.type;
}
void *mpx_shared_value_ptr(mpx_shared_value_t *v) { return v->s.data; }
mpx_lock_t *mpx_shared_value_lock(mpx_shared_value_t *v) { return v->s.lock; }

int mpx_shared_value_get(mpx_shared_value_t *v, void *out) {
  return copy(&v->s, 0, 1, out, NULL);
}

int mpx_shared_value_set(mpx_shared_value_t *v, const void *in) {
  if (in == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  return copy(&v->s, 0, 1, NULL, in);
}

void mpx_shared_value_free(mpx_shared_value_t *v) {
  if (v == NULL) return;
  drop(&v->s);
  free(v);
}

/* ---- arrays -------------------------------------------------------------- */

int mpx_shared_array_new(mpx_shared_array_t **out, mpx_ctype_t type,
                         size_t len, const void *init,
                         const mpx_shared_opts_t *opts) {
  NEW_HANDLE(out, mpx_shared_array_t, type, len, init, opts, NULL, 0);
}

int mpx_shared_array_attach(mpx_shared_array_t **out, mpx_arena_t *arena,
                            mpx_ref_t ref) {
  if (arena == NULL) return mpx__err(MPX_EINVAL, "NULL arena");
  NEW_HANDLE(out, mpx_shared_array_t, 0, 0, NULL, NULL, arena, ref);
}

mpx_ref_t mpx_shared_array_ref(const mpx_shared_array_t *a) { return a->s.ref; }
mpx_ctype_t mpx_shared_array_type(const mpx_shared_array_t *a) {
  return a->s.type;
}
size_t mpx_shared_array_len(const mpx_shared_array_t *a) { return a->s.len; }
void *mpx_shared_array_ptr(mpx_shared_array_t *a) { return a->s.data; }
mpx_lock_t *mpx_shared_array_lock(mpx_shared_array_t *a) { return a->s.lock; }

int mpx_shared_array_read(mpx_shared_array_t *a, size_t start, size_t n,
                          void *out) {
  if (out == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  return copy(&a->s, start, n, out, NULL);
}

int mpx_shared_array_write(mpx_shared_array_t *a, size_t start, size_t n,
                           const void *in) {
  if (in == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  return copy(&a->s, start, n, NULL, in);
}

void mpx_shared_array_free(mpx_shared_array_t *a) {
  if (a == NULL) return;
  drop(&a->s);
  free(a);
}
