/* route's `routes` parameter: see routes.h. */
#define _GNU_SOURCE /* strndup */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "routes.h"

void routes_free(routes_entry_t *r, size_t n) {
  for (size_t i = 0; r != NULL && i < n; i++) {
    free(r[i].name);
    free(r[i].pattern);
  }
  free(r);
}

static bool good_name(const char *s) {
  size_t n = strlen(s);
  if (n == 0 || n > 63) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' || *s == '-'))
      return false;
  return true;
}

/* One "NAME=REGEX" entry, [s, e) with ";;" still doubled, into r. */
static int parse_entry(const char *s, const char *e, routes_entry_t *r, char *err,
                       size_t errlen) {
  const char *eq = memchr(s, '=', (size_t)(e - s));
  if (eq == NULL) {
    snprintf(err, errlen, "routes: '%.*s' is not NAME=REGEX", (int)(e - s), s);
    return -1;
  }
  const char *ns = s, *ne = eq;
  while (ns < ne && *ns == ' ') ns++;
  while (ne > ns && ne[-1] == ' ') ne--;
  if ((r->name = strndup(ns, (size_t)(ne - ns))) == NULL ||
      (r->pattern = malloc((size_t)(e - eq))) == NULL)
    return -2;
  size_t k = 0;
  for (const char *p = eq + 1; p < e; p++) {
    r->pattern[k++] = *p;
    if (*p == ';') p++; /* ";;" -> ";" */
  }
  r->pattern[k] = '\0';
  if (!good_name(r->name)) {
    snprintf(err, errlen, "routes: bad route name '%s' (want 1 to 63 of [a-z0-9_-])",
             r->name);
    return -1;
  }
  return 0;
}

/* Whether the last of r[0..k) may join the others. */
static int check_new(const routes_entry_t *r, size_t k, char *err, size_t errlen) {
  const char *name = r[k - 1].name;
  for (size_t i = 0; i + 1 < k; i++)
    if (strcmp(r[i].name, name) == 0) {
      snprintf(err, errlen, "routes: route '%s' named twice", name);
      return -1;
    }
  if (strcmp(name, "unmatched") == 0) {
    snprintf(err, errlen, "routes: 'unmatched' is the port of the items no route takes; "
             "name the route otherwise");
    return -1;
  }
  return 0;
}

int routes_parse(const char *spec, routes_entry_t **out, size_t *n, char *err,
                 size_t errlen) {
  routes_entry_t *r = NULL;
  size_t k = 0;
  int rc = 0;
  *out = NULL;
  *n = 0;
  for (const char *p = spec; *p && rc == 0;) {
    const char *e = p;
    while (*e && !(*e == ';' && e[1] != ';')) e += (*e == ';') ? 2 : 1;
    const char *t = p;
    while (t < e && *t == ' ') t++;
    if (t < e) {
      routes_entry_t *g = realloc(r, (k + 1) * sizeof *r);
      if (g == NULL) {
        rc = -2;
        break;
      }
      r = g;
      memset(&r[k], 0, sizeof r[k]);
      rc = parse_entry(p, e, &r[k++], err, errlen);
      if (rc == 0) rc = check_new(r, k, err, errlen);
    }
    p = *e ? e + 1 : e;
  }
  if (rc == 0 && k == 0) {
    snprintf(err, errlen, "routes: no route (want NAME=REGEX;...)");
    rc = -1;
  }
  if (rc != 0) {
    if (rc == -2) snprintf(err, errlen, "out of memory");
    routes_free(r, k);
    return rc;
  }
  *out = r;
  *n = k;
  return 0;
}
