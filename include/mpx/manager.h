/* mpx: managers, after Python's multiprocessing.managers: shared objects
 * served over TCP or a Unix socket, wire-compatible with CPython.
 *
 * Server (one process owns the objects):
 *
 *   mpx_manager_opts_t o = {.address = "tcp://127.0.0.1:50000",
 *                           .authkey = "secret", .authkey_len = 6};
 *   mpx_manager_t *m;
 *   mpx_manager_new(&m, &o);                  // listening, serving on its thread
 *   mpx_manager_expose(m, "get_queue", "Queue", NULL, NULL);
 *   mpx_manager_wait(m, -1);                  // until a client sends shutdown
 *   mpx_manager_free(m);
 *
 * Python, standard library only, against it:
 *
 *   class M(BaseManager): pass
 *   M.register('get_queue')
 *   m = M(address=('127.0.0.1', 50000), authkey=b'secret'); m.connect()
 *   m.get_queue().put({'x': 1})
 *
 * Client in C (against an mpx server or a CPython one):
 *
 *   mpx_mclient_t *c;
 *   mpx_mclient_connect(&c, "tcp://127.0.0.1:50000", "secret", 6, NULL);
 *   mpx_proxy_t *q;
 *   mpx_mclient_create(c, &q, "get_queue", NULL, NULL);
 *   mpx_proxy_queue_put(q, item, -1);
 *   mpx_obj_t *got;
 *   mpx_proxy_queue_get(q, &got, 1.0);       // MPX_EAGAIN: queue.Empty
 *   mpx_proxy_free(q);                        // decref
 *   mpx_mclient_free(c);
 *
 * Wire. Every message is a frame of mpx/conn.h carrying a pickled tuple:
 * requests (ident, method, args, kwds), replies (kind, payload) with kind
 * "#RETURN", "#ERROR" (an exception object), "#TRACEBACK" (a str),
 * "#UNSERIALIZABLE" or "#PROXY" ((exposed, Token)). A connection first
 * passes the authkey challenge (mpx/listener.h). CPython's clients open a
 * short connection per server call (create, incref, decref, get_methods,
 * dummy, ...) and one persistent connection per thread after
 * "accept_connection"; an mpx server serves both, and also serves server
 * calls (ident None) on a persistent connection, which is what the mpx
 * client does when the server is mpx: one connection, one round trip per
 * call. Against a CPython server the mpx client falls back to CPython's
 * way (a short connection per create/incref/decref).
 *
 * Codecs. The server answers each request in the codec and pickle
 * protocol it came in: pickle 2 for a Python 2.7 client, 4 or 5 for
 * Python 3 (it never imports or executes anything: classes are opaque
 * names, and only the allow-listed ones below mean anything), or msgpack
 * for an mpx client that asks for it (mpx_mclient_opts_t.codec).
 *
 * Objects in the pickles: Token is the opaque newobj
 * multiprocessing.managers.Token with state (typeid, address, id); an
 * exception is the opaque reduce builtins.<Name> / queue.Empty /
 * queue.Full / threading.BrokenBarrierError with its args tuple.
 *
 * Threads. A manager serves on one libuv loop (its own thread, or the
 * caller's loop). A client and its proxies are used by one thread at a
 * time, and only in the process that connected the client (in a fork
 * child, calls are MPX_ESTATE and freeing a proxy sends no decref).
 *
 * Ownership: a manager, a client and each proxy are the caller's, ended
 * with mpx_manager_free, mpx_mclient_free and mpx_proxy_free (a proxy's
 * free is its decref on the server); objects passed in are borrowed,
 * objects returned through out-pointers are new references. */
#ifndef MPX_MANAGER_H
#define MPX_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mpx/common.h"
#include "mpx/obj.h"

/* The caller's libuv loop, if it gives one: declared, not included, so
 * that this header needs no libuv headers (<uv.h> names it uv_loop_t). */
struct uv_loop_s;

#ifdef __cplusplus
extern "C" {
#endif

/* ---- server ---------------------------------------------------------- */

typedef struct mpx_manager_s mpx_manager_t;

typedef struct {
  /* "tcp://HOST:PORT" or "unix:PATH" (mpx/listener.h); NULL:
   * "tcp://127.0.0.1:0". */
  const char *address;
  const void *authkey;     /* required: a manager always authenticates */
  size_t authkey_len;
  struct uv_loop_s *loop;  /* NULL: the manager runs its own thread and loop */
  size_t max_frame;        /* a request longer than this closes its
                            * connection; 0: 64 MiB */
  unsigned max_connections; /* further connections are refused; 0: 1024 */
  size_t max_objects;      /* create beyond this is an error reply; 0: 1 M */
  unsigned flags;          /* MPX_AUTH_* for the challenges the server sends */
} mpx_manager_opts_t;

/* Binds, listens and starts serving the SyncManager typeids: Queue,
 * JoinableQueue, dict, list, Value, Array, Lock, RLock, Semaphore,
 * BoundedSemaphore, Event, Condition, Barrier, Namespace. With opts->loop
 * the server's handles live on that loop (run it; all later calls on this
 * manager from that loop's thread); otherwise on a thread of its own.
 * On success *m is the caller's, to free with mpx_manager_free().
 * Own: *m is yours: mpx_manager_free; copies address and authkey; keeps
 * opts->loop until the manager is freed (the loop stays yours). */
MPX_API int mpx_manager_new(mpx_manager_t **m, const mpx_manager_opts_t *opts);

/* The bound address ("tcp://127.0.0.1:41235"). Owned by the manager.
 * Own: returns a string borrowed until mpx_manager_free. */
MPX_API const char *mpx_manager_address(const mpx_manager_t *m);

/* Publishes one object under a typeid of its own, as Python's
 * register('get_queue', callable=lambda: q) does: `create(typeid)` from
 * any client returns this same object (a new reference each time), and
 * the server keeps one reference itself, so it lives until the manager
 * goes. `type` is one of the shipped typeids; args/kwds (a tuple and a
 * map, or NULL) are its constructor's.
 * Own: copies typeid; borrows type, args and kwds for the call. */
MPX_API int mpx_manager_expose(mpx_manager_t *m, const char *typeid,
                               const char *type, const mpx_obj_t *args,
                               const mpx_obj_t *kwds);

/* Waits until a client has sent "shutdown" or mpx_manager_stop() was
 * called (timeout in seconds; negative forever): 0 or MPX_ETIMEDOUT.
 * Not for a manager on the caller's loop. */
MPX_API int mpx_manager_wait(mpx_manager_t *m, double timeout);

/* Asks the manager to stop serving: open connections are closed, blocked
 * calls are answered with an error. Safe from any thread and from a
 * signal handler. */
MPX_API void mpx_manager_stop(mpx_manager_t *m);

typedef struct {
  uint64_t connections;    /* accepted and authenticated, ever */
  uint64_t auth_failures;
  uint64_t requests;
  uint64_t errors;         /* replies other than #RETURN / #PROXY */
  uint64_t objects;        /* alive now */
  unsigned open_connections;
} mpx_manager_stats_t;

MPX_API void mpx_manager_stats(const mpx_manager_t *m, mpx_manager_stats_t *st);

/* Stops (if still serving), closes every connection, frees every object
 * and the manager; removes a unix socket file. NULL is a no-op. */
MPX_API void mpx_manager_free(mpx_manager_t *m);

/* ---- client ---------------------------------------------------------- */

typedef struct mpx_mclient_s mpx_mclient_t;
typedef struct mpx_proxy_s mpx_proxy_t;

typedef struct {
  const char *codec;   /* "pickle" (default) or "msgpack" (mpx servers) */
  int protocol;        /* pickle protocol sent: 2..5; 0: 4 */
  unsigned flags;      /* MPX_AUTH_* for the challenges the client sends */
  double timeout;      /* connect and per-call limit in seconds; <= 0:
                        * none (blocking methods wait as long as asked,
                        * plus this). A call past it is MPX_ETIMEDOUT and
                        * the next call opens a new connection. */
} mpx_mclient_opts_t;

/* Connects (one persistent connection, authenticated) and finds out
 * whether the server is mpx or CPython. opts may be NULL. On success *c
 * is the caller's. Each proxy holds the client too: freeing the client
 * before its proxies is allowed, the connection then closes with the last
 * proxy. MPX_EAUTH (wrong key), MPX_ECONNREFUSED (nobody listens),
 * MPX_ENOTSUP (codec "msgpack" with a CPython server), MPX_ETIMEDOUT.
 * Own: *c is yours: mpx_mclient_free; copies address and authkey. */
MPX_API int mpx_mclient_connect(mpx_mclient_t **c, const char *address,
                                const void *authkey, size_t authkey_len,
                                const mpx_mclient_opts_t *opts);

/* True when the server answered as an mpx server. */
MPX_API bool mpx_mclient_is_mpx(const mpx_mclient_t *c);

/* Calls a server method (ident None): "dummy", "number_of_objects",
 * "debug_info", "shutdown", ... args a tuple or NULL. *result (may be
 * NULL) is the caller's. Errors as for mpx_proxy_call().
 * Own: borrows method and args for the call; *result is yours:
 * mpx_obj_release. */
MPX_API int mpx_mclient_server_call(mpx_mclient_t *c, const char *method,
                                    const mpx_obj_t *args, mpx_obj_t **result);

/* Creates an object of `typeid` on the server (or gets a published
 * one), with constructor args (tuple or NULL) and kwds (map or NULL).
 * *p holds the one reference create leaves; it is the caller's.
 * Own: *p is yours: mpx_proxy_free; borrows typeid, args and kwds for the
 * call. */
MPX_API int mpx_mclient_create(mpx_mclient_t *c, mpx_proxy_t **p,
                               const char *typeid, const mpx_obj_t *args,
                               const mpx_obj_t *kwds);

/* Sends decref for the proxy's reference and frees it. NULL: no-op. */
MPX_API void mpx_proxy_free(mpx_proxy_t *p);

/* Own: both strings are borrowed until mpx_proxy_free. */
MPX_API const char *mpx_proxy_typeid(const mpx_proxy_t *p);
MPX_API const char *mpx_proxy_ident(const mpx_proxy_t *p);
/* Whether `method` is in the object's exposed list. */
MPX_API bool mpx_proxy_exposes(const mpx_proxy_t *p, const char *method);

/* Calls `method` on the referent with args (tuple or NULL) and kwds (map
 * or NULL): one round trip. On 0, *result (may be NULL) is the return
 * value, the caller's. A "#PROXY" reply is returned as a new proxy in
 * *proxy_result when that is non-NULL (else it is released). Errors:
 *   MPX_EREMOTE   the method raised: *result is the exception (an opaque
 *                 reduce: module, name, args), the caller's;
 *   MPX_EPROTO    "#TRACEBACK" / "#UNSERIALIZABLE" (unknown or
 *                 non-exposed method, freed id): mpx_last_error() has
 *                 the server's text;
 *   MPX_EPIPE     the connection is gone; MPX_ETIMEDOUT past opts.timeout.
 * Own: borrows method, args and kwds for the call; *result is yours
 * (mpx_obj_release), *proxy_result is yours (mpx_proxy_free). */
MPX_API int mpx_proxy_call(mpx_proxy_t *p, const char *method,
                           const mpx_obj_t *args, const mpx_obj_t *kwds,
                           mpx_obj_t **result, mpx_proxy_t **proxy_result);

/* Typed calls for the shipped types. Objects passed in stay the caller's;
 * objects returned are the caller's. A timeout < 0 blocks (block=True,
 * timeout=None), 0 does not block, > 0 is Python's timeout.
 * Own (every typed call): borrows the objects passed in for the call;
 * an object returned through an out-pointer is yours: mpx_obj_release. */
MPX_API int mpx_proxy_queue_put(mpx_proxy_t *q, const mpx_obj_t *item,
                                double timeout);  /* MPX_EAGAIN: queue.Full */
MPX_API int mpx_proxy_queue_get(mpx_proxy_t *q, mpx_obj_t **item,
                                double timeout);  /* MPX_EAGAIN: queue.Empty */
MPX_API int mpx_proxy_queue_qsize(mpx_proxy_t *q, size_t *n);
MPX_API int mpx_proxy_queue_task_done(mpx_proxy_t *q);
MPX_API int mpx_proxy_queue_join(mpx_proxy_t *q);

MPX_API int mpx_proxy_dict_set(mpx_proxy_t *d, const mpx_obj_t *key,
                               const mpx_obj_t *val);
MPX_API int mpx_proxy_dict_get(mpx_proxy_t *d, const mpx_obj_t *key,
                               mpx_obj_t **val);  /* MPX_ENOENT: KeyError */
MPX_API int mpx_proxy_dict_del(mpx_proxy_t *d, const mpx_obj_t *key);
MPX_API int mpx_proxy_dict_keys(mpx_proxy_t *d, mpx_obj_t **keys); /* a list */
MPX_API int mpx_proxy_len(mpx_proxy_t *p, size_t *n);  /* __len__ */

MPX_API int mpx_proxy_list_append(mpx_proxy_t *l, const mpx_obj_t *item);
MPX_API int mpx_proxy_list_get(mpx_proxy_t *l, int64_t i,
                               mpx_obj_t **item); /* MPX_ERANGE: IndexError */

MPX_API int mpx_proxy_value_get(mpx_proxy_t *v, mpx_obj_t **val);
MPX_API int mpx_proxy_value_set(mpx_proxy_t *v, const mpx_obj_t *val);

/* A Lock / RLock proxy: Python's acquire() and release(), i.e. lock and
 * unlock (they do not drop the proxy: that is mpx_proxy_free). */
MPX_API int mpx_proxy_lock_acquire(mpx_proxy_t *lk, double timeout); /* MPX_ETIMEDOUT */
MPX_API int mpx_proxy_lock_release(mpx_proxy_t *lk);
/* Deprecated since 0.1.x, removed in 0.2: the old names, which read as
 * if they applied to any proxy (mpx_proxy_release as a reference drop). */
MPX_DEPRECATED("use mpx_proxy_lock_acquire")
static inline int mpx_proxy_acquire(mpx_proxy_t *lk, double timeout) {
  return mpx_proxy_lock_acquire(lk, timeout);
}
MPX_DEPRECATED("use mpx_proxy_lock_release")
static inline int mpx_proxy_release(mpx_proxy_t *lk) {
  return mpx_proxy_lock_release(lk);
}

MPX_API int mpx_proxy_event_set(mpx_proxy_t *e);
MPX_API int mpx_proxy_event_clear(mpx_proxy_t *e);
MPX_API int mpx_proxy_event_wait(mpx_proxy_t *e, double timeout); /* MPX_ETIMEDOUT */
MPX_API int mpx_proxy_event_is_set(mpx_proxy_t *e, bool *set);

MPX_API void mpx_mclient_free(mpx_mclient_t *c);

#ifdef __cplusplus
}
#endif
#endif /* MPX_MANAGER_H */
