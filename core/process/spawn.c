/* The spawn start method: exec mpx-worker, which loads "path:symbol".
 *
 * The caller and the worker share a socketpair. The caller sends one
 * request (name, identity, parent, daemon, spec, args, log level); the
 * worker loads the target and answers 0 or an error with its message, so a
 * missing file or symbol fails mpx_process_start() with that message
 * instead of a silent exit. Then the worker runs the target. */
#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"
#include "process_internal.h"
#include "rd.h"

extern char **environ;

#ifndef MPX_BUILD_WORKER
#define MPX_BUILD_WORKER ""
#endif
#ifndef MPX_INSTALL_WORKER
#define MPX_INSTALL_WORKER ""
#endif
#ifndef MPX_WORKER_FROM_LIBDIR
#define MPX_WORKER_FROM_LIBDIR ""
#endif

static pthread_once_t installed_once = PTHREAD_ONCE_INIT;
static char installed_worker[PATH_MAX];

/* The worker installed with the libmpx in use: its directory joined with
 * MPX_WORKER_FROM_LIBDIR (../libexec/mpx/mpx-worker). Empty when libmpx
 * is the build tree's, or linked statically into a program. */
static void find_installed_worker(void) {
  Dl_info info;
  const char *slash;
  size_t n, build = strlen(MPX_BUILD_WORKER);
  if (MPX_WORKER_FROM_LIBDIR[0] == '\0' ||
      !dladdr((void *)find_installed_worker, &info) || info.dli_fname == NULL ||
      (slash = strrchr(info.dli_fname, '/')) == NULL)
    return;
  n = (size_t)(slash - info.dli_fname);
  /* MPX_BUILD_WORKER is <build>/tools/mpx-worker, next to <build>/libmpx.so. */
  if (build > n + 1 && memcmp(MPX_BUILD_WORKER, info.dli_fname, n + 1) == 0 &&
      strcmp(MPX_BUILD_WORKER + n + 1, "tools/mpx-worker") == 0)
    return;
  snprintf(installed_worker, sizeof installed_worker, "%.*s/%s", (int)n,
           info.dli_fname, MPX_WORKER_FROM_LIBDIR);
}

const char *mpx__worker_path(void) {
  const char *env = getenv("MPX_WORKER");
  if (env != NULL && *env != '\0') return env;
  /* A worker must load the same libmpx as its parent: spawn passes it
   * addresses by library path. So an installed libmpx spawns the worker
   * installed next to it, wherever the tree was installed or moved; the
   * build tree's libmpx (and a program linked statically) the build
   * tree's worker, else the one at the configured prefix. */
  pthread_once(&installed_once, find_installed_worker);
  if (installed_worker[0] && access(installed_worker, X_OK) == 0)
    return installed_worker;
  if (MPX_BUILD_WORKER[0] && access(MPX_BUILD_WORKER, X_OK) == 0)
    return MPX_BUILD_WORKER;
  return MPX_INSTALL_WORKER;
}

/* Runs mpx-worker at path with its end of the control socket (sv[1],
 * closed here) and the request's fds kept open, no signal blocked. */
static int spawn_exec(const mpx__spawn_request_t *req, const char *path, int sv[2],
                      pid_t *pid) {
  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  sigset_t none;
  char fdarg[32], *argv[4];
  posix_spawn_file_actions_init(&fa);
  /* dup2 onto itself clears close-on-exec in the child only. */
  posix_spawn_file_actions_adddup2(&fa, sv[1], sv[1]);
  for (size_t i = 0; i < req->n_pass_fds; i++)
    posix_spawn_file_actions_adddup2(&fa, req->pass_fds[i], req->pass_fds[i]);
  posix_spawnattr_init(&attr);
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK);
  snprintf(fdarg, sizeof fdarg, "%d", sv[1]);
  argv[0] = "mpx-worker";
  argv[1] = "--ctl";
  argv[2] = fdarg;
  argv[3] = NULL;
  int rc = posix_spawn(pid, path, &fa, &attr, argv, environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  close(sv[1]);
  return rc == 0 ? 0 : mpx__err(-rc, "spawn: cannot exec mpx-worker '%s'", path);
}

/* The request: who the child is, its log level, its target and args. */
static int spawn_send_request(int sock, const mpx__spawn_request_t *req) {
  mpx__buf_t b = {0};
  int rc = mpx__buf_put_str(&b, req->name);
  if (!rc) rc = mpx__buf_put_str(&b, req->identity);
  if (!rc) rc = mpx__buf_put_str(&b, mpx__process_current_name());
  if (!rc) rc = mpx__buf_put_u64(&b, (uint64_t)getpid());
  if (!rc) rc = mpx__buf_put_u64(&b, req->daemon);
  if (!rc) rc = mpx__buf_put_u64(&b, (uint64_t)mpx_log_get_level());
  if (!rc) rc = mpx__buf_put_str(&b, req->spec);
  if (!rc) rc = mpx__buf_put_field(&b, req->args, req->args_len);
  if (!rc) rc = mpx__msg_send(sock, &b, NULL, 0);
  mpx__buf_free(&b);
  return rc;
}

/* The worker's report: 0 or the error it gives; *none when no report came
 * (then MPX_EBROKEN, without a message). */
static int spawn_read_reply(int sock, bool *none) {
  char *data = NULL;
  size_t len, nfds;
  int rc = mpx__msg_recv(sock, &data, &len, NULL, 0, &nfds);
  *none = rc != 0;
  if (rc) return MPX_EBROKEN;
  mpx__rd_t r = {data, data + len};
  uint64_t st;
  const char *msg;
  if (mpx__rd_u64(&r, &st) || mpx__rd_str(&r, &msg))
    rc = mpx__err(MPX_EPROTO, "spawn: malformed reply from mpx-worker");
  else if ((int64_t)st != 0)
    rc = mpx__err((int)(int64_t)st, "spawn: %s", msg);
  free(data);
  return rc;
}

/* The worker died or could not be talked to: reap it and say how it
 * ended. */
static int spawn_failed(pid_t pid, const char *path, int rc) {
  int status;
  if (waitpid(pid, &status, 0) == pid) {
    if (WIFSIGNALED(status))
      rc = mpx__err(MPX_EBROKEN, "spawn: mpx-worker '%s' was killed by "
                    "signal %d before it reported", path, WTERMSIG(status));
    else if (rc == MPX_EBROKEN || rc == 0)
      rc = mpx__err(MPX_EBROKEN, "spawn: mpx-worker '%s' exited with code "
                    "%d before it reported", path, WEXITSTATUS(status));
  }
  return rc;
}

int mpx__spawn(const mpx__spawn_request_t *req, pid_t *pidp, int *pidfdp) {
  const char *path = mpx__worker_path();
  int sv[2], rc, pidfd;
  bool none = false;
  pid_t pid;

  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
    return mpx__err_errno("spawn: socketpair");
  if ((rc = spawn_exec(req, path, sv, &pid)) != 0) {
    close(sv[0]);
    return rc;
  }
  pidfd = mpx__pidfd_open(pid);
  if (pidfd < 0) {
    rc = spawn_failed(pid, path, mpx__err(pidfd, "spawn: pidfd_open(%d)", (int)pid));
  } else if (spawn_send_request(sv[0], req) != 0) {
    rc = spawn_failed(pid, path, mpx__err(MPX_EBROKEN, "spawn: mpx-worker '%s' (pid %d) "
                                          "did not take its request", path, (int)pid));
  } else if ((rc = spawn_read_reply(sv[0], &none)) != 0 && none) {
    rc = spawn_failed(pid, path, rc);
  } else if (rc != 0) {
    int status;
    waitpid(pid, &status, 0); /* the worker exits after reporting */
  }
  close(sv[0]);
  if (rc != 0) {
    if (pidfd >= 0) close(pidfd);
    return rc;
  }
  *pidp = pid;
  *pidfdp = pidfd;
  return 0;
}

static void worker_reply(int sock, int rc, const char *msg) {
  mpx__buf_t b = {0};
  if (mpx__buf_put_u64(&b, (uint64_t)(int64_t)rc) == 0 &&
      mpx__buf_put_str(&b, msg) == 0)
    mpx__msg_send(sock, &b, NULL, 0);
  mpx__buf_free(&b);
}

int mpx__worker_main(int argc, char **argv) {
  char *data = NULL, *end;
  size_t len, nfds, args_len;
  const char *name, *identity, *pname, *spec;
  const void *args;
  uint64_t ppid, daemon, level;
  mpx__rd_t r;
  mpx_target_fn fn;
  void *copy = NULL;
  long sock;
  int rc;

  if (argc != 3 || strcmp(argv[1], "--ctl") != 0 ||
      (sock = strtol(argv[2], &end, 10)) < 0 || *end != '\0') {
    fprintf(stderr, "mpx-worker: started by mpx for the spawn start method; "
                    "not meant to be run by hand\n");
    return 2;
  }
  fcntl((int)sock, F_SETFD, FD_CLOEXEC);
  if (mpx__msg_recv((int)sock, &data, &len, NULL, 0, &nfds) != 0) return 2;
  r.p = data;
  r.end = data + len;
  if (mpx__rd_str(&r, &name) || mpx__rd_str(&r, &identity) ||
      mpx__rd_str(&r, &pname) || mpx__rd_u64(&r, &ppid) ||
      mpx__rd_u64(&r, &daemon) || mpx__rd_u64(&r, &level) ||
      mpx__rd_str(&r, &spec) || mpx__rd_field(&r, &args, &args_len)) {
    worker_reply((int)sock, MPX_EPROTO, "malformed request");
    free(data);
    return 2;
  }
  if (daemon) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if ((uint64_t)getppid() != ppid) raise(SIGKILL); /* as the death signal would */
  }
  mpx_log_set_level((mpx_log_level_t)level);
  mpx__process_set_identity(name, daemon != 0, identity, (pid_t)ppid, -1,
                            pname, false);
  rc = mpx__target_resolve_spec(spec, &fn);
  worker_reply((int)sock, rc, rc ? mpx_last_error() : "");
  close((int)sock);
  if (rc) {
    free(data);
    return 127;
  }
  if (args_len) {
    /* The target gets its own copy, as under fork. */
    copy = malloc(args_len);
    if (copy == NULL) return 127;
    memcpy(copy, args, args_len);
  }
  free(data);
  mpx__child_run(fn, copy, args_len);
}
