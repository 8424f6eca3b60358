/* The round-trip check the structured-codec fuzz targets share: encode v,
 * decode the bytes, require an equal value and (when `stable`) the same
 * bytes when the copy is encoded again. Traps on any failure, so
 * libFuzzer reports the input. *enc_len (may be NULL): the encoded size. */
#ifndef MPX_FUZZ_ROUNDTRIP_H
#define MPX_FUZZ_ROUNDTRIP_H

#include <string.h>

#include <mpx.h>

static inline void fuzz_roundtrip(const mpx_codec_t *c, const mpx_obj_t *v,
                                  const mpx_encode_opts_t *eo, int stable,
                                  size_t *enc_len) {
  mpx_codec_error_t err;
  mpx_obj_t *back = NULL;
  mpx_wbuf_t w, w2;
  mpx_wbuf_init(&w);
  mpx_wbuf_init(&w2);
  /* Decoded values are within the encoder's limits. */
  if (c->encode(v, &w, eo, &err) != 0) __builtin_trap();
  if (c->decode(w.data, w.len, NULL, &back, &err) != 0) __builtin_trap();
  if (!mpx_obj_equal(v, back)) __builtin_trap();
  if (stable && (c->encode(back, &w2, eo, &err) != 0 || w2.len != w.len ||
                 memcmp(w.data, w2.data, w.len) != 0))
    __builtin_trap();
  if (enc_len != NULL) *enc_len = w.len;
  mpx_obj_release(back);
  mpx_wbuf_free(&w);
  mpx_wbuf_free(&w2);
}

#endif
