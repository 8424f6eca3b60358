/* libFuzzer target for the pickle codec (its source is linked in): decode
 * arbitrary bytes; whatever decodes must encode at protocol 4 and decode
 * again to an equal value (mpx_obj_equal: NaN equals NaN, bigints are
 * normalised, opaque nodes compare module, name, kind, args and state). */
#include <stddef.h>
#include <stdint.h>

#include <mpx.h>

#include "roundtrip.h"

extern const mpx_codec_t mpx_codec_descriptor;

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) {
  const mpx_codec_t *c = &mpx_codec_descriptor;
  /* Tighter limits than the defaults keep each run fast: the encoder
   * writes shared (memo) values out in full. */
  mpx_decode_opts_t o = {0, 200, 1u << 16, 1u << 20};
  mpx_encode_opts_t eo = {4, 0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL;
  int rc = c->decode(d, n, &o, &v, &err);
  if (rc != 0) {
    if (v != NULL || (rc != MPX_ECODEC && rc != MPX_ENOMEM)) __builtin_trap();
    return 0;
  }
  /* The expanded value may exceed the item and byte limits that bounded
   * the work (they count shared parts once per use, as the tree does):
   * the second decode, in fuzz_roundtrip, gets the defaults. */
  fuzz_roundtrip(c, v, &eo, 0, NULL);
  mpx_obj_release(v);
  return 0;
}
