#!/usr/bin/env python3
"""CPython's side of the pickle codec suite (standard library only).

  py_pickle.py gen DIR     write DIR/<name>.p<P>.pkl = pickle.dumps(value, P)
                           for every value below, P = 2, 4, 5
  py_pickle.py check DIR   pickle.loads every DIR/<name>.p<P>.pkl that mpx
                           wrote and compare it with the value of that name
                           (type-strict, floats by bits, NaN equal to NaN);
                           exit 1 on any mismatch or failure

The C suite builds the mpx_obj_t each name must decode to."""
import math
import os
import pickle
import queue
import sys
from multiprocessing import managers

TOKEN = managers.Token('dict', ('127.0.0.1', 50000), '7f00aa')


def _proxy():
    # A proxy pickles as RebuildProxy(DictProxy, token, 'pickle', {});
    # incref=False keeps it from connecting anywhere.
    return managers.DictProxy(TOKEN, 'pickle', manager=None, authkey=None,
                              incref=False)


def _memo():
    s = 'hello world'
    return [s, s, (s, s), {s: s}]


def _shared():
    a = [1, 2]
    return (a, a, [a])


VALUES = {
    'none': None, 'true': True, 'false': False,
    'int_0': 0, 'int_255': 255, 'int_256': 256, 'int_65535': 65535,
    'int_65536': 65536, 'int_m1': -1, 'int_i32max': 2**31 - 1,
    'int_i32min': -2**31, 'int_2p31': 2**31, 'int_m2p31m1': -2**31 - 1,
    'int_i64max': 2**63 - 1, 'int_i64min': -2**63, 'int_2p63': 2**63,
    'int_m2p63m1': -2**63 - 1, 'int_2p100': 2**100, 'int_m2p100': -2**100,
    'int_2p2100': 2**2100, 'int_m2p2100': -2**2100,
    'float_1_5': 1.5, 'float_m0': -0.0, 'float_inf': math.inf,
    'float_minf': -math.inf, 'float_nan': math.nan, 'float_tiny': 5e-324,
    'str_empty': '', 'str_abc': 'abc', 'str_uni': '\u00e9\u20ac\U0001f600',
    'str_nul': 'a\x00b', 'str_300': 'x' * 300, 'str_surr': '\ud800x',
    'bytes_empty': b'', 'bytes_all': bytes(range(256)),
    'bytes_300': b'\x80' * 300,
    'bytearray_ab': bytearray(b'a\xffb'), 'bytearray_empty': bytearray(),
    'tuple0': (), 'tuple1': (1,), 'tuple2': (1, 'a'), 'tuple3': (1, 'a', None),
    'tuple5': (1, 2, 3, 4, 5),
    'list_empty': [], 'list_mixed': [1, 'a', None, True, 1.5, b'x'],
    'list_2500': list(range(2500)),
    'dict_empty': {}, 'dict_small': {'a': 1, 'b': [1, 2]},
    'dict_2000': {i: str(i) for i in range(2000)},
    'dict_keys': {(1, 2): 'x', None: 1, 2.5: b'y'},
    'set_123': {1, 2, 3}, 'set_empty': set(), 'frozenset_12': frozenset({1, 2}),
    'token': TOKEN, 'keyerror': KeyError('k'), 'complex': 1 + 2j,
    'queue_empty': queue.Empty(),
    'memo_strs': _memo(), 'shared_list': _shared(),
    'nested': {'k': [1, (2, {'z': None, 'y': [[[]]]})]},
    'msg_dummy': (None, 'dummy', (), {}),
    'msg_return': ('#RETURN', None),
    'msg_proxy': ('#PROXY', (('get', 'keys'), TOKEN)),
    'msg_error': ('#ERROR', KeyError('k')),
    'rebuild_proxy': _proxy(),
}


def same(a, b):
    """Equal values of the same types, all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a):
            return math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items()))
    if isinstance(a, BaseException):
        return same(a.args, b.args)
    if isinstance(a, managers.Token):
        return same(a.__getstate__(), b.__getstate__())
    return a == b


def gen(d):
    for name, v in VALUES.items():
        for p in (2, 4, 5):
            with open(os.path.join(d, '%s.p%d.pkl' % (name, p)), 'wb') as f:
                f.write(pickle.dumps(v, protocol=p))


def check(d):
    bad = n = 0
    for fn in sorted(os.listdir(d)):
        if not fn.endswith('.pkl'):
            continue
        name = fn.split('.')[0]
        n += 1
        try:
            with open(os.path.join(d, fn), 'rb') as f:
                data = f.read()
            got = pickle.loads(data)
            if name not in VALUES:
                raise KeyError('no expected value named %r' % name)
            if not same(got, VALUES[name]):
                raise ValueError('got %r, expected %r' % (got, VALUES[name]))
        except Exception as e:
            bad += 1
            print('py_pickle: %s: %s: %r' % (fn, type(e).__name__, e),
                  file=sys.stderr)
    print('py_pickle: %d files, %d bad' % (n, bad))
    return 1 if bad or n == 0 else 0


if __name__ == '__main__':
    if len(sys.argv) != 3 or sys.argv[1] not in ('gen', 'check'):
        sys.exit(__doc__)
    if sys.argv[1] == 'gen':
        gen(sys.argv[2])
        sys.exit(0)
    sys.exit(check(sys.argv[2]))
