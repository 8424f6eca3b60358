/* aggregate: a reduce that groups CSV or JSON lines by a key field and
 * computes, per key, the row count and per value field the sum, min, max
 * and mean (agg.h has the output and partial formats).
 *
 * Values are numbers: with decimals >= 0, exact fixed-point decimals of at
 * most that many digits after the point ("12.3", "-4", "+0.50" with
 * decimals 2; no exponent), summed as int64 counts of 10^-decimals, so the
 * result does not depend on how the rows were batched; with decimals -1,
 * any finite number strtod reads, summed as doubles. A row whose key or a
 * value is missing, or a value that is not such a number, fails for good
 * (mpx_plugin_fail_permanent: dead-lettered with the reason; the run goes
 * on). A fixed-point sum that would leave int64 fails the row too.
 *
 * Partition-aware: in a partitioned stage (`partition_by: key`) a
 * non-final flush emits one partial per partition; fold adds a partial
 * into the live state; merge remains for engines before ABI 1.2. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agg.h"
#include "fields.h"

#define MAX_VALUES 64

typedef struct {
  agg_t t;
  fields_t *fields; /* the key, then the values */
  fields_val_t *vals;
  num_t *nums;
  const char **names; /* the specs, for messages (into specs) */
  char *specs;
  char sep;
  int decimals;
} aggregate_t;

static void aggregate_free(aggregate_t *a) {
  agg_free(&a->t);
  fields_free(a->fields);
  free(a->vals);
  free(a->nums);
  free(a->names);
  free(a->specs);
  free(a);
}

/* The key and value specs into a->fields. */
static int make_fields(mpx_plugin_ctx_t *ctx, aggregate_t *a, size_t *nv) {
  const char *key = mpx_param_str(ctx, "key"), *sep = mpx_param_str(ctx, "separator");
  char err[256];
  if (key[0] == '\0') return mpx_plugin_fail(ctx, "key: give a CSV column or a JSON path");
  if (strlen(sep) != 1) return mpx_plugin_fail(ctx, "separator '%s': want one byte", sep);
  if ((a->specs = strdup(mpx_param_str(ctx, "values"))) == NULL ||
      (a->names = calloc(MAX_VALUES + 2, sizeof *a->names)) == NULL)
    return MPX_ENOMEM;
  a->names[0] = key;
  *nv = fields_split_list(a->specs, a->names + 1, MAX_VALUES + 1);
  if (*nv == 0)
    return mpx_plugin_fail(ctx, "values: want a comma-separated list of CSV columns or "
                           "JSON paths, got '%s'", mpx_param_str(ctx, "values"));
  if (*nv > MAX_VALUES) return mpx_plugin_fail(ctx, "values: at most %d fields", MAX_VALUES);
  int rc = fields_new(&a->fields, a->names, *nv + 1, mpx_param_str(ctx, "format"), sep,
                      err, sizeof err);
  if (rc == -2) return MPX_ENOMEM;
  if (rc < 0) return mpx_plugin_fail(ctx, "%s", err);
  a->sep = sep[0];
  return 0;
}

static int aggregate_init(mpx_plugin_ctx_t *ctx, void **state) {
  int64_t d = mpx_param_int(ctx, "decimals");
  aggregate_t *a;
  size_t nv = 0;
  int rc;
  if (d < -1 || d > 18)
    return mpx_plugin_fail(ctx, "decimals must be -1 (floating point) or 0 to 18, got %lld",
                           (long long)d);
  if ((a = calloc(1, sizeof *a)) == NULL) return MPX_ENOMEM;
  a->decimals = (int)d;
  if ((rc = make_fields(ctx, a, &nv)) == 0 &&
      ((a->vals = calloc(nv + 1, sizeof *a->vals)) == NULL ||
       (a->nums = calloc(nv, sizeof *a->nums)) == NULL))
    rc = MPX_ENOMEM;
  agg_init(&a->t, nv, a->decimals);
  if (rc != 0) {
    aggregate_free(a);
    return rc;
  }
  *state = a;
  return 0;
}

static void aggregate_fini(mpx_plugin_ctx_t *ctx, void *state) {
  (void)ctx;
  if (state != NULL) aggregate_free(state);
}

static int aggregate_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                             size_t len) {
  aggregate_t *a = state;
  int rc = fields_get(a->fields, in, len, a->vals);
  if (rc == -2) return MPX_ENOMEM;
  if (rc < 0) return mpx_plugin_fail_permanent(ctx, "%s", fields_error(a->fields));
  for (size_t i = 0; i <= a->t.nv; i++) {
    const fields_val_t *v = &a->vals[i];
    if (v->p == NULL)
      return mpx_plugin_fail_permanent(ctx, "no %s field '%s'", i ? "value" : "key",
                                       a->names[i]);
    if (i == 0) continue;
    rc = a->decimals >= 0 ? agg_parse_fixed(v->p, v->len, a->decimals, &a->nums[i - 1].i)
                          : agg_parse_double(v->p, v->len, &a->nums[i - 1].d);
    if (rc != 0) {
      if (a->decimals >= 0)
        return mpx_plugin_fail_permanent(
            ctx, "value '%.*s' of field '%s' is not a decimal number with at most %d "
            "digits after the point", (int)(v->len < 60 ? v->len : 60), v->p, a->names[i],
            a->decimals);
      return mpx_plugin_fail_permanent(ctx, "value '%.*s' of field '%s' is not a number",
                                       (int)(v->len < 60 ? v->len : 60), v->p, a->names[i]);
    }
  }
  rc = agg_add_row(&a->t, a->vals[0].p, a->vals[0].len, a->nums);
  if (rc == MPX_EOVERFLOW)
    return mpx_plugin_fail_permanent(ctx, "the sum of key '%.*s' leaves the int64 range",
                                     (int)(a->vals[0].len < 60 ? a->vals[0].len : 60),
                                     a->vals[0].p);
  if (rc == MPX_E2BIG) return mpx_plugin_fail_permanent(ctx, "a key of 4 GiB or more");
  return rc;
}

static int aggregate_flush(mpx_plugin_ctx_t *ctx, void *state) {
  aggregate_t *a = state;
  int rc = mpx_reduce_final(ctx) ? agg_emit_final(&a->t, ctx, a->sep)
                                 : agg_emit_partial(&a->t, ctx, mpx_partitions(ctx));
  agg_clear(&a->t);
  return rc;
}

static int partial_error(mpx_plugin_ctx_t *ctx, int rc) {
  if (rc == MPX_EINVAL) return mpx_plugin_fail(ctx, "malformed partial");
  if (rc == MPX_EOVERFLOW)
    return mpx_plugin_fail(ctx, "a count or sum leaves its range (uint64 counts, int64 "
                           "fixed-point sums)");
  return rc;
}

static int aggregate_fold(mpx_plugin_ctx_t *ctx, void *state, const void *partial,
                          size_t len) {
  aggregate_t *a = state;
  return partial_error(ctx, agg_add_partial(&a->t, partial, len));
}

static int aggregate_merge(mpx_plugin_ctx_t *ctx, void *state, const void *x, size_t xlen,
                           const void *y, size_t ylen) {
  aggregate_t *a = state;
  agg_t t;
  int rc;
  agg_init(&t, a->t.nv, a->decimals);
  if ((rc = agg_add_partial(&t, x, xlen)) == 0) rc = agg_add_partial(&t, y, ylen);
  rc = partial_error(ctx, rc);
  if (rc == 0)
    rc = mpx_reduce_final(ctx) ? agg_emit_final(&t, ctx, a->sep) : agg_emit_partial(&t, ctx, 0);
  agg_free(&t);
  return rc;
}

static const mpx_param_def_t aggregate_params[] = {
    {"key", MPX_PARAM_STRING, NULL, true,
     "the key field: a CSV column (from 1) or a JSON path (.a.b[2])"},
    {"values", MPX_PARAM_STRING, NULL, true,
     "the value fields, comma-separated (\"2,3\", \".t,.h\")"},
    {"format", MPX_PARAM_STRING, "", false, "csv or json (default: from the fields)"},
    {"separator", MPX_PARAM_STRING, ",", false,
     "the CSV separator (one byte), also between the output's fields"},
    {"decimals", MPX_PARAM_INT, "-1", false,
     "-1: floating point; 0..18: exact decimals with that many digits"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "aggregate",
    .version = "1.0",
    .description = "count, sum, min, max and mean of value fields per key field "
                   "(CSV or JSON lines); one line per key, sorted",
    .kind = MPX_PLUGIN_REDUCE,
    .params = aggregate_params,
    .n_params = sizeof aggregate_params / sizeof aggregate_params[0],
    .init = aggregate_init,
    .fini = aggregate_fini,
    .process = aggregate_process,
    .flush = aggregate_flush,
    .merge = aggregate_merge,
    .fold = aggregate_fold,
};
