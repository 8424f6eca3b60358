/* What every benchmark program shares: a monotonic clock and sorting of
 * samples for medians and percentiles. Header-only. */
#ifndef MPX_BENCH_H
#define MPX_BENCH_H

#include <stdlib.h>
#include <time.h>

static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int bench_cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

/* Sorts t[0..n) in place. */
static inline void bench_sort(double *t, int n) {
  qsort(t, (size_t)n, sizeof *t, bench_cmp_double);
}

#endif
