/* A thin layer over CUnit shared by the mpx test suites.
 *
 * Each suite is one executable that ctest runs in its own process with a
 * timeout, so a crash or a hang fails that suite and never the whole run.
 * `suite NAME` runs one test only.
 *
 * Multi-process tests assert in the parent only: children report through
 * their exit codes or pipes. */
#ifndef MPX_TEST_H
#define MPX_TEST_H

#include <CUnit/Basic.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>

typedef struct {
  const char *name;
  void (*fn)(void);
} mpx_test_t;

#define MPX_TEST(fn) {#fn, fn}

/* Reaps a child: its exit code, minus the signal number that killed it,
 * or -1000 when waitpid fails. */
static inline int mpx_test_wait_exit(pid_t pid) {
  int st;
  if (waitpid(pid, &st, 0) != pid) return -1000;
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* Monotonic seconds, and a sleep that finishes after a signal. */
static inline double mpx_test_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void mpx_test_sleep(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* Reaps a child, killing it when it has not exited within `timeout`: its
 * exit code, minus the signal that killed it, -1000 when waitpid fails, or
 * -2000 when it had to be killed. */
static inline int mpx_test_reap(pid_t pid, double timeout) {
  double end = mpx_test_now() + timeout;
  int st;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    if (r < 0) return -1000;
    if (mpx_test_now() > end) {
      kill(pid, SIGKILL);
      mpx_test_wait_exit(pid);
      return -2000;
    }
    mpx_test_sleep(0.002);
  }
}

/* Payloads the suites check byte for byte: byte j of pattern `seed` is
 * j * 7 + seed (py_conn.py uses the same). mpx_test_pattern's buffer is
 * the caller's to free; one byte more than n is allocated. */
static inline void mpx_test_fill_pattern(uint8_t *p, size_t n, unsigned seed) {
  for (size_t j = 0; j < n; j++) p[j] = (uint8_t)(j * 7 + seed);
}

static inline uint8_t *mpx_test_pattern(size_t n, unsigned seed) {
  uint8_t *p = malloc(n + 1);
  if (p) mpx_test_fill_pattern(p, n, seed);
  return p;
}

static inline int mpx_test_pattern_ok(const void *buf, size_t n, size_t want,
                                      unsigned seed) {
  const uint8_t *p = buf;
  if (n != want) return 0;
  for (size_t j = 0; j < n; j++)
    if (p[j] != (uint8_t)(j * 7 + seed)) return 0;
  return 1;
}

static inline int mpx_test_main(int argc, char **argv, const char *suite_name,
                                const mpx_test_t *tests) {
  CU_pSuite suite;
  unsigned failures;
  const char *only = argc > 1 ? argv[1] : NULL;
  int found = 0;

  if (CU_initialize_registry() != CUE_SUCCESS) return 2;
  suite = CU_add_suite(suite_name, NULL, NULL);
  for (; tests->name != NULL; tests++) {
    if (only != NULL && strcmp(only, tests->name) != 0) continue;
    CU_add_test(suite, tests->name, tests->fn);
    found++;
  }
  if (found == 0) {
    fprintf(stderr, "%s: no test named '%s'\n", suite_name, only);
    CU_cleanup_registry();
    return 2;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  failures = CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failures ? 1 : 0;
}

#define MPX_TEST_MAIN(suite, ...)                                            \
  int main(int argc, char **argv) {                                          \
    static const mpx_test_t tests_[] = {__VA_ARGS__, {NULL, NULL}};          \
    return mpx_test_main(argc, argv, suite, tests_);                         \
  }

#endif /* MPX_TEST_H */
