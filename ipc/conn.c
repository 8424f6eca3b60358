/* Connections: Python multiprocessing.connection framing over a stream fd,
 * and wait() over connections, process sentinels and raw descriptors.
 *
 * Input is read ahead into a 64 KiB buffer (rbuf), so one read serves many
 * small messages. A message whose frame fits the buffer is returned from
 * it; a larger one is read straight into its destination (the caller's
 * buffer, or the malloc'd buffer that recv_bytes hands over). A receive
 * that times out in the middle of a large message keeps what it read in
 * `pbuf` (header consumed, `pgot` of `plen` bytes), and the next receive
 * goes on from there. The header of a message that is too long for the
 * caller stays in rbuf: nothing is consumed before the length is checked.
 *
 * Output goes out with one writev/sendmsg per call (header and payload
 * together, several frames per call for a batch). A send that times out in
 * the middle of a frame copies the frame's tail into `wpend`; it goes out
 * first, in the same writev, with the next send. */
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "conn_internal.h"
#include "ident.h"
#include "internal.h"

#define RBUF_CAP ((size_t)64 * 1024)
#define HDR_MAX 12
#define SHORT_MAX 0x7fffffffu
/* Longest message accepted from a header: anything longer is a corrupt
 * or hostile stream. */
#define MSG_MAX ((uint64_t)PTRDIFF_MAX - 64)
#define IOV_CHUNK 1024 /* IOV_MAX on Linux */
/* The encoding buffer of send_obj is kept between calls up to this size. */
#define ENC_KEEP ((size_t)1 << 20)

struct mpx_conn_s {
  int fd;
  unsigned flags; /* MPX_CONN_READABLE | MPX_CONN_WRITABLE */
  bool sock;
  bool closed;
  /* input */
  uint8_t *rbuf; /* RBUF_CAP bytes, allocated on first receive */
  size_t rpos, rend;
  uint8_t *pbuf; /* a large message in progress (plen + 1 bytes) */
  size_t plen, pgot;
  bool eof;
  int rerr; /* sticky: the stream position is lost */
  /* output */
  uint8_t *wpend; /* the tail of a committed frame: wpend[woff..woff+wlen) */
  size_t woff, wlen, wcap;
  int werr; /* sticky: peer gone, or a frame was cut short */
  mpx_wbuf_t enc;
};

/* ---- helpers --------------------------------------------------------------- */

static int check_timeout(double timeout) {
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "conn: timeout is NaN");
  return 0;
}

static int conn_alloc(mpx_conn_t **out, int fd, unsigned flags, bool sock) {
  mpx_conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return mpx__err(MPX_ENOMEM, "conn: out of memory");
  c->fd = fd;
  c->flags = flags;
  c->sock = sock;
  mpx_wbuf_init(&c->enc);
  *out = c;
  return 0;
}

/* Waits for `events` on fd until the deadline. 0, MPX_ETIMEDOUT, -errno.
 * Never returns before the deadline without the event. */
static int wait_fd(int fd, short events, double deadline) {
  for (;;) {
    struct pollfd p = {fd, events, 0};
    int r = poll(&p, 1, mpx__poll_ms(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      return mpx__err_errno("conn: poll");
    }
    if (r > 0) {
      if (p.revents & POLLNVAL)
        return mpx__err(MPX_EBADF, "conn: descriptor %d is not open", fd);
      return 0;
    }
    if (deadline >= 0 && mpx__now() >= deadline) return MPX_ETIMEDOUT;
  }
}

static size_t put_header(uint8_t *h, uint64_t n) {
  if (n <= SHORT_MAX) {
    for (int i = 0; i < 4; i++) h[i] = (uint8_t)(n >> (24 - 8 * i));
    return 4;
  }
  memset(h, 0xff, 4);
  for (int i = 0; i < 8; i++) h[4 + i] = (uint8_t)(n >> (56 - 8 * i));
  return 12;
}

/* Parses a header from p[0..avail): 0 with *n and *hlen, 1 when more
 * bytes are needed (*hlen: how many the header takes), MPX_EPROTO. */
static int parse_header(const uint8_t *p, size_t avail, uint64_t *n,
                        size_t *hlen) {
  uint32_t v;
  if (avail < 4) {
    *hlen = 4;
    return 1;
  }
  v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
      p[3];
  if (v <= SHORT_MAX) {
    *n = v;
    *hlen = 4;
    return 0;
  }
  if (v != 0xffffffffu) return MPX_EPROTO;
  *hlen = 12;
  if (avail < 12) return 1;
  *n = 0;
  for (int i = 4; i < 12; i++) *n = *n << 8 | p[i];
  return *n > MSG_MAX ? MPX_EPROTO : 0;
}

/* ---- creation -------------------------------------------------------------- */

int mpx_pipe(mpx_conn_t **c1, mpx_conn_t **c2, bool duplex) {
  int fds[2], rc;
  mpx_conn_t *a = NULL, *b = NULL;
  if (c1 == NULL || c2 == NULL)
    return mpx__err(MPX_EINVAL, "mpx_pipe: NULL output");
  *c1 = *c2 = NULL;
  if (duplex) {
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0)
      return mpx__err_errno("mpx_pipe: socketpair");
  } else if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    return mpx__err_errno("mpx_pipe: pipe2");
  }
  unsigned f1 = duplex ? MPX_CONN_READABLE | MPX_CONN_WRITABLE
                       : MPX_CONN_READABLE;
  unsigned f2 = duplex ? MPX_CONN_READABLE | MPX_CONN_WRITABLE
                       : MPX_CONN_WRITABLE;
  if ((rc = conn_alloc(&a, fds[0], f1, duplex)) != 0 ||
      (rc = conn_alloc(&b, fds[1], f2, duplex)) != 0) {
    free(a);
    close(fds[0]);
    close(fds[1]);
    return rc;
  }
  *c1 = a;
  *c2 = b;
  return 0;
}

int mpx_conn_from_fd(mpx_conn_t **c, int fd, unsigned flags) {
  struct stat st;
  bool sock;
  if (c == NULL) return mpx__err(MPX_EINVAL, "mpx_conn_from_fd: NULL output");
  *c = NULL;
  if (flags & ~(unsigned)(MPX_CONN_READABLE | MPX_CONN_WRITABLE))
    return mpx__err(MPX_EINVAL, "mpx_conn_from_fd: unknown flags %#x", flags);
  if (flags == 0) flags = MPX_CONN_READABLE | MPX_CONN_WRITABLE;
  if (fd < 0 || fstat(fd, &st) != 0)
    return mpx__err(MPX_EBADF, "mpx_conn_from_fd: descriptor %d is not open",
                    fd);
  sock = S_ISSOCK(st.st_mode);
  if (sock) {
    int type = 0, proto = 0, one = 1;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
      return mpx__err_errno("mpx_conn_from_fd: getsockopt(%d)", fd);
    if (type != SOCK_STREAM)
      return mpx__err(MPX_EINVAL,
                      "mpx_conn_from_fd: descriptor %d is not a stream socket",
                      fd);
    len = sizeof proto;
    /* Nagle would hold back a small frame until the previous one is
     * acknowledged. */
    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &proto, &len) == 0 &&
        proto == IPPROTO_TCP &&
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
      return mpx__err_errno("mpx_conn_from_fd: TCP_NODELAY on %d", fd);
  } else {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || (!(fl & O_NONBLOCK) &&
                   fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0))
      return mpx__err_errno("mpx_conn_from_fd: O_NONBLOCK on %d", fd);
  }
  return conn_alloc(c, fd, flags, sock);
}

/* ---- writing --------------------------------------------------------------- */

typedef struct {
  uint8_t h[HDR_MAX];
  size_t hlen;
  const uint8_t *p;
  size_t n;
} frame_out_t;

/* Writes to a pipe block SIGPIPE for the calling thread; a SIGPIPE that
 * the write raised is taken off the pending set before the mask returns.
 * When the caller already blocks SIGPIPE, nothing is done (and a SIGPIPE
 * stays pending for the caller, as it would without mpx). */
typedef struct {
  sigset_t old;
  bool active;
} sigpipe_guard_t;

static void guard_begin(sigpipe_guard_t *g) {
  sigset_t s;
  sigemptyset(&s);
  sigaddset(&s, SIGPIPE);
  g->active = pthread_sigmask(SIG_BLOCK, &s, &g->old) == 0 &&
              !sigismember(&g->old, SIGPIPE);
}

static void guard_end(sigpipe_guard_t *g, bool got_epipe) {
  int saved = errno;
  if (!g->active) return;
  if (got_epipe) {
    sigset_t s;
    struct timespec zero = {0, 0};
    sigemptyset(&s);
    sigaddset(&s, SIGPIPE);
    while (sigtimedwait(&s, NULL, &zero) < 0 && errno == EINTR) {
    }
  }
  pthread_sigmask(SIG_SETMASK, &g->old, NULL);
  errno = saved;
}

/* Saves the unsent rest of frame f (from byte `off` of header + payload) as
 * the pending tail. */
static int save_tail(mpx_conn_t *c, const frame_out_t *f, size_t off) {
  size_t total = f->hlen + f->n, need = total - off;
  if (need > c->wcap) {
    uint8_t *p = realloc(c->wpend, need);
    if (p == NULL) return MPX_ENOMEM;
    c->wpend = p;
    c->wcap = need;
  }
  c->woff = 0;
  c->wlen = 0;
  if (off < f->hlen) {
    memcpy(c->wpend, f->h + off, f->hlen - off);
    c->wlen = f->hlen - off;
    off = f->hlen;
  }
  if (f->n > off - f->hlen)
    memcpy(c->wpend + c->wlen, f->p + (off - f->hlen), f->n - (off - f->hlen));
  c->wlen += f->n - (off - f->hlen);
  return 0;
}

/* The iovecs for one write: the pending tail, then the frames from fr[i]
 * (its first `off` bytes already out). Returns how many. */
static inline int frames_iov(const mpx_conn_t *c, const frame_out_t *fr, size_t nf,
                             size_t i, size_t off, struct iovec *iov) {
  int k = 0;
  if (c->wlen > 0) iov[k++] = (struct iovec){c->wpend + c->woff, c->wlen};
  for (size_t j = i; j < nf && k + 2 <= IOV_CHUNK; j++) {
    size_t o = j == i ? off : 0;
    if (o < fr[j].hlen)
      iov[k++] = (struct iovec){(void *)(fr[j].h + o), fr[j].hlen - o};
    if (fr[j].n > 0) {
      size_t po = o > fr[j].hlen ? o - fr[j].hlen : 0;
      iov[k++] = (struct iovec){(void *)(fr[j].p + po), fr[j].n - po};
    }
  }
  return k;
}

/* Accounts for w bytes that went out: the tail first, then the frames
 * (*i the frame in progress, *off its bytes written). */
static inline void frames_sent(mpx_conn_t *c, const frame_out_t *fr, size_t left,
                               size_t *i, size_t *off) {
  if (c->wlen > 0) {
    size_t t = left < c->wlen ? left : c->wlen;
    c->woff += t;
    c->wlen -= t;
    left -= t;
    if (c->wlen == 0) c->woff = 0;
  }
  while (left > 0) {
    size_t rem = fr[*i].hlen + fr[*i].n - *off;
    if (left >= rem) {
      left -= rem;
      (*i)++;
      *off = 0;
    } else {
      *off += left;
      left = 0;
    }
  }
}

/* Out of time: a frame already started is committed (its rest saved to
 * be written later). 0 when every frame is, MPX_ETIMEDOUT, or an error. */
static int frames_out_of_time(mpx_conn_t *c, const frame_out_t *fr, size_t nf,
                              size_t *i, size_t *off) {
  if (*off > 0) {
    if (save_tail(c, &fr[*i], *off) != 0) {
      c->werr = MPX_ENOMEM;
      return mpx__err(MPX_ENOMEM, "conn: out of memory saving the rest "
                      "of a message; the connection is unwritable");
    }
    (*i)++;
    *off = 0;
  }
  return *i < nf ? MPX_ETIMEDOUT : 0;
}

/* A write failed with errno (not EINTR or EAGAIN): the error, and whether
 * the connection is unwritable from now on. */
static int frames_write_error(mpx_conn_t *c, size_t off, bool *epipe) {
  if (errno == EPIPE || errno == ECONNRESET) {
    *epipe = errno == EPIPE;
    c->werr = MPX_EPIPE;
    return mpx__err(MPX_EPIPE, "conn: the peer closed the connection");
  }
  int rc = mpx__err_errno("conn: write");
  if (off > 0 || c->wlen > 0) c->werr = rc;
  return rc;
}

/* Writes the pending tail, then frames fr[0..nf). *n_done: frames sent or
 * committed. Returns 0 when all are, MPX_ETIMEDOUT, or an error. */
static int write_frames(mpx_conn_t *c, const frame_out_t *fr, size_t nf,
                        double deadline, size_t *n_done) {
  struct iovec iov[IOV_CHUNK];
  sigpipe_guard_t guard = {0};
  size_t i = 0, off = 0; /* frame in progress and its bytes written */
  int rc = 0;
  bool epipe = false;

  *n_done = 0;
  if (c->werr) return mpx__err(c->werr, "conn: connection unwritable since "
                               "an earlier error (%s)", mpx_strerror(c->werr));
  if (!c->sock) guard_begin(&guard);
  for (;;) {
    ssize_t w;
    int k = frames_iov(c, fr, nf, i, off, iov);
    if (k == 0) break; /* everything is out */
    if (c->sock) {
      struct msghdr m = {0};
      m.msg_iov = iov;
      m.msg_iovlen = (size_t)k;
      w = sendmsg(c->fd, &m, MSG_NOSIGNAL | (deadline < 0 ? 0 : MSG_DONTWAIT));
    } else {
      w = writev(c->fd, iov, k);
    }
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        rc = wait_fd(c->fd, POLLOUT, deadline);
        if (rc == 0) continue;
        if (rc == MPX_ETIMEDOUT) rc = frames_out_of_time(c, fr, nf, &i, &off);
        break;
      }
      rc = frames_write_error(c, off, &epipe);
      break;
    }
    frames_sent(c, fr, (size_t)w, &i, &off);
  }
  if (!c->sock) guard_end(&guard, epipe);
  *n_done = i;
  return rc;
}

static int check_write(mpx_conn_t *c, double timeout) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "conn: NULL connection");
  if (c->closed) return mpx__err(MPX_ECLOSED, "conn: connection is closed");
  if (!(c->flags & MPX_CONN_WRITABLE))
    return mpx__err(MPX_EBADF, "conn: connection is read-only");
  return check_timeout(timeout);
}

static int send_one(mpx_conn_t *c, const void *buf, size_t len,
                    double timeout) {
  frame_out_t f;
  size_t done;
  f.hlen = put_header(f.h, len);
  f.p = buf;
  f.n = len;
  return write_frames(c, &f, 1, mpx__deadline(timeout), &done);
}

int mpx_conn_send_bytes(mpx_conn_t *c, const void *buf, size_t len,
                        double timeout) {
  int rc = check_write(c, timeout);
  if (rc != 0) return rc;
  if (buf == NULL && len > 0)
    return mpx__err(MPX_EINVAL, "conn: NULL buffer of %zu bytes", len);
  return send_one(c, buf, len, timeout);
}

int mpx_conn_send_bytes_at(mpx_conn_t *c, const void *buf, size_t buflen,
                           size_t offset, size_t size, double timeout) {
  if (offset > buflen)
    return mpx__err(MPX_EINVAL, "conn: offset %zu beyond a buffer of %zu",
                    offset, buflen);
  if (size == MPX_CONN_REST) size = buflen - offset;
  if (size > buflen - offset)
    return mpx__err(MPX_EINVAL, "conn: %zu bytes at offset %zu beyond a "
                    "buffer of %zu", size, offset, buflen);
  return mpx_conn_send_bytes(c, buf == NULL ? NULL : (const char *)buf + offset,
                             size, timeout);
}

int mpx_conn_send_batch(mpx_conn_t *c, const mpx_conn_buf_t *msgs, size_t n,
                        size_t *n_sent, double timeout) {
  frame_out_t fr[IOV_CHUNK / 2];
  double deadline;
  size_t sent = 0;
  int rc = check_write(c, timeout);
  if (n_sent != NULL) *n_sent = 0;
  if (rc != 0) return rc;
  if (msgs == NULL && n > 0)
    return mpx__err(MPX_EINVAL, "conn: NULL batch of %zu messages", n);
  for (size_t i = 0; i < n; i++)
    if (msgs[i].data == NULL && msgs[i].len > 0)
      return mpx__err(MPX_EINVAL, "conn: message %zu: NULL buffer", i);
  deadline = mpx__deadline(timeout);
  while (sent < n) {
    /* One chunk: as many frames as one writev takes, room left for the
     * pending tail. */
    size_t m = n - sent, done;
    if (m > IOV_CHUNK / 2 - 1) m = IOV_CHUNK / 2 - 1;
    for (size_t j = 0; j < m; j++) {
      fr[j].hlen = put_header(fr[j].h, msgs[sent + j].len);
      fr[j].p = msgs[sent + j].data;
      fr[j].n = msgs[sent + j].len;
    }
    rc = write_frames(c, fr, m, deadline, &done);
    sent += done;
    if (rc != 0) break;
  }
  if (n_sent != NULL) *n_sent = sent;
  return rc;
}

int mpx_conn_send_obj(mpx_conn_t *c, const mpx_codec_t *codec,
                      const mpx_obj_t *obj, double timeout) {
  int rc = check_write(c, timeout);
  if (rc != 0) return rc;
  if (codec == NULL) return mpx__err(MPX_EINVAL, "conn: NULL codec");
  mpx_wbuf_reset(&c->enc);
  rc = mpx_codec_encode(codec, obj, &c->enc, NULL);
  if (rc == 0) rc = send_one(c, c->enc.data, c->enc.len, timeout);
  if (c->enc.cap > ENC_KEEP) mpx_wbuf_free(&c->enc);
  return rc;
}

/* ---- arena references -------------------------------------------------------- */

#define REF_MAGIC "MPXLOAN"
#define REF_MSG 24

static void put_le64(uint8_t *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
  return v;
}

int mpx_conn_send_ref(mpx_conn_t *c, mpx_arena_t *a, mpx_ref_t ref, size_t len,
                      double timeout) {
  uint8_t m[REF_MSG];
  if (a == NULL) return mpx__err(MPX_EINVAL, "conn: NULL arena");
  size_t cap = mpx_arena_block_size(a, ref);
  if (cap == 0)
    return mpx__err(MPX_EINVAL, "conn: %#llx is not a live arena block",
                    (unsigned long long)ref);
  if (len > cap)
    return mpx__err(MPX_EINVAL, "conn: %zu bytes from a block of %zu", len, cap);
  memcpy(m, REF_MAGIC, 8);
  put_le64(m + 8, ref);
  put_le64(m + 16, len);
  return mpx_conn_send_bytes(c, m, sizeof m, timeout);
}

int mpx_conn_recv_ref(mpx_conn_t *c, mpx_arena_t *a, mpx_ref_t *ref,
                      const void **data, size_t *len, double timeout) {
  uint8_t m[REF_MSG];
  size_t n;
  if (a == NULL || ref == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "conn: NULL argument");
  *ref = 0;
  *data = NULL;
  *len = 0;
  int rc = mpx_conn_recv_bytes_into(c, m, sizeof m, &n, timeout);
  if (rc == MPX_ETOOSHORT) {
    void *junk;
    if (mpx_conn_recv_bytes(c, &junk, &n, 0, timeout) == 0) free(junk);
    return mpx__err(MPX_EPROTO, "conn: a %zu-byte message where a block "
                    "reference was expected", n);
  }
  if (rc != 0) return rc;
  if (n != REF_MSG || memcmp(m, REF_MAGIC, 8) != 0)
    return mpx__err(MPX_EPROTO, "conn: a %zu-byte message that is not a "
                    "block reference", n);
  mpx_ref_t r = get_le64(m + 8);
  uint64_t l = get_le64(m + 16);
  size_t cap = mpx_arena_block_size(a, r);
  if (cap != 0 && l > cap)
    return mpx__err(MPX_EPROTO, "conn: reference to %llu bytes in a block of %zu",
                    (unsigned long long)l, cap);
  if (cap == 0 || mpx_arena_give(a, r, mpx__pid()) != 0)
    return mpx__err(MPX_ESTALE, "conn: block %#llx was freed in flight "
                    "(its sender died?)", (unsigned long long)r);
  *ref = r;
  *data = mpx_arena_ptr(a, r);
  *len = (size_t)l;
  return 0;
}

int mpx_conn_flush(mpx_conn_t *c, double timeout) {
  size_t done;
  int rc = check_write(c, timeout);
  if (rc != 0) return rc;
  if (c->wlen == 0) return 0;
  rc = write_frames(c, NULL, 0, mpx__deadline(timeout), &done);
  if (rc == 0 && c->wlen > 0) rc = MPX_ETIMEDOUT;
  return rc;
}

/* ---- reading --------------------------------------------------------------- */

static int check_read(mpx_conn_t *c, double timeout) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "conn: NULL connection");
  if (c->closed) return mpx__err(MPX_ECLOSED, "conn: connection is closed");
  if (!(c->flags & MPX_CONN_READABLE))
    return mpx__err(MPX_EBADF, "conn: connection is write-only");
  if (c->rerr)
    return mpx__err(c->rerr, "conn: connection unreadable since an earlier "
                    "error (%s)", mpx_strerror(c->rerr));
  return check_timeout(timeout);
}

/* One read of up to n bytes: > 0, 0 at end of file, or -errno (-EAGAIN
 * when nothing is there). Blocks only for a socket with no deadline. */
static ssize_t rd(mpx_conn_t *c, void *dst, size_t n, bool block) {
  for (;;) {
    ssize_t k = c->sock ? recv(c->fd, dst, n, block ? 0 : MSG_DONTWAIT)
                        : read(c->fd, dst, n);
    if (k >= 0) return k;
    if (errno == EINTR) continue;
    return errno == EWOULDBLOCK ? -EAGAIN : -errno;
  }
}

static int eof_error(mpx_conn_t *c, bool mid_message) {
  (void)c;
  return mid_message
             ? mpx__err(MPX_EPIPE, "conn: end of file during a message")
             : mpx__err(MPX_EPIPE, "conn: the peer closed the connection");
}

static int read_error(mpx_conn_t *c, ssize_t k, bool mid_message) {
  if (k == -ECONNRESET || k == -EPIPE) {
    c->eof = true;
    return eof_error(c, mid_message);
  }
  errno = (int)-k;
  return mpx__err_errno("conn: read");
}

/* Reads into dst[*got..n) until it is full. Keeps *got on a timeout. */
static int read_direct(mpx_conn_t *c, uint8_t *dst, size_t n, size_t *got,
                       double deadline) {
  bool block = c->sock && deadline < 0, ready = true;
  while (*got < n) {
    ssize_t k;
    int rc;
    if (c->eof) return eof_error(c, true);
    if (!ready && (rc = wait_fd(c->fd, POLLIN, deadline)) != 0) return rc;
    k = rd(c, dst + *got, n - *got, block);
    if (k > 0) {
      *got += (size_t)k;
      ready = block;
    } else if (k == 0) {
      c->eof = true;
    } else if (k == -EAGAIN) {
      ready = false;
    } else {
      return read_error(c, k, true);
    }
  }
  return 0;
}

/* Makes at least `want` (<= RBUF_CAP) bytes available in rbuf. */
static int fill(mpx_conn_t *c, size_t want, double deadline) {
  bool block = c->sock && deadline < 0, ready = true;
  if (c->rbuf == NULL && (c->rbuf = malloc(RBUF_CAP)) == NULL)
    return mpx__err(MPX_ENOMEM, "conn: out of memory");
  for (;;) {
    size_t avail = c->rend - c->rpos;
    ssize_t k;
    int rc;
    if (avail >= want) return 0;
    if (c->eof) return eof_error(c, avail > 0);
    if (c->rpos > 0 && c->rpos + want > RBUF_CAP) {
      memmove(c->rbuf, c->rbuf + c->rpos, avail);
      c->rpos = 0;
      c->rend = avail;
    }
    if (!ready && (rc = wait_fd(c->fd, POLLIN, deadline)) != 0) return rc;
    k = rd(c, c->rbuf + c->rend, RBUF_CAP - c->rend, block);
    if (k > 0) {
      /* A read that filled the space left is likely to have more behind
       * it; otherwise poll before reading again. */
      ready = block || (size_t)k == RBUF_CAP - c->rend;
      c->rend += (size_t)k;
    } else if (k == 0) {
      c->eof = true;
    } else if (k == -EAGAIN) {
      ready = false;
    } else {
      return read_error(c, k, avail > 0);
    }
  }
}

static void consume(mpx_conn_t *c, size_t n) {
  c->rpos += n;
  if (c->rpos == c->rend) c->rpos = c->rend = 0;
}

/* A whole message: in rbuf (owned NULL; drop `used` bytes of rbuf after
 * use), or a malloc'd buffer of len + 1 bytes (owned), or the caller's
 * dst. */
typedef struct {
  const uint8_t *data;
  size_t len;
  uint8_t *owned;
  size_t used;
} frame_in_t;

static int too_long(size_t len, size_t limit, int code) {
  if (code == MPX_EMSGSIZE)
    return mpx__err(code, "conn: message of %zu bytes, more than maxlength "
                    "%zu; it stays in place", len, limit);
  return mpx__err(code, "conn: message of %zu bytes, buffer of %zu; it "
                  "stays in place", len, limit);
}

/* Finishes the large message in pbuf. */
static int finish_partial(mpx_conn_t *c, size_t limit, int code,
                          double deadline, frame_in_t *f, size_t *len) {
  int rc;
  *len = c->plen;
  if (c->plen > limit) return too_long(c->plen, limit, code);
  rc = read_direct(c, c->pbuf, c->plen, &c->pgot, deadline);
  if (rc != 0) return rc;
  c->pbuf[c->plen] = 0;
  f->data = f->owned = c->pbuf;
  f->len = c->plen;
  f->used = 0;
  c->pbuf = NULL;
  c->plen = c->pgot = 0;
  return 0;
}

/* The next message, at most `limit` bytes (else `code` with *len its
 * length, nothing consumed). A large message goes to dst when it is not
 * NULL (the caller checked limit <= its room), else to a new buffer. */
static int next_frame(mpx_conn_t *c, size_t limit, int code, uint8_t *dst,
                      double deadline, frame_in_t *f, size_t *len) {
  uint64_t n = 0;
  size_t hlen = 4, avail, take;
  int rc;

  memset(f, 0, sizeof *f);
  *len = 0;
  if (c->pbuf != NULL) return finish_partial(c, limit, code, deadline, f, len);
  for (;;) {
    rc = c->rbuf == NULL ? 1
                         : parse_header(c->rbuf + c->rpos, c->rend - c->rpos,
                                        &n, &hlen);
    if (rc == 0) break;
    if (rc < 0) {
      c->rerr = MPX_EPROTO;
      return mpx__err(MPX_EPROTO, "conn: bad message header %02x%02x%02x%02x...; "
                      "the connection is unreadable",
                      c->rbuf[c->rpos], c->rbuf[c->rpos + 1],
                      c->rbuf[c->rpos + 2], c->rbuf[c->rpos + 3]);
    }
    if ((rc = fill(c, hlen, deadline)) != 0) return rc;
  }
  *len = (size_t)n;
  if (n > limit) return too_long((size_t)n, limit, code);
  if (hlen + n <= RBUF_CAP) {
    if ((rc = fill(c, hlen + (size_t)n, deadline)) != 0) return rc;
    f->data = c->rbuf + c->rpos + hlen;
    f->len = (size_t)n;
    f->used = hlen + (size_t)n;
    return 0;
  }
  /* Large: take the header, then what rbuf holds of the payload, then
   * read the rest straight into place. */
  avail = c->rend - c->rpos - hlen;
  take = avail < n ? avail : (size_t)n;
  if (dst != NULL) {
    size_t got = take;
    memcpy(dst, c->rbuf + c->rpos + hlen, take);
    consume(c, hlen + take);
    rc = read_direct(c, dst, (size_t)n, &got, deadline);
    if (rc == 0) {
      f->data = dst;
      f->len = (size_t)n;
      return 0;
    }
    if (c->eof) return rc; /* the message is lost with the peer */
    /* Keep what arrived for the next receive. */
    if ((c->pbuf = malloc((size_t)n + 1)) == NULL) {
      c->rerr = MPX_ENOMEM;
      return mpx__err(MPX_ENOMEM, "conn: out of memory keeping a partly "
                      "received message; the connection is unreadable");
    }
    memcpy(c->pbuf, dst, got);
    c->plen = (size_t)n;
    c->pgot = got;
    return rc;
  }
  if ((c->pbuf = malloc((size_t)n + 1)) == NULL)
    return mpx__err(MPX_ENOMEM, "conn: no memory for a message of %zu bytes",
                    (size_t)n);
  memcpy(c->pbuf, c->rbuf + c->rpos + hlen, take);
  consume(c, hlen + take);
  c->plen = (size_t)n;
  c->pgot = take;
  return finish_partial(c, limit, code, deadline, f, len);
}

static void release_frame(mpx_conn_t *c, frame_in_t *f) {
  if (f->owned != NULL) free(f->owned);
  else if (f->used > 0) consume(c, f->used);
}

int mpx_conn_recv_bytes(mpx_conn_t *c, void **buf, size_t *len,
                        size_t maxlength, double timeout) {
  frame_in_t f;
  size_t n = 0;
  int rc;
  if (buf != NULL) *buf = NULL;
  if (len != NULL) *len = 0;
  if ((rc = check_read(c, timeout)) != 0) return rc;
  if (buf == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "conn: NULL output");
  rc = next_frame(c, maxlength == 0 ? SIZE_MAX : maxlength, MPX_EMSGSIZE,
                  NULL, mpx__deadline(timeout), &f, &n);
  if (rc != 0) {
    if (rc == MPX_EMSGSIZE) *len = n;
    return rc;
  }
  if (f.owned != NULL) {
    *buf = f.owned;
  } else {
    uint8_t *p = malloc(f.len + 1);
    if (p == NULL)
      return mpx__err(MPX_ENOMEM, "conn: no memory for a message of %zu "
                      "bytes; it stays in place", f.len);
    memcpy(p, f.data, f.len);
    p[f.len] = 0;
    consume(c, f.used);
    *buf = p;
  }
  *len = f.len;
  return 0;
}

int mpx_conn_recv_bytes_into(mpx_conn_t *c, void *buf, size_t cap,
                             size_t *len, double timeout) {
  frame_in_t f;
  size_t n = 0;
  int rc;
  if (len != NULL) *len = 0;
  if ((rc = check_read(c, timeout)) != 0) return rc;
  if (len == NULL || (buf == NULL && cap > 0))
    return mpx__err(MPX_EINVAL, "conn: NULL buffer or length");
  rc = next_frame(c, cap, MPX_ETOOSHORT, buf, mpx__deadline(timeout), &f, &n);
  if (rc != 0) {
    if (rc == MPX_ETOOSHORT) *len = n;
    return rc;
  }
  if (f.data != buf && f.len > 0) memcpy(buf, f.data, f.len);
  release_frame(c, &f);
  *len = f.len;
  return 0;
}

int mpx_conn_recv_obj(mpx_conn_t *c, const mpx_codec_t *codec,
                      mpx_obj_t **obj, double timeout) {
  frame_in_t f;
  size_t n;
  int rc;
  if (obj != NULL) *obj = NULL;
  if ((rc = check_read(c, timeout)) != 0) return rc;
  if (codec == NULL || obj == NULL)
    return mpx__err(MPX_EINVAL, "conn: NULL codec or output");
  rc = next_frame(c, SIZE_MAX, MPX_EMSGSIZE, NULL, mpx__deadline(timeout), &f,
                  &n);
  if (rc != 0) return rc;
  rc = mpx_codec_decode(codec, f.data, f.len, NULL, obj);
  release_frame(c, &f);
  return rc;
}

/* Whether a receive can go on without the descriptor: a whole message is
 * buffered, or the outcome is known (end of file, a sticky error). */
static bool buffered_ready(const mpx_conn_t *c) {
  uint64_t n;
  size_t hlen;
  int rc;
  if (c->rerr || c->eof) return true;
  if (c->pbuf != NULL || c->rbuf == NULL) return false;
  rc = parse_header(c->rbuf + c->rpos, c->rend - c->rpos, &n, &hlen);
  if (rc < 0) return true;
  return rc == 0 && hlen + n <= c->rend - c->rpos;
}

int mpx_conn_poll(mpx_conn_t *c, double timeout) {
  int rc;
  if (c == NULL) return mpx__err(MPX_EINVAL, "conn: NULL connection");
  if (c->closed) return mpx__err(MPX_ECLOSED, "conn: connection is closed");
  if (!(c->flags & MPX_CONN_READABLE))
    return mpx__err(MPX_EBADF, "conn: connection is write-only");
  if ((rc = check_timeout(timeout)) != 0) return rc;
  if (buffered_ready(c)) return 0;
  return wait_fd(c->fd, POLLIN, mpx__deadline(timeout));
}

/* ---- the handle ------------------------------------------------------------ */

int mpx_conn_fileno(const mpx_conn_t *c) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "conn: NULL connection");
  if (c->closed) return mpx__err(MPX_ECLOSED, "conn: connection is closed");
  return c->fd;
}

bool mpx_conn_readable(const mpx_conn_t *c) {
  return c != NULL && !c->closed && (c->flags & MPX_CONN_READABLE);
}

bool mpx_conn_writable(const mpx_conn_t *c) {
  return c != NULL && !c->closed && (c->flags & MPX_CONN_WRITABLE);
}

bool mpx_conn_closed(const mpx_conn_t *c) { return c == NULL || c->closed; }

int mpx_conn_close(mpx_conn_t *c) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "conn: NULL connection");
  if (c->closed) return 0;
  close(c->fd);
  c->fd = -1;
  c->closed = true;
  free(c->rbuf);
  free(c->pbuf);
  free(c->wpend);
  c->rbuf = c->pbuf = c->wpend = NULL;
  c->rpos = c->rend = c->plen = c->pgot = 0;
  c->woff = c->wlen = c->wcap = 0;
  mpx_wbuf_free(&c->enc);
  return 0;
}

void mpx_conn_free(mpx_conn_t *c) {
  if (c == NULL) return;
  mpx_conn_close(c);
  free(c);
}

/* ---- wait ------------------------------------------------------------------ */

/* Set once, when the library loads, by core/process (conn_internal.h). */
static mpx__wait_sentinel_fn wait_sentinel;

void mpx__conn_set_wait_sentinel(mpx__wait_sentinel_fn fn) {
  wait_sentinel = fn;
}

/* The descriptor to poll for item i; *buffered when a connection already
 * holds a whole message. 0, or the item's error. */
static int wait_item_fd(const mpx_wait_item_t *it, size_t i, int *fdp, bool *buffered) {
  int fd;
  *buffered = false;
  switch (it->kind) {
  case MPX_WAIT_CONN: {
    const mpx_conn_t *c = it->conn;
    if (c == NULL)
      return mpx__err(MPX_EINVAL, "mpx_conn_wait: item %zu: NULL connection", i);
    if (c->closed)
      return mpx__err(MPX_ECLOSED, "mpx_conn_wait: item %zu: connection is "
                      "closed", i);
    fd = c->fd;
    if ((c->flags & MPX_CONN_READABLE) && buffered_ready(c)) *buffered = true;
    break;
  }
  case MPX_WAIT_PROCESS: {
    if (it->process == NULL)
      return mpx__err(MPX_EINVAL, "mpx_conn_wait: item %zu: NULL process", i);
    if (wait_sentinel == NULL)
      return mpx__err(MPX_ENOTSUP, "mpx_conn_wait: item %zu: no process "
                      "support in this program", i);
    const char *pname = "";
    fd = wait_sentinel(it->process, &pname);
    if (fd < 0)
      return mpx__err(fd, "mpx_conn_wait: item %zu: process %s has no "
                      "sentinel (not started, or closed)", i, pname);
    break;
  }
  case MPX_WAIT_FD:
    fd = it->fd;
    if (fd < 0)
      return mpx__err(MPX_EBADF, "mpx_conn_wait: item %zu: descriptor %d", i, fd);
    break;
  default:
    return mpx__err(MPX_EINVAL, "mpx_conn_wait: item %zu: unknown kind %d", i,
                    (int)it->kind);
  }
  *fdp = fd;
  return 0;
}

/* Polls until something is ready or the deadline passes (at once when
 * something was already buffered: then only what else is ready now). */
static int wait_poll(struct pollfd *pfd, size_t n, double timeout, bool any_buffered) {
  double deadline = any_buffered ? mpx__now() : mpx__deadline(timeout);
  for (;;) {
    int r = poll(pfd, (nfds_t)n, mpx__poll_ms(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      return mpx__err_errno("mpx_conn_wait: poll");
    }
    if (r > 0 || any_buffered) return 0;
    if (deadline >= 0 && mpx__now() >= deadline) return 0;
  }
}

/* The ready items, in order, into ready[] (when not NULL); their count. */
static int wait_collect(const struct pollfd *pfd, const bool *buffered, size_t n,
                        size_t *ready, size_t *nr) {
  *nr = 0;
  for (size_t i = 0; i < n; i++) {
    if (pfd[i].revents & POLLNVAL) {
      *nr = 0;
      return mpx__err(MPX_EBADF, "mpx_conn_wait: item %zu: descriptor %d is "
                      "not open", i, pfd[i].fd);
    }
    if (buffered[i] || (pfd[i].revents & (POLLIN | POLLHUP | POLLERR))) {
      if (ready != NULL) ready[*nr] = i;
      (*nr)++;
    }
  }
  return *nr > 0 ? 0 : MPX_ETIMEDOUT;
}

int mpx_conn_wait(const mpx_wait_item_t *items, size_t n, double timeout,
                  size_t *ready, size_t *n_ready) {
  struct pollfd stack_pfd[32];
  bool stack_buf[32];
  struct pollfd *pfd = stack_pfd;
  bool *buffered = stack_buf, any_buffered = false;
  size_t nr = 0;
  int rc = 0;

  if (n_ready != NULL) *n_ready = 0;
  if ((rc = check_timeout(timeout)) != 0) return rc;
  if (items == NULL && n > 0)
    return mpx__err(MPX_EINVAL, "mpx_conn_wait: NULL items");
  if (n > 32) {
    pfd = malloc(n * sizeof *pfd);
    buffered = malloc(n * sizeof *buffered);
    if (pfd == NULL || buffered == NULL) {
      rc = mpx__err(MPX_ENOMEM, "mpx_conn_wait: out of memory");
      goto out;
    }
  }
  for (size_t i = 0; i < n; i++) {
    int fd = -1;
    if ((rc = wait_item_fd(&items[i], i, &fd, &buffered[i])) != 0) goto out;
    any_buffered |= buffered[i];
    pfd[i] = (struct pollfd){fd, POLLIN, 0};
  }
  if ((rc = wait_poll(pfd, n, timeout, any_buffered)) == 0)
    rc = wait_collect(pfd, buffered, n, ready, &nr);
out:
  if (n_ready != NULL) *n_ready = nr;
  if (pfd != stack_pfd) free(pfd);
  if (buffered != stack_buf) free(buffered);
  return rc;
}
