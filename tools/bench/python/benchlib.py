"""What the Python benchmark scripts share: the command line, a clock,
medians and percentiles picked the way tools/bench/bench.h picks them
(t[n/2], t[n*0.99] of the sorted samples), and `name value unit` output.

Every script takes
    --runs N         each throughput figure is the median of N repetitions
    --quick          less work per repetition (CI smoke; figures are noisier)
    --primes-max N   the primes range (pool_bench.py only)
and prints one `python.<name> value unit` line per figure, <name> being
the name of the mpx figure it pairs with.

The scripts use the standard library only, and the 'fork' start method
unless a figure names another (Python 3.11's default on Linux).
"""
import argparse
import sys
import time

now = time.perf_counter


def args(description, primes=False):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--quick", action="store_true")
    if primes:
        p.add_argument("--primes-max", type=int, default=1000000)
    a = p.parse_args()
    a.runs = max(1, min(a.runs, 64))
    return a


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def pct(v, q):
    """The q-quantile (0 < q < 1) of samples v, as bench.h picks it."""
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * q))]


def emit(name, value, unit, fmt="%.3f"):
    print(("python.%s " + fmt + " %s") % (name, value, unit))
    sys.stdout.flush()


def repeat(runs, fn, *a):
    """Median of runs calls of fn(*a)."""
    return median([fn(*a) for _ in range(runs)])
