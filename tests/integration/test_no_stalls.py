"""Bytes and EOFs that arrive together with a reset, after a bulk flow
turns into small writes, or around urgent data must still be delivered:
the relay must never leave data or an EOF unread with no event to come.
(Each case stalled an edge-triggered version of the relay.)"""

import os
import socket
import struct
import time

from esockd_helpers import connect, recv_exact, wait_until


def _read_until_eof(sock, timeout):
    sock.settimeout(timeout)
    data = bytearray()
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return bytes(data), "eof"
            data += chunk
    except ConnectionResetError:
        return bytes(data), "reset"
    except socket.timeout:
        return bytes(data), "timeout"


def test_reply_then_reset_from_backend_reaches_the_client_and_closes(esockd):
    """The backend answers and closes with unread input (a reset): the
    client gets the whole answer and then the end of the connection."""
    def answer_and_reset(conn, record):
        time.sleep(0.1)                  # all input has arrived by now
        conn.recv(10)                    # leave the rest unread
        conn.sendall(b"A" * 1000)        # and close at once: the answer and
                                         # the reset reach esockd together

    backend = esockd.py_backend(answer_and_reset)
    d = esockd.start(workers=1, listeners=[{"name": "rst", "backend": backend.path,
                                            "idle_timeout": 0}])
    for _ in range(8):
        c = connect(d.port)
        c.sendall(b"x" * 5000)
        data, end = _read_until_eof(c, 5)
        c.close()
        assert data == b"A" * 1000 and end in ("eof", "reset"), (len(data), end)
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0 and st["accepted"] == st["closed"] == 8, st


def test_client_that_sends_then_resets_releases_its_backend(esockd):
    """A client sends and resets; the backend, waiting for more, must see
    the end promptly and the slot must be released (idle_timeout off)."""
    def wait_for_more(conn, record):
        conn.settimeout(5)
        while True:
            try:
                chunk = conn.recv(65536)
            except (ConnectionResetError, socket.timeout) as e:
                record["end"] = type(e).__name__
                return
            if not chunk:
                record["end"] = "eof"
                return
            record["received"] += chunk

    backend = esockd.py_backend(wait_for_more)
    d = esockd.start(workers=1, listeners=[{"name": "crst", "backend": backend.path,
                                            "idle_timeout": 0}])
    for _ in range(20):
        c = connect(d.port)
        time.sleep(0.05)                 # settled: esockd waits for data
        c.sendall(os.urandom(3000))      # data and reset arrive together
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        c.close()
    wait_until(lambda: len(backend.sessions) == 20 and
               all(r["done"].is_set() for r in backend.sessions), 10,
               message="every backend session ended")
    assert all(r.get("end") in ("eof", "ConnectionResetError") for r in backend.sessions), \
        [r.get("end") for r in backend.sessions]
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0, st


def test_bulk_flow_that_turns_into_small_writes_is_delivered_in_full(esockd):
    """256 KiB at once (bulk: spliced) while the backend stalls, then 300
    writes of 100 bytes that queue up meanwhile: when the backend reads
    again, one splice meets many small segments, and every byte must
    still arrive."""
    total = 256 * 1024 + 300 * 100

    def stall_then_collect(conn, record):
        time.sleep(1.0)
        conn.settimeout(5)
        while len(record["received"]) < total:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            record["received"] += chunk

    backend = esockd.py_backend(stall_then_collect)
    d = esockd.start(workers=1, listeners=[{"name": "mix", "backend": backend.path,
                                            "idle_timeout": 0}])
    c = connect(d.port)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    bulk = os.urandom(256 * 1024)
    c.sendall(bulk)
    small = [os.urandom(100) for _ in range(300)]
    for m in small:
        c.sendall(m)
        time.sleep(0.001)
    wait_until(lambda: backend.sessions and backend.sessions[0]["done"].is_set(), 10,
               message="backend received everything")
    got = bytes(backend.sessions[0]["received"])
    assert len(got) == total and got == bulk + b"".join(small), len(got)
    c.close()


def test_urgent_data_does_not_strand_the_bytes_after_it(esockd):
    """A client sends data, one urgent byte, then more data: everything
    after the urgent byte still arrives at the backend."""
    def collect(conn, record):
        conn.settimeout(5)
        while len(record["received"]) < 200:
            chunk = conn.recv(65536)
            if not chunk:
                break
            record["received"] += chunk

    backend = esockd.py_backend(collect)
    d = esockd.start(workers=1, listeners=[{"name": "oob", "backend": backend.path}])
    for _ in range(10):
        c = connect(d.port)
        time.sleep(0.05)                 # settled: esockd waits for data
        c.sendall(b"a" * 100)
        c.send(b"!", socket.MSG_OOB)
        c.sendall(b"b" * 100)
        wait_until(lambda: backend.sessions and backend.sessions[-1]["done"].is_set(), 8,
                   message="backend got 200 bytes")
        assert bytes(backend.sessions[-1]["received"]) == b"a" * 100 + b"b" * 100
        c.close()
