/* Lock and RLock: robust, process-shared futex mutexes.
 *
 * The lock word follows the kernel's robust-futex protocol: it holds the
 * owner's thread id, FUTEX_WAITERS when someone sleeps on it, and
 * FUTEX_OWNER_DIED once the kernel has found the owner dead. A held lock is
 * linked into its owner thread's robust list, the one glibc registers for
 * every thread with set_robust_list(); when the thread dies, however it
 * dies, the kernel walks that list, marks each word it still owns
 * OWNER_DIED and wakes a waiter. The list node sits at the same distance
 * from the word as in glibc's pthread_mutex_t, so glibc's own robust
 * mutexes and ours share one list; we check that distance against the
 * registered head before using it (mpx__robust_ok). This is what a
 * pthread robust mutex does, without its slow generic path: an
 * uncontended acquire+release is one CAS, one exchange and a few stores.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"
#include "futex.h"
#include "ident.h"
#include "lock_internal.h"

#define LOCK_MAGIC 0x6d70784cu  /* "mpxL" */
#define KIND_LOCK 1u
#define KIND_RLOCK 2u
#define ST_CONSISTENT 0u
#define ST_INCONSISTENT 1u    /* acquired after the owner died */
#define ST_NOTRECOVERABLE 2u  /* released while inconsistent */

typedef struct {
  _Atomic uint32_t word;  /* owner tid | FUTEX_WAITERS | FUTEX_OWNER_DIED */
  uint32_t magic;
  uint32_t kind;
  uint32_t count;         /* RLock depth; written by the owner only */
  _Atomic uint32_t state;
  uint32_t pad_;
  /* Robust list node, laid out like glibc's __pthread_list_t: prev then
   * next; the kernel's list links `next` fields. */
  void *prev;
  void *next;
  uint64_t spare_[3];
} lock_t;

_Static_assert(sizeof(lock_t) <= sizeof(mpx_lock_t), "lock_t too big");
_Static_assert(_Alignof(lock_t) <= _Alignof(mpx_lock_t), "lock_t alignment");

/* glibc keeps a `void *` slot just before its robust head so that the head
 * can be treated like a node (its "prev"); a head of our own does too. */
typedef struct {
  void *prev;
  struct robust_list_head head;
} own_head_t;

static __thread __attribute__((tls_model("initial-exec"))) struct robust_list_head *tls_head;
static __thread __attribute__((tls_model("initial-exec"))) own_head_t tls_own_head;
/* The thread id is base/'s (mpx__mpx__tls_tid), reset in a fork child; the
 * robust head is kept there: it is glibc's, at the same address, and
 * glibc re-registered it in the child. */

static const long NODE_OFFSET =
    (long)offsetof(lock_t, word) - (long)offsetof(lock_t, next);

/* Sets up this thread's tid and robust head. 0, or MPX_ENOTSUP when the
 * registered robust list uses another layout (a libc we do not know). */
static int thread_setup(void) {
  long len = 0;
  struct robust_list_head *h = NULL;
  mpx__tid_fetch();
  if (tls_head != NULL) return 0;
  if (syscall(SYS_get_robust_list, 0, &h, &len) != 0)
    return mpx__err_errno("get_robust_list");
  if (h == NULL) {
    /* Nobody registered a list for this thread: register our own. */
    own_head_t *o = &tls_own_head;
    o->head.list.next = &o->head.list;
    o->head.futex_offset = NODE_OFFSET;
    o->head.list_op_pending = NULL;
    if (syscall(SYS_set_robust_list, &o->head, sizeof o->head) != 0)
      return mpx__err_errno("set_robust_list");
    h = &o->head;
  } else if (h->futex_offset != NODE_OFFSET) {
    return mpx__err(MPX_ENOTSUP,
                    "robust futex list has offset %ld, mpx locks need %ld: "
                    "unsupported C library",
                    h->futex_offset, NODE_OFFSET);
  }
  tls_head = h;
  return 0;
}

static inline int ensure_thread(void) {
  if (__builtin_expect(mpx__tls_tid != 0 && tls_head != NULL, 1)) return 0;
  return thread_setup();
}

int mpx__robust_ok(void) { return ensure_thread(); }

static inline lock_t *L(mpx_lock_t *l) { return (lock_t *)l; }
static inline const lock_t *CL(const mpx_lock_t *l) {
  return (const lock_t *)l;
}

/* The list links addresses of `next` fields; bit 0 of a link marks PI
 * mutexes in glibc and is kept as is. */
#define PTR_CLEAN(p) ((void *)((uintptr_t)(p) & ~(uintptr_t)1))
#define NODE_OF(nextp) ((lock_t *)((char *)PTR_CLEAN(nextp) - \
                                   offsetof(lock_t, next)))

static inline void list_add(lock_t *k) {
  struct robust_list_head *h = tls_head;
  void *first = h->list.next;
  /* first's prev slot is 8 bytes before its next field (also for the
   * head, whose prev slot precedes it). */
  *(void **)((char *)PTR_CLEAN(first) - sizeof(void *)) = &k->next;
  k->next = first;
  k->prev = &h->list;
  atomic_signal_fence(memory_order_seq_cst);
  h->list.next = (struct robust_list *)&k->next;
}

static inline void list_del(lock_t *k) {
  void *next = k->next, *prev = k->prev;
  *(void **)((char *)PTR_CLEAN(next) - sizeof(void *)) = prev;
  *(void **)PTR_CLEAN(prev) = next;
  atomic_signal_fence(memory_order_seq_cst);
  k->prev = k->next = NULL;
}

static inline void set_pending(lock_t *k) {
  tls_head->list_op_pending = k ? (struct robust_list *)&k->next : NULL;
  atomic_signal_fence(memory_order_seq_cst);
}

static int init_kind(mpx_lock_t *l, uint32_t kind) {
  int rc;
  if (l == NULL) return mpx__err(MPX_EINVAL, "lock is NULL");
  if ((rc = ensure_thread()) != 0) return rc;
  memset(l, 0, sizeof *l);
  lock_t *k = L(l);
  k->kind = kind;
  atomic_store_explicit(&k->state, ST_CONSISTENT, memory_order_relaxed);
  atomic_store_explicit(&k->word, 0, memory_order_relaxed);
  __atomic_store_n(&k->magic, LOCK_MAGIC, __ATOMIC_RELEASE);
  return 0;
}

int mpx_lock_init(mpx_lock_t *l) { return init_kind(l, KIND_LOCK); }
int mpx_rlock_init(mpx_lock_t *l) { return init_kind(l, KIND_RLOCK); }

/* took(), for a lock declared unrecoverable: it goes straight back. */
__attribute__((noinline, cold))
static int took_unrecoverable(lock_t *k) {
  uint32_t w = atomic_exchange_explicit(&k->word, 0, memory_order_release);
  set_pending(NULL);
  if (w & FUTEX_WAITERS) mpx__futex_wake(&k->word, INT_MAX);
  return MPX_ENOTRECOVERABLE;
}

/* The lock is ours now (word = tid, possibly with WAITERS), unless it was
 * declared unrecoverable: then it goes straight back. */
static inline int took(lock_t *k, uint32_t old) {
  if (__builtin_expect(atomic_load_explicit(&k->state, memory_order_relaxed)
                           == ST_NOTRECOVERABLE, 0))
    return took_unrecoverable(k);
  list_add(k);
  set_pending(NULL);
  k->count = 1;
  if (__builtin_expect(old & FUTEX_OWNER_DIED, 0)) {
    atomic_store_explicit(&k->state, ST_INCONSISTENT, memory_order_relaxed);
    return MPX_EOWNERDEAD;
  }
  return 0;
}

/* Out of line (not cold: contended locks live here), so that the fast
 * path of mpx__lock_acquire needs no stack frame of its own. */
__attribute__((noinline))
static int acquire_slow(lock_t *k, pid_t tid, double timeout) {
  int rc;
  double deadline;
  uint32_t want = (uint32_t)tid; /* after sleeping, keep WAITERS set */
  unsigned spins = timeout == 0 ? 0 : mpx__spin_limit();
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  deadline = mpx__deadline(timeout);
  for (;;) {
    uint32_t w = atomic_load_explicit(&k->word, memory_order_relaxed);
    if ((w & FUTEX_TID_MASK) == 0) {
      /* Free, or freed by the kernel after its owner died. */
      uint32_t nw = want | (w & FUTEX_WAITERS);
      if (atomic_compare_exchange_weak_explicit(&k->word, &w, nw,
                                                memory_order_acquire,
                                                memory_order_relaxed))
        return took(k, w);
      continue;
    }
    if (atomic_load_explicit(&k->state, memory_order_relaxed) ==
        ST_NOTRECOVERABLE) {
      set_pending(NULL);
      return MPX_ENOTRECOVERABLE;
    }
    if (spins > 0) {
      spins--;
      mpx__cpu_relax();
      continue;
    }
    if (timeout == 0) break;
    if (!(w & FUTEX_WAITERS)) {
      if (!atomic_compare_exchange_weak_explicit(&k->word, &w,
                                                 w | FUTEX_WAITERS,
                                                 memory_order_relaxed,
                                                 memory_order_relaxed))
        continue;
      w |= FUTEX_WAITERS;
    }
    want = (uint32_t)tid | FUTEX_WAITERS;
    if (mpx__futex_wait(&k->word, w, deadline) == MPX_ETIMEDOUT) break;
  }
  set_pending(NULL);
  return MPX_ETIMEDOUT;
}

/* The first CAS failed (w: the word it saw): ours already (RLock
 * recursion, or a deadlock), or held by another thread. */
__attribute__((noinline))
static int acquire_busy(lock_t *k, pid_t tid, double timeout, uint32_t w) {
  if (__builtin_expect((w & FUTEX_TID_MASK) == (uint32_t)tid, 0)) {
    set_pending(NULL);
    if (k->kind != KIND_RLOCK)
      return mpx__err(MPX_EDEADLK, "lock already held by this thread");
    if (k->count == INT32_MAX)
      return mpx__err(MPX_EOVERFLOW, "rlock recursion too deep");
    k->count++;
    return 0;
  }
  return acquire_slow(k, tid, timeout);
}

/* After the checks: the common case is a free, consistent lock, taken
 * with one CAS. Everything else is out of line, so this path needs no
 * stack frame. */
static inline int acquire_ready(lock_t *k, double timeout) {
  pid_t tid = mpx__tls_tid;
  set_pending(k);
  uint32_t w = 0;
  if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                           &k->word, &w, (uint32_t)tid,
                           memory_order_acquire, memory_order_relaxed), 1))
    return took(k, 0);
  return acquire_busy(k, tid, timeout, w);
}

/* A bad argument, or this thread's first lock (tid and robust head not
 * set up yet). */
__attribute__((noinline, cold))
static int acquire_first(lock_t *k, double timeout) {
  int rc;
  if (k->magic != LOCK_MAGIC || timeout != timeout)
    return mpx__err(MPX_EINVAL, timeout != timeout ? "timeout is NaN"
                                                   : "not an initialised lock");
  if ((rc = ensure_thread()) != 0) return rc;
  return acquire_ready(k, timeout);
}

int mpx__lock_acquire(mpx_lock_t *l, double timeout) {
  lock_t *k = L(l);
  if (__builtin_expect(k->magic != LOCK_MAGIC || timeout != timeout ||
                           mpx__tls_tid == 0 || tls_head == NULL, 0))
    return acquire_first(k, timeout);
  return acquire_ready(k, timeout);
}

int mpx__lock_release(mpx_lock_t *l) {
  lock_t *k = L(l);
  if (__builtin_expect(k->magic != LOCK_MAGIC, 0))
    return mpx__err(MPX_EINVAL, "not an initialised lock");
  pid_t tid = mpx__tls_tid;
  uint32_t w = atomic_load_explicit(&k->word, memory_order_relaxed);
  if (__builtin_expect(tid == 0 || (w & FUTEX_TID_MASK) != (uint32_t)tid, 0))
    return mpx__err(MPX_EPERM, "lock not held by this thread");
  if (k->count > 1) {
    k->count--;
    return 0;
  }
  k->count = 0;
  int dead = 0;
  if (__builtin_expect(atomic_load_explicit(&k->state, memory_order_relaxed)
                           == ST_INCONSISTENT, 0)) {
    atomic_store_explicit(&k->state, ST_NOTRECOVERABLE, memory_order_relaxed);
    dead = 1;
  }
  set_pending(k);
  list_del(k);
  w = atomic_exchange_explicit(&k->word, 0, memory_order_release);
  set_pending(NULL);
  if (w & FUTEX_WAITERS) mpx__futex_wake(&k->word, dead ? INT_MAX : 1);
  return 0;
}

int mpx_lock_consistent(mpx_lock_t *l) {
  lock_t *k = L(l);
  if (k->magic != LOCK_MAGIC)
    return mpx__err(MPX_EINVAL, "not an initialised lock");
  if (!mpx_lock_is_mine(l) ||
      atomic_load_explicit(&k->state, memory_order_relaxed) !=
          ST_INCONSISTENT)
    return mpx__err(MPX_EINVAL,
                    "lock is not held after its owner died");
  atomic_store_explicit(&k->state, ST_CONSISTENT, memory_order_relaxed);
  return 0;
}

int mpx_lock_locked(const mpx_lock_t *l) {
  const lock_t *k = CL(l);
  return (atomic_load_explicit(&((lock_t *)k)->word, memory_order_relaxed) &
          FUTEX_TID_MASK) != 0;
}

int mpx_lock_is_mine(const mpx_lock_t *l) {
  const lock_t *k = CL(l);
  pid_t tid = mpx__tid();
  return tid != 0 &&
         (atomic_load_explicit(&((lock_t *)k)->word, memory_order_relaxed) &
          FUTEX_TID_MASK) == (uint32_t)tid;
}

unsigned mpx_lock_count(const mpx_lock_t *l) {
  return mpx_lock_is_mine(l) ? CL(l)->count : 0;
}

void mpx_lock_destroy(mpx_lock_t *l) {
  if (l != NULL) L(l)->magic = 0;
}

/* The exported names are aliases, so mpx's own callers (the arena, the
 * other primitives) reach the code without a PLT hop. */
int mpx_lock_acquire(mpx_lock_t *l, double timeout)
    __attribute__((alias("mpx__lock_acquire")));
int mpx_lock_release(mpx_lock_t *l) __attribute__((alias("mpx__lock_release")));
