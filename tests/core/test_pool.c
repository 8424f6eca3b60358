/* Pools: map of 100 000 items in order, map of variable-sized items,
 * apply and apply_async with callbacks counted, imap over an endless
 * input with a bounded window, imap_unordered's multiset, maxtasksperchild
 * (distinct pids), the initializer once per worker, a task that SIGSEGVs
 * on some inputs, a storm of SIGKILLs during a 200 000-task map, restart
 * intensity breaking the pool, task timeouts, SIGINT during map, close +
 * join, spawn and forkserver workers, objects through a codec, 1 000
 * create/destroy cycles without fd or child leaks; large arguments and
 * results through the arena (1 and 16 MiB, every start method), a worker
 * killed holding a result block (nothing left in the arena), a full arena
 * falling back to the sockets; a pool on the caller's uv_loop_t
 * (callbacks on the loop's thread, blocking calls from another thread,
 * MPX_EDEADLK on the loop's thread, shutdown and free from the loop). */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <fcntl.h>
#include <uv.h>

#include "mpx.h"
#include "targets.h"
#include "../mpx_test.h"

/* Processes whose parent is this one, from /proc. */
static int count_children(void) {
  DIR *d = opendir("/proc");
  struct dirent *e;
  int n = 0;
  char path[300], buf[512];
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
    FILE *f = fopen(path, "r");
    if (!f) continue;
    if (fgets(buf, sizeof buf, f)) {
      char *p = strrchr(buf, ')');
      int ppid;
      char st;
      if (p && sscanf(p + 2, "%c %d", &st, &ppid) == 2 && ppid == getpid())
        n++;
    }
    fclose(f);
  }
  if (d) closedir(d);
  return n;
}

static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  int n = 0;
  while (d && readdir(d)) n++;
  if (d) closedir(d);
  return n;
}

/* ---- tasks ---------------------------------------------------------------------------- */

static int square(mpx_task_t *t, const void *in, size_t len) {
  int64_t x;
  if (len != sizeof x) return mpx_task_fail(t, "want 8 bytes, got %zu", len);
  memcpy(&x, in, sizeof x);
  x *= x;
  return mpx_task_result(t, &x, sizeof x);
}

/* square after ~20 µs of work: long enough for a storm to hit. */
static int slow_square(mpx_task_t *t, const void *in, size_t len) {
  double t0 = mpx_test_now();
  while (mpx_test_now() - t0 < 20e-6) {
  }
  return square(t, in, len);
}

static int reverse(mpx_task_t *t, const void *in, size_t len) {
  char *o = mpx_task_result_buf(t, len);
  if (o == NULL && len) return MPX_ENOMEM;
  for (size_t i = 0; i < len; i++) o[i] = ((const char *)in)[len - 1 - i];
  return 0;
}

static int fail_odd(mpx_task_t *t, const void *in, size_t len) {
  int64_t x;
  memcpy(&x, in, sizeof x);
  (void)len;
  if (x % 2) return mpx_task_fail(t, "odd input %lld", (long long)x);
  return mpx_task_result(t, &x, sizeof x);
}

static int segv_on_7(mpx_task_t *t, const void *in, size_t len) {
  int64_t x;
  memcpy(&x, in, sizeof x);
  (void)len;
  if (x % 100 == 7) {
    fprintf(stderr, "about to crash on %lld\n", (long long)x);
    signal(SIGSEGV, SIG_DFL); /* a sanitizer's handler would exit(1) */
    raise(SIGSEGV);
  }
  x = -x;
  return mpx_task_result(t, &x, sizeof x);
}


static _Atomic int *init_count; /* shared with the workers */
static int init_marks(const void *a, size_t n) {
  if (n != 4 || memcmp(a, "init", 4) != 0) return 9;
  atomic_fetch_add(init_count, 1);
  mpx_task_set_state((void *)"ready");
  return 0;
}
static int state_task(mpx_task_t *t, const void *in, size_t len) {
  (void)in, (void)len;
  const char *s = mpx_task_state(t);
  return mpx_task_result(t, s, strlen(s));
}

static int init_fails(const void *a, size_t n) {
  (void)a, (void)n;
  fprintf(stderr, "initializer cannot start\n");
  return 3;
}

static mpx_pool_t *pool(unsigned n, mpx_pool_opts_t *o) {
  mpx_pool_opts_t d = {0};
  if (o == NULL) o = &d;
  o->processes = n;
  mpx_pool_t *p = NULL;
  int rc = mpx_pool_new(&p, o);
  if (rc != 0) fprintf(stderr, "pool_new: %s\n", mpx_last_error());
  return p;
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_map_fixed_in_order(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 100000 };
  int64_t *in = malloc(N * sizeof *in), *out = calloc(N, sizeof *out);
  int *rc = malloc(N * sizeof *rc);
  for (int64_t i = 0; i < N; i++) in[i] = i - 50000;
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(square), in, 8, N, out, 8, rc, 60), 0);
  size_t bad = 0;
  for (int64_t i = 0; i < N; i++)
    if (out[i] != in[i] * in[i] || rc[i] != 0) bad++;
  CU_ASSERT_EQUAL(bad, 0);
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  CU_ASSERT_EQUAL(st.tasks_done, N);
  CU_ASSERT_EQUAL(st.tasks_failed, 0);
  free(in);
  free(out);
  free(rc);
  mpx_pool_free(p);
}

static _Atomic int cb_ok, cb_err;
static void on_ok(mpx_async_t *a, void *arg) {
  (void)a;
  atomic_fetch_add(&cb_ok, 1);
  (void)arg;
}
static void on_err(mpx_async_t *a, void *arg) {
  (void)arg;
  if (strstr(mpx_async_error(a), "odd input") != NULL) atomic_fetch_add(&cb_err, 1);
}

static void test_map_bytes_and_errors(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 3000 };
  char (*s)[40] = malloc(N * sizeof *s);
  mpx_conn_buf_t *in = malloc(N * sizeof *in);
  mpx_pool_result_t *out = malloc(N * sizeof *out);
  for (int i = 0; i < N; i++) {
    snprintf(s[i], sizeof s[i], "item-%d%s", i, i % 3 ? "" : "-long-tail");
    in[i] = (mpx_conn_buf_t){s[i], strlen(s[i])};
  }
  CU_ASSERT_EQUAL(mpx_pool_map(p, MPX_FUNC(reverse), in, N, out, 60), 0);
  size_t bad = 0;
  for (int i = 0; i < N; i++) {
    char want[40];
    size_t l = strlen(s[i]);
    for (size_t k = 0; k < l; k++) want[k] = s[i][l - 1 - k];
    if (out[i].rc != 0 || out[i].len != l || memcmp(out[i].data, want, l)) bad++;
  }
  CU_ASSERT_EQUAL(bad, 0);
  mpx_pool_results_free(out, N);
  /* Failures: each task has its own code and message; the call returns
   * the first failure. */
  int64_t v[10];
  mpx_conn_buf_t vin[10];
  for (int i = 0; i < 10; i++) {
    v[i] = i;
    vin[i] = (mpx_conn_buf_t){&v[i], 8};
  }
  CU_ASSERT_EQUAL(mpx_pool_map(p, MPX_FUNC(fail_odd), vin, 10, out, 60), MPX_ETASK);
  for (int i = 0; i < 10; i++) {
    CU_ASSERT_EQUAL(out[i].rc, i % 2 ? MPX_ETASK : 0);
    if (i % 2) {
      char m[40];
      snprintf(m, sizeof m, "odd input %d", i);
      CU_ASSERT_STRING_EQUAL(out[i].error ? out[i].error : "", m);
    }
  }
  mpx_pool_results_free(out, 10);
  /* map_async: the callback once, results in place when ready */
  mpx_async_t *a;
  atomic_store(&cb_ok, 0);
  CU_ASSERT_EQUAL_FATAL(mpx_pool_map_async(p, MPX_FUNC(reverse), in, N, out, on_ok,
                                           NULL, NULL, &a), 0);
  CU_ASSERT_EQUAL(mpx_async_wait(a, 60), 0);
  CU_ASSERT_TRUE(mpx_async_successful(a));
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(out[i].len, strlen(s[i]));
  mpx_async_free(a);
  mpx_pool_close(p);
  mpx_pool_join(p, 30); /* callbacks have run */
  CU_ASSERT_EQUAL(atomic_load(&cb_ok), 1);
  mpx_pool_results_free(out, N);
  free(s);
  free(in);
  free(out);
  mpx_pool_free(p);
}

static void test_apply_and_callbacks(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  int64_t x = 12;
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 30), 0);
  CU_ASSERT_EQUAL(len, 8);
  CU_ASSERT_EQUAL(res ? *(int64_t *)res : 0, 144);
  free(res);
  x = 3;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(fail_odd), &x, 8, &res, &len, 30), MPX_ETASK);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "odd input 3"));
  enum { N = 200 };
  mpx_async_t *a[N];
  atomic_store(&cb_ok, 0);
  atomic_store(&cb_err, 0);
  for (int64_t i = 0; i < N; i++)
    CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async(p, MPX_FUNC(fail_odd), &i, 8, on_ok,
                                               on_err, NULL, &a[i]), 0);
  for (int64_t i = 0; i < N; i++) {
    const void *d;
    size_t l;
    int rc = mpx_async_get(a[i], &d, &l, 30);
    CU_ASSERT_EQUAL(rc, i % 2 ? MPX_ETASK : 0);
    CU_ASSERT_TRUE(mpx_async_ready(a[i]));
    CU_ASSERT_EQUAL(mpx_async_successful(a[i]), i % 2 == 0);
    if (rc == 0) CU_ASSERT_EQUAL(*(const int64_t *)d, i);
    mpx_async_free(a[i]);
  }
  /* Callbacks run on the pool's thread, once each, by the time free
   * returns after close. */
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 30), 0);
  CU_ASSERT_EQUAL(atomic_load(&cb_ok), N / 2);
  CU_ASSERT_EQUAL(atomic_load(&cb_err), N / 2);
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 30), MPX_ECLOSED);
  mpx_pool_free(p);
}

typedef struct {
  int64_t next, limit;
} gen_t;
/* Hands out a copy: the pool copies the bytes before the next call. */
static int gen_next(void *arg, const void **d, size_t *l) {
  static __thread int64_t cur;
  gen_t *g = arg;
  if (g->limit >= 0 && g->next >= g->limit) return 0;
  cur = g->next++;
  *d = &cur;
  *l = 8;
  return 1;
}

static void test_imap_bounded_and_ordered(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  gen_t g = {0, -1}; /* endless */
  mpx_imap_t *it;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_imap(p, MPX_FUNC(square), gen_next, &g, true, 16, &it), 0);
  for (int64_t i = 0; i < 2000; i++) {
    const void *d;
    size_t l, idx;
    CU_ASSERT_EQUAL_FATAL(mpx_imap_next(it, &d, &l, &idx, 30), 1);
    CU_ASSERT_EQUAL(idx, (size_t)i);
    CU_ASSERT_EQUAL(*(const int64_t *)d, i * i);
    /* never more than the window pulled ahead of what was consumed */
    CU_ASSERT_TRUE(g.next <= i + 1 + 16);
  }
  mpx_imap_free(it); /* stops pulling */
  int64_t pulled = g.next;
  mpx_test_sleep(0.05);
  CU_ASSERT_EQUAL(g.next, pulled);
  mpx_pool_free(p);
}

static void test_imap_unordered_multiset(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 5000 };
  gen_t g = {0, N};
  mpx_imap_t *it;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_imap(p, MPX_FUNC(square), gen_next, &g, false, 0, &it), 0);
  char *seen = calloc(N, 1);
  int rc, n = 0;
  const void *d;
  size_t l, idx;
  while ((rc = mpx_imap_next(it, &d, &l, &idx, 30)) == 1) {
    int64_t v = *(const int64_t *)d;
    if (idx < N && v == (int64_t)idx * (int64_t)idx) seen[idx]++;
    n++;
  }
  CU_ASSERT_EQUAL(rc, 0);
  CU_ASSERT_EQUAL(n, N);
  int once = 0;
  for (int i = 0; i < N; i++) once += seen[i] == 1;
  CU_ASSERT_EQUAL(once, N);
  free(seen);
  mpx_imap_free(it);
  mpx_pool_free(p);
}

static void test_maxtasks_and_initializer(void) {
  init_count = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  atomic_store(init_count, 0);
  mpx_pool_opts_t o = {.maxtasksperchild = 10, .initializer = init_marks,
                       .initargs = "init", .initargs_len = 4, .chunksize = 1};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 100 };
  int32_t pids[N];
  int dummy[N];
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(mpx_test_pid_task), dummy, sizeof *dummy, N,
                                     pids, sizeof *pids, NULL, 60), 0);
  /* No worker runs more than 10 tasks: at least 10 processes served. */
  int distinct = 0, most = 0;
  for (int i = 0; i < N; i++) {
    int seen = 0, uses = 0;
    for (int k = 0; k < N; k++) {
      if (k < i) seen |= pids[k] == pids[i];
      uses += pids[k] == pids[i];
    }
    distinct += !seen;
    if (uses > most) most = uses;
  }
  CU_ASSERT_TRUE(distinct >= N / 10);
  CU_ASSERT_EQUAL(most, 10);
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(state_task), NULL, 0, &res, &len, 30), 0);
  CU_ASSERT_EQUAL(len, 5);
  CU_ASSERT_TRUE(res && memcmp(res, "ready", 5) == 0);
  free(res);
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 30), 0);
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  /* Once in every worker that ran (the last ones may be stopped before
   * they got that far). */
  CU_ASSERT_TRUE((uint64_t)atomic_load(init_count) <= st.started);
  CU_ASSERT_TRUE(atomic_load(init_count) >= distinct);
  CU_ASSERT_TRUE(st.started >= N / 10);
  CU_ASSERT_EQUAL(st.restarts, 0); /* retirements are not restarts */
  if (st.restarts) fprintf(stderr, "restarts %llu started %llu\n", (unsigned long long)st.restarts, (unsigned long long)st.started);
  mpx_pool_free(p);
  munmap((void *)init_count, 4096);
}

static void test_segv_on_some_inputs(void) {
  mpx_pool_opts_t o = {.max_restarts = 1000, .quiet = true};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 1000 };
  int64_t in[N], out[N];
  int rc[N];
  for (int i = 0; i < N; i++) in[i] = i;
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(segv_on_7), in, 8, N, out, 8, rc, 120),
                  MPX_EWORKER);
  int good = 0, poisoned = 0;
  for (int i = 0; i < N; i++) {
    if (i % 100 == 7) poisoned += rc[i] == MPX_EWORKER;
    else good += rc[i] == 0 && out[i] == -i;
  }
  CU_ASSERT_EQUAL(good, N - 10);
  if (good != N - 10)
    for (int i = 0; i < N; i++)
      if ((i % 100 == 7) == (rc[i] == 0) || (rc[i] == 0 && out[i] != -i))
        fprintf(stderr, "item %d: rc %d out %lld\n", i, rc[i], (long long)out[i]);
  CU_ASSERT_EQUAL(poisoned, 10);
  /* the message names the signal and carries the worker's stderr */
  mpx_pool_result_t r;
  mpx_conn_buf_t b = {&in[7], 8};
  CU_ASSERT_EQUAL(mpx_pool_map(p, MPX_FUNC(segv_on_7), &b, 1, &r, 60), MPX_EWORKER);
  CU_ASSERT_PTR_NOT_NULL(r.error ? strstr(r.error, "SIGSEGV") : NULL);
  CU_ASSERT_PTR_NOT_NULL(r.error ? strstr(r.error, "about to crash on 7") : NULL);
  CU_ASSERT_PTR_NOT_NULL(r.error ? strstr(r.error, "3 attempts") : NULL);
  mpx_pool_results_free(&r, 1);
  /* still working */
  int64_t x = 5;
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 30), 0);
  free(res);
  mpx_pool_free(p);
}

typedef struct {
  mpx_pool_t *p;
  _Atomic bool stop;
  _Atomic int kills; /* read by the test while the storm runs */
} storm_t;

/* The children of pid (every thread's, from /proc/<pid>/task/<tid>/children):
 * one read per thread, not a scan of /proc. */
static int children_of(pid_t pid, pid_t *out, int n, int max) {
  char path[320];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  struct dirent *e;
  while (d && (e = readdir(d)) != NULL) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    snprintf(path, sizeof path, "/proc/%d/task/%s/children", (int)pid, e->d_name);
    FILE *f = fopen(path, "r");
    int c;
    while (f && n < max && fscanf(f, "%d", &c) == 1) out[n++] = c;
    if (f) fclose(f);
  }
  if (d) closedir(d);
  return n;
}

/* comm contains s (comms are cut at 15 bytes: "pool-1025-zygot"). */
static bool comm_has(pid_t pid, const char *s) {
  char path[64], buf[64] = "";
  snprintf(path, sizeof path, "/proc/%d/comm", (int)pid);
  FILE *f = fopen(path, "r");
  if (f && fgets(buf, sizeof buf, f) == NULL) buf[0] = '\0';
  if (f) fclose(f);
  return strstr(buf, s) != NULL;
}

static bool is_zombie(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  bool z = true;
  if (f && fgets(buf, sizeof buf, f)) {
    char *p = strrchr(buf, ')');
    z = p == NULL || p[2] == 'Z';
  }
  if (f) fclose(f);
  return z;
}

static void *storm(void *arg) {
  storm_t *s = arg;
  unsigned seed = 7;
  while (!atomic_load(&s->stop)) {
    mpx_test_sleep(0.005 + (rand_r(&seed) % 10) * 0.001);
    /* a random worker of ours: a child that is not a zygote, or a child of
     * our zygote (fork workers come from the pool's zygote) */
    pid_t kids[16], victims[32];
    int nk = children_of(getpid(), kids, 0, 16), n = 0;
    for (int i = 0; i < nk && n < 16; i++) {
      if (comm_has(kids[i], "-zygot")) n = children_of(kids[i], victims, n, 32);
      else victims[n++] = kids[i];
    }
    if (n == 0) continue;
    pid_t v = victims[rand_r(&seed) % n];
    if (!is_zombie(v) && kill(v, SIGKILL) == 0) s->kills++;
  }
  return NULL;
}

static void test_kill_storm(void) {
  mpx_pool_opts_t o = {.retries = 1000, .max_restarts = 100000, .quiet = true,
                       .chunksize = 500, .backoff_min = 0.001, .backoff_max = 0.01};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 200000 };
  int64_t *in = malloc(N * 8), *out = calloc(N, 8);
  int *rc = malloc(N * sizeof *rc);
  for (int64_t i = 0; i < N; i++) in[i] = i;
  storm_t s = {.p = p};
  pthread_t th;
  pthread_create(&th, NULL, storm, &s);
  int r = mpx_pool_map_fixed(p, MPX_FUNC(slow_square), in, 8, N, out, 8, rc, 300);
  atomic_store(&s.stop, true);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(r, 0);
  size_t bad = 0;
  for (int64_t i = 0; i < N; i++) bad += rc[i] != 0 || out[i] != i * i;
  CU_ASSERT_EQUAL(bad, 0);
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  fprintf(stderr, "kill storm: %d kills, %llu retries, %llu workers started\n", s.kills,
          (unsigned long long)st.retries, (unsigned long long)st.started);
  CU_ASSERT_EQUAL(st.tasks_done, N); /* each result delivered once */
  CU_ASSERT_TRUE(s.kills >= 20);
  CU_ASSERT_TRUE(st.retries > 0);
  free(in);
  free(out);
  free(rc);
  mpx_pool_free(p);
}

static void test_intensity_breaks_pool(void) {
  mpx_pool_opts_t o = {.initializer = init_fails, .max_restarts = 3,
                       .restart_period = 30, .quiet = true};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  int64_t x = 2;
  void *res;
  size_t len;
  double t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 60), MPX_EBROKEN);
  CU_ASSERT_TRUE(mpx_test_now() - t0 < 30);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "code 3"));
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 60), MPX_EBROKEN);
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  CU_ASSERT_TRUE(st.broken);
  mpx_pool_free(p);
}

static void test_task_timeout(void) {
  mpx_pool_opts_t o = {.task_timeout = 0.5, .retries = -1, .chunksize = 1, .quiet = true};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  double in[6] = {0.01, 0.01, 0.01, 30, 0.01, 0.01}, out[6];
  int rc[6];
  double t0 = mpx_test_now();
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(mpx_test_sleepy), in, 8, 6, out, 8, rc, 60),
                  MPX_ETIMEDOUT);
  CU_ASSERT_TRUE(mpx_test_now() - t0 < 20);
  for (int i = 0; i < 6; i++) CU_ASSERT_EQUAL(rc[i], i == 3 ? MPX_ETIMEDOUT : 0);
  mpx_pool_free(p);
}

static void *send_sigint(void *arg) {
  mpx_test_sleep(*(double *)arg);
  kill(getpid(), SIGINT);
  return NULL;
}

static void test_sigint_during_map(void) {
  mpx_pool_opts_t o = {.chunksize = 1};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 400 };
  double in[N], out[N];
  for (int i = 0; i < N; i++) in[i] = 0.05;
  double delay = 0.3;
  pthread_t th;
  pthread_create(&th, NULL, send_sigint, &delay);
  double t0 = mpx_test_now();
  int rc = mpx_pool_map_fixed(p, MPX_FUNC(mpx_test_sleepy), in, 8, N, out, 8, NULL, 60);
  double dt = mpx_test_now() - t0;
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(rc, MPX_EINTR);
  CU_ASSERT_TRUE(dt < delay + 5); /* promptly: not the 10 s the map needs */
  fprintf(stderr, "SIGINT: map returned %.3f s after the signal\n", dt - delay);
  /* still usable */
  int64_t x = 9;
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 30), 0);
  free(res);
  mpx_pool_free(p);
  CU_ASSERT_EQUAL(count_children(), 0);
}

static void test_close_join_waits(void) {
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  mpx_async_t *a[20];
  double s = 0.02;
  for (int i = 0; i < 20; i++)
    CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async(p, MPX_FUNC(mpx_test_sleepy), &s, 8, NULL, NULL,
                                               NULL, &a[i]), 0);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 1), MPX_ESTATE);
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
  for (int i = 0; i < 20; i++) {
    CU_ASSERT_TRUE(mpx_async_successful(a[i]));
    mpx_async_free(a[i]);
  }
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  CU_ASSERT_EQUAL(st.workers, 0);
  mpx_pool_free(p);
  CU_ASSERT_EQUAL(count_children(), 0);
}

static void test_spawn_and_forkserver(void) {
  mpx_start_method_t methods[2] = {MPX_START_SPAWN, MPX_START_FORKSERVER};
  for (int m = 0; m < 2; m++) {
    mpx_pool_opts_t o = {.start_method = methods[m]};
    mpx_pool_t *p = pool(2, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    int64_t in[100], out[100];
    for (int i = 0; i < 100; i++) in[i] = i;
    mpx_func_t f = m == 0 ? MPX_FUNC_SPEC(TARGETS_SO ":pt_square") : MPX_FUNC(square);
    CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, f, in, 8, 100, out, 8, NULL, 60), 0);
    for (int i = 0; i < 100; i++) CU_ASSERT_EQUAL(out[i], (int64_t)i * i);
    /* spawn with a pointer that is not an exported symbol of a shared
     * object: a clear error at the call */
    if (m == 0) {
      void *res;
      size_t len;
      CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), in, 8, &res, &len, 30), MPX_EINVAL);
      CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "spawn"));
    }
    mpx_pool_free(p);
  }
}

static int echo_obj(mpx_task_t *t, const void *in, size_t len) {
  return mpx_task_result(t, in, len);
}

static void test_objects(void) {
  const mpx_codec_t *c;
  CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, "msgpack"), 0);
  mpx_pool_t *p = pool(2, NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  mpx_obj_t *args = mpx_obj_array(3), *res = NULL;
  for (int i = 0; i < 3; i++) {
    mpx_obj_t *t = mpx_obj_tuple(2);
    mpx_obj_append(t, mpx_obj_int(i));
    mpx_obj_append(t, mpx_obj_str("x", 1));
    mpx_obj_append(args, t);
  }
  CU_ASSERT_EQUAL(mpx_pool_starmap(p, MPX_FUNC(echo_obj), c, args, &res, 30), 0);
  CU_ASSERT_EQUAL(res ? mpx_obj_len(res) : 0, 3);
  for (size_t i = 0; res && i < 3; i++)
    CU_ASSERT_EQUAL(mpx_obj_get_int(mpx_obj_item(mpx_obj_item(res, i), 0)), (int64_t)i);
  mpx_obj_t *one = NULL;
  CU_ASSERT_EQUAL(mpx_pool_apply_obj(p, MPX_FUNC(echo_obj), c, mpx_obj_item(args, 1), &one, 30), 0);
  CU_ASSERT_TRUE(one && mpx_obj_equal(one, mpx_obj_item(args, 1)));
  mpx_obj_release(one);
  mpx_obj_release(res);
  mpx_obj_release(args);
  mpx_pool_free(p);
}

static void test_create_destroy_cycles(void) {
  /* Measured after the first cycles: what the library opens once on first
   * use (the forkserver, a cached probe) is not a leak. */
  int fds0 = 0, kids0 = 0;
  for (int i = 0; i < 1000; i++) {
    if (i == 10) {
      fds0 = count_fds();
      kids0 = count_children();
    }
    mpx_pool_t *p = pool(2, NULL);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    if (i % 100 == 0) {
      int64_t x = i;
      void *res;
      size_t len;
      CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 30), 0);
      free(res);
    }
    mpx_pool_close(p);
    mpx_pool_join(p, 30);
    mpx_pool_free(p);
  }
  CU_ASSERT_EQUAL(count_fds(), fds0);
  CU_ASSERT_EQUAL(count_children(), kids0);
}

/* ---- large items through the arena ---------------------------------------------------- */

/* Item k's bytes, and the result pt_xform makes of them. */
static void pattern(unsigned char *b, size_t n, unsigned k) {
  uint64_t x = 0x9e3779b97f4a7c15ull * (k + 1);
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    b[i] = (unsigned char)x;
  }
}
static void xformed(unsigned char *o, const unsigned char *in, size_t n) {
  for (size_t i = 0; i < n; i++) o[i] = in[n - 1 - i] ^ 0x5a;
}

static const char *method_name(mpx_start_method_t m) {
  return mpx_start_method_name(m);
}

/* apply, apply_async, map, map_fixed and imap of items of `size` bytes,
 * byte-exact. */
enum { NL = 3 };
typedef struct {
  unsigned char *in[NL];
  size_t n, next;
} big_gen_t;
static int big_next(void *arg, const void **d, size_t *l) {
  big_gen_t *g = arg;
  if (g->next == NL) return 0;
  *d = g->in[g->next++];
  *l = g->n;
  return 1;
}

static void check_large(mpx_pool_t *p, size_t size, const char *what) {
  unsigned char *in = malloc(NL * size), *want = malloc(NL * size);
  unsigned char *out = malloc(NL * size);
  CU_ASSERT_PTR_NOT_NULL_FATAL(in && want && out);
  for (unsigned k = 0; k < NL; k++) {
    pattern(in + k * size, size, k);
    xformed(want + k * size, in + k * size, size);
  }
  mpx_func_t f = MPX_FUNC(pt_xform);
  int bad = 0;
  /* apply: one copy out */
  void *res = NULL;
  size_t len = 0;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, f, in, size, &res, &len, 120), 0);
  bad += len != size || res == NULL || memcmp(res, want, size) != 0;
  free(res);
  /* apply_async: the result is read in place */
  mpx_async_t *a;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async(p, f, in + size, size, NULL, NULL,
                                             NULL, &a), 0);
  const void *d;
  CU_ASSERT_EQUAL(mpx_async_get(a, &d, &len, 120), 0);
  bad += len != size || d == NULL || memcmp(d, want + size, size) != 0;
  mpx_async_free(a);
  /* map */
  mpx_conn_buf_t bin[NL];
  mpx_pool_result_t r[NL];
  for (unsigned k = 0; k < NL; k++) bin[k] = (mpx_conn_buf_t){in + k * size, size};
  CU_ASSERT_EQUAL(mpx_pool_map(p, f, bin, NL, r, 120), 0);
  for (unsigned k = 0; k < NL; k++)
    bad += r[k].rc != 0 || r[k].len != size ||
           memcmp(r[k].data, want + k * size, size) != 0;
  mpx_pool_results_free(r, NL);
  /* map_fixed: straight into out */
  int rc[NL];
  memset(out, 0, NL * size);
  CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, f, in, size, NL, out, size, rc, 120), 0);
  for (unsigned k = 0; k < NL; k++) bad += rc[k] != 0;
  bad += memcmp(out, want, NL * size) != 0;
  /* imap: results read in place */
  big_gen_t g = {.n = size};
  for (unsigned k = 0; k < NL; k++) g.in[k] = in + k * size;
  mpx_imap_t *it;
  CU_ASSERT_EQUAL_FATAL(mpx_pool_imap(p, f, big_next, &g, true, 0, &it), 0);
  size_t idx, got = 0;
  int irc;
  while ((irc = mpx_imap_next(it, &d, &len, &idx, 120)) == 1) {
    bad += idx >= NL || len != size || memcmp(d, want + idx * size, size) != 0;
    got++;
  }
  CU_ASSERT_EQUAL(irc, 0);
  CU_ASSERT_EQUAL(got, NL);
  mpx_imap_free(it);
  CU_ASSERT_EQUAL(bad, 0);
  if (bad) fprintf(stderr, "%s: %d wrong results\n", what, bad);
  free(in);
  free(want);
  free(out);
}

static void test_large_items(void) {
  mpx_start_method_t methods[3] = {MPX_START_FORK, MPX_START_FORKSERVER,
                                   MPX_START_SPAWN};
  mpx_forkserver_start(); /* a child of ours that stays */
  int kids0 = count_children();
  for (int m = 0; m < 3; m++) {
    mpx_pool_opts_t o = {.start_method = methods[m]};
    mpx_pool_t *p = pool(2, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    check_large(p, (size_t)1 << 20, method_name(methods[m]));
    check_large(p, (size_t)16 << 20, method_name(methods[m]));
    mpx_pool_close(p);
    CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
    mpx_pool_stats_t st;
    mpx_pool_stats(p, &st);
    fprintf(stderr, "%s: %llu arguments and %llu results through the arena, "
            "%llu arguments inline (arena full)\n", method_name(methods[m]),
            (unsigned long long)st.arena_args, (unsigned long long)st.arena_results,
            (unsigned long long)st.arena_inline);
    /* 2 sizes x (apply + async + 3 map + 3 fixed + 3 imap) */
    CU_ASSERT_EQUAL(st.tasks_done, 2 * 11);
    CU_ASSERT_TRUE(st.arena_args + st.arena_inline >= 2 * 11);
    CU_ASSERT_TRUE(st.arena_args >= 11);
    CU_ASSERT_TRUE(st.arena_results >= 11);
    CU_ASSERT_EQUAL(st.arena_size >= ((size_t)63 << 20), true);
    CU_ASSERT_EQUAL(st.arena_used, 0);
    CU_ASSERT_EQUAL(st.arena_blocks, 0);
    mpx_pool_free(p);
  }
  CU_ASSERT_EQUAL(count_children(), kids0);
}

static void test_large_worker_killed(void) {
  mpx_start_method_t methods[3] = {MPX_START_FORK, MPX_START_FORKSERVER,
                                   MPX_START_SPAWN};
  for (int m = 0; m < 3; m++) {
    mpx_pool_opts_t o = {.start_method = methods[m], .quiet = true};
    mpx_pool_t *p = pool(2, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    size_t size = (size_t)1 << 20;
    unsigned char *in = malloc(size), *want = malloc(size);
    pattern(in, size, 7);
    char path[64];
    snprintf(path, sizeof path, "/tmp/mpx-pool-kill-%d-%d", (int)getpid(), m);
    unlink(path);
    memcpy(in, path, strlen(path) + 1);
    xformed(want, in, size);
    void *res = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(pt_xform_kill_once), in, size, &res,
                                   &len, 60), 0);
    CU_ASSERT_TRUE(len == size && res && memcmp(res, want, size) == 0);
    free(res);
    mpx_pool_stats_t st;
    mpx_pool_stats(p, &st);
    CU_ASSERT_EQUAL(st.retries, 1);
    CU_ASSERT_EQUAL(st.arena_reclaimed, 1); /* the block it was writing */
    CU_ASSERT_EQUAL(st.arena_results, 1);
    mpx_pool_close(p);
    CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
    mpx_pool_stats(p, &st);
    CU_ASSERT_EQUAL(st.arena_used, 0);
    CU_ASSERT_EQUAL(st.arena_blocks, 0);
    mpx_pool_free(p);
    unlink(path);
    free(in);
    free(want);
  }
}

/* Zero-copy arguments: a loan written in place and submitted, for sizes
 * below and above the arena threshold; the argument readable from the
 * handle; a loan given back and one used past its length leave nothing in
 * the arena; no loan without an arena or beyond its room. */
static void test_loans(void) {
  mpx_pool_opts_t o = {.arena_size = (size_t)8 << 20};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  size_t sizes[3] = {100, (size_t)1 << 20, ((size_t)3 << 20) + 7};
  for (int v = 0; v < 3; v++) {
    size_t size = sizes[v];
    unsigned char *want = malloc(size), *src = malloc(size);
    pattern(src, size, (unsigned)v);
    xformed(want, src, size);
    mpx_pool_loan_t loan;
    CU_ASSERT_EQUAL_FATAL(mpx_pool_loan(p, size + 16, &loan), 0);
    CU_ASSERT_TRUE(loan.data != NULL && loan.len == size + 16 && loan.ref != 0);
    memcpy(loan.data, src, size);
    void *where = loan.data;
    mpx_async_t *a;
    CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async_loan(p, MPX_FUNC(pt_xform), &loan, size,
                                                    NULL, NULL, NULL, &a), 0);
    CU_ASSERT_EQUAL(loan.ref, 0); /* taken */
    const void *d, *arg;
    size_t len, alen;
    CU_ASSERT_EQUAL(mpx_async_get(a, &d, &len, 60), 0);
    CU_ASSERT_TRUE(len == size && d && memcmp(d, want, size) == 0);
    CU_ASSERT_EQUAL(mpx_async_arg(a, &arg, &alen), 0);
    CU_ASSERT_TRUE(arg == where && alen == size && memcmp(arg, src, size) == 0);
    mpx_async_free(a);
    free(want);
    free(src);
  }
  mpx_pool_loan_t loan;
  mpx_async_t *a = NULL;
  CU_ASSERT_EQUAL(mpx_pool_loan(p, 1000, &loan), 0);
  mpx_pool_loan_cancel(p, &loan);
  CU_ASSERT_EQUAL(loan.ref, 0);
  mpx_pool_loan_cancel(p, &loan); /* an empty loan: nothing */
  CU_ASSERT_EQUAL(mpx_pool_loan(p, 1000, &loan), 0);
  CU_ASSERT_EQUAL(mpx_pool_apply_async_loan(p, MPX_FUNC(pt_xform), &loan, 1001, NULL,
                                            NULL, NULL, &a), MPX_EINVAL);
  CU_ASSERT_EQUAL(loan.ref, 0);
  CU_ASSERT_EQUAL(mpx_pool_loan(p, (size_t)9 << 20, &loan), MPX_ENOBUFS);
  /* Freed handles give their blocks back on the loop thread: look after
   * the join. */
  CU_ASSERT_EQUAL(mpx_pool_close(p), 0);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
  mpx_pool_stats_t st;
  CU_ASSERT_EQUAL(mpx_pool_stats(p, &st), 0);
  CU_ASSERT_EQUAL(st.arena_used, 0);
  CU_ASSERT_EQUAL(st.arena_blocks, 0);
  CU_ASSERT_EQUAL(st.arena_args, 3);
  mpx_pool_free(p);
  mpx_pool_opts_t off = {.arena_size = MPX_POOL_ARENA_OFF};
  p = pool(1, &off);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL(mpx_pool_loan(p, 10, &loan), MPX_ENOTSUP);
  mpx_pool_free(p);
}

static void test_arena_full_or_off(void) {
  /* 2 MiB of arena, items of 1.5 MiB: one block at a time fits, so the
   * worker's result and a second argument travel through the socket. */
  size_t size = (size_t)3 << 19;
  size_t sizes[2] = {(size_t)2 << 20, MPX_POOL_ARENA_OFF};
  for (int v = 0; v < 2; v++) {
    mpx_pool_opts_t o = {.arena_size = sizes[v]};
    mpx_pool_t *p = pool(2, &o);
    CU_ASSERT_PTR_NOT_NULL_FATAL(p);
    enum { N = 6 };
    unsigned char *in = malloc(N * size), *want = malloc(N * size),
                  *out = malloc(N * size);
    for (unsigned k = 0; k < N; k++) {
      pattern(in + k * size, size, k);
      xformed(want + k * size, in + k * size, size);
    }
    void *res = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(pt_xform), in, size, &res, &len, 60), 0);
    CU_ASSERT_TRUE(len == size && res && memcmp(res, want, size) == 0);
    free(res);
    mpx_pool_stats_t st;
    mpx_pool_stats(p, &st);
    /* the argument took the arena: no room for the result */
    CU_ASSERT_EQUAL(st.arena_args, v == 0 ? 1 : 0);
    CU_ASSERT_EQUAL(st.arena_results, 0);
    int rc[N];
    CU_ASSERT_EQUAL(mpx_pool_map_fixed(p, MPX_FUNC(pt_xform), in, size, N, out, size,
                                       rc, 60), 0);
    CU_ASSERT_EQUAL(memcmp(out, want, N * size), 0);
    mpx_pool_close(p);
    CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
    mpx_pool_stats(p, &st);
    CU_ASSERT_EQUAL(st.tasks_done, 1 + N);
    for (int k = 0; k < N; k++) CU_ASSERT_EQUAL(rc[k], 0);
    if (v == 0) {
      CU_ASSERT_TRUE(st.arena_args >= 1);
      CU_ASSERT_TRUE(st.arena_inline >= 1);
      CU_ASSERT_EQUAL(st.arena_blocks, 0);
    } else {
      CU_ASSERT_EQUAL(st.arena_args, 0);
      CU_ASSERT_EQUAL(st.arena_results, 0);
      CU_ASSERT_EQUAL(st.arena_size, 0);
    }
    mpx_pool_free(p);
    free(in);
    free(want);
    free(out);
  }
}

/* SIGKILLs while workers read arguments in place and write results into
 * arena blocks (some die holding the arena's lock): every result exact,
 * once, and nothing left in the arena. */
static void test_large_kill_storm(void) {
  mpx_pool_opts_t o = {.retries = 1000, .max_restarts = 100000, .quiet = true,
                       .chunksize = 1, .backoff_min = 0.001, .backoff_max = 0.01};
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  enum { N = 600 };
  size_t size = (size_t)96 << 10;
  unsigned char *in = malloc(N * size), *want = malloc(N * size),
                *out = malloc(N * size);
  for (unsigned k = 0; k < N; k++) {
    pattern(in + k * size, size, k);
    xformed(want + k * size, in + k * size, size);
  }
  int *rc = malloc(N * sizeof *rc);
  storm_t s = {.p = p};
  pthread_t th;
  pthread_create(&th, NULL, storm, &s);
  /* At least 8 rounds, and on until the storm has killed 20 workers (a
   * fast or busy machine may finish 8 rounds between fewer kills). */
  enum { MIN_ROUNDS = 8, MAX_ROUNDS = 200 };
  int rounds = 0;
  size_t bad = 0;
  for (; rounds < MAX_ROUNDS && (rounds < MIN_ROUNDS || s.kills < 20); rounds++) {
    memset(out, 0, N * size);
    int r = mpx_pool_map_fixed(p, MPX_FUNC(pt_xform), in, size, N, out, size, rc, 300);
    CU_ASSERT_EQUAL(r, 0);
    for (unsigned k = 0; k < N; k++)
      bad += rc[k] != 0 || memcmp(out + k * size, want + k * size, size) != 0;
  }
  atomic_store(&s.stop, true);
  pthread_join(th, NULL);
  CU_ASSERT_EQUAL(bad, 0);
  mpx_pool_close(p);
  CU_ASSERT_EQUAL(mpx_pool_join(p, 60), 0);
  mpx_pool_stats_t st;
  mpx_pool_stats(p, &st);
  fprintf(stderr, "large kill storm: %d kills, %llu retries, %llu blocks reclaimed, "
          "%llu results through the arena\n", s.kills, (unsigned long long)st.retries,
          (unsigned long long)st.arena_reclaimed, (unsigned long long)st.arena_results);
  CU_ASSERT_EQUAL(st.tasks_done, (uint64_t)rounds * N);
  CU_ASSERT_TRUE(s.kills >= 20);
  CU_ASSERT_TRUE(st.arena_results > 0);
  CU_ASSERT_EQUAL(st.arena_used, 0);
  CU_ASSERT_EQUAL(st.arena_blocks, 0);
  mpx_pool_free(p);
  free(in);
  free(want);
  free(out);
  free(rc);
}

/* ---- a pool on the caller's loop -------------------------------------------------------- */

typedef struct {
  uv_loop_t loop;
  mpx_pool_t *p;
  pthread_t loop_thread;
  _Atomic int ok, off_thread;
  uv_async_t done; /* the second thread finished */
  uv_timer_t timer;
  mpx_async_t *pending;
  mpx_async_t *a[100];
  int results_ok;
  int apply_rc, blocking_ok;
  bool shut_cb_ran, shut_cb_on_loop;
  int deadlk_apply, deadlk_map, deadlk_get, poll_get, deadlk_join, deadlk_imap;
} uloop_t;

static void uloop_cb(mpx_async_t *a, void *arg) {
  uloop_t *u = arg;
  (void)a;
  atomic_fetch_add(&u->ok, 1);
  if (!pthread_equal(pthread_self(), u->loop_thread)) atomic_fetch_add(&u->off_thread, 1);
}

static void uloop_shut(mpx_pool_t *p, void *arg) {
  uloop_t *u = arg;
  u->shut_cb_ran = true;
  u->shut_cb_on_loop = pthread_equal(pthread_self(), u->loop_thread);
  /* Every submitted task has ended: the results are there without waiting. */
  for (int64_t i = 0; i < 100; i++) {
    const void *d;
    size_t len;
    u->results_ok += mpx_async_get(u->a[i], &d, &len, 0) == 0 && len == 8 &&
                     *(const int64_t *)d == i * i;
    mpx_async_free(u->a[i]);
  }
  mpx_async_free(u->pending);
  mpx_pool_free(p); /* allowed here: only memory is left */
  u->p = NULL;
}

static void uloop_closed(uv_handle_t *h) { (void)h; }

/* On the loop, once the second thread is done: what would block fails
 * with MPX_EDEADLK; then the pool shuts down from inside the loop. */
static void uloop_on_done(uv_async_t *h) {
  uloop_t *u = h->data;
  mpx_pool_t *p = u->p;
  int64_t x = 3;
  void *res;
  size_t len;
  u->deadlk_apply = mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 5);
  int64_t out;
  u->deadlk_map = mpx_pool_map_fixed(p, MPX_FUNC(square), &x, 8, 1, &out, 8, NULL, 5);
  double s = 0.3;
  CU_ASSERT_EQUAL(mpx_pool_apply_async(p, MPX_FUNC(mpx_test_sleepy), &s, 8, uloop_cb, NULL, u,
                                       &u->pending), 0);
  const void *d;
  u->deadlk_get = mpx_async_get(u->pending, &d, &len, 5);
  u->poll_get = mpx_async_get(u->pending, &d, &len, 0);
  gen_t g = {0, 4};
  mpx_imap_t *it;
  CU_ASSERT_EQUAL(mpx_pool_imap(p, MPX_FUNC(square), gen_next, &g, true, 0, &it), 0);
  size_t idx;
  u->deadlk_imap = mpx_imap_next(it, &d, &len, &idx, 5);
  mpx_imap_free(it);
  mpx_pool_close(p);
  u->deadlk_join = mpx_pool_join(p, 5);
  /* The sleepy task still runs: the shutdown lets it finish. */
  CU_ASSERT_EQUAL(mpx_pool_shutdown(p, uloop_shut, u), 0);
  CU_ASSERT_EQUAL(mpx_pool_shutdown(p, uloop_shut, u), MPX_ESTATE);
  uv_close((uv_handle_t *)h, uloop_closed);
}

static void *uloop_second(void *arg) {
  uloop_t *u = arg;
  int bad = 0;
  for (int64_t i = 0; i < 50; i++) {
    void *res;
    size_t len;
    int rc = mpx_pool_apply(u->p, MPX_FUNC(square), &i, 8, &res, &len, 30);
    bad += rc != 0 || len != 8 || *(int64_t *)res != i * i;
    free(res);
  }
  enum { N = 1000 };
  int64_t in[N], out[N];
  for (int i = 0; i < N; i++) in[i] = i;
  bad += mpx_pool_map_fixed(u->p, MPX_FUNC(square), in, 8, N, out, 8, NULL, 30) != 0;
  for (int i = 0; i < N; i++) bad += out[i] != (int64_t)i * i;
  u->blocking_ok = bad == 0;
  uv_async_send(&u->done);
  return NULL;
}

static void test_user_loop(void) {
  mpx_forkserver_start();
  int kids0 = count_children();
  uloop_t *u = calloc(1, sizeof *u);
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&u->loop), 0);
  u->loop_thread = pthread_self();
  mpx_pool_opts_t o = {.loop = &u->loop};
  u->p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(u->p);
  /* Before the loop runs, this is its thread: a blocking call would hang. */
  int64_t x = 5;
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(u->p, MPX_FUNC(square), &x, 8, &res, &len, 1),
                  MPX_EDEADLK);
  enum { N = 100 };
  for (int64_t i = 0; i < N; i++)
    CU_ASSERT_EQUAL_FATAL(mpx_pool_apply_async(u->p, MPX_FUNC(square), &i, 8, uloop_cb,
                                               NULL, u, &u->a[i]), 0);
  uv_async_init(&u->loop, &u->done, uloop_on_done);
  u->done.data = u;
  pthread_t th;
  pthread_create(&th, NULL, uloop_second, u);
  double t0 = mpx_test_now();
  CU_ASSERT_EQUAL(uv_run(&u->loop, UV_RUN_DEFAULT), 0); /* until all is closed */
  double dt = mpx_test_now() - t0;
  pthread_join(th, NULL);
  CU_ASSERT_TRUE(dt < 30);
  CU_ASSERT_TRUE(u->blocking_ok);
  CU_ASSERT_EQUAL(u->deadlk_apply, MPX_EDEADLK);
  CU_ASSERT_EQUAL(u->deadlk_map, MPX_EDEADLK);
  CU_ASSERT_EQUAL(u->deadlk_get, MPX_EDEADLK);
  CU_ASSERT_EQUAL(u->poll_get, MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(u->deadlk_imap, MPX_EDEADLK);
  CU_ASSERT_EQUAL(u->deadlk_join, MPX_EDEADLK);
  CU_ASSERT_TRUE(u->shut_cb_ran);
  CU_ASSERT_TRUE(u->shut_cb_on_loop);
  CU_ASSERT_PTR_NULL(u->p);
  /* the N squares and the sleepy task (which the shutdown let finish) */
  CU_ASSERT_EQUAL(atomic_load(&u->ok), N + 1);
  CU_ASSERT_EQUAL(atomic_load(&u->off_thread), 0);
  CU_ASSERT_EQUAL(u->results_ok, N);
  CU_ASSERT_EQUAL(uv_loop_close(&u->loop), 0); /* nothing of the pool is left */
  CU_ASSERT_EQUAL(count_children(), kids0);
  free(u);
}
typedef struct {
  mpx_pool_t *p;
  mpx_async_t *a[4];
  bool freed;
} ufree_t;

/* On the loop: free a busy pool that is not closed. It is terminated, and
 * frees itself once the loop has closed its handles. */
static void ufree_timer(uv_timer_t *t) {
  ufree_t *f = t->data;
  for (int i = 0; i < 4; i++) mpx_async_free(f->a[i]);
  mpx_pool_free(f->p);
  f->freed = true;
  uv_close((uv_handle_t *)t, NULL);
}

static void *ufree_thread(void *arg) {
  mpx_pool_t *p = arg;
  for (int64_t i = 0; i < 20; i++) {
    void *res;
    size_t len;
    if (mpx_pool_apply(p, MPX_FUNC(square), &i, 8, &res, &len, 30) != 0) return (void *)1;
    free(res);
  }
  mpx_pool_close(p);
  mpx_pool_free(p); /* waits while the loop, on its thread, closes the pool */
  return NULL;
}

static _Atomic int own_cb_deadlk, own_shut_ran, own_free_ran;
static _Atomic pid_t own_free_tid; /* the pool's thread, which own_free_cb runs on */
static pthread_t main_thread;
static void own_cb(mpx_async_t *a, void *arg) {
  int64_t x = 2;
  void *res;
  size_t len;
  (void)a, (void)arg;
  if (mpx_pool_apply(arg, MPX_FUNC(square), &x, 8, &res, &len, 1) == MPX_EDEADLK)
    atomic_fetch_add(&own_cb_deadlk, 1);
}
static void own_shut(mpx_pool_t *p, void *arg) {
  (void)p, (void)arg;
  if (!pthread_equal(pthread_self(), main_thread)) atomic_fetch_add(&own_shut_ran, 1);
}
static void own_free_cb(mpx_async_t *a, void *arg) {
  mpx_async_free(a);
  mpx_pool_free(arg); /* from a callback: the pool's thread frees it later */
  atomic_store(&own_free_tid, (pid_t)syscall(SYS_gettid));
  atomic_fetch_add(&own_free_ran, 1);
}

static void test_loop_thread_free_and_shutdown(void) {
  /* A: mpx_pool_free on the loop's thread, busy and not closed. */
  mpx_forkserver_start();
  int kids0 = count_children();
  uv_loop_t loop;
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
  mpx_pool_opts_t o = {.loop = &loop, .quiet = true};
  ufree_t f = {.p = pool(2, &o)};
  CU_ASSERT_PTR_NOT_NULL_FATAL(f.p);
  double s = 20;
  for (int i = 0; i < 4; i++)
    CU_ASSERT_EQUAL(mpx_pool_apply_async(f.p, MPX_FUNC(mpx_test_sleepy), &s, 8, NULL, NULL, NULL,
                                         &f.a[i]), 0);
  uv_timer_t t;
  uv_timer_init(&loop, &t);
  t.data = &f;
  uv_timer_start(&t, ufree_timer, 200, 0);
  double t0 = mpx_test_now();
  uv_run(&loop, UV_RUN_DEFAULT);
  CU_ASSERT_TRUE(f.freed);
  CU_ASSERT_TRUE(mpx_test_now() - t0 < 10); /* terminated, not waited for */
  CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
  CU_ASSERT_EQUAL(count_children(), kids0);

  /* B: blocking calls and mpx_pool_free on another thread while the loop
   * runs; uv_run returns once the pool is gone. */
  CU_ASSERT_EQUAL_FATAL(uv_loop_init(&loop), 0);
  mpx_pool_t *p = pool(2, &o);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  pthread_t th;
  void *thr = (void *)1;
  pthread_create(&th, NULL, ufree_thread, p);
  uv_run(&loop, UV_RUN_DEFAULT);
  pthread_join(th, &thr);
  CU_ASSERT_PTR_NULL(thr);
  CU_ASSERT_EQUAL(uv_loop_close(&loop), 0);
  CU_ASSERT_EQUAL(count_children(), kids0);

  /* C: the own thread: MPX_EDEADLK in a callback, mpx_pool_shutdown, free. */
  main_thread = pthread_self();
  mpx_pool_opts_t oo = {0};
  p = pool(2, &oo);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  int64_t x = 4;
  mpx_async_t *a;
  CU_ASSERT_EQUAL(mpx_pool_apply_async(p, MPX_FUNC(square), &x, 8, own_cb, NULL, p, &a), 0);
  CU_ASSERT_EQUAL(mpx_async_wait(a, 30), 0);
  CU_ASSERT_EQUAL(mpx_pool_shutdown(p, own_shut, NULL), 0);
  void *res;
  size_t len;
  CU_ASSERT_EQUAL(mpx_pool_apply(p, MPX_FUNC(square), &x, 8, &res, &len, 1), MPX_ECLOSED);
  mpx_async_free(a);
  mpx_pool_free(p);
  CU_ASSERT_EQUAL(atomic_load(&own_cb_deadlk), 1);
  CU_ASSERT_EQUAL(atomic_load(&own_shut_ran), 1);
  CU_ASSERT_EQUAL(count_children(), kids0);

  /* D: the own thread, mpx_pool_free from a callback. */
  p = pool(2, &oo);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  CU_ASSERT_EQUAL(mpx_pool_apply_async(p, MPX_FUNC(square), &x, 8, own_free_cb, NULL, p,
                                       &a), 0);
  for (int i = 0; i < 1000 && (atomic_load(&own_free_ran) == 0 || count_children() > kids0);
       i++)
    mpx_test_sleep(0.01);
  CU_ASSERT_EQUAL(atomic_load(&own_free_ran), 1);
  CU_ASSERT_EQUAL(count_children(), kids0);
  /* The pool's thread frees it after its loop returns, then ends. */
  char task[64];
  snprintf(task, sizeof task, "/proc/self/task/%d", (int)atomic_load(&own_free_tid));
  for (int i = 0; i < 30000 && access(task, F_OK) == 0; i++) mpx_test_sleep(0.001);
  CU_ASSERT_NOT_EQUAL(access(task, F_OK), 0);
}

MPX_TEST_MAIN("pool", MPX_TEST(test_map_fixed_in_order), MPX_TEST(test_map_bytes_and_errors),
              MPX_TEST(test_apply_and_callbacks), MPX_TEST(test_imap_bounded_and_ordered),
              MPX_TEST(test_imap_unordered_multiset), MPX_TEST(test_maxtasks_and_initializer),
              MPX_TEST(test_segv_on_some_inputs), MPX_TEST(test_kill_storm),
              MPX_TEST(test_intensity_breaks_pool), MPX_TEST(test_task_timeout),
              MPX_TEST(test_sigint_during_map), MPX_TEST(test_close_join_waits),
              MPX_TEST(test_spawn_and_forkserver), MPX_TEST(test_objects),
              MPX_TEST(test_create_destroy_cycles), MPX_TEST(test_large_items),
              MPX_TEST(test_large_worker_killed), MPX_TEST(test_arena_full_or_off),
              MPX_TEST(test_loans),
              MPX_TEST(test_large_kill_storm),
              MPX_TEST(test_user_loop), MPX_TEST(test_loop_thread_free_and_shutdown))
