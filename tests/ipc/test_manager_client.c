/* The manager client (mpx_mclient_*, mpx_proxy_*) against CPython's own
 * manager server (py_manager_server.py: a SyncManager that also publishes
 * get_queue, callable=lambda: q; python3, and every CPython 3.12+ found,
 * tests/ipc/pythons.h) and against mpx's server: values of the whole
 * pickle subset both ways through a queue, the SyncManager types, error
 * mapping (KeyError, queue.Empty/Full, IndexError, #ERROR, #TRACEBACK),
 * #PROXY replies, reference counts, timeouts, wrong keys, msgpack, a
 * server that breaks the protocol, fork children, `mpx manager call`, and
 * 64 clients on one queue. Children report through exit codes or pipes; the
 * parent asserts and reaps every child. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "mpx.h"
#include "../mpx_test.h"
#include "pythons.h"

static const char KEY[] = "manager-secret";
#define KEYLEN (sizeof KEY - 1)
static const char KEYHEX[] = "6d616e616765722d736563726574";

/* PY py_manager_server.py MODE [N] ADDR KEYHEX; stdout on *out when
 * asked. */
static pid_t spawn_py(const char *py, const char *mode, const char *n,
                      const char *addr, int *out) {
  const char *with_n[] = {mode, n, addr, KEYHEX, NULL};
  const char *without[] = {mode, addr, KEYHEX, NULL};
  return spawn_helper(py, "py_manager_server.py", n != NULL ? with_n : without,
                      out);
}

/* A client step of py_manager_server.py (interpreter py) against the
 * server at addr: its exit code, 0 when the step's checks held. */
static int py_step(const char *py, const char *mode, const char *addr) {
  return mpx_test_reap(spawn_py(py, mode, NULL, addr, NULL), 60);
}

/* A CPython manager server (interpreter py) on addr: its pid, its bound
 * address in out. */
static pid_t start_py_server_with(const char *py, const char *addr, char *out,
                                  size_t cap) {
  int fd;
  pid_t pid = spawn_py(py, "server", NULL, addr, &fd);
  CU_ASSERT_FATAL(read_line(fd, out, cap, 30));
  close(fd);
  return pid;
}

/* The same with python3. */
static pid_t start_py_server(const char *addr, char *out, size_t cap) {
  return start_py_server_with("python3", addr, out, cap);
}

/* Sends shutdown and reaps the server (CPython's or mpx's), which must
 * exit 0. */
static void stop_server(mpx_mclient_t *c, pid_t pid) {
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "shutdown", NULL, NULL), 0);
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
}

static mpx_mclient_t *connect_ok(const char *addr, const mpx_mclient_opts_t *o) {
  mpx_mclient_t *c = NULL;
  int rc;
  mpx_test_plugin_path();
  rc = mpx_mclient_connect(&c, addr, KEY, KEYLEN, o);
  if (rc != 0) fprintf(stderr, "connect %s: %s\n", addr, mpx_last_error());
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  return c;
}

static mpx_proxy_t *create_ok(mpx_mclient_t *c, const char *typeid,
                              mpx_obj_t *args /* stolen */) {
  mpx_proxy_t *p = NULL;
  int rc = mpx_mclient_create(c, &p, typeid, args, NULL);
  if (rc != 0) fprintf(stderr, "create %s: %s\n", typeid, mpx_last_error());
  mpx_obj_release(args);
  CU_ASSERT_EQUAL_FATAL(rc, 0);
  CU_ASSERT_PTR_NOT_NULL_FATAL(p);
  return p;
}

/* JoinableQueue (on CPython's server or mpx's): task_done, join, and one
 * task_done too many (ValueError). */
static void check_joinable_queue(mpx_mclient_t *c) {
  mpx_proxy_t *jq = create_ok(c, "JoinableQueue", NULL);
  mpx_obj_t *x = mpx_obj_int(3), *got = NULL;
  CU_ASSERT_EQUAL(mpx_proxy_queue_put(jq, x, -1), 0);
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(jq, &got, -1), 0);
  CU_ASSERT_TRUE(mpx_obj_equal(got, x));
  mpx_obj_release(got);
  CU_ASSERT_EQUAL(mpx_proxy_queue_task_done(jq), 0);
  CU_ASSERT_EQUAL(mpx_proxy_queue_join(jq), 0);
  CU_ASSERT_EQUAL(mpx_proxy_queue_task_done(jq), MPX_EREMOTE);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "ValueError"));
  mpx_obj_release(x);
  mpx_proxy_free(jq);
}

/* ---- the values (py_manager_server.py's VALUES, in the same order) ------ */

static mpx_obj_t *str_(const char *s) { return mpx_obj_str(s, SIZE_MAX); }

static mpx_obj_t *tup(size_t n, mpx_obj_t **items) {
  mpx_obj_t *t = mpx_obj_tuple(n);
  for (size_t i = 0; i < n; i++) mpx_obj_append(t, items[i]);
  return t;
}

static mpx_obj_t *arr(size_t n, mpx_obj_t **items) {
  mpx_obj_t *t = mpx_obj_array(n);
  for (size_t i = 0; i < n; i++) mpx_obj_append(t, items[i]);
  return t;
}

#define TUP(...) tup(sizeof((mpx_obj_t *[]){__VA_ARGS__}) / sizeof(mpx_obj_t *), \
                     (mpx_obj_t *[]){__VA_ARGS__})
#define ARR(...) arr(sizeof((mpx_obj_t *[]){__VA_ARGS__}) / sizeof(mpx_obj_t *), \
                     (mpx_obj_t *[]){__VA_ARGS__})

#define NVALUES 36

/* Fills v[NVALUES] with new references. */
static void make_values(mpx_obj_t **v) {
  static const uint8_t b64[9] = {0, 0, 0, 0, 0, 0, 0, 0, 1};
  static const uint8_t b100[13] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10};
  static const uint8_t nb100[13] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xf0};
  static const uint8_t nb64[9] = {0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xfe};
  uint8_t all[768];
  char a300[301];
  size_t i = 0;
  mpx_obj_t *m;

  for (int k = 0; k < 768; k++) all[k] = (uint8_t)k;
  memset(a300, 'a', 300);
  a300[300] = '\0';
  v[i++] = mpx_obj_null();
  v[i++] = mpx_obj_bool(1);
  v[i++] = mpx_obj_bool(0);
  v[i++] = mpx_obj_int(0);
  v[i++] = mpx_obj_int(1);
  v[i++] = mpx_obj_int(-1);
  v[i++] = mpx_obj_int(255);
  v[i++] = mpx_obj_int(256);
  v[i++] = mpx_obj_int(65535);
  v[i++] = mpx_obj_int(65536);
  v[i++] = mpx_obj_int(INT32_MAX);
  v[i++] = mpx_obj_int(INT32_MIN);
  v[i++] = mpx_obj_int(INT64_MAX);
  v[i++] = mpx_obj_int(INT64_MIN);
  v[i++] = mpx_obj_bigint(b64, sizeof b64);
  v[i++] = mpx_obj_bigint(b100, sizeof b100);
  v[i++] = mpx_obj_bigint(nb100, sizeof nb100);
  v[i++] = mpx_obj_bigint(nb64, sizeof nb64);
  v[i++] = mpx_obj_float(1.5);
  v[i++] = mpx_obj_float(-0.0);
  v[i++] = mpx_obj_float(INFINITY);
  v[i++] = mpx_obj_float(-1e300);
  v[i++] = str_("");
  v[i++] = str_("h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 \xe6\x97\xa5\xe6\x9c\xac");
  v[i++] = str_(a300);
  v[i++] = mpx_obj_bytes("", 0);
  v[i++] = mpx_obj_bytes("\x00\xff", 2);
  v[i++] = mpx_obj_bytes(all, sizeof all);
  v[i++] = mpx_obj_tuple(0);
  v[i++] = TUP(mpx_obj_int(1));
  v[i++] = TUP(mpx_obj_int(1), str_("a"), mpx_obj_null());
  v[i++] = mpx_obj_array(0);
  v[i++] = ARR(mpx_obj_int(1),
               ARR(mpx_obj_int(2), ARR(mpx_obj_int(3), TUP(mpx_obj_int(4)))));
  v[i++] = mpx_obj_map(0);
  m = mpx_obj_map(0);
  mpx_obj_map_set_str(m, "a", mpx_obj_int(1));
  mpx_obj_map_set_str(m, "b", ARR(mpx_obj_int(1), mpx_obj_int(2)));
  {
    mpx_obj_t *inner = mpx_obj_map(0);
    mpx_obj_map_set_str(inner, "d", TUP(mpx_obj_int(1), mpx_obj_int(2)));
    mpx_obj_map_set_str(m, "c", inner);
  }
  v[i++] = m;
  m = mpx_obj_map(0);
  mpx_obj_map_set(m, mpx_obj_int(1), str_("int key"));
  mpx_obj_map_set(m, TUP(mpx_obj_int(1), mpx_obj_int(2)), str_("tuple key"));
  v[i++] = m;
  CU_ASSERT_EQUAL_FATAL(i, NVALUES);
  for (i = 0; i < NVALUES; i++) CU_ASSERT_PTR_NOT_NULL_FATAL(v[i]);
}

static void free_values(mpx_obj_t **v) {
  for (size_t i = 0; i < NVALUES; i++) mpx_obj_release(v[i]);
}

/* Strict equality with -0.0 apart from 0.0 (mpx_obj_equal is by value). */
static int same(const mpx_obj_t *a, const mpx_obj_t *b) {
  if (!mpx_obj_equal(a, b)) return 0;
  if (mpx_obj_type(a) == MPX_OBJ_FLOAT)
    return signbit(mpx_obj_get_float(a)) == signbit(mpx_obj_get_float(b));
  return 1;
}

/* Gets NVALUES items from q (10 s each), which must be v[] exactly, in
 * order; a failure names the item after `what`. */
static void get_values(mpx_proxy_t *q, mpx_obj_t **v, const char *what) {
  for (size_t i = 0; i < NVALUES; i++) {
    mpx_obj_t *got = NULL;
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 10), 0);
    if (!same(got, v[i])) {
      char a[200], b[200];
      mpx_obj_dump(got, a, sizeof a);
      mpx_obj_dump(v[i], b, sizeof b);
      fprintf(stderr, "%sitem %zu: got %s, want %s\n", what, i, a, b);
      CU_FAIL("a value did not come back exactly");
    }
    mpx_obj_release(got);
  }
}

/* ---- against CPython ------------------------------------------------------ */

/* Every value put from C comes out in Python exactly, and every value
 * Python puts comes out in C exactly; then an empty queue is MPX_EAGAIN.
 * TCP and a Unix socket. */
static void test_py_queue_roundtrip(void) {
  find_pythons();
  for (int k = 0; k < n_pythons * 2; k++) {
    int py = k / 2, kind = k % 2; /* each CPython, TCP and Unix */
    char addr[128], bound[160];
    mpx_obj_t *v[NVALUES], *got = NULL;
    mpx_mclient_t *c;
    mpx_proxy_t *q;
    pid_t srv;

    if (kind == 0) snprintf(addr, sizeof addr, "tcp://127.0.0.1:0");
    else snprintf(addr, sizeof addr, "unix:/tmp/mpx-mc-%d.sock", (int)getpid());
    srv = start_py_server_with(pythons[py], addr, bound, sizeof bound);
    if (kind == 1) CU_ASSERT_STRING_EQUAL(bound, addr);
    c = connect_ok(bound, NULL);
    CU_ASSERT_FALSE(mpx_mclient_is_mpx(c));
    q = create_ok(c, "get_queue", NULL);
    CU_ASSERT_STRING_EQUAL(mpx_proxy_typeid(q), "get_queue");
    CU_ASSERT_TRUE(mpx_proxy_exposes(q, "put"));
    CU_ASSERT_TRUE(mpx_proxy_exposes(q, "get"));
    CU_ASSERT_FALSE(mpx_proxy_exposes(q, "no_such_method"));
    make_values(v);
    for (size_t i = 0; i < NVALUES; i++)
      CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, v[i], -1), 0);
    {
      size_t n = 0;
      CU_ASSERT_EQUAL(mpx_proxy_queue_qsize(q, &n), 0);
      CU_ASSERT_EQUAL(n, NVALUES);
    }
    CU_ASSERT_EQUAL(py_step(pythons[py], "check", bound), 0);
    CU_ASSERT_EQUAL(py_step(pythons[py], "fill", bound), 0);
    get_values(q, v, "");
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0), MPX_EAGAIN);
    CU_ASSERT_PTR_NULL(got);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0.2), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, NAN), MPX_EINVAL);
    free_values(v);
    mpx_proxy_free(q);
    stop_server(c, srv);
    mpx_mclient_free(c);
  }
}

/* Requests pickled with protocols 2, 3 and 5 (the default is 4) are read
 * by CPython exactly the same. */
static void test_py_pickle_protocols(void) {
  static const int protos[] = {2, 3, 5};
  char bound[160];
  mpx_obj_t *v[NVALUES], *got = NULL;
  pid_t srv = start_py_server("tcp://127.0.0.1:0", bound, sizeof bound);
  mpx_mclient_t *ctl = connect_ok(bound, NULL);

  make_values(v);
  for (size_t k = 0; k < sizeof protos / sizeof protos[0]; k++) {
    mpx_mclient_opts_t o = {.protocol = protos[k]};
    mpx_mclient_t *c = connect_ok(bound, &o);
    mpx_proxy_t *q = create_ok(c, "get_queue", NULL);
    for (size_t i = 0; i < NVALUES; i++)
      CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, v[i], -1), 0);
    CU_ASSERT_EQUAL(py_step("python3", "check", bound), 0);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0), MPX_EAGAIN);
    mpx_proxy_free(q);
    mpx_mclient_free(c);
  }
  {
    mpx_mclient_opts_t o = {.protocol = 6};
    mpx_mclient_t *c = NULL;
    CU_ASSERT_EQUAL(mpx_mclient_connect(&c, bound, KEY, KEYLEN, &o), MPX_EINVAL);
    CU_ASSERT_PTR_NULL(c);
  }
  free_values(v);
  stop_server(ctl, srv);
  mpx_mclient_free(ctl);
}

/* SyncManager's dict, list, Value, Lock and Event through the typed
 * calls; a published dict checked from Python. */
static void py_types(const char *py) {
  char bound[160];
  mpx_mclient_t *c;
  mpx_proxy_t *d, *l, *v, *lk, *e, *pd;
  mpx_obj_t *k = str_("k"), *got = NULL, *keys = NULL;
  size_t n = 0;
  bool set = true;
  pid_t srv = start_py_server_with(py, "tcp://127.0.0.1:0", bound, sizeof bound);

  c = connect_ok(bound, NULL);
  /* dict */
  d = create_ok(c, "dict", NULL);
  CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k, &got), MPX_ENOENT);
  CU_ASSERT_PTR_NULL(got);
  {
    mpx_obj_t *seven = mpx_obj_int(7);
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(d, k, seven), 0);
    mpx_obj_release(seven);
  }
  CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(got), MPX_OBJ_INT);
  CU_ASSERT_EQUAL(mpx_obj_get_int(got), 7);
  mpx_obj_release(got);
  {
    mpx_obj_t *k2 = TUP(mpx_obj_int(1), str_("x"));
    mpx_obj_t *val = ARR(mpx_obj_null(), mpx_obj_float(2.5));
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(d, k2, val), 0);
    CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
    CU_ASSERT_EQUAL(n, 2);
    CU_ASSERT_EQUAL(mpx_proxy_dict_keys(d, &keys), 0);
    CU_ASSERT_EQUAL(mpx_obj_type(keys), MPX_OBJ_ARRAY);
    CU_ASSERT_EQUAL(mpx_obj_len(keys), 2);
    if (mpx_obj_len(keys) == 2) {
      CU_ASSERT_TRUE(mpx_obj_equal(mpx_obj_item(keys, 0), k));
      CU_ASSERT_TRUE(mpx_obj_equal(mpx_obj_item(keys, 1), k2));
    }
    mpx_obj_release(keys);
    CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k2, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_equal(got, val));
    mpx_obj_release(got);
    CU_ASSERT_EQUAL(mpx_proxy_dict_del(d, k2), 0);
    CU_ASSERT_EQUAL(mpx_proxy_dict_del(d, k2), MPX_ENOENT);
    CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    mpx_obj_release(k2);
    mpx_obj_release(val);
  }
  /* list */
  l = create_ok(c, "list", NULL);
  for (int i = 0; i < 3; i++) {
    mpx_obj_t *it = mpx_obj_int(i * 10);
    CU_ASSERT_EQUAL(mpx_proxy_list_append(l, it), 0);
    mpx_obj_release(it);
  }
  CU_ASSERT_EQUAL(mpx_proxy_len(l, &n), 0);
  CU_ASSERT_EQUAL(n, 3);
  CU_ASSERT_EQUAL(mpx_proxy_list_get(l, 2, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(got), 20);
  mpx_obj_release(got);
  CU_ASSERT_EQUAL(mpx_proxy_list_get(l, -1, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(got), 20);
  mpx_obj_release(got);
  CU_ASSERT_EQUAL(mpx_proxy_list_get(l, 3, &got), MPX_ERANGE);
  /* Value('i', 5) */
  v = create_ok(c, "Value", TUP(str_("i"), mpx_obj_int(5)));
  CU_ASSERT_EQUAL(mpx_proxy_value_get(v, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(got), 5);
  mpx_obj_release(got);
  {
    mpx_obj_t *x = mpx_obj_int(-9);
    CU_ASSERT_EQUAL(mpx_proxy_value_set(v, x), 0);
    mpx_obj_release(x);
  }
  CU_ASSERT_EQUAL(mpx_proxy_value_get(v, &got), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(got), -9);
  mpx_obj_release(got);
  /* Lock */
  lk = create_ok(c, "Lock", NULL);
  CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, -1), 0);
  CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, 0), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, 0.1), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_proxy_lock_release(lk), 0);
  CU_ASSERT_EQUAL(mpx_proxy_lock_release(lk), MPX_EREMOTE); /* RuntimeError */
  CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, 1), 0);
  CU_ASSERT_EQUAL(mpx_proxy_lock_release(lk), 0);
  /* Event */
  e = create_ok(c, "Event", NULL);
  CU_ASSERT_EQUAL(mpx_proxy_event_is_set(e, &set), 0);
  CU_ASSERT_FALSE(set);
  CU_ASSERT_EQUAL(mpx_proxy_event_wait(e, 0.1), MPX_ETIMEDOUT);
  CU_ASSERT_EQUAL(mpx_proxy_event_set(e), 0);
  CU_ASSERT_EQUAL(mpx_proxy_event_wait(e, -1), 0);
  CU_ASSERT_EQUAL(mpx_proxy_event_is_set(e, &set), 0);
  CU_ASSERT_TRUE(set);
  CU_ASSERT_EQUAL(mpx_proxy_event_clear(e), 0);
  CU_ASSERT_EQUAL(mpx_proxy_event_wait(e, 0), MPX_ETIMEDOUT);
  /* Queue(1): queue.Full is MPX_EAGAIN too. */
  {
    mpx_proxy_t *q1 = create_ok(c, "Queue", TUP(mpx_obj_int(1)));
    mpx_obj_t *x = mpx_obj_int(1);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q1, x, 0), 0);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q1, x, 0), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q1, x, 0.1), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q1, &got, 0), 0);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q1, x, 0), 0);
    mpx_obj_release(got);
    mpx_obj_release(x);
    mpx_proxy_free(q1);
  }
  check_joinable_queue(c);
  /* A published dict, seen from Python and back. */
  pd = create_ok(c, "get_dict", NULL);
  {
    mpx_obj_t *from = str_("from"), *cs = str_("c"), *nk = str_("n"),
              *n42 = mpx_obj_int(42), *pykey = str_("py");
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(pd, from, cs), 0);
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(pd, nk, n42), 0);
    CU_ASSERT_EQUAL(py_step(py, "dict", bound), 0);
    CU_ASSERT_EQUAL(mpx_proxy_dict_get(pd, pykey, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_type(got) == MPX_OBJ_STR &&
                   strcmp(mpx_obj_str_data(got, NULL), "yes") == 0);
    mpx_obj_release(got);
    mpx_obj_release(from);
    mpx_obj_release(cs);
    mpx_obj_release(nk);
    mpx_obj_release(n42);
    mpx_obj_release(pykey);
  }
  mpx_obj_release(k);
  mpx_proxy_free(d);
  mpx_proxy_free(l);
  mpx_proxy_free(v);
  mpx_proxy_free(lk);
  mpx_proxy_free(e);
  mpx_proxy_free(pd);
  stop_server(c, srv);
  mpx_mclient_free(c);
}

static void test_py_types(void) {
  find_pythons();
  for (int py = 0; py < n_pythons; py++) py_types(pythons[py]);
}

/* #ERROR gives MPX_EREMOTE with the exception; #TRACEBACK (a method not
 * exposed, an id the server freed, an unknown typeid) gives MPX_EPROTO
 * with the server's text; the connection works after each. */
static void test_py_errors(void) {
  char bound[160];
  mpx_mclient_t *c;
  mpx_proxy_t *d, *d2, *p = NULL;
  mpx_obj_t *res = NULL, *args;
  size_t n;
  pid_t srv = start_py_server("tcp://127.0.0.1:0", bound, sizeof bound);

  c = connect_ok(bound, NULL);
  d = create_ok(c, "dict", NULL);
  d2 = create_ok(c, "dict", NULL);
  /* d['missing'] raises KeyError('missing'), pickled whole. */
  args = TUP(str_("missing"));
  CU_ASSERT_EQUAL(mpx_proxy_call(d, "__getitem__", args, NULL, &res, NULL),
                  MPX_EREMOTE);
  CU_ASSERT_EQUAL(mpx_obj_type(res), MPX_OBJ_OPAQUE);
  if (mpx_obj_type(res) == MPX_OBJ_OPAQUE) {
    CU_ASSERT_STRING_EQUAL(mpx_obj_opaque_module(res), "builtins");
    CU_ASSERT_STRING_EQUAL(mpx_obj_opaque_name(res), "KeyError");
    CU_ASSERT_TRUE(mpx_obj_equal(mpx_obj_opaque_args(res), args));
  }
  mpx_obj_release(res);
  res = NULL;
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "KeyError"));
  /* A method the proxy does not expose. */
  CU_ASSERT_EQUAL(mpx_proxy_call(d, "__class__", NULL, NULL, &res, NULL),
                  MPX_EPROTO);
  CU_ASSERT_PTR_NULL(res);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "#TRACEBACK"));
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "AttributeError"));
  CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
  CU_ASSERT_EQUAL(n, 0);
  /* An id the server has freed: decref it behind the proxy's back. */
  {
    mpx_obj_t *a = TUP(str_(mpx_proxy_ident(d2)));
    CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "decref", a, NULL), 0);
    mpx_obj_release(a);
  }
  CU_ASSERT_EQUAL(mpx_proxy_len(d2, &n), MPX_EPROTO);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "KeyError"));
  CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
  /* Unknown typeid and unknown server method. */
  CU_ASSERT_EQUAL(mpx_mclient_create(c, &p, "no_such_type", NULL, NULL), MPX_EPROTO);
  CU_ASSERT_PTR_NULL(p);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "no_such_call", NULL, NULL), MPX_EPROTO);
  CU_ASSERT_PTR_NOT_NULL(strstr(mpx_last_error(), "unrecognized"));
  /* The fallbacks CPython serves for any object. */
  CU_ASSERT_EQUAL(mpx_proxy_call(d, "__repr__", NULL, NULL, &res, NULL), 0);
  CU_ASSERT_TRUE(mpx_obj_type(res) == MPX_OBJ_STR &&
                 strcmp(mpx_obj_str_data(res, NULL), "{}") == 0);
  mpx_obj_release(res);
  CU_ASSERT_EQUAL(mpx_proxy_call(d, "#GETVALUE", NULL, NULL, &res, NULL), 0);
  CU_ASSERT_EQUAL(mpx_obj_type(res), MPX_OBJ_MAP);
  mpx_obj_release(res);
  mpx_obj_release(args);
  mpx_proxy_free(d);
  mpx_proxy_free(d2); /* its decref fails on the server: ignored */
  stop_server(c, srv);
  mpx_mclient_free(c);
}

/* number_of_objects shows each create and each decref; a #PROXY reply
 * (a dict's __iter__ gives an Iterator) is a proxy that counts too. */
static void py_refcounts(const char *py) {
  char bound[160];
  mpx_mclient_t *c;
  mpx_proxy_t *p[3], *it = NULL;
  mpx_obj_t *res = NULL;
  int64_t base;
  pid_t srv = start_py_server_with(py, "tcp://127.0.0.1:0", bound, sizeof bound);

  c = connect_ok(bound, NULL);
  CU_ASSERT_EQUAL_FATAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL_FATAL(mpx_obj_type(res), MPX_OBJ_INT);
  base = mpx_obj_get_int(res);
  mpx_obj_release(res);
  for (int i = 0; i < 3; i++) p[i] = create_ok(c, "dict", NULL);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(res), base + 3);
  mpx_obj_release(res);
  {
    mpx_obj_t *k = str_("a"), *one = mpx_obj_int(1);
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(p[0], k, one), 0);
    mpx_obj_release(k);
    mpx_obj_release(one);
  }
  CU_ASSERT_EQUAL(mpx_proxy_call(p[0], "__iter__", NULL, NULL, &res, &it), 0);
  CU_ASSERT_PTR_NULL(res);
  CU_ASSERT_PTR_NOT_NULL_FATAL(it);
  CU_ASSERT_STRING_EQUAL(mpx_proxy_typeid(it), "Iterator");
  CU_ASSERT_TRUE(mpx_proxy_exposes(it, "__next__"));
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(res), base + 4);
  mpx_obj_release(res);
  CU_ASSERT_EQUAL(mpx_proxy_call(it, "__next__", NULL, NULL, &res, NULL), 0);
  CU_ASSERT_TRUE(mpx_obj_type(res) == MPX_OBJ_STR &&
                 strcmp(mpx_obj_str_data(res, NULL), "a") == 0);
  mpx_obj_release(res);
  CU_ASSERT_EQUAL(mpx_proxy_call(it, "__next__", NULL, NULL, &res, NULL),
                  MPX_EREMOTE);
  CU_ASSERT_STRING_EQUAL(mpx_obj_opaque_name(res), "StopIteration");
  mpx_obj_release(res);
  mpx_proxy_free(it);
  /* A #PROXY nobody asked to keep is released at once. */
  CU_ASSERT_EQUAL(mpx_proxy_call(p[0], "__iter__", NULL, NULL, NULL, NULL), 0);
  for (int i = 0; i < 3; i++) {
    mpx_proxy_free(p[i]);
    CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
    CU_ASSERT_EQUAL(mpx_obj_get_int(res), base + 2 - i);
    mpx_obj_release(res);
  }
  stop_server(c, srv);
  mpx_mclient_free(c);
}

static void test_py_refcounts(void) {
  find_pythons();
  for (int py = 0; py < n_pythons; py++) py_refcounts(pythons[py]);
}

/* A proxy freed after its client still sends its decref (the client
 * lives until its last proxy). */
static void test_py_free_order(void) {
  char bound[160];
  mpx_mclient_t *c, *c2;
  mpx_proxy_t *p;
  mpx_obj_t *res = NULL;
  int64_t base;
  pid_t srv = start_py_server("tcp://127.0.0.1:0", bound, sizeof bound);

  c2 = connect_ok(bound, NULL);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c2, "number_of_objects", NULL, &res), 0);
  base = mpx_obj_get_int(res);
  mpx_obj_release(res);
  c = connect_ok(bound, NULL);
  p = create_ok(c, "list", NULL);
  mpx_mclient_free(c);
  CU_ASSERT_EQUAL(mpx_proxy_len(p, NULL), 0);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c2, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(res), base + 1);
  mpx_obj_release(res);
  mpx_proxy_free(p);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c2, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(res), base);
  mpx_obj_release(res);
  stop_server(c2, srv);
  mpx_mclient_free(c2);
}

/* Wrong key: MPX_EAUTH. msgpack against CPython: MPX_ENOTSUP. Nobody
 * there: MPX_ECONNREFUSED. A call longer than the client's timeout:
 * MPX_ETIMEDOUT, and the next call works on a new connection. */
static void test_py_connect_errors_and_timeout(void) {
  char bound[160];
  mpx_mclient_t *c = NULL;
  mpx_mclient_opts_t o = {0};
  mpx_proxy_t *q;
  mpx_obj_t *res = NULL, *one = mpx_obj_int(1);
  pid_t srv = start_py_server("tcp://127.0.0.1:0", bound, sizeof bound);

  mpx_test_plugin_path();
  CU_ASSERT_EQUAL(mpx_mclient_connect(&c, bound, "wrong", 5, NULL), MPX_EAUTH);
  CU_ASSERT_PTR_NULL(c);
  o.codec = "msgpack";
  CU_ASSERT_EQUAL(mpx_mclient_connect(&c, bound, KEY, KEYLEN, &o), MPX_ENOTSUP);
  CU_ASSERT_PTR_NULL(c);
  o.codec = "yaml";
  CU_ASSERT_EQUAL(mpx_mclient_connect(&c, bound, KEY, KEYLEN, &o), MPX_EINVAL);
  o.codec = NULL;
  o.timeout = 2;
  c = connect_ok(bound, &o);
  q = create_ok(c, "Queue", NULL);
  /* Queue.get() with no timeout blocks in the server: the call gives up. */
  CU_ASSERT_EQUAL(mpx_proxy_call(q, "get", NULL, NULL, &res, NULL), MPX_ETIMEDOUT);
  CU_ASSERT_PTR_NULL(res);
  /* A typed get with its own timeout, longer than the client's, is given
   * that time on top: queue.Empty after 3 s, not a timeout after 2. */
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &res, 3), MPX_EAGAIN);
  CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, one, 0), 0);
  CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, one, 0), 0);
  /* The get that gave up is still parked in the server and takes at
   * most one of the two. */
  CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &res, 5), 0);
  CU_ASSERT_TRUE(mpx_obj_equal(res, one));
  mpx_obj_release(res);
  mpx_proxy_free(q);
  mpx_obj_release(one);
  stop_server(c, srv);
  mpx_mclient_free(c);
  CU_ASSERT_EQUAL(mpx_mclient_connect(&c, bound, KEY, KEYLEN, NULL), MPX_ECONNREFUSED);
}

/* ---- against an mpx server ------------------------------------------------- */

/* An mpx server in a child process (forked before this process has any
 * thread), publishing get_queue (a Queue) and get_dict (a dict) as the
 * Python helper does: its pid, its address in out. It exits 0 after a
 * shutdown request. */
static pid_t start_mpx_server(const char *listen, char *out, size_t cap) {
  int p[2];
  pid_t pid;
  mpx_test_plugin_path();
  CU_ASSERT_FATAL(pipe(p) == 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    mpx_manager_opts_t o = {.address = listen, .authkey = KEY,
                            .authkey_len = KEYLEN};
    mpx_manager_t *m;
    const char *a;
    close(p[0]);
    if (mpx_manager_new(&m, &o) != 0 ||
        mpx_manager_expose(m, "get_queue", "Queue", NULL, NULL) != 0 ||
        mpx_manager_expose(m, "get_dict", "dict", NULL, NULL) != 0) {
      fprintf(stderr, "mpx server: %s\n", mpx_last_error());
      _exit(1);
    }
    a = mpx_manager_address(m);
    if (write(p[1], a, strlen(a)) < 0 || write(p[1], "\n", 1) != 1) _exit(1);
    close(p[1]);
    if (mpx_manager_wait(m, 120) != 0) _exit(2);
    mpx_manager_free(m);
    _exit(0);
  }
  close(p[1]);
  CU_ASSERT_FATAL(read_line(p[0], out, cap, 30));
  close(p[0]);
  return pid;
}

/* The same values through an mpx server, pickle and msgpack, and between
 * the mpx client and CPython's client through it. */
static void test_mpx_queue_roundtrip(void) {
  for (int kind = 0; kind < 2; kind++) {
    char addr[128], bound[160];
    mpx_obj_t *v[NVALUES], *got = NULL;
    mpx_mclient_t *c, *cm;
    mpx_mclient_opts_t om = {.codec = "msgpack"};
    mpx_proxy_t *q, *qm;
    pid_t srv;

    if (kind == 0) snprintf(addr, sizeof addr, "tcp://127.0.0.1:0");
    else snprintf(addr, sizeof addr, "unix:/tmp/mpx-mc-%d.sock", (int)getpid());
    srv = start_mpx_server(addr, bound, sizeof bound);
    c = connect_ok(bound, NULL);
    cm = connect_ok(bound, &om);
    CU_ASSERT_TRUE(mpx_mclient_is_mpx(c));
    CU_ASSERT_TRUE(mpx_mclient_is_mpx(cm));
    q = create_ok(c, "get_queue", NULL);
    qm = create_ok(cm, "get_queue", NULL);
    CU_ASSERT_STRING_EQUAL(mpx_proxy_ident(q), mpx_proxy_ident(qm));
    make_values(v);
    /* pickle in, msgpack out, and the reverse */
    for (int dir = 0; dir < 2; dir++) {
      mpx_proxy_t *in = dir ? qm : q, *out = dir ? q : qm;
      char what[16];
      for (size_t i = 0; i < NVALUES; i++)
        CU_ASSERT_EQUAL(mpx_proxy_queue_put(in, v[i], -1), 0);
      snprintf(what, sizeof what, "dir %d ", dir);
      get_values(out, v, what);
    }
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(qm, &got, 0), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0.1), MPX_EAGAIN);
    /* C to Python and back through the mpx server. */
    for (size_t i = 0; i < NVALUES; i++)
      CU_ASSERT_EQUAL(mpx_proxy_queue_put(i % 2 ? q : qm, v[i], -1), 0);
    CU_ASSERT_EQUAL(py_step("python3", "check", bound), 0);
    CU_ASSERT_EQUAL(py_step("python3", "fill", bound), 0);
    for (size_t i = 0; i < NVALUES; i++) {
      CU_ASSERT_EQUAL(mpx_proxy_queue_get(i % 2 ? qm : q, &got, 10), 0);
      CU_ASSERT_TRUE(same(got, v[i]));
      mpx_obj_release(got);
      got = NULL;
    }
    free_values(v);
    mpx_proxy_free(q);
    mpx_proxy_free(qm);
    mpx_mclient_free(cm);
    stop_server(c, srv); /* shutdown, exit 0 */
    mpx_mclient_free(c);
  }
}

/* The typed calls, error mapping and reference counts on an mpx server,
 * in both codecs. */
static void test_mpx_types_and_errors(void) {
  char bound[160];
  pid_t srv = start_mpx_server("tcp://127.0.0.1:0", bound, sizeof bound);
  mpx_mclient_t *ctl = connect_ok(bound, NULL);
  for (int codec = 0; codec < 2; codec++) {
    mpx_mclient_opts_t o = {.codec = codec ? "msgpack" : "pickle"};
    mpx_mclient_t *c = connect_ok(bound, &o);
    mpx_proxy_t *d, *d2, *l, *v, *lk, *e, *q, *it = NULL, *p = NULL;
    mpx_obj_t *k = str_("k"), *seven = mpx_obj_int(7), *got = NULL, *res = NULL;
    size_t n = 0;
    bool set = true;
    int64_t base;

    CU_ASSERT_EQUAL_FATAL(mpx_mclient_server_call(ctl, "number_of_objects", NULL, &res), 0);
    base = mpx_obj_get_int(res);
    mpx_obj_release(res);
    res = NULL;
    d = create_ok(c, "dict", NULL);
    d2 = create_ok(c, "dict", NULL);
    CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k, &got), MPX_ENOENT);
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(d, k, seven), 0);
    CU_ASSERT_EQUAL(mpx_proxy_dict_get(d, k, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_equal(got, seven));
    mpx_obj_release(got);
    CU_ASSERT_EQUAL(mpx_proxy_dict_keys(d, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_type(got) == MPX_OBJ_ARRAY && mpx_obj_len(got) == 1 &&
                   mpx_obj_equal(mpx_obj_item(got, 0), k));
    mpx_obj_release(got);
    CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
    CU_ASSERT_EQUAL(n, 1);
    CU_ASSERT_EQUAL(mpx_proxy_dict_del(d, k), 0);
    CU_ASSERT_EQUAL(mpx_proxy_dict_del(d, k), MPX_ENOENT);
    /* #ERROR: the exception itself. */
    {
      mpx_obj_t *args = TUP(str_("missing"));
      CU_ASSERT_EQUAL(mpx_proxy_call(d, "__getitem__", args, NULL, &res, NULL),
                      MPX_EREMOTE);
      CU_ASSERT_TRUE(mpx_obj_type(res) == MPX_OBJ_OPAQUE &&
                     strcmp(mpx_obj_opaque_name(res), "KeyError") == 0);
      mpx_obj_release(res);
      res = NULL;
      mpx_obj_release(args);
    }
    /* #TRACEBACK: not exposed, then a freed id; the connection goes on. */
    CU_ASSERT_EQUAL(mpx_proxy_call(d, "__class__", NULL, NULL, &res, NULL), MPX_EPROTO);
    CU_ASSERT_PTR_NULL(res);
    {
      mpx_obj_t *a = TUP(str_(mpx_proxy_ident(d2)));
      CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "decref", a, NULL), 0);
      mpx_obj_release(a);
    }
    CU_ASSERT_EQUAL(mpx_proxy_len(d2, &n), MPX_EPROTO);
    CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
    CU_ASSERT_EQUAL(mpx_mclient_create(c, &p, "no_such_type", NULL, NULL), MPX_EPROTO);
    CU_ASSERT_PTR_NULL(p);
    /* list, Value, Lock, Event, queue.Empty */
    l = create_ok(c, "list", NULL);
    CU_ASSERT_EQUAL(mpx_proxy_list_append(l, seven), 0);
    CU_ASSERT_EQUAL(mpx_proxy_list_get(l, 0, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_equal(got, seven));
    mpx_obj_release(got);
    CU_ASSERT_EQUAL(mpx_proxy_list_get(l, 5, &got), MPX_ERANGE);
    v = create_ok(c, "Value", TUP(str_("i"), mpx_obj_int(5)));
    CU_ASSERT_EQUAL(mpx_proxy_value_set(v, seven), 0);
    CU_ASSERT_EQUAL(mpx_proxy_value_get(v, &got), 0);
    CU_ASSERT_TRUE(mpx_obj_equal(got, seven));
    mpx_obj_release(got);
    lk = create_ok(c, "Lock", NULL);
    CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, -1), 0);
    CU_ASSERT_EQUAL(mpx_proxy_lock_acquire(lk, 0.05), MPX_ETIMEDOUT);
    CU_ASSERT_EQUAL(mpx_proxy_lock_release(lk), 0);
    e = create_ok(c, "Event", NULL);
    CU_ASSERT_EQUAL(mpx_proxy_event_wait(e, 0.05), MPX_ETIMEDOUT);
    CU_ASSERT_EQUAL(mpx_proxy_event_set(e), 0);
    CU_ASSERT_EQUAL(mpx_proxy_event_is_set(e, &set), 0);
    CU_ASSERT_TRUE(set);
    CU_ASSERT_EQUAL(mpx_proxy_event_wait(e, -1), 0);
    q = create_ok(c, "Queue", TUP(mpx_obj_int(1)));
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_get(q, &got, 0.05), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, seven, 0), 0);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, seven, 0), MPX_EAGAIN);
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, seven, 0.05), MPX_EAGAIN);
    check_joinable_queue(c);
    /* #PROXY */
    CU_ASSERT_EQUAL(mpx_proxy_dict_set(d, k, seven), 0);
    CU_ASSERT_EQUAL(mpx_proxy_call(d, "__iter__", NULL, NULL, &res, &it), 0);
    CU_ASSERT_PTR_NOT_NULL(it);
    if (it != NULL) {
      CU_ASSERT_EQUAL(mpx_proxy_call(it, "__next__", NULL, NULL, &res, NULL), 0);
      CU_ASSERT_TRUE(mpx_obj_equal(res, k));
      mpx_obj_release(res);
      res = NULL;
    }
    CU_ASSERT_EQUAL(mpx_mclient_server_call(ctl, "number_of_objects", NULL, &res), 0);
    CU_ASSERT_EQUAL(mpx_obj_get_int(res), base + 7); /* d l v lk e q it */
    mpx_obj_release(res);
    mpx_proxy_free(it);
    mpx_proxy_free(d);
    mpx_proxy_free(d2);
    mpx_proxy_free(l);
    mpx_proxy_free(v);
    mpx_proxy_free(lk);
    mpx_proxy_free(e);
    mpx_proxy_free(q);
    CU_ASSERT_EQUAL(mpx_mclient_server_call(ctl, "number_of_objects", NULL, &res), 0);
    CU_ASSERT_EQUAL(mpx_obj_get_int(res), base);
    mpx_obj_release(res);
    mpx_obj_release(k);
    mpx_obj_release(seven);
    mpx_mclient_free(c);
  }
  stop_server(ctl, srv);
  mpx_mclient_free(ctl);
}

/* A fork child must not use its parent's client (the connection is
 * shared): calls are MPX_ESTATE, and freeing a proxy there sends no
 * decref, so the parent's proxy goes on working. */
static void test_mpx_fork_child(void) {
  char bound[160];
  pid_t srv = start_mpx_server("tcp://127.0.0.1:0", bound, sizeof bound), pid;
  mpx_mclient_t *c = connect_ok(bound, NULL);
  mpx_proxy_t *d = create_ok(c, "dict", NULL);
  mpx_obj_t *res = NULL;
  int64_t n0;
  size_t n = 9;

  CU_ASSERT_EQUAL_FATAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
  n0 = mpx_obj_get_int(res);
  mpx_obj_release(res);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    int ok = mpx_proxy_len(d, &n) == MPX_ESTATE &&
             mpx_mclient_server_call(c, "number_of_objects", NULL, NULL) == MPX_ESTATE;
    mpx_proxy_free(d);
    mpx_mclient_free(c);
    _exit(ok ? 0 : 1);
  }
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  CU_ASSERT_EQUAL(mpx_proxy_len(d, &n), 0);
  CU_ASSERT_EQUAL(n, 0);
  CU_ASSERT_EQUAL(mpx_mclient_server_call(c, "number_of_objects", NULL, &res), 0);
  CU_ASSERT_EQUAL(mpx_obj_get_int(res), n0);
  mpx_obj_release(res);
  mpx_proxy_free(d);
  stop_server(c, srv);
  mpx_mclient_free(c);
}

/* 64 client processes on one queue of an mpx server, each with its own
 * client (half pickle, half msgpack): 32 producers put 200 distinct ints
 * each, 32 consumers get until a None; every item is delivered exactly
 * once. */
#define HAMMER_CLIENTS 64
#define HAMMER_ITEMS 200
static void test_mpx_hammer(void) {
  enum { NPROD = HAMMER_CLIENTS / 2, NCONS = HAMMER_CLIENTS / 2 };
  char bound[160];
  pid_t srv = start_mpx_server("tcp://127.0.0.1:0", bound, sizeof bound);
  pid_t prod[NPROD], cons[NCONS];
  int pipes[NCONS][2];
  static unsigned char seen[NPROD * HAMMER_ITEMS];
  size_t total = 0, dups = 0, bad = 0;
  mpx_mclient_t *c;
  mpx_proxy_t *q;

  memset(seen, 0, sizeof seen);
  for (int i = 0; i < NCONS; i++) {
    CU_ASSERT_FATAL(pipe(pipes[i]) == 0);
    cons[i] = fork();
    CU_ASSERT_FATAL(cons[i] >= 0);
    if (cons[i] == 0) {
      mpx_mclient_opts_t o = {.codec = i % 2 ? "msgpack" : "pickle", .timeout = 60};
      mpx_mclient_t *cc;
      mpx_proxy_t *cq;
      mpx_obj_t *it = NULL;
      close(pipes[i][0]);
      if (mpx_mclient_connect(&cc, bound, KEY, KEYLEN, &o) != 0 ||
          mpx_mclient_create(cc, &cq, "get_queue", NULL, NULL) != 0)
        _exit(10);
      for (;;) {
        int64_t x;
        if (mpx_proxy_queue_get(cq, &it, 60) != 0) _exit(11);
        if (mpx_obj_type(it) == MPX_OBJ_NULL) break;
        x = mpx_obj_get_int(it);
        mpx_obj_release(it);
        if (write(pipes[i][1], &x, sizeof x) != sizeof x) _exit(12);
      }
      mpx_proxy_free(cq);
      mpx_mclient_free(cc);
      _exit(0);
    }
    close(pipes[i][1]);
  }
  for (int i = 0; i < NPROD; i++) {
    prod[i] = fork();
    CU_ASSERT_FATAL(prod[i] >= 0);
    if (prod[i] == 0) {
      mpx_mclient_opts_t o = {.codec = i % 2 ? "pickle" : "msgpack", .timeout = 60};
      mpx_mclient_t *cc;
      mpx_proxy_t *cq;
      if (mpx_mclient_connect(&cc, bound, KEY, KEYLEN, &o) != 0 ||
          mpx_mclient_create(cc, &cq, "get_queue", NULL, NULL) != 0)
        _exit(10);
      for (int j = 0; j < HAMMER_ITEMS; j++) {
        mpx_obj_t *it = mpx_obj_int((int64_t)i * HAMMER_ITEMS + j);
        if (mpx_proxy_queue_put(cq, it, -1) != 0) _exit(11);
        mpx_obj_release(it);
      }
      mpx_proxy_free(cq);
      mpx_mclient_free(cc);
      _exit(0);
    }
  }
  for (int i = 0; i < NPROD; i++) CU_ASSERT_EQUAL(mpx_test_reap(prod[i], 120), 0);
  c = connect_ok(bound, NULL);
  q = create_ok(c, "get_queue", NULL);
  for (int i = 0; i < NCONS; i++) {
    mpx_obj_t *none = mpx_obj_null();
    CU_ASSERT_EQUAL(mpx_proxy_queue_put(q, none, -1), 0);
  }
  for (int i = 0; i < NCONS; i++) {
    int64_t x;
    while (read(pipes[i][0], &x, sizeof x) == sizeof x) {
      total++;
      if (x < 0 || x >= NPROD * HAMMER_ITEMS) bad++;
      else if (seen[x]++) dups++;
    }
    close(pipes[i][0]);
    CU_ASSERT_EQUAL(mpx_test_reap(cons[i], 120), 0);
  }
  CU_ASSERT_EQUAL(total, (size_t)NPROD * HAMMER_ITEMS);
  CU_ASSERT_EQUAL(dups, 0);
  CU_ASSERT_EQUAL(bad, 0);
  {
    size_t n = 99;
    CU_ASSERT_EQUAL(mpx_proxy_queue_qsize(q, &n), 0);
    CU_ASSERT_EQUAL(n, 0);
  }
  mpx_proxy_free(q);
  stop_server(c, srv);
  mpx_mclient_free(c);
}

/* ---- a server that breaks the protocol -------------------------------------- */

/* A fake server (a child on an mpx listener): for each connection in turn
 * it answers accept_connection with replies[i] (a pickle; NULL: hang up
 * instead), then the dummy with #RETURN None, then hangs up. */
static const unsigned char RETURN_NONE[] = {
    0x80, 0x04, 0x95, 0x0e, 0, 0, 0, 0, 0, 0, 0, 0x8c, 0x07, '#', 'R', 'E',
    'T', 'U', 'R', 'N', 0x94, 'N', 0x86, 0x94, '.'}; /* CPython's own bytes */

static void test_bad_server(void) {
  static const unsigned char not_pickle[] = "not a pickle";
  static const unsigned char none[] = {0x80, 0x04, 'N', '.'}; /* None */
  static const struct {
    const unsigned char *reply;
    size_t len;
    int want;
  } cases[] = {
      {not_pickle, sizeof not_pickle - 1, MPX_ECODEC}, /* undecodable */
      {none, sizeof none, MPX_EPROTO},                 /* no (kind, payload) */
      {NULL, 0, MPX_EPIPE},                            /* hangs up */
      {RETURN_NONE, sizeof RETURN_NONE, MPX_EPIPE},    /* hangs up at dummy */
  };
  enum { N = sizeof cases / sizeof cases[0] };
  mpx_listener_t *l;
  pid_t pid;

  mpx_test_plugin_path();
  CU_ASSERT_EQUAL_FATAL(mpx_listener_new(&l, "tcp://127.0.0.1:0", KEY, KEYLEN, NULL), 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    for (int i = 0; i < N; i++) {
      mpx_conn_t *c;
      void *req = NULL;
      size_t n;
      if (mpx_listener_accept(l, &c, 30) != 0) _exit(10 + i);
      if (mpx_conn_recv_bytes(c, &req, &n, 0, 30) != 0) _exit(20 + i);
      free(req);
      if (cases[i].reply != NULL) {
        if (mpx_conn_send_bytes(c, cases[i].reply, cases[i].len, 5) != 0) _exit(30 + i);
        if (cases[i].reply == RETURN_NONE &&
            mpx_conn_recv_bytes(c, &req, &n, 0, 30) == 0) /* the dummy */
          free(req);
      }
      mpx_conn_free(c);
    }
    _exit(0);
  }
  for (int i = 0; i < N; i++) {
    mpx_mclient_t *c = NULL;
    CU_ASSERT_EQUAL(mpx_mclient_connect(&c, mpx_listener_address(l), KEY, KEYLEN, NULL),
                    cases[i].want);
    CU_ASSERT_PTR_NULL(c);
  }
  CU_ASSERT_EQUAL(mpx_test_reap(pid, 30), 0);
  mpx_listener_free(l);
}

/* ---- mpx manager call ------------------------------------------------------ */

/* <build>/tools/mpx, from this program's <build>/tests/test_manager_client. */
static void mpx_bin(char *out, size_t cap) {
  char exe[4096], *slash;
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  CU_ASSERT_FATAL(n > 0);
  exe[n] = '\0';
  for (int i = 0; i < 2 && (slash = strrchr(exe, '/')) != NULL; i++) *slash = '\0';
  snprintf(out, cap, "%s/tools/mpx", exe);
}

/* Runs `mpx manager call ARGS...` (NULL-terminated): its exit code, its
 * stdout in out (stderr goes to /dev/null). */
static int run_call(char *out, size_t cap, ...) {
  char bin[4200];
  const char *argv[32];
  int p[2], n = 0;
  size_t got = 0;
  va_list ap;
  pid_t pid;
  mpx_bin(bin, sizeof bin);
  argv[n++] = bin;
  argv[n++] = "manager";
  argv[n++] = "call";
  va_start(ap, cap);
  while (n < 31 && (argv[n] = va_arg(ap, const char *)) != NULL) n++;
  va_end(ap);
  argv[n] = NULL;
  CU_ASSERT_FATAL(pipe(p) == 0);
  pid = fork();
  CU_ASSERT_FATAL(pid >= 0);
  if (pid == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(p[1], 1);
    dup2(devnull, 2);
    close(p[0]);
    close(p[1]);
    execv(bin, (char *const *)argv);
    _exit(127);
  }
  close(p[1]);
  for (;;) {
    ssize_t k = read(p[0], out + got, cap - 1 - got);
    if (k <= 0) break;
    got += (size_t)k;
  }
  out[got] = '\0';
  close(p[0]);
  return mpx_test_reap(pid, 60);
}

static void test_cli_call(void) {
  char bound[160], out[4096], keyfile[64];
  int fd;
  pid_t srv = start_py_server("tcp://127.0.0.1:0", bound, sizeof bound);

  snprintf(keyfile, sizeof keyfile, "/tmp/mpx-mc-key-%d", (int)getpid());
  fd = open(keyfile, O_CREAT | O_TRUNC | O_WRONLY, 0600);
  CU_ASSERT_FATAL(fd >= 0);
  CU_ASSERT_EQUAL_FATAL(write(fd, KEY, KEYLEN), (ssize_t)KEYLEN);
  close(fd);
#define CALL(...) run_call(out, sizeof out, "--connect", bound, "--authkey-file", \
                           keyfile, __VA_ARGS__, (char *)NULL)
  CU_ASSERT_EQUAL(CALL("get_queue", "put", "{\"a\": [1, 2.5, null], \"t\": {\"$tuple\": [true]}}"), 0);
  CU_ASSERT_STRING_EQUAL(out, "null\n");
  CU_ASSERT_EQUAL(CALL("get_queue", "put", "-7"), 0);
  CU_ASSERT_EQUAL(CALL("get_queue", "qsize"), 0);
  CU_ASSERT_STRING_EQUAL(out, "2\n");
  CU_ASSERT_EQUAL(CALL("get_queue", "get"), 0);
  CU_ASSERT_STRING_EQUAL(out, "{\"a\":[1,2.5,null],\"t\":{\"$tuple\":[true]}}\n");
  CU_ASSERT_EQUAL(CALL("get_queue", "get", "true", "5"), 0);
  CU_ASSERT_STRING_EQUAL(out, "-7\n");
  /* queue.Empty, a method not exposed: failures (3), nothing printed. */
  CU_ASSERT_EQUAL(CALL("get_queue", "get", "false"), 3);
  CU_ASSERT_STRING_EQUAL(out, "");
  CU_ASSERT_EQUAL(CALL("--kw", "timeout=0.1", "get_queue", "get"), 3);
  CU_ASSERT_EQUAL(CALL("get_queue", "nope"), 3);
  /* Usage errors (2). */
  CU_ASSERT_EQUAL(CALL("get_queue", "put", "{not json"), 2);
  CU_ASSERT_EQUAL(CALL("get_queue"), 2);
  CU_ASSERT_EQUAL(CALL("--codec", "yaml", "get_queue", "qsize"), 2);
  CU_ASSERT_EQUAL(run_call(out, sizeof out, "get_queue", "qsize", (char *)NULL), 2);
  CU_ASSERT_EQUAL(run_call(out, sizeof out, "--connect", bound, "--authkey-file",
                           "/nonexistent/key", "get_queue", "qsize", (char *)NULL), 2);
  CU_ASSERT_EQUAL(run_call(out, sizeof out, "--help", (char *)NULL), 0);
  CU_ASSERT_PTR_NOT_NULL(strstr(out, "usage: mpx manager call"));
  /* A wrong key, msgpack against CPython: failures. */
  fd = open(keyfile, O_TRUNC | O_WRONLY);
  CU_ASSERT_EQUAL(write(fd, "wrong", 5), 5);
  close(fd);
  CU_ASSERT_EQUAL(CALL("get_queue", "qsize"), 3);
  fd = open(keyfile, O_TRUNC | O_WRONLY);
  CU_ASSERT_EQUAL(write(fd, KEY, KEYLEN), (ssize_t)KEYLEN);
  close(fd);
  CU_ASSERT_EQUAL(CALL("--codec", "msgpack", "get_queue", "qsize"), 3);
  /* Server calls: every proxy of the calls above was released. */
  CU_ASSERT_EQUAL(CALL("--server", "number_of_objects"), 0);
  CU_ASSERT_STRING_EQUAL(out, "0\n");
  CU_ASSERT_EQUAL(CALL("--server", "shutdown"), 0);
  CU_ASSERT_STRING_EQUAL(out, "null\n");
#undef CALL
  CU_ASSERT_EQUAL(mpx_test_reap(srv, 30), 0);
  unlink(keyfile);
}

MPX_TEST_MAIN("manager_client",
              MPX_TEST(test_py_queue_roundtrip),
              MPX_TEST(test_py_pickle_protocols),
              MPX_TEST(test_py_types),
              MPX_TEST(test_py_errors),
              MPX_TEST(test_py_refcounts),
              MPX_TEST(test_py_free_order),
              MPX_TEST(test_py_connect_errors_and_timeout),
              MPX_TEST(test_cli_call),
              MPX_TEST(test_mpx_queue_roundtrip),
              MPX_TEST(test_mpx_types_and_errors),
              MPX_TEST(test_mpx_fork_child),
              MPX_TEST(test_bad_server),
              MPX_TEST(test_mpx_hammer))
