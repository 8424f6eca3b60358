/* Loading and starting plugins, through the real `mpx` binary:
 *
 * - a plugin or codec file cut short (inside its ELF header, its program
 *   headers, a loadable segment, its section headers) is refused before
 *   dlopen, which would map pages past the end of the file and die of
 *   SIGBUS: `mpx plugins`, `mpx check` and `mpx run` exit 2 naming it,
 *   and the listing marks it unusable;
 * - a stage whose plugin cannot start (grep with a bad regex, lines with
 *   a missing file, the plugin template's rot with shift 99, a test
 *   plugin whose init fails, hangs, crashes or exits) is a configuration
 *   error in both `mpx check` and `mpx run`: exit 2 with the stage, the
 *   plugin and the plugin's own message, said once (no worker restarted),
 *   and no process left behind;
 * - `mpx check` does not run a sink's init, which may create or truncate
 *   its output. */
#define _GNU_SOURCE
#include <elf.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* ---- helpers ----------------------------------------------------------------- */

/* clean_env() plus up to two NAME=VALUE entries (NULL: none). */
static char **env_plus(const char *a, const char *b) {
  static char *env[520];
  char **base = clean_env();
  size_t n = 0;
  while (base[n] && n < 512) {
    env[n] = base[n];
    n++;
  }
  if (a) env[n++] = (char *)a;
  if (b) env[n++] = (char *)b;
  env[n] = NULL;
  return env;
}

static int run_in(const char *cwd, char **env, const char *const *args) {
  return finish(start_bin(MPX_BIN, cwd, env, args));
}

static int count_of(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; p && (p = strstr(p, needle)) != NULL; p += strlen(needle)) n++;
  return n;
}

/* stderr holds each of want[] (NULL-terminated); the first exactly once. */
static void expect_stderr(const char *const *want) {
  char *err = read_file("stderr", NULL);
  bool ok = err && count_of(err, want[0]) == 1;
  for (int i = 1; ok && want[i]; i++) ok = strstr(err, want[i]) != NULL;
  CU_ASSERT_TRUE(ok);
  if (!ok) {
    fprintf(stderr, "want once '%s'", want[0]);
    for (int i = 1; want[i]; i++) fprintf(stderr, ", '%s'", want[i]);
    fprintf(stderr, " in:\n%s\n", err ? err : "(none)");
  }
  /* Starting workers that could not start was the old behaviour. */
  CU_ASSERT_PTR_NULL(err ? strstr(err, "restart") : NULL);
  CU_ASSERT_PTR_NULL(err ? strstr(err, "initializer returned") : NULL);
  free(err);
}

/* This process is a child subreaper (setup): a worker or probe that
 * outlived `mpx` is now our child. Reaps zombies, waits up to 2 s for the
 * live ones, counts and kills what is left. */
static int leftovers(void) {
  pid_t kids[64];
  int n = 0;
  for (int t = 0; t < 40; t++) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    if ((n = cli_children(getpid(), kids, 64, false)) == 0) return 0;
    mpx_test_sleep(0.05);
  }
  for (int i = 0; i < n; i++) {
    fprintf(stderr, "left behind: pid %d\n", (int)kids[i]);
    kill(kids[i], SIGKILL);
    waitpid(kids[i], NULL, 0);
  }
  return n;
}

/* `mpx check` and `mpx run` of a pipeline (in cwd with env, extra args
 * after the file) both exit 2 with want[] in stderr, and leave no process. */
static void expect_setup_error(const char *cwd, char **env, const char *file0,
                               const char *extra, const char *const *want) {
  char file[512]; /* in_dir's buffers rotate */
  snprintf(file, sizeof file, "%s", file0);
  for (int run = 0; run < 2; run++) {
    const char *args[] = {run ? "run" : "check", file, "--no-summary", extra, NULL};
    if (!run) args[2] = extra, args[3] = NULL;
    int rc = run_in(cwd, env, args);
    CU_ASSERT_EQUAL(rc, 2);
    if (rc != 2) fprintf(stderr, "mpx %s %s: exit %d\n", args[0], file, rc);
    expect_stderr(want);
    char *out = read_file("stdout", NULL);
    CU_ASSERT_PTR_NULL(out ? strstr(out, ": ok") : NULL);
    free(out);
    CU_ASSERT_EQUAL(leftovers(), 0);
  }
}

/* The suite's init: the scratch directory, and this process a subreaper
 * (leftovers()). */
static int suite_init(void) {
  if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    perror("PR_SET_CHILD_SUBREAPER");
    return -1;
  }
  return cli_mkdir("/tmp/mpx-setup-XXXXXX");
}

/* ---- truncated files ---------------------------------------------------------- */

/* Where to cut a shared object: inside its ELF header, its program
 * headers, the middle and the last byte of each loadable segment, and
 * one byte short (its section headers). */
static int cut_points(const char *path, long *at, int max, long *size) {
  size_t len;
  char *b = read_path(path, &len);
  int n = 0;
  CU_ASSERT_FATAL(b != NULL && len > sizeof(Elf64_Ehdr));
  const Elf64_Ehdr *h = (const Elf64_Ehdr *)b;
  at[n++] = 40;
  at[n++] = (long)(h->e_phoff + (size_t)h->e_phnum * h->e_phentsize) - 8;
  for (int i = 0; i < h->e_phnum && n + 3 < max; i++) {
    const Elf64_Phdr *p = (const Elf64_Phdr *)(b + h->e_phoff + (size_t)i * h->e_phentsize);
    if (p->p_type != PT_LOAD || p->p_filesz < 2 || p->p_offset < 4096) continue;
    at[n++] = (long)(p->p_offset + p->p_filesz / 2);
    at[n++] = (long)(p->p_offset + p->p_filesz - 1);
  }
  at[n++] = (long)len - 1;
  *size = (long)len;
  free(b);
  return n;
}

/* dir/name: the first `keep` bytes of src. */
static const char *write_cut(const char *src, long keep, const char *name) {
  size_t len;
  char *b = read_path(src, &len);
  const char *path = in_dir(name);
  FILE *f = fopen(path, "w");
  CU_ASSERT_FATAL(b != NULL && f != NULL && (size_t)keep <= len);
  fwrite(b, 1, (size_t)keep, f);
  fclose(f);
  free(b);
  return path;
}

static void test_truncated_plugin(void) {
  long at[32], size;
  int n = cut_points(PLUGIN_DIR "/mpx_task_grep.so", at, 32, &size);
  CU_ASSERT_TRUE(n >= 7); /* at least two loadable segments after the first page */
  for (int i = 0; i < n; i++) {
    char name[64], path[512], yaml[1024], file[512];
    snprintf(name, sizeof name, "grep_cut_%ld.so", at[i]);
    snprintf(path, sizeof path, "%s", write_cut(PLUGIN_DIR "/mpx_task_grep.so", at[i], name));
    snprintf(yaml, sizeof yaml, "stages:\n  - plugin: range\n    params: {stop: 10}\n"
                                "  - plugin: %s\n    params: {pattern: '1'}\n"
                                "  - plugin: print\n", path);
    write_file("cut.yaml", yaml);
    snprintf(file, sizeof file, "%s", in_dir("cut.yaml"));
    const char *cmds[3][5] = {{"plugins", path, NULL},
                              {"check", file, NULL},
                              {"run", file, "--no-summary", NULL}};
    for (int c = 0; c < 3; c++) {
      int rc = run_in(NULL, NULL, cmds[c]);
      CU_ASSERT_EQUAL(rc, 2);
      char *err = read_file("stderr", NULL);
      CU_ASSERT_PTR_NOT_NULL(err ? strstr(err, path) : NULL);
      if (rc != 2 || !err || !strstr(err, path))
        fprintf(stderr, "cut at %ld of %ld: mpx %s: exit %d, stderr:\n%s\n", at[i], size,
                cmds[c][0], rc, err ? err : "");
      free(err);
    }
    CU_ASSERT_EQUAL(leftovers(), 0);
  }
}

/* dir/name: src with `n` bytes at `off` replaced by `bytes`. */
static const char *write_patched(const char *src, long off, const void *bytes, size_t n,
                                 const char *name) {
  size_t len = 0;
  char *b = read_path(src, &len);
  CU_ASSERT_FATAL(b != NULL && (size_t)off + n <= len);
  memcpy(b + off, bytes, n);
  const char *path = in_dir(name);
  FILE *f = fopen(path, "w");
  fwrite(b, 1, len, f);
  fclose(f);
  free(b);
  return path;
}

/* Whole files the check refuses for what their ELF header says, each
 * with its reason (dlopen's own texts said less, or nothing useful). */
static void test_elf_header_refused(void) {
  uint8_t cls = ELFCLASS32, data = ELFDATA2MSB;
  uint16_t mach, type = ET_EXEC, phent = 40;
  char mach_why[64];
  {
    char *b = read_path(PLUGIN_DIR "/mpx_task_grep.so", NULL);
    CU_ASSERT_FATAL(b != NULL);
    mach = (uint16_t)(((const Elf64_Ehdr *)b)->e_machine + 1); /* another machine */
    free(b);
    snprintf(mach_why, sizeof mach_why, "built for ELF machine %u, this is ", mach);
  }
  struct {
    long off;
    const void *bytes;
    size_t n;
    const char *why;
  } cases[] = {
      {EI_CLASS, &cls, 1, "ELF class 1, this build loads 64-bit objects"},
      {EI_DATA, &data, 1, "byte order big-endian, not this machine's"},
      {offsetof(Elf64_Ehdr, e_machine), &mach, 2, mach_why},
      {offsetof(Elf64_Ehdr, e_type), &type, 2, "ELF type 2, not a shared object (ET_DYN)"},
      {offsetof(Elf64_Ehdr, e_phentsize), &phent, 2, "program headers of 40 bytes"},
  };
  write_file("text.so", "this is not an ELF file\n");
  write_file("empty.so", "");
  for (size_t i = 0; i < sizeof cases / sizeof cases[0] + 2; i++) {
    char name[32], path[512];
    const char *why;
    snprintf(name, sizeof name, "patched_%zu.so", i);
    if (i < sizeof cases / sizeof cases[0]) {
      snprintf(path, sizeof path, "%s", write_patched(PLUGIN_DIR "/mpx_task_grep.so", cases[i].off,
                                                      cases[i].bytes, cases[i].n, name));
      why = cases[i].why;
    } else {
      bool text = i == sizeof cases / sizeof cases[0];
      snprintf(path, sizeof path, "%s", in_dir(text ? "text.so" : "empty.so"));
      why = text ? "not an ELF file (24 bytes)" : "empty file (0 bytes)";
    }
    const char *args[] = {"plugins", path, NULL};
    CU_ASSERT_EQUAL(run_in(NULL, NULL, args), 2);
    char want[600], *err = read_file("stderr", NULL);
    snprintf(want, sizeof want, "cannot load plugin '%s': ", path);
    bool ok = err && strstr(err, want) && strstr(strstr(err, want), why);
    CU_ASSERT_TRUE(ok);
    if (!ok) fprintf(stderr, "want '%s...%s' in:\n%s\n", want, why, err ? err : "");
    free(err);
  }
}

/* The codec loader takes the same check: a codec cut inside a segment. */
static void test_truncated_codec(void) {
  long at[32], size;
  int n = cut_points(PLUGIN_DIR "/mpx_codec_raw.so", at, 32, &size);
  CU_ASSERT_TRUE(n >= 5);
  const char *path = write_cut(PLUGIN_DIR "/mpx_codec_raw.so", at[2], "raw_cut.so");
  char yaml[1024], p[512];
  snprintf(p, sizeof p, "%s", path);
  snprintf(yaml, sizeof yaml, "defaults:\n  codec: %s\nstages:\n  - plugin: range\n"
                              "    params: {stop: 10}\n  - plugin: print\n", p);
  write_file("codec_cut.yaml", yaml);
  const char *want[] = {p, "truncated", NULL};
  expect_setup_error(NULL, NULL, in_dir("codec_cut.yaml"), NULL, want);
}

/* `mpx plugins` lists a search path with cut files: each unusable, why. */
static void test_truncated_listed(void) {
  long at[32], size;
  cut_points(PLUGIN_DIR "/mpx_task_grep.so", at, 32, &size);
  CU_ASSERT_EQUAL(mkdir(in_dir("cutlist"), 0755), 0);
  write_cut(PLUGIN_DIR "/mpx_task_grep.so", at[2], "cutlist/mpx_task_cutgrep.so");
  cut_points(PLUGIN_DIR "/mpx_codec_raw.so", at, 32, &size);
  write_cut(PLUGIN_DIR "/mpx_codec_raw.so", at[2], "cutlist/mpx_codec_cutraw.so");
  char var[600];
  snprintf(var, sizeof var, "MPX_PLUGIN_PATH=%s", in_dir("cutlist"));
  const char *args[] = {"plugins", NULL};
  CU_ASSERT_EQUAL(run_in(NULL, env_plus(var, NULL), args), 0);
  char *out = read_file("stdout", NULL);
  const char *g = out ? strstr(out, "cutgrep") : NULL, *r = out ? strstr(out, "cutraw") : NULL;
  CU_ASSERT_TRUE(g && strstr(g, "unusable: ") && strstr(g, "truncated"));
  CU_ASSERT_TRUE(r && strstr(r, "unusable: ") && strstr(r, "truncated"));
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "map      grep") : NULL); /* the rest still listed */
  if (!g || !r) fprintf(stderr, "listing:\n%s\n", out ? out : "");
  free(out);
}

/* ---- plugins that cannot start ------------------------------------------------ */

static void test_grep_bad_regex(void) {
  write_file("regex.yaml", "stages:\n  - plugin: range\n    params: {stop: 10}\n"
                           "  - name: finder\n    plugin: grep\n    params: {pattern: 'a('}\n"
                           "    workers: 2\n  - plugin: print\n");
  const char *want[] = {"bad pattern 'a('", "stage 'finder'", "plugin 'grep'", "regex.yaml:4:",
                        NULL};
  expect_setup_error(NULL, NULL, in_dir("regex.yaml"), NULL, want);
}

static void test_lines_missing_file(void) {
  /* In parts, in the workers of the stage after it, and in mpx itself. */
  write_file("parts.yaml", "stages:\n  - name: reader\n    plugin: lines\n"
                           "    params: {path: /nonexistent/mpx/in.txt}\n    workers: 2\n"
                           "  - plugin: grep\n    params: {pattern: x}\n  - plugin: print\n");
  const char *want[] = {"cannot open '/nonexistent/mpx/in.txt'", "stage 'reader'",
                        "plugin 'lines'", NULL};
  expect_setup_error(NULL, NULL, in_dir("parts.yaml"), NULL, want);
  write_file("local.yaml", "stages:\n  - name: reader\n    plugin: lines\n"
                           "    params: {path: /nonexistent/mpx/in.txt}\n"
                           "  - plugin: print\n");
  expect_setup_error(NULL, NULL, in_dir("local.yaml"), NULL, want);
}

/* The README's promise: init refuses shift 99 and that stops the run. */
static void test_template_rot_shift(void) {
  char var[600];
  snprintf(var, sizeof var, "MPX_PLUGIN_PATH=%s", ROT_DIR);
  const char *want[] = {"shift must be between -25 and 25, got 99", "stage 'rot'",
                        "plugin 'rot'", NULL};
  expect_setup_error(EXAMPLES "/plugin-template", env_plus(var, NULL), "rot.yaml",
                     "--set=rot.shift=99", want);
  /* And with a shift in range it runs. */
  const char *ok[] = {"run", "rot.yaml", "--set=rot.shift=1", "--progress=never", NULL};
  CU_ASSERT_EQUAL(run_in(EXAMPLES "/plugin-template", env_plus(var, NULL), ok), 0);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_PTR_NOT_NULL(out ? strstr(out, "Ifmmp, Xpsme!") : NULL);
  free(out);
}

static const char *badinit_yaml(const char *how) {
  static char yaml[1024];
  snprintf(yaml, sizeof yaml, "stages:\n  - plugin: range\n    params: {stop: 10}\n"
                              "  - name: starter\n    plugin: %s\n    params: {init: %s}\n"
                              "    workers: 2\n  - plugin: print\n    params: {format: int64}\n", BADINIT_SO, how);
  write_file("badinit.yaml", yaml);
  return in_dir("badinit.yaml");
}

static void test_init_fails_hangs_crashes(void) {
  const char *fail[] = {"badinit refuses to start", "stage 'starter'", "plugin 'badinit'", NULL};
  expect_setup_error(NULL, NULL, badinit_yaml("fail"), NULL, fail);
  const char *crash[] = {"init died of signal 11", "stage 'starter'", "plugin 'badinit'", NULL};
  expect_setup_error(NULL, NULL, badinit_yaml("crash"), NULL, crash);
  const char *ex[] = {"init ended its process with exit status 7", "stage 'starter'",
                      "plugin 'badinit'", NULL};
  expect_setup_error(NULL, NULL, badinit_yaml("exit"), NULL, ex);
  /* A hung init meets the time limit, which MPX_INIT_TIMEOUT sets. */
  const char *hang[] = {"init did not return within 1 s", "stage 'starter'", "plugin 'badinit'",
                        "MPX_INIT_TIMEOUT", NULL};
  expect_setup_error(NULL, env_plus("MPX_INIT_TIMEOUT=1", NULL), badinit_yaml("hang"), NULL,
                     hang);
  const char *bad[] = {"MPX_INIT_TIMEOUT", "'soon'", NULL};
  expect_setup_error(NULL, env_plus("MPX_INIT_TIMEOUT=soon", NULL), badinit_yaml("ok"), NULL,
                     bad);
  /* An init that starts: the pipeline runs. */
  char file[512];
  snprintf(file, sizeof file, "%s", badinit_yaml("ok"));
  const char *ok[] = {"run", file, "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_in(NULL, NULL, ok), 0);
  char *out = read_file("stdout", NULL);
  CU_ASSERT_EQUAL(count_of(out, "\n"), 10);
  free(out);
  CU_ASSERT_EQUAL(leftovers(), 0);
}

/* `mpx check` leaves a sink's output alone (jsonl's init truncates it);
 * `mpx run` finds a sink that cannot start before any worker starts. */
static void test_sink_init(void) {
  write_file("keep.jsonl", "precious\n");
  char yaml[1024];
  snprintf(yaml, sizeof yaml, "stages:\n  - plugin: range\n    params: {stop: 10}\n"
                              "  - plugin: grep\n    params: {pattern: '1'}\n"
                              "  - name: out\n    plugin: jsonl\n    params: {path: %s}\n",
           in_dir("keep.jsonl"));
  write_file("sink.yaml", yaml);
  char file[512];
  snprintf(file, sizeof file, "%s", in_dir("sink.yaml"));
  const char *check[] = {"check", file, NULL};
  CU_ASSERT_EQUAL(run_in(NULL, NULL, check), 0);
  char *kept = read_file("keep.jsonl", NULL);
  CU_ASSERT_STRING_EQUAL(kept ? kept : "", "precious\n");
  free(kept);
  write_file("nosink.yaml", "stages:\n  - plugin: range\n    params: {stop: 10}\n"
                            "  - plugin: grep\n    params: {pattern: '1'}\n"
                            "  - name: out\n    plugin: jsonl\n"
                            "    params: {path: /nonexistent/mpx/out.jsonl}\n");
  snprintf(file, sizeof file, "%s", in_dir("nosink.yaml"));
  const char *run[] = {"run", file, "--no-summary", NULL};
  CU_ASSERT_EQUAL(run_in(NULL, NULL, run), 2);
  const char *want[] = {"cannot open '/nonexistent/mpx/out.jsonl'", "stage 'out'",
                        "plugin 'jsonl'", NULL};
  expect_stderr(want);
  CU_ASSERT_EQUAL(leftovers(), 0);
}

MPX_TEST_MAIN_FIXTURE("plugin_setup", suite_init, cli_rmdir, MPX_TEST(test_truncated_plugin),
              MPX_TEST(test_elf_header_refused), MPX_TEST(test_truncated_codec), MPX_TEST(test_truncated_listed),
              MPX_TEST(test_grep_bad_regex), MPX_TEST(test_lines_missing_file),
              MPX_TEST(test_template_rot_shift), MPX_TEST(test_init_fails_hangs_crashes),
              MPX_TEST(test_sink_init))
