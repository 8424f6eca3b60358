/* A thin layer over CUnit shared by the mpx test suites.
 *
 * Each suite is one executable that ctest runs in its own process with a
 * timeout, so a crash or a hang fails that suite and never the whole run.
 * `test_SUITE NAME` runs that one test alone: a suite's shared state is
 * made by its init and removed by its cleanup (MPX_TEST_MAIN_FIXTURE),
 * never by a test that must run first.
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
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

typedef struct {
  const char *name;
  void (*fn)(void);
} mpx_test_t;

#define MPX_TEST(fn) {#fn, fn}

/* A suite that links libmpx statically finds no codec plugins next to a
 * libmpx.so: unless MPX_PLUGIN_PATH says otherwise, point the loader at
 * <build>/plugins (the suite is <build>/tests/test_NAME). */
static inline void mpx_test_plugin_path(void) {
  char exe[4096], *slash;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 32);
  if (getenv("MPX_PLUGIN_PATH") != NULL || n <= 0) return;
  exe[n] = '\0';
  for (int i = 0; i < 2 && (slash = strrchr(exe, '/')) != NULL; i++) *slash = '\0';
  strcat(exe, "/plugins");
  setenv("MPX_PLUGIN_PATH", exe, 1);
}

/* All that fd yields until end of file (a pipe, or a file from where it
 * is), NUL-terminated; its length in *len unless len is NULL. The caller
 * frees; NULL when out of memory. */
static inline char *mpx_test_read_all(int fd, size_t *len) {
  size_t cap = 4096, n = 0;
  char *b = malloc(cap + 1);
  ssize_t k;
  while (b && (k = read(fd, b + n, cap - n)) > 0) {
    n += (size_t)k;
    if (n == cap) {
      char *nb = realloc(b, 2 * cap + 1);
      if (nb == NULL) break;
      b = nb;
      cap *= 2;
    }
  }
  if (b) b[n] = '\0';
  if (len) *len = n;
  return b;
}

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

/* Runs the suite's tests, or with an argument only the test of that name,
 * between init and cleanup (either may be NULL; each returns 0 on
 * success). A failed init runs no test; a failed init or cleanup fails
 * the run as a failed test does. */
static inline int mpx_test_main_fixture(int argc, char **argv, const char *suite_name,
                                        int (*init)(void), int (*cleanup)(void),
                                        const mpx_test_t *tests) {
  CU_pSuite suite;
  unsigned failures;
  const char *only = argc > 1 ? argv[1] : NULL;
  int found = 0;

  if (CU_initialize_registry() != CUE_SUCCESS) return 2;
  suite = CU_add_suite(suite_name, init, cleanup);
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
  failures = CU_get_number_of_tests_failed() + CU_get_number_of_suites_failed();
  CU_cleanup_registry();
  return failures ? 1 : 0;
}

static inline int mpx_test_main(int argc, char **argv, const char *suite_name,
                                const mpx_test_t *tests) {
  return mpx_test_main_fixture(argc, argv, suite_name, NULL, NULL, tests);
}

#define MPX_TEST_MAIN(suite, ...)                                            \
  int main(int argc, char **argv) {                                          \
    static const mpx_test_t tests_[] = {__VA_ARGS__, {NULL, NULL}};          \
    return mpx_test_main(argc, argv, suite, tests_);                         \
  }

/* A suite with shared state: init makes it before the first test that
 * runs, cleanup removes it after the last. */
#define MPX_TEST_MAIN_FIXTURE(suite, init, cleanup, ...)                     \
  int main(int argc, char **argv) {                                          \
    static const mpx_test_t tests_[] = {__VA_ARGS__, {NULL, NULL}};          \
    return mpx_test_main_fixture(argc, argv, suite, init, cleanup, tests_);  \
  }

/* What thread (or process) tid sleeps in: the number of the system call
 * from /proc/TID/syscall, which names it while the task sleeps (-1 while
 * it runs, or when there is no such task); where that may not be read
 * (Yama forbids a child to read its parent's), -2, and the kernel function
 * it sleeps in, from /proc/TID/wchan, in wchan. */
static inline long mpx_test_sleeping_in(pid_t tid, char *wchan, size_t size) {
  char path[64];
  FILE *f;
  long nr = -1;
  wchan[0] = '\0';
  snprintf(path, sizeof path, "/proc/%d/syscall", (int)tid);
  if ((f = fopen(path, "r")) == NULL) return -1;
  int n = fscanf(f, "%ld", &nr);
  int err = ferror(f);
  fclose(f);
  if (!err) return n == 1 ? nr : -1;
  snprintf(path, sizeof path, "/proc/%d/wchan", (int)tid);
  if ((f = fopen(path, "r")) == NULL) return -1;
  size_t got = fread(wchan, 1, size - 1, f);
  fclose(f);
  wchan[got] = '\0';
  return -2;
}

/* Whether tid sleeps in a futex wait, where every mpx lock, semaphore,
 * condition and queue sleeps. */
static inline int mpx_test_in_futex(pid_t tid) {
  char w[128];
  long nr = mpx_test_sleeping_in(tid, w, sizeof w);
  return nr == SYS_futex || (nr == -2 && strstr(w, "futex") != NULL);
}

/* Whether tid sleeps in nanosleep (mpx_test_sleep, mpx_test_sleepy). */
static inline int mpx_test_in_nanosleep(pid_t tid) {
  char w[128];
  long nr = mpx_test_sleeping_in(tid, w, sizeof w);
#ifdef SYS_nanosleep
  if (nr == SYS_nanosleep) return 1;
#endif
  return nr == SYS_clock_nanosleep || (nr == -2 && strstr(w, "nanosleep") != NULL);
}

/* Whether tid sleeps in the kernel, in whatever call ('S' in its stat). */
static inline int mpx_test_asleep(pid_t tid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)tid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return 0;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  char *p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' && p[2] == 'S';
}

/* Waits until asleep(tid) (one of the three above): 1, or 0 after
 * `timeout` s. */
static inline int mpx_test_wait_until(int (*asleep)(pid_t), pid_t tid, double timeout) {
  double end = mpx_test_now() + timeout;
  while (!asleep(tid)) {
    if (mpx_test_now() > end) return 0;
    mpx_test_sleep(0.0005);
  }
  return 1;
}

/* Waits until tid sleeps in a futex wait: 1, or 0 after `timeout` s. */
static inline int mpx_test_wait_futex(pid_t tid, double timeout) {
  return mpx_test_wait_until(mpx_test_in_futex, tid, timeout);
}

#ifdef MPX_POOL_H
/* Pool tasks that several suites use (include mpx.h first). The worker's
 * pid, as an int32. */
static inline int mpx_test_pid_task(mpx_task_t *t, const void *in, size_t len) {
  (void)in, (void)len;
  int32_t pid = getpid();
  return mpx_task_result(t, &pid, sizeof pid);
}

/* Sleeps the double it is given, in seconds, and returns it. */
static inline int mpx_test_sleepy(mpx_task_t *t, const void *in, size_t len) {
  double s;
  memcpy(&s, in, sizeof s);
  (void)len;
  mpx_test_sleep(s);
  return mpx_task_result(t, &s, sizeof s);
}
#endif

#endif /* MPX_TEST_H */
