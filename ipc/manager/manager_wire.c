/* The manager protocol's messages as mpx objects (ipc/manager/manager_wire.h):
 * codec sniffing, requests, replies, Token, exceptions, addresses. */
#include "manager_wire.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* ---- codecs ---------------------------------------------------------------- */

/* Loaded codecs, so a request costs no loader lock after the first. */
static const mpx_codec_t *_Atomic cache_pickle, *_Atomic cache_msgpack;

int mpx__wire_get(mpx__wire_t *w, const char *codec, int protocol) {
  const mpx_codec_t *c;
  int rc;
  if (w == NULL || codec == NULL)
    return mpx__err(MPX_EINVAL, "manager wire: NULL argument");
  if (strcmp(codec, "pickle") == 0) {
    if (protocol == 0) protocol = 4;
    if (protocol < 2 || protocol > 5)
      return mpx__err(MPX_EINVAL, "manager wire: pickle protocol %d "
                      "(2..5 are spoken)", protocol);
  } else if (strcmp(codec, "msgpack") == 0) {
    protocol = 0;
  } else {
    return mpx__err(MPX_EINVAL, "manager wire: codec '%s' (pickle or msgpack)",
                    codec);
  }
  const mpx_codec_t *_Atomic *slot = protocol ? &cache_pickle : &cache_msgpack;
  if ((c = atomic_load(slot)) == NULL) {
    if ((rc = mpx_codec_load(&c, codec)) != 0) return rc;
    atomic_store(slot, c);
  }
  w->codec = c;
  w->protocol = protocol;
  return 0;
}

/* The element count of a msgpack array header at p, or -1. */
static long msgpack_array_len(const uint8_t *p, size_t len) {
  if (len >= 1 && (p[0] & 0xf0) == 0x90) return p[0] & 0x0f;
  if (len >= 3 && p[0] == 0xdc) return ((long)p[1] << 8) | p[2];
  if (len >= 5 && p[0] == 0xdd)
    return (long)(((uint32_t)p[1] << 24) | ((uint32_t)p[2] << 16) |
                  ((uint32_t)p[3] << 8) | p[4]);
  return -1;
}

/* A msgpack message is an array of 2 or 4, or the tuple extension (ext
 * type 1, mpx's msgpack codec) around one. */
static int msgpack_like(const uint8_t *p, size_t len) {
  size_t hdr = 0;
  int type = -1;
  if (len >= 2 && p[0] >= 0xd4 && p[0] <= 0xd8) {
    hdr = 2; type = (int8_t)p[1];
  } else if (len >= 3 && p[0] == 0xc7) {
    hdr = 3; type = (int8_t)p[2];
  } else if (len >= 4 && p[0] == 0xc8) {
    hdr = 4; type = (int8_t)p[3];
  } else if (len >= 6 && p[0] == 0xc9) {
    hdr = 6; type = (int8_t)p[5];
  }
  if (hdr != 0) {
    if (type != 1) return 0;
    p += hdr;
    len -= hdr;
  }
  long n = msgpack_array_len(p, len);
  return n == 2 || n == 4;
}

int mpx__wire_sniff(const void *data, size_t len, mpx__wire_t *w) {
  const uint8_t *p = data;
  if (w == NULL || (data == NULL && len > 0))
    return mpx__err(MPX_EINVAL, "manager wire: NULL argument");
  if (len >= 2 && p[0] == 0x80) {
    if (p[1] < 2 || p[1] > 5)
      return mpx__err(MPX_EPROTO, "manager wire: pickle protocol %u "
                      "(2..5 are spoken)", p[1]);
    return mpx__wire_get(w, "pickle", p[1]);
  }
  if (msgpack_like(p, len)) return mpx__wire_get(w, "msgpack", 0);
  if (len == 0)
    return mpx__err(MPX_EPROTO, "manager wire: empty message");
  return mpx__err(MPX_EPROTO, "manager wire: message starting with byte "
                  "0x%02x is neither pickle (0x80, protocol 2..5) nor a "
                  "msgpack array of 2 or 4", p[0]);
}

int mpx__wire_encode(const mpx__wire_t *w, const mpx_obj_t *msg,
                     mpx_wbuf_t *out) {
  mpx_encode_opts_t eo = {0};
  if (w == NULL || w->codec == NULL)
    return mpx__err(MPX_EINVAL, "manager wire: no codec");
  eo.protocol = w->protocol;
  return mpx_codec_encode(w->codec, msg, out, &eo);
}

int mpx__wire_decode(const mpx__wire_t *w, const void *data, size_t len,
                     size_t max_bytes, mpx_obj_t **msg) {
  mpx_decode_opts_t o = {0};
  if (w == NULL || w->codec == NULL)
    return mpx__err(MPX_EINVAL, "manager wire: no codec");
  o.max_depth = 100;
  o.max_items = (size_t)1 << 20;
  o.max_bytes = max_bytes;
  return mpx_codec_decode(w->codec, data, len, &o, msg);
}

/* ---- small helpers --------------------------------------------------------- */

static int is_seq(const mpx_obj_t *o) {
  mpx_obj_type_t t = mpx_obj_type(o);
  return t == MPX_OBJ_TUPLE || t == MPX_OBJ_ARRAY;
}

/* A str, or a Python 2 str (bytes), with no NUL inside (so its data is a
 * C string), or NULL. */
static const char *cstr(const mpx_obj_t *o) {
  size_t n;
  const char *s;
  if (mpx_obj_type(o) == MPX_OBJ_STR) s = mpx_obj_str_data(o, &n);
  else if (mpx_obj_type(o) == MPX_OBJ_BYTES) s = mpx_obj_bytes_data(o, &n);
  else return NULL;
  /* decoded strs and bytes are NUL-terminated copies */
  if (s == NULL || memchr(s, 0, n) != NULL) return NULL;
  return s;
}

const char *mpx__wire_name(const mpx_obj_t *o) { return cstr(o); }

/* bytes -> str (a Python 2 name); other objects retained as they are. */
static mpx_obj_t *as_text(const mpx_obj_t *o) {
  size_t n;
  if (mpx_obj_type(o) != MPX_OBJ_BYTES) return mpx_obj_retain((mpx_obj_t *)o);
  const void *p = mpx_obj_bytes_data(o, &n);
  return mpx_obj_str(p, n);
}

/* kwds with bytes keys made str. New reference or NULL. */
static mpx_obj_t *py2_kwds(const mpx_obj_t *k) {
  if (mpx_obj_type(k) != MPX_OBJ_MAP) return mpx_obj_retain((mpx_obj_t *)k);
  size_t n = mpx_obj_len(k);
  mpx_obj_t *m = mpx_obj_map(n);
  for (size_t i = 0; m != NULL && i < n; i++)
    if (mpx_obj_map_set(m, as_text(mpx_obj_map_key(k, i)),
                        mpx_obj_retain(mpx_obj_map_value(k, i))) != 0) {
      mpx_obj_release(m);
      m = NULL;
    }
  return m;
}

/* args with its first item made str (an attribute name). */
static mpx_obj_t *py2_attr_args(const mpx_obj_t *a) {
  size_t n = mpx_obj_len(a);
  if (n == 0 || (mpx_obj_type(a) != MPX_OBJ_TUPLE && mpx_obj_type(a) != MPX_OBJ_ARRAY))
    return mpx_obj_retain((mpx_obj_t *)a);
  mpx_obj_t *t = mpx_obj_tuple(n);
  for (size_t i = 0; t != NULL && i < n; i++)
    if (mpx_obj_append(t, i == 0 ? as_text(mpx_obj_item(a, 0))
                                 : mpx_obj_retain(mpx_obj_item(a, i))) != 0) {
      mpx_obj_release(t);
      t = NULL;
    }
  return t;
}

int mpx__wire_py2_request(mpx_obj_t **req) {
  const mpx_obj_t *r = *req;
  if (!is_seq(r) || mpx_obj_len(r) != 4 ||
      mpx_obj_type(mpx_obj_item(r, 1)) != MPX_OBJ_BYTES)
    return 0;
  const char *m = cstr(mpx_obj_item(r, 1));
  bool attr = m != NULL && (strcmp(m, "__getattribute__") == 0 ||
                            strcmp(m, "__setattr__") == 0 ||
                            strcmp(m, "__delattr__") == 0);
  mpx_obj_t *t = mpx_obj_tuple(4);
  if (t == NULL ||
      mpx_obj_append(t, as_text(mpx_obj_item(r, 0))) != 0 ||
      mpx_obj_append(t, as_text(mpx_obj_item(r, 1))) != 0 ||
      mpx_obj_append(t, attr ? py2_attr_args(mpx_obj_item(r, 2))
                             : mpx_obj_retain(mpx_obj_item(r, 2))) != 0 ||
      mpx_obj_append(t, py2_kwds(mpx_obj_item(r, 3))) != 0) {
    mpx_obj_release(t);
    return mpx__err(MPX_ENOMEM, "manager request: out of memory");
  }
  mpx_obj_release(*req);
  *req = t;
  return 1;
}

mpx_obj_t *mpx__wire_py2_str(mpx_obj_t *o) {
  size_t n;
  mpx_obj_t *r = NULL;
  switch (mpx_obj_type(o)) {
    case MPX_OBJ_STR: {
      const char *s = mpx_obj_str_data(o, &n);
      r = mpx_obj_bytes(s, n);
      break;
    }
    case MPX_OBJ_TUPLE:
    case MPX_OBJ_ARRAY:
      n = mpx_obj_len(o);
      r = mpx_obj_type(o) == MPX_OBJ_TUPLE ? mpx_obj_tuple(n) : mpx_obj_array(n);
      for (size_t i = 0; r != NULL && i < n; i++) {
        mpx_obj_t *x = mpx__wire_py2_str(mpx_obj_retain(mpx_obj_item(o, i)));
        if (x == NULL || mpx_obj_append(r, x) != 0) {
          mpx_obj_release(r);
          r = NULL;
        }
      }
      break;
    case MPX_OBJ_OPAQUE: {
      mpx_obj_t *a = mpx_obj_opaque_args(o), *st = mpx_obj_opaque_state(o);
      a = a ? mpx__wire_py2_str(mpx_obj_retain(a)) : NULL;
      st = st ? mpx__wire_py2_str(mpx_obj_retain(st)) : NULL;
      if ((mpx_obj_opaque_args(o) && a == NULL) || (mpx_obj_opaque_state(o) && st == NULL)) {
        mpx_obj_release(a);
        mpx_obj_release(st);
        break;
      }
      r = mpx_obj_opaque(mpx_obj_opaque_kind(o), mpx_obj_opaque_module(o),
                         mpx_obj_opaque_name(o), a, st);
      break;
    }
    default: /* maps: no server-made payload has one */
      return o;
  }
  mpx_obj_release(o);
  return r;
}

static mpx_obj_t *str_or_null(const char *s) {
  return s ? mpx_obj_str(s, SIZE_MAX) : mpx_obj_null();
}

/* The one empty map handed out for a None kwds; never released. */
static mpx_obj_t *empty_map;
static pthread_once_t empty_once = PTHREAD_ONCE_INIT;
static void empty_init(void) { empty_map = mpx_obj_map(0); }

/* ---- requests and replies -------------------------------------------------- */

mpx_obj_t *mpx__wire_request(const char *ident, const char *method,
                             const mpx_obj_t *args, const mpx_obj_t *kwds) {
  mpx_obj_t *t = mpx_obj_tuple(4);
  if (t == NULL || method == NULL) {
    mpx_obj_release(t);
    return NULL;
  }
  if (mpx_obj_append(t, str_or_null(ident)) != 0 ||
      mpx_obj_append(t, mpx_obj_str(method, SIZE_MAX)) != 0 ||
      mpx_obj_append(t, args ? mpx_obj_retain((mpx_obj_t *)args)
                             : mpx_obj_tuple(0)) != 0 ||
      mpx_obj_append(t, kwds ? mpx_obj_retain((mpx_obj_t *)kwds)
                             : mpx_obj_map(0)) != 0) {
    mpx_obj_release(t);
    return NULL;
  }
  return t;
}

int mpx__wire_request_parse(const mpx_obj_t *req, const char **ident,
                            const char **method, const mpx_obj_t **args,
                            const mpx_obj_t **kwds) {
  const mpx_obj_t *id, *m, *a, *k;
  if (!is_seq(req) || mpx_obj_len(req) != 4)
    return mpx__err(MPX_EPROTO, "manager request: not a 4-tuple "
                    "(ident, method, args, kwds) but a %s of %zu",
                    mpx_obj_type_name(mpx_obj_type(req)), mpx_obj_len(req));
  id = mpx_obj_item(req, 0);
  m = mpx_obj_item(req, 1);
  a = mpx_obj_item(req, 2);
  k = mpx_obj_item(req, 3);
  if (mpx_obj_type(id) == MPX_OBJ_NULL) {
    *ident = NULL;
  } else if ((*ident = cstr(id)) == NULL) {
    return mpx__err(MPX_EPROTO, "manager request: ident is a %s, not a str "
                    "or None", mpx_obj_type_name(mpx_obj_type(id)));
  }
  if ((*method = cstr(m)) == NULL)
    return mpx__err(MPX_EPROTO, "manager request: method is a %s, not a str",
                    mpx_obj_type_name(mpx_obj_type(m)));
  if (!is_seq(a))
    return mpx__err(MPX_EPROTO, "manager request: args is a %s, not a tuple",
                    mpx_obj_type_name(mpx_obj_type(a)));
  *args = a;
  if (mpx_obj_type(k) == MPX_OBJ_MAP) {
    *kwds = k;
  } else if (mpx_obj_type(k) == MPX_OBJ_NULL) {
    pthread_once(&empty_once, empty_init);
    if (empty_map == NULL)
      return mpx__err(MPX_ENOMEM, "manager request: out of memory");
    *kwds = empty_map;
  } else {
    return mpx__err(MPX_EPROTO, "manager request: kwds is a %s, not a dict",
                    mpx_obj_type_name(mpx_obj_type(k)));
  }
  return 0;
}

mpx_obj_t *mpx__wire_reply(const char *kind, mpx_obj_t *payload) {
  return mpx__wire_reply_obj(kind ? mpx_obj_str(kind, SIZE_MAX) : NULL, payload);
}

mpx_obj_t *mpx__wire_reply_obj(mpx_obj_t *kind, mpx_obj_t *payload) {
  mpx_obj_t *t = kind ? mpx_obj_tuple(2) : NULL;
  if (t == NULL || mpx_obj_append(t, kind) != 0) {
    if (t == NULL) mpx_obj_release(kind);
    mpx_obj_release(t);
    mpx_obj_release(payload);
    return NULL;
  }
  if (mpx_obj_append(t, payload ? payload : mpx_obj_null()) != 0) {
    mpx_obj_release(t);
    return NULL;
  }
  return t;
}

int mpx__wire_reply_parse(const mpx_obj_t *reply, const char **kind,
                          const mpx_obj_t **payload) {
  if (!is_seq(reply) || mpx_obj_len(reply) != 2)
    return mpx__err(MPX_EPROTO, "manager reply: not a 2-tuple (kind, "
                    "payload) but a %s of %zu",
                    mpx_obj_type_name(mpx_obj_type(reply)), mpx_obj_len(reply));
  if ((*kind = cstr(mpx_obj_item(reply, 0))) == NULL)
    return mpx__err(MPX_EPROTO, "manager reply: kind is no str");
  *payload = mpx_obj_item(reply, 1);
  return 0;
}

/* ---- Token, exceptions, addresses ------------------------------------------ */

#define TOKEN_MODULE "multiprocessing.managers"

mpx_obj_t *mpx__wire_token(const char *typeid, const mpx_obj_t *address,
                           const char *ident) {
  mpx_obj_t *st = mpx_obj_tuple(3);
  if (st == NULL || typeid == NULL || ident == NULL ||
      mpx_obj_append(st, mpx_obj_str(typeid, SIZE_MAX)) != 0 ||
      mpx_obj_append(st, address ? mpx_obj_retain((mpx_obj_t *)address)
                                 : mpx_obj_null()) != 0 ||
      mpx_obj_append(st, mpx_obj_str(ident, SIZE_MAX)) != 0) {
    mpx_obj_release(st);
    return NULL;
  }
  /* Token has __slots__ and __getstate__: pickled as NEWOBJ with () and
   * the state tuple. */
  return mpx_obj_opaque(MPX_OPAQUE_NEWOBJ, TOKEN_MODULE, "Token",
                        mpx_obj_tuple(0), st);
}

int mpx__wire_token_parse(const mpx_obj_t *tok, const char **typeid,
                          const mpx_obj_t **address, const char **ident) {
  const mpx_obj_t *t = NULL;
  if (mpx_obj_type(tok) != MPX_OBJ_OPAQUE ||
      strcmp(mpx_obj_opaque_module(tok), TOKEN_MODULE) != 0 ||
      strcmp(mpx_obj_opaque_name(tok), "Token") != 0)
    return mpx__err(MPX_EPROTO, "manager: expected a "
                    "multiprocessing.managers.Token, got a %s",
                    mpx_obj_type_name(mpx_obj_type(tok)));
  const mpx_obj_t *st = mpx_obj_opaque_state(tok);
  const mpx_obj_t *args = mpx_obj_opaque_args(tok);
  if (st != NULL && is_seq(st) && mpx_obj_len(st) == 3)
    t = st;
  else if (args != NULL && is_seq(args) && mpx_obj_len(args) == 3)
    t = args;
  if (t == NULL)
    return mpx__err(MPX_EPROTO, "manager: Token without a (typeid, address, "
                    "id) state");
  const char *ty = cstr(mpx_obj_item(t, 0)), *id = cstr(mpx_obj_item(t, 2));
  if (ty == NULL || id == NULL)
    return mpx__err(MPX_EPROTO, "manager: Token's typeid or id is no str");
  *typeid = ty;
  *ident = id;
  *address = mpx_obj_item(t, 1);
  return 0;
}

mpx_obj_t *mpx__wire_exception(const char *module, const char *name,
                               const char *msg) {
  mpx_obj_t *args = mpx_obj_tuple(1);
  if (args == NULL) return NULL;
  if (msg != NULL && mpx_obj_append(args, mpx_obj_str(msg, SIZE_MAX)) != 0) {
    mpx_obj_release(args);
    return NULL;
  }
  return mpx_obj_opaque(MPX_OPAQUE_REDUCE, module, name, args, NULL);
}

mpx_obj_t *mpx__wire_address(const char *address) {
  if (address == NULL) return NULL;
  if (strncmp(address, "unix:", 5) == 0) {
    const char *p = address + 5;
    if (p[0] == '@') {
      /* Linux abstract namespace: Python spells it with a leading NUL. */
      size_t n = strlen(p);
      char *s = malloc(n + 1);
      if (s == NULL) return NULL;
      s[0] = '\0';
      memcpy(s + 1, p + 1, n);
      mpx_obj_t *o = mpx_obj_str(s, n);
      free(s);
      return o;
    }
    return mpx_obj_str(p, SIZE_MAX);
  }
  if (strncmp(address, "tcp://", 6) != 0) return NULL;
  const char *h = address + 6, *colon = strrchr(h, ':');
  if (colon == NULL) return NULL;
  const char *hs = h, *he = colon;
  if (*hs == '[' && he > hs && he[-1] == ']') {
    hs++;
    he--;
  }
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (*end != '\0' || port < 0 || port > 65535) return NULL;
  mpx_obj_t *t = mpx_obj_tuple(2);
  if (t == NULL || mpx_obj_append(t, mpx_obj_str(hs, (size_t)(he - hs))) != 0 ||
      mpx_obj_append(t, mpx_obj_int(port)) != 0) {
    mpx_obj_release(t);
    return NULL;
  }
  return t;
}
