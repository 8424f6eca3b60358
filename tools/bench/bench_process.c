/* Process start+join cost for each start method, beside a bare
 * fork()+waitpid() loop measured in the same run.
 *
 * Prints one `name value unit` line per figure:
 *   process.<method>.start_join.{median,p90}   one child started then joined
 *   process.<method>.batch100                  100 started, then 100 joined
 * where <method> is bare_fork, fork, forkserver or spawn.
 *
 *   bench_process [--runs N] */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"

#ifndef BENCH_TARGETS_SO
#error BENCH_TARGETS_SO must name the benchmark targets library
#endif

#define BATCH 100

static void report(const char *name, double *t, int n) {
  bench_sort(t, n);
  printf("process.%s.start_join.median %.3f ms\n", name, t[n / 2] * 1e3);
  printf("process.%s.start_join.p90 %.3f ms\n", name, t[n * 9 / 10] * 1e3);
  fflush(stdout);
}

static void die(const char *what) {
  fprintf(stderr, "bench_process: %s: %s\n", what, mpx_last_error());
  exit(1);
}

static mpx_target_fn noop;

/* fork and forkserver take the target as a pointer, as a C caller would;
 * spawn names it "lib.so:symbol", which it needs. */
static mpx_process_t *start(mpx_start_method_t m) {
  mpx_process_opts_t o;
  mpx_process_t *p;
  memset(&o, 0, sizeof o);
  if (m == MPX_START_SPAWN)
    o.target_spec = BENCH_TARGETS_SO ":bench_noop";
  else
    o.target = noop;
  o.start_method = m;
  if (mpx_process_new(&p, &o) != 0 || mpx_process_start(p) != 0) die("start");
  return p;
}

static void finish(mpx_process_t *p) {
  int code;
  if (mpx_process_join(p, -1) != 0 || mpx_process_exitcode(p, &code) != 0 ||
      code != 0)
    die("join");
  mpx_process_free(p);
}

static void bare_fork(double *t, int runs) {
  pid_t pids[BATCH];
  double t0;
  int i;
  for (i = 0; i < runs; i++) {
    pid_t pid;
    t0 = bench_now();
    pid = fork();
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    t[i] = bench_now() - t0;
  }
  report("bare_fork", t, runs);
  t0 = bench_now();
  for (i = 0; i < BATCH; i++)
    if ((pids[i] = fork()) == 0) _exit(0);
  for (i = 0; i < BATCH; i++) waitpid(pids[i], NULL, 0);
  printf("process.bare_fork.batch100 %.3f ms\n", (bench_now() - t0) * 1e3);
}

static void method(mpx_start_method_t m, double *t, int runs) {
  mpx_process_t *ps[BATCH];
  double t0;
  int i;
  finish(start(m)); /* warm up: forkserver launch, page cache */
  for (i = 0; i < runs; i++) {
    t0 = bench_now();
    finish(start(m));
    t[i] = bench_now() - t0;
  }
  report(mpx_start_method_name(m), t, runs);
  t0 = bench_now();
  for (i = 0; i < BATCH; i++) ps[i] = start(m);
  for (i = 0; i < BATCH; i++) finish(ps[i]);
  printf("process.%s.batch100 %.3f ms\n", mpx_start_method_name(m),
         (bench_now() - t0) * 1e3);
  fflush(stdout);
}

int main(int argc, char **argv) {
  int runs = 200;
  double *t;
  if (argc == 3 && strcmp(argv[1], "--runs") == 0) runs = atoi(argv[2]);
  if (runs < 10) runs = 10;
  t = malloc(sizeof *t * (size_t)runs);
  if (t == NULL) return 1;
  {
    void *h = dlopen(BENCH_TARGETS_SO, RTLD_NOW);
    if (h == NULL || (*(void **)&noop = dlsym(h, "bench_noop")) == NULL) {
      fprintf(stderr, "bench_process: %s\n", dlerror());
      return 1;
    }
  }
  bare_fork(t, runs);
  method(MPX_START_FORK, t, runs);
  method(MPX_START_FORKSERVER, t, runs);
  method(MPX_START_SPAWN, t, runs);
  free(t);
  return 0;
}
