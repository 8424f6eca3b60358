/* The forkserver: a single-threaded process that forks children on request.
 *
 * It is the program itself, exec'd again from /proc/self/exe with libmpx
 * preloaded and MPX__FORKSERVER set: libmpx's constructor sees the variable,
 * runs the program's own constructors, and serves requests instead of ever
 * returning to main(). So children start from the program's initial state
 * and never inherit a lock that one of the caller's threads held, and
 * function pointers of the program stay meaningful (as object + offset).
 *
 * Protocol over a stream socketpair, one message each way per child:
 *   request: name, identity, parent name, daemon, object, offset, args,
 *            wanted fd numbers; the fds themselves ride as SCM_RIGHTS
 *   reply:   status (0 or -errno), pid, message; fds: pidfd, status pipe
 * The server reaps every child and writes its 4-byte wait status into that
 * child's status pipe. It exits when the caller goes away, killing its
 * daemon children first. */
#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "forkserver.h"
#include "internal.h"
#include "process_internal.h"
#include "rd.h"

#define FS_ENV "MPX__FORKSERVER"
#define FS_ENV_PRELOAD "MPX__FORKSERVER_PRELOAD"
#define FS_MAX_FDS 14 /* pass_fds per child (16 per message, 2 for replies) */

extern char **environ;

/* ---- caller side -------------------------------------------------------- */

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static int fs_sock = -1;
static pid_t fs_pid;
static pid_t fs_owner; /* the process fs_sock belongs to */

static void fs_atfork_child(void) {
  /* A fork child shares the parent's socket: it must not talk on it, nor
   * keep it open (the server learns of its caller's death by EOF). */
  pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
  if (fs_sock >= 0) close(fs_sock);
  fs_sock = -1;
  fs_pid = 0;
  fs_lock = fresh;
}

static void fs_register_atfork(void) {
  pthread_atfork(NULL, NULL, fs_atfork_child);
}

static int has_sanitizer_runtime(struct dl_phdr_info *info, size_t size,
                                 void *data) {
  const char *n = info->dlpi_name;
  (void)size;
  if (n && (strstr(n, "/libasan.so") || strstr(n, "/libtsan.so") ||
            strstr(n, "/libubsan.so") || strstr(n, "libclang_rt."))) {
    char **acc = data;
    size_t len = (*acc ? strlen(*acc) + 1 : 0) + strlen(n) + 1;
    char *s = malloc(len);
    if (s == NULL) return 1;
    snprintf(s, len, "%s%s%s", *acc ? *acc : "", *acc ? ":" : "", n);
    free(*acc);
    *acc = s;
  }
  return 0;
}

/* LD_PRELOAD for the server: libmpx itself (unless linked statically into
 * the program), after any sanitizer runtime, which must come first. */
static char *preload_value(void) {
  Dl_info info;
  struct link_map *lm = NULL;
  char *acc = NULL, *out;
  const char *old = getenv("LD_PRELOAD");
  size_t len;

  if (dladdr1((void *)(uintptr_t)mpx_forkserver_start, &info, (void **)&lm,
              RTLD_DL_LINKMAP) == 0 ||
      lm == NULL || lm->l_name == NULL || lm->l_name[0] == '\0')
    return NULL; /* static: the constructor is in the program already */
  dl_iterate_phdr(has_sanitizer_runtime, &acc);
  len = (acc ? strlen(acc) : 0) + strlen(lm->l_name) + (old ? strlen(old) : 0) +
        sizeof "LD_PRELOAD=::";
  out = malloc(len);
  if (out)
    snprintf(out, len, "LD_PRELOAD=%s%s%s%s%s", acc ? acc : "", acc ? ":" : "",
             lm->l_name, old && *old ? ":" : "", old ? old : "");
  free(acc);
  return out;
}

/* The server's environment: ours, with the socket's fd and, when mpx was
 * preloaded, LD_PRELOAD made to load it plus what to restore afterwards.
 * *env borrows environ's strings and fdvar; *preload and *oldpre are the
 * caller's to free. */
static int fs_env(int fd, char *fdvar, size_t fdvar_len, char ***envp, char **preload,
                  char **oldpre) {
  const char *old = getenv("LD_PRELOAD");
  size_t n = 0, i;
  while (environ[n]) n++;
  char **env = calloc(n + 4, sizeof *env);
  *envp = env;
  *preload = preload_value();
  if (env == NULL) return MPX_ENOMEM;
  n = 0;
  for (i = 0; environ[i]; i++) {
    if (strncmp(environ[i], "LD_PRELOAD=", 11) == 0 && *preload) continue;
    env[n++] = environ[i];
  }
  snprintf(fdvar, fdvar_len, FS_ENV "=%d", fd);
  env[n++] = fdvar;
  if (*preload) {
    env[n++] = *preload;
    /* The server restores the caller's LD_PRELOAD (or its absence). */
    size_t len = (old ? strlen(old) : 0) + sizeof FS_ENV_PRELOAD "=";
    if ((*oldpre = malloc(len)) == NULL) return MPX_ENOMEM;
    snprintf(*oldpre, len, FS_ENV_PRELOAD "=%s", old ? old : "");
    env[n++] = *oldpre;
  }
  env[n] = NULL;
  return 0;
}

/* Runs /proc/self/exe with fd kept open and no signal blocked. */
static int fs_exec(int fd, char **env, pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none;
  char *argv[2] = {program_invocation_name, NULL};
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, fd, fd); /* clears CLOEXEC */
  posix_spawnattr_init(&attr);
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  int rc = posix_spawn(pid, "/proc/self/exe", &fa, &attr, argv, env);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  return rc != 0 ? mpx__err(-rc, "forkserver: cannot exec /proc/self/exe") : 0;
}

/* The server says hello once it runs; anything else means the program did
 * not turn into a forkserver (then it is killed and reaped). */
static int fs_hello(int sock, pid_t pid) {
  char *data = NULL;
  size_t len, nfds;
  int dummy;
  int rc = mpx__msg_recv(sock, &data, &len, &dummy, 0, &nfds);
  bool ok = rc == 0 && len == 4 && memcmp(data, "MPX1", 4) == 0;
  free(data);
  if (ok) return 0;
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return mpx__err(MPX_EBROKEN, "forkserver (pid %d) did not start", (int)pid);
}

static int fs_launch_locked(void) {
  int sv[2], rc;
  char **env = NULL;
  char fdvar[64], *preload = NULL, *oldpre = NULL;
  pid_t pid;

  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return mpx__err_errno("forkserver: socketpair");
  if ((rc = fs_env(sv[1], fdvar, sizeof fdvar, &env, &preload, &oldpre)) == 0 &&
      (rc = fs_exec(sv[1], env, &pid)) == 0 && (rc = fs_hello(sv[0], pid)) == 0) {
    fs_sock = sv[0];
    sv[0] = -1;
    fs_pid = pid;
    fs_owner = getpid();
    MPX__DEBUG("forkserver started (pid %d)", (int)pid);
  }
  if (sv[0] >= 0) close(sv[0]);
  close(sv[1]);
  free(env);
  free(preload);
  free(oldpre);
  return rc;
}

static int fs_ensure_locked(void) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  if (fs_sock >= 0 && fs_owner == getpid()) return 0;
  if (fs_sock >= 0) { /* inherited through a raw fork: not ours */
    close(fs_sock);
    fs_sock = -1;
  }
  /* Registered once; covers fork() calls that bypass mpx too. */
  pthread_once(&once, fs_register_atfork);
  return fs_launch_locked();
}

static bool fs_sock_dead(void) {
  struct pollfd pfd = {.fd = fs_sock, .events = POLLIN};
  return poll(&pfd, 1, 0) != 0;
}

/* Forgets a dead server; the next request launches a new one. */
static void fs_drop_locked(void) {
  MPX__WARN("forkserver (pid %d) died; starting a new one", (int)fs_pid);
  close(fs_sock);
  fs_sock = -1;
  waitpid(fs_pid, NULL, WNOHANG);
}

int mpx_forkserver_start(void) {
  int rc;
  pthread_mutex_lock(&fs_lock);
  rc = fs_ensure_locked();
  pthread_mutex_unlock(&fs_lock);
  return rc;
}

/* The request for one child, as the server reads it. */
static int fs_encode(const mpx__fs_request_t *req, mpx__buf_t *b) {
  size_t i;
  int rc;
  if (req->n_pass_fds > FS_MAX_FDS)
    return mpx__err(MPX_EINVAL, "forkserver passes at most %d fds, not %zu",
                    FS_MAX_FDS, req->n_pass_fds);
  rc = mpx__buf_put_str(b, req->name);
  if (!rc) rc = mpx__buf_put_str(b, req->identity);
  if (!rc) rc = mpx__buf_put_str(b, mpx__process_current_name());
  if (!rc) rc = mpx__buf_put_u64(b, req->daemon);
  if (!rc) rc = mpx__buf_put_str(b, req->object);
  if (!rc) rc = mpx__buf_put_u64(b, req->offset);
  if (!rc) rc = mpx__buf_put_field(b, req->args, req->args_len);
  if (!rc) rc = mpx__buf_put_u64(b, req->n_pass_fds);
  for (i = 0; !rc && i < req->n_pass_fds; i++)
    rc = mpx__buf_put_u64(b, (uint64_t)req->pass_fds[i]);
  if (rc) mpx__buf_free(b);
  return rc;
}

/* The server's reply: the child's pid, pidfd and status pipe, or its
 * error. Takes data and the fds. */
static int fs_decode(char *data, size_t len, int *fds, size_t nfds,
                     pid_t *pid, int *pidfd, int *status_fd) {
  mpx__rd_t r = {data, data + len};
  uint64_t status, cpid;
  const char *msg;
  int rc = 0;
  if (mpx__rd_u64(&r, &status) || mpx__rd_u64(&r, &cpid) ||
      mpx__rd_str(&r, &msg)) {
    rc = mpx__err(MPX_EPROTO, "forkserver sent a malformed reply");
  } else if ((int64_t)status != 0) {
    rc = mpx__err((int)(int64_t)status, "forkserver: %s", msg);
  } else if (nfds != 2) {
    rc = mpx__err(MPX_EPROTO, "forkserver sent %zu fds, not 2", nfds);
  } else {
    *pid = (pid_t)cpid;
    *pidfd = fds[0];
    *status_fd = fds[1];
    fcntl(fds[1], F_SETFL, O_NONBLOCK);
    nfds = 0;
  }
  while (nfds > 0) close(fds[--nfds]);
  free(data);
  return rc;
}

int mpx__forkserver_fork(const mpx__fs_request_t *req, pid_t *pid,
                         int *pidfd, int *status_fd) {
  mpx__buf_t b = {0};
  size_t nfds = 0;
  int rc, fds[4];
  char *data = NULL;
  size_t len;

  if ((rc = fs_encode(req, &b)) != 0) return rc;

  pthread_mutex_lock(&fs_lock);
  for (int attempt = 0;; attempt++) {
    rc = fs_ensure_locked();
    if (rc) break;
    /* The server never speaks first: a readable socket means it died. A
     * failed send means it never saw the request, so asking a new server
     * cannot start the child twice; a failed receive might, so no retry. */
    if (fs_sock_dead()) {
      fs_drop_locked();
      continue;
    }
    rc = mpx__msg_send(fs_sock, &b, req->pass_fds, req->n_pass_fds);
    if (rc && attempt == 0) {
      fs_drop_locked();
      continue;
    }
    if (!rc) rc = mpx__msg_recv(fs_sock, &data, &len, fds, 4, &nfds);
    if (rc) {
      rc = mpx__err(MPX_EBROKEN, "forkserver (pid %d) died while starting "
                    "%s", (int)fs_pid, req->name);
      fs_drop_locked();
    }
    break;
  }
  pthread_mutex_unlock(&fs_lock);
  mpx__buf_free(&b);
  if (rc) return rc;
  return fs_decode(data, len, fds, nfds, pid, pidfd, status_fd);
}

/* ---- server side -------------------------------------------------------- */

typedef struct {
  pid_t pid;
  int status_w;
  bool daemon;
} fs_child_t;

static fs_child_t *kids;
static size_t nkids, capkids;

static void fs_reply(int sock, int64_t status, pid_t pid, const char *msg,
                     const int *fds, size_t nfds) {
  mpx__buf_t b = {0};
  if (mpx__buf_put_u64(&b, (uint64_t)status) == 0 &&
      mpx__buf_put_u64(&b, (uint64_t)pid) == 0 &&
      mpx__buf_put_str(&b, msg) == 0)
    mpx__msg_send(sock, &b, fds, nfds);
  mpx__buf_free(&b);
}

/* In the child: puts the received fds at the numbers the caller wanted.
 * *keep (the parent's pidfd, which the child keeps) moves out of their way
 * too: a wanted number may be the one it has in the server. */
static void place_fds(const int *got, const uint64_t *want, size_t n,
                      int *keep) {
  int tmp[FS_MAX_FDS];
  int floor = 3;
  size_t i;
  for (i = 0; i < n; i++)
    if ((int)want[i] >= floor) floor = (int)want[i] + 1;
  /* Move everything above every wanted number first, so no dup2 below can
   * clobber a descriptor that is still to be placed or kept. */
  if (n > 0 && *keep >= 0) {
    int moved = fcntl(*keep, F_DUPFD_CLOEXEC, floor);
    if (moved < 0) _exit(127);
    close(*keep);
    *keep = moved;
  }
  for (i = 0; i < n; i++) {
    tmp[i] = fcntl(got[i], F_DUPFD_CLOEXEC, floor);
    if (tmp[i] < 0) _exit(127);
    close(got[i]);
  }
  for (i = 0; i < n; i++) {
    if (dup2(tmp[i], (int)want[i]) < 0) _exit(127);
    close(tmp[i]);
  }
}

/* One request to start a child, as fs_call wrote it; its strings borrow
 * the message. */
typedef struct {
  const char *name, *identity, *pname, *object;
  const void *args;
  size_t args_len;
  uint64_t daemon, offset, nwant, want[FS_MAX_FDS];
} fs_req_t;

static int fs_read_request(const char *data, size_t len, size_t nfds, fs_req_t *q) {
  mpx__rd_t r = {.p = data, .end = data + len};
  if (mpx__rd_str(&r, &q->name) || mpx__rd_str(&r, &q->identity) ||
      mpx__rd_str(&r, &q->pname) || mpx__rd_u64(&r, &q->daemon) ||
      mpx__rd_str(&r, &q->object) || mpx__rd_u64(&r, &q->offset) ||
      mpx__rd_field(&r, &q->args, &q->args_len) || mpx__rd_u64(&r, &q->nwant) ||
      q->nwant != nfds || q->nwant > FS_MAX_FDS)
    return MPX_EPROTO;
  for (size_t i = 0; i < q->nwant; i++)
    if (mpx__rd_u64(&r, &q->want[i])) return MPX_EPROTO;
  return 0;
}

/* Room for one more child in kids[]. */
static int fs_kids_room(void) {
  if (nkids < capkids) return 0;
  size_t cap = capkids ? capkids * 2 : 16;
  fs_child_t *k = realloc(kids, cap * sizeof *k);
  if (k == NULL) return MPX_ENOMEM;
  kids = k;
  capkids = cap;
  return 0;
}

/* In the forked child: drop the server's descriptors and children, take
 * the request's identity and fds, and run its target. Never returns. */
static void fs_child(const fs_req_t *q, int sock, int sigfd, const int st[2], int *fds,
                     size_t nfds, int parent_pidfd, pid_t parent_pid, pid_t server) {
  sigset_t none;
  mpx_target_fn fn;
  close(sock);
  close(sigfd);
  close(st[0]);
  close(st[1]);
  for (size_t i = 0; i < nkids; i++) close(kids[i].status_w);
  nkids = 0; /* the server's, not ours: a zygote made later must not
                kill them */
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (q->daemon) {
    /* Our parent is this single-threaded server: the death signal is
     * reliable, and the server kills daemons when its caller dies. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != server) raise(SIGKILL); /* as the death signal would */
  }
  place_fds(fds, q->want, nfds, &parent_pidfd);
  mpx__process_set_identity(q->name, q->daemon != 0, q->identity, parent_pid,
                            parent_pidfd, q->pname, false);
  if (mpx__target_from_loc(q->object, (uintptr_t)q->offset, &fn) != 0) {
    MPX__ERROR("forkserver child: %s", mpx_last_error());
    _exit(127);
  }
  mpx__child_run(fn, q->args, q->args_len);
}

static void fs_serve_one(int sock, int sigfd, int parent_pidfd,
                         pid_t parent_pid) {
  char *data = NULL;
  size_t len, nfds = 0, i;
  int fds[16], st[2] = {-1, -1}, reply_fds[2];
  fs_req_t q;
  pid_t pid, server;
  int rc, pidfd;

  rc = mpx__msg_recv(sock, &data, &len, fds, 16, &nfds);
  if (rc != 0) {
    /* EOF: the caller has gone. Daemon children go with it. */
    for (i = 0; i < nkids; i++)
      if (kids[i].daemon) kill(kids[i].pid, SIGKILL);
    _exit(0);
  }
  if (fs_read_request(data, len, nfds, &q) != 0) {
    fs_reply(sock, MPX_EPROTO, 0, "malformed request", NULL, 0);
    goto out;
  }
  if (fs_kids_room() != 0) {
    fs_reply(sock, MPX_ENOMEM, 0, "out of memory", NULL, 0);
    goto out;
  }
  if (pipe2(st, O_CLOEXEC) < 0) {
    fs_reply(sock, -errno, 0, "pipe failed", NULL, 0);
    goto out;
  }
  server = getpid();
  pid = fork();
  if (pid < 0) {
    fs_reply(sock, -errno, 0, "fork failed", NULL, 0);
    goto out;
  }
  if (pid == 0) fs_child(&q, sock, sigfd, st, fds, nfds, parent_pidfd, parent_pid, server);
  pidfd = mpx__pidfd_open(pid);
  kids[nkids].pid = pid;
  kids[nkids].status_w = st[1];
  kids[nkids].daemon = q.daemon != 0;
  nkids++;
  reply_fds[0] = pidfd;
  reply_fds[1] = st[0];
  fs_reply(sock, 0, pid, "", reply_fds, pidfd >= 0 ? 2 : 0);
  if (pidfd >= 0) close(pidfd);
  close(st[0]);
out:
  for (i = 0; i < nfds; i++) close(fds[i]);
  free(data);
}

static void fs_reap(int sigfd) {
  struct signalfd_siginfo si;
  int status;
  pid_t pid;
  size_t i;
  while (read(sigfd, &si, sizeof si) > 0) {
  }
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (i = 0; i < nkids; i++) {
      if (kids[i].pid != pid) continue;
      if (mpx__write_all(kids[i].status_w, &status, sizeof status) != 0) {
        /* The caller closed its end: nobody is waiting for this status. */
      }
      close(kids[i].status_w);
      kids[i] = kids[--nkids];
      break;
    }
  }
}

/* Runs the program's own constructors, which the dynamic loader runs only
 * after every preloaded library's, so children find the program fully
 * initialised, as main() would. */
static void run_program_constructors(int argc, char **argv, char **envp) {
  struct link_map *lm = NULL;
  ElfW(Dyn) *d;
  ElfW(Addr) base;
  void (**arr)(int, char **, char **) = NULL;
  void (*init)(void) = NULL;
  size_t n = 0, i;
  void *h = dlopen(NULL, RTLD_NOW);

  if (h == NULL || dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL) return;
  base = lm->l_addr;
  for (d = lm->l_ld; d != NULL && d->d_tag != DT_NULL; d++) {
    if (d->d_tag == DT_INIT_ARRAY)
      arr = (void *)(base + d->d_un.d_ptr);
    else if (d->d_tag == DT_INIT_ARRAYSZ)
      n = d->d_un.d_val / sizeof(void *);
    else if (d->d_tag == DT_INIT)
      init = (void *)(base + d->d_un.d_ptr);
  }
  if (init) init();
  for (i = 0; arr != NULL && i < n; i++)
    if (arr[i] != NULL && (uintptr_t)arr[i] != (uintptr_t)-1)
      arr[i](argc, argv, envp);
}

static void fs_serve(int sock, int sigfd, int parent_pidfd, pid_t parent_pid)
    __attribute__((noreturn));

/* Blocks SIGINT (Ctrl-C at a terminal is for the caller) and SIGCHLD, and
 * returns a signalfd for SIGCHLD. Blocked, not ignored: a child unblocks
 * them, and a SIGINT sent to a child before that is delivered then rather
 * than lost. */
static int fs_signals(void) {
  sigset_t chld;
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  sigaction(SIGCHLD, &dfl, NULL); /* ignored, children would reap themselves */
  sigemptyset(&chld);
  sigaddset(&chld, SIGINT);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);
  sigdelset(&chld, SIGINT);
  return signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void fs_main(int sock, int argc, char **argv, char **envp) {
  int sigfd, parent_pidfd;
  pid_t parent_pid = getppid();
  mpx__buf_t hello = {0};
  Dl_info info;
  struct link_map *lm = NULL;

  fcntl(sock, F_SETFD, FD_CLOEXEC);
  /* Whatever the caller left open without close-on-exec is not for the
   * children: they get stdio and their pass_fds only. */
  if (sock > 3) close_range(3, (unsigned)sock - 1, 0);
  close_range((unsigned)sock + 1, ~0U, 0);
  mpx__process_set_identity("mpx-forkserver", false, "", parent_pid, -1, "",
                            false);
  parent_pidfd = mpx__pidfd_open(parent_pid);
  if (parent_pidfd < 0 || getppid() != parent_pid) _exit(0);
  sigfd = fs_signals();
  if (sigfd < 0) _exit(127);

  /* Constructors of the program itself have not run yet when libmpx is
   * preloaded; when libmpx is linked into the program they are running. */
  if (dladdr1((void *)(uintptr_t)mpx_forkserver_start, &info, (void **)&lm,
              RTLD_DL_LINKMAP) != 0 &&
      lm != NULL && lm->l_name != NULL && lm->l_name[0] != '\0')
    run_program_constructors(argc, argv, envp);

  mpx__buf_put(&hello, "MPX1", 4);
  if (mpx__msg_send(sock, &hello, NULL, 0) != 0) _exit(0);
  mpx__buf_free(&hello);
  fs_serve(sock, sigfd, parent_pidfd, parent_pid);
}

/* Serves requests until the caller goes (EOF on sock, or its pidfd). */
static void fs_serve(int sock, int sigfd, int parent_pidfd, pid_t parent_pid) {
  struct pollfd pfd[3];
  pfd[0].fd = sock;
  pfd[1].fd = sigfd;
  pfd[2].fd = parent_pidfd;
  pfd[0].events = pfd[1].events = pfd[2].events = POLLIN;
  for (;;) {
    if (poll(pfd, 3, -1) < 0) {
      if (errno == EINTR) continue;
      _exit(127);
    }
    if (pfd[1].revents) fs_reap(sigfd);
    if (pfd[0].revents) fs_serve_one(sock, sigfd, parent_pidfd, parent_pid);
    if (pfd[2].revents) {
      size_t i;
      for (i = 0; i < nkids; i++)
        if (kids[i].daemon) kill(kids[i].pid, SIGKILL);
      _exit(0);
    }
  }
}

/* Runs in every process that loads libmpx; in all but a forkserver it only
 * looks up one environment variable. */
__attribute__((constructor)) static void fs_hijack(int argc, char **argv,
                                                   char **envp) {
  const char *v = getenv(FS_ENV);
  const char *pre;
  char *end;
  long fd;
  if (v == NULL) return;
  fd = strtol(v, &end, 10);
  if (*end != '\0' || fd < 0 || fcntl((int)fd, F_GETFD) < 0) return;
  unsetenv(FS_ENV);
  pre = getenv(FS_ENV_PRELOAD);
  if (pre != NULL) {
    if (*pre)
      setenv("LD_PRELOAD", pre, 1);
    else
      unsetenv("LD_PRELOAD");
    unsetenv(FS_ENV_PRELOAD);
  }
  (void)envp; /* stale after setenv: pass environ on */
  fs_main((int)fd, argc, argv, environ);
  _exit(0);
}

/* ---- zygotes (forkserver.h) --------------------------------------------- */

struct mpx__zygote_s {
  pthread_mutex_t mu; /* one request at a time on sock */
  int sock;
  pid_t pid;
  char name[64];
};

/* In the zygote, a fork of the caller: serve until the caller goes. */
static void zygote_main(int sock, pid_t parent, const char *name) {
  int sigfd, parent_pidfd;
  char pname[128]; /* a copy: setting the identity may free the old name */
  snprintf(pname, sizeof pname, "%s", mpx__process_current_name());
  mpx__process_after_fork_child();
  mpx__process_set_identity(name, false, "", parent, -1, pname, true);
  nkids = 0;
  parent_pidfd = mpx__pidfd_open(parent);
  if (parent_pidfd < 0 || getppid() != parent) _exit(0);
  sigfd = fs_signals();
  if (sigfd < 0) _exit(127);
  fs_serve(sock, sigfd, parent_pidfd, parent);
}

int mpx__zygote_new(mpx__zygote_t **out, const char *name) {
  mpx__zygote_t *z;
  int sv[2];
  pid_t parent = getpid(), pid;

  *out = NULL;
  z = calloc(1, sizeof *z);
  if (z == NULL) return mpx__err(MPX_ENOMEM, "zygote: out of memory");
  snprintf(z->name, sizeof z->name, "%s-zygote", name ? name : "mpx");
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
    free(z);
    return mpx__err_errno("zygote: socketpair");
  }
  /* As start_fork: the child must not write the caller's pending output
   * a second time. */
  fflush(NULL);
  pid = fork();
  if (pid < 0) {
    int rc = mpx__err_errno("zygote: fork");
    close(sv[0]);
    close(sv[1]);
    free(z);
    return rc;
  }
  if (pid == 0) {
    close(sv[0]);
    zygote_main(sv[1], parent, z->name);
  }
  close(sv[1]);
  mpx__fork_warn_threads();
  pthread_mutex_init(&z->mu, NULL);
  z->sock = sv[0];
  z->pid = pid;
  MPX__DEBUG("%s started (pid %d)", z->name, (int)pid);
  *out = z;
  return 0;
}

int mpx__zygote_fork(mpx__zygote_t *z, const mpx__fs_request_t *req,
                     pid_t *pid, int *pidfd, int *status_fd) {
  mpx__buf_t b = {0};
  size_t nfds = 0;
  int rc, fds[4];
  char *data = NULL;
  size_t len;

  if ((rc = fs_encode(req, &b)) != 0) return rc;
  pthread_mutex_lock(&z->mu);
  rc = mpx__msg_send(z->sock, &b, req->pass_fds, req->n_pass_fds);
  if (!rc) rc = mpx__msg_recv(z->sock, &data, &len, fds, 4, &nfds);
  pthread_mutex_unlock(&z->mu);
  mpx__buf_free(&b);
  if (rc) {
    /* Nobody restarts a zygote: it holds the caller's state at its birth,
     * which is gone. */
    free(data);
    while (nfds > 0) close(fds[--nfds]);
    return mpx__err(MPX_EBROKEN, "%s (pid %d) is gone: cannot start %s",
                    z->name, (int)z->pid, req->name);
  }
  return fs_decode(data, len, fds, nfds, pid, pidfd, status_fd);
}

bool mpx__zygote_alive(mpx__zygote_t *z) {
  struct pollfd pfd = {.fd = z->sock, .events = POLLIN};
  return poll(&pfd, 1, 0) == 0;
}

void mpx__zygote_free(mpx__zygote_t *z) {
  if (z == NULL) return;
  /* Not only EOF: another zygote or worker forked since may hold a copy
   * of our end of the socket. */
  close(z->sock);
  kill(z->pid, SIGKILL);
  while (waitpid(z->pid, NULL, 0) < 0 && errno == EINTR) {
  }
  pthread_mutex_destroy(&z->mu);
  free(z);
}
