/* The pipeline engine's failure paths, through the real `mpx` binary:
 * a plugin's error is retried `retries` times (and not at all when the
 * plugin says the failure is permanent), with truthful attempts and
 * retries; a stage's timeout holds per item, whatever the batch; a
 * stage left with no worker fails at once with the cause; SIGTERM ends
 * a run at once; the first SIGINT stops the source and finishes only
 * what is in workers, saying so, and a second one stops now. Every run
 * has a deadline far above what it needs: a run that hangs fails (its
 * exit -2000), and no worker may outlive its run. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* Workers seen while a run lasts. */
typedef struct {
  pid_t pid[512];
  int n;
} kids_t;

static void note_kids(pid_t pid, kids_t *k) {
  pid_t now[64];
  int m = cli_children(pid, now, 64, true);
  for (int i = 0; i < m; i++) {
    bool known = false;
    for (int j = 0; j < k->n && !known; j++) known = k->pid[j] == now[i];
    if (!known && k->n < 512) k->pid[k->n++] = now[i];
  }
}

/* Waits for pid, noting its workers, killing it after `deadline` s
 * (-2000); then checks its stderr for sanitizer reports. */
static int reap_watch(pid_t pid, double deadline, kids_t *k) {
  double end = mpx_test_now() + deadline;
  int st;
  for (;;) {
    note_kids(pid, k);
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1000;
    if (mpx_test_now() > end) {
      kill(pid, SIGKILL);
      mpx_test_wait_exit(pid);
      show_stderr();
      return -2000;
    }
    mpx_test_sleep(0.01);
  }
  no_sanitizer_report();
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* Waits until pid has `want` workers (or 20 s). */
static void await_workers(pid_t pid, int want, kids_t *k) {
  pid_t now[64];
  for (int t = 0; t < 2000 && cli_children(pid, now, 64, true) < want; t++) mpx_test_sleep(0.01);
  note_kids(pid, k);
}

/* How many of the workers seen are still running, after up to 5 s. */
static int kids_alive(const kids_t *k) { return cli_count_alive(k->pid, k->n, 500, 0.01); }

/* How often each int64 0..n-1 was printed (one per line); -1 on a line
 * that is not one. */
static int tally(int *seen, int n) {
  char *out = read_file("stdout", NULL), *p = out;
  int bad = 0;
  memset(seen, 0, sizeof *seen * (size_t)n);
  while (p && *p) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || v < 0 || v >= n) bad++;
    else seen[v]++;
    p = strchr(end, '\n');
    if (p) p++;
  }
  free(out);
  return bad;
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* The dead letter of int64 item x (its 8 bytes as the engine writes
 * them: printable ASCII as is, others as \u00XX), or NULL. */
static char *dead_letter_of(const char *dl, long x) {
  char want[128];
  int k = snprintf(want, sizeof want, "\"item\":\"");
  for (int i = 0; i < 8; i++) {
    unsigned c = (unsigned)((unsigned long)x >> (8 * i)) & 0xff;
    if (c >= 0x20 && c < 0x7f && c != '"' && c != '\\') want[k++] = (char)c;
    else k += snprintf(want + k, sizeof want - (size_t)k, "\\u%04x", c);
  }
  want[k] = '\0';
  const char *p = dl ? strstr(dl, want) : NULL;
  if (p == NULL) return NULL;
  while (p > dl && p[-1] != '\n') p--;
  const char *e = strchr(p, '\n');
  return strndup(p, e ? (size_t)(e - p) : strlen(p));
}

/* Starts `mpx run` of yaml (written to `name`), with --stats-json when
 * `stats`. */
static pid_t start_yaml(const char *name, const char *yaml, bool stats) {
  write_file(name, yaml);
  const char *args[] = {"run", in_dir(name), "--progress=never",
                        stats ? "--stats-json" : NULL, in_dir("stats.json"), NULL};
  return start_mpx(args);
}

static int run_yaml(const char *name, const char *yaml, double deadline, kids_t *k) {
  return reap_watch(start_yaml(name, yaml, true), deadline, k);
}

/* Once pid has its `workers` workers and `settle` s more have passed,
 * sends it sig. */
static void signal_after(pid_t pid, int workers, double settle, int sig, kids_t *k) {
  await_workers(pid, workers, k);
  mpx_test_sleep(settle);
  kill(pid, sig);
}

/* Once a worker of pid hangs in crashy's hang_on, sends it sig. */
static void signal_when_hung(pid_t pid, int sig, kids_t *k) {
  await_workers(pid, 1, k);
  CU_ASSERT_TRUE(cli_wait_worker_in(pid, cli_in_pause, 30));
  kill(pid, sig);
}

/* The run's exit code is `want` (else its stderr is shown). */
static void expect_rc(int rc, int want) {
  CU_ASSERT_EQUAL(rc, want);
  if (rc != want) show_stderr();
}

/* Every int64 0..n-1 was printed once, but the `nskip` in skip never, and
 * nothing else was. */
static void expect_printed_but(int n, const int *skip, int nskip) {
  int *seen = calloc((size_t)n, sizeof *seen);
  CU_ASSERT_EQUAL(tally(seen, n), 0);
  for (int x = 0; x < n; x++) {
    bool skipped = false;
    for (int i = 0; i < nskip; i++) skipped |= skip[i] == x;
    CU_ASSERT_EQUAL(seen[x], skipped ? 0 : 1);
  }
  free(seen);
}

/* Item x's dead letter in dl gives `why` and `attempts` (else the dead
 * letters are shown). */
static void expect_dead_letter(const char *dl, long x, const char *why, int attempts) {
  char *d = dead_letter_of(dl, x), want[64];
  snprintf(want, sizeof want, "\"attempts\":%d}", attempts);
  CU_ASSERT_PTR_NOT_NULL(d ? strstr(d, why) : NULL);
  CU_ASSERT_PTR_NOT_NULL(d ? strstr(d, want) : NULL);
  if (!d || !strstr(d, why) || !strstr(d, want))
    fprintf(stderr, "item %ld; dead letters:\n%s", x, dl ? dl : "");
  free(d);
}

/* Item 5 retried twice and then good; item 6 refused every time: three
 * attempts; item 7 refused for good: one attempt. */
static void test_plugin_error_retried(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\ndead_letter: %s/dead.jsonl\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 100}\n"
           "  - plugin: %s\n    name: flaky\n"
           "    params: {flaky_on: 5, flaky_times: 2, fail_on: 6, permanent_on: 7}\n"
           "    workers: 1\n    batch: 16\n    retries: 2\n"
           "  - plugin: print\n    params: {format: int64}\n",
           dir, FLAKY_SO);
  kids_t k = {0};
  expect_rc(run_yaml("flaky.yaml", yaml, 60, &k), 1);
  expect_printed_but(100, (const int[]){6, 7}, 2);
  char *dl = read_file("dead.jsonl", NULL);
  CU_ASSERT_EQUAL(count_of(dl, "\n"), 2);
  expect_dead_letter(dl, 6, "refusing 6", 3);
  expect_dead_letter(dl, 7, "bad input 7", 1);
  char *js = read_file("stats.json", NULL);
  CU_ASSERT_EQUAL(json_u64(js, "flaky", "retries"), 4); /* 2 for item 5, 2 for item 6 */
  CU_ASSERT_EQUAL(json_u64(js, "flaky", "failed"), 2);
  CU_ASSERT_EQUAL(json_u64(js, "flaky", "out"), 98);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  free(dl);
  free(js);
}

/* One batch of 200 items, item 40 hangs: with a timeout of 1 s per item
 * it is killed after about 1 s each try (not 1000 s: the batch size times
 * the timeout), tried twice (retries: 1), and every other item of its
 * batch comes out once. */
static void test_timeout_per_item(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\ndead_letter: %s/dead.jsonl\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 200}\n"
           "  - plugin: %s\n    name: crashy\n    params: {hang_on: 40}\n"
           "    workers: 1\n    batch: 1000\n    retries: 1\n    timeout: 1\n"
           "  - plugin: print\n    params: {format: int64}\n",
           dir, CRASHY_SO);
  kids_t k = {0};
  expect_rc(run_yaml("hang.yaml", yaml, 90, &k), 1);
  expect_printed_but(200, (const int[]){40}, 1);
  char *dl = read_file("dead.jsonl", NULL);
  CU_ASSERT_EQUAL(count_of(dl, "\n"), 1);
  expect_dead_letter(dl, 40, "timed out", 2);
  char *js = read_file("stats.json", NULL);
  CU_ASSERT_EQUAL(json_u64(js, "crashy", "failed"), 1);
  CU_ASSERT_EQUAL(json_u64(js, "crashy", "out"), 199);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  free(dl);
  free(js);
}

/* restart: temporary, both workers die on poisonous items: the stage has
 * no worker left and items pending, so the run fails at once, naming the
 * cause. */
static void test_temporary_no_worker_left(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\nsupervisor: {restart: temporary}\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 200}\n"
           "  - plugin: %s\n    name: crashy\n    params: {crash_mod: 50, crash_rem: 7}\n"
           "    workers: 2\n    batch: 4\n    retries: 0\n"
           "  - plugin: print\n    params: {format: int64}\n",
           CRASHY_SO);
  kids_t k = {0};
  int rc = run_yaml("temporary.yaml", yaml, 60, &k);
  CU_ASSERT_EQUAL(rc, 3);
  char *err = read_file("stderr", NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "no worker left") : NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "SIGSEGV") : NULL);
  if (rc != 3 || !err || !strstr(err, "no worker left")) show_stderr();
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  free(err);
}

/* A run whose worker hangs (no timeout) and one SIGTERM: it ends at once,
 * exit 3, saying why, its workers gone. */
static void test_sigterm_ends_hung_run(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 100}\n"
           "  - plugin: %s\n    name: crashy\n    params: {hang_on: 3}\n"
           "    workers: 1\n    batch: 1\n"
           "  - plugin: print\n    params: {format: int64}\n",
           CRASHY_SO);
  kids_t k = {0};
  pid_t pid = start_yaml("hung.yaml", yaml, false);
  signal_when_hung(pid, SIGTERM, &k);
  expect_rc(reap_watch(pid, 30, &k), 3);
  char *err = read_file("stderr", NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "SIGTERM") : NULL);
  CU_ASSERT_TRUE(k.n >= 1);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  free(err);
}

/* The first SIGINT: the source stops, what waits for a worker is dropped,
 * what is in workers (2 per worker, batch 1) finishes and is printed; one
 * line says so. Draining all that was queued would take over 50 s. */
static void test_sigint_stops_source(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\nqueue_capacity: 512\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 100000000}\n"
           "  - plugin: %s\n    name: crashy\n    params: {delay_ms: 200}\n"
           "    workers: 2\n    batch: 1\n"
           "  - plugin: print\n    params: {format: int64}\n",
           CRASHY_SO);
  kids_t k = {0};
  pid_t pid = start_yaml("slow.yaml", yaml, true);
  signal_after(pid, 2, 1.5, SIGINT, &k);
  int rc = reap_watch(pid, 40, &k);
  CU_ASSERT_EQUAL(rc, 3);
  char *err = read_file("stderr", NULL);
  CU_ASSERT_EQUAL(count_of(err, "Ctrl-C again"), 1);
  if (rc != 3 || count_of(err, "Ctrl-C again") != 1) show_stderr();
  char *js = read_file("stats.json", NULL), *out = read_file("stdout", NULL);
  uint64_t in = json_u64(js, "crashy", "in"), done = json_u64(js, "crashy", "out");
  CU_ASSERT_PTR_NOT_NULL(js ? strstr(js, "\"interrupted\":true") : NULL);
  CU_ASSERT_TRUE(in != UINT64_MAX && in >= 300); /* the queue was full */
  CU_ASSERT_TRUE(done > 0 && done + 200 < in);   /* most of it never ran */
  CU_ASSERT_EQUAL((uint64_t)count_of(out, "\n"), done);
  CU_ASSERT_EQUAL(json_u64(js, "print", "in"), done);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  free(err);
  free(js);
  free(out);
}

/* A hung item in a worker: the first SIGINT cannot finish it; the second
 * stops the run now. */
static void test_second_sigint_stops_now(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\nstages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 100}\n"
           "  - plugin: %s\n    name: crashy\n    params: {hang_on: 2}\n"
           "    workers: 1\n    batch: 1\n"
           "  - plugin: print\n    params: {format: int64}\n",
           CRASHY_SO);
  kids_t k = {0};
  pid_t pid = start_yaml("hung2.yaml", yaml, false);
  signal_when_hung(pid, SIGINT, &k);
  /* the notice comes, and the run goes on: item 2 never ends */
  char *err = NULL;
  for (int t = 0; t < 2000 && count_of(err, "Ctrl-C again") == 0; t++) {
    free(err);
    mpx_test_sleep(0.01);
    err = read_file("stderr", NULL);
  }
  CU_ASSERT_EQUAL(count_of(err, "Ctrl-C again"), 1);
  free(err);
  CU_ASSERT_EQUAL(waitpid(pid, NULL, WNOHANG), 0);
  kill(pid, SIGINT);
  expect_rc(reap_watch(pid, 30, &k), 3);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
}

static int suite_init(void) { return cli_mkdir("/tmp/mpx-faults-XXXXXX"); }


/* A partition's fold that fails fails the run (exit 3), naming the stage
 * and the partition; the same plugin without the failure sums 0..999 in
 * its partitions exactly, with nothing left running. */
static void test_partition_fold_fails(void) {
  char yaml[1024];
  const char *fmt = "defaults: {codec: raw}\nstages:\n"
                    "  - plugin: range\n    params: {start: 0, stop: 1000}\n"
                    "  - plugin: %s\n    name: sum\n    workers: 2\n    batch: 100\n"
                    "    partition_by: key\n    partitions: 2\n    params: {fail_above: %d}\n"
                    "  - plugin: print\n    params: {format: int64}\n";
  kids_t k = {0};
  snprintf(yaml, sizeof yaml, fmt, FOLDFAIL_SO, -1);
  expect_rc(run_yaml("sum.yaml", yaml, 60, &k), 0);
  char *out = read_file("stdout", NULL);
  /* Partition 0 has every partial: 499500; partition 1 none: 0. */
  CU_ASSERT_TRUE(out && strcmp(out, "499500\n0\n") && strcmp(out, "0\n499500\n") ? false : true);
  free(out);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
  snprintf(yaml, sizeof yaml, fmt, FOLDFAIL_SO, 0);
  expect_rc(run_yaml("sumfail.yaml", yaml, 60, &k), 3);
  char *err = read_file("stderr", NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "stage 'sum' (partition 0 of 2)") : NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, "refusing a partial of sum") : NULL);
  if (!err || !strstr(err, "(partition 0 of 2)")) fprintf(stderr, "stderr: %s\n", err);
  free(err);
  CU_ASSERT_EQUAL(kids_alive(&k), 0);
}

MPX_TEST_MAIN_FIXTURE("engine_faults", suite_init, cli_rmdir, MPX_TEST(test_plugin_error_retried),
                      MPX_TEST(test_partition_fold_fails),
              MPX_TEST(test_timeout_per_item), MPX_TEST(test_temporary_no_worker_left),
              MPX_TEST(test_sigterm_ends_hung_run), MPX_TEST(test_sigint_stops_source),
              MPX_TEST(test_second_sigint_stops_now))
