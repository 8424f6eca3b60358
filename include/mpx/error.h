/* mpx: error codes.
 *
 * Every fallible mpx function returns an int: 0 on success or a negative
 * error code; no function returns a positive value to mean success.  Codes
 * mirror errno where one fits (MPX_ETIMEDOUT == -ETIMEDOUT), and mpx adds its
 * own below -4000.  When a code alone does not say enough (the file a plugin
 * was loaded from, the dlerror text, the signal that killed a worker), the
 * failing call leaves a message that mpx_last_error() returns.
 *
 * Ownership: every string returned here is borrowed: mpx_strerror() and
 * mpx_err_name() give static strings, mpx_last_error() a per-thread one
 * (how long it stays valid: at the function). */
#ifndef MPX_ERROR_H
#define MPX_ERROR_H

#include <errno.h>
#include "common.h"

/* Codes that mirror errno: XX(name, message). */
#define MPX_ERRNO_MAP(XX)                                                    \
  XX(E2BIG, "argument list too long")                                        \
  XX(EACCES, "permission denied")                                            \
  XX(EADDRINUSE, "address already in use")                                   \
  XX(EADDRNOTAVAIL, "address not available")                                 \
  XX(EAFNOSUPPORT, "address family not supported")                           \
  XX(EAGAIN, "resource temporarily unavailable")                             \
  XX(EALREADY, "operation already in progress")                              \
  XX(EBADF, "bad file descriptor")                                           \
  XX(EBUSY, "resource busy")                                                 \
  XX(ECANCELED, "operation canceled")                                        \
  XX(ECHILD, "no child process")                                             \
  XX(ECONNABORTED, "connection aborted")                                     \
  XX(ECONNREFUSED, "connection refused")                                     \
  XX(ECONNRESET, "connection reset by peer")                                 \
  XX(EDEADLK, "resource deadlock avoided")                                   \
  XX(EEXIST, "already exists")                                               \
  XX(EFAULT, "bad address")                                                  \
  XX(EFBIG, "file too large")                                                \
  XX(EHOSTUNREACH, "host is unreachable")                                    \
  XX(EINTR, "interrupted")                                                   \
  XX(EINVAL, "invalid argument")                                             \
  XX(EIO, "i/o error")                                                       \
  XX(EISCONN, "already connected")                                           \
  XX(EISDIR, "is a directory")                                               \
  XX(ELOOP, "too many symbolic links")                                       \
  XX(EMFILE, "too many open files")                                          \
  XX(EMSGSIZE, "message too long")                                           \
  XX(ENAMETOOLONG, "name too long")                                          \
  XX(ENETDOWN, "network is down")                                            \
  XX(ENETUNREACH, "network is unreachable")                                  \
  XX(ENFILE, "file table overflow")                                          \
  XX(ENOBUFS, "no buffer space available")                                   \
  XX(ENODEV, "no such device")                                               \
  XX(ENOENT, "no such file or directory")                                    \
  XX(ENOEXEC, "exec format error")                                           \
  XX(ENOMEM, "out of memory")                                                \
  XX(ENOSPC, "no space left")                                                \
  XX(ENOSYS, "function not implemented")                                     \
  XX(ENOTCONN, "not connected")                                              \
  XX(ENOTDIR, "not a directory")                                             \
  XX(ENOTEMPTY, "directory not empty")                                       \
  XX(ENOTSOCK, "not a socket")                                               \
  XX(ENOTSUP, "operation not supported")                                     \
  XX(EOVERFLOW, "value too large")                                           \
  XX(EOWNERDEAD, "previous owner died")                                      \
  XX(ENOTRECOVERABLE, "state not recoverable")                               \
  XX(EPERM, "operation not permitted")                                       \
  XX(EPIPE, "broken pipe")                                                   \
  XX(EPROTO, "protocol error")                                               \
  XX(ERANGE, "result out of range")                                          \
  XX(EROFS, "read-only file system")                                         \
  XX(ESPIPE, "invalid seek")                                                 \
  XX(ESRCH, "no such process")                                               \
  XX(ESTALE, "stale reference")                                              \
  XX(ETIMEDOUT, "timed out")                                                 \
  XX(ETXTBSY, "text file is busy")                                           \
  XX(EXDEV, "cross-device link")

/* mpx's own codes: XX(name, value, message). */
#define MPX_OWN_ERR_MAP(XX)                                                  \
  XX(EUNKNOWN, -4000, "unknown error")                                       \
  XX(EWORKER, -4001, "worker process died")                                  \
  XX(EABI, -4002, "plugin ABI mismatch")                                     \
  XX(EPLUGIN, -4003, "plugin could not be loaded")                           \
  XX(ENOSYM, -4004, "symbol not found")                                      \
  XX(ECODEC, -4005, "codec error")                                           \
  XX(EAUTH, -4006, "authentication failed")                                  \
  XX(ECONFIG, -4007, "configuration error")                                  \
  XX(ECLOSED, -4008, "handle is closed")                                     \
  XX(EBROKEN, -4009, "broken: a peer or helper process is gone")             \
  XX(ESTATE, -4010, "not allowed in the current state")                      \
  XX(ETOOSHORT, -4011, "buffer too short")                                   \
  XX(ETASK, -4012, "task failed")                                            \
  XX(EREMOTE, -4013, "the remote call raised an exception")

typedef enum {
#define MPX__ERRNO_GEN(name, msg) MPX_##name = -name,
  MPX_ERRNO_MAP(MPX__ERRNO_GEN)
#undef MPX__ERRNO_GEN
#define MPX__OWN_GEN(name, val, msg) MPX_##name = val,
  MPX_OWN_ERR_MAP(MPX__OWN_GEN)
#undef MPX__OWN_GEN
  MPX_OK = 0
} mpx_errno_t;

#ifdef __cplusplus
extern "C" {
#endif

/* A short message for an error code ("timed out"). Never NULL; an unknown
 * code gives "unknown error". The string is static: do not free it.
 * Own: returns a static string, borrowed until the process ends. */
MPX_API const char *mpx_strerror(int rc);

/* The code's name without the MPX_ prefix ("ETIMEDOUT", "EWORKER"); static.
 * Own: returns a static string, borrowed until the process ends. */
MPX_API const char *mpx_err_name(int rc);

/* The detail message left by the last mpx call that failed in this thread,
 * e.g. "spawn: cannot load 'libx.so': libx.so: cannot open shared object
 * file". An empty string when no call has failed yet. Valid until the next
 * mpx call in the same thread; a successful call does not clear it.
 * Own: returns a per-thread buffer, borrowed until the next mpx call in this
 * thread. */
MPX_API const char *mpx_last_error(void);

#ifdef __cplusplus
}
#endif
#endif /* MPX_ERROR_H */
