/* The json codec: exact text of every form (plain and $-tagged), what it
 * reads (Python's output included: py_json.py gen / check), edge values,
 * limits, and hostile input: every prefix, single-byte corruptions, deep
 * nesting, huge integers. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"
#include "objbuild.h"

static const mpx_codec_t *codec(void) {
  const mpx_codec_t *c = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, "json"), 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(c);
  return c;
}

/* ---- building values ---------------------------------------------------- */



static const char LE_2_70[] = {0, 0, 0, 0, 0, 0, 0, 0, 0x40};
static const char LE_M2_70[] = {0, 0, 0, 0, 0, 0, 0, 0, (char)0xc0};
static const char LE_U64MAX[] = {-1, -1, -1, -1, -1, -1, -1, -1, 0};
static const char LE_2_63[] = {0, 0, 0, 0, 0, 0, 0, (char)0x80, 0};
static const char LE_MIN_1[] = {-1, -1, -1, -1, -1, -1, -1, 0x7f, -1};

static char *dump(const mpx_obj_t *o) {
  static char buf[2][512];
  static int i;
  i = !i;
  mpx_obj_dump(o, buf[i], sizeof(buf[i]));
  return buf[i];
}

/* ---- checks ------------------------------------------------------------- */

static int decode(const void *p, size_t n, const mpx_decode_opts_t *o,
                  mpx_obj_t **out, mpx_codec_error_t *err) {
  mpx_codec_error_t e;
  int rc;
  *out = NULL;
  memset(&e, 0, sizeof(e));
  rc = codec()->decode(p, n, o, out, err ? err : &e);
  if (rc != 0) CU_ASSERT_PTR_NULL(*out);
  return rc;
}

static int encode(const mpx_obj_t *o, mpx_wbuf_t *w, mpx_codec_error_t *err) {
  mpx_codec_error_t e;
  memset(&e, 0, sizeof(e));
  return codec()->encode(o, w, NULL, err ? err : &e);
}

/* Encodes, decodes (copied and borrowed), compares; takes o. */
static void roundtrip(mpx_obj_t *o) {
  mpx_decode_opts_t bo = {0};
  mpx_obj_t *back = NULL;
  mpx_wbuf_t w;
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  CU_ASSERT_EQUAL(mpx_codec_decode(codec(), w.data, w.len, NULL, &back), 0);
  if (!mpx_obj_equal(o, back)) {
    CU_FAIL("round trip differs");
    fprintf(stderr, "\n  sent %s\n  as   %.*s\n", dump(o), (int)w.len,
            (char *)w.data);
    fprintf(stderr, "  got  %s (%s)\n", dump(back), mpx_last_error());
  }
  mpx_obj_release(back);
  bo.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL(mpx_codec_decode(codec(), w.data, w.len, &bo, &back), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  mpx_obj_release(back);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

/* o encodes to exactly `text`, which decodes back to o; takes o. */
static void encodes_as(mpx_obj_t *o, const char *text) {
  mpx_wbuf_t w;
  mpx_obj_t *back = NULL;
  size_t n = strlen(text);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(encode(o, &w, NULL), 0);
  if (w.len != n || memcmp(w.data, text, n) != 0) {
    CU_FAIL("unexpected encoding");
    fprintf(stderr, "\n  %s: want %s, got %.*s\n", dump(o), text,
            (int)w.len, (char *)w.data);
  }
  CU_ASSERT_EQUAL(decode(text, n, NULL, &back, NULL), 0);
  if (!mpx_obj_equal(o, back)) {
    CU_FAIL("does not decode back");
    fprintf(stderr, "\n  %s: got %s\n", text, dump(back));
  }
  mpx_obj_release(back);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

/* text (n bytes; SIZE_MAX: strlen) decodes to o; takes o. */
static void decodes_as_n(const char *text, size_t n, mpx_obj_t *o) {
  mpx_obj_t *got = NULL;
  mpx_codec_error_t err;
  if (n == SIZE_MAX) n = strlen(text);
  memset(&err, 0, sizeof(err));
  CU_ASSERT_EQUAL(decode(text, n, NULL, &got, &err), 0);
  if (!mpx_obj_equal(o, got)) {
    CU_FAIL("unexpected value");
    fprintf(stderr, "\n  %s: want %s, ", text, dump(o));
    fprintf(stderr, "got %s (%s)\n", dump(got), err.msg);
  }
  mpx_obj_release(got);
  mpx_obj_release(o);
}
#define decodes_as(text, o) decodes_as_n(text, SIZE_MAX, o)

/* text is MPX_ECODEC at byte `at`, the message containing `what`. */
static void rejects_n(const char *text, size_t n, size_t at,
                      const char *what) {
  mpx_codec_error_t err;
  mpx_obj_t *got = NULL;
  if (n == SIZE_MAX) n = strlen(text);
  memset(&err, 0, sizeof(err));
  CU_ASSERT_EQUAL(decode(text, n, NULL, &got, &err), MPX_ECODEC);
  if (err.offset != at || strstr(err.msg, what) == NULL) {
    CU_FAIL("unexpected error");
    fprintf(stderr, "\n  %s: want byte %zu '%s', got byte %zu '%s'\n", text,
            at, what, err.offset, err.msg);
  }
}
#define rejects(text, at, what) rejects_n(text, SIZE_MAX, at, what)

/* ---- tests -------------------------------------------------------------- */

static void test_descriptor(void) {
  const mpx_codec_t *c = codec();
  CU_ASSERT_STRING_EQUAL(c->name, "json");
  CU_ASSERT_STRING_EQUAL(c->content_type, "application/json");
}

static void test_exact_text(void) {
  encodes_as(NUL(), "null");
  encodes_as(TRUE(), "true");
  encodes_as(FALSE(), "false");
  encodes_as(I(0), "0");
  encodes_as(I(-1), "-1");
  encodes_as(I(INT64_MAX), "9223372036854775807");
  encodes_as(I(INT64_MIN), "-9223372036854775808");
  encodes_as(F(1.5), "1.5");
  encodes_as(F(1.0), "1.0");
  encodes_as(F(0.1), "0.10000000000000001"); /* 17 digits: exact */
  encodes_as(F(-0.0), "-0.0");
  encodes_as(F(1e22), "1e22");
  encodes_as(S("a\"b\\c/\n\x01\x7f"), "\"a\\\"b\\\\c/\\n\\u0001\x7f\"");
  encodes_as(S("h\xc3\xa9 \xf0\x9f\x98\x80"), "\"h\xc3\xa9 \xf0\x9f\x98\x80\"");
  encodes_as(mpx_obj_str("a\0b", 3), "\"a\\u0000b\"");
  encodes_as(A(0), "[]");
  encodes_as(M(0), "{}");
  encodes_as(A(3, I(1), S("a"), A(1, NUL())), "[1,\"a\",[null]]");
  encodes_as(M(2, S("k"), NUL(), S("j"), A(1, TRUE())),
             "{\"k\":null,\"j\":[true]}");
  encodes_as(M(1, mpx_obj_str("a\0b", 3), I(1)), "{\"a\\u0000b\":1}");
  /* The tagged forms. */
  encodes_as(mpx_obj_bytes("\0\xff", 2), "{\"$bytes\":\"AP8=\"}");
  encodes_as(mpx_obj_bytes("", 0), "{\"$bytes\":\"\"}");
  encodes_as(mpx_obj_bytes("abc", 3), "{\"$bytes\":\"YWJj\"}");
  encodes_as(mpx_obj_bytes("ab", 2), "{\"$bytes\":\"YWI=\"}");
  encodes_as(T(2, I(1), I(2)), "{\"$tuple\":[1,2]}");
  encodes_as(T(0), "{\"$tuple\":[]}");
  encodes_as(BIG(LE_2_70, 9), "{\"$bigint\":\"1180591620717411303424\"}");
  encodes_as(BIG(LE_M2_70, 9), "{\"$bigint\":\"-1180591620717411303424\"}");
  encodes_as(BIG(LE_2_63, 9), "{\"$bigint\":\"9223372036854775808\"}");
  encodes_as(BIG(LE_MIN_1, 9), "{\"$bigint\":\"-9223372036854775809\"}");
  encodes_as(BIG(LE_U64MAX, 9), "{\"$bigint\":\"18446744073709551615\"}");
  encodes_as(F(NAN), "{\"$float\":\"nan\"}");
  encodes_as(F(INFINITY), "{\"$float\":\"inf\"}");
  encodes_as(F(-INFINITY), "{\"$float\":\"-inf\"}");
  encodes_as(mpx_obj_str("\xff", 1), "{\"$str\":\"/w==\"}");
  encodes_as(M(1, I(1), S("a")), "{\"$map\":[[1,\"a\"]]}");
  encodes_as(M(2, S("a"), I(1), NUL(), I(2)),
             "{\"$map\":[[\"a\",1],[null,2]]}");
  encodes_as(M(1, S("$bytes"), I(1)), "{\"$map\":[[\"$bytes\",1]]}");
  encodes_as(M(1, S("$x"), I(1)), "{\"$x\":1}");
  encodes_as(M(2, S("$bytes"), I(1), S("b"), I(2)), "{\"$bytes\":1,\"b\":2}");
  encodes_as(M(1, mpx_obj_str("\xff", 1), I(1)),
             "{\"$map\":[[{\"$str\":\"/w==\"},1]]}");
  encodes_as(mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "builtins", "int", NULL, NULL),
             "{\"$opaque\":{\"kind\":\"global\",\"module\":\"builtins\","
             "\"name\":\"int\"}}");
  encodes_as(mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "f", T(1, I(1)),
                            M(1, S("a"), I(1))),
             "{\"$opaque\":{\"kind\":\"reduce\",\"module\":\"m\",\"name\":"
             "\"f\",\"args\":{\"$tuple\":[1]},\"state\":{\"a\":1}}}");
  encodes_as(mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "m", "C", NULL, I(2)),
             "{\"$opaque\":{\"kind\":\"newobj\",\"module\":\"m\",\"name\":"
             "\"C\",\"state\":2}}");
}

static void test_decode_forms(void) {
  mpx_obj_t *v;
  decodes_as(" \t\n\r 1 \n", I(1));
  decodes_as("-0", I(0));
  decodes_as("1E2", F(100.0));
  decodes_as("1e-2", F(0.01));
  decodes_as("0.5e+1", F(5.0));
  decodes_as("1e400", F(INFINITY)); /* as Python reads it */
  decodes_as("-1e400", F(-INFINITY));
  decodes_as("9223372036854775807", I(INT64_MAX));
  decodes_as("9223372036854775808", BIG(LE_2_63, 9));
  decodes_as("-9223372036854775808", I(INT64_MIN));
  decodes_as("-9223372036854775809", BIG(LE_MIN_1, 9));
  decodes_as("18446744073709551615", BIG(LE_U64MAX, 9));
  decodes_as("1180591620717411303424", BIG(LE_2_70, 9));
  decodes_as("-1180591620717411303424", BIG(LE_M2_70, 9));
  decodes_as("\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
             S("\xc3\xa9\xf0\x9f\x98\x80/\b\f\n\r\t\"\\"));
  decodes_as("\"\\u0000\\u20AC\"", mpx_obj_str("\0\xe2\x82\xac", 4));
  decodes_as("NaN", F(NAN));
  decodes_as("Infinity", F(INFINITY));
  decodes_as("-Infinity", F(-INFINITY));
  decodes_as("[1,[2,[3,{}]],[]]",
             A(3, I(1), A(2, I(2), A(2, I(3), M(0))), A(0)));
  /* A repeated key: the last value, at the first one's place. */
  decodes_as("{\"a\":1,\"b\":3,\"a\":2}", M(2, S("a"), I(2), S("b"), I(3)));
  decodes_as("{\"$x\":1}", M(1, S("$x"), I(1)));
  decodes_as("{\"$bigint\":\"0\"}", I(0));
  decodes_as("{\"$bigint\":\"-9223372036854775808\"}", I(INT64_MIN));
  decodes_as("{\"$bigint\":\"-5\"}", I(-5));
  decodes_as("{\"$str\":\"aGk=\"}", S("hi"));
  decodes_as("{\"$map\":[]}", M(0));
  decodes_as("{\"$map\":[[1,2],[1,3]]}", M(1, I(1), I(3)));
  decodes_as("{ \"$tuple\" : [ ] }", T(0));
  decodes_as("{\"$opaque\":{\"name\":\"n\",\"module\":\"m\","
             "\"kind\":\"newobj\",\"args\":null}}",
             mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "m", "n", NULL, NULL));
  /* -0.0 keeps its sign. */
  CU_ASSERT_EQUAL(decode("-0.0", 4, NULL, &v, NULL), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(v), MPX_OBJ_FLOAT);
  CU_ASSERT(signbit(mpx_obj_get_float(v)));
  mpx_obj_release(v);
}

static void test_errors(void) {
  rejects("", 0, "empty");
  rejects("   ", 3, "unexpected end of input");
  rejects("01", 1, "trailing");
  rejects("1 2", 2, "trailing");
  rejects("[1,]", 3, "unexpected ']'");
  rejects("[1 2]", 3, "',' or ']'");
  rejects("[1", 2, "unexpected end of input");
  rejects("{\"a\" 1}", 5, "':'");
  rejects("{1:2}", 1, "string key");
  rejects("{\"a\":1,}", 7, "string key");
  rejects("{\"a\":1]", 6, "',' or '}'");
  rejects("\"abc", 0, "unterminated");
  rejects("\"ab\\", 0, "unterminated");
  rejects("\"a\x01\"", 2, "control character 0x01");
  rejects("\"\\x\"", 1, "invalid escape");
  rejects("\"\\u12\"", 1, "invalid \\u escape");
  rejects("\"\\u12g4\"", 1, "invalid \\u escape");
  rejects("\"ab\\ud800\"", 3, "lone surrogate");
  rejects("\"\\udc00\"", 1, "lone surrogate");
  rejects("\"\\ud800\\u0041\"", 1, "lone surrogate");
  rejects("\"\xff\"", 0, "UTF-8");
  rejects("\"\xed\xa0\x80\"", 0, "UTF-8"); /* a surrogate, encoded */
  rejects("\"\xc0\x80\"", 0, "UTF-8");     /* overlong */
  rejects("1.", 2, "digit after '.'");
  rejects(".5", 0, "unexpected '.'");
  rejects("-", 1, "a digit");
  rejects("-a", 1, "a digit");
  rejects("+1", 0, "unexpected '+'");
  rejects("1e", 2, "exponent");
  rejects("1e+", 3, "exponent");
  rejects("tru", 0, "invalid literal");
  rejects("nul", 0, "invalid literal");
  rejects("-Inf", 1, "invalid literal");
  rejects("\xef\xbb\xbf" "1", 0, "unexpected byte 0xef"); /* a BOM */
  rejects_n("1\0", 2, 1, "trailing");
  /* Tagged values with the wrong shape: at the object's '{'. */
  rejects("[0,{\"$float\":\"x\"}]", 3, "$float: not nan, inf or -inf");
  rejects("{\"$bytes\":1}", 0, "$bytes wants a str, not int");
  rejects("{\"$bytes\":\"A\"}", 0, "invalid base64");
  rejects("{\"$bytes\":\"AB==\"}", 0, "invalid base64"); /* bits left */
  rejects("{\"$bytes\":\"A=AA\"}", 0, "invalid base64");
  rejects("{\"$str\":\"****\"}", 0, "invalid base64");
  rejects("{\"$bigint\":\"12a\"}", 0, "not a decimal");
  rejects("{\"$bigint\":\"007\"}", 0, "not a decimal");
  rejects("{\"$bigint\":\"-\"}", 0, "not a decimal");
  rejects("{\"$bigint\":5}", 0, "wants a str");
  rejects("{\"$float\":\"NaN\"}", 0, "not nan");
  rejects("{\"$tuple\":{}}", 0, "$tuple wants an array, not map");
  rejects("{\"$map\":[[1]]}", 0, "$map: item 0");
  rejects("{\"$map\":[[1,2],3]}", 0, "$map: item 1");
  rejects("{\"$opaque\":[]}", 0, "wants an object");
  rejects("{\"$opaque\":{\"kind\":\"x\",\"module\":\"m\",\"name\":\"n\"}}",
          0, "kind is not");
  rejects("{\"$opaque\":{\"module\":\"m\",\"name\":\"n\"}}", 0, "required");
  rejects("{\"$opaque\":{\"kind\":\"global\",\"module\":\"m\",\"name\":\"n\","
          "\"extra\":1}}",
          0, "unexpected key");
  rejects("{\"$opaque\":{\"kind\":\"global\",\"module\":1,\"name\":\"n\"}}", 0,
          "module is not a str");
  rejects("{\"$opaque\":{\"kind\":\"global\",\"module\":\"m\","
          "\"name\":\"\\u0000\"}}",
          0, "name contains NUL");
}

static void test_roundtrip_types(void) {
  roundtrip(NUL());
  roundtrip(TRUE());
  roundtrip(I(INT64_MAX));
  roundtrip(I(INT64_MIN));
  roundtrip(BIG(LE_2_70, 9));
  roundtrip(BIG(LE_M2_70, 9));
  roundtrip(BIG(LE_MIN_1, 9));
  roundtrip(F(0.1));
  roundtrip(F(1e300));
  roundtrip(F(-1e-300));
  roundtrip(F(5e-324));
  roundtrip(F(NAN));
  roundtrip(F(INFINITY));
  roundtrip(F(-INFINITY));
  roundtrip(S("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80"));
  roundtrip(mpx_obj_str("\xff\xfe not utf-8 \xc0\x80", 15));
  roundtrip(mpx_obj_str("", 0));
  roundtrip(mpx_obj_bytes("\0\1\2\xff", 4));
  roundtrip(A(0));
  roundtrip(T(0));
  roundtrip(M(0));
  roundtrip(mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, "pkg.mod", "Cls",
                           T(2, I(1), S("x")), M(1, S("a"), I(1))));
  roundtrip(mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "b\xffuiltins", "int", NULL,
                           NULL));
  roundtrip(M(5, S("list"),
              A(6, I(1), F(2.5), S("three"), mpx_obj_bytes("4", 1),
                T(2, NUL(), FALSE()), M(0)),
              I(5), T(1, T(1, T(0))), A(1, BIG(LE_2_70, 9)),
              M(1, mpx_obj_bytes("k", 1), A(0)), S("op"),
              mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "f",
                             T(1, M(1, I(1), A(1, T(0)))), NULL),
              S("$tuple"), S("not a tag: two keys")));
  /* Every base64 tail length. */
  for (size_t n = 0; n < 8; n++)
    roundtrip(mpx_obj_bytes("\xfb\xff\xbf\0\1\2\3", n));
}

static void test_borrow(void) {
  static const char in[] = "[\"abc\",\"a\\nb\",{\"key\":1}]";
  mpx_decode_opts_t bo = {0};
  mpx_obj_t *v = NULL;
  size_t n;
  bo.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL_FATAL(decode(in, sizeof(in) - 1, &bo, &v, NULL), 0);
  /* Unescaped strings (keys too) point into the input; escaped ones can't. */
  CU_ASSERT_PTR_EQUAL(mpx_obj_str_data(mpx_obj_item(v, 0), &n), in + 2);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_PTR_NOT_EQUAL(mpx_obj_str_data(mpx_obj_item(v, 1), &n), in + 8);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_PTR_EQUAL(
      mpx_obj_str_data(mpx_obj_map_key(mpx_obj_item(v, 2), 0), &n), in + 16);
  mpx_obj_release(v);
  CU_ASSERT_EQUAL_FATAL(decode(in, sizeof(in) - 1, NULL, &v, NULL), 0);
  CU_ASSERT_PTR_NOT_EQUAL(mpx_obj_str_data(mpx_obj_item(v, 0), &n), in + 2);
  mpx_obj_release(v);
}

static void test_big_payloads(void) {
  const size_t n = (size_t)16 << 20;
  mpx_decode_opts_t bo = {0};
  char *buf = malloc(n);
  mpx_obj_t *o, *back = NULL;
  mpx_wbuf_t w;
  size_t len;
  for (size_t i = 0; i < n; i++) buf[i] = (char)(i * 7 + (i >> 10));
  o = mpx_obj_bytes(buf, n);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL_FATAL(encode(o, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 13 + (n + 2) / 3 * 4);
  CU_ASSERT_EQUAL_FATAL(decode(w.data, w.len, NULL, &back, NULL), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  mpx_obj_release(back);
  mpx_obj_release(o);
  /* A plain 16 MiB string, borrowed in place. */
  for (size_t i = 0; i < n; i++) buf[i] = (char)('a' + i % 26);
  o = mpx_obj_str(buf, n);
  mpx_wbuf_reset(&w);
  CU_ASSERT_EQUAL_FATAL(encode(o, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, n + 2);
  bo.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL_FATAL(decode(w.data, w.len, &bo, &back, NULL), 0);
  CU_ASSERT(mpx_obj_equal(o, back));
  CU_ASSERT_PTR_EQUAL(mpx_obj_str_data(back, &len), (char *)w.data + 1);
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_free(&w);
  free(buf);
}

/* Integers of up to 4300 digits, either way; not one more. */
static void test_digit_limit(void) {
  char *t = malloc(4400);
  mpx_obj_t *v = NULL, *big;
  mpx_codec_error_t err;
  mpx_wbuf_t w;
  char *le;
  t[0] = '-';
  t[1] = '9';
  memset(t + 2, '7', 4299);
  CU_ASSERT_EQUAL_FATAL(decode(t, 4301, NULL, &v, NULL), 0); /* 4300 digits */
  CU_ASSERT_EQUAL(mpx_obj_type(v), MPX_OBJ_BIGINT);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(encode(v, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 4301 + 14);
  CU_ASSERT(memcmp(w.data + 12, t, 4301) == 0);
  mpx_obj_release(v);
  t[4301] = '7';
  CU_ASSERT_EQUAL(decode(t, 4302, NULL, &v, &err), MPX_ECODEC);
  CU_ASSERT_EQUAL(err.offset, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "more than 4300 digits"));
  /* Encoding: 1800 bytes of 0x55 make 4335 digits, 1785 make 4299. */
  le = malloc(1801);
  memset(le, 0x55, 1801);
  big = mpx_obj_bigint(le, 1800);
  mpx_wbuf_reset(&w);
  CU_ASSERT_EQUAL(encode(big, &w, &err), MPX_ECODEC);
  CU_ASSERT_EQUAL(err.offset, SIZE_MAX);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "4300 digits"));
  CU_ASSERT_EQUAL(w.len, 0);
  mpx_obj_release(big);
  big = mpx_obj_bigint(le, 1801);
  CU_ASSERT_EQUAL(encode(big, &w, &err), MPX_ECODEC);
  mpx_obj_release(big);
  roundtrip(mpx_obj_bigint(le, 1785));
  memset(le, 0xaa, 1785); /* negative */
  roundtrip(mpx_obj_bigint(le, 1785));
  free(le);
  free(t);
  mpx_wbuf_free(&w);
}

/* Nested arrays / objects n deep: "[[[...]]]" or {"a":{"a":...1}}. */
static char *nest(size_t n, int objects, size_t *len) {
  char *s = malloc(n * 6 + 2), *p = s;
  for (size_t i = 0; i < n; i++) {
    if (objects) memcpy(p, "{\"a\":", 5), p += 5;
    else *p++ = '[';
  }
  *p++ = '1';
  for (size_t i = 0; i < n; i++) *p++ = objects ? '}' : ']';
  *len = (size_t)(p - s);
  return s;
}

static void test_limits(void) {
  mpx_decode_opts_t o = {0};
  mpx_codec_error_t err;
  mpx_obj_t *v = NULL;
  size_t n;
  char *s;
  for (int objects = 0; objects < 2; objects++) {
    s = nest(200, objects, &n);
    CU_ASSERT_EQUAL(decode(s, n, NULL, &v, NULL), 0);
    mpx_obj_release(v);
    free(s);
    s = nest(201, objects, &n);
    CU_ASSERT_EQUAL(decode(s, n, NULL, &v, &err), MPX_ECODEC);
    CU_ASSERT_EQUAL(err.offset, objects ? 1000 : 200);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_depth 200"));
    o.max_depth = 201;
    CU_ASSERT_EQUAL(decode(s, n, &o, &v, NULL), 0);
    mpx_obj_release(v);
    free(s);
    o.max_depth = 0;
  }
  /* A tagged value's object and array are levels. */
  o.max_depth = 2;
  CU_ASSERT_EQUAL(decode("{\"$tuple\":[1]}", 14, &o, &v, NULL), 0);
  mpx_obj_release(v);
  CU_ASSERT_EQUAL(decode("[{\"$tuple\":[1]}]", 16, &o, &v, NULL), MPX_ECODEC);
  /* Far deeper than the C stack would take recursively. */
  o.max_depth = 1000000;
  s = nest(1000000, 0, &n);
  CU_ASSERT_EQUAL(decode(s, n, &o, &v, NULL), 0);
  mpx_obj_release(v);
  free(s);
  /* max_items: array elements and object entries, all together. */
  o.max_depth = 0;
  o.max_items = 3;
  CU_ASSERT_EQUAL(decode("[1,[2],{\"a\":[]}]", 16, &o, &v, NULL), MPX_ECODEC);
  CU_ASSERT_EQUAL(decode("[1,[2,3]]", 9, &o, &v, &err), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_items 3"));
  CU_ASSERT_EQUAL(decode("[1,[2]]", 7, &o, &v, NULL), 0);
  mpx_obj_release(v);
  CU_ASSERT_EQUAL(decode("{\"a\":1,\"b\":2,\"c\":3}", 19, &o, &v, NULL), 0);
  mpx_obj_release(v);
  /* max_bytes: decoded strings, keys included. */
  o.max_items = 0;
  o.max_bytes = 4;
  CU_ASSERT_EQUAL(decode("{\"ab\":\"c\\n\"}", 12, &o, &v, NULL), 0);
  mpx_obj_release(v);
  CU_ASSERT_EQUAL(decode("{\"ab\":\"cde\"}", 12, &o, &v, &err), MPX_ECODEC);
  CU_ASSERT_EQUAL(err.offset, 6);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "max_bytes 4"));
}

static void test_encode_depth(void) {
  mpx_obj_t *o = I(1), *t;
  mpx_codec_error_t err;
  mpx_wbuf_t w;
  for (int i = 0; i < 1000; i++) o = A(1, o);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(encode(o, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 2001);
  mpx_wbuf_reset(&w);
  t = A(1, o);
  CU_ASSERT_EQUAL(encode(t, &w, &err), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, "nesting deeper than 1000"));
  CU_ASSERT_EQUAL(w.len, 0);
  mpx_obj_release(t);
  mpx_wbuf_free(&w);
}

static void test_fixed_buffer(void) {
  mpx_obj_t *o = M(2, S("k"), A(3, I(1), mpx_obj_bytes("xyz", 3), F(0.5)),
                   I(7), T(1, S("\xff")));
  uint8_t mem[256];
  mpx_wbuf_t w;
  size_t full;
  mpx_wbuf_init_fixed(&w, mem, sizeof(mem));
  CU_ASSERT_EQUAL(encode(o, &w, NULL), 0);
  full = w.len;
  for (size_t n = 0; n < full; n++) {
    mpx_wbuf_init_fixed(&w, mem, n);
    CU_ASSERT_EQUAL(encode(o, &w, NULL), MPX_ENOBUFS);
    CU_ASSERT_EQUAL(w.len, 0);
  }
  mpx_obj_release(o);
}

static mpx_obj_t *sample(int i) {
  switch (i) {
  case 0:
    return M(4, S("key"), A(4, I(1), I(-300), F(0.5), S("\xc3\xa9\\\"")),
             S("b"), T(2, mpx_obj_bytes("\1\2\3\4", 4), NUL()), S("n"),
             BIG(LE_M2_70, 9), S("f"), A(2, F(NAN), F(-1e-5)));
  case 1:
    return mpx_obj_opaque(MPX_OPAQUE_REDUCE, "m", "f",
                          T(2, I(1), M(1, I(2), TRUE())), S("\xff"));
  default:
    return A(4, F(INFINITY), I(INT64_MIN), mpx_obj_str("a\nb", 3),
             M(2, S("$bytes"), A(0), S("u"), S("\xe2\x82\xac")));
  }
}

static void test_every_prefix(void) {
  for (int s = 0; s < 3; s++) {
    mpx_obj_t *o = sample(s), *v;
    mpx_codec_error_t err;
    mpx_wbuf_t w;
    mpx_wbuf_init(&w);
    CU_ASSERT_EQUAL_FATAL(encode(o, &w, NULL), 0);
    for (size_t k = 0; k < w.len; k++) {
      CU_ASSERT_EQUAL(decode(w.data, k, NULL, &v, &err), MPX_ECODEC);
      CU_ASSERT(err.offset <= k);
    }
    mpx_wbuf_free(&w);
    mpx_obj_release(o);
  }
}

/* Every byte value at every position: an error or a value that survives
 * its own round trip. */
static void test_corruption(void) {
  for (int s = 0; s < 3; s++) {
    mpx_obj_t *o = sample(s), *v, *v2;
    mpx_codec_error_t err;
    mpx_wbuf_t w, w2;
    size_t ok = 0, bad = 0;
    mpx_wbuf_init(&w);
    mpx_wbuf_init(&w2);
    CU_ASSERT_EQUAL_FATAL(encode(o, &w, NULL), 0);
    for (size_t k = 0; k < w.len; k++) {
      uint8_t keep = w.data[k];
      for (int b = 0; b < 256; b++) {
        int rc;
        w.data[k] = (uint8_t)b;
        rc = decode(w.data, w.len, NULL, &v, &err);
        CU_ASSERT(rc == 0 || rc == MPX_ECODEC);
        if (rc != 0) {
          bad++;
          CU_ASSERT(err.offset <= w.len);
          continue;
        }
        ok++;
        mpx_wbuf_reset(&w2);
        CU_ASSERT_EQUAL(encode(v, &w2, NULL), 0);
        CU_ASSERT_EQUAL(decode(w2.data, w2.len, NULL, &v2, NULL), 0);
        CU_ASSERT(mpx_obj_equal(v, v2));
        mpx_obj_release(v2);
        mpx_obj_release(v);
      }
      w.data[k] = keep;
    }
    CU_ASSERT(ok > 0 && bad > 0);
    mpx_wbuf_free(&w);
    mpx_wbuf_free(&w2);
    mpx_obj_release(o);
  }
}

/* ---- Python cross-checks ----------------------------------------------- */

static char *tmpdir(void) {
  static char dir[64];
  strcpy(dir, "/tmp/mpx_json_XXXXXX");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
  return dir;
}

static int run_py(const char *verb, const char *dir) {
  char cmd[512];
  int st;
  snprintf(cmd, sizeof(cmd), "python3 '%s/py_json.py' %s '%s'", PYHELPER_DIR,
           verb, dir);
  st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void rm_dir(const char *dir) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  CU_ASSERT_EQUAL(system(cmd), 0);
}

static char *slurp(const char *dir, const char *name, size_t *n) {
  char path[256];
  FILE *f;
  char *buf = malloc(1 << 16);
  snprintf(path, sizeof(path), "%s/%s.json", dir, name);
  if ((f = fopen(path, "rb")) == NULL) {
    free(buf);
    return NULL;
  }
  *n = fread(buf, 1, 1 << 16, f);
  fclose(f);
  return buf;
}

/* The values py_json.py's GEN holds, in mpx terms. */
static mpx_obj_t *gen_expected(const char *name) {
  static const char text[] = "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80";
  if (!strcmp(name, "nested"))
    return M(4, S("a"), A(3, I(1), I(2), M(1, S("b"), NUL())), S("c"), TRUE(),
             S("d"), FALSE(), S("e"), S("x"));
  if (!strcmp(name, "unicode_ascii") || !strcmp(name, "unicode_raw"))
    return S(text);
  if (!strcmp(name, "escapes"))
    return mpx_obj_str("q\" b\\ s/ \b\f\n\r\t \0 \x1f \x7f", 20);
  if (!strcmp(name, "big_pos")) return BIG(LE_2_70, 9);
  if (!strcmp(name, "big_neg")) return BIG(LE_M2_70, 9);
  if (!strcmp(name, "int64"))
    return A(4, I(INT64_MAX), I(INT64_MIN), BIG(LE_2_63, 9), BIG(LE_MIN_1, 9));
  if (!strcmp(name, "floats"))
    return A(8, F(0.1), F(1e300), F(-2.5), F(5e-324), F(1.0), F(-0.0),
             F(1e-07), F(123456789.125));
  if (!strcmp(name, "empty")) return A(3, A(0), M(0), S(""));
  if (!strcmp(name, "nan_inf")) return A(3, F(NAN), F(INFINITY), F(-INFINITY));
  if (!strcmp(name, "indented"))
    return M(2, S("k"), A(2, I(1), M(1, S("x"), NUL())), S("s"), S("v"));
  if (!strcmp(name, "keys"))
    return M(3, S("\xd0\xba\xd0\xbb\xd1\x8e\xd1\x87"), S("\xd0\xb7\xd0\xbd"),
             S(""), I(0), S("$x"), I(1));
  if (!strcmp(name, "tagged"))
    return A(5, mpx_obj_bytes("\0\xff", 2), T(2, I(1), A(1, I(2))), I(-5),
             M(1, I(1), I(2)), F(-INFINITY));
  return NULL;
}

static void test_python_writes(void) {
  static const char *const names[] = {
      "nested", "unicode_ascii", "unicode_raw", "escapes", "big_pos",
      "big_neg", "int64", "floats", "empty", "nan_inf", "indented", "keys",
      "tagged"};
  char *dir = tmpdir(), *text;
  mpx_obj_t *want, *got;
  mpx_wbuf_t w;
  size_t n;
  CU_ASSERT_EQUAL_FATAL(run_py("gen", dir), 0);
  for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
    text = slurp(dir, names[i], &n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    want = gen_expected(names[i]);
    CU_ASSERT_EQUAL(mpx_codec_decode(codec(), text, n, NULL, &got), 0);
    if (!mpx_obj_equal(want, got)) {
      CU_FAIL("python's json differs");
      fprintf(stderr, "\n  %s: %.*s\n  want %s\n  got  %s (%s)\n", names[i],
              (int)n, text, dump(want), dump(got), mpx_last_error());
    }
    if (!strcmp(names[i], "floats")) /* -0.0 kept its sign */
      CU_ASSERT(signbit(mpx_obj_get_float(mpx_obj_item(got, 5))));
    mpx_obj_release(got);
    mpx_obj_release(want);
    free(text);
  }
  /* 10**100: a bigint whose decimal we write back the same. */
  text = slurp(dir, "googol", &n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(text);
  CU_ASSERT_EQUAL(n, 101);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(codec(), text, n, NULL, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(got), MPX_OBJ_BIGINT);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(encode(got, &w, NULL), 0);
  CU_ASSERT(w.len == 101 + 14 && memcmp(w.data, "{\"$bigint\":\"", 12) == 0 &&
            memcmp(w.data + 12, text, 101) == 0);
  mpx_wbuf_free(&w);
  mpx_obj_release(got);
  free(text);
  rm_dir(dir);
}

/* What test_python_reads writes: py_json.py's CHECK, in mpx terms. */
static mpx_obj_t *check_value(int i, const char **name) {
  static const char *const names[] = {
      "scalars", "unicode", "nested", "bytes", "tuple", "bigint",
      "floats_special", "map_keys", "map_tag_key", "dollar_keys", "bad_utf8",
      "bad_utf8_key", "opaque", "opaque_global", "nul_key"};
  uint8_t all[256];
  if (i >= (int)(sizeof(names) / sizeof(*names))) return NULL;
  *name = names[i];
  for (int k = 0; k < 256; k++) all[k] = (uint8_t)k;
  switch (i) {
  case 0:
    return A(13, NUL(), TRUE(), FALSE(), I(0), I(-1), I(INT64_MAX),
             I(INT64_MIN), F(1.5), F(0.1), F(1e300), F(-0.0), F(5e-324),
             S("text"));
  case 1:
    return mpx_obj_str("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80 \0 \x1f "
                       "\"\\ /", 24);
  case 2:
    return M(3, S("a"), A(2, I(1), M(1, S("b"), A(1, A(0)))), S(""), M(0),
             S("z"), A(0));
  case 3:
    return A(3, mpx_obj_bytes("\0\xff\x10", 3), mpx_obj_bytes("", 0),
             mpx_obj_bytes(all, 256));
  case 4:
    return T(3, I(1), S("a"), T(0));
  case 5:
    return A(4, BIG(LE_2_70, 9), BIG(LE_M2_70, 9), BIG(LE_U64MAX, 9),
             BIG(LE_MIN_1, 9));
  case 6:
    return A(3, F(NAN), F(INFINITY), F(-INFINITY));
  case 7:
    return M(4, I(1), S("one"), NUL(), I(2), T(2, I(1), I(2)), I(3),
             mpx_obj_bytes("k", 1), I(4));
  case 8:
    return M(1, S("$bytes"), I(1));
  case 9:
    return A(2, M(1, S("$other"), I(1)), M(2, S("$bytes"), I(1), S("b"), I(2)));
  case 10:
    return mpx_obj_str("\xff\xfeok", 4);
  case 11:
    return M(1, mpx_obj_str("k\xff", 2), I(1));
  case 12:
    return mpx_obj_opaque(MPX_OPAQUE_REDUCE, "collections", "OrderedDict",
                          T(1, A(0)), M(1, S("a"), I(1)));
  case 13:
    return mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "builtins", "int", NULL, NULL);
  default:
    return M(1, mpx_obj_str("a\0b", 3), I(1));
  }
}

static void test_python_reads(void) {
  char *dir = tmpdir(), path[256];
  const char *name;
  mpx_obj_t *o;
  for (int i = 0; (o = check_value(i, &name)) != NULL; i++) {
    mpx_wbuf_t w;
    FILE *f;
    mpx_wbuf_init(&w);
    CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
    snprintf(path, sizeof(path), "%s/%s.json", dir, name);
    f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(w.data, 1, w.len, f), w.len);
    fclose(f);
    mpx_wbuf_free(&w);
    mpx_obj_release(o);
  }
  CU_ASSERT_EQUAL(run_py("check", dir), 0);
  rm_dir(dir);
}

MPX_TEST_MAIN("codec_json", MPX_TEST(test_descriptor),
              MPX_TEST(test_exact_text), MPX_TEST(test_decode_forms),
              MPX_TEST(test_errors), MPX_TEST(test_roundtrip_types),
              MPX_TEST(test_borrow), MPX_TEST(test_big_payloads),
              MPX_TEST(test_digit_limit), MPX_TEST(test_limits),
              MPX_TEST(test_encode_depth), MPX_TEST(test_fixed_buffer),
              MPX_TEST(test_every_prefix), MPX_TEST(test_corruption),
              MPX_TEST(test_python_writes), MPX_TEST(test_python_reads))
