/* libFuzzer target for the msgpack codec (its source is linked in): decode
 * arbitrary bytes; whatever decodes must agree with frame_len and with a
 * borrowed decode, and encode (within size_hint) to bytes that decode to
 * an equal value and encode the same again. */
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
  size_t need = 0;
  int rc = c->decode(d, n, &o, &v, &err), frc;
  frc = c->frame_len(d, n, &need, &err);
  if (frc != 0 && frc != MPX_ECODEC) __builtin_trap();
  if (rc != 0) {
    if (v != NULL || rc != MPX_ECODEC || err.offset > n) __builtin_trap();
    return 0;
  }
  /* A value that decodes is one complete frame. */
  if (frc != 0 || need != n) __builtin_trap();
  if (c->decode(d, n, &bo, &b, &err) != 0 || !mpx_obj_equal(v, b))
    __builtin_trap();
  mpx_wbuf_init(&w);
  mpx_wbuf_init(&w2);
  if (c->encode(v, &w, NULL, &err) != 0) __builtin_trap();
  if (c->size_hint(v, NULL) < w.len) __builtin_trap();
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
