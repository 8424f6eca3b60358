/* The pipeline config. Two steps:
 *
 * 1. (config_yaml.c) libyaml's event stream becomes a small tree of
 *    scalars, lists and mappings. Refused on the way: anchors, aliases
 *    (no billion laughs), tags, a second document, duplicate keys, keys
 *    that are not scalars,
 *    NUL characters, and anything over the limits of config.h. libyaml's
 *    own errors (syntax, invalid UTF-8) keep its position.
 * 2. (config_check.c, with the value rules of config_value.c) The tree
 *    is checked key by key into an mpx__cfg_t: every key known,
 *    every value of the right shape and type, then stage names made and
 *    the stage options resolved against `defaults`.
 *
 * This file keeps the messages and the entry points.
 *
 * Every message is "FILE:LINE:COL: what is wrong, what was expected"
 * (see config.h and docs/config.md). User text quoted in a message is
 * escaped and cut short, so a message always fits mpx_last_error(). */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "config_int.h"
#include "internal.h"


/* ---- messages ------------------------------------------------------------- */

static const char econfig_suffix[] = " (configuration error)";

/* Escapes s into dst: control bytes as \xHH, at most max bytes of s
 * (cut at a UTF-8 character boundary, then "..."). */
const char *mpx__cfg_esc(char *dst, size_t cap, const char *s, size_t max) {
  size_t i = 0, o = 0, len = strlen(s);
  bool cut = len > max;
  if (cut) {
    len = max;
    while (len > 0 && ((unsigned char)s[len] & 0xc0) == 0x80) len--;
  }
  for (; i < len && o + 8 < cap; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch < 0x20 || ch == 0x7f)
      o += (size_t)snprintf(dst + o, cap - o, "\\x%02x", ch);
    else
      dst[o++] = (char)ch;
  }
  if (i < len) cut = true;
  if (cut && o + 4 <= cap) {
    memcpy(dst + o, "...", 3);
    o += 3;
  }
  dst[o] = '\0';
  return dst;
}


/* User text for a message, escaped and cut short. */
const char *mpx__cfg_q(qbuf_t *qb, const char *s) {
  return mpx__cfg_esc(qb->b, sizeof qb->b, s, CFG_QUOTE_MAX);
}

/* Formats "PREFIX: msg" and records it. */
static int errv(int rc, const char *prefix, const char *fmt, va_list ap) {
  char msg[512];
  size_t n;
  int k = snprintf(msg, sizeof msg, "%s: ", prefix);
  n = k < 0 ? 0 : (size_t)k >= sizeof msg ? sizeof msg - 1 : (size_t)k;
  vsnprintf(msg + n, sizeof msg - n, fmt, ap);
  n = strlen(msg);
  if (rc == MPX_ECONFIG && n >= sizeof econfig_suffix - 1 &&
      strcmp(msg + n - (sizeof econfig_suffix - 1), econfig_suffix) == 0)
    msg[n - (sizeof econfig_suffix - 1)] = '\0';
  return mpx__err(rc, "%s", msg);
}

static int perr_v(const char *file, unsigned line, unsigned col,
                  const char *fmt, va_list ap) {
  char prefix[CFG_MAX_PATH + 64];
  if (line > 0)
    snprintf(prefix, sizeof prefix, "%s:%u:%u", file, line, col);
  else
    snprintf(prefix, sizeof prefix, "%s", file);
  return errv(MPX_ECONFIG, prefix, fmt, ap);
}

/* A content error at a position of `file` (line 0: no position). */
int mpx__cfg_perr(const char *file, unsigned line, unsigned col,
                  const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  perr_v(file, line, col, fmt, ap);
  va_end(ap);
  return MPX_ECONFIG;
}

int mpx__cfg_error_at(const mpx__cfg_t *c, unsigned line, unsigned col,
                      const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  if (line == 0 && col > 0 && col <= c->n_sets) {
    char prefix[256], e[256];
    snprintf(prefix, sizeof prefix, "--set %s",
             mpx__cfg_esc(e, sizeof e, c->sets[col - 1], 100));
    errv(MPX_ECONFIG, prefix, fmt, ap);
  } else {
    perr_v(c->file, line, col, fmt, ap);
  }
  va_end(ap);
  return MPX_ECONFIG;
}

/* ---- public --------------------------------------------------------------- */

/* The file name without directory and extension. */
static char *default_name(const char *file) {
  const char *b = strrchr(file, '/'), *dot;
  size_t n;
  char *s;
  b = b ? b + 1 : file;
  dot = strchr(b + (*b == '.'), '.');
  n = dot ? (size_t)(dot - b) : strlen(b);
  if (n == 0) b = "pipeline", n = 8;
  if ((s = malloc(n + 1)) == NULL) return NULL;
  memcpy(s, b, n);
  s[n] = '\0';
  return s;
}

static mpx__cfg_t *cfg_new(const char *file) {
  mpx__cfg_t *c = calloc(1, sizeof *c);
  if (c == NULL) return NULL;
  c->file = strdup(file);
  c->name = default_name(file);
  c->defaults.codec = strdup(MPX__CFG_DEFAULT_CODEC);
  c->defaults.retries = MPX__CFG_DEFAULT_RETRIES;
  c->defaults.transport = MPX_TRANSPORT_AUTO;
  c->queue_capacity = MPX__CFG_DEFAULT_QUEUE;
  c->supervisor.restart = MPX_RESTART_PERMANENT;
  c->supervisor.max_restarts = -1;
  c->supervisor.period = MPX__CFG_DEFAULT_PERIOD;
  c->supervisor.backoff_min = MPX__CFG_DEFAULT_BACKOFF_MIN;
  c->supervisor.backoff_max = MPX__CFG_DEFAULT_BACKOFF_MAX;
  if (c->file == NULL || c->name == NULL || c->defaults.codec == NULL) {
    mpx__cfg_free(c);
    return NULL;
  }
  return c;
}

void mpx__cfg_free(mpx__cfg_t *c) {
  size_t i, j;
  if (c == NULL) return;
  for (i = 0; i < c->n_stages; i++) {
    mpx__cfg_stage_t *st = &c->stages[i];
    for (j = 0; j < st->n_params; j++) {
      free(st->params[j].key);
      free(st->params[j].value);
    }
    free(st->params);
    for (j = 0; j < st->n_inputs; j++) free(st->inputs[j]);
    free(st->inputs);
    free(st->inputs_at);
    free(st->name);
    free(st->plugin);
    free(st->opts.codec);
  }
  free(c->stages);
  for (i = 0; i < c->n_sets; i++) free(c->sets[i]);
  free(c->sets);
  free(c->defaults.codec);
  free(c->dead_letter);
  free(c->name);
  free(c->file);
  free(c);
}

int mpx__cfg_parse_mem(mpx__cfg_t **out, const char *name, const void *data,
                       size_t len) {
  node_t *root = NULL;
  mpx__cfg_t *c;
  int rc;
  *out = NULL;
  if (name == NULL) name = "<config>";
  if (len > MPX__CFG_MAX_BYTES)
    return mpx__cfg_perr(name, 0, 0,
                         "%zu bytes: larger than %u bytes (1 MiB), the limit "
                         "for a pipeline file", len, MPX__CFG_MAX_BYTES);
  rc = mpx__cfg_tree(name, data, len, &root);
  if (rc == 0) {
    if ((c = cfg_new(name)) == NULL)
      rc = mpx__err(MPX_ENOMEM, "%s: out of memory", name);
    else if ((rc = mpx__cfg_check_tree(c, name, root)) != 0)
      mpx__cfg_free(c);
    else
      *out = c;
  }
  mpx__cfg_node_free(root);
  return rc;
}

int mpx__cfg_parse_file(mpx__cfg_t **out, const char *path) {
  char *buf = NULL;
  size_t len = 0, cap = 0;
  int fd, rc;
  *out = NULL;
  if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
    return mpx__err_errno("%s: cannot open", path);
  for (;;) {
    ssize_t n;
    if (len == cap) {
      char *nb;
      cap = cap ? cap * 2 : 16384;
      if (cap > MPX__CFG_MAX_BYTES + 1) cap = MPX__CFG_MAX_BYTES + 1;
      if ((nb = realloc(buf, cap)) == NULL) {
        free(buf);
        close(fd);
        return mpx__err(MPX_ENOMEM, "%s: out of memory", path);
      }
      buf = nb;
    }
    n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = mpx__err_errno("%s: cannot read", path);
      free(buf);
      close(fd);
      return rc;
    }
    if (n == 0) break;
    len += (size_t)n;
    if (len > MPX__CFG_MAX_BYTES) {
      free(buf);
      close(fd);
      return mpx__cfg_perr(path, 0, 0, "larger than %u bytes (1 MiB), the limit for "
                  "a pipeline file", MPX__CFG_MAX_BYTES);
    }
  }
  close(fd);
  rc = mpx__cfg_parse_mem(out, path, buf, len);
  free(buf);
  return rc;
}
