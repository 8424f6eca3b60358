/* Pipeline config, step 1 (see config.c): libyaml's event stream becomes
 * a small tree of scalars, lists and mappings. Refused on the way:
 * anchors, aliases (no billion laughs), tags, a second document, duplicate
 * keys, keys that are not scalars, NUL characters, and anything over the
 * limits of config.h. libyaml's own errors (syntax, invalid UTF-8) keep
 * its position. */
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

/* ---- the tree ------------------------------------------------------------- */


void mpx__cfg_node_free(node_t *n) {
  size_t i;
  if (n == NULL) return;
  for (i = 0; i < n->n; i++) mpx__cfg_node_free(n->kids[i]);
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
      return mpx__cfg_perr(b->file, line, col,
                  "invalid text: %s 0x%X (expected UTF-8 text without "
                  "control characters)", problem, (unsigned)p->problem_value);
    return mpx__cfg_perr(b->file, line, col,
                "invalid text: %s (expected UTF-8 text without control "
                "characters)", problem);
  }
  default:
    line = (unsigned)p->problem_mark.line + 1;
    col = (unsigned)p->problem_mark.column + 1;
    if (p->context != NULL)
      return mpx__cfg_perr(b->file, line, col, "YAML syntax error: %s (%s at %u:%u)",
                  problem, p->context, (unsigned)p->context_mark.line + 1,
                  (unsigned)p->context_mark.column + 1);
    return mpx__cfg_perr(b->file, line, col, "YAML syntax error: %s", problem);
  }
}

const char *mpx__cfg_kind_name(ntype_t t) {
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
      mpx__cfg_perr(b->file, n->line, n->col,
           "a key must be a plain name, not %s", mpx__cfg_kind_name(n->type));
      mpx__cfg_node_free(n);
      return MPX_ECONFIG;
    }
    for (i = 0; i < parent->n; i += 2) {
      const node_t *k = parent->kids[i];
      if (strcmp(k->s, n->s) == 0) {
        mpx__cfg_perr(b->file, n->line, n->col, "duplicate key '%s' (first at %u:%u)",
             mpx__cfg_q(&qb, n->s), k->line, k->col);
        mpx__cfg_node_free(n);
        return MPX_ECONFIG;
      }
    }
    if (parent->n / 2 >= MPX__CFG_MAX_ENTRIES) {
      mpx__cfg_perr(b->file, n->line, n->col, "more than %u keys in one mapping",
           MPX__CFG_MAX_ENTRIES);
      mpx__cfg_node_free(n);
      return MPX_ECONFIG;
    }
  } else if (parent->type == N_SEQ && parent->n >= MPX__CFG_MAX_ENTRIES) {
    mpx__cfg_perr(b->file, n->line, n->col, "more than %u items in one list",
         MPX__CFG_MAX_ENTRIES);
    mpx__cfg_node_free(n);
    return MPX_ECONFIG;
  }
  if (parent->n == parent->cap) {
    size_t cap = parent->cap ? parent->cap * 2 : 8;
    node_t **k = realloc(parent->kids, cap * sizeof *k);
    if (k == NULL) {
      mpx__cfg_node_free(n);
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
    *rc = mpx__cfg_perr(b->file, (unsigned)m->line + 1, (unsigned)m->column + 1,
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
    return mpx__cfg_perr(b->file, line, col,
                "anchors (&%s) are not supported: write the value out",
                mpx__cfg_q(&qb, (const char *)anchor));
  if (tag != NULL)
    return mpx__cfg_perr(b->file, line, col,
                "tags (%s) are not supported: write a plain value",
                mpx__cfg_q(&qb, (const char *)tag));
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
    return mpx__cfg_perr(b->file, (unsigned)ev->start_mark.line + 1,
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
    return mpx__cfg_perr(b->file, (unsigned)ev->start_mark.line + 1,
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
      return mpx__cfg_perr(b->file, (unsigned)ev->start_mark.line + 1,
                  (unsigned)ev->start_mark.column + 1,
                  "a second YAML document starts here: a pipeline file "
                  "holds one document");
    return 0;
  case YAML_ALIAS_EVENT:
    return mpx__cfg_perr(b->file, (unsigned)ev->start_mark.line + 1,
                (unsigned)ev->start_mark.column + 1,
                "aliases (*%s) are not supported: write the value out",
                mpx__cfg_q(&qb, (const char *)ev->data.alias.anchor));
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

int mpx__cfg_tree(const char *file, const void *data, size_t len,
                  node_t **root) {
  build_t b;
  int rc;
  memset(&b, 0, sizeof b);
  b.file = file;
  b.data = data;
  b.len = len;
  rc = build_tree(&b);
  *root = b.root;
  return rc;
}
