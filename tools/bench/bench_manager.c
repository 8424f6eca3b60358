/* Manager figures: proxy calls from one client to a manager server in
 * another process, over TCP (127.0.0.1) and a Unix socket:
 *
 *   manager.<tcp|unix>.*              the mpx client on an mpx server
 *   manager.<tcp|unix>.pyclient.*     CPython's client (SyncManager
 *                                     proxies, python/manager_bench.py) on
 *                                     the mpx server
 *   manager.<tcp|unix>.on_pyserver.*  the mpx client on CPython's
 *                                     SyncManager server
 *
 * each with
 *
 *   .rtt.median   us, one Value.get() round trip (the median of many)
 *   .rtt.p99      us, its 99th percentile
 *   .queue_pairs  k/s, put(i) then get() on a Queue
 *   .dict_ops     k/s, d[k] = v and d[k] (each one op)
 *
 * python/manager_bench.py run alone prints python.manager.<tcp|unix>.*,
 * CPython's client on CPython's server, the pair of manager.<...>.*.
 * Throughputs are the median of --runs repetitions. The figures that need
 * python3 are skipped (with a note on stderr) when it is missing.
 *
 *   bench_manager [--runs N] [--quick] */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"

static const char KEY[] = "bench-manager-key";
static const char KEYHEX[] = "62656e63682d6d616e616765722d6b6579";
#define KEYLEN (sizeof KEY - 1)

static int runs = 5, quick = 0;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_manager: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

/* ---- the measurements of one client ------------------------------------- */

static void measure(const char *addr, const char *name) {
  mpx_mclient_t *c;
  mpx_proxy_t *v, *q, *d;
  mpx_obj_t *args, *got = NULL;
  int n_rtt = quick ? 2000 : 20000, n_tp = quick ? 2000 : 10000, rc;
  double *t = malloc(sizeof *t * (size_t)n_rtt), *rates = malloc(sizeof *rates * (size_t)runs);

  if ((rc = mpx_mclient_connect(&c, addr, KEY, KEYLEN, NULL)) != 0) die("connect", rc);
  args = mpx_obj_tuple(2);
  mpx_obj_append(args, mpx_obj_str("i", 1));
  mpx_obj_append(args, mpx_obj_int(0));
  if ((rc = mpx_mclient_create(c, &v, "Value", args, NULL)) != 0) die("create Value", rc);
  mpx_obj_release(args);
  for (int i = 0; i < 200; i++) {
    if ((rc = mpx_proxy_value_get(v, &got)) != 0) die("Value.get", rc);
    mpx_obj_release(got);
  }
  for (int i = 0; i < n_rtt; i++) {
    double t0 = bench_now();
    rc = mpx_proxy_value_get(v, &got);
    t[i] = bench_now() - t0;
    if (rc != 0) die("Value.get", rc);
    mpx_obj_release(got);
  }
  bench_sort(t, n_rtt);
  printf("%s.rtt.median %.1f us\n", name, t[n_rtt / 2] * 1e6);
  printf("%s.rtt.p99 %.1f us\n", name, t[(int)(n_rtt * 0.99)] * 1e6);

  if ((rc = mpx_mclient_create(c, &q, "Queue", NULL, NULL)) != 0) die("create Queue", rc);
  for (int r = 0; r < runs; r++) {
    double t0 = bench_now();
    for (int i = 0; i < n_tp; i++) {
      mpx_obj_t *it = mpx_obj_int(i);
      if ((rc = mpx_proxy_queue_put(q, it, -1)) != 0) die("put", rc);
      mpx_obj_release(it);
      if ((rc = mpx_proxy_queue_get(q, &got, -1)) != 0) die("get", rc);
      mpx_obj_release(got);
    }
    rates[r] = n_tp / (bench_now() - t0);
  }
  bench_sort(rates, runs);
  printf("%s.queue_pairs %.1f k/s\n", name, rates[runs / 2] / 1e3);

  if ((rc = mpx_mclient_create(c, &d, "dict", NULL, NULL)) != 0) die("create dict", rc);
  for (int r = 0; r < runs; r++) {
    double t0 = bench_now();
    for (int i = 0; i < n_tp; i++) {
      mpx_obj_t *k = mpx_obj_int(i & 63), *val = mpx_obj_int(i);
      if ((rc = mpx_proxy_dict_set(d, k, val)) != 0) die("d[k] = v", rc);
      if ((rc = mpx_proxy_dict_get(d, k, &got)) != 0) die("d[k]", rc);
      mpx_obj_release(got);
      mpx_obj_release(k);
      mpx_obj_release(val);
    }
    rates[r] = 2.0 * n_tp / (bench_now() - t0);
  }
  bench_sort(rates, runs);
  printf("%s.dict_ops %.1f k/s\n", name, rates[runs / 2] / 1e3);
  fflush(stdout);
  mpx_proxy_free(v);
  mpx_proxy_free(q);
  mpx_proxy_free(d);
  mpx_mclient_free(c);
  free(t);
  free(rates);
}

/* ---- servers and the Python client --------------------------------------- */

static char script[4096];

static int have_python(void) {
  return system("python3 -c '' >/dev/null 2>&1") == 0;
}

/* Runs manager_bench.py with args; its stdout is ours. With out_fd, its
 * stdout comes back on a pipe instead and the pid is returned at once. */
static pid_t run_py(const char *const *args, int *out_fd) {
  const char *argv[16];
  int n = 0, p[2];
  pid_t pid;
  argv[n++] = "python3";
  argv[n++] = script;
  while (*args != NULL && n < 15) argv[n++] = *args++;
  argv[n] = NULL;
  if (out_fd != NULL && pipe(p) != 0) die("pipe", MPX_EUNKNOWN);
  fflush(stdout);
  if ((pid = fork()) < 0) die("fork", MPX_EUNKNOWN);
  if (pid == 0) {
    if (out_fd != NULL) {
      dup2(p[1], 1);
      close(p[0]);
      close(p[1]);
    }
    execvp("python3", (char *const *)argv);
    _exit(127);
  }
  if (out_fd != NULL) {
    close(p[1]);
    *out_fd = p[0];
  } else {
    int st;
    waitpid(pid, &st, 0);
  }
  return pid;
}

static void read_line(int fd, char *buf, size_t cap) {
  size_t n = 0;
  while (n + 1 < cap && read(fd, buf + n, 1) == 1 && buf[n] != '\n') n++;
  buf[n] = '\0';
  if (n == 0) die("a server printed no address", MPX_EPROTO);
}

/* An mpx server in a child process; its address in addr. */
static pid_t start_mpx_server(const char *listen, char *addr, size_t cap) {
  int p[2];
  pid_t pid;
  if (pipe(p) != 0) die("pipe", MPX_EUNKNOWN);
  fflush(stdout);
  if ((pid = fork()) < 0) die("fork", MPX_EUNKNOWN);
  if (pid == 0) {
    mpx_manager_opts_t o = {.address = listen, .authkey = KEY,
                            .authkey_len = KEYLEN};
    mpx_manager_t *m;
    int rc = mpx_manager_new(&m, &o);
    close(p[0]);
    if (rc != 0) die("mpx_manager_new", rc);
    if (write(p[1], mpx_manager_address(m), strlen(mpx_manager_address(m))) < 0 ||
        write(p[1], "\n", 1) != 1)
      _exit(1);
    close(p[1]);
    mpx_manager_wait(m, -1);
    mpx_manager_free(m);
    _exit(0);
  }
  close(p[1]);
  read_line(p[0], addr, cap);
  close(p[0]);
  return pid;
}

static void shutdown_server(const char *addr, pid_t pid) {
  mpx_mclient_t *c;
  int rc, st;
  if ((rc = mpx_mclient_connect(&c, addr, KEY, KEYLEN, NULL)) != 0)
    die("connect for shutdown", rc);
  mpx_mclient_server_call(c, "shutdown", NULL, NULL);
  mpx_mclient_free(c);
  waitpid(pid, &st, 0);
}

int main(int argc, char **argv) {
  char runs_s[16], addr[256], sock[128], name[128];
  int py;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) quick = 1;
    else {
      fprintf(stderr, "usage: bench_manager [--runs N] [--quick]\n");
      return 2;
    }
  }
  if (runs < 1) runs = 1;
  snprintf(runs_s, sizeof runs_s, "%d", runs);
  snprintf(script, sizeof script, "%s", MANAGER_BENCH_PY);
  snprintf(sock, sizeof sock, "unix:/tmp/mpx-bench-manager-%d", (int)getpid());
  signal(SIGPIPE, SIG_IGN);
  py = have_python();
  if (!py) fprintf(stderr, "bench_manager: no python3: Python figures skipped\n");

  for (int k = 0; k < 2; k++) {
    const char *kind = k == 0 ? "tcp" : "unix";
    const char *listen = k == 0 ? "tcp://127.0.0.1:0" : sock;
    pid_t srv = start_mpx_server(listen, addr, sizeof addr);
    snprintf(name, sizeof name, "manager.%s", kind);
    measure(addr, name);
    if (py) {
      char pyname[128];
      const char *a[] = {"--connect", addr, "--authkey-hex", KEYHEX, "--name",
                         pyname, "--runs", runs_s, quick ? "--quick" : NULL,
                         NULL};
      snprintf(pyname, sizeof pyname, "manager.%s.pyclient", kind);
      run_py(a, NULL);
    }
    shutdown_server(addr, srv);

    if (py) {
      const char *a[] = {"--serve", listen, "--authkey-hex", KEYHEX, NULL};
      int fd;
      srv = run_py(a, &fd);
      read_line(fd, addr, sizeof addr);
      close(fd);
      snprintf(name, sizeof name, "manager.%s.on_pyserver", kind);
      measure(addr, name);
      shutdown_server(addr, srv);
    }
  }
  return 0;
}
