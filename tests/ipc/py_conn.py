#!/usr/bin/env python3
"""Python's side of the conn suite's framing cross-check (stdlib only).

    py_conn.py interop FD

FD is one end of a socketpair whose other end an mpx connection holds.
The steps, in order (test_conn.c's test_python_interop does the mirror):

 1. Python's Connection.send_bytes: messages of 0 B, 1 B, 64 KiB, 16 MiB,
    byte j of message i being (j * 7 + i) & 0xff.
 2. Connection.recv_bytes: the same sizes from mpx, seeds 10 + i.
 3. recv_bytes of a frame mpx wrote by hand in the 8-byte length form
    (ff ff ff ff, then the length as 8 bytes): b"long-form".
 4. os.read of the raw bytes of mpx's send_bytes(b"abc"): they must be
    exactly 00 00 00 03 61 62 63.
 5. send_bytes(b"xyz"), which mpx reads raw and compares.
 6. recv_bytes: b"bye", then EOFError once mpx has closed its end.

Exits 0 when everything matched, else 1 with a message on stderr.
"""
import os
import sys
from multiprocessing.connection import Connection

SIZES = [0, 1, 64 * 1024, 16 * 1024 * 1024]


def pattern(n, seed):
    period = bytes(((j * 7 + seed) & 0xFF) for j in range(256))
    return (period * (n // 256 + 1))[:n]


def read_exact(fd, n):
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            raise EOFError("end of file after %d of %d raw bytes" % (len(out), n))
        out += chunk
    return out


def fail(msg):
    sys.stderr.write("py_conn: %s\n" % msg)
    sys.exit(1)


def interop(fd):
    conn = Connection(fd)
    for i, n in enumerate(SIZES):
        conn.send_bytes(pattern(n, i))
    for i, n in enumerate(SIZES):
        got = conn.recv_bytes()
        if got != pattern(n, 10 + i):
            fail("message %d: got %d bytes, want %d (pattern mismatch)"
                 % (i, len(got), n))
    got = conn.recv_bytes()
    if got != b"long-form":
        fail("8-byte length form: got %r" % got[:64])
    raw = read_exact(fd, 7)
    if raw != b"\x00\x00\x00\x03abc":
        fail("raw frame of send_bytes(b'abc'): %r" % raw)
    conn.send_bytes(b"xyz")
    got = conn.recv_bytes()
    if got != b"bye":
        fail("last message: %r" % got)
    try:
        conn.recv_bytes()
        fail("no EOFError after mpx closed")
    except EOFError:
        pass
    sys.exit(0)


def main():
    if len(sys.argv) != 3 or sys.argv[1] != "interop":
        fail("usage: py_conn.py interop FD")
    interop(int(sys.argv[2]))


if __name__ == "__main__":
    main()
