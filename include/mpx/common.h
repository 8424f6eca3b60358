/* mpx: common definitions shared by every public header.
 *
 * MPX_API marks the symbols libmpx exports; everything else in the library
 * is built with -fvisibility=hidden and stays private. */
#ifndef MPX_COMMON_H
#define MPX_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(MPX_STATIC)
#  define MPX_API
#elif defined(__GNUC__)
#  define MPX_API __attribute__((visibility("default")))
#else
#  define MPX_API
#endif

#if defined(__GNUC__)
#  define MPX_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#  define MPX_PRINTF(fmt, args)
#endif

/* A name kept for one more version after a rename; using it warns. */
#if defined(__GNUC__)
#  define MPX_DEPRECATED(msg) __attribute__((deprecated(msg)))
#else
#  define MPX_DEPRECATED(msg)
#endif

#define MPX_VERSION_MAJOR 0
#define MPX_VERSION_MINOR 1
#define MPX_VERSION_PATCH 0
#define MPX_VERSION_HEX \
  ((MPX_VERSION_MAJOR << 16) | (MPX_VERSION_MINOR << 8) | MPX_VERSION_PATCH)

#ifdef __cplusplus
extern "C" {
#endif

/* The version of the library actually loaded, as MPX_VERSION_HEX and as a
 * static string such as "0.1.0". */
MPX_API unsigned mpx_version(void);
MPX_API const char *mpx_version_string(void);

#ifdef __cplusplus
}
#endif
#endif /* MPX_COMMON_H */
