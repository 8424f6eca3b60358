/* The pipeline engine: SIGINT and SIGTERM while a run goes on. The first
 * SIGINT stops the source and lets what is in workers finish; the second
 * stops at once, as SIGTERM does. */
#include <signal.h>
#include <stdbool.h>

#include "engine_int.h"

static volatile sig_atomic_t sig_ints, sig_term;

static void on_signal(int sig) {
  if (sig == SIGTERM) sig_term = 1;
  else sig_ints++;
}

bool mpx__eng_stop_now(void) { return sig_term || sig_ints >= 2; }
bool mpx__eng_signalled(void) { return sig_term || sig_ints > 0; }
bool mpx__eng_sigterm(void) { return sig_term; }

void mpx__eng_signals_catch(mpx__eng_sigsave_t *old) {
  struct sigaction sa = {0};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sig_ints = sig_term = 0;
  sigaction(SIGINT, &sa, &old->intr);
  sigaction(SIGTERM, &sa, &old->term);
}

void mpx__eng_signals_restore(const mpx__eng_sigsave_t *old) {
  sigaction(SIGINT, &old->intr, NULL);
  sigaction(SIGTERM, &old->term, NULL);
}
