/* Field extraction from CSV and JSON lines, shared by route and aggregate
 * (a plugin's own code, built into each: plugins use only public headers).
 *
 * A field spec is either a CSV column number, 1-based ("3"), or a JSON
 * path starting with '.' (".a.b[2]": key a, then key b, then element 2;
 * "." alone: the whole document). The specs of one extractor are all of
 * one format.
 *
 * CSV (RFC 4180): fields end at the separator (one byte); a field that
 * starts with '"' is quoted: it runs to the next '"' not doubled, may hold
 * the separator, and "" in it is one '"'. A '"' inside an unquoted field
 * is an ordinary byte. One '\r' at the end of the item is ignored (CRLF
 * files). An unterminated quoted field, or bytes between a closing quote
 * and the separator, make the item malformed.
 *
 * JSON: the item is read only as far as the path needs (the rest is not
 * checked). A key repeated in an object: the first wins. The value at the
 * path is a string (its unescaped contents), a number (its text as
 * written) or true/false (that text); null, an object, an array or no
 * such key/element make the field missing.
 *
 * Zero-copy: a value points into the item when it is plain (an unquoted
 * or quote-free CSV field, a JSON string without escapes, a number); it
 * is unescaped into the extractor's scratch otherwise. Either stays valid
 * until the next fields_get on the same extractor. */
#ifndef MPX_PLUGINS_FIELDS_H
#define MPX_PLUGINS_FIELDS_H

#include <stddef.h>

typedef struct {
  const char *p; /* NULL: the item has no such field */
  size_t len;
} fields_val_t;

typedef struct fields_s fields_t;

/* Parses specs[0..n) (n >= 1). format: "" (inferred from the specs),
 * "csv" or "json"; sep: the CSV separator, exactly one byte, not '"'
 * (ignored for JSON). 0, or -1 with the reason in err (for
 * mpx_plugin_fail), or -2 when out of memory. */
int fields_new(fields_t **out, const char *const *specs, size_t n,
               const char *format, const char *sep, char *err, size_t errlen);
void fields_free(fields_t *f); /* accepts NULL */

/* Extracts every field of one item into out[0..n). 0, or -1 when the item
 * is malformed (fields_error says how), -2 when out of memory. */
int fields_get(fields_t *f, const void *item, size_t len, fields_val_t *out);
const char *fields_error(const fields_t *f);

/* Splits a comma-separated list of specs ("2,3", ".a, .b") in place:
 * each comma becomes a NUL and the surrounding spaces are dropped; up to
 * max pointers into s go to specs. The number found (max + 1 when there
 * are more than max), 0 when the list is empty or has an empty entry. */
size_t fields_split_list(char *s, const char **specs, size_t max);

#endif /* MPX_PLUGINS_FIELDS_H */
