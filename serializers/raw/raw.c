/* mpx codec "raw": bytes in, the same bytes out.
 *
 * For payloads that are already serialized (an image, a protobuf, a
 * frame from another codec): no header, no framing, no copies beyond the
 * one the caller asks for.
 *
 *   encode: an MPX_OBJ_BYTES only (a str, or anything else, is an
 *           MPX_ECODEC: raw carries no type, so decoding could not give a
 *           str back); one append of its bytes. size_hint is exact.
 *   decode: bytes. With MPX_DECODE_BORROW the object points into the
 *           input (mpx_obj_bytes_external, nothing copied); otherwise one
 *           copy. opts->max_bytes applies (0: 1 GiB).
 *
 * No frame_len: raw does not delimit itself, the transport does. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <mpx.h>



static int raw_encode(const mpx_obj_t *obj, mpx_wbuf_t *out,
                      const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  const void *p;
  size_t n;
  (void)opts;
  if (obj == NULL)
    return mpx_codec_fail(err, SIZE_MAX, "raw encodes bytes only, not NULL");
  if (mpx_obj_type(obj) != MPX_OBJ_BYTES)
    return mpx_codec_fail(err, SIZE_MAX, "raw encodes bytes only, not %s",
                    mpx_obj_type_name(mpx_obj_type(obj)));
  p = mpx_obj_bytes_data(obj, &n);
  if (n == 0) return 0;
  return mpx_wbuf_append(out, p, n);
}

static int raw_decode(const void *data, size_t len,
                      const mpx_decode_opts_t *opts, mpx_obj_t **out,
                      mpx_codec_error_t *err) {
  size_t max = mpx_decode_limits(opts).max_bytes;
  mpx_obj_t *o;
  if (len > max)
    return mpx_codec_fail(err, 0, "%zu bytes, more than max_bytes %zu", len, max);
  if (data == NULL) data = ""; /* len is 0: an empty value */
  if (opts != NULL && (opts->flags & MPX_DECODE_BORROW))
    o = mpx_obj_bytes_external(data, len, NULL, NULL);
  else
    o = mpx_obj_bytes(data, len);
  if (o == NULL) return MPX_ENOMEM;
  *out = o;
  return 0;
}

static size_t raw_size_hint(const mpx_obj_t *obj,
                            const mpx_encode_opts_t *opts) {
  size_t n = 0;
  (void)opts;
  if (obj == NULL || mpx_obj_type(obj) != MPX_OBJ_BYTES) return 0;
  mpx_obj_bytes_data(obj, &n);
  return n;
}

MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER,
    "raw",
    "application/octet-stream",
    "bytes as they are, zero-copy on decode with MPX_DECODE_BORROW",
    raw_encode,
    raw_decode,
    raw_size_hint,
    NULL};
