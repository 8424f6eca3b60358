/* The seed's primes work, the same everywhere it is measured: for every n
 * in range(100000, max, 100000), the sum of the primes below n by trial
 * division (isprime as in the seed). primes_threads() is the limit the
 * benchmarks compare against: the same work split statically between two
 * pthreads (n values alternating). Header-only. */
#ifndef MPX_BENCH_PRIMES_REF_H
#define MPX_BENCH_PRIMES_REF_H

#include <math.h>
#include <pthread.h>

#include "bench.h"

static int isprime(long n) {
  if (n < 2) return 0;
  if (n == 2) return 1;
  long max = (long)ceil(sqrt((double)n));
  for (long i = 2; i <= max; i++)
    if (n % i == 0) return 0;
  return 1;
}

static long long sum_primes(long n) {
  long long s = 0;
  for (long x = 2; x < n; x++)
    if (isprime(x)) s += x;
  return s;
}

/* Fills ns (room for 1000) and returns how many. */
static long primes_ns(long *ns, long max) {
  long k = 0;
  for (long n = 100000; n < max && k < 1000; n += 100000) ns[k++] = n;
  return k;
}

typedef struct {
  long *ns, k, off;
  long long sum;
} primes_split_t;

static void *primes_split_main(void *arg) {
  primes_split_t *s = arg;
  for (long i = s->off; i < s->k; i += 2) s->sum += sum_primes(s->ns[i]);
  return NULL;
}

/* Seconds for the work on two threads; *check gets the sum of sums. */
static double primes_threads(long max, long long *check) {
  long ns[1000];
  long k = primes_ns(ns, max);
  primes_split_t s[2] = {{ns, k, 0, 0}, {ns, k, 1, 0}};
  pthread_t th[2];
  double t = bench_now();
  for (int i = 0; i < 2; i++) pthread_create(&th[i], NULL, primes_split_main, &s[i]);
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  double dt = bench_now() - t;
  *check = s[0].sum + s[1].sum;
  return dt;
}

#endif
