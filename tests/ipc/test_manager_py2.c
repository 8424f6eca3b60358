/* CPython 2.7 with mpx managers, both ways, with the real interpreters:
 * the seed's classic 2.7 client and a 3.13 client sharing one queue of
 * `mpx manager serve`; 2.7 getting Queue.Empty, KeyError and RemoteError
 * as themselves; mpx's C client's typed calls against a 2.7 BaseManager
 * server. The Python side is py_manager_py2.py. A test skips (and says
 * so) only when its interpreter is absent. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpx.h"
#include "pythons.h"

static const char KEY[] = "mpx-py2-authkey";
static char keyfile[64];

static void rm_keyfile(void) { unlink(keyfile); }

static void setup(void) {
  if (keyfile[0]) return;
  snprintf(keyfile, sizeof keyfile, "/tmp/mpx-py2-key-%d", (int)getpid());
  atexit(rm_keyfile);
  FILE *f = fopen(keyfile, "wb");
  CU_ASSERT_FATAL(f != NULL);
  fputs(KEY, f);
  fclose(f);
  signal(SIGPIPE, SIG_IGN);
  mpx_test_plugin_path();
}

/* Runs `py py_manager_py2.py step addr keyfile`; 1 when it exited 0 and
 * printed "step ok". */
static int run_step(const char *py, const char *step, const char *addr) {
  const char *args[] = {step, addr, keyfile, NULL};
  char line[256], want[64];
  int fd, ok;
  pid_t pid = spawn_helper(py, "py_manager_py2.py", args, &fd);
  snprintf(want, sizeof want, "%s ok", step);
  ok = read_line(fd, line, sizeof line, 60) && strcmp(line, want) == 0;
  close(fd);
  int rc = mpx_test_wait_exit(pid);
  if (!ok || rc != 0) fprintf(stderr, "  %s under %s: exit %d\n", step, py, rc);
  return ok && rc == 0;
}

/* `mpx manager serve` on a free port publishing get_queue; its address. */
static pid_t serve(char *addr, size_t cap) {
  int p[2];
  CU_ASSERT_FATAL(pipe(p) == 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 1);
    close(p[0]);
    close(p[1]);
    execl(MPX_CLI, MPX_CLI, "manager", "serve", "--listen", "tcp://127.0.0.1:0",
          "--authkey-file", keyfile, "--expose", "queue:get_queue", (char *)NULL);
    _exit(127);
  }
  close(p[1]);
  CU_ASSERT_FATAL(read_line(p[0], addr, cap, 30));
  close(p[0]);
  return pid;
}

static void stop(pid_t pid) {
  kill(pid, SIGTERM);
  mpx_test_wait_exit(pid);
}

static void test_py2_and_py3_share_a_queue(void) {
  char py2[512], py3[512], addr[256];
  setup();
  if (!find_python_version(2, 7, py2, sizeof py2) ||
      !find_python_version(3, 13, py3, sizeof py3))
    return;
  pid_t srv = serve(addr, sizeof addr);
  CU_ASSERT(run_step(py2, "put2", addr));
  CU_ASSERT(run_step(py3, "get3", addr));
  CU_ASSERT(run_step(py2, "get2", addr));
  stop(srv);
}

static void test_py2_errors_as_themselves(void) {
  char py2[512], addr[256];
  setup();
  if (!find_python_version(2, 7, py2, sizeof py2)) return;
  pid_t srv = serve(addr, sizeof addr);
  CU_ASSERT(run_step(py2, "errors2", addr));
  stop(srv);
}

static mpx_obj_t *S(const char *s) { return mpx_obj_str(s, SIZE_MAX); }

static void test_c_client_against_py2_server(void) {
  char py2[512], addr[256];
  const char *args[] = {"serve2", "tcp://127.0.0.1:0", keyfile, NULL};
  mpx_mclient_opts_t o = {0};
  mpx_mclient_t *c = NULL;
  mpx_proxy_t *q = NULL, *d = NULL;
  mpx_obj_t *got = NULL;
  int fd;
  setup();
  if (!find_python_version(2, 7, py2, sizeof py2)) return;
  pid_t srv = spawn_helper(py2, "py_manager_py2.py", args, &fd);
  CU_ASSERT_FATAL(read_line(fd, addr, sizeof addr, 30));
  close(fd);
  o.protocol = 2; /* all Python 2 reads */
  o.timeout = 20;
  int rc = mpx_mclient_connect(&c, addr, KEY, strlen(KEY), &o);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) {
    fprintf(stderr, "  connect: %s\n", mpx_last_error());
    stop(srv);
    return;
  }
  CU_ASSERT(!mpx_mclient_is_mpx(c));
  /* the queue: text, bytes and a Python 2 str made by the server */
  CU_ASSERT_EQUAL_FATAL(mpx_mclient_create(c, &q, "get_queue", NULL, NULL), 0);
  CU_ASSERT_STRING_EQUAL(mpx_proxy_typeid(q), "get_queue");
  CU_ASSERT(mpx_proxy_exposes(q, "put"));
  mpx_obj_t *text = S("from c \xc3\xa9"), *raw = mpx_obj_bytes("\xff\x00", 2);
  CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, text, -1), 0);
  CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, raw, -1), 0);
  size_t n = 0;
  CU_ASSERT_EQUAL(mpx_proxy_queue_qsize(q, &n), 0);
  CU_ASSERT_EQUAL(n, 2);
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 5), 0);
  CU_ASSERT(got && mpx_obj_equal(got, text));
  mpx_obj_release(got);
  got = NULL;
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 5), 0);
  CU_ASSERT(got && mpx_obj_equal(got, raw));
  mpx_obj_release(got);
  got = NULL;
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0), MPX_EAGAIN); /* Queue.Empty */
  mpx_obj_release(got);
  got = NULL;
  /* a dict: set, get, KeyError */
  CU_ASSERT_EQUAL_FATAL(mpx_mclient_create(c, &d, "dict", NULL, NULL), 0);
  mpx_obj_t *k = S("k"), *v = mpx_obj_int(42), *missing = S("missing");
  CU_ASSERT_EQUAL(mpx_proxy_dict_set(d, k, v), 0);
  CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k, &got), 0);
  CU_ASSERT(got && mpx_obj_equal(got, v));
  mpx_obj_release(got);
  got = NULL;
  CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, missing, &got), MPX_ENOENT);
  mpx_obj_release(got);
  got = NULL;
  /* an unknown method: the 2.7 server's traceback text comes through */
  CU_ASSERT_EQUAL(mpx_proxy_call(d, "nosuch", NULL, NULL, &got, NULL), MPX_EPROTO);
  CU_ASSERT(strstr(mpx_last_error(), "nosuch") != NULL);
  mpx_obj_release(got);
  mpx_obj_release(text);
  mpx_obj_release(raw);
  mpx_obj_release(k);
  mpx_obj_release(v);
  mpx_obj_release(missing);
  mpx_proxy_free(q);
  mpx_proxy_free(d);
  mpx_mclient_free(c);
  stop(srv);
}

MPX_TEST_MAIN("manager_py2", MPX_TEST(test_py2_and_py3_share_a_queue),
              MPX_TEST(test_py2_errors_as_themselves),
              MPX_TEST(test_c_client_against_py2_server))
