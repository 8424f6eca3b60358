/* The init probe: before a pipeline starts (and in `mpx check`), each
 * stage's plugin is started once in a throw-away child process, so that
 * a plugin that cannot start (a bad regex, a missing file, a parameter
 * out of range) is a configuration error naming the stage, and not a
 * worker that fails at every restart. */
#ifndef MPX_CORE_PLUGIN_PROBE_H
#define MPX_CORE_PLUGIN_PROBE_H

#include <stdbool.h>

#include "plugin_host.h"

/* The probe's time limit: $MPX_INIT_TIMEOUT seconds, 10 when unset; 0
 * turns the probe off. */
#define MPX__PROBE_TIMEOUT_DEFAULT 10.0

/* Forks a child that makes an instance of c's stage (worker 0 of count,
 * as mpx__ctx_copy; its emits are dropped), calls init and, when it
 * succeeds, fini, and exits; waits for it up to the time limit (then
 * kills it) and reaps it. check_only (`mpx check`): a sink is not probed,
 * as its init may create or truncate its output; 0 for it.
 *
 * 0 when the instance started and stopped; MPX_ECONFIG with
 * mpx_last_error() "stage 'S' (plugin 'P'): init failed: MESSAGE" (the
 * plugin's mpx_plugin_fail text, or its code's), "... init died of signal
 * N (NAME)", "... init ended its process with exit status N", "... init
 * did not return within T s (MPX_INIT_TIMEOUT sets the limit)", the same
 * for fini, or "MPX_INIT_TIMEOUT must be ..." for a bad value; an error
 * from pipe or fork as its code. */
int mpx__plugin_probe(const mpx_plugin_ctx_t *c, unsigned count,
                      bool check_only);

#endif /* MPX_CORE_PLUGIN_PROBE_H */
