/* Event: a flag that waiters sleep on.
 *
 * The futex word holds the flag in bit 0 and a count of sets above it.
 * A waiter remembers the word it started from and is done as soon as the
 * word differs: the flag is set, or a set came and was cleared again before
 * the waiter ran (Python's Event.wait returns True then too). `waiters`
 * counts sleepers so that set() skips the wake system call when nobody
 * sleeps; waiters spin first, so a quick ping-pong never sleeps at all. A
 * waiter killed while asleep leaves `waiters` too high: a few useless
 * wakes later, nothing worse. */
#include <stdatomic.h>
#include <stdint.h>

#include "internal.h"
#include "futex.h"

#define EVENT_MAGIC 0x45564e31u /* "EVN1" */
#define EVENT_SET 1u
#define EVENT_GEN 2u /* one set, in the bits above the flag */

typedef struct {
  _Atomic uint32_t word;    /* set count << 1 | flag; the futex word */
  _Atomic uint32_t waiters; /* sleepers, or more after a SIGKILL */
  uint32_t magic;
  uint32_t unused;
} event_state_t;

_Static_assert(sizeof(event_state_t) <= sizeof(mpx_event_t),
               "mpx_event_t too small");
_Static_assert(_Alignof(event_state_t) <= _Alignof(mpx_event_t),
               "mpx_event_t under-aligned");

int mpx_event_init(mpx_event_t *e) {
  event_state_t *p = (event_state_t *)e;
  if (e == NULL) return mpx__err(MPX_EINVAL, "event_init: NULL event");
  atomic_init(&p->word, 0);
  atomic_init(&p->waiters, 0);
  p->magic = EVENT_MAGIC;
  p->unused = 0;
  atomic_thread_fence(memory_order_release);
  return 0;
}

void mpx_event_set(mpx_event_t *e) {
  event_state_t *p = (event_state_t *)e;
  uint32_t w = atomic_load_explicit(&p->word, memory_order_relaxed);
  do {
    if (w & EVENT_SET) return; /* already set: waiters saw it or will */
  } while (!atomic_compare_exchange_weak_explicit(
      &p->word, &w, (w + EVENT_GEN) | EVENT_SET, memory_order_seq_cst,
      memory_order_relaxed));
  if (atomic_load_explicit(&p->waiters, memory_order_seq_cst) > 0)
    mpx__futex_wake(&p->word, INT32_MAX);
}

void mpx_event_clear(mpx_event_t *e) {
  event_state_t *p = (event_state_t *)e;
  /* Plain load first: clearing a clear event stays a read, so a polling
   * loop does not bounce the cache line. */
  if (atomic_load_explicit(&p->word, memory_order_relaxed) & EVENT_SET)
    atomic_fetch_and_explicit(&p->word, ~EVENT_SET, memory_order_release);
}

int mpx_event_is_set(const mpx_event_t *e) {
  event_state_t *p = (event_state_t *)e;
  return (atomic_load_explicit(&p->word, memory_order_acquire) & EVENT_SET) !=
         0;
}

int mpx_event_wait(mpx_event_t *e, double timeout) {
  event_state_t *p = (event_state_t *)e;
  uint32_t start;
  double deadline;
  unsigned spins;
  int rc;

  if (p == NULL || p->magic != EVENT_MAGIC)
    return mpx__err(MPX_EINVAL, "event_wait: not an initialised event");
  start = atomic_load_explicit(&p->word, memory_order_acquire);
  if (start & EVENT_SET) return 0;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  if (timeout == 0) return MPX_ETIMEDOUT;

  deadline = mpx__deadline(timeout);
  for (spins = mpx__spin_limit(); spins > 0; spins--) {
    mpx__cpu_relax();
    if (atomic_load_explicit(&p->word, memory_order_acquire) != start)
      return 0;
  }

  atomic_fetch_add_explicit(&p->waiters, 1, memory_order_seq_cst);
  rc = 0;
  while (atomic_load_explicit(&p->word, memory_order_seq_cst) == start) {
    if (mpx__futex_wait(&p->word, start, deadline) == MPX_ETIMEDOUT) {
      /* A set that raced with the timeout still counts. */
      if (atomic_load_explicit(&p->word, memory_order_acquire) == start)
        rc = MPX_ETIMEDOUT;
      break;
    }
  }
  atomic_fetch_sub_explicit(&p->waiters, 1, memory_order_relaxed);
  return rc;
}

void mpx_event_destroy(mpx_event_t *e) {
  if (e != NULL) ((event_state_t *)e)->magic = 0;
}
