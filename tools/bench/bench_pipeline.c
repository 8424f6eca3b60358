/* Pipeline figures, through mpx_pipeline_run (what `mpx run` does), for
 * the transport given with --transport:
 *
 *   pipeline.tiny            items/s: range -> checksum (2 workers) -> print
 *                            of 8-byte items, stdout to /dev/null
 *   pipeline.primes.<1|2>    s for the seed's primes work as a pipeline
 *                            (range -> primes -> print) with 1 and 2 workers
 *   pipeline.primes.pthreads2  s for a 2-thread static split of the same work
 *   pipeline.primes.vs_pthreads  the ratio (>= 0.95 is the aim)
 *
 *   bench_pipeline [--runs N] [--quick] [--transport T] [--primes-max N] */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"
#include "primes_ref.h"

static int runs = 3;
static long n_tiny = 10000000, primes_max = 5000000;
static const char *transport = "auto";

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_pipeline: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

/* Runs a pipeline text with stdout sent to /dev/null; returns its stats. */
static void run_yaml(const char *yaml, mpx_pipeline_stats_t *st) {
  char path[] = "/tmp/mpx-bench-XXXXXX.yaml";
  int fd = mkstemps(path, 5);
  if (fd < 0 || write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) die("tmp", MPX_EIO);
  close(fd);
  fflush(stdout);
  int saved = dup(1), null = open("/dev/null", O_WRONLY);
  dup2(null, 1);
  mpx_pipeline_opts_t o = {.file = path, .progress = MPX_PROGRESS_NEVER};
  int rc = mpx_pipeline_run(&o, st);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  close(null);
  unlink(path);
  if (rc != 0) die("pipeline", rc);
}

static double tiny(void) {
  char y[1024];
  snprintf(y, sizeof y,
           "defaults: {codec: raw, transport: %s}\n"
           "stages:\n"
           "  - plugin: range\n    params: {stop: %ld}\n"
           "  - plugin: checksum\n    workers: 2\n"
           "  - plugin: print\n    params: {format: hex}\n",
           transport, n_tiny);
  mpx_pipeline_stats_t st;
  run_yaml(y, &st);
  if (st.stage[2].in != (uint64_t)n_tiny) die("tiny: items lost", MPX_EUNKNOWN);
  return (double)n_tiny / st.seconds;
}

static double primes(unsigned workers) {
  char y[1024];
  snprintf(y, sizeof y,
           "defaults: {codec: raw, transport: %s}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 100000, stop: %ld, step: 100000}\n"
           "  - plugin: primes\n    workers: %u\n    batch: 1\n"
           "  - plugin: print\n    params: {format: int64}\n    ordered: true\n",
           transport, primes_max, workers);
  mpx_pipeline_stats_t st;
  run_yaml(y, &st);
  return st.seconds;
}

static double median(double *v, int n) {
  bench_sort(v, n);
  return v[n / 2];
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) {
      n_tiny /= 10;
      primes_max = 1000000;
    } else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) transport = argv[++i];
    else if (strcmp(argv[i], "--primes-max") == 0 && i + 1 < argc) primes_max = atol(argv[++i]);
  }
  if (runs < 1) runs = 1;
  if (runs > 32) runs = 32;
  printf("# pipeline benchmarks, transport %s\n", transport);
  double v[32];
  for (int r = 0; r < runs; r++) v[r] = tiny();
  printf("pipeline.tiny %.0f items/s\n", median(v, runs));
  double t1 = primes(1), t2 = primes(2);
  long long check;
  double tt = primes_threads(primes_max, &check);
  printf("pipeline.primes.1 %.3f s\n", t1);
  printf("pipeline.primes.2 %.3f s\n", t2);
  printf("pipeline.primes.pthreads2 %.3f s\n", tt);
  printf("pipeline.primes.vs_pthreads %.3f x\n", tt / t2);
  return 0;
}
