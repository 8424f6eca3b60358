/* Keyed partitions end to end, through the real `mpx` binary:
 *
 *   - a partitioned wordcount (`partition_by: key`) over a generated
 *     text of 2,000,000 distinct words, each 1 to 3 times, with 2 workers
 *     and 1, 2 or 3 partitions: its lines, sorted, are those of
 *     tr -s ' ' '\n' | LC_ALL=C sort | uniq -c, as "COUNT WORD";
 *   - the same run while a thread SIGKILLs the run's workers every 50 to
 *     100 ms (at least 10 kills): the same output, exit 0, and afterwards
 *     no process of the run is left and no /dev/shm segment it had open;
 *   - a partitioned `aggregate` over generated "city;temperature" lines
 *     (400 cities, 1 M lines) equals an LC_ALL=C awk oracle, with 2 and
 *     3 partitions and unpartitioned.
 *
 * Each partition emits its own final output, sorted on its own, so the
 * outputs are compared sorted. Each run has a time limit (a hang fails
 * the test, it does not stall the suite), never a speed to meet. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* A run that has not ended after this long is killed and fails. */
#define RUN_LIMIT 100.0

/* Whether mpx's stdout, sorted bytewise, is the file `want_sorted` in dir
 * (sorted already), showing the first differences when not. */
static bool stdout_sorted_is(const char *want_sorted) {
  int rc = sh("LC_ALL=C sort '%s' > '%s' && cmp -s '%s' '%s'", in_dir("stdout"),
              in_dir("stdout.sorted"), in_dir("stdout.sorted"), in_dir(want_sorted));
  if (rc != 0) {
    fprintf(stderr, "--- mpx's output (sorted) differs from %s (< oracle, > mpx):\n",
            want_sorted);
    sh("diff '%s' '%s' | head -10 >&2", in_dir(want_sorted), in_dir("stdout.sorted"));
  }
  return rc == 0;
}

/* Waits for pid up to RUN_LIMIT s (then kills it: -2000), checks its
 * stderr for sanitizer reports, shows it unless the exit code is 0. */
static int finish_within(pid_t pid) {
  int rc = mpx_test_reap(pid, RUN_LIMIT);
  no_sanitizer_report();
  if (rc == -2000) fprintf(stderr, "mpx run did not end within %.0f s: killed\n", RUN_LIMIT);
  if (rc != 0) show_stderr();
  return rc;
}

static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
  return rng_state >> 33;
}

/* ---- 2 million distinct words ----------------------------------------------------- */

#define N_WORDS 2000000u

/* Word i: i in bijective base 62 over [0-9A-Za-z], 1 to 4 characters, all
 * of them characters of a wordcount word (docs/plugins.md). */
static int word_of(uint32_t i, char *out) {
  static const char digits[] =
      "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
  uint64_t span = 62;
  int len = 1;
  while (i >= span) {
    i -= (uint32_t)span;
    span *= 62;
    len++;
  }
  for (int k = len - 1; k >= 0; k--) {
    out[k] = digits[i % 62];
    i /= 62;
  }
  out[len] = '\0';
  return len;
}

/* How often word i appears: 1 to 3 (a mix of i's bits). */
static unsigned times_of(uint32_t i) {
  uint64_t h = (uint64_t)i * 0x9e3779b97f4a7c15u;
  return 1 + (unsigned)((h >> 40) % 3);
}

static bool words_made;
static uint64_t words_total;

/* dir/words.txt and its oracle dir/words.want (sorted): three passes over
 * the words, each in its own order (i -> (i * A + B) mod N, A prime to
 * N), pass p writing the words that appear more than p times, so a word's
 * occurrences lie far apart in the file. Lines of 1 to 16 words, one
 * space apart. About 19 MB. */
static bool make_words(void) {
  static const uint64_t mul[3] = {7919, 104729, 1299709}, add[3] = {0, 1234567, 777};
  if (words_made) return true;
  FILE *f = fopen(in_dir("words.txt"), "w");
  if (!f) return false;
  char w[8];
  uint64_t total = 0;
  unsigned on_line = 0, line_len = 1;
  rng_state = 17;
  for (int p = 0; p < 3; p++)
    for (uint64_t k = 0; k < N_WORDS; k++) {
      uint32_t i = (uint32_t)((k * mul[p] + add[p]) % N_WORDS);
      if (times_of(i) <= (unsigned)p) continue;
      word_of(i, w);
      fputs(w, f);
      total++;
      if (++on_line == line_len) {
        fputc('\n', f);
        on_line = 0;
        line_len = 1 + (unsigned)(rnd() % 16);
      } else {
        fputc(' ', f);
      }
    }
  if (on_line) fputc('\n', f);
  fclose(f);
  double t0 = mpx_test_now();
  if (sh("export LC_ALL=C; tr -s ' ' '\\n' < '%s' | sort | uniq -c | awk '{print $1, $2}' | "
         "sort > '%s'",
         in_dir("words.txt"), in_dir("words.want")) != 0)
    return false;
  printf("\n  oracle (tr | sort | uniq -c): %.1f s, %" PRIu64 " words ", mpx_test_now() - t0,
         total);
  words_total = total;
  words_made = true;
  return true;
}

/* The oracle is what was generated: N_WORDS lines whose counts add up to
 * the words written (checked here, so that the oracle cannot be empty or
 * short). */
static void test_words_oracle(void) {
  CU_ASSERT_FATAL(make_words());
  CU_ASSERT_EQUAL(count_lines_of("words.want"), (long)N_WORDS);
  CU_ASSERT_EQUAL(sh("awk '{ s += $1 } END { exit s == %" PRIu64 " ? 0 : 1 }' '%s'",
                     words_total, in_dir("words.want")),
                  0);
  /* counts are 1, 2 and 3 only, and each occurs */
  CU_ASSERT_EQUAL(sh("awk '{ c[$1]++ } END { for (k in c) m++; exit (c[1] && c[2] && c[3] && m == 3) "
                     "? 0 : 1 }' '%s'",
                     in_dir("words.want")),
                  0);
}

/* The partitioned wordcount pipeline: lines in parts by 2 workers, then
 * wordcount, 2 workers, `partitions` partitions, then print. storm: a
 * supervisor and retries that outlast a SIGKILL storm. */
static void write_wordcount_yaml(const char *name, unsigned partitions, bool storm) {
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "%s"
           "stages:\n"
           "  - plugin: lines\n"
           "    workers: 2\n"
           "    params: {path: '%s'}\n"
           "  - plugin: wordcount\n"
           "    workers: 2\n"
           "    partition_by: key\n"
           "    partitions: %u\n"
           "%s"
           "  - plugin: print\n",
           storm ? "supervisor: {max_restarts: 1000000, period: 1, backoff_min: 0.001, "
                   "backoff_max: 0.005}\n"
                 : "",
           in_dir(storm ? "words4.txt" : "words.txt"), partitions,
           storm ? "    retries: 1000\n" : "");
  write_file(name, yaml);
}

/* Whether the run's --stats-json (stats.json) says the reduce stage had
 * this many partitions (UINT_MAX: any number but 0): the run did partition, not merely give the same
 * output as a merge would. */
static bool stats_partitions(const char *stage, unsigned n) {
  char want[160];
  snprintf(want, sizeof want, "\"name\":\"%s\",", stage);
  char *js = read_file("stats.json", NULL);
  const char *at = js ? strstr(js, want) : NULL;
  const char *end = at ? strchr(at, '}') : NULL;
  snprintf(want, sizeof want, "\"partitions\":%u,", n);
  if (n == UINT_MAX) snprintf(want, sizeof want, "\"partitions\":");
  const char *p = at ? strstr(at, want) : NULL;
  bool ok = p != NULL && p < end;
  if (ok && n == UINT_MAX) ok = strtoul(p + strlen(want), NULL, 10) >= 1; /* any */
  if (!ok) fprintf(stderr, "stats.json: stage %s without %s: %s\n", stage, want, js ? js : "(none)");
  free(js);
  return ok;
}

static void partitioned_wordcount(unsigned partitions) {
  CU_ASSERT_FATAL(make_words());
  write_wordcount_yaml("wc.yaml", partitions, false);
  const char *args[] = {"run", in_dir("wc.yaml"), "--progress=never", "--stats-json",
                        in_dir("stats.json"), NULL};
  double t0 = mpx_test_now();
  int rc = finish_within(start_mpx(args));
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(count_lines_of("stdout"), (long)N_WORDS);
  CU_ASSERT_TRUE(stdout_sorted_is("words.want"));
  CU_ASSERT_TRUE(stats_partitions("wordcount", partitions));
  printf("\n  %u partition(s): %.1f s ", partitions, mpx_test_now() - t0);
}

static void test_wordcount_2_partitions(void) { partitioned_wordcount(2); }
static void test_wordcount_1_partition(void) { partitioned_wordcount(1); }
static void test_wordcount_3_partitions(void) { partitioned_wordcount(3); }

/* ---- the SIGKILL storm ------------------------------------------------------------ */

#define MAX_SEEN 4096
#define MAX_SHM 256

typedef struct {
  pid_t pid;                 /* mpx run */
  atomic_bool stop;
  int kills;
  /* every process of the run seen (its descendants), by pid and start time */
  pid_t seen[MAX_SEEN];
  unsigned long long seen_start[MAX_SEEN];
  int n_seen;
  /* every /dev/shm name the run had open or mapped */
  char shm[MAX_SHM][NAME_MAX + 1];
  int n_shm;
} storm_t;

/* Field 22 of /proc/PID/stat, the start time in clock ticks since boot
 * (0 when gone), and the parent in *ppid. */
static unsigned long long start_of(pid_t pid, pid_t *ppid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  char *p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
  fclose(f);
  unsigned long long start = 0;
  int pp = 0;
  if (!p || sscanf(p + 2, "%*c %d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                          "%*d %*d %llu", &pp, &start) != 2)
    return 0;
  if (ppid) *ppid = pp;
  return start;
}

static double age_of(unsigned long long start) {
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - (double)start / (double)sysconf(_SC_CLK_TCK);
}

static void remember_pid(storm_t *s, pid_t pid) {
  unsigned long long st = start_of(pid, NULL);
  if (!st) return;
  for (int i = 0; i < s->n_seen; i++)
    if (s->seen[i] == pid && s->seen_start[i] == st) return;
  if (s->n_seen < MAX_SEEN) {
    s->seen[s->n_seen] = pid;
    s->seen_start[s->n_seen++] = st;
  }
}

static void remember_shm(storm_t *s, const char *name) {
  for (int i = 0; i < s->n_shm; i++)
    if (strcmp(s->shm[i], name) == 0) return;
  if (s->n_shm < MAX_SHM) snprintf(s->shm[s->n_shm++], NAME_MAX + 1, "%s", name);
}

/* The /dev/shm files pid has open or mapped. */
static void scan_shm(storm_t *s, pid_t pid) {
  char path[96], line[1024], target[PATH_MAX];
  snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
  FILE *f = fopen(path, "r");
  while (f && fgets(line, sizeof line, f)) {
    char *p = strstr(line, " /dev/shm/");
    if (p) {
      char name[NAME_MAX + 1];
      if (sscanf(p + 10, "%255s", name) == 1) remember_shm(s, name);
    }
  }
  if (f) fclose(f);
  snprintf(path, sizeof path, "/proc/%d/fd", (int)pid);
  DIR *d = opendir(path);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    char fd[400];
    snprintf(fd, sizeof fd, "%s/%s", path, e->d_name);
    ssize_t n = readlink(fd, target, sizeof target - 1);
    if (n <= 10) continue;
    target[n] = '\0';
    if (strncmp(target, "/dev/shm/", 9) == 0) {
      char *sp = strchr(target + 9, ' '); /* " (deleted)" */
      if (sp) *sp = '\0';
      remember_shm(s, target + 9);
    }
  }
  if (d) closedir(d);
}

/* Records mpx's descendants (pids and start times) and what they have of
 * /dev/shm; returns mpx's live workers in w (up to max). */
static int survey(storm_t *s, pid_t *w, int max) {
  pid_t kids[256], grand[256];
  scan_shm(s, s->pid);
  int n = cli_children(s->pid, kids, 256, false);
  for (int i = 0; i < n; i++) {
    remember_pid(s, kids[i]);
    scan_shm(s, kids[i]);
    int m = cli_children(kids[i], grand, 256, false);
    for (int j = 0; j < m; j++) remember_pid(s, grand[j]);
  }
  return cli_children(s->pid, w, max, true);
}

/* Every 50 to 100 ms, SIGKILLs a random worker of the run that has lived
 * 50 ms or more (so a restarted worker gets to do some work), up to 30
 * kills in all, after which the run must finish on its own. */
static void *storm_main(void *arg) {
  storm_t *s = arg;
  pid_t w[64];
  while (!atomic_load(&s->stop)) {
    int n = survey(s, w, 64);
    if (s->kills < 30 && n > 0) {
      unsigned pick = (unsigned)(rnd() % (uint64_t)n);
      for (int i = 0; i < n; i++) {
        pid_t victim = w[(pick + (unsigned)i) % (unsigned)n];
        unsigned long long st = start_of(victim, NULL);
        if (st && age_of(st) >= 0.05 && kill(victim, SIGKILL) == 0) {
          s->kills++;
          break;
        }
      }
    }
    mpx_test_sleep(0.05 + (double)(rnd() % 51) / 1000.0);
  }
  return NULL;
}

/* How many of the processes the storm saw are still the same processes
 * and alive, after up to 5 s for them to end. */
static int left_alive(const storm_t *s) {
  int alive = 0;
  for (int t = 0; t < 100; t++) {
    alive = 0;
    for (int i = 0; i < s->n_seen; i++)
      alive += start_of(s->seen[i], NULL) == s->seen_start[i] && cli_alive(s->seen[i]);
    if (!alive) break;
    mpx_test_sleep(0.05);
  }
  return alive;
}

static void test_wordcount_sigkill_storm(void) {
  CU_ASSERT_FATAL(make_words());
  /* Four times the text (each count four times): a run long enough for
   * the storm's kills however fast the engine gets. */
  CU_ASSERT_EQUAL_FATAL(sh("cd '%s' && cat words.txt words.txt words.txt words.txt > words4.txt && "
                           "awk '{ print $1 * 4 \" \" $2 }' words.want | LC_ALL=C sort > words4.want",
                           in_dir("")), 0);
  write_wordcount_yaml("wc-storm.yaml", 2, true);
  const char *args[] = {"run", in_dir("wc-storm.yaml"), "--progress=never", NULL};
  static storm_t s;
  memset(&s, 0, sizeof s);
  rng_state = 99;
  double t0 = mpx_test_now();
  s.pid = start_mpx(args);
  CU_ASSERT_FATAL(s.pid > 0);
  pthread_t th;
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, storm_main, &s), 0);
  int rc = finish_within(s.pid);
  atomic_store(&s.stop, true);
  pthread_join(th, NULL);
  double t1 = mpx_test_now();
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_TRUE(s.kills >= 10);
  CU_ASSERT_EQUAL(count_lines_of("stdout"), (long)N_WORDS);
  CU_ASSERT_TRUE(stdout_sorted_is("words4.want"));
  unlink(in_dir("words4.txt"));
  /* Nothing of the run outlives it: no process, no shared memory. */
  CU_ASSERT_TRUE(s.n_seen >= 2);
  int alive = left_alive(&s);
  CU_ASSERT_EQUAL(alive, 0);
  int shm_left = 0;
  for (int i = 0; i < s.n_shm; i++) {
    char p[NAME_MAX + 16];
    snprintf(p, sizeof p, "/dev/shm/%s", s.shm[i]);
    if (access(p, F_OK) == 0) {
      shm_left++;
      fprintf(stderr, "left in /dev/shm: %s\n", s.shm[i]);
    }
  }
  CU_ASSERT_EQUAL(shm_left, 0);
  printf("\n  storm: %.1f s, %d SIGKILLs, %d processes seen (%d left), %d /dev/shm names ",
         t1 - t0, s.kills, s.n_seen, alive, s.n_shm);
}

/* ---- measurements ----------------------------------------------------------------- */

#define N_CITIES 400
#define N_ROWS 1000000

/* City i's name: two bytes per base-16 digit of i (every syllable two
 * bytes, so names are distinct), after one of a few prefixes (a space,
 * UTF-8). */
static void city_of(int i, char *out, size_t size) {
  static const char *const syl[16] = {"ba", "ko", "ri", "zu", "ne", "ta", "mi", "lo",
                                      "Sa", "du", "ve", "\xc3\xb8", "qu", "\xc3\xa9", "xi", "ya"};
  static const char *const pre[5] = {"", "San ", "\xc3\x98", "New ", ""};
  snprintf(out, size, "%s%s%s%s", pre[i % 5], syl[(i >> 8) & 15], syl[(i >> 4) & 15],
           syl[i & 15]);
}

/* N_ROWS lines "CITY;T", T in tenths within [-99.9, 99.9] with one
 * decimal ("-0.3", "12.0"), each city around its own mean. */
static void gen_measurements(const char *path) {
  static char names[N_CITIES][32];
  static int mean[N_CITIES];
  rng_state = 2024;
  for (int i = 0; i < N_CITIES; i++) {
    city_of(i, names[i], sizeof names[i]);
    mean[i] = (int)(rnd() % 1200) - 600;
  }
  FILE *f = fopen(path, "w");
  for (long r = 0; r < N_ROWS; r++) {
    int c = (int)(rnd() % N_CITIES);
    int t = mean[c] + (int)(rnd() % 801) - 400;
    if (t > 999) t = 999;
    if (t < -999) t = -999;
    int a = t < 0 ? -t : t;
    fprintf(f, "%s;%s%d.%d\n", names[c], t < 0 ? "-" : "", a / 10, a % 10);
  }
  fclose(f);
}

/* The oracle, the one place that knows aggregate's output format: one
 * line per key, KEY;count;sum;min;max;mean, sum, min, max and mean with
 * one decimal (decimals: 1), the mean rounded half away from zero.
 * Computed in tenths as integers, as exact as the plugin's fixed point.
 * Written sorted to dir/want. */
static int aggregate_oracle(const char *in, const char *want) {
  return sh("export LC_ALL=C; awk -F';' '"
            "function d(t,  a) { a = t < 0 ? -t : t;"
            "  return sprintf(\"%%s%%d.%%d\", t < 0 ? \"-\" : \"\", int(a / 10), a %% 10) }"
            "{ v = $2 * 10; t = int(v < 0 ? v - 0.5 : v + 0.5);"
            "  if (!($1 in n)) { mn[$1] = t; mx[$1] = t }"
            "  n[$1]++; s[$1] += t; if (t < mn[$1]) mn[$1] = t; if (t > mx[$1]) mx[$1] = t }"
            "END { for (k in n) {"
            "  a = s[k] < 0 ? -s[k] : s[k]; q = int((2 * a + n[k]) / (2 * n[k]));"
            "  m = s[k] < 0 ? -q : q;"
            "  printf \"%%s;%%d;%%s;%%s;%%s;%%s\\n\", k, n[k], d(s[k]), d(mn[k]), d(mx[k]), d(m) } }"
            "' '%s' | sort > '%s'",
            in, want);
}

static bool measurements_made;

static void make_measurements(void) {
  if (measurements_made) return;
  gen_measurements(in_dir("measurements.txt"));
  CU_ASSERT_EQUAL_FATAL(aggregate_oracle(in_dir("measurements.txt"), in_dir("agg.want")), 0);
  measurements_made = true;
}

/* lines (2 workers, in parts) -> aggregate (2 workers; partitions: 0 is
 * unpartitioned, the coordinator's merge) -> print. */
static void aggregate_run(unsigned partitions) {
  make_measurements();
  char yaml[2048], part[128] = "";
  if (partitions)
    snprintf(part, sizeof part, "    partition_by: key\n    partitions: %u\n", partitions);
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    workers: 2\n"
           "    params: {path: '%s'}\n"
           "  - plugin: aggregate\n"
           "    workers: 2\n"
           "%s"
           "    params: {key: '1', values: '2', format: csv, separator: ';', decimals: 1}\n"
           "  - plugin: print\n",
           in_dir("measurements.txt"), part);
  write_file("agg.yaml", yaml);
  const char *args[] = {"run", in_dir("agg.yaml"), "--progress=never", "--stats-json",
                        in_dir("stats.json"), NULL};
  double t0 = mpx_test_now();
  int rc = finish_within(start_mpx(args));
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(count_lines_of("agg.want"), N_CITIES);
  CU_ASSERT_EQUAL(count_lines_of("stdout"), N_CITIES);
  CU_ASSERT_TRUE(stdout_sorted_is("agg.want"));
  CU_ASSERT_TRUE(stats_partitions("aggregate", partitions));
  printf("\n  aggregate, %u partition(s): %.1f s ", partitions, mpx_test_now() - t0);
}

static void test_aggregate_2_partitions(void) { aggregate_run(2); }
static void test_aggregate_3_partitions(void) { aggregate_run(3); }
static void test_aggregate_unpartitioned(void) { aggregate_run(0); }


/* The shipped example as its header says to run it: its generator's
 * lines, `mpx run examples/measurements.yaml --set lines.path=...`, from
 * the top of the source tree; the output equals the awk oracle. */
static void test_measurements_example(void) {
  CU_ASSERT_EQUAL_FATAL(sh("python3 '%s/examples/gen_measurements.py' '%s' --rows 200000",
                           SOURCE_DIR, in_dir("ex.txt")), 0);
  CU_ASSERT_EQUAL_FATAL(aggregate_oracle(in_dir("ex.txt"), in_dir("ex.want")), 0);
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", in_dir("ex.txt"));
  const char *args[] = {"run", SOURCE_DIR "/examples/measurements.yaml", "--progress=never",
                        "--set", set, "--stats-json", in_dir("stats.json"), NULL};
  int rc = finish_within(start_mpx(args));
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(count_lines_of("stdout"), 400);
  CU_ASSERT_TRUE(stdout_sorted_is("ex.want"));
  CU_ASSERT_TRUE(stats_partitions("aggregate", UINT_MAX)); /* partitioned (workers: auto) */
}

static int suite_init(void) { return cli_mkdir("/tmp/mpx-partition-run-XXXXXX"); }

MPX_TEST_MAIN_FIXTURE("partition_run", suite_init, cli_rmdir, MPX_TEST(test_words_oracle),
                      MPX_TEST(test_wordcount_2_partitions), MPX_TEST(test_wordcount_1_partition),
                      MPX_TEST(test_wordcount_3_partitions), MPX_TEST(test_measurements_example),
                      MPX_TEST(test_wordcount_sigkill_storm),
                      MPX_TEST(test_aggregate_2_partitions),
                      MPX_TEST(test_aggregate_3_partitions),
                      MPX_TEST(test_aggregate_unpartitioned))
