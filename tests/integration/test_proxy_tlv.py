"""The PROXY v2 header's TLVs: what a backend learns of the client's TLS
(PP2_TYPE_SSL, AUTHORITY, ALPN), the connection's unique id that esockd's
log carries too, and the CRC32c; checked by this suite's own parser
(test_proxy_protocol.read_proxy_v2) and by HAProxy reading them."""
import os
import re
import shutil
import socket
import subprocess

import pytest

from esockd_helpers import _terminate, assert_echo, connect, record_until_eof, recv_exact, wait_until
from test_proxy_protocol import read_proxy_v2
from test_tls import client_ctx, make_cert


def header_then_echo(conn, record):
    """Parse the header (the parser asserts its layout), then echo."""
    record["header"] = read_proxy_v2(conn)
    record_until_eof(conn, record, echo=True)


def tls_client(port, cert, sni="localhost", alpn=None):
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    ctx = client_ctx(cert)
    if alpn:
        ctx.set_alpn_protocols(alpn)
    try:
        return ctx.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def tls_echo(s, data):
    s.sendall(data)
    assert recv_exact(s, len(data)) == data


def conn_ids(log):
    return re.findall(r"\[conn ([0-9a-f]+-\d+-\d+)\]", log)


def test_a_tls_client_s_identity_reaches_the_backend(esockd, tmp_path):
    """A TLS client with SNI and an ALPN offer: the backend's header has
    PP2_TYPE_SSL with the version and cipher the client negotiated, our
    certificate's algorithms, no client certificate (so no CN and a
    non-zero verify result, as the spec says), AUTHORITY = the SNI name,
    ALPN only if one was agreed, and a UNIQUE_ID."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "tls_alpn": ["http/1.1", "h2"],
                                 "backend": {"socket": be.path, "proxy_protocol": True}}])
    with tls_client(d.port, cert, alpn=["h2", "http/1.1"]) as s:
        tls_echo(s, b"who am I\n")
        version, cipher, alpn = s.version(), s.cipher()[0], s.selected_alpn_protocol()
    t = be.sessions[0]["header"]["tlvs"]
    ssl_tlv = t["ssl"]
    assert ssl_tlv["client"] == 0x01, t          # PP2_CLIENT_SSL, no certificate
    assert ssl_tlv["verify"] != 0, t             # "non-zero otherwise"
    assert ssl_tlv["sub"] == {"version": version, "cipher": cipher,
                              "sig_alg": "ecdsa-with-SHA256", "key_alg": "EC256"}, t
    assert ssl_tlv["sub_order"] == ["version", "cipher", "sig_alg", "key_alg"], t
    assert t["authority"] == "localhost", t
    # The server's preference (tls_alpn) wins over the client's order.
    assert alpn == "http/1.1" and t["alpn"] == "http/1.1", (alpn, t)
    assert "crc32c" not in t and re.fullmatch(r"[0-9a-f]+-\d+-\d+", t["unique_id"]), t


def test_no_sni_no_authority(esockd, tmp_path):
    """A client that sends no server name: no AUTHORITY TLV."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "backend": {"socket": be.path, "proxy_protocol": True}}])
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    ctx = client_ctx(cert)
    ctx.check_hostname = False
    with ctx.wrap_socket(raw) as s:
        tls_echo(s, b"anonymous\n")
    t = be.sessions[0]["header"]["tlvs"]
    assert t["order"] == ["unique_id", "ssl"], t


def test_each_connection_has_its_own_id_and_the_log_names_it(esockd):
    """Two connections (over two workers or one) get two ids; with
    log_level debug, each one's close line in esockd's log ends with the
    id its backend was sent."""
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(log_level="debug", listeners=[{"name": "pp", "backend": {
        "socket": be.path, "proxy_protocol": True}}])
    for i in range(2):
        c = connect(d.port)
        try:
            assert_echo(c, b"hello %d\n" % i)
        finally:
            c.close()
    wait_until(lambda: len(be.sessions) == 2 and all("header" in r for r in be.sessions), 5,
               message="two headers")
    ids = [r["header"]["tlvs"]["unique_id"] for r in be.sessions]
    assert ids[0] != ids[1], ids
    for uid in ids:
        wait_until(lambda: ("connection closed: " in d.log() and
                            "[conn %s]" % uid in d.log()), 5,
                   message="the close line of connection %s" % uid)
    closes = [ln for ln in d.log().splitlines() if "connection closed:" in ln]
    assert sorted(conn_ids("\n".join(closes))) == sorted(ids), (closes, ids)


def test_a_plain_listener_sends_the_unique_id_only_and_the_crc_when_asked(esockd):
    """No TLS: UNIQUE_ID and nothing else; with proxy_crc32c a CRC32C too,
    which the parser checks against its own bitwise CRC32c."""
    plain = esockd.py_backend(header_then_echo)
    crc = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[
        {"name": "plain", "backend": {"socket": plain.path, "proxy_protocol": True}},
        {"name": "crc", "backend": {"socket": crc.path, "proxy_protocol": True,
                                    "proxy_crc32c": True}}])
    for port in (d.ports["plain"], d.ports["crc"]):
        c = connect(port)
        try:
            assert_echo(c, b"x\n")
        finally:
            c.close()
    assert plain.sessions[0]["header"]["tlvs"]["order"] == ["unique_id"]
    t = crc.sessions[0]["header"]["tlvs"]
    assert t["order"] == ["crc32c", "unique_id"], t


def test_the_crc_covers_a_tls_header(esockd, tmp_path):
    """The CRC32C over the longest kind of header esockd sends here (SSL,
    AUTHORITY, UNIQUE_ID): the parser recomputes it."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "backend": {"socket": be.path, "proxy_protocol": True,
                                             "proxy_crc32c": True}}])
    with tls_client(d.port, cert) as s:
        tls_echo(s, b"sum\n")
    t = be.sessions[0]["header"]["tlvs"]
    assert t["order"] == ["authority", "crc32c", "unique_id", "ssl"], t


HAPROXY_CFG = """global
    maxconn 100
    log stdout format raw local0
defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 20s
    timeout server 20s
listen from_esockd
    bind unix@{front} accept-proxy
    log-format "pp authority=%[fc_pp_authority] uid=%[fc_pp_unique_id] src=%ci"
    server py unix@{back}
"""


def test_haproxy_reads_the_authority_and_unique_id(esockd, tmp_path):
    """esockd (TLS, SNI, proxy_crc32c) -> HAProxy 2.6 (accept-proxy, which
    checks the CRC) -> an echo backend: HAProxy's log shows the SNI name
    and the unique id esockd sent, which esockd's log names too."""
    hap = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                      if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if hap is None:
        pytest.skip("haproxy is not installed (make deps installs Debian's haproxy)")
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(lambda conn, record: record_until_eof(conn, record, echo=True))
    front = str(tmp_path / "hap-front.sock")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(front=front, back=be.path))
    logpath = tmp_path / "haproxy.log"
    log = open(logpath, "w")
    proc = subprocess.Popen([hap, "-db", "-f", str(cfg)], stdout=log, stderr=log)
    try:
        wait_until(lambda: os.path.exists(front) or proc.poll() is not None, 10,
                   message="haproxy's socket")
        assert proc.poll() is None, logpath.read_text()
        d = esockd.start(log_level="debug", listeners=[{
            "name": "via", "tls_certificate": cert, "tls_key": key,
            "backend": {"socket": front, "proxy_protocol": True, "proxy_crc32c": True}}])
        with tls_client(d.port, cert) as s:
            s.sendall(b"through haproxy\n")
            assert recv_exact(s, 16) == b"through haproxy\n", logpath.read_text()
        wait_until(lambda: "pp authority=" in logpath.read_text(), 10,
                   message="haproxy's log line")
        wait_until(lambda: conn_ids(d.log()), 5, message="esockd's close line")
        uid = conn_ids(d.log())[-1]
        line = [ln for ln in logpath.read_text().splitlines() if "pp authority=" in ln][0]
        assert line == "pp authority=localhost uid=%s src=127.0.0.1" % uid, (
            line, logpath.read_text())
    finally:
        _terminate(proc, timeout=5.0)
        log.close()


def test_a_client_certificate_s_name_reaches_the_backend(esockd, tmp_path):
    """With tls_verify_client = "required": the SSL TLV says a certificate
    came in this connection and in its session, the verify result is 0
    (verified), and the CN sub-TLV is the client certificate's CN."""
    from test_tls_clients import CA
    ca = CA(tmp_path, "clients")
    client = ca.client("device-7")
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "tls_client_ca": ca.crt, "tls_verify_client": "required",
                                 "backend": {"socket": be.path, "proxy_protocol": True}}])
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    ctx = client_ctx(cert)
    ctx.load_cert_chain(*client)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        tls_echo(s, b"it is me\n")
    wait_until(lambda: be.sessions and "header" in be.sessions[0], 5, message="the header")
    ssl_tlv = be.sessions[0]["header"]["tlvs"]["ssl"]
    assert ssl_tlv["client"] == 0x07, ssl_tlv      # SSL, CERT_CONN, CERT_SESS
    assert ssl_tlv["verify"] == 0, ssl_tlv
    assert ssl_tlv["sub"]["cn"] == "device-7", ssl_tlv
