/* Output buffers for encoders: growable (malloc) or fixed (caller's). */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "mpx/codec.h"

void mpx_wbuf_init(mpx_wbuf_t *b) { memset(b, 0, sizeof *b); }

void mpx_wbuf_init_fixed(mpx_wbuf_t *b, void *mem, size_t cap) {
  b->data = mem;
  b->len = 0;
  b->cap = mem ? cap : 0;
  b->fixed = 1;
}

int mpx_wbuf_reserve(mpx_wbuf_t *b, size_t n) {
  if (b->cap - b->len >= n) return 0;
  if (b->fixed)
    return mpx__err(MPX_ENOBUFS, "output buffer of %zu bytes is full (%zu "
                    "more needed)", b->cap, n - (b->cap - b->len));
  if (n > SIZE_MAX - b->len) return mpx__err(MPX_ENOMEM, "output too large");
  size_t need = b->len + n, cap = b->cap ? b->cap : 256;
  while (cap < need) cap = cap > SIZE_MAX / 2 ? need : cap * 2;
  uint8_t *p = realloc(b->data, cap);
  if (p == NULL) return mpx__err(MPX_ENOMEM, "output buffer of %zu bytes", cap);
  b->data = p;
  b->cap = cap;
  return 0;
}

int mpx_wbuf_append(mpx_wbuf_t *b, const void *p, size_t n) {
  int rc;
  if (n == 0) return 0;
  if ((rc = mpx_wbuf_reserve(b, n)) != 0) return rc;
  memcpy(b->data + b->len, p, n);
  b->len += n;
  return 0;
}

void mpx_wbuf_reset(mpx_wbuf_t *b) { b->len = 0; }

void mpx_wbuf_free(mpx_wbuf_t *b) {
  if (!b->fixed) free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
