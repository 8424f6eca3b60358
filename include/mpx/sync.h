/* mpx: cross-process synchronization, after Python's multiprocessing Lock,
 * RLock, Semaphore, BoundedSemaphore, Event, Condition and Barrier.
 *
 * Every primitive is a plain struct that the caller places in shared
 * memory (a segment, an arena block, a named shm) and initialises in place
 * with mpx_X_init(); every process that maps the memory may then use it:
 * fork children, forkserver and spawn children, unrelated processes that
 * attached the segment. The structs are opaque: touch them only through
 * these functions. They hold no pointers, so the memory may be mapped at a
 * different address in each process. Nothing here allocates or owns memory;
 * mpx_X_destroy() only marks the object dead, and the memory is the
 * caller's.
 *
 * Built on shared futexes: an uncontended acquire/release makes no system
 * call, a waiter spins briefly and then sleeps in the kernel.
 *
 * Timeouts are seconds as a double: negative waits forever, 0 only tries,
 * NaN is MPX_EINVAL. A wait that runs out returns MPX_ETIMEDOUT (also for
 * a timeout of 0). Deadlines use CLOCK_MONOTONIC.
 *
 * Robustness. Lock and RLock are owned by a thread (its kernel thread id,
 * unique across processes). When the owner dies holding one (even by
 * SIGKILL), the kernel hands it to the next acquirer, whose acquire
 * returns MPX_EOWNERDEAD *with the lock held*: repair the data the lock
 * guards, call mpx_lock_consistent(), then use it normally. Releasing it
 * without doing so makes the lock unusable: every later acquire returns
 * MPX_ENOTRECOVERABLE. Semaphores, Events and Barriers have no owner: a
 * process that dies while waiting on one leaves it usable.
 *
 * Ownership: the primitives live in memory the caller provides (usually
 * shared memory); *_init fills it, *_destroy ends it, nothing is
 * allocated. "release" here is Python's: it unlocks (or posts); it never
 * frees anything and drops no reference. */
#ifndef MPX_SYNC_H
#define MPX_SYNC_H

#include <stddef.h>
#include <stdint.h>
#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Lock and RLock -------------------------------------------------- */

/* 64 bytes, 8-byte aligned. */
typedef struct mpx_lock_s {
  uint64_t opaque_[8];
} mpx_lock_t;

/* A non-recursive lock: acquiring it again from its owner thread returns
 * MPX_EDEADLK instead of hanging. Unlike Python's Lock, only the owner may
 * release it (MPX_EPERM otherwise): ownership is what lets mpx detect a
 * dead owner. Use a Semaphore for hand-off between threads. */
MPX_API int mpx_lock_init(mpx_lock_t *l);
/* A recursive lock (Python's RLock): its owner may acquire it again and
 * must release it as many times. */
MPX_API int mpx_rlock_init(mpx_lock_t *l);

/* 0, MPX_ETIMEDOUT, MPX_EDEADLK (Lock already held by this thread),
 * MPX_EOWNERDEAD (acquired; see the robustness note above),
 * MPX_ENOTRECOVERABLE, MPX_EOVERFLOW (RLock recursion past 2^31),
 * MPX_EINVAL (not an initialised lock, or a NaN timeout). */
MPX_API int mpx_lock_acquire(mpx_lock_t *l, double timeout);
/* 0, MPX_EPERM when the calling thread does not hold the lock, MPX_EINVAL
 * when it is not an initialised lock. */
MPX_API int mpx_lock_release(mpx_lock_t *l);
/* After MPX_EOWNERDEAD: mark the guarded state repaired. 0, or MPX_EINVAL
 * when the lock is not in that state or not held by the caller. */
MPX_API int mpx_lock_consistent(mpx_lock_t *l);
/* 1 when some thread holds the lock, else 0 (Python 3.14's locked()). A
 * lock whose owner died reads 0: the next acquire takes it at once. */
MPX_API int mpx_lock_locked(const mpx_lock_t *l);
/* 1 when the calling thread holds it. */
MPX_API int mpx_lock_is_mine(const mpx_lock_t *l);
/* RLock recursion depth held by the calling thread (0 if not the owner). */
MPX_API unsigned mpx_lock_count(const mpx_lock_t *l);
MPX_API void mpx_lock_destroy(mpx_lock_t *l);

/* ---- Semaphore and BoundedSemaphore ------------------------------------ */

/* 16 bytes, 8-byte aligned. */
typedef struct mpx_sem_s {
  uint64_t opaque_[2];
} mpx_sem_t;

/* value: the initial count (at most INT32_MAX). */
MPX_API int mpx_sem_init(mpx_sem_t *s, unsigned value);
/* A bounded semaphore: releasing past the initial value is an error. */
MPX_API int mpx_bsem_init(mpx_sem_t *s, unsigned value);
/* Decrement, waiting while the count is 0. 0 or MPX_ETIMEDOUT. */
MPX_API int mpx_sem_acquire(mpx_sem_t *s, double timeout);
/* Increment and wake one waiter. MPX_EOVERFLOW for a bounded semaphore
 * already at its initial value, or any semaphore at INT32_MAX (the count
 * is unchanged). */
MPX_API int mpx_sem_release(mpx_sem_t *s);
MPX_API unsigned mpx_sem_value(const mpx_sem_t *s);
/* 1 when the count is 0 (an acquire would block). */
MPX_API int mpx_sem_locked(const mpx_sem_t *s);
MPX_API void mpx_sem_destroy(mpx_sem_t *s);

/* ---- Event ------------------------------------------------------------ */

/* 16 bytes, 8-byte aligned. */
typedef struct mpx_event_s {
  uint64_t opaque_[2];
} mpx_event_t;

MPX_API int mpx_event_init(mpx_event_t *e);
/* Set the flag and wake every waiter. */
MPX_API void mpx_event_set(mpx_event_t *e);
MPX_API void mpx_event_clear(mpx_event_t *e);
MPX_API int mpx_event_is_set(const mpx_event_t *e);
/* 0 once the flag is set (at once if it is), or MPX_ETIMEDOUT. Like
 * Python's, a wait that saw a set returns 0 even if a clear came before it
 * ran again. */
MPX_API int mpx_event_wait(mpx_event_t *e, double timeout);
MPX_API void mpx_event_destroy(mpx_event_t *e);

/* ---- Condition -------------------------------------------------------- */

/* 128 bytes, 8-byte aligned. */
typedef struct mpx_cond_s {
  uint64_t opaque_[16];
} mpx_cond_t;

/* lock: NULL for a recursive lock of the condition's own (Python's
 * default), or a Lock/RLock that lives in the same mapping as the
 * condition (it is stored as a distance, not a pointer).
 * Own: keeps lock (not copied) until mpx_cond_destroy; lock stays yours. */
MPX_API int mpx_cond_init(mpx_cond_t *c, mpx_lock_t *lock);
/* The condition's lock, as mapped in this process.
 * Own: returns a lock borrowed until mpx_cond_destroy. */
MPX_API mpx_lock_t *mpx_cond_lock(mpx_cond_t *c);
MPX_API int mpx_cond_acquire(mpx_cond_t *c, double timeout);
MPX_API int mpx_cond_release(mpx_cond_t *c);
/* The caller must hold the lock (MPX_EPERM otherwise). Releases it fully
 * (an RLock at any depth), sleeps until notified or timed out, and
 * reacquires it at the same depth before returning: 0 when notified,
 * MPX_ETIMEDOUT when not. Never wakes without a notify. When the lock's
 * owner died meanwhile, MPX_EOWNERDEAD with the lock held (see above);
 * any other lock error returns with the lock not held. */
MPX_API int mpx_cond_wait(mpx_cond_t *c, double timeout);
/* Wait until pred(arg) returns nonzero (checked first under the lock, then
 * after each wake-up). 0 when it holds, MPX_ETIMEDOUT when the timeout ran
 * out with it still false.
 * Own: borrows arg for the call. */
MPX_API int mpx_cond_wait_for(mpx_cond_t *c, int (*pred)(void *arg),
                              void *arg, double timeout);
/* Wake up to n waiters / all of them. The caller must hold the lock
 * (MPX_EPERM otherwise). */
MPX_API int mpx_cond_notify(mpx_cond_t *c, unsigned n);
MPX_API int mpx_cond_notify_all(mpx_cond_t *c);
MPX_API void mpx_cond_destroy(mpx_cond_t *c);

/* ---- Barrier ---------------------------------------------------------- */

/* 128 bytes, 8-byte aligned. */
typedef struct mpx_barrier_s {
  uint64_t opaque_[16];
} mpx_barrier_t;

/* An action runs in the last process to arrive, before the others are
 * released; a nonzero return (a negative code, by convention) breaks the
 * barrier and is what that wait returns. Stored as addresses: valid in
 * the creator and its fork children; other processes should pass NULL and
 * act on the index. */
typedef int (*mpx_barrier_action_t)(void *arg);

/* parties >= 1. action may be NULL.
 * Own: keeps arg (not copied) until mpx_barrier_destroy; arg stays yours. */
MPX_API int mpx_barrier_init(mpx_barrier_t *b, unsigned parties,
                             mpx_barrier_action_t action, void *arg);
/* Wait until `parties` processes/threads have called wait. 0 with *index
 * (may be NULL) set to 0..parties-1 (the arrival order: the first
 * to arrive gets 0, the last parties-1);
 * MPX_EBROKEN when the barrier is or becomes broken (a timeout, abort,
 * reset or failed action); MPX_ETIMEDOUT for the caller whose timeout ran
 * out (which breaks the barrier for the others); the action's own code for
 * the caller that ran a failing action. */
MPX_API int mpx_barrier_wait(mpx_barrier_t *b, double timeout,
                             unsigned *index);
/* Back to the empty state; current waiters get MPX_EBROKEN. */
MPX_API int mpx_barrier_reset(mpx_barrier_t *b);
/* Break it: current and future waiters get MPX_EBROKEN until a reset. */
MPX_API int mpx_barrier_abort(mpx_barrier_t *b);
MPX_API unsigned mpx_barrier_parties(const mpx_barrier_t *b);
MPX_API unsigned mpx_barrier_n_waiting(const mpx_barrier_t *b);
MPX_API int mpx_barrier_broken(const mpx_barrier_t *b);
MPX_API void mpx_barrier_destroy(mpx_barrier_t *b);

#ifdef __cplusplus
}
#endif
#endif /* MPX_SYNC_H */
