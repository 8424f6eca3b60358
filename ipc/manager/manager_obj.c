/* What the dispatcher and the types both use to handle a call
 * (manager_obj.h): parking on an object and setting the reply. */
#include "manager_obj.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "manager_wire.h"

void mpx__mobj_park(mpx__mobj_t *o, mpx__mcall_t *c) {
  c->wnext = NULL;
  c->wprev = o->waiters_tail;
  if (o->waiters_tail) o->waiters_tail->wnext = c;
  else o->waiters = c;
  o->waiters_tail = c;
}

void mpx__mobj_unpark(mpx__mobj_t *o, mpx__mcall_t *c) {
  if (c->wprev) c->wprev->wnext = c->wnext;
  else o->waiters = c->wnext;
  if (c->wnext) c->wnext->wprev = c->wprev;
  else o->waiters_tail = c->wprev;
  c->wprev = c->wnext = NULL;
}

int mpx__mcall_return(mpx__mcall_t *c, mpx_obj_t *val) {
  c->kind = MPX__K_RETURN;
  c->payload = val ? val : mpx_obj_null();
  return MPX__M_DONE;
}

int mpx__mcall_raise(mpx__mcall_t *c, const char *module, const char *name,
                     mpx_obj_t *args) {
  c->kind = MPX__K_ERROR;
  c->payload = mpx_obj_opaque(MPX_OPAQUE_REDUCE, module, name,
                              args ? args : mpx_obj_tuple(0), NULL);
  return MPX__M_DONE;
}

int mpx__mcall_raisef(mpx__mcall_t *c, const char *module, const char *name,
                      const char *fmt, ...) {
  char buf[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  c->kind = MPX__K_ERROR;
  c->payload = mpx__wire_exception(module, name, buf);
  return MPX__M_DONE;
}

int mpx__mcall_traceback(mpx__mcall_t *c, const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  c->kind = MPX__K_TRACEBACK;
  c->payload = mpx_obj_str(buf, SIZE_MAX);
  return MPX__M_DONE;
}

const mpx__mmethod_t *mpx__mtype_method(const mpx__mtype_t *t, const char *name) {
  for (const mpx__mmethod_t *m = t->methods; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}
