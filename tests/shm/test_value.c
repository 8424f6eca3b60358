/* Shared values and arrays: typed data in shared memory, with their own
 * lock, a caller's lock, or none. */
#define _GNU_SOURCE
#include <stdint.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

/* N processes x M increments under the value's lock. */
static void increments(mpx_shared_value_t *v, mpx_lock_t *l) {
  enum { N = 3, M = 20000 };
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    pids[i] = fork();
    if (pids[i] == 0) {
      int64_t *p = mpx_shared_value_ptr(v);
      for (int j = 0; j < M; j++) {
        if (mpx_lock_acquire(l, -1) != 0) _exit(1);
        *p += 1;
        if (mpx_lock_release(l) != 0) _exit(2);
      }
      mpx_shared_value_free(v); /* the child's copy: frees nothing shared */
      _exit(0);
    }
  }
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(mpx_test_wait_exit(pids[i]), 0);
  int64_t got = 0;
  CU_ASSERT_EQUAL(mpx_shared_value_get(v, &got), 0);
  CU_ASSERT_EQUAL(got, (int64_t)N * M);
}

static void test_value_counter_default_heap(void) {
  mpx_shared_value_t *v = NULL;
  int64_t init = 0;
  CU_ASSERT_EQUAL_FATAL(mpx_shared_value_new(&v, MPX_CT_INT64, &init, NULL), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(mpx_shared_value_lock(v));
  increments(v, mpx_shared_value_lock(v));
  /* The default lock is recursive, like Python's. */
  CU_ASSERT_EQUAL(mpx_lock_acquire(mpx_shared_value_lock(v), 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(mpx_shared_value_lock(v), 0), 0);
  int64_t x = 5;
  CU_ASSERT_EQUAL(mpx_shared_value_set(v, &x), 0); /* re-enters the lock */
  CU_ASSERT_EQUAL(mpx_lock_release(mpx_shared_value_lock(v)), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(mpx_shared_value_lock(v)), 0);
  CU_ASSERT_EQUAL(*(int64_t *)mpx_shared_value_ptr(v), 5);
  /* It lives in the default heap, which the caller may ask for. */
  mpx_arena_t *heap = NULL;
  CU_ASSERT_EQUAL(mpx_shared_heap(&heap), 0);
  mpx_ref_t ref = mpx_shared_value_ref(v);
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(heap, ref));
  mpx_shared_value_free(v);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(heap, ref));
}

static void test_value_user_lock_and_raw(void) {
  mpx_arena_opts_t ao = {0};
  mpx_arena_t *a = NULL;
  mpx_ref_t lref;
  ao.size = 1 << 20;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &ao), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, sizeof(mpx_lock_t), 0, &lref), 0);
  mpx_lock_t *l = mpx_arena_ptr(a, lref);
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(l), 0);
  mpx_shared_opts_t o = {0};
  o.arena = a;
  o.lock_kind = MPX_SHARED_USER_LOCK;
  mpx_shared_value_t *v = NULL, *raw = NULL, *w = NULL;
  CU_ASSERT_EQUAL(mpx_shared_value_new(&v, MPX_CT_INT64, NULL, &o),
                  MPX_EINVAL); /* no lock given */
  o.lock = l;
  CU_ASSERT_EQUAL_FATAL(mpx_shared_value_new(&v, MPX_CT_INT64, NULL, &o), 0);
  CU_ASSERT_PTR_EQUAL(mpx_shared_value_lock(v), l);
  increments(v, l);
  /* A caller's lock cannot be found by an unrelated process. */
  CU_ASSERT_EQUAL(mpx_shared_value_attach(&w, a, mpx_shared_value_ref(v)),
                  MPX_ENOTSUP);
  /* Non-recursive own lock: a second acquire is refused. */
  o.lock_kind = MPX_SHARED_LOCK;
  CU_ASSERT_EQUAL_FATAL(mpx_shared_value_new(&w, MPX_CT_DOUBLE, NULL, &o), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(mpx_shared_value_lock(w), 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(mpx_shared_value_lock(w), 0), MPX_EDEADLK);
  CU_ASSERT_EQUAL(mpx_lock_release(mpx_shared_value_lock(w)), 0);
  o.lock_kind = MPX_SHARED_RAW;
  double d = 2.5, got = 0;
  CU_ASSERT_EQUAL_FATAL(mpx_shared_value_new(&raw, MPX_CT_DOUBLE, &d, &o), 0);
  CU_ASSERT_PTR_NULL(mpx_shared_value_lock(raw));
  CU_ASSERT_EQUAL(mpx_shared_value_get(raw, &got), 0);
  CU_ASSERT_EQUAL(got, 2.5);
  mpx_arena_stats_t s;
  mpx_arena_stats(a, &s);
  CU_ASSERT_EQUAL(s.n_allocated, 4);
  mpx_shared_value_free(v);
  mpx_shared_value_free(w);
  mpx_shared_value_free(raw);
  CU_ASSERT_EQUAL(mpx_arena_release(a, lref), 0);
  mpx_arena_stats(a, &s);
  CU_ASSERT_EQUAL(s.n_allocated, 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  mpx_arena_free(a);
}

static void test_ctypes(void) {
  const char *codes = "bBhHiIlLqQfdc";
  const size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 8, 8, 4, 8, 1};
  for (int i = 0; codes[i]; i++) {
    mpx_ctype_t t = mpx_ctype_from_code(codes[i]);
    CU_ASSERT_NOT_EQUAL(t, 0);
    CU_ASSERT_EQUAL(mpx_ctype_size(t), sizes[i]);
    /* Every type round-trips a value through shared memory. */
    unsigned char in[8], out[8] = {0};
    for (int k = 0; k < 8; k++) in[k] = (unsigned char)(0x11 * (k + 1));
    mpx_shared_value_t *v = NULL;
    CU_ASSERT_EQUAL_FATAL(mpx_shared_value_new(&v, t, in, NULL), 0);
    CU_ASSERT_EQUAL(mpx_shared_value_type(v), t);
    CU_ASSERT_EQUAL(mpx_shared_value_get(v, out), 0);
    CU_ASSERT_EQUAL(memcmp(in, out, sizes[i]), 0);
    mpx_shared_value_free(v);
  }
  CU_ASSERT_EQUAL(mpx_ctype_from_code('w'), 0);
  CU_ASSERT_EQUAL(mpx_ctype_size((mpx_ctype_t)99), 0);
  CU_ASSERT_STRING_EQUAL(mpx_ctype_name(MPX_CT_UINT16), "uint16");
  CU_ASSERT_STRING_EQUAL(mpx_ctype_name((mpx_ctype_t)99), "unknown");
  mpx_shared_value_t *v = NULL;
  CU_ASSERT_EQUAL(mpx_shared_value_new(&v, (mpx_ctype_t)99, NULL, NULL),
                  MPX_EINVAL);
  CU_ASSERT_PTR_NULL(v);
}

static void test_array(void) {
  double init[5] = {1, 2, 3, 4, 5}, out[5] = {0}, two[2] = {20, 30};
  mpx_shared_array_t *a = NULL, *b = NULL;
  CU_ASSERT_EQUAL(mpx_shared_array_new(&a, MPX_CT_DOUBLE, 0, NULL, NULL),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL_FATAL(mpx_shared_array_new(&a, MPX_CT_DOUBLE, 5, init,
                                             NULL), 0);
  CU_ASSERT_EQUAL(mpx_shared_array_len(a), 5);
  CU_ASSERT_EQUAL((uintptr_t)mpx_shared_array_ptr(a) % 16, 0);
  CU_ASSERT_EQUAL(mpx_shared_array_write(a, 1, 2, two), 0);
  CU_ASSERT_EQUAL(mpx_shared_array_write(a, 4, 2, two), MPX_ERANGE);
  CU_ASSERT_EQUAL(mpx_shared_array_read(a, 6, 0, out), MPX_ERANGE);
  CU_ASSERT_EQUAL(mpx_shared_array_read(a, (size_t)-1, 2, out), MPX_ERANGE);
  /* A child doubles every element; the parent sees exactly that. */
  pid_t pid = fork();
  if (pid == 0) {
    double *p = mpx_shared_array_ptr(a);
    mpx_lock_acquire(mpx_shared_array_lock(a), -1);
    for (int i = 0; i < 5; i++) p[i] *= 2;
    mpx_lock_release(mpx_shared_array_lock(a));
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_shared_array_read(a, 0, 5, out), 0);
  const double want[5] = {2, 40, 60, 8, 10};
  CU_ASSERT_EQUAL(memcmp(out, want, sizeof want), 0);
  /* A byte string: 'c' arrays. */
  CU_ASSERT_EQUAL_FATAL(mpx_shared_array_new(&b, MPX_CT_CHAR, 16,
                                             "hello, shared\0\0", NULL), 0);
  CU_ASSERT_STRING_EQUAL(mpx_shared_array_ptr(b), "hello, shared");
  mpx_shared_array_free(a);
  mpx_shared_array_free(b);
}

/* An unrelated process maps the segment elsewhere and attaches by ref. */
static void test_attach_by_ref(void) {
  mpx_arena_opts_t ao = {0};
  mpx_arena_t *a = NULL, *a2 = NULL;
  mpx_segment_t *seg2 = NULL;
  mpx_shared_array_t *arr = NULL, *arr2 = NULL;
  mpx_shared_opts_t o = {0};
  int32_t init[3] = {7, 8, 9}, got[3];
  ao.size = 1 << 20;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &ao), 0);
  o.arena = a;
  CU_ASSERT_EQUAL_FATAL(mpx_shared_array_new(&arr, MPX_CT_INT32, 3, init, &o),
                        0);
  CU_ASSERT_EQUAL_FATAL(
      mpx_segment_attach(&seg2, mpx_segment_fd(mpx_arena_segment(a)), 0), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_attach(&a2, seg2, 0), 0);
  CU_ASSERT_EQUAL_FATAL(
      mpx_shared_array_attach(&arr2, a2, mpx_shared_array_ref(arr)), 0);
  CU_ASSERT_PTR_NOT_EQUAL(mpx_shared_array_ptr(arr2),
                          mpx_shared_array_ptr(arr));
  CU_ASSERT_EQUAL(mpx_shared_array_type(arr2), MPX_CT_INT32);
  CU_ASSERT_EQUAL(mpx_shared_array_len(arr2), 3);
  int32_t v = 70;
  CU_ASSERT_EQUAL(mpx_shared_array_write(arr2, 0, 1, &v), 0);
  CU_ASSERT_EQUAL(mpx_shared_array_read(arr, 0, 3, got), 0);
  CU_ASSERT_EQUAL(got[0], 70);
  CU_ASSERT_EQUAL(got[2], 9);
  /* Two references now: freeing the first keeps the data alive. */
  mpx_shared_array_free(arr);
  CU_ASSERT_EQUAL(mpx_shared_array_read(arr2, 0, 3, got), 0);
  CU_ASSERT_EQUAL(got[1], 8);
  mpx_shared_array_free(arr2);
  mpx_arena_stats_t s;
  mpx_arena_stats(a, &s);
  CU_ASSERT_EQUAL(s.n_allocated, 0);
  /* Attaching something that is not a value is refused. */
  mpx_ref_t r;
  mpx_shared_value_t *bad = NULL;
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 256, 0, &r), 0);
  memset(mpx_arena_ptr(a, r), 0, 256);
  CU_ASSERT_EQUAL(mpx_shared_value_attach(&bad, a, r), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shared_value_attach(&bad, a, r + 64), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  mpx_arena_free(a2);
  mpx_segment_free(seg2);
  mpx_arena_free(a);
}

MPX_TEST_MAIN("value", MPX_TEST(test_value_counter_default_heap),
              MPX_TEST(test_value_user_lock_and_raw), MPX_TEST(test_ctypes),
              MPX_TEST(test_array), MPX_TEST(test_attach_by_ref))
