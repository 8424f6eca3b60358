/* The plugin search path, shared by the codec and the task plugin
 * loaders: which directories, in which order, and the dlopen step with
 * its error messages. Here in base/ because the codec loader needs it;
 * the pipeline's public view of it is core/pipeline/plugin_search.c. */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>

#include "elf_check.h"
#include "internal.h"
#include "plugin_path.h"

#define SUFFIX ".so"

int mpx__plugin_name_ok(const char *s) {
  if (s == NULL || *s == '\0') return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

/* Appends dir (n bytes) and a '\n' to dirs, unless it is already there
 * or does not fit. */
static void add_dir(char *dirs, size_t cap, const char *dir, size_t n) {
  size_t len = strlen(dirs);
  if (n == 0 || len + n + 2 > cap) return;
  for (const char *d = dirs; *d;) {
    const char *nl = strchr(d, '\n');
    if ((size_t)(nl - d) == n && memcmp(d, dir, n) == 0) return;
    d = nl + 1;
  }
  memcpy(dirs + len, dir, n);
  dirs[len + n] = '\n';
  dirs[len + n + 1] = '\0';
}

void mpx__plugin_dirs(char *dirs, size_t cap) {
  const char *env = getenv("MPX_PLUGIN_PATH");
  Dl_info info;
  bool linked_in = false; /* the static library, inside a program */
  if (cap == 0) return;
  dirs[0] = '\0';
  while (env && *env) {
    const char *colon = strchr(env, ':');
    size_t n = colon ? (size_t)(colon - env) : strlen(env);
    add_dir(dirs, cap, env, n);
    env = colon ? colon + 1 : NULL;
  }
  /* Next to the libmpx in use: <dir>/plugins in a build tree,
   * <libdir>/mpx/plugins in an install. */
  if (dladdr((void *)mpx__plugin_dirs, &info) && info.dli_fname) {
    const char *slash = strrchr(info.dli_fname, '/');
    const char *base = slash ? slash + 1 : info.dli_fname;
    linked_in = strncmp(base, "libmpx", 6) != 0;
    if (slash) {
      char d[PATH_MAX];
      size_t n = (size_t)(slash - info.dli_fname);
      if (n + 16 < sizeof d) {
        memcpy(d, info.dli_fname, n);
        memcpy(d + n, "/plugins", 9);
        add_dir(dirs, cap, d, strlen(d));
        memcpy(d + n, "/mpx/plugins", 13);
        add_dir(dirs, cap, d, strlen(d));
      }
    }
  }
#ifdef MPX_INSTALL_PLUGIN_DIR
  add_dir(dirs, cap, MPX_INSTALL_PLUGIN_DIR, strlen(MPX_INSTALL_PLUGIN_DIR));
#endif
#ifdef MPX_BUILD_PLUGIN_DIR
  /* A program with the static library in it (a test suite) has no libmpx
   * file to stand beside: last, the plugins of the tree it was built in. */
  if (linked_in) add_dir(dirs, cap, MPX_BUILD_PLUGIN_DIR, strlen(MPX_BUILD_PLUGIN_DIR));
#else
  (void)linked_in;
#endif
}

int mpx__plugin_find(const char *what, const char *prefix, const char *name,
                     char *path, size_t cap) {
  char dirs[4096];
  mpx__plugin_dirs(dirs, sizeof dirs);
  for (char *d = dirs, *nl; *d; d = nl + 1) {
    nl = strchr(d, '\n');
    *nl = '\0';
    int n = snprintf(path, cap, "%s/%s%s" SUFFIX, d, prefix, name);
    if (n > 0 && (size_t)n < cap && access(path, F_OK) == 0) return 0;
    *nl = ':';
  }
  size_t n = strlen(dirs);
  if (n) dirs[n - 1] = '\0';
  if (cap) path[0] = '\0';
  return mpx__err(MPX_ENOENT, "no %s '%s': no %s%s" SUFFIX " in %s (set "
                  "MPX_PLUGIN_PATH to add directories)", what, name, prefix,
                  name, n ? dirs : "(no directories)");
}

int mpx__plugin_open(const char *what, const char *path, const char *symbol,
                     void **handle, void **sym) {
  *handle = NULL;
  *sym = NULL;
  /* dlopen maps what the headers say: a segment past the end of a
   * truncated file would kill this process with SIGBUS. */
  int rc = mpx__elf_check(what, path);
  if (rc != 0) return rc;
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL)
    return mpx__err(MPX_EPLUGIN, "cannot load %s '%s': %s", what, path,
                    dlerror());
  void *s = dlsym(h, symbol);
  if (s == NULL) {
    dlclose(h);
    return mpx__err(MPX_ENOSYM, "'%s' exports no %s: not an mpx %s", path,
                    symbol, what);
  }
  *handle = h;
  *sym = s;
  return 0;
}

int mpx__plugin_load_file(const char *what, const char *path,
                          const char *symbol, mpx__desc_check_fn check,
                          const char *want, const void **desc) {
  void *h, *sym;
  const char *name = NULL;
  int rc = mpx__plugin_open(what, path, symbol, &h, &sym);
  if (rc != 0) return rc;
  if ((rc = check(sym, path, &name)) != 0) {
    dlclose(h);
    return rc;
  }
  if (want != NULL && strcmp(name, want) != 0) {
    rc = mpx__err(MPX_EPLUGIN, "'%s' is %s '%s', not '%s'", path, what, name,
                  want);
    dlclose(h);
    return rc;
  }
  *desc = sym;
  return 0;
}
