/* The authkey challenge of multiprocessing.connection as pure functions
 * (no I/O): the message formats are in mpx/listener.h, the contract in
 * ipc/auth.h. HMACs come from OpenSSL's libcrypto, nonces from
 * getrandom(2). */
#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "internal.h"
#include "auth.h"

#define PREFIX_LEN (sizeof MPX__AUTH_CHALLENGE - 1) /* 11 */
#define LEGACY_NONCE 20   /* CPython 3.11's MESSAGE_LENGTH */
#define CURRENT_NONCE 40  /* CPython 3.12's MESSAGE_LENGTH */
#define MD5_LEN 16
#define NAME_MAX_LEN 8    /* the longest allowed name: "sha3_384" */

/* The digests CPython 3.12+ accepts in "{name}". */
static const EVP_MD *digest_by_name(const char *name, size_t len) {
  if (len == 3 && memcmp(name, "md5", 3) == 0) return EVP_md5();
  if (len == 6 && memcmp(name, "sha256", 6) == 0) return EVP_sha256();
  if (len == 6 && memcmp(name, "sha384", 6) == 0) return EVP_sha384();
  if (len == 8 && memcmp(name, "sha3_256", 8) == 0) return EVP_sha3_256();
  if (len == 8 && memcmp(name, "sha3_384", 8) == 0) return EVP_sha3_384();
  return NULL;
}

/* Splits "{name}rest": the digest and where rest starts, or NULL when
 * the message carries no allowed prefix. */
static const EVP_MD *parse_prefix(const unsigned char *m, size_t len,
                                  size_t *skip) {
  if (len < 2 || m[0] != '{') return NULL;
  for (size_t i = 1; i < len && i <= NAME_MAX_LEN + 1; i++) {
    if (m[i] != '}') continue;
    const EVP_MD *md = digest_by_name((const char *)m + 1, i - 1);
    if (md != NULL) *skip = i + 1;
    return md;
  }
  return NULL;
}

/* HMAC(md, key, data) into out (room for EVP_MAX_MD_SIZE): its length,
 * or 0 when libcrypto refuses (MD5 in FIPS mode, say). */
static unsigned hmac(const EVP_MD *md, const void *key, size_t key_len,
                     const void *data, size_t len, unsigned char *out) {
  static const unsigned char empty[1];
  unsigned n = 0;
  /* A NULL key would mean "reuse the previous one" to OpenSSL. */
  if (key == NULL || key_len == 0) key = empty, key_len = 0;
  if (key_len > (size_t)INT32_MAX) return 0;
  if (HMAC(md, key, (int)key_len, data, len, out, &n) == NULL) return 0;
  return n;
}

int mpx__auth_challenge(mpx__challenge_t *ch, unsigned flags,
                        unsigned char *out, size_t cap, size_t *out_len) {
  size_t nonce, head = 0;
  if (cap < PREFIX_LEN + sizeof ch->m)
    return mpx__err(MPX_EINVAL, "auth: challenge buffer of %zu bytes", cap);
  if (flags & MPX_AUTH_LEGACY) {
    nonce = LEGACY_NONCE;
  } else {
    memcpy(ch->m, "{sha256}", 8);
    head = 8;
    nonce = CURRENT_NONCE;
  }
  for (size_t got = 0; got < nonce;) {
    ssize_t k = getrandom(ch->m + head + got, nonce - got, 0);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) return mpx__err(MPX_EIO, "auth: getrandom: %s", strerror(errno));
    got += (size_t)k;
  }
  ch->m_len = head + nonce;
  memcpy(out, MPX__AUTH_CHALLENGE, PREFIX_LEN);
  memcpy(out + PREFIX_LEN, ch->m, ch->m_len);
  *out_len = PREFIX_LEN + ch->m_len;
  return 0;
}

int mpx__auth_verify(const mpx__challenge_t *ch, const void *key,
                     size_t key_len, const void *answer, size_t len) {
  const unsigned char *a = answer;
  const EVP_MD *md;
  unsigned char want[EVP_MAX_MD_SIZE];
  size_t skip = 0;
  unsigned n;

  /* A bare 16 bytes is CPython 3.11's HMAC-MD5, whatever the challenge
   * looked like (it answers a "{sha256}" one that way too). */
  if (len == MD5_LEN) {
    md = EVP_md5();
  } else if ((md = parse_prefix(a, len, &skip)) == NULL) {
    return mpx__err(MPX_EAUTH,
                    "auth: answer of %zu bytes is neither HMAC-MD5 nor "
                    "{digest}-prefixed", len);
  }
  n = hmac(md, key, key_len, ch->m, ch->m_len, want);
  if (n == 0)
    return mpx__err(MPX_EAUTH, "auth: libcrypto cannot compute HMAC-%s",
                    EVP_MD_get0_name(md));
  if (len - skip != n || CRYPTO_memcmp(want, a + skip, n) != 0)
    return mpx__err(MPX_EAUTH, "auth: digest does not match (wrong authkey?)");
  return 0;
}

int mpx__auth_answer(const void *key, size_t key_len, const void *msg,
                     size_t len, unsigned char *out, size_t cap,
                     size_t *out_len) {
  const unsigned char *m = msg;
  const EVP_MD *md;
  size_t skip = 0, head = 0;
  unsigned n;

  if (len < PREFIX_LEN || memcmp(m, MPX__AUTH_CHALLENGE, PREFIX_LEN) != 0)
    return mpx__err(MPX_EAUTH, "auth: expected a #CHALLENGE# message (got %zu "
                               "bytes without the prefix)", len);
  m += PREFIX_LEN;
  len -= PREFIX_LEN;
  if (len < LEGACY_NONCE)
    return mpx__err(MPX_EAUTH, "auth: challenge of %zu bytes is too short", len);
  if (cap < MPX__AUTH_ANSWER_MAX)
    return mpx__err(MPX_EINVAL, "auth: answer buffer of %zu bytes", cap);
  /* 20 bytes: a legacy nonce, answered with a bare HMAC-MD5 over it.
   * Anything else names its digest, and the answer names it back; the
   * MAC covers the prefix too, so it cannot be downgraded. */
  if (len == LEGACY_NONCE) {
    md = EVP_md5();
  } else {
    if ((md = parse_prefix(m, len, &skip)) == NULL)
      return mpx__err(MPX_EAUTH, "auth: challenge names no supported digest");
    memcpy(out, m, skip);
    head = skip;
  }
  n = hmac(md, key, key_len, m, len, out + head);
  if (n == 0)
    return mpx__err(MPX_EAUTH, "auth: libcrypto cannot compute HMAC-%s",
                    EVP_MD_get0_name(md));
  *out_len = head + n;
  return 0;
}
