"""Synchronization in Python multiprocessing: the pairs of the lock, value
and event lines of tools/bench/bench_shm.c. Prints:

  python.lock.uncontended        M/s, Lock acquire+release pairs, one
                                 process (bound methods looked up once)
  python.value.incr_2proc        M/s, Value('q') `+= 1` under its own lock
                                 (`with v.get_lock(): v.value += 1`), two
                                 processes at once, from the first start
                                 to the last join
  python.event.pingpong_2proc    k/s, Event round trips between two
                                 processes (set ping, wait pong, clear),
                                 after 10 untimed round trips

Each is the median of --runs repetitions.

  python3 shm_bench.py [--runs N] [--quick]
"""
import multiprocessing as mp

from benchlib import args, emit, now, repeat

ctx = mp.get_context("fork")


def lock_pairs(n):
    lock = ctx.Lock()
    acquire, release = lock.acquire, lock.release
    t0 = now()
    for _ in range(n):
        acquire()
        release()
    return n / (now() - t0)


def incr(v, per):
    lock = v.get_lock()
    for _ in range(per):
        with lock:
            v.value += 1


def value_incr(per):
    v = ctx.Value("q", 0)
    t0 = now()
    ps = [ctx.Process(target=incr, args=(v, per)) for _ in range(2)]
    for p in ps:
        p.start()
    for p in ps:
        p.join()
    dt = now() - t0
    if v.value != 2 * per:
        raise SystemExit("shm_bench: lost increments (%d)" % v.value)
    return 2 * per / dt


def ponger(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_pingpong(n):
    warm = 10
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(target=ponger, args=(ping, pong, n + warm))
    p.start()
    for i in range(n + warm):
        if i == warm:
            t0 = now()
        ping.set()
        pong.wait()
        pong.clear()
    dt = now() - t0
    p.join()
    return n / dt


def main():
    a = args(__doc__)
    s = 0.1 if a.quick else 1.0
    emit("lock.uncontended", repeat(a.runs, lock_pairs, int(2e6 * s)) / 1e6, "M/s")
    emit("value.incr_2proc", repeat(a.runs, value_incr, int(5e5 * s)) / 1e6, "M/s")
    emit("event.pingpong_2proc", repeat(a.runs, event_pingpong, int(2e4 * s)) / 1e3, "k/s",
         "%.2f")


if __name__ == "__main__":
    main()
