/* For test_pool_field: a program that makes a default pool (fork workers,
 * the pool's own loop thread), SIGKILLs one worker, waits for its
 * replacement and uses it. Its stderr is the test's to read: a pool must
 * not warn about its own thread when it restarts a worker. Exit code 0
 * and "restarted" on stdout when all of that worked. */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mpx.h"

static int pid_task(mpx_task_t *t, const void *in, size_t len) {
  (void)in, (void)len;
  int32_t pid = getpid();
  return mpx_task_result(t, &pid, sizeof pid);
}

static int pid_of_a_worker(mpx_pool_t *p, pid_t *pid) {
  void *res;
  size_t len;
  int rc = mpx_pool_apply(p, MPX_FUNC(pid_task), NULL, 0, &res, &len, 30);
  if (rc != 0) return rc;
  *pid = *(int32_t *)res;
  free(res);
  return 0;
}

int main(void) {
  mpx_pool_t *p;
  mpx_pool_stats_t st;
  pid_t pid, again;
  if (mpx_pool_new(&p, NULL) != 0) return 2;
  if (pid_of_a_worker(p, &pid) != 0) return 3;
  mpx_pool_stats(p, &st);
  uint64_t started = st.started;
  kill(pid, SIGKILL);
  struct timespec ms = {0, 1000000};
  for (int i = 0; i < 30000; i++) {
    mpx_pool_stats(p, &st);
    if (st.started > started && st.workers == started) break;
    nanosleep(&ms, NULL);
  }
  if (st.started <= started) return 4;
  if (pid_of_a_worker(p, &again) != 0 || again == pid) return 5;
  mpx_pool_close(p);
  if (mpx_pool_join(p, 30) != 0) return 6;
  mpx_pool_free(p);
  printf("restarted\n");
  return 0;
}
