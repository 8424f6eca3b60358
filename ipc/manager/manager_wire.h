/* Internal: the manager protocol's messages as mpx objects, shared by the
 * server (ipc/manager/manager_server.c) and the client (ipc/manager/manager_client.c).
 * Formats are CPython's (mpx/manager.h; the reference's section 2.3). */
#ifndef MPX_IPC_MANAGER_WIRE_H
#define MPX_IPC_MANAGER_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "mpx/codec.h"
#include "mpx/obj.h"

/* How a peer encodes: a codec and, for pickle, the protocol. */
typedef struct {
  const mpx_codec_t *codec;
  int protocol; /* pickle: 2..5; 0 for msgpack */
  /* A Python 2 peer: its names (method, ident, typeid, keywords) come as
   * Python 2 str, which pickle decodes to bytes, and the names and texts
   * the server makes go back to it as str (bytes on our side). */
  bool py2;
} mpx__wire_t;

/* Picks the codec a message came in: "\x80" and a protocol byte 2..5 is
 * pickle at that protocol; a msgpack array of 4 (request) or 2 (reply)
 * is msgpack. Codecs are loaded once (mpx_codec_load). MPX_EPROTO (with
 * mpx_last_error set) for anything else. */
int mpx__wire_sniff(const void *data, size_t len, mpx__wire_t *w);

/* The wire for a codec name ("pickle" / "msgpack") and pickle protocol. */
int mpx__wire_get(mpx__wire_t *w, const char *codec, int protocol);

/* Encodes one message, appending to out. */
int mpx__wire_encode(const mpx__wire_t *w, const mpx_obj_t *msg, mpx_wbuf_t *out);

/* Decodes one message with limits fitting a manager (nesting 100, items
 * 2^20, bytes max_bytes). MPX_ECODEC with the codec's "byte N: ..." in
 * mpx_last_error. */
int mpx__wire_decode(const mpx__wire_t *w, const void *data, size_t len,
                     size_t max_bytes, mpx_obj_t **msg);

/* A name the protocol carries (method, ident, typeid, reply kind): a str,
 * or a Python 2 str (bytes), without NUL; its text or NULL. */
const char *mpx__wire_name(const mpx_obj_t *o);

/* A request from a Python 2 client (its method is bytes) made into what a
 * Python 3 client sends: method, keyword names and the attribute name of
 * __getattribute__ / __setattr__ / __delattr__ become str; the
 * arguments stay as they are (a Python 2 str is bytes). 1 with *req
 * replaced (the old one released), 0 when it is no Python 2 request,
 * MPX_ENOMEM. */
int mpx__wire_py2_request(mpx_obj_t **req);

/* For a Python 2 peer: o (stolen) with every str in it, containers and
 * opaque args and state included, made bytes (Python 2's str). For what
 * the server itself says (names, tracebacks), never for user values.
 * NULL when out of memory. */
mpx_obj_t *mpx__wire_py2_str(mpx_obj_t *o);

/* (ident, method, args, kwds): ident NULL means None; args NULL means
 * (), kwds NULL means {}. The objects passed are retained, not stolen.
 * Returns a new reference or NULL (out of memory). */
mpx_obj_t *mpx__wire_request(const char *ident, const char *method,
                             const mpx_obj_t *args, const mpx_obj_t *kwds);

/* Splits a request. Pointers borrow from req. *ident is NULL for None.
 * args comes back as a tuple or list, kwds as a map (an empty one if the
 * peer sent None). MPX_EPROTO with a reason in mpx_last_error. */
int mpx__wire_request_parse(const mpx_obj_t *req, const char **ident,
                            const char **method, const mpx_obj_t **args,
                            const mpx_obj_t **kwds);

/* (kind, payload), kind "#RETURN" etc.; payload is stolen (NULL: None).
 * New reference or NULL. */
mpx_obj_t *mpx__wire_reply(const char *kind, mpx_obj_t *payload);
/* The same with the kind an object (a str, or the bytes a Python 2 peer
 * gets), stolen too (NULL: fails). */
mpx_obj_t *mpx__wire_reply_obj(mpx_obj_t *kind, mpx_obj_t *payload);

/* Splits a reply; *payload borrows from reply. MPX_EPROTO if malformed. */
int mpx__wire_reply_parse(const mpx_obj_t *reply, const char **kind,
                          const mpx_obj_t **payload);

/* Token(typeid, address, id): the opaque newobj
 * multiprocessing.managers.Token with state (typeid, address, id).
 * address is retained. New reference or NULL. */
mpx_obj_t *mpx__wire_token(const char *typeid, const mpx_obj_t *address,
                           const char *ident);

/* Reads a Token (newobj or reduce form, state or args a 3-tuple).
 * Borrowed pointers; MPX_EPROTO if tok is no Token. */
int mpx__wire_token_parse(const mpx_obj_t *tok, const char **typeid,
                          const mpx_obj_t **address, const char **ident);

/* An exception as CPython pickles one: the opaque reduce module.name
 * with args (msg) or () when msg is NULL. New reference or NULL. */
mpx_obj_t *mpx__wire_exception(const char *module, const char *name,
                               const char *msg);

/* The address as a Token carries it: ("host", port) for "tcp://...", the
 * path str for "unix:...". New reference or NULL. */
mpx_obj_t *mpx__wire_address(const char *address);

#endif /* MPX_IPC_MANAGER_WIRE_H */
