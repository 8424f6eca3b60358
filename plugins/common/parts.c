/* See parts.h. */
#include <stdlib.h>

#include "parts.h"

int parts_init(parts_t *p, unsigned n, size_t header) {
  *p = (parts_t){.n = n, .header = header};
  p->size = calloc(n ? n : 1, sizeof *p->size);
  p->at = calloc(n ? n : 1, sizeof *p->at);
  return p->size && p->at ? 0 : MPX_ENOMEM;
}

void parts_count(parts_t *p, unsigned q, size_t bytes) {
  if (p->size[q] == 0) p->size[q] = p->header;
  p->size[q] += bytes;
}

int parts_layout(parts_t *p) {
  size_t total = 0;
  for (unsigned q = 0; q < p->n; q++) {
    p->at[q] = total + (p->size[q] ? p->header : 0);
    total += p->size[q];
  }
  p->buf = malloc(total ? total : 1);
  return p->buf ? 0 : MPX_ENOMEM;
}

int parts_used(const parts_t *p, unsigned q) { return p->size[q] > 0; }

unsigned char *parts_header(parts_t *p, unsigned q) { return p->buf + p->at[q] - p->header; }

unsigned char *parts_put(parts_t *p, unsigned q, size_t bytes) {
  unsigned char *w = p->buf + p->at[q];
  p->at[q] += bytes;
  return w;
}

int parts_emit(parts_t *p, mpx_plugin_ctx_t *ctx) {
  int rc = 0;
  /* After the second pass, at[q] is the end of partition q's partial. */
  for (unsigned q = 0; q < p->n && rc == 0; q++)
    if (p->size[q] > 0) rc = mpx_emit_partition(ctx, q, p->buf + p->at[q] - p->size[q], p->size[q]);
  parts_free(p);
  return rc;
}

void parts_free(parts_t *p) {
  free(p->size);
  free(p->at);
  free(p->buf);
  *p = (parts_t){0};
}
