/* Iterator: what dict.__iter__ hands out (CPython's method_to_typeid),
 * over a copy of the keys taken when it was made; also a typeid of its
 * own, made from any iterable. */
#include "manager_types.h"

#include <stdlib.h>

typedef struct {
  mpx__mobj_t h;
  mpx_obj_t *items;
  size_t pos;
} iter_t;

mpx__mobj_t *mpx__miter_new(mpx_obj_t *items) {
  iter_t *it = (iter_t *)mpx__mt_alloc(sizeof *it, &mpx__miter_type);
  if (it == NULL) {
    mpx_obj_release(items);
    return NULL;
  }
  it->items = items;
  return &it->h;
}

static mpx__mobj_t *iter_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                                mpx__mcall_t *c) {
  (void)kwds;
  if (mpx_obj_len(args) != 1) {
    mpx__mt_type_error(c, "Iterator expects one iterable");
    return NULL;
  }
  mpx_obj_t *seq = mpx__mt_iterable(c, mpx_obj_item(args, 0));
  if (seq == NULL) return NULL;
  mpx__mobj_t *o = mpx__miter_new(seq);
  return o ? o : mpx__mt_nomem(c);
}

static void iter_destroy(mpx__mobj_t *o) {
  mpx_obj_release(((iter_t *)o)->items);
  free(o);
}

/* __next__ and send (a generator's send(None) is its next). */
static int m_next(mpx__mobj_t *o, mpx__mcall_t *c) {
  iter_t *it = (iter_t *)o;
  if (it->pos >= mpx_obj_len(it->items))
    return mpx__mcall_raise(c, "builtins", "StopIteration", NULL);
  return mpx__mcall_return(c, mpx_obj_retain(mpx_obj_item(it->items, it->pos++)));
}

static int m_close(mpx__mobj_t *o, mpx__mcall_t *c) {
  iter_t *it = (iter_t *)o;
  it->pos = mpx_obj_len(it->items);
  return mpx__mcall_return(c, NULL);
}

/* Ends the iteration and raises the exception given. */
static int m_throw(mpx__mobj_t *o, mpx__mcall_t *c) {
  iter_t *it = (iter_t *)o;
  it->pos = mpx_obj_len(it->items);
  if (mpx_obj_len(c->args) >= 1 && mpx_obj_type(mpx_obj_item(c->args, 0)) == MPX_OBJ_OPAQUE) {
    c->kind = MPX__K_ERROR;
    c->payload = mpx_obj_retain(mpx_obj_item(c->args, 0));
    return MPX__M_DONE;
  }
  return mpx__mt_type_error(c, "throw() expects an exception");
}

static const mpx__mmethod_t iter_methods[] = {
    {"__next__", m_next}, {"send", m_next}, {"throw", m_throw},
    {"close", m_close},   {NULL, NULL}};

static void iter_repr(mpx__mobj_t *o, char *buf, size_t n) {
  mpx__mt_addr_repr(o, "dict_keyiterator", buf, n);
}

const mpx__mtype_t mpx__miter_type = {
    .name = "Iterator", .methods = iter_methods, .create = iter_create,
    .destroy = iter_destroy, .repr = iter_repr};
