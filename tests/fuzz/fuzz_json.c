/* libFuzzer target for the json codec (its source is linked in): decode
 * arbitrary bytes; whatever decodes must agree with a borrowed decode, and
 * encode to text that decodes to an equal value and encodes the same
 * again. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <mpx.h>

#include "roundtrip.h"

extern const mpx_codec_t mpx_codec_descriptor;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  const mpx_codec_t *c = &mpx_codec_descriptor;
  mpx_decode_opts_t o = {0}, bo = {MPX_DECODE_BORROW, 0, 0, 0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL, *b = NULL;
  int rc = c->decode(d, n, &o, &v, &err);
  if (rc != 0) {
    if (v != NULL || rc != MPX_ECODEC || err.offset > n) __builtin_trap();
    return 0;
  }
  if (c->decode(d, n, &bo, &b, &err) != 0 || !mpx_obj_equal(v, b))
    __builtin_trap();
  fuzz_roundtrip(c, v, NULL, 1, NULL); /* within depth and digit limits */
  mpx_obj_release(b);
  mpx_obj_release(v);
  return 0;
}
