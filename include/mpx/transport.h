/* mpx: transports, the links between a coordinator and its workers.
 *
 * A transport moves whole messages over a connected stream socket (a
 * socketpair end, a Unix or TCP socket), framed exactly as mpx_conn and
 * Python's multiprocessing.connection frame them: a 4-byte big-endian
 * length, then the payload; above 0x7fffffff bytes the 4 bytes are
 * ff ff ff ff and an 8-byte big-endian length follows. So an mpx_conn (or a
 * Python Connection) on one end talks to a hub link or an endpoint on the
 * other.
 *
 * Two sides, two shapes:
 *
 * - The coordinator owns a hub: many links on one libuv loop, the caller's.
 *   The hub never runs the loop; it adds handles to it, and the caller runs
 *   it (uv_run). Each link calls back with every message received and once
 *   when it dies. Sends never block: they copy the message into the link's
 *   queue, and the queue is written in batches, at the latest when the loop
 *   next iterates (or at mpx_hub_flush()).
 * - A worker owns an endpoint: one descriptor, blocking calls with
 *   timeouts, like mpx_conn.
 *
 *   // coordinator: sv[0] of a socketpair whose sv[1] went to a worker
 *   mpx_hub_t *h;
 *   mpx_hub_new(&h, loop, MPX_TRANSPORT_AUTO);
 *   mpx_hub_add(h, sv[0], on_msg, on_close, NULL, &link);
 *   mpx_link_send(link, "job", 3);
 *   uv_run(loop, UV_RUN_DEFAULT);          // on_msg gets the replies
 *
 *   // worker (a fork child): echoes until the coordinator closes the link
 *   mpx_endpoint_t *e;
 *   const void *m;
 *   size_t n;
 *   mpx_endpoint_open(&e, sv[1], MPX_TRANSPORT_AUTO);
 *   while (mpx_endpoint_recv(e, &m, &n, -1) == 0)
 *     mpx_endpoint_send(e, m, n, -1);
 *   mpx_endpoint_free(e);
 *
 * Two implementations of the same interface:
 *
 * - MPX_TRANSPORT_PIPE: plain system calls. A hub watches each link's
 *   socket with a uv_poll_t; a read takes in up to 64 KiB (many frames),
 *   a write sends everything queued on the link. An endpoint uses recv,
 *   sendmsg and poll.
 * - MPX_TRANSPORT_URING: the same frames, with reads and writes submitted
 *   through io_uring (liburing), many per io_uring_enter. A hub has one
 *   ring for all its links, with a receive always armed on each link; the
 *   ring signals the loop through an eventfd watched by a uv_poll_t. An
 *   endpoint submits its write together with its next read and waits with
 *   one io_uring_enter.
 * - MPX_TRANSPORT_AUTO: uring where the kernel allows it, else pipe (with
 *   one log line at level warn, once per process, saying why). The
 *   MPX_TRANSPORT environment variable ("auto", "pipe", "uring") overrides
 *   AUTO, and only AUTO; MPX_URING_DISABLE=1 makes io_uring look forbidden
 *   (EPERM), as in containers whose seccomp profile denies it.
 *
 * Both ends may use different implementations: the bytes on the wire are
 * the same.
 *
 * Messages of any size are accepted (0 bytes included). Receivers read up
 * to 64 KiB ahead; a larger message is received straight into a buffer of
 * its own size.
 *
 * End of file. A link whose peer closed its end or died (even by SIGKILL)
 * first delivers every message that arrived whole, then calls its close
 * callback once with MPX_EPIPE; an endpoint's receive returns every whole
 * message, then MPX_EPIPE. A write to a dead peer never raises SIGPIPE.
 *
 * Statistics count messages and payload bytes (frame headers excluded),
 * and the system calls this side made for the transport: recv, sendmsg,
 * poll, eventfd reads and io_uring_enter. The libuv loop's own epoll_wait
 * is not counted (see docs/transport.md).
 *
 * Threads. A hub and its links are used by one thread at a time: the
 * thread running their loop, or any thread while the loop is not running
 * (a hub may be created in one thread and run in another). An endpoint is
 * used by one thread at a time. Neither may be used in a fork child of the
 * process that created it (a child may only close the descriptors it
 * inherited).
 *
 * Ownership: a hub (mpx_hub_new) is the caller's, ended with mpx_hub_free;
 * its links belong to the hub; the loop is the caller's and borrowed;
 * received message buffers are valid during the callback only. */
#ifndef MPX_TRANSPORT_H
#define MPX_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common.h"
#include "conn.h"

/* The caller's libuv loop (<uv.h>). Declared here rather than included, so
 * that mpx.h does not bring all of libuv's headers (and theirs) into every
 * program; C11 allows this typedef to be repeated by <uv.h>. */
typedef struct uv_loop_s uv_loop_t;

typedef enum {
  MPX_TRANSPORT_AUTO = 0,
  MPX_TRANSPORT_PIPE = 1,
  MPX_TRANSPORT_URING = 2
} mpx_transport_t;

/* Counters of one hub (all its links, closed ones included) or of one
 * endpoint. msgs and bytes count messages and payload bytes: msgs_out and
 * bytes_out when a send accepts them, msgs_in and bytes_in when they are
 * delivered. syscalls: every recv, sendmsg, poll, eventfd read and
 * io_uring_enter this side made for the transport. */
typedef struct {
  uint64_t msgs_in, msgs_out;
  uint64_t bytes_in, bytes_out;
  uint64_t syscalls;
} mpx_transport_stats_t;

typedef struct mpx_hub_s mpx_hub_t;
typedef struct mpx_link_s mpx_link_t;
typedef struct mpx_endpoint_s mpx_endpoint_t;

/* A message received on link l: len bytes at data, valid only during the
 * callback (copy what you keep). arg is mpx_hub_add()'s. The callback may
 * send, close this link or others, add links and flush. */
typedef void (*mpx_link_msg_cb)(mpx_link_t *l, const void *data, size_t len,
                                void *arg);
/* Link l died: status is MPX_EPIPE when the peer closed its end or died,
 * else the error (a negative MPX_E* code; mpx_last_error() is not set).
 * Called once, after every message that arrived whole was delivered; the
 * link is released when the callback returns (calling mpx_link_close() on
 * it inside the callback is allowed and does nothing). Not called after
 * mpx_link_close() or mpx_hub_free(). */
typedef void (*mpx_link_close_cb)(mpx_link_t *l, int status, void *arg);

#ifdef __cplusplus
extern "C" {
#endif

/* ---- kinds ---------------------------------------------------------------- */

/* "auto", "pipe", "uring"; "unknown" for anything else. Static.
 * Own: returns a static string, borrowed until the process ends. */
MPX_API const char *mpx_transport_name(mpx_transport_t kind);

/* Parses "auto", "pipe" or "uring" (case-insensitive) into *out.
 * MPX_EINVAL for NULL or anything else.
 * Own: borrows s for the call. */
MPX_API int mpx_transport_parse(const char *s, mpx_transport_t *out);

/* The implementation `want` stands for on this machine, in *got (PIPE or
 * URING, never AUTO). AUTO is replaced by the MPX_TRANSPORT environment
 * variable when that is set, then resolves to URING when io_uring works
 * here, else to PIPE (logging once per process why). io_uring is probed
 * once per process (a ring is set up and torn down) and the answer kept;
 * MPX_URING_DISABLE=1, read at every call, makes the probe fail as if the
 * kernel said EPERM. MPX_ENOTSUP when URING is asked for (explicitly or
 * through MPX_TRANSPORT) and unavailable, MPX_EINVAL for an unknown kind
 * or an unparsable MPX_TRANSPORT; mpx_last_error() says why. */
MPX_API int mpx_transport_resolve(mpx_transport_t want, mpx_transport_t *got);

/* ---- coordinator side: a hub of links ------------------------------------ */

/* Creates a hub on loop, which stays the caller's (the hub adds handles to
 * it and never runs it). kind is resolved as by mpx_transport_resolve().
 * The caller owns *out: release it with mpx_hub_free().
 * Own: *out is yours: mpx_hub_free; keeps loop until the hub's handles
 * have closed (loop stays yours). */
MPX_API int mpx_hub_new(mpx_hub_t **out, uv_loop_t *loop,
                        mpx_transport_t kind);

/* The implementation the hub uses: PIPE or URING. */
MPX_API mpx_transport_t mpx_hub_transport(const mpx_hub_t *h);

/* Adds a link on fd, a connected stream socket, and starts receiving.
 * On success the hub owns fd (closed when the link goes) and *out (may be
 * NULL) is a handle borrowed from the hub, valid until mpx_link_close() or
 * until the close callback returns. on_msg is required, on_close may be
 * NULL; arg is passed to both. On failure fd stays the caller's: MPX_EINVAL
 * (NULL hub or callback, a socket that is not a stream socket), MPX_ENOTSOCK,
 * MPX_ENOTCONN, MPX_EBADF, MPX_ENOMEM, MPX_ESTATE (the hub is being freed).
 * TCP sockets get TCP_NODELAY; a uring hub clears O_NONBLOCK on fd, a pipe
 * hub sets it.
 * Own: takes fd on success only; *out is borrowed until mpx_link_close
 * or the close callback returns; keeps arg (not copied) until then. */
MPX_API int mpx_hub_add(mpx_hub_t *h, int fd, mpx_link_msg_cb on_msg,
                        mpx_link_close_cb on_close, void *arg,
                        mpx_link_t **out);

/* Queues one message: copies len bytes at data (only read during the call)
 * into the link's queue and returns without blocking. The queue is written
 * in batches, at the latest when the loop next iterates. 0, MPX_EINVAL,
 * MPX_ECLOSED (the link was closed), MPX_EPIPE (the peer is known to be
 * gone; the close callback follows), MPX_ENOMEM. Messages are written in
 * the order they were queued. Use mpx_link_pending() for backpressure.
 * Own: copies data. */
MPX_API int mpx_link_send(mpx_link_t *l, const void *data, size_t len);

/* Queues n messages, each framed on its own: all of them or, on an error,
 * none. The buffers are only read during the call.
 * Own: copies msgs' data. */
MPX_API int mpx_link_send_batch(mpx_link_t *l, const mpx_conn_buf_t *msgs,
                                size_t n);

/* Bytes queued on the link and not yet taken by the kernel (frame headers
 * included; with uring, a write in flight counts until it completes): the
 * backpressure signal. 0 for NULL. */
MPX_API size_t mpx_link_pending(const mpx_link_t *l);

/* Closes the link: queued data that has not been written is dropped, the
 * socket is shut down (the peer reads end of file) and closed. No callback
 * of this link runs after this returns; l is invalid after it. May be
 * called from inside any hub callback, this link's included. NULL is
 * ignored. */
MPX_API void mpx_link_close(mpx_link_t *l);

/* Writes what is queued on every link now, as far as the sockets take it
 * without blocking (pipe), or submits the writes (uring). With uring, the
 * completions the submission brings are handled at once, so message and
 * close callbacks may run inside this call. 0, or a negative error of the
 * ring (uring: every link is then closed through its close callback with
 * that error); a link whose write fails dies through its close callback. */
MPX_API int mpx_hub_flush(mpx_hub_t *h);

/* Counters of the hub, all links together (closed ones included). */
MPX_API void mpx_hub_stats(const mpx_hub_t *h, mpx_transport_stats_t *st);

/* Number of links open on the hub. */
MPX_API size_t mpx_hub_links(const mpx_hub_t *h);

/* Closes every link as mpx_link_close() does (no callbacks), then the
 * hub's own handles. Memory is released by the handles' close callbacks,
 * like any libuv handle's: run the loop once more (uv_run(loop,
 * UV_RUN_NOWAIT) is enough) before uv_loop_close(). Inside a hub callback
 * the work is finished when the callback returns. NULL is ignored. */
MPX_API void mpx_hub_free(mpx_hub_t *h);

/* ---- worker side: a blocking endpoint ------------------------------------ */

/* Opens an endpoint on fd, a connected stream socket. kind is resolved as
 * by mpx_transport_resolve(). On success the endpoint owns fd (closed by
 * mpx_endpoint_free) and the caller owns *out; on failure fd stays the
 * caller's. Errors as mpx_hub_add(); a uring endpoint clears O_NONBLOCK on
 * fd.
 * Own: *out is yours: mpx_endpoint_free; takes fd on success only. */
MPX_API int mpx_endpoint_open(mpx_endpoint_t **out, int fd,
                              mpx_transport_t kind);

/* The implementation the endpoint uses: PIPE or URING. */
MPX_API mpx_transport_t mpx_endpoint_transport(const mpx_endpoint_t *e);

/* Sends one message, blocking up to timeout seconds (negative: forever, 0:
 * do not block). The message goes out whole or not at all: MPX_ETIMEDOUT
 * means nothing of it was sent; once its first byte has left, the rest is
 * committed (copied when it cannot be written in time) and goes out before
 * anything else, during the next send, receive or mpx_endpoint_flush().
 * 0, MPX_ETIMEDOUT, MPX_EPIPE (the peer is gone), MPX_EINVAL, MPX_ENOMEM.
 * data is only read during the call.
 * Own: borrows data for the call (a committed rest is copied). */
MPX_API int mpx_endpoint_send(mpx_endpoint_t *e, const void *data, size_t len,
                              double timeout);

/* Sends n messages, each framed on its own, in as few system calls as the
 * kernel allows; the batch is one unit as above (all committed, or nothing
 * sent and MPX_ETIMEDOUT).
 * Own: borrows msgs and their data for the call (a committed rest is
 * copied). */
MPX_API int mpx_endpoint_send_batch(mpx_endpoint_t *e,
                                    const mpx_conn_buf_t *msgs, size_t n,
                                    double timeout);

/* Writes the committed rest of earlier sends, if any, within timeout:
 * 0 when nothing is left, MPX_ETIMEDOUT, MPX_EPIPE. */
MPX_API int mpx_endpoint_flush(mpx_endpoint_t *e, double timeout);

/* Receives the next message: *data and *len are set to a buffer borrowed
 * from the endpoint, valid until the next receive or mpx_endpoint_free().
 * Blocks up to timeout seconds. 0, MPX_ETIMEDOUT (a message partly
 * received is kept for the next call), MPX_EPIPE (the peer closed its end
 * or died, after every message that arrived whole; also for end of file
 * in the middle of a message), MPX_EPROTO (a header no mpx or Python peer
 * sends; the endpoint stays unreadable), MPX_ENOMEM, MPX_EINVAL.
 * Own: *data is borrowed until the next receive or mpx_endpoint_free. */
MPX_API int mpx_endpoint_recv(mpx_endpoint_t *e, const void **data,
                              size_t *len, double timeout);

/* Counters of the endpoint. */
MPX_API void mpx_endpoint_stats(const mpx_endpoint_t *e,
                                mpx_transport_stats_t *st);

/* Closes fd and frees the endpoint. A committed rest that was not flushed
 * is dropped (the peer then sees a truncated message and MPX_EPIPE): call
 * mpx_endpoint_flush() first. NULL is ignored. */
MPX_API void mpx_endpoint_free(mpx_endpoint_t *e);

#ifdef __cplusplus
}
#endif
#endif /* MPX_TRANSPORT_H */
