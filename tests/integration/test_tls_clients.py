"""TLS towards clients: client certificates (required, optional, absent,
unknown CA, expired, revoked), ALPN, versions, resumption and cipher
lists, each seen by a real client (Python ssl) and counted by reason,
with CAs, certificates and CRLs made by openssl(1) in the test's
directory."""
import datetime
import socket
import ssl
import subprocess

import pytest

from ctl_helpers import ctl_ok, fetch, listener_json, metric, parse_exposition
from esockd_helpers import free_port
from test_tls import OPENSSL, client_ctx, make_cert, refused_by_t

REASONS = ("timeout", "plaintext", "version", "no_cipher", "no_cert", "unknown_ca",
           "expired", "revoked", "bad_cert", "unknown_sni", "no_alpn", "other")
DONE = ("tls12_full", "tls12_resumed", "tls13_full", "tls13_resumed")


def openssl(*args, cwd=None):
    r = subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=30, cwd=cwd)
    assert r.returncode == 0, (args, r.stderr)
    return r


class CA:
    """A CA run by `openssl ca`, so certificates may have any validity
    dates and may be revoked into a CRL."""

    def __init__(self, tmp_path, name):
        if OPENSSL is None:
            pytest.skip("openssl(1) is not installed")
        self.dir = tmp_path / name
        (self.dir / "new").mkdir(parents=True)
        (self.dir / "index.txt").write_text("")
        (self.dir / "serial").write_text("1000\n")
        (self.dir / "crlnumber").write_text("1000\n")
        self.cnf = self.dir / "ca.cnf"
        self.cnf.write_text(
            "[ca]\ndefault_ca = d\n[d]\ndir = {d}\ndatabase = {d}/index.txt\n"
            "new_certs_dir = {d}/new\ncertificate = {d}/ca.crt\nprivate_key = {d}/ca.key\n"
            "serial = {d}/serial\ncrlnumber = {d}/crlnumber\ndefault_md = sha256\n"
            "default_crl_days = 2\npolicy = any\nunique_subject = no\n"
            "[any]\ncommonName = supplied\n"
            "[client]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n"
            .format(d=self.dir))
        self.crt = str(self.dir / "ca.crt")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-days", "2", "-subj", "/CN=%s" % name,
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout", str(self.dir / "ca.key"), "-out", self.crt)

    def client(self, name, start=None, end=None):
        """(certificate, key) of a client; start/end: datetimes (UTC)."""
        key, csr, crt = (str(self.dir / (name + ext)) for ext in (".key", ".csr", ".crt"))
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", "/CN=%s" % name, "-keyout", key, "-out", csr)
        now = datetime.datetime.now(datetime.timezone.utc)
        start = start or now - datetime.timedelta(hours=1)
        end = end or now + datetime.timedelta(days=1)
        fmt = "%Y%m%d%H%M%SZ"
        openssl("ca", "-batch", "-config", str(self.cnf), "-extensions", "client",
                "-startdate", start.strftime(fmt), "-enddate", end.strftime(fmt),
                "-in", csr, "-out", crt)
        return crt, key

    def revoke(self, crt):
        """Revoke crt; returns the path of a CRL that says so."""
        openssl("ca", "-config", str(self.cnf), "-revoke", crt)
        crl = str(self.dir / "ca.crl")
        openssl("ca", "-config", str(self.cnf), "-gencrl", "-out", crl)
        return crl


def outcome(port, server_cert, cert=None, **kw):
    """'ok' when bytes echo through, else the client's error, as text.
    With TLS 1.3 the server judges the client's certificate after the
    client's handshake is done, so the refusal may come with the read."""
    ctx = client_ctx(server_cert, **kw)
    if cert is not None:
        ctx.load_cert_chain(*cert)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"ping")
            got = s.recv(4)
            return "ok" if got == b"ping" else "eof"
    except (ssl.SSLError, OSError) as e:
        return "refused: %s" % e
    finally:
        raw.close()


def tls_counts(d, n_failures):
    """The TLS counters once tls_failures reached n_failures."""
    st = d.wait_stats(lambda st: st["tls_failures"] == n_failures)
    assert st["tls_failures"] == n_failures, st
    return {k: st["tls_fail_" + k] for k in REASONS}, {k: st[k] for k in DONE}


def fails(**only):
    return {k: only.get(k, 0) for k in REASONS}


def test_required_client_certificate_and_each_failure_by_reason(esockd, tmp_path):
    ca, stranger = CA(tmp_path, "ca"), CA(tmp_path, "stranger")
    server_cert, server_key = make_cert(tmp_path, "server")
    good = ca.client("good")
    now = datetime.datetime.now(datetime.timezone.utc)
    expired = ca.client("expired", start=now - datetime.timedelta(days=3),
                        end=now - datetime.timedelta(days=1))
    revoked = ca.client("revoked")
    crl = ca.revoke(revoked[0])
    unknown = stranger.client("unknown")
    d = esockd.start(listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_client_ca": ca.crt, "tls_verify_client": "required", "tls_crl": crl}])

    assert outcome(d.port, server_cert, good) == "ok"
    assert outcome(d.port, server_cert) != "ok"
    assert tls_counts(d, 1)[0] == fails(no_cert=1)
    assert outcome(d.port, server_cert, unknown) != "ok"
    assert tls_counts(d, 2)[0] == fails(no_cert=1, unknown_ca=1)
    assert outcome(d.port, server_cert, expired) != "ok"
    assert tls_counts(d, 3)[0] == fails(no_cert=1, unknown_ca=1, expired=1)
    # The alert may lose the race with the close (TLS 1.3): the client
    # sees a refusal, the counter says which.
    assert outcome(d.port, server_cert, revoked) != "ok"
    failed, done = tls_counts(d, 4)
    assert failed == fails(no_cert=1, unknown_ca=1, expired=1, revoked=1)
    # Each refusal was a handshake that failed, not one done.
    assert sum(done.values()) == 1, done


def test_optional_client_certificate_lets_none_through_but_not_a_bad_one(esockd, tmp_path):
    ca, stranger = CA(tmp_path, "ca"), CA(tmp_path, "stranger")
    server_cert, server_key = make_cert(tmp_path, "server")
    d = esockd.start(listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_client_ca": ca.crt, "tls_verify_client": "optional"}])

    assert outcome(d.port, server_cert) == "ok"
    assert outcome(d.port, server_cert, ca.client("good")) == "ok"
    assert outcome(d.port, server_cert, stranger.client("unknown")) != "ok"
    failed, done = tls_counts(d, 1)
    assert failed == fails(unknown_ca=1)
    assert done == {"tls12_full": 0, "tls12_resumed": 0, "tls13_full": 2,
                    "tls13_resumed": 0}, done


def test_the_certificate_request_names_the_client_cas(esockd, tmp_path):
    ca = CA(tmp_path, "Clients-CA")
    server_cert, server_key = make_cert(tmp_path, "server")
    d = esockd.start(listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_client_ca": ca.crt, "tls_verify_client": "optional"}])
    r = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % d.port,
                        "-tls1_2", "-CAfile", server_cert],
                       input=b"", capture_output=True, timeout=20)
    assert b"Acceptable client certificate CA names\nCN = Clients-CA" in r.stdout, r.stdout[-800:]


def alpn_outcome(port, cert, protocols):
    ctx = client_ctx(cert)
    if protocols is not None:
        ctx.set_alpn_protocols(protocols)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
            return s.selected_alpn_protocol()
    except ssl.SSLError as e:
        return "refused: %s" % e
    finally:
        raw.close()


def test_alpn_agreed_in_server_order_none_offered_and_no_overlap(esockd, tmp_path):
    server_cert, server_key = make_cert(tmp_path, "server")
    d = esockd.start(listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_alpn": ["h2", "http/1.1"]}])
    assert alpn_outcome(d.port, server_cert, ["http/1.1", "h2"]) == "h2"
    assert alpn_outcome(d.port, server_cert, ["http/1.1"]) == "http/1.1"
    assert alpn_outcome(d.port, server_cert, None) is None
    got = alpn_outcome(d.port, server_cert, ["spdy/3", "imap"])
    assert got.startswith("refused") and "no application protocol" in got, got
    assert tls_counts(d, 1)[0] == fails(no_alpn=1)


def session_pair(port, cert, **kw):
    """A full handshake, then one that resumes its session: the second's
    session_reused.  A byte is echoed first, so the ticket has come."""
    ctx = client_ctx(cert, **kw)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
            assert not s.session_reused
            session = s.session
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost", session=session) as s:
            s.sendall(b"y")
            assert s.recv(1) == b"y"
            return s.version(), s.session_reused


def test_versions_and_resumption_are_counted_and_bad_clients_by_reason(esockd, tmp_path):
    server_cert, server_key = make_cert(tmp_path, "server")
    d = esockd.start(listeners=[
        {"name": "tls", "tls_certificate": server_cert, "tls_key": server_key},
        {"name": "tls13", "tls_certificate": server_cert, "tls_key": server_key,
         "tls_min_version": "1.3"}])
    assert session_pair(d.port, server_cert) == ("TLSv1.3", True)
    assert session_pair(d.port, server_cert,
                        maximum_version=ssl.TLSVersion.TLSv1_2) == ("TLSv1.2", True)
    st = d.stats()["tls"]
    assert {k: st[k] for k in DONE} == {"tls12_full": 1, "tls12_resumed": 1,
                                        "tls13_full": 1, "tls13_resumed": 1}, st

    # A TLS 1.2 client on a 1.3-only listener; plain text on a TLS port.
    port13 = d.ports["tls13"]
    assert outcome(port13, server_cert, maximum_version=ssl.TLSVersion.TLSv1_2) != "ok"
    with socket.create_connection(("127.0.0.1", port13), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            s.recv(100)     # an alert, an EOF or a reset: closed
        except ConnectionResetError:
            pass
    assert tls_counts_of(d, "tls13", 2) == fails(version=1, plaintext=1)


def tls_counts_of(d, name, n_failures):
    st = d.wait_stats(lambda st: st["tls_failures"] == n_failures, name=name)
    assert st["tls_failures"] == n_failures, st
    return {k: st["tls_fail_" + k] for k in REASONS}


def test_a_cipher_list_of_one_suite_serves_a_client_that_has_it(esockd, tmp_path):
    server_cert, server_key = make_cert(tmp_path, "server")     # ECDSA P-256
    d = esockd.start(listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_max_version": "1.2", "tls_ciphers": "ECDHE-ECDSA-AES128-GCM-SHA256",
        "tls_groups": "P-256"}])
    ctx = client_ctx(server_cert)
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == "TLSv1.2"
            assert s.cipher()[0] == "ECDHE-ECDSA-AES128-GCM-SHA256", s.cipher()
    ctx = client_ctx(server_cert)
    ctx.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384")
    with socket.create_connection(("127.0.0.1", d.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert tls_counts(d, 1)[0] == fails(no_cipher=1)


def test_what_openssl_refuses_is_an_error_at_its_line(tmp_path):
    cert, key = make_cert(tmp_path, "a")
    head = '  tls_certificate = "%s";\n  tls_key = "%s";\n' % (cert, key)
    conf, err = refused_by_t(tmp_path, head + '  tls_ciphers = "NO-SUCH-CIPHER";\n')
    assert "%s:4: listener 't': OpenSSL refuses tls_ciphers: no cipher match" % conf in err, err
    conf, err = refused_by_t(tmp_path, head + '  tls_ciphersuites = "TLS_NOPE";\n')
    assert "%s:4: listener 't': OpenSSL refuses tls_ciphersuites: no cipher match" % conf \
        in err, err
    conf, err = refused_by_t(tmp_path, head + '  tls_groups = "X25519:NOPE";\n')
    assert "%s:4: listener 't': OpenSSL refuses tls_groups: " % conf in err, err
    conf, err = refused_by_t(tmp_path, head + '  tls_verify_client = "required";\n'
                        '  tls_client_ca = "%s/missing.pem";\n' % tmp_path)
    assert "%s:5: listener 't': cannot load the client CAs: " % conf in err, err
    # Without OpenSSL: every error of the file, each at its line.
    conf, err = refused_by_t(tmp_path, '  tls_alpn = ( "h2" );\n  tls_ciphers = "HIGH";\n')
    assert "%s:2: 'tls_alpn' in listener 't' needs 'tls_certificate'" % conf in err, err
    assert "%s:3: 'tls_ciphers' in listener 't' needs 'tls_certificate'" % conf in err, err
    conf, err = refused_by_t(tmp_path, head + '  tls_verify_client = "required";\n'
                        '  tls_min_version = "1.3";\n  tls_max_version = "1.2";\n')
    assert "%s:4: 'tls_verify_client' in listener 't' needs 'tls_client_ca'" % conf in err, err
    assert "%s:6: 'tls_max_version' in listener 't' is older than tls_min_version" % conf \
        in err, err


def test_the_reports_show_the_tls_counters(esockd, tmp_path):
    server_cert, server_key = make_cert(tmp_path, "server")
    d = esockd.start(metrics="127.0.0.1:%d" % free_port(), listeners=[{
        "name": "tls", "tls_certificate": server_cert, "tls_key": server_key,
        "tls_alpn": ["h2"]}])
    assert alpn_outcome(d.port, server_cert, ["h2"]) == "h2"
    assert alpn_outcome(d.port, server_cert, ["http/1.1"]).startswith("refused")
    tls_counts(d, 1)
    lst = listener_json(d)
    assert lst["tls_failures"] == 1
    assert lst["tls"] == dict({"tls_fail_" + k: 0 for k in REASONS}, tls_fail_no_alpn=1,
                              tls12_full=0, tls12_resumed=0, tls13_full=1,
                              tls13_resumed=0), lst
    text = ctl_ok(d, "stats")
    assert "TLS handshakes, by version:" in text and "TLS13_FULL" in text, text
    assert "TLS handshake failures, by reason:" in text and "NO_ALPN" in text, text

    status, _, body = fetch("http://%s/metrics" % d.top["metrics"])
    assert status == 200
    samples, _, types = parse_exposition(body.decode())
    assert types["esockd_tls_handshake_seconds"] == "histogram"
    assert metric(samples, "esockd_tls_handshakes_total", listener="tls", version="1.3",
                  resumed="false") == 1
    assert metric(samples, "esockd_tls_handshakes_total", listener="tls", version="1.2",
                  resumed="true") == 0
    for r in REASONS:
        assert metric(samples, "esockd_tls_handshake_failures_by_reason_total",
                      listener="tls", reason=r) == (r == "no_alpn"), r
    assert metric(samples, "esockd_tls_handshake_failures_total", listener="tls") == 1
    assert metric(samples, "esockd_tls_handshake_seconds_count", listener="tls") == 1
    assert metric(samples, "esockd_tls_handshake_seconds_bucket", listener="tls",
                  le="+Inf") == 1
    assert metric(samples, "esockd_tls_handshake_seconds_bucket", listener="tls",
                  le="5") == 1
    assert 0 < metric(samples, "esockd_tls_handshake_seconds_sum", listener="tls") < 5, body.decode()[-1500:]


def chained_client(ca, tmp_path):
    """A client certificate signed by an intermediate CA that ca signed:
    (chain file with the leaf then the intermediate, key)."""
    d = tmp_path / "chain"
    d.mkdir()
    ext = d / "ext.cnf"
    ext.write_text("[inter]\nbasicConstraints = critical,CA:TRUE\n"
                   "keyUsage = critical,keyCertSign,cRLSign\n"
                   "[leaf]\nbasicConstraints = CA:FALSE\nextendedKeyUsage = clientAuth\n")
    ik, ic, lk, lc = (str(d / n) for n in ("inter.key", "inter.crt", "leaf.key", "leaf.crt"))
    for key, csr, cn in ((ik, d / "inter.csr", "inter"), (lk, d / "leaf.csr", "leaf")):
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-subj", "/CN=%s" % cn, "-keyout", key, "-out", str(csr))
    openssl("x509", "-req", "-in", str(d / "inter.csr"), "-CA", ca.crt,
            "-CAkey", str(ca.dir / "ca.key"), "-CAcreateserial", "-days", "1",
            "-extfile", str(ext), "-extensions", "inter", "-out", ic)
    openssl("x509", "-req", "-in", str(d / "leaf.csr"), "-CA", ic, "-CAkey", ik,
            "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-extensions", "leaf",
            "-out", lc)
    chain = str(d / "leaf-chain.pem")
    with open(chain, "w") as f:
        f.write(open(lc).read() + open(ic).read())
    return chain, lk


def test_verify_depth_limits_the_client_s_chain(esockd, tmp_path):
    """A client certificate under an intermediate CA: refused with
    tls_verify_depth = 0 (counted as a bad certificate), served with the
    default depth of 9."""
    ca = CA(tmp_path, "root")
    client = chained_client(ca, tmp_path)
    server_cert, server_key = make_cert(tmp_path, "server")
    base = {"tls_certificate": server_cert, "tls_key": server_key,
            "tls_client_ca": ca.crt, "tls_verify_client": "required"}
    d = esockd.start(listeners=[dict(base, name="shallow", tls_verify_depth=0),
                                dict(base, name="deep")])
    assert outcome(d.ports["deep"], server_cert, client) == "ok"
    assert outcome(d.ports["shallow"], server_cert, client) != "ok"
    st = d.wait_stats(lambda st: st["tls_failures"] == 1, name="shallow")
    assert st["tls_failures"] == 1 and st["tls_fail_bad_cert"] == 1, st
    assert d.stats()["deep"]["tls_failures"] == 0
