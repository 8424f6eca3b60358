/* The `mpx` command's options and standard streams, through the real
 * binary, with exact stdout, stderr and exit codes: `-` as standard input
 * (lines) and output (print, jsonl, --stats-json), both option forms
 * (--opt=V and --opt V) for every option of run, check and plugins,
 * `mpx plugins CODEC`, the search path in the list, the one line that
 * --no-summary still prints for dead letters, and stage options that a
 * stage cannot use refused rather than ignored. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* Runs mpx ARGS in cwd (NULL: here) with env (NULL: clean_env()), input
 * (NULL: /dev/null) on its stdin through a pipe, stdout and stderr to
 * files in dir. Its exit code. */
static int run_io(const char *input, const char *cwd, char **env, const char *const *args) {
  const char *argv[32] = {MPX_BIN};
  int n = 1;
  for (; args[n - 1]; n++) argv[n] = args[n - 1];
  argv[n] = NULL;
  int p[2] = {-1, -1};
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (input) {
    if (pipe(p) != 0) abort();
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addclose(&fa, p[1]);
  } else {
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  }
  cli_capture_output(&fa, cwd);
  pid_t pid;
  int rc = posix_spawn(&pid, MPX_BIN, &fa, NULL, (char **)argv, env ? env : clean_env());
  posix_spawn_file_actions_destroy(&fa);
  if (input) {
    close(p[0]);
    size_t len = strlen(input), off = 0;
    while (off < len) {
      ssize_t w = write(p[1], input + off, len - off);
      if (w <= 0) break;
      off += (size_t)w;
    }
    close(p[1]);
  }
  return rc == 0 ? finish(pid) : -1;
}

static int run_args(const char *const *args) { return run_io(NULL, NULL, NULL, args); }

/* file's text is exactly want (NULL file: missing). */
static void expect_text(const char *name, const char *want) {
  char *got = read_file(name, NULL);
  CU_ASSERT_PTR_NOT_NULL(got);
  CU_ASSERT_STRING_EQUAL(got ? got : "(none)", want);
  if (!got || strcmp(got, want) != 0)
    fprintf(stderr, "%s: want [%s]\ngot [%s]\n", name, want, got ? got : "(none)");
  free(got);
}

static bool has(const char *name, const char *want) {
  char *got = read_file(name, NULL);
  bool ok = got && strstr(got, want);
  if (!ok) fprintf(stderr, "want '%s' in %s:\n%s\n", want, name, got ? got : "(none)");
  free(got);
  return ok;
}

/* The pipeline lines -> print, reading `path`. */
static const char *lines_yaml(void) {
  static char p[600];
  write_file("lines.yaml", "defaults: {codec: raw}\n"
                           "stages:\n"
                           "  - plugin: lines\n    params: {path: nowhere.txt}\n"
                           "  - plugin: print\n");
  snprintf(p, sizeof p, "%s", in_dir("lines.yaml"));
  return p;
}

static const char *input = "alpha\nbeta\n\n gamma \r\nlast without newline";
static const char *as_lines = "alpha\nbeta\n\n gamma \r\nlast without newline\n";

/* lines.path=- reads standard input (a pipe), exactly as it reads a file. */
static void test_lines_stdin(void) {
  const char *yaml = lines_yaml();
  write_file("in.txt", input);
  char set[600];
  snprintf(set, sizeof set, "lines.path=%s", in_dir("in.txt"));
  const char *from_file[] = {"run", yaml, "--set", set, "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_args(from_file), 0);
  expect_text("stdout", as_lines);
  expect_text("stderr", "");
  const char *from_stdin[] = {"run", yaml, "--set", "lines.path=-", "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io(input, NULL, NULL, from_stdin), 0);
  expect_text("stdout", as_lines);
  expect_text("stderr", "");
  /* A file named "-" is still reachable as ./- */
  write_file("-", "dash file\n");
  const char *dashfile[] = {"run", yaml, "--set", "lines.path=./-", "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io("not this\n", dir, NULL, dashfile), 0);
  expect_text("stdout", "dash file\n");
  unlink(in_dir("-"));
}

/* Standard input cannot be split into parts: a lines source given workers
 * with path - fails at the start-up check of its init (exit 2, a config
 * error), saying why, with nothing on stdout. */
static void test_lines_stdin_in_parts(void) {
  write_file("parts.yaml", "defaults: {codec: raw}\n"
                           "supervisor: {backoff_min: 0, backoff_max: 0}\n"
                           "stages:\n"
                           "  - plugin: lines\n    params: {path: '-'}\n    workers: 2\n"
                           "  - plugin: grep\n    params: {pattern: a}\n    workers: 2\n"
                           "    retries: 0\n"
                           "  - plugin: print\n");
  const char *args[] = {"run", in_dir("parts.yaml"), "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io("a\nb\n", NULL, NULL, args), 2);
  expect_text("stdout", "");
  CU_ASSERT_TRUE(has("stderr", "standard input (path '-') cannot be split between "
                               "workers: leave out the stage's workers to read it in "
                               "mpx run"));
}

/* print and jsonl write to stdout for path -, print to a file for a path;
 * print's default is stdout. */
static void test_sinks_stdout(void) {
  write_file("j.yaml", "defaults: {codec: raw}\n"
                       "stages:\n"
                       "  - plugin: lines\n    params: {path: '-'}\n"
                       "  - plugin: jsonl\n    params: {path: '-'}\n");
  const char *j[] = {"run", in_dir("j.yaml"), "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io("x\n\"q\"\n", dir, NULL, j), 0);
  expect_text("stdout", "{\"item\": \"x\"}\n{\"item\": \"\\\"q\\\"\"}\n");
  expect_text("stderr", "");
  struct stat sb;
  CU_ASSERT_NOT_EQUAL(stat(in_dir("-"), &sb), 0); /* no file named - */
  const char *yaml = lines_yaml();
  char set[600];
  snprintf(set, sizeof set, "print.path=%s", in_dir("printed.txt"));
  const char *to_file[] = {"run", yaml, "--set", "lines.path=-", "--set", set,
                           "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io(input, NULL, NULL, to_file), 0);
  expect_text("stdout", "");
  expect_text("printed.txt", as_lines);
  const char *to_dash[] = {"run", yaml, "--set", "lines.path=-", "--set", "print.path=-",
                           "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io(input, dir, NULL, to_dash), 0);
  expect_text("stdout", as_lines);
  CU_ASSERT_NOT_EQUAL(stat(in_dir("-"), &sb), 0);
}

/* --stats-json - writes the JSON on stdout, after the sink's lines, and
 * makes no file named "-". */
static void test_stats_json_stdout(void) {
  const char *yaml = lines_yaml();
  const char *args[] = {"run", yaml, "--set", "lines.path=-", "--stats-json", "-",
                        "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_io("one\ntwo\n", dir, NULL, args), 0);
  expect_text("stderr", "");
  char *out = read_file("stdout", NULL);
  const char *head = "one\ntwo\n{\"pipeline\":\"lines\",\"seconds\":";
  CU_ASSERT_TRUE(out && strncmp(out, head, strlen(head)) == 0);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\"name\":\"print\",\"plugin\":\"print\","
                                           "\"kind\":\"sink\",\"workers\":0,\"in\":2,")
                             : NULL);
  size_t n = out ? strlen(out) : 0;
  const char *tail = out ? strstr(out, "}],\"coordinator_peak_rss_kb\":") : NULL;
  CU_ASSERT_TRUE(n > 3 && strcmp(out + n - 2, "}\n") == 0 && tail != NULL);
  if (!out || strncmp(out, head, strlen(head)) != 0) fprintf(stderr, "stdout: %s\n", out);
  free(out);
  struct stat sb;
  CU_ASSERT_NOT_EQUAL(stat(in_dir("-"), &sb), 0);
}

/* Runs args and returns its stdout (the caller frees), asserting rc. */
static char *out_of(const char *const *args, int want_rc) {
  int rc = run_args(args);
  CU_ASSERT_EQUAL(rc, want_rc);
  if (rc != want_rc) show_stderr();
  return read_file("stdout", NULL);
}

/* Both forms of every option give the same result. */
static void test_option_forms(void) {
  const char *yaml = lines_yaml();
  write_file("in.txt", "1\n2\n");
  char set_eq[700], set_val[600], json_a[700], json_b[600];
  snprintf(set_val, sizeof set_val, "lines.path=%s", in_dir("in.txt"));
  snprintf(set_eq, sizeof set_eq, "--set=%s", set_val);
  snprintf(json_a, sizeof json_a, "--stats-json=%s", in_dir("a.json"));
  snprintf(json_b, sizeof json_b, "%s", in_dir("b.json"));
  const char *eq[] = {"run", yaml, set_eq, "--progress=never", json_a, "--no-summary", NULL};
  const char *sp[] = {"run", "--set", set_val, "--progress", "never", "--stats-json", json_b,
                      "--no-summary", yaml, NULL};
  char *a = out_of(eq, 0);
  expect_text("stderr", "");
  char *b = out_of(sp, 0);
  expect_text("stderr", "");
  CU_ASSERT_STRING_EQUAL(a ? a : "", "1\n2\n");
  CU_ASSERT_STRING_EQUAL(b ? b : "", "1\n2\n");
  free(a);
  free(b);
  CU_ASSERT_TRUE(has("a.json", "\"pipeline\":\"lines\""));
  CU_ASSERT_TRUE(has("b.json", "\"pipeline\":\"lines\""));
  /* --progress=always and --progress always: the progress line on stderr */
  const char *pa[] = {"run", yaml, "--set", set_val, "--progress=always", "--no-summary", NULL};
  const char *pb[] = {"run", yaml, "--set", set_val, "--progress", "always", "--no-summary",
                      NULL};
  free(out_of(pa, 0));
  CU_ASSERT_TRUE(has("stderr", "lines 2 | print 2"));
  free(out_of(pb, 0));
  CU_ASSERT_TRUE(has("stderr", "lines 2 | print 2"));
  /* check: --set in both forms, and `--` before a file */
  const char *ca[] = {"check", yaml, set_eq, NULL};
  const char *cb[] = {"check", "--set", set_val, "--", yaml, NULL};
  char want[700];
  snprintf(want, sizeof want, "%s: ok\n", yaml);
  char *c = out_of(ca, 0);
  CU_ASSERT_STRING_EQUAL(c ? c : "", want);
  free(c);
  c = out_of(cb, 0);
  CU_ASSERT_STRING_EQUAL(c ? c : "", want);
  free(c);
  /* --help and -h for each command, after other arguments too */
  const char *h1[] = {"run", "--help", NULL}, *h2[] = {"run", yaml, "-h", NULL};
  const char *h3[] = {"check", "--help", NULL}, *h4[] = {"plugins", "-h", NULL};
  const char *const *helps[] = {h1, h2, h3, h4};
  for (int i = 0; i < 4; i++) {
    c = out_of(helps[i], 0);
    CU_ASSERT_TRUE(c && strncmp(c, "usage: mpx ", 11) == 0);
    free(c);
    expect_text("stderr", "");
  }
  /* errors: exit 2, one clear line first */
  const char *bad1[] = {"run", yaml, "--set", NULL};
  CU_ASSERT_EQUAL(run_args(bad1), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx run: option '--set' needs a value\n"));
  const char *bad2[] = {"run", yaml, "--frob=1", NULL};
  CU_ASSERT_EQUAL(run_args(bad2), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx run: unknown option '--frob=1'\n"));
  const char *bad3[] = {"run", yaml, "--no-summary=yes", NULL};
  CU_ASSERT_EQUAL(run_args(bad3), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx run: option '--no-summary' takes no value\n"));
  const char *bad4[] = {"check", yaml, "--progress", "never", NULL};
  CU_ASSERT_EQUAL(run_args(bad4), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx check: unknown option '--progress'\n"));
  const char *bad5[] = {"run", yaml, "--progress", "sometimes", NULL};
  CU_ASSERT_EQUAL(run_args(bad5), 2);
  expect_text("stderr", "mpx run: --progress must be auto, always or never, not 'sometimes'\n");
}

/* `mpx plugins CODEC` describes the codec; the list starts with the
 * search path. */
static void test_plugins_codec(void) {
  const char *m[] = {"plugins", "msgpack", NULL};
  CU_ASSERT_EQUAL(run_args(m), 0);
  expect_text("stderr", "");
  char *out = read_file("stdout", NULL);
  CU_ASSERT_TRUE(out && strncmp(out, "Name         msgpack\nKind         codec\n", 39) == 0);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "Content-Type application/msgpack\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "/mpx_codec_msgpack.so\n") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "Description  MessagePack") : NULL);
  if (!out || strncmp(out, "Name         msgpack\n", 21) != 0) fprintf(stderr, "%s\n", out);
  free(out);
  const char *none[] = {"plugins", "nosuchthing", NULL};
  CU_ASSERT_EQUAL(run_args(none), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx plugins: no plugin or codec 'nosuchthing'"));
  /* the list: the search path first, MPX_PLUGIN_PATH's directory first */
  char var[700], *env[600];
  snprintf(var, sizeof var, "MPX_PLUGIN_PATH=%s", dir);
  char **ce = clean_env();
  size_t n = 0;
  env[n++] = var;
  for (; ce[n - 1] && n < 599; n++) env[n] = ce[n - 1];
  env[n] = NULL;
  const char *l[] = {"plugins", NULL};
  CU_ASSERT_EQUAL(run_io(NULL, NULL, env, l), 0);
  char want[700];
  snprintf(want, sizeof want, "search path:\n  %s\n", dir);
  out = read_file("stdout", NULL);
  CU_ASSERT_TRUE(out && strncmp(out, want, strlen(want)) == 0);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\ncodec    msgpack ") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\nsource   lines ") : NULL);
  if (!out || strncmp(out, want, strlen(want)) != 0) fprintf(stderr, "%s\n", out);
  free(out);
}

/* --no-summary: no table, but dead letters still get one line. */
static void test_no_summary_dead_letters(void) {
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "dead_letter: %s/dead.jsonl\n"
           "stages:\n"
           "  - plugin: range\n    params: {stop: 6}\n"
           "  - plugin: %s\n    params: {fail_on: 3}\n    workers: 1\n    retries: 0\n"
           "  - plugin: print\n    params: {format: int64}\n    ordered: true\n",
           dir, CRASHY_SO);
  write_file("dead.yaml", yaml);
  const char *args[] = {"run", in_dir("dead.yaml"), "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_args(args), 1);
  expect_text("stdout", "0\n1\n2\n4\n5\n");
  char want[700];
  snprintf(want, sizeof want, "mpx run: 1 item dead-lettered, see %s/dead.jsonl\n", dir);
  expect_text("stderr", want);
  /* without a dead-letter file */
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - plugin: range\n    params: {stop: 6}\n"
           "  - plugin: %s\n    params: {fail_on: 3}\n    workers: 1\n    retries: 0\n"
           "  - plugin: print\n    params: {format: int64}\n    ordered: true\n",
           CRASHY_SO);
  write_file("dead2.yaml", yaml);
  const char *args2[] = {"run", in_dir("dead2.yaml"), "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_args(args2), 1);
  expect_text("stderr", "mpx run: 1 item dead-lettered (no dead_letter file)\n");
  /* a run without dead letters stays silent */
  const char *args3[] = {"run", in_dir("dead.yaml"), "--no-summary", "--set",
                         "1.fail_on=-1", NULL};
  CU_ASSERT_EQUAL(run_args(args3), 0);
  expect_text("stderr", "");
  /* dead_letter: - is refused (stdout carries the sink's output) */
  const char *args4[] = {"check", in_dir("dead.yaml"), "--set", "pipeline.dead_letter=-",
                         NULL};
  CU_ASSERT_EQUAL(run_args(args4), 2);
  CU_ASSERT_TRUE(has("stderr", "mpx check: --set pipeline.dead_letter=-: 'dead_letter' "
                               "cannot be '-'"));
}

/* A stage option that a stage cannot use is refused, naming it, instead
 * of being accepted and ignored. */
static void expect_refused(const char *set, const char *want) {
  write_file("opts.yaml", "defaults: {codec: raw}\n"
                          "stages:\n"
                          "  - plugin: range\n    params: {stop: 50}\n    workers: 2\n"
                          "  - plugin: checksum\n    workers: 2\n"
                          "  - plugin: print\n    params: {format: hex}\n");
  const char *args[] = {"run", in_dir("opts.yaml"), "--set", set, NULL};
  CU_ASSERT_EQUAL(run_args(args), 2);
  expect_text("stdout", "");
  char line[700];
  snprintf(line, sizeof line, "mpx run: --set %s: %s (configuration error)\n", set, want);
  expect_text("stderr", line);
}

static void test_ignored_options_refused(void) {
  expect_refused("range.workers=1",
                 "stage 'range': workers 1 would be ignored: a source in parts runs in the "
                 "2 workers stage 'checksum' gives itself; give both the same workers, or "
                 "leave them out of 'checksum'");
  expect_refused("print.workers=4",
                 "stage 'print': 'workers' has no effect on a sink (it runs in mpx run, "
                 "in one instance)");
  expect_refused("print.retries=3",
                 "stage 'print': 'retries' has no effect on a sink (it runs in mpx run, "
                 "in one instance)");
  expect_refused("range.timeout=5",
                 "stage 'range': 'timeout' has no effect on a source (it runs in mpx run, "
                 "or in parts with the options of the stage after it)");
  expect_refused("range.batch=5",
                 "stage 'range': 'batch' has no effect on a source (it runs in mpx run, "
                 "or in parts with the options of the stage after it)");
  /* the same values through defaults are fine: they reach the map */
  write_file("okdef.yaml", "defaults: {codec: raw, workers: 2, retries: 1, batch: 7}\n"
                           "stages:\n"
                           "  - plugin: range\n    params: {stop: 3}\n"
                           "  - plugin: checksum\n"
                           "  - plugin: print\n    params: {format: hex}\n    ordered: true\n");
  const char *ok[] = {"run", in_dir("okdef.yaml"), "--no-summary", NULL};
  int rc = run_args(ok);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) show_stderr();
}

/* SIGPIPE ignored: an mpx that exits before reading its input must not
 * kill the suite. */
/* A source's workers take effect: the chain after it that runs its parts
 * takes them (over defaults), as --stats-json shows, and every line comes
 * out once. */
static void test_source_workers_take_effect(void) {
  char text[4096] = "", yaml[1024];
  for (int i = 0; i < 300; i++) snprintf(text + strlen(text), 20, "l%03d\n", i);
  write_file("many.txt", text);
  snprintf(yaml, sizeof yaml,
           "defaults: {codec: raw, workers: 2}\n"
           "stages:\n"
           "  - plugin: lines\n    params: {path: %s}\n    workers: 2\n"
           "  - plugin: grep\n    params: {pattern: '^l'}\n"
           "  - plugin: topk\n    params: {k: 1000}\n"
           "  - plugin: print\n",
           in_dir("many.txt"));
  write_file("lend.yaml", yaml);
  char file[600], j1[600], j3[600]; /* in_dir's buffers rotate */
  snprintf(file, sizeof file, "%s", in_dir("lend.yaml"));
  snprintf(j1, sizeof j1, "%s", in_dir("w1.json"));
  snprintf(j3, sizeof j3, "%s", in_dir("w3.json"));
  const char *w1[] = {"run", file, "--set", "lines.workers=1", "--stats-json", j1,
                      "--no-summary", NULL};
  const char *w3[] = {"run", file, "--set", "lines.workers=3", "--stats-json", j3,
                      "--no-summary", NULL};
  const char *const *runs[] = {w1, w3};
  const char *json[] = {"w1.json", "w3.json"}, *want[] = {"\"workers\":1,", "\"workers\":3,"};
  for (int r = 0; r < 2; r++) {
    CU_ASSERT_EQUAL(run_args(runs[r]), 0);
    expect_text("stderr", "");
    char *out = read_file("stdout", NULL);
    int n = 0;
    for (char *p = out; p && *p; p++) n += *p == '\n';
    CU_ASSERT_EQUAL(n, 300);
    CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\n1 l299\n") : NULL);
    free(out);
    char *j = read_file(json[r], NULL);
    char grep[64], topk[64];
    snprintf(grep, sizeof grep, "\"name\":\"grep\",\"plugin\":\"grep\",\"kind\":\"map\",%s",
             want[r]);
    snprintf(topk, sizeof topk, "\"name\":\"topk\",\"plugin\":\"topk\",\"kind\":\"reduce\",%s",
             want[r]);
    CU_ASSERT_PTR_NOT_NULL(j ? strstr(j, grep) : NULL);
    CU_ASSERT_PTR_NOT_NULL(j ? strstr(j, topk) : NULL);
    if (!j || !strstr(j, grep)) fprintf(stderr, "want %s in %s\n", grep, j);
    free(j);
  }
}

static int suite_init(void) {
  signal(SIGPIPE, SIG_IGN);
  return cli_mkdir("/tmp/mpx-opts-XXXXXX");
}


/* `mpx plugins NAME` on a task plugin: its ports, and whether a reduce folds. */
static void test_plugins_ports(void) {
  const char *grep[] = {"plugins", "grep", NULL};
  CU_ASSERT_EQUAL(run_args(grep), 0);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\nKind         map\nFile         ") : NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\nPorts        named by its parameters\n") : NULL);
  free(out);
  const char *wc[] = {"plugins", "wordcount", NULL};
  CU_ASSERT_EQUAL(run_args(wc), 0);
  out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "\nPorts        out\nFold         yes") : NULL);
  free(out);
  const char *pr[] = {"plugins", "print", NULL};
  CU_ASSERT_EQUAL(run_args(pr), 0);
  out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NULL(out ? strstr(out, "Ports") : "");
  free(out);
}


/* The coordinator's peak RSS is its own: started by a process that has
 * touched 256 MiB (whose peak fork and exec would pass on to getrusage's
 * ru_maxrss), a small run reports well under that. */
static void test_peak_rss_own(void) {
  size_t big = (size_t)256 << 20;
  char *p = malloc(big);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  memset(p, 1, big);
  write_file("small.yaml", "defaults: {codec: raw}\nstages:\n"
                           "  - {plugin: range, params: {stop: 10}}\n"
                           "  - {plugin: print, params: {format: int64, path: /dev/null}}\n");
  char yaml[600], json[600];
  snprintf(yaml, sizeof yaml, "%s", in_dir("small.yaml"));
  snprintf(json, sizeof json, "%s", in_dir("small.json"));
  /* fork and exec, as a shell or Python does (a vfork-like spawn would
   * not pass the peak on). */
  pid_t pid = fork();
  if (pid == 0) {
    execl(MPX_BIN, "mpx", "run", yaml, "--no-summary", "--stats-json", json, (char *)NULL);
    _exit(127);
  }
  int status = 0;
  CU_ASSERT_EQUAL(waitpid(pid, &status, 0), pid);
  CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  free(p);
  char *js = read_file("small.json", NULL);
  const char *at = js ? strstr(js, "\"coordinator_peak_rss_kb\":") : NULL;
  unsigned long kb = at ? strtoul(at + strlen("\"coordinator_peak_rss_kb\":"), NULL, 10) : 0;
  CU_ASSERT_TRUE(kb > 0 && kb < 128 * 1024);
  if (!(kb > 0 && kb < 128 * 1024)) fprintf(stderr, "coordinator_peak_rss_kb %lu\n", kb);
  free(js);
}

MPX_TEST_MAIN_FIXTURE("cli_opts", suite_init, cli_rmdir, MPX_TEST(test_lines_stdin),
              MPX_TEST(test_lines_stdin_in_parts), MPX_TEST(test_sinks_stdout),
              MPX_TEST(test_stats_json_stdout), MPX_TEST(test_option_forms),
              MPX_TEST(test_plugins_codec), MPX_TEST(test_no_summary_dead_letters),
              MPX_TEST(test_ignored_options_refused), MPX_TEST(test_source_workers_take_effect),
              MPX_TEST(test_plugins_ports), MPX_TEST(test_peak_rss_own))
