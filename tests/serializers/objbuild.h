/* Short constructors for expected values in the codec suites:
 * A(2, I(1), S("x")) is [1, 'x'], T(...) a tuple, M(n, k1, v1, ...) a map.
 * Each returns a new reference; containers steal their items. */
#ifndef MPX_TEST_OBJBUILD_H
#define MPX_TEST_OBJBUILD_H

#include <stdarg.h>
#include <stdint.h>

#include "mpx.h"
#include "../mpx_test.h"

static inline mpx_obj_t *S(const char *s) { return mpx_obj_str(s, SIZE_MAX); }
static inline mpx_obj_t *I(int64_t v) { return mpx_obj_int(v); }
static inline mpx_obj_t *F(double v) { return mpx_obj_float(v); }
static inline mpx_obj_t *NUL(void) { return mpx_obj_null(); }
static inline mpx_obj_t *TRUE(void) { return mpx_obj_bool(1); }
static inline mpx_obj_t *FALSE(void) { return mpx_obj_bool(0); }
/* A bigint from its little-endian two's complement bytes. */
static inline mpx_obj_t *BIG(const char *le, size_t n) {
  return mpx_obj_bigint(le, n);
}

static inline mpx_obj_t *objbuild_seq(mpx_obj_t *o, int n, va_list ap) {
  for (int i = 0; i < n; i++)
    CU_ASSERT_EQUAL(mpx_obj_append(o, va_arg(ap, mpx_obj_t *)), 0);
  return o;
}

static inline mpx_obj_t *A(int n, ...) {
  va_list ap;
  va_start(ap, n);
  mpx_obj_t *o = objbuild_seq(mpx_obj_array(0), n, ap);
  va_end(ap);
  return o;
}

static inline mpx_obj_t *T(int n, ...) {
  va_list ap;
  va_start(ap, n);
  mpx_obj_t *o = objbuild_seq(mpx_obj_tuple(0), n, ap);
  va_end(ap);
  return o;
}

/* M(n, k1, v1, ..., kn, vn) */
static inline mpx_obj_t *M(int n, ...) {
  va_list ap;
  mpx_obj_t *o = mpx_obj_map(0);
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    mpx_obj_t *k = va_arg(ap, mpx_obj_t *);
    CU_ASSERT_EQUAL(mpx_obj_map_set(o, k, va_arg(ap, mpx_obj_t *)), 0);
  }
  va_end(ap);
  return o;
}

#endif
