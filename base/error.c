/* Error codes, their names and messages, and the per-thread detail message. */
#include <stdio.h>
#include <string.h>

#include "internal.h"

static _Thread_local char last_error[512];

const char *mpx_strerror(int rc) {
  switch (rc) {
  case 0:
    return "success";
#define XX(name, msg) case MPX_##name: return msg;
    MPX_ERRNO_MAP(XX)
#undef XX
#define XX(name, val, msg) case MPX_##name: return msg;
    MPX_OWN_ERR_MAP(XX)
#undef XX
  }
  return "unknown error";
}

const char *mpx_err_name(int rc) {
  switch (rc) {
  case 0:
    return "OK";
#define XX(name, msg) case MPX_##name: return #name;
    MPX_ERRNO_MAP(XX)
#undef XX
#define XX(name, val, msg) case MPX_##name: return #name;
    MPX_OWN_ERR_MAP(XX)
#undef XX
  }
  return "EUNKNOWN";
}

const char *mpx_last_error(void) { return last_error; }

static int vset(int rc, const char *fmt, va_list ap) {
  int n = vsnprintf(last_error, sizeof last_error, fmt, ap);
  if (n < 0) n = 0;
  if ((size_t)n >= sizeof last_error) n = sizeof last_error - 1;
  /* Append the code's own message so the detail always names the cause,
   * unless it already ends with it (a message passed on from below). */
  char tail[96];
  int t = snprintf(tail, sizeof tail, " (%s)", mpx_strerror(rc));
  if (t > 0 && n >= t && memcmp(last_error + n - t, tail, (size_t)t) == 0) return rc;
  snprintf(last_error + n, sizeof last_error - (size_t)n, "%s", tail);
  return rc;
}

int mpx__err(int rc, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vset(rc, fmt, ap);
  va_end(ap);
  return rc;
}

int mpx__err_errno(const char *fmt, ...) {
  int rc = errno > 0 ? -errno : MPX_EUNKNOWN;
  va_list ap;
  va_start(ap, fmt);
  vset(rc, fmt, ap);
  va_end(ap);
  return rc;
}

unsigned mpx_version(void) { return MPX_VERSION_HEX; }

#define MPX__STR2(x) #x
#define MPX__STR(x) MPX__STR2(x)
const char *mpx_version_string(void) {
  return MPX__STR(MPX_VERSION_MAJOR) "." MPX__STR(MPX_VERSION_MINOR) "." MPX__STR(
      MPX_VERSION_PATCH);
}
