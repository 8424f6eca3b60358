/* `mpx manager serve` and `mpx manager call` through the real binary, with
 * exact stdout, stderr and exit codes: every option in both forms
 * (`--opt=V` and `--opt V`), each form reaching the same check and the
 * same effect; `--` ending the options; call's arguments after TYPEID
 * taken as they are (a negative number, or something that looks like an
 * option, is a JSON argument); and the messages for an unknown option, a
 * missing value and a value given to a flag. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* Starts mpx ARGS with stdout and stderr to TAG.out and TAG.err in dir. */
static pid_t spawn_tagged(const char *tag, const char *const *args) {
  const char *argv[40] = {MPX_BIN};
  char out[64], err[64];
  int n = 1;
  for (; args[n - 1] && n < 39; n++) argv[n] = args[n - 1];
  argv[n] = NULL;
  snprintf(out, sizeof out, "%s.out", tag);
  snprintf(err, sizeof err, "%s.err", tag);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, in_dir(out), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, in_dir(err), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  pid_t pid;
  int rc = posix_spawn(&pid, MPX_BIN, &fa, NULL, (char **)argv, clean_env());
  posix_spawn_file_actions_destroy(&fa);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return pid;
}

/* Runs mpx ARGS to its end (TAG.out, TAG.err): its exit code. */
static int run_tagged(const char *tag, const char *const *args) {
  return mpx_test_reap(spawn_tagged(tag, args), 120);
}

/* dir/name's text is exactly want. */
static void expect_text(const char *name, const char *want) {
  char *got = read_file(name, NULL);
  CU_ASSERT_STRING_EQUAL(got ? got : "(none)", want);
  if (!got || strcmp(got, want) != 0)
    fprintf(stderr, "%s: want [%s]\ngot [%s]\n", name, want, got ? got : "(none)");
  free(got);
}

/* `mpx manager serve ARGS...` started with its output to srv.out: its pid
 * once it has printed its address line, which must be want_addr. */
static pid_t serve_start(const char *const *args, const char *want_addr) {
  const char *argv[32] = {"manager", "serve"};
  int n = 2;
  for (; *args && n < 31; args++) argv[n++] = *args;
  argv[n] = NULL;
  pid_t pid = spawn_tagged("srv", argv);
  char *out = NULL;
  /* Wait for the line (or the server's end), however long it takes. */
  for (;;) {
    free(out);
    out = read_file("srv.out", NULL);
    if (out && strchr(out, '\n')) break;
    if (waitpid(pid, NULL, WNOHANG) != 0) {
      char *e = read_file("srv.err", NULL);
      fprintf(stderr, "--- mpx manager serve's stderr:\n%s---\n", e ? e : "");
      free(e);
      CU_FAIL_FATAL("mpx manager serve ended before printing its address");
    }
    mpx_test_sleep(0.01);
  }
  char want[600];
  snprintf(want, sizeof want, "%s\n", want_addr);
  CU_ASSERT_STRING_EQUAL(out, want);
  free(out);
  return pid;
}

static char addr[300], key[300];

/* `mpx manager call` with --connect and --authkey-file in the `form`
 * ("=" or " ") and then ARGS...: its exit code; output in call.out/err. */
static int call_form(const char *form, const char *const *args) {
  const char *argv[40] = {"manager", "call"};
  char c[400], k[400];
  int n = 2;
  if (form[0] == '=') {
    snprintf(c, sizeof c, "--connect=%s", addr);
    snprintf(k, sizeof k, "--authkey-file=%s", key);
    argv[n++] = c;
    argv[n++] = k;
  } else {
    argv[n++] = "--connect";
    argv[n++] = addr;
    argv[n++] = "--authkey-file";
    argv[n++] = key;
  }
  for (; *args && n < 39; args++) argv[n++] = *args;
  argv[n] = NULL;
  return run_tagged("call", argv);
}

/* call_form, then exit code, stdout and stderr exactly. */
static void expect_call(const char *form, const char *const *args, int code,
                        const char *out, const char *err) {
  int rc = call_form(form, args);
  CU_ASSERT_EQUAL(rc, code);
  if (rc != code) fprintf(stderr, "exit %d, want %d\n", rc, code);
  expect_text("call.out", out);
  expect_text("call.err", err);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The server's stop after `call --server shutdown`: exit 0, nothing on
 * stdout after its address line, on stderr nothing (err NULL) or a line
 * that holds err. */
static void serve_shutdown(pid_t srv, const char *err) {
  expect_call(" ", ARGS("--server", "shutdown"), 0, "null\n", "");
  CU_ASSERT_EQUAL(mpx_test_reap(srv, 120), 0);
  char want[600];
  snprintf(want, sizeof want, "%s\n", addr);
  expect_text("srv.out", want);
  if (err == NULL) {
    expect_text("srv.err", "");
    return;
  }
  char *got = read_file("srv.err", NULL);
  CU_ASSERT_PTR_NOT_NULL(got ? strstr(got, err) : NULL);
  CU_ASSERT_EQUAL(got ? strchr(got, '\n') - got + 1 : 0, got ? (long)strlen(got) : -1);
  if (!got || !strstr(got, err)) fprintf(stderr, "srv.err: want [%s] in [%s]\n", err, got);
  free(got);
}

/* dir/name's text starts with want. */
static bool starts_with(const char *name, const char *want) {
  char *got = read_file(name, NULL);
  bool ok = got && strncmp(got, want, strlen(want)) == 0;
  if (!ok) fprintf(stderr, "%s: want [%s...]\ngot [%s]\n", name, want, got ? got : "(none)");
  free(got);
  return ok;
}

/* The scratch directory and the key file, made by whichever test runs
 * first. */
static void setup(void) {
  if (dir[0] != '\0') return;
  cli_mkdir("/tmp/mpx-mgrcli-XXXXXX");
  write_file("key", "secret");
  snprintf(key, sizeof key, "%s", in_dir("key"));
}

/* Every serve option in either form takes effect: --expose (a queue of
 * one: a second put without blocking fails; a dict), --max-frame (a
 * request longer than 4096 bytes closes its connection, shorter ones
 * still served), --max-connections and --legacy-auth (the server starts
 * and serves). */
static void serve_with(const char *form) {
  char a[8][400];
  bool eq = form[0] == '=';
  snprintf(addr, sizeof addr, "unix:%s", in_dir(eq ? "s-eq" : "s-sp"));
  const char *names[] = {"--listen", "--authkey-file", "--expose", "--expose",
                         "--max-connections", "--max-frame"};
  const char *vals[] = {addr, key, "queue:1:get_q", "dict:get_d", "8", "4096"};
  const char *argv[20];
  int n = 0;
  for (int i = 0; i < 6; i++) {
    if (eq) {
      snprintf(a[i], sizeof a[i], "%s=%s", names[i], vals[i]);
      argv[n++] = a[i];
    } else {
      argv[n++] = names[i];
      argv[n++] = vals[i];
    }
  }
  argv[n++] = "--legacy-auth";
  argv[n] = NULL;
  pid_t srv = serve_start(argv, addr);
  expect_call(form, ARGS("get_q", "put", "1"), 0, "null\n", "");
  CU_ASSERT_EQUAL(call_form(form, ARGS("get_q", "put", "2", "false")), 3); /* Full */
  expect_text("call.out", "");
  expect_call(form, ARGS("get_q", "get"), 0, "1\n", "");
  static char big[6000];
  memset(big, 'x', sizeof big - 3);
  big[0] = '"';
  big[sizeof big - 3] = '"';
  CU_ASSERT_EQUAL(call_form(form, ARGS("get_d", "__setitem__", "\"k\"", big)), 3);
  expect_text("call.out", "");
  expect_call(form, ARGS("get_d", "__setitem__", "\"k\"", "\"small\""), 0, "null\n", "");
  expect_call(form, ARGS("get_d", "__getitem__", "\"k\""), 0, "\"small\"\n", "");
  serve_shutdown(srv, "frame of 6038 bytes exceeds the limit of 4096; closing it");
}

static void test_serve_both_forms(void) {
  setup();
  serve_with("=");
  serve_with(" ");
}

/* serve ARGS exits 2 with exactly `err` on stderr (the usage hint after
 * it) and nothing on stdout. */
static void serve_usage(const char *const *args, const char *err) {
  const char *argv[32] = {"manager", "serve"};
  int n = 2;
  for (; *args && n < 31; args++) argv[n++] = *args;
  argv[n] = NULL;
  int rc = run_tagged("srv", argv);
  CU_ASSERT_EQUAL(rc, 2);
  if (rc != 2) fprintf(stderr, "exit %d, want 2\n", rc);
  char want[1000];
  snprintf(want, sizeof want, "mpx manager serve: %s\n(mpx manager serve --help for usage)\n",
           err);
  expect_text("srv.out", "");
  expect_text("srv.err", want);
}

/* Values in either form reach the same checks; unknown options, missing
 * values, a value for a flag, stray arguments (after `--` too): exit 2. */
static void test_serve_usage(void) {
  setup();
  char l[400], k[400];
  snprintf(l, sizeof l, "--listen=unix:%s", in_dir("s-u"));
  snprintf(k, sizeof k, "--authkey-file=%s", key);
  serve_usage(ARGS("--listen=http://x:1", k),
              "--listen 'http://x:1': expected tcp://HOST:PORT, unix:PATH or unix:@NAME");
  serve_usage(ARGS("--listen", "http://x:1", k),
              "--listen 'http://x:1': expected tcp://HOST:PORT, unix:PATH or unix:@NAME");
  serve_usage(ARGS(l, k, "--max-frame=lots"),
              "--max-frame 'lots': expected a positive number of bytes");
  serve_usage(ARGS(l, k, "--max-frame", "lots"),
              "--max-frame 'lots': expected a positive number of bytes");
  serve_usage(ARGS(l, k, "--max-connections=0"),
              "--max-connections '0': expected 1..1000000");
  serve_usage(ARGS(l, k, "--max-connections", "0"),
              "--max-connections '0': expected 1..1000000");
  serve_usage(ARGS(l, k, "--expose=teapot:x"),
              "--expose: unknown TYPE 'teapot' (queue, joinablequeue, dict, list, namespace, "
              "lock, rlock, event, condition, semaphore, boundedsemaphore, barrier:N, "
              "value:TYPECODE)");
  CU_ASSERT_EQUAL(run_tagged("srv", ARGS("manager", "serve", l, "--authkey-file=/nonexistent/k")), 2);
  expect_text("srv.err", "mpx manager serve: --authkey-file '/nonexistent/k': No such file or "
                         "directory\n");
  serve_usage(ARGS(l, k, "--bogus"), "unknown option '--bogus'");
  serve_usage(ARGS(l, k, "--bogus=1"), "unknown option '--bogus=1'");
  serve_usage(ARGS(l, k, "-x"), "unknown option '-x'");
  serve_usage(ARGS(l, k, "--legacy-auth=yes"), "option '--legacy-auth' takes no value");
  serve_usage(ARGS(k, "--listen"), "option '--listen' needs a value");
  serve_usage(ARGS(l, "--authkey-file"), "option '--authkey-file' needs a value");
  serve_usage(ARGS(l, k, "--expose"), "option '--expose' needs a value");
  serve_usage(ARGS(l, k, "--max-frame"), "option '--max-frame' needs a value");
  serve_usage(ARGS(l, k, "--max-connections"), "option '--max-connections' needs a value");
  serve_usage(ARGS(l, k, "extra"), "unexpected argument 'extra' (serve takes options only)");
  serve_usage(ARGS(l, k, "--", "extra"),
              "unexpected argument 'extra' (serve takes options only)");
  serve_usage(ARGS(k), "--listen ADDRESS is required");
  serve_usage(ARGS(l), "--authkey-file FILE is required");
  /* `--` alone ends the options: the server starts. */
  snprintf(addr, sizeof addr, "unix:%s", in_dir("s-dd"));
  pid_t srv = serve_start(ARGS("--listen", addr, k, "--"), addr);
  serve_shutdown(srv, NULL);
  /* --help and -h: usage on stdout, exit 0. */
  CU_ASSERT_EQUAL(run_tagged("srv", ARGS("manager", "serve", "--help")), 0);
  char *out = read_file("srv.out", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "usage: mpx manager serve --listen ADDRESS") : NULL);
  CU_ASSERT_EQUAL(run_tagged("srv", ARGS("manager", "serve", "-h")), 0);
  expect_text("srv.out", out ? out : "");
  free(out);
}

/* Appends option name with val to argv in the form ("=": one entry). */
static void add_opt(const char **argv, int *n, const char *form, const char *name,
                    const char *val) {
  static char bufs[16][400];
  static int next;
  if (form[0] == '=') {
    char *b = bufs[next++ % 16];
    snprintf(b, 400, "%s=%s", name, val);
    argv[(*n)++] = b;
  } else {
    argv[(*n)++] = name;
    argv[(*n)++] = val;
  }
}

/* call's options in both forms: --codec, --timeout, --kw (its value
 * holding '=' itself); an argument that starts with '-'. The queue get_q
 * holds one item at most. */
static void call_with(const char *form) {
  const char *a[16];
  int n = 0;
  add_opt(a, &n, form, "--codec", "msgpack");
  add_opt(a, &n, form, "--timeout", "30");
  a[n++] = "get_q", a[n++] = "put", a[n++] = "-5", a[n] = NULL;
  expect_call(form, a, 0, "null\n", "");
  n = 0;
  add_opt(a, &n, form, "--kw", "block=false");
  a[n++] = "get_q", a[n++] = "put", a[n++] = "6", a[n] = NULL;
  CU_ASSERT_EQUAL(call_form(form, a), 3); /* Full: block=false got there */
  expect_text("call.out", "");
  n = 0;
  add_opt(a, &n, form, "--codec", "pickle");
  add_opt(a, &n, form, "--timeout", "0");
  add_opt(a, &n, form, "--kw", "block=true");
  add_opt(a, &n, form, "--kw", "timeout=0.01");
  a[n++] = "get_q", a[n++] = "get", a[n] = NULL;
  expect_call(form, a, 0, "-5\n", "");
  CU_ASSERT_EQUAL(call_form(form, a), 3); /* Empty, after timeout=0.01 */
  expect_text("call.out", "");
}

/* Everything after TYPEID is an argument, as it is: a negative number,
 * something that looks like an option; `--` ends the options before
 * TYPEID; --server before or after the other options. */
static void test_call_both_forms(void) {
  setup();
  snprintf(addr, sizeof addr, "unix:%s", in_dir("s-call"));
  pid_t srv = serve_start(ARGS("--listen", addr, "--authkey-file", key, "--expose",
                               "queue:1:get_q"), addr);
  call_with("=");
  call_with(" ");
  expect_call(" ", ARGS("--", "get_q", "put", "-7"), 0, "null\n", "");
  expect_call("=", ARGS("get_q", "get", "-1"), 0, "-7\n", ""); /* block=-1: true */
  /* A negative number as the first operand is one, as it was: TYPEID. */
  CU_ASSERT_EQUAL(call_form(" ", ARGS("-5", "put")), 3);
  CU_ASSERT_TRUE(starts_with("call.err", "mpx manager call: create -5: "));
  CU_ASSERT_EQUAL(call_form(" ", ARGS("get_q", "put", "--kw=x")), 2);
  CU_ASSERT_TRUE(starts_with("call.err", "mpx manager call: argument '--kw=x' is no JSON: "));
  expect_call(" ", ARGS("--server", "number_of_objects"), 0, "1\n", "");
  expect_call("=", ARGS("--server", "--timeout=5", "--", "number_of_objects"), 0, "1\n", "");
  expect_call("=", ARGS("--timeout", "5", "--server", "number_of_objects"), 0, "1\n", "");
  serve_shutdown(srv, NULL);
}

/* call ARGS exits 2 with exactly `err` and the usage hint on stderr. */
static void call_usage(const char *const *args, const char *err) {
  char want[1000];
  snprintf(want, sizeof want, "mpx manager call: %s\n(mpx manager call --help for usage)\n",
           err);
  expect_call(" ", args, 2, "", want);
}

/* Bad values in either form, unknown options, missing values, a value for
 * --server: exit 2 before any connection (no server is listening). */
static void test_call_usage(void) {
  setup();
  snprintf(addr, sizeof addr, "unix:%s", in_dir("nobody"));
  call_usage(ARGS("--codec=yaml", "t", "m"), "--codec 'yaml': pickle or msgpack");
  call_usage(ARGS("--codec", "yaml", "t", "m"), "--codec 'yaml': pickle or msgpack");
  call_usage(ARGS("--timeout=-1", "t", "m"), "--timeout '-1': a number of seconds");
  call_usage(ARGS("--timeout", "-1", "t", "m"), "--timeout '-1': a number of seconds");
  call_usage(ARGS("--timeout=", "t", "m"), "--timeout '': a number of seconds");
  call_usage(ARGS("--kw=nothing", "t", "m"), "--kw 'nothing': expected NAME=JSON");
  call_usage(ARGS("--kw", "=1", "t", "m"), "--kw '=1': expected NAME=JSON");
  call_usage(ARGS("--bogus", "t", "m"), "unknown option '--bogus'");
  call_usage(ARGS("--bogus=1", "t", "m"), "unknown option '--bogus=1'");
  call_usage(ARGS("-x", "t", "m"), "unknown option '-x'");
  call_usage(ARGS("--server=yes", "m"), "option '--server' takes no value");
  call_usage(ARGS("--codec"), "option '--codec' needs a value");
  call_usage(ARGS("--timeout"), "option '--timeout' needs a value");
  call_usage(ARGS("--kw"), "option '--kw' needs a value");
  call_usage(ARGS("t"), "expected TYPEID METHOD [ARG ...]");
  /* A negative number first is an operand too (no option '-5'). */
  CU_ASSERT_EQUAL(run_tagged("call", ARGS("manager", "call", "-5", "put")), 2);
  expect_text("call.err", "mpx manager call: --connect and --authkey-file are required\n"
                          "(mpx manager call --help for usage)\n");
  call_usage(ARGS("--server"), "expected METHOD [ARG ...]");
  /* After `--`, "--server" is the TYPEID: a connection is tried (3). */
  CU_ASSERT_EQUAL(call_form(" ", ARGS("--", "--server", "m")), 3);
  CU_ASSERT_TRUE(starts_with("call.err", "mpx manager call: connect "));
  /* --connect and --authkey-file themselves */
  const char *const bare[][8] = {
      {"manager", "call", "--connect", NULL},
      {"manager", "call", "--connect", addr, "--authkey-file", NULL},
      {"manager", "call", "--authkey-file", key, "t", "m", NULL},
  };
  const char *msgs[] = {"option '--connect' needs a value", "option '--authkey-file' needs a value",
                        "--connect and --authkey-file are required"};
  for (int i = 0; i < 3; i++) {
    char want[400];
    snprintf(want, sizeof want, "mpx manager call: %s\n(mpx manager call --help for usage)\n",
             msgs[i]);
    CU_ASSERT_EQUAL(run_tagged("call", bare[i]), 2);
    expect_text("call.err", want);
  }
  /* --help and -h: usage on stdout, exit 0. */
  CU_ASSERT_EQUAL(run_tagged("call", ARGS("manager", "call", "--help")), 0);
  char *out = read_file("call.out", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "usage: mpx manager call --connect ADDRESS") : NULL);
  CU_ASSERT_EQUAL(run_tagged("call", ARGS("manager", "call", "-h")), 0);
  expect_text("call.out", out ? out : "");
  free(out);
}

static void test_cleanup(void) {
  setup();
  cli_rmdir();
}

MPX_TEST_MAIN("manager_cli",
              MPX_TEST(test_serve_both_forms),
              MPX_TEST(test_serve_usage),
              MPX_TEST(test_call_both_forms),
              MPX_TEST(test_call_usage),
              MPX_TEST(test_cleanup))
