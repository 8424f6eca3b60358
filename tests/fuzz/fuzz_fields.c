/* libFuzzer target for the plugins' parsers of item and partial bytes,
 * their sources compiled in (they are MODULE libraries): CSV and JSON
 * field extraction (plugins/common/fields.c), route's `routes` parameter
 * (plugins/route/routes.c), aggregate's value parsers and partial decoder
 * (plugins/aggregate/agg.c) and the counter's partial decoder
 * (plugins/common/counter.c).
 *
 * The first input byte picks the parser (its value % MODES) and its
 * options (its value / MODES); the rest is the input. Whatever the bytes:
 * no crash, leak or undefined behaviour, and each result agrees with an
 * oracle written here:
 *   CSV: a byte-at-a-time RFC 4180 reading of the same columns;
 *   JSON: jansson, whenever it takes the item as valid JSON;
 *   routes: what parsed is valid, and parses back from its own text;
 *   values: an exact fixed-point reading in 128 bits; strtod for doubles;
 *   partials: the counts add up, a re-encoding decodes to the same bytes,
 *     a canonical partial re-encodes to itself, per-partition partials
 *     hold the same entries, and the final output has one line per key. */
#define _GNU_SOURCE
#include <ctype.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mpx.h>

#include "../../core/pipeline/plugin_host.h"
#include "agg.h"
#include "counter.h"
#include "fields.h"
#include "routes.h"

#define MODES 6
#define MAX_SPECS 4
#define CHECK(c) \
  do {           \
    if (!(c)) {  \
      fprintf(stderr, "fuzz_fields: check failed: %s (line %d)\n", #c, __LINE__); \
      __builtin_trap(); \
    }            \
  } while (0)

/* ---- a context to emit into (the partial and final encoders) ---------------- */

typedef struct {
  unsigned char *buf; /* every output, back to back */
  size_t len, cap;
  size_t n;          /* outputs */
  size_t *off, *olen; /* each output's place in buf */
  uint32_t *part;    /* mpx_emit_partition's partition, else UINT32_MAX */
  size_t ocap;
} outs_t;

static outs_t outs;
static mpx_plugin_ctx_t *ctx;

static int collect(void *arg, mpx__tag_t tag, const void *data, size_t len) {
  outs_t *o = arg;
  if (o->len + len > o->cap) {
    size_t cap = o->cap ? o->cap : 4096;
    while (cap < o->len + len) cap *= 2;
    if ((o->buf = realloc(o->buf, cap)) == NULL) abort();
    o->cap = cap;
  }
  if (o->n == o->ocap) {
    o->ocap = o->ocap ? 2 * o->ocap : 64;
    o->off = realloc(o->off, o->ocap * sizeof *o->off);
    o->olen = realloc(o->olen, o->ocap * sizeof *o->olen);
    o->part = realloc(o->part, o->ocap * sizeof *o->part);
    if (o->off == NULL || o->olen == NULL || o->part == NULL) abort();
  }
  if (len) memcpy(o->buf + o->len, data, len);
  o->off[o->n] = o->len;
  o->olen[o->n] = len;
  o->part[o->n++] = tag.direct ? tag.hash : UINT32_MAX;
  o->len += len;
  return 0;
}

static void outs_reset(void) { outs.len = outs.n = 0; }
static const unsigned char *out_at(size_t i) { return outs.buf + outs.off[i]; }

static int nop_process(mpx_plugin_ctx_t *c, void *s, const void *in, size_t len) {
  (void)c, (void)s, (void)in, (void)len;
  return 0;
}
static int nop_flush(mpx_plugin_ctx_t *c, void *s) {
  (void)c, (void)s;
  return 0;
}

static int nop_fold(mpx_plugin_ctx_t *c, void *s, const void *p, size_t len) {
  (void)c, (void)s, (void)p, (void)len;
  return 0;
}

static const mpx_plugin_t reduce_desc = {
    MPX_PLUGIN_HEADER,
    .name = "fuzz",
    .version = "1.0",
    .description = "a reduce context for the encoders",
    .kind = MPX_PLUGIN_REDUCE,
    .process = nop_process,
    .flush = nop_flush,
    .fold = nop_fold,
};

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  if (mpx__ctx_new(&ctx, &reduce_desc, NULL, NULL, 0, NULL, 0, 1, NULL, NULL, NULL) != 0) {
    fprintf(stderr, "fuzz_fields: no context: %s\n", mpx_last_error());
    abort();
  }
  mpx__ctx_set_emit_to(ctx, collect, &outs);
  if ((outs.buf = malloc(outs.cap = 4096)) == NULL) abort(); /* never NULL: out_at */
  return 0;
}

/* ---- CSV -------------------------------------------------------------------- */

/* RFC 4180 as fields.h has it, one byte at a time, columns 1..maxcol
 * only: into val/vlen (a malloc'd copy each), the number found, or -1
 * when malformed. */
static long csv_oracle(const unsigned char *s, size_t len, char sep, unsigned maxcol,
                       unsigned char **val, size_t *vlen) {
  size_t i = 0;
  unsigned col = 0;
  if (len && s[len - 1] == '\r') len--;
  while (col < maxcol) {
    unsigned char *v = malloc(len + 1);
    size_t k = 0;
    val[col] = v;
    if (i < len && s[i] == '"') {
      for (i++;; i++) {
        if (i >= len) return vlen[col++] = 0, -1;
        if (s[i] != '"') v[k++] = s[i];
        else if (i + 1 < len && s[i + 1] == '"') v[k++] = '"', i++;
        else break;
      }
      i++; /* the closing quote */
      if (i < len && s[i] != (unsigned char)sep) return vlen[col++] = 0, -1;
    } else {
      while (i < len && s[i] != (unsigned char)sep) v[k++] = s[i++];
    }
    vlen[col++] = k;
    if (i >= len) break;
    i++;
  }
  return col;
}

static void check_csv(fields_t *f, const unsigned *cols, size_t n, char sep,
                      const uint8_t *d, size_t len) {
  fields_val_t got[MAX_SPECS];
  unsigned char *val[64] = {0};
  size_t vlen[64];
  unsigned maxcol = 0;
  for (size_t i = 0; i < n; i++) maxcol = cols[i] > maxcol ? cols[i] : maxcol;
  int rc = fields_get(f, d, len, got);
  long found = csv_oracle(d, len, sep, maxcol, val, vlen);
  CHECK(rc == (found < 0 ? -1 : 0));
  CHECK(rc == 0 || fields_error(f)[0] != '\0');
  for (size_t i = 0; rc == 0 && i < n; i++) {
    if ((long)cols[i] > found) {
      CHECK(got[i].p == NULL);
    } else {
      CHECK(got[i].p != NULL && got[i].len == vlen[cols[i] - 1]);
      CHECK(got[i].len == 0 || memcmp(got[i].p, val[cols[i] - 1], got[i].len) == 0);
    }
  }
  for (unsigned i = 0; i < maxcol; i++) free(val[i]);
}

/* opts: the separator and the format's name; then a byte giving the
 * number of columns, one byte per column, and the item. */
static void fuzz_csv(unsigned opts, const uint8_t *d, size_t n) {
  static const char seps[] = ",;\t| \r";
  char sep[2] = {seps[opts % 6], 0}, names[MAX_SPECS][8], err[256];
  const char *specs[MAX_SPECS];
  unsigned cols[MAX_SPECS];
  fields_t *f;
  if (n < 1) return;
  size_t k = 1 + (d[0] & 3);
  if (n < 1 + k) return;
  for (size_t i = 0; i < k; i++) {
    cols[i] = 1 + d[1 + i] % 40;
    snprintf(names[i], sizeof names[i], "%u", cols[i]);
    specs[i] = names[i];
  }
  CHECK(fields_new(&f, specs, k, (opts / 6) % 2 ? "csv" : "", sep, err, sizeof err) == 0);
  check_csv(f, cols, k, sep[0], d + 1 + k, n - 1 - k);
  fields_free(f);
}

/* ---- JSON ------------------------------------------------------------------- */

/* The value at path spec (as fields.h has it) in j, NULL when none. */
static json_t *json_oracle_at(json_t *j, const char *spec) {
  const char *p = spec + 1;
  if (*p != '\0' && *p != '[') p = spec;
  while (*p && j != NULL) {
    if (*p == '.') {
      const char *k = ++p;
      while (*p && *p != '.' && *p != '[') p++;
      j = json_is_object(j) ? json_object_getn(j, k, (size_t)(p - k)) : NULL;
    } else {
      uint64_t v = strtoull(p + 1, (char **)&p, 10);
      p++; /* ']' */
      j = json_is_array(j) ? json_array_get(j, (size_t)v) : NULL;
    }
  }
  return j;
}

static int json_depth(const json_t *j) {
  int m = 0;
  if (json_is_object(j)) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)j, k, v) {
      int dd = json_depth(v);
      m = dd > m ? dd : m;
    }
    return m + 1;
  }
  if (json_is_array(j)) {
    for (size_t i = 0; i < json_array_size(j); i++) {
      int dd = json_depth(json_array_get(j, i));
      m = dd > m ? dd : m;
    }
    return m + 1;
  }
  return 0;
}

static void check_json_val(const json_t *w, fields_val_t g) {
  char buf[400];
  if (w == NULL || json_is_null(w) || json_is_object(w) || json_is_array(w)) {
    CHECK(g.p == NULL);
    return;
  }
  CHECK(g.p != NULL);
  if (json_is_string(w)) {
    CHECK(g.len == json_string_length(w));
    CHECK(g.len == 0 || memcmp(g.p, json_string_value(w), g.len) == 0);
  } else if (json_is_true(w) || json_is_false(w)) {
    const char *t = json_is_true(w) ? "true" : "false";
    CHECK(g.len == strlen(t) && memcmp(g.p, t, g.len) == 0);
  } else {
    CHECK(g.len < sizeof buf); /* jansson took it: a number of sane length */
    memcpy(buf, g.p, g.len);
    buf[g.len] = '\0';
    if (json_is_integer(w)) CHECK(strtoll(buf, NULL, 10) == json_integer_value(w));
    else CHECK(strtod(buf, NULL) == json_real_value(w));
  }
}

/* Whenever jansson reads the item as one JSON value (no repeated keys, no
 * raw NUL, shallow enough for the extractor's skipping), the extractor
 * agrees. */
static void check_json(fields_t *f, const char *const *specs, size_t n, const uint8_t *d,
                       size_t len) {
  fields_val_t got[MAX_SPECS];
  int rc = fields_get(f, d, len, got);
  CHECK(rc == 0 || (rc == -1 && fields_error(f)[0] != '\0'));
  if (memchr(d, '\0', len) != NULL) return; /* jansson reads past a raw NUL: not JSON */
  json_t *j = json_loadb((const char *)d, len,
                         JSON_DECODE_ANY | JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, NULL);
  if (j == NULL) return;
  if (json_depth(j) < 200) {
    CHECK(rc == 0);
    for (size_t i = 0; i < n; i++) check_json_val(json_oracle_at(j, specs[i]), got[i]);
  }
  json_decref(j);
}

/* opts: the format's name. Then a byte L, L bytes of a spec list ("2,3",
 * ".a, .b[1]"; fields_split_list), and the item: checked against jansson
 * (JSON paths) or the CSV oracle (columns, separator ','). */
static void fuzz_specs(unsigned opts, const uint8_t *d, size_t n) {
  static const char *const formats[] = {"", "json", "csv", "xml"};
  char list[64], err[256];
  const char *specs[MAX_SPECS];
  fields_t *f;
  if (n < 1 || (size_t)(d[0] % sizeof list) > n - 1) return;
  size_t l = d[0] % sizeof list;
  memcpy(list, d + 1, l);
  list[l] = '\0';
  size_t k = fields_split_list(list, specs, MAX_SPECS);
  if (k == 0 || k > MAX_SPECS) return;
  int rc = fields_new(&f, specs, k, formats[opts % 4], ",", err, sizeof err);
  CHECK(rc == 0 || (rc == -1 && err[0] != '\0' && f == NULL));
  if (rc != 0) return;
  d += 1 + l, n -= 1 + l;
  if (specs[0][0] == '.') {
    check_json(f, specs, k, d, n);
  } else {
    unsigned cols[MAX_SPECS];
    for (size_t i = 0; i < k; i++) cols[i] = (unsigned)strtoul(specs[i], NULL, 10);
    if (cols[0] <= 64 && (k < 2 || cols[1] <= 64) && (k < 3 || cols[2] <= 64) &&
        (k < 4 || cols[3] <= 64))
      check_csv(f, cols, k, ',', d, n);
  }
  fields_free(f);
}

/* ---- routes ------------------------------------------------------------------ */

static bool route_name_ok(const char *s) {
  size_t n = strlen(s);
  if (n < 1 || n > 63 || strcmp(s, "unmatched") == 0) return false;
  return strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_-") == n;
}

/* The entries written back as a routes parameter: ';' doubled. */
static char *routes_text(const routes_entry_t *r, size_t n) {
  size_t cap = 1;
  for (size_t i = 0; i < n; i++) cap += strlen(r[i].name) + 2 * strlen(r[i].pattern) + 2;
  char *s = malloc(cap), *w = s;
  for (size_t i = 0; i < n; i++) {
    w = stpcpy(w, r[i].name);
    *w++ = '=';
    for (const char *p = r[i].pattern; *p; p++)
      if ((*w++ = *p) == ';') *w++ = ';';
    *w++ = ';';
  }
  *w = '\0';
  return s;
}

static void fuzz_routes(const uint8_t *d, size_t n) {
  char *spec = strndup((const char *)d, n), err[512] = "";
  routes_entry_t *r, *r2;
  size_t k, k2;
  int rc = routes_parse(spec, &r, &k, err, sizeof err);
  CHECK(rc == 0 || rc == -1);
  if (rc != 0) {
    CHECK(r == NULL && k == 0 && strncmp(err, "routes: ", 8) == 0);
    free(spec);
    return;
  }
  CHECK(k >= 1);
  for (size_t i = 0; i < k; i++) {
    CHECK(route_name_ok(r[i].name));
    CHECK(strlen(r[i].pattern) < n);
    for (size_t j = 0; j < i; j++) CHECK(strcmp(r[i].name, r[j].name) != 0);
  }
  char *again = routes_text(r, k);
  CHECK(routes_parse(again, &r2, &k2, err, sizeof err) == 0 && k2 == k);
  for (size_t i = 0; i < k; i++)
    CHECK(strcmp(r[i].name, r2[i].name) == 0 && strcmp(r[i].pattern, r2[i].pattern) == 0);
  routes_free(r, k);
  routes_free(r2, k2);
  free(again);
  free(spec);
}

/* ---- aggregate's values ------------------------------------------------------ */

/* "[+-]digits[.digits]", at most d digits after the point but for zeros,
 * read exactly: 0 and *out, or -1. */
static int fixed_oracle(const unsigned char *s, size_t len, int d, int64_t *out) {
  size_t i = 0, digits = 0, frac = 0;
  bool neg = false, point = false;
  __int128 v = 0;
  if (len && (s[0] == '+' || s[0] == '-')) neg = s[i++] == '-';
  for (; i < len; i++) {
    if (s[i] == '.' && !point) {
      point = true;
      continue;
    }
    if (!isdigit(s[i])) return -1;
    digits++;
    if (point && ++frac > (size_t)d) {
      if (s[i] != '0') return -1;
      continue;
    }
    v = v * 10 + (s[i] - '0');
    if (v > INT64_MAX) return -1;
  }
  if (digits == 0) return -1;
  for (; frac < (size_t)d; frac++)
    if ((v *= 10) > INT64_MAX) return -1;
  *out = (int64_t)(neg ? -v : v);
  return 0;
}

/* opts: decimals (-1 to 18). The rest: a value's text. */
static void fuzz_value(unsigned opts, const uint8_t *d, size_t n) {
  int dec = (int)(opts % 20) - 1;
  const char *s = (const char *)d;
  if (dec >= 0) {
    int64_t got = 0, want = 0;
    int rc = agg_parse_fixed(s, n, dec, &got);
    CHECK(rc == fixed_oracle(d, n, dec, &want));
    CHECK(rc != 0 || got == want);
    return;
  }
  double v;
  if (agg_parse_double(s, n, &v) != 0) return;
  /* What it takes is all number: no space, no NUL, finite. */
  char buf[128], *end;
  CHECK(n > 0 && n < sizeof buf && memchr(s, '\0', n) == NULL && !isspace(d[0]));
  memcpy(buf, s, n);
  buf[n] = '\0';
  CHECK(strtod(buf, &end) == v && end == buf + n && isfinite(v));
}

/* ---- partials ------------------------------------------------------------------ */

static uint64_t le(const unsigned char *p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Walks the entries of a well-formed partial ([p, p+len), head bytes of
 * header, extra bytes after each count): the sum of the counts, and
 * whether the keys are strictly increasing (canonical). */
static unsigned __int128 walk(const unsigned char *p, size_t len, size_t head, size_t extra,
                              bool *sorted, size_t *entries) {
  unsigned __int128 sum = 0;
  const unsigned char *s = p + head, *end = p + len, *pk = NULL;
  size_t pl = 0;
  *sorted = true;
  *entries = 0;
  while (s < end) {
    size_t kl = (size_t)le(s, 4);
    const unsigned char *k = s + 4;
    if (pk != NULL) {
      int c = memcmp(pk, k, pl < kl ? pl : kl);
      if (c > 0 || (c == 0 && pl >= kl)) *sorted = false;
    }
    sum += le(k + kl, 8);
    pk = k, pl = kl;
    s = k + kl + 8 + extra;
    (*entries)++;
  }
  return sum;
}

static unsigned __int128 counter_total(const counter_t *c) {
  unsigned __int128 sum = 0;
  for (size_t i = 0; i < c->cap; i++)
    if (c->slots[i].len1 != 0) sum += c->slots[i].count; /* 0 is a count (topk counted) */
  return sum;
}

/* c's partial, re-read, gives the same bytes; its per-partition partials
 * hold the same entries; its top lines are "COUNT KEY". Leaves c's
 * partial as outs' only output. */
static void counter_roundtrip(const counter_t *c) {
  counter_t c2;
  outs_reset();
  CHECK(counter_emit_partial(c, ctx) == 0 && outs.n == 1);
  size_t plen = outs.olen[0];
  unsigned char *p1 = malloc(plen ? plen : 1);
  memcpy(p1, out_at(0), plen);
  for (int parts = 0; parts <= 3; parts += 3) {
    counter_init(&c2);
    outs_reset();
    mpx__ctx_set_partitions(ctx, (unsigned)parts);
    if (parts) CHECK(counter_emit_partitions(c, ctx, (unsigned)parts) == 0);
    else CHECK(counter_emit_partial(c, ctx) == 0);
    for (size_t i = 0; i < outs.n; i++) {
      CHECK(parts == 0 || outs.part[i] < (uint32_t)parts);
      CHECK(counter_add_partial(&c2, out_at(i), outs.olen[i]) == 0);
    }
    outs_reset();
    CHECK(counter_emit_partial(&c2, ctx) == 0);
    CHECK(outs.olen[0] == plen && memcmp(out_at(0), p1, plen) == 0);
    counter_free(&c2);
  }
  mpx__ctx_set_partitions(ctx, 0);
  outs_reset();
  CHECK(counter_emit_top(c, ctx, 3) == 0 && outs.n == (c->n < 3 ? c->n : 3));
  for (size_t i = 0; i < outs.n; i++) CHECK(isdigit(out_at(i)[0]));
  outs_reset();
  CHECK(collect(&outs, (mpx__tag_t){0}, p1, plen) == 0);
  free(p1);
}

/* The input as a counter partial (counter.h), twice. */
static void fuzz_counter(const uint8_t *d, size_t n) {
  counter_t c;
  bool sorted;
  size_t entries;
  counter_init(&c);
  int rc = counter_add_partial(&c, d, n);
  CHECK(rc == 0 || rc == MPX_EINVAL || rc == MPX_EOVERFLOW);
  if (rc == 0) {
    CHECK(counter_total(&c) == walk(d, n, 0, 0, &sorted, &entries));
    counter_roundtrip(&c);
    if (sorted) CHECK(outs.olen[0] == n && memcmp(out_at(0), d, n) == 0);
    unsigned __int128 before = counter_total(&c);
    rc = counter_add_partial(&c, d, n);
    CHECK(rc == 0 || rc == MPX_EOVERFLOW); /* it was well-formed the first time */
    if (rc == 0) CHECK(counter_total(&c) == 2 * before);
  }
  counter_free(&c);
}

static unsigned __int128 agg_total(const agg_t *t) {
  unsigned __int128 sum = 0;
  for (size_t i = 0; i < t->cap; i++)
    if (t->slots[i].key != NULL) {
      CHECK(t->slots[i].count > 0);
      sum += t->slots[i].count;
    }
  return sum;
}

/* As counter_roundtrip, and the final lines: one per key, "KEY,COUNT...". */
static void agg_roundtrip(const agg_t *t) {
  agg_t t2;
  outs_reset();
  CHECK(agg_emit_partial(t, ctx, 0) == 0 && outs.n == 1);
  size_t plen = outs.olen[0];
  unsigned char *p1 = malloc(plen ? plen : 1);
  memcpy(p1, out_at(0), plen);
  for (unsigned parts = 0; parts <= 3; parts += 3) {
    agg_init(&t2, t->nv, t->decimals);
    outs_reset();
    mpx__ctx_set_partitions(ctx, parts);
    CHECK(agg_emit_partial(t, ctx, parts) == 0);
    for (size_t i = 0; i < outs.n; i++) {
      CHECK(parts == 0 || outs.part[i] < parts);
      CHECK(agg_add_partial(&t2, out_at(i), outs.olen[i]) == 0);
    }
    outs_reset();
    CHECK(agg_emit_partial(&t2, ctx, 0) == 0);
    CHECK(outs.olen[0] == plen && memcmp(out_at(0), p1, plen) == 0);
    agg_free(&t2);
  }
  mpx__ctx_set_partitions(ctx, 0);
  outs_reset();
  mpx__ctx_set_final(ctx, true);
  CHECK(agg_emit_final(t, ctx, ',') == 0 && outs.n == t->n);
  mpx__ctx_set_final(ctx, false);
  outs_reset();
  CHECK(collect(&outs, (mpx__tag_t){0}, p1, plen) == 0);
  free(p1);
}

/* opts: the number of value fields (1, 2) and decimals (-1, 0, 1, 18).
 * The input as an aggregate partial (agg.h), twice. */
static void fuzz_agg(unsigned opts, const uint8_t *d, size_t n) {
  static const int decs[] = {-1, 0, 1, 18};
  agg_t t;
  bool sorted;
  size_t entries = 0;
  agg_init(&t, 1 + opts % 2, decs[(opts / 2) % 4]);
  int rc = agg_add_partial(&t, d, n);
  CHECK(rc == 0 || rc == MPX_EINVAL || rc == MPX_EOVERFLOW);
  if (rc == 0) {
    CHECK(agg_total(&t) == (n ? walk(d, n, 4, 24 * t.nv, &sorted, &entries) : 0));
    agg_roundtrip(&t);
    /* A canonical partial re-encodes to itself; no entries is "" (a
     * header alone is empty too). */
    if (entries > 0 && sorted) CHECK(outs.olen[0] == n && memcmp(out_at(0), d, n) == 0);
    rc = agg_add_partial(&t, d, n);
    CHECK(rc == 0 || rc == MPX_EINVAL || rc == MPX_EOVERFLOW);
    agg_roundtrip(&t);
  }
  agg_free(&t);
}

/* ---- the target ---------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  if (n < 1) return 0;
  unsigned mode = d[0] % MODES, opts = d[0] / MODES;
  mpx__ctx_clear_error(ctx);
  switch (mode) {
  case 0: fuzz_csv(opts, d + 1, n - 1); break;
  case 1: fuzz_specs(opts, d + 1, n - 1); break;
  case 2: fuzz_routes(d + 1, n - 1); break;
  case 3: fuzz_value(opts, d + 1, n - 1); break;
  case 4: fuzz_agg(opts, d + 1, n - 1); break;
  default: fuzz_counter(d + 1, n - 1); break;
  }
  return 0;
}
