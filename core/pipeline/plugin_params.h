/* What plugin_params.c (parsing and checking stage parameters) shares with
 * plugin_ctx.c (the context that keeps them). Private to core/pipeline. */
#ifndef MPX_CORE_PLUGIN_PARAMS_H
#define MPX_CORE_PLUGIN_PARAMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpx/plugin.h"
#include "plugin_host.h"

/* One parameter's value, typed as its spec says. */
typedef struct {
  bool set;
  int64_t i;
  double f;
  bool b;
  char *s; /* malloc'd, for strings */
} pval_t;

/* Parses text as p's type into v (a string is copied). 0, or -1 with why
 * ("must be an integer, got 'ten'") filled; MPX_ENOMEM. */
int mpx__pval_parse(const mpx_param_def_t *p, const char *text, pval_t *v,
                    char *why, size_t n);

/* d's name for messages ("?" when it has none). */
const char *mpx__plugin_pname(const mpx_plugin_t *d);

/* The index of d's parameter called name, or -1. */
int mpx__param_find(const mpx_plugin_t *d, const char *name);

/* Fills vals (d->n_params, zeroed) from kv and the defaults; *bad (may be
 * NULL) gets the index of the kv entry at fault, else SIZE_MAX. */
int mpx__params_fill(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                     size_t *bad, pval_t *vals);

void mpx__pvals_free(pval_t *vals, size_t n);

/* The canonical text of a value (in buf, or a constant): it parses back to
 * the same value. */
const char *mpx__pval_text(const mpx_param_def_t *p, const pval_t *v,
                           char *buf, size_t n);

#endif
