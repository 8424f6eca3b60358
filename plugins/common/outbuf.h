/* An output buffer for sink plugins: bytes collect in memory and go out
 * with as few write() calls as possible. Shared by print and jsonl (a
 * plugin's own code, built into each: plugins use only public headers). */
#ifndef MPX_PLUGINS_OUTBUF_H
#define MPX_PLUGINS_OUTBUF_H

#include <stddef.h>

typedef struct {
  char *buf;
  size_t len, cap;
} outbuf_t;

/* Room for n more bytes at buf + len (len is not moved), or NULL when out
 * of memory. */
char *outbuf_room(outbuf_t *b, size_t n);
/* Writes everything buffered to fd (retrying short writes and EINTR) and
 * empties the buffer, written or not: 0, or the errno of the failure. */
int outbuf_write(outbuf_t *b, int fd);
void outbuf_free(outbuf_t *b);

#endif
