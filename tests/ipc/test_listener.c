/* Listeners, clients and the authkey challenge: the reference's test
 * vectors byte for byte (ipc/auth.c, internal: this suite links libmpx
 * statically), the raw frames of both handshake forms, mpx against mpx
 * and against CPython's own multiprocessing.connection Listener and
 * Client (py_listener.py; python3, and every CPython 3.12+ found) over
 * TCP, Unix and abstract addresses, wrong keys on either side, oversized
 * handshake messages, peers that close or go quiet mid-handshake, and the
 * address rules (port 0, stale socket files, bad addresses). Children report through exit codes; the parent
 * asserts and reaps every child. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "mpx.h"
#include "ipc/auth.h"
#include "../mpx_test.h"
#include "pythons.h"

static const char KEY[] = "secret";
#define KEYLEN (sizeof KEY - 1)
static const char KEYHEX[] = "736563726574"; /* b"secret" */
static const char BADHEX[] = "736563726575"; /* b"secreu" */

/* Exit codes of the mpx client children (and py_listener.py: 0, 1, 3). */
enum {
  XC_OK = 0,
  XC_AUTH = 3,     /* MPX_EAUTH / AuthenticationError */
  XC_TIMEDOUT = 4,
  XC_PIPE = 5,
  XC_REFUSED = 6,
  XC_OTHER = 7,    /* any other error */
  XC_EXCHANGE = 8  /* connected, but the messages after were wrong */
};

static int code_of(int rc) {
  switch (rc) {
  case 0: return XC_OK;
  case MPX_EAUTH: return XC_AUTH;
  case MPX_ETIMEDOUT: return XC_TIMEDOUT;
  case MPX_EPIPE: return XC_PIPE;
  case MPX_ECONNREFUSED: return XC_REFUSED;
  default: return XC_OTHER;
  }
}

static int hex_eq(const void *p, size_t n, const char *hex) {
  char buf[512];
  if (n * 2 + 1 > sizeof buf || strlen(hex) != n * 2) return 0;
  for (size_t i = 0; i < n; i++)
    snprintf(buf + 2 * i, 3, "%02x", ((const unsigned char *)p)[i]);
  return memcmp(buf, hex, n * 2) == 0;
}

/* A scratch directory for socket files, removed with what is left in it. */
static char tmpdir[64];

static void tmp_make(void) {
  strcpy(tmpdir, "/tmp/mpx-listener-XXXXXX");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));
}

static void tmp_remove(void) {
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
  CU_ASSERT_EQUAL(system(cmd), 0);
}

/* The three address kinds, with port 0 / a path in tmpdir / a name
 * unique to this process. */
static void address_of(int kind, char *out, size_t cap) {
  static unsigned seq;
  if (kind == 0) snprintf(out, cap, "tcp://127.0.0.1:0");
  else if (kind == 1) snprintf(out, cap, "unix:%s/s%u", tmpdir, seq++);
  else snprintf(out, cap, "unix:@mpx-test-listener-%d-%u", (int)getpid(), seq++);
}

/* ---- the two roles of the exchange after a handshake --------------------- */

/* Client: sends "client-hello", expects "server-hello". */
static int client_exchange(mpx_conn_t *c) {
  void *buf = NULL;
  size_t n = 0;
  int ok = mpx_conn_send_bytes(c, "client-hello", 12, 5) == 0 &&
           mpx_conn_recv_bytes(c, &buf, &n, 0, 5) == 0 && n == 12 &&
           memcmp(buf, "server-hello", 12) == 0;
  free(buf);
  return ok;
}

/* Server: expects "client-hello", answers "server-hello", then EOF. */
static int server_exchange(mpx_conn_t *c) {
  void *buf = NULL;
  size_t n = 0;
  int ok = mpx_conn_recv_bytes(c, &buf, &n, 0, 10) == 0 && n == 12 &&
           memcmp(buf, "client-hello", 12) == 0 &&
           mpx_conn_send_bytes(c, "server-hello", 12, 5) == 0;
  free(buf);
  buf = NULL;
  if (ok) ok = mpx_conn_recv_bytes(c, &buf, &n, 0, 10) == MPX_EPIPE;
  free(buf);
  return ok;
}

/* A fork child: mpx_client to addr, the client exchange, an X_* code. */
static pid_t fork_client(const char *addr, const void *key, size_t keylen,
                         unsigned flags) {
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    mpx_conn_t *c;
    int rc = mpx_client(&c, addr, key, keylen, flags, 10);
    if (rc != 0) _exit(code_of(rc));
    rc = client_exchange(c) ? XC_OK : XC_EXCHANGE;
    mpx_conn_free(c);
    _exit(rc);
  }
  return pid;
}

/* The listener's side with a client child (mpx's or CPython's) of l:
 * accept within `timeout`, the server exchange, and the child must exit
 * 0 (XC_OK) within that time too. */
static void serve_client(mpx_listener_t *l, pid_t pid, double timeout) {
  mpx_conn_t *c = NULL;
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, timeout), 0);
  if (c != NULL) {
    CU_ASSERT_TRUE(server_exchange(c));
    mpx_conn_free(c);
  }
  CU_ASSERT_EQUAL(mpx_test_reap(pid, timeout), XC_OK);
}

/* PY py_listener.py MODE ADDR KEYHEX; its stdout on *out when asked. */
static pid_t spawn_py(const char *py, const char *mode, const char *addr,
                      const char *keyhex, int *out) {
  const char *args[] = {mode, addr, keyhex, NULL};
  return spawn_helper(py, "py_listener.py", args, out);
}

/* ---- the challenge as pure functions --------------------------------------- */

static void test_vectors(void) {
  /* The reference's table, authkey b"secret". */
  unsigned char msg[128], out[MPX__AUTH_ANSWER_MAX];
  mpx__challenge_t ch;
  size_t n = 0;

  /* Legacy: "#CHALLENGE#" + 00..13, answered with a bare HMAC-MD5. */
  memcpy(msg, "#CHALLENGE#", 11);
  for (int i = 0; i < 20; i++) msg[11 + i] = (unsigned char)i;
  CU_ASSERT_TRUE(hex_eq(msg, 31, "234348414c4c454e474523"
                                 "000102030405060708090a0b0c0d0e0f10111213"));
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, msg, 31, out, sizeof out, &n), 0);
  CU_ASSERT_TRUE(hex_eq(out, n, "7defa9cc46abc3583325d17ccda75190"));
  memset(&ch, 0, sizeof ch);
  for (int i = 0; i < 20; i++) ch.m[i] = (unsigned char)i;
  ch.m_len = 20;
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, out, 16), 0);
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, "secreu", KEYLEN, out, 16), MPX_EAUTH);

  /* Current: "#CHALLENGE#{sha256}" + 00..27; the answer names the digest
   * and covers the prefix too. */
  memcpy(msg + 11, "{sha256}", 8);
  for (int i = 0; i < 40; i++) msg[19 + i] = (unsigned char)i;
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, msg, 59, out, sizeof out, &n), 0);
  CU_ASSERT_TRUE(hex_eq(out, n, "7b7368613235367d"
      "fc57fbe650d6124b98215e7b5d197d5807ad69982d275a9735ea2d56f1fa6989"));
  memcpy(ch.m, msg + 11, 48);
  ch.m_len = 48;
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, out, n), 0);
  /* Every byte matters, the digest name's too. */
  for (size_t i = 0; i < n; i++) {
    out[i] ^= 0x01;
    CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, out, n), MPX_EAUTH);
    out[i] ^= 0x01;
  }
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, out, n - 1), MPX_EAUTH);
  /* What CPython 3.11 answers to this challenge: HMAC-MD5 over all 48
   * bytes, no prefix (value from Python's hmac). */
  {
    static const unsigned char md5_48[16] = {
        0x8e, 0x48, 0xd2, 0xbb, 0x34, 0x9b, 0x4b, 0x72,
        0xb9, 0x38, 0x29, 0x99, 0xed, 0x5b, 0x62, 0xeb};
    CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, md5_48, 16), 0);
  }
}

/* The other digests CPython 3.12 accepts, values from Python's hmac. */
static void test_vectors_other_digests(void) {
  static const struct {
    const char *name, *mac;
  } v[] = {
      {"md5", "e8928e8cca3ace2d777017168dc6a0b2"},
      {"sha384", "bae78a3376369f7b803a8473318a9b7062495b47434159ac84fc92ddb33c51b2"
                 "77c44c3edd9a5f9cb7d628f21abe2665"},
      {"sha3_256", "82e8fa62f363295b6655abecf0e98e510224c559e9745af9741c357aec358f90"},
      {"sha3_384", "bfbe71d4e622f58ebf6cbe049af4c8fe518645b482915af0940d678c37c0b46d"
                   "d1a2a448f9ee5141c91bba42b46a7862"},
  };
  for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
    unsigned char msg[128], out[MPX__AUTH_ANSWER_MAX];
    char want[256];
    size_t n = 0, pre = (size_t)snprintf((char *)msg + 11, 20, "{%s}", v[k].name);
    mpx__challenge_t ch;
    memcpy(msg, "#CHALLENGE#", 11);
    for (int i = 0; i < 40; i++) msg[11 + pre + (size_t)i] = (unsigned char)i;
    CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, msg, 11 + pre + 40, out,
                                     sizeof out, &n), 0);
    CU_ASSERT_EQUAL(n, pre + strlen(v[k].mac) / 2);
    CU_ASSERT_EQUAL(memcmp(out, msg + 11, pre), 0);
    snprintf(want, sizeof want, "%s", v[k].mac);
    CU_ASSERT_TRUE(hex_eq(out + pre, n - pre, want));
    memcpy(ch.m, msg + 11, pre + 40);
    ch.m_len = pre + 40;
    CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, out, n), 0);
  }
}

static void test_bad_messages(void) {
  unsigned char out[MPX__AUTH_ANSWER_MAX], msg[128];
  mpx__challenge_t ch;
  size_t n;
  /* No prefix, a short nonce, a digest not on the list, no closing brace. */
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, "#WELCOME#abcdefghijklmnopqrstu",
                                   30, out, sizeof out, &n), MPX_EAUTH);
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, "#CHALLENGE#0123456789012345678",
                                   30, out, sizeof out, &n), MPX_EAUTH);
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, "#CHALLENGE#", 11, out,
                                   sizeof out, &n), MPX_EAUTH);
  memcpy(msg, "#CHALLENGE#{sha1}", 17);
  memset(msg + 17, 'x', 40);
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, msg, 57, out, sizeof out, &n),
                  MPX_EAUTH);
  memcpy(msg, "#CHALLENGE#{sha256", 18);
  memset(msg + 18, 'x', 40);
  CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, msg, 58, out, sizeof out, &n),
                  MPX_EAUTH);
  /* A verifier refuses answers of other shapes. */
  CU_ASSERT_EQUAL(mpx__auth_challenge(&ch, 0, msg, sizeof msg, &n), 0);
  CU_ASSERT_EQUAL(n, 59);
  CU_ASSERT_EQUAL(memcmp(msg, "#CHALLENGE#{sha256}", 19), 0);
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, "", 0), MPX_EAUTH);
  CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, "{sha1}0123456789", 16 + 4),
                  MPX_EAUTH);
  CU_ASSERT_EQUAL(mpx__auth_challenge(&ch, MPX_AUTH_LEGACY, msg, sizeof msg, &n), 0);
  CU_ASSERT_EQUAL(n, 31);
  CU_ASSERT_EQUAL(ch.m_len, 20);
  /* Two challenges never share a nonce. */
  {
    mpx__challenge_t ch2;
    CU_ASSERT_EQUAL(mpx__auth_challenge(&ch2, MPX_AUTH_LEGACY, msg, sizeof msg, &n), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(ch.m, ch2.m, 20), 0);
  }
}

/* ---- raw frames ------------------------------------------------------------- */

static void read_raw(int fd, void *buf, size_t n) {
  size_t got = 0;
  double end = mpx_test_now() + 10;
  while (got < n && mpx_test_now() < end) {
    struct pollfd pf = {fd, POLLIN, 0};
    ssize_t k;
    if (poll(&pf, 1, 100) <= 0) continue;
    k = read(fd, (char *)buf + got, n - got);
    if (k <= 0) break;
    got += (size_t)k;
  }
  CU_ASSERT_EQUAL_FATAL(got, n);
}

static void write_raw(int fd, const void *buf, size_t n) {
  CU_ASSERT_EQUAL_FATAL(write(fd, buf, n), (ssize_t)n);
}

/* Frames a payload as CPython does: 4-byte big-endian length. */
static void write_frame(int fd, const void *p, size_t n) {
  unsigned char h[4] = {(unsigned char)(n >> 24), (unsigned char)(n >> 16),
                        (unsigned char)(n >> 8), (unsigned char)n};
  write_raw(fd, h, 4);
  write_raw(fd, p, n);
}

/* deliver_challenge in a child on one end of a socketpair; the parent
 * plays the peer with raw bytes: the challenge frame's exact header and
 * prefix, then #WELCOME# or #FAILURE# byte for byte. */
static void test_raw_frames(void) {
  for (int legacy = 0; legacy < 2; legacy++) {
    for (int good = 0; good < 2; good++) {
      int sv[2];
      unsigned char hdr[4], body[64], ans[MPX__AUTH_ANSWER_MAX], verdict[13];
      size_t blen = legacy ? 31 : 59, n = 0;
      pid_t pid;
      CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
      pid = fork();
      CU_ASSERT_FATAL(pid >= 0);
      if (pid == 0) {
        mpx_conn_t *c;
        close(sv[1]);
        if (mpx_conn_from_fd(&c, sv[0], 0) != 0) _exit(XC_OTHER);
        _exit(code_of(mpx_conn_deliver_challenge(
            c, KEY, KEYLEN, legacy ? MPX_AUTH_LEGACY : 0, 10)));
      }
      close(sv[0]);
      read_raw(sv[1], hdr, 4);
      CU_ASSERT_TRUE(hex_eq(hdr, 4, legacy ? "0000001f" : "0000003b"));
      read_raw(sv[1], body, blen);
      CU_ASSERT_EQUAL(memcmp(body, legacy ? "#CHALLENGE#" : "#CHALLENGE#{sha256}",
                             legacy ? 11 : 19), 0);
      CU_ASSERT_EQUAL(mpx__auth_answer(good ? KEY : "other", good ? KEYLEN : 5,
                                       body, blen, ans, sizeof ans, &n), 0);
      CU_ASSERT_EQUAL(n, legacy ? 16 : 40);
      write_frame(sv[1], ans, n);
      read_raw(sv[1], verdict, 13);
      CU_ASSERT_TRUE(hex_eq(verdict, 13, good ? "000000092357454c434f4d4523"
                                              : "00000009234641494c55524523"));
      if (!good) { /* then the connection is closed */
        char x;
        CU_ASSERT_EQUAL(read(sv[1], &x, 1), 0);
      }
      CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), good ? XC_OK : XC_AUTH);
      close(sv[1]);
    }
  }
}

/* ---- mpx against mpx --------------------------------------------------------- */

static void test_mpx_both_sides(void) {
  tmp_make();
  for (int kind = 0; kind < 3; kind++) {
    for (unsigned fl = 0; fl < 4; fl++) {
      char addr[160];
      mpx_listener_opts_t o = {.flags = (fl & 1) ? MPX_AUTH_LEGACY : 0};
      mpx_listener_t *l;
      address_of(kind, addr, sizeof addr);
      CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, addr, KEY, KEYLEN, &o), 0);
      if (kind == 0) { /* port 0 resolved to the real one */
        const char *a = mpx_listener_address(l);
        CU_ASSERT_EQUAL(strncmp(a, "tcp://127.0.0.1:", 16), 0);
        CU_ASSERT(atoi(a + 16) > 0);
      } else {
        CU_ASSERT_STRING_EQUAL(mpx_listener_address(l), addr);
      }
      CU_ASSERT(mpx_listener_fileno(l) >= 0);
      serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN,
                                  (fl & 2) ? MPX_AUTH_LEGACY : 0), 10);
      mpx_listener_free(l);
    }
  }
  tmp_remove();
}

/* No key on both sides: no handshake at all, the first frame is data. */
static void test_no_key(void) {
  mpx_listener_t *l;
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", NULL, 0, NULL), 0);
  serve_client(l, fork_client(mpx_listener_address(l), NULL, 0, 0), 10);
  mpx_listener_free(l);
}

/* A wrong key fails on both sides, and the listener then serves the next
 * client. Also an empty (non-NULL) key against a real one. */
static void test_mpx_wrong_key(void) {
  mpx_listener_t *l;
  mpx_conn_t *c;
  pid_t pid;
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, NULL), 0);
  pid = fork_client(mpx_listener_address(l), "secreu", KEYLEN, 0);
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 10), MPX_EAUTH);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), XC_AUTH);
  pid = fork_client(mpx_listener_address(l), "", 0, 0);
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 10), MPX_EAUTH);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), XC_AUTH);
  serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN, 0), 10);
  mpx_listener_free(l);
}

/* ---- against CPython ----------------------------------------------------------- */

/* CPython's Client against the mpx listener, sending the current and the
 * legacy challenge, on the three kinds of address. */
static void test_python_client(void) {
  find_pythons();
  tmp_make();
  for (int k = 0; k < n_pythons * 3; k++) {
    int py = k / 3, kind = k % 3; /* each CPython, each kind of address */
    for (int legacy = 0; legacy < 2; legacy++) {
      char addr[160];
      mpx_listener_opts_t o = {.flags = legacy ? MPX_AUTH_LEGACY : 0};
      mpx_listener_t *l;
      address_of(kind, addr, sizeof addr);
      CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, addr, KEY, KEYLEN, &o), 0);
      serve_client(l, spawn_py(pythons[py], "client", mpx_listener_address(l),
                               KEYHEX, NULL), 20);
      mpx_listener_free(l);
    }
  }
  tmp_remove();
}

/* The mpx client against CPython's Listener, both challenge forms. */
static void test_python_listener(void) {
  find_pythons();
  tmp_make();
  for (int k = 0; k < n_pythons * 3; k++) {
    int py = k / 3, kind = k % 3; /* each CPython, each kind of address */
    for (int legacy = 0; legacy < 2; legacy++) {
      char addr[160], bound[160];
      mpx_conn_t *c = NULL;
      int out;
      pid_t pid;
      address_of(kind, addr, sizeof addr);
      pid = spawn_py(pythons[py], "server", addr, KEYHEX, &out);
      CU_ASSERT_TRUE(read_line(out, bound, sizeof bound, 20));
      if (kind == 0) {
        CU_ASSERT_NOT_EQUAL(strcmp(bound, "tcp://127.0.0.1:0"), 0);
      } else {
        CU_ASSERT_STRING_EQUAL(bound, addr);
      }
      CU_ASSERT_EQUAL(mpx_client(&c, bound, KEY, KEYLEN,
                                 legacy ? MPX_AUTH_LEGACY : 0, 20), 0);
      if (c != NULL) {
        CU_ASSERT_TRUE(client_exchange(c));
        mpx_conn_free(c);
      }
      CU_ASSERT_EQUAL(mpx_test_reap(pid, 20), 0);
      close(out);
    }
  }
  tmp_remove();
}

/* The handshake with CPython's Client step by step: mpx challenges in the
 * {sha256} form; python3.11 answers with a bare 16-byte HMAC-MD5 over the
 * whole of it (3.12+: {sha256} and 32 bytes), which verifies; its own
 * challenge is the legacy 20-byte one (3.12+: {sha256}). */
static void test_python_answers_sha256_challenge(void) {
  find_pythons();
  for (int py = 0; py < n_pythons; py++) {
    int minor = minors[py];
    mpx_listener_t *l;
    mpx_conn_t *c = NULL;
    mpx__challenge_t ch;
    unsigned char msg[128], ans[MPX__AUTH_ANSWER_MAX];
    void *buf = NULL;
    size_t n = 0, len = 0;
    pid_t pid;

    /* No key on the listener: the suite runs the steps itself. */
    CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", NULL, 0, NULL), 0);
    pid = spawn_py(pythons[py], "client", mpx_listener_address(l), KEYHEX, NULL);
    CU_ASSERT_EQUAL_FATAL(mpx_listener_accept(l, &c, 20), 0);
    CU_ASSERT_EQUAL(mpx__auth_challenge(&ch, 0, msg, sizeof msg, &n), 0);
    CU_ASSERT_EQUAL(n, 59);
    CU_ASSERT_EQUAL(mpx_conn_send_bytes(c, msg, n, 5), 0);
    CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &len, 256, 20), 0);
    CU_ASSERT_EQUAL(len, minor >= 12 ? 40 : 16);
    CU_ASSERT_EQUAL(mpx__auth_verify(&ch, KEY, KEYLEN, buf, len), 0);
    free(buf);
    buf = NULL;
    CU_ASSERT_EQUAL(mpx_conn_send_bytes(c, "#WELCOME#", 9, 5), 0);
    CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &len, 256, 20), 0);
    CU_ASSERT_EQUAL(len, minor >= 12 ? 59u : 31u);
    CU_ASSERT_EQUAL(mpx__auth_answer(KEY, KEYLEN, buf, len, ans, sizeof ans, &n), 0);
    free(buf);
    buf = NULL;
    CU_ASSERT_EQUAL(mpx_conn_send_bytes(c, ans, n, 5), 0);
    CU_ASSERT_EQUAL(mpx_conn_recv_bytes(c, &buf, &len, 256, 20), 0);
    CU_ASSERT_TRUE(len == 9 && memcmp(buf, "#WELCOME#", 9) == 0);
    free(buf);
    CU_ASSERT_TRUE(server_exchange(c));
    mpx_conn_free(c);
    CU_ASSERT_EQUAL(mpx_test_reap(pid, 20), 0);
    mpx_listener_free(l);
  }
}

/* A wrong key against CPython, both ways: MPX_EAUTH on the mpx side,
 * AuthenticationError (exit 3) on Python's; the mpx listener then
 * accepts the next, good, Python client. */
static void test_python_wrong_key(void) {
  mpx_listener_t *l;
  mpx_conn_t *c = NULL;
  char bound[160];
  int out;
  pid_t pid;

  find_pythons();
  for (int py = 0; py < n_pythons; py++) {
    for (int legacy = 0; legacy < 2; legacy++) {
      mpx_listener_opts_t o = {.flags = legacy ? MPX_AUTH_LEGACY : 0};
      CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, &o), 0);
      pid = spawn_py(pythons[py], "client", mpx_listener_address(l), BADHEX, NULL);
      CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 20), MPX_EAUTH);
      CU_ASSERT_PTR_NULL(c);
      CU_ASSERT_EQUAL(mpx_test_reap(pid, 20), 3);
      serve_client(l, spawn_py(pythons[py], "client", mpx_listener_address(l),
                               KEYHEX, NULL), 20);
      mpx_listener_free(l);
    }

    pid = spawn_py(pythons[py], "server", "tcp://127.0.0.1:0", BADHEX, &out);
    CU_ASSERT_TRUE(read_line(out, bound, sizeof bound, 20));
    CU_ASSERT_EQUAL(mpx_client(&c, bound, KEY, KEYLEN, 0, 20), MPX_EAUTH);
    CU_ASSERT_PTR_NULL(c);
    CU_ASSERT_EQUAL(mpx_test_reap(pid, 20), 3);
    close(out);
  }
}

/* ---- misbehaving peers --------------------------------------------------------- */

static int raw_connect(const char *addr) {
  /* tcp://127.0.0.1:PORT only */
  struct sockaddr_in sa = {.sin_family = AF_INET};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CU_ASSERT_FATAL(fd >= 0);
  sa.sin_port = htons((uint16_t)atoi(strrchr(addr, ':') + 1));
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CU_ASSERT_EQUAL_FATAL(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* A raw TCP server on 127.0.0.1 (port 0): its fd and address. */
static int raw_listen(char *addr, size_t cap) {
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof sa;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  CU_ASSERT_FATAL(fd >= 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  CU_ASSERT_EQUAL_FATAL(listen(fd, 8), 0);
  CU_ASSERT_EQUAL_FATAL(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  snprintf(addr, cap, "tcp://127.0.0.1:%u", ntohs(sa.sin_port));
  return fd;
}

/* The challenge of the listener, read raw: the frame's payload length. */
static size_t skip_challenge(int fd) {
  unsigned char hdr[4], body[64];
  size_t n;
  read_raw(fd, hdr, 4);
  n = (size_t)hdr[3];
  CU_ASSERT_FATAL(n <= sizeof body);
  read_raw(fd, body, n);
  return n;
}

/* Oversized handshake messages (more than 256 bytes) are MPX_EAUTH: an
 * answer to the listener, a challenge to the client. The listener goes
 * on with the next client. */
static void test_oversized(void) {
  static unsigned char big[300];
  mpx_listener_t *l;
  mpx_conn_t *c = NULL;
  char addr[64];
  pid_t pid;
  int fd, lfd;

  memset(big, 'x', sizeof big);
  memcpy(big, "#CHALLENGE#", 11);
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, NULL), 0);
  fd = raw_connect(mpx_listener_address(l));
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) { /* the peer: reads the challenge, answers 300 bytes */
    unsigned char hdr[4] = {0, 0, 1, 44}, body[64];
    if (read(fd, hdr, 4) != 4 || read(fd, body, hdr[3]) != hdr[3]) _exit(1);
    hdr[2] = 1, hdr[3] = 44;
    if (write(fd, hdr, 4) != 4 || write(fd, big, 300) != 300) _exit(2);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 10), MPX_EAUTH);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), 0);
  close(fd);
  serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN, 0), 10);
  mpx_listener_free(l);

  /* A server whose challenge is 300 bytes long. */
  lfd = raw_listen(addr, sizeof addr);
  pid = fork_client(addr, KEY, KEYLEN, 0);
  fd = accept(lfd, NULL, NULL);
  CU_ASSERT_FATAL(fd >= 0);
  write_frame(fd, big, sizeof big);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), XC_AUTH);
  close(fd);
  close(lfd);
}

/* A peer that closes mid-handshake: MPX_EPIPE on the listener (which then
 * serves the next client) and on the client; after its answer, a server
 * that closes instead of welcoming is a refusal: MPX_EAUTH. */
static void test_peer_closes(void) {
  mpx_listener_t *l;
  mpx_conn_t *c = NULL;
  char addr[64];
  pid_t pid;
  int fd, lfd;

  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, NULL), 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) { /* reads the challenge, then hangs up */
    fd = raw_connect(mpx_listener_address(l));
    _exit(skip_challenge(fd) == 59 ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 10), MPX_EPIPE);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), 0);
  CU_ASSERT_PTR_NULL(c);
  serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN, 0), 10);
  mpx_listener_free(l);

  lfd = raw_listen(addr, sizeof addr);
  /* Closes before its challenge. */
  pid = fork_client(addr, KEY, KEYLEN, 0);
  fd = accept(lfd, NULL, NULL);
  CU_ASSERT_FATAL(fd >= 0);
  close(fd);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), XC_PIPE);
  /* Closes after the client's answer, without a verdict. */
  pid = fork_client(addr, KEY, KEYLEN, 0);
  fd = accept(lfd, NULL, NULL);
  CU_ASSERT_FATAL(fd >= 0);
  {
    static const unsigned char ch[31] = "#CHALLENGE#abcdefghijklmnopqrst";
    unsigned char hdr[4], ans[16];
    write_frame(fd, ch, sizeof ch);
    read_raw(fd, hdr, 4);
    CU_ASSERT_TRUE(hex_eq(hdr, 4, "00000010"));
    read_raw(fd, ans, 16);
  }
  close(fd);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), XC_AUTH);
  close(lfd);
}

/* A peer that goes quiet: MPX_ETIMEDOUT within the timeout, on both
 * sides, and for a listener nobody connects to. */
static void test_quiet_peer(void) {
  mpx_listener_t *l;
  mpx_conn_t *c = NULL;
  char addr[64];
  int fd, lfd;

  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, NULL), 0);
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 0.2), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, NAN), MPX_EINVAL);
  fd = raw_connect(mpx_listener_address(l));
  CU_ASSERT_EQUAL(mpx_listener_accept(l, &c, 0.3), MPX_ETIMEDOUT);
  CU_ASSERT_PTR_NULL(c);
  close(fd);
  serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN, 0), 10);
  mpx_listener_free(l);

  /* A server that accepts and never speaks. */
  lfd = raw_listen(addr, sizeof addr);
  CU_ASSERT_EQUAL(mpx_client(&c, addr, KEY, KEYLEN, 0, 0.3), MPX_ETIMEDOUT);
  CU_ASSERT_PTR_NULL(c);
  close(lfd);
}

/* ---- addresses ------------------------------------------------------------------ */

static void test_addresses(void) {
  static const char *bad[] = {
      "", "tcp://", "tcp://127.0.0.1", "tcp://127.0.0.1:", "tcp://127.0.0.1:x",
      "tcp://127.0.0.1:65536", "tcp://127.0.0.1:-1", "tcp://[::1:80", "unix:",
      "unix:@", "udp://127.0.0.1:1", "127.0.0.1:80"};
  mpx_listener_t *l, *l2;
  mpx_conn_t *c = NULL;
  char addr[300], path[200];
  struct stat st;
  int fd;

  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    CU_ASSERT_EQUAL(mpx_listener_new(&l, bad[i], KEY, KEYLEN, NULL), MPX_EINVAL);
    CU_ASSERT_PTR_NULL(l);
    CU_ASSERT_EQUAL(mpx_client(&c, bad[i], KEY, KEYLEN, 0, 1), MPX_EINVAL);
  }
  CU_ASSERT_EQUAL(mpx_listener_new(&l, NULL, NULL, 0, NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", NULL, 3, NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_client(&c, "tcp://no-such-host.invalid:80", KEY, KEYLEN, 0, 5),
                  MPX_EADDRNOTAVAIL);
  memset(path, 'a', 150);
  path[150] = '\0';
  snprintf(addr, sizeof addr, "unix:/tmp/%s", path);
  CU_ASSERT_EQUAL(mpx_listener_new(&l, addr, KEY, KEYLEN, NULL), MPX_ENAMETOOLONG);

  /* Host left out: the loopback. */
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://:0", KEY, KEYLEN, NULL), 0);
  CU_ASSERT_EQUAL(strncmp(mpx_listener_address(l), "tcp://127.0.0.1:", 16), 0);
  /* Nobody on the port once it is closed. */
  snprintf(addr, sizeof addr, "%s", mpx_listener_address(l));
  mpx_listener_free(l);
  CU_ASSERT_EQUAL(mpx_client(&c, addr, KEY, KEYLEN, 0, 5), MPX_ECONNREFUSED);
  /* IPv6 loopback, when the machine has one. */
  if (mpx_listener_new(&l, "tcp://[::1]:0", KEY, KEYLEN, NULL) == 0) {
    CU_ASSERT_EQUAL(strncmp(mpx_listener_address(l), "tcp://[::1]:", 12), 0);
    serve_client(l, fork_client(mpx_listener_address(l), KEY, KEYLEN, 0), 10);
    mpx_listener_free(l);
  }

  tmp_make();
  /* A unix path nobody listens on (no file): refused. */
  snprintf(addr, sizeof addr, "unix:%s/none", tmpdir);
  CU_ASSERT_EQUAL(mpx_client(&c, addr, KEY, KEYLEN, 0, 5), MPX_ECONNREFUSED);
  /* A stale socket file (its listener closed without removing it) is
   * replaced; a live one is not; free removes the file. */
  snprintf(addr, sizeof addr, "unix:%s/stale", tmpdir);
  {
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/stale", tmpdir);
    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    CU_ASSERT_EQUAL_FATAL(bind(fd, (struct sockaddr *)&un, sizeof un), 0);
    close(fd);
    CU_ASSERT_EQUAL(lstat(un.sun_path, &st), 0);
    CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, addr, KEY, KEYLEN, NULL), 0);
    CU_ASSERT_EQUAL(mpx_listener_new(&l2, addr, KEY, KEYLEN, NULL), MPX_EADDRINUSE);
    serve_client(l, fork_client(addr, KEY, KEYLEN, 0), 10);
    /* A fork child freeing its copy leaves the file alone. */
    {
      pid_t pid = fork();
      CU_ASSERT_FATAL(pid >= 0);
      if (pid == 0) {
        mpx_listener_free(l);
        _exit(0);
      }
      CU_ASSERT_EQUAL(mpx_test_reap(pid, 10), 0);
    }
    CU_ASSERT_EQUAL(lstat(un.sun_path, &st), 0);
    mpx_listener_free(l);
    CU_ASSERT_EQUAL(lstat(un.sun_path, &st), -1);
  }
  /* A regular file in the way is never removed. */
  snprintf(path, sizeof path, "%s/file", tmpdir);
  fd = open(path, O_CREAT | O_WRONLY, 0600);
  CU_ASSERT(fd >= 0);
  close(fd);
  snprintf(addr, sizeof addr, "unix:%s", path);
  CU_ASSERT_EQUAL(mpx_listener_new(&l, addr, KEY, KEYLEN, NULL), MPX_EADDRINUSE);
  CU_ASSERT_EQUAL(stat(path, &st), 0);
  CU_ASSERT_TRUE(S_ISREG(st.st_mode));
  /* Two listeners on one abstract name. */
  address_of(2, addr, sizeof addr);
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, addr, KEY, KEYLEN, NULL), 0);
  CU_ASSERT_EQUAL(mpx_listener_new(&l2, addr, KEY, KEYLEN, NULL), MPX_EADDRINUSE);
  mpx_listener_free(l);
  CU_ASSERT_EQUAL(mpx_client(&c, addr, KEY, KEYLEN, 0, 5), MPX_ECONNREFUSED);
  tmp_remove();
}

MPX_TEST_MAIN("listener",
              MPX_TEST(test_vectors),
              MPX_TEST(test_vectors_other_digests),
              MPX_TEST(test_bad_messages),
              MPX_TEST(test_raw_frames),
              MPX_TEST(test_mpx_both_sides),
              MPX_TEST(test_no_key),
              MPX_TEST(test_mpx_wrong_key),
              MPX_TEST(test_python_client),
              MPX_TEST(test_python_listener),
              MPX_TEST(test_python_answers_sha256_challenge),
              MPX_TEST(test_python_wrong_key),
              MPX_TEST(test_oversized),
              MPX_TEST(test_peer_closes),
              MPX_TEST(test_quiet_peer),
              MPX_TEST(test_addresses))
