/* The pool's calls: apply and apply_async (with a loan: an argument
 * written in place in the arena), the async handle, map, map_async and
 * map_fixed. Each builds a request and hands it to the loop
 * (pool_req.c); a blocking call then waits for it (pool_wait.c). */
#include <stdlib.h>
#include <string.h>

#include "pool_internal.h"

static size_t auto_chunk(mpx_pool_t *p, size_t n, size_t item_bytes) {
  if (p->o.chunksize) return p->o.chunksize;
  size_t c = (n + 4 * p->n - 1) / (4 * p->n);
  size_t cap = CHUNK_BYTES / (item_bytes + 4);
  if (cap < 1) cap = 1;
  if (c > cap) c = cap;
  return c ? c : 1;
}

int mpx_pool_apply(mpx_pool_t *p, mpx_func_t f, const void *in, size_t len,
                   void **out, size_t *out_len, double timeout) {
  if (p == NULL || out == NULL || out_len == NULL || (in == NULL && len))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *out = NULL;
  *out_len = 0;
  if (mpx__pool_on_loop_thread(p)) return mpx__pool_deadlock(p);
  mpx_async_t *a;
  int rc = mpx_pool_apply_async(p, f, in, len, NULL, NULL, NULL, &a);
  if (rc != 0) return rc;
  rc = mpx__pool_run_call(p, a, timeout);
  if (rc == 0 && a->res_ref) {
    /* The worker's block: one copy into the caller's buffer. */
    if ((*out = malloc(a->res_len)) == NULL) {
      rc = mpx__err(MPX_ENOMEM, "pool: out of memory for a %zu-byte result",
                    a->res_len);
    } else {
      memcpy(*out, a->res, a->res_len);
      *out_len = a->res_len;
    }
  } else if (rc == 0) {
    *out = a->res;
    *out_len = a->res_len;
    a->res = NULL;
  }
  mpx_async_free(a);
  return rc;
}

/* Submits r with its callbacks; on success *out is its handle, on
 * failure r is freed. */
static int submit_async(mpx_pool_t *p, req_t *r, mpx_func_t f, mpx_async_cb callback,
                        mpx_async_cb error_callback, void *arg, mpx_async_t **out) {
  r->cb = callback;
  r->ecb = error_callback;
  r->arg = arg;
  int rc = mpx__pool_submit(p, r, f);
  if (rc != 0) {
    mpx__pool_req_free(r);
    return rc;
  }
  *out = r;
  return 0;
}

/* Submits r (its argument set) as one apply; frees r on failure. */
static int apply_submit(mpx_pool_t *p, req_t *r, mpx_func_t f, size_t len,
                        mpx_async_cb callback, mpx_async_cb error_callback,
                        void *arg, mpx_async_t **out) {
  r->alen = len;
  r->n = 1;
  r->chunk = 1;
  return submit_async(p, r, f, callback, error_callback, arg, out);
}

int mpx_pool_apply_async(mpx_pool_t *p, mpx_func_t f, const void *in,
                         size_t len, mpx_async_cb callback,
                         mpx_async_cb error_callback, void *arg,
                         mpx_async_t **out) {
  if (p == NULL || out == NULL || (in == NULL && len))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = mpx__pool_req_new(p, R_APPLY);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  /* A large argument: copied once, into a block the worker reads. */
  if (len > MPX_POOL_ARENA_THRESHOLD && (r->aref = mpx__pool_block_copy(p, in, len))) {
    r->acopy = mpx_arena_ptr(p->arena, r->aref);
  } else if (len > PM_ITEM_LEN) {
    free(r);
    return mpx__err(MPX_E2BIG, "pool: an argument of %zu bytes is too large "
                    "to send inline and the arena has no room", len);
  } else if (len) {
    if ((r->acopy = malloc(len)) == NULL) {
      free(r);
      return mpx__err(MPX_ENOMEM, "pool: out of memory");
    }
    memcpy(r->acopy, in, len);
  }
  return apply_submit(p, r, f, len, callback, error_callback, arg, out);
}

int mpx_pool_loan(mpx_pool_t *p, size_t len, mpx_pool_loan_t *loan) {
  if (p == NULL || loan == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *loan = (mpx_pool_loan_t){0};
  if (p->arena == NULL)
    return mpx__err(MPX_ENOTSUP, "pool: no arena (opts.arena_size is off)");
  if (mpx_arena_alloc(p->arena, len ? len : 1, 0, &loan->ref) != 0)
    return mpx__err(MPX_ENOBUFS, "pool: the arena has no room for %zu bytes now", len);
  loan->data = mpx_arena_ptr(p->arena, loan->ref);
  loan->len = len;
  return 0;
}

void mpx_pool_loan_cancel(mpx_pool_t *p, mpx_pool_loan_t *loan) {
  if (p == NULL || loan == NULL || loan->ref == 0) return;
  mpx__pool_block_release(p, loan->ref);
  *loan = (mpx_pool_loan_t){0};
}

int mpx_pool_apply_async_loan(mpx_pool_t *p, mpx_func_t f, mpx_pool_loan_t *loan,
                              size_t used, mpx_async_cb callback,
                              mpx_async_cb error_callback, void *arg,
                              mpx_async_t **out) {
  if (p == NULL || loan == NULL || out == NULL || loan->ref == 0)
    return mpx__err(MPX_EINVAL, "pool: NULL argument or an empty loan");
  if (used > loan->len) {
    mpx_pool_loan_cancel(p, loan);
    return mpx__err(MPX_EINVAL, "pool: %zu bytes used of a %zu-byte loan",
                    used, loan->len);
  }
  req_t *r = mpx__pool_req_new(p, R_APPLY);
  if (r == NULL) {
    mpx_pool_loan_cancel(p, loan);
    return mpx__err(MPX_ENOMEM, "pool: out of memory");
  }
  r->aref = loan->ref;
  r->acopy = loan->data;
  *loan = (mpx_pool_loan_t){0};
  return apply_submit(p, r, f, used, callback, error_callback, arg, out);
}

int mpx_async_arg(const mpx_async_t *a, const void **data, size_t *len) {
  if (a == NULL || data == NULL || len == NULL || a->kind != R_APPLY)
    return mpx__err(MPX_EINVAL, "pool: not an apply_async handle");
  *data = a->acopy;
  *len = a->alen;
  return 0;
}

int mpx_async_wait(mpx_async_t *a, double timeout) {
  if (a == NULL) return mpx__err(MPX_EINVAL, "pool: NULL argument");
  return mpx__pool_wait(a->p, mpx__pool_req_complete, a, timeout);
}

int mpx_async_get(mpx_async_t *a, const void **data, size_t *len,
                  double timeout) {
  if (a == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  int rc = mpx__pool_wait(a->p, mpx__pool_req_complete, a, timeout);
  if (rc != 0) return rc;
  pthread_mutex_lock(&a->p->mu);
  rc = mpx__pool_req_result(a);
  *data = rc == 0 ? a->res : NULL;
  *len = rc == 0 ? a->res_len : 0;
  pthread_mutex_unlock(&a->p->mu);
  return rc;
}

bool mpx_async_ready(const mpx_async_t *a) {
  if (a == NULL) return false;
  pthread_mutex_lock(&a->p->mu);
  bool r = a->complete;
  pthread_mutex_unlock(&a->p->mu);
  return r;
}

bool mpx_async_successful(const mpx_async_t *a) {
  if (a == NULL) return false;
  pthread_mutex_lock(&a->p->mu);
  bool r = a->complete && a->call_rc == 0 && a->rc == 0;
  pthread_mutex_unlock(&a->p->mu);
  return r;
}

const char *mpx_async_error(const mpx_async_t *a) {
  if (a == NULL) return "";
  pthread_mutex_lock(&a->p->mu);
  const char *e = !a->complete ? ""
                  : a->call_rc == MPX_EBROKEN ? a->p->why
                  : a->call_rc != 0 ? mpx_strerror(a->call_rc)
                  : a->err ? a->err : "";
  pthread_mutex_unlock(&a->p->mu);
  return e;
}

/* Under mu, as the caller lets go of an apply: when no job uses its
 * blocks any more and no callback will read them, they go back to the
 * arena now rather than when the loop drops its reference, so that the
 * arena is empty when mpx_pool_apply returns. */
static void apply_release_early(req_t *r) {
  if (r->kind != R_APPLY || r->refs < 2 || !r->complete || r->live != 0 ||
      r->cb != NULL || r->ecb != NULL)
    return;
  if (r->aref) {
    mpx__pool_block_release(r->p, r->aref);
    r->aref = 0;
    r->acopy = NULL;
  }
  if (r->res_ref) {
    mpx__pool_block_release(r->p, r->res_ref);
    r->res_ref = 0;
    r->res = NULL;
  }
}

void mpx_async_free(mpx_async_t *a) {
  if (a == NULL) return;
  mpx_pool_t *p = a->p;
  /* A map writes into the caller's array: stop it first. */
  if (a->kind == R_MAP && !mpx_async_ready(a)) mpx__pool_cancel(p, a);
  pthread_mutex_lock(&p->mu);
  apply_release_early(a);
  mpx__pool_req_unref(a);
  pthread_mutex_unlock(&p->mu);
}

static int map_common(mpx_pool_t *p, req_t *r, mpx_func_t f, double timeout) {
  if (mpx__pool_on_loop_thread(p)) {
    mpx__pool_req_free(r);
    return mpx__pool_deadlock(p);
  }
  if (r->n == 0) {
    mpx__pool_req_free(r);
    return 0;
  }
  int rc = mpx__pool_submit(p, r, f);
  if (rc != 0) {
    mpx__pool_req_free(r);
    return rc;
  }
  rc = mpx__pool_run_call(p, r, timeout);
  pthread_mutex_lock(&p->mu);
  mpx__pool_req_unref(r);
  pthread_mutex_unlock(&p->mu);
  return rc;
}

static req_t *map_req(mpx_pool_t *p, const mpx_conn_buf_t *in, size_t n,
                      mpx_pool_result_t *out) {
  memset(out, 0, n * sizeof *out);
  req_t *r = mpx__pool_req_new(p, R_MAP);
  if (r == NULL) return NULL;
  size_t bytes = 0;
  for (size_t i = 0; i < n && i < 64; i++) bytes += in[i].len;
  r->in = in;
  r->out = out;
  r->n = n;
  r->chunk = auto_chunk(p, n, n ? bytes / (n < 64 ? n : 64) : 0);
  return r;
}

int mpx_pool_map(mpx_pool_t *p, mpx_func_t f, const mpx_conn_buf_t *in,
                 size_t n, mpx_pool_result_t *out, double timeout) {
  if (p == NULL || (n && (in == NULL || out == NULL)))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = map_req(p, in, n, out);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  return map_common(p, r, f, timeout);
}

int mpx_pool_map_async(mpx_pool_t *p, mpx_func_t f, const mpx_conn_buf_t *in,
                       size_t n, mpx_pool_result_t *out, mpx_async_cb callback,
                       mpx_async_cb error_callback, void *arg,
                       mpx_async_t **handle) {
  if (p == NULL || handle == NULL || n == 0 || in == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument or no inputs");
  req_t *r = map_req(p, in, n, out);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  return submit_async(p, r, f, callback, error_callback, arg, handle);
}

void mpx_pool_results_free(mpx_pool_result_t *out, size_t n) {
  for (size_t i = 0; out && i < n; i++) {
    free(out[i].data);
    free(out[i].error);
    out[i].data = NULL;
    out[i].error = NULL;
  }
}

int mpx_pool_map_fixed(mpx_pool_t *p, mpx_func_t f, const void *in,
                       size_t in_size, size_t n, void *out, size_t out_size,
                       int *rc, double timeout) {
  if (p == NULL || (n && ((in == NULL && in_size) || (out == NULL && out_size))))
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  req_t *r = mpx__pool_req_new(p, R_FIXED);
  if (r == NULL) return mpx__err(MPX_ENOMEM, "pool: out of memory");
  r->fin = in;
  r->in_size = in_size;
  r->fout = out;
  r->out_size = out_size;
  r->frc = rc;
  if (rc) memset(rc, 0, n * sizeof *rc);
  r->n = n;
  r->chunk = auto_chunk(p, n, in_size);
  return map_common(p, r, f, timeout);
}
