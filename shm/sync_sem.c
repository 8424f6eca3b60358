/* Semaphore and BoundedSemaphore on one shared futex word.
 *
 * `value` is the count and the futex word; `waiters` counts the processes
 * that are (about to be) asleep, so a release skips the wake system call
 * when nobody sleeps. A waiter raises `waiters` before it re-reads the
 * count and a releaser raises the count before it reads `waiters` (both
 * sequentially consistent), so one of them always sees the other: no lost
 * wake-up. A waiter killed while asleep leaves `waiters` too high, which
 * only costs later releases a useless wake. */
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "futex.h"

#define SEM_MAGIC 0x53454d30u /* "SEM0"; bit 0 is SEM_BOUNDED */
#define SEM_BOUNDED 1u

typedef struct {
  _Atomic uint32_t value;   /* the count; the futex word */
  _Atomic uint32_t waiters; /* sleepers, or more after a SIGKILL */
  uint32_t max;             /* a release past this is MPX_EOVERFLOW */
  uint32_t magic;           /* SEM_MAGIC ^ flags while alive, else 0 */
} sem_state_t;

_Static_assert(sizeof(sem_state_t) <= sizeof(mpx_sem_t),
               "mpx_sem_t too small");
_Static_assert(_Alignof(sem_state_t) <= _Alignof(mpx_sem_t),
               "mpx_sem_t under-aligned");

static int sem_init(mpx_sem_t *s, unsigned value, uint32_t flags) {
  sem_state_t *p = (sem_state_t *)s;
  if (s == NULL) return mpx__err(MPX_EINVAL, "sem_init: NULL semaphore");
  if (value > INT32_MAX)
    return mpx__err(MPX_EINVAL, "sem_init: value %u above INT32_MAX", value);
  atomic_init(&p->value, value);
  atomic_init(&p->waiters, 0);
  p->max = (flags & SEM_BOUNDED) ? value : INT32_MAX;
  p->magic = SEM_MAGIC ^ flags;
  /* Publish the fields before another process may see the memory. */
  atomic_thread_fence(memory_order_release);
  return 0;
}

int mpx_sem_init(mpx_sem_t *s, unsigned value) { return sem_init(s, value, 0); }

int mpx_bsem_init(mpx_sem_t *s, unsigned value) {
  return sem_init(s, value, SEM_BOUNDED);
}

static int sem_valid(const sem_state_t *p) {
  return p != NULL && (p->magic & ~SEM_BOUNDED) == SEM_MAGIC;
}

/* One decrement attempt: 1 when it took a unit. */
static int try_take(sem_state_t *p) {
  uint32_t v = atomic_load_explicit(&p->value, memory_order_relaxed);
  while (v > 0) {
    if (atomic_compare_exchange_weak_explicit(&p->value, &v, v - 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return 1;
  }
  return 0;
}

int mpx_sem_acquire(mpx_sem_t *s, double timeout) {
  sem_state_t *p = (sem_state_t *)s;
  double deadline;
  unsigned spins;
  int rc;

  if (!sem_valid(p))
    return mpx__err(MPX_EINVAL, "sem_acquire: not an initialised semaphore");
  if (try_take(p)) return 0;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  if (timeout == 0) return MPX_ETIMEDOUT;

  deadline = mpx__deadline(timeout);
  /* A release from another CPU often comes within microseconds. */
  for (spins = mpx__spin_limit(); spins > 0; spins--) {
    mpx__cpu_relax();
    if (atomic_load_explicit(&p->value, memory_order_relaxed) > 0 &&
        try_take(p))
      return 0;
  }

  atomic_fetch_add_explicit(&p->waiters, 1, memory_order_seq_cst);
  for (;;) {
    if (atomic_load_explicit(&p->value, memory_order_seq_cst) > 0 &&
        try_take(p)) {
      rc = 0;
      break;
    }
    if (mpx__futex_wait(&p->value, 0, deadline) == MPX_ETIMEDOUT) {
      /* A unit may have arrived with the timeout: take it rather than
       * strand it. */
      rc = try_take(p) ? 0 : MPX_ETIMEDOUT;
      break;
    }
  }
  atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
  return rc;
}

int mpx_sem_release(mpx_sem_t *s) {
  sem_state_t *p = (sem_state_t *)s;
  uint32_t v;

  if (!sem_valid(p))
    return mpx__err(MPX_EINVAL, "sem_release: not an initialised semaphore");
  v = atomic_load_explicit(&p->value, memory_order_relaxed);
  do {
    if (v >= p->max)
      return mpx__err(MPX_EOVERFLOW, "sem_release: %s semaphore at %u",
                      (p->magic & SEM_BOUNDED) ? "bounded" : "full", v);
  } while (!atomic_compare_exchange_weak_explicit(
      &p->value, &v, v + 1, memory_order_seq_cst, memory_order_relaxed));
  if (atomic_load_explicit(&p->waiters, memory_order_seq_cst) > 0)
    mpx__futex_wake(&p->value, 1);
  return 0;
}

unsigned mpx_sem_value(const mpx_sem_t *s) {
  const sem_state_t *p = (const sem_state_t *)s;
  return atomic_load_explicit(&((sem_state_t *)p)->value, memory_order_relaxed);
}

int mpx_sem_locked(const mpx_sem_t *s) { return mpx_sem_value(s) == 0; }

void mpx_sem_destroy(mpx_sem_t *s) {
  if (s != NULL) ((sem_state_t *)s)->magic = 0;
}
