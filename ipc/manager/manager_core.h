/* Internal: a manager server without sockets. The core owns the objects
 * and the per-connection protocol state (framing, the authkey challenge,
 * requests, replies, parked calls); the server (ipc/manager/manager_server.c)
 * moves bytes and runs timers through hooks. The fuzzer drives the same
 * code with hooks that only collect replies.
 *
 * Single-threaded: every function here runs on one thread at a time (the
 * server holds its mutex around each call). */
#ifndef MPX_IPC_MANAGER_CORE_H
#define MPX_IPC_MANAGER_CORE_H

#include <stdbool.h>
#include <stddef.h>

#include "manager_obj.h"
#include "mpx/manager.h"

typedef struct mpx__mcore_s mpx__mcore_t;

typedef struct {
  /* Sends one whole frame (length header included) to the session's peer;
   * data is valid during the call only. */
  void (*send)(void *io, const void *data, size_t len);
  /* Closes the session's connection once what was sent has left; the
   * server then calls mpx__msess_free(). The core ignores later input. */
  void (*close)(void *io);
  /* Stops (paused) or resumes reading from the peer: a session with a
   * parked call holds what arrives behind it, and past 1 MiB of that it
   * asks for a pause until the call is answered. */
  void (*pause)(void *io, bool paused);
  /* Runs a timer for a parked call: after secs, mpx__mcore_expire(c).
   * The server keeps its timer in c->timer. 0 or an error (the call is
   * then answered with a #TRACEBACK at once). */
  int (*timer_start)(void *user, mpx__mcall_t *c, double secs);
  /* Stops and releases c->timer (set it to NULL). */
  void (*timer_stop)(void *user, mpx__mcall_t *c);
  /* A client sent "shutdown" (its replies are already sent). */
  void (*shutdown)(void *user);
  void *user;
} mpx__mcore_hooks_t;

typedef struct {
  const void *authkey;
  size_t authkey_len;
  unsigned auth_flags; /* MPX_AUTH_* for the challenges sent */
  size_t max_frame;    /* 0: 64 MiB */
  size_t max_objects;  /* 0: 1 M */
} mpx__mcore_opts_t;

/* On success *core is the caller's (mpx__mcore_free). Copies the key. */
int mpx__mcore_new(mpx__mcore_t **core, const mpx__mcore_opts_t *o,
                   const mpx__mcore_hooks_t *hooks);
/* Frees every object. Every session must have been freed before. */
void mpx__mcore_free(mpx__mcore_t *core);
/* The address that Tokens carry ("tcp://127.0.0.1:41235"). */
int mpx__mcore_set_address(mpx__mcore_t *core, const char *address);
/* mpx_manager_expose. */
int mpx__mcore_expose(mpx__mcore_t *core, const char *typeid, const char *type,
                      const mpx_obj_t *args, const mpx_obj_t *kwds);
void mpx__mcore_stats(mpx__mcore_t *core, mpx_manager_stats_t *st);
/* Answers every parked call with a #TRACEBACK ("shutting down") and
 * refuses further requests. */
void mpx__mcore_stop(mpx__mcore_t *core);
/* A parked call's timer fired (the timer is done: the core stops it). */
void mpx__mcore_expire(mpx__mcore_t *core, mpx__mcall_t *c);

/* A new connection. Unless `authenticated`, it starts with the challenge
 * (sent through hooks.send before this returns). NULL: out of memory. */
mpx__msess_t *mpx__msess_new(mpx__mcore_t *core, void *io, bool authenticated);
/* Bytes received from the peer. */
void mpx__msess_feed(mpx__msess_t *s, const void *data, size_t len);
/* Whether the peer has passed the challenge. */
bool mpx__msess_authenticated(const mpx__msess_t *s);
/* The handshake took too long: counted as an authentication failure; the
 * server closes the connection. */
void mpx__msess_handshake_expired(mpx__msess_t *s);
/* The connection is gone (closed by either side): drops its parked call,
 * releases the locks it held, frees the session. */
void mpx__msess_free(mpx__msess_t *s);

#endif /* MPX_IPC_MANAGER_CORE_H */
