/* The pool's worker process: runs tasks that arrive over its transport
 * endpoint and answers each job in one frame (see pool_proto.h).
 *
 * The worker ignores SIGINT (Ctrl-C in a terminal reaches the whole
 * process group; the coordinator decides what an interrupt means), moves
 * its stderr onto the supervisor's pipe, and, when it was forked, closes
 * every descriptor it inherited but its link and the arena's segment (a
 * copy of another worker's socket would hide that worker's end of file).
 *
 * Large items (pool_proto.h): an argument that arrives as an arena
 * reference is passed to the task in place; a result of more than
 * MPX_POOL_ARENA_THRESHOLD bytes is written by the task into a block this
 * worker allocates (owned by its pid until the coordinator takes it), and
 * the answer carries the block's reference. */
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "process_internal.h"
#include "mpx/pool.h"
#include "pool_proto.h"
#include "supervisor.h"

struct mpx_task_s {
  mpx_wbuf_t out;   /* the answer being built */
  size_t item;      /* offset of the current item's pm_item_t */
  bool failed;
  unsigned index, workers;
  mpx_arena_t *arena; /* the pool's, or NULL */
  mpx_ref_t res;    /* the current item's result block, or 0 */
  size_t res_len;
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

/* Drops the current item's result block. */
static void drop_block(mpx_task_t *t) {
  mpx_arena_release(t->arena, t->res);
  t->res = 0;
  t->res_len = 0;
}

/* A result block of len bytes, or NULL (never waits: a full arena sends
 * the result inline). */
static __attribute__((noinline)) void *block_for(mpx_task_t *t, size_t len) {
  mpx_ref_t r;
  if (mpx_arena_alloc(t->arena, len, 0, &r) != 0) return NULL;
  t->res = r;
  t->res_len = len;
  return mpx_arena_ptr(t->arena, r);
}

/* Room for the current item's result (see mpx_task_result_buf). */
static inline void *result_room(mpx_task_t *t, size_t len) {
  if (t->res) drop_block(t);
  t->out.len = t->item + sizeof(pm_item_t);
  t->failed = false;
  if (len > MPX_POOL_ARENA_THRESHOLD && t->arena) {
    void *b = block_for(t, len);
    if (b) return b;
  }
  if (len > PM_ITEM_LEN) return NULL;
  if (t->out.cap - t->out.len < len && mpx_wbuf_reserve(&t->out, len) != 0)
    return NULL;
  void *p = t->out.data + t->out.len;
  t->out.len += len;
  return p;
}

void *mpx_task_result_buf(mpx_task_t *t, size_t len) {
  return t ? result_room(t, len) : NULL;
}

int mpx_task_result(mpx_task_t *t, const void *data, size_t len) {
  void *p = t ? result_room(t, len) : NULL;
  if (p == NULL) return MPX_ENOMEM;
  if (len == 8) memcpy(p, data, 8);
  else if (len) memcpy(p, data, len);
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
    if (t->res) drop_block(t);
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
    uint32_t lw, l;
    if (off + 4 > len) return MPX_EPROTO;
    memcpy(&lw, m + off, 4);
    off += 4;
    l = lw & PM_ITEM_LEN;
    if (l > len - off) return MPX_EPROTO;
    const void *arg = m + off;
    size_t arg_len = l;
    bool lost = false;
    if (lw & PM_ITEM_REF) {
      pm_ref_t r;
      if (l != sizeof r) return MPX_EPROTO;
      memcpy(&r, m + off, sizeof r);
      arg = t->arena ? mpx_arena_ptr(t->arena, r.ref) : NULL;
      arg_len = (size_t)r.len;
      lost = arg == NULL || mpx_arena_block_size(t->arena, r.ref) < r.len;
    }
    t->item = t->out.len;
    pm_item_t it = {0, 0};
    if (mpx_wbuf_append(&t->out, &it, sizeof it) != 0) return MPX_ENOMEM;
    t->failed = false;
    t->res = 0;
    int rc;
    if (fn == NULL) {
      rc = mpx_task_fail(t, "task function %u could not be resolved in the "
                         "worker (see its stderr)", h.fn_id);
    } else if (lost) {
      rc = mpx_task_fail(t, "argument block of %zu bytes is not a live block "
                         "of the pool's arena", arg_len);
    } else {
      rc = fn(t, arg, arg_len);
      if (rc != 0 && !t->failed) mpx_task_fail(t, "task returned %d", rc);
      if (rc == 0 && t->failed) rc = MPX_ETASK;
    }
    it.rc = rc == 0 ? 0 : (rc < 0 ? rc : MPX_ETASK);
    if (rc == 0 && t->res) {
      /* The block goes with the answer: the coordinator takes it. */
      pm_ref_t r = {t->res, t->res_len};
      t->out.len = t->item + sizeof it;
      if (mpx_wbuf_append(&t->out, &r, sizeof r) != 0) return MPX_ENOMEM;
      it.len = PM_ITEM_REF | (uint32_t)sizeof r;
      t->res = 0;
    } else {
      if (t->res) drop_block(t);
      it.len = (uint32_t)(t->out.len - t->item - sizeof it);
    }
    memcpy(t->out.data + t->item, &it, sizeof it);
    off += l;
  }
  return mpx_endpoint_send(ep, t->out.data, t->out.len, -1);
}

/* Moves fds[0] (the link) to 3 and fds[1] (the arena's segment, or -1)
 * to 4, whatever numbers they had, closing the old ones. */
static int place_fds(int fds[2]) {
  for (int i = 0; i < 2; i++) { /* out of the way of each other first */
    if (fds[i] < 0 || fds[i] == 3 + i) continue;
    int h = fcntl(fds[i], F_DUPFD, 5);
    if (h < 0) return -1;
    close(fds[i]);
    fds[i] = h;
  }
  for (int i = 0; i < 2; i++) {
    if (fds[i] < 0 || fds[i] == 3 + i) continue;
    if (dup2(fds[i], 3 + i) < 0) return -1;
    close(fds[i]);
    fds[i] = 3 + i;
  }
  return 0;
}

/* The arena of the pool, if it has one: the coordinator's handle,
 * inherited with the mapping (fork), or attached from its segment's
 * descriptor `fd` (then *seg is set, to free at the end). 0, or the exit
 * code. */
static int attach_arena(const pm_wargs_t *w, int fd, mpx_segment_t **seg,
                        mpx_arena_t **arena) {
  *seg = NULL;
  *arena = NULL;
  if (w->arena_addr) {
    /* fork: the coordinator's handle, inherited with the mapping. */
    *arena = (mpx_arena_t *)(uintptr_t)w->arena_addr;
  } else if (fd >= 0) {
    if (mpx_segment_attach(seg, fd, 0) != 0 ||
        mpx_arena_attach(arena, *seg, 0) != 0) {
      fprintf(stderr, "mpx pool: worker %u: cannot attach the arena: %s\n",
              w->index, mpx_last_error());
      return 119;
    }
    close(fd); /* the segment keeps its own descriptor */
  }
  return 0;
}

/* The pool's initializer, if it has one. 0, or the exit code. */
static int run_initializer(const pm_wargs_t *w, const char *init_str,
                           const void *initargs) {
  if (w->init_kind == PM_FN_NONE) return 0;
  void *p = NULL;
  if (resolve(w->init_kind, w->init_addr, init_str, &p) != 0 || p == NULL) {
    fprintf(stderr, "mpx pool: worker %u: initializer: %s\n", w->index,
            mpx_last_error());
    return 124;
  }
  mpx_pool_init_fn init;
  memcpy(&init, &p, sizeof p);
  int rc = init(w->initargs_len ? initargs : NULL, w->initargs_len);
  if (rc != 0) {
    fprintf(stderr, "mpx pool: worker %u: initializer returned %d\n",
            w->index, rc);
    return rc > 0 && rc < 256 ? rc : 125;
  }
  return 0;
}

/* Defines and tasks until QUIT or the coordinator is gone. The exit code. */
static int serve(mpx_endpoint_t *ep, const pm_wargs_t *w, mpx_arena_t *arena) {
  fntab_t ft = {0};
  mpx_task_t t = {.index = w->index, .workers = w->nworkers, .arena = arena};
  mpx_wbuf_init(&t.out);
  int code = 0;
  for (;;) {
    const void *m;
    size_t n;
    int rc = mpx_endpoint_recv(ep, &m, &n, -1);
    if (rc == MPX_EPIPE) break; /* the coordinator is gone */
    if (rc != 0 || n == 0) {
      fprintf(stderr, "mpx pool: worker %u: receive: %s\n", w->index,
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
      fprintf(stderr, "mpx pool: worker %u: message type %d: %s\n", w->index,
              type, mpx_strerror(rc));
      code = 126;
      break;
    }
  }
  mpx_endpoint_flush(ep, 5);
  mpx_wbuf_free(&t.out);
  free(ft.fn);
  return code;
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
  /* Keep 0-2, the link (moved to 3) and the arena's segment (moved to 4);
   * drop everything else inherited. */
  int fds[2] = {w.link_fd, w.arena_fd};
  if (place_fds(fds) != 0) return 122;
  int fd = fds[0];
  close_range(fds[1] >= 0 ? 5 : 4, ~0U, 0);
  mpx_segment_t *seg;
  mpx_arena_t *arena;
  int code = attach_arena(&w, fds[1], &seg, &arena);
  if (code != 0) return code;
  mpx_endpoint_t *ep;
  if (mpx_endpoint_open(&ep, fd, (mpx_transport_t)w.transport) != 0) {
    fprintf(stderr, "mpx pool: worker %u: %s\n", w.index, mpx_last_error());
    return 123;
  }
  if ((code = run_initializer(&w, init_str, initargs)) != 0) return code;
  pm_ready_t r = {.type = PM_READY, .index = w.index, .pid = (int32_t)getpid()};
  if (mpx_endpoint_send(ep, &r, sizeof r, -1) != 0) return 0;
  code = serve(ep, &w, arena);
  mpx_endpoint_free(ep);
  if (seg) {
    mpx_arena_free(arena);
    mpx_segment_free(seg);
  }
  return code;
}
