/* The CPython interpreters a suite talks to: python3, then any 3.12+
 * found as python3.N on PATH or under $PYENV_ROOT/versions, so the
 * {sha256} handshake (and each version's manager server) is checked
 * against CPython's own code too. find_pythons() fills pythons[] and
 * minors[] (n_pythons of them; python3 is always the first) and names
 * them on stderr. Header-only, for the ipc suites. */
#ifndef MPX_TESTS_IPC_PYTHONS_H
#define MPX_TESTS_IPC_PYTHONS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <CUnit/Basic.h>

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

static void find_pythons(void) {
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

#endif /* MPX_TESTS_IPC_PYTHONS_H */
