/* imap and imap_unordered: the caller's iterator feeds a ring of `window`
 * slots (imap_fill, in the caller's thread); the loop cuts jobs from it
 * as it fills and delivers each result into its slot; the caller takes
 * them in order, or as they complete (a fifo of indices). A slot's
 * result stays valid until the next call. */
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

struct mpx_imap_s {
  mpx_pool_t *p;
  req_t *r;
  mpx_iter_fn next;
  void *arg;
  bool ordered, exhausted;
  bool auto_window; /* the default window: 2 x DEPTH per worker, up to
                       2 x DEPTH_SHORT per worker while the jobs are short */
  int iter_rc;
  size_t returned; /* results handed out */
  size_t next_out; /* ordered: the next index to hand out */
  size_t cur;      /* the slot handed out last (freed at the next call) */
  bool have_cur;
};

int mpx_pool_imap(mpx_pool_t *p, mpx_func_t f, mpx_iter_fn next, void *arg,
                  bool ordered, size_t window, mpx_imap_t **out) {
  if (p == NULL || next == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  mpx_imap_t *it = calloc(1, sizeof *it);
  req_t *r = mpx__pool_req_new(p, R_IMAP);
  bool auto_window = window == 0;
  if (window == 0) window = 2 * (size_t)p->n * DEPTH_SHORT;
  if (it == NULL || r == NULL ||
      (r->ring = calloc(window, sizeof *r->ring)) == NULL ||
      (!ordered && (r->fifo = calloc(window, sizeof *r->fifo)) == NULL)) {
    free(it);
    if (r) mpx__pool_req_free(r);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  r->W = window;
  r->chunk = (auto_window ? 2 * (size_t)p->n * DEPTH : window) / (2 * (size_t)p->n);
  if (r->chunk < 1) r->chunk = 1;
  if (p->o.chunksize) r->chunk = p->o.chunksize;
  int rc = mpx__pool_submit(p, r, f);
  if (rc != 0) {
    mpx__pool_req_free(r);
    free(it);
    return rc;
  }
  it->p = p;
  it->r = r;
  it->next = next;
  it->arg = arg;
  it->ordered = ordered;
  it->auto_window = auto_window;
  *out = it;
  return 0;
}

/* Pull inputs until the window is full. */
static void imap_fill(mpx_imap_t *it) {
  req_t *r = it->r;
  mpx_pool_t *p = it->p;
  size_t n = r->n, added = 0, window = r->W;
  if (it->auto_window &&
      !atomic_load_explicit(&p->short_jobs, memory_order_relaxed))
    window = 2 * (size_t)p->n * DEPTH;
  while (!it->exhausted && n - it->returned < window && !r->ring[n % r->W].busy) {
    const void *d;
    size_t l;
    int rc = it->next(it->arg, &d, &l);
    if (rc <= 0) {
      it->exhausted = true;
      it->iter_rc = rc;
      break;
    }
    islot_t *s = &r->ring[n % r->W];
    mpx__pool_slot_clear(p, s);
    /* A large argument goes straight into an arena block. */
    mpx_ref_t ref = l > MPX_POOL_ARENA_THRESHOLD ? mpx__pool_block_copy(p, d, l) : 0;
    void *c = ref ? mpx_arena_ptr(p->arena, ref) : l ? malloc(l) : NULL;
    if (l && c == NULL) {
      it->exhausted = true;
      it->iter_rc = mpx__err(l > PM_ITEM_LEN ? MPX_E2BIG : MPX_ENOMEM,
                             "pool: no room for an argument of %zu bytes", l);
      break;
    }
    if (l && !ref) memcpy(c, d, l);
    *s = (islot_t){.in = c, .in_len = l, .in_ref = ref, .busy = true};
    n++;
    added++;
  }
  if (added) {
    pthread_mutex_lock(&p->mu);
    r->n = n;
    r->live += added;
    pthread_mutex_unlock(&p->mu);
    mpx__pool_wake(p);
  }
}

static bool imap_ready(void *arg) {
  mpx_imap_t *it = arg;
  req_t *r = it->r;
  if (r->call_rc != 0) return true;
  if (it->ordered)
    return it->next_out < r->n && r->ring[it->next_out % r->W].done;
  return r->fifo_len > 0 || it->returned == r->n;
}

int mpx_imap_next(mpx_imap_t *it, const void **data, size_t *len,
                  size_t *index, double timeout) {
  if (it == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = it->r;
  mpx_pool_t *p = it->p;
  *data = NULL;
  *len = 0;
  if (it->have_cur) {
    mpx__pool_slot_clear(p, &r->ring[it->cur % r->W]);
    it->have_cur = false;
  }
  imap_fill(it);
  pthread_mutex_lock(&p->mu);
  bool end = it->returned == r->n && it->exhausted;
  pthread_mutex_unlock(&p->mu);
  if (end) return it->iter_rc < 0 ? it->iter_rc : 0;
  int rc = mpx__pool_wait(p, imap_ready, it, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&p->mu);
  if (r->call_rc != 0) {
    rc = mpx__pool_req_result(r);
    pthread_mutex_unlock(&p->mu);
    return rc;
  }
  size_t i;
  if (it->ordered) {
    i = it->next_out++;
  } else {
    i = r->fifo[r->fifo_head];
    r->fifo_head = (r->fifo_head + 1) % r->W;
    r->fifo_len--;
  }
  islot_t *s = &r->ring[i % r->W];
  it->returned++;
  it->cur = i;
  it->have_cur = true;
  if (index) *index = i;
  if (s->rc != 0) {
    rc = mpx__err(s->rc, "%s", s->err ? s->err : "task failed");
  } else {
    *data = s->out;
    *len = s->out_len;
    rc = 1;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void mpx_imap_free(mpx_imap_t *it) {
  if (it == NULL) return;
  mpx_pool_t *p = it->p;
  req_t *r = it->r;
  mpx__pool_cancel(p, r);
  pthread_mutex_lock(&p->mu);
  /* Every task has ended and no more will be cut (cancelled): no job
   * reads the ring, so its blocks (the last result handed out among them)
   * go back to the arena now, not when the loop drops its reference. */
  if (r->live == 0)
    for (size_t i = 0; i < r->W; i++) mpx__pool_slot_clear(p, &r->ring[i]);
  mpx__pool_req_unref(r);
  pthread_mutex_unlock(&p->mu);
  free(it);
}
