/* Condition: waiters, wake tokens and a sequence futex word.
 *
 * Every field but `seq` is guarded by the condition's lock, which callers
 * hold in wait and notify. A waiter registers (n_waiters++), notes `seq`,
 * releases the lock fully and sleeps on `seq`. notify(n) hands out up to n
 * tokens, one per registered waiter that has none yet, bumps `seq` and
 * wakes that many sleepers. A waiter returns 0 only by taking a token, and
 * takes one only when `seq` moved since it registered, so it never returns
 * for a notify that came before its wait: no spurious wake-ups, and a
 * notify is not stolen by a later waiter (the kernel's own wake-ups from
 * signals or a timeout find no token meant for them).
 *
 * The lock is found by its distance from the condition, so the pair may sit
 * at any address in each process. A waiter killed while asleep stays
 * counted; later notifies may then hand it tokens nobody takes, which only
 * lets a later waiter that woke for another reason keep one. */
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "futex.h"

#define COND_MAGIC 0x434f4e31u /* "CON1" */

typedef struct {
  mpx_lock_t own;        /* the RLock used when init got no lock */
  int64_t lock_off;      /* lock address minus condition address */
  _Atomic uint32_t seq;  /* bumped by each notify that wakes; futex word */
  uint32_t n_waiters;    /* registered waiters, token holders included */
  uint32_t tokens;       /* notifies not yet taken by a waiter */
  uint32_t magic;
} cond_state_t;

_Static_assert(sizeof(cond_state_t) <= sizeof(mpx_cond_t),
               "mpx_cond_t too small");
_Static_assert(_Alignof(cond_state_t) <= _Alignof(mpx_cond_t),
               "mpx_cond_t under-aligned");

static inline mpx_lock_t *lock_of(cond_state_t *p) {
  return (mpx_lock_t *)((char *)p + p->lock_off);
}

static inline int valid(const cond_state_t *p) {
  return p != NULL && p->magic == COND_MAGIC;
}

int mpx_cond_init(mpx_cond_t *c, mpx_lock_t *lock) {
  cond_state_t *p = (cond_state_t *)c;
  int rc;
  if (c == NULL) return mpx__err(MPX_EINVAL, "cond_init: NULL condition");
  if (lock == NULL) {
    if ((rc = mpx_rlock_init(&p->own)) != 0) return rc;
    lock = &p->own;
  }
  p->lock_off = (int64_t)((intptr_t)lock - (intptr_t)p);
  atomic_init(&p->seq, 0);
  p->n_waiters = 0;
  p->tokens = 0;
  p->magic = COND_MAGIC;
  atomic_thread_fence(memory_order_release);
  return 0;
}

mpx_lock_t *mpx_cond_lock(mpx_cond_t *c) {
  cond_state_t *p = (cond_state_t *)c;
  return valid(p) ? lock_of(p) : NULL;
}

int mpx_cond_acquire(mpx_cond_t *c, double timeout) {
  cond_state_t *p = (cond_state_t *)c;
  if (!valid(p))
    return mpx__err(MPX_EINVAL, "cond_acquire: not an initialised condition");
  return mpx_lock_acquire(lock_of(p), timeout);
}

int mpx_cond_release(mpx_cond_t *c) {
  cond_state_t *p = (cond_state_t *)c;
  if (!valid(p))
    return mpx__err(MPX_EINVAL, "cond_release: not an initialised condition");
  return mpx_lock_release(lock_of(p));
}

/* Checks the condition and that the caller holds its lock. */
static int check_owner(cond_state_t *p, const char *what) {
  if (!valid(p))
    return mpx__err(MPX_EINVAL, "%s: not an initialised condition", what);
  if (!mpx_lock_is_mine(lock_of(p)))
    return mpx__err(MPX_EPERM, "%s: the condition's lock is not held", what);
  return 0;
}

/* Takes the lock back at `depth`. 0, MPX_EOWNERDEAD (held; the caller
 * must repair and call mpx_lock_consistent), or an error with the lock not
 * held. */
static int reacquire(mpx_lock_t *l, unsigned depth) {
  int rc, first = mpx_lock_acquire(l, -1);
  unsigned i;
  if (first != 0 && first != MPX_EOWNERDEAD) return first;
  for (i = 1; i < depth; i++)
    if ((rc = mpx_lock_acquire(l, -1)) != 0) return rc; /* cannot fail */
  return first;
}

int mpx_cond_wait(mpx_cond_t *c, double timeout) {
  cond_state_t *p = (cond_state_t *)c;
  mpx_lock_t *l;
  unsigned depth, i;
  uint32_t s;
  double deadline;
  int rc, lrc = 0, timed_out = 0;

  if ((rc = check_owner(p, "cond_wait")) != 0) return rc;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  l = lock_of(p);
  depth = mpx_lock_count(l);
  if (depth == 0) depth = 1;
  deadline = mpx__deadline(timeout);

  p->n_waiters++;
  s = atomic_load_explicit(&p->seq, memory_order_relaxed);
  for (;;) {
    for (i = 0; i < depth; i++) mpx_lock_release(l);
    /* A notify between the release and the sleep moved `seq`: the futex
     * call then returns at once. */
    if (mpx__futex_wait(&p->seq, s, deadline) == MPX_ETIMEDOUT)
      timed_out = 1;
    lrc = reacquire(l, depth);
    if (lrc != 0 && lrc != MPX_EOWNERDEAD)
      return lrc; /* lock lost: leave our registration, a few extra wakes */
    if (p->tokens > 0 &&
        atomic_load_explicit(&p->seq, memory_order_relaxed) != s) {
      p->tokens--;
      p->n_waiters--;
      return lrc;
    }
    if (timed_out || lrc == MPX_EOWNERDEAD ||
        (deadline >= 0 && mpx__now() >= deadline)) {
      p->n_waiters--;
      return lrc != 0 ? lrc : MPX_ETIMEDOUT;
    }
    /* Woken by a signal, or our token went to another eligible waiter:
     * wait for the next notify. */
    s = atomic_load_explicit(&p->seq, memory_order_relaxed);
  }
}

int mpx_cond_wait_for(mpx_cond_t *c, int (*pred)(void *arg), void *arg,
                      double timeout) {
  cond_state_t *p = (cond_state_t *)c;
  double deadline, left = timeout;
  int rc;

  if ((rc = check_owner(p, "cond_wait_for")) != 0) return rc;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  if (pred == NULL) return mpx__err(MPX_EINVAL, "cond_wait_for: NULL pred");
  deadline = mpx__deadline(timeout);
  while (!pred(arg)) {
    if (deadline >= 0) {
      left = deadline - mpx__now();
      if (left <= 0) return MPX_ETIMEDOUT;
    }
    rc = mpx_cond_wait(c, left);
    if (rc == MPX_ETIMEDOUT) return pred(arg) ? 0 : MPX_ETIMEDOUT;
    if (rc != 0) return rc; /* MPX_EOWNERDEAD included: held, repair */
  }
  return 0;
}

int mpx_cond_notify(mpx_cond_t *c, unsigned n) {
  cond_state_t *p = (cond_state_t *)c;
  uint32_t k;
  int rc;

  if ((rc = check_owner(p, "cond_notify")) != 0) return rc;
  k = p->n_waiters > p->tokens ? p->n_waiters - p->tokens : 0;
  if (k > n) k = n;
  if (k == 0) return 0;
  p->tokens += k;
  atomic_fetch_add_explicit(&p->seq, 1, memory_order_release);
  mpx__futex_wake(&p->seq, k > INT32_MAX ? INT32_MAX : (int)k);
  return 0;
}

int mpx_cond_notify_all(mpx_cond_t *c) {
  return mpx_cond_notify(c, UINT32_MAX);
}

void mpx_cond_destroy(mpx_cond_t *c) {
  cond_state_t *p = (cond_state_t *)c;
  if (p == NULL) return;
  if (p->magic == COND_MAGIC && p->lock_off == 0) mpx_lock_destroy(&p->own);
  p->magic = 0;
}
