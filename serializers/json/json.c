/* mpx codec "json": JSON (RFC 8259), with a reversible tagged form for
 * what JSON cannot carry.
 *
 * Encoding builds a jansson tree and dumps it compact (no spaces), UTF-8
 * (not \u-escaped), keys in insertion order, floats with 17 significant
 * digits (jansson's default, which reads back exactly), straight into the
 * mpx_wbuf_t through json_dump_callback. Decoding uses a parser written
 * here, not jansson's, because jansson cannot read integers beyond int64
 * (Python writes 2**70 as a plain number), cannot honour max_depth /
 * max_items / max_bytes, and cannot point strings into the input.
 *
 *   mpx                 JSON written                    read back as
 *   null, bool          null, true, false               same
 *   int                 a number                        int
 *   bigint              {"$bigint": "<decimal>"}        bigint (a plain
 *                                                       number too)
 *   float (finite)      a number with '.' or 'e'        float
 *   float NaN, +-inf    {"$float": "nan"|"inf"|"-inf"}  float (NaN,
 *                                                       Infinity, -Infinity
 *                                                       as Python writes
 *                                                       them are read too)
 *   str, valid UTF-8    a string                        str
 *   str, not UTF-8      {"$str": "<base64>"}            str, same bytes
 *   bytes               {"$bytes": "<base64>"}          bytes
 *   array               an array                        array
 *   tuple               {"$tuple": [...]}               tuple
 *   map, str keys       an object                       map
 *   map, other keys     {"$map": [[k, v], ...]}         map
 *   opaque              {"$opaque": {"kind": "global"|"reduce"|"newobj",
 *                         "module": s, "name": s, "args": v, "state": v}}
 *                       (args, state left out when none; null is none)
 * base64 is RFC 4648's standard alphabet with padding. A map whose keys
 * are not all valid-UTF-8 strs, or whose only key is one of the tag names
 * above, is written in the $map form, so an object with exactly one key
 * that is a tag name always means the tagged value; any other object,
 * "$"-keys included, is a map. Integers have at most 4300 digits either
 * way (Python's default int max_str_digits): longer ones are MPX_ECODEC,
 * which keeps the quadratic decimal conversion cheap.
 *
 * Reading: a repeated key in an object: the last value wins, at the first
 * key's position (as Python's json.loads). "-0.0" reads as the float -0.0
 * and -0.0 is written as "-0.0"; "-0" is the int 0. Strings must be valid
 * UTF-8 with no lone surrogate escapes. Whitespace may surround the
 * value; anything else after it is an error. max_depth counts JSON
 * nesting (a tagged value's object and arrays count), max_items the
 * elements of all arrays and objects, max_bytes the decoded strings.
 * With MPX_DECODE_BORROW, strings without escapes point into the input.
 * Encoding refuses nesting deeper than 1000 (jansson dumps and frees
 * recursively). */
#define _GNU_SOURCE
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <mpx.h>

#define ENC_MAX_DEPTH 1000u
#define MAX_DIGITS 4300


/* ---- tags ------------------------------------------------------------ */

enum { T_NONE, T_BYTES, T_STR, T_BIGINT, T_FLOAT, T_TUPLE, T_MAP, T_OPAQUE };
static const char *const tag_names[] = {
    NULL, "$bytes", "$str", "$bigint", "$float", "$tuple", "$map", "$opaque"};

static int tag_of(const char *s, size_t n) {
  int t;
  if (n < 4 || s[0] != '$') return T_NONE;
  for (t = T_BYTES; t <= T_OPAQUE; t++)
    if (strlen(tag_names[t]) == n && memcmp(tag_names[t], s, n) == 0)
      return t;
  return T_NONE;
}

static const char *const kind_names[] = {"global", "reduce", "newobj"};

/* ---- base64 ---------------------------------------------------------- */

static const char b64_chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void b64_encode(const uint8_t *s, size_t n, char *out) {
  size_t i;
  for (i = 0; i + 3 <= n; i += 3, out += 4) {
    uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
    out[0] = b64_chars[v >> 18], out[1] = b64_chars[(v >> 12) & 63];
    out[2] = b64_chars[(v >> 6) & 63], out[3] = b64_chars[v & 63];
  }
  if (n - i == 1) {
    out[0] = b64_chars[s[i] >> 2], out[1] = b64_chars[(s[i] & 3) << 4];
    out[2] = out[3] = '=';
  } else if (n - i == 2) {
    uint32_t v = (uint32_t)s[i] << 8 | s[i + 1];
    out[0] = b64_chars[v >> 10], out[1] = b64_chars[(v >> 4) & 63];
    out[2] = b64_chars[(v << 2) & 63], out[3] = '=';
  }
}

static int b64_val(uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

/* Strict: padded, canonical (unused bits zero). 0 or -1. */
static int b64_decode(const uint8_t *s, size_t n, uint8_t *out, size_t *outn) {
  size_t i, o = 0, pad = 0;
  if (n % 4 != 0) return -1;
  if (n > 0 && s[n - 1] == '=') pad = s[n - 2] == '=' ? 2 : 1;
  for (i = 0; i < n; i += 4) {
    int v[4], k, last = i + 4 == n;
    for (k = 0; k < 4; k++) {
      if (last && k >= 4 - (int)pad) {
        v[k] = 0;
        continue;
      }
      if ((v[k] = b64_val(s[i + k])) < 0) return -1;
    }
    out[o++] = (uint8_t)(v[0] << 2 | v[1] >> 4);
    if (last && pad == 2) {
      if (v[1] & 15) return -1;
      break;
    }
    out[o++] = (uint8_t)(v[1] << 4 | v[2] >> 2);
    if (last && pad == 1) {
      if (v[2] & 3) return -1;
      break;
    }
    out[o++] = (uint8_t)(v[2] << 6 | v[3]);
  }
  *outn = o;
  return 0;
}

/* ---- decimal <-> two's complement ------------------------------------ */

/* digits[0..n) (no sign) into little-endian two's complement, negated if
 * neg; *outn bytes. The caller frees *out. 0 or MPX_ENOMEM. */
static int dec_to_le(const char *digits, size_t n, int neg, uint8_t **out,
                     size_t *outn) {
  size_t nl = n / 9 + 2, used = 0, i, k;
  uint32_t *l = calloc(nl, sizeof(*l));
  uint8_t *b;
  if (l == NULL) return MPX_ENOMEM;
  for (i = 0; i < n;) { /* l = l * 10^k + next k digits */
    uint32_t chunk = 0, mul = 1;
    uint64_t carry;
    for (k = 0; k < 9 && i < n; k++, i++) {
      chunk = chunk * 10 + (uint32_t)(digits[i] - '0');
      mul *= 10;
    }
    carry = chunk;
    for (k = 0; k < used; k++) {
      uint64_t t = (uint64_t)l[k] * mul + carry;
      l[k] = (uint32_t)t;
      carry = t >> 32;
    }
    if (carry != 0) l[used++] = (uint32_t)carry;
  }
  *outn = used * 4 + 1; /* a sign byte on top */
  if ((b = malloc(*outn)) == NULL) {
    free(l);
    return MPX_ENOMEM;
  }
  for (k = 0; k < used * 4; k++) b[k] = (uint8_t)(l[k / 4] >> (8 * (k % 4)));
  b[used * 4] = 0;
  free(l);
  if (neg) { /* two's complement: invert, add one */
    unsigned c = 1;
    for (k = 0; k < *outn; k++) {
      c += (uint8_t)~b[k];
      b[k] = (uint8_t)c;
      c >>= 8;
    }
  }
  *out = b;
  return 0;
}

/* le[0..n) as a decimal string (malloc'd, NUL-terminated) or NULL. */
static char *le_to_dec(const uint8_t *le, size_t n) {
  int neg = n > 0 && (le[n - 1] & 0x80);
  size_t nl = (n + 3) / 4, k, nd = 0, out = 0;
  uint32_t *l = calloc(nl ? nl : 1, sizeof(*l)), *chunks;
  char *s;
  unsigned c = 1;
  if (l == NULL) return NULL;
  for (k = 0; k < n; k++) {
    uint8_t b = neg ? (uint8_t)~le[k] : le[k];
    if (neg) { /* magnitude: invert, add one */
      c += b;
      b = (uint8_t)c;
      c >>= 8;
    }
    l[k / 4] |= (uint32_t)b << (8 * (k % 4));
  }
  /* Repeated division by 10^9 gives the 9-digit chunks, lowest first. */
  chunks = malloc((nl + 1) * 2 * sizeof(*chunks));
  if (chunks == NULL) {
    free(l);
    return NULL;
  }
  while (nl > 0 && l[nl - 1] == 0) nl--;
  do {
    uint64_t rem = 0;
    for (k = nl; k-- > 0;) {
      uint64_t t = rem << 32 | l[k];
      l[k] = (uint32_t)(t / 1000000000u);
      rem = t % 1000000000u;
    }
    chunks[nd++] = (uint32_t)rem;
    while (nl > 0 && l[nl - 1] == 0) nl--;
  } while (nl > 0);
  free(l);
  if ((s = malloc(nd * 9 + 2)) != NULL) {
    if (neg) s[out++] = '-';
    out += (size_t)sprintf(s + out, "%u", chunks[nd - 1]);
    for (k = nd - 1; k-- > 0;)
      out += (size_t)sprintf(s + out, "%09u", chunks[k]);
  }
  free(chunks);
  return s;
}

/* ---- encoding (jansson) ---------------------------------------------- */

typedef struct {
  mpx_codec_error_t *err;
  int rc; /* why to_json returned NULL */
} enc_t;

static json_t *enc_fail(enc_t *e, const char *fmt, ...) MPX_PRINTF(2, 3);
static json_t *enc_fail(enc_t *e, const char *fmt, ...) {
  va_list ap;
  e->rc = MPX_ECODEC;
  if (e->err != NULL) {
    e->err->offset = SIZE_MAX;
    va_start(ap, fmt);
    vsnprintf(e->err->msg, sizeof(e->err->msg), fmt, ap);
    va_end(ap);
  }
  return NULL;
}

static json_t *enc_nomem(enc_t *e) {
  e->rc = MPX_ENOMEM;
  return NULL;
}

/* {"tag": v}; takes v. */
static json_t *tagged(enc_t *e, int tag, json_t *v) {
  json_t *o;
  if (v == NULL) return NULL;
  if ((o = json_object()) == NULL) {
    json_decref(v);
    return enc_nomem(e);
  }
  if (json_object_set_new_nocheck(o, tag_names[tag], v) != 0) {
    json_decref(o);
    return enc_nomem(e);
  }
  return o;
}

static json_t *b64_json(enc_t *e, const void *p, size_t n) {
  size_t m;
  char *buf;
  json_t *j;
  if (n > SIZE_MAX / 2) return enc_fail(e, "%zu bytes are too many", n);
  m = (n + 2) / 3 * 4;
  if ((buf = malloc(m ? m : 1)) == NULL) return enc_nomem(e);
  b64_encode(p, n, buf);
  j = json_stringn_nocheck(buf, m);
  free(buf);
  return j != NULL ? j : enc_nomem(e);
}

static json_t *str_json(enc_t *e, const char *s, size_t n) {
  json_t *j;
  if (!mpx_utf8_valid(s, n)) return tagged(e, T_STR, b64_json(e, s, n));
  j = json_stringn_nocheck(s, n); /* checked just above */
  return j != NULL ? j : enc_nomem(e);
}

static json_t *add(enc_t *e, json_t *arr, json_t *item) {
  if (item == NULL) {
    json_decref(arr);
    return NULL;
  }
  if (json_array_append_new(arr, item) != 0) {
    json_decref(arr);
    return enc_nomem(e);
  }
  return arr;
}

static json_t *to_json(enc_t *e, const mpx_obj_t *o, unsigned depth);

static json_t *seq_json(enc_t *e, const mpx_obj_t *o, unsigned depth) {
  size_t i, n = mpx_obj_len(o);
  json_t *a = json_array();
  if (a == NULL) return enc_nomem(e);
  for (i = 0; i < n && a != NULL; i++)
    a = add(e, a, to_json(e, mpx_obj_item(o, i), depth));
  return a;
}

static json_t *map_json(enc_t *e, const mpx_obj_t *o, unsigned depth) {
  size_t i, n = mpx_obj_len(o), kn;
  int plain = 1;
  const char *k;
  json_t *j;

  for (i = 0; i < n && plain; i++) {
    const mpx_obj_t *key = mpx_obj_map_key(o, i);
    if (mpx_obj_type(key) != MPX_OBJ_STR) {
      plain = 0;
      break;
    }
    k = mpx_obj_str_data(key, &kn);
    plain = mpx_utf8_valid(k, kn) && !(n == 1 && tag_of(k, kn) != T_NONE);
  }
  if (plain) {
    if ((j = json_object()) == NULL) return enc_nomem(e);
    for (i = 0; i < n; i++) {
      json_t *v = to_json(e, mpx_obj_map_value(o, i), depth);
      if (v == NULL) {
        json_decref(j);
        return NULL;
      }
      k = mpx_obj_str_data(mpx_obj_map_key(o, i), &kn);
      if (json_object_setn_new_nocheck(j, k, kn, v) != 0) {
        json_decref(j);
        return enc_nomem(e);
      }
    }
    return j;
  }
  if ((j = json_array()) == NULL) return enc_nomem(e);
  for (i = 0; i < n && j != NULL; i++) {
    json_t *pair = json_array();
    if (pair == NULL) {
      json_decref(j);
      return enc_nomem(e);
    }
    pair = add(e, pair, to_json(e, mpx_obj_map_key(o, i), depth));
    if (pair != NULL)
      pair = add(e, pair, to_json(e, mpx_obj_map_value(o, i), depth));
    j = pair == NULL ? (json_decref(j), NULL) : add(e, j, pair);
  }
  return tagged(e, T_MAP, j);
}

static json_t *opaque_json(enc_t *e, const mpx_obj_t *o, unsigned depth) {
  mpx_opaque_kind_t kind = mpx_obj_opaque_kind(o);
  const char *s;
  json_t *j = json_object(), *v;
  int i;
  if (j == NULL) return enc_nomem(e);
  if ((unsigned)kind > MPX_OPAQUE_NEWOBJ) {
    json_decref(j);
    return enc_fail(e, "opaque of unknown kind %d", (int)kind);
  }
  for (i = 0; i < 5; i++) {
    static const char *const keys[] = {"kind", "module", "name", "args",
                                       "state"};
    const mpx_obj_t *x;
    switch (i) {
    case 0:
      v = json_string_nocheck(kind_names[kind]);
      if (v == NULL) enc_nomem(e);
      break;
    case 1:
    case 2:
      s = i == 1 ? mpx_obj_opaque_module(o) : mpx_obj_opaque_name(o);
      v = str_json(e, s, strlen(s));
      break;
    default:
      x = i == 3 ? mpx_obj_opaque_args(o) : mpx_obj_opaque_state(o);
      if (x == NULL) continue; /* none: left out */
      v = to_json(e, x, depth);
      break;
    }
    if (v == NULL) {
      json_decref(j);
      return NULL;
    }
    if (json_object_set_new_nocheck(j, keys[i], v) != 0) {
      json_decref(j);
      return enc_nomem(e);
    }
  }
  return tagged(e, T_OPAQUE, j);
}

static json_t *to_json(enc_t *e, const mpx_obj_t *o, unsigned depth) {
  const char *s;
  const void *p;
  size_t n = 0;
  json_t *j;
  double d;

  if (o == NULL) return enc_fail(e, "no object (NULL)");
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_NULL:
    j = json_null();
    break;
  case MPX_OBJ_BOOL:
    j = json_boolean(mpx_obj_get_bool(o));
    break;
  case MPX_OBJ_INT:
    j = json_integer((json_int_t)mpx_obj_get_int(o));
    break;
  case MPX_OBJ_BIGINT: {
    char *dec;
    p = mpx_obj_bigint_data(o, &n);
    /* 1800 bytes hold about 4335 digits: bound the work first. */
    if (n > 1800)
      return enc_fail(e, "bigint of more than %d digits", MAX_DIGITS);
    if ((dec = le_to_dec(p, n)) == NULL) return enc_nomem(e);
    if (strlen(dec) - (dec[0] == '-') > MAX_DIGITS) {
      free(dec);
      return enc_fail(e, "bigint of more than %d digits", MAX_DIGITS);
    }
    j = json_string_nocheck(dec);
    free(dec);
    return j == NULL ? enc_nomem(e) : tagged(e, T_BIGINT, j);
  }
  case MPX_OBJ_FLOAT:
    d = mpx_obj_get_float(o);
    if (isfinite(d)) {
      j = json_real(d);
      break;
    }
    j = json_string_nocheck(isnan(d) ? "nan" : d > 0 ? "inf" : "-inf");
    return j == NULL ? enc_nomem(e) : tagged(e, T_FLOAT, j);
  case MPX_OBJ_STR:
    s = mpx_obj_str_data(o, &n);
    return str_json(e, s, n);
  case MPX_OBJ_BYTES:
    p = mpx_obj_bytes_data(o, &n);
    return tagged(e, T_BYTES, b64_json(e, p, n));
  case MPX_OBJ_ARRAY:
  case MPX_OBJ_TUPLE:
  case MPX_OBJ_MAP:
  case MPX_OBJ_OPAQUE:
    if (depth >= ENC_MAX_DEPTH)
      return enc_fail(e, "nesting deeper than %u", ENC_MAX_DEPTH);
    switch (mpx_obj_type(o)) {
    case MPX_OBJ_ARRAY:
      return seq_json(e, o, depth + 1);
    case MPX_OBJ_TUPLE:
      return tagged(e, T_TUPLE, seq_json(e, o, depth + 1));
    case MPX_OBJ_MAP:
      return map_json(e, o, depth + 1);
    default:
      return opaque_json(e, o, depth + 1);
    }
  default:
    return enc_fail(e, "cannot encode type %d", (int)mpx_obj_type(o));
  }
  return j != NULL ? j : enc_nomem(e);
}

typedef struct {
  mpx_wbuf_t *out;
  int rc;
} sink_t;

static int sink_write(const char *buf, size_t len, void *data) {
  sink_t *s = data;
  int rc = mpx_wbuf_append(s->out, buf, len);
  if (rc != 0) {
    s->rc = rc;
    return -1;
  }
  return 0;
}

static int js_encode(const mpx_obj_t *obj, mpx_wbuf_t *out,
                     const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  enc_t e = {err, MPX_ENOMEM};
  sink_t sink = {out, 0};
  size_t start = out->len;
  json_t *root;
  int rc = 0;
  (void)opts;

  if ((root = to_json(&e, obj, 0)) == NULL) return e.rc;
  if (json_dump_callback(root, sink_write, &sink,
                         JSON_COMPACT | JSON_ENCODE_ANY |
                             JSON_PRESERVE_ORDER) != 0) {
    rc = sink.rc != 0 ? sink.rc
                      : mpx_codec_fail(err, SIZE_MAX, "jansson could not dump the value");
    if (out->len > start) out->len = start; /* no half-written value */
  }
  json_decref(root);
  return rc;
}

/* ---- decoding -------------------------------------------------------- */

typedef struct {
  mpx_obj_t *obj; /* array or map */
  mpx_obj_t *key; /* map: a key waiting for its value */
  size_t at;      /* offset of its '[' or '{' */
  int is_map;
} jframe_t;

typedef struct {
  const uint8_t *base, *p, *end;
  unsigned flags, max_depth;
  size_t max_items, max_bytes, items, bytes;
  jframe_t *st;
  size_t nst, cap;
  mpx_codec_error_t *err;
} jr_t;

static size_t pos(const jr_t *r) { return (size_t)(r->p - r->base); }

static void skip_ws(jr_t *r) {
  while (r->p < r->end &&
         (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
    r->p++;
}

static int unexpected(jr_t *r, const char *wanted) {
  if (r->p >= r->end)
    return mpx_codec_fail(r->err, pos(r), "unexpected end of input, %s expected",
                wanted);
  if (*r->p >= 0x20 && *r->p < 0x7f)
    return mpx_codec_fail(r->err, pos(r), "unexpected '%c', %s expected", *r->p,
                wanted);
  return mpx_codec_fail(r->err, pos(r), "unexpected byte 0x%02x, %s expected", *r->p,
              wanted);
}

static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;
static void c_locale_init(void) {
  c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* JSON numbers use '.', whatever the program's locale says. */
static double parse_double(const char *s) {
  pthread_once(&c_locale_once, c_locale_init);
  if (c_locale != (locale_t)0) return strtod_l(s, NULL, c_locale);
  return strtod(s, NULL);
}

static int hex4(const uint8_t *p, uint32_t *v) {
  int k;
  *v = 0;
  for (k = 0; k < 4; k++) {
    uint8_t c = p[k];
    int d = c >= '0' && c <= '9'   ? c - '0'
          : c >= 'a' && c <= 'f' ? c - 'a' + 10
          : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                 : -1;
    if (d < 0) return -1;
    *v = *v << 4 | (uint32_t)d;
  }
  return 0;
}

static size_t put_utf8(uint8_t *o, uint32_t cp) {
  if (cp < 0x80) return o[0] = (uint8_t)cp, 1;
  if (cp < 0x800)
    return o[0] = (uint8_t)(0xc0 | cp >> 6), o[1] = (uint8_t)(0x80 | (cp & 63)),
           2;
  if (cp < 0x10000)
    return o[0] = (uint8_t)(0xe0 | cp >> 12),
           o[1] = (uint8_t)(0x80 | ((cp >> 6) & 63)),
           o[2] = (uint8_t)(0x80 | (cp & 63)), 3;
  o[0] = (uint8_t)(0xf0 | cp >> 18), o[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
  o[2] = (uint8_t)(0x80 | ((cp >> 6) & 63)), o[3] = (uint8_t)(0x80 | (cp & 63));
  return 4;
}

/* A string at r->p (on its '"'). */
/* Kept whole (about 90 lines): one scan over the bytes with its escape
 * switch; the byte offsets of its errors come from that one cursor. */
static int parse_string(jr_t *r, mpx_obj_t **v) {
  const uint8_t *start = r->p + 1, *q = start;
  size_t at = pos(r), n;
  uint8_t *buf = NULL, *o;
  int escaped = 0;

  /* Find the closing quote; unescaped control characters are errors. */
  for (;;) {
    if (q >= r->end) {
      r->p = q;
      return mpx_codec_fail(r->err, at, "unterminated string");
    }
    if (*q == '"') break;
    if (*q < 0x20) {
      r->p = q;
      return mpx_codec_fail(r->err, pos(r), "control character 0x%02x in string", *q);
    }
    if (*q == '\\') {
      escaped = 1;
      if (++q >= r->end) continue;
    }
    q++;
  }
  n = (size_t)(q - start);
  if (escaped) { /* decoding only ever shrinks the text */
    const uint8_t *s = start;
    if ((buf = malloc(n ? n : 1)) == NULL) return MPX_ENOMEM;
    for (o = buf; s < q;) {
      uint32_t cp, lo;
      if (*s != '\\') {
        *o++ = *s++;
        continue;
      }
      switch (s[1]) {
      case '"': case '\\': case '/': *o++ = s[1]; s += 2; continue;
      case 'b': *o++ = '\b'; s += 2; continue;
      case 'f': *o++ = '\f'; s += 2; continue;
      case 'n': *o++ = '\n'; s += 2; continue;
      case 'r': *o++ = '\r'; s += 2; continue;
      case 't': *o++ = '\t'; s += 2; continue;
      case 'u': break;
      default:
        r->p = s;
        free(buf);
        return mpx_codec_fail(r->err, pos(r), "invalid escape");
      }
      if (q - s < 6 || hex4(s + 2, &cp) != 0) {
        r->p = s;
        free(buf);
        return mpx_codec_fail(r->err, pos(r), "invalid \\u escape");
      }
      if (cp >= 0xdc00 && cp <= 0xdfff) goto lone;
      if (cp >= 0xd800 && cp <= 0xdbff) {
        if (q - s < 12 || s[6] != '\\' || s[7] != 'u' ||
            hex4(s + 8, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
          goto lone;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        s += 6;
      }
      o += put_utf8(o, cp);
      s += 6;
      continue;
    lone:
      r->p = s;
      free(buf);
      return mpx_codec_fail(r->err, pos(r), "lone surrogate in \\u escape");
    }
    n = (size_t)(o - buf);
  }
  if (!mpx_utf8_valid(escaped ? (const char *)buf : (const char *)start, n)) {
    free(buf);
    return mpx_codec_fail(r->err, at, "string is not valid UTF-8");
  }
  if (n > r->max_bytes - r->bytes) {
    free(buf);
    return mpx_codec_fail(r->err, at, "more than max_bytes %zu bytes of strings",
                r->max_bytes);
  }
  r->bytes += n;
  r->p = q + 1;
  if (escaped)
    *v = mpx_obj_str((const char *)buf, n);
  else if (r->flags & MPX_DECODE_BORROW)
    *v = mpx_obj_str_external((const char *)start, n, NULL, NULL);
  else
    *v = mpx_obj_str((const char *)start, n);
  free(buf);
  return *v == NULL ? MPX_ENOMEM : 0;
}

/* digits[0..n), no sign, no leading zeros, as an int or a bigint. */
static int make_integer(jr_t *r, size_t at, const char *digits, size_t n,
                        int neg, mpx_obj_t **v) {
  uint64_t mag = 0;
  size_t i;
  uint8_t *le;
  int rc;
  if (n > MAX_DIGITS)
    return mpx_codec_fail(r->err, at, "integer of more than %d digits", MAX_DIGITS);
  if (n <= 19) { /* 19 digits fit a uint64 */
    for (i = 0; i < n; i++) mag = mag * 10 + (uint64_t)(digits[i] - '0');
    if (mag <= INT64_MAX) {
      *v = mpx_obj_int(neg ? -(int64_t)mag : (int64_t)mag);
      return *v == NULL ? MPX_ENOMEM : 0;
    }
    if (neg && mag == (uint64_t)INT64_MAX + 1) {
      *v = mpx_obj_int(INT64_MIN);
      return *v == NULL ? MPX_ENOMEM : 0;
    }
  }
  if ((rc = dec_to_le(digits, n, neg, &le, &i)) != 0) return rc;
  *v = mpx_obj_bigint(le, i);
  free(le);
  return *v == NULL ? MPX_ENOMEM : 0;
}

static int expect_word(jr_t *r, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, w, n) != 0)
    return mpx_codec_fail(r->err, pos(r), "invalid literal, %s expected", w);
  r->p += n;
  return 0;
}

static int digits_run(jr_t *r) {
  const uint8_t *s = r->p;
  while (r->p < r->end && *r->p >= '0' && *r->p <= '9') r->p++;
  return r->p > s;
}

static int parse_number(jr_t *r, mpx_obj_t **v) {
  const uint8_t *s = r->p, *ds;
  size_t at = pos(r), n;
  int neg = 0, is_float = 0, rc;
  char small[64], *text;

  if (*r->p == '-') {
    neg = 1;
    r->p++;
    if (r->p < r->end && *r->p == 'I') { /* Python's -Infinity */
      if ((rc = expect_word(r, "Infinity")) != 0) return rc;
      *v = mpx_obj_float(-INFINITY);
      return *v == NULL ? MPX_ENOMEM : 0;
    }
  }
  ds = r->p;
  if (r->p < r->end && *r->p == '0')
    r->p++;
  else if (!digits_run(r))
    return unexpected(r, "a digit");
  if (r->p < r->end && *r->p == '.') {
    is_float = 1;
    r->p++;
    if (!digits_run(r)) return unexpected(r, "a digit after '.'");
  }
  if (r->p < r->end && (*r->p == 'e' || *r->p == 'E')) {
    is_float = 1;
    r->p++;
    if (r->p < r->end && (*r->p == '+' || *r->p == '-')) r->p++;
    if (!digits_run(r)) return unexpected(r, "a digit in the exponent");
  }
  if (!is_float)
    return make_integer(r, at, (const char *)ds, (size_t)(r->p - ds), neg, v);
  n = (size_t)(r->p - s); /* strtod wants a terminated copy */
  text = n < sizeof(small) ? small : malloc(n + 1);
  if (text == NULL) return MPX_ENOMEM;
  memcpy(text, s, n);
  text[n] = 0;
  *v = mpx_obj_float(parse_double(text)); /* too large: +-inf, as Python */
  if (text != small) free(text);
  return *v == NULL ? MPX_ENOMEM : 0;
}

/* Tagged values, checked when their object closes. */

static int tag_str(jr_t *r, size_t at, mpx_obj_t *v, int tag, const char **s,
                   size_t *n) {
  if (mpx_obj_type(v) != MPX_OBJ_STR)
    return mpx_codec_fail(r->err, at, "%s wants a str, not %s", tag_names[tag],
                mpx_obj_type_name(mpx_obj_type(v)));
  *s = mpx_obj_str_data(v, n);
  return 0;
}

static int untag_b64(jr_t *r, size_t at, int tag, mpx_obj_t *v,
                     mpx_obj_t **out) {
  const char *s = NULL;
  size_t n, m;
  uint8_t *b;
  int rc;
  if ((rc = tag_str(r, at, v, tag, &s, &n)) != 0) return rc;
  if ((b = malloc(n / 4 * 3 + 1)) == NULL) return MPX_ENOMEM;
  if (b64_decode((const uint8_t *)s, n, b, &m) != 0) {
    free(b);
    return mpx_codec_fail(r->err, at, "%s: invalid base64", tag_names[tag]);
  }
  *out = tag == T_BYTES ? mpx_obj_bytes(b, m) : mpx_obj_str((char *)b, m);
  free(b);
  return *out == NULL ? MPX_ENOMEM : 0;
}

static int untag_bigint(jr_t *r, size_t at, mpx_obj_t *v, mpx_obj_t **out) {
  const char *s = NULL;
  size_t n, i;
  int neg, rc;
  if ((rc = tag_str(r, at, v, T_BIGINT, &s, &n)) != 0) return rc;
  neg = n > 0 && s[0] == '-';
  s += neg, n -= (size_t)neg;
  for (i = 0; i < n; i++)
    if (s[i] < '0' || s[i] > '9') break;
  if (n == 0 || i < n || (s[0] == '0' && n > 1))
    return mpx_codec_fail(r->err, at, "$bigint: not a decimal integer");
  return make_integer(r, at, s, n, neg, out);
}

static int untag_float(jr_t *r, size_t at, mpx_obj_t *v, mpx_obj_t **out) {
  const char *s = NULL;
  size_t n = 0;
  double d;
  int rc;
  if ((rc = tag_str(r, at, v, T_FLOAT, &s, &n)) != 0) return rc;
  if (n == 3 && memcmp(s, "nan", 3) == 0)
    d = NAN;
  else if (n == 3 && memcmp(s, "inf", 3) == 0)
    d = INFINITY;
  else if (n == 4 && memcmp(s, "-inf", 4) == 0)
    d = -INFINITY;
  else
    return mpx_codec_fail(r->err, at, "$float: not nan, inf or -inf");
  *out = mpx_obj_float(d);
  return *out == NULL ? MPX_ENOMEM : 0;
}

static int untag_seq(jr_t *r, size_t at, int tag, mpx_obj_t *v,
                     mpx_obj_t **out) {
  size_t i, n = mpx_obj_len(v);
  mpx_obj_t *o;
  int rc = 0;
  if (mpx_obj_type(v) != MPX_OBJ_ARRAY)
    return mpx_codec_fail(r->err, at, "%s wants an array, not %s", tag_names[tag],
                mpx_obj_type_name(mpx_obj_type(v)));
  if (tag == T_MAP) {
    for (i = 0; i < n; i++) {
      mpx_obj_t *pair = mpx_obj_item(v, i);
      if (mpx_obj_type(pair) != MPX_OBJ_ARRAY || mpx_obj_len(pair) != 2)
        return mpx_codec_fail(r->err, at, "$map: item %zu is not a [key, value] array",
                    i);
    }
  }
  o = tag == T_MAP ? mpx_obj_map(n) : mpx_obj_tuple(n);
  if (o == NULL) return MPX_ENOMEM;
  for (i = 0; i < n && rc == 0; i++) {
    mpx_obj_t *x = mpx_obj_item(v, i);
    if (tag == T_MAP) /* a repeated key: the last value wins */
      rc = mpx_obj_map_set(o, mpx_obj_retain(mpx_obj_item(x, 0)),
                           mpx_obj_retain(mpx_obj_item(x, 1)));
    else
      rc = mpx_obj_append(o, mpx_obj_retain(x));
  }
  if (rc != 0) {
    mpx_obj_release(o);
    return rc;
  }
  *out = o;
  return 0;
}

static int untag_opaque(jr_t *r, size_t at, mpx_obj_t *v, mpx_obj_t **out) {
  mpx_obj_t *f[5] = {NULL, NULL, NULL, NULL, NULL};
  static const char *const keys[] = {"kind", "module", "name", "args",
                                     "state"};
  char *names[2] = {NULL, NULL};
  size_t i, n, k;
  int kind = -1, rc = 0;
  const char *s;

  if (mpx_obj_type(v) != MPX_OBJ_MAP)
    return mpx_codec_fail(r->err, at, "$opaque wants an object, not %s",
                mpx_obj_type_name(mpx_obj_type(v)));
  for (i = 0; i < mpx_obj_len(v); i++) {
    mpx_obj_t *key = mpx_obj_map_key(v, i);
    if (mpx_obj_type(key) == MPX_OBJ_STR) {
      s = mpx_obj_str_data(key, &n);
      for (k = 0; k < 5; k++)
        if (strlen(keys[k]) == n && memcmp(keys[k], s, n) == 0) break;
    } else {
      k = 5;
    }
    if (k == 5) return mpx_codec_fail(r->err, at, "$opaque: unexpected key");
    f[k] = mpx_obj_map_value(v, i);
  }
  if (f[0] == NULL || f[1] == NULL || f[2] == NULL)
    return mpx_codec_fail(r->err, at, "$opaque: kind, module and name are required");
  if (mpx_obj_type(f[0]) == MPX_OBJ_STR) {
    s = mpx_obj_str_data(f[0], &n);
    for (k = 0; k < 3; k++)
      if (strlen(kind_names[k]) == n && memcmp(kind_names[k], s, n) == 0)
        kind = (int)k;
  }
  if (kind < 0)
    return mpx_codec_fail(r->err, at, "$opaque: kind is not global, reduce or newobj");
  for (k = 0; k < 2; k++) {
    if (mpx_obj_type(f[k + 1]) != MPX_OBJ_STR) {
      rc = mpx_codec_fail(r->err, at, "$opaque: %s is not a str", keys[k + 1]);
      goto out;
    }
    s = mpx_obj_str_data(f[k + 1], &n);
    if (memchr(s, 0, n) != NULL) {
      rc = mpx_codec_fail(r->err, at, "$opaque: %s contains NUL", keys[k + 1]);
      goto out;
    }
    if ((names[k] = malloc(n + 1)) == NULL) {
      rc = MPX_ENOMEM;
      goto out;
    }
    memcpy(names[k], s, n);
    names[k][n] = 0;
  }
  for (k = 3; k < 5; k++) /* null is none */
    f[k] = mpx_obj_type(f[k]) == MPX_OBJ_NULL ? NULL : mpx_obj_retain(f[k]);
  *out = mpx_obj_opaque((mpx_opaque_kind_t)kind, names[0], names[1], f[3],
                        f[4]);
  if (*out == NULL) rc = MPX_ENOMEM;
out:
  free(names[0]);
  free(names[1]);
  return rc;
}

/* An object closed: a map, or the value its one tag key stands for.
 * Takes map. */
static int close_object(jr_t *r, size_t at, mpx_obj_t *map, mpx_obj_t **v) {
  const char *k;
  size_t kn;
  int tag = T_NONE, rc;
  mpx_obj_t *val;

  if (mpx_obj_len(map) == 1 &&
      mpx_obj_type(mpx_obj_map_key(map, 0)) == MPX_OBJ_STR) {
    k = mpx_obj_str_data(mpx_obj_map_key(map, 0), &kn);
    tag = tag_of(k, kn);
  }
  if (tag == T_NONE) {
    *v = map;
    return 0;
  }
  val = mpx_obj_map_value(map, 0);
  switch (tag) {
  case T_BYTES:
  case T_STR:
    rc = untag_b64(r, at, tag, val, v);
    break;
  case T_BIGINT:
    rc = untag_bigint(r, at, val, v);
    break;
  case T_FLOAT:
    rc = untag_float(r, at, val, v);
    break;
  case T_TUPLE:
  case T_MAP:
    rc = untag_seq(r, at, tag, val, v);
    break;
  default:
    rc = untag_opaque(r, at, val, v);
    break;
  }
  mpx_obj_release(map);
  return rc;
}

static int push(jr_t *r, int is_map) {
  jframe_t *f;
  mpx_obj_t *o;
  if (r->nst >= r->max_depth)
    return mpx_codec_fail(r->err, pos(r), "nesting deeper than max_depth %u",
                r->max_depth);
  if (r->nst == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 16;
    jframe_t *st = realloc(r->st, cap * sizeof(*st));
    if (st == NULL) return MPX_ENOMEM;
    r->st = st, r->cap = cap;
  }
  if ((o = is_map ? mpx_obj_map(0) : mpx_obj_array(0)) == NULL)
    return MPX_ENOMEM;
  f = &r->st[r->nst++];
  f->obj = o, f->key = NULL, f->at = pos(r), f->is_map = is_map;
  r->p++;
  return 0;
}

static int count_item(jr_t *r) {
  if (r->items >= r->max_items)
    return mpx_codec_fail(r->err, pos(r), "more than max_items %zu items",
                r->max_items);
  r->items++;
  return 0;
}

/* An object key and its ':' (r->p after whitespace, on the '"'). */
static int parse_key(jr_t *r, jframe_t *f) {
  int rc;
  if (r->p >= r->end || *r->p != '"') return unexpected(r, "a string key");
  if ((rc = parse_string(r, &f->key)) != 0) return rc;
  skip_ws(r);
  if (r->p >= r->end || *r->p != ':') return unexpected(r, "':'");
  r->p++;
  return 0;
}

/* The decode loop, kept whole (about 120 lines): one switch over the next
 * token with an explicit stack of open containers (no recursion, so no
 * input can exhaust the C stack). */
static int js_decode(const void *data, size_t len,
                     const mpx_decode_opts_t *opts, mpx_obj_t **out,
                     mpx_codec_error_t *err) {
  jr_t r;
  mpx_obj_t *v = NULL;
  jframe_t *f;
  int rc = 0;

  if (len == 0) return mpx_codec_fail(err, 0, "empty input");
  memset(&r, 0, sizeof(r));
  r.base = r.p = data;
  r.end = r.base + len;
  r.err = err;
  {
    mpx_decode_opts_t lim = mpx_decode_limits(opts);
    r.flags = lim.flags;
    r.max_depth = lim.max_depth;
    r.max_items = lim.max_items;
    r.max_bytes = lim.max_bytes;
  }
  for (;;) {
    /* A value. */
    skip_ws(&r);
    if (r.p >= r.end) {
      rc = unexpected(&r, "a value");
      goto failed;
    }
    switch (*r.p) {
    case '{':
    case '[':
      if ((rc = push(&r, *r.p == '{')) != 0) goto failed;
      f = &r.st[r.nst - 1];
      skip_ws(&r);
      if (r.p < r.end && *r.p == (f->is_map ? '}' : ']')) {
        r.p++;
        v = f->obj; /* empty: no tag to look at */
        r.nst--;
        break;
      }
      if (f->is_map && (rc = parse_key(&r, f)) != 0) goto failed;
      continue;
    case '"':
      rc = parse_string(&r, &v);
      break;
    case 't':
      if ((rc = expect_word(&r, "true")) == 0) v = mpx_obj_bool(1);
      break;
    case 'f':
      if ((rc = expect_word(&r, "false")) == 0) v = mpx_obj_bool(0);
      break;
    case 'n':
      if ((rc = expect_word(&r, "null")) == 0) v = mpx_obj_null();
      break;
    case 'N': /* Python's extensions */
      if ((rc = expect_word(&r, "NaN")) == 0) v = mpx_obj_float(NAN);
      break;
    case 'I':
      if ((rc = expect_word(&r, "Infinity")) == 0) v = mpx_obj_float(INFINITY);
      break;
    default:
      if (*r.p == '-' || (*r.p >= '0' && *r.p <= '9'))
        rc = parse_number(&r, &v);
      else
        rc = unexpected(&r, "a value");
      break;
    }
    if (rc == 0 && v == NULL) rc = MPX_ENOMEM;
    if (rc != 0) goto failed;

    /* Give it to its container, closing those that end here. */
    for (;;) {
      if (r.nst == 0) goto done;
      f = &r.st[r.nst - 1];
      if ((rc = count_item(&r)) != 0) goto failed;
      if (f->is_map) {
        rc = mpx_obj_map_set(f->obj, f->key, v); /* last wins */
        f->key = NULL;
      } else {
        rc = mpx_obj_append(f->obj, v);
      }
      v = NULL;
      if (rc != 0) goto failed;
      skip_ws(&r);
      if (r.p < r.end && *r.p == ',') {
        r.p++;
        if (f->is_map) {
          skip_ws(&r);
          if ((rc = parse_key(&r, f)) != 0) goto failed;
        }
        break; /* the next value */
      }
      if (r.p < r.end && *r.p == (f->is_map ? '}' : ']')) {
        r.p++;
        r.nst--;
        if (!f->is_map) {
          v = f->obj;
        } else if ((rc = close_object(&r, f->at, f->obj, &v)) != 0) {
          goto failed;
        }
        continue;
      }
      rc = unexpected(&r, f->is_map ? "',' or '}'" : "',' or ']'");
      goto failed;
    }
  }
done:
  free(r.st);
  skip_ws(&r);
  if (r.p != r.end) {
    rc = mpx_codec_fail(err, pos(&r), "trailing characters after the value");
    mpx_obj_release(v);
    return rc;
  }
  *out = v;
  return 0;
failed:
  mpx_obj_release(v);
  while (r.nst > 0) {
    r.nst--;
    mpx_obj_release(r.st[r.nst].key);
    mpx_obj_release(r.st[r.nst].obj);
  }
  free(r.st);
  return rc;
}

MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER,
    "json",
    "application/json",
    "JSON via jansson (encode) and a bounded reader (decode), with "
    "$-tagged objects for bytes, tuples, bigints and the rest",
    js_encode,
    js_decode,
    NULL,
    NULL};
