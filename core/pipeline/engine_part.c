/* The pipeline engine: keyed partitions (`partition_by: key`).
 *
 * A partitioned reduce runs in two steps. Its chain's workers fold each
 * batch of inputs into a fresh state, as any reduce's do, and flush it as
 * keyed partials (one per key, or one per partition: mpx_emit_partition).
 * Each partial goes to one partition, mpx_key_hash(key) % partitions,
 * whose owner, a worker of its own, folds it into a state that lives
 * there until the end of the stream, when it emits its share of the
 * stage's output. The coordinator never decodes a partial: it appends it
 * to the partition's log and tells the owner how far to fold.
 *
 * The log is what makes a partition survive its owner: a file (unlinked
 * from the start, so nothing is left behind whatever happens) that only
 * grows, each partial a record, and an owner's progress is an offset in
 * it. A task says "fold up to offset X"; an owner already past X does
 * nothing, and a new owner (the old one was killed) starts at 0 and folds
 * the whole log again: no partial is lost or folded twice into the state
 * that emits (engine_proto.h). Its pages are the page cache's, not the
 * coordinator's memory. The same records are what the many-machines
 * engine would carry between hosts. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine_int.h"
#include "engine_proto.h"
#include "internal.h"
#include "plugin_host.h"

/* A log write once this much waits for a partition. */
#define PART_WRITE_BYTES ((size_t)256 << 10)

/* The partitions of each partitioned stage: checked, counted, and made
 * as hidden stages after the pipeline's (mpx__eng_stage). */
int mpx__eng_plan_partitions(eng_t *e) {
  size_t total = 0;
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    const mpx__cfg_stage_t *c = s->cfg;
    if (!c->partitioned) continue;
    const char *why = NULL;
    if (s->d->kind != MPX_PLUGIN_REDUCE)
      why = "only a reduce can be partitioned (its partials go to the partitions by key)";
    else if (!s->folds)
      why = "its plugin has no fold (ABI 1.2): each partition folds its keys' partials";
    if (why)
      return mpx__cfg_error_at(e->cfg, c->partition_at.line, c->partition_at.col,
                               "stage '%s' (plugin '%s'): partition_by: %s", c->name,
                               s->d->name, why);
    s->nparts = c->partitions ? c->partitions : s->workers;
    total += s->nparts;
  }
  e->n_all = e->n + total;
  if (total == 0) return 0;
  if ((e->pst = calloc(total, sizeof *e->pst)) == NULL) return mpx__err(MPX_ENOMEM, "out of memory");
  size_t next = 0;
  for (size_t i = 0; i < e->n; i++) {
    stage_t *s = &e->st[i];
    if (s->nparts == 0) continue;
    s->parts_st = &e->pst[next];
    for (unsigned q = 0; q < s->nparts; q++, next++) {
      stage_t *p = &e->pst[next];
      p->e = e;
      p->idx = e->n + next;
      p->cfg = s->cfg;
      p->d = s->d;
      p->path = s->path;
      p->codec = s->codec;
      p->workers = 1;
      p->batch = 1;
      p->head = p->tail = p;
      p->part_of = s;
      p->part_index = q;
      p->log_fd = -1;
      pthread_mutex_init(&p->mu, NULL);
      mpx_wbuf_init(&p->log_buf);
      snprintf(p->part_name, sizeof p->part_name, "%s#%u", s->cfg->name, q);
    }
  }
  return 0;
}

/* An unnamed file for the log, in $TMPDIR (or /tmp): gone when the last
 * descriptor closes, the coordinator's and the owner's. */
static int make_log(void) {
  const char *dir = getenv("TMPDIR");
  if (dir == NULL || dir[0] == '\0') dir = "/tmp";
  int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
  if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)) return fd;
  char path[4096];
  snprintf(path, sizeof path, "%s/mpx-part-XXXXXX", dir);
  if ((fd = mkostemp(path, O_CLOEXEC)) >= 0) unlink(path);
  return fd;
}

int mpx__eng_part_start(eng_t *e, stage_t *p) {
  (void)e;
  if ((p->log_fd = make_log()) < 0)
    return mpx__err_errno("stage '%s': cannot make a partition log in $TMPDIR", p->cfg->name);
  char path[64];
  /* The owner opens the log through the coordinator's descriptor. */
  snprintf(path, sizeof path, "/proc/%d/fd/%d", (int)getpid(), p->log_fd);
  mpx_wbuf_t args;
  mpx_wbuf_init(&args);
  engine_wargs_t a = {.version = ENGINE_WARGS_VERSION, .n_stages = 1,
                      .mode = ENGINE_MODE_PARTITION, .partitions = p->part_of->nparts,
                      .part_index = p->part_index};
  int rc = mpx_wbuf_append(&args, &a, sizeof a);
  if (rc == 0) rc = mpx__eng_wargs_stage(p->part_of, &args);
  if (rc == 0) rc = mpx_wbuf_append(&args, path, strlen(path) + 1);
  if (rc == 0) {
    mpx_pool_opts_t o;
    mpx__eng_pool_opts(p, &o);
    o.initargs = args.data;
    o.initargs_len = args.len;
    o.name = p->part_name;
    /* An owner that died is replaced and its task run again: the log
     * rebuilds its state, so running again is always safe. */
    o.retries = 100;
    rc = mpx_pool_new(&p->pool, &o);
  }
  mpx_wbuf_free(&args);
  return rc;
}

void mpx__eng_part_free(stage_t *p) {
  if (p->log_fd >= 0) close(p->log_fd);
  p->log_fd = -1;
  mpx_wbuf_free(&p->log_buf);
  pthread_mutex_destroy(&p->mu);
}

/* A task for partition p's owner: fold (or, final, also flush) the log
 * up to where it ends now. */
static int part_task(stage_t *p, uint32_t what) {
  job_t *j = calloc(1, sizeof *j);
  uint32_t hdr[2] = {what, 0};
  uint64_t end = p->log_end;
  if (j == NULL || mpx_wbuf_append(&j->batch, hdr, sizeof hdr) != 0 ||
      mpx_wbuf_append(&j->batch, &end, sizeof end) != 0) {
    if (j) mpx_wbuf_free(&j->batch);
    free(j);
    mpx__eng_set_fatal(p->e, MPX_ENOMEM, "out of memory");
    return MPX_ENOMEM;
  }
  j->s = p;
  j->n = 1;
  j->seq = p->next_seq++;
  mpx__eng_submit(p, j, false);
  return 0;
}

void mpx__eng_part_flush(stage_t *p) {
  if (p->log_buf.len == 0) return;
  size_t done = 0;
  while (done < p->log_buf.len) {
    ssize_t w = pwrite(p->log_fd, p->log_buf.data + done, p->log_buf.len - done,
                       (off_t)(p->log_end + done));
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      mpx__eng_set_fatal(p->e, w < 0 ? -errno : MPX_EIO, "stage '%s': writing partition %u's "
                         "log: %s", p->cfg->name, p->part_index, strerror(w < 0 ? errno : EIO));
      p->log_buf.len = 0;
      return;
    }
    done += (size_t)w;
  }
  p->log_end += done;
  p->log_buf.len = 0;
  part_task(p, ENGINE_FOLD);
}

void mpx__eng_part_route(stage_t *t, const uint8_t *items, size_t len, uint32_t n) {
  mpx__rd_t r = mpx__rd_make(items, len);
  for (uint32_t i = 0; i < n; i++) {
    const void *d;
    uint32_t l, tag, hash;
    if (engine_rd_item(&r, &tag, &hash, &d, &l) != 0) break;
    if (!(tag & ENGINE_TAG_KEYED)) hash = mpx_key_hash(d, l);
    uint32_t q = tag & ENGINE_TAG_DIRECT ? hash : hash % t->nparts;
    if (q >= t->nparts) {
      mpx__eng_set_fatal(t->e, MPX_EPROTO, "stage '%s': a partial for partition %u of %u",
                         t->cfg->name, q, t->nparts);
      return;
    }
    stage_t *p = &t->parts_st[q];
    if (mpx_wbuf_append(&p->log_buf, &l, 4) != 0 || mpx_wbuf_append(&p->log_buf, d, l) != 0) {
      mpx__eng_set_fatal(t->e, MPX_ENOMEM, "out of memory");
      return;
    }
  }
  for (unsigned q = 0; q < t->nparts; q++)
    if (t->parts_st[q].log_buf.len >= PART_WRITE_BYTES) mpx__eng_part_flush(&t->parts_st[q]);
}

static bool parts_idle(eng_t *e, size_t k) {
  stage_t *t = &e->st[k];
  for (unsigned q = 0; q < t->nparts; q++)
    if (t->parts_st[q].inflight) return false;
  return true;
}

int mpx__eng_part_finish(stage_t *t) {
  pthread_mutex_lock(&t->mu);
  for (unsigned q = 0; q < t->nparts; q++) mpx__eng_part_flush(&t->parts_st[q]);
  for (unsigned q = 0; q < t->nparts; q++) part_task(&t->parts_st[q], ENGINE_FINAL);
  pthread_mutex_unlock(&t->mu);
  return mpx__eng_wait_for(t->e, parts_idle, t->idx);
}
