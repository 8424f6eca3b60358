/* The `mpx` command end to end, through the real binary: the primes
 * pipeline's sums in order, a plugin that crashes or hangs on chosen
 * items (those dead-lettered with the cause, every other output exactly
 * once, exit 1), configuration errors (exit 2 with FILE:LINE:COL or the
 * plugin's path), SIGINT finishing what is in workers, and a SIGKILLed `mpx run` leaving no
 * worker behind. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

static long long sum_primes(long n) {
  long long s = 0;
  for (long x = 2; x < n; x++) {
    long m = (long)ceil(sqrt((double)x)), i;
    int p = 1;
    if (x > 2)
      for (i = 2; i <= m; i++)
        if (x % i == 0) {
          p = 0;
          break;
        }
    if (p) s += x;
  }
  return s;
}

static void test_primes_in_order(void) {
  const char *args[] = {"run", EXAMPLES "/primes.yaml", "--set", "range.stop=1000000",
                        "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  char *out = read_file("stdout", NULL), *p = out;
  int k = 0;
  for (long n = 100000; n < 1000000; n += 100000, k++) {
    char *end;
    long long v = p ? strtoll(p, &end, 10) : -1;
    CU_ASSERT_EQUAL(v, sum_primes(n));
    if (p) p = *end == '\n' ? end + 1 : NULL;
  }
  CU_ASSERT_TRUE(p != NULL && *p == '\0');
  if (rc != 0) show_stderr();
  free(out);
}

/* --progress=always (stderr is no terminal here): the last progress line
 * says 100% for a source that knows its size (range, here and in parts),
 * names every stage with its count, and ends with a newline before the
 * summary. */
static void test_progress_line(void) {
  const char *serial[] = {"run", EXAMPLES "/primes.yaml", "--set", "range.stop=300000",
                          "--progress=always", NULL};
  const char *want[] = {"range 2 | primes 2 | print 2  ", ", 100%   \n"};
  CU_ASSERT_EQUAL(run_mpx(serial), 0);
  char *err = read_file("stderr", NULL);
  char *last = err ? strrchr(err, '\r') : NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(last);
  CU_ASSERT_EQUAL(strncmp(last + 1, want[0], strlen(want[0])), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(last, want[1]));
  CU_ASSERT_PTR_NULL(strstr(last, "ETA")); /* not at the end */
  free(err);
  char yaml[512];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\nstages:\n"
           "  - plugin: range\n    params: {stop: 5000}\n    workers: 2\n"
           "  - plugin: checksum\n    workers: 2\n  - plugin: print\n    params: {format: hex}\n");
  write_file("parts.yaml", yaml);
  const char *parts[] = {"run", in_dir("parts.yaml"), "--progress=always", NULL};
  CU_ASSERT_EQUAL(run_mpx(parts), 0);
  err = read_file("stderr", NULL);
  last = err ? strrchr(err, '\r') : NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(last);
  CU_ASSERT_EQUAL(strncmp(last + 1, "range 5000 | checksum 5000 | print 5000  ", 41), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(last, ", 100%   \n"));
  free(err);
}

static void test_crash_and_hang_dead_lettered(void) {
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "name: crashy\n"
           "defaults: {codec: raw}\n"
           "dead_letter: %s/dead.jsonl\n"
           "supervisor: {max_restarts: 1000, period: 10, backoff_min: 0.001, backoff_max: 0.01}\n"
           "stages:\n"
           "  - plugin: range\n"
           "    params: {start: 0, stop: 300}\n"
           "  - plugin: %s\n"
           "    params: {crash_mod: 50, crash_rem: 7, hang_on: 123, fail_on: 200}\n"
           "    workers: 2\n"
           "    batch: 16\n"
           "    retries: 1\n"
           "    timeout: 0.3\n"
           "  - plugin: print\n"
           "    params: {format: int64}\n",
           dir, CRASHY_SO);
  write_file("crashy.yaml", yaml);
  char file[512];
  snprintf(file, sizeof file, "%s/crashy.yaml", dir);
  const char *args[] = {"run", file, "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 1);
  if (rc != 1) show_stderr();
  /* every good item exactly once */
  char *out = read_file("stdout", NULL), *p = out;
  int seen[300] = {0}, bad = 0;
  while (p && *p) {
    long v = strtol(p, &p, 10);
    if (v >= 0 && v < 300) seen[v]++;
    else bad++;
    if (*p == '\n') p++;
  }
  int good = 0, poison_seen = 0;
  for (int x = 0; x < 300; x++) {
    bool poison = x % 50 == 7 || x == 123 || x == 200;
    if (poison) poison_seen += seen[x];
    else good += seen[x] == 1;
  }
  CU_ASSERT_EQUAL(good, 300 - 6 - 2);
  CU_ASSERT_EQUAL(poison_seen, 0);
  CU_ASSERT_EQUAL(bad, 0);
  /* the dead letters: the 8 poisonous items, with their causes */
  char *dl = read_file("dead.jsonl", NULL);
  int lines = 0;
  for (char *q = dl; q && *q; q++) lines += *q == '\n';
  CU_ASSERT_EQUAL(lines, 8);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "SIGSEGV") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "timed out") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "refusing 200") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "\"stage\":\"crashy\"") : NULL);
  free(out);
  free(dl);
}


static void test_config_errors(void) {
  expect_config_error("syntax.yaml", "stages:\n  - plugin: range\n   params: [\n",
                      "syntax.yaml:3:");
  expect_config_error("unknown.yaml",
                      "stages:\n  - plugin: range\n    params: {stop: 3}\n    wokers: 2\n"
                      "  - plugin: print\n",
                      "unknown.yaml:4:5: unknown key 'wokers'");
  expect_config_error("param.yaml",
                      "stages:\n  - plugin: range\n    params: {stop: ten}\n  - plugin: print\n",
                      "param.yaml:3:20: plugin 'range': parameter 'stop' must be an integer");
  expect_config_error("noplugin.yaml", "stages:\n  - plugin: nope\n  - plugin: print\n",
                      "noplugin.yaml:2:13:");
  char yaml[1024];
  snprintf(yaml, sizeof yaml, "stages:\n  - plugin: range\n    params: {stop: 3}\n"
                              "  - plugin: %s\n  - plugin: print\n", NODESC_SO);
  expect_config_error("nodesc.yaml", yaml, NODESC_SO);
  expect_config_error("order.yaml", "stages:\n  - plugin: print\n  - plugin: range\n",
                      "the first stage must be a source");
}

static void test_version_and_plugins(void) {
  const char *v[] = {"version", NULL};
  CU_ASSERT_EQUAL(run_mpx(v), 0);
  const char *l[] = {"plugins", NULL};
  CU_ASSERT_EQUAL(run_mpx(l), 0);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "primes") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "msgpack") : NULL);
  free(out);
  const char *one[] = {"plugins", "range", NULL};
  CU_ASSERT_EQUAL(run_mpx(one), 0);
  out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "stop") : NULL);
  free(out);
  const char *bad[] = {"frobnicate", NULL};
  CU_ASSERT_EQUAL(run_mpx(bad), 2);
}


static const char *slow_yaml(void) {
  static char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 100000000}\n"
           "  - plugin: %s\n    params: {delay_ms: 2}\n    workers: 2\n    batch: 4\n"
           "  - plugin: print\n    params: {format: int64}\n",
           CRASHY_SO);
  return yaml;
}

static void test_sigint_finishes_workers(void) {
  write_file("slow.yaml", slow_yaml());
  char file[512], json[512];
  snprintf(file, sizeof file, "%s/slow.yaml", dir);
  snprintf(json, sizeof json, "%s/stats.json", dir);
  const char *args[] = {"run", file, "--progress=never", "--stats-json", json, NULL};
  pid_t pid = start_mpx(args);
  /* Interrupted while a worker holds items (crashy sleeps its delay_ms
   * on one). */
  CU_ASSERT_TRUE(cli_wait_worker_in(pid, mpx_test_in_nanosleep, 30));
  kill(pid, SIGINT);
  int rc = mpx_test_wait_exit(pid);
  CU_ASSERT_EQUAL(rc, 3); /* interrupted: not all done */
  /* what was in workers finished and went all the way through; what was
   * not (the rest of what the source emitted) was dropped */
  char *out = read_file("stdout", NULL);
  long lines = 0;
  for (char *q = out; q && *q; q++) lines += *q == '\n';
  char *js = read_file("stats.json", NULL);
  char *src = js ? strstr(js, "\"out\":") : NULL;
  long emitted = src ? atol(src + 6) : -1;
  char *print = js ? strstr(js, "\"name\":\"print\"") : NULL;
  char *pin = print ? strstr(print, "\"in\":") : NULL;
  CU_ASSERT_TRUE(emitted > 0);
  CU_ASSERT_TRUE(lines > 0 && lines <= emitted);
  CU_ASSERT_EQUAL(lines, pin ? atol(pin + 5) : -1);
  CU_ASSERT_PTR_NOT_NULL(js ? strstr(js, "\"interrupted\":true") : NULL);
  free(out);
  free(js);
}

static void test_sigkill_leaves_no_worker(void) {
  write_file("slow.yaml", slow_yaml());
  char file[512];
  snprintf(file, sizeof file, "%s/slow.yaml", dir);
  const char *args[] = {"run", file, "--progress=never", NULL};
  pid_t pid = start_mpx(args);
  pid_t kids[16];
  int n = 0;
  for (int t = 0; t < 100 && n < 2; t++) {
    mpx_test_sleep(0.05);
    n = cli_children(pid, kids, 16, false);
  }
  CU_ASSERT_TRUE(n >= 2);
  kill(pid, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  CU_ASSERT_EQUAL(cli_count_alive(kids, n, 100, 0.05), 0);
}

static int suite_init(void) { return cli_mkdir("/tmp/mpx-test-XXXXXX"); }

MPX_TEST_MAIN_FIXTURE("mpx_cli", suite_init, cli_rmdir, MPX_TEST(test_primes_in_order),
              MPX_TEST(test_progress_line),
              MPX_TEST(test_crash_and_hang_dead_lettered), MPX_TEST(test_config_errors),
              MPX_TEST(test_version_and_plugins), MPX_TEST(test_sigint_finishes_workers),
              MPX_TEST(test_sigkill_leaves_no_worker))
