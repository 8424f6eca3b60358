/* Connection figures: 64-byte messages one way between two processes,
 * through a duplex connection (socketpair) and a simplex one (pipe), one
 * message per call and in batches of 64, beside a raw write/read loop of
 * the same framed bytes on the same kind of descriptor. Prints:
 *
 *   conn.<socket|pipe>.single   messages/s, one send per message
 *   conn.<socket|pipe>.batch64  messages/s with mpx_conn_send_batch
 *   conn.<socket|pipe>.raw      messages/s, write()+read() of 68 bytes
 *
 *   bench_conn [--runs N] [--quick] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mpx.h>

#include "bench.h"

#define MSG 64
#define BATCH 64

static int runs = 5;
static long n_msgs = 200000;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_conn: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

/* mode: 0 one send per message, 1 batches. Returns messages/s. */
static double run_conn(int duplex, int mode) {
  mpx_conn_t *r, *w;
  int rc;
  if ((rc = mpx_pipe(&r, &w, duplex)) != 0) die("pipe", rc);
  pid_t pid = fork();
  if (pid == 0) {
    char msg[MSG];
    mpx_conn_buf_t b[BATCH];
    memset(msg, 7, sizeof msg);
    for (int i = 0; i < BATCH; i++) {
      b[i].data = msg;
      b[i].len = MSG;
    }
    mpx_conn_free(r);
    for (long i = 0; i < n_msgs;) {
      if (mode == 0) {
        if (mpx_conn_send_bytes(w, msg, MSG, -1) != 0) _exit(1);
        i++;
      } else {
        size_t n = n_msgs - i < BATCH ? (size_t)(n_msgs - i) : BATCH;
        if (mpx_conn_send_batch(w, b, n, NULL, -1) != 0) _exit(1);
        i += (long)n;
      }
    }
    mpx_conn_flush(w, -1);
    _exit(0);
  }
  mpx_conn_free(w);
  char buf[MSG];
  size_t len;
  double t = bench_now();
  for (long i = 0; i < n_msgs; i++)
    if ((rc = mpx_conn_recv_bytes_into(r, buf, sizeof buf, &len, -1)) != 0)
      die("recv", rc);
  double dt = bench_now() - t;
  int st;
  waitpid(pid, &st, 0);
  mpx_conn_free(r);
  return (double)n_msgs / dt;
}

static double run_raw(int duplex) {
  int fds[2];
  if (duplex ? socketpair(AF_UNIX, SOCK_STREAM, 0, fds) : pipe(fds))
    die("socketpair", MPX_EUNKNOWN);
  int rd = fds[0], wr = fds[1];
  pid_t pid = fork();
  if (pid == 0) {
    char frame[4 + MSG] = {0, 0, 0, MSG};
    close(rd);
    for (long i = 0; i < n_msgs; i++)
      if (write(wr, frame, sizeof frame) != (ssize_t)sizeof frame) _exit(1);
    _exit(0);
  }
  close(wr);
  char buf[4 + MSG];
  double t = bench_now();
  for (long i = 0; i < n_msgs; i++) {
    size_t got = 0;
    while (got < sizeof buf) {
      ssize_t k = read(rd, buf + got, sizeof buf - got);
      if (k <= 0) die("read", MPX_EIO);
      got += (size_t)k;
    }
  }
  double dt = bench_now() - t;
  int st;
  waitpid(pid, &st, 0);
  close(rd);
  return (double)n_msgs / dt;
}

static double median3(double (*f)(int, int), int a, int b) {
  double r[32];
  int n = runs < 32 ? runs : 32;
  for (int i = 0; i < n; i++) r[i] = f(a, b);
  bench_sort(r, n);
  return r[n / 2];
}

static double raw_adapter(int duplex, int unused) {
  (void)unused;
  return run_raw(duplex);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) n_msgs = 20000;
  }
  if (runs < 1) runs = 1;
  for (int duplex = 1; duplex >= 0; duplex--) {
    const char *k = duplex ? "socket" : "pipe";
    printf("conn.%s.single %.3f M/s\n", k, median3(run_conn, duplex, 0) / 1e6);
    printf("conn.%s.batch64 %.3f M/s\n", k, median3(run_conn, duplex, 1) / 1e6);
    printf("conn.%s.raw %.3f M/s\n", k, median3(raw_adapter, duplex, 0) / 1e6);
    fflush(stdout);
  }
  return 0;
}
