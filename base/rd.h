/* The one reader of length-prefixed records, for every internal message
 * format of the library: the forkserver's and spawn's control messages
 * (u64 lengths), the pipeline's batches and results (u32 lengths) and the
 * encoded plugin parameters. Numbers are in host byte order: writer and
 * reader are always on one machine. Inline: the engine reads every item
 * of every batch through it. Not installed. */
#ifndef MPX_BASE_RD_H
#define MPX_BASE_RD_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "mpx/error.h"

/* A cursor over [p, end). Every read either consumes what it returns or
 * fails (MPX_EPROTO) without moving, so a short or malformed buffer is
 * refused, never read past. */
typedef struct {
  const char *p, *end;
} mpx__rd_t;

static inline mpx__rd_t mpx__rd_make(const void *data, size_t len) {
  mpx__rd_t r = {(const char *)data, (const char *)data + len};
  return r;
}

static inline size_t mpx__rd_left(const mpx__rd_t *r) {
  return (size_t)(r->end - r->p);
}

static inline int mpx__rd_u32(mpx__rd_t *r, uint32_t *v) {
  if (mpx__rd_left(r) < sizeof *v) return MPX_EPROTO;
  memcpy(v, r->p, sizeof *v);
  r->p += sizeof *v;
  return 0;
}

static inline int mpx__rd_u64(mpx__rd_t *r, uint64_t *v) {
  if (mpx__rd_left(r) < sizeof *v) return MPX_EPROTO;
  memcpy(v, r->p, sizeof *v);
  r->p += sizeof *v;
  return 0;
}

/* A u32 length, then that many bytes: *p points into the buffer. */
static inline int mpx__rd_bytes32(mpx__rd_t *r, const void **p, uint32_t *n) {
  const char *save = r->p;
  if (mpx__rd_u32(r, n) != 0) return MPX_EPROTO;
  if (mpx__rd_left(r) < *n) {
    r->p = save;
    return MPX_EPROTO;
  }
  *p = r->p;
  r->p += *n;
  return 0;
}

/* A u64 length, then that many bytes: *p points into the buffer. */
static inline int mpx__rd_field(mpx__rd_t *r, const void **p, size_t *n) {
  const char *save = r->p;
  uint64_t len;
  if (mpx__rd_u64(r, &len) != 0) return MPX_EPROTO;
  if (len > mpx__rd_left(r)) {
    r->p = save;
    return MPX_EPROTO;
  }
  *p = r->p;
  *n = (size_t)len;
  r->p += len;
  return 0;
}

/* A field that holds a NUL-terminated string (the NUL is its last byte,
 * as mpx__buf_put_str writes it). */
static inline int mpx__rd_str(mpx__rd_t *r, const char **s) {
  const char *save = r->p;
  const void *p;
  size_t n;
  if (mpx__rd_field(r, &p, &n) != 0) return MPX_EPROTO;
  if (n == 0 || ((const char *)p)[n - 1] != '\0') {
    r->p = save;
    return MPX_EPROTO;
  }
  *s = p;
  return 0;
}

#endif /* MPX_BASE_RD_H */
