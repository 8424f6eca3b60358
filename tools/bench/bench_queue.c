/* Queue figures, one producer process -> one consumer process:
 *
 *   queue.<8B|100B|4KiB>         messages/s (put / get_into)
 *   queue.<...>.syscalls         futex calls per message (both sides)
 *   queue.1MiB.copy              GB/s, put (one copy in) + get_msg (in place)
 *   queue.1MiB.loan.handover     GB/s of 1 MiB payloads handed over with
 *                                loan -> publish -> get_msg -> release, the
 *                                producer writing a 64-byte header only
 *   queue.1MiB.loan.touch        the same, the producer writing every byte
 *                                and the consumer reading every byte
 *   queue.pingpong.<p50|p99>     µs per round trip through two queues
 *
 *   bench_queue [--runs N] [--quick] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"

static int runs = 5;
static long n_small = 2000000;
static long n_big = 4000;
static long n_rt = 50000;

static mpx_arena_t *arena;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_queue: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

static mpx_queue_t *new_queue(size_t maxsize) {
  mpx_queue_t *q;
  mpx_queue_opts_t o = {.maxsize = maxsize, .arena = arena};
  int rc = mpx_queue_new(&q, &o);
  if (rc != 0) die("queue_new", rc);
  return q;
}

static void reap(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    fprintf(stderr, "bench_queue: child failed (%d)\n", st);
    exit(1);
  }
}

/* Messages/s of `size` bytes; *sc gets futex calls per message. */
static double run_small(size_t size, double *sc) {
  mpx_queue_t *q = new_queue(4096);
  long n = size > 1000 ? n_small / 4 : n_small;
  pid_t pid = fork();
  if (pid == 0) {
    char msg[4096];
    memset(msg, 7, sizeof msg);
    for (long i = 0; i < n; i++) {
      memcpy(msg, &i, sizeof i);
      if (mpx_queue_put(q, msg, size, -1) != 0) _exit(1);
    }
    _exit(0);
  }
  char buf[4096];
  size_t len;
  int rc;
  double t = bench_now();
  for (long i = 0; i < n; i++) {
    if ((rc = mpx_queue_get_into(q, buf, sizeof buf, &len, -1)) != 0)
      die("get", rc);
    long v;
    memcpy(&v, buf, sizeof v);
    if (v != i || len != size) die("order", MPX_EUNKNOWN);
  }
  double dt = bench_now() - t;
  reap(pid);
  mpx_queue_stats_t st;
  mpx_queue_stats(q, &st);
  *sc = (double)st.futex_calls / (double)n;
  mpx_queue_free(q);
  return (double)n / dt;
}

/* mode 0: put (copy) + get_msg; 1: loan, header only; 2: loan, every
 * byte written and read. GB/s of payload. */
static double run_big(int mode) {
  const size_t sz = (size_t)1 << 20;
  mpx_queue_t *q = new_queue(8);
  pid_t pid = fork();
  if (pid == 0) {
    char *src = malloc(sz);
    memset(src, 3, sz);
    for (long i = 0; i < n_big; i++) {
      if (mode == 0) {
        memcpy(src, &i, sizeof i);
        if (mpx_queue_put(q, src, sz, -1) != 0) _exit(1);
        continue;
      }
      mpx_queue_loan_t l;
      if (mpx_queue_loan(q, sz, &l, -1) != 0) _exit(2);
      if (mode == 2) memset(l.data, (int)i, sz);
      memcpy(l.data, &i, sizeof i);
      if (mpx_queue_publish(q, &l, sz, -1) != 0) _exit(3);
    }
    free(src);
    _exit(0);
  }
  uint64_t sum = 0;
  int rc;
  double t = bench_now();
  for (long i = 0; i < n_big; i++) {
    mpx_queue_msg_t m;
    if ((rc = mpx_queue_get_msg(q, &m, -1)) != 0) die("get_msg", rc);
    long v;
    memcpy(&v, m.data, sizeof v);
    if (v != i || m.len != sz) die("order", MPX_EUNKNOWN);
    if (mode == 2) {
      const uint64_t *p = m.data;
      for (size_t k = 0; k < sz / 8; k++) sum += p[k];
    }
    mpx_queue_msg_release(q, &m);
  }
  double dt = bench_now() - t;
  reap(pid);
  mpx_queue_free(q);
  if (sum == 1) fprintf(stderr, "#\n"); /* keep the reads */
  return (double)n_big * (double)sz / dt / 1e9;
}

/* Round trips of 8 bytes through two queues; fills p50 and p99 (µs). */
static void run_pingpong(double *p50, double *p99) {
  mpx_queue_t *a = new_queue(0), *b = new_queue(0);
  pid_t pid = fork();
  if (pid == 0) {
    long v;
    size_t len;
    for (long i = 0; i < n_rt; i++) {
      if (mpx_queue_get_into(a, &v, sizeof v, &len, -1) != 0) _exit(1);
      if (mpx_queue_put(b, &v, sizeof v, -1) != 0) _exit(2);
    }
    _exit(0);
  }
  double *t = malloc(sizeof(double) * (size_t)n_rt);
  for (long i = 0; i < n_rt; i++) {
    long v;
    size_t len;
    double t0 = bench_now();
    if (mpx_queue_put(a, &i, sizeof i, -1) != 0) die("put", MPX_EUNKNOWN);
    if (mpx_queue_get_into(b, &v, sizeof v, &len, -1) != 0 || v != i)
      die("get", MPX_EUNKNOWN);
    t[i] = (bench_now() - t0) * 1e6;
  }
  reap(pid);
  bench_sort(t, (int)n_rt);
  *p50 = t[n_rt / 2];
  *p99 = t[(long)(n_rt * 0.99)];
  free(t);
  mpx_queue_free(a);
  mpx_queue_free(b);
}

static double median(double *v, int n) {
  bench_sort(v, n);
  return v[n / 2];
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--quick") == 0) {
      n_small /= 10;
      n_big /= 10;
      n_rt /= 10;
    }
  }
  if (runs < 1) runs = 1;
  mpx_arena_opts_t ao = {.size = (size_t)256 << 20};
  int rc = mpx_arena_new(&arena, &ao);
  if (rc != 0) die("arena", rc);
  static const struct { const char *name; size_t size; } smalls[] = {
      {"8B", 8}, {"100B", 100}, {"4KiB", 4096}};
  double v[64], sc[64];
  for (size_t k = 0; k < 3; k++) {
    for (int r = 0; r < runs; r++) v[r] = run_small(smalls[k].size, &sc[r]);
    printf("queue.%s %.0f msgs/s\n", smalls[k].name, median(v, runs));
    printf("queue.%s.syscalls %.4f per msg\n", smalls[k].name, median(sc, runs));
  }
  static const char *bigs[] = {"queue.1MiB.copy", "queue.1MiB.loan.handover",
                               "queue.1MiB.loan.touch"};
  for (int mode = 0; mode < 3; mode++) {
    for (int r = 0; r < runs; r++) v[r] = run_big(mode);
    printf("%s %.2f GB/s\n", bigs[mode], median(v, runs));
  }
  double p50[64], p99[64];
  for (int r = 0; r < runs; r++) run_pingpong(&p50[r], &p99[r]);
  printf("queue.pingpong.p50 %.2f us\n", median(p50, runs));
  printf("queue.pingpong.p99 %.2f us\n", median(p99, runs));
  mpx_arena_free(arena);
  return 0;
}
