/* The pipeline config: a YAML file (libyaml) parsed into plain structs,
 * checked for structure and types, with `--set` overrides. Plugins are not
 * loaded here: the engine loads them and validates each stage's params
 * against the plugin's mpx_param_def_t table, reporting a bad one at the
 * position recorded here (mpx__cfg_error_at). docs/config.md is the user's
 * reference for every key; keep the two in step.
 *
 * Positions are 1-based (line, column in characters). A value that came
 * from `--set` has line 0 and col = the override's number (1 for the
 * first mpx__cfg_set call); a built-in default has line 0, col 0.
 * mpx__cfg_error_at() turns any of these into the right message prefix.
 *
 * Internal to libmpx (hidden symbols): tests link mpx_static. */
#ifndef MPX_CORE_CONFIG_H
#define MPX_CORE_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#include "mpx/common.h"
#include "mpx/pool.h"      /* mpx_restart_t */
#include "mpx/transport.h" /* mpx_transport_t */

/* Limits. A file beyond them is refused with a message naming the limit. */
#define MPX__CFG_MAX_BYTES (1u << 20) /* document size */
#define MPX__CFG_MAX_DEPTH 16         /* nested lists and mappings */
#define MPX__CFG_MAX_NODES 65536      /* values in the document */
#define MPX__CFG_MAX_ENTRIES 1024     /* items of one list, keys of one mapping */
#define MPX__CFG_MAX_SETS 1024        /* --set overrides */
#define MPX__CFG_MAX_WORKERS 4096
#define MPX__CFG_MAX_RETRIES 1000
#define MPX__CFG_MAX_BATCH 1000000
#define MPX__CFG_MAX_QUEUE (1u << 24) /* queue_capacity, items */
#define MPX__CFG_MAX_RESTARTS 1000000
#define MPX__CFG_MAX_SECONDS 1e9      /* timeout, period, backoff */
#define MPX__CFG_MAX_NAME 64          /* stage, plugin and codec names */

/* Built-in defaults. */
#define MPX__CFG_DEFAULT_CODEC "msgpack"
#define MPX__CFG_DEFAULT_RETRIES 2
#define MPX__CFG_DEFAULT_QUEUE 1024
#define MPX__CFG_DEFAULT_PERIOD 5.0
#define MPX__CFG_DEFAULT_BACKOFF_MIN 0.01
#define MPX__CFG_DEFAULT_BACKOFF_MAX 1.0

typedef struct {
  unsigned line, col;
} mpx__cfg_pos_t;

/* The stage options, which `defaults:` may also give for every stage. */
typedef enum {
  MPX__CFG_WORKERS = 0,
  MPX__CFG_CODEC,
  MPX__CFG_TRANSPORT,
  MPX__CFG_RETRIES,
  MPX__CFG_TIMEOUT,
  MPX__CFG_ORDERED,
  MPX__CFG_BATCH,
  MPX__CFG_NOPTS
} mpx__cfg_opt_t;

typedef struct {
  unsigned workers;          /* 0: auto (usable cores) */
  char *codec;               /* codec name or path (has a '/'); never NULL */
  mpx_transport_t transport;
  int retries;               /* 0..MAX: further tries of a failed item */
  double timeout;            /* seconds per item; 0: none */
  bool ordered;              /* outputs in input order */
  size_t batch;              /* items per message; 0: auto */
  unsigned set;              /* bit (1u << opt): given in the file or by --set
                                (in a stage: else inherited from defaults) */
  mpx__cfg_pos_t at[MPX__CFG_NOPTS]; /* where each value came from */
} mpx__cfg_opts_t;

/* A parameter: YAML scalar text, as written (quotes removed). */
typedef struct {
  char *key, *value;
  unsigned line, col;        /* of the value */
  unsigned key_line, key_col;
} mpx__cfg_kv_t;

typedef struct {
  char *name;                /* unique; given, or derived from the plugin:
                                "<base>", "<base>-<n>" when repeated */
  char *plugin;              /* a name, or a path (contains '/') */
  unsigned plugin_line, plugin_col;
  mpx__cfg_kv_t *params;     /* unique keys, in file order, then --set's */
  size_t n_params;
  mpx__cfg_opts_t opts;      /* resolved: the stage's own or the defaults' */
  unsigned line, col;        /* of the stage's mapping */
  /* The graph (graph.h): `inputs: [STAGE, STAGE.PORT, ...]`, as written.
   * n_inputs 0 and inputs_given false: it reads the stage before it. */
  char **inputs;
  mpx__cfg_pos_t *inputs_at; /* each entry's position */
  size_t n_inputs;
  bool inputs_given;
  mpx__cfg_pos_t inputs_key_at;
  /* `partition_by: key` (the only value today) and `partitions: N`
   * (1..MPX__CFG_MAX_WORKERS; 0: the stage's workers). */
  bool partitioned;
  unsigned partitions;
  mpx__cfg_pos_t partition_at, partitions_at;
} mpx__cfg_stage_t;

typedef struct {
  char *file;                /* as given: the prefix of messages */
  char *name;                /* given, or the file name without directory and
                                extension */
  mpx__cfg_opts_t defaults;  /* built-in values where not given */
  size_t queue_capacity;     /* items waiting between two stages */
  struct {
    mpx_restart_t restart;
    int max_restarts;        /* in `period`; -1: the pools' default (10 + 2
                                per worker) */
    double period;           /* seconds, > 0 */
    double backoff_min, backoff_max; /* seconds, min <= max */
  } supervisor;
  char *dead_letter;         /* path, or NULL: none */
  mpx__cfg_pos_t dead_letter_at;
  mpx__cfg_stage_t *stages;  /* at least one */
  size_t n_stages;
  /* private */
  char **sets;               /* the --set assignments, for messages */
  size_t n_sets;
  unsigned sup_given;        /* supervisor keys given (bits) */
} mpx__cfg_t;

/* Parses and validates a pipeline file (its structure and the types of
 * every option; not the plugins, codecs or params' types). On success
 * *out is the caller's (mpx__cfg_free). Errors leave *out NULL and
 * mpx_last_error() "FILE:LINE:COL: what is wrong, what was expected":
 * MPX_ECONFIG for the content, -errno when the file cannot be read
 * ("FILE: cannot open (no such file or directory)"), MPX_ENOMEM. */
int mpx__cfg_parse_file(mpx__cfg_t **out, const char *path);
/* The same from memory; `name` (copied; NULL: "<config>") is the file
 * name used in messages and for the default pipeline name. */
int mpx__cfg_parse_mem(mpx__cfg_t **out, const char *name, const void *data,
                       size_t len);

/* Applies one override, "STAGE.KEY=VALUE" or "pipeline.KEY=VALUE"
 * (docs/config.md): STAGE is a stage's name or 0-based index; KEY a stage
 * option, `plugin`, `params.NAME` or a plain NAME (a param); for the
 * pipeline `name`, `queue_capacity`, `dead_letter`, `defaults.OPTION` or
 * `supervisor.KEY`. Values are checked as in the file; a param's value is
 * any text. Changing a default re-resolves the stages that do not set the
 * option themselves. 0, or MPX_ECONFIG / MPX_ENOMEM with the config
 * unchanged and mpx_last_error() "--set ASSIGNMENT: what is wrong". */
int mpx__cfg_set(mpx__cfg_t *c, const char *assignment);

/* Records "FILE:LINE:COL: msg" for mpx_last_error() (line 0: "--set
 * ASSIGNMENT: msg" for override number col, or "FILE: msg" when col is 0
 * too) and returns MPX_ECONFIG. A message that already ends with
 * " (configuration error)" (one from mpx_last_error()) is not given the
 * suffix twice. */
int mpx__cfg_error_at(const mpx__cfg_t *c, unsigned line, unsigned col,
                      const char *fmt, ...) MPX_PRINTF(4, 5);

/* Refuses an option that stage i gives itself (in its mapping or by
 * --set, not through defaults) and that is not among `used` (bits 1u <<
 * opt): a value accepted must take effect. `what` is the stage's role,
 * for the message "stage 'S': 'OPT' has no effect on WHAT". 0, or
 * MPX_ECONFIG at the option's position. */
int mpx__cfg_refuse_unused(const mpx__cfg_t *c, size_t i, unsigned used, const char *what);

/* Accepts NULL. */
void mpx__cfg_free(mpx__cfg_t *c);

/* "permanent", ...; "pipe", ...: the names the file uses. */
const char *mpx__cfg_restart_name(mpx_restart_t r);
const char *mpx__cfg_transport_name(mpx_transport_t t);

#endif /* MPX_CORE_CONFIG_H */
