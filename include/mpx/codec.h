/* mpx: serializer plugins (codecs) and their loader.
 *
 * A codec turns an mpx_obj_t into bytes and back. Each codec is a shared
 * object that exports one descriptor, `const mpx_codec_t
 * mpx_codec_descriptor`, written against the public headers only (see
 * serializers/ for the shipped ones: raw, msgpack, json, pickle). mpx
 * loads codecs by name from its plugin search path or by file path, and
 * checks the descriptor before using it.
 *
 * A minimal codec:
 *
 *   static int enc(const mpx_obj_t *o, mpx_wbuf_t *out,
 *                  const mpx_encode_opts_t *opts, mpx_codec_error_t *err);
 *   static int dec(const void *p, size_t n, const mpx_decode_opts_t *opts,
 *                  mpx_obj_t **out, mpx_codec_error_t *err);
 *   MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
 *     MPX_CODEC_HEADER, "mine", "application/x-mine", "what it is",
 *     enc, dec, NULL, NULL};
 *
 * Build it as a shared object linked with libmpx and name the file
 * mpx_codec_<name>.so.
 *
 * Ownership: a codec from mpx_codec_load is borrowed for the life of the
 * process (never freed); a decoded object (*out) is a new reference; an mpx_wbuf_t
 * is the caller's, ended with mpx_wbuf_free. */
#ifndef MPX_CODEC_H
#define MPX_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include "common.h"
#include "error.h"
#include "obj.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- output buffers ------------------------------------------------------ */

/* Where an encoder writes. Either growable (malloc'd, mpx_wbuf_init) or
 * fixed (the caller's memory, e.g. an arena block: mpx_wbuf_init_fixed),
 * in which case running out of room is MPX_ENOBUFS (size the memory with
 * the codec's size_hint). */
typedef struct mpx_wbuf_s {
  uint8_t *data;
  size_t len; /* bytes written */
  size_t cap; /* bytes available at data */
  int fixed;  /* 1: caller's memory, never reallocated or freed */
} mpx_wbuf_t;

/* Own: b's memory (b->data) is yours: mpx_wbuf_free. */
MPX_API void mpx_wbuf_init(mpx_wbuf_t *b);
/* Own: keeps mem until b is reset or freed; mem stays yours (never freed). */
MPX_API void mpx_wbuf_init_fixed(mpx_wbuf_t *b, void *mem, size_t cap);
/* Make room for n more bytes: 0, MPX_ENOMEM, or MPX_ENOBUFS (fixed). */
MPX_API int mpx_wbuf_reserve(mpx_wbuf_t *b, size_t n);
/* Own: copies p. */
MPX_API int mpx_wbuf_append(mpx_wbuf_t *b, const void *p, size_t n);
/* Forget the contents, keep the memory. */
MPX_API void mpx_wbuf_reset(mpx_wbuf_t *b);
/* Free a growable buffer's memory (no-op for a fixed one). */
MPX_API void mpx_wbuf_free(mpx_wbuf_t *b);

/* ---- the codec ABI ------------------------------------------------------- */

#define MPX_CODEC_MAGIC 0x4358504du /* "MPXC" little-endian */
#define MPX_CODEC_ABI_MAJOR 1       /* changes break old codecs */
#define MPX_CODEC_ABI_MINOR 0       /* additions at the end of the struct */

/* Where a codec failed, for messages like "pickle: byte 17: truncated
 * BINUNICODE". offset: the byte offset in the input (decode), or
 * SIZE_MAX when it does not apply (encode). */
typedef struct {
  size_t offset;
  char msg[160];
} mpx_codec_error_t;

enum {
  /* Decode: the input outlives the result, so str/bytes may point into
   * it instead of being copied (the caller keeps the input alive and
   * unchanged, e.g. by holding the arena block, until it releases the
   * object). */
  MPX_DECODE_BORROW = 1u << 0,
};

typedef struct {
  unsigned flags;     /* MPX_DECODE_* */
  unsigned max_depth; /* nesting; 0: 200 */
  size_t max_items;   /* array/tuple elements plus map entries, in all
                         containers together; 0: 2^24 */
  size_t max_bytes;   /* total str/bytes payload; 0: 1 GiB */
} mpx_decode_opts_t;

typedef struct {
  /* Codec-specific: pickle's protocol (2, 4 or 5; 0: the codec's
   * default); others ignore it. */
  int protocol;
  unsigned flags;
} mpx_encode_opts_t;

typedef struct mpx_codec_s {
  uint32_t magic;       /* MPX_CODEC_MAGIC */
  uint16_t abi_major;   /* MPX_CODEC_ABI_MAJOR the codec was built with */
  uint16_t abi_minor;
  uint32_t struct_size; /* sizeof(mpx_codec_t) the codec was built with */
  const char *name;         /* "msgpack": what mpx_codec_load() finds */
  const char *content_type; /* "application/msgpack" */
  const char *description;
  /* Required. Append the encoding of obj to out. 0, MPX_ECODEC (fill
   * err: e.g. a type the format cannot carry, or nesting deeper than 200,
   * which the shipped encoders refuse), MPX_ENOMEM, MPX_ENOBUFS. */
  int (*encode)(const mpx_obj_t *obj, mpx_wbuf_t *out,
                const mpx_encode_opts_t *opts, mpx_codec_error_t *err);
  /* Required. Decode exactly one value filling data[0..len) (trailing
   * bytes are an error; data may be NULL when len is 0). 0 with *out a
   * new reference, or MPX_ECODEC with err filled (never a crash, whatever
   * the bytes), MPX_ENOMEM. Must honour opts' limits. */
  int (*decode)(const void *data, size_t len, const mpx_decode_opts_t *opts,
                mpx_obj_t **out, mpx_codec_error_t *err);
  /* Optional (NULL). An upper bound on the encoded size, or 0 when the
   * codec cannot tell cheaply. */
  size_t (*size_hint)(const mpx_obj_t *obj, const mpx_encode_opts_t *opts);
  /* Optional (NULL). For formats that delimit themselves: 0 with *need
   * the length of the complete value at the start of data when it is all
   * there (*need <= len), or else a lower bound above len (read at least
   * that much, then ask again); MPX_ECODEC for bytes that cannot start a
   * value. */
  int (*frame_len)(const void *data, size_t len, size_t *need,
                   mpx_codec_error_t *err);
} mpx_codec_t;

/* For codec authors: opts (may be NULL) with every limit left at 0
 * replaced by its default (depth 200, items 2^24, bytes 1 GiB). */
MPX_API mpx_decode_opts_t mpx_decode_limits(const mpx_decode_opts_t *opts);

/* For codec authors: fill err (NULL-safe) with offset and a printf-style
 * message, and return MPX_ECODEC. */
MPX_API int mpx_codec_fail(mpx_codec_error_t *err, size_t offset,
                           const char *fmt, ...) MPX_PRINTF(3, 4);

#define MPX_CODEC_HEADER                                      \
  MPX_CODEC_MAGIC, MPX_CODEC_ABI_MAJOR, MPX_CODEC_ABI_MINOR,  \
      (uint32_t)sizeof(mpx_codec_t)
#define MPX_CODEC_EXPORT __attribute__((visibility("default")))
#define MPX_CODEC_SYMBOL "mpx_codec_descriptor"

/* ---- the loader ---------------------------------------------------------- */

/* Find and load a codec. `name` is either a path (it contains a '/') to a
 * shared object, or a codec name looked up as mpx_codec_<name>.so in, in
 * order: each directory of $MPX_PLUGIN_PATH (':'-separated), the plugins
 * directory next to the libmpx in use (build tree: <build>/plugins;
 * install: <libdir>/mpx/plugins), and the install prefix's plugin
 * directory. Loaded codecs stay loaded; loading one twice returns the
 * same descriptor. Thread-safe.
 *
 * Errors, with mpx_last_error() naming the file and what is wrong:
 * MPX_ENOENT (no such file on the path: the directories tried are
 * listed), MPX_EPLUGIN (not an ELF shared object for this machine, or
 * truncated: a segment past the file's end, found before dlopen, which
 * would die of SIGBUS on it; or dlopen failed: its dlerror text),
 * MPX_ENOSYM (no mpx_codec_descriptor), MPX_EABI (bad magic, other
 * ABI major, struct too small), MPX_EPLUGIN (a required callback or the
 * name is missing, or the name differs from the one asked for).
 * Own: *out is borrowed until the process ends (never unloaded, never
 * freed); borrows name for the call. */
MPX_API int mpx_codec_load(const mpx_codec_t **out, const char *name);

/* Check a descriptor (as the loader does): 0 or MPX_EABI / MPX_EPLUGIN
 * with a message naming `where`. For codecs linked into the program.
 * Own: borrows c and where for the call. */
MPX_API int mpx_codec_check(const mpx_codec_t *c, const char *where);

/* Encode / decode through a codec, turning its error into
 * mpx_last_error() ("json: byte 12: invalid escape"). opts may be NULL.
 * Own: encode borrows obj and appends to out (out stays yours); decode
 * borrows data for the call (until *out is released with
 * MPX_DECODE_BORROW) and *out is yours: mpx_obj_release. */
MPX_API int mpx_codec_encode(const mpx_codec_t *c, const mpx_obj_t *obj,
                             mpx_wbuf_t *out, const mpx_encode_opts_t *opts);
MPX_API int mpx_codec_decode(const mpx_codec_t *c, const void *data,
                             size_t len, const mpx_decode_opts_t *opts,
                             mpx_obj_t **out);

#ifdef __cplusplus
}
#endif
#endif /* MPX_CODEC_H */
