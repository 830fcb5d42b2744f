"""The PROXY header that a load balancer sends esockd first
(proxy_protocol_in): read from trusted sources only, split over segments
or not, v1 and v2, LOCAL health checks, sources that may send none; the
client it names is then the client for the rules, the per-source limit,
the log and the header esockd sends its backend, with the TLVs passed on;
every refusal counted by its reason."""
import socket
import struct
import time

import pytest

from esockd_helpers import connect, recv_exact, wait_until
from test_proxy_protocol import crc32c, read_line, read_proxy_v2
from test_tls import client_ctx, make_cert

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
FAILS = ["proxy_fail_bad_signature", "proxy_fail_bad_version", "proxy_fail_bad_family",
         "proxy_fail_bad_length", "proxy_fail_bad_address", "proxy_fail_bad_checksum",
         "proxy_fail_timeout", "proxy_fail_untrusted"]


def v1(src, dst, sport, dport, fam="TCP4"):
    return ("PROXY %s %s %s %d %d\r\n" % (fam, src, dst, sport, dport)).encode()


def tlv(t, value):
    return struct.pack("!BH", t, len(value)) + value


def v2(src="203.0.113.7", dst="198.51.100.1", sport=40000, dport=443, tlvs=b"",
       command=1, fam=None):
    if fam is None:
        fam = 0x21 if ":" in src else 0x11
    if fam == 0x11:
        addr = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
        addr += struct.pack("!HH", sport, dport)
    elif fam == 0x21:
        addr = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
        addr += struct.pack("!HH", sport, dport)
    else:
        addr = b""
    body = addr + tlvs
    return SIG + bytes([0x20 | command, fam]) + struct.pack("!H", len(body)) + body


def header_then_echo(conn, record):
    """The backend: read esockd's header, say who it names, then echo."""
    hdr = read_proxy_v2(conn)
    record["header"] = hdr
    conn.sendall(("%s %s %s %s\n" % (hdr.get("src"), hdr.get("sport"), hdr.get("dst"),
                                       hdr.get("dport"))).encode())
    while True:
        data = conn.recv(65536)
        if not data:
            break
        conn.sendall(data)


def start(esockd, be, workers=2, **lst):
    spec = {"name": "pp", "proxy_protocol_in": "any", "proxy_sources": ["127.0.0.1/32"],
            "backend": {"socket": be.path, "proxy_protocol": True, "connect_timeout": 1000}}
    spec.update(lst)
    return esockd.start(listeners=[spec], workers=workers)


def closed_by_eof(sock, timeout=5.0):
    """The client sees its connection end (EOF or reset) within timeout."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def settled(d, **want):
    """Stats once every open connection is counted closed."""
    return d.wait_stats(lambda st: st["connections"] == 0 and
                        all(st[k] == v for k, v in want.items()))


def test_v1_split_over_segments_names_the_client_and_the_bytes_after_it_arrive(esockd):
    """A v1 line sent a few bytes at a time, the client's first bytes in
    the same segment as its end: the backend's header names the client
    of the line, and the bytes after it come through whole and once."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_protocol_in="v1")
    line = v1("192.0.2.33", "192.0.2.1", 51000, 8443)
    c = connect(d.port)
    try:
        for i in range(0, len(line) - 5, 7):
            c.sendall(line[i:i + 7])
            time.sleep(0.02)
        c.sendall(line[i + 7:] + b"hello after the header\n")
        assert read_line(c) == "192.0.2.33 51000 192.0.2.1 8443\n"
        assert recv_exact(c, 23) == b"hello after the header\n"
    finally:
        c.close()
    st = settled(d, closed=1)
    assert st["accepted"] == 1 and st["closed_normal"] == 1, st
    assert sum(st[k] for k in FAILS) == 0, st


def test_v2_ipv6_with_tlvs_passed_on_and_esockds_unique_id_wins(esockd):
    """v2 over IPv6 with ALPN, AUTHORITY, a custom TLV and a UNIQUE_ID:
    the backend gets the IPv6 client, ALPN, AUTHORITY and the custom TLV
    as sent, and esockd's own unique id, not the balancer's."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_protocol_in="v2")
    tlvs = (tlv(0x01, b"h2") + tlv(0x02, b"api.example") + tlv(0xE3, b"\x00tenant-42") +
            tlv(0x05, b"balancer-id-1"))
    hdr = v2("2001:db8::5", "2001:db8::1", 1234, 443, tlvs=tlvs, fam=0x21)
    c = connect(d.port)
    try:
        c.sendall(hdr + b"ping\n")
        assert read_line(c) == "2001:db8::5 1234 2001:db8::1 443\n"
        assert recv_exact(c, 5) == b"ping\n"
    finally:
        c.close()
    wait_until(lambda: be.sessions and "header" in be.sessions[0], 5)
    t = be.sessions[0]["header"]["tlvs"]
    assert t["alpn"] == "h2" and t["authority"] == "api.example", t
    assert t["0xe3"] == "\x00tenant-42", t
    assert t["unique_id"] != "balancer-id-1", t
    assert "crc32c" not in t, t
    raw = be.sessions[0]["header"]
    assert raw["family"] == 0x21, raw
    st = settled(d, closed=1)
    assert st["closed_normal"] == 1, st


def test_local_command_is_a_health_check_served_as_the_connection_itself(esockd):
    """A v2 LOCAL header (a balancer's health check): served, with the
    connection's own addresses, and counted as no failure."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be)
    c = connect(d.port)
    try:
        c.sendall(v2(command=0, fam=0x00) + b"hc\n")
        src, sport = c.getsockname()
        assert read_line(c) == "%s %d 127.0.0.1 %d\n" % (src, sport, d.port)
        assert recv_exact(c, 3) == b"hc\n"
    finally:
        c.close()
    st = settled(d, closed=1)
    assert st["closed_normal"] == 1 and sum(st[k] for k in FAILS) == 0, st


def test_a_header_from_an_untrusted_source_is_refused_and_counted(esockd):
    """127.0.0.2 is in neither list: refused at once, never admitted."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be)
    c = connect(d.port, source="127.0.0.2")
    try:
        c.sendall(v1("192.0.2.9", "192.0.2.1", 1, 2))
        assert closed_by_eof(c)
    finally:
        c.close()
    st = d.wait_stats(lambda st: st["proxy_fail_untrusted"] == 1)
    assert st["proxy_fail_untrusted"] == 1 and st["accepted"] == 0, st
    assert not be.sessions


def test_optional_sources_may_send_no_header_but_not_a_header(esockd):
    """proxy_optional_sources: a client from there without a header is
    served as itself; one that sends nothing is served once the header's
    time is up; one that sends a header, not being in proxy_sources, is
    refused as untrusted."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_optional_sources=["127.0.0.3/32"], proxy_header_timeout=1)
    c = connect(d.port, source="127.0.0.3")
    try:
        c.sendall(b"GET /health\n")
        assert read_line(c).startswith("127.0.0.3 ")
        assert recv_exact(c, 12) == b"GET /health\n"
    finally:
        c.close()
    c = connect(d.port, source="127.0.0.3")     # silent: served after 1 s
    try:
        t0 = time.monotonic()
        assert read_line(c, timeout=5).startswith("127.0.0.3 ")
        assert time.monotonic() - t0 >= 0.9
    finally:
        c.close()
    c = connect(d.port, source="127.0.0.3")
    try:
        c.sendall(v1("192.0.2.9", "192.0.2.1", 1, 2))
        assert closed_by_eof(c)
    finally:
        c.close()
    st = settled(d, closed=3)
    assert st["closed_proxy_failed"] == 1 and st["proxy_fail_untrusted"] == 1, st
    assert st["accepted"] == 3, st


@pytest.mark.parametrize("payload,reason", [
    (b"GET / HTTP/1.0\r\n\r\n", "proxy_fail_bad_signature"),
    (SIG + b"\x31\x11\x00\x0c" + bytes(12), "proxy_fail_bad_version"),
    (SIG + b"\x21\x51\x00\x0c" + bytes(12), "proxy_fail_bad_family"),
    (SIG + b"\x21\x11\x00\x04" + bytes(4), "proxy_fail_bad_length"),
    (b"PROXY TCP4 192.0.2.300 192.0.2.1 1 2\r\n", "proxy_fail_bad_address"),
    (b"PROXY UNKNOWN " + b"x" * 120, "proxy_fail_bad_length"),
    (b"PROXY TCP4 192.0.2", "proxy_fail_timeout"),
])
def test_a_malformed_header_closes_the_connection_counted_by_reason(esockd, payload, reason):
    """Each kind of bad header: the client is closed, the reason counted
    once, the connection counted closed as proxy_failed, and the backend
    never sees it."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_header_timeout=1)
    c = connect(d.port)
    try:
        c.sendall(payload)
        assert closed_by_eof(c, timeout=5)
    finally:
        c.close()
    st = settled(d, closed=1)
    assert st[reason] == 1 and sum(st[k] for k in FAILS) == 1, st
    assert st["closed_proxy_failed"] == 1 and st["accepted"] == 1, st
    assert not be.sessions


def test_a_wrong_crc32c_is_refused_and_a_right_one_served(esockd):
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be)
    body_tlv = tlv(0x03, b"\0\0\0\0")
    hdr = v2("192.0.2.5", "192.0.2.1", 5, 6, tlvs=body_tlv)
    good = hdr[:-4] + struct.pack("!I", crc32c(hdr))
    bad = hdr[:-4] + struct.pack("!I", crc32c(hdr) ^ 1)
    c = connect(d.port)
    try:
        c.sendall(good + b"x\n")
        assert read_line(c) == "192.0.2.5 5 192.0.2.1 6\n"
    finally:
        c.close()
    c = connect(d.port)
    try:
        c.sendall(bad + b"x\n")
        assert closed_by_eof(c)
    finally:
        c.close()
    st = settled(d, closed=2)
    assert st["proxy_fail_bad_checksum"] == 1, st


def test_rules_and_the_per_source_limit_use_the_address_of_the_header(esockd):
    """deny 10.66.0.0/16: a client the header says is 10.66.1.1 is
    refused (counted rejected_rule, closed as refused), one from
    10.77.1.1 served; max_connections_per_source = 1 counts the header's
    clients, though every connection comes from the balancer's 127.0.0.1."""
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, deny=["10.66.0.0/16"], max_connections_per_source=1)
    held = []
    try:
        for src in ("10.77.1.1", "10.77.1.2"):
            c = connect(d.port)
            held.append(c)
            c.sendall(v1(src, "192.0.2.1", 1000, 80))
            assert read_line(c).startswith(src + " ")
        c = connect(d.port)
        held.append(c)
        c.sendall(v1("10.66.1.1", "192.0.2.1", 1000, 80))
        assert closed_by_eof(c)
        c = connect(d.port)
        held.append(c)
        c.sendall(v1("10.77.1.1", "192.0.2.1", 1001, 80))   # its second
        assert closed_by_eof(c)
        st = d.wait_stats(lambda st: st["closed"] == 2)
        assert st["rejected_rule"] == 1 and st["rejected_source"] == 1, st
        assert st["closed_refused"] == 2 and st["connections"] == 2, st
    finally:
        for c in held:
            c.close()
    log = d.log()
    assert "10.66.1.1" in log and "allow/deny" in log, log[-2000:]


def test_on_a_tls_listener_the_header_comes_before_the_client_hello(esockd, tmp_path):
    """As HAProxy's accept-proxy with ssl on one bind: header, then TLS."""
    cert, key = make_cert(tmp_path, "server")
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, tls_certificate=cert, tls_key=key)
    raw = connect(d.port)
    raw.sendall(v2("198.51.100.20", "198.51.100.1", 4321, 443))
    s = client_ctx(cert).wrap_socket(raw, server_hostname="localhost")
    try:
        assert read_line(s) == "198.51.100.20 4321 198.51.100.1 443\n"
        s.sendall(b"secret\n")
        assert recv_exact(s, 7) == b"secret\n"
    finally:
        s.close()
    t = be.sessions[0]["header"]["tlvs"]
    assert t["ssl"]["client"] & 1 and t["authority"] == "localhost", t


def _binary(name, fallback):
    import os
    import shutil
    path = shutil.which(name) or (fallback if os.access(fallback, os.X_OK) else None)
    if path is None:
        pytest.skip("%s is not installed (make deps installs Debian's %s)" % (name, name))
    return path


class _Peer:
    """A balancer we started, stopped by its pid only."""

    def __init__(self, argv, logpath):
        import subprocess
        self.logpath = logpath
        self.log = open(logpath, "w")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=self.log)

    def wait_port(self, port):
        """Until the port is taken (bind fails), without connecting: a
        probe would reach esockd through the balancer as a client."""
        def up():
            assert self.proc.poll() is None, self.logpath.read_text()
            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                    return False
                except OSError:
                    return True
        wait_until(up, 10, message="the balancer's port")

    def stop(self):
        from esockd_helpers import _terminate
        _terminate(self.proc, timeout=5.0)
        self.log.close()


HAPROXY_IN_CFG = """global
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend plain
    bind 127.0.0.1:{p1}
    default_backend v1
frontend tls
    bind 127.0.0.1:{p2} ssl crt {pem} alpn h2,http/1.1
    unique-id-format hap-%{{+X}}o\\ %ci-%cp
    default_backend v2
backend v1
    server e 127.0.0.1:{esockd} send-proxy source 127.0.0.2
backend v2
    server e 127.0.0.1:{esockd} send-proxy-v2 proxy-v2-options ssl,authority,unique-id source 127.0.0.2
"""


def test_haproxy_in_front_with_send_proxy_and_send_proxy_v2(esockd, tmp_path):
    """HAProxy 2.6 in front, connecting to esockd from 127.0.0.2 (the only
    proxy_sources): with send-proxy (v1) the backend sees the client's
    own address and port; with send-proxy-v2 and the ssl, authority and
    unique-id options (HAProxy terminating TLS) it sees them too, and
    the SSL TLV, the SNI name and HAProxy's unique id passed on (esockd
    is a plain listener here, so the SSL TLV is the balancer's)."""
    from esockd_helpers import free_port
    hap = _binary("haproxy", "/usr/sbin/haproxy")
    cert, key = make_cert(tmp_path, "server")
    pem = tmp_path / "hap.pem"
    pem.write_text(open(cert).read() + open(key).read())
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_sources=["127.0.0.2/32"])
    p1, p2 = free_port(), free_port()
    cfg = tmp_path / "hap.cfg"
    cfg.write_text(HAPROXY_IN_CFG.format(p1=p1, p2=p2, pem=pem, esockd=d.port))
    peer = _Peer([hap, "-db", "-f", str(cfg)], tmp_path / "hap.log")
    try:
        peer.wait_port(p1)
        c = connect(p1, source="127.0.0.5")
        try:
            c.sendall(b"via v1\n")
            src, sport = c.getsockname()
            assert read_line(c) == "127.0.0.5 %d 127.0.0.1 %d\n" % (sport, p1)
            assert recv_exact(c, 7) == b"via v1\n"
        finally:
            c.close()
        raw = connect(p2, source="127.0.0.6")
        sport = raw.getsockname()[1]
        ctx = client_ctx(cert)
        ctx.set_alpn_protocols(["h2"])
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        try:
            s.sendall(b"via v2\n")
            assert read_line(s) == "127.0.0.6 %d 127.0.0.1 %d\n" % (sport, p2)
            assert recv_exact(s, 7) == b"via v2\n"
        finally:
            s.close()
    finally:
        peer.stop()
    hdrs = [x["header"] for x in be.sessions if "header" in x]
    assert sorted(h["dport"] for h in hdrs) == sorted([p1, p2]), hdrs
    t = [h for h in hdrs if h["dport"] == p2][0]["tlvs"]
    assert t["authority"] == "localhost" and t["alpn"] == "h2", t
    assert t["ssl"]["client"] & 1 and t["ssl"]["sub"].get("version", "").startswith("TLSv1"), t
    # esockd's own unique id wins; HAProxy's is not passed on beside it
    assert not t["unique_id"].startswith("hap-"), t
    st = settled(d, closed=2)
    assert st["closed_normal"] == 2 and sum(st[k] for k in FAILS) == 0, st


def test_nginx_stream_proxy_protocol_in_front(esockd, tmp_path):
    """nginx's stream proxy with proxy_protocol on (v1) from 127.0.0.2:
    the backend sees the client's own address."""
    import os
    from esockd_helpers import free_port
    ngx = _binary("nginx", "/usr/sbin/nginx")
    mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
    if not os.path.exists(mod):
        pytest.skip("nginx's stream module is not installed (libnginx-mod-stream)")
    be = esockd.py_backend(header_then_echo)
    d = start(esockd, be, proxy_protocol_in="v1", proxy_sources=["127.0.0.2/32"])
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text("""load_module %s;
worker_processes 1;
error_log %s/ngx-error.log warn;
pid %s/ngx.pid;
events { worker_connections 64; }
stream {
    server {
        listen 127.0.0.1:%d;
        proxy_pass 127.0.0.1:%d;
        proxy_bind 127.0.0.2;
        proxy_protocol on;
    }
}
""" % (mod, tmp_path, tmp_path, port, d.port))
    peer = _Peer([ngx, "-c", str(conf), "-p", str(tmp_path), "-e", str(tmp_path / "ngx-error.log"),
                  "-g", "daemon off;"], tmp_path / "ngx.log")
    try:
        peer.wait_port(port)
        c = connect(port, source="127.0.0.7")
        try:
            c.sendall(b"via nginx\n")
            sport = c.getsockname()[1]
            assert read_line(c) == "127.0.0.7 %d 127.0.0.1 %d\n" % (sport, port)
            assert recv_exact(c, 10) == b"via nginx\n"
        finally:
            c.close()
    finally:
        peer.stop()
    st = settled(d, closed=1)
    assert st["closed_normal"] == 1 and sum(st[k] for k in FAILS) == 0, st
