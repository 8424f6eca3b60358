/* A pool's requests: the arena blocks they hold, the table of task
 * functions they name, handing one to the loop, its outcome.
 *
 * Lifetimes: a request is referenced by its caller and, while it has
 * tasks not yet answered or dropped, by the loop; both counts live under
 * `mu` and the last one frees it (mpx__pool_req_unref).
 *
 * Large items (pool_proto.h) go through the pool's arena. An argument
 * block is the coordinator's: apply's is made by apply_async and imap's
 * by imap_fill (in the caller's thread) and belong to the request or the
 * imap slot; map's and map_fixed's are made when the job is sent and
 * belong to the job (job_t.lent) until it ends, answered or not, so a
 * retry resends the same blocks. A result block arrives owned by its
 * worker; the loop checks and takes it, then it is copied out and freed,
 * or kept as the result (apply, imap) and freed with it. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

/* ---- requests ------------------------------------------------------------------ */

void mpx__pool_slot_clear(mpx_pool_t *p, islot_t *s) {
  if (s->in_ref) mpx__pool_block_release(p, s->in_ref);
  else free(s->in);
  if (s->out_ref) mpx__pool_block_release(p, s->out_ref);
  else free(s->out);
  free(s->err);
  *s = (islot_t){0};
}

void mpx__pool_req_free(req_t *r) {
  mpx_pool_t *p = r->p;
  if (r->aref) mpx__pool_block_release(p, r->aref);
  else free(r->acopy);
  free(r->err);
  if (r->res_ref) mpx__pool_block_release(p, r->res_ref);
  else free(r->res);
  if (r->ring) {
    for (size_t i = 0; i < r->W; i++) mpx__pool_slot_clear(p, &r->ring[i]);
    free(r->ring);
  }
  free(r->fifo);
  free(r);
}

/* Finds or adds the function; under mu. */
static int fn_id_of(mpx_pool_t *p, mpx_func_t f, uint32_t *id) {
  if ((f.fn == NULL) == (f.spec == NULL))
    return mpx__err(MPX_EINVAL, "pool: name a task by a pointer or a spec");
  for (size_t i = 0; i < p->nfns; i++) {
    if (f.fn ? p->fns[i].f.fn == f.fn
             : (p->fns[i].f.spec && strcmp(p->fns[i].f.spec, f.spec) == 0)) {
      *id = (uint32_t)i;
      return 0;
    }
  }
  fnent_t e = {0};
  mpx_start_method_t m = p->o.start_method;
  int rc = 0;
  if (f.spec) {
    e.kind = PM_FN_SPEC;
    e.str = strdup(f.spec);
  } else if (m == MPX_START_FORK) {
    e.kind = PM_FN_PTR;
    e.addr = (uint64_t)(uintptr_t)f.fn;
    e.str = strdup("");
  } else if (m == MPX_START_FORKSERVER) {
    mpx__target_loc_t loc;
    if ((rc = mpx__target_locate((mpx_target_fn)(void *)f.fn, &loc)) != 0)
      return rc;
    e.kind = PM_FN_LOC;
    e.addr = loc.offset;
    e.str = (char *)loc.object;
  } else {
    if ((rc = mpx__target_spec_of((mpx_target_fn)(void *)f.fn, &e.str)) != 0)
      return rc;
    e.kind = PM_FN_SPEC;
  }
  if (e.str == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  e.f.fn = f.fn;
  e.f.spec = f.spec ? e.str : NULL;
  fnent_t *n = realloc(p->fns, (p->nfns + 1) * sizeof *n);
  if (n == NULL) {
    free(e.str);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  p->fns = n;
  p->fns[p->nfns] = e;
  *id = (uint32_t)p->nfns++;
  return 0;
}

/* Hands a request to the loop. On success the loop holds a reference. */
int mpx__pool_submit(mpx_pool_t *p, req_t *r, mpx_func_t f) {
  int rc = 0;
  pthread_mutex_lock(&p->mu);
  if (p->broken)
    rc = mpx__err(MPX_EBROKEN, "%s", p->why);
  else if (p->terminated)
    rc = mpx__err(MPX_ECANCELED, "pool: terminated");
  else if (p->closed)
    rc = mpx__err(MPX_ECLOSED, "pool: closed");
  else
    rc = fn_id_of(p, f, &r->fn_id);
  if (rc == 0) {
    r->refs++;
    r->listed = true;
    r->live = r->n;
    p->live_reqs++;
    if (p->incoming_tail) p->incoming_tail->next = r;
    else p->incoming = r;
    p->incoming_tail = r;
  }
  pthread_mutex_unlock(&p->mu);
  if (rc == 0) mpx__pool_wake(p);
  return rc;
}

/* The outcome of a finished call (under mu or after it completed). */
int mpx__pool_req_result(req_t *r) {
  if (r->call_rc != 0) {
    mpx_pool_t *p = r->p;
    if (r->call_rc == MPX_EBROKEN) return mpx__err(MPX_EBROKEN, "%s", p->why);
    return mpx__err(r->call_rc, "pool: %s",
                    r->call_rc == MPX_ECANCELED ? "terminated" : "call failed");
  }
  if (r->rc != 0) return mpx__err(r->rc, "%s", r->err ? r->err : "task failed");
  return 0;
}
