/* Pool figures (2 workers unless said otherwise), for the transport given
 * with --transport pipe|uring|auto:
 *
 *   pool.map.auto            calls/s, map_fixed of 1 M x*x, automatic chunks
 *   pool.map.chunk1          calls/s, map_fixed of 20 000 x*x, chunksize 1
 *   pool.imap_unordered.chunk1  tasks/s, 20 000 tasks
 *   pool.apply.<p50|p99>     µs per apply round trip
 *   pool.apply_1mib.<arena|inline>  GB/s through apply of a 1 MiB argument
 *                            and a 1 MiB result (2 MiB per call; the task
 *                            copies its argument into its result buffer),
 *                            median call; arena: the default, inline: the
 *                            pool without an arena (everything through the
 *                            sockets)
 *   pool.apply_async_1mib.arena  the same through apply_async and
 *                            mpx_async_get, which hands out the worker's
 *                            block (no copy of the result)
 *   pool.memcpy_1mib         GB/s of memcpy of 2 x 1 MiB (the same bytes,
 *                            one copy each, warm buffers): the yardstick
 *   pool.create_join.<fork|spawn>  ms for Pool(2) create + close + join + free
 *   pool.primes.<1|2>        s for the seed's primes work through the pool
 *   pool.primes.pthreads2    s for the same work split statically between
 *                            two pthreads (the limit), and the ratio
 *
 *   bench_pool [--runs N] [--quick] [--transport T] [--primes-max N] */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "bench.h"
#include "primes_ref.h"

static int runs = 5;
static long n_map = 1000000, n_small = 20000, n_apply = 5000, n_cycles = 20;
static long primes_max = 5000000;
static mpx_transport_t transport = MPX_TRANSPORT_AUTO;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_pool: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

static int square(mpx_task_t *t, const void *in, size_t len) {
  int64_t x;
  (void)len;
  memcpy(&x, in, sizeof x);
  x *= x;
  return mpx_task_result(t, &x, sizeof x);
}

static int primes_task(mpx_task_t *t, const void *in, size_t len) {
  long n;
  (void)len;
  memcpy(&n, in, sizeof n);
  long long s = sum_primes(n);
  return mpx_task_result(t, &s, sizeof s);
}

/* The result is the argument, written into the result buffer (an arena
 * block for a large result when the pool has an arena). */
static int copy_task(mpx_task_t *t, const void *in, size_t len) {
  void *o = mpx_task_result_buf(t, len);
  if (o == NULL) return mpx_task_fail(t, "no room");
  memcpy(o, in, len);
  return 0;
}

static size_t arena_size; /* for the pools made by pool() */

static mpx_pool_t *pool(unsigned n, size_t chunk, mpx_start_method_t m) {
  mpx_pool_opts_t o = {.processes = n, .chunksize = chunk, .transport = transport,
                       .start_method = m, .arena_size = arena_size};
  mpx_pool_t *p;
  int rc = mpx_pool_new(&p, &o);
  if (rc != 0) die("pool_new", rc);
  return p;
}

static double run_map(long n, size_t chunk) {
  mpx_pool_t *p = pool(2, chunk, MPX_START_FORK);
  int64_t *in = malloc(n * 8), *out = malloc(n * 8);
  for (long i = 0; i < n; i++) in[i] = i;
  /* warm: the workers are up and have the function */
  int rc = mpx_pool_map_fixed(p, MPX_FUNC(square), in, 8, 100, out, 8, NULL, -1);
  if (rc != 0) die("map", rc);
  double t = bench_now();
  rc = mpx_pool_map_fixed(p, MPX_FUNC(square), in, 8, (size_t)n, out, 8, NULL, -1);
  double dt = bench_now() - t;
  if (rc != 0) die("map", rc);
  for (long i = 0; i < n; i++)
    if (out[i] != (int64_t)i * i) die("result", MPX_EUNKNOWN);
  free(in);
  free(out);
  mpx_pool_free(p);
  return (double)n / dt;
}

typedef struct {
  int64_t next, limit, cur;
} gen_t;
static int gen(void *arg, const void **d, size_t *l) {
  gen_t *g = arg;
  if (g->next >= g->limit) return 0;
  g->cur = g->next++;
  *d = &g->cur;
  *l = 8;
  return 1;
}

static double run_imap(long n) {
  mpx_pool_t *p = pool(2, 1, MPX_START_FORK);
  gen_t g = {0, n, 0};
  mpx_imap_t *it;
  double t = bench_now();
  int rc = mpx_pool_imap(p, MPX_FUNC(square), gen, &g, false, 0, &it);
  if (rc != 0) die("imap", rc);
  const void *d;
  size_t len;
  long got = 0;
  while ((rc = mpx_imap_next(it, &d, &len, NULL, -1)) == 1) got++;
  double dt = bench_now() - t;
  if (rc != 0 || got != n) die("imap_next", rc);
  mpx_imap_free(it);
  mpx_pool_free(p);
  return (double)n / dt;
}

static void run_apply(double *p50, double *p99) {
  mpx_pool_t *p = pool(2, 0, MPX_START_FORK);
  double *t = malloc(sizeof(double) * (size_t)n_apply);
  for (long i = -100; i < n_apply; i++) {
    int64_t x = i;
    void *res;
    size_t len;
    double t0 = bench_now();
    int rc = mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, -1);
    if (rc != 0) die("apply", rc);
    if (i >= 0) t[i] = (bench_now() - t0) * 1e6;
    free(res);
  }
  bench_sort(t, (int)n_apply);
  *p50 = t[n_apply / 2];
  *p99 = t[(long)(n_apply * 0.99)];
  free(t);
  mpx_pool_free(p);
}

/* GB/s of apply with a 1 MiB argument and a 1 MiB result (async: through
 * apply_async + mpx_async_get, the result read in place). */
static double run_apply_big(bool arena, bool async) {
  size_t mib = (size_t)1 << 20;
  arena_size = arena ? 0 : MPX_POOL_ARENA_OFF;
  mpx_pool_t *p = pool(2, 0, MPX_START_FORK);
  arena_size = 0;
  unsigned char *in = malloc(mib);
  for (size_t i = 0; i < mib; i++) in[i] = (unsigned char)(i * 7);
  long n = n_apply / 10 < 20 ? 20 : n_apply / 10;
  double *t = malloc(sizeof(double) * (size_t)n);
  for (long i = -10; i < n; i++) {
    void *res = NULL;
    const void *data;
    size_t len;
    mpx_async_t *a = NULL;
    double t0 = bench_now();
    int rc;
    if (async) {
      rc = mpx_pool_apply_async(p, MPX_FUNC(copy_task), in, mib, NULL, NULL, NULL, &a);
      if (rc == 0) rc = mpx_async_get(a, &data, &len, -1);
    } else {
      rc = mpx_pool_apply(p, MPX_FUNC(copy_task), in, mib, &res, &len, -1);
      data = res;
    }
    if (rc != 0) die("apply 1 MiB", rc);
    if (i >= 0) t[i] = bench_now() - t0;
    if (len != mib || memcmp(data, in, mib) != 0) die("apply 1 MiB result", MPX_EUNKNOWN);
    free(res);
    mpx_async_free(a);
  }
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  if (arena && st.arena_results == 0) die("apply 1 MiB: no result came through the arena", MPX_EUNKNOWN);
  bench_sort(t, (int)n);
  double med = t[n / 2];
  free(t);
  free(in);
  mpx_pool_free(p);
  return 2.0 * (double)mib / med / 1e9;
}

static double run_memcpy_big(void) {
  size_t mib = (size_t)1 << 20;
  unsigned char *a = malloc(mib), *b = malloc(mib), *c = malloc(mib);
  memset(a, 1, mib);
  memset(b, 2, mib);
  memset(c, 3, mib);
  double t[64];
  for (int r = -3; r < 64; r++) {
    double t0 = bench_now();
    memcpy(b, a, mib);
    memcpy(c, b, mib);
    if (r >= 0) t[r] = bench_now() - t0;
  }
  bench_sort(t, 64);
  double med = t[32];
  if (c[mib - 1] != 1) die("memcpy", MPX_EUNKNOWN);
  free(a);
  free(b);
  free(c);
  return 2.0 * (double)mib / med / 1e9;
}

static double run_cycle(mpx_start_method_t m) {
  double best[64];
  for (long i = 0; i < n_cycles && i < 64; i++) {
    double t = bench_now();
    mpx_pool_t *p = pool(2, 0, m);
    /* up: one task done by the pool */
    int64_t x = 3;
    void *res;
    size_t len;
    if (i == 0 && mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, -1) == 0)
      free(res);
    mpx_pool_close(p);
    mpx_pool_join(p, -1);
    mpx_pool_free(p);
    best[i] = (bench_now() - t) * 1e3;
  }
  int n = (int)(n_cycles < 64 ? n_cycles : 64);
  bench_sort(best, n);
  return best[n / 2];
}


static double run_primes_pool(unsigned workers, long long *check) {
  long ns[1000];
  long k = primes_ns(ns, primes_max);
  long long out[1000];
  mpx_pool_t *p = pool(workers, 1, MPX_START_FORK);
  double t = bench_now();
  int rc = mpx_pool_map_fixed(p, MPX_FUNC(primes_task), ns, sizeof *ns, (size_t)k,
                              out, sizeof *out, NULL, -1);
  double dt = bench_now() - t;
  if (rc != 0) die("primes", rc);
  *check = 0;
  for (long i = 0; i < k; i++) *check += out[i];
  mpx_pool_free(p);
  return dt;
}

static double median(double *v, int n) {
  bench_sort(v, n);
  return v[n / 2];
}

int main(int argc, char **argv) {
  bool quick = false;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) {
      runs = atoi(argv[++i]);
    } else if (strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) {
      if (mpx_transport_parse(argv[++i], &transport) != 0) die("--transport", MPX_EINVAL);
    } else if (strcmp(argv[i], "--primes-max") == 0 && i + 1 < argc) {
      primes_max = atol(argv[++i]);
    }
  }
  if (quick) {
    n_map /= 10;
    n_small /= 10;
    n_apply /= 5;
    n_cycles = 5;
    if (primes_max > 1000000) primes_max = 1000000;
  }
  if (runs < 1) runs = 1;
  if (runs > 64) runs = 64;
  mpx_transport_t used;
  mpx_transport_resolve(transport, &used);
  printf("# pool benchmarks, transport %s\n", mpx_transport_name(used));
  double v[64], w[64];
  for (int r = 0; r < runs; r++) v[r] = run_map(n_map, 0);
  printf("pool.map.auto %.0f calls/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) v[r] = run_map(n_small, 1);
  printf("pool.map.chunk1 %.0f calls/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) v[r] = run_imap(n_small);
  printf("pool.imap_unordered.chunk1 %.0f tasks/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) run_apply(&v[r], &w[r]);
  printf("pool.apply.p50 %.1f us\n", median(v, runs));
  printf("pool.apply.p99 %.1f us\n", median(w, runs));
  for (int r = 0; r < runs; r++) v[r] = run_apply_big(true, false);
  printf("pool.apply_1mib.arena %.2f GB/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) v[r] = run_apply_big(true, true);
  printf("pool.apply_async_1mib.arena %.2f GB/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) v[r] = run_apply_big(false, false);
  printf("pool.apply_1mib.inline %.2f GB/s\n", median(v, runs));
  for (int r = 0; r < runs; r++) v[r] = run_memcpy_big();
  printf("pool.memcpy_1mib %.2f GB/s\n", median(v, runs));
  printf("pool.create_join.fork %.2f ms\n", run_cycle(MPX_START_FORK));
  printf("pool.create_join.spawn %.2f ms\n", run_cycle(MPX_START_SPAWN));
  long long c1, c2, ct;
  double t1 = run_primes_pool(1, &c1), t2 = run_primes_pool(2, &c2);
  double tt = primes_threads(primes_max, &ct);
  if (c1 != c2 || c1 != ct) die("primes checksum", MPX_EUNKNOWN);
  printf("pool.primes.1 %.3f s\n", t1);
  printf("pool.primes.2 %.3f s\n", t2);
  printf("pool.primes.pthreads2 %.3f s\n", tt);
  printf("pool.primes.vs_pthreads %.3f x\n", tt / t2);
  return 0;
}
