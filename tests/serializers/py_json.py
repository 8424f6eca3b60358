#!/usr/bin/env python3
"""Cross-checks the mpx json codec against Python's json module.

  py_json.py gen DIR    writes DIR/<name>.json = json.dumps(value) for each
                        value in GEN; test_json.c decodes them and compares
                        with the same values built in C.
  py_json.py check DIR  loads each DIR/<name>.json that test_json.c wrote
                        and compares it with CHECK[name] (the tagged forms
                        as plain dicts); exit status 0 when all match.

The names must match the tables in test_json.c. Standard library only.
"""
import base64
import json
import math
import os
import sys

NAN, INF = float("nan"), float("inf")
TEXT = "h\u00e9llo \u20ac \U0001F600"

# name -> (value, json.dumps keyword arguments)
GEN = {
    "nested": ({"a": [1, 2, {"b": None}], "c": True, "d": False, "e": "x"}, {}),
    "unicode_ascii": (TEXT, {}),  # \u00e9 and a surrogate pair
    "unicode_raw": (TEXT, {"ensure_ascii": False}),
    "escapes": ("q\" b\\ s/ \b\f\n\r\t \x00 \x1f \x7f", {}),
    "big_pos": (2**70, {}),
    "big_neg": (-(2**70), {}),
    "int64": ([2**63 - 1, -(2**63), 2**63, -(2**63) - 1], {}),
    "floats": ([0.1, 1e300, -2.5, 5e-324, 1.0, -0.0, 1e-07, 123456789.125], {}),
    "empty": ([[], {}, ""], {}),
    "nan_inf": ([NAN, INF, -INF], {}),  # Python writes NaN, Infinity
    "indented": ({"k": [1, {"x": None}], "s": "v"}, {"indent": 2}),
    "keys": ({"\u043a\u043b\u044e\u0447": "\u0437\u043d", "": 0, "$x": 1}, {}),
    "tagged": ([{"$bytes": "AP8="}, {"$tuple": [1, [2]]}, {"$bigint": "-5"},
                {"$map": [[1, 2]]}, {"$float": "-inf"}], {}),
    "googol": (10**100, {}),
}

OPAQUE = {"kind": "reduce", "module": "collections", "name": "OrderedDict",
          "args": {"$tuple": [[]]}, "state": {"a": 1}}


def b64(b):
    return base64.b64encode(b).decode("ascii")


# name -> what json.loads must give for the file the C suite wrote.
CHECK = {
    "scalars": [None, True, False, 0, -1, 2**63 - 1, -(2**63), 1.5, 0.1,
                1e300, -0.0, 5e-324, "text"],
    "unicode": "h\u00e9llo \u20ac \U0001F600 \x00 \x1f \"\\ /",
    "nested": {"a": [1, {"b": [[]]}], "": {}, "z": []},
    "bytes": [{"$bytes": b64(b"\x00\xff\x10")}, {"$bytes": ""},
              {"$bytes": b64(bytes(range(256)))}],
    "tuple": {"$tuple": [1, "a", {"$tuple": []}]},
    "bigint": [{"$bigint": str(2**70)}, {"$bigint": str(-(2**70))},
               {"$bigint": str(2**64 - 1)}, {"$bigint": str(-(2**63) - 1)}],
    "floats_special": [{"$float": "nan"}, {"$float": "inf"},
                       {"$float": "-inf"}],
    "map_keys": {"$map": [[1, "one"], [None, 2], [{"$tuple": [1, 2]}, 3],
                          [{"$bytes": "aw=="}, 4]]},
    "map_tag_key": {"$map": [["$bytes", 1]]},
    "dollar_keys": [{"$other": 1}, {"$bytes": 1, "b": 2}],
    "bad_utf8": {"$str": b64(b"\xff\xfeok")},
    "bad_utf8_key": {"$map": [[{"$str": b64(b"k\xff")}, 1]]},
    "opaque": {"$opaque": OPAQUE},
    "opaque_global": {"$opaque": {"kind": "global", "module": "builtins",
                                  "name": "int"}},
    "nul_key": {"a\x00b": 1},
}


def same(a, b):
    """Equal, with types kept apart (1, 1.0, True), NaN equal to NaN, the
    sign of zero, and dict order."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return (list(a.keys()) == list(b.keys()) and
                all(same(a[k], b[k]) for k in a))
    return a == b


def gen(d):
    for name, (value, kw) in GEN.items():
        with open(os.path.join(d, name + ".json"), "w", encoding="utf-8") as f:
            f.write(json.dumps(value, **kw))


def check(d):
    bad = 0
    for name, want in CHECK.items():
        path = os.path.join(d, name + ".json")
        try:
            with open(path, "rb") as f:
                raw = f.read()
            got = json.loads(raw.decode("utf-8"))
        except (OSError, ValueError) as e:
            print(f"{name}: {e}")
            bad += 1
            continue
        if not same(got, want):
            print(f"{name}: got {raw!r}\n  as {got!r}\n  want {want!r}")
            bad += 1
    return bad


def main(argv):
    if len(argv) != 3 or argv[1] not in ("gen", "check"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[1] == "gen":
        gen(argv[2])
        return 0
    return 1 if check(argv[2]) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
