/* The threading primitives a manager serves: Lock, RLock, Semaphore,
 * BoundedSemaphore and Condition (one lock-like shape, lock_t), Event and
 * Barrier. A call that would block parks on the object; the object
 * answers it when released, set or full, or when its timer runs out. A
 * lock remembers the connection that holds it, so a client that goes
 * away releases what it held (owner_gone). */
#include "manager_types.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* ---- Lock, RLock, Semaphore, BoundedSemaphore, Condition ------------------- */

enum { K_LOCK, K_RLOCK, K_SEM, K_BSEM, K_COND };
enum { L_ACQUIRE = 1, C_NOTIFY, C_REACQUIRE };

/* One shape for every lock-like object. A Lock and an RLock (and a
 * Condition's lock) remember the connection holding them, so a
 * connection that goes away releases what it held. */
typedef struct {
  mpx__mobj_t h;
  int kind;
  int64_t value;     /* semaphores: the counter; locks: 1 free, 0 held */
  int64_t bound;     /* BoundedSemaphore: the initial value */
  mpx__msess_t *owner;
  int64_t count;     /* RLock recursion */
} lock_t;

static bool is_rlock(lock_t *l) { return l->kind == K_RLOCK || l->kind == K_COND; }

static void take(lock_t *l, mpx__msess_t *who, int64_t count) {
  if (l->kind == K_SEM || l->kind == K_BSEM) {
    l->value--;
    return;
  }
  l->value = 0;
  l->owner = who;
  l->count = count;
  if (who) mpx__msess_held(who, +1);
}

static void drop_owner(lock_t *l) {
  if (l->owner) mpx__msess_held(l->owner, -1);
  l->owner = NULL;
  l->count = 0;
  l->value = 1;
}

/* Hands the lock (or semaphore units) to parked acquirers, FIFO. */
static void lock_pump(lock_t *l) {
  for (mpx__mcall_t *c = l->h.waiters, *nx; c && l->value > 0; c = nx) {
    nx = c->wnext;
    if (c->phase == L_ACQUIRE) {
      mpx__mobj_unpark(&l->h, c);
      take(l, c->owner, 1);
      mpx__mcall_return(c, mpx_obj_bool(1));
      mpx__mcall_complete(c);
    } else if (c->phase == C_REACQUIRE) {
      mpx__mobj_unpark(&l->h, c);
      take(l, c->owner, c->aux >> 1);
      mpx__mcall_return(c, mpx_obj_bool((int)(c->aux & 1)));
      mpx__mcall_complete(c);
    }
  }
}

static mpx__mobj_t *lock_new(int kind, int64_t value, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)mpx__mt_alloc(sizeof *l, NULL);
  if (l == NULL) return mpx__mt_nomem(c);
  l->kind = kind;
  l->value = value;
  l->bound = value;
  return &l->h;
}

static mpx__mobj_t *lock_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  if (mpx__mt_no_args(c, "Lock", args, kwds) != 0) return NULL;
  return lock_new(K_LOCK, 1, c);
}

static mpx__mobj_t *rlock_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  if (mpx__mt_no_args(c, "RLock", args, kwds) != 0) return NULL;
  return lock_new(K_RLOCK, 1, c);
}

static mpx__mobj_t *sem_create2(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c, int kind) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"value", NULL};
  int64_t v = 1;
  if (mpx__mt_bind_new(c, kind == K_SEM ? "Semaphore" : "BoundedSemaphore", args, kwds,
               names, 0, a) != 0 ||
      (a[0] && mpx__mt_want_int(c, a[0], &v) != 0))
    return NULL;
  if (v < 0) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "semaphore initial value must be >= 0");
    return NULL;
  }
  return lock_new(kind, v, c);
}

static mpx__mobj_t *sem_create(const mpx_obj_t *a, const mpx_obj_t *k, mpx__mcall_t *c) {
  return sem_create2(a, k, c, K_SEM);
}
static mpx__mobj_t *bsem_create(const mpx_obj_t *a, const mpx_obj_t *k, mpx__mcall_t *c) {
  return sem_create2(a, k, c, K_BSEM);
}

static mpx__mobj_t *cond_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  static const char *const names[] = {"lock", NULL};
  if (mpx__mt_bind_new(c, "Condition", args, kwds, names, 0, a) != 0) return NULL;
  if (a[0] && mpx_obj_type(a[0]) != MPX_OBJ_NULL) {
    mpx__mt_type_error(c, "Condition(lock): an mpx manager makes its own RLock; "
               "pass no lock");
    return NULL;
  }
  return lock_new(K_COND, 1, c);
}

static void lock_destroy(mpx__mobj_t *o) {
  lock_t *l = (lock_t *)o;
  if (l->owner) mpx__msess_held(l->owner, -1);
  free(l);
}

static int lock_acquire(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  const mpx_obj_t *a[2];
  double t;
  BIND(c, 0, a, "blocking", "timeout");
  bool block = a[0] == NULL || mpx__mt_truthy(a[0]);
  bool semlike = l->kind == K_SEM || l->kind == K_BSEM;
  bool has_t = a[1] && mpx_obj_type(a[1]) != MPX_OBJ_NULL &&
               !(!semlike && mpx__mt_is_num(a[1]) && mpx__mt_num_of(a[1]) == -1);
  if (!block && has_t)
    return mpx__mcall_raisef(c, "builtins", "ValueError",
                             semlike ? "can't specify timeout for non-blocking acquire"
                                     : "can't specify a timeout for a non-blocking call");
  /* threading.Lock's -1 is forever, as no timeout is: has_t is false. */
  if (mpx__mt_want_timeout(c, has_t ? a[1] : NULL, &t, "timeout value must be positive") != 0)
    return MPX__M_DONE;
  if (is_rlock(l) && l->value == 0 && l->owner == c->owner && c->owner) {
    l->count++;
    return mpx__mcall_return(c, mpx_obj_bool(1));
  }
  /* FIFO: a free lock is still handed to earlier waiters first */
  bool queued = false;
  for (mpx__mcall_t *w = l->h.waiters; w && !queued; w = w->wnext)
    queued = w->phase != C_NOTIFY;
  if (l->value > 0 && !queued) {
    take(l, c->owner, 1);
    return mpx__mcall_return(c, mpx_obj_bool(1));
  }
  if (!block || t == 0) return mpx__mcall_return(c, mpx_obj_bool(0));
  c->phase = L_ACQUIRE;
  c->timeout = t;
  mpx__mobj_park(&l->h, c);
  return MPX__M_PARKED;
}

static int lock_release(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  const mpx_obj_t *a[1];
  switch (l->kind) {
  case K_LOCK:
    NO_ARGS(c);
    if (l->value > 0)
      return mpx__mcall_raisef(c, "builtins", "RuntimeError", "release unlocked lock");
    drop_owner(l);
    break;
  case K_RLOCK:
  case K_COND:
    NO_ARGS(c);
    if (l->value > 0 || l->owner != c->owner)
      return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                               "cannot release un-acquired lock");
    if (--l->count > 0) return mpx__mcall_return(c, NULL);
    drop_owner(l);
    break;
  default: {
    BIND(c, 0, a, "n");
    int64_t n = 1;
    if (a[0] && mpx__mt_want_int(c, a[0], &n) != 0) return MPX__M_DONE;
    if (n < 1)
      return mpx__mcall_raisef(c, "builtins", "ValueError", "n must be one or more");
    if (l->kind == K_BSEM && l->value + n > l->bound)
      return mpx__mcall_raisef(c, "builtins", "ValueError",
                               "Semaphore released too many times");
    l->value += n;
  }
  }
  lock_pump(l);
  return mpx__mcall_return(c, NULL);
}

static int cond_wait(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  const mpx_obj_t *a[1];
  double t;
  BIND(c, 0, a, "timeout");
  if (l->value > 0 || l->owner != c->owner)
    return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                             "cannot wait on un-acquired lock");
  if (mpx__mt_want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
  c->aux = l->count << 1; /* the recursion to restore; bit 0: notified */
  drop_owner(l);
  c->phase = C_NOTIFY;
  c->timeout = t;
  mpx__mobj_park(&l->h, c);
  lock_pump(l);
  return MPX__M_PARKED;
}

static int cond_notify(lock_t *l, mpx__mcall_t *c, bool all) {
  const mpx_obj_t *a[1];
  int64_t n = 1;
  if (all) {
    NO_ARGS(c);
    n = INT64_MAX;
  } else {
    BIND(c, 0, a, "n");
    if (a[0] && mpx__mt_want_int(c, a[0], &n) != 0) return MPX__M_DONE;
  }
  if (l->value > 0 || l->owner != c->owner)
    return mpx__mcall_raisef(c, "builtins", "RuntimeError",
                             "cannot notify on un-acquired lock");
  /* Notified waiters queue for the lock (behind earlier acquirers, as a
   * woken thread would); the notifier holds it now, so none runs yet. */
  for (mpx__mcall_t *w = l->h.waiters; w && n > 0; w = w->wnext)
    if (w->phase == C_NOTIFY) {
      w->phase = C_REACQUIRE;
      w->aux |= 1; /* its timer, if it fires now, changes nothing */
      n--;
    }
  return mpx__mcall_return(c, NULL);
}

static int cond_notify_n(mpx__mobj_t *o, mpx__mcall_t *c) {
  return cond_notify((lock_t *)o, c, false);
}

static int cond_notify_all(mpx__mobj_t *o, mpx__mcall_t *c) {
  return cond_notify((lock_t *)o, c, true);
}

static const mpx__mmethod_t acquirer_methods[] = {
    {"acquire", lock_acquire}, {"release", lock_release}, {NULL, NULL}};
static const mpx__mmethod_t cond_methods[] = {
    {"acquire", lock_acquire}, {"release", lock_release}, {"wait", cond_wait},
    {"notify", cond_notify_n}, {"notify_all", cond_notify_all}, {NULL, NULL}};

/* Timer ran out: an acquire answers False; a Condition.wait stops waiting
 * for notify (result False) but must still get the lock back. */
static int lock_expire_(mpx__mobj_t *o, mpx__mcall_t *c) {
  lock_t *l = (lock_t *)o;
  if (c->phase == C_NOTIFY) {
    c->phase = C_REACQUIRE;
    lock_pump(l);
    return 0;
  }
  if (c->phase == C_REACQUIRE) return 0;
  mpx__mobj_unpark(o, c);
  mpx__mcall_return(c, mpx_obj_bool(0));
  return 1;
}

static void lock_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  if (lock_expire_(o, c)) mpx__mcall_complete(c);
}

static void lock_owner_gone(mpx__mobj_t *o, mpx__msess_t *s) {
  lock_t *l = (lock_t *)o;
  if (l->owner == s && l->value == 0) {
    drop_owner(l);
    lock_pump(l);
  }
}

static void lock_repr(mpx__mobj_t *o, char *buf, size_t n) {
  lock_t *l = (lock_t *)o;
  switch (l->kind) {
  case K_LOCK:
    snprintf(buf, n, "<%s _thread.lock object at 0x%s>",
             l->value ? "unlocked" : "locked", o->ident);
    break;
  case K_RLOCK:
    snprintf(buf, n, "<%s _thread.RLock object owner=%d count=%" PRId64 " at 0x%s>",
             l->value ? "unlocked" : "locked", l->value ? 0 : 1, l->count, o->ident);
    break;
  case K_COND: {
    int64_t w = 0;
    for (mpx__mcall_t *c = o->waiters; c; c = c->wnext) w += c->phase == C_NOTIFY;
    snprintf(buf, n, "<Condition(<%s _thread.RLock object count=%" PRId64 ">, %" PRId64 ")>",
             l->value ? "unlocked" : "locked", l->count, w);
    break;
  }
  default:
    snprintf(buf, n, "<threading.%sSemaphore at 0x%s: value=%" PRId64 ">",
             l->kind == K_BSEM ? "Bounded" : "", o->ident, l->value);
  }
}

const mpx__mtype_t mpx__mlock_type = {
    .name = "Lock", .methods = acquirer_methods, .create = lock_create,
    .destroy = lock_destroy, .expire = lock_expire,
    .drop = mpx__mt_unpark_only, .owner_gone = lock_owner_gone, .repr = lock_repr};
const mpx__mtype_t mpx__mrlock_type = {
    .name = "RLock", .methods = acquirer_methods, .create = rlock_create,
    .destroy = lock_destroy, .expire = lock_expire,
    .drop = mpx__mt_unpark_only, .owner_gone = lock_owner_gone, .repr = lock_repr};
const mpx__mtype_t mpx__msem_type = {
    .name = "Semaphore", .methods = acquirer_methods, .create = sem_create,
    .destroy = lock_destroy, .expire = lock_expire,
    .drop = mpx__mt_unpark_only, .repr = lock_repr};
const mpx__mtype_t mpx__mbsem_type = {
    .name = "BoundedSemaphore", .methods = acquirer_methods, .create = bsem_create,
    .destroy = lock_destroy, .expire = lock_expire,
    .drop = mpx__mt_unpark_only, .repr = lock_repr};
const mpx__mtype_t mpx__mcond_type = {
    .name = "Condition", .methods = cond_methods, .create = cond_create,
    .destroy = lock_destroy, .expire = lock_expire,
    .drop = mpx__mt_unpark_only, .owner_gone = lock_owner_gone, .repr = lock_repr};

/* ---- Event ------------------------------------------------------------------ */

typedef struct {
  mpx__mobj_t h;
  bool flag;
} event_t;

static mpx__mobj_t *event_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                 mpx__mcall_t *c) {
  if (mpx__mt_no_args(c, "Event", args, kwds) != 0) return NULL;
  event_t *e = (event_t *)mpx__mt_alloc(sizeof *e, NULL);
  return e ? &e->h : mpx__mt_nomem(c);
}

static int event_is_set(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  return mpx__mcall_return(c, mpx_obj_bool(((event_t *)o)->flag));
}

/* Sets the flag and answers every waiter True. */
static int event_set(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  ((event_t *)o)->flag = true;
  while (o->waiters) {
    mpx__mcall_t *w = o->waiters;
    mpx__mobj_unpark(o, w);
    mpx__mcall_return(w, mpx_obj_bool(1));
    mpx__mcall_complete(w);
  }
  return mpx__mcall_return(c, NULL);
}

static int event_clear(mpx__mobj_t *o, mpx__mcall_t *c) {
  NO_ARGS(c);
  ((event_t *)o)->flag = false;
  return mpx__mcall_return(c, NULL);
}

static int event_wait(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  double t;
  BIND(c, 0, a, "timeout");
  if (mpx__mt_want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
  if (((event_t *)o)->flag) return mpx__mcall_return(c, mpx_obj_bool(1));
  if (t == 0) return mpx__mcall_return(c, mpx_obj_bool(0));
  c->timeout = t;
  mpx__mobj_park(o, c);
  return MPX__M_PARKED;
}

static const mpx__mmethod_t event_methods[] = {
    {"is_set", event_is_set}, {"set", event_set}, {"clear", event_clear},
    {"wait", event_wait},     {NULL, NULL}};

static void event_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mobj_unpark(o, c);
  mpx__mcall_return(c, mpx_obj_bool(0));
  mpx__mcall_complete(c);
}

static void event_repr(mpx__mobj_t *o, char *buf, size_t n) {
  snprintf(buf, n, "<threading.Event at 0x%s: %s>", o->ident,
           ((event_t *)o)->flag ? "set" : "unset");
}

const mpx__mtype_t mpx__mevent_type = {
    .name = "Event", .methods = event_methods, .create = event_create,
    .destroy = mpx__mt_free, .expire = event_expire,
    .drop = mpx__mt_unpark_only, .repr = event_repr};

/* ---- Barrier ---------------------------------------------------------------- */

typedef struct {
  mpx__mobj_t h;
  int64_t parties, count;
  double timeout; /* the default for wait(); -1 none */
  bool broken;
} barrier_t;

static mpx__mobj_t *barrier_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                   mpx__mcall_t *c) {
  const mpx_obj_t *a[3];
  static const char *const names[] = {"parties", "action", "timeout", NULL};
  int64_t parties;
  double t;
  if (mpx__mt_bind_new(c, "Barrier", args, kwds, names, 1, a) != 0 ||
      mpx__mt_want_int(c, a[0], &parties) != 0 || mpx__mt_want_timeout(c, a[2], &t, NULL) != 0)
    return NULL;
  if (a[1] && mpx_obj_type(a[1]) != MPX_OBJ_NULL) {
    mpx__mt_type_error(c, "Barrier(action=...) cannot run on an mpx manager: no "
               "Python code runs here");
    return NULL;
  }
  if (parties < 1) {
    mpx__mcall_raisef(c, "builtins", "ValueError", "parties must be > 0");
    return NULL;
  }
  barrier_t *b = (barrier_t *)mpx__mt_alloc(sizeof *b, NULL);
  if (b == NULL) return mpx__mt_nomem(c);
  b->parties = parties;
  b->timeout = t;
  return &b->h;
}

static void barrier_fail_all(barrier_t *b) {
  while (b->h.waiters) {
    mpx__mcall_t *w = b->h.waiters;
    mpx__mobj_unpark(&b->h, w);
    mpx__mcall_raise(w, "threading", "BrokenBarrierError", NULL);
    mpx__mcall_complete(w);
  }
  b->count = 0;
}

static int barrier_wait(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  const mpx_obj_t *a[1];
  double t;
  BIND(c, 0, a, "timeout");
  if (mpx__mt_want_timeout(c, a[0], &t, NULL) != 0) return MPX__M_DONE;
  if (a[0] == NULL || mpx_obj_type(a[0]) == MPX_OBJ_NULL) t = b->timeout;
  if (b->broken) return mpx__mcall_raise(c, "threading", "BrokenBarrierError", NULL);
  int64_t index = b->count++;
  if (b->count == b->parties) {
    while (o->waiters) { /* everyone waiting gets its own index */
      mpx__mcall_t *w = o->waiters;
      mpx__mobj_unpark(o, w);
      mpx__mcall_return(w, mpx_obj_int(w->aux));
      mpx__mcall_complete(w);
    }
    b->count = 0;
    return mpx__mcall_return(c, mpx_obj_int(index));
  }
  c->aux = index;
  c->timeout = t;
  mpx__mobj_park(o, c);
  return MPX__M_PARKED;
}

static int barrier_abort(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  NO_ARGS(c);
  b->broken = true;
  barrier_fail_all(b);
  return mpx__mcall_return(c, NULL);
}

static int barrier_reset(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  NO_ARGS(c);
  barrier_fail_all(b);
  b->broken = false;
  return mpx__mcall_return(c, NULL);
}

/* The properties a BarrierProxy reads: parties, n_waiting, broken. */
static int barrier_getattr(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  const mpx_obj_t *a[1];
  BIND(c, 1, a, "name");
  size_t sl;
  const char *s = mpx_obj_type(a[0]) == MPX_OBJ_STR ? mpx_obj_str_data(a[0], &sl) : "";
  if (STREQ(s, "parties")) return mpx__mcall_return(c, mpx_obj_int(b->parties));
  if (STREQ(s, "n_waiting")) return mpx__mcall_return(c, mpx_obj_int(b->count));
  if (STREQ(s, "broken")) return mpx__mcall_return(c, mpx_obj_bool(b->broken));
  return mpx__mt_attr_error(c, a[0], "Barrier");
}

static const mpx__mmethod_t barrier_methods[] = {
    {"__getattribute__", barrier_getattr}, {"wait", barrier_wait},
    {"abort", barrier_abort},              {"reset", barrier_reset},
    {NULL, NULL}};

/* A waiter's time ran out: the barrier breaks for everyone. */
static void barrier_expire(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  mpx__mobj_unpark(o, c);
  b->broken = true;
  mpx__mcall_raise(c, "threading", "BrokenBarrierError", NULL);
  mpx__mcall_complete(c);
  barrier_fail_all(b);
}

/* A waiter's connection went away: the barrier breaks, as it would when a
 * waiting thread were interrupted. */
static void barrier_drop(mpx__mobj_t *o, mpx__mcall_t *c) {
  barrier_t *b = (barrier_t *)o;
  mpx__mobj_unpark(o, c);
  b->broken = true;
  barrier_fail_all(b);
}

static void barrier_repr(mpx__mobj_t *o, char *buf, size_t n) {
  barrier_t *b = (barrier_t *)o;
  if (b->broken) snprintf(buf, n, "<threading.Barrier at 0x%s: broken>", o->ident);
  else
    snprintf(buf, n, "<threading.Barrier at 0x%s: waiters=%" PRId64 "/%" PRId64 ">",
             o->ident, b->count, b->parties);
}

const mpx__mtype_t mpx__mbarrier_type = {
    .name = "Barrier", .methods = barrier_methods, .create = barrier_create,
    .destroy = mpx__mt_free, .expire = barrier_expire, .drop = barrier_drop,
    .repr = barrier_repr};
