/* Transport figures, pipe against uring: a coordinator (a hub on a libuv
 * loop) and fork workers (endpoints of the same kind). Prints:
 *
 *   transport.<kind>.w<W>.msgs          64-byte messages/s, coordinator ->
 *                                       W workers and back (each worker
 *                                       echoes what it has in one batch;
 *                                       up to 1024 in flight per worker)
 *   transport.<kind>.w<W>.sys_coord     system calls per message made by
 *                                       the hub (recv, send, eventfd reads,
 *                                       io_uring_enter: the stats counter)
 *   transport.<kind>.w<W>.loop_iter     libuv loop iterations per message
 *                                       (each is at least one epoll_wait,
 *                                       which the counter above leaves out)
 *   transport.<kind>.w<W>.sys_worker    system calls per message made by a
 *                                       worker's endpoint
 *   transport.<kind>.rtt.median         ping-pong round trip of one 64-byte
 *   transport.<kind>.rtt.p99            message, coordinator -> worker ->
 *                                       coordinator, microseconds
 *   transport.<kind>.rtt.sys_coord      system calls per round trip, hub
 *   transport.<kind>.rtt.sys_worker     ... and worker
 *   transport.raw.rtt.median            the baseline: the same round trip
 *   transport.raw.rtt.p99               with blocking write()/read() of the
 *                                       68 framed bytes on a socketpair, no
 *                                       loop (on a VM this is mostly the
 *                                       cost of waking a process up)
 *
 * Medians over --runs runs (5).
 *
 *   bench_transport [--runs N] [--quick] [--kind pipe|uring]
 *                   [--only tput|rtt] */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <mpx.h>

#include "bench.h"

#define MSG 64
#define WINDOW 1024
#define MAXW 2

static int runs = 5;
static long n_msgs = 400000; /* throughput: messages in all */
static long n_rtt = 20000;   /* round trips per latency run */

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_transport: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

/* ---- the worker ------------------------------------------------------------ */

/* Echoes in batches; a 1-byte "S" asks for its counters (the reply is the
 * stats struct); ends at end of file. */
static int worker(int fd, mpx_transport_t kind) {
  mpx_endpoint_t *e;
  mpx_conn_buf_t *b = malloc(4096 * sizeof *b);
  uint8_t *store = malloc(4096 * (size_t)MSG);
  const void *d;
  size_t n, k;
  int rc;
  if (mpx_endpoint_open(&e, fd, kind) != 0) return 2;
  while ((rc = mpx_endpoint_recv(e, &d, &n, -1)) == 0) {
    k = 0;
    do {
      if (n == 1 && *(const char *)d == 'S') {
        mpx_transport_stats_t st;
        mpx_endpoint_stats(e, &st);
        if (mpx_endpoint_send(e, &st, sizeof st, -1) != 0) return 3;
        continue;
      }
      if (n > MSG) return 4;
      memcpy(store + k * MSG, d, n);
      b[k].data = store + k * MSG;
      b[k].len = n;
      k++;
    } while (k < 4096 && (rc = mpx_endpoint_recv(e, &d, &n, 0)) == 0);
    if (k > 0 && mpx_endpoint_send_batch(e, b, k, -1) != 0) return 5;
    if (rc != 0 && rc != MPX_ETIMEDOUT) break;
  }
  mpx_endpoint_free(e);
  free(b);
  free(store);
  return rc == MPX_EPIPE ? 0 : 6;
}

static pid_t spawn(mpx_transport_t kind, int *fd) {
  int sv[2];
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    die("socketpair", MPX_EIO);
  if ((pid = fork()) < 0) die("fork", MPX_EIO);
  if (pid == 0) {
    int w = sv[1];
    if (w > 3) close_range(3, (unsigned)w - 1, 0);
    close_range((unsigned)w + 1, ~0u, 0);
    _exit(worker(w, kind));
  }
  close(sv[1]);
  *fd = sv[0];
  return pid;
}

/* ---- the coordinator ------------------------------------------------------- */

typedef struct {
  mpx_link_t *l;
  long sent, got, target;
  bool want_stats, have_stats;
  mpx_transport_stats_t wst;
  /* ping-pong */
  double t0, *rtt;
  long nrtt;
} peer_t;

static uint8_t payload[MSG];
static uint64_t iterations;

static void on_prepare(uv_prepare_t *p) {
  (void)p;
  iterations++;
}

static void on_msg(mpx_link_t *l, const void *d, size_t n, void *arg) {
  peer_t *p = arg;
  if (p->want_stats && n == sizeof p->wst) {
    memcpy(&p->wst, d, sizeof p->wst);
    p->have_stats = true;
    return;
  }
  p->got++;
  if (p->rtt != NULL) {
    double t = bench_now();
    p->rtt[p->nrtt++] = t - p->t0;
    if (p->sent < p->target) {
      p->t0 = t;
      p->sent++;
      mpx_link_send(l, payload, MSG);
    }
    return;
  }
  if (p->sent < p->target) {
    p->sent++;
    mpx_link_send(l, payload, MSG);
  }
}

typedef struct {
  uv_loop_t loop;
  uv_prepare_t prep;
  mpx_hub_t *hub;
  peer_t peers[MAXW];
  pid_t pids[MAXW];
  int w;
} bench_t;

static void setup(bench_t *b, mpx_transport_t kind, int w) {
  int rc;
  memset(b, 0, sizeof *b);
  b->w = w;
  uv_loop_init(&b->loop);
  uv_prepare_init(&b->loop, &b->prep);
  if ((rc = mpx_hub_new(&b->hub, &b->loop, kind)) != 0) die("hub", rc);
  for (int i = 0; i < w; i++) {
    int fd;
    b->pids[i] = spawn(kind, &fd);
    if ((rc = mpx_hub_add(b->hub, fd, on_msg, NULL, &b->peers[i],
                          &b->peers[i].l)) != 0)
      die("add", rc);
  }
}

static bool all_done(bench_t *b) {
  for (int i = 0; i < b->w; i++)
    if (b->peers[i].got < b->peers[i].target) return false;
  return true;
}

static bool all_stats(bench_t *b) {
  for (int i = 0; i < b->w; i++)
    if (!b->peers[i].have_stats) return false;
  return true;
}

/* Collects the workers' counters, closes everything, reaps. Returns the
 * workers' system calls in all. */
static uint64_t teardown(bench_t *b) {
  uint64_t sys = 0;
  for (int i = 0; i < b->w; i++) {
    b->peers[i].want_stats = true;
    mpx_link_send(b->peers[i].l, "S", 1);
  }
  while (!all_stats(b)) uv_run(&b->loop, UV_RUN_ONCE);
  for (int i = 0; i < b->w; i++) sys += b->peers[i].wst.syscalls;
  mpx_hub_free(b->hub);
  uv_close((uv_handle_t *)&b->prep, NULL);
  uv_run(&b->loop, UV_RUN_NOWAIT);
  uv_loop_close(&b->loop);
  for (int i = 0; i < b->w; i++) {
    int st;
    waitpid(b->pids[i], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      fprintf(stderr, "bench_transport: worker failed (status %#x)\n", st);
      exit(1);
    }
  }
  return sys;
}

typedef struct {
  double rate, sys_coord, sys_worker, iters;
} tput_t;

static tput_t run_tput(mpx_transport_t kind, int w) {
  bench_t b;
  mpx_transport_stats_t st;
  tput_t r;
  long per = n_msgs / w;
  double t;
  setup(&b, kind, w);
  /* Warm up: one message each way per worker. */
  for (int i = 0; i < w; i++) {
    b.peers[i].target = 1;
    b.peers[i].sent = 1;
    mpx_link_send(b.peers[i].l, payload, MSG);
  }
  while (!all_done(&b)) uv_run(&b.loop, UV_RUN_ONCE);
  mpx_hub_stats(b.hub, &st);
  uint64_t sys0 = st.syscalls;
  iterations = 0;
  uv_prepare_start(&b.prep, on_prepare);
  t = bench_now();
  for (int i = 0; i < w; i++) {
    peer_t *p = &b.peers[i];
    p->got = p->sent = 0;
    p->target = per;
    for (; p->sent < WINDOW && p->sent < per; p->sent++)
      mpx_link_send(p->l, payload, MSG);
  }
  while (!all_done(&b)) uv_run(&b.loop, UV_RUN_ONCE);
  t = bench_now() - t;
  uv_prepare_stop(&b.prep);
  mpx_hub_stats(b.hub, &st);
  r.rate = (double)(per * w) / t;
  r.sys_coord = (double)(st.syscalls - sys0) / (double)(per * w);
  r.iters = (double)iterations / (double)(per * w);
  r.sys_worker = (double)teardown(&b) / (double)(per * w + w);
  return r;
}

typedef struct {
  double median, p99, sys_coord, sys_worker;
} rtt_t;

static rtt_t run_rtt(mpx_transport_t kind) {
  bench_t b;
  mpx_transport_stats_t st;
  peer_t *p;
  rtt_t r;
  setup(&b, kind, 1);
  p = &b.peers[0];
  p->rtt = malloc((size_t)(n_rtt + 1) * sizeof *p->rtt);
  p->target = n_rtt;
  p->sent = 1;
  p->t0 = bench_now();
  mpx_link_send(p->l, payload, MSG);
  while (!all_done(&b)) uv_run(&b.loop, UV_RUN_ONCE);
  mpx_hub_stats(b.hub, &st);
  /* The first tenth is warm-up. */
  long skip = n_rtt / 10, n = p->nrtt - skip;
  bench_sort(p->rtt + skip, (int)n);
  r.median = p->rtt[skip + n / 2] * 1e6;
  r.p99 = p->rtt[skip + (long)((double)n * 0.99)] * 1e6;
  r.sys_coord = (double)st.syscalls / (double)n_rtt;
  r.sys_worker = (double)teardown(&b) / (double)n_rtt;
  free(p->rtt);
  return r;
}

/* The baseline round trip: blocking write and read of one frame. */
static rtt_t run_raw_rtt(void) {
  uint8_t frame[4 + MSG] = {0, 0, 0, MSG};
  double *t = malloc((size_t)n_rtt * sizeof *t);
  int sv[2], st;
  long skip = n_rtt / 10, n = n_rtt - skip;
  rtt_t r = {0, 0, 2, 2};
  pid_t pid;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
    die("socketpair", MPX_EIO);
  if ((pid = fork()) < 0) die("fork", MPX_EIO);
  if (pid == 0) {
    uint8_t buf[sizeof frame];
    close(sv[0]);
    for (;;) {
      size_t got = 0;
      while (got < sizeof buf) {
        ssize_t k = read(sv[1], buf + got, sizeof buf - got);
        if (k <= 0) _exit(0);
        got += (size_t)k;
      }
      if (write(sv[1], buf, sizeof buf) != (ssize_t)sizeof buf) _exit(1);
    }
  }
  close(sv[1]);
  for (long i = 0; i < n_rtt; i++) {
    uint8_t buf[sizeof frame];
    size_t got = 0;
    double t0 = bench_now();
    if (write(sv[0], frame, sizeof frame) != (ssize_t)sizeof frame)
      die("write", MPX_EIO);
    while (got < sizeof buf) {
      ssize_t k = read(sv[0], buf + got, sizeof buf - got);
      if (k <= 0) die("read", MPX_EIO);
      got += (size_t)k;
    }
    t[i] = bench_now() - t0;
  }
  close(sv[0]);
  waitpid(pid, &st, 0);
  bench_sort(t + skip, (int)n);
  r.median = t[skip + n / 2] * 1e6;
  r.p99 = t[skip + (long)((double)n * 0.99)] * 1e6;
  free(t);
  return r;
}

static int cmp(const void *a, const void *b) {
  return bench_cmp_double(a, b);
}

static double med(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp);
  return v[n / 2];
}

int main(int argc, char **argv) {
  static const mpx_transport_t kinds[] = {MPX_TRANSPORT_PIPE,
                                          MPX_TRANSPORT_URING};
  const char *only = NULL, *kind_arg = NULL;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) only = argv[++i];
    else if (strcmp(argv[i], "--kind") == 0 && i + 1 < argc)
      kind_arg = argv[++i];
    else if (strcmp(argv[i], "--quick") == 0) {
      n_msgs = 40000;
      n_rtt = 2000;
    }
  }
  if (runs < 1) runs = 1;
  if (runs > 32) runs = 32;
  memset(payload, 'x', sizeof payload);
  if (only == NULL || strcmp(only, "rtt") == 0) {
    double m[32], p[32];
    for (int i = 0; i < runs; i++) {
      rtt_t r = run_raw_rtt();
      m[i] = r.median;
      p[i] = r.p99;
    }
    printf("transport.raw.rtt.median %.2f us\n", med(m, runs));
    printf("transport.raw.rtt.p99 %.2f us\n", med(p, runs));
    fflush(stdout);
  }
  for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
    const char *name = mpx_transport_name(kinds[k]);
    mpx_transport_t got;
    if (kind_arg != NULL && strcmp(kind_arg, name) != 0) continue;
    if (mpx_transport_resolve(kinds[k], &got) != 0) {
      printf("# transport.%s: not available here (%s)\n", name,
             mpx_last_error());
      continue;
    }
    for (int w = 1; w <= MAXW && (only == NULL || !strcmp(only, "tput"));
         w++) {
      double rate[32], sc[32], sw[32], it[32];
      for (int i = 0; i < runs; i++) {
        tput_t r = run_tput(kinds[k], w);
        rate[i] = r.rate;
        sc[i] = r.sys_coord;
        sw[i] = r.sys_worker;
        it[i] = r.iters;
      }
      printf("transport.%s.w%d.msgs %.3f M/s\n", name, w,
             med(rate, runs) / 1e6);
      printf("transport.%s.w%d.sys_coord %.4f /msg\n", name, w, med(sc, runs));
      printf("transport.%s.w%d.loop_iter %.4f /msg\n", name, w, med(it, runs));
      printf("transport.%s.w%d.sys_worker %.4f /msg\n", name, w,
             med(sw, runs));
      fflush(stdout);
    }
    if (only == NULL || strcmp(only, "rtt") == 0) {
      double m[32], p[32], sc[32], sw[32];
      for (int i = 0; i < runs; i++) {
        rtt_t r = run_rtt(kinds[k]);
        m[i] = r.median;
        p[i] = r.p99;
        sc[i] = r.sys_coord;
        sw[i] = r.sys_worker;
      }
      printf("transport.%s.rtt.median %.2f us\n", name, med(m, runs));
      printf("transport.%s.rtt.p99 %.2f us\n", name, med(p, runs));
      printf("transport.%s.rtt.sys_coord %.3f /rt\n", name, med(sc, runs));
      printf("transport.%s.rtt.sys_worker %.3f /rt\n", name, med(sw, runs));
      fflush(stdout);
    }
  }
  return 0;
}
