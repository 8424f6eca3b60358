"""One Python client against two manager servers, interleaved: mpx's
(`mpx manager serve`) and CPython's own (a SyncManager it starts), both
over TCP on this machine, measured in the same run in alternating blocks
(A B A B ...), so that both see the same machine state (load, frequency,
other processes). The figure docs/manager.md quotes.

Per round, for each server in turn (mpx first, then CPython), one block of
--calls round trips of each operation, each timed on its own:

  qsize     Queue.qsize() on a Queue proxy
  dict.get  dict.get('k') on a dict proxy

Prints a `#` header (interpreter, CPUs, load average, rounds, calls) and

  manager_ab.<op>.mpx      us  median of the per-block medians
  manager_ab.<op>.cpython  us
  manager_ab.<op>.ratio    x   mpx / CPython, the median of the per-round
                               ratios (each round's two blocks side by side)

and a `#` line per figure with the range (min-max) over the rounds.

  python3 manager_ab.py [--mpx PATH] [--calls N] [--rounds R] [--quick]

--mpx is the mpx binary (default: build-release/tools/mpx, else
build/tools/mpx); --quick: 3 rounds of 300 calls (CI smoke). Standard
library only."""
import argparse
import os
import platform
import subprocess
import sys
import tempfile
from multiprocessing.managers import SyncManager

from benchlib import median, now

KEY = b"manager-ab-bench"
OPS = ("qsize", "dict.get")


def start_mpx(binary, keyfile):
    p = subprocess.Popen([binary, "manager", "serve", "--listen", "tcp://127.0.0.1:0",
                          "--authkey-file", keyfile], stdout=subprocess.PIPE,
                         universal_newlines=True)
    line = p.stdout.readline().strip()
    if not line.startswith("tcp://"):
        p.kill()
        sys.exit("manager_ab: mpx manager serve printed %r" % line)
    host, _, port = line[6:].rpartition(":")
    return p, (host, int(port))


def client(address):
    m = SyncManager(address=address, authkey=KEY)
    m.connect()
    q = m.Queue()
    d = m.dict()
    d["k"] = 1
    calls = {"qsize": q.qsize, "dict.get": lambda: d.get("k")}
    for f in calls.values():
        for _ in range(200):  # warm up: connections made, caches filled
            f()
    return m, calls, (q, d)


def block(f, n):
    """The median of n round trips of f, in microseconds."""
    t = []
    for _ in range(n):
        t0 = now()
        f()
        t.append(now() - t0)
    return median(t) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mpx", default=None)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)  # run's common flag: unused
    a = ap.parse_args()
    if a.quick:
        a.calls, a.rounds = 300, 3
    binary = a.mpx
    if binary is None:
        for b in ("build-release/tools/mpx", "build/tools/mpx"):
            if os.access(b, os.X_OK):
                binary = b
                break
    if binary is None:
        sys.exit("manager_ab: no mpx binary (give --mpx PATH)")

    fd, keyfile = tempfile.mkstemp(prefix="manager-ab-")
    os.write(fd, KEY)
    os.close(fd)
    mpx_proc, mpx_addr = start_mpx(binary, keyfile)
    ref = SyncManager(address=("127.0.0.1", 0), authkey=KEY)
    ref.start()
    try:
        servers = (("mpx", client(mpx_addr)), ("cpython", client(ref.address)))
        res = {(s, op): [] for s, _ in servers for op in OPS}
        for _ in range(a.rounds):
            for s, (_, calls, _) in servers:  # A then B, every round
                for op in OPS:
                    res[(s, op)].append(block(calls[op], a.calls))
        print("# manager_ab: Python %s client, %d CPUs, load average %s, "
              "%d rounds x %d calls per operation per server, order mpx cpython "
              "(A B A B), TCP on 127.0.0.1"
              % (platform.python_version(), os.cpu_count(),
                 " ".join(open("/proc/loadavg").read().split()[:3]), a.rounds, a.calls))
        for op in OPS:
            ratios = [x / y for x, y in zip(res[("mpx", op)], res[("cpython", op)])]
            for s in ("mpx", "cpython"):
                v = res[(s, op)]
                print("manager_ab.%s.%s %.1f us" % (op, s, median(v)))
                print("# manager_ab.%s.%s range %.1f-%.1f us over %d blocks"
                      % (op, s, min(v), max(v), len(v)))
            print("manager_ab.%s.ratio %.2f x" % (op, median(ratios)))
            print("# manager_ab.%s.ratio range %.2f-%.2f over %d rounds"
                  % (op, min(ratios), max(ratios), len(ratios)))
        sys.stdout.flush()
        for _, (m, _, objs) in servers:
            del objs
    finally:
        ref.shutdown()
        mpx_proc.terminate()
        mpx_proc.wait()
        os.unlink(keyfile)


if __name__ == "__main__":
    main()
