/* Queues in shared memory: a two-lock MPMC queue of slot chunks.
 *
 * Items are numbered from 0 in put order. `tail` is the number of items
 * committed (puts), `head` the number taken (gets); both only grow.
 * Producers serialize on plock and own tail and the tail chunk;
 * consumers serialize on clock and own head and the head chunk, so one
 * producer and one consumer never contend for a lock, and the only lines
 * they share are the slots themselves (each slot carries `pub`, the
 * index + 1 of the item it holds, which the consumer checks instead of
 * reading tail).
 *
 * Chunks are arena blocks of chunk_slots slots, linked by `next`, never
 * reused in place: the producer allocates one when it reaches the end of
 * its chunk, the consumer frees one when it has taken its last slot.
 *
 * Crash safety. Each side's lock is a robust futex lock; whoever takes it
 * after a holder died (MPX_EOWNERDEAD) repairs from that side's journal:
 *  - producer: pj_op (a put in progress), pj_t (the item number it is
 *    putting), pj_ref (its arena block), pj_chunk / pj_prev (a chunk
 *    being added after pj_prev). The put commits when the slot's pub is
 *    stored; tail follows. Repair judges by pj_t: tail past it, the put
 *    was complete; slot pj_t published, it moves tail; else the item is
 *    lost and counted. (Judging by the tail alone counted a put that had
 *    moved tail as lost and freed its queued block.)
 *  - consumer: cj_op, cj_head (head before the get), cj_ref (the block
 *    being taken), cj_chunk (a chunk being dropped). The get commits with
 *    the store of head; repair counts a committed, unreturned item lost.
 * Every journal or commit store is a release store, so the compiler keeps
 * them in program order and a SIGKILL leaves a prefix of them done.
 *
 * The one hazard the journal cannot cover by itself: repairing a half-done
 * chunk link writes pj_prev->next, so the consumer must not free pj_prev
 * while the producer's journal names it; it defers that chunk (c_defer)
 * and frees it on a later pass. At most one chunk can be named, so one
 * deferral slot suffices. */
#include <pthread.h>
#include <signal.h>
#include <stdalign.h>
#include <stdlib.h>
#include <string.h>

#include "ident.h"
#include "internal.h"
#include "futex.h"
#include "lock_internal.h"
#include "mpx/queue.h"

#define Q_MAGIC 0x5178706du /* "mpxQ" */
#define Q_VERSION 2u
#define F_JOINABLE 1u
#define SL_REF 1u
#define SLOT_HDR 16u
#define CHUNK_HDR 64u
#define INLINE_DEFAULT 112u
#define INLINE_MIN 16u /* a slot must hold a reference and a length */
#define INLINE_MAX 65536u
#define CHUNK_DEFAULT 256u
/* Sleepers wake at least this often to re-check: a waker killed between
 * its commit and its wake-up then costs latency, never a hang. */
#define WAIT_SLICE 0.1

#define JSET(field, v) \
  atomic_store_explicit(&(field), (v), memory_order_release)
#define JGET(field) atomic_load_explicit(&(field), memory_order_acquire)
#define RLX(field) atomic_load_explicit(&(field), memory_order_relaxed)

typedef struct {
  _Atomic uint64_t pub; /* index + 1 of the item held, once published */
  uint32_t len;         /* inline: payload bytes */
  uint32_t flags;       /* SL_REF: data holds (ref, len64) */
  unsigned char data[];
} slot_t;

typedef struct {
  /* Not at offset 0: a freed block keeps its free-list links there. */
  uint64_t pad0[2];
  _Atomic uint64_t next; /* reference of the following chunk, 0 until linked */
  uint64_t base;         /* index of the item in slot 0 */
  uint64_t pad1[4];
} chunk_t;

typedef struct {
  uint32_t magic, version;
  uint32_t flags, inline_max, slot_size, chunk_slots;
  uint64_t maxsize;
  _Atomic uint32_t refs;
  _Atomic uint32_t shut;

  alignas(64) mpx_lock_t plock;
  _Atomic uint64_t tail;
  _Atomic uint64_t tail_chunk;
  uint64_t head_cache; /* a recent head, to test "full" without a miss */
  _Atomic uint32_t pj_op;
  _Atomic uint64_t pj_t, pj_ref, pj_chunk, pj_prev;

  alignas(64) mpx_lock_t clock;
  _Atomic uint64_t head;
  _Atomic uint64_t head_chunk;
  _Atomic uint64_t c_defer;
  _Atomic uint32_t cj_op;
  _Atomic uint64_t cj_head, cj_ref, cj_chunk;

  alignas(64) _Atomic uint32_t put_ev, cwaiters; /* consumers sleep here */
  alignas(64) _Atomic uint32_t get_ev, pwaiters; /* producers sleep here */
  alignas(64) _Atomic uint64_t done;             /* joinable: task_done calls */
  _Atomic uint32_t done_ev, jwaiters;
  alignas(64) _Atomic uint64_t lost_puts, lost_gets, recoveries;
  _Atomic uint64_t futex_calls; /* waits and wakes: the queue's system calls */
} qhdr_t;

struct mpx_queue_s {
  mpx_arena_t *arena;
  qhdr_t *h;
  mpx_ref_t ref;
  pid_t holder; /* the process whose reference this handle holds */
  _Atomic bool closed;
  /* Chunk pointer caches, each used under its side's lock. */
  mpx_ref_t tc_ref, hc_ref;
  chunk_t *tc, *hc;
  unsigned char *scratch; /* get_msg's copy of an inline item */
};

/* Tests: SIGKILL this process at step n of a put or get, chosen by
 * MPX__QUEUE_CRASH_AT. Read once per process (again in a fork child, so
 * a child can setenv and then use its parent's handles). Only in the test
 * build (MPX_TESTING): the shipped library reads no such variable. */
#ifdef MPX_TESTING
static int crash_at = -1;
static pthread_once_t crash_once = PTHREAD_ONCE_INIT;

static void crash_reset(void) { crash_at = -1; }
static void crash_register(void) { pthread_atfork(NULL, NULL, crash_reset); }

static int crash_step(void) {
  if (__builtin_expect(crash_at >= 0, 1)) return crash_at;
  pthread_once(&crash_once, crash_register);
  const char *c = getenv("MPX__QUEUE_CRASH_AT");
  crash_at = c ? atoi(c) : 0;
  return crash_at;
}

#define CRASH_POINT(q, n)                                           \
  do {                                                              \
    (void)(q);                                                      \
    if (__builtin_expect(crash_step() == (n), 0)) raise(SIGKILL);   \
  } while (0)
#else
#define CRASH_POINT(q, n) ((void)(q))
#endif

/* ---- helpers --------------------------------------------------------------- */

static size_t chunk_bytes(const qhdr_t *h) {
  return CHUNK_HDR + (size_t)h->chunk_slots * h->slot_size;
}

static inline slot_t *slot_at(const qhdr_t *h, chunk_t *c, uint64_t i) {
  return (slot_t *)((char *)c + CHUNK_HDR + (i - c->base) * h->slot_size);
}

/* The chunk a shared reference names, checked live every time (a cached
 * pointer would follow a reference the arena no longer backs); NULL if
 * it is not, which only a corrupt queue can show. */
static inline chunk_t *chunk_ptr(mpx_queue_t *q, mpx_ref_t r, mpx_ref_t *cref,
                                 chunk_t **cptr) {
  *cptr = mpx_arena_ptr(q->arena, r);
  *cref = r;
  return *cptr;
}

static int broken_chain(mpx_queue_t *q, mpx_lock_t *l) {
  mpx__lock_release(l);
  (void)q;
  return mpx__err(MPX_EBROKEN, "queue: a chunk reference is stale (the "
                  "queue's memory was freed under it)");
}

static inline chunk_t *tail_chunk(mpx_queue_t *q) {
  return chunk_ptr(q, RLX(q->h->tail_chunk), &q->tc_ref, &q->tc);
}
static inline chunk_t *head_chunk(mpx_queue_t *q) {
  return chunk_ptr(q, RLX(q->h->head_chunk), &q->hc_ref, &q->hc);
}

/* Release a block the queue held, ignoring a reference that is already
 * stale (a reclaim, or a repair, got there first). */
static void drop_block(mpx_queue_t *q, mpx_ref_t r) {
  if (r != 0) (void)mpx_arena_release(q->arena, r);
}

static void wake(qhdr_t *h, _Atomic uint32_t *ev, _Atomic uint32_t *waiters,
                 int n) {
  atomic_thread_fence(memory_order_seq_cst);
  if (atomic_load_explicit(waiters, memory_order_relaxed) != 0) {
    atomic_fetch_add_explicit(ev, 1, memory_order_seq_cst);
    atomic_fetch_add_explicit(&h->futex_calls, 1, memory_order_relaxed);
    mpx__futex_wake(ev, n);
  }
}

typedef bool (*ready_fn)(const qhdr_t *h);

/* Spin, then sleep on ev until ready(h) or the deadline. 0 to re-check,
 * MPX_ETIMEDOUT. */
static int wait_for(qhdr_t *h, _Atomic uint32_t *ev,
                    _Atomic uint32_t *waiters, ready_fn ready,
                    double deadline) {
  for (unsigned n = mpx__spin_limit(); n > 0; n--) {
    if (ready(h)) return 0;
    mpx__cpu_relax();
  }
  atomic_fetch_add_explicit(waiters, 1, memory_order_seq_cst);
  uint32_t seen = atomic_load_explicit(ev, memory_order_seq_cst);
  int rc = 0;
  if (!ready(h)) {
    double now = mpx__now(), until = now + WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    atomic_fetch_add_explicit(&h->futex_calls, 1, memory_order_relaxed);
    rc = mpx__futex_wait(ev, seen, until);
    if (rc == MPX_ETIMEDOUT && (deadline < 0 || mpx__now() < deadline))
      rc = 0; /* only the slice ran out */
  }
  atomic_fetch_sub_explicit(waiters, 1, memory_order_seq_cst);
  return rc;
}

static bool has_items(const qhdr_t *h) {
  return JGET(h->tail) != JGET(h->head) || JGET(h->shut);
}
static bool has_room(const qhdr_t *h) {
  return JGET(h->tail) - JGET(h->head) < h->maxsize || JGET(h->shut);
}
static bool all_done(const qhdr_t *h) {
  return JGET(h->done) >= JGET(h->tail);
}

/* The "empty" / "full" result of a wait that gave up. */
static int gave_up(double timeout) {
  return timeout == 0 ? MPX_EAGAIN : MPX_ETIMEDOUT;
}

/* ---- repair ------------------------------------------------------------------ */

/* Under plock after its holder died. */
static void repair_producer(mpx_queue_t *q) {
  qhdr_t *h = q->h;
  mpx_ref_t nc = JGET(h->pj_chunk);
  if (nc != 0) {
    if (JGET(h->tail_chunk) == nc) {
      /* Switched to the new chunk; finish linking it. pj_prev cannot have
       * been freed: the consumer defers a chunk the journal names. */
      chunk_t *prev = mpx_arena_ptr(q->arena, JGET(h->pj_prev));
      uint64_t zero = 0;
      if (prev != NULL)
        atomic_compare_exchange_strong(&prev->next, &zero, nc);
    } else {
      drop_block(q, nc);
    }
    JSET(h->pj_chunk, 0);
  }
  /* Also a pj_prev left behind by a death after the chunk was linked:
   * nothing refers to it now. */
  JSET(h->pj_prev, 0);
  if (JGET(h->pj_op) && JGET(h->tail) == JGET(h->pj_t)) {
    /* The put of item t had not moved tail: committed if it published
     * slot t, else lost. (tail past t: the put was complete.) */
    uint64_t t = JGET(h->pj_t);
    chunk_t *c = mpx_arena_ptr(q->arena, JGET(h->tail_chunk));
    bool published = c != NULL && t >= c->base &&
                     t < c->base + h->chunk_slots &&
                     JGET(slot_at(h, c, t)->pub) == t + 1;
    if (published) {
      JSET(h->tail, t + 1);
    } else {
      atomic_fetch_add(&h->lost_puts, 1);
      drop_block(q, JGET(h->pj_ref));
    }
  }
  JSET(h->pj_ref, 0);
  JSET(h->pj_op, 0);
  q->tc_ref = 0;
}

static void drop_chunk(mpx_queue_t *q, mpx_ref_t old);

/* Under clock after its holder died. */
static void repair_consumer(mpx_queue_t *q) {
  qhdr_t *h = q->h;
  mpx_ref_t oc = JGET(h->cj_chunk);
  if (oc != 0) {
    if (oc != JGET(h->head_chunk) && oc != JGET(h->c_defer)) drop_chunk(q, oc);
    JSET(h->cj_chunk, 0);
  }
  if (JGET(h->cj_op)) {
    mpx_ref_t r = JGET(h->cj_ref);
    if (JGET(h->head) != JGET(h->cj_head)) {
      /* Committed: the item left with the process that died. */
      atomic_fetch_add(&h->lost_gets, 1);
      drop_block(q, r);
      /* Nobody can mark it done now: do it for them. */
      if (h->flags & F_JOINABLE) {
        atomic_fetch_add(&h->done, 1);
        wake(h, &h->done_ev, &h->jwaiters, INT32_MAX);
      }
    } else if (r != 0) {
      (void)mpx_arena_give(q->arena, r, 0); /* still queued: the queue's */
    }
  }
  JSET(h->cj_ref, 0);
  JSET(h->cj_op, 0);
  q->hc_ref = 0;
}

static int lock_side(mpx_queue_t *q, mpx_lock_t *l,
                     void (*repair)(mpx_queue_t *)) {
  int rc = mpx__lock_acquire(l, -1);
  if (__builtin_expect(rc == 0, 1)) return 0;
  if (rc != MPX_EOWNERDEAD) return rc;
  repair(q);
  atomic_fetch_add(&q->h->recoveries, 1);
  mpx_lock_consistent(l);
  MPX__WARN("queue: a process died inside a %s; repaired",
            repair == repair_producer ? "put" : "get");
  return 0;
}

/* ---- chunks ------------------------------------------------------------------ */

/* Under plock: append a chunk starting at item t after the tail chunk c. */
static int grow(mpx_queue_t *q, chunk_t *c, uint64_t t, double deadline) {
  qhdr_t *h = q->h;
  mpx_ref_t r;
  double left = deadline < 0 ? -1 : deadline - mpx__now();
  if (deadline >= 0 && left < 0) left = 0;
  int rc = mpx_arena_alloc(q->arena, chunk_bytes(h), left, &r);
  if (rc != 0) return rc;
  chunk_t *n = mpx_arena_ptr(q->arena, r);
  atomic_store_explicit(&n->next, 0, memory_order_relaxed);
  n->base = t;
  for (uint32_t i = 0; i < h->chunk_slots; i++)
    atomic_store_explicit(&slot_at(h, n, t + i)->pub, 0, memory_order_relaxed);
  JSET(h->pj_prev, RLX(h->tail_chunk));
  JSET(h->pj_chunk, r);
  CRASH_POINT(q, 1);
  (void)mpx_arena_give(q->arena, r, 0);
  JSET(h->tail_chunk, r);
  CRASH_POINT(q, 2);
  atomic_store_explicit(&c->next, r, memory_order_release);
  CRASH_POINT(q, 3);
  JSET(h->pj_chunk, 0);
  JSET(h->pj_prev, 0);
  return 0;
}

/* Under clock: free a drained chunk, or defer it while the producer's
 * journal names it. */
static void drop_chunk(mpx_queue_t *q, mpx_ref_t old) {
  qhdr_t *h = q->h;
  mpx_ref_t d = JGET(h->c_defer);
  if (d != 0 && d != JGET(h->pj_prev)) {
    JSET(h->c_defer, 0);
    drop_block(q, d);
  }
  if (old == JGET(h->pj_prev)) {
    if (JGET(h->c_defer) == 0) JSET(h->c_defer, old);
    return; /* a second one cannot be named by the journal: not reached */
  }
  drop_block(q, old);
}

/* ---- lifetime ---------------------------------------------------------------- */

/* Arena blocks are 16-byte aligned; the header wants its own cache lines,
 * so it sits at the first 64-byte boundary of its block (the same offset
 * in every process: mappings are page-aligned). */
#define HDR_BLOCK (sizeof(qhdr_t) + 48)

static qhdr_t *hdr_of(mpx_arena_t *a, mpx_ref_t ref) {
  uintptr_t p = (uintptr_t)mpx_arena_ptr(a, ref);
  return p ? (qhdr_t *)((p + 63) & ~(uintptr_t)63) : NULL;
}

static int handle_new(mpx_queue_t **out, mpx_arena_t *a, mpx_ref_t ref,
                      qhdr_t *h) {
  mpx_queue_t *q = calloc(1, sizeof *q);
  if (q == NULL) return mpx__err(MPX_ENOMEM, "queue: out of memory");
  q->arena = a;
  q->h = h;
  q->ref = ref;
  q->holder = mpx__pid();
  *out = q;
  return 0;
}

int mpx_queue_new(mpx_queue_t **out, const mpx_queue_opts_t *opts) {
  mpx_queue_opts_t o = {0};
  mpx_ref_t ref, cref;
  int rc;
  if (out == NULL) return mpx__err(MPX_EINVAL, "queue: NULL argument");
  if (opts) o = *opts;
  if (o.inline_max == 0) o.inline_max = INLINE_DEFAULT;
  if (o.chunk_slots == 0) o.chunk_slots = CHUNK_DEFAULT;
  if (o.inline_max < INLINE_MIN) o.inline_max = INLINE_MIN;
  if (o.inline_max > INLINE_MAX)
    return mpx__err(MPX_EINVAL, "queue: inline_max %zu is above %u",
                    o.inline_max, INLINE_MAX);
  if (o.chunk_slots < 8 || o.chunk_slots > 65536)
    return mpx__err(MPX_EINVAL, "queue: chunk_slots %zu is not in 8..65536",
                    o.chunk_slots);
  if (o.arena == NULL && (rc = mpx_shared_heap(&o.arena)) != 0) return rc;
  if ((rc = mpx_arena_alloc(o.arena, HDR_BLOCK, 0, &ref)) != 0) return rc;
  qhdr_t *h = hdr_of(o.arena, ref);
  memset(h, 0, sizeof *h);
  h->version = Q_VERSION;
  h->flags = o.joinable ? F_JOINABLE : 0;
  h->inline_max = (uint32_t)((o.inline_max + 15) & ~(size_t)15);
  h->slot_size = SLOT_HDR + h->inline_max;
  h->chunk_slots = (uint32_t)o.chunk_slots;
  h->maxsize = o.maxsize;
  atomic_init(&h->refs, 1);
  if ((rc = mpx_lock_init(&h->plock)) != 0 ||
      (rc = mpx_lock_init(&h->clock)) != 0 ||
      (rc = mpx_arena_alloc(o.arena, chunk_bytes(h), 0, &cref)) != 0) {
    mpx_arena_release(o.arena, ref);
    return rc;
  }
  chunk_t *c = mpx_arena_ptr(o.arena, cref);
  memset(c, 0, CHUNK_HDR);
  for (uint32_t i = 0; i < h->chunk_slots; i++)
    atomic_init(&slot_at(h, c, i)->pub, 0);
  atomic_init(&h->tail_chunk, cref);
  atomic_init(&h->head_chunk, cref);
  /* The queue's blocks belong to no process: a creator that dies does
   * not take the queue with it. */
  mpx_arena_give(o.arena, cref, 0);
  mpx_arena_give(o.arena, ref, 0);
  __atomic_store_n(&h->magic, Q_MAGIC, __ATOMIC_RELEASE);
  if ((rc = handle_new(out, o.arena, ref, h)) != 0) {
    mpx_arena_release(o.arena, cref);
    mpx_arena_release(o.arena, ref);
  }
  return rc;
}

int mpx_queue_attach(mpx_queue_t **out, mpx_arena_t *arena, mpx_ref_t ref) {
  if (out == NULL || arena == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  qhdr_t *h = hdr_of(arena, ref);
  if (h == NULL)
    return mpx__err(MPX_ESTALE, "queue: reference %#llx is not a live block",
                    (unsigned long long)ref);
  if (mpx_arena_block_size(arena, ref) < HDR_BLOCK || h->magic != Q_MAGIC ||
      h->version != Q_VERSION)
    return mpx__err(MPX_EINVAL, "queue: block %#llx is not a queue",
                    (unsigned long long)ref);
  uint32_t n = atomic_load(&h->refs);
  do {
    if (n == 0) return mpx__err(MPX_ESTALE, "queue: being destroyed");
  } while (!atomic_compare_exchange_weak(&h->refs, &n, n + 1));
  int rc = handle_new(out, arena, ref, h);
  if (rc != 0) atomic_fetch_sub(&h->refs, 1);
  return rc;
}

mpx_ref_t mpx_queue_ref(const mpx_queue_t *q) { return q ? q->ref : 0; }
mpx_arena_t *mpx_queue_arena(const mpx_queue_t *q) {
  return q ? q->arena : NULL;
}

/* The last reference is gone: free every chunk and every queued block. */
static void destroy(mpx_queue_t *q) {
  qhdr_t *h = q->h;
  h->magic = 0;
  uint64_t i = RLX(h->head), t = RLX(h->tail);
  mpx_ref_t cr = RLX(h->head_chunk);
  while (cr != 0) {
    chunk_t *c = mpx_arena_ptr(q->arena, cr);
    if (c == NULL) break;
    for (; i < t && i < c->base + h->chunk_slots; i++) {
      slot_t *s = slot_at(h, c, i);
      if (RLX(s->pub) == i + 1 && (s->flags & SL_REF)) {
        mpx_ref_t r;
        memcpy(&r, s->data, sizeof r);
        drop_block(q, r);
      }
    }
    mpx_ref_t next = RLX(c->next);
    drop_block(q, cr);
    cr = next;
  }
  drop_block(q, RLX(h->c_defer));
  drop_block(q, RLX(h->pj_chunk));
  drop_block(q, RLX(h->pj_ref));
  drop_block(q, RLX(h->cj_ref));
  drop_block(q, q->ref);
}

void mpx_queue_free(mpx_queue_t *q) {
  if (q == NULL) return;
  if (q->holder == mpx__pid() && atomic_fetch_sub(&q->h->refs, 1) == 1)
    destroy(q);
  free(q->scratch);
  free(q);
}

/* ---- put ------------------------------------------------------------------------ */

/* Commit one item: inline bytes (ref 0) or an arena block holding len
 * bytes. */
static int put_commit(mpx_queue_t *q, const void *data, size_t len,
                      mpx_ref_t ref, double timeout) {
  qhdr_t *h = q->h;
  int rc;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  double deadline = mpx__deadline(timeout);
  for (;;) {
    if (atomic_load_explicit(&q->closed, memory_order_relaxed))
      return mpx__err(MPX_ECLOSED, "queue: this handle was closed");
    if (JGET(h->shut)) return mpx__err(MPX_ECLOSED, "queue: shut down");
    if ((rc = lock_side(q, &h->plock, repair_producer)) != 0) return rc;
    uint64_t t = RLX(h->tail);
    if (h->maxsize != 0 && t - h->head_cache >= h->maxsize) {
      h->head_cache = JGET(h->head);
      if (t - h->head_cache >= h->maxsize) {
        mpx__lock_release(&h->plock);
        if (timeout == 0) return gave_up(timeout);
        if ((rc = wait_for(h, &h->get_ev, &h->pwaiters, has_room, deadline)) != 0)
          return rc == MPX_ETIMEDOUT ? gave_up(timeout) : rc;
        continue;
      }
    }
    JSET(h->pj_t, t);
    JSET(h->pj_op, 1);
    chunk_t *c = tail_chunk(q);
    if (c == NULL) {
      JSET(h->pj_op, 0);
      return broken_chain(q, &h->plock);
    }
    if (t == c->base + h->chunk_slots) {
      if ((rc = grow(q, c, t, deadline)) != 0) {
        JSET(h->pj_op, 0);
        mpx__lock_release(&h->plock);
        return rc;
      }
      if ((c = tail_chunk(q)) == NULL) {
        JSET(h->pj_op, 0);
        return broken_chain(q, &h->plock);
      }
    }
    slot_t *s = slot_at(h, c, t);
    if (ref != 0) {
      uint64_t l64 = len;
      JSET(h->pj_ref, ref);
      (void)mpx_arena_give(q->arena, ref, 0);
      memcpy(s->data, &ref, sizeof ref);
      memcpy(s->data + 8, &l64, sizeof l64);
      s->flags = SL_REF;
      s->len = 0;
    } else {
      s->flags = 0;
      s->len = (uint32_t)len;
      if (len) memcpy(s->data, data, len);
    }
    CRASH_POINT(q, 4);
    atomic_store_explicit(&s->pub, t + 1, memory_order_release); /* commit */
    CRASH_POINT(q, 5);
    JSET(h->tail, t + 1);
    CRASH_POINT(q, 6);
    JSET(h->pj_ref, 0);
    JSET(h->pj_op, 0);
    mpx__lock_release(&h->plock);
    wake(h, &h->put_ev, &h->cwaiters, 1);
    return 0;
  }
}

int mpx_queue_put(mpx_queue_t *q, const void *data, size_t len,
                  double timeout) {
  if (q == NULL || (data == NULL && len != 0))
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  if (len <= q->h->inline_max) return put_commit(q, data, len, 0, timeout);
  mpx_queue_loan_t loan;
  int rc = mpx_queue_loan(q, len, &loan, timeout);
  if (rc != 0) return rc;
  memcpy(loan.data, data, len);
  if ((rc = mpx_queue_publish(q, &loan, len, timeout)) != 0)
    mpx_queue_loan_cancel(q, &loan);
  return rc;
}

int mpx_queue_put_obj(mpx_queue_t *q, const mpx_codec_t *codec,
                      const mpx_obj_t *obj, double timeout) {
  if (q == NULL || codec == NULL || obj == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  /* A large object the codec can size is encoded straight into a loaned
   * block: no copy at all. */
  size_t hint = codec->size_hint ? codec->size_hint(obj, NULL) : 0;
  int rc;
  if (hint > q->h->inline_max) {
    mpx_queue_loan_t loan;
    mpx_wbuf_t b;
    if ((rc = mpx_queue_loan(q, hint, &loan, timeout)) != 0) return rc;
    mpx_wbuf_init_fixed(&b, loan.data, loan.cap);
    if ((rc = mpx_codec_encode(codec, obj, &b, NULL)) == 0)
      rc = mpx_queue_publish(q, &loan, b.len, timeout);
    if (rc != 0) mpx_queue_loan_cancel(q, &loan);
    return rc;
  }
  mpx_wbuf_t b;
  mpx_wbuf_init(&b);
  if ((rc = mpx_codec_encode(codec, obj, &b, NULL)) == 0)
    rc = mpx_queue_put(q, b.data, b.len, timeout);
  mpx_wbuf_free(&b);
  return rc;
}

/* ---- loans ------------------------------------------------------------------------ */

int mpx_queue_loan(mpx_queue_t *q, size_t size, mpx_queue_loan_t *loan,
                   double timeout) {
  int rc;
  if (q == NULL || loan == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  memset(loan, 0, sizeof *loan);
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  if (atomic_load_explicit(&q->closed, memory_order_relaxed))
    return mpx__err(MPX_ECLOSED, "queue: this handle was closed");
  if ((rc = mpx_arena_alloc(q->arena, size ? size : 1, timeout, &loan->ref)) != 0)
    return rc;
  loan->data = mpx_arena_ptr(q->arena, loan->ref);
  loan->cap = mpx_arena_block_size(q->arena, loan->ref);
  return 0;
}

int mpx_queue_publish(mpx_queue_t *q, mpx_queue_loan_t *loan, size_t len,
                      double timeout) {
  if (q == NULL || loan == NULL || loan->ref == 0)
    return mpx__err(MPX_EINVAL, "queue: no loan to publish");
  if (len > loan->cap)
    return mpx__err(MPX_EINVAL, "queue: %zu bytes published from a %zu-byte loan",
                    len, loan->cap);
  int rc = put_commit(q, NULL, len, loan->ref, timeout);
  if (rc == 0) memset(loan, 0, sizeof *loan);
  return rc;
}

void mpx_queue_loan_cancel(mpx_queue_t *q, mpx_queue_loan_t *loan) {
  if (q == NULL || loan == NULL || loan->ref == 0) return;
  drop_block(q, loan->ref);
  memset(loan, 0, sizeof *loan);
}

/* ---- get ---------------------------------------------------------------------------- */

enum { TAKE_INTO, TAKE_MALLOC, TAKE_MSG };

/* Take the next item. INTO: copy into buf (cap bytes). MALLOC: into a new
 * buffer (*out). MSG: fill *msg (in place for a block, scratch copy for
 * an inline item). */
/* Kept in one body (about 100 lines): its journal stores, commit and crash
 * points must be read in the order a SIGKILL can cut them, which is the
 * order of this function; put_commit is written the same way. */
static int take(mpx_queue_t *q, int mode, void *buf, size_t cap, void **out,
                size_t *lenp, mpx_queue_msg_t *msg, double timeout) {
  qhdr_t *h = q->h;
  int rc;
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  double deadline = mpx__deadline(timeout);
  for (;;) {
    if ((rc = lock_side(q, &h->clock, repair_consumer)) != 0) return rc;
    uint64_t hd = RLX(h->head);
    chunk_t *c = head_chunk(q);
    slot_t *s = NULL;
    if (c == NULL) return broken_chain(q, &h->clock);
    if (hd == c->base + h->chunk_slots) {
      mpx_ref_t next = atomic_load_explicit(&c->next, memory_order_acquire);
      if (next != 0) {
        mpx_ref_t old = RLX(h->head_chunk);
        JSET(h->cj_chunk, old);
        JSET(h->head_chunk, next);
        CRASH_POINT(q, 11);
        drop_chunk(q, old);
        CRASH_POINT(q, 14);
        JSET(h->cj_chunk, 0);
        if ((c = head_chunk(q)) == NULL) return broken_chain(q, &h->clock);
      }
    }
    if (hd < c->base + h->chunk_slots) {
      s = slot_at(h, c, hd);
      if (atomic_load_explicit(&s->pub, memory_order_acquire) != hd + 1)
        s = NULL;
    }
    if (s == NULL) {
      mpx__lock_release(&h->clock);
      if (JGET(h->shut)) return mpx__err(MPX_ECLOSED, "queue: shut down");
      if (timeout == 0) return gave_up(timeout);
      if ((rc = wait_for(h, &h->put_ev, &h->cwaiters, has_items, deadline)) != 0)
        return rc == MPX_ETIMEDOUT ? gave_up(timeout) : rc;
      continue;
    }
    mpx_ref_t ref = 0;
    uint64_t len = s->len;
    const void *src = s->data;
    if (s->flags & SL_REF) {
      memcpy(&ref, s->data, sizeof ref);
      memcpy(&len, s->data + 8, sizeof len);
      src = mpx_arena_ptr(q->arena, ref);
      if (src == NULL) {
        /* Freed under the queue (a reclaim for the wrong pid): the item
         * is gone; skip it and say so. */
        atomic_fetch_add(&h->lost_gets, 1);
        JSET(h->head, hd + 1);
        mpx__lock_release(&h->clock);
        MPX__WARN("queue: item %llu's block was freed while queued; skipped",
                  (unsigned long long)hd);
        continue;
      }
    }
    if (mode == TAKE_INTO && len > cap) {
      mpx__lock_release(&h->clock);
      *lenp = (size_t)len;
      return mpx__err(MPX_ETOOSHORT, "queue: item of %llu bytes, buffer of %zu",
                      (unsigned long long)len, cap);
    }
    void *dst = NULL;
    if (mode == TAKE_INTO) {
      dst = buf;
    } else if (mode == TAKE_MALLOC) {
      if (len != 0 && (dst = malloc((size_t)len)) == NULL) {
        mpx__lock_release(&h->clock);
        return mpx__err(MPX_ENOMEM, "queue: out of memory for %llu bytes",
                        (unsigned long long)len);
      }
    } else if (ref == 0) {
      if (q->scratch == NULL && (q->scratch = malloc(h->inline_max)) == NULL) {
        mpx__lock_release(&h->clock);
        return mpx__err(MPX_ENOMEM, "queue: out of memory");
      }
      dst = q->scratch;
    }
    JSET(h->cj_head, hd);
    JSET(h->cj_ref, ref);
    JSET(h->cj_op, 1);
    if (dst != NULL && len != 0) memcpy(dst, src, (size_t)len);
    CRASH_POINT(q, 12);
    JSET(h->head, hd + 1); /* commit */
    CRASH_POINT(q, 13);
    if (ref != 0) {
      if (mode == TAKE_MSG)
        (void)mpx_arena_give(q->arena, ref, mpx__pid());
      else
        drop_block(q, ref);
    }
    JSET(h->cj_ref, 0);
    JSET(h->cj_op, 0);
    mpx__lock_release(&h->clock);
    if (h->maxsize != 0) wake(h, &h->get_ev, &h->pwaiters, 1);
    *lenp = (size_t)len;
    if (mode == TAKE_MALLOC) *out = dst;
    if (mode == TAKE_MSG) {
      msg->data = ref ? src : dst;
      msg->len = (size_t)len;
      msg->ref = ref;
    }
    return 0;
  }
}

int mpx_queue_get_into(mpx_queue_t *q, void *buf, size_t cap, size_t *len,
                       double timeout) {
  if (q == NULL || len == NULL || (buf == NULL && cap != 0))
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  return take(q, TAKE_INTO, buf, cap, NULL, len, NULL, timeout);
}

int mpx_queue_get(mpx_queue_t *q, void **data, size_t *len, double timeout) {
  if (q == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  *data = NULL;
  return take(q, TAKE_MALLOC, NULL, 0, data, len, NULL, timeout);
}

int mpx_queue_get_msg(mpx_queue_t *q, mpx_queue_msg_t *msg, double timeout) {
  size_t len;
  if (q == NULL || msg == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  memset(msg, 0, sizeof *msg);
  return take(q, TAKE_MSG, NULL, 0, NULL, &len, msg, timeout);
}

void mpx_queue_msg_release(mpx_queue_t *q, mpx_queue_msg_t *msg) {
  if (q == NULL || msg == NULL) return;
  drop_block(q, msg->ref);
  memset(msg, 0, sizeof *msg);
}

int mpx_queue_get_obj(mpx_queue_t *q, const mpx_codec_t *codec,
                      mpx_obj_t **obj, double timeout) {
  mpx_queue_msg_t m = {0};
  if (codec == NULL || obj == NULL)
    return mpx__err(MPX_EINVAL, "queue: NULL argument");
  *obj = NULL;
  int rc = mpx_queue_get_msg(q, &m, timeout);
  if (rc != 0) return rc;
  rc = mpx_codec_decode(codec, m.data, m.len, NULL, obj);
  mpx_queue_msg_release(q, &m);
  return rc;
}

/* ---- state ---------------------------------------------------------------------------- */

size_t mpx_queue_qsize(const mpx_queue_t *q) {
  if (q == NULL) return 0;
  uint64_t hd = JGET(q->h->head), t = JGET(q->h->tail);
  return t > hd ? (size_t)(t - hd) : 0;
}

bool mpx_queue_empty(const mpx_queue_t *q) { return mpx_queue_qsize(q) == 0; }

bool mpx_queue_full(const mpx_queue_t *q) {
  return q != NULL && q->h->maxsize != 0 && mpx_queue_qsize(q) >= q->h->maxsize;
}

void mpx_queue_close(mpx_queue_t *q) {
  if (q != NULL) atomic_store(&q->closed, true);
}

void mpx_queue_shutdown(mpx_queue_t *q) {
  if (q == NULL) return;
  qhdr_t *h = q->h;
  atomic_store(&h->shut, 1);
  atomic_fetch_add(&h->put_ev, 1);
  atomic_fetch_add(&h->get_ev, 1);
  mpx__futex_wake(&h->put_ev, INT32_MAX);
  mpx__futex_wake(&h->get_ev, INT32_MAX);
}

int mpx_queue_stats(const mpx_queue_t *q, mpx_queue_stats_t *st) {
  if (q == NULL || st == NULL) return mpx__err(MPX_EINVAL, "queue: NULL argument");
  const qhdr_t *h = q->h;
  memset(st, 0, sizeof *st);
  st->puts = JGET(h->tail);
  st->gets = JGET(h->head);
  st->size = mpx_queue_qsize(q);
  if (h->flags & F_JOINABLE) {
    uint64_t d = JGET(h->done);
    st->unfinished = st->puts > d ? st->puts - d : 0;
  }
  st->lost_puts = JGET(h->lost_puts);
  st->lost_gets = JGET(h->lost_gets);
  st->recoveries = JGET(h->recoveries);
  st->futex_calls = JGET(h->futex_calls);
  /* Chunks are consecutive from the head chunk to the tail chunk. */
  const chunk_t *hc = mpx_arena_ptr(q->arena, JGET(h->head_chunk));
  const chunk_t *tc = mpx_arena_ptr(q->arena, JGET(h->tail_chunk));
  if (hc != NULL && tc != NULL && tc->base >= hc->base)
    st->chunks = (size_t)((tc->base - hc->base) / h->chunk_slots) + 1;
  if (JGET(h->c_defer) != 0) st->chunks++;
  return 0;
}

/* ---- JoinableQueue ------------------------------------------------------------------------ */

int mpx_queue_task_done(mpx_queue_t *q) {
  if (q == NULL) return mpx__err(MPX_EINVAL, "queue: NULL argument");
  qhdr_t *h = q->h;
  if (!(h->flags & F_JOINABLE))
    return mpx__err(MPX_EINVAL, "queue: task_done on a queue that is not joinable");
  uint64_t d = atomic_load(&h->done);
  do {
    if (d >= JGET(h->tail))
      return mpx__err(MPX_ESTATE, "queue: task_done() called too many times");
  } while (!atomic_compare_exchange_weak(&h->done, &d, d + 1));
  if (d + 1 >= JGET(h->tail)) wake(h, &h->done_ev, &h->jwaiters, INT32_MAX);
  return 0;
}

int mpx_queue_join(mpx_queue_t *q, double timeout) {
  int rc;
  if (q == NULL) return mpx__err(MPX_EINVAL, "queue: NULL argument");
  qhdr_t *h = q->h;
  if (!(h->flags & F_JOINABLE))
    return mpx__err(MPX_EINVAL, "queue: join on a queue that is not joinable");
  if ((rc = mpx__timeout_check(timeout)) != 0) return rc;
  double deadline = mpx__deadline(timeout);
  while (!all_done(h)) {
    if (timeout == 0) return MPX_EAGAIN;
    if ((rc = wait_for(h, &h->done_ev, &h->jwaiters, all_done, deadline)) != 0)
      return rc;
  }
  return 0;
}
