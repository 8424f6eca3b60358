"""Process start+join in Python multiprocessing, per start method: the pair
of tools/bench/bench_process.c. Prints:

  python.process.<method>.start_join.median   ms, one Process started then
  python.process.<method>.start_join.p90      joined (target does nothing)
  python.process.<method>.batch100            ms, 100 started, then joined

<method> is fork, forkserver or spawn; one warm-up start first (it starts
the fork server, fills the page cache). --runs is not used: the sample
counts are fixed (fewer with --quick). batch100 for spawn only without
--quick (it takes seconds).

  python3 process_bench.py [--quick]
"""
import multiprocessing as mp

from benchlib import args, emit, now, pct


def noop():
    pass


def method(name, samples, batch):
    ctx = mp.get_context(name)

    def one():
        p = ctx.Process(target=noop)
        p.start()
        p.join()
        if p.exitcode != 0:
            raise SystemExit("process_bench: child exited with %r" % p.exitcode)

    one()
    t = []
    for _ in range(samples):
        t0 = now()
        one()
        t.append((now() - t0) * 1e3)
    emit("process.%s.start_join.median" % name, pct(t, 0.5), "ms")
    emit("process.%s.start_join.p90" % name, pct(t, 0.9), "ms")
    if batch:
        t0 = now()
        ps = [ctx.Process(target=noop) for _ in range(100)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        emit("process.%s.batch100" % name, (now() - t0) * 1e3, "ms")


def main():
    a = args(__doc__)
    q = a.quick
    method("fork", 20 if q else 200, True)
    method("forkserver", 20 if q else 100, True)
    method("spawn", 5 if q else 30, not q)


if __name__ == "__main__":
    main()
