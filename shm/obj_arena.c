/* mpx_obj_bytes_arena (mpx/shm.h): bytes objects that point into an arena
 * block. Here, not in base/obj.c, because objects sit below shared
 * memory: obj.c only calls the release hook it is given. */
#include <stddef.h>
#include <stdint.h>

#include "internal.h"
#include "mpx/obj.h"
#include "mpx/shm.h"

static void release_block(void *arena, uint64_t ref) {
  mpx_arena_release(arena, (mpx_ref_t)ref);
}

mpx_obj_t *mpx_obj_bytes_arena(mpx_arena_t *a, mpx_ref_t ref, size_t off,
                               size_t len) {
  char *base;
  size_t size;
  if (a == NULL) {
    mpx__err(MPX_EINVAL, "NULL arena");
    return NULL;
  }
  if (mpx_arena_retain(a, ref) != 0) return NULL; /* message already set */
  base = mpx_arena_ptr(a, ref);
  size = mpx_arena_block_size(a, ref);
  if (base == NULL || off > size || len > size - off) {
    mpx_arena_release(a, ref);
    mpx__err(MPX_ERANGE, "bytes [%zu, %zu) outside a block of %zu",
             off, off + len, size);
    return NULL;
  }
  mpx_obj_t *o = mpx__obj_bytes_tagged(base + off, len, release_block, a, ref);
  if (o == NULL) mpx_arena_release(a, ref);
  return o;
}
