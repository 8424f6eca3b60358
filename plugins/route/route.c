/* route: a map that sends each item, whole, to the first of its routes
 * whose POSIX extended regex matches it (or one field of it: a CSV column
 * or a JSON path, common/fields.h), and to the port "unmatched" when none
 * does. The ports are named by the `routes` parameter (ports_fn), in its
 * order, then "unmatched": a pipeline reads them as `STAGE.NAME`.
 *
 * routes: "NAME=REGEX;NAME2=REGEX2". ";;" is a literal ';' in a regex;
 * spaces around a name are dropped; an empty entry (a trailing ';') is
 * skipped (routes.h has the exact syntax). An item without the field, or one that is not valid CSV or
 * JSON, goes to "unmatched": routing is not validation. */
#define _GNU_SOURCE
#include <regex.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx/plugin.h>

#include "fields.h"
#include "routes.h"

typedef struct {
  routes_entry_t *routes; /* names and regexes, as the parameter has them */
  size_t n;
  regex_t *re; /* routes[i]'s, compiled; the first ncompiled of them */
  size_t ncompiled;
  fields_t *fields; /* NULL: match the whole item */
  char *line;       /* a NUL-terminated copy of what is matched */
  size_t cap;
} router_t;

/* The routes parameter, checked (routes.c) and compiled into r. */
static int parse_routes(mpx_plugin_ctx_t *ctx, router_t *r) {
  char err[512];
  int rc = routes_parse(mpx_param_str(ctx, "routes"), &r->routes, &r->n, err, sizeof err);
  if (rc == -2) return MPX_ENOMEM;
  if (rc != 0) return mpx_plugin_fail(ctx, "%s", err);
  if ((r->re = calloc(r->n, sizeof *r->re)) == NULL) return MPX_ENOMEM;
  for (; r->ncompiled < r->n; r->ncompiled++) {
    const routes_entry_t *e = &r->routes[r->ncompiled];
    regex_t *re = &r->re[r->ncompiled];
    if ((rc = regcomp(re, e->pattern, REG_EXTENDED | REG_NOSUB)) != 0) {
      char why[256];
      regerror(rc, re, why, sizeof why);
      return mpx_plugin_fail(ctx, "routes: bad regex '%s' for route '%s': %s", e->pattern,
                             e->name, why);
    }
  }
  return 0;
}

static int make_fields(mpx_plugin_ctx_t *ctx, fields_t **f) {
  const char *field = mpx_param_str(ctx, "field");
  char err[256];
  *f = NULL;
  if (field[0] == '\0') {
    if (mpx_param_has(ctx, "format") && mpx_param_str(ctx, "format")[0] != '\0')
      return mpx_plugin_fail(ctx, "format is for a field: give field too");
    return 0;
  }
  int rc = fields_new(f, &field, 1, mpx_param_str(ctx, "format"),
                      mpx_param_str(ctx, "separator"), err, sizeof err);
  if (rc == -2) return MPX_ENOMEM;
  return rc < 0 ? mpx_plugin_fail(ctx, "%s", err) : 0;
}

static void router_free(router_t *r) {
  for (size_t i = 0; i < r->ncompiled; i++) regfree(&r->re[i]);
  free(r->re);
  routes_free(r->routes, r->n);
  fields_free(r->fields);
  free(r->line);
  free(r);
}

static int route_ports(mpx_plugin_ctx_t *ctx) {
  router_t *r = calloc(1, sizeof *r);
  int rc;
  if (r == NULL) return MPX_ENOMEM;
  /* The whole configuration is checked here, so a bad one is a
   * configuration error before any instance starts. */
  rc = parse_routes(ctx, r);
  if (rc == 0) rc = make_fields(ctx, &r->fields);
  for (size_t i = 0; rc == 0 && i < r->n; i++)
    if ((rc = mpx_port_add(ctx, r->routes[i].name)) != 0)
      rc = mpx_plugin_fail(ctx, "routes: cannot name port '%s'", r->routes[i].name);
  if (rc == 0 && (rc = mpx_port_add(ctx, "unmatched")) != 0)
    rc = mpx_plugin_fail(ctx, "too many routes (at most %d)", MPX_PLUGIN_MAX_PORTS - 1);
  router_free(r);
  return rc;
}

static int route_init(mpx_plugin_ctx_t *ctx, void **state) {
  router_t *r = calloc(1, sizeof *r);
  int rc;
  if (r == NULL) return MPX_ENOMEM;
  if ((rc = parse_routes(ctx, r)) == 0) rc = make_fields(ctx, &r->fields);
  if (rc != 0) {
    router_free(r);
    return rc;
  }
  *state = r;
  return 0;
}

static void route_fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  if (state != NULL) router_free(state);
}

/* The index of the first route matching [s, s+len), n for none, or < 0. */
static int first_match(mpx_plugin_ctx_t *ctx, router_t *r, const char *s, size_t len) {
  if (len + 1 > r->cap) {
    char *p = realloc(r->line, len + 1);
    if (p == NULL) return mpx_plugin_fail(ctx, "out of memory for a %zu-byte field", len);
    r->line = p;
    r->cap = len + 1;
  }
  if (len) memcpy(r->line, s, len);
  r->line[len] = '\0';
  for (size_t i = 0; i < r->n; i++) {
    int rc;
#ifdef REG_STARTEND
    regmatch_t m[1] = {{.rm_so = 0, .rm_eo = (regoff_t)len}};
    rc = regexec(&r->re[i], r->line, 1, m, REG_STARTEND);
#else
    rc = regexec(&r->re[i], r->line, 0, NULL, 0);
#endif
    if (rc == 0) return (int)i;
    if (rc != REG_NOMATCH) {
      char why[256];
      regerror(rc, &r->re[i], why, sizeof why);
      return mpx_plugin_fail(ctx, "regexec: %s", why);
    }
  }
  return (int)r->n;
}

static int route_process(mpx_plugin_ctx_t *ctx, void *state, const void *in, size_t len) {
  router_t *r = state;
  int port = (int)r->n;
  if (r->fields == NULL) {
    port = first_match(ctx, r, in, len);
  } else {
    fields_val_t v;
    int rc = fields_get(r->fields, in, len, &v);
    if (rc == -2) return mpx_plugin_fail(ctx, "out of memory");
    if (rc == 0 && v.p != NULL) port = first_match(ctx, r, v.p, v.len);
  }
  if (port < 0) return port;
  return mpx_emit_port(ctx, (unsigned)port, in, len);
}

static const mpx_param_def_t route_params[] = {
    {"routes", MPX_PARAM_STRING, NULL, true,
     "NAME=REGEX;NAME2=REGEX2 (POSIX ERE; ';;' is a literal ';'): the ports, in order"},
    {"field", MPX_PARAM_STRING, "", false,
     "what is matched: a CSV column (from 1) or a JSON path (.a.b[2]); default the whole item"},
    {"format", MPX_PARAM_STRING, "", false, "csv or json (default: from field)"},
    {"separator", MPX_PARAM_STRING, ",", false, "the CSV separator (one byte)"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "route",
    .version = "1.0",
    .description = "send each item to the port of the first route whose regex "
                   "matches it (or a CSV/JSON field of it), else to 'unmatched'",
    .kind = MPX_PLUGIN_MAP,
    .params = route_params,
    .n_params = sizeof route_params / sizeof route_params[0],
    .init = route_init,
    .fini = route_fini,
    .process = route_process,
    .ports_fn = route_ports,
};
