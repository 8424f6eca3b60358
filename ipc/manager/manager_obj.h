/* Internal: the contract between the dispatcher (ipc/manager/manager_core.c)
 * and the objects a manager serves (the typeids in ipc/manager/manager_*.c,
 * registered in manager_types.c). Both sides include this header and
 * nothing of the other's: the core knows objects only through
 * mpx__mtype_t, the types know the core only through the two functions
 * it implements below (mpx__mcall_complete, mpx__msess_held).
 *
 * No I/O here: a method either answers at once or parks its call on the
 * object, and the object answers parked calls later, when its state
 * changes (mpx__mcall_complete) or when the core tells it that a call's
 * time ran out (expire). */
#ifndef MPX_IPC_MANAGER_OBJ_H
#define MPX_IPC_MANAGER_OBJ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpx/obj.h"

typedef struct mpx__mcall_s mpx__mcall_t;
typedef struct mpx__mobj_s mpx__mobj_t;
typedef struct mpx__mtype_s mpx__mtype_t;
typedef struct mpx__msess_s mpx__msess_t; /* a connection (manager_core.c) */

/* What a method did with its call. */
enum {
  MPX__M_DONE = 0,   /* kind and payload are set: reply now */
  MPX__M_PARKED = 1  /* on obj->waiters until completed, expired or dropped */
};

/* Reply kinds. */
#define MPX__K_RETURN "#RETURN"
#define MPX__K_ERROR "#ERROR"
#define MPX__K_TRACEBACK "#TRACEBACK"
#define MPX__K_PROXY "#PROXY"
#define MPX__K_UNSERIALIZABLE "#UNSERIALIZABLE"

/* One method call. The core owns it; a type only fills the reply fields
 * and links it on its object while parked. */
struct mpx__mcall_s {
  /* Set by the core; valid until the call is completed or dropped. */
  mpx__mobj_t *obj;
  const char *method;
  const mpx_obj_t *args; /* a tuple or array */
  const mpx_obj_t *kwds; /* a map */
  mpx__msess_t *owner;   /* the connection that asked (lock ownership) */
  bool py2;              /* the caller is Python 2: texts it must read as
                          * its str (a typecode) go as bytes */
  /* The reply, set by the type: kind is one of MPX__K_*, payload a new
   * reference (NULL: None). For "#PROXY", proxy is a new object the core
   * registers (payload then unused). */
  const char *kind;
  mpx_obj_t *payload;
  mpx__mobj_t *proxy;
  /* Parking, set by the type before returning MPX__M_PARKED: seconds
   * before expire() (negative: never). */
  double timeout;
  int phase;   /* type-specific: what the call waits for */
  int64_t aux; /* type-specific */
  mpx__mcall_t *wprev, *wnext; /* obj->waiters, FIFO */
  /* The core's. */
  mpx__mcall_t *sprev, *snext; /* the session's parked calls */
  void *timer;                 /* the server's timer for this call */
  mpx_obj_t *req;              /* the request message that args point into */
};

/* Common head of every managed object. */
struct mpx__mobj_s {
  const mpx__mtype_t *type;
  char *typeid;   /* the typeid it was created under ("get_queue"), owned */
  uint64_t id;
  char ident[20]; /* lowercase hex of id */
  int64_t refcount;
  mpx__mcall_t *waiters, *waiters_tail;
  mpx__mobj_t *hnext; /* the core's id table */
  bool published;     /* mpx_manager_expose: the server holds a reference */
};

/* One exposed method and what runs it (a Redis-style command table). */
typedef struct {
  const char *name;
  /* Runs the call: MPX__M_DONE or MPX__M_PARKED. */
  int (*fn)(mpx__mobj_t *o, mpx__mcall_t *c);
} mpx__mmethod_t;

struct mpx__mtype_s {
  const char *name;              /* "Queue" */
  /* The exposed methods in CPython's order (the #PROXY reply and
   * get_methods list them in it); ends with {NULL, NULL}. A method not
   * in it is not exposed. */
  const mpx__mmethod_t *methods;
  const char *iter_typeid;       /* method_to_typeid: "__iter__" -> this */
  /* Makes a new object (constructor args a tuple/array, kwds a map). On
   * failure returns NULL with c->kind/payload set (the error reply). */
  mpx__mobj_t *(*create)(const mpx_obj_t *args, const mpx_obj_t *kwds,
                         mpx__mcall_t *c);
  /* Frees the object; no call is parked on it any more. */
  void (*destroy)(mpx__mobj_t *o);
  /* A parked call's time ran out (once): the type either answers it
   * (unlink, set the reply, mpx__mcall_complete) or keeps it parked with
   * no deadline (a Condition.wait that must get its lock back). NULL
   * when the type never parks. */
  void (*expire)(mpx__mobj_t *o, mpx__mcall_t *c);
  /* A parked call's connection went away: unlink it, undo what it did to
   * the object's state (a barrier's waiter count). No reply. */
  void (*drop)(mpx__mobj_t *o, mpx__mcall_t *c);
  /* The connection `s` went away holding this object (a lock): release
   * what it holds. NULL for types without owners. */
  void (*owner_gone)(mpx__mobj_t *o, mpx__msess_t *s);
  /* #GETVALUE: a copy (new reference), or NULL when the object has no
   * value that travels (a queue, a lock): #UNSERIALIZABLE. */
  mpx_obj_t *(*value)(mpx__mobj_t *o);
  /* Python's repr of the object, into buf (snprintf style). */
  void (*repr)(mpx__mobj_t *o, char *buf, size_t n);
};

/* The shipped typeid named `name` ("Queue", "dict", ...), or NULL. */
const mpx__mtype_t *mpx__mtype_find(const char *name);
/* All shipped types, NULL-terminated. */
extern const mpx__mtype_t *const mpx__mtypes[];
/* t's exposed method `name`, or NULL when it is not exposed. */
const mpx__mmethod_t *mpx__mtype_method(const mpx__mtype_t *t, const char *name);

/* Implemented by the core: a parked call is answered (its reply fields
 * set by the type, already unlinked from obj->waiters). The call is freed
 * by the core; the type must not touch it afterwards. */
void mpx__mcall_complete(mpx__mcall_t *c);

/* Implemented by the core: a connection's count of held locks, so that
 * owner_gone runs only for connections that hold something. */
void mpx__msess_held(mpx__msess_t *s, int delta);

/* Helpers for both sides (manager_obj.c). */
void mpx__mobj_park(mpx__mobj_t *o, mpx__mcall_t *c);
void mpx__mobj_unpark(mpx__mobj_t *o, mpx__mcall_t *c);
/* Sets c's reply to an exception module.name with args (a tuple, stolen;
 * NULL: ()) and returns MPX__M_DONE. */
int mpx__mcall_raise(mpx__mcall_t *c, const char *module, const char *name,
                     mpx_obj_t *args);
int mpx__mcall_raisef(mpx__mcall_t *c, const char *module, const char *name,
                      const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Sets c's reply to "#TRACEBACK" with a message. */
int mpx__mcall_traceback(mpx__mcall_t *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sets c's reply to "#RETURN" with val (stolen; NULL: None). */
int mpx__mcall_return(mpx__mcall_t *c, mpx_obj_t *val);

#endif /* MPX_IPC_MANAGER_OBJ_H */
