"""Pool in Python multiprocessing: the pairs of tools/bench/bench_pool.c,
Pool(2) with the fork start method unless said otherwise. Prints:

  python.pool.map.auto            calls/s, map of x*x over 1 M ints,
                                  chunksize left to Pool.map
  python.pool.map.chunk1          calls/s, map of 20 000, chunksize 1
  python.pool.map.chunk<10|100|1000>  calls/s, map of 100 000 (the curve
                                  of task rate against chunksize)
  python.pool.imap_unordered.chunk1  tasks/s, 20 000 tasks
  python.pool.apply.<p50|p99>     us per apply_async(...).get() round trip
                                  (what Pool.apply does), 5 000 calls after
                                  100 untimed
  python.pool.apply_1mib          GB/s through apply_async(...).get() of a
                                  1 MiB bytes argument returned as the
                                  result (2 MiB per call), median call
  python.pool.create_join.<fork|spawn>  ms for Pool(2) create + close + join
                                  (the first cycle also runs one task),
                                  median of 10 (fork) / 5 (spawn) cycles
  python.pool.primes.<1|2>        s for the seed's primes work (the sum of
                                  the primes below n, trial division, for n
                                  in range(100000, --primes-max, 100000))
                                  through Pool(1) / Pool(2).map, chunksize 1

The pools are made and warmed before the clock starts, except for
imap_unordered and create_join. Map rates are medians of --runs
repetitions; --quick divides the item counts by 10. primes runs once.

  python3 pool_bench.py [--runs N] [--quick] [--primes-max N]
"""
import math
import multiprocessing as mp

from benchlib import args, emit, median, now, pct

ctx = mp.get_context("fork")


def square(x):
    return x * x


def echo(b):
    return b


# The seed's isprime and the work of tools/bench/primes_ref.h.
def isprime(n):
    if n < 2:
        return False
    if n == 2:
        return True
    for i in range(2, math.ceil(math.sqrt(n)) + 1):
        if n % i == 0:
            return False
    return True


def sum_primes(n):
    return sum(x for x in range(2, n) if isprime(x))


def run_map(pool, n, chunk):
    pool.map(square, range(100))
    t0 = now()
    out = pool.map(square, range(n), chunksize=chunk)
    dt = now() - t0
    if out[-1] != (n - 1) * (n - 1):
        raise SystemExit("pool_bench: wrong result")
    return n / dt


def run_imap(n):
    with ctx.Pool(2) as pool:
        t0 = now()
        got = sum(1 for _ in pool.imap_unordered(square, range(n), chunksize=1))
        dt = now() - t0
    if got != n:
        raise SystemExit("pool_bench: imap_unordered lost tasks")
    return n / dt


def run_apply(pool, n):
    t = []
    for i in range(-100, n):
        t0 = now()
        if pool.apply_async(square, (i,)).get() != i * i:
            raise SystemExit("pool_bench: wrong result")
        if i >= 0:
            t.append((now() - t0) * 1e6)
    return pct(t, 0.5), pct(t, 0.99)


def run_apply_big(pool, n):
    mib = 1 << 20
    b = bytes(i * 7 & 0xFF for i in range(256)) * (mib // 256)
    t = []
    for i in range(-5, n):
        t0 = now()
        r = pool.apply_async(echo, (b,)).get()
        if i >= 0:
            t.append(now() - t0)
        if r != b:
            raise SystemExit("pool_bench: wrong 1 MiB result")
    return 2 * mib / pct(t, 0.5) / 1e9


def run_cycle(method, cycles):
    c = mp.get_context(method)
    t = []
    for i in range(cycles):
        t0 = now()
        pool = c.Pool(2)
        if i == 0:
            pool.apply(square, (3,))
        pool.close()
        pool.join()
        t.append((now() - t0) * 1e3)
    return pct(t, 0.5)


def run_primes(workers, ns):
    with ctx.Pool(workers) as pool:
        pool.map(square, range(workers * 4), chunksize=1)
        t0 = now()
        sums = pool.map(sum_primes, ns, chunksize=1)
        dt = now() - t0
    return dt, sum(sums)


def main():
    a = args(__doc__, primes=True)
    s = 10 if a.quick else 1
    r = range(a.runs)
    with ctx.Pool(2) as pool:
        emit("pool.map.auto", median([run_map(pool, 1000000 // s, None) for _ in r]),
             "calls/s", "%.0f")
        emit("pool.map.chunk1", median([run_map(pool, 20000 // s, 1) for _ in r]),
             "calls/s", "%.0f")
        for c in (10, 100, 1000):
            emit("pool.map.chunk%d" % c, median([run_map(pool, 100000 // s, c) for _ in r]),
                 "calls/s", "%.0f")
    emit("pool.imap_unordered.chunk1", median([run_imap(20000 // s) for _ in r]),
         "tasks/s", "%.0f")
    with ctx.Pool(2) as pool:
        lat = [run_apply(pool, 5000 // s) for _ in r]
        emit("pool.apply.p50", median([x[0] for x in lat]), "us", "%.1f")
        emit("pool.apply.p99", median([x[1] for x in lat]), "us", "%.1f")
        emit("pool.apply_1mib", median([run_apply_big(pool, 50 // s * 2) for _ in r]),
             "GB/s", "%.2f")
    emit("pool.create_join.fork", run_cycle("fork", 5 if a.quick else 10), "ms", "%.2f")
    emit("pool.create_join.spawn", run_cycle("spawn", 3 if a.quick else 5), "ms", "%.2f")
    ns = list(range(100000, a.primes_max, 100000))
    if ns:
        t1, c1 = run_primes(1, ns)
        t2, c2 = run_primes(2, ns)
        if c1 != c2:
            raise SystemExit("pool_bench: primes checksums differ")
        emit("pool.primes.max", a.primes_max, "n", "%d")
        emit("pool.primes.1", t1, "s")
        emit("pool.primes.2", t2, "s")


if __name__ == "__main__":
    main()
