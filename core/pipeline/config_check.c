/* Pipeline config, step 2 (see config.c): the tree is checked key by key
 * into an mpx__cfg_t: every key known, every value of the right shape and
 * type, then stage names made and the stage options resolved against
 * `defaults`. --set assignments are checked here too, by the same rules. */
#include <errno.h>
#include <fcntl.h>
#include <locale.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <yaml.h>

#include "config.h"
#include "config_int.h"
#include "internal.h"

/* ---- checking the tree ---------------------------------------------------- */

typedef struct {
  mpx__cfg_t *c;
  const char *file;
  unsigned sup_given;
} check_t;

static const char *const top_keys[] = {"name",           "defaults",
                                       "stages",         "queue_capacity",
                                       "supervisor",     "dead_letter",
                                       NULL};
static const char *const stage_keys[] = {
    "plugin",  "params",  "workers", "codec",        "transport",  "retries", "timeout",
    "ordered", "batch",   "name",    "inputs",       "partition_by", "partitions", NULL};

static int key_index(const char *const *keys, const char *key) {
  int i;
  for (i = 0; keys[i] != NULL; i++)
    if (strcmp(keys[i], key) == 0) return i;
  return -1;
}

static void key_list(char *out, size_t cap, const char *const *keys) {
  size_t i;
  out[0] = '\0';
  for (i = 0; keys[i] != NULL; i++) {
    if (i > 0) strncat(out, ", ", cap - strlen(out) - 1);
    strncat(out, keys[i], cap - strlen(out) - 1);
  }
}

static int unknown_key(check_t *x, const node_t *k, const char *where,
                       const char *const *keys) {
  char list[256];
  qbuf_t qb;
  key_list(list, sizeof list, keys);
  return mpx__cfg_perr(x->file, k->line, k->col,
              "unknown key '%s' %s (expected one of: %s)", mpx__cfg_q(&qb, k->s),
              where, list);
}

/* A value error at node n: "FILE:L:C: why". */
static int verr(check_t *x, const node_t *n, const char *why) {
  return mpx__cfg_perr(x->file, n->line, n->col, "%s", why);
}

static mpx__cfg_pos_t pos_of(const node_t *n) {
  mpx__cfg_pos_t p = {n->line, n->col};
  return p;
}

/* A mapping or nothing (an empty section). */
static int want_map(check_t *x, const node_t *v, const char *key,
                    const char *what) {
  qbuf_t qb;
  val_t vv = mpx__cfg_node_val(v);
  if (v->type == N_MAP || (v->type == N_SCALAR && v->null)) return 0;
  return mpx__cfg_perr(x->file, v->line, v->col, "'%s' must be a mapping of %s, got %s",
              key, what, mpx__cfg_got(&qb, &vv));
}

static int do_opts_entry(check_t *x, mpx__cfg_opts_t *o, int k,
                         const node_t *v) {
  char why[320];
  parsed_t p;
  val_t vv = mpx__cfg_node_val(v);
  if (mpx__cfg_check_opt((mpx__cfg_opt_t)k, &vv, &p, why, sizeof why) != 0)
    return verr(x, v, why);
  if (mpx__cfg_store_opt(o, (mpx__cfg_opt_t)k, &p, pos_of(v)) != 0)
    return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  return 0;
}

static int do_defaults(check_t *x, const node_t *m) {
  size_t i;
  int rc, k;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    if ((k = mpx__cfg_opt_index(key->s)) < 0)
      return unknown_key(x, key, "in defaults", mpx__cfg_opt_names);
    if ((rc = do_opts_entry(x, &x->c->defaults, k, v)) != 0) return rc;
  }
  return 0;
}

static int do_supervisor(check_t *x, const node_t *m) {
  char why[320];
  parsed_t p;
  size_t i;
  int k;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = mpx__cfg_node_val(v);
    if ((k = key_index(mpx__cfg_sup_names, key->s)) < 0)
      return unknown_key(x, key, "in supervisor", mpx__cfg_sup_names);
    if (mpx__cfg_check_sup(k, &vv, &p, why, sizeof why) != 0 ||
        mpx__cfg_apply_sup(x->c, &x->sup_given, k, &p, why, sizeof why) != 0)
      return verr(x, v, why);
  }
  return 0;
}

static bool param_name_ok(const char *s) { return mpx__cfg_name_ok(s); }

static const char param_name_desc[] =
    "up to 64 letters, digits, '_' or '-'";

/* Adds or replaces a param (copies key and value). 0 or MPX_ENOMEM. */
static int put_param(mpx__cfg_stage_t *st, const char *key, const char *value,
                     mpx__cfg_pos_t key_at, mpx__cfg_pos_t at) {
  size_t i;
  char *v = strdup(value), *k = NULL;
  mpx__cfg_kv_t *kv;
  if (v == NULL) return MPX_ENOMEM;
  for (i = 0; i < st->n_params; i++) {
    if (strcmp(st->params[i].key, key) == 0) {
      free(st->params[i].value);
      st->params[i].value = v;
      st->params[i].line = at.line;
      st->params[i].col = at.col;
      return 0;
    }
  }
  if ((k = strdup(key)) == NULL ||
      (kv = realloc(st->params, (st->n_params + 1) * sizeof *kv)) == NULL) {
    free(k);
    free(v);
    return MPX_ENOMEM;
  }
  st->params = kv;
  kv += st->n_params++;
  kv->key = k;
  kv->value = v;
  kv->line = at.line;
  kv->col = at.col;
  kv->key_line = key_at.line;
  kv->key_col = key_at.col;
  return 0;
}

static int do_params(check_t *x, mpx__cfg_stage_t *st, const node_t *m) {
  qbuf_t qa, qb;
  size_t i;
  if (m->type != N_MAP) return 0;
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = mpx__cfg_node_val(v);
    if (!param_name_ok(key->s))
      return mpx__cfg_perr(x->file, key->line, key->col,
                  "parameter name '%s' must be %s", mpx__cfg_q(&qa, key->s),
                  param_name_desc);
    if (v->type == N_SCALAR && v->null)
      return mpx__cfg_perr(x->file, v->line, v->col,
                  "parameter '%s' has no value (write '' for an empty text)",
                  key->s);
    if (v->type != N_SCALAR)
      return mpx__cfg_perr(x->file, v->line, v->col,
                  "parameter '%s' must be a single value (text, number or "
                  "true/false), got %s", key->s, mpx__cfg_got(&qb, &vv));
    if (put_param(st, key->s, v->s, pos_of(key), pos_of(v)) != 0)
      return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  }
  return 0;
}

/* ---- the graph keys of a stage: inputs, partition_by, partitions ---- */

static const char input_desc[] =
    "STAGE or STAGE.PORT (names of letters, digits, '_' or '-')";
static const char inputs_empty[] =
    "'inputs' is empty: expected at least one input (STAGE or STAGE.PORT)";
static const char partitions_alone[] =
    "'partitions' is only for a stage with 'partition_by: key'";

/* Replaces st's inputs with the n names (copied) at their positions. 0 or
 * MPX_ENOMEM (st unchanged). */
static int put_inputs(mpx__cfg_stage_t *st, const char *const *names,
                      const mpx__cfg_pos_t *at, size_t n, mpx__cfg_pos_t key_at) {
  char **v = calloc(n ? n : 1, sizeof *v);
  mpx__cfg_pos_t *p = malloc((n ? n : 1) * sizeof *p);
  size_t i;
  for (i = 0; v != NULL && p != NULL && i < n; i++)
    if ((v[i] = strdup(names[i])) == NULL) break;
  if (v == NULL || p == NULL || i < n) {
    while (v != NULL && i-- > 0) free(v[i]);
    free(v);
    free(p);
    return MPX_ENOMEM;
  }
  if (n) memcpy(p, at, n * sizeof *p);
  for (i = 0; i < st->n_inputs; i++) free(st->inputs[i]);
  free(st->inputs);
  free(st->inputs_at);
  st->inputs = v;
  st->inputs_at = p;
  st->n_inputs = n;
  st->inputs_given = true;
  st->inputs_key_at = key_at;
  return 0;
}

/* `inputs:` a list of STAGE or STAGE.PORT, or one of them. */
static int do_inputs(check_t *x, mpx__cfg_stage_t *st, const node_t *key,
                     const node_t *v) {
  const node_t *one[1] = {v};
  const node_t *const *items = v->type == N_SEQ ? (const node_t *const *)v->kids : one;
  size_t n = v->type == N_SEQ ? v->n : 1, i;
  const char **names = NULL;
  mpx__cfg_pos_t *at = NULL;
  qbuf_t qb;
  int rc = 0;
  if (v->type == N_SEQ && n == 0) return verr(x, v, inputs_empty);
  if (v->type == N_MAP || (v->type == N_SCALAR && v->null)) {
    val_t vv = mpx__cfg_node_val(v);
    return mpx__cfg_perr(x->file, v->line, v->col, "'inputs' must be a list of %s, got %s",
                         input_desc, mpx__cfg_got(&qb, &vv));
  }
  for (i = 0; i < n; i++) {
    val_t iv = mpx__cfg_node_val(items[i]);
    if (mpx__cfg_scalar(&iv) == NULL || !mpx__cfg_input_ok(iv.s))
      return mpx__cfg_perr(x->file, items[i]->line, items[i]->col,
                           "an input must be %s, got %s", input_desc,
                           mpx__cfg_got(&qb, &iv));
  }
  names = calloc(n, sizeof *names);
  at = calloc(n, sizeof *at);
  if (names != NULL && at != NULL) {
    for (i = 0; i < n; i++) {
      names[i] = items[i]->s;
      at[i] = pos_of(items[i]);
    }
    rc = put_inputs(st, names, at, n, pos_of(key));
  }
  free(names);
  free(at);
  if (names == NULL || at == NULL || rc != 0)
    return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  return 0;
}

/* inputs, partition_by or partitions. */
static int do_graph_key(check_t *x, mpx__cfg_stage_t *st, const node_t *key,
                        const node_t *v) {
  char why[320];
  parsed_t p;
  val_t vv = mpx__cfg_node_val(v);
  if (strcmp(key->s, "inputs") == 0) return do_inputs(x, st, key, v);
  if (strcmp(key->s, "partition_by") == 0) {
    if (mpx__cfg_check_partition_by(&vv, why, sizeof why) != 0) return verr(x, v, why);
    st->partitioned = true;
    st->partition_at = pos_of(v);
    return 0;
  }
  if (mpx__cfg_check_partitions(&vv, &p, why, sizeof why) != 0) return verr(x, v, why);
  st->partitions = (unsigned)p.u;
  st->partitions_at = pos_of(v);
  return 0;
}

static bool graph_key(const char *key) {
  return strcmp(key, "inputs") == 0 || strcmp(key, "partition_by") == 0 ||
         strcmp(key, "partitions") == 0;
}

static const char plugin_desc[] =
    "a plugin name (up to 64 letters, digits, '_' or '-') or a path "
    "containing '/'";
static const char stage_name_desc[] =
    "up to 64 letters, digits, '_' or '-', not only digits, not 'pipeline'";

/* One stage mapping. label: how messages name it. named: whether it has
 * its own name (at name_at). */
static int do_stage(check_t *x, mpx__cfg_stage_t *st, size_t idx,
                    const node_t *m, bool *named, mpx__cfg_pos_t *name_at) {
  char label[128], base[MPX__CFG_MAX_NAME + 1];
  qbuf_t qb;
  size_t i;
  int rc, k;
  val_t mv = mpx__cfg_node_val(m);
  st->line = m->line;
  st->col = m->col;
  if (m->type != N_MAP)
    return mpx__cfg_perr(x->file, m->line, m->col,
                "stages[%zu] must be a mapping with a 'plugin' key, got %s",
                idx, mpx__cfg_got(&qb, &mv));
  /* A label for messages: its name, else its plugin's. */
  snprintf(label, sizeof label, "stages[%zu]", idx);
  for (i = 0; i < m->n; i += 2) {
    const node_t *v = m->kids[i + 1];
    if (v->type != N_SCALAR || v->null) continue;
    if (strcmp(m->kids[i]->s, "name") == 0 && mpx__cfg_stage_name_ok(v->s)) {
      snprintf(label, sizeof label, "stage '%s'", v->s);
      break;
    }
    if (strcmp(m->kids[i]->s, "plugin") == 0 && mpx__cfg_derive_name(v->s, base) == 0)
      snprintf(label, sizeof label, "stage '%s'", base);
  }
  for (i = 0; i < m->n; i += 2) {
    const node_t *key = m->kids[i], *v = m->kids[i + 1];
    val_t vv = mpx__cfg_node_val(v);
    k = key_index(stage_keys, key->s);
    if (k < 0) {
      char where[160];
      snprintf(where, sizeof where, "in %s", label);
      return unknown_key(x, key, where, stage_keys);
    }
    if (strcmp(key->s, "name") == 0) {
      if (mpx__cfg_scalar(&vv) == NULL || !mpx__cfg_stage_name_ok(v->s))
        return mpx__cfg_perr(x->file, v->line, v->col, "'name' must be %s, got %s",
                    stage_name_desc, mpx__cfg_got(&qb, &vv));
      if ((st->name = strdup(v->s)) == NULL) goto nomem;
      *named = true;
      *name_at = pos_of(v);
    } else if (strcmp(key->s, "plugin") == 0) {
      if (mpx__cfg_scalar(&vv) == NULL || !mpx__cfg_ref_ok(v->s))
        return mpx__cfg_perr(x->file, v->line, v->col, "'plugin' must be %s, got %s",
                    plugin_desc, mpx__cfg_got(&qb, &vv));
      if ((st->plugin = strdup(v->s)) == NULL) goto nomem;
      st->plugin_line = v->line;
      st->plugin_col = v->col;
    } else if (strcmp(key->s, "params") == 0) {
      if ((rc = want_map(x, v, "params", "parameter names to values")) != 0 ||
          (rc = do_params(x, st, v)) != 0)
        return rc;
    } else if (graph_key(key->s)) {
      if ((rc = do_graph_key(x, st, key, v)) != 0) return rc;
    } else {
      if ((rc = do_opts_entry(x, &st->opts, mpx__cfg_opt_index(key->s), v)) != 0)
        return rc;
    }
  }
  if (st->plugin == NULL)
    return mpx__cfg_perr(x->file, m->line, m->col,
                "missing key 'plugin' in %s (expected the plugin to run: a "
                "name or a path)", label);
  if (st->partitions_at.line > 0 && !st->partitioned)
    return mpx__cfg_perr(x->file, st->partitions_at.line, st->partitions_at.col, "%s",
                         partitions_alone);
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
}

/* Names the stages that have none and checks that names are unique. */
static int name_stages(check_t *x, const bool *named,
                       const mpx__cfg_pos_t *name_at) {
  mpx__cfg_t *c = x->c;
  char base[MPX__CFG_MAX_NAME + 1], other[MPX__CFG_MAX_NAME + 1];
  qbuf_t qb;
  size_t i, j;
  for (i = 0; i < c->n_stages; i++) {
    mpx__cfg_stage_t *st = &c->stages[i];
    size_t same = 0, nth = 0;
    if (named[i]) continue;
    if (mpx__cfg_derive_name(st->plugin, base) != 0)
      return mpx__cfg_perr(x->file, st->plugin_line, st->plugin_col,
                  "cannot make a stage name from plugin '%s': give the stage "
                  "a 'name'", mpx__cfg_q(&qb, st->plugin));
    for (j = 0; j < c->n_stages; j++) {
      if (named[j] || mpx__cfg_derive_name(c->stages[j].plugin, other) != 0 ||
          strcmp(base, other) != 0)
        continue;
      same++;
      if (j < i) nth++;
    }
    if (same > 1) {
      char buf[MPX__CFG_MAX_NAME + 32];
      snprintf(buf, sizeof buf, "%s-%zu", base, nth + 1);
      st->name = strdup(buf);
    } else {
      st->name = strdup(base);
    }
    if (st->name == NULL)
      return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
  }
  for (i = 1; i < c->n_stages; i++) {
    for (j = 0; j < i; j++) {
      if (strcmp(c->stages[i].name, c->stages[j].name) != 0) continue;
      return mpx__cfg_perr(x->file, name_at[i].line, name_at[i].col,
                  "two stages are named '%s' (the other at %u:%u): give one "
                  "a different 'name'", c->stages[i].name, name_at[j].line,
                  name_at[j].col);
    }
  }
  return 0;
}

static int do_stages(check_t *x, const node_t *s) {
  mpx__cfg_t *c = x->c;
  bool *named = NULL;
  mpx__cfg_pos_t *name_at = NULL;
  qbuf_t qb;
  val_t sv = mpx__cfg_node_val(s);
  size_t i;
  int rc = 0;
  if (s->type != N_SEQ)
    return mpx__cfg_perr(x->file, s->line, s->col,
                "'stages' must be a list of stages, got %s", mpx__cfg_got(&qb, &sv));
  if (s->n == 0)
    return mpx__cfg_perr(x->file, s->line, s->col,
                "'stages' is empty: expected at least one stage");
  c->stages = calloc(s->n, sizeof *c->stages);
  named = calloc(s->n, sizeof *named);
  name_at = calloc(s->n, sizeof *name_at);
  if (c->stages == NULL || named == NULL || name_at == NULL) {
    rc = mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
    goto out;
  }
  c->n_stages = s->n;
  for (i = 0; i < s->n && rc == 0; i++) {
    const node_t *m = s->kids[i];
    name_at[i].line = m->line;
    name_at[i].col = m->col;
    rc = do_stage(x, &c->stages[i], i, m, &named[i], &name_at[i]);
  }
  if (rc == 0) rc = name_stages(x, named, name_at);
out:
  free(named);
  free(name_at);
  return rc;
}

static int check_top(check_t *x, const node_t *root) {
  mpx__cfg_t *c = x->c;
  const node_t *stages = NULL;
  qbuf_t qb;
  size_t i;
  int rc, k;
  if (root == NULL || (root->type == N_SCALAR && root->null))
    return mpx__cfg_perr(x->file, 1, 1,
                "empty pipeline: expected a mapping with a 'stages' list");
  if (root->type != N_MAP) {
    val_t rv = mpx__cfg_node_val(root);
    return mpx__cfg_perr(x->file, root->line, root->col,
                "expected a mapping with a 'stages' list at the top level, "
                "got %s", mpx__cfg_got(&qb, &rv));
  }
  for (i = 0; i < root->n; i += 2) {
    const node_t *key = root->kids[i], *v = root->kids[i + 1];
    val_t vv = mpx__cfg_node_val(v);
    char why[320];
    parsed_t p;
    if ((k = key_index(top_keys, key->s)) < 0)
      return unknown_key(x, key, "at the top level", top_keys);
    switch (k) {
    case 0: /* name */
      if (mpx__cfg_scalar(&vv) == NULL || !mpx__cfg_text_ok(v->s, CFG_MAX_PIPELINE_NAME))
        return mpx__cfg_perr(x->file, v->line, v->col,
                    "'name' must be a text of 1 to 128 bytes without control "
                    "characters, got %s", mpx__cfg_got(&qb, &vv));
      free(c->name);
      if ((c->name = strdup(v->s)) == NULL) goto nomem;
      break;
    case 1: /* defaults */
      if ((rc = want_map(x, v, "defaults", "stage options")) != 0 ||
          (rc = do_defaults(x, v)) != 0)
        return rc;
      break;
    case 2: /* stages: after the defaults, wherever they are */
      stages = v;
      break;
    case 3: /* queue_capacity */
      if (mpx__cfg_check_uint("queue_capacity", &vv, false, 1, MPX__CFG_MAX_QUEUE,
                     "a positive integer", &p, why, sizeof why) != 0)
        return verr(x, v, why);
      c->queue_capacity = (size_t)p.u;
      break;
    case 4: /* supervisor */
      if ((rc = want_map(x, v, "supervisor", "restart settings")) != 0 ||
          (rc = do_supervisor(x, v)) != 0)
        return rc;
      break;
    case 5: /* dead_letter */
      if (mpx__cfg_scalar(&vv) == NULL || !mpx__cfg_text_ok(v->s, CFG_MAX_PATH))
        return mpx__cfg_perr(x->file, v->line, v->col,
                    "'dead_letter' must be a file path, got %s",
                    mpx__cfg_got(&qb, &vv));
      if (strcmp(v->s, "-") == 0)
        return mpx__cfg_perr(x->file, v->line, v->col, "%s", DEAD_DASH);
      if ((c->dead_letter = strdup(v->s)) == NULL) goto nomem;
      c->dead_letter_at = pos_of(v);
      break;
    }
  }
  if (stages == NULL)
    return mpx__cfg_perr(x->file, root->line, root->col,
                "missing key 'stages' at the top level (expected a list of "
                "stages)");
  if ((rc = do_stages(x, stages)) != 0) return rc;
  if (mpx__cfg_resolve(c) != 0) goto nomem;
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "%s: out of memory", x->file);
}

int mpx__cfg_check_tree(mpx__cfg_t *c, const char *file, const node_t *root) {
  check_t x;
  int rc;
  memset(&x, 0, sizeof x);
  x.c = c;
  x.file = file;
  if ((rc = check_top(&x, root)) == 0) c->sup_given = x.sup_given;
  return rc;
}

/* ---- --set ---------------------------------------------------------------- */

/* --set STAGE.inputs=a,b.port: the list, comma-separated (spaces around
 * an entry do not count; an empty entry is an error). */
static int set_inputs(mpx__cfg_t *c, unsigned idx, mpx__cfg_stage_t *st,
                      const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  size_t cap = strlen(value) + 1, n = 0;
  char *copy = strdup(value), *tok, *next;
  const char **names = calloc(cap, sizeof *names);
  mpx__cfg_pos_t *pos = calloc(cap, sizeof *pos);
  qbuf_t qb;
  int rc = 0;
  if (copy == NULL || names == NULL || pos == NULL) goto nomem;
  if (*value == '\0') {
    rc = mpx__cfg_error_at(c, 0, idx, "%s", inputs_empty);
    goto out;
  }
  for (tok = copy; tok != NULL; tok = next) {
    char *end;
    if ((next = strchr(tok, ',')) != NULL) *next++ = '\0';
    end = tok + strlen(tok);
    while (*tok == ' ') tok++;
    while (end > tok && end[-1] == ' ') *--end = '\0';
    val_t v = mpx__cfg_text_val(tok);
    if (!mpx__cfg_input_ok(tok)) {
      rc = mpx__cfg_error_at(c, 0, idx, "an input must be %s, got %s", input_desc,
                             mpx__cfg_got(&qb, &v));
      goto out;
    }
    pos[n] = at;
    names[n++] = tok;
  }
  if (put_inputs(st, names, pos, n, at) != 0) goto nomem;
  goto out;
nomem:
  rc = mpx__err(MPX_ENOMEM, "--set: out of memory");
out:
  free(copy);
  free(names);
  free(pos);
  return rc;
}

static int set_graph_key(mpx__cfg_t *c, unsigned idx, mpx__cfg_stage_t *st,
                         const char *key, const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  val_t v = mpx__cfg_text_val(value);
  char why[320];
  parsed_t p;
  if (strcmp(key, "inputs") == 0) return set_inputs(c, idx, st, value);
  if (strcmp(key, "partition_by") == 0) {
    if (mpx__cfg_check_partition_by(&v, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    st->partitioned = true;
    st->partition_at = at;
    return 0;
  }
  if (mpx__cfg_check_partitions(&v, &p, why, sizeof why) != 0)
    return mpx__cfg_error_at(c, 0, idx, "%s", why);
  if (!st->partitioned)
    return mpx__cfg_error_at(c, 0, idx, "%s (set STAGE.partition_by=key first)",
                             partitions_alone);
  st->partitions = (unsigned)p.u;
  st->partitions_at = at;
  return 0;
}

static int set_stage(mpx__cfg_t *c, unsigned idx, mpx__cfg_stage_t *st,
                     const char *key, const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  val_t v = mpx__cfg_text_val(value);
  char why[320];
  parsed_t p;
  qbuf_t qb;
  int k;
  if (strcmp(key, "name") == 0)
    return mpx__cfg_error_at(c, 0, idx, "a stage's name cannot be changed "
                             "with --set");
  if (strcmp(key, "plugin") == 0) {
    char *s;
    if (!mpx__cfg_ref_ok(value))
      return mpx__cfg_error_at(c, 0, idx, "'plugin' must be %s, got %s",
                               plugin_desc, mpx__cfg_got(&qb, &v));
    if ((s = strdup(value)) == NULL) goto nomem;
    free(st->plugin);
    st->plugin = s;
    st->plugin_line = 0;
    st->plugin_col = idx;
    return 0;
  }
  if (graph_key(key)) return set_graph_key(c, idx, st, key, value);
  if ((k = mpx__cfg_opt_index(key)) >= 0) {
    if (mpx__cfg_check_opt((mpx__cfg_opt_t)k, &v, &p, why, sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    if (mpx__cfg_store_opt(&st->opts, (mpx__cfg_opt_t)k, &p, at) != 0) goto nomem;
    return 0;
  }
  if (strcmp(key, "params") == 0)
    return mpx__cfg_error_at(c, 0, idx, "expected params.NAME=VALUE");
  if (strncmp(key, "params.", 7) == 0) key += 7;
  if (!param_name_ok(key))
    return mpx__cfg_error_at(c, 0, idx,
                             "unknown key '%s' for stage '%s' (expected a "
                             "stage option, plugin, inputs, partition_by, "
                             "partitions, params.NAME or a parameter name: %s)", mpx__cfg_q(&qb, key), st->name,
                             param_name_desc);
  if (put_param(st, key, value, at, at) != 0) goto nomem;
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "--set: out of memory");
}

/* --set pipeline.defaults.KEY=VALUE; the options resolved again. */
static int set_default(mpx__cfg_t *c, unsigned idx, const char *key,
                       const val_t *v) {
  mpx__cfg_pos_t at = {0, idx};
  mpx__cfg_opts_t saved = c->defaults;
  char why[320], list[256];
  parsed_t p;
  qbuf_t qb;
  int k;
  if ((k = mpx__cfg_opt_index(key)) < 0) {
    key_list(list, sizeof list, mpx__cfg_opt_names);
    return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' in defaults "
                             "(expected one of: %s)", mpx__cfg_q(&qb, key), list);
  }
  if (mpx__cfg_check_opt((mpx__cfg_opt_t)k, v, &p, why, sizeof why) != 0)
    return mpx__cfg_error_at(c, 0, idx, "%s", why);
  /* store_opt frees the old codec only after copying the new one; keep
   * the old text for an undo should resolve fail. */
  if (k == MPX__CFG_CODEC) {
    if ((saved.codec = strdup(c->defaults.codec)) == NULL) goto nomem;
  }
  if (mpx__cfg_store_opt(&c->defaults, (mpx__cfg_opt_t)k, &p, at) != 0) {
    if (k == MPX__CFG_CODEC) free(saved.codec);
    goto nomem;
  }
  if (mpx__cfg_resolve(c) != 0) {
    if (k == MPX__CFG_CODEC) {
      free(c->defaults.codec);
    }
    c->defaults = saved;
    goto nomem;
  }
  if (k == MPX__CFG_CODEC) free(saved.codec);
  return 0;
nomem:
  return mpx__err(MPX_ENOMEM, "--set: out of memory");
}

/* --set pipeline.supervisor.KEY=VALUE. */
static int set_supervisor(mpx__cfg_t *c, unsigned idx, const char *key,
                          const val_t *v) {
  char why[320], list[256];
  parsed_t p;
  qbuf_t qb;
  int k;
  if ((k = key_index(mpx__cfg_sup_names, key)) < 0) {
    key_list(list, sizeof list, mpx__cfg_sup_names);
    return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' in supervisor "
                             "(expected one of: %s)", mpx__cfg_q(&qb, key),
                             list);
  }
  if (mpx__cfg_check_sup(k, v, &p, why, sizeof why) != 0 ||
      mpx__cfg_apply_sup(c, &c->sup_given, k, &p, why, sizeof why) != 0)
    return mpx__cfg_error_at(c, 0, idx, "%s", why);
  return 0;
}

static int set_pipeline(mpx__cfg_t *c, unsigned idx, const char *key,
                        const char *value) {
  mpx__cfg_pos_t at = {0, idx};
  val_t v = mpx__cfg_text_val(value);
  char why[320];
  parsed_t p;
  qbuf_t qb;
  if (strcmp(key, "name") == 0) {
    char *s;
    if (!mpx__cfg_text_ok(value, CFG_MAX_PIPELINE_NAME))
      return mpx__cfg_error_at(c, 0, idx, "'name' must be a text of 1 to 128 "
                               "bytes without control characters, got %s",
                               mpx__cfg_got(&qb, &v));
    if ((s = strdup(value)) == NULL) goto nomem;
    free(c->name);
    c->name = s;
    return 0;
  }
  if (strcmp(key, "queue_capacity") == 0) {
    if (mpx__cfg_check_uint("queue_capacity", &v, false, 1,
                            MPX__CFG_MAX_QUEUE, "a positive integer", &p, why,
                            sizeof why) != 0)
      return mpx__cfg_error_at(c, 0, idx, "%s", why);
    c->queue_capacity = (size_t)p.u;
    return 0;
  }
  if (strcmp(key, "dead_letter") == 0) {
    char *s;
    if (!mpx__cfg_text_ok(value, CFG_MAX_PATH))
      return mpx__cfg_error_at(c, 0, idx, "'dead_letter' must be a file path, "
                               "got %s", mpx__cfg_got(&qb, &v));
    if (strcmp(value, "-") == 0) return mpx__cfg_error_at(c, 0, idx, "%s", DEAD_DASH);
    if ((s = strdup(value)) == NULL) goto nomem;
    free(c->dead_letter);
    c->dead_letter = s;
    c->dead_letter_at = at;
    return 0;
  }
  if (strcmp(key, "stages") == 0 || strncmp(key, "stages.", 7) == 0)
    return mpx__cfg_error_at(c, 0, idx, "the stage list cannot be changed "
                             "with --set (set STAGE.KEY=VALUE)");
  if (strncmp(key, "defaults.", 9) == 0)
    return set_default(c, idx, key + 9, &v);
  if (strncmp(key, "supervisor.", 11) == 0)
    return set_supervisor(c, idx, key + 11, &v);
  return mpx__cfg_error_at(c, 0, idx, "unknown key '%s' (expected "
                           "pipeline.name, pipeline.queue_capacity, "
                           "pipeline.dead_letter, pipeline.defaults.OPTION or "
                           "pipeline.supervisor.KEY)", mpx__cfg_q(&qb, key));
nomem:
  return mpx__err(MPX_ENOMEM, "--set: out of memory");
}

static int find_stage(mpx__cfg_t *c, unsigned idx, const char *name,
                      mpx__cfg_stage_t **out) {
  unsigned long long i;
  char list[200];
  qbuf_t qb;
  size_t n;
  for (i = 0; i < c->n_stages; i++) {
    if (strcmp(c->stages[i].name, name) == 0) {
      *out = &c->stages[i];
      return 0;
    }
  }
  if (mpx__cfg_all_digits(name) && *name != '\0') {
    if (mpx__cfg_parse_uint(name, SIZE_MAX, &i) == 0 && i < c->n_stages) {
      *out = &c->stages[i];
      return 0;
    }
    return mpx__cfg_error_at(c, 0, idx, "no stage %s (stages are numbered "
                             "from 0 to %zu)", mpx__cfg_q(&qb, name), c->n_stages - 1);
  }
  list[0] = '\0';
  for (i = 0; i < c->n_stages; i++) {
    n = strlen(list);
    if (n + strlen(c->stages[i].name) + 8 >= sizeof list) {
      strncat(list, ", ...", sizeof list - n - 1);
      break;
    }
    snprintf(list + n, sizeof list - n, "%s%s", i ? ", " : "",
             c->stages[i].name);
  }
  return mpx__cfg_error_at(c, 0, idx, "no stage named '%s' (the stages: %s)",
                           mpx__cfg_q(&qb, name), list);
}

static int set_apply(mpx__cfg_t *c, unsigned idx, const char *a) {
  const char *eq = strchr(a, '='), *dot;
  mpx__cfg_stage_t *st;
  char *path;
  int rc;
  if (eq == NULL || eq == a || (dot = memchr(a, '.', (size_t)(eq - a))) ==
                                   NULL ||
      dot == a || dot + 1 == eq)
    return mpx__cfg_error_at(c, 0, idx, "expected STAGE.KEY=VALUE or "
                             "pipeline.KEY=VALUE");
  if ((path = strndup(a, (size_t)(eq - a))) == NULL)
    return mpx__err(MPX_ENOMEM, "--set: out of memory");
  path[dot - a] = '\0';
  if (strcmp(path, "pipeline") == 0) {
    rc = set_pipeline(c, idx, path + (dot - a) + 1, eq + 1);
  } else if ((rc = find_stage(c, idx, path, &st)) == 0) {
    rc = set_stage(c, idx, st, path + (dot - a) + 1, eq + 1);
  }
  free(path);
  return rc;
}

int mpx__cfg_set(mpx__cfg_t *c, const char *assignment) {
  char **sets, *a;
  int rc;
  if (c->n_sets >= MPX__CFG_MAX_SETS)
    return mpx__err(MPX_ECONFIG, "--set: more than %u overrides",
                    MPX__CFG_MAX_SETS);
  if ((a = strdup(assignment)) == NULL ||
      (sets = realloc(c->sets, (c->n_sets + 1) * sizeof *sets)) == NULL) {
    free(a);
    return mpx__err(MPX_ENOMEM, "--set: out of memory");
  }
  c->sets = sets;
  c->sets[c->n_sets++] = a;
  rc = set_apply(c, (unsigned)c->n_sets, a);
  if (rc != 0) free(c->sets[--c->n_sets]);
  return rc;
}
