/* What the suites that run the real `mpx` binary share: a scratch
 * directory, files in it, starting mpx (or any program) with its stdout
 * and stderr captured there, and failing on a sanitizer report that a
 * worker relayed. Header-only; include after ../mpx_test.h with MPX_BIN
 * defined. */
#ifndef MPX_TESTS_TOOLS_CLI_H
#define MPX_TESTS_TOOLS_CLI_H

#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <spawn.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The suite's scratch directory: set it with mkdtemp before use. */
static char dir[64];

/* dir/name, in one of a few rotating buffers. */
static inline const char *in_dir(const char *name) {
  static char bufs[8][512];
  static int next;
  char *p = bufs[next++ % 8];
  snprintf(p, 512, "%s/%s", dir, name);
  return p;
}

static inline void write_file(const char *name, const char *text) {
  FILE *f = fopen(in_dir(name), "w");
  fputs(text, f);
  fclose(f);
}

static inline char *read_path(const char *path, size_t *len) {
  FILE *f = fopen(path, "r");
  if (!f) return NULL;
  char *b = NULL;
  size_t cap = 0, n = 0, r;
  do {
    if (n + 65536 > cap) b = realloc(b, cap = (n + 65536) * 2);
    r = fread(b + n, 1, 65536, f);
    n += r;
  } while (r > 0);
  fclose(f);
  b[n] = '\0';
  if (len) *len = n;
  return b;
}

static inline char *read_file(const char *name, size_t *len) { return read_path(in_dir(name), len); }

/* Runs a shell command line; its exit status (-1 when it did not exit). */
static inline int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int sh(const char *fmt, ...) {
  char cmd[8192];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof cmd, fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* The lines of dir/name, -1 when it cannot be read. */
static inline long count_lines_of(const char *name) {
  size_t len = 0;
  char *s = read_file(name, &len);
  long n = 0;
  for (size_t i = 0; s && i < len; i++) n += s[i] == '\n';
  free(s);
  return s ? n : -1;
}

/* The environment without the variables that would steer an installed
 * mpx elsewhere. */
static inline char **clean_env(void) {
  static char *env[512];
  size_t n = 0;
  for (char **e = environ; *e && n + 1 < 512; e++)
    if (strncmp(*e, "MPX_PLUGIN_PATH=", 16) != 0 && strncmp(*e, "MPX_WORKER=", 11) != 0)
      env[n++] = *e;
  env[n] = NULL;
  return env;
}

/* File actions for a child: stdout and stderr to those files in dir, and
 * cwd (NULL: here) as its directory. */
static inline void cli_capture_output(posix_spawn_file_actions_t *fa, const char *cwd) {
  posix_spawn_file_actions_addopen(fa, 1, in_dir("stdout"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(fa, 2, in_dir("stderr"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (cwd) posix_spawn_file_actions_addchdir_np(fa, cwd);
}

/* Starts BIN ARGS... in cwd (NULL: here) with stdout and stderr to files
 * in dir. */
static inline pid_t start_bin(const char *bin, const char *cwd, char **env,
                       const char *const *args) {
  const char *argv[32] = {bin};
  int n = 1;
  for (; args[n - 1]; n++) argv[n] = args[n - 1];
  argv[n] = NULL;
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  cli_capture_output(&fa, cwd);
  pid_t pid;
  int rc = posix_spawn(&pid, bin, &fa, NULL, (char **)argv, env ? env : environ);
  posix_spawn_file_actions_destroy(&fa);
  return rc == 0 ? pid : -1;
}

static inline void show_stderr(void) {
  char *e = read_file("stderr", NULL);
  fprintf(stderr, "--- mpx stderr:\n%s---\n", e ? e : "");
  free(e);
}

/* After a run: a sanitizer report on mpx's stderr (its own, or a
 * worker's, which the supervisor relays) fails the test, whatever the
 * exit code, as a restarted worker hides its own. */
static inline void no_sanitizer_report(void) {
  char *e = read_file("stderr", NULL);
  bool bad = e && (strstr(e, "ERROR: AddressSanitizer") || strstr(e, "ERROR: LeakSanitizer") ||
                   strstr(e, "runtime error:") || strstr(e, "ThreadSanitizer"));
  CU_ASSERT_FALSE(bad);
  if (bad) show_stderr();
  free(e);
}

/* Waits for pid, then checks its stderr as above. */
static inline int finish(pid_t pid) {
  int rc = mpx_test_wait_exit(pid);
  no_sanitizer_report();
  return rc;
}

static inline pid_t start_mpx(const char *const *args) { return start_bin(MPX_BIN, NULL, NULL, args); }

static inline int run_mpx(const char *const *args) { return finish(start_mpx(args)); }

/* `mpx check` of a pipeline text (written to `name` in the scratch
 * directory) exits 2 with `want` in its stderr. */
static inline void expect_config_error(const char *name, const char *yaml, const char *want) {
  write_file(name, yaml);
  const char *args[] = {"check", in_dir(name), NULL};
  CU_ASSERT_EQUAL(run_mpx(args), 2);
  char *err = read_file("stderr", NULL);
  CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, want) : NULL);
  if (!err || !strstr(err, want)) fprintf(stderr, "want '%s' in:\n%s\n", want, err ? err : "");
  free(err);
}

/* The children of pid, from /proc (up to max, into out). workers: only
 * live ones named mpx-worker (as exec'ed) or STAGE-worker-N (once the pool
 * has named them); else every child, zombies included. */
static inline int cli_children(pid_t pid, pid_t *out, int max, bool workers) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int n = 0;
  char path[300], buf[512];
  while (d && (e = readdir(d)) != NULL && n < max) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) {
      char *open = strchr(buf, '('), *close = strrchr(buf, ')');
      int ppid;
      char st;
      if (open && close && sscanf(close + 2, "%c %d", &st, &ppid) == 2 && ppid == pid &&
          (!workers ||
           (st != 'Z' && (strncmp(open + 1, "mpx-worker)", 11) == 0 ||
                          memmem(open + 1, (size_t)(close - open - 1), "-worker-", 8)))))
        out[n++] = atoi(e->d_name);
    }
    fclose(f);
  }
  if (d) closedir(d);
  return n;
}

/* Whether tid sleeps in pause() (crashy's hang_on), which is ppoll where
 * the kernel has no pause. */
static inline int cli_in_pause(pid_t tid) {
  char w[128];
  long nr = mpx_test_sleeping_in(tid, w, sizeof w);
#ifdef SYS_pause
  if (nr == SYS_pause) return 1;
#endif
  return nr == SYS_ppoll;
}

/* Waits until the main thread of one of pid's workers, where its plugin
 * runs, satisfies in() (e.g. mpx_test_in_nanosleep: crashy holds an item
 * in its delay_ms; cli_in_pause: it hangs on hang_on): true, or false
 * after `timeout` s. */
static inline bool cli_wait_worker_in(pid_t pid, int (*in)(pid_t), double timeout) {
  double end = mpx_test_now() + timeout;
  pid_t w[64];
  for (;;) {
    int n = cli_children(pid, w, 64, true);
    for (int i = 0; i < n; i++)
      if (in(w[i])) return true;
    if (mpx_test_now() > end) return false;
    mpx_test_sleep(0.001);
  }
}

/* Makes the scratch directory from a mkdtemp template (a suite's init):
 * 0, or -1 when it cannot. */
static inline int cli_mkdir(const char *tmpl) {
  snprintf(dir, sizeof dir, "%s", tmpl);
  if (mkdtemp(dir) != NULL) return 0;
  perror(dir);
  return -1;
}

/* Removes the scratch directory and all in it (a suite's cleanup): 0, or
 * -1 when rm fails. */
static inline int cli_rmdir(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  return system(cmd) == 0 ? 0 : -1;
}

/* Whether pid is a process that has not ended (running, or anything but
 * a zombie): /proc/PID/stat's state, after the name in parentheses. */
static inline bool cli_alive(pid_t pid) {
  char p[64], buf[512], st = 0;
  snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(p, "r");
  if (!f) return false;
  if (fgets(buf, sizeof buf, f)) {
    char *q = strrchr(buf, ')');
    if (q) st = q[2];
  }
  fclose(f);
  return st && st != 'Z';
}

/* How many of the n pids are alive, after waiting up to `tries` times
 * `pause` s for them to end. */
static inline int cli_count_alive(const pid_t *pids, int n, int tries, double pause) {
  int alive = n;
  for (int t = 0; t < tries && alive; t++) {
    alive = 0;
    for (int i = 0; i < n; i++) alive += cli_alive(pids[i]);
    if (alive) mpx_test_sleep(pause);
  }
  return alive;
}

/* A stage's figure in a --stats-json file; UINT64_MAX when absent. */
static inline uint64_t json_u64(const char *js, const char *stage, const char *key) {
  char pat[128];
  snprintf(pat, sizeof pat, "\"name\":\"%s\"", stage);
  const char *p = js ? strstr(js, pat) : NULL;
  snprintf(pat, sizeof pat, "\"%s\":", key);
  p = p ? strstr(p, pat) : NULL;
  return p ? strtoull(p + strlen(pat), NULL, 10) : UINT64_MAX;
}

#endif
