/* Internal helpers shared by every layer of the library (base/ and up).
 * Not installed. */
#ifndef MPX_BASE_INTERNAL_H
#define MPX_BASE_INTERNAL_H

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mpx.h"

#define MPX__ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Records a detail message for mpx_last_error() and returns rc, so error
 * paths read `return mpx__err(MPX_ENOENT, "cannot open '%s'", path);`. */
int mpx__err(int rc, const char *fmt, ...) MPX_PRINTF(2, 3);
/* Same with -errno taken from the current errno value. */
int mpx__err_errno(const char *fmt, ...) MPX_PRINTF(1, 2);

/* Logging with the level test inlined, so disabled levels cost one load. */
extern int mpx__log_level;
void mpx__log_init(void);
/* The process name in every log line ("MainProcess" until set). The
 * string is not copied: the caller keeps it valid until the next call. */
void mpx__log_set_name(const char *name);
#define MPX__LOG(lvl, ...)                                                   \
  do {                                                                       \
    if (mpx__log_level < 0) mpx__log_init();                                 \
    if ((int)(lvl) <= mpx__log_level) mpx_log((lvl), __VA_ARGS__);           \
  } while (0)
#define MPX__ERROR(...) MPX__LOG(MPX_LOG_ERROR, __VA_ARGS__)
#define MPX__WARN(...) MPX__LOG(MPX_LOG_WARN, __VA_ARGS__)
#define MPX__INFO(...) MPX__LOG(MPX_LOG_INFO, __VA_ARGS__)
#define MPX__DEBUG(...) MPX__LOG(MPX_LOG_DEBUG, __VA_ARGS__)

/* Monotonic clock in seconds. */
double mpx__now(void);
/* Milliseconds left until `deadline` (from mpx__now() + timeout), for
 * poll(): -1 when deadline < 0 (forever), never below 0. */
int mpx__poll_ms(double deadline);
/* Deadline for a timeout in seconds: negative stays negative (forever). */
double mpx__deadline(double timeout);
/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines,
 * so that a change of the wall clock neither cuts nor stretches them. */
void mpx__cond_init_monotonic(pthread_cond_t *cv);

/* Whole reads and writes that retry on EINTR and short transfers. Return 0,
 * -errno, or MPX_EPIPE for end of file before n bytes. */
int mpx__write_all(int fd, const void *buf, size_t n);
int mpx__read_all(int fd, void *buf, size_t n);

/* pidfd system calls (glibc 2.36 has no stable wrappers everywhere). */
int mpx__pidfd_open(pid_t pid);
int mpx__pidfd_send_signal(int pidfd, int sig);

/* Bytes that belong to someone else, released by release(ctx, tag) when
 * the object dies: the hook shm/ uses for arena blocks (mpx_obj_bytes_arena
 * in shm/obj_arena.c, tag the block's ref) without objects knowing about
 * arenas. NULL (message set) when out of memory; nothing is released
 * then. */
mpx_obj_t *mpx__obj_bytes_tagged(const void *p, size_t len,
                                 void (*release)(void *ctx, uint64_t tag),
                                 void *ctx, uint64_t tag);

/* Small framing helpers for the forkserver and spawn control messages: a
 * buffer of length-prefixed fields. */
typedef struct {
  char *data;
  size_t len, cap;
} mpx__buf_t;
int mpx__buf_put(mpx__buf_t *b, const void *p, size_t n);
int mpx__buf_put_u64(mpx__buf_t *b, uint64_t v);
int mpx__buf_put_field(mpx__buf_t *b, const void *p, size_t n);
int mpx__buf_put_str(mpx__buf_t *b, const char *s);
void mpx__buf_free(mpx__buf_t *b);

/* Reading them back: rd.h. */

/* Sends / receives one message of <u64 length><bytes> with optional fds. */
int mpx__msg_send(int sock, const mpx__buf_t *b, const int *fds, size_t nfds);
/* *data is malloc'd; up to max_fds fds are stored in fds, *nfds set. */
int mpx__msg_recv(int sock, char **data, size_t *len, int *fds,
                  size_t max_fds, size_t *nfds);

#endif /* MPX_BASE_INTERNAL_H */
