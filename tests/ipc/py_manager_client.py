#!/usr/bin/env python3
"""Python's side of the manager_server suite (standard library only).

    py_manager_client.py STEP ADDRESS KEYFILE [ARG]

ADDRESS is mpx's syntax (tcp://HOST:PORT or unix:PATH); KEYFILE holds the
authkey. Each STEP talks to an mpx manager the way CPython's clients do
(BaseManager subclasses with multiprocessing.managers' proxy types, or raw
frames through multiprocessing.connection) and checks exact outcomes.
Exits 0 when every check held, else 1 with the failed check on stderr.
Prints one line per fact the C side asserts.
"""
import os
import pickle
import queue
import socket
import struct
import sys
import threading
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client
from multiprocessing.managers import (AcquirerProxy, ArrayProxy, BarrierProxy,
                                      BaseManager, ConditionProxy, DictProxy,
                                      EventProxy, IteratorProxy, ListProxy,
                                      NamespaceProxy, RemoteError, ValueProxy,
                                      dispatch)


class M(BaseManager):
    pass


M.register('get_queue')
M.register('Queue')
M.register('JoinableQueue')
M.register('dict', proxytype=DictProxy)
M.register('list', proxytype=ListProxy)
M.register('Value', proxytype=ValueProxy)
M.register('Array', proxytype=ArrayProxy)
M.register('Lock', proxytype=AcquirerProxy)
M.register('RLock', proxytype=AcquirerProxy)
M.register('Semaphore', proxytype=AcquirerProxy)
M.register('BoundedSemaphore', proxytype=AcquirerProxy)
M.register('Condition', proxytype=ConditionProxy)
M.register('Event', proxytype=EventProxy)
M.register('Barrier', proxytype=BarrierProxy)
M.register('Namespace', proxytype=NamespaceProxy)
M.register('Iterator', proxytype=IteratorProxy, create_method=False)
M.register('nosuchtype')


def fail(msg):
    sys.stderr.write("py_manager_client: %s\n" % msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def expect_raise(exc, fn, what):
    try:
        fn()
    except exc as e:
        return e
    except Exception as e:  # noqa: BLE001
        fail("%s: raised %r, expected %s" % (what, e, exc.__name__))
    fail("%s: no exception, expected %s" % (what, exc.__name__))


def py_address(addr):
    if addr.startswith('tcp://'):
        host, port = addr[6:].rsplit(':', 1)
        return (host.strip('[]'), int(port))
    if addr.startswith('unix:'):
        return addr[5:]
    fail("bad address %r" % addr)


def connect(addr, key):
    m = M(address=py_address(addr), authkey=key)
    m.connect()
    return m


def server_call(m, key, method, *args):
    conn = Client(m.address, authkey=key)
    try:
        return dispatch(conn, None, method, args)
    finally:
        conn.close()


VALUES = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -2**31, 2**31,
    2**62, -2**63, 2**63, 2**100, -2**100, 1.5, -0.0, float('inf'), 1e300,
    '', 'text', 'ünïcødé ✓', 'x' * 70000, b'', b'\x00\xff\x80', bytes(300),
    [], [1, [2, [3]]], (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4),
    {}, {'k': {1: 2}}, {(1, 2): 'x', None: [], 2.5: b'b'},
    complex(1, 2), {1, 2, 3}, frozenset({'a'}), ValueError('boom'),
    list(range(2500)), {i: str(i) for i in range(1200)},
]


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, ValueError):
        return a.args == b.args
    if isinstance(a, float) and a != a:
        return b != b
    return a == b


def step_roundtrip(addr, key, arg):
    """Every pickle-subset value through a published Queue, a dict, a list
    and a Value, both ways."""
    m = connect(addr, key)
    q = m.get_queue()
    for v in VALUES:
        q.put(v)
    for v in VALUES:
        got = q.get(timeout=5)
        check(same(got, v), "queue round trip: %r came back as %r" % (v, got))
    d = m.dict()
    for i, v in enumerate(VALUES):
        d[i] = v
    for i, v in enumerate(VALUES):
        check(same(d[i], v), "dict round trip of %r: %r" % (v, d[i]))
    lst = m.list(VALUES[:10])
    check(lst[:] == VALUES[:10], "list round trip: %r" % lst[:])
    val = m.Value('d', 0.0)
    for v in VALUES[:20]:
        val.value = v
        check(same(val.value, v), "Value round trip of %r" % (v,))
    print("roundtrip %d values" % len(VALUES))


def step_errors(addr, key, arg):
    """Exceptions come back as themselves; protocol errors as RemoteError."""
    m = connect(addr, key)
    d = m.dict({'a': 1})
    e = expect_raise(KeyError, lambda: d['missing'], "dict['missing']")
    check(e.args == ('missing',), "KeyError args %r" % (e.args,))
    expect_raise(KeyError, lambda: d.pop('missing'), "dict.pop")
    expect_raise(TypeError, lambda: d.__getitem__([1]), "unhashable key")
    q = m.Queue()
    expect_raise(queue.Empty, q.get_nowait, "Queue.get_nowait on empty")
    expect_raise(queue.Empty, lambda: q.get(True, 0.05), "Queue.get(timeout)")
    qf = m.Queue(1)
    qf.put(1)
    expect_raise(queue.Full, lambda: qf.put(2, False), "Queue.put on full")
    expect_raise(ValueError, lambda: q.get(True, -1), "negative timeout")
    lst = m.list([1, 2])
    e = expect_raise(IndexError, lambda: lst[5], "list[5]")
    check(str(e) == 'list index out of range', "IndexError text %r" % str(e))
    expect_raise(ValueError, lambda: lst.remove(9), "list.remove(9)")
    ns = m.Namespace(x=1)
    expect_raise(AttributeError, lambda: ns.y, "Namespace.y")
    lk = m.Lock()
    expect_raise(RuntimeError, lk.release, "release an unlocked Lock")
    b = m.Barrier(2)
    b.abort()
    expect_raise(threading.BrokenBarrierError, b.wait, "Barrier.wait after abort")
    bs = m.BoundedSemaphore(1)
    expect_raise(ValueError, bs.release, "BoundedSemaphore over-release")
    # protocol errors: RemoteError (#TRACEBACK)
    e = expect_raise(RemoteError, lambda: d._callmethod('no_such_method'),
                     "unknown method")
    check("not in the list of allowed methods" in str(e), "text: %s" % e)
    expect_raise(RemoteError, lambda: d._callmethod('__class__'),
                 "non-exposed method")
    expect_raise(RemoteError, lambda: server_call(m, key, 'no_such_call'),
                 "unknown server method")
    expect_raise(RemoteError, lambda: m.nosuchtype(), "unknown typeid")
    # freed id
    ident = lst._token.id
    server_call(m, key, 'decref', ident)  # the proxy's own reference
    e = expect_raise(RemoteError, lambda: lst[0], "call on a freed id")
    check("KeyError" in str(e), "freed id text: %s" % e)
    expect_raise(RemoteError, lambda: server_call(m, key, 'incref', ident),
                 "incref of a freed id")
    # fallbacks
    check(d._getvalue() == {'a': 1}, "#GETVALUE of dict")
    check(str(m.list([1, 'x'])) == "[1, 'x']", "__str__ of list")
    print("errors ok")


def step_badkey(addr, key, arg):
    """A wrong key is AuthenticationError; the server keeps serving."""
    try:
        M(address=py_address(addr), authkey=key + b'-wrong').connect()
        fail("connect with a wrong key succeeded")
    except AuthenticationError:
        pass
    m = connect(addr, key)
    check(server_call(m, key, 'dummy') is None, "dummy after a failed key")
    print("badkey ok")


def step_refcount(addr, key, arg):
    """number_of_objects follows create and decref."""
    m = connect(addr, key)
    n0 = server_call(m, key, 'number_of_objects')
    conn = Client(m.address, authkey=key)
    ident, exposed = dispatch(conn, None, 'create', ('dict',))
    conn.close()
    check(isinstance(ident, str) and all(c in '0123456789abcdef' for c in ident),
          "ident %r is no lowercase hex" % ident)
    check('__getitem__' in exposed, "exposed %r" % (exposed,))
    check(server_call(m, key, 'number_of_objects') == n0 + 1, "after create")
    server_call(m, key, 'incref', ident)
    server_call(m, key, 'decref', ident)
    check(server_call(m, key, 'number_of_objects') == n0 + 1, "after incref+decref")
    info = server_call(m, key, 'debug_info')
    check(("%s:       refcount=1" % ident) in info, "debug_info: %r" % info)
    server_call(m, key, 'decref', ident)
    check(server_call(m, key, 'number_of_objects') == n0, "after the last decref")
    d = m.dict()
    check(server_call(m, key, 'number_of_objects') == n0 + 1, "proxy create")
    del d
    check(server_call(m, key, 'number_of_objects') == n0, "proxy collected")
    print("refcount %d" % n0)


def step_blocking(addr, key, arg):
    """A get parked on one connection does not hold up another client."""
    m = connect(addr, key)
    q = m.Queue()
    ev = m.Event()
    d = m.dict()
    result = {}

    def getter():
        try:
            ev.set()  # then the get, on this thread's own connection
            result['got'] = q.get(True, 120)
        except Exception as e:  # noqa: BLE001
            result['err'] = e

    t = threading.Thread(target=getter)
    t.start()
    ev.wait()
    # a server that blocked on the get would hang these calls
    for i in range(200):
        d[i] = i * i
        check(d[i] == i * i, "dict call %d while a get waits" % i)
    check(t.is_alive() and not result, "the getter returned early: %r" % result)
    q.put('wake')
    t.join(60)
    check(not t.is_alive(), "the getter never returned")
    check(result.get('got') == 'wake', "the getter got %r" % result)
    # a timed get answers Empty while others keep going
    t2 = threading.Thread(target=lambda: result.update(
        e2=expect_raise(queue.Empty, lambda: q.get(True, 0.3), "timed get")))
    t2.start()
    for i in range(50):
        d['k'] = i
    t2.join(60)
    check('e2' in result, "timed get did not raise Empty")
    print("blocking ok")


def step_types(addr, key, arg):
    """The remaining SyncManager types, as their proxies call them."""
    m = connect(addr, key)
    jq = m.JoinableQueue()
    jq.put(1)
    jq.put(2)
    check(jq.qsize() == 2 and not jq.empty(), "qsize/empty")
    jq.get()
    jq.task_done()
    jq.get()
    jq.task_done()
    jq.join()
    expect_raise(ValueError, jq.task_done, "task_done too many")
    rl = m.RLock()
    check(rl.acquire() and rl.acquire(), "RLock reentry")
    rl.release()
    rl.release()
    expect_raise(RuntimeError, rl.release, "RLock over-release")
    sem = m.Semaphore(2)
    check(sem.acquire() and sem.acquire() and not sem.acquire(False), "Semaphore")
    check(sem.acquire(True, 0.05) is False, "Semaphore timeout")
    sem.release()
    check(sem.acquire(False), "Semaphore after release")
    ev = m.Event()
    check(ev.wait(0.05) is False, "Event.wait timeout")
    cond = m.Condition()
    out = {}

    def waiter():
        with cond:
            out['w'] = cond.wait(60)

    t = threading.Thread(target=waiter)
    t.start()
    # wait until the waiter is parked on the condition (its repr counts it)
    while '1)>' not in str(cond):
        pass
    with cond:
        cond.notify()
    t.join(60)
    check(out.get('w') is True, "Condition.wait after notify: %r" % out)
    with cond:
        check(cond.wait(0.05) is False, "Condition.wait timeout")
        check(cond.wait_for(lambda: True), "wait_for")
    expect_raise(RuntimeError, cond.notify, "notify without the lock")
    bar = m.Barrier(2)
    check(bar.parties == 2 and bar.n_waiting == 0 and not bar.broken, "Barrier attrs")
    res = []
    t = threading.Thread(target=lambda: res.append(bar.wait(60)))
    t.start()
    while bar.n_waiting != 1:
        pass
    res.append(bar.wait(60))
    t.join(60)
    check(sorted(res) == [0, 1], "Barrier.wait indexes %r" % res)
    expect_raise(threading.BrokenBarrierError, lambda: bar.wait(0.05), "Barrier timeout")
    check(bar.broken, "Barrier broken after a timeout")
    bar.reset()
    check(not bar.broken, "Barrier reset")
    ns = m.Namespace(a=1)
    ns.b = [2]
    check(ns.a == 1 and ns.b == [2], "Namespace get/set")
    del ns.a
    expect_raise(AttributeError, lambda: ns.a, "Namespace del")
    check(str(ns) == "Namespace(b=[2])", "Namespace repr %r" % str(ns))
    arr = m.Array('i', [1, 2, 3])
    check(len(arr) == 3 and arr[2] == 3, "Array len/getitem")
    arr[0] = 7
    check(arr[0] == 7 and arr[-3] == 7, "Array setitem")
    expect_raise(IndexError, lambda: arr[3], "Array index")
    expect_raise(OverflowError, lambda: arr.__setitem__(0, 2**40), "Array overflow")
    expect_raise(TypeError, lambda: arr.__setitem__(0, 'x'), "Array type")
    lst = m.list([3, 1, 2])
    lst.sort()
    check(lst[:] == [1, 2, 3], "list.sort")
    lst.sort(reverse=True)
    lst.extend([0])
    lst.insert(0, 9)
    check(lst[:] == [9, 3, 2, 1, 0] and lst.pop() == 0 and lst.index(2) == 2 and
          lst.count(3) == 1 and 3 in lst, "list methods %r" % lst[:])
    lst += [5]
    lst *= 2
    check(len(lst) == 10 and lst[9] == 5, "list iadd/imul")
    del lst[0:8:2]
    check(lst[:] == [3, 1, 9, 2, 1, 5], "list del slice %r" % lst[:])
    lst[1:3] = ['a']
    check(lst[:] == [3, 'a', 2, 1, 5], "list set slice %r" % lst[:])
    lst[::2] = [7, 8, 9]
    check(lst[:] == [7, 'a', 8, 1, 9], "list extended slice %r" % lst[:])
    check(lst[::-2] == [9, 8, 7] and lst[-2:] == [1, 9], "list get slices")
    d = m.dict(a=1)
    d.update({'b': 2}, c=3)
    check(d.setdefault('z', 0) == 0 and d.get('q', 'dflt') == 'dflt', "dict get")
    check(sorted(d.keys()) == ['a', 'b', 'c', 'z'], "dict keys %r" % d.keys())
    check(d.popitem() == ('z', 0) and len(d) == 3, "dict popitem")
    check(sorted(d.items()) == [('a', 1), ('b', 2), ('c', 3)], "dict items")
    check(list(d) == ['a', 'b', 'c'], "dict iter")
    d.clear()
    check(len(d) == 0, "dict clear")
    print("types ok")


def step_syncmanager(addr, key, arg):
    """multiprocessing.managers.SyncManager itself, connected to mpx: every
    typeid it registers (Pool aside) through its own proxies."""
    from multiprocessing.managers import SyncManager
    m = SyncManager(address=py_address(addr), authkey=key)
    m.connect()
    q = m.Queue(2)
    q.put('a')
    q.put_nowait(('b',))
    check(q.full() and q.get() == 'a' and q.get_nowait() == ('b',), "Queue")
    jq = m.JoinableQueue()
    jq.put(1)
    jq.get()
    jq.task_done()
    jq.join()
    ev = m.Event()
    ev.set()
    check(ev.is_set() and ev.wait(1), "Event")
    for lk in (m.Lock(), m.RLock(), m.Semaphore(), m.BoundedSemaphore()):
        with lk:
            pass
        check(lk.acquire(timeout=1) is True, "acquire %r" % lk)
        lk.release()
    cond = m.Condition()
    with cond:
        cond.notify_all()
        check(cond.wait(0.01) is False, "Condition.wait")
    bar = m.Barrier(1)
    check(bar.wait() == 0, "Barrier(1).wait")
    lst = m.list(range(5))
    check(lst[::-1] == [4, 3, 2, 1, 0], "list")
    d = m.dict({'x': 1}, y=2)
    check(sorted(d.items()) == [('x', 1), ('y', 2)] and list(d) == ['x', 'y'], "dict")
    v = m.Value('i', 3)
    v.value += 1
    check(v.value == 4 and repr(v).startswith("<ValueProxy object, typeid 'Value'"), "Value")
    arr = m.Array('d', [1.0, 2.5])
    check(arr[1] == 2.5 and len(arr) == 2, "Array")
    ns = m.Namespace(a=1)
    ns.b = 2
    check(ns.a + ns.b == 3, "Namespace")
    # a proxy nested in a value travels as itself (RebuildProxy); Python
    # rebuilds it with the process's own authkey, so give it ours
    import multiprocessing
    multiprocessing.current_process().authkey = key
    d2 = m.dict()
    d2['inner'] = lst
    check(d2['inner'][0] == 0 and d2['inner'][1:3] == [1, 2], "nested proxy")
    print("syncmanager ok")


def step_lockdeath(addr, key, arg):
    """A Lock or RLock held by a client that dies is released (mpx's
    choice; CPython keeps it held forever)."""
    import subprocess
    m = connect(addr, key)
    for make in (m.Lock, m.RLock):
        lk = make()
        r = subprocess.run([sys.executable, __file__, 'lockchild', addr,
                            sys.argv[3], lk._token.typeid + ':' + lk._token.id])
        check(r.returncode == 0, "lockchild exit %d" % r.returncode)
        check(lk.acquire(True, 60) is True, "the dead client's lock was not released")
        lk.release()
    print("lockdeath ok")


def step_lockchild(addr, key, arg):
    """Acquires the lock ARG (typeid:ident) and exits holding it."""
    from multiprocessing.managers import Token
    m = connect(addr, key)
    typeid, ident = arg.split(':')
    lk = AcquirerProxy(Token(typeid, m.address, ident), 'pickle', manager=m,
                       authkey=key)
    check(lk.acquire() is True, "child acquire")
    # a Lock is held now; an RLock lets its owner in again
    check(lk.acquire(False) is (typeid == 'RLock'), "child: second acquire")


def raw_conn(m, key):
    return Client(m.address, authkey=key)


def recv_reply(conn):
    try:
        data = conn.recv_bytes()
    except (EOFError, OSError):
        return None
    return data


def closed(conn):
    try:
        conn.recv_bytes()
        return False
    except (EOFError, OSError):
        return True


def step_proto(addr, key, arg):
    """A reply comes in the request's pickle protocol."""
    m = connect(addr, key)
    for proto in (2, 3, 4, 5):
        c = raw_conn(m, key)
        c.send_bytes(pickle.dumps((None, 'dummy', (), {}), protocol=proto))
        data = c.recv_bytes()
        check(data[:2] == bytes([0x80, proto]),
              "protocol %d request got a reply starting %r" % (proto, data[:2]))
        check(pickle.loads(data) == ('#RETURN', None), "dummy reply")
        c.close()
        print("proto %d reply %02x %02x" % (proto, data[0], data[1]))
    # protocol 2 on a persistent connection, with objects
    c = raw_conn(m, key)
    c.send_bytes(pickle.dumps((None, 'accept_connection', ('t',), {}), protocol=2))
    check(pickle.loads(c.recv_bytes()) == ('#RETURN', None), "accept_connection")
    c.send_bytes(pickle.dumps((None, 'create', ('dict',), {}), protocol=2))
    data = c.recv_bytes()
    check(data[:2] == b'\x80\x02', "create reply protocol")
    kind, (ident, _) = pickle.loads(data)
    c.send_bytes(pickle.dumps((ident, '__setitem__', (b'k', b'\x00v'), {}), protocol=2))
    check(pickle.loads(c.recv_bytes()) == ('#RETURN', None), "setitem")
    c.send_bytes(pickle.dumps((ident, '__getitem__', (b'k',), {}), protocol=2))
    data = c.recv_bytes()
    check(data[:2] == b'\x80\x02' and pickle.loads(data) == ('#RETURN', b'\x00v'),
          "protocol 2 bytes value: %r" % data)
    c.send_bytes(pickle.dumps((ident, '__getitem__', ('nope',), {}), protocol=2))
    kind, exc = pickle.loads(c.recv_bytes())
    check(kind == '#ERROR' and isinstance(exc, KeyError), "protocol 2 KeyError")
    c.close()


def step_malformed(addr, key, arg):
    """Bad frames: an error reply or a closed connection, and the server
    keeps serving every other client."""
    m = connect(addr, key)
    d = m.dict({'alive': 1})

    def alive(what):
        check(d['alive'] == 1, "after %s: the other client fails" % what)
        check(server_call(m, key, 'dummy') is None, "after %s: dummy" % what)

    # garbage payload on a control connection: #TRACEBACK, then closed
    c = raw_conn(m, key)
    c.send_bytes(b'hello, not a pickle')
    r = recv_reply(c)
    check(r is not None and pickle.loads(r)[0] == '#TRACEBACK', "garbage reply %r" % r)
    check(closed(c), "control connection not closed after garbage")
    alive("garbage")
    print("malformed garbage: traceback")
    # truncated pickle
    c = raw_conn(m, key)
    c.send_bytes(pickle.dumps((None, 'dummy', (), {}))[:-3])
    r = recv_reply(c)
    check(r is not None and pickle.loads(r)[0] == '#TRACEBACK', "truncated reply")
    alive("truncated pickle")
    print("malformed truncated: traceback")
    # not a 4-tuple
    c = raw_conn(m, key)
    c.send_bytes(pickle.dumps(['dummy']))
    check(pickle.loads(recv_reply(c))[0] == '#TRACEBACK', "list request")
    alive("a list request")
    # the 8-byte length form announcing 2^31 bytes: closed
    c = raw_conn(m, key)
    os.write(c.fileno(), b'\xff\xff\xff\xff' + struct.pack('!Q', 2**31))
    check(closed(c), "huge frame: not closed")
    alive("a 2^31 length")
    print("malformed huge: closed")
    # the 4-byte header 0x80000000 (negative) and -2: closed
    for hdr in (b'\x80\x00\x00\x00', b'\xff\xff\xff\xfe'):
        c = raw_conn(m, key)
        os.write(c.fileno(), hdr + b'xxxx')
        check(closed(c), "negative length %r: not closed" % hdr)
        alive("a negative length")
    print("malformed negative: closed")
    # a header cut short, then EOF
    c = raw_conn(m, key)
    os.write(c.fileno(), b'\x00\x00')
    c.close()
    alive("a short header")
    # persistent connection: garbage is a #TRACEBACK and the connection
    # stays usable
    c = raw_conn(m, key)
    c.send(('x', 'accept_connection', ('t',), {}))
    check(c.recv() == ('#RETURN', None), "accept_connection")
    c.send_bytes(b'\x80\x04garbage')
    check(c.recv()[0] == '#TRACEBACK', "persistent garbage")
    c.send((None, 'dummy', (), {}))
    check(c.recv() == ('#RETURN', None), "persistent after garbage")
    c.send(('zzzz', 'get', (), {}))
    check(c.recv()[0] == '#TRACEBACK', "unknown ident")
    c.send(('not hex!', 'get', (), {}))
    check(c.recv()[0] == '#TRACEBACK', "bad ident")
    c.send((None, 'create', (), {}))
    check(c.recv()[0] == '#TRACEBACK', "create without typeid")
    c.send((None, 'create', ('Value',), {}))
    check(c.recv()[0] == '#TRACEBACK', "Value without args")
    c.close()
    alive("persistent garbage")
    # a raw TCP/unix client that never answers the challenge
    s = socket.socket(socket.AF_UNIX if isinstance(m.address, str) else socket.AF_INET)
    s.connect(m.address)
    s.sendall(b'\x00\x00\x10\x00' + b'y' * 16)  # 4 KiB answer: too long
    check(s.recv(4096)[:4] != b'', "challenge was sent")
    s.close()
    alive("an oversized handshake")
    print("malformed persistent: traceback")


def step_limit_frame(addr, key, arg):
    """A request above max_frame (ARG bytes) closes its connection only."""
    limit = int(arg)
    m = connect(addr, key)
    d = m.dict()
    c = raw_conn(m, key)
    c.send((None, 'accept_connection', ('t',), {}))
    c.recv()
    c.send_bytes(pickle.dumps((None, 'dummy', (b'x' * (limit + 10),), {})))
    check(closed(c), "frame above max_frame: not closed")
    d['k'] = b'y' * (limit // 2)
    check(len(d['k']) == limit // 2, "the other client")
    print("limit_frame ok")


def step_limit_objects(addr, key, arg):
    """create beyond max_objects (ARG) is a RemoteError."""
    limit = int(arg)
    m = connect(addr, key)
    keep = [m.dict() for _ in range(limit - server_call(m, key, 'number_of_objects'))]
    e = expect_raise(RemoteError, m.dict, "create beyond max_objects")
    check('max_objects' in str(e), "text: %s" % e)
    del keep
    m.dict()
    print("limit_objects ok")


def step_limit_conns(addr, key, arg):
    """Beyond max_connections (ARG) connections are refused; others work."""
    limit = int(arg)
    m = connect(addr, key)
    held = []
    for _ in range(10000):  # closed connections leave the count lazily
        if len(held) == limit:
            break
        try:
            held.append(raw_conn(m, key))
        except (EOFError, OSError, AuthenticationError):
            continue
    check(len(held) == limit, "could not open %d connections" % limit)
    try:
        extra = raw_conn(m, key)
        extra.send((None, 'dummy', (), {}))
        extra.recv()
        fail("connection beyond max_connections was served")
    except (EOFError, OSError, AuthenticationError):
        pass
    held[0].send((None, 'dummy', (), {}))
    check(held[0].recv() == ('#RETURN', None), "a held connection")
    for c in held:
        c.close()
    # the server notices the closes asynchronously: retry until served
    for _ in range(1000):
        try:
            check(server_call(m, key, 'dummy') is None, "after closing")
            break
        except (EOFError, OSError, AuthenticationError):
            continue
    else:
        fail("never served again after closing the held connections")
    print("limit_conns ok")


def step_challenge(addr, key, arg):
    """The length of the challenge the server sends first: 31 for legacy
    (20-byte nonce), 59 for {sha256} (40-byte nonce)."""
    a = py_address(addr)
    s = socket.socket(socket.AF_UNIX if isinstance(a, str) else socket.AF_INET)
    s.connect(a)
    hdr = b''
    while len(hdr) < 4:
        hdr += s.recv(4 - len(hdr))
    n = struct.unpack('!i', hdr)[0]
    body = b''
    while len(body) < n:
        body += s.recv(n - len(body))
    s.close()
    check(body.startswith(b'#CHALLENGE#'), "no challenge: %r" % body)
    print("challenge %d" % n)
    # and Python 3.11 gets through it
    connect(addr, key).dict()


def step_parked_stop(addr, key, arg):
    """A get parked when the manager stops is answered (RemoteError, or
    the connection closes), never left hanging."""
    m = connect(addr, key)
    q = m.Queue()
    print("parked", flush=True)
    try:
        q.get(True, 300)
        fail("get returned an item")
    except RemoteError as e:
        check("shutting down" in str(e), "text: %s" % e)
        print("answered: RemoteError")
    except (EOFError, OSError):
        print("answered: closed")


def step_parkget(addr, key, arg):
    """Parks a get on the published queue and waits to be killed."""
    m = connect(addr, key)
    q = m.get_queue()
    q.qsize()  # this thread's connection is up
    print("parked", flush=True)
    q.get()
    fail("the parked get returned")


def step_putget(addr, key, arg):
    """An item put after a parked getter died goes to the next get."""
    m = connect(addr, key)
    q = m.get_queue()
    q.put('item')
    got = q.get(True, 60)
    check(got == 'item', "got %r" % (got,))
    check(q.qsize() == 0, "qsize %d" % q.qsize())
    print("putget ok")


def step_silent(addr, key, arg):
    """A peer that reads the challenge and never answers is closed."""
    a = py_address(addr)
    s = socket.socket(socket.AF_UNIX if isinstance(a, str) else socket.AF_INET)
    s.settimeout(120)
    s.connect(a)
    data = b''
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
    check(b'#CHALLENGE#' in data, "no challenge before the close: %r" % data)
    print("silent: closed")


def step_linger(addr, key, arg):
    """A persistent connection stays usable after ARG seconds idle."""
    import time
    m = connect(addr, key)
    d = m.dict()
    d['a'] = 1
    time.sleep(float(arg))
    d['b'] = 2
    check(d.copy() == {'a': 1, 'b': 2}, "dict after idling")
    print("linger ok")


def step_cpython_text(addr, key, arg):
    """Array slices and the common exceptions, next to CPython's own
    SyncManager started here: same result types and reprs, same exception
    types and texts."""
    from multiprocessing.managers import SyncManager
    ref = SyncManager()
    ref.start()
    try:
        ours = connect(addr, key)
        cases = [
            lambda m: m.Array('i', [1, 2, 3])[0:2],
            lambda m: m.Array('i', [1, 2, 3])[::2],
            lambda m: m.Array('i', [1, 2, 3])[5:9],
            lambda m: m.Array('d', [1.5, 2.0])[0:1],
            lambda m: m.Array('u', 'ab')[1:],
            lambda m: m.list([1, 'a', 2.5]).sort(),
            lambda m: m.list([3, None]).sort(),
            lambda m: m.list([None, 3]).sort(reverse=True),
            lambda m: m.list([2, 1, 3, 'a']).sort(),
            lambda m: m.list([(1,), ('a',)]).sort(),
            lambda m: m.Array('i', [1, 2]).__setitem__(0, 'x'),
            lambda m: m.Array('i', [1, 2]).__setitem__(0, 1.5),
            lambda m: m.Array('i', [1, 2]).__setitem__(slice(0, 2), [5, 6]),
            lambda m: m.Array('d', [1.0]).__setitem__(0, 'x'),
            lambda m: m.Array('u', 'ab').__setitem__(0, 5),
            lambda m: m.Array('i', [1, 2])['x'],
        ]

        def outcome(m, f):
            try:
                r = f(m)
                return 'ret %s %r' % (type(r).__name__, r)
            except Exception as e:
                return '%s %s' % (type(e).__name__, e)

        for i, f in enumerate(cases):
            want, got = outcome(ref, f), outcome(ours, f)
            check(got == want, "case %d: mpx gave %r, CPython %r" % (i, got, want))
        print("cpython_text %d same" % len(cases))
    finally:
        ref.shutdown()


def step_shutdown(addr, key, arg):
    """shutdown answers twice (CPython's quirk), then the server goes."""
    m = connect(addr, key)
    c = raw_conn(m, key)
    c.send((None, 'shutdown', (), {}))
    check(c.recv() == ('#RETURN', None), "first shutdown reply")
    check(c.recv() == ('#RETURN', None), "second shutdown reply")
    check(closed(c), "closed after shutdown")
    print("shutdown ok")


STEPS = {
    'roundtrip': step_roundtrip, 'errors': step_errors, 'badkey': step_badkey,
    'refcount': step_refcount, 'blocking': step_blocking, 'types': step_types,
    'lockdeath': step_lockdeath, 'lockchild': step_lockchild, 'proto': step_proto,
    'malformed': step_malformed, 'limit_frame': step_limit_frame,
    'limit_objects': step_limit_objects, 'limit_conns': step_limit_conns,
    'challenge': step_challenge, 'shutdown': step_shutdown,
    'parked_stop': step_parked_stop, 'syncmanager': step_syncmanager,
    'parkget': step_parkget, 'putget': step_putget, 'silent': step_silent,
    'linger': step_linger, 'cpython_text': step_cpython_text,
}


def main():
    if len(sys.argv) < 4 or sys.argv[1] not in STEPS:
        fail("usage: py_manager_client.py STEP ADDRESS KEYFILE [ARG]; steps: %s"
             % ' '.join(sorted(STEPS)))
    with open(sys.argv[3], 'rb') as f:
        key = f.read()
    STEPS[sys.argv[1]](sys.argv[2], key, sys.argv[4] if len(sys.argv) > 4 else None)
    sys.stdout.flush()
    os._exit(0)  # no proxy finalizers racing a server that may be gone


if __name__ == '__main__':
    main()
