/* The `mpx` command: run and check pipelines, list plugins.
 *
 *   mpx run FILE [--set STAGE.KEY=VALUE]... [--progress=auto|always|never]
 *                [--stats-json FILE] [--no-summary]
 *   mpx check FILE [--set ...]
 *   mpx plugins [NAME]
 *   mpx manager serve|call ...   (manager_serve.c, manager_call.c)
 *   mpx version
 *
 * Exit codes: 0 all done, 1 some items dead-lettered, 2 usage or
 * configuration error, 3 runtime failure. mpx prints no colour, so
 * NO_COLOR holds whatever its value. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
          "  check FILE    validate a pipeline: the file, its plugins and params\n"
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
            "  --progress=WHEN         auto (on a terminal, the default), always, never\n"
            "  --stats-json FILE       write the per-stage figures as JSON\n"
            "  --no-summary            no table at the end\n");
}

static int config_error(int rc) {
  return rc == MPX_ECONFIG || rc == MPX_ENOENT || rc == MPX_EPLUGIN ||
         rc == MPX_ENOSYM || rc == MPX_EABI || rc == MPX_EINVAL ||
         rc == MPX_EACCES || rc == MPX_EISDIR;
}

static int cmd_run(int argc, char **argv, bool check) {
  const char *cmd = check ? "check" : "run";
  mpx_pipeline_opts_t o = {.summary = !check};
  const char **sets = calloc((size_t)argc + 1, sizeof *sets);
  size_t n_sets = 0;
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage_run(stdout, cmd);
      free(sets);
      return EXIT_DONE;
    } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
      sets[n_sets++] = argv[++i];
    } else if (strncmp(a, "--set=", 6) == 0) {
      sets[n_sets++] = a + 6;
    } else if (!check && strncmp(a, "--progress=", 11) == 0) {
      const char *w = a + 11;
      if (strcmp(w, "auto") == 0) o.progress = MPX_PROGRESS_AUTO;
      else if (strcmp(w, "always") == 0) o.progress = MPX_PROGRESS_ALWAYS;
      else if (strcmp(w, "never") == 0) o.progress = MPX_PROGRESS_NEVER;
      else {
        fprintf(stderr, "%s %s: --progress must be auto, always or never, not '%s'\n",
                prog, cmd, w);
        free(sets);
        return EXIT_USAGE;
      }
    } else if (!check && strcmp(a, "--stats-json") == 0 && i + 1 < argc) {
      o.stats_json = argv[++i];
    } else if (!check && strcmp(a, "--no-summary") == 0) {
      o.summary = false;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "%s %s: unknown option '%s'\n", prog, cmd, a);
      usage_run(stderr, cmd);
      free(sets);
      return EXIT_USAGE;
    } else if (o.file == NULL) {
      o.file = a;
    } else {
      fprintf(stderr, "%s %s: one pipeline file only ('%s' and '%s')\n", prog, cmd,
              o.file, a);
      free(sets);
      return EXIT_USAGE;
    }
  }
  if (o.file == NULL) {
    usage_run(stderr, cmd);
    free(sets);
    return EXIT_USAGE;
  }
  o.sets = sets;
  o.n_sets = n_sets;
  o.check_only = check;
  mpx_pipeline_stats_t st;
  int rc = mpx_pipeline_run(&o, &st);
  free(sets);
  if (rc != 0) {
    fprintf(stderr, "%s %s: %s\n", prog, cmd, mpx_last_error());
    if (rc == MPX_EINTR) return EXIT_RUNTIME;
    return config_error(rc) ? EXIT_USAGE : EXIT_RUNTIME;
  }
  if (check) {
    printf("%s: ok\n", o.file);
    return EXIT_DONE;
  }
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

static int cmd_plugins(int argc, char **argv) {
  if (argc > 0 && (strcmp(argv[0], "--help") == 0 || strcmp(argv[0], "-h") == 0)) {
    printf("usage: mpx plugins [NAME|PATH]\n\n"
           "Without NAME: every task plugin and codec on the search path\n"
           "(MPX_PLUGIN_PATH, next to libmpx, the install prefix). With NAME: its\n"
           "kind, description and parameters.\n");
    return EXIT_DONE;
  }
  if (argc > 1) {
    fprintf(stderr, "%s plugins: one name at most\n", prog);
    return EXIT_USAGE;
  }
  if (argc == 0) {
    int rc = mpx_plugin_list(3, list_one, NULL);
    if (rc != 0) {
      fprintf(stderr, "%s plugins: %s\n", prog, mpx_last_error());
      return EXIT_RUNTIME;
    }
    return EXIT_DONE;
  }
  const mpx_plugin_t *d;
  const char *path;
  int rc = mpx_plugin_find(argv[0], &d, &path);
  if (rc != 0) {
    fprintf(stderr, "%s plugins: %s\n", prog, mpx_last_error());
    return EXIT_USAGE;
  }
  printf("Name         %s\nVersion      %s\nKind         %s\nFile         %s\n"
         "Description  %s\n\nParameters:\n",
         d->name, d->version ? d->version : "", mpx_plugin_kind_name(d->kind), path,
         d->description ? d->description : "");
  if (d->n_params == 0) printf("  (none)\n");
  for (size_t i = 0; i < d->n_params; i++) {
    const mpx_param_def_t *p = &d->params[i];
    printf("  %-14s %-7s %s%s%s%s\n                 %s\n", p->name, mpx_param_type_name(p->type),
           p->required ? "required" : "", p->default_value ? "default " : "",
           p->default_value ? p->default_value : "",
           !p->required && !p->default_value ? "optional" : "",
           p->description ? p->description : "");
  }
  return EXIT_DONE;
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
  if (strcmp(c, "run") == 0) return cmd_run(argc - 2, argv + 2, false);
  if (strcmp(c, "check") == 0) return cmd_run(argc - 2, argv + 2, true);
  if (strcmp(c, "plugins") == 0) return cmd_plugins(argc - 2, argv + 2);
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
