/* Segments: a memfd mapped MAP_SHARED. The memfd has no path, so nothing
 * outlives the processes that map it or hold its descriptor. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "internal.h"
#include "rd.h"
#include "named_internal.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef MFD_HUGE_2MB
#define MFD_HUGE_2MB (21u << 26)
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

#define HUGE_2M ((size_t)2 << 20)
#define ALL_FLAGS \
  (MPX_SEGMENT_PREFAULT | MPX_SEGMENT_HUGEPAGES | MPX_SEGMENT_HUGETLB)

struct mpx_segment_s {
  void *base;
  size_t size;
  int fd;
  unsigned flags; /* MPX_SEGMENT_* in effect */
};

static size_t page_size(void) {
  long v = sysconf(_SC_PAGESIZE);
  return v > 0 ? (size_t)v : 4096;
}

/* 0 and sets *out, or MPX_EOVERFLOW when rounding would wrap. */
static int round_up(size_t n, size_t to, size_t *out) {
  if (n > SIZE_MAX - (to - 1)) return MPX_EOVERFLOW;
  *out = (n + to - 1) / to * to;
  return 0;
}

int mpx__prefault(void *addr, size_t len) {
  size_t ps = page_size(), i;
  char *p = addr;
  if (len == 0) return 0;
  if (madvise(addr, len, MADV_POPULATE_WRITE) == 0) return 0;
  if (errno != EINVAL) return -errno;
  /* Kernel < 5.14. An atomic add of 0 write-faults each page without
   * losing a byte another process writes at the same moment. */
  for (i = 0; i < len; i += ps)
    __atomic_fetch_add(p + i, 0, __ATOMIC_RELAXED);
  return 0;
}

/* MADV_HUGEPAGE is accepted even where shmem never gets huge pages, so
 * also ask the THP shmem policy: "[never]" or "[deny]" means no effect. */
static int shmem_thp_possible(void) {
  char buf[256];
  FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/shmem_enabled", "re");
  size_t n;
  if (f == NULL) return 1;
  n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  return strstr(buf, "[never]") == NULL && strstr(buf, "[deny]") == NULL;
}

/* A sealed, sized memfd mapped MAP_SHARED, or a negative code (with the
 * detail message set) and nothing left open. */
static int map_new(const char *name, size_t size, unsigned mfd_flags,
                   int *fd_out, void **base_out) {
  void *base;
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING | mfd_flags);
  if (fd < 0)
    return mpx__err_errno("memfd_create(%s, %zu bytes%s)", name, size,
                          mfd_flags & MFD_HUGETLB ? ", hugetlb" : "");
  if (ftruncate(fd, (off_t)size) != 0) {
    int rc = mpx__err_errno("ftruncate(memfd %s, %zu bytes)", name, size);
    close(fd);
    return rc;
  }
  /* A fixed size: a peer that shrank it would make everyone else's
   * accesses past the new end die of SIGBUS. */
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW) != 0) {
    int rc = mpx__err_errno("sealing memfd %s", name);
    close(fd);
    return rc;
  }
  base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (base == MAP_FAILED) {
    int rc = mpx__err_errno("mmap(memfd %s, %zu bytes)", name, size);
    close(fd);
    return rc;
  }
  *fd_out = fd;
  *base_out = base;
  return 0;
}

static int finish(mpx_segment_t *s, unsigned flags, mpx_segment_t **out) {
  int rc;
  if (flags & MPX_SEGMENT_PREFAULT) {
    rc = mpx__prefault(s->base, s->size);
    if (rc != 0) {
      rc = mpx__err(rc, "prefaulting a %zu-byte segment", s->size);
      mpx_segment_free(s);
      return rc;
    }
    s->flags |= MPX_SEGMENT_PREFAULT;
  }
  *out = s;
  return 0;
}

int mpx_segment_new(mpx_segment_t **out, const mpx_segment_opts_t *opts) {
  const char *name;
  mpx_segment_t *s;
  size_t size;
  int rc;

  if (out == NULL || opts == NULL)
    return mpx__err(MPX_EINVAL, "mpx_segment_new: NULL argument");
  if (opts->size == 0)
    return mpx__err(MPX_EINVAL, "mpx_segment_new: size 0");
  /* HUGETLB is a result, accepted (and ignored) so a segment's flags can
   * be passed on as they are. */
  if (opts->flags & ~(unsigned)ALL_FLAGS)
    return mpx__err(MPX_EINVAL, "mpx_segment_new: unknown flags 0x%x",
                    opts->flags);
  name = opts->name != NULL ? opts->name : "mpx";
  if (round_up(opts->size, page_size(), &size) != 0)
    return mpx__err(MPX_EOVERFLOW, "mpx_segment_new: size %zu", opts->size);
  s = calloc(1, sizeof *s);
  if (s == NULL) return mpx__err(MPX_ENOMEM, "mpx_segment_new");
  s->fd = -1;

  if (opts->flags & MPX_SEGMENT_HUGEPAGES) {
    size_t hsize;
    /* hugetlbfs reserves its pages at mmap, so a system without any fails
     * here, not later with SIGBUS. 2 MiB pages asked for explicitly: the
     * rounding depends on it. */
    if (round_up(size, HUGE_2M, &hsize) == 0 &&
        map_new(name, hsize, MFD_HUGETLB | MFD_HUGE_2MB, &s->fd,
                &s->base) == 0) {
      s->size = hsize;
      s->flags = MPX_SEGMENT_HUGEPAGES | MPX_SEGMENT_HUGETLB;
    }
  }
  if (s->base == NULL) {
    rc = map_new(name, size, 0, &s->fd, &s->base);
    if (rc != 0) {
      free(s);
      return rc;
    }
    s->size = size;
    if ((opts->flags & MPX_SEGMENT_HUGEPAGES) &&
        madvise(s->base, size, MADV_HUGEPAGE) == 0 && shmem_thp_possible())
      s->flags |= MPX_SEGMENT_HUGEPAGES;
  }
  return finish(s, opts->flags, out);
}

/* fd is a memfd (not a pipe, a device, or a file that has a path). Seals
 * exist only on shmem and hugetlbfs files; the /proc link then tells a
 * memfd from a /dev/shm file. */
static int check_memfd(int fd) {
  char path[64], link[80];
  ssize_t n;
  if (fcntl(fd, F_GET_SEALS) < 0) {
    if (errno == EBADF) return mpx__err_errno("attach: fd %d", fd);
    return mpx__err(MPX_EINVAL, "attach: fd %d is not a memfd segment "
                                "(F_GET_SEALS: %s)", fd, strerror(errno));
  }
  snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
  n = readlink(path, link, sizeof link - 1);
  if (n < 0) return 0; /* no /proc: the seals check has to do */
  link[n] = '\0';
  if (strncmp(link, "/memfd:", 7) != 0)
    return mpx__err(MPX_EINVAL, "attach: fd %d is '%s', not a memfd segment",
                    fd, link);
  return 0;
}

int mpx_segment_attach(mpx_segment_t **out, int fd, unsigned flags) {
  mpx_segment_t *s;
  struct stat st;
  struct statfs sf;
  int rc;

  if (out == NULL) return mpx__err(MPX_EINVAL, "attach: NULL out");
  /* Only PREFAULT applies: the memfd decides its page size. */
  if (flags & ~(unsigned)ALL_FLAGS)
    return mpx__err(MPX_EINVAL, "attach: unknown flags 0x%x", flags);
  if ((rc = check_memfd(fd)) != 0) return rc;
  if (fstat(fd, &st) != 0) return mpx__err_errno("attach: fstat(fd %d)", fd);
  if (st.st_size <= 0)
    return mpx__err(MPX_EINVAL, "attach: memfd %d has size 0", fd);
  s = calloc(1, sizeof *s);
  if (s == NULL) return mpx__err(MPX_ENOMEM, "attach");
  s->size = (size_t)st.st_size;
  s->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (s->fd < 0) {
    rc = mpx__err_errno("attach: dup(fd %d)", fd);
    free(s);
    return rc;
  }
  s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_SHARED, s->fd, 0);
  if (s->base == MAP_FAILED) {
    rc = mpx__err_errno("attach: mmap(fd %d, %zu bytes)", fd, s->size);
    close(s->fd);
    free(s);
    return rc;
  }
  if (fstatfs(s->fd, &sf) == 0 && sf.f_type == HUGETLBFS_MAGIC)
    s->flags = MPX_SEGMENT_HUGEPAGES | MPX_SEGMENT_HUGETLB;
  return finish(s, flags, out);
}

void *mpx_segment_base(const mpx_segment_t *s) { return s->base; }
size_t mpx_segment_size(const mpx_segment_t *s) { return s->size; }
int mpx_segment_fd(const mpx_segment_t *s) { return s->fd; }
unsigned mpx_segment_flags(const mpx_segment_t *s) { return s->flags; }

int mpx_segment_prefault(mpx_segment_t *s, size_t off, size_t len) {
  size_t ps = page_size(), start;
  int rc;
  if (off > s->size || len > s->size - off)
    return mpx__err(MPX_ERANGE, "prefault: [%zu, +%zu) outside %zu bytes",
                    off, len, s->size);
  if (len == 0) return 0;
  start = off / ps * ps;
  rc = mpx__prefault((char *)s->base + start, off + len - start);
  return rc ? mpx__err(rc, "prefault: [%zu, +%zu)", off, len) : 0;
}

int mpx_segment_send(int sock, const mpx_segment_t *s) {
  mpx__buf_t b = {0};
  int rc = mpx__buf_put_u64(&b, s->size);
  if (rc == 0) rc = mpx__msg_send(sock, &b, &s->fd, 1);
  mpx__buf_free(&b);
  return rc ? mpx__err(rc, "segment send on fd %d", sock) : 0;
}

int mpx_segment_recv(int sock, mpx_segment_t **out, unsigned flags) {
  char *data = NULL;
  size_t len, nfds;
  uint64_t size;
  int fd, rc;
  mpx__rd_t r;

  rc = mpx__msg_recv(sock, &data, &len, &fd, 1, &nfds);
  if (rc != 0) return mpx__err(rc, "segment recv on fd %d", sock);
  r.p = data;
  r.end = data + len;
  if (nfds != 1 || mpx__rd_u64(&r, &size) != 0 || r.p != r.end) {
    free(data);
    if (nfds == 1) close(fd);
    return mpx__err(MPX_EPROTO, "segment recv: not a segment message "
                                "(%zu bytes, %zu fds)", len, nfds);
  }
  free(data);
  rc = mpx_segment_attach(out, fd, flags);
  close(fd);
  if (rc == 0 && (*out)->size != size) {
    rc = mpx__err(MPX_EPROTO, "segment recv: sender said %llu bytes, the "
                              "memfd has %zu", (unsigned long long)size,
                  (*out)->size);
    mpx_segment_free(*out);
    *out = NULL;
  }
  return rc;
}

void mpx_segment_free(mpx_segment_t *s) {
  if (s == NULL) return;
  if (s->base != NULL) munmap(s->base, s->size);
  if (s->fd >= 0) close(s->fd);
  free(s);
}
