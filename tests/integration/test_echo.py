"""Basic relaying: client <-> esockd <-> Unix-socket backend."""

import os

import pytest

from esockd_helpers import assert_echo, connect, ipv6_loopback_usable, recv_exact


def test_echo_relays_messages_of_various_sizes(esockd):
    """Messages from 1 byte to ~1 MB come back unchanged, in order, on one connection."""
    d = esockd.start(workers=2)
    with connect(d.port) as s:
        for size in (1, 2, 17, 100, 1460, 4096, 65536, 300_001, 1 << 20):
            data = os.urandom(size)
            assert_echo(s, data, timeout=10)
        # several small messages sent back to back arrive as one ordered stream
        burst = b"".join(b"msg-%03d;" % i for i in range(200))
        s.sendall(burst)
        assert recv_exact(s, len(burst)) == burst


def test_echo_on_several_sequential_connections(esockd):
    """Each new connection gets its own working relay."""
    d = esockd.start(workers=2)
    for i in range(20):
        with connect(d.port) as s:
            assert_echo(s, b"connection %d\n" % i)


def test_echo_over_ipv6_loopback(esockd):
    """A "[::1]:PORT" listener accepts IPv6 clients and relays."""
    reason = ipv6_loopback_usable()
    if reason:
        print("skipping IPv6 test:", reason)
        pytest.skip(reason)
    d = esockd.start(listeners=[{"name": "v6", "host": "::1"}])
    assert d.listeners[0]["bind"].startswith("[::1]:")
    with connect(d.port, host="::1") as s:
        assert_echo(s, b"hello over ipv6\n")
        assert_echo(s, os.urandom(100_000), timeout=10)


def test_two_listeners_each_relay_to_their_own_backend(esockd):
    """Two listeners in one config: each client reaches its listener's backend."""

    def tagging_backend(tag):
        def handler(conn, record):
            first = True
            while True:
                data = conn.recv(65536)
                if not data:
                    return
                conn.sendall((tag + data) if first else data)
                first = False
        return handler

    a = esockd.py_backend(tagging_backend(b"A:"), name="backend-a")
    b = esockd.py_backend(tagging_backend(b"B:"), name="backend-b")
    d = esockd.start(listeners=[
        {"name": "alpha", "backend": a.path},
        {"name": "beta", "backend": b.path},
    ])
    assert d.ports["alpha"] != d.ports["beta"]
    for _ in range(3):
        with connect(d.ports["alpha"]) as sa, connect(d.ports["beta"]) as sb:
            sa.sendall(b"hello")
            sb.sendall(b"hello")
            assert recv_exact(sa, 7) == b"A:hello"
            assert recv_exact(sb, 7) == b"B:hello"
            assert_echo(sa, b"more data for alpha")
            assert_echo(sb, b"more data for beta")
    assert len(a.sessions) == 3 and len(b.sessions) == 3

    # The echo handler works the same way behind two listeners.
    e1, e2 = esockd.echo_handler(), esockd.echo_handler()
    d2 = esockd.start(listeners=[{"name": "one", "backend": e1},
                                 {"name": "two", "backend": e2}])
    for name in ("one", "two"):
        with connect(d2.ports[name]) as s:
            assert_echo(s, b"via listener " + name.encode())
    st = d2.stats()
    assert st["one"]["accepted"] == 1 and st["two"]["accepted"] == 1, st
