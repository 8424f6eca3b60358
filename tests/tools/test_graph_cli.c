/* `mpx check --graph` through the real binary, with exact stdout, stderr
 * and exit codes: examples/graph.yaml's DOT byte for byte (on stdout, and
 * to a file with --graph=FILE), `dot -Tsvg` drawing it, the drawing in
 * docs/ naming the example's stages, a graph file whose first stage is
 * not a source, and the graph's configuration errors (exit 2, FILE:LINE:COL
 * or the --set that caused them, nothing on stdout). */
#define _GNU_SOURCE
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <unistd.h>

#include "../mpx_test.h"
#include "cli.h"

/* Runs BIN ARGS in the source tree (where the example's relative paths
 * lead); its exit code. */
static int run_in_src(const char *bin, const char *const *args) {
  pid_t pid = start_bin(bin, SRC_DIR, clean_env(), args);
  CU_ASSERT_TRUE_FATAL(pid > 0);
  return finish(pid);
}

static void expect_text(const char *name, const char *want) {
  char *got = read_file(name, NULL);
  CU_ASSERT_STRING_EQUAL(got ? got : "(none)", want);
  if (!got || strcmp(got, want) != 0)
    fprintf(stderr, "%s: want [%s]\ngot [%s]\n", name, want, got ? got : "(none)");
  free(got);
}

static const char example_dot[] =
    "digraph \"graph\" {\n"
    "  rankdir=LR;\n"
    "  node [fontname=\"Helvetica\", fontsize=11];\n"
    "  edge [fontname=\"Helvetica\", fontsize=10];\n"
    "  \"story\" [shape=invhouse, label=\"story\\nlines (source)\"];\n"
    "  \"template\" [shape=invhouse, label=\"template\\nlines (source)\"];\n"
    "  \"counts\" [shape=box3d, label=\"counts\\nwordcount (reduce)\\npartitioned by key "
    "(2)\"];\n"
    "  \"word-counts\" [shape=house, label=\"word-counts\\nprint (sink)\"];\n"
    "  \"first-words\" [shape=box, label=\"first-words\\nfield (map)\"];\n"
    "  \"top\" [shape=box3d, label=\"top\\ntopk (reduce)\"];\n"
    "  \"print\" [shape=house, label=\"print\\nprint (sink)\"];\n"
    "  {rank=source; \"story\"; \"template\"; }\n"
    "  {rank=sink; \"word-counts\"; \"print\"; }\n"
    "  \"story\" -> \"counts\";\n"
    "  \"story\" -> \"first-words\";\n"
    "  \"template\" -> \"counts\";\n"
    "  \"counts\" -> \"word-counts\";\n"
    "  \"first-words\" -> \"top\";\n"
    "  \"top\" -> \"print\";\n"
    "}\n";

/* As SVG writes them: '-' as &#45;. */
static const char *const stage_names[] = {"story",           "template",           "counts",
                                          "word&#45;counts", "first&#45;words", "top",
                                          "print"};

static void test_example_dot(void) {
  const char *args[] = {"check", "examples/graph.yaml", "--graph", NULL};
  CU_ASSERT_EQUAL(run_in_src(MPX_BIN, args), 0);
  expect_text("stdout", example_dot);
  expect_text("stderr", "examples/graph.yaml: ok\n"); /* stdout is the DOT's alone */
  /* To a file: stdout says ok, as a plain check does. */
  char opt[600];
  snprintf(opt, sizeof opt, "--graph=%s", in_dir("graph.dot"));
  const char *to_file[] = {"check", opt, "examples/graph.yaml", NULL};
  CU_ASSERT_EQUAL(run_in_src(MPX_BIN, to_file), 0);
  expect_text("stdout", "examples/graph.yaml: ok\n");
  expect_text("stderr", "");
  char *dot = read_file("graph.dot", NULL);
  CU_ASSERT_STRING_EQUAL(dot ? dot : "", example_dot);
  free(dot);
}

/* Graphviz draws it (tools/install-deps.sh installs graphviz): an SVG
 * with a node titled by each stage's name. The drawing in docs/ is of the
 * same stages. */
static void test_dot_draws_it(void) {
  if (access(in_dir("graph.dot"), R_OK) != 0)
    fprintf(stderr, "no graph.dot: test_example_dot did not write it\n");
  CU_ASSERT_EQUAL_FATAL(access(in_dir("graph.dot"), R_OK), 0);
  const char *args[] = {"dot", "-Tsvg", "-o", in_dir("graph.svg"), in_dir("graph.dot"), NULL};
  int rc = run_in_src("/usr/bin/env", args);
  if (rc != 0) fprintf(stderr, "dot -Tsvg failed (%d): is graphviz installed?\n", rc);
  CU_ASSERT_EQUAL(rc, 0);
  char *svg = read_file("graph.svg", NULL), *doc = read_path(SRC_DIR "/docs/graph-example.svg", NULL);
  CU_ASSERT_PTR_NOT_NULL_FATAL(svg);
  CU_ASSERT_PTR_NOT_NULL_FATAL(doc);
  CU_ASSERT_PTR_NOT_NULL(strstr(svg, "<svg"));
  for (size_t i = 0; i < sizeof stage_names / sizeof *stage_names; i++) {
    char title[96];
    snprintf(title, sizeof title, "<title>%s</title>", stage_names[i]);
    CU_ASSERT_PTR_NOT_NULL(strstr(svg, title));
    CU_ASSERT_PTR_NOT_NULL(strstr(doc, title));
  }
  CU_ASSERT_PTR_NOT_NULL(strstr(doc, "<title>story&#45;&gt;counts</title>"));
  CU_ASSERT_PTR_NOT_NULL(strstr(svg, "<title>story&#45;&gt;counts</title>"));
  free(svg);
  free(doc);
}

/* In a graph file the old position rules do not hold: a map may come
 * first, a sink in the middle. */
static void test_graph_order_free(void) {
  write_file("in.txt", "a b\n");
  char yaml[1024];
  snprintf(yaml, sizeof yaml,
           "name: free\n"
           "defaults: {codec: raw}\n"
           "stages:\n"
           "  - {plugin: field, inputs: [lines]}\n"
           "  - {plugin: print, inputs: [field]}\n"
           "  - {plugin: lines, params: {path: %s}}\n",
           in_dir("in.txt"));
  write_file("free.yaml", yaml);
  const char *args[] = {"check", in_dir("free.yaml"), "--graph", NULL};
  CU_ASSERT_EQUAL(run_in_src(MPX_BIN, args), 0);
  expect_text("stdout", "digraph \"free\" {\n"
                        "  rankdir=LR;\n"
                        "  node [fontname=\"Helvetica\", fontsize=11];\n"
                        "  edge [fontname=\"Helvetica\", fontsize=10];\n"
                        "  \"field\" [shape=box, label=\"field\\nfield (map)\"];\n"
                        "  \"print\" [shape=house, label=\"print\\nprint (sink)\"];\n"
                        "  \"lines\" [shape=invhouse, label=\"lines\\nlines (source)\"];\n"
                        "  {rank=source; \"lines\"; }\n"
                        "  {rank=sink; \"print\"; }\n"
                        "  \"field\" -> \"print\";\n"
                        "  \"lines\" -> \"field\";\n"
                        "}\n");
}

/* The file's graph errors: exit 2, the position, no DOT. */
static void expect_graph_error(const char *yaml, const char *set, const char *msg) {
  char text[1024], want[1024];
  snprintf(text, sizeof text, "defaults: {codec: raw}\nstages:\n%s", yaml);
  write_file("bad.yaml", text);
  const char *args[] = {"check", in_dir("bad.yaml"), "--graph", set ? "--set" : NULL, set, NULL};
  CU_ASSERT_EQUAL(run_in_src(MPX_BIN, args), 2);
  expect_text("stdout", "");
  if (set)
    snprintf(want, sizeof want, "mpx check: --set %s: %s (configuration error)\n", set, msg);
  else
    snprintf(want, sizeof want, "mpx check: %s:%s (configuration error)\n", in_dir("bad.yaml"),
             msg);
  expect_text("stderr", want);
}

static void test_config_errors(void) {
  static const char src[] = "  - {plugin: lines, params: {path: in.txt}}\n";
  char y[512];
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}, inputs: [lines, lnes]}\n"
                        "  - plugin: print\n", src);
  expect_graph_error(y, NULL, "4:58: stage 'grep': input 'lnes' names no stage (the "
                               "stages: lines, grep, print)");
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}, inputs: [lines.hits]}\n"
                        "  - plugin: print\n", src);
  expect_graph_error(y, NULL, "4:51: stage 'grep': input 'lines.hits': stage 'lines' "
                               "(plugin 'lines') has no port 'hits' (its ports: out)");
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}, inputs: [lines, print]}\n"
                        "  - {plugin: field, name: f, inputs: [grep]}\n"
                        "  - plugin: print\n", src);
  expect_graph_error(y, NULL, "4:58: stage 'grep': input 'print' is a sink (plugin "
                               "'print'), which emits nothing to read (expected a source, "
                               "map or reduce)");
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}, inputs: [lines, f]}\n"
                        "  - {plugin: field, name: f, inputs: [grep]}\n"
                        "  - plugin: print\n", src);
  expect_graph_error(y, NULL, "4:5: stage 'grep' is in a cycle: grep -> f -> grep "
                               "(expected no stage to read its own outputs, directly or "
                               "through others)");
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}, inputs: [lines]}\n"
                        "  - {plugin: field, name: f, inputs: [lines]}\n"
                        "  - {plugin: print, inputs: [grep]}\n", src);
  expect_graph_error(y, NULL, "5:5: stage 'f' (plugin 'field', a map) is read by no "
                               "stage: its outputs would be lost (expected a stage with "
                               "'inputs: [f]', or a sink)");
  snprintf(y, sizeof y, "%s  - {plugin: grep, params: {pattern: a}}\n  - plugin: print\n", src);
  expect_graph_error(y, "print.inputs=grep,nowhere",
                      "stage 'print': input 'nowhere' names no stage (the stages: lines, "
                      "grep, print)");
  expect_graph_error("  - {plugin: grep, params: {pattern: a}, inputs: []}\n", NULL,
                      "3:50: 'inputs' is empty: expected at least one input (STAGE or "
                      "STAGE.PORT)");
}

static int suite_init(void) {
  signal(SIGPIPE, SIG_IGN);
  if (cli_mkdir("/tmp/mpx-graph-XXXXXX") != 0) return -1;
  return 0;
}

MPX_TEST_MAIN_FIXTURE("graph_cli", suite_init, cli_rmdir, MPX_TEST(test_example_dot),
                      MPX_TEST(test_dot_draws_it), MPX_TEST(test_graph_order_free),
                      MPX_TEST(test_config_errors))
