/* mpx_obj: construction, access, equality and hashing, maps, bigint
 * normalisation, zero-copy payloads, the dump, UTF-8 checks. */
#define _GNU_SOURCE
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "mpx.h"
#include "../mpx_test.h"

static char dumped[512];
static const char *dump(const mpx_obj_t *o) {
  mpx_obj_dump(o, dumped, sizeof dumped);
  return dumped;
}

static void test_scalars(void) {
  mpx_obj_t *i = mpx_obj_int(INT64_MIN), *f = mpx_obj_float(1.5);
  CU_ASSERT_EQUAL(mpx_obj_type(i), MPX_OBJ_INT);
  CU_ASSERT_EQUAL(mpx_obj_get_int(i), INT64_MIN);
  CU_ASSERT_EQUAL(mpx_obj_get_float(f), 1.5);
  CU_ASSERT_EQUAL(mpx_obj_get_int(f), 0); /* wrong type: 0 */
  CU_ASSERT_PTR_EQUAL(mpx_obj_null(), mpx_obj_null());
  CU_ASSERT_PTR_EQUAL(mpx_obj_bool(7), mpx_obj_bool(1));
  CU_ASSERT_EQUAL(mpx_obj_get_bool(mpx_obj_bool(1)), 1);
  mpx_obj_release(mpx_obj_null()); /* immortal: a no-op */
  CU_ASSERT_EQUAL(mpx_obj_type(mpx_obj_null()), MPX_OBJ_NULL);
  CU_ASSERT_STRING_EQUAL(mpx_obj_type_name(MPX_OBJ_MAP), "map");
  CU_ASSERT_STRING_EQUAL(dump(i), "-9223372036854775808");
  CU_ASSERT_STRING_EQUAL(dump(f), "1.5");
  mpx_obj_release(i);
  mpx_obj_release(f);
}

static void test_equality_and_hash(void) {
  mpx_obj_t *a = mpx_obj_float(NAN), *b = mpx_obj_float(-NAN);
  mpx_obj_t *z = mpx_obj_float(0.0), *nz = mpx_obj_float(-0.0);
  mpx_obj_t *one = mpx_obj_int(1), *onef = mpx_obj_float(1.0);
  CU_ASSERT_TRUE(mpx_obj_equal(a, b));
  CU_ASSERT_EQUAL(mpx_obj_hash(a), mpx_obj_hash(b));
  CU_ASSERT_TRUE(mpx_obj_equal(z, nz));
  CU_ASSERT_EQUAL(mpx_obj_hash(z), mpx_obj_hash(nz));
  CU_ASSERT_FALSE(mpx_obj_equal(one, onef)); /* types differ */
  mpx_obj_t *arr = mpx_obj_array(0), *tup = mpx_obj_tuple(0);
  CU_ASSERT_FALSE(mpx_obj_equal(arr, tup));
  CU_ASSERT_EQUAL(mpx_obj_append(arr, mpx_obj_retain(one)), 0);
  CU_ASSERT_EQUAL(mpx_obj_append(tup, mpx_obj_retain(one)), 0);
  CU_ASSERT_STRING_EQUAL(dump(tup), "(1,)");
  CU_ASSERT_STRING_EQUAL(dump(arr), "[1]");
  CU_ASSERT_EQUAL(mpx_obj_append(one, mpx_obj_int(2)), MPX_EINVAL);
  mpx_obj_release(a); mpx_obj_release(b); mpx_obj_release(z);
  mpx_obj_release(nz); mpx_obj_release(one); mpx_obj_release(onef);
  mpx_obj_release(arr); mpx_obj_release(tup);
}

static void test_strings(void) {
  mpx_obj_t *s = mpx_obj_str("it's\n", SIZE_MAX);
  mpx_obj_t *b = mpx_obj_bytes("\x00\xff", 2);
  size_t n;
  CU_ASSERT_STRING_EQUAL(mpx_obj_str_data(s, &n), "it's\n");
  CU_ASSERT_EQUAL(n, 5);
  CU_ASSERT_EQUAL(mpx_obj_len(b), 2);
  CU_ASSERT_EQUAL(memcmp(mpx_obj_bytes_data(b, &n), "\x00\xff", 2), 0);
  CU_ASSERT_PTR_NULL(mpx_obj_bytes_data(s, &n));
  CU_ASSERT_STRING_EQUAL(dump(s), "'it\\'s\\n'");
  CU_ASSERT_STRING_EQUAL(dump(b), "b'\\x00\\xff'");
  /* Long payloads are elided; the returned length is the full one. */
  char big[200];
  memset(big, 'a', sizeof big);
  mpx_obj_t *l = mpx_obj_str(big, sizeof big);
  char small[8];
  size_t full = mpx_obj_dump(l, small, sizeof small);
  CU_ASSERT_STRING_EQUAL(small, "'aaaaaa");
  CU_ASSERT_EQUAL(full, strlen(dump(l)));
  CU_ASSERT_TRUE(strstr(dump(l), "...(200 bytes)") != NULL);
  mpx_obj_release(s); mpx_obj_release(b); mpx_obj_release(l);
}

static void test_bigint(void) {
  const uint8_t minus_one[3] = {0xff, 0xff, 0xff};
  mpx_obj_t *a = mpx_obj_bigint(minus_one, 3);
  CU_ASSERT_EQUAL(mpx_obj_type(a), MPX_OBJ_INT);
  CU_ASSERT_EQUAL(mpx_obj_get_int(a), -1);
  /* 2^64: 9 bytes, stays big. */
  const uint8_t two64[10] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 0};
  mpx_obj_t *b = mpx_obj_bigint(two64, 10);
  size_t n;
  CU_ASSERT_EQUAL(mpx_obj_type(b), MPX_OBJ_BIGINT);
  mpx_obj_bigint_data(b, &n);
  CU_ASSERT_EQUAL(n, 9); /* the redundant sign byte is gone */
  CU_ASSERT_STRING_EQUAL(dump(b), "bigint(0x010000000000000000)");
  /* INT64_MAX + 1 needs 9 bytes (a 0x00 sign byte). */
  const uint8_t over[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
  mpx_obj_t *c = mpx_obj_bigint(over, 9);
  CU_ASSERT_EQUAL(mpx_obj_type(c), MPX_OBJ_BIGINT);
  const uint8_t min[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0xff};
  mpx_obj_t *d = mpx_obj_bigint(min, 9);
  CU_ASSERT_EQUAL(mpx_obj_type(d), MPX_OBJ_INT);
  CU_ASSERT_EQUAL(mpx_obj_get_int(d), INT64_MIN);
  CU_ASSERT_PTR_NULL(mpx_obj_bigint(min, 0));
  mpx_obj_release(a); mpx_obj_release(b); mpx_obj_release(c);
  mpx_obj_release(d);
}

static void test_map(void) {
  mpx_obj_t *m = mpx_obj_map(0);
  CU_ASSERT_EQUAL(mpx_obj_map_set_str(m, "b", mpx_obj_int(1)), 0);
  CU_ASSERT_EQUAL(mpx_obj_map_set_str(m, "a", mpx_obj_int(2)), 0);
  CU_ASSERT_EQUAL(mpx_obj_map_set_str(m, "b", mpx_obj_int(3)), 0);
  CU_ASSERT_EQUAL(mpx_obj_map_set(m, mpx_obj_int(5), mpx_obj_null()), 0);
  CU_ASSERT_EQUAL(mpx_obj_len(m), 3);
  CU_ASSERT_STRING_EQUAL(dump(m), "{'b': 3, 'a': 2, 5: None}");
  CU_ASSERT_EQUAL(mpx_obj_get_int(mpx_obj_map_get_str(m, "b")), 3);
  CU_ASSERT_PTR_NULL(mpx_obj_map_get_str(m, "zz"));
  /* Many keys: the hashed index keeps order, finds every key, and
   * replaces in place. */
  mpx_obj_t *big = mpx_obj_map(0);
  for (int i = 0; i < 20000; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    CU_ASSERT_EQUAL_FATAL(mpx_obj_map_set_str(big, k, mpx_obj_int(i)), 0);
  }
  for (int i = 0; i < 20000; i += 7) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    mpx_obj_map_set_str(big, k, mpx_obj_int(-i));
  }
  CU_ASSERT_EQUAL(mpx_obj_len(big), 20000);
  int ok = 1;
  for (int i = 0; i < 20000; i++) {
    char k[16];
    snprintf(k, sizeof k, "k%d", i);
    mpx_obj_t *v = mpx_obj_map_get_str(big, k);
    size_t n;
    const char *key = mpx_obj_str_data(mpx_obj_map_key(big, (size_t)i), &n);
    if (v == NULL || mpx_obj_get_int(v) != (i % 7 ? i : -i) ||
        strcmp(key, k) != 0)
      ok = 0;
  }
  CU_ASSERT_TRUE(ok);
  /* Equality is by entries in order. */
  mpx_obj_t *m2 = mpx_obj_map(4);
  mpx_obj_map_set_str(m2, "b", mpx_obj_int(3));
  mpx_obj_map_set_str(m2, "a", mpx_obj_int(2));
  mpx_obj_map_set(m2, mpx_obj_int(5), mpx_obj_null());
  CU_ASSERT_TRUE(mpx_obj_equal(m, m2));
  CU_ASSERT_EQUAL(mpx_obj_hash(m), mpx_obj_hash(m2));
  CU_ASSERT_EQUAL(mpx_obj_map_set(m2, NULL, mpx_obj_int(1)), MPX_EINVAL);
  mpx_obj_release(m); mpx_obj_release(m2); mpx_obj_release(big);
}

static int released;
static void on_release(void *ctx) { released += *(int *)ctx; }

static void test_external_and_arena(void) {
  static const char text[] = "borrowed";
  int add = 5;
  released = 0;
  mpx_obj_t *e = mpx_obj_bytes_external(text, 8, on_release, &add);
  size_t n;
  CU_ASSERT_PTR_EQUAL(mpx_obj_bytes_data(e, &n), text);
  mpx_obj_t *arr = mpx_obj_array(1);
  mpx_obj_append(arr, mpx_obj_retain(e));
  mpx_obj_release(e);
  CU_ASSERT_EQUAL(released, 0);
  mpx_obj_release(arr);
  CU_ASSERT_EQUAL(released, 5);
  /* Bytes in an arena block hold a reference on the block. */
  mpx_arena_opts_t ao = {0};
  mpx_arena_t *a;
  mpx_ref_t r;
  ao.size = 1 << 20;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &ao), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 100, 0, &r), 0);
  memcpy(mpx_arena_ptr(a, r), "0123456789", 10);
  mpx_obj_t *ab = mpx_obj_bytes_arena(a, r, 2, 5);
  CU_ASSERT_PTR_NOT_NULL_FATAL(ab);
  CU_ASSERT_EQUAL(memcmp(mpx_obj_bytes_data(ab, &n), "23456", 5), 0);
  CU_ASSERT_PTR_EQUAL(mpx_obj_bytes_data(ab, &n), (char *)mpx_arena_ptr(a, r) + 2);
  CU_ASSERT_PTR_NULL(mpx_obj_bytes_arena(a, r, 50, 100)); /* out of range */
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0); /* the object keeps it */
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(a, r));
  mpx_obj_release(ab);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(a, r));
  CU_ASSERT_PTR_NULL(mpx_obj_bytes_arena(a, r, 0, 1)); /* stale */
  mpx_arena_stats_t st;
  mpx_arena_stats(a, &st);
  CU_ASSERT_EQUAL(st.used, 0);
  mpx_arena_free(a);
}

static void test_opaque(void) {
  mpx_obj_t *args = mpx_obj_tuple(1);
  mpx_obj_append(args, mpx_obj_str("k", 1));
  mpx_obj_t *o = mpx_obj_opaque(MPX_OPAQUE_REDUCE, "builtins", "KeyError",
                                args, NULL);
  CU_ASSERT_STRING_EQUAL(mpx_obj_opaque_module(o), "builtins");
  CU_ASSERT_STRING_EQUAL(mpx_obj_opaque_name(o), "KeyError");
  CU_ASSERT_EQUAL(mpx_obj_opaque_kind(o), MPX_OPAQUE_REDUCE);
  CU_ASSERT_PTR_EQUAL(mpx_obj_opaque_args(o), args);
  CU_ASSERT_PTR_NULL(mpx_obj_opaque_state(o));
  CU_ASSERT_STRING_EQUAL(dump(o), "<builtins.KeyError('k',)>");
  CU_ASSERT_PTR_NULL(mpx_obj_opaque(MPX_OPAQUE_GLOBAL, NULL, "x", NULL, NULL));
  mpx_obj_release(o);
}

/* Small containers keep their slots inline and move them to the heap as
 * they grow; contents survive the move. */
static void test_growth(void) {
  mpx_obj_t *a = mpx_obj_array(2), *m = mpx_obj_map(3);
  for (int i = 0; i < 100; i++) {
    CU_ASSERT_EQUAL(mpx_obj_append(a, mpx_obj_int(i)), 0);
    CU_ASSERT_EQUAL(mpx_obj_map_set(m, mpx_obj_int(i), mpx_obj_int(-i)), 0);
  }
  int ok = 1;
  for (int i = 0; i < 100; i++)
    if (mpx_obj_get_int(mpx_obj_item(a, (size_t)i)) != i ||
        mpx_obj_get_int(mpx_obj_map_value(m, (size_t)i)) != -i)
      ok = 0;
  CU_ASSERT_TRUE(ok);
  CU_ASSERT_EQUAL(mpx_obj_len(a), 100);
  CU_ASSERT_EQUAL(mpx_obj_len(m), 100);
  mpx_obj_release(a);
  mpx_obj_release(m);
}

/* A million nested arrays die without exhausting the stack. */
static void test_deep_release(void) {
  mpx_obj_t *top = mpx_obj_array(1), *cur = top;
  for (int i = 0; i < 1000000; i++) {
    mpx_obj_t *n = mpx_obj_array(1);
    CU_ASSERT_EQUAL_FATAL(mpx_obj_append(cur, n), 0);
    cur = n;
  }
  mpx_obj_release(top);
  CU_PASS("released");
}

static void test_utf8(void) {
  CU_ASSERT_TRUE(mpx_utf8_valid("h\xc3\xa9llo \xf0\x9f\x98\x80", 11));
  CU_ASSERT_FALSE(mpx_utf8_valid("\xc3", 1));            /* truncated */
  CU_ASSERT_FALSE(mpx_utf8_valid("\xc0\xaf", 2));        /* overlong */
  CU_ASSERT_FALSE(mpx_utf8_valid("\xed\xa0\x80", 3));    /* surrogate */
  CU_ASSERT_FALSE(mpx_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
  CU_ASSERT_FALSE(mpx_utf8_valid("\xff", 1));
  CU_ASSERT_TRUE(mpx_utf8_valid("", 0));
}

MPX_TEST_MAIN("obj", MPX_TEST(test_scalars), MPX_TEST(test_equality_and_hash),
              MPX_TEST(test_strings), MPX_TEST(test_bigint), MPX_TEST(test_map),
              MPX_TEST(test_external_and_arena), MPX_TEST(test_opaque), MPX_TEST(test_growth),
              MPX_TEST(test_deep_release), MPX_TEST(test_utf8))
