/* Internals shared by ipc/transport.c (kinds, framing, the generic hub and
 * endpoint) and the two implementations, transport_pipe.c and
 * transport_uring.c. Not installed. */
#ifndef MPX_IPC_TRANSPORT_INTERNAL_H
#define MPX_IPC_TRANSPORT_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>
#include <uv.h>

#include "internal.h"
#include "mpx/transport.h"

/* ---- frames: one parser and one writer for both implementations --------- */

#define MPX__FRAME_HDR_MAX 12
#define MPX__RX_CAP ((size_t)64 * 1024)

/* Writes the header of a payload of n bytes into h; returns its length, 4
 * or 12. */
size_t mpx__frame_header(uint8_t h[MPX__FRAME_HDR_MAX], uint64_t n);

/* The receive side of a stream: a read-ahead buffer of MPX__RX_CAP bytes,
 * and, for a message whose frame does not fit it, a buffer of the
 * message's own size that the payload is read into directly.
 *
 *   mpx__rx_space(rx, &p, &n);  read at most n bytes into p ...
 *   mpx__rx_commit(rx, k);      ... of which k arrived
 *   while ((rc = mpx__rx_next(rx, &msg, &len)) == 1) use(msg, len);
 *
 * mpx__rx_next() never moves buffered bytes, so a read into the space may
 * be in flight (io_uring) while messages are taken out; mpx__rx_space()
 * may move them, and invalidates the messages returned before. */
typedef struct {
  uint8_t *buf;
  size_t pos, end; /* unparsed bytes: buf[pos..end) */
  uint8_t *big;    /* payload of a large message, blen bytes, bgot in */
  size_t blen, bgot;
  uint8_t *done;  /* a large message returned last: freed on the next call */
  bool space_big; /* the last space handed out was in big */
  bool waitall;   /* the last space is a large payload's rest */
  int err;        /* sticky: MPX_EPROTO or MPX_ENOMEM */
} mpx__rx_t;

void mpx__rx_init(mpx__rx_t *rx);
void mpx__rx_free(mpx__rx_t *rx);
/* Where the next read goes. may_move: the bytes of messages returned
 * before may be overwritten (else *n may be 0: no room without moving).
 * MPX_ENOMEM (first use allocates), or rx's sticky error. */
int mpx__rx_space(mpx__rx_t *rx, void **p, size_t *n, bool may_move);
/* n bytes arrived at the last space. */
void mpx__rx_commit(mpx__rx_t *rx, size_t n);
/* 1 with the next whole message (valid until the next call on rx), 0 when
 * more bytes are needed, MPX_EPROTO / MPX_ENOMEM (sticky). */
int mpx__rx_next(mpx__rx_t *rx, const void **data, size_t *len);
/* Bytes of an incomplete message are buffered. */
bool mpx__rx_partial(const mpx__rx_t *rx);

/* The send side: framed bytes, copied. `cur` is being written (its bytes
 * must not move while a write is in flight), `nxt` takes new frames; when
 * cur is done, the two swap. */
typedef struct {
  uint8_t *p;
  size_t len, cap;
} mpx__bytes_t;

typedef struct {
  mpx__bytes_t cur, nxt;
  size_t off; /* cur.p[off..cur.len) is left to write */
} mpx__tx_t;

void mpx__tx_init(mpx__tx_t *tx);
void mpx__tx_free(mpx__tx_t *tx);
/* Frames msgs[0..n) into nxt: all or nothing. MPX_ENOMEM. */
int mpx__tx_append(mpx__tx_t *tx, const mpx_conn_buf_t *msgs, size_t n);
/* Appends raw bytes (an unsent rest of frames). MPX_ENOMEM. */
int mpx__tx_append_raw(mpx__tx_t *tx, const void *p, size_t n);
/* Bytes queued in all. */
size_t mpx__tx_pending(const mpx__tx_t *tx);
/* The bytes to write next (swapping nxt in when cur is done): their
 * length, 0 when nothing is queued. */
size_t mpx__tx_peek(mpx__tx_t *tx, const void **p);
/* n bytes of the last peek were written. */
void mpx__tx_done(mpx__tx_t *tx, size_t n);
/* Drops everything queued. */
void mpx__tx_clear(mpx__tx_t *tx);

/* Validates a batch: MPX_EINVAL for a NULL buffer with a length. */
int mpx__check_batch(const mpx_conn_buf_t *msgs, size_t n, const char *who);

/* A batch sent by a gather write straight from the caller's buffers: the
 * position (message i, of whose frame `skip` bytes went out) and room for
 * the frame headers of one write (nhdr frames). */
#define MPX__GATHER_FRAMES 512 /* IOV_MAX / 2 */
typedef struct {
  const mpx_conn_buf_t *msgs;
  size_t n;
  size_t i;    /* next message */
  size_t skip; /* bytes of message i's frame already written */
  uint8_t (*hdr)[MPX__FRAME_HDR_MAX];
  size_t nhdr;
} mpx__gather_t;
/* Fills up to max_iov entries of iov from g's position, whole frames
 * only; returns the number of entries. */
int mpx__gather_iov(mpx__gather_t *g, struct iovec *iov, int max_iov);
/* Advances g by n bytes written. */
void mpx__gather_advance(mpx__gather_t *g, size_t n);
/* Copies the unsent rest of the batch into tx. MPX_ENOMEM. */
int mpx__gather_commit_rest(mpx__gather_t *g, mpx__tx_t *tx);

/* io_uring availability: 0 when it works here, else a negative code
 * (MPX_EPERM when MPX_URING_DISABLE=1) with the reason in *why (static). */
int mpx__uring_probe(const char **why);

/* ---- the hub --------------------------------------------------------------- */

typedef struct mpx__hub_ops_s mpx__hub_ops_t;

struct mpx_link_s {
  mpx_hub_t *hub;
  int fd;
  mpx_link_msg_cb on_msg;
  mpx_link_close_cb on_close;
  void *arg;
  mpx__rx_t rx;
  mpx__tx_t tx;
  mpx_link_t *prev, *next; /* the hub's open links */
  mpx_link_t *dnext;       /* the hub's dirty list (queued, not started) */
  unsigned refs;           /* freed when it drops to 0 */
  bool closed;             /* no more callbacks; the user's handle is gone */
  bool dirty;              /* on the dirty list */
  bool wdead;              /* writing failed: waiting for end of file */
  /* implementation state */
  union {
    struct {
      uv_poll_t poll;
      int events; /* UV_READABLE | UV_WRITABLE being watched */
    } p;
    struct {
      bool recv_armed, send_armed;
    } u;
  } impl;
};

struct mpx_hub_s {
  uv_loop_t *loop;
  mpx_transport_t kind;
  const mpx__hub_ops_t *ops;
  uv_prepare_t prepare; /* flushes before the loop blocks */
  uv_check_t check;     /* flushes after the loop's I/O callbacks */
  uv_idle_t idle;       /* keeps the next poll from blocking after the
                           prepare-time flush ran user callbacks */
  uint64_t callbacks;   /* user callbacks run (message and close) */
  bool flushing_armed;  /* prepare and check started */
  bool need_flush;      /* the implementation has work queued (uring:
                           entries not yet submitted): stay armed */
  mpx_link_t *links;
  size_t nlinks;
  mpx_link_t *dirty, **dirty_tail;
  mpx_transport_stats_t st;
  unsigned depth;      /* nesting of hub work on the stack */
  unsigned handles;    /* uv handles not yet closed */
  bool freeing;        /* mpx_hub_free() was called */
  bool free_done;      /* the teardown ran */
  void *impl;          /* implementation state (the ring) */
};

struct mpx__hub_ops_s {
  int (*init)(mpx_hub_t *h);
  int (*add)(mpx_hub_t *h, mpx_link_t *l); /* start receiving */
  int (*flush)(mpx_hub_t *h);              /* write the dirty links */
  void (*close)(mpx_link_t *l);   /* stop I/O, shut down; drops the open ref
                                     (now or later) */
  void (*release)(mpx_link_t *l); /* last ref gone: free impl resources */
  void (*teardown)(mpx_hub_t *h); /* after every link was closed */
};

extern const mpx__hub_ops_t mpx__hub_pipe_ops;
extern const mpx__hub_ops_t mpx__hub_uring_ops;

/* Generic hub helpers for the implementations. */
/* Starts the prepare and check handles that call ops->flush(). */
void mpx__hub_arm(mpx_hub_t *h);
void mpx__hub_enter(mpx_hub_t *h);
void mpx__hub_leave(mpx_hub_t *h); /* finishes a deferred free at depth 0 */
void mpx__link_ref(mpx_link_t *l);
void mpx__link_unref(mpx_link_t *l);
/* Takes the next link off h's dirty list, or NULL; the list's reference
 * passes to the caller, who unrefs the link when done with it. */
mpx_link_t *mpx__hub_pop_dirty(mpx_hub_t *h);
/* Puts l on the dirty list (again) and arms the flush handles. */
void mpx__link_mark_dirty(mpx_link_t *l);
/* n bytes arrived at the link's rx space: delivers every whole message.
 * Returns false when the link is closed afterwards (by a callback or a
 * protocol error). */
bool mpx__link_received(mpx_link_t *l, size_t n);
/* End of file or an error on the link: reports status through the close
 * callback (MPX_EPIPE for end of file or a reset) and closes the link.
 * Does nothing on a closed link. */
void mpx__link_fail(mpx_link_t *l, int status);
/* A write failed with a reset / broken pipe: drops the queue and keeps
 * reading until end of file. */
void mpx__link_write_dead(mpx_link_t *l);
/* A uv handle of the hub was closed (its close callback). */
void mpx__hub_handle_closed(mpx_hub_t *h);
/* Shuts the link's socket down: the peer reads end of file, and reads and
 * writes in flight on it end. */
void mpx__link_shutdown(mpx_link_t *l);

/* ---- the endpoint ---------------------------------------------------------- */

typedef struct mpx__ep_ops_s mpx__ep_ops_t;

struct mpx_endpoint_s {
  mpx_transport_t kind;
  const mpx__ep_ops_t *ops;
  int fd;
  mpx__rx_t rx;
  mpx__tx_t tx; /* the committed rest of earlier sends */
  bool eof;
  int rerr, werr; /* sticky */
  mpx_transport_stats_t st;
  uint8_t (*hdr)[MPX__FRAME_HDR_MAX]; /* frame headers of a batch */
  size_t nhdr;
  void *impl;
};

struct mpx__ep_ops_s {
  int (*open)(mpx_endpoint_t *e);
  /* Sends the batch in g (tx is empty) until the deadline: 0 when it all
   * went out, else MPX_ETIMEDOUT / an error with g advanced by what went
   * out. */
  int (*send)(mpx_endpoint_t *e, mpx__gather_t *g, double deadline);
  /* Writes tx until empty or the deadline: 0, MPX_ETIMEDOUT, error. */
  int (*flush)(mpx_endpoint_t *e, double deadline);
  /* Reads more bytes into rx (or sets eof), progressing tx meanwhile:
   * 0, MPX_ETIMEDOUT, error. */
  int (*fill)(mpx_endpoint_t *e, double deadline);
  void (*close)(mpx_endpoint_t *e);
};

extern const mpx__ep_ops_t mpx__ep_pipe_ops;
extern const mpx__ep_ops_t mpx__ep_uring_ops;

/* Errors of a write or read mapped to mpx codes: a reset or broken pipe is
 * MPX_EPIPE. */
static inline int mpx__io_err(int neg_errno) {
  return neg_errno == -ECONNRESET || neg_errno == -EPIPE ? MPX_EPIPE
                                                         : neg_errno;
}

/* Checks fd is a connected stream socket (and sets TCP_NODELAY on a TCP
 * one): 0, MPX_EBADF, MPX_ENOTSOCK, MPX_EINVAL, MPX_ENOTCONN (with
 * mpx_last_error set). */
int mpx__check_stream_socket(int fd, const char *who);

#endif /* MPX_IPC_TRANSPORT_INTERNAL_H */
