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

from esockd_helpers import (esockd_argv, _terminate, assert_echo, connect, record_until_eof,
                            recv_exact, wait_until)

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# The spec's TLV types (section 2.2), and PP2_TYPE_SSL's subtypes.
TLV_NAMES = {0x01: "alpn", 0x02: "authority", 0x03: "crc32c", 0x04: "noop",
             0x05: "unique_id", 0x20: "ssl", 0x30: "netns"}
SSL_SUB_NAMES = {0x21: "version", 0x22: "cn", 0x23: "cipher", 0x24: "sig_alg",
                 0x25: "key_alg"}


def crc32c(data):
    """CRC32c bit by bit (reflected 0x82F63B78): not esockd's table."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def split_tlvs(buf):
    """[(type, value)] of buf, which must hold whole TLVs and nothing else."""
    out, at = [], 0
    while at < len(buf):
        assert len(buf) - at >= 3, "a TLV cut short: %r" % buf[at:]
        t, n = buf[at], struct.unpack("!H", buf[at + 1:at + 3])[0]
        assert at + 3 + n <= len(buf), "TLV 0x%02x's length %d runs past the header" % (t, n)
        out.append((t, bytes(buf[at + 3:at + 3 + n])))
        at += 3 + n
    return out


def decode_tlvs(header, at):
    """The TLVs of a whole header from offset at: a dict by name, each
    type once; SSL decoded (client, verify, its subtypes by name); a
    CRC32C checked against the header with its value zeroed."""
    out, order = {}, []
    for t, v in split_tlvs(header[at:]):
        name = TLV_NAMES.get(t, "0x%02x" % t)
        assert name not in out, "TLV %s twice" % name
        order.append(name)
        if t == 0x20:
            assert len(v) >= 5, v
            sub = {}
            for st, sv in split_tlvs(v[5:]):
                sname = SSL_SUB_NAMES.get(st, "0x%02x" % st)
                assert sname not in sub, "SSL subtype %s twice" % sname
                sub[sname] = sv.decode()
            out[name] = {"client": v[0], "verify": struct.unpack("!I", v[1:5])[0],
                         "sub": sub, "sub_order": [k for k in sub]}
        elif t == 0x03:
            assert len(v) == 4, v
            out[name] = struct.unpack("!I", v)[0]
        elif t == 0x05:
            assert 1 <= len(v) <= 128, v
            out[name] = v.decode("ascii")
        else:
            out[name] = v.decode()
    if "crc32c" in out:
        pos = header.index(b"\x03\x00\x04" + struct.pack("!I", out["crc32c"]), at)
        zeroed = header[:pos + 3] + b"\0\0\0\0" + header[pos + 7:]
        assert crc32c(zeroed) == out["crc32c"], "wrong CRC32c %08x" % out["crc32c"]
    out["order"] = order
    return out


def read_proxy_v2(conn):
    """Read one PROXY v2 header from conn; returns a dict of what it says,
    its TLVs decoded (and checked) in out["tlvs"]."""
    head = recv_exact(conn, 16)
    assert head[:12] == SIG, "no PROXY v2 signature: %r" % head
    ver_cmd, fam, length = head[12], head[13], struct.unpack("!H", head[14:16])[0]
    body = recv_exact(conn, length) if length else b""
    out = {"version": ver_cmd >> 4, "command": ver_cmd & 0xF, "family": fam,
           "length": length, "addr_length": {0x11: 12, 0x21: 36}.get(fam, 0)}
    if fam == 0x11:
        assert length >= 12, length
        out["src"] = str(ipaddress.IPv4Address(body[0:4]))
        out["dst"] = str(ipaddress.IPv4Address(body[4:8]))
        out["sport"], out["dport"] = struct.unpack("!HH", body[8:12])
    elif fam == 0x21:
        assert length >= 36, length
        out["src"] = str(ipaddress.IPv6Address(body[0:16]))
        out["dst"] = str(ipaddress.IPv6Address(body[16:32]))
        out["sport"], out["dport"] = struct.unpack("!HH", body[32:36])
    out["tlvs"] = decode_tlvs(head + body, 16 + out["addr_length"])
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
    assert hdr["tlvs"]["order"] == ["unique_id"], hdr
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
    # The addresses take 36 bytes; after them, since PP2_TYPE_UNIQUE_ID,
    # one TLV and nothing else.
    assert (hdr["family"], hdr["addr_length"]) == (0x21, 36), hdr
    assert hdr["tlvs"]["order"] == ["unique_id"], hdr
    assert hdr["length"] == 36 + 3 + len(hdr["tlvs"]["unique_id"]), hdr


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
    r = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
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
