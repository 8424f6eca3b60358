/* libFuzzer target for the json codec (its source is linked in): decode
 * arbitrary bytes; whatever decodes must agree with a borrowed decode, and
 * encode to text that decodes to an equal value and encodes the same
 * again. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mpx.h>

extern const mpx_codec_t mpx_codec_descriptor;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  const mpx_codec_t *c = &mpx_codec_descriptor;
  mpx_decode_opts_t o = {0}, bo = {MPX_DECODE_BORROW, 0, 0, 0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL, *b = NULL, *back = NULL;
  mpx_wbuf_t w, w2;
  int rc = c->decode(d, n, &o, &v, &err);
  if (rc != 0) {
    if (v != NULL || rc != MPX_ECODEC || err.offset > n) __builtin_trap();
    return 0;
  }
  if (c->decode(d, n, &bo, &b, &err) != 0 || !mpx_obj_equal(v, b))
    __builtin_trap();
  mpx_wbuf_init(&w);
  mpx_wbuf_init(&w2);
  /* Decoded values are within the encoder's limits (depth, digits). */
  if (c->encode(v, &w, NULL, &err) != 0) __builtin_trap();
  if (c->decode(w.data, w.len, NULL, &back, &err) != 0) __builtin_trap();
  if (!mpx_obj_equal(v, back)) __builtin_trap();
  if (c->encode(back, &w2, NULL, &err) != 0 || w2.len != w.len ||
      memcmp(w.data, w2.data, w.len) != 0)
    __builtin_trap();
  mpx_obj_release(back);
  mpx_obj_release(b);
  mpx_obj_release(v);
  mpx_wbuf_free(&w);
  mpx_wbuf_free(&w2);
  return 0;
}
