/* Pipeline config: the syntax of scalar values and the checks of one
 * option's value, shared by the tree checker (config_check.c) and --set,
 * so a value means the same and fails with the same words in both. */
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

/* ---- scalar syntaxes ------------------------------------------------------ */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Decimal, optional '+', '_' between digits, no leading zero. 0, -1 (not
 * such an integer) or -2 (above max). */
int mpx__cfg_parse_uint(const char *s, unsigned long long max,
                        unsigned long long *out) {
  unsigned long long v = 0;
  bool over = false;
  if (*s == '+') s++;
  if (!is_digit(*s) || (s[0] == '0' && s[1] != '\0')) return -1;
  for (; *s; s++) {
    if (*s == '_' && is_digit(s[-1]) && is_digit(s[1])) continue;
    if (!is_digit(*s)) return -1;
    if (v > (max - (unsigned long long)(*s - '0')) / 10)
      over = true;
    else
      v = v * 10 + (unsigned long long)(*s - '0');
  }
  if (over) return -2;
  *out = v;
  return 0;
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) {
  c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* [+-]digits[.digits][e[+-]digits] (a digit on one side of the point at
 * least), read in the C locale. 0 or -1. */
static int parse_number(const char *s, double *out) {
  const char *p = s;
  char *end;
  bool digits = false;
  double v;
  if (*p == '+' || *p == '-') p++;
  while (is_digit(*p)) p++, digits = true;
  if (*p == '.') {
    p++;
    while (is_digit(*p)) p++, digits = true;
  }
  if (!digits) return -1;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!is_digit(*p)) return -1;
    while (is_digit(*p)) p++;
  }
  if (*p != '\0') return -1;
  pthread_once(&c_locale_once, c_locale_init);
  v = c_locale != (locale_t)0 ? strtod_l(s, &end, c_locale) : strtod(s, &end);
  if (*end != '\0') return -1;
  *out = v;
  return 0;
}

/* As the plugin host reads bool params: true/yes/on/1, false/no/off/0, in
 * any case. */
static int parse_bool(const char *s, bool *out) {
  static const char *const yes[] = {"true", "yes", "on", "1"};
  static const char *const no[] = {"false", "no", "off", "0"};
  size_t i;
  for (i = 0; i < MPX__ARRAY_SIZE(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0) return *out = true, 0;
    if (strcasecmp(s, no[i]) == 0) return *out = false, 0;
  }
  return -1;
}

static bool name_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         is_digit(ch) || ch == '_' || ch == '-';
}

/* Letters, digits, '_' and '-', 1 to MPX__CFG_MAX_NAME of them. */
bool mpx__cfg_name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!name_char(s[n])) return false;
  return n > 0 && n <= MPX__CFG_MAX_NAME;
}

bool mpx__cfg_all_digits(const char *s) {
  for (; *s; s++)
    if (!is_digit(*s)) return false;
  return true;
}

/* A stage name: a name, not only digits (those are indexes in --set), not
 * "pipeline" (the --set prefix of the top-level keys). */
bool mpx__cfg_stage_name_ok(const char *s) {
  return mpx__cfg_name_ok(s) && !mpx__cfg_all_digits(s) && strcmp(s, "pipeline") != 0;
}

/* An entry of `inputs:`: STAGE or STAGE.PORT, both names. */
bool mpx__cfg_input_ok(const char *s) {
  const char *dot = strchr(s, '.');
  char stage[MPX__CFG_MAX_NAME + 1];
  size_t n = dot ? (size_t)(dot - s) : strlen(s);
  if (n == 0 || n > MPX__CFG_MAX_NAME) return false;
  memcpy(stage, s, n);
  stage[n] = '\0';
  return mpx__cfg_stage_name_ok(stage) && (dot == NULL || mpx__cfg_name_ok(dot + 1));
}

/* A plugin or codec: a name, or a path with a '/'. */
bool mpx__cfg_ref_ok(const char *s) {
  if (strchr(s, '/') != NULL) return strlen(s) <= CFG_MAX_PATH;
  return mpx__cfg_name_ok(s);
}

bool mpx__cfg_text_ok(const char *s, size_t max) {
  size_t n = 0;
  for (; s[n]; n++)
    if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return false;
  return n > 0 && n <= max;
}

/* The default stage name of a plugin: its name, or for a path the file
 * name without its directory, an "mpx_task_" or "lib" prefix and anything
 * from the first '.', other characters made '_'. -1 when that is not a
 * valid stage name. */
int mpx__cfg_derive_name(const char *plugin, char out[MPX__CFG_MAX_NAME + 1]) {
  const char *b = strrchr(plugin, '/');
  size_t n = 0;
  if (b == NULL) {
    if (!mpx__cfg_name_ok(plugin)) return -1;
    strcpy(out, plugin);
    return mpx__cfg_stage_name_ok(out) ? 0 : -1;
  }
  b++;
  if (strncmp(b, "mpx_task_", 9) == 0)
    b += 9;
  else if (strncmp(b, "lib", 3) == 0)
    b += 3;
  for (; *b && *b != '.'; b++) {
    if (n == MPX__CFG_MAX_NAME) return -1;
    out[n++] = name_char(*b) ? *b : '_';
  }
  out[n] = '\0';
  return mpx__cfg_stage_name_ok(out) ? 0 : -1;
}

/* ---- values --------------------------------------------------------------- */


val_t mpx__cfg_node_val(const node_t *n) {
  val_t v = {n->type, n->s, n->null};
  return v;
}

val_t mpx__cfg_text_val(const char *s) {
  val_t v = {N_SCALAR, s, false};
  return v;
}

/* "a list", "a mapping", "nothing" or "'text'". */
const char *mpx__cfg_got(qbuf_t *qb, const val_t *v) {
  char e[sizeof qb->b];
  if (v->type != N_SCALAR) return mpx__cfg_kind_name(v->type);
  if (v->null) return "nothing";
  snprintf(qb->b, sizeof qb->b, "'%s'", mpx__cfg_esc(e, sizeof e, v->s, CFG_QUOTE_MAX));
  return qb->b;
}

/* A value's text when it is a non-null scalar, else NULL. */
const char *mpx__cfg_scalar(const val_t *v) {
  return v->type == N_SCALAR && !v->null ? v->s : NULL;
}


/* Checks an integer option: auto (when allowed, as 0), min..max. */
int mpx__cfg_check_uint(const char *key, const val_t *v, bool allow_auto,
                        unsigned long long min, unsigned long long max,
                        const char *desc, parsed_t *out, char *why,
                        size_t cap) {
  const char *s = mpx__cfg_scalar(v);
  qbuf_t qb;
  int r = -1;
  if (s != NULL && allow_auto && strcmp(s, "auto") == 0) {
    out->u = 0;
    return 0;
  }
  if (s != NULL) r = mpx__cfg_parse_uint(s, max, &out->u);
  if (r == 0 && out->u >= min) return 0;
  if (r == -2)
    snprintf(why, cap, "'%s' must be at most %llu, got %s", key, max,
             mpx__cfg_got(&qb, v));
  else
    snprintf(why, cap, "'%s' must be %s, got %s", key, desc, mpx__cfg_got(&qb, v));
  return -1;
}

/* `partition_by`: how a stage's inputs are split among its partitions.
 * Only by the key an item was emitted with (mpx_emit_keyed), today. */
int mpx__cfg_check_partition_by(const val_t *v, char *why, size_t cap) {
  const char *s = mpx__cfg_scalar(v);
  qbuf_t qb;
  if (s != NULL && strcmp(s, "key") == 0) return 0;
  snprintf(why, cap, "'partition_by' must be key (the only way to partition: by the key "
           "each item was emitted with), got %s", mpx__cfg_got(&qb, v));
  return -1;
}

int mpx__cfg_check_partitions(const val_t *v, parsed_t *out, char *why, size_t cap) {
  return mpx__cfg_check_uint("partitions", v, false, 1, MPX__CFG_MAX_WORKERS,
                             "an integer from 1 to 4096", out, why, cap);
}

/* Seconds: above 0 (positive) or from 0, at most MPX__CFG_MAX_SECONDS. */
static int check_secs(const char *key, const val_t *v, bool positive,
                      parsed_t *out, char *why, size_t cap) {
  const char *s = mpx__cfg_scalar(v);
  qbuf_t qb;
  if (s != NULL && parse_number(s, &out->d) == 0 &&
      (positive ? out->d > 0 : out->d >= 0)) {
    if (out->d == 0) out->d = 0; /* not -0 */
    if (out->d <= MPX__CFG_MAX_SECONDS) return 0;
    snprintf(why, cap, "'%s' must be at most 1e9 seconds, got %s", key,
             mpx__cfg_got(&qb, v));
    return -1;
  }
  snprintf(why, cap, "'%s' must be a number of seconds%s, got %s", key,
           positive ? " above 0" : ", 0 or more", mpx__cfg_got(&qb, v));
  return -1;
}

static int check_enum(const char *key, const val_t *v,
                      const char *const *names, parsed_t *out, char *why,
                      size_t cap) {
  const char *s = mpx__cfg_scalar(v);
  qbuf_t qb;
  char list[128] = "";
  int i;
  for (i = 0; names[i] != NULL; i++)
    if (s != NULL && strcmp(s, names[i]) == 0) return out->e = i, 0;
  for (i = 0; names[i] != NULL; i++) {
    if (i > 0) strncat(list, ", ", sizeof list - strlen(list) - 1);
    strncat(list, names[i], sizeof list - strlen(list) - 1);
  }
  snprintf(why, cap, "'%s' must be one of %s, got %s", key, list,
           mpx__cfg_got(&qb, v));
  return -1;
}

const char *const mpx__cfg_opt_names[MPX__CFG_NOPTS + 1] = {
    "workers", "codec", "transport", "retries", "timeout", "ordered", "batch",
    NULL};


int mpx__cfg_refuse_unused(const mpx__cfg_t *c, size_t i, unsigned used,
                           const char *what) {
  const mpx__cfg_stage_t *s = &c->stages[i];
  for (unsigned o = 0; o < MPX__CFG_NOPTS; o++)
    if ((s->opts.set & (1u << o)) && !(used & (1u << o)))
      return mpx__cfg_error_at(c, s->opts.at[o].line, s->opts.at[o].col,
                               "stage '%s': '%s' has no effect on %s", s->name,
                               mpx__cfg_opt_names[o], what);
  return 0;
}
static const char *const transport_names[] = {"auto", "pipe", "uring", NULL};
static const char *const restart_names[] = {"permanent", "transient",
                                            "temporary", NULL};

const char *mpx__cfg_transport_name(mpx_transport_t t) {
  return (unsigned)t < 3 ? transport_names[t] : "?";
}

const char *mpx__cfg_restart_name(mpx_restart_t r) {
  return (unsigned)r < 3 ? restart_names[r] : "?";
}

/* Checks a stage option's value into *out (a codec's text is borrowed
 * from v). 0, or -1 with why. */
int mpx__cfg_check_opt(mpx__cfg_opt_t k, const val_t *v, parsed_t *out,
                       char *why, size_t cap) {
  const char *key = mpx__cfg_opt_names[k];
  qbuf_t qb;
  switch (k) {
  case MPX__CFG_WORKERS:
    return mpx__cfg_check_uint(key, v, true, 1, MPX__CFG_MAX_WORKERS,
                      "a positive integer or auto", out, why, cap);
  case MPX__CFG_CODEC:
    if (mpx__cfg_scalar(v) != NULL && mpx__cfg_ref_ok(v->s)) return out->s = v->s, 0;
    snprintf(why, cap, "'codec' must be a codec name (up to 64 letters, "
             "digits, '_' or '-') or a path containing '/', got %s",
             mpx__cfg_got(&qb, v));
    return -1;
  case MPX__CFG_TRANSPORT:
    return check_enum(key, v, transport_names, out, why, cap);
  case MPX__CFG_RETRIES:
    return mpx__cfg_check_uint(key, v, false, 0, MPX__CFG_MAX_RETRIES,
                      "an integer from 0 to 1000", out, why, cap);
  case MPX__CFG_TIMEOUT:
    return check_secs(key, v, false, out, why, cap);
  case MPX__CFG_ORDERED:
    if (mpx__cfg_scalar(v) != NULL && parse_bool(v->s, &out->b) == 0) return 0;
    snprintf(why, cap, "'ordered' must be true or false, got %s",
             mpx__cfg_got(&qb, v));
    return -1;
  case MPX__CFG_BATCH:
    return mpx__cfg_check_uint(key, v, true, 1, MPX__CFG_MAX_BATCH,
                      "a positive integer or auto", out, why, cap);
  default:
    snprintf(why, cap, "unknown option");
    return -1;
  }
}

/* Stores a checked option. 0 or MPX_ENOMEM (o unchanged). */
int mpx__cfg_store_opt(mpx__cfg_opts_t *o, mpx__cfg_opt_t k, const parsed_t *p,
                       mpx__cfg_pos_t at) {
  switch (k) {
  case MPX__CFG_WORKERS: o->workers = (unsigned)p->u; break;
  case MPX__CFG_CODEC: {
    char *s = strdup(p->s);
    if (s == NULL) return MPX_ENOMEM;
    free(o->codec);
    o->codec = s;
    break;
  }
  case MPX__CFG_TRANSPORT: o->transport = (mpx_transport_t)p->e; break;
  case MPX__CFG_RETRIES: o->retries = (int)p->u; break;
  case MPX__CFG_TIMEOUT: o->timeout = p->d; break;
  case MPX__CFG_ORDERED: o->ordered = p->b; break;
  case MPX__CFG_BATCH: o->batch = (size_t)p->u; break;
  default: break;
  }
  o->set |= 1u << k;
  o->at[k] = at;
  return 0;
}

int mpx__cfg_opt_index(const char *key) {
  int i;
  for (i = 0; i < MPX__CFG_NOPTS; i++)
    if (strcmp(key, mpx__cfg_opt_names[i]) == 0) return i;
  return -1;
}

const char *const mpx__cfg_sup_names[SUP_N + 1] = {
    "restart", "max_restarts", "period", "backoff_min", "backoff_max", NULL};

int mpx__cfg_check_sup(int k, const val_t *v, parsed_t *out, char *why,
                       size_t cap) {
  switch (k) {
  case SUP_RESTART:
    return check_enum("restart", v, restart_names, out, why, cap);
  case SUP_MAX_RESTARTS:
    return mpx__cfg_check_uint("max_restarts", v, false, 0, MPX__CFG_MAX_RESTARTS,
                      "an integer from 0 to 1000000", out, why, cap);
  case SUP_PERIOD:
    return check_secs("period", v, true, out, why, cap);
  default:
    return check_secs(mpx__cfg_sup_names[k], v, false, out, why, cap);
  }
}

/* Applies a checked supervisor value and keeps backoff_min <= backoff_max:
 * a backoff_max that was not given follows backoff_min up; one that was
 * given and is below backoff_min is an error (why). *given: the keys given
 * so far (bits), updated. */
int mpx__cfg_apply_sup(mpx__cfg_t *c, unsigned *given, int k, const parsed_t *p,
                       char *why, size_t cap) {
  double lo = c->supervisor.backoff_min, hi = c->supervisor.backoff_max;
  unsigned g = *given | (1u << k);
  if (k == SUP_BACKOFF_MIN) lo = p->d;
  if (k == SUP_BACKOFF_MAX) hi = p->d;
  if (k == SUP_BACKOFF_MIN || k == SUP_BACKOFF_MAX) {
    if (hi < lo && !(g & (1u << SUP_BACKOFF_MAX))) hi = lo;
    if (hi < lo) {
      snprintf(why, cap, "'backoff_max' (%g) must not be below 'backoff_min' "
               "(%g)", hi, lo);
      return -1;
    }
  }
  switch (k) {
  case SUP_RESTART: c->supervisor.restart = (mpx_restart_t)p->e; break;
  case SUP_MAX_RESTARTS: c->supervisor.max_restarts = (int)p->u; break;
  case SUP_PERIOD: c->supervisor.period = p->d; break;
  default:
    c->supervisor.backoff_min = lo;
    c->supervisor.backoff_max = hi;
    break;
  }
  *given = g;
  return 0;
}

/* Copies the defaults into every stage option a stage does not set. All
 * or nothing: 0 or MPX_ENOMEM. */
int mpx__cfg_resolve(mpx__cfg_t *c) {
  const mpx__cfg_opts_t *d = &c->defaults;
  char **codecs = calloc(c->n_stages ? c->n_stages : 1, sizeof *codecs);
  size_t i;
  int k;
  if (codecs == NULL) return MPX_ENOMEM;
  for (i = 0; i < c->n_stages; i++) {
    if (c->stages[i].opts.set & (1u << MPX__CFG_CODEC)) continue;
    if ((codecs[i] = strdup(d->codec)) == NULL) {
      while (i-- > 0) free(codecs[i]);
      free(codecs);
      return MPX_ENOMEM;
    }
  }
  for (i = 0; i < c->n_stages; i++) {
    mpx__cfg_opts_t *o = &c->stages[i].opts;
    for (k = 0; k < MPX__CFG_NOPTS; k++) {
      if (o->set & (1u << k)) continue;
      o->at[k] = d->at[k];
      switch ((mpx__cfg_opt_t)k) {
      case MPX__CFG_WORKERS: o->workers = d->workers; break;
      case MPX__CFG_CODEC:
        free(o->codec);
        o->codec = codecs[i];
        break;
      case MPX__CFG_TRANSPORT: o->transport = d->transport; break;
      case MPX__CFG_RETRIES: o->retries = d->retries; break;
      case MPX__CFG_TIMEOUT: o->timeout = d->timeout; break;
      case MPX__CFG_ORDERED: o->ordered = d->ordered; break;
      case MPX__CFG_BATCH: o->batch = d->batch; break;
      default: break;
      }
    }
  }
  free(codecs);
  return 0;
}
