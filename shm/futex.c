/* Shared (not private) futexes: the words live in memory mapped by several
 * processes, so FUTEX_PRIVATE_FLAG must never be used here. Waits take an
 * absolute CLOCK_MONOTONIC deadline through FUTEX_WAIT_BITSET, so a wait
 * that is interrupted and restarted does not stretch its timeout. */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <math.h>
#include <sched.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "futex.h"

int mpx__futex_wait(_Atomic uint32_t *addr, uint32_t val, double deadline) {
  struct timespec ts, *tsp = NULL;
  if (deadline >= 0) {
    if (mpx__now() >= deadline) return MPX_ETIMEDOUT;
    ts.tv_sec = (time_t)deadline;
    ts.tv_nsec = (long)((deadline - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_nsec = 999999999L;
    tsp = &ts;
  }
  long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET, val, tsp,
                   NULL, FUTEX_BITSET_MATCH_ANY);
  if (r == 0) return 0;
  if (errno == ETIMEDOUT) return MPX_ETIMEDOUT;
  return 0; /* EAGAIN (value changed), EINTR: the caller re-checks */
}

int mpx__futex_wake(_Atomic uint32_t *addr, int n) {
  long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE, n, NULL, NULL, 0);
  return r < 0 ? 0 : (int)r;
}

int mpx__timeout_check(double timeout) {
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "timeout is NaN");
  return 0;
}

unsigned mpx__spin_limit(void) {
  static _Atomic unsigned limit = UINT_MAX;
  unsigned l = atomic_load_explicit(&limit, memory_order_relaxed);
  if (l == UINT_MAX) {
    cpu_set_t set;
    int n = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 2;
    l = n > 1 ? 2000 : 0;
    atomic_store_explicit(&limit, l, memory_order_relaxed);
  }
  return l;
}
