/* grep: a filter that keeps the items (lines) matching a POSIX extended
 * regular expression, or with invert those that do not match. What it
 * keeps goes to port 0, the others to port 1 (ports_fn): "matched" then
 * "unmatched", or with invert "unmatched" then "matched", so the names say
 * what the regex did and port 0 is always what grep keeps (a linear
 * pipeline, or `inputs: [g]`, reads it; port 1 is dropped unless a stage
 * reads `g.matched` or `g.unmatched`). An item is
 * matched whole: '^' and '$' anchor at its ends, and bytes after a NUL in
 * it are seen where the C library supports REG_STARTEND (glibc, musl,
 * the BSDs). Matching follows the process's locale (LC_CTYPE). */
#define _GNU_SOURCE
#include <regex.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <mpx/plugin.h>

typedef struct {
  regex_t re;
  bool invert;
  /* A NUL-terminated copy of the item: regexec implementations (and
   * sanitizers' interceptors of it) may read up to a NUL even with
   * REG_STARTEND, and an item is not NUL-terminated. */
  char *line;
  size_t cap;
} grep_t;

static int grep_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *pattern = mpx_param_str(ctx, "pattern");
  grep_t *g = calloc(1, sizeof *g);
  int rc;
  if (g == NULL) return MPX_ENOMEM;
  if ((rc = regcomp(&g->re, pattern, REG_EXTENDED | REG_NOSUB)) != 0) {
    char why[256];
    regerror(rc, &g->re, why, sizeof why);
    free(g);
    return mpx_plugin_fail(ctx, "bad pattern '%s': %s", pattern, why);
  }
  g->invert = mpx_param_bool(ctx, "invert");
  *state = g;
  return 0;
}

static void grep_fini(mpx_plugin_ctx_t *ctx, void *state) {
  grep_t *g = state;
  (void)ctx;
  if (g == NULL) return;
  regfree(&g->re);
  free(g->line);
  free(g);
}

static int grep_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                        size_t len) {
  grep_t *g = state;
  int rc;
  if (len + 1 > g->cap) {
    char *p = realloc(g->line, len + 1);
    if (p == NULL) return mpx_plugin_fail(ctx, "out of memory for a %zu-byte line", len);
    g->line = p;
    g->cap = len + 1;
  }
  if (len) memcpy(g->line, in, len);
  g->line[len] = '\0';
#ifdef REG_STARTEND
  regmatch_t m[1];
  m[0].rm_so = 0;
  m[0].rm_eo = (regoff_t)len;
  rc = regexec(&g->re, g->line, 1, m, REG_STARTEND);
#else
  rc = regexec(&g->re, g->line, 0, NULL, 0);
#endif
  if (rc != 0 && rc != REG_NOMATCH) {
    char why[256];
    regerror(rc, &g->re, why, sizeof why);
    return mpx_plugin_fail(ctx, "regexec: %s", why);
  }
  return mpx_emit_port(ctx, (rc == 0) != g->invert ? 0u : 1u, in, len);
}

static int grep_ports(mpx_plugin_ctx_t *ctx) {
  bool invert = mpx_param_bool(ctx, "invert");
  int rc = mpx_port_add(ctx, invert ? "unmatched" : "matched");
  return rc != 0 ? rc : mpx_port_add(ctx, invert ? "matched" : "unmatched");
}

static const mpx_param_def_t grep_params[] = {
    {"pattern", MPX_PARAM_STRING, NULL, true,
     "POSIX extended regular expression"},
    {"invert", MPX_PARAM_BOOL, "false", false,
     "keep the items that do not match"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "grep",
    .version = "1.1",
    .description = "keep the items matching a POSIX extended regular "
                   "expression (or, with invert, the others); ports "
                   "matched and unmatched",
    .kind = MPX_PLUGIN_MAP,
    .params = grep_params,
    .n_params = sizeof grep_params / sizeof grep_params[0],
    .init = grep_init,
    .fini = grep_fini,
    .process = grep_process,
    .ports_fn = grep_ports,
};
