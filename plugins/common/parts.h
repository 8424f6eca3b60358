/* One partial per partition, for a partitioned reduce's non-final flush
 * (mpx_partitions, mpx_emit_partition): the entries of a table grouped by
 * partition into one buffer, in two passes (the size of each partition's
 * partial, then each entry written at its partition's place), each
 * non-empty partition emitted as one item. Used by the counter (wordcount,
 * topk) and aggregate. */
#ifndef MPX_PLUGINS_PARTS_H
#define MPX_PLUGINS_PARTS_H

#include <stddef.h>
#include <stdint.h>
#include <mpx/plugin.h>

typedef struct {
  unsigned n;          /* partitions */
  size_t header;       /* bytes each non-empty partial starts with */
  size_t *size, *at;   /* per partition: its partial's bytes; where to write next */
  unsigned char *buf;
} parts_t;

/* n partitions, each non-empty partial starting with `header` bytes.
 * 0 or MPX_ENOMEM (parts_free anyway). */
int parts_init(parts_t *p, unsigned n, size_t header);
/* First pass: an entry of `bytes` for partition q. */
void parts_count(parts_t *p, unsigned q, size_t bytes);
/* Between the passes: the buffer, laid out. 0 or MPX_ENOMEM. */
int parts_layout(parts_t *p);
/* Whether partition q has entries; where its header goes (the partial's
 * start, after parts_layout and before any parts_put). */
int parts_used(const parts_t *p, unsigned q);
unsigned char *parts_header(parts_t *p, unsigned q);
/* Second pass: where partition q's next entry of `bytes` goes. */
unsigned char *parts_put(parts_t *p, unsigned q, size_t bytes);
/* Emits each non-empty partial with mpx_emit_partition, then frees. */
int parts_emit(parts_t *p, mpx_plugin_ctx_t *ctx);
void parts_free(parts_t *p);

#endif
