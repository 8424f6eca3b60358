/* mpx: dynamic values, the common currency of codecs, queues and pools.
 *
 * An mpx_obj_t is null, bool, int (int64), bigint (an integer beyond
 * int64, as two's-complement little-endian bytes, the way pickle's LONG1
 * carries it), float (double), str (UTF-8 bytes with a length; NUL
 * allowed), bytes, array, tuple (an array that codecs which know tuples
 * keep apart, as pickle does), map (insertion-ordered; keys of any type,
 * each at most once), or opaque (a foreign object a codec could name but
 * must not build: module, name, args, state; see below).
 *
 * Ownership: objects are reference-counted. Every function that returns
 * an mpx_obj_t * documents whether the caller gets a new reference (it
 * must call mpx_obj_release) or a borrowed one (valid while the object it
 * came from is). Functions that take an item to store in a container
 * *steal* the reference: the container owns it afterwards, even when the
 * call fails. The reference count is atomic, so objects may be shared
 * between threads; mutating a container (append, set) is not thread-safe.
 * Containers must not contain themselves (no cycles).
 *
 * Constructors return NULL only when memory runs out (or for an invalid
 * argument, which sets mpx_last_error). null, true and false are
 * immortal singletons: retaining and releasing them is a no-op. */
#ifndef MPX_OBJ_H
#define MPX_OBJ_H

#include <stddef.h>
#include <stdint.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
  MPX_OBJ_NULL = 0,
  MPX_OBJ_BOOL,
  MPX_OBJ_INT,
  MPX_OBJ_BIGINT,
  MPX_OBJ_FLOAT,
  MPX_OBJ_STR,
  MPX_OBJ_BYTES,
  MPX_OBJ_ARRAY,
  MPX_OBJ_TUPLE,
  MPX_OBJ_MAP,
  MPX_OBJ_OPAQUE
} mpx_obj_type_t;

/* How an opaque object was made, in pickle's terms. */
typedef enum {
  MPX_OPAQUE_GLOBAL = 0, /* a bare reference to module.name (a class...) */
  MPX_OPAQUE_REDUCE,     /* module.name(*args), then state (if any) */
  MPX_OPAQUE_NEWOBJ      /* module.name.__new__(cls, *args), then state */
} mpx_opaque_kind_t;

typedef struct mpx_obj_s mpx_obj_t;

/* ---- constructors: each returns a new reference ------------------------ */
/* Own (every constructor): the result is yours: mpx_obj_release. */

MPX_API mpx_obj_t *mpx_obj_null(void);
MPX_API mpx_obj_t *mpx_obj_bool(int v);
MPX_API mpx_obj_t *mpx_obj_int(int64_t v);
/* From n bytes of two's-complement little-endian (n >= 1). Normalised: a
 * value that fits int64 becomes an MPX_OBJ_INT; otherwise redundant sign
 * bytes are dropped.
 * Own: copies le. */
MPX_API mpx_obj_t *mpx_obj_bigint(const void *le, size_t n);
MPX_API mpx_obj_t *mpx_obj_float(double v);
/* Copies len bytes (len == SIZE_MAX: strlen). No UTF-8 check: see
 * mpx_utf8_valid().
 * Own: copies s (mpx_obj_bytes: copies p). */
MPX_API mpx_obj_t *mpx_obj_str(const char *s, size_t len);
MPX_API mpx_obj_t *mpx_obj_bytes(const void *p, size_t len);
/* Zero-copy: the object points at p without copying; release(ctx) is
 * called (if not NULL) when the object dies. The memory must stay valid
 * and unchanged until then.
 * Own: keeps s / p until release(ctx) runs; on failure (NULL) release is
 * not called and the memory stays yours. */
MPX_API mpx_obj_t *mpx_obj_str_external(const char *s, size_t len,
                                        void (*release)(void *ctx),
                                        void *ctx);
MPX_API mpx_obj_t *mpx_obj_bytes_external(const void *p, size_t len,
                                          void (*release)(void *ctx),
                                          void *ctx);
/* Bytes that point into an arena block: mpx_obj_bytes_arena, in mpx/shm.h. */
/* Empty containers; cap: a capacity hint (0 is fine). */
MPX_API mpx_obj_t *mpx_obj_array(size_t cap);
MPX_API mpx_obj_t *mpx_obj_tuple(size_t cap);
MPX_API mpx_obj_t *mpx_obj_map(size_t cap);
/* An opaque object. Copies module and name (C strings); steals args (may
 * be NULL: none) and state (NULL: none), even when it fails. The null
 * object given as args or state is stored as NULL.
 * Own: copies module and name; takes args and state, also on failure. */
MPX_API mpx_obj_t *mpx_obj_opaque(mpx_opaque_kind_t kind, const char *module,
                                  const char *name, mpx_obj_t *args,
                                  mpx_obj_t *state);

/* ---- containers ------------------------------------------------------- */

/* Append to an array or tuple; steals item. 0, MPX_EINVAL (not an array,
 * item NULL), MPX_ENOMEM.
 * Own: takes item, also on failure. */
MPX_API int mpx_obj_append(mpx_obj_t *seq, mpx_obj_t *item);
/* Set key -> value in a map; steals both. A key already present (equal by
 * mpx_obj_equal) keeps its position and gets the new value.
 * Own: takes key and val, also on failure (a key already present is
 * released, the old value too). */
MPX_API int mpx_obj_map_set(mpx_obj_t *map, mpx_obj_t *key, mpx_obj_t *val);
/* Convenience: a str key.
 * Own: copies key; takes val, also on failure. */
MPX_API int mpx_obj_map_set_str(mpx_obj_t *map, const char *key,
                                mpx_obj_t *val);

/* ---- reference counting ------------------------------------------------- */

/* Returns o. Both accept NULL and do nothing with it.
 * Own: retain gives you one more reference (the result is yours:
 * mpx_obj_release); release takes one of yours. */
MPX_API mpx_obj_t *mpx_obj_retain(mpx_obj_t *o);
MPX_API void mpx_obj_release(mpx_obj_t *o);

/* ---- accessors (borrowed results; wrong type gives 0 / NULL) ------------ */
/* Own (every accessor): a returned pointer (payload, item, key, value,
 * module, name, args, state) is borrowed until the object is released or,
 * for an item or value, replaced; retain it to keep it longer.
 * mpx_obj_type_name's string is static, borrowed until the process ends. */

MPX_API mpx_obj_type_t mpx_obj_type(const mpx_obj_t *o);
MPX_API const char *mpx_obj_type_name(mpx_obj_type_t t);
MPX_API int mpx_obj_get_bool(const mpx_obj_t *o);
MPX_API int64_t mpx_obj_get_int(const mpx_obj_t *o);
MPX_API double mpx_obj_get_float(const mpx_obj_t *o);
/* str, bytes and bigint payloads: pointer and length (a str is also
 * NUL-terminated when mpx made the copy; external ones need not be). */
MPX_API const char *mpx_obj_str_data(const mpx_obj_t *o, size_t *len);
MPX_API const void *mpx_obj_bytes_data(const mpx_obj_t *o, size_t *len);
MPX_API const void *mpx_obj_bigint_data(const mpx_obj_t *o, size_t *len);
/* Items of an array / tuple / map, bytes of a str / bytes; 0 otherwise. */
MPX_API size_t mpx_obj_len(const mpx_obj_t *o);
MPX_API mpx_obj_t *mpx_obj_item(const mpx_obj_t *seq, size_t i);
/* The i-th entry of a map, in insertion order. */
MPX_API mpx_obj_t *mpx_obj_map_key(const mpx_obj_t *map, size_t i);
MPX_API mpx_obj_t *mpx_obj_map_value(const mpx_obj_t *map, size_t i);
/* Lookup by key (hashed): the value or NULL. */
MPX_API mpx_obj_t *mpx_obj_map_get(const mpx_obj_t *map, const mpx_obj_t *key);
MPX_API mpx_obj_t *mpx_obj_map_get_str(const mpx_obj_t *map, const char *key);
MPX_API mpx_opaque_kind_t mpx_obj_opaque_kind(const mpx_obj_t *o);
MPX_API const char *mpx_obj_opaque_module(const mpx_obj_t *o);
MPX_API const char *mpx_obj_opaque_name(const mpx_obj_t *o);
MPX_API mpx_obj_t *mpx_obj_opaque_args(const mpx_obj_t *o);  /* or NULL */
MPX_API mpx_obj_t *mpx_obj_opaque_state(const mpx_obj_t *o); /* or NULL */

/* ---- comparison and display --------------------------------------------- */

/* Deep equality: same type (an array never equals a tuple) and contents;
 * floats compare by value, with NaN equal to NaN; maps compare entries in
 * order. 1 or 0. */
MPX_API int mpx_obj_equal(const mpx_obj_t *a, const mpx_obj_t *b);
/* A hash consistent with mpx_obj_equal. */
MPX_API uint64_t mpx_obj_hash(const mpx_obj_t *o);
/* A readable one-line rendering in Python's repr style, for logs: None,
 * True, 12, 1.5, 'text', b'\x00', [1, 2], (1,), {'k': 1},
 * <module.name(args) state>. Writes at most n bytes (NUL included) and
 * returns the full length, like snprintf; long payloads are elided.
 * Own: borrows buf for the call (it stays yours). */
MPX_API size_t mpx_obj_dump(const mpx_obj_t *o, char *buf, size_t n);

/* 1 when s[0..len) is valid UTF-8 (no surrogates, no overlongs). */
MPX_API int mpx_utf8_valid(const char *s, size_t len);

#ifdef __cplusplus
}
#endif
#endif /* MPX_OBJ_H */
