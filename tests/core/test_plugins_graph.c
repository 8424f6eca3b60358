/* The plugins of graphs and partitions, run in-process through the plugin
 * host with tagged outputs (port, key, partition): grep's two ports,
 * route's named ports on lines, CSV and JSON fields, and its configuration
 * errors; wordcount, topk and aggregate folded and partitioned, each
 * against an oracle computed here from the generated input (counts by
 * brute force, fixed-point statistics with integers). */
#define _GNU_SOURCE
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/pipeline/plugin_host.h"
#include "mpx.h"
#include "../mpx_test.h"

#define KV(k, v) ((mpx__kv_t){(k), (v)})
#define NKV(a) (sizeof(a) / sizeof((a)[0]))

static int contains(const char *hay, const char *needle) { return strstr(hay, needle) != NULL; }

static uint64_t rng = 88172645463325252u;
static uint64_t next(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return rng;
}

/* ---- tagged outputs ------------------------------------------------------------ */

typedef struct {
  size_t n, cap;
  char **data; /* NUL-terminated after len bytes */
  size_t *len;
  mpx__tag_t *tag;
} out_t;

static int collect(void *arg, mpx__tag_t tag, const void *data, size_t len) {
  out_t *o = arg;
  if (o->n == o->cap) {
    o->cap = o->cap ? 2 * o->cap : 64;
    o->data = realloc(o->data, o->cap * sizeof *o->data);
    o->len = realloc(o->len, o->cap * sizeof *o->len);
    o->tag = realloc(o->tag, o->cap * sizeof *o->tag);
  }
  o->data[o->n] = malloc(len + 1);
  if (len) memcpy(o->data[o->n], data, len);
  o->data[o->n][len] = '\0';
  o->len[o->n] = len;
  o->tag[o->n++] = tag;
  return 0;
}

static void out_free(out_t *o) {
  for (size_t i = 0; i < o->n; i++) free(o->data[i]);
  free(o->data);
  free(o->len);
  free(o->tag);
  memset(o, 0, sizeof *o);
}

static const mpx_plugin_t *load(const char *name) {
  mpx__plugin_t *p = NULL;
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
  int rc = mpx__plugin_load(&p, name);
  if (rc != 0) printf("\nload %s: %s\n", name, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return mpx__plugin_desc(p);
}

typedef struct {
  mpx_plugin_ctx_t *ctx;
  void *state;
} inst_t;

static inst_t inst(const char *plugin, const mpx__kv_t *kv, size_t nkv, out_t *out) {
  inst_t in = {NULL, NULL};
  int rc = mpx__ctx_new(&in.ctx, load(plugin), NULL, kv, nkv, NULL, 0, 1, NULL, NULL, NULL);
  if (rc != 0) printf("\nctx_new %s: %s\n", plugin, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  mpx__ctx_set_emit_to(in.ctx, collect, out);
  rc = mpx__ctx_call_init(in.ctx, &in.state);
  if (rc != 0) printf("\ninit %s: %s\n", plugin, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return in;
}

static void inst_free(inst_t in) {
  mpx__ctx_call_fini(in.ctx, in.state);
  mpx__ctx_free(in.ctx);
}

static void feed(inst_t in, const char *s) {
  int rc = mpx__ctx_call_process(in.ctx, in.state, s, strlen(s));
  if (rc != 0) printf("\nprocess '%s': %s\n", s, mpx_last_error());
  CU_ASSERT_EQUAL(rc, 0);
}

/* The context cannot be made: a configuration error whose message has
 * `want`. */
static void config_error(const char *plugin, const mpx__kv_t *kv, size_t nkv, const char *want) {
  mpx_plugin_ctx_t *c = NULL;
  int rc = mpx__ctx_new(&c, load(plugin), NULL, kv, nkv, NULL, 0, 1, NULL, NULL, NULL);
  CU_ASSERT_EQUAL(rc, MPX_ECONFIG);
  if (rc != MPX_ECONFIG || !contains(mpx_last_error(), want))
    printf("\n%s: rc %d, '%s'; want '%s'\n", plugin, rc, mpx_last_error(), want);
  CU_ASSERT_TRUE(contains(mpx_last_error(), want));
  if (rc == 0) mpx__ctx_free(c);
}

/* init fails with a message that has `want`. */
static void init_error(const char *plugin, const mpx__kv_t *kv, size_t nkv, const char *want) {
  mpx_plugin_ctx_t *c = NULL;
  void *st = NULL;
  int rc = mpx__ctx_new(&c, load(plugin), NULL, kv, nkv, NULL, 0, 1, NULL, NULL, NULL);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  if (!contains(mpx__ctx_error(c), want))
    printf("\n%s init: '%s'; want '%s'\n", plugin, mpx__ctx_error(c), want);
  CU_ASSERT_TRUE(contains(mpx__ctx_error(c), want));
  mpx__ctx_free(c);
}

/* ---- grep -------------------------------------------------------------------- */

static void test_grep_ports(void) {
  const char *lines[] = {"apple", "banana", "", "grape", "cherry", "avocado"};
  const bool starts_a[] = {true, false, false, false, false, true};
  for (int invert = 0; invert <= 1; invert++) {
    mpx__kv_t kv[] = {KV("pattern", "^a"), KV("invert", invert ? "true" : "false")};
    out_t o = {0};
    inst_t g = inst("grep", kv, 2, &o);
    CU_ASSERT_EQUAL(mpx__ctx_port_count(g.ctx), 2);
    CU_ASSERT_STRING_EQUAL(mpx__ctx_port_names(g.ctx)[0], invert ? "unmatched" : "matched");
    CU_ASSERT_STRING_EQUAL(mpx__ctx_port_names(g.ctx)[1], invert ? "matched" : "unmatched");
    for (size_t i = 0; i < NKV(lines); i++) feed(g, lines[i]);
    /* Every item once, in order; port 0 is what grep keeps. */
    CU_ASSERT_EQUAL_FATAL(o.n, NKV(lines));
    for (size_t i = 0; i < NKV(lines); i++) {
      CU_ASSERT_STRING_EQUAL(o.data[i], lines[i]);
      CU_ASSERT_EQUAL(o.tag[i].port, starts_a[i] != (invert == 1) ? 0u : 1u);
      CU_ASSERT_FALSE(o.tag[i].keyed);
    }
    inst_free(g);
    out_free(&o);
  }
}

/* ---- route ------------------------------------------------------------------- */

static unsigned port_of(inst_t r, const char *name) {
  int p = mpx_port_index(r.ctx, name);
  CU_ASSERT_TRUE_FATAL(p >= 0);
  return (unsigned)p;
}

static void check_routed(const out_t *o, inst_t r, const char *const *items,
                         const char *const *ports, size_t n) {
  CU_ASSERT_EQUAL_FATAL(o->n, n);
  for (size_t i = 0; i < n; i++) {
    CU_ASSERT_STRING_EQUAL(o->data[i], items[i]); /* the item whole */
    if (o->tag[i].port != port_of(r, ports[i]))
      printf("\nroute '%s': port %u, want %s\n", items[i], o->tag[i].port, ports[i]);
    CU_ASSERT_EQUAL(o->tag[i].port, port_of(r, ports[i]));
  }
}

static void test_route_lines(void) {
  mpx__kv_t kv[] = {KV("routes", "err=ERROR; warn =WARN(ING)?;semi=a;;b;")};
  out_t o = {0};
  inst_t r = inst("route", kv, 1, &o);
  const char *names[] = {"err", "warn", "semi", "unmatched"};
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_port_count(r.ctx), 4);
  for (int i = 0; i < 4; i++) CU_ASSERT_STRING_EQUAL(mpx__ctx_port_names(r.ctx)[i], names[i]);
  const char *items[] = {"x ERROR y", "WARNING then ERROR", "WARN only", "a;b", "ab",
                         "", "error"};
  const char *ports[] = {"err", "err", "warn", "semi", "unmatched", "unmatched", "unmatched"};
  for (size_t i = 0; i < NKV(items); i++) feed(r, items[i]);
  check_routed(&o, r, items, ports, NKV(items));
  inst_free(r);
  out_free(&o);
}

/* CSV fields made here from known values, RFC 4180 quoted when needed:
 * the route must see the value, whatever its quoting. */
static void csv_quote(char *w, size_t cap, const char *v, char sep) {
  bool q = strchr(v, sep) || strchr(v, '"') || (next() % 3 == 0);
  size_t k = 0;
  if (q) w[k++] = '"';
  for (; *v && k + 3 < cap; v++) {
    if (*v == '"') w[k++] = '"';
    w[k++] = *v;
  }
  if (q) w[k++] = '"';
  w[k] = '\0';
}

static void test_route_csv(void) {
  mpx__kv_t kv[] = {KV("routes", "hot=^h;cold=^c"), KV("field", "2"),
                    KV("separator", ";")};
  out_t o = {0};
  inst_t r = inst("route", kv, 3, &o);
  const char *values[] = {"hot", "cold", "h;\"x\"", "c\"", "warm", "", "\"hot\""};
  static char items[400][256];
  const char *want[400], *its[400];
  size_t n = 0;
  for (int i = 0; i < 300; i++) {
    const char *v = values[next() % NKV(values)];
    char a[64], b[64], c[64];
    csv_quote(a, sizeof a, "k;1", ';');
    csv_quote(b, sizeof b, v, ';');
    csv_quote(c, sizeof c, "tail", ';');
    int cols = (int)(next() % 4); /* 0: one field only (no column 2) */
    if (cols == 0) snprintf(items[n], sizeof items[0], "%s", a);
    else if (cols == 1) snprintf(items[n], sizeof items[0], "%s;%s", a, b);
    else snprintf(items[n], sizeof items[0], "%s;%s;%s%s", a, b, c, cols == 3 ? "\r" : "");
    its[n] = items[n];
    want[n] = cols == 0 ? "unmatched" : v[0] == 'h' ? "hot" : v[0] == 'c' ? "cold" : "unmatched";
    feed(r, items[n++]);
  }
  /* Malformed CSV is unmatched too; a quote inside an unquoted field is a byte. */
  const char *odd[] = {"a;\"h", "a;\"h\"x;b", "a;h\"q", "a;"};
  const char *oddp[] = {"unmatched", "unmatched", "hot", "unmatched"};
  for (size_t i = 0; i < NKV(odd); i++) {
    its[n] = odd[i];
    want[n++] = oddp[i];
    feed(r, odd[i]);
  }
  check_routed(&o, r, its, want, n);
  inst_free(r);
  out_free(&o);
}

static void test_route_json(void) {
  mpx__kv_t kv[] = {KV("routes", "fr=^Fran\xc3\xa7ois$;quote=\";two=^2$;yes=^true$"),
                    KV("field", ".user.tags[1]")};
  out_t o = {0};
  inst_t r = inst("route", kv, 2, &o);
  const char *items[] = {
      "{\"user\": {\"tags\": [\"x\", \"Fran\\u00e7ois\"]}}",
      "{\"a\": [1, {\"b\": \"}\"}], \"user\": {\"name\": \"q\", \"tags\": [0, \"say \\\"hi\\\"\"]}}",
      "{\"user\":{\"tags\":[null,2]}}",
      "{\"user\":{\"tags\":[{},true]}}",
      "{\"user\":{\"tags\":[1,2.5]}}",
      "{\"user\":{\"tags\":[1]}}",         /* no element 1 */
      "{\"user\":{\"tags\":[1,null]}}",    /* null: missing */
      "{\"user\":{\"tags\":[1,[2]]}}",     /* not a scalar */
      "{\"user\":[1,2]}",                  /* not an object */
      "{\"user\":{\"tags\":[1,\"2\"",      /* cut short after the value: still read */
      "{\"user\":{\"tags\":[1 2]}}",       /* malformed */
      "not json",
      "{\"user\":{\"tags\":[\"\\ud83d\\ude00\",\"2\"]}}",
      "{\"user\":{\"tags\":[\"a\\q\",\"2\"]}}", /* bad escape while skipping: still a string */
  };
  const char *ports[] = {"fr", "quote", "two", "yes", "unmatched", "unmatched", "unmatched",
                         "unmatched", "unmatched", "two", "unmatched", "unmatched", "two",
                         "two"};
  for (size_t i = 0; i < NKV(items); i++) feed(r, items[i]);
  check_routed(&o, r, items, ports, NKV(items));
  inst_free(r);
  out_free(&o);
}

static void test_route_config(void) {
  mpx__kv_t dup[] = {KV("routes", "a=x;b=y;a=z")};
  config_error("route", dup, 1, "route 'a' named twice");
  mpx__kv_t bad[] = {KV("routes", "a=(x")};
  config_error("route", bad, 1, "bad regex '(x' for route 'a'");
  mpx__kv_t empty[] = {KV("routes", " ; ")};
  config_error("route", empty, 1, "routes: no route");
  mpx__kv_t noeq[] = {KV("routes", "a")};
  config_error("route", noeq, 1, "'a' is not NAME=REGEX");
  mpx__kv_t name[] = {KV("routes", "Big=x")};
  config_error("route", name, 1, "bad route name 'Big'");
  mpx__kv_t un[] = {KV("routes", "unmatched=x")};
  config_error("route", un, 1, "'unmatched' is the port");
  mpx__kv_t field[] = {KV("routes", "a=x"), KV("field", "zero")};
  config_error("route", field, 2, "field 'zero': want a CSV column");
  mpx__kv_t col0[] = {KV("routes", "a=x"), KV("field", "0")};
  config_error("route", col0, 2, "field '0'");
  mpx__kv_t fmt[] = {KV("routes", "a=x"), KV("field", "2"), KV("format", "json")};
  config_error("route", fmt, 3, "field '2' is not a json field");
  mpx__kv_t path[] = {KV("routes", "a=x"), KV("field", ".a..b")};
  config_error("route", path, 2, "bad JSON path '.a..b': an empty key");
  mpx__kv_t sep[] = {KV("routes", "a=x"), KV("field", "1"), KV("separator", "::")};
  config_error("route", sep, 3, "separator '::'");
  mpx__kv_t none[] = {KV("field", "1")};
  config_error("route", none, 1, "missing required parameter 'routes'");
}

/* ---- counting reduces ---------------------------------------------------------- */

typedef struct {
  char key[32];
  uint64_t count;
} kc_t;

static kc_t *kc_find(kc_t *t, size_t *n, const char *key) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(t[i].key, key) == 0) return &t[i];
  snprintf(t[*n].key, sizeof t[0].key, "%s", key);
  t[*n].count = 0;
  return &t[(*n)++];
}

static int by_count(const void *a, const void *b) {
  const kc_t *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return strcmp(x->key, y->key);
}

/* Runs plugin over lines in batches of `batch`, each flushed (not final)
 * with `parts` partitions (0: not partitioned); then folds the partials
 * of each partition into its own instance and flushes it finally. The
 * final lines, partition after partition, into *fin; fold_into: each
 * partial's partition (-1: plain). */
static void run_partitioned(const char *plugin, const mpx__kv_t *kv, size_t nkv,
                            char **lines, size_t n, size_t batch, unsigned parts, out_t *fin,
                            int *fin_part) {
  out_t partials = {0};
  for (size_t s = 0; s < n; s += batch) {
    inst_t b = inst(plugin, kv, nkv, &partials);
    mpx__ctx_set_partitions(b.ctx, parts);
    for (size_t i = s; i < n && i < s + batch; i++) feed(b, lines[i]);
    CU_ASSERT_EQUAL(mpx__ctx_call_flush(b.ctx, b.state), 0);
    inst_free(b);
  }
  unsigned np = parts ? parts : 1;
  for (size_t i = 0; i < partials.n; i++) {
    CU_ASSERT_EQUAL(partials.tag[i].port, 0u);
    CU_ASSERT_EQUAL(partials.tag[i].direct, parts > 0);
    if (parts) CU_ASSERT_TRUE(partials.tag[i].hash < parts);
    if (parts) CU_ASSERT_TRUE(partials.len[i] > 0); /* no empty partition's partial */
  }
  for (unsigned p = 0; p < np; p++) {
    size_t before = fin->n;
    inst_t f = inst(plugin, kv, nkv, fin);
    /* The partials in reverse order: a fold does not depend on it. */
    for (size_t i = partials.n; i-- > 0;)
      if (parts == 0 || partials.tag[i].hash == p)
        CU_ASSERT_EQUAL(mpx__ctx_call_fold(f.ctx, f.state, partials.data[i], partials.len[i]), 0);
    mpx__ctx_set_final(f.ctx, true);
    CU_ASSERT_EQUAL(mpx__ctx_call_flush(f.ctx, f.state), 0);
    inst_free(f);
    for (size_t i = before; i < fin->n; i++) fin_part[i] = parts ? (int)p : -1;
  }
  out_free(&partials);
}

/* "COUNT KEY" lines: sorted by count descending then key within each
 * partition, each key in its hash's partition, and together the oracle's
 * counts (the first k of each partition when k > 0). */
static void check_counts(const out_t *fin, const int *part, kc_t *want, size_t nw,
                         unsigned parts, size_t k) {
  size_t total = 0;
  for (unsigned p = 0; p < (parts ? parts : 1); p++) {
    kc_t mine[4096];
    size_t nm = 0;
    for (size_t i = 0; i < nw; i++)
      if (parts == 0 || mpx_key_hash(want[i].key, strlen(want[i].key)) % parts == p)
        mine[nm++] = want[i];
    qsort(mine, nm, sizeof *mine, by_count);
    if (k && nm > k) nm = k;
    size_t j = 0;
    for (size_t i = 0; i < fin->n; i++) {
      if (part[i] != (parts ? (int)p : -1)) continue;
      char line[64];
      CU_ASSERT_TRUE_FATAL(j < nm);
      snprintf(line, sizeof line, "%" PRIu64 " %s", mine[j].count, mine[j].key);
      if (strcmp(fin->data[i], line) != 0)
        printf("\npartition %u line %zu: '%s', want '%s'\n", p, j, fin->data[i], line);
      CU_ASSERT_STRING_EQUAL(fin->data[i], line);
      j++;
    }
    CU_ASSERT_EQUAL(j, nm);
    total += j;
  }
  CU_ASSERT_EQUAL(total, fin->n);
}

static void make_words(char **lines, size_t n, kc_t *counts, size_t *nc) {
  *nc = 0;
  for (size_t i = 0; i < n; i++) {
    char buf[256];
    size_t len = 0;
    int words = (int)(next() % 8);
    for (int w = 0; w < words; w++) {
      char word[16];
      /* Skewed: low numbers are frequent. */
      snprintf(word, sizeof word, "w%" PRIu64, next() % (1 + next() % 300));
      kc_find(counts, nc, word)->count++;
      len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", word,
                              next() % 2 ? " " : ", ");
    }
    buf[len] = '\0';
    lines[i] = strdup(buf);
  }
}

static void test_wordcount_partitioned(void) {
  enum { N = 3000 };
  static char *lines[N];
  static kc_t counts[4096];
  static int part[8192];
  size_t nc;
  make_words(lines, N, counts, &nc);
  CU_ASSERT_TRUE(nc > 100);
  const unsigned parts[] = {0, 1, 3, 7};
  for (size_t i = 0; i < NKV(parts); i++) {
    out_t fin = {0};
    run_partitioned("wordcount", NULL, 0, lines, N, 250, parts[i], &fin, part);
    check_counts(&fin, part, counts, nc, parts[i], 0);
    out_free(&fin);
  }
  /* A malformed partial fails the fold. */
  out_t o = {0};
  inst_t w = inst("wordcount", NULL, 0, &o);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(w.ctx, w.state, "\x05\0\0\0ab", 6), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(w.ctx), "malformed partial");
  inst_free(w);
  /* mpx_emit_partition refuses a partition the stage does not have: the
   * wordcount flush with an out-of-range count cannot happen, so only a
   * plain flush of an empty state emits an (empty) partial. */
  w = inst("wordcount", NULL, 0, &o);
  mpx__ctx_set_partitions(w.ctx, 4);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(w.ctx, w.state), 0);
  CU_ASSERT_EQUAL(o.n, 0); /* partitioned: nothing for no words */
  inst_free(w);
  out_free(&o);
  for (size_t i = 0; i < N; i++) free(lines[i]);
}

static void test_topk_partitioned(void) {
  enum { N = 2000 };
  static char *lines[N];
  static kc_t counts[4096];
  static int part[8192];
  size_t nc = 0;
  for (size_t i = 0; i < N; i++) {
    char key[32];
    snprintf(key, sizeof key, "/u/%" PRIu64, next() % (1 + next() % 120));
    kc_find(counts, &nc, key)->count++;
    lines[i] = strdup(key);
  }
  mpx__kv_t kv[] = {KV("k", "5")};
  out_t fin = {0};
  run_partitioned("topk", kv, 1, lines, N, 300, 4, &fin, part);
  check_counts(&fin, part, counts, nc, 4, 5); /* each partition's own top 5 */
  CU_ASSERT_TRUE(fin.n > 5);
  /* A plain topk with counted: true over those lines: the global top 5. */
  mpx__kv_t kc[] = {KV("k", "5"), KV("counted", "true")};
  out_t glob = {0};
  static char *flines[64];
  for (size_t i = 0; i < fin.n; i++) flines[i] = fin.data[i];
  run_partitioned("topk", kc, 2, flines, fin.n, 3, 0, &glob, part);
  check_counts(&glob, part, counts, nc, 0, 5);
  out_free(&glob);
  out_free(&fin);
  /* Counted lines add their counts; a line that is not "COUNT KEY" fails
   * for good. */
  out_t o = {0};
  inst_t t = inst("topk", kc, 2, &o);
  feed(t, "3 a b");
  feed(t, "4 c");
  feed(t, "2 a b");
  feed(t, "0 ");
  const char *bad[] = {"x", "12", "-1 a", " 1 a", "99999999999999999999 a"};
  for (size_t i = 0; i < NKV(bad); i++) {
    CU_ASSERT_EQUAL(mpx__ctx_call_process(t.ctx, t.state, bad[i], strlen(bad[i])), MPX_ETASK);
    CU_ASSERT_TRUE(mpx__ctx_permanent(t.ctx));
    CU_ASSERT_TRUE(contains(mpx__ctx_error(t.ctx), "counted: want \"COUNT KEY\""));
  }
  mpx__ctx_set_final(t.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(t.ctx, t.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 3);
  CU_ASSERT_STRING_EQUAL(o.data[0], "5 a b");
  CU_ASSERT_STRING_EQUAL(o.data[1], "4 c");
  CU_ASSERT_STRING_EQUAL(o.data[2], "0 ");
  inst_free(t);
  out_free(&o);
  for (size_t i = 0; i < N; i++) free(lines[i]);
}

/* A count that would leave uint64 (found by fuzz_fields): counted lines
 * and folded partials fail, naming it, and leave the count as it was;
 * they used to wrap around silently (2 x 2^63 counted as 0). */
static void test_counter_overflow(void) {
  mpx__kv_t kc[] = {KV("k", "5"), KV("counted", "true")};
  out_t o = {0};
  inst_t t = inst("topk", kc, 2, &o);
  const char *big = "9999999999999999999 k";
  feed(t, big);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(t.ctx, t.state, big, strlen(big)), MPX_ETASK);
  CU_ASSERT_TRUE(mpx__ctx_permanent(t.ctx));
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(t.ctx), "the count of key 'k' leaves the uint64 range");
  mpx__ctx_set_final(t.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(t.ctx, t.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 1);
  CU_ASSERT_STRING_EQUAL(o.data[0], big);
  inst_free(t);
  out_free(&o);
  /* The partial of key "k" with count 2^63, folded twice or merged with
   * itself. */
  static const char half[] = "\x01\0\0\0k\0\0\0\0\0\0\0\x80";
  for (int plugin = 0; plugin < 2; plugin++) {
    const char *name = plugin ? "topk" : "wordcount";
    inst_t f = inst(name, NULL, 0, &o);
    CU_ASSERT_EQUAL(mpx__ctx_call_fold(f.ctx, f.state, half, 13), 0);
    CU_ASSERT_EQUAL(mpx__ctx_call_fold(f.ctx, f.state, half, 13), MPX_ETASK);
    CU_ASSERT_STRING_EQUAL(mpx__ctx_error(f.ctx), "a count leaves the uint64 range");
    CU_ASSERT_EQUAL(mpx__ctx_call_merge(f.ctx, f.state, half, 13, half, 13), MPX_ETASK);
    CU_ASSERT_STRING_EQUAL(mpx__ctx_error(f.ctx), "a count leaves the uint64 range");
    mpx__ctx_set_final(f.ctx, true);
    CU_ASSERT_EQUAL(mpx__ctx_call_flush(f.ctx, f.state), 0);
    CU_ASSERT_EQUAL_FATAL(o.n, 1);
    CU_ASSERT_STRING_EQUAL(o.data[0], "9223372036854775808 k");
    inst_free(f);
    out_free(&o);
  }
}

/* ---- aggregate ------------------------------------------------------------------- */

typedef struct {
  char key[32];
  uint64_t count;
  int64_t sum[2], min[2], max[2]; /* tenths */
} st_t;

static st_t *st_find(st_t *t, size_t *n, const char *key) {
  for (size_t i = 0; i < *n; i++)
    if (strcmp(t[i].key, key) == 0) return &t[i];
  memset(&t[*n], 0, sizeof t[0]);
  snprintf(t[*n].key, sizeof t[0].key, "%s", key);
  return &t[(*n)++];
}

static void st_add(st_t *s, int j, int64_t v) {
  if (s->count == 0 || v < s->min[j]) s->min[j] = v;
  if (s->count == 0 || v > s->max[j]) s->max[j] = v;
  s->sum[j] += v;
}

/* Tenths as text, written another way than the plugin does: by the
 * digits of |v| with the point put in. */
static void tenths(char *w, int64_t v) {
  char d[32];
  int n = snprintf(d, sizeof d, "%02" PRId64, v < 0 ? -v : v);
  sprintf(w, "%s%.*s.%c", v < 0 ? "-" : "", n - 1, d, d[n - 1]);
}

/* The mean in tenths, half away from zero: as awk would with integers. */
static int64_t mean_tenths(int64_t sum, uint64_t count) {
  int64_t a = sum < 0 ? -sum : sum, q = a / (int64_t)count;
  if (2 * (a - q * (int64_t)count) >= (int64_t)count) q++;
  return sum < 0 ? -q : q;
}

static int by_key(const void *a, const void *b) {
  return strcmp(((const st_t *)a)->key, ((const st_t *)b)->key);
}

/* The expected lines, sorted by key, of the keys in partition p of parts
 * (parts 0: all). nv value fields; sep between fields. */
static size_t agg_expected(st_t *st, size_t n, int nv, char sep, unsigned parts, unsigned p,
                           char (*out)[256]) {
  size_t k = 0;
  qsort(st, n, sizeof *st, by_key);
  for (size_t i = 0; i < n; i++) {
    if (parts && mpx_key_hash(st[i].key, strlen(st[i].key)) % parts != p) continue;
    int len = snprintf(out[k], 256, "%s%c%" PRIu64, st[i].key, sep, st[i].count);
    for (int j = 0; j < nv; j++) {
      char a[32], b[32], c[32], m[32];
      tenths(a, st[i].sum[j]);
      tenths(b, st[i].min[j]);
      tenths(c, st[i].max[j]);
      tenths(m, mean_tenths(st[i].sum[j], st[i].count));
      len += snprintf(out[k] + len, 256 - (size_t)len, "%c%s%c%s%c%s%c%s", sep, a, sep, b,
                      sep, c, sep, m);
    }
    k++;
  }
  return k;
}

static void check_lines(const out_t *got, const int *part, int p, char (*want)[256], size_t n) {
  size_t j = 0;
  for (size_t i = 0; i < got->n; i++) {
    if (part[i] != p) continue;
    CU_ASSERT_TRUE_FATAL(j < n);
    if (strcmp(got->data[i], want[j]) != 0)
      printf("\nline %zu: '%s', want '%s'\n", j, got->data[i], want[j]);
    CU_ASSERT_STRING_EQUAL(got->data[i], want[j]);
    j++;
  }
  CU_ASSERT_EQUAL(j, n);
}

/* Measurements: "city;temperature" with one decimal in [-99.9, 99.9]. */
static void test_aggregate_measurements(void) {
  enum { N = 6000 };
  static char *lines[N];
  static st_t st[256];
  static char want[256][256];
  static int part[1024];
  size_t ns = 0;
  for (size_t i = 0; i < N; i++) {
    char city[32], line[64];
    int64_t t = (int64_t)(next() % 1999) - 999;
    snprintf(city, sizeof city, "City %" PRIu64, next() % 97);
    snprintf(line, sizeof line, "%s;%s%" PRId64 ".%" PRId64, city, t < 0 ? "-" : "",
             (t < 0 ? -t : t) / 10, (t < 0 ? -t : t) % 10);
    st_t *s = st_find(st, &ns, city);
    st_add(s, 0, t);
    s->count++;
    lines[i] = strdup(line);
  }
  mpx__kv_t kv[] = {KV("key", "1"), KV("values", "2"), KV("separator", ";"),
                    KV("decimals", "1")};
  const unsigned parts[] = {0, 1, 4};
  for (size_t c = 0; c < NKV(parts); c++) {
    out_t fin = {0};
    run_partitioned("aggregate", kv, 4, lines, N, 700, parts[c], &fin, part);
    size_t total = 0;
    for (unsigned p = 0; p < (parts[c] ? parts[c] : 1); p++) {
      size_t n = agg_expected(st, ns, 1, ';', parts[c], p, want);
      check_lines(&fin, part, parts[c] ? (int)p : -1, want, n);
      total += n;
    }
    CU_ASSERT_EQUAL(total, ns);
    out_free(&fin);
  }
  /* One instance over everything, its flush final: the same lines. */
  out_t one = {0};
  inst_t a = inst("aggregate", kv, 4, &one);
  for (size_t i = 0; i < N; i++) feed(a, lines[i]);
  mpx__ctx_set_final(a.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(a.ctx, a.state), 0);
  inst_free(a);
  for (size_t i = 0; i < one.n; i++) part[i] = 0;
  check_lines(&one, part, 0, want, agg_expected(st, ns, 1, ';', 0, 0, want));
  out_free(&one);
  for (size_t i = 0; i < N; i++) free(lines[i]);
}

/* merge (older engines): merge(a, b) then merge(ab, c) finally, against
 * the fold of the same partials; and exact cases of the format. */
static void test_aggregate_merge_exact(void) {
  mpx__kv_t kv[] = {KV("key", "1"), KV("values", "2, 3"), KV("decimals", "1")};
  const char *rows[][3] = {
      {"b,1.5,-0.1", "a,-0.2", "\"x,y\",2,\"3\""},
      {"b,-0.5,-0.0", "a,1,2", "b,+2.00,0.1"},
      {"a,-0.6,1.", "a,.5,-99.9", "\"x,y\",0,-0.1"},
  };
  out_t parts = {0}, m = {0};
  for (int b = 0; b < 3; b++) {
    inst_t x = inst("aggregate", kv, 3, &parts);
    for (int i = 0; i < 3; i++) {
      int rc = mpx__ctx_call_process(x.ctx, x.state, rows[b][i], strlen(rows[b][i]));
      bool bad = strcmp(rows[b][i], "a,-0.2") == 0;
      CU_ASSERT_EQUAL(rc, bad ? MPX_ETASK : 0);
      if (bad) {
        CU_ASSERT_TRUE(mpx__ctx_permanent(x.ctx));
        CU_ASSERT_STRING_EQUAL(mpx__ctx_error(x.ctx), "no value field '3'");
      }
    }
    CU_ASSERT_EQUAL(mpx__ctx_call_flush(x.ctx, x.state), 0);
    inst_free(x);
  }
  CU_ASSERT_EQUAL_FATAL(parts.n, 3);
  inst_t y = inst("aggregate", kv, 3, &m);
  CU_ASSERT_EQUAL(mpx__ctx_call_merge(y.ctx, y.state, parts.data[0], parts.len[0],
                                      parts.data[1], parts.len[1]), 0);
  CU_ASSERT_EQUAL_FATAL(m.n, 1);
  mpx__ctx_set_final(y.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_merge(y.ctx, y.state, parts.data[2], parts.len[2], m.data[0],
                                      m.len[0]), 0);
  inst_free(y);
  /* a: (1, 2), (-0.6, 1), (0.5, -99.9); b: (1.5, -0.1), (-0.5, 0), (2, 0.1);
   * "x,y": (2, 3), (0, -0.1). Means: a 0.9/3 = 0.3, -96.9/3 = -32.3;
   * b 3/3 = 1.0, 0/3 = 0.0; x,y 1.0, 2.9/2 = 1.45 -> 1.5 (half away). */
  const char *want[] = {"a,3,0.9,-0.6,1.0,0.3,-96.9,-99.9,2.0,-32.3",
                        "b,3,3.0,-0.5,2.0,1.0,0.0,-0.1,0.1,0.0",
                        "x,y,2,2.0,0.0,2.0,1.0,2.9,-0.1,3.0,1.5"};
  /* m: the first merge's partial, then the final merge's line per key
   * (the key as it is, not quoted again). */
  CU_ASSERT_EQUAL_FATAL(m.n, 4);
  for (int i = 0; i < 3; i++) CU_ASSERT_STRING_EQUAL(m.data[1 + i], want[i]);
  out_free(&parts);
  out_free(&m);
}

static void test_aggregate_errors(void) {
  mpx__kv_t kv[] = {KV("key", "1"), KV("values", "2"), KV("decimals", "1")};
  out_t o = {0};
  inst_t a = inst("aggregate", kv, 3, &o);
  struct {
    const char *row, *why;
  } bad[] = {
      {"k", "no value field '2'"},
      {"k,", "value '' of field '2' is not a decimal number with at most 1 digits"},
      {"k,1.25", "value '1.25' of field '2' is not a decimal"},
      {"k,1e3", "not a decimal"},
      {"k,abc", "value 'abc'"},
      {"k,-", "value '-'"},
      {"k,922337203685477580.8", "not a decimal"},
      {"\"k,1", "CSV field 1: no closing quote"},
      {"\"k\"x,1", "CSV field 1: bytes after the closing quote"},
  };
  for (size_t i = 0; i < NKV(bad); i++) {
    CU_ASSERT_EQUAL(mpx__ctx_call_process(a.ctx, a.state, bad[i].row, strlen(bad[i].row)),
                    MPX_ETASK);
    CU_ASSERT_TRUE(mpx__ctx_permanent(a.ctx));
    if (!contains(mpx__ctx_error(a.ctx), bad[i].why))
      printf("\n'%s': '%s', want '%s'\n", bad[i].row, mpx__ctx_error(a.ctx), bad[i].why);
    CU_ASSERT_TRUE(contains(mpx__ctx_error(a.ctx), bad[i].why));
  }
  /* An overflowing sum fails the row and leaves the state as it was. */
  feed(a, "k,922337203685477580.7");
  CU_ASSERT_EQUAL(mpx__ctx_call_process(a.ctx, a.state, "k,0.1", 5), MPX_ETASK);
  CU_ASSERT_TRUE(contains(mpx__ctx_error(a.ctx), "the sum of key 'k' leaves the int64 range"));
  feed(a, "k,-0.7");
  feed(a, "k,0.5");
  feed(a, "j,1.20"); /* a trailing zero beyond the decimals is exact */
  mpx__ctx_set_final(a.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(a.ctx, a.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 2);
  CU_ASSERT_STRING_EQUAL(o.data[0], "j,1,1.2,1.2,1.2,1.2");
  CU_ASSERT_STRING_EQUAL(o.data[1], "k,3,922337203685477580.5,-0.7,922337203685477580.7,"
                                    "307445734561825860.2");
  inst_free(a);
  out_free(&o);
  /* Configuration. */
  mpx__kv_t d[] = {KV("key", "1"), KV("values", "2"), KV("decimals", "19")};
  init_error("aggregate", d, 3, "decimals must be -1 (floating point) or 0 to 18, got 19");
  mpx__kv_t v[] = {KV("key", "1"), KV("values", "2,,3")};
  init_error("aggregate", v, 2, "values: want a comma-separated list");
  mpx__kv_t mix[] = {KV("key", "1"), KV("values", ".t")};
  init_error("aggregate", mix, 2, "fields '1' and '.t': all CSV columns or all JSON paths");
  mpx__kv_t f[] = {KV("key", ".k"), KV("values", ".v"), KV("format", "csv")};
  init_error("aggregate", f, 3, "field '.k' is not a csv field");
  mpx__kv_t s[] = {KV("key", "1"), KV("values", "2"), KV("separator", "")};
  init_error("aggregate", s, 3, "separator '': want one byte");
  mpx__kv_t nokey[] = {KV("values", "2")};
  config_error("aggregate", nokey, 1, "missing required parameter 'key'");
  /* A partial made with other settings is refused by fold. */
  mpx__kv_t two[] = {KV("key", "1"), KV("values", "2,3"), KV("decimals", "1")};
  inst_t x = inst("aggregate", two, 3, &o);
  feed(x, "k,1,2");
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(x.ctx, x.state), 0);
  inst_free(x);
  CU_ASSERT_EQUAL_FATAL(o.n, 1);
  inst_t y = inst("aggregate", kv, 3, &o);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(y.ctx, y.state, o.data[0], o.len[0]), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(y.ctx), "malformed partial");
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(y.ctx, y.state, "A", 1), MPX_ETASK);
  inst_free(y);
  out_free(&o);
}

/* An aggregate partial (agg.h) of one key with the given count and, for
 * one fixed-point value field, sum, min and max: into w, its length. */
static size_t agg_partial(char *w, const char *key, uint64_t count, int64_t sum, int64_t min,
                          int64_t max) {
  uint64_t v[4] = {count, (uint64_t)sum, (uint64_t)min, (uint64_t)max};
  uint32_t kl = (uint32_t)strlen(key);
  size_t n = 0;
  memcpy(w, "A\x01\x01\x00", 4), n += 4;
  for (int i = 0; i < 4; i++) w[n++] = (char)(kl >> (8 * i));
  memcpy(w + n, key, kl), n += kl;
  for (int j = 0; j < 4; j++)
    for (int i = 0; i < 8; i++) w[n++] = (char)(v[j] >> (8 * i));
  return n;
}

/* Partials at the edges of their numbers (found by fuzz_fields): a row
 * count that would leave uint64 fails the fold and leaves the count as it
 * was (it wrapped to 0, and the final flush divided by it: SIGFPE); the
 * mean of a sum of INT64_MIN over one row is INT64_MIN (it negated
 * INT64_MIN: undefined behaviour, caught by the test-asan build). */
static void test_aggregate_partial_edges(void) {
  mpx__kv_t kv[] = {KV("key", "1"), KV("values", "2"), KV("decimals", "1")};
  char p[64];
  out_t o = {0};
  inst_t a = inst("aggregate", kv, 3, &o);
  size_t n = agg_partial(p, "k", (uint64_t)1 << 63, 0, 0, 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(a.ctx, a.state, p, n), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(a.ctx, a.state, p, n), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(a.ctx), "a count or sum leaves its range "
                         "(uint64 counts, int64 fixed-point sums)");
  n = agg_partial(p, "m", 1, INT64_MIN, INT64_MIN, INT64_MIN);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(a.ctx, a.state, p, n), 0);
  mpx__ctx_set_final(a.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(a.ctx, a.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 2);
  CU_ASSERT_STRING_EQUAL(o.data[0], "k,9223372036854775808,0.0,0.0,0.0,0.0");
  CU_ASSERT_STRING_EQUAL(o.data[1], "m,1,-922337203685477580.8,-922337203685477580.8,"
                                    "-922337203685477580.8,-922337203685477580.8");
  inst_free(a);
  out_free(&o);
}

/* A floating-point value is the number alone: whitespace before it is
 * refused whatever the character, as a space was (found by fuzz_fields:
 * strtod skipped a tab, a newline or a '\r'). */
static void test_aggregate_double_space(void) {
  mpx__kv_t kv[] = {KV("key", "1"), KV("values", "2")};
  out_t o = {0};
  inst_t a = inst("aggregate", kv, 2, &o);
  const char *bad[] = {"k, 5", "k,\t5", "k,\"\n5\"", "k,\r5", "k,\v5", "k,\f5", "k,5 "};
  for (size_t i = 0; i < NKV(bad); i++) {
    CU_ASSERT_EQUAL(mpx__ctx_call_process(a.ctx, a.state, bad[i], strlen(bad[i])), MPX_ETASK);
    CU_ASSERT_TRUE(contains(mpx__ctx_error(a.ctx), "is not a number"));
  }
  feed(a, "k,-5e-1");
  mpx__ctx_set_final(a.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(a.ctx, a.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 1);
  CU_ASSERT_STRING_EQUAL(o.data[0], "k,1,-0.5,-0.5,-0.5,-0.5");
  inst_free(a);
  out_free(&o);
}

/* JSON lines, two values, floating point; values chosen so that every sum
 * is exact in binary (multiples of 1/4), hence one right answer. */
static void test_aggregate_json(void) {
  mpx__kv_t kv[] = {KV("key", ".station.name"), KV("values", ".m[0],.m[1]"),
                    KV("separator", "|")};
  out_t o = {0};
  inst_t a = inst("aggregate", kv, 3, &o);
  feed(a, "{\"station\": {\"id\": 1, \"name\": \"Z\\u00fcrich\"}, \"m\": [1.25, -2]}");
  feed(a, "{\"m\": [0.5, 4e1], \"station\": {\"name\": \"Z\xc3\xbcrich\"}}");
  feed(a, "{\"station\": {\"name\": \"Oslo\"}, \"m\": [\"3\", 1]}"); /* a numeric string */
  const char *nokey = "{\"station\": {}, \"m\": [1, 2]}";
  CU_ASSERT_EQUAL(mpx__ctx_call_process(a.ctx, a.state, nokey, strlen(nokey)), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(a.ctx), "no key field '.station.name'");
  const char *nan = "{\"station\": {\"name\": \"x\"}, \"m\": [1, \"nan\"]}";
  CU_ASSERT_EQUAL(mpx__ctx_call_process(a.ctx, a.state, nan, strlen(nan)), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(a.ctx), "value 'nan' of field '.m[1]' is not a number");
  mpx__ctx_set_final(a.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(a.ctx, a.state), 0);
  CU_ASSERT_EQUAL_FATAL(o.n, 2);
  CU_ASSERT_STRING_EQUAL(o.data[0], "Oslo|1|3|3|3|3|1|1|1|1");
  CU_ASSERT_STRING_EQUAL(o.data[1], "Z\xc3\xbcrich|2|1.75|0.5|1.25|0.875|38|-2|40|19");
  inst_free(a);
  out_free(&o);
}

MPX_TEST_MAIN("plugins_graph", MPX_TEST(test_grep_ports), MPX_TEST(test_route_lines),
              MPX_TEST(test_route_csv), MPX_TEST(test_route_json), MPX_TEST(test_route_config),
              MPX_TEST(test_wordcount_partitioned), MPX_TEST(test_topk_partitioned),
              MPX_TEST(test_counter_overflow),
              MPX_TEST(test_aggregate_measurements), MPX_TEST(test_aggregate_merge_exact),
              MPX_TEST(test_aggregate_errors),
              MPX_TEST(test_aggregate_partial_edges),
              MPX_TEST(test_aggregate_double_space), MPX_TEST(test_aggregate_json))
