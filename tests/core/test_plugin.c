/* Task plugins: the loader (by name, by path, broken plugins, the search
 * path listing), parameter validation and its messages, the host services
 * a plugin gets from its context, and every shipped plugin run in-process
 * against outputs computed here independently. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/pipeline/plugin_host.h"
#include "mpx.h"
#include "../mpx_test.h"
#include <xxhash.h>

#define BAD(n) BAD_TASK_DIR "/mpx_task_" n ".so"
#define KV(k, v) ((mpx__kv_t){(k), (v)})
#define NKV(a) (sizeof(a) / sizeof((a)[0]))

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

/* ---- collecting outputs ---------------------------------------------------- */

typedef struct {
  size_t n, cap;
  char **data; /* each NUL-terminated after its len bytes */
  size_t *len;
} items_t;

static void items_add(items_t *it, const void *data, size_t len) {
  if (it->n == it->cap) {
    it->cap = it->cap ? it->cap * 2 : 16;
    it->data = realloc(it->data, it->cap * sizeof *it->data);
    it->len = realloc(it->len, it->cap * sizeof *it->len);
  }
  it->data[it->n] = malloc(len + 1);
  if (len) memcpy(it->data[it->n], data, len);
  it->data[it->n][len] = '\0';
  it->len[it->n++] = len;
}

static void items_adds(items_t *it, const char *s) {
  items_add(it, s, strlen(s));
}

static void items_free(items_t *it) {
  for (size_t i = 0; i < it->n; i++) free(it->data[i]);
  free(it->data);
  free(it->len);
  memset(it, 0, sizeof *it);
}

static int collect(void *arg, const void *data, size_t len) {
  items_add(arg, data, len);
  return 0;
}

static int items_equal(const items_t *a, const items_t *b) {
  if (a->n != b->n) return 0;
  for (size_t i = 0; i < a->n; i++)
    if (a->len[i] != b->len[i] || memcmp(a->data[i], b->data[i], a->len[i]))
      return 0;
  return 1;
}

static void items_show_diff(const char *what, const items_t *got,
                            const items_t *want) {
  if (items_equal(got, want)) return;
  printf("\n%s: got %zu items, want %zu\n", what, got->n, want->n);
  for (size_t i = 0; i < got->n || i < want->n; i++) {
    const char *g = i < got->n ? got->data[i] : "(none)";
    const char *w = i < want->n ? want->data[i] : "(none)";
    if (i >= got->n || i >= want->n || got->len[i] != want->len[i] ||
        memcmp(g, w, got->len[i])) {
      printf("  first difference at %zu: got '%.60s' (%zu), want '%.60s' "
             "(%zu)\n", i, g, i < got->n ? got->len[i] : 0, w,
             i < want->n ? want->len[i] : 0);
      break;
    }
  }
}

static uint64_t le64(const char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | (unsigned char)p[i];
  return v;
}

static void put_le64(char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (char)(v >> (8 * i));
}

/* ---- running plugins --------------------------------------------------------- */

static const mpx_plugin_t *load(const char *name) {
  mpx__plugin_t *p = NULL;
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
  int rc = mpx__plugin_load(&p, name);
  if (rc != 0) printf("\nload %s: %s\n", name, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return mpx__plugin_desc(p);
}

/* A context with its state made by init (asserted to succeed). */
typedef struct {
  mpx_plugin_ctx_t *ctx;
  void *state;
} inst_t;

static inst_t inst_new(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                       unsigned index, unsigned count, items_t *out) {
  inst_t in = {NULL, NULL};
  size_t bad;
  int rc = mpx__ctx_new(&in.ctx, d, NULL, kv, nkv, &bad, index, count, NULL,
                        out ? collect : NULL, out);
  if (rc != 0) printf("\nctx_new %s: %s\n", d->name, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  rc = mpx__ctx_call_init(in.ctx, &in.state);
  if (rc != 0) printf("\ninit %s: %s\n", d->name, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return in;
}

static void inst_free(inst_t in) {
  mpx__ctx_call_fini(in.ctx, in.state);
  mpx__ctx_free(in.ctx);
}

/* Runs a source instance to its end. */
static void run_source(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                       unsigned index, unsigned count, items_t *out,
                       uint64_t *hint) {
  inst_t in = inst_new(d, kv, nkv, index, count, out);
  int rc, calls = 0;
  if (hint) *hint = mpx__ctx_call_size_hint(in.ctx, in.state);
  while ((rc = mpx__ctx_call_generate(in.ctx, in.state)) == 1 &&
         ++calls < 10000000)
    ;
  if (rc != 0) printf("\ngenerate %s: %s\n", d->name, mpx_last_error());
  CU_ASSERT_EQUAL(rc, 0);
  inst_free(in);
}

/* Feeds every item of `in` to one map or sink instance, then flushes. */
static void run_map(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                    const items_t *input, items_t *out) {
  inst_t in = inst_new(d, kv, nkv, 0, 1, out);
  for (size_t i = 0; i < input->n; i++)
    CU_ASSERT_EQUAL(mpx__ctx_call_process(in.ctx, in.state, input->data[i],
                                          input->len[i]), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(in.ctx, in.state), 0);
  inst_free(in);
}

/* ---- the loader ---------------------------------------------------------------- */

static const char *shipped[] = {"range", "lines", "primes", "grep",
                                "wordcount", "topk", "checksum", "field",
                                "print", "jsonl", "route", "aggregate"};
static const mpx_plugin_kind_t shipped_kind[] = {
    MPX_PLUGIN_SOURCE, MPX_PLUGIN_SOURCE, MPX_PLUGIN_MAP,
    MPX_PLUGIN_MAP, MPX_PLUGIN_REDUCE, MPX_PLUGIN_REDUCE,
    MPX_PLUGIN_MAP, MPX_PLUGIN_MAP, MPX_PLUGIN_SINK, MPX_PLUGIN_SINK,
    MPX_PLUGIN_MAP, MPX_PLUGIN_REDUCE};

static void test_load_shipped(void) {
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
  for (size_t i = 0; i < NKV(shipped); i++) {
    mpx__plugin_t *p = NULL, *again = NULL, *bypath = NULL;
    char path[512];
    CU_ASSERT_EQUAL_FATAL(mpx__plugin_load(&p, shipped[i]), 0);
    const mpx_plugin_t *d = mpx__plugin_desc(p);
    CU_ASSERT_STRING_EQUAL(d->name, shipped[i]);
    CU_ASSERT_EQUAL(d->kind, shipped_kind[i]);
    CU_ASSERT_EQUAL(mpx__plugin_check(d, "test"), 0);
    CU_ASSERT_PTR_NOT_NULL(d->description);
    snprintf(path, sizeof path, PLUGIN_DIR "/mpx_task_%s.so", shipped[i]);
    CU_ASSERT_STRING_EQUAL(mpx__plugin_path(p), path);
    CU_ASSERT_EQUAL(mpx__plugin_load(&again, shipped[i]), 0);
    CU_ASSERT_PTR_EQUAL(again, p);
    CU_ASSERT_EQUAL(mpx__plugin_load(&bypath, path), 0);
    CU_ASSERT_PTR_EQUAL(bypath, p);
  }
  CU_ASSERT_STRING_EQUAL(mpx_plugin_kind_name(MPX_PLUGIN_REDUCE), "reduce");
  CU_ASSERT_STRING_EQUAL(mpx_plugin_kind_name((mpx_plugin_kind_t)9), "?");
}

static void test_load_missing(void) {
  mpx__plugin_t *p = (mpx__plugin_t *)1;
  setenv("MPX_PLUGIN_PATH", "/nonexistent:" PLUGIN_DIR, 1);
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, "nosuch"), MPX_ENOENT);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "no plugin 'nosuch': no "
                          "mpx_task_nosuch.so in /nonexistent:" PLUGIN_DIR));
  CU_ASSERT_TRUE(contains(mpx_last_error(), "(set MPX_PLUGIN_PATH to add "
                          "directories) (no such file or directory)"));
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("missing")), MPX_ENOENT);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "plugin file '" BAD("missing")
                         "' does not exist (no such file or directory)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, "a.b"), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, ""), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx__plugin_load(NULL, "grep"), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, "/etc/passwd"), MPX_EPLUGIN);
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
}

/* ABI 1.1 added `flags` at the end: a 1.0 descriptor (no room for it)
 * still loads and reads as no flags, whatever the bytes after it. */
static void test_abi_minor_flags(void) {
  const mpx_plugin_t *range = load("range"), *grep = load("grep");
  CU_ASSERT_EQUAL(mpx__plugin_flags(range), MPX_PLUGIN_SPLITS);
  CU_ASSERT_EQUAL(mpx__plugin_flags(grep), 0);
  mpx_plugin_t old = *range;
  old.struct_size = (uint32_t)offsetof(mpx_plugin_t, flags);
  old.abi_minor = 0;
  CU_ASSERT_EQUAL(mpx__plugin_check(&old, "old"), 0);
  CU_ASSERT_EQUAL(mpx__plugin_flags(&old), 0);
  old.struct_size--;
  CU_ASSERT_EQUAL(mpx__plugin_check(&old, "old"), MPX_EABI);
}

static void test_load_broken(void) {
  mpx__plugin_t *p = NULL;
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("text")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "cannot load plugin '"
                          BAD("text") "': "));
  CU_ASSERT_TRUE(contains(mpx_last_error(), "ELF") ||
                 contains(mpx_last_error(), "too short"));
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("nodesc")), MPX_ENOSYM);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "'" BAD("nodesc") "' exports no "
                         "mpx_plugin_descriptor: not an mpx plugin (symbol "
                         "not found)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("abi")), MPX_EABI);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), BAD("abi") ": built for plugin "
                         "ABI 99.0, this libmpx speaks 1.2: rebuild it "
                         "(plugin ABI mismatch)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("magic")), MPX_EABI);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), BAD("magic") ": descriptor has "
                         "magic 0x12345678, not 0x4c50584d: not an mpx task "
                         "plugin (plugin ABI mismatch)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("small")), MPX_EABI);
  CU_ASSERT_TRUE(contains(mpx_last_error(), BAD("small") ": descriptor is "
                          "16 bytes, ABI 1.0 needs "));
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("nomap")), MPX_EPLUGIN);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), BAD("nomap") ": map plugin "
                         "'nomap' has no process callback (plugin could not "
                         "be loaded)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("noreduce")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "reduce plugin 'noreduce' has "
                          "no merge (or fold) callback"));
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("badname")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "plugin name 'Bad Name' is not "
                          "made of a-z, 0-9, '_' and '-'"));
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("baddefault")), MPX_EPLUGIN);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), BAD("baddefault") ": plugin "
                         "'baddefault': the default of parameter 'n' must be "
                         "an integer, got 'ten' (plugin could not be "
                         "loaded)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, BAD("dupparam")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "parameter 'n' is declared "
                          "twice"));
  CU_ASSERT_PTR_NULL(p);
  /* The check itself, on descriptors that never saw a file. */
  CU_ASSERT_EQUAL(mpx__plugin_check(NULL, "x"), MPX_EINVAL);
  mpx_plugin_t d = {MPX_PLUGIN_HEADER, .name = "src",
                    .kind = MPX_PLUGIN_SOURCE};
  CU_ASSERT_EQUAL(mpx__plugin_check(&d, "linked"), MPX_EPLUGIN);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "linked: source plugin 'src' has "
                         "no generate callback (plugin could not be loaded)");
  d.kind = (mpx_plugin_kind_t)7;
  CU_ASSERT_EQUAL(mpx__plugin_check(&d, "linked"), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "unknown kind 7"));
  d.name = NULL;
  CU_ASSERT_EQUAL(mpx__plugin_check(&d, "linked"), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "descriptor has no name"));
}

/* By name, the file must hold the plugin of that name; by path, any. */
static void test_load_by_name_rules(void) {
  mpx__plugin_t *p = NULL, *q = NULL;
  setenv("MPX_PLUGIN_PATH", "/nonexistent:" BAD_TASK_DIR, 1);
  CU_ASSERT_EQUAL(mpx__plugin_load(&p, "renamed"), 0);
  CU_ASSERT_STRING_EQUAL(mpx__plugin_desc(p)->name, "renamed");
  CU_ASSERT_EQUAL(mpx__plugin_load(&q, "other"), MPX_EPLUGIN);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "'" BAD("other") "' is plugin "
                         "'renamed', not 'other' (plugin could not be "
                         "loaded)");
  CU_ASSERT_EQUAL(mpx__plugin_load(&q, BAD("other")), 0);
  CU_ASSERT_STRING_EQUAL(mpx__plugin_desc(q)->name, "renamed");
  CU_ASSERT_EQUAL(mpx__plugin_load(&q, "abi"), MPX_EABI);
  /* Loaded plugins are kept by name: range is found although its
   * directory is no longer on the path. */
  CU_ASSERT_EQUAL(mpx__plugin_load(&q, "range"), 0);
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
}

/* ---- listing the search path --------------------------------------------------- */

typedef struct {
  char lines[64][600];
  int n;
  const char *only[3]; /* directories whose files are recorded */
} scan_t;

static void on_scan(void *arg, const char *kind, const char *name,
                    const char *path, const char *desc, const char *error) {
  scan_t *s = arg;
  int mine = 0;
  for (int i = 0; i < 3 && s->only[i]; i++)
    mine |= strncmp(path, s->only[i], strlen(s->only[i])) == 0;
  if (!mine || s->n == 64) return;
  CU_ASSERT_TRUE((desc == NULL) != (error == NULL));
  snprintf(s->lines[s->n++], sizeof s->lines[0], "%s %s %s: %s", kind, name,
           path, error ? error : desc);
}

static int copy_file(const char *from, const char *to) {
  char buf[65536];
  ssize_t n;
  int in = open(from, O_RDONLY), out = open(to, O_WRONLY | O_CREAT | O_TRUNC,
                                            0755);
  int ok = in >= 0 && out >= 0;
  while (ok && (n = read(in, buf, sizeof buf)) > 0)
    ok = write(out, buf, (size_t)n) == n;
  if (in >= 0) close(in);
  if (out >= 0) close(out);
  return ok ? 0 : -1;
}

static void test_scan(void) {
  scan_t s = {.only = {BAD_TASK_DIR "/"}};
  setenv("MPX_PLUGIN_PATH", BAD_TASK_DIR ":" BAD_TASK_DIR "/", 1);
  CU_ASSERT_EQUAL(mpx__plugin_scan(MPX__SCAN_TASKS, on_scan, &s), 0);
  const char *want[] = {
      "task abi " BAD("abi") ": " BAD("abi") ": built for plugin ABI 99.0, "
      "this libmpx speaks 1.2: rebuild it (plugin ABI mismatch)",
      "task baddefault ",
      "task badname ",
      "task dupparam ",
      "task magic ",
      "task nodesc ",
      "task nomap " BAD("nomap") ": " BAD("nomap") ": map plugin 'nomap' has "
      "no process callback (plugin could not be loaded)",
      "task noreduce ",
      "map other " BAD("other") ": '" BAD("other") "' is plugin 'renamed', "
      "not 'other' (plugin could not be loaded)",
      "map renamed " BAD("renamed") ": echoes its input",
      "task small ",
      "task text ",
  };
  CU_ASSERT_EQUAL(s.n, (int)NKV(want));
  for (int i = 0; i < s.n && i < (int)NKV(want); i++) {
    CU_ASSERT_EQUAL(strncmp(s.lines[i], want[i], strlen(want[i])), 0);
    if (strncmp(s.lines[i], want[i], strlen(want[i])) != 0)
      printf("\nscan %d: %s\n  want %s\n", i, s.lines[i], want[i]);
  }

  /* Shadowing: a copy of range earlier on the path wins; tasks come
   * before codecs. */
  char dir[] = "/tmp/mpx_test_scan_XXXXXX", copy[64], line[600];
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
  snprintf(copy, sizeof copy, "%s/mpx_task_range.so", dir);
  CU_ASSERT_EQUAL_FATAL(copy_file(PLUGIN_DIR "/mpx_task_range.so", copy), 0);
  char path[256];
  snprintf(path, sizeof path, "%s:%s", dir, PLUGIN_DIR);
  setenv("MPX_PLUGIN_PATH", path, 1);
  scan_t t = {.only = {dir, PLUGIN_DIR "/"}};
  CU_ASSERT_EQUAL(mpx__plugin_scan(MPX__SCAN_TASKS | MPX__SCAN_CODECS,
                                   on_scan, &t), 0);
  const char *names[] = {"aggregate", "checksum", "field", "grep", "jsonl",
                         "lines", "primes", "print", "range", "range", "route",
                         "topk", "wordcount", "json", "msgpack", "pickle", "raw"};
  CU_ASSERT_EQUAL(t.n, (int)NKV(names));
  for (int i = 0; i < t.n && i < (int)NKV(names); i++) {
    char name[64];
    sscanf(t.lines[i], "%*s %63s", name);
    CU_ASSERT_STRING_EQUAL(name, names[i]);
  }
  snprintf(line, sizeof line, "source range %s: the integers", copy);
  CU_ASSERT_EQUAL(strncmp(t.lines[8], line, strlen(line)), 0);
  snprintf(line, sizeof line, "task range " PLUGIN_DIR "/mpx_task_range.so: "
           "shadowed by %s", copy);
  CU_ASSERT_STRING_EQUAL(t.lines[9], line);
  CU_ASSERT_EQUAL(strncmp(t.lines[13], "codec json ", 11), 0);
  CU_ASSERT_EQUAL(strncmp(t.lines[4], "sink jsonl ", 11), 0);
  CU_ASSERT_EQUAL(strncmp(t.lines[12], "reduce wordcount ", 17), 0);
  CU_ASSERT_EQUAL(strncmp(t.lines[2], "map field ", 10), 0);
  unlink(copy);
  rmdir(dir);
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
}

/* ---- parameters ------------------------------------------------------------------ */

/* A map linked into the test: its process does what its input says. */
static int demo_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                        size_t len) {
  char cmd[32], buf[256];
  (void)state;
  snprintf(cmd, sizeof cmd, "%.*s", (int)len, (const char *)in);
  if (strcmp(cmd, "emit") == 0) return mpx_emit(ctx, in, len);
  if (strcmp(cmd, "reserve") == 0) {
    char *p = mpx_emit_reserve(ctx, 10);
    if (p == NULL) return MPX_ENOMEM;
    memcpy(p, "reserved!!", 10);
    return mpx_emit_commit(ctx, 8);
  }
  if (strcmp(cmd, "obj") == 0) {
    mpx_obj_t *o = mpx_obj_int(42);
    int rc = mpx_emit_obj(ctx, o);
    mpx_obj_release(o);
    return rc;
  }
  if (strcmp(cmd, "fail") == 0) return mpx_plugin_fail(ctx, "boom %d", 7);
  if (strcmp(cmd, "code") == 0) return MPX_EIO;
  if (strcmp(cmd, "positive") == 0) return 3;
  if (strcmp(cmd, "open") == 0) return mpx_emit_reserve(ctx, 4) ? 0 : -1;
  if (strcmp(cmd, "twice") == 0) {
    if (mpx_emit_reserve(ctx, 4) == NULL) return -1;
    if (mpx_emit_reserve(ctx, 4) != NULL) return -2; /* one at a time */
    int rc = mpx_emit(ctx, "x", 1);
    if (rc != MPX_ESTATE) return -3;
    mpx__ctx_clear_error(ctx);
    return mpx_emit_commit(ctx, 0);
  }
  if (strcmp(cmd, "commit") == 0) return mpx_emit_commit(ctx, 1);
  if (strcmp(cmd, "over") == 0) {
    if (mpx_emit_reserve(ctx, 2) == NULL) return -1;
    return mpx_emit_commit(ctx, 3);
  }
  if (strcmp(cmd, "state") == 0) {
    snprintf(buf, sizeof buf, "cancelled=%d final=%d worker=%u/%u",
             mpx_cancelled(ctx), mpx_reduce_final(ctx),
             mpx_worker_index(ctx), mpx_worker_count(ctx));
    return mpx_emit(ctx, buf, strlen(buf));
  }
  if (strcmp(cmd, "params") == 0) {
    snprintf(buf, sizeof buf, "n=%" PRId64 " ratio=%g flag=%d name=%s "
             "opt=%" PRId64 "/%d", mpx_param_int(ctx, "n"),
             mpx_param_float(ctx, "ratio"), mpx_param_bool(ctx, "flag"),
             mpx_param_str(ctx, "name"), mpx_param_int(ctx, "opt"),
             mpx_param_has(ctx, "opt"));
    return mpx_emit(ctx, buf, strlen(buf));
  }
  if (strcmp(cmd, "log") == 0) {
    mpx_plugin_log(ctx, MPX_LOG_WARN, "hello %d", 5);
    return 0;
  }
  return mpx_plugin_fail(ctx, "unknown command '%s'", cmd);
}

static const mpx_param_def_t demo_params[] = {
    {"n", MPX_PARAM_INT, NULL, true, "required"},
    {"ratio", MPX_PARAM_FLOAT, "0.5", false, ""},
    {"flag", MPX_PARAM_BOOL, "false", false, ""},
    {"name", MPX_PARAM_STRING, "x", false, ""},
    {"opt", MPX_PARAM_INT, NULL, false, "no default"},
};

static const mpx_plugin_t demo = {
    MPX_PLUGIN_HEADER,  .name = "demo",         .version = "1",
    .description = "",  .kind = MPX_PLUGIN_MAP, .params = demo_params,
    .n_params = 5,      .process = demo_process,
};

/* The validation error of kv against d: "" when valid; *bad set. */
static const char *param_error(const mpx_plugin_t *d, const mpx__kv_t *kv,
                               size_t nkv, size_t *bad) {
  mpx_plugin_ctx_t *c = (mpx_plugin_ctx_t *)1;
  size_t bad2 = 12345;
  int rc = mpx__ctx_new(&c, d, NULL, kv, nkv, bad, 0, 1, NULL, NULL, NULL);
  if (rc == 0) {
    mpx__ctx_free(c);
    CU_ASSERT_EQUAL(mpx__params_check(d, kv, nkv, &bad2), 0);
    return "";
  }
  CU_ASSERT_EQUAL(rc, MPX_ECONFIG);
  CU_ASSERT_PTR_NULL(c);
  static char msg[512];
  snprintf(msg, sizeof msg, "%s", mpx_last_error());
  CU_ASSERT_EQUAL(mpx__params_check(d, kv, nkv, &bad2), MPX_ECONFIG);
  CU_ASSERT_EQUAL(bad2, *bad);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), msg);
  return msg;
}

/* The "params" output of demo for kv (which must be valid). */
static void demo_params_out(const mpx__kv_t *kv, size_t nkv, char *out,
                            size_t n) {
  items_t got = {0};
  inst_t in = inst_new(&demo, kv, nkv, 0, 1, &got);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(in.ctx, in.state, "params", 6), 0);
  inst_free(in);
  CU_ASSERT_EQUAL_FATAL(got.n, 1);
  snprintf(out, n, "%s", got.data[0]);
  items_free(&got);
}

static void test_params(void) {
  size_t bad;
  char out[256];
  mpx__kv_t unknown[] = {KV("n", "1"), KV("patern", "x")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, unknown, 2, &bad),
                         "plugin 'demo': unknown parameter 'patern' (known: "
                         "n, ratio, flag, name, opt) (configuration error)");
  CU_ASSERT_EQUAL(bad, 1);
  mpx__kv_t notint[] = {KV("n", "ten")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, notint, 1, &bad),
                         "plugin 'demo': parameter 'n' must be an integer, "
                         "got 'ten' (configuration error)");
  CU_ASSERT_EQUAL(bad, 0);
  mpx__kv_t notfloat[] = {KV("n", "1"), KV("ratio", "half")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, notfloat, 2, &bad),
                         "plugin 'demo': parameter 'ratio' must be a number, "
                         "got 'half' (configuration error)");
  CU_ASSERT_EQUAL(bad, 1);
  mpx__kv_t notbool[] = {KV("flag", "maybe"), KV("n", "1")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, notbool, 2, &bad),
                         "plugin 'demo': parameter 'flag' must be true or "
                         "false, got 'maybe' (configuration error)");
  CU_ASSERT_EQUAL(bad, 0);
  mpx__kv_t missing[] = {KV("ratio", "2")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, missing, 1, &bad),
                         "plugin 'demo': missing required parameter 'n' "
                         "(configuration error)");
  CU_ASSERT_EQUAL(bad, SIZE_MAX);
  CU_ASSERT_STRING_EQUAL(param_error(&demo, NULL, 0, &bad),
                         "plugin 'demo': missing required parameter 'n' "
                         "(configuration error)");
  mpx__kv_t novalue[] = {KV("n", NULL)};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, novalue, 1, &bad),
                         "plugin 'demo': parameter 'n' has no value "
                         "(configuration error)");

  /* Integers: decimal, signs, hex, the int64 range, nothing around. */
  const char *ints_ok[][2] = {{"0", "0"}, {"+7", "7"}, {"-12", "-12"},
                              {"0x10", "16"}, {"-0X1f", "-31"},
                              {"9223372036854775807", "9223372036854775807"},
                              {"-9223372036854775808", "-9223372036854775808"}};
  for (size_t i = 0; i < NKV(ints_ok); i++) {
    mpx__kv_t kv[] = {KV("n", ints_ok[i][0])};
    char want[128];
    CU_ASSERT_STRING_EQUAL(param_error(&demo, kv, 1, &bad), "");
    demo_params_out(kv, 1, out, sizeof out);
    snprintf(want, sizeof want, "n=%s ratio=0.5 flag=0 name=x opt=0/0",
             ints_ok[i][1]);
    CU_ASSERT_STRING_EQUAL(out, want);
  }
  const char *ints_bad[] = {"", " 5", "5 ", "1.0", "0x", "--1", "1e3", "abc"};
  for (size_t i = 0; i < NKV(ints_bad); i++) {
    mpx__kv_t kv[] = {KV("n", ints_bad[i])};
    char want[128];
    snprintf(want, sizeof want, "plugin 'demo': parameter 'n' must be an "
             "integer, got '%s' (configuration error)", ints_bad[i]);
    CU_ASSERT_STRING_EQUAL(param_error(&demo, kv, 1, &bad), want);
  }
  mpx__kv_t big[] = {KV("n", "9223372036854775808")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, big, 1, &bad),
                         "plugin 'demo': parameter 'n' must be an integer in "
                         "the int64 range, got '9223372036854775808' "
                         "(configuration error)");
  mpx__kv_t huge[] = {KV("n", "1"), KV("ratio", "1e999")};
  CU_ASSERT_STRING_EQUAL(param_error(&demo, huge, 2, &bad),
                         "plugin 'demo': parameter 'ratio' is out of range "
                         "for a double: '1e999' (configuration error)");

  /* Floats, bools, strings; defaults; a later value overrides. */
  const char *floats[][2] = {{"2.5", "2.5"}, {"-1e-3", "-0.001"},
                             {".inf", "inf"}, {"-.Inf", "-inf"},
                             {".nan", "nan"}, {"7", "7"}};
  for (size_t i = 0; i < NKV(floats); i++) {
    mpx__kv_t kv[] = {KV("n", "1"), KV("ratio", floats[i][0])};
    char want[128];
    demo_params_out(kv, 2, out, sizeof out);
    snprintf(want, sizeof want, "n=1 ratio=%s flag=0 name=x opt=0/0",
             floats[i][1]);
    CU_ASSERT_STRING_EQUAL(out, want);
  }
  const char *bools[][2] = {{"true", "1"}, {"Yes", "1"}, {"ON", "1"},
                            {"1", "1"}, {"False", "0"}, {"no", "0"},
                            {"off", "0"}, {"0", "0"}};
  for (size_t i = 0; i < NKV(bools); i++) {
    mpx__kv_t kv[] = {KV("n", "1"), KV("flag", bools[i][0])};
    char want[128];
    demo_params_out(kv, 2, out, sizeof out);
    snprintf(want, sizeof want, "n=1 ratio=0.5 flag=%s name=x opt=0/0",
             bools[i][1]);
    CU_ASSERT_STRING_EQUAL(out, want);
  }
  mpx__kv_t all[] = {KV("n", "1"), KV("name", "a b"), KV("opt", "-4"),
                     KV("n", "2"), KV("name", "")};
  demo_params_out(all, NKV(all), out, sizeof out);
  CU_ASSERT_STRING_EQUAL(out, "n=2 ratio=0.5 flag=0 name= opt=-4/1");

  /* The shipped plugins' own messages. */
  mpx__kv_t g[] = {KV("patern", "x")};
  CU_ASSERT_STRING_EQUAL(param_error(load("grep"), g, 1, &bad),
                         "plugin 'grep': unknown parameter 'patern' (known: "
                         "pattern, invert) (configuration error)");
  CU_ASSERT_STRING_EQUAL(param_error(load("grep"), NULL, 0, &bad),
                         "plugin 'grep': missing required parameter "
                         "'pattern' (configuration error)");
  mpx__kv_t r[] = {KV("stop", "ten")};
  CU_ASSERT_STRING_EQUAL(param_error(load("range"), r, 1, &bad),
                         "plugin 'range': parameter 'stop' must be an "
                         "integer, got 'ten' (configuration error)");
  mpx__kv_t p[] = {KV("format", "text")};
  CU_ASSERT_STRING_EQUAL(param_error(load("primes"), p, 1, &bad),
                         "plugin 'primes': unknown parameter 'format' (it "
                         "takes no parameters) (configuration error)");
}

/* Parameters travel to a worker as bytes and come back the same. */
static void test_params_encode(void) {
  mpx__kv_t kv[] = {KV("n", "-9223372036854775808"), KV("ratio", "0.1"),
                    KV("flag", "yes"), KV("name", "ünï\tcode")};
  mpx_plugin_ctx_t *c, *d;
  mpx_wbuf_t b;
  char a1[256], a2[256];
  items_t o1 = {0}, o2 = {0};
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &demo, "st", kv, NKV(kv), NULL, 0, 1,
                                     NULL, collect, &o1), 0);
  mpx_wbuf_init(&b);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_params_encode(c, &b), 0);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new_from_encoded(&d, &demo, "st", b.data,
                                                  b.len, 2, 3, NULL, collect,
                                                  &o2), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(c, NULL, "params", 6), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(d, NULL, "params", 6), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(d, NULL, "state", 5), 0);
  CU_ASSERT_EQUAL_FATAL(o1.n, 1);
  CU_ASSERT_EQUAL_FATAL(o2.n, 2);
  CU_ASSERT_STRING_EQUAL(o1.data[0], o2.data[0]);
  CU_ASSERT_STRING_EQUAL(o2.data[1], "cancelled=0 final=0 worker=2/3");
  snprintf(a1, sizeof a1, "%.17g", mpx_param_float(c, "ratio"));
  snprintf(a2, sizeof a2, "%.17g", mpx_param_float(d, "ratio"));
  CU_ASSERT_STRING_EQUAL(a1, a2);
  CU_ASSERT_TRUE(mpx_param_float(d, "ratio") == 0.1);
  CU_ASSERT_STRING_EQUAL(mpx_param_str(d, "name"), "ünï\tcode");
  CU_ASSERT_FALSE(mpx_param_has(d, "opt"));
  /* Every truncation is refused, never misread. */
  for (size_t n = 0; n < b.len; n++) {
    mpx_plugin_ctx_t *e = (mpx_plugin_ctx_t *)1;
    CU_ASSERT_EQUAL(mpx__ctx_new_from_encoded(&e, &demo, NULL, b.data, n, 0,
                                              1, NULL, NULL, NULL),
                    MPX_EINVAL);
    CU_ASSERT_PTR_NULL(e);
  }
  /* Another plugin's parameters. */
  mpx_plugin_t other = demo;
  other.name = "other";
  mpx_plugin_ctx_t *e = NULL;
  CU_ASSERT_EQUAL(mpx__ctx_new_from_encoded(&e, &other, NULL, b.data, b.len,
                                            0, 1, NULL, NULL, NULL),
                  MPX_EINVAL);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "parameters were encoded for "
                         "plugin 'demo', not 'other' (invalid argument)");
  /* Special floats survive. */
  mpx__kv_t inf[] = {KV("n", "0"), KV("ratio", "-.inf")};
  mpx_wbuf_reset(&b);
  mpx__ctx_free(d);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&e, &demo, NULL, inf, 2, NULL, 0, 1,
                                     NULL, NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_params_encode(e, &b), 0);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new_from_encoded(&d, &demo, NULL, b.data,
                                                  b.len, 0, 1, NULL, NULL,
                                                  NULL), 0);
  CU_ASSERT_TRUE(mpx_param_float(d, "ratio") < -1e308);
  mpx__ctx_free(e);
  mpx__ctx_free(d);
  mpx__ctx_free(c);
  mpx_wbuf_free(&b);
  items_free(&o1);
  items_free(&o2);
}

/* ---- host services ----------------------------------------------------------------- */

static char logged[4096];
static void on_log(void *user, mpx_log_level_t level, const char *line) {
  (void)user;
  (void)level;
  size_t n = strlen(logged);
  snprintf(logged + n, sizeof logged - n, "%s\n", line);
}

static int refuse(void *arg, const void *data, size_t len) {
  (void)arg;
  (void)data;
  (void)len;
  return MPX_ENOSPC;
}

static void test_services(void) {
  mpx__kv_t kv[] = {KV("n", "3")};
  mpx_plugin_ctx_t *c;
  const mpx_codec_t *json;
  items_t out = {0};
  setenv("MPX_PLUGIN_PATH", PLUGIN_DIR, 1);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&json, "json"), 0);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &demo, NULL, kv, 1, NULL, 1, 3, json,
                                     collect, &out), 0);
  CU_ASSERT_PTR_EQUAL(mpx__ctx_desc(c), &demo);
#define CALL(s) mpx__ctx_call_process(c, NULL, s, strlen(s))
  CU_ASSERT_EQUAL(CALL("emit"), 0);
  CU_ASSERT_EQUAL(CALL("reserve"), 0);
  CU_ASSERT_EQUAL(CALL("obj"), 0);
  CU_ASSERT_EQUAL(CALL("twice"), 0);
  CU_ASSERT_EQUAL(CALL("state"), 0);
  mpx__ctx_cancel(c);
  mpx__ctx_set_final(c, true);
  CU_ASSERT_EQUAL(CALL("state"), 0);
  CU_ASSERT_EQUAL_FATAL(out.n, 6);
  CU_ASSERT_STRING_EQUAL(out.data[0], "emit");
  CU_ASSERT_STRING_EQUAL(out.data[1], "reserved");
  CU_ASSERT_STRING_EQUAL(out.data[2], "42");
  CU_ASSERT_EQUAL(out.len[3], 0);
  CU_ASSERT_STRING_EQUAL(out.data[4], "cancelled=0 final=0 worker=1/3");
  CU_ASSERT_STRING_EQUAL(out.data[5], "cancelled=1 final=1 worker=1/3");

  /* Failures: the plugin's message, else the code's, named by the call. */
  CU_ASSERT_EQUAL(CALL("fail"), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "boom 7");
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "plugin 'demo' (worker 1 of 3): "
                         "process: boom 7 (task failed)");
  mpx__ctx_clear_error(c);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "");
  CU_ASSERT_EQUAL(CALL("code"), MPX_EIO);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "");
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "plugin 'demo' (worker 1 of 3): "
                         "process: i/o error (i/o error)");
  CU_ASSERT_EQUAL(CALL("positive"), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "returned 3 (not 0 or a negative "
                         "MPX_E* code)");
  CU_ASSERT_EQUAL(CALL("open"), MPX_ESTATE);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "process: returned with an "
                          "mpx_emit_reserve not committed"));
  CU_ASSERT_EQUAL(CALL("commit"), MPX_ESTATE);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "mpx_emit_commit without "
                         "mpx_emit_reserve");
  CU_ASSERT_EQUAL(CALL("over"), MPX_EINVAL);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "mpx_emit_commit of 3 bytes, "
                         "only 2 reserved");
  CU_ASSERT_EQUAL(CALL("nonsense"), MPX_ETASK);
  CU_ASSERT_EQUAL(CALL("emit"), 0); /* still usable */
  CU_ASSERT_EQUAL(out.n, 7);
  /* The emit target's error reaches the plugin. */
  mpx__ctx_set_emit(c, refuse, NULL);
  CU_ASSERT_EQUAL(CALL("emit"), MPX_ENOSPC);
  mpx__ctx_set_emit(c, NULL, NULL);
  CU_ASSERT_EQUAL(CALL("emit"), MPX_ESTATE);
  CU_ASSERT_EQUAL(CALL("reserve"), MPX_ENOMEM); /* reserve gave NULL */

  /* Logging, and parameters asked for wrongly. */
  logged[0] = '\0';
  mpx_log_set_handler(on_log, NULL);
  CU_ASSERT_EQUAL(CALL("log"), 0);
  CU_ASSERT_EQUAL(mpx_param_int(c, "nosuch"), 0);
  CU_ASSERT_STRING_EQUAL(mpx_param_str(c, "n"), "");
  CU_ASSERT_FALSE(mpx_param_bool(c, "ratio"));
  mpx_log_set_handler(NULL, NULL);
  CU_ASSERT_TRUE(contains(logged, "WARN  "));
  CU_ASSERT_TRUE(contains(logged, "demo[1/3]: hello 5\n"));
  CU_ASSERT_TRUE(contains(logged, "plugin 'demo': mpx_param_int('nosuch'): "
                          "the plugin declares no such parameter\n"));
  CU_ASSERT_TRUE(contains(logged, "plugin 'demo': mpx_param_str('n'): the "
                          "parameter is a int\n"));
  CU_ASSERT_TRUE(contains(logged, "mpx_param_bool('ratio'): the parameter "
                          "is a float"));
  mpx__ctx_free(c);

  /* A stage name, no codec, a sink. */
  mpx_plugin_t sink = demo;
  sink.kind = MPX_PLUGIN_SINK;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &sink, "out", kv, 1, NULL, 0, 1,
                                     NULL, collect, &out), 0);
  CU_ASSERT_EQUAL(CALL("emit"), MPX_ESTATE);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "stage 'out' (plugin 'demo', "
                         "worker 0 of 1): process: mpx_emit from a sink "
                         "(sinks emit nothing) (not allowed in the current "
                         "state)");
  CU_ASSERT_EQUAL(CALL("reserve"), MPX_ENOMEM);
  mpx__ctx_free(c);
  sink.kind = MPX_PLUGIN_MAP;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &sink, NULL, kv, 1, NULL, 0, 1,
                                     NULL, collect, &out), 0);
  CU_ASSERT_EQUAL(CALL("obj"), MPX_ESTATE);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "mpx_emit_obj: the stage has no "
                         "codec");
  /* Calls a map does not have. */
  void *st = (void *)1;
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), 0); /* no init: NULL state */
  CU_ASSERT_PTR_NULL(st);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(c, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_generate(c, NULL), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx__ctx_call_merge(c, NULL, "", 0, "", 0), MPX_ESTATE);
  CU_ASSERT_EQUAL(mpx__ctx_call_size_hint(c, NULL), 0);
  mpx__ctx_call_fini(c, NULL);
  mpx__ctx_free(c);
#undef CALL
  /* Bad arguments. */
  CU_ASSERT_EQUAL(mpx__ctx_new(&c, &demo, NULL, kv, 1, NULL, 3, 3, NULL, NULL,
                               NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx__ctx_new(&c, &demo, NULL, kv, 1, NULL, 0, 0, NULL, NULL,
                               NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx__ctx_new(&c, NULL, NULL, kv, 1, NULL, 0, 1, NULL, NULL,
                               NULL), MPX_EINVAL);
  mpx__ctx_free(NULL);
  items_free(&out);
}

/* ---- range ---------------------------------------------------------------------------- */

/* The expected output of worker i of n, computed with 128-bit values. */
static void range_expect(int64_t start, int64_t stop, int64_t step,
                         unsigned i, unsigned n, items_t *want) {
  uint64_t k = 0;
  for (__int128 v = start; step > 0 ? v < stop : v > stop; v += step, k++)
    if (k % n == i) {
      char le[8];
      put_le64(le, (uint64_t)(int64_t)v);
      items_add(want, le, 8);
    }
}

static void test_range(void) {
  const mpx_plugin_t *d = load("range");
  const int64_t cases[][3] = {
      {0, 10, 1},   {0, 10000, 1}, {5, 100, 7},  {10, -10, -3},
      {0, 0, 1},    {3, 1, 1},     {0, 2, 1},    {-5, 5, 100},
      {INT64_MIN, INT64_MAX, INT64_MAX},         {INT64_MAX, INT64_MIN, -1000000000000000000},
      {INT64_MAX - 5, INT64_MAX, 2}};
  for (size_t c = 0; c < NKV(cases); c++) {
    char a[32], b[32], s[32];
    snprintf(a, sizeof a, "%" PRId64, cases[c][0]);
    snprintf(b, sizeof b, "%" PRId64, cases[c][1]);
    snprintf(s, sizeof s, "%" PRId64, cases[c][2]);
    mpx__kv_t kv[] = {KV("start", a), KV("stop", b), KV("step", s)};
    for (unsigned n = 1; n <= 3; n += 2) {
      items_t all = {0}, want_all = {0};
      for (unsigned i = 0; i < n; i++) {
        items_t got = {0}, want = {0};
        uint64_t hint;
        run_source(d, kv, 3, i, n, &got, &hint);
        range_expect(cases[c][0], cases[c][1], cases[c][2], i, n, &want);
        CU_ASSERT_TRUE(items_equal(&got, &want));
        items_show_diff("range", &got, &want);
        CU_ASSERT_EQUAL(hint, got.n);
        for (size_t j = 0; j < got.n; j++) items_add(&all, got.data[j], 8);
        items_free(&got);
        items_free(&want);
      }
      /* Together the workers cover the range exactly once. */
      range_expect(cases[c][0], cases[c][1], cases[c][2], 0, 1, &want_all);
      CU_ASSERT_EQUAL(all.n, want_all.n);
      for (size_t j = 0; j < want_all.n; j++) {
        size_t seen = 0;
        for (size_t k = 0; k < all.n; k++)
          seen += memcmp(all.data[k], want_all.data[j], 8) == 0;
        CU_ASSERT_EQUAL(seen, 1);
        if (j > 200) break; /* enough for the big case */
      }
      items_free(&all);
      items_free(&want_all);
    }
  }
  /* Python's range semantics, by value. */
  items_t got = {0};
  mpx__kv_t kv[] = {KV("stop", "5")};
  run_source(d, kv, 1, 0, 1, &got, NULL);
  CU_ASSERT_EQUAL_FATAL(got.n, 5);
  for (size_t j = 0; j < 5; j++) CU_ASSERT_EQUAL(le64(got.data[j]), j);
  items_free(&got);
  /* A batch per generate call: 4096 items, then the rest. */
  mpx__kv_t big[] = {KV("stop", "5000")};
  inst_t in = inst_new(d, big, 1, 0, 1, &got);
  CU_ASSERT_EQUAL(mpx__ctx_call_size_hint(in.ctx, in.state), 5000);
  CU_ASSERT_EQUAL(mpx__ctx_call_generate(in.ctx, in.state), 1);
  CU_ASSERT_EQUAL(got.n, 4096);
  CU_ASSERT_EQUAL(mpx__ctx_call_size_hint(in.ctx, in.state), 904);
  CU_ASSERT_EQUAL(mpx__ctx_call_generate(in.ctx, in.state), 0);
  CU_ASSERT_EQUAL(got.n, 5000);
  inst_free(in);
  items_free(&got);
  /* step 0 fails init. */
  mpx__kv_t zero[] = {KV("stop", "5"), KV("step", "0")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, zero, 2, NULL, 0, 1, NULL,
                                     collect, &got), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "plugin 'range' (worker 0 of 1): "
                         "init: step must not be 0 (task failed)");
  mpx__ctx_free(c);
}

/* ---- lines ------------------------------------------------------------------------------ */

static char tmpdir[64];

static void remove_tmpdir(void) {
  char cmd[128];
  if (tmpdir[0] == '\0') return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpdir);
}

static const char *tmpfile_with(const char *name, const void *data,
                                size_t len) {
  static char path[128];
  if (tmpdir[0] == '\0') {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/mpx_test_plugin_XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));
    atexit(remove_tmpdir);
  }
  snprintf(path, sizeof path, "%s/%s", tmpdir, name);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_FATAL(len == 0 || write(fd, data, len) == (ssize_t)len);
  close(fd);
  return path;
}

/* Runs lines over content with n workers and the given buffer size, and
 * checks each worker's lines against those starting in its byte range. */
static int check_lines(const char *content, size_t size, unsigned n,
                       const char *bufsize) {
  const mpx_plugin_t *d = load("lines");
  const char *path = tmpfile_with("lines.txt", content, size);
  mpx__kv_t kv[] = {KV("path", path), KV("buffer", bufsize)};
  int ok = 1;
  size_t total = 0, nlines = 0;
  for (unsigned i = 0; i < n; i++) {
    uint64_t lo = (uint64_t)((unsigned __int128)size * i / n);
    uint64_t hi = (uint64_t)((unsigned __int128)size * (i + 1) / n);
    items_t got = {0}, want = {0};
    for (size_t s = 0; s < size;) { /* s: a line's first byte */
      const char *nl = memchr(content + s, '\n', size - s);
      size_t e = nl ? (size_t)(nl - content) : size;
      if (s >= lo && s < hi) items_add(&want, content + s, e - s);
      s = e + 1;
    }
    run_source(d, kv, 2, i, n, &got, NULL);
    if (!items_equal(&got, &want)) {
      ok = 0;
      printf("\nlines: worker %u of %u, buffer %s, size %zu", i, n, bufsize,
             size);
      items_show_diff("lines", &got, &want);
    }
    total += got.n;
    items_free(&got);
    items_free(&want);
  }
  for (size_t s = 0; s < size; nlines++) {
    const char *nl = memchr(content + s, '\n', size - s);
    s = nl ? (size_t)(nl - content) + 1 : size;
  }
  if (total != nlines) {
    printf("\nlines: %zu lines emitted, the file has %zu\n", total, nlines);
    ok = 0;
  }
  return ok;
}

static void test_lines(void) {
  const char *files[] = {
      "one\ntwo\nthree\n",
      "no trailing newline\nlast",
      "\n\n\nx\n\n",
      "\n",
      "",
      "a",
      "crlf\r\nline\r\n",
      "many\nshort\nl\ni\nn\ne\ns\n\nand one rather longer line in the "
      "middle of them\nend",
  };
  const char *bufs[] = {"1", "2", "3", "7", "64", "1048576"};
  for (size_t f = 0; f < NKV(files); f++)
    for (unsigned n = 1; n <= 5; n++)
      for (size_t b = 0; b < NKV(bufs); b++)
        CU_ASSERT_TRUE(check_lines(files[f], strlen(files[f]), n, bufs[b]));

  /* Random lines: empty ones, long ones, every byte but '\n'. */
  size_t cap = 400000, size = 0;
  char *text = malloc(cap);
  uint64_t x = 88172645463325252u;
  while (size < cap - 2000) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    size_t len = x % 8 == 0 ? 0 : x % 16 == 1 ? 1500 : (x >> 8) % 120;
    for (size_t i = 0; i < len; i++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      text[size++] = (char)(x % 255 + 1) == '\n' ? ' ' : (char)(x % 255 + 1);
    }
    text[size++] = '\n';
  }
  const char *rbufs[] = {"5", "4096", "1048576"};
  for (unsigned n = 1; n <= 7; n += 3)
    for (size_t b = 0; b < NKV(rbufs); b++) {
      CU_ASSERT_TRUE(check_lines(text, size, n, rbufs[b]));
      CU_ASSERT_TRUE(check_lines(text, size - 1, n, rbufs[b])); /* no '\n' */
    }
  free(text);

  /* A line longer than the default read buffer (1 MiB), between others. */
  size = 3 * 1048576 + 1000;
  text = malloc(size);
  memset(text, 'y', size);
  memcpy(text, "first\n\nsecond\n", 14);
  text[size - 8] = '\n';
  memcpy(text + size - 7, "tail\n\n", 6);
  text[size - 1] = 'z';
  for (unsigned n = 1; n <= 4; n++)
    CU_ASSERT_TRUE(check_lines(text, size, n, "1048576"));
  free(text);

  /* A pipe: read whole by worker 0. */
  const mpx_plugin_t *d = load("lines");
  int fds[2];
  char path[64];
  CU_ASSERT_EQUAL_FATAL(pipe(fds), 0);
  CU_ASSERT_EQUAL(write(fds[1], "p1\np2\np3", 8), 8);
  snprintf(path, sizeof path, "/proc/self/fd/%d", fds[0]);
  mpx__kv_t kv[] = {KV("path", path)};
  items_t got = {0};
  run_source(d, kv, 1, 1, 2, &got, NULL); /* worker 1: nothing */
  CU_ASSERT_EQUAL(got.n, 0);
  close(fds[1]);
  run_source(d, kv, 1, 0, 2, &got, NULL);
  CU_ASSERT_EQUAL_FATAL(got.n, 3);
  CU_ASSERT_STRING_EQUAL(got.data[2], "p3");
  close(fds[0]);
  items_free(&got);

  /* Errors. */
  mpx__kv_t nofile[] = {KV("path", "/nonexistent/file")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, "in", nofile, 1, NULL, 0, 1, NULL,
                                     collect, &got), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), "stage 'in' (plugin 'lines', "
                         "worker 0 of 1): init: cannot open "
                         "'/nonexistent/file': No such file or directory "
                         "(task failed)");
  mpx__ctx_free(c);
  mpx__kv_t badbuf[] = {KV("path", "/dev/null"), KV("buffer", "0")};
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, badbuf, 2, NULL, 0, 1,
                                     NULL, collect, &got), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "buffer must be between 1 and "
                         "2^30 bytes, got 0");
  mpx__ctx_free(c);
}

/* ---- maps ----------------------------------------------------------------------------------- */

static void test_primes(void) {
  const mpx_plugin_t *d = load("primes");
  const int64_t n[] = {0, 1, 2, 3, 10, 100, 1000, 100000, -5};
  const int64_t sum[] = {0, 0, 0, 2, 17, 1060, 76127, 454396537, 0};
  items_t in = {0}, out = {0};
  for (size_t i = 0; i < NKV(n); i++) {
    char le[8];
    put_le64(le, (uint64_t)n[i]);
    items_add(&in, le, 8);
  }
  run_map(d, NULL, 0, &in, &out);
  CU_ASSERT_EQUAL_FATAL(out.n, NKV(n));
  for (size_t i = 0; i < NKV(n); i++) {
    CU_ASSERT_EQUAL(out.len[i], 8);
    CU_ASSERT_EQUAL((int64_t)le64(out.data[i]), sum[i]);
  }
  inst_t p = inst_new(d, NULL, 0, 0, 1, &out);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(p.ctx, p.state, "abcd", 4),
                  MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(p.ctx), "expected an 8-byte int64, "
                         "got 4 bytes");
  /* A cancelled run stops early. */
  char le[8];
  put_le64(le, 10000000);
  mpx__ctx_cancel(p.ctx);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(p.ctx, p.state, le, 8),
                  MPX_ECANCELED);
  inst_free(p);
  items_free(&in);
  items_free(&out);
}

static void grep_run(const char *pattern, const char *invert,
                     const items_t *in, items_t *out) {
  mpx__kv_t kv[] = {KV("pattern", pattern), KV("invert", invert)};
  run_map(load("grep"), kv, 2, in, out);
}

static void test_grep(void) {
  const char *lines[] = {"apple", "banana", "cherry", "", "Apple pie",
                         "grape", "a.z", "abz"};
  items_t in = {0}, out = {0}, want = {0};
  for (size_t i = 0; i < NKV(lines); i++) items_adds(&in, lines[i]);
  items_add(&in, "zero\0apple", 10); /* after a NUL: still seen */

  grep_run("^a", "false", &in, &out);
  items_adds(&want, "apple");
  items_adds(&want, "a.z");
  items_adds(&want, "abz");
  CU_ASSERT_TRUE(items_equal(&out, &want));
  items_show_diff("grep ^a", &out, &want);
  items_free(&out);
  items_free(&want);

  grep_run("(an){2}|^$|e$", "no", &in, &out);
  items_adds(&want, "apple");
  items_adds(&want, "banana");
  items_adds(&want, "");
  items_adds(&want, "Apple pie");
  items_adds(&want, "grape");
  items_add(&want, "zero\0apple", 10);
  CU_ASSERT_TRUE(items_equal(&out, &want));
  items_show_diff("grep ere", &out, &want);
  items_free(&out);
  items_free(&want);

  /* invert keeps exactly the others, in order. */
  grep_run("(an){2}|^$|e$", "true", &in, &out);
  items_adds(&want, "cherry");
  items_adds(&want, "a.z");
  items_adds(&want, "abz");
  CU_ASSERT_TRUE(items_equal(&out, &want));
  items_show_diff("grep invert", &out, &want);
  items_free(&out);
  items_free(&want);

  grep_run("a\\.z", "false", &in, &out);
  CU_ASSERT_EQUAL(out.n, 1);
  items_free(&out);

  /* A bad pattern fails init with regerror's text. */
  regex_t re;
  char why[256], msg[512];
  int rc = regcomp(&re, "(ab", REG_EXTENDED | REG_NOSUB);
  CU_ASSERT_NOT_EQUAL_FATAL(rc, 0);
  regerror(rc, &re, why, sizeof why);
  mpx__kv_t kv[] = {KV("pattern", "(ab")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, load("grep"), NULL, kv, 1, NULL, 0,
                                     1, NULL, collect, &out), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  snprintf(msg, sizeof msg, "bad pattern '(ab': %s", why);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), msg);
  mpx__ctx_free(c);
  items_free(&in);
}

static void test_checksum(void) {
  const mpx_plugin_t *d = load("checksum");
  items_t in = {0}, out = {0}, again = {0}, fnv = {0};
  items_adds(&in, "");
  items_adds(&in, "a");
  items_adds(&in, "foobar");
  items_add(&in, "\0\xff", 2);
  /* The default, XXH3-64 (seed 0), against libxxhash itself. */
  run_map(d, NULL, 0, &in, &out);
  CU_ASSERT_EQUAL_FATAL(out.n, 4);
  CU_ASSERT_EQUAL(le64(out.data[0]), 0x2d06800538d394c2u); /* published: XXH3("") */
  for (size_t i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL(out.len[i], 8);
    CU_ASSERT_EQUAL(le64(out.data[i]), (uint64_t)XXH3_64bits(in.data[i], in.len[i]));
  }
  run_map(d, NULL, 0, &in, &again);
  CU_ASSERT_TRUE(items_equal(&out, &again));
  /* The published FNV-1a 64 test vectors. */
  mpx__kv_t kv[] = {KV("algorithm", "fnv1a")};
  run_map(d, kv, 1, &in, &fnv);
  CU_ASSERT_EQUAL_FATAL(fnv.n, 4);
  CU_ASSERT_EQUAL(le64(fnv.data[0]), 0xcbf29ce484222325u);
  CU_ASSERT_EQUAL(le64(fnv.data[1]), 0xaf63dc4c8601ec8cu);
  CU_ASSERT_EQUAL(le64(fnv.data[2]), 0x85944171f73967e8u);
  /* Anything else is refused at init. */
  mpx__kv_t bad[] = {KV("algorithm", "md5")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, bad, 1, NULL, 0, 1, NULL, NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx__ctx_error(c), "algorithm 'md5': want xxh3 or fnv1a"));
  mpx__ctx_free(c);
  items_free(&in);
  items_free(&out);
  items_free(&again);
  items_free(&fnv);
}

/* field: item.split(separator)[index], or nothing when out of range. */
static void field_expect(const char *sep, const char *index, const items_t *in,
                         const char *const *want_s) {
  mpx__kv_t kv[] = {KV("separator", sep), KV("index", index)};
  items_t out = {0}, want = {0};
  for (; *want_s; want_s++) items_adds(&want, *want_s);
  run_map(load("field"), sep ? kv : kv + 1, sep ? 2 : 1, in, &out);
  CU_ASSERT_TRUE(items_equal(&out, &want));
  char what[64];
  snprintf(what, sizeof what, "field '%s' %s", sep ? sep : "(default)", index);
  items_show_diff(what, &out, &want);
  items_free(&out);
  items_free(&want);
}

static void test_field(void) {
  const char *lines[] = {"a b c", "one", "", "x  y", " lead", "trail ",
                         "1.2.3.4 - - [d] \"GET /u HTTP/1.1\" 200"};
  items_t in = {0};
  for (size_t i = 0; i < NKV(lines); i++) items_adds(&in, lines[i]);
  /* The default separator is one space; empty fields count. */
  field_expect(NULL, "0", &in,
               (const char *[]){"a", "one", "", "x", "", "trail",
                                "1.2.3.4", NULL});
  field_expect(" ", "1", &in,
               (const char *[]){"b", "", "lead", "", "-", NULL});
  field_expect(" ", "2", &in, (const char *[]){"c", "y", "-", NULL});
  field_expect(" ", "5", &in, (const char *[]){"/u", NULL});
  field_expect(" ", "-1", &in,
               (const char *[]){"c", "one", "", "y", "lead", "", "200", NULL});
  field_expect(" ", "-3", &in, (const char *[]){"a", "x", "/u", NULL});
  field_expect(" ", "-4", &in, (const char *[]){"\"GET", NULL});
  field_expect(" ", "-9", &in, (const char *[]){NULL});
  field_expect(" ", "9223372036854775807", &in, (const char *[]){NULL});
  field_expect(" ", "-9223372036854775808", &in, (const char *[]){NULL});
  items_free(&in);

  /* A longer separator: left to right, not overlapping, as in Python. */
  items_adds(&in, "aaa");
  items_adds(&in, "k::v::w");
  field_expect("::", "1", &in, (const char *[]){"v", NULL});
  field_expect("::", "-1", &in, (const char *[]){"aaa", "w", NULL});
  field_expect("aa", "0", &in, (const char *[]){"", "k::v::w", NULL});
  field_expect("aa", "1", &in, (const char *[]){"a", NULL});
  field_expect("\t", "0", &in, (const char *[]){"aaa", "k::v::w", NULL});
  items_free(&in);

  /* Bytes after a NUL are seen too, and fields keep their NULs. */
  items_t out = {0};
  mpx__kv_t nul[] = {KV("separator", "::"), KV("index", "0")};
  items_add(&in, "n\0ul::l\0", 8);
  run_map(load("field"), nul, 2, &in, &out);
  CU_ASSERT_TRUE(out.n == 1 && out.len[0] == 4 && memcmp(out.data[0], "n\0ul", 4) == 0);
  items_free(&out);
  nul[1] = KV("index", "1");
  run_map(load("field"), nul, 2, &in, &out);
  CU_ASSERT_TRUE(out.n == 1 && out.len[0] == 2 && memcmp(out.data[0], "l\0", 2) == 0);
  items_free(&out);
  items_free(&in);

  /* An empty separator fails init. */
  mpx__kv_t kv[] = {KV("separator", "")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, load("field"), NULL, kv, 1, NULL, 0,
                                     1, NULL, collect, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "separator must not be empty");
  mpx__ctx_free(c);
}

/* ---- reduces ------------------------------------------------------------------------------- */

/* The partial of one instance fed in[from, to). */
static void partial_of(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                       const items_t *in, size_t from, size_t to,
                       items_t *out) {
  items_t got = {0};
  inst_t x = inst_new(d, kv, nkv, 0, 1, &got);
  for (size_t i = from; i < to; i++)
    CU_ASSERT_EQUAL(mpx__ctx_call_process(x.ctx, x.state, in->data[i],
                                          in->len[i]), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(x.ctx, x.state), 0);
  /* The flush emptied the state: a second one is the empty partial. */
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(x.ctx, x.state), 0);
  inst_free(x);
  CU_ASSERT_EQUAL_FATAL(got.n, 2);
  CU_ASSERT_EQUAL(got.len[1], 0);
  items_add(out, got.data[0], got.len[0]);
  items_free(&got);
}

/* merge(a, b) on a fresh instance; final or not. */
static void merge_of(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                     const char *a, size_t alen, const char *b, size_t blen,
                     bool final, items_t *out) {
  inst_t x = inst_new(d, kv, nkv, 0, 1, out);
  mpx__ctx_set_final(x.ctx, final);
  int rc = mpx__ctx_call_merge(x.ctx, x.state, a, alen, b, blen);
  if (rc != 0) printf("\nmerge: %s\n", mpx_last_error());
  CU_ASSERT_EQUAL(rc, 0);
  inst_free(x);
}

/* The same final output three ways: one instance; three partials merged
 * left and right; and checks the merges are associative and commutative
 * byte for byte. */
static void check_reduce(const mpx_plugin_t *d, const mpx__kv_t *kv,
                         size_t nkv, const items_t *in, const items_t *want) {
  items_t one = {0}, parts = {0}, ab = {0}, bc = {0}, left = {0},
          right = {0}, ba = {0}, fl = {0}, fr = {0}, single = {0};
  size_t third = in->n / 3;
  /* One instance sees everything: its flush is the final step. */
  inst_t x = inst_new(d, kv, nkv, 0, 1, &one);
  for (size_t i = 0; i < in->n; i++)
    CU_ASSERT_EQUAL(mpx__ctx_call_process(x.ctx, x.state, in->data[i],
                                          in->len[i]), 0);
  mpx__ctx_set_final(x.ctx, true);
  CU_ASSERT_EQUAL(mpx__ctx_call_flush(x.ctx, x.state), 0);
  inst_free(x);
  CU_ASSERT_TRUE(items_equal(&one, want));
  items_show_diff("reduce, one instance", &one, want);

  partial_of(d, kv, nkv, in, 0, third, &parts);
  partial_of(d, kv, nkv, in, third, 2 * third, &parts);
  partial_of(d, kv, nkv, in, 2 * third, in->n, &parts);
  const char *a = parts.data[0], *b = parts.data[1], *c = parts.data[2];
  size_t al = parts.len[0], bl = parts.len[1], cl = parts.len[2];
  merge_of(d, kv, nkv, a, al, b, bl, false, &ab);
  merge_of(d, kv, nkv, b, bl, c, cl, false, &bc);
  merge_of(d, kv, nkv, b, bl, a, al, false, &ba);
  CU_ASSERT_TRUE(items_equal(&ab, &ba)); /* commutative */
  merge_of(d, kv, nkv, ab.data[0], ab.len[0], c, cl, false, &left);
  merge_of(d, kv, nkv, a, al, bc.data[0], bc.len[0], false, &right);
  CU_ASSERT_EQUAL_FATAL(left.n, 1);
  CU_ASSERT_TRUE(items_equal(&left, &right)); /* associative, as bytes */
  merge_of(d, kv, nkv, ab.data[0], ab.len[0], c, cl, true, &fl);
  merge_of(d, kv, nkv, a, al, bc.data[0], bc.len[0], true, &fr);
  CU_ASSERT_TRUE(items_equal(&fl, want));
  items_show_diff("reduce, merged left", &fl, want);
  CU_ASSERT_TRUE(items_equal(&fr, want));
  /* A single partial: merged with the empty one, finally. */
  merge_of(d, kv, nkv, left.data[0], left.len[0], "", 0, true, &single);
  CU_ASSERT_TRUE(items_equal(&single, want));
  items_free(&single);
  merge_of(d, kv, nkv, "", 0, left.data[0], left.len[0], false, &single);
  CU_ASSERT_TRUE(items_equal(&single, &left));
  /* A malformed partial is refused. */
  inst_t y = inst_new(d, kv, nkv, 0, 1, &single);
  CU_ASSERT_EQUAL(mpx__ctx_call_merge(y.ctx, y.state, "\x05\0\0\0ab", 6, "",
                                      0), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(y.ctx), "malformed partial");
  inst_free(y);
  items_t *all[] = {&one, &parts, &ab, &bc, &left, &right, &ba, &fl, &fr,
                    &single};
  for (size_t i = 0; i < NKV(all); i++) items_free(all[i]);
}

/* Brute-force counting: (key, count) pairs in a plain array. */
typedef struct {
  char key[128];
  int count;
} kc_t;

static void count_key(kc_t *t, int *n, const char *key) {
  for (int i = 0; i < *n; i++)
    if (strcmp(t[i].key, key) == 0) {
      t[i].count++;
      return;
    }
  snprintf(t[*n].key, sizeof t[0].key, "%s", key);
  t[(*n)++].count = 1;
}

static int by_count_then_key(const void *a, const void *b) {
  const kc_t *x = a, *y = b;
  if (x->count != y->count) return y->count - x->count;
  return strcmp(x->key, y->key);
}

static void expected_lines(kc_t *t, int n, int k, items_t *want) {
  char line[128];
  qsort(t, (size_t)n, sizeof *t, by_count_then_key);
  for (int i = 0; i < n && i < k; i++) {
    snprintf(line, sizeof line, "%d %s", t[i].count, t[i].key);
    items_adds(want, line);
  }
}

static void test_wordcount(void) {
  const char *pieces[] = {"the", "The", "don't", "'tis", "rock'n'roll",
                          "a1", "42", "'''", "x'", "na\xc3\xafve", "end.",
                          "hello,world", "  ", "\t", "-", "THE", "'quoted'",
                          "it's", "\"the\"", "\xff"};
  const char *wordchars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                          "0123456789'";
  items_t in = {0}, want = {0};
  static kc_t counts[4096];
  int nc = 0;
  uint64_t x = 12345;
  for (int line = 0; line < 600; line++) {
    char buf[512];
    size_t len = 0;
    int words = (int)(x % 12);
    for (int w = 0; w < words; w++) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      const char *p = pieces[x % NKV(pieces)];
      len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", p,
                              x % 5 == 0 ? "" : " ");
    }
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    items_add(&in, buf, len);
    /* Brute force: runs of word characters, apostrophes trimmed. */
    for (size_t i = 0; i < len;) {
      while (i < len && !(buf[i] && strchr(wordchars, buf[i]))) i++;
      size_t s = i;
      while (i < len && buf[i] && strchr(wordchars, buf[i])) i++;
      size_t e = i;
      while (s < e && buf[s] == '\'') s++;
      while (e > s && buf[e - 1] == '\'') e--;
      if (e > s) {
        char word[128];
        snprintf(word, sizeof word, "%.*s", (int)(e - s), buf + s);
        count_key(counts, &nc, word);
      }
    }
  }
  expected_lines(counts, nc, 100000, &want);
  CU_ASSERT_TRUE(want.n > 10);
  check_reduce(load("wordcount"), NULL, 0, &in, &want);
  items_free(&in);
  items_free(&want);

  /* A few exact cases. */
  const char *text[] = {"The cat and the hat; the END.",
                        "'twas the cat's ''' hat'", "", "hat"};
  const char *exact[] = {"3 hat", "3 the", "1 END", "1 The", "1 and",
                         "1 cat", "1 cat's", "1 twas"};
  for (size_t i = 0; i < NKV(text); i++) items_adds(&in, text[i]);
  for (size_t i = 0; i < NKV(exact); i++) items_adds(&want, exact[i]);
  check_reduce(load("wordcount"), NULL, 0, &in, &want);
  items_free(&in);
  items_free(&want);
}

static void test_topk(void) {
  items_t in = {0}, want = {0};
  static kc_t counts[64], copy[64];
  int nc = 0;
  uint64_t x = 777;
  /* Keys with many ties: key i appears (i % 7) + 1 times, shuffled. */
  char keys[400][32];
  int nk = 0;
  for (int i = 0; i < 40; i++)
    for (int j = 0; j <= i % 7; j++)
      snprintf(keys[nk++], sizeof keys[0], "https://x.org/%d", i);
  for (int i = nk - 1; i > 0; i--) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    int j = (int)(x % (uint64_t)(i + 1));
    char t[32];
    memcpy(t, keys[i], 32);
    memcpy(keys[i], keys[j], 32);
    memcpy(keys[j], t, 32);
  }
  for (int i = 0; i < nk; i++) {
    items_adds(&in, keys[i]);
    count_key(counts, &nc, keys[i]);
  }
  const mpx_plugin_t *d = load("topk");
  const char *ks[] = {"1", "5", "10", "1000"};
  for (size_t i = 0; i < NKV(ks); i++) {
    mpx__kv_t kv[] = {KV("k", ks[i])};
    memcpy(copy, counts, sizeof copy);
    expected_lines(copy, nc, atoi(ks[i]), &want);
    check_reduce(d, kv, 1, &in, &want);
    items_free(&want);
  }
  /* The default k is 10; ties by key: "6 https://x.org/13" first. */
  memcpy(copy, counts, sizeof copy);
  expected_lines(copy, nc, 10, &want);
  CU_ASSERT_STRING_EQUAL(want.data[0], "7 https://x.org/13");
  check_reduce(d, NULL, 0, &in, &want);
  items_free(&want);
  items_free(&in);
  /* Empty keys count too. */
  items_adds(&in, "");
  items_adds(&in, "b");
  items_adds(&in, "");
  items_adds(&want, "2 ");
  items_adds(&want, "1 b");
  check_reduce(d, NULL, 0, &in, &want);
  items_free(&want);
  items_free(&in);
  mpx__kv_t zero[] = {KV("k", "0")};
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, zero, 1, NULL, 0, 1, NULL,
                                     collect, &in), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "k must be at least 1, got 0");
  mpx__ctx_free(c);
}

/* ---- sinks --------------------------------------------------------------------------------- */

/* Runs print over in with stdout sent to a file; returns what it wrote
 * (malloc'd, *len set). */
static char *print_capture(const char *format, const items_t *in,
                           size_t *len) {
  const char *path = tmpfile_with("stdout.txt", "", 0);
  mpx__kv_t kv[] = {KV("format", format)};
  items_t none = {0};
  fflush(stdout);
  int saved = dup(STDOUT_FILENO), fd = open(path, O_WRONLY | O_TRUNC);
  CU_ASSERT_FATAL(saved >= 0 && fd >= 0);
  dup2(fd, STDOUT_FILENO);
  close(fd);
  run_map(load("print"), kv, 1, in, &none);
  dup2(saved, STDOUT_FILENO);
  close(saved);
  CU_ASSERT_EQUAL(none.n, 0);
  FILE *f = fopen(path, "rb");
  char *buf = malloc(1 << 20);
  *len = fread(buf, 1, 1 << 20, f);
  fclose(f);
  return buf;
}

static void test_print(void) {
  items_t in = {0};
  size_t len;
  char *out;
  items_adds(&in, "hello");
  items_adds(&in, "");
  items_add(&in, "a\0b\n", 4);
  out = print_capture("text", &in, &len);
  CU_ASSERT_EQUAL(len, 12);
  CU_ASSERT_EQUAL(memcmp(out, "hello\n\na\0b\n\n", 12), 0);
  free(out);
  out = print_capture("hex", &in, &len);
  CU_ASSERT_EQUAL(len, 21);
  CU_ASSERT_EQUAL(memcmp(out, "68656c6c6f\n\n6100620a\n", 21), 0);
  free(out);
  items_free(&in);

  const int64_t v[] = {0, -1, 42, INT64_MIN, INT64_MAX};
  for (size_t i = 0; i < NKV(v); i++) {
    char le[8];
    put_le64(le, (uint64_t)v[i]);
    items_add(&in, le, 8);
  }
  out = print_capture("int64", &in, &len);
  const char *want = "0\n-1\n42\n-9223372036854775808\n9223372036854775807\n";
  CU_ASSERT_EQUAL(len, strlen(want));
  CU_ASSERT_EQUAL(memcmp(out, want, strlen(want)), 0);
  free(out);
  items_free(&in);

  /* Many lines: all of them, in order, whatever the buffering. */
  char line[32];
  for (int i = 0; i < 20000; i++) {
    snprintf(line, sizeof line, "line %d", i);
    items_adds(&in, line);
  }
  out = print_capture("text", &in, &len);
  size_t off = 0;
  int ok = 1;
  for (int i = 0; i < 20000 && ok; i++) {
    int n = snprintf(line, sizeof line, "line %d\n", i);
    ok = off + (size_t)n <= len && memcmp(out + off, line, (size_t)n) == 0;
    off += (size_t)n;
  }
  CU_ASSERT_TRUE(ok);
  CU_ASSERT_EQUAL(off, len);
  free(out);
  items_free(&in);

  /* Errors. */
  mpx__kv_t bad[] = {KV("format", "octal")};
  mpx__kv_t i64[] = {KV("format", "int64")};
  mpx_plugin_ctx_t *c;
  void *st;
  const mpx_plugin_t *d = load("print");
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, bad, 1, NULL, 0, 1, NULL,
                                     NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "format must be text, hex or "
                         "int64, got 'octal'");
  mpx__ctx_free(c);
  inst_t x = inst_new(d, i64, 1, 0, 1, NULL);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(x.ctx, x.state, "abc", 3), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(x.ctx), "format int64 needs 8-byte "
                         "items, got 3 bytes");
  inst_free(x);
}

static char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  char *buf = malloc(1 << 20);
  *len = f ? fread(buf, 1, 1 << 20, f) : 0;
  if (f) fclose(f);
  return buf;
}

static void test_jsonl(void) {
  const mpx_plugin_t *d = load("jsonl");
  char path[128];
  items_t in = {0}, none = {0};
  size_t len;
  snprintf(path, sizeof path, "%s", tmpfile_with("out.jsonl", "old\n", 4));
  items_adds(&in, "plain");
  items_adds(&in, "quote\"back\\slash");
  items_adds(&in, "\x01\x1f\n\t\r\b\f\x7f");
  items_adds(&in, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"); /* é€😀 */
  items_add(&in, "\0", 1);
  items_adds(&in, "");
  items_adds(&in, "\xff");
  items_adds(&in, "\xff\xfe");
  items_adds(&in, "\xff\xfe\xfd");
  items_adds(&in, "abc\x80");
  items_adds(&in, "\xed\xa0\x80"); /* a surrogate: not UTF-8 */
  items_adds(&in, "\xc0\xaf");     /* an overlong '/' */
  const char want[] =
      "{\"item\": \"plain\"}\n"
      "{\"item\": \"quote\\\"back\\\\slash\"}\n"
      "{\"item\": \"\\u0001\\u001f\\n\\t\\r\\b\\f\x7f\"}\n"
      "{\"item\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}\n"
      "{\"item\": \"\\u0000\"}\n"
      "{\"item\": \"\"}\n"
      "{\"item_base64\": \"/w==\"}\n"
      "{\"item_base64\": \"//4=\"}\n"
      "{\"item_base64\": \"//79\"}\n"
      "{\"item_base64\": \"YWJjgA==\"}\n"
      "{\"item_base64\": \"7aCA\"}\n"
      "{\"item_base64\": \"wK8=\"}\n";
  mpx__kv_t kv[] = {KV("path", path)};
  run_map(d, kv, 1, &in, &none); /* truncates "old" */
  char *out = read_file(path, &len);
  CU_ASSERT_EQUAL(len, sizeof want - 1);
  CU_ASSERT_EQUAL(memcmp(out, want, sizeof want - 1), 0);
  if (len != sizeof want - 1 || memcmp(out, want, len))
    printf("\njsonl wrote:\n%.*s", (int)len, out);
  free(out);
  CU_ASSERT_EQUAL(none.n, 0);

  /* append: after what is there; several workers only with append. */
  mpx__kv_t app[] = {KV("path", path), KV("append", "true")};
  items_t one = {0};
  items_adds(&one, "more");
  run_map(d, app, 2, &one, &none);
  out = read_file(path, &len);
  CU_ASSERT_EQUAL(len, sizeof want - 1 + 17);
  CU_ASSERT_EQUAL(memcmp(out + sizeof want - 1, "{\"item\": \"more\"}\n", 17),
                  0);
  free(out);
  mpx_plugin_ctx_t *c;
  void *st;
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, kv, 1, NULL, 1, 2, NULL,
                                     NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  char msg[300];
  snprintf(msg, sizeof msg, "2 workers would overwrite each other's '%s': "
           "run jsonl with 1 worker, or set append: true", path);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), msg);
  mpx__ctx_free(c);
  inst_t x = inst_new(d, app, 2, 1, 2, NULL);
  inst_free(x);
  mpx__kv_t nodir[] = {KV("path", "/nonexistent/x.jsonl")};
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, d, NULL, nodir, 1, NULL, 0, 1, NULL,
                                     NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_init(c, &st), MPX_ETASK);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_error(c), "cannot open "
                         "'/nonexistent/x.jsonl': No such file or directory");
  mpx__ctx_free(c);
  items_free(&in);
  items_free(&one);
}


/* ---- ABI 1.2: ports, keys, fold ---- */

typedef struct {
  unsigned n;
  uint32_t port[8], hash[8];
  bool keyed[8];
  char data[8][16];
} tagged_t;

static int tagged(void *arg, mpx__tag_t t, const void *d, size_t l) {
  tagged_t *o = arg;
  if (o->n >= 8) return MPX_E2BIG;
  o->port[o->n] = t.port;
  o->keyed[o->n] = t.keyed;
  o->hash[o->n] = t.hash;
  snprintf(o->data[o->n], sizeof o->data[0], "%.*s", (int)l, (const char *)d);
  o->n++;
  return 0;
}

static int ported_process(mpx_plugin_ctx_t *c, void *s, const void *in, size_t len) {
  (void)s;
  (void)len;
  if (memcmp(in, "p", 1) == 0) return mpx_emit_port(c, 1, "one", 3);
  if (memcmp(in, "k", 1) == 0) return mpx_emit_keyed(c, "a", 1, "ka", 2);
  if (memcmp(in, "x", 1) == 0) return mpx_emit_port(c, 2, "bad", 3);
  return mpx_emit(c, "zero", 4);
}
static int ported_fold(mpx_plugin_ctx_t *c, void *s, const void *p, size_t len) {
  (void)s;
  return len == 3 && memcmp(p, "bad", 3) == 0 ? mpx_plugin_fail(c, "bad partial") : 0;
}
static int ported_flush(mpx_plugin_ctx_t *c, void *s) {
  (void)c;
  (void)s;
  return 0;
}
static const char *const two_ports[] = {"matched", "unmatched"};
static const mpx_plugin_t ported = {MPX_PLUGIN_HEADER, .name = "ported", .version = "1",
                                    .kind = MPX_PLUGIN_REDUCE, .process = ported_process,
                                    .flush = ported_flush, .fold = ported_fold,
                                    .ports = two_ports, .n_ports = 2};

static int named_ports(mpx_plugin_ctx_t *c) {
  int rc = mpx_port_add(c, "errors");
  if (rc == 0) rc = mpx_port_add(c, "rest");
  return rc;
}
static int dup_ports(mpx_plugin_ctx_t *c) {
  int rc = mpx_port_add(c, "a");
  return rc == 0 ? mpx_port_add(c, "a") : rc;
}
static const mpx_plugin_t named = {MPX_PLUGIN_HEADER, .name = "named", .version = "1",
                                   .kind = MPX_PLUGIN_MAP, .process = ported_process,
                                   .ports_fn = named_ports};

static void test_ports_keys_fold(void) {
  mpx_plugin_ctx_t *c;
  tagged_t o = {0};
  /* The hash plugin.h specifies, computed by an independent (Python)
   * implementation of that text: one word, none, a tail after a word. */
  CU_ASSERT_EQUAL(mpx_key_hash("", 0), 0xdfaffe01u);
  CU_ASSERT_EQUAL(mpx_key_hash("a", 1), 0xc3dc7c67u);
  CU_ASSERT_EQUAL(mpx_key_hash("foobar", 6), 0x72aa6d1eu);
  CU_ASSERT_EQUAL(mpx_key_hash("0123456789abcdefX", 17), 0x51bb5cc9u);
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &ported, NULL, NULL, 0, NULL, 0, 1, NULL, NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx__ctx_port_count(c), 2);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_port_names(c)[1], "unmatched");
  CU_ASSERT_EQUAL(mpx_port_index(c, "unmatched"), 1);
  CU_ASSERT_EQUAL(mpx_port_index(c, "nope"), MPX_ENOENT);
  CU_ASSERT_EQUAL(mpx_port_add(c, "late"), MPX_ESTATE); /* only from ports_fn */
  mpx__ctx_set_emit_to(c, tagged, &o);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(c, NULL, "p", 1), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(c, NULL, "k", 1), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(c, NULL, "z", 1), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_process(c, NULL, "x", 1), MPX_EINVAL);
  CU_ASSERT_EQUAL_FATAL(o.n, 3);
  CU_ASSERT(o.port[0] == 1 && !o.keyed[0] && strcmp(o.data[0], "one") == 0);
  CU_ASSERT(o.port[1] == 0 && o.keyed[1] && o.hash[1] == 0xc3dc7c67u);
  CU_ASSERT(o.port[2] == 0 && !o.keyed[2] && strcmp(o.data[2], "zero") == 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(c, NULL, "ok", 2), 0);
  CU_ASSERT_EQUAL(mpx__ctx_call_fold(c, NULL, "bad", 3), MPX_ETASK);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "fold: bad partial"));
  mpx__ctx_free(c);
  /* Ports named by the parameters; a ports_fn that fails is a config error. */
  CU_ASSERT_EQUAL_FATAL(mpx__ctx_new(&c, &named, "r", NULL, 0, NULL, 0, 1, NULL, NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx_port_count(c), 2);
  CU_ASSERT_STRING_EQUAL(mpx__ctx_port_names(c)[0], "errors");
  mpx__ctx_free(c);
  mpx_plugin_t dup = named;
  dup.ports_fn = dup_ports;
  CU_ASSERT_EQUAL(mpx__ctx_new(&c, &dup, "r", NULL, 0, NULL, 0, 1, NULL, NULL, NULL), MPX_ECONFIG);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "port 'a' named twice"));
  /* A descriptor with both, or a bad port name, is refused at load. */
  mpx_plugin_t both = ported;
  both.ports_fn = named_ports;
  CU_ASSERT_EQUAL(mpx__plugin_check(&both, "x"), MPX_EPLUGIN);
  static const char *const bad[] = {"Bad"};
  mpx_plugin_t badp = ported;
  badp.ports = bad;
  badp.n_ports = 1;
  CU_ASSERT_EQUAL(mpx__plugin_check(&badp, "x"), MPX_EPLUGIN);
  /* A 1.1 descriptor (shorter) has no ports and no fold. */
  mpx_plugin_t old = ported;
  old.struct_size = (uint32_t)offsetof(mpx_plugin_t, ports);
  CU_ASSERT_FALSE(mpx__plugin_has_fold(&old));
  old.merge = NULL;
  CU_ASSERT_EQUAL(mpx__plugin_check(&old, "x"), MPX_EPLUGIN);
}

MPX_TEST_MAIN("plugin", MPX_TEST(test_load_shipped), MPX_TEST(test_ports_keys_fold),
              MPX_TEST(test_load_missing), MPX_TEST(test_load_broken),
              MPX_TEST(test_abi_minor_flags),
              MPX_TEST(test_load_by_name_rules), MPX_TEST(test_scan),
              MPX_TEST(test_params), MPX_TEST(test_params_encode),
              MPX_TEST(test_services), MPX_TEST(test_range),
              MPX_TEST(test_lines), MPX_TEST(test_primes),
              MPX_TEST(test_grep), MPX_TEST(test_checksum), MPX_TEST(test_field),
              MPX_TEST(test_wordcount), MPX_TEST(test_topk),
              MPX_TEST(test_print), MPX_TEST(test_jsonl))
