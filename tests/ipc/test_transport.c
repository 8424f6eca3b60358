/* Transports: one set of tests run against every kind. The suite runs
 * three times, as transport.pipe, transport.uring and transport.auto; each
 * test uses the suite's kind for the coordinator's hub and for the worker's
 * endpoint (test_cross_kind mixes them).
 *
 * The coordinator side runs in this process: a libuv loop with a hub.
 * Workers are fork children on a socketpair; they keep only their own
 * socket (and stdio), report through their exit codes and, for contents,
 * through the messages they send back. Every child is reaped; every wait is
 * bounded (30 s, for loaded sanitizer runs).
 *
 * With MPX_URING_DISABLE=1 (the ctest entry transport_auto_fallback) io_uring
 * counts as forbidden: the uring suite checks that asking for it is
 * MPX_ENOTSUP, and auto resolves to pipe (logging one line). Without it,
 * auto must resolve to uring: io_uring works on the machines mpx is built
 * on.
 *
 *   test_transport [TEST]     runs every test, or TEST in every suite */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "mpx.h"
#include "../mpx_test.h"

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)
#define WAIT_S 30.0

static const size_t SIZES[4] = {0, 1, 64 * KiB, 16 * MiB};

/* The suite's kind, and the kind workers open their endpoints with. */
static mpx_transport_t kind, worker_kind;

/* ---- helpers --------------------------------------------------------------- */

static bool uring_disabled(void) {
  const char *d = getenv("MPX_URING_DISABLE");
  return d != NULL && *d != '\0' && strcmp(d, "0") != 0;
}

static bool pattern_ok(const void *buf, size_t n, size_t want, unsigned seed) {
  const uint8_t *p = buf;
  if (n != want) return false;
  for (size_t j = 0; j < n; j++)
    if (p[j] != (uint8_t)(j * 7 + seed)) return false;
  return true;
}

static void put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)(v >> 24);
  p[1] = (uint8_t)(v >> 16);
  p[2] = (uint8_t)(v >> 8);
  p[3] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* Whether the suite's kind works here. In the uring suite with io_uring
 * disabled, checks that everything refuses it and returns false: the test
 * has nothing else to do. */
static bool kind_ok(void) {
  mpx_transport_t got;
  int rc = mpx_transport_resolve(kind, &got);
  if (kind == MPX_TRANSPORT_URING && uring_disabled()) {
    uv_loop_t loop;
    mpx_hub_t *h = (mpx_hub_t *)1;
    mpx_endpoint_t *e = (mpx_endpoint_t *)1;
    int sv[2];
    CU_ASSERT_EQUAL(rc, MPX_ENOTSUP);
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    CU_ASSERT_EQUAL(mpx_hub_new(&h, &loop, kind), MPX_ENOTSUP);
    CU_ASSERT_PTR_NULL(h);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    CU_ASSERT_EQUAL(mpx_endpoint_open(&e, sv[0], kind), MPX_ENOTSUP);
    CU_ASSERT_PTR_NULL(e);
    close(sv[0]);
    close(sv[1]);
    return false;
  }
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return true;
}

#define NEED_KIND()                                                          \
  do {                                                                       \
    if (!kind_ok()) return;                                                  \
  } while (0)

/* ---- workers --------------------------------------------------------------- */

typedef int (*worker_fn)(int fd, void *arg);

/* Closes every descriptor from 3 up except a and b. */
static void close_all_but(int a, int b) {
  unsigned lo = 3;
  int keep[2] = {a < b ? a : b, a < b ? b : a};
  for (int i = 0; i < 2; i++) {
    if (keep[i] < 3 || (unsigned)keep[i] < lo) continue;
    if ((unsigned)keep[i] > lo) close_range(lo, (unsigned)keep[i] - 1, 0);
    lo = (unsigned)keep[i] + 1;
  }
  close_range(lo, ~0u, 0);
}

/* Forks a worker on a new socketpair: the child keeps its end, `keep`
 * (-1: none) and stdio only, and exits with fn's result; *fd receives
 * the parent's end. */
static pid_t spawn_worker_keep(worker_fn fn, void *arg, int *fd, int keep) {
  int sv[2];
  pid_t pid;
  CU_ASSERT_EQUAL_FATAL(
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    close_all_but(sv[1], keep);
    alarm(120); /* a worker never outlives a stuck test */
    _exit(fn(sv[1], arg));
  }
  close(sv[1]);
  *fd = sv[0];
  return pid;
}

static pid_t spawn_worker(worker_fn fn, void *arg, int *fd) {
  return spawn_worker_keep(fn, arg, fd, -1);
}

static mpx_endpoint_t *w_open(int fd) {
  mpx_endpoint_t *e;
  mpx_transport_t want = worker_kind;
  if (mpx_endpoint_open(&e, fd, worker_kind) != 0) _exit(90);
  if (want == MPX_TRANSPORT_AUTO)
    want = uring_disabled() ? MPX_TRANSPORT_PIPE : MPX_TRANSPORT_URING;
  if (mpx_endpoint_transport(e) != want) _exit(91);
  return e;
}

/* Echoes every message, one by one, until end of file. */
static int w_echo(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  const void *d;
  size_t n;
  int rc;
  (void)arg;
  while ((rc = mpx_endpoint_recv(e, &d, &n, -1)) == 0)
    if (mpx_endpoint_send(e, d, n, -1) != 0) _exit(11);
  mpx_endpoint_free(e);
  return rc == MPX_EPIPE ? 0 : 10;
}

/* Echoes in batches: waits for a message, takes every other one that is
 * already there (up to 4096), sends them all back with one batch. */
typedef struct {
  uint8_t *data;
  size_t len, cap;
  size_t *off, *mlen;
  size_t n, ncap;
} store_t;

static void store_add(store_t *s, const void *d, size_t n) {
  if (s->len + n > s->cap) {
    s->cap = (s->len + n) * 2 + 4096;
    if ((s->data = realloc(s->data, s->cap)) == NULL) _exit(80);
  }
  if (s->n == s->ncap) {
    s->ncap = s->ncap * 2 + 64;
    s->off = realloc(s->off, s->ncap * sizeof *s->off);
    s->mlen = realloc(s->mlen, s->ncap * sizeof *s->mlen);
    if (s->off == NULL || s->mlen == NULL) _exit(80);
  }
  if (n > 0) memcpy(s->data + s->len, d, n);
  s->off[s->n] = s->len;
  s->mlen[s->n++] = n;
  s->len += n;
}

static int store_send(store_t *s, mpx_endpoint_t *e) {
  mpx_conn_buf_t *b = malloc((s->n + 1) * sizeof *b);
  int rc;
  for (size_t i = 0; i < s->n; i++) {
    b[i].data = s->data + s->off[i];
    b[i].len = s->mlen[i];
  }
  rc = mpx_endpoint_send_batch(e, b, s->n, -1);
  free(b);
  s->n = s->len = 0;
  return rc;
}

static int w_echo_batch(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  store_t s = {0};
  const void *d;
  size_t n;
  int rc;
  (void)arg;
  while ((rc = mpx_endpoint_recv(e, &d, &n, -1)) == 0) {
    store_add(&s, d, n);
    while (s.n < 4096 && (rc = mpx_endpoint_recv(e, &d, &n, 0)) == 0)
      store_add(&s, d, n);
    if (store_send(&s, e) != 0) _exit(11);
    if (rc != 0 && rc != MPX_ETIMEDOUT) break;
  }
  mpx_endpoint_free(e);
  return rc == MPX_EPIPE ? 0 : 10;
}

/* ---- the coordinator's loop ------------------------------------------------ */

typedef struct {
  uv_loop_t loop;
  uv_timer_t tick;
  mpx_hub_t *hub;
} env_t;

static void on_tick(uv_timer_t *t) { (void)t; }

static void env_init(env_t *v) {
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&v->loop), 0);
  CU_ASSERT_EQUAL_FATAL(uv_timer_init(&v->loop, &v->tick), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_hub_new(&v->hub, &v->loop, kind), 0);
}

/* Runs the loop until done(arg) or `timeout` seconds. */
static bool run_until(env_t *v, bool (*done)(void *), void *arg,
                      double timeout) {
  double end = mpx_test_now() + timeout;
  bool ok = true;
  uv_timer_start(&v->tick, on_tick, 5, 5); /* wakes the loop to check */
  while (!done(arg)) {
    if (mpx_test_now() > end) {
      ok = false;
      break;
    }
    uv_run(&v->loop, UV_RUN_ONCE);
  }
  uv_timer_stop(&v->tick);
  return ok;
}

/* Frees the hub (if not freed yet), runs the loop once for the close
 * callbacks as the header says, and checks nothing is left on it. */
static void env_free(env_t *v) {
  mpx_hub_free(v->hub);
  v->hub = NULL;
  uv_close((uv_handle_t *)&v->tick, NULL);
  uv_run(&v->loop, UV_RUN_NOWAIT);
  CU_ASSERT_EQUAL(uv_loop_close(&v->loop), 0);
}

/* Per-link state of the parent. */
typedef struct {
  mpx_link_t *l;
  int id;
  size_t got;         /* messages received */
  size_t want;        /* messages expected */
  size_t bad;         /* messages that were not what was expected */
  int closes;         /* close callbacks */
  int close_status;
  size_t got_at_close;
  const size_t *sizes; /* expected sizes (seeds seed0 + i), or NULL */
  unsigned seed0;
  uint32_t next_seq;
  bool close_on_msg;   /* mpx_link_close() inside the first callback */
  bool close_in_close; /* mpx_link_close() inside the close callback */
  mpx_hub_t *free_hub_on_msg;
} peer_t;

static void on_msg(mpx_link_t *l, const void *d, size_t n, void *arg) {
  peer_t *p = arg;
  if (p->l != NULL && p->l != l) p->bad++;
  if (p->sizes != NULL) {
    if (p->got >= p->want ||
        !pattern_ok(d, n, p->sizes[p->got], p->seed0 + (unsigned)p->got))
      p->bad++;
  } else if (n >= 8) { /* [id][seq] records */
    if (get32(d) != (uint32_t)p->id ||
        get32((const uint8_t *)d + 4) != p->next_seq)
      p->bad++;
    p->next_seq++;
  }
  p->got++;
  if (p->close_on_msg) {
    mpx_link_close(l);
    p->l = NULL;
  }
  if (p->free_hub_on_msg != NULL) {
    mpx_hub_t *h = p->free_hub_on_msg;
    p->free_hub_on_msg = NULL;
    mpx_hub_free(h);
    p->l = NULL;
  }
}

static void on_close(mpx_link_t *l, int status, void *arg) {
  peer_t *p = arg;
  if (p->l != NULL && p->l != l) p->bad++;
  p->closes++;
  p->close_status = status;
  p->got_at_close = p->got;
  if (p->close_in_close) mpx_link_close(l); /* allowed: does nothing */
  p->l = NULL;
}

static void add_link(env_t *v, int fd, peer_t *p) {
  CU_ASSERT_EQUAL_FATAL(mpx_hub_add(v->hub, fd, on_msg, on_close, p, &p->l),
                        0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p->l);
}

static bool all_got(void *arg) {
  peer_t **ps = arg;
  for (; *ps != NULL; ps++)
    if ((*ps)->got < (*ps)->want) return false;
  return true;
}

static bool closed(void *arg) { return ((peer_t *)arg)->closes > 0; }

/* ---- kinds ----------------------------------------------------------------- */

static void test_kinds(void) {
  mpx_transport_t k = MPX_TRANSPORT_PIPE, got;
  bool disabled = uring_disabled();
  CU_ASSERT_STRING_EQUAL(mpx_transport_name(MPX_TRANSPORT_AUTO), "auto");
  CU_ASSERT_STRING_EQUAL(mpx_transport_name(MPX_TRANSPORT_PIPE), "pipe");
  CU_ASSERT_STRING_EQUAL(mpx_transport_name(MPX_TRANSPORT_URING), "uring");
  CU_ASSERT_STRING_EQUAL(mpx_transport_name((mpx_transport_t)7), "unknown");
  CU_ASSERT_EQUAL(mpx_transport_parse("uring", &k), 0);
  CU_ASSERT_EQUAL(k, MPX_TRANSPORT_URING);
  CU_ASSERT_EQUAL(mpx_transport_parse("PIPE", &k), 0);
  CU_ASSERT_EQUAL(k, MPX_TRANSPORT_PIPE);
  CU_ASSERT_EQUAL(mpx_transport_parse("auto", &k), 0);
  CU_ASSERT_EQUAL(k, MPX_TRANSPORT_AUTO);
  CU_ASSERT_EQUAL(mpx_transport_parse("tcp", &k), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_transport_parse(NULL, &k), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_transport_resolve((mpx_transport_t)7, &got),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, NULL),
                  MPX_EINVAL);

  unsetenv("MPX_TRANSPORT");
  CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_PIPE, &got), 0);
  CU_ASSERT_EQUAL(got, MPX_TRANSPORT_PIPE);
  if (disabled) {
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_URING, &got),
                    MPX_ENOTSUP);
    CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "MPX_URING_DISABLE"));
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got), 0);
    CU_ASSERT_EQUAL(got, MPX_TRANSPORT_PIPE);
  } else {
    /* io_uring works on the machines mpx is tested on. */
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_URING, &got), 0);
    CU_ASSERT_EQUAL(got, MPX_TRANSPORT_URING);
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got), 0);
    CU_ASSERT_EQUAL(got, MPX_TRANSPORT_URING);
  }

  /* MPX_TRANSPORT overrides auto, and only auto. */
  setenv("MPX_TRANSPORT", "pipe", 1);
  CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got), 0);
  CU_ASSERT_EQUAL(got, MPX_TRANSPORT_PIPE);
  if (!disabled) {
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_URING, &got), 0);
    CU_ASSERT_EQUAL(got, MPX_TRANSPORT_URING);
  }
  setenv("MPX_TRANSPORT", "uring", 1);
  CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_PIPE, &got), 0);
  CU_ASSERT_EQUAL(got, MPX_TRANSPORT_PIPE);
  if (disabled) {
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got),
                    MPX_ENOTSUP);
    CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "MPX_TRANSPORT"));
  } else {
    CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got), 0);
    CU_ASSERT_EQUAL(got, MPX_TRANSPORT_URING);
  }
  setenv("MPX_TRANSPORT", "carrier-pigeon", 1);
  CU_ASSERT_EQUAL(mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got),
                  MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "carrier-pigeon"));
  unsetenv("MPX_TRANSPORT");

  /* Hubs and endpoints report what they resolved to. */
  if (kind_ok()) {
    mpx_transport_t want = kind;
    uv_loop_t loop;
    mpx_hub_t *h;
    mpx_endpoint_t *e;
    int sv[2];
    if (want == MPX_TRANSPORT_AUTO)
      want = disabled ? MPX_TRANSPORT_PIPE : MPX_TRANSPORT_URING;
    CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
    CU_ASSERT_EQUAL_FATAL(mpx_hub_new(&h, &loop, kind), 0);
    CU_ASSERT_EQUAL(mpx_hub_transport(h), want);
    CU_ASSERT_EQUAL(mpx_hub_links(h), 0);
    mpx_hub_free(h);
    uv_run(&loop, UV_RUN_NOWAIT);
    CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    CU_ASSERT_EQUAL_FATAL(mpx_endpoint_open(&e, sv[0], kind), 0);
    CU_ASSERT_EQUAL(mpx_endpoint_transport(e), want);
    mpx_endpoint_free(e);
    CU_ASSERT_EQUAL(fcntl(sv[0], F_GETFD), -1); /* the endpoint closed it */
    close(sv[1]);
  }
}

/* The child mode of test_fallback_log: a fresh process (nothing logged
 * yet) resolves auto three times and exits with the number of fallback
 * lines it logged. */
static int log_lines;
static void count_line(void *user, mpx_log_level_t level, const char *line) {
  (void)user;
  if (level == MPX_LOG_WARN && strstr(line, "auto uses pipe") != NULL)
    log_lines++;
}

static int log_check_main(void) {
  mpx_transport_t got;
  mpx_log_set_handler(count_line, NULL);
  for (int i = 0; i < 3; i++)
    if (mpx_transport_resolve(MPX_TRANSPORT_AUTO, &got) != 0) return 100;
  return log_lines;
}

static void test_fallback_log(void) {
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    setenv("MPX_LOG", "warn", 1);
    unsetenv("MPX_TRANSPORT");
    execl("/proc/self/exe", "test_transport", "--log-check", (char *)NULL);
    _exit(127);
  }
  /* One line, once per process, when auto falls back; none otherwise. */
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), uring_disabled() ? 1 : 0);
}

/* ---- messages of every size -------------------------------------------------- */

/* Queues SIZES (seeds seed0 + i) on a link before the loop runs: the worker
 * reads nothing yet, so the whole of it (16 MiB and more) is queued. */
static void queue_sizes(mpx_link_t *l, unsigned seed0) {
  size_t framed = 0;
  for (int i = 0; i < 4; i++) {
    uint8_t *p = mpx_test_pattern(SIZES[i], seed0 + (unsigned)i);
    CU_ASSERT_EQUAL(mpx_link_send(l, p, SIZES[i]), 0);
    free(p);
    framed += 4 + SIZES[i];
  }
  CU_ASSERT_EQUAL(mpx_link_pending(l), framed);
}

static void roundtrip_with(worker_fn fn) {
  env_t v;
  peer_t p = {0};
  peer_t *ps[] = {&p, NULL};
  mpx_transport_stats_t st;
  int fd;
  pid_t pid;
  env_init(&v);
  pid = spawn_worker(fn, NULL, &fd);
  p.sizes = SIZES;
  p.want = 4;
  p.seed0 = 40;
  add_link(&v, fd, &p);
  queue_sizes(p.l, 40);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  CU_ASSERT_EQUAL(p.got, 4);
  CU_ASSERT_EQUAL(p.bad, 0);
  CU_ASSERT_EQUAL(p.closes, 0);
  CU_ASSERT_EQUAL(mpx_link_pending(p.l), 0);
  mpx_hub_stats(v.hub, &st);
  CU_ASSERT_EQUAL(st.msgs_out, 4);
  CU_ASSERT_EQUAL(st.msgs_in, 4);
  CU_ASSERT_EQUAL(st.bytes_out, 1 + 64 * KiB + 16 * MiB);
  CU_ASSERT_EQUAL(st.bytes_in, 1 + 64 * KiB + 16 * MiB);
  CU_ASSERT(st.syscalls > 0);
  mpx_link_close(p.l); /* the worker reads end of file and exits 0 */
  CU_ASSERT_EQUAL(mpx_hub_links(v.hub), 0);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  env_free(&v);
}

static void test_roundtrip_sizes(void) {
  NEED_KIND();
  worker_kind = kind;
  roundtrip_with(w_echo);
}

/* The same through the batch-echoing worker. */
static void test_roundtrip_batched_echo(void) {
  NEED_KIND();
  worker_kind = kind;
  roundtrip_with(w_echo_batch);
}

/* The hub of the suite's kind against an endpoint of the other kind. */
static void test_cross_kind(void) {
  NEED_KIND();
  if (kind == MPX_TRANSPORT_PIPE)
    worker_kind = uring_disabled() ? MPX_TRANSPORT_PIPE : MPX_TRANSPORT_URING;
  else
    worker_kind = MPX_TRANSPORT_PIPE;
  roundtrip_with(w_echo);
  worker_kind = kind;
}

/* ---- interop with mpx_conn ------------------------------------------------- */

/* A worker that echoes with mpx_conn, not an endpoint. */
static int w_conn_echo(int fd, void *arg) {
  mpx_conn_t *c;
  void *buf;
  size_t n;
  int rc;
  (void)arg;
  if (mpx_conn_from_fd(&c, fd, 0) != 0) return 90;
  while ((rc = mpx_conn_recv_bytes(c, &buf, &n, 0, -1)) == 0) {
    int s = mpx_conn_send_bytes(c, buf, n, -1);
    free(buf);
    if (s != 0) return 11;
  }
  mpx_conn_free(c);
  return rc == MPX_EPIPE ? 0 : 10;
}

static void test_interop_conn_worker(void) {
  NEED_KIND();
  worker_kind = kind;
  roundtrip_with(w_conn_echo);
}

/* Writes n bytes in pieces of `step`, pausing between the first pieces, so
 * the receiver sees frames cut everywhere. */
static void write_dribble(int fd, const void *p, size_t n, size_t step) {
  const uint8_t *s = p;
  size_t done = 0;
  int pieces = 0;
  double end = mpx_test_now() + WAIT_S;
  while (done < n && mpx_test_now() < end) {
    size_t k = n - done < step ? n - done : step;
    ssize_t w = send(fd, s + done, k, MSG_NOSIGNAL);
    if (w > 0) done += (size_t)w;
    else if (w < 0 && errno != EINTR) break;
    if (pieces++ < 40) mpx_test_sleep(0.001);
  }
  CU_ASSERT_EQUAL(done, n);
}

/* The coordinator uses mpx_conn; the worker an endpoint of the suite's
 * kind, echoing. Some frames are written by hand: a byte at a time, and in
 * the 8-byte length form. */
static void test_interop_conn_coordinator(void) {
  static const uint8_t long_form[] = {0xff, 0xff, 0xff, 0xff, 0, 0,  0,
                                      0,    0,    0,    0,    9, 'l', 'o',
                                      'n',  'g',  '-',  'f',  'o', 'r', 'm'};
  mpx_conn_t *c;
  uint8_t frame[4 + 300];
  void *buf;
  size_t n;
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  pid = spawn_worker(w_echo, NULL, &fd);
  CU_ASSERT_EQUAL_FATAL(mpx_conn_from_fd(&c, fd, 0), 0);
  for (int i = 0; i < 4; i++) {
    uint8_t *p = mpx_test_pattern(SIZES[i], 60u + (unsigned)i);
    CU_ASSERT_EQUAL(mpx_conn_send_bytes(c, p, SIZES[i], WAIT_S), 0);
    free(p);
    CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &n, 0, WAIT_S), 0);
    CU_ASSERT(pattern_ok(buf, n, SIZES[i], 60u + (unsigned)i));
    free(buf);
  }
  write_dribble(fd, long_form, sizeof long_form, 1);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &n, 0, WAIT_S), 0);
  CU_ASSERT(n == 9 && memcmp(buf, "long-form", 9) == 0);
  free(buf);
  put32(frame, 300);
  mpx_test_fill_pattern(frame + 4, 300, 77);
  write_dribble(fd, frame, sizeof frame, 1);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &n, 0, WAIT_S), 0);
  CU_ASSERT(pattern_ok(buf, n, 300, 77));
  free(buf);
  mpx_conn_free(c);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
}

/* A worker that writes frames by hand, cut into small pieces: 0 bytes,
 * 5 bytes, 70 000 bytes (more than the 64 KiB read-ahead) and the 8-byte
 * length form, then waits for end of file. */
static int w_dribble(int fd, void *arg) {
  uint8_t *buf = malloc(4 + 4 + 5 + 4 + 70000 + 12 + 3);
  size_t n = 0;
  char c;
  (void)arg;
  put32(buf + n, 0);
  n += 4;
  put32(buf + n, 5);
  mpx_test_fill_pattern(buf + n + 4, 5, 1);
  n += 9;
  put32(buf + n, 70000);
  mpx_test_fill_pattern(buf + n + 4, 70000, 2);
  n += 70004;
  memcpy(buf + n, "\xff\xff\xff\xff\0\0\0\0\0\0\0\3", 12);
  mpx_test_fill_pattern(buf + n + 12, 3, 3);
  n += 15;
  for (size_t done = 0, i = 0; done < n; i++) {
    size_t step = i < 64 ? 1 : 1000;
    ssize_t w = write(fd, buf + done, n - done < step ? n - done : step);
    if (w <= 0) return 20;
    done += (size_t)w;
    if (i < 64) mpx_test_sleep(0.0005);
  }
  free(buf);
  return read(fd, &c, 1) == 0 ? 0 : 21;
}

static void test_partial_frames(void) {
  static const size_t sizes[4] = {0, 5, 70000, 3};
  env_t v;
  peer_t p = {0};
  peer_t *ps[] = {&p, NULL};
  int fd;
  pid_t pid;
  NEED_KIND();
  env_init(&v);
  pid = spawn_worker(w_dribble, NULL, &fd);
  p.sizes = sizes;
  p.seed0 = 0;
  p.want = 4;
  add_link(&v, fd, &p);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  CU_ASSERT_EQUAL(p.got, 4);
  CU_ASSERT_EQUAL(p.bad, 0);
  mpx_link_close(p.l);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  env_free(&v);
}

/* Writes a whole message, then a header no mpx or Python peer sends (a
 * negative length other than -1), then waits for end of file. */
static int w_bad_header(int fd, void *arg) {
  static const uint8_t bytes[] = {0, 0, 0, 2, 'o', 'k', 0x80, 0, 0, 1, 'x'};
  char c;
  (void)arg;
  if (write(fd, bytes, sizeof bytes) != (ssize_t)sizeof bytes) return 20;
  return read(fd, &c, 1) == 0 ? 0 : 21;
}

/* Receives one whole message, then MPX_EPROTO, again on the next call. */
static int w_expect_eproto(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  const void *d;
  size_t n;
  (void)arg;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != 0 || n != 2) return 22;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != MPX_EPROTO) return 23;
  if (mpx_endpoint_recv(e, &d, &n, 0) != MPX_EPROTO) return 24;
  mpx_endpoint_free(e);
  return 0;
}

static void test_bad_header(void) {
  static const uint8_t bytes[] = {0, 0, 0, 2, 'o', 'k', 0x80, 0, 0, 1, 'x'};
  env_t v;
  peer_t p = {0};
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_bad_header, NULL, &fd);
  add_link(&v, fd, &p);
  CU_ASSERT(run_until(&v, closed, &p, WAIT_S));
  CU_ASSERT_EQUAL(p.got, 1); /* "ok" first */
  CU_ASSERT_EQUAL(p.closes, 1);
  CU_ASSERT_EQUAL(p.close_status, MPX_EPROTO);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0); /* the hub closed the socket */
  env_free(&v);
  pid = spawn_worker(w_expect_eproto, NULL, &fd);
  write_dribble(fd, bytes, sizeof bytes, sizeof bytes);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  close(fd);
}

/* ---- many workers, batching ------------------------------------------------ */

/* Sends n records [id][seq][filler] on a link, seq from 0, in batches and
 * one by one. */
static void send_records(mpx_link_t *l, int id, uint32_t n) {
  uint8_t rec[8 + 100];
  for (uint32_t s = 0; s < n; s++) {
    size_t len = 8 + s % 100;
    put32(rec, (uint32_t)id);
    put32(rec + 4, s);
    memset(rec + 8, (int)s, len - 8);
    CU_ASSERT_EQUAL_FATAL(mpx_link_send(l, rec, len), 0);
  }
}

static void test_many_workers(void) {
  enum { W = 4, N = 3000 };
  env_t v;
  peer_t p[W];
  peer_t *ps[W + 1];
  pid_t pid[W];
  mpx_transport_stats_t st;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  memset(p, 0, sizeof p);
  for (int i = 0; i < W; i++) {
    int fd;
    pid[i] = spawn_worker(i % 2 ? w_echo_batch : w_echo, NULL, &fd);
    p[i].id = i;
    p[i].want = N;
    add_link(&v, fd, &p[i]);
    ps[i] = &p[i];
  }
  ps[W] = NULL;
  CU_ASSERT_EQUAL(mpx_hub_links(v.hub), W);
  for (int i = 0; i < W; i++) send_records(p[i].l, i, N);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  for (int i = 0; i < W; i++) {
    /* Every record came back exactly once, in order, on its own link. */
    CU_ASSERT_EQUAL(p[i].got, N);
    CU_ASSERT_EQUAL(p[i].next_seq, N);
    CU_ASSERT_EQUAL(p[i].bad, 0);
    CU_ASSERT_EQUAL(p[i].closes, 0);
  }
  mpx_hub_stats(v.hub, &st);
  CU_ASSERT_EQUAL(st.msgs_out, W * N);
  CU_ASSERT_EQUAL(st.msgs_in, W * N);
  CU_ASSERT_EQUAL(st.bytes_in, st.bytes_out);
  for (int i = 0; i < W; i++) mpx_link_close(p[i].l);
  for (int i = 0; i < W; i++) CU_ASSERT_EQUAL(mpx_test_reap(pid[i], WAIT_S), 0);
  env_free(&v);
}

/* Receives 10 000 records in order, checks its own counters, sends 10 000
 * back in batches of 1000, then waits for end of file. */
static int w_batch10k(int fd, void *arg) {
  enum { N = 10000 };
  mpx_endpoint_t *e = w_open(fd);
  mpx_transport_stats_t st;
  mpx_conn_buf_t b[1000];
  uint8_t (*recs)[8] = malloc(1000 * sizeof *recs);
  const void *d;
  size_t n;
  (void)arg;
  for (uint32_t i = 0; i < N; i++) {
    if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != 0) return 30;
    if (n != 8 || get32(d) != 7 || get32((const uint8_t *)d + 4) != i)
      return 31;
  }
  for (uint32_t s = 0; s < N;) {
    for (int j = 0; j < 1000; j++, s++) {
      put32(recs[j], 7);
      put32(recs[j] + 4, s);
      b[j].data = recs[j];
      b[j].len = 8;
    }
    if (mpx_endpoint_send_batch(e, b, 1000, WAIT_S) != 0) return 32;
  }
  mpx_endpoint_stats(e, &st);
  if (st.msgs_in != N || st.msgs_out != N || st.bytes_in != 8 * N ||
      st.bytes_out != 8 * N)
    return 33;
  /* Batched: reads of many frames, sends of 1000 frames. */
  if (st.syscalls == 0 || st.syscalls > N / 10) return 34;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != MPX_EPIPE) return 35;
  free(recs);
  mpx_endpoint_free(e);
  return 0;
}

static void test_batching(void) {
  enum { N = 10000 };
  env_t v;
  peer_t p = {0};
  peer_t *ps[] = {&p, NULL};
  mpx_conn_buf_t b[N / 2];
  uint8_t (*recs)[8];
  mpx_transport_stats_t st;
  int fd;
  pid_t pid;
  NEED_KIND();
  recs = malloc(N * sizeof *recs);
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_batch10k, NULL, &fd);
  p.id = 7;
  p.want = N;
  add_link(&v, fd, &p);
  for (uint32_t s = 0; s < N; s++) {
    put32(recs[s], 7);
    put32(recs[s] + 4, s);
  }
  /* Half as one batch, half one by one; all queued before the loop. */
  for (int j = 0; j < N / 2; j++) {
    b[j].data = recs[j];
    b[j].len = 8;
  }
  CU_ASSERT_EQUAL(mpx_link_send_batch(p.l, b, N / 2), 0);
  for (int j = N / 2; j < N; j++)
    CU_ASSERT_EQUAL(mpx_link_send(p.l, recs[j], 8), 0);
  CU_ASSERT_EQUAL(mpx_link_pending(p.l), (size_t)N * 12);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  CU_ASSERT_EQUAL(p.got, N);
  CU_ASSERT_EQUAL(p.next_seq, N);
  CU_ASSERT_EQUAL(p.bad, 0);
  mpx_hub_stats(v.hub, &st);
  CU_ASSERT_EQUAL(st.msgs_in, N);
  CU_ASSERT_EQUAL(st.msgs_out, N);
  /* Many messages per system call, both ways. */
  CU_ASSERT(st.syscalls > 0 && st.syscalls < 2 * N / 10);
  mpx_link_close(p.l);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  free(recs);
  env_free(&v);
}

/* ---- death, end of file, closing -------------------------------------------- */

static int w_sleep(int fd, void *arg) {
  (void)fd;
  (void)arg;
  for (;;) pause();
  return 0;
}

/* Sends a header promising 16 MiB and 1000 bytes of it, then sleeps. */
static int w_half_message(int fd, void *arg) {
  uint8_t buf[1004];
  (void)arg;
  put32(buf, 16 * 1024 * 1024);
  memset(buf + 4, 1, 1000);
  if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf) return 20;
  for (;;) pause();
  return 0;
}

static bool sigkill_done(void *arg) {
  peer_t **ps = arg;
  return ps[0]->closes > 0 && ps[1]->closes > 0;
}

static void test_peer_sigkill(void) {
  env_t v;
  peer_t a = {0}, c = {0}, b = {0};
  peer_t *dead[] = {&a, &c, NULL}, *live[] = {&b, NULL};
  uint8_t *big;
  int fa, fb, fc;
  pid_t pa, pb, pc;
  NEED_KIND();
  big = mpx_test_pattern(16 * MiB, 3);
  worker_kind = kind;
  env_init(&v);
  pa = spawn_worker(w_sleep, NULL, &fa);
  pb = spawn_worker(w_echo, NULL, &fb);
  pc = spawn_worker(w_half_message, NULL, &fc);
  a.id = 0;
  b.id = 1;
  c.id = 2;
  add_link(&v, fa, &a);
  add_link(&v, fb, &b);
  add_link(&v, fc, &c);
  /* a never reads: 16 MiB stays queued for it. */
  CU_ASSERT_EQUAL(mpx_link_send(a.l, big, 16 * MiB), 0);
  send_records(b.l, 1, 100);
  b.want = 100;
  CU_ASSERT(run_until(&v, all_got, live, WAIT_S));
  CU_ASSERT(mpx_link_pending(a.l) > 0);
  kill(pa, SIGKILL);
  kill(pc, SIGKILL); /* in the middle of a message */
  CU_ASSERT(run_until(&v, sigkill_done, dead, WAIT_S));
  CU_ASSERT_EQUAL(a.closes, 1);
  CU_ASSERT_EQUAL(a.close_status, MPX_EPIPE);
  CU_ASSERT_EQUAL(a.got, 0);
  CU_ASSERT_EQUAL(c.closes, 1);
  CU_ASSERT_EQUAL(c.close_status, MPX_EPIPE);
  CU_ASSERT_EQUAL(c.got, 0);
  CU_ASSERT_EQUAL(mpx_hub_links(v.hub), 1);
  /* The hub goes on serving the live worker. */
  for (uint32_t s = 100; s < 200; s++) {
    uint8_t rec[8];
    put32(rec, 1);
    put32(rec + 4, s);
    CU_ASSERT_EQUAL(mpx_link_send(b.l, rec, 8), 0);
  }
  b.want = 200;
  CU_ASSERT(run_until(&v, all_got, live, WAIT_S));
  CU_ASSERT_EQUAL(b.got, 200);
  CU_ASSERT_EQUAL(b.bad, 0);
  CU_ASSERT_EQUAL(b.closes, 0);
  mpx_link_close(b.l);
  CU_ASSERT_EQUAL(mpx_test_reap(pa, WAIT_S), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_reap(pc, WAIT_S), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_reap(pb, WAIT_S), 0);
  free(big);
  env_free(&v);
}

/* Sends three messages and exits. */
static int w_three_and_exit(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  (void)arg;
  for (unsigned i = 0; i < 3; i++) {
    uint8_t *m = mpx_test_pattern(SIZES[i + 1], 20 + i);
    if (mpx_endpoint_send(e, m, SIZES[i + 1], WAIT_S) != 0) return 40;
    free(m);
  }
  mpx_endpoint_free(e);
  return 0;
}

static void test_eof_after_messages(void) {
  env_t v;
  peer_t p = {0};
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_three_and_exit, NULL, &fd);
  p.sizes = SIZES + 1;
  p.seed0 = 20;
  p.want = 3;
  p.close_in_close = true;
  add_link(&v, fd, &p);
  CU_ASSERT(run_until(&v, closed, &p, WAIT_S));
  /* Every message first, then one close with MPX_EPIPE. */
  CU_ASSERT_EQUAL(p.got, 3);
  CU_ASSERT_EQUAL(p.got_at_close, 3);
  CU_ASSERT_EQUAL(p.bad, 0);
  CU_ASSERT_EQUAL(p.closes, 1);
  CU_ASSERT_EQUAL(p.close_status, MPX_EPIPE);
  CU_ASSERT_EQUAL(mpx_hub_links(v.hub), 0);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  /* Nothing more comes. */
  uv_run(&v.loop, UV_RUN_NOWAIT);
  CU_ASSERT_EQUAL(p.closes, 1);
  env_free(&v);
}

/* Sends five messages in one batch, then expects end of file (and nothing
 * else). */
static int w_five_then_eof(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  mpx_conn_buf_t b[5];
  const void *d;
  size_t n;
  int rc;
  (void)arg;
  for (int i = 0; i < 5; i++) {
    b[i].data = "hello";
    b[i].len = 5;
  }
  if (mpx_endpoint_send_batch(e, b, 5, WAIT_S) != 0) return 50;
  rc = mpx_endpoint_recv(e, &d, &n, WAIT_S);
  mpx_endpoint_free(e);
  return rc == MPX_EPIPE ? 0 : 51;
}

static bool child_exited(void *arg) {
  pid_t *pid = arg;
  int st;
  pid_t r = waitpid(*pid, &st, WNOHANG);
  if (r != *pid) return false;
  *pid = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
  return true;
}

static void test_close_in_callback(void) {
  env_t v;
  peer_t p = {0};
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_five_then_eof, NULL, &fd);
  p.close_on_msg = true;
  add_link(&v, fd, &p);
  /* Until the worker has seen end of file (pid becomes its exit code). */
  CU_ASSERT(run_until(&v, child_exited, &pid, WAIT_S));
  CU_ASSERT_EQUAL(pid, 0);
  /* One message: the other four were read with it but never delivered;
   * no close callback after mpx_link_close(). */
  CU_ASSERT_EQUAL(p.got, 1);
  CU_ASSERT_EQUAL(p.closes, 0);
  CU_ASSERT_EQUAL(mpx_hub_links(v.hub), 0);
  env_free(&v);
}

static void test_free_in_callback(void) {
  env_t v;
  peer_t p = {0};
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_five_then_eof, NULL, &fd);
  p.free_hub_on_msg = v.hub;
  add_link(&v, fd, &p);
  CU_ASSERT(run_until(&v, child_exited, &pid, WAIT_S));
  CU_ASSERT_EQUAL(pid, 0);
  CU_ASSERT_EQUAL(p.got, 1);
  CU_ASSERT_EQUAL(p.closes, 0);
  v.hub = NULL; /* freed by the callback */
  env_free(&v);
}

/* Reads nothing until *go (shared with the parent) is set, then
 * everything until end of file; exits 0 when it saw end of file, 61 when
 * go never came. */
static int w_slow_reader(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  volatile int *go = arg;
  const void *d;
  size_t n;
  int rc;
  for (double end = mpx_test_now() + WAIT_S; !*go; mpx_test_sleep(0.001))
    if (mpx_test_now() > end) return 61;
  while ((rc = mpx_endpoint_recv(e, &d, &n, WAIT_S)) == 0) {
  }
  mpx_endpoint_free(e);
  return rc == MPX_EPIPE ? 0 : 60;
}

static bool never(void *arg) {
  (void)arg;
  return false;
}

static void test_hub_free_pending(void) {
  env_t v;
  peer_t p = {0}, q = {0};
  uint8_t *big;
  int fd, fd2;
  pid_t pid, pid2;
  volatile int *go;
  NEED_KIND();
  go = mmap(NULL, sizeof *go, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CU_ASSERT_FATAL(go != MAP_FAILED);
  *go = 0;
  big = mpx_test_pattern(16 * MiB, 9);
  worker_kind = kind;
  env_init(&v);
  /* The readers read nothing until the links are freed with data queued. */
  pid = spawn_worker(w_slow_reader, (void *)go, &fd);
  pid2 = spawn_worker(w_slow_reader, (void *)go, &fd2);
  add_link(&v, fd, &p);
  add_link(&v, fd2, &q);
  for (int i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(mpx_link_send(p.l, big, 16 * MiB), 0);
  send_records(q.l, 0, 1000);
  run_until(&v, never, NULL, 0.05); /* some of it is written */
  CU_ASSERT(mpx_link_pending(p.l) > 0);
  /* Freed with data queued and (uring) writes in flight. */
  *go = 1;
  env_free(&v);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  CU_ASSERT_EQUAL(mpx_test_reap(pid2, WAIT_S), 0);
  free(big);
  munmap((void *)go, sizeof *go);
}

/* ---- the endpoint's timeouts ------------------------------------------------ */

static int w_timeouts(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  const void *d;
  size_t n;
  double t;
  (void)arg;
  if (mpx_endpoint_recv(e, &d, &n, 0) != MPX_ETIMEDOUT) return 70;
  t = mpx_test_now();
  if (mpx_endpoint_recv(e, &d, &n, 0.2) != MPX_ETIMEDOUT) return 71;
  if (mpx_test_now() - t < 0.19) return 72; /* it waited */
  if (mpx_endpoint_recv(e, &d, &n, NAN) != MPX_EINVAL) return 73;
  if (mpx_endpoint_send(e, "waiting", 7, WAIT_S) != 0) return 74;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != 0) return 75;
  if (n != 2 || memcmp(d, "go", 2) != 0) return 76;
  if (mpx_endpoint_send(e, "done", 4, WAIT_S) != 0) return 77;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != MPX_EPIPE) return 78;
  mpx_endpoint_free(e);
  return 0;
}

typedef struct {
  bool done;
} timeouts_t;

static void on_timeouts_msg(mpx_link_t *l, const void *d, size_t n,
                            void *arg) {
  timeouts_t *t = arg;
  if (n == 7 && memcmp(d, "waiting", 7) == 0) mpx_link_send(l, "go", 2);
  else if (n == 4 && memcmp(d, "done", 4) == 0) t->done = true;
}

static bool timeouts_done(void *arg) { return ((timeouts_t *)arg)->done; }

static void test_endpoint_recv_timeout(void) {
  env_t v;
  timeouts_t t = {false};
  mpx_link_t *l;
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  pid = spawn_worker(w_timeouts, NULL, &fd);
  CU_ASSERT_EQUAL_FATAL(
      mpx_hub_add(v.hub, fd, on_timeouts_msg, NULL, &t, &l), 0);
  CU_ASSERT(run_until(&v, timeouts_done, &t, WAIT_S));
  mpx_link_close(l);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  env_free(&v);
}

/* Sends to a coordinator that does not read: a 16 MiB message with a short
 * timeout is committed (part of it went out), a flush and a small send
 * then time out (the small one sends nothing); once the coordinator reads
 * (told through `go`), everything arrives whole and in order. */
static int w_send_timeouts(int fd, void *arg) {
  int go = *(int *)arg;
  mpx_endpoint_t *e = w_open(fd);
  uint8_t *first = mpx_test_pattern(5, 0), *big = mpx_test_pattern(16 * MiB, 1);
  uint8_t *lost = mpx_test_pattern(4, 99), *last = mpx_test_pattern(4, 2), c = 1;
  const void *d;
  size_t n;
  if (mpx_endpoint_send(e, first, 5, WAIT_S) != 0) return 80;
  if (mpx_endpoint_send(e, big, 16 * MiB, 0.1) != 0) return 81;
  memset(big, 0, 16 * MiB); /* the committed rest is the endpoint's copy */
  if (mpx_endpoint_flush(e, 0.1) != MPX_ETIMEDOUT) return 82;
  if (mpx_endpoint_send(e, lost, 4, 0.1) != MPX_ETIMEDOUT) return 83;
  if (write(go, &c, 1) != 1) return 84;
  if (mpx_endpoint_flush(e, WAIT_S) != 0) return 85;
  if (mpx_endpoint_send(e, last, 4, WAIT_S) != 0) return 86;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != MPX_EPIPE) return 87;
  mpx_endpoint_free(e);
  free(first);
  free(big);
  free(lost);
  free(last);
  return 0;
}

static void test_endpoint_send_timeout(void) {
  static const size_t sizes[3] = {5, 16 * MiB, 4};
  env_t v;
  peer_t p = {0};
  peer_t *ps[] = {&p, NULL};
  int fd, gp[2];
  struct pollfd pf;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  CU_ASSERT_EQUAL_FATAL(pipe(gp), 0);
  pid = spawn_worker_keep(w_send_timeouts, &gp[1], &fd, gp[1]);
  close(gp[1]);
  /* The loop does not run (nobody reads) until the worker says so. */
  pf.fd = gp[0];
  pf.events = POLLIN;
  CU_ASSERT_EQUAL(poll(&pf, 1, (int)(WAIT_S * 1000)), 1);
  close(gp[0]);
  env_init(&v);
  p.want = 3;
  p.sizes = sizes;
  p.seed0 = 0;
  add_link(&v, fd, &p);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  CU_ASSERT_EQUAL(p.got, 3);
  CU_ASSERT_EQUAL(p.bad, 0);
  mpx_link_close(p.l);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  env_free(&v);
}

/* ---- driving the loop with UV_RUN_ONCE ------------------------------------- */

static void on_alarm_exit(int sig) {
  static const char m[] = "test_transport: hang: uv_run(UV_RUN_ONCE) "
                          "blocked after the reply was delivered\n";
  (void)sig;
  if (write(2, m, sizeof m - 1) < 0) {
  }
  _exit(99);
}

/* Ping-pong driven by uv_run(UV_RUN_ONCE) alone (no timer to wake the
 * loop): every call must return once the reply was delivered, even when
 * the flush before the poll delivered it. A hang ends the suite. */
static void test_run_once_returns(void) {
  enum { N = 3000 };
  uv_loop_t loop;
  mpx_hub_t *h;
  peer_t p = {0};
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_hub_new(&h, &loop, kind), 0);
  pid = spawn_worker(w_echo, NULL, &fd);
  CU_ASSERT_EQUAL_FATAL(mpx_hub_add(h, fd, on_msg, on_close, &p, &p.l), 0);
  signal(SIGALRM, on_alarm_exit);
  alarm(120);
  for (uint32_t s = 0; s < N; s++) {
    uint8_t rec[8];
    put32(rec, 0);
    put32(rec + 4, s);
    CU_ASSERT_EQUAL_FATAL(mpx_link_send(p.l, rec, 8), 0);
    while (p.got <= s && p.closes == 0) uv_run(&loop, UV_RUN_ONCE);
  }
  alarm(0);
  signal(SIGALRM, SIG_DFL);
  CU_ASSERT_EQUAL(p.got, N);
  CU_ASSERT_EQUAL(p.bad, 0);
  mpx_hub_free(h);
  uv_run(&loop, UV_RUN_NOWAIT);
  CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
}

/* ---- statistics and argument checks ---------------------------------------- */

/* Echoes 100 messages, then checks its counters against the 101st. */
static int w_stats(int fd, void *arg) {
  mpx_endpoint_t *e = w_open(fd);
  mpx_transport_stats_t st;
  const void *d;
  size_t n;
  (void)arg;
  for (int i = 0; i < 100; i++) {
    if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != 0) return 2;
    if (mpx_endpoint_send(e, d, n, WAIT_S) != 0) return 3;
  }
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != 0 || n != 6) return 4;
  mpx_endpoint_stats(e, &st);
  if (st.msgs_in != 101 || st.bytes_in != 1006 || st.msgs_out != 100 ||
      st.bytes_out != 1000 || st.syscalls == 0)
    return 5;
  if (mpx_endpoint_recv(e, &d, &n, WAIT_S) != MPX_EPIPE) return 6;
  mpx_endpoint_free(e);
  return 0;
}

static void test_stats(void) {
  env_t v;
  peer_t p = {0};
  peer_t *ps[] = {&p, NULL};
  mpx_transport_stats_t st;
  int fd;
  pid_t pid;
  NEED_KIND();
  worker_kind = kind;
  env_init(&v);
  mpx_hub_stats(v.hub, &st);
  CU_ASSERT(st.msgs_in == 0 && st.msgs_out == 0 && st.bytes_in == 0 &&
            st.bytes_out == 0);
  pid = spawn_worker(w_stats, NULL, &fd);
  p.want = 100;
  add_link(&v, fd, &p);
  for (int i = 0; i < 100; i++)
    CU_ASSERT_EQUAL(mpx_link_send(p.l, "0123456789", 10), 0);
  CU_ASSERT(run_until(&v, all_got, ps, WAIT_S));
  CU_ASSERT_EQUAL(mpx_link_send(p.l, "stats?", 6), 0);
  CU_ASSERT_EQUAL(mpx_hub_flush(v.hub), 0);
  mpx_hub_stats(v.hub, &st);
  CU_ASSERT_EQUAL(st.msgs_out, 101);
  CU_ASSERT_EQUAL(st.bytes_out, 1006);
  CU_ASSERT_EQUAL(st.msgs_in, 100);
  CU_ASSERT_EQUAL(st.bytes_in, 1000);
  CU_ASSERT(st.syscalls > 0);
  run_until(&v, never, NULL, 0.05);
  mpx_link_close(p.l);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, WAIT_S), 0);
  env_free(&v);
}

static void test_errors(void) {
  env_t v;
  mpx_link_t *l = (mpx_link_t *)1;
  mpx_endpoint_t *e = (mpx_endpoint_t *)1;
  int pp[2], dg[2], sv[2];
  const void *d;
  size_t n;
  NEED_KIND();
  env_init(&v);
  CU_ASSERT_EQUAL_FATAL(pipe(pp), 0);
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_DGRAM, 0, dg), 0);
  CU_ASSERT_EQUAL(mpx_hub_add(v.hub, pp[0], on_msg, NULL, NULL, &l),
                  MPX_ENOTSOCK);
  CU_ASSERT_PTR_NULL(l);
  CU_ASSERT_EQUAL(mpx_hub_add(v.hub, dg[0], on_msg, NULL, NULL, &l),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_hub_add(v.hub, -1, on_msg, NULL, NULL, &l), MPX_EBADF);
  CU_ASSERT_EQUAL(mpx_hub_add(v.hub, dg[0], NULL, NULL, NULL, &l),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_hub_add(NULL, dg[0], on_msg, NULL, NULL, &l),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_endpoint_open(&e, pp[0], kind), MPX_ENOTSOCK);
  CU_ASSERT_PTR_NULL(e);
  CU_ASSERT_EQUAL(mpx_endpoint_open(&e, dg[0], kind), MPX_EINVAL);
  /* Failures leave the descriptors to the caller. */
  CU_ASSERT(fcntl(pp[0], F_GETFD) >= 0);
  CU_ASSERT(fcntl(dg[0], F_GETFD) >= 0);
  close(pp[0]);
  close(pp[1]);
  close(dg[0]);
  close(dg[1]);
  CU_ASSERT_EQUAL(mpx_hub_new(NULL, &v.loop, kind), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_link_send(NULL, "x", 1), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_link_pending(NULL), 0);
  CU_ASSERT_EQUAL(mpx_hub_flush(NULL), MPX_EINVAL);
  mpx_link_close(NULL);
  mpx_hub_free(NULL);
  mpx_endpoint_free(NULL);

  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_hub_add(v.hub, sv[0], on_msg, NULL, NULL, &l), 0);
  {
    mpx_conn_buf_t b[2] = {{"a", 1}, {NULL, 3}};
    CU_ASSERT_EQUAL(mpx_link_send_batch(l, b, 2), MPX_EINVAL);
    CU_ASSERT_EQUAL(mpx_link_pending(l), 0); /* nothing of it queued */
    CU_ASSERT_EQUAL(mpx_link_send(l, NULL, 0), 0);
    CU_ASSERT_EQUAL(mpx_link_pending(l), 4);
  }
  CU_ASSERT_EQUAL_FATAL(mpx_endpoint_open(&e, sv[1], kind), 0);
  CU_ASSERT_EQUAL(mpx_endpoint_recv(e, NULL, &n, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_endpoint_recv(e, &d, &n, NAN), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_endpoint_send(e, NULL, 3, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_endpoint_send(NULL, "x", 1, 0), MPX_EINVAL);
  /* The empty message arrives once the loop has run. */
  uv_run(&v.loop, UV_RUN_NOWAIT);
  CU_ASSERT_EQUAL(mpx_endpoint_recv(e, &d, &n, WAIT_S), 0);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(mpx_endpoint_recv(e, &d, &n, 0), MPX_ETIMEDOUT);
  mpx_endpoint_free(e);
  env_free(&v);
}

/* ---- the suites ------------------------------------------------------------ */

static const mpx_test_t tests[] = {
    MPX_TEST(test_kinds),
    MPX_TEST(test_fallback_log),
    MPX_TEST(test_errors),
    MPX_TEST(test_roundtrip_sizes),
    MPX_TEST(test_roundtrip_batched_echo),
    MPX_TEST(test_cross_kind),
    MPX_TEST(test_interop_conn_worker),
    MPX_TEST(test_interop_conn_coordinator),
    MPX_TEST(test_partial_frames),
    MPX_TEST(test_bad_header),
    MPX_TEST(test_many_workers),
    MPX_TEST(test_batching),
    MPX_TEST(test_peer_sigkill),
    MPX_TEST(test_eof_after_messages),
    MPX_TEST(test_close_in_callback),
    MPX_TEST(test_free_in_callback),
    MPX_TEST(test_hub_free_pending),
    MPX_TEST(test_endpoint_recv_timeout),
    MPX_TEST(test_endpoint_send_timeout),
    MPX_TEST(test_run_once_returns),
    MPX_TEST(test_stats),
    {NULL, NULL}};

static int init_pipe(void) {
  kind = worker_kind = MPX_TRANSPORT_PIPE;
  return 0;
}
static int init_uring(void) {
  kind = worker_kind = MPX_TRANSPORT_URING;
  return 0;
}
static int init_auto(void) {
  kind = worker_kind = MPX_TRANSPORT_AUTO;
  return 0;
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    CU_InitializeFunc init;
  } suites[] = {{"transport.pipe", init_pipe},
                {"transport.uring", init_uring},
                {"transport.auto", init_auto}};
  const char *only = argc > 1 ? argv[1] : NULL;
  unsigned failures;
  int found = 0;

  if (only != NULL && strcmp(only, "--log-check") == 0)
    return log_check_main();
  if (CU_initialize_registry() != CUE_SUCCESS) return 2;
  for (size_t s = 0; s < sizeof suites / sizeof suites[0]; s++) {
    CU_pSuite suite = CU_add_suite(suites[s].name, suites[s].init, NULL);
    for (const mpx_test_t *t = tests; t->name != NULL; t++) {
      if (only != NULL && strcmp(only, t->name) != 0) continue;
      CU_add_test(suite, t->name, t->fn);
      found++;
    }
  }
  if (found == 0) {
    fprintf(stderr, "test_transport: no test named '%s'\n", only);
    CU_cleanup_registry();
    return 2;
  }
  CU_basic_set_mode(CU_BRM_VERBOSE);
  CU_basic_run_tests();
  failures = CU_get_number_of_tests_failed();
  CU_cleanup_registry();
  return failures ? 1 : 0;
}
