/* The manager server's protocol, without sockets (ipc/manager/manager_core.h):
 * CPython's framing parsed incrementally, the authkey challenge (accepting
 * side: challenge first, then answer), then requests. A connection's first
 * request is a server call (CPython's one-shot control connection: one
 * reply, then close) unless it is accept_connection, which makes it a
 * persistent connection serving (ident, method, args, kwds) calls in
 * order, server calls (ident None) included. Requests are answered in the
 * codec and pickle protocol they came in. A call that would block parks:
 * the connection reads nothing more until it is answered, and every other
 * connection goes on. */
#include "manager_core.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "auth.h"
#include "manager_wire.h"
#include "mpx/listener.h"

#define DEFAULT_MAX_FRAME ((size_t)64 << 20)
#define DEFAULT_MAX_OBJECTS ((size_t)1 << 20)
#define ID_BASE 0x7f5000000000ull /* idents look like CPython's id() */
#define ID_STEP 0x40u
#define PEND_MAX ((size_t)1 << 20) /* input held behind a parked call */

enum {
  S_AUTH_ANSWER,    /* challenge sent: waiting for its answer */
  S_AUTH_CHALLENGE, /* welcomed the peer: waiting for its challenge */
  S_AUTH_RESULT,    /* answered: waiting for #WELCOME# */
  S_FIRST,          /* authenticated: the first request decides */
  S_PERSISTENT,     /* after accept_connection */
  S_CLOSING
};

struct mpx__msess_s {
  mpx__mcore_t *core;
  void *io;
  int state;
  uint64_t serial;
  mpx__challenge_t ch;
  /* frame parser */
  uint8_t hdr[12];
  size_t hdr_have;
  size_t need;     /* payload length once the header is read */
  bool in_body;
  uint8_t *body;
  size_t body_have;
  /* input held back while a call is parked */
  uint8_t *pend;
  size_t pend_len, pend_cap;
  mpx__mcall_t *parked;
  int held; /* locks held (owner_gone on close) */
  mpx__wire_t last_wire;
  bool have_wire;
  bool in_resume;
  mpx__msess_t *rnext;         /* the core's resume list */
  mpx__msess_t *prev, *next;   /* the core's session list */
};

typedef struct pub_s {
  struct pub_s *next;
  char *typeid;
  mpx__mobj_t *obj;
} pub_t;

struct mpx__mcore_s {
  mpx__mcore_opts_t o;
  void *key;
  mpx__mcore_hooks_t h;
  char *address;
  mpx_obj_t *addr_obj;
  /* objects by id: chained hash */
  mpx__mobj_t **tab;
  size_t tab_cap, n_objs;
  uint64_t next_id;
  pub_t *pubs;
  mpx__msess_t *sessions;
  mpx__msess_t *resume;
  int depth; /* nesting of entry points: resume at the outermost */
  uint64_t serial;
  bool stopped;
  mpx_manager_stats_t st;
};

/* ---- objects ----------------------------------------------------------------- */

static size_t slot_of(mpx__mcore_t *k, uint64_t id) {
  return (size_t)((id / ID_STEP) * 0x9e3779b97f4a7c15ull >> 20) & (k->tab_cap - 1);
}

static int tab_grow(mpx__mcore_t *k) {
  size_t cap = k->tab_cap ? k->tab_cap * 2 : 256;
  mpx__mobj_t **t = calloc(cap, sizeof *t);
  if (t == NULL) return -1;
  mpx__mobj_t **old = k->tab;
  size_t oc = k->tab_cap;
  k->tab = t;
  k->tab_cap = cap;
  for (size_t i = 0; i < oc; i++)
    for (mpx__mobj_t *o = old[i], *nx; o; o = nx) {
      nx = o->hnext;
      size_t s = slot_of(k, o->id);
      o->hnext = t[s];
      t[s] = o;
    }
  free(old);
  return 0;
}

static mpx__mobj_t *obj_find(mpx__mcore_t *k, const char *ident) {
  uint64_t id = 0;
  size_t n = strlen(ident);
  if (n == 0 || n > 16 || k->tab_cap == 0) return NULL;
  for (size_t i = 0; i < n; i++) {
    char ch = ident[i];
    int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
    if (d < 0) return NULL;
    id = id << 4 | (uint64_t)d;
  }
  for (mpx__mobj_t *o = k->tab[slot_of(k, id)]; o; o = o->hnext)
    if (o->id == id && strcmp(o->ident, ident) == 0) return o;
  return NULL;
}

/* Registers a new object under typeid with refcount 0. */
static int obj_add(mpx__mcore_t *k, mpx__mobj_t *o, const mpx__mtype_t *t,
                   const char *typeid) {
  if ((k->n_objs + 1) * 2 > k->tab_cap && tab_grow(k) != 0) return -1;
  if ((o->typeid = strdup(typeid)) == NULL) return -1;
  o->type = t;
  o->id = k->next_id;
  k->next_id += ID_STEP;
  snprintf(o->ident, sizeof o->ident, "%" PRIx64, o->id);
  size_t s = slot_of(k, o->id);
  o->hnext = k->tab[s];
  k->tab[s] = o;
  k->n_objs++;
  return 0;
}

static void call_free(mpx__mcall_t *c);
static void send_reply(mpx__msess_t *s, const mpx__wire_t *w, const char *kind,
                       mpx_obj_t *payload);

/* Unlinks and destroys an object; calls parked on it are answered. */
static void obj_kill(mpx__mcore_t *k, mpx__mobj_t *o) {
  mpx__mobj_t **pp = &k->tab[slot_of(k, o->id)];
  while (*pp && *pp != o) pp = &(*pp)->hnext;
  if (*pp) *pp = o->hnext;
  k->n_objs--;
  while (o->waiters) {
    mpx__mcall_t *c = o->waiters;
    mpx__mobj_unpark(o, c);
    mpx__mcall_traceback(c, "Traceback (most recent call last):\nKeyError: "
                         "'%s' (the object was freed while this call waited)",
                         o->ident);
    mpx__mcall_complete(c);
  }
  char *tid = o->typeid;
  o->type->destroy(o);
  free(tid);
}

static mpx_obj_t *exposed_tuple(const mpx__mtype_t *t) {
  mpx_obj_t *e = mpx_obj_tuple(8);
  for (size_t i = 0; e && t->methods[i].name; i++)
    mpx_obj_append(e, mpx_obj_str(t->methods[i].name, SIZE_MAX));
  return e;
}

/* ---- calls ------------------------------------------------------------------- */

static void call_free(mpx__mcall_t *c) {
  mpx_obj_release(c->payload);
  mpx_obj_release(c->req);
  free(c);
}

void mpx__msess_held(mpx__msess_t *s, int delta) {
  if (s) s->held += delta;
}

static void stop_timer(mpx__mcore_t *k, mpx__mcall_t *c) {
  if (c->timer && k->h.timer_stop) k->h.timer_stop(k->h.user, c);
  c->timer = NULL;
}

static void schedule_resume(mpx__msess_t *s) {
  if (s->in_resume || s->state == S_CLOSING) return;
  s->in_resume = true;
  s->rnext = s->core->resume;
  s->core->resume = s;
}

static const mpx__wire_t *call_wire(mpx__mcall_t *c);

void mpx__mcall_complete(mpx__mcall_t *c) {
  mpx__msess_t *s = c->owner;
  mpx__mcore_t *k = s->core;
  stop_timer(k, c);
  if (s->parked == c) s->parked = NULL;
  send_reply(s, call_wire(c), c->kind ? c->kind : MPX__K_RETURN, c->payload);
  c->payload = NULL;
  call_free(c);
  if (k->h.pause) k->h.pause(s->io, false);
  schedule_resume(s);
}

/* The wire a parked call answers in is kept in its session. */
static const mpx__wire_t *call_wire(mpx__mcall_t *c) { return &c->owner->last_wire; }

/* ---- sending ----------------------------------------------------------------- */

static void send_frame(mpx__msess_t *s, const void *p, size_t n) {
  uint8_t hdr[4] = {(uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                    (uint8_t)n};
  uint8_t *buf = malloc(n + 4);
  if (buf == NULL) return;
  memcpy(buf, hdr, 4);
  memcpy(buf + 4, p, n);
  s->core->h.send(s->io, buf, n + 4);
  free(buf);
}

/* (kind, payload), payload stolen; the kind a Python 2 str for a Python 2
 * peer, as CPython 2.7's server sends it. */
static mpx_obj_t *reply_msg(const mpx__wire_t *w, const char *kind,
                            mpx_obj_t *payload) {
  if (!w->py2) return mpx__wire_reply(kind, payload);
  return mpx__wire_reply_obj(mpx_obj_bytes(kind, strlen(kind)), payload);
}

/* Encodes (kind, payload) (payload stolen) and sends it. */
static void send_reply(mpx__msess_t *s, const mpx__wire_t *w, const char *kind,
                       mpx_obj_t *payload) {
  mpx__mcore_t *k = s->core;
  mpx_wbuf_t b;
  int rc;
  if (strcmp(kind, MPX__K_RETURN) != 0 && strcmp(kind, MPX__K_PROXY) != 0)
    k->st.errors++;
  /* Python 2's convert_to_error asserts that a traceback is its str */
  if (w->py2 && payload != NULL && (strcmp(kind, MPX__K_TRACEBACK) == 0 ||
                                    strcmp(kind, MPX__K_UNSERIALIZABLE) == 0))
    payload = mpx__wire_py2_str(payload);
  mpx_obj_t *msg = reply_msg(w, kind, payload);
  mpx_wbuf_init(&b);
  /* room for the 4-byte header, filled in after encoding */
  if (msg == NULL || mpx_wbuf_append(&b, "\0\0\0\0", 4) != 0) {
    mpx_obj_release(msg);
    mpx_wbuf_free(&b);
    MPX__ERROR("manager: out of memory for a reply; closing the connection");
    s->state = S_CLOSING;
    k->h.close(s->io);
    return;
  }
  rc = mpx__wire_encode(w, msg, &b);
  mpx_obj_release(msg);
  if (rc != 0) {
    char text[400];
    snprintf(text, sizeof text, "Traceback (most recent call last):\n"
             "mpx manager: the reply could not be encoded: %s", mpx_last_error());
    mpx_wbuf_reset(&b);
    mpx_wbuf_append(&b, "\0\0\0\0", 4);
    k->st.errors++;
    msg = reply_msg(w, MPX__K_UNSERIALIZABLE, w->py2 ? mpx_obj_bytes(text, strlen(text))
                                                    : mpx_obj_str(text, SIZE_MAX));
    rc = msg ? mpx__wire_encode(w, msg, &b) : MPX_ENOMEM;
    mpx_obj_release(msg);
    if (rc != 0) {
      mpx_wbuf_free(&b);
      s->state = S_CLOSING;
      k->h.close(s->io);
      return;
    }
  }
  size_t n = b.len - 4;
  if (n > 0x7fffffff) {
    /* the long form: -1, then an 8-byte length */
    uint8_t *big = malloc(n + 12);
    if (big == NULL) {
      mpx_wbuf_free(&b);
      s->state = S_CLOSING;
      k->h.close(s->io);
      return;
    }
    memset(big, 0xff, 4);
    for (int i = 0; i < 8; i++) big[4 + i] = (uint8_t)((uint64_t)n >> (56 - 8 * i));
    memcpy(big + 12, b.data + 4, n);
    k->h.send(s->io, big, n + 12);
    free(big);
  } else {
    b.data[0] = (uint8_t)(n >> 24);
    b.data[1] = (uint8_t)(n >> 16);
    b.data[2] = (uint8_t)(n >> 8);
    b.data[3] = (uint8_t)n;
    k->h.send(s->io, b.data, b.len);
  }
  mpx_wbuf_free(&b);
}

static void sess_close(mpx__msess_t *s) {
  if (s->state == S_CLOSING) return;
  s->state = S_CLOSING;
  s->core->h.close(s->io);
}

/* ---- the handshake ----------------------------------------------------------- */

static void auth_fail(mpx__msess_t *s, const char *why) {
  s->core->st.auth_failures++;
  MPX__INFO("manager: connection %" PRIu64 " failed the authkey challenge: %s",
            s->serial, why);
  send_frame(s, MPX__AUTH_FAILURE, strlen(MPX__AUTH_FAILURE));
  sess_close(s);
}

static void auth_step(mpx__msess_t *s, const uint8_t *p, size_t n) {
  mpx__mcore_t *k = s->core;
  switch (s->state) {
  case S_AUTH_ANSWER:
    if (mpx__auth_verify(&s->ch, k->key, k->o.authkey_len, p, n) != 0) {
      auth_fail(s, "wrong answer to our challenge");
      return;
    }
    send_frame(s, MPX__AUTH_WELCOME, strlen(MPX__AUTH_WELCOME));
    s->state = S_AUTH_CHALLENGE;
    return;
  case S_AUTH_CHALLENGE: {
    uint8_t ans[MPX__AUTH_ANSWER_MAX];
    size_t alen;
    if (mpx__auth_answer(k->key, k->o.authkey_len, p, n, ans, sizeof ans, &alen) != 0) {
      auth_fail(s, "its challenge is malformed");
      return;
    }
    send_frame(s, ans, alen);
    s->state = S_AUTH_RESULT;
    return;
  }
  case S_AUTH_RESULT:
    if (n == strlen(MPX__AUTH_WELCOME) && memcmp(p, MPX__AUTH_WELCOME, n) == 0) {
      s->state = S_FIRST;
      k->st.connections++;
      return;
    }
    /* the peer refused our answer: it has the wrong key */
    k->st.auth_failures++;
    MPX__INFO("manager: connection %" PRIu64 " refused our answer (wrong "
              "authkey)", s->serial);
    sess_close(s);
    return;
  }
}

/* ---- server methods ------------------------------------------------------------ */

static const char *const public_methods[] = {
    "shutdown", "create", "accept_connection", "get_methods", "debug_info",
    "number_of_objects", "dummy", "incref", "decref", NULL};

static int tb(mpx__mcall_t *c, const char *exc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int tb(mpx__mcall_t *c, const char *exc, const char *fmt, ...) {
  char buf[700];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return mpx__mcall_traceback(c, "Traceback (most recent call last):\n"
                              "  (mpx manager)\n%s: %s", exc, buf);
}

/* An exception reply of a type's create turned into the #TRACEBACK a
 * server method gives. */
static void error_to_traceback(mpx__mcall_t *c) {
  if (c->kind && strcmp(c->kind, MPX__K_ERROR) == 0 && c->payload) {
    char msg[400] = "";
    const mpx_obj_t *a = mpx_obj_opaque_args(c->payload);
    if (a && mpx_obj_len(a) > 0) {
      size_t n;
      const char *s = mpx_obj_str_data(mpx_obj_item(a, 0), &n);
      if (s) snprintf(msg, sizeof msg, "%.*s", (int)(n > 300 ? 300 : n), s);
      else mpx_obj_dump(mpx_obj_item(a, 0), msg, sizeof msg);
    }
    char name[128];
    snprintf(name, sizeof name, "%s", mpx_obj_opaque_name(c->payload));
    mpx_obj_release(c->payload);
    c->payload = NULL;
    tb(c, name, "%s", msg);
  }
}

/* A name argument (typeid, ident): a str, or a Python 2 client's str. */
static const char *str_arg(const mpx_obj_t *args, size_t i) {
  return mpx__wire_name(mpx_obj_item(args, i));
}

static int incref(mpx__mcore_t *k, mpx__mcall_t *c, const char *ident) {
  mpx__mobj_t *o = ident ? obj_find(k, ident) : NULL;
  if (o == NULL) return tb(c, "KeyError", "'%s'", ident ? ident : "?");
  o->refcount++;
  return mpx__mcall_return(c, NULL);
}

static void decref_obj(mpx__mcore_t *k, mpx__mobj_t *o) {
  if (--o->refcount <= 0) obj_kill(k, o);
}

static int do_create(mpx__mcore_t *k, mpx__mcall_t *c) {
  const char *typeid = str_arg(c->args, 0);
  if (typeid == NULL)
    return tb(c, "TypeError", "create() needs a typeid str as its first argument");
  for (pub_t *p = k->pubs; p; p = p->next)
    if (strcmp(p->typeid, typeid) == 0) {
      p->obj->refcount++;
      mpx_obj_t *r = mpx_obj_tuple(2);
      if (r) {
        mpx_obj_append(r, mpx_obj_str(p->obj->ident, SIZE_MAX));
        mpx_obj_append(r, exposed_tuple(p->obj->type));
      }
      return mpx__mcall_return(c, r);
    }
  const mpx__mtype_t *t = mpx__mtype_find(typeid);
  if (t == NULL) return tb(c, "KeyError", "'%s'", typeid);
  if (k->n_objs >= k->o.max_objects)
    return tb(c, "MemoryError", "mpx manager: max_objects (%zu) reached; "
              "decref some objects first", k->o.max_objects);
  mpx_obj_t *rest = mpx_obj_tuple(mpx_obj_len(c->args));
  for (size_t i = 1; rest && i < mpx_obj_len(c->args); i++)
    mpx_obj_append(rest, mpx_obj_retain(mpx_obj_item(c->args, i)));
  if (rest == NULL) return tb(c, "MemoryError", "out of memory");
  mpx__mobj_t *o = t->create(rest, c->kwds, c);
  mpx_obj_release(rest);
  if (o == NULL) {
    error_to_traceback(c);
    return MPX__M_DONE;
  }
  if (obj_add(k, o, t, typeid) != 0) {
    t->destroy(o);
    return tb(c, "MemoryError", "out of memory");
  }
  o->refcount = 1;
  mpx_obj_t *r = mpx_obj_tuple(2);
  if (r) {
    mpx_obj_append(r, mpx_obj_str(o->ident, SIZE_MAX));
    mpx_obj_append(r, exposed_tuple(t));
  }
  return mpx__mcall_return(c, r);
}

static void debug_info(mpx__mcore_t *k, mpx__mcall_t *c) {
  mpx_wbuf_t b;
  mpx_wbuf_init(&b);
  /* sorted by ident, as CPython sorts its keys */
  mpx__mobj_t **all = malloc((k->n_objs + 1) * sizeof *all);
  size_t n = 0;
  for (size_t i = 0; all && i < k->tab_cap; i++)
    for (mpx__mobj_t *o = k->tab[i]; o; o = o->hnext) all[n++] = o;
  for (size_t i = 1; i < n; i++) /* insertion sort: debug only */
    for (size_t j = i; j > 0 && strcmp(all[j - 1]->ident, all[j]->ident) > 0; j--) {
      mpx__mobj_t *t = all[j];
      all[j] = all[j - 1];
      all[j - 1] = t;
    }
  for (size_t i = 0; i < n; i++) {
    char line[256], repr[128];
    all[i]->type->repr(all[i], repr, sizeof repr);
    repr[75] = '\0';
    int len = snprintf(line, sizeof line, "%s  %s:       refcount=%" PRId64 "\n    %s",
                       i ? "\n" : "", all[i]->ident, all[i]->refcount, repr);
    mpx_wbuf_append(&b, line, (size_t)len < sizeof line ? (size_t)len : sizeof line - 1);
  }
  free(all);
  mpx__mcall_return(c, mpx_obj_str(b.data ? (const char *)b.data : "", b.len));
  mpx_wbuf_free(&b);
}

/* Runs a server method. *shutdown set for "shutdown". */
static int server_call(mpx__msess_t *s, mpx__mcall_t *c, bool *shutdown,
                       bool *accept) {
  mpx__mcore_t *k = s->core;
  const char *m = c->method;
  size_t i;
  for (i = 0; public_methods[i]; i++)
    if (strcmp(public_methods[i], m) == 0) break;
  if (public_methods[i] == NULL) return tb(c, "AssertionError", "'%s' unrecognized", m);
  if (strcmp(m, "dummy") == 0) return mpx__mcall_return(c, NULL);
  if (strcmp(m, "create") == 0) return do_create(k, c);
  if (strcmp(m, "accept_connection") == 0) {
    *accept = true;
    return mpx__mcall_return(c, NULL);
  }
  if (strcmp(m, "number_of_objects") == 0)
    return mpx__mcall_return(c, mpx_obj_int((int64_t)k->n_objs));
  if (strcmp(m, "debug_info") == 0) {
    debug_info(k, c);
    return MPX__M_DONE;
  }
  if (strcmp(m, "shutdown") == 0) {
    *shutdown = true;
    return mpx__mcall_return(c, NULL);
  }
  if (strcmp(m, "incref") == 0) return incref(k, c, str_arg(c->args, 0));
  if (strcmp(m, "decref") == 0) {
    const char *id = str_arg(c->args, 0);
    mpx__mobj_t *o = id ? obj_find(k, id) : NULL;
    if (o == NULL) return tb(c, "KeyError", "'%s'", id ? id : "?");
    decref_obj(k, o);
    return mpx__mcall_return(c, NULL);
  }
  /* get_methods(token) */
  const char *typeid, *ident;
  const mpx_obj_t *addr;
  if (mpx_obj_len(c->args) < 1 ||
      mpx__wire_token_parse(mpx_obj_item(c->args, 0), &typeid, &addr, &ident) != 0)
    return tb(c, "TypeError", "get_methods() needs a Token");
  mpx__mobj_t *o = obj_find(k, ident);
  if (o == NULL) return tb(c, "KeyError", "'%s'", ident);
  return mpx__mcall_return(c, exposed_tuple(o->type));
}

/* ---- object methods ------------------------------------------------------------- */

static int object_call(mpx__msess_t *s, mpx__mcall_t *c, const char *ident) {
  mpx__mcore_t *k = s->core;
  mpx__mobj_t *o = obj_find(k, ident);
  if (o == NULL) return tb(c, "KeyError", "'%s'", ident);
  c->obj = o;
  const mpx__mmethod_t *mm = mpx__mtype_method(o->type, c->method);
  if (mm != NULL) {
    int r = mm->fn(o, c);
    if (r == MPX__M_DONE && c->proxy) {
      mpx__mobj_t *p = c->proxy;
      const char *tid = o->type->iter_typeid ? o->type->iter_typeid : p->type->name;
      c->proxy = NULL;
      if (k->n_objs >= k->o.max_objects || obj_add(k, p, p->type, tid) != 0) {
        p->type->destroy(p);
        return tb(c, "MemoryError", "mpx manager: max_objects (%zu) reached",
                  k->o.max_objects);
      }
      p->refcount = 1;
      mpx_obj_t *pl = mpx_obj_tuple(2);
      if (pl) {
        mpx_obj_append(pl, exposed_tuple(p->type));
        mpx_obj_append(pl, mpx__wire_token(tid, k->addr_obj, p->ident));
      }
      c->kind = MPX__K_PROXY;
      /* (exposed, Token): names a Python 2 client uses as its str */
      c->payload = s->last_wire.py2 && pl ? mpx__wire_py2_str(pl) : pl;
    }
    return r;
  }
  /* CPython's fallback_mapping for methods not exposed */
  if (strcmp(c->method, "#GETVALUE") == 0) {
    mpx_obj_t *v = o->type->value ? o->type->value(o) : NULL;
    if (v == NULL) {
      c->kind = MPX__K_UNSERIALIZABLE;
      c->payload = mpx_obj_str("Traceback (most recent call last):\n"
                               "TypeError: cannot pickle this object (it has "
                               "no value to copy)", SIZE_MAX);
      return MPX__M_DONE;
    }
    return mpx__mcall_return(c, v);
  }
  if (strcmp(c->method, "__str__") == 0 || strcmp(c->method, "__repr__") == 0) {
    char buf[4096];
    o->type->repr(o, buf, sizeof buf);
    return mpx__mcall_return(c, mpx_obj_str(buf, SIZE_MAX));
  }
  return tb(c, "AttributeError", "method '%s' of '%s' object is not in the "
            "list of allowed methods", c->method, o->type->name);
}

/* ---- requests -------------------------------------------------------------------- */

/* A request that did not decode (mpx_last_error says why; req, if any,
 * is released): a #TRACEBACK, and a first request closes the connection. */
static void answer_malformed(mpx__msess_t *s, mpx_obj_t *req, bool first) {
  char why[300];
  snprintf(why, sizeof why, "%s", mpx_last_error());
  mpx_obj_release(req);
  MPX__INFO("manager: connection %" PRIu64 ": malformed request: %s", s->serial, why);
  /* answer in the codec the peer used before, else pickle 2, which
   * every Python reads */
  if (!s->have_wire && mpx__wire_get(&s->last_wire, "pickle", 2) != 0) {
    sess_close(s);
    return;
  }
  s->have_wire = true;
  char text[400];
  snprintf(text, sizeof text, "Traceback (most recent call last):\n"
           "  (mpx manager)\nmalformed request: %s", why);
  send_reply(s, &s->last_wire, MPX__K_TRACEBACK, mpx_obj_str(text, SIZE_MAX));
  if (first) sess_close(s);
}

/* A call a type parked: its timer starts, and the session holds further
 * requests until it is answered. */
static void park_call(mpx__msess_t *s, mpx__mcall_t *c) {
  mpx__mcore_t *k = s->core;
  if (c->timeout >= 0 && (k->h.timer_start == NULL ||
                          k->h.timer_start(k->h.user, c, c->timeout) != 0)) {
    /* no timer: let the type answer as if the time ran out now */
    c->timer = NULL;
    s->parked = c;
    c->obj->type->expire(c->obj, c);
    return;
  }
  /* reading goes on (to notice the peer going away), but further
   * requests wait in s->pend until this one is answered */
  s->parked = c;
}

static void handle_request(mpx__msess_t *s, const uint8_t *p, size_t n) {
  mpx__mcore_t *k = s->core;
  mpx__wire_t w;
  mpx_obj_t *req = NULL;
  const char *ident, *method;
  const mpx_obj_t *args, *kwds;
  bool first = s->state == S_FIRST;

  k->st.requests++;
  int py2 = 0;
  if (mpx__wire_sniff(p, n, &w) != 0 ||
      mpx__wire_decode(&w, p, n, k->o.max_frame, &req) != 0 ||
      (py2 = mpx__wire_py2_request(&req)) < 0 ||
      mpx__wire_request_parse(req, &ident, &method, &args, &kwds) != 0) {
    answer_malformed(s, req, first);
    return;
  }
  w.py2 = py2 == 1;
  s->last_wire = w;
  s->have_wire = true;

  mpx__mcall_t *c = calloc(1, sizeof *c);
  if (c == NULL) {
    mpx_obj_release(req);
    sess_close(s);
    return;
  }
  c->req = req;
  c->method = method;
  c->args = args;
  c->kwds = kwds;
  c->owner = s;
  c->py2 = w.py2;
  bool shutdown = false, accept = false;
  int r;
  if (k->stopped) {
    r = tb(c, "EOFError", "the manager is shutting down");
  } else if (first || ident == NULL) {
    /* a first request is a server call whatever its ident (CPython's
     * _handle_request ignores it); later ones with ident None too (mpx) */
    r = server_call(s, c, &shutdown, &accept);
  } else {
    r = object_call(s, c, ident);
  }
  if (r == MPX__M_PARKED) {
    park_call(s, c);
    return;
  }
  if (w.py2 && (first || ident == NULL) && c->payload != NULL &&
      (c->kind == NULL || strcmp(c->kind, MPX__K_RETURN) == 0))
    c->payload = mpx__wire_py2_str(c->payload); /* the server's own names */
  send_reply(s, &w, c->kind ? c->kind : MPX__K_RETURN, c->payload);
  c->payload = NULL;
  if (shutdown && first) {
    /* CPython's quirk: shutdown answers inside the method and again
     * when _handle_request sends its result */
    send_reply(s, &w, MPX__K_RETURN, NULL);
  }
  call_free(c);
  if (first && !accept) sess_close(s);
  else if (accept) s->state = S_PERSISTENT;
  if (shutdown) {
    MPX__INFO("manager: shutdown requested by connection %" PRIu64, s->serial);
    sess_close(s);
    if (k->h.shutdown) k->h.shutdown(k->h.user);
  }
}

/* ---- framing ------------------------------------------------------------------- */

static void handle_frame(mpx__msess_t *s, const uint8_t *p, size_t n) {
  if (s->state <= S_AUTH_RESULT) auth_step(s, p, n);
  else handle_request(s, p, n);
}

static size_t frame_limit(mpx__msess_t *s) {
  return s->state <= S_AUTH_RESULT ? MPX__AUTH_MAX_MSG : s->core->o.max_frame;
}

/* Parses frames out of data until it is used up, the session closes or a
 * call parks; returns the bytes consumed. */
static size_t consume(mpx__msess_t *s, const uint8_t *data, size_t len) {
  size_t off = 0;
  while (off < len && s->state != S_CLOSING && s->parked == NULL) {
    if (!s->in_body) {
      size_t want = s->hdr_have < 4 ? 4 : 12;
      size_t take = want - s->hdr_have;
      if (take > len - off) take = len - off;
      memcpy(s->hdr + s->hdr_have, data + off, take);
      s->hdr_have += take;
      off += take;
      if (s->hdr_have < 4) break;
      int32_t n32 = (int32_t)((uint32_t)s->hdr[0] << 24 | (uint32_t)s->hdr[1] << 16 |
                              (uint32_t)s->hdr[2] << 8 | s->hdr[3]);
      uint64_t n;
      if (n32 >= 0) {
        n = (uint64_t)n32;
      } else if (n32 == -1) {
        if (s->hdr_have < 12) continue;
        n = 0;
        for (int i = 4; i < 12; i++) n = n << 8 | s->hdr[i];
      } else {
        MPX__WARN("manager: connection %" PRIu64 ": negative frame length %" PRId32
                  "; closing it", s->serial, n32);
        sess_close(s);
        break;
      }
      if (n > frame_limit(s)) {
        MPX__WARN("manager: connection %" PRIu64 ": frame of %" PRIu64
                  " bytes exceeds the limit of %zu; closing it", s->serial, n,
                  frame_limit(s));
        if (s->state <= S_AUTH_RESULT) s->core->st.auth_failures++;
        sess_close(s);
        break;
      }
      s->hdr_have = 0;
      s->need = (size_t)n;
      s->body_have = 0;
      if (len - off >= s->need) { /* whole frame in place: no copy */
        const uint8_t *p = data + off;
        off += s->need;
        handle_frame(s, p, s->need);
        continue;
      }
      s->in_body = true;
      if ((s->body = malloc(s->need ? s->need : 1)) == NULL) {
        MPX__ERROR("manager: out of memory for a frame of %zu bytes", s->need);
        sess_close(s);
        break;
      }
    }
    size_t take = s->need - s->body_have;
    if (take > len - off) take = len - off;
    memcpy(s->body + s->body_have, data + off, take);
    s->body_have += take;
    off += take;
    if (s->body_have == s->need) {
      uint8_t *b = s->body;
      s->body = NULL;
      s->in_body = false;
      handle_frame(s, b, s->need);
      free(b);
    }
  }
  return off;
}

static void keep_pending(mpx__msess_t *s, const uint8_t *p, size_t n) {
  if (n == 0) return;
  if (s->pend_len + n > s->pend_cap) {
    size_t cap = s->pend_cap ? s->pend_cap : 4096;
    while (cap < s->pend_len + n) cap *= 2;
    uint8_t *np = realloc(s->pend, cap);
    if (np == NULL) {
      sess_close(s);
      return;
    }
    s->pend = np;
    s->pend_cap = cap;
  }
  memcpy(s->pend + s->pend_len, p, n);
  s->pend_len += n;
}

static void feed_now(mpx__msess_t *s, const uint8_t *p, size_t n) {
  size_t used = consume(s, p, n);
  if (s->state != S_CLOSING) keep_pending(s, p + used, n - used);
}

/* Entry points nest (a call completes others); sessions whose parked call
 * was answered go on reading only at the outermost level. */
static void enter(mpx__mcore_t *k) { k->depth++; }

static void leave(mpx__mcore_t *k) {
  if (k->depth == 1) {
    while (k->resume) {
      mpx__msess_t *s = k->resume;
      k->resume = s->rnext;
      s->in_resume = false;
      if (s->parked || s->state == S_CLOSING || s->pend_len == 0) continue;
      uint8_t *p = s->pend;
      size_t n = s->pend_len;
      s->pend = NULL;
      s->pend_len = s->pend_cap = 0;
      feed_now(s, p, n);
      free(p);
    }
  }
  k->depth--;
}

void mpx__msess_feed(mpx__msess_t *s, const void *data, size_t len) {
  mpx__mcore_t *k = s->core;
  if (s->state == S_CLOSING) return;
  enter(k);
  if (s->parked || s->pend_len) {
    keep_pending(s, data, len);
    /* a peer pipelining behind a parked call: stop reading past a bound */
    if (s->parked && s->pend_len > PEND_MAX && k->h.pause) k->h.pause(s->io, true);
  } else {
    feed_now(s, data, len);
  }
  leave(k);
}

/* ---- sessions ------------------------------------------------------------------ */

mpx__msess_t *mpx__msess_new(mpx__mcore_t *k, void *io, bool authenticated) {
  mpx__msess_t *s = calloc(1, sizeof *s);
  if (s == NULL) return NULL;
  s->core = k;
  s->io = io;
  s->serial = ++k->serial;
  s->next = k->sessions;
  if (k->sessions) k->sessions->prev = s;
  k->sessions = s;
  k->st.open_connections++;
  if (authenticated) {
    s->state = S_FIRST;
    k->st.connections++;
    return s;
  }
  s->state = S_AUTH_ANSWER;
  uint8_t msg[128];
  size_t n;
  if (mpx__auth_challenge(&s->ch, k->o.auth_flags, msg, sizeof msg, &n) != 0) {
    MPX__ERROR("manager: cannot make a challenge: %s", mpx_last_error());
    sess_close(s);
    return s;
  }
  send_frame(s, msg, n);
  return s;
}

static void owner_gone_all(mpx__mcore_t *k, mpx__msess_t *s) {
  for (size_t i = 0; i < k->tab_cap && s->held > 0; i++)
    for (mpx__mobj_t *o = k->tab[i]; o; o = o->hnext)
      if (o->type->owner_gone) o->type->owner_gone(o, s);
}

void mpx__msess_free(mpx__msess_t *s) {
  if (s == NULL) return;
  mpx__mcore_t *k = s->core;
  enter(k);
  s->state = S_CLOSING;
  if (s->parked) {
    mpx__mcall_t *c = s->parked;
    s->parked = NULL;
    stop_timer(k, c);
    if (c->obj && c->obj->type->drop) c->obj->type->drop(c->obj, c);
    else if (c->obj) mpx__mobj_unpark(c->obj, c);
    call_free(c);
  }
  if (s->held > 0) {
    MPX__INFO("manager: connection %" PRIu64 " closed holding %d lock(s); "
              "releasing them", s->serial, s->held);
    owner_gone_all(k, s);
  }
  if (s->in_resume) {
    mpx__msess_t **pp = &k->resume;
    while (*pp && *pp != s) pp = &(*pp)->rnext;
    if (*pp) *pp = s->rnext;
  }
  if (s->prev) s->prev->next = s->next;
  else k->sessions = s->next;
  if (s->next) s->next->prev = s->prev;
  k->st.open_connections--;
  free(s->body);
  free(s->pend);
  free(s);
  leave(k);
}

bool mpx__msess_authenticated(const mpx__msess_t *s) {
  return s->state >= S_FIRST && s->state != S_CLOSING;
}

void mpx__msess_handshake_expired(mpx__msess_t *s) {
  if (s->state > S_AUTH_RESULT) return;
  s->core->st.auth_failures++;
  MPX__INFO("manager: connection %" PRIu64 " did not finish the authkey "
            "challenge in time; closing it", s->serial);
  s->state = S_CLOSING;
}

/* ---- the core ------------------------------------------------------------------ */

int mpx__mcore_new(mpx__mcore_t **out, const mpx__mcore_opts_t *o,
                   const mpx__mcore_hooks_t *hooks) {
  mpx__mcore_t *k = calloc(1, sizeof *k);
  if (k == NULL) return mpx__err(MPX_ENOMEM, "manager: out of memory");
  k->o = *o;
  if (k->o.max_frame == 0) k->o.max_frame = DEFAULT_MAX_FRAME;
  if (k->o.max_objects == 0) k->o.max_objects = DEFAULT_MAX_OBJECTS;
  k->key = malloc(o->authkey_len ? o->authkey_len : 1);
  if (k->key == NULL) {
    free(k);
    return mpx__err(MPX_ENOMEM, "manager: out of memory");
  }
  memcpy(k->key, o->authkey, o->authkey_len);
  k->o.authkey = k->key;
  k->h = *hooks;
  k->next_id = ID_BASE;
  *out = k;
  return 0;
}

int mpx__mcore_set_address(mpx__mcore_t *k, const char *address) {
  char *a = strdup(address);
  mpx_obj_t *ao = mpx__wire_address(address);
  if (a == NULL || ao == NULL) {
    free(a);
    mpx_obj_release(ao);
    return mpx__err(MPX_ENOMEM, "manager: bad or unrepresentable address '%s'", address);
  }
  free(k->address);
  mpx_obj_release(k->addr_obj);
  k->address = a;
  k->addr_obj = ao;
  return 0;
}

int mpx__mcore_expose(mpx__mcore_t *k, const char *typeid, const char *type,
                      const mpx_obj_t *args, const mpx_obj_t *kwds) {
  if (typeid == NULL || type == NULL || typeid[0] == '\0')
    return mpx__err(MPX_EINVAL, "mpx_manager_expose: typeid and type are required");
  const mpx__mtype_t *t = mpx__mtype_find(type);
  if (t == NULL)
    return mpx__err(MPX_EINVAL, "mpx_manager_expose: unknown type '%s' (Queue, "
                    "JoinableQueue, dict, list, Value, Array, Lock, RLock, "
                    "Semaphore, BoundedSemaphore, Event, Condition, Barrier, "
                    "Namespace)", type);
  if (args && mpx_obj_type(args) != MPX_OBJ_TUPLE && mpx_obj_type(args) != MPX_OBJ_ARRAY)
    return mpx__err(MPX_EINVAL, "mpx_manager_expose: args must be a tuple");
  if (kwds && mpx_obj_type(kwds) != MPX_OBJ_MAP)
    return mpx__err(MPX_EINVAL, "mpx_manager_expose: kwds must be a map");
  for (pub_t *p = k->pubs; p; p = p->next)
    if (strcmp(p->typeid, typeid) == 0)
      return mpx__err(MPX_EEXIST, "mpx_manager_expose: typeid '%s' is already "
                      "published", typeid);
  if (mpx__mtype_find(typeid) != NULL)
    return mpx__err(MPX_EEXIST, "mpx_manager_expose: '%s' is a shipped typeid", typeid);
  mpx_obj_t *ea = args ? NULL : mpx_obj_tuple(0), *ek = kwds ? NULL : mpx_obj_map(0);
  mpx__mcall_t c = {0};
  c.method = type;
  mpx__mobj_t *o = t->create(args ? args : ea, kwds ? kwds : ek, &c);
  mpx_obj_release(ea);
  mpx_obj_release(ek);
  if (o == NULL) {
    char msg[300] = "";
    if (c.payload) {
      const mpx_obj_t *a = mpx_obj_opaque_args(c.payload);
      if (a && mpx_obj_len(a)) mpx_obj_dump(mpx_obj_item(a, 0), msg, sizeof msg);
    }
    mpx_obj_release(c.payload);
    return mpx__err(MPX_EINVAL, "mpx_manager_expose: %s(...): %s", type, msg);
  }
  pub_t *p = calloc(1, sizeof *p);
  if (p == NULL || (p->typeid = strdup(typeid)) == NULL || obj_add(k, o, t, typeid) != 0) {
    if (p) free(p->typeid);
    free(p);
    t->destroy(o);
    return mpx__err(MPX_ENOMEM, "mpx_manager_expose: out of memory");
  }
  o->refcount = 1; /* the server's own */
  o->published = true;
  p->obj = o;
  p->next = k->pubs;
  k->pubs = p;
  return 0;
}

void mpx__mcore_stats(mpx__mcore_t *k, mpx_manager_stats_t *st) {
  *st = k->st;
  st->objects = k->n_objs;
}

void mpx__mcore_stop(mpx__mcore_t *k) {
  enter(k);
  k->stopped = true;
  for (mpx__msess_t *s = k->sessions; s; s = s->next)
    if (s->parked) {
      mpx__mcall_t *c = s->parked;
      if (c->obj && c->obj->type->drop) c->obj->type->drop(c->obj, c);
      else if (c->obj) mpx__mobj_unpark(c->obj, c);
      mpx_obj_release(c->payload);
      c->payload = NULL;
      tb(c, "EOFError", "the manager is shutting down");
      mpx__mcall_complete(c);
    }
  leave(k);
}

void mpx__mcore_expire(mpx__mcore_t *k, mpx__mcall_t *c) {
  enter(k);
  stop_timer(k, c);
  c->obj->type->expire(c->obj, c);
  leave(k);
}

void mpx__mcore_free(mpx__mcore_t *k) {
  if (k == NULL) return;
  for (size_t i = 0; i < k->tab_cap; i++)
    while (k->tab[i]) obj_kill(k, k->tab[i]);
  for (pub_t *p = k->pubs, *nx; p; p = nx) {
    nx = p->next;
    free(p->typeid);
    free(p);
  }
  free(k->tab);
  free(k->address);
  mpx_obj_release(k->addr_obj);
  free(k->key);
  free(k);
}
