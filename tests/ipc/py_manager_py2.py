"""CPython 2.7 and 3.x against mpx managers: the manager_py2 suite's helper.
Runs unchanged under both (standard library only).

    py_manager_py2.py STEP ADDRESS KEYFILE

ADDRESS is mpx's syntax (tcp://HOST:PORT). Steps, each the seed's classic
client (BaseManager.register('get_queue'), connect(), get_queue().put()):

put2    (2.7)  puts PY2_ITEMS on get_queue
get3    (3.x)  gets them: a Python 2 str is bytes, unicode is str; then
               puts PY3_ITEMS
get2    (2.7)  gets PY3_ITEMS back as unicode and str; then puts a str
               and a unicode and gets each back as itself
errors2 (2.7)  Queue.Empty, KeyError('missing') and a RemoteError with the
               server's traceback, each as itself
serve2  (2.7)  a BaseManager server (get_queue, get_dict, dict) for mpx's
               C client; prints its address, serves until killed

Exits 0 when every check held, else 1 with the failed check on stderr;
prints "STEP ok" last.
"""
import signal
import sys

try:
    import Queue as queue_mod  # Python 2
except ImportError:
    import queue as queue_mod
from multiprocessing.managers import BaseManager, DictProxy, RemoteError

PY2 = sys.version_info[0] == 2


class M(BaseManager):
    pass


M.register('get_queue')
M.register('dict', proxytype=DictProxy)
M.register('nosuchtype')


def check(cond, msg):
    if not cond:
        sys.stderr.write("py_manager_py2 (%s): %s\n" % (sys.version.split()[0], msg))
        sys.exit(1)


def same(a, b):
    """Equal with the same types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            k in b and same(v, b[k]) for k, v in a.items())
    return a == b


def py_address(addr):
    host, _, port = addr[len("tcp://"):].rpartition(":")
    return (host, int(port))


def connect(addr, keyfile):
    with open(keyfile, 'rb') as f:
        key = f.read()
    m = M(address=py_address(addr), authkey=key)
    m.connect()
    return m


# What 2.7 puts, in 2.7's terms; what 3.x must get for it (b'' is 2.7's
# str there too, u'' its unicode).
PY2_ITEMS = [b'py2 str', u'py2 unicode \xe9', b'\xff\x00', 7,
             [b'a', u'b'], {b'k': u'v'}, (b'x', None, 1.5)]
PY3_ITEMS = [u'py3 str \xe9', b'py3 bytes', (u't', b'u'), {u'k': b'v'}]


def step_put2(m):
    q = m.get_queue()
    for item in PY2_ITEMS:
        q.put(item)


def expect_items(q, items):
    """The next items on q are these, in order, types too."""
    for want in items:
        got = q.get(timeout=10)
        check(same(got, want), "got %r, want %r" % (got, want))


def step_get3(m):
    q = m.get_queue()
    expect_items(q, PY2_ITEMS)
    for item in PY3_ITEMS:
        q.put(item)


def step_get2(m):
    q = m.get_queue()
    expect_items(q, PY3_ITEMS)
    for item in [b'same', u'same', [b's', u'u']]:
        q.put(item)
        got = q.get(timeout=10)
        check(same(got, item), "round trip: got %r, want %r" % (got, item))


def step_errors2(m):
    q = m.get_queue()
    try:
        q.get_nowait()
        check(False, "get_nowait on an empty queue returned")
    except queue_mod.Empty as e:
        check(type(e) is queue_mod.Empty, "Empty is a %r" % type(e))
    d = m.dict()
    d['a'] = 1
    check(d['a'] == 1, "d['a']")
    try:
        d['missing']
        check(False, "d['missing'] returned")
    except KeyError as e:
        check(type(e) is KeyError and same(e.args, ('missing',)),
              "KeyError args %r" % (e.args,))
    try:
        m.nosuchtype()
        check(False, "creating nosuchtype returned")
    except RemoteError as e:
        text = str(e)
        check(type(e.args[0]) is str, "traceback is a %r" % type(e.args[0]))
        check('KeyError' in text and 'nosuchtype' in text,
              "traceback %r" % text)


def step_serve2(addr, keyfile):
    with open(keyfile, 'rb') as f:
        key = f.read()
    q = queue_mod.Queue()
    d = {}

    class S(BaseManager):
        pass

    S.register('get_queue', callable=lambda: q)
    S.register('get_dict', callable=lambda: d, proxytype=DictProxy)
    S.register('dict', dict, DictProxy)
    m = S(address=py_address(addr), authkey=key)
    server = m.get_server()
    sys.stdout.write("tcp://%s:%d\n" % server.address)
    sys.stdout.flush()
    server.serve_forever()


def main():
    step, addr, keyfile = sys.argv[1:4]
    signal.alarm(120)
    if step == 'serve2':
        step_serve2(addr, keyfile)
        return
    steps = {'put2': step_put2, 'get3': step_get3, 'get2': step_get2,
             'errors2': step_errors2}
    m = connect(addr, keyfile)
    steps[step](m)
    sys.stdout.write("%s ok\n" % step)


if __name__ == '__main__':
    main()
