/* Tests of the process API under every start method. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "targets.h"

#ifndef TARGETS_SO
#error TARGETS_SO must name the test targets library
#endif

static const mpx_start_method_t methods[] = {
    MPX_START_FORK, MPX_START_FORKSERVER, MPX_START_SPAWN};
#define FOR_EACH_METHOD(m)                                                   \
  for (size_t mi_ = 0; mi_ < 3 && ((m) = methods[mi_], 1); mi_++)

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Target arguments naming one descriptor, everything else zero. */
static mpx_test_args_t fd_args(int fd) {
  mpx_test_args_t a;
  memset(&a, 0, sizeof a);
  a.fd = fd;
  return a;
}

static mpx_process_t *start_full(mpx_start_method_t m, mpx_target_fn fn,
                                 const void *args, size_t len, bool daemon,
                                 const int *fds, size_t nfds) {
  mpx_process_opts_t o;
  mpx_process_t *p = NULL;
  int rc;
  memset(&o, 0, sizeof o);
  o.target = fn;
  o.args = args;
  o.args_len = len;
  o.start_method = m;
  o.daemon = daemon;
  o.pass_fds = fds;
  o.n_pass_fds = nfds;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
  rc = mpx_process_start(p);
  if (rc != 0)
    fprintf(stderr, "start (%s) failed: %s\n", mpx_start_method_name(m),
            mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return p;
}

static mpx_process_t *start(mpx_start_method_t m, mpx_target_fn fn,
                            const mpx_test_args_t *a) {
  return start_full(m, fn, a, a ? sizeof *a : 0, false, NULL, 0);
}

static int finish(mpx_process_t *p) {
  int code = 12345;
  CU_ASSERT_EQUAL(mpx_process_join(p, 60), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), 0);
  CU_ASSERT_EQUAL(mpx_process_is_alive(p), 0);
  mpx_process_free(p);
  return code;
}

static int run(mpx_start_method_t m, mpx_target_fn fn, int value) {
  mpx_test_args_t a;
  memset(&a, 0, sizeof a);
  a.value = value;
  return finish(start(m, fn, &a));
}

static void test_exit_codes(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    CU_ASSERT_EQUAL(run(m, tt_return_value, 0), 0);
    CU_ASSERT_EQUAL(run(m, tt_return_value, 7), 7);
    CU_ASSERT_EQUAL(run(m, tt_exit_value, 3), 3);
    CU_ASSERT_EQUAL(run(m, tt_abort, 0), -SIGABRT);
    CU_ASSERT_EQUAL(run(m, tt_kill_self, 0), -SIGKILL);
  }
}

/* A sentinel that was made non-blocking (uv_poll does that to the fds it
 * watches) must not break a blocking join. */
static void test_join_nonblocking_sentinel(void) {
  mpx_test_args_t a;
  memset(&a, 0, sizeof a);
  a.value = 6;
  mpx_process_t *p = start(MPX_START_FORK, tt_exit_value, &a);
  int fd = mpx_process_sentinel(p);
  CU_ASSERT_EQUAL(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
  int code = -1;
  CU_ASSERT_EQUAL(mpx_process_join(p, -1), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), 0);
  CU_ASSERT_EQUAL(code, 6);
  mpx_process_free(p);
}

static void test_target_spec(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    mpx_process_opts_t o;
    mpx_process_t *p;
    mpx_test_args_t a;
    memset(&o, 0, sizeof o);
    memset(&a, 0, sizeof a);
    a.value = 42;
    o.target_spec = TARGETS_SO ":tt_return_value";
    o.args = &a;
    o.args_len = sizeof a;
    o.start_method = m;
    CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
    CU_ASSERT_EQUAL_FATAL(mpx_process_start(p), 0);
    CU_ASSERT_EQUAL(mpx_process_start_method(p), m);
    CU_ASSERT_EQUAL(finish(p), 42);
  }
}

static void test_join_timeout(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    mpx_process_t *p = start(m, tt_pause, NULL);
    double t0 = now(), dt;
    int code;
    CU_ASSERT_EQUAL(mpx_process_join(p, 0.2), MPX_ETIMEDOUT);
    dt = now() - t0;
    CU_ASSERT(dt >= 0.2);  /* never early */
    CU_ASSERT(dt < 10.0);  /* and it did return */
    CU_ASSERT_EQUAL(mpx_process_join(p, 0), MPX_ETIMEDOUT);
    CU_ASSERT_EQUAL(mpx_process_is_alive(p), 1);
    CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), MPX_EBUSY);
    CU_ASSERT_EQUAL(mpx_process_close(p), MPX_EBUSY);
    CU_ASSERT_EQUAL(mpx_process_kill(p), 0);
    CU_ASSERT_EQUAL(finish(p), -SIGKILL);
  }
}

static void test_signals(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    mpx_process_t *p = start(m, tt_pause, NULL);
    CU_ASSERT_EQUAL(mpx_process_terminate(p), 0);
    CU_ASSERT_EQUAL(finish(p), -SIGTERM);
    p = start(m, tt_pause, NULL);
    CU_ASSERT_EQUAL(mpx_process_kill(p), 0);
    CU_ASSERT_EQUAL(finish(p), -SIGKILL);
    p = start(m, tt_pause, NULL);
    CU_ASSERT_EQUAL(mpx_process_interrupt(p), 0);
    CU_ASSERT_EQUAL(finish(p), -SIGINT);
  }
}

static void test_signal_after_exit(void) {
  /* Signalling a child that has exited and been reaped is a no-op, never a
   * signal to whoever reused the pid. */
  mpx_process_t *p = start(MPX_START_FORK, tt_return_value, NULL);
  int code;
  CU_ASSERT_EQUAL(mpx_process_join(p, 60), 0);
  CU_ASSERT_EQUAL(mpx_process_kill(p), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), 0);
  CU_ASSERT_EQUAL(code, 0);
  mpx_process_free(p);
}

static void test_state_errors(void) {
  mpx_process_opts_t o;
  mpx_process_t *p;
  int code;
  memset(&o, 0, sizeof o);
  CU_ASSERT_EQUAL(mpx_process_new(&p, &o), MPX_EINVAL);
  o.target = tt_return_value;
  o.target_spec = "x.so:y";
  CU_ASSERT_EQUAL(mpx_process_new(&p, &o), MPX_EINVAL);
  o.target_spec = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
  CU_ASSERT_EQUAL(mpx_process_join(p, 0), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx_process_kill(p), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx_process_sentinel(p), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx_process_pid(p), 0);
  CU_ASSERT_EQUAL(mpx_process_is_alive(p), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_process_start(p), 0);
  CU_ASSERT_EQUAL(mpx_process_start(p), MPX_ESTATE);
  CU_ASSERT(mpx_process_pid(p) > 0);
  CU_ASSERT_EQUAL(finish(p), 0);
}

/* Runs `child` in a fork'd intermediate that starts a daemon with method m
 * and is then SIGKILLed; the daemon must die with it. This test process is
 * a subreaper, so orphans come back to it and their end can be checked. */
static void daemon_dies_with_parent(mpx_start_method_t m) {
  int fds[2], code, status;
  pid_t dpid = 0, got;
  mpx_test_args_t a;
  mpx_process_t *mid;
  struct pollfd pfd;
  char path[64];
  double deadline;

  CU_ASSERT_EQUAL_FATAL(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
  a = fd_args(fds[1]);
  a.method = (int)m;
  mid = start_full(MPX_START_FORK, tt_daemon_parent, &a, sizeof a, false,
                   NULL, 0);
  close(fds[1]);
  CU_ASSERT_EQUAL_FATAL(read(fds[0], &dpid, sizeof dpid),
                        (ssize_t)sizeof dpid);
  close(fds[0]);
  CU_ASSERT_FATAL(dpid > 0);
  /* The daemon is alive while its parent is. */
  pfd.fd = syscall(SYS_pidfd_open, dpid, 0);
  CU_ASSERT_FATAL(pfd.fd >= 0);
  pfd.events = POLLIN;
  CU_ASSERT_EQUAL(poll(&pfd, 1, 0), 0);

  CU_ASSERT_EQUAL(mpx_process_kill(mid), 0);
  code = finish(mid);
  CU_ASSERT_EQUAL(code, -SIGKILL);

  /* The pidfd turns readable when the daemon has exited. */
  CU_ASSERT_EQUAL(poll(&pfd, 1, 30000), 1);
  close(pfd.fd);
  /* Its zombie comes to us, the subreaper, once every process between us
   * has exited (ECHILD until then): it died of SIGKILL. */
  deadline = now() + 30;
  for (;;) {
    got = waitpid(dpid, &status, WNOHANG);
    if (got > 0 || (got < 0 && errno != ECHILD) || now() > deadline) break;
    usleep(1000);
  }
  CU_ASSERT_EQUAL(got, dpid);
  CU_ASSERT(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  snprintf(path, sizeof path, "/proc/%d", (int)dpid);
  CU_ASSERT_EQUAL(access(path, F_OK), -1);
  /* Reap whatever else came back (the forkserver of the intermediate). */
  while (waitpid(-1, &status, WNOHANG) > 0) {
  }
}

static void test_daemon_dies_with_parent_fork(void) {
  daemon_dies_with_parent(MPX_START_FORK);
}
static void test_daemon_dies_with_parent_forkserver(void) {
  daemon_dies_with_parent(MPX_START_FORKSERVER);
}
static void test_daemon_dies_with_parent_spawn(void) {
  daemon_dies_with_parent(MPX_START_SPAWN);
}

/* A thread holds a lock that every child takes. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static int hold_state; /* 1 = lock taken, 2 = release */

static void *holder(void *arg) {
  (void)arg;
  pthread_mutex_lock(&mpx_test_global_lock);
  pthread_mutex_lock(&hold_mu);
  hold_state = 1;
  pthread_cond_broadcast(&hold_cv);
  while (hold_state != 2) pthread_cond_wait(&hold_cv, &hold_mu);
  pthread_mutex_unlock(&hold_mu);
  pthread_mutex_unlock(&mpx_test_global_lock);
  return NULL;
}

static void test_forkserver_lock_held_by_thread(void) {
  enum { N = 50 };
  mpx_process_t *p[N];
  pthread_t th;
  int i, code;
  mpx_log_level_t lvl = mpx_log_get_level();

  CU_ASSERT_EQUAL_FATAL(pthread_create(&th, NULL, holder, NULL), 0);
  pthread_mutex_lock(&hold_mu);
  while (hold_state != 1) pthread_cond_wait(&hold_cv, &hold_mu);
  pthread_mutex_unlock(&hold_mu);

  /* Control: a fork child inherits the held lock and hangs on it. */
  mpx_log_set_level(MPX_LOG_ERROR); /* silence the expected fork warning */
  p[0] = start(MPX_START_FORK, tt_take_lock, NULL);
  mpx_log_set_level(lvl);
  CU_ASSERT_EQUAL(mpx_process_join(p[0], 0.5), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_process_kill(p[0]), 0);
  CU_ASSERT_EQUAL(finish(p[0]), -SIGKILL);

  /* The forkserver's children never saw that lock held. */
  for (i = 0; i < N; i++) p[i] = start(MPX_START_FORKSERVER, tt_take_lock, NULL);
  for (i = 0; i < N; i++) {
    code = -1;
    CU_ASSERT_EQUAL(mpx_process_join(p[i], 30), 0);
    CU_ASSERT_EQUAL(mpx_process_exitcode(p[i], &code), 0);
    CU_ASSERT_EQUAL(code, 0);
    if (mpx_process_is_alive(p[i])) mpx_process_kill(p[i]);
    mpx_process_join(p[i], -1);
    mpx_process_free(p[i]);
  }

  pthread_mutex_lock(&hold_mu);
  hold_state = 2;
  pthread_cond_broadcast(&hold_cv);
  pthread_mutex_unlock(&hold_mu);
  pthread_join(th, NULL);
}

static void spawn_error(const char *spec, int want, const char *w1,
                        const char *w2) {
  mpx_process_opts_t o;
  mpx_process_t *p;
  memset(&o, 0, sizeof o);
  o.target_spec = spec;
  o.start_method = MPX_START_SPAWN;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
  CU_ASSERT_EQUAL(mpx_process_start(p), want);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), w1));
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), w2));
  CU_ASSERT_EQUAL(mpx_process_pid(p), 0);
  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 0);
  mpx_process_free(p);
}

static void test_spawn_missing_object_and_symbol(void) {
  spawn_error("/nonexistent/libnothere.so:entry", MPX_EPLUGIN,
              "/nonexistent/libnothere.so", "entry");
  spawn_error(TARGETS_SO ":no_such_symbol", MPX_ENOSYM, TARGETS_SO,
              "no_such_symbol");
  spawn_error("no-colon-here", MPX_EINVAL, "no-colon-here", "path");
}

static void test_spawn_needs_shared_object(void) {
  /* A function of the test program itself cannot be named to mpx-worker. */
  mpx_process_opts_t o;
  mpx_process_t *p;
  memset(&o, 0, sizeof o);
  o.target = (mpx_target_fn)test_spawn_needs_shared_object;
  o.start_method = MPX_START_SPAWN;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
  CU_ASSERT_EQUAL(mpx_process_start(p), MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "lib.so:symbol"));
  mpx_process_free(p);
}

static int main_program_target(const void *a, size_t n) {
  (void)a;
  return (int)n; /* a function of the program, not of a library */
}

static void test_forkserver_calls_program_functions(void) {
  char buf[9] = "12345678";
  mpx_process_t *p = start_full(MPX_START_FORKSERVER, main_program_target,
                                buf, 9, false, NULL, 0);
  CU_ASSERT_EQUAL(finish(p), 9);
}

static pid_t ppid_of(pid_t pid) {
  char path[64], buf[512], *s;
  FILE *f;
  int ppid = -1;
  size_t n;
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  f = fopen(path, "r");
  if (f == NULL) return -1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  s = strrchr(buf, ')');
  if (s == NULL || sscanf(s + 2, "%*c %d", &ppid) != 1) return -1;
  return ppid;
}

static void test_forkserver_killed(void) {
  /* SIGKILL the forkserver under a running child: the child runs on, its
   * handle says so, its end is still seen (with the status lost), and the
   * next start launches a new server. */
  mpx_process_t *orphan = start(MPX_START_FORKSERVER, tt_pause, NULL);
  pid_t server = ppid_of(mpx_process_pid(orphan)), server2;
  int code, status;
  mpx_process_t *p;
  mpx_log_level_t lvl = mpx_log_get_level();

  CU_ASSERT_FATAL(server > 1 && server != getpid());
  CU_ASSERT_EQUAL_FATAL(kill(server, SIGKILL), 0);
  CU_ASSERT_EQUAL(waitpid(server, &status, 0), server);
  mpx_log_set_level(MPX_LOG_ERROR); /* the expected "status lost" warning */
  CU_ASSERT_EQUAL(mpx_process_join(orphan, 0.1), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_process_is_alive(orphan), 1);
  /* A child that waits: one that returns at once may be reaped by the new
   * server before its parent can be read from /proc. */
  p = start(MPX_START_FORKSERVER, tt_pause, NULL);
  mpx_log_set_level(lvl);
  server2 = ppid_of(mpx_process_pid(p));
  CU_ASSERT(server2 > 1 && server2 != server);
  CU_ASSERT_EQUAL(mpx_process_kill(p), 0);
  CU_ASSERT_EQUAL(mpx_process_join(p, 30), 0);
  mpx_process_free(p);
  /* and the new server reports its children's ends */
  p = start(MPX_START_FORKSERVER, tt_return_value, NULL);
  CU_ASSERT_EQUAL(finish(p), 0);

  CU_ASSERT_EQUAL(mpx_process_kill(orphan), 0);
  CU_ASSERT_EQUAL(mpx_process_join(orphan, 30), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(orphan, &code), MPX_EBROKEN);
  mpx_process_free(orphan);
}

static void test_forkserver_closes_inherited_fds(void) {
  int fds[2];
  mpx_test_args_t a;
  /* In a fresh fork child, whose own forkserver starts after the pipe. */
  CU_ASSERT_EQUAL(run(MPX_START_FORK, tt_forkserver_fd_check, 0), 0);
  /* The check can fail: a passed descriptor is open in the child. */
  CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
  a = fd_args(fds[0]);
  CU_ASSERT_EQUAL(finish(start_full(MPX_START_FORKSERVER, tt_fd_closed, &a,
                                    sizeof a, false, &fds[0], 1)), 1);
  close(fds[0]);
  close(fds[1]);
}

static void test_forkserver_pass_fds_keep_parent(void) {
  CU_ASSERT_EQUAL(run(MPX_START_FORK, tt_forkserver_low_fds_check, 0), 0);
}

static void test_active_children(void) {
  mpx_process_t *live, *done[2], *list[4];
  int fds[2], code, i;
  struct pollfd pfd;
  char path[64];
  pid_t pids[2];
  mpx_test_args_t a;

  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 0);
  CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
  a = fd_args(fds[0]);
  live = start_full(MPX_START_FORK, tt_wait_fd, &a, sizeof a, false, NULL, 0);
  for (i = 0; i < 2; i++) {
    done[i] = start(i ? MPX_START_FORKSERVER : MPX_START_FORK,
                    tt_return_value, NULL);
    pids[i] = mpx_process_pid(done[i]);
    /* Wait for the exit through the sentinel, without reaping. */
    pfd.fd = mpx_process_sentinel(done[i]);
    pfd.events = POLLIN;
    CU_ASSERT_EQUAL(poll(&pfd, 1, 30000), 1);
  }
  /* The forkserver reaps its children itself: give it the moment it needs
   * to write the status, by waiting on the status, not on a clock. */
  for (i = 0; i < 3000 && mpx_active_children(NULL, 0) != 1; i++)
    usleep(10000); /* up to 30 s: a loaded CI machine is slow */

  CU_ASSERT_EQUAL(mpx_active_children(list, 4), 1);
  CU_ASSERT_PTR_EQUAL(list[0], live);
  for (i = 0; i < 2; i++) {
    /* Reaped by active_children: the exit code is known without join, and
     * no zombie is left behind. */
    CU_ASSERT_EQUAL(mpx_process_exitcode(done[i], &code), 0);
    CU_ASSERT_EQUAL(code, 0);
    snprintf(path, sizeof path, "/proc/%d", (int)pids[i]);
    if (i == 0) CU_ASSERT_EQUAL(access(path, F_OK), -1);
    mpx_process_free(done[i]);
  }
  CU_ASSERT_EQUAL(write(fds[1], "x", 1), 1);
  CU_ASSERT_EQUAL(finish(live), 0);
  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 0);
  close(fds[0]);
  close(fds[1]);
}

static void test_free_running_detaches(void) {
  mpx_process_t *p = start(MPX_START_FORK, tt_pause, NULL);
  pid_t pid = mpx_process_pid(p);
  int status;
  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 1);
  mpx_process_free(p);
  /* Not listed any more, but still reaped by mpx once it ends. */
  CU_ASSERT_EQUAL(mpx_active_children(NULL, 0), 0);
  CU_ASSERT_EQUAL(kill(pid, SIGKILL), 0);
  CU_ASSERT_EQUAL(waitid(P_PID, pid, (siginfo_t[1]){0}, WEXITED | WNOWAIT), 0);
  mpx_active_children(NULL, 0);
  CU_ASSERT_EQUAL(waitpid(pid, &status, WNOHANG), -1); /* already reaped */
  CU_ASSERT_EQUAL(errno, ECHILD);
}

static void test_cpu_count(void) {
  cpu_set_t set;
  const char *expect = getenv("MPX_TEST_EXPECT_CPUS");
  int code;
  CU_ASSERT_EQUAL_FATAL(sched_getaffinity(0, sizeof set, &set), 0);
  CU_ASSERT_EQUAL(mpx_cpu_count(), CPU_COUNT(&set));
  if (expect) CU_ASSERT_EQUAL(mpx_cpu_count(), atoi(expect));
  /* A child pinned to one CPU counts one. */
  code = run(MPX_START_FORK, tt_cpu_count, 0);
  CU_ASSERT_EQUAL(code, 1);
  setenv("MPX_CPU_COUNT", "7", 1);
  CU_ASSERT_EQUAL(mpx_cpu_count(), 7);
  unsetenv("MPX_CPU_COUNT");
}

static void test_sentinel(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    int fds[2];
    mpx_test_args_t a;
    mpx_process_t *p;
    struct pollfd pfd;
    CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
    a = fd_args(fds[0]);
    p = start_full(m, tt_wait_fd, &a, sizeof a, false, &fds[0], 1);
    pfd.fd = mpx_process_sentinel(p);
    pfd.events = POLLIN;
    CU_ASSERT(pfd.fd >= 0);
    CU_ASSERT_EQUAL(poll(&pfd, 1, 0), 0);
    CU_ASSERT_EQUAL(write(fds[1], "x", 1), 1);
    CU_ASSERT_EQUAL(poll(&pfd, 1, 30000), 1);
    CU_ASSERT(pfd.revents & POLLIN);
    CU_ASSERT_EQUAL(finish(p), 0);
    close(fds[0]);
    close(fds[1]);
  }
}

static void test_large_args(void) {
  size_t n = 3 << 20, i;
  unsigned char *buf = malloc(n);
  mpx_start_method_t m;
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  for (i = 0; i < n; i++) buf[i] = (unsigned char)(i * 7 % 251);
  FOR_EACH_METHOD(m) {
    mpx_process_t *p = start_full(m, tt_check_pattern, buf, n, false, NULL, 0);
    CU_ASSERT_EQUAL(finish(p), 0);
  }
  buf[n / 2] ^= 1; /* the check can fail */
  CU_ASSERT_EQUAL(finish(start_full(MPX_START_FORKSERVER, tt_check_pattern,
                                    buf, n, false, NULL, 0)), 1);
  free(buf);
}

static void test_pass_fds(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    int fds[2], hi;
    char got[3] = {0};
    mpx_test_args_t a;
    CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
    /* A high number, unlikely to exist in the forkserver already. */
    hi = fcntl(fds[1], F_DUPFD_CLOEXEC, 200);
    CU_ASSERT_FATAL(hi >= 200);
    a = fd_args(hi);
    CU_ASSERT_EQUAL(finish(start_full(m, tt_write_fd, &a, sizeof a, false,
                                      &hi, 1)), 0);
    close(hi);
    close(fds[1]);
    CU_ASSERT_EQUAL(read(fds[0], got, 2), 2);
    CU_ASSERT_STRING_EQUAL(got, "ok");
    close(fds[0]);
  }
}

static void test_stdout_flushed(void) {
  mpx_start_method_t m;
  FOR_EACH_METHOD(m) {
    int fds[2];
    char got[32] = {0};
    mpx_test_args_t a;
    CU_ASSERT_EQUAL_FATAL(pipe2(fds, O_CLOEXEC), 0);
    a = fd_args(fds[1]);
    a.value = 7;
    CU_ASSERT_EQUAL(finish(start_full(m, tt_print, &a, sizeof a, false,
                                      &fds[1], 1)), 0);
    close(fds[1]);
    CU_ASSERT_EQUAL(read(fds[0], got, sizeof got - 1), 7);
    CU_ASSERT_STRING_EQUAL(got, "hello-7");
    close(fds[0]);
  }
}

static void test_identity(void) {
  mpx_start_method_t m;
  CU_ASSERT_STRING_EQUAL(mpx_process_name(mpx_current_process()),
                         "MainProcess");
  CU_ASSERT_PTR_NULL(mpx_parent_process());
  FOR_EACH_METHOD(m) {
    int daemon;
    for (daemon = 0; daemon < 2; daemon++) {
      mpx_process_opts_t o;
      mpx_process_t *p;
      mpx_test_args_t a;
      memset(&o, 0, sizeof o);
      memset(&a, 0, sizeof a);
      a.pid = getpid();
      a.value = daemon;
      snprintf(a.name, sizeof a.name, "worker-%d-%d", (int)m, daemon);
      o.target = tt_identity;
      o.args = &a;
      o.args_len = sizeof a;
      o.name = a.name;
      o.daemon = daemon;
      o.start_method = m;
      CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
      CU_ASSERT_STRING_EQUAL(mpx_process_name(p), a.name);
      CU_ASSERT_EQUAL_FATAL(mpx_process_start(p), 0);
      CU_ASSERT_EQUAL(finish(p), 0);
    }
  }
}

static void test_default_names(void) {
  mpx_process_opts_t o;
  mpx_process_t *a, *b;
  unsigned na, nb;
  memset(&o, 0, sizeof o);
  o.target = tt_return_value;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&a, &o), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&b, &o), 0);
  CU_ASSERT_EQUAL(sscanf(mpx_process_name(a), "Process-%u", &na), 1);
  CU_ASSERT_EQUAL(sscanf(mpx_process_name(b), "Process-%u", &nb), 1);
  CU_ASSERT_EQUAL(nb, na + 1);
  mpx_process_free(a);
  mpx_process_free(b);
}

static void test_start_method_default(void) {
  mpx_start_method_t m;
  CU_ASSERT_EQUAL(mpx_get_start_method(), MPX_START_FORK);
  CU_ASSERT_EQUAL(mpx_start_method_parse("forkserver", &m), 0);
  CU_ASSERT_EQUAL(m, MPX_START_FORKSERVER);
  CU_ASSERT_EQUAL(mpx_start_method_parse("vfork", &m), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_set_start_method(MPX_START_SPAWN), 0);
  CU_ASSERT_EQUAL(mpx_get_start_method(), MPX_START_SPAWN);
  CU_ASSERT_EQUAL(run(MPX_START_DEFAULT, tt_return_value, 5), 5);
  CU_ASSERT_EQUAL(mpx_set_start_method(MPX_START_DEFAULT), 0);
  setenv("MPX_START_METHOD", "forkserver", 1);
  CU_ASSERT_EQUAL(mpx_get_start_method(), MPX_START_FORKSERVER);
  unsetenv("MPX_START_METHOD");
}

MPX_TEST_MAIN("process",
              MPX_TEST(test_exit_codes), MPX_TEST(test_join_nonblocking_sentinel),
              MPX_TEST(test_target_spec),
              MPX_TEST(test_join_timeout),
              MPX_TEST(test_signals),
              MPX_TEST(test_signal_after_exit),
              MPX_TEST(test_state_errors),
              MPX_TEST(test_daemon_dies_with_parent_fork),
              MPX_TEST(test_daemon_dies_with_parent_forkserver),
              MPX_TEST(test_daemon_dies_with_parent_spawn),
              MPX_TEST(test_forkserver_lock_held_by_thread),
              MPX_TEST(test_spawn_missing_object_and_symbol),
              MPX_TEST(test_spawn_needs_shared_object),
              MPX_TEST(test_forkserver_calls_program_functions),
              MPX_TEST(test_forkserver_killed),
              MPX_TEST(test_forkserver_closes_inherited_fds),
              MPX_TEST(test_forkserver_pass_fds_keep_parent),
              MPX_TEST(test_active_children),
              MPX_TEST(test_free_running_detaches),
              MPX_TEST(test_cpu_count),
              MPX_TEST(test_sentinel),
              MPX_TEST(test_large_args),
              MPX_TEST(test_pass_fds),
              MPX_TEST(test_stdout_flushed),
              MPX_TEST(test_identity),
              MPX_TEST(test_default_names),
              MPX_TEST(test_start_method_default))
