/* Queues: FIFO content of 0 B .. 16 MiB items (inline and arena-stored),
 * timeouts and bounded puts, N producers x M consumers across processes
 * delivering every item exactly once, JoinableQueue, a child that exits
 * right after putting 10 000 items, codec errors at put, the loan API,
 * a SIGKILL at every journaled step of put and get, and 200 random kills
 * of a producer and of a consumer. Each test uses an arena of its own and
 * checks that the arena is back to what it was when the queue is freed
 * (nothing leaked). Children report through exit codes and shared memory;
 * the parent asserts and reaps every child. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)

static mpx_arena_t *arena;
static size_t arena_used0;

static void *shared_mem(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

/* A queue in a fresh arena of 64 MiB. */
static mpx_queue_t *new_queue(size_t maxsize, size_t chunk_slots,
                              bool joinable) {
  mpx_arena_opts_t ao = {.size = 64 * MiB};
  mpx_arena_stats_t st;
  mpx_queue_t *q = NULL;
  if (mpx_arena_new(&arena, &ao) != 0) return NULL;
  mpx_arena_stats(arena, &st);
  arena_used0 = st.used;
  mpx_queue_opts_t o = {.maxsize = maxsize, .chunk_slots = chunk_slots,
                        .joinable = joinable, .arena = arena};
  if (mpx_queue_new(&q, &o) != 0) return NULL;
  return q;
}

/* Frees the queue and checks the arena is whole and back to its start. */
static void end_queue(mpx_queue_t *q) {
  mpx_arena_stats_t st;
  mpx_queue_free(q);
  CU_ASSERT_EQUAL(mpx_arena_check(arena), 0);
  mpx_arena_stats(arena, &st);
  CU_ASSERT_EQUAL(st.used, arena_used0);
  if (st.used != arena_used0)
    fprintf(stderr, "arena: %zu bytes in use, %zu before\n", st.used,
            arena_used0);
  mpx_arena_free(arena);
  arena = NULL;
}

/* ---- content -------------------------------------------------------------------- */

static const size_t SIZES[] = {0, 1, 111, 112, 113, 4 * KiB, 64 * KiB, 16 * MiB};
#define NSIZES (sizeof SIZES / sizeof SIZES[0])

static void test_sizes_fifo(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  for (size_t i = 0; i < NSIZES; i++) {
    uint8_t *p = mpx_test_pattern(SIZES[i], (unsigned)i);
    CU_ASSERT_EQUAL(mpx_queue_put(q, p, SIZES[i], 0), 0);
    free(p);
  }
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), NSIZES);
  /* Across a fork: the child gets them in order with each of the three
   * receive calls. */
  pid_t pid = fork();
  if (pid == 0) {
    for (size_t i = 0; i < NSIZES; i++) {
      size_t n;
      if (i % 3 == 0) {
        void *d;
        if (mpx_queue_get(q, &d, &n, 5) != 0) _exit(10 + (int)i);
        int ok = mpx_test_pattern_ok(d, n, SIZES[i], (unsigned)i);
        free(d);
        if (!ok) _exit(30 + (int)i);
      } else if (i % 3 == 1) {
        mpx_queue_msg_t m;
        if (mpx_queue_get_msg(q, &m, 5) != 0) _exit(10 + (int)i);
        if (!mpx_test_pattern_ok(m.data, m.len, SIZES[i], (unsigned)i)) _exit(30 + (int)i);
        /* Block-stored items are read in place. */
        if ((SIZES[i] > 112) != (m.ref != 0)) _exit(50 + (int)i);
        mpx_queue_msg_release(q, &m);
      } else {
        void *buf = malloc(SIZES[i] + 1);
        if (mpx_queue_get_into(q, buf, SIZES[i], &n, 5) != 0) _exit(10 + (int)i);
        int ok = mpx_test_pattern_ok(buf, n, SIZES[i], (unsigned)i);
        free(buf);
        if (!ok) _exit(30 + (int)i);
      }
    }
    size_t n;
    char b[4];
    _exit(mpx_queue_get_into(q, b, sizeof b, &n, 0) == MPX_EAGAIN ? 0 : 70);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  CU_ASSERT_EQUAL(st.puts, NSIZES);
  CU_ASSERT_EQUAL(st.gets, NSIZES);
  CU_ASSERT_EQUAL(st.size, 0);
  CU_ASSERT_EQUAL(st.lost_puts + st.lost_gets + st.recoveries, 0);
  end_queue(q);
}

static void test_too_short_keeps_item(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  uint8_t *p = mpx_test_pattern(64 * KiB, 3);
  CU_ASSERT_EQUAL(mpx_queue_put(q, p, 64 * KiB, 0), 0);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "x", 1, 0), 0);
  uint8_t small[100];
  size_t n = 0;
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, small, sizeof small, &n, 0), MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(n, 64 * KiB);
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 2);
  uint8_t *big = malloc(64 * KiB);
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, big, 64 * KiB, &n, 0), 0);
  CU_ASSERT_TRUE(mpx_test_pattern_ok(big, n, 64 * KiB, 3));
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, small, 0, &n, 0), MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(n, 1);
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, small, 1, &n, 0), 0);
  CU_ASSERT_EQUAL(small[0], 'x');
  free(p);
  free(big);
  end_queue(q);
}

/* Many items through small chunks: chunks come and go, FIFO holds, and
 * only one chunk is left when the queue is empty. */
static void test_chunks_recycle(void) {
  mpx_queue_t *q = new_queue(0, 8, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  mpx_queue_stats_t st;
  for (uint32_t i = 0; i < 1000; i++)
    CU_ASSERT_EQUAL_FATAL(mpx_queue_put(q, &i, sizeof i, 0), 0);
  mpx_queue_stats(q, &st);
  CU_ASSERT_EQUAL(st.chunks, 125);
  for (uint32_t i = 0; i < 1000; i++) {
    uint32_t v = 0;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(mpx_queue_get_into(q, &v, sizeof v, &n, 0), 0);
    CU_ASSERT_EQUAL_FATAL(v, i);
  }
  mpx_queue_stats(q, &st);
  CU_ASSERT_EQUAL(st.chunks, 1);
  end_queue(q);
}

/* ---- waiting --------------------------------------------------------------------- */

static void test_timeouts(void) {
  mpx_queue_t *q = new_queue(2, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  char b[8];
  size_t n;
  CU_ASSERT_TRUE(mpx_queue_empty(q));
  CU_ASSERT_FALSE(mpx_queue_full(q));
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, b, sizeof b, &n, 0), MPX_EAGAIN);
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, b, sizeof b, &n, 0.05), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, b, sizeof b, &n, 0.0 / 0.0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "a", 1, 0), 0);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "b", 1, 0), 0);
  CU_ASSERT_TRUE(mpx_queue_full(q));
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 2);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "c", 1, 0), MPX_EAGAIN);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "c", 1, 0.05), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 2);
  /* A blocked put goes through once a child takes an item (when the put
   * sleeps: 4 if it never did within 30 s). */
  pid_t me = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    if (!mpx_test_wait_futex(me, 30)) _exit(4);
    _exit(mpx_queue_get_into(q, b, sizeof b, &n, 5) == 0 && b[0] == 'a' ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_queue_put(q, "c", 1, 30), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  const char *want = "bc";
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_EQUAL(mpx_queue_get_into(q, b, sizeof b, &n, 0), 0);
    CU_ASSERT_EQUAL(b[0], want[i]);
  }
  /* A blocked get wakes for a child's put. */
  pid = fork();
  if (pid == 0) {
    if (!mpx_test_wait_futex(me, 30)) _exit(4);
    _exit(mpx_queue_put(q, "d", 1, 5) == 0 ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_queue_get_into(q, b, sizeof b, &n, 30), 0);
  CU_ASSERT_EQUAL(b[0], 'd');
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  end_queue(q);
}

static void test_close_and_shutdown(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  mpx_queue_t *q2;
  CU_ASSERT_EQUAL_FATAL(mpx_queue_attach(&q2, arena, mpx_queue_ref(q)), 0);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "a", 1, 0), 0);
  mpx_queue_close(q);
  CU_ASSERT_EQUAL(mpx_queue_put(q, "b", 1, 0), MPX_ECLOSED);
  CU_ASSERT_EQUAL(mpx_queue_put(q2, "b", 1, 0), 0); /* other handle: open */
  /* A getter blocked in a child wakes with MPX_ECLOSED at shutdown, after
   * taking what was queued. */
  pid_t pid = fork();
  if (pid == 0) {
    char b[4];
    size_t n;
    if (mpx_queue_get_into(q, b, sizeof b, &n, 5) != 0 || b[0] != 'a') _exit(1);
    if (mpx_queue_get_into(q, b, sizeof b, &n, 5) != 0 || b[0] != 'b') _exit(2);
    _exit(mpx_queue_get_into(q, b, sizeof b, &n, 60) == MPX_ECLOSED ? 0 : 3);
  }
  /* Shut down once it took both and sleeps in the third get. */
  for (int t = 0; t < 30000 && mpx_queue_qsize(q) != 0; t++) mpx_test_sleep(0.001);
  CU_ASSERT(mpx_test_wait_futex(pid, 30));
  mpx_queue_shutdown(q2);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_queue_put(q2, "c", 1, 0), MPX_ECLOSED);
  mpx_queue_free(q2);
  end_queue(q);
}

/* ---- many processes ----------------------------------------------------------------- */

#define NPROD 3
#define NCONS 3
#define PER_PROD 20000

static void test_mpmc_exactly_once(void) {
  mpx_queue_t *q = new_queue(1000, 64, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  _Atomic uint32_t *seen = shared_mem(NPROD * PER_PROD * sizeof *seen);
  CU_ASSERT_PTR_NOT_NULL_FATAL(seen);
  pid_t pids[NPROD + NCONS];
  for (int p = 0; p < NPROD; p++) {
    if ((pids[p] = fork()) == 0) {
      for (uint32_t i = 0; i < PER_PROD; i++) {
        uint64_t item[2] = {((uint64_t)p << 32) | i, 0};
        /* every 97th item goes through an arena block */
        size_t len = i % 97 == 0 ? 500 : sizeof item;
        uint8_t buf[500] = {0};
        memcpy(buf, item, sizeof item);
        if (mpx_queue_put(q, buf, len, 30) != 0) _exit(1);
      }
      _exit(0);
    }
  }
  for (int c = 0; c < NCONS; c++) {
    if ((pids[NPROD + c] = fork()) == 0) {
      uint32_t last[NPROD];
      memset(last, 0xff, sizeof last);
      for (;;) {
        uint8_t buf[500];
        size_t n;
        int rc = mpx_queue_get_into(q, buf, sizeof buf, &n, 30);
        if (rc == MPX_ECLOSED) _exit(0);
        if (rc != 0) _exit(2);
        uint64_t id;
        memcpy(&id, buf, sizeof id);
        uint32_t p = (uint32_t)(id >> 32), i = (uint32_t)id;
        if (p >= NPROD || i >= PER_PROD) _exit(3);
        if (n != (i % 97 == 0 ? 500u : 16u)) _exit(4);
        /* FIFO: one consumer sees each producer's items in order. */
        if (last[p] != UINT32_MAX && i <= last[p]) _exit(5);
        last[p] = i;
        atomic_fetch_add(&seen[p * PER_PROD + i], 1);
      }
    }
  }
  for (int p = 0; p < NPROD; p++) CU_ASSERT_EQUAL(mpx_test_wait_exit(pids[p]), 0);
  /* Everything put: wait for the consumers to drain, then shut down. */
  for (int t = 0; t < 3000 && !mpx_queue_empty(q); t++) mpx_test_sleep(0.01);
  mpx_queue_shutdown(q);
  for (int c = 0; c < NCONS; c++)
    CU_ASSERT_EQUAL(mpx_test_wait_exit(pids[NPROD + c]), 0);
  size_t once = 0, other = 0;
  for (size_t k = 0; k < NPROD * PER_PROD; k++) {
    if (seen[k] == 1) once++;
    else other++;
  }
  CU_ASSERT_EQUAL(once, NPROD * PER_PROD);
  CU_ASSERT_EQUAL(other, 0);
  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  CU_ASSERT_EQUAL(st.puts, NPROD * PER_PROD);
  CU_ASSERT_EQUAL(st.gets, NPROD * PER_PROD);
  munmap(seen, NPROD * PER_PROD * sizeof *seen);
  end_queue(q);
}

/* Python deadlocks here: the child's feeder thread must flush before the
 * child can be joined, and nobody reads. */
static void test_exit_right_after_put(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  pid_t pid = fork();
  if (pid == 0) {
    for (uint32_t i = 0; i < 10000; i++)
      if (mpx_queue_put(q, &i, sizeof i, 0) != 0) _exit(1);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0); /* joined first */
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 10000);
  for (uint32_t i = 0; i < 10000; i++) {
    uint32_t v;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(mpx_queue_get_into(q, &v, sizeof v, &n, 0), 0);
    CU_ASSERT_EQUAL_FATAL(v, i);
  }
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 0);
  end_queue(q);
}

static void test_joinable(void) {
  mpx_queue_t *q = new_queue(0, 0, true);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  _Atomic uint32_t *done = shared_mem(4096);
  CU_ASSERT_EQUAL(mpx_queue_join(q, 0), 0); /* nothing put */
  CU_ASSERT_EQUAL(mpx_queue_task_done(q), MPX_ESTATE);
  for (uint32_t i = 0; i < 50; i++) CU_ASSERT_EQUAL(mpx_queue_put(q, &i, 4, 0), 0);
  CU_ASSERT_EQUAL(mpx_queue_join(q, 0), MPX_EAGAIN);
  CU_ASSERT_EQUAL(mpx_queue_join(q, 0.05), MPX_ETIMEDOUT);
  pid_t pid = fork();
  if (pid == 0) {
    for (int i = 0; i < 50; i++) {
      uint32_t v;
      size_t n;
      if (mpx_queue_get_into(q, &v, 4, &n, 5) != 0) _exit(1);
      if (i % 10 == 0) mpx_test_sleep(0.01);
      atomic_fetch_add(done, 1); /* the work, before task_done */
      if (mpx_queue_task_done(q) != 0) _exit(2);
    }
    _exit(mpx_queue_task_done(q) == MPX_ESTATE ? 0 : 3);
  }
  CU_ASSERT_EQUAL(mpx_queue_join(q, 30), 0);
  CU_ASSERT_EQUAL(atomic_load(done), 50);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  CU_ASSERT_EQUAL(st.unfinished, 0);
  mpx_queue_t *plain = NULL;
  mpx_queue_opts_t o = {.arena = arena};
  CU_ASSERT_EQUAL_FATAL(mpx_queue_new(&plain, &o), 0);
  CU_ASSERT_EQUAL(mpx_queue_task_done(plain), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_queue_join(plain, 0), MPX_EINVAL);
  mpx_queue_free(plain);
  munmap(done, 4096);
  end_queue(q);
}

/* ---- objects ---------------------------------------------------------------------- */

static int fail_encode(const mpx_obj_t *obj, mpx_wbuf_t *out,
                       const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  (void)obj;
  (void)out;
  (void)opts;
  return mpx_codec_fail(err, SIZE_MAX, "cannot encode this");
}
static int fail_decode(const void *data, size_t len,
                       const mpx_decode_opts_t *opts, mpx_obj_t **out,
                       mpx_codec_error_t *err) {
  (void)data;
  (void)len;
  (void)opts;
  (void)out;
  return mpx_codec_fail(err, 0, "cannot decode this");
}

static void test_objects_and_codec_errors(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  const mpx_codec_t *mp;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&mp, "msgpack"), 0);
  mpx_obj_t *small = mpx_obj_int(42);
  size_t bigsz = 1 * MiB;
  uint8_t *p = mpx_test_pattern(bigsz, 9);
  mpx_obj_t *big = mpx_obj_bytes(p, bigsz);
  CU_ASSERT_EQUAL(mpx_queue_put_obj(q, mp, small, 0), 0);
  CU_ASSERT_EQUAL(mpx_queue_put_obj(q, mp, big, 0), 0);
  /* A codec that fails: the error comes back at once, nothing queued. */
  mpx_codec_t bad = {.magic = MPX_CODEC_MAGIC, .abi_major = MPX_CODEC_ABI_MAJOR,
                     .struct_size = sizeof bad, .name = "bad",
                     .encode = fail_encode, .decode = fail_decode};
  CU_ASSERT_EQUAL(mpx_queue_put_obj(q, &bad, small, 0), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "cannot encode this"));
  CU_ASSERT_EQUAL(mpx_queue_qsize(q), 2);
  pid_t pid = fork();
  if (pid == 0) {
    mpx_obj_t *o;
    if (mpx_queue_get_obj(q, mp, &o, 5) != 0 || mpx_obj_get_int(o) != 42) _exit(1);
    mpx_obj_release(o);
    if (mpx_queue_get_obj(q, mp, &o, 5) != 0) _exit(2);
    size_t n;
    const void *d = mpx_obj_bytes_data(o, &n);
    if (!mpx_test_pattern_ok(d, n, bigsz, 9)) _exit(3);
    mpx_obj_release(o);
    /* A decode error consumes the item and says so. */
    if (mpx_queue_put(q, "zz", 2, 0) != 0) _exit(4);
    if (mpx_queue_get_obj(q, &bad, &o, 5) != MPX_ECODEC || o != NULL) _exit(5);
    _exit(mpx_queue_empty(q) ? 0 : 6);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  mpx_obj_release(small);
  mpx_obj_release(big);
  free(p);
  end_queue(q);
}

/* ---- loans --------------------------------------------------------------------------- */

static void test_loan_publish_release(void) {
  mpx_queue_t *q = new_queue(0, 0, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  mpx_segment_t *seg = mpx_arena_segment(arena);
  const char *lo = mpx_segment_base(seg), *hi = lo + mpx_segment_size(seg);
  pid_t pid = fork();
  if (pid == 0) {
    for (unsigned i = 0; i < 8; i++) {
      mpx_queue_loan_t l;
      if (mpx_queue_loan(q, MiB, &l, 5) != 0 || l.cap < MiB) _exit(1);
      for (size_t j = 0; j < MiB; j++) ((uint8_t *)l.data)[j] = (uint8_t)(j * 7 + i);
      if (mpx_queue_publish(q, &l, MiB - i, 5) != 0 || l.ref != 0) _exit(2);
    }
    mpx_queue_loan_t l;
    if (mpx_queue_loan(q, 100, &l, 5) != 0) _exit(3);
    if (mpx_queue_publish(q, &l, l.cap + 1, 5) != MPX_EINVAL) _exit(4);
    mpx_queue_loan_cancel(q, &l);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  for (unsigned i = 0; i < 8; i++) {
    mpx_queue_msg_t m;
    CU_ASSERT_EQUAL_FATAL(mpx_queue_get_msg(q, &m, 5), 0);
    CU_ASSERT_NOT_EQUAL(m.ref, 0);
    /* In place: the data is the block in the shared segment. */
    CU_ASSERT_TRUE((const char *)m.data >= lo && (const char *)m.data < hi);
    CU_ASSERT_EQUAL(mpx_arena_owner(arena, m.ref), getpid());
    CU_ASSERT_TRUE(mpx_test_pattern_ok(m.data, m.len, MiB - i, i));
    mpx_queue_msg_release(q, &m);
  }
  end_queue(q);
}

/* ---- crashes ----------------------------------------------------------------------------- */

/* A child sets MPX__QUEUE_CRASH_AT=step, runs `op` on its inherited
 * handle and is killed at that step. Returns its exit status (-9
 * expected) after reclaiming its blocks as a supervisor would. */
static int crash_child(mpx_queue_t *q, int step, int op) {
  pid_t pid = fork();
  if (pid == 0) {
    char s[16];
    snprintf(s, sizeof s, "%d", step);
    setenv("MPX__QUEUE_CRASH_AT", s, 1);
    mpx_queue_t *c = q;
    uint8_t buf[300] = {0};
    size_t n;
    for (uint32_t i = 0; i < 100; i++) {
      if (op == 0) {
        uint32_t v = 1000 + i;
        memcpy(buf, &v, 4);
        /* odd steps and 6: an arena-stored item */
        if (mpx_queue_put(c, buf, step % 2 || step == 6 ? 300 : 4, 5) != 0)
          _exit(2);
      } else if (mpx_queue_get_into(c, buf, sizeof buf, &n, 5) != 0) {
        _exit(3);
      }
    }
    _exit(4); /* never killed */
  }
  int rc = mpx_test_wait_exit(pid);
  mpx_arena_reclaim(arena, pid); /* what a supervisor does */
  return rc;
}

static void drain_check(mpx_queue_t *q, uint32_t *vals, size_t *n) {
  uint8_t buf[300];
  size_t len;
  *n = 0;
  while (mpx_queue_get_into(q, buf, sizeof buf, &len, 0) == 0)
    memcpy(&vals[(*n)++], buf, 4);
}

static void test_crash_points_put(void) {
  /* step: where put dies. 1-3 inside the growth of a chunk (the 9th put
   * with 8 slots), 4 before the commit, 5 after it, 6 after tail moved
   * but before the journal was cleared (an arena-stored item: its block
   * must stay the queue's, and nothing is lost). */
  static const struct { int step; uint64_t lost; } cases[] = {
      {1, 1}, {2, 1}, {3, 1}, {4, 1}, {5, 0}, {6, 0}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int step = cases[k].step;
    mpx_queue_t *q = new_queue(0, 8, false);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    int rc = crash_child(q, step, 0);
    CU_ASSERT_EQUAL(rc, -SIGKILL);
    /* The queue goes on: put 20 more, then read everything. */
    for (uint32_t i = 0; i < 20; i++) {
      uint32_t v = 2000 + i;
      CU_ASSERT_EQUAL_FATAL(mpx_queue_put(q, &v, 4, 5), 0);
    }
    uint32_t vals[200];
    size_t n;
    drain_check(q, vals, &n);
    mpx_queue_stats_t st;
    mpx_queue_stats(q, &st);
    CU_ASSERT_EQUAL(st.lost_puts, cases[k].lost);
    CU_ASSERT_EQUAL(st.lost_gets, 0);
    if (st.lost_puts != cases[k].lost || st.lost_gets != 0)
      fprintf(stderr, "step %d: lost_puts %llu lost_gets %llu\n", step,
              (unsigned long long)st.lost_puts,
              (unsigned long long)st.lost_gets);
    CU_ASSERT_EQUAL(st.recoveries, 1);
    /* Steps 1-3 die in the 9th put (the first growth: puts 1..8 filled
     * the first chunk), steps 4 and 5 in the first. */
    size_t want_child = (step <= 3) ? 8 : (step >= 5 ? 1 : 0);
    CU_ASSERT_EQUAL(n, want_child + 20);
    for (size_t i = 0; i < n; i++) {
      uint32_t want = i < want_child ? 1000 + (uint32_t)i
                                     : 2000 + (uint32_t)(i - want_child);
      CU_ASSERT_EQUAL(vals[i], want);
    }
    if (n != want_child + 20) fprintf(stderr, "step %d: %zu items\n", step, n);
    CU_ASSERT_EQUAL(st.chunks, 1);
    end_queue(q);
  }
}

static void test_crash_points_get(void) {
  /* 11: switching chunks (no loss), 12: before the commit (no loss),
   * 13: after it (the item is lost, counted). */
  static const struct { int step; uint64_t lost; } cases[] = {
      {11, 0}, {12, 0}, {13, 1}};
  for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
    int step = cases[k].step;
    mpx_queue_t *q = new_queue(0, 8, true);
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    uint8_t buf[300] = {0};
    for (uint32_t i = 0; i < 20; i++) {
      memcpy(buf, &i, 4);
      /* item 8 is arena-stored: step 11's victim is the get of item 8 */
      CU_ASSERT_EQUAL_FATAL(mpx_queue_put(q, buf, i % 4 == 0 ? 300 : 4, 0), 0);
    }
    CU_ASSERT_EQUAL(crash_child(q, step, 1), -SIGKILL);
    uint32_t vals[40];
    size_t n;
    drain_check(q, vals, &n);
    mpx_queue_stats_t st;
    mpx_queue_stats(q, &st);
    CU_ASSERT_EQUAL(st.lost_gets, cases[k].lost);
    CU_ASSERT_EQUAL(st.recoveries, 1);
    /* step 11 dies at the 9th get (items 0..7 taken), 12 at the first
     * (nothing taken), 13 after taking item 0. */
    uint32_t first = step == 11 ? 8 : (step == 12 ? 0 : 1);
    CU_ASSERT_EQUAL(n, 20 - first);
    for (size_t i = 0; i < n; i++) CU_ASSERT_EQUAL(vals[i], first + i);
    /* Joinable: the lost item counts as done, so join does not hang. */
    for (size_t i = 0; i < 20 - cases[k].lost - (step == 11 ? 8 : 0); i++)
      mpx_queue_task_done(q);
    if (step == 11)
      for (int i = 0; i < 8; i++) mpx_queue_task_done(q);
    CU_ASSERT_EQUAL(mpx_queue_join(q, 0), 0);
    CU_ASSERT_EQUAL(st.chunks, 1);
    end_queue(q);
  }
}

/* Random SIGKILLs: a producer and a consumer killed at random moments,
 * ROUNDS times each. Producer incarnation k puts items (k << 20 | i) and
 * records how many puts returned; the consumer records every item it got.
 * Then: nothing delivered twice, nothing invented, and what is missing is
 * covered by the losses the queue counted plus the items a killed consumer
 * had got but not yet recorded (at most one per kill). */
#define ROUNDS 200
#define MAXPUT 100000u

/* A consumer killed after freeing its drained chunk, before clearing its
 * journal (step 14), leaves that chunk's reference in the journal; the
 * repair drops it again. The reference is stale, so nothing happens,
 * unless the block's spot was reused with the same generation: then the
 * repair freed a live chunk. Here the spot is cycled through the arena
 * 65535 times (another user of the shared heap) before the producer's
 * next chunk lands on it, which wrapped the 16-bit generation: the repair
 * then freed the producer's live chunk, and the driver read items from
 * freed memory (and crashed). Every item must come out once, in order. */
static void test_stale_journal_ref_after_reuse(void) {
  mpx_queue_t *q = new_queue(0, 8, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  uint32_t v;
  for (v = 0; v < 16; v++) CU_ASSERT_EQUAL(mpx_queue_put(q, &v, 4, 0), 0);
  /* The child takes items 0-7 and dies moving to the second chunk. */
  pid_t pid = fork();
  if (pid == 0) {
    uint32_t w;
    size_t n;
    setenv("MPX__QUEUE_CRASH_AT", "14", 1); /* only a chunk switch reaches it */
    for (int i = 0; i < 8; i++)
      if (mpx_queue_get_into(q, &w, 4, &n, 0) != 0 || w != (uint32_t)i)
        _exit(3);
    (void)mpx_queue_get_into(q, &w, 4, &n, 0);
    _exit(4);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  mpx_arena_reclaim(arena, pid);
  /* In a driver process, so that a crash is a failed test. */
  pid = fork();
  if (pid == 0) {
    size_t cb = 64 + 8 * 128; /* one chunk of 8 default slots */
    mpx_ref_t r;
    for (int i = 0; i < 65535; i++) {
      if (mpx_arena_alloc(arena, cb, 0, &r) != 0) _exit(5);
      if (mpx_arena_release(arena, r) != 0) _exit(6);
    }
    uint32_t w;
    size_t n;
    for (w = 16; w < 32; w++)
      if (mpx_queue_put(q, &w, 4, 0) != 0) _exit(7);
    for (uint32_t i = 8; i < 32; i++)
      if (mpx_queue_get_into(q, &w, 4, &n, 0) != 0 || w != i) _exit(8);
    if (mpx_queue_get_into(q, &w, 4, &n, 0) != MPX_EAGAIN) _exit(9);
    _exit(0);
  }
  int drc = mpx_test_wait_exit(pid);
  if (drc != 0) fprintf(stderr, "driver: status %d\n", drc);
  CU_ASSERT_EQUAL(drc, 0);
  mpx_queue_stats_t st;
  CU_ASSERT_EQUAL(mpx_queue_stats(q, &st), 0);
  CU_ASSERT_EQUAL(st.gets, 32);
  CU_ASSERT_EQUAL(st.lost_gets, 0);
  CU_ASSERT_EQUAL(st.recoveries, 1);
  end_queue(q);
}

static void test_random_kills(void) {
  mpx_queue_t *q = new_queue(5000, 16, false);
  CU_ASSERT_PTR_NOT_NULL_FATAL(q);
  size_t nslots = (size_t)ROUNDS * MAXPUT;
  _Atomic uint8_t *got = shared_mem(nslots);
  _Atomic uint32_t *nput = shared_mem(ROUNDS * sizeof *nput);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  CU_ASSERT_PTR_NOT_NULL_FATAL(nput);
  unsigned seed = (unsigned)time(NULL);
  srand(seed);
  pid_t cons = 0;
  unsigned cons_kills = 0;
  for (int k = 0; k < ROUNDS; k++) {
    pid_t prod = fork();
    if (prod == 0) {
      uint8_t buf[200] = {0};
      for (uint32_t i = 0; i < MAXPUT; i++) {
        uint32_t id = ((uint32_t)k << 20) | i;
        memcpy(buf, &id, 4);
        if (mpx_queue_put(q, buf, i % 8 == 0 ? 200 : 4, 30) != 0) _exit(1);
        atomic_store(&nput[k], i + 1);
      }
      _exit(0);
    }
    if (cons == 0 && (cons = fork()) == 0) {
      for (;;) {
        uint8_t buf[200];
        size_t n;
        if (mpx_queue_get_into(q, buf, sizeof buf, &n, 30) != 0) _exit(1);
        uint32_t id;
        memcpy(&id, buf, 4);
        atomic_fetch_add(&got[(size_t)(id >> 20) * MAXPUT + (id & 0xfffff)], 1);
      }
    }
    mpx_test_sleep((rand() % 3000) * 1e-6);
    kill(prod, SIGKILL);
    CU_ASSERT_EQUAL(mpx_test_wait_exit(prod), -SIGKILL);
    mpx_arena_reclaim(arena, prod);
    if (rand() % 2 == 0 || k == ROUNDS - 1) {
      mpx_test_sleep((rand() % 1000) * 1e-6);
      kill(cons, SIGKILL);
      CU_ASSERT_EQUAL(mpx_test_wait_exit(cons), -SIGKILL);
      mpx_arena_reclaim(arena, cons);
      cons = 0;
      cons_kills++;
    }
  }
  /* Drain in the parent. */
  uint8_t buf[200];
  size_t n;
  int rc;
  while ((rc = mpx_queue_get_into(q, buf, sizeof buf, &n, 0)) == 0) {
    uint32_t id;
    memcpy(&id, buf, 4);
    atomic_fetch_add(&got[(size_t)(id >> 20) * MAXPUT + (id & 0xfffff)], 1);
  }
  CU_ASSERT_EQUAL(rc, MPX_EAGAIN);
  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  size_t dup = 0, invented = 0, missing = 0, delivered = 0;
  for (int k = 0; k < ROUNDS; k++) {
    uint32_t np = nput[k];
    for (uint32_t i = 0; i < MAXPUT; i++) {
      uint8_t g = got[(size_t)k * MAXPUT + i];
      if (g > 1) dup++;
      if (g) delivered++;
      if (g && i > np) invented++;  /* i == np: put, killed before recording */
      if (!g && i < np) missing++;
    }
  }
  fprintf(stderr,
          "random kills (seed %u): %zu delivered, %zu missing, lost_puts %llu,"
          " lost_gets %llu, recoveries %llu, consumer kills %u\n",
          seed, delivered, missing, (unsigned long long)st.lost_puts,
          (unsigned long long)st.lost_gets, (unsigned long long)st.recoveries,
          cons_kills);
  CU_ASSERT_EQUAL(dup, 0);
  CU_ASSERT_EQUAL(invented, 0);
  CU_ASSERT_TRUE(missing <= st.lost_gets + cons_kills);
  CU_ASSERT_TRUE(st.lost_puts <= ROUNDS);
  CU_ASSERT_EQUAL(st.size, 0);
  CU_ASSERT_EQUAL(mpx_arena_check(arena), 0);
  munmap(got, nslots);
  munmap(nput, ROUNDS * sizeof *nput);
  end_queue(q);
}

MPX_TEST_MAIN("queue", MPX_TEST(test_sizes_fifo),
              MPX_TEST(test_too_short_keeps_item), MPX_TEST(test_chunks_recycle),
              MPX_TEST(test_timeouts), MPX_TEST(test_close_and_shutdown),
              MPX_TEST(test_mpmc_exactly_once), MPX_TEST(test_exit_right_after_put),
              MPX_TEST(test_joinable), MPX_TEST(test_objects_and_codec_errors),
              MPX_TEST(test_loan_publish_release), MPX_TEST(test_crash_points_put),
              MPX_TEST(test_crash_points_get), MPX_TEST(test_random_kills),
              MPX_TEST(test_stale_journal_ref_after_reuse))
