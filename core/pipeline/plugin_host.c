/* The task plugin loader: loads mpx_task_<name>.so from the plugin search
 * path (base/plugin_path.c, shared with the codec loader), checks its
 * descriptor, and scans the path for `mpx plugins`. A stage's parameters
 * are parsed in plugin_params.c; the context and host services of
 * include/mpx/plugin.h are in plugin_ctx.c. */
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "internal.h"
#include "rd.h"
#include "plugin_host.h"
#include "plugin_params.h"
#include "plugin_path.h"

#define TASK_PREFIX "mpx_task_"
#define CODEC_PREFIX "mpx_codec_"

/* ---- names ----------------------------------------------------------------- */

const char *mpx_plugin_kind_name(mpx_plugin_kind_t kind) {
  switch (kind) {
  case MPX_PLUGIN_SOURCE: return "source";
  case MPX_PLUGIN_MAP: return "map";
  case MPX_PLUGIN_SINK: return "sink";
  case MPX_PLUGIN_REDUCE: return "reduce";
  }
  return "?";
}

const char *mpx_param_type_name(mpx_param_type_t t) {
  switch (t) {
  case MPX_PARAM_INT: return "int";
  case MPX_PARAM_FLOAT: return "float";
  case MPX_PARAM_BOOL: return "bool";
  case MPX_PARAM_STRING: return "string";
  }
  return "?";
}

/* A plugin's name: [a-z0-9_-]+. */
static int plugin_name_ok(const char *s) {
  if (*s == '\0') return 0;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
          *s == '-'))
      return 0;
  return 1;
}

/* A parameter's name: [A-Za-z0-9_-]+ (a YAML key, a --set key). */
static int param_name_ok(const char *s) { return mpx__plugin_name_ok(s); }

/* ---- descriptor check ------------------------------------------------------ */

uint32_t mpx__plugin_flags(const mpx_plugin_t *d) {
  return d->struct_size >= offsetof(mpx_plugin_t, flags) + sizeof d->flags ? d->flags : 0;
}

/* The ABI 1.2 fields: only where the plugin's descriptor has them (an
 * older one is shorter, and what lies past it is not ours to read). */
#define HAS_FIELD(d, f) ((d)->struct_size >= offsetof(mpx_plugin_t, f) + sizeof (d)->f)

bool mpx__plugin_has_fold(const mpx_plugin_t *d) {
  return HAS_FIELD(d, fold) && d->fold != NULL;
}

const char *const *mpx__plugin_ports(const mpx_plugin_t *d, size_t *n) {
  bool has = HAS_FIELD(d, n_ports) && d->ports != NULL && d->n_ports > 0;
  *n = has ? d->n_ports : 0;
  return has ? d->ports : NULL;
}

int (*mpx__plugin_ports_fn(const mpx_plugin_t *d))(mpx_plugin_ctx_t *) {
  return HAS_FIELD(d, ports_fn) ? d->ports_fn : NULL;
}

static bool port_name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!((s[n] >= 'a' && s[n] <= 'z') || (s[n] >= '0' && s[n] <= '9') || s[n] == '_' ||
          s[n] == '-'))
      return false;
  return n >= 1 && n <= 63;
}

/* Ports: names made like a plugin's, unique, at most MPX_PLUGIN_MAX_PORTS;
 * either a table or ports_fn. */
static int check_ports(const mpx_plugin_t *d, const char *where) {
  size_t n;
  const char *const *p = mpx__plugin_ports(d, &n);
  if (HAS_FIELD(d, n_ports) && d->n_ports > 0 && d->ports == NULL)
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' declares %zu ports but no table", where,
                    d->name, d->n_ports);
  if (p && mpx__plugin_ports_fn(d))
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' has both ports and ports_fn", where, d->name);
  if (n > MPX_PLUGIN_MAX_PORTS)
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' declares %zu ports, at most %d", where,
                    d->name, n, MPX_PLUGIN_MAX_PORTS);
  if ((p || mpx__plugin_ports_fn(d)) &&
      (d->kind == MPX_PLUGIN_SINK))
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' is a sink and declares ports (a sink emits "
                    "nothing)", where, d->name);
  for (size_t i = 0; i < n; i++) {
    if (p[i] == NULL || !port_name_ok(p[i]))
      return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': port %zu has a bad name '%s' (a-z, 0-9, "
                      "'_' and '-', at most 63)", where, d->name, i, p[i] ? p[i] : "(null)");
    for (size_t j = 0; j < i; j++)
      if (strcmp(p[i], p[j]) == 0)
        return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': port '%s' is declared twice", where,
                        d->name, p[i]);
  }
  return 0;
}

int mpx__plugin_check(const mpx_plugin_t *d, const char *where) {
  if (where == NULL) where = "plugin";
  if (d == NULL) return mpx__err(MPX_EINVAL, "%s: NULL descriptor", where);
  if (d->magic != MPX_PLUGIN_MAGIC)
    return mpx__err(MPX_EABI, "%s: descriptor has magic 0x%08x, not 0x%08x: "
                    "not an mpx task plugin", where, d->magic,
                    MPX_PLUGIN_MAGIC);
  if (d->abi_major != MPX_PLUGIN_ABI_MAJOR)
    return mpx__err(MPX_EABI, "%s: built for plugin ABI %u.%u, this libmpx "
                    "speaks %u.%u: rebuild it", where, d->abi_major,
                    d->abi_minor, MPX_PLUGIN_ABI_MAJOR, MPX_PLUGIN_ABI_MINOR);
  if (d->struct_size < offsetof(mpx_plugin_t, flags))
    return mpx__err(MPX_EABI, "%s: descriptor is %u bytes, ABI %u.0 needs "
                    "%zu", where, d->struct_size, MPX_PLUGIN_ABI_MAJOR,
                    offsetof(mpx_plugin_t, flags));
  if (d->name == NULL || d->name[0] == '\0')
    return mpx__err(MPX_EPLUGIN, "%s: descriptor has no name", where);
  if (!plugin_name_ok(d->name))
    return mpx__err(MPX_EPLUGIN, "%s: plugin name '%s' is not made of a-z, "
                    "0-9, '_' and '-'", where, d->name);
  const char *kind = mpx_plugin_kind_name(d->kind), *missing = NULL;
  switch (d->kind) {
  case MPX_PLUGIN_SOURCE:
    if (d->generate == NULL) missing = "generate";
    break;
  case MPX_PLUGIN_MAP:
  case MPX_PLUGIN_SINK:
    if (d->process == NULL) missing = "process";
    break;
  case MPX_PLUGIN_REDUCE:
    if (d->process == NULL) missing = "process";
    else if (d->flush == NULL) missing = "flush";
    else if (d->merge == NULL && !mpx__plugin_has_fold(d)) missing = "merge (or fold)";
    break;
  default:
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' has an unknown kind %d",
                    where, d->name, (int)d->kind);
  }
  if (missing != NULL)
    return mpx__err(MPX_EPLUGIN, "%s: %s plugin '%s' has no %s callback",
                    where, kind, d->name, missing);
  int prc = check_ports(d, where);
  if (prc != 0) return prc;
  if (d->n_params > 0 && d->params == NULL)
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' declares %zu parameters "
                    "but no table", where, d->name, d->n_params);
  for (size_t i = 0; i < d->n_params; i++) {
    const mpx_param_def_t *p = &d->params[i];
    char why[256];
    if (p->name == NULL || !param_name_ok(p->name))
      return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': parameter %zu has a bad "
                      "name '%s' (letters, digits, '_' and '-')", where,
                      d->name, i, p->name ? p->name : "(null)");
    if (strcmp(mpx_param_type_name(p->type), "?") == 0)
      return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': parameter '%s' has an "
                      "unknown type %d", where, d->name, p->name,
                      (int)p->type);
    for (size_t j = 0; j < i; j++)
      if (strcmp(d->params[j].name, p->name) == 0)
        return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': parameter '%s' is "
                        "declared twice", where, d->name, p->name);
    if (p->default_value != NULL) {
      pval_t v = {0};
      int rc = mpx__pval_parse(p, p->default_value, &v, why, sizeof why);
      free(v.s);
      if (rc == MPX_ENOMEM) return mpx__err(rc, "%s: checking defaults", where);
      if (rc != 0)
        return mpx__err(MPX_EPLUGIN, "%s: plugin '%s': the default of "
                        "parameter '%s' %s", where, d->name, p->name, why);
    }
  }
  return 0;
}

/* ---- the loader ------------------------------------------------------------ */

struct mpx__plugin_s {
  char *path;
  const mpx_plugin_t *desc;
  struct mpx__plugin_s *next;
};

typedef struct key_s {
  char *key; /* the name or path asked for */
  mpx__plugin_t *plugin;
  struct key_s *next;
} alias_t;

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static mpx__plugin_t *plugins; /* one per descriptor */
static alias_t *keys;

/* The descriptor checks of mpx__plugin_load_file. */
static int check_desc(const void *desc, const char *path,
                      const char **name) {
  const mpx_plugin_t *d = desc;
  int rc = mpx__plugin_check(d, path);
  if (rc == 0) *name = d->name;
  return rc;
}

static int find_and_load(const char *name, char *path, size_t cap,
                         const mpx_plugin_t **out) {
  int rc;
  if (strchr(name, '/')) {
    if (access(name, F_OK) != 0)
      return mpx__err(MPX_ENOENT, "plugin file '%s' does not exist", name);
    snprintf(path, cap, "%s", name);
    return mpx__plugin_load_file("plugin", name, MPX_PLUGIN_SYMBOL, check_desc,
                               NULL, (const void **)out);
  }
  if (!mpx__plugin_name_ok(name))
    return mpx__err(MPX_EINVAL, "'%s' is not a plugin name (letters, digits, "
                    "'_' and '-' only)", name);
  if ((rc = mpx__plugin_find("plugin", TASK_PREFIX, name, path, cap)) != 0)
    return rc;
  return mpx__plugin_load_file("plugin", path, MPX_PLUGIN_SYMBOL, check_desc,
                               name, (const void **)out);
}

int mpx__plugin_load(mpx__plugin_t **out, const char *name) {
  char path[PATH_MAX];
  const mpx_plugin_t *d = NULL;
  mpx__plugin_t *p = NULL;
  int rc = 0;
  if (out == NULL || name == NULL)
    return mpx__err(MPX_EINVAL, "mpx__plugin_load: NULL argument");
  *out = NULL;
  pthread_mutex_lock(&load_lock);
  for (alias_t *k = keys; k; k = k->next)
    if (strcmp(k->key, name) == 0) {
      *out = k->plugin;
      goto done;
    }
  if ((rc = find_and_load(name, path, sizeof path, &d)) != 0) goto done;
  for (p = plugins; p; p = p->next)
    if (p->desc == d) break;
  if (p == NULL) {
    p = calloc(1, sizeof *p);
    if (p == NULL || (p->path = strdup(path)) == NULL) {
      free(p); /* the file stays loaded; a later call finds it again */
      rc = mpx__err(MPX_ENOMEM, "loading plugin '%s'", name);
      goto done;
    }
    p->desc = d;
    p->next = plugins;
    plugins = p;
  }
  *out = p;
  alias_t *k = malloc(sizeof *k);
  char *key = strdup(name);
  if (k && key) {
    k->key = key;
    k->plugin = p;
    k->next = keys;
    keys = k;
  } else {
    free(k);
    free(key); /* not cached: a later load finds it again */
  }
done:
  pthread_mutex_unlock(&load_lock);
  return rc;
}

const mpx_plugin_t *mpx__plugin_desc(const mpx__plugin_t *p) {
  return p ? p->desc : NULL;
}

const char *mpx__plugin_path(const mpx__plugin_t *p) {
  return p ? p->path : NULL;
}

/* ---- scanning the search path ---------------------------------------------- */

typedef struct {
  int cat;      /* 0 task, 1 codec */
  char *name;   /* between the prefix and ".so" */
  char *path;
  size_t order; /* of its directory in the search path */
} scan_entry_t;

static int scan_cmp(const void *a, const void *b) {
  const scan_entry_t *x = a, *y = b;
  int c;
  if (x->cat != y->cat) return x->cat - y->cat;
  if ((c = strcmp(x->name, y->name)) != 0) return c;
  return x->order < y->order ? -1 : x->order > y->order;
}

static int scan_add(scan_entry_t **v, size_t *n, size_t *cap, int cat,
                    const char *name, size_t len, const char *dir,
                    size_t order) {
  if (*n == *cap) {
    size_t nc = *cap ? *cap * 2 : 32;
    scan_entry_t *nv = realloc(*v, nc * sizeof *nv);
    if (nv == NULL) return MPX_ENOMEM;
    *v = nv;
    *cap = nc;
  }
  scan_entry_t *e = &(*v)[*n];
  e->cat = cat;
  e->order = order;
  e->name = strndup(name, len);
  if (e->name == NULL || asprintf(&e->path, "%s/%s%s.so", dir,
                                  cat ? CODEC_PREFIX : TASK_PREFIX,
                                  e->name) < 0) {
    free(e->name);
    return MPX_ENOMEM;
  }
  (*n)++;
  return 0;
}

static void scan_report(const scan_entry_t *e, mpx__scan_fn cb, void *arg) {
  char err[600];
  if (e->cat == 0) {
    mpx__plugin_t *p;
    if (mpx__plugin_load(&p, e->path) != 0) {
      snprintf(err, sizeof err, "%s", mpx_last_error());
      cb(arg, "task", e->name, e->path, NULL, err);
      return;
    }
    const mpx_plugin_t *d = mpx__plugin_desc(p);
    if (strcmp(d->name, e->name) != 0) {
      mpx__err(MPX_EPLUGIN, "'%s' is plugin '%s', not '%s'", e->path, d->name,
               e->name);
      cb(arg, mpx_plugin_kind_name(d->kind), e->name, e->path, NULL,
         mpx_last_error());
      return;
    }
    cb(arg, mpx_plugin_kind_name(d->kind), e->name, e->path,
       d->description ? d->description : "", NULL);
  } else {
    const mpx_codec_t *c;
    if (mpx_codec_load(&c, e->path) != 0) {
      snprintf(err, sizeof err, "%s", mpx_last_error());
      cb(arg, "codec", e->name, e->path, NULL, err);
      return;
    }
    if (strcmp(c->name, e->name) != 0) {
      mpx__err(MPX_EPLUGIN, "'%s' is codec '%s', not '%s'", e->path, c->name,
               e->name);
      cb(arg, "codec", e->name, e->path, NULL, mpx_last_error());
      return;
    }
    cb(arg, "codec", e->name, e->path, c->description ? c->description : "",
       NULL);
  }
}

int mpx__plugin_scan(unsigned what, mpx__scan_fn cb, void *arg) {
  char dirs[4096];
  scan_entry_t *v = NULL;
  size_t n = 0, cap = 0, order = 0;
  int rc = 0;
  if (cb == NULL) return mpx__err(MPX_EINVAL, "mpx__plugin_scan: NULL cb");
  mpx__plugin_dirs(dirs, sizeof dirs);
  for (char *d = dirs, *nl; *d && rc == 0; d = nl + 1, order++) {
    nl = strchr(d, '\n');
    *nl = '\0';
    DIR *dir = opendir(d);
    struct dirent *de;
    while (dir && rc == 0 && (de = readdir(dir)) != NULL) {
      size_t len = strlen(de->d_name);
      for (int cat = 0; cat < 2; cat++) {
        const char *pre = cat ? CODEC_PREFIX : TASK_PREFIX;
        size_t pl = strlen(pre);
        if (!(what & (cat ? MPX__SCAN_CODECS : MPX__SCAN_TASKS))) continue;
        if (len <= pl + 3 || strncmp(de->d_name, pre, pl) != 0 ||
            strcmp(de->d_name + len - 3, ".so") != 0)
          continue;
        rc = scan_add(&v, &n, &cap, cat, de->d_name + pl, len - pl - 3, d,
                      order);
      }
    }
    if (dir) closedir(dir);
  }
  if (rc != 0) {
    rc = mpx__err(rc, "listing plugins");
    goto out;
  }
  if (n) qsort(v, n, sizeof *v, scan_cmp);
  for (size_t i = 0; i < n; i++) {
    size_t first = i;
    while (first > 0 && v[first - 1].cat == v[i].cat &&
           strcmp(v[first - 1].name, v[i].name) == 0)
      first--;
    if (first == i) {
      scan_report(&v[i], cb, arg);
      continue;
    }
    /* The same file reached through another spelling of a directory is
     * not a second plugin. */
    char a[PATH_MAX], b[PATH_MAX], msg[PATH_MAX + 32];
    if (realpath(v[first].path, a) && realpath(v[i].path, b) &&
        strcmp(a, b) == 0)
      continue;
    snprintf(msg, sizeof msg, "shadowed by %s", v[first].path);
    cb(arg, v[i].cat ? "codec" : "task", v[i].name, v[i].path, NULL, msg);
  }
out:
  for (size_t i = 0; i < n; i++) {
    free(v[i].name);
    free(v[i].path);
  }
  free(v);
  return rc;
}
