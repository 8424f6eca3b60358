/* Codec figures: encode+decode round trips of a small record (a map of 5
 * fields, about 100 bytes encoded) and of a 1 MiB bytes object, per codec,
 * beside a plain memcpy of the same bytes. Prints `name value unit`:
 *
 *   codec.<name>.record.roundtrip   records encoded+decoded per second
 *   codec.<name>.record.bytes       encoded size of the record
 *   codec.<name>.1MiB.roundtrip     MB/s of 1 MiB bytes encoded+decoded
 *   codec.<name>.1MiB.borrow        the same, decoding with MPX_DECODE_BORROW
 *   codec.memcpy.100B / .1MiB       the copy the codecs are measured against
 *
 * Each figure is the median of --runs repetitions (default 5).
 *
 *   bench_codec [--runs N] [--quick] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "bench.h"

static int runs = 5;
static double scale = 1.0;

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_codec: %s: %s (%s)\n", what, mpx_strerror(rc),
          mpx_last_error());
  exit(1);
}

static mpx_obj_t *record(void) {
  unsigned char tag[40];
  for (int i = 0; i < 40; i++) tag[i] = (unsigned char)(i * 7);
  mpx_obj_t *m = mpx_obj_map(5);
  mpx_obj_map_set_str(m, "id", mpx_obj_int(1234567));
  mpx_obj_map_set_str(m, "name", mpx_obj_str("sensor-17/eu-west", SIZE_MAX));
  mpx_obj_map_set_str(m, "value", mpx_obj_float(3.14159));
  mpx_obj_map_set_str(m, "ok", mpx_obj_bool(1));
  mpx_obj_map_set_str(m, "tag", mpx_obj_bytes(tag, sizeof tag));
  return m;
}

typedef struct {
  const mpx_codec_t *c;
  mpx_obj_t *obj;
  unsigned flags;
  long n;
} job_t;

/* Encodes and decodes obj n times; returns round trips per second. */
static double roundtrip(job_t *j) {
  mpx_wbuf_t b;
  mpx_decode_opts_t d = {0};
  d.flags = j->flags;
  mpx_wbuf_init(&b);
  double t = bench_now();
  for (long i = 0; i < j->n; i++) {
    mpx_obj_t *back;
    int rc;
    mpx_wbuf_reset(&b);
    if ((rc = mpx_codec_encode(j->c, j->obj, &b, NULL)) != 0) die("encode", rc);
    if ((rc = mpx_codec_decode(j->c, b.data, b.len, &d, &back)) != 0)
      die("decode", rc);
    mpx_obj_release(back);
  }
  double dt = bench_now() - t;
  mpx_wbuf_free(&b);
  return (double)j->n / dt;
}

static double median(job_t *j) {
  double r[64];
  int n = runs < 64 ? runs : 64;
  for (int i = 0; i < n; i++) r[i] = roundtrip(j);
  bench_sort(r, n);
  return r[n / 2];
}

static double memcpy_rate(size_t size, long n) {
  double r[64];
  int k = runs < 64 ? runs : 64;
  char *src = malloc(size), *dst = malloc(size);
  memset(src, 1, size);
  memset(dst, 0, size);
  for (int i = 0; i < k; i++) {
    double t = bench_now();
    for (long j = 0; j < n; j++) {
      memcpy(dst, src, size);
      __asm__ __volatile__("" : : "r"(dst) : "memory");
    }
    r[i] = (double)n / (bench_now() - t);
  }
  free(src);
  free(dst);
  bench_sort(r, k);
  return r[k / 2];
}

int main(int argc, char **argv) {
  const char *names[] = {"raw", "msgpack", "json", "pickle"};
  size_t mib = (size_t)1 << 20;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--runs") == 0 && i + 1 < argc) runs = atoi(argv[++i]);
    else if (strcmp(argv[i], "--quick") == 0) scale = 0.1;
  }
  if (runs < 1) runs = 1;
  long n_small = (long)(300000 * scale), n_big = (long)(300 * scale);
  if (n_big < 10) n_big = 10;

  mpx_obj_t *rec = record();
  char *blob = malloc(mib);
  memset(blob, 0x5a, mib);
  mpx_obj_t *big = mpx_obj_bytes(blob, mib);
  free(blob);

  printf("codec.memcpy.100B %.2f M/s\n", memcpy_rate(100, n_small * 10) / 1e6);
  printf("codec.memcpy.1MiB %.0f MB/s\n",
         memcpy_rate(mib, n_big * 4) * (double)mib / 1e6);
  for (int k = 0; k < 4; k++) {
    const mpx_codec_t *c;
    int rc = mpx_codec_load(&c, names[k]);
    if (rc != 0) die(names[k], rc);
    job_t j = {c, rec, 0, n_small};
    if (k > 0) { /* raw carries bytes only */
      mpx_wbuf_t b;
      mpx_wbuf_init(&b);
      if ((rc = mpx_codec_encode(c, rec, &b, NULL)) != 0) die("encode", rc);
      printf("codec.%s.record.bytes %zu B\n", names[k], b.len);
      mpx_wbuf_free(&b);
      printf("codec.%s.record.roundtrip %.3f M/s\n", names[k],
             median(&j) / 1e6);
    }
    j.obj = big;
    j.n = n_big;
    printf("codec.%s.1MiB.roundtrip %.0f MB/s\n", names[k],
           median(&j) * (double)mib / 1e6);
    j.flags = MPX_DECODE_BORROW;
    printf("codec.%s.1MiB.borrow %.0f MB/s\n", names[k],
           median(&j) * (double)mib / 1e6);
    fflush(stdout);
  }
  mpx_obj_release(rec);
  mpx_obj_release(big);
  return 0;
}
