"""Why each connection ended: every close reason provoked for real, one
daemon per reason, and the counters read back exactly (SIGUSR1): that
reason counts one, every other reason zero, the failure counter a reason
implies (tls_failures, backend_failures) moves with it and no other, and
the reasons add up to `closed`.

closed_local_error is not provoked: it needs an allocation or an
event_add to fail in a worker (memory exhaustion), which a test cannot
cause on a shared machine without harming the other processes on it.
"""

import os
import select
import signal
import socket
import struct
import time

from esockd_helpers import (connect, exchange, pid_alive, read_outcome, record_until_eof,
                            recv_exact, wait_until)
from test_tls import start_tls, tls_connect

REASONS = ("closed_normal", "closed_idle_timeout", "closed_handshake_timeout",
           "closed_handshake_failed", "closed_handshake_evicted",
           "closed_backend_unavailable",
           "closed_client_reset", "closed_backend_reset", "closed_shutdown",
           "closed_local_error", "closed_proxy_failed", "closed_refused",
           "closed_by_handler", "closed_handler_lost", "closed_handoff_released",
           "closed_worker_lost")
FAILURES = ("tls_failures", "backend_failures")


def closed_once(d, **expected):
    """Wait until one connection has ended, then check every reason and
    failure counter against expected (the rest must be 0)."""
    st = d.wait_stats(lambda st: st["closed"] == 1 and st["connections"] == 0
                      and sum(st[r] for r in REASONS) == 1
                      and all(st[k] == v for k, v in expected.items()), timeout=10)
    got = {k: st[k] for k in REASONS + FAILURES}
    want = {k: expected.get(k, 0) for k in REASONS + FAILURES}
    assert got == want, st
    assert st["accepted"] == st["closed"] == 1, st
    assert sum(st[r] for r in REASONS) == st["closed"], st
    return st


def cut_off(sock, data=b""):
    """Send data, if any, and see the daemon end the connection without a
    byte for us; then close our end."""
    try:
        if data:
            sock.sendall(data)
        assert read_outcome(sock, b"never", timeout=5) in ("eof", "reset")
    finally:
        sock.close()


def held(port):
    """A client whose echo came back: its connection is relaying."""
    s = connect(port)
    s.sendall(b"held\n")
    assert recv_exact(s, 5) == b"held\n"
    return s


def test_both_sides_closing_is_normal(esockd):
    d = esockd.start(workers=1)
    s = connect(d.port)
    try:
        assert exchange(s, b"hello\n", shut_wr=True, until_eof=True) == (b"hello\n", True)
    finally:
        s.close()
    closed_once(d, closed_normal=1)


def test_a_connection_idle_past_idle_timeout(esockd):
    d = esockd.start(workers=1, listeners=[{"name": "idle", "idle_timeout": 1}])
    cut_off(held(d.port))
    closed_once(d, closed_idle_timeout=1)


def test_a_silent_tls_client_is_a_handshake_timeout(esockd, tmp_path):
    d, _, _ = start_tls(esockd, tmp_path, tls_handshake_timeout=1)
    cut_off(connect(d.port))
    closed_once(d, closed_handshake_timeout=1, tls_failures=1)


def test_plain_http_on_a_tls_port_is_a_failed_handshake(esockd, tmp_path):
    d, _, _ = start_tls(esockd, tmp_path)
    cut_off(connect(d.port), b"GET / HTTP/1.0\r\n\r\n")
    closed_once(d, closed_handshake_failed=1, tls_failures=1)


def test_a_silent_tls_client_pushed_out_for_a_new_one_is_handshake_evicted(esockd, tmp_path):
    """At max_connections, a client a second into its handshake makes
    room for a new one: its end is handshake_evicted, no TLS failure."""
    d, cert, _ = start_tls(esockd, tmp_path, max_connections=1)
    quiet = connect(d.port)
    try:
        d.wait_stats(lambda st: st["accepted"] == 1)
        time.sleep(1.3)
        s = tls_connect(d.port, cert)
        try:
            s.sendall(b"room\n")
            assert recv_exact(s, 5) == b"room\n"
            cut_off(quiet)
            st = d.wait_stats(lambda st: st["closed"] == 1)
        finally:
            s.close()
    finally:
        quiet.close()
    got = {k: st[k] for k in REASONS + FAILURES}
    assert got == dict({k: 0 for k in REASONS + FAILURES}, closed_handshake_evicted=1), st
    assert (st["accepted"], st["connections"]) == (2, 1), st


def test_no_backend_listening_is_backend_unavailable(esockd, tmp_path):
    nobody = str(tmp_path / "nobody.sock")
    d = esockd.start(workers=1, listeners=[{"name": "dead", "backend": nobody}])
    cut_off(connect(d.port), b"anyone?\n")
    closed_once(d, closed_backend_unavailable=1, backend_failures=1)


def test_a_tls_session_that_ends_normally_counts_no_failure(esockd, tmp_path):
    """The handshake phase, then the relay: a finished handshake is no
    TLS failure, and both sides closing is normal."""
    d, cert, _ = start_tls(esockd, tmp_path)
    s = tls_connect(d.port, cert)
    try:
        s.sendall(b"through tls\n")
        assert recv_exact(s, 12) == b"through tls\n"
        s = s.unwrap()  # our close_notify, then the daemon's
    finally:
        s.close()
    closed_once(d, closed_normal=1)


def test_a_client_reset_mid_relay(esockd):
    be = esockd.py_backend(record_until_eof)
    d = esockd.start(workers=1, listeners=[{"name": "rst", "backend": be.path}])
    s = connect(d.port)
    s.sendall(b"half way")
    wait_until(lambda: be.sessions and bytes(be.sessions[0]["received"]) == b"half way",
               5, message="the backend never got the client's bytes")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_until(lambda: be.sessions[0]["eof"], 5, message="the backend never saw EOF")
    closed_once(d, closed_client_reset=1)


def test_a_backend_closing_with_unread_bytes_is_a_backend_reset(esockd):
    """A Unix socket closed with bytes unread resets its peer (ECONNRESET
    on esockd's next read of the backend)."""
    def close_unread(conn, record):
        readable, _, _ = select.select([conn], [], [], 10)
        record["unread"] = bool(readable)    # then closed by PyBackend

    be = esockd.py_backend(close_unread)
    d = esockd.start(workers=1, listeners=[{"name": "brst", "backend": be.path}])
    cut_off(connect(d.port), b"never read by the backend")
    assert be.sessions and be.sessions[0].get("unread") is True
    closed_once(d, closed_backend_reset=1)


def test_a_held_connection_is_closed_at_the_old_generation_s_shutdown_timeout(esockd):
    """The master would exit after SIGTERM, so the drain is a reload's: the
    old worker closes the held connection at its shutdown_timeout."""
    d = esockd.start(workers=1, shutdown_timeout=1)
    s = held(d.port)
    assert d.reload()[0]
    cut_off(s)
    closed_once(d, closed_shutdown=1)


def test_a_killed_worker_s_connection_is_worker_lost(esockd):
    d = esockd.start(workers=1)
    pid = d.worker_pids()[1]
    s = held(d.port)
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 5, message="worker %d still alive" % pid)
    cut_off(s)
    # The master counts it when it reaps the worker, which closed_once
    # waits for (closed moves only then).
    closed_once(d, closed_worker_lost=1)
