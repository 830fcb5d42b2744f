"""The benchmark's echo server (build/esockd-bench-echo) echoes every byte
even when the peer stops reading: the remainder it holds is sent once the
peer drains, which needs EPOLLOUT to be watched exactly while something is
pending (it is not watched otherwise, to spare a wakeup per read).

A client sends 32 MiB while reading nothing for a while, so the server's
sends hit EAGAIN and it must hold and resume; then everything must come
back, in order.  Over the Unix socket (the backend role) and loopback TCP
(the direct ceiling).
"""

import os
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from esockd_helpers import REPO, free_port

ECHO = REPO / "build" / "esockd-bench-echo"
# More than the socket buffers both ways can absorb, even loopback TCP's
# autotuned ones (up to tcp_rmem/tcp_wmem's maximum, 6 + 4 MiB by
# default; the client's own are pinned small).
TOTAL = 32 * 1024 * 1024
SMALL_BUF = 64 * 1024


def connect(kind, where, deadline):
    """Connect, retrying while the server is still starting."""
    family = socket.AF_UNIX if kind == "unix" else socket.AF_INET
    addr = where if kind == "unix" else ("127.0.0.1", where)
    while True:
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUF)
        try:
            s.connect(addr)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@pytest.fixture(params=["unix", "tcp"])
def echo_server(request):
    if not ECHO.exists():
        pytest.fail("build/esockd-bench-echo is missing: make bench-tools")
    tmp = tempfile.mkdtemp(prefix="ebe-", dir="/tmp")
    if request.param == "unix":
        where = os.path.join(tmp, "echo.sock")
        spec = "unix:" + where
    else:
        where = free_port()
        spec = "tcp:127.0.0.1:%d" % where
    proc = subprocess.Popen([str(ECHO), "-l", spec, "-T", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield request.param, where, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if os.path.exists(os.path.join(tmp, "echo.sock")):
            os.unlink(os.path.join(tmp, "echo.sock"))
        os.rmdir(tmp)


@pytest.mark.timeout(60)
def test_echo_server_resumes_a_held_echo(echo_server):
    kind, where, proc = echo_server
    s = connect(kind, where, time.monotonic() + 10)
    s.settimeout(20)
    payload = os.urandom(TOTAL)
    sent = []

    def sender():
        view = memoryview(payload)
        off = 0
        while off < TOTAL:
            off += s.send(view[off:off + 65536])
        sent.append(off)

    t = threading.Thread(target=sender, daemon=True)
    t.start()
    time.sleep(1.0)   # read nothing: both buffers fill, the server holds
    assert t.is_alive(), "32 MiB went out unread: the server never had to hold any"
    got = bytearray()
    while len(got) < TOTAL:
        chunk = s.recv(1 << 20)
        assert chunk, "EOF after %d of %d bytes" % (len(got), TOTAL)
        got += chunk
    t.join(10)
    s.close()
    assert not t.is_alive(), "the sender is still blocked after the echo"
    assert sent == [TOTAL]
    assert bytes(got) == payload
    assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
