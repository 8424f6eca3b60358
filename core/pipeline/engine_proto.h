/* Internal: what the pipeline coordinator and its workers exchange, on top
 * of the pool's messages.
 *
 * A worker runs a chain: one stage's plugin, or several consecutive stages
 * fused into one set of workers (engine_setup.c says when), each item going
 * through all of them in the worker, depth first.
 *
 * Worker arguments (the pool's initargs): engine_wargs_t, then for each of
 * its n_stages stages an engine_wstage_t followed by the plugin path, the
 * stage name and the codec name (each NUL-terminated), then the encoded
 * parameters (mpx__ctx_params_encode).
 *
 * When the chain starts with a source (a source that splits, run in
 * parts: engine_setup.c), every task is a part instead: uint32 ENGINE_PART,
 * uint32 i, uint32 parts; the worker runs instance i of `parts` of the
 * source to its end, each item it emits going down the rest of the chain.
 *
 * Otherwise a task's argument is a batch: uint32 n, then n items (uint32
 * length, bytes). Its result: uint32 n_out, uint32 n_fail, uint32 n_stages, then
 * n_stages triples (uint32 in, uint32 out, uint32 retries: the items each
 * stage of the chain took and emitted in this batch, and the calls of its
 * process repeated after a failure), then n_out tagged items (uint32
 * length, uint32 tag, uint32 hash, bytes: the outputs of the chain's last
 * stage for the whole batch in order; for a reduce, the batch's
 * partials), then n_fail failures: uint32 stage (its
 * place in the chain), uint32 index (of the batch item it came from),
 * uint32 attempts (the calls that failed on it), uint32 length and the
 * bytes of the item that failed (empty for stage 0: the batch item
 * itself), uint32 length and the message. An item that failed contributed
 * no output. A plugin's error is retried in the worker, up to the stage's
 * retries (a permanent failure is not), so the answer has the whole story.
 *
 * Timeouts: a worker whose chain has a timeout runs a watchdog thread; a
 * call of a stage's process (or a reduce's flush) that runs past it makes
 * the worker write one line to its stderr, ending with ENGINE_TIMEOUT_MARK
 * and the index of the batch item, and exit with ENGINE_TIMEOUT_EXIT. The
 * pool reports the exit with the worker's last stderr lines, where the
 * coordinator finds the mark: the items before that one are run again,
 * the one that hung is charged an attempt, the ones after it never ran.
 * A tag is the output port (ENGINE_TAG_PORT bits), ENGINE_TAG_KEYED when
 * the item has a key (hash is mpx_key_hash of it) and ENGINE_TAG_DIRECT
 * when hash is the partition itself (mpx_emit_partition).
 *
 * Partition owners (mode ENGINE_MODE_PARTITION): a partitioned reduce's
 * partition q (part_index, of `partitions`) runs in a pool of one worker
 * of its own, whose arguments end, after the one stage, with the path of
 * the partition's log (NUL-terminated). The log is a file
 * the coordinator appends the partition's partials to (uint32 length,
 * bytes each) before it asks the owner to fold them; the owner reads it
 * from its own offset. A task is uint32 ENGINE_FOLD or ENGINE_FINAL,
 * uint32 0, uint64 end: fold the log up to offset `end` (what is below
 * the owner's offset is already in its state: such a task is a no-op, so
 * a task run again after a death counts nothing twice); FINAL then
 * flushes the state as the stage's final output. A new owner (its
 * predecessor died) starts from offset 0: the log replays the state.
 * Host byte order: both ends are on one machine. */
#ifndef MPX_CORE_ENGINE_PROTO_H
#define MPX_CORE_ENGINE_PROTO_H

#include <stdint.h>

#include "mpx/common.h"
#include "rd.h"

#define ENGINE_WARGS_VERSION 4u
#define ENGINE_TIMEOUT_EXIT 124
#define ENGINE_TIMEOUT_MARK "the worker ends (batch item "

#define ENGINE_MAX_CHAIN 32
#define ENGINE_PART 0xffffffffu

#define ENGINE_FOLD 0xfffffffeu
#define ENGINE_FINAL 0xfffffffdu
#define ENGINE_TAG_PORT 0xffffu
#define ENGINE_TAG_KEYED 0x80000000u
#define ENGINE_TAG_DIRECT 0x40000000u
#define ENGINE_ITEM_HDR 12u /* length, tag, hash */

enum { ENGINE_MODE_CHAIN = 0, ENGINE_MODE_PARTITION = 1 };

typedef struct {
  uint32_t version;
  uint32_t n_stages;   /* 1 .. ENGINE_MAX_CHAIN */
  uint32_t mode;       /* ENGINE_MODE_* */
  uint32_t partitions; /* the chain's tail is a partitioned reduce with
                        * this many partitions (mpx_partitions); 0: not */
  uint32_t part_index; /* a partition owner's partition */
} engine_wargs_t;

/* One tagged item of an answer. */
static inline int engine_rd_item(mpx__rd_t *r, uint32_t *tag, uint32_t *hash, const void **d,
                                 uint32_t *l) {
  uint32_t len;
  if (mpx__rd_u32(r, &len) != 0 || mpx__rd_u32(r, tag) != 0 || mpx__rd_u32(r, hash) != 0 ||
      (size_t)(r->end - r->p) < len)
    return MPX_EPROTO;
  *d = r->p;
  *l = len;
  r->p += len;
  return 0;
}

typedef struct {
  uint32_t kind;      /* mpx_plugin_kind_t */
  uint32_t path_len, stage_len, codec_len; /* NUL included */
  uint32_t params_len;
  uint32_t retries;   /* a plugin error's retries in the worker */
  double timeout;     /* seconds per item; 0: none */
} engine_wstage_t;

/* Read with the one length-prefix reader, base/rd.h (mpx__rd_u32,
 * mpx__rd_bytes32). */

/* The pipeline worker's entry points: the pool initializer and the task
 * (engine_worker.c) that the engine gives its pools. Exported (MPX_API)
 * though declared only here: a spawn worker (mpx-worker, linked to
 * libmpx.so) finds them by symbol name in libmpx. Not public API. */
struct mpx_task_s;
MPX_API int mpx_pipeline_worker_init(const void *args, size_t len);
MPX_API int mpx_pipeline_task(struct mpx_task_s *t, const void *in, size_t len);

#endif
