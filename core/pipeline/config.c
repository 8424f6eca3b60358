/* The pipeline config. Two steps:
 *
 * 1. libyaml's event stream becomes a small tree of scalars, lists and
 *    mappings. Refused on the way: anchors, aliases (no billion laughs),
 *    tags, a second document, duplicate keys, keys that are not scalars,
 *    NUL characters, and anything over the limits of config.h. libyaml's
 *    own errors (syntax, invalid UTF-8) keep its position.
 * 2. The tree is checked key by key into an mpx__cfg_t: every key known,
 *    every value of the right shape and type, then stage names made and
 *    the stage options resolved against `defaults`.
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
#include "internal.h"

#define CFG_MAX_PATH 4096
#define CFG_MAX_PIPELINE_NAME 128
#define CFG_QUOTE_MAX 40 /* bytes of user text quoted in a message */

/* ---- messages ------------------------------------------------------------- */

static const char econfig_suffix[] = " (configuration error)";

/* Escapes s into dst: control bytes as \xHH, at most max bytes of s
 * (cut at a UTF-8 character boundary, then "..."). */
static const char *esc(char *dst, size_t cap, const char *s, size_t max) {
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

typedef struct {
  char b[CFG_QUOTE_MAX * 4 + 16];
} qbuf_t;

/* User text for a message, escaped and cut short. */
static const char *q(qbuf_t *qb, const char *s) {
  return esc(qb->b, sizeof qb->b, s, CFG_QUOTE_MAX);
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
static int perr(const char *file, unsigned line, unsigned col,
                const char *fmt, ...) MPX_PRINTF(4, 5);
static int perr(const char *file, unsigned line, unsigned col,
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
             esc(e, sizeof e, c->sets[col - 1], 100));
    errv(MPX_ECONFIG, prefix, fmt, ap);
  } else {
    perr_v(c->file, line, col, fmt, ap);
  }
  va_end(ap);
  return MPX_ECONFIG;
}

/* ---- the tree ------------------------------------------------------------- */

typedef enum { N_SCALAR, N_SEQ, N_MAP } ntype_t;

typedef struct node_s node_t;
struct node_s {
  ntype_t type;
  unsigned line, col;
  char *s;        /* scalar: its text (no NUL inside) */
  bool null;      /* scalar: plain "", "~", "null", "Null", "NULL" */
  node_t **kids;  /* list: items; mapping: key, value, key, value... */
  size_t n, cap;
};

static void node_free(node_t *n) {
  size_t i;
  if (n == NULL) return;
  for (i = 0; i < n->n; i++) node_free(n->kids[i]);
  free(n->kids);
  free(n->s);
  free(n);
}

typedef struct {
  const char *file;
  const unsigned char *data;
  size_t len;
  node_t *root;
  node_t *stack[MPX__CFG_MAX_DEPTH];
  unsigned depth;
  size_t nodes;
  unsigned docs;
} build_t;

/* Position of a byte offset (reader errors carry no mark): lines as
 * libyaml counts them (\n, \r\n, \r), columns in characters. */
static void offset_pos(const unsigned char *d, size_t len, size_t off,
                       unsigned *line, unsigned *col) {
  size_t i;
  unsigned l = 1, c = 1;
  if (off > len) off = len;
  for (i = 0; i < off; i++) {
    if (d[i] == '\n' || (d[i] == '\r' && (i + 1 >= len || d[i + 1] != '\n'))) {
      l++;
      c = 1;
    } else if (d[i] != '\r' && (d[i] & 0xc0) != 0x80) {
      c++;
    }
  }
  *line = l;
  *col = c;
}

static int yaml_fail(build_t *b, const yaml_parser_t *p) {
  const char *problem = p->problem ? p->problem : "unknown problem";
  unsigned line, col;
  switch (p->error) {
  case YAML_MEMORY_ERROR:
    return mpx__err(MPX_ENOMEM, "%s: out of memory reading YAML", b->file);
  case YAML_READER_ERROR: {
    size_t off = p->problem_offset;
    /* A bad trailing octet: point at its character's first byte. */
    if (strstr(problem, "trailing") != NULL && off > 0 && off <= b->len) {
      off--;
      while (off > 0 && (b->data[off] & 0xc0) == 0x80) off--;
    }
    offset_pos(b->data, b->len, off, &line, &col);
    if (p->problem_value != -1)
      return perr(b->file, line, col,
                  "invalid text: %s 0x%X (expected UTF-8 text without "
                  "control characters)", problem, (unsigned)p->problem_value);
    return perr(b->file, line, col,
                "invalid text: %s (expected UTF-8 text without control "
                "characters)", problem);
  }
  default:
    line = (unsigned)p->problem_mark.line + 1;
    col = (unsigned)p->problem_mark.column + 1;
    if (p->context != NULL)
      return perr(b->file, line, col, "YAML syntax error: %s (%s at %u:%u)",
                  problem, p->context, (unsigned)p->context_mark.line + 1,
                  (unsigned)p->context_mark.column + 1);
    return perr(b->file, line, col, "YAML syntax error: %s", problem);
  }
}

static const char *kind_name(ntype_t t) {
  return t == N_SEQ ? "a list" : t == N_MAP ? "a mapping" : "a value";
}

/* Adds n (owned, freed on error) under the innermost open collection. */
static int attach(build_t *b, node_t *n) {
  node_t *parent;
  qbuf_t qb;
  size_t i;
  if (b->depth == 0) {
    b->root = n;
    return 0;
  }
  parent = b->stack[b->depth - 1];
  if (parent->type == N_MAP && parent->n % 2 == 0) {
    if (n->type != N_SCALAR) {
      perr(b->file, n->line, n->col,
           "a key must be a plain name, not %s", kind_name(n->type));
      node_free(n);
      return MPX_ECONFIG;
    }
    for (i = 0; i < parent->n; i += 2) {
      const node_t *k = parent->kids[i];
      if (strcmp(k->s, n->s) == 0) {
        perr(b->file, n->line, n->col, "duplicate key '%s' (first at %u:%u)",
             q(&qb, n->s), k->line, k->col);
        node_free(n);
        return MPX_ECONFIG;
      }
    }
    if (parent->n / 2 >= MPX__CFG_MAX_ENTRIES) {
      perr(b->file, n->line, n->col, "more than %u keys in one mapping",
           MPX__CFG_MAX_ENTRIES);
      node_free(n);
      return MPX_ECONFIG;
    }
  } else if (parent->type == N_SEQ && parent->n >= MPX__CFG_MAX_ENTRIES) {
    perr(b->file, n->line, n->col, "more than %u items in one list",
         MPX__CFG_MAX_ENTRIES);
    node_free(n);
    return MPX_ECONFIG;
  }
  if (parent->n == parent->cap) {
    size_t cap = parent->cap ? parent->cap * 2 : 8;
    node_t **k = realloc(parent->kids, cap * sizeof *k);
    if (k == NULL) {
      node_free(n);
      return mpx__err(MPX_ENOMEM, "%s: out of memory", b->file);
    }
    parent->kids = k;
    parent->cap = cap;
  }
  parent->kids[parent->n++] = n;
  return 0;
}

static node_t *node_new(build_t *b, ntype_t t, const yaml_mark_t *m,
                        int *rc) {
  node_t *n;
  if (++b->nodes > MPX__CFG_MAX_NODES) {
    *rc = perr(b->file, (unsigned)m->line + 1, (unsigned)m->column + 1,
               "more than %u values in the file", MPX__CFG_MAX_NODES);
    return NULL;
  }
  n = calloc(1, sizeof *n);
  if (n == NULL) {
    *rc = mpx__err(MPX_ENOMEM, "%s: out of memory", b->file);
    return NULL;
  }
  n->type = t;
  n->line = (unsigned)m->line + 1;
  n->col = (unsigned)m->column + 1;
  return n;
}

/* Anchors, aliases and tags are refused: one meaning per text, and no
 * exponential expansion. */
static int check_props(build_t *b, const yaml_event_t *ev,
                       const yaml_char_t *anchor, const yaml_char_t *tag) {
  unsigned line = (unsigned)ev->start_mark.line + 1;
  unsigned col = (unsigned)ev->start_mark.column + 1;
  qbuf_t qb;
  if (anchor != NULL)
    return perr(b->file, line, col,
                "anchors (&%s) are not supported: write the value out",
                q(&qb, (const char *)anchor));
  if (tag != NULL)
    return perr(b->file, line, col,
                "tags (%s) are not supported: write a plain value",
                q(&qb, (const char *)tag));
  return 0;
}

static int on_scalar(build_t *b, const yaml_event_t *ev) {
  const char *v = (const char *)ev->data.scalar.value;
  size_t len = ev->data.scalar.length;
  node_t *n;
  int rc;
  if ((rc = check_props(b, ev, ev->data.scalar.anchor,
                        ev->data.scalar.tag)) != 0)
    return rc;
  if (memchr(v, '\0', len) != NULL)
    return perr(b->file, (unsigned)ev->start_mark.line + 1,
                (unsigned)ev->start_mark.column + 1,
                "NUL characters are not allowed in values");
  if ((n = node_new(b, N_SCALAR, &ev->start_mark, &rc)) == NULL) return rc;
  if ((n->s = malloc(len + 1)) == NULL) {
    free(n);
    return mpx__err(MPX_ENOMEM, "%s: out of memory", b->file);
  }
  memcpy(n->s, v, len);
  n->s[len] = '\0';
  n->null = ev->data.scalar.style == YAML_PLAIN_SCALAR_STYLE &&
            (len == 0 || strcmp(n->s, "~") == 0 ||
             strcmp(n->s, "null") == 0 || strcmp(n->s, "Null") == 0 ||
             strcmp(n->s, "NULL") == 0);
  return attach(b, n);
}

static int on_open(build_t *b, const yaml_event_t *ev, ntype_t t) {
  const yaml_char_t *anchor = t == N_SEQ ? ev->data.sequence_start.anchor
                                         : ev->data.mapping_start.anchor;
  const yaml_char_t *tag =
      t == N_SEQ ? ev->data.sequence_start.tag : ev->data.mapping_start.tag;
  node_t *n;
  int rc;
  if ((rc = check_props(b, ev, anchor, tag)) != 0) return rc;
  if (b->depth >= MPX__CFG_MAX_DEPTH)
    return perr(b->file, (unsigned)ev->start_mark.line + 1,
                (unsigned)ev->start_mark.column + 1,
                "more than %u nested lists and mappings", MPX__CFG_MAX_DEPTH);
  if ((n = node_new(b, t, &ev->start_mark, &rc)) == NULL) return rc;
  if ((rc = attach(b, n)) != 0) return rc;
  b->stack[b->depth++] = n;
  return 0;
}

/* 0 and *done at the end of the stream, or an error. */
static int on_event(build_t *b, const yaml_event_t *ev, bool *done) {
  qbuf_t qb;
  switch (ev->type) {
  case YAML_STREAM_END_EVENT:
    *done = true;
    return 0;
  case YAML_DOCUMENT_START_EVENT:
    if (b->docs++ > 0)
      return perr(b->file, (unsigned)ev->start_mark.line + 1,
                  (unsigned)ev->start_mark.column + 1,
                  "a second YAML document starts here: a pipeline file "
                  "holds one document");
    return 0;
  case YAML_ALIAS_EVENT:
    return perr(b->file, (unsigned)ev->start_mark.line + 1,
                (unsigned)ev->start_mark.column + 1,
                "aliases (*%s) are not supported: write the value out",
                q(&qb, (const char *)ev->data.alias.anchor));
  case YAML_SCALAR_EVENT:
    return on_scalar(b, ev);
  case YAML_SEQUENCE_START_EVENT:
    return on_open(b, ev, N_SEQ);
  case YAML_MAPPING_START_EVENT:
    return on_open(b, ev, N_MAP);
  case YAML_SEQUENCE_END_EVENT:
  case YAML_MAPPING_END_EVENT:
    if (b->depth > 0) b->depth--;
    return 0;
  default: /* stream start, document end, no event */
    return 0;
  }
}

static int build_tree(build_t *b) {
  yaml_parser_t p;
  yaml_event_t ev;
  bool done = false;
  int rc = 0;
  static const unsigned char empty[1];
  if (!yaml_parser_initialize(&p))
    return mpx__err(MPX_ENOMEM, "%s: out of memory", b->file);
  yaml_parser_set_input_string(&p, b->data ? b->data : empty, b->len);
  yaml_parser_set_encoding(&p, YAML_UTF8_ENCODING);
  while (!done && rc == 0) {
    if (!yaml_parser_parse(&p, &ev)) {
      rc = yaml_fail(b, &p);
      break;
    }
    rc = on_event(b, &ev, &done);
    yaml_event_delete(&ev);
  }
  yaml_parser_delete(&p);
  return rc;
}

/* ---- scalar syntaxes ------------------------------------------------------ */

static bool is_digit(char ch) { return ch >= '0' && ch <= '9'; }

/* Decimal, optional '+', '_' between digits, no leading zero. 0, -1 (not
 * such an integer) or -2 (above max). */
static int parse_uint(const char *s, unsigned long long max,
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
static bool name_ok(const char *s) {
  size_t n = 0;
  for (; s[n]; n++)
    if (!name_char(s[n])) return false;
  return n > 0 && n <= MPX__CFG_MAX_NAME;
}

static bool all_digits(const char *s) {
  for (; *s; s++)
    if (!is_digit(*s)) return false;
  return true;
}

/* A stage name: a name, not only digits (those are indexes in --set), not
 * "pipeline" (the --set prefix of the top-level keys). */
static bool stage_name_ok(const char *s) {
  return name_ok(s) && !all_digits(s) && strcmp(s, "pipeline") != 0;
}

/* A plugin or codec: a name, or a path with a '/'. */
static bool ref_ok(const char *s) {
  if (strchr(s, '/') != NULL) return strlen(s) <= CFG_MAX_PATH;
  return name_ok(s);
}

static bool text_ok(const char *s, size_t max) {
  size_t n = 0;
  for (; s[n]; n++)
    if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f) return false;
  return n > 0 && n <= max;
}

/* The default stage name of a plugin: its name, or for a path the file
 * name without its directory, an "mpx_task_" or "lib" prefix and anything
 * from the first '.', other characters made '_'. -1 when that is not a
 * valid stage name. */
static int derive_name(const char *plugin, char out[MPX__CFG_MAX_NAME + 1]) {
  const char *b = strrchr(plugin, '/');
  size_t n = 0;
  if (b == NULL) {
    if (!name_ok(plugin)) return -1;
    strcpy(out, plugin);
    return stage_name_ok(out) ? 0 : -1;
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
  return stage_name_ok(out) ? 0 : -1;
}

/* ---- values --------------------------------------------------------------- */

/* A value to check: a node's, or the text of a --set. */
typedef struct {
  ntype_t type;
  const char *s; /* scalar text */
  bool null;
} val_t;

static val_t node_val(const node_t *n) {
  val_t v = {n->type, n->s, n->null};
  return v;
}

static val_t text_val(const char *s) {
  val_t v = {N_SCALAR, s, false};
  return v;
}

/* "a list", "a mapping", "nothing" or "'text'". */
static const char *got(qbuf_t *qb, const val_t *v) {
  char e[sizeof qb->b];
  if (v->type != N_SCALAR) return kind_name(v->type);
  if (v->null) return "nothing";
  snprintf(qb->b, sizeof qb->b, "'%s'", esc(e, sizeof e, v->s, CFG_QUOTE_MAX));
  return qb->b;
}

/* A value's text when it is a non-null scalar, else NULL. */
static const char *scalar(const val_t *v) {
  return v->type == N_SCALAR && !v->null ? v->s : NULL;
}

typedef union {
  unsigned long long u;
  double d;
  bool b;
  const char *s;
  int e;
} parsed_t;

/* Checks an integer option: auto (when allowed, as 0), min..max. */
static int check_uint(const char *key, const val_t *v, bool allow_auto,
                      unsigned long long min, unsigned long long max,
                      const char *desc, parsed_t *out, char *why,
                      size_t cap) {
  const char *s = scalar(v);
  qbuf_t qb;
  int r = -1;
  if (s != NULL && allow_auto && strcmp(s, "auto") == 0) {
    out->u = 0;
    return 0;
  }
  if (s != NULL) r = parse_uint(s, max, &out->u);
  if (r == 0 && out->u >= min) return 0;
  if (r == -2)
    snprintf(why, cap, "'%s' must be at most %llu, got %s", key, max,
             got(&qb, v));
  else
    snprintf(why, cap, "'%s' must be %s, got %s", key, desc, got(&qb, v));
  return -1;
}

/* Seconds: above 0 (positive) or from 0, at most MPX__CFG_MAX_SECONDS. */
static int check_secs(const char *key, const val_t *v, bool positive,
                      parsed_t *out, char *why, size_t cap) {
  const char *s = scalar(v);
  qbuf_t qb;
  if (s != NULL && parse_number(s, &out->d) == 0 &&
      (positive ? out->d > 0 : out->d >= 0)) {
    if (out->d == 0) out->d = 0; /* not -0 */
    if (out->d <= MPX__CFG_MAX_SECONDS) return 0;
    snprintf(why, cap, "'%s' must be at most 1e9 seconds, got %s", key,
             got(&qb, v));
    return -1;
  }
  snprintf(why, cap, "'%s' must be a number of seconds%s, got %s", key,
           positive ? " above 0" : ", 0 or more", got(&qb, v));
  return -1;
}

static int check_enum(const char *key, const val_t *v,
                      const char *const *names, parsed_t *out, char *why,
                      size_t cap) {
  const char *s = scalar(v);
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
           got(&qb, v));
  return -1;
}

static const char *const opt_names[MPX__CFG_NOPTS + 1] = {
    "workers", "codec", "transport", "retries", "timeout", "ordered", "batch",
    NULL};

/* `-` is standard output for a sink's path and --stats-json, but dead
 * letters there would mix with the sink's items. */
#define DEAD_DASH                                                              \
  "'dead_letter' cannot be '-': standard output carries the sink's items; "  \
  "give a file path (/dev/stderr for standard error)"

int mpx__cfg_refuse_unused(const mpx__cfg_t *c, size_t i, unsigned used,
                           const char *what) {
  const mpx__cfg_stage_t *s = &c->stages[i];
  for (unsigned o = 0; o < MPX__CFG_NOPTS; o++)
    if ((s->opts.set & (1u << o)) && !(used & (1u << o)))
      return mpx__cfg_error_at(c, s->opts.at[o].line, s->opts.at[o].col,
                               "stage '%s': '%s' has no effect on %s", s->name,
                               opt_names[o], what);
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
static int check_opt(mpx__cfg_opt_t k, const val_t *v, parsed_t *out,
                     char *why, size_t cap) {
  const char *key = opt_names[k];
  qbuf_t qb;
  switch (k) {
  case MPX__CFG_WORKERS:
    return check_uint(key, v, true, 1, MPX__CFG_MAX_WORKERS,
                      "a positive integer or auto", out, why, cap);
  case MPX__CFG_CODEC:
    if (scalar(v) != NULL && ref_ok(v->s)) return out->s = v->s, 0;
    snprintf(why, cap, "'codec' must be a codec name (up to 64 letters, "
             "digits, '_' or '-') or a path containing '/', got %s",
             got(&qb, v));
    return -1;
  case MPX__CFG_TRANSPORT:
    return check_enum(key, v, transport_names, out, why, cap);
  case MPX__CFG_RETRIES:
    return check_uint(key, v, false, 0, MPX__CFG_MAX_RETRIES,
                      "an integer from 0 to 1000", out, why, cap);
  case MPX__CFG_TIMEOUT:
    return check_secs(key, v, false, out, why, cap);
  case MPX__CFG_ORDERED:
    if (scalar(v) != NULL && parse_bool(v->s, &out->b) == 0) return 0;
    snprintf(why, cap, "'ordered' must be true or false, got %s",
             got(&qb, v));
    return -1;
  case MPX__CFG_BATCH:
    return check_uint(key, v, true, 1, MPX__CFG_MAX_BATCH,
                      "a positive integer or auto", out, why, cap);
  default:
    snprintf(why, cap, "unknown option");
    return -1;
  }
}

/* Stores a checked option. 0 or MPX_ENOMEM (o unchanged). */
static int store_opt(mpx__cfg_opts_t *o, mpx__cfg_opt_t k, const parsed_t *p,
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

static int opt_index(const char *key) {
  int i;
  for (i = 0; i < MPX__CFG_NOPTS; i++)
    if (strcmp(key, opt_names[i]) == 0) return i;
  return -1;
}

/* Supervisor keys. */
enum { SUP_RESTART, SUP_MAX_RESTARTS, SUP_PERIOD, SUP_BACKOFF_MIN,
       SUP_BACKOFF_MAX, SUP_N };
static const char *const sup_names[SUP_N + 1] = {
    "restart", "max_restarts", "period", "backoff_min", "backoff_max", NULL};

static int check_sup(int k, const val_t *v, parsed_t *out, char *why,
                     size_t cap) {
  switch (k) {
  case SUP_RESTART:
    return check_enum("restart", v, restart_names, out, why, cap);
  case SUP_MAX_RESTARTS:
    return check_uint("max_restarts", v, false, 0, MPX__CFG_MAX_RESTARTS,
                      "an integer from 0 to 1000000", out, why, cap);
  case SUP_PERIOD:
    return check_secs("period", v, true, out, why, cap);
  default:
    return check_secs(sup_names[k], v, false, out, why, cap);
  }
}

/* Applies a checked supervisor value and keeps backoff_min <= backoff_max:
 * a backoff_max that was not given follows backoff_min up; one that was
 * given and is below backoff_min is an error (why). *given: the keys given
 * so far (bits), updated. */
static int apply_sup(mpx__cfg_t *c, unsigned *given, int k, const parsed_t *p,
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
static int resolve(mpx__cfg_t *c) {
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

/* ---- checking the tree ---------------------------------------------------- */

typedef struct {
  mpx__cfg_t *c;
  const char *file;
  unsigned sup_given;
} check_t;

static const char *const top_keys[] = {"name",           "defaults",
                                       "stages",         "queue_capacity",
                                       "supervisor",     "dead_letter",
                                       NULL};
static const char *const stage_keys[] = {
    "plugin",  "params",  "workers", "codec", "transport",
    "retries", "timeout", "ordered", "batch", "name",      NULL};

static int key_index(const char *const *keys, const char *key) {
  int i;
  for (i = 0; keys[i] != NULL; i++)
    if (strcmp(keys[i], key) == 0) return i;
  return -1;
}

static void key_list(char *out, size_t cap, const char *const *keys) {
  size_t i;
  out[0] = '\0';
  for (i = 0; keys[i] != NULL; i++) {
    if (i > 0) strncat(out, ", ", cap - strlen(out) - 1);
    strncat(out, keys[i], cap - strlen(out) - 1);
  }
}

static int unknown_key(check_t *x, const node_t *k, const char *where,
                       const char *const *keys) {
  char list[256];
  qbuf_t qb;
  key_list(list, sizeof list, keys);
  return perr(x->file, k->line, k->col,
              "unknown key '%s' %s (expected one of: %s)", q(&qb, k->s),
              where, list);
}

/* A value error at node n: "FILE:L:C: why". */
static int verr(check_t *x, const node_t *n, const char *why) {
  return perr(x->file, n->line, n->col, "%s", why);
}

static mpx__cfg_pos_t pos_of(const node_t *n) {
  mpx__cfg_pos_t p = {n->line, n->col};
  return p;
}

/* A mapping or nothing (an empty section). */
static int want_map(check_t *x, const node_t *v, const char *key,
                    const char *what) {
  qbuf_t qb;
  val_t vv = node_val(v);
  if (v->type == N_MAP || (v->type == N_SCALAR && v->null)) return 0;
  return perr(x->file, v->line, v->col, "'%s' must be a mapping of %s, got %s",
              key, what, got(&qb, &vv));
}

static int do_opts_entry(check_t *x, mpx__cfg_opts_t *o, int k,
                         const node_t *v) {
  char why[320];
  parsed_t p;
  val_t vv = node_val(v);
  if (check_opt((mpx__cfg_opt_t)k, &vv, &p, why, sizeof why) != 0)
    return verr(x, v, why);
  if (store_opt(o, (mpx__cfg_opt_t)k, &p, pos_of(v)) != 0)
    return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  return 0;
}

static int do_defaults(check_t *x, const node_t *m) {
  size_t i;
  int rc, k;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    if ((k = opt_index(key->s)) < 0)
      return unknown_key(x, key, "in defaults", opt_names);
    if ((rc = do_opts_entry(x, &x->c->defaults, k, v)) != 0) return rc;
  }
  return 0;
}

static int do_supervisor(check_t *x, const node_t *m) {
  char why[320];
  parsed_t p;
  size_t i;
  int k;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = node_val(v);
    if ((k = key_index(sup_names, key->s)) < 0)
      return unknown_key(x, key, "in supervisor", sup_names);
    if (check_sup(k, &vv, &p, why, sizeof why) != 0 ||
        apply_sup(x->c, &x->sup_given, k, &p, why, sizeof why) != 0)
      return verr(x, v, why);
  }
  return 0;
}

static bool param_name_ok(const char *s) { return name_ok(s); }

static const char param_name_desc[] =
    "up to 64 letters, digits, '_' or '-'";

/* Adds or replaces a param (copies key and value). 0 or MPX_ENOMEM. */
static int put_param(mpx__cfg_stage_t *st, const char *key, const char *value,
                     mpx__cfg_pos_t key_at, mpx__cfg_pos_t at) {
  size_t i;
  char *v = strdup(value), *k = NULL;
  mpx__cfg_kv_t *kv;
  if (v == NULL) return MPX_ENOMEM;
  for (i = 0; i < st->n_params; i++) {
    if (strcmp(st->params[i].key, key) == 0) {
      free(st->params[i].value);
      st->params[i].value = v;
      st->params[i].line = at.line;
      st->params[i].col = at.col;
      return 0;
    }
  }
  if ((k = strdup(key)) == NULL ||
      (kv = realloc(st->params, (st->n_params + 1) * sizeof *kv)) == NULL) {
    free(k);
    free(v);
    return MPX_ENOMEM;
  }
  st->params = kv;
  kv += st->n_params++;
  kv->key = k;
  kv->value = v;
  kv->line = at.line;
  kv->col = at.col;
  kv->key_line = key_at.line;
  kv->key_col = key_at.col;
  return 0;
}

static int do_params(check_t *x, mpx__cfg_stage_t *st, const node_t *m) {
  qbuf_t qa, qb;
  size_t i;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = node_val(v);
    if (!param_name_ok(key->s))
      return perr(x->file, key->line, key->col,
                  "parameter name '%s' must be %s", q(&qa, key->s),
                  param_name_desc);
    if (v->type == N_SCALAR && v->null)
      return perr(x->file, v->line, v->col,
                  "parameter '%s' has no value (write '' for an empty text)",
                  key->s);
    if (v->type != N_SCALAR)
      return perr(x->file, v->line, v->col,
                  "parameter '%s' must be a single value (text, number or "
                  "true/false), got %s", key->s, got(&qb, &vv));
    if (put_param(st, key->s, v->s, pos_of(key), pos_of(v)) != 0)
      return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  }
  return 0;
}

static const char plugin_desc[] =
    "a plugin name (up to 64 letters, digits, '_' or '-') or a path "
    "containing '/'";
static const char stage_name_desc[] =
    "up to 64 letters, digits, '_' or '-', not only digits, not 'pipeline'";

/* One stage mapping. label: how messages name it. named: whether it has
 * its own name (at name_at). */
static int do_stage(check_t *x, mpx__cfg_stage_t *st, size_t idx,
                    const node_t *m, bool *named, mpx__cfg_pos_t *name_at) {
  char label[128], base[MPX__CFG_MAX_NAME + 1];
  qbuf_t qb;
  size_t i;
  int rc, k;
  val_t mv = node_val(m);
  st->line = m->line;
  st->col = m->col;
  if (m->type != N_MAP)
    return perr(x->file, m->line, m->col,
                "stages[%zu] must be a mapping with a 'plugin' key, got %s",
                idx, got(&qb, &mv));
  /* A label for messages: its name, else its plugin's. */
  snprintf(label, sizeof label, "stages[%zu]", idx);
  for (i = 0; i < m->n; i += 2) {
    const node_t *v = m->kids[i + 1];
    if (v->type != N_SCALAR || v->null) continue;
    if (strcmp(m->kids[i]->s, "name") == 0 && stage_name_ok(v->s)) {
      snprintf(label, sizeof label, "stage '%s'", v->s);
      break;
    }
    if (strcmp(m->kids[i]->s, "plugin") == 0 && derive_name(v->s, base) == 0)
      snprintf(label, sizeof label, "stage '%s'", base);
  }
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = node_val(v);
    k = key_index(stage_keys, key->s);
    if (k < 0) {
      char where[160];
      snprintf(where, sizeof where, "in %s", label);
      return unknown_key(x, key, where, stage_keys);
    }
    if (strcmp(key->s, "name") == 0) {
      if (scalar(&vv) == NULL || !stage_name_ok(v->s))
        return perr(x->file, v->line, v->col, "'name' must be %s, got %s",
                    stage_name_desc, got(&qb, &vv));
      if ((st->name = strdup(v->s)) == NULL) goto nomem;
      *named = true;
      *name_at = pos_of(v);
    } else if (strcmp(key->s, "plugin") == 0) {
      if (scalar(&vv) == NULL || !ref_ok(v->s))
        return perr(x->file, v->line, v->col, "'plugin' must be %s, got %s",
                    plugin_desc, got(&qb, &vv));
      if ((st->plugin = strdup(v->s)) == NULL) goto nomem;
      st->plugin_line = v->line;
      st->plugin_col = v->col;
    } else if (strcmp(key->s, "params") == 0) {
      if ((rc = want_map(x, v, "params", "parameter names to values")) != 0 ||
          (rc = do_params(x, st, v)) != 0)
        return rc;
    } else {
      if ((rc = do_opts_entry(x, &st->opts, opt_index(key->s), v)) != 0)
        return rc;
    }
  }
  if (st->plugin == NULL)
    return perr(x->file, m->line, m->col,
                "missing key 'plugin' in %s (expected the plugin to run: a "
                "name or a path)", label);
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
}

/* Names the stages that have none and checks that names are unique. */
static int name_stages(check_t *x, const bool *named,
                       const mpx__cfg_pos_t *name_at) {
  mpx__cfg_t *c = x->c;
  char base[MPX__CFG_MAX_NAME + 1], other[MPX__CFG_MAX_NAME + 1];
  qbuf_t qb;
  size_t i, j;
  for (i = 0; i < c->n_stages; i++) {
    mpx__cfg_stage_t *st = &c->stages[i];
    size_t same = 0, nth = 0;
    if (named[i]) continue;
    if (derive_name(st->plugin, base) != 0)
      return perr(x->file, st->plugin_line, st->plugin_col,
                  "cannot make a stage name from plugin '%s': give the stage "
                  "a 'name'", q(&qb, st->plugin));
    for (j = 0; j < c->n_stages; j++) {
      if (named[j] || derive_name(c->stages[j].plugin, other) != 0 ||
          strcmp(base, other) != 0)
        continue;
      same++;
      if (j < i) nth++;
    }
    if (same > 1) {
      char buf[MPX__CFG_MAX_NAME + 32];
      snprintf(buf, sizeof buf, "%s-%zu", base, nth + 1);
      st->name = strdup(buf);
    } else {
      st->name = strdup(base);
    }
    if (st->name == NULL)
      return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  }
  for (i = 1; i < c->n_stages; i++) {
    for (j = 0; j < i; j++) {
      if (strcmp(c->stages[i].name, c->stages[j].name) != 0) continue;
      return perr(x->file, name_at[i].line, name_at[i].col,
                  "two stages are named '%s' (the other at %u:%u): give one "
                  "a different 'name'", c->stages[i].name, name_at[j].line,
                  name_at[j].col);
    }
  }
  return 0;
}

static int do_stages(check_t *x, const node_t *s) {
  mpx__cfg_t *c = x->c;
  bool *named = NULL;
  mpx__cfg_pos_t *name_at = NULL;
  qbuf_t qb;
  val_t sv = node_val(s);
  size_t i;
  int rc = 0;
  if (s->type != N_SEQ)
    return perr(x->file, s->line, s->col,
                "'stages' must be a list of stages, got %s", got(&qb, &sv));
  if (s->n == 0)
    return perr(x->file, s->line, s->col,
                "'stages' is empty: expected at least one stage");
  c->stages = calloc(s->n, sizeof *c->stages);
  named = calloc(s->n, sizeof *named);
  name_at = calloc(s->n, sizeof *name_at);
  if (c->stages == NULL || named == NULL || name_at == NULL) {
    rc = mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
    goto out;
  }
  c->n_stages = s->n;
  for (i = 0; i < s->n && rc == 0; i++) {
    const node_t *m = s->kids[i];
    name_at[i].line = m->line;
    name_at[i].col = m->col;
    rc = do_stage(x, &c->stages[i], i, m, &named[i], &name_at[i]);
  }
  if (rc == 0) rc = name_stages(x, named, name_at);
out:
  free(named);
  free(name_at);
  return rc;
}

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

static int check_top(check_t *x, const node_t *root) {
  mpx__cfg_t *c = x->c;
  const node_t *stages = NULL;
  qbuf_t qb;
  size_t i;
  int rc, k;
  if (root == NULL || (root->type == N_SCALAR && root->null))
    return perr(x->file, 1, 1,
                "empty pipeline: expected a mapping with a 'stages' list");
  if (root->type != N_MAP) {
    val_t rv = node_val(root);
    return perr(x->file, root->line, root->col,
                "expected a mapping with a 'stages' list at the top level, "
                "got %s", got(&qb, &rv));
  }
  for (i = 0; i < root->n; i += 2) {
    const node_t *key = root->kids[i], *v = root->kids[i + 1];
    val_t vv = node_val(v);
    char why[320];
    parsed_t p;
    if ((k = key_index(top_keys, key->s)) < 0)
      return unknown_key(x, key, "at the top level", top_keys);
    switch (k) {
    case 0: /* name */
      if (scalar(&vv) == NULL || !text_ok(v->s, CFG_MAX_PIPELINE_NAME))
        return perr(x->file, v->line, v->col,
                    "'name' must be a text of 1 to 128 bytes without control "
                    "characters, got %s", got(&qb, &vv));
      free(c->name);
      if ((c->name = strdup(v->s)) == NULL) goto nomem;
      break;
    case 1: /* defaults */
      if ((rc = want_map(x, v, "defaults", "stage options")) != 0 ||
          (rc = do_defaults(x, v)) != 0)
        return rc;
      break;
    case 2: /* stages: after the defaults, wherever they are */
      stages = v;
      break;
    case 3: /* queue_capacity */
      if (check_uint("queue_capacity", &vv, false, 1, MPX__CFG_MAX_QUEUE,
                     "a positive integer", &p, why, sizeof why) != 0)
        return verr(x, v, why);
      c->queue_capacity = (size_t)p.u;
      break;
    case 4: /* supervisor */
      if ((rc = want_map(x, v, "supervisor", "restart settings")) != 0 ||
          (rc = do_supervisor(x, v)) != 0)
        return rc;
      break;
    case 5: /* dead_letter */
      if (scalar(&vv) == NULL || !text_ok(v->s, CFG_MAX_PATH))
        return perr(x->file, v->line, v->col,
                    "'dead_letter' must be a file path, got %s",
                    got(&qb, &vv));
      if (strcmp(v->s, "-") == 0)
        return perr(x->file, v->line, v->col, "%s", DEAD_DASH);
      if ((c->dead_letter = strdup(v->s)) == NULL) goto nomem;
      c->dead_letter_at = pos_of(v);
      break;
    }
  }
  if (stages == NULL)
    return perr(x->file, root->line, root->col,
                "missing key 'stages' at the top level (expected a list of "
                "stages)");
  if ((rc = do_stages(x, stages)) != 0) return rc;
  if (resolve(c) != 0) goto nomem;
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
}

/* ---- public --------------------------------------------------------------- */

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
  build_t b;
  check_t x;
  int rc;
  *out = NULL;
  if (name == NULL) name = "<config>";
  if (len > MPX__CFG_MAX_BYTES)
    return perr(name, 0, 0,
                "%zu bytes: larger than %u bytes (1 MiB), the limit for a "
                "pipeline file", len, MPX__CFG_MAX_BYTES);
  memset(&b, 0, sizeof b);
  b.file = name;
  b.data = data;
  b.len = len;
  rc = build_tree(&b);
  if (rc == 0) {
    memset(&x, 0, sizeof x);
    x.file = name;
    if ((x.c = cfg_new(name)) == NULL) {
      rc = mpx__err(MPX_ENOMEM, "%s: out of memory", name);
    } else if ((rc = check_top(&x, b.root)) != 0) {
      mpx__cfg_free(x.c);
    } else {
      x.c->sup_given = x.sup_given;
      *out = x.c;
    }
  }
  node_free(b.root);
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
      return perr(path, 0, 0, "larger than %u bytes (1 MiB), the limit for "
                  "a pipeline file", MPX__CFG_MAX_BYTES);
    }
  }
  close(fd);
  rc = mpx__cfg_parse_mem(out, path, buf, len);
  free(buf);
  return rc;
}

/* ---- --set ---------------------------------------------------------------- */

static int set_stage(mpx__cfg_t *c, unsigned idx, mpx__cfg_stage_t *st,
                     const char *key, const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  val_t v = text_val(value);
  char why[320];
  parsed_t p;
  qbuf_t qb;
  int k;
  if (strcmp(key, "name") == 0)
    return mpx__cfg_error_at(c, 0, idx, "a stage's name cannot be changed "
                             "with --set");
  if (strcmp(key, "plugin") == 0) {
    char *s;
    if (!ref_ok(value))
      return mpx__cfg_error_at(c, 0, idx, "'plugin' must be %s, got %s",
                               plugin_desc, got(&qb, &v));
    if ((s = strdup(value)) == NULL) goto nomem;
    free(st->plugin);
    st->plugin = s;
    st->plugin_line = 0;
    st->plugin_col = idx;
    return 0;
  }
  if ((k = opt_index(key)) >= 0) {
    if (check_opt((mpx__cfg_opt_t)k, &v, &p, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    if (store_opt(&st->opts, (mpx__cfg_opt_t)k, &p, at) != 0) goto nomem;
    return 0;
  }
  if (strcmp(key, "params") == 0)
    return mpx__cfg_error_at(c, 0, idx, "expected params.NAME=VALUE");
  if (strncmp(key, "params.", 7) == 0) key += 7;
  if (!param_name_ok(key))
    return mpx__cfg_error_at(c, 0, idx,
                             "unknown key '%s' for stage '%s' (expected a "
                             "stage option, plugin, params.NAME or a "
                             "parameter name: %s)", q(&qb, key), st->name,
                             param_name_desc);
  if (put_param(st, key, value, at, at) != 0) goto nomem;
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "--set: out of memory");
}

static int set_pipeline(mpx__cfg_t *c, unsigned idx, const char *key,
                        const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  val_t v = text_val(value);
  char why[320], list[256];
  parsed_t p;
  qbuf_t qb;
  int k;
  if (strcmp(key, "name") == 0) {
    char *s;
    if (!text_ok(value, CFG_MAX_PIPELINE_NAME))
      return mpx__cfg_error_at(c, 0, idx, "'name' must be a text of 1 to 128 "
                               "bytes without control characters, got %s",
                               got(&qb, &v));
    if ((s = strdup(value)) == NULL) goto nomem;
    free(c->name);
    c->name = s;
    return 0;
  }
  if (strcmp(key, "queue_capacity") == 0) {
    if (check_uint("queue_capacity", &v, false, 1, MPX__CFG_MAX_QUEUE,
                   "a positive integer", &p, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    c->queue_capacity = (size_t)p.u;
    return 0;
  }
  if (strcmp(key, "dead_letter") == 0) {
    char *s;
    if (!text_ok(value, CFG_MAX_PATH))
      return mpx__cfg_error_at(c, 0, idx, "'dead_letter' must be a file path, "
                               "got %s", got(&qb, &v));
    if (strcmp(value, "-") == 0) return mpx__cfg_error_at(c, 0, idx, "%s", DEAD_DASH);
    if ((s = strdup(value)) == NULL) goto nomem;
    free(c->dead_letter);
    c->dead_letter = s;
    c->dead_letter_at = at;
    return 0;
  }
  if (strcmp(key, "stages") == 0 || strncmp(key, "stages.", 7) == 0)
    return mpx__cfg_error_at(c, 0, idx, "the stage list cannot be changed "
                             "with --set (set STAGE.KEY=VALUE)");
  if (strncmp(key, "defaults.", 9) == 0) {
    mpx__cfg_opts_t saved = c->defaults;
    if ((k = opt_index(key + 9)) < 0) {
      key_list(list, sizeof list, opt_names);
      return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' in defaults "
                               "(expected one of: %s)", q(&qb, key + 9), list);
    }
    if (check_opt((mpx__cfg_opt_t)k, &v, &p, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    /* store_opt frees the old codec only after copying the new one; keep
     * the old text for an undo should resolve fail. */
    if (k == MPX__CFG_CODEC) {
      if ((saved.codec = strdup(c->defaults.codec)) == NULL) goto nomem;
    }
    if (store_opt(&c->defaults, (mpx__cfg_opt_t)k, &p, at) != 0) {
      if (k == MPX__CFG_CODEC) free(saved.codec);
      goto nomem;
    }
    if (resolve(c) != 0) {
      if (k == MPX__CFG_CODEC) {
        free(c->defaults.codec);
      }
      c->defaults = saved;
      goto nomem;
    }
    if (k == MPX__CFG_CODEC) free(saved.codec);
    return 0;
  }
  if (strncmp(key, "supervisor.", 11) == 0) {
    if ((k = key_index(sup_names, key + 11)) < 0) {
      key_list(list, sizeof list, sup_names);
      return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' in supervisor "
                               "(expected one of: %s)", q(&qb, key + 11),
                               list);
    }
    if (check_sup(k, &v, &p, why, sizeof why) != 0 ||
        apply_sup(c, &c->sup_given, k, &p, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    return 0;
  }
  return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' (expected "
                           "pipeline.name, pipeline.queue_capacity, "
                           "pipeline.dead_letter, pipeline.defaults.OPTION or "
                           "pipeline.supervisor.KEY)", q(&qb, key));
nomem:
  return mpx__err(MPX_ENOMEM, "--set: out of memory");
}

static int find_stage(mpx__cfg_t *c, unsigned idx, const char *name,
                      mpx__cfg_stage_t **out) {
  unsigned long long i;
  char list[200];
  qbuf_t qb;
  size_t n;
  for (i = 0; i < c->n_stages; i++) {
    if (strcmp(c->stages[i].name, name) == 0) {
      *out = &c->stages[i];
      return 0;
    }
  }
  if (all_digits(name) && *name != '\0') {
    if (parse_uint(name, SIZE_MAX, &i) == 0 && i < c->n_stages) {
      *out = &c->stages[i];
      return 0;
    }
    return mpx__cfg_error_at(c, 0, idx, "no stage %s (stages are numbered "
                             "from 0 to %zu)", q(&qb, name), c->n_stages - 1);
  }
  list[0] = '\0';
  for (i = 0; i < c->n_stages; i++) {
    n = strlen(list);
    if (n + strlen(c->stages[i].name) + 8 >= sizeof list) {
      strncat(list, ", ...", sizeof list - n - 1);
      break;
    }
    snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
             c->stages[i].name);
  }
  return mpx__cfg_error_at(c, 0, idx, "no stage named '%s' (the stages: %s)",
                           q(&qb, name), list);
}

static int set_apply(mpx__cfg_t *c, unsigned idx, const char *a) {
  const char *eq = strchr(a, '='), *dot;
  mpx__cfg_stage_t *st;
  char *path;
  int rc;
  if (eq == NULL || eq == a || (dot = memchr(a, '.', (size_t)(eq - a))) ==
                                   NULL ||
      dot == a || dot + 1 == eq)
    return mpx__cfg_error_at(c, 0, idx, "expected STAGE.KEY=VALUE or "
                             "pipeline.KEY=VALUE");
  if ((path = strndup(a, (size_t)(eq - a))) == NULL)
    return mpx__err(MPX_ENOMEM, "--set: out of memory");
  path[dot - a] = '\0';
  if (strcmp(path, "pipeline") == 0) {
    rc = set_pipeline(c, idx, path + (dot - a) + 1, eq + 1);
  } else if ((rc = find_stage(c, idx, path, &st)) == 0) {
    rc = set_stage(c, idx, st, path + (dot - a) + 1, eq + 1);
  }
  free(path);
  return rc;
}

int mpx__cfg_set(mpx__cfg_t *c, const char *assignment) {
  char **sets, *a;
  int rc;
  if (c->n_sets >= MPX__CFG_MAX_SETS)
    return mpx__err(MPX_ECONFIG, "--set: more than %u overrides",
                    MPX__CFG_MAX_SETS);
  if ((a = strdup(assignment)) == NULL ||
      (sets = realloc(c->sets, (c->n_sets + 1) * sizeof *sets)) == NULL) {
    free(a);
    return mpx__err(MPX_ENOMEM, "--set: out of memory");
  }
  c->sets = sets;
  c->sets[c->n_sets++] = a;
  rc = set_apply(c, (unsigned)c->n_sets, a);
  if (rc != 0) free(c->sets[--c->n_sets]);
  return rc;
}
