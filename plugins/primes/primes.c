/* primes: a map from n (an 8-byte little-endian int64) to the sum of the
 * primes below n (same encoding), found by trial division exactly as the
 * seed benchmark does (examples/primes.c): a CPU-bound task for
 * benchmarks, not a fast prime sieve. */
#include <math.h>
#include <stdint.h>

#include <mpx/plugin.h>

/* The seed's isprime: trial division by every i in 2..ceil(sqrt(n)). */
static int isprime(long n) {
  long i, max;
  if (n < 2) return 0;
  if (n == 2) return 1;
  max = (long)ceil(sqrt((double)n));
  for (i = 2; i <= max; i++)
    if (n % i == 0) return 0;
  return 1;
}

static int primes_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                          size_t len) {
  const unsigned char *p = in;
  unsigned char out[8];
  uint64_t u = 0;
  long long s = 0;
  long n, x;
  (void)state;
  if (len != 8)
    return mpx_plugin_fail(ctx, "expected an 8-byte int64, got %zu bytes",
                           len);
  for (int i = 7; i >= 0; i--) u = u << 8 | p[i];
  n = (long)(int64_t)u;
  for (x = 2; x < n; x++) {
    if ((x & 0xffff) == 0 && mpx_cancelled(ctx)) return MPX_ECANCELED;
    if (isprime(x)) s += x;
  }
  u = (uint64_t)s;
  for (int i = 0; i < 8; i++) out[i] = (unsigned char)(u >> (8 * i));
  return mpx_emit(ctx, out, sizeof out);
}

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "primes",
    .version = "1.0",
    .description = "n -> the sum of the primes below n, by trial division "
                   "(int64 in, int64 out)",
    .kind = MPX_PLUGIN_MAP,
    .process = primes_process,
};
