/* The task plugin host: loads mpx_task_<name>.so from the plugin search
 * path (base/plugin_path.c, shared with the codec loader), checks its
 * descriptor, validates and types a stage's parameters, and implements
 * the host services of include/mpx/plugin.h on a context that forwards
 * emits to whoever runs the instance (the engine, or a test). */
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
#include "plugin_path.h"

#define TASK_PREFIX "mpx_task_"
#define CODEC_PREFIX "mpx_codec_"
#define PARAMS_MAGIC "MXPP"

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

/* ---- parameter values ------------------------------------------------------ */

typedef struct {
  bool set;
  int64_t i;
  double f;
  bool b;
  char *s; /* malloc'd, for strings */
} pval_t;

/* 0, or -1 (not an integer), -2 (out of int64 range). */
static int parse_int(const char *s, int64_t *v) {
  const char *p = s;
  bool neg = false;
  int base = 10;
  char *end;
  unsigned long long m;
  if (*p == '+' || *p == '-') neg = *p++ == '-';
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  }
  if (base == 10 ? !isdigit((unsigned char)*p) : !isxdigit((unsigned char)*p))
    return -1;
  errno = 0;
  m = strtoull(p, &end, base);
  if (*end != '\0') return -1;
  if (errno == ERANGE) return -2;
  if (neg) {
    if (m > (unsigned long long)INT64_MAX + 1) return -2;
    *v = m == (unsigned long long)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
  } else {
    if (m > (unsigned long long)INT64_MAX) return -2;
    *v = (int64_t)m;
  }
  return 0;
}

static int parse_float(const char *s, double *v) {
  const char *p = s;
  char *end;
  int sign = 1;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  if (strcasecmp(p, ".inf") == 0) {
    *v = sign * INFINITY;
    return 0;
  }
  if (strcasecmp(p, ".nan") == 0 && p == s) {
    *v = NAN;
    return 0;
  }
  if (*s == '\0' || isspace((unsigned char)*s)) return -1;
  errno = 0;
  *v = strtod(s, &end);
  if (*end != '\0') return -1;
  if (errno == ERANGE && isinf(*v)) return -2;
  return 0;
}

static int parse_bool(const char *s, bool *v) {
  static const char *yes[] = {"true", "yes", "on", "1"};
  static const char *no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < MPX__ARRAY_SIZE(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0) return *v = true, 0;
    if (strcasecmp(s, no[i]) == 0) return *v = false, 0;
  }
  return -1;
}

/* Parses text as p's type into v (a string is copied). 0, or -1 with why
 * ("must be an integer, got 'ten'") filled; MPX_ENOMEM. */
static int parse_value(const mpx_param_def_t *p, const char *text, pval_t *v,
                       char *why, size_t n) {
  int rc = 0;
  switch (p->type) {
  case MPX_PARAM_INT:
    rc = parse_int(text, &v->i);
    if (rc == -1) snprintf(why, n, "must be an integer, got '%s'", text);
    if (rc == -2)
      snprintf(why, n, "must be an integer in the int64 range, got '%s'",
               text);
    break;
  case MPX_PARAM_FLOAT:
    rc = parse_float(text, &v->f);
    if (rc == -1) snprintf(why, n, "must be a number, got '%s'", text);
    if (rc == -2) snprintf(why, n, "is out of range for a double: '%s'", text);
    break;
  case MPX_PARAM_BOOL:
    rc = parse_bool(text, &v->b);
    if (rc != 0) snprintf(why, n, "must be true or false, got '%s'", text);
    break;
  case MPX_PARAM_STRING: {
    char *s = strdup(text);
    if (s == NULL) return MPX_ENOMEM;
    free(v->s);
    v->s = s;
    break;
  }
  default:
    snprintf(why, n, "has an unknown type %d", (int)p->type);
    rc = -1;
  }
  if (rc != 0) return -1;
  v->set = true;
  return 0;
}

static void pvals_free(pval_t *vals, size_t n) {
  if (vals == NULL) return;
  for (size_t i = 0; i < n; i++) free(vals[i].s);
  free(vals);
}

/* ---- descriptor check ------------------------------------------------------ */

uint32_t mpx__plugin_flags(const mpx_plugin_t *d) {
  return d->struct_size >= offsetof(mpx_plugin_t, flags) + sizeof d->flags ? d->flags : 0;
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
    else if (d->merge == NULL) missing = "merge";
    break;
  default:
    return mpx__err(MPX_EPLUGIN, "%s: plugin '%s' has an unknown kind %d",
                    where, d->name, (int)d->kind);
  }
  if (missing != NULL)
    return mpx__err(MPX_EPLUGIN, "%s: %s plugin '%s' has no %s callback",
                    where, kind, d->name, missing);
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
      int rc = parse_value(p, p->default_value, &v, why, sizeof why);
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

/* ---- parameter validation -------------------------------------------------- */

static const char *pname(const mpx_plugin_t *d) {
  return d && d->name ? d->name : "?";
}

static int find_param(const mpx_plugin_t *d, const char *name) {
  for (size_t i = 0; i < d->n_params; i++)
    if (strcmp(d->params[i].name, name) == 0) return (int)i;
  return -1;
}

static int unknown_param(const mpx_plugin_t *d, const char *key) {
  char known[1024];
  size_t len = 0;
  known[0] = '\0';
  if (d->n_params == 0)
    return mpx__err(MPX_ECONFIG, "plugin '%s': unknown parameter '%s' (it "
                    "takes no parameters)", pname(d), key);
  for (size_t i = 0; i < d->n_params && len < sizeof known; i++) {
    int n = snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                     d->params[i].name);
    if (n < 0) break;
    len += (size_t)n;
  }
  return mpx__err(MPX_ECONFIG, "plugin '%s': unknown parameter '%s' (known: "
                  "%s)", pname(d), key, known);
}

/* Fills vals (d->n_params, zeroed) from kv and the defaults. */
static int fill_params(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                       size_t *bad, pval_t *vals) {
  char why[256];
  size_t dummy;
  int rc;
  if (bad == NULL) bad = &dummy;
  *bad = SIZE_MAX;
  if (nkv > 0 && kv == NULL)
    return mpx__err(MPX_EINVAL, "plugin '%s': NULL parameter list", pname(d));
  for (size_t j = 0; j < nkv; j++) {
    if (kv[j].key == NULL) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter %zu has no name",
                      pname(d), j);
    }
    int i = find_param(d, kv[j].key);
    if (i < 0) {
      *bad = j;
      return unknown_param(d, kv[j].key);
    }
    if (kv[j].value == NULL) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter '%s' has no value",
                      pname(d), kv[j].key);
    }
    rc = parse_value(&d->params[i], kv[j].value, &vals[i], why, sizeof why);
    if (rc == MPX_ENOMEM) return mpx__err(rc, "plugin '%s'", pname(d));
    if (rc != 0) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter '%s' %s", pname(d),
                      kv[j].key, why);
    }
  }
  for (size_t i = 0; i < d->n_params; i++) {
    const mpx_param_def_t *p = &d->params[i];
    if (vals[i].set) continue;
    if (p->default_value != NULL) {
      rc = parse_value(p, p->default_value, &vals[i], why, sizeof why);
      if (rc == MPX_ENOMEM) return mpx__err(rc, "plugin '%s'", pname(d));
      if (rc != 0) /* mpx__plugin_check refuses these */
        return mpx__err(MPX_EPLUGIN, "plugin '%s': the default of parameter "
                        "'%s' %s", pname(d), p->name, why);
    } else if (p->required) {
      return mpx__err(MPX_ECONFIG, "plugin '%s': missing required parameter "
                      "'%s'", pname(d), p->name);
    }
  }
  return 0;
}

int mpx__params_check(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                      size_t *bad) {
  int rc;
  if (bad) *bad = SIZE_MAX;
  if ((rc = mpx__plugin_check(d, d && d->name ? d->name : "plugin")) != 0)
    return rc;
  pval_t *vals = calloc(d->n_params ? d->n_params : 1, sizeof *vals);
  if (vals == NULL) return mpx__err(MPX_ENOMEM, "plugin '%s'", pname(d));
  rc = fill_params(d, kv, nkv, bad, vals);
  pvals_free(vals, d->n_params);
  return rc;
}

/* ---- the context ----------------------------------------------------------- */

struct mpx_plugin_ctx_s {
  const mpx_plugin_t *d;
  char *stage;
  pval_t *vals; /* d->n_params */
  unsigned index, count;
  const mpx_codec_t *codec;
  mpx__emit_fn emit;
  void *emit_arg;
  atomic_int cancelled;
  bool final;
  bool permanent;  /* the last process failed with mpx_plugin_fail_permanent */
  bool reserving;  /* between mpx_emit_reserve and mpx_emit_commit */
  bool hooked;     /* ... and the room came from the reserve hooks */
  size_t reserved; /* the len reserved */
  mpx__reserve_hooks_t hooks;
  uint8_t *scratch;
  size_t scratch_cap;
  mpx_wbuf_t obj; /* mpx_emit_obj's encoding */
  char err[1024];
};

int mpx__ctx_new(mpx_plugin_ctx_t **out, const mpx_plugin_t *d,
                 const char *stage, const mpx__kv_t *kv, size_t nkv,
                 size_t *bad, unsigned index, unsigned count,
                 const mpx_codec_t *codec, mpx__emit_fn emit,
                 void *emit_arg) {
  mpx_plugin_ctx_t *c;
  int rc;
  if (bad) *bad = SIZE_MAX;
  if (out == NULL) return mpx__err(MPX_EINVAL, "mpx__ctx_new: NULL out");
  *out = NULL;
  if (count == 0 || index >= count)
    return mpx__err(MPX_EINVAL, "mpx__ctx_new: worker %u of %u", index,
                    count);
  if ((rc = mpx__plugin_check(d, stage ? stage : d && d->name ? d->name
                                                               : "plugin")))
    return rc;
  if ((c = calloc(1, sizeof *c)) == NULL)
    return mpx__err(MPX_ENOMEM, "plugin '%s': context", d->name);
  c->d = d;
  c->index = index;
  c->count = count;
  c->codec = codec;
  c->emit = emit;
  c->emit_arg = emit_arg;
  atomic_init(&c->cancelled, 0);
  mpx_wbuf_init(&c->obj);
  c->stage = strdup(stage ? stage : d->name);
  c->vals = calloc(d->n_params ? d->n_params : 1, sizeof *c->vals);
  if (c->stage == NULL || c->vals == NULL) {
    rc = mpx__err(MPX_ENOMEM, "plugin '%s': context", d->name);
    goto fail;
  }
  if ((rc = fill_params(d, kv, nkv, bad, c->vals)) != 0) goto fail;
  *out = c;
  return 0;
fail:
  mpx__ctx_free(c);
  return rc;
}

void mpx__ctx_free(mpx_plugin_ctx_t *c) {
  if (c == NULL) return;
  pvals_free(c->vals, c->d->n_params);
  free(c->stage);
  free(c->scratch);
  mpx_wbuf_free(&c->obj);
  free(c);
}

/* Host byte order, as base/rd.h reads it back: the parameters go to a
 * worker on the same machine. */
static int put_u32(mpx_wbuf_t *b, uint32_t v) {
  return mpx_wbuf_append(b, &v, sizeof v);
}

static int put_str(mpx_wbuf_t *b, const char *s) {
  size_t n = strlen(s);
  int rc;
  if (n > UINT32_MAX) return mpx__err(MPX_EINVAL, "parameter too long");
  if ((rc = put_u32(b, (uint32_t)n)) != 0) return rc;
  return mpx_wbuf_append(b, s, n);
}

/* The canonical text of a value: it parses back to the same value. */
static const char *value_text(const mpx_param_def_t *p, const pval_t *v,
                              char *buf, size_t n) {
  switch (p->type) {
  case MPX_PARAM_INT:
    snprintf(buf, n, "%" PRId64, v->i);
    return buf;
  case MPX_PARAM_FLOAT:
    if (isnan(v->f)) return ".nan";
    if (isinf(v->f)) return v->f > 0 ? ".inf" : "-.inf";
    snprintf(buf, n, "%.17g", v->f);
    return buf;
  case MPX_PARAM_BOOL:
    return v->b ? "true" : "false";
  default:
    return v->s ? v->s : "";
  }
}

int mpx__ctx_params_encode(const mpx_plugin_ctx_t *c, mpx_wbuf_t *out) {
  uint32_t n = 0;
  char buf[64];
  int rc;
  if (c == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "mpx__ctx_params_encode: NULL argument");
  for (size_t i = 0; i < c->d->n_params; i++) n += c->vals[i].set;
  if ((rc = mpx_wbuf_append(out, PARAMS_MAGIC, 4)) != 0 ||
      (rc = put_str(out, c->d->name)) != 0 || (rc = put_u32(out, n)) != 0)
    return rc;
  for (size_t i = 0; i < c->d->n_params; i++) {
    const mpx_param_def_t *p = &c->d->params[i];
    if (!c->vals[i].set) continue;
    if ((rc = put_str(out, p->name)) != 0 ||
        (rc = put_str(out, value_text(p, &c->vals[i], buf, sizeof buf))) != 0)
      return rc;
  }
  return 0;
}

/* A malloc'd, NUL-terminated copy of the next string; NULL when malformed
 * (or out of memory: *nomem). */
static char *get_str(mpx__rd_t *r, int *nomem) {
  const void *p;
  uint32_t n;
  char *s;
  if (mpx__rd_bytes32(r, &p, &n) != 0 || memchr(p, '\0', n) != NULL)
    return NULL;
  if ((s = strndup(p, n)) == NULL) *nomem = 1;
  return s;
}

int mpx__ctx_new_from_encoded(mpx_plugin_ctx_t **out, const mpx_plugin_t *d,
                              const char *stage, const void *enc, size_t len,
                              unsigned index, unsigned count,
                              const mpx_codec_t *codec, mpx__emit_fn emit,
                              void *emit_arg) {
  mpx__rd_t r = mpx__rd_make(enc, len);
  mpx__kv_t *kv = NULL;
  uint32_t n = 0, got = 0;
  char *name = NULL;
  int rc, nomem = 0;
  if (out) *out = NULL;
  if (d == NULL || (enc == NULL && len > 0))
    return mpx__err(MPX_EINVAL, "mpx__ctx_new_from_encoded: NULL argument");
  if (len < 4 || memcmp(enc, PARAMS_MAGIC, 4) != 0) goto malformed;
  r.p += 4;
  if ((name = get_str(&r, &nomem)) == NULL || mpx__rd_u32(&r, &n) != 0)
    goto malformed;
  if (d->name == NULL || strcmp(name, d->name) != 0) {
    rc = mpx__err(MPX_EINVAL, "parameters were encoded for plugin '%s', not "
                  "'%s'", name, pname(d));
    goto out;
  }
  if (n > (size_t)(r.end - r.p) / 8) goto malformed;
  if ((kv = calloc(n ? n : 1, sizeof *kv)) == NULL) {
    nomem = 1;
    goto malformed;
  }
  for (got = 0; got < n; got++) {
    if ((kv[got].key = get_str(&r, &nomem)) == NULL) goto malformed;
    if ((kv[got].value = get_str(&r, &nomem)) == NULL) {
      free((char *)kv[got].key);
      goto malformed;
    }
  }
  if (r.p != r.end) goto malformed;
  rc = mpx__ctx_new(out, d, stage, kv, n, NULL, index, count, codec, emit,
                    emit_arg);
  goto out;
malformed:
  rc = nomem ? mpx__err(MPX_ENOMEM, "decoding parameters")
             : mpx__err(MPX_EINVAL, "plugin '%s': malformed encoded "
                        "parameters", pname(d));
out:
  for (uint32_t i = 0; kv && i < got; i++) {
    free((char *)kv[i].key);
    free((char *)kv[i].value);
  }
  free(kv);
  free(name);
  return rc;
}

int mpx__ctx_copy(mpx_plugin_ctx_t **out, const mpx_plugin_ctx_t *c,
                  unsigned index, unsigned count, mpx__emit_fn emit,
                  void *emit_arg) {
  mpx_wbuf_t enc;
  mpx_wbuf_init(&enc);
  int rc = mpx__ctx_params_encode(c, &enc);
  if (rc == 0)
    rc = mpx__ctx_new_from_encoded(out, c->d, c->stage, enc.data, enc.len,
                                   index, count, c->codec, emit, emit_arg);
  mpx_wbuf_free(&enc);
  return rc;
}

const mpx_plugin_t *mpx__ctx_desc(const mpx_plugin_ctx_t *c) { return c->d; }

const char *mpx__ctx_stage(const mpx_plugin_ctx_t *c) { return c->stage; }

void mpx__ctx_set_emit(mpx_plugin_ctx_t *c, mpx__emit_fn emit,
                       void *emit_arg) {
  c->emit = emit;
  c->emit_arg = emit_arg;
}

void mpx__ctx_set_reserve(mpx_plugin_ctx_t *c, const mpx__reserve_hooks_t *h) {
  if (h) c->hooks = *h;
  else memset(&c->hooks, 0, sizeof c->hooks);
}

void mpx__ctx_set_final(mpx_plugin_ctx_t *c, bool final) { c->final = final; }

void mpx__ctx_cancel(mpx_plugin_ctx_t *c) {
  atomic_store_explicit(&c->cancelled, 1, memory_order_relaxed);
}

const char *mpx__ctx_error(const mpx_plugin_ctx_t *c) { return c->err; }

void mpx__ctx_clear_error(mpx_plugin_ctx_t *c) { c->err[0] = '\0'; }

/* Records msg as the context's error unless the plugin already said why. */
static int ctx_fail(mpx_plugin_ctx_t *c, int rc, const char *fmt, ...)
    MPX_PRINTF(3, 4);
static int ctx_fail(mpx_plugin_ctx_t *c, int rc, const char *fmt, ...) {
  va_list ap;
  if (c->err[0] == '\0') {
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
  }
  return mpx__err(rc, "%s", c->err);
}

/* ---- host services (plugin.h) ---------------------------------------------- */

int mpx_emit(mpx_plugin_ctx_t *c, const void *data, size_t len) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit: NULL context");
  if (data == NULL && len > 0)
    return ctx_fail(c, MPX_EINVAL, "mpx_emit: NULL data");
  if (c->d->kind == MPX_PLUGIN_SINK)
    return ctx_fail(c, MPX_ESTATE, "mpx_emit from a sink (sinks emit "
                    "nothing)");
  if (c->reserving)
    return ctx_fail(c, MPX_ESTATE, "mpx_emit while an mpx_emit_reserve is "
                    "not committed");
  if (c->emit == NULL)
    return ctx_fail(c, MPX_ESTATE, "mpx_emit: this stage takes no outputs");
  return c->emit(c->emit_arg, data, len);
}

int mpx_emit_obj(mpx_plugin_ctx_t *c, const mpx_obj_t *obj) {
  int rc;
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit_obj: NULL context");
  if (obj == NULL) return ctx_fail(c, MPX_EINVAL, "mpx_emit_obj: NULL object");
  if (c->codec == NULL)
    return ctx_fail(c, MPX_ESTATE, "mpx_emit_obj: the stage has no codec");
  mpx_wbuf_reset(&c->obj);
  if ((rc = mpx_codec_encode(c->codec, obj, &c->obj, NULL)) != 0)
    return ctx_fail(c, rc, "%s", mpx_last_error());
  return mpx_emit(c, c->obj.data, c->obj.len);
}

void *mpx_emit_reserve(mpx_plugin_ctx_t *c, size_t len) {
  if (c == NULL || c->reserving || c->emit == NULL ||
      c->d->kind == MPX_PLUGIN_SINK)
    return NULL;
  void *room = c->hooks.reserve ? c->hooks.reserve(c->hooks.arg, len) : NULL;
  if (room) {
    c->reserving = c->hooked = true;
    c->reserved = len;
    return room;
  }
  if (len > c->scratch_cap || c->scratch == NULL) {
    size_t cap = len ? len : 1;
    uint8_t *p = realloc(c->scratch, cap);
    if (p == NULL) return NULL;
    c->scratch = p;
    c->scratch_cap = cap;
  }
  c->reserving = true;
  c->reserved = len;
  return c->scratch;
}

/* A reservation from the hooks that will not be committed goes back. */
static void reserve_cancel(mpx_plugin_ctx_t *c) {
  if (c->hooked) c->hooks.cancel(c->hooks.arg);
  c->hooked = false;
}

int mpx_emit_commit(mpx_plugin_ctx_t *c, size_t used) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit_commit: NULL context");
  if (!c->reserving)
    return ctx_fail(c, MPX_ESTATE, "mpx_emit_commit without "
                    "mpx_emit_reserve");
  c->reserving = false;
  if (used > c->reserved) {
    reserve_cancel(c);
    return ctx_fail(c, MPX_EINVAL, "mpx_emit_commit of %zu bytes, only %zu "
                    "reserved", used, c->reserved);
  }
  if (c->hooked) {
    c->hooked = false;
    return c->hooks.commit(c->hooks.arg, used);
  }
  return c->emit(c->emit_arg, c->scratch, used);
}

/* The slot of a parameter asked for by a plugin, or NULL (logged). */
static const pval_t *param_slot(mpx_plugin_ctx_t *c, const char *name,
                                mpx_param_type_t type, const char *fn) {
  int i;
  if (c == NULL || name == NULL) return NULL;
  if ((i = find_param(c->d, name)) < 0) {
    MPX__ERROR("plugin '%s': %s('%s'): the plugin declares no such "
               "parameter", c->d->name, fn, name);
    return NULL;
  }
  if (type != 0 && c->d->params[i].type != type) {
    MPX__ERROR("plugin '%s': %s('%s'): the parameter is a %s", c->d->name, fn,
               name, mpx_param_type_name(c->d->params[i].type));
    return NULL;
  }
  return &c->vals[i];
}

int64_t mpx_param_int(mpx_plugin_ctx_t *c, const char *name) {
  const pval_t *v = param_slot(c, name, MPX_PARAM_INT, "mpx_param_int");
  return v && v->set ? v->i : 0;
}

double mpx_param_float(mpx_plugin_ctx_t *c, const char *name) {
  const pval_t *v = param_slot(c, name, MPX_PARAM_FLOAT, "mpx_param_float");
  return v && v->set ? v->f : 0.0;
}

bool mpx_param_bool(mpx_plugin_ctx_t *c, const char *name) {
  const pval_t *v = param_slot(c, name, MPX_PARAM_BOOL, "mpx_param_bool");
  return v && v->set ? v->b : false;
}

const char *mpx_param_str(mpx_plugin_ctx_t *c, const char *name) {
  const pval_t *v = param_slot(c, name, MPX_PARAM_STRING, "mpx_param_str");
  return v && v->set && v->s ? v->s : "";
}

bool mpx_param_has(mpx_plugin_ctx_t *c, const char *name) {
  const pval_t *v = param_slot(c, name, 0, "mpx_param_has");
  return v && v->set;
}

unsigned mpx_worker_index(const mpx_plugin_ctx_t *c) {
  return c ? c->index : 0;
}

unsigned mpx_worker_count(const mpx_plugin_ctx_t *c) {
  return c ? c->count : 1;
}

bool mpx_cancelled(const mpx_plugin_ctx_t *c) {
  return c && atomic_load_explicit(&((mpx_plugin_ctx_t *)c)->cancelled,
                                   memory_order_relaxed) != 0;
}

bool mpx_reduce_final(const mpx_plugin_ctx_t *c) { return c && c->final; }

/* Keeps the plugin's message (and whether retrying is pointless) for the
 * item's dead letter. */
static int plugin_vfail(mpx_plugin_ctx_t *c, bool permanent, const char *fmt, va_list ap) {
  if (c == NULL) return MPX_ETASK;
  vsnprintf(c->err, sizeof c->err, fmt, ap);
  if (permanent) c->permanent = true;
  return mpx__err(MPX_ETASK, "%s", c->err);
}

int mpx_plugin_fail(mpx_plugin_ctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = plugin_vfail(c, false, fmt, ap);
  va_end(ap);
  return rc;
}

int mpx_plugin_fail_permanent(mpx_plugin_ctx_t *c, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = plugin_vfail(c, true, fmt, ap);
  va_end(ap);
  return rc;
}

bool mpx__ctx_permanent(const mpx_plugin_ctx_t *c) { return c->permanent; }

void mpx_plugin_log(mpx_plugin_ctx_t *c, mpx_log_level_t level,
                    const char *fmt, ...) {
  char msg[1800];
  va_list ap;
  if (mpx__log_level < 0) mpx__log_init();
  if ((int)level > mpx__log_level || c == NULL) return;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  mpx_log(level, "%s[%u/%u]: %s", c->stage, c->index, c->count, msg);
}

/* ---- calling the plugin ---------------------------------------------------- */

static int report(mpx_plugin_ctx_t *c, const char *what, int rc) {
  const char *msg = c->err[0] ? c->err : mpx_strerror(rc);
  if (strcmp(c->stage, c->d->name) != 0)
    return mpx__err(rc, "stage '%s' (plugin '%s', worker %u of %u): %s: %s",
                    c->stage, c->d->name, c->index, c->count, what, msg);
  return mpx__err(rc, "plugin '%s' (worker %u of %u): %s: %s", c->d->name,
                  c->index, c->count, what, msg);
}

/* After a callback returned rc (positive allowed when may_continue). */
static int called(mpx_plugin_ctx_t *c, const char *what, int rc,
                  bool may_continue) {
  if (c->reserving) {
    c->reserving = false;
    reserve_cancel(c);
    if (rc >= 0)
      rc = ctx_fail(c, MPX_ESTATE, "returned with an mpx_emit_reserve not "
                    "committed");
  }
  if (rc > 0 && !may_continue)
    rc = ctx_fail(c, MPX_ETASK, "returned %d (not 0 or a negative MPX_E* "
                  "code)", rc);
  if (rc < 0) return report(c, what, rc);
  return rc > 0 ? 1 : 0;
}

int mpx__ctx_call_init(mpx_plugin_ctx_t *c, void **state) {
  *state = NULL;
  c->err[0] = '\0';
  if (c->d->init == NULL) return 0;
  return called(c, "init", c->d->init(c, state), false);
}

void mpx__ctx_call_fini(mpx_plugin_ctx_t *c, void *state) {
  c->err[0] = '\0';
  if (c->d->fini != NULL) c->d->fini(c, state);
  c->reserving = false;
}

int mpx__ctx_call_generate(mpx_plugin_ctx_t *c, void *state) {
  c->err[0] = '\0';
  if (c->d->generate == NULL)
    return report(c, "generate", ctx_fail(c, MPX_ESTATE, "not a source"));
  return called(c, "generate", c->d->generate(c, state), true);
}

uint64_t mpx__ctx_call_size_hint(mpx_plugin_ctx_t *c, void *state) {
  return c->d->size_hint ? c->d->size_hint(c, state) : 0;
}

int mpx__ctx_call_process(mpx_plugin_ctx_t *c, void *state, const void *in,
                          size_t len) {
  c->err[0] = '\0';
  c->permanent = false;
  if (c->d->process == NULL)
    return report(c, "process", ctx_fail(c, MPX_ESTATE, "no process "
                                         "callback"));
  return called(c, "process", c->d->process(c, state, in, len), false);
}

int mpx__ctx_call_flush(mpx_plugin_ctx_t *c, void *state) {
  c->err[0] = '\0';
  if (c->d->flush == NULL) return 0;
  return called(c, "flush", c->d->flush(c, state), false);
}

int mpx__ctx_call_merge(mpx_plugin_ctx_t *c, void *state, const void *a,
                        size_t alen, const void *b, size_t blen) {
  c->err[0] = '\0';
  if (c->d->merge == NULL)
    return report(c, "merge", ctx_fail(c, MPX_ESTATE, "not a reduce"));
  return called(c, "merge", c->d->merge(c, state, a, alen, b, blen), false);
}
