/* The arena allocator: allocation, references, errors for stale ones,
 * backpressure, reclaim, crash recovery at every step of an operation,
 * and randomized use by two processes under the invariant checker. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

static mpx_arena_t *new_arena(size_t size) {
  mpx_arena_opts_t o = {0};
  mpx_arena_t *a = NULL;
  o.size = size;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &o), 0);
  return a;
}

static mpx_arena_stats_t stats(mpx_arena_t *a) {
  mpx_arena_stats_t s;
  CU_ASSERT_EQUAL(mpx_arena_stats(a, &s), 0);
  return s;
}

static void test_alloc_release(void) {
  mpx_arena_t *a = new_arena(1 << 20);
  mpx_arena_stats_t s0 = stats(a), s;
  mpx_ref_t r[3];
  CU_ASSERT_EQUAL(s0.used, 0);
  CU_ASSERT_EQUAL(s0.n_free, 1);
  CU_ASSERT_EQUAL(s0.largest_free + 32, s0.capacity);
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 64, 0, &r[0]), 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 1000, 0, &r[1]), 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 65536, 0, &r[2]), 0);
  for (int i = 0; i < 3; i++) {
    char *p = mpx_arena_ptr(a, r[i]);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    CU_ASSERT_EQUAL((uintptr_t)p % 16, 0);
    CU_ASSERT_EQUAL(mpx_arena_owner(a, r[i]), getpid());
    memset(p, 0x40 + i, mpx_arena_block_size(a, r[i]));
  }
  CU_ASSERT_EQUAL(mpx_arena_block_size(a, r[0]), 64);
  CU_ASSERT_EQUAL(mpx_arena_block_size(a, r[1]), 1008); /* 16-byte granules */
  s = stats(a);
  CU_ASSERT_EQUAL(s.used, (64 + 32) + (1008 + 32) + (65536 + 32));
  CU_ASSERT_EQUAL(s.n_allocated, 3);
  CU_ASSERT_EQUAL(s.n_free, 1);
  CU_ASSERT_EQUAL(s.free, s.capacity - s.used);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  /* Free the middle one, then its neighbours: everything merges back. */
  CU_ASSERT_EQUAL(mpx_arena_release(a, r[1]), 0);
  CU_ASSERT_EQUAL(stats(a).n_free, 2);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r[0]), 0);
  CU_ASSERT_EQUAL(stats(a).n_free, 2);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r[2]), 0);
  s = stats(a);
  CU_ASSERT_EQUAL(s.used, 0);
  CU_ASSERT_EQUAL(s.n_allocated, 0);
  CU_ASSERT_EQUAL(s.n_free, 1);
  CU_ASSERT_EQUAL(s.largest_free, s0.largest_free);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  mpx_arena_free(a);
}

static void test_stale_references(void) {
  mpx_arena_t *a = new_arena(1 << 20);
  mpx_ref_t r, r2;
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 100, 0, &r), 0);
  CU_ASSERT_EQUAL(mpx_arena_retain(a, r), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(a, r)); /* one reference left */
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  /* Double free, use after free. */
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_arena_retain(a, r), MPX_ESTALE);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(a, r));
  CU_ASSERT_EQUAL(mpx_arena_block_size(a, r), 0);
  /* The same spot reused: the old reference stays stale. */
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 100, 0, &r2), 0);
  CU_ASSERT_EQUAL(r2 & 0xffffffffULL, r & 0xffffffffULL); /* offset */
  CU_ASSERT_NOT_EQUAL(r2, r);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_arena_give(a, r, getpid()), MPX_ESTALE);
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(a, r2));
  /* Not references at all. */
  CU_ASSERT_EQUAL(mpx_arena_release(a, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_arena_release(a, 3), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_arena_release(a, (1ULL << 40) + 64), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r2 + 16), MPX_ESTALE); /* mid-block */
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r2), 0);
  CU_ASSERT_EQUAL(stats(a).used, 0);
  mpx_arena_free(a);
}

/* A stale reference must never name a live block again. Two ways the
 * 16-bit generation that restarted at 0 brought one back (the way a queue
 * could free a live chunk, or follow a dead one, through a reference left
 * in a journal):
 *  1. a block's header overwritten by a neighbour's payload, then a split
 *     at the same spot: the new header restarted at generation 0;
 *  2. 65536 reuses of one spot: the generation wrapped. */
static void test_generation_never_repeats(void) {
  mpx_arena_t *a = new_arena(1 << 20);
  mpx_ref_t p, x, g, b, p2, x2;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 1000, 0, &p), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 1000, 0, &x), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 1000, 0, &g), 0); /* a guard */
  char *pp = mpx_arena_ptr(a, p), *px = mpx_arena_ptr(a, x);
  CU_ASSERT_EQUAL(mpx_arena_release(a, x), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, p), 0); /* merges with x's spot */
  /* One block over both spots; its payload overwrites x's old header. */
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 2 * 1040 - 32, 0, &b), 0);
  CU_ASSERT_PTR_EQUAL(mpx_arena_ptr(a, b), pp);
  memset(mpx_arena_ptr(a, b), 0, mpx_arena_block_size(a, b));
  CU_ASSERT_EQUAL(mpx_arena_release(a, b), 0);
  /* Split again at x's spot. */
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 1000, 0, &p2), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 1000, 0, &x2), 0);
  CU_ASSERT_PTR_EQUAL(mpx_arena_ptr(a, x2), px);
  CU_ASSERT_NOT_EQUAL(x2, x);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(a, x));
  CU_ASSERT_EQUAL(mpx_arena_retain(a, x), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_arena_release(a, p2), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, x2), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, g), 0);

  /* One spot reused 65536 times. */
  mpx_ref_t r0, r;
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 100, 0, &r0), 0);
  char *p0 = mpx_arena_ptr(a, r0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r0), 0);
  unsigned same_spot = 0;
  for (unsigned i = 0; i < 65535; i++) {
    CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 100, 0, &r), 0);
    same_spot += (char *)mpx_arena_ptr(a, r) == p0;
    CU_ASSERT_EQUAL_FATAL(mpx_arena_release(a, r), 0);
  }
  CU_ASSERT_EQUAL(same_spot, 65535);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_alloc(a, 100, 0, &r), 0);
  CU_ASSERT_NOT_EQUAL(r, r0);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(a, r0));
  CU_ASSERT_EQUAL(mpx_arena_release(a, r0), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  mpx_arena_free(a);
}

static void test_full_and_too_big(void) {
  mpx_arena_t *a = new_arena(1 << 20);
  mpx_ref_t refs[64], r;
  int n = 0, rc;
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 2 << 20, 0, &r), MPX_E2BIG);
  while ((rc = mpx_arena_alloc(a, 64 << 10, 0, &refs[n])) == 0) n++;
  CU_ASSERT_EQUAL(rc, MPX_ENOSPC);
  CU_ASSERT_EQUAL(n, 15); /* 16 x (64 KiB + 32) does not fit in 1 MiB */
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 64 << 10, 0.05, &r), MPX_ENOSPC);
  CU_ASSERT_EQUAL(r, 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 10, 0.0 / 0.0, &r), MPX_EINVAL);
  /* A child waits for space; it gets it when the parent frees some. */
  pid_t pid = fork();
  if (pid == 0) {
    mpx_ref_t c;
    if (mpx_arena_alloc(a, 64 << 10, 30, &c) != 0) _exit(1);
    _exit(mpx_arena_release(a, c) == 0 ? 0 : 2);
  }
  for (int i = 0; i < 30000 && stats(a).waiting != 1; i++) usleep(1000);
  CU_ASSERT_EQUAL(stats(a).waiting, 1);
  CU_ASSERT_EQUAL(mpx_arena_release(a, refs[--n]), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(stats(a).waiting, 0);
  while (n > 0) CU_ASSERT_EQUAL(mpx_arena_release(a, refs[--n]), 0);
  CU_ASSERT_EQUAL(stats(a).used, 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  mpx_arena_free(a);
}

static void test_reclaim_and_give(void) {
  mpx_arena_t *a = new_arena(1 << 20);
  mpx_ref_t *given = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  mpx_ref_t mine;
  CU_ASSERT_EQUAL(mpx_arena_alloc(a, 500, 0, &mine), 0);
  pid_t pid = fork();
  if (pid == 0) {
    mpx_ref_t r;
    for (int i = 0; i < 10; i++)
      if (mpx_arena_alloc(a, 100 + i * 300, 0, &r) != 0) _exit(1);
    /* The last one is handed to the parent. */
    if (mpx_arena_give(a, r, getppid()) != 0) _exit(2);
    *given = r;
    _exit(0); /* leaks 9 blocks */
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(stats(a).n_allocated, 11);
  CU_ASSERT_EQUAL(mpx_arena_owner(a, *given), getpid());
  CU_ASSERT_EQUAL(mpx_arena_reclaim(a, pid), 9);
  CU_ASSERT_EQUAL(mpx_arena_reclaim(a, pid), 0);
  CU_ASSERT_EQUAL(stats(a).n_allocated, 2);
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(a, *given));
  CU_ASSERT_PTR_NOT_NULL(mpx_arena_ptr(a, mine));
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, *given), 0);
  CU_ASSERT_EQUAL(mpx_arena_release(a, mine), 0);
  CU_ASSERT_EQUAL(stats(a).used, 0);
  CU_ASSERT_EQUAL(mpx_arena_reclaim(a, 0), MPX_EINVAL);
  munmap(given, 4096);
  mpx_arena_free(a);
}

/* A second mapping at another address (as an unrelated process would have)
 * sees the same blocks by reference. */
static void test_attach_elsewhere(void) {
  mpx_arena_t *a = new_arena(1 << 20), *b = NULL;
  mpx_segment_t *seg2 = NULL;
  mpx_ref_t r;
  CU_ASSERT_EQUAL_FATAL(
      mpx_segment_attach(&seg2, mpx_segment_fd(mpx_arena_segment(a)), 0), 0);
  CU_ASSERT_PTR_NOT_EQUAL(mpx_segment_base(seg2),
                          mpx_segment_base(mpx_arena_segment(a)));
  CU_ASSERT_EQUAL_FATAL(mpx_arena_attach(&b, seg2, 0), 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(b, 300, 0, &r), 0);
  strcpy(mpx_arena_ptr(b, r), "written through the second mapping");
  CU_ASSERT_STRING_EQUAL(mpx_arena_ptr(a, r),
                         "written through the second mapping");
  CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  CU_ASSERT_PTR_NULL(mpx_arena_ptr(b, r));
  CU_ASSERT_EQUAL(mpx_arena_check(b), 0);
  /* Attaching where there is no arena is refused. */
  mpx_arena_t *c = NULL;
  CU_ASSERT_EQUAL(mpx_arena_attach(&c, seg2, 4096), MPX_EINVAL);
  CU_ASSERT_PTR_NULL(c);
  mpx_arena_free(b);
  mpx_segment_free(seg2);
  mpx_arena_free(a);
}

/* Format two arenas side by side in one segment. */
static void test_format_in_segment(void) {
  mpx_segment_opts_t so = {0};
  mpx_segment_t *seg = NULL;
  mpx_arena_t *x = NULL, *y = NULL;
  mpx_ref_t r;
  so.size = 1 << 20;
  CU_ASSERT_EQUAL_FATAL(mpx_segment_new(&seg, &so), 0);
  CU_ASSERT_EQUAL(mpx_arena_format(&x, seg, 8, 4096), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_arena_format(&x, seg, 0, 2 << 20), MPX_ERANGE);
  CU_ASSERT_EQUAL(mpx_arena_format(&x, seg, 0, 128), MPX_EINVAL);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_format(&x, seg, 0, 512 << 10), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_arena_format(&y, seg, 512 << 10, 0), 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(x, 400 << 10, 0, &r), 0);
  CU_ASSERT_EQUAL(mpx_arena_alloc(x, 400 << 10, 0, &r), MPX_ENOSPC);
  CU_ASSERT_EQUAL(mpx_arena_check(x), 0);
  CU_ASSERT_EQUAL(mpx_arena_check(y), 0);
  CU_ASSERT_EQUAL(stats(y).used, 0);
  mpx_arena_free(x);
  mpx_arena_free(y);
  mpx_segment_free(seg);
}

/* A child dies (SIGKILL) holding the arena lock at each step of an
 * allocation and of a free; the parent's next call repairs the heap. */
static void test_killed_holding_lock(void) {
  for (int step = 1; step <= 7; step++) {
    mpx_arena_t *a = new_arena(1 << 20);
    mpx_ref_t keep[3];
    for (int i = 0; i < 3; i++)
      CU_ASSERT_EQUAL(mpx_arena_alloc(a, 1000, 0, &keep[i]), 0);
    /* A hole between keep[0] and keep[2], so frees merge both ways. */
    CU_ASSERT_EQUAL(mpx_arena_release(a, keep[1]), 0);
    pid_t pid = fork();
    if (pid == 0) {
      char v[8];
      mpx_ref_t r1, r2, r3;
      snprintf(v, sizeof v, "%d", step);
      setenv("MPX__ARENA_CRASH_AT", v, 1);
      mpx_arena_t *b = NULL;
      if (mpx_arena_attach(&b, mpx_arena_segment(a), 0) != 0) _exit(1);
      /* The allocation steps happen here... */
      if (mpx_arena_alloc(b, 200, 0, &r1) != 0) _exit(2);
      if (mpx_arena_alloc(b, 200, 0, &r2) != 0) _exit(2);
      if (mpx_arena_alloc(b, 200, 0, &r3) != 0) _exit(2);
      /* ...the free steps here: r2 merges with free space on one side,
       * r1 (next to keep[0]) then merges with r2's space. */
      if (mpx_arena_release(b, r3) != 0) _exit(3);
      if (mpx_arena_release(b, r1) != 0) _exit(3);
      if (mpx_arena_release(b, r2) != 0) _exit(3);
      _exit(4); /* the crash point was not reached */
    }
    CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
    /* The next operation recovers, and everything adds up afterwards. */
    mpx_ref_t r;
    CU_ASSERT_EQUAL(mpx_arena_alloc(a, 50, 0, &r), 0);
    CU_ASSERT_EQUAL(stats(a).recoveries, 1);
    CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
    int freed = mpx_arena_reclaim(a, pid);
    CU_ASSERT_TRUE(freed >= 0 && freed <= 3);
    CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
    CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
    CU_ASSERT_EQUAL(mpx_arena_release(a, keep[0]), 0);
    CU_ASSERT_EQUAL(mpx_arena_release(a, keep[2]), 0);
    mpx_arena_stats_t s = stats(a);
    CU_ASSERT_EQUAL(s.used, 0);
    CU_ASSERT_EQUAL(s.n_free, 1);
    CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
    if (s.used != 0) printf("step %d: %zu bytes left\n", step, s.used);
    mpx_arena_free(a);
  }
}

/* Randomized: a child hammers the arena and is SIGKILLed at random times;
 * after each kill the heap checks out and reclaim returns the rest. */
static void test_killed_at_random(void) {
  mpx_arena_t *a = new_arena(4 << 20);
  srand(12345);
  for (int round = 0; round < 20; round++) {
    pid_t pid = fork();
    if (pid == 0) {
      mpx_ref_t held[32] = {0};
      unsigned x = (unsigned)round * 7919u + 1;
      for (;;) {
        x = x * 1103515245u + 12345u;
        int i = (int)((x >> 8) % 32);
        if (held[i]) {
          mpx_arena_release(a, held[i]);
          held[i] = 0;
        } else {
          mpx_arena_alloc(a, 16 + (x >> 12) % 8000, 0, &held[i]);
        }
      }
    }
    usleep(2000 + (unsigned)(rand() % 20000));
    kill(pid, SIGKILL);
    CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
    CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
    CU_ASSERT_TRUE(mpx_arena_reclaim(a, pid) >= 0);
    CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
    CU_ASSERT_EQUAL(stats(a).used, 0);
  }
  mpx_arena_free(a);
}

/* Two processes allocate, retain, hand over and release at random for
 * ~2 s through shared slots; payload patterns catch overlapping blocks. */
enum { SLOTS = 64 };
typedef struct {
  _Atomic uint64_t slot[SLOTS];
  _Atomic int stop;
} board_t;

static int check_pattern(mpx_arena_t *a, mpx_ref_t r) {
  unsigned char *p = mpx_arena_ptr(a, r);
  size_t n = mpx_arena_block_size(a, r);
  if (p == NULL) return 0;
  for (size_t i = 0; i < n; i++)
    if (p[i] != (unsigned char)(r >> 4)) return 0;
  return 1;
}

static int hammer(mpx_arena_t *a, board_t *bd, unsigned seed) {
  unsigned x = seed;
  long ops = 0;
  while (!atomic_load(&bd->stop)) {
    x = x * 1103515245u + 12345u;
    int i = (int)((x >> 8) % SLOTS);
    uint64_t r = atomic_load(&bd->slot[i]);
    if (r == 0) {
      mpx_ref_t n;
      size_t sz = (x >> 16) % 4 == 0 ? 60000 : 8 + (x >> 18) % 500;
      if (mpx_arena_alloc(a, sz, 0, &n) != 0) continue;
      memset(mpx_arena_ptr(a, n), (unsigned char)(n >> 4),
             mpx_arena_block_size(a, n));
      uint64_t z = 0;
      if (!atomic_compare_exchange_strong(&bd->slot[i], &z, n))
        if (mpx_arena_release(a, n) != 0) return 1;
    } else if ((x >> 20) % 2) {
      /* Take it out of the board: ours to check and release. */
      if (!atomic_compare_exchange_strong(&bd->slot[i], &r, 0)) continue;
      if (!check_pattern(a, r)) return 2;
      if (mpx_arena_release(a, r) != 0) return 3;
    } else {
      /* Retain what another may free at any moment: only a live block
       * may be retained, and then it must be intact. */
      int rc = mpx_arena_retain(a, r);
      if (rc == 0) {
        if (!check_pattern(a, r)) return 4;
        if (mpx_arena_release(a, r) != 0) return 5;
      } else if (rc != MPX_ESTALE) {
        return 6;
      }
    }
    if (++ops % 20000 == 0 && mpx_arena_check(a) != 0) return 7;
  }
  return 0;
}

static void test_two_processes_random(void) {
  mpx_arena_t *a = new_arena(8 << 20);
  board_t *bd = mmap(NULL, sizeof *bd, PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CU_ASSERT_FATAL(bd != MAP_FAILED);
  memset(bd, 0, sizeof *bd);
  pid_t pid = fork();
  if (pid == 0) _exit(hammer(a, bd, 99));
  pid_t stopper = fork();
  if (stopper == 0) {
    sleep(2);
    atomic_store(&bd->stop, 1);
    _exit(0);
  }
  int mine = hammer(a, bd, 7);
  CU_ASSERT_EQUAL(mine, 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(stopper), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  size_t left = 0;
  for (int i = 0; i < SLOTS; i++) {
    uint64_t r = atomic_load(&bd->slot[i]);
    if (r) {
      left++;
      CU_ASSERT_TRUE(check_pattern(a, r));
      CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
    }
  }
  mpx_arena_stats_t s = stats(a);
  CU_ASSERT_EQUAL(s.used, 0);
  CU_ASSERT_EQUAL(s.n_free, 1);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  munmap(bd, sizeof *bd);
  mpx_arena_free(a);
}

MPX_TEST_MAIN("arena", MPX_TEST(test_alloc_release),
              MPX_TEST(test_stale_references),
              MPX_TEST(test_generation_never_repeats),
              MPX_TEST(test_full_and_too_big),
              MPX_TEST(test_reclaim_and_give),
              MPX_TEST(test_attach_elsewhere),
              MPX_TEST(test_format_in_segment),
              MPX_TEST(test_killed_holding_lock),
              MPX_TEST(test_killed_at_random),
              MPX_TEST(test_two_processes_random))
