/* The raw codec: bytes through unchanged, zero-copy decode with
 * MPX_DECODE_BORROW, nothing but bytes accepted, fixed buffers. Loaded by
 * name from <build>/plugins, as users load it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mpx.h"
#include "../mpx_test.h"

static const mpx_codec_t *codec(void) {
  const mpx_codec_t *c = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, "raw"), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  return c;
}

static void test_descriptor(void) {
  const mpx_codec_t *c = codec(), *again = NULL;
  CU_ASSERT_STRING_EQUAL(c->name, "raw");
  CU_ASSERT_STRING_EQUAL(c->content_type, "application/octet-stream");
  CU_ASSERT_PTR_NOT_NULL(c->size_hint);
  CU_ASSERT_PTR_NULL(c->frame_len);
  CU_ASSERT_EQUAL(mpx_codec_check(c, "raw"), 0);
  CU_ASSERT_EQUAL(mpx_codec_load(&again, "raw"), 0);
  CU_ASSERT_PTR_EQUAL(again, c);
}

/* Encode and decode n bytes of a pattern; size_hint is exact. */
static void roundtrip(size_t n) {
  const mpx_codec_t *c = codec();
  uint8_t *p = malloc(n ? n : 1);
  mpx_obj_t *b, *back = NULL;
  mpx_wbuf_t w;
  size_t len;
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 131 + (i >> 8));
  b = mpx_obj_bytes(p, n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(b);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(c->size_hint(b, NULL), n);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(c, b, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, n);
  CU_ASSERT(n == 0 || memcmp(w.data, p, n) == 0);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, w.data, w.len, NULL, &back), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(back), MPX_OBJ_BYTES);
  CU_ASSERT(mpx_obj_equal(b, back));
  CU_ASSERT_PTR_NOT_NULL(mpx_obj_bytes_data(back, &len));
  CU_ASSERT_EQUAL(len, n);
  mpx_obj_release(back);
  mpx_obj_release(b);
  mpx_wbuf_free(&w);
  free(p);
}

static void test_roundtrip(void) {
  roundtrip(0);
  roundtrip(1);
  roundtrip(1000);
  roundtrip((size_t)16 << 20);
}

static void test_decode_copies_or_borrows(void) {
  const mpx_codec_t *c = codec();
  static const char in[] = "hello, raw";
  mpx_decode_opts_t o = {0};
  mpx_obj_t *b = NULL;
  size_t n;
  /* Default: a copy. */
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, in, 10, NULL, &b), 0);
  CU_ASSERT_PTR_NOT_EQUAL(mpx_obj_bytes_data(b, &n), in);
  CU_ASSERT_EQUAL(n, 10);
  mpx_obj_release(b);
  /* Borrowed: the very same memory. */
  o.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, in, 10, &o, &b), 0);
  CU_ASSERT_PTR_EQUAL(mpx_obj_bytes_data(b, &n), in);
  CU_ASSERT_EQUAL(n, 10);
  mpx_obj_release(b);
  /* Empty, with and without a pointer. */
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, NULL, 0, &o, &b), 0);
  CU_ASSERT_EQUAL(mpx_obj_len(b), 0);
  mpx_obj_release(b);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, in, 0, NULL, &b), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(b), MPX_OBJ_BYTES);
  CU_ASSERT_EQUAL(mpx_obj_len(b), 0);
  mpx_obj_release(b);
}

static void test_encode_rejects_non_bytes(void) {
  const mpx_codec_t *c = codec();
  mpx_obj_t *objs[5];
  mpx_codec_error_t err;
  mpx_wbuf_t w;
  objs[0] = mpx_obj_str("text", SIZE_MAX);
  objs[1] = mpx_obj_int(1);
  objs[2] = mpx_obj_null();
  objs[3] = mpx_obj_array(0);
  objs[4] = mpx_obj_tuple(0);
  mpx_wbuf_init(&w);
  for (int i = 0; i < 5; i++) {
    CU_ASSERT_EQUAL(mpx_codec_encode(c, objs[i], &w, NULL), MPX_ECODEC);
    CU_ASSERT_EQUAL(w.len, 0);
    memset(&err, 0, sizeof(err));
    CU_ASSERT_EQUAL(c->encode(objs[i], &w, NULL, &err), MPX_ECODEC);
    CU_ASSERT_EQUAL(err.offset, SIZE_MAX);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "bytes only"));
    CU_ASSERT_EQUAL(c->size_hint(objs[i], NULL), 0);
    mpx_obj_release(objs[i]);
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "bytes only"));
  mpx_wbuf_free(&w);
}

static void test_fixed_buffer(void) {
  const mpx_codec_t *c = codec();
  uint8_t mem[16];
  mpx_obj_t *b = mpx_obj_bytes("0123456789", 10);
  mpx_wbuf_t w;
  /* Appends after what is there; too little room is MPX_ENOBUFS. */
  mpx_wbuf_init_fixed(&w, mem, 9);
  CU_ASSERT_EQUAL(mpx_codec_encode(c, b, &w, NULL), MPX_ENOBUFS);
  mpx_wbuf_init_fixed(&w, mem, 16);
  CU_ASSERT_EQUAL(mpx_wbuf_append(&w, "ab", 2), 0);
  CU_ASSERT_EQUAL(mpx_codec_encode(c, b, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 12);
  CU_ASSERT_EQUAL(memcmp(mem, "ab0123456789", 12), 0);
  CU_ASSERT_EQUAL(mpx_codec_encode(c, b, &w, NULL), MPX_ENOBUFS);
  CU_ASSERT_EQUAL(w.len, 12);
  /* Exactly size_hint bytes is enough. */
  mpx_wbuf_init_fixed(&w, mem, c->size_hint(b, NULL));
  CU_ASSERT_EQUAL(mpx_codec_encode(c, b, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 10);
  mpx_obj_release(b);
}

static void test_max_bytes(void) {
  const mpx_codec_t *c = codec();
  mpx_decode_opts_t o = {0};
  mpx_codec_error_t err;
  mpx_obj_t *b = NULL;
  o.max_bytes = 4;
  CU_ASSERT_EQUAL(mpx_codec_decode(c, "1234", 4, &o, &b), 0);
  mpx_obj_release(b);
  b = NULL;
  CU_ASSERT_EQUAL(c->decode("12345", 5, &o, &b, &err), MPX_ECODEC);
  CU_ASSERT_PTR_NULL(b);
  CU_ASSERT_EQUAL(err.offset, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_bytes"));
}

/* Every prefix of an input is a valid raw value of that prefix. */
static void test_every_prefix(void) {
  const mpx_codec_t *c = codec();
  static const char in[] = "\x00\x01\xff any bytes at all \x80";
  for (size_t n = 0; n < sizeof(in); n++) {
    mpx_obj_t *b = NULL;
    size_t len;
    const void *p;
    CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(c, in, n, NULL, &b), 0);
    p = mpx_obj_bytes_data(b, &len);
    CU_ASSERT_EQUAL(len, n);
    CU_ASSERT(n == 0 || memcmp(p, in, n) == 0);
    mpx_obj_release(b);
  }
}

MPX_TEST_MAIN("codec_raw", MPX_TEST(test_descriptor), MPX_TEST(test_roundtrip),
              MPX_TEST(test_decode_copies_or_borrows),
              MPX_TEST(test_encode_rejects_non_bytes),
              MPX_TEST(test_fixed_buffer), MPX_TEST(test_max_bytes),
              MPX_TEST(test_every_prefix))
