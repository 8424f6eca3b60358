/* Process targets for the process tests. They live in a shared object so
 * that fork and forkserver can call them by pointer and spawn by
 * "libmpx_test_targets.so:name". Each reports through its exit code. */
#ifndef MPX_TEST_TARGETS_H
#define MPX_TEST_TARGETS_H

#include <pthread.h>
#include <stddef.h>

#include <mpx.h>

/* Held by a thread of the test while forkserver children take it. */
extern pthread_mutex_t mpx_test_global_lock;

typedef struct {
  int fd;          /* a descriptor the target uses */
  int value;       /* exit code, or an expected value */
  int method;      /* start method for the target's own children */
  pid_t pid;       /* an expected pid */
  char name[64];   /* an expected name */
} mpx_test_args_t;

int tt_return_value(const void *a, size_t n);   /* returns args.value */
int tt_exit_value(const void *a, size_t n);     /* exit(args.value) */
int tt_abort(const void *a, size_t n);          /* abort() */
int tt_kill_self(const void *a, size_t n);      /* raise(SIGKILL) */
int tt_pause(const void *a, size_t n);          /* sleeps until a signal */
int tt_wait_fd(const void *a, size_t n);        /* read(args.fd), exit 0 */
int tt_write_fd(const void *a, size_t n);       /* write "ok" to args.fd */
int tt_check_pattern(const void *a, size_t n);  /* 0 iff bytes[i]==i*7%251 */
int tt_identity(const void *a, size_t n);       /* 0 iff name/parent match */
int tt_take_lock(const void *a, size_t n);      /* lock+unlock global lock */
int tt_cpu_count(const void *a, size_t n);      /* pin to CPU 0, count */
int tt_print(const void *a, size_t n);          /* printf to args.fd as stdout */
/* In a fork child: passes fds 3 and 4 to a forkserver child, which checks
 * that they are pipes and that its parent's pidfd survived; 0 when so. */
int tt_forkserver_low_fds_check(const void *a, size_t n);
int tt_low_fds(const void *a, size_t n);
int tt_fd_closed(const void *a, size_t n);      /* 0 iff args.fd is closed */
/* Opens a pipe without close-on-exec, returns the exit code of a
 * forkserver child running tt_fd_closed on it. */
int tt_forkserver_fd_check(const void *a, size_t n);
/* Starts a daemon child (args.method) running tt_pause, writes its pid to
 * args.fd, then pauses. */
int tt_daemon_parent(const void *a, size_t n);

/* ---- pool tasks ---- */
int pt_square(mpx_task_t *t, const void *in, size_t len);
int pt_pid(mpx_task_t *t, const void *in, size_t len);
/* The result, written in place with mpx_task_result_buf: the argument
 * reversed, each byte xor 0x5a (so a result is never its argument). */
int pt_xform(mpx_task_t *t, const void *in, size_t len);
/* The argument starts with a NUL-terminated path. The first call that
 * creates that file (O_EXCL) takes a result buffer of the argument's size
 * (an arena block when large), writes into it and SIGKILLs its worker;
 * every later call answers as pt_xform. */
int pt_xform_kill_once(mpx_task_t *t, const void *in, size_t len);

#endif
