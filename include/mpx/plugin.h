/* mpx: the task plugin ABI. The only header a task plugin needs.
 *
 * A plugin is a shared object that exports one descriptor,
 *
 *   MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
 *     MPX_PLUGIN_HEADER,                   // magic, ABI version, struct size
 *     .name = "grep", .version = "1.0", .description = "keep matching lines",
 *     .kind = MPX_PLUGIN_MAP,
 *     .params = grep_params, .n_params = 2,
 *     .init = grep_init, .process = grep_process, .fini = grep_fini,
 *   };
 *
 * and is found by name on the plugin search path (MPX_PLUGIN_PATH, next to
 * libmpx, the install prefix; `mpx plugins` lists them) or by file path.
 *
 * Kinds and their callbacks (R: required, o: optional):
 *   source  generate (R): emit a batch of items; 1 = call again, 0 = done,
 *           < 0 error.
 *           size_hint (o): how many items this instance will emit (0:
 *           unknown), for progress and ETA.
 *   map     process (R): one input, 0..n outputs (a filter, a flat map).
 *           flush (o): at the end of the stream, may emit more.
 *   sink    process (R): consume one input (emits nothing); flush (o) at
 *           the end of the stream.
 *   reduce  process (R): fold one input into the instance state;
 *           flush (R): emit the state as one partial result and empty the
 *           state (the instance is reused for the next batch);
 *           merge (R unless fold is given): combine two partial results into one and emit it;
 *           either may be empty (length 0, the empty partial, which merge
 *           treats as the identity). merge must not touch the state.
 *           fold (o, ABI 1.2): the linear merge, below; with it, merge
 *           is optional.
 *           Partials are opaque bytes only the plugin reads; the engine
 *           just carries them. The engine folds each batch of inputs into
 *           a fresh state and merges the partials, so a worker that dies
 *           loses nothing that was committed; merge must be associative
 *           (and, as the order of batches is not kept, commutative).
 *           The final step: exactly one call, the flush of an instance
 *           that saw the whole stream or the last merge (merge(total,
 *           empty) when there is a single partial), runs with
 *           mpx_reduce_final() true, and then emits the stage's output
 *           items (e.g. one "count word" line per word) instead of a
 *           partial.
 *   All kinds: init (o) makes the per-instance state from the parameters
 *   (a failing init fails the stage, with mpx_plugin_fail's message),
 *   fini (o) frees it. Before a run, init (and fini) also run once in a
 *   throw-away process, so a plugin that cannot start is a configuration
 *   error (docs/plugins.md, the start check).
 *
 * Every callback gets the context (host services below) and the instance
 * state. Return 0 (or 1 from generate to be called again) for success; a
 * negative MPX_E* code, or mpx_plugin_fail(), fails the current item (it
 * is retried up to the stage's `retries`, then dead-lettered with the
 * message); mpx_plugin_fail_permanent() fails it for good (bad input no
 * retry can fix: dead-lettered at once). A process that fails must leave
 * the instance state as it was: the same item may come again. Callbacks may run in
 * a worker process, concurrently in several processes; one instance is
 * used by one thread at a time.
 *
 * Parameters are declared in the descriptor and given as text (YAML
 * scalars, `--set key=value`), then checked and converted before init:
 * int: decimal with an optional sign, or 0x hex (int64 range); float: what
 * strtod reads, plus .inf, -.inf and .nan; bool: true/false, yes/no,
 * on/off, 1/0, any case; string: as is. A later value for the same key
 * overrides an earlier one. Defaults are written the same way.
 *
 * ABI: a loader accepts a descriptor with the same major version and a
 * struct_size of at least the fields it needs; new fields are added at the
 * end with a minor version bump. See docs/plugins.md.
 *
 * Ownership: the host owns the context and the descriptor; objects
 * passed to a plugin's functions are borrowed for the call; mpx_emit
 * copies the item; mpx_emit_reserve's room is mpx's, written by the plugin
 * and handed on by mpx_emit_commit. */
#ifndef MPX_PLUGIN_H
#define MPX_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common.h"
#include "error.h"
#include "log.h"
#include "obj.h"

#define MPX_PLUGIN_MAGIC 0x4c50584du /* "MXPL" little-endian */
#define MPX_PLUGIN_ABI_MAJOR 1
#define MPX_PLUGIN_ABI_MINOR 2
#define MPX_PLUGIN_SYMBOL "mpx_plugin_descriptor"

#define MPX_PLUGIN_EXPORT __attribute__((visibility("default")))
#define MPX_PLUGIN_HEADER                                                 \
  .magic = MPX_PLUGIN_MAGIC, .abi_major = MPX_PLUGIN_ABI_MAJOR,           \
  .abi_minor = MPX_PLUGIN_ABI_MINOR,                                      \
  .struct_size = (uint32_t)sizeof(mpx_plugin_t)

typedef enum {
  MPX_PLUGIN_SOURCE = 1,
  MPX_PLUGIN_MAP = 2,
  MPX_PLUGIN_SINK = 3,
  MPX_PLUGIN_REDUCE = 4
} mpx_plugin_kind_t;

typedef enum {
  MPX_PARAM_INT = 1,    /* int64 */
  MPX_PARAM_FLOAT = 2,  /* double */
  MPX_PARAM_BOOL = 3,   /* true/false */
  MPX_PARAM_STRING = 4
} mpx_param_type_t;

typedef struct {
  const char *name;
  mpx_param_type_t type;
  const char *default_value; /* as it would be written in YAML; NULL: none */
  bool required;
  const char *description;
} mpx_param_def_t;

/* The host's services for one plugin instance. Opaque. */
typedef struct mpx_plugin_ctx_s mpx_plugin_ctx_t;

typedef struct mpx_plugin_s {
  uint32_t magic;       /* MPX_PLUGIN_MAGIC */
  uint16_t abi_major;   /* MPX_PLUGIN_ABI_MAJOR the plugin was built with */
  uint16_t abi_minor;
  uint32_t struct_size; /* sizeof(mpx_plugin_t) the plugin was built with */
  const char *name;     /* what `plugin: NAME` finds; [a-z0-9_-]+ */
  const char *version;
  const char *description;
  mpx_plugin_kind_t kind;
  const mpx_param_def_t *params;
  size_t n_params;
  int (*init)(mpx_plugin_ctx_t *ctx, void **state);
  void (*fini)(mpx_plugin_ctx_t *ctx, void *state);
  int (*generate)(mpx_plugin_ctx_t *ctx, void *state);
  uint64_t (*size_hint)(mpx_plugin_ctx_t *ctx, void *state);
  int (*process)(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                 size_t len);
  int (*flush)(mpx_plugin_ctx_t *ctx, void *state);
  int (*merge)(mpx_plugin_ctx_t *ctx, void *state, const void *a, size_t alen,
               const void *b, size_t blen);
  /* ABI 1.1 (a 1.0 descriptor, without it, reads as 0). */
  uint32_t flags;       /* MPX_PLUGIN_SPLITS */
  /* ABI 1.2 (an older descriptor reads these as NULL and 0). */
  /* Named output ports, port 0 first: a map or reduce whose outputs go to
   * different places (grep: "matched", "unmatched"). mpx_emit goes to
   * port 0; mpx_emit_port to any. A pipeline stage reads another's port
   * with `inputs: [STAGE.PORT]`; `inputs: [STAGE]` reads port 0. NULL:
   * one port, "out". */
  const char *const *ports;
  size_t n_ports;
  /* Instead of ports: ports named by the parameters (route). Called after
   * the parameters are checked, before init, wherever an instance is
   * made; it names each port with mpx_port_add, port 0 first. 0 or a
   * negative code (a configuration error, with mpx_plugin_fail's message). */
  int (*ports_fn)(mpx_plugin_ctx_t *ctx);
  /* A reduce's linear merge (optional; merge is then not needed): fold
   * one partial (as this plugin's non-final flush emits it) into the live
   * state, which stays decoded. The engine then keeps one instance whose
   * state is the running total, folds every partial into it, and calls
   * its flush with mpx_reduce_final() true once at the end: work
   * proportional to the partials, not to batches x total. A partitioned
   * stage (`partition_by: key`) needs it: each partition folds its keys'
   * partials into a state that lives in its worker. A fold that fails
   * fails the run (a partial is not an input item: it has no retry). */
  int (*fold)(mpx_plugin_ctx_t *ctx, void *state, const void *partial, size_t len);
} mpx_plugin_t;

/* flags: a source whose instances split the stream: instance i of n
 * (mpx_worker_index / mpx_worker_count) emits its own share, and the n
 * shares together are the whole stream, each item once. Such a source
 * may be given `workers` in a pipeline: its instances then run in the
 * workers of the stages after it, in parallel (range, lines). */
#define MPX_PLUGIN_SPLITS 1u

#ifdef __cplusplus
extern "C" {
#endif

/* "source", "map", "sink", "reduce" / "int", "float", "bool", "string";
 * "?" for anything else.
 * Own: both return static strings, borrowed until the process ends. */
MPX_API const char *mpx_plugin_kind_name(mpx_plugin_kind_t kind);
MPX_API const char *mpx_param_type_name(mpx_param_type_t type);

/* ---- host services ------------------------------------------------------- */

/* Emit one output item (copied). From generate, process, flush, merge.
 * 0, or a negative code to return from the callback as it is (e.g.
 * MPX_ESTATE from a sink, which emits nothing).
 * Own: copies data. */
MPX_API int mpx_emit(mpx_plugin_ctx_t *ctx, const void *data, size_t len);
/* Emit an object, encoded with the stage's codec (MPX_ESTATE when the
 * stage has none).
 * Own: borrows obj for the call (its encoding is emitted). */
MPX_API int mpx_emit_obj(mpx_plugin_ctx_t *ctx, const mpx_obj_t *obj);
/* Zero-copy: room for an output of up to len bytes, written in place and
 * then committed with mpx_emit_commit(ctx, used) (used <= len), before any
 * other emit. NULL when out of memory, from a sink, or while another
 * reservation is open.
 * Own: returns room borrowed until mpx_emit_commit (mpx's memory: the
 * plugin writes it, never frees it). */
MPX_API void *mpx_emit_reserve(mpx_plugin_ctx_t *ctx, size_t len);
MPX_API int mpx_emit_commit(mpx_plugin_ctx_t *ctx, size_t used);

/* Emit to output port `port` (the descriptor's order; 0 is mpx_emit's).
 * A port no stage reads drops its items. MPX_EINVAL for a port the plugin
 * does not have.
 * Own: copies data. */
MPX_API int mpx_emit_port(mpx_plugin_ctx_t *ctx, unsigned port, const void *data,
                          size_t len);
/* Emit with a key (to port 0): a stage after it with `partition_by: key`
 * gets each key in exactly one partition, the one mpx_key_hash(key) %
 * partitions names. A reduce's non-final flush emits its keyed partials
 * this way (one per key, or per group of keys with one key's hash). An
 * item emitted without a key is keyed by all its bytes.
 * Own: copies key and data. */
MPX_API int mpx_emit_keyed(mpx_plugin_ctx_t *ctx, const void *key, size_t klen,
                           const void *data, size_t len);
/* Both: to a port, with a key (key NULL: none). */
MPX_API int mpx_emit_to(mpx_plugin_ctx_t *ctx, unsigned port, const void *key,
                        size_t klen, const void *data, size_t len);
/* For a reduce whose stage is partitioned (`partition_by: key`): how many
 * partitions its partials go to; 0 when the stage is not partitioned. Its
 * non-final flush may then, instead of one mpx_emit_keyed per key, group
 * the keys by partition itself and emit one partial per partition with
 * mpx_emit_partition(ctx, p, ...), holding exactly the keys k with
 * mpx_key_hash(k) % mpx_partitions(ctx) == p (MPX_EINVAL for p out of
 * range or when not partitioned). Fewer, bigger items: the fast way.
 * Own: mpx_emit_partition copies data. */
MPX_API unsigned mpx_partitions(const mpx_plugin_ctx_t *ctx);
MPX_API int mpx_emit_partition(mpx_plugin_ctx_t *ctx, unsigned p, const void *data,
                               size_t len);
/* The stable hash that picks a key's partition, the same on every
 * machine and in every version of ABI 1.x: with 64-bit unsigned
 * arithmetic, h = 0x243f6a8885a308d3 ^ (len * 0x9e3779b97f4a7c15); for
 * each 8-byte word of the key read little-endian (a last, shorter one
 * zero-padded), h = (h ^ w) * 0xff51afd7ed558ccd, h ^= h >> 29; then
 * h *= 0xc4ceb9fe1a85ec53 and the result is the low 32 bits of
 * h ^ (h >> 32). */
MPX_API uint32_t mpx_key_hash(const void *key, size_t len);
/* From ports_fn only: names the next port ([a-z0-9_-]+, 1..63 bytes,
 * unique). 0, MPX_EINVAL (bad or repeated name), MPX_ESTATE (not in
 * ports_fn), MPX_E2BIG (more than MPX_PLUGIN_MAX_PORTS).
 * Own: copies name. */
#define MPX_PLUGIN_MAX_PORTS 64
MPX_API int mpx_port_add(mpx_plugin_ctx_t *ctx, const char *name);
/* This instance's ports: how many, and the index of a name (MPX_ENOENT
 * when it has none of that name). */
MPX_API unsigned mpx_port_count(const mpx_plugin_ctx_t *ctx);
MPX_API int mpx_port_index(const mpx_plugin_ctx_t *ctx, const char *name);

/* Parameters, already validated against the descriptor (the engine
 * refuses unknown names and wrong types with file:line:column, and fills
 * defaults). Asking for a name the descriptor does not declare, or with
 * the wrong type, returns the zero value and logs an error. */
MPX_API int64_t mpx_param_int(mpx_plugin_ctx_t *ctx, const char *name);
MPX_API double mpx_param_float(mpx_plugin_ctx_t *ctx, const char *name);
MPX_API bool mpx_param_bool(mpx_plugin_ctx_t *ctx, const char *name);
/* Borrowed, valid for the instance's life; "" when unset.
 * Own: returns a string borrowed until the instance ends. */
MPX_API const char *mpx_param_str(mpx_plugin_ctx_t *ctx, const char *name);
/* Whether the parameter was given (or has a default). */
MPX_API bool mpx_param_has(mpx_plugin_ctx_t *ctx, const char *name);

/* This instance's worker index (0..count-1) and the stage's worker count;
 * a source splits its work with them. */
MPX_API unsigned mpx_worker_index(const mpx_plugin_ctx_t *ctx);
MPX_API unsigned mpx_worker_count(const mpx_plugin_ctx_t *ctx);
/* True once the run is stopping (SIGINT, an error): a long generate or
 * process should return soon. */
MPX_API bool mpx_cancelled(const mpx_plugin_ctx_t *ctx);
/* For a reduce plugin's flush and merge: true when this call is the
 * final step, which emits the stage's output items instead of a partial
 * (see "reduce" above). False everywhere else. */
MPX_API bool mpx_reduce_final(const mpx_plugin_ctx_t *ctx);
/* Fail the current item (or init) with a message; returns MPX_ETASK. */
MPX_API int mpx_plugin_fail(mpx_plugin_ctx_t *ctx, const char *fmt, ...)
    MPX_PRINTF(2, 3);
/* The same, for a failure that no retry can fix (the item itself is bad):
 * from process, the item goes to the dead-letter file at once, with
 * attempts 1. Elsewhere it is mpx_plugin_fail. Returns MPX_ETASK. A host
 * service added without an ABI change (the descriptor is the same); a
 * plugin that must also build against older headers can test
 * MPX_PLUGIN_HAS_FAIL_PERMANENT. */
#define MPX_PLUGIN_HAS_FAIL_PERMANENT 1
MPX_API int mpx_plugin_fail_permanent(mpx_plugin_ctx_t *ctx, const char *fmt, ...)
    MPX_PRINTF(2, 3);
/* Log through mpx's logger, prefixed with the stage and worker. */
MPX_API void mpx_plugin_log(mpx_plugin_ctx_t *ctx, mpx_log_level_t level,
                            const char *fmt, ...) MPX_PRINTF(3, 4);

/* ---- finding plugins (host side: `mpx plugins`, a pipeline) ------------ */

/* The plugins (what: 1) and codecs (2) on the search path, for `mpx
 * plugins`: cb(arg, kind, name, path, description, error) once each,
 * sorted by name; error is why a file cannot be used, or NULL.
 * Own: the strings given to cb are borrowed for the callback only (copy
 * what you keep); mpx_plugin_list borrows arg for the call. */
typedef void (*mpx_plugin_list_fn)(void *arg, const char *kind,
                                   const char *name, const char *path,
                                   const char *description, const char *error);
MPX_API int mpx_plugin_list(unsigned what, mpx_plugin_list_fn cb, void *arg);
/* The directories searched for task plugins and codecs, in the order
 * they are searched ($MPX_PLUGIN_PATH's, next to libmpx, the install
 * prefix's), each followed by a '\n', into buf (cap bytes, always
 * NUL-terminated when cap > 0; directories that do not fit are left out).
 * Own: borrows buf for the call (it stays yours). */
MPX_API void mpx_plugin_search_path(char *buf, size_t cap);

/* Loads a task plugin by name or path (as a pipeline does) and returns its
 * descriptor and file (borrowed, for the process's life).
 * Own: *desc and *path are borrowed until the process ends (the plugin
 * is never unloaded); borrows name_or_path for the call. */
MPX_API int mpx_plugin_find(const char *name_or_path, const mpx_plugin_t **desc,
                            const char **path);

#ifdef __cplusplus
}
#endif
#endif /* MPX_PLUGIN_H */
