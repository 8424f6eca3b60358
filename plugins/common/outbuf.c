/* See outbuf.h. */
#include "outbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

char *outbuf_room(outbuf_t *b, size_t n) {
  if (b->cap - b->len < n) {
    size_t cap = b->cap ? b->cap : 4096;
    while (cap - b->len < n) cap *= 2;
    char *p = realloc(b->buf, cap);
    if (p == NULL) return NULL;
    b->buf = p;
    b->cap = cap;
  }
  return b->buf + b->len;
}

int outbuf_write(outbuf_t *b, int fd) {
  size_t done = 0;
  int err = 0;
  while (done < b->len) {
    ssize_t n = write(fd, b->buf + done, b->len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      err = errno;
      break;
    }
    done += (size_t)n;
  }
  b->len = 0;
  return err;
}

void outbuf_free(outbuf_t *b) {
  free(b->buf);
  b->buf = NULL;
  b->len = b->cap = 0;
}
