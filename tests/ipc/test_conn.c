/* Connections and pipes: framing byte for byte against Python's
 * multiprocessing.connection, messages of 0 B .. 16 MiB across fork over
 * duplex and simplex pipes, too-long messages kept in place, timeouts that
 * keep partial messages, end of file after a close or a SIGKILL, codec
 * errors that send nothing, batches, and wait() over connections, a
 * process sentinel and a raw descriptor. Children report through exit
 * codes; the parent asserts and reaps every child. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

#define KiB ((size_t)1024)
#define MiB (KiB * KiB)

static const size_t SIZES[4] = {0, 1, 64 * KiB, 16 * MiB};

/* Byte j of a message with seed s; py_conn.py uses the same. */
static int send_pattern(mpx_conn_t *c, size_t n, unsigned seed) {
  uint8_t *p = mpx_test_pattern(n, seed);
  int rc = mpx_conn_send_bytes(c, p, n, -1);
  free(p);
  return rc;
}

/* 1 when the next message is the pattern (n, seed). */
static int recv_pattern(mpx_conn_t *c, size_t n, unsigned seed,
                        double timeout) {
  void *buf = NULL;
  size_t len = 0;
  int ok = mpx_conn_recv_bytes(c, &buf, &len, 0, timeout) == 0 &&
           mpx_test_pattern_ok(buf, len, n, seed);
  free(buf);
  return ok;
}

/* Writes n bytes as they are, without blocking for more than 10 s (a
 * receiver that stopped reading fails the test instead of hanging it). */
static void write_raw(int fd, const void *p, size_t n) {
  const char *s = p;
  double end = mpx_test_now() + 10;
  while (n > 0) {
    struct pollfd pf = {fd, POLLOUT, 0};
    ssize_t k = send(fd, s, n, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k < 0 && errno == ENOTSOCK) k = write(fd, s, n); /* O_NONBLOCK pipe */
    if (k > 0) {
      s += k;
      n -= (size_t)k;
      continue;
    }
    if (k < 0 && errno != EAGAIN && errno != EINTR) break;
    if (mpx_test_now() > end) break;
    poll(&pf, 1, 100);
  }
  CU_ASSERT_EQUAL_FATAL(n, 0);
}

static void on_alarm_exit(int sig) {
  (void)sig;
  static const char m[] = "test_conn: hang: a receive did not return\n";
  if (write(2, m, sizeof m - 1) < 0) {
  }
  _exit(99);
}

/* Ends the suite with a message instead of hanging, for the tests that
 * block forever on purpose. */
static void hang_guard(unsigned seconds) {
  signal(SIGALRM, seconds ? on_alarm_exit : SIG_DFL);
  alarm(seconds);
}

static void pair(mpx_conn_t **a, mpx_conn_t **b, bool duplex) {
  CU_ASSERT_EQUAL_FATAL(mpx_pipe(a, b, duplex), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*a);
  CU_ASSERT_PTR_NOT_NULL_FATAL(*b);
}

/* A fork child that sends messages of the given sizes (seeds seed0 + i)
 * on c and exits 0, or 1 when a send fails. */
static pid_t fork_sender(mpx_conn_t *c, const size_t *sizes, int n,
                         unsigned seed0) {
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    for (int i = 0; i < n; i++)
      if (send_pattern(c, sizes[i], seed0 + (unsigned)i) != 0) _exit(1);
    _exit(0);
  }
  return pid;
}

/* ---- Python interop ------------------------------------------------------ */

static void test_python_interop(void) {
  mpx_conn_t *a, *b;
  char script[512];
  pid_t pid;
  int fd;
  uint8_t raw[7];
  static const uint8_t long_form[] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
                                      0,    0,    0,    9,    'l', 'o', 'n',
                                      'g', '-', 'f', 'o', 'r', 'm'};

  pair(&a, &b, true);
  snprintf(script, sizeof script, "%s/py_conn.py", PYHELPER_DIR);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    /* The other end goes to fd 3, inheritable; python3 gets only that. */
    int f = mpx_conn_fileno(b);
    if (f == 3) fcntl(3, F_SETFD, 0);
    else if (dup2(f, 3) != 3) _exit(126);
    execlp("python3", "python3", script, "interop", "3", (char *)NULL);
    _exit(127);
  }
  mpx_conn_free(b);
  /* 1: Python's frames, received by mpx. */
  for (int i = 0; i < 4; i++)
    CU_ASSERT(recv_pattern(a, SIZES[i], (unsigned)i, 60));
  /* 2: mpx's frames, received by Python. */
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(send_pattern(a, SIZES[i], 10u + (unsigned)i), 0);
  /* 3: the 8-byte length form, written by hand. */
  fd = mpx_conn_fileno(a);
  write_raw(fd, long_form, sizeof long_form);
  /* 4: the raw bytes of one mpx frame, checked by Python. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "abc", 3, -1), 0);
  /* 5: the raw bytes of one Python frame, checked here. */
  if (mpx_conn_poll(a, 30) == 0) {
    CU_ASSERT_EQUAL(read(fd, raw, sizeof raw), 7);
    CU_ASSERT_EQUAL(memcmp(raw, "\0\0\0\3xyz", 7), 0);
  } else {
    CU_FAIL("no frame from Python");
    kill(pid, SIGKILL); /* stuck: never wait for it */
  }
  /* 6: a last message, then EOF for Python. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "bye", 3, -1), 0);
  mpx_conn_free(a);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
}

/* Frames in the 8-byte length form (what mpx and Python send above 2 GiB),
 * whole and in pieces, with receives timing out in between. */
static void test_long_form_header(void) {
  mpx_conn_t *a, *b;
  static const uint8_t f1[] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
                               0,    0,    0,    5,    'h', 'e', 'l', 'l', 'o'};
  static const uint8_t f0[] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0};
  void *buf;
  size_t len;
  int fd;

  pair(&a, &b, true);
  fd = mpx_conn_fileno(a);
  write_raw(fd, f1, sizeof f1);
  write_raw(fd, f0, sizeof f0);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 5 && memcmp(buf, "hello", 5) == 0);
  free(buf);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT_EQUAL(len, 0);
  CU_ASSERT_PTR_NOT_NULL(buf);
  free(buf);
  /* In three pieces: 2 bytes, 8 bytes, the rest. */
  write_raw(fd, f1, 2);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.02), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  write_raw(fd, f1 + 2, 8);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.02), MPX_ETIMEDOUT);
  write_raw(fd, f1 + 10, sizeof f1 - 10);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 5 && memcmp(buf, "hello", 5) == 0);
  free(buf);
  /* mpx's own frames are in the short form, exactly Python's. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(b, "hi", 2, 1), 0);
  {
    uint8_t raw[6];
    CU_ASSERT_EQUAL(read(fd, raw, sizeof raw), 6);
    CU_ASSERT_EQUAL(memcmp(raw, "\0\0\0\2hi", 6), 0);
  }
  mpx_conn_free(a);
  mpx_conn_free(b);
}

/* ---- sizes across fork ----------------------------------------------------- */

static void test_sizes_duplex(void) {
  mpx_conn_t *a, *b;
  pid_t pid;
  pair(&a, &b, true);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    /* Echo each message: recv_bytes for even ones, recv_bytes_into for odd
     * ones; check it first. */
    int bad = 0;
    mpx_conn_free(a);
    for (int i = 0; i < 4; i++) {
      void *buf = NULL;
      size_t len = 0;
      int rc;
      if (i % 2 == 0) {
        rc = mpx_conn_recv_bytes(b, &buf, &len, 0, 60);
      } else {
        buf = malloc(SIZES[i] + 1);
        rc = mpx_conn_recv_bytes_into(b, buf, SIZES[i], &len, 60);
      }
      if (rc != 0 || !mpx_test_pattern_ok(buf, len, SIZES[i], (unsigned)i)) bad++;
      if (mpx_conn_send_bytes(b, buf, len, 60) != 0) bad++;
      free(buf);
    }
    mpx_conn_free(b);
    _exit(bad);
  }
  mpx_conn_free(b);
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL(send_pattern(a, SIZES[i], (unsigned)i), 0);
    CU_ASSERT(recv_pattern(a, SIZES[i], (unsigned)i, 60));
  }
  /* The child is gone after its last echo. */
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  {
    void *buf;
    size_t len;
    CU_ASSERT_EQUAL(mpx_conn_recv_bytes(a, &buf, &len, 0, 10), MPX_EPIPE);
    CU_ASSERT_PTR_NULL(buf);
  }
  mpx_conn_free(a);
}

static void test_sizes_simplex(void) {
  mpx_conn_t *r1, *w1, *r2, *w2;
  pid_t pid;
  pair(&r1, &w1, false); /* parent -> child */
  pair(&r2, &w2, false); /* child -> parent */
  CU_ASSERT_TRUE(mpx_conn_readable(r1) && !mpx_conn_writable(r1));
  CU_ASSERT_TRUE(mpx_conn_writable(w1) && !mpx_conn_readable(w1));
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    int bad = 0;
    mpx_conn_free(w1);
    mpx_conn_free(r2);
    for (int i = 0; i < 4; i++) {
      uint8_t *buf = malloc(SIZES[i] + 1);
      size_t len = 0;
      if (mpx_conn_recv_bytes_into(r1, buf, SIZES[i], &len, 60) != 0 ||
          !mpx_test_pattern_ok(buf, len, SIZES[i], (unsigned)i))
        bad++;
      free(buf);
      if (send_pattern(w2, SIZES[i], 20u + (unsigned)i) != 0) bad++;
    }
    _exit(bad);
  }
  mpx_conn_free(r1);
  mpx_conn_free(w2);
  for (int i = 0; i < 4; i++) {
    CU_ASSERT_EQUAL(send_pattern(w1, SIZES[i], (unsigned)i), 0);
    CU_ASSERT(recv_pattern(r2, SIZES[i], 20u + (unsigned)i, 60));
  }
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  mpx_conn_free(w1);
  mpx_conn_free(r2);
}

/* ---- too long: kept in place ----------------------------------------------- */

static void test_into_too_short(void) {
  mpx_conn_t *a, *b;
  static const size_t sizes[4] = {100, 300 * KiB, 0, 7};
  uint8_t small[16], *big;
  size_t len = 0;
  pid_t pid;

  pair(&a, &b, true);
  pid = fork_sender(a, sizes, 4, 1);
  /* 100 bytes into 10: kept, then received whole. */
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, small, 10, &len, 10),
                  MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(len, 100);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, small, 10, &len, 0),
                  MPX_ETOOSHORT);
  big = malloc(300 * KiB);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, big, 100, &len, 10), 0);
  CU_ASSERT(mpx_test_pattern_ok(big, len, 100, 1));
  /* 300 KiB (beyond the read-ahead buffer) into 1000 bytes: kept. */
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, big, 1000, &len, 10),
                  MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(len, 300 * KiB);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, big, 300 * KiB - 1, &len, 10),
                  MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(len, 300 * KiB);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, big, 300 * KiB, &len, 10), 0);
  CU_ASSERT(mpx_test_pattern_ok(big, len, 300 * KiB, 2));
  /* An empty message fits an empty buffer; the next one follows. */
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, NULL, 0, &len, 10), 0);
  CU_ASSERT_EQUAL(len, 0);
  CU_ASSERT(recv_pattern(b, 7, 4, 10));
  free(big);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

static void test_maxlength(void) {
  mpx_conn_t *a, *b;
  static const size_t sizes[3] = {1000, 300 * KiB, 5};
  void *buf = (void *)1;
  size_t len = 0;
  uint8_t small[64];
  pid_t pid;

  pair(&a, &b, true);
  pid = fork_sender(a, sizes, 3, 7);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 999, 10), MPX_EMSGSIZE);
  CU_ASSERT_EQUAL(len, 1000);
  CU_ASSERT_PTR_NULL(buf);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 1, 10), MPX_EMSGSIZE);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 1000, 10), 0);
  CU_ASSERT(mpx_test_pattern_ok(buf, len, 1000, 7));
  free(buf);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 1000, 10), MPX_EMSGSIZE);
  CU_ASSERT_EQUAL(len, 300 * KiB);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, small, sizeof small, &len, 10),
                  MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(len, 300 * KiB);
  CU_ASSERT(recv_pattern(b, 300 * KiB, 8, 10));
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 5, 10), 0);
  CU_ASSERT(mpx_test_pattern_ok(buf, len, 5, 9));
  free(buf);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

/* ---- timeouts that keep partial messages ----------------------------------- */

static void test_recv_timeout_partial(void) {
  mpx_conn_t *a, *b;
  uint8_t hdr[4], *msg, *into;
  void *buf;
  size_t len;
  int fd;
  const size_t big = 300 * KiB, step = 100 * KiB;

  pair(&a, &b, true);
  fd = mpx_conn_fileno(a);
  /* A small frame: its header in two pieces, then half its payload. */
  msg = mpx_test_pattern(10, 3);
  write_raw(fd, "\0\0", 2);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0), MPX_ETIMEDOUT);
  write_raw(fd, "\0\12", 2);
  write_raw(fd, msg, 4);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.02), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  write_raw(fd, msg + 4, 6);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), 0);
  CU_ASSERT(recv_pattern(b, 10, 3, 1));
  free(msg);

  /* A large frame through recv_bytes, then recv_bytes_into. */
  msg = mpx_test_pattern(big, 4);
  into = malloc(big);
  hdr[0] = 0;
  hdr[1] = (uint8_t)(big >> 16);
  hdr[2] = (uint8_t)(big >> 8);
  hdr[3] = (uint8_t)big;
  write_raw(fd, hdr, 4);
  write_raw(fd, msg, step);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.02), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, into, big, &len, 0.02),
                  MPX_ETIMEDOUT);
  write_raw(fd, msg + step, step);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, into, 10, &len, 0.02),
                  MPX_ETOOSHORT);
  CU_ASSERT_EQUAL(len, big);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, into, big, &len, 0.02),
                  MPX_ETIMEDOUT);
  write_raw(fd, msg + 2 * step, big - 2 * step);
  memset(into, 0, big);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, into, big, &len, 1), 0);
  CU_ASSERT(mpx_test_pattern_ok(into, len, big, 4));

  /* A large frame read straight into the caller's buffer, timing out,
   * then finished by recv_bytes. */
  write_raw(fd, hdr, 4);
  write_raw(fd, msg, step);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes_into(b, into, big, &len, 0.02),
                  MPX_ETIMEDOUT);
  memset(into, 0, big); /* what it read is kept by the connection */
  write_raw(fd, msg + step, step);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.02), MPX_ETIMEDOUT);
  write_raw(fd, msg + 2 * step, big - 2 * step);
  CU_ASSERT(recv_pattern(b, big, 4, 1));
  /* Nothing else arrived. */
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  free(msg);
  free(into);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

static void test_poll_timeout(void) {
  mpx_conn_t *a, *b, *r, *w;
  void *buf;
  size_t len;
  double t0, dt;

  pair(&a, &b, true);
  pair(&r, &w, false);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0.2), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT(dt >= 0.2 && dt < 2.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.1), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT(dt >= 0.1 && dt < 1.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_poll(r, 0.1), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT(dt >= 0.1 && dt < 1.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  CU_ASSERT_EQUAL(mpx_conn_poll(b, NAN), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "x", 1, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(w, "y", 1, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_poll(r, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_poll(a, 0), MPX_ETIMEDOUT);
  mpx_conn_free(a);
  mpx_conn_free(b);
  mpx_conn_free(r);
  mpx_conn_free(w);
}

/* ---- wait ---------------------------------------------------------------- */

/* args: a pipe. Blocks until a byte (or EOF) arrives on its read end,
 * then exits 7. */
static int blocked_target(const void *args, size_t len) {
  int fds[2];
  char ch;
  (void)len;
  memcpy(fds, args, sizeof fds);
  close(fds[1]); /* closing the parent's copy ends the child */
  while (read(fds[0], &ch, 1) < 0 && errno == EINTR) {
  }
  return 7;
}

static mpx_process_t *start_blocked(int *release_fd) {
  int gate[2];
  mpx_process_opts_t o = {0};
  mpx_process_t *p = NULL;
  CU_ASSERT_EQUAL_FATAL(pipe2(gate, O_CLOEXEC), 0);
  o.target = blocked_target;
  o.args = gate;
  o.args_len = sizeof gate;
  o.start_method = MPX_START_FORK;
  CU_ASSERT_EQUAL_FATAL(mpx_process_new(&p, &o), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_process_start(p), 0);
  close(gate[0]);
  *release_fd = gate[1];
  return p;
}

static void test_wait_timeout(void) {
  mpx_conn_t *a1, *b1, *a2, *b2;
  mpx_process_t *p;
  int raw[2], gate, code = -1;
  size_t ready[4], n_ready = 99;
  mpx_wait_item_t items[4];
  double t0, dt;

  pair(&a1, &b1, true);
  pair(&a2, &b2, false);
  CU_ASSERT_EQUAL_FATAL(pipe2(raw, O_CLOEXEC), 0);
  p = start_blocked(&gate);
  items[0] = mpx_wait_conn(b1);
  items[1] = mpx_wait_conn(a2);
  items[2] = mpx_wait_process(p);
  items[3] = mpx_wait_fd(raw[0]);
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 0.3, ready, &n_ready), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT_EQUAL(n_ready, 0);
  CU_ASSERT(dt >= 0.3 && dt < 3.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 0, ready, &n_ready), MPX_ETIMEDOUT);
  CU_ASSERT(mpx_test_now() - t0 < 0.05);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, NAN, ready, &n_ready), MPX_EINVAL);
  CU_ASSERT_EQUAL(write(gate, "g", 1), 1);
  CU_ASSERT_EQUAL(mpx_process_join(p, 10), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), 0);
  CU_ASSERT_EQUAL(code, 7);
  close(gate);
  close(raw[0]);
  close(raw[1]);
  mpx_process_free(p);
  mpx_conn_free(a1);
  mpx_conn_free(b1);
  mpx_conn_free(a2);
  mpx_conn_free(b2);
}

static void test_wait_mixed(void) {
  mpx_conn_t *a1, *b1, *a2, *b2;
  mpx_process_t *p;
  int raw[2], gate, code = -1;
  size_t ready[4], n_ready = 99;
  mpx_wait_item_t items[4];
  mpx_conn_buf_t two[2] = {{"one", 3}, {"two", 3}};
  void *buf;
  size_t len;
  char ch;

  pair(&a1, &b1, true);
  pair(&a2, &b2, true);
  CU_ASSERT_EQUAL_FATAL(pipe2(raw, O_CLOEXEC), 0);
  p = start_blocked(&gate);
  items[0] = mpx_wait_conn(b1);
  items[1] = mpx_wait_conn(b2);
  items[2] = mpx_wait_process(p);
  items[3] = mpx_wait_fd(raw[0]);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 0, ready, &n_ready), MPX_ETIMEDOUT);
  /* A message on the second connection. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a2, "m", 1, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 5, ready, &n_ready), 0);
  CU_ASSERT_EQUAL(n_ready, 1);
  CU_ASSERT_EQUAL(ready[0], 1);
  /* And the raw descriptor. */
  CU_ASSERT_EQUAL(write(raw[1], "r", 1), 1);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 5, ready, &n_ready), 0);
  CU_ASSERT_EQUAL(n_ready, 2);
  CU_ASSERT(ready[0] == 1 && ready[1] == 3);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b2, &buf, &len, 0, 1), 0);
  free(buf);
  CU_ASSERT_EQUAL(read(raw[0], &ch, 1), 1);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 0.05, NULL, &n_ready),
                  MPX_ETIMEDOUT);
  /* Two messages in one write; after one receive the other is buffered:
   * the descriptor is not readable, but the connection is ready. */
  CU_ASSERT_EQUAL(mpx_conn_send_batch(a1, two, 2, NULL, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b1, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 3 && memcmp(buf, "one", 3) == 0);
  free(buf);
  {
    struct pollfd pf = {mpx_conn_fileno(b1), POLLIN, 0};
    CU_ASSERT_EQUAL(poll(&pf, 1, 0), 0);
  }
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 5, ready, &n_ready), 0);
  CU_ASSERT_EQUAL(n_ready, 1);
  CU_ASSERT_EQUAL(ready[0], 0);
  /* The process exits: its sentinel joins the buffered connection. */
  CU_ASSERT_EQUAL(write(gate, "g", 1), 1);
  CU_ASSERT_EQUAL(mpx_conn_wait(&items[2], 1, 10, NULL, &n_ready), 0);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 4, 5, ready, &n_ready), 0);
  CU_ASSERT_EQUAL(n_ready, 2);
  CU_ASSERT(ready[0] == 0 && ready[1] == 2);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b1, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 3 && memcmp(buf, "two", 3) == 0);
  free(buf);
  CU_ASSERT_EQUAL(mpx_process_join(p, 10), 0);
  CU_ASSERT_EQUAL(mpx_process_exitcode(p, &code), 0);
  CU_ASSERT_EQUAL(code, 7);
  /* The second connection's peer closes: ready (EOF). */
  mpx_conn_free(a2);
  items[2] = mpx_wait_fd(raw[0]);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 3, 5, ready, &n_ready), 0);
  CU_ASSERT_EQUAL(n_ready, 1);
  CU_ASSERT_EQUAL(ready[0], 1);
  /* Errors name the item. */
  mpx_conn_close(b2);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 2, 0, ready, &n_ready), MPX_ECLOSED);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "item 1"));
  items[1] = mpx_wait_fd(-1);
  CU_ASSERT_EQUAL(mpx_conn_wait(items, 2, 0, ready, &n_ready), MPX_EBADF);
  close(gate);
  close(raw[0]);
  close(raw[1]);
  mpx_process_free(p);
  mpx_conn_free(a1);
  mpx_conn_free(b1);
  mpx_conn_free(b2);
}

/* ---- end of file ----------------------------------------------------------- */

static int sigpipe_pending(void) {
  sigset_t s;
  sigpending(&s);
  return sigismember(&s, SIGPIPE);
}

static int sigpipe_blocked(void) {
  sigset_t s;
  pthread_sigmask(SIG_BLOCK, NULL, &s);
  return sigismember(&s, SIGPIPE);
}

static void test_eof_after_close(void) {
  mpx_conn_t *a, *b, *r, *w;
  void *buf;
  size_t len;
  double t0;
  void (*old)(int) = signal(SIGPIPE, SIG_DFL); /* a SIGPIPE would kill us */

  hang_guard(30);
  /* Messages sent before the close arrive, then EPIPE, again and again. */
  pair(&a, &b, true);
  for (unsigned i = 0; i < 3; i++)
    CU_ASSERT_EQUAL(send_pattern(a, 10 + i, i), 0);
  mpx_conn_free(a);
  for (unsigned i = 0; i < 3; i++) CU_ASSERT(recv_pattern(b, 10 + i, i, 1));
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_poll(b, -1), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, -1), MPX_EPIPE);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, -1), MPX_EPIPE);
  CU_ASSERT(mpx_test_now() - t0 < 1);
  /* Sending to the closed peer: EPIPE, no signal. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(b, "x", 1, -1), MPX_EPIPE);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(b, "x", 1, -1), MPX_EPIPE);
  mpx_conn_free(b);

  /* A pipe whose reader is gone. */
  pair(&r, &w, false);
  mpx_conn_free(r);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(w, "x", 1, -1), MPX_EPIPE);
  CU_ASSERT_FALSE(sigpipe_pending());
  CU_ASSERT_FALSE(sigpipe_blocked());
  mpx_conn_free(w);

  /* A truncated frame, then the close. */
  pair(&a, &b, true);
  write_raw(mpx_conn_fileno(a), "\0\0\0\12abc", 7);
  mpx_conn_free(a);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, -1), MPX_EPIPE);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "during"));
  mpx_conn_free(b);
  /* A truncated large frame (read straight into place), then the close. */
  pair(&a, &b, true);
  write_raw(mpx_conn_fileno(a), "\0\4\0\0abc", 7); /* 256 KiB claimed */
  mpx_conn_free(a);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, -1), MPX_EPIPE);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "during"));
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, -1), MPX_EPIPE);
  mpx_conn_free(b);
  /* The same on a pipe. */
  pair(&r, &w, false);
  write_raw(mpx_conn_fileno(w), "\0\0\0\12abc", 7);
  mpx_conn_free(w);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(r, &buf, &len, 0, -1), MPX_EPIPE);
  mpx_conn_free(r);
  signal(SIGPIPE, old);
  hang_guard(0);
}

static void test_peer_killed(void) {
  mpx_conn_t *a, *b;
  void *buf;
  size_t len;
  pid_t child, killer;
  double t0;

  hang_guard(30);
  /* Killed in the middle of a message. */
  pair(&a, &b, true);
  child = fork();
  CU_ASSERT_FATAL(child >= 0);
  if (child == 0) {
    mpx_conn_free(b);
    send_pattern(a, 5, 1);
    write_raw(mpx_conn_fileno(a), "\0\0\3\350abcdefghij", 14);
    for (;;) pause();
  }
  mpx_conn_free(a);
  CU_ASSERT(recv_pattern(b, 5, 1, 10));
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 0.05), MPX_ETIMEDOUT);
  kill(child, SIGKILL);
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 10), MPX_EPIPE);
  CU_ASSERT(mpx_test_now() - t0 < 5);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(child), -SIGKILL);
  mpx_conn_free(b);

  /* Killed while we block forever in a receive (a second child kills it). */
  pair(&a, &b, false);
  child = fork();
  CU_ASSERT_FATAL(child >= 0);
  if (child == 0) {
    mpx_conn_free(a);
    for (;;) pause();
  }
  mpx_conn_free(b);
  pid_t me = getpid();
  killer = fork();
  CU_ASSERT_FATAL(killer >= 0);
  if (killer == 0) { /* once we sleep in the receive (1: not within 30 s) */
    int asleep = mpx_test_wait_until(mpx_test_asleep, me, 30);
    kill(child, SIGKILL);
    _exit(asleep ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(a, &buf, &len, 0, -1), MPX_EPIPE);
  CU_ASSERT_EQUAL(mpx_test_reap(killer, 30), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(child), -SIGKILL);
  mpx_conn_free(a);
  hang_guard(0);
}

/* ---- objects through codecs ------------------------------------------------ */

static void test_codec_error(void) {
  const mpx_codec_t *raw = NULL, *json = NULL;
  mpx_conn_t *a, *b;
  mpx_obj_t *map, *bytes, *got = NULL;

  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&raw, "raw"), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&json, "json"), 0);
  pair(&a, &b, true);
  map = mpx_obj_map(2);
  mpx_obj_map_set_str(map, "k", mpx_obj_int(1));
  mpx_obj_map_set_str(map, "s", mpx_obj_str("x", 1));
  bytes = mpx_obj_bytes("hello", 5);
  /* raw carries bytes only: an error, and nothing written. */
  CU_ASSERT_EQUAL(mpx_conn_send_obj(a, raw, map, 1), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "raw"));
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0.05), MPX_ETIMEDOUT);
  {
    char ch;
    CU_ASSERT_EQUAL(recv(mpx_conn_fileno(b), &ch, 1, MSG_DONTWAIT), -1);
  }
  /* What it can carry goes through. */
  CU_ASSERT_EQUAL(mpx_conn_send_obj(a, raw, bytes, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_obj(b, raw, &got, 1), 0);
  CU_ASSERT(got != NULL && mpx_obj_equal(got, bytes));
  mpx_obj_release(got);
  CU_ASSERT_EQUAL(mpx_conn_send_obj(a, json, map, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_obj(b, json, &got, 1), 0);
  CU_ASSERT(got != NULL && mpx_obj_equal(got, map));
  mpx_obj_release(got);
  /* A message the codec rejects is consumed; the next one is fine. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "{not json", 9, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_obj(a, json, map, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_recv_obj(b, json, &got, 1), MPX_ECODEC);
  CU_ASSERT_PTR_NULL(got);
  CU_ASSERT_EQUAL(mpx_conn_recv_obj(b, json, &got, 1), 0);
  CU_ASSERT(got != NULL && mpx_obj_equal(got, map));
  mpx_obj_release(got);
  mpx_obj_release(map);
  mpx_obj_release(bytes);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

/* ---- sending: batches, timeouts, arguments ------------------------------- */

static void test_batch(void) {
  enum { N = 1000 };
  mpx_conn_t *a, *b;
  mpx_conn_buf_t *msgs = calloc(N, sizeof *msgs);
  size_t sent = 0;
  int ok = 1;

  pair(&a, &b, true);
  for (int i = 0; i < N; i++) {
    msgs[i].len = (size_t)(i % 50);
    msgs[i].data = mpx_test_pattern(msgs[i].len, (unsigned)i);
  }
  CU_ASSERT_EQUAL(mpx_conn_send_batch(a, msgs, N, &sent, 5), 0);
  CU_ASSERT_EQUAL(sent, N);
  for (int i = 0; i < N && ok; i++)
    ok = recv_pattern(b, (size_t)(i % 50), (unsigned)i, 1);
  CU_ASSERT(ok);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_conn_send_batch(a, msgs, 0, &sent, 0), 0);
  CU_ASSERT_EQUAL(sent, 0);
  for (int i = 0; i < N; i++) free((void *)msgs[i].data);
  free(msgs);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

/* The child reads `count` messages of `size` bytes (seeds 0, 1, ...),
 * then "end", then EOF. Exit 0 when exactly that arrived. */
static pid_t fork_reader(mpx_conn_t *mine, mpx_conn_t *theirs, int count,
                         size_t size) {
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    void *buf;
    size_t len;
    mpx_conn_free(mine);
    for (int i = 0; i < count; i++)
      if (!recv_pattern(theirs, size, (unsigned)i, 30)) _exit(10);
    if (mpx_conn_recv_bytes(theirs, &buf, &len, 0, 30) != 0) _exit(11);
    if (len != 3 || memcmp(buf, "end", 3) != 0) _exit(12);
    free(buf);
    if (mpx_conn_recv_bytes(theirs, &buf, &len, 0, 30) != MPX_EPIPE) _exit(13);
    _exit(0);
  }
  mpx_conn_free(theirs);
  return pid;
}

static void test_send_timeout(void) {
  mpx_conn_t *a, *b;
  int count = 0, rc;
  uint8_t *big;
  const size_t bigsz = 4 * MiB;
  pid_t pid;

  /* Fill the socket with 1000-byte messages: the send that finds no room
   * returns ETIMEDOUT and sends nothing of its message, so the reader
   * sees exactly `count` of them, then "end". */
  pair(&a, &b, true);
  for (;;) {
    uint8_t *p = mpx_test_pattern(1000, (unsigned)count);
    rc = mpx_conn_send_bytes(a, p, 1000, 0);
    free(p);
    if (rc != 0) break;
    count++;
  }
  CU_ASSERT_EQUAL(rc, MPX_ETIMEDOUT);
  CU_ASSERT(count > 10);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "end", 3, 0.05), MPX_ETIMEDOUT);
  pid = fork_reader(a, b, count, 1000);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "end", 3, -1), 0);
  mpx_conn_free(a);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);

  /* A large message that times out half-way is committed: its tail is
   * copied (the caller may reuse its buffer at once), later sends wait
   * for it, and flush pushes it out. */
  pair(&a, &b, true);
  big = mpx_test_pattern(bigsz, 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, big, bigsz, 0.05), 0);
  memset(big, 0, bigsz);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "x", 1, 0.05), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_conn_flush(a, 0), MPX_ETIMEDOUT);
  pid = fork_reader(a, b, 1, bigsz);
  CU_ASSERT_EQUAL(mpx_conn_flush(a, -1), 0);
  CU_ASSERT_EQUAL(mpx_conn_flush(a, 0), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "end", 3, -1), 0);
  mpx_conn_free(a);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  free(big);
}

static void test_flags_and_close(void) {
  mpx_conn_t *a, *b, *r, *w, *c;
  int sv[2], udp, fd;
  void *buf;
  size_t len;

  pair(&r, &w, false);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(r, "x", 1, 0), MPX_EBADF);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(w, &buf, &len, 0, 0), MPX_EBADF);
  CU_ASSERT_EQUAL(mpx_conn_poll(w, 0), MPX_EBADF);
  CU_ASSERT(fcntl(mpx_conn_fileno(r), F_GETFL) & O_NONBLOCK);
  CU_ASSERT(fcntl(mpx_conn_fileno(w), F_GETFD) & FD_CLOEXEC);
  pair(&a, &b, true);
  CU_ASSERT(mpx_conn_readable(a) && mpx_conn_writable(a));
  CU_ASSERT_FALSE(fcntl(mpx_conn_fileno(a), F_GETFL) & O_NONBLOCK);
  CU_ASSERT(fcntl(mpx_conn_fileno(a), F_GETFD) & FD_CLOEXEC);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(a, "x", 1, NAN), MPX_EINVAL);
  /* send_bytes_at: Python's offset and size. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes_at(a, "0123456789", 10, 2, 3, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes_at(a, "0123456789", 10, 8, MPX_CONN_REST,
                                         1), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes_at(a, "0123456789", 10, 10,
                                         MPX_CONN_REST, 1), 0);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes_at(a, "0123456789", 10, 11, 0, 1),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes_at(a, "0123456789", 10, 5, 6, 1),
                  MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 3 && memcmp(buf, "234", 3) == 0);
  free(buf);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 2 && memcmp(buf, "89", 3) == 0); /* NUL-terminated */
  free(buf);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), 0);
  CU_ASSERT_EQUAL(len, 0);
  free(buf);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), MPX_ETIMEDOUT);
  /* Close: the handle stays, every call says closed. */
  CU_ASSERT_EQUAL(mpx_conn_close(r), 0);
  CU_ASSERT_TRUE(mpx_conn_closed(r));
  CU_ASSERT_FALSE(mpx_conn_readable(r));
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(r, &buf, &len, 0, 0), MPX_ECLOSED);
  CU_ASSERT_EQUAL(mpx_conn_poll(r, 0), MPX_ECLOSED);
  CU_ASSERT_EQUAL(mpx_conn_fileno(r), MPX_ECLOSED);
  CU_ASSERT_EQUAL(mpx_conn_close(r), 0);
  mpx_conn_free(r);
  mpx_conn_free(w);
  mpx_conn_free(NULL);

  /* from_fd: direction flags, ownership, refusals. */
  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  CU_ASSERT_EQUAL(mpx_conn_from_fd(&c, sv[0], MPX_CONN_READABLE), 0);
  CU_ASSERT_EQUAL(mpx_conn_fileno(c), sv[0]);
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(c, "x", 1, 0), MPX_EBADF);
  write_raw(sv[1], "\0\0\0\1z", 5);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &len, 0, 1), 0);
  CU_ASSERT(len == 1 && ((char *)buf)[0] == 'z');
  free(buf);
  mpx_conn_free(c);
  CU_ASSERT_EQUAL(fcntl(sv[0], F_GETFD), -1); /* closed by the handle */
  close(sv[1]);
  CU_ASSERT_EQUAL(mpx_conn_from_fd(&c, -1, 0), MPX_EBADF);
  CU_ASSERT_PTR_NULL(c);
  udp = socket(AF_INET, SOCK_DGRAM, 0);
  CU_ASSERT_EQUAL(mpx_conn_from_fd(&c, udp, 0), MPX_EINVAL);
  CU_ASSERT(fcntl(udp, F_GETFD) >= 0); /* still the caller's */
  close(udp);
  CU_ASSERT_EQUAL(mpx_conn_from_fd(&c, 0, 8), MPX_EINVAL);
  /* TCP gets TCP_NODELAY. */
  {
    struct sockaddr_in sa = {0};
    socklen_t sl = sizeof sa;
    int lst = socket(AF_INET, SOCK_STREAM, 0), one = 0;
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CU_ASSERT_EQUAL_FATAL(bind(lst, (struct sockaddr *)&sa, sizeof sa), 0);
    CU_ASSERT_EQUAL_FATAL(listen(lst, 1), 0);
    CU_ASSERT_EQUAL_FATAL(getsockname(lst, (struct sockaddr *)&sa, &sl), 0);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    CU_ASSERT_EQUAL(mpx_conn_from_fd(&c, fd, 0), 0);
    sl = sizeof one;
    getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, &sl);
    CU_ASSERT_EQUAL(one, 1);
    mpx_conn_free(c);
    close(lst);
  }
  mpx_conn_free(a);
  mpx_conn_free(b);
}

static void test_bad_header(void) {
  mpx_conn_t *a, *b;
  void *buf;
  size_t len;
  static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff, 0x80, 0, 0, 0,
                                 0,    0,    0,    0};

  pair(&a, &b, true);
  write_raw(mpx_conn_fileno(a), "\x80\0\0\0", 4);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), MPX_EPROTO);
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0), 0); /* the outcome is known */
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), MPX_EPROTO);
  mpx_conn_free(b);
  mpx_conn_free(a);
  pair(&a, &b, true);
  write_raw(mpx_conn_fileno(a), huge, sizeof huge);
  CU_ASSERT_EQUAL(mpx_conn_recv_bytes(b, &buf, &len, 0, 1), MPX_EPROTO);
  mpx_conn_free(b);
  mpx_conn_free(a);
}

/* In a shared page: the child that ends the last receive counts along. */
static volatile int *alarms;
static void on_alarm_count(int sig) {
  (void)sig;
  (*alarms)++;
}

/* Signals every 10 ms (without SA_RESTART) while receives and waits block:
 * nothing returns EINTR, and timeouts still end on time. */
static void test_eintr(void) {
  mpx_conn_t *a, *b;
  struct sigaction sa = {0}, old;
  struct itimerval it = {{0, 10000}, {0, 10000}}, off = {{0, 0}, {0, 0}};
  mpx_wait_item_t item;
  size_t n_ready;
  static const size_t sz[1] = {5};
  double t0, dt;
  pid_t pid;

  pair(&a, &b, true);
  sa.sa_handler = on_alarm_count;
  sigemptyset(&sa.sa_mask);
  alarms = mmap(NULL, sizeof *alarms, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CU_ASSERT_FATAL(alarms != MAP_FAILED);
  *alarms = 0;
  sigaction(SIGALRM, &sa, &old);
  setitimer(ITIMER_REAL, &it, NULL);
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_poll(b, 0.2), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT(dt >= 0.2 && dt < 2.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  item = mpx_wait_conn(b);
  t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_conn_wait(&item, 1, 0.1, NULL, &n_ready), MPX_ETIMEDOUT);
  dt = mpx_test_now() - t0;
  CU_ASSERT(dt >= 0.1 && dt < 1.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  /* The child sends once the receive has slept through 10 signals (2: we
   * never slept in it, 3: the signals stopped, within 30 s). */
  pid_t me = getpid();
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    setitimer(ITIMER_REAL, &off, NULL);
    if (!mpx_test_wait_until(mpx_test_asleep, me, 30)) _exit(2);
    int base = *alarms;
    for (double end = mpx_test_now() + 30; *alarms < base + 10; mpx_test_sleep(0.001))
      if (mpx_test_now() > end) _exit(3);
    _exit(send_pattern(a, sz[0], 5) == 0 ? 0 : 1);
  }
  CU_ASSERT(recv_pattern(b, 5, 5, -1));
  setitimer(ITIMER_REAL, &off, NULL);
  sigaction(SIGALRM, &old, NULL);
  CU_ASSERT(*alarms > 10);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  munmap((void *)alarms, sizeof *alarms);
  mpx_conn_free(a);
  mpx_conn_free(b);
}

/* Arena blocks by reference: a child loans 1 MiB blocks, writes them and
 * sends their references; the parent reads them in place, owns them, and
 * releases them. A block whose sender died before it was taken is freed by
 * reclaim and reported stale; a message that is not a reference is
 * MPX_EPROTO. */
static void test_send_ref(void) {
  mpx_arena_t *a;
  mpx_arena_opts_t ao = {.size = 16 * MiB};
  CU_ASSERT_EQUAL_FATAL(mpx_arena_new(&a, &ao), 0);
  mpx_conn_t *p, *c;
  CU_ASSERT_EQUAL_FATAL(mpx_pipe(&p, &c, true), 0);
  pid_t pid = fork();
  if (pid == 0) {
    mpx_conn_free(p);
    for (unsigned i = 0; i < 4; i++) {
      mpx_ref_t r;
      if (mpx_arena_alloc(a, MiB, 5, &r) != 0) _exit(1);
      uint8_t *d = mpx_arena_ptr(a, r);
      for (size_t j = 0; j < MiB; j++) d[j] = (uint8_t)(j * 7 + i);
      if (mpx_conn_send_ref(c, a, r, MiB - i, 5) != 0) _exit(2);
    }
    mpx_ref_t r;
    if (mpx_arena_alloc(a, 64, 5, &r) != 0) _exit(3);
    if (mpx_conn_send_ref(c, a, r, 65536, 5) != MPX_EINVAL) _exit(4);
    if (mpx_conn_send_ref(c, a, r, 64, 5) != 0) _exit(5); /* then dies */
    char go[4];
    size_t n;
    if (mpx_conn_recv_bytes_into(c, go, sizeof go, &n, 30) != 0) _exit(6);
    if (mpx_conn_send_bytes(c, "not a ref", 9, 5) != 0) _exit(7);
    _exit(0);
  }
  mpx_conn_free(c);
  for (unsigned i = 0; i < 4; i++) {
    mpx_ref_t r;
    const void *d;
    size_t n;
    CU_ASSERT_EQUAL_FATAL(mpx_conn_recv_ref(p, a, &r, &d, &n, 5), 0);
    CU_ASSERT_TRUE(mpx_test_pattern_ok(d, n, MiB - i, i));
    CU_ASSERT_EQUAL(mpx_arena_owner(a, r), getpid());
    CU_ASSERT_EQUAL(mpx_arena_release(a, r), 0);
  }
  /* The sender dies with its last block still in flight. */
  CU_ASSERT_EQUAL(mpx_conn_send_bytes(p, "go", 2, 5), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_arena_reclaim(a, pid), 1);
  mpx_ref_t r;
  const void *d;
  size_t n;
  CU_ASSERT_EQUAL(mpx_conn_recv_ref(p, a, &r, &d, &n, 5), MPX_ESTALE);
  CU_ASSERT_EQUAL(mpx_conn_recv_ref(p, a, &r, &d, &n, 5), MPX_EPROTO);
  CU_ASSERT_EQUAL(mpx_conn_recv_ref(p, a, &r, &d, &n, 5), MPX_EPIPE);
  mpx_arena_stats_t st;
  mpx_arena_stats(a, &st);
  CU_ASSERT_EQUAL(st.n_allocated, 0);
  CU_ASSERT_EQUAL(mpx_arena_check(a), 0);
  mpx_conn_free(p);
  mpx_arena_free(a);
}

MPX_TEST_MAIN("conn", MPX_TEST(test_python_interop), MPX_TEST(test_send_ref),
              MPX_TEST(test_long_form_header), MPX_TEST(test_sizes_duplex),
              MPX_TEST(test_sizes_simplex), MPX_TEST(test_into_too_short),
              MPX_TEST(test_maxlength), MPX_TEST(test_recv_timeout_partial),
              MPX_TEST(test_poll_timeout), MPX_TEST(test_wait_timeout),
              MPX_TEST(test_wait_mixed), MPX_TEST(test_eof_after_close),
              MPX_TEST(test_peer_killed), MPX_TEST(test_codec_error),
              MPX_TEST(test_batch), MPX_TEST(test_send_timeout),
              MPX_TEST(test_flags_and_close), MPX_TEST(test_bad_header),
              MPX_TEST(test_eintr))
