/* libFuzzer target for the raw codec (its source is linked in): any bytes
 * decode, borrowed or copied, to bytes that encode back unchanged. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mpx.h>

extern const mpx_codec_t mpx_codec_descriptor;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  const mpx_codec_t *c = &mpx_codec_descriptor;
  mpx_decode_opts_t o = {0}, bo = {MPX_DECODE_BORROW, 0, 0, 0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL, *b = NULL;
  const void *p;
  size_t len;
  mpx_wbuf_t w;
  if (c->decode(d, n, &o, &v, &err) != 0) __builtin_trap();
  if (c->decode(d, n, &bo, &b, &err) != 0) __builtin_trap();
  p = mpx_obj_bytes_data(b, &len);
  if (p != (const void *)d || len != n || !mpx_obj_equal(v, b))
    __builtin_trap();
  mpx_wbuf_init(&w);
  if (c->encode(v, &w, NULL, &err) != 0 || w.len != n ||
      c->size_hint(v, NULL) != n || (n > 0 && memcmp(w.data, d, n) != 0))
    __builtin_trap();
  mpx_obj_release(b);
  mpx_obj_release(v);
  mpx_wbuf_free(&w);
  return 0;
}
