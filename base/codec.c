/* The codec loader: finds mpx_codec_<name>.so on the plugin search path,
 * checks its descriptor, and keeps it loaded for the life of the process
 * (descriptors are handed out as plain pointers, so they must never be
 * unloaded); the search path itself is base/plugin_path.c, shared with
 * the task plugin loader. Also the encode/decode wrappers that turn a
 * codec's error record into mpx_last_error(). */
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
#include "plugin_path.h"

#define FILE_PREFIX "mpx_codec_"

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

/* The descriptor checks of mpx__plugin_load_file. */
static int check_desc(const void *desc, const char *path,
                      const char **name) {
  const mpx_codec_t *c = desc;
  int rc = mpx_codec_check(c, path);
  if (rc == 0) *name = c->name;
  return rc;
}

static int find_and_load(const char *name, const mpx_codec_t **out) {
  char path[PATH_MAX];
  int rc;
  if (strchr(name, '/')) {
    if (access(name, F_OK) != 0)
      return mpx__err(MPX_ENOENT, "codec file '%s' does not exist", name);
    return mpx__plugin_load_file("codec", name, MPX_CODEC_SYMBOL, check_desc,
                               NULL, (const void **)out);
  }
  if (!mpx__plugin_name_ok(name))
    return mpx__err(MPX_EINVAL, "'%s' is not a codec name (letters, digits, "
                    "'_' and '-' only)", name);
  if ((rc = mpx__plugin_find("codec", FILE_PREFIX, name, path, sizeof path)))
    return rc;
  return mpx__plugin_load_file("codec", path, MPX_CODEC_SYMBOL, check_desc,
                               name, (const void **)out);
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
