/* Internal: what the process files (core/process/) share with each other
 * and with the rest of core/. Not installed. */
#ifndef MPX_CORE_PROCESS_INTERNAL_H
#define MPX_CORE_PROCESS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "internal.h"
#include "worker_main.h"

/* Identity of the current process, set in every child mpx starts. */
void mpx__process_set_identity(const char *name, bool daemon,
                               const char *identity, pid_t parent_pid,
                               int parent_pidfd, const char *parent_name,
                               bool borrow);
const char *mpx__process_current_name(void);
/* Resets per-process state in a fresh child: the children registry, the
 * forkserver connection. */
void mpx__process_after_fork_child(void);

/* Target resolution (core/process/target.c). */
typedef struct {
  char *object;      /* "" for the main program, else the object's path */
  uintptr_t offset;  /* target address minus the object's load address */
} mpx__target_loc_t;
/* Loads "path:symbol" and resolves the symbol. */
int mpx__target_resolve_spec(const char *spec, mpx_target_fn *fn);
/* Finds the object containing fn. *loc->object is malloc'd. */
int mpx__target_locate(mpx_target_fn fn, mpx__target_loc_t *loc);
/* Maps a location back to an address in this process (loading the object
 * if needed). */
int mpx__target_from_loc(const char *object, uintptr_t offset,
                         mpx_target_fn *fn);
/* For spawn: turns a pointer into "path:symbol" when it names an exported
 * function of a shared object. *spec is malloc'd. */
int mpx__target_spec_of(mpx_target_fn fn, char **spec);

/* Runs a target in a child and ends the child: flushes stdio, _exit(). */
void mpx__child_run(mpx_target_fn fn, const void *args, size_t len)
    __attribute__((noreturn));

/* The forkserver (core/process/forkserver.c). */
typedef struct {
  const char *name;
  const char *identity;
  bool daemon;
  const char *object;
  uintptr_t offset;
  const void *args;
  size_t args_len;
  const int *pass_fds;
  size_t n_pass_fds;
} mpx__fs_request_t;
/* Asks the forkserver (started if needed) for a child. On success sets the
 * child's pid, a pidfd and the status fd (readable with the 4-byte wait
 * status once the server has reaped the child). */
int mpx__forkserver_fork(const mpx__fs_request_t *req, pid_t *pid,
                         int *pidfd, int *status_fd);

/* Spawn (core/process/spawn.c): starts mpx-worker for "path:symbol". */
typedef struct {
  const char *name;
  const char *identity;
  bool daemon;
  const char *spec;
  const void *args;
  size_t args_len;
  const int *pass_fds;
  size_t n_pass_fds;
} mpx__spawn_request_t;
int mpx__spawn(const mpx__spawn_request_t *req, pid_t *pid, int *pidfd);

/* Path of the mpx-worker executable to exec. */
const char *mpx__worker_path(void);

#endif /* MPX_CORE_PROCESS_INTERNAL_H */
