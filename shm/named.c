/* Named shared memory: POSIX shm objects (/dev/shm/NAME), the same objects
 * Python's multiprocessing.shared_memory.SharedMemory uses. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"
#include "named_internal.h"

#define NAME_MAX_LEN 250

struct mpx_shm_s {
  void *buf;
  size_t size;
  char name[NAME_MAX_LEN + 2]; /* "/" + name; mpx_shm_name skips the '/' */
};

/* "/name" in out, from a name with or without its leading '/'. */
static int shm_path(const char *name, char out[NAME_MAX_LEN + 2]) {
  size_t n;
  if (name == NULL) return mpx__err(MPX_EINVAL, "shm: NULL name");
  if (name[0] == '/') name++;
  n = strlen(name);
  if (n > NAME_MAX_LEN)
    return mpx__err(MPX_ENAMETOOLONG, "shm: name of %zu bytes (at most %d)",
                    n, NAME_MAX_LEN);
  if (n == 0 || strchr(name, '/') != NULL || strcmp(name, ".") == 0 ||
      strcmp(name, "..") == 0)
    return mpx__err(MPX_EINVAL, "shm: bad name '%s'", name);
  out[0] = '/';
  memcpy(out + 1, name, n + 1);
  return 0;
}

static int random_path(char out[NAME_MAX_LEN + 2]) {
  unsigned char r[8];
  size_t i;
  if (getrandom(r, sizeof r, 0) != (ssize_t)sizeof r)
    return mpx__err_errno("shm: getrandom");
  memcpy(out, "/mpx_", 5);
  for (i = 0; i < sizeof r; i++)
    snprintf(out + 5 + 2 * i, 3, "%02x", r[i]);
  return 0;
}

static int map_fd(mpx_shm_t *m, int fd, unsigned flags) {
  int rc;
  m->buf = mmap(NULL, m->size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (m->buf == MAP_FAILED) {
    m->buf = NULL;
    return mpx__err_errno("shm: mmap('%s', %zu bytes)", m->name + 1, m->size);
  }
  if ((flags & MPX_SHM_PREFAULT) && (rc = mpx__prefault(m->buf, m->size)))
    return mpx__err(rc, "shm: prefaulting '%s'", m->name + 1);
  return 0;
}

int mpx_shm_create(mpx_shm_t **out, const char *name, size_t size,
                   unsigned flags) {
  mpx__shm_pending_t pend = {NULL, 0};
  mpx_shm_t *m;
  int fd, rc, err, tries = 0;

  if (out == NULL) return mpx__err(MPX_EINVAL, "shm_create: NULL out");
  if (size == 0) return mpx__err(MPX_EINVAL, "shm_create: size 0");
  if ((off_t)size < 0)
    return mpx__err(MPX_EFBIG, "shm_create: size %zu", size);
  m = calloc(1, sizeof *m);
  if (m == NULL) return mpx__err(MPX_ENOMEM, "shm_create");
  for (;;) {
    rc = name ? shm_path(name, m->name) : random_path(m->name);
    if (rc != 0) goto fail;
    /* Recorded before it exists (see named_internal.h); a full registry
     * fails here, so nothing untracked is ever created. */
    if (!(flags & MPX_SHM_UNTRACKED) &&
        (rc = mpx__shm_registry_begin(m->name + 1, &pend)) != 0)
      goto fail;
    fd = shm_open(m->name, O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0) break;
    err = errno;
    mpx__shm_registry_end(&pend, 0);
    errno = err;
    /* A random name that exists: draw another. */
    if (errno == EEXIST && name == NULL && ++tries < 100) continue;
    rc = mpx__err_errno("shm_open('%s', create)", m->name + 1);
    goto fail;
  }
  m->size = size;
  if (ftruncate(fd, (off_t)size) != 0) {
    rc = mpx__err_errno("shm: ftruncate('%s', %zu bytes)", m->name + 1, size);
    shm_unlink(m->name);
    mpx__shm_registry_end(&pend, 0);
    close(fd);
    goto fail;
  }
  mpx__shm_registry_end(&pend, 1);
  rc = map_fd(m, fd, flags);
  close(fd);
  if (rc != 0) {
    mpx__shm_registry_unlink(m->name);
    if (m->buf != NULL) munmap(m->buf, m->size);
    goto fail;
  }
  *out = m;
  return 0;

fail:
  free(m);
  return rc;
}

int mpx_shm_attach(mpx_shm_t **out, const char *name, unsigned flags) {
  mpx_shm_t *m;
  struct stat st;
  int fd, rc;

  if (out == NULL) return mpx__err(MPX_EINVAL, "shm_attach: NULL out");
  m = calloc(1, sizeof *m);
  if (m == NULL) return mpx__err(MPX_ENOMEM, "shm_attach");
  if ((rc = shm_path(name, m->name)) != 0) goto fail;
  fd = shm_open(m->name, O_RDWR | O_CLOEXEC, 0);
  if (fd < 0) {
    rc = mpx__err_errno("shm_open('%s')", m->name + 1);
    goto fail;
  }
  if (fstat(fd, &st) != 0) {
    rc = mpx__err_errno("shm: fstat('%s')", m->name + 1);
  } else if (st.st_size <= 0) {
    rc = mpx__err(MPX_EINVAL, "shm: '%s' has size 0", m->name + 1);
  } else {
    m->size = (size_t)st.st_size;
    rc = map_fd(m, fd, flags);
  }
  close(fd);
  if (rc == 0) {
    *out = m;
    return 0;
  }
  if (m->buf != NULL) munmap(m->buf, m->size);
fail:
  free(m);
  return rc;
}

const char *mpx_shm_name(const mpx_shm_t *m) { return m->name + 1; }
void *mpx_shm_buf(const mpx_shm_t *m) { return m->buf; }
size_t mpx_shm_size(const mpx_shm_t *m) { return m->size; }

void mpx_shm_close(mpx_shm_t *m) {
  if (m == NULL) return;
  munmap(m->buf, m->size);
  free(m);
}

int mpx_shm_unlink(const char *name) {
  char path[NAME_MAX_LEN + 2];
  int rc = shm_path(name, path);
  if (rc != 0) return rc;
  rc = mpx__shm_registry_unlink(path);
  return rc ? mpx__err(rc, "shm_unlink('%s')", path + 1) : 0;
}
