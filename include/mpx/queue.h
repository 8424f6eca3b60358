/* mpx: queues in shared memory (Python's Queue, SimpleQueue and
 * JoinableQueue), with a zero-copy path for bulk payloads.
 *
 * A queue lives in an arena (mpx/shm.h): by default the process's shared
 * heap, so fork children use the parent's handle as it is, and any other
 * process that maps the arena attaches with (arena, mpx_queue_ref()). It
 * is multi-producer multi-consumer across processes and threads, FIFO in
 * the order puts commit.
 *
 *   mpx_queue_t *q;
 *   mpx_queue_new(&q, NULL);                 // unbounded, default heap
 *   if (fork() == 0) { mpx_queue_put(q, "job", 3, -1); _exit(0); }
 *   char buf[64]; size_t n;
 *   mpx_queue_get_into(q, buf, sizeof buf, &n, 5.0);
 *   mpx_queue_free(q);
 *
 * No feeder thread. A put copies the item into shared memory in the
 * caller and has committed it when it returns 0: the process may exit (or
 * be killed) right after, nothing needs flushing, and joining it never
 * waits on queued data (Python's Queue deadlocks there). mpx_queue_put_obj
 * encodes in the caller and returns the codec's error at once (Python's
 * feeder thread drops an unpicklable item and prints a traceback).
 *
 * Storage. Items of up to `inline_max` bytes are copied into the queue's
 * slots; a larger item goes to an arena block and its slot carries the
 * block's reference, so a 1 MiB item is copied once on the way in (not
 * at all with the loan API) and not at all on the way out with
 * mpx_queue_get_msg(). Slots come in chunks allocated from the arena as
 * the queue grows and freed as it drains, so an unbounded queue holds
 * as much as the arena has room for, and an idle queue holds one chunk.
 * A full arena is backpressure: the put waits up to its timeout.
 *
 * Waiting. A blocked put or get spins briefly, then sleeps on a futex;
 * the other side makes a system call only to wake a sleeper, so when
 * both keep up a put and a get cost no system call at all. Correct with
 * more processes than CPUs (spinning stops at once on a single CPU).
 *
 * Timeouts are seconds as a double: negative waits forever, 0 does not
 * wait (Python's put_nowait / get_nowait), NaN is MPX_EINVAL. An empty
 * queue (get) or a full one (put) returns MPX_EAGAIN when the timeout is
 * 0 (Python's Empty / Full exceptions) and MPX_ETIMEDOUT when a positive
 * timeout ran out. EINTR never surfaces.
 *
 * Crashes. A process SIGKILLed at any instruction inside a put or a get
 * leaves the queue usable: producers and consumers each serialize on a
 * robust lock of their side, every step inside is journaled, and the
 * next process in repairs what the dead one left. No item is ever
 * delivered twice; at most the one item the dead process was moving is
 * lost, and mpx_queue_stats() counts it (lost_puts: a killed put died
 * before publishing its item, which never reached the queue; lost_gets:
 * it left the queue with the process that died inside the get). A put
 * or get that has returned is never undone.
 * Blocks a dead process was holding (a loan it had not published, a
 * message it had not released) are freed by mpx_arena_reclaim(pid) on
 * the queue's arena, which a supervisor calls after reaping the process.
 *
 * Handles. A handle is process-local; the queue is shared. A fork child
 * may use its parent's handle; another thread of the same process may
 * use the same handle concurrently except for mpx_queue_get_msg's
 * scratch buffer (one message per handle at a time: use a handle per
 * thread, mpx_queue_attach, when several threads receive).
 *
 * SimpleQueue is this queue with default options (it has no separate
 * type): put, get, empty and close are all it needs. JoinableQueue is a
 * queue created with `joinable`: every put adds an unfinished task, and
 * mpx_queue_task_done() / mpx_queue_join() count them down.
 *
 * Ownership: mpx_queue_new / mpx_queue_attach give a handle the caller
 * ends with mpx_queue_free; mpx_queue_get's *data is malloc'd and the
 * caller's; a message from mpx_queue_get_msg is the caller's until
 * mpx_queue_msg_release (which drops the arena block it points into). */
#ifndef MPX_QUEUE_H
#define MPX_QUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "common.h"
#include "codec.h"
#include "obj.h"
#include "shm.h"

typedef struct mpx_queue_s mpx_queue_t;

typedef struct {
  size_t maxsize;      /* most items queued at once; 0: unbounded (as
                          much as the arena holds) */
  size_t inline_max;   /* largest item kept in a slot; default 112, at
                          most 65536; larger items go to arena blocks */
  size_t chunk_slots;  /* slots per chunk; default 256, 8..65536 */
  bool joinable;       /* JoinableQueue: task_done / join */
  mpx_arena_t *arena;  /* where the queue lives; NULL: mpx_shared_heap().
                          Borrowed: must outlive every handle. */
} mpx_queue_opts_t;

typedef struct {
  uint64_t puts;        /* items committed since creation */
  uint64_t gets;        /* items taken */
  size_t size;          /* items queued now */
  uint64_t unfinished;  /* joinable: puts not yet marked task_done */
  uint64_t lost_puts;   /* items whose producer died inside put */
  uint64_t lost_gets;   /* items whose consumer died inside get */
  uint64_t recoveries;  /* repairs after a process died holding a side */
  size_t chunks;        /* slot chunks allocated now */
  uint64_t futex_calls; /* futex waits and wakes by every process: the
                           queue's only system calls besides arena growth */
} mpx_queue_stats_t;

/* An item taken with mpx_queue_get_msg(): `data` is valid until
 * mpx_queue_msg_release(). For an item that was stored in an arena
 * block, data points into the block (read in place, zero copies) and
 * `ref` names it; for an inline item data points into the handle's
 * scratch buffer, valid until the next get_msg on the same handle, and
 * ref is 0. */
typedef struct {
  const void *data;
  size_t len;
  mpx_ref_t ref;
} mpx_queue_msg_t;

/* A block lent by mpx_queue_loan(): write up to `cap` bytes at `data`,
 * then publish it (or cancel the loan). */
typedef struct {
  void *data;
  size_t cap;
  mpx_ref_t ref;
} mpx_queue_loan_t;

#ifdef __cplusplus
extern "C" {
#endif

/* ---- lifetime ------------------------------------------------------------ */

/* A new queue. opts may be NULL (unbounded, defaults). The handle is the
 * caller's (mpx_queue_free) and holds a reference on the queue.
 * MPX_EINVAL for options out of range, MPX_ENOSPC / MPX_E2BIG when the
 * arena has no room for the queue's first chunk.
 * Own: *out is yours: mpx_queue_free; keeps opts->arena until the handle
 * is freed (the arena stays yours). */
MPX_API int mpx_queue_new(mpx_queue_t **out, const mpx_queue_opts_t *opts);

/* A handle on an existing queue in `arena` (borrowed, as above) from its
 * reference. Takes a reference on the queue. MPX_ESTALE / MPX_EINVAL when
 * ref is not a live queue.
 * Own: *out is yours: mpx_queue_free; keeps arena until the handle is
 * freed (the arena stays yours). */
MPX_API int mpx_queue_attach(mpx_queue_t **out, mpx_arena_t *arena,
                             mpx_ref_t ref);
MPX_API mpx_ref_t mpx_queue_ref(const mpx_queue_t *q);
/* Own: returns the arena given at creation (or the shared heap), borrowed
 * while the handle lives; never free it through this pointer. */
MPX_API mpx_arena_t *mpx_queue_arena(const mpx_queue_t *q);

/* Releases the handle. In the process that created or attached it, also
 * drops its reference: the last one frees the queue, its chunks and
 * every item still queued. A fork child's inherited handle holds no
 * reference, so freeing it there never frees the parent's queue. */
MPX_API void mpx_queue_free(mpx_queue_t *q);

/* ---- putting --------------------------------------------------------------- */

/* Copies len bytes at data into the queue. 0, MPX_EAGAIN / MPX_ETIMEDOUT
 * (full), MPX_ECLOSED (this handle was closed, or the queue shut down),
 * MPX_ENOSPC (no arena space within the timeout), MPX_E2BIG (larger than
 * the arena could ever hold).
 * Own: copies data. */
MPX_API int mpx_queue_put(mpx_queue_t *q, const void *data, size_t len,
                          double timeout);

/* Encodes obj with codec (in the caller) and puts the encoding. A codec
 * error is returned as it is (MPX_ECODEC, ...) and nothing is queued.
 * Own: borrows codec and obj for the call (the encoding is copied). */
MPX_API int mpx_queue_put_obj(mpx_queue_t *q, const mpx_codec_t *codec,
                              const mpx_obj_t *obj, double timeout);

/* ---- getting ----------------------------------------------------------------- */

/* Copies the next item into buf (cap bytes) and its length into *len.
 * MPX_ETOOSHORT when it does not fit: *len is its length and the item
 * stays first in the queue. MPX_EAGAIN / MPX_ETIMEDOUT (empty),
 * MPX_ECLOSED (shut down and empty).
 * Own: borrows buf for the call (it stays yours). */
MPX_API int mpx_queue_get_into(mpx_queue_t *q, void *buf, size_t cap,
                               size_t *len, double timeout);

/* The next item in a malloc'd buffer (*data, the caller's to free; NULL
 * for an empty item) and its length. Errors as get_into.
 * Own: *data is yours: free. */
MPX_API int mpx_queue_get(mpx_queue_t *q, void **data, size_t *len,
                          double timeout);

/* The next item without copying a block-stored payload (see
 * mpx_queue_msg_t). Release it with mpx_queue_msg_release().
 * Own: *msg is yours: mpx_queue_msg_release; msg->data is borrowed until
 * that release (an inline item's also only until the next get_msg or
 * get_obj on this handle, which reuse its scratch buffer). */
MPX_API int mpx_queue_get_msg(mpx_queue_t *q, mpx_queue_msg_t *msg,
                              double timeout);
MPX_API void mpx_queue_msg_release(mpx_queue_t *q, mpx_queue_msg_t *msg);

/* The next item decoded with codec (decoded in place from shared
 * memory). A decode error consumes the item (it is returned, not
 * retried) and says so in mpx_last_error(). *obj is the caller's.
 * Own: *obj is yours: mpx_obj_release (it copies, never points into the
 * queue); borrows codec for the call. */
MPX_API int mpx_queue_get_obj(mpx_queue_t *q, const mpx_codec_t *codec,
                              mpx_obj_t **obj, double timeout);

/* ---- zero-copy: loan -> write -> publish -> release ----------------------- */

/* Borrows a block of at least size bytes from the queue's arena (waiting
 * up to timeout for space). The block belongs to the calling process
 * until it is published: if the process dies first, reclaim(pid) frees
 * it.
 * Own: the block in *loan is yours until mpx_queue_publish or
 * mpx_queue_loan_cancel; loan->data is borrowed until then. */
MPX_API int mpx_queue_loan(mpx_queue_t *q, size_t size, mpx_queue_loan_t *loan,
                           double timeout);
/* Queues the first len bytes (len <= cap) of the loaned block without
 * copying them; the loan is used up on success (on error it is still
 * the caller's: publish again or cancel). Errors as mpx_queue_put. A
 * consumer receives it with mpx_queue_get_msg() in place.
 * Own: takes the loaned block on success only; on error it stays yours.
 * mpx_queue_loan_cancel takes it back into the arena. */
MPX_API int mpx_queue_publish(mpx_queue_t *q, mpx_queue_loan_t *loan,
                              size_t len, double timeout);
MPX_API void mpx_queue_loan_cancel(mpx_queue_t *q, mpx_queue_loan_t *loan);

/* ---- state ------------------------------------------------------------------- */

/* Items queued now (a snapshot: other processes move on). */
MPX_API size_t mpx_queue_qsize(const mpx_queue_t *q);
MPX_API bool mpx_queue_empty(const mpx_queue_t *q);
MPX_API bool mpx_queue_full(const mpx_queue_t *q);

/* Python's close(): this handle puts no more (MPX_ECLOSED after). Gets
 * still work. Other handles are unaffected. */
MPX_API void mpx_queue_close(mpx_queue_t *q);

/* For every handle in every process: puts fail with MPX_ECLOSED, gets
 * return what is queued and then MPX_ECLOSED instead of waiting, and
 * every waiter wakes. Cannot be undone. */
MPX_API void mpx_queue_shutdown(mpx_queue_t *q);

MPX_API int mpx_queue_stats(const mpx_queue_t *q, mpx_queue_stats_t *st);

/* ---- JoinableQueue -------------------------------------------------------- */

/* Marks one item as processed. MPX_ESTATE when called more times than
 * items were put (Python's ValueError); MPX_EINVAL if not joinable. */
MPX_API int mpx_queue_task_done(mpx_queue_t *q);
/* Waits until every item put so far has been marked done. 0,
 * MPX_ETIMEDOUT, MPX_EAGAIN (timeout 0 and work unfinished),
 * MPX_EINVAL if not joinable. */
MPX_API int mpx_queue_join(mpx_queue_t *q, double timeout);

#ifdef __cplusplus
}
#endif
#endif /* MPX_QUEUE_H */
