"""TLS termination: real clients (Python ssl, openssl s_client) against
the real daemon, with certificates made for each test by openssl(1)."""
import hashlib
import os
import selectors
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from ctl_helpers import listener_json
from esockd_helpers import esockd_argv, read_outcome, record_until_eof, recv_exact, wait_until

OPENSSL = shutil.which("openssl")


def make_cert(tmp_path, name):
    """A self-signed ECDSA certificate for localhost and 127.0.0.1:
    (certificate path, key path)."""
    if OPENSSL is None:
        pytest.skip("openssl(1) is not installed (make deps installs Debian's openssl)")
    cert, key = tmp_path / (name + ".crt"), tmp_path / (name + ".key")
    subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=30)
    return str(cert), str(key)


def client_ctx(cert, **kw):
    ctx = ssl.create_default_context(cafile=cert)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port, cert, timeout=5, **kw):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return client_ctx(cert, **kw).wrap_socket(raw, server_hostname="localhost")
    except BaseException:
        raw.close()
        raise


def start_tls(esockd, tmp_path, **listener):
    cert, key = make_cert(tmp_path, "server")
    lst = {"name": "tls", "tls_certificate": cert, "tls_key": key}
    lst.update(listener)
    return esockd.start(listeners=[lst]), cert, key


def exchange(s, data, timeout=30):
    """Send data and read as much back on one non-blocking TLS socket, in
    one thread (an SSL object must not be used by two threads at once).
    Returns what came back, short if the daemon closed or went quiet."""
    s.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    sent, got = 0, bytearray()
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(data) and time.monotonic() < deadline:
            for _, mask in sel.select(1):
                if mask & selectors.EVENT_WRITE and sent < len(data):
                    try:
                        sent += s.send(data[sent:sent + 65536])
                    except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                        pass
                    if sent == len(data):
                        sel.modify(s, selectors.EVENT_READ)
                try:
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            return bytes(got)
                        got += chunk
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
        return bytes(got)
    finally:
        sel.close()
        s.setblocking(True)


def test_echo_and_4_mib_each_way_through_tls(esockd, tmp_path):
    d, cert, _ = start_tls(esockd, tmp_path)
    data = os.urandom(4 << 20)
    with tls_connect(d.port, cert, timeout=30) as s:
        assert s.version() in ("TLSv1.2", "TLSv1.3"), s.version()
        got = exchange(s, data)
    assert len(got) == len(data), len(got)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    st = d.wait_stats(lambda st: st["connections"] == 0)
    assert st["bytes_in"] == st["bytes_out"] == len(data), st
    assert st["tls_failures"] == 0, st


def test_openssl_s_client_verifies_and_echoes(esockd, tmp_path):
    d, cert, _ = start_tls(esockd, tmp_path)
    proc = subprocess.Popen([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % d.port,
                             "-CAfile", cert, "-verify_return_error", "-quiet",
                             "-verify_hostname", "localhost"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        proc.stdin.write(b"hello through s_client\n")
        proc.stdin.flush()
        got = proc.stdout.readline()       # -quiet keeps it open after stdin
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert got == b"hello through s_client\n", (got, err[-500:])
    assert b"verify return:1" in err, err[-500:]


def test_a_backend_that_closes_gets_the_client_a_close_notify(esockd, tmp_path):
    """The backend says goodbye and closes: the client reads it, then a
    clean TLS end (close_notify), not a truncation."""
    cert, key = make_cert(tmp_path, "server")

    def bye(conn, record):
        conn.sendall(b"bye\n")

    be = esockd.py_backend(bye)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert,
                                 "tls_key": key, "backend": be.path}])
    with tls_connect(d.port, cert) as s:
        assert recv_exact(s, 4) == b"bye\n"
        assert s.recv(100) == b""       # SSLEOFError here would mean no close_notify


def test_a_client_close_notify_reaches_the_backend_as_eof(esockd, tmp_path):
    """The client sends, then ends its TLS: the backend gets every byte,
    then EOF; its close comes back to the client as our close_notify."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(record_until_eof)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert,
                                 "tls_key": key, "backend": be.path}])
    s = tls_connect(d.port, cert)
    s.sendall(b"y" * 100000)
    raw = s.unwrap()        # our close_notify, then the daemon's
    raw.close()
    wait_until(lambda: be.sessions and be.sessions[0]["eof"], 5, message="backend EOF")
    assert bytes(be.sessions[0]["received"]) == b"y" * 100000


def test_handshake_failures_are_counted_and_others_keep_flowing(esockd, tmp_path):
    """Plain HTTP and random bytes on the TLS port: each closed and
    counted in tls_failures, while a TLS client in the middle of its
    session loses no byte."""
    d, cert, _ = start_tls(esockd, tmp_path)
    good = tls_connect(d.port, cert)
    try:
        good.sendall(b"before\n")
        assert recv_exact(good, 7) == b"before\n"
        # Random bytes, but not a record's start: a first byte with the
        # high bit set can read as an SSLv2 ClientHello (about 1 draw in
        # 512, with a 0x01 third byte) whose 15-bit length makes OpenSSL
        # wait for more, until tls_handshake_timeout; 0x00 is no record
        # type, so the failure comes at once.
        for junk in (b"GET / HTTP/1.0\r\n\r\n", b"\x00" + os.urandom(2999)):
            c = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            try:
                c.sendall(junk)
                assert read_outcome(c, b"never", timeout=5) in ("eof", "reset")
            finally:
                c.close()
        good.sendall(b"after\n")
        assert recv_exact(good, 6) == b"after\n"
    finally:
        good.close()
    st = d.wait_stats(lambda st: st["tls_failures"] == 2 and st["connections"] == 0)
    assert st["tls_failures"] == 2 and st["backend_failures"] == 0, st
    assert listener_json(d)["tls_failures"] == 2
    assert "TLS handshake failed: http request" in d.log()


def test_a_silent_client_is_cut_at_the_handshake_timeout(esockd, tmp_path):
    d, cert, _ = start_tls(esockd, tmp_path, tls_handshake_timeout=1)
    c = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    try:
        t0 = time.monotonic()
        assert read_outcome(c, b"never", timeout=5) in ("eof", "reset")
        took = time.monotonic() - t0
    finally:
        c.close()
    assert 0.8 <= took < 3.5, took
    st = d.wait_stats(lambda st: st["tls_failures"] == 1)
    assert st["tls_failures"] == 1, st
    assert "no handshake within tls_handshake_timeout" in d.log()


def test_tls_min_version_1_3_refuses_a_1_2_client(esockd, tmp_path):
    d, cert, _ = start_tls(esockd, tmp_path, tls_min_version="1.3")
    with pytest.raises(ssl.SSLError):
        tls_connect(d.port, cert, maximum_version=ssl.TLSVersion.TLSv1_2).close()
    with tls_connect(d.port, cert) as s:
        assert s.version() == "TLSv1.3"
    d.wait_stats(lambda st: st["tls_failures"] == 1)


def refused_by_t(tmp_path, body):
    """`esockd -t` on one listener holding body (its line 2 on) must
    fail: (the config's path, what it said)."""
    conf = tmp_path / "tls.conf"
    conf.write_text('listeners = ( { name = "t"; bind = "127.0.0.1:1";\n' + body +
                    '  backend = { socket = "/x.sock"; }; } );\n')
    r = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1, (r.returncode, r.stderr)
    return conf, r.stderr


def test_certificate_errors_name_the_file_and_line(tmp_path):
    cert, key = make_cert(tmp_path, "a")
    _, other_key = make_cert(tmp_path, "b")

    def check(body, *wants):
        conf, err = refused_by_t(tmp_path, body)
        for want in wants:
            assert want % {"conf": conf} in err, err

    check('  tls_certificate = "%s/missing.pem";\n' % tmp_path,
          "%(conf)s:2: listener 't': cannot load the certificate chain from " +
          str(tmp_path) + "/missing.pem")
    check('  tls_certificate = "%s";\n  tls_key = "%s";\n' % (cert, other_key),
          "%(conf)s:2: listener 't': the private key in " + other_key +
          " does not match the certificate in " + cert)
    check('  tls_key = "%s";\n' % key, "%(conf)s:2: 'tls_key' in listener 't' needs "
          "'tls_certificate'")
    check('  tls_certificate = "%s";\n  tls_min_version = "1.1";\n' % cert,
          "%(conf)s:3: 'tls_min_version' = \"1.1\" is not a version esockd accepts")
    check('  tls_certificate = "%s";\n' % cert,
          "%(conf)s:2: listener 't': cannot load the private key from " + cert)


def test_a_reload_serves_the_new_certificate_to_new_clients(esockd, tmp_path):
    d, cert, key = start_tls(esockd, tmp_path)
    old = tls_connect(d.port, cert)
    try:
        first = old.getpeercert(binary_form=True)
        cert2, key2 = make_cert(tmp_path, "renewed")
        lst = dict(d.listeners[0])
        lst.update(tls_certificate=cert2, tls_key=key2)
        d.rewrite(listeners=[lst])
        ok, gen = d.reload()
        assert ok and gen == 2, gen
        with tls_connect(d.port, cert2) as new:
            assert new.getpeercert(binary_form=True) != first
            new.sendall(b"new\n")
            assert recv_exact(new, 4) == b"new\n"
        old.sendall(b"old one still\n")
        assert recv_exact(old, 14) == b"old one still\n"
    finally:
        old.close()
    # A reload with a broken key is refused; the running certificate stays.
    lst["tls_key"] = str(tmp_path / "gone.key")
    d.rewrite(listeners=[lst])
    ok, errors = d.reload()
    assert not ok and any("cannot load the private key" in e for e in errors), errors
    with tls_connect(d.port, cert2) as s:
        s.sendall(b"still\n")
        assert recv_exact(s, 6) == b"still\n"


def test_many_tls_clients_at_once(esockd, tmp_path):
    d, cert, _ = start_tls(esockd, tmp_path)
    socks = []
    try:
        for i in range(200):
            socks.append(tls_connect(d.port, cert))
        for i, s in enumerate(socks):
            s.sendall(b"%d\n" % i)
        for i, s in enumerate(socks):
            want = b"%d\n" % i
            assert recv_exact(s, len(want)) == want
        wait_until(lambda: listener_json(d)["connections"] == 200, 5, message="200 open")
    finally:
        for s in socks:
            s.close()
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    assert st["accepted"] == st["closed"] == 200 and st["tls_failures"] == 0, st


def test_the_proxy_header_comes_before_the_decrypted_bytes(esockd, tmp_path):
    cert, key = make_cert(tmp_path, "server")

    def header_then_echo(conn, record):
        head = recv_exact(conn, 16)
        record["header"] = head + recv_exact(conn, head[15])
        while True:
            data = conn.recv(65536)
            if not data:
                return
            conn.sendall(data)

    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "backend": {"socket": be.path, "proxy_protocol": True}}])
    with tls_connect(d.port, cert) as s:
        s.sendall(b"secret\n")
        assert recv_exact(s, 7) == b"secret\n"
        sport = s.getsockname()[1]
    hdr = be.sessions[0]["header"]
    assert hdr[:12] == b"\r\n\r\n\x00\r\nQUIT\n" and hdr[13] == 0x11, hdr
    assert int.from_bytes(hdr[24:26], "big") == sport


def test_a_session_resumes_on_any_worker(esockd, tmp_path):
    """The ticket keys come with the master's context, so a session from
    one worker resumes on the others: 12 connections over 3 workers, each
    resumed from the first one's session."""
    cert, key = make_cert(tmp_path, "server")
    d = esockd.start(workers=3, listeners=[{"name": "tls", "tls_certificate": cert,
                                            "tls_key": key}])
    ctx = client_ctx(cert)
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", d.port), timeout=5),
                         server_hostname="localhost") as s:
        s.sendall(b"first\n")
        assert recv_exact(s, 6) == b"first\n"   # the ticket arrives with the data
        session = s.session
    assert session is not None
    held, resumed = [], []
    try:
        for i in range(12):
            raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
            s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
            held.append(s)
            s.sendall(b"again\n")
            assert recv_exact(s, 6) == b"again\n"
            resumed.append(s.session_reused)
        per = d.stats()["tls"]["per_worker"]
        assert sum(1 for n in per if n > 0) >= 2, "all on one worker: %s" % per
    finally:
        for s in held:
            s.close()
    assert all(resumed), resumed


def test_garbage_after_the_handshake_closes_only_that_connection(esockd, tmp_path):
    """Bytes that are not TLS records, written under a finished handshake:
    that client is closed (no byte of it reaches the backend as data),
    another session keeps flowing, the daemon stays up."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(record_until_eof)
    echo = esockd.echo_handler()
    d = esockd.start(listeners=[
        {"name": "tls", "tls_certificate": cert, "tls_key": key, "backend": be.path},
        {"name": "tls2", "tls_certificate": cert, "tls_key": key, "backend": echo}])
    good = tls_connect(d.ports["tls2"], cert)
    try:
        good.sendall(b"steady\n")
        assert recv_exact(good, 7) == b"steady\n"
        bad = tls_connect(d.port, cert)
        try:
            bad.sendall(b"real data\n")
            os.write(bad.fileno(), b"\x17\x03\x03\x00\x20" + os.urandom(32))
            bad.settimeout(5)
            try:
                got = bad.recv(100)
            except socket.timeout:
                raise AssertionError("the broken connection was left open")
            except (ssl.SSLError, OSError):
                got = b""       # closed: a reset or a TLS error, no data
            assert got == b"", got
        finally:
            bad.close()
        wait_until(lambda: be.sessions and be.sessions[0].get("eof"), 5,
                   message="the broken client's backend connection closed")
        assert bytes(be.sessions[0]["received"]) == b"real data\n"
        good.sendall(b"still steady\n")
        assert recv_exact(good, 13) == b"still steady\n"
    finally:
        good.close()
    assert d.alive()
