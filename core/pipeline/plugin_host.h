/* The task plugin host: the loader, parameter validation, and the context
 * that the engine gives each plugin instance (the services plugin.h
 * declares). Internal to libmpx: tests that use it link mpx_static. */
#ifndef MPX_CORE_PLUGIN_HOST_H
#define MPX_CORE_PLUGIN_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpx/codec.h"
#include "mpx/plugin.h"

/* ---- the loader ----------------------------------------------------------- */

/* A loaded plugin (never dlclosed: its descriptor is handed out as a
 * plain pointer). */
typedef struct mpx__plugin_s mpx__plugin_t;

/* Loads a task plugin: a name ("grep": searched as mpx_task_grep.so on the
 * plugin search path, see base/plugin_path.h; the descriptor must carry
 * that name) or a path containing '/' (any name). Loading the same file
 * again returns the same handle. Thread-safe. Errors, with
 * mpx_last_error() naming the file and the problem: MPX_EINVAL (not a
 * name), MPX_ENOENT (no such file: the directories tried are listed),
 * MPX_EPLUGIN (not ELF for this machine, truncated, or dlopen failed:
 * see mpx__plugin_open), MPX_ENOSYM (no
 * mpx_plugin_descriptor), MPX_EABI (magic, ABI major, struct too small),
 * MPX_EPLUGIN (a callback its kind requires is missing, a bad name or
 * parameter spec, or another name than the one asked for). */
int mpx__plugin_load(mpx__plugin_t **out, const char *name_or_path);
/* Borrowed, valid for the life of the process. */
const mpx_plugin_t *mpx__plugin_desc(const mpx__plugin_t *p);
const char *mpx__plugin_path(const mpx__plugin_t *p);

/* Checks a descriptor as the loader does (for plugins linked into a
 * program, and tests): 0, or MPX_EINVAL / MPX_EABI / MPX_EPLUGIN with a
 * message that starts with `where`. Also checks the parameter specs:
 * names, types, no duplicates, defaults that parse. */
int mpx__plugin_check(const mpx_plugin_t *d, const char *where);


/* Every plugin file on the search path, for `mpx plugins`. what:
 * MPX__SCAN_TASKS (mpx_task_*.so), MPX__SCAN_CODECS (mpx_codec_*.so) or
 * both. cb(arg, kind, name, path, description, error) is called once per
 * file, tasks before codecs, each sorted by name (the part of the file
 * name between the prefix and ".so"); for a name found in several
 * directories the first in search order wins and the later ones are
 * reported with error "shadowed by <path>" (and not loaded). kind: the
 * task plugin's kind ("map"...), "task" when it could not be loaded, or
 * "codec". description: the descriptor's (never NULL when error is NULL);
 * error: why the file cannot be used (the loader's message), or NULL.
 * Strings are valid during the call. 0, or MPX_ENOMEM. */
enum { MPX__SCAN_TASKS = 1, MPX__SCAN_CODECS = 2 };
typedef void (*mpx__scan_fn)(void *arg, const char *kind, const char *name,
                             const char *path, const char *description,
                             const char *error);
int mpx__plugin_scan(unsigned what, mpx__scan_fn cb, void *arg);

/* ---- parameters ----------------------------------------------------------- */

/* Parameters as text (from YAML or --set), in order: a later entry for
 * the same key overrides an earlier one. */
typedef struct {
  const char *key;
  const char *value;
} mpx__kv_t;

/* Validates kv against d's parameter specs without making a context (for
 * `mpx run --check`). 0, or MPX_ECONFIG with *bad (may be NULL) the index
 * in kv of the offending entry, or SIZE_MAX for a missing required
 * parameter, and mpx_last_error() e.g.
 *   plugin 'grep': unknown parameter 'patern' (known: pattern, invert)
 *   plugin 'range': parameter 'stop' must be an integer, got 'ten'
 *   plugin 'grep': missing required parameter 'pattern'
 * (each followed by " (configuration error)"). */
int mpx__params_check(const mpx_plugin_t *d, const mpx__kv_t *kv, size_t nkv,
                      size_t *bad);

/* ---- the context ---------------------------------------------------------- */

/* Where a context's emits go: 0, or a negative code that mpx_emit returns
 * to the plugin. data is valid during the call only. */
typedef int (*mpx__emit_fn)(void *arg, const void *data, size_t len);

/* Makes the context of one plugin instance: checks d (mpx__plugin_check),
 * validates and types the parameters (as mpx__params_check, same errors
 * and *bad), fills defaults. stage: the stage's name for messages and
 * logs (NULL: the plugin's name; copied). index < count: this worker.
 * codec: for mpx_emit_obj (NULL: mpx_emit_obj fails with MPX_ESTATE).
 * emit: where outputs go (NULL: mpx_emit fails with MPX_ESTATE; sinks get
 * MPX_ESTATE whatever emit is). d and codec must outlive the context. */
int mpx__ctx_new(mpx_plugin_ctx_t **out, const mpx_plugin_t *d,
                 const char *stage, const mpx__kv_t *kv, size_t nkv,
                 size_t *bad, unsigned index, unsigned count,
                 const mpx_codec_t *codec, mpx__emit_fn emit, void *emit_arg);
/* Appends the context's validated parameter table (given and defaulted
 * values, as canonical text) to out, for a worker process:
 * mpx__ctx_new_from_encoded rebuilds the same table there. */
int mpx__ctx_params_encode(const mpx_plugin_ctx_t *c, mpx_wbuf_t *out);
/* As mpx__ctx_new, with the parameters from mpx__ctx_params_encode's
 * bytes. MPX_EINVAL when they are malformed or were encoded for another
 * plugin; MPX_ECONFIG as mpx__ctx_new (a plugin that changed between
 * coordinator and worker). */
int mpx__ctx_new_from_encoded(mpx_plugin_ctx_t **out, const mpx_plugin_t *d,
                              const char *stage, const void *enc, size_t len,
                              unsigned index, unsigned count,
                              const mpx_codec_t *codec, mpx__emit_fn emit,
                              void *emit_arg);
void mpx__ctx_free(mpx_plugin_ctx_t *c); /* accepts NULL */
/* A new context for another instance of c's stage: the same plugin,
 * stage name, parameters and codec, as worker index of count, emitting to
 * emit (as mpx__ctx_new). For the init probe (plugin_probe.h). */
int mpx__ctx_copy(mpx_plugin_ctx_t **out, const mpx_plugin_ctx_t *c,
                  unsigned index, unsigned count, mpx__emit_fn emit,
                  void *emit_arg);

const mpx_plugin_t *mpx__ctx_desc(const mpx_plugin_ctx_t *c);
const char *mpx__ctx_stage(const mpx_plugin_ctx_t *c); /* owned by c */
void mpx__ctx_set_emit(mpx_plugin_ctx_t *c, mpx__emit_fn emit,
                       void *emit_arg);
/* Where an output goes, besides its bytes: its port and, when it has a
 * key, the key's mpx_key_hash. */
typedef struct {
  uint32_t port;
  bool keyed;
  bool direct;   /* mpx_emit_partition: hash is the partition itself */
  uint32_t hash;
} mpx__tag_t;
/* mpx_partitions() for the following calls (0: not partitioned). */
void mpx__ctx_set_partitions(mpx_plugin_ctx_t *c, unsigned n);
/* A tagged emit: when set, every emit of the context (mpx_emit, _obj,
 * _port, _keyed, _to, a reservation's commit) goes through it, with its
 * tag; plain emit is then not called. Without it, outputs to port 0 go to
 * emit (the key is dropped) and outputs to another port are dropped. */
typedef int (*mpx__emit_to_fn)(void *arg, mpx__tag_t tag, const void *data, size_t len);
void mpx__ctx_set_emit_to(mpx_plugin_ctx_t *c, mpx__emit_to_fn fn, void *arg);
/* The instance's ports (the descriptor's, or those its ports_fn named when
 * the context was made; one, "out", when it declares none): how many, and
 * their names, owned by the context (or the descriptor). */
unsigned mpx__ctx_port_count(const mpx_plugin_ctx_t *c);
const char *const *mpx__ctx_port_names(const mpx_plugin_ctx_t *c);
/* Folds one partial into the state (the descriptor's fold). */
int mpx__ctx_call_fold(mpx_plugin_ctx_t *c, void *state, const void *p, size_t len);
/* d's ABI 1.2 fields, read only where its descriptor has them: whether
 * it has fold; its port table (NULL and *n 0 when none); its ports_fn. */
bool mpx__plugin_has_fold(const mpx_plugin_t *d);
const char *const *mpx__plugin_ports(const mpx_plugin_t *d, size_t *n);
int (*mpx__plugin_ports_fn(const mpx_plugin_t *d))(mpx_plugin_ctx_t *);

/* d's flags (MPX_PLUGIN_SPLITS), 0 for a descriptor from before ABI 1.1. */
uint32_t mpx__plugin_flags(const mpx_plugin_t *d);

/* Where mpx_emit_reserve's room comes from instead of the context's
 * scratch buffer (whose bytes then go through emit, a copy): reserve
 * returns room for len bytes, or NULL to use the scratch buffer after
 * all; commit takes the first `used` bytes of it as one output (its
 * return is mpx_emit_commit's); cancel gives it back when the plugin
 * returns or fails without committing. NULL hooks: scratch only. */
typedef struct {
  void *(*reserve)(void *arg, size_t len);
  int (*commit)(void *arg, size_t used);
  void (*cancel)(void *arg);
  void *arg;
} mpx__reserve_hooks_t;
void mpx__ctx_set_reserve(mpx_plugin_ctx_t *c, const mpx__reserve_hooks_t *h);
/* mpx_reduce_final() for the following calls. */
void mpx__ctx_set_final(mpx_plugin_ctx_t *c, bool final);
/* mpx_cancelled() turns true. Async-signal-safe (a lock-free atomic
 * store), callable from any thread. */
void mpx__ctx_cancel(mpx_plugin_ctx_t *c);
/* Whether the last mpx__ctx_call_process failed with
 * mpx_plugin_fail_permanent (no retry can fix it). */
bool mpx__ctx_permanent(const mpx_plugin_ctx_t *c);
/* The failure message of the last callback (set by mpx_plugin_fail, or a
 * failed mpx_emit_obj), "" if none. Cleared by mpx__ctx_clear_error and by
 * each mpx__ctx_call_* below. Owned by the context. */
const char *mpx__ctx_error(const mpx_plugin_ctx_t *c);
void mpx__ctx_clear_error(mpx_plugin_ctx_t *c);

/* Calling the plugin: each clears the context's error, calls the callback
 * and, when it fails, sets mpx_last_error() to "plugin 'NAME' (stage S,
 * worker I/N): CALLBACK: MESSAGE" (the mpx_plugin_fail message, or the
 * code's) and returns the code. A reservation left open by the callback is
 * dropped (an error). A positive return, other than generate's 1, is an
 * error (MPX_ETASK). */
int mpx__ctx_call_init(mpx_plugin_ctx_t *c, void **state); /* init optional */
void mpx__ctx_call_fini(mpx_plugin_ctx_t *c, void *state); /* fini optional */
/* 1: call again, 0: done, < 0: error. */
int mpx__ctx_call_generate(mpx_plugin_ctx_t *c, void *state);
uint64_t mpx__ctx_call_size_hint(mpx_plugin_ctx_t *c, void *state); /* 0 */
int mpx__ctx_call_process(mpx_plugin_ctx_t *c, void *state, const void *in,
                          size_t len);
int mpx__ctx_call_flush(mpx_plugin_ctx_t *c, void *state); /* 0 when none */
int mpx__ctx_call_merge(mpx_plugin_ctx_t *c, void *state, const void *a,
                        size_t alen, const void *b, size_t blen);

#endif /* MPX_CORE_PLUGIN_HOST_H */
