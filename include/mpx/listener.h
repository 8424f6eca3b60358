/* mpx: listeners and clients with Python's authkey challenge, after
 * multiprocessing.connection.Listener / Client.
 *
 *   mpx_listener_t *l;
 *   mpx_listener_new(&l, "tcp://127.0.0.1:0", "secret", 6, NULL);
 *   printf("%s\n", mpx_listener_address(l));   // tcp://127.0.0.1:41235
 *   mpx_conn_t *c;
 *   int rc = mpx_listener_accept(l, &c, -1);    // MPX_EAUTH: a wrong key
 *
 *   mpx_conn_t *c;                              // in another process
 *   mpx_client(&c, "tcp://127.0.0.1:41235", "secret", 6, 0, 5.0);
 *
 * Addresses: "tcp://HOST:PORT" (HOST a name or an IPv4/IPv6 literal,
 * "[::1]" for IPv6; PORT 0 picks a free port), "unix:PATH" (a path on
 * the file system), "unix:@NAME" (Linux abstract namespace). A listener
 * binds 127.0.0.1 unless told otherwise ("tcp://:PORT" is the loopback
 * too): "tcp://0.0.0.0:PORT" is the explicit way to listen on every
 * interface. A malformed address is MPX_EINVAL, a path or name too long
 * for a sockaddr_un MPX_ENAMETOOLONG, a host name that does not resolve
 * MPX_EADDRNOTAVAIL; mpx_last_error() says which.
 *
 * The challenge is mutual and byte-for-byte CPython's
 * (multiprocessing.connection.deliver_challenge / answer_challenge): the
 * accepting side challenges first, then answers; the connecting side
 * answers, then challenges. Each challenge is "#CHALLENGE#" and a random
 * nonce; each answer an HMAC of it under the authkey (OpenSSL libcrypto).
 * Two forms, both accepted on receipt:
 *   - current (CPython 3.12+, mpx's default): "#CHALLENGE#{sha256}" and 40
 *     random bytes; the answer is "{sha256}" and HMAC-SHA256 over
 *     everything after "#CHALLENGE#"; md5, sha384, sha3_256 and sha3_384
 *     are accepted in the braces too;
 *   - legacy (CPython 3.11 and older): 20 random bytes, a bare 16-byte
 *     HMAC-MD5. A 3.11 peer answers a current challenge in this form; mpx
 *     accepts it, as CPython 3.12 does.
 * Digests are compared in constant time (CRYPTO_memcmp). A failed
 * challenge sends "#FAILURE#", closes the connection and returns
 * MPX_EAUTH on the side that noticed; the other side sees "#FAILURE#" (or
 * the closed connection) and returns MPX_EAUTH too. A handshake message
 * longer than 256 bytes is MPX_EAUTH (CPython's limit). A peer that hangs
 * up before its part of the handshake is MPX_EPIPE, one that goes quiet
 * MPX_ETIMEDOUT.
 *
 * A NULL authkey (length 0) skips the handshake, as Python's authkey=None
 * does for Listener and Client; a non-NULL key of length 0 is Python's
 * b'': a handshake with the empty key. A manager server always requires
 * a key.
 *
 * Ownership: a listener (mpx_listener_new) is the caller's, ended with
 * mpx_listener_free; a connection from mpx_listener_accept is the
 * caller's (mpx_conn_free). */
#ifndef MPX_LISTENER_H
#define MPX_LISTENER_H

#include <stddef.h>

#include "mpx/common.h"
#include "mpx/conn.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct mpx_listener_s mpx_listener_t;

/* Flags for the challenge this side sends. */
enum {
  MPX_AUTH_LEGACY = 1 /* a 20-byte nonce, HMAC-MD5: what CPython 3.11 sends */
};

typedef struct {
  int backlog;     /* listen(2) backlog; 0: 128 */
  unsigned flags;  /* MPX_AUTH_* for the challenges this side sends */
} mpx_listener_opts_t;

/* Binds and listens on `address`. A "unix:PATH" whose socket file exists
 * and accepts no connection (left by a dead listener) is replaced; one
 * that a live listener holds, or a file that is no socket, is
 * MPX_EADDRINUSE (and left alone). The key is copied. opts may be NULL.
 * On success *l is the caller's, to free with mpx_listener_free().
 * Own: *l is yours: mpx_listener_free; copies address and authkey. */
MPX_API int mpx_listener_new(mpx_listener_t **l, const char *address,
                             const void *authkey, size_t authkey_len,
                             const mpx_listener_opts_t *opts);

/* The address actually bound, in the same syntax ("tcp://127.0.0.1:41235"
 * when port 0 was asked for). Owned by the listener.
 * Own: returns a string borrowed until mpx_listener_free. */
MPX_API const char *mpx_listener_address(const mpx_listener_t *l);

/* The listening socket, for a poll loop: readable when accept would not
 * block. Owned by the listener.
 * Own: the descriptor is borrowed until mpx_listener_free. */
MPX_API int mpx_listener_fileno(const mpx_listener_t *l);

/* Accepts one connection and runs the challenge on it (the wait for a
 * peer, then each step of the handshake, within `timeout` seconds;
 * negative waits forever; 0 does not wait for a peer, and then gives a
 * waiting one 5 s per step). On success *c is the caller's. On any
 * failure the peer's connection is closed and the listener goes on
 * serving others: MPX_EAUTH, the peer failed (or refused) the challenge;
 * MPX_EPIPE, it hung up mid-handshake; MPX_ETIMEDOUT, no peer, or the
 * peer went quiet mid-handshake.
 * Own: *c is yours: mpx_conn_free. */
MPX_API int mpx_listener_accept(mpx_listener_t *l, mpx_conn_t **c,
                                double timeout);

/* Closes the socket and, for "unix:PATH", removes the file: only in the
 * process that created the listener (a fork child freeing its copy
 * leaves it) and only if it is still the file this listener bound. NULL
 * is a no-op. */
MPX_API void mpx_listener_free(mpx_listener_t *l);

/* Connects to `address` and answers, then sends, the challenge; the
 * connect and each handshake step within `timeout` seconds (negative:
 * forever). On success *c is the caller's. MPX_ECONNREFUSED: nobody
 * listens (a "unix:PATH" that does not exist too); MPX_EAUTH: wrong key
 * on either side; MPX_EPIPE: the server hung up before its challenge;
 * MPX_ETIMEDOUT. flags: MPX_AUTH_* for the challenge this side sends.
 * Own: *c is yours: mpx_conn_free; borrows address and authkey for the
 * call. */
MPX_API int mpx_client(mpx_conn_t **c, const char *address,
                       const void *authkey, size_t authkey_len,
                       unsigned flags, double timeout);

/* The two halves, for a connection made some other way (CPython's
 * deliver_challenge / answer_challenge). 0 or MPX_EAUTH (the connection
 * is then closed: later calls on it return MPX_ECLOSED; free it as
 * usual), or the connection's error (MPX_EPIPE, MPX_ETIMEDOUT). The
 * connection stays the caller's.
 * Own: borrows c and authkey for the call. */
MPX_API int mpx_conn_deliver_challenge(mpx_conn_t *c, const void *authkey,
                                       size_t authkey_len, unsigned flags,
                                       double timeout);
MPX_API int mpx_conn_answer_challenge(mpx_conn_t *c, const void *authkey,
                                      size_t authkey_len, double timeout);

#ifdef __cplusplus
}
#endif
#endif /* MPX_LISTENER_H */
