/* mpx: pipelines. A YAML file (docs/config.md) names stages of task
 * plugins (mpx/plugin.h), a chain or a graph (`inputs`: fan-out, fan-in,
 * named ports, several sources and sinks); mpx_pipeline_run() runs them:
 * the sources in the calling thread, each sink in a thread of its own,
 * every map and reduce stage in a pool of supervised worker processes
 * (mpx/pool.h, spawn start method: the worker loads the plugin), all the
 * pools on one libuv loop in one more thread, stages joined by bounded
 * queues. A reduce with `partition_by: key` counts each key in one of its
 * partitions, each a worker of its own (docs/config.md, "Partitioned
 * reduces").
 *
 * Items travel between stages in batches (`batch` items per message). A
 * batch's outputs are committed together: a worker that dies halfway
 * leaves nothing downstream, and the retry emits each output once. An
 * item whose plugin returned an error is retried in its worker up to
 * `retries` times (not when the plugin called it permanent:
 * mpx_plugin_fail_permanent). A stage's `timeout` holds per item: a call
 * that runs past it ends its worker. When a batch fails for good (its
 * worker died `retries` + 1 times), it is split: at the item that ran out
 * of time, or into single items tried alone, so one poisonous item fails
 * alone. An item out of tries is written to the dead-letter file (one
 * JSON object per line: stage, item, error, attempts) and counted.
 *
 * Backpressure: at most queue_capacity items wait or run per stage (the
 * items waiting for a sink included); the sources are not asked for more
 * until there is room, so memory is bounded by the queue, not the input.
 *
 * Signals: the first SIGINT stops the source, drops what has not reached
 * a worker and lets what is in workers finish, saying so in one line on
 * stderr; a second SIGINT, or SIGTERM, stops at once (pools terminated).
 * A stage with no worker left (restart: temporary) and items pending
 * fails the run at once. A SIGKILL of the process takes its workers with
 * it (they are started with a parent-death signal).
 *
 * Ownership: options are borrowed for the call; the stats struct is the
 * caller's and filled in place; nothing is returned that needs freeing. */
#ifndef MPX_PIPELINE_H
#define MPX_PIPELINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common.h"
#include "plugin.h"

typedef enum {
  MPX_PROGRESS_AUTO = 0, /* on a terminal only */
  MPX_PROGRESS_ALWAYS = 1,
  MPX_PROGRESS_NEVER = 2
} mpx_progress_t;

typedef struct {
  const char *file;          /* the pipeline's YAML */
  const char *const *sets;   /* "--set" assignments, applied in order */
  size_t n_sets;
  bool check_only;           /* validate (file, plugins, params, that each
                              * plugin but a sink starts), run nothing */
  mpx_progress_t progress;   /* to stderr */
  bool summary;              /* the per-stage table to stderr at the end */
  const char *stats_json;    /* write the figures there as JSON; NULL: no */
  const char *graph_dot;     /* with check_only: once the file checks, write
                              * its graph as Graphviz DOT there ("-":
                              * stdout); NULL: no */
} mpx_pipeline_opts_t;

#define MPX_PIPELINE_MAX_STAGES 32

typedef struct {
  char name[64], plugin[64], kind[8];
  unsigned workers;
  uint64_t in, out;          /* items */
  uint64_t failed;           /* items dead-lettered at this stage */
  uint64_t retries;          /* runs repeated after a failure: plugin calls
                              * after an error, tasks after their worker
                              * died or ran out of time */
  uint64_t restarts;         /* worker restarts */
  uint64_t zero_copy;        /* items that arrived in place: written by the
                              * source (mpx_emit_reserve) straight into this
                              * stage's arena, read there by its worker */
  char runs_in[64];          /* fused: the stage whose workers run it (its
                              * chain's first), "" when it runs on its own */
  double seconds;            /* from its first input to its last output */
  unsigned partitions;       /* a partitioned stage's (`partition_by`), each
                              * in an owner worker of its own; else 0 */
} mpx_stage_stats_t;

typedef struct {
  size_t n_stages;
  mpx_stage_stats_t stage[MPX_PIPELINE_MAX_STAGES];
  uint64_t dead_lettered;
  bool interrupted;          /* stopped by a signal */
  double seconds;
  char dead_letter[4096];    /* the dead-letter file, as configured; "" when
                              * there is none */
  uint64_t peak_rss_kb;      /* the coordinator's (this process's) peak
                              * resident memory so far, KiB (VmHWM of
                              * /proc/self/status; 0 when unknown) */
} mpx_pipeline_stats_t;

#ifdef __cplusplus
extern "C" {
#endif

/* Runs (or only checks) a pipeline. 0 when it ran to the end, even with
 * dead-lettered items (see st->dead_lettered); MPX_ECONFIG / MPX_ENOENT /
 * MPX_EPLUGIN / MPX_ENOSYM / MPX_EABI for a file, plugin or parameter that
 * is wrong (mpx_last_error() says where: FILE:LINE:COL, or the plugin's
 * path), or a stage whose plugin cannot start (its init, tried once in a
 * throw-away process before any worker: MPX_ECONFIG); MPX_EINTR when a
 * signal stopped it (after what was in workers finished, for a first
 * SIGINT); another negative code
 * for a runtime failure (a broken pool: the cause in mpx_last_error()).
 * st may be NULL.
 * Own: borrows o (and its strings) for the call; fills st in place (it
 * stays yours). */
MPX_API int mpx_pipeline_run(const mpx_pipeline_opts_t *o,
                             mpx_pipeline_stats_t *st);

#ifdef __cplusplus
}
#endif
#endif /* MPX_PIPELINE_H */
