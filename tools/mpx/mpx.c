/* The `mpx` command: run and check pipelines, list plugins.
 *
 *   mpx run FILE [--set STAGE.KEY=VALUE]... [--progress=auto|always|never]
 *                [--stats-json FILE|-] [--no-summary]
 *   mpx check FILE [--set ...] [--graph[=FILE]]
 *   mpx plugins [NAME]
 *
 * run, check and plugins read their options with getopt_long: `--opt=V`
 * and `--opt V` alike, in any order around the file, `--` to end them.
 *   mpx manager serve|call ...   (manager_serve.c, manager_call.c)
 *   mpx version
 *
 * Exit codes: 0 all done, 1 some items dead-lettered, 2 usage or
 * configuration error, 3 runtime failure. mpx prints no colour, so
 * NO_COLOR holds whatever its value. */
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mpx.h>

#include "manager_cli.h"

enum { EXIT_DONE = 0, EXIT_DEAD = 1, EXIT_USAGE = 2, EXIT_RUNTIME = 3 };

static const char *prog = "mpx";

static void usage(FILE *f) {
  fprintf(f,
          "usage: mpx <command> [options]\n"
          "\n"
          "commands:\n"
          "  run FILE      run a pipeline (docs/config.md)\n"
          "  check FILE    validate a pipeline: the file, its plugins and params,\n"
          "                and each stage's init once in a child (sinks excepted);\n"
          "                --graph prints its graph as Graphviz DOT\n"
          "  plugins [NAME]  list the task plugins and codecs found, or describe one\n"
          "  manager serve   serve shared objects to mpx and Python clients\n"
          "  manager call    call a method on a manager's object (put, get, ...)\n"
          "  version       print the version\n"
          "\n"
          "`mpx <command> --help` for a command's options.\n"
          "exit codes: 0 done, 1 items dead-lettered, 2 usage or config error,\n"
          "3 runtime failure\n");
}

static void usage_run(FILE *f, const char *cmd) {
  fprintf(f,
          "usage: mpx %s FILE [options]\n"
          "\n"
          "  --set STAGE.KEY=VALUE   override a stage option or param (repeatable);\n"
          "                          pipeline.KEY=VALUE for a top-level key\n",
          cmd);
  if (strcmp(cmd, "run") == 0)
    fprintf(f,
            "  --progress WHEN         auto (on a terminal, the default), always, never\n"
            "  --stats-json FILE       write the per-stage figures as JSON (-: stdout)\n"
            "  --no-summary            no table at the end (dead letters still get a line)\n");
  else
    fprintf(f,
            "  --graph[=FILE]          once the file checks, write its graph as Graphviz\n"
            "                          DOT to FILE (default: stdout, `dot -Tsvg` draws it)\n");
  fprintf(f, "\n--opt=VALUE and --opt VALUE are the same%s.\n",
          strcmp(cmd, "run") == 0 ? "" : " (but --graph takes only --graph=FILE)");
}

static int config_error(int rc) {
  return rc == MPX_ECONFIG || rc == MPX_ENOENT || rc == MPX_EPLUGIN ||
         rc == MPX_ENOSYM || rc == MPX_EABI || rc == MPX_EINVAL ||
         rc == MPX_EACCES || rc == MPX_EISDIR;
}

/* getopt_long over argv[0..argc) (argv[0] is the command's name), so
 * every option takes both `--opt=V` and `--opt V`, options and the file
 * come in any order, and `--` ends the options. Reports its own errors
 * (opterr off): the option getopt stopped at, and why. */
enum { OPT_SET = 256, OPT_PROGRESS, OPT_STATS_JSON, OPT_NO_SUMMARY, OPT_GRAPH };

static const struct option run_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"set", required_argument, NULL, OPT_SET},
    {"progress", required_argument, NULL, OPT_PROGRESS},
    {"stats-json", required_argument, NULL, OPT_STATS_JSON},
    {"no-summary", no_argument, NULL, OPT_NO_SUMMARY},
    {NULL, 0, NULL, 0}};

/* check takes --help and --set, run's first two, and --graph: its value
 * is optional, so only `--graph=FILE` gives one (`--graph FILE` would
 * take FILE for the pipeline). */
static const struct option check_opts[] = {
    {"help", no_argument, NULL, 'h'},
    {"set", required_argument, NULL, OPT_SET},
    {"graph", optional_argument, NULL, OPT_GRAPH},
    {NULL, 0, NULL, 0}};

static const struct option help_opts[] = {{"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};

/* The message for what getopt_long refused ('?' or ':'): argv[optind - 1]
 * is the argument it stopped at (a missing value: the option itself). */
static void opt_error(const char *cmd, int c, int argc, char **argv,
                      const struct option *known) {
  const char *a = optind - 1 < argc ? argv[optind - 1] : "";
  if (c == ':') {
    fprintf(stderr, "%s %s: option '%s' needs a value\n", prog, cmd, a);
    return;
  }
  /* `--no-summary=yes`: a known option that takes no value. */
  size_t n = strcspn(a, "=");
  for (const struct option *o = known; a[0] == '-' && a[1] == '-' && o->name; o++)
    if (a[n] == '=' && o->has_arg == no_argument && strlen(o->name) == n - 2 &&
        strncmp(o->name, a + 2, n - 2) == 0) {
      fprintf(stderr, "%s %s: option '%.*s' takes no value\n", prog, cmd, (int)n, a);
      return;
    }
  if (a[0] == '-' && a[1] != '-' && optopt)
    fprintf(stderr, "%s %s: unknown option '-%c'\n", prog, cmd, optopt);
  else
    fprintf(stderr, "%s %s: unknown option '%s'\n", prog, cmd, a);
}

static int parse_progress(const char *cmd, const char *w, mpx_progress_t *p) {
  if (strcmp(w, "auto") == 0) *p = MPX_PROGRESS_AUTO;
  else if (strcmp(w, "always") == 0) *p = MPX_PROGRESS_ALWAYS;
  else if (strcmp(w, "never") == 0) *p = MPX_PROGRESS_NEVER;
  else {
    fprintf(stderr, "%s %s: --progress must be auto, always or never, not '%s'\n", prog,
            cmd, w);
    return EXIT_USAGE;
  }
  return 0;
}

/* Reads run's or check's arguments into o and sets: 0, or the exit code
 * (-1 for --help, done). */
static int parse_run(int argc, char **argv, bool check, mpx_pipeline_opts_t *o,
                     const char **sets, size_t *n_sets) {
  const char *cmd = check ? "check" : "run";
  const struct option *known = check ? check_opts : run_opts;
  int c;
  optind = 0; /* a fresh scan (GNU: 0 also resets its state) */
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", known, NULL)) != -1) {
    switch (c) {
    case 'h': usage_run(stdout, cmd); return -1;
    case OPT_SET: sets[(*n_sets)++] = optarg; break;
    case OPT_PROGRESS:
      if (parse_progress(cmd, optarg, &o->progress) != 0) return EXIT_USAGE;
      break;
    case OPT_STATS_JSON: o->stats_json = optarg; break;
    case OPT_NO_SUMMARY: o->summary = false; break;
    case OPT_GRAPH: o->graph_dot = optarg && *optarg ? optarg : "-"; break;
    default:
      opt_error(cmd, c, argc, argv, known);
      usage_run(stderr, cmd);
      return EXIT_USAGE;
    }
  }
  for (int i = optind; i < argc; i++) {
    if (o->file != NULL) {
      fprintf(stderr, "%s %s: one pipeline file only ('%s' and '%s')\n", prog, cmd, o->file,
              argv[i]);
      return EXIT_USAGE;
    }
    o->file = argv[i];
  }
  if (o->file == NULL) {
    usage_run(stderr, cmd);
    return EXIT_USAGE;
  }
  return 0;
}

/* After a run without the summary table: the one thing it must not hide,
 * items that failed, with where they went. */
static void report_dead(const char *cmd, const mpx_pipeline_stats_t *st) {
  unsigned long long n = (unsigned long long)st->dead_lettered;
  if (n == 0) return;
  if (st->dead_letter[0])
    fprintf(stderr, "%s %s: %llu item%s dead-lettered, see %s\n", prog, cmd, n,
            n == 1 ? "" : "s", st->dead_letter);
  else
    fprintf(stderr, "%s %s: %llu item%s dead-lettered (no dead_letter file)\n", prog, cmd, n,
            n == 1 ? "" : "s");
}

/* argv[0] is the command's name. */
static int cmd_run(int argc, char **argv, bool check) {
  const char *cmd = check ? "check" : "run";
  mpx_pipeline_opts_t o = {.summary = !check};
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  size_t n_sets = 0;
  if (sets == NULL) {
    fprintf(stderr, "%s %s: out of memory\n", prog, cmd);
    return EXIT_RUNTIME;
  }
  int rc = parse_run(argc, argv, check, &o, sets, &n_sets);
  if (rc != 0) {
    free(sets);
    return rc < 0 ? EXIT_DONE : rc;
  }
  o.sets = sets;
  o.n_sets = n_sets;
  o.check_only = check;
  mpx_pipeline_stats_t st;
  rc = mpx_pipeline_run(&o, &st);
  free(sets);
  if (rc != 0) {
    fprintf(stderr, "%s %s: %s\n", prog, cmd, mpx_last_error());
    if (rc == MPX_EINTR) return EXIT_RUNTIME;
    return config_error(rc) ? EXIT_USAGE : EXIT_RUNTIME;
  }
  if (check) {
    /* The DOT on stdout stays alone there, for `| dot -Tsvg`. */
    bool dot_out = o.graph_dot && strcmp(o.graph_dot, "-") == 0;
    fprintf(dot_out ? stderr : stdout, "%s: ok\n", o.file);
    return EXIT_DONE;
  }
  if (!o.summary) report_dead(cmd, &st);
  return st.dead_lettered ? EXIT_DEAD : EXIT_DONE;
}

static void list_one(void *arg, const char *kind, const char *name, const char *path,
                     const char *description, const char *error) {
  (void)arg;
  if (error)
    printf("%-8s %-16s %s\n         %16s unusable: %s\n", kind, name, path, "", error);
  else
    printf("%-8s %-16s %s\n         %16s %s\n", kind, name, description ? description : "",
           "", path);
}

static void usage_plugins(FILE *f) {
  fprintf(f, "usage: mpx plugins [NAME|PATH]\n\n"
             "Without NAME: the search path (MPX_PLUGIN_PATH, next to libmpx, the\n"
             "install prefix), then every task plugin and codec found on it. With\n"
             "NAME: that task plugin's kind, description and parameters, or that\n"
             "codec's content type and description.\n");
}

static int list_all(void) {
  char dirs[8192];
  mpx_plugin_search_path(dirs, sizeof dirs);
  printf("search path:\n");
  for (char *d = dirs, *nl; *d; d = nl + 1) {
    nl = strchr(d, '\n');
    printf("  %.*s\n", (int)(nl - d), d);
  }
  if (dirs[0] == '\0') printf("  (none)\n");
  printf("\n");
  int rc = mpx_plugin_list(3, list_one, NULL);
  if (rc != 0) {
    fprintf(stderr, "%s plugins: %s\n", prog, mpx_last_error());
    return EXIT_RUNTIME;
  }
  return EXIT_DONE;
}

/* Its output ports (ABI 1.2; an older descriptor is shorter and has one),
 * and for a reduce whether it folds. */
static void describe_ports(const mpx_plugin_t *d) {
  bool v12 = d->struct_size >= offsetof(mpx_plugin_t, fold) + sizeof d->fold;
  if (d->kind == MPX_PLUGIN_SINK) return;
  printf("Ports        ");
  if (v12 && d->ports_fn) printf("named by its parameters");
  for (size_t i = 0; v12 && !d->ports_fn && d->ports && i < d->n_ports; i++)
    printf("%s%s", i ? ", " : "", d->ports[i]);
  if (!v12 || (!d->ports_fn && (d->ports == NULL || d->n_ports == 0))) printf("out");
  printf("\n");
  if (d->kind == MPX_PLUGIN_REDUCE)
    printf("Fold         %s\n", v12 && d->fold ? "yes (it can be partitioned: partition_by)" : "no");
}

static void describe_task(const mpx_plugin_t *d, const char *path) {
  printf("Name         %s\nVersion      %s\nKind         %s\nFile         %s\n",
         d->name, d->version ? d->version : "", mpx_plugin_kind_name(d->kind), path);
  describe_ports(d);
  printf("Description  %s\n\nParameters:\n", d->description ? d->description : "");
  if (d->n_params == 0) printf("  (none)\n");
  for (size_t i = 0; i < d->n_params; i++) {
    const mpx_param_def_t *p = &d->params[i];
    printf("  %-14s %-7s %s%s%s%s\n                 %s\n", p->name, mpx_param_type_name(p->type),
           p->required ? "required" : "", p->default_value ? "default " : "",
           p->default_value ? p->default_value : "",
           !p->required && !p->default_value ? "optional" : "",
           p->description ? p->description : "");
  }
}

/* A codec's descriptor lives in its shared object: dladdr names the file. */
static void describe_codec(const mpx_codec_t *c) {
  Dl_info info;
  const char *file = dladdr((const void *)c, &info) && info.dli_fname ? info.dli_fname : "";
  printf("Name         %s\nKind         codec\nABI          %u.%u\nFile         %s\n"
         "Content-Type %s\nDescription  %s\n",
         c->name, (unsigned)c->abi_major, (unsigned)c->abi_minor, file,
         c->content_type ? c->content_type : "", c->description ? c->description : "");
}

/* NAME is a task plugin's or a codec's (a path: whichever the file holds).
 * A name both have describes both. */
static int describe(const char *name) {
  char task_err[2048];
  const mpx_plugin_t *d;
  const mpx_codec_t *c;
  const char *path;
  int trc = mpx_plugin_find(name, &d, &path);
  snprintf(task_err, sizeof task_err, "%s", trc != 0 ? mpx_last_error() : "");
  if (trc == 0) describe_task(d, path);
  /* A file that holds a task plugin is not also tried as a codec. */
  if (trc == 0 && strchr(name, '/') != NULL) return EXIT_DONE;
  int crc = mpx_codec_load(&c, name);
  if (crc == 0) {
    if (trc == 0) printf("\n");
    describe_codec(c);
  }
  if (trc == 0 || crc == 0) return EXIT_DONE;
  if (trc == MPX_ENOENT && crc == MPX_ENOENT)
    fprintf(stderr, "%s plugins: no plugin or codec '%s' on the search path (`mpx plugins` "
                    "lists what is there; MPX_PLUGIN_PATH adds directories)\n",
            prog, name);
  else /* the error of what the file seems to be */
    fprintf(stderr, "%s plugins: %s\n", prog, trc != MPX_ENOENT && trc != MPX_ENOSYM
                                                  ? task_err : mpx_last_error());
  return EXIT_USAGE;
}

/* argv[0] is the command's name. */
static int cmd_plugins(int argc, char **argv) {
  int c;
  optind = 0;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", help_opts, NULL)) != -1) {
    if (c == 'h') {
      usage_plugins(stdout);
      return EXIT_DONE;
    }
    opt_error("plugins", c, argc, argv, help_opts);
    usage_plugins(stderr);
    return EXIT_USAGE;
  }
  if (argc - optind > 1) {
    fprintf(stderr, "%s plugins: one name at most\n", prog);
    return EXIT_USAGE;
  }
  return optind == argc ? list_all() : describe(argv[optind]);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return EXIT_USAGE;
  }
  const char *c = argv[1];
  if (strcmp(c, "--help") == 0 || strcmp(c, "-h") == 0 || strcmp(c, "help") == 0) {
    usage(stdout);
    return EXIT_DONE;
  }
  if (strcmp(c, "run") == 0) return cmd_run(argc - 1, argv + 1, false);
  if (strcmp(c, "check") == 0) return cmd_run(argc - 1, argv + 1, true);
  if (strcmp(c, "plugins") == 0) return cmd_plugins(argc - 1, argv + 1);
  if (strcmp(c, "manager") == 0) {
    if (argc > 2 && strcmp(argv[2], "serve") == 0) return mpx_cli_manager_serve(argc - 3, argv + 3);
    if (argc > 2 && strcmp(argv[2], "call") == 0) return mpx_cli_manager_call(argc - 3, argv + 3);
    fprintf(stderr, "usage: mpx manager serve|call [options] (--help for each)\n");
    return argc > 2 && strcmp(argv[2], "--help") == 0 ? EXIT_DONE : EXIT_USAGE;
  }
  if (strcmp(c, "version") == 0 || strcmp(c, "--version") == 0) {
    if (argc > 2 && strcmp(argv[2], "--help") == 0) {
      printf("usage: mpx version\n");
      return EXIT_DONE;
    }
    printf("mpx %s\n", mpx_version_string());
    return EXIT_DONE;
  }
  fprintf(stderr, "%s: unknown command '%s'\n", prog, c);
  usage(stderr);
  return EXIT_USAGE;
}
