/* Pipelines as graphs end to end, through the real `mpx` binary, each
 * output checked against an oracle the shell tools (grep, awk, sort)
 * compute from the same generated input:
 *
 *   - a diamond: one source read by two greps, both read by one map:
 *     the multiset union of the two greps;
 *   - two sources into one map: the union of the two files;
 *   - `route` splitting three ways (two routes and unmatched) into three
 *     print sinks, on the whole line, on a CSV column (with `;;`, a
 *     literal `;`) and on a JSON path: awk's first-match split;
 *   - fan-out: one stage read by two sinks: both get every item;
 *   - grep's `matched` and `unmatched` ports into two sinks: grep and
 *     grep -v (and with invert, port 0 is the unmatched);
 *   - configuration errors through `mpx check`: exit 2, FILE:LINE:COL;
 *   - the old linear examples (primes, wordcount, wide-finder) give what
 *     an awk sieve, tr | sort | uniq -c and grep | cut | sort | uniq -c
 *     give.
 *
 * A graph's outputs come in no promised order, so outputs are compared
 * sorted (LC_ALL=C), as multisets; the linear examples exactly. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* Whether files `got` and `want` in dir hold the same lines as multisets
 * (both sorted bytewise), showing the first differences when not. An
 * absent `got` is a difference. */
static bool same_sorted(const char *got, const char *want) {
  if (access(in_dir(got), R_OK) != 0) {
    fprintf(stderr, "--- %s: no such output\n", got);
    return false;
  }
  int rc = sh("export LC_ALL=C; sort '%s' > '%s.sorted' && sort '%s' > '%s.sorted' && "
              "cmp -s '%s.sorted' '%s.sorted'",
              in_dir(got), in_dir(got), in_dir(want), in_dir(want), in_dir(got), in_dir(want));
  if (rc != 0) {
    fprintf(stderr, "--- %s differs from the oracle %s (sorted; < oracle, > mpx):\n", got, want);
    sh("diff '%s.sorted' '%s.sorted' | head -10 >&2", in_dir(want), in_dir(got));
  }
  return rc == 0;
}

/* Whether files `got` and `want` in dir are the same bytes. */
static bool same_exactly(const char *got, const char *want) {
  int rc = sh("cmp -s '%s' '%s'", in_dir(got), in_dir(want));
  if (rc != 0) {
    fprintf(stderr, "--- %s differs from the oracle %s (< oracle, > mpx):\n", got, want);
    sh("diff '%s' '%s' | head -10 >&2", in_dir(want), in_dir(got));
  }
  return rc == 0;
}

/* A run that has not ended after this long is killed and fails (a hang
 * fails its test, it does not stall the suite). */
#define RUN_LIMIT 60.0

/* Writes `yaml` to dir/name and runs it: mpx's exit code, -2000 when it
 * had to be killed (its stderr shown when not 0). */
static int run_yaml(const char *name, const char *yaml) {
  write_file(name, yaml);
  const char *args[] = {"run", in_dir(name), "--progress=never", NULL};
  int rc = mpx_test_reap(start_mpx(args), RUN_LIMIT);
  no_sanitizer_report();
  if (rc == -2000) fprintf(stderr, "%s: mpx run did not end within %.0f s\n", name, RUN_LIMIT);
  if (rc != 0) show_stderr();
  return rc;
}

/* ---- generated input -------------------------------------------------------------- */

static uint64_t rng_state;
static uint64_t rnd(void) {
  rng_state = rng_state * 6364136223846793005u + 1442695040888963407u;
  return rng_state >> 33;
}

/* n log-like lines, "NNNNNN LEVEL WORD WORD": levels ERROR, WARN, INFO,
 * DEBUG; the words from a list where x and y, ERROR and WARN, and "a;b"
 * appear, so that the greps overlap and a line may hold two levels. An
 * empty line now and then (an empty item). */
static void gen_log(const char *path, long n, uint64_t seed) {
  static const char *const levels[] = {"ERROR", "WARN", "WARN", "INFO", "INFO",
                                       "INFO",  "INFO", "DEBUG", "DEBUG", "ERROR"};
  static const char *const words[] = {"box", "yak", "oxy", "cat", "dog", "yes", "a;b",
                                      "sky", "fox", "WARN", "ERROR", "pipe", "zz", "q"};
  const size_t nw = sizeof words / sizeof words[0];
  FILE *f = fopen(path, "w");
  rng_state = seed;
  for (long i = 0; i < n; i++) {
    if (rnd() % 61 == 0) {
      fputc('\n', f);
      continue;
    }
    fprintf(f, "%06ld %s %s %s\n", i, levels[rnd() % 10], words[rnd() % nw], words[rnd() % nw]);
  }
  fclose(f);
}

/* ---- graph shapes ----------------------------------------------------------------- */

/* lines -> A (grep x), B (grep y) -> C (field, the whole item) -> print:
 * the lines with an x, and those with a y (twice when both). */
static void test_diamond(void) {
  gen_log(in_dir("diamond.log"), 20000, 1);
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    name: src\n"
           "    params: {path: '%s'}\n"
           "  - plugin: grep\n"
           "    name: a\n"
           "    inputs: [src]\n"
           "    workers: 2\n"
           "    params: {pattern: x}\n"
           "  - plugin: grep\n"
           "    name: b\n"
           "    inputs: [src]\n"
           "    workers: 2\n"
           "    params: {pattern: y}\n"
           "  - plugin: field\n"
           "    name: c\n"
           "    inputs: [a, b]\n"
           "    workers: 2\n"
           "    params: {separator: '|', index: 0}\n"
           "  - plugin: print\n"
           "    inputs: [c]\n",
           in_dir("diamond.log"));
  CU_ASSERT_EQUAL(run_yaml("diamond.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(sh("export LC_ALL=C; { grep x '%s'; grep y '%s'; } > '%s'",
                           in_dir("diamond.log"), in_dir("diamond.log"), in_dir("diamond.want")),
                        0);
  CU_ASSERT_TRUE(same_sorted("stdout", "diamond.want"));
  /* Both greps keep something, and some lines are in both. */
  CU_ASSERT_EQUAL(sh("grep x '%s' | grep -q y", in_dir("diamond.log")), 0);
  CU_ASSERT_TRUE(count_lines_of("diamond.want") > 10000);
}

/* Two `lines` sources into one map, to print: both files' lines. */
static void test_two_sources(void) {
  gen_log(in_dir("one.log"), 7000, 2);
  gen_log(in_dir("two.log"), 11000, 3);
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    name: one\n"
           "    params: {path: '%s'}\n"
           "  - plugin: lines\n"
           "    name: two\n"
           "    params: {path: '%s'}\n"
           "  - plugin: field\n"
           "    name: both\n"
           "    inputs: [one, two]\n"
           "    workers: 2\n"
           "    params: {separator: '|', index: 0}\n"
           "  - plugin: print\n",
           in_dir("one.log"), in_dir("two.log"));
  CU_ASSERT_EQUAL(run_yaml("two.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(
      sh("cat '%s' '%s' > '%s'", in_dir("one.log"), in_dir("two.log"), in_dir("two.want")), 0);
  CU_ASSERT_TRUE(same_sorted("stdout", "two.want"));
  CU_ASSERT_EQUAL(count_lines_of("two.want"), 18000);
}

/* The YAML of a route stage named r reading `src`, with `params`, and one
 * print sink per port (r.P to P.out in dir). */
static void route_yaml(char *yaml, size_t size, const char *input, const char *params,
                       const char *const *ports) {
  int n = snprintf(yaml, size,
                   "defaults: {codec: raw}\n"
                   "stages:\n"
                   "  - plugin: lines\n"
                   "    name: src\n"
                   "    params: {path: '%s'}\n"
                   "  - plugin: route\n"
                   "    name: r\n"
                   "    workers: 2\n"
                   "    params: %s\n",
                   in_dir(input), params);
  for (; *ports; ports++)
    n += snprintf(yaml + n, size - (size_t)n,
                  "  - plugin: print\n"
                  "    name: to-%s\n"
                  "    inputs: [r.%s]\n"
                  "    params: {path: '%s.out'}\n",
                  *ports, *ports, in_dir(*ports));
}

/* awk's first-match split of dir/input into err.want, warn.want and
 * unmatched.want, by the awk condition `err` then `warn` (fields split
 * on fs). */
static int awk_split(const char *input, const char *fs, const char *err, const char *warn) {
  return sh("export LC_ALL=C; awk -F '%s' -v E='%s' -v W='%s' -v U='%s' "
            "'%s { print > E; next } %s { print > W; next } { print > U }' '%s' "
            "&& touch '%s' '%s' '%s'",
            fs, in_dir("err.want"), in_dir("warn.want"), in_dir("unmatched.want"), err, warn,
            in_dir(input), in_dir("err.want"), in_dir("warn.want"), in_dir("unmatched.want"));
}

static void check_split(void) {
  CU_ASSERT_TRUE(same_sorted("err.out", "err.want"));
  CU_ASSERT_TRUE(same_sorted("warn.out", "warn.want"));
  CU_ASSERT_TRUE(same_sorted("unmatched.out", "unmatched.want"));
  /* Every part has lines: the split is not trivial. */
  CU_ASSERT_TRUE(count_lines_of("err.want") > 100);
  CU_ASSERT_TRUE(count_lines_of("warn.want") > 100);
  CU_ASSERT_TRUE(count_lines_of("unmatched.want") > 100);
}

static const char *const split_ports[] = {"err", "warn", "unmatched", NULL};

/* route on the whole line: "err" takes the lines with ERROR, "warn" those
 * left with WARN (a line with both is err's: the first route wins). */
static void test_route_three_way(void) {
  gen_log(in_dir("route.log"), 30000, 4);
  char yaml[4096];
  route_yaml(yaml, sizeof yaml, "route.log", "{routes: 'err=ERROR;warn=WARN'}", split_ports);
  CU_ASSERT_EQUAL(run_yaml("route.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(awk_split("route.log", " ", "/ERROR/", "/WARN/"), 0);
  check_split();
  CU_ASSERT_EQUAL(sh("grep ERROR '%s' | grep -q WARN", in_dir("route.log")), 0);
}

/* n CSV lines "ID,LEVEL,MESSAGE": the level E;1, E;2, WARN or INFO, the
 * message holding level words too (the route must look at column 2
 * only), and now and then a line with one column or an empty second. */
static void gen_csv(const char *path, long n, uint64_t seed) {
  static const char *const levels[] = {"E;1", "E;2", "WARN", "INFO", "INFO"};
  static const char *const msgs[] = {"ok", "WARN later", "E;1 seen", "disk full", "E;1", ""};
  FILE *f = fopen(path, "w");
  rng_state = seed;
  for (long i = 0; i < n; i++) {
    uint64_t r = rnd();
    if (r % 53 == 0)
      fprintf(f, "%ld\n", i);
    else if (r % 53 == 1)
      fprintf(f, "%ld,,WARN\n", i);
    else
      fprintf(f, "%ld,%s,%s\n", i, levels[rnd() % 5], msgs[rnd() % 6]);
  }
  fclose(f);
}

/* route on CSV column 2: `;;` in a route is a literal `;`. */
static void test_route_csv_field(void) {
  gen_csv(in_dir("route.csv"), 30000, 5);
  char yaml[4096];
  route_yaml(yaml, sizeof yaml, "route.csv",
             "{routes: 'err=^E;;1$;warn=^WARN$', field: '2', format: csv, separator: ','}",
             split_ports);
  CU_ASSERT_EQUAL(run_yaml("route-csv.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(awk_split("route.csv", ",", "NF >= 2 && $2 == \"E;1\"",
                                  "NF >= 2 && $2 == \"WARN\""),
                        0);
  check_split();
}

/* n JSON lines {"id":N,"ev":{"lvl":"LEVEL"},"msg":"..."}, the message
 * holding level words too, and now and then one without "ev". */
static void gen_json(const char *path, long n, uint64_t seed) {
  static const char *const levels[] = {"ERROR", "WARN", "INFO", "INFO", "DEBUG"};
  static const char *const msgs[] = {"ERROR", "WARN", "fine", "a \\\"quoted\\\" ERROR"};
  FILE *f = fopen(path, "w");
  rng_state = seed;
  for (long i = 0; i < n; i++) {
    if (rnd() % 47 == 0)
      fprintf(f, "{\"id\":%ld,\"msg\":\"%s\"}\n", i, msgs[rnd() % 4]);
    else
      fprintf(f, "{\"id\":%ld,\"ev\":{\"lvl\":\"%s\"},\"msg\":\"%s\"}\n", i, levels[rnd() % 5],
              msgs[rnd() % 4]);
  }
  fclose(f);
}

/* route on the JSON path .ev.lvl. */
static void test_route_json_field(void) {
  gen_json(in_dir("route.jsonl"), 30000, 6);
  char yaml[4096];
  route_yaml(yaml, sizeof yaml, "route.jsonl",
             "{routes: 'err=^ERROR$;warn=^WARN$', field: .ev.lvl, format: json}", split_ports);
  CU_ASSERT_EQUAL(run_yaml("route-json.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(
      awk_split("route.jsonl", " ", "index($0, \"\\\"lvl\\\":\\\"ERROR\\\"\")",
                "index($0, \"\\\"lvl\\\":\\\"WARN\\\"\")"),
      0);
  check_split();
}

/* One stage read by two print sinks: each gets every item. First a
 * source read directly by both, then a map of two workers read by both. */
static void test_fan_out(void) {
  gen_log(in_dir("fan.log"), 25000, 7);
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    name: src\n"
           "    params: {path: '%s'}\n"
           "  - plugin: print\n"
           "    name: p1\n"
           "    inputs: [src]\n"
           "    params: {path: '%s'}\n"
           "  - plugin: print\n"
           "    name: p2\n"
           "    inputs: [src]\n"
           "    params: {path: '%s'}\n",
           in_dir("fan.log"), in_dir("fan1.out"), in_dir("fan2.out"));
  CU_ASSERT_EQUAL(run_yaml("fan.yaml", yaml), 0);
  CU_ASSERT_TRUE(same_sorted("fan1.out", "fan.log"));
  CU_ASSERT_TRUE(same_sorted("fan2.out", "fan.log"));

  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    params: {path: '%s'}\n"
           "  - plugin: grep\n"
           "    name: g\n"
           "    workers: 2\n"
           "    params: {pattern: '^'}\n"
           "  - plugin: print\n"
           "    name: p1\n"
           "    inputs: [g]\n"
           "    params: {path: '%s'}\n"
           "  - plugin: print\n"
           "    name: p2\n"
           "    inputs: [g.matched]\n"
           "    params: {path: '%s'}\n",
           in_dir("fan.log"), in_dir("fan3.out"), in_dir("fan4.out"));
  CU_ASSERT_EQUAL(run_yaml("fan2.yaml", yaml), 0);
  CU_ASSERT_TRUE(same_sorted("fan3.out", "fan.log"));
  CU_ASSERT_TRUE(same_sorted("fan4.out", "fan.log"));
  CU_ASSERT_EQUAL(count_lines_of("fan.log"), 25000);
}

/* grep's two ports into two sinks: grep -E and grep -vE. With invert,
 * port 0 (what grep keeps) is the unmatched. */
static void test_grep_ports(void) {
  gen_log(in_dir("grep.log"), 30000, 8);
  char yaml[2048];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    params: {path: '%s'}\n"
           "  - plugin: grep\n"
           "    name: g\n"
           "    workers: 2\n"
           "    params: {pattern: '(ERROR|WARN) .*o'}\n"
           "  - plugin: print\n"
           "    name: kept\n"
           "    inputs: [g.matched]\n"
           "    params: {path: '%s'}\n"
           "  - plugin: print\n"
           "    name: dropped\n"
           "    inputs: [g.unmatched]\n"
           "    params: {path: '%s'}\n",
           in_dir("grep.log"), in_dir("m.out"), in_dir("u.out"));
  CU_ASSERT_EQUAL(run_yaml("grep.yaml", yaml), 0);
  CU_ASSERT_EQUAL_FATAL(sh("export LC_ALL=C; grep -E '(ERROR|WARN) .*o' '%s' > '%s'; "
                           "grep -vE '(ERROR|WARN) .*o' '%s' > '%s'",
                           in_dir("grep.log"), in_dir("m.want"), in_dir("grep.log"),
                           in_dir("u.want")),
                        0);
  CU_ASSERT_TRUE(same_sorted("m.out", "m.want"));
  CU_ASSERT_TRUE(same_sorted("u.out", "u.want"));
  CU_ASSERT_TRUE(count_lines_of("m.want") > 1000 && count_lines_of("u.want") > 1000);

  /* invert: port 0 (`inputs: [g]`) is what grep keeps, the unmatched. */
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: lines\n"
           "    params: {path: '%s'}\n"
           "  - plugin: grep\n"
           "    name: g\n"
           "    workers: 2\n"
           "    params: {pattern: '(ERROR|WARN) .*o', invert: true}\n"
           "  - plugin: print\n"
           "    name: kept\n"
           "    inputs: [g]\n"
           "    params: {path: '%s'}\n"
           "  - plugin: print\n"
           "    name: other\n"
           "    inputs: [g.matched]\n"
           "    params: {path: '%s'}\n",
           in_dir("grep.log"), in_dir("inv0.out"), in_dir("inv1.out"));
  CU_ASSERT_EQUAL(run_yaml("grep-inv.yaml", yaml), 0);
  CU_ASSERT_TRUE(same_sorted("inv0.out", "u.want"));
  CU_ASSERT_TRUE(same_sorted("inv1.out", "m.want"));
}

/* ---- configuration errors --------------------------------------------------------- */

/* `mpx check` of `yaml` exits 2, its stderr has "NAME:LINE:COL:" for one
 * of the n positions given as {line, col}, and every one of the NULL-
 * terminated words (the file names say nothing, so a word is the
 * message's). */
static void check_error_at(const char *name, const char *yaml, const unsigned (*at)[2], int n,
                           const char *const *words) {
  write_file(name, yaml);
  const char *args[] = {"check", in_dir(name), NULL};
  CU_ASSERT_EQUAL(run_mpx(args), 2);
  char *err = read_file("stderr", NULL), want[600];
  bool placed = false, worded = true;
  for (int i = 0; i < n && err && !placed; i++) {
    snprintf(want, sizeof want, "%s:%u:%u: ", in_dir(name), at[i][0], at[i][1]);
    placed = strstr(err, want) != NULL;
  }
  for (; *words; words++)
    if (!err || !strstr(err, *words)) {
      worded = false;
      fprintf(stderr, "want '%s' in the message\n", *words);
    }
  CU_ASSERT_TRUE(placed);
  CU_ASSERT_TRUE(worded);
  if (!placed || !worded) fprintf(stderr, "%s: mpx check said:\n%s\n", name, err ? err : "");
  free(err);
}

#define SRC "  - plugin: range\n    name: src\n    params: {stop: 10}\n"

static void test_config_errors(void) {
  /* an input that names no stage: at that entry */
  static const unsigned unknown[][2] = {{7, 19}};
  check_error_at("e1.yaml",
                 "defaults: {codec: raw}\nstages:\n" SRC
                 "  - plugin: checksum\n"
                 "    inputs: [src, nope]\n"
                 "  - plugin: print\n",
                 unknown, 1, (const char *const[]){"nope", NULL});
  /* a port grep does not have: at the entry, naming the ports it has */
  static const unsigned port[][2] = {{10, 14}};
  check_error_at("e2.yaml",
                 "defaults: {codec: raw}\nstages:\n"
                 "  - plugin: lines\n    name: src\n    params: {path: /dev/null}\n"
                 "  - plugin: grep\n    name: g\n    params: {pattern: x}\n"
                 "  - plugin: print\n    inputs: [g.bogus]\n",
                 port, 1, (const char *const[]){"bogus", "matched", "unmatched", NULL});
  /* a cycle: a reads b, b reads a; at either stage */
  static const unsigned cycle[][2] = {{6, 5}, {9, 5}};
  check_error_at("e3.yaml",
                 "defaults: {codec: raw}\nstages:\n" SRC
                 "  - plugin: checksum\n    name: a\n    inputs: [src, b]\n"
                 "  - plugin: checksum\n    name: b\n    inputs: [a]\n"
                 "  - plugin: print\n    inputs: [b]\n",
                 cycle, 2, (const char *const[]){"cycle", NULL});
  /* a sink that is read: at the entry naming it */
  static const unsigned sink[][2] = {{10, 14}};
  check_error_at("e4.yaml",
                 "defaults: {codec: raw}\nstages:\n" SRC
                 "  - plugin: print\n    name: p\n    inputs: [src]\n"
                 "  - plugin: checksum\n    inputs: [p]\n"
                 "  - plugin: print\n    name: q\n",
                 sink, 1, (const char *const[]){"'p'", "sink", NULL});
  /* in a graph file, a map that nothing reads: at that stage */
  static const unsigned dangling[][2] = {{8, 5}};
  check_error_at("e5.yaml",
                 "defaults: {codec: raw}\nstages:\n" SRC
                 "  - plugin: checksum\n    name: used\n"
                 "  - plugin: checksum\n    name: lost\n    inputs: [src]\n"
                 "  - plugin: print\n    inputs: [used]\n",
                 dangling, 1, (const char *const[]){"'lost'", NULL});
  /* a second source given workers (only the first runs in parts): at
   * its workers */
  static const unsigned parts[][2] = {{6, 61}};
  check_error_at("e7.yaml",
                 "defaults: {codec: raw}\nstages:\n" SRC
                 "  - {plugin: range, name: src2, params: {stop: 5}, workers: 2}\n"
                 "  - plugin: print\n    inputs: [src, src2]\n",
                 parts, 1, (const char *const[]){"'src2'", "first stage", NULL});
  /* `mpx run` refuses the same file the same way, running nothing. */
  const char *args[] = {"run", in_dir("e3.yaml"), "--progress=never", NULL};
  CU_ASSERT_EQUAL(run_mpx(args), 2);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_TRUE(out && *out == '\0');
  free(out);
  /* The same shapes made right are accepted: the errors above are the
   * graph's, not a typo in the YAML. */
  write_file("e6.yaml", "defaults: {codec: raw}\nstages:\n" SRC
                          "  - plugin: checksum\n    name: a\n    inputs: [src]\n"
                          "  - plugin: checksum\n    name: b\n    inputs: [a, src]\n"
                          "  - plugin: print\n    inputs: [b]\n");
  const char *fine[] = {"check", in_dir("e6.yaml"), NULL};
  int rc = run_mpx(fine);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
}

/* ---- the linear examples, unchanged ----------------------------------------------- */

/* primes.yaml (stop 1000000, the short form its comment gives): the sums
 * of the primes below 100000, 200000, ..., in order, from an awk sieve. */
static void test_linear_primes(void) {
  const char *args[] = {"run", EXAMPLES "/primes.yaml", "--set", "range.stop=1000000",
                        "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL_FATAL(
      sh("LC_ALL=C awk 'BEGIN { N = 1000000; s = 0; k = 100000;"
         " for (i = 2; i < N; i++) {"
         "   if (i == k) { printf \"%%.0f\\n\", s; k += 100000 }"
         "   if (!(i in c)) { s += i; for (j = i * i; j < N; j += i) c[j] = 1 } } }' > '%s'",
         in_dir("primes.want")),
      0);
  CU_ASSERT_EQUAL(count_lines_of("primes.want"), 9);
  CU_ASSERT_TRUE(same_exactly("stdout", "primes.want"));
}

/* wordcount.yaml on generated text of plain words (letters and digits,
 * one space apart): tr | sort | uniq -c | sort by count, then word. */
static void test_linear_wordcount(void) {
  FILE *f = fopen(in_dir("words.txt"), "w");
  rng_state = 9;
  for (int line = 0; line < 20000; line++) {
    int n = 1 + (int)(rnd() % 12);
    for (int w = 0; w < n; w++) {
      /* skewed: the smaller of two draws favours the first words */
      uint64_t a = rnd() % 5000, b = rnd() % 5000;
      uint64_t x = a < b ? a : b;
      fprintf(f, "%s%c%llx%s", w ? " " : "", "wWq9"[x % 4], (unsigned long long)x,
              x % 7 == 0 ? "Z" : "");
    }
    fputc('\n', f);
  }
  fclose(f);
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", in_dir("words.txt"));
  const char *args[] = {"run", EXAMPLES "/wordcount.yaml", "--set", set,
                        "--set", "wordcount.workers=2", "--progress=never", NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL_FATAL(sh("export LC_ALL=C; tr -s ' ' '\\n' < '%s' | sort | uniq -c | "
                           "sort -k1,1nr -k2,2 | awk '{print $1, $2}' > '%s'",
                           in_dir("words.txt"), in_dir("words.want")),
                        0);
  CU_ASSERT_TRUE(count_lines_of("words.want") > 3000);
  CU_ASSERT_TRUE(same_exactly("stdout", "words.want"));
}

/* wide-finder.yaml on a generated access log: the top 10 articles from
 * grep -E | cut | sort | uniq -c | sort | head. */
static void test_linear_wide_finder(void) {
  const char *log = in_dir("access.log");
  CU_ASSERT_EQUAL_FATAL(sh("python3 '%s/gen_access_log.py' '%s' 40000 11", EXAMPLES, log), 0);
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", log);
  const char *args[] = {"run", EXAMPLES "/wide-finder.yaml", "--set", set, "--progress=never",
                        NULL};
  int rc = run_mpx(args);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
  CU_ASSERT_EQUAL_FATAL(
      sh("export LC_ALL=C; grep -E 'GET /ongoing/When/[0-9]{3}x/[0-9]{4}/[0-9]{2}/[0-9]{2}/[^ .]+ ' "
         "'%s' | cut -d' ' -f7 | sort | uniq -c | sort -k1,1nr -k2,2 | head -10 | "
         "awk '{print $1, $2}' > '%s'",
         log, in_dir("wide.want")),
      0);
  CU_ASSERT_EQUAL(count_lines_of("wide.want"), 10);
  CU_ASSERT_TRUE(same_exactly("stdout", "wide.want"));
}

static int suite_init(void) { return cli_mkdir("/tmp/mpx-graph-run-XXXXXX"); }


/* ---- one engine loop -------------------------------------------------------------- */

/* Threads of a process, from /proc. */
static int threads_of(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  int n = 0;
  DIR *d = opendir(path);
  struct dirent *de;
  while (d && (de = readdir(d)) != NULL) n += de->d_name[0] != '.';
  if (d) closedir(d);
  return n;
}

/* Four pools (grep, field, grep, field: neighbours with different
 * workers, so not fused) and two sinks run on the main thread, one loop
 * thread and one thread per sink: four, where a thread per pool (and the
 * sinks on them) would make five. The source reads a
 * FIFO that stays open until the threads are counted. */
static void test_one_loop(void) {
  CU_ASSERT_EQUAL_FATAL(mkfifo(in_dir("fifo"), 0600), 0);
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "name: loop\ndefaults: {codec: raw}\nstages:\n"
           "  - {plugin: lines, name: src, params: {path: %s}}\n"
           "  - {plugin: grep, name: a, workers: 2, params: {pattern: a}}\n"
           "  - {plugin: field, name: f, workers: 1}\n"
           "  - {plugin: grep, name: b, workers: 2, params: {pattern: b}}\n"
           "  - {plugin: field, name: g, workers: 1}\n"
           "  - {plugin: print, name: out1, params: {path: %s}}\n"
           "  - {plugin: print, name: out2, inputs: [a], params: {path: %s}}\n",
           in_dir("fifo"), in_dir("out1.txt"), in_dir("out2.txt"));
  write_file("loop.yaml", yaml);
  const char *args[] = {"run", in_dir("loop.yaml"), "--progress=never", "--no-summary", NULL};
  pid_t pid = start_mpx(args);
  /* The first reader may be the start-up probe's (it opens and closes the
   * FIFO): this end stays open throughout, so the run's own source opens
   * it at once after, and nothing is written before that. */
  int fd = open(in_dir("fifo"), O_WRONLY);
  CU_ASSERT_FATAL(fd >= 0);
  /* The threads start once every stage has (the source's init opened the
   * FIFO); then no more come while the run goes on. */
  for (int i = 0; i < 1000 && threads_of(pid) < 4; i++) usleep(10000);
  usleep(300000);
  CU_ASSERT_EQUAL(threads_of(pid), 4);
  CU_ASSERT_EQUAL(write(fd, "ab\nzz\n", 6), 6);
  close(fd);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, RUN_LIMIT), 0);
  write_file("want.txt", "ab\n");
  CU_ASSERT_TRUE(same_exactly("out1.txt", "want.txt"));
  CU_ASSERT_TRUE(same_exactly("out2.txt", "want.txt"));
}

MPX_TEST_MAIN_FIXTURE("graph_run", suite_init, cli_rmdir, MPX_TEST(test_diamond),
                      MPX_TEST(test_two_sources), MPX_TEST(test_route_three_way),
                      MPX_TEST(test_route_csv_field), MPX_TEST(test_route_json_field),
                      MPX_TEST(test_fan_out), MPX_TEST(test_grep_ports),
                      MPX_TEST(test_config_errors), MPX_TEST(test_linear_primes),
                      MPX_TEST(test_linear_wordcount), MPX_TEST(test_linear_wide_finder),
                      MPX_TEST(test_one_loop))
