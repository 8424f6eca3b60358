/* The CPython interpreters a suite talks to: python3, then any 3.12+
 * found as python3.N on PATH or under $PYENV_ROOT/versions, so the
 * {sha256} handshake (and each version's manager server) is checked
 * against CPython's own code too. find_pythons() fills pythons[] and
 * minors[] (n_pythons of them; python3 is always the first) and names
 * them on stderr. spawn_helper() runs a helper script under one of them
 * and read_line() reads what it prints. Header-only, for the ipc suites. */
#ifndef MPX_TESTS_IPC_PYTHONS_H
#define MPX_TESTS_IPC_PYTHONS_H

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include <CUnit/Basic.h>

#include "../mpx_test.h"

#define MAX_PY 8
static char pythons[MAX_PY][512];
static int minors[MAX_PY];
static int n_pythons = -1;

/* The minor version of interpreter `py`, or -1 when it does not run. */
static int minor_of(const char *py) {
  char cmd[700];
  int minor = -1;
  FILE *f;
  snprintf(cmd, sizeof cmd,
           "'%s' -c 'import sys; print(sys.version_info[1])' 2>/dev/null", py);
  if ((f = popen(cmd, "r")) == NULL) return -1;
  if (fscanf(f, "%d", &minor) != 1) minor = -1;
  if (pclose(f) != 0) minor = -1;
  return minor;
}

static void add_python(const char *py, int want) {
  int m = minor_of(py);
  if (m < 0 || (want >= 0 && m != want) || n_pythons >= MAX_PY) return;
  for (int i = 0; i < n_pythons; i++)
    if (minors[i] == m) return; /* one per version */
  snprintf(pythons[n_pythons], sizeof pythons[0], "%s", py);
  minors[n_pythons++] = m;
}

__attribute__((unused)) static void find_pythons(void) {
  const char *root = getenv("PYENV_ROOT");
  if (n_pythons >= 0) return;
  n_pythons = 0;
  add_python("python3", -1);
  CU_ASSERT_FATAL(n_pythons == 1);
  for (int m = 12; m <= 15; m++) {
    char name[64], cmd[700];
    snprintf(name, sizeof name, "python3.%d", m);
    add_python(name, m);
    if (root != NULL) {
      FILE *f;
      snprintf(cmd, sizeof cmd, "ls -d '%s'/versions/3.%d.*/bin/python3.%d "
               "2>/dev/null | tail -1", root, m, m);
      if ((f = popen(cmd, "r")) != NULL) {
        char line[512];
        if (fgets(line, sizeof line, f) != NULL) {
          line[strcspn(line, "\n")] = '\0';
          add_python(line, m);
        }
        pclose(f);
      }
    }
  }
  for (int i = 0; i < n_pythons; i++)
    fprintf(stderr, "[CPython 3.%d: %s] ", minors[i], pythons[i]);
}

/* CPython major.minor (2.7, 3.13...): pythonM.N on PATH when it is that
 * version, else pyenv's ($PYENV_ROOT, default ~/.pyenv). Fills out and
 * returns 1, or says on stdout that it is absent and returns 0. */
__attribute__((unused)) static int find_python_version(int major, int minor, char *out, size_t cap) {
  char name[32], cmd[700];
  const char *root = getenv("PYENV_ROOT"), *home = getenv("HOME");
  FILE *f;
  snprintf(name, sizeof name, "python%d.%d", major, minor);
  snprintf(cmd, sizeof cmd, "%s -c 'import sys; sys.exit(sys.version_info[:2] "
           "!= (%d, %d))' >/dev/null 2>&1", name, major, minor);
  if (system(cmd) == 0) {
    snprintf(out, cap, "%s", name);
    return 1;
  }
  if (root != NULL)
    snprintf(cmd, sizeof cmd, "ls -d '%s'/versions/%d.%d.*/bin/%s 2>/dev/null | tail -1",
             root, major, minor, name);
  else
    snprintf(cmd, sizeof cmd, "ls -d '%s'/.pyenv/versions/%d.%d.*/bin/%s 2>/dev/null "
             "| tail -1", home ? home : "/root", major, minor, name);
  out[0] = '\0';
  if ((f = popen(cmd, "r")) != NULL) {
    if (fgets(out, (int)cap, f) == NULL) out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    pclose(f);
  }
  if (out[0] == '\0') {
    printf("\n  CPython %d.%d not found: skipped\n", major, minor);
    return 0;
  }
  return 1;
}

/* Starts `py PYHELPER_DIR/script ARGS...` (args NULL-terminated, at most
 * 8 of them); its stdout on *out when out is not NULL. */
static pid_t spawn_helper(const char *py, const char *script,
                          const char *const *args, int *out) {
  char path[512];
  const char *argv[11];
  int p[2] = {-1, -1};
  size_t n = 0;
  pid_t pid;
  snprintf(path, sizeof path, "%s/%s", PYHELPER_DIR, script);
  argv[n++] = py;
  argv[n++] = path;
  while (*args != NULL && n < 10) argv[n++] = *args++;
  argv[n] = NULL;
  if (out != NULL) CU_ASSERT_FATAL(pipe(p) == 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    if (out != NULL) {
      dup2(p[1], 1);
      close(p[0]);
      close(p[1]);
    }
    execvp(py, (char *const *)argv);
    _exit(127);
  }
  if (out != NULL) {
    close(p[1]);
    *out = p[0];
  }
  return pid;
}

/* One line a helper prints (its bound address, say) from fd, without its
 * newline, within `timeout` seconds; 1 when read. */
static int read_line(int fd, char *buf, size_t cap, double timeout) {
  size_t n = 0;
  double end = mpx_test_now() + timeout;
  while (n + 1 < cap && mpx_test_now() < end) {
    struct pollfd pf = {fd, POLLIN, 0};
    if (poll(&pf, 1, 100) <= 0) continue;
    if (read(fd, buf + n, 1) != 1) break;
    if (buf[n] == '\n') {
      buf[n] = '\0';
      return 1;
    }
    n++;
  }
  buf[n] = '\0';
  return 0;
}

#endif /* MPX_TESTS_IPC_PYTHONS_H */
