"""A Unix backend whose accept queue is full answers connect() with
EAGAIN: esockd retries it until connect_timeout, then fails over to the
next socket, or closes the client and counts a backend failure."""

import socket
import time

from esockd_helpers import assert_echo, connect, read_outcome


def _full_backend(path):
    """A listening Unix socket with backlog 0 that never accepts, plus one
    queued connection: every further connect() gets EAGAIN."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(path)
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
        raise AssertionError("the backend's accept queue is not full")
    except BlockingIOError:
        pass
    finally:
        probe.close()
    return srv, filler


def test_full_backend_is_retried_until_connect_timeout_then_skipped(esockd, tmp_path):
    full = str(tmp_path / "full.sock")
    srv, filler = _full_backend(full)
    live = esockd.echo_handler()
    try:
        d = esockd.start(workers=1, listeners=[{
            "name": "q", "backend": {"socket": [full, live], "connect_timeout": 300}}])
        took = []
        for i in range(4):
            t0 = time.monotonic()
            c = connect(d.port)
            assert_echo(c, b"via failover %d\n" % i, timeout=5)
            c.close()
            took.append(time.monotonic() - t0)
        # Round-robin (one worker): connections 1 and 3 start on the full
        # socket and wait out its connect_timeout before failing over.
        slow = [t for t in took if t >= 0.28]
        assert len(slow) == 2 and max(took) < 2.0, took
        st = d.stats()[d.name]
        assert st["backend_failures"] == 0, st
        assert "accept queue full" in d.log(), "the retries were not reported"
    finally:
        filler.close()
        srv.close()


def test_only_backend_full_closes_the_client_after_connect_timeout(esockd, tmp_path):
    full = str(tmp_path / "full.sock")
    srv, filler = _full_backend(full)
    try:
        d = esockd.start(workers=1, listeners=[{
            "name": "q1", "backend": {"socket": full, "connect_timeout": 400}}])
        t0 = time.monotonic()
        c = connect(d.port)
        outcome = read_outcome(c, b"never", timeout=5)
        took = time.monotonic() - t0
        c.close()
        assert outcome in ("eof", "reset"), outcome
        assert 0.35 <= took < 3.0, "closed after %.2fs, connect_timeout is 0.4s" % took
        st = d.wait_stats(lambda st: st["backend_failures"] == 1, timeout=5)
        assert st["backend_failures"] == 1 and st["connections"] == 0, st
    finally:
        filler.close()
        srv.close()
