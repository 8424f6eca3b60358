/* The pipe transport: plain system calls on the socket.
 *
 * Hub: each link's socket is watched by a uv_poll_t, readable always and
 * writable while the kernel refused part of the link's queue. A readable
 * event reads up to 64 KiB at a time (many frames per read; a large
 * payload straight into its own buffer) until a read comes back short; a
 * flush sends everything queued on a link with one send() per buffer.
 *
 * Endpoint: recv, sendmsg (a batch of frames gathered straight from the
 * caller's buffers, up to 512 per call) and poll for the timeouts. A
 * receive without a deadline and with nothing to write blocks in recv()
 * itself: one system call per read. */
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport_internal.h"

#define IOV_CHUNK 1024 /* IOV_MAX on Linux */
/* Reads per readable event before the loop gets to other handles. */
#define READS_PER_EVENT 32

/* ---- hub ------------------------------------------------------------------- */

static void on_poll(uv_poll_t *p, int status, int events);

static void watch(mpx_link_t *l, int events) {
  if (l->impl.p.events == events) return;
  l->impl.p.events = events;
  uv_poll_start(&l->impl.p.poll, events, on_poll);
}

/* Sends the link's queue until it is empty or the socket is full. */
static void link_write(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  for (;;) {
    const void *p;
    size_t n = mpx__tx_peek(&l->tx, &p);
    ssize_t k;
    if (n == 0) {
      watch(l, UV_READABLE);
      return;
    }
    k = send(l->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    h->st.syscalls++;
    if (k >= 0) {
      mpx__tx_done(&l->tx, (size_t)k);
      if ((size_t)k < n) { /* the socket is full: wait until it is not */
        watch(l, UV_READABLE | UV_WRITABLE);
        return;
      }
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      watch(l, UV_READABLE | UV_WRITABLE);
      return;
    }
    if (errno == EPIPE || errno == ECONNRESET) {
      /* The peer is gone: read what it sent until end of file. */
      mpx__link_write_dead(l);
      watch(l, UV_READABLE);
      return;
    }
    mpx__link_fail(l, -errno);
    return;
  }
}

static void link_read(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  for (int i = 0; i < READS_PER_EVENT && !l->closed; i++) {
    void *p;
    size_t n;
    ssize_t k;
    int rc = mpx__rx_space(&l->rx, &p, &n, true);
    if (rc != 0) {
      mpx__link_fail(l, rc);
      return;
    }
    k = recv(l->fd, p, n, MSG_DONTWAIT);
    h->st.syscalls++;
    if (k > 0) {
      if (!mpx__link_received(l, (size_t)k)) return;
      if ((size_t)k < n) return; /* drained (the poll says when not) */
      continue;
    }
    if (k == 0) {
      mpx__link_fail(l, MPX_EPIPE);
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return;
    mpx__link_fail(l, mpx__io_err(-errno));
    return;
  }
}

static void on_poll(uv_poll_t *p, int status, int events) {
  mpx_link_t *l = p->data;
  mpx_hub_t *h = l->hub;
  mpx__hub_enter(h);
  mpx__link_ref(l);
  if (status < 0) {
    /* libuv reports POLLERR as UV_EBADF and stops the handle: read what
     * the peer sent before it went, then fail with the socket's own
     * error (a reset, for a peer that died with data unread). */
    int err = 0;
    socklen_t len = sizeof err;
    link_read(l);
    if (!l->closed) {
      if (getsockopt(l->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
          err == 0)
        err = -status;
      mpx__link_fail(l, mpx__io_err(-err));
    }
  } else {
    if ((events & UV_WRITABLE) && !l->closed && !l->wdead) link_write(l);
    if ((events & UV_READABLE) && !l->closed) link_read(l);
  }
  mpx__link_unref(l);
  mpx__hub_leave(h);
}

static void on_poll_closed(uv_handle_t *hd) {
  mpx_link_t *l = hd->data;
  mpx_hub_t *h = l->hub;
  mpx__link_unref(l); /* the open reference */
  mpx__hub_handle_closed(h);
}

static int hub_init(mpx_hub_t *h) {
  (void)h;
  return 0;
}

static int hub_add(mpx_hub_t *h, mpx_link_t *l) {
  int rc = uv_poll_init(h->loop, &l->impl.p.poll, l->fd);
  if (rc != 0)
    return mpx__err(rc, "mpx_hub_add: uv_poll_init(%d): %s", l->fd,
                    uv_strerror(rc));
  l->impl.p.poll.data = l;
  h->handles++;
  l->impl.p.events = UV_READABLE;
  uv_poll_start(&l->impl.p.poll, UV_READABLE, on_poll);
  return 0;
}

static int hub_flush(mpx_hub_t *h) {
  mpx_link_t *l;
  while ((l = mpx__hub_pop_dirty(h)) != NULL) {
    /* A link waiting for room goes on when its socket is writable. */
    if (!l->closed && !l->wdead && !(l->impl.p.events & UV_WRITABLE))
      link_write(l);
    mpx__link_unref(l);
  }
  return 0;
}

static void link_close(mpx_link_t *l) {
  uv_poll_stop(&l->impl.p.poll);
  mpx__link_shutdown(l);
  close(l->fd); /* safe right after uv_poll_stop() */
  l->fd = -1;
  uv_close((uv_handle_t *)&l->impl.p.poll, on_poll_closed);
}

static void link_release(mpx_link_t *l) { (void)l; }

static void hub_teardown(mpx_hub_t *h) { (void)h; }

const mpx__hub_ops_t mpx__hub_pipe_ops = {
    hub_init, hub_add, hub_flush, link_close, link_release, hub_teardown};

/* ---- endpoint -------------------------------------------------------------- */

/* Waits until fd has one of `events`, or the deadline: 0, MPX_ETIMEDOUT,
 * or an error. */
static int ep_wait(mpx_endpoint_t *e, short events, double deadline) {
  for (;;) {
    struct pollfd p = {e->fd, events, 0};
    int r;
    if (deadline >= 0 && mpx__now() >= deadline) return MPX_ETIMEDOUT;
    r = poll(&p, 1, mpx__poll_ms(deadline));
    e->st.syscalls++;
    if (r > 0) return 0;
    if (r < 0 && errno != EINTR) return -errno;
  }
}

/* One non-blocking send of what tx holds: 0 (some or none went out),
 * or an error. */
static int ep_tx_some(mpx_endpoint_t *e) {
  for (;;) {
    const void *p;
    size_t n = mpx__tx_peek(&e->tx, &p);
    ssize_t k;
    if (n == 0) return 0;
    k = send(e->fd, p, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    e->st.syscalls++;
    if (k >= 0) {
      mpx__tx_done(&e->tx, (size_t)k);
      if ((size_t)k < n) return 0;
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return mpx__io_err(-errno);
  }
}

static int ep_open(mpx_endpoint_t *e) {
  (void)e;
  return 0;
}

static int ep_flush(mpx_endpoint_t *e, double deadline) {
  for (;;) {
    int rc = ep_tx_some(e);
    if (rc != 0) return rc;
    if (mpx__tx_pending(&e->tx) == 0) return 0;
    if ((rc = ep_wait(e, POLLOUT, deadline)) != 0) return rc;
  }
}

static int ep_send(mpx_endpoint_t *e, mpx__gather_t *g, double deadline) {
  struct iovec iov[IOV_CHUNK];
  int flags = MSG_NOSIGNAL | (deadline < 0 ? 0 : MSG_DONTWAIT);
  while (g->i < g->n) {
    struct msghdr m;
    ssize_t k;
    int rc;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)mpx__gather_iov(g, iov, IOV_CHUNK);
    k = sendmsg(e->fd, &m, flags);
    e->st.syscalls++;
    if (k >= 0) {
      mpx__gather_advance(g, (size_t)k);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      /* A non-blocking socket, or the deadline's MSG_DONTWAIT. */
      if ((rc = ep_wait(e, POLLOUT, deadline)) != 0) return rc;
      continue;
    }
    return mpx__io_err(-errno);
  }
  return 0;
}

static int ep_fill(mpx_endpoint_t *e, double deadline) {
  for (;;) {
    void *p;
    size_t n;
    ssize_t k;
    int rc;
    bool tx = mpx__tx_pending(&e->tx) > 0 && !e->werr;
    if (tx && (rc = ep_tx_some(e)) != 0) {
      e->werr = rc; /* reported by the next send; reading goes on */
      mpx__tx_clear(&e->tx);
      tx = false;
    }
    tx = tx && mpx__tx_pending(&e->tx) > 0;
    if ((rc = mpx__rx_space(&e->rx, &p, &n, true)) != 0) return rc;
    k = recv(e->fd, p, n, deadline < 0 && !tx ? 0 : MSG_DONTWAIT);
    e->st.syscalls++;
    if (k > 0) {
      mpx__rx_commit(&e->rx, (size_t)k);
      return 0;
    }
    if (k == 0) {
      e->eof = true;
      return 0;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      rc = ep_wait(e, (short)(POLLIN | (tx ? POLLOUT : 0)), deadline);
      if (rc != 0) return rc;
      continue;
    }
    if (mpx__io_err(-errno) == MPX_EPIPE) {
      e->eof = true;
      return 0;
    }
    return -errno;
  }
}

static void ep_close(mpx_endpoint_t *e) { (void)e; }

const mpx__ep_ops_t mpx__ep_pipe_ops = {ep_open, ep_send, ep_flush, ep_fill,
                                        ep_close};
