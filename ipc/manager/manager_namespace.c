/* Namespace (managers.Namespace): attributes in an ordered table (the
 * one dict uses), set and read through __setattr__/__getattribute__. */
#include "manager_types.h"

#include <stdio.h>
#include <stdlib.h>

typedef struct {
  mpx__mobj_t h;
  mpx__mdict_t attrs; /* only its table is used */
} ns_t;

static mpx__mobj_t *ns_create(const mpx_obj_t *args, const mpx_obj_t *kwds,
                              mpx__mcall_t *c) {
  if (mpx_obj_len(args) > 0) {
    mpx__mt_type_error(c, "Namespace() takes keyword arguments only");
    return NULL;
  }
  ns_t *n = (ns_t *)mpx__mt_alloc(sizeof *n, NULL);
  if (n == NULL) return mpx__mt_nomem(c);
  if (mpx__mdict_update_kw(&n->attrs, c, kwds) != 0) {
    mpx__mdict_fini(&n->attrs);
    free(n);
    return NULL;
  }
  return &n->h;
}

static void ns_destroy(mpx__mobj_t *o) {
  mpx__mdict_fini(&((ns_t *)o)->attrs);
  free(o);
}

/* An attribute name must be a str: 0, or -1 with Python's TypeError. */
static int check_name(mpx__mcall_t *c, const mpx_obj_t *name) {
  if (mpx_obj_type(name) == MPX_OBJ_STR) return 0;
  mpx__mt_type_error(c, "attribute name must be string, not '%s'",
                     mpx__mt_type_name(name));
  return -1;
}

static int ns_getattr(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[1];
  mpx__mdent_t *e;
  BIND(c, 1, a, "name");
  if (check_name(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find(&((ns_t *)o)->attrs, a[0])) == NULL)
    return mpx__mt_attr_error(c, a[0], "Namespace");
  return mpx__mcall_return(c, mpx_obj_retain(e->v));
}

static int ns_setattr(mpx__mobj_t *o, mpx__mcall_t *c) {
  const mpx_obj_t *a[2];
  BIND(c, 2, a, "name", "value");
  if (check_name(c, a[0]) != 0) return MPX__M_DONE;
  if (mpx__mdict_set(&((ns_t *)o)->attrs, a[0], a[1]) != 0)
    return mpx__mcall_raisef(c, "builtins", "MemoryError", "out of memory");
  return mpx__mcall_return(c, NULL);
}

static int ns_delattr(mpx__mobj_t *o, mpx__mcall_t *c) {
  mpx__mdict_t *attrs = &((ns_t *)o)->attrs;
  const mpx_obj_t *a[1];
  mpx__mdent_t *e;
  BIND(c, 1, a, "name");
  if (check_name(c, a[0]) != 0) return MPX__M_DONE;
  if ((e = mpx__mdict_find(attrs, a[0])) == NULL)
    return mpx__mt_attr_error(c, a[0], "Namespace");
  mpx_obj_release(mpx__mdict_take(attrs, e));
  return mpx__mcall_return(c, NULL);
}

static const mpx__mmethod_t ns_methods[] = {
    {"__getattribute__", ns_getattr}, {"__setattr__", ns_setattr},
    {"__delattr__", ns_delattr},      {NULL, NULL}};

static mpx_obj_t *ns_value(mpx__mobj_t *o) {
  mpx_obj_t *st = mpx__mdict_map(&((ns_t *)o)->attrs);
  return st ? mpx__mt_plain_object("Namespace", st) : NULL;
}

static int key_cmp(const void *x, const void *y) {
  return mpx__mt_cmp((*(const mpx__mdent_t *const *)x)->k, (*(const mpx__mdent_t *const *)y)->k);
}

static void ns_repr(mpx__mobj_t *o, char *buf, size_t n) {
  ns_t *ns = (ns_t *)o;
  mpx__mdent_t **es = malloc((ns->attrs.live + 1) * sizeof *es);
  size_t k = 0, off;
  for (size_t i = 0; es && i < ns->attrs.n_e; i++) {
    size_t l;
    const char *s = mpx_obj_str_data(ns->attrs.e[i].k, &l);
    if (ns->attrs.e[i].k && s && l > 0 && s[0] != '_') es[k++] = &ns->attrs.e[i];
  }
  if (es) qsort(es, k, sizeof *es, key_cmp);
  off = (size_t)snprintf(buf, n, "Namespace(");
  for (size_t i = 0; i < k && off + 8 < n; i++) {
    size_t l;
    const char *s = mpx_obj_str_data(es[i]->k, &l);
    off += (size_t)snprintf(buf + off, n - off, "%s%.*s=", i ? ", " : "", (int)l, s);
    if (off < n) off += mpx_obj_dump(es[i]->v, buf + off, n - off);
  }
  if (off < n) snprintf(buf + off, n - off, ")");
  free(es);
}

const mpx__mtype_t mpx__mns_type = {
    .name = "Namespace", .methods = ns_methods, .create = ns_create,
    .destroy = ns_destroy, .value = ns_value, .repr = ns_repr};
