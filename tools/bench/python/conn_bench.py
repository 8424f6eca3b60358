"""Pipe/Connection in Python multiprocessing: the pairs of
tools/bench/bench_conn.c, 64-byte messages one way from a child process to
its parent. Prints:

  python.conn.socket.single   M/s, Pipe(duplex=True) (a socketpair),
                              send_bytes / recv_bytes of 64 bytes
  python.conn.pipe.single     M/s, the same through Pipe(duplex=False)
                              (an os.pipe)
  python.conn.socket.pickled  M/s, send / recv of a 64-byte bytes object
                              (pickled each way), socketpair

The clock starts when the first message has arrived (the child's start is
left out). Each is the median of --runs repetitions.

  python3 conn_bench.py [--runs N] [--quick]
"""
import multiprocessing as mp

from benchlib import args, emit, now, repeat

ctx = mp.get_context("fork")
MSG = b"\x07" * 64


def sender(r, w, n, pickled):
    r.close()
    send = w.send if pickled else w.send_bytes
    for _ in range(n):
        send(MSG)
    w.close()


def run(duplex, pickled, n):
    r, w = ctx.Pipe(duplex)
    p = ctx.Process(target=sender, args=(r, w, n, pickled))
    p.start()
    w.close()
    recv = r.recv if pickled else r.recv_bytes
    if len(recv()) != 64:
        raise SystemExit("conn_bench: short message")
    t0 = now()
    for _ in range(n - 1):
        recv()
    dt = now() - t0
    p.join()
    r.close()
    return (n - 1) / dt


def main():
    a = args(__doc__)
    n = 20000 if a.quick else 200000
    emit("conn.socket.single", repeat(a.runs, run, True, False, n) / 1e6, "M/s")
    emit("conn.pipe.single", repeat(a.runs, run, False, False, n) / 1e6, "M/s")
    emit("conn.socket.pickled", repeat(a.runs, run, True, True, n) / 1e6, "M/s")


if __name__ == "__main__":
    main()
