/* Internal: shared futex waits and wakes with CLOCK_MONOTONIC deadlines,
 * and the spin-then-sleep policy every mpx primitive uses. */
#ifndef MPX_SHM_FUTEX_H
#define MPX_SHM_FUTEX_H

#include <stdatomic.h>
#include <stdint.h>

/* Sleep while *addr == val, until woken or `deadline` (mpx__now() scale;
 * negative: forever). 0 when woken, the value differed or a signal
 * interrupted (callers re-check their condition), MPX_ETIMEDOUT when the
 * deadline passed. */
int mpx__futex_wait(_Atomic uint32_t *addr, uint32_t val, double deadline);
/* Wake up to n sleepers (INT32_MAX: all). Returns how many woke. */
int mpx__futex_wake(_Atomic uint32_t *addr, int n);

/* Check a user timeout: MPX_EINVAL for NaN, else 0. */
int mpx__timeout_check(double timeout);

/* Iterations a waiter spins (with a pause) before it sleeps. Spinning only
 * pays when another CPU can run the peer: 0 on a single-CPU affinity. */
unsigned mpx__spin_limit(void);

static inline void mpx__cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield" ::: "memory");
#else
  atomic_signal_fence(memory_order_seq_cst);
#endif
}

#endif /* MPX_SHM_FUTEX_H */
