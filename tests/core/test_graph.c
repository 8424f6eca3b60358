/* The pipeline graph (core/pipeline/graph.c), from real config text
 * (mpx__cfg_parse_mem) and hand-made plugin kinds and ports: the edges
 * and their order, the topological order (file order among the stages
 * free to go), each error with its exact message and position, and the
 * DOT text byte for byte. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mpx.h>

#include "core/pipeline/config.h"
#include "core/pipeline/graph.h"
#include "../mpx_test.h"

#define E(msg) msg " (configuration error)"

static const char *const one_port[] = {"out"};
static const char *const grep_ports[] = {"matched", "unmatched"};
static const char *const route_ports[] = {"errors", "warnings", "rest"};

#define SRC {MPX_PLUGIN_SOURCE, 1, one_port}
#define MAP {MPX_PLUGIN_MAP, 1, one_port}
#define GREP {MPX_PLUGIN_MAP, 2, grep_ports}
#define ROUTE {MPX_PLUGIN_MAP, 3, route_ports}
#define RED {MPX_PLUGIN_REDUCE, 1, one_port}
#define SINK {MPX_PLUGIN_SINK, 1, one_port}

static mpx__cfg_t *parse(const char *yaml) {
  mpx__cfg_t *c = NULL;
  int rc = mpx__cfg_parse_mem(&c, "g.yaml", yaml, strlen(yaml));
  if (rc != 0) fprintf(stderr, "\nunexpected config error: %s\n", mpx_last_error());
  CU_ASSERT_EQUAL(rc, 0);
  return c;
}

/* Builds yaml's graph into g; c is the caller's. */
static int build(mpx__graph_t *g, mpx__cfg_t **c, const char *yaml,
                 const mpx__gnode_t *nodes) {
  memset(g, 0, sizeof *g);
  if ((*c = parse(yaml)) == NULL) return -1;
  int rc = mpx__graph_build(g, *c, nodes);
  if (rc != 0) fprintf(stderr, "\nunexpected graph error: %s\n", mpx_last_error());
  return rc;
}

static void check_msg(const char *want) {
  if (strcmp(mpx_last_error(), want) != 0)
    fprintf(stderr, "\n got: %s\nwant: %s\n", mpx_last_error(), want);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), want);
}

/* yaml's graph fails with want; the --set assignments (NULL-ended) first. */
static void expect_err_set(const char *yaml, const char *const *sets,
                           const mpx__gnode_t *nodes, const char *want) {
  mpx__cfg_t *c = parse(yaml);
  mpx__graph_t g;
  if (c == NULL) return;
  for (; sets && *sets; sets++) CU_ASSERT_EQUAL(mpx__cfg_set(c, *sets), 0);
  memset(&g, 0xa5, sizeof g);
  CU_ASSERT_EQUAL(mpx__graph_build(&g, c, nodes), MPX_ECONFIG);
  check_msg(want);
  /* Nothing is left to free. */
  CU_ASSERT_PTR_NULL(g.edges);
  CU_ASSERT_PTR_NULL(g.order);
  CU_ASSERT_EQUAL(g.n_edges, 0);
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

static void expect_err(const char *yaml, const mpx__gnode_t *nodes, const char *want) {
  expect_err_set(yaml, NULL, nodes, want);
}

static void check_edges(const mpx__graph_t *g, const mpx__gedge_t *want, size_t n) {
  CU_ASSERT_EQUAL_FATAL(g->n_edges, n);
  for (size_t i = 0; i < n; i++) {
    if (memcmp(&g->edges[i], &want[i], sizeof want[i]) != 0)
      fprintf(stderr, "\nedge %zu: got %u.%u -> %u, want %u.%u -> %u\n", i,
              g->edges[i].from, g->edges[i].port, g->edges[i].to, want[i].from,
              want[i].port, want[i].to);
    CU_ASSERT_EQUAL(g->edges[i].from, want[i].from);
    CU_ASSERT_EQUAL(g->edges[i].port, want[i].port);
    CU_ASSERT_EQUAL(g->edges[i].to, want[i].to);
  }
}

static void check_order(const mpx__graph_t *g, const uint32_t *want, size_t n) {
  CU_ASSERT_EQUAL_FATAL(g->n, n);
  for (size_t i = 0; i < n; i++) CU_ASSERT_EQUAL(g->order[i], want[i]);
}

/* ---- shapes ----------------------------------------------------------------- */

static void test_linear(void) {
  static const mpx__gnode_t nodes[] = {SRC, GREP, MAP, SINK};
  static const mpx__gedge_t edges[] = {{0, 0, 1}, {1, 0, 2}, {2, 0, 3}};
  static const uint32_t order[] = {0, 1, 2, 3};
  mpx__graph_t g;
  mpx__cfg_t *c;
  if (build(&g, &c, "stages:\n  - plugin: lines\n  - plugin: grep\n"
                    "  - plugin: field\n  - plugin: print\n", nodes) == 0) {
    CU_ASSERT_TRUE(g.linear);
    check_edges(&g, edges, 3);
    check_order(&g, order, 4);
    CU_ASSERT_EQUAL(mpx__graph_n_in(&g, 0), 0);
    CU_ASSERT_EQUAL(mpx__graph_n_in(&g, 3), 1);
  }
  mpx__graph_free(&g);
  mpx__graph_free(&g); /* a freed graph is a zeroed one */
  mpx__cfg_free(c);
}

/* A file without inputs may end in a map, as before (the old chain). */
static void test_linear_ends_in_map(void) {
  static const mpx__gnode_t nodes[] = {SRC, MAP};
  static const mpx__gedge_t edges[] = {{0, 0, 1}};
  mpx__graph_t g;
  mpx__cfg_t *c;
  if (build(&g, &c, "stages: [{plugin: range}, {plugin: primes}]\n", nodes) == 0) {
    CU_ASSERT_TRUE(g.linear);
    check_edges(&g, edges, 1);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* A diamond written out of order: the join before its inputs. */
static void test_diamond(void) {
  static const mpx__gnode_t nodes[] = {SRC, MAP, MAP, MAP, SINK};
  static const mpx__gedge_t edges[] = {
      {0, 0, 2}, {0, 0, 3}, {1, 0, 4}, {2, 0, 1}, {3, 0, 1}};
  static const uint32_t order[] = {0, 2, 3, 1, 4};
  mpx__graph_t g;
  mpx__cfg_t *c;
  size_t first, count;
  if (build(&g, &c,
            "stages:\n"
            "  - {plugin: lines, name: src}\n"
            "  - {plugin: field, name: join, inputs: [right, left]}\n"
            "  - {plugin: grep, name: left, inputs: src}\n"
            "  - {plugin: grep, name: right, inputs: [src]}\n"
            "  - {plugin: print, name: out, inputs: [join]}\n",
            nodes) == 0) {
    CU_ASSERT_FALSE(g.linear);
    check_edges(&g, edges, 5);
    check_order(&g, order, 5);
    CU_ASSERT_EQUAL(mpx__graph_n_in(&g, 1), 2);
    CU_ASSERT_EQUAL(mpx__graph_n_in(&g, 0), 0);
    mpx__graph_outs(&g, 0, 0, &first, &count);
    CU_ASSERT_EQUAL(first, 0);
    CU_ASSERT_EQUAL(count, 2); /* fan-out */
    mpx__graph_outs(&g, 4, 0, &first, &count);
    CU_ASSERT_EQUAL(count, 0);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* Two sources into one stage; among the stages free to go, the first in
 * the file goes first, wherever the stages that read them are. */
static void test_two_sources(void) {
  static const mpx__gnode_t nodes[] = {MAP, SINK, SRC, SRC, SINK};
  static const mpx__gedge_t edges[] = {{0, 0, 1}, {2, 0, 0}, {3, 0, 0}, {3, 0, 4}};
  static const uint32_t order[] = {2, 3, 0, 1, 4};
  mpx__graph_t g;
  mpx__cfg_t *c;
  if (build(&g, &c,
            "stages:\n"
            "  - {plugin: grep, name: m, inputs: [b, a]}\n"
            "  - {plugin: print, name: out}\n"
            "  - {plugin: lines, name: a}\n"
            "  - {plugin: lines, name: b}\n"
            "  - {plugin: print, name: raw-b, inputs: b}\n",
            nodes) == 0) {
    check_edges(&g, edges, 4);
    check_order(&g, order, 5);
    CU_ASSERT_EQUAL(mpx__graph_n_in(&g, 0), 2);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* Ports: an input without one reads port 0; the edges of each port are a
 * run of the sorted edges. */
static void test_ports(void) {
  static const mpx__gnode_t nodes[] = {SRC, ROUTE, SINK, SINK, RED, SINK};
  static const mpx__gedge_t edges[] = {
      {0, 0, 1}, {1, 0, 2}, {1, 0, 4}, {1, 2, 3}, {4, 0, 5}};
  mpx__graph_t g;
  mpx__cfg_t *c;
  size_t first, count;
  if (build(&g, &c,
            "stages:\n"
            "  - plugin: lines\n"
            "  - plugin: route\n"
            "  - {plugin: print, name: errs, inputs: [route]}\n"
            "  - {plugin: print, name: rest, inputs: [route.rest]}\n"
            "  - {plugin: topk, inputs: [route.errors]}\n"
            "  - plugin: print\n",
            nodes) == 0) {
    check_edges(&g, edges, 5);
    mpx__graph_outs(&g, 1, 0, &first, &count);
    CU_ASSERT_EQUAL(first, 1);
    CU_ASSERT_EQUAL(count, 2);
    mpx__graph_outs(&g, 1, 1, &first, &count); /* warnings: nobody reads it */
    CU_ASSERT_EQUAL(count, 0);
    mpx__graph_outs(&g, 1, 2, &first, &count);
    CU_ASSERT_EQUAL(first, 3);
    CU_ASSERT_EQUAL(count, 1);
    mpx__graph_outs(&g, 4, 0, &first, &count);
    CU_ASSERT_EQUAL(first, 4);
    CU_ASSERT_EQUAL(count, 1);
    mpx__graph_outs(&g, 5, 0, &first, &count);
    CU_ASSERT_EQUAL(count, 0);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* ---- errors ----------------------------------------------------------------- */

static const mpx__gnode_t src_map_sink[] = {SRC, MAP, SINK};

static void test_unknown_inputs(void) {
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: grep\n"
             "    inputs: [lines, line]\n"
             "  - plugin: print\n",
             src_map_sink,
             E("g.yaml:4:21: stage 'grep': input 'line' names no stage (the "
               "stages: lines, grep, print)"));
  static const mpx__gnode_t grep_nodes[] = {SRC, GREP, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: grep\n"
             "  - plugin: print\n"
             "    inputs:\n"
             "      - grep.unmatched\n"
             "      - grep.nomatch\n",
             grep_nodes,
             E("g.yaml:7:9: stage 'print': input 'grep.nomatch': stage 'grep' "
               "(plugin 'grep') has no port 'nomatch' (its ports: matched, "
               "unmatched)"));
  /* A one-port plugin's port is "out". */
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - {plugin: grep, inputs: [lines.matched]}\n"
             "  - plugin: print\n",
             src_map_sink,
             E("g.yaml:3:29: stage 'grep': input 'lines.matched': stage 'lines' "
               "(plugin 'lines') has no port 'matched' (its ports: out)"));
  /* From --set: the override is named. */
  static const char *const sets[] = {"print.inputs=grep,lines.x", NULL};
  expect_err_set("stages:\n  - plugin: lines\n  - plugin: grep\n  - plugin: print\n",
                 sets, src_map_sink,
                 E("--set print.inputs=grep,lines.x: stage 'print': input "
                   "'lines.x': stage 'lines' (plugin 'lines') has no port 'x' "
                   "(its ports: out)"));
}

static void test_duplicate_input(void) {
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: grep\n"
             "  - plugin: print\n"
             "    inputs: [grep, lines, grep]\n",
             src_map_sink, E("g.yaml:5:27: stage 'print' reads 'grep' twice "
                             "(expected each input once)"));
  /* STAGE is STAGE's port 0. */
  static const mpx__gnode_t grep_nodes[] = {SRC, GREP, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: grep\n"
             "  - plugin: print\n"
             "    inputs: [grep.unmatched, grep, grep.matched]\n",
             grep_nodes, E("g.yaml:5:36: stage 'print' reads 'grep.matched' "
                           "twice (expected each input once)"));
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: grep\n"
             "    inputs: [lines.out, lines]\n"
             "  - plugin: print\n",
             src_map_sink, E("g.yaml:4:25: stage 'grep' reads 'lines' twice "
                             "(expected each input once)"));
}

static void test_source_with_inputs(void) {
  static const mpx__gnode_t nodes[] = {SRC, SRC, MAP, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: range\n"
             "    inputs: [lines]\n"
             "  - plugin: grep\n"
             "  - plugin: print\n",
             nodes, E("g.yaml:4:5: stage 'range' is a source (plugin 'range'): a "
                      "source reads nothing, so it takes no 'inputs'"));
  /* Nor partitions, which split what a stage reads. */
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "    partition_by: key\n"
             "  - plugin: grep\n",
             src_map_sink,
             E("g.yaml:3:19: stage 'lines' is a source (plugin 'lines'): "
               "'partition_by' splits what a stage reads, and a source reads "
               "nothing"));
}

static void test_sink_as_input(void) {
  static const mpx__gnode_t nodes[] = {SRC, SINK, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - plugin: print\n"
             "  - {plugin: print, name: again, inputs: [print]}\n",
             nodes,
             E("g.yaml:4:43: stage 'again': input 'print' is a sink (plugin "
               "'print'), which emits nothing to read (expected a source, map "
               "or reduce)"));
  /* Without inputs, after a sink, in a graph file. */
  static const mpx__gnode_t nodes2[] = {SRC, SINK, MAP, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - {plugin: print, inputs: [lines]}\n"
             "  - plugin: grep\n"
             "  - plugin: print\n",
             nodes2,
             E("g.yaml:4:5: stage 'grep' reads the stage before it, 'print-1', a "
               "sink, which emits nothing (expected 'inputs' naming what it "
               "reads)"));
}

static void test_first_not_source(void) {
  expect_err("stages:\n  - plugin: grep\n  - plugin: lines\n  - plugin: print\n",
             (const mpx__gnode_t[]){MAP, SRC, SINK},
             E("g.yaml:2:5: stage 'grep' (plugin 'grep') is a map with nothing "
               "to read: the first stage must be a source, or be given "
               "'inputs'"));
}

static void test_cycles(void) {
  static const mpx__gnode_t nodes[] = {SRC, MAP, MAP, MAP, SINK};
  /* Found from the first stage left out, named from its first in the file. */
  expect_err("stages:\n"
             "  - {plugin: lines, name: a}\n"
             "  - {plugin: grep, name: d, inputs: [c]}\n"
             "  - {plugin: grep, name: b, inputs: [a, d]}\n"
             "  - {plugin: grep, name: c, inputs: [b]}\n"
             "  - {plugin: print, name: out, inputs: [d]}\n",
             nodes,
             E("g.yaml:3:5: stage 'd' is in a cycle: d -> b -> c -> d (expected "
               "no stage to read its own outputs, directly or through others)"));
  /* A stage downstream of a cycle is not in it. */
  expect_err("stages:\n"
             "  - {plugin: lines, name: a}\n"
             "  - {plugin: grep, name: x, inputs: [y]}\n"
             "  - {plugin: grep, name: y, inputs: [a, y]}\n"
             "  - {plugin: grep, name: z, inputs: [x]}\n"
             "  - {plugin: print, name: out, inputs: [z]}\n",
             nodes,
             E("g.yaml:4:5: stage 'y' is in a cycle: y -> y (expected no stage "
               "to read its own outputs, directly or through others)"));
}

static void test_unread(void) {
  static const mpx__gnode_t nodes[] = {SRC, MAP, RED, SINK};
  expect_err("stages:\n"
             "  - plugin: lines\n"
             "  - {plugin: grep, inputs: [lines]}\n"
             "  - {plugin: wordcount, inputs: [lines]}\n"
             "  - {plugin: print, inputs: [grep]}\n",
             nodes,
             E("g.yaml:4:5: stage 'wordcount' (plugin 'wordcount', a reduce) is "
               "read by no stage: its outputs would be lost (expected a stage "
               "with 'inputs: [wordcount]', or a sink)"));
  /* A source too; only a port that is read counts. */
  static const mpx__gnode_t nodes2[] = {SRC, SRC, GREP, SINK};
  expect_err("stages:\n"
             "  - {plugin: lines, name: a}\n"
             "  - {plugin: lines, name: b}\n"
             "  - {plugin: grep, inputs: [a]}\n"
             "  - {plugin: print, inputs: [grep.unmatched]}\n",
             nodes2,
             E("g.yaml:3:5: stage 'b' (plugin 'lines', a source) is read by no "
               "stage: its outputs would be lost (expected a stage with "
               "'inputs: [b]', or a sink)"));
  /* The same stage left unread in a linear file is fine: the old chain. */
  mpx__graph_t g;
  mpx__cfg_t *c;
  CU_ASSERT_EQUAL(build(&g, &c, "stages: [{plugin: lines}, {plugin: grep}]\n",
                        (const mpx__gnode_t[]){SRC, MAP}), 0);
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* ---- DOT -------------------------------------------------------------------- */

static char *dot_of(const mpx__graph_t *g, const mpx__cfg_t *c, const mpx__gnode_t *nodes) {
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  CU_ASSERT_EQUAL(mpx__graph_dot(g, c, nodes, f), 0);
  fclose(f);
  return buf;
}

static void test_dot(void) {
  static const mpx__gnode_t nodes[] = {SRC, SRC, GREP, RED, SINK, SINK, MAP};
  static const char want[] =
      "digraph \"logs \\\"today\\\"\" {\n"
      "  rankdir=LR;\n"
      "  node [fontname=\"Helvetica\", fontsize=11];\n"
      "  edge [fontname=\"Helvetica\", fontsize=10];\n"
      "  \"a\" [shape=invhouse, label=\"a\\nlines (source)\"];\n"
      "  \"b\" [shape=invhouse, label=\"b\\nlines (source)\"];\n"
      "  \"grep\" [shape=box, label=\"grep\\ngrep (map)\\nworkers: 3\"];\n"
      "  \"counts\" [shape=box3d, label=\"counts\\nwordcount (reduce)\\nworkers: "
      "auto\\npartitioned by key (8)\"];\n"
      "  \"print\" [shape=house, label=\"print\\nprint (sink)\"];\n"
      "  \"x_y_z\" [shape=house, label=\"x_y_z\\n./x\\\"y\\\\z.so (sink)\"];\n"
      "  \"upper\" [shape=box, label=\"upper\\nupper (map)\\npartitioned by key "
      "(one per worker)\"];\n"
      "  {rank=source; \"a\"; \"b\"; }\n"
      "  {rank=sink; \"print\"; \"x_y_z\"; }\n"
      "  \"a\" -> \"grep\";\n"
      "  \"b\" -> \"grep\";\n"
      "  \"b\" -> \"upper\";\n"
      "  \"grep\" -> \"counts\" [label=\"matched\"];\n"
      "  \"grep\" -> \"x_y_z\" [label=\"unmatched\"];\n"
      "  \"counts\" -> \"print\";\n"
      "  \"upper\" -> \"print\";\n"
      "}\n";
  mpx__graph_t g;
  mpx__cfg_t *c;
  if (build(&g, &c,
            "name: logs \"today\"\n"
            "defaults: {workers: 2}\n"
            "stages:\n"
            "  - {plugin: lines, name: a}\n"
            "  - {plugin: lines, name: b}\n"
            "  - {plugin: grep, inputs: [b, a], workers: 3}\n"
            "  - plugin: wordcount\n"
            "    name: counts\n"
            "    workers: auto\n"
            "    partition_by: key\n"
            "    partitions: 8\n"
            "  - {plugin: print, inputs: [upper, counts]}\n"
            "  - {plugin: './x\"y\\z.so', inputs: [grep.unmatched]}\n"
            "  - {plugin: upper, inputs: [b], partition_by: key}\n",
            nodes) == 0) {
    char *got = dot_of(&g, c, nodes);
    if (strcmp(got, want) != 0) fprintf(stderr, "\n got:\n%s\nwant:\n%s", got, want);
    CU_ASSERT_STRING_EQUAL(got, want);
    /* The same graph, the same bytes. */
    char *again = dot_of(&g, c, nodes);
    CU_ASSERT_STRING_EQUAL(again, got);
    free(again);
    free(got);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

/* A stream that cannot be written is an error, not a short graph. */
static void test_dot_write_error(void) {
  static const mpx__gnode_t nodes[] = {SRC, SINK};
  mpx__graph_t g;
  mpx__cfg_t *c;
  if (build(&g, &c, "stages: [{plugin: lines}, {plugin: print}]\n", nodes) == 0) {
    FILE *f = fopen("/dev/full", "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(mpx__graph_dot(&g, c, nodes, f), -ENOSPC);
    fclose(f);
  }
  mpx__graph_free(&g);
  mpx__cfg_free(c);
}

MPX_TEST_MAIN("graph", MPX_TEST(test_linear), MPX_TEST(test_linear_ends_in_map),
              MPX_TEST(test_diamond), MPX_TEST(test_two_sources), MPX_TEST(test_ports),
              MPX_TEST(test_unknown_inputs), MPX_TEST(test_duplicate_input),
              MPX_TEST(test_source_with_inputs), MPX_TEST(test_sink_as_input),
              MPX_TEST(test_first_not_source), MPX_TEST(test_cycles),
              MPX_TEST(test_unread), MPX_TEST(test_dot), MPX_TEST(test_dot_write_error))
