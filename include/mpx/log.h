/* mpx: logging.
 *
 * mpx writes one line per event to stderr, with a single write() per line so
 * lines from many processes never interleave:
 *
 *   2026-11-25 19:43:28.123456 WARN  Process-1[4242] message
 *
 * The level comes from the MPX_LOG environment variable (error, warn, info,
 * debug, trace; default warn), read on first use, or from mpx_log_set_level().
 * A host program can take the lines instead with mpx_log_set_handler().
 *
 * Ownership: the handler's user pointer is borrowed until another handler
 * replaces it; the message given to a handler is valid during the call. */
#ifndef MPX_LOG_H
#define MPX_LOG_H

#include "common.h"

typedef enum {
  MPX_LOG_OFF = 0,
  MPX_LOG_ERROR = 1,
  MPX_LOG_WARN = 2,
  MPX_LOG_INFO = 3,
  MPX_LOG_DEBUG = 4,
  MPX_LOG_TRACE = 5
} mpx_log_level_t;

/* Receives one formatted line, without the trailing newline. `line` is
 * owned by mpx and valid only during the call. Called from whatever thread
 * or process logged; it must not call mpx_log itself. */
typedef void (*mpx_log_fn)(void *user, mpx_log_level_t level, const char *line);

#ifdef __cplusplus
extern "C" {
#endif

MPX_API void mpx_log_set_level(mpx_log_level_t level);
MPX_API mpx_log_level_t mpx_log_get_level(void);

/* Parses "error", "warn", "info", "debug", "trace", "off" (or 0..5).
 * Returns 0 and sets *level, or MPX_EINVAL.
 * Own: borrows s for the call. */
MPX_API int mpx_log_parse_level(const char *s, mpx_log_level_t *level);

/* Routes lines to fn instead of stderr; fn == NULL restores stderr. The
 * setting is inherited by fork children, not by spawn or forkserver ones.
 * Own: keeps user (not copied) until the next mpx_log_set_handler. */
MPX_API void mpx_log_set_handler(mpx_log_fn fn, void *user);

/* Logs a printf-style message at the given level, if enabled. */
MPX_API void mpx_log(mpx_log_level_t level, const char *fmt, ...)
    MPX_PRINTF(2, 3);

#ifdef __cplusplus
}
#endif
#endif /* MPX_LOG_H */
