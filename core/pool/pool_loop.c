/* The pool's loop at work: requests cut into jobs (one or more tasks sent
 * in one message), up to a depth of jobs in flight per worker, each
 * answer delivered into its request under `mu`, waking the callers.
 *
 * A job's answer is one frame, so its results arrive all or none. An
 * answer's result block must be live and owned by the worker that sent
 * it: then the coordinator takes it (pool_proto.h). What happens when a
 * worker dies is in pool_children.c.
 *
 * This file holds the whole per-answer path (on_msg, on_answer, deliver,
 * pump, send_job, sweep) so that it stays within one translation unit. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

/* ---- jobs -------------------------------------------------------------------------- */

/* Item i's argument, and its arena block when it has one already. */
static void item_in(req_t *r, size_t i, const void **d, size_t *l,
                    mpx_ref_t *ref) {
  *ref = 0;
  switch (r->kind) {
    case R_APPLY:
      *d = r->acopy;
      *l = r->alen;
      *ref = r->aref;
      break;
    case R_MAP:
      *d = r->in[i].data;
      *l = r->in[i].len;
      break;
    case R_FIXED:
      *d = r->fin + i * r->in_size;
      *l = r->in_size;
      break;
    default: {
      islot_t *s = &r->ring[i % r->W];
      *d = s->in;
      *l = s->in_len;
      *ref = s->in_ref;
    }
  }
}

/* Under mu: one task's outcome. d/l: the result or the failure's message;
 * ref: the arena block holding the result (taken by the coordinator), or
 * 0. Returns true when the block was kept as the result (apply, imap: the
 * caller reads it in place), else it is the caller's to free. */
static bool deliver(mpx_pool_t *p, req_t *r, size_t i, int rc,
                    const void *d, size_t l, mpx_ref_t ref) {
  char *err = NULL;
  if (r->complete && r->kind != R_IMAP) return false; /* cancelled, broken */
  if (r->cancelled) return false;
  if (rc == 0 && r->kind == R_FIXED && l > r->out_size) {
    rc = MPX_ETASK;
    char m[128];
    snprintf(m, sizeof m, "result of %zu bytes is longer than out_size %zu", l,
             r->out_size);
    d = m;
    l = strlen(m);
    err = strndup(d, l);
  } else if (rc != 0) {
    err = strndup(d ? d : "", l);
  }
  void *copy = NULL;
  bool keep = ref && rc == 0 && (r->kind == R_APPLY || r->kind == R_IMAP);
  if (keep) {
    copy = (void *)d;
  } else if (rc == 0 && r->kind != R_FIXED && l > 0) {
    copy = malloc(l);
    if (copy == NULL) {
      rc = MPX_ENOMEM;
      err = strdup("out of memory for the result");
    } else {
      memcpy(copy, d, l);
    }
  }
  if (rc == 0) p->st.tasks_done++;
  else p->st.tasks_failed++;
  if (rc != 0 && r->rc == 0) {
    r->rc = rc;
    free(r->err);
    r->err = err ? strdup(err) : NULL;
  }
  switch (r->kind) {
    case R_APPLY:
      r->res = copy;
      r->res_ref = keep ? ref : 0;
      r->res_len = rc == 0 ? l : 0;
      free(err);
      break;
    case R_MAP:
      r->out[i] = (mpx_pool_result_t){copy, rc == 0 ? l : 0, rc, err};
      break;
    case R_FIXED:
      if (rc == 0 && l == 8) memcpy(r->fout + i * r->out_size, d, 8);
      else if (rc == 0 && l) memcpy(r->fout + i * r->out_size, d, l);
      if (r->frc) r->frc[i] = rc;
      free(err);
      break;
    default: {
      islot_t *s = &r->ring[i % r->W];
      s->out = copy;
      s->out_ref = keep ? ref : 0;
      s->out_len = rc == 0 ? l : 0;
      s->rc = rc;
      s->err = err;
      s->done = true;
      if (r->fifo) r->fifo[(r->fifo_head + r->fifo_len++) % r->W] = i;
    }
  }
  r->done++;
  if (r->kind == R_IMAP) pthread_cond_broadcast(&p->cv);
  else if (r->done == r->n) mpx__pool_req_finish(p, r, 0);
  return keep;
}

/* Loop thread: the argument blocks made for the job go back to the arena. */
static void job_unlend(mpx_pool_t *p, job_t *j) {
  if (j->lent == NULL) return;
  for (size_t i = 0; i < j->n; i++) mpx__pool_block_release(p, j->lent[i]);
  free(j->lent);
  j->lent = NULL;
}

/* Loop thread, under mu: a job is over (answered, failed or dropped); its
 * argument blocks go back to the arena. Under the same hold of mu as the
 * delivery of its last result: a caller woken by that delivery finds the
 * arena without them (docs/pool.md: empty once the work is done). */
void mpx__pool_job_end_locked(mpx_pool_t *p, job_t *j) {
  job_unlend(p, j);
  j->r->live -= j->n; /* mpx__pool_sweep() unlists the request once nothing is live */
  free(j);
}

/* Loop thread: callbacks, then the loop's reference goes. */
static void after_complete(mpx_pool_t *p, req_t *r) {
  if (r->kind != R_IMAP && !r->cancelled) {
    mpx_async_cb cb = r->call_rc == 0 && r->rc == 0 ? r->cb : r->ecb;
    if (cb) cb(r, r->arg);
  }
  pthread_mutex_lock(&p->mu);
  r->listed = false;
  mpx__pool_req_unref(r);
  pthread_mutex_unlock(&p->mu);
}

/* Loop thread: unlist requests the loop is done with. */
void mpx__pool_sweep(mpx_pool_t *p) {
  req_t **pp = &p->active, *prev = NULL;
  while (*pp) {
    req_t *r = *pp;
    pthread_mutex_lock(&p->mu);
    bool over = r->live == 0 &&
                (r->cancelled || (r->kind != R_IMAP && r->complete) ||
                 (r->kind == R_IMAP && r->complete));
    pthread_mutex_unlock(&p->mu);
    if (over) {
      *pp = r->next;
      if (p->active_tail == r) p->active_tail = prev;
      after_complete(p, r);
    } else {
      prev = r;
      pp = &r->next;
    }
  }
}

static job_t *next_job(mpx_pool_t *p) {
  job_t *j;
  while ((j = p->retry) != NULL) {
    p->retry = j->next;
    if (p->retry == NULL) p->retry_tail = NULL;
    j->next = NULL;
    /* A call that ended since (cancelled, timed out) may have taken its
     * inputs back: never read them again. */
    pthread_mutex_lock(&p->mu);
    bool over = j->r->cancelled || j->r->complete;
    pthread_mutex_unlock(&p->mu);
    if (!over) return j;
    mpx__pool_job_end(p, j);
  }
  for (req_t *r = p->active; r; r = r->next) {
    size_t n;
    pthread_mutex_lock(&p->mu);
    bool skip = r->cancelled || r->complete;
    n = r->n;
    pthread_mutex_unlock(&p->mu);
    if (skip || r->next_item >= n) continue;
    j = calloc(1, sizeof *j);
    if (j == NULL) return NULL;
    j->r = r;
    j->first = r->next_item;
    j->n = n - r->next_item < r->chunk ? n - r->next_item : r->chunk;
    r->next_item += j->n;
    return j;
  }
  return NULL;
}

static int send_defines(mpx_pool_t *p, worker_t *w, uint32_t upto) {
  while (w->ndefined <= upto) {
    pthread_mutex_lock(&p->mu);
    fnent_t e = p->fns[w->ndefined];
    pthread_mutex_unlock(&p->mu);
    pm_define_t d = {.type = PM_DEFINE, .kind = e.kind, .fn_id = w->ndefined,
                     .addr = e.addr};
    p->sbuf.len = 0;
    mpx_wbuf_append(&p->sbuf, &d, sizeof d);
    mpx_wbuf_append(&p->sbuf, e.str, strlen(e.str) + 1);
    int rc = mpx_link_send(w->link, p->sbuf.data, p->sbuf.len);
    if (rc != 0) return rc;
    w->ndefined++;
  }
  return 0;
}

/* Loop thread: a job of several tasks becomes single tasks at the front of
 * the retry queue, in order, keeping their argument blocks. */
void mpx__pool_split_job(mpx_pool_t *p, job_t *j) {
  for (size_t i = j->n; i-- > 0;) {
    job_t *s = calloc(1, sizeof *s);
    if (s == NULL) break;
    s->r = j->r;
    s->first = j->first + i;
    s->n = 1;
    s->attempts = j->attempts;
    if (j->lent && j->lent[i] && (s->lent = malloc(sizeof *s->lent)) != NULL) {
      s->lent[0] = j->lent[i];
      j->lent[i] = 0;
    }
    mpx__pool_requeue(p, s, true);
  }
  job_unlend(p, j);
  j->n = 0;
  free(j);
}

static void start_clock(mpx_pool_t *p, job_t *j) {
  j->deadline = p->o.task_timeout > 0
                    ? mpx__now() + p->o.task_timeout * (double)j->n
                    : 0;
}

static int send_job(mpx_pool_t *p, worker_t *w, job_t *j) {
  req_t *r = j->r;
  int rc = send_defines(p, w, r->fn_id);
  if (rc != 0) return rc;
  pm_task_t h = {.type = PM_TASK, .fn_id = r->fn_id, .job = ++p->next_job,
                 .n = (uint32_t)j->n};
  j->id = h.job;
  p->sbuf.len = 0;
  mpx_wbuf_append(&p->sbuf, &h, sizeof h);
  uint64_t by_ref = 0, inl = 0;
  for (size_t i = 0; i < j->n; i++) {
    const void *d;
    size_t l;
    mpx_ref_t ref;
    item_in(r, j->first + i, &d, &l, &ref);
    if (ref == 0 && j->lent) ref = j->lent[i]; /* sent before: a retry */
    if (ref == 0 && l > MPX_POOL_ARENA_THRESHOLD && p->arena) {
      /* One copy, into a block the job keeps until it ends. */
      if (j->lent == NULL) j->lent = calloc(j->n, sizeof *j->lent);
      if (j->lent) ref = j->lent[i] = mpx__pool_block_copy(p, d, l);
      if (ref == 0) inl++; /* full: inline */
    }
    pm_ref_t pr = {ref, l};
    uint32_t lw = (uint32_t)l;
    if (ref) {
      d = &pr;
      l = sizeof pr;
      lw = PM_ITEM_REF | (uint32_t)sizeof pr;
      by_ref++;
    } else if (l > PM_ITEM_LEN) {
      return mpx__err(MPX_E2BIG, "an argument of %zu bytes: too large to "
                      "send inline, and the arena has no room for it", l);
    }
    if (p->sbuf.cap - p->sbuf.len < 4 + l &&
        (rc = mpx_wbuf_reserve(&p->sbuf, 4 + l)) != 0)
      return rc;
    uint8_t *o = p->sbuf.data + p->sbuf.len;
    memcpy(o, &lw, 4);
    if (l == 8) memcpy(o + 4, d, 8); /* the common fixed size, inlined */
    else if (l) memcpy(o + 4, d, l);
    p->sbuf.len += 4 + l;
  }
  if ((rc = mpx_link_send(w->link, p->sbuf.data, p->sbuf.len)) != 0) return rc;
  /* In send order: the worker runs them in that order, so the first is
   * the one running (its clock is the one that ticks). */
  j->next = NULL;
  job_t **pp = &w->inflight;
  while (*pp) pp = &(*pp)->next;
  *pp = j;
  if (w->ninflight++ == 0) {
    start_clock(p, j);
    w->run_from = mpx__now();
  }
  pthread_mutex_lock(&p->mu);
  p->st.messages++;
  p->st.arena_args += by_ref;
  p->st.arena_inline += inl;
  pthread_mutex_unlock(&p->mu);
  return 0;
}

void mpx__pool_fail_job(mpx_pool_t *p, job_t *j, int rc, const char *msg) {
  pthread_mutex_lock(&p->mu);
  for (size_t i = 0; i < j->n; i++)
    deliver(p, j->r, j->first + i, rc, msg, strlen(msg), 0);
  mpx__pool_job_end_locked(p, j);
  pthread_mutex_unlock(&p->mu);
}

static bool worker_has_retried(const worker_t *w) {
  for (const job_t *j = w->inflight; j; j = j->next)
    if (j->retried) return true;
  return false;
}

/* Jobs a worker may have in flight. DEPTH keeps the work spread over the
 * workers; but a worker that answers faster than a wake-up crosses CPUs
 * (measured: about 20 µs on a 2-vCPU VM, against 1.3 µs on one CPU) would
 * sit idle, then wait for the loop, after each answer: with short jobs, a
 * deeper queue lets it go on to the next job (and the loop read several
 * answers per wake-up), at a cost in balance of at most
 * DEPTH_SHORT x SHORT_JOB of work queued behind a worker. */
static unsigned depth_of(const worker_t *w) {
  return w->job_time > 0 && w->job_time < SHORT_JOB ? DEPTH_SHORT : DEPTH;
}

/* On an answer: the time since the job began to run (as far as the loop
 * knows: sent to an idle worker, or the previous answer read), smoothed;
 * the next job in flight begins now. */
static void note_job_time(worker_t *w) {
  double now = mpx__now(), t = now - w->run_from;
  if (t < 0) t = 0;
  w->job_time = w->job_time > 0 ? 0.75 * w->job_time + 0.25 * t : t + 1e-9;
  w->run_from = now;
  atomic_store_explicit(&w->p->short_jobs, w->job_time < SHORT_JOB,
                        memory_order_relaxed);
}

void mpx__pool_pump(mpx_pool_t *p) {
  bool progress = true;
  while (progress) {
    progress = false;
    for (unsigned k = 0; k < p->n; k++) {
      worker_t *w = &p->w[(p->rr + k) % p->n];
      if (!w->ready || w->retiring || w->link == NULL || w->ninflight >= depth_of(w))
        continue;
      if (p->o.maxtasksperchild &&
          w->tasks + w->ninflight >= p->o.maxtasksperchild)
        continue; /* counted in jobs: a retiring worker's last ones */
      /* Jobs back from a dead worker (the retry queue, always taken
       * first) run alone on their worker: if it dies again, the job it
       * ran is the one to charge, never a neighbour whose answer was
       * still in the socket. */
      if (w->ninflight > 0 && (p->retry != NULL || worker_has_retried(w)))
        continue;
      job_t *j = next_job(p);
      if (j == NULL) {
        progress = false;
        goto retire;
      }
      int rc = send_job(p, w, j);
      if (rc == MPX_E2BIG) { /* an item that cannot travel: it fails alone */
        if (j->n > 1) mpx__pool_split_job(p, j);
        else mpx__pool_fail_job(p, j, MPX_E2BIG, mpx_last_error());
        progress = true;
        continue;
      }
      if (rc != 0) {
        mpx__pool_requeue(p, j, true);
        mpx__sup_kill(p->sup, w->idx, SIGKILL); /* its link is broken */
        continue;
      }
      progress = true;
    }
    p->rr++;
  }
retire:
  for (unsigned k = 0; k < p->n; k++) {
    worker_t *w = &p->w[k];
    if (w->retiring && !w->quit_sent && w->ninflight == 0 && w->link) {
      pm_hdr_t q = {.type = PM_QUIT};
      mpx_link_send(w->link, &q, sizeof q);
      mpx__sup_retire(p->sup, w->idx);
      w->quit_sent = true;
    }
  }
}

/* ---- answers ------------------------------------------------------------------------ */

/* Loop thread, under mu: items [k, n) of a job whose answer stopped
 * making sense at item k go back to the front of the queue (k > 0: the
 * others were delivered), keeping their argument blocks; the job ends
 * with k items. */
static void job_cut(mpx_pool_t *p, job_t *j, size_t k) {
  job_t *rest = calloc(1, sizeof *rest);
  if (rest && j->lent && (rest->lent = calloc(j->n - k, sizeof *rest->lent)) == NULL) {
    free(rest);
    rest = NULL;
  }
  if (rest == NULL) { /* cannot requeue them: they fail */
    for (size_t i = k; i < j->n; i++)
      deliver(p, j->r, j->first + i, MPX_ENOMEM, "out of memory", 13, 0);
    return;
  }
  rest->r = j->r;
  rest->first = j->first + k;
  rest->n = j->n - k;
  rest->attempts = j->attempts;
  for (size_t i = k; j->lent && i < j->n; i++) {
    rest->lent[i - k] = j->lent[i];
    j->lent[i] = 0;
  }
  mpx__pool_requeue(p, rest, true); /* it carries the n - k tasks still live */
  j->n = k;
}

static void on_answer(mpx_pool_t *p, worker_t *w, const uint8_t *m, size_t len) {
  pm_answer_t a;
  if (len < sizeof a) goto bad;
  memcpy(&a, m, sizeof a);
  job_t **pp = &w->inflight, *j = NULL;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->id == a.job) {
      j = *pp;
      *pp = j->next;
      break;
    }
  if (j == NULL || a.n != j->n) {
    if (j) { /* back where it was: the worker's death handles it */
      j->next = *pp;
      *pp = j;
    }
    goto bad;
  }
  w->ninflight--;
  note_job_time(w);
  if (w->inflight && pp == &w->inflight) start_clock(p, w->inflight);
  /* Items are checked as they are delivered; from the first one that
   * makes no sense on, the job goes back to the queue. A result block
   * must be live and the worker's own: then it is taken. */
  size_t off = sizeof a;
  uint32_t i;
  uint64_t by_ref = 0;
  pthread_mutex_lock(&p->mu);
  for (i = 0; i < a.n; i++) {
    pm_item_t it;
    if (off + sizeof it > len) break;
    memcpy(&it, m + off, sizeof it);
    uint32_t l = it.len & PM_ITEM_LEN;
    if (l > len - off - sizeof it) break;
    const void *d = m + off + sizeof it;
    size_t dl = l;
    mpx_ref_t ref = 0;
    if (it.len & PM_ITEM_REF) {
      pm_ref_t r;
      if (l != sizeof r || p->arena == NULL) break;
      memcpy(&r, d, sizeof r);
      size_t cap = mpx_arena_block_size(p->arena, r.ref);
      if (cap == 0 || cap < r.len || mpx_arena_owner(p->arena, r.ref) != w->pid)
        break;
      mpx_arena_give(p->arena, r.ref, p->self); /* ours from now on */
      ref = r.ref;
      d = mpx_arena_ptr(p->arena, ref);
      dl = (size_t)r.len;
      by_ref++;
    }
    off += sizeof it + l;
    if (!deliver(p, j->r, j->first + i, it.rc, d, dl, ref) && ref)
      mpx__pool_block_release(p, ref);
  }
  p->st.arena_results += by_ref;
  bool malformed = i < a.n;
  if (malformed) job_cut(p, j, i);
  w->tasks += j->n;
  mpx__pool_job_end_locked(p, j); /* before a woken caller can look at the arena */
  pthread_mutex_unlock(&p->mu);
  if (p->o.maxtasksperchild && w->tasks >= p->o.maxtasksperchild)
    w->retiring = true;
  if (!malformed) return;
bad:
  MPX__WARN("%s: worker %u sent a malformed answer; killing it", p->name,
            w->idx);
  mpx__sup_kill(p->sup, w->idx, SIGKILL);
}

void mpx__pool_on_msg(mpx_link_t *l, const void *data, size_t len, void *arg) {
  worker_t *w = arg;
  mpx_pool_t *p = w->p;
  (void)l;
  if (len == 0) return;
  uint8_t type = *(const uint8_t *)data;
  if (type == PM_READY && len >= sizeof(pm_ready_t)) {
    w->ready = true;
  } else if (type == PM_ANSWER) {
    on_answer(p, w, data, len);
  } else {
    MPX__WARN("%s: worker %u sent message type %d; killing it", p->name,
              w->idx, type);
    mpx__sup_kill(p->sup, w->idx, SIGKILL);
  }
  mpx__pool_pump(p);
  mpx__pool_sweep(p);
}
