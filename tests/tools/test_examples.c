/* The examples end to end, through the real `mpx` binary, each checked
 * against an oracle computed here or by the shell tools:
 *
 *   - examples/wordcount.yaml on its own text and on a generated one,
 *     against tr | sed | sort | uniq -c | sort with the plugin's word rule;
 *   - examples/wide-finder.yaml on a log from examples/gen_access_log.py,
 *     against grep -E | cut | sort | uniq -c | sort | head;
 *   - an ordered stage after a map of several workers prints exactly the
 *     input order;
 *   - a SIGKILL storm on the workers of a 1M-item run loses and repeats
 *     nothing;
 *   - 1 GiB of 1 MiB items runs in a coordinator whose peak RSS is bounded
 *     by the queue, not the input;
 *   - an installed tree (cmake --install --prefix) runs with its own
 *     plugins and its own mpx-worker, beside the build tree. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../mpx_test.h"
#include <xxhash.h>
#include "blob.h"
#include "cli.h"

/* A sanitizer's shadow memory and quarantine say nothing about mpx's. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* Compares mpx's stdout with the file `want` in dir, showing a diff. */
static bool stdout_is(const char *want) {
  size_t gl = 0, wl = 0;
  char *got = read_file("stdout", &gl), *w = read_file(want, &wl);
  bool same = got && w && gl == wl && memcmp(got, w, gl) == 0;
  if (!same) {
    fprintf(stderr, "--- mpx's stdout differs from the oracle (%s):\n", want);
    sh("diff '%s' '%s' | head -20 >&2", in_dir(want), in_dir("stdout"));
  }
  free(got);
  free(w);
  return same;
}

static int count_lines(const char *s) {
  int n = 0;
  for (; s && *s; s++) n += *s == '\n';
  return n;
}

/* ---- wordcount ------------------------------------------------------------------- */

/* The plugin's rule (docs/plugins.md): words are runs of [A-Za-z0-9'] with
 * their leading and trailing apostrophes removed, none left is no word;
 * "COUNT WORD" by count descending, then word ascending, bytewise. In the
 * C locale, tr, sort and uniq are bytewise too. */
static int wordcount_oracle(const char *text, const char *out) {
  return sh("export LC_ALL=C; tr -cs \"A-Za-z0-9'\" '\\n' < '%s' | "
            "sed -e \"s/^'*//\" -e \"s/'*\\$//\" | { grep -v '^$' || true; } | sort | "
            "uniq -c | sort -k1,1nr -k2,2 | awk '{print $1, $2}' > '%s'",
            text, out);
}

static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
  return rng_state >> 33;
}

/* About `bytes` of text made of words that test the rule (case, digits,
 * apostrophes inside and around words, UTF-8 letters, CR LF, tabs,
 * punctuation), in a skewed distribution so counts differ and tie, with
 * empty lines and a few long ones. */
static void gen_text(const char *path, size_t bytes, uint64_t seed) {
  static const char *const words[] = {
      "the", "The", "THE", "of", "and", "a", "to", "in", "lamp", "Lamp", "don't",
      "'tis", "rock'n'roll", "''", "'", "o'", "'quoted'", "naïve", "café", "x1", "2024",
      "a-b", "e.g.", "it's", "its", "ABC123", "über", "ends'", "''twas''", "9",
      "state-of-the-art", "can't", "won't", "Hello", "hello", "zebra", "Zebra", "_under_"};
  static const char *const seps[] = {" ", " ", " ", " ", ", ", ". ", "; ", "\t", " -- ",
                                     "! ", "? ", " (", ") ", "\"", " \xe2\x80\x94 "};
  const size_t nw = sizeof words / sizeof words[0], ns = sizeof seps / sizeof seps[0];
  FILE *f = fopen(path, "w");
  size_t n = 0;
  rng_state = seed;
  while (n < bytes) {
    uint64_t r = rnd();
    if (r % 97 == 0) { /* an empty line, CR LF, or a long line */
      if (r % 3 == 2) {
        for (int i = 0; i < 20000; i++) {
          const char *w = words[rnd() % nw];
          fputs(w, f);
          fputc(' ', f);
          n += strlen(w) + 1;
        }
      } else {
        fputs(r % 3 == 0 ? "\n" : "\r\n", f);
        n += r % 3 == 0 ? 1 : 2;
      }
      continue;
    }
    /* skewed: the smaller of two uniform indices favours the first words */
    size_t a = rnd() % nw, b = rnd() % nw;
    n += (size_t)fprintf(f, "%s%s", words[a < b ? a : b], seps[rnd() % ns]);
    if (rnd() % 12 == 0) {
      bool crlf = rnd() % 5 == 0;
      fputs(crlf ? "\r\n" : "\n", f);
      n += crlf ? 2 : 1;
    }
  }
  fclose(f);
}

static void test_wordcount_example(void) {
  /* As shipped: its default path, from the top of the source tree. */
  const char *args[] = {"run", EXAMPLES "/wordcount.yaml", "--progress=never", NULL};
  int rc = finish(start_bin(MPX_BIN, SOURCE_DIR, NULL, args));
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL_FATAL(wordcount_oracle(EXAMPLES "/data/sample.txt", in_dir("want")), 0);
  CU_ASSERT_TRUE(stdout_is("want"));
  char *out = read_file("stdout", NULL);
  CU_ASSERT_TRUE(count_lines(out) > 200);
  CU_ASSERT_TRUE(out && strncmp(out, "73 the\n", 7) == 0);
  free(out);
}

static void test_wordcount_generated(void) {
  const char *text = in_dir("words.txt");
  gen_text(text, 3u << 20, 42);
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", text);
  const char *args[] = {"run", EXAMPLES "/wordcount.yaml", "--set", set,
                        "--set", "wordcount.workers=2", "--set", "wordcount.batch=100",
                        "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL_FATAL(wordcount_oracle(text, in_dir("want")), 0);
  CU_ASSERT_TRUE(stdout_is("want"));
  /* The rule's corners are there: trimmed apostrophes, inner ones kept,
   * case kept, UTF-8 letters split words. */
  char *out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, " rock'n'roll\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, " tis\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, " twas\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, " THE\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, " na\n") : NULL);
  CU_ASSERT_PTR_NULL(out ? strstr(out, " '") : "");
  free(out);
}

/* ---- wide finder -------------------------------------------------------------------- */

static void test_gen_access_log_deterministic(void) {
  const char *gen = EXAMPLES "/gen_access_log.py";
  CU_ASSERT_EQUAL_FATAL(sh("python3 '%s' '%s' 64KB 3", gen, in_dir("a1.log")), 0);
  CU_ASSERT_EQUAL(sh("python3 '%s' '%s' 64KB 3", gen, in_dir("a2.log")), 0);
  CU_ASSERT_EQUAL(sh("python3 '%s' '%s' 64KB 4", gen, in_dir("a3.log")), 0);
  CU_ASSERT_EQUAL(sh("python3 '%s' - 500 3 > '%s'", gen, in_dir("a4.log")), 0);
  CU_ASSERT_EQUAL(sh("cmp -s '%s' '%s'", in_dir("a1.log"), in_dir("a2.log")), 0);
  CU_ASSERT_NOT_EQUAL(sh("cmp -s '%s' '%s'", in_dir("a1.log"), in_dir("a3.log")), 0);
  /* 64KB: the lines up to the first that reaches 64 KiB; 500: 500 lines,
   * the same lines from the same seed. */
  struct stat st;
  CU_ASSERT_TRUE(stat(in_dir("a1.log"), &st) == 0 && st.st_size >= 65536 &&
                 st.st_size < 65536 + 1024);
  char *a4 = read_file("a4.log", NULL);
  CU_ASSERT_EQUAL(count_lines(a4), 500);
  CU_ASSERT_EQUAL(sh("head -300 '%s' > '%s'", in_dir("a4.log"), in_dir("a5.log")), 0);
  CU_ASSERT_EQUAL(sh("head -300 '%s' | cmp -s - '%s'", in_dir("a1.log"), in_dir("a5.log")), 0);
  free(a4);
  CU_ASSERT_NOT_EQUAL(sh("python3 '%s' x 2>/dev/null", gen), 0);
}

#define WIDE_PATTERN "GET /ongoing/When/[0-9]{3}x/[0-9]{4}/[0-9]{2}/[0-9]{2}/[^ .]+ "

static void test_wide_finder(void) {
  const char *log = in_dir("access.log");
  double t0 = mpx_test_now();
  CU_ASSERT_EQUAL_FATAL(sh("python3 '%s/gen_access_log.py' '%s' 100000 7", EXAMPLES, log), 0);
  double t1 = mpx_test_now();
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", log);
  const char *args[] = {"run", EXAMPLES "/wide-finder.yaml", "--set", set, "--progress=never",
                        NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  double t2 = mpx_test_now();
  /* The oracle: eleven, to see that the tenth stands clear of the next. */
  CU_ASSERT_EQUAL_FATAL(sh("export LC_ALL=C; grep -E '" WIDE_PATTERN "' '%s' | cut -d' ' -f7 | "
                           "sort | uniq -c | sort -k1,1nr -k2,2 | head -11 | "
                           "awk '{print $1, $2}' > '%s'",
                           log, in_dir("want11")),
                        0);
  CU_ASSERT_EQUAL_FATAL(sh("head -10 '%s' > '%s'", in_dir("want11"), in_dir("want")), 0);
  CU_ASSERT_TRUE(stdout_is("want"));
  char *w = read_file("want11", NULL);
  CU_ASSERT_EQUAL(count_lines(w), 11);
  long c10 = -1, c11 = -1;
  char *p = w;
  for (int i = 1; p && *p && i <= 11; i++) {
    if (i == 10) c10 = atol(p);
    if (i == 11) c11 = atol(p);
    p = strchr(p, '\n');
    if (p) p++;
  }
  CU_ASSERT_TRUE(c10 > c11 && c11 > 0); /* the top 10 is well defined */
  CU_ASSERT_TRUE(w && strstr(w, " /ongoing/When/") != NULL);
  printf("\n  wide finder: log %.2f s, mpx %.2f s; 10th %ld, 11th %ld ", t1 - t0, t2 - t1, c10,
         c11);
  free(w);
}

/* ---- order, crashes, memory ------------------------------------------------------- */

/* Reads mpx's stdout as int64 lines into seen[0..n) (counts), returns
 * how many lines; *in_order: they were 0, 1, 2, ... */
static long tally(uint8_t *seen, long n, bool *in_order, long *bad) {
  char *out = read_file("stdout", NULL), *p = out;
  long lines = 0;
  *bad = 0;
  if (in_order) *in_order = true;
  while (p && *p) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || *end != '\n') {
      (*bad)++;
      end = strchr(p, '\n');
      if (!end) break;
    } else if (v >= 0 && v < n) {
      if (seen[v] < 255) seen[v]++;
    } else {
      (*bad)++;
    }
    if (in_order && v != lines) *in_order = false;
    lines++;
    p = end + 1;
  }
  free(out);
  return lines;
}

static void test_ordered_keeps_input_order(void) {
  const long n = 200000;
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: %ld}\n"
           "  - plugin: %s\n    workers: 3\n    batch: 37\n"
           "  - plugin: print\n    params: {format: int64}\n    ordered: true\n",
           n, CRASHY_SO);
  write_file("ordered.yaml", yaml);
  uint8_t *seen = calloc((size_t)n, 1);
  bool in_order;
  long bad;
  const char *args[] = {"run", in_dir("ordered.yaml"), "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL(tally(seen, n, &in_order, &bad), n);
  CU_ASSERT_TRUE(in_order);
  CU_ASSERT_EQUAL(bad, 0);
  /* Unordered, the same items (in whatever order the batches finish). */
  const char *unordered[] = {"run", in_dir("ordered.yaml"), "--set", "print.ordered=false",
                             "--progress=never", NULL};
  memset(seen, 0, (size_t)n);
  CU_ASSERT_EQUAL(run_mpx(unordered), 0);
  CU_ASSERT_EQUAL(tally(seen, n, &in_order, &bad), n);
  long once = 0;
  for (long i = 0; i < n; i++) once += seen[i] == 1;
  CU_ASSERT_EQUAL(once, n);
  printf("\n  unordered run %s ", in_order ? "happened to be in order" : "was out of order");
  free(seen);
}


typedef struct {
  pid_t pid;
  atomic_bool stop;
  int kills;
} storm_t;

/* Seconds since process pid started (-1 when gone). */
static double age_of(pid_t pid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  char *p = fgets(buf, sizeof buf, f) ? strrchr(buf, ')') : NULL;
  fclose(f);
  unsigned long long start;
  /* after the name: state and 18 more fields, then starttime (22nd) */
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d "
                          "%*d %*d %llu", &start) != 1)
    return -1;
  struct timespec ts;
  clock_gettime(CLOCK_BOOTTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9 - (double)start / (double)sysconf(_SC_CLK_TCK);
}

/* Every 25 ms, SIGKILLs one of the workers (in turn) that has lived 50 ms
 * or more: however slow a restart is (sanitizers), a worker always gets
 * the time to do some work, so the run ends. */
static void *storm_main(void *arg) {
  storm_t *s = arg;
  pid_t w[16];
  unsigned turn = 0;
  while (!atomic_load(&s->stop)) {
    int n = cli_children(s->pid, w, 16, true);
    for (int i = 0; i < n; i++) {
      pid_t victim = w[(turn + (unsigned)i) % (unsigned)n];
      if (age_of(victim) >= 0.05 && kill(victim, SIGKILL) == 0) {
        s->kills++;
        turn++;
        break;
      }
    }
    mpx_test_sleep(0.025);
  }
  return NULL;
}

/* range 0..1M through a pass-through map of 2 workers (crashy with no
 * crash asked for), its workers SIGKILLed while it runs. */
static void sigkill_storm(const char *transport) {
  const long n = 1000000;
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "supervisor: {max_restarts: 1000000, period: 1, backoff_min: 0.001, "
           "backoff_max: 0.005}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: %ld}\n"
           "  - plugin: %s\n    name: pass\n    workers: 2\n    batch: 16\n"
           "    retries: 1000\n    transport: %s\n"
           "  - plugin: print\n    params: {format: int64}\n",
           n, CRASHY_SO, transport);
  write_file("storm.yaml", yaml);
  const char *args[] = {"run", in_dir("storm.yaml"), "--progress=never", "--stats-json",
                        in_dir("storm.json"), NULL};
  double t0 = mpx_test_now();
  storm_t s = {.pid = start_mpx(args)};
  pthread_t th;
  CU_ASSERT_FATAL(s.pid > 0);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, storm_main, &s), 0);
  int rc = finish(s.pid);
  atomic_store(&s.stop, true);
  pthread_join(th, NULL);
  double t1 = mpx_test_now();
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  uint8_t *seen = calloc((size_t)n, 1);
  long bad, once = 0;
  CU_ASSERT_EQUAL(tally(seen, n, NULL, &bad), n);
  for (long i = 0; i < n; i++) once += seen[i] == 1;
  CU_ASSERT_EQUAL(once, n); /* every item exactly once */
  CU_ASSERT_EQUAL(bad, 0);
  char *js = read_file("storm.json", NULL);
  uint64_t restarts = json_u64(js, "pass", "restarts"), retries = json_u64(js, "pass", "retries");
  CU_ASSERT_TRUE(s.kills >= 10);
  CU_ASSERT_TRUE(restarts >= 10 && restarts != UINT64_MAX);
  CU_ASSERT_EQUAL(json_u64(js, "pass", "failed"), 0);
  printf("\n  storm (%s): %.2f s, %d SIGKILLs, %" PRIu64 " restarts, %" PRIu64 " retries ",
         transport, t1 - t0, s.kills, restarts, retries);
  free(js);
  free(seen);
}

static void test_sigkill_storm(void) {
  sigkill_storm("pipe");
  sigkill_storm("uring");
}

/* Peak RSS of a process in KiB: VmHWM, or VmRSS if larger; -1 once gone. */
static long peak_kib(pid_t pid) {
  char path[64], line[256];
  long hwm = -1, rss = -1;
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return -1;
  while (fgets(line, sizeof line, f)) {
    sscanf(line, "VmHWM: %ld", &hwm);
    sscanf(line, "VmRSS: %ld", &rss);
  }
  fclose(f);
  return hwm > rss ? hwm : rss;
}

static uint64_t fnv1a(const unsigned char *p, size_t n) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3u;
  return h;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void test_payload_rss_bounded(void) {
  enum { N = 1024, SIZE = 1 << 20, QUEUE = 8 };
  const long limit_kib = 200 * 1024;
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "queue_capacity: %d\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: %d}\n"
           "  - plugin: %s\n    params: {size: %d}\n    workers: 2\n    batch: 1\n"
           "  - plugin: checksum\n    workers: 2\n    batch: 1\n"
           "  - plugin: print\n    params: {format: hex}\n",
           QUEUE, N, BLOB_SO, SIZE);
  write_file("blob.yaml", yaml);
  const char *args[] = {"run", in_dir("blob.yaml"), "--progress=never", NULL};
  double t0 = mpx_test_now();
  pid_t pid = start_mpx(args);
  CU_ASSERT_FATAL(pid > 0);
  long peak = 0, k;
  int st = 0;
  struct rusage ru;
  pid_t r;
  /* VmHWM while it runs, then the kernel's own figure at its end. */
  while ((r = wait4(pid, &st, WNOHANG, &ru)) == 0) {
    if ((k = peak_kib(pid)) > peak) peak = k;
    mpx_test_sleep(0.01);
  }
  double t1 = mpx_test_now();
  CU_ASSERT_EQUAL_FATAL(r, pid);
  no_sanitizer_report();
  CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) show_stderr();
  /* ru_maxrss: the largest of mpx and the workers it reaped. */
  if (!SANITIZED) {
    CU_ASSERT_TRUE(peak > 0 && peak < limit_kib);
    CU_ASSERT_TRUE(ru.ru_maxrss < limit_kib);
  }
  /* Every item's checksum, against XXH3 (checksum's default) over the
   * same bytes here. */
  uint64_t want[N], got[N];
  unsigned char *buf = malloc(SIZE);
  for (int x = 0; x < N; x++) {
    blob_fill(buf, SIZE, (uint64_t)x);
    want[x] = (uint64_t)XXH3_64bits(buf, SIZE);
  }
  free(buf);
  char *out = read_file("stdout", NULL), *p = out;
  int n = 0;
  while (p && *p && n < N) {
    /* print's hex: the 8 little-endian bytes as they are */
    uint64_t v = 0;
    unsigned b;
    for (int i = 0; i < 8 && sscanf(p + 2 * i, "%2x", &b) == 1; i++) v |= (uint64_t)b << (8 * i);
    got[n++] = v;
    p = strchr(p, '\n');
    if (p) p++;
  }
  CU_ASSERT_EQUAL(n, N);
  CU_ASSERT_EQUAL(count_lines(out), N);
  qsort(want, N, sizeof want[0], cmp_u64);
  qsort(got, (size_t)n, sizeof got[0], cmp_u64);
  CU_ASSERT_TRUE(n == N && memcmp(want, got, sizeof want) == 0);
  printf("\n  1 GiB in %.2f s; coordinator peak RSS %.1f MiB, ru_maxrss %.1f MiB%s ", t1 - t0,
         (double)peak / 1024, (double)ru.ru_maxrss / 1024,
         SANITIZED ? " (not checked under a sanitizer)" : "");
  free(out);
}

/* ---- zero-copy from the source ----------------------------------------------------- */

/* A source writing big items with mpx_emit_reserve hands each to the next
 * stage in place (its arena): the hashes of 24 items of 1 MiB + 5 bytes,
 * in order, equal FNV-1a over blob_fill here, and the stats count each
 * item as zero-copy. Then a worker that dies on some of 40 such items
 * (100 000 bytes each): exactly those are dead-lettered, with their bytes
 * (read back from the arena block the job kept), every other item out
 * exactly once. */
static void test_zero_copy_source(void) {
  enum { N = 24, SIZE = (1 << 20) + 5, M = 40, SIZE2 = 100000 };
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "queue_capacity: 6\n"
           "stages:\n"
           "  - plugin: %s\n    params: {count: %d, size: %d}\n"
           "  - plugin: checksum\n    params: {algorithm: fnv1a}\n    workers: 2\n"
           "    ordered: true\n"
           "  - plugin: print\n    params: {format: hex}\n",
           BLOBSRC_SO, N, SIZE);
  write_file("zc.yaml", yaml);
  const char *args[] = {"run", in_dir("zc.yaml"), "--progress=never", "--stats-json",
                        in_dir("zc.json"), NULL};
  int rc = finish(start_mpx(args));
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  unsigned char *buf = malloc(SIZE);
  char *out = read_file("stdout", NULL), *p = out;
  int n = 0, right = 0;
  for (uint64_t x = 0; x < N && p && *p; x++, n++) {
    blob_fill(buf, SIZE, x);
    memcpy(buf, &x, 8);
    uint64_t want = fnv1a(buf, SIZE), v = 0;
    unsigned b;
    for (int i = 0; i < 8 && sscanf(p + 2 * i, "%2x", &b) == 1; i++) v |= (uint64_t)b << (8 * i);
    right += v == want;
    p = strchr(p, '\n');
    if (p) p++;
  }
  CU_ASSERT_EQUAL(n, N);
  CU_ASSERT_EQUAL(right, N);
  CU_ASSERT_EQUAL(count_lines(out), N);
  char *js = read_file("zc.json", NULL);
  CU_ASSERT_EQUAL(json_u64(js, "checksum", "zero_copy"), N);
  CU_ASSERT_EQUAL(json_u64(js, "checksum", "in"), N);
  free(js);
  free(out);
  free(buf);

  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "dead_letter: %s/zc-dead.jsonl\n"
           "supervisor: {max_restarts: 1000, period: 10, backoff_min: 0.001, backoff_max: 0.01}\n"
           "stages:\n"
           "  - plugin: %s\n    params: {count: %d, size: %d}\n"
           "  - plugin: %s\n    name: crashy\n    params: {crash_mod: 8, crash_rem: 3}\n"
           "    workers: 2\n    retries: 1\n"
           "  - plugin: print\n    params: {format: int64}\n",
           dir, BLOBSRC_SO, M, SIZE2, CRASHY_SO);
  write_file("zc2.yaml", yaml);
  const char *args2[] = {"run", in_dir("zc2.yaml"), "--progress=never", "--stats-json",
                         in_dir("zc2.json"), NULL};
  rc = finish(start_mpx(args2));
  CU_ASSERT_EQUAL(rc, 1);
  if (rc != 1) show_stderr();
  out = read_file("stdout", NULL);
  int seen[M] = {0}, bad = 0, good = 0, poison = 0;
  for (p = out; p && *p;) {
    long v = strtol(p, &p, 10);
    if (v >= 0 && v < M) seen[v]++;
    else bad++;
    if (*p == '\n') p++;
  }
  for (int x = 0; x < M; x++) {
    if (x % 8 == 3) poison += seen[x];
    else good += seen[x] == 1;
  }
  CU_ASSERT_EQUAL(good, M - M / 8);
  CU_ASSERT_EQUAL(poison, 0);
  CU_ASSERT_EQUAL(bad, 0);
  char *dl = read_file("zc-dead.jsonl", NULL);
  CU_ASSERT_EQUAL(count_lines(dl), M / 8);
  /* item 11's bytes begin with 11 as a little-endian int64 */
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "\"item\":\"\\u000b\\u0000\\u0000\\u0000") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "SIGSEGV") : NULL);
  js = read_file("zc2.json", NULL);
  CU_ASSERT_EQUAL(json_u64(js, "crashy", "zero_copy"), M);
  CU_ASSERT_EQUAL(json_u64(js, "crashy", "failed"), M / 8);
  free(js);
  free(dl);
  free(out);
}

/* ---- fused chains and sources run in parts ----------------------------------------- */

/* Two map stages with the same options run in one set of workers. The
 * second refuses item 200 (dead-lettered at its own stage, with its own
 * input); items x % 50 == 7 kill the worker (the chain's input is
 * dead-lettered at the chain's first stage); every other item comes out
 * exactly once, and each stage's figures are its own. */
static void test_fused_chain(void) {
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "dead_letter: %s/fused-dead.jsonl\n"
           "supervisor: {max_restarts: 1000, period: 10, backoff_min: 0.001, backoff_max: 0.01}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: 300}\n"
           "  - plugin: %s\n    name: a\n    workers: 2\n    batch: 16\n    retries: 1\n"
           "  - plugin: %s\n    name: b\n    workers: 2\n    retries: 1\n"
           "    params: {crash_mod: 50, crash_rem: 7, fail_on: 200}\n"
           "  - plugin: print\n    params: {format: int64}\n",
           dir, CRASHY_SO, CRASHY_SO);
  write_file("fused.yaml", yaml);
  const char *args[] = {"run", in_dir("fused.yaml"), "--progress=never", "--stats-json",
                        in_dir("fused.json"), NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 1);
  if (rc != 1) show_stderr();
  char *out = read_file("stdout", NULL), *p;
  int seen[300] = {0}, good = 0, poison = 0;
  for (p = out; p && *p;) {
    long v = strtol(p, &p, 10);
    if (v >= 0 && v < 300) seen[v]++;
    if (*p == '\n') p++;
  }
  for (int x = 0; x < 300; x++) {
    if (x % 50 == 7 || x == 200) poison += seen[x];
    else good += seen[x] == 1;
  }
  CU_ASSERT_EQUAL(good, 300 - 7);
  CU_ASSERT_EQUAL(poison, 0);
  char *dl = read_file("fused-dead.jsonl", NULL);
  CU_ASSERT_EQUAL(count_lines(dl), 7);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "{\"stage\":\"b\",\"item\":\"\\u00c8\\u0000") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "refusing 200") : NULL);
  CU_ASSERT_PTR_NOT_NULL(dl ? strstr(dl, "{\"stage\":\"a\",\"item\":\"\\u0007\\u0000") : NULL);
  char *js = read_file("fused.json", NULL);
  CU_ASSERT_PTR_NOT_NULL(js ? strstr(js, "\"name\":\"b\"") : NULL);
  CU_ASSERT_PTR_NOT_NULL(js ? strstr(js, "\"runs_in\":\"a\"") : NULL);
  CU_ASSERT_EQUAL(json_u64(js, "a", "in"), 300);
  CU_ASSERT_EQUAL(json_u64(js, "a", "out"), 294);
  CU_ASSERT_EQUAL(json_u64(js, "a", "failed"), 6);
  CU_ASSERT_EQUAL(json_u64(js, "b", "in"), 294);
  CU_ASSERT_EQUAL(json_u64(js, "b", "out"), 293);
  CU_ASSERT_EQUAL(json_u64(js, "b", "failed"), 1);
  free(js);
  free(dl);
  free(out);
}

/* A source given workers runs in parts in the workers of the chain after
 * it: range 0..N in parts through a pass-through map (workers SIGKILLed
 * while it runs, when storm) gives every item exactly once. */
static void parallel_source(long n, bool storm) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "supervisor: {max_restarts: 1000000, period: 1, backoff_min: 0.001, "
           "backoff_max: 0.005}\n"
           "stages:\n"
           "  - plugin: range\n    params: {start: 0, stop: %ld}\n    workers: 2\n"
           "  - plugin: %s\n    name: pass\n    workers: 2\n    retries: 1000\n"
           "  - plugin: print\n    params: {format: int64}\n",
           n, CRASHY_SO);
  write_file("par.yaml", yaml);
  const char *args[] = {"run", in_dir("par.yaml"), "--progress=never", "--stats-json",
                        in_dir("par.json"), NULL};
  storm_t s = {.pid = start_mpx(args)};
  pthread_t th;
  CU_ASSERT_FATAL(s.pid > 0);
  if (storm) CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, storm_main, &s), 0);
  int rc = finish(s.pid);
  if (storm) {
    atomic_store(&s.stop, true);
    pthread_join(th, NULL);
  }
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  uint8_t *seen = calloc((size_t)n, 1);
  long bad, once = 0;
  CU_ASSERT_EQUAL(tally(seen, n, NULL, &bad), n);
  for (long i = 0; i < n; i++) once += seen[i] == 1;
  CU_ASSERT_EQUAL(once, n);
  CU_ASSERT_EQUAL(bad, 0);
  char *js = read_file("par.json", NULL);
  CU_ASSERT_EQUAL(json_u64(js, "range", "out"), (uint64_t)n);
  CU_ASSERT_EQUAL(json_u64(js, "range", "workers"), 2);
  CU_ASSERT_EQUAL(json_u64(js, "pass", "in"), (uint64_t)n);
  CU_ASSERT_PTR_NOT_NULL(js ? strstr(js, "\"runs_in\":\"range\"") : NULL);
  if (storm) {
    CU_ASSERT_TRUE(s.kills >= 3);
    printf("\n  parallel source storm: %d SIGKILLs, %" PRIu64 " retries ", s.kills,
           json_u64(js, "range", "retries"));
  }
  free(js);
  free(seen);
}

static void test_parallel_source(void) {
  parallel_source(100000, false);
  parallel_source(2000000, true);
  /* What stands in the way of parts, asked for in the source's stage. */
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "stages:\n  - plugin: %s\n    workers: 2\n  - plugin: checksum\n"
           "  - plugin: print\n", BLOBSRC_SO);
  expect_config_error("nosplit.yaml", yaml,
                      "nosplit.yaml:3:14: stage 'blobsrc': a source with workers runs in "
                      "parallel, but its plugin does not split its stream");
  expect_config_error("ordered.yaml",
                      "stages:\n  - plugin: range\n    params: {stop: 9}\n    workers: 2\n"
                      "  - plugin: checksum\n  - plugin: print\n    ordered: true\n",
                      "ordered.yaml:4:14: stage 'range': a source with workers runs in "
                      "parallel, but its parts come back in no particular order");
  expect_config_error("tosink.yaml",
                      "stages:\n  - plugin: range\n    params: {stop: 9}\n    workers: 2\n"
                      "  - plugin: print\n",
                      "a map or reduce stage must follow it");
}

/* ---- an installed tree ------------------------------------------------------------- */

static void test_installed_tree(void) {
  char prefix[512], bin[600], worker[600], plugin[600], real_worker[PATH_MAX];
  snprintf(prefix, sizeof prefix, "%s/prefix", dir);
  CU_ASSERT_EQUAL_FATAL(sh("'%s' --install '%s' --prefix '%s' >/dev/null", CMAKE_COMMAND,
                           BUILD_DIR, prefix),
                        0);
  snprintf(bin, sizeof bin, "%s/bin/mpx", prefix);
  snprintf(worker, sizeof worker, "%s/libexec/mpx/mpx-worker", prefix);
  CU_ASSERT_PTR_NOT_NULL_FATAL(realpath(worker, real_worker));
  snprintf(plugin, sizeof plugin, "%s/lib/mpx/plugins/mpx_task_primes.so", prefix);
  CU_ASSERT_EQUAL_FATAL(access(plugin, R_OK), 0);
  /* Work for two workers, long enough to look at them. */
  write_file("installed.yaml", "defaults: {codec: raw}\n"
                               "stages:\n"
                               "  - plugin: range\n"
                               "    params: {start: 1200000, stop: 2000000, step: 200000}\n"
                               "  - plugin: primes\n    workers: 2\n    batch: 1\n"
                               "  - plugin: print\n    params: {format: int64}\n"
                               "    ordered: true\n");
  const char *args[] = {"run", in_dir("installed.yaml"), "--progress=never", NULL};
  pid_t pid = start_bin(bin, dir, clean_env(), args);
  CU_ASSERT_FATAL(pid > 0);
  int seen = 0, right_exe = 0, right_plugin = 0, wrong = 0;
  pid_t w[16];
  for (int t = 0; t < 400 && seen < 2; t++) {
    int n = cli_children(pid, w, 16, true);
    for (int i = 0; i < n; i++) {
      char p[64], exe[PATH_MAX];
      snprintf(p, sizeof p, "/proc/%d/exe", (int)w[i]);
      ssize_t l = readlink(p, exe, sizeof exe - 1);
      if (l <= 0) continue;
      exe[l] = '\0';
      snprintf(p, sizeof p, "/proc/%d/maps", (int)w[i]);
      char *maps = read_path(p, NULL);
      /* Once the initializer ran, the plugin is mapped. */
      if (maps && strstr(maps, "mpx_task_primes.so")) {
        seen++;
        right_exe += strcmp(exe, real_worker) == 0;
        right_plugin += strstr(maps, plugin) != NULL;
        if (strcmp(exe, real_worker) != 0) {
          wrong++;
          fprintf(stderr, "worker %d runs %s, not %s\n", (int)w[i], exe, real_worker);
        }
      }
      free(maps);
    }
    mpx_test_sleep(0.005);
  }
  int rc = finish(pid);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_TRUE(seen >= 1);
  CU_ASSERT_EQUAL(right_exe, seen);
  CU_ASSERT_EQUAL(right_plugin, seen);
  CU_ASSERT_EQUAL(wrong, 0);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_EQUAL(count_lines(out), 4);
  free(out);
  /* Its plugins are the prefix's. */
  const char *which[] = {"plugins", "field", NULL};
  CU_ASSERT_EQUAL(finish(start_bin(bin, dir, clean_env(), which)), 0);
  out = read_file("stdout", NULL);
  char want[700], file[PATH_MAX] = "", real_file[PATH_MAX] = "";
  char *line = out ? strstr(out, "\nFile ") : NULL;
  if (line) sscanf(line, "\nFile %4095s", file);
  snprintf(want, sizeof want, "%s/lib/mpx/plugins/mpx_task_field.so", prefix);
  CU_ASSERT_TRUE(realpath(file, real_file) != NULL && strcmp(real_file, want) == 0);
  if (strcmp(real_file, want) != 0)
    fprintf(stderr, "mpx plugins field:\n%s\nwant %s\n", out ? out : "", want);
  free(out);
}

static int suite_init(void) { return cli_mkdir("/tmp/mpx-examples-XXXXXX"); }

/* test_payload_rss_bounded runs by name only, as its own ctest entry
 * (examples_rss): it fails until the engine applies backpressure inside a
 * source's generate call (see tests/CMakeLists.txt). */
int main(int argc, char **argv) {
  static const mpx_test_t some[] = {
      MPX_TEST(test_wordcount_example), MPX_TEST(test_wordcount_generated),
      MPX_TEST(test_gen_access_log_deterministic), MPX_TEST(test_wide_finder),
      MPX_TEST(test_ordered_keeps_input_order), MPX_TEST(test_sigkill_storm),
      MPX_TEST(test_zero_copy_source), MPX_TEST(test_fused_chain),
      MPX_TEST(test_parallel_source), MPX_TEST(test_installed_tree), {NULL, NULL}};
  static const mpx_test_t all[] = {
      MPX_TEST(test_wordcount_example), MPX_TEST(test_wordcount_generated),
      MPX_TEST(test_gen_access_log_deterministic), MPX_TEST(test_wide_finder),
      MPX_TEST(test_ordered_keeps_input_order), MPX_TEST(test_sigkill_storm),
      MPX_TEST(test_zero_copy_source), MPX_TEST(test_fused_chain),
      MPX_TEST(test_parallel_source), MPX_TEST(test_installed_tree),
      MPX_TEST(test_payload_rss_bounded), {NULL, NULL}};
  return mpx_test_main_fixture(argc, argv, "examples", suite_init, cli_rmdir,
                               argc > 1 ? all : some);
}
