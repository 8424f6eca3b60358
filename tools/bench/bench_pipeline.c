/* Pipeline figures, through mpx_pipeline_run (what `mpx run` does), for
 * the transport given with --transport:
 *
 *   pipeline.tiny            items/s: range -> checksum (2 workers) -> print
 *                            of 8-byte items, stdout to /dev/null
 *   pipeline.primes.<1|2>    s for the seed's primes work as a pipeline
 *                            (range -> primes -> print) with 1 and 2 workers
 *   pipeline.primes.pthreads2  s for a 2-thread static split of the same work
 *   pipeline.primes.vs_pthreads  the ratio (>= 0.95 is the aim)
 *   pipeline.bulk            GB/s: fill -> checksum (xxh3, 2 workers) ->
 *                            print of 4 GiB in 1 MiB items, each written
 *                            in place into the arena by the source and
 *                            hashed in place by a worker
 *   pipeline.bulk.memcpy     GB/s: memcpy of the same bytes in 1 MiB
 *                            blocks over the same working set (queue
 *                            capacity x 1 MiB), one thread
 *   pipeline.bulk.vs_memcpy  the ratio (>= 0.5 is the aim)
 *   pipeline.widefinder.<1|2>  s for examples/wide-finder.yaml over the log
 *                            given with --log (top 10 URLs), 1 and 2
 *                            workers per stage; .speedup their ratio
 *
 *   bench_pipeline [--runs N] [--quick] [--transport T] [--primes-max N]
 *                  [--bulk-only] [--log ACCESS_LOG [--log-only]] */
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"
#include "primes_ref.h"

static int runs = 3;
static long bulk_items = 4096, bulk_size = 1 << 20, bulk_queue = 16;
static long n_tiny = 10000000, primes_max = 5000000;
static const char *transport = "auto";
static int bulk_only, log_only;
static const char *access_log;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_pipeline: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

/* Runs a pipeline file with --set assignments, stdout sent to /dev/null;
 * returns its stats. */
static void run_file(const char *path, const char *const *sets, size_t n_sets,
                     mpx_pipeline_stats_t *st) {
  fflush(stdout);
  int saved = dup(1), null = open("/dev/null", O_WRONLY);
  dup2(null, 1);
  mpx_pipeline_opts_t o = {.file = path, .sets = sets, .n_sets = n_sets,
                           .progress = MPX_PROGRESS_NEVER};
  int rc = mpx_pipeline_run(&o, st);
  fflush(stdout);
  dup2(saved, 1);
  close(saved);
  close(null);
  if (rc != 0) die("pipeline", rc);
}

/* Runs a pipeline text, as run_file. */
static void run_yaml(const char *yaml, mpx_pipeline_stats_t *st) {
  char path[] = "/tmp/mpx-bench-XXXXXX.yaml";
  int fd = mkstemps(path, 5);
  if (fd < 0 || write(fd, yaml, strlen(yaml)) != (ssize_t)strlen(yaml)) die("tmp", MPX_EIO);
  close(fd);
  run_file(path, NULL, 0, st);
  unlink(path);
}

/* examples/wide-finder.yaml over access_log with `workers` per stage. */
static double wide_finder(unsigned workers) {
  char path[4200], w[64];
  snprintf(path, sizeof path, "lines.path=%s", access_log);
  /* The source's workers: its parts' chain takes them (docs/config.md). */
  snprintf(w, sizeof w, "lines.workers=%u", workers);
  const char *sets[] = {path, w};
  mpx_pipeline_stats_t st;
  run_file(WIDE_FINDER_YAML, sets, 2, &st);
  return st.seconds;
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

static double bulk(void) {
  char y[1024];
  snprintf(y, sizeof y,
           "defaults: {codec: raw, transport: %s}\n"
           "queue_capacity: %ld\n"
           "stages:\n"
           "  - plugin: %s\n    params: {count: %ld, size: %ld}\n"
           "  - plugin: checksum\n    workers: 2\n    batch: 1\n"
           "  - plugin: print\n    params: {format: hex}\n",
           transport, bulk_queue, FILL_SO, bulk_items, bulk_size);
  mpx_pipeline_stats_t st;
  run_yaml(y, &st);
  if (st.stage[2].in != (uint64_t)bulk_items) die("bulk: items lost", MPX_EUNKNOWN);
  return (double)bulk_items * (double)bulk_size / st.seconds / 1e9;
}

/* memcpy of bulk_items blocks of bulk_size bytes, cycling over bulk_queue
 * destination blocks (the pipeline's working set), from one source. */
static double bulk_memcpy(void) {
  size_t sz = (size_t)bulk_size;
  unsigned char *src = malloc(sz), *dst = malloc(sz * (size_t)bulk_queue);
  if (src == NULL || dst == NULL) die("memcpy", MPX_ENOMEM);
  memset(src, 0x5a, sz);
  memset(dst, 0, sz * (size_t)bulk_queue);
  double t0 = bench_now();
  for (long i = 0; i < bulk_items; i++) {
    memcpy(dst + sz * (size_t)(i % bulk_queue), src, sz);
    src[i % sz] ^= dst[sz * (size_t)(i % bulk_queue) + 1]; /* keep it honest */
  }
  double dt = bench_now() - t0;
  free(src);
  free(dst);
  return (double)bulk_items * (double)sz / dt / 1e9;
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
      bulk_items = 512;
    } else if (strcmp(argv[i], "--transport") == 0 && i + 1 < argc) transport = argv[++i];
    else if (strcmp(argv[i], "--primes-max") == 0 && i + 1 < argc) primes_max = atol(argv[++i]);
    else if (strcmp(argv[i], "--bulk-only") == 0) bulk_only = 1;
    else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) access_log = argv[++i];
    else if (strcmp(argv[i], "--log-only") == 0) log_only = 1;
  }
  if (runs < 1) runs = 1;
  if (runs > 32) runs = 32;
  printf("# pipeline benchmarks, transport %s\n", transport);
  double v[32];
  if (access_log) {
    struct stat sb;
    if (stat(access_log, &sb) != 0) die(access_log, MPX_ENOENT);
    double w1[32], w2[32];
    for (int r = 0; r < runs; r++) {
      w1[r] = wide_finder(1);
      w2[r] = wide_finder(2);
    }
    double a = median(w1, runs), b = median(w2, runs);
    printf("pipeline.widefinder.bytes %lld B\n", (long long)sb.st_size);
    printf("pipeline.widefinder.1 %.3f s\n", a);
    printf("pipeline.widefinder.2 %.3f s\n", b);
    printf("pipeline.widefinder.2.rate %.0f MB/s\n", (double)sb.st_size / b / 1e6);
    printf("pipeline.widefinder.speedup %.3f x\n", a / b);
    fflush(stdout);
    if (log_only) return 0;
  }
  for (int r = 0; r < runs && !bulk_only; r++) v[r] = tiny();
  if (!bulk_only) printf("pipeline.tiny %.0f items/s\n", median(v, runs));
  double b[32], m[32];
  for (int r = 0; r < runs; r++) {
    m[r] = bulk_memcpy();
    b[r] = bulk();
  }
  double bm = median(b, runs), mm = median(m, runs);
  printf("pipeline.bulk %.2f GB/s\n", bm);
  printf("pipeline.bulk.memcpy %.2f GB/s\n", mm);
  printf("pipeline.bulk.vs_memcpy %.3f x\n", bm / mm);
  fflush(stdout);
  if (bulk_only) return 0;
  double t1 = primes(1), t2 = primes(2);
  long long check;
  double tt = primes_threads(primes_max, &check);
  printf("pipeline.primes.1 %.3f s\n", t1);
  printf("pipeline.primes.2 %.3f s\n", t2);
  printf("pipeline.primes.pthreads2 %.3f s\n", tt);
  printf("pipeline.primes.vs_pthreads %.3f x\n", tt / t2);
  return 0;
}
