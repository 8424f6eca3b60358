/* Naming a process target across address spaces.
 *
 * A "path:symbol" spec is loaded with dlopen and dlsym. A function pointer
 * is carried to a forkserver child, whose copy of an object may sit at
 * another address, as (object path, offset from the object's base). */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "process_internal.h"

int mpx__target_resolve_spec(const char *spec, mpx_target_fn *fn) {
  const char *colon = spec ? strrchr(spec, ':') : NULL;
  char *path;
  void *h, *sym;

  if (colon == NULL || colon == spec || colon[1] == '\0')
    return mpx__err(MPX_EINVAL,
                    "target '%s' is not of the form \"path/lib.so:symbol\"",
                    spec ? spec : "(null)");
  path = strndup(spec, (size_t)(colon - spec));
  if (path == NULL) return MPX_ENOMEM;
  h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    mpx__err(MPX_EPLUGIN, "cannot load '%s' for target '%s': %s", path,
             colon + 1, e ? e : "unknown dlopen error");
    free(path);
    return MPX_EPLUGIN;
  }
  dlerror();
  sym = dlsym(h, colon + 1);
  if (sym == NULL) {
    const char *e = dlerror();
    mpx__err(MPX_ENOSYM, "no symbol '%s' in '%s': %s", colon + 1, path,
             e ? e : "symbol is NULL");
    free(path);
    /* The handle stays open: dlclose of a library a caller may also use is
     * never worth the risk, and a second dlopen is refcounted. */
    return MPX_ENOSYM;
  }
  free(path);
  *(void **)fn = sym;
  return 0;
}

int mpx__target_locate(mpx_target_fn fn, mpx__target_loc_t *loc) {
  Dl_info info;
  struct link_map *lm = NULL;

  if (dladdr1((void *)(uintptr_t)fn, &info, (void **)&lm, RTLD_DL_LINKMAP) ==
          0 ||
      lm == NULL)
    return mpx__err(MPX_EINVAL, "target %p is not inside any loaded object",
                    (void *)(uintptr_t)fn);
  loc->object = strdup(lm->l_name ? lm->l_name : "");
  if (loc->object == NULL) return MPX_ENOMEM;
  loc->offset = (uintptr_t)fn - (uintptr_t)lm->l_addr;
  return 0;
}

int mpx__target_from_loc(const char *object, uintptr_t offset,
                         mpx_target_fn *fn) {
  struct link_map *lm = NULL;
  void *h;

  /* "" is the main program; dlopen(NULL) is its handle. */
  h = dlopen(object[0] ? object : NULL, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    const char *e = dlerror();
    return mpx__err(MPX_EPLUGIN, "cannot load '%s': %s", object,
                    e ? e : "unknown dlopen error");
  }
  if (dlinfo(h, RTLD_DI_LINKMAP, &lm) != 0 || lm == NULL)
    return mpx__err(MPX_EPLUGIN, "no link map for '%s'", object);
  *(uintptr_t *)fn = (uintptr_t)lm->l_addr + offset;
  return 0;
}

int mpx__target_spec_of(mpx_target_fn fn, char **spec) {
  Dl_info info;
  struct link_map *lm = NULL;
  size_t n;

  if (dladdr1((void *)(uintptr_t)fn, &info, (void **)&lm, RTLD_DL_LINKMAP) ==
          0 ||
      lm == NULL || lm->l_name == NULL || lm->l_name[0] == '\0' ||
      info.dli_sname == NULL || info.dli_saddr != (void *)(uintptr_t)fn)
    return mpx__err(MPX_EINVAL,
                    "spawn needs a target in a shared object: pass "
                    "target_spec \"path/lib.so:symbol\" (%p is not an "
                    "exported function of a shared object)",
                    (void *)(uintptr_t)fn);
  n = strlen(lm->l_name) + strlen(info.dli_sname) + 2;
  *spec = malloc(n);
  if (*spec == NULL) return MPX_ENOMEM;
  snprintf(*spec, n, "%s:%s", lm->l_name, info.dli_sname);
  return 0;
}
