/* The init probe (plugin_probe.h). The child is forked, not spawned: it
 * has the plugin loaded and the stage's context already, and it ends with
 * _exit, so nothing of the parent's (stdio buffers, atexit handlers) runs
 * twice. It reports over a pipe: 'F' and the failure message when init
 * fails; 'I' when init returned, then 'D' when fini did. Success is 'D'
 * and a clean exit, so a plugin that exits or dies anywhere is caught. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "plugin_probe.h"

#define MSG_MAX 2048

/* The probe's emits go nowhere: init has no business emitting, and one
 * that does should not fail here when it would not in a worker. */
static int drop(void *arg, const void *data, size_t len) {
  (void)arg, (void)data, (void)len;
  return 0;
}

static void put(int fd, const void *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p = (const char *)p + w;
    n -= (size_t)w;
  }
}

/* The child: never returns. */
static void child(const mpx_plugin_ctx_t *c, unsigned count, int fd, pid_t parent) {
  mpx_plugin_ctx_t *pc;
  void *state;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(120);
  if (mpx__ctx_copy(&pc, c, 0, count, drop, NULL) != 0) {
    put(fd, "F", 1);
    put(fd, mpx_last_error(), strlen(mpx_last_error()));
    _exit(1);
  }
  int rc = mpx__ctx_call_init(pc, &state);
  if (rc != 0) {
    const char *m = mpx__ctx_error(pc)[0] ? mpx__ctx_error(pc) : mpx_strerror(rc);
    put(fd, "F", 1);
    put(fd, m, strlen(m));
    _exit(1);
  }
  put(fd, "I", 1);
  mpx__ctx_call_fini(pc, state);
  put(fd, "D", 1);
  _exit(0);
}

/* MPX_INIT_TIMEOUT, or the default. 0, or MPX_ECONFIG. */
static int time_limit(double *secs) {
  const char *v = getenv("MPX_INIT_TIMEOUT");
  char *end;
  *secs = MPX__PROBE_TIMEOUT_DEFAULT;
  if (v == NULL || *v == '\0') return 0;
  errno = 0;
  double t = strtod(v, &end);
  if (errno != 0 || end == v || *end != '\0' || !isfinite(t) || t < 0 || t > 86400)
    return mpx__err(MPX_ECONFIG, "MPX_INIT_TIMEOUT must be a number of seconds "
                    "from 0 (no init check) to 86400, got '%s'", v);
  *secs = t;
  return 0;
}

/* Reads what the child says and reaps it, killing it at the deadline.
 * *timed_out when it was killed for that. */
static void await(pid_t pid, int fd, double limit, char *msg, size_t cap,
                  size_t *len, int *status, bool *timed_out) {
  double deadline = mpx__now() + limit;
  bool eof = false;
  *len = 0;
  *timed_out = false;
  *status = -1;
  for (;;) {
    double left = deadline - mpx__now();
    if (!eof) {
      struct pollfd p = {fd, POLLIN, 0};
      int ms = left <= 0 ? 0 : left > 0.05 ? 50 : (int)(left * 1000) + 1;
      if (poll(&p, 1, ms) > 0) {
        ssize_t r = read(fd, msg + *len, cap - 1 - *len);
        if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) eof = true;
        else if (r > 0) *len += (size_t)r;
        if (*len == cap - 1) eof = true; /* the rest is not needed */
      }
    }
    int st;
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == 0 && eof) {
      /* The pipe closed before the child ended (it closed its end). */
      struct timespec ts = {0, 5000000};
      nanosleep(&ts, NULL);
    }
    if (w == pid) {
      *status = st;
      break;
    }
    if (w < 0 && errno != EINTR) break; /* reaped by someone else */
    if (mpx__now() >= deadline) {
      kill(pid, SIGKILL);
      while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
      }
      *timed_out = true;
      break;
    }
  }
  /* What it wrote before it exited (if the loop left before EOF). */
  ssize_t r;
  while (!*timed_out && *len < cap - 1 && (r = read(fd, msg + *len, cap - 1 - *len)) > 0)
    *len += (size_t)r;
  msg[*len] = '\0';
}

int mpx__plugin_probe(const mpx_plugin_ctx_t *c, unsigned count, bool check_only) {
  const mpx_plugin_t *d = mpx__ctx_desc(c);
  double limit;
  int rc, fds[2];
  if ((rc = time_limit(&limit)) != 0) return rc;
  if (limit == 0 || (check_only && d->kind == MPX_PLUGIN_SINK)) return 0;
  if (pipe2(fds, O_CLOEXEC) != 0) return mpx__err_errno("init check: pipe");
  pid_t parent = getpid(), pid = fork();
  if (pid < 0) {
    rc = mpx__err_errno("init check: fork");
    close(fds[0]);
    close(fds[1]);
    return rc;
  }
  if (pid == 0) {
    close(fds[0]);
    child(c, count, fds[1], parent);
  }
  close(fds[1]);
  /* The child's last write comes just before its exit: read without
   * blocking once it has been reaped. */
  fcntl(fds[0], F_SETFL, O_NONBLOCK);
  char msg[MSG_MAX];
  size_t len;
  int st;
  bool timed_out;
  await(pid, fds[0], limit, msg, sizeof msg, &len, &st, &timed_out);
  close(fds[0]);
  const char *stage = mpx__ctx_stage(c), *name = d->name;
  bool inited = len > 0 && msg[0] == 'I', done = inited && len > 1 && msg[1] == 'D';
  const char *what = inited ? "fini" : "init";
  if (len > 0 && msg[0] == 'F')
    return mpx__err(MPX_ECONFIG, "stage '%s' (plugin '%s'): init failed: %s", stage, name,
                    msg + 1);
  if (timed_out)
    return mpx__err(MPX_ECONFIG, "stage '%s' (plugin '%s'): %s did not return within %g s "
                    "(MPX_INIT_TIMEOUT sets the limit)", stage, name, what, limit);
  if (st != -1 && WIFSIGNALED(st))
    return mpx__err(MPX_ECONFIG, "stage '%s' (plugin '%s'): %s died of signal %d (%s)",
                    stage, name, what, WTERMSIG(st), strsignal(WTERMSIG(st)));
  if (!done || (st != -1 && WIFEXITED(st) && WEXITSTATUS(st) != 0))
    return mpx__err(MPX_ECONFIG, "stage '%s' (plugin '%s'): %s ended its process with "
                    "exit status %d", stage, name, what,
                    st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  return 0;
}
