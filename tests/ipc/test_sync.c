/* Semaphore, BoundedSemaphore, Event, Condition and Barrier across fork
 * children: exact counts, timeouts, error codes, and waiters SIGKILLed
 * while asleep. Children report through exit codes; the parent asserts. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

#define QCAP 8
#define MAXC 8
#define GENS 20

typedef struct {
  mpx_sem_t sem;
  mpx_event_t ev, ev2;
  mpx_lock_t lock;
  mpx_cond_t cond, cond2;
  mpx_barrier_t bar;
  _Atomic int counter, inside, max_inside, ready, woke, actions;
  _Atomic int flag;
  /* Producer/consumer queue, guarded by `lock`. */
  int q[QCAP];
  int q_len, q_head, produced, consumed;
  long sum;
  /* Barrier indexes: idx[child][generation]. */
  int idx[MAXC][GENS];
} shared_t;

static shared_t *S;

static shared_t *map_shared(void) {
  void *p = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CU_ASSERT_FATAL(p != MAP_FAILED);
  memset(p, 0, sizeof(shared_t));
  S = p;
  return p;
}

static void unmap_shared(void) {
  munmap(S, sizeof *S);
  S = NULL;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

/* ---- children ---------------------------------------------------------- */

/* Children still running; killed at exit so a failed test that skipped its
 * reaping leaves nothing holding ctest's pipe. */
#define N_LIVE 64
static pid_t live[N_LIVE];

static void kill_leftovers(void) {
  for (size_t i = 0; i < N_LIVE; i++)
    if (live[i] > 0) {
      kill(live[i], SIGKILL);
      waitpid(live[i], NULL, 0);
      live[i] = 0;
    }
}

static pid_t spawn(int (*fn)(int), int arg) {
  static int registered;
  pid_t pid;
  if (!registered) registered = atexit(kill_leftovers) == 0;
  fflush(NULL);
  pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    _exit(fn(arg));
  }
  CU_ASSERT_FATAL(pid > 0);
  for (size_t i = 0; i < N_LIVE; i++)
    if (live[i] == 0) {
      live[i] = pid;
      break;
    }
  return pid;
}

static void forget(pid_t pid) {
  for (size_t i = 0; i < N_LIVE; i++)
    if (live[i] == pid) live[i] = 0;
}

/* The child's exit code, -signal when killed, or -1000 when it did not end
 * within `timeout` seconds (it is killed then). */
static int reap(pid_t pid, double timeout) {
  double end = now() + timeout;
  int st;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0) return -1001;
    if (now() > end) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      forget(pid);
      return -1000;
    }
    sleep_s(0.001);
  }
  forget(pid);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

/* The scheduler state letter of a process ('R', 'S', ...). */
static char proc_state(pid_t pid) {
  char path[64], buf[256];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return '?';
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strrchr(buf, ')');
  return p != NULL && p[1] == ' ' ? p[2] : '?';
}

/* Waits until the child raised S->ready to `n` and then went to sleep in
 * a futex wait (after the spin phase). */
static int wait_asleep(pid_t pid, int n) {
  double end = now() + 10;
  while (atomic_load(&S->ready) < n) {
    if (now() > end) return 0;
    sleep_s(0.0005);
  }
  return mpx_test_wait_futex(pid, 10);
}

/* Waits until at least `exited` of the n children have ended and every
 * other sleeps in a futex wait. A wake-up makes its sleeper runnable
 * before the waking call returns, so from then on no child is between a
 * wake-up and what it does next: the counts they keep are final until we
 * wake one again. */
static int wait_settled(const pid_t *pids, int n, int exited) {
  double end = now() + 10;
  for (;;) {
    int ended = 0, asleep = 0;
    for (int i = 0; i < n; i++) {
      if (proc_state(pids[i]) == 'Z')
        ended++;
      else if (mpx_test_in_futex(pids[i]))
        asleep++;
    }
    if (ended >= exited && ended + asleep == n) return 1;
    if (now() > end) return 0;
    sleep_s(0.0005);
  }
}


/* ---- Semaphore --------------------------------------------------------- */

enum { SEM_INIT = 2, SEM_CHILDREN = 5, SEM_ROUNDS = 200 };

static int sem_worker(int arg) {
  (void)arg;
  for (int i = 0; i < SEM_ROUNDS; i++) {
    if (mpx_sem_acquire(&S->sem, 30) != 0) return 2;
    int in = atomic_fetch_add(&S->inside, 1) + 1;
    int m = atomic_load(&S->max_inside);
    while (in > m && !atomic_compare_exchange_weak(&S->max_inside, &m, in)) {
    }
    atomic_fetch_add(&S->counter, 1);
    sleep_s(0.0001); /* hold it long enough for others to pile up */
    atomic_fetch_sub(&S->inside, 1);
    if (mpx_sem_release(&S->sem) != 0) return 3;
  }
  return 0;
}

static void test_sem_counts(void) {
  pid_t pids[SEM_CHILDREN];
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, SEM_INIT), 0);
  for (int i = 0; i < SEM_CHILDREN; i++) pids[i] = spawn(sem_worker, i);
  for (int i = 0; i < SEM_CHILDREN; i++) CU_ASSERT_EQUAL(reap(pids[i], 60), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->counter), SEM_CHILDREN * SEM_ROUNDS);
  CU_ASSERT_EQUAL(atomic_load(&S->max_inside), SEM_INIT);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), SEM_INIT);
  unmap_shared();
}

static void test_sem_try_and_timeout(void) {
  map_shared();
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), MPX_EINVAL); /* not init */
  CU_ASSERT_EQUAL(mpx_sem_init(&S->sem, (unsigned)INT32_MAX + 1), MPX_EINVAL);
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, 0), 0);
  CU_ASSERT_EQUAL(mpx_sem_locked(&S->sem), 1);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0.0 / 0.0), MPX_EINVAL);
  double t0 = now();
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0.1), MPX_ETIMEDOUT);
  double dt = now() - t0;
  CU_ASSERT(dt >= 0.1 && dt < 1.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 2);
  CU_ASSERT_EQUAL(mpx_sem_locked(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), 0);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, -1), 0);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 0);
  mpx_sem_destroy(&S->sem);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), MPX_EINVAL);
  unmap_shared();
}

static void test_bsem_overflow(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_bsem_init(&S->sem, 2), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), MPX_EOVERFLOW);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 2);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), 0);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 1);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), MPX_EOVERFLOW);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 2);
  CU_ASSERT_EQUAL_FATAL(mpx_bsem_init(&S->sem, 0), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), MPX_EOVERFLOW);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 0);
  /* A plain semaphore has no bound below INT32_MAX. */
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, 2), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 3);
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, INT32_MAX), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), MPX_EOVERFLOW);
  unmap_shared();
}

static int sem_waiter(int timeout) {
  atomic_fetch_add(&S->ready, 1);
  int rc = mpx_sem_acquire(&S->sem, timeout);
  if (rc == 0) atomic_fetch_add(&S->woke, 1);
  return rc == 0 ? 0 : 1;
}

static void test_sem_wakes_sleepers(void) {
  enum { N = 3 };
  pid_t pids[N];
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, 0), 0);
  for (int i = 0; i < N; i++) pids[i] = spawn(sem_waiter, 30);
  for (int i = 0; i < N; i++) CU_ASSERT(wait_asleep(pids[i], N));
  /* Each release lets exactly one sleeper through. */
  for (int i = 1; i <= N; i++) {
    CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
    CU_ASSERT(wait_settled(pids, N, i));
    CU_ASSERT_EQUAL(atomic_load(&S->woke), i);
  }
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(reap(pids[i], 30), 0);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 0);
  unmap_shared();
}

static void test_sem_waiter_killed(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_sem_init(&S->sem, 0), 0);
  pid_t a = spawn(sem_waiter, -1);
  CU_ASSERT(wait_asleep(a, 1));
  kill(a, SIGKILL);
  CU_ASSERT_EQUAL(reap(a, 10), -SIGKILL);
  pid_t b = spawn(sem_waiter, 30);
  CU_ASSERT(wait_asleep(b, 2));
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  /* Woken, not rescued by its own 30 s timeout. */
  CU_ASSERT_EQUAL(reap(b, 5), 0);
  CU_ASSERT_EQUAL(mpx_sem_value(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_release(&S->sem), 0);
  CU_ASSERT_EQUAL(mpx_sem_acquire(&S->sem, 0), 0);
  unmap_shared();
}

/* ---- Event ------------------------------------------------------------- */

static void test_event_basic(void) {
  map_shared();
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0), MPX_EINVAL); /* not init */
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev), 0);
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 0);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0.0 / 0.0), MPX_EINVAL);
  double t0 = now();
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0.2), MPX_ETIMEDOUT);
  double dt = now() - t0;
  CU_ASSERT(dt >= 0.2 && dt < 2.0); /* never early; late only by scheduling (bounded loosely: not a speed test) */
  mpx_event_set(&S->ev);
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 1);
  mpx_event_set(&S->ev);
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 1);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0), 0);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, -1), 0);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0.0 / 0.0), 0); /* set: at once */
  mpx_event_clear(&S->ev);
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 0);
  mpx_event_clear(&S->ev);
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 0);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0.02), MPX_ETIMEDOUT);
  unmap_shared();
}

static int event_waiter(int timeout) {
  atomic_fetch_add(&S->ready, 1);
  int rc = mpx_event_wait(&S->ev, timeout);
  atomic_fetch_add(&S->woke, 1);
  return rc == 0 ? 0 : 1;
}

/* Sets the event once the parent sleeps in its wait (1: it set it
 * without seeing that within 10 s). */
static int event_setter_when_waited(int parent) {
  int asleep = mpx_test_wait_futex((pid_t)parent, 10);
  mpx_event_set(&S->ev);
  return asleep ? 0 : 1;
}

static void test_event_cross_process(void) {
  enum { N = 3 };
  pid_t pids[N];
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev), 0);
  /* A child's set wakes the parent waiting forever. */
  pid_t setter = spawn(event_setter_when_waited, (int)getpid());
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, -1), 0);
  CU_ASSERT_EQUAL(reap(setter, 10), 0);
  /* One set wakes every sleeping child. */
  mpx_event_clear(&S->ev);
  for (int i = 0; i < N; i++) pids[i] = spawn(event_waiter, -1);
  for (int i = 0; i < N; i++) CU_ASSERT(wait_asleep(pids[i], N));
  CU_ASSERT_EQUAL(atomic_load(&S->woke), 0);
  mpx_event_set(&S->ev);
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(reap(pids[i], 10), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->woke), N);
  unmap_shared();
}

static int event_waiter_flag(int arg) {
  (void)arg;
  atomic_fetch_add(&S->ready, 1);
  int rc = mpx_event_wait(&S->ev, 5);
  /* The set came and went: the wait still reports it. */
  return rc == 0 && !mpx_event_is_set(&S->ev) ? 0 : 1;
}

static void test_event_set_then_clear(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev), 0);
  pid_t pid = spawn(event_waiter_flag, 0);
  CU_ASSERT(wait_asleep(pid, 1));
  kill(pid, SIGSTOP); /* so it cannot run between set and clear */
  mpx_event_set(&S->ev);
  mpx_event_clear(&S->ev);
  kill(pid, SIGCONT);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);
  unmap_shared();
}

static void test_event_waiter_killed(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev), 0);
  pid_t a = spawn(event_waiter, -1);
  CU_ASSERT(wait_asleep(a, 1));
  kill(a, SIGKILL);
  CU_ASSERT_EQUAL(reap(a, 10), -SIGKILL);
  pid_t b = spawn(event_waiter, 30);
  CU_ASSERT(wait_asleep(b, 2));
  mpx_event_set(&S->ev);
  CU_ASSERT_EQUAL(reap(b, 5), 0); /* woken, not timed out */
  CU_ASSERT_EQUAL(mpx_event_is_set(&S->ev), 1);
  mpx_event_clear(&S->ev);
  CU_ASSERT_EQUAL(mpx_event_wait(&S->ev, 0.01), MPX_ETIMEDOUT);
  unmap_shared();
}

enum { PINGS = 100000 };

static int ponger(int arg) {
  (void)arg;
  for (int i = 0; i < PINGS; i++) {
    if (mpx_event_wait(&S->ev, 30) != 0) return 1;
    mpx_event_clear(&S->ev);
    mpx_event_set(&S->ev2);
  }
  return 0;
}

/* Exact round trips; the rate is printed, not asserted. */
static void test_event_ping_pong(void) {
  int ok = 1;
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_event_init(&S->ev2), 0);
  pid_t pid = spawn(ponger, 0);
  double t0 = now();
  for (int i = 0; i < PINGS && ok; i++) {
    mpx_event_set(&S->ev);
    ok = mpx_event_wait(&S->ev2, 30) == 0;
    mpx_event_clear(&S->ev2);
  }
  double dt = now() - t0;
  CU_ASSERT(ok);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);
  printf("[%.0f round trips/s] ", PINGS / dt);
  unmap_shared();
}

/* ---- Condition --------------------------------------------------------- */

enum { PRODUCERS = 2, CONSUMERS = 2, ITEMS = 2000 };

static int q_not_full(void *arg) {
  (void)arg;
  return S->q_len < QCAP;
}

static int q_not_empty_or_done(void *arg) {
  (void)arg;
  return S->q_len > 0 || S->consumed == PRODUCERS * ITEMS;
}

/* cond: "not empty", cond2: "not full", both on the user Lock. */
static int producer(int id) {
  for (int i = 0; i < ITEMS; i++) {
    if (mpx_cond_acquire(&S->cond2, -1) != 0) return 2;
    if (mpx_cond_wait_for(&S->cond2, q_not_full, NULL, 30) != 0) return 3;
    S->q[(S->q_head + S->q_len) % QCAP] = id * ITEMS + i + 1;
    S->q_len++;
    S->produced++;
    if (mpx_cond_notify(&S->cond, 1) != 0) return 4;
    if (mpx_cond_release(&S->cond2) != 0) return 5;
  }
  return 0;
}

static int consumer(int id) {
  (void)id;
  if (mpx_cond_acquire(&S->cond, -1) != 0) return 2;
  for (;;) {
    if (mpx_cond_wait_for(&S->cond, q_not_empty_or_done, NULL, 30) != 0)
      return 3;
    if (S->q_len == 0) break; /* all consumed */
    S->sum += S->q[S->q_head];
    S->q_head = (S->q_head + 1) % QCAP;
    S->q_len--;
    S->consumed++;
    if (S->consumed == PRODUCERS * ITEMS) mpx_cond_notify_all(&S->cond);
    if (mpx_cond_notify(&S->cond2, 1) != 0) return 4;
  }
  return mpx_cond_release(&S->cond) == 0 ? 0 : 5;
}

static void test_cond_producer_consumer(void) {
  pid_t pids[PRODUCERS + CONSUMERS];
  long n = PRODUCERS * ITEMS;
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&S->lock), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, &S->lock), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond2, &S->lock), 0);
  CU_ASSERT(mpx_cond_lock(&S->cond) == &S->lock);
  CU_ASSERT(mpx_cond_lock(&S->cond2) == &S->lock);
  for (int i = 0; i < CONSUMERS; i++) pids[i] = spawn(consumer, i);
  for (int i = 0; i < PRODUCERS; i++)
    pids[CONSUMERS + i] = spawn(producer, i);
  for (int i = 0; i < PRODUCERS + CONSUMERS; i++)
    CU_ASSERT_EQUAL(reap(pids[i], 60), 0);
  CU_ASSERT_EQUAL(S->produced, n);
  CU_ASSERT_EQUAL(S->consumed, n);
  CU_ASSERT_EQUAL(S->q_len, 0);
  CU_ASSERT_EQUAL(S->sum, n * (n + 1) / 2);
  CU_ASSERT_EQUAL(mpx_lock_locked(&S->lock), 0);
  unmap_shared();
}

static int cond_waiter(int timeout) {
  if (mpx_cond_acquire(&S->cond, -1) != 0) return 2;
  atomic_fetch_add(&S->ready, 1);
  int rc = mpx_cond_wait(&S->cond, timeout);
  if (rc == 0) atomic_fetch_add(&S->woke, 1);
  if (mpx_lock_count(mpx_cond_lock(&S->cond)) != 1) return 3;
  if (mpx_cond_release(&S->cond) != 0) return 4;
  return rc == 0 ? 0 : rc == MPX_ETIMEDOUT ? 1 : 5;
}

static int cond_ready(int n) {
  double end = now() + 10;
  for (;;) {
    /* Counted under the lock before the wait releases it: once we hold
     * the lock and see n, all n are registered waiters. */
    mpx_cond_acquire(&S->cond, -1);
    int r = atomic_load(&S->ready);
    mpx_cond_release(&S->cond);
    if (r >= n) return 1;
    if (now() > end) return 0;
    sleep_s(0.001);
  }
}

static void test_cond_notify_one(void) {
  enum { N = 3 };
  pid_t pids[N];
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, NULL), 0);
  for (int i = 0; i < N; i++) pids[i] = spawn(cond_waiter, 30);
  CU_ASSERT_FATAL(cond_ready(N));
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 1), 0);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT(wait_settled(pids, N, 1));
  CU_ASSERT_EQUAL(atomic_load(&S->woke), 1);
  /* notify(0) wakes nobody; notify(5) wakes the two left. */
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 0), 0);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT(wait_settled(pids, N, 1));
  CU_ASSERT_EQUAL(atomic_load(&S->woke), 1);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify_all(&S->cond), 0);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(reap(pids[i], 30), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->woke), N);
  unmap_shared();
}

/* A notify is for the waiters of its time: one that waits afterwards, even
 * with timeout 0 while the notified one has not run yet, does not get it. */
static void test_cond_no_stolen_or_spurious_wakeup(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, NULL), 0);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 1), 0); /* nobody waits */
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0.05), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);

  pid_t pid = spawn(cond_waiter, 30);
  CU_ASSERT_FATAL(cond_ready(1));
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 1), 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0.05), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->woke), 1);

  /* A waiter left alone times out, it is not woken by anything else. */
  pid = spawn(cond_waiter, 1);
  CU_ASSERT_EQUAL(reap(pid, 30), 1);
  unmap_shared();
}

static int cond_notifier(int arg) {
  (void)arg;
  if (mpx_cond_notify(&S->cond, 1) != MPX_EPERM) return 1;
  if (mpx_cond_acquire(&S->cond, -1) != 0) return 2;
  S->q_len = 1;
  if (mpx_cond_notify(&S->cond, 1) != 0) return 3;
  return mpx_cond_release(&S->cond) == 0 ? 0 : 4;
}

static int q_nonempty(void *arg) {
  (void)arg;
  return S->q_len > 0;
}

static void test_cond_eperm(void) {
  map_shared();
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0), MPX_EINVAL); /* not init */
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, NULL), 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, -1), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_cond_wait_for(&S->cond, q_nonempty, NULL, 0),
                  MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 1), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_cond_notify_all(&S->cond), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), MPX_EPERM);
  /* Held by this process: a child is not the owner. */
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0.0 / 0.0), MPX_EINVAL);
  pid_t pid = spawn(cond_notifier, 0);
  /* wait_for: false, then made true by the child's notify. */
  CU_ASSERT_EQUAL(mpx_cond_wait_for(&S->cond, q_nonempty, NULL, 30), 0);
  CU_ASSERT_EQUAL(S->q_len, 1);
  CU_ASSERT_EQUAL(mpx_cond_wait_for(&S->cond, q_nonempty, NULL, 0), 0);
  S->q_len = 0;
  double t0 = now();
  CU_ASSERT_EQUAL(mpx_cond_wait_for(&S->cond, q_nonempty, NULL, 0.1),
                  MPX_ETIMEDOUT);
  CU_ASSERT(now() - t0 >= 0.1);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);
  unmap_shared();
}

static int lock_notifier(int arg) {
  (void)arg;
  /* The parent holds the lock (at depth 2 for an RLock) until its wait
   * releases it fully. */
  if (mpx_cond_acquire(&S->cond, -1) != 0) return 2;
  atomic_store(&S->flag, 1);
  if (mpx_cond_notify(&S->cond, 1) != 0) return 3;
  return mpx_cond_release(&S->cond) == 0 ? 0 : 4;
}

static void test_cond_user_lock_and_rlock_depth(void) {
  map_shared();
  /* A user Lock. */
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&S->lock), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, &S->lock), 0);
  CU_ASSERT(mpx_cond_lock(&S->cond) == &S->lock);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&S->lock, -1), 0);
  pid_t pid = spawn(lock_notifier, 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 30), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->flag), 1);
  CU_ASSERT_EQUAL(mpx_lock_is_mine(&S->lock), 1);
  CU_ASSERT_EQUAL(mpx_lock_release(&S->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_locked(&S->lock), 0);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);

  /* A user RLock held at depth 2, woken and timed out. */
  atomic_store(&S->flag, 0);
  CU_ASSERT_EQUAL_FATAL(mpx_rlock_init(&S->lock), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, &S->lock), 0);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_lock_count(&S->lock), 2);
  pid = spawn(lock_notifier, 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 30), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->flag), 1);
  CU_ASSERT_EQUAL(mpx_lock_count(&S->lock), 2);
  CU_ASSERT_EQUAL(reap(pid, 30), 0);
  CU_ASSERT_EQUAL(mpx_cond_wait(&S->cond, 0.02), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_lock_count(&S->lock), 2);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT_EQUAL(mpx_lock_count(&S->lock), 1);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT_EQUAL(mpx_lock_locked(&S->lock), 0);

  /* The condition's own lock is an RLock. */
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond2, NULL), 0);
  CU_ASSERT(mpx_cond_lock(&S->cond2) != NULL);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond2, 0), 0);
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond2, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_count(mpx_cond_lock(&S->cond2)), 2);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond2), 0);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond2), 0);
  unmap_shared();
}

static void test_cond_waiter_killed(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_cond_init(&S->cond, NULL), 0);
  pid_t a = spawn(cond_waiter, -1);
  CU_ASSERT_FATAL(cond_ready(1));
  CU_ASSERT(wait_asleep(a, 1));
  kill(a, SIGKILL);
  CU_ASSERT_EQUAL(reap(a, 10), -SIGKILL);
  pid_t b = spawn(cond_waiter, 30);
  CU_ASSERT_FATAL(cond_ready(2));
  CU_ASSERT_EQUAL(mpx_cond_acquire(&S->cond, -1), 0);
  CU_ASSERT_EQUAL(mpx_cond_notify(&S->cond, 1), 0);
  CU_ASSERT_EQUAL(mpx_cond_release(&S->cond), 0);
  CU_ASSERT_EQUAL(reap(b, 5), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->woke), 1);
  unmap_shared();
}

/* ---- Barrier ----------------------------------------------------------- */

enum { PARTIES = 3 };

static int count_action(void *arg) {
  (void)arg;
  atomic_fetch_add(&S->actions, 1);
  return 0;
}

static int failing_action(void *arg) {
  (void)arg;
  atomic_fetch_add(&S->actions, 1);
  return MPX_ETASK;
}

static int barrier_rounds(int id) {
  for (int g = 0; g < GENS; g++) {
    unsigned index = 99;
    if (mpx_barrier_wait(&S->bar, 30, &index) != 0) return 2;
    S->idx[id][g] = (int)index;
    /* The action of this generation ran before anyone was released. */
    if (atomic_load(&S->actions) < g + 1) return 3;
  }
  return 0;
}

static void test_barrier_generations(void) {
  pid_t pids[PARTIES];
  map_shared();
  CU_ASSERT_EQUAL(mpx_barrier_init(&S->bar, 0, NULL, NULL), MPX_EINVAL);
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, PARTIES, count_action,
                                         NULL), 0);
  CU_ASSERT_EQUAL(mpx_barrier_parties(&S->bar), PARTIES);
  CU_ASSERT_EQUAL(mpx_barrier_n_waiting(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 0);
  for (int i = 0; i < PARTIES; i++) pids[i] = spawn(barrier_rounds, i);
  for (int i = 0; i < PARTIES; i++) CU_ASSERT_EQUAL(reap(pids[i], 60), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->actions), GENS);
  for (int g = 0; g < GENS; g++) {
    int seen = 0;
    for (int i = 0; i < PARTIES; i++)
      if (S->idx[i][g] >= 0 && S->idx[i][g] < PARTIES)
        seen |= 1 << S->idx[i][g];
    CU_ASSERT_EQUAL(seen, (1 << PARTIES) - 1);
  }
  CU_ASSERT_EQUAL(mpx_barrier_n_waiting(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 0);

  /* One party: every wait is the last one. */
  unsigned index = 99;
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, 1, count_action, NULL), 0);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 0, &index), 0);
  CU_ASSERT_EQUAL(index, 0);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, -1, NULL), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->actions), GENS + 2);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 0.0 / 0.0, NULL), MPX_EINVAL);
  unmap_shared();
}

/* Exit codes for barrier results. */
static int code_of(int rc) {
  switch (rc) {
  case 0: return 10;
  case MPX_EBROKEN: return 11;
  case MPX_ETASK: return 12;
  case MPX_ETIMEDOUT: return 13;
  }
  return 14;
}

static int barrier_waiter(int timeout_ms) {
  atomic_fetch_add(&S->ready, 1);
  return code_of(mpx_barrier_wait(&S->bar, timeout_ms / 1000.0, NULL));
}

static int wait_n_waiting(unsigned n) {
  double end = now() + 10;
  while (mpx_barrier_n_waiting(&S->bar) != n)
    if (now() > end) return 0;
  return 1;
}

static void run_full_generation(void) {
  pid_t a = spawn(barrier_waiter, 30000), b = spawn(barrier_waiter, 30000);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 30, NULL), 0);
  CU_ASSERT_EQUAL(reap(a, 30), 10);
  CU_ASSERT_EQUAL(reap(b, 30), 10);
}

static void test_barrier_timeout_breaks(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, PARTIES, NULL, NULL), 0);
  pid_t forever = spawn(barrier_waiter, -1);
  CU_ASSERT(wait_n_waiting(1));
  pid_t brief = spawn(barrier_waiter, 200);
  CU_ASSERT_EQUAL(reap(brief, 30), 13);   /* MPX_ETIMEDOUT */
  CU_ASSERT_EQUAL(reap(forever, 30), 11); /* MPX_EBROKEN */
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 1);
  CU_ASSERT_EQUAL(mpx_barrier_n_waiting(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, -1, NULL), MPX_EBROKEN);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 0, NULL), MPX_EBROKEN);
  /* Timeout 0 for a party that is not the last breaks it at once. */
  CU_ASSERT_EQUAL(mpx_barrier_reset(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 0, NULL), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 1);
  CU_ASSERT_EQUAL(mpx_barrier_reset(&S->bar), 0);
  run_full_generation();
  run_full_generation();
  unmap_shared();
}

static void test_barrier_reset_wakes(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, PARTIES, count_action,
                                         NULL), 0);
  pid_t a = spawn(barrier_waiter, -1), b = spawn(barrier_waiter, -1);
  CU_ASSERT(wait_n_waiting(2));
  CU_ASSERT(wait_asleep(a, 2) && wait_asleep(b, 2));
  CU_ASSERT_EQUAL(mpx_barrier_reset(&S->bar), 0);
  CU_ASSERT_EQUAL(reap(a, 30), 11);
  CU_ASSERT_EQUAL(reap(b, 30), 11);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_n_waiting(&S->bar), 0);
  CU_ASSERT_EQUAL(atomic_load(&S->actions), 0);
  run_full_generation();
  CU_ASSERT_EQUAL(atomic_load(&S->actions), 1);
  unmap_shared();
}

static void test_barrier_abort(void) {
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, PARTIES, NULL, NULL), 0);
  pid_t a = spawn(barrier_waiter, -1);
  CU_ASSERT(wait_n_waiting(1));
  CU_ASSERT_EQUAL(mpx_barrier_abort(&S->bar), 0);
  CU_ASSERT_EQUAL(reap(a, 30), 11);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 1);
  CU_ASSERT_EQUAL(mpx_barrier_abort(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_wait(&S->bar, 1, NULL), MPX_EBROKEN);
  a = spawn(barrier_waiter, -1);
  CU_ASSERT_EQUAL(reap(a, 30), 11);
  CU_ASSERT_EQUAL(mpx_barrier_reset(&S->bar), 0);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 0);
  run_full_generation();
  unmap_shared();
}

static void test_barrier_action_fails(void) {
  pid_t pids[PARTIES];
  int codes[15] = {0};
  map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_barrier_init(&S->bar, PARTIES, failing_action,
                                         NULL), 0);
  for (int i = 0; i < PARTIES; i++) pids[i] = spawn(barrier_waiter, 30000);
  for (int i = 0; i < PARTIES; i++) {
    int c = reap(pids[i], 60);
    if (c >= 0 && c < 15) codes[c]++;
  }
  CU_ASSERT_EQUAL(codes[12], 1);           /* the action's MPX_ETASK */
  CU_ASSERT_EQUAL(codes[11], PARTIES - 1); /* MPX_EBROKEN */
  CU_ASSERT_EQUAL(atomic_load(&S->actions), 1);
  CU_ASSERT_EQUAL(mpx_barrier_broken(&S->bar), 1);
  unmap_shared();
}

MPX_TEST_MAIN("sync", MPX_TEST(test_sem_counts),
              MPX_TEST(test_sem_try_and_timeout), MPX_TEST(test_bsem_overflow),
              MPX_TEST(test_sem_wakes_sleepers),
              MPX_TEST(test_sem_waiter_killed), MPX_TEST(test_event_basic),
              MPX_TEST(test_event_cross_process),
              MPX_TEST(test_event_set_then_clear),
              MPX_TEST(test_event_waiter_killed),
              MPX_TEST(test_event_ping_pong),
              MPX_TEST(test_cond_producer_consumer),
              MPX_TEST(test_cond_notify_one),
              MPX_TEST(test_cond_no_stolen_or_spurious_wakeup),
              MPX_TEST(test_cond_eperm),
              MPX_TEST(test_cond_user_lock_and_rlock_depth),
              MPX_TEST(test_cond_waiter_killed),
              MPX_TEST(test_barrier_generations),
              MPX_TEST(test_barrier_timeout_breaks),
              MPX_TEST(test_barrier_reset_wakes), MPX_TEST(test_barrier_abort),
              MPX_TEST(test_barrier_action_fails))
