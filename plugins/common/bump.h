/* A bump allocator for the reduce plugins' tables (counter, aggregate):
 * memory handed out in order from 1 MiB chunks, never freed alone, all
 * freed at once by bump_free. A table's keys (and aggregate's stats) live
 * there, so a table of millions of keys costs a few mallocs, not one per
 * key, and clearing it frees a few chunks. */
#ifndef MPX_PLUGINS_BUMP_H
#define MPX_PLUGINS_BUMP_H

#include <stddef.h>

typedef struct bump_chunk_s bump_chunk_t;

typedef struct {
  bump_chunk_t *chunks; /* newest first; NULL: none */
} bump_t;

/* len bytes aligned for any type (max_align_t), or NULL (out of memory).
 * Valid until bump_free. */
void *bump_get(bump_t *b, size_t len);
/* Frees every chunk; b is empty and usable again. */
void bump_free(bump_t *b);

#endif
