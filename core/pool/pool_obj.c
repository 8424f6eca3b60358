/* The calls on objects: a codec around apply and map (each argument
 * encoded, each result decoded). */
#include <stdlib.h>

#include "pool_internal.h"

int mpx_pool_apply_obj(mpx_pool_t *p, mpx_func_t f, const mpx_codec_t *codec,
                       const mpx_obj_t *arg, mpx_obj_t **result,
                       double timeout) {
  if (codec == NULL || arg == NULL || result == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *result = NULL;
  mpx_wbuf_t b;
  mpx_wbuf_init(&b);
  int rc = mpx_codec_encode(codec, arg, &b, NULL);
  void *res = NULL;
  size_t rlen = 0;
  if (rc == 0) rc = mpx_pool_apply(p, f, b.data, b.len, &res, &rlen, timeout);
  mpx_wbuf_free(&b);
  if (rc == 0) rc = mpx_codec_decode(codec, res, rlen, NULL, result);
  free(res);
  return rc;
}

int mpx_pool_starmap(mpx_pool_t *p, mpx_func_t f, const mpx_codec_t *codec,
                     const mpx_obj_t *args, mpx_obj_t **results,
                     double timeout) {
  if (codec == NULL || args == NULL || results == NULL)
    return mpx__err(MPX_EINVAL, "pool: NULL argument");
  *results = NULL;
  size_t n = mpx_obj_len(args);
  mpx_wbuf_t *enc = calloc(n ? n : 1, sizeof *enc);
  mpx_conn_buf_t *in = calloc(n ? n : 1, sizeof *in);
  mpx_pool_result_t *out = calloc(n ? n : 1, sizeof *out);
  int rc = enc && in && out ? 0 : mpx__err(MPX_ENOMEM, "pool: out of memory");
  for (size_t i = 0; rc == 0 && i < n; i++) {
    mpx_wbuf_init(&enc[i]);
    rc = mpx_codec_encode(codec, mpx_obj_item(args, i), &enc[i], NULL);
    in[i] = (mpx_conn_buf_t){enc[i].data, enc[i].len};
  }
  if (rc == 0) rc = mpx_pool_map(p, f, in, n, out, timeout);
  if (rc == 0) {
    mpx_obj_t *arr = mpx_obj_array(n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
      mpx_obj_t *o;
      rc = mpx_codec_decode(codec, out[i].data, out[i].len, NULL, &o);
      if (rc == 0) rc = mpx_obj_append(arr, o);
    }
    if (rc == 0) *results = arr;
    else mpx_obj_release(arr);
  }
  if (out) mpx_pool_results_free(out, n);
  for (size_t i = 0; enc && i < n; i++) mpx_wbuf_free(&enc[i]);
  free(enc);
  free(in);
  free(out);
  return rc;
}
