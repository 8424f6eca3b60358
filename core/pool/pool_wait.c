/* A caller waiting for the pool's loop: until its condition holds, a
 * deadline passes or SIGINT comes (checked every WAIT_SLICE). A wait on
 * the loop's own thread would never end: it returns MPX_EDEADLK. */
#include <signal.h>
#include <time.h>

#include "pool_internal.h"

/* ---- SIGINT while a caller waits ---------------------------------------------- */

static volatile sig_atomic_t sigint_count;
static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static int sig_users;
static bool sig_installed;

static void on_sigint(int sig) {
  (void)sig;
  sigint_count++;
}

static void sigint_hold(void) {
  pthread_mutex_lock(&sig_mu);
  if (sig_users++ == 0) {
    struct sigaction old, sa = {0};
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, NULL, &old);
    /* Only over the default: a program's own handler stays in charge. */
    sig_installed = old.sa_handler == SIG_DFL;
    if (sig_installed) sigaction(SIGINT, &sa, NULL);
  }
  pthread_mutex_unlock(&sig_mu);
}

static void sigint_release(void) {
  pthread_mutex_lock(&sig_mu);
  if (--sig_users == 0 && sig_installed) {
    struct sigaction sa = {0};
    sa.sa_handler = SIG_DFL;
    sigaction(SIGINT, &sa, NULL);
    sig_installed = false;
  }
  pthread_mutex_unlock(&sig_mu);
}

int mpx__pool_deadlock(mpx_pool_t *p) {
  return mpx__err(MPX_EDEADLK, "%s: a call that waits for the pool's loop, "
                  "made on the loop's thread, would never return", p->name);
}

/* Waits for `done(r)` under mu. 0, MPX_ETIMEDOUT, MPX_EINTR, MPX_EDEADLK
 * (it would wait on the loop's thread). */
int mpx__pool_wait(mpx_pool_t *p, bool (*done)(void *), void *r,
                   double timeout) {
  int rc = 0;
  if (timeout != 0 && mpx__pool_on_loop_thread(p)) {
    pthread_mutex_lock(&p->mu);
    bool ready = done(r);
    pthread_mutex_unlock(&p->mu);
    return ready ? 0 : mpx__pool_deadlock(p);
  }
  if (timeout == 0) {
    /* A poll never waits: no SIGINT handler (two system calls) for it. */
    pthread_mutex_lock(&p->mu);
    bool ready = done(r);
    pthread_mutex_unlock(&p->mu);
    return ready ? 0 : mpx__err(MPX_ETIMEDOUT, "pool: timed out waiting");
  }
  double deadline = mpx__deadline(timeout);
  sigint_hold();
  sig_atomic_t sig0 = sigint_count;
  pthread_mutex_lock(&p->mu);
  while (!done(r)) {
    if (sigint_count != sig0) {
      rc = mpx__err(MPX_EINTR, "pool: interrupted (SIGINT)");
      break;
    }
    double now = mpx__now();
    if (deadline >= 0 && now >= deadline) {
      rc = mpx__err(MPX_ETIMEDOUT, "pool: timed out waiting");
      break;
    }
    double until = now + WAIT_SLICE;
    if (deadline >= 0 && deadline < until) until = deadline;
    struct timespec ts;
    ts.tv_sec = (time_t)until;
    ts.tv_nsec = (long)((until - (double)ts.tv_sec) * 1e9);
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
  }
  pthread_mutex_unlock(&p->mu);
  sigint_release();
  return rc;
}

bool mpx__pool_req_complete(void *r) { return ((req_t *)r)->complete; }

/* Runs a blocking call: wait, cancel on interruption, drop the caller's
 * reference. */
int mpx__pool_run_call(mpx_pool_t *p, req_t *r, double timeout) {
  int rc = mpx__pool_wait(p, mpx__pool_req_complete, r, timeout);
  if (rc != 0) mpx__pool_cancel(p, r);
  pthread_mutex_lock(&p->mu);
  if (rc == 0) rc = mpx__pool_req_result(r);
  pthread_mutex_unlock(&p->mu);
  return rc;
}
