/* Queue kill storm: 2 producer and 2 consumer processes on one bounded
 * queue of inline items, a producer (and in the second test a consumer
 * too) SIGKILLed and restarted every 5-20 ms, the way a field tester
 * found old items delivered a second time.
 *
 * Every producer incarnation ("generation" g) puts the ids (g, 0), (g, 1),
 * ... and records after each put that returned how many did; consumers
 * count every id they get in shared memory. At the end the parent checks
 * every id exactly:
 *  - no id is delivered twice, none appears that was not put, no payload
 *    is torn;
 *  - every id whose put returned is delivered, except at most one per
 *    consumer kill (taken by the consumer that died, before it could
 *    count it);
 *  - of a killed producer's ids only the one it was putting may be lost
 *    (the id after its last returned put), so at most one per kill, and
 *    the queue's lost_puts count never exceeds those actually missing.
 *
 * MPX_STORM_SECONDS (default 3) and MPX_STORM_SEED (default: a fixed one
 * per test) let the same storm run longer or with other timings. */
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

#define NPROD 2
#define NCONS 2
#define MAXGEN 8192u            /* producer incarnations per storm */
#define PER_GEN (1u << 16)      /* ids per incarnation; then it exits */
#define ITEM 32u                /* bytes: inline (the default limit is 112) */

typedef struct {
  _Atomic uint32_t nput[MAXGEN];  /* puts that returned, per generation */
  _Atomic uint32_t stop_put, stop_get;
  _Atomic uint64_t torn, invented;
  _Atomic uint32_t ndup;
  struct {
    uint32_t gen, i, nput, gens_then;
  } dups[64]; /* the first duplicates, to say how old they were */
  _Atomic uint32_t gens; /* generations started so far */
} board_t;

static board_t *board;
static _Atomic uint8_t *got; /* MAXGEN * PER_GEN counters */
static const size_t GOT_BYTES = (size_t)MAXGEN * PER_GEN;

static void *shared_mem(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  return p == MAP_FAILED ? NULL : p;
}

static void make_item(uint8_t *buf, uint32_t gen, uint32_t i) {
  uint64_t w[ITEM / 8];
  w[0] = ((uint64_t)gen << 32) | i;
  for (unsigned k = 1; k < ITEM / 8; k++) w[k] = ~w[0] * (k + 1);
  memcpy(buf, w, ITEM);
}

static void producer(mpx_queue_t *q, uint32_t gen) {
  uint8_t buf[ITEM];
  for (uint32_t i = 0; i < PER_GEN; i++) {
    if (atomic_load(&board->stop_put)) _exit(0);
    make_item(buf, gen, i);
    if (mpx_queue_put(q, buf, ITEM, 30) != 0) _exit(1);
    atomic_store(&board->nput[gen], i + 1);
  }
  _exit(0);
}

static void count_item(const uint8_t *buf, size_t n) {
  uint64_t w[ITEM / 8];
  if (n != ITEM) {
    atomic_fetch_add(&board->torn, 1);
    return;
  }
  memcpy(w, buf, ITEM);
  for (unsigned k = 1; k < ITEM / 8; k++)
    if (w[k] != ~w[0] * (k + 1)) {
      atomic_fetch_add(&board->torn, 1);
      return;
    }
  uint32_t gen = (uint32_t)(w[0] >> 32), i = (uint32_t)w[0];
  if (gen >= MAXGEN || i >= PER_GEN) {
    atomic_fetch_add(&board->invented, 1);
    return;
  }
  if (atomic_fetch_add(&got[(size_t)gen * PER_GEN + i], 1) != 0) {
    uint32_t d = atomic_fetch_add(&board->ndup, 1);
    if (d < 64) {
      board->dups[d].gen = gen;
      board->dups[d].i = i;
      board->dups[d].nput = atomic_load(&board->nput[gen]);
      board->dups[d].gens_then = atomic_load(&board->gens);
    }
  }
}

static void consumer(mpx_queue_t *q) {
  uint8_t buf[256];
  size_t n;
  for (;;) {
    int rc = mpx_queue_get_into(q, buf, sizeof buf, &n, 0.05);
    if (rc == 0) count_item(buf, n);
    else if (rc == MPX_ETIMEDOUT && atomic_load(&board->stop_get)) _exit(0);
    else if (rc != MPX_ETIMEDOUT) _exit(2);
  }
}

/* A producer gets the next generation number; -1 when none is left. */
static pid_t spawn(mpx_queue_t *q, bool prod, uint32_t *genp) {
  uint32_t gen = prod ? atomic_fetch_add(&board->gens, 1) : 0;
  if (prod && gen >= MAXGEN) return -1;
  if (genp) *genp = gen;
  pid_t pid = fork();
  if (pid == 0) {
    if (prod) producer(q, gen);
    consumer(q);
  }
  return pid;
}

static double env_num(const char *name, double dflt) {
  const char *s = getenv(name);
  return s && *s ? atof(s) : dflt;
}

typedef struct {
  bool consumers;    /* kill consumers too (every other kill) */
  unsigned seed;
} storm_opts_t;

static bool killed_gen[MAXGEN];

static void storm(storm_opts_t so) {
  double seconds = env_num("MPX_STORM_SECONDS", 3);
  unsigned seed = (unsigned)env_num("MPX_STORM_SEED", so.seed);
  mpx_arena_t *a = NULL;
  mpx_arena_opts_t ao = {.size = (size_t)64 << 20};
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &ao), 0);
  mpx_queue_t *q = NULL;
  mpx_queue_opts_t o = {.maxsize = 5000, .arena = a};
  CU_ASSERT_EQUAL_FATAL(mpx_queue_new(&q, &o), 0);
  board = shared_mem(sizeof *board);
  got = shared_mem(GOT_BYTES);
  CU_ASSERT_PTR_NOT_NULL_FATAL(board);
  CU_ASSERT_PTR_NOT_NULL_FATAL(got);
  memset(killed_gen, 0, sizeof killed_gen);
  srand(seed);

  pid_t prod[NPROD], cons[NCONS];
  uint32_t pgen[NPROD];
  for (int k = 0; k < NPROD; k++) prod[k] = spawn(q, true, &pgen[k]);
  for (int k = 0; k < NCONS; k++) cons[k] = spawn(q, false, NULL);
  unsigned pkills = 0, ckills = 0;
  double end = mpx_test_now() + seconds;
  while (mpx_test_now() < end) {
    mpx_test_sleep((5 + rand() % 16) * 1e-3);
    bool victim_cons = so.consumers && rand() % 2;
    int k = rand() % 2;
    pid_t *pids = victim_cons ? cons : prod;
    if (pids[k] <= 0) break; /* out of generations */
    kill(pids[k], SIGKILL);
    int rc = mpx_test_wait_exit(pids[k]);
    CU_ASSERT_TRUE(rc == -SIGKILL || rc == 0); /* 0: it had finished */
    mpx_arena_reclaim(a, pids[k]); /* what a supervisor does */
    if (victim_cons) {
      ckills++;
      cons[k] = spawn(q, false, NULL);
    } else {
      pkills++;
      killed_gen[pgen[k]] = true;
      prod[k] = spawn(q, true, &pgen[k]);
    }
    /* A producer that put all its ids exited: start the next one. */
    for (int j = 0; j < NPROD; j++) {
      int st;
      if (prod[j] > 0 && waitpid(prod[j], &st, WNOHANG) == prod[j]) {
        CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        prod[j] = spawn(q, true, &pgen[j]);
      }
    }
  }

  /* Stop the producers, let the consumers drain, stop them. */
  atomic_store(&board->stop_put, 1);
  for (int k = 0; k < NPROD; k++)
    if (prod[k] > 0) CU_ASSERT_EQUAL(mpx_test_reap(prod[k], 60), 0);
  for (int t = 0; t < 6000 && !mpx_queue_empty(q); t++) mpx_test_sleep(0.01);
  atomic_store(&board->stop_get, 1);
  for (int k = 0; k < NCONS; k++) CU_ASSERT_EQUAL(mpx_test_reap(cons[k], 60), 0);

  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  uint32_t gens = atomic_load(&board->gens);
  if (gens > MAXGEN) gens = MAXGEN;
  size_t dup = 0, delivered = 0, missing_done = 0, lost_inflight = 0,
         never_put = 0;
  for (uint32_t g = 0; g < gens; g++) {
    uint32_t np = atomic_load(&board->nput[g]);
    const _Atomic uint8_t *row = got + (size_t)g * PER_GEN;
    for (uint32_t i = 0; i < PER_GEN; i++) {
      uint8_t c = atomic_load_explicit(&row[i], memory_order_relaxed);
      if (c > 1) dup += c - 1;
      if (c) delivered++;
      /* i == np: the put the generation was in when it stopped, if it
       * was killed (delivered when it died after the commit). */
      if (c && i > np) never_put++;
      if (!c && i < np) missing_done++; /* its put returned */
      if (!c && i == np && killed_gen[g]) lost_inflight++;
    }
  }
  fprintf(stderr,
          "\nstorm (seed %u, %.1f s): %u producer kills, %u consumer kills, "
          "%u generations, %zu ids delivered, %zu duplicates, %zu missing "
          "after their put returned, %zu in-flight ids lost, %llu torn, "
          "%llu + %zu never put; queue: puts %llu gets %llu lost_puts %llu "
          "lost_gets %llu recoveries %llu\n",
          seed, seconds, pkills, ckills, gens, delivered, dup, missing_done,
          lost_inflight, (unsigned long long)board->torn,
          (unsigned long long)board->invented, never_put,
          (unsigned long long)st.puts, (unsigned long long)st.gets,
          (unsigned long long)st.lost_puts, (unsigned long long)st.lost_gets,
          (unsigned long long)st.recoveries);
  for (uint32_t d = 0; d < board->ndup && d < 64; d++)
    fprintf(stderr, "  duplicate: generation %u id %u (it had put %u; %u "
            "generations started when seen again)\n",
            board->dups[d].gen, board->dups[d].i, board->dups[d].nput,
            board->dups[d].gens_then);
  /* Exactly once, nothing invented or torn. */
  CU_ASSERT_EQUAL(dup, 0);
  CU_ASSERT_EQUAL(board->torn, 0);
  CU_ASSERT_EQUAL(board->invented, 0);
  CU_ASSERT_EQUAL(never_put, 0);
  /* A returned put is delivered, unless a consumer died holding it (at
   * most one per consumer kill, and then the queue counted it only if
   * the get had not returned). */
  CU_ASSERT_TRUE(missing_done <= ckills);
  if (!so.consumers) CU_ASSERT_EQUAL(missing_done, 0);
  /* A killed put loses at most its own item (one per killed producer),
   * and the queue counts a loss only where an id is really missing. */
  CU_ASSERT_TRUE(lost_inflight <= pkills);
  CU_ASSERT_TRUE(st.lost_puts <= lost_inflight);
  /* Every get that returned was counted, but for a consumer killed
   * between its get and its count. */
  CU_ASSERT_EQUAL(st.puts, st.gets);
  CU_ASSERT_TRUE(delivered + dup <= st.gets - st.lost_gets);
  CU_ASSERT_TRUE(st.gets - st.lost_gets - (delivered + dup) <= ckills);
  CU_ASSERT_EQUAL(st.size, 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  munmap(got, GOT_BYTES);
  munmap(board, sizeof *board);
  mpx_queue_free(q);
  mpx_arena_free(a);
}

static void test_storm_kill_producers(void) {
  storm((storm_opts_t){.consumers = false, .seed = 1});
}
static void test_storm_kill_both(void) {
  storm((storm_opts_t){.consumers = true, .seed = 2});
}

MPX_TEST_MAIN("queue_storm", MPX_TEST(test_storm_kill_producers),
              MPX_TEST(test_storm_kill_both))
