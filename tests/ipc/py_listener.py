#!/usr/bin/env python3
"""Python's side of the listener suite (stdlib only): CPython's own
multiprocessing.connection Listener and Client against mpx's.

    py_listener.py client ADDR KEY
    py_listener.py server ADDR KEY

ADDR is in mpx syntax (tcp://HOST:PORT, unix:PATH, unix:@NAME); KEY is
the authkey in hex, or "-" for authkey=None.

client: Client(ADDR, authkey=KEY), then send_bytes(b"client-hello")
        and recv_bytes() must be b"server-hello".
server: Listener(ADDR, authkey=KEY); prints the bound address (mpx
        syntax) on a line of stdout; accept(), then recv_bytes() must be
        b"client-hello", send_bytes(b"server-hello"), and the next
        recv_bytes() must raise EOFError (the client closed).

Exit codes: 0 all as expected, 3 AuthenticationError (its text on
stderr), 1 anything else (a message on stderr). A 20 s alarm ends a
helper that waits for nothing.
"""
import signal
import sys
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Listener


def to_python(addr):
    if addr.startswith("tcp://"):
        host, _, port = addr[6:].rpartition(":")
        return (host.strip("[]"), int(port))
    if addr.startswith("unix:@"):
        return "\0" + addr[6:]
    if addr.startswith("unix:"):
        return addr[5:]
    raise ValueError("bad address %r" % addr)


def to_mpx(addr):
    if isinstance(addr, tuple):
        return "tcp://%s:%d" % (addr[0], addr[1])
    if isinstance(addr, bytes):
        addr = addr.decode()
    if addr.startswith("\0"):
        return "unix:@" + addr[1:]
    return "unix:" + addr


def main():
    signal.alarm(20)
    mode, addr, key = sys.argv[1], sys.argv[2], sys.argv[3]
    key = None if key == "-" else bytes.fromhex(key)
    try:
        if mode == "client":
            conn = Client(to_python(addr), authkey=key)
            conn.send_bytes(b"client-hello")
            got = conn.recv_bytes()
            if got != b"server-hello":
                sys.stderr.write("py_listener: client got %r\n" % got)
                return 1
            conn.close()
            return 0
        if mode == "server":
            lst = Listener(to_python(addr), authkey=key)
            sys.stdout.write(to_mpx(lst.address) + "\n")
            sys.stdout.flush()
            conn = lst.accept()
            got = conn.recv_bytes()
            if got != b"client-hello":
                sys.stderr.write("py_listener: server got %r\n" % got)
                return 1
            conn.send_bytes(b"server-hello")
            try:
                conn.recv_bytes()
            except EOFError:
                return 0
            sys.stderr.write("py_listener: no EOF after the exchange\n")
            return 1
    except AuthenticationError as e:
        sys.stderr.write("py_listener: AuthenticationError: %s\n" % e)
        return 3
    sys.stderr.write("py_listener: unknown mode %r\n" % mode)
    return 1


if __name__ == "__main__":
    sys.exit(main())
