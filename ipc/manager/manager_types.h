/* Internal to the typeids a manager serves (ipc/manager/manager_*.c, one
 * file per type family): what they share. The dispatcher does not include
 * this; it sees the types only through manager_obj.h.
 *
 *   manager_types.c      argument binding, errors, Python's ==, hash and
 *                        ordering, timeouts, small object helpers, the
 *                        registry of shipped types
 *   manager_seq.c        the value ring (list, queue, array), iterables,
 *                        slices
 *   manager_queue.c      Queue, JoinableQueue
 *   manager_dict.c       dict (and the ordered table Namespace reuses)
 *   manager_iter.c       Iterator (what dict.__iter__ hands out)
 *   manager_list.c       list
 *   manager_value.c      Value, Array
 *   manager_namespace.c  Namespace
 *   manager_sync.c       Lock, RLock, Semaphore, BoundedSemaphore,
 *                        Condition, Event, Barrier
 *
 * Each type runs its methods from a table of {name, handler} (its
 * mpx__mtype_t.methods); the core looks the handler up by name. Python's
 * exception classes travel as opaque names (mpx/manager.h). */
#ifndef MPX_IPC_MANAGER_TYPES_H
#define MPX_IPC_MANAGER_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "manager_obj.h"

#define STREQ(a, b) (strcmp((a), (b)) == 0)

/* ---- the shipped types (the registry in manager_types.c lists them) ------ */

extern const mpx__mtype_t mpx__mqueue_type, mpx__mjoinable_queue_type;
extern const mpx__mtype_t mpx__mdict_type, mpx__mlist_type, mpx__miter_type;
extern const mpx__mtype_t mpx__mvalue_type, mpx__marray_type, mpx__mns_type;
extern const mpx__mtype_t mpx__mlock_type, mpx__mrlock_type, mpx__msem_type;
extern const mpx__mtype_t mpx__mbsem_type, mpx__mcond_type;
extern const mpx__mtype_t mpx__mevent_type, mpx__mbarrier_type;

/* ---- errors ------------------------------------------------------------- */

/* Sets a builtins.TypeError reply; returns MPX__M_DONE. */
int mpx__mt_type_error(mpx__mcall_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* An exception whose one argument is a value (KeyError(key)). */
int mpx__mt_raise_with(mpx__mcall_t *c, const char *name, const mpx_obj_t *v);
/* AttributeError: '<what>' object has no attribute '<name>'. */
int mpx__mt_attr_error(mpx__mcall_t *c, const mpx_obj_t *name, const char *what);
/* Sets a MemoryError reply; returns NULL (for constructors). */
mpx__mobj_t *mpx__mt_nomem(mpx__mcall_t *c);
/* Python's type name of a value ("int", "list", an opaque's class). */
const char *mpx__mt_type_name(const mpx_obj_t *o);

/* ---- argument binding --------------------------------------------------- */

/* Positional i or keyword names[i] (NULL-terminated) into out[i] (NULL
 * when absent). Sets a TypeError reply and returns -1 for too many
 * positionals, an unknown or repeated keyword, or fewer than `required`. */
int mpx__mt_bind(mpx__mcall_t *c, const char *const *names, size_t required,
                 const mpx_obj_t **out);
/* A constructor's arguments, bound as those of a call to `method` (c's own
 * args are the create request's). On an error c's reply is set: -1. */
int mpx__mt_bind_new(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                     const mpx_obj_t *kwds, const char *const *names,
                     size_t required, const mpx_obj_t **out);
/* A TypeError unless a call to `method` got no arguments: 0 or -1. The
 * constructors pass their own; NO_ARGS a method call's. */
int mpx__mt_no_args(mpx__mcall_t *c, const char *method, const mpx_obj_t *args,
                    const mpx_obj_t *kwds);

/* In a method handler: binds c's arguments to the names given, or returns
 * the TypeError reply. */
#define BIND(c, req, out, ...)                                            \
  do {                                                                    \
    static const char *const names_[] = {__VA_ARGS__, NULL};              \
    if (mpx__mt_bind((c), names_, (req), (out)) != 0) return MPX__M_DONE; \
  } while (0)

#define NO_ARGS(c)                                                    \
  do {                                                                \
    if (mpx__mt_no_args((c), (c)->method, (c)->args, (c)->kwds) != 0) \
      return MPX__M_DONE;                                             \
  } while (0)

/* ---- Python's view of values ---------------------------------------------- */

static inline bool mpx__mt_is_int(const mpx_obj_t *o) {
  mpx_obj_type_t t = mpx_obj_type(o);
  return t == MPX_OBJ_INT || t == MPX_OBJ_BOOL;
}

static inline int64_t mpx__mt_int_of(const mpx_obj_t *o) {
  return mpx_obj_type(o) == MPX_OBJ_BOOL ? mpx_obj_get_bool(o)
                                         : mpx_obj_get_int(o);
}

static inline bool mpx__mt_is_num(const mpx_obj_t *o) {
  return mpx__mt_is_int(o) || mpx_obj_type(o) == MPX_OBJ_FLOAT;
}

static inline double mpx__mt_num_of(const mpx_obj_t *o) {
  return mpx_obj_type(o) == MPX_OBJ_FLOAT ? mpx_obj_get_float(o)
                                          : (double)mpx__mt_int_of(o);
}

/* Python's bool(o); NULL (an absent argument) is false. */
bool mpx__mt_truthy(const mpx_obj_t *o);
/* An int argument (Python's __index__): 0, or -1 with a TypeError set. */
int mpx__mt_want_int(mpx__mcall_t *c, const mpx_obj_t *o, int64_t *v);
/* Python's ==, close enough: numbers by value across bool/int/float,
 * sequences item by item, the rest as mpx_obj_equal. */
bool mpx__mt_eq(const mpx_obj_t *a, const mpx_obj_t *b);
/* A hash consistent with mpx__mt_eq. */
uint64_t mpx__mt_hash(const mpx_obj_t *o);
/* The type name that makes o unhashable in Python ("list"), or NULL. */
const char *mpx__mt_unhashable(const mpx_obj_t *o);
/* Python's ordering for sort: -1/0/1, or -2 when the types do not order
 * (the pair is then left in mpx__mt_unordered_a/_b, for the message). */
int mpx__mt_cmp(const mpx_obj_t *a, const mpx_obj_t *b);
extern _Thread_local const mpx_obj_t *mpx__mt_unordered_a, *mpx__mt_unordered_b;
/* A timeout argument: None/absent is forever (-1), as is more than 1e9.
 * Below zero it is the ValueError negmsg (Queue, Semaphore, Lock); with
 * negmsg NULL, zero or below does not wait (Event, Condition, Barrier, as
 * threading's waits do). Returns 0, or -1 (ValueError/TypeError set). */
int mpx__mt_want_timeout(mpx__mcall_t *c, const mpx_obj_t *t, double *out,
                         const char *negmsg);

/* ---- small object helpers ------------------------------------------------- */

/* A zeroed object of `size` bytes whose head has type t (NULL: the core
 * sets it when it registers the object). */
mpx__mobj_t *mpx__mt_alloc(size_t size, const mpx__mtype_t *t);
/* destroy for objects that own nothing but themselves. */
void mpx__mt_free(mpx__mobj_t *o);
/* drop for types whose parked calls changed nothing to undo. */
void mpx__mt_unpark_only(mpx__mobj_t *o, mpx__mcall_t *c);
/* Python's default repr: <what object at 0x...>. */
void mpx__mt_addr_repr(mpx__mobj_t *o, const char *what, char *buf, size_t n);
/* A tuple of n values (stolen). */
mpx_obj_t *mpx__mt_tuple(size_t n, ...);
/* A plain Python object as protocol 2+ pickles it: cls.__new__(cls) and
 * its __dict__ as state (stolen). */
mpx_obj_t *mpx__mt_plain_object(const char *name, mpx_obj_t *state);

/* ---- a growable ring of values (list, queue, array; manager_seq.c) -------- */

typedef struct {
  mpx_obj_t **v;
  size_t head, len, cap; /* a ring: items head..head+len (mod cap) */
} mpx__mvec_t;

static inline mpx_obj_t **mpx__mvec_at(mpx__mvec_t *a, size_t i) {
  return &a->v[(a->head + i) % a->cap];
}

int mpx__mvec_grow(mpx__mvec_t *a, size_t need);
/* Steals x. 0 or -1 (out of memory, x released). */
int mpx__mvec_push(mpx__mvec_t *a, mpx_obj_t *x);
mpx_obj_t *mpx__mvec_popleft(mpx__mvec_t *a);
/* Inserts x (stolen) before index i (0..len). */
int mpx__mvec_insert(mpx__mvec_t *a, size_t i, mpx_obj_t *x);
/* Removes index i and returns it (the caller's reference). */
mpx_obj_t *mpx__mvec_remove(mpx__mvec_t *a, size_t i);
void mpx__mvec_clear(mpx__mvec_t *a);
void mpx__mvec_free(mpx__mvec_t *a);
/* A list of the items (retained), or NULL. */
mpx_obj_t *mpx__mvec_to_array(mpx__mvec_t *a);
/* Appends the items of a list/tuple (retained). */
int mpx__mvec_extend(mpx__mvec_t *a, const mpx_obj_t *seq);
void mpx__mvec_repr(mpx__mvec_t *a, const char *open, const char *close,
                    char *buf, size_t n);

/* An iterable argument as a sequence of values: list/tuple as they are, a
 * dict's keys, a str's characters, bytes' ints, a set's items, a range
 * expanded. New reference or NULL (TypeError/MemoryError set). */
mpx_obj_t *mpx__mt_iterable(mpx__mcall_t *c, const mpx_obj_t *o);
/* A builtins.slice(start, stop, step) opaque: 1, with Python's
 * PySlice_AdjustIndices result; 0 when o is no slice; -1 on a bad one
 * (error set). */
int mpx__mt_slice(mpx__mcall_t *c, const mpx_obj_t *o, size_t len,
                  int64_t *start, int64_t *stop, int64_t *step, size_t *count);
/* Index i into len items (negative from the end): 0 or -1. */
int mpx__mt_index(int64_t i, size_t len, size_t *out);

/* ---- the ordered table behind dict and Namespace (manager_dict.c) --------- */

typedef struct {
  mpx_obj_t *k, *v; /* k NULL: a deleted slot */
  uint64_t h;
} mpx__mdent_t;

typedef struct {
  mpx__mobj_t h;
  mpx__mdent_t *e;
  size_t n_e, cap_e, live;
  uint32_t *idx; /* open addressing: entry index + 1, 0 empty */
  size_t cap_i;  /* power of two */
} mpx__mdict_t;

mpx__mdent_t *mpx__mdict_find(mpx__mdict_t *d, const mpx_obj_t *k);
/* Sets k -> v (both retained here). 0 or -1 (out of memory). */
int mpx__mdict_set(mpx__mdict_t *d, const mpx_obj_t *k, const mpx_obj_t *v);
/* Removes an entry; returns its value (the caller's). */
mpx_obj_t *mpx__mdict_take(mpx__mdict_t *d, mpx__mdent_t *e);
void mpx__mdict_clear(mpx__mdict_t *d);
/* Clears the table and frees its storage (not d itself). */
void mpx__mdict_fini(mpx__mdict_t *d);
/* A map of the entries (retained), or NULL. */
mpx_obj_t *mpx__mdict_map(mpx__mdict_t *d);
/* Sets each keyword (a map); -1 with a MemoryError set. */
int mpx__mdict_update_kw(mpx__mdict_t *d, mpx__mcall_t *c, const mpx_obj_t *kw);

/* An Iterator over items (stolen; released on failure), or NULL. */
mpx__mobj_t *mpx__miter_new(mpx_obj_t *items);

#endif /* MPX_IPC_MANAGER_TYPES_H */
