"""pickle in Python: the pairs of the pickle lines of
tools/bench/bench_codec.c, the same record (a dict of 5 fields: id, name,
value, ok and 40 bytes of tag) and the same 1 MiB bytes object, dumps +
loads with the default protocol. Prints:

  python.codec.pickle.record.bytes      size of the pickled record
  python.codec.pickle.record.roundtrip  M/s of records pickled+unpickled
  python.codec.pickle.1MiB.roundtrip    MB/s of 1 MiB bytes pickled+unpickled

Each is the median of --runs repetitions.

  python3 codec_bench.py [--runs N] [--quick]
"""
import pickle

from benchlib import args, emit, now, repeat

RECORD = {
    "id": 1234567,
    "name": "sensor-17/eu-west",
    "value": 3.14159,
    "ok": True,
    "tag": bytes((i * 7) & 0xFF for i in range(40)),
}
BIG = b"\x5a" * (1 << 20)


def roundtrip(obj, n):
    dumps, loads = pickle.dumps, pickle.loads
    t0 = now()
    for _ in range(n):
        back = loads(dumps(obj))
    dt = now() - t0
    if back != obj:
        raise SystemExit("codec_bench: round trip changed the object")
    return n / dt


def main():
    a = args(__doc__)
    s = 0.1 if a.quick else 1.0
    emit("codec.pickle.record.bytes", len(pickle.dumps(RECORD)), "B", "%d")
    emit("codec.pickle.record.roundtrip", repeat(a.runs, roundtrip, RECORD, int(3e5 * s)) / 1e6,
         "M/s")
    emit("codec.pickle.1MiB.roundtrip",
         repeat(a.runs, roundtrip, BIG, max(10, int(300 * s))) * len(BIG) / 1e6, "MB/s", "%.0f")


if __name__ == "__main__":
    main()
