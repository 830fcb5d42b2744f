"""Every line esockd writes is its own: labelled, timestamped, leveled.

Two ways clients used to make libevent print "[warn] Epoll MOD(4) on fd N
failed ... Bad file descriptor" on stderr, once per connection and with
no label (esockd closed a descriptor before removing its last events):
clients that never read and then go, and a backend that dies with
clients' bytes unread.  Neither may print anything but esockd's lines,
and libevent must have had nothing to say at all."""
import socket
import threading
import time

from esockd_helpers import LOG_LINE_RE, connect, wait_until


def foreign_lines(text):
    """Lines that are not esockd's labelled log lines, and labelled lines
    that carry a libevent message."""
    bad = []
    for line in text.splitlines():
        m = LOG_LINE_RE.search(line)
        if m is None or "libevent" in m.group("msg"):
            bad.append(line)
    return bad


def settled(d, key, quiet=0.3, timeout=10.0):
    """Wait until counter `key` stops moving for `quiet` seconds (the
    sockets are full); return its value."""
    last = [d.stats()[d.name][key], time.monotonic()]

    def still():
        v = d.stats()[d.name][key]
        if v != last[0]:
            last[0], last[1] = v, time.monotonic()
            return False
        return time.monotonic() - last[1] >= quiet
    wait_until(still, timeout, interval=0.1, message="%s to settle" % key)
    return last[0]


def test_clients_that_never_read_then_go_leave_no_foreign_line(esockd):
    """200 clients get more than their sockets hold and never read, so
    each session has bytes pending (a read and a write event on the
    client's descriptor); then every client resets."""
    N = 200
    blob = b"z" * (1 << 20)

    def flood(conn, record):
        try:
            conn.sendall(blob)
        except OSError:
            pass                # esockd closed us when the client went

    backend = esockd.py_backend(flood)
    d = esockd.start(workers=2, listeners=[{
        "name": "flood", "backend": {"socket": backend.path, "connect_timeout": 1000}}])
    clients = []
    for _ in range(N):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", d.port))
        clients.append(s)
    wait_until(lambda: len(backend.sessions) == N, 10, message="all backends connected")
    out = settled(d, "bytes_out")
    assert out > N * 4096, "the clients' sockets are not full (%d bytes out)" % out
    for s in clients:
        s.close()           # unread data: a reset
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    assert st["connections"] == 0 and st["closed"] == N, st
    assert st["closed_client_reset"] == N, st
    bad = foreign_lines(d.log())
    assert not bad, "%d foreign lines, first: %r" % (len(bad), bad[:3])


def test_a_backend_that_dies_with_bytes_unread_leaves_no_foreign_line(esockd):
    """50 clients send more than the backend reads (bytes pending towards
    it: a read and a write event on its descriptor); then the backend
    closes every connection with those bytes unread (a reset)."""
    N = 50
    die = threading.Event()

    def deaf(conn, record):
        die.wait(20)            # never reads; returning closes conn

    backend = esockd.py_backend(deaf)
    d = esockd.start(workers=2, listeners=[{
        "name": "deaf", "backend": {"socket": backend.path, "connect_timeout": 1000}}])
    clients = [connect(d.port) for _ in range(N)]
    wait_until(lambda: len(backend.sessions) == N, 10, message="all backends connected")
    chunk = b"y" * 65536
    for s in clients:
        s.setblocking(False)
        for _ in range(64):     # at most 4 MiB each, until its buffers fill
            try:
                s.send(chunk)
            except BlockingIOError:
                break
    settled(d, "bytes_in")
    die.set()
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    assert st["connections"] == 0 and st["closed"] == N, st
    assert st["closed_backend_reset"] == N, st
    for s in clients:
        s.close()
    bad = foreign_lines(d.log())
    assert not bad, "%d foreign lines, first: %r" % (len(bad), bad[:3])
