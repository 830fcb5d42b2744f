"""Torture 5: big transfers while other connections churn.

One connection sends SIZE bytes through esockd to an echo backend and
reads them all back, over TCP and then over TLS (Python ssl, TLS 1.3),
each byte compared with the one sent at that offset and the whole
hashed both ways (sha256), while K other connections churn (connect,
2 KiB echoed byte-exact, close, again).  Long: 1 GiB each way, 200
churning; short: 32 MiB, 20.  Afterwards the books are exact on both
listeners: every connection accepted was closed, normally, nothing
refused, and bytes_in = bytes_out = SIZE on the TLS listener.
"""
import selectors
import socket
import ssl
import time

import pytest

from load import REJECTIONS, Churn, Sender, Verifier, assert_books_balance
from test_tls import client_ctx, make_cert
from torture import record, scale


def pump(sock, total, seed, timeout):
    """Send total bytes of stream seed on sock and read them back at the
    same time (non-blocking, one thread: an SSL object is not shared);
    then close_notify/EOF both ways.  Returns (Sender, Verifier, EOF seen)."""
    tx, rx = Sender(seed), Verifier(seed)
    sock.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    tls = isinstance(sock, ssl.SSLSocket)
    eof = False
    try:
        while rx.offset < total and not eof:
            assert time.monotonic() < deadline, "stalled: sent %d, got %d of %d" % (
                tx.offset, rx.offset, total)
            for _, mask in sel.select(1):
                if mask & selectors.EVENT_WRITE and tx.offset < total:
                    buf = tx.next(min(65536, total - tx.offset))
                    try:
                        n = sock.send(buf)
                        tx.sent(buf[:n])
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                        pass
                    if tx.offset == total:
                        sel.modify(sock, selectors.EVENT_READ)
                try:
                    while True:   # TLS may hold decrypted bytes past select
                        data = sock.recv(1 << 18)
                        if not data:
                            eof = True
                            break
                        rx.feed(data)
                        if rx.bad_at is not None:
                            raise AssertionError("byte %d differs" % rx.bad_at)
                        if not tls:
                            break
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                    pass
    finally:
        sel.close()
    sock.setblocking(True)
    sock.settimeout(10)
    if tls:
        sock = sock.unwrap()     # close_notify both ways
    sock.shutdown(socket.SHUT_WR)
    eof = sock.recv(1) == b""
    sock.close()
    return tx, rx, eof


@pytest.mark.timeout(900)
def test_big_transfers_tcp_and_tls_byte_exact_under_churn(esockd, request, tmp_path):
    size = scale(request, 32 << 20, 1 << 30)
    k = scale(request, 20, 200)
    cert, key = make_cert(tmp_path, "server")
    d = esockd.start(workers=2, listeners=[
        {"name": "tcp"},
        {"name": "tls", "tls_certificate": cert, "tls_key": key}])
    churn = Churn(d.ports["tcp"], k, size=2048, timeout=20)
    figures = {}
    try:
        t0 = time.monotonic()
        s = socket.create_connection(("127.0.0.1", d.ports["tcp"]), timeout=10)
        tx, rx, eof = pump(s, size, seed=1, timeout=size / (1 << 20) + 60)
        figures["tcp_s"] = round(time.monotonic() - t0, 2)
        assert (tx.offset, rx.offset, eof) == (size, size, True)
        assert tx.sha.hexdigest() == rx.sha.hexdigest()
        figures["tcp_sha256"] = rx.sha.hexdigest()[:16]

        t0 = time.monotonic()
        raw = socket.create_connection(("127.0.0.1", d.ports["tls"]), timeout=10)
        s = client_ctx(cert).wrap_socket(raw, server_hostname="localhost")
        figures["tls_version"] = s.version()
        tx, rx, eof = pump(s, size, seed=2, timeout=size / (1 << 20) * 2 + 60)
        figures["tls_s"] = round(time.monotonic() - t0, 2)
        assert (tx.offset, rx.offset, eof) == (size, size, True)
        assert tx.sha.hexdigest() == rx.sha.hexdigest()
        figures["tls_sha256"] = rx.sha.hexdigest()[:16]
    finally:
        churn.stop()
    assert churn.failures == {}, churn.fail_detail
    assert churn.done > 0

    st = d.wait_stats(lambda st: st["connections"] == 0, name="tcp", timeout=10)
    assert st["accepted"] == churn.done + 1, (churn.done, st)
    assert st["closed"] == st["closed_normal"] == st["accepted"], st
    assert all(st[r] == 0 for r in REJECTIONS), st
    assert st["bytes_in"] == st["bytes_out"] == size + 2048 * churn.done, st
    assert_books_balance(st, "tcp")
    st = d.wait_stats(lambda st: st["connections"] == 0, name="tls", timeout=10)
    assert (st["accepted"], st["closed"], st["closed_normal"]) == (1, 1, 1), st
    assert st["tls_failures"] == 0 and all(st[r] == 0 for r in REJECTIONS), st
    assert st["bytes_in"] == st["bytes_out"] == size, st
    assert_books_balance(st, "tls")
    assert d.alive()
    record(request, "5 big transfers", mib_each_way=size >> 20, churning=k,
           churn_connections=churn.done, tcp_mib_s_both_ways=round(2 * size / 2**20 / figures["tcp_s"], 1),
           tls_mib_s_both_ways=round(2 * size / 2**20 / figures["tls_s"], 1), **figures)
    print(figures, churn.done)
