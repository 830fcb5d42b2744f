"""Backend failures and failover across a list of backend sockets."""

import socket

import pytest

from esockd_helpers import assert_echo, connect, read_outcome


def make_dead_socket_path(tmp_path, kind):
    """'missing': no file at all (ENOENT); 'stale': a socket file nobody
    listens on (ECONNREFUSED)."""
    path = tmp_path / ("dead-%s.sock" % kind)
    if kind == "stale":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(str(path))
        s.close()
        assert path.exists()
    return str(path)


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_dead_backend_closes_client_without_data_and_counts_each_failure(esockd, tmp_path, kind):
    """With an unreachable backend each client is closed without any data,
    and backend_failures goes up by exactly one per client."""
    dead = make_dead_socket_path(tmp_path, kind)
    d = esockd.start(workers=2, listeners=[{"name": "dead", "backend": dead}])
    for attempt in (1, 2, 3):
        with connect(d.port) as s:
            try:
                s.sendall(b"anyone there?\n")
            except (ConnectionResetError, BrokenPipeError):
                pass
            outcome = read_outcome(s, b"anyone there?\n", timeout=5)
            assert outcome in ("eof", "reset"), "attempt %d: %s" % (attempt, outcome)
        st = d.wait_stats(lambda st: st["backend_failures"] >= attempt and st["connections"] == 0,
                          timeout=5)
        assert st["backend_failures"] == attempt, st
        assert st["connections"] == 0, st
    assert st["bytes_out"] == 0, st
    assert d.alive()


@pytest.mark.parametrize("kind", ["missing", "stale"])
def test_failover_skips_dead_backend_socket(esockd, tmp_path, kind):
    """backend socket list (dead first, live echo second): every connection
    is relayed to the live backend, none is counted as a backend failure."""
    dead = make_dead_socket_path(tmp_path, kind)
    live = esockd.echo_handler()
    d = esockd.start(workers=2, listeners=[{"name": "failover", "backend": [dead, live]}])
    for i in range(6):
        with connect(d.port) as s:
            assert_echo(s, b"connection %d via failover\n" % i)
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["accepted"] == 6, st
    assert st["backend_failures"] == 0, st
    assert st["closed"] == 6, st


def test_round_robin_uses_every_backend(esockd):
    """With two live backends, connections are spread over both."""
    hits = {"a": 0, "b": 0}

    def counting(tag):
        def handler(conn, record):
            hits[tag] += 1
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall(data)
        return handler

    a = esockd.py_backend(counting("a"), name="rr-a")
    b = esockd.py_backend(counting("b"), name="rr-b")
    d = esockd.start(workers=1, listeners=[{"name": "rr", "backend": [a.path, b.path]}])
    for i in range(6):
        with connect(d.port) as s:
            assert_echo(s, b"rr %d\n" % i)
    assert hits["a"] > 0 and hits["b"] > 0, hits
