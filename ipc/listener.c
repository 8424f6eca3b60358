/* Listeners and clients over TCP and Unix sockets, with the authkey
 * challenge of multiprocessing.connection (mpx/listener.h). The challenge
 * itself is ipc/auth.c; this file does the sockets and the four framed
 * messages of each direction. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "address.h"
#include "auth.h"

/* Handshake steps after an accept(timeout 0): the peer was already
 * waiting, give its answers this long. */
#define ZERO_TIMEOUT_STEP 5.0

struct mpx_listener_s {
  int fd;
  char *address;       /* as bound: "tcp://127.0.0.1:41235", "unix:..." */
  char *path;          /* "unix:PATH": the file to remove, else NULL */
  dev_t dev;           /* the socket file this listener made */
  ino_t ino;
  pid_t owner;         /* only the creating process removes the file */
  unsigned char *key;  /* NULL: no handshake */
  size_t key_len;
  unsigned flags;
};

/* ---- addresses ------------------------------------------------------------- */





static int set_nonblock(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL);
  if (fl < 0) return -errno;
  fl = on ? fl | O_NONBLOCK : fl & ~O_NONBLOCK;
  return fcntl(fd, F_SETFL, fl) == 0 ? 0 : -errno;
}

/* ---- the handshake over a connection -------------------------------------- */

static int check_step_args(mpx_conn_t *c, const void *key, size_t key_len,
                           const char *who) {
  if (c == NULL) return mpx__err(MPX_EINVAL, "%s: NULL connection", who);
  if (key == NULL && key_len != 0)
    return mpx__err(MPX_EINVAL, "%s: NULL authkey of length %zu", who,
                    key_len);
  return 0;
}

/* Refuses the peer: "#FAILURE#" (best effort: it may be gone), then the
 * connection is closed. */
static int refuse(mpx_conn_t *c, int rc) {
  mpx_conn_send_bytes(c, MPX__AUTH_FAILURE, sizeof MPX__AUTH_FAILURE - 1, 0.5);
  mpx_conn_close(c);
  return rc;
}

/* Receives one handshake message (at most 256 bytes, CPython's limit). */
static int recv_step(mpx_conn_t *c, void **buf, size_t *len, double timeout,
                     const char *who, const char *what) {
  int rc = mpx_conn_recv_bytes(c, buf, len, MPX__AUTH_MAX_MSG, timeout);
  if (rc == MPX_EMSGSIZE)
    return mpx__err(MPX_EAUTH, "%s: %s of %zu bytes (a handshake message is "
                    "at most %d)", who, what, *len, MPX__AUTH_MAX_MSG);
  if (rc == MPX_ETIMEDOUT)
    return mpx__err(rc, "%s: no %s from the peer in time", who, what);
  if (rc == MPX_EPIPE)
    return mpx__err(rc, "%s: the peer closed the connection before its %s",
                    who, what);
  return rc;
}

int mpx_conn_deliver_challenge(mpx_conn_t *c, const void *authkey,
                               size_t authkey_len, unsigned flags,
                               double timeout) {
  static const char who[] = "deliver_challenge";
  mpx__challenge_t ch;
  unsigned char msg[sizeof MPX__AUTH_CHALLENGE + sizeof ch.m];
  size_t n, len = 0;
  void *ans = NULL;
  int rc;

  if ((rc = check_step_args(c, authkey, authkey_len, who)) != 0) return rc;
  if (flags & ~(unsigned)MPX_AUTH_LEGACY)
    return mpx__err(MPX_EINVAL, "%s: unknown flags %#x", who, flags);
  if ((rc = mpx__auth_challenge(&ch, flags, msg, sizeof msg, &n)) != 0)
    return rc;
  if ((rc = mpx_conn_send_bytes(c, msg, n, timeout)) != 0) return rc;
  if ((rc = recv_step(c, &ans, &len, timeout, who, "answer")) != 0)
    return rc == MPX_EAUTH ? refuse(c, rc) : rc;
  rc = mpx__auth_verify(&ch, authkey, authkey_len, ans, len);
  free(ans);
  if (rc != 0) return refuse(c, rc);
  return mpx_conn_send_bytes(c, MPX__AUTH_WELCOME,
                             sizeof MPX__AUTH_WELCOME - 1, timeout);
}

int mpx_conn_answer_challenge(mpx_conn_t *c, const void *authkey,
                              size_t authkey_len, double timeout) {
  static const char who[] = "answer_challenge";
  unsigned char out[MPX__AUTH_ANSWER_MAX];
  void *msg = NULL;
  size_t len = 0, n;
  int rc;

  if ((rc = check_step_args(c, authkey, authkey_len, who)) != 0) return rc;
  if ((rc = recv_step(c, &msg, &len, timeout, who, "challenge")) != 0)
    goto fail;
  rc = mpx__auth_answer(authkey, authkey_len, msg, len, out, sizeof out, &n);
  free(msg);
  msg = NULL;
  if (rc != 0) goto fail;
  if ((rc = mpx_conn_send_bytes(c, out, n, timeout)) != 0) return rc;
  rc = mpx_conn_recv_bytes(c, &msg, &len, MPX__AUTH_MAX_MSG, timeout);
  if (rc == MPX_ETIMEDOUT)
    return mpx__err(rc, "%s: no verdict from the peer in time", who);
  /* The peer may refuse by closing without a word (CPython does when its
   * own checks fail): our answer was not good enough. */
  if (rc == MPX_EPIPE || rc == MPX_EMSGSIZE) {
    rc = mpx__err(MPX_EAUTH, "%s: the peer %s instead of #WELCOME#", who,
                  rc == MPX_EPIPE ? "closed the connection"
                                  : "sent an oversized message");
    goto fail;
  }
  if (rc != 0) return rc;
  if (len == sizeof MPX__AUTH_WELCOME - 1 &&
      memcmp(msg, MPX__AUTH_WELCOME, len) == 0) {
    free(msg);
    return 0;
  }
  if (len == sizeof MPX__AUTH_FAILURE - 1 &&
      memcmp(msg, MPX__AUTH_FAILURE, len) == 0)
    rc = mpx__err(MPX_EAUTH, "%s: the peer refused our answer (#FAILURE#: "
                  "wrong authkey?)", who);
  else
    rc = mpx__err(MPX_EAUTH, "%s: expected #WELCOME# or #FAILURE#, got %zu "
                  "other bytes", who, len);
fail:
  free(msg);
  if (rc == MPX_EAUTH) mpx_conn_close(c);
  return rc;
}

/* ---- listener -------------------------------------------------------------- */





int mpx_listener_new(mpx_listener_t **lp, const char *address,
                     const void *authkey, size_t authkey_len,
                     const mpx_listener_opts_t *opts) {
  static const char who[] = "mpx_listener_new";
  mpx_listener_opts_t o = {0};
  mpx_listener_t *l;
  mpx__addr_t a;
  int rc;

  if (lp == NULL) return mpx__err(MPX_EINVAL, "%s: NULL output", who);
  *lp = NULL;
  if (opts != NULL) o = *opts;
  if (o.backlog < 0 || (o.flags & ~(unsigned)MPX_AUTH_LEGACY))
    return mpx__err(MPX_EINVAL, "%s: bad options (backlog %d, flags %#x)", who,
                    o.backlog, o.flags);
  if (authkey == NULL && authkey_len != 0)
    return mpx__err(MPX_EINVAL, "%s: NULL authkey of length %zu", who,
                    authkey_len);
  if ((rc = mpx__addr_parse(address, &a, who)) != 0) return rc;
  if ((l = calloc(1, sizeof *l)) == NULL) return MPX_ENOMEM;
  l->fd = -1;
  l->owner = getpid();
  l->flags = o.flags;
  if (authkey != NULL) {
    /* A non-NULL key of length 0 is Python's b'': a handshake with an
     * empty key, not none. */
    if ((l->key = malloc(authkey_len ? authkey_len : 1)) == NULL) {
      free(l);
      return MPX_ENOMEM;
    }
    memcpy(l->key, authkey, authkey_len);
    l->key_len = authkey_len;
  }
  rc = mpx__addr_listen(&a, o.backlog ? o.backlog : 128, address, who, &l->fd,
                       &l->address);
  if (rc == 0 && a.family == AF_UNIX && !a.abstract) {
    struct stat st;
    if ((l->path = strdup(a.un.sun_path)) == NULL) rc = MPX_ENOMEM;
    else if (stat(l->path, &st) == 0) l->dev = st.st_dev, l->ino = st.st_ino;
  }
  if (rc != 0) {
    mpx_listener_free(l);
    return rc;
  }
  *lp = l;
  return 0;
}

const char *mpx_listener_address(const mpx_listener_t *l) {
  return l != NULL ? l->address : NULL;
}

int mpx_listener_fileno(const mpx_listener_t *l) {
  return l != NULL ? l->fd : MPX_EINVAL;
}

int mpx_listener_accept(mpx_listener_t *l, mpx_conn_t **cp, double timeout) {
  static const char who[] = "mpx_listener_accept";
  double deadline, step;
  mpx_conn_t *c;
  int fd, rc;

  if (cp != NULL) *cp = NULL;
  if (l == NULL || cp == NULL)
    return mpx__err(MPX_EINVAL, "%s: NULL argument", who);
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "%s: NaN timeout", who);
  deadline = mpx__deadline(timeout);
  for (;;) {
    struct pollfd pf = {l->fd, POLLIN, 0};
    fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0) break;
    /* A peer that gave up while queued is no error of ours. */
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return mpx__err_errno("%s: accept", who);
    rc = poll(&pf, 1, mpx__poll_ms(deadline));
    if (rc == 0) return mpx__err(MPX_ETIMEDOUT, "%s: no peer in time", who);
    if (rc < 0 && errno != EINTR) return mpx__err_errno("%s: poll", who);
  }
  if ((rc = mpx_conn_from_fd(&c, fd, 0)) != 0) {
    close(fd);
    return rc;
  }
  if (l->key != NULL) {
    step = timeout == 0 ? ZERO_TIMEOUT_STEP : timeout;
    rc = mpx_conn_deliver_challenge(c, l->key, l->key_len, l->flags, step);
    if (rc == 0) rc = mpx_conn_answer_challenge(c, l->key, l->key_len, step);
    if (rc != 0) {
      mpx_conn_free(c);
      return rc;
    }
  }
  *cp = c;
  return 0;
}

void mpx_listener_free(mpx_listener_t *l) {
  struct stat st;
  if (l == NULL) return;
  if (l->fd >= 0) close(l->fd);
  /* Only the file this listener made, and only in the process that made
   * it: a fork child freeing its copy must not pull the parent's socket
   * away. */
  if (l->path != NULL && getpid() == l->owner && stat(l->path, &st) == 0 &&
      st.st_dev == l->dev && st.st_ino == l->ino)
    unlink(l->path);
  free(l->path);
  free(l->address);
  free(l->key);
  free(l);
}

/* ---- client ---------------------------------------------------------------- */

/* Connects fd to sa within deadline. 0 or -errno (ETIMEDOUT). */
static int connect_within(int fd, const struct sockaddr *sa, socklen_t len,
                          double deadline) {
  for (;;) {
    struct pollfd pf = {fd, POLLOUT, 0};
    int rc, err = 0;
    socklen_t el = sizeof err;
    if (connect(fd, sa, len) == 0) return 0;
    if (errno == EINTR) continue;
    if (errno == EAGAIN && sa->sa_family == AF_UNIX) {
      /* A unix listener's backlog is full: wait for room. */
      if (deadline >= 0 && mpx__now() >= deadline) return -ETIMEDOUT;
      poll(NULL, 0, 2);
      continue;
    }
    if (errno != EINPROGRESS) return -errno;
    do rc = poll(&pf, 1, mpx__poll_ms(deadline));
    while (rc < 0 && errno == EINTR);
    if (rc == 0) return -ETIMEDOUT;
    if (rc < 0) return -errno;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0) return -errno;
    return -err;
  }
}

int mpx_client(mpx_conn_t **cp, const char *address, const void *authkey,
               size_t authkey_len, unsigned flags, double timeout) {
  static const char who[] = "mpx_client";
  struct addrinfo *res = NULL, *ai, one;
  struct sockaddr_storage ss;
  double deadline;
  mpx_conn_t *c;
  mpx__addr_t a;
  int rc, fd = -1, err = ECONNREFUSED;

  if (cp == NULL) return mpx__err(MPX_EINVAL, "%s: NULL output", who);
  *cp = NULL;
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "%s: NaN timeout", who);
  if (flags & ~(unsigned)MPX_AUTH_LEGACY)
    return mpx__err(MPX_EINVAL, "%s: unknown flags %#x", who, flags);
  if (authkey == NULL && authkey_len != 0)
    return mpx__err(MPX_EINVAL, "%s: NULL authkey of length %zu", who,
                    authkey_len);
  if ((rc = mpx__addr_parse(address, &a, who)) != 0) return rc;
  deadline = mpx__deadline(timeout);
  if (a.family == AF_UNIX) {
    memset(&one, 0, sizeof one);
    memcpy(&ss, &a.un, sizeof a.un);
    one.ai_family = AF_UNIX;
    one.ai_socktype = SOCK_STREAM;
    one.ai_addr = (struct sockaddr *)&ss;
    one.ai_addrlen = a.un_len;
    ai = &one;
  } else {
    if ((rc = mpx__addr_resolve(&a, false, &res, who)) != 0) return rc;
    ai = res;
  }
  for (; ai != NULL; ai = ai->ai_next) {
    fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    rc = connect_within(fd, ai->ai_addr, ai->ai_addrlen, deadline);
    if (rc == 0) break;
    err = -rc;
    close(fd);
    fd = -1;
    if (err == ETIMEDOUT) break;
  }
  if (res != NULL) freeaddrinfo(res);
  if (fd < 0) {
    /* A unix path that is not there: nobody listens either. */
    if (err == ENOENT && a.family == AF_UNIX) err = ECONNREFUSED;
    return mpx__err(-err, "%s: cannot connect to '%s': %s", who, address,
                    strerror(err));
  }
  /* The connection uses MSG_DONTWAIT; others given its fileno expect a
   * blocking socket, as Python's are. */
  set_nonblock(fd, false);
  if ((rc = mpx_conn_from_fd(&c, fd, 0)) != 0) {
    close(fd);
    return rc;
  }
  if (authkey != NULL) {
    rc = mpx_conn_answer_challenge(c, authkey, authkey_len, timeout);
    if (rc == 0)
      rc = mpx_conn_deliver_challenge(c, authkey, authkey_len, flags, timeout);
    if (rc != 0) {
      mpx_conn_free(c);
      return rc;
    }
  }
  *cp = c;
  return 0;
}
