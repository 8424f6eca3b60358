/* Shared memory and synchronization figures. Prints `name value unit`:
 *
 *   lock.uncontended             Lock acquire+release pairs, one thread
 *   lock.pthread_robust          the same with a pthread robust mutex (limit)
 *   value.incr_2proc             shared int64 += 1 under its lock, 2 processes
 *   event.pingpong_2proc         Event round trips between 2 processes
 *   arena.<size>.uncontended     allocate+release pairs, one process
 *   arena.<size>.contended_2proc pairs per second, 2 processes together
 *   segment.write_cold           memset of a fresh 256 MiB segment
 *   segment.prefault             MADV_POPULATE_WRITE of 256 MiB
 *   segment.write_prefaulted     memset of a pre-faulted 256 MiB segment
 *
 * Each figure is the median of --runs repetitions (default 5).
 *
 *   bench_shm [--runs N] [--quick] */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"

static int runs = 5;
static double scale = 1.0; /* --quick shrinks the work */

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_shm: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

static void *shared_map(size_t n) {
  void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) die("mmap", MPX_ENOMEM);
  memset(p, 0, n);
  return p;
}

/* Runs fn `runs` times; each returns a rate; prints the median. */
static void report(const char *name, const char *unit, double div,
                   double (*fn)(void *), void *arg) {
  double r[64];
  int n = runs < 64 ? runs : 64;
  for (int i = 0; i < n; i++) r[i] = fn(arg);
  bench_sort(r, n);
  printf("%s %.2f %s\n", name, r[n / 2] / div, unit);
  fflush(stdout);
}

static int wait_exit(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- locks ---------------------------------------------------------- */

static double lock_pairs(void *arg) {
  mpx_lock_t *l = arg;
  long n = (long)(2e7 * scale);
  double t = bench_now();
  for (long i = 0; i < n; i++) {
    mpx_lock_acquire(l, -1);
    mpx_lock_release(l);
  }
  return (double)n / (bench_now() - t);
}

static double pthread_pairs(void *arg) {
  pthread_mutex_t *m = arg;
  long n = (long)(2e7 * scale);
  double t = bench_now();
  for (long i = 0; i < n; i++) {
    pthread_mutex_lock(m);
    pthread_mutex_unlock(m);
  }
  return (double)n / (bench_now() - t);
}

/* ---- shared value ---------------------------------------------------- */

static double value_incr(void *arg) {
  mpx_shared_value_t *v = arg;
  long per = (long)(2e6 * scale);
  int64_t zero = 0;
  mpx_shared_value_set(v, &zero);
  double t = bench_now();
  pid_t kids[2];
  for (int k = 0; k < 2; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      mpx_lock_t *l = mpx_shared_value_lock(v);
      int64_t *p = mpx_shared_value_ptr(v);
      for (long i = 0; i < per; i++) {
        mpx_lock_acquire(l, -1);
        *p += 1;
        mpx_lock_release(l);
      }
      _exit(0);
    }
  }
  for (int k = 0; k < 2; k++) wait_exit(kids[k]);
  double dt = bench_now() - t;
  int64_t got;
  mpx_shared_value_get(v, &got);
  if (got != 2 * per) die("value_incr: lost increments", MPX_EUNKNOWN);
  return (double)(2 * per) / dt;
}

/* ---- event ping-pong ------------------------------------------------- */

typedef struct {
  mpx_event_t ping, pong;
} pingpong_t;

static double event_pingpong(void *arg) {
  pingpong_t *pp = arg;
  long n = (long)(1e5 * scale);
  mpx_event_init(&pp->ping);
  mpx_event_init(&pp->pong);
  pid_t kid = fork();
  if (kid == 0) {
    for (long i = 0; i < n; i++) {
      if (mpx_event_wait(&pp->ping, 10) != 0) _exit(1);
      mpx_event_clear(&pp->ping);
      mpx_event_set(&pp->pong);
    }
    _exit(0);
  }
  double t = bench_now();
  for (long i = 0; i < n; i++) {
    mpx_event_set(&pp->ping);
    if (mpx_event_wait(&pp->pong, 10) != 0) die("pingpong", MPX_ETIMEDOUT);
    mpx_event_clear(&pp->pong);
  }
  double dt = bench_now() - t;
  if (wait_exit(kid) != 0) die("pingpong child", MPX_EUNKNOWN);
  return (double)n / dt;
}

/* ---- arena ------------------------------------------------------------ */

typedef struct {
  mpx_arena_t *a;
  size_t size;
} arena_arg_t;

static long arena_loop(arena_arg_t *x, long n) {
  mpx_ref_t r[8];
  long done = 0;
  for (long i = 0; i < n; i += 8) {
    for (int k = 0; k < 8; k++) {
      int rc = mpx_arena_alloc(x->a, x->size, -1, &r[k]);
      if (rc != 0) die("alloc", rc);
    }
    for (int k = 0; k < 8; k++) mpx_arena_release(x->a, r[k]);
    done += 8;
  }
  return done;
}

static double arena_uncontended(void *arg) {
  long n = (long)(2e6 * scale);
  double t = bench_now();
  n = arena_loop(arg, n);
  return (double)n / (bench_now() - t);
}

static double arena_contended(void *arg) {
  long per = (long)(1e6 * scale);
  pid_t kids[2];
  double t = bench_now();
  for (int k = 0; k < 2; k++) {
    kids[k] = fork();
    if (kids[k] == 0) {
      arena_loop(arg, per);
      _exit(0);
    }
  }
  for (int k = 0; k < 2; k++) wait_exit(kids[k]);
  return (double)(2 * per) / (bench_now() - t);
}

/* ---- segments ---------------------------------------------------------- */

static size_t seg_bytes(void) { return scale < 1 ? (size_t)64 << 20 : (size_t)256 << 20; }

/* Writes (or pre-faults) a fresh segment; returns bytes per second of the
 * timed part. mode: 0 write a cold segment, 1 pre-fault it (timed),
 * 2 write a segment created with MPX_SEGMENT_PREFAULT. */
static double seg_run(int mode) {
  mpx_segment_opts_t o = {0};
  mpx_segment_t *s;
  int rc;
  o.size = seg_bytes();
  o.flags = mode == 2 ? MPX_SEGMENT_PREFAULT : 0;
  double t = bench_now();
  if ((rc = mpx_segment_new(&s, &o)) != 0) die("segment", rc);
  if (mode != 1) t = bench_now();
  if (mode == 1) rc = mpx_segment_prefault(s, 0, o.size);
  else memset(mpx_segment_base(s), 1, o.size);
  double dt = bench_now() - t;
  if (rc != 0) die("prefault", rc);
  mpx_segment_free(s);
  return (double)o.size / dt;
}

static double seg_cold(void *arg) { (void)arg; return seg_run(0); }
static double seg_prefault(void *arg) { (void)arg; return seg_run(1); }
static double seg_warm(void *arg) { (void)arg; return seg_run(2); }

int main(int argc, char **argv) {
  int rc;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) scale = 0.1;
  }
  if (runs < 1) runs = 1;

  mpx_lock_t *l = shared_map(sizeof *l);
  if ((rc = mpx_lock_init(l)) != 0) die("lock", rc);
  report("lock.uncontended", "M/s", 1e6, lock_pairs, l);
  pthread_mutex_t *m = shared_map(sizeof *m);
  pthread_mutexattr_t ma;
  pthread_mutexattr_init(&ma);
  pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(m, &ma);
  report("lock.pthread_robust", "M/s", 1e6, pthread_pairs, m);

  mpx_shared_value_t *v;
  if ((rc = mpx_shared_value_new(&v, MPX_CT_INT64, NULL, NULL)) != 0)
    die("value", rc);
  report("value.incr_2proc", "M/s", 1e6, value_incr, v);

  report("event.pingpong_2proc", "k/s", 1e3, event_pingpong,
         shared_map(sizeof(pingpong_t)));

  mpx_arena_opts_t ao = {0};
  ao.size = (size_t)64 << 20;
  ao.segment_flags = MPX_SEGMENT_PREFAULT;
  arena_arg_t aa;
  if ((rc = mpx_arena_new(&aa.a, &ao)) != 0) die("arena", rc);
  aa.size = 64;
  report("arena.64B.uncontended", "M/s", 1e6, arena_uncontended, &aa);
  report("arena.64B.contended_2proc", "M/s", 1e6, arena_contended, &aa);
  aa.size = 64 << 10;
  report("arena.64KiB.uncontended", "M/s", 1e6, arena_uncontended, &aa);
  report("arena.64KiB.contended_2proc", "M/s", 1e6, arena_contended, &aa);

  report("segment.write_cold", "MB/s", 1e6, seg_cold, NULL);
  report("segment.prefault", "MB/s", 1e6, seg_prefault, NULL);
  report("segment.write_prefaulted", "MB/s", 1e6, seg_warm, NULL);
  return 0;
}
