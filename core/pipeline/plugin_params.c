/* Stage parameters (mpx/plugin.h): a text value from YAML or --set is
 * parsed as its declared type once, here, so a plugin reads typed values
 * and a bad one fails at load time with the parameter's name. The context
 * (plugin_ctx.c) holds the parsed values; the loader checks the specs. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "internal.h"
#include "plugin_host.h"
#include "plugin_params.h"

/* ---- parameter values ------------------------------------------------------ */

/* 0, or -1 (not an integer), -2 (out of int64 range). */
static int parse_int(const char *s, int64_t *v) {
  const char *p = s;
  bool neg = false;
  int base = 10;
  char *end;
  unsigned long long m;
  if (*p == '+' || *p == '-') neg = *p++ == '-';
  if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
    base = 16;
    p += 2;
  }
  if (base == 10 ? !isdigit((unsigned char)*p) : !isxdigit((unsigned char)*p))
    return -1;
  errno = 0;
  m = strtoull(p, &end, base);
  if (*end != '\0') return -1;
  if (errno == ERANGE) return -2;
  if (neg) {
    if (m > (unsigned long long)INT64_MAX + 1) return -2;
    *v = m == (unsigned long long)INT64_MAX + 1 ? INT64_MIN : -(int64_t)m;
  } else {
    if (m > (unsigned long long)INT64_MAX) return -2;
    *v = (int64_t)m;
  }
  return 0;
}

static int parse_float(const char *s, double *v) {
  const char *p = s;
  char *end;
  int sign = 1;
  if (*p == '+' || *p == '-') sign = *p++ == '-' ? -1 : 1;
  if (strcasecmp(p, ".inf") == 0) {
    *v = sign * INFINITY;
    return 0;
  }
  if (strcasecmp(p, ".nan") == 0 && p == s) {
    *v = NAN;
    return 0;
  }
  if (*s == '\0' || isspace((unsigned char)*s)) return -1;
  errno = 0;
  *v = strtod(s, &end);
  if (*end != '\0') return -1;
  if (errno == ERANGE && isinf(*v)) return -2;
  return 0;
}

static int parse_bool(const char *s, bool *v) {
  static const char *yes[] = {"true", "yes", "on", "1"};
  static const char *no[] = {"false", "no", "off", "0"};
  for (size_t i = 0; i < MPX__ARRAY_SIZE(yes); i++) {
    if (strcasecmp(s, yes[i]) == 0) return *v = true, 0;
    if (strcasecmp(s, no[i]) == 0) return *v = false, 0;
  }
  return -1;
}

/* Parses text as p's type into v (a string is copied). 0, or -1 with why
 * ("must be an integer, got 'ten'") filled; MPX_ENOMEM. */
int mpx__pval_parse(const mpx_param_def_t *p, const char *text, pval_t *v,
                    char *why, size_t n) {
  int rc = 0;
  switch (p->type) {
  case MPX_PARAM_INT:
    rc = parse_int(text, &v->i);
    if (rc == -1) snprintf(why, n, "must be an integer, got '%s'", text);
    if (rc == -2)
      snprintf(why, n, "must be an integer in the int64 range, got '%s'",
               text);
    break;
  case MPX_PARAM_FLOAT:
    rc = parse_float(text, &v->f);
    if (rc == -1) snprintf(why, n, "must be a number, got '%s'", text);
    if (rc == -2) snprintf(why, n, "is out of range for a double: '%s'", text);
    break;
  case MPX_PARAM_BOOL:
    rc = parse_bool(text, &v->b);
    if (rc != 0) snprintf(why, n, "must be true or false, got '%s'", text);
    break;
  case MPX_PARAM_STRING: {
    char *s = strdup(text);
    if (s == NULL) return MPX_ENOMEM;
    free(v->s);
    v->s = s;
    break;
  }
  default:
    snprintf(why, n, "has an unknown type %d", (int)p->type);
    rc = -1;
  }
  if (rc != 0) return -1;
  v->set = true;
  return 0;
}

void mpx__pvals_free(pval_t *vals, size_t n) {
  if (vals == NULL) return;
  for (size_t i = 0; i < n; i++) free(vals[i].s);
  free(vals);
}

/* ---- parameter validation -------------------------------------------------- */

const char *mpx__plugin_pname(const mpx_plugin_t *d) {
  return d && d->name ? d->name : "?";
}

int mpx__param_find(const mpx_plugin_t *d, const char *name) {
  for (size_t i = 0; i < d->n_params; i++)
    if (strcmp(d->params[i].name, name) == 0) return (int)i;
  return -1;
}

static int unknown_param(const mpx_plugin_t *d, const char *key) {
  char known[1024];
  size_t len = 0;
  known[0] = '\0';
  if (d->n_params == 0)
    return mpx__err(MPX_ECONFIG, "plugin '%s': unknown parameter '%s' (it "
                    "takes no parameters)", mpx__plugin_pname(d), key);
  for (size_t i = 0; i < d->n_params && len < sizeof known; i++) {
    int n = snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "",
                     d->params[i].name);
    if (n < 0) break;
    len += (size_t)n;
  }
  return mpx__err(MPX_ECONFIG, "plugin '%s': unknown parameter '%s' (known: "
                  "%s)", mpx__plugin_pname(d), key, known);
}

/* Fills vals (d->n_params, zeroed) from kv and the defaults. */
int mpx__params_fill(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                      size_t *bad, pval_t *vals) {
  char why[256];
  size_t dummy;
  int rc;
  if (bad == NULL) bad = &dummy;
  *bad = SIZE_MAX;
  if (nkv > 0 && kv == NULL)
    return mpx__err(MPX_EINVAL, "plugin '%s': NULL parameter list", mpx__plugin_pname(d));
  for (size_t j = 0; j < nkv; j++) {
    if (kv[j].key == NULL) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter %zu has no name",
                      mpx__plugin_pname(d), j);
    }
    int i = mpx__param_find(d, kv[j].key);
    if (i < 0) {
      *bad = j;
      return unknown_param(d, kv[j].key);
    }
    if (kv[j].value == NULL) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter '%s' has no value",
                      mpx__plugin_pname(d), kv[j].key);
    }
    rc = mpx__pval_parse(&d->params[i], kv[j].value, &vals[i], why,
                         sizeof why);
    if (rc == MPX_ENOMEM) return mpx__err(rc, "plugin '%s'", mpx__plugin_pname(d));
    if (rc != 0) {
      *bad = j;
      return mpx__err(MPX_ECONFIG, "plugin '%s': parameter '%s' %s", mpx__plugin_pname(d),
                      kv[j].key, why);
    }
  }
  for (size_t i = 0; i < d->n_params; i++) {
    const mpx_param_def_t *p = &d->params[i];
    if (vals[i].set) continue;
    if (p->default_value != NULL) {
      rc = mpx__pval_parse(p, p->default_value, &vals[i], why,
                           sizeof why);
      if (rc == MPX_ENOMEM) return mpx__err(rc, "plugin '%s'", mpx__plugin_pname(d));
      if (rc != 0) /* mpx__plugin_check refuses these */
        return mpx__err(MPX_EPLUGIN, "plugin '%s': the default of parameter "
                        "'%s' %s", mpx__plugin_pname(d), p->name, why);
    } else if (p->required) {
      return mpx__err(MPX_ECONFIG, "plugin '%s': missing required parameter "
                      "'%s'", mpx__plugin_pname(d), p->name);
    }
  }
  return 0;
}

int mpx__params_check(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                      size_t *bad) {
  int rc;
  if (bad) *bad = SIZE_MAX;
  if ((rc = mpx__plugin_check(d, d && d->name ? d->name : "plugin")) != 0)
    return rc;
  pval_t *vals = calloc(d->n_params ? d->n_params : 1, sizeof *vals);
  if (vals == NULL) return mpx__err(MPX_ENOMEM, "plugin '%s'", mpx__plugin_pname(d));
  rc = mpx__params_fill(d, kv, nkv, bad, vals);
  mpx__pvals_free(vals, d->n_params);
  return rc;
}


/* The canonical text of a value: it parses back to the same value. */
const char *mpx__pval_text(const mpx_param_def_t *p, const pval_t *v,
                           char *buf, size_t n) {
  switch (p->type) {
  case MPX_PARAM_INT:
    snprintf(buf, n, "%" PRId64, v->i);
    return buf;
  case MPX_PARAM_FLOAT:
    if (isnan(v->f)) return ".nan";
    if (isinf(v->f)) return v->f > 0 ? ".inf" : "-.inf";
    snprintf(buf, n, "%.17g", v->f);
    return buf;
  case MPX_PARAM_BOOL:
    return v->b ? "true" : "false";
  default:
    return v->s ? v->s : "";
  }
}
