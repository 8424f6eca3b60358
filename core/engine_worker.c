/* The pipeline worker: a pool worker that loads one stage's plugin in its
 * initializer and runs batches of items through it (engine_proto.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine_proto.h"
#include "internal.h"
#include "mpx/pipeline.h"
#include "plugin_host.h"

static struct {
  const mpx_plugin_t *d;
  mpx_plugin_ctx_t *ctx;
  void *state;
  mpx_wbuf_t out;   /* the current task's outputs */
  uint32_t n_out;
} w;

static int emit_out(void *arg, const void *data, size_t len) {
  (void)arg;
  uint32_t l = (uint32_t)len;
  if (len > UINT32_MAX) return MPX_E2BIG;
  int rc = mpx_wbuf_append(&w.out, &l, 4);
  if (rc == 0 && len) rc = mpx_wbuf_append(&w.out, data, len);
  if (rc == 0) w.n_out++;
  return rc;
}

int mpx_pipeline_worker_init(const void *args, size_t len) {
  engine_wargs_t a;
  if (args == NULL || len < sizeof a) return 100;
  memcpy(&a, args, sizeof a);
  if (a.version != ENGINE_WARGS_VERSION ||
      (uint64_t)sizeof a + a.path_len + a.stage_len + a.codec_len + a.params_len > len)
    return 101;
  const char *path = (const char *)args + sizeof a;
  const char *stage = path + a.path_len;
  const char *codec_name = stage + a.stage_len;
  const void *params = codec_name + a.codec_len;
  mpx__plugin_t *pl;
  const mpx_codec_t *codec = NULL;
  if (mpx__plugin_load(&pl, path) != 0) {
    fprintf(stderr, "%s\n", mpx_last_error());
    return 102;
  }
  w.d = mpx__plugin_desc(pl);
  if (codec_name[0] && mpx_codec_load(&codec, codec_name) != 0) {
    fprintf(stderr, "%s\n", mpx_last_error());
    return 103;
  }
  mpx_wbuf_init(&w.out);
  if (mpx__ctx_new_from_encoded(&w.ctx, w.d, stage, params, a.params_len,
                                mpx_pool_worker_index(), mpx_pool_worker_count(),
                                codec, emit_out, NULL) != 0 ||
      mpx__ctx_call_init(w.ctx, &w.state) != 0) {
    fprintf(stderr, "%s\n", mpx_last_error());
    return 104;
  }
  return 0;
}

int mpx_pipeline_task(mpx_task_t *t, const void *in, size_t len) {
  eng_rd_t r = {in, (const uint8_t *)in + len};
  uint32_t n, n_fail = 0;
  mpx_wbuf_t fails;
  if (w.ctx == NULL) return mpx_task_fail(t, "pipeline worker not initialised");
  if (eng_u32(&r, &n) != 0) return mpx_task_fail(t, "malformed batch");
  mpx_wbuf_init(&fails);
  w.out.len = 0;
  w.n_out = 0;
  uint32_t hdr[2] = {0, 0};
  mpx_wbuf_append(&w.out, hdr, sizeof hdr);
  bool reduce = w.d->kind == MPX_PLUGIN_REDUCE;
  for (uint32_t i = 0; i < n; i++) {
    const void *d;
    uint32_t l;
    if (eng_bytes(&r, &d, &l) != 0) {
      mpx_wbuf_free(&fails);
      return mpx_task_fail(t, "malformed batch item %u", i);
    }
    size_t mark = w.out.len;
    uint32_t nmark = w.n_out;
    if (mpx__ctx_call_process(w.ctx, w.state, d, l) != 0) {
      /* The item's outputs go with it. */
      w.out.len = mark;
      w.n_out = nmark;
      const char *m = mpx_last_error();
      uint32_t ml = (uint32_t)strlen(m);
      mpx_wbuf_append(&fails, &i, 4);
      mpx_wbuf_append(&fails, &ml, 4);
      mpx_wbuf_append(&fails, m, ml);
      n_fail++;
    }
  }
  /* A reduce stage answers with the batch's partial. */
  if (reduce && mpx__ctx_call_flush(w.ctx, w.state) != 0) {
    mpx_wbuf_free(&fails);
    return mpx_task_fail(t, "%s", mpx_last_error());
  }
  hdr[0] = w.n_out;
  hdr[1] = n_fail;
  memcpy(w.out.data, hdr, sizeof hdr);
  if (fails.len) mpx_wbuf_append(&w.out, fails.data, fails.len);
  mpx_wbuf_free(&fails);
  return mpx_task_result(t, w.out.data, w.out.len);
}
