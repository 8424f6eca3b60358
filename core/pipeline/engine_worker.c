/* The pipeline worker: a pool worker that loads a chain of stages' plugins
 * in its initializer and runs batches of items through them
 * (engine_proto.h). Stage i's outputs are stage i+1's inputs at once
 * (depth first); the last stage's go into the answer. A plugin's error is
 * retried here, at once, up to its stage's retries; a stage's timeout is
 * kept per item by a watchdog thread. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine_proto.h"
#include "internal.h"
#include "mpx/pipeline.h"
#include "plugin_host.h"

typedef struct {
  const mpx_plugin_t *d;
  mpx_plugin_ctx_t *ctx;
  void *state;
  const char *stage;
  uint32_t retries;          /* its stage's */
  uint32_t in, out, retried; /* this batch */
} link_t;

/* The watchdog's view of the running batch: a call of a plugin starts,
 * beat moves; a beat that stays for the timeout while busy is a hang. */
static struct {
  double timeout;          /* 0: no watchdog */
  atomic_uint_fast64_t beat;
  atomic_bool busy;
  atomic_uint link, item;  /* where the last call started */
} wd;

static struct {
  link_t l[ENGINE_MAX_CHAIN];
  uint32_t n;
  mpx_wbuf_t out;   /* the current task's outputs */
  uint32_t n_out;
  mpx_wbuf_t fails; /* ... and failures */
  uint32_t n_fail;
  uint32_t item;    /* the batch item being run */
  /* A source at the chain's head, made anew for each part. */
  const char *src_stage, *src_params;
  size_t src_params_len;
  const mpx_codec_t *src_codec;
  void *args;       /* a copy of the initargs, which these point into */
} w;

static void record_fail(uint32_t stage, const void *d, uint32_t l, const char *m,
                        uint32_t attempts) {
  uint32_t ml = (uint32_t)strlen(m);
  if (stage == 0) l = 0; /* the coordinator has the batch item */
  mpx_wbuf_append(&w.fails, &stage, 4);
  mpx_wbuf_append(&w.fails, &w.item, 4);
  mpx_wbuf_append(&w.fails, &attempts, 4);
  mpx_wbuf_append(&w.fails, &l, 4);
  if (l) mpx_wbuf_append(&w.fails, d, l);
  mpx_wbuf_append(&w.fails, &ml, 4);
  mpx_wbuf_append(&w.fails, m, ml);
  w.n_fail++;
}

/* A plugin call of link i starts (for the watchdog). */
static inline void beat(uint32_t i) {
  if (wd.timeout <= 0) return;
  atomic_store_explicit(&wd.link, i, memory_order_relaxed);
  atomic_store_explicit(&wd.item, w.item, memory_order_relaxed);
  atomic_fetch_add_explicit(&wd.beat, 1, memory_order_release);
}

/* Runs one item through chain link i and on down the chain. When link i
 * fails on it, everything the item caused is taken back, as if it had
 * never been emitted (a failure further down stays: the item itself went
 * through link i), and it is tried again, up to the stage's retries
 * unless the plugin said the failure is permanent; then the failure is
 * recorded with its attempts. */
static void run_link(uint32_t i, const void *d, size_t len) {
  /* What a failure takes back: outputs, deeper failures, counts. */
  size_t mark = w.out.len, fmark = w.fails.len;
  uint32_t nmark = w.n_out, nfmark = w.n_fail, io[2 * ENGINE_MAX_CHAIN];
  for (uint32_t k = i; k < w.n; k++) {
    io[2 * k] = w.l[k].in;
    io[2 * k + 1] = w.l[k].out;
  }
  w.l[i].in++;
  for (uint32_t attempt = 1;; attempt++) {
    beat(i);
    if (mpx__ctx_call_process(w.l[i].ctx, w.l[i].state, d, len) == 0) return;
    w.out.len = mark;
    w.n_out = nmark;
    w.fails.len = fmark;
    w.n_fail = nfmark;
    for (uint32_t k = i + 1; k < w.n; k++) {
      w.l[k].in = io[2 * k];
      w.l[k].out = io[2 * k + 1];
    }
    w.l[i].out = io[2 * i + 1];
    if (mpx__ctx_permanent(w.l[i].ctx) || attempt > w.l[i].retries) {
      record_fail(i, d, (uint32_t)len, mpx_last_error(), attempt);
      return;
    }
    w.l[i].retried++;
  }
}

/* The watchdog: a plugin call that has not returned (no new call started
 * either) within the timeout ends the worker, saying which item. Checked
 * every timeout/4 (at most 50 ms), so the kill comes within that much
 * after the timeout. */
static void *watchdog_main(void *arg) {
  (void)arg;
  double iv = wd.timeout / 4 < 0.05 ? wd.timeout / 4 : 0.05, since = mpx__now();
  uint_fast64_t seen = 0;
  struct timespec ts = {0, (long)(iv * 1e9) + 1000};
  for (;;) {
    nanosleep(&ts, NULL);
    uint_fast64_t b = atomic_load_explicit(&wd.beat, memory_order_acquire);
    double t = mpx__now();
    if (!atomic_load(&wd.busy) || b != seen) {
      seen = b;
      since = t;
      continue;
    }
    if (t - since < wd.timeout) continue;
    char line[512];
    unsigned k = atomic_load(&wd.link);
    int n = snprintf(line, sizeof line, "stage '%s': an item ran past its timeout (%g s): "
                     ENGINE_TIMEOUT_MARK "%u)\n", k < w.n ? w.l[k].stage : "?", wd.timeout,
                     (unsigned)atomic_load(&wd.item));
    if (n > 0 && write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1) < 0) {
    }
    _exit(ENGINE_TIMEOUT_EXIT);
  }
  return NULL;
}

/* Link i's emit: into link i+1 (a fused chain reads port 0 only: a stage
 * whose other ports are read is not fused), or, tagged, into the answer
 * after the last. */
static int emit_link(void *arg, mpx__tag_t tag, const void *data, size_t len) {
  uint32_t i = (uint32_t)(uintptr_t)arg;
  if (len > UINT32_MAX - ENGINE_ITEM_HDR) return MPX_E2BIG;
  w.l[i].out++;
  if (i + 1 < w.n) {
    if (tag.port == 0) run_link(i + 1, data, len);
    return 0;
  }
  uint32_t h[3] = {(uint32_t)len,
                   (tag.port & ENGINE_TAG_PORT) | (tag.keyed ? ENGINE_TAG_KEYED : 0) |
                       (tag.direct ? ENGINE_TAG_DIRECT : 0),
                   tag.hash};
  int rc = mpx_wbuf_append(&w.out, h, sizeof h);
  if (rc == 0 && len) rc = mpx_wbuf_append(&w.out, data, len);
  if (rc == 0) w.n_out++;
  return rc;
}

/* Link i's emits go down the chain; the tail of a partitioned reduce's
 * chain knows its partitions. Then its init. */
static int link_init(uint32_t i, uint32_t partitions) {
  mpx__ctx_set_emit_to(w.l[i].ctx, emit_link, (void *)(uintptr_t)i);
  mpx__ctx_set_partitions(w.l[i].ctx, partitions);
  return mpx__ctx_call_init(w.l[i].ctx, &w.l[i].state);
}

/* ---- a partition owner (engine_proto.h) ---- */

static struct {
  int fd;        /* the partition's log; -1: not an owner */
  uint64_t pos;  /* what is folded into the state */
  bool final;    /* flushed as the final output: nothing more comes */
  mpx_wbuf_t buf;
} pw = {.fd = -1};

/* The log's path ends the arguments. */
static int open_log(const char *p, const char *end) {
  const char *nul = memchr(p, '\0', (size_t)(end - p));
  if (nul == NULL || nul == p) return -1;
  pw.fd = open(p, O_RDONLY | O_CLOEXEC);
  if (pw.fd < 0) fprintf(stderr, "pipeline worker: cannot open the partition log %s: %s\n", p,
                         strerror(errno));
  mpx_wbuf_init(&pw.buf);
  return pw.fd < 0 ? -1 : 0;
}

/* Reads [pw.pos, pw.pos + n) of the log into pw.buf. */
static int read_log(size_t n) {
  pw.buf.len = 0;
  if (mpx_wbuf_reserve(&pw.buf, n) != 0) return MPX_ENOMEM;
  size_t got = 0;
  while (got < n) {
    ssize_t r = pread(pw.fd, pw.buf.data + got, n - got, (off_t)(pw.pos + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return mpx__err(r < 0 ? -errno : MPX_EPROTO, "partition log: short read");
    got += (size_t)r;
  }
  pw.buf.len = n;
  return 0;
}

/* Folds the log from where the state is up to `end`, a chunk at a time
 * (a record is never split: a chunk grows to hold a big one). */
static int catch_up(uint64_t end) {
  size_t chunk = (size_t)8 << 20;
  while (pw.pos < end) {
    size_t n = end - pw.pos < chunk ? (size_t)(end - pw.pos) : chunk;
    int rc = read_log(n);
    if (rc != 0) return rc;
    mpx__rd_t r = mpx__rd_make(pw.buf.data, pw.buf.len);
    size_t used = 0;
    const void *d;
    uint32_t l;
    while (mpx__rd_bytes32(&r, &d, &l) == 0) {
      beat(0);
      if ((rc = mpx__ctx_call_fold(w.l[0].ctx, w.l[0].state, d, l)) != 0) return rc;
      used = (size_t)(r.p - (const char *)pw.buf.data);
    }
    if (used == 0) {
      uint32_t need;
      if (n < 4 || pw.pos + 4 > end) return mpx__err(MPX_EPROTO, "partition log: torn record");
      memcpy(&need, pw.buf.data, 4);
      if (pw.pos + 4 + need > end) return mpx__err(MPX_EPROTO, "partition log: torn record");
      chunk = (size_t)need + 4;
      continue;
    }
    pw.pos += used;
  }
  return 0;
}

/* A FOLD or FINAL task: the answer has the final outputs, or nothing. */
static int run_fold(mpx_task_t *t, uint32_t what, mpx__rd_t *r) {
  uint32_t zero;
  uint64_t end;
  if (pw.fd < 0 || mpx__rd_u32(r, &zero) != 0 || mpx__rd_u64(r, &end) != 0)
    return mpx_task_fail(t, "malformed partition task");
  if (pw.final || end < pw.pos) return 0; /* done before this task came again */
  atomic_store(&wd.busy, true);
  int rc = catch_up(end);
  if (rc == 0 && what == ENGINE_FINAL) {
    mpx__ctx_set_final(w.l[0].ctx, true);
    beat(0);
    rc = mpx__ctx_call_flush(w.l[0].ctx, w.l[0].state);
    pw.final = rc == 0;
  }
  atomic_store(&wd.busy, false);
  return rc == 0 ? 0 : mpx_task_fail(t, "%s", mpx_last_error());
}

int mpx_pipeline_worker_init(const void *args0, size_t len) {
  engine_wargs_t a;
  if (args0 == NULL || len < sizeof a) return 100;
  /* Kept: a source's stage name and params are needed at every part. */
  void *args = malloc(len);
  if (args == NULL) return 100;
  memcpy(args, args0, len);
  w.args = args;
  memcpy(&a, args, sizeof a);
  if (a.version != ENGINE_WARGS_VERSION || a.n_stages == 0 || a.n_stages > ENGINE_MAX_CHAIN)
    return 101;
  bool part = a.mode == ENGINE_MODE_PARTITION;
  if (part && (a.n_stages != 1 || a.part_index >= a.partitions)) return 101;
  const char *p = (const char *)args + sizeof a, *end = (const char *)args + len;
  mpx_wbuf_init(&w.out);
  mpx_wbuf_init(&w.fails);
  for (uint32_t i = 0; i < a.n_stages; i++) {
    engine_wstage_t s;
    if (end - p < (ptrdiff_t)sizeof s) return 101;
    memcpy(&s, p, sizeof s);
    p += sizeof s;
    if ((uint64_t)s.path_len + s.stage_len + s.codec_len + s.params_len > (uint64_t)(end - p))
      return 101;
    const char *path = p, *stage = path + s.path_len, *codec_name = stage + s.stage_len;
    const void *params = codec_name + s.codec_len;
    p = (const char *)params + s.params_len;
    mpx__plugin_t *pl;
    const mpx_codec_t *codec = NULL;
    if (mpx__plugin_load(&pl, path) != 0) {
      fprintf(stderr, "%s\n", mpx_last_error());
      return 102;
    }
    w.l[i].d = mpx__plugin_desc(pl);
    w.l[i].stage = stage;
    w.l[i].retries = s.retries;
    if (codec_name[0] && mpx_codec_load(&codec, codec_name) != 0) {
      fprintf(stderr, "%s\n", mpx_last_error());
      return 103;
    }
    if (w.l[i].d->kind == MPX_PLUGIN_SOURCE) {
      if (i != 0) return 101;
      w.src_stage = stage;
      w.src_params = params;
      w.src_params_len = s.params_len;
      w.src_codec = codec;
      w.n = 1;
      continue; /* no timeout: a part's length is not known */
    }
    /* Fused stages share their timeout; none applies to a part. */
    if (s.timeout > 0 && w.src_stage == NULL) wd.timeout = s.timeout;
    if (mpx__ctx_new_from_encoded(&w.l[i].ctx, w.l[i].d, stage, params, s.params_len,
                                  part ? a.part_index : mpx_pool_worker_index(),
                                  part ? a.partitions : mpx_pool_worker_count(),
                                  codec, NULL, NULL) != 0 ||
        link_init(i, i + 1 == a.n_stages ? a.partitions : 0) != 0) {
      fprintf(stderr, "%s\n", mpx_last_error());
      return 104;
    }
    w.n = i + 1;
  }
  if (part && open_log(p, end) != 0) return 106;
  pthread_t th;
  pthread_attr_t at;
  pthread_attr_init(&at);
  pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
  int rc = wd.timeout > 0 && pthread_create(&th, &at, watchdog_main, NULL) != 0;
  pthread_attr_destroy(&at);
  if (rc) {
    fprintf(stderr, "pipeline worker: cannot start the timeout watchdog\n");
    return 105;
  }
  return 0;
}

/* Part i of `parts` of the source at the chain's head, to its end. */
static int run_part(mpx_task_t *t, uint32_t i, uint32_t parts) {
  link_t *l = &w.l[0];
  int rc = mpx__ctx_new_from_encoded(&l->ctx, l->d, w.src_stage, w.src_params,
                                     w.src_params_len, i, parts, w.src_codec, NULL, NULL);
  if (rc == 0 && (rc = link_init(0, 0)) == 0) {
    int g;
    while ((g = mpx__ctx_call_generate(l->ctx, l->state)) > 0) {
    }
    if (g < 0) rc = g;
    mpx__ctx_call_fini(l->ctx, l->state);
  }
  if (rc != 0) rc = mpx_task_fail(t, "%s", mpx_last_error());
  mpx__ctx_free(l->ctx);
  l->ctx = NULL;
  l->state = NULL;
  return rc;
}

int mpx_pipeline_task(mpx_task_t *t, const void *in, size_t len) {
  mpx__rd_t r = mpx__rd_make(in, len);
  uint32_t n;
  if (w.n == 0) return mpx_task_fail(t, "pipeline worker not initialised");
  if (mpx__rd_u32(&r, &n) != 0) return mpx_task_fail(t, "malformed batch");
  w.out.len = 0;
  w.n_out = 0;
  w.fails.len = 0;
  w.n_fail = 0;
  for (uint32_t i = 0; i < w.n; i++) w.l[i].in = w.l[i].out = w.l[i].retried = 0;
  /* The header, filled in at the end. */
  size_t hdr_len = 12 + 12 * (size_t)w.n;
  if (mpx_wbuf_reserve(&w.out, hdr_len) != 0) return MPX_ENOMEM;
  w.out.len = hdr_len;
  if (n == ENGINE_FOLD || n == ENGINE_FINAL) {
    int rc = run_fold(t, n, &r);
    if (rc != 0) return rc;
    n = 0; /* then the answer, as for an empty batch */
  } else if (w.l[0].d->kind == MPX_PLUGIN_SOURCE) {
    uint32_t i, parts;
    int rc;
    if (n != ENGINE_PART || mpx__rd_u32(&r, &i) != 0 || mpx__rd_u32(&r, &parts) != 0 || i >= parts)
      return mpx_task_fail(t, "malformed part");
    w.item = 0;
    if ((rc = run_part(t, i, parts)) != 0) return rc;
  }
  bool source = w.l[0].d->kind == MPX_PLUGIN_SOURCE;
  if (!source) atomic_store(&wd.busy, true);
  for (uint32_t i = 0; !source && i < n; i++) {
    const void *d;
    uint32_t l;
    if (mpx__rd_bytes32(&r, &d, &l) != 0) {
      atomic_store(&wd.busy, false);
      return mpx_task_fail(t, "malformed batch item %u", i);
    }
    w.item = i;
    run_link(0, d, l);
  }
  /* A reduce at the chain's end answers with the batch's partial. */
  link_t *last = &w.l[w.n - 1];
  w.item = n; /* past the items: the flush is the batch's */
  beat(w.n - 1);
  bool batch = pw.fd < 0;
  int frc = batch && last->d->kind == MPX_PLUGIN_REDUCE ? mpx__ctx_call_flush(last->ctx, last->state) : 0;
  atomic_store(&wd.busy, false);
  if (frc != 0) return mpx_task_fail(t, "%s", mpx_last_error());
  uint32_t *h = (uint32_t *)w.out.data, hv[3] = {w.n_out, w.n_fail, w.n};
  memcpy(h, hv, sizeof hv);
  for (uint32_t i = 0; i < w.n; i++) {
    uint32_t io[3] = {w.l[i].in, w.l[i].out, w.l[i].retried};
    memcpy((uint8_t *)w.out.data + 12 + 12 * (size_t)i, io, sizeof io);
  }
  if (w.fails.len && mpx_wbuf_append(&w.out, w.fails.data, w.fails.len) != 0)
    return MPX_ENOMEM;
  return mpx_task_result(t, w.out.data, w.out.len);
}
