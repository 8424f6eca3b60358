/* The manager client (mpx/manager.h, client half): proxies to objects a
 * manager server owns, over CPython's wire (ipc/manager/manager_wire.h).
 *
 * One persistent connection carries every proxy call: it is opened with
 * the authkey challenge and "accept_connection", after which the server
 * runs its serve_client loop on it. Whether the server is mpx's is found
 * out right then, by sending (None, 'dummy', (), {}) on that connection:
 * an mpx server serves server calls there too and answers #RETURN; a
 * CPython server looks None up as an object id, fails, and answers
 * #TRACEBACK without dropping the connection. Against CPython the server
 * calls (create, decref, number_of_objects, shutdown, ...) then each take
 * a short authenticated connection of their own, as BaseManager does;
 * against mpx they ride the persistent one.
 *
 * A call that runs out of time, or a connection that fails, leaves the
 * persistent connection out of step with its replies: it is closed, and
 * the next call opens a new one. A reply that arrives after its call gave
 * up is lost with the old connection (a queue item a CPython server got
 * for it included), as with a Python proxy interrupted mid-call.
 *
 * The client is reference-counted: every proxy holds it, so a proxy freed
 * after mpx_mclient_free() still sends its decref. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "manager_wire.h"

/* The longest reply accepted (a corrupt or hostile length beyond it is an
 * error, not an allocation). */
#define SPIN_S 100e-6 /* a call waits awake this long for its reply */
#define MAX_REPLY ((size_t)1 << 30)

struct mpx_mclient_s {
  size_t refs;           /* the caller's, plus one per proxy */
  char *address;
  unsigned char *key;
  size_t key_len;
  unsigned flags;        /* MPX_AUTH_* */
  double timeout;        /* per call; < 0: none */
  mpx__wire_t wire;      /* what requests are encoded with */
  mpx__wire_t pickle;    /* the handshake's requests: pickle always */
  bool is_mpx;
  pid_t pid;             /* the process that connected */
  mpx_conn_t *conn;      /* persistent; NULL after a failure */
  mpx_wbuf_t enc;
};

struct mpx_proxy_s {
  mpx_mclient_t *c;
  char *typeid;
  char *ident;
  mpx_obj_t *exposed;    /* tuple or array of str */
};

/* ---- small helpers --------------------------------------------------------- */

static void client_release(mpx_mclient_t *c) {
  if (c == NULL || --c->refs > 0) return;
  mpx_conn_free(c->conn);
  mpx_wbuf_free(&c->enc);
  free(c->address);
  free(c->key);
  free(c);
}

/* A tuple of n new references (stolen); NULL when one is NULL or out of
 * memory. */
static mpx_obj_t *tuple_of(size_t n, ...) {
  va_list ap;
  mpx_obj_t *t = mpx_obj_tuple(n);
  bool ok = t != NULL;
  va_start(ap, n);
  for (size_t i = 0; i < n; i++) {
    mpx_obj_t *o = va_arg(ap, mpx_obj_t *);
    if (o == NULL || !ok) {
      ok = false;
      mpx_obj_release(o);
      continue;
    }
    if (mpx_obj_append(t, o) != 0) ok = false;
  }
  va_end(ap);
  if (!ok) {
    mpx_obj_release(t);
    return NULL;
  }
  return t;
}

/* A str object's text as a C string, or a Python 2 server's str (bytes)
 * (payloads are NUL-terminated by mpx when it made the copy), or NULL. */
static const char *str_of(const mpx_obj_t *o) { return mpx__wire_name(o); }

/* Whether o is the exception module.name (an opaque reduce or newobj).
 * CPython's queue.Empty is the C module's class, pickled as _queue.Empty
 * (queue.Full is queue.Full): "queue" matches both. */
static bool exc_is(const mpx_obj_t *o, const char *module, const char *name) {
  const char *m;
  if (mpx_obj_type(o) != MPX_OBJ_OPAQUE ||
      strcmp(mpx_obj_opaque_name(o), name) != 0)
    return false;
  m = mpx_obj_opaque_module(o);
  return strcmp(m, module) == 0 ||
         (strcmp(module, "queue") == 0 && strcmp(m, "_queue") == 0);
}

/* MPX_EREMOTE, with "who: the remote call raised <rendering>" for
 * mpx_last_error. */
static int remote_err(const char *who, const mpx_obj_t *exc) {
  char buf[512];
  mpx_obj_dump(exc, buf, sizeof buf);
  return mpx__err(MPX_EREMOTE, "%s: the remote call raised %s", who, buf);
}

/* Timeout for a call: the client's limit plus the time the method itself
 * may block (`block` seconds; negative: as long as it likes, so no limit).
 * Negative result: no limit. */
static double call_limit(const mpx_mclient_t *c, double block) {
  if (c->timeout < 0) return -1;
  if (block < 0) return -1;
  return c->timeout + block;
}

/* ---- one round trip ---------------------------------------------------------- */

/* Sends (ident, method, args, kwds) on conn encoded with w and receives
 * the reply: *reply a new reference. Errors leave conn out of step except
 * MPX_ECODEC (the reply frame was consumed whole). */
static int roundtrip(mpx_mclient_t *c, mpx_conn_t *conn, const mpx__wire_t *w,
                     const char *ident, const char *method,
                     const mpx_obj_t *args, const mpx_obj_t *kwds,
                     double limit, mpx_obj_t **reply) {
  mpx_obj_t *req;
  mpx__wire_t rw;
  void *buf = NULL;
  size_t len = 0;
  int rc;

  *reply = NULL;
  if ((req = mpx__wire_request(ident, method, args, kwds)) == NULL)
    return mpx__err(MPX_ENOMEM, "manager client: out of memory");
  mpx_wbuf_reset(&c->enc);
  rc = mpx__wire_encode(w, req, &c->enc);
  mpx_obj_release(req);
  if (rc != 0) return rc;
  if ((rc = mpx_conn_send_bytes(conn, c->enc.data, c->enc.len, limit)) != 0)
    return mpx__err(rc, "manager client: sending %s: %s", method,
                    mpx_strerror(rc));
  /* Most replies come within tens of microseconds. Waiting for them
   * awake keeps this CPU out of its idle state, whose wake-up (about
   * 20 us on a VM, for each side) would cost more than the call. */
  double spin_end = mpx__now() + SPIN_S;
  while (mpx_conn_poll(conn, 0) == MPX_ETIMEDOUT && mpx__now() < spin_end) {
  }
  rc = mpx_conn_recv_bytes(conn, &buf, &len, MAX_REPLY, limit);
  if (rc == MPX_EMSGSIZE)
    return mpx__err(MPX_EPROTO, "manager client: reply of %zu bytes to %s",
                    len, method);
  if (rc == MPX_ETIMEDOUT)
    return mpx__err(rc, "manager client: no reply to %s in time", method);
  if (rc != 0)
    return mpx__err(rc, "manager client: reply to %s: %s (server gone?)",
                    method, mpx_strerror(rc));
  rc = mpx__wire_sniff(buf, len, &rw);
  if (rc == 0) rc = mpx__wire_decode(&rw, buf, len, MAX_REPLY, reply);
  free(buf);
  if (rc == MPX_EPROTO) rc = MPX_ECODEC; /* frame consumed: still in step */
  return rc;
}

/* Opens the persistent connection: challenge, accept_connection, and at
 * the first time the dummy that tells mpx from CPython. */
static int open_persistent(mpx_mclient_t *c, bool detect) {
  static const char who[] = "mpx_mclient_connect";
  mpx_obj_t *args, *reply = NULL;
  const mpx_obj_t *payload;
  const char *kind;
  mpx_conn_t *conn;
  int rc;

  rc = mpx_client(&conn, c->address, c->key, c->key_len, c->flags, c->timeout);
  if (rc != 0) return rc;
  if ((args = tuple_of(1, mpx_obj_str("mpx-client", SIZE_MAX))) == NULL) {
    mpx_conn_free(conn);
    return MPX_ENOMEM;
  }
  rc = roundtrip(c, conn, &c->pickle, NULL, "accept_connection", args, NULL,
                 c->timeout, &reply);
  mpx_obj_release(args);
  if (rc == 0 && (rc = mpx__wire_reply_parse(reply, &kind, &payload)) == 0 &&
      strcmp(kind, "#RETURN") != 0) {
    rc = mpx__err(MPX_EPROTO, "%s: accept_connection answered %s: %s", who,
                  kind, str_of(payload) ? str_of(payload) : "");
  }
  mpx_obj_release(reply);
  reply = NULL;
  if (rc == 0 && detect) {
    rc = roundtrip(c, conn, &c->pickle, NULL, "dummy", NULL, NULL, c->timeout,
                   &reply);
    if (rc == 0 && (rc = mpx__wire_reply_parse(reply, &kind, &payload)) == 0) {
      if (strcmp(kind, "#RETURN") == 0) c->is_mpx = true;
      else if (strcmp(kind, "#TRACEBACK") == 0) c->is_mpx = false;
      else rc = mpx__err(MPX_EPROTO, "%s: dummy answered %s", who, kind);
    }
    mpx_obj_release(reply);
  }
  if (rc != 0) {
    mpx_conn_free(conn);
    return rc;
  }
  c->conn = conn;
  return 0;
}

/* Turns a reply into the call's result (see mpx_proxy_call): *result a
 * new reference, *proxy_payload the payload of a #PROXY (borrowed from
 * reply, which stays the caller's). Messages name the call: the proxy p
 * (NULL: a server call) and method; they are only formatted on errors. */
static int interpret(const mpx_proxy_t *p, const char *method,
                     const mpx_obj_t *reply, mpx_obj_t **result,
                     const mpx_obj_t **proxy_payload) {
  const mpx_obj_t *payload;
  const char *kind;
  char what[256];
  int rc = mpx__wire_reply_parse(reply, &kind, &payload);
  if (rc != 0) return rc;
  if (strcmp(kind, "#RETURN") == 0) {
    if (result != NULL) *result = mpx_obj_retain((mpx_obj_t *)payload);
    return 0;
  }
  if (strcmp(kind, "#PROXY") == 0) {
    *proxy_payload = payload;
    return 0;
  }
  if (p != NULL) snprintf(what, sizeof what, "%s(%s).%s", p->typeid, p->ident, method);
  else snprintf(what, sizeof what, "%s", method);
  if (strcmp(kind, "#ERROR") == 0) {
    rc = remote_err(what, payload);
    if (result != NULL) *result = mpx_obj_retain((mpx_obj_t *)payload);
    return rc;
  }
  if (strcmp(kind, "#TRACEBACK") == 0 || strcmp(kind, "#UNSERIALIZABLE") == 0) {
    const char *text = str_of(payload);
    return mpx__err(MPX_EPROTO, "%s: the server answered %s:\n%s", what, kind,
                    text ? text : "(no text)");
  }
  return mpx__err(MPX_EPROTO, "%s: unknown reply kind '%s'", what, kind);
}

/* A fork child shares the parent's connection: a request from it would
 * interleave with the parent's on the one stream. */
static int check_process(const mpx_mclient_t *c) {
  if (getpid() == c->pid) return 0;
  return mpx__err(MPX_ESTATE, "manager client: connected in process %d, used "
                  "in %d (a fork child connects a client of its own)",
                  (int)c->pid, (int)getpid());
}

/* A round trip on the persistent connection, reopened if a failure
 * closed it. */
static int persistent_call(mpx_mclient_t *c, const char *ident,
                           const char *method, const mpx_obj_t *args,
                           const mpx_obj_t *kwds, double limit,
                           mpx_obj_t **reply) {
  int rc;
  if ((rc = check_process(c)) != 0) return rc;
  if (c->conn == NULL && (rc = open_persistent(c, false)) != 0) return rc;
  rc = roundtrip(c, c->conn, &c->wire, ident, method, args, kwds, limit, reply);
  if (rc != 0 && rc != MPX_ECODEC) {
    mpx_conn_free(c->conn);
    c->conn = NULL;
  }
  return rc;
}

/* A server call (ident None): on the persistent connection for an mpx
 * server, on a connection of its own for CPython. *reply: new ref. */
static int server_roundtrip(mpx_mclient_t *c, const char *method,
                            const mpx_obj_t *args, const mpx_obj_t *kwds,
                            mpx_obj_t **reply) {
  mpx_conn_t *conn;
  int rc;
  if (c->is_mpx)
    return persistent_call(c, NULL, method, args, kwds, c->timeout, reply);
  if ((rc = check_process(c)) != 0) return rc;
  rc = mpx_client(&conn, c->address, c->key, c->key_len, c->flags, c->timeout);
  if (rc != 0) return rc;
  rc = roundtrip(c, conn, &c->pickle, NULL, method, args, kwds, c->timeout,
                 reply);
  mpx_conn_free(conn);
  return rc;
}

/* ---- proxies ----------------------------------------------------------------- */

/* A proxy for (typeid, ident, exposed); it holds the reference the server
 * keeps for it. On failure nothing is sent: the caller decrefs. */
static int proxy_make(mpx_mclient_t *c, const char *typeid, const char *ident,
                      const mpx_obj_t *exposed, mpx_proxy_t **p) {
  mpx_proxy_t *x = calloc(1, sizeof *x);
  if (x == NULL || (x->typeid = strdup(typeid)) == NULL ||
      (x->ident = strdup(ident)) == NULL) {
    if (x != NULL) free(x->typeid);
    free(x);
    return mpx__err(MPX_ENOMEM, "manager client: out of memory");
  }
  x->exposed = mpx_obj_retain((mpx_obj_t *)exposed);
  x->c = c;
  c->refs++;
  *p = x;
  return 0;
}

static void send_decref(mpx_mclient_t *c, const char *ident) {
  mpx_obj_t *args = tuple_of(1, mpx_obj_str(ident, SIZE_MAX)), *reply = NULL;
  if (args == NULL) return;
  if (server_roundtrip(c, "decref", args, NULL, &reply) == 0 && reply != NULL) {
    const mpx_obj_t *payload;
    const char *kind;
    if (mpx__wire_reply_parse(reply, &kind, &payload) == 0 &&
        strcmp(kind, "#RETURN") != 0)
      MPX__DEBUG("manager client: decref %s answered %s", ident, kind);
  }
  mpx_obj_release(reply);
  mpx_obj_release(args);
}

/* A proxy from a #PROXY payload (exposed, Token). */
static int proxy_from_payload(mpx_mclient_t *c, const mpx_obj_t *payload,
                              mpx_proxy_t **p) {
  const char *typeid, *ident;
  const mpx_obj_t *addr, *exposed, *tok;
  int rc;
  if ((mpx_obj_type(payload) != MPX_OBJ_TUPLE &&
       mpx_obj_type(payload) != MPX_OBJ_ARRAY) ||
      mpx_obj_len(payload) != 2)
    return mpx__err(MPX_EPROTO, "manager client: #PROXY payload is no "
                    "(exposed, Token)");
  exposed = mpx_obj_item(payload, 0);
  tok = mpx_obj_item(payload, 1);
  if ((rc = mpx__wire_token_parse(tok, &typeid, &addr, &ident)) != 0) return rc;
  if ((rc = proxy_make(c, typeid, ident, exposed, p)) != 0)
    send_decref(c, ident);
  return rc;
}

/* ---- the client ------------------------------------------------------------------ */

int mpx_mclient_connect(mpx_mclient_t **cp, const char *address,
                        const void *authkey, size_t authkey_len,
                        const mpx_mclient_opts_t *opts) {
  static const char who[] = "mpx_mclient_connect";
  mpx_mclient_opts_t o = {0};
  const char *codec;
  mpx_mclient_t *c;
  int rc;

  if (cp == NULL) return mpx__err(MPX_EINVAL, "%s: NULL output", who);
  *cp = NULL;
  if (opts != NULL) o = *opts;
  if (address == NULL || (authkey == NULL && authkey_len != 0))
    return mpx__err(MPX_EINVAL, "%s: NULL address or authkey", who);
  if (isnan(o.timeout)) return mpx__err(MPX_EINVAL, "%s: NaN timeout", who);
  codec = o.codec != NULL ? o.codec : "pickle";
  if ((c = calloc(1, sizeof *c)) == NULL) return MPX_ENOMEM;
  c->refs = 1;
  c->pid = getpid();
  c->flags = o.flags;
  c->timeout = o.timeout > 0 ? o.timeout : -1;
  mpx_wbuf_init(&c->enc);
  if ((c->address = strdup(address)) == NULL ||
      (authkey != NULL &&
       (c->key = malloc(authkey_len ? authkey_len : 1)) == NULL)) {
    client_release(c);
    return MPX_ENOMEM;
  }
  if (authkey != NULL) memcpy(c->key, authkey, authkey_len);
  c->key_len = authkey_len;
  if ((rc = mpx__wire_get(&c->wire, codec, o.protocol)) != 0 ||
      (rc = mpx__wire_get(&c->pickle, "pickle", o.protocol)) != 0 ||
      (rc = open_persistent(c, true)) != 0) {
    client_release(c);
    return rc;
  }
  if (!c->is_mpx && c->wire.codec != c->pickle.codec) {
    client_release(c);
    return mpx__err(MPX_ENOTSUP, "%s: codec '%s' needs an mpx server; the one "
                    "at %s is CPython's (use pickle)", who, codec, address);
  }
  *cp = c;
  return 0;
}

bool mpx_mclient_is_mpx(const mpx_mclient_t *c) {
  return c != NULL && c->is_mpx;
}

void mpx_mclient_free(mpx_mclient_t *c) {
  client_release(c);
}

int mpx_mclient_server_call(mpx_mclient_t *c, const char *method,
                            const mpx_obj_t *args, mpx_obj_t **result) {
  const mpx_obj_t *pp = NULL;
  mpx_obj_t *reply = NULL;
  int rc;
  if (result != NULL) *result = NULL;
  if (c == NULL || method == NULL)
    return mpx__err(MPX_EINVAL, "mpx_mclient_server_call: NULL argument");
  if ((rc = server_roundtrip(c, method, args, NULL, &reply)) != 0) return rc;
  rc = interpret(NULL, method, reply, result, &pp);
  if (rc == 0 && pp != NULL)
    rc = mpx__err(MPX_EPROTO, "%s: unexpected #PROXY reply", method);
  mpx_obj_release(reply);
  return rc;
}

int mpx_mclient_create(mpx_mclient_t *c, mpx_proxy_t **p, const char *typeid,
                       const mpx_obj_t *args, const mpx_obj_t *kwds) {
  static const char who[] = "mpx_mclient_create";
  mpx_obj_t *cargs, *res = NULL, *reply = NULL;
  const mpx_obj_t *pp = NULL, *ident, *exposed;
  int rc;

  if (p != NULL) *p = NULL;
  if (c == NULL || p == NULL || typeid == NULL)
    return mpx__err(MPX_EINVAL, "%s: NULL argument", who);
  if (args != NULL && mpx_obj_type(args) != MPX_OBJ_TUPLE &&
      mpx_obj_type(args) != MPX_OBJ_ARRAY)
    return mpx__err(MPX_EINVAL, "%s: args must be a tuple", who);
  if (kwds != NULL && mpx_obj_type(kwds) != MPX_OBJ_MAP)
    return mpx__err(MPX_EINVAL, "%s: kwds must be a map", who);
  /* create(typeid, *args, **kwds) */
  if ((cargs = mpx_obj_tuple(1 + mpx_obj_len(args))) == NULL ||
      mpx_obj_append(cargs, mpx_obj_str(typeid, SIZE_MAX)) != 0) {
    mpx_obj_release(cargs);
    return MPX_ENOMEM;
  }
  for (size_t i = 0; args != NULL && i < mpx_obj_len(args); i++)
    if (mpx_obj_append(cargs, mpx_obj_retain(mpx_obj_item(args, i))) != 0) {
      mpx_obj_release(cargs);
      return MPX_ENOMEM;
    }
  rc = server_roundtrip(c, "create", cargs, kwds, &reply);
  mpx_obj_release(cargs);
  if (rc != 0) return rc;
  rc = interpret(NULL, "create", reply, &res, &pp);
  mpx_obj_release(reply);
  if (rc == MPX_EREMOTE) mpx_obj_release(res);
  if (rc != 0) return rc;
  if (res == NULL ||
      (mpx_obj_type(res) != MPX_OBJ_TUPLE && mpx_obj_type(res) != MPX_OBJ_ARRAY) ||
      mpx_obj_len(res) != 2 || str_of(mpx_obj_item(res, 0)) == NULL) {
    mpx_obj_release(res);
    return mpx__err(MPX_EPROTO, "%s: create answered no (ident, exposed)", who);
  }
  ident = mpx_obj_item(res, 0);
  exposed = mpx_obj_item(res, 1);
  if ((rc = proxy_make(c, typeid, str_of(ident), exposed, p)) != 0)
    send_decref(c, str_of(ident));
  mpx_obj_release(res);
  return rc;
}

/* ---- proxy calls --------------------------------------------------------------- */

void mpx_proxy_free(mpx_proxy_t *p) {
  if (p == NULL) return;
  /* In a fork child the reference is the parent's to drop. */
  if (getpid() == p->c->pid) send_decref(p->c, p->ident);
  client_release(p->c);
  mpx_obj_release(p->exposed);
  free(p->typeid);
  free(p->ident);
  free(p);
}

const char *mpx_proxy_typeid(const mpx_proxy_t *p) {
  return p != NULL ? p->typeid : NULL;
}

const char *mpx_proxy_ident(const mpx_proxy_t *p) {
  return p != NULL ? p->ident : NULL;
}

bool mpx_proxy_exposes(const mpx_proxy_t *p, const char *method) {
  if (p == NULL || method == NULL) return false;
  for (size_t i = 0; i < mpx_obj_len(p->exposed); i++) {
    const char *s = str_of(mpx_obj_item(p->exposed, i));
    if (s != NULL && strcmp(s, method) == 0) return true;
  }
  return false;
}

/* mpx_proxy_call with the time the method itself may block. */
static int proxy_call_block(mpx_proxy_t *p, const char *method,
                            const mpx_obj_t *args, const mpx_obj_t *kwds,
                            double block, mpx_obj_t **result,
                            mpx_proxy_t **proxy_result) {
  const mpx_obj_t *pp = NULL;
  mpx_obj_t *reply = NULL;
  int rc;

  if (result != NULL) *result = NULL;
  if (proxy_result != NULL) *proxy_result = NULL;
  if (p == NULL || method == NULL)
    return mpx__err(MPX_EINVAL, "mpx_proxy_call: NULL argument");
  if (args != NULL && mpx_obj_type(args) != MPX_OBJ_TUPLE &&
      mpx_obj_type(args) != MPX_OBJ_ARRAY)
    return mpx__err(MPX_EINVAL, "mpx_proxy_call: args must be a tuple");
  if (kwds != NULL && mpx_obj_type(kwds) != MPX_OBJ_MAP)
    return mpx__err(MPX_EINVAL, "mpx_proxy_call: kwds must be a map");
  rc = persistent_call(p->c, p->ident, method, args, kwds,
                       call_limit(p->c, block), &reply);
  if (rc != 0) return rc;
  rc = interpret(p, method, reply, result, &pp);
  if (rc == 0 && pp != NULL) {
    mpx_proxy_t *np = NULL;
    rc = proxy_from_payload(p->c, pp, &np);
    if (rc == 0 && proxy_result != NULL) *proxy_result = np;
    else mpx_proxy_free(np);
  }
  mpx_obj_release(reply);
  return rc;
}

int mpx_proxy_call(mpx_proxy_t *p, const char *method, const mpx_obj_t *args,
                   const mpx_obj_t *kwds, mpx_obj_t **result,
                   mpx_proxy_t **proxy_result) {
  return proxy_call_block(p, method, args, kwds, 0, result, proxy_result);
}

/* A typed call: args stolen (NULL: none). On MPX_EREMOTE the exception
 * goes to *exc when exc is non-NULL (else it is released). */
static int typed(mpx_proxy_t *p, const char *method, mpx_obj_t *args,
                 double block, mpx_obj_t **result, mpx_obj_t **exc) {
  mpx_obj_t *res = NULL;
  int rc;
  if (exc != NULL) *exc = NULL;
  if (p == NULL) {
    mpx_obj_release(args);
    return mpx__err(MPX_EINVAL, "manager proxy: NULL proxy");
  }
  rc = proxy_call_block(p, method, args, NULL, block, &res, NULL);
  mpx_obj_release(args);
  if (rc == MPX_EREMOTE) {
    if (exc != NULL) *exc = res;
    else mpx_obj_release(res);
    return rc;
  }
  if (rc != 0) {
    mpx_obj_release(res);
    return rc;
  }
  if (result != NULL) *result = res;
  else mpx_obj_release(res);
  return 0;
}

/* A typed call whose remote exception `module.name` means code `as`. */
static int typed_mapped(mpx_proxy_t *p, const char *method, mpx_obj_t *args,
                        double block, mpx_obj_t **result, const char *module,
                        const char *name, int as) {
  mpx_obj_t *exc = NULL;
  int rc = typed(p, method, args, block, result, &exc);
  if (rc == MPX_EREMOTE && exc_is(exc, module, name)) {
    char buf[256];
    mpx_obj_dump(exc, buf, sizeof buf);
    rc = mpx__err(as, "%s(%s).%s: %s", p->typeid, p->ident, method, buf);
  }
  mpx_obj_release(exc);
  return rc;
}

/* Python's (block, timeout) pair for a timeout in seconds: < 0 blocks
 * without limit, 0 does not block, > 0 blocks that long. NULL: no memory
 * or NaN (mpx_last_error says which). */
static mpx_obj_t *block_args(mpx_obj_t *first, double timeout) {
  if (isnan(timeout)) {
    mpx_obj_release(first);
    mpx__err(MPX_EINVAL, "manager proxy: NaN timeout");
    return NULL;
  }
  if (timeout < 0 || timeout > 1e9)
    return first ? tuple_of(2, first, mpx_obj_bool(1)) : tuple_of(1, mpx_obj_bool(1));
  if (timeout == 0)
    return first ? tuple_of(2, first, mpx_obj_bool(0)) : tuple_of(1, mpx_obj_bool(0));
  return first ? tuple_of(3, first, mpx_obj_bool(1), mpx_obj_float(timeout))
               : tuple_of(2, mpx_obj_bool(1), mpx_obj_float(timeout));
}

static int oom(void) {
  return mpx__err(MPX_ENOMEM, "manager proxy: out of memory");
}

/* The args of a call with the one value x (retained): 0, MPX_EINVAL (the
 * message `null`) when x is NULL, or MPX_ENOMEM. */
static int one_arg(const mpx_obj_t *x, const char *null, mpx_obj_t **args) {
  if (x == NULL) return mpx__err(MPX_EINVAL, "%s", null);
  if ((*args = tuple_of(1, mpx_obj_retain((mpx_obj_t *)x))) == NULL)
    return oom();
  return 0;
}

static int to_size(mpx_obj_t *res, size_t *n, const char *what) {
  int ok = mpx_obj_type(res) == MPX_OBJ_INT && mpx_obj_get_int(res) >= 0;
  if (ok && n != NULL) *n = (size_t)mpx_obj_get_int(res);
  mpx_obj_release(res);
  return ok ? 0 : mpx__err(MPX_EPROTO, "%s: the server returned no count", what);
}

static int to_bool(mpx_obj_t *res, bool *b, const char *what) {
  int t = mpx_obj_type(res);
  int ok = t == MPX_OBJ_BOOL || t == MPX_OBJ_INT;
  if (ok && b != NULL)
    *b = t == MPX_OBJ_BOOL ? mpx_obj_get_bool(res) != 0 : mpx_obj_get_int(res) != 0;
  mpx_obj_release(res);
  return ok ? 0 : mpx__err(MPX_EPROTO, "%s: the server returned no bool", what);
}

static double block_of(double timeout) {
  return timeout < 0 || timeout > 1e9 ? -1 : timeout;
}

int mpx_proxy_queue_put(mpx_proxy_t *q, const mpx_obj_t *item, double timeout) {
  mpx_obj_t *args;
  if (item == NULL) return mpx__err(MPX_EINVAL, "queue put: NULL item");
  args = block_args(mpx_obj_retain((mpx_obj_t *)item), timeout);
  if (args == NULL) return isnan(timeout) ? MPX_EINVAL : oom();
  return typed_mapped(q, "put", args, block_of(timeout), NULL, "queue", "Full",
                      MPX_EAGAIN);
}

int mpx_proxy_queue_get(mpx_proxy_t *q, mpx_obj_t **item, double timeout) {
  mpx_obj_t *args;
  if (item != NULL) *item = NULL;
  args = block_args(NULL, timeout);
  if (args == NULL) return isnan(timeout) ? MPX_EINVAL : oom();
  return typed_mapped(q, "get", args, block_of(timeout), item, "queue", "Empty",
                      MPX_EAGAIN);
}

int mpx_proxy_queue_qsize(mpx_proxy_t *q, size_t *n) {
  mpx_obj_t *res = NULL;
  int rc = typed(q, "qsize", NULL, 0, &res, NULL);
  return rc != 0 ? rc : to_size(res, n, "queue qsize");
}

int mpx_proxy_queue_task_done(mpx_proxy_t *q) {
  return typed(q, "task_done", NULL, 0, NULL, NULL);
}

int mpx_proxy_queue_join(mpx_proxy_t *q) {
  return typed(q, "join", NULL, -1, NULL, NULL);
}

int mpx_proxy_dict_set(mpx_proxy_t *d, const mpx_obj_t *key,
                       const mpx_obj_t *val) {
  mpx_obj_t *args;
  if (key == NULL || val == NULL)
    return mpx__err(MPX_EINVAL, "dict set: NULL key or value");
  args = tuple_of(2, mpx_obj_retain((mpx_obj_t *)key),
                  mpx_obj_retain((mpx_obj_t *)val));
  if (args == NULL) return oom();
  return typed(d, "__setitem__", args, 0, NULL, NULL);
}

int mpx_proxy_dict_get(mpx_proxy_t *d, const mpx_obj_t *key, mpx_obj_t **val) {
  mpx_obj_t *args;
  int rc;
  if (val != NULL) *val = NULL;
  if ((rc = one_arg(key, "dict get: NULL key", &args)) != 0) return rc;
  return typed_mapped(d, "__getitem__", args, 0, val, "builtins", "KeyError",
                      MPX_ENOENT);
}

int mpx_proxy_dict_del(mpx_proxy_t *d, const mpx_obj_t *key) {
  mpx_obj_t *args;
  int rc;
  if ((rc = one_arg(key, "dict del: NULL key", &args)) != 0) return rc;
  return typed_mapped(d, "__delitem__", args, 0, NULL, "builtins", "KeyError",
                      MPX_ENOENT);
}

int mpx_proxy_dict_keys(mpx_proxy_t *d, mpx_obj_t **keys) {
  mpx_obj_t *res = NULL;
  int rc;
  if (keys != NULL) *keys = NULL;
  if ((rc = typed(d, "keys", NULL, 0, &res, NULL)) != 0) return rc;
  /* CPython pickles a dict view as builtins.list(<the items>) (the
   * reducer multiprocessing.managers registers): unwrap it. */
  if (exc_is(res, "builtins", "list")) {
    const mpx_obj_t *a = mpx_obj_opaque_args(res);
    if (a != NULL && mpx_obj_len(a) == 1 &&
        mpx_obj_type(mpx_obj_item(a, 0)) == MPX_OBJ_ARRAY) {
      mpx_obj_t *list = mpx_obj_retain(mpx_obj_item(a, 0));
      mpx_obj_release(res);
      res = list;
    }
  }
  if (mpx_obj_type(res) != MPX_OBJ_ARRAY && mpx_obj_type(res) != MPX_OBJ_TUPLE) {
    mpx_obj_release(res);
    return mpx__err(MPX_EPROTO, "dict keys: the server returned no list");
  }
  if (keys != NULL) *keys = res;
  else mpx_obj_release(res);
  return 0;
}

int mpx_proxy_len(mpx_proxy_t *p, size_t *n) {
  mpx_obj_t *res = NULL;
  int rc = typed(p, "__len__", NULL, 0, &res, NULL);
  return rc != 0 ? rc : to_size(res, n, "__len__");
}

int mpx_proxy_list_append(mpx_proxy_t *l, const mpx_obj_t *item) {
  mpx_obj_t *args;
  int rc;
  if ((rc = one_arg(item, "list append: NULL item", &args)) != 0) return rc;
  return typed(l, "append", args, 0, NULL, NULL);
}

int mpx_proxy_list_get(mpx_proxy_t *l, int64_t i, mpx_obj_t **item) {
  mpx_obj_t *args;
  if (item != NULL) *item = NULL;
  if ((args = tuple_of(1, mpx_obj_int(i))) == NULL) return oom();
  return typed_mapped(l, "__getitem__", args, 0, item, "builtins",
                      "IndexError", MPX_ERANGE);
}

int mpx_proxy_value_get(mpx_proxy_t *v, mpx_obj_t **val) {
  if (val != NULL) *val = NULL;
  return typed(v, "get", NULL, 0, val, NULL);
}

int mpx_proxy_value_set(mpx_proxy_t *v, const mpx_obj_t *val) {
  mpx_obj_t *args;
  int rc;
  if ((rc = one_arg(val, "value set: NULL value", &args)) != 0) return rc;
  return typed(v, "set", args, 0, NULL, NULL);
}

int mpx_proxy_lock_acquire(mpx_proxy_t *lk, double timeout) {
  mpx_obj_t *args, *res = NULL;
  bool got = false;
  int rc;
  if ((args = block_args(NULL, timeout)) == NULL)
    return isnan(timeout) ? MPX_EINVAL : oom();
  if ((rc = typed(lk, "acquire", args, block_of(timeout), &res, NULL)) != 0)
    return rc;
  if ((rc = to_bool(res, &got, "acquire")) != 0) return rc;
  return got ? 0 : mpx__err(MPX_ETIMEDOUT, "acquire: not acquired in time");
}

int mpx_proxy_lock_release(mpx_proxy_t *lk) {
  return typed(lk, "release", NULL, 0, NULL, NULL);
}

int mpx_proxy_event_set(mpx_proxy_t *e) {
  return typed(e, "set", NULL, 0, NULL, NULL);
}

int mpx_proxy_event_clear(mpx_proxy_t *e) {
  return typed(e, "clear", NULL, 0, NULL, NULL);
}

int mpx_proxy_event_wait(mpx_proxy_t *e, double timeout) {
  mpx_obj_t *args, *res = NULL;
  bool set = false;
  int rc;
  if (isnan(timeout)) return mpx__err(MPX_EINVAL, "event wait: NaN timeout");
  /* Event.wait(timeout=None) */
  if (timeout < 0 || timeout > 1e9) args = mpx_obj_tuple(0);
  else args = tuple_of(1, mpx_obj_float(timeout));
  if (args == NULL) return oom();
  if ((rc = typed(e, "wait", args, block_of(timeout), &res, NULL)) != 0)
    return rc;
  if ((rc = to_bool(res, &set, "event wait")) != 0) return rc;
  return set ? 0 : mpx__err(MPX_ETIMEDOUT, "event wait: not set in time");
}

int mpx_proxy_event_is_set(mpx_proxy_t *e, bool *set) {
  mpx_obj_t *res = NULL;
  int rc = typed(e, "is_set", NULL, 0, &res, NULL);
  return rc != 0 ? rc : to_bool(res, set, "event is_set");
}
