/* The uring transport: the same frames as pipe, with reads and writes
 * submitted through io_uring (liburing).
 *
 * Hub: one ring for all links. Each link always has one receive armed
 * (into its 64 KiB read-ahead buffer, or, for a large payload, straight
 * into the payload's buffer with MSG_WAITALL) and at most one send of its
 * queue in flight (MSG_WAITALL: the kernel finishes it however long it
 * is). The ring has an eventfd registered; a uv_poll_t watches it, and its
 * callback reads the eventfd, handles every completion (delivering
 * messages, re-arming receives, starting the sends queued meanwhile) and
 * submits everything with one io_uring_enter. Flushes from the loop's
 * prepare and check handles submit the same way. While mpx itself is in
 * io_uring_enter, the eventfd is switched off (IORING_CQ_EVENTFD_DISABLED):
 * the completions posted then (sends that complete inline, receives run as
 * task work on the way out) are reaped right after, instead of waking the
 * loop once more for nothing. Socket completions are posted as task work
 * in this thread (sockets are polled, never handed to io-wq threads), so
 * none can slip between switching the eventfd back on and the reaping
 * that follows. A flush that ran callbacks right before the loop polls
 * keeps the poll from blocking (see transport.c).
 *
 * Endpoint: a small ring of its own. A send submits the write of the
 * caller's buffers (sendmsg, gathered frames) together with the next
 * receive, and waits for the write in the same io_uring_enter; a receive
 * waits (with its timeout) in one io_uring_enter. A send that runs out of
 * time is cancelled, and its completion says what did go out, so the
 * batch is either untouched or committed. */
#include <fcntl.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "transport_internal.h"

#define IOV_CHUNK 1024
#define HUB_SQ_ENTRIES 256
#define HUB_CQ_ENTRIES 4096
#define EP_ENTRIES 8
/* Submit-and-reap rounds per flush: what one submission completes at once
 * (receives with data waiting, sends) queues more (re-armed receives, the
 * next part of a queue); the rest waits for the next flush. */
#define FLUSH_ROUNDS 16
/* Hub teardown waits this long for the operations in flight to end. */
#define DRAIN_SECONDS 5.0

/* io_uring waits for a socket by arming a poll, but may hand EAGAIN back
 * for a descriptor marked O_NONBLOCK: clear the flag (the descriptor is
 * ours now). */
static int set_blocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  if ((fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) != 0)
    return -errno;
  return 0;
}

static struct __kernel_timespec *deadline_ts(double deadline,
                                             struct __kernel_timespec *ts) {
  double left;
  if (deadline < 0) return NULL;
  left = deadline - mpx__now();
  if (left < 0) left = 0;
  ts->tv_sec = (long long)left;
  ts->tv_nsec = (long long)((left - (double)ts->tv_sec) * 1e9);
  return ts;
}

/* ---- hub ------------------------------------------------------------------- */

typedef struct {
  struct io_uring ring;
  int efd;
  uv_poll_t evpoll;
  unsigned inflight; /* link operations submitted or queued */
  bool reaping;
} uhub_t;

enum { OP_RECV = 1, OP_SEND = 2 };

#define UHUB(h) ((uhub_t *)(h)->impl)

static void uhub_reap(mpx_hub_t *h);

/* Submits what is queued, with the eventfd off; reaps what completed.
 * 0 or a negative error of io_uring_enter. */
static int uhub_submit(mpx_hub_t *h) {
  uhub_t *u = UHUB(h);
  int rc;
  if (io_uring_sq_ready(&u->ring) == 0) return 0;
  io_uring_cq_eventfd_toggle(&u->ring, false);
  rc = io_uring_submit(&u->ring);
  h->st.syscalls++;
  io_uring_cq_eventfd_toggle(&u->ring, true);
  uhub_reap(h);
  if (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY) rc = 0; /* retried */
  return rc < 0 ? rc : 0;
}

static struct io_uring_sqe *uhub_sqe(mpx_hub_t *h) {
  uhub_t *u = UHUB(h);
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  for (int i = 0; sqe == NULL && i < 4; i++) {
    uhub_submit(h);
    sqe = io_uring_get_sqe(&u->ring);
  }
  return sqe;
}

/* Queues the link's receive. 0 or an error (the link is not armed). */
static int arm_recv(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  struct io_uring_sqe *sqe;
  void *p;
  size_t n;
  int rc = mpx__rx_space(&l->rx, &p, &n, true);
  if (rc != 0) return rc;
  if ((sqe = uhub_sqe(h)) == NULL) return MPX_EBUSY;
  io_uring_prep_recv(sqe, l->fd, p, n, l->rx.waitall ? MSG_WAITALL : 0);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)l | OP_RECV);
  mpx__link_ref(l);
  l->impl.u.recv_armed = true;
  UHUB(h)->inflight++;
  return 0;
}

static int arm_send(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  struct io_uring_sqe *sqe;
  const void *p;
  size_t n = mpx__tx_peek(&l->tx, &p);
  if (n == 0) return 0;
  if ((sqe = uhub_sqe(h)) == NULL) return MPX_EBUSY;
  io_uring_prep_send(sqe, l->fd, p, n, MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)l | OP_SEND);
  mpx__link_ref(l);
  l->impl.u.send_armed = true;
  UHUB(h)->inflight++;
  return 0;
}

static void complete(mpx_hub_t *h, uint64_t ud, int res) {
  mpx_link_t *l = (mpx_link_t *)(uintptr_t)(ud & ~(uint64_t)3);
  int op = (int)(ud & 3), rc;
  if (l == NULL) return;
  UHUB(h)->inflight--;
  if (op == OP_RECV) {
    l->impl.u.recv_armed = false;
    if (l->closed) {
    } else if (res > 0) {
      if (mpx__link_received(l, (size_t)res) && (rc = arm_recv(l)) != 0)
        mpx__link_fail(l, rc);
    } else if (res == 0) {
      mpx__link_fail(l, MPX_EPIPE);
    } else if (res == -EINTR || res == -EAGAIN || res == -ECANCELED) {
      if ((rc = arm_recv(l)) != 0) mpx__link_fail(l, rc);
    } else {
      mpx__link_fail(l, mpx__io_err(res));
    }
  } else {
    l->impl.u.send_armed = false;
    if (l->closed) {
    } else if (res >= 0 || res == -EINTR || res == -EAGAIN) {
      if (res > 0) mpx__tx_done(&l->tx, (size_t)res);
      if (mpx__tx_pending(&l->tx) > 0) mpx__link_mark_dirty(l);
    } else if (mpx__io_err(res) == MPX_EPIPE) {
      mpx__link_write_dead(l); /* the receive sees the end of file */
    } else {
      mpx__link_fail(l, res);
    }
  }
  mpx__link_unref(l);
}

/* Handles every completion there is. Callbacks may flush; a nested call
 * leaves the completions to this one. */
static void uhub_reap(mpx_hub_t *h) {
  uhub_t *u = UHUB(h);
  if (u->reaping) return;
  u->reaping = true;
  while (io_uring_cq_ready(&u->ring) > 0) {
    struct io_uring_cqe *cqe;
    uint64_t ud;
    int res;
    if (io_uring_peek_cqe(&u->ring, &cqe) != 0 || cqe == NULL) break;
    ud = cqe->user_data;
    res = cqe->res;
    io_uring_cqe_seen(&u->ring, cqe);
    complete(h, ud, res);
  }
  u->reaping = false;
}

static int uhub_flush(mpx_hub_t *h) {
  int rc = 0;
  for (int round = 0; round < FLUSH_ROUNDS; round++) {
    mpx_link_t *l;
    while ((l = mpx__hub_pop_dirty(h)) != NULL) {
      if (!l->closed && !l->wdead && !l->impl.u.send_armed &&
          (rc = arm_send(l)) != 0)
        mpx__link_fail(l, rc);
      mpx__link_unref(l);
    }
    if (io_uring_sq_ready(&UHUB(h)->ring) == 0) break;
    if ((rc = uhub_submit(h)) != 0) break;
  }
  if (rc != 0) {
    /* The ring refuses work (not a transient EAGAIN/EBUSY): no link can
     * make progress any more, so none is left waiting forever. */
    int err = rc;
    MPX__ERROR("transport uring: io_uring_enter: %s; closing every link",
               strerror(-err));
    while (h->links != NULL) mpx__link_fail(h->links, err);
    return mpx__err(err, "transport uring: io_uring_enter: %s",
                    strerror(-err));
  }
  /* Entries left (the rounds ran out, or the kernel was busy): the
   * prepare and check handles submit them. */
  h->need_flush = io_uring_sq_ready(&UHUB(h)->ring) > 0;
  if (h->need_flush) mpx__hub_arm(h);
  return 0;
}

static void on_event(uv_poll_t *p, int status, int events) {
  mpx_hub_t *h = p->data;
  uint64_t v;
  (void)status;
  (void)events;
  mpx__hub_enter(h);
  if (read(UHUB(h)->efd, &v, sizeof v) < 0) {
  }
  h->st.syscalls++;
  if (!h->freeing) {
    uhub_reap(h);
    uhub_flush(h);
  }
  mpx__hub_leave(h);
}

static void on_evpoll_closed(uv_handle_t *hd) { mpx__hub_handle_closed(hd->data); }

static int uhub_init(mpx_hub_t *h) {
  struct io_uring_params p;
  uhub_t *u = calloc(1, sizeof *u);
  int rc;
  if (u == NULL) return mpx__err(MPX_ENOMEM, "mpx_hub_new: out of memory");
  memset(&p, 0, sizeof p);
  p.flags = IORING_SETUP_CQSIZE;
  p.cq_entries = HUB_CQ_ENTRIES;
  rc = io_uring_queue_init_params(HUB_SQ_ENTRIES, &u->ring, &p);
  if (rc == -EINVAL) {
    memset(&p, 0, sizeof p);
    rc = io_uring_queue_init_params(HUB_SQ_ENTRIES, &u->ring, &p);
  }
  if (rc < 0) {
    free(u);
    return mpx__err(rc, "mpx_hub_new: io_uring_queue_init: %s", strerror(-rc));
  }
  if ((u->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
    rc = mpx__err_errno("mpx_hub_new: eventfd");
    goto fail_ring;
  }
  if ((rc = io_uring_register_eventfd(&u->ring, u->efd)) < 0) {
    rc = mpx__err(rc, "mpx_hub_new: io_uring_register_eventfd: %s",
                  strerror(-rc));
    goto fail_efd;
  }
  if ((rc = uv_poll_init(h->loop, &u->evpoll, u->efd)) != 0) {
    rc = mpx__err(rc, "mpx_hub_new: uv_poll_init: %s", uv_strerror(rc));
    goto fail_efd;
  }
  u->evpoll.data = h;
  uv_poll_start(&u->evpoll, UV_READABLE, on_event);
  uv_unref((uv_handle_t *)&u->evpoll); /* referenced while links exist */
  h->impl = u;
  h->handles++;
  return 0;
fail_efd:
  close(u->efd);
fail_ring:
  io_uring_queue_exit(&u->ring);
  free(u);
  return rc;
}

static int uhub_add(mpx_hub_t *h, mpx_link_t *l) {
  int rc = set_blocking(l->fd);
  if (rc != 0) return mpx__err(rc, "mpx_hub_add: fcntl(%d)", l->fd);
  if ((rc = arm_recv(l)) != 0)
    return mpx__err(rc, "mpx_hub_add: cannot queue a receive");
  uv_ref((uv_handle_t *)&UHUB(h)->evpoll);
  h->need_flush = true; /* the receive is submitted before the loop blocks */
  mpx__hub_arm(h);
  return 0;
}

static void ulink_close(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  /* Ends the receive (and a send) in flight: they complete, then the last
   * reference closes fd. */
  mpx__link_shutdown(l);
  if (h->nlinks == 0) uv_unref((uv_handle_t *)&UHUB(h)->evpoll);
  mpx__link_unref(l);
}

static void ulink_release(mpx_link_t *l) {
  if (l->fd >= 0) close(l->fd);
  l->fd = -1;
}

static void uhub_teardown(mpx_hub_t *h) {
  uhub_t *u = UHUB(h);
  double end = mpx__now() + DRAIN_SECONDS;
  /* Every link is shut down: their operations end promptly. */
  while (u->inflight > 0 && mpx__now() < end) {
    struct __kernel_timespec ts = {0, 100 * 1000 * 1000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&u->ring, &cqe, 1, &ts, NULL);
    h->st.syscalls++;
    uhub_reap(h);
  }
  if (u->inflight > 0)
    MPX__WARN("transport uring: %u operations did not end in %.0f s; their "
              "links are leaked", u->inflight, DRAIN_SECONDS);
  uv_poll_stop(&u->evpoll);
  io_uring_queue_exit(&u->ring);
  close(u->efd);
  uv_close((uv_handle_t *)&u->evpoll, on_evpoll_closed);
}

const mpx__hub_ops_t mpx__hub_uring_ops = {uhub_init,   uhub_add,
                                           uhub_flush,  ulink_close,
                                           ulink_release, uhub_teardown};

/* ---- endpoint -------------------------------------------------------------- */

typedef struct {
  struct io_uring ring;
  unsigned inflight;
  bool recv_armed, tx_armed, user_armed;
  bool user_done, got_recv;
  int user_res;
} uep_t;

enum { EP_RECV = 1, EP_TX = 2, EP_USER = 3, EP_CANCEL = 4 };

#define UEP(e) ((uep_t *)(e)->impl)

static void uep_complete(mpx_endpoint_t *e, uint64_t ud, int res) {
  uep_t *u = UEP(e);
  u->inflight--;
  switch (ud) {
  case EP_RECV:
    u->recv_armed = false;
    u->got_recv = true;
    if (res > 0) mpx__rx_commit(&e->rx, (size_t)res);
    else if (res == 0 || mpx__io_err(res) == MPX_EPIPE) e->eof = true;
    else if (res != -EINTR && res != -EAGAIN && res != -ECANCELED)
      e->rerr = res;
    break;
  case EP_TX:
    u->tx_armed = false;
    if (res > 0) {
      mpx__tx_done(&e->tx, (size_t)res);
    } else if (res < 0 && res != -EINTR && res != -EAGAIN &&
               res != -ECANCELED) {
      e->werr = mpx__io_err(res);
      mpx__tx_clear(&e->tx);
    }
    break;
  case EP_USER:
    u->user_armed = false;
    u->user_done = true;
    u->user_res = res;
    break;
  default:
    break;
  }
}

static void uep_reap(mpx_endpoint_t *e) {
  uep_t *u = UEP(e);
  while (io_uring_cq_ready(&u->ring) > 0) {
    struct io_uring_cqe *cqe;
    uint64_t ud;
    int res;
    if (io_uring_peek_cqe(&u->ring, &cqe) != 0 || cqe == NULL) break;
    ud = cqe->user_data;
    res = cqe->res;
    io_uring_cqe_seen(&u->ring, cqe);
    uep_complete(e, ud, res);
  }
}

/* Submits what is queued and waits for at least one completion or the
 * deadline, then handles every completion: 0 (something completed),
 * MPX_ETIMEDOUT, or an error of io_uring_enter. */
static int uep_wait(mpx_endpoint_t *e, double deadline) {
  uep_t *u = UEP(e);
  for (;;) {
    struct __kernel_timespec ts;
    struct io_uring_cqe *cqe;
    int rc;
    if (io_uring_cq_ready(&u->ring) > 0 && io_uring_sq_ready(&u->ring) == 0) {
      uep_reap(e);
      return 0;
    }
    if (deadline < 0) {
      /* One io_uring_enter: submit, and wait for one completion. */
      rc = io_uring_submit_and_wait(&u->ring, 1);
      e->st.syscalls++;
    } else {
      /* With a deadline, submitting and waiting are two calls:
       * liburing's combined call would wait its timeout twice when the
       * submission itself returns early. A message already there (or a
       * zero timeout) costs one. */
      if (io_uring_sq_ready(&u->ring) > 0 || deadline <= mpx__now()) {
        rc = io_uring_submit_and_get_events(&u->ring);
        e->st.syscalls++;
        if (io_uring_cq_ready(&u->ring) > 0) continue;
        if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY)
          return rc;
        if (deadline <= mpx__now()) return MPX_ETIMEDOUT;
      }
      rc = io_uring_wait_cqe_timeout(&u->ring, &cqe, deadline_ts(deadline, &ts));
      e->st.syscalls++;
      if (rc == -ETIME) return MPX_ETIMEDOUT;
    }
    if (io_uring_cq_ready(&u->ring) > 0) continue;
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN) return rc;
  }
}

static struct io_uring_sqe *uep_sqe(mpx_endpoint_t *e) {
  uep_t *u = UEP(e);
  struct io_uring_sqe *sqe = io_uring_get_sqe(&u->ring);
  if (sqe == NULL) { /* cannot happen with EP_ENTRIES > 4 */
    io_uring_submit(&u->ring);
    e->st.syscalls++;
    sqe = io_uring_get_sqe(&u->ring);
  }
  return sqe;
}

/* Queues a receive unless one is armed. may_move as mpx__rx_space(). */
static int uep_arm_recv(mpx_endpoint_t *e, bool may_move) {
  uep_t *u = UEP(e);
  struct io_uring_sqe *sqe;
  void *p;
  size_t n;
  int rc;
  if (u->recv_armed || e->eof || e->rerr) return 0;
  if ((rc = mpx__rx_space(&e->rx, &p, &n, may_move)) != 0) return rc;
  if (n == 0) return 0;
  if ((sqe = uep_sqe(e)) == NULL) return MPX_EBUSY;
  io_uring_prep_recv(sqe, e->fd, p, n, e->rx.waitall ? MSG_WAITALL : 0);
  io_uring_sqe_set_data64(sqe, EP_RECV);
  u->recv_armed = true;
  u->inflight++;
  return 0;
}

static int uep_arm_tx(mpx_endpoint_t *e) {
  uep_t *u = UEP(e);
  struct io_uring_sqe *sqe;
  const void *p;
  size_t n;
  if (u->tx_armed || e->werr) return 0;
  if ((n = mpx__tx_peek(&e->tx, &p)) == 0) return 0;
  if ((sqe = uep_sqe(e)) == NULL) return MPX_EBUSY;
  io_uring_prep_send(sqe, e->fd, p, n, MSG_NOSIGNAL | MSG_WAITALL);
  io_uring_sqe_set_data64(sqe, EP_TX);
  u->tx_armed = true;
  u->inflight++;
  return 0;
}

static void uep_cancel(mpx_endpoint_t *e, uint64_t what) {
  struct io_uring_sqe *sqe = uep_sqe(e);
  if (sqe == NULL) return;
  io_uring_prep_cancel64(sqe, what, 0);
  io_uring_sqe_set_data64(sqe, EP_CANCEL);
  UEP(e)->inflight++;
}

static int uep_open(mpx_endpoint_t *e) {
  struct io_uring_params p;
  uep_t *u;
  int rc = set_blocking(e->fd);
  if (rc != 0) return mpx__err(rc, "mpx_endpoint_open: fcntl(%d)", e->fd);
  if ((u = calloc(1, sizeof *u)) == NULL)
    return mpx__err(MPX_ENOMEM, "mpx_endpoint_open: out of memory");
  /* A plain ring: IORING_SETUP_SINGLE_ISSUER | DEFER_TASKRUN measured no
   * faster here, and would bind the endpoint to the thread that opened
   * it. */
  memset(&p, 0, sizeof p);
  rc = io_uring_queue_init_params(EP_ENTRIES, &u->ring, &p);
  if (rc < 0) {
    free(u);
    return mpx__err(rc, "mpx_endpoint_open: io_uring_queue_init: %s",
                    strerror(-rc));
  }
  e->impl = u;
  return 0;
}

static int uep_flush(mpx_endpoint_t *e, double deadline) {
  for (;;) {
    int rc;
    if (e->werr) return e->werr;
    if (mpx__tx_pending(&e->tx) == 0) return 0;
    if ((rc = uep_arm_tx(e)) != 0) return rc;
    if ((rc = uep_wait(e, deadline)) != 0) return rc;
  }
}

static int uep_send(mpx_endpoint_t *e, mpx__gather_t *g, double deadline) {
  uep_t *u = UEP(e);
  struct iovec iov[IOV_CHUNK];
  while (g->i < g->n) {
    struct io_uring_sqe *sqe;
    struct msghdr m;
    bool timed_out = false;
    int rc = 0, res;
    memset(&m, 0, sizeof m);
    m.msg_iov = iov;
    m.msg_iovlen = (size_t)mpx__gather_iov(g, iov, IOV_CHUNK);
    if ((sqe = uep_sqe(e)) == NULL) return MPX_EBUSY;
    /* Without a deadline the kernel finishes the whole write itself. */
    io_uring_prep_sendmsg(sqe, e->fd, &m,
                          MSG_NOSIGNAL | (deadline < 0 ? MSG_WAITALL : 0));
    io_uring_sqe_set_data64(sqe, EP_USER);
    u->user_armed = true;
    u->user_done = false;
    u->inflight++;
    /* The next read goes in with the write (where the buffer has room
     * without moving the message the caller may still hold). */
    uep_arm_recv(e, false);
    while (!u->user_done) {
      rc = uep_wait(e, deadline);
      if (u->user_done) break;
      if (rc != 0) {
        /* Out of time (or the ring failed): take the write back. The
         * kernel answers promptly; what went out is in its result. */
        timed_out = true;
        uep_cancel(e, EP_USER);
        while (!u->user_done) {
          int w = uep_wait(e, -1);
          if (w != 0 && w != MPX_ETIMEDOUT && !u->user_done) {
            /* The ring is unusable. The write may still read the
             * caller's buffers (never write them): the stream is lost. */
            MPX__ERROR("transport uring: cannot cancel a send (%s); the "
                       "endpoint is unwritable", strerror(-w));
            e->werr = w;
            return w;
          }
        }
        break;
      }
    }
    res = u->user_res;
    if (res > 0) mpx__gather_advance(g, (size_t)res);
    if (res >= 0 || res == -ECANCELED || res == -EINTR || res == -EAGAIN) {
      if (timed_out) return rc == MPX_ETIMEDOUT ? MPX_ETIMEDOUT : rc;
      continue;
    }
    return mpx__io_err(res);
  }
  return 0;
}

static int uep_fill(mpx_endpoint_t *e, double deadline) {
  uep_t *u = UEP(e);
  for (;;) {
    int rc;
    if ((rc = uep_arm_recv(e, true)) != 0) return rc;
    if (mpx__tx_pending(&e->tx) > 0) uep_arm_tx(e);
    u->got_recv = false;
    rc = uep_wait(e, deadline);
    if (u->got_recv) return 0;
    if (rc != 0) return rc;
  }
}

static void uep_close(mpx_endpoint_t *e) {
  uep_t *u = UEP(e);
  double end;
  if (u == NULL) return;
  if (u->recv_armed) uep_cancel(e, EP_RECV);
  if (u->tx_armed) uep_cancel(e, EP_TX);
  end = mpx__now() + DRAIN_SECONDS;
  while (u->inflight > 0 && mpx__now() < end)
    if (uep_wait(e, mpx__now() + 0.1) < 0 && u->inflight > 0 &&
        mpx__now() >= end)
      break;
  io_uring_queue_exit(&u->ring);
}

const mpx__ep_ops_t mpx__ep_uring_ops = {uep_open, uep_send, uep_flush,
                                         uep_fill, uep_close};
