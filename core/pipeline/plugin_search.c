/* The plugin search path as the pipeline API shows it (mpx/pipeline.h):
 * the directories base/plugin_path.c searches, for `mpx plugins` and
 * error messages. */
#include <stddef.h>

#include "mpx/pipeline.h"
#include "plugin_path.h"

void mpx_plugin_search_path(char *buf, size_t cap) {
  if (buf != NULL) mpx__plugin_dirs(buf, cap);
}
