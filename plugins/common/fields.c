/* Field extraction from CSV and JSON lines: see fields.h. CSV columns are
 * found in one pass over the item, up to the last column asked for; each
 * JSON path is walked from the start of the item, skipping what it does
 * not need. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fields.h"

#define JSON_MAX_DEPTH 256 /* nesting skipped over, so a hostile item cannot
                              exhaust the stack */

typedef struct {
  char *key; /* NULL: an array index */
  size_t klen;
  uint64_t index;
} seg_t;

typedef struct {
  unsigned col; /* CSV: 1-based */
  seg_t *segs;  /* JSON: the path; none for "." */
  size_t nsegs;
  char *scratch; /* unescaped values */
  size_t cap;
} spec_t;

typedef struct {
  size_t start, len;
  bool doubled; /* quoted, with "" inside: needs unquoting */
} span_t;

struct fields_s {
  bool json;
  char sep;
  spec_t *specs;
  size_t n;
  unsigned maxcol;
  span_t *spans;
  char err[200];
};

/* ---- specs ------------------------------------------------------------------ */

static int parse_col(const char *s, unsigned *col) {
  uint64_t v = 0;
  if (*s == '\0') return -1;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    v = v * 10 + (uint64_t)(*s - '0');
    if (v > 65536) return -1;
  }
  if (v == 0) return -1;
  *col = (unsigned)v;
  return 0;
}

static int add_seg(spec_t *sp, const char *key, size_t klen, uint64_t index) {
  seg_t *g = realloc(sp->segs, (sp->nsegs + 1) * sizeof *g);
  if (g == NULL) return -2;
  sp->segs = g;
  g[sp->nsegs] = (seg_t){NULL, 0, index};
  if (key != NULL) {
    if ((g[sp->nsegs].key = malloc(klen + 1)) == NULL) return -2;
    memcpy(g[sp->nsegs].key, key, klen);
    g[sp->nsegs].key[klen] = '\0';
    g[sp->nsegs].klen = klen;
  }
  sp->nsegs++;
  return 0;
}

/* ".a.b[2]" into segments; "." alone is the root. */
static int parse_path(spec_t *sp, const char *s, char *err, size_t errlen) {
  const char *p = s + 1; /* after the leading '.' */
  int rc;
  if (*p == '\0') return 0;
  if (*p != '[') p = s; /* ".a": read the '.' below */
  while (*p) {
    if (*p == '.') {
      const char *k = ++p;
      while (*p && *p != '.' && *p != '[') p++;
      if (p == k) {
        snprintf(err, errlen, "bad JSON path '%s': an empty key", s);
        return -1;
      }
      if ((rc = add_seg(sp, k, (size_t)(p - k), 0)) != 0) return rc;
    } else if (*p == '[') {
      uint64_t v = 0;
      const char *d = ++p;
      while (*p >= '0' && *p <= '9' && v < ((uint64_t)1 << 40))
        v = v * 10 + (uint64_t)(*p++ - '0');
      if (p == d || *p != ']') {
        snprintf(err, errlen, "bad JSON path '%s': want [N] with N a number", s);
        return -1;
      }
      p++;
      if ((rc = add_seg(sp, NULL, 0, v)) != 0) return rc;
    } else {
      snprintf(err, errlen, "bad JSON path '%s': want .KEY or [N] at '%s'", s, p);
      return -1;
    }
  }
  return 0;
}

void fields_free(fields_t *f) {
  if (f == NULL) return;
  for (size_t i = 0; i < f->n; i++) {
    for (size_t j = 0; j < f->specs[i].nsegs; j++) free(f->specs[i].segs[j].key);
    free(f->specs[i].segs);
    free(f->specs[i].scratch);
  }
  free(f->specs);
  free(f->spans);
  free(f);
}

static int pick_format(fields_t *f, const char *const *specs, size_t n,
                       const char *format, char *err, size_t errlen) {
  bool json = specs[0][0] == '.';
  for (size_t i = 1; i < n; i++)
    if ((specs[i][0] == '.') != json) {
      snprintf(err, errlen, "fields '%s' and '%s': all CSV columns or all JSON "
               "paths, not both", specs[0], specs[i]);
      return -1;
    }
  if (strcmp(format, "csv") == 0 || strcmp(format, "json") == 0) {
    if ((strcmp(format, "json") == 0) != json) {
      snprintf(err, errlen, "field '%s' is not a %s field (a CSV column is a "
               "number from 1, a JSON path starts with '.')", specs[0], format);
      return -1;
    }
  } else if (format[0] != '\0') {
    snprintf(err, errlen, "format '%s': want csv or json", format);
    return -1;
  }
  f->json = json;
  return 0;
}

int fields_new(fields_t **out, const char *const *specs, size_t n,
               const char *format, const char *sep, char *err, size_t errlen) {
  fields_t *f = calloc(1, sizeof *f);
  int rc = -2;
  *out = NULL;
  if (f == NULL || (f->specs = calloc(n, sizeof *f->specs)) == NULL) goto fail;
  f->n = n;
  if ((rc = pick_format(f, specs, n, format, err, errlen)) != 0) goto fail;
  if (!f->json && (strlen(sep) != 1 || sep[0] == '"' || sep[0] == '\n')) {
    snprintf(err, errlen, "separator '%s': want one byte, not '\"' or a newline", sep);
    rc = -1;
    goto fail;
  }
  f->sep = sep[0];
  for (size_t i = 0; i < n; i++) {
    if (f->json) {
      rc = parse_path(&f->specs[i], specs[i], err, errlen);
    } else if ((rc = parse_col(specs[i], &f->specs[i].col)) != 0) {
      snprintf(err, errlen, "field '%s': want a CSV column (1 to 65536) or a JSON "
               "path starting with '.'", specs[i]);
    }
    if (rc != 0) goto fail;
    if (f->specs[i].col > f->maxcol) f->maxcol = f->specs[i].col;
  }
  if (f->maxcol && (f->spans = calloc(f->maxcol, sizeof *f->spans)) == NULL) {
    rc = -2;
    goto fail;
  }
  *out = f;
  return 0;
fail:
  if (rc == -2) snprintf(err, errlen, "out of memory");
  fields_free(f);
  return rc;
}

const char *fields_error(const fields_t *f) { return f->err; }

size_t fields_split_list(char *s, const char **specs, size_t max) {
  size_t n = 0;
  for (char *p = s;;) {
    char *comma = strchr(p, ',');
    if (comma) *comma = '\0';
    while (*p == ' ' || *p == '\t') p++;
    char *e = p + strlen(p);
    while (e > p && (e[-1] == ' ' || e[-1] == '\t')) *--e = '\0';
    if (*p == '\0') return 0;
    if (n < max) specs[n] = p;
    n++;
    if (comma == NULL || n > max) return n;
    p = comma + 1;
  }
}

/* ---- scratch ---------------------------------------------------------------- */

static char *room(spec_t *sp, size_t len) {
  if (len > sp->cap) {
    char *p = realloc(sp->scratch, len ? len : 1);
    if (p == NULL) return NULL;
    sp->scratch = p;
    sp->cap = len;
  }
  return sp->scratch;
}

/* ---- CSV --------------------------------------------------------------------- */

/* The spans of columns 1..maxcol (fewer when the item has fewer): how many
 * were found, or -1 when malformed. */
static long csv_split(fields_t *f, const char *s, size_t len) {
  size_t i = 0;
  unsigned col = 0;
  while (col < f->maxcol) {
    span_t *sp = &f->spans[col++];
    if (i < len && s[i] == '"') {
      size_t j = i + 1;
      sp->doubled = false;
      for (;;) {
        const char *q = memchr(s + j, '"', len - j);
        if (q == NULL) {
          snprintf(f->err, sizeof f->err, "CSV field %u: no closing quote", col);
          return -1;
        }
        j = (size_t)(q - s);
        if (j + 1 < len && s[j + 1] == '"') {
          sp->doubled = true;
          j += 2;
          continue;
        }
        break;
      }
      sp->start = i + 1;
      sp->len = j - i - 1;
      i = j + 1;
      if (i < len && s[i] != f->sep) {
        snprintf(f->err, sizeof f->err, "CSV field %u: bytes after the closing quote", col);
        return -1;
      }
    } else {
      const char *e = i < len ? memchr(s + i, f->sep, len - i) : NULL;
      size_t end = e ? (size_t)(e - s) : len;
      *sp = (span_t){i, end - i, false};
      i = end;
    }
    if (i >= len) break;
    i++; /* the separator: another field follows, maybe empty */
  }
  return col;
}

static int csv_get(fields_t *f, const char *s, size_t len, fields_val_t *out) {
  if (len && s[len - 1] == '\r') len--;
  long found = csv_split(f, s, len);
  if (found < 0) return -1;
  for (size_t i = 0; i < f->n; i++) {
    spec_t *sp = &f->specs[i];
    const span_t *span = &f->spans[sp->col - 1];
    if ((long)sp->col > found) {
      out[i] = (fields_val_t){NULL, 0};
    } else if (!span->doubled) {
      out[i] = (fields_val_t){s + span->start, span->len};
    } else {
      char *d = room(sp, span->len);
      size_t k = 0;
      if (d == NULL) return -2;
      for (size_t j = 0; j < span->len; j++) {
        d[k++] = s[span->start + j];
        if (s[span->start + j] == '"') j++; /* "" -> " */
      }
      out[i] = (fields_val_t){d, k};
    }
  }
  return 0;
}

/* ---- JSON -------------------------------------------------------------------- */

static const char *ws(const char *p, const char *end) {
  while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')) p++;
  return p;
}

/* p at the opening quote: after the closing one, or NULL. *esc: whether
 * it has escapes. */
static const char *skip_string(const char *p, const char *end, bool *esc) {
  *esc = false;
  for (p++; p < end; p++) {
    if (*p == '"') return p + 1;
    if ((unsigned char)*p < 0x20) return NULL;
    if (*p == '\\') {
      *esc = true;
      if (++p == end) return NULL;
    }
  }
  return NULL;
}

static const char *skip_number(const char *p, const char *end) {
  const char *s = p;
  while (p < end && (strchr("+-.eE", *p) != NULL || (*p >= '0' && *p <= '9')) &&
         *p != '\0')
    p++;
  return p > s ? p : NULL;
}

static const char *skip_value(const char *p, const char *end, int depth) {
  bool esc;
  p = ws(p, end);
  if (p == end || depth > JSON_MAX_DEPTH) return NULL;
  if (*p == '"') return skip_string(p, end, &esc);
  if (*p == '{' || *p == '[') {
    char close = *p == '{' ? '}' : ']';
    p = ws(p + 1, end);
    if (p < end && *p == close) return p + 1;
    for (;;) {
      if (close == '}') {
        if (p == end || *p != '"' || (p = skip_string(p, end, &esc)) == NULL) return NULL;
        p = ws(p, end);
        if (p == end || *p++ != ':') return NULL;
      }
      if ((p = skip_value(p, end, depth + 1)) == NULL) return NULL;
      p = ws(p, end);
      if (p < end && *p == close) return p + 1;
      if (p == end || *p != ',') return NULL;
      p = ws(p + 1, end);
    }
  }
  for (const char *const *w = (const char *const[]){"true", "false", "null", NULL}; *w; w++) {
    size_t n = strlen(*w);
    if ((size_t)(end - p) >= n && memcmp(p, *w, n) == 0) return p + n;
  }
  if (*p == '-' || (*p >= '0' && *p <= '9')) return skip_number(p, end);
  return NULL;
}

static int hex4(const char *p, const char *end, unsigned *v) {
  *v = 0;
  if (end - p < 4) return -1;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0')
               : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10)
               : c >= 'A' && c <= 'F' ? (unsigned)(c - 'A' + 10) : 16u;
    if (d == 16) return -1;
    *v = *v << 4 | d;
  }
  return 0;
}

static size_t put_utf8(char *d, unsigned c) {
  if (c < 0x80) return d[0] = (char)c, 1;
  if (c < 0x800) return d[0] = (char)(0xc0 | c >> 6), d[1] = (char)(0x80 | (c & 0x3f)), 2;
  if (c < 0x10000) {
    d[0] = (char)(0xe0 | c >> 12);
    d[1] = (char)(0x80 | ((c >> 6) & 0x3f));
    d[2] = (char)(0x80 | (c & 0x3f));
    return 3;
  }
  d[0] = (char)(0xf0 | c >> 18);
  d[1] = (char)(0x80 | ((c >> 12) & 0x3f));
  d[2] = (char)(0x80 | ((c >> 6) & 0x3f));
  d[3] = (char)(0x80 | (c & 0x3f));
  return 4;
}

/* The contents of the string [p, end) (between its quotes) unescaped into
 * d (room for end - p bytes: an escape never grows). Its length, or -1. */
static long unescape(const char *p, const char *end, char *d) {
  size_t k = 0;
  while (p < end) {
    if (*p != '\\') {
      d[k++] = *p++;
      continue;
    }
    if (++p == end) return -1;
    const char *m = strchr("\"\\/bfnrt", *p);
    if (*p != '\0' && m != NULL) {
      d[k++] = "\"\\/\b\f\n\r\t"[m - "\"\\/bfnrt"];
      p++;
      continue;
    }
    unsigned c, lo;
    if (*p != 'u' || hex4(p + 1, end, &c) != 0) return -1;
    p += 5;
    if (c >= 0xdc00 && c < 0xe000) return -1; /* a lone low surrogate */
    if (c >= 0xd800 && c < 0xdc00) {
      if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || hex4(p + 2, end, &lo) != 0 ||
          lo < 0xdc00 || lo >= 0xe000)
        return -1;
      c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
      p += 6;
    }
    k += put_utf8(d + k, c);
  }
  return (long)k;
}

static int malformed(fields_t *f, const char *what) {
  snprintf(f->err, sizeof f->err, "malformed JSON: %s", what);
  return -1;
}

/* Whether the key string at p (its opening quote; q after its closing
 * one) is seg's key. */
static int key_is(spec_t *sp, const seg_t *seg, const char *p, const char *q, bool esc) {
  if (!esc) return (size_t)(q - p - 2) == seg->klen && memcmp(p + 1, seg->key, seg->klen) == 0;
  char *d = room(sp, (size_t)(q - p));
  if (d == NULL) return -2;
  long n = unescape(p + 1, q - 1, d);
  if (n < 0) return -1;
  return (size_t)n == seg->klen && memcmp(d, seg->key, seg->klen) == 0;
}

/* p at an object: p at the value of seg's key, or NULL (*rc 0: no such
 * key; < 0: malformed or out of memory). */
static const char *in_object(fields_t *f, spec_t *sp, const seg_t *seg, const char *p,
                             const char *end, int *rc) {
  bool esc;
  *rc = 0;
  p = ws(p + 1, end);
  if (p < end && *p == '}') return NULL;
  for (;;) {
    const char *q;
    if (p == end || *p != '"' || (q = skip_string(p, end, &esc)) == NULL)
      return *rc = malformed(f, "bad object key"), NULL;
    int is = key_is(sp, seg, p, q, esc);
    if (is < 0) return *rc = is == -2 ? -2 : malformed(f, "bad escape"), NULL;
    p = ws(q, end);
    if (p == end || *p != ':') return *rc = malformed(f, "no ':' after a key"), NULL;
    p = ws(p + 1, end);
    if (is) return p;
    if ((p = skip_value(p, end, 0)) == NULL) return *rc = malformed(f, "bad value"), NULL;
    p = ws(p, end);
    if (p < end && *p == '}') return NULL;
    if (p == end || *p != ',') return *rc = malformed(f, "no ',' or '}' in an object"), NULL;
    p = ws(p + 1, end);
  }
}

/* p at an array: p at element seg->index, or NULL as in_object. */
static const char *in_array(fields_t *f, const seg_t *seg, const char *p, const char *end,
                            int *rc) {
  *rc = 0;
  p = ws(p + 1, end);
  if (p < end && *p == ']') return NULL;
  for (uint64_t i = 0; i < seg->index; i++) {
    if ((p = skip_value(p, end, 0)) == NULL) return *rc = malformed(f, "bad value"), NULL;
    p = ws(p, end);
    if (p < end && *p == ']') return NULL;
    if (p == end || *p != ',') return *rc = malformed(f, "no ',' or ']' in an array"), NULL;
    p = ws(p + 1, end);
  }
  return p;
}

/* The scalar at p into *v (p NULL: not a scalar that counts). */
static int json_scalar(fields_t *f, spec_t *sp, const char *p, const char *end,
                       fields_val_t *v) {
  const char *q;
  bool esc;
  *v = (fields_val_t){NULL, 0};
  if (p == end) return malformed(f, "no value");
  if (*p == '"') {
    if ((q = skip_string(p, end, &esc)) == NULL) return malformed(f, "bad string");
    if (!esc) {
      *v = (fields_val_t){p + 1, (size_t)(q - p - 2)};
      return 0;
    }
    char *d = room(sp, (size_t)(q - p));
    if (d == NULL) return -2;
    long n = unescape(p + 1, q - 1, d);
    if (n < 0) return malformed(f, "bad escape");
    *v = (fields_val_t){d, (size_t)n};
    return 0;
  }
  if (*p == '{' || *p == '[') return 0;
  if ((q = skip_value(p, end, 0)) == NULL) return malformed(f, "bad value");
  if (*p != 'n') *v = (fields_val_t){p, (size_t)(q - p)}; /* null: missing */
  return 0;
}

static int json_get(fields_t *f, const char *s, size_t len, fields_val_t *out) {
  const char *end = s + len;
  int rc;
  for (size_t i = 0; i < f->n; i++) {
    spec_t *sp = &f->specs[i];
    const char *p = ws(s, end);
    out[i] = (fields_val_t){NULL, 0};
    for (size_t j = 0; j < sp->nsegs && p != NULL; j++) {
      const seg_t *seg = &sp->segs[j];
      if (p == end) return malformed(f, "no value");
      if (seg->key != NULL && *p == '{') p = in_object(f, sp, seg, p, end, &rc);
      else if (seg->key == NULL && *p == '[') p = in_array(f, seg, p, end, &rc);
      else p = NULL, rc = 0; /* not an object (array): no such field */
      if (rc != 0) return rc;
    }
    if (p != NULL && (rc = json_scalar(f, sp, p, end, &out[i])) != 0) return rc;
  }
  return 0;
}

int fields_get(fields_t *f, const void *item, size_t len, fields_val_t *out) {
  const char *s = len ? item : "";
  f->err[0] = '\0';
  return f->json ? json_get(f, s, len, out) : csv_get(f, s, len, out);
}
