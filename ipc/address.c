/* mpx's socket addresses: parsing, resolving, listening (address.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"
#include "address.h"

int mpx__addr_parse(const char *address, mpx__addr_t *a, const char *who) {
  memset(a, 0, sizeof *a);
  if (address == NULL)
    return mpx__err(MPX_EINVAL, "%s: NULL address", who);
  if (strncmp(address, "tcp://", 6) == 0) {
    const char *h = address + 6, *colon, *he;
    char *end;
    unsigned long port;
    if (*h == '[') {
      const char *rb = strchr(h, ']');
      if (rb == NULL || rb[1] != ':')
        return mpx__err(MPX_EINVAL, "%s: bad address '%s': expected "
                        "tcp://[V6ADDR]:PORT", who, address);
      h++;
      he = rb;
      colon = rb + 1;
    } else {
      colon = strrchr(h, ':');
      if (colon == NULL)
        return mpx__err(MPX_EINVAL, "%s: bad address '%s': no port (expected "
                        "tcp://HOST:PORT)", who, address);
      he = colon;
    }
    if ((size_t)(he - h) >= sizeof a->host)
      return mpx__err(MPX_EINVAL, "%s: host name too long in '%s'", who,
                      address);
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || port > 65535 ||
        errno != 0)
      return mpx__err(MPX_EINVAL, "%s: bad port in '%s' (0..65535)", who,
                      address);
    /* No host: the loopback, never every interface by accident. */
    if (he == h) strcpy(a->host, "127.0.0.1");
    else memcpy(a->host, h, (size_t)(he - h));
    snprintf(a->port, sizeof a->port, "%lu", port);
    a->family = AF_UNSPEC;
    return 0;
  }
  if (strncmp(address, "unix:", 5) == 0) {
    const char *p = address + 5;
    size_t n = strlen(p);
    a->family = AF_UNIX;
    a->un.sun_family = AF_UNIX;
    if (p[0] == '@') {
      /* Linux abstract namespace: a NUL, then the name (no terminator). */
      n--;
      if (n == 0 || n > sizeof a->un.sun_path - 1)
        return mpx__err(n == 0 ? MPX_EINVAL : MPX_ENAMETOOLONG,
                        "%s: abstract name of %zu bytes in '%s' (1..%zu)", who,
                        n, address, sizeof a->un.sun_path - 1);
      memcpy(a->un.sun_path + 1, p + 1, n);
      a->un_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
      a->abstract = true;
      return 0;
    }
    if (n == 0) return mpx__err(MPX_EINVAL, "%s: empty path in '%s'", who,
                                address);
    if (n >= sizeof a->un.sun_path)
      return mpx__err(MPX_ENAMETOOLONG, "%s: socket path of %zu bytes in '%s' "
                      "(at most %zu)", who, n, address,
                      sizeof a->un.sun_path - 1);
    memcpy(a->un.sun_path, p, n);
    a->un_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    return 0;
  }
  return mpx__err(MPX_EINVAL, "%s: bad address '%s' (expected tcp://HOST:PORT, "
                  "unix:PATH or unix:@NAME)", who, address);
}

int mpx__addr_resolve(const mpx__addr_t *a, bool passive, struct addrinfo **res,
                   const char *who) {
  struct addrinfo hints;
  int rc;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  rc = getaddrinfo(a->host, a->port, &hints, res);
  if (rc == EAI_MEMORY) return mpx__err(MPX_ENOMEM, "%s: getaddrinfo", who);
  if (rc != 0)
    return mpx__err(MPX_EADDRNOTAVAIL, "%s: cannot resolve '%s': %s", who,
                    a->host, gai_strerror(rc));
  return 0;
}

/* The bound address in mpx syntax, malloc'd (NULL: out of memory). */
static char *format_bound(int fd, const mpx__addr_t *a) {
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  char host[INET6_ADDRSTRLEN], *out = NULL;
  if (a->family == AF_UNIX) {
    if (a->abstract) {
      size_t n = a->un_len - offsetof(struct sockaddr_un, sun_path) - 1;
      if (asprintf(&out, "unix:@%.*s", (int)n, a->un.sun_path + 1) < 0)
        return NULL;
    } else if (asprintf(&out, "unix:%s", a->un.sun_path) < 0) {
      return NULL;
    }
    return out;
  }
  if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0) return NULL;
  if (ss.ss_family == AF_INET6) {
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
    if (asprintf(&out, "tcp://[%s]:%u", host, ntohs(s6->sin6_port)) < 0)
      return NULL;
  } else {
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
    if (asprintf(&out, "tcp://%s:%u", host, ntohs(s4->sin_port)) < 0)
      return NULL;
  }
  return out;
}

/* Whether /proc/net/unix lists a listening socket bound to `path` (as
 * given, or made absolute): 1 yes, 0 no, -1 cannot tell. */
static int unix_path_listed(const char *path) {
  char line[4096], abs[PATH_MAX + 2] = "", *cwd;
  FILE *f = fopen("/proc/net/unix", "re");
  int found = 0;
  if (f == NULL) return -1;
  if (path[0] != '/' && (cwd = getcwd(abs, sizeof abs - 1)) != NULL &&
      strlen(abs) + strlen(path) + 2 <= sizeof abs) {
    strcat(abs, "/");
    strcat(abs, path);
  }
  while (!found && fgets(line, sizeof line, f) != NULL) {
    unsigned long flags = 0;
    int pos = -1;
    size_t n;
    /* "Num: RefCount Protocol Flags Type St Inode Path"; flag 0x10000
     * (__SO_ACCEPTCON) marks a listening socket. */
    if (sscanf(line, "%*s %*s %*s %lx %*s %*s %*s %n", &flags, &pos) < 1 ||
        pos < 0 || !(flags & 0x10000))
      continue;
    n = strcspn(line + pos, "\n");
    line[pos + (int)n] = '\0';
    found = strcmp(line + pos, path) == 0 || strcmp(line + pos, abs) == 0;
  }
  fclose(f);
  return found;
}

/* A unix socket file nobody accepts on is a dead listener's. Ask
 * /proc/net/unix first: a probing connect to a live listener would queue
 * a connection its owner then has to accept and throw away. */
static bool unix_path_is_stale(const struct sockaddr_un *un, socklen_t len) {
  struct stat st;
  int fd, rc;
  if (lstat(un->sun_path, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  if (unix_path_listed(un->sun_path) == 1) return false;
  /* Not listed (or no /proc): a connect that is refused confirms it. */
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return false;
  rc = connect(fd, (const struct sockaddr *)un, len);
  rc = rc == 0 ? 0 : errno;
  close(fd);
  return rc == ECONNREFUSED;
}

static int listen_unix(const mpx__addr_t *a, int backlog, const char *address,
                       const char *who, int *out) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) return mpx__err_errno("%s: socket", who);
  if (bind(fd, (const struct sockaddr *)&a->un, a->un_len) != 0) {
    int e = errno;
    if (e == EADDRINUSE && !a->abstract &&
        unix_path_is_stale(&a->un, a->un_len) && unlink(a->un.sun_path) == 0 &&
        bind(fd, (const struct sockaddr *)&a->un, a->un_len) == 0) {
      e = 0;
    } else if (e == EADDRINUSE) {
      close(fd);
      return mpx__err(MPX_EADDRINUSE, "%s: '%s' is in use (a live listener, "
                      "or a file that is not a socket)", who, address);
    }
    if (e != 0) {
      close(fd);
      return mpx__err(-e, "%s: bind '%s': %s", who, address, strerror(e));
    }
  }
  if (listen(fd, backlog) != 0) {
    int rc = mpx__err_errno("%s: listen '%s'", who, address);
    if (!a->abstract) unlink(a->un.sun_path);
    close(fd);
    return rc;
  }
  *out = fd;
  return 0;
}

static int listen_tcp(const mpx__addr_t *a, int backlog, const char *address,
                      const char *who, int *out) {
  struct addrinfo *res, *ai;
  int rc, err = 0, one = 1;
  *out = -1;
  if ((rc = mpx__addr_resolve(a, true, &res, who)) != 0) return rc;
  for (ai = res; ai != NULL; ai = ai->ai_next) {
    int fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    /* As Python's Listener: a restarted server rebinds its port at once
     * (TIME_WAIT connections do not hold it). */
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, backlog) == 0) {
      *out = fd;
      break;
    }
    err = errno;
    close(fd);
  }
  freeaddrinfo(res);
  if (*out < 0)
    return mpx__err(-err, "%s: cannot listen on '%s': %s", who, address,
                    strerror(err));
  return 0;
}

int mpx__addr_listen(const mpx__addr_t *a, int backlog, const char *address,
                     const char *who, int *fd, char **bound) {
  int rc = a->family == AF_UNIX ? listen_unix(a, backlog, address, who, fd)
                                : listen_tcp(a, backlog, address, who, fd);
  if (rc != 0) return rc;
  if ((*bound = format_bound(*fd, a)) == NULL) {
    if (a->family == AF_UNIX && !a->abstract) unlink(a->un.sun_path);
    close(*fd);
    *fd = -1;
    return mpx__err(MPX_ENOMEM, "%s: out of memory", who);
  }
  return 0;
}
