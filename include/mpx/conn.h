/* mpx: connections and pipes, after Python's multiprocessing.connection.
 *
 * A connection carries whole messages over a stream file descriptor (a
 * socketpair, a pipe, a TCP or Unix socket). Each message is framed exactly
 * as Python's multiprocessing.connection.Connection frames it: a 4-byte
 * big-endian signed length, then the payload; above 0x7fffffff bytes the
 * 4 bytes are ff ff ff ff and an 8-byte big-endian length follows. An mpx
 * connection and a Python Connection on the two ends of one socket talk to
 * each other with send_bytes / recv_bytes.
 *
 *   mpx_conn_t *a, *b;
 *   mpx_pipe(&a, &b, true);                 // duplex: a socketpair
 *   mpx_conn_send_bytes(a, "ping", 4, -1);
 *   void *msg; size_t n;
 *   if (mpx_conn_recv_bytes(b, &msg, &n, 0, 5.0) == 0) { ...; free(msg); }
 *   mpx_conn_free(a); mpx_conn_free(b);
 *
 * Writing. Every send writes its header and payload with one system call
 * (writev / sendmsg) when the kernel takes it all, never a write for the
 * header and another for the payload; mpx_conn_send_batch() frames many
 * messages into one writev. Sockets are sent with MSG_NOSIGNAL; writes to
 * a pipe block SIGPIPE in the calling thread for the duration of the call
 * (and discard the SIGPIPE the write raised), so a dead reader is the
 * error MPX_EPIPE and never kills the process. TCP sockets get
 * TCP_NODELAY.
 *
 * A message is sent whole or not at all: a send that runs out of time
 * before the first byte of its message left returns MPX_ETIMEDOUT and
 * nothing of it was sent. When the time runs out in the middle of a
 * message, the connection keeps a copy of the rest and returns 0: the
 * message is committed, and its tail leaves with the next send or
 * mpx_conn_flush() (the next send first finishes it, within its own
 * timeout). Only a send with a finite timeout can leave such a tail; call
 * mpx_conn_flush() before closing, because close and free drop it (the
 * peer then reads a truncated message: MPX_EPIPE). They never write: a
 * fork child closing its copy of the handle cannot duplicate the tail.
 *
 * Reading. A connection reads ahead: one read takes in as many small
 * messages as the kernel holds (up to 64 KiB), later receives are served
 * from that buffer, and large payloads are read straight into their
 * destination. So poll the connection with mpx_conn_poll() or
 * mpx_conn_wait(), not its fileno: a message already buffered does not
 * make the descriptor readable. A handle that was a fork parent's carries
 * a copy of its buffer: use each end in one process only, as in Python.
 *
 * A message that is too long for the caller is never lost:
 * mpx_conn_recv_bytes() with a maxlength it exceeds returns MPX_EMSGSIZE
 * and mpx_conn_recv_bytes_into() with a buffer too short returns
 * MPX_ETOOSHORT, both report the message's length, and both leave the
 * message where it was, so the next receive returns it (Python instead
 * makes the connection unreadable after "bad message length"; with mpx,
 * close it yourself if the peer is not trusted). Nothing of the payload
 * is read before the length has been checked.
 *
 * End of file. When the peer has closed its end (or died, even by
 * SIGKILL), receives return every message that arrived whole, then
 * MPX_EPIPE (Python's EOFError; also for end of file in the middle of a
 * message, Python's "got end of file during message", and for a reset
 * connection); mpx_conn_poll() and mpx_conn_wait() report such a
 * connection ready, so the EOF is never a hang. Sends to a closed peer
 * return MPX_EPIPE. A header that no Python peer sends (a negative length
 * other than -1) is MPX_EPROTO, and the connection stays unreadable
 * (MPX_EPROTO again) because its stream position is lost.
 *
 * Timeouts are seconds as a double: negative waits forever, 0 does not
 * block, NaN is MPX_EINVAL. A receive that runs out of time returns
 * MPX_ETIMEDOUT and keeps whatever part of a message it already read for
 * the next receive. Interrupted system calls (EINTR) are retried.
 *
 * Descriptors. mpx_pipe() creates them close-on-exec (pass them to a
 * spawn child with pass_fds). The ends of a simplex pipe (and any pipe or
 * other non-socket descriptor given to mpx_conn_from_fd) are switched to
 * O_NONBLOCK; the flag belongs to the open file description, so duplicates
 * of the descriptor (a fork child's, a process that inherits it across
 * exec) see it too. Sockets are left as they are: mpx uses MSG_DONTWAIT.
 *
 * Threads. A handle is used by one thread at a time, except that on a
 * duplex connection one thread may send while another receives.
 *
 * Ownership: a connection is the caller's, ended with mpx_conn_free;
 * received buffers and objects are the caller's (free / mpx_obj_release)
 * unless a function says they are borrowed. */
#ifndef MPX_CONN_H
#define MPX_CONN_H

#include <stdbool.h>
#include <stddef.h>
#include "common.h"
#include "codec.h"
#include "obj.h"
#include "process.h"
#include "shm.h"

typedef struct mpx_conn_s mpx_conn_t;

/* Direction flags for mpx_conn_from_fd(); 0 means both. */
enum {
  MPX_CONN_READABLE = 1u << 0,
  MPX_CONN_WRITABLE = 1u << 1
};

/* `size` for mpx_conn_send_bytes_at(): everything after offset (Python's
 * size=None). */
#define MPX_CONN_REST ((size_t)-1)

/* One message of a batch. */
typedef struct {
  const void *data;
  size_t len;
} mpx_conn_buf_t;

#ifdef __cplusplus
extern "C" {
#endif

/* ---- creation ------------------------------------------------------------ */

/* Python's Pipe(duplex). duplex: an AF_UNIX SOCK_STREAM socketpair, both
 * ends read and write. Simplex: a pipe; *c1 only receives and *c2 only
 * sends (Python's order). Both handles are the caller's: release each
 * with mpx_conn_free().
 * Own: *c1 and *c2 are yours: mpx_conn_free. */
MPX_API int mpx_pipe(mpx_conn_t **c1, mpx_conn_t **c2, bool duplex);

/* Wraps a connected stream descriptor (a socket, a pipe end, a FIFO).
 * flags: MPX_CONN_READABLE | MPX_CONN_WRITABLE, 0 for both. On success
 * the handle owns fd and closes it; on failure fd stays the caller's.
 * MPX_EBADF for a descriptor that is not open, MPX_EINVAL for unknown
 * flags.
 * Own: *c is yours: mpx_conn_free; takes fd on success only. */
MPX_API int mpx_conn_from_fd(mpx_conn_t **c, int fd, unsigned flags);

/* ---- sending ------------------------------------------------------------- */

/* Sends len bytes at buf as one message. 0 (sent, or committed as
 * described above), MPX_ETIMEDOUT (nothing of it sent), MPX_EPIPE (the
 * peer is gone), MPX_EBADF (the connection is read-only), MPX_ECLOSED,
 * or another -errno of the write. buf is only read during the call.
 * Own: borrows buf for the call (a committed tail is copied). */
MPX_API int mpx_conn_send_bytes(mpx_conn_t *c, const void *buf, size_t len,
                                double timeout);

/* Python's send_bytes(buf, offset, size) over a buffer of buflen bytes:
 * sends `size` bytes from buf + offset, size MPX_CONN_REST for all the
 * rest. MPX_EINVAL when offset or offset + size lies beyond buflen.
 * Own: borrows buf for the call, as mpx_conn_send_bytes. */
MPX_API int mpx_conn_send_bytes_at(mpx_conn_t *c, const void *buf,
                                   size_t buflen, size_t offset, size_t size,
                                   double timeout);

/* Sends n messages, each framed on its own, in as few writev calls as
 * the kernel allows (up to 511 messages per call). *n_sent (may be NULL)
 * receives the number of messages sent or committed, in order: n on
 * success; on MPX_ETIMEDOUT or an error, the first *n_sent went out and
 * the others did not.
 * Own: borrows msgs and their data for the call (a committed tail is
 * copied). */
MPX_API int mpx_conn_send_batch(mpx_conn_t *c, const mpx_conn_buf_t *msgs,
                                size_t n, size_t *n_sent, double timeout);

/* Encodes obj with codec and sends the encoding as one message. A codec
 * error (MPX_ECODEC, the codec's message in mpx_last_error()) or
 * MPX_ENOMEM is returned before anything is written. The object stays the
 * caller's.
 * Own: borrows codec and obj for the call. */
MPX_API int mpx_conn_send_obj(mpx_conn_t *c, const mpx_codec_t *codec,
                              const mpx_obj_t *obj, double timeout);

/* ---- zero-copy: arena blocks over a connection -------------------------- */

/* Sends a reference to len bytes at the start of an arena block instead
 * of the bytes (the iceoryx pattern: loan a block with mpx_arena_alloc or
 * mpx_queue_loan, write it in place, send its reference). The message is
 * 24 bytes: the magic "MPXLOAN\0", the reference and the length, little
 * endian. The receiver must map the same arena. The block stays the
 * sender's (refcount and owner) until the receiver takes it: the sender
 * must not touch or release it after a successful send. If the sender
 * dies first, mpx_arena_reclaim(sender) frees it and the receiver gets
 * MPX_ESTALE: the one message in flight is lost, and detected.
 * MPX_EINVAL for a reference that is not a live block of `a` or a len
 * beyond it.
 * Own: on success the block is no longer yours (the receiver takes it);
 * on failure it stays yours. Borrows a for the call. */
MPX_API int mpx_conn_send_ref(mpx_conn_t *c, mpx_arena_t *a, mpx_ref_t ref,
                              size_t len, double timeout);

/* Receives a message sent with mpx_conn_send_ref: *data points at the
 * block in this process's mapping of `a`, *len is its length, and the
 * block now belongs to the calling process (mpx_arena_give): read it in
 * place, then mpx_arena_release(a, *ref). MPX_EPROTO for a message that is
 * not a reference (it is consumed), MPX_ESTALE for a block that was freed
 * in flight; otherwise as mpx_conn_recv_bytes().
 * Own: the block *ref is yours: mpx_arena_release(a, *ref); *data is
 * borrowed until that release. */
MPX_API int mpx_conn_recv_ref(mpx_conn_t *c, mpx_arena_t *a, mpx_ref_t *ref,
                              const void **data, size_t *len, double timeout);

/* Writes out the tail of a message that a timed-out send committed.
 * 0 when nothing is left (at once when nothing was pending), else
 * MPX_ETIMEDOUT or the write's error. */
MPX_API int mpx_conn_flush(mpx_conn_t *c, double timeout);

/* ---- receiving ----------------------------------------------------------- */

/* Receives one message into a new buffer: *buf is malloc'd and the
 * caller's (free it with free()); it holds *len bytes followed by a NUL
 * that *len does not count, and is never NULL on success, even for an
 * empty message. maxlength: the longest message accepted, 0 for no limit;
 * a longer one is MPX_EMSGSIZE with *len set to its length and the
 * message left in place. Other results: MPX_ETIMEDOUT, MPX_EPIPE (end of
 * file), MPX_EPROTO (bad header), MPX_EBADF (write-only), MPX_ECLOSED,
 * MPX_ENOMEM (the message stays in place); on every error *buf is NULL.
 * Own: *buf is yours: free. */
MPX_API int mpx_conn_recv_bytes(mpx_conn_t *c, void **buf, size_t *len,
                                size_t maxlength, double timeout);

/* Receives one message into the caller's buffer of cap bytes and sets
 * *len to its length. A message longer than cap is MPX_ETOOSHORT with
 * *len set to the size needed, and the message stays in place for the
 * next receive (with a bigger buffer, or mpx_conn_recv_bytes). Otherwise
 * as mpx_conn_recv_bytes().
 * Own: borrows buf for the call (it stays yours). */
MPX_API int mpx_conn_recv_bytes_into(mpx_conn_t *c, void *buf, size_t cap,
                                     size_t *len, double timeout);

/* Receives one message and decodes it with codec: *obj is a new reference
 * (release it with mpx_obj_release). A message the codec rejects is
 * consumed and returned as MPX_ECODEC (the connection stays usable);
 * otherwise as mpx_conn_recv_bytes() without a length limit.
 * Own: *obj is yours: mpx_obj_release. */
MPX_API int mpx_conn_recv_obj(mpx_conn_t *c, const mpx_codec_t *codec,
                              mpx_obj_t **obj, double timeout);

/* Waits until a receive would make progress without blocking: a whole
 * message is buffered, the descriptor is readable, or the peer is gone.
 * 0 when ready, MPX_ETIMEDOUT when not (also for timeout 0), MPX_EBADF on
 * a write-only connection, MPX_ECLOSED. */
MPX_API int mpx_conn_poll(mpx_conn_t *c, double timeout);

/* ---- the handle ---------------------------------------------------------- */

/* The descriptor (owned by the handle: do not close it), or MPX_ECLOSED.
 * Own: the descriptor is borrowed until mpx_conn_close / mpx_conn_free. */
MPX_API int mpx_conn_fileno(const mpx_conn_t *c);
/* Whether the connection was opened for reading / writing (false once
 * closed), and whether it is closed. */
MPX_API bool mpx_conn_readable(const mpx_conn_t *c);
MPX_API bool mpx_conn_writable(const mpx_conn_t *c);
MPX_API bool mpx_conn_closed(const mpx_conn_t *c);

/* Closes the descriptor, dropping buffered input and any pending tail
 * (see mpx_conn_flush). The handle stays valid: every later call
 * returns MPX_ECLOSED. Closing twice is 0. */
MPX_API int mpx_conn_close(mpx_conn_t *c);
/* Closes (if needed) and frees the handle. NULL is allowed. */
MPX_API void mpx_conn_free(mpx_conn_t *c);

/* ---- waiting on many ----------------------------------------------------- */

typedef enum {
  MPX_WAIT_CONN = 1,    /* ready when mpx_conn_poll(conn, 0) would be */
  MPX_WAIT_PROCESS = 2, /* ready when the process has exited (its sentinel) */
  MPX_WAIT_FD = 3       /* ready when readable, hung up or in error: a raw
                           descriptor, or a sentinel such as a pidfd */
} mpx_wait_kind_t;

typedef struct {
  mpx_wait_kind_t kind;
  union {
    mpx_conn_t *conn;
    mpx_process_t *process;
    int fd;
  };
} mpx_wait_item_t;

static inline mpx_wait_item_t mpx_wait_conn(mpx_conn_t *c) {
  mpx_wait_item_t it;
  it.kind = MPX_WAIT_CONN;
  it.conn = c;
  return it;
}
static inline mpx_wait_item_t mpx_wait_process(mpx_process_t *p) {
  mpx_wait_item_t it;
  it.kind = MPX_WAIT_PROCESS;
  it.process = p;
  return it;
}
static inline mpx_wait_item_t mpx_wait_fd(int fd) {
  mpx_wait_item_t it;
  it.kind = MPX_WAIT_FD;
  it.fd = fd;
  return it;
}

/* Python's multiprocessing.connection.wait(): waits until at least one
 * item is ready, then reports all that are. ready (may be NULL) receives
 * the indices of the ready items in increasing order (room for n), and
 * *n_ready (may be NULL) their count. 0 when at least one is ready,
 * MPX_ETIMEDOUT when none became ready in time (*n_ready 0), MPX_EINVAL
 * (an unknown kind, a NULL handle, a NaN timeout), MPX_ECLOSED (a closed
 * connection), MPX_ESTATE (a process not started or already closed),
 * MPX_EBADF (a descriptor that is not open); mpx_last_error() names the
 * item. The items are only read; the handles stay the caller's.
 * Own: borrows items (and their handles) and ready for the call. */
MPX_API int mpx_conn_wait(const mpx_wait_item_t *items, size_t n,
                          double timeout, size_t *ready, size_t *n_ready);

#ifdef __cplusplus
}
#endif
#endif /* MPX_CONN_H */
