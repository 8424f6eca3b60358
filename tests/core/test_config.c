/* The pipeline config (core/pipeline/config.c): every key read back, the defaults,
 * each class of error with its exact message and position, --set, and
 * files that are missing, empty, too large or not UTF-8. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx.h>

#include "core/pipeline/config.h"
#include "../mpx_test.h"

#define E(msg) msg " (configuration error)"
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static mpx__cfg_t *parse_ok(const char *yaml) {
  mpx__cfg_t *c = NULL;
  int rc = mpx__cfg_parse_mem(&c, "p.yaml", yaml, strlen(yaml));
  if (rc != 0) fprintf(stderr, "\nunexpected error: %s\n", mpx_last_error());
  CU_ASSERT_EQUAL(rc, 0);
  return c;
}

static void check_msg(const char *want) {
  if (strcmp(mpx_last_error(), want) != 0)
    fprintf(stderr, "\n got: %s\nwant: %s\n", mpx_last_error(), want);
  CU_ASSERT_STRING_EQUAL(mpx_last_error(), want);
}

static void expect_err_len(const char *yaml, size_t len, const char *want) {
  mpx__cfg_t *c = (mpx__cfg_t *)&c;
  int rc = mpx__cfg_parse_mem(&c, "p.yaml", yaml, len);
  CU_ASSERT_EQUAL(rc, MPX_ECONFIG);
  CU_ASSERT_PTR_NULL(c);
  check_msg(want);
  mpx__cfg_free(rc == 0 ? c : NULL);
}

static void expect_err(const char *yaml, const char *want) {
  expect_err_len(yaml, strlen(yaml), want);
}

static void expect_set_err(mpx__cfg_t *c, const char *a, const char *want) {
  size_t n = c->n_sets;
  CU_ASSERT_EQUAL(mpx__cfg_set(c, a), MPX_ECONFIG);
  CU_ASSERT_EQUAL(c->n_sets, n); /* a failed override is not kept */
  check_msg(want);
}

static const char full_yaml[] =
    "# every key\n"
    "name: primes sum\n"
    "defaults:\n"
    "  workers: 3\n"
    "  codec: json\n"
    "  transport: pipe\n"
    "  retries: 5\n"
    "  timeout: 2.5\n"
    "  ordered: true\n"
    "  batch: 16\n"
    "queue_capacity: 4096\n"
    "supervisor:\n"
    "  restart: transient\n"
    "  max_restarts: 7\n"
    "  period: 30\n"
    "  backoff_min: 0.25\n"
    "  backoff_max: 4\n"
    "dead_letter: /tmp/failed.jsonl\n"
    "stages:\n"
    "  - plugin: range\n"
    "    name: numbers\n"
    "    params:\n"
    "      start: 100000\n"
    "      stop: \"5000000\"\n"
    "      step: '100000'\n"
    "    workers: 1\n"
    "    codec: raw\n"
    "    transport: uring\n"
    "    retries: 0\n"
    "    timeout: 0\n"
    "    ordered: no\n"
    "    batch: auto\n"
    "  - plugin: ./plugins/mpx_task_primes.so\n"
    "    workers: auto\n"
    "    timeout: 1e3\n"
    "  - {plugin: print, params: {format: int64}}\n";

static void test_full(void) {
  mpx__cfg_t *c = parse_ok(full_yaml);
  const mpx__cfg_stage_t *s;
  if (c == NULL) return;
  CU_ASSERT_STRING_EQUAL(c->file, "p.yaml");
  CU_ASSERT_STRING_EQUAL(c->name, "primes sum");
  CU_ASSERT_EQUAL(c->defaults.workers, 3);
  CU_ASSERT_STRING_EQUAL(c->defaults.codec, "json");
  CU_ASSERT_EQUAL(c->defaults.transport, MPX_TRANSPORT_PIPE);
  CU_ASSERT_EQUAL(c->defaults.retries, 5);
  CU_ASSERT_EQUAL(c->defaults.timeout, 2.5);
  CU_ASSERT_TRUE(c->defaults.ordered);
  CU_ASSERT_EQUAL(c->defaults.batch, 16);
  CU_ASSERT_EQUAL(c->defaults.set, (1u << MPX__CFG_NOPTS) - 1);
  CU_ASSERT_EQUAL(c->defaults.at[MPX__CFG_CODEC].line, 5);
  CU_ASSERT_EQUAL(c->defaults.at[MPX__CFG_CODEC].col, 10);
  CU_ASSERT_EQUAL(c->queue_capacity, 4096);
  CU_ASSERT_EQUAL(c->supervisor.restart, MPX_RESTART_TRANSIENT);
  CU_ASSERT_EQUAL(c->supervisor.max_restarts, 7);
  CU_ASSERT_EQUAL(c->supervisor.period, 30.0);
  CU_ASSERT_EQUAL(c->supervisor.backoff_min, 0.25);
  CU_ASSERT_EQUAL(c->supervisor.backoff_max, 4.0);
  CU_ASSERT_STRING_EQUAL(c->dead_letter, "/tmp/failed.jsonl");
  CU_ASSERT_EQUAL(c->dead_letter_at.line, 18);
  CU_ASSERT_EQUAL(c->dead_letter_at.col, 14);
  CU_ASSERT_EQUAL_FATAL(c->n_stages, 3);

  s = &c->stages[0];
  CU_ASSERT_STRING_EQUAL(s->name, "numbers");
  CU_ASSERT_STRING_EQUAL(s->plugin, "range");
  CU_ASSERT_EQUAL(s->plugin_line, 20);
  CU_ASSERT_EQUAL(s->plugin_col, 13);
  CU_ASSERT_EQUAL(s->line, 20);
  CU_ASSERT_EQUAL(s->col, 5);
  CU_ASSERT_EQUAL_FATAL(s->n_params, 3);
  CU_ASSERT_STRING_EQUAL(s->params[0].key, "start");
  CU_ASSERT_STRING_EQUAL(s->params[0].value, "100000");
  CU_ASSERT_EQUAL(s->params[0].line, 23);
  CU_ASSERT_EQUAL(s->params[0].col, 14);
  CU_ASSERT_EQUAL(s->params[0].key_line, 23);
  CU_ASSERT_EQUAL(s->params[0].key_col, 7);
  CU_ASSERT_STRING_EQUAL(s->params[1].key, "stop");
  CU_ASSERT_STRING_EQUAL(s->params[1].value, "5000000");
  CU_ASSERT_STRING_EQUAL(s->params[2].key, "step");
  CU_ASSERT_STRING_EQUAL(s->params[2].value, "100000");
  CU_ASSERT_EQUAL(s->opts.workers, 1);
  CU_ASSERT_STRING_EQUAL(s->opts.codec, "raw");
  CU_ASSERT_EQUAL(s->opts.transport, MPX_TRANSPORT_URING);
  CU_ASSERT_EQUAL(s->opts.retries, 0);
  CU_ASSERT_EQUAL(s->opts.timeout, 0.0);
  CU_ASSERT_FALSE(s->opts.ordered);
  CU_ASSERT_EQUAL(s->opts.batch, 0);
  CU_ASSERT_EQUAL(s->opts.set, (1u << MPX__CFG_NOPTS) - 1);
  CU_ASSERT_EQUAL(s->opts.at[MPX__CFG_BATCH].line, 32);
  CU_ASSERT_EQUAL(s->opts.at[MPX__CFG_BATCH].col, 12);

  /* The second stage inherits what it does not set, with the positions
   * of the defaults. */
  s = &c->stages[1];
  CU_ASSERT_STRING_EQUAL(s->name, "primes");
  CU_ASSERT_STRING_EQUAL(s->plugin, "./plugins/mpx_task_primes.so");
  CU_ASSERT_EQUAL(s->n_params, 0);
  CU_ASSERT_EQUAL(s->opts.workers, 0);
  CU_ASSERT_STRING_EQUAL(s->opts.codec, "json");
  CU_ASSERT_EQUAL(s->opts.transport, MPX_TRANSPORT_PIPE);
  CU_ASSERT_EQUAL(s->opts.retries, 5);
  CU_ASSERT_EQUAL(s->opts.timeout, 1000.0);
  CU_ASSERT_TRUE(s->opts.ordered);
  CU_ASSERT_EQUAL(s->opts.batch, 16);
  CU_ASSERT_EQUAL(s->opts.set,
                  (1u << MPX__CFG_WORKERS) | (1u << MPX__CFG_TIMEOUT));
  CU_ASSERT_EQUAL(s->opts.at[MPX__CFG_CODEC].line, 5);
  CU_ASSERT_EQUAL(s->opts.at[MPX__CFG_WORKERS].line, 34);

  s = &c->stages[2];
  CU_ASSERT_STRING_EQUAL(s->name, "print");
  CU_ASSERT_EQUAL(s->line, 36);
  CU_ASSERT_EQUAL(s->col, 5);
  CU_ASSERT_EQUAL_FATAL(s->n_params, 1);
  CU_ASSERT_STRING_EQUAL(s->params[0].key, "format");
  CU_ASSERT_STRING_EQUAL(s->params[0].value, "int64");
  CU_ASSERT_EQUAL(s->params[0].line, 36);
  CU_ASSERT_EQUAL(s->params[0].col, 38);
  mpx__cfg_free(c);
}

static void test_defaults(void) {
  mpx__cfg_t *c = NULL;
  const char *y = "stages:\n  - plugin: grep\n";
  const mpx__cfg_stage_t *s;
  int k;
  CU_ASSERT_EQUAL_FATAL(
      mpx__cfg_parse_mem(&c, "dir/my.pipeline.yaml", y, strlen(y)), 0);
  CU_ASSERT_STRING_EQUAL(c->name, "my");
  CU_ASSERT_EQUAL(c->defaults.workers, 0);
  CU_ASSERT_STRING_EQUAL(c->defaults.codec, "msgpack");
  CU_ASSERT_EQUAL(c->defaults.transport, MPX_TRANSPORT_AUTO);
  CU_ASSERT_EQUAL(c->defaults.retries, 2);
  CU_ASSERT_EQUAL(c->defaults.timeout, 0.0);
  CU_ASSERT_FALSE(c->defaults.ordered);
  CU_ASSERT_EQUAL(c->defaults.batch, 0);
  CU_ASSERT_EQUAL(c->defaults.set, 0);
  CU_ASSERT_EQUAL(c->queue_capacity, 1024);
  CU_ASSERT_EQUAL(c->supervisor.restart, MPX_RESTART_PERMANENT);
  CU_ASSERT_EQUAL(c->supervisor.max_restarts, -1);
  CU_ASSERT_EQUAL(c->supervisor.period, 5.0);
  CU_ASSERT_EQUAL(c->supervisor.backoff_min, 0.01);
  CU_ASSERT_EQUAL(c->supervisor.backoff_max, 1.0);
  CU_ASSERT_PTR_NULL(c->dead_letter);
  CU_ASSERT_EQUAL_FATAL(c->n_stages, 1);
  s = &c->stages[0];
  CU_ASSERT_STRING_EQUAL(s->name, "grep");
  CU_ASSERT_EQUAL(s->n_params, 0);
  CU_ASSERT_PTR_NULL(s->params);
  CU_ASSERT_EQUAL(s->opts.workers, 0);
  CU_ASSERT_STRING_EQUAL(s->opts.codec, "msgpack");
  CU_ASSERT_EQUAL(s->opts.transport, MPX_TRANSPORT_AUTO);
  CU_ASSERT_EQUAL(s->opts.retries, 2);
  CU_ASSERT_EQUAL(s->opts.timeout, 0.0);
  CU_ASSERT_FALSE(s->opts.ordered);
  CU_ASSERT_EQUAL(s->opts.batch, 0);
  CU_ASSERT_EQUAL(s->opts.set, 0);
  for (k = 0; k < MPX__CFG_NOPTS; k++) {
    CU_ASSERT_EQUAL(s->opts.at[k].line, 0);
    CU_ASSERT_EQUAL(s->opts.at[k].col, 0);
  }
  mpx__cfg_free(c);

  /* Empty sections are allowed; the name of a nameless source. */
  y = "defaults:\nsupervisor: ~\nstages:\n  - plugin: x\n    params:\n";
  CU_ASSERT_EQUAL_FATAL(mpx__cfg_parse_mem(&c, NULL, y, strlen(y)), 0);
  CU_ASSERT_STRING_EQUAL(c->file, "<config>");
  CU_ASSERT_STRING_EQUAL(c->name, "<config>");
  CU_ASSERT_EQUAL(c->stages[0].n_params, 0);
  mpx__cfg_free(c);
}

static void test_stage_names(void) {
  mpx__cfg_t *c = parse_ok("stages:\n"
                           "  - plugin: grep\n"
                           "  - plugin: lines\n"
                           "  - plugin: /opt/x/mpx_task_grep.so\n"
                           "  - plugin: ../libtop.k.so\n"
                           "  - plugin: grep\n"
                           "    name: mine\n"
                           "  - plugin: ./my plugin.so\n");
  if (c == NULL) return;
  CU_ASSERT_EQUAL_FATAL(c->n_stages, 6);
  CU_ASSERT_STRING_EQUAL(c->stages[0].name, "grep-1");
  CU_ASSERT_STRING_EQUAL(c->stages[1].name, "lines");
  CU_ASSERT_STRING_EQUAL(c->stages[2].name, "grep-2");
  CU_ASSERT_STRING_EQUAL(c->stages[3].name, "top");
  CU_ASSERT_STRING_EQUAL(c->stages[4].name, "mine");
  CU_ASSERT_STRING_EQUAL(c->stages[5].name, "my_plugin");
  mpx__cfg_free(c);

  expect_err("stages:\n"
             "  - plugin: grep\n"
             "  - plugin: lines\n"
             "    name: grep\n",
             E("p.yaml:4:11: two stages are named 'grep' (the other at "
               "2:5): give one a different 'name'"));
  expect_err("stages:\n  - plugin: ./.so\n",
             E("p.yaml:2:13: cannot make a stage name from plugin './.so': "
               "give the stage a 'name'"));
  expect_err("stages:\n  - plugin: pipeline\n",
             E("p.yaml:2:13: cannot make a stage name from plugin "
               "'pipeline': give the stage a 'name'"));
  expect_err("stages:\n  - plugin: x\n    name: pipeline\n",
             E("p.yaml:3:11: 'name' must be up to 64 letters, digits, '_' or "
               "'-', not only digits, not 'pipeline', got 'pipeline'"));
  expect_err("stages:\n  - plugin: x\n    name: \"12\"\n",
             E("p.yaml:3:11: 'name' must be up to 64 letters, digits, '_' or "
               "'-', not only digits, not 'pipeline', got '12'"));
  expect_err("stages:\n  - plugin: x\n    name: a.b\n",
             E("p.yaml:3:11: 'name' must be up to 64 letters, digits, '_' or "
               "'-', not only digits, not 'pipeline', got 'a.b'"));
}

static void test_syntax_errors(void) {
  expect_err("stages:\n  - plugin: grep\n  workers: 3\n",
             E("p.yaml:3:3: YAML syntax error: did not find expected '-' "
               "indicator (while parsing a block collection at 2:3)"));
  expect_err("stages:\n  - plugin: grep\n\tworkers: 2\n",
             E("p.yaml:3:1: YAML syntax error: found a tab character that "
               "violates indentation (while scanning a plain scalar at "
               "2:13)"));
  expect_err("stages: [{plugin: grep}\n",
             E("p.yaml:2:1: YAML syntax error: did not find expected ',' or "
               "']' (while parsing a flow sequence at 1:9)"));
  expect_err("name: \"unterminated\nstages: []\n",
             E("p.yaml:3:1: YAML syntax error: found unexpected end of "
               "stream (while scanning a quoted scalar at 1:7)"));
}

static void test_unknown_keys(void) {
  expect_err("stages:\n  - plugin: grep\n    wokers: 3\n",
             E("p.yaml:3:5: unknown key 'wokers' in stage 'grep' (expected "
               "one of: plugin, params, workers, codec, transport, retries, "
               "timeout, ordered, batch, name, inputs, partition_by, partitions)"));
  expect_err("stages:\n  - wokers: 3\n    name: g\n    plugin: grep\n",
             E("p.yaml:2:5: unknown key 'wokers' in stage 'g' (expected "
               "one of: plugin, params, workers, codec, transport, retries, "
               "timeout, ordered, batch, name, inputs, partition_by, partitions)"));
  expect_err("stages:\n  - wokers: 3\n",
             E("p.yaml:2:5: unknown key 'wokers' in stages[0] (expected "
               "one of: plugin, params, workers, codec, transport, retries, "
               "timeout, ordered, batch, name, inputs, partition_by, partitions)"));
  expect_err("stage:\n  - plugin: grep\n",
             E("p.yaml:1:1: unknown key 'stage' at the top level (expected "
               "one of: name, defaults, stages, queue_capacity, supervisor, "
               "dead_letter)"));
  expect_err("defaults: {wrk: 1}\nstages: [{plugin: grep}]\n",
             E("p.yaml:1:12: unknown key 'wrk' in defaults (expected one "
               "of: workers, codec, transport, retries, timeout, ordered, "
               "batch)"));
  expect_err("supervisor:\n  intensity: 3\nstages: [{plugin: grep}]\n",
             E("p.yaml:2:3: unknown key 'intensity' in supervisor (expected "
               "one of: restart, max_restarts, period, backoff_min, "
               "backoff_max)"));
  /* Stage-only keys are not defaults. */
  expect_err("defaults: {plugin: x}\nstages: [{plugin: grep}]\n",
             E("p.yaml:1:12: unknown key 'plugin' in defaults (expected one "
               "of: workers, codec, transport, retries, timeout, ordered, "
               "batch)"));
  /* Merge keys are plain unknown keys. */
  expect_err("stages:\n  - plugin: grep\n    <<: {workers: 2}\n",
             E("p.yaml:3:5: unknown key '<<' in stage 'grep' (expected one "
               "of: plugin, params, workers, codec, transport, retries, "
               "timeout, ordered, batch, name, inputs, partition_by, partitions)"));
}

static void test_duplicate_keys(void) {
  expect_err("stages:\n  - plugin: grep\n    workers: 3\n    workers: 4\n",
             E("p.yaml:4:5: duplicate key 'workers' (first at 3:5)"));
  expect_err("stages: [{plugin: a}]\nname: x\nname: y\n",
             E("p.yaml:3:1: duplicate key 'name' (first at 2:1)"));
  expect_err("stages:\n  - plugin: g\n    params: {a: 1, b: 2, a: 3}\n",
             E("p.yaml:3:26: duplicate key 'a' (first at 3:14)"));
  /* The same text, quoted or not, is the same key. */
  expect_err("stages: [{plugin: a}]\n'name': x\nname: y\n",
             E("p.yaml:3:1: duplicate key 'name' (first at 2:1)"));
}

static void test_type_errors(void) {
  static const struct {
    const char *opt, *msg;
  } cases[] = {
      {"workers: many", "3:14: 'workers' must be a positive integer or auto, "
                        "got 'many'"},
      {"workers: 0", "3:14: 'workers' must be a positive integer or auto, "
                     "got '0'"},
      {"workers: -2", "3:14: 'workers' must be a positive integer or auto, "
                      "got '-2'"},
      {"workers: 2.5", "3:14: 'workers' must be a positive integer or auto, "
                       "got '2.5'"},
      {"workers: 4097", "3:14: 'workers' must be at most 4096, got '4097'"},
      {"workers: 99999999999999999999999",
       "3:14: 'workers' must be at most 4096, got "
       "'99999999999999999999999'"},
      {"workers: [1]", "3:14: 'workers' must be a positive integer or auto, "
                       "got a list"},
      {"workers: {a: 1}", "3:14: 'workers' must be a positive integer or "
                          "auto, got a mapping"},
      {"workers:", "3:13: 'workers' must be a positive integer or auto, got "
                   "nothing"},
      {"workers: 012", "3:14: 'workers' must be a positive integer or auto, "
                       "got '012'"},
      {"workers: 0x10", "3:14: 'workers' must be a positive integer or auto, "
                        "got '0x10'"},
      {"retries: -1", "3:14: 'retries' must be an integer from 0 to 1000, got "
                      "'-1'"},
      {"retries: 1001", "3:14: 'retries' must be at most 1000, got '1001'"},
      {"timeout: -1", "3:14: 'timeout' must be a number of seconds, 0 or "
                      "more, got '-1'"},
      {"timeout: 5s", "3:14: 'timeout' must be a number of seconds, 0 or "
                      "more, got '5s'"},
      {"timeout: .inf", "3:14: 'timeout' must be a number of seconds, 0 or "
                        "more, got '.inf'"},
      {"timeout: nan", "3:14: 'timeout' must be a number of seconds, 0 or "
                       "more, got 'nan'"},
      {"timeout: 1e10", "3:14: 'timeout' must be at most 1e9 seconds, got "
                        "'1e10'"},
      {"ordered: maybe", "3:14: 'ordered' must be true or false, got "
                         "'maybe'"},
      {"ordered: y", "3:14: 'ordered' must be true or false, got 'y'"},
      {"batch: 0", "3:12: 'batch' must be a positive integer or auto, got "
                   "'0'"},
      {"batch: 1000001", "3:12: 'batch' must be at most 1000000, got "
                         "'1000001'"},
      {"transport: tcp", "3:16: 'transport' must be one of auto, pipe, uring, "
                         "got 'tcp'"},
      {"transport: PIPE", "3:16: 'transport' must be one of auto, pipe, "
                          "uring, got 'PIPE'"},
      {"codec: msg pack", "3:12: 'codec' must be a codec name (up to 64 "
                          "letters, digits, '_' or '-') or a path containing "
                          "'/', got 'msg pack'"},
      {"codec: ''", "3:12: 'codec' must be a codec name (up to 64 letters, "
                    "digits, '_' or '-') or a path containing '/', got ''"},
      {"plugin: Grep.so", "3:13: 'plugin' must be a plugin name (up to 64 "
                          "letters, digits, '_' or '-') or a path containing "
                          "'/', got 'Grep.so'"},
      {"params: [a]", "3:13: 'params' must be a mapping of parameter names to "
                      "values, got a list"},
      {"params: text", "3:13: 'params' must be a mapping of parameter names "
                       "to values, got 'text'"},
      {"params: {a: [1]}", "3:17: parameter 'a' must be a single value (text, "
                           "number or true/false), got a list"},
      {"params: {a: {b: 1}}", "3:17: parameter 'a' must be a single value "
                              "(text, number or true/false), got a mapping"},
      {"params: {a: ~}", "3:17: parameter 'a' has no value (write '' for an "
                         "empty text)"},
      {"params: {a b: 1}", "3:14: parameter name 'a b' must be up to 64 "
                           "letters, digits, '_' or '-'"},
  };
  char yaml[256], want[512];
  size_t i;
  for (i = 0; i < ARRAY_SIZE(cases); i++) {
    snprintf(yaml, sizeof yaml, "stages:\n  - name: s\n    %s\n    plugin: x\n",
             cases[i].opt);
    if (strncmp(cases[i].opt, "plugin:", 7) == 0)
      snprintf(yaml, sizeof yaml, "stages:\n  - name: s\n    %s\n",
               cases[i].opt);
    snprintf(want, sizeof want, "p.yaml:%s (configuration error)",
             cases[i].msg);
    expect_err(yaml, want);
  }
  expect_err("name: \"a\\tb\"\nstages: [{plugin: x}]\n",
             E("p.yaml:1:7: 'name' must be a text of 1 to 128 bytes without "
               "control characters, got 'a\\x09b'"));
  expect_err("name: [x]\nstages: [{plugin: x}]\n",
             E("p.yaml:1:7: 'name' must be a text of 1 to 128 bytes without "
               "control characters, got a list"));
  expect_err("queue_capacity: 0\nstages: [{plugin: x}]\n",
             E("p.yaml:1:17: 'queue_capacity' must be a positive integer, "
               "got '0'"));
  expect_err("queue_capacity: 16777217\nstages: [{plugin: x}]\n",
             E("p.yaml:1:17: 'queue_capacity' must be at most 16777216, got "
               "'16777217'"));
  expect_err("dead_letter:\nstages: [{plugin: x}]\n",
             E("p.yaml:1:13: 'dead_letter' must be a file path, got "
               "nothing"));
  expect_err("supervisor: {restart: always}\nstages: [{plugin: x}]\n",
             E("p.yaml:1:23: 'restart' must be one of permanent, transient, "
               "temporary, got 'always'"));
  expect_err("supervisor: {max_restarts: -1}\nstages: [{plugin: x}]\n",
             E("p.yaml:1:28: 'max_restarts' must be an integer from 0 to "
               "1000000, got '-1'"));
  expect_err("supervisor: {period: 0}\nstages: [{plugin: x}]\n",
             E("p.yaml:1:22: 'period' must be a number of seconds above 0, "
               "got '0'"));
  expect_err("supervisor: {backoff_min: 2, backoff_max: 1}\n"
             "stages: [{plugin: x}]\n",
             E("p.yaml:1:43: 'backoff_max' (1) must not be below "
               "'backoff_min' (2)"));
  expect_err("supervisor: {backoff_max: 1, backoff_min: 2}\n"
             "stages: [{plugin: x}]\n",
             E("p.yaml:1:43: 'backoff_max' (1) must not be below "
               "'backoff_min' (2)"));
  expect_err("supervisor: []\nstages: [{plugin: x}]\n",
             E("p.yaml:1:13: 'supervisor' must be a mapping of restart "
               "settings, got a list"));
  expect_err("defaults: 3\nstages: [{plugin: x}]\n",
             E("p.yaml:1:11: 'defaults' must be a mapping of stage options, "
               "got '3'"));
  expect_err("defaults: {workers: none}\nstages: [{plugin: x}]\n",
             E("p.yaml:1:21: 'workers' must be a positive integer or auto, "
               "got 'none'"));
  /* Long and odd text is escaped and cut short. */
  expect_err("stages:\n  - plugin: x\n    ordered: "
             "\"\\x01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
             E("p.yaml:3:14: 'ordered' must be true or false, got "
               "'\\x01aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'"));
}

static void test_accepted_scalars(void) {
  mpx__cfg_t *c = parse_ok("queue_capacity: 1_000_000\n"
                           "supervisor: {backoff_min: 2}\n"
                           "stages:\n"
                           "  - {plugin: a, workers: '+4', timeout: .5,"
                           " ordered: YES, batch: \"64\"}\n"
                           "  - {plugin: b, timeout: 1.5e1, ordered: Off,"
                           " retries: 0}\n"
                           "  - {plugin: c, timeout: '-0', ordered: 1}\n"
                           "  - {plugin: d, ordered: on, workers: 4096}\n");
  if (c == NULL) return;
  CU_ASSERT_EQUAL(c->queue_capacity, 1000000);
  /* backoff_max follows backoff_min up when not given. */
  CU_ASSERT_EQUAL(c->supervisor.backoff_min, 2.0);
  CU_ASSERT_EQUAL(c->supervisor.backoff_max, 2.0);
  CU_ASSERT_EQUAL(c->stages[0].opts.workers, 4);
  CU_ASSERT_EQUAL(c->stages[0].opts.timeout, 0.5);
  CU_ASSERT_TRUE(c->stages[0].opts.ordered);
  CU_ASSERT_EQUAL(c->stages[0].opts.batch, 64);
  CU_ASSERT_EQUAL(c->stages[1].opts.timeout, 15.0);
  CU_ASSERT_FALSE(c->stages[1].opts.ordered);
  CU_ASSERT_EQUAL(c->stages[1].opts.retries, 0);
  CU_ASSERT_EQUAL(c->stages[2].opts.timeout, 0.0);
  CU_ASSERT_FALSE(signbit(c->stages[2].opts.timeout));
  CU_ASSERT_TRUE(c->stages[2].opts.ordered);
  CU_ASSERT_TRUE(c->stages[3].opts.ordered);
  CU_ASSERT_EQUAL(c->stages[3].opts.workers, 4096);
  mpx__cfg_free(c);

  /* Params keep their text, whatever the YAML style. */
  c = parse_ok("stages:\n"
               "  - plugin: p\n"
               "    params:\n"
               "      plain: 0x1F\n"
               "      empty: ''\n"
               "      yes: yes\n"
               "      tilde: '~'\n"
               "      block: |\n"
               "        line 1\n"
               "        line 2\n"
               "      folded: >-\n"
               "        a\n"
               "        b\n"
               "      esc: \"tab\\there \\u00e9\"\n");
  if (c == NULL) return;
  CU_ASSERT_EQUAL_FATAL(c->stages[0].n_params, 7);
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[0].value, "0x1F");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[1].value, "");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[2].key, "yes");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[2].value, "yes");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[3].value, "~");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[4].value, "line 1\nline 2\n");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[5].value, "a b");
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[6].value, "tab\there \xc3\xa9");
  mpx__cfg_free(c);

  /* CRLF line ends and a UTF-8 BOM: positions as in an editor. */
  c = parse_ok("\xef\xbb\xbfstages:\r\n  - plugin: p\r\n    workers: 2\r\n");
  if (c == NULL) return;
  CU_ASSERT_EQUAL(c->stages[0].plugin_line, 2);
  CU_ASSERT_EQUAL(c->stages[0].plugin_col, 13);
  CU_ASSERT_EQUAL(c->stages[0].opts.at[MPX__CFG_WORKERS].line, 3);
  mpx__cfg_free(c);
  expect_err("stages:\r\n  - plugin: p\r\n    workers: x\r\n",
             E("p.yaml:3:14: 'workers' must be a positive integer or auto, "
               "got 'x'"));
}

static void test_structure_errors(void) {
  expect_err("name: x\n", E("p.yaml:1:1: missing key 'stages' at the top "
                            "level (expected a list of stages)"));
  expect_err("stages: []\n", E("p.yaml:1:9: 'stages' is empty: expected at "
                               "least one stage"));
  expect_err("stages:\n", E("p.yaml:1:8: 'stages' must be a list of stages, "
                            "got nothing"));
  expect_err("stages: {plugin: x}\n",
             E("p.yaml:1:9: 'stages' must be a list of stages, got a "
               "mapping"));
  expect_err("stages:\n  - grep\n",
             E("p.yaml:2:5: stages[0] must be a mapping with a 'plugin' key, "
               "got 'grep'"));
  expect_err("stages:\n  - plugin: a\n  - [b]\n",
             E("p.yaml:3:5: stages[1] must be a mapping with a 'plugin' key, "
               "got a list"));
  expect_err("stages:\n  - plugin: a\n  -\n",
             E("p.yaml:3:4: stages[1] must be a mapping with a 'plugin' key, "
               "got nothing"));
  expect_err("stages:\n  - workers: 3\n",
             E("p.yaml:2:5: missing key 'plugin' in stages[0] (expected the "
               "plugin to run: a name or a path)"));
  expect_err("stages:\n  - plugin:\n",
             E("p.yaml:2:12: 'plugin' must be a plugin name (up to 64 "
               "letters, digits, '_' or '-') or a path containing '/', got "
               "nothing"));
  expect_err("- plugin: x\n",
             E("p.yaml:1:1: expected a mapping with a 'stages' list at the "
               "top level, got a list"));
  expect_err("42\n", E("p.yaml:1:1: expected a mapping with a 'stages' list "
                       "at the top level, got '42'"));
  expect_err("stages:\n  - plugin: x\n    [a]: 1\n",
             E("p.yaml:3:5: a key must be a plain name, not a list"));
  expect_err("? {a: 1}\n: x\n",
             E("p.yaml:1:3: a key must be a plain name, not a mapping"));
}

static void test_anchors_tags_documents(void) {
  expect_err("a: &x 1\nstages: *x\n",
             E("p.yaml:1:4: anchors (&x) are not supported: write the value "
               "out"));
  expect_err("stages: *x\n",
             E("p.yaml:1:9: aliases (*x) are not supported: write the value "
               "out"));
  expect_err("stages:\n  - plugin: !!str grep\n",
             E("p.yaml:2:13: tags (tag:yaml.org,2002:str) are not supported: "
               "write a plain value"));
  expect_err("stages: !custom\n  - plugin: grep\n",
             E("p.yaml:1:9: tags (!custom) are not supported: write a plain "
               "value"));
  expect_err("stages:\n  - plugin: grep\n---\nstages: []\n",
             E("p.yaml:3:1: a second YAML document starts here: a pipeline "
               "file holds one document"));
  /* A billion laughs stops at its first anchor. */
  expect_err("a: &a [\"lol\",\"lol\"]\nb: &b [*a,*a]\nc: &c [*b,*b]\n",
             E("p.yaml:1:4: anchors (&a) are not supported: write the value "
               "out"));
  /* An explicit document and a %YAML directive are fine. */
  mpx__cfg_free(parse_ok("%YAML 1.1\n---\nstages: [{plugin: x}]\n...\n"));
}

static void test_limits(void) {
  char *y;
  size_t i, n;
  /* Nesting. */
  y = malloc(4096);
  strcpy(y, "stages: [{plugin: x, params: {a: ");
  for (i = 0; i < 20; i++) strcat(y, "[");
  expect_err(y, E("p.yaml:1:46: more than 16 nested lists and mappings"));
  /* Items of one list, keys of one mapping. */
  free(y);
  y = malloc(64 * 1024);
  strcpy(y, "stages: [");
  for (i = 0; i <= 1024; i++) strcat(y, "{plugin: x},");
  strcat(y, "]\n");
  expect_err(y, E("p.yaml:1:12298: more than 1024 items in one list"));
  strcpy(y, "stages: [{plugin: x}]\nbig: {");
  n = strlen(y);
  for (i = 0; i <= 1024; i++) n += (size_t)sprintf(y + n, "k%zu: 1, ", i);
  strcpy(y + n, "}\n");
  expect_err(y, E("p.yaml:2:9137: more than 1024 keys in one mapping"));
  free(y);
  /* Values in the file. */
  y = malloc(MPX__CFG_MAX_BYTES);
  strcpy(y, "x:\n");
  n = strlen(y);
  for (i = 0; i < 70; i++) {
    size_t j;
    n += (size_t)sprintf(y + n, "  - [");
    for (j = 0; j < 1000; j++) y[n++] = '1', y[n++] = ',';
    n += (size_t)sprintf(y + n, "]\n");
  }
  y[n] = '\0';
  expect_err(y, E("p.yaml:67:940: more than 65536 values in the file"));
  free(y);
  /* Size. */
  n = MPX__CFG_MAX_BYTES + 1;
  y = malloc(n);
  memset(y, '#', n);
  expect_err_len(y, n, E("p.yaml: 1048577 bytes: larger than 1048576 bytes "
                         "(1 MiB), the limit for a pipeline file"));
  free(y);
}

static char tmpdir[64];
static char tmp_paths[16][128];
static size_t n_tmp;

/* Writes a file in tmpdir; the path is valid until the test's end. */
static const char *tmp_file(const char *name, const void *data, size_t len) {
  char *path = tmp_paths[n_tmp++];
  FILE *f;
  snprintf(path, sizeof tmp_paths[0], "%s/%s", tmpdir, name);
  f = fopen(path, "wb");
  CU_ASSERT_PTR_NOT_NULL_FATAL(f);
  if (len > 0) CU_ASSERT_EQUAL(fwrite(data, 1, len, f), len);
  fclose(f);
  return path;
}

static void test_files(void) {
  mpx__cfg_t *c = (mpx__cfg_t *)&c;
  char want[512], *big;
  const char *p;
  strcpy(tmpdir, "/tmp/mpx-test-config-XXXXXX");
  CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));

  /* A file that does not exist, a directory. */
  snprintf(want, sizeof want, "%s/nope.yaml", tmpdir);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, want), MPX_ENOENT);
  CU_ASSERT_PTR_NULL(c);
  strcat(want, ": cannot open (no such file or directory)");
  check_msg(want);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, tmpdir), MPX_EISDIR);
  snprintf(want, sizeof want, "%s: cannot read (is a directory)", tmpdir);
  check_msg(want);

  /* A good one. */
  p = tmp_file("primes.yaml", full_yaml, strlen(full_yaml));
  CU_ASSERT_EQUAL_FATAL(mpx__cfg_parse_file(&c, p), 0);
  CU_ASSERT_STRING_EQUAL(c->file, p);
  CU_ASSERT_EQUAL(c->n_stages, 3);
  mpx__cfg_free(c);
  p = tmp_file("short.yaml", "stages: [{plugin: x}]", 21);
  CU_ASSERT_EQUAL_FATAL(mpx__cfg_parse_file(&c, p), 0);
  CU_ASSERT_STRING_EQUAL(c->name, "short");
  mpx__cfg_free(c);

  /* Empty, only a comment, only a document marker. */
  p = tmp_file("empty.yaml", "", 0);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, p), MPX_ECONFIG);
  snprintf(want, sizeof want, "%s:1:1: empty pipeline: expected a mapping "
           "with a 'stages' list (configuration error)", p);
  check_msg(want);
  p = tmp_file("comment.yaml", "# nothing yet\n\n", 15);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, p), MPX_ECONFIG);
  snprintf(want, sizeof want, "%s:1:1: empty pipeline: expected a mapping "
           "with a 'stages' list (configuration error)", p);
  check_msg(want);
  expect_err("---\n", E("p.yaml:1:1: empty pipeline: expected a mapping "
                        "with a 'stages' list"));

  /* Too large: refused before parsing. */
  big = malloc(MPX__CFG_MAX_BYTES + 10);
  memset(big, '\n', MPX__CFG_MAX_BYTES + 10);
  p = tmp_file("big.yaml", big, MPX__CFG_MAX_BYTES + 10);
  free(big);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, p), MPX_ECONFIG);
  snprintf(want, sizeof want, "%s: larger than 1048576 bytes (1 MiB), the "
           "limit for a pipeline file (configuration error)", p);
  check_msg(want);

  /* Not UTF-8. */
  p = tmp_file("latin1.yaml", "stages:\n  - plugin: gr\xe9p\n", 25);
  CU_ASSERT_EQUAL(mpx__cfg_parse_file(&c, p), MPX_ECONFIG);
  snprintf(want, sizeof want, "%s:2:15: invalid text: invalid trailing "
           "UTF-8 octet 0x70 (expected UTF-8 text without control "
           "characters) (configuration error)", p);
  check_msg(want);
  while (n_tmp > 0) CU_ASSERT_EQUAL(unlink(tmp_paths[--n_tmp]), 0);
  CU_ASSERT_EQUAL(rmdir(tmpdir), 0);
}

static void test_bad_text(void) {
  expect_err("stages:\n  - plugin: gr\xffp\n",
             E("p.yaml:2:15: invalid text: invalid leading UTF-8 octet 0xFF "
               "(expected UTF-8 text without control characters)"));
  expect_err("name: \xc3\xa9t\xc3\xa9 \xff\nstages: []\n",
             E("p.yaml:1:11: invalid text: invalid leading UTF-8 octet 0xFF "
               "(expected UTF-8 text without control characters)"));
  expect_err("stages:\n  - plugin: x\x01y\n",
             E("p.yaml:2:14: invalid text: control characters are not "
               "allowed 0x1 (expected UTF-8 text without control "
               "characters)"));
  expect_err_len("stages: [{plugin: x}]\n\0", 23,
                 E("p.yaml:2:1: invalid text: control characters are not "
                   "allowed 0x0 (expected UTF-8 text without control "
                   "characters)"));
  expect_err("stages:\n  - plugin: \xe2\x82\n",
             E("p.yaml:2:13: invalid text: invalid trailing UTF-8 octet 0xA "
               "(expected UTF-8 text without control characters)"));
  /* A file cut inside a character. */
  expect_err("stages:\n  - plugin: ab\xe2\x82",
             E("p.yaml:2:15: invalid text: incomplete UTF-8 octet sequence "
               "(expected UTF-8 text without control characters)"));
  /* UTF-16 is not read as such. */
  expect_err_len("\xff\xfes\0", 4,
                 E("p.yaml:1:1: invalid text: invalid leading UTF-8 octet "
                   "0xFF (expected UTF-8 text without control characters)"));
  /* Escapes can make a NUL; a value cannot hold one. */
  expect_err("stages:\n  - plugin: \"a\\0b\"\n",
             E("p.yaml:2:13: NUL characters are not allowed in values"));
}

static mpx__cfg_t *primes(void) {
  return parse_ok("defaults: {workers: 2}\n"
                  "stages:\n"
                  "  - plugin: range\n"
                  "    params: {stop: 100}\n"
                  "  - plugin: primes\n"
                  "    codec: raw\n"
                  "  - plugin: print\n"
                  "  - plugin: print\n");
}

static void test_set(void) {
  mpx__cfg_t *c = primes();
  const mpx__cfg_kv_t *kv;
  if (c == NULL) return;
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "range.stop=1000"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "range.params.step=3"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "0.start="), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "primes.workers=auto"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "1.timeout=0.5"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-2.params.format=a=b.c"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-1.plugin=./x/mpx_task_out.so"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.name=run 2"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.queue_capacity=8"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.dead_letter=dead.jsonl"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.supervisor.restart=temporary"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.supervisor.max_restarts=0"), 0);
  CU_ASSERT_EQUAL(c->n_sets, 12);

  kv = c->stages[0].params;
  CU_ASSERT_EQUAL_FATAL(c->stages[0].n_params, 3);
  CU_ASSERT_STRING_EQUAL(kv[0].key, "stop");
  CU_ASSERT_STRING_EQUAL(kv[0].value, "1000");
  CU_ASSERT_EQUAL(kv[0].line, 0); /* from --set number 1 */
  CU_ASSERT_EQUAL(kv[0].col, 1);
  CU_ASSERT_EQUAL(kv[0].key_line, 4); /* the key is still the file's */
  CU_ASSERT_STRING_EQUAL(kv[1].key, "step");
  CU_ASSERT_STRING_EQUAL(kv[1].value, "3");
  CU_ASSERT_EQUAL(kv[1].key_col, 2);
  CU_ASSERT_STRING_EQUAL(kv[2].key, "start");
  CU_ASSERT_STRING_EQUAL(kv[2].value, "");
  CU_ASSERT_EQUAL(c->stages[1].opts.workers, 0);
  CU_ASSERT_EQUAL(c->stages[1].opts.timeout, 0.5);
  CU_ASSERT_EQUAL(c->stages[1].opts.at[MPX__CFG_TIMEOUT].line, 0);
  CU_ASSERT_EQUAL(c->stages[1].opts.at[MPX__CFG_TIMEOUT].col, 5);
  CU_ASSERT_STRING_EQUAL(c->stages[3].params[0].value, "a=b.c");
  CU_ASSERT_STRING_EQUAL(c->stages[2].plugin, "./x/mpx_task_out.so");
  CU_ASSERT_STRING_EQUAL(c->stages[2].name, "print-1"); /* names stay */
  CU_ASSERT_EQUAL(c->stages[2].plugin_line, 0);
  CU_ASSERT_EQUAL(c->stages[2].plugin_col, 7);
  CU_ASSERT_STRING_EQUAL(c->name, "run 2");
  CU_ASSERT_EQUAL(c->queue_capacity, 8);
  CU_ASSERT_STRING_EQUAL(c->dead_letter, "dead.jsonl");
  CU_ASSERT_EQUAL(c->dead_letter_at.col, 10);
  CU_ASSERT_EQUAL(c->supervisor.restart, MPX_RESTART_TEMPORARY);
  CU_ASSERT_EQUAL(c->supervisor.max_restarts, 0);

  /* A default reaches the stages that do not set the option. */
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.defaults.codec=json"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.defaults.workers=3"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-2.workers=1"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.defaults.workers=5"), 0);
  CU_ASSERT_STRING_EQUAL(c->stages[0].opts.codec, "json");
  CU_ASSERT_EQUAL(c->stages[0].opts.at[MPX__CFG_CODEC].col, 13);
  CU_ASSERT_STRING_EQUAL(c->stages[1].opts.codec, "raw");
  CU_ASSERT_EQUAL(c->stages[0].opts.workers, 5);
  CU_ASSERT_EQUAL(c->stages[1].opts.workers, 0); /* set above */
  CU_ASSERT_EQUAL(c->stages[2].opts.workers, 5);
  CU_ASSERT_EQUAL(c->stages[3].opts.workers, 1);
  CU_ASSERT_EQUAL(c->defaults.workers, 5);

  /* Backoff: max follows min up unless it was given. */
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.supervisor.backoff_min=3"), 0);
  CU_ASSERT_EQUAL(c->supervisor.backoff_max, 3.0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "pipeline.supervisor.backoff_max=4"), 0);
  expect_set_err(c, "pipeline.supervisor.backoff_min=5",
                 E("--set pipeline.supervisor.backoff_min=5: 'backoff_max' "
                   "(4) must not be below 'backoff_min' (5)"));
  CU_ASSERT_EQUAL(c->supervisor.backoff_min, 3.0);
  mpx__cfg_free(c);
}

static void test_set_errors(void) {
  mpx__cfg_t *c = primes();
  if (c == NULL) return;
  expect_set_err(c, "range.workers",
                 E("--set range.workers: expected STAGE.KEY=VALUE or "
                   "pipeline.KEY=VALUE"));
  expect_set_err(c, "workers=3", E("--set workers=3: expected "
                                   "STAGE.KEY=VALUE or pipeline.KEY=VALUE"));
  expect_set_err(c, "=3", E("--set =3: expected STAGE.KEY=VALUE or "
                            "pipeline.KEY=VALUE"));
  expect_set_err(c, ".workers=3", E("--set .workers=3: expected "
                                    "STAGE.KEY=VALUE or pipeline.KEY=VALUE"));
  expect_set_err(c, "range.=3", E("--set range.=3: expected STAGE.KEY=VALUE "
                                  "or pipeline.KEY=VALUE"));
  expect_set_err(c, "grep.workers=3",
                 E("--set grep.workers=3: no stage named 'grep' (the stages: "
                   "range, primes, print-1, print-2)"));
  expect_set_err(c, "4.workers=3",
                 E("--set 4.workers=3: no stage 4 (stages are numbered from 0 "
                   "to 3)"));
  expect_set_err(c, "99999999999999999999999.workers=3",
                 E("--set 99999999999999999999999.workers=3: no stage "
                   "99999999999999999999999 (stages are numbered from 0 to "
                   "3)"));
  expect_set_err(c, "range.workers=many",
                 E("--set range.workers=many: 'workers' must be a positive "
                   "integer or auto, got 'many'"));
  expect_set_err(c, "range.ordered=",
                 E("--set range.ordered=: 'ordered' must be true or false, "
                   "got ''"));
  expect_set_err(c, "range.name=r", E("--set range.name=r: a stage's name "
                                      "cannot be changed with --set"));
  expect_set_err(c, "range.plugin=a b",
                 E("--set range.plugin=a b: 'plugin' must be a plugin name "
                   "(up to 64 letters, digits, '_' or '-') or a path "
                   "containing '/', got 'a b'"));
  expect_set_err(c, "range.params=1",
                 E("--set range.params=1: expected params.NAME=VALUE"));
  expect_set_err(c, "range.a.b=1",
                 E("--set range.a.b=1: unknown key 'a.b' for stage 'range' "
                   "(expected a stage option, plugin, inputs, partition_by, "
                   "partitions, params.NAME or a parameter name: up to 64 "
                   "letters, digits, '_' or '-')"));
  expect_set_err(c, "range.params.=1",
                 E("--set range.params.=1: unknown key '' for stage 'range' "
                   "(expected a stage option, plugin, inputs, partition_by, "
                   "partitions, params.NAME or a parameter name: up to 64 "
                   "letters, digits, '_' or '-')"));
  expect_set_err(c, "pipeline.workers=2",
                 E("--set pipeline.workers=2: unknown key 'workers' (expected "
                   "pipeline.name, pipeline.queue_capacity, "
                   "pipeline.dead_letter, pipeline.defaults.OPTION or "
                   "pipeline.supervisor.KEY)"));
  expect_set_err(c, "pipeline.defaults.wrk=2",
                 E("--set pipeline.defaults.wrk=2: unknown key 'wrk' in "
                   "defaults (expected one of: workers, codec, transport, "
                   "retries, timeout, ordered, batch)"));
  expect_set_err(c, "pipeline.defaults.codec=a b",
                 E("--set pipeline.defaults.codec=a b: 'codec' must be a "
                   "codec name (up to 64 letters, digits, '_' or '-') or a "
                   "path containing '/', got 'a b'"));
  expect_set_err(c, "pipeline.supervisor.x=2",
                 E("--set pipeline.supervisor.x=2: unknown key 'x' in "
                   "supervisor (expected one of: restart, max_restarts, "
                   "period, backoff_min, backoff_max)"));
  expect_set_err(c, "pipeline.supervisor.period=-1",
                 E("--set pipeline.supervisor.period=-1: 'period' must be a "
                   "number of seconds above 0, got '-1'"));
  expect_set_err(c, "pipeline.stages=[]",
                 E("--set pipeline.stages=[]: the stage list cannot be "
                   "changed with --set (set STAGE.KEY=VALUE)"));
  expect_set_err(c, "pipeline.name=",
                 E("--set pipeline.name=: 'name' must be a text of 1 to 128 "
                   "bytes without control characters, got ''"));
  expect_set_err(c, "pipeline.queue_capacity=0",
                 E("--set pipeline.queue_capacity=0: 'queue_capacity' must be "
                   "a positive integer, got '0'"));
  expect_set_err(c, "pipeline.dead_letter=",
                 E("--set pipeline.dead_letter=: 'dead_letter' must be a file "
                   "path, got ''"));
  /* Nothing changed. */
  CU_ASSERT_EQUAL(c->n_sets, 0);
  CU_ASSERT_EQUAL(c->stages[0].opts.workers, 2);
  CU_ASSERT_STRING_EQUAL(c->stages[0].opts.codec, "msgpack");
  CU_ASSERT_EQUAL(c->stages[0].n_params, 1);
  CU_ASSERT_STRING_EQUAL(c->name, "p");
  mpx__cfg_free(c);
}

/* The graph keys of a stage: inputs (a list or one entry, with each
 * entry's position), partition_by and partitions. */
static void test_graph_keys(void) {
  mpx__cfg_t *c = parse_ok("stages:\n"
                           "  - plugin: lines\n"
                           "  - plugin: grep\n"
                           "    inputs: [lines, lines.out]\n"
                           "  - plugin: wordcount\n"
                           "    inputs:\n"
                           "      - grep.unmatched\n"
                           "      - x-1\n"
                           "    partition_by: key\n"
                           "    partitions: 16\n"
                           "  - plugin: print\n"
                           "    partition_by: 'key'\n"
                           "    inputs: wordcount\n");
  const mpx__cfg_stage_t *s;
  if (c == NULL) return;
  CU_ASSERT_EQUAL_FATAL(c->n_stages, 4);
  s = &c->stages[0];
  CU_ASSERT_FALSE(s->inputs_given);
  CU_ASSERT_EQUAL(s->n_inputs, 0);
  CU_ASSERT_PTR_NULL(s->inputs);
  CU_ASSERT_FALSE(s->partitioned);
  CU_ASSERT_EQUAL(s->partitions, 0);
  s = &c->stages[1];
  CU_ASSERT_TRUE(s->inputs_given);
  CU_ASSERT_EQUAL_FATAL(s->n_inputs, 2);
  CU_ASSERT_STRING_EQUAL(s->inputs[0], "lines");
  CU_ASSERT_STRING_EQUAL(s->inputs[1], "lines.out");
  CU_ASSERT_EQUAL(s->inputs_key_at.line, 4);
  CU_ASSERT_EQUAL(s->inputs_key_at.col, 5);
  CU_ASSERT_EQUAL(s->inputs_at[0].line, 4);
  CU_ASSERT_EQUAL(s->inputs_at[0].col, 14);
  CU_ASSERT_EQUAL(s->inputs_at[1].line, 4);
  CU_ASSERT_EQUAL(s->inputs_at[1].col, 21);
  CU_ASSERT_FALSE(s->partitioned);
  s = &c->stages[2];
  CU_ASSERT_EQUAL_FATAL(s->n_inputs, 2);
  CU_ASSERT_STRING_EQUAL(s->inputs[0], "grep.unmatched");
  CU_ASSERT_STRING_EQUAL(s->inputs[1], "x-1");
  CU_ASSERT_EQUAL(s->inputs_key_at.line, 6);
  CU_ASSERT_EQUAL(s->inputs_at[0].line, 7);
  CU_ASSERT_EQUAL(s->inputs_at[0].col, 9);
  CU_ASSERT_EQUAL(s->inputs_at[1].line, 8);
  CU_ASSERT_TRUE(s->partitioned);
  CU_ASSERT_EQUAL(s->partition_at.line, 9);
  CU_ASSERT_EQUAL(s->partition_at.col, 19);
  CU_ASSERT_EQUAL(s->partitions, 16);
  CU_ASSERT_EQUAL(s->partitions_at.line, 10);
  CU_ASSERT_EQUAL(s->partitions_at.col, 17);
  s = &c->stages[3];
  CU_ASSERT_EQUAL_FATAL(s->n_inputs, 1);
  CU_ASSERT_STRING_EQUAL(s->inputs[0], "wordcount");
  CU_ASSERT_EQUAL(s->inputs_at[0].line, 13);
  CU_ASSERT_EQUAL(s->inputs_at[0].col, 13);
  CU_ASSERT_TRUE(s->partitioned);
  CU_ASSERT_EQUAL(s->partitions, 0); /* the stage's workers */
  mpx__cfg_free(c);
}

static void test_graph_key_errors(void) {
  expect_err("stages:\n  - plugin: grep\n    inputs: []\n",
             E("p.yaml:3:13: 'inputs' is empty: expected at least one input "
               "(STAGE or STAGE.PORT)"));
  expect_err("stages:\n  - plugin: grep\n    inputs:\n",
             E("p.yaml:3:12: 'inputs' must be a list of STAGE or STAGE.PORT "
               "(names of letters, digits, '_' or '-'), got nothing"));
  expect_err("stages:\n  - plugin: grep\n    inputs: {a: b}\n",
             E("p.yaml:3:13: 'inputs' must be a list of STAGE or STAGE.PORT "
               "(names of letters, digits, '_' or '-'), got a mapping"));
  expect_err("stages:\n  - plugin: grep\n    inputs: [a, [b]]\n",
             E("p.yaml:3:17: an input must be STAGE or STAGE.PORT (names of "
               "letters, digits, '_' or '-'), got a list"));
  expect_err("stages:\n  - plugin: grep\n    inputs: [a, ~]\n",
             E("p.yaml:3:17: an input must be STAGE or STAGE.PORT (names of "
               "letters, digits, '_' or '-'), got nothing"));
  static const char *const bad[] = {"a.b.c", ".out", "a.", "a b", "12",
                                    "pipeline", "a/b", "a.p q"};
  for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
    char yaml[128], want[256];
    snprintf(yaml, sizeof yaml, "stages:\n  - plugin: grep\n    inputs: ['%s']\n",
             bad[i]);
    snprintf(want, sizeof want,
             E("p.yaml:3:14: an input must be STAGE or STAGE.PORT (names of "
               "letters, digits, '_' or '-'), got '%s'"), bad[i]);
    expect_err(yaml, want);
  }
  expect_err("stages:\n  - plugin: grep\n    partition_by: hash\n",
             E("p.yaml:3:19: 'partition_by' must be key (the only way to "
               "partition: by the key each item was emitted with), got "
               "'hash'"));
  expect_err("stages:\n  - plugin: grep\n    partition_by: [key]\n",
             E("p.yaml:3:19: 'partition_by' must be key (the only way to "
               "partition: by the key each item was emitted with), got "
               "a list"));
  expect_err("stages:\n  - plugin: grep\n    partition_by: key\n    partitions: 0\n",
             E("p.yaml:4:17: 'partitions' must be an integer from 1 to "
               "4096, got '0'"));
  expect_err("stages:\n  - plugin: grep\n    partition_by: key\n    partitions: 4097\n",
             E("p.yaml:4:17: 'partitions' must be at most 4096, got '4097'"));
  expect_err("stages:\n  - plugin: grep\n    partition_by: key\n    partitions: auto\n",
             E("p.yaml:4:17: 'partitions' must be an integer from 1 to "
               "4096, got 'auto'"));
  /* partitions without partition_by, before or after the other keys. */
  expect_err("stages:\n  - plugin: grep\n    partitions: 4\n    workers: 2\n",
             E("p.yaml:3:17: 'partitions' is only for a stage with "
               "'partition_by: key'"));
  /* The graph keys belong to a stage, not to the defaults. */
  expect_err("defaults: {inputs: [a]}\nstages: [{plugin: grep}]\n",
             E("p.yaml:1:12: unknown key 'inputs' in defaults (expected one "
               "of: workers, codec, transport, retries, timeout, ordered, "
               "batch)"));
  expect_err("defaults: {partition_by: key}\nstages: [{plugin: grep}]\n",
             E("p.yaml:1:12: unknown key 'partition_by' in defaults (expected "
               "one of: workers, codec, transport, retries, timeout, ordered, "
               "batch)"));
}

static void test_set_graph(void) {
  mpx__cfg_t *c = primes();
  const mpx__cfg_stage_t *s;
  if (c == NULL) return;
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-2.inputs=primes, range.out,print-1"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "1.partition_by=key"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "primes.partitions=3"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-1.inputs=range"), 0);
  s = &c->stages[3];
  CU_ASSERT_TRUE(s->inputs_given);
  CU_ASSERT_EQUAL_FATAL(s->n_inputs, 3);
  CU_ASSERT_STRING_EQUAL(s->inputs[0], "primes");
  CU_ASSERT_STRING_EQUAL(s->inputs[1], "range.out");
  CU_ASSERT_STRING_EQUAL(s->inputs[2], "print-1");
  for (size_t i = 0; i < 3; i++) {
    CU_ASSERT_EQUAL(s->inputs_at[i].line, 0);
    CU_ASSERT_EQUAL(s->inputs_at[i].col, 1);
  }
  CU_ASSERT_EQUAL(s->inputs_key_at.col, 1);
  s = &c->stages[1];
  CU_ASSERT_TRUE(s->partitioned);
  CU_ASSERT_EQUAL(s->partition_at.line, 0);
  CU_ASSERT_EQUAL(s->partition_at.col, 2);
  CU_ASSERT_EQUAL(s->partitions, 3);
  CU_ASSERT_EQUAL(s->partitions_at.col, 3);
  s = &c->stages[2];
  CU_ASSERT_EQUAL_FATAL(s->n_inputs, 1);
  CU_ASSERT_STRING_EQUAL(s->inputs[0], "range");
  CU_ASSERT_EQUAL(s->inputs_at[0].col, 4);
  /* A later --set replaces the list. */
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "print-2.inputs=range"), 0);
  CU_ASSERT_EQUAL(c->stages[3].n_inputs, 1);
  CU_ASSERT_EQUAL(c->stages[3].inputs_at[0].col, 5);
  /* A param of that name is still a param. */
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "range.params.inputs=x"), 0);
  CU_ASSERT_STRING_EQUAL(c->stages[0].params[1].key, "inputs");
  CU_ASSERT_FALSE(c->stages[0].inputs_given);

  expect_set_err(c, "range.inputs=",
                 E("--set range.inputs=: 'inputs' is empty: expected at least one "
                   "input (STAGE or STAGE.PORT)"));
  expect_set_err(c, "range.inputs=a,,b",
                 E("--set range.inputs=a,,b: an input must be STAGE or "
                   "STAGE.PORT (names of letters, digits, '_' or '-'), got "
                   "''"));
  expect_set_err(c, "range.inputs=a, ",
                 E("--set range.inputs=a, : an input must be STAGE or "
                   "STAGE.PORT (names of letters, digits, '_' or '-'), got "
                   "''"));
  expect_set_err(c, "range.inputs=a,b.c.d",
                 E("--set range.inputs=a,b.c.d: an input must be STAGE or "
                   "STAGE.PORT (names of letters, digits, '_' or '-'), got "
                   "'b.c.d'"));
  expect_set_err(c, "range.partition_by=value",
                 E("--set range.partition_by=value: 'partition_by' must be key "
                   "(the only way to partition: by the key each item was "
                   "emitted with), got 'value'"));
  expect_set_err(c, "range.partitions=2",
                 E("--set range.partitions=2: 'partitions' is only for a stage "
                   "with 'partition_by: key' (set STAGE.partition_by=key "
                   "first)"));
  expect_set_err(c, "primes.partitions=0",
                 E("--set primes.partitions=0: 'partitions' must be an integer "
                   "from 1 to 4096, got '0'"));
  CU_ASSERT_FALSE(c->stages[0].inputs_given);
  CU_ASSERT_FALSE(c->stages[0].partitioned);
  CU_ASSERT_EQUAL(c->stages[1].partitions, 3);
  mpx__cfg_free(c);
}

static void test_error_at(void) {
  mpx__cfg_t *c = primes();
  if (c == NULL) return;
  CU_ASSERT_EQUAL(mpx__cfg_set(c, "range.stop=ten"), 0);
  CU_ASSERT_EQUAL(mpx__cfg_error_at(c, 4, 21, "parameter '%s' must be an "
                                    "integer", "stop"), MPX_ECONFIG);
  check_msg(E("p.yaml:4:21: parameter 'stop' must be an integer"));
  CU_ASSERT_EQUAL(mpx__cfg_error_at(c, c->stages[0].params[0].line,
                                    c->stages[0].params[0].col, "bad"),
                  MPX_ECONFIG);
  check_msg(E("--set range.stop=ten: bad"));
  CU_ASSERT_EQUAL(mpx__cfg_error_at(c, 0, 0, "no position"), MPX_ECONFIG);
  check_msg(E("p.yaml: no position"));
  CU_ASSERT_EQUAL(mpx__cfg_error_at(c, 0, 9, "unknown override"), MPX_ECONFIG);
  check_msg(E("p.yaml: unknown override"));
  /* A message taken from mpx_last_error() keeps one suffix. */
  mpx__cfg_error_at(c, 0, 0, "plugin 'range': missing required parameter");
  CU_ASSERT_EQUAL(mpx__cfg_error_at(c, 3, 5, "%s", mpx_last_error()),
                  MPX_ECONFIG);
  check_msg(E("p.yaml:3:5: p.yaml: plugin 'range': missing required "
              "parameter"));
  mpx__cfg_free(c);
}

static void test_names_of_enums(void) {
  CU_ASSERT_STRING_EQUAL(mpx__cfg_transport_name(MPX_TRANSPORT_AUTO), "auto");
  CU_ASSERT_STRING_EQUAL(mpx__cfg_transport_name(MPX_TRANSPORT_PIPE), "pipe");
  CU_ASSERT_STRING_EQUAL(mpx__cfg_transport_name(MPX_TRANSPORT_URING),
                         "uring");
  CU_ASSERT_STRING_EQUAL(mpx__cfg_restart_name(MPX_RESTART_PERMANENT),
                         "permanent");
  CU_ASSERT_STRING_EQUAL(mpx__cfg_restart_name(MPX_RESTART_TRANSIENT),
                         "transient");
  CU_ASSERT_STRING_EQUAL(mpx__cfg_restart_name(MPX_RESTART_TEMPORARY),
                         "temporary");
  mpx__cfg_free(NULL);
}

MPX_TEST_MAIN("config", MPX_TEST(test_full), MPX_TEST(test_defaults),
              MPX_TEST(test_stage_names), MPX_TEST(test_syntax_errors),
              MPX_TEST(test_unknown_keys), MPX_TEST(test_duplicate_keys),
              MPX_TEST(test_type_errors), MPX_TEST(test_accepted_scalars),
              MPX_TEST(test_structure_errors),
              MPX_TEST(test_anchors_tags_documents), MPX_TEST(test_limits),
              MPX_TEST(test_files), MPX_TEST(test_bad_text),
              MPX_TEST(test_set), MPX_TEST(test_set_errors),
              MPX_TEST(test_error_at), MPX_TEST(test_names_of_enums),
              MPX_TEST(test_graph_keys), MPX_TEST(test_graph_key_errors),
              MPX_TEST(test_set_graph))
