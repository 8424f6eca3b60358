/* Barrier: Python's threading.Barrier over an internal Lock and a
 * generation futex word.
 *
 * Arrivals count up under the lock; the last one runs the action and ends
 * the generation by bumping `gen`, which wakes the others. A generation
 * also ends, as a failure, when a waiter times out, the action fails, or
 * abort/reset is called; `failed` keeps one bit per generation (the last
 * 64), so a waiter that runs late still learns how its own generation
 * ended. Unlike Python there is no draining phase: waiters never have to
 * leave for the next generation to start, so a process killed while
 * waiting blocks nothing but its own generation (where it has arrived).
 *
 * The action runs under the lock, as in Python; if its process dies there,
 * the next user gets MPX_EOWNERDEAD from the lock, breaks the barrier and
 * marks the lock consistent. */
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "futex.h"

#define BARRIER_MAGIC 0x42415231u /* "BAR1" */
#define HISTORY 64u               /* generations whose outcome is kept */

typedef struct {
  mpx_lock_t lock;           /* guards everything below but the atomics'
                                lock-free reads */
  _Atomic uint32_t gen;      /* current generation; the futex word */
  _Atomic uint32_t sleepers; /* waiters in the kernel (more after SIGKILL) */
  _Atomic uint32_t count;    /* arrivals in the current generation */
  _Atomic uint32_t broken;
  uint32_t parties;
  uint32_t magic;
  _Atomic uint64_t failed;   /* bit g % 64: generation g ended broken */
  uint64_t action;           /* mpx_barrier_action_t, as an address */
  uint64_t arg;
} barrier_state_t;

_Static_assert(sizeof(barrier_state_t) <= sizeof(mpx_barrier_t),
               "mpx_barrier_t too small");
_Static_assert(_Alignof(barrier_state_t) <= _Alignof(mpx_barrier_t),
               "mpx_barrier_t under-aligned");

static inline int valid(const barrier_state_t *p) {
  return p != NULL && p->magic == BARRIER_MAGIC;
}

int mpx_barrier_init(mpx_barrier_t *b, unsigned parties,
                     mpx_barrier_action_t action, void *arg) {
  barrier_state_t *p = (barrier_state_t *)b;
  int rc;
  if (b == NULL) return mpx__err(MPX_EINVAL, "barrier_init: NULL barrier");
  if (parties < 1 || parties > INT32_MAX)
    return mpx__err(MPX_EINVAL, "barrier_init: parties %u out of range",
                    parties);
  if ((rc = mpx_lock_init(&p->lock)) != 0) return rc;
  atomic_init(&p->gen, 0);
  atomic_init(&p->sleepers, 0);
  atomic_init(&p->count, 0);
  atomic_init(&p->broken, 0);
  atomic_init(&p->failed, 0);
  p->parties = parties;
  p->action = (uint64_t)(uintptr_t)action;
  p->arg = (uint64_t)(uintptr_t)arg;
  p->magic = BARRIER_MAGIC;
  atomic_thread_fence(memory_order_release);
  return 0;
}

/* Ends the current generation (lock held) and wakes its waiters. */
static void end_gen(barrier_state_t *p, int ok) {
  uint32_t g = atomic_load_explicit(&p->gen, memory_order_relaxed);
  uint64_t bit = (uint64_t)1 << (g % HISTORY);
  uint64_t f = atomic_load_explicit(&p->failed, memory_order_relaxed);
  atomic_store_explicit(&p->failed, ok ? f & ~bit : f | bit,
                        memory_order_release);
  atomic_store_explicit(&p->count, 0, memory_order_relaxed);
  atomic_store_explicit(&p->gen, g + 1, memory_order_seq_cst);
  if (atomic_load_explicit(&p->sleepers, memory_order_seq_cst) > 0)
    mpx__futex_wake(&p->gen, INT32_MAX);
}

static void break_locked(barrier_state_t *p) {
  atomic_store_explicit(&p->broken, 1, memory_order_relaxed);
  end_gen(p, 0);
}

/* Takes the lock. After a holder died in it (in the action, most likely),
 * the generation it was part of cannot complete: break it. */
static int lock(barrier_state_t *p) {
  int rc = mpx_lock_acquire(&p->lock, -1);
  if (rc == MPX_EOWNERDEAD) {
    break_locked(p);
    rc = mpx_lock_consistent(&p->lock);
  }
  return rc;
}

static void unlock(barrier_state_t *p) { mpx_lock_release(&p->lock); }

/* Waits until `gen` leaves g. 0, or MPX_ETIMEDOUT with gen still g. */
static int sleep_on(barrier_state_t *p, uint32_t g, double timeout) {
  double deadline;
  unsigned spins;
  int rc = 0;

  if (timeout == 0) return MPX_ETIMEDOUT;
  deadline = mpx__deadline(timeout);
  for (spins = mpx__spin_limit(); spins > 0; spins--) {
    mpx__cpu_relax();
    if (atomic_load_explicit(&p->gen, memory_order_acquire) != g) return 0;
  }
  atomic_fetch_add_explicit(&p->sleepers, 1, memory_order_seq_cst);
  while (atomic_load_explicit(&p->gen, memory_order_seq_cst) == g) {
    if (mpx__futex_wait(&p->gen, g, deadline) == MPX_ETIMEDOUT) {
      if (atomic_load_explicit(&p->gen, memory_order_acquire) == g)
        rc = MPX_ETIMEDOUT;
      break;
    }
  }
  atomic_fetch_sub_explicit(&p->sleepers, 1, memory_order_relaxed);
  return rc;
}

/* How generation g (now over) ended: 0 or MPX_EBROKEN. */
static int outcome(barrier_state_t *p, uint32_t g) {
  uint64_t f = atomic_load_explicit(&p->failed, memory_order_acquire);
  uint32_t now = atomic_load_explicit(&p->gen, memory_order_acquire);
  /* If f already held a later generation's reuse of g's bit, gen would
   * read at least g + HISTORY here. */
  if (now - g >= HISTORY)
    return mpx__err(MPX_EBROKEN, "barrier_wait: outcome lost after %u "
                    "generations", now - g);
  return (f >> (g % HISTORY)) & 1 ? MPX_EBROKEN : 0;
}

int mpx_barrier_wait(mpx_barrier_t *b, double timeout, unsigned *index) {
  barrier_state_t *p = (barrier_state_t *)b;
  uint32_t g, i;
  double start;
  int rc;

  if (!valid(p))
    return mpx__err(MPX_EINVAL, "barrier_wait: not an initialised barrier");
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  start = mpx__now();
  if ((rc = lock(p)) != 0) return rc;
  if (atomic_load_explicit(&p->broken, memory_order_relaxed)) {
    unlock(p);
    return mpx__err(MPX_EBROKEN, "barrier_wait: the barrier is broken");
  }
  g = atomic_load_explicit(&p->gen, memory_order_relaxed);
  i = atomic_load_explicit(&p->count, memory_order_relaxed);
  atomic_store_explicit(&p->count, i + 1, memory_order_relaxed);

  if (i + 1 == p->parties) {
    mpx_barrier_action_t action =
        (mpx_barrier_action_t)(uintptr_t)p->action;
    rc = action != NULL ? action((void *)(uintptr_t)p->arg) : 0;
    if (rc != 0) {
      break_locked(p);
      unlock(p);
      return rc;
    }
    end_gen(p, 1);
    unlock(p);
    if (index != NULL) *index = i;
    return 0;
  }
  unlock(p);

  /* The time spent on the lock counts against the timeout. */
  if (timeout > 0) {
    timeout -= mpx__now() - start;
    if (timeout < 0) timeout = 0;
  }
  if (sleep_on(p, g, timeout) == MPX_ETIMEDOUT) {
    if ((rc = lock(p)) != 0) return rc;
    if (atomic_load_explicit(&p->gen, memory_order_relaxed) == g) {
      break_locked(p);
      unlock(p);
      return mpx__err(MPX_ETIMEDOUT, "barrier_wait: timed out with %u of "
                      "%u parties", i + 1, p->parties);
    }
    unlock(p); /* it ended while we took the lock */
  }
  if ((rc = outcome(p, g)) != 0) return rc;
  if (index != NULL) *index = i;
  return 0;
}

int mpx_barrier_reset(mpx_barrier_t *b) {
  barrier_state_t *p = (barrier_state_t *)b;
  int rc;
  if (!valid(p))
    return mpx__err(MPX_EINVAL, "barrier_reset: not an initialised barrier");
  if ((rc = lock(p)) != 0) return rc;
  /* Current waiters see their generation fail; a broken barrier has none. */
  if (atomic_load_explicit(&p->count, memory_order_relaxed) > 0) end_gen(p, 0);
  atomic_store_explicit(&p->broken, 0, memory_order_relaxed);
  unlock(p);
  return 0;
}

int mpx_barrier_abort(mpx_barrier_t *b) {
  barrier_state_t *p = (barrier_state_t *)b;
  int rc;
  if (!valid(p))
    return mpx__err(MPX_EINVAL, "barrier_abort: not an initialised barrier");
  if ((rc = lock(p)) != 0) return rc;
  if (!atomic_load_explicit(&p->broken, memory_order_relaxed))
    break_locked(p);
  unlock(p);
  return 0;
}

unsigned mpx_barrier_parties(const mpx_barrier_t *b) {
  const barrier_state_t *p = (const barrier_state_t *)b;
  return valid(p) ? p->parties : 0;
}

unsigned mpx_barrier_n_waiting(const mpx_barrier_t *b) {
  barrier_state_t *p = (barrier_state_t *)b;
  if (!valid(p) || atomic_load_explicit(&p->broken, memory_order_relaxed))
    return 0;
  return atomic_load_explicit(&p->count, memory_order_relaxed);
}

int mpx_barrier_broken(const mpx_barrier_t *b) {
  barrier_state_t *p = (barrier_state_t *)b;
  return valid(p) && atomic_load_explicit(&p->broken, memory_order_relaxed);
}

void mpx_barrier_destroy(mpx_barrier_t *b) {
  barrier_state_t *p = (barrier_state_t *)b;
  if (p == NULL) return;
  if (p->magic == BARRIER_MAGIC) mpx_lock_destroy(&p->lock);
  p->magic = 0;
}
