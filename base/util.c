/* Small system helpers: clocks, whole reads and writes, pidfd calls, and the
 * length-prefixed control messages used by the forkserver and spawn. */
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif

double mpx__now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double mpx__deadline(double timeout) {
  /* Beyond ~30 years (INFINITY included) is forever: no clock conversion
   * of such a deadline would fit a time_t or an int of milliseconds. */
  return timeout < 0 || timeout > 1e9 ? -1.0 : mpx__now() + timeout;
}

void mpx__cond_init_monotonic(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
}

int mpx__poll_ms(double deadline) {
  double left;
  if (deadline < 0) return -1;
  left = deadline - mpx__now();
  if (left <= 0) return 0;
  /* Round up so a wait never ends just before its deadline. */
  return left > 2e6 ? 2000000000 : (int)(left * 1000.0 + 0.999);
}

int mpx__write_all(int fd, const void *buf, size_t n) {
  const char *p = buf;
  while (n > 0) {
    ssize_t k = write(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

int mpx__read_all(int fd, void *buf, size_t n) {
  char *p = buf;
  while (n > 0) {
    ssize_t k = read(fd, p, n);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    if (k == 0) return MPX_EPIPE;
    p += k;
    n -= (size_t)k;
  }
  return 0;
}

int mpx__pidfd_open(pid_t pid) {
  long fd = syscall(SYS_pidfd_open, pid, 0);
  return fd < 0 ? -errno : (int)fd;
}

int mpx__pidfd_send_signal(int pidfd, int sig) {
  return syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0) < 0 ? -errno : 0;
}

int mpx__buf_put(mpx__buf_t *b, const void *p, size_t n) {
  if (b->len + n > b->cap) {
    size_t cap = b->cap ? b->cap * 2 : 256;
    char *d;
    while (cap < b->len + n) cap *= 2;
    d = realloc(b->data, cap);
    if (d == NULL) return MPX_ENOMEM;
    b->data = d;
    b->cap = cap;
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

int mpx__buf_put_u64(mpx__buf_t *b, uint64_t v) {
  return mpx__buf_put(b, &v, sizeof v);
}

int mpx__buf_put_field(mpx__buf_t *b, const void *p, size_t n) {
  int rc = mpx__buf_put_u64(b, n);
  return rc ? rc : mpx__buf_put(b, p, n);
}

int mpx__buf_put_str(mpx__buf_t *b, const char *s) {
  if (s == NULL) s = "";
  return mpx__buf_put_field(b, s, strlen(s) + 1);
}

void mpx__buf_free(mpx__buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

int mpx__msg_send(int sock, const mpx__buf_t *b, const int *fds, size_t nfds) {
  uint64_t len = b->len;
  struct iovec iov[2] = {{&len, sizeof len}, {b->data, b->len}};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * 16)];
  } cm;
  struct msghdr msg;
  size_t off = 0, total = sizeof len + b->len;
  int iovi = 0;

  if (nfds > 16) return MPX_EINVAL;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = iov;
  msg.msg_iovlen = 2;
  if (nfds > 0) {
    memset(&cm, 0, sizeof cm);
    msg.msg_control = cm.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cm.h.cmsg_level = SOL_SOCKET;
    cm.h.cmsg_type = SCM_RIGHTS;
    cm.h.cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(&cm.h), fds, sizeof(int) * nfds);
  }
  /* The fds ride with the first byte; short writes continue without them. */
  while (off < total) {
    ssize_t k = sendmsg(sock, &msg, MSG_NOSIGNAL);
    if (k < 0) {
      if (errno == EINTR) continue;
      return -errno;
    }
    off += (size_t)k;
    msg.msg_control = NULL;
    msg.msg_controllen = 0;
    while (iovi < 2 && (size_t)k >= iov[iovi].iov_len) {
      k -= (ssize_t)iov[iovi].iov_len;
      iov[iovi].iov_len = 0;
      iovi++;
    }
    if (iovi < 2) {
      iov[iovi].iov_base = (char *)iov[iovi].iov_base + k;
      iov[iovi].iov_len -= (size_t)k;
    }
    msg.msg_iov = iov + iovi;
    msg.msg_iovlen = (size_t)(2 - iovi);
  }
  return 0;
}

int mpx__msg_recv(int sock, char **data, size_t *len, int *fds,
                  size_t max_fds, size_t *nfds) {
  uint64_t n;
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int) * 16)];
  } cm;
  struct iovec iov = {&n, sizeof n};
  struct msghdr msg;
  struct cmsghdr *c;
  ssize_t k;
  char *d;
  int rc;

  *nfds = 0;
  memset(&msg, 0, sizeof msg);
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = cm.buf;
  msg.msg_controllen = sizeof cm.buf;
  do
    k = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
  while (k < 0 && errno == EINTR);
  if (k < 0) return -errno;
  for (c = CMSG_FIRSTHDR(&msg); c != NULL; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      size_t i, cnt = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int *in = (int *)CMSG_DATA(c);
      for (i = 0; i < cnt; i++) {
        if (*nfds < max_fds)
          fds[(*nfds)++] = in[i];
        else
          close(in[i]);
      }
    }
  }
  if (k == 0) return MPX_EPIPE;
  if ((size_t)k < sizeof n) {
    rc = mpx__read_all(sock, (char *)&n + k, sizeof n - (size_t)k);
    if (rc) goto fail;
  }
  if (n > ((uint64_t)1 << 32)) {
    rc = MPX_EPROTO;
    goto fail;
  }
  d = malloc(n ? n : 1);
  if (d == NULL) {
    rc = MPX_ENOMEM;
    goto fail;
  }
  rc = mpx__read_all(sock, d, n);
  if (rc) {
    free(d);
    goto fail;
  }
  *data = d;
  *len = n;
  return 0;
fail:
  while (*nfds > 0) close(fds[--*nfds]);
  return rc;
}
