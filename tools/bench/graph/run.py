#!/usr/bin/env python3
"""The graph and partition benchmarks of issue 17, in one command:

  tools/bench/graph/run.py [--quick] [--rounds N] [--timeout S] [--out FILE]
                           [--cases wc,meas,fanout] [--base COMMIT | --no-base]
                           [--with-base]

Builds mpx in Release (build-release/, as tools/bench/run does) and, unless
--no-base, the pre-change tree (--base, default a0beab1: today's merge) in
build-release/bench-graph/base-COMMIT/; generates the inputs (gen.c: seeded,
the same bytes every time, kept between runs); then, case by case, runs every
variant of the case in turn, round after round (A B C A B C: interleaved, on
a warm page cache), recording the wall time, the peak RSS of the coordinator
(mpx run) or of the largest process (the shell oracles), and checking every
output against the oracle's. It writes

  OUT                       the report, ratios first (default
                            docs/bench/graph-results.md; with --quick
                            build-release/bench-graph-quick.md)
  WORK/lines.txt            `name value unit` lines, as tools/bench/run's
  WORK/runs.json            every run: command, time, RSS, output check
  WORK/out/                 the outputs of the last round, stderr, stats

WORK is build-release/bench-graph (bench-graph-quick with --quick). Cases:

  wc      wordcount with many keys: ~114 MB with 3,000,000 distinct words and
          1 GiB with 10,000,000; today's merge (the --base build), the linear
          merge (this tree, unpartitioned) and the partitioned form, each with
          1 and 2 workers, beside `tr -s ' ' '\\n' | LC_ALL=C sort | uniq -c`
  meas    "city;temperature", ~1 GB, 400 and 1,000,000 cities: aggregate
          partitioned and unpartitioned (the coordinator merges), beside
          `LC_ALL=C awk` and GNU parallel --pipepart with mawk (or awk)
  fanout  range to two print sinks against range to one, items/s

--quick: tiny inputs, 2 rounds, no base build unless --with-base: a smoke
test of the harness in seconds. A variant the tree cannot run yet (no
`aggregate` plugin, no `partition_by` or `inputs` in the config, no fold in
wordcount) is reported "not available" with the reason `mpx check` gave. A
run that exceeds --timeout is stopped, reported as such, and not run again in
later rounds. Exit status 1 when a run failed or an output differed from its
oracle's; no figure is checked against its aim here (the report shows them).
Standard library only.
"""
import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HERE = os.path.join(ROOT, "tools", "bench", "graph")
BUILD = os.path.join(ROOT, "build-release")
DEFAULT_BASE = "a0beab1"

# ---- sizes -------------------------------------------------------------------
# (tag, bytes, distinct/keys): the sizes, and tiny ones for --quick.
FULL = {
    "wc": [("3M", 114_000_000, 3_000_000), ("10M", 1 << 30, 10_000_000)],
    "meas": [("400", 1_000_000_000, 400), ("1M", 1_000_000_000, 1_000_000)],
    "fanout": 50_000_000,
}
QUICK = {
    "wc": [("3M", 1_000_000, 30_000), ("10M", 2_000_000, 100_000)],
    "meas": [("400", 4_000_000, 400), ("1M", 4_000_000, 20_000)],
    "fanout": 200_000,
}
SEED = 17


def log(msg):
    print("bench-graph: " + msg, file=sys.stderr, flush=True)


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


# ---- building ----------------------------------------------------------------
def build_tree(src, build, quiet=True):
    out = subprocess.DEVNULL if quiet else None
    sh(["cmake", "-S", src, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
        "-DMPX_BUILD_TESTS=OFF", "-DMPX_BUILD_BENCH=OFF"], stdout=out)
    sh(["cmake", "--build", build, "-j", str(os.cpu_count() or 1)], stdout=out)


def build_base(commit, work):
    """The pre-change tree, built once per commit; (mpx path, None) or
    (None, why not)."""
    try:
        full = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", commit + "^{commit}"],
                              check=True, capture_output=True, text=True).stdout.strip()
    except subprocess.CalledProcessError:
        return None, "commit %s is not in this clone (a shallow clone? fetch it)" % commit
    top = os.path.join(work, "bench-graph-base-" + full[:12])
    mpx = os.path.join(top, "build", "tools", "mpx")
    stamp = os.path.join(top, "built")
    if not os.path.exists(stamp):
        log("building the base tree %s in %s" % (full[:12], top))
        shutil.rmtree(top, ignore_errors=True)
        os.makedirs(os.path.join(top, "src"))
        arch = subprocess.Popen(["git", "-C", ROOT, "archive", full], stdout=subprocess.PIPE)
        sh(["tar", "-x", "-C", os.path.join(top, "src")], stdin=arch.stdout)
        if arch.wait() != 0:
            return None, "git archive %s failed" % commit
        build_tree(os.path.join(top, "src"), os.path.join(top, "build"))
        open(stamp, "w").write(full + "\n")
    return mpx, None


def build_helpers(bindir):
    os.makedirs(bindir, exist_ok=True)
    cc = os.environ.get("CC", "cc")
    gen = os.path.join(bindir, "gen")
    hwm = os.path.join(bindir, "hwm.so")
    has = os.path.join(bindir, "plugin_has")
    sh([cc, "-O2", "-o", gen, os.path.join(HERE, "gen.c"), "-lm"])
    sh([cc, "-O2", "-shared", "-fPIC", "-o", hwm, os.path.join(HERE, "hwm.c")])
    sh([cc, "-O2", "-I", os.path.join(ROOT, "include"), "-o", has,
        os.path.join(HERE, "plugin_has.c"), "-ldl"])
    return gen, hwm, has


def gen_input(gen, datadir, kind, size, n):
    """The input file, made once: its name holds every argument."""
    path = os.path.join(datadir, "%s-%d-%d-s%d.txt" % (kind, size, n, SEED))
    if not os.path.exists(path):
        log("generating %s" % path)
        t0 = time.monotonic()
        sh([gen, kind, path + ".tmp", str(size), str(n), str(SEED)])
        os.rename(path + ".tmp", path)
        log("  %.1f s, %d bytes" % (time.monotonic() - t0, os.path.getsize(path)))
    return path


def warm(path):
    """Reads the file once, so every variant finds it in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(16 << 20):
            pass


# ---- one run -----------------------------------------------------------------
class Variant:
    """One thing measured. kind "mpx": argv is an mpx run (the coordinator's
    RSS is measured); "shell": a shell pipeline (the largest process's)."""

    def __init__(self, name, label, kind, argv, check=None, avail=None):
        self.name, self.label, self.kind, self.argv = name, label, kind, argv
        self.check = check      # fn(out_path, stats) -> (ok, note)
        self.avail = avail      # None: available; else why not
        self.note = ""          # shown beside the figures
        self.runs = []          # dicts, one per round
        self.stopped = None     # why later rounds were skipped


def mpx_env(hwm, hwmdir):
    env = dict(os.environ)
    for k in ("MPX_PLUGIN_PATH", "MPX_WORKER"):
        env.pop(k, None)
    env["LD_PRELOAD"] = hwm
    env["MPX_BENCH_HWM_DIR"] = hwmdir
    env["LC_ALL"] = "C"
    return env


def run_one(v, outdir, hwm, timeout):
    out = os.path.join(outdir, v.name + ".out")
    err = os.path.join(outdir, v.name + ".err")
    stats = os.path.join(outdir, v.name + ".stats.json")
    hwmdir = os.path.join(outdir, "hwm")
    os.makedirs(hwmdir, exist_ok=True)
    for p in (stats,):
        if os.path.exists(p):
            os.unlink(p)
    argv = [a.replace("{STATS}", stats) for a in v.argv]
    env = mpx_env(hwm, hwmdir) if v.kind == "mpx" else dict(os.environ, LC_ALL="C")
    with open(out, "wb") as fo, open(err, "wb") as fe:
        t0 = time.monotonic()
        p = subprocess.Popen(argv, stdout=fo, stderr=fe, env=env, start_new_session=True)
        timed_out = []

        def kill():
            timed_out.append(1)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.monotonic() - t0
        timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
    r = {"variant": v.name, "argv": argv, "wall_s": wall, "exit": p.returncode,
         "tree_maxrss_kb": ru.ru_maxrss}
    if timed_out:
        r["error"] = "timed out after %d s" % timeout
        return r
    st = None
    if v.kind == "mpx":
        try:
            st = json.load(open(stats))
        except (OSError, ValueError):
            st = None
        r["rss_kb"], r["rss_from"] = None, None
        if st and isinstance(st.get("coordinator_peak_rss_kb"), (int, float)):
            r["rss_kb"], r["rss_from"] = st["coordinator_peak_rss_kb"], "stats-json"
        else:
            f = os.path.join(hwmdir, str(p.pid))
            if os.path.exists(f):
                r["rss_kb"], r["rss_from"] = int(open(f).read()), "VmHWM at exit"
                os.unlink(f)
        if st:
            r["dead_lettered"] = st.get("dead_lettered")
            r["failed"] = sum(s.get("failed", 0) for s in st.get("stages", []))
    else:
        r["rss_kb"], r["rss_from"] = ru.ru_maxrss, "wait4 (largest process)"
    if p.returncode != 0:
        tail = open(err, errors="replace").read().strip().splitlines()[-3:]
        r["error"] = "exit status %d: %s" % (p.returncode, " / ".join(tail))
    elif v.kind == "mpx" and (st is None or r.get("dead_lettered") or r.get("failed")):
        r["error"] = "no stats, or failed/dead-lettered items (see %s)" % stats
    elif v.check:
        try:
            ok, note = v.check(out, st)
        except (ValueError, KeyError, StopIteration, RuntimeError) as e:
            ok, note = False, "unreadable (%s)" % e
        r["output_ok"], r["output_note"] = ok, note
        if not ok:
            r["error"] = "output differs from the oracle's: " + note
    return r


def run_case(variants, outdir, hwm, rounds, timeout, inputs):
    for path in inputs:
        warm(path)
    live = [v for v in variants if v.avail is None]
    for rnd in range(1, rounds + 1):
        for v in live:
            if v.stopped:
                continue
            r = run_one(v, outdir, hwm, timeout)
            r["round"] = rnd
            v.runs.append(r)
            rss = "%.0f MB" % (r["rss_kb"] / 1024) if r.get("rss_kb") else "–"
            log("round %d/%d %-28s %8.2f s  %s%s" % (rnd, rounds, v.name, r["wall_s"], rss,
                                                     "  ERROR: " + r["error"] if "error" in r else ""))
            if "error" in r:
                v.stopped = r["error"]


# ---- output checks -----------------------------------------------------------
def wc_digest(path):
    """Word counts as "WORD COUNT" lines in byte order, hashed: the same
    for "COUNT WORD" (mpx) and "   COUNT WORD" (uniq -c) in any order."""
    awk = subprocess.Popen(["awk", "{print $2\" \"$1}", path], stdout=subprocess.PIPE,
                           env=dict(os.environ, LC_ALL="C"))
    srt = subprocess.Popen(["sort", "-S", "25%"], stdin=awk.stdout, stdout=subprocess.PIPE,
                           env=dict(os.environ, LC_ALL="C"))
    awk.stdout.close()
    h, n = hashlib.sha256(), 0
    for chunk in iter(lambda: srt.stdout.read(1 << 20), b""):
        h.update(chunk)
        n += chunk.count(b"\n")
    if awk.wait() != 0 or srt.wait() != 0:
        raise RuntimeError("could not sort " + path)
    return h.hexdigest(), n


class Oracle:
    """The first good output of the oracle variant is the reference; every
    other output (and the oracle's later ones) must equal it."""

    def __init__(self, digest_fn, name):
        self.fn, self.name, self.ref = digest_fn, name, None

    def check_ref(self, path, stats):
        d = self.fn(path)
        if self.ref is None:
            self.ref = d
            return True, "reference (%s)" % self.describe(d)
        return self.compare(d)

    def check(self, path, stats):
        if self.ref is None:
            return False, "no reference: the oracle %s did not run first" % self.name
        return self.compare(self.fn(path))

    def compare(self, d):
        if d == self.ref:
            return True, "equal to %s (%s)" % (self.name, self.describe(d))
        return False, "%s vs %s's %s" % (self.describe(d), self.name, self.describe(self.ref))

    @staticmethod
    def describe(d):
        if isinstance(d, tuple) and len(d) == 2 and isinstance(d[0], str):
            return "%d keys, sha256 %s" % (d[1], d[0][:12])
        return "%d keys" % len(d)


AWK_MEAS = r'''
{ v = $2 * 10; v = (v < 0) ? int(v - 0.5) : int(v + 0.5); k = $1
  if (!(k in c)) { c[k] = 0; s[k] = 0; lo[k] = v; hi[k] = v }
  c[k]++; s[k] += v; if (v < lo[k]) lo[k] = v; if (v > hi[k]) hi[k] = v }
END { for (k in c) printf "%s;%d;%.1f;%.1f;%.1f;%.1f\n", k, c[k],
                         s[k] / 10, lo[k] / 10, hi[k] / 10, s[k] / 10 / c[k] }
'''
# GNU parallel: each job's partials (sum, min and max in tenths), merged.
AWK_PART = r'''
{ v = $2 * 10; v = (v < 0) ? int(v - 0.5) : int(v + 0.5); k = $1
  if (!(k in c)) { c[k] = 0; s[k] = 0; lo[k] = v; hi[k] = v }
  c[k]++; s[k] += v; if (v < lo[k]) lo[k] = v; if (v > hi[k]) hi[k] = v }
END { for (k in c) printf "%s;%d;%d;%d;%d\n", k, c[k], s[k], lo[k], hi[k] }
'''
AWK_MERGE = r'''
{ k = $1
  if (!(k in c)) { c[k] = 0; s[k] = 0; lo[k] = $4; hi[k] = $5 }
  c[k] += $2; s[k] += $3; if ($4 + 0 < lo[k]) lo[k] = $4 + 0; if ($5 + 0 > hi[k]) hi[k] = $5 + 0 }
END { for (k in c) printf "%s;%d;%.1f;%.1f;%.1f;%.1f\n", k, c[k],
                         s[k] / 10, lo[k] / 10, hi[k] / 10, s[k] / 10 / c[k] }
'''


def parse_meas_line(line):
    """One output line of a measurements variant as (key, count, sum, min,
    max, mean). The oracles write "key;count;sum;min;max;mean"; aggregate's
    lines are read the same way when delimited (by ';', ',', a tab or
    spaces: the key first, then the five figures in the issue's order), or
    as a JSON object with a "key" member and members named count, sum, min,
    max and mean. If the shipped aggregate writes another layout, change
    this function: a mismatch is reported, never passed."""
    line = line.strip()
    if line.startswith("{"):
        o = json.loads(line)
        key = o.get("key")
        if key is None:
            key = next(v for v in o.values() if isinstance(v, str))
        return (str(key),) + tuple(float(o[f]) for f in ("count", "sum", "min", "max", "mean"))
    for sep in (";", ",", "\t", None):
        parts = line.split(sep)
        if len(parts) == 6:
            return (parts[0],) + tuple(float(x) for x in parts[1:])
    raise ValueError("cannot read %r" % line[:80])


def meas_table(path):
    t = {}
    with open(path, errors="replace") as f:
        for line in f:
            if line.strip():
                k, c, s, lo, hi, mean = parse_meas_line(line)
                # A key twice (in two partitions, say) is wrong, not merged.
                if k in t:
                    raise ValueError("key %r twice" % k)
                t[k] = (int(c), round(s * 10), round(lo * 10), round(hi * 10), mean)
    return t


class MeasOracle(Oracle):
    def compare(self, d):
        if set(d) != set(self.ref):
            return False, "%d keys vs %s's %d" % (len(d), self.name, len(self.ref))
        for k, want in self.ref.items():
            got = d[k]
            # count, sum, min and max exactly (in tenths); the mean within
            # half a tenth of the exact sum / count (so a tie may round either
            # way: awk's printf and aggregate's half away from zero differ there).
            exact = got[1] / got[0] if got[0] else 0.0
            if got[:4] != want[:4] or abs(got[4] * 10 - exact) > 0.5 + 1e-6:
                return False, "key %r: %s vs %s's %s" % (k, got, self.name, want)
        return True, "equal to %s (%d keys)" % (self.name, len(d))


def fanout_check(n, sinks):
    def check(path, st):
        got = {s["name"]: s.get("in") for s in st.get("stages", []) if s.get("kind") == "sink"}
        want = {s: n for s in sinks}
        if got == want:
            return True, "each sink got %d items" % n
        return False, "sinks got %s, want %s" % (got, want)
    return check


# ---- availability ------------------------------------------------------------
def mpx_check(mpx, yaml, sets):
    """None when `mpx check` accepts the file, else its message."""
    argv = [mpx, "check", yaml]
    for s in sets:
        argv += ["--set", s]
    env = dict(os.environ)
    env.pop("MPX_PLUGIN_PATH", None)
    p = subprocess.run(argv, capture_output=True, text=True, env=env)
    if p.returncode == 0:
        return None
    msg = (p.stderr or p.stdout).strip().splitlines()
    if not msg:
        return "mpx check: exit status %d" % p.returncode
    # The first line, without the list of allowed keys and with short paths.
    return msg[0].split(" (expected one of")[0].replace(ROOT + "/", "")


def has_fold(plugin_has, plugin):
    p = subprocess.run([plugin_has, plugin], capture_output=True, text=True)
    return p.returncode == 0 and "fold" in p.stdout.split()


# ---- the cases ---------------------------------------------------------------
def mpx_argv(mpx, yaml, sets):
    argv = [mpx, "run", os.path.join(HERE, yaml)]
    for s in sets:
        argv += ["--set", s]
    return argv + ["--progress=never", "--no-summary", "--stats-json", "{STATS}"]


def case_wc(tag, path, ctx):
    o = Oracle(wc_digest, "coreutils")
    core = Variant("wc%s.coreutils" % tag, "`tr -s ' ' '\\n' \\| LC_ALL=C sort \\| uniq -c`",
                   "shell", ["bash", "-c", "tr -s ' ' '\\n' <\"$1\" | LC_ALL=C sort | uniq -c",
                             "bash", path], o.check_ref)
    vs = [core]
    fold = has_fold(ctx["plugin_has"], os.path.join(BUILD, "plugins", "mpx_task_wordcount.so"))
    for w in (1, 2):
        sets = ["lines.path=" + path, "lines.workers=%d" % w]
        b = Variant("wc%s.base.%dw" % (tag, w), "today's merge (%s), %d worker%s"
                    % (ctx["base_commit"], w, "s" * (w > 1)), "mpx",
                    mpx_argv(ctx["base_mpx"] or "mpx", "wordcount.yaml", sets), o.check)
        b.avail = ctx["base_why"]
        lin = Variant("wc%s.linear.%dw" % (tag, w), "linear merge (this tree, unpartitioned), "
                      "%d worker%s" % (w, "s" * (w > 1)), "mpx",
                      mpx_argv(ctx["mpx"], "wordcount.yaml", sets), o.check)
        lin.avail = mpx_check(ctx["mpx"], os.path.join(HERE, "wordcount.yaml"), sets)
        if not fold:
            lin.note = "wordcount has no fold in this tree: this is still the two-partial merge"
        part = Variant("wc%s.partitioned.%dw" % (tag, w), "partitioned (`partition_by: key`), "
                       "%d worker%s" % (w, "s" * (w > 1)), "mpx",
                       mpx_argv(ctx["mpx"], "wordcount-partitioned.yaml", sets), o.check)
        part.avail = mpx_check(ctx["mpx"], os.path.join(HERE, "wordcount-partitioned.yaml"), sets)
        vs += [b, lin, part]
    return vs


def case_meas(tag, path, ctx):
    o = MeasOracle(meas_table, "awk")
    awk = Variant("meas%s.awk" % tag, "`LC_ALL=C awk` (%s)" % ctx["awk"], "shell",
                  ["bash", "-c", "LC_ALL=C %s -F';' \"$2\" \"$1\"" % ctx["awk"], "bash", path,
                   AWK_MEAS], o.check_ref)
    vs = [awk]
    par = Variant("meas%s.parallel" % tag, "GNU parallel --pipepart -j2, %s" % ctx["mawk"],
                  "shell", ["bash", "-c",
                            "LC_ALL=C parallel --pipepart -a \"$1\" --block -1 -j 2 -q %s "
                            "-F';' \"$2\" | LC_ALL=C %s -F';' \"$3\"" % (ctx["mawk"], ctx["mawk"]),
                            "bash", path, AWK_PART, AWK_MERGE], o.check)
    par.avail = None if shutil.which("parallel") else "GNU parallel is not installed"
    vs.append(par)
    sets = ["lines.path=" + path, "lines.workers=2"]
    for name, yaml, label in (("merge", "measurements.yaml",
                               "aggregate, unpartitioned (the coordinator merges), 2 workers"),
                              ("partitioned", "measurements-partitioned.yaml",
                               "aggregate, partitioned (`partition_by: key`), 2 workers")):
        v = Variant("meas%s.%s" % (tag, name), label, "mpx", mpx_argv(ctx["mpx"], yaml, sets),
                    o.check)
        v.avail = mpx_check(ctx["mpx"], os.path.join(HERE, yaml), sets)
        vs.append(v)
    return vs


def case_fanout(n, ctx):
    sets = ["range.stop=%d" % n]
    vs = []
    for k, yaml, sinks in ((1, "fanout-1.yaml", ["a"]), (2, "fanout-2.yaml", ["a", "b"])):
        v = Variant("fanout.%dsink%s" % (k, "s" * (k > 1)), "range → %d print sink%s (/dev/null)"
                    % (k, "s" * (k > 1)), "mpx", mpx_argv(ctx["mpx"], yaml, sets),
                    fanout_check(n, sinks))
        v.avail = mpx_check(ctx["mpx"], os.path.join(HERE, yaml), sets)
        vs.append(v)
    return vs


# ---- the report --------------------------------------------------------------
def good(v):
    return [r for r in v.runs if "error" not in r]


def fmt(x):
    if x is None:
        return "–"
    a = abs(x)
    if a >= 100:
        return "%.0f" % x
    return "%.1f" % x if a >= 10 else "%.2f" % x if a >= 1 else "%.3g" % x


def spread(xs):
    if not xs:
        return "–"
    s = fmt(statistics.median(xs))
    return s if len(xs) == 1 else "%s [%s–%s]" % (s, fmt(min(xs)), fmt(max(xs)))


def md(text):
    """Text for a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def paired(a, b, fn):
    """fn(run of a, run of b) for each round both completed."""
    rb = {r["round"]: r for r in good(b)}
    return [fn(r, rb[r["round"]]) for r in good(a) if r["round"] in rb]


def speedup(slow, fast):
    """How many times faster `fast` ran than `slow`, round by round."""
    return paired(slow, fast, lambda s, f: s["wall_s"] / f["wall_s"])


def why_missing(*vs):
    for v in vs:
        if v.avail:
            return "%s: not available (%s)" % (v.name, v.avail)
        if v.stopped:
            return "%s: %s" % (v.name, v.stopped)
        if not good(v):
            return "%s: no run" % v.name
    return ""


def aim_row(what, xs, op, target, unit, vs):
    if xs:
        m = statistics.median(xs)
        met = m >= target if op == ">=" else m <= target
        return "| %s | %s%s | %s %s%s | %s |" % (what, spread(xs), unit, "≥" if op == ">=" else "≤",
                                                fmt(target), unit, "✓" if met else "✗")
    return "| %s | – (%s) | %s %s%s | |" % (what, md(why_missing(*vs)),
                                           "≥" if op == ">=" else "≤", fmt(target), unit)


def report(path, cases, header, quick, lines_path):
    by = {v.name: v for vs in cases.values() for v in vs}
    L = ["# Graph and partition benchmarks (issue 17)", "",
         "Written by `tools/bench/graph/run.py`%s (do not edit by hand; run it again). "
         "docs/bench/graph.md says what each case measures and how." % (" --quick" if quick else ""),
         "", "| | |", "|---|---|"]
    L += ["| %s | %s |" % kv for kv in header]
    L += ["", "## Ratios against the aims", "",
          "Each ratio is taken round by round between runs of the same round (the variants of a "
          "case ran interleaved, A B C A B C), then the median over the rounds [min–max]. "
          "A speed-up is the slower variant's wall time ÷ the faster's: above 1 means faster.",
          "", "| ratio | measured | aim | |", "|---|---|---|---|"]
    for tag in [t for t, _, _ in (QUICK if quick else FULL)["wc"]]:
        p2, p1, co = (by.get("wc%s.%s" % (tag, s)) for s in
                      ("partitioned.2w", "partitioned.1w", "coreutils"))
        if p2 is None:
            continue
        L.append(aim_row("wordcount %s keys: partitioned 2 workers ÷ coreutils (speed-up)" % tag,
                         speedup(co, p2), ">=", 3, "×", [p2, co]))
        L.append(aim_row("wordcount %s keys: partitioned 2 workers ÷ 1 worker (speed-up)" % tag,
                         speedup(p1, p2), ">=", 1.8, "×", [p2, p1]))
        for w in (1, 2):
            lin, base = by["wc%s.linear.%dw" % (tag, w)], by["wc%s.base.%dw" % (tag, w)]
            xs = speedup(base, lin)
            L.append("| wordcount %s keys: linear merge ÷ today's merge, %d worker%s (speed-up) "
                     "| %s | (for comparison) | |" % (tag, w, "s" * (w > 1), spread(xs) + "×"
                                                     if xs else "– (%s)" % md(why_missing(lin, base))))
    tags = [t for t, _, _ in (QUICK if quick else FULL)["wc"]]
    for s in ("partitioned.2w", "partitioned.1w", "linear.2w", "base.2w"):
        a, b = by.get("wc%s.%s" % (tags[1], s)), by.get("wc%s.%s" % (tags[0], s))
        if a is None or b is None:
            continue
        xs = [x for x in (paired(a, b, lambda x, y: x["rss_kb"] / y["rss_kb"]
                                 if x.get("rss_kb") and y.get("rss_kb") else None)) if x]
        what = "wordcount: coordinator peak RSS, %s ÷ %s keys, %s" % (tags[1], tags[0], s)
        if s.startswith("partitioned"):
            L.append(aim_row(what + " (independent of the keys: ≈ 1)", xs, "<=", 1.25, "×", [a, b]))
        else:
            L.append("| %s | %s | (for comparison) | |" % (what, spread(xs) + "×" if xs else
                                                          "– (%s)" % md(why_missing(a, b))))
    for tag, target in zip([t for t, _, _ in (QUICK if quick else FULL)["meas"]], (1, 3)):
        pt, mg = by.get("meas%s.partitioned" % tag), by.get("meas%s.merge" % tag)
        if pt is None:
            continue
        L.append(aim_row("measurements %s keys: partitioned ÷ coordinator merge (speed-up)" % tag,
                         speedup(mg, pt), ">=", target, "×", [pt, mg]))
    f1, f2 = by.get("fanout.1sink"), by.get("fanout.2sinks")
    if f1 and f2:
        # Both move the same items: the ratio of rates is the inverse ratio of times.
        L.append(aim_row("fan-out: items/s to two sinks ÷ items/s to one", speedup(f1, f2),
                         ">=", 0.8, "×", [f2, f1]))
    L += ["", "The aim for the coordinator's RSS (\"independent of the number of keys\") is read "
          "here as a ratio of at most 1.25 between the two sizes; the other aims are issue 17's.",
          ""]
    for cname, vs in cases.items():
        ref = vs[0]
        L += ["## " + cname, "",
              "| variant | wall s | speed-up vs %s | peak RSS MB | output |" % ref.name.split(".")[-1],
              "|---|---|---|---|---|"]
        for v in vs:
            if v.avail:
                L.append("| %s | not available: %s | | | |" % (v.label, md(v.avail)))
                continue
            g = good(v)
            walls = [r["wall_s"] for r in g]
            wall = spread(walls)
            if not g and v.stopped and v.stopped.startswith("timed out"):
                wall = "> %s (stopped)" % fmt(v.runs[-1]["wall_s"])
            rss = [r["rss_kb"] / 1024 for r in g if r.get("rss_kb")]
            sp = speedup(ref, v) if v is not ref else []
            outs = sorted({r.get("output_note", "") for r in g})
            status = "; ".join(outs) if outs else ""
            if v.stopped:
                status = (status + "; " if status else "") + "**" + v.stopped + "**"
            src = sorted({r.get("rss_from") for r in g if r.get("rss_from")})
            label = v.label + (" (%s)" % v.note if v.note else "")
            L.append("| %s | %s | %s | %s%s | %s |" % (
                label, wall, spread(sp) + "×" if sp else "–", spread(rss),
                " (%s)" % ", ".join(src) if src else "", md(status)))
        L.append("")
    L += ["Peak RSS: for `mpx run`, the coordinator's alone (`coordinator_peak_rss_kb` from "
          "`--stats-json` when the engine writes it, else the process's VmHWM read at its exit); "
          "for a shell pipeline, the largest of its processes (wait4). The `name value unit` "
          "lines are in `%s`." % os.path.relpath(lines_path, ROOT), ""]
    with open(path, "w") as f:
        f.write("\n".join(L))


def write_lines(path, cases, header):
    with open(path, "w") as f:
        for k, v in header:
            f.write("#@ %s: %s\n" % (k, v))
        for vs in cases.values():
            for v in vs:
                if v.avail:
                    f.write("# NOT AVAILABLE %s: %s\n" % (v.name, v.avail))
                for r in v.runs:
                    if "error" in r:
                        f.write("# FAILED %s (round %d): %s\n" % (v.name, r["round"], r["error"]))
                        continue
                    f.write("graph.%s.wall %.4f s\n" % (v.name, r["wall_s"]))
                    if r.get("rss_kb"):
                        f.write("graph.%s.peak_rss %d B\n" % (v.name, r["rss_kb"] * 1024))


# ---- main --------------------------------------------------------------------
def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny inputs: a smoke test")
    ap.add_argument("--rounds", type=int, default=2, help="rounds of each case (default 2)")
    ap.add_argument("--timeout", type=float, help="seconds a run may take (default 900; "
                    "120 with --quick)")
    ap.add_argument("--out", help="the report (default docs/bench/graph-results.md; "
                    "build-release/bench-graph-quick.md with --quick)")
    ap.add_argument("--cases", default="wc,meas,fanout", help="of wc, meas, fanout")
    ap.add_argument("--base", default=DEFAULT_BASE, help="the pre-change commit (default %s)"
                    % DEFAULT_BASE)
    ap.add_argument("--no-base", action="store_true", help="do not build or run the base")
    ap.add_argument("--with-base", action="store_true", help="with --quick: build and run it")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error("--rounds must be at least 1")
    cases_wanted = [c for c in a.cases.split(",") if c]
    for c in cases_wanted:
        if c not in ("wc", "meas", "fanout"):
            ap.error("unknown case %r (wc, meas, fanout)" % c)
    sizes = QUICK if a.quick else FULL
    timeout = a.timeout or (120 if a.quick else 900)
    work = os.path.join(BUILD, "bench-graph-quick" if a.quick else "bench-graph")
    out = a.out or (os.path.join(BUILD, "bench-graph-quick.md") if a.quick
                    else os.path.join(ROOT, "docs", "bench", "graph-results.md"))
    start = time.time()

    sh(["sh", os.path.join(ROOT, "tools", "install-deps.sh"), "parallel"])
    log("building this tree (Release) in %s" % BUILD)
    sh(["cmake", "-S", ROOT, "-B", BUILD, "-DCMAKE_BUILD_TYPE=Release",
        "-DMPX_BUILD_TESTS=OFF"], stdout=subprocess.DEVNULL)
    sh(["cmake", "--build", BUILD, "-j", str(os.cpu_count() or 1)], stdout=subprocess.DEVNULL)
    mpx = os.path.join(BUILD, "tools", "mpx")
    gen, hwm, plugin_has = build_helpers(os.path.join(work, "bin"))
    base_mpx, base_why = None, None
    if a.no_base:
        base_why = "--no-base"
    elif a.quick and not a.with_base:
        base_why = "not built in --quick (add --with-base)"
    else:
        base_mpx, base_why = build_base(a.base, BUILD)
    awk_path = os.path.realpath(shutil.which("awk") or "awk")
    ctx = {"mpx": mpx, "base_mpx": base_mpx, "base_why": base_why, "base_commit": a.base,
           "plugin_has": plugin_has, "awk": "awk",
           "mawk": "mawk" if shutil.which("mawk") else "awk"}
    datadir = os.path.join(work, "data")
    outdir = os.path.join(work, "out")
    os.makedirs(datadir, exist_ok=True)
    os.makedirs(outdir, exist_ok=True)

    def git(*args):
        try:
            return subprocess.run(["git", "-C", ROOT] + list(args), check=True,
                                  capture_output=True, text=True).stdout.strip()
        except subprocess.CalledProcessError:
            return "?"
    dirty = subprocess.run(["git", "-C", ROOT, "diff", "--quiet", "HEAD"]).returncode != 0
    mem = next((int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")), 0)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                if l.startswith("model name")), "?")
    header = [
        ("date", time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())),
        ("machine", "%d CPUs, %s, %.1f GiB" % (os.cpu_count() or 0, cpu, mem / 1048576)),
        ("kernel", " ".join(os.uname()[2:3])),
        ("this tree", git("rev-parse", "--short", "HEAD") + (" + uncommitted changes" if dirty
                                                             else "")),
        ("today's merge (base)", base_mpx and "%s, built in %s" % (
            a.base, os.path.relpath(os.path.dirname(os.path.dirname(base_mpx)), ROOT))
         or "not run: " + base_why),
        ("awk", "awk is %s; parallel jobs run %s" % (awk_path, ctx["mawk"])),
        ("rounds", "%d, interleaved; time limit %d s a run" % (a.rounds, timeout)),
        ("load average at the start", " ".join(open("/proc/loadavg").read().split()[:3])),
    ]
    if a.quick:
        header.append(("mode", "--quick (tiny inputs: the figures mean nothing)"))

    cases = {}
    for c in cases_wanted:
        if c == "wc":
            for tag, size, n in sizes["wc"]:
                p = gen_input(gen, datadir, "words", size, n)
                name = "Wordcount, %s MB, %s distinct words (`%s`)" % (
                    fmt(os.path.getsize(p) / 1e6), format(n, ","), os.path.relpath(p, ROOT))
                cases[name] = case_wc(tag, p, ctx)
        elif c == "meas":
            for tag, size, n in sizes["meas"]:
                p = gen_input(gen, datadir, "measurements", size, n)
                name = "Measurements, %s MB, %s cities (`%s`)" % (
                    fmt(os.path.getsize(p) / 1e6), format(n, ","), os.path.relpath(p, ROOT))
                cases[name] = case_meas(tag, p, ctx)
        else:
            cases["Fan-out, %s items (8-byte integers)" % format(sizes["fanout"], ",")] = \
                case_fanout(sizes["fanout"], ctx)
    for name, vs in cases.items():
        log("case: " + name)
        for v in vs:
            if v.avail:
                log("  not available: %s: %s" % (v.name, v.avail))
        inputs = sorted({x for v in vs for x in v.argv if x.startswith(os.path.join(work, "data"))}
                        | {x.split("=", 1)[1] for v in vs for x in v.argv
                           if x.startswith("lines.path=")})
        run_case(vs, outdir, hwm, a.rounds, timeout, inputs)
    header.append(("load average at the end", " ".join(open("/proc/loadavg").read().split()[:3])))
    header.append(("duration", "%d s (builds and inputs included)" % (time.time() - start)))

    lines = os.path.join(work, "lines.txt")
    write_lines(lines, cases, header)
    with open(os.path.join(work, "runs.json"), "w") as f:
        json.dump({n: [{"variant": v.name, "available": v.avail, "runs": v.runs} for v in vs]
                   for n, vs in cases.items()}, f, indent=1)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    report(out, cases, header, a.quick, lines)
    log("report: %s (lines: %s)" % (out, lines))
    bad = [r for vs in cases.values() for v in vs for r in v.runs
           if "error" in r and not r["error"].startswith("timed out")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
