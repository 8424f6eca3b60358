/* checksum: a map from each item to its 64-bit FNV-1a hash, as 8 bytes
 * little-endian. FNV-1a: h = 0xcbf29ce484222325; for each byte b:
 * h = (h ^ b) * 0x100000001b3 (mod 2^64). Deterministic across runs and
 * machines; a run's items combine into one order-independent checksum by
 * adding (mod 2^64) or xoring the hashes. */
#include <stdint.h>

#include <mpx/plugin.h>

static int checksum_process(mpx_plugin_ctx_t *ctx, void *state,
                            const void *in, size_t len) {
  const unsigned char *p = in;
  unsigned char out[8];
  uint64_t h = 0xcbf29ce484222325u;
  (void)state;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3u;
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(h >> (8 * i));
  return mpx_emit(ctx, out, sizeof out);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "checksum",
    .version = "1.0",
    .description = "each item -> its 64-bit FNV-1a hash (8 bytes, "
                   "little-endian)",
    .kind = MPX_PLUGIN_MAP,
    .process = checksum_process,
};
