/* Internal: what the pipeline coordinator and its workers exchange, on top
 * of the pool's messages.
 *
 * Worker arguments (the pool's initargs): engine_wargs_t, then the plugin
 * path, the stage name and the codec name (each NUL-terminated), then the
 * encoded parameters (mpx__ctx_params_encode).
 *
 * A task's argument is a batch: uint32 n, then n items (uint32 length,
 * bytes). Its result: uint32 n_out, uint32 n_fail, then n_out items
 * (uint32 length, bytes: the outputs of the whole batch in order; for a
 * reduce stage, the batch's partial), then n_fail failures (uint32 index
 * in the batch, uint32 length, the message). An item that failed
 * contributed no output. Host byte order: both ends are on one machine. */
#ifndef MPX_CORE_ENGINE_PROTO_H
#define MPX_CORE_ENGINE_PROTO_H

#include <stdint.h>
#include <string.h>

#define ENGINE_WARGS_VERSION 1u

typedef struct {
  uint32_t version;
  uint32_t kind;      /* mpx_plugin_kind_t */
  uint32_t path_len, stage_len, codec_len; /* NUL included */
  uint32_t params_len;
} engine_wargs_t;

/* A cursor over length-prefixed records. */
typedef struct {
  const uint8_t *p, *end;
} eng_rd_t;

static inline int eng_u32(eng_rd_t *r, uint32_t *v) {
  if (r->end - r->p < 4) return -1;
  memcpy(v, r->p, 4);
  r->p += 4;
  return 0;
}

static inline int eng_bytes(eng_rd_t *r, const void **d, uint32_t *len) {
  if (eng_u32(r, len) != 0 || (uint64_t)(r->end - r->p) < *len) return -1;
  *d = r->p;
  r->p += *len;
  return 0;
}

#endif
