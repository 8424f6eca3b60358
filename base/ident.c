/* The cached process and thread ids (ident.h). A fork child has new ones:
 * an atfork handler, registered on first use, clears both caches. */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "ident.h"

__thread __attribute__((tls_model("initial-exec"))) pid_t mpx__tls_tid;
static _Atomic pid_t cached_pid;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void on_fork_child(void) {
  /* Only the forking thread survives, under a new tid. */
  mpx__tls_tid = 0;
  atomic_store_explicit(&cached_pid, 0, memory_order_relaxed);
}

static void register_atfork(void) { pthread_atfork(NULL, NULL, on_fork_child); }

pid_t mpx__pid(void) {
  pid_t p = atomic_load_explicit(&cached_pid, memory_order_relaxed);
  if (__builtin_expect(p == 0, 0)) {
    pthread_once(&atfork_once, register_atfork);
    p = getpid();
    atomic_store_explicit(&cached_pid, p, memory_order_relaxed);
  }
  return p;
}

pid_t mpx__tid_fetch(void) {
  pthread_once(&atfork_once, register_atfork);
  mpx__tls_tid = (pid_t)syscall(SYS_gettid);
  return mpx__tls_tid;
}
