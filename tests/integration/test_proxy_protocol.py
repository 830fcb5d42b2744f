"""proxy_protocol: a PROXY v2 header names the client to the backend.

The backends here parse the header themselves (the spec's layout, not
esockd's code), and one test puts HAProxy in the middle: it must accept
esockd's header (accept-proxy) and pass the same client on in its own."""
import ipaddress
import os
import shutil
import struct
import subprocess

import pytest

from esockd_helpers import (ESOCKD_BIN, _terminate, assert_echo, connect, record_until_eof,
                            recv_exact, wait_until)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def read_proxy_v2(conn):
    """Read one PROXY v2 header from conn; returns a dict of what it says."""
    head = recv_exact(conn, 16)
    assert head[:12] == SIG, "no PROXY v2 signature: %r" % head
    ver_cmd, fam, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    body = recv_exact(conn, length) if length else b""
    out = {"version": ver_cmd >> 4, "command": ver_cmd & 0xF, "family": fam,
           "length": length}
    if fam == 0x11:
        assert length == 12, length
        out["src"] = str(ipaddress.IPv4Address(body[0:4]))
        out["dst"] = str(ipaddress.IPv4Address(body[4:8]))
        out["sport"], out["dport"] = struct.unpack("!HH", body[8:12])
    elif fam == 0x21:
        assert length >= 36, length
        out["src"] = str(ipaddress.IPv6Address(body[0:16]))
        out["dst"] = str(ipaddress.IPv6Address(body[16:32]))
        out["sport"], out["dport"] = struct.unpack("!HH", body[32:36])
    return out


def header_then_echo(conn, record):
    """Parse the header, say what it said in one line, then echo."""
    hdr = read_proxy_v2(conn)
    record["header"] = hdr
    conn.sendall(("%(src)s %(sport)d %(dst)s %(dport)d\n" % hdr).encode())
    record_until_eof(conn, record, echo=True)


def first_bytes_then_echo(conn, record):
    """No header expected: record the bytes as they came, echo all."""
    record_until_eof(conn, record, echo=True)


def read_line(sock, timeout=5):
    sock.settimeout(timeout)
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = sock.recv(1)
        assert chunk, "EOF before the header line; got %r" % buf
        buf += chunk
    return buf.decode()


def test_the_backend_learns_the_ipv4_client_before_its_first_byte(esockd):
    """The client sends at once, before the backend connect is done: the
    backend reads the header (the client's own source address and port,
    and the listener's) and then exactly the client's bytes."""
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "pp", "backend": {
        "socket": be.path, "proxy_protocol": True}}])
    c = connect(d.port, source="127.0.0.2")     # not the listener's address
    try:
        c.sendall(b"early bytes\n")
        line = read_line(c)
        src, sport = c.getsockname()
        assert line == "%s %d 127.0.0.1 %d\n" % (src, sport, d.port), line
        assert src == "127.0.0.2"
        assert recv_exact(c, 12) == b"early bytes\n"
        assert_echo(c, b"and more\n")
    finally:
        c.close()
    hdr = be.sessions[0]["header"]
    assert (hdr["version"], hdr["command"], hdr["family"]) == (2, 1, 0x11), hdr
    wait_until(lambda: bytes(be.sessions[0]["received"]) == b"early bytes\nand more\n", 5,
               message="the backend's bytes after the header")


def test_the_backend_learns_the_ipv6_client(esockd):
    be = esockd.py_backend(header_then_echo)
    d = esockd.start(listeners=[{"name": "pp6", "host": "::1", "backend": {
        "socket": be.path, "proxy_protocol": True}}])
    c = connect(d.port, host="::1")
    try:
        line = read_line(c)
        sport = c.getsockname()[1]
        assert line == "::1 %d ::1 %d\n" % (sport, d.port), line
        assert_echo(c, b"six\n")
    finally:
        c.close()
    hdr = be.sessions[0]["header"]
    assert (hdr["family"], hdr["length"]) == (0x21, 36), hdr


def test_no_header_unless_asked_and_a_reload_turns_it_on(esockd):
    """Off by default: the backend's first bytes are the client's.  A
    reload that sets proxy_protocol gives the next connections a header,
    while one opened before keeps relaying as it was."""
    plain = esockd.py_backend(first_bytes_then_echo)
    d = esockd.start(listeners=[{"name": "r", "backend": {"socket": plain.path}}])
    old = connect(d.port)
    try:
        assert_echo(old, b"hello\n")
        assert bytes(plain.sessions[0]["received"]) == b"hello\n"

        be = esockd.py_backend(header_then_echo)
        d.rewrite(listeners=[{"name": "r", "bind": "127.0.0.1:%d" % d.port, "backend": {
            "socket": be.path, "proxy_protocol": True}}])
        ok, gen = d.reload()
        assert ok and gen == 2, gen
        new = connect(d.port)
        try:
            line = read_line(new)
            assert line.startswith("127.0.0.1 %d 127.0.0.1 %d" % (
                new.getsockname()[1], d.port)), line
            assert_echo(new, b"new\n")
        finally:
            new.close()
        assert_echo(old, b"still plain\n")
        assert bytes(plain.sessions[0]["received"]) == b"hello\nstill plain\n"
    finally:
        old.close()


def test_proxy_protocol_must_be_a_boolean(esockd, tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text('listeners = ( { name = "a"; bind = "127.0.0.1:1";\n'
                    '  backend = { socket = "/x.sock";\n'
                    '    proxy_protocol = "v2"; }; } );\n')
    r = subprocess.run([ESOCKD_BIN, "-t", "-c", str(conf)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "%s:3:" % conf in r.stderr and "proxy_protocol" in r.stderr, r.stderr


HAPROXY_CFG = """global
    maxconn 100
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
frontend from_esockd
    bind unix@{front} accept-proxy
    default_backend to_py
backend to_py
    server py unix@{back} send-proxy-v2
"""


def test_haproxy_accepts_the_header_and_passes_the_same_client_on(esockd, tmp_path):
    """esockd -> HAProxy (accept-proxy) -> a backend (send-proxy-v2): what
    HAProxy parsed from esockd's header is what it sends on."""
    hap = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                      if os.access("/usr/sbin/haproxy", os.X_OK) else None)
    if hap is None:
        pytest.skip("haproxy is not installed (make deps installs Debian's haproxy)")
    be = esockd.py_backend(header_then_echo)
    front = str(tmp_path / "hap-front.sock")
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(front=front, back=be.path))
    log = open(tmp_path / "haproxy.log", "w")
    proc = subprocess.Popen([hap, "-db", "-f", str(cfg)], stdout=log, stderr=log)
    try:
        wait_until(lambda: os.path.exists(front) or proc.poll() is not None, 10,
                   message="haproxy's socket")
        assert proc.poll() is None, (tmp_path / "haproxy.log").read_text()
        d = esockd.start(listeners=[{"name": "via", "backend": {
            "socket": front, "proxy_protocol": True}}])
        for source in ("127.0.0.3", "127.0.0.4"):
            c = connect(d.port, source=source)
            try:
                line = read_line(c)
                sport = c.getsockname()[1]
                assert line == "%s %d 127.0.0.1 %d\n" % (source, sport, d.port), (
                    line, (tmp_path / "haproxy.log").read_text())
                assert_echo(c, b"through haproxy\n")
            finally:
                c.close()
        st = d.wait_stats(lambda st: st["closed"] == 2)
        assert st["backend_failures"] == 0 and st["accepted"] == 2, st
    finally:
        _terminate(proc, timeout=5.0)
        log.close()
