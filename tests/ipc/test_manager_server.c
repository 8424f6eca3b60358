/* The manager server (mpx/manager.h) against CPython 3's own clients: the
 * real `mpx manager serve` binary and an in-process mpx_manager_new, driven
 * by py_manager_client.py (standard library only: BaseManager subclasses,
 * the proxy types of multiprocessing.managers, raw frames through
 * multiprocessing.connection). Each Python step checks its own facts and
 * exits 0; the C side asserts exit codes, printed facts and the server's
 * counters. Plus the wire helpers (ipc/manager/manager_wire.h) in C. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "ipc/manager/manager_wire.h"
#include "mpx.h"
#include "../mpx_test.h"

static const char KEY[] = "mpx-test-authkey";
static char keyfile[64];
static char script[512];

static void write_file(const char *path, const void *data, size_t n) {
  FILE *f = fopen(path, "wb");
  CU_ASSERT_FATAL(f != NULL);
  CU_ASSERT_FATAL(fwrite(data, 1, n, f) == n);
  fclose(f);
}

static void rm_keyfile(void) { unlink(keyfile); }

static void setup(void) {
  if (keyfile[0]) return;
  snprintf(keyfile, sizeof keyfile, "/tmp/mpx-mgr-key-%d", (int)getpid());
  atexit(rm_keyfile);
  write_file(keyfile, KEY, strlen(KEY));
  snprintf(script, sizeof script, "%s/py_manager_client.py", PYHELPER_DIR);
  signal(SIGPIPE, SIG_IGN);
  mpx_test_plugin_path();
}

/* Starts `python3 py_manager_client.py step addr keyfile [arg]` with its
 * stdout on *fd. */
static pid_t spawn_py(const char *step, const char *addr, const char *arg,
                      int *fd) {
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execlp("python3", "python3", script, step, addr, keyfile, arg, (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  *fd = p[0];
  return pid;
}

/* Runs `python3 py_manager_client.py step addr keyfile [arg]`; its stdout
 * goes to out (NUL-terminated, may be NULL). Returns its exit code. */
static int run_py(const char *step, const char *addr, const char *arg,
                  char *out, size_t cap) {
  int fd;
  pid_t pid = spawn_py(step, addr, arg, &fd);
  size_t n = 0;
  char sink[256];
  for (;;) {
    ssize_t r = out ? read(fd, out + n, cap - 1 - n) : read(fd, sink, sizeof sink);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (out) {
      n += (size_t)r;
      if (n == cap - 1) out = NULL; /* full: drain the rest */
    }
  }
  if (out) out[n] = '\0';
  close(fd);
  return mpx_test_wait_exit(pid);
}

/* What is left to read on fd, up to cap - 1 bytes, NUL-terminated. */
static void read_all(int fd, char *buf, size_t cap) {
  size_t n = 0;
  ssize_t r;
  while (n + 1 < cap && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
  buf[n] = '\0';
}

/* The "parked\n" a step prints just before its blocking call. */
static void expect_parked(int fd) {
  char out[8];
  size_t n = 0;
  ssize_t r;
  while (n < 7 && (r = read(fd, out + n, 7 - n)) > 0) n += (size_t)r;
  out[n] = '\0';
  CU_ASSERT(strcmp(out, "parked\n") == 0);
}

/* ---- the CLI ---------------------------------------------------------------- */

typedef struct {
  pid_t pid;
  char addr[256];
  int err_fd; /* its stderr, for usage tests */
} cli_t;

/* Starts `mpx manager serve ARGS...` (NULL-terminated); reads the address
 * line. Returns 0, or the exit code when it ended before printing one. */
static int cli_start(cli_t *c, const char *const *args) {
  int out[2], err[2];
  const char *argv[32];
  size_t n = 0;
  CU_ASSERT_FATAL(pipe(out) == 0 && pipe(err) == 0);
  argv[n++] = MPX_CLI;
  argv[n++] = "manager";
  argv[n++] = "serve";
  for (; *args && n < 30; args++) argv[n++] = *args;
  argv[n] = NULL;
  c->pid = fork();
  CU_ASSERT_FATAL(c->pid >= 0);
  if (c->pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]);
    close(out[1]);
    close(err[0]);
    close(err[1]);
    execv(MPX_CLI, (char *const *)argv);
    _exit(127);
  }
  close(out[1]);
  close(err[1]);
  c->err_fd = err[0];
  size_t len = 0;
  char ch;
  while (len + 1 < sizeof c->addr && read(out[0], &ch, 1) == 1 && ch != '\n')
    c->addr[len++] = ch;
  c->addr[len] = '\0';
  close(out[0]);
  if (len == 0) {
    int rc = mpx_test_wait_exit(c->pid);
    c->pid = -1;
    return rc;
  }
  return 0;
}

static int cli_wait(cli_t *c) {
  int rc = mpx_test_wait_exit(c->pid);
  close(c->err_fd);
  return rc;
}

static void test_cli_roundtrip_shutdown(void) {
  cli_t c;
  char out[4096];
  setup();
  const char *args[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile,
                        "--expose", "queue:get_queue", NULL};
  CU_ASSERT_FATAL(cli_start(&c, args) == 0);
  CU_ASSERT(strncmp(c.addr, "tcp://127.0.0.1:", 16) == 0);
  CU_ASSERT(run_py("roundtrip", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "roundtrip 44 values") != NULL);
  CU_ASSERT(run_py("shutdown", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "shutdown ok") != NULL);
  CU_ASSERT(cli_wait(&c) == 0);
}

static void test_cli_proto_and_types(void) {
  cli_t c;
  char out[4096];
  setup();
  const char *args[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile, NULL};
  CU_ASSERT_FATAL(cli_start(&c, args) == 0);
  CU_ASSERT(run_py("proto", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "proto 2 reply 80 02\n") != NULL);
  CU_ASSERT(strstr(out, "proto 3 reply 80 03\n") != NULL);
  CU_ASSERT(strstr(out, "proto 4 reply 80 04\n") != NULL);
  CU_ASSERT(strstr(out, "proto 5 reply 80 05\n") != NULL);
  CU_ASSERT(run_py("types", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "types ok") != NULL);
  CU_ASSERT(run_py("syncmanager", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "syncmanager ok") != NULL);
  kill(c.pid, SIGTERM);
  CU_ASSERT(cli_wait(&c) == 0);
}

/* Array slices come back as array.array and the common exceptions read
 * as CPython's server words them (compared with it, in the helper). */
static void test_cli_cpython_text(void) {
  cli_t c;
  char out[4096];
  setup();
  const char *args[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile, NULL};
  CU_ASSERT_FATAL(cli_start(&c, args) == 0);
  CU_ASSERT(run_py("cpython_text", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "cpython_text 16 same") != NULL);
  kill(c.pid, SIGTERM);
  CU_ASSERT(cli_wait(&c) == 0);
}

static void test_cli_challenge_forms(void) {
  cli_t c;
  char out[4096];
  setup();
  const char *modern[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile, NULL};
  CU_ASSERT_FATAL(cli_start(&c, modern) == 0);
  CU_ASSERT(run_py("challenge", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "challenge 59\n") != NULL); /* {sha256} + 40 */
  kill(c.pid, SIGINT);
  CU_ASSERT(cli_wait(&c) == 0);
  const char *legacy[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile,
                          "--legacy-auth", NULL};
  CU_ASSERT_FATAL(cli_start(&c, legacy) == 0);
  CU_ASSERT(run_py("challenge", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "challenge 31\n") != NULL); /* 20-byte nonce */
  kill(c.pid, SIGTERM);
  CU_ASSERT(cli_wait(&c) == 0);
}

static void test_cli_unix(void) {
  cli_t c;
  char out[4096], dir[] = "/tmp/mpx-mgr-XXXXXX", addr[128];
  struct stat st;
  setup();
  CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
  snprintf(addr, sizeof addr, "unix:%s/sock", dir);
  const char *args[] = {"--listen", addr, "--authkey-file", keyfile,
                        "--expose", "queue:get_queue", NULL};
  CU_ASSERT_FATAL(cli_start(&c, args) == 0);
  CU_ASSERT(strcmp(c.addr, addr) == 0);
  CU_ASSERT(stat(addr + 5, &st) == 0 && S_ISSOCK(st.st_mode));
  CU_ASSERT(run_py("roundtrip", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(run_py("refcount", c.addr, NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "refcount 1\n") != NULL); /* the published queue */
  kill(c.pid, SIGTERM);
  CU_ASSERT(cli_wait(&c) == 0);
  CU_ASSERT(stat(addr + 5, &st) != 0 && errno == ENOENT); /* removed */
  rmdir(dir);
}

/* Usage errors: exit 2 and a message naming what is wrong. */
static void expect_usage(const char *const *args, const char *needle) {
  cli_t c;
  char err[4096];
  int rc = cli_start(&c, args);
  if (rc == 0) { /* it started: that is the failure */
    kill(c.pid, SIGKILL);
    cli_wait(&c);
    CU_FAIL("mpx manager serve started on bad arguments");
    return;
  }
  CU_ASSERT(rc == 2);
  read_all(c.err_fd, err, sizeof err);
  close(c.err_fd);
  if (strstr(err, needle) == NULL) {
    fprintf(stderr, "stderr lacks '%s': %s\n", needle, err);
    CU_FAIL("usage message");
  }
}

static void test_cli_usage(void) {
  char empty[64], out[8192];
  setup();
  snprintf(empty, sizeof empty, "/tmp/mpx-mgr-empty-%d", (int)getpid());
  write_file(empty, "", 0);
  const char *a1[] = {"--listen", "http://x:1", "--authkey-file", keyfile, NULL};
  expect_usage(a1, "http://x:1");
  const char *a2[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", "/nonexistent/key", NULL};
  expect_usage(a2, "/nonexistent/key");
  const char *a3[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", empty, NULL};
  expect_usage(a3, "empty");
  const char *a4[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile,
                      "--expose", "teapot:x", NULL};
  expect_usage(a4, "teapot");
  const char *a5[] = {"--authkey-file", keyfile, NULL};
  expect_usage(a5, "--listen");
  const char *a6[] = {"--listen", "tcp://127.0.0.1:0", NULL};
  expect_usage(a6, "--authkey-file");
  const char *a7[] = {"--listen", "tcp://127.0.0.1:99999", "--authkey-file", keyfile, NULL};
  expect_usage(a7, "port");
  const char *a8[] = {"--listen", "tcp://127.0.0.1:0", "--authkey-file", keyfile,
                      "--max-frame", "lots", NULL};
  expect_usage(a8, "--max-frame");
  const char *a9[] = {"--bogus", NULL};
  expect_usage(a9, "--bogus");
  unlink(empty);
  /* --help: usage on stdout, exit 0 */
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(p[1], 1);
    execl(MPX_CLI, MPX_CLI, "manager", "serve", "--help", (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  read_all(p[0], out, sizeof out);
  close(p[0]);
  CU_ASSERT(mpx_test_wait_exit(pid) == 0);
  CU_ASSERT(strstr(out, "--expose") != NULL && strstr(out, "--legacy-auth") != NULL);
}

/* ---- in process -------------------------------------------------------------- */

static mpx_manager_t *inproc(unsigned flags, size_t max_frame, size_t max_objects,
                             unsigned max_conns) {
  mpx_manager_opts_t o = {0};
  mpx_manager_t *m = NULL;
  setup();
  o.address = "tcp://127.0.0.1:0";
  o.authkey = KEY;
  o.authkey_len = strlen(KEY);
  o.flags = flags;
  o.max_frame = max_frame;
  o.max_objects = max_objects;
  o.max_connections = max_conns;
  int rc = mpx_manager_new(&m, &o);
  if (rc != 0) fprintf(stderr, "mpx_manager_new: %s\n", mpx_last_error());
  CU_ASSERT_FATAL(rc == 0);
  return m;
}

static void test_inproc_roundtrip_stats(void) {
  char out[4096];
  mpx_manager_stats_t st;
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  CU_ASSERT(mpx_manager_expose(m, "get_queue", "Queue", NULL, NULL) == 0);
  CU_ASSERT(mpx_manager_expose(m, "get_queue", "Queue", NULL, NULL) == MPX_EEXIST);
  CU_ASSERT(mpx_manager_expose(m, "x", "Teapot", NULL, NULL) == MPX_EINVAL);
  CU_ASSERT(run_py("roundtrip", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.auth_failures == 0);
  CU_ASSERT(st.connections >= 3);
  CU_ASSERT(st.objects == 1); /* the queue: the step's proxies decref'd the
                               * rest when they went out of scope */
  CU_ASSERT(run_py("refcount", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "refcount 1\n") != NULL);
  CU_ASSERT(mpx_manager_wait(m, 0) == MPX_ETIMEDOUT);
  mpx_manager_free(m);
}

static void test_inproc_errors_badkey(void) {
  char out[4096];
  mpx_manager_stats_t st;
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  CU_ASSERT(run_py("errors", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "errors ok") != NULL);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.errors == 19); /* one per failing call of the step */
  CU_ASSERT(st.auth_failures == 0);
  CU_ASSERT(run_py("badkey", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.auth_failures == 1);
  mpx_manager_free(m);
}

static void test_inproc_legacy_flag(void) {
  char out[4096];
  mpx_manager_t *m = inproc(MPX_AUTH_LEGACY, 0, 0, 0);
  CU_ASSERT(run_py("challenge", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "challenge 31\n") != NULL);
  CU_ASSERT(run_py("badkey", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  mpx_manager_free(m);
}

static void test_inproc_blocking(void) {
  char out[4096];
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  CU_ASSERT(run_py("blocking", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "blocking ok") != NULL);
  CU_ASSERT(run_py("lockdeath", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "lockdeath ok") != NULL);
  mpx_manager_free(m);
}

static void test_inproc_malformed(void) {
  char out[4096];
  mpx_manager_stats_t st;
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  CU_ASSERT(run_py("malformed", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "malformed garbage: traceback\n") != NULL);
  CU_ASSERT(strstr(out, "malformed huge: closed\n") != NULL);
  CU_ASSERT(strstr(out, "malformed negative: closed\n") != NULL);
  CU_ASSERT(strstr(out, "malformed persistent: traceback\n") != NULL);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.auth_failures == 1); /* the oversized handshake */
  /* still serving */
  CU_ASSERT(run_py("refcount", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  mpx_manager_free(m);
}

static void test_inproc_limits(void) {
  char out[4096];
  mpx_manager_t *m = inproc(0, 100000, 0, 0);
  CU_ASSERT(run_py("limit_frame", mpx_manager_address(m), "100000", out, sizeof out) == 0);
  mpx_manager_free(m);
  m = inproc(0, 0, 6, 0);
  CU_ASSERT(run_py("limit_objects", mpx_manager_address(m), "6", out, sizeof out) == 0);
  mpx_manager_free(m);
  m = inproc(0, 0, 0, 3);
  CU_ASSERT(run_py("limit_conns", mpx_manager_address(m), "3", out, sizeof out) == 0);
  mpx_manager_free(m);
}

/* mpx_manager_stop answers a parked call; wait returns; nothing hangs. */
static void test_inproc_stop_parked(void) {
  char out[256];
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  int fd;
  pid_t pid = spawn_py("parked_stop", mpx_manager_address(m), NULL, &fd);
  expect_parked(fd); /* just before the get */
  mpx_manager_stop(m);
  CU_ASSERT(mpx_manager_wait(m, 60) == 0);
  read_all(fd, out, sizeof out);
  close(fd);
  CU_ASSERT(mpx_test_wait_exit(pid) == 0);
  CU_ASSERT(strstr(out, "answered: ") != NULL);
  mpx_manager_free(m);
}

/* A client killed while its get is parked: once the server has seen it go
 * (its connection count drops), the parked get is gone and the next item
 * goes to a live client. */
static void test_inproc_dead_getter(void) {
  char out[256];
  mpx_manager_stats_t st;
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  CU_ASSERT(mpx_manager_expose(m, "get_queue", "Queue", NULL, NULL) == 0);
  int fd;
  pid_t pid = spawn_py("parkget", mpx_manager_address(m), NULL, &fd);
  expect_parked(fd);
  close(fd);
  /* the get follows "parked": give it up to 2 s to reach the server
   * (the request count moves), then kill; either way no item may be lost */
  mpx_manager_stats(m, &st);
  uint64_t r0 = st.requests;
  for (int i = 0; i < 2000 && st.requests == r0; i++) {
    mpx_test_sleep(0.001);
    mpx_manager_stats(m, &st);
  }
  kill(pid, SIGKILL);
  CU_ASSERT(mpx_test_wait_exit(pid) == -SIGKILL);
  for (int i = 0; i < 30000; i++) { /* until the server saw the EOFs */
    mpx_manager_stats(m, &st);
    if (st.open_connections == 0) break;
    mpx_test_sleep(0.001);
  }
  CU_ASSERT_FATAL(st.open_connections == 0);
  CU_ASSERT(run_py("putget", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "putget ok") != NULL);
  mpx_manager_free(m);
}

/* A peer that never answers the challenge is closed after the handshake
 * deadline (30 s; the internal MPX__MANAGER_HANDSHAKE_TIMEOUT shortens it
 * here) and counted; authenticated clients are not affected. */
static void test_inproc_handshake_deadline(void) {
  char out[256];
  mpx_manager_stats_t st;
  setenv("MPX__MANAGER_HANDSHAKE_TIMEOUT", "0.5", 1);
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  unsetenv("MPX__MANAGER_HANDSHAKE_TIMEOUT");
  CU_ASSERT(run_py("silent", mpx_manager_address(m), NULL, out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "silent: closed") != NULL);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.auth_failures == 1);
  /* a persistent connection lives past the deadline */
  CU_ASSERT(run_py("linger", mpx_manager_address(m), "1.5", out, sizeof out) == 0);
  CU_ASSERT(strstr(out, "linger ok") != NULL);
  mpx_manager_stats(m, &st);
  CU_ASSERT(st.auth_failures == 1);
  mpx_manager_free(m);
}

/* A manager on the caller's loop: python runs under uv_spawn; its exit
 * frees the manager; the loop then ends with nothing left open. */
static mpx_manager_t *ul_manager;
static int64_t ul_status = -1;

static void ul_exit(uv_process_t *p, int64_t status, int sig) {
  ul_status = sig ? -sig : status;
  mpx_manager_free(ul_manager);
  uv_close((uv_handle_t *)p, NULL);
}

static void test_user_loop(void) {
  uv_loop_t loop;
  uv_process_t proc;
  mpx_manager_opts_t o = {0};
  setup();
  CU_ASSERT_FATAL(uv_loop_init(&loop) == 0);
  o.authkey = KEY;
  o.authkey_len = strlen(KEY);
  o.loop = &loop;
  CU_ASSERT_FATAL(mpx_manager_new(&ul_manager, &o) == 0);
  CU_ASSERT(strncmp(mpx_manager_address(ul_manager), "tcp://127.0.0.1:", 16) == 0);
  CU_ASSERT(mpx_manager_expose(ul_manager, "get_queue", "JoinableQueue", NULL, NULL) == 0);
  char *args[] = {"python3", script, "refcount", (char *)mpx_manager_address(ul_manager),
                  keyfile, NULL};
  uv_stdio_container_t io[3] = {{UV_IGNORE, {0}}, {UV_INHERIT_FD, {.fd = 2}},
                                {UV_INHERIT_FD, {.fd = 2}}};
  uv_process_options_t po = {.exit_cb = ul_exit, .file = "python3", .args = args,
                             .stdio_count = 3, .stdio = io};
  CU_ASSERT_FATAL(uv_spawn(&loop, &proc, &po) == 0);
  uv_run(&loop, UV_RUN_DEFAULT);
  CU_ASSERT(ul_status == 0);
  CU_ASSERT(uv_loop_close(&loop) == 0);
}

/* ---- raw frames from C: msgpack and pickle on one connection ---------------------- */

/* Sends msg in wire w, returns the reply (the caller's) and the wire it came in. */
static mpx_obj_t *roundtrip(mpx_conn_t *c, const char *codec, int proto,
                            mpx_obj_t *msg, mpx__wire_t *got) {
  mpx__wire_t w;
  mpx_wbuf_t b;
  void *buf;
  size_t n;
  mpx_obj_t *reply = NULL;
  CU_ASSERT_FATAL(mpx__wire_get(&w, codec, proto) == 0);
  mpx_wbuf_init(&b);
  CU_ASSERT_FATAL(mpx__wire_encode(&w, msg, &b) == 0);
  mpx_obj_release(msg);
  CU_ASSERT_FATAL(mpx_conn_send_bytes(c, b.data, b.len, 10) == 0);
  mpx_wbuf_free(&b);
  CU_ASSERT_FATAL(mpx_conn_recv_bytes(c, &buf, &n, 0, 30) == 0);
  CU_ASSERT_FATAL(mpx__wire_sniff(buf, n, got) == 0);
  CU_ASSERT_FATAL(mpx__wire_decode(got, buf, n, 1 << 20, &reply) == 0);
  free(buf);
  return reply;
}

static void test_inproc_msgpack(void) {
  mpx_manager_t *m = inproc(0, 0, 0, 0);
  mpx_conn_t *c;
  mpx__wire_t got;
  const char *kind, *ident;
  const mpx_obj_t *payload;
  int rc = mpx_client(&c, mpx_manager_address(m), KEY, strlen(KEY), 0, 10);
  if (rc != 0) fprintf(stderr, "mpx_client: %s\n", mpx_last_error());
  CU_ASSERT_FATAL(rc == 0);
  mpx_obj_t *a = mpx_obj_tuple(1);
  mpx_obj_append(a, mpx_obj_str("t", 1));
  mpx_obj_t *r = roundtrip(c, "msgpack", 0, mpx__wire_request(NULL, "accept_connection", a, NULL), &got);
  mpx_obj_release(a);
  CU_ASSERT(strcmp(got.codec->name, "msgpack") == 0);
  CU_ASSERT(mpx__wire_reply_parse(r, &kind, &payload) == 0 && strcmp(kind, "#RETURN") == 0);
  mpx_obj_release(r);
  /* create a Queue in msgpack: (ident, exposed) */
  a = mpx_obj_tuple(1);
  mpx_obj_append(a, mpx_obj_str("Queue", 5));
  r = roundtrip(c, "msgpack", 0, mpx__wire_request(NULL, "create", a, NULL), &got);
  mpx_obj_release(a);
  CU_ASSERT_FATAL(mpx__wire_reply_parse(r, &kind, &payload) == 0 && strcmp(kind, "#RETURN") == 0);
  size_t n;
  ident = mpx_obj_str_data(mpx_obj_item(payload, 0), &n);
  CU_ASSERT_FATAL(ident != NULL);
  char id[32];
  snprintf(id, sizeof id, "%s", ident);
  mpx_obj_release(r);
  /* put in msgpack, get in pickle 5, get again in pickle 2: Empty */
  a = mpx_obj_tuple(1);
  mpx_obj_append(a, mpx_obj_bytes("\x00\x01", 2));
  r = roundtrip(c, "msgpack", 0, mpx__wire_request(id, "put", a, NULL), &got);
  mpx_obj_release(a);
  mpx_obj_release(r);
  r = roundtrip(c, "pickle", 5, mpx__wire_request(id, "get", NULL, NULL), &got);
  CU_ASSERT(strcmp(got.codec->name, "pickle") == 0 && got.protocol == 5);
  CU_ASSERT(mpx__wire_reply_parse(r, &kind, &payload) == 0 && strcmp(kind, "#RETURN") == 0);
  const void *bp = mpx_obj_bytes_data(payload, &n);
  CU_ASSERT(bp && n == 2 && memcmp(bp, "\x00\x01", 2) == 0);
  mpx_obj_release(r);
  r = roundtrip(c, "pickle", 2, mpx__wire_request(id, "get_nowait", NULL, NULL), &got);
  CU_ASSERT(got.protocol == 2);
  CU_ASSERT(mpx__wire_reply_parse(r, &kind, &payload) == 0 && strcmp(kind, "#ERROR") == 0);
  CU_ASSERT(strcmp(mpx_obj_opaque_module(payload), "queue") == 0 &&
            strcmp(mpx_obj_opaque_name(payload), "Empty") == 0);
  mpx_obj_release(r);
  /* a server call on the persistent connection (mpx extension), msgpack */
  r = roundtrip(c, "msgpack", 0, mpx__wire_request(NULL, "number_of_objects", NULL, NULL), &got);
  CU_ASSERT(mpx__wire_reply_parse(r, &kind, &payload) == 0 && mpx_obj_get_int(payload) == 1);
  mpx_obj_release(r);
  /* shutdown there: one reply (not CPython's two), then the server stops */
  r = roundtrip(c, "msgpack", 0, mpx__wire_request(NULL, "shutdown", NULL, NULL), &got);
  CU_ASSERT(mpx__wire_reply_parse(r, &kind, &payload) == 0 && strcmp(kind, "#RETURN") == 0);
  mpx_obj_release(r);
  void *buf;
  CU_ASSERT(mpx_conn_recv_bytes(c, &buf, &n, 0, 30) == MPX_EPIPE);
  CU_ASSERT(mpx_manager_wait(m, 60) == 0);
  mpx_conn_free(c);
  mpx_manager_free(m);
}

/* ---- the wire helpers ------------------------------------------------------------ */

static void test_wire(void) {
  setup();
  mpx__wire_t w, w2;
  mpx_wbuf_t b;
  mpx_obj_t *msg, *back;
  const char *ident, *method, *typeid;
  const mpx_obj_t *args, *kwds, *addr;
  /* sniffing */
  int rc = mpx__wire_sniff("\x80\x02]", 3, &w);
  if (rc != 0) fprintf(stderr, "sniff: %s\n", mpx_last_error());
  CU_ASSERT_FATAL(rc == 0 && w.protocol == 2);
  CU_ASSERT(strcmp(w.codec->name, "pickle") == 0);
  CU_ASSERT(mpx__wire_sniff("\x80\x05", 2, &w) == 0 && w.protocol == 5);
  CU_ASSERT(mpx__wire_sniff("\x80\x06", 2, &w) == MPX_EPROTO);
  CU_ASSERT(mpx__wire_sniff("\x80\x01", 2, &w) == MPX_EPROTO);
  CU_ASSERT(mpx__wire_sniff("hello", 5, &w) == MPX_EPROTO);
  CU_ASSERT(mpx__wire_sniff("", 0, &w) == MPX_EPROTO);
  CU_ASSERT(mpx__wire_sniff("\x94", 1, &w) == 0 && strcmp(w.codec->name, "msgpack") == 0);
  CU_ASSERT(mpx__wire_sniff("\x93", 1, &w) == MPX_EPROTO); /* array of 3 */
  /* a request through each codec, with None ident and kwds */
  mpx_obj_t *a = mpx_obj_tuple(1);
  mpx_obj_append(a, mpx_obj_str("dict", 4));
  msg = mpx__wire_request(NULL, "create", a, NULL);
  CU_ASSERT_FATAL(msg != NULL);
  const char *codecs[] = {"pickle", "msgpack"};
  for (int i = 0; i < 2; i++) {
    CU_ASSERT_FATAL(mpx__wire_get(&w, codecs[i], i == 0 ? 2 : 0) == 0);
    mpx_wbuf_init(&b);
    CU_ASSERT(mpx__wire_encode(&w, msg, &b) == 0);
    CU_ASSERT(mpx__wire_sniff(b.data, b.len, &w2) == 0);
    CU_ASSERT(w2.codec == w.codec && w2.protocol == w.protocol);
    CU_ASSERT(mpx__wire_decode(&w2, b.data, b.len, 1 << 20, &back) == 0);
    CU_ASSERT(mpx__wire_request_parse(back, &ident, &method, &args, &kwds) == 0);
    CU_ASSERT(ident == NULL && strcmp(method, "create") == 0);
    CU_ASSERT(mpx_obj_len(args) == 1 && mpx_obj_len(kwds) == 0);
    mpx_obj_release(back);
    mpx_wbuf_free(&b);
  }
  mpx_obj_release(msg);
  mpx_obj_release(a);
  CU_ASSERT(mpx__wire_get(&w, "json", 0) == MPX_EINVAL);
  CU_ASSERT(mpx__wire_get(&w, "pickle", 1) == MPX_EINVAL);
  /* malformed requests */
  mpx_obj_t *bad = mpx_obj_tuple(4);
  mpx_obj_append(bad, mpx_obj_int(1));
  mpx_obj_append(bad, mpx_obj_str("m", 1));
  mpx_obj_append(bad, mpx_obj_tuple(0));
  mpx_obj_append(bad, mpx_obj_null());
  CU_ASSERT(mpx__wire_request_parse(bad, &ident, &method, &args, &kwds) == MPX_EPROTO);
  mpx_obj_release(bad);
  bad = mpx_obj_tuple(4);
  mpx_obj_append(bad, mpx_obj_null());
  mpx_obj_append(bad, mpx_obj_str("m\0x", 3)); /* NUL inside */
  mpx_obj_append(bad, mpx_obj_tuple(0));
  mpx_obj_append(bad, mpx_obj_null());
  CU_ASSERT(mpx__wire_request_parse(bad, &ident, &method, &args, &kwds) == MPX_EPROTO);
  mpx_obj_release(bad);
  bad = mpx_obj_array(0);
  CU_ASSERT(mpx__wire_request_parse(bad, &ident, &method, &args, &kwds) == MPX_EPROTO);
  mpx_obj_release(bad);
  /* None kwds reads as an empty map */
  bad = mpx_obj_tuple(4);
  mpx_obj_append(bad, mpx_obj_str("7f", 2));
  mpx_obj_append(bad, mpx_obj_str("get", 3));
  mpx_obj_append(bad, mpx_obj_array(0));
  mpx_obj_append(bad, mpx_obj_null());
  CU_ASSERT(mpx__wire_request_parse(bad, &ident, &method, &args, &kwds) == 0);
  CU_ASSERT(strcmp(ident, "7f") == 0 && mpx_obj_type(kwds) == MPX_OBJ_MAP);
  mpx_obj_release(bad);
  /* replies */
  msg = mpx__wire_reply("#RETURN", mpx_obj_int(5));
  const char *kind;
  const mpx_obj_t *payload;
  CU_ASSERT(mpx__wire_reply_parse(msg, &kind, &payload) == 0);
  CU_ASSERT(strcmp(kind, "#RETURN") == 0 && mpx_obj_get_int(payload) == 5);
  mpx_obj_release(msg);
  /* Token and addresses */
  addr = mpx__wire_address("tcp://127.0.0.1:50000");
  CU_ASSERT(mpx_obj_type(addr) == MPX_OBJ_TUPLE && mpx_obj_len(addr) == 2);
  CU_ASSERT(mpx_obj_get_int(mpx_obj_item(addr, 1)) == 50000);
  msg = mpx__wire_token("dict", addr, "7f00aa");
  mpx_obj_release((mpx_obj_t *)addr);
  CU_ASSERT(mpx__wire_token_parse(msg, &typeid, &addr, &ident) == 0);
  CU_ASSERT(strcmp(typeid, "dict") == 0 && strcmp(ident, "7f00aa") == 0);
  /* the documented pickle of this Token (reference section 2.4) */
  static const unsigned char tok_ref[] =
      "\x8c\x18multiprocessing.managers\x8c\x05Token\x93)\x81\x8c\x04" "dict"
      "\x8c\x09" "127.0.0.1M\x50\xc3\x86\x8c\x06" "7f00aa\x87" "b";
  CU_ASSERT_FATAL(mpx__wire_get(&w, "pickle", 4) == 0);
  mpx_wbuf_init(&b);
  CU_ASSERT(mpx__wire_encode(&w, msg, &b) == 0);
  CU_ASSERT(b.len == 2 + sizeof tok_ref - 1 + 1);
  CU_ASSERT(b.len > 2 && memcmp(b.data + 2, tok_ref, sizeof tok_ref - 1) == 0);
  mpx_wbuf_free(&b);
  mpx_obj_release(msg);
  addr = mpx__wire_address("unix:/tmp/x.sock");
  size_t n;
  CU_ASSERT(strcmp(mpx_obj_str_data(addr, &n), "/tmp/x.sock") == 0);
  mpx_obj_release((mpx_obj_t *)addr);
  addr = mpx__wire_address("unix:@abs");
  const char *s = mpx_obj_str_data(addr, &n);
  CU_ASSERT(n == 4 && s[0] == '\0' && memcmp(s + 1, "abs", 3) == 0);
  mpx_obj_release((mpx_obj_t *)addr);
  addr = mpx__wire_address("tcp://[::1]:7");
  CU_ASSERT(strcmp(mpx_obj_str_data(mpx_obj_item(addr, 0), &n), "::1") == 0);
  mpx_obj_release((mpx_obj_t *)addr);
  CU_ASSERT(mpx__wire_address("udp://x:1") == NULL);
  /* exceptions */
  msg = mpx__wire_exception("queue", "Empty", NULL);
  CU_ASSERT(mpx_obj_opaque_kind(msg) == MPX_OPAQUE_REDUCE);
  CU_ASSERT(strcmp(mpx_obj_opaque_module(msg), "queue") == 0);
  CU_ASSERT(mpx_obj_len(mpx_obj_opaque_args(msg)) == 0);
  mpx_obj_release(msg);
  msg = mpx__wire_exception("builtins", "KeyError", "k");
  CU_ASSERT(mpx_obj_len(mpx_obj_opaque_args(msg)) == 1);
  mpx_obj_release(msg);
}

MPX_TEST_MAIN("manager_server", MPX_TEST(test_wire), MPX_TEST(test_cli_usage),
              MPX_TEST(test_cli_roundtrip_shutdown), MPX_TEST(test_cli_proto_and_types),
              MPX_TEST(test_cli_cpython_text),
              MPX_TEST(test_cli_challenge_forms), MPX_TEST(test_cli_unix),
              MPX_TEST(test_inproc_roundtrip_stats), MPX_TEST(test_inproc_errors_badkey),
              MPX_TEST(test_inproc_legacy_flag), MPX_TEST(test_inproc_blocking),
              MPX_TEST(test_inproc_malformed), MPX_TEST(test_inproc_limits),
              MPX_TEST(test_inproc_stop_parked), MPX_TEST(test_inproc_msgpack),
              MPX_TEST(test_inproc_dead_getter), MPX_TEST(test_inproc_handshake_deadline),
              MPX_TEST(test_user_loop))
