/* See bump.h. */
#include <stdlib.h>

#include "bump.h"

struct bump_chunk_s {
  bump_chunk_t *next;
  size_t used, size;
  max_align_t data[];
};

#define CHUNK_SIZE ((size_t)1 << 20)

void *bump_get(bump_t *b, size_t len) {
  bump_chunk_t *k = b->chunks;
  len = (len + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
  if (k == NULL || k->size - k->used < len) {
    size_t size = len > CHUNK_SIZE ? len : CHUNK_SIZE;
    if ((k = malloc(sizeof *k + size)) == NULL) return NULL;
    k->next = b->chunks;
    k->used = 0;
    k->size = size;
    b->chunks = k;
  }
  void *p = (char *)k->data + k->used;
  k->used += len;
  return p;
}

void bump_free(bump_t *b) {
  while (b->chunks) {
    bump_chunk_t *k = b->chunks;
    b->chunks = k->next;
    free(k);
  }
}
