"""Flow control: a peer that stops reading must not make esockd buffer
without bound; the other side is pushed back through TCP instead."""

import socket
import threading
import time

from esockd_helpers import connect, wait_until

PUSH_SECONDS = 2.0
CHUNK = 256 * 1024


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _push(sock, seconds):
    """Send as much as the path accepts for `seconds`; return bytes taken."""
    sock.setblocking(False)
    chunk = b"x" * CHUNK
    sent = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sent += sock.send(chunk)
        except BlockingIOError:
            time.sleep(0.01)
    return sent


def _stalled_backend(release):
    """A backend that accepts and reads nothing until `release` is set,
    then drains (so the test can prove no byte was lost)."""
    def handler(conn, record):
        release.wait(30)
        conn.settimeout(5)
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            record["received"] += data
    return handler


def test_backend_that_never_reads_pushes_back_on_the_client(esockd):
    release = threading.Event()
    backend = esockd.py_backend(_stalled_backend(release))
    d = esockd.start(workers=1, listeners=[{"name": "fc", "backend": backend.path}])
    worker = d.worker_pids()[1]
    c = connect(d.port)
    try:
        time.sleep(0.2)
        rss0 = _rss_kib(worker)
        sent = _push(c, PUSH_SECONDS)
        growth = _rss_kib(worker) - rss0
        # Kernel socket buffers absorb some megabytes; esockd holds at most
        # one 64 KiB chunk. Unbounded buffering would take ~GB in 2 s.
        assert sent < 64 * 1024 * 1024, "client pushed %d bytes into a stalled path" % sent
        assert growth < 4 * 1024, "worker RSS grew by %d KiB while the backend stalled" % growth
        release.set()
        c.shutdown(socket.SHUT_WR)
        wait_until(lambda: backend.sessions and backend.sessions[0]["done"].is_set(), 10,
                   message="backend drained to EOF")
        assert len(backend.sessions[0]["received"]) == sent
    finally:
        c.close()


def test_client_that_never_reads_pushes_back_on_the_backend(esockd):
    pushed = {}

    def flooding(conn, record):
        pushed["n"] = _push(conn, PUSH_SECONDS)
        conn.shutdown(socket.SHUT_WR)
        time.sleep(5)

    backend = esockd.py_backend(flooding)
    d = esockd.start(workers=1, listeners=[{"name": "fc2", "backend": backend.path}])
    worker = d.worker_pids()[1]
    rss0 = _rss_kib(worker)
    c = connect(d.port)
    try:
        wait_until(lambda: "n" in pushed, 10, message="backend finished pushing")
        growth = _rss_kib(worker) - rss0
        assert pushed["n"] < 64 * 1024 * 1024, pushed
        assert growth < 4 * 1024, "worker RSS grew by %d KiB while the client stalled" % growth
        # Now read: every byte the backend pushed arrives, then EOF.
        c.settimeout(10)
        got = 0
        while True:
            data = c.recv(1 << 20)
            if not data:
                break
            got += len(data)
        assert got == pushed["n"]
    finally:
        c.close()
