/* Deliberately broken codec plugins for the loader tests, one per
 * BAD_KIND: 1 no descriptor, 2 wrong ABI major, 3 no decode callback,
 * 4 bad magic, 5 and 6 a good codec named "renamed" (6 in a file named
 * mpx_codec_other.so, which loading "other" must refuse). */
#include <stdio.h>
#include <mpx/codec.h>

__attribute__((unused)) static int enc(const mpx_obj_t *o, mpx_wbuf_t *out,
               const mpx_encode_opts_t *opts, mpx_codec_error_t *err) {
  (void)o; (void)out; (void)opts; (void)err;
  return 0;
}
__attribute__((unused)) static int dec(const void *p, size_t n, const mpx_decode_opts_t *opts,
               mpx_obj_t **out, mpx_codec_error_t *err) {
  (void)p; (void)n; (void)opts;
  err->offset = 3;
  snprintf(err->msg, sizeof err->msg, "always fails");
  *out = NULL;
  return MPX_ECODEC;
}

#if BAD_KIND == 1
MPX_CODEC_EXPORT const int not_a_descriptor = 1;
#elif BAD_KIND == 2
MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_MAGIC, 99, 0, sizeof(mpx_codec_t), "abi", "x/y", "", enc, dec,
    NULL, NULL};
#elif BAD_KIND == 3
MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER, "nodecode", "x/y", "", enc, NULL, NULL, NULL};
#elif BAD_KIND == 4
MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    0x12345678, MPX_CODEC_ABI_MAJOR, 0, sizeof(mpx_codec_t), "magic", "x/y",
    "", enc, dec, NULL, NULL};
#else
MPX_CODEC_EXPORT const mpx_codec_t mpx_codec_descriptor = {
    MPX_CODEC_HEADER, "renamed", "x/y", "", enc, dec, NULL, NULL};
#endif
