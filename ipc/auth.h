/* Internal: the authkey challenge as pure functions, no I/O, so the
 * blocking listener/client (ipc/listener.c) and the manager server's
 * event loop (ipc/manager/manager_server.c) run the same code. Message formats
 * are in mpx/listener.h. */
#ifndef MPX_IPC_AUTH_H
#define MPX_IPC_AUTH_H

#include <stddef.h>

#define MPX__AUTH_CHALLENGE "#CHALLENGE#"
#define MPX__AUTH_WELCOME "#WELCOME#"
#define MPX__AUTH_FAILURE "#FAILURE#"
#define MPX__AUTH_MAX_MSG 256 /* CPython's maxlength for handshake messages */
#define MPX__AUTH_ANSWER_MAX 80 /* "{sha3_384}" + 48 bytes, with room */

/* A challenge this side sent: everything after "#CHALLENGE#", kept to
 * verify the answer. */
typedef struct {
  unsigned char m[64];
  size_t m_len;
} mpx__challenge_t;

/* Fills *ch with a fresh nonce (getrandom) and writes the whole challenge
 * message to out (cap >= 11 + 64). flags: MPX_AUTH_LEGACY for the 20-byte
 * MD5 form. Returns 0 or MPX_EIO (no randomness). */
int mpx__auth_challenge(mpx__challenge_t *ch, unsigned flags,
                        unsigned char *out, size_t cap, size_t *out_len);

/* Checks an answer to *ch: a bare 16-byte HMAC-MD5 or "{name}" and the
 * HMAC named, over ch->m. 0, or MPX_EAUTH (compared in constant time). */
int mpx__auth_verify(const mpx__challenge_t *ch, const void *key,
                     size_t key_len, const void *answer, size_t len);

/* Answers a received challenge message (with its "#CHALLENGE#" prefix)
 * into out (cap >= MPX__AUTH_ANSWER_MAX). MPX_EAUTH for a message that is
 * no challenge (no prefix, shorter than 20 bytes after it, an unknown
 * digest name). */
int mpx__auth_answer(const void *key, size_t key_len, const void *msg,
                     size_t len, unsigned char *out, size_t cap,
                     size_t *out_len);

#endif /* MPX_IPC_AUTH_H */
