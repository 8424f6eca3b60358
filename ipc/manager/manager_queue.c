/* Queue and JoinableQueue (queue.Queue's semantics; both typeids are the
 * same object, as in CPython's SyncManager). A get on an empty queue, a
 * put on a full one and a join with unfinished tasks park their call;
 * q_pump answers them as the queue changes. */
#include "manager_types.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

enum { Q_GET = 1, Q_PUT, Q_JOIN };

typedef struct {
  mpx__mobj_t h;
  mpx__mvec_t items;
  int64_t maxsize;
  int64_t unfinished;
} queue_t;

static bool q_full(queue_t *q) {
  return q->maxsize > 0 && (int64_t)q->items.len >= q->maxsize;
}

/* Moves items to parked getters and parked puts into free room, and
 * answers joiners, until nothing moves. */
static void q_pump(queue_t *q) {
  bool moved = true;
  while (moved) {
    moved = false;
    for (mpx__mcall_t *c = q->h.waiters, *nx; c; c = nx) {
      nx = c->wnext;
      if (c->phase == Q_GET && q->items.len > 0) {
        mpx__mobj_unpark(&q->h, c);
        mpx__mcall_return(c, mpx__mvec_popleft(&q->items));
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
      if (c->phase == Q_PUT && !q_full(q)) {
        mpx__mobj_unpark(&q->h, c);
        const mpx_obj_t *item = mpx_obj_item(c->args, 0);
        if (item == NULL) item = mpx_obj_map_get_str(c->kwds, "item");
        if (mpx__mvec_push(&q->items, mpx_obj_retain((mpx_obj_t *)item)) != 0) {
          mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
        } else {
          q->unfinished++;
          mpx__mcall_return(c, NULL);
        }
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
      if (c->phase == Q_JOIN && q->unfinished == 0) {
        mpx__mobj_unpark(&q->h, c);
        mpx__mcall_return(c, NULL);
        mpx__mcall_complete(c);
        moved = true;
        break;
      }
    }
  }
}

static mpx__mobj_t *queue_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"maxsize", NULL};
  int64_t maxsize = 0;
  if (mpx__mt_bind_new(c, "Queue", args, kwds, names, 0, a) != 0 ||
      (a[0] && mpx__mt_want_int(c, a[0], &maxsize) != 0))
    return NULL;
  queue_t *q = (queue_t *)mpx__mt_alloc(sizeof *q, NULL);
  if (q == NULL) return mpx__mt_nomem(c);
  q->maxsize = maxsize;
  return &q->h;
}

static void queue_destroy(mpx__mobj_t *o) {
  queue_t *q = (queue_t *)o;
  mpx__mvec_free(&q->items);
  free(q);
}

static int queue_get(queue_t *q, mpx__mcall_t *c, bool block, double timeout) {
  if (q->items.len > 0) {
    int r = mpx__mcall_return(c, mpx__mvec_popleft(&q->items));
    q_pump(q); /* room for a parked put */
    return r;
  }
  if (!block || timeout == 0)
    return mpx__mcall_raise(c, "queue", "Empty", NULL);
  c->phase = Q_GET;
  c->timeout = timeout;
  mpx__mobj_park(&q->h, c);
  return MPX__M_PARKED;
}

static int queue_put(queue_t *q, mpx__mcall_t *c, const mpx_obj_t *item,
                     bool block, double timeout) {
  if (!q_full(q)) {
    if (mpx__mvec_push(&q->items, mpx_obj_retain((mpx_obj_t *)item)) != 0)
      return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
    q->unfinished++;
    q_pump(q); /* a parked get */
    return mpx__mcall_return(c, NULL);
  }
  if (!block || timeout == 0)
    return mpx__mcall_raise(c, "queue", "Full", NULL);
  c->phase = Q_PUT;
  c->timeout = timeout;
  mpx__mobj_park(&q->h, c);
  return MPX__M_PARKED;
}

static const char *const neg_timeout = "'timeout' must be a non-negative number";

static int m_get(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[2];
  double t;
  BIND(c, 0, a, "block", "timeout");
  bool block = a[0] == NULL || mpx__mt_truthy(a[0]);
  if (block && mpx__mt_want_timeout(c, a[1], &t, neg_timeout) != 0) return MPX__M_DONE;
  return queue_get((queue_t *)o, c, block, block ? t : 0);
}

static int m_get_nowait(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return queue_get((queue_t *)o, c, false, 0);
}

static int m_put(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  double t;
  BIND(c, 1, a, "item", "block", "timeout");
  bool block = a[1] == NULL || mpx__mt_truthy(a[1]);
  if (block && mpx__mt_want_timeout(c, a[2], &t, neg_timeout) != 0) return MPX__M_DONE;
  return queue_put((queue_t *)o, c, a[0], block, block ? t : 0);
}

static int m_put_nowait(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "item");
  return queue_put((queue_t *)o, c, a[0], false, 0);
}

static int m_qsize(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_int((int64_t)((queue_t *)o)->items.len));
}

static int m_empty(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_bool(((queue_t *)o)->items.len == 0));
}

static int m_full(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_bool(q_full((queue_t *)o)));
}

static int m_task_done(mpx__mobj_t *o, mpx__mcall_t *c) {
  queue_t *q = (queue_t *)o;
  NO_ARGS(c);
  if (q->unfinished <= 0)
    return mpx__mcall_raisef(c, "builtins", "ValueError",
                             "task_done() called too many times");
  q->unfinished--;
  if (q->unfinished == 0) q_pump(q);
  return mpx__mcall_return(c, NULL);
}

static int m_join(mpx__mobj_t *o, mpx__mcall_t *c) {
  queue_t *q = (queue_t *)o;
  NO_ARGS(c);
  if (q->unfinished == 0) return mpx__mcall_return(c, NULL);
  c->phase = Q_JOIN;
  c->timeout = -1;
  mpx__mobj_park(&q->h, c);
  return MPX__M_PARKED;
}

/* CPython's exposed order. */
static const mpx__mmethod_t queue_methods[] = {
    {"empty", m_empty},   {"full", m_full},
    {"get", m_get},       {"get_nowait", m_get_nowait},
    {"join", m_join},     {"put", m_put},
    {"put_nowait", m_put_nowait}, {"qsize", m_qsize},
    {"task_done", m_task_done},   {NULL, NULL}};

static void queue_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mobj_unpark(o, c);
  if (c->phase == Q_GET) mpx__mcall_raise(c, "queue", "Empty", NULL);
  else mpx__mcall_raise(c, "queue", "Full", NULL);
  mpx__mcall_complete(c);
}

static void queue_repr(mpx__mobj_t *o, char *buf, size_t n) {
  mpx__mt_addr_repr(o, "queue.Queue", buf, n);
}

const mpx__mtype_t mpx__mqueue_type = {
    .name = "Queue", .methods = queue_methods, .create = queue_create,
    .destroy = queue_destroy, .expire = queue_expire,
    .drop = mpx__mt_unpark_only, .repr = queue_repr};
const mpx__mtype_t mpx__mjoinable_queue_type = {
    .name = "JoinableQueue", .methods = queue_methods, .create = queue_create,
    .destroy = queue_destroy, .expire = queue_expire,
    .drop = mpx__mt_unpark_only, .repr = queue_repr};
