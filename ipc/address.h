/* Internal: mpx's socket addresses ("tcp://HOST:PORT", "unix:PATH",
 * "unix:@NAME"; mpx/listener.h has the rules), parsed, resolved and
 * listened on, for the listener (ipc/listener.c) and the manager server
 * (ipc/manager/manager_server.c). */
#ifndef MPX_IPC_ADDRESS_H
#define MPX_IPC_ADDRESS_H

#include <netdb.h>
#include <stdbool.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct {
  int family;                /* AF_UNSPEC: tcp (v4 or v6); AF_UNIX */
  char host[256];            /* tcp; "127.0.0.1" when the address has none */
  char port[8];
  struct sockaddr_un un;     /* unix */
  socklen_t un_len;
  bool abstract;             /* unix:@NAME */
} mpx__addr_t;

/* Parses address into *a. MPX_EINVAL or MPX_ENAMETOOLONG, the message
 * starting with `who`. */
int mpx__addr_parse(const char *address, mpx__addr_t *a, const char *who);

/* getaddrinfo for a tcp address (passive: for bind). *res is the
 * caller's (freeaddrinfo). MPX_EADDRNOTAVAIL when it does not resolve. */
int mpx__addr_resolve(const mpx__addr_t *a, bool passive, struct addrinfo **res,
                      const char *who);

/* A listening socket (close-on-exec, non-blocking) on a: tcp with
 * SO_REUSEADDR; unix:PATH replacing a socket file that a dead listener
 * left (asked of /proc/net/unix, then confirmed by a refused connect), and
 * MPX_EADDRINUSE for a live listener's or a file that is no socket. On 0,
 * *fd is the caller's and *bound (malloc'd, the caller's) the address as
 * bound, in the same syntax ("tcp://127.0.0.1:41235" for port 0). */
int mpx__addr_listen(const mpx__addr_t *a, int backlog, const char *address,
                     const char *who, int *fd, char **bound);

#endif /* MPX_IPC_ADDRESS_H */
