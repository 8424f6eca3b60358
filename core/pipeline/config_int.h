/* What the pieces of the pipeline config share: config.c (messages, the
 * public entry points), config_yaml.c (YAML to tree), config_value.c
 * (scalar syntaxes, option values) and config_check.c (the tree checker,
 * --set). Private to core/pipeline. */
#ifndef MPX_CORE_CONFIG_INT_H
#define MPX_CORE_CONFIG_INT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "config.h"
#include "internal.h"

#define CFG_MAX_PATH 4096
#define CFG_MAX_PIPELINE_NAME 128
#define CFG_QUOTE_MAX 40 /* bytes of user text quoted in a message */

typedef struct {
  char b[CFG_QUOTE_MAX * 4 + 16];
} qbuf_t;

typedef enum { N_SCALAR, N_SEQ, N_MAP } ntype_t;

typedef struct node_s node_t;
struct node_s {
  ntype_t type;
  unsigned line, col;
  char *s;        /* scalar: its text (no NUL inside) */
  bool null;      /* scalar: plain "", "~", "null", "Null", "NULL" */
  node_t **kids;  /* list: items; mapping: key, value, key, value... */
  size_t n, cap;
};

/* A value to check: a node's, or the text of a --set. */
typedef struct {
  ntype_t type;
  const char *s; /* scalar text */
  bool null;
} val_t;

typedef union {
  unsigned long long u;
  double d;
  bool b;
  const char *s;
  int e;
} parsed_t;

/* `-` is standard output for a sink's path and --stats-json, but dead
 * letters there would mix with the sink's items. */
#define DEAD_DASH                                                              \
  "'dead_letter' cannot be '-': standard output carries the sink's items; "  \
  "give a file path (/dev/stderr for standard error)"

/* Supervisor keys. */
enum { SUP_RESTART, SUP_MAX_RESTARTS, SUP_PERIOD, SUP_BACKOFF_MIN,
       SUP_BACKOFF_MAX, SUP_N };

/* ---- messages (config.c) ---- */

const char *mpx__cfg_esc(char *dst, size_t cap, const char *s, size_t max);
const char *mpx__cfg_q(qbuf_t *qb, const char *s);
int mpx__cfg_perr(const char *file, unsigned line, unsigned col,
                  const char *fmt, ...) MPX_PRINTF(4, 5);

/* ---- the tree (config_yaml.c) ---- */

const char *mpx__cfg_kind_name(ntype_t t);
void mpx__cfg_node_free(node_t *n);

/* The tree of file's bytes; *root (to be freed, also on error) is what was
 * built. 0 or MPX_ECONFIG/MPX_ENOMEM with the message set. */
int mpx__cfg_tree(const char *file, const void *data, size_t len,
                  node_t **root);

/* ---- values (config_value.c) ---- */

bool mpx__cfg_all_digits(const char *s);
bool mpx__cfg_name_ok(const char *s);
bool mpx__cfg_ref_ok(const char *s);
bool mpx__cfg_input_ok(const char *s);
bool mpx__cfg_stage_name_ok(const char *s);
bool mpx__cfg_text_ok(const char *s, size_t max);
const char *mpx__cfg_got(qbuf_t *qb, const val_t *v);
const char *mpx__cfg_scalar(const val_t *v);
int mpx__cfg_apply_sup(mpx__cfg_t *c, unsigned *given, int k, const parsed_t *p,
                       char *why, size_t cap);
int mpx__cfg_check_opt(mpx__cfg_opt_t k, const val_t *v, parsed_t *out,
                       char *why, size_t cap);
int mpx__cfg_check_partition_by(const val_t *v, char *why, size_t cap);
int mpx__cfg_check_partitions(const val_t *v, parsed_t *out, char *why, size_t cap);
int mpx__cfg_check_sup(int k, const val_t *v, parsed_t *out, char *why,
                       size_t cap);
int mpx__cfg_check_uint(const char *key, const val_t *v, bool allow_auto,
                        unsigned long long min, unsigned long long max,
                        const char *desc, parsed_t *out, char *why,
                        size_t cap);
int mpx__cfg_derive_name(const char *plugin, char out[MPX__CFG_MAX_NAME + 1]);
int mpx__cfg_opt_index(const char *key);
int mpx__cfg_parse_uint(const char *s, unsigned long long max,
                        unsigned long long *out);
int mpx__cfg_resolve(mpx__cfg_t *c);
int mpx__cfg_store_opt(mpx__cfg_opts_t *o, mpx__cfg_opt_t k, const parsed_t *p,
                       mpx__cfg_pos_t at);
val_t mpx__cfg_node_val(const node_t *n);
val_t mpx__cfg_text_val(const char *s);

extern const char *const mpx__cfg_opt_names[MPX__CFG_NOPTS + 1];
extern const char *const mpx__cfg_sup_names[SUP_N + 1];

/* ---- the checker (config_check.c) ---- */

/* Checks root into c (made by config.c with the defaults). */
int mpx__cfg_check_tree(mpx__cfg_t *c, const char *file, const node_t *root);

#endif
