/* The `mpx manager` subcommands. Each takes the arguments after its own
 * name and returns the process exit code (0 done, 2 usage or config
 * error, 3 runtime failure). */
#ifndef MPX_TOOLS_MANAGER_CLI_H
#define MPX_TOOLS_MANAGER_CLI_H

int mpx_cli_manager_serve(int argc, char **argv); /* manager_serve.c */
int mpx_cli_manager_call(int argc, char **argv);  /* manager_call.c */

#endif
