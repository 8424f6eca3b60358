/* What the pieces of the pipeline engine share: engine.c (moving items,
 * running, mpx_pipeline_run), engine_retry.c (failed batches),
 * engine_setup.c (loading and planning), engine_report.c (dead letters,
 * stats, summary, JSON), engine_progress.c and engine_signal.c. Private to
 * core/pipeline; the workers' side is engine_worker.c (engine_proto.h). */
#ifndef MPX_CORE_ENGINE_INT_H
#define MPX_CORE_ENGINE_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <uv.h>

#include "config.h"
#include "graph.h"
#include "internal.h"
#include "mpx/pipeline.h"
#include "plugin_host.h"

#define AUTO_BATCH 1024
#define AUTO_BATCH_BYTES ((size_t)256 << 10)
/* Into a chain that ends in a reduce, each batch costs the coordinator a
 * merge of its partial into the total: bigger batches, fewer merges. */
#define REDUCE_BATCH (16 * AUTO_BATCH)
#define REDUCE_BATCH_BYTES ((size_t)4 << 20)

typedef struct eng_s eng_t;
typedef struct stage_s stage_t;

typedef struct job_s {
  stage_t *s;
  uint64_t seq;
  mpx_wbuf_t batch;         /* the argument, kept for splitting and dead letters */
  uint32_t n;
  struct job_s *parent;     /* a single item split from parent */
  uint32_t sub;             /* its index in the parent */
  uint32_t pending;         /* parent: singles not yet done */
  mpx_wbuf_t *subout;       /* parent, ordered: each single's outputs */
  mpx_wbuf_t out;           /* ordered: outputs waiting for their turn */
  uint32_t nout;
  struct job_s *next;       /* reorder list */
  mpx_pool_loan_t loan;     /* batch is this arena block (zero-copy) */
  bool loaned;              /* submitted from a loan: ... */
  mpx_async_t *a;           /* ... whose handle keeps the block until job_free */
  uint32_t attempts;        /* a single item: the runs that failed on it */
  double t_sent;            /* handed to the pool, ... */
  unsigned ahead;           /* ... with this many of its chain's jobs per worker */
  struct job_s *qnext;      /* its chain's queue */
  mpx_async_t *h;           /* in its pool: the handle, until a callback ... */
  struct job_s *lprev, *lnext; /* ... takes it off its chain's live list */
} job_t;

struct stage_s {
  eng_t *e;
  size_t idx;
  mpx__cfg_stage_t *cfg;
  const mpx_plugin_t *d;
  const char *path;
  const mpx_codec_t *codec;
  mpx_plugin_ctx_t *ctx;    /* local instance: source, sink, reduce merger */
  void *state;
  mpx_pool_t *pool;          /* a chain's head only */
  stage_t *head, *tail;      /* its chain: stages fused into one set of workers */
  unsigned parts;            /* a source run in parts by its chain's workers;
                              * 0: it runs here */
  mpx_pool_loan_t loan;     /* source: an emit_reserve open in ... */
  stage_t *loan_to;         /* ... this stage's arena (its sole reader) */
  unsigned workers;
  size_t batch, batch_bytes; /* a batch is sent when it has either */
  bool keep_order; /* outputs in input order: ordered here or next */
  pthread_mutex_t mu;
  mpx_wbuf_t pend;
  uint32_t pend_n;
  uint64_t next_seq, next_out;
  job_t *rob;               /* ordered: answers waiting, by seq */
  mpx_wbuf_t total, tmp;    /* reduce: the running merge */
  bool have_total;
  bool more;                /* a source here, not at its end yet */
  /* under e->mu */
  uint64_t in, out, failed, inflight;
  job_t *q_head, *q_tail;     /* a chain's jobs not yet in its pool */
  job_t *live;                /* ... and those in it (a terminated pool
                               * calls no callback for some) */
  unsigned in_pool;           /* jobs in its pool, at most pool_cap(): */
  double job_time;            /* a job's time in a worker, smoothed (s) */
  char last_death[1024];      /* how its last worker death was reported */
  uint64_t retries;           /* runs of items repeated after a failure */
  uint64_t restarts;          /* from the pool, taken before it is freed */
  uint64_t zero_copy;         /* items that came in place in its arena */
  double t_first, t_last;
  /* A reduce that folds (ABI 1.2): its local instance's state is the
   * running total, each partial folded in; no merge, no total buffer. */
  bool folds;
  /* A partitioned reduce (`partition_by: key`): its chain's answers are
   * keyed partials, appended to its partitions' logs, not merged here. */
  unsigned nparts;
  stage_t *parts_st;          /* its partitions, e->pst[...] */
  /* A partition: a hidden stage with a pool of one owner worker. */
  stage_t *part_of;
  unsigned part_index;
  int log_fd;                 /* its log (engine_proto.h), -1: none */
  uint64_t log_end;           /* bytes written (and asked to be folded) */
  uint64_t more_from;         /* its final output's next chunk; 0: none; under e->mu */
  mpx_wbuf_t log_buf;         /* partials not yet written; under part_of->mu */
  char part_name[96];         /* "STAGE#q", its pool's name */
  /* A sink: its own thread takes its items from a queue (under mu), so a
   * slow sink holds up no loop: its items count in e->queued, and the
   * sources wait for room. */
  pthread_t sink_th;
  bool sink_on, sink_stop, sink_waiting;
  pthread_cond_t sink_cv;
  mpx_wbuf_t sink_q;          /* uint32 length, bytes; ... */
  uint32_t sink_n;            /* ... this many */
};

struct eng_s {
  mpx__cfg_t *cfg;
  stage_t *st;
  size_t n;
  stage_t *pst;             /* the partitions of partitioned stages ... */
  size_t n_all;             /* ... are stages n .. n_all - 1 (mpx__eng_stage) */
  mpx__graph_t g;
  mpx__gnode_t *nodes;
  /* The one loop every pool of the run runs on (their callbacks: answers,
   * retries, shutdowns), in a thread of its own. */
  uv_loop_t loop;
  bool loop_ready, loop_on;
  pthread_t loop_th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t queued;          /* items submitted to worker stages, not answered */
  size_t cap;
  int fatal;
  char fatal_msg[1024];
  FILE *dl;
  pthread_mutex_t dl_mu;
  uint64_t dead;
  double t0;
  uint64_t expect;          /* the source's size_hint at its start; 0: unknown */
  uint32_t parts_done;      /* a source in parts: parts answered */
  atomic_bool stopping;     /* after the first SIGINT: nothing new starts */
  bool ended;               /* tearing down: nothing more goes downstream */
  unsigned pools_shut;      /* pools whose shutdown is over */
  uint64_t dropped;         /* items that never reached a worker for it */
  bool progress;            /* a progress line is being drawn ... */
  bool progress_th_on;      /* ... by progress_th (engine_progress.c) */
  pthread_t progress_th;
};

/* Stage i of all, the partitions' hidden stages after the pipeline's. */
static inline stage_t *mpx__eng_stage(eng_t *e, size_t i) {
  return i < e->n ? &e->st[i] : &e->pst[i - e->n];
}

static inline bool mpx__eng_stopping(eng_t *e) {
  return atomic_load(&e->stopping);
}

/* ---- moving items, running (engine.c) ---- */

bool mpx__eng_has_room(eng_t *e, size_t k);
int mpx__eng_batch_item(const job_t *j, uint32_t i, const void **d, uint32_t *l);
int mpx__eng_wait_for(eng_t *e, bool (*pred)(eng_t *, size_t), size_t k);
void mpx__eng_count_dropped(eng_t *e, uint64_t n);
void mpx__eng_dispatch(stage_t *s);
void mpx__eng_finish_empty(stage_t *s, job_t *j);
void mpx__eng_flush_pend(stage_t *s);
void mpx__eng_job_finish(stage_t *s, job_t *j, const uint8_t *items, size_t len,
                         uint32_t n);
void mpx__eng_job_free(job_t *j);
void mpx__eng_left_pool(stage_t *s, job_t *j);
void mpx__eng_push(stage_t *s, const void *data, size_t len);
void mpx__eng_set_fatal(eng_t *e, int rc, const char *fmt, ...) MPX_PRINTF(3, 4);
void mpx__eng_submit(stage_t *s, job_t *j, bool front);
void mpx__eng_unlive(stage_t *s, job_t *j);

/* ---- sinks (engine_sink.c) ---- */

/* Queues an item for sink s; its thread runs it. */
void mpx__eng_sink_put(stage_t *s, const void *data, size_t len);
int mpx__eng_sinks_start(eng_t *e);
/* Wakes each sink thread that has items waiting (after a batch of items
 * went in, or before anything waits for room). */
void mpx__eng_sinks_kick(eng_t *e);
/* Ends the sinks' threads: what they hold runs first, unless the run is
 * stopping at once. */
void mpx__eng_sinks_stop(eng_t *e);

/* ---- partitions (engine_part.c) ---- */

/* A partitioned stage's chain answered: its keyed partials to their
 * partitions' logs. Under t->mu. */
void mpx__eng_part_route(stage_t *t, const uint8_t *items, size_t len, uint32_t n);
/* Writes what waits for partition ps's log and asks its owner to fold
 * it. Under ps->part_of->mu. */
void mpx__eng_part_flush(stage_t *ps);
/* End of stream at partitioned stage t: everything to the logs, then each
 * partition's final task; returns once they are answered (or an error). */
int mpx__eng_part_finish(stage_t *t);
int mpx__eng_part_start(eng_t *e, stage_t *ps);
void mpx__eng_part_free(stage_t *ps);

/* ---- driving a run (engine_drive.c) ---- */

/* The sources to their end (or a signal), then the end of the stream
 * through every stage. Main thread. 0, or the fatal error, MPX_EINTR. */
int mpx__eng_drive(eng_t *e);

/* ---- failed batches (engine_retry.c) ---- */

void mpx__eng_on_err(mpx_async_t *a, void *arg);

/* ---- set-up (engine_setup.c) ---- */

int mpx__eng_emit_to_next(void *arg, const void *data, size_t len);
int mpx__eng_emit_local(void *arg, mpx__tag_t tag, const void *data, size_t len);
int mpx__eng_plan_partitions(eng_t *e);
/* Appends stage s's part of a worker's arguments (engine_proto.h). */
int mpx__eng_wargs_stage(stage_t *s, mpx_wbuf_t *args);
/* The pool options for stage s's workers (a partition's: its stage's). */
void mpx__eng_pool_opts(const stage_t *s, mpx_pool_opts_t *o);
void mpx__eng_route_out(stage_t *s, uint32_t port, const void *d, uint32_t l);
int mpx__eng_plan_chains(eng_t *e);
int mpx__eng_stage_load(eng_t *e, size_t i);
int mpx__eng_stage_start(eng_t *e, size_t i);

/* ---- reports (engine_report.c) ---- */

int mpx__eng_write_json(const mpx_pipeline_stats_t *st, const char *path, const char *name);
void mpx__eng_dead_letter(stage_t *s, const void *item, size_t len,
                          const char *err, unsigned attempts);
void mpx__eng_fill_stats(eng_t *e, mpx_pipeline_stats_t *st);
void mpx__eng_print_summary(const mpx_pipeline_stats_t *st, FILE *f);

/* ---- the progress line (engine_progress.c) ---- */

/* Draws the line while the run goes on when want (and start: the stages
 * started); e->progress says whether a line is drawn. */
void mpx__eng_progress_begin(eng_t *e, bool want, bool start);
/* Stops the drawing; the last line, with a newline. */
void mpx__eng_progress_end(eng_t *e);

/* ---- signals (engine_signal.c) ---- */

typedef struct {
  struct sigaction intr, term;
} mpx__eng_sigsave_t;

/* From here SIGINT and SIGTERM are counted (none yet); old keeps the
 * handlers to put back. */
void mpx__eng_signals_catch(mpx__eng_sigsave_t *old);
void mpx__eng_signals_restore(const mpx__eng_sigsave_t *old);
bool mpx__eng_signalled(void); /* any */
bool mpx__eng_stop_now(void);  /* SIGTERM or a second SIGINT */
bool mpx__eng_sigterm(void);

#endif
