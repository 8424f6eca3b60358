/* Tests of memfd segments: mapping, sharing with fork children and through
 * a socket, attach checks, prefaulting, huge page fallback, sealing. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "mpx.h"

#define MiB ((size_t)1 << 20)

static size_t page(void) { return (size_t)sysconf(_SC_PAGESIZE); }

static mpx_segment_t *make(size_t size, unsigned flags, const char *name) {
  mpx_segment_opts_t o;
  mpx_segment_t *s = NULL;
  int rc;
  memset(&o, 0, sizeof o);
  o.size = size;
  o.flags = flags;
  o.name = name;
  rc = mpx_segment_new(&s, &o);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  if (rc != 0) fprintf(stderr, "%s\n", mpx_last_error());
  return s;
}

static long minflt(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_minflt;
}

/* Writes one byte per page. Not instrumented: the sanitizers' shadow
 * memory would fault pages of its own and spoil the count. */
__attribute__((no_sanitize_address, no_sanitize_thread, noinline))
static void touch(char *p, size_t len) {
  size_t i, ps = page();
  for (i = 0; i < len; i += ps) ((volatile char *)p)[i] = (char)i;
}

static void test_create_rw(void) {
  mpx_segment_opts_t o;
  mpx_segment_t *s = make(3 * page() + 1, 0, NULL);
  char link[64], path[64];
  ssize_t n;

  CU_ASSERT_EQUAL(mpx_segment_size(s), 4 * page());
  CU_ASSERT_EQUAL(mpx_segment_flags(s), 0);
  CU_ASSERT(mpx_segment_fd(s) > 2);
  CU_ASSERT_PTR_NOT_NULL(mpx_segment_base(s));
  /* Zero-filled, then holds what is written. */
  CU_ASSERT_EQUAL(((char *)mpx_segment_base(s))[4 * page() - 1], 0);
  memcpy(mpx_segment_base(s), "hello", 6);
  CU_ASSERT_STRING_EQUAL(mpx_segment_base(s), "hello");
  /* The default memfd name, close-on-exec. */
  snprintf(path, sizeof path, "/proc/self/fd/%d", mpx_segment_fd(s));
  n = readlink(path, link, sizeof link - 1);
  CU_ASSERT(n > 0);
  link[n > 0 ? n : 0] = '\0';
  CU_ASSERT_STRING_EQUAL(link, "/memfd:mpx (deleted)");
  CU_ASSERT(fcntl(mpx_segment_fd(s), F_GETFD) & FD_CLOEXEC);
  mpx_segment_free(s);

  memset(&o, 0, sizeof o);
  CU_ASSERT_EQUAL(mpx_segment_new(&s, &o), MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "size 0"));
  CU_ASSERT_EQUAL(mpx_segment_new(&s, NULL), MPX_EINVAL);
  o.size = 1;
  o.flags = 1u << 7;
  CU_ASSERT_EQUAL(mpx_segment_new(&s, &o), MPX_EINVAL);
  o.flags = 0;
  o.size = SIZE_MAX;
  CU_ASSERT_EQUAL(mpx_segment_new(&s, &o), MPX_EOVERFLOW);
  /* Too big to map: the message names the failing step. */
  o.size = (size_t)1 << 60;
  CU_ASSERT(mpx_segment_new(&s, &o) < 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "memfd mpx"));
  mpx_segment_free(NULL);
}

static void test_size_rounding(void) {
  static const size_t in[] = {1, 4096, 4097, 65536, 100000};
  size_t i;
  for (i = 0; i < sizeof in / sizeof in[0]; i++) {
    mpx_segment_t *s = make(in[i], 0, "round");
    size_t want = (in[i] + page() - 1) / page() * page();
    CU_ASSERT_EQUAL(mpx_segment_size(s), want);
    /* The whole rounded size is usable. */
    ((char *)mpx_segment_base(s))[want - 1] = 1;
    mpx_segment_free(s);
  }
}

static void test_fork_child_writes(void) {
  mpx_segment_t *s = make(MiB, 0, NULL);
  unsigned char *p = mpx_segment_base(s);
  size_t i, bad = 0;
  pid_t pid = fork();
  if (pid == 0) {
    for (i = 0; i < MiB; i++) p[i] = (unsigned char)(i * 7 + 3);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  for (i = 0; i < MiB; i++) bad += p[i] != (unsigned char)(i * 7 + 3);
  CU_ASSERT_EQUAL(bad, 0);
  mpx_segment_free(s);
}

/* The child drops the mapping it inherited, so the only way its writes can
 * reach the parent is the descriptor it receives. */
static void test_send_recv(void) {
  mpx_segment_t *s = make(2 * MiB, 0, "sent");
  unsigned char *p = mpx_segment_base(s);
  size_t i, bad = 0;
  int sv[2];
  pid_t pid;

  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  p[0] = 42;
  pid = fork();
  if (pid == 0) {
    mpx_segment_t *r = NULL;
    unsigned char *q;
    close(sv[0]);
    mpx_segment_free(s);
    if (mpx_segment_recv(sv[1], &r, MPX_SEGMENT_PREFAULT) != 0) _exit(1);
    if (mpx_segment_size(r) != 2 * MiB) _exit(2);
    if (!(mpx_segment_flags(r) & MPX_SEGMENT_PREFAULT)) _exit(3);
    q = mpx_segment_base(r);
    if (q[0] != 42) _exit(4);
    for (i = 0; i < 2 * MiB; i++) q[i] = (unsigned char)(i ^ 0x5a);
    mpx_segment_free(r);
    _exit(0);
  }
  close(sv[1]);
  CU_ASSERT_EQUAL(mpx_segment_send(sv[0], s), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  for (i = 0; i < 2 * MiB; i++) bad += p[i] != (unsigned char)(i ^ 0x5a);
  CU_ASSERT_EQUAL(bad, 0);
  close(sv[0]);
  mpx_segment_free(s);
}

/* recv checks the size the sender announced against the memfd's. */
static void test_recv_checks(void) {
  mpx_segment_t *s = make(page(), 0, NULL), *r = NULL;
  uint64_t msg[2] = {8, 3 * 4096};
  union {
    struct cmsghdr h;
    char buf[CMSG_SPACE(sizeof(int))];
  } cm;
  struct iovec iov = {msg, sizeof msg};
  struct msghdr mh;
  int sv[2], fd = mpx_segment_fd(s);

  CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  memset(&mh, 0, sizeof mh);
  memset(&cm, 0, sizeof cm);
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cm.buf;
  mh.msg_controllen = sizeof cm.buf;
  cm.h.cmsg_level = SOL_SOCKET;
  cm.h.cmsg_type = SCM_RIGHTS;
  cm.h.cmsg_len = CMSG_LEN(sizeof(int));
  memcpy(CMSG_DATA(&cm.h), &fd, sizeof fd);
  CU_ASSERT_EQUAL(sendmsg(sv[0], &mh, 0), (ssize_t)sizeof msg);
  CU_ASSERT_EQUAL(mpx_segment_recv(sv[1], &r, 0), MPX_EPROTO);
  CU_ASSERT_PTR_NULL(r);
  /* The same message without a descriptor. */
  CU_ASSERT_EQUAL(write(sv[0], msg, sizeof msg), (ssize_t)sizeof msg);
  CU_ASSERT_EQUAL(mpx_segment_recv(sv[1], &r, 0), MPX_EPROTO);
  /* The peer closed. */
  close(sv[0]);
  CU_ASSERT_EQUAL(mpx_segment_recv(sv[1], &r, 0), MPX_EPIPE);
  close(sv[1]);
  mpx_segment_free(s);
}

static void test_attach(void) {
  mpx_segment_t *s = make(5 * page(), 0, NULL), *a = NULL;
  int fd = mpx_segment_fd(s);

  CU_ASSERT_EQUAL_FATAL(mpx_segment_attach(&a, fd, 0), 0);
  /* Its own descriptor and mapping of the same memory. */
  CU_ASSERT_NOT_EQUAL(mpx_segment_fd(a), fd);
  CU_ASSERT_NOT_EQUAL(mpx_segment_base(a), mpx_segment_base(s));
  CU_ASSERT_EQUAL(mpx_segment_size(a), 5 * page());
  strcpy(mpx_segment_base(s), "shared");
  CU_ASSERT_STRING_EQUAL(mpx_segment_base(a), "shared");
  mpx_segment_free(s);
  /* Outlives the original handle. */
  strcpy(mpx_segment_base(a), "still");
  CU_ASSERT_STRING_EQUAL(mpx_segment_base(a), "still");
  mpx_segment_free(a);
}

static void test_attach_not_memfd(void) {
  mpx_segment_t *a = (mpx_segment_t *)1;
  int p[2], fd;
  char shm[64];

  CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, p[0], 0), MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "not a memfd"));
  close(p[0]);
  close(p[1]);
  fd = open("/dev/null", O_RDWR);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, fd, 0), MPX_EINVAL);
  close(fd);
  /* A regular file. */
  fd = open("/proc/self/exe", O_RDONLY);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, fd, 0), MPX_EINVAL);
  close(fd);
  /* A shmem file with a path: /dev/shm is not a segment. */
  snprintf(shm, sizeof shm, "/mpxt_%d_notmemfd", (int)getpid());
  fd = shm_open(shm, O_CREAT | O_EXCL | O_RDWR, 0600);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL(ftruncate(fd, 4096), 0);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, fd, 0), MPX_EINVAL);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "/dev/shm"));
  shm_unlink(shm);
  close(fd);
  /* An empty memfd. */
  fd = memfd_create("empty", MFD_CLOEXEC);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, fd, 0), MPX_EINVAL);
  close(fd);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, fd, 0), MPX_EBADF);
  CU_ASSERT_EQUAL(mpx_segment_attach(&a, -1, 0), MPX_EBADF);
  CU_ASSERT_PTR_EQUAL(a, (mpx_segment_t *)1);
}

static void test_prefault(void) {
  size_t size = 64 * MiB, pages = size / page();
  mpx_segment_t *s;
  long before, delta;

  s = make(size, MPX_SEGMENT_PREFAULT, NULL);
  CU_ASSERT_EQUAL(mpx_segment_flags(s), MPX_SEGMENT_PREFAULT);
  before = minflt();
  touch(mpx_segment_base(s), size);
  delta = minflt() - before;
  CU_ASSERT(delta < 16);
  if (delta >= 16) fprintf(stderr, "prefaulted: %ld faults\n", delta);
  mpx_segment_free(s);

  s = make(size, 0, NULL);
  before = minflt();
  touch(mpx_segment_base(s), size);
  delta = minflt() - before;
  CU_ASSERT(delta >= (long)pages);
  if (delta < (long)pages)
    fprintf(stderr, "not prefaulted: %ld faults\n", delta);
  mpx_segment_free(s);
}

static void test_prefault_range(void) {
  mpx_segment_t *s = make(16 * MiB, 0, NULL);
  char *p = mpx_segment_base(s);
  long before, delta;

  /* An unaligned range covers the pages it touches. */
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 4 * MiB + 100, 4 * MiB), 0);
  before = minflt();
  touch(p + 4 * MiB, 4 * MiB + page());
  delta = minflt() - before;
  CU_ASSERT(delta < 16);
  before = minflt();
  touch(p + 10 * MiB, 4 * MiB);
  delta = minflt() - before;
  CU_ASSERT(delta >= (long)(4 * MiB / page()));

  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 0, 0), 0);
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 16 * MiB, 0), 0);
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 0, 16 * MiB), 0);
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 16 * MiB - 1, 2), MPX_ERANGE);
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 16 * MiB + 1, 0), MPX_ERANGE);
  CU_ASSERT_EQUAL(mpx_segment_prefault(s, 1, SIZE_MAX), MPX_ERANGE);
  mpx_segment_free(s);
}

static int read_first_line(const char *path, char *buf, size_t n) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  if (fgets(buf, (int)n, f) == NULL) buf[0] = '\0';
  fclose(f);
  return 0;
}

static void test_hugepages(void) {
  mpx_segment_t *s = make(MiB + 1, MPX_SEGMENT_HUGEPAGES, NULL);
  unsigned f = mpx_segment_flags(s), f2;
  char nr[32] = "", thp[256] = "";
  mpx_segment_t *a;

  /* Coherent in any case: HUGETLB implies HUGEPAGES and 2 MiB pages. */
  if (f & MPX_SEGMENT_HUGETLB) {
    CU_ASSERT(f & MPX_SEGMENT_HUGEPAGES);
    CU_ASSERT_EQUAL(mpx_segment_size(s) % (2 * MiB), 0);
  } else {
    CU_ASSERT_EQUAL(mpx_segment_size(s), MiB + page());
  }
  CU_ASSERT_FALSE(f & MPX_SEGMENT_PREFAULT);
  /* Here: no reserved huge pages, and THP never backs shmem. */
  if (read_first_line("/proc/sys/vm/nr_hugepages", nr, sizeof nr) == 0 &&
      atoi(nr) == 0)
    CU_ASSERT_FALSE(f & MPX_SEGMENT_HUGETLB);
  if (read_first_line("/sys/kernel/mm/transparent_hugepage/shmem_enabled",
                      thp, sizeof thp) == 0 &&
      strstr(thp, "[never]") != NULL && !(f & MPX_SEGMENT_HUGETLB))
    CU_ASSERT_FALSE(f & MPX_SEGMENT_HUGEPAGES);
  memset(mpx_segment_base(s), 7, mpx_segment_size(s));

  /* An attached copy reports HUGETLB exactly when the original does. */
  CU_ASSERT_EQUAL_FATAL(mpx_segment_attach(&a, mpx_segment_fd(s), 0), 0);
  f2 = mpx_segment_flags(a);
  CU_ASSERT_EQUAL(!!(f2 & MPX_SEGMENT_HUGETLB), !!(f & MPX_SEGMENT_HUGETLB));
  CU_ASSERT_EQUAL(((char *)mpx_segment_base(a))[MiB], 7);
  mpx_segment_free(a);
  mpx_segment_free(s);

  /* Without the flag, never reported. */
  s = make(MiB, MPX_SEGMENT_PREFAULT, NULL);
  CU_ASSERT_EQUAL(mpx_segment_flags(s) & ~MPX_SEGMENT_PREFAULT, 0);
  mpx_segment_free(s);
}

static int dev_shm_has(const char *part) {
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  int n = 0;
  if (d == NULL) return -1;
  while ((e = readdir(d)) != NULL) n += strstr(e->d_name, part) != NULL;
  closedir(d);
  return n;
}

static void test_nothing_in_dev_shm(void) {
  char name[64];
  mpx_segment_t *s;
  pid_t pid;

  snprintf(name, sizeof name, "mpxt_%d_seg", (int)getpid());
  s = make(MiB, 0, name);
  CU_ASSERT_EQUAL(dev_shm_has(name), 0);
  /* Not even after a child holding it is killed. */
  pid = fork();
  if (pid == 0) {
    memset(mpx_segment_base(s), 1, MiB);
    pause();
    _exit(0);
  }
  kill(pid, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  mpx_segment_free(s);
  CU_ASSERT_EQUAL(dev_shm_has(name), 0);
}

static long shmem_kb(void) {
  char line[256];
  long kb = -1;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f == NULL) return -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "Shmem: %ld kB", &kb) == 1) break;
  fclose(f);
  return kb;
}

/* The memory goes back to the system with the last mapping. Shmem is a
 * system-wide counter that other processes (parallel suites) can blur,
 * hence the margin and a few tries. */
static void test_memory_freed(void) {
  long before = 0, after = 0;
  int try, ok = 0;

  for (try = 0; try < 3 && !ok; try++) {
    mpx_segment_t *s = make(64 * MiB, MPX_SEGMENT_PREFAULT, NULL), *a;
    CU_ASSERT_EQUAL_FATAL(mpx_segment_attach(&a, mpx_segment_fd(s), 0), 0);
    mpx_segment_free(s);
    before = shmem_kb();
    mpx_segment_free(a);
    after = shmem_kb();
    if (before < 0) {
      fprintf(stderr, "no Shmem in /proc/meminfo: skipped\n");
      return;
    }
    ok = before - after >= 48 * 1024;
  }
  CU_ASSERT(ok);
  if (!ok) fprintf(stderr, "Shmem %ld kB -> %ld kB\n", before, after);
}

static void test_sealed(void) {
  mpx_segment_t *s = make(4 * page(), 0, NULL);
  int fd = mpx_segment_fd(s), seals = fcntl(fd, F_GET_SEALS);
  struct stat st;

  CU_ASSERT(seals >= 0 && (seals & F_SEAL_SHRINK));
  CU_ASSERT_EQUAL(ftruncate(fd, (off_t)page()), -1);
  CU_ASSERT_EQUAL(errno, EPERM);
  CU_ASSERT_EQUAL(ftruncate(fd, 0), -1);
  CU_ASSERT_EQUAL(ftruncate(fd, (off_t)(8 * page())), -1);
  CU_ASSERT_EQUAL(fstat(fd, &st), 0);
  CU_ASSERT_EQUAL((size_t)st.st_size, 4 * page());
  /* The whole mapping is still there. */
  ((char *)mpx_segment_base(s))[4 * page() - 1] = 1;
  mpx_segment_free(s);
}

MPX_TEST_MAIN("segment",
              MPX_TEST(test_create_rw),
              MPX_TEST(test_size_rounding),
              MPX_TEST(test_fork_child_writes),
              MPX_TEST(test_send_recv),
              MPX_TEST(test_recv_checks),
              MPX_TEST(test_attach),
              MPX_TEST(test_attach_not_memfd),
              MPX_TEST(test_prefault),
              MPX_TEST(test_prefault_range),
              MPX_TEST(test_hugepages),
              MPX_TEST(test_nothing_in_dev_shm),
              MPX_TEST(test_memory_freed),
              MPX_TEST(test_sealed))
