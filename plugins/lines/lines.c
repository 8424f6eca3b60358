/* lines: a source of the lines of a file, each emitted without its '\n'
 * (a '\r' before it is kept; a last line without '\n' is still a line; an
 * empty line is an empty item).
 *
 * The workers of the stage split the file by bytes: worker i of n owns
 * [i*size/n, (i+1)*size/n) and emits the lines whose first byte is in
 * that range (reading on past its end to finish its last line), so every
 * line is emitted exactly once. A file that is not a regular one (a pipe)
 * is read whole by worker 0. Path "-" is standard input, which cannot be
 * split: with more than one worker, init fails. Reads are large (the `buffer` parameter)
 * and lines are emitted straight from the read buffer unless they span
 * two reads. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mpx/plugin.h>

#define BATCH 4096 /* lines per generate call */

typedef struct {
  int fd;
  bool seekable;     /* a regular file: pread at rpos */
  bool skipping;     /* skipping the end of a line another worker owns */
  bool done;
  uint64_t hi;       /* lines must start before hi */
  uint64_t rpos;     /* file offset of the next read */
  char *buf;         /* buf[off, len) not consumed yet */
  size_t cap, len, off;
  char *acc;         /* the beginning of a line that spans reads */
  size_t acc_len, acc_cap;
} lines_t;

static void lines_fini(mpx_plugin_ctx_t *ctx, void *state) {
  lines_t *l = state;
  (void)ctx;
  if (l == NULL) return;
  if (l->fd >= 0) close(l->fd);
  free(l->buf);
  free(l->acc);
  free(l);
}

static int lines_init(mpx_plugin_ctx_t *ctx, void **state) {
  const char *path = mpx_param_str(ctx, "path");
  int64_t bufsize = mpx_param_int(ctx, "buffer");
  unsigned i = mpx_worker_index(ctx), n = mpx_worker_count(ctx);
  struct stat st;
  lines_t *l;
  if (bufsize < 1 || bufsize > ((int64_t)1 << 30))
    return mpx_plugin_fail(ctx, "buffer must be between 1 and 2^30 bytes, "
                           "got %lld", (long long)bufsize);
  if ((l = calloc(1, sizeof *l)) == NULL) return MPX_ENOMEM;
  l->fd = -1; /* not 0: fini must not close standard input */
  l->cap = (size_t)bufsize;
  if ((l->buf = malloc(l->cap)) == NULL) {
    lines_fini(ctx, l);
    return MPX_ENOMEM;
  }
  if (strcmp(path, "-") == 0 && n > 1) {
    lines_fini(ctx, l);
    return mpx_plugin_fail(ctx, "standard input (path '-') cannot be split between "
                           "workers: leave out the stage's workers to read it in "
                           "mpx run");
  }
  /* "-": standard input, through a descriptor of our own to close. */
  l->fd = strcmp(path, "-") == 0 ? fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0)
                                 : open(path, O_RDONLY | O_CLOEXEC);
  if (l->fd < 0 || fstat(l->fd, &st) != 0) {
    int rc = mpx_plugin_fail(ctx, "cannot open '%s': %s", path,
                             strerror(errno));
    lines_fini(ctx, l);
    return rc;
  }
  /* Standard input is read on from where it stands, even from a file. */
  l->seekable = S_ISREG(st.st_mode) && strcmp(path, "-") != 0;
  if (!l->seekable) {
    l->hi = UINT64_MAX;
    l->done = i != 0;
  } else {
    uint64_t size = (uint64_t)st.st_size;
    uint64_t lo = (uint64_t)((unsigned __int128)size * i / n);
    l->hi = (uint64_t)((unsigned __int128)size * (i + 1) / n);
    l->done = lo >= l->hi; /* no byte of the file is ours */
    if (lo > 0) {
      /* Our first line starts after the first '\n' at or after lo - 1. */
      l->rpos = lo - 1;
      l->skipping = true;
    }
  }
  *state = l;
  return 0;
}

static int append(lines_t *l, const char *p, size_t n) {
  if (l->acc_cap - l->acc_len < n) {
    size_t cap = l->acc_cap ? l->acc_cap : 256;
    while (cap - l->acc_len < n) cap *= 2;
    char *a = realloc(l->acc, cap);
    if (a == NULL) return MPX_ENOMEM;
    l->acc = a;
    l->acc_cap = cap;
  }
  memcpy(l->acc + l->acc_len, p, n);
  l->acc_len += n;
  return 0;
}

/* Refills the buffer: 0, or a negative code. Sets l->len to 0 at EOF. */
static int refill(mpx_plugin_ctx_t *ctx, lines_t *l) {
  ssize_t n;
  do
    n = l->seekable ? pread(l->fd, l->buf, l->cap, (off_t)l->rpos)
                    : read(l->fd, l->buf, l->cap);
  while (n < 0 && errno == EINTR);
  if (n < 0)
    return mpx_plugin_fail(ctx, "read '%s': %s", mpx_param_str(ctx, "path"),
                           strerror(errno));
  l->rpos += (uint64_t)n;
  l->len = (size_t)n;
  l->off = 0;
  return 0;
}

static int lines_generate(mpx_plugin_ctx_t *ctx, void *state) {
  lines_t *l = state;
  int rc, emitted = 0;
  while (!l->done && emitted < BATCH) {
    if (l->off == l->len) {
      if ((rc = refill(ctx, l)) != 0) return rc;
      if (l->len == 0) { /* end of file: a last line without '\n' */
        l->done = true;
        if (!l->skipping && l->acc_len > 0 &&
            (rc = mpx_emit(ctx, l->acc, l->acc_len)) != 0)
          return rc;
        break;
      }
    }
    char *s = l->buf + l->off, *nl = memchr(s, '\n', l->len - l->off);
    if (nl == NULL) {
      if (!l->skipping && (rc = append(l, s, l->len - l->off)) != 0)
        return rc;
      l->off = l->len;
      continue;
    }
    if (!l->skipping) {
      if (l->acc_len > 0) {
        if ((rc = append(l, s, (size_t)(nl - s))) != 0) return rc;
        rc = mpx_emit(ctx, l->acc, l->acc_len);
        l->acc_len = 0;
      } else {
        rc = mpx_emit(ctx, s, (size_t)(nl - s));
      }
      if (rc != 0) return rc;
      emitted++;
    }
    l->skipping = false;
    l->off = (size_t)(nl - l->buf) + 1;
    /* The next line starts here; past hi it belongs to the next worker. */
    if (l->rpos - (l->len - l->off) >= l->hi) l->done = true;
  }
  return l->done ? 0 : 1;
}

static const mpx_param_def_t lines_params[] = {
    {"path", MPX_PARAM_STRING, NULL, true, "the file to read; - for standard input"},
    {"buffer", MPX_PARAM_INT, "1048576", false, "read size in bytes"},
};

MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER,
    .name = "lines",
    .version = "1.0",
    .description = "the lines of a file, without their newline, split "
                   "between the workers by byte range",
    .kind = MPX_PLUGIN_SOURCE,
    .params = lines_params,
    .n_params = sizeof lines_params / sizeof lines_params[0],
    .init = lines_init,
    .fini = lines_fini,
    .generate = lines_generate,
    .flags = MPX_PLUGIN_SPLITS,
};
