/* Deliberately broken task plugins for the loader tests, one per
 * BAD_KIND: 1 no descriptor, 2 wrong ABI major, 3 a map without process,
 * 4 bad magic, 5 a descriptor shorter than the ABI's, 6 a bad name,
 * 7 and 8 a good map named "renamed" (8 in a file named
 * mpx_task_other.so, which loading "other" must refuse), 9 a reduce
 * without merge, 10 an int parameter whose default is not an integer,
 * 11 a parameter declared twice. */
#include <mpx/plugin.h>

__attribute__((unused)) static int process(mpx_plugin_ctx_t *ctx,
                                           void *state, const void *in,
                                           size_t len) {
  (void)state;
  return mpx_emit(ctx, in, len);
}

__attribute__((unused)) static int flush(mpx_plugin_ctx_t *ctx,
                                         void *state) {
  (void)ctx;
  (void)state;
  return 0;
}

__attribute__((unused)) static const mpx_param_def_t bad_default[] = {
    {"n", MPX_PARAM_INT, "ten", false, "a count"},
};

__attribute__((unused)) static const mpx_param_def_t twice[] = {
    {"n", MPX_PARAM_INT, "1", false, "a count"},
    {"n", MPX_PARAM_STRING, NULL, false, "again"},
};

#if BAD_KIND == 1
MPX_PLUGIN_EXPORT const int not_a_descriptor = 1;
#elif BAD_KIND == 2
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    .magic = MPX_PLUGIN_MAGIC, .abi_major = 99, .abi_minor = 0,
    .struct_size = sizeof(mpx_plugin_t), .name = "abi",
    .kind = MPX_PLUGIN_MAP, .process = process};
#elif BAD_KIND == 3
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "nomap", .kind = MPX_PLUGIN_MAP};
#elif BAD_KIND == 4
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    .magic = 0x12345678, .abi_major = MPX_PLUGIN_ABI_MAJOR,
    .struct_size = sizeof(mpx_plugin_t), .name = "magic",
    .kind = MPX_PLUGIN_MAP, .process = process};
#elif BAD_KIND == 5
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    .magic = MPX_PLUGIN_MAGIC, .abi_major = MPX_PLUGIN_ABI_MAJOR,
    .struct_size = 16, .name = "small", .kind = MPX_PLUGIN_MAP,
    .process = process};
#elif BAD_KIND == 6
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "Bad Name", .kind = MPX_PLUGIN_MAP,
    .process = process};
#elif BAD_KIND == 7 || BAD_KIND == 8
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "renamed", .version = "0.1",
    .description = "echoes its input", .kind = MPX_PLUGIN_MAP,
    .process = process};
#elif BAD_KIND == 9
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "noreduce", .kind = MPX_PLUGIN_REDUCE,
    .process = process, .flush = flush};
#elif BAD_KIND == 10
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "baddefault", .kind = MPX_PLUGIN_MAP,
    .params = bad_default, .n_params = 1, .process = process};
#else
MPX_PLUGIN_EXPORT const mpx_plugin_t mpx_plugin_descriptor = {
    MPX_PLUGIN_HEADER, .name = "dupparam", .kind = MPX_PLUGIN_MAP,
    .params = twice, .n_params = 2, .process = process};
#endif
