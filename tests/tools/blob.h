/* The content of the blob test plugin's items, shared with the test that
 * checks them: n bytes from seed x, each 8-byte word the next state of a
 * 64-bit LCG (Knuth's MMIX constants) mixed with its high bits, little
 * endian. */
#ifndef MPX_TEST_BLOB_H
#define MPX_TEST_BLOB_H

#include <stddef.h>
#include <stdint.h>

static inline void blob_fill(unsigned char *out, size_t n, uint64_t x) {
  uint64_t s = x ^ 0x9e3779b97f4a7c15u;
  for (size_t i = 0; i < n; i += 8) {
    s = s * 6364136223846793005u + 1442695040888963407u;
    uint64_t w = s ^ (s >> 29);
    for (size_t k = 0; k < 8 && i + k < n; k++) out[i + k] = (unsigned char)(w >> (8 * k));
  }
}

#endif /* MPX_TEST_BLOB_H */
