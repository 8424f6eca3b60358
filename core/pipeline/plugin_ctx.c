/* The context a plugin instance runs on: its typed parameters (parsed in
 * plugin_params.c), their encoding for a worker, and the host services of
 * include/mpx/plugin.h, which forward emits to whoever runs the instance
 * (the engine, or a test). */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "rd.h"
#include "plugin_host.h"
#include "plugin_params.h"

#define PARAMS_MAGIC "MXPP"

/* ---- the context ----------------------------------------------------------- */

struct mpx_plugin_ctx_s {
  const mpx_plugin_t *d;
  char *stage;
  pval_t *vals; /* d->n_params */
  unsigned index, count;
  const mpx_codec_t *codec;
  mpx__emit_fn emit;
  void *emit_arg;
  mpx__emit_to_fn emit_to; /* when set, every emit goes here, tagged */
  void *emit_to_arg;
  const char *const *ports; /* the descriptor's, or own_ports */
  char **own_ports;         /* named by ports_fn */
  unsigned n_ports;
  bool naming;              /* in ports_fn: mpx_port_add allowed */
  unsigned partitions;      /* mpx_partitions() */
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

static int ctx_fail(mpx_plugin_ctx_t *c, int rc, const char *fmt, ...) MPX_PRINTF(3, 4);
static int report(mpx_plugin_ctx_t *c, const char *what, int rc);

static const char *const default_ports[] = {"out"};

/* The instance's ports: the descriptor's table, or what its ports_fn
 * names from the parameters (a failure there is the stage's
 * configuration error), or the one default port. */
static int ctx_ports(mpx_plugin_ctx_t *c) {
  size_t n;
  const char *const *p = mpx__plugin_ports(c->d, &n);
  int (*fn)(mpx_plugin_ctx_t *) = mpx__plugin_ports_fn(c->d);
  c->ports = p ? p : default_ports;
  c->n_ports = p ? (unsigned)n : 1;
  if (fn == NULL) return 0;
  c->n_ports = 0;
  c->naming = true;
  c->err[0] = '\0';
  int rc = fn(c);
  c->naming = false;
  if (rc == 0 && c->n_ports == 0) rc = ctx_fail(c, MPX_ECONFIG, "it names no port");
  if (rc != 0) {
    char why[1200];
    report(c, "ports", rc < 0 ? rc : MPX_ECONFIG);
    snprintf(why, sizeof why, "%s", mpx_last_error());
    return mpx__err(MPX_ECONFIG, "%s", why);
  }
  c->ports = (const char *const *)c->own_ports;
  return 0;
}

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
  if ((rc = mpx__params_fill(d, kv, nkv, bad, c->vals)) != 0) goto fail;
  if ((rc = ctx_ports(c)) != 0) goto fail;
  *out = c;
  return 0;
fail:
  mpx__ctx_free(c);
  return rc;
}

void mpx__ctx_free(mpx_plugin_ctx_t *c) {
  if (c == NULL) return;
  mpx__pvals_free(c->vals, c->d->n_params);
  if (c->own_ports)
    for (unsigned i = 0; i < MPX_PLUGIN_MAX_PORTS && c->own_ports[i]; i++) free(c->own_ports[i]);
  free(c->own_ports);
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
        (rc = put_str(out, mpx__pval_text(p, &c->vals[i], buf, sizeof buf))) != 0)
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
                  "'%s'", name, mpx__plugin_pname(d));
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
                        "parameters", mpx__plugin_pname(d));
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

void mpx__ctx_set_emit_to(mpx_plugin_ctx_t *c, mpx__emit_to_fn fn, void *arg) {
  c->emit_to = fn;
  c->emit_to_arg = arg;
}

unsigned mpx__ctx_port_count(const mpx_plugin_ctx_t *c) { return c->n_ports; }

const char *const *mpx__ctx_port_names(const mpx_plugin_ctx_t *c) { return c->ports; }

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

/* Every emit ends here: checked, then to the tagged emit, or else port 0
 * to the plain one. */
static int emit_tagged(mpx_plugin_ctx_t *c, const char *fn, mpx__tag_t tag, const void *data,
                       size_t len) {
  if (data == NULL && len > 0) return ctx_fail(c, MPX_EINVAL, "%s: NULL data", fn);
  if (c->d->kind == MPX_PLUGIN_SINK)
    return ctx_fail(c, MPX_ESTATE, "%s from a sink (sinks emit nothing)", fn);
  if (c->reserving)
    return ctx_fail(c, MPX_ESTATE, "%s while an mpx_emit_reserve is not committed", fn);
  if (tag.port >= c->n_ports)
    return ctx_fail(c, MPX_EINVAL, "%s: port %u, the plugin has %u", fn, tag.port, c->n_ports);
  if (c->emit_to) return c->emit_to(c->emit_to_arg, tag, data, len);
  if (c->emit == NULL) return ctx_fail(c, MPX_ESTATE, "%s: this stage takes no outputs", fn);
  return tag.port == 0 ? c->emit(c->emit_arg, data, len) : 0;
}

int mpx_emit(mpx_plugin_ctx_t *c, const void *data, size_t len) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit: NULL context");
  return emit_tagged(c, "mpx_emit", (mpx__tag_t){0}, data, len);
}

int mpx_emit_to(mpx_plugin_ctx_t *c, unsigned port, const void *key, size_t klen,
                const void *data, size_t len) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit_to: NULL context");
  if (key == NULL && klen > 0) return ctx_fail(c, MPX_EINVAL, "mpx_emit_to: NULL key");
  mpx__tag_t t = {.port = port, .keyed = key != NULL, .hash = key ? mpx_key_hash(key, klen) : 0};
  return emit_tagged(c, "mpx_emit_to", t, data, len);
}

int mpx_emit_port(mpx_plugin_ctx_t *c, unsigned port, const void *data, size_t len) {
  return mpx_emit_to(c, port, NULL, 0, data, len);
}

int mpx_emit_keyed(mpx_plugin_ctx_t *c, const void *key, size_t klen, const void *data,
                   size_t len) {
  if (c != NULL && key == NULL) return ctx_fail(c, MPX_EINVAL, "mpx_emit_keyed: NULL key");
  return mpx_emit_to(c, 0, key, klen, data, len);
}

/* Eight bytes at a time, read little-endian whatever the machine, each
 * word folded in by a multiply and a shift, then a final mix so that the
 * low bits (what % partitions looks at) depend on every byte. Stable: the
 * function is part of the ABI (plugin.h). */
static uint64_t key_mix(uint64_t h, uint64_t v) {
  h = (h ^ v) * 0xff51afd7ed558ccdu;
  return h ^ (h >> 29);
}

uint32_t mpx_key_hash(const void *key, size_t len) {
  const unsigned char *p = key;
  uint64_t h = 0x243f6a8885a308d3u ^ ((uint64_t)len * 0x9e3779b97f4a7c15u);
  for (; len >= 8; p += 8, len -= 8) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; /* compiles to one load */
    h = key_mix(h, v);
  }
  if (len) {
    uint64_t v = 0;
    for (size_t i = len; i-- > 0;) v = v << 8 | p[i];
    h = key_mix(h, v);
  }
  h *= 0xc4ceb9fe1a85ec53u;
  return (uint32_t)(h ^ (h >> 32));
}

int mpx_port_add(mpx_plugin_ctx_t *c, const char *name) {
  if (c == NULL || name == NULL) return mpx__err(MPX_EINVAL, "mpx_port_add: NULL argument");
  if (!c->naming) return ctx_fail(c, MPX_ESTATE, "mpx_port_add outside ports_fn");
  if (c->n_ports >= MPX_PLUGIN_MAX_PORTS)
    return ctx_fail(c, MPX_E2BIG, "more than %d ports", MPX_PLUGIN_MAX_PORTS);
  size_t n = strlen(name);
  bool ok = n >= 1 && n <= 63;
  for (size_t i = 0; ok && i < n; i++)
    ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') ||
         name[i] == '_' || name[i] == '-';
  if (!ok) return ctx_fail(c, MPX_EINVAL, "bad port name '%s' (a-z, 0-9, '_' and '-', 1 to 63)",
                           name);
  if (mpx_port_index(c, name) >= 0) return ctx_fail(c, MPX_EINVAL, "port '%s' named twice", name);
  if (c->own_ports == NULL &&
      (c->own_ports = calloc(MPX_PLUGIN_MAX_PORTS + 1, sizeof *c->own_ports)) == NULL)
    return MPX_ENOMEM;
  if ((c->own_ports[c->n_ports] = strdup(name)) == NULL) return MPX_ENOMEM;
  c->ports = (const char *const *)c->own_ports;
  c->n_ports++;
  return 0;
}

void mpx__ctx_set_partitions(mpx_plugin_ctx_t *c, unsigned n) { c->partitions = n; }

unsigned mpx_partitions(const mpx_plugin_ctx_t *c) { return c ? c->partitions : 0; }

int mpx_emit_partition(mpx_plugin_ctx_t *c, unsigned p, const void *data, size_t len) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_emit_partition: NULL context");
  if (p >= c->partitions)
    return ctx_fail(c, MPX_EINVAL, "mpx_emit_partition: partition %u, the stage has %u", p,
                    c->partitions);
  mpx__tag_t t = {.keyed = true, .direct = true, .hash = p};
  return emit_tagged(c, "mpx_emit_partition", t, data, len);
}

unsigned mpx_port_count(const mpx_plugin_ctx_t *c) { return c ? c->n_ports : 0; }

int mpx_port_index(const mpx_plugin_ctx_t *c, const char *name) {
  if (c == NULL || name == NULL) return MPX_EINVAL;
  for (unsigned i = 0; i < c->n_ports; i++)
    if (c->ports && c->ports[i] && strcmp(c->ports[i], name) == 0) return (int)i;
  return MPX_ENOENT;
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
  if (c == NULL || c->reserving || (c->emit == NULL && c->emit_to == NULL) ||
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
  return emit_tagged(c, "mpx_emit_commit", (mpx__tag_t){0}, c->scratch, used);
}

/* The slot of a parameter asked for by a plugin, or NULL (logged). */
static const pval_t *param_slot(mpx_plugin_ctx_t *c, const char *name,
                                mpx_param_type_t type, const char *fn) {
  int i;
  if (c == NULL || name == NULL) return NULL;
  if ((i = mpx__param_find(c->d, name)) < 0) {
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

int mpx__ctx_call_fold(mpx_plugin_ctx_t *c, void *state, const void *p, size_t len) {
  c->err[0] = '\0';
  if (!mpx__plugin_has_fold(c->d))
    return report(c, "fold", ctx_fail(c, MPX_ESTATE, "the plugin has no fold"));
  return called(c, "fold", c->d->fold(c, state, p, len), false);
}
