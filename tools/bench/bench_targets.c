/* Targets for the process benchmark, in a shared object so spawn can
 * load them by name. */
#include <stddef.h>

__attribute__((visibility("default"))) int bench_noop(const void *a,
                                                       size_t n) {
  (void)a, (void)n;
  return 0;
}
