/* mpx_process: handles, start dispatch, join and reaping, signals, the
 * registry of children, the current and parent process, cpu_count.
 *
 * Every started, unreaped child sits in one registry list. All state changes
 * of a started handle (running -> exited) happen under the registry lock, so
 * mpx_active_children() in one thread and mpx_process_join() in another
 * never reap the same child twice. Blocking waits happen outside the lock. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdio_ext.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkserver.h"
#include "conn_internal.h"
#include "internal.h"
#include "process_internal.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

typedef enum { ST_NEW, ST_RUNNING, ST_EXITED, ST_SELF } state_t;

struct mpx_process_s {
  char *name;
  char *identity;   /* "1", "1:3", ...: position in the process tree */
  bool daemon;
  mpx_start_method_t method;
  mpx_target_fn target;
  char *spec;
  void *args;
  size_t args_len;
  int *pass_fds;
  size_t n_pass_fds;

  state_t state;
  pid_t pid;
  int pidfd;        /* sentinel, -1 when closed */
  int status_fd;    /* forkserver children: wait status arrives here */
  int exitcode;
  int exit_err;     /* nonzero when the exit status was lost */
  bool detached;    /* freed by its owner while running */
  bool lost_status; /* its forkserver died: only the pidfd tells the end */
  struct mpx_process_s *prev, *next;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mpx_process_s *reg_head;
static unsigned child_counter;
static mpx_start_method_t default_method = MPX_START_DEFAULT;

/* This process's own identity. */
static struct mpx_process_s self = {
    .name = "MainProcess", .identity = "", .state = ST_SELF,
    .pidfd = -1, .status_fd = -1};
static struct mpx_process_s parent = {.state = ST_SELF, .pidfd = -1,
                                      .status_fd = -1};
static bool have_parent;
static bool parent_checked; /* lazily opened parent.pidfd was tried */

/* ---- identity ---------------------------------------------------------- */

const char *mpx__process_current_name(void) { return self.name; }

void mpx__process_set_identity(const char *name, bool daemon,
                               const char *identity, pid_t parent_pid,
                               int parent_pidfd, const char *parent_name,
                               bool borrow) {
  /* The strings are copied, except in a fork child (borrow): there they
   * sit in the child's own copy of the parent's heap and stay valid, and
   * not writing to the heap saves copy-on-write page faults. */
  static bool owned;
  char *n = borrow ? (char *)name : strdup(name);
  char *id = borrow ? (char *)identity : strdup(identity);
  const char *pname = parent_name ? parent_name : "";
  char *pn = borrow ? (char *)pname : strdup(pname);
  if (n == NULL || id == NULL || pn == NULL) _exit(127);
  /* Log lines carry the new name before the old one is freed. */
  mpx__log_set_name(n);
  if (owned) {
    free(self.name);
    free(self.identity);
    free(parent.name);
  }
  owned = !borrow;
  self.name = n;
  self.identity = id;
  self.daemon = daemon;
  self.pid = getpid();
  prctl(PR_SET_NAME, self.name);
  parent.name = pn;
  parent.identity = "";
  parent.pid = parent_pid;
  parent.pidfd = parent_pidfd;
  parent.state = ST_SELF;
  have_parent = true;
  parent_checked = parent_pidfd >= 0;
}

void mpx__process_after_fork_child(void) {
  /* Children of the parent are not ours: forget them (the memory is the
   * parent's copy, freeing it buys nothing). Another thread may have held
   * the lock at fork time, so make a fresh one. */
  pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  reg_lock = fresh;
  reg_head = NULL;
  child_counter = 0;
}

mpx_process_t *mpx_current_process(void) {
  self.pid = getpid();
  return &self;
}

mpx_process_t *mpx_parent_process(void) {
  if (!have_parent) return NULL;
  if (parent.pidfd < 0 && !parent_checked) {
    /* Only valid while the parent is still ours: if it died first, the pid
     * may already name another process, and getppid() has changed. */
    int fd = mpx__pidfd_open(parent.pid);
    if (fd >= 0 && getppid() != parent.pid) {
      close(fd);
      fd = -1;
    }
    parent.pidfd = fd;
    parent_checked = true;
  }
  return &parent;
}

/* ---- start methods ----------------------------------------------------- */

const char *mpx_start_method_name(mpx_start_method_t m) {
  switch (m) {
  case MPX_START_FORK: return "fork";
  case MPX_START_FORKSERVER: return "forkserver";
  case MPX_START_SPAWN: return "spawn";
  default: return "default";
  }
}

int mpx_start_method_parse(const char *s, mpx_start_method_t *m) {
  static const mpx_start_method_t all[] = {
      MPX_START_FORK, MPX_START_FORKSERVER, MPX_START_SPAWN};
  size_t i;
  for (i = 0; s != NULL && i < MPX__ARRAY_SIZE(all); i++) {
    if (strcmp(s, mpx_start_method_name(all[i])) == 0) {
      *m = all[i];
      return 0;
    }
  }
  return mpx__err(MPX_EINVAL,
                  "unknown start method '%s' (fork, forkserver, spawn)",
                  s ? s : "(null)");
}

mpx_start_method_t mpx_get_start_method(void) {
  mpx_start_method_t m = default_method;
  if (m == MPX_START_DEFAULT) {
    const char *env = getenv("MPX_START_METHOD");
    m = MPX_START_FORK;
    if (env != NULL && *env != '\0' && mpx_start_method_parse(env, &m) != 0) {
      MPX__WARN("MPX_START_METHOD='%s' is not fork, forkserver or spawn; "
                "using fork", env);
      m = MPX_START_FORK;
    }
  }
  return m;
}

int mpx_set_start_method(mpx_start_method_t m) {
  if (m < MPX_START_DEFAULT || m > MPX_START_SPAWN)
    return mpx__err(MPX_EINVAL, "unknown start method %d", (int)m);
  default_method = m;
  return 0;
}

int mpx_cpu_count(void) {
  const char *env = getenv("MPX_CPU_COUNT");
  cpu_set_t set;
  int n;
  if (env != NULL && (n = atoi(env)) > 0) return n;
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  n = (int)sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? n : 1;
}

/* ---- handles ------------------------------------------------------------ */

int mpx_process_new(mpx_process_t **out, const mpx_process_opts_t *o) {
  struct mpx_process_s *p;
  char buf[64];
  unsigned n;

  *out = NULL;
  if (o == NULL || (o->target == NULL) == (o->target_spec == NULL))
    return mpx__err(MPX_EINVAL,
                    "process needs exactly one of target and target_spec");
  if (o->start_method < MPX_START_DEFAULT || o->start_method > MPX_START_SPAWN)
    return mpx__err(MPX_EINVAL, "unknown start method %d",
                    (int)o->start_method);
  if (o->args_len > 0 && o->args == NULL)
    return mpx__err(MPX_EINVAL, "args is NULL but args_len is %zu",
                    o->args_len);
  if (o->n_pass_fds > 0 && o->pass_fds == NULL)
    return mpx__err(MPX_EINVAL, "pass_fds is NULL");

  p = calloc(1, sizeof *p);
  if (p == NULL) return MPX_ENOMEM;
  p->pidfd = p->status_fd = -1;
  p->daemon = o->daemon;
  p->method = o->start_method;
  p->target = o->target;

  pthread_mutex_lock(&reg_lock);
  n = ++child_counter;
  pthread_mutex_unlock(&reg_lock);
  if (self.identity[0])
    snprintf(buf, sizeof buf, "%s:%u", self.identity, n);
  else
    snprintf(buf, sizeof buf, "%u", n);
  p->identity = strdup(buf);
  if (o->name != NULL) {
    p->name = strdup(o->name);
  } else {
    p->name = malloc(strlen(buf) + sizeof "Process-");
    if (p->name) sprintf(p->name, "Process-%s", buf);
  }
  if (o->target_spec) p->spec = strdup(o->target_spec);
  if (o->args_len) {
    p->args = malloc(o->args_len);
    if (p->args) memcpy(p->args, o->args, o->args_len);
    p->args_len = o->args_len;
  }
  if (o->n_pass_fds) {
    p->pass_fds = malloc(o->n_pass_fds * sizeof(int));
    if (p->pass_fds)
      memcpy(p->pass_fds, o->pass_fds, o->n_pass_fds * sizeof(int));
    p->n_pass_fds = o->n_pass_fds;
  }
  if (p->identity == NULL || p->name == NULL ||
      (o->target_spec && p->spec == NULL) ||
      (o->args_len && p->args == NULL) ||
      (o->n_pass_fds && p->pass_fds == NULL)) {
    p->state = ST_NEW;
    mpx_process_free(p);
    return MPX_ENOMEM;
  }
  *out = p;
  return 0;
}

static void free_handle(struct mpx_process_s *p) {
  if (p->pidfd >= 0) close(p->pidfd);
  if (p->status_fd >= 0) close(p->status_fd);
  free(p->name);
  free(p->identity);
  free(p->spec);
  free(p->args);
  free(p->pass_fds);
  free(p);
}

/* Tries to reap p without blocking. Call with reg_lock held. Returns 1 when
 * p has exited (now or before), 0 while it runs. */
static int reap_locked(struct mpx_process_s *p) {
  if (p->state != ST_RUNNING) return p->state == ST_EXITED;

  if (p->status_fd >= 0 || p->lost_status) {
    int status;
    ssize_t k;
    if (!p->lost_status) {
      do
        k = read(p->status_fd, &status, sizeof status);
      while (k < 0 && errno == EINTR);
      if (k < 0 && errno == EAGAIN) return 0;
      if (k == (ssize_t)sizeof status) {
        p->exitcode = WIFSIGNALED(status) ? -WTERMSIG(status)
                                          : WEXITSTATUS(status);
        goto exited;
      }
      /* The forkserver died: the child lives on, orphaned, and its exit
       * status will reach nobody. Watch its pidfd from now on. */
      close(p->status_fd);
      p->status_fd = -1;
      p->lost_status = true;
      MPX__WARN("forkserver died; the exit status of %s (pid %d) will be "
                "lost", p->name, (int)p->pid);
    }
    {
      struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
      if (poll(&pfd, 1, 0) == 0) return 0;
      p->exit_err = MPX_EBROKEN;
    }
  } else {
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) <
        0) {
      if (errno == EINTR) return 0;
      /* Someone else (a SIGCHLD handler calling waitpid(-1)) reaped it. */
      p->exit_err = MPX_ECHILD;
    } else if (si.si_pid == 0) {
      return 0;
    } else {
      p->exitcode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    }
  }
exited:
  p->state = ST_EXITED;
  /* Unlink from the registry: an exited child is not active. */
  if (p->prev) p->prev->next = p->next;
  else if (reg_head == p) reg_head = p->next;
  if (p->next) p->next->prev = p->prev;
  p->prev = p->next = NULL;
  return 1;
}

static void sweep_detached_locked(void) {
  struct mpx_process_s *p = reg_head, *next;
  for (; p != NULL; p = next) {
    next = p->next;
    if (p->detached && reap_locked(p)) free_handle(p);
  }
}

static int try_reap(struct mpx_process_s *p) {
  int r;
  pthread_mutex_lock(&reg_lock);
  r = reap_locked(p);
  pthread_mutex_unlock(&reg_lock);
  return r;
}

/* Logs once when fork() is used by a multi-threaded process. The link count
 * of /proc/self/task is the thread count plus two: one stat(), no open. */
void mpx__fork_warn_threads(void) {
  static int warned;
  struct stat st;
  if (warned || stat("/proc/self/task", &st) != 0 || st.st_nlink <= 3) return;
  warned = 1;
  MPX__WARN("fork start method used by a process with %ld threads: a child "
            "may inherit a lock another thread held; prefer forkserver",
            (long)st.st_nlink - 2);
}

static int start_fork(struct mpx_process_s *p, mpx_target_fn fn) {
  pid_t ppid = getpid(), pid;
  int pidfd;

  /* Flush first, so the child does not write the parent's pending output
   * a second time. */
  fflush(NULL);
  pid = fork();
  if (pid < 0) return mpx__err_errno("fork failed");
  if (pid == 0) {
    mpx__process_after_fork_child();
    if (p->daemon) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != ppid) raise(SIGKILL); /* as the death signal would */
    }
    /* The parent's pidfd is opened on first use (mpx_parent_process). */
    mpx__process_set_identity(p->name, p->daemon, p->identity, ppid, -1,
                              self.name, true);
    mpx__child_run(fn, p->args, p->args_len);
  }
  pidfd = mpx__pidfd_open(pid);
  /* After the fork, so the check overlaps the child's start. */
  mpx__fork_warn_threads();
  if (pidfd < 0) {
    int rc = mpx__err(pidfd, "pidfd_open(%d) failed", (int)pid);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return rc;
  }
  p->pid = pid;
  p->pidfd = pidfd;
  return 0;
}

void mpx__child_run(mpx_target_fn fn, const void *args, size_t len) {
  int rc = fn(args, len);
  /* Flush stdout and stderr only when they hold output, as Python does:
   * fflush(NULL) writes to libc's stream locks, which costs a copy-on-write
   * page fault or two in every fork child even when there is nothing to
   * flush. */
  if (__fpending(stdout) > 0) fflush(stdout);
  if (__fpending(stderr) > 0) fflush(stderr);
  _exit(rc & 0xff);
}

/* Starts p; through z (a zygote: a fork done by a single-threaded copy of
 * this process) when z is set and the method is fork. */
static int start_with(mpx_process_t *p, mpx__zygote_t *z) {
  mpx_start_method_t m;
  mpx_target_fn fn = p->target;
  int rc;

  if (p->state != ST_NEW)
    return mpx__err(MPX_ESTATE, "process '%s' was already started", p->name);
  m = p->method == MPX_START_DEFAULT ? mpx_get_start_method() : p->method;

  pthread_mutex_lock(&reg_lock);
  sweep_detached_locked();
  pthread_mutex_unlock(&reg_lock);

  if (m == MPX_START_SPAWN) {
    mpx__spawn_request_t req;
    char *spec = NULL;
    if (p->spec == NULL) {
      rc = mpx__target_spec_of(p->target, &spec);
      if (rc) return rc;
    }
    req.name = p->name;
    req.identity = p->identity;
    req.daemon = p->daemon;
    req.spec = p->spec ? p->spec : spec;
    req.args = p->args;
    req.args_len = p->args_len;
    req.pass_fds = p->pass_fds;
    req.n_pass_fds = p->n_pass_fds;
    rc = mpx__spawn(&req, &p->pid, &p->pidfd);
    free(spec);
  } else {
    if (fn == NULL) {
      rc = mpx__target_resolve_spec(p->spec, &fn);
      if (rc) return rc;
    }
    if (m == MPX_START_FORKSERVER || z != NULL) {
      mpx__fs_request_t req;
      mpx__target_loc_t loc;
      rc = mpx__target_locate(fn, &loc);
      if (rc) return rc;
      req.name = p->name;
      req.identity = p->identity;
      req.daemon = p->daemon;
      req.object = loc.object;
      req.offset = loc.offset;
      req.args = p->args;
      req.args_len = p->args_len;
      req.pass_fds = p->pass_fds;
      req.n_pass_fds = p->n_pass_fds;
      rc = z != NULL
               ? mpx__zygote_fork(z, &req, &p->pid, &p->pidfd, &p->status_fd)
               : mpx__forkserver_fork(&req, &p->pid, &p->pidfd, &p->status_fd);
      free(loc.object);
    } else {
      rc = start_fork(p, fn);
    }
  }
  if (rc) return rc;

  p->method = m;
  pthread_mutex_lock(&reg_lock);
  p->state = ST_RUNNING;
  p->next = reg_head;
  if (reg_head) reg_head->prev = p;
  reg_head = p;
  pthread_mutex_unlock(&reg_lock);
  MPX__DEBUG("started %s (pid %d, %s%s)", p->name, (int)p->pid,
             mpx_start_method_name(m), z != NULL ? " through a zygote" : "");
  return 0;
}

int mpx_process_start(mpx_process_t *p) { return start_with(p, NULL); }

int mpx__process_start_zygote(mpx_process_t *p, mpx__zygote_t *z) {
  if (p->method != MPX_START_FORK && p->method != MPX_START_DEFAULT)
    return mpx__err(MPX_EINVAL, "process '%s': a zygote starts fork children "
                    "only", p->name);
  if (p->method == MPX_START_DEFAULT) p->method = MPX_START_FORK;
  return start_with(p, z);
}

int mpx_process_join(mpx_process_t *p, double timeout) {
  double deadline;
  struct pollfd pfd;

  if (p->state == ST_EXITED) return 0;
  if (p->state != ST_RUNNING)
    return mpx__err(MPX_ESTATE, "process '%s' was not started", p->name);

  /* A blocking join of a direct child is a single waitid(). */
  if (timeout < 0 && p->status_fd < 0 && !p->lost_status) {
    siginfo_t si;
    int r;
    memset(&si, 0, sizeof si);
    do
      r = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOWAIT);
    while (r < 0 && errno == EINTR);
    if (try_reap(p)) return 0;
    /* A pidfd made non-blocking (uv_poll does that to what it watches)
     * makes waitid return EAGAIN at once: wait with poll instead. */
    if (!(r < 0 && errno == EAGAIN))
      return mpx__err(MPX_EUNKNOWN, "waitid gave no status");
  }

  deadline = mpx__deadline(timeout);
  pfd.events = POLLIN;
  for (;;) {
    int ms;
    if (try_reap(p)) return 0;
    /* Re-chosen each time: a lost forkserver moves the wait to the pidfd. */
    pfd.fd = p->status_fd >= 0 ? p->status_fd : p->pidfd;
    ms = mpx__poll_ms(deadline);
    if (ms == 0) return MPX_ETIMEDOUT;
    if (poll(&pfd, 1, ms) < 0 && errno != EINTR)
      return mpx__err_errno("poll on the sentinel of %s", p->name);
  }
}

int mpx_process_is_alive(mpx_process_t *p) {
  struct pollfd pfd;
  if (p == &self) return 1;
  if (p == &parent) {
    /* The parent's pidfd turns readable when it exits. */
    pfd.fd = p->pidfd;
    pfd.events = POLLIN;
    return p->pidfd >= 0 && poll(&pfd, 1, 0) == 0;
  }
  if (p->state != ST_RUNNING) return 0;
  return !try_reap(p);
}

int mpx_process_signal(mpx_process_t *p, int sig) {
  int r;
  if (p->state == ST_NEW || p->state == ST_SELF)
    return mpx__err(MPX_ESTATE, "process '%s' is not a started child",
                    p->name);
  if (p->state == ST_EXITED || p->pidfd < 0) return 0;
  r = mpx__pidfd_send_signal(p->pidfd, sig);
  if (r == MPX_ESRCH) return 0; /* exited, not yet reaped */
  return r ? mpx__err(r, "cannot signal %s (pid %d)", p->name, (int)p->pid)
           : 0;
}

int mpx_process_terminate(mpx_process_t *p) { return mpx_process_signal(p, SIGTERM); }
int mpx_process_kill(mpx_process_t *p) { return mpx_process_signal(p, SIGKILL); }
int mpx_process_interrupt(mpx_process_t *p) { return mpx_process_signal(p, SIGINT); }

int mpx_process_exitcode(mpx_process_t *p, int *code) {
  if (p->state == ST_NEW || p->state == ST_SELF)
    return mpx__err(MPX_ESTATE, "process '%s' is not a started child",
                    p->name);
  if (p->state == ST_RUNNING && !try_reap(p)) return MPX_EBUSY;
  if (p->exit_err)
    return mpx__err(p->exit_err, "exit status of %s (pid %d) was lost",
                    p->name, (int)p->pid);
  *code = p->exitcode;
  return 0;
}

pid_t mpx_process_pid(const mpx_process_t *p) {
  return p == &self ? getpid() : p->pid;
}

int mpx__process_status_fd(const mpx_process_t *p) {
  return p->lost_status ? -1 : p->status_fd;
}

int mpx_process_sentinel(const mpx_process_t *p) {
  if (p->pidfd < 0)
    return mpx__err(MPX_ESTATE, "process '%s' has no sentinel", p->name);
  return p->pidfd;
}

/* mpx_conn_wait's view of a process (ipc/conn_internal.h): ipc/ cannot
 * call up into core/, so core/ hands it this when the library loads. */
static int wait_sentinel(const mpx_process_t *p, const char **name) {
  *name = p->name;
  return p->pidfd < 0 ? MPX_ESTATE : p->pidfd;
}

__attribute__((constructor)) static void register_wait_sentinel(void) {
  mpx__conn_set_wait_sentinel(wait_sentinel);
}

const char *mpx_process_name(const mpx_process_t *p) { return p->name; }
bool mpx_process_daemon(const mpx_process_t *p) { return p->daemon; }
mpx_start_method_t mpx_process_start_method(const mpx_process_t *p) {
  return p->method;
}

int mpx_process_close(mpx_process_t *p) {
  if (p->state == ST_SELF) return MPX_ESTATE;
  if (p->state == ST_RUNNING && !try_reap(p))
    return mpx__err(MPX_EBUSY, "process '%s' is still running", p->name);
  if (p->pidfd >= 0) close(p->pidfd);
  if (p->status_fd >= 0) close(p->status_fd);
  p->pidfd = p->status_fd = -1;
  return 0;
}

void mpx_process_free(mpx_process_t *p) {
  if (p == NULL || p->state == ST_SELF) return;
  pthread_mutex_lock(&reg_lock);
  if (p->state == ST_RUNNING && !reap_locked(p)) {
    p->detached = true; /* reaped later by a sweep */
    pthread_mutex_unlock(&reg_lock);
    return;
  }
  pthread_mutex_unlock(&reg_lock);
  free_handle(p);
}

int mpx_active_children(mpx_process_t **out, size_t max) {
  struct mpx_process_s *p, *next;
  int n = 0;
  pthread_mutex_lock(&reg_lock);
  for (p = reg_head; p != NULL; p = next) {
    next = p->next;
    if (reap_locked(p)) {
      if (p->detached) free_handle(p);
      continue;
    }
    if (p->detached) continue;
    if ((size_t)n < max) out[n] = p;
    n++;
  }
  pthread_mutex_unlock(&reg_lock);
  return n;
}
