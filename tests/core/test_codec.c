/* The codec loader: finding codecs by name and path, refusing broken ones
 * with messages that name the file and the fault, and the wbuf. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "mpx.h"
#include "../mpx_test.h"

#define BAD(n) BAD_PLUGIN_DIR "/mpx_codec_" n ".so"

static int contains(const char *hay, const char *needle) {
  return strstr(hay, needle) != NULL;
}

static void test_load_shipped_by_name(void) {
  const char *names[] = {"raw", "msgpack", "json", "pickle"};
  for (int i = 0; i < 4; i++) {
    const mpx_codec_t *c = NULL, *again = NULL;
    CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, names[i]), 0);
    CU_ASSERT_STRING_EQUAL(c->name, names[i]);
    CU_ASSERT_EQUAL(mpx_codec_check(c, "test"), 0);
    CU_ASSERT_EQUAL(mpx_codec_load(&again, names[i]), 0);
    CU_ASSERT_PTR_EQUAL(again, c);
  }
}

/* Run by ctest from an installed tree (MPX_TEST_EXPECT_PLUGIN_DIR set):
 * every shipped codec must come from that tree's plugin directory. */
static void test_load_location(void) {
  const char *want = getenv("MPX_TEST_EXPECT_PLUGIN_DIR");
  const char *names[] = {"raw", "msgpack", "json", "pickle"};
  for (int i = 0; i < 4; i++) {
    const mpx_codec_t *c = NULL;
    Dl_info info;
    CU_ASSERT_EQUAL_FATAL(mpx_codec_load(&c, names[i]), 0);
    CU_ASSERT_FATAL(dladdr(c, &info) != 0);
    if (want != NULL) {
      CU_ASSERT_EQUAL(strncmp(info.dli_fname, want, strlen(want)), 0);
      if (strncmp(info.dli_fname, want, strlen(want)) != 0)
        printf("%s loaded from %s\n", names[i], info.dli_fname);
    }
  }
}

static void test_missing(void) {
  const mpx_codec_t *c = (const mpx_codec_t *)1;
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "nosuchcodec"), MPX_ENOENT);
  CU_ASSERT_PTR_NULL(c);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "mpx_codec_nosuchcodec.so"));
  CU_ASSERT_TRUE(contains(mpx_last_error(), "MPX_PLUGIN_PATH"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("missing")), MPX_ENOENT);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "mpx_codec_missing.so"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "a.b"), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "/etc/passwd"), MPX_EPLUGIN); /* a path */
  CU_ASSERT_EQUAL(mpx_codec_load(&c, ""), MPX_EINVAL);
  CU_ASSERT_EQUAL(mpx_codec_load(NULL, "raw"), MPX_EINVAL);
}

static void test_broken_plugins(void) {
  const mpx_codec_t *c = NULL;
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("text")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "mpx_codec_text.so"));
  CU_ASSERT_TRUE(contains(mpx_last_error(), "ELF") ||
                 contains(mpx_last_error(), "too short"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("nodesc")), MPX_ENOSYM);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "mpx_codec_descriptor"));
  CU_ASSERT_TRUE(contains(mpx_last_error(), "mpx_codec_nodesc.so"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("abi")), MPX_EABI);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "ABI 99.0"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("magic")), MPX_EABI);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "magic"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, BAD("nodecode")), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "no decode callback"));
  CU_ASSERT_PTR_NULL(c);
}

/* MPX_PLUGIN_PATH comes first; a file whose codec has another name is
 * refused when loaded by name, accepted by path. */
static void test_plugin_path(void) {
  const mpx_codec_t *c = NULL;
  setenv("MPX_PLUGIN_PATH", "/nonexistent:" BAD_PLUGIN_DIR, 1);
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "renamed"), 0);
  CU_ASSERT_STRING_EQUAL(c->name, "renamed");
  /* By path, a file may hold any codec; by name it must be that one. */
  const mpx_codec_t *d = NULL;
  CU_ASSERT_EQUAL(mpx_codec_load(&d, BAD("renamed")), 0);
  CU_ASSERT_PTR_EQUAL(d, c);
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "abi"), MPX_EABI);
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "other"), MPX_EPLUGIN);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "is codec 'renamed', not 'other'"));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "nosuch"), MPX_ENOENT);
  CU_ASSERT_TRUE(contains(mpx_last_error(), "/nonexistent:" BAD_PLUGIN_DIR));
  CU_ASSERT_EQUAL(mpx_codec_load(&c, "renamed"), 0); /* cached */
  unsetenv("MPX_PLUGIN_PATH");
  /* The decode wrapper reports the codec's offset and message. */
  mpx_obj_t *o = (mpx_obj_t *)1;
  CU_ASSERT_EQUAL(mpx_codec_decode(c, "abc", 3, NULL, &o), MPX_ECODEC);
  CU_ASSERT_PTR_NULL(o);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(),
                         "renamed decode: byte 3: always fails (codec error)");
}

static void test_wbuf(void) {
  mpx_wbuf_t b;
  char mem[8];
  mpx_wbuf_init(&b);
  for (int i = 0; i < 1000; i++)
    CU_ASSERT_EQUAL(mpx_wbuf_append(&b, "abcd", 4), 0);
  CU_ASSERT_EQUAL(b.len, 4000);
  CU_ASSERT_EQUAL(memcmp(b.data + 3996, "abcd", 4), 0);
  mpx_wbuf_reset(&b);
  CU_ASSERT_EQUAL(b.len, 0);
  mpx_wbuf_free(&b);
  mpx_wbuf_init_fixed(&b, mem, sizeof mem);
  CU_ASSERT_EQUAL(mpx_wbuf_append(&b, "12345678", 8), 0);
  CU_ASSERT_EQUAL(mpx_wbuf_append(&b, "9", 1), MPX_ENOBUFS);
  CU_ASSERT_EQUAL(b.len, 8);
  CU_ASSERT_PTR_EQUAL(b.data, (uint8_t *)mem);
  mpx_wbuf_free(&b);
}

MPX_TEST_MAIN("codec", MPX_TEST(test_load_shipped_by_name),
              MPX_TEST(test_load_location),
              MPX_TEST(test_missing), MPX_TEST(test_broken_plugins),
              MPX_TEST(test_plugin_path), MPX_TEST(test_wbuf))
