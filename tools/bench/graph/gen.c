/* The inputs of the graph benchmarks (tools/bench/graph/run.py), the same
 * bytes for the same arguments on every machine:
 *
 *   gen words OUT BYTES DISTINCT SEED
 *     [a-z]+ words, one space between two, 6 to 14 words a line. Exactly
 *     DISTINCT different words: each of them once at a random place (so
 *     that every one appears), the other tokens drawn log-uniformly over
 *     the same vocabulary (P(rank r) about 1/r, Zipf with s = 1), so a few
 *     short words are very frequent and most words are rare. About BYTES
 *     bytes: the last line ends the file once BYTES are written and every
 *     word has appeared.
 *
 *   gen measurements OUT BYTES KEYS SEED
 *     "city;temperature" lines, the one-billion-row challenge's format:
 *     KEYS distinct city names (two or three syllables, capitalised), each
 *     line's city drawn uniformly, its temperature the city's mean plus
 *     noise, in tenths from -99.9 to 99.9 ("-12.3", "4.0"). About BYTES.
 *
 * C rather than Python because 1 GiB must take seconds: one output buffer,
 * written 4 MiB at a time, and no allocation per token. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUT_CHUNK (4u << 20)

typedef struct {
  FILE *f;
  char *buf;
  size_t used;
  uint64_t total;
} out_t;

static void die(const char *what) {
  fprintf(stderr, "gen: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void out_flush(out_t *o) {
  if (o->used && fwrite(o->buf, 1, o->used, o->f) != o->used) die("write");
  o->total += o->used;
  o->used = 0;
}

/* Room for n more bytes (n is small: one line). */
static char *out_room(out_t *o, size_t n) {
  if (o->used + n > OUT_CHUNK) out_flush(o);
  return o->buf + o->used;
}

/* splitmix64: small, fast, and the same sequence everywhere. */
static uint64_t rng_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) { return (double)(rng_next(s) >> 11) * 0x1p-53; }

/* ---- words ---------------------------------------------------------------- */

/* Word k: k in bijective base 26 (so 0..25 are the 26 one-letter words,
 * then the 676 two-letter ones, ...), each letter shifted by its position
 * so that neighbours in k do not share their first letters. Distinct k give
 * distinct words. Returns the length (at most 14 for any uint64_t < 2^64). */
static size_t word_of(uint64_t k, char *w) {
  char tmp[16];
  size_t n = 0;
  k += 1;
  while (k > 0) {
    uint64_t d = (k - 1) % 26;
    tmp[n] = (char)('a' + (d + 7u * n + 3u) % 26);
    n++;
    k = (k - 1) / 26;
  }
  for (size_t i = 0; i < n; i++) w[i] = tmp[n - 1 - i];
  return n;
}

static size_t word_len(uint64_t k) {
  char w[16];
  return word_of(k, w);
}

/* A log-uniform rank in [0, v): floor(exp(u ln(v+1))) - 1. */
static uint64_t zipf_rank(uint64_t *s, double lnv) {
  uint64_t r = (uint64_t)exp(rng_unit(s) * lnv);
  return r == 0 ? 0 : r - 1;
}

static uint64_t gcd(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

static void gen_words(out_t *o, uint64_t bytes, uint64_t distinct, uint64_t seed) {
  uint64_t s = seed, probe = seed ^ 0x5eedu;
  double lnv = log((double)distinct + 1.0);
  /* Mean token length (word + separator), to spread the fresh words evenly:
   * the fresh ones are uniform over the vocabulary, the others Zipf. */
  double lf = 0, lz = 0;
  for (uint64_t i = 0; i < 200000; i++) {
    lf += (double)word_len(rng_next(&probe) % distinct);
    lz += (double)word_len(zipf_rank(&probe, lnv));
  }
  lf /= 200000, lz /= 200000;
  double ntok = (double)bytes / (lz + 1.0);
  for (int it = 0; it < 8; it++) {
    double f = (double)distinct / ntok;
    if (f > 1) f = 1;
    ntok = (double)bytes / (f * lf + (1 - f) * lz + 1.0);
  }
  double mean_tok = (double)bytes / ntok;
  /* Fresh word i is word (i * step + off) mod distinct: a permutation. */
  uint64_t step = 2654435761u % distinct, off = rng_next(&s) % distinct;
  if (step == 0) step = 1;
  while (gcd(step, distinct) != 1) step++;
  uint64_t fresh = 0;
  while (o->total + o->used < bytes || fresh < distinct) {
    unsigned nw = 6 + (unsigned)(rng_next(&s) % 9);
    char *p = out_room(o, nw * 16 + 1), *start = p;
    for (unsigned i = 0; i < nw; i++) {
      uint64_t left = o->total + o->used + (uint64_t)(p - start);
      double remain = left < bytes ? (double)(bytes - left) / mean_tok : 0;
      uint64_t todo = distinct - fresh, k;
      if (remain < (double)todo) remain = (double)todo;
      if (todo > 0 && rng_unit(&s) * remain < (double)todo)
        k = (fresh++ * step + off) % distinct;
      else
        k = zipf_rank(&s, lnv);
      if (i) *p++ = ' ';
      p += word_of(k, p);
    }
    *p++ = '\n';
    o->used += (size_t)(p - start);
  }
}

/* ---- measurements --------------------------------------------------------- */

static const char CONS[] = "bdfghklmnprstvz";  /* 15 */
static const char VOW[] = "aeiou";             /* 5: 75 syllables */

/* City k: k + 75 in bijective base 75, each digit a consonant-vowel
 * syllable, so at least two syllables, and distinct k give distinct
 * names (every syllable is two letters). */
static size_t city_of(uint64_t k, char *w) {
  char tmp[32];
  size_t n = 0;
  k += 75 + 1;
  while (k > 0) {
    uint64_t d = (k - 1) % 75;
    tmp[n++] = VOW[d % 5];
    tmp[n++] = CONS[d / 5];
    k = (k - 1) / 75;
  }
  for (size_t i = 0; i < n; i++) w[i] = tmp[n - 1 - i];
  w[0] = (char)(w[0] - 'a' + 'A');
  return n;
}

static void gen_measurements(out_t *o, uint64_t bytes, uint64_t keys, uint64_t seed) {
  uint64_t s = seed;
  while (o->total + o->used < bytes) {
    char *p = out_room(o, 64), *start = p;
    uint64_t k = rng_next(&s) % keys;
    p += city_of(k, p);
    *p++ = ';';
    /* The city's mean, -10.0 .. 30.0, from its number alone. */
    uint64_t h = k * 0x9e3779b97f4a7c15ull;
    int64_t t = (int64_t)((h >> 32) % 401) - 100;
    for (int i = 0; i < 3; i++) t += (int64_t)(rng_next(&s) % 201) - 100;
    if (t > 999) t = 999;
    if (t < -999) t = -999;
    if (t < 0) *p++ = '-', t = -t;
    p += sprintf(p, "%d.%d\n", (int)(t / 10), (int)(t % 10));
    o->used += (size_t)(p - start);
  }
}

static uint64_t num(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v == 0) {
    fprintf(stderr, "gen: %s must be a positive integer, not '%s'\n", what, s);
    exit(2);
  }
  return v;
}

int main(int argc, char **argv) {
  if (argc != 6 || (strcmp(argv[1], "words") && strcmp(argv[1], "measurements"))) {
    fprintf(stderr, "usage: gen words OUT BYTES DISTINCT SEED\n"
                    "       gen measurements OUT BYTES KEYS SEED\n");
    return 2;
  }
  uint64_t bytes = num(argv[3], "BYTES"), n = num(argv[4], "DISTINCT/KEYS");
  uint64_t seed = strtoull(argv[5], NULL, 10);
  out_t o = {0};
  if ((o.f = fopen(argv[2], "wb")) == NULL) die(argv[2]);
  if ((o.buf = malloc(OUT_CHUNK)) == NULL) die("malloc");
  if (argv[1][0] == 'w')
    gen_words(&o, bytes, n, seed);
  else
    gen_measurements(&o, bytes, n, seed);
  out_flush(&o);
  if (fclose(o.f) != 0) die(argv[2]);
  free(o.buf);
  return 0;
}
