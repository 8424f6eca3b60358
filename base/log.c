/* Logging: level from MPX_LOG, one write() per line, an optional hook. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

/* -1 until MPX_LOG has been read. A plain int: a torn read is impossible and
 * a stale one only delays a level change. */
int mpx__log_level = -1;
static mpx_log_fn log_fn;
static void *log_user;
/* The process name each line carries, pushed here by core/process
 * (mpx__log_set_name) so that logging needs nothing above base/. */
static const char *log_name = "MainProcess";

void mpx__log_set_name(const char *name) {
  log_name = name != NULL ? name : "";
}

static const char *const level_names[] = {"off",  "error", "warn",
                                          "info", "debug", "trace"};

int mpx_log_parse_level(const char *s, mpx_log_level_t *level) {
  size_t i;
  if (s == NULL) return MPX_EINVAL;
  for (i = 0; i < MPX__ARRAY_SIZE(level_names); i++) {
    if (strcasecmp(s, level_names[i]) == 0 ||
        (s[0] == (char)('0' + i) && s[1] == '\0')) {
      *level = (mpx_log_level_t)i;
      return 0;
    }
  }
  if (strcasecmp(s, "warning") == 0) {
    *level = MPX_LOG_WARN;
    return 0;
  }
  return mpx__err(MPX_EINVAL, "unknown log level '%s'", s);
}

void mpx__log_init(void) {
  mpx_log_level_t lvl = MPX_LOG_WARN;
  const char *env = getenv("MPX_LOG");
  if (env != NULL && *env != '\0' && mpx_log_parse_level(env, &lvl) != 0)
    lvl = MPX_LOG_WARN;
  mpx__log_level = (int)lvl;
}

void mpx_log_set_level(mpx_log_level_t level) { mpx__log_level = (int)level; }

mpx_log_level_t mpx_log_get_level(void) {
  if (mpx__log_level < 0) mpx__log_init();
  return (mpx_log_level_t)mpx__log_level;
}

void mpx_log_set_handler(mpx_log_fn fn, void *user) {
  log_user = user;
  log_fn = fn;
}

void mpx_log(mpx_log_level_t level, const char *fmt, ...) {
  static const char *const tags[] = {"OFF  ", "ERROR", "WARN ",
                                     "INFO ", "DEBUG", "TRACE"};
  char line[2048];
  struct timespec ts;
  struct tm tm;
  va_list ap;
  size_t n;
  int k;
  int saved_errno = errno;

  if (mpx__log_level < 0) mpx__log_init();
  if (level <= MPX_LOG_OFF || (int)level > mpx__log_level) return;
  if (level > MPX_LOG_TRACE) level = MPX_LOG_TRACE;

  clock_gettime(CLOCK_REALTIME, &ts);
  localtime_r(&ts.tv_sec, &tm);
  n = strftime(line, sizeof line, "%Y-%m-%d %H:%M:%S", &tm);
  k = snprintf(line + n, sizeof line - n, ".%06ld %s %s[%ld] ",
               ts.tv_nsec / 1000, tags[level], log_name,
               (long)getpid());
  if (k > 0) n += (size_t)k;
  if (n >= sizeof line) n = sizeof line - 1;
  va_start(ap, fmt);
  k = vsnprintf(line + n, sizeof line - n, fmt, ap);
  va_end(ap);
  if (k > 0) n += (size_t)k;
  if (n >= sizeof line - 1) n = sizeof line - 2; /* truncated: keep room */

  if (log_fn != NULL) {
    line[n] = '\0';
    log_fn(log_user, level, line);
  } else {
    line[n++] = '\n';
    /* One write: lines from concurrent processes never interleave. */
    if (write(STDERR_FILENO, line, n) < 0) { /* nowhere left to report */ }
  }
  errno = saved_errno;
}
