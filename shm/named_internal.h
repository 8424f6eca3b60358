/* Internal: what shm/named.c needs from shm/segment.c and shm/registry.c. */
#ifndef MPX_SHM_NAMED_INTERNAL_H
#define MPX_SHM_NAMED_INTERNAL_H

#include <stddef.h>
#include "mpx/shm.h"

/* Fault in [addr, addr+len) for writing (addr page-aligned) without
 * changing a byte. 0 or a negative code. */
int mpx__prefault(void *addr, size_t len);

/* A create in progress: between begin and end the installed registry is
 * locked and holds a PENDING entry for the name, so a creator killed at
 * any point leaves nothing a reap would miss. */
typedef struct {
  mpx_shm_registry_t *r; /* NULL: no registry installed */
  size_t slot;
} mpx__shm_pending_t;

/* Lock the installed registry (if any) and record (getpid(), name) as
 * PENDING. MPX_ENOSPC when it is full. name: without the leading '/'. */
int mpx__shm_registry_begin(const char *name, mpx__shm_pending_t *p);
/* created: the entry becomes USED, else it is dropped. Unlocks. */
void mpx__shm_registry_end(mpx__shm_pending_t *p, int created);
/* shm_unlink(path) ("/name") and drop the name's entries, both under the
 * installed registry's lock. 0 or -errno. */
int mpx__shm_registry_unlink(const char *path);

#endif /* MPX_SHM_NAMED_INTERNAL_H */
