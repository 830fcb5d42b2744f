"""Signals to the master: SIGTERM/SIGINT graceful stop, SIGQUIT fast stop."""

import signal
import socket
import subprocess
import time

from esockd_helpers import assert_echo, connect, pid_alive, recv_until_eof, wait_until


def connect_refused(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def workers_gone(d):
    return not any(pid_alive(p) for p in d.all_worker_pids())


def assert_exits_0(d, timeout, after):
    """The master exits with status 0 within `timeout` seconds."""
    try:
        rc = d.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("master still running %g s after %s" % (timeout, after))
    assert rc == 0


def test_sigterm_stops_listening_but_lets_open_connections_finish(esockd):
    """After SIGTERM new connects are refused at once, an open connection keeps
    relaying, and the master exits 0 once that client is gone."""
    d = esockd.start(workers=2, shutdown_timeout=10)
    client = connect(d.port)
    try:
        assert_echo(client, b"before SIGTERM\n")
        d.signal(signal.SIGTERM)
        wait_until(lambda: connect_refused(d.port), 2, interval=0.05,
                   message="new connections to be refused after SIGTERM")
        assert_echo(client, b"after SIGTERM, still relayed\n")
        assert d.alive(), "master exited while a connection was still open"
    finally:
        client.close()
    assert_exits_0(d, 5, "the last client closed")
    wait_until(lambda: workers_gone(d), 2, message="workers to exit")


def test_sigterm_shutdown_timeout_closes_lingering_clients(esockd):
    """With shutdown_timeout = 1 a client that never leaves gets EOF, and
    the master exits 0 within ~4 s."""
    d = esockd.start(workers=2, shutdown_timeout=1)
    client = connect(d.port)
    try:
        assert_echo(client, b"I will stay\n")
        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        try:
            rest = recv_until_eof(client, timeout=4)
        except ConnectionResetError:
            raise AssertionError("client got a reset instead of EOF at shutdown")
        assert rest == b""
        assert_exits_0(d, max(0.1, 4 - (time.monotonic() - t0)),
                       "SIGTERM with shutdown_timeout=1")
        elapsed = time.monotonic() - t0
        assert elapsed >= 0.5, "master exited after %.2fs, before shutdown_timeout" % elapsed
    finally:
        client.close()
    wait_until(lambda: workers_gone(d), 2, message="workers to exit")


def test_sigint_stops_like_sigterm(esockd):
    """SIGINT with no open connections: master exits 0 promptly."""
    d = esockd.start(workers=2, shutdown_timeout=10)
    with connect(d.port) as c:
        assert_echo(c, b"x")
    wait_until(lambda: d.stats()[d.name]["connections"] == 0, 5)
    d.signal(signal.SIGINT)
    assert_exits_0(d, 5, "SIGINT")
    wait_until(lambda: workers_gone(d), 2, message="workers to exit")


def test_sigquit_exits_at_once_and_takes_the_workers_along(esockd):
    """SIGQUIT: the master exits within 2 s even with a client open, and no
    worker process survives it."""
    d = esockd.start(workers=2, shutdown_timeout=30)
    workers = d.worker_pids()
    assert len(workers) == 2 and all(pid_alive(p) for p in workers.values()), workers
    client = connect(d.port)
    try:
        assert_echo(client, b"open while SIGQUIT\n")
        d.signal(signal.SIGQUIT)
        try:
            d.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            raise AssertionError("master still running 2 s after SIGQUIT")
        wait_until(lambda: not any(pid_alive(p) for p in workers.values()), 2,
                   message="worker pids %s to be gone after SIGQUIT" % sorted(workers.values()))
    finally:
        client.close()
