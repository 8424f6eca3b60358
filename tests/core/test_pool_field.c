/* Pools, regressions from the field findings:
 *  - a TEMPORARY pool whose last worker is gone is broken at once:
 *    apply, apply_async (error callback), map and imap return MPX_EBROKEN
 *    naming the cause, instead of waiting out their timeout (or forever);
 *  - a default (fork) pool that restarts a worker does not warn about the
 *    pool's own loop thread ("fork start method used by a process with N
 *    threads"): the child program pool_fork_child shows it on stderr;
 *  - mpx_pool_stats right after map, map_fixed and apply return shows no
 *    arena block in use.
 * Every wait here is unbounded (timeout -1) on purpose: a call that hangs
 * is caught by the alarm each test sets (and the suite's ctest timeout). */
#define _GNU_SOURCE
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

#define GUARD_S 60 /* SIGALRM kills a test that hangs */


/* The first byte, as the result: reads the argument (in the arena when
 * large) and answers with a small result. */
static int first_byte(mpx_task_t *t, const void *in, size_t len) {
  unsigned char b = len ? *(const unsigned char *)in : 0;
  return mpx_task_result(t, &b, 1);
}

/* The argument back (large: written into an arena block). */
static int echo(mpx_task_t *t, const void *in, size_t len) {
  void *o = mpx_task_result_buf(t, len);
  if (o == NULL && len) return MPX_ENOMEM;
  memcpy(o, in, len);
  return 0;
}

static mpx_pool_t *temp_pool(unsigned n) {
  mpx_pool_opts_t o = {.processes = n, .restart = MPX_RESTART_TEMPORARY,
                       .quiet = true};
  mpx_pool_t *p = NULL;
  if (mpx_pool_new(&p, &o) != 0)
    fprintf(stderr, "pool_new: %s\n", mpx_last_error());
  return p;
}

/* Pids of the pool's n workers: applies until n distinct ones answered. */
static int worker_pids(mpx_pool_t *p, unsigned n, pid_t *pids) {
  unsigned got = 0;
  for (int tries = 0; got < n && tries < 10000; tries++) {
    double s = 0.05;
    mpx_async_t *a[8];
    unsigned k, m = 2 * n < 8 ? 2 * n : 8;
    for (k = 0; k < m; k++)
      if (mpx_pool_apply_async(p, MPX_FUNC(mpx_test_sleepy), &s, sizeof s, NULL, NULL,
                               NULL, &a[k]) != 0)
        return -1;
    for (k = 0; k < m; k++) mpx_async_free(a[k]);
    void *res;
    size_t len;
    if (mpx_pool_apply(p, MPX_FUNC(mpx_test_pid_task), NULL, 0, &res, &len, -1) != 0)
      return -1;
    pid_t pid = *(int32_t *)res;
    free(res);
    unsigned i;
    for (i = 0; i < got && pids[i] != pid; i++) {
    }
    if (i == got) pids[got++] = pid;
  }
  return got == n ? 0 : -1;
}

/* Waits until the pool knows that none of its workers is alive. */
static void wait_no_worker(mpx_pool_t *p) {
  mpx_pool_stats_t st;
  do {
    mpx_test_sleep(0.005);
    mpx_pool_stats(p, &st);
  } while (st.workers > 0);
}

/* The cause names the last worker to go: one of pids[0..n). */
static void check_msg(const char *m, const pid_t *pids, unsigned n) {
  char want[64];
  bool named = false;
  for (unsigned i = 0; i < n && !named; i++) {
    snprintf(want, sizeof want, "(pid %d) killed by signal 9 (SIGKILL)",
             (int)pids[i]);
    named = strstr(m, want) != NULL;
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "no worker left"));
  CU_ASSERT_TRUE(named);
  CU_ASSERT_PTR_NOT_NULL(strstr(m, "restart policy temporary"));
  if (strstr(m, "no worker left") == NULL || !named)
    fprintf(stderr, "message: '%s'\n", m);
}

static _Atomic int ok_calls, err_calls;
static void on_ok(mpx_async_t *a, void *arg) {
  (void)a, (void)arg;
  atomic_fetch_add(&ok_calls, 1);
}
static void on_err(mpx_async_t *a, void *arg) {
  (void)arg;
  if (strstr(mpx_async_error(a), "no worker left") != NULL)
    atomic_fetch_add(&err_calls, 1);
}

static int count_to(void *arg, const void **d, size_t *l) {
  static int64_t x;
  int *left = arg;
  if (*left == 0) return 0;
  (*left)--;
  x = *left;
  *d = &x;
  *l = sizeof x;
  return 1;
}

/* A pool of n TEMPORARY workers, all SIGKILLed while an apply_async is
 * pending (a task sleeping 1000 s on one of them): every call fails with
 * MPX_EBROKEN and the cause, at once. */
static void temporary_all_killed(unsigned n) {
  alarm(GUARD_S);
  mpx_pool_t *p = temp_pool(n);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  pid_t pids[4];
  CU_ASSERT_EQUAL_FATAL(worker_pids(p, n, pids), 0);
  ok_calls = err_calls = 0;
  double s = 1000;
  mpx_async_t *pending;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async(p, MPX_FUNC(mpx_test_sleepy), &s, sizeof s,
                                             on_ok, on_err, NULL, &pending), 0);
  for (unsigned i = 0; i < n; i++) kill(pids[i], SIGKILL);
  /* The pending task fails at once (its 1000 s and retries notwithstanding). */
  const void *d;
  size_t len;
  CU_ASSERT_EQUAL(mpx_async_get(pending, &d, &len, -1), MPX_EBROKEN);
  check_msg(mpx_last_error(), pids, n);
  check_msg(mpx_async_error(pending), pids, n);
  mpx_async_free(pending);
  wait_no_worker(p);

  /* Later calls: apply, apply_async's error callback, map, map_fixed, imap. */
  int64_t x = 3;
  void *res = NULL;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(mpx_test_pid_task), &x, 8, &res, &len, -1),
                  MPX_EBROKEN);
  check_msg(mpx_last_error(), pids, n);
  mpx_async_t *a = NULL;
  int rc = mpx_pool_apply_async(p, MPX_FUNC(mpx_test_pid_task), &x, 8, on_ok, on_err,
                                NULL, &a);
  if (rc == 0) { /* refused at submit, or failed through its callback */
    CU_ASSERT_EQUAL(mpx_async_wait(a, -1), 0);
    CU_ASSERT_FALSE(mpx_async_successful(a));
    mpx_async_free(a);
  } else {
    CU_ASSERT_EQUAL(rc, MPX_EBROKEN);
  }
  mpx_conn_buf_t in[4] = {{&x, 8}, {&x, 8}, {&x, 8}, {&x, 8}};
  mpx_pool_result_t out[4];
  CU_ASSERT_EQUAL(mpx_pool_map(p, MPX_FUNC(mpx_test_pid_task), in, 4, out, -1), MPX_EBROKEN);
  check_msg(mpx_last_error(), pids, n);
  mpx_pool_results_free(out, 4);
  int64_t fin[4] = {1, 2, 3, 4}, fout[4];
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(mpx_test_pid_task), fin, 8, 4, fout, 8,
                                     NULL, -1), MPX_EBROKEN);
  mpx_imap_t *it = NULL;
  int left = 10;
  rc = mpx_pool_imap(p, MPX_FUNC(mpx_test_pid_task), count_to, &left, true, 0, &it);
  if (rc == 0) {
    CU_ASSERT_EQUAL(mpx_imap_next(it, &d, &len, NULL, -1), MPX_EBROKEN);
    check_msg(mpx_last_error(), pids, n);
    mpx_imap_free(it);
  } else {
    CU_ASSERT_EQUAL(rc, MPX_EBROKEN);
  }
  CU_ASSERT_EQUAL(atomic_load(&ok_calls), 0);
  CU_ASSERT_EQUAL(atomic_load(&err_calls), 1 + (a != NULL));
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  CU_ASSERT_TRUE(st.broken);
  CU_ASSERT_EQUAL(st.workers, 0);
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, -1), 0);
  mpx_pool_free(p);
  alarm(0);
}

static void test_temporary_one_worker(void) { temporary_all_killed(1); }
static void test_temporary_two_workers(void) { temporary_all_killed(2); }

/* A map and an imap waiting when the last worker goes: both return
 * MPX_EBROKEN. One worker of two killed first: the pool goes on. */
static void test_temporary_waiting_calls(void) {
  alarm(GUARD_S);
  mpx_pool_t *p = temp_pool(2);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  pid_t pids[2];
  CU_ASSERT_EQUAL_FATAL(worker_pids(p, 2, pids), 0);
  kill(pids[0], SIGKILL);
  /* One left: work still gets done. */
  mpx_pool_stats_t st;
  do {
    mpx_test_sleep(0.005);
    mpx_pool_stats(p, &st);
  } while (st.workers > 1);
  void *res = NULL;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(mpx_test_pid_task), NULL, 0, &res, &len, -1), 0);
  CU_ASSERT_TRUE(res && *(int32_t *)res == pids[1]);
  free(res);
  CU_ASSERT_FALSE(st.broken);

  /* A map of long tasks and an imap wait on the last worker; it dies. */
  double s = 1000;
  mpx_conn_buf_t in[3] = {{&s, 8}, {&s, 8}, {&s, 8}};
  mpx_pool_result_t out[3];
  mpx_async_t *m;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_map_async(p, MPX_FUNC(mpx_test_sleepy), in, 3, out, NULL,
                                           NULL, NULL, &m), 0);
  int left = 1000;
  mpx_imap_t *it;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_imap(p, MPX_FUNC(mpx_test_pid_task), count_to, &left,
                                      false, 4, &it), 0);
  /* Killed once it runs the first of the long tasks. */
  CU_ASSERT(mpx_test_wait_until(mpx_test_in_nanosleep, pids[1], 30));
  kill(pids[1], SIGKILL);
  const void *d;
  int rc;
  /* imap results that came before the death may be handed out first. */
  while ((rc = mpx_imap_next(it, &d, &len, NULL, -1)) == 1) {
  }
  CU_ASSERT_EQUAL(rc, MPX_EBROKEN);
  check_msg(mpx_last_error(), pids + 1, 1);
  mpx_imap_free(it);
  CU_ASSERT_EQUAL(mpx_async_wait(m, -1), 0);
  CU_ASSERT_EQUAL(mpx_async_get(m, &d, &len, -1), MPX_EBROKEN);
  mpx_async_free(m);
  mpx_pool_results_free(out, 3);
  mpx_pool_free(p);
  alarm(0);
}

/* ---- no warning about the pool's own thread ----------------------------------------- */

static void test_restart_does_not_warn(void) {
  alarm(GUARD_S);
  int out[2], err[2];
  CU_ASSERT_EQUAL_FATAL(pipe(out), 0);
  CU_ASSERT_EQUAL_FATAL(pipe(err), 0);
  pid_t pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    dup2(out[1], 1);
    dup2(err[1], 2);
    close(out[0]), close(out[1]), close(err[0]), close(err[1]);
    unsetenv("MPX_START_METHOD");
    setenv("MPX_LOG", "warn", 1);
    execl(POOL_FORK_CHILD, POOL_FORK_CHILD, (char *)NULL);
    _exit(126);
  }
  close(out[1]);
  close(err[1]);
  char *o = mpx_test_read_all(out[0], NULL);
  char *e = mpx_test_read_all(err[0], NULL);
  close(out[0]);
  close(err[0]);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_PTR_NOT_NULL(o && strstr(o, "restarted"));
  CU_ASSERT_PTR_NULL(e ? strstr(e, "fork start method used by a process with") : "");
  if (e && *e) fprintf(stderr, "child's stderr:\n%s", e);
  free(o);
  free(e);
  alarm(0);
}

/* Our child named `comm`, or 0. */
static pid_t child_named(const char *comm) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  pid_t found = 0;
  char path[300], buf[512], want[64];
  snprintf(want, sizeof want, "(%s)", comm);
  while (d && (e = readdir(d)) != NULL && found == 0) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) {
      char *p = strrchr(buf, ')');
      int ppid;
      char st;
      if (p && strstr(buf, want) && sscanf(p + 2, "%c %d", &st, &ppid) == 2 &&
          ppid == getpid() && st != 'Z')
        found = atoi(e->d_name);
    }
    fclose(f);
  }
  if (d) closedir(d);
  return found;
}

/* The fork workers come from the pool's zygote, a child of ours made at
 * creation; killed from outside, it takes its workers with it and the
 * pool goes on forking them itself. */
static void test_zygote_killed(void) {
  alarm(GUARD_S);
  mpx_pool_opts_t o = {.processes = 2, .name = "zt", .quiet = true,
                       .start_method = MPX_START_FORK};
  mpx_pool_t *p = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_new(&p, &o), 0);
  pid_t before[2], after[2];
  CU_ASSERT_EQUAL_FATAL(worker_pids(p, 2, before), 0);
  pid_t z = child_named("zt-zygote");
  CU_ASSERT_FATAL(z > 0);
  /* The workers are the zygote's children, not ours. */
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)before[0]);
  FILE *f = fopen(path, "r");
  int ppid = 0;
  if (f && fgets(buf, sizeof buf, f)) sscanf(strrchr(buf, ')') + 4, "%d", &ppid);
  if (f) fclose(f);
  CU_ASSERT_EQUAL(ppid, z);
  kill(z, SIGKILL);
  mpx_pool_stats_t st;
  do { /* both workers die with it and are replaced */
    mpx_test_sleep(0.005);
    mpx_pool_stats(p, &st);
  } while (st.started < 4 || st.workers < 2);
  CU_ASSERT_EQUAL(worker_pids(p, 2, after), 0);
  CU_ASSERT_TRUE(after[0] != before[0] && after[0] != before[1]);
  CU_ASSERT_FALSE(st.broken);
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, -1), 0);
  mpx_pool_free(p);
  CU_ASSERT_EQUAL(child_named("zt-zygote"), 0);
  alarm(0);
}

/* ---- the arena is empty when a call returns --------------------------------------------- */

typedef struct {
  unsigned char *buf;
  int n, next;
} big_gen_t;
static int big_next(void *arg, const void **d, size_t *l) {
  big_gen_t *g = arg;
  if (g->next == g->n) return 0;
  *d = g->buf + (size_t)g->next++ * (100 << 10);
  *l = 100 << 10;
  return 1;
}

static void test_arena_empty_after_return(void) {
  alarm(GUARD_S * 3);
  mpx_pool_opts_t o = {.processes = 2, .quiet = true};
  mpx_pool_t *p = NULL;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_new(&p, &o), 0);
  enum { N = 4, SZ = 100 << 10 };
  unsigned char *buf = malloc(N * SZ);
  CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
  mpx_conn_buf_t in[N];
  mpx_pool_result_t out[N];
  unsigned char fout[N];
  int bad_map = 0, bad_fixed = 0, bad_apply = 0, bad_echo = 0, bad_imap = 0;
  int failed = 0;
  mpx_pool_stats_t st;
  for (int k = 0; k < 300; k++) {
    for (int i = 0; i < N; i++) {
      memset(buf + i * SZ, k + i, SZ);
      in[i] = (mpx_conn_buf_t){buf + i * SZ, SZ};
    }
    failed += mpx_pool_map(p, MPX_FUNC(first_byte), in, N, out, -1) != 0;
    mpx_pool_stats(p, &st);
    bad_map += st.arena_blocks != 0;
    for (int i = 0; i < N; i++)
      failed += out[i].len != 1 || *(unsigned char *)out[i].data != (unsigned char)(k + i);
    mpx_pool_results_free(out, N);
    failed += mpx_pool_map_fixed(p, MPX_FUNC(first_byte), buf, SZ, N, fout, 1,
                                 NULL, -1) != 0;
    mpx_pool_stats(p, &st);
    bad_fixed += st.arena_blocks != 0;
    void *res = NULL;
    size_t len;
    failed += mpx_pool_apply(p, MPX_FUNC(first_byte), buf, SZ, &res, &len, -1) != 0;
    mpx_pool_stats(p, &st);
    bad_apply += st.arena_blocks != 0;
    free(res);
    /* Large results too: arena blocks both ways. */
    failed += mpx_pool_map(p, MPX_FUNC(echo), in, N, out, -1) != 0;
    mpx_pool_stats(p, &st);
    bad_echo += st.arena_blocks != 0;
    for (int i = 0; i < N; i++) failed += out[i].len != SZ;
    mpx_pool_results_free(out, N);
    /* imap, every result taken, then freed. */
    big_gen_t g = {.buf = buf, .n = N};
    mpx_imap_t *it;
    failed += mpx_pool_imap(p, MPX_FUNC(echo), big_next, &g, k % 2, 0, &it) != 0;
    const void *d;
    size_t l, got = 0;
    /* Every second round, the iterator is freed holding its last result
     * (no final call that returns 0). */
    while ((k % 4 < 2 || got < N) && mpx_imap_next(it, &d, &l, NULL, -1) == 1)
      got += l == SZ;
    failed += got != N;
    mpx_imap_free(it);
    mpx_pool_stats(p, &st);
    bad_imap += st.arena_blocks != 0;
  }
  mpx_pool_stats(p, &st);
  CU_ASSERT_TRUE(st.arena_args > 0);
  CU_ASSERT_TRUE(st.arena_results > 0);
  CU_ASSERT_EQUAL(failed, 0);
  CU_ASSERT_EQUAL(bad_map, 0);
  CU_ASSERT_EQUAL(bad_fixed, 0);
  CU_ASSERT_EQUAL(bad_apply, 0);
  CU_ASSERT_EQUAL(bad_echo, 0);
  CU_ASSERT_EQUAL(bad_imap, 0);
  if (bad_map + bad_fixed + bad_apply + bad_echo + bad_imap)
    fprintf(stderr, "blocks left after return: map %d, map_fixed %d, apply %d, "
            "echo map %d, imap %d (of 300 each)\n", bad_map, bad_fixed,
            bad_apply, bad_echo, bad_imap);
  free(buf);
  mpx_pool_free(p);
  alarm(0);
}

MPX_TEST_MAIN("pool_field", MPX_TEST(test_temporary_one_worker),
              MPX_TEST(test_temporary_two_workers),
              MPX_TEST(test_temporary_waiting_calls),
              MPX_TEST(test_restart_does_not_warn),
              MPX_TEST(test_zygote_killed),
              MPX_TEST(test_arena_empty_after_return))
