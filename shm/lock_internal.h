/* Internal: what other mpx modules need from the lock implementation. */
#ifndef MPX_SHM_LOCK_INTERNAL_H
#define MPX_SHM_LOCK_INTERNAL_H

#include <sys/types.h>
#include "mpx/sync.h"

/* The calling thread's kernel thread id, cached (and reset after fork). */
pid_t mpx__tid(void);
/* getpid(), cached (glibc makes it a system call), reset after fork. */
pid_t mpx__pid(void);
/* 0 when this thread can own robust locks, else MPX_ENOTSUP. */
int mpx__robust_ok(void);

#endif
