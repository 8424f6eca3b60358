/* mpx codec "msgpack": MessagePack (https://msgpack.org), the default
 * structured codec.
 *
 * Encoding uses msgpack-c's packer (msgpack_pack_*) writing straight into
 * the mpx_wbuf_t. Decoding uses a reader written here instead of
 * msgpack-c's unpacker, because the unpacker trusts declared lengths: a
 * five-byte array32 header claiming 2^32-1 elements makes its zone
 * allocate for all of them before reading one. This reader checks every
 * declared count against the bytes left (each value takes at least one
 * byte, so all the values the open containers still expect must fit in
 * the rest of the input), which bounds every allocation by the input
 * size. It is iterative (an explicit stack), so max_depth cannot
 * overflow the C stack either; so is the encoder.
 *
 * Type mapping (decode -> mpx, and back):
 *   nil -> null; false/true -> bool
 *   int formats -> int; uint64 above INT64_MAX -> bigint (encoded back as
 *     uint64)
 *   float32, float64 -> float (always encoded as float64)
 *   str -> str (bytes kept as they are, UTF-8 or not)
 *   bin -> bytes
 *   array -> array; map -> map (keys of any type; a repeated key: the
 *     last value wins, at the first key's position)
 *   ext 1 -> tuple: the payload is one msgpack array
 *   ext 2 -> bigint: the payload is the two's-complement little-endian
 *     bytes (>= 1); used for integers outside [INT64_MIN, UINT64_MAX]
 *   ext 3 -> opaque: the payload is one msgpack array [kind (0 global,
 *     1 reduce, 2 newobj), module (str), name (str), args or nil, state
 *     or nil]; nil means none, so a null args/state decodes as none
 *   other ext types -> MPX_ECODEC "unknown ext type N"
 * With MPX_DECODE_BORROW, str and bin point into the input.
 *
 * Limits (mpx_decode_opts_t): max_depth counts nested containers (a
 * tuple or opaque is one level), max_items the elements of all
 * containers (a map entry is one), max_bytes the str, bin and bigint
 * payloads together. Trailing bytes after the value are an error.
 *
 * frame_len: msgpack delimits itself. For a complete value *need is its
 * exact length; for an incomplete one it is a lower bound greater than
 * len (read at least that much and ask again). It trusts declared
 * lengths, so callers cap the message size themselves. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <mpx.h>

enum { EXT_TUPLE = 1, EXT_BIGINT = 2, EXT_OPAQUE = 3 };
enum { K_ARRAY, K_MAP, K_TUPLE, K_OPAQUE };

#define EXT_RESERVE 6 /* the largest ext header: c9, len32, type */


/* ---- encoding -------------------------------------------------------- */

typedef struct {
  mpx_wbuf_t *out;
  int rc; /* the wbuf's error when a write failed */
} sink_t;

static int sink_write(void *data, const char *buf, size_t len) {
  sink_t *s = data;
  mpx_wbuf_t *b = s->out;
  /* msgpack-c writes token by token: copy in place while there is room,
   * and call into libmpx only to grow. */
  if (b->cap - b->len >= len) {
    memcpy(b->data + b->len, buf, len);
    b->len += len;
    return 0;
  }
  int rc = mpx_wbuf_append(b, buf, len);
  if (rc != 0) {
    s->rc = rc;
    return -1;
  }
  return 0;
}

typedef struct {
  const mpx_obj_t *obj;
  size_t i, n;   /* next child, number of children */
  size_t ext_at; /* tuple, opaque: where the reserved ext header is */
  int kind;
} eframe_t;

/* Frames start in `local`, so shallow values never touch the heap. */
typedef struct {
  eframe_t *f;
  size_t n, cap;
  eframe_t local[8];
} estack_t;

static eframe_t *epush(estack_t *st) {
  if (st->f == NULL) {
    st->f = st->local;
    st->cap = sizeof st->local / sizeof st->local[0];
  }
  if (st->n == st->cap) {
    size_t cap = st->cap * 2;
    eframe_t *f = st->f == st->local ? malloc(cap * sizeof(*f))
                                     : realloc(st->f, cap * sizeof(*f));
    if (f == NULL) return NULL;
    if (st->f == st->local) memcpy(f, st->local, sizeof st->local);
    st->f = f;
    st->cap = cap;
  }
  return &st->f[st->n++];
}

/* A bigint that fits uint64 (non-negative, at most 8 significant bytes)
 * goes out as a plain msgpack uint64, as msgpack-c would write it. */
static int bigint_as_u64(const uint8_t *b, size_t n, uint64_t *v) {
  size_t sig = n;
  if (n == 0 || (b[n - 1] & 0x80) != 0) return 0;
  while (sig > 0 && b[sig - 1] == 0) sig--;
  if (sig > 8) return 0;
  *v = 0;
  while (sig > 0) *v = (*v << 8) | b[--sig];
  return 1;
}

/* Tuples and opaques are ext values whose payload is msgpack: reserve the
 * largest header, write the payload, then put in the smallest header
 * that fits and close the gap. */
static int ext_open(mpx_wbuf_t *out, size_t *at) {
  static const uint8_t zero[EXT_RESERVE];
  *at = out->len;
  return mpx_wbuf_append(out, zero, EXT_RESERVE);
}

static int ext_close(mpx_wbuf_t *out, size_t at, int8_t type,
                     mpx_codec_error_t *err) {
  size_t plen = out->len - at - EXT_RESERVE, hl;
  uint8_t h[EXT_RESERVE];
  if (plen == 1 || plen == 2 || plen == 4 || plen == 8 || plen == 16) {
    h[0] = plen == 1 ? 0xd4 : plen == 2 ? 0xd5 : plen == 4 ? 0xd6
         : plen == 8 ? 0xd7 : 0xd8;
    h[1] = (uint8_t)type;
    hl = 2;
  } else if (plen < 256) {
    h[0] = 0xc7, h[1] = (uint8_t)plen, h[2] = (uint8_t)type;
    hl = 3;
  } else if (plen < 65536) {
    h[0] = 0xc8, h[1] = (uint8_t)(plen >> 8), h[2] = (uint8_t)plen;
    h[3] = (uint8_t)type;
    hl = 4;
  } else if (plen <= UINT32_MAX) {
    h[0] = 0xc9, h[1] = (uint8_t)(plen >> 24), h[2] = (uint8_t)(plen >> 16);
    h[3] = (uint8_t)(plen >> 8), h[4] = (uint8_t)plen, h[5] = (uint8_t)type;
    hl = 6;
  } else {
    return mpx_codec_fail(err, SIZE_MAX, "ext payload of %zu bytes is too large", plen);
  }
  memcpy(out->data + at, h, hl);
  if (hl < EXT_RESERVE) {
    memmove(out->data + at + hl, out->data + at + EXT_RESERVE, plen);
    out->len -= EXT_RESERVE - hl;
  }
  return 0;
}

static int too_long(mpx_codec_error_t *err, const char *what, size_t n) {
  return mpx_codec_fail(err, SIZE_MAX, "%s of %zu bytes is too long for msgpack", what,
              n);
}

/* Packs one value; a container with children gets a frame on st (its
 * children follow). Returns 0, -1 (the sink failed), MPX_ECODEC or
 * MPX_ENOMEM. */
static int enc_one(msgpack_packer *pk, mpx_wbuf_t *out, const mpx_obj_t *o,
                   estack_t *st, mpx_codec_error_t *err) {
  eframe_t *f;
  const void *p;
  const char *s;
  size_t n, at;
  uint64_t u;
  int rc, kind;

  if (o == NULL) return msgpack_pack_nil(pk); /* opaque's missing args */
  switch (mpx_obj_type(o)) {
  case MPX_OBJ_NULL:
    return msgpack_pack_nil(pk);
  case MPX_OBJ_BOOL:
    return mpx_obj_get_bool(o) ? msgpack_pack_true(pk)
                               : msgpack_pack_false(pk);
  case MPX_OBJ_INT:
    return msgpack_pack_int64(pk, mpx_obj_get_int(o));
  case MPX_OBJ_BIGINT:
    p = mpx_obj_bigint_data(o, &n);
    if (bigint_as_u64(p, n, &u)) return msgpack_pack_uint64(pk, u);
    if (n > UINT32_MAX) return too_long(err, "bigint", n);
    if ((rc = msgpack_pack_ext(pk, n, EXT_BIGINT)) != 0) return rc;
    return msgpack_pack_ext_body(pk, p, n);
  case MPX_OBJ_FLOAT:
    return msgpack_pack_double(pk, mpx_obj_get_float(o));
  case MPX_OBJ_STR:
    s = mpx_obj_str_data(o, &n);
    if (n > UINT32_MAX) return too_long(err, "str", n);
    if ((rc = msgpack_pack_str(pk, n)) != 0) return rc;
    return n == 0 ? 0 : msgpack_pack_str_body(pk, s, n);
  case MPX_OBJ_BYTES:
    p = mpx_obj_bytes_data(o, &n);
    if (n > UINT32_MAX) return too_long(err, "bytes", n);
    if ((rc = msgpack_pack_bin(pk, n)) != 0) return rc;
    return n == 0 ? 0 : msgpack_pack_bin_body(pk, p, n);
  case MPX_OBJ_ARRAY:
  case MPX_OBJ_TUPLE:
  case MPX_OBJ_MAP:
    kind = mpx_obj_type(o) == MPX_OBJ_ARRAY ? K_ARRAY
         : mpx_obj_type(o) == MPX_OBJ_MAP   ? K_MAP
                                            : K_TUPLE;
    n = mpx_obj_len(o);
    if (n > UINT32_MAX)
      return mpx_codec_fail(err, SIZE_MAX, "%zu items are too many for msgpack", n);
    at = 0;
    if (kind == K_TUPLE && (rc = ext_open(out, &at)) != 0) return rc;
    rc = kind == K_MAP ? msgpack_pack_map(pk, n) : msgpack_pack_array(pk, n);
    if (rc != 0) return rc;
    if (n == 0 && kind != K_TUPLE) return 0;
    if ((f = epush(st)) == NULL) return MPX_ENOMEM;
    f->obj = o, f->i = 0, f->n = kind == K_MAP ? 2 * n : n;
    f->ext_at = at, f->kind = kind;
    return 0;
  case MPX_OBJ_OPAQUE:
    if ((rc = ext_open(out, &at)) != 0) return rc;
    if ((rc = msgpack_pack_array(pk, 5)) != 0 ||
        (rc = msgpack_pack_int(pk, (int)mpx_obj_opaque_kind(o))) != 0)
      return rc;
    s = mpx_obj_opaque_module(o);
    n = strlen(s);
    if ((rc = msgpack_pack_str_with_body(pk, s, n)) != 0) return rc;
    s = mpx_obj_opaque_name(o);
    n = strlen(s);
    if ((rc = msgpack_pack_str_with_body(pk, s, n)) != 0) return rc;
    if ((f = epush(st)) == NULL) return MPX_ENOMEM;
    f->obj = o, f->i = 0, f->n = 2, f->ext_at = at, f->kind = K_OPAQUE;
    return 0;
  }
  return mpx_codec_fail(err, SIZE_MAX, "cannot encode type %d", (int)mpx_obj_type(o));
}

static const mpx_obj_t *enc_child(const eframe_t *f, size_t i) {
  switch (f->kind) {
  case K_MAP:
    return i % 2 == 0 ? mpx_obj_map_key(f->obj, i / 2)
                      : mpx_obj_map_value(f->obj, i / 2);
  case K_OPAQUE:
    return i == 0 ? mpx_obj_opaque_args(f->obj) : mpx_obj_opaque_state(f->obj);
  default:
    return mpx_obj_item(f->obj, i);
  }
}

static int mp_encode(const mpx_obj_t *obj, mpx_wbuf_t *out,
                     const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  sink_t sink = {out, 0};
  msgpack_packer pk;
  estack_t st; /* the frames need no clearing: only st.f[0..n) is read */
  st.f = NULL;
  st.n = st.cap = 0;
  size_t start = out->len;
  const mpx_obj_t *v = obj;
  int rc;
  (void)opts;

  if (obj == NULL) return mpx_codec_fail(err, SIZE_MAX, "no object (NULL)");
  msgpack_packer_init(&pk, &sink, sink_write);
  for (;;) {
    if ((rc = enc_one(&pk, out, v, &st, err)) != 0) goto failed;
    for (;;) { /* the next child, closing the containers that are done */
      eframe_t *f;
      if (st.n == 0) goto done;
      f = &st.f[st.n - 1];
      if (f->i < f->n) {
        v = enc_child(f, f->i++);
        break;
      }
      if (f->kind == K_TUPLE || f->kind == K_OPAQUE) {
        rc = ext_close(out, f->ext_at,
                       f->kind == K_TUPLE ? EXT_TUPLE : EXT_OPAQUE, err);
        if (rc != 0) goto failed;
      }
      st.n--;
    }
  }
done:
  if (st.f != st.local) free(st.f);
  return 0;
failed:
  if (st.f != st.local) free(st.f);
  if (rc == -1) rc = sink.rc != 0 ? sink.rc : MPX_ENOMEM;
  if (out->len > start) out->len = start; /* no half-written value */
  return rc;
}

static size_t sat_add(size_t a, size_t b) {
  return a > SIZE_MAX - b ? SIZE_MAX : a + b;
}

/* An upper bound: each value at its largest header. One walk, no packing;
 * 0 (cannot tell) if the walk runs out of memory. */
static size_t mp_size_hint(const mpx_obj_t *obj,
                           const mpx_encode_opts_t *opts) {
  const mpx_obj_t **walk = NULL, **t;
  size_t n = 0, cap = 0, total = 0, len, i, kids;
  (void)opts;
  if (obj == NULL) return 0;
  walk = malloc(16 * sizeof(*walk));
  if (walk == NULL) return 0;
  cap = 16;
  walk[n++] = obj;
  while (n > 0) {
    const mpx_obj_t *o = walk[--n];
    kids = 0;
    if (o == NULL) { /* opaque's missing args or state: nil */
      total = sat_add(total, 1);
      continue;
    }
    switch (mpx_obj_type(o)) {
    case MPX_OBJ_NULL:
    case MPX_OBJ_BOOL:
      total = sat_add(total, 1);
      break;
    case MPX_OBJ_INT:
    case MPX_OBJ_FLOAT:
      total = sat_add(total, 9);
      break;
    case MPX_OBJ_BIGINT:
      mpx_obj_bigint_data(o, &len);
      total = sat_add(total, sat_add(len, EXT_RESERVE + 9));
      break;
    case MPX_OBJ_STR:
    case MPX_OBJ_BYTES:
      total = sat_add(total, sat_add(mpx_obj_len(o), 5));
      break;
    case MPX_OBJ_TUPLE:
      total = sat_add(total, EXT_RESERVE);
      /* fall through */
    case MPX_OBJ_ARRAY:
      kids = mpx_obj_len(o);
      total = sat_add(total, 5);
      break;
    case MPX_OBJ_MAP:
      kids = 2 * mpx_obj_len(o);
      total = sat_add(total, 5);
      break;
    case MPX_OBJ_OPAQUE:
      total = sat_add(total, EXT_RESERVE + 5 + 1 + 5 + 5);
      total = sat_add(total, strlen(mpx_obj_opaque_module(o)));
      total = sat_add(total, strlen(mpx_obj_opaque_name(o)));
      kids = 2;
      break;
    }
    if (kids > cap - n) {
      size_t ncap = cap;
      while (kids > ncap - n) ncap *= 2;
      if ((t = realloc(walk, ncap * sizeof(*t))) == NULL) {
        free(walk);
        return 0;
      }
      walk = t, cap = ncap;
    }
    for (i = 0; i < kids; i++) {
      eframe_t f = {o, 0, 0, 0, 0};
      f.kind = mpx_obj_type(o) == MPX_OBJ_MAP      ? K_MAP
             : mpx_obj_type(o) == MPX_OBJ_OPAQUE ? K_OPAQUE
                                                 : K_ARRAY;
      walk[n++] = enc_child(&f, i);
    }
  }
  free(walk);
  return total;
}

/* ---- decoding -------------------------------------------------------- */

typedef struct {
  mpx_obj_t *obj;         /* array, tuple, map; opaque: its 5 fields */
  mpx_obj_t *key;         /* map: a key waiting for its value */
  size_t left;            /* values still to read (a map's keys too) */
  const uint8_t *end;     /* tuple, opaque: end of the ext payload */
  const uint8_t *outer;   /* the reader's limit to restore on close */
  size_t at;              /* offset of its header, for messages */
  int kind;
} dframe_t;

typedef struct {
  const uint8_t *base, *p;
  const uint8_t *lim; /* end of the innermost ext payload, or of input */
  const uint8_t *end; /* end of the input */
  unsigned flags, max_depth;
  size_t max_items, max_bytes, items, bytes;
  size_t need; /* values the open containers still expect */
  dframe_t *st; /* starts at local: shallow values never touch the heap */
  size_t nst, cap;
  mpx_codec_error_t *err;
  dframe_t local[8];
} rd_t;

static size_t off(const rd_t *r, const uint8_t *p) {
  return (size_t)(p - r->base);
}

static size_t left(const rd_t *r) { return (size_t)(r->lim - r->p); }

static uint64_t be(const uint8_t *p, size_t n) {
  uint64_t v = 0;
  while (n-- > 0) v = (v << 8) | *p++;
  return v;
}

/* n bytes at r->p, or an error naming what was cut short. */
static int need_bytes(rd_t *r, size_t at, size_t n, const char *what) {
  if (n <= left(r)) return 0;
  return mpx_codec_fail(r->err, at, "truncated %s: %zu bytes needed, %zu left", what,
              n, left(r));
}

static const char *kind_name(int kind) {
  static const char *names[] = {"array", "map", "tuple", "opaque"};
  return names[kind];
}

/* Opens a container of `count` values (a map's keys and values). */
static int rd_open(rd_t *r, int kind, size_t count, size_t at,
                   const uint8_t *ext_end, const uint8_t *outer) {
  size_t items = kind == K_MAP ? count / 2 : count;
  mpx_obj_t *o;
  dframe_t *f;
  if (r->nst >= r->max_depth)
    return mpx_codec_fail(r->err, at, "nesting deeper than max_depth %u", r->max_depth);
  /* Every value takes a byte at least: this bounds what we allocate by
   * what we were given, whatever the headers claim. */
  if (count > left(r) || r->need > (size_t)(r->end - r->p) ||
      count > (size_t)(r->end - r->p) - r->need)
    return mpx_codec_fail(r->err, at, "%s of %zu items but only %zu bytes left",
                kind_name(kind), items, (size_t)(r->lim - r->p));
  if (items > r->max_items - r->items)
    return mpx_codec_fail(r->err, at, "more than max_items %zu items", r->max_items);
  r->items += items;
  switch (kind) {
  case K_MAP:
    o = mpx_obj_map(items);
    break;
  case K_TUPLE:
    o = mpx_obj_tuple(items);
    break;
  default:
    o = mpx_obj_array(items);
    break;
  }
  if (o == NULL) return MPX_ENOMEM;
  if (r->st == NULL) {
    r->st = r->local;
    r->cap = sizeof r->local / sizeof r->local[0];
  }
  if (r->nst == r->cap) {
    size_t cap = r->cap * 2;
    dframe_t *st = r->st == r->local ? malloc(cap * sizeof(*st))
                                     : realloc(r->st, cap * sizeof(*st));
    if (st == NULL) {
      mpx_obj_release(o);
      return MPX_ENOMEM;
    }
    if (r->st == r->local) memcpy(st, r->local, sizeof r->local);
    r->st = st, r->cap = cap;
  }
  f = &r->st[r->nst++];
  f->obj = o, f->key = NULL, f->left = count, f->end = ext_end;
  f->outer = outer, f->at = at, f->kind = kind;
  r->need += count;
  return 0;
}

static int rd_payload_room(rd_t *r, size_t at, size_t n, const char *what) {
  int rc = need_bytes(r, at, n, what);
  if (rc != 0) return rc;
  if (n > r->max_bytes - r->bytes)
    return mpx_codec_fail(r->err, at, "more than max_bytes %zu bytes of payload",
                r->max_bytes);
  r->bytes += n;
  return 0;
}

static int rd_str(rd_t *r, size_t at, size_t n, int bin, mpx_obj_t **v) {
  const uint8_t *p = r->p;
  int rc = rd_payload_room(r, at, n, bin ? "bin" : "str");
  if (rc != 0) return rc;
  r->p += n;
  if (r->flags & MPX_DECODE_BORROW)
    *v = bin ? mpx_obj_bytes_external(p, n, NULL, NULL)
             : mpx_obj_str_external((const char *)p, n, NULL, NULL);
  else
    *v = bin ? mpx_obj_bytes(p, n) : mpx_obj_str((const char *)p, n);
  return *v == NULL ? MPX_ENOMEM : 0;
}

/* An ext value: tuple and opaque open a frame over their payload. */
static int rd_ext(rd_t *r, size_t at, size_t n, int8_t type, mpx_obj_t **v) {
  const uint8_t *pend, *outer = r->lim;
  size_t count;
  int rc;
  uint8_t b;

  if ((rc = need_bytes(r, at, n, "ext")) != 0) return rc;
  pend = r->p + n;
  switch (type) {
  case EXT_BIGINT:
    if (n == 0) return mpx_codec_fail(r->err, at, "empty bigint");
    if ((rc = rd_payload_room(r, at, n, "bigint")) != 0) return rc;
    *v = mpx_obj_bigint(r->p, n);
    r->p = pend;
    return *v == NULL ? MPX_ENOMEM : 0;
  case EXT_TUPLE:
  case EXT_OPAQUE:
    /* The payload is one array, read with the payload as the limit. */
    r->lim = pend;
    if (n == 0) goto not_array;
    b = *r->p;
    if (b >= 0x90 && b <= 0x9f) {
      count = b & 0x0f, r->p += 1;
    } else if (b == 0xdc || b == 0xdd) {
      size_t w = b == 0xdc ? 2 : 4;
      if ((rc = need_bytes(r, off(r, r->p), 1 + w, "array header")) != 0)
        return rc;
      count = (size_t)be(r->p + 1, w), r->p += 1 + w;
    } else {
      goto not_array;
    }
    if (type == EXT_OPAQUE && count != 5)
      return mpx_codec_fail(r->err, at, "opaque payload is an array of %zu, not 5",
                  count);
    return rd_open(r, type == EXT_TUPLE ? K_TUPLE : K_OPAQUE, count, at, pend,
                   outer);
  not_array:
    return mpx_codec_fail(r->err, at, "ext %d payload is not an array", type);
  default:
    return mpx_codec_fail(r->err, at, "unknown ext type %d", type);
  }
}

/* Reads one value: *v the value, or NULL when a container was opened (its
 * frame is on the stack, its items come next). */
/* One switch over the format bytes, kept whole (about 90 lines): a decoder's
 * central switch reads best as one table of short cases. */
static int rd_value(rd_t *r, mpx_obj_t **v) {
  size_t at = off(r, r->p), n, w;
  uint8_t b;
  uint64_t u;
  int rc;

  *v = NULL;
  if (r->p >= r->lim)
    return mpx_codec_fail(r->err, at, r->lim == r->end ? "truncated: a value expected"
                                             : "ext payload ends early");
  b = *r->p++;
  if (b <= 0x7f) return (*v = mpx_obj_int(b)) == NULL ? MPX_ENOMEM : 0;
  if (b >= 0xe0)
    return (*v = mpx_obj_int((int8_t)b)) == NULL ? MPX_ENOMEM : 0;
  if (b <= 0x8f) return rd_open(r, K_MAP, 2u * (b & 0x0f), at, NULL, NULL);
  if (b <= 0x9f) return rd_open(r, K_ARRAY, b & 0x0f, at, NULL, NULL);
  if (b <= 0xbf) return rd_str(r, at, b & 0x1f, 0, v);

  /* The rest have a fixed-size field after the type byte. */
  switch (b) {
  case 0xc0: *v = mpx_obj_null(); return 0;
  case 0xc2: *v = mpx_obj_bool(0); return 0;
  case 0xc3: *v = mpx_obj_bool(1); return 0;
  case 0xc1: return mpx_codec_fail(r->err, at, "reserved type byte 0xc1");
  case 0xc4: case 0xd9: w = 1; break;
  case 0xc5: case 0xda: w = 2; break;
  case 0xc6: case 0xdb: w = 4; break;
  case 0xc7: w = 2; break; /* len8, type */
  case 0xc8: w = 3; break;
  case 0xc9: w = 5; break;
  case 0xca: w = 4; break;
  case 0xcb: w = 8; break;
  case 0xcc: case 0xd0: w = 1; break;
  case 0xcd: case 0xd1: w = 2; break;
  case 0xce: case 0xd2: w = 4; break;
  case 0xcf: case 0xd3: w = 8; break;
  case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: w = 1; break;
  case 0xdc: case 0xde: w = 2; break;
  default: w = 4; break; /* 0xdd, 0xdf */
  }
  if ((rc = need_bytes(r, at, w, "header")) != 0) return rc;
  {
    const uint8_t *q = r->p;
    r->p += w;
    switch (b) {
    case 0xc4: case 0xc5: case 0xc6:
      return rd_str(r, at, (size_t)be(q, w), 1, v);
    case 0xd9: case 0xda: case 0xdb:
      return rd_str(r, at, (size_t)be(q, w), 0, v);
    case 0xc7: case 0xc8: case 0xc9:
      return rd_ext(r, at, (size_t)be(q, w - 1), (int8_t)q[w - 1], v);
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
      return rd_ext(r, at, (size_t)1 << (b - 0xd4), (int8_t)q[0], v);
    case 0xca: {
      uint32_t bits = (uint32_t)be(q, 4);
      float f;
      memcpy(&f, &bits, 4);
      *v = mpx_obj_float(f);
      break;
    }
    case 0xcb: {
      double d;
      u = be(q, 8);
      memcpy(&d, &u, 8);
      *v = mpx_obj_float(d);
      break;
    }
    case 0xcc: case 0xcd: case 0xce: case 0xcf:
      u = be(q, w);
      if (u <= INT64_MAX) {
        *v = mpx_obj_int((int64_t)u);
      } else { /* 9 bytes of two's complement: a zero sign byte on top */
        uint8_t le[9] = {0};
        for (n = 0; n < 8; n++) le[n] = (uint8_t)(u >> (8 * n));
        *v = mpx_obj_bigint(le, 9);
      }
      break;
    case 0xd0: *v = mpx_obj_int((int8_t)q[0]); break;
    case 0xd1: *v = mpx_obj_int((int16_t)be(q, 2)); break;
    case 0xd2: *v = mpx_obj_int((int32_t)be(q, 4)); break;
    case 0xd3: *v = mpx_obj_int((int64_t)be(q, 8)); break;
    case 0xdc: case 0xdd:
      return rd_open(r, K_ARRAY, (size_t)be(q, w), at, NULL, NULL);
    default: /* 0xde, 0xdf; the count doubled cannot overflow size_t */
      u = be(q, w);
      if (u > (size_t)(r->lim - r->p))
        return mpx_codec_fail(r->err, at, "map of %llu items but only %zu bytes left",
                    (unsigned long long)u, left(r));
      return rd_open(r, K_MAP, 2 * (size_t)u, at, NULL, NULL);
    }
  }
  return *v == NULL ? MPX_ENOMEM : 0;
}

/* A NUL-terminated copy of a str field of an opaque. */
static int opaque_name(rd_t *r, size_t at, mpx_obj_t *s, const char *what,
                       char **out) {
  const char *p;
  size_t n;
  if (mpx_obj_type(s) != MPX_OBJ_STR)
    return mpx_codec_fail(r->err, at, "opaque %s is a %s, not a str", what,
                mpx_obj_type_name(mpx_obj_type(s)));
  p = mpx_obj_str_data(s, &n);
  if (memchr(p, 0, n) != NULL)
    return mpx_codec_fail(r->err, at, "opaque %s contains NUL", what);
  if ((*out = malloc(n + 1)) == NULL) return MPX_ENOMEM;
  memcpy(*out, p, n);
  (*out)[n] = 0;
  return 0;
}

static int rd_opaque(rd_t *r, size_t at, mpx_obj_t *fields, mpx_obj_t **v) {
  mpx_obj_t *k = mpx_obj_item(fields, 0), *args, *state;
  char *module = NULL, *name = NULL;
  int64_t kind;
  int rc;

  if (mpx_obj_type(k) != MPX_OBJ_INT || (kind = mpx_obj_get_int(k)) < 0 ||
      kind > MPX_OPAQUE_NEWOBJ)
    return mpx_codec_fail(r->err, at, "opaque kind is not 0, 1 or 2");
  if ((rc = opaque_name(r, at, mpx_obj_item(fields, 1), "module", &module)) ||
      (rc = opaque_name(r, at, mpx_obj_item(fields, 2), "name", &name)))
    goto out;
  args = mpx_obj_item(fields, 3);
  state = mpx_obj_item(fields, 4);
  args = mpx_obj_type(args) == MPX_OBJ_NULL ? NULL : mpx_obj_retain(args);
  state = mpx_obj_type(state) == MPX_OBJ_NULL ? NULL : mpx_obj_retain(state);
  *v = mpx_obj_opaque((mpx_opaque_kind_t)kind, module, name, args, state);
  rc = *v == NULL ? MPX_ENOMEM : 0;
out:
  free(module);
  free(name);
  return rc;
}

/* The top container is complete: pop it into *v. */
static int rd_close(rd_t *r, mpx_obj_t **v) {
  dframe_t *f = &r->st[--r->nst];
  int rc = 0;
  *v = f->obj;
  if (f->end != NULL) {
    if (r->p != f->end) {
      rc = mpx_codec_fail(r->err, off(r, r->p), "%zu bytes left over in %s payload",
                (size_t)(f->end - r->p), kind_name(f->kind));
      mpx_obj_release(f->obj);
      *v = NULL;
      return rc;
    }
    r->lim = f->outer;
  }
  if (f->kind == K_OPAQUE) {
    rc = rd_opaque(r, f->at, f->obj, v);
    mpx_obj_release(f->obj);
    if (rc != 0) *v = NULL;
  }
  return rc;
}

/* Hands a finished value to the top container (which takes it). */
static int rd_give(rd_t *r, mpx_obj_t *v) {
  dframe_t *f = &r->st[r->nst - 1];
  int rc;
  f->left--;
  if (f->kind != K_MAP) {
    rc = mpx_obj_append(f->obj, v);
  } else if (f->key == NULL) {
    f->key = v;
    return 0;
  } else {
    rc = mpx_obj_map_set(f->obj, f->key, v); /* repeated key: last wins */
    f->key = NULL;
  }
  return rc;
}

static int mp_decode(const void *data, size_t len,
                     const mpx_decode_opts_t *opts, mpx_obj_t **out,
                     mpx_codec_error_t *err) {
  rd_t r;
  mpx_obj_t *v = NULL;
  int rc;

  if (len == 0) return mpx_codec_fail(err, 0, "empty input");
  memset(&r, 0, offsetof(rd_t, local)); /* the frames need no clearing */
  r.base = r.p = data;
  r.lim = r.end = r.base + len;
  r.err = err;
  {
    mpx_decode_opts_t lim = mpx_decode_limits(opts);
    r.flags = lim.flags;
    r.max_depth = lim.max_depth;
    r.max_items = lim.max_items;
    r.max_bytes = lim.max_bytes;
  }
  r.need = 1;
  for (;;) {
    r.need--; /* this value is one the containers expected */
    if ((rc = rd_value(&r, &v)) != 0) goto failed;
    for (;;) {
      if (v == NULL) {
        if (r.st[r.nst - 1].left > 0) break; /* read its next item */
        if ((rc = rd_close(&r, &v)) != 0) goto failed;
      }
      if (r.nst == 0) goto done;
      rc = rd_give(&r, v);
      v = NULL;
      if (rc != 0) goto failed;
    }
  }
done:
  if (r.st != r.local) free(r.st);
  if (r.p != r.end) {
    mpx_obj_release(v);
    return mpx_codec_fail(err, off(&r, r.p), "%zu trailing bytes after the value",
                (size_t)(r.end - r.p));
  }
  *out = v;
  return 0;
failed:
  while (r.nst > 0) {
    r.nst--;
    mpx_obj_release(r.st[r.nst].key);
    mpx_obj_release(r.st[r.nst].obj);
  }
  if (r.st != r.local) free(r.st);
  return rc;
}

/* ---- framing --------------------------------------------------------- */

static size_t sat_add64(size_t a, uint64_t b) {
  return b > SIZE_MAX - a ? SIZE_MAX : a + (size_t)b;
}

/* Skips values without building them: a count of values still expected
 * is all the state a skip needs. */
static int mp_frame_len(const void *data, size_t len, size_t *need,
                        mpx_codec_error_t *err) {
  const uint8_t *base = data, *p = base, *end = base + len;
  uint64_t pending = 1, payload, count;
  size_t w, at;
  uint8_t b;

  while (pending > 0) {
    if (p >= end) goto incomplete;
    at = (size_t)(p - base);
    b = *p++;
    pending--;
    payload = count = 0;
    w = 0;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
      continue;
    } else if (b <= 0x8f) {
      count = 2u * (b & 0x0f);
    } else if (b <= 0x9f) {
      count = b & 0x0f;
    } else if (b <= 0xbf) {
      payload = b & 0x1f;
    } else if (b == 0xc1) {
      return mpx_codec_fail(err, at, "reserved type byte 0xc1");
    } else {
      switch (b) {
      case 0xc4: case 0xd9: w = 1; break;
      case 0xc5: case 0xda: w = 2; break;
      case 0xc6: case 0xdb: w = 4; break;
      case 0xc7: w = 2; break;
      case 0xc8: w = 3; break;
      case 0xc9: w = 5; break;
      case 0xca: case 0xce: case 0xd2: payload = 4; break;
      case 0xcb: case 0xcf: case 0xd3: payload = 8; break;
      case 0xcc: case 0xd0: payload = 1; break;
      case 0xcd: case 0xd1: payload = 2; break;
      case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8:
        payload = 1 + ((uint64_t)1 << (b - 0xd4));
        break;
      case 0xdc: case 0xde: w = 2; break;
      default: w = 4; break; /* 0xdd, 0xdf */
      }
      if (w > (size_t)(end - p)) {
        pending += w; /* a lower bound: the header itself */
        goto incomplete;
      }
      switch (b) {
      case 0xc7: case 0xc8: case 0xc9:
        payload = be(p, w - 1); /* the type byte is counted in w */
        break;
      case 0xdc: case 0xdd:
        count = be(p, w);
        break;
      case 0xde: case 0xdf:
        count = 2 * be(p, w);
        break;
      default:
        if (w != 0) payload = be(p, w);
        break;
      }
      p += w;
    }
    /* Values and payload that cannot fit in what is left: incomplete
     * (stopping here also keeps the counts from overflowing). */
    pending += count;
    if (payload > (uint64_t)(end - p) ||
        pending > (uint64_t)(end - p) - payload) {
      *need = sat_add64(sat_add64((size_t)(p - base), payload), pending);
      return 0;
    }
    p += payload;
  }
  *need = (size_t)(p - base);
  return 0;
incomplete:
  *need = sat_add64((size_t)(p - base), pending > 0 ? pending : 1);
  return 0;
}

MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER,
    "msgpack",
    "application/msgpack",
    "MessagePack via msgpack-c (encode) and a bounded reader (decode); "
    "ext 1 tuple, 2 bigint, 3 opaque",
    mp_encode,
    mp_decode,
    mp_size_hint,
    mp_frame_len};
