#!/usr/bin/env python3
"""CPython's side of the manager_client suite (stdlib only).

    py_manager_server.py server ADDR KEYHEX
    py_manager_server.py check|fill|dict|consume N|produce N ADDR KEYHEX

ADDR is in mpx syntax (tcp://HOST:PORT, unix:PATH); KEYHEX the authkey
in hex.

server:  a SyncManager server (Queue, dict, list, Value, Lock, Event...)
         that also publishes get_queue (callable=lambda: q, as in the
         docs) and get_dict; prints its bound address (mpx syntax) on a
         line of stdout, then serves until a client sends shutdown.
check:   connects as a client and gets len(VALUES) items from get_queue:
         each must equal VALUES[i] exactly (types too: True is no 1, a
         tuple no list, 1.0 no 1), in order.
fill:    puts every item of VALUES on get_queue.
dict:    get_dict must be {"from": "c", "n": 42}; then sets d["py"] = "yes".
consume: gets N items (ints) from get_queue and prints their sum.
produce: puts the ints 0..N-1 on get_queue.

VALUES is the pickle subset a manager carries; test_manager_client.c
builds the same list. Exit 0 when all matched, 1 otherwise (a message
on stderr). A 120 s alarm ends a helper left waiting.
"""
import math
import queue
import signal
import sys
from multiprocessing.managers import BaseManager, DictProxy, SyncManager

VALUES = [
    None, True, False,
    0, 1, -1, 255, 256, 65535, 65536, 2**31 - 1, -2**31, 2**63 - 1, -2**63,
    2**64, 2**100, -(2**100), -(2**64) - 1,
    1.5, -0.0, float("inf"), -1e300,
    "", "héllo wörld ✓ 日本", "a" * 300,
    b"", b"\x00\xff", bytes(range(256)) * 3,
    (), (1,), (1, "a", None), [], [1, [2, [3, (4,)]]],
    {}, {"a": 1, "b": [1, 2], "c": {"d": (1, 2)}}, {1: "int key", (1, 2): "tuple key"},
]


def same(a, b):
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(k1, k2) and same(v1, v2)
            for (k1, v1), (k2, v2) in zip(a.items(), b.items()))
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return a == b


def to_python(addr):
    if addr.startswith("tcp://"):
        host, _, port = addr[6:].rpartition(":")
        return (host.strip("[]"), int(port))
    if addr.startswith("unix:"):
        return addr[5:]
    raise ValueError("bad address %r" % addr)


def to_mpx(addr):
    if isinstance(addr, tuple):
        return "tcp://%s:%d" % (addr[0], addr[1])
    return "unix:" + addr


class Client(BaseManager):
    pass


Client.register("get_queue")
Client.register("get_dict", proxytype=DictProxy)


def connect(addr, key):
    m = Client(address=to_python(addr), authkey=key)
    m.connect()
    return m


def serve(addr, key):
    q = queue.Queue()
    d = {}

    class Server(SyncManager):
        pass

    Server.register("get_queue", callable=lambda: q)
    Server.register("get_dict", callable=lambda: d, proxytype=DictProxy)
    server = Server(address=to_python(addr), authkey=key).get_server()
    sys.stdout.write(to_mpx(server.address) + "\n")
    sys.stdout.flush()
    server.serve_forever()  # sys.exit(0) after a shutdown request


def fail(msg):
    sys.stderr.write("py_manager_server: %s\n" % msg)
    return 1


def main():
    signal.alarm(120)
    args = sys.argv[1:]
    n = 0
    if args[0] in ("consume", "produce"):
        n = int(args.pop(1))
    mode, addr, key = args[0], args[1], bytes.fromhex(args[2])
    if mode == "server":
        serve(addr, key)
        return 0
    m = connect(addr, key)
    if mode == "check":
        q = m.get_queue()
        for i, want in enumerate(VALUES):
            got = q.get(timeout=10)
            if not same(got, want):
                return fail("item %d: got %r, want %r" % (i, got, want))
        return 0
    if mode == "fill":
        q = m.get_queue()
        for v in VALUES:
            q.put(v)
        return 0
    if mode == "dict":
        d = m.get_dict()
        got = d.copy()
        if not same(got, {"from": "c", "n": 42}):
            return fail("dict: got %r" % (got,))
        d["py"] = "yes"
        return 0
    if mode == "consume":
        q = m.get_queue()
        print(sum(q.get(timeout=30) for _ in range(n)))
        return 0
    if mode == "produce":
        q = m.get_queue()
        for i in range(n):
            q.put(i)
        return 0
    return fail("unknown mode %r" % mode)


if __name__ == "__main__":
    sys.exit(main())
