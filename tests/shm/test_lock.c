/* Lock and RLock: exclusion across processes, recursion, ownership errors,
 * timeouts, and recovery after an owner is SIGKILLed. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"

typedef struct {
  mpx_lock_t lock;
  mpx_lock_t rlock;
  pthread_mutex_t pm;
  volatile long counter;
  volatile int flag;
} shared_t;

static shared_t *map_shared(void) {
  void *p = mmap(NULL, sizeof(shared_t), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  CU_ASSERT_FATAL(p != MAP_FAILED);
  memset(p, 0, sizeof(shared_t));
  return p;
}

static void test_counter_n_processes(void) {
  enum { N = 4, M = 20000 };
  shared_t *s = map_shared();
  pid_t pids[N];
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  for (int i = 0; i < N; i++) {
    pids[i] = fork();
    CU_ASSERT_FATAL(pids[i] >= 0);
    if (pids[i] == 0) {
      for (int j = 0; j < M; j++) {
        if (mpx_lock_acquire(&s->lock, -1) != 0) _exit(2);
        long v = s->counter;  /* a torn read-modify-write without the lock */
        s->counter = v + 1;
        if (mpx_lock_release(&s->lock) != 0) _exit(3);
      }
      _exit(0);
    }
  }
  for (int i = 0; i < N; i++) CU_ASSERT_EQUAL(mpx_test_wait_exit(pids[i]), 0);
  CU_ASSERT_EQUAL(s->counter, (long)N * M);
  CU_ASSERT_EQUAL(mpx_lock_locked(&s->lock), 0);
  munmap(s, sizeof *s);
}

static void test_lock_errors(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), MPX_EINVAL); /* not init */
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_lock_init(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0.0 / 0.0), MPX_EINVAL); /* free */
  CU_ASSERT_EQUAL(mpx_lock_locked(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_locked(&s->lock), 1);
  CU_ASSERT_EQUAL(mpx_lock_is_mine(&s->lock), 1);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), MPX_EDEADLK);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0.0 / 0.0), MPX_EINVAL);
  /* A child cannot take it (timeout) nor release it (not the owner). */
  pid_t pid = fork();
  if (pid == 0) {
    if (mpx_lock_is_mine(&s->lock) != 0) _exit(1);
    if (mpx_lock_acquire(&s->lock, 0) != MPX_ETIMEDOUT) _exit(2);
    if (mpx_lock_acquire(&s->lock, 0.05) != MPX_ETIMEDOUT) _exit(3);
    if (mpx_lock_release(&s->lock) != MPX_EPERM) _exit(4);
    if (mpx_lock_acquire(&s->lock, 0.0 / 0.0) != MPX_EINVAL) _exit(5);
    _exit(0);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), MPX_EPERM);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), MPX_EINVAL);
  munmap(s, sizeof *s);
}

static void test_rlock(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_rlock_init(&s->rlock), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, -1), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, -1), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_count(&s->rlock), 3);
  s->flag = 0;
  pid_t pid = fork();
  if (pid == 0) {
    /* Foreign release is an error and changes nothing. */
    if (mpx_lock_release(&s->rlock) != MPX_EPERM) _exit(1);
    if (mpx_lock_count(&s->rlock) != 0) _exit(2);
    if (mpx_lock_acquire(&s->rlock, 0.02) != MPX_ETIMEDOUT) _exit(3);
    /* Now wait for the parent to release all three levels. */
    s->flag = 1;
    if (mpx_lock_acquire(&s->rlock, 10) != 0) _exit(4);
    if (mpx_lock_count(&s->rlock) != 1) _exit(5);
    _exit(mpx_lock_release(&s->rlock) == 0 ? 0 : 6);
  }
  /* Released only once the child's checks are done and it sleeps in the
   * last acquire. */
  while (s->flag == 0) usleep(1000);
  CU_ASSERT(mpx_test_wait_futex(pid, 30));
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), 0);
  CU_ASSERT_EQUAL(mpx_lock_locked(&s->rlock), 1);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(mpx_lock_locked(&s->rlock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), MPX_EPERM);
  munmap(s, sizeof *s);
}

/* The child takes the lock and signals; the parent SIGKILLs it. */
static pid_t child_holding(shared_t *s, mpx_lock_t *l) {
  s->flag = 0;
  pid_t pid = fork();
  if (pid == 0) {
    if (mpx_lock_acquire(l, -1) != 0) _exit(1);
    s->flag = 1;
    for (;;) pause();
  }
  while (s->flag == 0) usleep(1000);
  return pid;
}

static void test_owner_killed(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  pid_t pid = child_holding(s, &s->lock);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0.05), MPX_ETIMEDOUT);
  kill(pid, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 5), MPX_EOWNERDEAD);
  CU_ASSERT_EQUAL(mpx_lock_is_mine(&s->lock), 1);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  /* Repaired: usable as before, by this process and others. */
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  pid = fork();
  if (pid == 0) {
    int rc = mpx_lock_acquire(&s->lock, 1);
    _exit(rc == 0 && mpx_lock_release(&s->lock) == 0 ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  munmap(s, sizeof *s);
}

/* A waiter asleep in the kernel when the owner dies is woken by it. */
static void test_waiter_woken_by_owner_death(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_rlock_init(&s->rlock), 0);
  pid_t owner = child_holding(s, &s->rlock);
  pid_t waiter = fork();
  if (waiter == 0) {
    int rc = mpx_lock_acquire(&s->rlock, 20);
    if (rc != MPX_EOWNERDEAD) _exit(1);
    s->counter = 42; /* "repair" */
    if (mpx_lock_consistent(&s->rlock) != 0) _exit(2);
    _exit(mpx_lock_release(&s->rlock) == 0 ? 0 : 3);
  }
  CU_ASSERT(mpx_test_wait_futex(waiter, 30));
  kill(owner, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(owner), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(waiter), 0);
  CU_ASSERT_EQUAL(s->counter, 42);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), 0);
  munmap(s, sizeof *s);
}

static void test_not_recoverable(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  pid_t pid = child_holding(s, &s->lock);
  kill(pid, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1), MPX_EOWNERDEAD);
  /* Released without mpx_lock_consistent: nobody may trust it again. */
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1), MPX_ENOTRECOVERABLE);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), MPX_ENOTRECOVERABLE);
  /* Re-initialising makes it a fresh lock. */
  CU_ASSERT_EQUAL(mpx_lock_init(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  munmap(s, sizeof *s);
}

/* mpx locks share the thread's robust list with glibc's robust mutexes:
 * interleave them, in every release order, then die holding both. */
static void test_shares_robust_list_with_glibc(void) {
  shared_t *s = map_shared();
  pthread_mutexattr_t a;
  pthread_mutexattr_init(&a);
  pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
  CU_ASSERT_EQUAL_FATAL(pthread_mutex_init(&s->pm, &a), 0);
  pthread_mutexattr_destroy(&a);
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_rlock_init(&s->rlock), 0);
  for (int order = 0; order < 6; order++) {
    CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 0), 0);
    CU_ASSERT_EQUAL(pthread_mutex_lock(&s->pm), 0);
    CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, 0), 0);
    switch (order) {
      case 0: mpx_lock_release(&s->lock); pthread_mutex_unlock(&s->pm);
              mpx_lock_release(&s->rlock); break;
      case 1: mpx_lock_release(&s->rlock); pthread_mutex_unlock(&s->pm);
              mpx_lock_release(&s->lock); break;
      case 2: pthread_mutex_unlock(&s->pm); mpx_lock_release(&s->lock);
              mpx_lock_release(&s->rlock); break;
      case 3: pthread_mutex_unlock(&s->pm); mpx_lock_release(&s->rlock);
              mpx_lock_release(&s->lock); break;
      case 4: mpx_lock_release(&s->lock); mpx_lock_release(&s->rlock);
              pthread_mutex_unlock(&s->pm); break;
      default: mpx_lock_release(&s->rlock); mpx_lock_release(&s->lock);
              pthread_mutex_unlock(&s->pm); break;
    }
    CU_ASSERT_EQUAL(mpx_lock_locked(&s->lock), 0);
    CU_ASSERT_EQUAL(mpx_lock_locked(&s->rlock), 0);
  }
  s->flag = 0;
  pid_t pid = fork();
  if (pid == 0) {
    if (mpx_lock_acquire(&s->rlock, -1) != 0) _exit(1);
    if (pthread_mutex_lock(&s->pm) != 0) _exit(2);
    if (mpx_lock_acquire(&s->lock, -1) != 0) _exit(3);
    /* Release the middle one: the list must stay intact around it. */
    if (pthread_mutex_unlock(&s->pm) != 0) _exit(4);
    if (pthread_mutex_lock(&s->pm) != 0) _exit(5);
    s->flag = 1;
    for (;;) pause();
  }
  while (s->flag == 0) usleep(1000);
  kill(pid, SIGKILL);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1), MPX_EOWNERDEAD);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->rlock, 1), MPX_EOWNERDEAD);
  CU_ASSERT_EQUAL(pthread_mutex_lock(&s->pm), EOWNERDEAD);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->rlock), 0);
  CU_ASSERT_EQUAL(pthread_mutex_consistent(&s->pm), 0);
  CU_ASSERT_EQUAL(pthread_mutex_unlock(&s->pm), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->rlock), 0);
  pthread_mutex_destroy(&s->pm);
  munmap(s, sizeof *s);
}

static void *thread_dies_holding(void *arg) {
  shared_t *s = arg;
  if (mpx_lock_acquire(&s->lock, -1) != 0) return (void *)1;
  return NULL; /* exits with the lock held */
}

static void test_thread_exit_holding(void) {
  shared_t *s = map_shared();
  pthread_t t;
  void *ret = (void *)7;
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  CU_ASSERT_EQUAL_FATAL(pthread_create(&t, NULL, thread_dies_holding, s), 0);
  pthread_join(t, &ret);
  CU_ASSERT_PTR_NULL(ret);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1), MPX_EOWNERDEAD);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  munmap(s, sizeof *s);
}

/* Contended hand-off between threads of one process and a child. */
static void *thread_counter(void *arg) {
  shared_t *s = arg;
  for (int j = 0; j < 20000; j++) {
    if (mpx_lock_acquire(&s->rlock, -1) != 0) return (void *)1;
    if (mpx_lock_acquire(&s->rlock, -1) != 0) return (void *)2;
    s->counter++;
    mpx_lock_release(&s->rlock);
    mpx_lock_release(&s->rlock);
  }
  return NULL;
}

static void test_threads_and_processes(void) {
  shared_t *s = map_shared();
  pthread_t t[2];
  CU_ASSERT_EQUAL_FATAL(mpx_rlock_init(&s->rlock), 0);
  pid_t pid = fork();
  if (pid == 0) _exit(thread_counter(s) == NULL ? 0 : 1);
  for (int i = 0; i < 2; i++)
    CU_ASSERT_EQUAL(pthread_create(&t[i], NULL, thread_counter, s), 0);
  for (int i = 0; i < 2; i++) {
    void *r = (void *)9;
    pthread_join(t[i], &r);
    CU_ASSERT_PTR_NULL(r);
  }
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), 0);
  CU_ASSERT_EQUAL(s->counter, 60000);
  munmap(s, sizeof *s);
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_THREAD, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1e-6;
}

/* A child that kills `victim` once this process sleeps in a futex wait:
 * it exits 0, or 1 when that did not happen within 30 s (it kills all the
 * same). */
static pid_t kill_when_asleep(pid_t victim) {
  pid_t me = getpid(), pid = fork();
  if (pid == 0) {
    int asleep = mpx_test_wait_futex(me, 30);
    kill(victim, SIGKILL);
    _exit(asleep ? 0 : 1);
  }
  return pid;
}

/* Huge and infinite timeouts mean forever, not a spin or an error. */
static void test_infinite_timeout(void) {
  shared_t *s = map_shared();
  CU_ASSERT_EQUAL_FATAL(mpx_lock_init(&s->lock), 0);
  pid_t pid = child_holding(s, &s->lock);
  pid_t killer = kill_when_asleep(pid);
  /* Asleep, not spinning: the wait burns (almost) no CPU time. */
  double cpu0 = cpu_seconds();
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1.0 / 0.0), MPX_EOWNERDEAD);
  CU_ASSERT_TRUE(cpu_seconds() - cpu0 < 0.05);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(killer), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  pid = child_holding(s, &s->lock);
  killer = kill_when_asleep(pid);
  CU_ASSERT_EQUAL(mpx_lock_acquire(&s->lock, 1e300), MPX_EOWNERDEAD);
  CU_ASSERT_EQUAL(mpx_lock_consistent(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_lock_release(&s->lock), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(killer), 0);
  CU_ASSERT_EQUAL(mpx_test_wait_exit(pid), -SIGKILL);
  munmap(s, sizeof *s);
}

MPX_TEST_MAIN("lock", MPX_TEST(test_counter_n_processes),
              MPX_TEST(test_lock_errors), MPX_TEST(test_rlock),
              MPX_TEST(test_owner_killed),
              MPX_TEST(test_waiter_woken_by_owner_death),
              MPX_TEST(test_not_recoverable),
              MPX_TEST(test_shares_robust_list_with_glibc),
              MPX_TEST(test_thread_exit_holding),
              MPX_TEST(test_threads_and_processes),
              MPX_TEST(test_infinite_timeout))
