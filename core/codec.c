/* The codec loader: finds mpx_codec_<name>.so on the plugin search path,
 * checks its descriptor, and keeps it loaded for the life of the process
 * (descriptors are handed out as plain pointers, so they must never be
 * unloaded). Also the encode/decode wrappers that turn a codec's error
 * record into mpx_last_error(). */
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "mpx/codec.h"

#define FILE_PREFIX "mpx_codec_"
#define FILE_SUFFIX ".so"

typedef struct loaded_s {
  char *key; /* the name or path asked for */
  const mpx_codec_t *codec;
  struct loaded_s *next;
} loaded_t;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static loaded_t *loaded;

int mpx_codec_check(const mpx_codec_t *c, const char *where) {
  if (where == NULL) where = "codec";
  if (c == NULL) return mpx__err(MPX_EINVAL, "%s: NULL descriptor", where);
  if (c->magic != MPX_CODEC_MAGIC)
    return mpx__err(MPX_EABI, "%s: descriptor has magic 0x%08x, not 0x%08x: "
                    "not an mpx codec", where, c->magic, MPX_CODEC_MAGIC);
  if (c->abi_major != MPX_CODEC_ABI_MAJOR)
    return mpx__err(MPX_EABI, "%s: built for codec ABI %u.%u, this libmpx "
                    "speaks %u.%u: rebuild it", where, c->abi_major,
                    c->abi_minor, MPX_CODEC_ABI_MAJOR, MPX_CODEC_ABI_MINOR);
  if (c->struct_size < sizeof(mpx_codec_t))
    return mpx__err(MPX_EABI, "%s: descriptor is %u bytes, ABI %u.%u needs "
                    "%zu", where, c->struct_size, MPX_CODEC_ABI_MAJOR,
                    MPX_CODEC_ABI_MINOR, sizeof(mpx_codec_t));
  if (c->name == NULL || c->name[0] == '\0')
    return mpx__err(MPX_EPLUGIN, "%s: descriptor has no name", where);
  if (c->encode == NULL)
    return mpx__err(MPX_EPLUGIN, "%s: codec '%s' has no encode callback",
                    where, c->name);
  if (c->decode == NULL)
    return mpx__err(MPX_EPLUGIN, "%s: codec '%s' has no decode callback",
                    where, c->name);
  return 0;
}

/* Loads and checks one file. 0, or an error naming it. */
static int load_file(const char *path, const char *want,
                     const mpx_codec_t **out) {
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  int rc;
  if (h == NULL)
    return mpx__err(MPX_EPLUGIN, "cannot load codec '%s': %s", path,
                    dlerror());
  const mpx_codec_t *c = dlsym(h, MPX_CODEC_SYMBOL);
  if (c == NULL) {
    dlclose(h);
    return mpx__err(MPX_ENOSYM, "'%s' exports no %s: not an mpx codec", path,
                    MPX_CODEC_SYMBOL);
  }
  if ((rc = mpx_codec_check(c, path)) != 0) {
    dlclose(h);
    return rc;
  }
  if (want != NULL && strcmp(c->name, want) != 0) {
    rc = mpx__err(MPX_EPLUGIN, "'%s' is codec '%s', not '%s'", path, c->name,
                  want);
    dlclose(h);
    return rc;
  }
  *out = c; /* the handle is never closed: the descriptor must stay valid */
  return 0;
}

static int valid_name(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
          (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return 0;
  return 1;
}

/* Appends dir to the list of directories to search (a '\n'-separated
 * buffer, for the error message too). */
static void add_dir(char *dirs, size_t cap, const char *dir, size_t n) {
  size_t len = strlen(dirs);
  if (n == 0 || len + n + 2 > cap) return;
  memcpy(dirs + len, dir, n);
  dirs[len + n] = '\n';
  dirs[len + n + 1] = '\0';
}

static void search_dirs(char *dirs, size_t cap) {
  const char *env = getenv("MPX_PLUGIN_PATH");
  Dl_info info;
  dirs[0] = '\0';
  while (env && *env) {
    const char *colon = strchr(env, ':');
    size_t n = colon ? (size_t)(colon - env) : strlen(env);
    add_dir(dirs, cap, env, n);
    env = colon ? colon + 1 : NULL;
  }
  /* Next to the libmpx in use: <dir>/plugins in a build tree,
   * <libdir>/mpx/plugins in an install. */
  if (dladdr((void *)mpx_codec_load, &info) && info.dli_fname) {
    const char *slash = strrchr(info.dli_fname, '/');
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
}

static int find_and_load(const char *name, const mpx_codec_t **out) {
  char dirs[4096], path[PATH_MAX];
  if (strchr(name, '/')) {
    if (access(name, F_OK) != 0)
      return mpx__err(MPX_ENOENT, "codec file '%s' does not exist", name);
    return load_file(name, NULL, out);
  }
  if (!valid_name(name))
    return mpx__err(MPX_EINVAL, "'%s' is not a codec name (letters, digits, "
                    "'_' and '-' only)", name);
  search_dirs(dirs, sizeof dirs);
  for (char *d = dirs, *nl; *d; d = nl + 1) {
    nl = strchr(d, '\n');
    *nl = '\0';
    int n = snprintf(path, sizeof path, "%s/" FILE_PREFIX "%s" FILE_SUFFIX,
                     d, name);
    if (n > 0 && (size_t)n < sizeof path && access(path, F_OK) == 0)
      return load_file(path, name, out);
    *nl = ':';
  }
  size_t n = strlen(dirs);
  if (n) dirs[n - 1] = '\0';
  return mpx__err(MPX_ENOENT, "no codec '%s': no " FILE_PREFIX "%s" FILE_SUFFIX
                  " in %s (set MPX_PLUGIN_PATH to add directories)", name,
                  name, n ? dirs : "(no directories)");
}

int mpx_codec_load(const mpx_codec_t **out, const char *name) {
  int rc = 0;
  if (out == NULL || name == NULL)
    return mpx__err(MPX_EINVAL, "mpx_codec_load: NULL argument");
  *out = NULL;
  pthread_mutex_lock(&load_lock);
  for (loaded_t *l = loaded; l; l = l->next)
    if (strcmp(l->key, name) == 0) {
      *out = l->codec;
      goto done;
    }
  if ((rc = find_and_load(name, out)) == 0) {
    loaded_t *l = malloc(sizeof *l);
    char *key = strdup(name);
    if (l && key) {
      l->key = key;
      l->codec = *out;
      l->next = loaded;
      loaded = l;
    } else {
      free(l);
      free(key); /* not cached: a later load finds it again */
    }
  }
done:
  pthread_mutex_unlock(&load_lock);
  return rc;
}

mpx_decode_opts_t mpx_decode_limits(const mpx_decode_opts_t *opts) {
  mpx_decode_opts_t o = {0};
  if (opts != NULL) o = *opts;
  if (o.max_depth == 0) o.max_depth = 200;
  if (o.max_items == 0) o.max_items = (size_t)1 << 24;
  if (o.max_bytes == 0) o.max_bytes = (size_t)1 << 30;
  return o;
}

int mpx_codec_fail(mpx_codec_error_t *err, size_t offset, const char *fmt,
                   ...) {
  va_list ap;
  if (err != NULL) {
    err->offset = offset;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
  }
  return MPX_ECODEC;
}

/* Turns a codec's error record into mpx_last_error(). */
static int report(const mpx_codec_t *c, int rc, const mpx_codec_error_t *e,
                  const char *what) {
  const char *msg = e->msg[0] ? e->msg : mpx_strerror(rc);
  if (e->offset != SIZE_MAX)
    return mpx__err(rc, "%s %s: byte %zu: %s", c->name, what, e->offset, msg);
  return mpx__err(rc, "%s %s: %s", c->name, what, msg);
}

int mpx_codec_encode(const mpx_codec_t *c, const mpx_obj_t *obj,
                     mpx_wbuf_t *out, const mpx_encode_opts_t *opts) {
  static const mpx_encode_opts_t none;
  mpx_codec_error_t e = {SIZE_MAX, ""};
  if (c == NULL || obj == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "mpx_codec_encode: NULL argument");
  int rc = c->encode(obj, out, opts ? opts : &none, &e);
  return rc == 0 ? 0 : report(c, rc, &e, "encode");
}

int mpx_codec_decode(const mpx_codec_t *c, const void *data, size_t len,
                     const mpx_decode_opts_t *opts, mpx_obj_t **out) {
  static const mpx_decode_opts_t none;
  mpx_codec_error_t e = {SIZE_MAX, ""};
  if (c == NULL || out == NULL || (data == NULL && len > 0))
    return mpx__err(MPX_EINVAL, "mpx_codec_decode: NULL argument");
  *out = NULL;
  int rc = c->decode(data, len, opts ? opts : &none, out, &e);
  if (rc != 0 && *out != NULL) {
    mpx_obj_release(*out); /* a codec that fails owns nothing it made */
    *out = NULL;
  }
  return rc == 0 ? 0 : report(c, rc, &e, "decode");
}
