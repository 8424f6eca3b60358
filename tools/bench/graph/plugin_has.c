/* Which ABI 1.2 features a task plugin's descriptor has, one word a line:
 * "fold" (the linear merge), "ports N" (named output ports or ports_fn).
 * The graph benchmarks use it to say "not available" rather than measure
 * a stand-in under the wrong name (a wordcount without fold is today's
 * merge, whatever the engine).
 *
 *   plugin_has PLUGIN.so     exit 0, or 1 when it cannot be loaded */
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>

#include <mpx/plugin.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: plugin_has PLUGIN.so\n");
    return 2;
  }
  void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    fprintf(stderr, "plugin_has: %s\n", dlerror());
    return 1;
  }
  const mpx_plugin_t *d = dlsym(h, MPX_PLUGIN_SYMBOL);
  if (d == NULL || d->magic != MPX_PLUGIN_MAGIC || d->abi_major != MPX_PLUGIN_ABI_MAJOR) {
    fprintf(stderr, "plugin_has: %s: no ABI %d descriptor\n", argv[1], MPX_PLUGIN_ABI_MAJOR);
    return 1;
  }
  /* Fields past struct_size were not in the plugin's header: absent. */
  size_t have = d->struct_size;
  if (have >= offsetof(mpx_plugin_t, fold) + sizeof d->fold && d->fold != NULL)
    printf("fold\n");
  if (have >= offsetof(mpx_plugin_t, ports_fn) + sizeof d->ports_fn &&
      (d->n_ports > 0 || d->ports_fn != NULL))
    printf("ports %zu\n", d->n_ports);
  return 0;
}
