/* The manager server (mpx/manager.h): a libuv loop (its own thread, or the
 * caller's loop) that accepts TCP or Unix connections and moves their
 * bytes to and from the socket-less core (ipc/manager/manager_core.h), which does
 * the challenge, the framing, the requests and the objects.
 *
 * Threads. The core is guarded by `mu`: every loop callback takes it, and
 * so do mpx_manager_expose and mpx_manager_stats from other threads.
 * mpx_manager_stop only flips an atomic and wakes the loop (uv_async_send
 * is async-signal-safe); the async handle stays open until
 * mpx_manager_free, so a late stop never writes to a closed loop.
 *
 * Stopping: the core answers parked calls ("shutting down"), the listener
 * closes, every connection is shut down after its queued replies have
 * left (CPython's double reply to shutdown included), and connections
 * that do not drain within a second are closed anyway. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <uv.h>

#include "internal.h"
#include "address.h"
#include "manager_core.h"
#include "mpx/manager.h"

#define READ_BUF 65536
#define WQ_HIGH ((size_t)16 << 20) /* stop reading a peer that does not read */
#define DRAIN_MS 1000
#define HANDSHAKE_S 30.0 /* a peer gets this long to pass the challenge */
#define SPIN_NS 100000   /* after a request, the loop polls awake this long */

typedef union {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_tcp_t tcp;
  uv_pipe_t pipe;
} stream_u;

typedef struct conn_s {
  stream_u h;
  mpx_manager_t *m;
  mpx__msess_t *sess;
  uv_timer_t *hs; /* the handshake deadline, until it fires or we close */
  bool closing, parked, wq_full, reading;
  struct conn_s *prev, *next;
  char rbuf[READ_BUF];
} conn_t;

typedef struct {
  uv_write_t req;
  conn_t *c;
  uv_buf_t buf;
} wreq_t;

struct mpx_manager_s {
  uv_loop_t own_loop;
  uv_loop_t *L;
  bool user_loop;
  uv_thread_t thread;
  bool have_thread;
  uv_async_t async;
  stream_u lis;
  bool lis_open;
  bool is_unix;
  char *unix_path; /* file to remove at the end */
  char *address;
  unsigned max_connections;
  uint64_t handshake_ms;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  mpx__mcore_t *core;
  conn_t *conns;
  unsigned n_conns;
  uv_timer_t drain;
  bool drain_open;
  uv_idle_t spin;      /* active: the loop polls without sleeping */
  bool spin_open, spinning;
  uint64_t spin_until; /* uv_hrtime */
  atomic_int stop_req;
  bool stopping;  /* loop: the stop sequence has begun */
  bool done;      /* mu: everything but the async is closed */
  bool freeing;   /* user loop: free when the last handle closes */
  int open_handles; /* listener, conns, drain timer, call timers, async */
};

/* ---- handles ------------------------------------------------------------------- */

static void finish(mpx_manager_t *m);

static void on_drain_closed(uv_handle_t *h);

/* A handle of ours finished closing (mu held). Returns true when that
 * was the last one after mpx_manager_free: m is gone, mu with it. */
static bool handle_gone(mpx_manager_t *m) {
  m->open_handles--;
  if (m->stopping && m->n_conns == 0 && m->drain_open) {
    m->drain_open = false;
    uv_timer_stop(&m->drain);
    uv_close((uv_handle_t *)&m->drain, on_drain_closed);
  }
  if (m->stopping && !m->done && m->open_handles <= 1 /* the async */) {
    m->done = true;
    pthread_cond_broadcast(&m->cv);
  }
  if (m->freeing && m->open_handles == 0) {
    finish(m);
    return true;
  }
  return false;
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf) {
  (void)hint;
  conn_t *c = h->data;
  buf->base = c->rbuf;
  buf->len = sizeof c->rbuf;
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf);

static void set_reading(conn_t *c) {
  bool want = !c->closing && !c->parked && !c->wq_full;
  if (want && !c->reading) {
    if (uv_read_start(&c->h.stream, on_alloc, on_read) == 0) c->reading = true;
  } else if (!want && c->reading) {
    uv_read_stop(&c->h.stream);
    c->reading = false;
  }
}

static void on_conn_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  mpx_manager_t *m = c->m;
  pthread_mutex_lock(&m->mu);
  if (c->sess) mpx__msess_free(c->sess);
  if (c->prev) c->prev->next = c->next;
  else m->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  m->n_conns--;
  free(c);
  if (!handle_gone(m)) pthread_mutex_unlock(&m->mu);
}

/* Closes now: the peer is gone (or will not drain); queued writes are
 * dropped. The session (its parked call, its locks) goes in the close
 * callback, never here: this may run inside the core's own calls. */
static void hs_stop(conn_t *c);

static void conn_close_now(conn_t *c) {
  if (uv_is_closing(&c->h.handle)) return;
  c->closing = true;
  hs_stop(c);
  uv_close(&c->h.handle, on_conn_closed);
}

static void on_shutdown(uv_shutdown_t *req, int status) {
  conn_t *c = req->data;
  (void)status;
  free(req);
  if (!uv_is_closing(&c->h.handle)) uv_close(&c->h.handle, on_conn_closed);
}

/* Closes once queued replies have left. */
static void conn_close_soft(conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  hs_stop(c);
  set_reading(c);
  uv_shutdown_t *req = malloc(sizeof *req);
  if (req == NULL) {
    conn_close_now(c);
    return;
  }
  req->data = c;
  if (uv_shutdown(req, &c->h.stream, on_shutdown) != 0) {
    free(req);
    conn_close_now(c);
  }
}

/* ---- core hooks (mu held) -------------------------------------------------------- */

static void on_write(uv_write_t *req, int status) {
  wreq_t *w = (wreq_t *)req;
  conn_t *c = w->c;
  mpx_manager_t *m = c->m;
  free(w->buf.base);
  free(w);
  pthread_mutex_lock(&m->mu);
  if (status != 0 && status != UV_ECANCELED && !c->closing) {
    MPX__INFO("manager: write failed: %s; closing the connection", uv_strerror(status));
    conn_close_now(c);
  } else if (c->wq_full && c->h.stream.write_queue_size < WQ_HIGH / 2) {
    c->wq_full = false;
    set_reading(c);
  }
  pthread_mutex_unlock(&m->mu);
}

static void hook_send(void *io, const void *data, size_t len) {
  conn_t *c = io;
  const char *p = data;
  if (uv_is_closing(&c->h.handle)) return;
  /* uv_buf_t lengths are 32-bit: a huge reply goes out as several writes,
   * which libuv keeps in order */
  do {
    size_t n = len < ((size_t)1 << 30) ? len : ((size_t)1 << 30);
    wreq_t *w = malloc(sizeof *w);
    char *copy = malloc(n ? n : 1);
    if (w == NULL || copy == NULL) {
      free(w);
      free(copy);
      conn_close_now(c);
      return;
    }
    memcpy(copy, p, n);
    w->c = c;
    w->buf = uv_buf_init(copy, (unsigned)n);
    if (uv_write(&w->req, &c->h.stream, &w->buf, 1, on_write) != 0) {
      free(copy);
      free(w);
      conn_close_now(c);
      return;
    }
    p += n;
    len -= n;
  } while (len > 0);
  if (c->h.stream.write_queue_size > WQ_HIGH) {
    c->wq_full = true;
    set_reading(c);
  }
}

static void hook_close(void *io) { conn_close_soft(io); }

static void hook_pause(void *io, bool paused) {
  conn_t *c = io;
  c->parked = paused;
  set_reading(c);
}

static void on_call_timer(uv_timer_t *t) {
  mpx__mcall_t *c = t->data;
  mpx_manager_t *m = *(mpx_manager_t **)(t + 1);
  pthread_mutex_lock(&m->mu);
  mpx__mcore_expire(m->core, c);
  pthread_mutex_unlock(&m->mu);
}

static void on_timer_closed(uv_handle_t *h) {
  mpx_manager_t *m = *(mpx_manager_t **)((uv_timer_t *)h + 1);
  free(h);
  pthread_mutex_lock(&m->mu);
  if (!handle_gone(m)) pthread_mutex_unlock(&m->mu);
}

static int hook_timer_start(void *user, mpx__mcall_t *c, double secs) {
  mpx_manager_t *m = user;
  /* the timer, then the manager it belongs to */
  uv_timer_t *t = malloc(sizeof *t + sizeof(mpx_manager_t *));
  if (t == NULL) return MPX_ENOMEM;
  *(mpx_manager_t **)(t + 1) = m;
  uv_timer_init(m->L, t);
  t->data = c;
  double ms = secs * 1000.0;
  uint64_t ums = ms > 1e12 ? (uint64_t)1e12 : (uint64_t)(ms + 0.999);
  uv_timer_start(t, on_call_timer, ums, 0);
  m->open_handles++;
  c->timer = t;
  return 0;
}

static void hook_timer_stop(void *user, mpx__mcall_t *c) {
  (void)user;
  uv_timer_t *t = c->timer;
  if (t == NULL) return;
  uv_timer_stop(t);
  t->data = NULL;
  uv_close((uv_handle_t *)t, on_timer_closed);
  c->timer = NULL;
}

static void begin_stop(mpx_manager_t *m);

static void hook_shutdown(void *user) {
  mpx_manager_t *m = user;
  atomic_store(&m->stop_req, 1);
  begin_stop(m);
}

/* ---- the handshake deadline ---------------------------------------------------- */

/* The timer lives apart from its connection (a close callback order is
 * not the call order), with the manager behind it, like call timers. */
static void hs_stop(conn_t *c) {
  uv_timer_t *t = c->hs;
  if (t == NULL) return;
  c->hs = NULL;
  uv_timer_stop(t);
  t->data = NULL;
  uv_close((uv_handle_t *)t, on_timer_closed);
}

static void on_handshake_timer(uv_timer_t *t) {
  conn_t *c = t->data;
  mpx_manager_t *m = *(mpx_manager_t **)(t + 1);
  pthread_mutex_lock(&m->mu);
  if (c && c->hs == t) {
    hs_stop(c);
    if (c->sess && !c->closing && !mpx__msess_authenticated(c->sess)) {
      mpx__msess_handshake_expired(c->sess);
      conn_close_now(c);
    }
  }
  pthread_mutex_unlock(&m->mu);
}

static void hs_start(mpx_manager_t *m, conn_t *c) {
  uv_timer_t *t = malloc(sizeof *t + sizeof(mpx_manager_t *));
  if (t == NULL) return; /* no deadline then */
  *(mpx_manager_t **)(t + 1) = m;
  uv_timer_init(m->L, t);
  t->data = c;
  uv_timer_start(t, on_handshake_timer, m->handshake_ms, 0);
  m->open_handles++;
  c->hs = t;
}

/* ---- polling awake ----------------------------------------------------------------- */

/* A client's next request usually follows its reply within microseconds.
 * If the loop slept in between, its CPU would go idle, and waking it (an
 * interrupt through the hypervisor on a VM: about 20 us measured) would
 * cost more than the call: after each request the loop keeps polling,
 * without sleeping, for SPIN_NS. (mu held.) */
static void on_spin(uv_idle_t *h) {
  mpx_manager_t *m = h->data;
  if (uv_hrtime() < m->spin_until) return;
  uv_idle_stop(h);
  m->spinning = false;
}

static void spin_more(mpx_manager_t *m) {
  if (!m->spin_open || m->stopping) return;
  m->spin_until = uv_hrtime() + SPIN_NS;
  if (!m->spinning && uv_idle_start(&m->spin, on_spin) == 0) m->spinning = true;
}

/* ---- accepting ------------------------------------------------------------------- */

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *buf) {
  conn_t *c = st->data;
  mpx_manager_t *m = c->m;
  pthread_mutex_lock(&m->mu);
  if (n > 0 && c->sess && !c->closing) {
    spin_more(m);
    mpx__msess_feed(c->sess, buf->base, (size_t)n);
  } else if (n < 0) {
    /* EOF or an error: the peer is gone. Its session goes now (a top-level
     * callback, so no core call is running), so nothing is handed to it
     * any more (a queue item, a lock) and its locks are released at once. */
    if (c->sess) {
      mpx__msess_free(c->sess);
      c->sess = NULL;
    }
    conn_close_now(c);
  }
  pthread_mutex_unlock(&m->mu);
}

static void on_refused_closed(uv_handle_t *h) {
  conn_t *c = h->data;
  mpx_manager_t *m = c->m;
  free(c);
  pthread_mutex_lock(&m->mu);
  if (!handle_gone(m)) pthread_mutex_unlock(&m->mu);
}

static void on_connection(uv_stream_t *lis, int status) {
  mpx_manager_t *m = lis->data;
  if (status != 0) {
    MPX__WARN("manager: accept: %s", uv_strerror(status));
    return;
  }
  conn_t *c = calloc(1, sizeof *c);
  if (c == NULL) return;
  c->m = m;
  if (m->is_unix) uv_pipe_init(m->L, &c->h.pipe, 0);
  else uv_tcp_init(m->L, &c->h.tcp);
  c->h.handle.data = c;
  pthread_mutex_lock(&m->mu);
  m->open_handles++;
  if (uv_accept(lis, &c->h.stream) != 0 || m->stopping ||
      m->n_conns >= m->max_connections) {
    if (!m->stopping && m->n_conns >= m->max_connections)
      MPX__WARN("manager: refusing a connection: max_connections (%u) are open",
                m->max_connections);
    uv_close(&c->h.handle, on_refused_closed);
    pthread_mutex_unlock(&m->mu);
    return;
  }
  if (!m->is_unix) uv_tcp_nodelay(&c->h.tcp, 1);
  c->next = m->conns;
  if (m->conns) m->conns->prev = c;
  m->conns = c;
  m->n_conns++;
  c->sess = mpx__msess_new(m->core, c, false);
  if (c->sess == NULL) {
    conn_close_now(c);
  } else {
    hs_start(m, c);
    set_reading(c);
  }
  pthread_mutex_unlock(&m->mu);
}

/* ---- stopping --------------------------------------------------------------------- */

static void on_lis_closed(uv_handle_t *h) {
  mpx_manager_t *m = h->data;
  pthread_mutex_lock(&m->mu);
  if (m->unix_path) {
    unlink(m->unix_path);
    free(m->unix_path);
    m->unix_path = NULL;
  }
  if (!handle_gone(m)) pthread_mutex_unlock(&m->mu);
}

static void on_drain_closed(uv_handle_t *h) {
  mpx_manager_t *m = h->data;
  pthread_mutex_lock(&m->mu);
  if (!handle_gone(m)) pthread_mutex_unlock(&m->mu);
}

/* Connections that did not drain in time are closed anyway. */
static void on_drain(uv_timer_t *t) {
  mpx_manager_t *m = t->data;
  pthread_mutex_lock(&m->mu);
  for (conn_t *c = m->conns; c; c = c->next) conn_close_now(c);
  if (m->drain_open) {
    m->drain_open = false;
    uv_close((uv_handle_t *)t, on_drain_closed);
  }
  pthread_mutex_unlock(&m->mu);
}

/* Loop thread, mu held. */
static void begin_stop(mpx_manager_t *m) {
  if (m->stopping) return;
  m->stopping = true;
  mpx__mcore_stop(m->core);
  if (m->spin_open) {
    m->spin_open = m->spinning = false;
    uv_idle_stop(&m->spin);
    uv_close((uv_handle_t *)&m->spin, on_drain_closed);
  }
  if (m->lis_open) {
    m->lis_open = false;
    uv_close(&m->lis.handle, on_lis_closed);
  }
  for (conn_t *c = m->conns; c; c = c->next) conn_close_soft(c);
  if (m->conns) {
    uv_timer_init(m->L, &m->drain);
    m->drain.data = m;
    m->open_handles++;
    m->drain_open = true;
    uv_timer_start(&m->drain, on_drain, DRAIN_MS, 0);
    uv_unref((uv_handle_t *)&m->drain);
  }
  /* the async stays open (a late mpx_manager_stop may still send) but no
   * longer keeps the loop alive */
  uv_unref((uv_handle_t *)&m->async);
  if (m->open_handles <= 1) {
    m->done = true;
    pthread_cond_broadcast(&m->cv);
  }
}

static void on_async(uv_async_t *a) {
  mpx_manager_t *m = a->data;
  pthread_mutex_lock(&m->mu);
  if (atomic_load(&m->stop_req)) begin_stop(m);
  pthread_mutex_unlock(&m->mu);
}

static void loop_main(void *arg) {
  mpx_manager_t *m = arg;
  /* a write to a vanished peer is EPIPE, never a process-killing SIGPIPE
   * (the signal is thread-directed, so blocking it here is enough) */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  uv_run(m->L, UV_RUN_DEFAULT);
}

/* ---- the API --------------------------------------------------------------------- */

/* ---- mpx_manager_new, step by step -------------------------------------------- */

/* The caller's arguments: 0 or MPX_EINVAL with the reason. */
static int check_opts(mpx_manager_t **out, const mpx_manager_opts_t *o) {
  if (out == NULL || o == NULL)
    return mpx__err(MPX_EINVAL, "mpx_manager_new: NULL argument");
  *out = NULL;
  if (o->authkey == NULL || o->authkey_len == 0)
    return mpx__err(MPX_EINVAL, "mpx_manager_new: an authkey is required (a "
                    "manager always authenticates its clients)");
  return 0;
}

/* The settings, and the mutex and condition (on the monotonic clock, for
 * mpx_manager_wait's deadline) that guard the core. NULL: out of memory. */
static mpx_manager_t *manager_alloc(const mpx_manager_opts_t *o, bool is_unix) {
  mpx_manager_t *m = calloc(1, sizeof *m);
  if (m == NULL) return NULL;
  m->max_connections = o->max_connections ? o->max_connections : 1024;
  double hs_s = HANDSHAKE_S;
#ifdef MPX_TESTING
  /* the test build only: MPX__MANAGER_HANDSHAKE_TIMEOUT seconds */
  const char *hs = getenv("MPX__MANAGER_HANDSHAKE_TIMEOUT");
  if (hs != NULL) hs_s = strtod(hs, NULL);
  if (!(hs_s > 0 && hs_s < 1e6)) hs_s = HANDSHAKE_S;
#endif
  m->handshake_ms = (uint64_t)(hs_s * 1000.0 + 0.5);
  m->is_unix = is_unix;
  pthread_mutex_init(&m->mu, NULL);
  mpx__cond_init_monotonic(&m->cv);
  return m;
}

/* The socket-less core and the listening socket (*fd, ours until the loop
 * takes it); the core learns the address its Tokens carry. */
static int open_core(mpx_manager_t *m, const mpx_manager_opts_t *o,
                     mpx__addr_t *a, const char *address, int *fd) {
  int rc;
  mpx__mcore_opts_t co = {o->authkey, o->authkey_len, o->flags, o->max_frame,
                          o->max_objects};
  mpx__mcore_hooks_t hk = {hook_send, hook_close, hook_pause, hook_timer_start,
                           hook_timer_stop, hook_shutdown, m};
  if ((rc = mpx__mcore_new(&m->core, &co, &hk)) != 0) return rc;
  if ((rc = mpx__addr_listen(a, 128, address, "manager", fd, &m->address)) != 0)
    return rc;
  if (m->is_unix && !a->abstract && (m->unix_path = strdup(a->un.sun_path)) == NULL)
    return mpx__err(MPX_ENOMEM, "mpx_manager_new: out of memory");
  return mpx__mcore_set_address(m->core, m->address);
}

/* The loop: the caller's, or our own (initialised here; on failure
 * m->user_loop is set, so that there is nothing to close). */
static int loop_open(mpx_manager_t *m, const mpx_manager_opts_t *o) {
  int rc;
  m->user_loop = o->loop != NULL;
  m->L = o->loop ? o->loop : &m->own_loop;
  if (!m->user_loop && (rc = uv_loop_init(&m->own_loop)) != 0) {
    m->user_loop = true; /* nothing to close */
    return mpx__err(MPX_ENOMEM, "mpx_manager_new: uv_loop_init: %s", uv_strerror(rc));
  }
  return 0;
}

/* The listener handle on fd (the handle owns it once opened: *fd = -1). */
static int listen_on(mpx_manager_t *m, int *fd) {
  int rc;
  if (m->is_unix) uv_pipe_init(m->L, &m->lis.pipe, 0);
  else uv_tcp_init(m->L, &m->lis.tcp);
  m->lis.handle.data = m;
  m->open_handles++;
  m->lis_open = true;
  rc = m->is_unix ? uv_pipe_open(&m->lis.pipe, *fd) : uv_tcp_open(&m->lis.tcp, *fd);
  if (rc == 0) *fd = -1;
  if (rc == 0) rc = uv_listen(&m->lis.stream, 128, on_connection);
  if (rc != 0)
    return mpx__err(MPX_EIO, "mpx_manager_new: uv_listen: %s", uv_strerror(rc));
  return 0;
}

/* The async that mpx_manager_stop wakes, the idle, and (our own loop) the
 * thread that runs the loop. */
static int start(mpx_manager_t *m) {
  uv_async_init(m->L, &m->async, on_async);
  m->async.data = m;
  m->open_handles++;
  uv_idle_init(m->L, &m->spin);
  m->spin.data = m;
  m->open_handles++;
  m->spin_open = true;
  if (!m->user_loop) {
    if (uv_thread_create(&m->thread, loop_main, m) != 0) {
      uv_close((uv_handle_t *)&m->async, NULL);
      uv_close((uv_handle_t *)&m->spin, NULL);
      return mpx__err(MPX_EAGAIN, "mpx_manager_new: cannot start the loop thread");
    }
    m->have_thread = true;
  }
  return 0;
}

/* Undoes listen_on and start: closes the handles and runs the loop until
 * their close callbacks are done. */
static void undo_loop(mpx_manager_t *m, int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
  uv_close(&m->lis.handle, NULL);
  if (!m->user_loop) {
    uv_run(&m->own_loop, UV_RUN_DEFAULT);
    uv_loop_close(&m->own_loop);
  } else {
    /* the caller's loop closes our listener later: leak nothing we own but
     * the handle memory itself would be freed under it, so run once */
    uv_run(m->L, UV_RUN_NOWAIT);
  }
}

/* Undoes manager_alloc and open_core. */
static void undo_alloc(mpx_manager_t *m, int fd) {
  if (fd >= 0) close(fd);
  if (m->unix_path) unlink(m->unix_path);
  free(m->unix_path);
  free(m->address);
  mpx__mcore_free(m->core);
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
  free(m);
}

int mpx_manager_new(mpx_manager_t **out, const mpx_manager_opts_t *o) {
  mpx__addr_t a;
  int rc, fd = -1;
  if ((rc = check_opts(out, o)) != 0) return rc;
  const char *address = o->address ? o->address : "tcp://127.0.0.1:0";
  if ((rc = mpx__addr_parse(address, &a, "manager")) != 0) return rc;
  mpx_manager_t *m = manager_alloc(o, a.family == AF_UNIX);
  if (m == NULL) return mpx__err(MPX_ENOMEM, "mpx_manager_new: out of memory");
  if ((rc = open_core(m, o, &a, address, &fd)) != 0 || (rc = loop_open(m, o)) != 0) {
    undo_alloc(m, fd);
    return rc;
  }
  if ((rc = listen_on(m, &fd)) != 0 || (rc = start(m)) != 0) {
    undo_loop(m, &fd);
    undo_alloc(m, fd);
    return rc;
  }
  MPX__INFO("manager: serving on %s", m->address);
  *out = m;
  return 0;
}

const char *mpx_manager_address(const mpx_manager_t *m) {
  return m ? m->address : NULL;
}

int mpx_manager_expose(mpx_manager_t *m, const char *typeid, const char *type,
                       const mpx_obj_t *args, const mpx_obj_t *kwds) {
  if (m == NULL) return mpx__err(MPX_EINVAL, "mpx_manager_expose: NULL manager");
  pthread_mutex_lock(&m->mu);
  int rc = mpx__mcore_expose(m->core, typeid, type, args, kwds);
  pthread_mutex_unlock(&m->mu);
  return rc;
}

int mpx_manager_wait(mpx_manager_t *m, double timeout) {
  if (m == NULL) return mpx__err(MPX_EINVAL, "mpx_manager_wait: NULL manager");
  if (timeout != timeout) return mpx__err(MPX_EINVAL, "mpx_manager_wait: NaN timeout");
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  if (timeout >= 0 && timeout < 1e9) {
    double t = (double)ts.tv_nsec * 1e-9 + timeout;
    ts.tv_sec += (time_t)t;
    ts.tv_nsec = (long)((t - (double)(time_t)t) * 1e9);
  }
  int rc = 0;
  pthread_mutex_lock(&m->mu);
  while (!m->done) {
    if (timeout < 0 || timeout >= 1e9) {
      pthread_cond_wait(&m->cv, &m->mu);
    } else if (pthread_cond_timedwait(&m->cv, &m->mu, &ts) == ETIMEDOUT && !m->done) {
      rc = MPX_ETIMEDOUT;
      break;
    }
  }
  pthread_mutex_unlock(&m->mu);
  return rc;
}

void mpx_manager_stop(mpx_manager_t *m) {
  if (m == NULL) return;
  if (atomic_exchange(&m->stop_req, 1) == 0) uv_async_send(&m->async);
}

void mpx_manager_stats(const mpx_manager_t *m, mpx_manager_stats_t *st) {
  mpx_manager_t *mm = (mpx_manager_t *)m;
  memset(st, 0, sizeof *st);
  if (m == NULL) return;
  pthread_mutex_lock(&mm->mu);
  mpx__mcore_stats(mm->core, st);
  pthread_mutex_unlock(&mm->mu);
}

/* The last handle closed after mpx_manager_free (mu held, then gone). */
static void finish(mpx_manager_t *m) {
  mpx__mcore_free(m->core);
  free(m->unix_path);
  free(m->address);
  pthread_mutex_unlock(&m->mu);
  pthread_mutex_destroy(&m->mu);
  pthread_cond_destroy(&m->cv);
  free(m);
}

void mpx_manager_free(mpx_manager_t *m) {
  if (m == NULL) return;
  if (m->have_thread) {
    mpx_manager_stop(m);
    uv_thread_join(&m->thread);
    /* the loop has returned: everything but the async is closed */
    uv_close((uv_handle_t *)&m->async, NULL);
    uv_run(&m->own_loop, UV_RUN_DEFAULT);
    uv_loop_close(&m->own_loop);
    mpx__mcore_free(m->core);
    if (m->unix_path) unlink(m->unix_path);
    free(m->unix_path);
    free(m->address);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    return;
  }
  /* The caller's loop, on its thread: start stopping, close the async; the
   * memory goes with the last close callback (run the loop). */
  pthread_mutex_lock(&m->mu);
  atomic_store(&m->stop_req, 1);
  begin_stop(m);
  m->freeing = true;
  uv_close((uv_handle_t *)&m->async, on_drain_closed);
  pthread_mutex_unlock(&m->mu);
}
