"""Queue in Python multiprocessing: the pairs of tools/bench/bench_queue.c,
one producer process -> one consumer (the parent). Prints:

  python.queue.<8B|100B|4KiB>   msgs/s of bytes objects of that size
  python.queue.1MiB.copy        GB/s of 1 MiB bytes objects
  python.queue.pingpong.<p50|p99>  us per round trip of an int through two
                                Queues (parent puts on one, the child
                                echoes it on the other)

Queues are unbounded (Queue(), what most code uses; mpx's are bounded).
The clock starts when the first item has arrived (the child's start is
left out). Throughputs are medians of --runs repetitions, the percentiles
medians over the repetitions.

  python3 queue_bench.py [--runs N] [--quick]
"""
import multiprocessing as mp

from benchlib import args, emit, median, now, pct

ctx = mp.get_context("fork")


def producer(q, size, n):
    item = b"\x07" * size
    put = q.put
    for _ in range(n):
        put(item)


def throughput(size, n):
    q = ctx.Queue()
    p = ctx.Process(target=producer, args=(q, size, n))
    p.start()
    get = q.get
    if len(get()) != size:
        raise SystemExit("queue_bench: wrong size")
    t0 = now()
    for _ in range(n - 1):
        get()
    dt = now() - t0
    p.join()
    return (n - 1) / dt


def echo(a, b, n):
    for _ in range(n):
        b.put(a.get())


def pingpong(n):
    warm = 10
    a, b = ctx.Queue(), ctx.Queue()
    p = ctx.Process(target=echo, args=(a, b, n + warm))
    p.start()
    t = []
    for i in range(n + warm):
        t0 = now()
        a.put(i)
        if b.get() != i:
            raise SystemExit("queue_bench: ping-pong out of order")
        if i >= warm:
            t.append((now() - t0) * 1e6)
    p.join()
    return pct(t, 0.5), pct(t, 0.99)


def main():
    a = args(__doc__)
    q = a.quick
    n = 20000 if q else 200000
    for name, size in (("8B", 8), ("100B", 100), ("4KiB", 4096)):
        m = n // 4 if size > 1000 else n
        emit("queue." + name, median([throughput(size, m) for _ in range(a.runs)]), "msgs/s",
             "%.0f")
    mib = 1 << 20
    emit("queue.1MiB.copy",
         median([throughput(mib, 30 if q else 300) for _ in range(a.runs)]) * mib / 1e9, "GB/s")
    rt = [pingpong(1000 if q else 5000) for _ in range(a.runs)]
    emit("queue.pingpong.p50", median([r[0] for r in rt]), "us", "%.2f")
    emit("queue.pingpong.p99", median([r[1] for r in rt]), "us", "%.2f")


if __name__ == "__main__":
    main()
