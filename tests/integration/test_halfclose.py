"""Half-close (shutdown(SHUT_WR)) is passed through in both directions."""

import hashlib
import os
import socket

from esockd_helpers import connect, exchange, record_until_eof, recv_until_eof, wait_until


def test_client_half_close_still_receives_full_echo_then_eof(esockd):
    """Client sends 1 MiB then SHUT_WR: all 1 MiB comes back, then EOF."""
    d = esockd.start(workers=1)
    data = os.urandom(1 << 20)
    with connect(d.port) as s:
        got, eof = exchange(s, data, shut_wr=True, until_eof=True, timeout=20)
    assert len(got) == len(data), "got %d of %d bytes before EOF" % (len(got), len(data))
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest(), "echo corrupted"
    assert eof
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0, st
    assert st["bytes_in"] == st["bytes_out"] == len(data), st


def test_backend_half_close_reaches_client_and_client_can_still_send(esockd):
    """Backend sends b"hello" then SHUT_WR: the client reads b"hello" + EOF,
    then sends more, which the backend receives completely."""

    def hello_then_read(conn, record):
        conn.sendall(b"hello")
        conn.shutdown(socket.SHUT_WR)
        record_until_eof(conn, record)

    backend = esockd.py_backend(hello_then_read, name="halfclose")
    d = esockd.start(workers=1, listeners=[{"name": "hc", "backend": backend.path}])
    with connect(d.port) as s:
        assert recv_until_eof(s, timeout=5) == b"hello"
        s.sendall(b"after-eof-data")
        wait_until(lambda: backend.sessions and bytes(backend.sessions[0]["received"]) == b"after-eof-data",
                   5, message="the backend to receive the data sent after EOF")
        assert not backend.sessions[0]["eof"], "backend saw EOF before the client closed"
    # client closed: the backend sees EOF, and the relay ends
    session = backend.sessions[0]
    assert session["done"].wait(5), "backend never saw EOF after the client closed"
    assert session["eof"] and bytes(session["received"]) == b"after-eof-data", session
    assert "error" not in session, session
    assert len(backend.sessions) == 1
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0 and st["closed"] == 1, st
    assert st["bytes_out"] == 5 and st["bytes_in"] == len(b"after-eof-data"), st
