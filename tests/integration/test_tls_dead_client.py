"""A TLS client that sends its request, half-closes (with or without
close_notify) and resets before the answer comes: the write to it fails,
and the session must end there, counted as client_reset, with the worker
idle afterwards.  (It used to take the failed SSL_write as "nothing
written yet" and wait for a dead socket to become writable: a busy loop
of failed writes that held the slot until idle_timeout.)"""
import socket
import ssl
import struct
import threading
import time

import pytest

from esockd_helpers import cpu_seconds, wait_until
from test_tls import client_ctx, make_cert

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
ANSWER = 4 << 20        # more than the sockets can hold: writes must fail


class MemoryTLS:
    """A TLS client over a blocking socket through memory BIOs, so the test
    decides what goes out: the request, close_notify, the FIN, a reset."""

    def __init__(self, port, cert, version):
        ctx = client_ctx(cert)
        ctx.minimum_version = ctx.maximum_version = version
        self.raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out, server_hostname="localhost")
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                chunk = self.raw.recv(65536)
                assert chunk, "the daemon closed during the handshake"
                self.inc.write(chunk)
        self.flush()

    def flush(self):
        data = self.out.read()
        if data:
            self.raw.sendall(data)

    def send(self, data):
        self.obj.write(data)
        self.flush()

    def close_notify(self):
        try:
            self.obj.unwrap()      # writes close_notify, wants the peer's
        except ssl.SSLWantReadError:
            pass
        self.flush()

    def reset(self):
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.raw.close()


def worker_cpu(d):
    return sum(cpu_seconds(pid) for pid in d.worker_pids().values())


@pytest.mark.parametrize("close_notify", [True, False], ids=["close_notify", "bare_eof"])
@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_write_after_client_eof_and_reset_ends_the_session(esockd, tmp_path, version,
                                                           close_notify):
    got_eof, answer = threading.Event(), threading.Event()

    def late_answer(conn, record):
        while True:
            data = conn.recv(65536)
            if not data:
                break
            record["received"] += data
        got_eof.set()
        answer.wait(10)
        try:
            conn.sendall(b"a" * ANSWER)
        except OSError as e:        # esockd closed us: what should happen
            record["send_error"] = repr(e)

    backend = esockd.py_backend(late_answer)
    cert, key = make_cert(tmp_path, "server")
    d = esockd.start(workers=2, listeners=[{
        "name": "tls", "tls_certificate": cert, "tls_key": key,
        "idle_timeout": 0,          # nothing but the fix may end it
        "backend": {"socket": backend.path, "connect_timeout": 1000}}])

    c = MemoryTLS(d.port, cert, VERSIONS[version])
    c.send(b"GET / HTTP/1.0\r\n\r\n")
    if close_notify:
        c.close_notify()
    c.raw.shutdown(socket.SHUT_WR)
    assert got_eof.wait(5), "the backend never saw the client's EOF"
    assert bytes(backend.sessions[0]["received"]) == b"GET / HTTP/1.0\r\n\r\n"
    c.reset()
    answer.set()

    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0, "the session outlived its client: %s" % st
    assert st["closed_client_reset"] == 1 and st["closed"] == 1, st
    assert st["closed_normal"] == 0 and st["tls_failures"] == 0, st
    # And nothing keeps a worker busy afterwards: over half a second of
    # wall time an idle pair of workers uses next to no CPU (the spin used
    # all of a core).
    wait_until(lambda: backend.sessions[0]["done"].is_set(), 5, message="backend done")
    before, t0 = worker_cpu(d), time.monotonic()
    wait_until(lambda: time.monotonic() - t0 >= 0.5, 2, interval=0.1)
    used = worker_cpu(d) - before
    assert used < 0.15, "idle workers used %.2f s of CPU in 0.5 s" % used
