#define _GNU_SOURCE
#include "targets.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

pthread_mutex_t mpx_test_global_lock = PTHREAD_MUTEX_INITIALIZER;

static mpx_test_args_t get(const void *a, size_t n) {
  mpx_test_args_t t;
  memset(&t, 0, sizeof t);
  if (n == sizeof t) memcpy(&t, a, sizeof t);
  return t;
}

int tt_return_value(const void *a, size_t n) { return get(a, n).value; }

int tt_exit_value(const void *a, size_t n) { exit(get(a, n).value); }

int tt_abort(const void *a, size_t n) {
  (void)a, (void)n;
  abort();
}

int tt_kill_self(const void *a, size_t n) {
  (void)a, (void)n;
  raise(SIGKILL);
  return 99;
}

int tt_pause(const void *a, size_t n) {
  (void)a, (void)n;
  for (;;) pause();
}

int tt_wait_fd(const void *a, size_t n) {
  char c;
  return read(get(a, n).fd, &c, 1) == 1 ? 0 : 1;
}

int tt_write_fd(const void *a, size_t n) {
  return write(get(a, n).fd, "ok", 2) == 2 ? 0 : 1;
}

int tt_check_pattern(const void *a, size_t n) {
  const unsigned char *p = a;
  size_t i;
  if (n == 0) return 2;
  for (i = 0; i < n; i++)
    if (p[i] != (unsigned char)(i * 7 % 251)) return 1;
  return 0;
}

int tt_identity(const void *a, size_t n) {
  mpx_test_args_t t = get(a, n);
  mpx_process_t *self = mpx_current_process(), *parent = mpx_parent_process();
  if (strcmp(mpx_process_name(self), t.name) != 0) return 10;
  if (mpx_process_pid(self) != getpid()) return 11;
  if (parent == NULL) return 12;
  if (mpx_process_pid(parent) != t.pid) return 13;
  if (mpx_process_is_alive(parent) != 1) return 14;
  if (mpx_process_daemon(self) != (t.value != 0)) return 15;
  return 0;
}

int tt_take_lock(const void *a, size_t n) {
  (void)a, (void)n;
  pthread_mutex_lock(&mpx_test_global_lock);
  pthread_mutex_unlock(&mpx_test_global_lock);
  return 0;
}

int tt_cpu_count(const void *a, size_t n) {
  cpu_set_t set;
  (void)a, (void)n;
  CPU_ZERO(&set);
  CPU_SET(0, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) return 100;
  return mpx_cpu_count();
}

int tt_daemon_parent(const void *a, size_t n) {
  mpx_test_args_t t = get(a, n);
  mpx_process_opts_t o;
  mpx_process_t *p;
  pid_t pid;
  memset(&o, 0, sizeof o);
  o.target = tt_pause;
  o.daemon = true;
  o.start_method = (mpx_start_method_t)t.method;
  if (mpx_process_new(&p, &o) != 0 || mpx_process_start(p) != 0) return 20;
  pid = mpx_process_pid(p);
  if (write(t.fd, &pid, sizeof pid) != (ssize_t)sizeof pid) return 21;
  for (;;) pause();
}

int tt_fd_closed(const void *a, size_t n) {
  /* Closed, or reused by mpx for something that is not a pipe. */
  char path[64], link[64] = "";
  snprintf(path, sizeof path, "/proc/self/fd/%d", get(a, n).fd);
  if (fcntl(get(a, n).fd, F_GETFD) < 0) return errno == EBADF ? 0 : 2;
  if (readlink(path, link, sizeof link - 1) < 0) return 3;
  return strncmp(link, "pipe:", 5) == 0 ? 1 : 0;
}

int tt_forkserver_fd_check(const void *a, size_t n) {
  /* In a process whose forkserver is not started yet: a descriptor left
   * without close-on-exec must not reach forkserver children. */
  int fds[2];
  mpx_test_args_t t;
  mpx_process_opts_t o;
  mpx_process_t *p;
  int code = 100;
  (void)a, (void)n;
  if (pipe(fds) != 0) return 101;
  memset(&t, 0, sizeof t);
  t.fd = fds[0];
  memset(&o, 0, sizeof o);
  o.target = tt_fd_closed;
  o.args = &t;
  o.args_len = sizeof t;
  o.start_method = MPX_START_FORKSERVER;
  if (mpx_process_new(&p, &o) != 0 || mpx_process_start(p) != 0) return 102;
  if (mpx_process_join(p, -1) != 0 || mpx_process_exitcode(p, &code) != 0)
    return 103;
  mpx_process_free(p);
  return code;
}

int tt_print(const void *a, size_t n) {
  mpx_test_args_t t = get(a, n);
  fflush(stdout);
  if (dup2(t.fd, 1) < 0) return 1;
  printf("hello-%d", t.value); /* no newline: stays in the buffer */
  return 0;
}

static int is_pipe(int fd) {
  char path[64], link[64] = "";
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  return readlink(path, link, sizeof link - 1) > 0 &&
         strncmp(link, "pipe:", 5) == 0;
}

int tt_low_fds(const void *a, size_t n) {
  mpx_process_t *parent = mpx_parent_process();
  int s;
  (void)a, (void)n;
  if (!is_pipe(3) || !is_pipe(4)) return 1;
  if (parent == NULL) return 2;
  s = mpx_process_sentinel(parent);
  if (s < 0 || s == 3 || s == 4 || is_pipe(s)) return 3;
  return mpx_process_is_alive(parent) == 1 ? 0 : 4;
}

int tt_forkserver_low_fds_check(const void *a, size_t n) {
  /* Pass fds 3 and 4, the numbers the server's own descriptors are likely
   * to have, to a forkserver child. */
  static const int want[2] = {3, 4};
  mpx_process_opts_t o;
  mpx_process_t *p;
  int fds[2], code = 100;
  (void)a, (void)n;
  if (pipe(fds) != 0 || dup2(fds[1], 3) < 0 || dup2(fds[1], 4) < 0)
    return 101;
  memset(&o, 0, sizeof o);
  o.target = tt_low_fds;
  o.start_method = MPX_START_FORKSERVER;
  o.pass_fds = want;
  o.n_pass_fds = 2;
  if (mpx_process_new(&p, &o) != 0 || mpx_process_start(p) != 0) return 102;
  if (mpx_process_join(p, -1) != 0 || mpx_process_exitcode(p, &code) != 0)
    return 103;
  mpx_process_free(p);
  return code;
}

/* ---- pool tasks (loaded by name under spawn) ---------------------------- */

#include "mpx/pool.h"

int pt_square(mpx_task_t *t, const void *in, size_t len) {
  int64_t x;
  if (len != sizeof x) return mpx_task_fail(t, "want 8 bytes, got %zu", len);
  memcpy(&x, in, sizeof x);
  x *= x;
  return mpx_task_result(t, &x, sizeof x);
}

int pt_pid(mpx_task_t *t, const void *in, size_t len) {
  (void)in, (void)len;
  int32_t pid = (int32_t)getpid();
  return mpx_task_result(t, &pid, sizeof pid);
}

int pt_xform(mpx_task_t *t, const void *in, size_t len) {
  const unsigned char *a = in;
  unsigned char *o = mpx_task_result_buf(t, len);
  size_t i;
  if (o == NULL && len) return mpx_task_fail(t, "no room for %zu bytes", len);
  for (i = 0; i < len; i++) o[i] = a[len - 1 - i] ^ 0x5a;
  return 0;
}

int pt_xform_kill_once(mpx_task_t *t, const void *in, size_t len) {
  const char *path = in;
  int fd;
  if (len == 0 || memchr(in, 0, len < 4096 ? len : 4096) == NULL)
    return mpx_task_fail(t, "no path");
  fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd >= 0) {
    unsigned char *o = mpx_task_result_buf(t, len);
    close(fd);
    if (o != NULL) memset(o, 0xee, len);
    raise(SIGKILL);
  }
  return pt_xform(t, in, len);
}
