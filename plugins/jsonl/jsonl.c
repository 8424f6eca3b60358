/* jsonl: a sink that writes each item as one JSON object per line to the
 * file `path`:
 *
 *   {"item": "..."}         when the item is valid UTF-8: the text, with
 *                           '"', '\\' and the control characters below
 *                           U+0020 escaped (\" \\ \b \f \n \r \t, else
 *                           \u00XX in lowercase hex), everything else as
 *                           it is: byte for byte what Python's
 *                           json.dumps({"item": s}, ensure_ascii=False)
 *                           writes;
 *   {"item_base64": "..."}  otherwise: the bytes in standard base64 (RFC
 *                           4648, with padding), so nothing is lost.
 *
 * Path "-" is standard output. A file is truncated at init, unless append
 * is true. Several workers
 * can only share the file with append: true (each then appends whole
 * lines, one write() per 64 KiB of them); with more than one worker and
 * append false, init fails. Written out at the end of the stream (flush)
 * and of the instance (fini). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx/plugin.h>

#include "../common/outbuf.h"

#define FLUSH_AT 65536

typedef struct {
  int fd;
  outbuf_t out;
} jsonl_t;

static int jsonl_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *path = mpx_param_str(ctx, "path");
  bool append = mpx_param_bool(ctx, "append");
  jsonl_t *j;
  if (!append && mpx_worker_count(ctx) > 1)
    return mpx_plugin_fail(ctx, "%u workers would overwrite each other's "
                           "'%s': run jsonl with 1 worker, or set append: "
                           "true", mpx_worker_count(ctx), path);
  if ((j = calloc(1, sizeof *j)) == NULL) return MPX_ENOMEM;
  /* "-": standard output, through a descriptor of our own to close. */
  j->fd = strcmp(path, "-") == 0
              ? fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 0)
              : open(path, O_WRONLY | O_CREAT | O_CLOEXEC |
                               (append ? O_APPEND : O_TRUNC), 0666);
  if (j->fd < 0) {
    int e = errno;
    free(j);
    return mpx_plugin_fail(ctx, "cannot open '%s': %s", path, strerror(e));
  }
  *state = j;
  return 0;
}

static int write_out(mpx_plugin_ctx_t *ctx, jsonl_t *j) {
  int e = outbuf_write(&j->out, j->fd);
  return e ? mpx_plugin_fail(ctx, "write '%s': %s", mpx_param_str(ctx, "path"),
                             strerror(e))
           : 0;
}


static int put(jsonl_t *j, const char *s, size_t n) {
  char *out = outbuf_room(&j->out, n);
  if (out == NULL) return MPX_ENOMEM;
  memcpy(out, s, n);
  j->out.len += n;
  return 0;
}

static int put_escaped(jsonl_t *j, const unsigned char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  /* At most 6 bytes out per byte in. */
  if (len > SIZE_MAX / 6 || outbuf_room(&j->out, 6 * len) == NULL) return MPX_ENOMEM;
  char *o = j->out.buf + j->out.len;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = s[i];
    const char *esc = NULL;
    switch (c) {
    case '"': esc = "\\\""; break;
    case '\\': esc = "\\\\"; break;
    case '\b': esc = "\\b"; break;
    case '\f': esc = "\\f"; break;
    case '\n': esc = "\\n"; break;
    case '\r': esc = "\\r"; break;
    case '\t': esc = "\\t"; break;
    }
    if (esc) {
      *o++ = esc[0];
      *o++ = esc[1];
    } else if (c < 0x20) {
      memcpy(o, "\\u00", 4);
      o[4] = hex[c >> 4];
      o[5] = hex[c & 15];
      o += 6;
    } else {
      *o++ = (char)c;
    }
  }
  j->out.len = (size_t)(o - j->out.buf);
  return 0;
}

static int put_base64(jsonl_t *j, const unsigned char *s, size_t len) {
  static const char b64[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t i;
  if (len > SIZE_MAX / 2 || outbuf_room(&j->out, (len + 2) / 3 * 4) == NULL)
    return MPX_ENOMEM;
  char *o = j->out.buf + j->out.len;
  for (i = 0; i + 3 <= len; i += 3) {
    unsigned v = (unsigned)s[i] << 16 | (unsigned)s[i + 1] << 8 | s[i + 2];
    *o++ = b64[v >> 18];
    *o++ = b64[(v >> 12) & 63];
    *o++ = b64[(v >> 6) & 63];
    *o++ = b64[v & 63];
  }
  if (i < len) {
    unsigned v = (unsigned)s[i] << 16 | (i + 1 < len ? (unsigned)s[i + 1] << 8
                                                     : 0);
    *o++ = b64[v >> 18];
    *o++ = b64[(v >> 12) & 63];
    *o++ = i + 1 < len ? b64[(v >> 6) & 63] : '=';
    *o++ = '=';
  }
  j->out.len = (size_t)(o - j->out.buf);
  return 0;
}

static int jsonl_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                         size_t len) {
  jsonl_t *j = state;
  size_t mark = j->out.len;
  int rc;
  if (mpx_utf8_valid(in, len)) {
    if ((rc = put(j, "{\"item\": \"", 10)) == 0 &&
        (rc = put_escaped(j, in, len)) == 0)
      rc = put(j, "\"}\n", 3);
  } else {
    if ((rc = put(j, "{\"item_base64\": \"", 17)) == 0 &&
        (rc = put_base64(j, in, len)) == 0)
      rc = put(j, "\"}\n", 3);
  }
  if (rc != 0) {
    j->out.len = mark; /* no half line */
    return rc;
  }
  return j->out.len >= FLUSH_AT ? write_out(ctx, j) : 0;
}

static int jsonl_flush(mpx_plugin_ctx_t *ctx, void *state) {
  return write_out(ctx, state);
}

static void jsonl_fini(mpx_plugin_ctx_t *ctx, void *state) {
  jsonl_t *j = state;
  if (j == NULL) return;
  write_out(ctx, j);
  close(j->fd);
  outbuf_free(&j->out);
  free(j);
}

static const mpx_param_def_t jsonl_params[] = {
    {"path", MPX_PARAM_STRING, NULL, true, "the file to write; - for standard output"},
    {"append", MPX_PARAM_BOOL, "false", false,
     "append instead of truncating (required with several workers)"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "jsonl",
    .version = "1.0",
    .description = "write each item as a JSON line {\"item\": \"...\"} to a "
                   "file",
    .kind = MPX_PLUGIN_SINK,
    .params = jsonl_params,
    .n_params = 2,
    .init = jsonl_init,
    .fini = jsonl_fini,
    .process = jsonl_process,
    .flush = jsonl_flush,
};
