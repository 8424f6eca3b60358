/* The pool's worker process: runs tasks that arrive over its transport
 * endpoint and answers each job in one frame (see pool_proto.h).
 *
 * The worker ignores SIGINT (Ctrl-C in a terminal reaches the whole
 * process group; the coordinator decides what an interrupt means), moves
 * its stderr onto the supervisor's pipe, and, when it was forked, closes
 * every descriptor it inherited but its link (a copy of another worker's
 * socket would hide that worker's end of file). */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "mpx/pool.h"
#include "pool_proto.h"
#include "supervisor.h"

struct mpx_task_s {
  mpx_wbuf_t out;   /* the answer being built */
  size_t item;      /* offset of the current item's pm_item_t */
  bool failed;
  unsigned index, workers;
};

static void *worker_state;
static unsigned worker_index, worker_count;

unsigned mpx_pool_worker_index(void) { return worker_index; }
unsigned mpx_pool_worker_count(void) { return worker_count; }

void mpx_task_set_state(void *state) { worker_state = state; }
void *mpx_task_state(const mpx_task_t *t) {
  (void)t;
  return worker_state;
}
unsigned mpx_task_worker(const mpx_task_t *t) { return t ? t->index : 0; }
unsigned mpx_task_workers(const mpx_task_t *t) { return t ? t->workers : 0; }

void *mpx_task_result_buf(mpx_task_t *t, size_t len) {
  if (t == NULL || len > UINT32_MAX) return NULL;
  t->out.len = t->item + sizeof(pm_item_t);
  if (mpx_wbuf_reserve(&t->out, len) != 0) return NULL;
  void *p = t->out.data + t->out.len;
  t->out.len += len;
  t->failed = false;
  return p;
}

int mpx_task_result(mpx_task_t *t, const void *data, size_t len) {
  void *p = mpx_task_result_buf(t, len);
  if (p == NULL) return MPX_ENOMEM;
  if (len) memcpy(p, data, len);
  return 0;
}

int mpx_task_fail(mpx_task_t *t, const char *fmt, ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof msg) n = sizeof msg - 1;
  if (t != NULL) {
    t->out.len = t->item + sizeof(pm_item_t);
    mpx_wbuf_append(&t->out, msg, (size_t)n);
    t->failed = true;
  }
  return MPX_ETASK;
}

/* ---- functions ------------------------------------------------------------ */

typedef struct {
  mpx_task_fn *fn;
  size_t n, cap;
} fntab_t;

static int resolve(uint8_t kind, uint64_t addr, const char *str, void **out) {
  mpx_target_fn f = NULL;
  int rc = 0;
  switch (kind) {
    case PM_FN_PTR:
      *out = (void *)(uintptr_t)addr;
      return 0;
    case PM_FN_LOC:
      rc = mpx__target_from_loc(str, (uintptr_t)addr, &f);
      break;
    case PM_FN_SPEC:
      rc = mpx__target_resolve_spec(str, &f);
      break;
    default:
      *out = NULL;
      return 0;
  }
  *out = (void *)(uintptr_t)f;
  return rc;
}

static int define(fntab_t *t, const uint8_t *m, size_t len) {
  pm_define_t d;
  if (len < sizeof d + 1 || m[len - 1] != '\0') return MPX_EPROTO;
  memcpy(&d, m, sizeof d);
  if (d.fn_id != t->n) return MPX_EPROTO;
  if (t->n == t->cap) {
    size_t c = t->cap ? t->cap * 2 : 16;
    mpx_task_fn *f = realloc(t->fn, c * sizeof *f);
    if (f == NULL) return MPX_ENOMEM;
    t->fn = f;
    t->cap = c;
  }
  void *p = NULL;
  /* A function that cannot be resolved fails its tasks, not the worker. */
  if (resolve(d.kind, d.addr, (const char *)m + sizeof d, &p) != 0) {
    fprintf(stderr, "mpx pool: cannot resolve task function %u: %s\n",
            d.fn_id, mpx_last_error());
    p = NULL;
  }
  memcpy(&t->fn[t->n++], &p, sizeof p);
  return 0;
}

/* Runs one job and sends its answer. */
static int run_job(mpx_endpoint_t *ep, fntab_t *ft, mpx_task_t *t,
                   const uint8_t *m, size_t len) {
  pm_task_t h;
  if (len < sizeof h) return MPX_EPROTO;
  memcpy(&h, m, sizeof h);
  mpx_task_fn fn = h.fn_id < ft->n ? ft->fn[h.fn_id] : NULL;
  size_t off = sizeof h;
  pm_answer_t a = {.type = PM_ANSWER, .n = h.n, .job = h.job};
  t->out.len = 0;
  mpx_wbuf_append(&t->out, &a, sizeof a);
  for (uint32_t i = 0; i < h.n; i++) {
    uint32_t l;
    if (off + 4 > len) return MPX_EPROTO;
    memcpy(&l, m + off, 4);
    off += 4;
    if (l > len - off) return MPX_EPROTO;
    t->item = t->out.len;
    pm_item_t it = {0, 0};
    if (mpx_wbuf_append(&t->out, &it, sizeof it) != 0) return MPX_ENOMEM;
    t->failed = false;
    int rc;
    if (fn == NULL) {
      rc = mpx_task_fail(t, "task function %u could not be resolved in the "
                         "worker (see its stderr)", h.fn_id);
    } else {
      rc = fn(t, m + off, l);
      if (rc != 0 && !t->failed) mpx_task_fail(t, "task returned %d", rc);
      if (rc == 0 && t->failed) rc = MPX_ETASK;
    }
    it.rc = rc == 0 ? 0 : (rc < 0 ? rc : MPX_ETASK);
    it.len = (uint32_t)(t->out.len - t->item - sizeof it);
    memcpy(t->out.data + t->item, &it, sizeof it);
    off += l;
  }
  return mpx_endpoint_send(ep, t->out.data, t->out.len, -1);
}

int mpx_pool_worker_main(const void *args, size_t len) {
  pm_wargs_t w;
  if (args == NULL || len < sizeof w) return 120;
  memcpy(&w, args, sizeof w);
  if (w.version != PM_WARGS_VERSION) return 121;
  const char *init_str = (const char *)args + sizeof w;
  const void *initargs = init_str + w.init_str_len;
  mpx__sup_worker_init(w.stderr_fd);
  worker_index = w.index;
  worker_count = w.nworkers;
  signal(SIGINT, SIG_IGN);
  /* Keep 0-2 and the link (moved to 3); drop everything else inherited. */
  int fd = w.link_fd;
  if (fd != 3) {
    if (dup2(fd, 3) < 0) return 122;
    close(fd);
    fd = 3;
  }
  close_range(4, ~0U, 0);
  mpx_endpoint_t *ep;
  if (mpx_endpoint_open(&ep, fd, (mpx_transport_t)w.transport) != 0) {
    fprintf(stderr, "mpx pool: worker %u: %s\n", w.index, mpx_last_error());
    return 123;
  }
  if (w.init_kind != PM_FN_NONE) {
    void *p = NULL;
    if (resolve(w.init_kind, w.init_addr, init_str, &p) != 0 || p == NULL) {
      fprintf(stderr, "mpx pool: worker %u: initializer: %s\n", w.index,
              mpx_last_error());
      return 124;
    }
    mpx_pool_init_fn init;
    memcpy(&init, &p, sizeof p);
    int rc = init(w.initargs_len ? initargs : NULL, w.initargs_len);
    if (rc != 0) {
      fprintf(stderr, "mpx pool: worker %u: initializer returned %d\n",
              w.index, rc);
      return rc > 0 && rc < 256 ? rc : 125;
    }
  }
  pm_ready_t r = {.type = PM_READY, .index = w.index, .pid = (int32_t)getpid()};
  if (mpx_endpoint_send(ep, &r, sizeof r, -1) != 0) return 0;
  fntab_t ft = {0};
  mpx_task_t t = {.index = w.index, .workers = w.nworkers};
  mpx_wbuf_init(&t.out);
  int code = 0;
  for (;;) {
    const void *m;
    size_t n;
    int rc = mpx_endpoint_recv(ep, &m, &n, -1);
    if (rc == MPX_EPIPE) break; /* the coordinator is gone */
    if (rc != 0 || n == 0) {
      fprintf(stderr, "mpx pool: worker %u: receive: %s\n", w.index,
              mpx_last_error());
      code = 126;
      break;
    }
    uint8_t type = *(const uint8_t *)m;
    if (type == PM_QUIT) break;
    if (type == PM_DEFINE) rc = define(&ft, m, n);
    else if (type == PM_TASK) rc = run_job(ep, &ft, &t, m, n);
    else rc = MPX_EPROTO;
    if (rc == MPX_EPIPE) break;
    if (rc != 0) {
      fprintf(stderr, "mpx pool: worker %u: message type %d: %s\n", w.index,
              type, mpx_strerror(rc));
      code = 126;
      break;
    }
  }
  mpx_endpoint_flush(ep, 5);
  mpx_endpoint_free(ep);
  mpx_wbuf_free(&t.out);
  free(ft.fn);
  return code;
}
