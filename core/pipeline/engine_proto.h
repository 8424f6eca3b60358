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
 * process repeated after a failure), then n_out items (uint32 length, bytes:
 * the outputs of the chain's last stage for the whole batch in order; for
 * a reduce, the batch's partial), then n_fail failures: uint32 stage (its
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
 * Host byte order: both ends are on one machine. */
#ifndef MPX_CORE_ENGINE_PROTO_H
#define MPX_CORE_ENGINE_PROTO_H

#include <stdint.h>

#include "mpx/common.h"
#include "rd.h"

#define ENGINE_WARGS_VERSION 3u
#define ENGINE_TIMEOUT_EXIT 124
#define ENGINE_TIMEOUT_MARK "the worker ends (batch item "

#define ENGINE_MAX_CHAIN 32
#define ENGINE_PART 0xffffffffu

typedef struct {
  uint32_t version;
  uint32_t n_stages;  /* 1 .. ENGINE_MAX_CHAIN */
} engine_wargs_t;

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
