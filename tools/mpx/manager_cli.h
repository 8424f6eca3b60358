/* The `mpx manager` subcommands. Each takes the arguments after its own
 * name and returns the process exit code (0 done, 2 usage or config
 * error, 3 runtime failure). Both read their options with getopt_long, as
 * mpx.c's run/check/plugins do: `--opt=V` and `--opt V` are the same,
 * and `--` ends the options. */
#ifndef MPX_TOOLS_MANAGER_CLI_H
#define MPX_TOOLS_MANAGER_CLI_H

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int mpx_cli_manager_serve(int argc, char **argv); /* manager_serve.c */
int mpx_cli_manager_call(int argc, char **argv);  /* manager_call.c */

/* getopt_long wants the command's name in argv[0]: a copy of argv with
 * name in front (NULL-terminated; the caller frees it), which getopt may
 * permute without touching the caller's. NULL when out of memory. */
static inline char **mpx_cli_named_argv(const char *name, int argc, char **argv) {
  char **v = calloc((size_t)argc + 2, sizeof *v);
  if (v == NULL) return NULL;
  v[0] = (char *)name;
  if (argc > 0) memcpy(v + 1, argv, (size_t)argc * sizeof *v);
  return v;
}

/* The message for what getopt_long refused ('?' or ':', opterr off) in
 * `mpx manager CMD`, worded as mpx.c's, then the pointer to --help: exit
 * code 2. argv[optind - 1] is the argument getopt stopped at (for a
 * missing value, the option itself). */
static inline int mpx_cli_opt_error(const char *cmd, int c, int argc, char **argv,
                                    const struct option *known) {
  const char *a = optind - 1 < argc ? argv[optind - 1] : "";
  size_t n = strcspn(a, "=");
  fprintf(stderr, "mpx manager %s: ", cmd);
  if (c == ':') {
    fprintf(stderr, "option '%s' needs a value\n", a);
    goto hint;
  }
  /* `--server=yes`: a known option that takes no value. */
  for (const struct option *o = known; a[0] == '-' && a[1] == '-' && o->name; o++)
    if (a[n] == '=' && o->has_arg == no_argument && strlen(o->name) == n - 2 &&
        strncmp(o->name, a + 2, n - 2) == 0) {
      fprintf(stderr, "option '%.*s' takes no value\n", (int)n, a);
      goto hint;
    }
  if (a[0] == '-' && a[1] != '-' && optopt)
    fprintf(stderr, "unknown option '-%c'\n", optopt);
  else
    fprintf(stderr, "unknown option '%s'\n", a);
hint:
  fprintf(stderr, "(mpx manager %s --help for usage)\n", cmd);
  return 2;
}

#endif
