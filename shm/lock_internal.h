/* Internal: what other mpx modules need from the lock implementation. */
#ifndef MPX_SHM_LOCK_INTERNAL_H
#define MPX_SHM_LOCK_INTERNAL_H

#include <sys/types.h>
#include "mpx/sync.h"

/* mpx_lock_acquire / mpx_lock_release, bound inside the library. */
int mpx__lock_acquire(mpx_lock_t *l, double timeout);
int mpx__lock_release(mpx_lock_t *l);
/* 0 when this thread can own robust locks, else MPX_ENOTSUP. */
int mpx__robust_ok(void);

#endif
