/* The arena allocator: a heap inside a shared segment, usable by every
 * process that maps it.
 *
 * Layout: an arena header (lock, free-list heads, accounting), then the
 * heap, tiled by blocks. Each block starts with a 32-byte header (size,
 * previous block's size, a state word, owner pid); a free block's payload
 * holds its free-list links. Free blocks sit in segregated lists: exact
 * 16-byte classes below 1 KiB, then eight lists per power of two (as in
 * TLSF), with a bitmap to find a non-empty list in a few instructions.
 * Freed blocks merge with free neighbours at once, so no two free blocks
 * are ever adjacent.
 *
 * Crash safety: the block sizes alone make the heap walkable, and every
 * step that changes the tiling (a split, a merge) is one 8-byte store done
 * after the new header is complete. A process killed while holding the
 * lock may leave free lists and counters half-updated but never the walk,
 * so the next lock holder (told by MPX_EOWNERDEAD) rebuilds the lists and
 * counters from the walk. Blocks the dead process owned stay allocated
 * until mpx_arena_reclaim(pid).
 *
 * The state word packs generation (32 bits), a magic byte, the state (2
 * bits) and the refcount (22 bits), so retain and release are lock-free
 * CAS loops that check the generation of the reference they were given;
 * only the release that drops the last reference takes the lock.
 *
 * Generations come from one arena-wide 64-bit counter: every free and
 * every new header (a split) takes the next value. So the generations
 * seen at one spot only ever grow, whatever happened to the bytes there,
 * and a stale reference cannot name a live block again before 2^32 more
 * frees. (A per-block 16-bit generation that restarted at 0 when a split
 * wrote a header over old payload made stale references valid again: a
 * queue then freed a live chunk through a journal's leftover reference.)
 * A reference is the generation (high 32 bits) and the offset in 16-byte
 * units (low 32 bits), so an arena holds at most 64 GiB. */
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ident.h"
#include "internal.h"
#include "futex.h"
#include "lock_internal.h"
#include "mpx/shm.h"

#define ARENA_MAGIC 0x6d707841u /* "mpxA" */
#define ARENA_VERSION 2u
#define ALIGN 16u
#define HDR 32u
#define MIN_BLOCK 48u          /* header + two free-list links */
#define EXACT_LIMIT 1024u      /* exact classes below this size */
#define N_EXACT (EXACT_LIMIT / ALIGN)
#define SL_BITS 3u
#define SL (1u << SL_BITS)
#define FL_MIN 10u             /* log2(EXACT_LIMIT) */
#define FL_MAX 47u
#define N_BINS (N_EXACT + (FL_MAX - FL_MIN + 1) * SL)
#define BM_WORDS ((N_BINS + 63) / 64)
#define OFF_LIMIT (UINT64_C(1) << 36) /* offsets are 32 bits of 16 bytes */
#define DEFAULT_SIZE ((size_t)64 << 20)

/* State word: gen[63:32] magic[31:24] state[23:22] refcount[21:0]. */
#define ST_MAGIC UINT64_C(0xA5)
#define ST_FREE UINT64_C(0x01)
#define ST_USED UINT64_C(0x02)
#define RC_MAX ((UINT32_C(1) << 22) - 1)
#define ST(gen, state, rc)                                         \
  (((uint64_t)(gen) << 32) | (ST_MAGIC << 24) | ((state) << 22) | \
   (uint64_t)(rc))
#define ST_GEN(w) ((uint32_t)((w) >> 32))
#define ST_MAGIC_OF(w) (((w) >> 24) & 0xFF)
#define ST_STATE(w) (((w) >> 22) & 0x3)
#define ST_RC(w) ((uint32_t)(w) & RC_MAX)

typedef struct {
  uint64_t size;       /* whole block, header included; multiple of 16 */
  uint64_t prev_size;  /* the block before (0 for the first); a hint */
  _Atomic uint64_t st;
  _Atomic int32_t owner;
  uint32_t req;        /* bytes asked for */
} blk_t;

typedef struct {
  uint64_t next, prev; /* arena offsets of blocks, 0 = none */
} links_t;

typedef struct {
  uint32_t magic, version;
  uint64_t size;       /* arena bytes, header included */
  uint64_t heap_off, heap_end;
  mpx_lock_t lock;
  _Atomic uint32_t free_seq; /* futex: bumped when space frees up */
  _Atomic uint32_t waiting;
  uint32_t broken;
  uint32_t pad_;
  uint64_t used, n_used, n_free, recoveries;
  uint64_t gen_seq; /* the last generation handed out (low 32 bits used) */
  uint64_t bitmap[BM_WORDS];
  uint64_t heads[N_BINS];
} hdr_t;

struct mpx_arena_s {
  mpx_segment_t *seg;
  int own_seg;
#ifdef MPX_TESTING
  int crash_at; /* tests: SIGKILL self at this step (MPX__ARENA_CRASH_AT) */
#endif
  char *base;
  hdr_t *h;
};

_Static_assert(sizeof(blk_t) == HDR, "block header size");

/* Crash injection for the recovery tests: the steps of an allocation
 * (1-4) and of a free (5-7) at which a process may die holding the lock.
 * Only in the test build (MPX_TESTING). */
#ifdef MPX_TESTING
#define CRASH_POINT(a, n)                                        \
  do {                                                           \
    if (__builtin_expect((a)->crash_at == (n), 0)) raise(SIGKILL); \
  } while (0)
#else
#define CRASH_POINT(a, n) ((void)(a))
#endif

static inline blk_t *BLK(const mpx_arena_t *a, uint64_t off) {
  return (blk_t *)(a->base + off);
}
static inline links_t *LNK(const mpx_arena_t *a, uint64_t off) {
  return (links_t *)(a->base + off + HDR);
}

/* ---- bins ---------------------------------------------------------- */

static inline unsigned bin_of(uint64_t size) {
  if (size < EXACT_LIMIT) return (unsigned)(size / ALIGN);
  unsigned fl = 63u - (unsigned)__builtin_clzll(size);
  if (fl > FL_MAX) fl = FL_MAX;
  unsigned sl = (unsigned)(size >> (fl - SL_BITS)) & (SL - 1);
  return N_EXACT + (fl - FL_MIN) * SL + sl;
}

static void bin_push(mpx_arena_t *a, uint64_t off) {
  hdr_t *h = a->h;
  unsigned b = bin_of(BLK(a, off)->size);
  links_t *l = LNK(a, off);
  l->prev = 0;
  l->next = h->heads[b];
  if (l->next) LNK(a, l->next)->prev = off;
  h->heads[b] = off;
  h->bitmap[b / 64] |= UINT64_C(1) << (b % 64);
}

static void bin_remove(mpx_arena_t *a, uint64_t off) {
  hdr_t *h = a->h;
  unsigned b = bin_of(BLK(a, off)->size);
  links_t *l = LNK(a, off);
  if (l->prev) LNK(a, l->prev)->next = l->next;
  else h->heads[b] = l->next;
  if (l->next) LNK(a, l->next)->prev = l->prev;
  if (h->heads[b] == 0) h->bitmap[b / 64] &= ~(UINT64_C(1) << (b % 64));
}

/* First non-empty bin >= b, or N_BINS. */
static unsigned bin_next(const hdr_t *h, unsigned b) {
  unsigned w = b / 64;
  if (w >= BM_WORDS) return N_BINS;
  uint64_t m = h->bitmap[w] & (~UINT64_C(0) << (b % 64));
  for (;;) {
    if (m) return w * 64 + (unsigned)__builtin_ctzll(m);
    if (++w >= BM_WORDS) return N_BINS;
    m = h->bitmap[w];
  }
}

/* A free block of at least `need` bytes, removed from its list; 0 if none.
 * The request's own bin may hold smaller blocks (log bins span a range),
 * so it is searched; any block in a higher bin fits. */
static uint64_t find_fit(mpx_arena_t *a, uint64_t need) {
  hdr_t *h = a->h;
  unsigned b = bin_of(need);
  if (b >= N_EXACT) {
    int steps = 0;
    for (uint64_t off = h->heads[b]; off && steps < 16;
         off = LNK(a, off)->next, steps++)
      if (BLK(a, off)->size >= need) {
        bin_remove(a, off);
        return off;
      }
    b++;
  }
  b = bin_next(h, b);
  if (b >= N_BINS) return 0;
  uint64_t off = h->heads[b];
  bin_remove(a, off);
  return off;
}

/* ---- locking and recovery ------------------------------------------- */

static int check_walk(mpx_arena_t *a, int repair);

static int lock_arena(mpx_arena_t *a) {
  int rc = mpx__lock_acquire(&a->h->lock, -1);
  if (rc == MPX_EOWNERDEAD) {
    /* The last holder died inside an operation: rebuild from the walk. */
    rc = check_walk(a, 1);
    a->h->recoveries++;
    mpx_lock_consistent(&a->h->lock);
    if (rc != 0) a->h->broken = 1;
    MPX__WARN("arena: a process died holding the arena lock; %s",
              rc == 0 ? "free lists rebuilt" : "heap is corrupt");
    rc = 0;
  }
  if (rc != 0) return rc;
  if (a->h->broken) {
    mpx__lock_release(&a->h->lock);
    return mpx__err(MPX_EBROKEN, "arena is corrupt");
  }
  return 0;
}

static void unlock_arena(mpx_arena_t *a) { mpx__lock_release(&a->h->lock); }

/* ---- blocks ----------------------------------------------------------- */

static inline uint64_t ref_off(mpx_ref_t r) {
  return (r & UINT64_C(0xFFFFFFFF)) << 4;
}
static inline uint32_t ref_gen(mpx_ref_t r) { return (uint32_t)(r >> 32); }
static inline mpx_ref_t make_ref(uint32_t gen, uint64_t off) {
  return ((uint64_t)gen << 32) | (off >> 4);
}

/* The next generation (lock held); counted before it is stored, so a
 * process killed in between leaves a gap, never a repeat. */
static uint32_t next_gen(mpx_arena_t *a) {
  uint64_t g = a->h->gen_seq + 1;
  __atomic_store_n(&a->h->gen_seq, g, __ATOMIC_RELEASE);
  return (uint32_t)g;
}

/* The header of a live block named by `ref`, or NULL. */
static blk_t *live(const mpx_arena_t *a, mpx_ref_t ref, uint64_t *stp) {
  uint64_t off = ref_off(ref);
  const hdr_t *h = a->h;
  if (off < h->heap_off + HDR || off >= h->heap_end || off % ALIGN) return NULL;
  blk_t *b = BLK(a, off - HDR);
  uint64_t st = atomic_load_explicit(&b->st, memory_order_acquire);
  if (ST_MAGIC_OF(st) != ST_MAGIC || ST_STATE(st) != ST_USED ||
      ST_GEN(st) != ref_gen(ref) || ST_RC(st) == 0)
    return NULL;
  if (stp) *stp = st;
  return b;
}

static int bad_ref(const mpx_arena_t *a, mpx_ref_t ref) {
  uint64_t off = ref_off(ref);
  if (ref == 0 || off < a->h->heap_off + HDR || off >= a->h->heap_end ||
      off % ALIGN)
    return mpx__err(MPX_EINVAL, "0x%llx is not a block reference",
                    (unsigned long long)ref);
  return mpx__err(MPX_ESTALE,
                  "block reference 0x%llx is stale (freed or reused)",
                  (unsigned long long)ref);
}

/* Sets the prev_size hint of the block after `off`, if any. */
static void fix_next_prev(mpx_arena_t *a, uint64_t off) {
  uint64_t n = off + BLK(a, off)->size;
  if (n < a->h->heap_end) BLK(a, n)->prev_size = BLK(a, off)->size;
}

/* Frees the used block at `off` (lock held), merging with free
 * neighbours. Returns the offset of the resulting free block. */
static uint64_t free_block(mpx_arena_t *a, uint64_t off) {
  hdr_t *h = a->h;
  blk_t *b = BLK(a, off);
  uint32_t gen = next_gen(a);
  h->used -= b->size;
  h->n_used--;
  atomic_store_explicit(&b->st, ST(gen, ST_FREE, 0), memory_order_release);
  atomic_store_explicit(&b->owner, 0, memory_order_relaxed);
  CRASH_POINT(a, 5);
  uint64_t n = off + b->size;
  if (n < h->heap_end &&
      ST_STATE(atomic_load_explicit(&BLK(a, n)->st, memory_order_relaxed)) ==
          ST_FREE) {
    bin_remove(a, n);
    h->n_free--;
    __atomic_store_n(&b->size, b->size + BLK(a, n)->size, __ATOMIC_RELEASE);
    CRASH_POINT(a, 6);
  }
  if (off > h->heap_off) {
    uint64_t p = off - b->prev_size;
    if (p >= h->heap_off && p < off &&
        ST_STATE(atomic_load_explicit(&BLK(a, p)->st, memory_order_relaxed))
            == ST_FREE &&
        p + BLK(a, p)->size == off) {
      bin_remove(a, p);
      h->n_free--;
      __atomic_store_n(&BLK(a, p)->size, BLK(a, p)->size + b->size,
                       __ATOMIC_RELEASE);
      off = p;
      CRASH_POINT(a, 7);
    }
  }
  fix_next_prev(a, off);
  bin_push(a, off);
  h->n_free++;
  if (atomic_load_explicit(&h->waiting, memory_order_relaxed) > 0) {
    atomic_fetch_add_explicit(&h->free_seq, 1, memory_order_release);
    mpx__futex_wake(&h->free_seq, INT_MAX);
  }
  return off;
}

/* Carves `need` bytes from the free block at `off` (already off its list)
 * and marks it used by the caller. */
static void take_block(mpx_arena_t *a, uint64_t off, uint64_t need,
                       size_t req) {
  hdr_t *h = a->h;
  blk_t *b = BLK(a, off);
  h->n_free--;
  CRASH_POINT(a, 1);
  if (b->size - need >= MIN_BLOCK) {
    uint64_t r = off + need;
    blk_t *rb = BLK(a, r);
    rb->size = b->size - need;
    rb->prev_size = need;
    /* A generation never used before, whatever the bytes here held (an
     * older header, or payload): a stale reference to a block that once
     * started here stays stale. */
    uint32_t g = next_gen(a);
    atomic_store_explicit(&rb->st, ST(g, ST_FREE, 0), memory_order_relaxed);
    atomic_store_explicit(&rb->owner, 0, memory_order_relaxed);
    rb->req = 0;
    CRASH_POINT(a, 2);
    __atomic_store_n(&b->size, need, __ATOMIC_RELEASE);
    CRASH_POINT(a, 3);
    fix_next_prev(a, r);
    bin_push(a, r);
    h->n_free++;
  }
  h->used += b->size;
  h->n_used++;
  b->req = (uint32_t)(req > UINT32_MAX ? UINT32_MAX : req);
  atomic_store_explicit(&b->owner, (int32_t)mpx__pid(), memory_order_relaxed);
  uint64_t st = atomic_load_explicit(&b->st, memory_order_relaxed);
  atomic_store_explicit(&b->st, ST(ST_GEN(st), ST_USED, 1),
                        memory_order_release);
  CRASH_POINT(a, 4);
}

/* ---- walk: check and repair ------------------------------------------ */

/* Block header at off: magic, size and state sane. *is_free its state. */
static int check_header(mpx_arena_t *a, uint64_t off, int *is_free) {
  hdr_t *h = a->h;
  blk_t *b = BLK(a, off);
  uint64_t st = atomic_load_explicit(&b->st, memory_order_relaxed);
  if (ST_MAGIC_OF(st) != ST_MAGIC || b->size < MIN_BLOCK ||
      b->size % ALIGN || b->size > h->heap_end - off)
    return mpx__err(MPX_EBROKEN,
                    "arena: bad block header at offset %llu (size %llu)",
                    (unsigned long long)off, (unsigned long long)b->size);
  *is_free = ST_STATE(st) == ST_FREE;
  if (!*is_free && ST_STATE(st) != ST_USED)
    return mpx__err(MPX_EBROKEN, "arena: bad block state at offset %llu",
                    (unsigned long long)off);
  return 0;
}

/* Without repair: the block at off agrees with its neighbour prev and, if
 * free, with the bitmap. */
static int check_block(mpx_arena_t *a, uint64_t off, uint64_t prev, int is_free,
                       int prev_free) {
  hdr_t *h = a->h;
  blk_t *b = BLK(a, off);
  if (b->prev_size != (off == h->heap_off ? 0 : BLK(a, prev)->size))
    return mpx__err(MPX_EBROKEN, "arena: wrong prev_size at %llu",
                    (unsigned long long)off);
  if (is_free && prev_free)
    return mpx__err(MPX_EBROKEN,
                    "arena: free blocks at %llu and %llu are adjacent",
                    (unsigned long long)prev, (unsigned long long)off);
  if (is_free) {
    /* It must be on the list of its bin. */
    unsigned bn = bin_of(b->size);
    if (!(h->bitmap[bn / 64] & (UINT64_C(1) << (bn % 64))))
      return mpx__err(MPX_EBROKEN, "arena: free block %llu: bin %u empty",
                      (unsigned long long)off, bn);
  }
  return 0;
}

/* Every list node is a free block of that bin, linked both ways, and the
 * lists hold exactly the n_free free blocks. */
static int check_lists(mpx_arena_t *a, uint64_t n_free) {
  hdr_t *h = a->h;
  uint64_t listed = 0;
  for (unsigned bn = 0; bn < N_BINS; bn++) {
    int bit = (h->bitmap[bn / 64] >> (bn % 64)) & 1;
    if (bit != (h->heads[bn] != 0))
      return mpx__err(MPX_EBROKEN, "arena: bitmap disagrees with bin %u", bn);
    uint64_t p = 0;
    for (uint64_t o = h->heads[bn]; o; p = o, o = LNK(a, o)->next) {
      if (o < h->heap_off || o >= h->heap_end || ++listed > n_free)
        return mpx__err(MPX_EBROKEN, "arena: bin %u holds a bad link", bn);
      blk_t *b = BLK(a, o);
      if (ST_STATE(atomic_load_explicit(&b->st, memory_order_relaxed)) !=
              ST_FREE ||
          bin_of(b->size) != bn || LNK(a, o)->prev != p)
        return mpx__err(MPX_EBROKEN, "arena: bin %u: block %llu misfiled", bn,
                        (unsigned long long)o);
    }
  }
  if (listed != n_free)
    return mpx__err(MPX_EBROKEN, "arena: %llu free blocks, %llu listed",
                    (unsigned long long)n_free, (unsigned long long)listed);
  return 0;
}

/* What the walk counted, against the header's counters. */
static int check_counts(const hdr_t *h, uint64_t used, uint64_t n_used, uint64_t n_free) {
  if (used != h->used || n_used != h->n_used || n_free != h->n_free)
    return mpx__err(MPX_EBROKEN,
                    "arena: accounting says %llu used in %llu blocks, %llu "
                    "free blocks; the walk finds %llu, %llu, %llu",
                    (unsigned long long)h->used,
                    (unsigned long long)h->n_used,
                    (unsigned long long)h->n_free, (unsigned long long)used,
                    (unsigned long long)n_used, (unsigned long long)n_free);
  return 0;
}

/* Walks the heap (lock held). With repair, merges free neighbours and
 * rebuilds the lists, hints and counters; without, checks them. */
static int check_walk(mpx_arena_t *a, int repair) {
  hdr_t *h = a->h;
  uint64_t off = h->heap_off, prev = 0, used = 0, n_used = 0, n_free = 0;
  int prev_free = 0, is_free = 0, rc;
  if (repair) {
    memset(h->bitmap, 0, sizeof h->bitmap);
    memset(h->heads, 0, sizeof h->heads);
  }
  while (off < h->heap_end) {
    if ((rc = check_header(a, off, &is_free)) != 0) return rc;
    blk_t *b = BLK(a, off);
    if (repair) {
      if (is_free && prev_free) {
        /* Merge into the previous free block (it is on a list already). */
        bin_remove(a, prev);
        __atomic_store_n(&BLK(a, prev)->size, BLK(a, prev)->size + b->size,
                         __ATOMIC_RELEASE);
        bin_push(a, prev);
        off = prev + BLK(a, prev)->size;
        continue;
      }
      b->prev_size = prev ? BLK(a, prev)->size : 0;
      if (is_free) bin_push(a, off);
    } else if ((rc = check_block(a, off, prev, is_free, prev_free)) != 0) {
      return rc;
    }
    if (is_free) n_free++;
    else {
      used += b->size;
      n_used++;
    }
    prev_free = is_free;
    prev = off;
    off += b->size;
  }
  if (off != h->heap_end)
    return mpx__err(MPX_EBROKEN, "arena: blocks overrun the heap end");
  if (repair) {
    h->used = used;
    h->n_used = n_used;
    h->n_free = n_free;
    return 0;
  }
  if ((rc = check_counts(h, used, n_used, n_free)) != 0) return rc;
  return check_lists(a, n_free);
}

/* ---- public API --------------------------------------------------------- */

static int new_handle(mpx_arena_t **out, mpx_segment_t *seg, size_t offset) {
  mpx_arena_t *a = calloc(1, sizeof *a);
  if (a == NULL) return mpx__err(MPX_ENOMEM, "arena handle");
  a->seg = seg;
  a->base = (char *)mpx_segment_base(seg) + offset;
  a->h = (hdr_t *)a->base;
#ifdef MPX_TESTING
  const char *c = getenv("MPX__ARENA_CRASH_AT");
  a->crash_at = c ? atoi(c) : 0;
#endif
  *out = a;
  return 0;
}

int mpx_arena_format(mpx_arena_t **out, mpx_segment_t *seg, size_t offset,
                     size_t size) {
  int rc;
  size_t seg_size;
  if (out == NULL || seg == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  *out = NULL;
  seg_size = mpx_segment_size(seg);
  if (offset % 64 || offset >= seg_size)
    return mpx__err(MPX_EINVAL, "arena offset %zu: not 64-byte aligned inside "
                    "a %zu-byte segment", offset, seg_size);
  if (size == 0) size = seg_size - offset;
  if (size > seg_size - offset)
    return mpx__err(MPX_ERANGE, "arena of %zu bytes at %zu overruns the "
                    "%zu-byte segment", size, offset, seg_size);
  uint64_t heap_off = (sizeof(hdr_t) + 63) & ~(uint64_t)63;
  uint64_t heap_end = (uint64_t)size & ~(uint64_t)(ALIGN - 1);
  if (heap_end > OFF_LIMIT) heap_end = OFF_LIMIT;
  if (heap_end < heap_off + MIN_BLOCK)
    return mpx__err(MPX_EINVAL, "arena of %zu bytes is too small (minimum "
                    "%llu)", size, (unsigned long long)(heap_off + MIN_BLOCK));
  if ((rc = new_handle(out, seg, offset)) != 0) return rc;
  mpx_arena_t *a = *out;
  hdr_t *h = a->h;
  memset(h, 0, sizeof *h);
  h->size = size;
  h->heap_off = heap_off;
  h->heap_end = heap_end;
  if ((rc = mpx_lock_init(&h->lock)) != 0) {
    free(a);
    *out = NULL;
    return rc;
  }
  blk_t *b = BLK(a, heap_off);
  b->size = heap_end - heap_off;
  b->prev_size = 0;
  h->gen_seq = 1;
  atomic_store_explicit(&b->st, ST(1, ST_FREE, 0), memory_order_relaxed);
  atomic_store_explicit(&b->owner, 0, memory_order_relaxed);
  bin_push(a, heap_off);
  h->n_free = 1;
  h->version = ARENA_VERSION;
  __atomic_store_n(&h->magic, ARENA_MAGIC, __ATOMIC_RELEASE);
  return 0;
}

int mpx_arena_attach(mpx_arena_t **out, mpx_segment_t *seg, size_t offset) {
  int rc;
  if (out == NULL || seg == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  *out = NULL;
  size_t seg_size = mpx_segment_size(seg);
  if (offset % 64 || offset + sizeof(hdr_t) > seg_size)
    return mpx__err(MPX_EINVAL, "no arena fits at offset %zu", offset);
  const hdr_t *h = (const hdr_t *)((char *)mpx_segment_base(seg) + offset);
  if (__atomic_load_n(&h->magic, __ATOMIC_ACQUIRE) != ARENA_MAGIC)
    return mpx__err(MPX_EINVAL, "no arena at offset %zu (bad magic)", offset);
  if (h->version != ARENA_VERSION)
    return mpx__err(MPX_EINVAL, "arena version %u, this library reads %u",
                    h->version, ARENA_VERSION);
  if (h->size > seg_size - offset || h->heap_end > h->size)
    return mpx__err(MPX_EINVAL, "arena at %zu claims %llu bytes; the segment "
                    "has %zu", offset, (unsigned long long)h->size, seg_size);
  if ((rc = new_handle(out, seg, offset)) != 0) return rc;
  return 0;
}

int mpx_arena_new(mpx_arena_t **out, const mpx_arena_opts_t *opts) {
  mpx_segment_opts_t so = {0};
  mpx_segment_t *seg;
  int rc;
  if (out == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  *out = NULL;
  so.size = opts && opts->size ? opts->size : DEFAULT_SIZE;
  so.flags = opts ? opts->segment_flags : 0;
  so.name = "mpx-arena";
  if ((rc = mpx_segment_new(&seg, &so)) != 0) return rc;
  if ((rc = mpx_arena_format(out, seg, 0, 0)) != 0) {
    mpx_segment_free(seg);
    return rc;
  }
  (*out)->own_seg = 1;
  return 0;
}

mpx_segment_t *mpx_arena_segment(const mpx_arena_t *a) { return a->seg; }

int mpx_arena_alloc(mpx_arena_t *a, size_t size, double timeout,
                    mpx_ref_t *out) {
  int rc;
  hdr_t *h = a->h;
  if (out == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  *out = 0;
  if (timeout != timeout) return mpx__timeout_check(timeout);
  uint64_t cap = h->heap_end - h->heap_off;
  if (size == 0) size = 1;
  if (size > cap - HDR)
    return mpx__err(MPX_E2BIG, "arena: %zu bytes can never fit in a heap of "
                    "%llu", size, (unsigned long long)cap);
  uint64_t need = ((uint64_t)size + HDR + ALIGN - 1) & ~(uint64_t)(ALIGN - 1);
  if (need < MIN_BLOCK) need = MIN_BLOCK;
  double deadline = -1;
  if ((rc = lock_arena(a)) != 0) return rc;
  for (;;) {
    uint64_t off = find_fit(a, need);
    if (off) {
      take_block(a, off, need, size);
      uint32_t gen = ST_GEN(atomic_load_explicit(&BLK(a, off)->st,
                                                 memory_order_relaxed));
      unlock_arena(a);
      *out = make_ref(gen, off + HDR);
      return 0;
    }
    if (timeout == 0) break;
    if (deadline == -1 && timeout > 0) deadline = mpx__deadline(timeout);
    if (deadline >= 0 && mpx__now() >= deadline) break;
    /* Full: sleep until a free bumps free_seq, then look again. */
    uint32_t seq = atomic_load_explicit(&h->free_seq, memory_order_acquire);
    atomic_fetch_add_explicit(&h->waiting, 1, memory_order_relaxed);
    unlock_arena(a);
    mpx__futex_wait(&h->free_seq, seq, timeout < 0 ? -1 : deadline);
    atomic_fetch_sub_explicit(&h->waiting, 1, memory_order_relaxed);
    if ((rc = lock_arena(a)) != 0) return rc;
  }
  uint64_t used = h->used;
  unlock_arena(a);
  return mpx__err(MPX_ENOSPC, "arena full: %zu bytes asked, %llu of %llu in "
                  "use (waited %g s)", size, (unsigned long long)used,
                  (unsigned long long)cap, timeout < 0 ? 0 : timeout);
}

void *mpx_arena_ptr(const mpx_arena_t *a, mpx_ref_t ref) {
  return live(a, ref, NULL) ? a->base + ref_off(ref) : NULL;
}

size_t mpx_arena_block_size(const mpx_arena_t *a, mpx_ref_t ref) {
  blk_t *b = live(a, ref, NULL);
  return b ? (size_t)(b->size - HDR) : 0;
}

int mpx_arena_retain(mpx_arena_t *a, mpx_ref_t ref) {
  uint64_t st;
  blk_t *b = live(a, ref, &st);
  if (b == NULL) return bad_ref(a, ref);
  for (;;) {
    if (ST_RC(st) == RC_MAX)
      return mpx__err(MPX_EOVERFLOW, "block refcount overflow");
    if (atomic_compare_exchange_weak_explicit(&b->st, &st, st + 1,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      return 0;
    if (ST_STATE(st) != ST_USED || ST_GEN(st) != ref_gen(ref) ||
        ST_RC(st) == 0 || ST_MAGIC_OF(st) != ST_MAGIC)
      return bad_ref(a, ref);
  }
}

int mpx_arena_release(mpx_arena_t *a, mpx_ref_t ref) {
  uint64_t st;
  int rc;
  blk_t *b = live(a, ref, &st);
  if (b == NULL) return bad_ref(a, ref);
  for (;;) {
    if (atomic_compare_exchange_weak_explicit(&b->st, &st, st - 1,
                                              memory_order_acq_rel,
                                              memory_order_acquire))
      break;
    if (ST_STATE(st) != ST_USED || ST_GEN(st) != ref_gen(ref) ||
        ST_RC(st) == 0 || ST_MAGIC_OF(st) != ST_MAGIC)
      return bad_ref(a, ref);
  }
  if (ST_RC(st) > 1) return 0;
  /* Ours was the last reference: the block (refcount 0, still "used", so
   * nobody can retain it) is ours to free. */
  if ((rc = lock_arena(a)) != 0) return rc;
  /* Unless mpx_arena_reclaim freed it in the meantime. */
  st = atomic_load_explicit(&b->st, memory_order_acquire);
  if (ST_STATE(st) == ST_USED && ST_RC(st) == 0 &&
      ST_GEN(st) == ref_gen(ref))
    free_block(a, ref_off(ref) - HDR);
  unlock_arena(a);
  return 0;
}

int mpx_arena_give(mpx_arena_t *a, mpx_ref_t ref, pid_t owner) {
  blk_t *b = live(a, ref, NULL);
  if (b == NULL) return bad_ref(a, ref);
  if (owner < 0) return mpx__err(MPX_EINVAL, "owner pid %d", (int)owner);
  atomic_store_explicit(&b->owner, (int32_t)owner, memory_order_relaxed);
  return 0;
}

pid_t mpx_arena_owner(const mpx_arena_t *a, mpx_ref_t ref) {
  blk_t *b = live(a, ref, NULL);
  return b ? (pid_t)atomic_load_explicit(&b->owner, memory_order_relaxed) : 0;
}

int mpx_arena_reclaim(mpx_arena_t *a, pid_t pid) {
  int rc, n = 0;
  if (pid <= 0) return mpx__err(MPX_EINVAL, "pid %d", (int)pid);
  if ((rc = lock_arena(a)) != 0) return rc;
  uint64_t off = a->h->heap_off;
  while (off < a->h->heap_end) {
    blk_t *b = BLK(a, off);
    uint64_t st = atomic_load_explicit(&b->st, memory_order_acquire);
    /* Also blocks whose last reference was dropped by a process that died
     * before it could take the lock to free them. */
    if (ST_STATE(st) == ST_USED &&
        (atomic_load_explicit(&b->owner, memory_order_relaxed) == pid ||
         ST_RC(st) == 0)) {
      /* Make the block unreachable for retain before it is freed. */
      while (!atomic_compare_exchange_weak_explicit(
          &b->st, &st, ST(ST_GEN(st), ST_USED, 0), memory_order_acq_rel,
          memory_order_acquire)) {
      }
      off = free_block(a, off);
      n++;
    }
    off += BLK(a, off)->size;
  }
  unlock_arena(a);
  return n;
}

int mpx_arena_stats(mpx_arena_t *a, mpx_arena_stats_t *s) {
  int rc;
  if (s == NULL) return mpx__err(MPX_EINVAL, "NULL argument");
  memset(s, 0, sizeof *s);
  if ((rc = lock_arena(a)) != 0) return rc;
  hdr_t *h = a->h;
  s->capacity = (size_t)(h->heap_end - h->heap_off);
  s->used = (size_t)h->used;
  s->free = s->capacity - s->used;
  s->n_allocated = (size_t)h->n_used;
  s->n_free = (size_t)h->n_free;
  s->recoveries = h->recoveries;
  s->waiting = atomic_load_explicit(&h->waiting, memory_order_relaxed);
  /* The largest free block is in the highest non-empty bin. */
  for (int w = BM_WORDS - 1; w >= 0 && s->largest_free == 0; w--) {
    if (!h->bitmap[w]) continue;
    unsigned bn = (unsigned)w * 64 + 63u - (unsigned)__builtin_clzll(h->bitmap[w]);
    for (uint64_t o = h->heads[bn]; o; o = LNK(a, o)->next)
      if (BLK(a, o)->size - HDR > s->largest_free)
        s->largest_free = (size_t)(BLK(a, o)->size - HDR);
  }
  unlock_arena(a);
  return 0;
}

int mpx_arena_check(mpx_arena_t *a) {
  int rc;
  if ((rc = lock_arena(a)) != 0) return rc;
  rc = check_walk(a, 0);
  unlock_arena(a);
  return rc;
}

void mpx_arena_free(mpx_arena_t *a) {
  if (a == NULL) return;
  if (a->own_seg) mpx_segment_free(a->seg);
  free(a);
}
