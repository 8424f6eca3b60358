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
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>

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
