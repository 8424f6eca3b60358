/* The msgpack codec: round trips of every type, the exact bytes of the
 * MessagePack forms (spec and mpx's ext types), edge values, limits,
 * framing, and hostile input: every prefix, single-byte corruptions,
 * lengths that claim gigabytes, nesting past max_depth. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"
#include "objbuild.h"

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

static const mpx_codec_t *codec(void) {
  const mpx_codec_t *c = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, "msgpack"), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  return c;
}

/* ---- building values ---------------------------------------------------- */



/* "93 01 02" -> bytes; returns the length. */
static size_t unhex(const char *hex, uint8_t *out) {
  size_t n = 0;
  while (*hex) {
    if (*hex == ' ') {
      hex++;
      continue;
    }
    out[n++] = (uint8_t)strtoul((char[]){hex[0], hex[1], 0}, NULL, 16);
    hex += 2;
  }
  return n;
}

static char *dump(const mpx_obj_t *o) {
  static char buf[512];
  mpx_obj_dump(o, buf, sizeof(buf));
  return buf;
}

/* ---- checks ------------------------------------------------------------ */

static int decode(const void *p, size_t n, const mpx_decode_opts_t *o,
                  mpx_obj_t **out, mpx_codec_error_t *err) {
  mpx_codec_error_t e;
  *out = NULL;
  memset(&e, 0, sizeof(e));
  int rc = codec()->decode(p, n, o, out, err ? err : &e);
  if (rc != 0) CU_ASSERT_PTR_NULL(*out);
  return rc;
}

/* Encodes o (growable and fixed at size_hint), decodes it back (copied
 * and borrowed), checks equality and framing; takes o. */
static void roundtrip(mpx_obj_t *o) {
  const mpx_codec_t *c = codec();
  mpx_decode_opts_t bo = {0};
  mpx_obj_t *back = NULL;
  mpx_wbuf_t w, fw;
  size_t hint, need = 0;
  uint8_t *mem;

  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(c, o, &w, NULL), 0);
  hint = c->size_hint(o, NULL);
  CU_ASSERT(hint >= w.len);
  mem = malloc(hint);
  mpx_wbuf_init_fixed(&fw, mem, hint);
  CU_ASSERT_EQUAL(mpx_codec_encode(c, o, &fw, NULL), 0);
  CU_ASSERT(fw.len == w.len && memcmp(mem, w.data, w.len) == 0);
  free(mem);

  CU_ASSERT_EQUAL(mpx_codec_decode(c, w.data, w.len, NULL, &back), 0);
  if (!mpx_obj_equal(o, back)) {
    CU_FAIL("round trip differs");
    fprintf(stderr, "\n  sent %s\n", dump(o));
    fprintf(stderr, "  got  %s\n", dump(back));
  }
  mpx_obj_release(back);
  bo.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL(mpx_codec_decode(c, w.data, w.len, &bo, &back), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  mpx_obj_release(back);

  CU_ASSERT_EQUAL(c->frame_len(w.data, w.len, &need, NULL), 0);
  CU_ASSERT_EQUAL(need, w.len);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

/* o encodes to exactly these bytes, which decode back to o; takes o. */
static void encodes_as(mpx_obj_t *o, const char *hex) {
  uint8_t want[256];
  size_t n = unhex(hex, want);
  mpx_wbuf_t w;
  mpx_obj_t *back = NULL;
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  if (w.len != n || memcmp(w.data, want, n) != 0) {
    CU_FAIL("unexpected encoding");
    fprintf(stderr, "\n  %s: want %s, got", dump(o), hex);
    for (size_t i = 0; i < w.len; i++) fprintf(stderr, " %02x", w.data[i]);
    fprintf(stderr, "\n");
  }
  CU_ASSERT_EQUAL(decode(want, n, NULL, &back, NULL), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  mpx_obj_release(back);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

/* These bytes decode to o; takes o. */
static void decodes_as(const char *hex, mpx_obj_t *o) {
  uint8_t in[256];
  size_t n = unhex(hex, in);
  mpx_obj_t *got = NULL;
  CU_ASSERT_EQUAL(decode(in, n, NULL, &got, NULL), 0);
  if (!mpx_obj_equal(o, got)) {
    CU_FAIL("unexpected value");
    fprintf(stderr, "\n  %s: want %s, ", hex, dump(o));
    fprintf(stderr, "got %s\n", dump(got));
  }
  mpx_obj_release(got);
  mpx_obj_release(o);
}

/* These bytes are MPX_ECODEC at that offset, the message containing
 * `what`. */
static void rejects(const char *hex, size_t at, const char *what) {
  uint8_t in[256];
  size_t n = unhex(hex, in);
  mpx_codec_error_t err;
  mpx_obj_t *got = NULL;
  memset(&err, 0, sizeof(err));
  CU_ASSERT_EQUAL(decode(in, n, NULL, &got, &err), MPX_ECODEC);
  if (err.offset != at || strstr(err.msg, what) == NULL) {
    CU_FAIL("unexpected error");
    fprintf(stderr, "\n  %s: want byte %zu '%s', got byte %zu '%s'\n", hex,
            at, what, err.offset, err.msg);
  }
}

/* ---- tests ------------------------------------------------------------- */

static void test_descriptor(void) {
  const mpx_codec_t *c = codec();
  CU_ASSERT_STRING_EQUAL(c->name, "msgpack");
  CU_ASSERT_STRING_EQUAL(c->content_type, "application/msgpack");
  CU_ASSERT_PTR_NOT_NULL(c->size_hint);
  CU_ASSERT_PTR_NOT_NULL(c->frame_len);
}

static const char LE_2_70[] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40};
static const char LE_M2_70[] = {0, 0, 0, 0, 0, 0, 0, 0, (char)0xc0};
static const char LE_U64MAX[] = {-1, -1, -1, -1, -1, -1, -1, -1, 0};
static const char LE_2_63[] = {0, 0, 0, 0, 0, 0, 0, (char)0x80, 0};
static const char LE_MIN_1[] = {-1, -1, -1, -1, -1, -1, -1, 0x7f, -1};

static void test_exact_bytes(void) {
  encodes_as(mpx_obj_null(), "c0");
  encodes_as(mpx_obj_bool(1), "c3");
  encodes_as(mpx_obj_bool(0), "c2");
  encodes_as(I(1), "01");
  encodes_as(I(-1), "ff");
  encodes_as(I(-33), "d0 df");
  encodes_as(I(128), "cc 80");
  encodes_as(I(INT64_MAX), "cf 7f ff ff ff ff ff ff ff");
  encodes_as(I(INT64_MIN), "d3 80 00 00 00 00 00 00 00");
  encodes_as(F(1.5), "cb 3f f8 00 00 00 00 00 00");
  encodes_as(S("a"), "a1 61");
  encodes_as(mpx_obj_str("", 0), "a0");
  encodes_as(mpx_obj_bytes("\0", 1), "c4 01 00");
  encodes_as(A(0), "90");
  encodes_as(M(0), "80");
  encodes_as(A(2, I(1), S("a")), "92 01 a1 61");
  encodes_as(M(1, S("k"), mpx_obj_null()), "81 a1 6b c0");
  /* mpx's ext types: 1 tuple, 2 bigint, 3 opaque, smallest header. */
  encodes_as(T(0), "d4 01 90");
  encodes_as(T(1, I(7)), "d5 01 91 07");
  encodes_as(T(2, I(1), I(2)), "c7 03 01 92 01 02");
  encodes_as(BIG(LE_U64MAX, 9), "cf ff ff ff ff ff ff ff ff");
  encodes_as(BIG(LE_2_63, 9), "cf 80 00 00 00 00 00 00 00");
  encodes_as(BIG(LE_2_70, 9), "c7 09 02 00 00 00 00 00 00 00 00 40");
  encodes_as(BIG(LE_M2_70, 9), "c7 09 02 00 00 00 00 00 00 00 00 c0");
  encodes_as(BIG(LE_MIN_1, 9), "c7 09 02 ff ff ff ff ff ff ff 7f ff");
  encodes_as(mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "m", "n", NULL, NULL),
             "d7 03 95 00 a1 6d a1 6e c0 c0");
  encodes_as(mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "n", T(0), I(5)),
             "c7 0a 03 95 01 a1 6d a1 6e d4 01 90 05");
}

static void test_decode_forms(void) {
  /* Every width of every format, as other encoders write them. */
  decodes_as("ca 3f c0 00 00", F(1.5));
  decodes_as("d0 80", I(-128));
  decodes_as("d1 80 00", I(-32768));
  decodes_as("d2 80 00 00 00", I(INT32_MIN));
  decodes_as("cd 01 00", I(256));
  decodes_as("ce ff ff ff ff", I(UINT32_MAX));
  decodes_as("cf 00 00 00 00 00 00 00 05", I(5));
  decodes_as("cf 80 00 00 00 00 00 00 00", BIG(LE_2_63, 9));
  decodes_as("e0", I(-32));
  decodes_as("7f", I(127));
  decodes_as("d9 01 61", S("a"));
  decodes_as("da 00 01 61", S("a"));
  decodes_as("db 00 00 00 01 61", S("a"));
  decodes_as("c5 00 01 00", mpx_obj_bytes("\0", 1));
  decodes_as("c6 00 00 00 00", mpx_obj_bytes("", 0));
  decodes_as("dc 00 01 c0", A(1, mpx_obj_null()));
  decodes_as("dd 00 00 00 00", A(0));
  decodes_as("de 00 01 01 02", M(1, I(1), I(2)));
  decodes_as("df 00 00 00 01 01 02", M(1, I(1), I(2)));
  decodes_as("c9 00 00 00 01 01 90", T(0));
  decodes_as("c8 00 04 01 dc 00 01 c3", T(1, mpx_obj_bool(1)));
  decodes_as("d4 02 ff", I(-1)); /* a bigint that fits is an int */
  decodes_as("d8 02 00 00 00 00 00 00 00 00 40 00 00 00 00 00 00 00",
             BIG(LE_2_70, 9));
  /* Keys of any type; a repeated key keeps its place, the last value. */
  decodes_as("83 01 0a 02 14 01 1e", M(2, I(1), I(30), I(2), I(20)));
  decodes_as("82 91 01 c0 d4 01 90 c3",
             M(2, A(1, I(1)), mpx_obj_null(), T(0), mpx_obj_bool(1)));
}

static void test_roundtrip_types(void) {
  roundtrip(mpx_obj_null());
  roundtrip(mpx_obj_bool(1));
  roundtrip(I(0));
  roundtrip(I(INT64_MAX));
  roundtrip(I(INT64_MIN));
  roundtrip(BIG(LE_2_70, 9));
  roundtrip(BIG(LE_M2_70, 9));
  roundtrip(BIG(LE_U64MAX, 9));
  roundtrip(BIG(LE_MIN_1, 9));
  roundtrip(F(0.1));
  roundtrip(F(-1e300));
  roundtrip(F(INFINITY));
  roundtrip(F(-INFINITY));
  roundtrip(F(NAN));
  roundtrip(S("h\xc3\xa9llo \xe2\x82\xac"));
  roundtrip(mpx_obj_str("a\0b", 3));
  roundtrip(mpx_obj_str("\xff\xfe not utf-8 \xc0\x80", 15));
  roundtrip(mpx_obj_bytes("\0\1\2\xff", 4));
  roundtrip(A(0));
  roundtrip(T(0));
  roundtrip(M(0));
  roundtrip(mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "pkg.mod", "Cls",
                           T(2, I(1), S("x")), M(1, S("a"), I(1))));
  roundtrip(mpx_obj_opaque(MPX_OPAQUE_REDUCE, "collections", "OrderedDict",
                           T(1, A(0)), NULL));
  roundtrip(mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "builtins", "int", NULL, NULL));
  /* Nested, with every type inside. */
  roundtrip(M(4, S("list"),
              A(6, I(1), F(2.5), S("three"), mpx_obj_bytes("4", 1),
                T(2, mpx_obj_null(), mpx_obj_bool(0)), M(0)),
              I(5), T(1, T(1, T(0))), A(1, BIG(LE_2_70, 9)),
              M(1, mpx_obj_bytes("k", 1), A(0)), S("op"),
              mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "f",
                             T(1, M(1, I(1), A(1, T(0)))), NULL)));
  /* Sizes at every header boundary. */
  static const size_t sizes[] = {15, 16, 31, 32, 255, 256, 65535, 65536};
  for (size_t i = 0; i < sizeof(sizes) / sizeof(*sizes); i++) {
    size_t n = sizes[i];
    char *buf = malloc(n);
    mpx_obj_t *a = mpx_obj_array(n), *m = mpx_obj_map(n), *t = mpx_obj_tuple(n);
    memset(buf, 'x', n);
    roundtrip(mpx_obj_str(buf, n));
    roundtrip(mpx_obj_bytes(buf, n));
    for (size_t j = 0; j < n; j++) {
      mpx_obj_append(a, I((int64_t)j));
      mpx_obj_append(t, I((int64_t)j));
      mpx_obj_map_set(m, I((int64_t)j), mpx_obj_null());
    }
    roundtrip(a);
    roundtrip(t);
    roundtrip(m);
    free(buf);
  }
}

static void test_negative_zero_and_nan(void) {
  mpx_wbuf_t w;
  mpx_obj_t *o = F(-0.0), *back = NULL;
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  CU_ASSERT_EQUAL(decode(w.data, w.len, NULL, &back, NULL), 0);
  CU_ASSERT(signbit(mpx_obj_get_float(back)));
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_reset(&w);
  o = F(NAN);
  CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  CU_ASSERT_EQUAL(decode(w.data, w.len, NULL, &back, NULL), 0);
  CU_ASSERT(isnan(mpx_obj_get_float(back)));
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_free(&w);
}

static void test_big_payload_borrowed(void) {
  const size_t n = (size_t)16 << 20;
  mpx_decode_opts_t bo = {0};
  uint8_t *buf = malloc(n);
  mpx_obj_t *o, *back = NULL;
  const uint8_t *p;
  size_t len;
  mpx_wbuf_t w;
  for (size_t i = 0; i < n; i++) buf[i] = (uint8_t)(i ^ (i >> 9));
  o = A(2, mpx_obj_bytes(buf, n), mpx_obj_str((char *)buf, n));
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 1 + 2 * (5 + n));
  bo.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL_FATAL(decode(w.data, w.len, &bo, &back, NULL), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  /* Both point into the input: bin at byte 6, str at 6 + n + 5. */
  p = mpx_obj_bytes_data(mpx_obj_item(back, 0), &len);
  CU_ASSERT_PTR_EQUAL(p, w.data + 6);
  p = (const uint8_t *)mpx_obj_str_data(mpx_obj_item(back, 1), &len);
  CU_ASSERT_PTR_EQUAL(p, w.data + 6 + n + 5);
  mpx_obj_release(back);
  /* Without BORROW: copies. */
  CU_ASSERT_EQUAL_FATAL(decode(w.data, w.len, NULL, &back, NULL), 0);
  p = mpx_obj_bytes_data(mpx_obj_item(back, 0), &len);
  CU_ASSERT(p < w.data || p >= w.data + w.len);
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_free(&w);
  free(buf);
}

static void test_errors(void) {
  rejects("", 0, "empty");
  rejects("01 02", 1, "trailing");
  rejects("93 01 02 c1", 3, "0xc1");
  rejects("92 01", 0, "array of 2 items but only 1 bytes left");
  rejects("92 a1 61", 3, "truncated: a value expected");
  rejects("a3 61 62", 0, "truncated str");
  rejects("cd 01", 0, "truncated header");
  rejects("d4 05 00", 0, "unknown ext type 5");
  rejects("d6 ff 00 00 00 00", 0, "unknown ext type -1"); /* timestamp */
  rejects("c7 00 02", 0, "empty bigint");
  rejects("d4 01 01", 0, "not an array");
  rejects("c7 03 01 91 01 02", 5, "left over in tuple payload");
  rejects("c7 02 01 92 01 02", 0, "tuple of 2 items but only 1 bytes left");
  rejects("c7 03 01 92 a1 61 01", 6, "ext payload ends early");
  rejects("c7 05 03 95 00 a1 6d a1", 0, "only 4 bytes left");
  rejects("c7 06 03 95 00 a1 6d a1 6e c0", 9, "ext payload ends early");
  rejects("c7 04 03 93 00 a0 a0", 0, "array of 3, not 5");
  rejects("d7 03 95 07 a1 6d a1 6e c0 c0", 0, "kind");
  rejects("c7 07 03 95 00 01 a1 6e c0 c0", 0, "module is a int");
  rejects("d7 03 95 00 a1 6d a1 6e c0", 0, "truncated ext");
  rejects("d7 03 95 00 a1 00 a1 6e c0 c0", 0, "contains NUL");
}

static void test_limits(void) {
  mpx_decode_opts_t o = {0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL;
  uint8_t buf[1024];
  size_t i;

  /* max_depth: 0 means 200; containers nest up to it, not past. */
  for (i = 0; i < 200; i++) buf[i] = 0x91;
  buf[200] = 0xc0;
  CU_ASSERT_EQUAL(decode(buf, 201, NULL, &v, NULL), 0);
  mpx_obj_release(v);
  memset(buf, 0x91, 201);
  buf[201] = 0xc0;
  CU_ASSERT_EQUAL(decode(buf, 202, NULL, &v, &err), MPX_ECODEC);
  CU_ASSERT_EQUAL(err.offset, 200);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_depth 200"));
  o.max_depth = 5;
  CU_ASSERT_EQUAL(decode(buf + 196, 6, &o, &v, NULL), 0);
  mpx_obj_release(v);
  CU_ASSERT_EQUAL(decode(buf + 195, 7, &o, &v, &err), MPX_ECODEC);
  /* Tuples (ext) count as levels too. */
  {
    mpx_obj_t *t = T(0);
    mpx_wbuf_t w;
    for (i = 0; i < 200; i++) t = T(1, t);
    mpx_wbuf_init(&w);
    CU_ASSERT_EQUAL(mpx_codec_encode(codec(), t, &w, NULL), 0);
    CU_ASSERT_EQUAL(decode(w.data, w.len, NULL, &v, &err), MPX_ECODEC);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_depth"));
    o.max_depth = 201;
    CU_ASSERT_EQUAL(decode(w.data, w.len, &o, &v, NULL), 0);
    CU_ASSERT(mpx_obj_equal(t, v));
    mpx_obj_release(v);
    mpx_obj_release(t);
    mpx_wbuf_free(&w);
  }
  /* max_items: all containers together; a map entry is one. */
  o.max_depth = 0;
  o.max_items = 3;
  i = unhex("92 91 01 c0", buf);
  CU_ASSERT_EQUAL(decode(buf, i, &o, &v, NULL), 0);
  mpx_obj_release(v);
  i = unhex("92 92 01 01 c0", buf);
  CU_ASSERT_EQUAL(decode(buf, i, &o, &v, &err), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_items"));
  i = unhex("83 01 01 02 02 03 03", buf);
  CU_ASSERT_EQUAL(decode(buf, i, &o, &v, NULL), 0);
  mpx_obj_release(v);
  /* max_bytes: str, bin and bigint payloads together. */
  o.max_items = 0;
  o.max_bytes = 4;
  i = unhex("92 a2 61 62 c4 02 00 00", buf);
  CU_ASSERT_EQUAL(decode(buf, i, &o, &v, NULL), 0);
  mpx_obj_release(v);
  i = unhex("92 a2 61 62 c4 03 00 00 00", buf);
  CU_ASSERT_EQUAL(decode(buf, i, &o, &v, &err), MPX_ECODEC);
  CU_ASSERT_EQUAL(err.offset, 4);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_bytes"));
}

/* Headers that claim far more than the input holds. */
static const char *const hostile[] = {
    "dd ff ff ff ff",
    "df ff ff ff ff",
    "c6 ff ff ff ff",
    "db ff ff ff ff",
    "c9 ff ff ff ff 01",
    "c9 00 00 00 05 01 dd ff ff ff ff",
    "91 dd 00 01 00 00 c0 c0",
    "de 00 03 c0 c0 c0 c0 c0",
};

static int hostile_all_rejected(void) {
  uint8_t in[64];
  mpx_codec_error_t err;
  mpx_obj_t *v;
  int bad = 0;
  size_t n, i, k;
  uint8_t *big;
  for (i = 0; i < sizeof(hostile) / sizeof(*hostile); i++) {
    n = unhex(hostile[i], in);
    v = NULL;
    if (codec()->decode(in, n, NULL, &v, &err) != MPX_ECODEC) bad++;
  }
  /* 1 MiB of nested array32 headers, each claiming 2^16 items: fine one
   * by one, but together they promise more values than there are bytes. */
  n = (size_t)1 << 20;
  big = malloc(n);
  for (k = 0; k + 5 <= n; k += 5) memcpy(big + k, "\xdd\x00\x01\x00\x00", 5);
  memset(big + k, 0xc0, n - k);
  v = NULL;
  if (codec()->decode(big, n, NULL, &v, &err) != MPX_ECODEC ||
      strstr(err.msg, "bytes left") == NULL)
    bad++;
  free(big);
  return bad;
}

static void test_hostile_lengths(void) {
  pid_t pid;
  CU_ASSERT_EQUAL(hostile_all_rejected(), 0);
  if (UNDER_ASAN) return; /* ASan reserves terabytes of address space */
  /* Again in 1 GiB of address space: decoding must not try to allocate
   * what the headers claim (2^32 items would take 32 GiB). */
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    struct rlimit rl;
    getrlimit(RLIMIT_AS, &rl);
    rl.rlim_cur = (rlim_t)1 << 30; /* libraries and the 16 MiB tests fit */
    setrlimit(RLIMIT_AS, &rl);
    _exit(hostile_all_rejected() == 0 ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
}

/* A few encodings used by the prefix and corruption sweeps. */
static mpx_obj_t *sample(int i) {
  switch (i) {
  case 0:
    return M(3, S("key"), A(3, I(1), I(-300), F(0.5)), I(70000),
             T(2, mpx_obj_bytes("\1\2", 2), mpx_obj_null()), S("s"),
             BIG(LE_2_70, 9));
  case 1:
    return mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "f",
                          T(2, I(1), M(1, S("a"), mpx_obj_bool(1))), S("st"));
  default:
    return A(4, BIG(LE_M2_70, 9), I(INT64_MIN), mpx_obj_str("\xff", 1),
             T(1, A(1, M(0))));
  }
}

static void test_every_prefix(void) {
  for (int s = 0; s < 3; s++) {
    mpx_obj_t *o = sample(s), *v;
    mpx_codec_error_t err;
    mpx_wbuf_t w;
    size_t need;
    mpx_wbuf_init(&w);
    CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
    for (size_t k = 0; k < w.len; k++) {
      CU_ASSERT_EQUAL(decode(w.data, k, NULL, &v, &err), MPX_ECODEC);
      CU_ASSERT(err.offset <= k);
      /* frame_len: more needed, at least one byte more. */
      CU_ASSERT_EQUAL(codec()->frame_len(w.data, k, &need, NULL), 0);
      CU_ASSERT(need > k && need <= w.len);
    }
    /* With more after it, frame_len finds where it ends. */
    CU_ASSERT_EQUAL(mpx_wbuf_append(&w, "\xc0\xc1", 2), 0);
    CU_ASSERT_EQUAL(codec()->frame_len(w.data, w.len, &need, NULL), 0);
    CU_ASSERT_EQUAL(need, w.len - 2);
    mpx_wbuf_free(&w);
    mpx_obj_release(o);
  }
}

/* Every byte value at every position: an error or a value, no crash. */
static void test_corruption(void) {
  for (int s = 0; s < 3; s++) {
    mpx_obj_t *o = sample(s), *v;
    mpx_codec_error_t err;
    mpx_wbuf_t w;
    size_t need, ok = 0, bad = 0;
    mpx_wbuf_init(&w);
    CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
    for (size_t k = 0; k < w.len; k++) {
      uint8_t keep = w.data[k];
      for (int b = 0; b < 256; b++) {
        int rc;
        w.data[k] = (uint8_t)b;
        rc = decode(w.data, w.len, NULL, &v, &err);
        CU_ASSERT(rc == 0 || rc == MPX_ECODEC);
        if (rc == 0) {
          ok++;
          mpx_obj_release(v);
        } else {
          bad++;
          CU_ASSERT(err.offset <= w.len);
        }
        rc = codec()->frame_len(w.data, w.len, &need, NULL);
        CU_ASSERT(rc == 0 || rc == MPX_ECODEC);
      }
      w.data[k] = keep;
    }
    CU_ASSERT(ok > 0 && bad > 0);
    mpx_wbuf_free(&w);
    mpx_obj_release(o);
  }
}

static void test_fixed_buffer(void) {
  mpx_obj_t *o = sample(0);
  uint8_t mem[256];
  mpx_wbuf_t w;
  size_t full;
  mpx_wbuf_init_fixed(&w, mem, sizeof(mem));
  CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  full = w.len;
  /* Every smaller buffer: MPX_ENOBUFS, and nothing left half-written. */
  for (size_t n = 0; n < full; n++) {
    mpx_wbuf_init_fixed(&w, mem, n);
    CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), MPX_ENOBUFS);
    CU_ASSERT_EQUAL(w.len, 0);
  }
  mpx_obj_release(o);
}

MPX_TEST_MAIN("codec_msgpack", MPX_TEST(test_descriptor),
              MPX_TEST(test_exact_bytes), MPX_TEST(test_decode_forms),
              MPX_TEST(test_roundtrip_types),
              MPX_TEST(test_negative_zero_and_nan),
              MPX_TEST(test_big_payload_borrowed), MPX_TEST(test_errors),
              MPX_TEST(test_limits), MPX_TEST(test_hostile_lengths),
              MPX_TEST(test_every_prefix), MPX_TEST(test_corruption),
              MPX_TEST(test_fixed_buffer))
