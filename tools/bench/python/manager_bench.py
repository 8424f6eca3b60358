"""Manager proxies in Python multiprocessing: the Python sides of
tools/bench/bench_manager.c. A Python client (SyncManager proxies, one
persistent connection per thread, as Python makes them) measures, against
a SyncManager server it starts (fork), over TCP and a Unix socket:

  python.manager.<tcp|unix>.rtt.median  us, one Value.get() round trip
  python.manager.<tcp|unix>.rtt.p99     us
  python.manager.<tcp|unix>.queue_pairs k/s, put(i) then get() on a Queue
  python.manager.<tcp|unix>.dict_ops    k/s, d[k] = v and d[k] (each one op)

each beside bench_manager's manager.<tcp|unix>.* (the mpx client on an mpx
server). Throughputs are the median of --runs repetitions.

  python3 manager_bench.py [--runs N] [--quick]
  python3 manager_bench.py --connect ADDR --authkey-hex K --name NAME
        the same figures, named NAME.*, against a server already running
        (ADDR in mpx syntax: tcp://HOST:PORT or unix:PATH): bench_manager
        measures the Python client on an mpx server this way.
  python3 manager_bench.py --serve ADDR --authkey-hex K
        a SyncManager server: prints its address (mpx syntax), serves until
        a client sends shutdown.
"""
import argparse
import os
import sys
import tempfile
from multiprocessing.managers import SyncManager

from benchlib import median, now, pct


def to_python(addr):
    if addr.startswith("tcp://"):
        host, _, port = addr[6:].rpartition(":")
        return (host.strip("[]"), int(port))
    return addr[5:]


def to_mpx(addr):
    if isinstance(addr, tuple):
        return "tcp://%s:%d" % addr
    return "unix:" + addr


def kind_of(addr):
    return "tcp" if isinstance(addr, tuple) else "unix"


def emit(name, value, unit):
    print("%s %.1f %s" % (name, value, unit))
    sys.stdout.flush()


def measure(m, name, runs, quick):
    n_rtt = 2000 if quick else 20000
    n_tp = 2000 if quick else 10000
    v = m.Value("i", 0)
    for _ in range(200):
        v.get()
    t = []
    for _ in range(n_rtt):
        t0 = now()
        v.get()
        t.append(now() - t0)
    emit(name + ".rtt.median", median(t) * 1e6, "us")
    emit(name + ".rtt.p99", pct(t, 0.99) * 1e6, "us")

    q = m.Queue()
    rates = []
    for _ in range(runs):
        t0 = now()
        for i in range(n_tp):
            q.put(i)
            q.get()
        rates.append(n_tp / (now() - t0))
    emit(name + ".queue_pairs", median(rates) / 1e3, "k/s")

    d = m.dict()
    rates = []
    for _ in range(runs):
        t0 = now()
        for i in range(n_tp):
            d[i & 63] = i
            d[i & 63]
        rates.append(2 * n_tp / (now() - t0))
    emit(name + ".dict_ops", median(rates) / 1e3, "k/s")
    del v, q, d


def client(addr, key, name, runs, quick):
    m = SyncManager(address=to_python(addr), authkey=key)
    m.connect()
    measure(m, name, runs, quick)


def serve(addr, key):
    server = SyncManager(address=to_python(addr), authkey=key).get_server()
    sys.stdout.write(to_mpx(server.address) + "\n")
    sys.stdout.flush()
    server.serve_forever()


def main():
    p = argparse.ArgumentParser(description="manager proxy figures")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--connect")
    p.add_argument("--serve")
    p.add_argument("--authkey-hex", default=os.urandom(16).hex())
    p.add_argument("--name", default="python.manager")
    a = p.parse_args()
    a.runs = max(1, min(a.runs, 64))
    key = bytes.fromhex(a.authkey_hex)
    if a.serve:
        serve(a.serve, key)
    elif a.connect:
        client(a.connect, key, a.name, a.runs, a.quick)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            for addr in [("127.0.0.1", 0), os.path.join(tmp, "mgr")]:
                m = SyncManager(address=addr, authkey=key)
                m.start()
                measure(m, "python.manager." + kind_of(addr), a.runs, a.quick)
                m.shutdown()


if __name__ == "__main__":
    main()
