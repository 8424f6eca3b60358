#!/usr/bin/env python3
"""Writes weather station measurements, one "city;temperature" line each, as
in the one billion row challenge, for examples/measurements.yaml.

    python3 examples/gen_measurements.py PATH [--rows N | --bytes SIZE]
                                              [--cities N] [--seed S]

PATH is the file to write ('-': standard output). --rows N writes N lines
(default 1000000); --bytes SIZE writes lines until the first one that
reaches SIZE bytes (a number, or with a unit: 500KB, 100MB, 1GB, powers of
1024). --cities N (default 400) is how many distinct cities there are; their
names are made of syllables and depend only on N and the seed, never on
--rows. A temperature has exactly one decimal and lies in [-99.9, 99.9]:
each city has its own mean, and a reading is that mean plus a normal
deviation, clamped. The same arguments always write the same bytes, with
any Python 3 (random.Random with a seed is stable across versions for the
calls used here).

Only the standard library.
"""

import argparse
import random
import sys

SYLLABLES = ["ba", "ko", "ri", "ta", "mu", "ne", "lo", "shi", "va", "de",
             "pe", "zan", "or", "el", "qui", "su", "dra", "mon", "ga", "ty"]
SUFFIXES = ["", " City", "ville", " Bay", "burg", " Springs", "abad", "grad"]


def parse_size(text):
    units = {"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "B": 1}
    t = text.strip().upper()
    for u, m in units.items():
        if t.endswith(u):
            return int(float(t[:-len(u)]) * m)
    return int(t)


def city_names(n, rnd):
    """n distinct names, deterministic for (n, seed)."""
    names, seen = [], set()
    while len(names) < n:
        k = rnd.randint(2, 4)
        name = "".join(rnd.choice(SYLLABLES) for _ in range(k)).capitalize()
        name += rnd.choice(SUFFIXES)
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def tenths_text(t):
    """Tenths as text with one decimal, without floating point."""
    sign = "-" if t < 0 else ""
    a = abs(t)
    return "%s%d.%d" % (sign, a // 10, a % 10)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--rows", type=int)
    g.add_argument("--bytes", type=parse_size)
    ap.add_argument("--cities", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.cities < 1:
        ap.error("--cities must be at least 1")
    rows = a.rows if a.rows is not None else (None if a.bytes else 1000000)
    if rows is not None and rows < 0:
        ap.error("--rows must be at least 0")

    names = city_names(a.cities, random.Random("cities-%d" % a.seed))
    rnd = random.Random(a.seed)
    means = [rnd.randint(-300, 400) for _ in names]  # tenths of a degree
    out = sys.stdout.buffer if a.path == "-" else open(a.path, "wb")
    written, n, chunk = 0, 0, []
    while True:
        if rows is not None and n >= rows:
            break
        if a.bytes is not None and written >= a.bytes:
            break
        i = rnd.randrange(len(names))
        t = means[i] + int(round(rnd.gauss(0.0, 100.0)))
        t = max(-999, min(999, t))
        line = "%s;%s\n" % (names[i], tenths_text(t))
        b = line.encode("utf-8")
        chunk.append(b)
        written += len(b)
        n += 1
        if len(chunk) >= 65536:
            out.write(b"".join(chunk))
            chunk = []
    out.write(b"".join(chunk))
    out.flush()
    if out is not sys.stdout.buffer:
        out.close()


if __name__ == "__main__":
    main()
