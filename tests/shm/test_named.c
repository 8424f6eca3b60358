/* Tests of named shared memory and its registry: create/attach/unlink,
 * names, modes, reaping what dead children created, Python interop. Every
 * name starts with "mpxt_<pid>_" and the last test checks none is left. */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "mpx.h"

static char prefix[32];

/* The suite's pid, also in the children it forks. */
__attribute__((constructor)) static void init_prefix(void) {
  snprintf(prefix, sizeof prefix, "mpxt_%d_", (int)getpid());
}

static const char *tname(const char *suffix) {
  static char buf[4][128];
  static int i;
  char *b = buf[i++ % 4];
  snprintf(b, 128, "%s%s", prefix, suffix);
  return b;
}

static int exists(const char *name) {
  char path[300];
  struct stat st;
  snprintf(path, sizeof path, "/dev/shm/%s", name);
  return stat(path, &st) == 0;
}

static mpx_shm_t *create(const char *name, size_t size, unsigned flags) {
  mpx_shm_t *m = NULL;
  int rc = mpx_shm_create(&m, name, size, flags);
  if (rc != 0) fprintf(stderr, "create %s: %s\n", name, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return m;
}

static void test_create_attach(void) {
  const char *name = tname("a");
  mpx_shm_t *m = create(name, 10000, 0), *a = NULL;

  CU_ASSERT_STRING_EQUAL(mpx_shm_name(m), name);
  CU_ASSERT_EQUAL(mpx_shm_size(m), 10000);
  CU_ASSERT(exists(name));
  CU_ASSERT_EQUAL(((char *)mpx_shm_buf(m))[9999], 0);
  strcpy(mpx_shm_buf(m), "named");
  /* A second mapping of the same object, with or without the '/'. */
  CU_ASSERT_EQUAL_FATAL(mpx_shm_attach(&a, name, 0), 0);
  CU_ASSERT_NOT_EQUAL(mpx_shm_buf(a), mpx_shm_buf(m));
  CU_ASSERT_EQUAL(mpx_shm_size(a), 10000);
  CU_ASSERT_STRING_EQUAL(mpx_shm_buf(a), "named");
  mpx_shm_close(a);
  {
    char slash[140];
    snprintf(slash, sizeof slash, "/%s", name);
    CU_ASSERT_EQUAL_FATAL(mpx_shm_attach(&a, slash, MPX_SHM_PREFAULT), 0);
    CU_ASSERT_STRING_EQUAL(mpx_shm_name(a), name);
    CU_ASSERT_STRING_EQUAL(mpx_shm_buf(a), "named");
  }
  mpx_shm_close(m);
  CU_ASSERT(exists(name)); /* close never unlinks */
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);
  CU_ASSERT(!exists(name));
  /* Mappings stay valid after the unlink. */
  CU_ASSERT_STRING_EQUAL(mpx_shm_buf(a), "named");
  mpx_shm_close(a);
  mpx_shm_close(NULL);

  /* A leading '/' on create is not part of the name. */
  {
    char slash[140];
    snprintf(slash, sizeof slash, "/%s", tname("b"));
    m = create(slash, 1, MPX_SHM_PREFAULT);
    CU_ASSERT_STRING_EQUAL(mpx_shm_name(m), tname("b"));
    CU_ASSERT_EQUAL(mpx_shm_size(m), 1);
    mpx_shm_close(m);
    CU_ASSERT_EQUAL(mpx_shm_unlink(slash), 0);
  }
}

static void test_attach_never_unlinks(void) {
  const char *name = tname("child");
  mpx_shm_t *m = create(name, 4096, 0);
  pid_t pid;

  strcpy(mpx_shm_buf(m), "parent");
  pid = fork();
  if (pid == 0) {
    mpx_shm_t *a;
    if (mpx_shm_attach(&a, name, 0) != 0) _exit(1);
    if (strcmp(mpx_shm_buf(a), "parent") != 0) _exit(2);
    strcpy(mpx_shm_buf(a), "child");
    mpx_shm_close(a);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT(exists(name));
  CU_ASSERT_STRING_EQUAL(mpx_shm_buf(m), "child");
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);
}

static void test_mode(void) {
  const char *name = tname("mode");
  mpx_shm_t *m;
  char path[300];
  struct stat st;
  mode_t old = umask(0);

  m = create(name, 12345, 0);
  umask(old);
  snprintf(path, sizeof path, "/dev/shm/%s", name);
  CU_ASSERT_EQUAL_FATAL(stat(path, &st), 0);
  CU_ASSERT_EQUAL(st.st_mode & 07777, 0600);
  CU_ASSERT_EQUAL(st.st_size, 12345);
  CU_ASSERT_EQUAL(st.st_uid, geteuid());
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);
}

static void test_exists_and_missing(void) {
  const char *name = tname("dup");
  mpx_shm_t *m = create(name, 100, 0), *m2 = (mpx_shm_t *)1;

  strcpy(mpx_shm_buf(m), "first");
  CU_ASSERT_EQUAL(mpx_shm_create(&m2, name, 100, 0), MPX_EEXIST);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), name));
  CU_ASSERT_PTR_EQUAL(m2, (mpx_shm_t *)1);
  /* The failed create left the first one alone. */
  CU_ASSERT(exists(name));
  CU_ASSERT_STRING_EQUAL(mpx_shm_buf(m), "first");
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);

  CU_ASSERT_EQUAL(mpx_shm_attach(&m2, name, 0), MPX_ENOENT);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), name));
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), MPX_ENOENT);
  CU_ASSERT_PTR_EQUAL(m2, (mpx_shm_t *)1);
}

static void test_bad_names(void) {
  char longname[300];
  mpx_shm_t *m = (mpx_shm_t *)1;
  size_t n = strlen(tname(""));

  CU_ASSERT_EQUAL(mpx_shm_create(&m, "", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, "/", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, "a/b", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, "//a", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, ".", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, "/..", 10, 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_attach(&m, "x/y", 0), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_unlink("x/y"), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_unlink(NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_shm_create(&m, tname("zero"), 0, 0), MPX_EINVAL);
  CU_ASSERT(!exists(tname("zero")));

  /* 250 bytes is the limit, the leading '/' not counted. */
  memset(longname, 'x', sizeof longname);
  memcpy(longname, tname(""), n);
  longname[251] = '\0';
  CU_ASSERT_EQUAL(mpx_shm_create(&m, longname, 10, 0), MPX_ENAMETOOLONG);
  CU_ASSERT_EQUAL(mpx_shm_attach(&m, longname, 0), MPX_ENAMETOOLONG);
  CU_ASSERT_PTR_EQUAL(m, (mpx_shm_t *)1);
  longname[250] = '\0';
  m = create(longname, 10, 0);
  CU_ASSERT(exists(longname));
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_unlink(longname), 0);
}

static void test_random_name(void) {
  mpx_shm_t *a = create(NULL, 64, 0), *b = create(NULL, 64, 0);
  const char *n = mpx_shm_name(a);
  size_t i;

  CU_ASSERT_EQUAL(strlen(n), 20);
  CU_ASSERT_EQUAL(strncmp(n, "mpx_", 4), 0);
  for (i = 4; i < strlen(n); i++)
    CU_ASSERT_PTR_NOT_NULL(strchr("0123456789abcdef", n[i]));
  CU_ASSERT_STRING_NOT_EQUAL(n, mpx_shm_name(b));
  CU_ASSERT(exists(n));
  CU_ASSERT_EQUAL(mpx_shm_unlink(mpx_shm_name(a)), 0);
  CU_ASSERT_EQUAL(mpx_shm_unlink(mpx_shm_name(b)), 0);
  CU_ASSERT(!exists(mpx_shm_name(a)));
  mpx_shm_close(a);
  mpx_shm_close(b);
}

static mpx_shm_registry_t *new_registry(size_t capacity) {
  mpx_shm_registry_t *r = NULL;
  int rc = mpx_shm_registry_new(&r, capacity);
  if (rc != 0) fprintf(stderr, "registry: %s\n", mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return r;
}

/* Child: create `n` names "<prefix>c<tag>_<i>" (closed, not unlinked), then
 * exit or, with `die`, kill itself. */
static pid_t child_creates(int tag, int n, unsigned flags, int die) {
  pid_t pid = fork();
  if (pid == 0) {
    int i;
    for (i = 0; i < n; i++) {
      char s[32];
      mpx_shm_t *m;
      snprintf(s, sizeof s, "c%d_%d", tag, i);
      if (mpx_shm_create(&m, tname(s), 4096, flags) != 0) _exit(1);
      mpx_shm_close(m);
    }
    if (die) raise(SIGKILL);
    _exit(0);
  }
  return pid;
}

static int child_names_exist(int tag, int n) {
  int i, k = 0;
  for (i = 0; i < n; i++) {
    char s[32];
    snprintf(s, sizeof s, "c%d_%d", tag, i);
    k += exists(tname(s));
  }
  return k;
}

static void test_registry_reap(void) {
  mpx_shm_registry_t *r = new_registry(0);
  pid_t p1, p2, p3;
  mpx_shm_t *mine;

  mpx_shm_registry_install(r);
  p1 = child_creates(1, 3, 0, 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(p1), 0);
  p2 = child_creates(2, 3, 0, 1);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(p2), -SIGKILL);
  p3 = child_creates(3, 2, MPX_SHM_UNTRACKED, 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(p3), 0);
  mine = create(tname("parent"), 10, 0);

  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, p1), 3);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, p2), 3);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, p3), 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, getpid()), 1);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 7);
  CU_ASSERT_EQUAL(child_names_exist(1, 3), 3);
  CU_ASSERT_EQUAL(child_names_exist(2, 3), 3);

  /* Exactly that child's names go. */
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, p1), 3);
  CU_ASSERT_EQUAL(child_names_exist(1, 3), 0);
  CU_ASSERT_EQUAL(child_names_exist(2, 3), 3);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, p1), 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, p1), 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, p2), 3);
  CU_ASSERT_EQUAL(child_names_exist(2, 3), 0);
  /* Untracked names are not the registry's business. */
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, p3), 0);
  CU_ASSERT_EQUAL(child_names_exist(3, 2), 2);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("c3_0")), 0);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("c3_1")), 0);

  /* mpx_shm_unlink drops the entry. */
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 1);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("parent")), 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 0);
  mpx_shm_close(mine);

  /* A name unlinked behind the registry's back is dropped, not counted. */
  mine = create(tname("gone"), 10, 0);
  mpx_shm_close(mine);
  {
    char path[140];
    snprintf(path, sizeof path, "/%s", tname("gone"));
    CU_ASSERT_EQUAL(shm_unlink(path), 0);
  }
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 1);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, 0), 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 0);

  /* reap(0) takes everything. */
  p1 = child_creates(4, 2, 0, 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(p1), 0);
  mine = create(tname("parent2"), 10, 0);
  mpx_shm_close(mine);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, 0), 3);
  CU_ASSERT_EQUAL(child_names_exist(4, 2), 0);
  CU_ASSERT(!exists(tname("parent2")));

  mpx_shm_registry_install(NULL);
  mine = create(tname("uninstalled"), 10, 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 0);
  mpx_shm_close(mine);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("uninstalled")), 0);
  mpx_shm_registry_free(r);
}

static void test_registry_full(void) {
  mpx_shm_registry_t *r = new_registry(2);
  mpx_shm_t *a = create(tname("f0"), 10, 0), *b = create(tname("f1"), 10, 0);
  mpx_shm_t *c = (mpx_shm_t *)1, *u;

  /* Installed after the first two: they are not tracked. */
  mpx_shm_registry_install(r);
  mpx_shm_close(a);
  mpx_shm_close(b);
  a = create(tname("f2"), 10, 0);
  b = create(tname("f3"), 10, 0);
  CU_ASSERT_EQUAL(mpx_shm_create(&c, tname("f4"), 10, 0), MPX_ENOSPC);
  CU_ASSERT_PTR_EQUAL(c, (mpx_shm_t *)1);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "registry"));
  /* Nothing untracked is left behind. */
  CU_ASSERT(!exists(tname("f4")));
  /* Untracked creates still work. */
  u = create(tname("f5"), 10, MPX_SHM_UNTRACKED);
  mpx_shm_close(u);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 2);
  /* A freed entry is reused. */
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("f2")), 0);
  c = create(tname("f4"), 10, 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 2);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, getpid()), 2);
  CU_ASSERT(!exists(tname("f3")));
  CU_ASSERT(!exists(tname("f4")));
  mpx_shm_close(a);
  mpx_shm_close(b);
  mpx_shm_close(c);
  /* Freeing the installed registry uninstalls it. */
  mpx_shm_registry_free(r);
  a = create(tname("f6"), 10, 0);
  mpx_shm_close(a);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("f6")), 0);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("f5")), 0);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("f0")), 0);
  CU_ASSERT_EQUAL(mpx_shm_unlink(tname("f1")), 0);
}

static void test_registry_attach(void) {
  mpx_shm_registry_t *r = new_registry(16), *r2 = NULL;
  mpx_segment_opts_t o;
  mpx_segment_t *seg;
  mpx_shm_t *m;

  CU_ASSERT_EQUAL_FATAL(
      mpx_shm_registry_attach(&r2, mpx_shm_registry_fd(r)), 0);
  CU_ASSERT_NOT_EQUAL(mpx_shm_registry_fd(r2), mpx_shm_registry_fd(r));
  mpx_shm_registry_install(r2);
  m = create(tname("att"), 10, 0);
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, getpid()), 1);
  CU_ASSERT_EQUAL(mpx_shm_registry_reap(r, 0), 1);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r2, 0), 0);
  CU_ASSERT(!exists(tname("att")));
  mpx_shm_registry_install(NULL);
  mpx_shm_registry_free(r2);
  mpx_shm_registry_free(r);

  /* A segment that is not a registry. */
  memset(&o, 0, sizeof o);
  o.size = 1 << 20;
  CU_ASSERT_EQUAL_FATAL(mpx_segment_new(&seg, &o), 0);
  r2 = (mpx_shm_registry_t *)1;
  CU_ASSERT_EQUAL(mpx_shm_registry_attach(&r2, mpx_segment_fd(seg)),
                  MPX_EINVAL);
  {
    int p[2];
    CU_ASSERT_EQUAL_FATAL(pipe(p), 0);
    CU_ASSERT_EQUAL(mpx_shm_registry_attach(&r2, p[0]), MPX_EINVAL);
    close(p[0]);
    close(p[1]);
  }
  CU_ASSERT_PTR_EQUAL(r2, (mpx_shm_registry_t *)1);
  mpx_segment_free(seg);
}

/* Children killed at random points while they create and unlink, often
 * holding the registry lock: the registry stays usable and reaping leaves
 * nothing behind, whatever point the kill hit. */
static void test_registry_killed_children(void) {
  mpx_shm_registry_t *r = new_registry(64);
  int round, leaked = 0, ok = 1;

  mpx_shm_registry_install(r);
  for (round = 0; round < 20; round++) {
    struct timespec ts = {0, (long)(1 + round % 5) * 1000000L};
    pid_t pids[2];
    int k;
    for (k = 0; k < 2; k++) {
      pids[k] = fork();
      if (pids[k] == 0) {
        unsigned long i;
        int j;
        for (i = 0;; i++) {
          char s[48];
          mpx_shm_t *m;
          snprintf(s, sizeof s, "k%d_%d_%lu", round, k, i % 4);
          if (mpx_shm_create(&m, tname(s), 4096, 0) == 0) mpx_shm_close(m);
          for (j = 0; i % 4 == 3 && j < 4; j++) {
            snprintf(s, sizeof s, "k%d_%d_%d", round, k, j);
            mpx_shm_unlink(tname(s));
          }
        }
      }
    }
    nanosleep(&ts, NULL);
    for (k = 0; k < 2; k++) {
      kill(pids[k], SIGKILL);
      if (mpx_test_wait_exit(pids[k]) != -SIGKILL) ok = 0;
    }
    for (k = 0; k < 2; k++) {
      int j;
      if (mpx_shm_registry_reap(r, pids[k]) < 0) ok = 0;
      if (mpx_shm_registry_count(r, pids[k]) != 0) ok = 0;
      for (j = 0; j < 4; j++) {
        char s[48];
        snprintf(s, sizeof s, "k%d_%d_%d", round, k, j);
        if (exists(tname(s))) {
          leaked++;
          mpx_shm_unlink(tname(s));
        }
      }
    }
  }
  CU_ASSERT(ok);
  CU_ASSERT_EQUAL(leaked, 0);
  CU_ASSERT_EQUAL(mpx_shm_registry_count(r, 0), 0);
  mpx_shm_registry_install(NULL);
  mpx_shm_registry_free(r);
}

static int have_python(void) {
  return system("python3 -c 'import multiprocessing.shared_memory' "
                ">/dev/null 2>&1") == 0;
}

static void test_python_interop(void) {
  const char *name = tname("py");
  char cmd[2048];
  mpx_shm_t *m, *a;

  if (!have_python()) {
    fprintf(stderr, "python3 with multiprocessing.shared_memory missing: "
                    "skipped\n");
    return;
  }
  /* C creates, Python attaches, reads, writes back. */
  m = create(name, 5000, 0);
  memcpy(mpx_shm_buf(m), "from C", 6);
  snprintf(cmd, sizeof cmd,
           "python3 -c '\n"
           "import sys\n"
           "from multiprocessing import shared_memory, resource_tracker\n"
           "shm = shared_memory.SharedMemory(name=\"%s\")\n"
           "resource_tracker.unregister(shm._name, \"shared_memory\")\n"
           "ok = bytes(shm.buf[:6]) == b\"from C\" and shm.size == 5000\n"
           "shm.buf[100:114] = b\"from Python!!!\"\n"
           "shm.close()\n"
           "sys.exit(0 if ok else 3)\n"
           "'",
           name);
  CU_ASSERT_EQUAL(system(cmd), 0);
  CU_ASSERT_EQUAL(memcmp((char *)mpx_shm_buf(m) + 100, "from Python!!!", 14),
                  0);
  CU_ASSERT(exists(name));
  mpx_shm_close(m);
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);

  /* Python creates, C attaches. */
  name = tname("py2");
  snprintf(cmd, sizeof cmd,
           "python3 -c '\n"
           "from multiprocessing import shared_memory, resource_tracker\n"
           "shm = shared_memory.SharedMemory(name=\"%s\", create=True, "
           "size=333)\n"
           "resource_tracker.unregister(shm._name, \"shared_memory\")\n"
           "shm.buf[:9] = b\"py made\\0\\1\"\n"
           "shm.close()\n"
           "'",
           name);
  CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_shm_attach(&a, name, 0), 0);
  CU_ASSERT_EQUAL(mpx_shm_size(a), 333);
  CU_ASSERT_EQUAL(memcmp(mpx_shm_buf(a), "py made\0\1", 9), 0);
  mpx_shm_close(a);
  CU_ASSERT_EQUAL(mpx_shm_unlink(name), 0);
}

/* Last: every test removed what it created. */
static void test_nothing_left(void) {
  DIR *d = opendir("/dev/shm");
  struct dirent *e;
  int left = 0;

  CU_ASSERT_PTR_NOT_NULL_FATAL(d);
  while ((e = readdir(d)) != NULL) {
    if (strncmp(e->d_name, prefix, strlen(prefix)) == 0) {
      fprintf(stderr, "left in /dev/shm: %s\n", e->d_name);
      left++;
    }
  }
  closedir(d);
  CU_ASSERT_EQUAL(left, 0);
}

MPX_TEST_MAIN("named",
              MPX_TEST(test_create_attach),
              MPX_TEST(test_attach_never_unlinks),
              MPX_TEST(test_mode),
              MPX_TEST(test_exists_and_missing),
              MPX_TEST(test_bad_names),
              MPX_TEST(test_random_name),
              MPX_TEST(test_registry_reap),
              MPX_TEST(test_registry_full),
              MPX_TEST(test_registry_attach),
              MPX_TEST(test_registry_killed_children),
              MPX_TEST(test_python_interop),
              MPX_TEST(test_nothing_left))
