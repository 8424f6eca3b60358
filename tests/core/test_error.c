/* Tests of error codes, mpx_last_error and logging. */
#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>

#include "../mpx_test.h"
#include <mpx.h>

static void test_codes_mirror_errno(void) {
  CU_ASSERT_EQUAL(MPX_ETIMEDOUT, -ETIMEDOUT);
  CU_ASSERT_EQUAL(MPX_ENOENT, -ENOENT);
  CU_ASSERT_EQUAL(MPX_EOWNERDEAD, -EOWNERDEAD);
  CU_ASSERT(MPX_EWORKER < -4000 + 1 && MPX_EWORKER > -5000);
}

static void test_names_and_messages(void) {
  CU_ASSERT_STRING_EQUAL(mpx_err_name(MPX_ETIMEDOUT), "ETIMEDOUT");
  CU_ASSERT_STRING_EQUAL(mpx_strerror(MPX_ETIMEDOUT), "timed out");
  CU_ASSERT_STRING_EQUAL(mpx_err_name(MPX_EWORKER), "EWORKER");
  CU_ASSERT_STRING_EQUAL(mpx_strerror(MPX_EWORKER), "worker process died");
  CU_ASSERT_STRING_EQUAL(mpx_err_name(MPX_EAUTH), "EAUTH");
  CU_ASSERT_STRING_EQUAL(mpx_err_name(MPX_ECONFIG), "ECONFIG");
  CU_ASSERT_STRING_EQUAL(mpx_err_name(0), "OK");
  CU_ASSERT_STRING_EQUAL(mpx_strerror(-99999), "unknown error");
  CU_ASSERT_STRING_EQUAL(mpx_err_name(-99999), "EUNKNOWN");
}

static void test_every_code_is_named(void) {
  /* The table has no gaps or duplicate values. */
#define XX(name, msg) CU_ASSERT_STRING_EQUAL(mpx_err_name(MPX_##name), #name);
  MPX_ERRNO_MAP(XX)
#undef XX
#define XX(name, val, msg) CU_ASSERT_STRING_EQUAL(mpx_err_name(val), #name);
  MPX_OWN_ERR_MAP(XX)
#undef XX
}

static void test_last_error(void) {
  mpx_log_level_t lvl;
  CU_ASSERT_EQUAL(mpx_log_parse_level("loud", &lvl), MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "'loud'"));
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "invalid argument"));
  /* Per thread: a success does not clear it. */
  CU_ASSERT_EQUAL(mpx_log_parse_level("debug", &lvl), 0);
  CU_ASSERT_EQUAL(lvl, MPX_LOG_DEBUG);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "'loud'"));
}

static char captured[4][512];
static int ncaptured;

static void capture(void *user, mpx_log_level_t level, const char *line) {
  (void)user;
  if (ncaptured < 4)
    snprintf(captured[ncaptured++], sizeof captured[0], "%d|%s", (int)level,
             line);
}

static void test_log_handler_and_levels(void) {
  char want[64];
  mpx_log_set_handler(capture, NULL);
  mpx_log_set_level(MPX_LOG_INFO);
  mpx_log(MPX_LOG_DEBUG, "hidden %d", 1);
  mpx_log(MPX_LOG_INFO, "shown %d", 2);
  mpx_log(MPX_LOG_ERROR, "bad %s", "thing");
  mpx_log_set_handler(NULL, NULL);
  CU_ASSERT_EQUAL(ncaptured, 2);
  snprintf(want, sizeof want, " MainProcess[%d] shown 2", (int)getpid());
  CU_ASSERT_PTR_NOT_NULL(strstr(captured[0], want));
  CU_ASSERT_EQUAL(strncmp(captured[0], "3|", 2), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(captured[0], "INFO"));
  CU_ASSERT_PTR_NOT_NULL(strstr(captured[1], "ERROR"));
  CU_ASSERT_PTR_NOT_NULL(strstr(captured[1], "bad thing"));
}

static void test_log_env(void) {
  /* MPX_LOG is read by a fresh process: run one. */
  char exe[512], cmd[1200], out[8192];
  ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
  size_t n;
  FILE *f;
  CU_ASSERT_FATAL(k > 0);
  exe[k] = '\0';
  snprintf(cmd, sizeof cmd,
           "MPX_LOG=trace '%s' log_env_child 2>&1; "
           "MPX_LOG=error '%s' log_env_child 2>&1", exe, exe);
  f = popen(cmd, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  n = fread(out, 1, sizeof out - 1, f);
  out[n] = '\0';
  pclose(f);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "level=5"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "level=1"));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "TRACE MainProcess["));
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "trace line"));
  /* Only the trace run printed it. */
  CU_ASSERT_PTR_NULL(strstr(strstr(out, "trace line") + 1, "trace line"));
}

/* Not a test: the child of test_log_env. */
static void log_env_child(void) {
  printf("level=%d\n", (int)mpx_log_get_level());
  fflush(stdout);
  mpx_log(MPX_LOG_TRACE, "trace line");
}

static void test_version(void) {
  CU_ASSERT_EQUAL(mpx_version(), MPX_VERSION_HEX);
  CU_ASSERT_STRING_EQUAL(mpx_version_string(), "0.1.0");
}

int main(int argc, char **argv) {
  static const mpx_test_t tests[] = {
      MPX_TEST(test_codes_mirror_errno), MPX_TEST(test_names_and_messages),
      MPX_TEST(test_every_code_is_named), MPX_TEST(test_last_error),
      MPX_TEST(test_log_handler_and_levels), MPX_TEST(test_log_env),
      MPX_TEST(test_version), {NULL, NULL}};
  if (argc == 2 && strcmp(argv[1], "log_env_child") == 0) {
    log_env_child();
    return 0;
  }
  return mpx_test_main(argc, argv, "error", tests);
}
