/* print: a sink that writes each item as one line on standard output
 * (path "-", the default) or to the file `path` (truncated at init).
 * format: text (the bytes as they are), hex (lowercase hex digits) or
 * int64 (an 8-byte little-endian int64, in decimal). Lines are collected
 * and written with one write() per 64 KiB of whole lines (per line when
 * stdout is a terminal), so the lines of several workers sharing stdout
 * do not interleave mid-line (up to the pipe's atomic size), and written
 * out at the end of the stream (flush) or of the instance (fini). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx/plugin.h>

#include "../common/outbuf.h"

#define FLUSH_AT 65536

enum { FMT_TEXT, FMT_HEX, FMT_INT64 };

typedef struct {
  int format;
  int fd;  /* STDOUT_FILENO, or a file of ours */
  int tty;
  outbuf_t out;
} print_t;

static int print_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *f = mpx_param_str(ctx, "format");
  print_t *p = calloc(1, sizeof *p);
  if (p == NULL) return MPX_ENOMEM;
  if (strcmp(f, "text") == 0) p->format = FMT_TEXT;
  else if (strcmp(f, "hex") == 0) p->format = FMT_HEX;
  else if (strcmp(f, "int64") == 0) p->format = FMT_INT64;
  else {
    free(p);
    return mpx_plugin_fail(ctx, "format must be text, hex or int64, got "
                           "'%s'", f);
  }
  const char *path = mpx_param_str(ctx, "path");
  p->fd = STDOUT_FILENO;
  if (strcmp(path, "-") != 0 &&
      (p->fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666)) < 0) {
    int e = errno;
    free(p);
    return mpx_plugin_fail(ctx, "cannot open '%s': %s", path, strerror(e));
  }
  p->tty = isatty(p->fd);
  *state = p;
  return 0;
}

static int write_out(mpx_plugin_ctx_t *ctx, print_t *p) {
  int e = outbuf_write(&p->out, p->fd);
  if (e == 0) return 0;
  if (p->fd == STDOUT_FILENO) return mpx_plugin_fail(ctx, "write to stdout: %s", strerror(e));
  return mpx_plugin_fail(ctx, "write '%s': %s", mpx_param_str(ctx, "path"), strerror(e));
}

static int print_process(mpx_plugin_ctx_t *ctx, void *state, const void *in,
                         size_t len) {
  static const char digits[] = "0123456789abcdef";
  print_t *p = state;
  const unsigned char *s = in;
  char *out;
  switch (p->format) {
  case FMT_TEXT:
    if ((out = outbuf_room(&p->out, len + 1)) == NULL) return MPX_ENOMEM;
    if (len) memcpy(out, in, len);
    out[len] = '\n';
    p->out.len += len + 1;
    break;
  case FMT_HEX:
    if ((out = outbuf_room(&p->out, 2 * len + 1)) == NULL) return MPX_ENOMEM;
    for (size_t i = 0; i < len; i++) {
      out[2 * i] = digits[s[i] >> 4];
      out[2 * i + 1] = digits[s[i] & 15];
    }
    out[2 * len] = '\n';
    p->out.len += 2 * len + 1;
    break;
  default: {
    uint64_t u = 0;
    if (len != 8)
      return mpx_plugin_fail(ctx, "format int64 needs 8-byte items, got %zu "
                             "bytes", len);
    for (int i = 7; i >= 0; i--) u = u << 8 | s[i];
    if ((out = outbuf_room(&p->out, 24)) == NULL) return MPX_ENOMEM;
    p->out.len += (size_t)snprintf(out, 24, "%" PRId64 "\n", (int64_t)u);
  }
  }
  if (p->tty || p->out.len >= FLUSH_AT) return write_out(ctx, p);
  return 0;
}

static int print_flush(mpx_plugin_ctx_t *ctx, void *state) {
  return write_out(ctx, state);
}

static void print_fini(mpx_plugin_ctx_t *ctx, void *state) {
  print_t *p = state;
  if (p == NULL) return;
  write_out(ctx, p);
  if (p->fd != STDOUT_FILENO) close(p->fd);
  outbuf_free(&p->out);
  free(p);
}

static const mpx_param_def_t print_params[] = {
    {"format", MPX_PARAM_STRING, "text", false,
     "text, hex or int64 (8-byte little-endian items)"},
    {"path", MPX_PARAM_STRING, "-", false,
     "the file to write (truncated); - for standard output"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "print",
    .version = "1.0",
    .description = "write each item as a line on standard output (or to a file)",
    .kind = MPX_PLUGIN_SINK,
    .params = print_params,
    .n_params = sizeof print_params / sizeof print_params[0],
    .init = print_init,
    .fini = print_fini,
    .process = print_process,
    .flush = print_flush,
};
