/* The plugin search path and the dlopen step, shared by the codec loader
 * (base/codec.c) and the task plugin loader
 * (core/pipeline/plugin_host.c). */
#ifndef MPX_BASE_PLUGIN_PATH_H
#define MPX_BASE_PLUGIN_PATH_H

#include <stddef.h>

/* The directories searched for plugins, in order, each followed by a
 * '\n' (dirs is "" when there are none): every directory of
 * $MPX_PLUGIN_PATH (':'-separated, empty entries skipped), then next to
 * the libmpx in use <dir>/plugins (build tree) and <dir>/mpx/plugins
 * (install), then the install prefix's plugin directory. A directory
 * listed twice is kept at its first place only. Directories that do not
 * fit in cap are dropped. */
void mpx__plugin_dirs(char *dirs, size_t cap);

/* 1 when s can be looked up by name: letters, digits, '_' and '-'. */
int mpx__plugin_name_ok(const char *s);

/* Finds <prefix><name>.so in the directories of mpx__plugin_dirs(): 0 with
 * path filled, or MPX_ENOENT and mpx_last_error() "no <what> '<name>': no
 * <prefix><name>.so in <dir>:<dir>... (set MPX_PLUGIN_PATH to add
 * directories)". `what` names the kind of plugin ("codec", "plugin"). */
int mpx__plugin_find(const char *what, const char *prefix, const char *name,
                     char *path, size_t cap);

/* Checks the file (mpx__elf_check: ELF for this machine, no segment
 * past its end, which dlopen would turn into a SIGBUS), then
 * dlopen(path, RTLD_NOW | RTLD_LOCAL) and dlsym(symbol). 0 with *handle
 * and *sym set; MPX_EPLUGIN ("cannot load <what> '<path>': <why>", the
 * check's reason or dlerror's text), -errno when it cannot be opened, or
 * MPX_ENOSYM ("'<path>' exports no <symbol>: not an mpx <what>"), the
 * handle closed. */
int mpx__plugin_open(const char *what, const char *path, const char *symbol,
                     void **handle, void **sym);

/* Checks a descriptor found at path: 0 with *name set to the name it
 * carries, or an error naming path. */
typedef int (*mpx__desc_check_fn)(const void *desc, const char *path,
                                  const char **name);

/* The one load_file of the codec and the task plugin loaders:
 * mpx__plugin_open(what, path, symbol), the descriptor's check, then, when
 * want is not NULL, that its name is want (MPX_EPLUGIN "'<path>' is <what>
 * '<name>', not '<want>'"). 0 with *desc set; the handle is then never
 * closed, since the descriptor must stay valid. On error it is closed. */
int mpx__plugin_load_file(const char *what, const char *path,
                          const char *symbol, mpx__desc_check_fn check,
                          const char *want, const void **desc);

#endif /* MPX_BASE_PLUGIN_PATH_H */
