/* The pickle codec: round trips at protocols 2, 4 and 5, the reference's
 * byte vectors, pickles written by python3 decoded to exactly the values
 * built here, mpx's pickles loaded by python3, and hostile input
 * (truncation, corruption, depth, memo abuse, huge lengths, limits). */
#define _GNU_SOURCE
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

#define PYHELPER PYHELPER_DIR "/py_pickle.py"

static const mpx_codec_t *codec(void) {
  const mpx_codec_t *c = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, "pickle"), 0);
  return c;
}

/* ---- building values ------------------------------------------------------ */

static mpx_obj_t *I(int64_t v) { return mpx_obj_int(v); }
static mpx_obj_t *F(double v) { return mpx_obj_float(v); }
static mpx_obj_t *S(const char *s) { return mpx_obj_str(s, SIZE_MAX); }
static mpx_obj_t *SN(const char *s, size_t n) { return mpx_obj_str(s, n); }
static mpx_obj_t *B(const void *p, size_t n) { return mpx_obj_bytes(p, n); }
static mpx_obj_t *N(void) { return mpx_obj_null(); }

static mpx_obj_t *seq(mpx_obj_t *s, int n, va_list ap) {
  for (int i = 0; i < n; i++)
    CU_ASSERT_EQUAL(mpx_obj_append(s, va_arg(ap, mpx_obj_t *)), 0);
  return s;
}
static mpx_obj_t *T(int n, ...) {
  va_list ap;
  va_start(ap, n);
  mpx_obj_t *t = seq(mpx_obj_tuple(0), n, ap);
  va_end(ap);
  return t;
}
static mpx_obj_t *L(int n, ...) {
  va_list ap;
  va_start(ap, n);
  mpx_obj_t *t = seq(mpx_obj_array(0), n, ap);
  va_end(ap);
  return t;
}
/* n pairs: key, value, ... */
static mpx_obj_t *M(int n, ...) {
  va_list ap;
  mpx_obj_t *m = mpx_obj_map(0);
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    mpx_obj_t *k = va_arg(ap, mpx_obj_t *);
    CU_ASSERT_EQUAL(mpx_obj_map_set(m, k, va_arg(ap, mpx_obj_t *)), 0);
  }
  va_end(ap);
  return m;
}
static mpx_obj_t *G(const char *mod, const char *name) {
  return mpx_obj_opaque(MPX_OPAQUE_GLOBAL, mod, name, NULL, NULL);
}
static mpx_obj_t *R(const char *mod, const char *name, mpx_obj_t *args,
                    mpx_obj_t *state) {
  return mpx_obj_opaque(MPX_OPAQUE_REDUCE, mod, name, args, state);
}
static mpx_obj_t *NO(const char *mod, const char *name, mpx_obj_t *args,
                     mpx_obj_t *state) {
  return mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, mod, name, args, state);
}
/* +-2^bits as a bigint (mpx_obj_bigint drops the spare sign byte). */
static mpx_obj_t *pow2(unsigned bits, int neg) {
  size_t n = bits / 8 + 2;
  uint8_t *b = calloc(n, 1);
  unsigned carry = 1;
  b[bits / 8] = (uint8_t)(1u << (bits % 8));
  for (size_t i = 0; neg && i < n; i++) { /* -x = ~x + 1 */
    unsigned v = (uint8_t)~b[i] + carry;
    b[i] = (uint8_t)v;
    carry = v >> 8;
  }
  mpx_obj_t *o = mpx_obj_bigint(b, n);
  free(b);
  return o;
}
static mpx_obj_t *token(void) {
  return NO("multiprocessing.managers", "Token", T(0),
            T(3, S("dict"), T(2, S("127.0.0.1"), I(50000)), S("7f00aa")));
}
static mpx_obj_t *range_list(int n) {
  mpx_obj_t *l = mpx_obj_array(0);
  for (int i = 0; i < n; i++) mpx_obj_append(l, I(i));
  return l;
}

/* The value each name of py_pickle.py's VALUES decodes to. */
static mpx_obj_t *expected(const char *name) {
#define IS(s) (strcmp(name, s) == 0)
  if (IS("none")) return N();
  if (IS("true")) return mpx_obj_bool(1);
  if (IS("false")) return mpx_obj_bool(0);
  if (IS("int_0")) return I(0);
  if (IS("int_255")) return I(255);
  if (IS("int_256")) return I(256);
  if (IS("int_65535")) return I(65535);
  if (IS("int_65536")) return I(65536);
  if (IS("int_m1")) return I(-1);
  if (IS("int_i32max")) return I(INT32_MAX);
  if (IS("int_i32min")) return I(INT32_MIN);
  if (IS("int_2p31")) return I((int64_t)1 << 31);
  if (IS("int_m2p31m1")) return I(-((int64_t)1 << 31) - 1);
  if (IS("int_i64max")) return I(INT64_MAX);
  if (IS("int_i64min")) return I(INT64_MIN);
  if (IS("int_2p63")) return pow2(63, 0);
  if (IS("int_m2p63m1")) {
    static const uint8_t b[9] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                 0xff, 0xff, 0x7f, 0xff};
    return mpx_obj_bigint(b, 9);
  }
  if (IS("int_2p100")) return pow2(100, 0);
  if (IS("int_m2p100")) return pow2(100, 1);
  if (IS("int_2p2100")) return pow2(2100, 0);
  if (IS("int_m2p2100")) return pow2(2100, 1);
  if (IS("float_1_5")) return F(1.5);
  if (IS("float_m0")) return F(-0.0);
  if (IS("float_inf")) return F(INFINITY);
  if (IS("float_minf")) return F(-INFINITY);
  if (IS("float_nan")) return F(NAN);
  if (IS("float_tiny")) return F(5e-324);
  if (IS("str_empty")) return S("");
  if (IS("str_abc")) return S("abc");
  if (IS("str_uni")) return S("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
  if (IS("str_nul")) return SN("a\0b", 3);
  if (IS("str_300")) {
    char s[300];
    memset(s, 'x', sizeof s);
    return SN(s, sizeof s);
  }
  if (IS("str_surr")) return S("\xed\xa0\x80x"); /* surrogatepass */
  if (IS("bytes_empty") || IS("bytearray_empty")) return B("", 0);
  if (IS("bytes_all")) {
    uint8_t b[256];
    for (int i = 0; i < 256; i++) b[i] = (uint8_t)i;
    return B(b, sizeof b);
  }
  if (IS("bytes_300")) {
    uint8_t b[300];
    memset(b, 0x80, sizeof b);
    return B(b, sizeof b);
  }
  if (IS("bytearray_ab")) return B("a\xff" "b", 3);
  if (IS("tuple0")) return T(0);
  if (IS("tuple1")) return T(1, I(1));
  if (IS("tuple2")) return T(2, I(1), S("a"));
  if (IS("tuple3")) return T(3, I(1), S("a"), N());
  if (IS("tuple5")) return T(5, I(1), I(2), I(3), I(4), I(5));
  if (IS("list_empty")) return L(0);
  if (IS("list_mixed"))
    return L(6, I(1), S("a"), N(), mpx_obj_bool(1), F(1.5), B("x", 1));
  if (IS("list_2500")) return range_list(2500);
  if (IS("dict_empty")) return M(0);
  if (IS("dict_small")) return M(2, S("a"), I(1), S("b"), L(2, I(1), I(2)));
  if (IS("dict_2000")) {
    mpx_obj_t *m = mpx_obj_map(0);
    char s[16];
    for (int i = 0; i < 2000; i++) {
      snprintf(s, sizeof s, "%d", i);
      mpx_obj_map_set(m, I(i), S(s));
    }
    return m;
  }
  if (IS("dict_keys"))
    return M(3, T(2, I(1), I(2)), S("x"), N(), I(1), F(2.5), B("y", 1));
  if (IS("set_123"))
    return R("builtins", "set", T(1, L(3, I(1), I(2), I(3))), NULL);
  if (IS("set_empty")) return R("builtins", "set", T(1, L(0)), NULL);
  if (IS("frozenset_12"))
    return R("builtins", "frozenset", T(1, L(2, I(1), I(2))), NULL);
  if (IS("token")) return token();
  if (IS("keyerror")) return R("builtins", "KeyError", T(1, S("k")), NULL);
  if (IS("complex")) return R("builtins", "complex", T(2, F(1), F(2)), NULL);
  if (IS("queue_empty")) return R("_queue", "Empty", T(0), NULL);
  if (IS("memo_strs"))
    return L(4, S("hello world"), S("hello world"),
             T(2, S("hello world"), S("hello world")),
             M(1, S("hello world"), S("hello world")));
  if (IS("shared_list")) {
    mpx_obj_t *a = L(2, I(1), I(2));
    mpx_obj_retain(a);
    mpx_obj_retain(a);
    return T(3, a, a, L(1, a));
  }
  if (IS("nested"))
    return M(1, S("k"),
             L(2, I(1), T(2, I(2), M(2, S("z"), N(), S("y"),
                                     L(1, L(1, L(0)))))));
  if (IS("msg_dummy")) return T(4, N(), S("dummy"), T(0), M(0));
  if (IS("msg_return")) return T(2, S("#RETURN"), N());
  if (IS("msg_proxy"))
    return T(2, S("#PROXY"), T(2, T(2, S("get"), S("keys")), token()));
  if (IS("msg_error"))
    return T(2, S("#ERROR"), R("builtins", "KeyError", T(1, S("k")), NULL));
  if (IS("rebuild_proxy"))
    return R("multiprocessing.managers", "RebuildProxy",
             T(4, G("multiprocessing.managers", "DictProxy"), token(),
               S("pickle"), M(0)),
             NULL);
  return NULL;
#undef IS
}

/* Every name of py_pickle.py's VALUES; to_py: mpx can write it back as the
 * same Python value (bytearray comes back as bytes, a RebuildProxy would
 * connect). */
static const struct {
  const char *name;
  int to_py;
} cases[] = {
    {"none", 1}, {"true", 1}, {"false", 1}, {"int_0", 1}, {"int_255", 1},
    {"int_256", 1}, {"int_65535", 1}, {"int_65536", 1}, {"int_m1", 1},
    {"int_i32max", 1}, {"int_i32min", 1}, {"int_2p31", 1},
    {"int_m2p31m1", 1}, {"int_i64max", 1}, {"int_i64min", 1},
    {"int_2p63", 1}, {"int_m2p63m1", 1}, {"int_2p100", 1},
    {"int_m2p100", 1}, {"int_2p2100", 1}, {"int_m2p2100", 1},
    {"float_1_5", 1}, {"float_m0", 1}, {"float_inf", 1}, {"float_minf", 1},
    {"float_nan", 1}, {"float_tiny", 1}, {"str_empty", 1}, {"str_abc", 1},
    {"str_uni", 1}, {"str_nul", 1}, {"str_300", 1}, {"str_surr", 1},
    {"bytes_empty", 1}, {"bytes_all", 1}, {"bytes_300", 1},
    {"bytearray_ab", 0}, {"bytearray_empty", 0}, {"tuple0", 1},
    {"tuple1", 1}, {"tuple2", 1}, {"tuple3", 1}, {"tuple5", 1},
    {"list_empty", 1}, {"list_mixed", 1}, {"list_2500", 1},
    {"dict_empty", 1}, {"dict_small", 1}, {"dict_2000", 1},
    {"dict_keys", 1}, {"set_123", 1}, {"set_empty", 1},
    {"frozenset_12", 1}, {"token", 1}, {"keyerror", 1}, {"complex", 1},
    {"queue_empty", 1}, {"memo_strs", 1}, {"shared_list", 1},
    {"nested", 1}, {"msg_dummy", 1}, {"msg_return", 1}, {"msg_proxy", 1},
    {"msg_error", 1}, {"rebuild_proxy", 0},
};
#define N_CASES (sizeof cases / sizeof cases[0])

/* ---- helpers ----------------------------------------------------------------- */

static void show(const char *what, const mpx_obj_t *o) {
  char buf[512];
  mpx_obj_dump(o, buf, sizeof buf);
  fprintf(stderr, "  %s: %s\n", what, buf);
}

/* Equal, and -0.0 kept (mpx_obj_equal compares floats by value). */
static int same(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (!mpx_obj_equal(a, b)) {
    show("got     ", a);
    show("expected", b);
    return 0;
  }
  if (mpx_obj_type(a) == MPX_OBJ_FLOAT &&
      signbit(mpx_obj_get_float(a)) != signbit(mpx_obj_get_float(b)))
    return 0;
  return 1;
}

static int encode(const mpx_obj_t *o, int proto, mpx_wbuf_t *w) {
  mpx_encode_opts_t eo = {0};
  eo.protocol = proto;
  mpx_wbuf_init(w);
  return mpx_codec_encode(codec(), o, w, &eo);
}

static int decode(const void *p, size_t n, mpx_obj_t **out) {
  return mpx_codec_decode(codec(), p, n, NULL, out);
}

/* Decode through the descriptor itself, for the error record. */
static int decode_err(const void *p, size_t n, const mpx_decode_opts_t *o,
                      mpx_codec_error_t *err) {
  mpx_obj_t *out = NULL;
  static const mpx_decode_opts_t none;
  memset(err, 0, sizeof *err);
  int rc = codec()->decode(p, n, o ? o : &none, &out, err);
  if (rc == 0) mpx_obj_release(out);
  else CU_ASSERT_PTR_NULL(out);
  return rc;
}

/* Encode at proto, decode, compare; consumes o. */
static void round_trip(mpx_obj_t *o, int proto) {
  mpx_wbuf_t w;
  mpx_obj_t *back = NULL;
  CU_ASSERT_PTR_NOT_NULL_FATAL(o);
  CU_ASSERT_EQUAL(encode(o, proto, &w), 0);
  CU_ASSERT_EQUAL(w.data[0], 0x80);
  CU_ASSERT_EQUAL(w.data[1], proto ? proto : 4);
  int rc = decode(w.data, w.len, &back);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) fprintf(stderr, "  proto %d: %s\n", proto, mpx_last_error());
  if (rc == 0) CU_ASSERT(same(back, o));
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_free(&w);
}

static int have_python(void) {
  if (system("command -v python3 >/dev/null 2>&1") == 0) return 1;
  printf("\n  python3 not found: skipped\n");
  return 0;
}

static char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  char *buf = NULL;
  long len;
  if (f == NULL) return NULL;
  if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 &&
      fseek(f, 0, SEEK_SET) == 0 && (buf = malloc((size_t)len + 1)) != NULL &&
      fread(buf, 1, (size_t)len, f) != (size_t)len) {
    free(buf);
    buf = NULL;
  }
  if (buf) *n = (size_t)len;
  fclose(f);
  return buf;
}

static void rm_dir(const char *dir) {
  char cmd[256];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CU_ASSERT_EQUAL(system(cmd), 0);
}

/* ---- round trips ------------------------------------------------------------------ */

static mpx_obj_t *all_types(void) {
  return L(12, N(), mpx_obj_bool(1), mpx_obj_bool(0), I(-7), pow2(100, 1),
           F(2.25), S("text"), B("\x00\x01", 2), T(2, I(1), L(0)),
           M(2, I(1), S("one"), T(1, N()), M(0)), token(),
           G("builtins", "dict"));
}

static void test_round_trip_types(void) {
  static const int protos[] = {0, 2, 3, 4, 5};
  for (size_t p = 0; p < sizeof protos / sizeof protos[0]; p++) {
    int pr = protos[p];
    round_trip(all_types(), pr);
    for (size_t i = 0; i < N_CASES; i++) round_trip(expected(cases[i].name), pr);
    /* Opaque nodes of every kind, with and without state. */
    round_trip(G("a.b", "C"), pr);
    round_trip(R("m", "f", T(2, I(1), S("x")), M(1, S("k"), L(0))), pr);
    round_trip(NO("m", "Cls", T(0), NULL), pr);
    round_trip(NO("m", "Cls", T(1, I(3)), T(2, N(), M(1, S("a"), I(1)))), pr);
    /* Containers at and around the batch size. */
    round_trip(range_list(1), pr);
    round_trip(range_list(999), pr);
    round_trip(range_list(1000), pr);
    round_trip(range_list(1001), pr);
    round_trip(range_list(2001), pr);
    mpx_obj_t *m = mpx_obj_map(0), *t = mpx_obj_tuple(0);
    for (int i = 0; i < 1001; i++) {
      mpx_obj_map_set(m, I(i), L(1, I(-i)));
      mpx_obj_append(t, S("s"));
    }
    round_trip(m, pr);
    round_trip(t, pr);
    round_trip(M(1, S("one"), I(1)), pr);
  }
}

static void test_round_trip_edges(void) {
  static const int protos[] = {2, 4, 5};
  static const int64_t ints[] = {0, 1, 255, 256, 65535, 65536, -1, -128, -129,
                                 INT32_MAX, INT32_MIN, (int64_t)INT32_MAX + 1,
                                 (int64_t)INT32_MIN - 1, INT64_MAX, INT64_MIN,
                                 INT64_MAX - 1, INT64_MIN + 1, 1ll << 40,
                                 -(1ll << 40), 0x7fffffffffll, 0x8000000000ll};
  static const double floats[] = {0.0, -0.0, 1.5, -1e300, 5e-324, INFINITY,
                                  -INFINITY, NAN};
  size_t big = (size_t)16 << 20;
  uint8_t *blob = malloc(big);
  CU_ASSERT_PTR_NOT_NULL_FATAL(blob);
  for (size_t i = 0; i < big; i++) blob[i] = (uint8_t)(i * 2654435761u >> 24);
  for (size_t p = 0; p < sizeof protos / sizeof protos[0]; p++) {
    int pr = protos[p];
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
      round_trip(I(ints[i]), pr);
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
      round_trip(F(floats[i]), pr);
    /* Just beyond int64 both ways, and 2^100, 2^2100 (LONG4). */
    static const uint8_t up[9] = {0, 0, 0, 0, 0, 0, 0, 0x80, 0};
    static const uint8_t down[9] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                    0xff, 0xff, 0x7f, 0xff};
    round_trip(mpx_obj_bigint(up, 9), pr);
    round_trip(mpx_obj_bigint(down, 9), pr);
    round_trip(pow2(100, 0), pr);
    round_trip(pow2(100, 1), pr);
    round_trip(pow2(2100, 0), pr);
    round_trip(pow2(2100, 1), pr);
    round_trip(S(""), pr);
    round_trip(B("", 0), pr);
    round_trip(T(0), pr);
    round_trip(L(0), pr);
    round_trip(M(0), pr);
    round_trip(SN("a\0b\0", 4), pr);
    round_trip(SN("\xff\xfe\xed\xa0\x80\xc0\x80", 7), pr); /* not UTF-8 */
    round_trip(B("\x80\xff\x00\xc3", 4), pr);
    round_trip(mpx_obj_bytes(blob, big), pr);
    round_trip(SN((const char *)blob, 70000), pr);
  }
  free(blob);
}

/* Values survive a decode with MPX_DECODE_BORROW pointing into the input. */
static void test_borrow(void) {
  mpx_wbuf_t w;
  mpx_obj_t *o = L(2, S("borrowed"), B("bytes", 5)), *back = NULL;
  mpx_decode_opts_t d = {0};
  size_t n;
  d.flags = MPX_DECODE_BORROW;
  CU_ASSERT_EQUAL_FATAL(encode(o, 4, &w), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_codec_decode(codec(), w.data, w.len, &d, &back), 0);
  CU_ASSERT(same(back, o));
  const char *s = mpx_obj_str_data(mpx_obj_item(back, 0), &n);
  CU_ASSERT(s > (const char *)w.data && s < (const char *)w.data + w.len);
  mpx_obj_release(back);
  mpx_obj_release(o);
  mpx_wbuf_free(&w);
}

/* ---- exact bytes ---------------------------------------------------------------- */

static void check_bytes(mpx_obj_t *o, int proto, const char *want, size_t n) {
  mpx_wbuf_t w;
  CU_ASSERT_EQUAL(encode(o, proto, &w), 0);
  CU_ASSERT_EQUAL(w.len, n);
  CU_ASSERT(w.len == n && memcmp(w.data, want, n) == 0);
  if (w.len != n || memcmp(w.data, want, n) != 0) {
    fprintf(stderr, "  got:");
    for (size_t i = 0; i < w.len; i++) fprintf(stderr, " %02x", w.data[i]);
    fprintf(stderr, "\n");
  }
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

static void check_decodes(const char *p, size_t n, mpx_obj_t *want) {
  mpx_obj_t *got = NULL;
  int rc = decode(p, n, &got);
  CU_ASSERT_EQUAL(rc, 0);
  if (rc != 0) fprintf(stderr, "  %s\n", mpx_last_error());
  else CU_ASSERT(same(got, want));
  mpx_obj_release(got);
  mpx_obj_release(want);
}

#define TOKEN_BYTES                                                         \
  "\x8c\x18multiprocessing.managers\x8c\x05Token\x93)\x81\x8c\x04"        \
  "dict\x8c\x09" "127.0.0.1\x4d\x50\xc3\x86\x8c\x06" "7f00aa\x87\x62"
#define V(s) s, sizeof s - 1

/* The reference's vectors (python-multiprocessing.md 2.4). */
static void test_reference_vectors(void) {
  check_decodes(V("\x80\x04(N\x8c\x05" "dummy)}(ut."),
                T(4, N(), S("dummy"), T(0), M(0)));
  check_decodes(V("\x80\x04(N\x8c\x06" "create\x8c\x04" "dict\x85}(ut."),
                T(4, N(), S("create"), T(1, S("dict")), M(0)));
  check_decodes(V("\x80\x04\x95\x0e\0\0\0\0\0\0\0\x8c\x07#RETURN\x94N\x86\x94."),
                T(2, S("#RETURN"), N()));
  check_decodes(V("\x80\x04" TOKEN_BYTES "."), token());
  /* What mpx writes: the same, with a bare } for an empty dict. */
  check_bytes(T(4, N(), S("dummy"), T(0), M(0)), 0,
              V("\x80\x04(N\x8c\x05" "dummy)}t."));
  check_bytes(T(4, N(), S("create"), T(1, S("dict")), M(0)), 4,
              V("\x80\x04(N\x8c\x06" "create\x8c\x04" "dict\x85}t."));
  check_bytes(token(), 4, V("\x80\x04" TOKEN_BYTES "."));
  check_bytes(T(2, S("#RETURN"), N()), 4, V("\x80\x04\x8c\x07#RETURN" "N\x86."));
  /* Scalars as CPython writes them (its FRAME aside). */
  check_bytes(I(0), 4, V("\x80\x04K\x00."));
  check_bytes(I(256), 4, V("\x80\x04M\x00\x01."));
  check_bytes(I(-1), 4, V("\x80\x04J\xff\xff\xff\xff."));
  check_bytes(I(-((int64_t)1 << 31) - 1), 4,
              V("\x80\x04\x8a\x05\xff\xff\xff\x7f\xff."));
  check_bytes(I((int64_t)1 << 31), 4, V("\x80\x04\x8a\x05\0\0\0\x80\0."));
  check_bytes(I(INT64_MIN), 4, V("\x80\x04\x8a\x08\0\0\0\0\0\0\0\x80."));
  check_bytes(pow2(63, 0), 4, V("\x80\x04\x8a\x09\0\0\0\0\0\0\0\x80\0."));
  check_bytes(F(1.5), 4, V("\x80\x04G?\xf8\0\0\0\0\0\0."));
  check_bytes(mpx_obj_bool(1), 5, V("\x80\x05\x88."));
  check_bytes(S("abc"), 2, V("\x80\x02X\x03\0\0\0abc."));
  check_bytes(B("a\xff", 2), 4, V("\x80\x04" "C\x02" "a\xff."));
  check_bytes(B("a\xff", 2), 2,
              V("\x80\x02" "c_codecs\nencode\nX\x03\0\0\0a\xc3\xbfX\x06\0\0\0latin1\x86R."));
  check_bytes(L(2, I(1), I(2)), 4, V("\x80\x04](K\x01K\x02" "e."));
  check_bytes(L(1, N()), 4, V("\x80\x04]Na."));
  check_bytes(M(1, N(), N()), 4, V("\x80\x04}NNs."));
  check_bytes(T(4, N(), N(), N(), N()), 4, V("\x80\x04(NNNNt."));
  /* Protocol 2 names Python 2's modules, as CPython's fix_imports does. */
  check_bytes(G("builtins", "set"), 2, V("\x80\x02" "c__builtin__\nset\n."));
  check_bytes(G("builtins", "set"), 3, V("\x80\x03" "cbuiltins\nset\n."));
  check_bytes(G("builtins", "KeyError"), 2, V("\x80\x02" "cexceptions\nKeyError\n."));
  check_bytes(G("builtins", "FileNotFoundError"), 2, V("\x80\x02" "cexceptions\nOSError\n."));
  check_bytes(G("queue", "Empty"), 2, V("\x80\x02" "cQueue\nEmpty\n."));
  /* No args: an empty tuple. */
  check_bytes(R("m", "f", NULL, NULL), 4, V("\x80\x04\x8c\x01m\x8c\x01" "f\x93)R."));
  check_bytes(R("builtins", "KeyError", T(1, S("k")), NULL), 4,
              V("\x80\x04\x8c\x08" "builtins\x8c\x08KeyError\x93\x8c\x01k\x85R."));
}

/* ---- python3 -> mpx ------------------------------------------------------------- */

static void test_python_golden(void) {
  char dir[] = "/tmp/mpx_pickle_gen_XXXXXX", cmd[512], path[600];
  if (!have_python()) return;
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
  snprintf(cmd, sizeof cmd, "python3 '%s' gen '%s'", PYHELPER, dir);
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
  for (size_t i = 0; i < N_CASES; i++)
    for (int p = 2; p <= 5; p++) {
      size_t n = 0;
      char *data;
      mpx_obj_t *got = NULL, *want;
      if (p == 3) continue;
      snprintf(path, sizeof path, "%s/%s.p%d.pkl", dir, cases[i].name, p);
      data = read_file(path, &n);
      CU_ASSERT_PTR_NOT_NULL(data);
      if (data == NULL) continue;
      want = expected(cases[i].name);
      CU_ASSERT_PTR_NOT_NULL_FATAL(want);
      int rc = decode(data, n, &got);
      CU_ASSERT_EQUAL(rc, 0);
      if (rc != 0) fprintf(stderr, "  %s: %s\n", path, mpx_last_error());
      else if (!same(got, want)) {
        CU_FAIL("decoded value differs");
        fprintf(stderr, "  in %s\n", path);
      }
      mpx_obj_release(got);
      mpx_obj_release(want);
      free(data);
    }
  rm_dir(dir);
}

/* ---- mpx -> python3 -------------------------------------------------------------- */

static void test_python_loads(void) {
  char dir[] = "/tmp/mpx_pickle_chk_XXXXXX", cmd[512], path[600];
  int files = 0;
  if (!have_python()) return;
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
  for (size_t i = 0; i < N_CASES; i++) {
    if (!cases[i].to_py) continue;
    for (int p = 2; p <= 5; p++) {
      mpx_wbuf_t w;
      mpx_obj_t *o = expected(cases[i].name);
      CU_ASSERT_EQUAL(encode(o, p, &w), 0);
      snprintf(path, sizeof path, "%s/%s.p%d.pkl", dir, cases[i].name, p);
      FILE *f = fopen(path, "wb");
      CU_ASSERT_PTR_NOT_NULL_FATAL(f);
      CU_ASSERT_EQUAL(fwrite(w.data, 1, w.len, f), w.len);
      fclose(f);
      files++;
      mpx_wbuf_free(&w);
      mpx_obj_release(o);
    }
  }
  snprintf(cmd, sizeof cmd, "python3 '%s' check '%s'", PYHELPER, dir);
  int st = system(cmd);
  CU_ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
  CU_ASSERT(files > 200);
  rm_dir(dir);
}

/* ---- hostile input ---------------------------------------------------------------- */

static void expect_error(const char *p, size_t n, size_t off, const char *msg) {
  mpx_codec_error_t e;
  int rc = decode_err(p, n, NULL, &e);
  CU_ASSERT_EQUAL(rc, MPX_ECODEC);
  CU_ASSERT_EQUAL(e.offset, off);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, msg));
  if (rc != MPX_ECODEC || e.offset != off || strstr(e.msg, msg) == NULL)
    fprintf(stderr, "  rc %d, byte %zu: %s (wanted byte %zu: %s)\n", rc,
            e.offset, e.msg, off, msg);
}

static void test_errors(void) {
  mpx_obj_t *o = NULL;
  expect_error(V("\x80\x04X\x28\0\0\0" "abcdefghijkl"), 2,
               "truncated BINUNICODE: needs 40 bytes, 12 left");
  expect_error(V("\x80\x04h\x07."), 2, "BINGET 7: no such memo entry");
  expect_error(V("\x80\x04j\x07\0\0\0."), 2, "LONG_BINGET 7: no such memo entry");
  expect_error(V("\x80\x04K\x01\x86."), 4, "stack underflow at TUPLE2");
  expect_error(V("\x80\x04K\x01(K\x02\x86."), 7, "stack underflow at TUPLE2");
  expect_error(V("\x80\x04\xff."), 2, "unknown opcode 0xff");
  expect_error(V("\x80\x04N.N"), 4, "1 trailing bytes after STOP");
  expect_error(V("\x80\x04N"), 3, "no STOP");
  expect_error(V(""), 0, "empty");
  expect_error(V("\x80\x04NN."), 4, "STOP with 2 values");
  expect_error(V("\x80\x04(N."), 4, "open MARK");
  expect_error(V("\x80\x06N."), 0, "unsupported protocol 6");
  expect_error(V("\x80\x04\x95\x10\0\0\0\0\0\0\0N."), 2, "FRAME of 16 bytes");
  expect_error(V("\x80\x05\x97."), 2, "out-of-band");
  expect_error(V("\x80\x05\x98."), 2, "out-of-band");
  expect_error(V("\x80\x04P1\n."), 2, "unsupported opcode PERSID");
  expect_error(V("\x80\x04\x8e\0\0\0\0\0\0\0\x40."), 2,
               "truncated BINBYTES8: needs 4611686018427387904 bytes");
  expect_error(V("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\xff."), 2,
               "truncated BINUNICODE8");
  expect_error(V("\x80\x04\x8b\xff\xff\xff\xff."), 2, "negative length");
  expect_error(V("\x80\x04\x8a\x09\0\0."), 2, "truncated LONG1: needs 9 bytes, 3 left");
  expect_error(V("\x80\x04" "cbuiltins\nset"), 2, "truncated GLOBAL");
  /* The allow-list: only module.name globals are called. */
  expect_error(V("\x80\x04])R."), 4, "REDUCE: the callable is not a global");
  expect_error(V("\x80\x04N)R."), 4, "REDUCE: the callable is not a global");
  expect_error(V("\x80\x04" "cos\nsystem\n]R."), 14, "arguments are not a tuple");
  expect_error(V("\x80\x04K\x01)\x81."), 5, "NEWOBJ: the callable is not a global");
  expect_error(V("\x80\x04K\x01\x8c\x01" "a\x93."), 7, "must be str");
  expect_error(V("\x80\x04\x8c\x02m\0\x8c\x01" "a\x93."), 9, "NUL");
  expect_error(V("\x80\x04]N\x62."), 4, "BUILD: the target is not an object made by REDUCE");
  expect_error(V("\x80\x04" "cm\nC\n)\x81N\x62N\x62."), 12, "already has a state");
  expect_error(V("\x80\x04" "cm\nC\n)\x81\x94h\x00\x62."), 12, "own state");
  expect_error(V("\x80\x04" "cm\nC\n)\x81\x94](h\x00t\x85h\x00N\x62."), 19,
               "already inside another value");
  expect_error(V("\x80\x04K\x01K\x02" "a."), 6, "target is not a list");
  expect_error(V("\x80\x04}K\x01s."), 5, "stack underflow at SETITEM");
  expect_error(V("\x80\x04}(K\x01u."), 6, "odd number");
  expect_error(V("\x80\x04" "e."), 2, "APPENDS without a MARK");
  expect_error(V("\x80\x04" "0."), 2, "stack underflow at POP");
  expect_error(V("\x80\x04" "1."), 2, "POP_MARK without a MARK");
  expect_error(V("\x80\x04" "2."), 2, "stack underflow at DUP");
  expect_error(V("\x80\x04(]e."), 4, "stack underflow at APPENDS");
  expect_error(V("\x80\x04" "cm\nC\n)}K\x01K\x02s\x92."), 14,
               "keyword arguments");
  /* Recursive structures: a list in itself, directly or not. */
  expect_error(V("\x80\x04]\x94h\x00" "a."), 6, "inside itself");
  expect_error(V("\x80\x04]\x94(h\x00" "e."), 7, "inside itself");
  expect_error(V("\x80\x04}\x94K\x01h\x00s."), 8, "inside itself");
  expect_error(V("\x80\x04]\x94h\x00\x85\x94h\x00h\x01" "a."), 12,
               "already inside another value");
  expect_error(V("\x80\x04\x8f\x94(h\x00\x90."), 7, "inside itself");
  /* Memo abuse. */
  expect_error(V("\x80\x04Nr\xff\xff\xff\xff."), 3, "memo index too far ahead");
  expect_error(V("\x80\x04\x94."), 2, "stack underflow at MEMOIZE");
  /* Messages reach mpx_last_error with the byte offset. */
  CU_ASSERT_EQUAL(decode(V("\x80\x04\xff."), &o), MPX_ECODEC);
  CU_ASSERT_PTR_NULL(o);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "byte 2: unknown opcode 0xff"));
}

/* Accepted oddities: protocol 0/1 list/dict, POP, DUP, sparse memo,
 * NEWOBJ_EX with no keywords, conversions, Python 2 names. */
static void test_decode_extras(void) {
  check_decodes(V("\x80\x02(K\x01K\x02l."), L(2, I(1), I(2)));
  check_decodes(V("(K\x01K\x02" "d."), M(1, I(1), I(2)));
  check_decodes(V("\x80\x04K\x01K\x02" "0."), I(1));
  check_decodes(V("\x80\x04K\x01(K\x02K\x03" "1."), I(1));
  check_decodes(V("\x80\x04K\x01(0."), I(1));
  check_decodes(V("\x80\x04K\x01" "2\x86."), T(2, I(1), I(1)));
  check_decodes(V("\x80\x04K\x01q\x09h\x09\x86."), T(2, I(1), I(1)));
  check_decodes(V("\x80\x04K\x01\x94" "0K\x02\x94" "0h\x00h\x01\x86."),
                T(2, I(1), I(2)));
  check_decodes(V("\x80\x04" "cm\nC\n)}\x92."), NO("m", "C", T(0), NULL));
  check_decodes(V("\x80\x02" "c__builtin__\nbytes\n)R."), B("", 0));
  check_decodes(V("\x80\x02" "c__builtin__\nbytearray\nX\x02\0\0\0\xc3\xbfX\x07\0\0\0latin-1\x86R."),
                B("\xff", 1));
  /* Not Latin-1, or another encoding: stays opaque. */
  check_decodes(V("\x80\x02" "c_codecs\nencode\nX\x03\0\0\0\xe2\x82\xacX\x06\0\0\0latin1\x86R."),
                R("_codecs", "encode", T(2, S("\xe2\x82\xac"), S("latin1")), NULL));
  check_decodes(V("\x80\x02" "c_codecs\nencode\nX\x01\0\0\0aX\x05\0\0\0utf-8\x86R."),
                R("_codecs", "encode", T(2, S("a"), S("utf-8")), NULL));
  check_decodes(V("\x80\x02" "cexceptions\nStandardError\n."), G("builtins", "Exception"));
  check_decodes(V("\x80\x02" "cQueue\nEmpty\n."), G("queue", "Empty"));
  check_decodes(V("\x80\x02" "c__builtin__\nxrange\n."), G("builtins", "range"));
  check_decodes(V("\x80\x04" "c__builtin__\nxrange\n."), G("__builtin__", "xrange"));
  /* A memoized object gets its state once built, wherever it is used. */
  check_decodes(V("\x80\x04" "cm\nC\n)\x81\x94K\x01\x62h\x00\x86."),
                T(2, NO("m", "C", T(0), I(1)), NO("m", "C", T(0), I(1))));
}

/* Every prefix fails; every single-byte change fails or decodes. */
static void mangle(const uint8_t *p, size_t n) {
  uint8_t *buf = malloc(n ? n : 1);
  mpx_codec_error_t e;
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  for (size_t k = 0; k < n; k++) {
    uint8_t *cut = malloc(k ? k : 1); /* exactly k bytes, for ASan */
    memcpy(cut, p, k);
    CU_ASSERT_EQUAL(decode_err(cut, k, NULL, &e), MPX_ECODEC);
    free(cut);
  }
  static const uint8_t vals[] = {0x00, 0x01, 0x7f, 0x80, 0xff, '(', '.', ']',
                                 'a', 'h', 0x94, 0x93, 'R', 'b', 't', 'e'};
  for (size_t i = 0; i < n; i++) {
    for (int flip = 0; flip < 8; flip++) {
      memcpy(buf, p, n);
      buf[i] ^= (uint8_t)(1u << flip);
      int rc = decode_err(buf, n, NULL, &e);
      CU_ASSERT(rc == 0 || rc == MPX_ECODEC);
    }
    for (size_t v = 0; v < sizeof vals; v++) {
      memcpy(buf, p, n);
      buf[i] = vals[v];
      int rc = decode_err(buf, n, NULL, &e);
      CU_ASSERT(rc == 0 || rc == MPX_ECODEC);
    }
  }
  free(buf);
}

static void test_truncation_and_corruption(void) {
  static const int protos[] = {2, 4, 5};
  const char *names[] = {"msg_proxy", "rebuild_proxy", "memo_strs", "nested",
                         "set_123", "dict_keys", "int_m2p100", "str_uni"};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
    for (size_t p = 0; p < 3; p++) {
      mpx_wbuf_t w;
      mpx_obj_t *o = expected(names[i]);
      CU_ASSERT_EQUAL(encode(o, protos[p], &w), 0);
      mangle(w.data, w.len);
      mpx_wbuf_free(&w);
      mpx_obj_release(o);
    }
  /* Real CPython pickles, with FRAME and memo. */
  if (have_python()) {
    char dir[] = "/tmp/mpx_pickle_mng_XXXXXX", cmd[512], path[600];
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "python3 '%s' gen '%s'", PYHELPER, dir);
    CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
      for (size_t p = 0; p < 3; p++) {
        size_t n;
        snprintf(path, sizeof path, "%s/%s.p%d.pkl", dir, names[i], protos[p]);
        char *data = read_file(path, &n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(data);
        mangle((const uint8_t *)data, n);
        free(data);
      }
    rm_dir(dir);
  }
}

static char *repeat(const char *head, char c, size_t k, char c2, size_t k2,
                    size_t *n) {
  size_t h = strlen(head);
  char *p = malloc(h + k + k2 + 1);
  memcpy(p, head, h);
  memset(p + h, c, k);
  memset(p + h + k, c2, k2);
  p[h + k + k2] = '.';
  *n = h + k + k2 + 1;
  return p;
}

static void test_depth(void) {
  mpx_codec_error_t e;
  mpx_decode_opts_t o = {0};
  size_t n;
  char *p;
  /* 100000 nested lists: ] x 100000 then APPEND x 99999. */
  p = repeat("\x80\x04", ']', 100000, 'a', 99999, &n);
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "APPEND: nesting deeper than 200"));
  CU_ASSERT_EQUAL(e.offset, 2 + 100000 + 200 - 1);
  free(p);
  /* Tuples: ) then TUPLE1 x 100000. */
  p = repeat("\x80\x04)", '\x85', 100000, 'N', 0, &n);
  p[n - 1] = '.';
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "nesting deeper than 200"));
  free(p);
  /* 200 levels pass, 201 do not; max_depth lowers it. */
  p = repeat("\x80\x04", ']', 200, 'a', 199, &n);
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), 0);
  o.max_depth = 199;
  CU_ASSERT_EQUAL(decode_err(p, n, &o, &e), MPX_ECODEC);
  free(p);
  p = repeat("\x80\x04", ']', 201, 'a', 200, &n);
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), MPX_ECODEC);
  free(p);
  /* 100000 open MARKs and a long flat stack are not nesting. */
  p = repeat("\x80\x04", '(', 100000, '1', 99999, &n);
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), MPX_ECODEC); /* open MARK */
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "open MARK"));
  free(p);
  p = repeat("\x80\x04(", 'N', 100000, 'l', 1, &n);
  CU_ASSERT_EQUAL(decode_err(p, n, NULL, &e), 0);
  free(p);

  /* The encoder refuses more than 200 levels, without recursing further. */
  mpx_obj_t *deep = N();
  for (int i = 0; i < 100000; i++) deep = L(1, deep);
  mpx_wbuf_t w;
  CU_ASSERT_EQUAL(encode(deep, 4, &w), MPX_ECODEC);
  CU_ASSERT_EQUAL(w.len, 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "nesting deeper than 200"));
  mpx_wbuf_free(&w);
  mpx_obj_release(deep);
  deep = N();
  for (int i = 0; i < 200; i++) deep = i % 2 ? L(1, deep) : T(1, deep);
  CU_ASSERT_EQUAL(encode(deep, 2, &w), 0);
  mpx_wbuf_free(&w);
  deep = L(1, deep);
  CU_ASSERT_EQUAL(encode(deep, 2, &w), MPX_ECODEC);
  CU_ASSERT_EQUAL(w.len, 0);
  mpx_wbuf_free(&w);
  mpx_obj_release(deep);
}

static void test_limits(void) {
  mpx_codec_error_t e;
  mpx_decode_opts_t o = {0};
  mpx_wbuf_t w;
  mpx_obj_t *v;
  /* max_items and max_bytes. */
  v = range_list(11);
  CU_ASSERT_EQUAL_FATAL(encode(v, 4, &w), 0);
  o.max_items = 11;
  CU_ASSERT_EQUAL(decode_err(w.data, w.len, &o, &e), 0);
  o.max_items = 10;
  CU_ASSERT_EQUAL(decode_err(w.data, w.len, &o, &e), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "more than 10 items"));
  mpx_wbuf_free(&w);
  mpx_obj_release(v);
  memset(&o, 0, sizeof o);
  v = L(2, SN("0123456789", 10), B("0123456789", 10));
  CU_ASSERT_EQUAL_FATAL(encode(v, 4, &w), 0);
  o.max_bytes = 20;
  CU_ASSERT_EQUAL(decode_err(w.data, w.len, &o, &e), 0);
  o.max_bytes = 19;
  CU_ASSERT_EQUAL(decode_err(w.data, w.len, &o, &e), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "more than 19 bytes"));
  mpx_wbuf_free(&w);
  mpx_obj_release(v);
  /* Every way in: keys, sets, frozensets, state, names. */
  {
    static const struct {
      const char *p;
      size_t n;
      size_t items, bytes;
    } lim[] = {
        {V("\x80\x04}(K\x01K\x02K\x03K\x04u."), 3, 0},
        {V("\x80\x04}\x8c\x04" "abcdN" "s."), 0, 3},
        {V("\x80\x04\x8f(K\x01K\x02\x90."), 3, 0},
        {V("\x80\x04(K\x01K\x02\x91."), 3, 0},
        {V("\x80\x04" "cm\nC\n)\x81(K\x01K\x02t" "b."), 3, 0},
        {V("\x80\x04" "cmod\nClass\n."), 0, 7},
        {V("\x80\x04\x8a\x09\0\0\0\0\0\0\0\0\x01."), 0, 8},
    };
    for (size_t i = 0; i < sizeof lim / sizeof lim[0]; i++) {
      memset(&o, 0, sizeof o);
      CU_ASSERT_EQUAL(decode_err(lim[i].p, lim[i].n, NULL, &e), 0);
      o.max_items = lim[i].items;
      o.max_bytes = lim[i].bytes;
      CU_ASSERT_EQUAL(decode_err(lim[i].p, lim[i].n, &o, &e), MPX_ECODEC);
      if (e.msg[0] == 0) fprintf(stderr, "  limit case %zu passed\n", i);
    }
  }
  /* Billion laughs: t(k+1) = (tk, tk) through the memo, 64 times. Shared
   * parts count each time, so this stops at the item limit, at once. */
  {
    char buf[1024];
    size_t n = 0;
    struct timespec t0, t1;
    memcpy(buf, "\x80\x04K\x01\x94", 5);
    n = 5;
    for (int k = 0; k < 64; k++) {
      buf[n++] = 'h';
      buf[n++] = (char)k;
      buf[n++] = 'h';
      buf[n++] = (char)k;
      buf[n++] = (char)0x86;
      buf[n++] = (char)0x94;
    }
    buf[n++] = '.';
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CU_ASSERT_EQUAL(decode_err(buf, n, NULL, &e), MPX_ECODEC);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "items"));
    CU_ASSERT(t1.tv_sec - t0.tv_sec < 2);
  }
  /* The same with a 1 KiB string: the byte limit (64 KiB here). */
  {
    char *buf = malloc(4096);
    size_t n = 0;
    memcpy(buf, "\x80\x04X\x00\x04\0\0", 7);
    n = 7;
    memset(buf + n, 'x', 1024);
    n += 1024;
    buf[n++] = (char)0x94;
    for (int k = 0; k < 64; k++) {
      buf[n++] = 'h';
      buf[n++] = (char)k;
      buf[n++] = 'h';
      buf[n++] = (char)k;
      buf[n++] = (char)0x86;
      buf[n++] = (char)0x94;
    }
    buf[n++] = '.';
    memset(&o, 0, sizeof o);
    o.max_bytes = 1 << 16;
    CU_ASSERT_EQUAL(decode_err(buf, n, &o, &e), MPX_ECODEC);
    CU_ASSERT_PTR_NOT_NULL(strstr(e.msg, "bytes of payload"));
    free(buf);
  }
}

static void test_encode_errors(void) {
  mpx_wbuf_t w;
  mpx_obj_t *o;
  uint8_t mem[8];
  o = I(1);
  CU_ASSERT_EQUAL(encode(o, 1, &w), MPX_ECODEC);
  mpx_wbuf_free(&w);
  CU_ASSERT_EQUAL(encode(o, 6, &w), MPX_ECODEC);
  mpx_wbuf_free(&w);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "unsupported protocol 6"));
  mpx_obj_release(o);
  o = G("bad\nmodule", "x");
  CU_ASSERT_EQUAL(encode(o, 2, &w), MPX_ECODEC);
  mpx_wbuf_free(&w);
  CU_ASSERT_EQUAL(encode(o, 4, &w), 0);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
  o = R("m", "f", L(0), NULL);
  CU_ASSERT_EQUAL(encode(o, 4, &w), MPX_ECODEC);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "args must be a tuple"));
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
  o = mpx_obj_opaque(MPX_OPAQUE_GLOBAL, "m", "g", T(0), NULL);
  CU_ASSERT_EQUAL(encode(o, 4, &w), MPX_ECODEC);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
  /* A fixed buffer that is too small: ENOBUFS, nothing left half-written. */
  o = S("longer than eight bytes");
  mpx_wbuf_init_fixed(&w, mem, sizeof mem);
  CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), MPX_ENOBUFS);
  CU_ASSERT_EQUAL(w.len, 0);
  mpx_obj_release(o);
  /* An existing prefix in the buffer stays. */
  o = I(5);
  mpx_wbuf_init(&w);
  CU_ASSERT_EQUAL(mpx_wbuf_append(&w, "ab", 2), 0);
  CU_ASSERT_EQUAL(mpx_codec_encode(codec(), o, &w, NULL), 0);
  CU_ASSERT_EQUAL(w.len, 2 + 5);
  CU_ASSERT(memcmp(w.data, "ab\x80\x04K\x05.", 7) == 0);
  mpx_wbuf_free(&w);
  mpx_obj_release(o);
}

/* ---- CPython 2.7 <-> mpx ------------------------------------------------------------ */

/* CPython 2.7's interpreter: python2.7 on PATH when it runs, else pyenv's
 * ($PYENV_ROOT, default ~/.pyenv). NULL (and says so) when absent. */
static const char *python2(void) {
  static char path[512];
  static int looked;
  if (looked) return path[0] ? path : NULL;
  looked = 1;
  if (system("python2.7 -c 'import sys; sys.exit(sys.version_info[:2] != (2, 7))'"
             " >/dev/null 2>&1") == 0) {
    snprintf(path, sizeof path, "python2.7");
    return path;
  }
  const char *root = getenv("PYENV_ROOT"), *home = getenv("HOME");
  char cmd[700];
  FILE *f;
  if (root != NULL) snprintf(cmd, sizeof cmd, "ls -d '%s'/versions/2.7*/bin/python2.7 2>/dev/null | tail -1", root);
  else snprintf(cmd, sizeof cmd, "ls -d '%s'/.pyenv/versions/2.7*/bin/python2.7 2>/dev/null | tail -1", home ? home : "/root");
  if ((f = popen(cmd, "r")) != NULL) {
    if (fgets(path, sizeof path, f) == NULL) path[0] = '\0';
    path[strcspn(path, "\n")] = '\0';
    pclose(f);
  }
  if (path[0] == '\0') printf("\n  CPython 2.7 not found: skipped\n");
  return path[0] ? path : NULL;
}

static size_t unhex(const char *h, uint8_t *out, size_t cap) {
  size_t n = 0;
  unsigned v;
  while (n < cap && sscanf(h + 2 * n, "%2x", &v) == 1) out[n++] = (uint8_t)v;
  return n;
}

/* What each pickle CPython 2.7 writes below decodes to: a Python 2 str is
 * bytes, unicode is str. */
static mpx_obj_t *py2_expected(const char *name) {
#define IS(s) (strcmp(name, s) == 0)
  if (IS("empty")) return B("", 0);
  if (IS("abc")) return B("abc", 3);
  if (IS("esc")) return B("a\0\xff'\"\\\n\t", 8);
  if (IS("dquote")) return B("it's", 4);
  if (IS("long")) {
    char x[300];
    memset(x, 'x', sizeof x);
    return B(x, sizeof x);
  }
  if (IS("unicode")) return S("uni\xc3\xa9");
  if (IS("request")) return T(4, N(), B("get_queue", 9), T(1, B("k", 1)), M(1, B("block", 5), mpx_obj_bool(0)));
  if (IS("bytearray")) return B("a\xff" "b", 3);
  if (IS("keyerror")) return R("builtins", "KeyError", T(1, B("k", 1)), NULL);
  if (IS("empty_exc")) return R("queue", "Empty", T(0), NULL);
  return NULL;
#undef IS
}

/* Pickles CPython 2.7 writes (protocol 0 without its PUTs, 1 and 2; the
 * non-str values at 2 only) decode to Python 2's str as bytes. */
static void test_python2_decode(void) {
  const char *py = python2();
  char cmd[4096], line[8192];
  int seen = 0;
  if (py == NULL) return;
  snprintf(cmd, sizeof cmd, "'%s' -c \"%s\"", py,
           "import pickle, pickletools, binascii, Queue\n"
           "S = [('empty', ''), ('abc', 'abc'), ('esc', 'a\\\\0\\\\xff\\\\'\\\\\\\"\\\\\\\\\\\\n\\\\t'),\n"
           "     ('dquote', 'it\\\\'s'), ('long', 'x' * 300)]\n"
           "O = [('unicode', u'uni\\\\xe9'), ('request', (None, 'get_queue', ('k',), {'block': False})),\n"
           "     ('bytearray', bytearray('a\\\\xffb')), ('keyerror', KeyError('k')),\n"
           "     ('empty_exc', Queue.Empty())]\n"
           "for n, v in S:\n"
           "    print n, 0, binascii.hexlify(pickletools.optimize(pickle.dumps(v, 0)))\n"
           "    print n, 1, binascii.hexlify(pickle.dumps(v, 1))\n"
           "for n, v in S + O:\n"
           "    print n, 2, binascii.hexlify(pickle.dumps(v, 2))\n");
  FILE *f = popen(cmd, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  while (fgets(line, sizeof line, f) != NULL) {
    char name[32], hex[7000];
    int proto;
    uint8_t data[3500];
    mpx_obj_t *got = NULL, *want;
    if (sscanf(line, "%31s %d %6999s", name, &proto, hex) != 3) continue;
    size_t n = unhex(hex, data, sizeof data);
    want = py2_expected(name);
    CU_ASSERT_PTR_NOT_NULL_FATAL(want);
    int rc = decode(data, n, &got);
    CU_ASSERT_EQUAL(rc, 0);
    if (rc != 0) fprintf(stderr, "  %s protocol %d: %s\n", name, proto, mpx_last_error());
    else if (!same(got, want)) {
      CU_FAIL("decoded value differs");
      fprintf(stderr, "  %s protocol %d\n", name, proto);
    }
    mpx_obj_release(got);
    mpx_obj_release(want);
    seen++;
  }
  CU_ASSERT_EQUAL(pclose(f), 0);
  CU_ASSERT_EQUAL(seen, 5 * 3 + 5);
}

/* Protocol 0 STRING escapes and malformed Python 2 strings. */
static void test_python2_strings(void) {
  check_decodes(V("S'a\\x41\\101\\n\\\\\\'\"'\n."), B("aAA\n\\'\"", 7));
  check_decodes(V("S\"it's\"\n."), B("it's", 4));
  check_decodes(V("S'\\q'\n."), B("\\q", 2)); /* unknown escapes stay */
  check_decodes(V("\x80\x02U\x03" "a\0b."), B("a\0b", 3));
  check_decodes(V("\x80\x02T\x02\0\0\0hi."), B("hi", 2));
  expect_error(V("S'abc\n."), 0, "STRING: not a quoted string");
  expect_error(V("Sabc\n."), 0, "STRING: not a quoted string");
  expect_error(V("S'a\\x4'\n."), 0, "STRING: invalid \\x escape");
  expect_error(V("S'abc'"), 0, "truncated STRING");
  expect_error(V("\x80\x02T\xff\xff\xff\xff."), 2, "BINSTRING with a negative length");
  expect_error(V("\x80\x02U\x05" "ab."), 2, "truncated SHORT_BINSTRING");
}

/* mpx's protocol 2 pickles load in CPython 2.7 as what CPython 3 would
 * have sent: Python 3 names written as Python 2's (fix_imports). */
static void test_python2_loads(void) {
  const char *py = python2();
  char path[] = "/tmp/mpx_pickle_py2_XXXXXX", cmd[2048], line[512];
  static const char *const want[] = {
      "exceptions.KeyError ('k',)", "Queue.Empty ()", "Queue.Full ()",
      "exceptions.ValueError (u'bad',)",
      "multiprocessing.managers.RemoteError ('tb',)",
      "str 'a\\xff'", "unicode u'x'", "set set([1])"};
  if (py == NULL) return;
  mpx_obj_t *vals[] = {
      R("builtins", "KeyError", T(1, B("k", 1)), NULL),
      R("queue", "Empty", T(0), NULL), R("queue", "Full", T(0), NULL),
      R("builtins", "ValueError", T(1, S("bad")), NULL),
      R("multiprocessing.managers", "RemoteError", T(1, B("tb", 2)), NULL),
      B("a\xff", 2), S("x"), R("builtins", "set", T(1, L(1, I(1))), NULL)};
  int fd = mkstemp(path);
  CU_ASSERT_FATAL(fd >= 0);
  FILE *out = fdopen(fd, "w");
  for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
    mpx_wbuf_t w;
    CU_ASSERT_EQUAL(encode(vals[i], 2, &w), 0);
    for (size_t k = 0; k < w.len; k++) fprintf(out, "%02x", w.data[k]);
    fputc('\n', out);
    mpx_wbuf_free(&w);
    mpx_obj_release(vals[i]);
  }
  fclose(out);
  snprintf(cmd, sizeof cmd, "'%s' -c \"%s\" < '%s' 2>&1", py,
           "import sys, pickle, binascii\n"
           "for l in sys.stdin:\n"
           "    try:\n"
           "        o = pickle.loads(binascii.unhexlify(l.strip()))\n"
           "        t = type(o)\n"
           "        if isinstance(o, BaseException): print t.__module__ + '.' + t.__name__, repr(o.args)\n"
           "        else: print t.__name__, repr(o)\n"
           "    except Exception as e: print 'ERROR', repr(e)\n", path);
  FILE *f = popen(cmd, "r");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  size_t i = 0;
  while (fgets(line, sizeof line, f) != NULL) {
    line[strcspn(line, "\n")] = '\0';
    if (i < sizeof want / sizeof want[0]) {
      CU_ASSERT_STRING_EQUAL(line, want[i]);
      if (strcmp(line, want[i]) != 0) fprintf(stderr, "  got %s, want %s\n", line, want[i]);
    }
    i++;
  }
  CU_ASSERT_EQUAL(pclose(f), 0);
  CU_ASSERT_EQUAL(i, sizeof want / sizeof want[0]);
  unlink(path);
}

static void test_descriptor(void) {
  const mpx_codec_t *c = codec();
  CU_ASSERT_STRING_EQUAL(c->name, "pickle");
  CU_ASSERT_STRING_EQUAL(c->content_type, "application/x-python-pickle");
  CU_ASSERT_EQUAL(mpx_codec_check(c, "pickle"), 0);
}

MPX_TEST_MAIN("codec_pickle", MPX_TEST(test_descriptor),
              MPX_TEST(test_round_trip_types), MPX_TEST(test_round_trip_edges),
              MPX_TEST(test_borrow), MPX_TEST(test_reference_vectors),
              MPX_TEST(test_python_golden), MPX_TEST(test_python_loads),
              MPX_TEST(test_errors), MPX_TEST(test_decode_extras),
              MPX_TEST(test_truncation_and_corruption), MPX_TEST(test_depth),
              MPX_TEST(test_limits), MPX_TEST(test_encode_errors),
              MPX_TEST(test_python2_decode), MPX_TEST(test_python2_strings),
              MPX_TEST(test_python2_loads))
