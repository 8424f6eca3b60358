/* Who we are, cached: the process id and the calling thread's kernel
 * thread id, both reset in a fork child. Used by the locks (owner words),
 * the arena and values (block owners) and the queues and connections.
 * Not installed. */
#ifndef MPX_BASE_IDENT_H
#define MPX_BASE_IDENT_H

#include <sys/types.h>

/* getpid(), cached (glibc makes it a system call). */
pid_t mpx__pid(void);

/* The thread id cache itself, 0 until first asked for in a thread (and in
 * a fork child): the lock's fast paths read it directly. */
extern __thread __attribute__((tls_model("initial-exec"))) pid_t mpx__tls_tid;
/* Fills the cache with gettid(); returns it. */
pid_t mpx__tid_fetch(void);

/* The calling thread's kernel thread id. */
static inline pid_t mpx__tid(void) {
  pid_t t = mpx__tls_tid;
  return __builtin_expect(t != 0, 1) ? t : mpx__tid_fetch();
}

#endif /* MPX_BASE_IDENT_H */
