/* Internal helpers shared by the core/ files. Not installed. */
#ifndef MPX_CORE_INTERNAL_H
#define MPX_CORE_INTERNAL_H

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

/* Identity of the current process, set in every child mpx starts. */
void mpx__process_set_identity(const char *name, bool daemon,
                               const char *identity, pid_t parent_pid,
                               int parent_pidfd, const char *parent_name,
                               bool borrow);
const char *mpx__process_current_name(void);
/* Resets per-process state in a fresh child: the children registry, the
 * forkserver connection. */
void mpx__process_after_fork_child(void);

/* Target resolution (core/target.c). */
typedef struct {
  char *object;      /* "" for the main program, else the object's path */
  uintptr_t offset;  /* target address minus the object's load address */
} mpx__target_loc_t;
/* Loads "path:symbol" and resolves the symbol. */
int mpx__target_resolve_spec(const char *spec, mpx_target_fn *fn);
/* Finds the object containing fn. *loc->object is malloc'd. */
int mpx__target_locate(mpx_target_fn fn, mpx__target_loc_t *loc);
/* Maps a location back to an address in this process (loading the object
 * if needed). */
int mpx__target_from_loc(const char *object, uintptr_t offset,
                         mpx_target_fn *fn);
/* For spawn: turns a pointer into "path:symbol" when it names an exported
 * function of a shared object. *spec is malloc'd. */
int mpx__target_spec_of(mpx_target_fn fn, char **spec);

/* Runs a target in a child and ends the child: flushes stdio, _exit(). */
void mpx__child_run(mpx_target_fn fn, const void *args, size_t len)
    __attribute__((noreturn));

/* The forkserver (core/forkserver.c). */
typedef struct {
  const char *name;
  const char *identity;
  bool daemon;
  const char *object;
  uintptr_t offset;
  const void *args;
  size_t args_len;
  const int *pass_fds;
  size_t n_pass_fds;
} mpx__fs_request_t;
/* Asks the forkserver (started if needed) for a child. On success sets the
 * child's pid, a pidfd and the status fd (readable with the 4-byte wait
 * status once the server has reaped the child). */
int mpx__forkserver_fork(const mpx__fs_request_t *req, pid_t *pid,
                         int *pidfd, int *status_fd);

/* Spawn (core/spawn.c): starts mpx-worker for "path:symbol". */
typedef struct {
  const char *name;
  const char *identity;
  bool daemon;
  const char *spec;
  const void *args;
  size_t args_len;
  const int *pass_fds;
  size_t n_pass_fds;
} mpx__spawn_request_t;
int mpx__spawn(const mpx__spawn_request_t *req, pid_t *pid, int *pidfd);

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

typedef struct {
  const char *p, *end;
} mpx__rd_t;
int mpx__rd_u64(mpx__rd_t *r, uint64_t *v);
/* Points *p into the buffer; strings are NUL-terminated by the writer. */
int mpx__rd_field(mpx__rd_t *r, const void **p, size_t *n);
int mpx__rd_str(mpx__rd_t *r, const char **s);

/* Sends / receives one message of <u64 length><bytes> with optional fds. */
int mpx__msg_send(int sock, const mpx__buf_t *b, const int *fds, size_t nfds);
/* *data is malloc'd; up to max_fds fds are stored in fds, *nfds set. */
int mpx__msg_recv(int sock, char **data, size_t *len, int *fds,
                  size_t max_fds, size_t *nfds);

/* Path of the mpx-worker executable to exec. */
const char *mpx__worker_path(void);

#endif /* MPX_CORE_INTERNAL_H */
