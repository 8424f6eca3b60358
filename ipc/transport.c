/* Transports: kinds and their resolution (with the io_uring probe), the one
 * frame parser and frame writer both implementations use, and the parts of
 * the hub and the endpoint that do not depend on the implementation
 * (links, callbacks, the dirty list and the flush handles, statistics,
 * deferred freeing, the endpoint's send and receive logic).
 *
 * Hub memory. A link is reference counted: one reference while it is open
 * (for pipe, held until its uv_poll_t is closed), one per read or write in
 * flight (uring), one while it is on the dirty list, one while a callback
 * of it runs. The hub itself is freed when the last of its uv handles has
 * been closed (libuv calls the close callbacks from the loop). */
#include <fcntl.h>
#include <liburing.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "transport_internal.h"

#define SHORT_MAX 0x7fffffffu
/* Longest message accepted from a header (as conn.c). */
#define MSG_MAX ((uint64_t)PTRDIFF_MAX - 64)
/* A send buffer larger than this is freed when it empties. */
#define TX_KEEP ((size_t)1 << 20)

/* ---- kinds ----------------------------------------------------------------- */

const char *mpx_transport_name(mpx_transport_t kind) {
  switch (kind) {
  case MPX_TRANSPORT_AUTO: return "auto";
  case MPX_TRANSPORT_PIPE: return "pipe";
  case MPX_TRANSPORT_URING: return "uring";
  }
  return "unknown";
}

int mpx_transport_parse(const char *s, mpx_transport_t *out) {
  static const mpx_transport_t kinds[] = {
      MPX_TRANSPORT_AUTO, MPX_TRANSPORT_PIPE, MPX_TRANSPORT_URING};
  if (s == NULL || out == NULL)
    return mpx__err(MPX_EINVAL, "transport: NULL name or output");
  for (size_t i = 0; i < MPX__ARRAY_SIZE(kinds); i++) {
    if (strcasecmp(s, mpx_transport_name(kinds[i])) == 0) {
      *out = kinds[i];
      return 0;
    }
  }
  return mpx__err(MPX_EINVAL, "transport: unknown kind '%s' (auto, pipe or "
                  "uring)", s);
}

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static int probe_rc;
static char probe_why[200];

static void probe_run(void) {
  struct io_uring ring;
  struct io_uring_params p;
  struct io_uring_probe *pr;
  static const int ops[] = {IORING_OP_SEND, IORING_OP_RECV,
                            IORING_OP_SENDMSG, IORING_OP_ASYNC_CANCEL};
  int rc;

  memset(&p, 0, sizeof p);
  rc = io_uring_queue_init_params(4, &ring, &p);
  if (rc < 0) {
    probe_rc = rc;
    snprintf(probe_why, sizeof probe_why, "io_uring_setup: %s",
             strerror(-rc));
    return;
  }
  if (!(p.features & IORING_FEAT_NODROP) ||
      !(p.features & IORING_FEAT_EXT_ARG)) {
    probe_rc = MPX_ENOTSUP;
    snprintf(probe_why, sizeof probe_why, "the kernel's io_uring lacks "
             "features mpx needs (NODROP, EXT_ARG: Linux 5.11)");
  } else if ((pr = io_uring_get_probe_ring(&ring)) == NULL) {
    probe_rc = MPX_ENOTSUP;
    snprintf(probe_why, sizeof probe_why, "io_uring opcode probe failed");
  } else {
    for (size_t i = 0; i < MPX__ARRAY_SIZE(ops); i++) {
      if (!io_uring_opcode_supported(pr, ops[i])) {
        probe_rc = MPX_ENOTSUP;
        snprintf(probe_why, sizeof probe_why, "the kernel's io_uring lacks "
                 "opcode %d", ops[i]);
        break;
      }
    }
    io_uring_free_probe(pr);
  }
  io_uring_queue_exit(&ring);
}

int mpx__uring_probe(const char **why) {
  const char *d = getenv("MPX_URING_DISABLE");
  if (d != NULL && *d != '\0' && strcmp(d, "0") != 0) {
    *why = "MPX_URING_DISABLE is set: treated as EPERM";
    return MPX_EPERM;
  }
  pthread_once(&probe_once, probe_run);
  *why = probe_why;
  return probe_rc;
}

int mpx_transport_resolve(mpx_transport_t want, mpx_transport_t *got) {
  static int fallback_logged;
  const char *from = "", *why;
  int rc;

  if (got == NULL) return mpx__err(MPX_EINVAL, "transport: NULL output");
  if (want != MPX_TRANSPORT_AUTO && want != MPX_TRANSPORT_PIPE &&
      want != MPX_TRANSPORT_URING)
    return mpx__err(MPX_EINVAL, "transport: unknown kind %d", (int)want);
  if (want == MPX_TRANSPORT_AUTO) {
    const char *env = getenv("MPX_TRANSPORT");
    if (env != NULL && *env != '\0') {
      mpx_transport_t k;
      if (mpx_transport_parse(env, &k) != 0)
        return mpx__err(MPX_EINVAL, "MPX_TRANSPORT='%s' is not auto, pipe "
                        "or uring", env);
      want = k;
      from = " (from MPX_TRANSPORT)";
    }
  }
  if (want == MPX_TRANSPORT_PIPE) {
    *got = MPX_TRANSPORT_PIPE;
    return 0;
  }
  rc = mpx__uring_probe(&why);
  if (want == MPX_TRANSPORT_URING) {
    if (rc != 0)
      return mpx__err(MPX_ENOTSUP, "transport uring%s: io_uring is not "
                      "available here: %s", from, why);
    *got = MPX_TRANSPORT_URING;
    return 0;
  }
  if (rc == 0) {
    *got = MPX_TRANSPORT_URING;
    return 0;
  }
  if (!__atomic_exchange_n(&fallback_logged, 1, __ATOMIC_RELAXED))
    MPX__WARN("transport: io_uring is not available (%s); auto uses pipe",
              why);
  *got = MPX_TRANSPORT_PIPE;
  return 0;
}

/* ---- frames ---------------------------------------------------------------- */

size_t mpx__frame_header(uint8_t h[MPX__FRAME_HDR_MAX], uint64_t n) {
  if (n <= SHORT_MAX) {
    for (int i = 0; i < 4; i++) h[i] = (uint8_t)(n >> (24 - 8 * i));
    return 4;
  }
  memset(h, 0xff, 4);
  for (int i = 0; i < 8; i++) h[4 + i] = (uint8_t)(n >> (56 - 8 * i));
  return 12;
}

static size_t frame_len(size_t n) { return (n <= SHORT_MAX ? 4 : 12) + n; }

void mpx__rx_init(mpx__rx_t *rx) { memset(rx, 0, sizeof *rx); }

void mpx__rx_free(mpx__rx_t *rx) {
  free(rx->buf);
  free(rx->big);
  free(rx->done);
  memset(rx, 0, sizeof *rx);
}

int mpx__rx_space(mpx__rx_t *rx, void **p, size_t *n, bool may_move) {
  *p = NULL;
  *n = 0;
  if (rx->err) return rx->err;
  if (rx->big != NULL) {
    *p = rx->big + rx->bgot;
    *n = rx->blen - rx->bgot;
    rx->space_big = rx->waitall = true;
    return 0;
  }
  if (rx->buf == NULL && (rx->buf = malloc(MPX__RX_CAP)) == NULL)
    return MPX_ENOMEM;
  if (may_move && rx->pos > 0) {
    /* Only the start of an incomplete frame is left: move it to the
     * front, so the frame has the whole buffer to complete in. */
    memmove(rx->buf, rx->buf + rx->pos, rx->end - rx->pos);
    rx->end -= rx->pos;
    rx->pos = 0;
  }
  *p = rx->buf + rx->end;
  *n = MPX__RX_CAP - rx->end;
  rx->space_big = rx->waitall = false;
  return 0;
}

void mpx__rx_commit(mpx__rx_t *rx, size_t n) {
  if (rx->space_big) rx->bgot += n;
  else rx->end += n;
}

bool mpx__rx_partial(const mpx__rx_t *rx) {
  return rx->big != NULL || rx->end > rx->pos;
}

int mpx__rx_next(mpx__rx_t *rx, const void **data, size_t *len) {
  size_t avail, hlen, take;
  uint64_t n;
  uint32_t v;
  const uint8_t *h;

  free(rx->done);
  rx->done = NULL;
  if (rx->err) return rx->err;
  if (rx->big != NULL) {
    /* Bytes of the large payload that a read into buf brought in. */
    take = rx->end - rx->pos;
    if (take > rx->blen - rx->bgot) take = rx->blen - rx->bgot;
    memcpy(rx->big + rx->bgot, rx->buf + rx->pos, take);
    rx->bgot += take;
    rx->pos += take;
    if (rx->bgot < rx->blen) return 0;
    *data = rx->big;
    *len = rx->blen;
    rx->done = rx->big;
    rx->big = NULL;
    rx->blen = rx->bgot = 0;
    return 1;
  }
  avail = rx->end - rx->pos;
  if (avail < 4) return 0;
  h = rx->buf + rx->pos;
  v = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | h[3];
  if (v <= SHORT_MAX) {
    n = v;
    hlen = 4;
  } else if (v == 0xffffffffu) {
    hlen = 12;
    if (avail < 12) return 0;
    n = 0;
    for (int i = 4; i < 12; i++) n = n << 8 | h[i];
    if (n > MSG_MAX) return rx->err = MPX_EPROTO;
  } else {
    return rx->err = MPX_EPROTO;
  }
  if (hlen + n <= MPX__RX_CAP) {
    if (avail < hlen + n) return 0;
    *data = h + hlen;
    *len = (size_t)n;
    rx->pos += hlen + (size_t)n;
    return 1;
  }
  /* A large message: its payload gets a buffer of its own, and the next
   * reads go straight into it. */
  if ((rx->big = malloc((size_t)n)) == NULL) return rx->err = MPX_ENOMEM;
  rx->blen = (size_t)n;
  rx->pos += hlen;
  take = rx->end - rx->pos;
  if (take > n) take = (size_t)n;
  memcpy(rx->big, rx->buf + rx->pos, take);
  rx->bgot = take;
  rx->pos += take;
  return 0;
}

void mpx__tx_init(mpx__tx_t *tx) { memset(tx, 0, sizeof *tx); }

void mpx__tx_free(mpx__tx_t *tx) {
  free(tx->cur.p);
  free(tx->nxt.p);
  memset(tx, 0, sizeof *tx);
}

static int bytes_reserve(mpx__bytes_t *b, size_t more) {
  size_t need, cap;
  uint8_t *p;
  if (more > SIZE_MAX - b->len) return MPX_ENOMEM;
  need = b->len + more;
  if (need <= b->cap) return 0;
  cap = b->cap ? b->cap : 4096;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  if ((p = realloc(b->p, cap)) == NULL) return MPX_ENOMEM;
  b->p = p;
  b->cap = cap;
  return 0;
}

int mpx__tx_append(mpx__tx_t *tx, const mpx_conn_buf_t *msgs, size_t n) {
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    size_t f = frame_len(msgs[i].len);
    if (f < msgs[i].len || total > SIZE_MAX - f) return MPX_ENOMEM;
    total += f;
  }
  if (bytes_reserve(&tx->nxt, total) != 0) return MPX_ENOMEM;
  for (size_t i = 0; i < n; i++) {
    uint8_t *d = tx->nxt.p + tx->nxt.len;
    size_t hl = mpx__frame_header(d, msgs[i].len);
    if (msgs[i].len > 0) memcpy(d + hl, msgs[i].data, msgs[i].len);
    tx->nxt.len += hl + msgs[i].len;
  }
  return 0;
}

int mpx__tx_append_raw(mpx__tx_t *tx, const void *p, size_t n) {
  if (n == 0) return 0;
  if (bytes_reserve(&tx->nxt, n) != 0) return MPX_ENOMEM;
  memcpy(tx->nxt.p + tx->nxt.len, p, n);
  tx->nxt.len += n;
  return 0;
}

size_t mpx__tx_pending(const mpx__tx_t *tx) {
  return tx->cur.len - tx->off + tx->nxt.len;
}

size_t mpx__tx_peek(mpx__tx_t *tx, const void **p) {
  if (tx->off == tx->cur.len && tx->nxt.len > 0) {
    mpx__bytes_t t = tx->cur;
    tx->cur = tx->nxt;
    tx->nxt = t;
    tx->nxt.len = 0;
    tx->off = 0;
    if (tx->nxt.cap > TX_KEEP) {
      free(tx->nxt.p);
      tx->nxt.p = NULL;
      tx->nxt.cap = 0;
    }
  }
  *p = tx->cur.p + tx->off;
  return tx->cur.len - tx->off;
}

void mpx__tx_done(mpx__tx_t *tx, size_t n) {
  tx->off += n;
  if (tx->off == tx->cur.len) {
    tx->off = tx->cur.len = 0;
    if (tx->cur.cap > TX_KEEP) {
      free(tx->cur.p);
      tx->cur.p = NULL;
      tx->cur.cap = 0;
    }
  }
}

void mpx__tx_clear(mpx__tx_t *tx) {
  tx->cur.len = tx->off = 0;
  tx->nxt.len = 0;
}

int mpx__check_batch(const mpx_conn_buf_t *msgs, size_t n, const char *who) {
  if (msgs == NULL && n > 0)
    return mpx__err(MPX_EINVAL, "%s: NULL batch of %zu messages", who, n);
  for (size_t i = 0; i < n; i++)
    if (msgs[i].data == NULL && msgs[i].len > 0)
      return mpx__err(MPX_EINVAL, "%s: message %zu: NULL buffer of %zu bytes",
                      who, i, msgs[i].len);
  return 0;
}

int mpx__gather_iov(mpx__gather_t *g, struct iovec *iov, int max_iov) {
  int k = 0;
  size_t skip = g->skip, h = 0;
  for (size_t j = g->i; j < g->n && k + 2 <= max_iov && h < g->nhdr; j++) {
    uint8_t *hd = g->hdr[h++];
    size_t hl = mpx__frame_header(hd, g->msgs[j].len), po = 0;
    if (skip < hl) iov[k++] = (struct iovec){hd + skip, hl - skip};
    else po = skip - hl;
    if (g->msgs[j].len > po)
      iov[k++] = (struct iovec){(uint8_t *)g->msgs[j].data + po,
                                g->msgs[j].len - po};
    skip = 0;
  }
  return k;
}

void mpx__gather_advance(mpx__gather_t *g, size_t n) {
  while (n > 0 && g->i < g->n) {
    size_t rem = frame_len(g->msgs[g->i].len) - g->skip;
    if (n >= rem) {
      n -= rem;
      g->i++;
      g->skip = 0;
    } else {
      g->skip += n;
      n = 0;
    }
  }
}

int mpx__gather_commit_rest(mpx__gather_t *g, mpx__tx_t *tx) {
  if (g->i < g->n && g->skip > 0) {
    uint8_t hd[MPX__FRAME_HDR_MAX];
    const mpx_conn_buf_t *m = &g->msgs[g->i];
    size_t hl = mpx__frame_header(hd, m->len), po = 0;
    if (g->skip < hl) {
      if (mpx__tx_append_raw(tx, hd + g->skip, hl - g->skip) != 0)
        return MPX_ENOMEM;
    } else {
      po = g->skip - hl;
    }
    if (mpx__tx_append_raw(tx, (const uint8_t *)m->data + po, m->len - po) !=
        0)
      return MPX_ENOMEM;
    g->i++;
    g->skip = 0;
  }
  if (mpx__tx_append(tx, g->msgs + g->i, g->n - g->i) != 0) return MPX_ENOMEM;
  g->i = g->n;
  return 0;
}

int mpx__check_stream_socket(int fd, const char *who) {
  struct stat st;
  struct sockaddr_storage sa;
  socklen_t len = sizeof(int);
  int type = 0;
  if (fd < 0 || fstat(fd, &st) != 0)
    return mpx__err(MPX_EBADF, "%s: descriptor %d is not open", who, fd);
  if (!S_ISSOCK(st.st_mode))
    return mpx__err(MPX_ENOTSOCK, "%s: descriptor %d is not a socket", who,
                    fd);
  if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0)
    return mpx__err_errno("%s: getsockopt(%d)", who, fd);
  if (type != SOCK_STREAM)
    return mpx__err(MPX_EINVAL, "%s: descriptor %d is not a stream socket",
                    who, fd);
  len = sizeof sa;
  if (getpeername(fd, (struct sockaddr *)&sa, &len) != 0)
    return mpx__err_errno("%s: descriptor %d is not connected", who, fd);
  if (sa.ss_family == AF_INET || sa.ss_family == AF_INET6) {
    /* Nagle would hold a small frame back until the previous one is
     * acknowledged (as conn.c). */
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
      return mpx__err_errno("%s: TCP_NODELAY on %d", who, fd);
  }
  return 0;
}

/* ---- the hub --------------------------------------------------------------- */

static void hub_free_memory(mpx_hub_t *h) {
  free(h->impl);
  free(h);
}

void mpx__hub_handle_closed(mpx_hub_t *h) {
  if (--h->handles == 0 && h->free_done) hub_free_memory(h);
}

static void on_handle_closed(uv_handle_t *hd) {
  mpx__hub_handle_closed(hd->data);
}

void mpx__link_ref(mpx_link_t *l) { l->refs++; }

void mpx__link_unref(mpx_link_t *l) {
  if (--l->refs > 0) return;
  l->hub->ops->release(l);
  mpx__rx_free(&l->rx);
  mpx__tx_free(&l->tx);
  free(l);
}

static void hub_disarm(mpx_hub_t *h) {
  if (!h->flushing_armed) return;
  uv_prepare_stop(&h->prepare);
  uv_check_stop(&h->check);
  h->flushing_armed = false;
}

static void on_prepare(uv_prepare_t *p);
static void on_check(uv_check_t *c);

void mpx__hub_arm(mpx_hub_t *h) {
  if (h->flushing_armed || h->freeing) return;
  uv_prepare_start(&h->prepare, on_prepare);
  uv_check_start(&h->check, on_check);
  h->flushing_armed = true;
}

mpx_link_t *mpx__hub_pop_dirty(mpx_hub_t *h) {
  mpx_link_t *l = h->dirty;
  if (l == NULL) return NULL;
  h->dirty = l->dnext;
  if (h->dirty == NULL) h->dirty_tail = &h->dirty;
  l->dnext = NULL;
  l->dirty = false;
  return l;
}

void mpx__link_mark_dirty(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  if (l->dirty) return;
  l->dirty = true;
  mpx__link_ref(l);
  *h->dirty_tail = l;
  h->dirty_tail = &l->dnext;
  mpx__hub_arm(h);
}

static void hub_teardown(mpx_hub_t *h);

void mpx__hub_enter(mpx_hub_t *h) { h->depth++; }

void mpx__hub_leave(mpx_hub_t *h) {
  if (--h->depth == 0 && h->freeing && !h->free_done) hub_teardown(h);
}

static void on_idle(uv_idle_t *i) { uv_idle_stop(i); }

static void hub_flush_cb(mpx_hub_t *h, bool before_poll) {
  uint64_t cbs = h->callbacks;
  mpx__hub_enter(h);
  if (!h->freeing) {
    h->ops->flush(h);
    if (h->dirty == NULL && !h->need_flush) hub_disarm(h);
    /* A flush can complete reads (uring reaps what its submission
     * finished) and so run callbacks. Right before the loop polls, that
     * must not be followed by a blocking poll: the caller may be waiting
     * for just that to happen (uv_run(UV_RUN_ONCE) until a condition).
     * An active idle handle makes the poll return at once. */
    if (before_poll && h->callbacks != cbs) uv_idle_start(&h->idle, on_idle);
  }
  mpx__hub_leave(h);
}

static void on_prepare(uv_prepare_t *p) { hub_flush_cb(p->data, true); }
static void on_check(uv_check_t *c) { hub_flush_cb(c->data, false); }

/* Removes an open link from the hub's list (it stays allocated). */
static void link_unlist(mpx_link_t *l) {
  mpx_hub_t *h = l->hub;
  if (l->prev != NULL) l->prev->next = l->next;
  else h->links = l->next;
  if (l->next != NULL) l->next->prev = l->prev;
  l->prev = l->next = NULL;
  h->nlinks--;
}

static void link_close_internal(mpx_link_t *l) {
  l->closed = true;
  link_unlist(l);
  l->hub->ops->close(l);
}

void mpx__link_fail(mpx_link_t *l, int status) {
  if (l->closed) return;
  mpx__link_ref(l);
  l->closed = true;
  link_unlist(l);
  l->hub->callbacks++;
  if (l->on_close != NULL) l->on_close(l, status, l->arg);
  l->hub->ops->close(l);
  mpx__link_unref(l);
}

void mpx__link_write_dead(mpx_link_t *l) {
  l->wdead = true;
  mpx__tx_clear(&l->tx);
}

void mpx__link_shutdown(mpx_link_t *l) {
  if (l->fd >= 0) shutdown(l->fd, SHUT_RDWR);
}

bool mpx__link_received(mpx_link_t *l, size_t n) {
  mpx_hub_t *h = l->hub;
  const void *data;
  size_t len;
  int rc;
  mpx__rx_commit(&l->rx, n);
  mpx__link_ref(l);
  while (!l->closed && (rc = mpx__rx_next(&l->rx, &data, &len)) != 0) {
    if (rc < 0) {
      mpx__link_fail(l, rc);
      break;
    }
    h->st.msgs_in++;
    h->st.bytes_in += len;
    h->callbacks++;
    l->on_msg(l, data, len, l->arg);
  }
  bool alive = !l->closed;
  mpx__link_unref(l);
  return alive;
}

int mpx_hub_new(mpx_hub_t **out, uv_loop_t *loop, mpx_transport_t kind) {
  mpx_hub_t *h;
  mpx_transport_t k;
  int rc;
  if (out == NULL || loop == NULL)
    return mpx__err(MPX_EINVAL, "mpx_hub_new: NULL output or loop");
  *out = NULL;
  if ((rc = mpx_transport_resolve(kind, &k)) != 0) return rc;
  if ((h = calloc(1, sizeof *h)) == NULL)
    return mpx__err(MPX_ENOMEM, "mpx_hub_new: out of memory");
  h->loop = loop;
  h->kind = k;
  h->ops = k == MPX_TRANSPORT_URING ? &mpx__hub_uring_ops : &mpx__hub_pipe_ops;
  h->dirty_tail = &h->dirty;
  if ((rc = h->ops->init(h)) != 0) {
    free(h);
    return rc;
  }
  uv_prepare_init(loop, &h->prepare);
  uv_check_init(loop, &h->check);
  uv_idle_init(loop, &h->idle);
  h->prepare.data = h->check.data = h->idle.data = h;
  h->handles += 3;
  *out = h;
  return 0;
}

mpx_transport_t mpx_hub_transport(const mpx_hub_t *h) {
  return h == NULL ? MPX_TRANSPORT_AUTO : h->kind;
}

size_t mpx_hub_links(const mpx_hub_t *h) { return h == NULL ? 0 : h->nlinks; }

int mpx_hub_add(mpx_hub_t *h, int fd, mpx_link_msg_cb on_msg,
                mpx_link_close_cb on_close, void *arg, mpx_link_t **out) {
  mpx_link_t *l;
  int rc;
  if (out != NULL) *out = NULL;
  if (h == NULL || on_msg == NULL)
    return mpx__err(MPX_EINVAL, "mpx_hub_add: NULL hub or message callback");
  if (h->freeing) return mpx__err(MPX_ESTATE, "mpx_hub_add: hub is freed");
  if ((rc = mpx__check_stream_socket(fd, "mpx_hub_add")) != 0) return rc;
  if ((l = calloc(1, sizeof *l)) == NULL)
    return mpx__err(MPX_ENOMEM, "mpx_hub_add: out of memory");
  l->hub = h;
  l->fd = fd;
  l->on_msg = on_msg;
  l->on_close = on_close;
  l->arg = arg;
  l->refs = 1;
  mpx__rx_init(&l->rx);
  mpx__tx_init(&l->tx);
  l->next = h->links;
  if (h->links != NULL) h->links->prev = l;
  h->links = l;
  h->nlinks++;
  /* Entered: queueing the receive may submit (a full ring) and so run
   * callbacks of other links. */
  mpx__hub_enter(h);
  if ((rc = h->ops->add(h, l)) != 0) {
    /* The implementation left nothing behind; fd stays the caller's. */
    link_unlist(l);
    mpx__rx_free(&l->rx);
    free(l);
  } else if (out != NULL) {
    *out = l;
  }
  mpx__hub_leave(h);
  return rc;
}

int mpx_link_send_batch(mpx_link_t *l, const mpx_conn_buf_t *msgs, size_t n) {
  int rc;
  if (l == NULL) return mpx__err(MPX_EINVAL, "mpx_link_send: NULL link");
  if (l->closed) return mpx__err(MPX_ECLOSED, "mpx_link_send: link closed");
  if ((rc = mpx__check_batch(msgs, n, "mpx_link_send")) != 0) return rc;
  if (l->wdead)
    return mpx__err(MPX_EPIPE, "mpx_link_send: the peer is gone");
  if (n == 0) return 0;
  if (mpx__tx_append(&l->tx, msgs, n) != 0)
    return mpx__err(MPX_ENOMEM, "mpx_link_send: out of memory queueing %zu "
                    "messages", n);
  l->hub->st.msgs_out += n;
  for (size_t i = 0; i < n; i++) l->hub->st.bytes_out += msgs[i].len;
  mpx__link_mark_dirty(l);
  return 0;
}

int mpx_link_send(mpx_link_t *l, const void *data, size_t len) {
  mpx_conn_buf_t b = {data, len};
  return mpx_link_send_batch(l, &b, 1);
}

size_t mpx_link_pending(const mpx_link_t *l) {
  return l == NULL || l->closed ? 0 : mpx__tx_pending(&l->tx);
}

void mpx_link_close(mpx_link_t *l) {
  if (l == NULL || l->closed) return;
  mpx_hub_t *h = l->hub;
  mpx__hub_enter(h);
  link_close_internal(l);
  mpx__hub_leave(h);
}

int mpx_hub_flush(mpx_hub_t *h) {
  int rc;
  if (h == NULL) return mpx__err(MPX_EINVAL, "mpx_hub_flush: NULL hub");
  if (h->freeing) return mpx__err(MPX_ESTATE, "mpx_hub_flush: hub is freed");
  mpx__hub_enter(h);
  rc = h->ops->flush(h);
  mpx__hub_leave(h);
  return rc;
}

void mpx_hub_stats(const mpx_hub_t *h, mpx_transport_stats_t *st) {
  if (st == NULL) return;
  if (h == NULL) memset(st, 0, sizeof *st);
  else *st = h->st;
}

static void hub_teardown(mpx_hub_t *h) {
  mpx_link_t *l;
  h->free_done = true;
  while ((l = mpx__hub_pop_dirty(h)) != NULL) mpx__link_unref(l);
  h->ops->teardown(h);
  hub_disarm(h);
  uv_close((uv_handle_t *)&h->prepare, on_handle_closed);
  uv_close((uv_handle_t *)&h->check, on_handle_closed);
  uv_close((uv_handle_t *)&h->idle, on_handle_closed);
}

void mpx_hub_free(mpx_hub_t *h) {
  if (h == NULL || h->freeing) return;
  mpx__hub_enter(h);
  h->freeing = true;
  hub_disarm(h);
  while (h->links != NULL) link_close_internal(h->links);
  mpx__hub_leave(h); /* tears down now, or when the outermost callback
                        returns */
}

/* ---- the endpoint ---------------------------------------------------------- */

static int check_timeout(double timeout, const char *who) {
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "%s: timeout is NaN", who);
  return 0;
}

int mpx_endpoint_open(mpx_endpoint_t **out, int fd, mpx_transport_t kind) {
  mpx_endpoint_t *e;
  mpx_transport_t k;
  int rc;
  if (out == NULL) return mpx__err(MPX_EINVAL, "mpx_endpoint_open: NULL output");
  *out = NULL;
  if ((rc = mpx_transport_resolve(kind, &k)) != 0) return rc;
  if ((rc = mpx__check_stream_socket(fd, "mpx_endpoint_open")) != 0) return rc;
  if ((e = calloc(1, sizeof *e)) == NULL ||
      (e->hdr = calloc(MPX__GATHER_FRAMES, sizeof *e->hdr)) == NULL) {
    free(e);
    return mpx__err(MPX_ENOMEM, "mpx_endpoint_open: out of memory");
  }
  e->nhdr = MPX__GATHER_FRAMES;
  e->kind = k;
  e->ops = k == MPX_TRANSPORT_URING ? &mpx__ep_uring_ops : &mpx__ep_pipe_ops;
  e->fd = fd;
  mpx__rx_init(&e->rx);
  mpx__tx_init(&e->tx);
  if ((rc = e->ops->open(e)) != 0) {
    free(e->hdr);
    free(e);
    return rc;
  }
  *out = e;
  return 0;
}

mpx_transport_t mpx_endpoint_transport(const mpx_endpoint_t *e) {
  return e == NULL ? MPX_TRANSPORT_AUTO : e->kind;
}

static int ep_werr(mpx_endpoint_t *e, const char *who) {
  return e->werr == MPX_EPIPE
             ? mpx__err(MPX_EPIPE, "%s: the peer is gone", who)
             : mpx__err(e->werr, "%s: unwritable since an earlier error",
                        who);
}

int mpx_endpoint_send_batch(mpx_endpoint_t *e, const mpx_conn_buf_t *msgs,
                            size_t n, double timeout) {
  static const char who[] = "mpx_endpoint_send";
  mpx__gather_t g;
  double deadline;
  int rc;
  if (e == NULL) return mpx__err(MPX_EINVAL, "%s: NULL endpoint", who);
  if ((rc = check_timeout(timeout, who)) != 0 ||
      (rc = mpx__check_batch(msgs, n, who)) != 0)
    return rc;
  if (e->werr) return ep_werr(e, who);
  deadline = mpx__deadline(timeout);
  if (mpx__tx_pending(&e->tx) > 0 && (rc = e->ops->flush(e, deadline)) != 0) {
    if (rc == MPX_ETIMEDOUT)
      return mpx__err(rc, "%s: the rest of an earlier send did not go out "
                      "in time; nothing of this one was sent", who);
    if (rc != MPX_ENOMEM) e->werr = rc;
    return ep_werr(e, who);
  }
  if (n == 0) return 0;
  memset(&g, 0, sizeof g);
  g.msgs = msgs;
  g.n = n;
  g.hdr = e->hdr;
  g.nhdr = e->nhdr;
  rc = e->ops->send(e, &g, deadline);
  if (rc == MPX_ETIMEDOUT && (g.i > 0 || g.skip > 0)) {
    /* Part of the batch left: the rest is committed. */
    rc = mpx__gather_commit_rest(&g, &e->tx);
    if (rc != 0) {
      e->werr = MPX_ENOMEM;
      return mpx__err(MPX_ENOMEM, "%s: out of memory keeping the rest of a "
                      "batch; the endpoint is unwritable", who);
    }
  }
  if (rc == 0) {
    e->st.msgs_out += n;
    for (size_t i = 0; i < n; i++) e->st.bytes_out += msgs[i].len;
    return 0;
  }
  if (rc == MPX_ETIMEDOUT)
    return mpx__err(rc, "%s: timed out; nothing was sent", who);
  if (g.i > 0 || g.skip > 0 || rc == MPX_EPIPE) e->werr = rc;
  if (rc == MPX_EPIPE) return mpx__err(rc, "%s: the peer is gone", who);
  return mpx__err(rc, "%s: write failed", who);
}

int mpx_endpoint_send(mpx_endpoint_t *e, const void *data, size_t len,
                      double timeout) {
  mpx_conn_buf_t b = {data, len};
  return mpx_endpoint_send_batch(e, &b, 1, timeout);
}

int mpx_endpoint_flush(mpx_endpoint_t *e, double timeout) {
  static const char who[] = "mpx_endpoint_flush";
  int rc;
  if (e == NULL) return mpx__err(MPX_EINVAL, "%s: NULL endpoint", who);
  if ((rc = check_timeout(timeout, who)) != 0) return rc;
  if (e->werr) return ep_werr(e, who);
  if (mpx__tx_pending(&e->tx) == 0) return 0;
  rc = e->ops->flush(e, mpx__deadline(timeout));
  if (rc == 0 || rc == MPX_ETIMEDOUT) return rc;
  e->werr = rc;
  return ep_werr(e, who);
}

int mpx_endpoint_recv(mpx_endpoint_t *e, const void **data, size_t *len,
                      double timeout) {
  static const char who[] = "mpx_endpoint_recv";
  double deadline;
  int rc;
  if (data != NULL) *data = NULL;
  if (len != NULL) *len = 0;
  if (e == NULL || data == NULL || len == NULL)
    return mpx__err(MPX_EINVAL, "%s: NULL endpoint or output", who);
  if ((rc = check_timeout(timeout, who)) != 0) return rc;
  deadline = mpx__deadline(timeout);
  for (;;) {
    rc = mpx__rx_next(&e->rx, data, len);
    if (rc == 1) {
      e->st.msgs_in++;
      e->st.bytes_in += *len;
      return 0;
    }
    if (rc == MPX_EPROTO)
      return mpx__err(rc, "%s: bad message header; the endpoint is "
                      "unreadable", who);
    if (rc < 0) return mpx__err(rc, "%s: no memory for a message", who);
    if (e->eof)
      return mpx__rx_partial(&e->rx)
                 ? mpx__err(MPX_EPIPE, "%s: end of file during a message",
                            who)
                 : mpx__err(MPX_EPIPE, "%s: the peer closed the connection",
                            who);
    if (e->rerr) return mpx__err(e->rerr, "%s: read failed", who);
    rc = e->ops->fill(e, deadline);
    if (rc == MPX_ETIMEDOUT) return mpx__err(rc, "%s: timed out", who);
    if (rc != 0) return mpx__err(rc, "%s: read failed", who);
  }
}

void mpx_endpoint_stats(const mpx_endpoint_t *e, mpx_transport_stats_t *st) {
  if (st == NULL) return;
  if (e == NULL) memset(st, 0, sizeof *st);
  else *st = e->st;
}

void mpx_endpoint_free(mpx_endpoint_t *e) {
  if (e == NULL) return;
  e->ops->close(e);
  if (e->fd >= 0) close(e->fd);
  mpx__rx_free(&e->rx);
  mpx__tx_free(&e->tx);
  free(e->hdr);
  free(e->impl);
  free(e);
}
