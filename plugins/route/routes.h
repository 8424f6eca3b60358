/* route's `routes` parameter, "NAME=REGEX;NAME2=REGEX2", split into its
 * routes and checked, without compiling the regexes (route.c does that):
 * a pure function of the text, so it is fuzzed on its own
 * (tests/fuzz/fuzz_fields.c).
 *
 * Entries are separated by a ';' that is not doubled; ";;" is a literal
 * ';' in a regex (runs of ';' pair up from their left: ";;;" is a ';' then
 * the separator). An entry of spaces only (a trailing ';') is skipped. A
 * name is what comes before the entry's first '=', spaces around it
 * dropped: 1 to 63 of [a-z0-9_-], unique, not "unmatched". The regex is
 * everything after the '=', as written but for ";;" -> ";". */
#ifndef MPX_PLUGINS_ROUTES_H
#define MPX_PLUGINS_ROUTES_H

#include <stddef.h>

typedef struct {
  char *name;
  char *pattern;
} routes_entry_t;

/* The routes of spec into *out[0..*n) (n >= 1; free with routes_free). 0,
 * -1 with the reason in err ("routes: ..."), or -2 when out of memory;
 * on failure *out is NULL and *n 0. */
int routes_parse(const char *spec, routes_entry_t **out, size_t *n, char *err,
                 size_t errlen);
void routes_free(routes_entry_t *r, size_t n); /* accepts NULL */

#endif /* MPX_PLUGINS_ROUTES_H */
