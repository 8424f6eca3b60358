/* checksum: a map from each item to a 64-bit hash of it, as 8 bytes
 * little-endian. Two algorithms (param `algorithm`):
 *   xxh3   (default) XXH3-64 with seed 0, from libxxhash: tens of GB/s,
 *          so a bulk-data run measures the pipeline, not the hash;
 *   fnv1a  FNV-1a 64: h = 0xcbf29ce484222325; for each byte b:
 *          h = (h ^ b) * 0x100000001b3 (mod 2^64); about 1 byte a cycle.
 * Both are deterministic across runs and machines; a run's items combine
 * into one order-independent checksum by adding or xoring the hashes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>
#if defined(__x86_64__) || defined(__i386__)
/* libxxhash's run-time dispatch picks the widest vector unit (AVX2,
 * AVX-512): about 1.7x the SSE2 default here. */
#include <xxh_x86dispatch.h>
#define HASH64 XXH3_64bits_dispatch
#else
#define HASH64 XXH3_64bits
#endif

#include <mpx/plugin.h>

enum { ALGO_XXH3 = 1, ALGO_FNV1A };

static int checksum_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *a = mpx_param_str(ctx, "algorithm");
  static const int xxh3 = ALGO_XXH3, fnv = ALGO_FNV1A;
  if (strcmp(a, "xxh3") == 0) *state = (void *)&xxh3;
  else if (strcmp(a, "fnv1a") == 0) *state = (void *)&fnv;
  else return mpx_plugin_fail(ctx, "algorithm '%s': want xxh3 or fnv1a", a);
  return 0;
}

static uint64_t fnv1a(const unsigned char *p, size_t len) {
  uint64_t h = 0xcbf29ce484222325u;
  for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3u;
  return h;
}

static int checksum_process(mpx_plugin_ctx_t *ctx, void *state,
                            const void *in, size_t len) {
  unsigned char out[8];
  uint64_t h = *(const int *)state == ALGO_FNV1A ? fnv1a(in, len)
                                                 : (uint64_t)HASH64(in, len);
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(h >> (8 * i));
  return mpx_emit(ctx, out, sizeof out);
}

static const mpx_param_def_t checksum_params[] = {
    {"algorithm", MPX_PARAM_STRING, "xxh3", false, "xxh3 (fast) or fnv1a"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "checksum",
    .version = "1.1",
    .description = "each item -> its 64-bit hash, XXH3 or FNV-1a (8 bytes, "
                   "little-endian)",
    .kind = MPX_PLUGIN_MAP,
    .params = checksum_params,
    .n_params = sizeof checksum_params / sizeof checksum_params[0],
    .init = checksum_init,
    .process = checksum_process,
};
