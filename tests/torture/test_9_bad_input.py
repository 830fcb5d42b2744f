"""Torture 9: bad input everywhere.

Four listeners: TLS, PROXY header in (proxy_protocol_in = "any"), plain,
and plain with a backend whose accept queue is full (so esockd sits in
its backend connect).  Round after round, every listener gets hostile
clients: random bytes (some dressed as a TLS record or a PROXY v2
signature), half-open clients (write side shut, nothing sent), silent
ones, and resets (SO_LINGER 0) at each phase: in the TLS handshake (part
of a real ClientHello sent), in the PROXY header (part of a header), in
the backend connect, mid-relay.  After each round a real client is
served on each listener, byte-exact.

Then: the daemon is up, no worker died (the same pids, no worker_lost),
and every case is counted: per listener accepted = closed = the clients
sent there, the close reasons sum to closed, and each kind of case lands
in its reason (TLS failures in handshake_failed / handshake_timeout with
tls_failures matching, PROXY failures in proxy_failed with the
proxy_fail_* reasons summing to it, resets mid-relay in client_reset).
"""
import os
import random
import socket
import ssl
import struct
import time

import pytest

from esockd_helpers import assert_echo, connect
from load import CLOSE_REASONS, REJECTIONS, assert_books_balance
from test_tls import client_ctx, make_cert
from torture import record, scale

PP_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PROXY_FAILS = ("proxy_fail_bad_signature", "proxy_fail_bad_version", "proxy_fail_bad_family",
               "proxy_fail_bad_length", "proxy_fail_bad_address", "proxy_fail_bad_checksum",
               "proxy_fail_timeout", "proxy_fail_untrusted")


def client_hello(cert):
    """The first flight of a real TLS client (a ClientHello record)."""
    ctx = client_ctx(cert)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


def full_backend(path):
    """A Unix socket that never accepts and whose queue is full: esockd's
    connect gets EAGAIN and retries until connect_timeout."""
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler.connect(path)
    return srv, filler


def reset(s):
    """Close with a RST (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def ended(s, timeout=5.0):
    """Wait for the daemon to end the connection (EOF or reset); True if it did."""
    s.settimeout(timeout)
    try:
        while True:
            if s.recv(65536) == b"":
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
    finally:
        s.close()


@pytest.mark.timeout(300)
def test_bad_input_everywhere_is_survived_and_counted(esockd, request, tmp_path):
    rounds = scale(request, 2, 20)
    rnd = random.Random(int.from_bytes(os.urandom(4), "little"))
    cert, key = make_cert(tmp_path, "server")
    hello = client_hello(cert)
    stuck_srv, stuck_fill = full_backend(str(tmp_path / "full.sock"))
    d = esockd.start(workers=2, listeners=[
        {"name": "tls", "tls_certificate": cert, "tls_key": key, "tls_handshake_timeout": 1},
        {"name": "pp", "proxy_protocol_in": "any", "proxy_sources": ["127.0.0.1/32"],
         "proxy_header_timeout": 1},
        {"name": "plain", "idle_timeout": 2},
        {"name": "stuck", "backend": {"socket": str(tmp_path / "full.sock"),
                                      "connect_timeout": 1500}}])
    pids = d.worker_pids()
    sent = {n: 0 for n in d.names}        # clients per listener
    kinds = {}                            # case -> count
    held = []                             # clients we wait on at the end

    def case(name, kind, sock):
        sent[name] += 1
        kinds[kind] = kinds.get(kind, 0) + 1
        return sock

    def noise(n):
        return bytes(rnd.getrandbits(8) for _ in range(n))

    try:
        for r in range(rounds):
            # -- TLS listener -----------------------------------------------
            for _ in range(5):
                b = noise(rnd.randint(1, 3000))
                if b[0] == 0x16:
                    b = b"\x17" + b[1:]
                s = case("tls", "tls_random", connect(d.ports["tls"]))
                s.sendall(b)
                held.append(s)
            for _ in range(3):   # a TLS handshake record header, then noise
                s = case("tls", "tls_record_noise", connect(d.ports["tls"]))
                body = noise(rnd.randint(10, 500))
                s.sendall(b"\x16\x03\x01" + struct.pack("!H", len(body)) + body)
                held.append(s)
            s = case("tls", "tls_half_open", connect(d.ports["tls"]))
            s.shutdown(socket.SHUT_WR)
            held.append(s)
            held.append(case("tls", "tls_silent", connect(d.ports["tls"])))
            for cut in (1, 5, len(hello) // 2, len(hello) - 1):
                s = case("tls", "tls_reset_in_hello", connect(d.ports["tls"]))
                s.sendall(hello[:cut])
                time.sleep(0.01)
                reset(s)
            s = case("tls", "tls_reset_after_hello", connect(d.ports["tls"]))
            s.sendall(hello)
            s.recv(1)        # the server's flight has begun
            reset(s)

            # -- PROXY listener ---------------------------------------------
            for _ in range(5):
                s = case("pp", "pp_random", connect(d.ports["pp"]))
                b = noise(rnd.randint(1, 600))
                if b[:1] in (b"P", b"\r"):
                    b = b"x" + b[1:]
                s.sendall(b)
                held.append(s)
            for _ in range(3):
                s = case("pp", "pp_v2_noise", connect(d.ports["pp"]))
                s.sendall(PP_SIG + noise(rnd.randint(4, 200)))
                held.append(s)
            s = case("pp", "pp_v1_noise", connect(d.ports["pp"]))
            s.sendall(b"PROXY " + noise(rnd.randint(1, 80)).replace(b"\n", b"x") + b"\r\n")
            held.append(s)
            s = case("pp", "pp_half_open", connect(d.ports["pp"]))
            s.shutdown(socket.SHUT_WR)
            held.append(s)
            held.append(case("pp", "pp_silent", connect(d.ports["pp"])))
            for part in (b"PROXY TCP4 192.0.2", PP_SIG[:7], PP_SIG + b"\x21\x11\x00"):
                s = case("pp", "pp_reset_in_header", connect(d.ports["pp"]))
                s.sendall(part)
                time.sleep(0.01)
                reset(s)

            # -- plain listener: resets mid-relay, half-close ----------------
            for _ in range(3):
                s = case("plain", "plain_reset_mid_relay", connect(d.ports["plain"]))
                b = noise(rnd.randint(1, 20000))
                s.sendall(b)
                s.recv(1)    # relaying: the echo has begun
                reset(s)
            s = case("plain", "plain_half_open", connect(d.ports["plain"]))
            s.shutdown(socket.SHUT_WR)
            held.append(s)
            held.append(case("plain", "plain_silent", connect(d.ports["plain"])))

            # -- stuck listener: reset while esockd connects to the backend --
            for _ in range(2):
                s = case("stuck", "stuck_reset_in_connect", connect(d.ports["stuck"]))
                s.sendall(noise(100))
                time.sleep(0.1)
                reset(s)
            s = case("stuck", "stuck_patient", connect(d.ports["stuck"]))
            s.sendall(b"anyone?")
            held.append(s)

            # A real client is still served everywhere.
            real_clients(d, cert, sent, kinds)

        # Every held client is ended by the daemon within its timeouts.
        late = [s for s in held if not ended(s, timeout=6)]
        assert not late, "%d hostile clients were never closed" % len(late)
        real_clients(d, cert, sent, kinds)
    finally:
        stuck_srv.close()
        stuck_fill.close()

    assert d.alive() and d.worker_pids() == pids, (pids, d.worker_pids())
    stats = {}
    for name in d.names:
        st = d.wait_stats(lambda st: st["connections"] == 0 and st["closed"] == sent[name],
                          name=name, timeout=10)
        stats[name] = st
        assert st["accepted"] == st["closed"] == sent[name], (name, sent[name], st)
        assert st["connections"] == 0 and st["closed_worker_lost"] == 0, st
        assert all(st[k] == 0 for k in REJECTIONS), st
        assert_books_balance(st, name)
    reasons = {n: {r[7:]: stats[n][r] for r in CLOSE_REASONS if stats[n][r]} for n in d.names}
    print(kinds, reasons)

    real = kinds["real"]
    tls, pp, plain, stuck = (stats[n] for n in d.names)
    # TLS: every hostile client a TLS failure, every real one normal.
    tls_bad = sent["tls"] - real
    assert tls["closed_normal"] == real, reasons
    assert tls["closed_handshake_failed"] + tls["closed_handshake_timeout"] + \
        tls["closed_client_reset"] == tls_bad, reasons
    assert tls["tls_failures"] == tls["closed_handshake_failed"] + \
        tls["closed_handshake_timeout"], tls
    assert tls["closed_handshake_timeout"] >= kinds["tls_silent"], reasons
    # PROXY: every hostile client a refused header, counted by its reason.
    pp_bad = sent["pp"] - real
    assert pp["closed_normal"] == real, reasons
    # A reset that comes before esockd read the partial header is the
    # client's reset; every other bad header is a proxy failure.
    assert pp["closed_proxy_failed"] + pp["closed_client_reset"] == pp_bad, reasons
    assert pp["closed_client_reset"] <= kinds["pp_reset_in_header"], reasons
    assert sum(pp[k] for k in PROXY_FAILS) == pp["closed_proxy_failed"], pp
    assert pp["proxy_fail_timeout"] >= kinds["pp_silent"], pp
    # Plain: resets mid-relay are client resets; the half-open and the
    # silent ones end normally and at idle_timeout.
    assert plain["closed_client_reset"] == kinds["plain_reset_mid_relay"], reasons
    assert plain["closed_normal"] == real + kinds["plain_half_open"], reasons
    assert plain["closed_idle_timeout"] == kinds["plain_silent"], reasons
    # Stuck: no backend ever answers; each client is counted once, the
    # patient ones at connect_timeout.
    assert stuck["closed_backend_unavailable"] + stuck["closed_client_reset"] == \
        sent["stuck"], reasons
    assert stuck["closed_backend_unavailable"] >= kinds["stuck_patient"], reasons
    record(request, "9 bad input", rounds=rounds, hostile_clients=sum(sent.values()) - 3 * real,
           real_clients=3 * real, workers_lost=0,
           **{"closed_%s_%s" % (n, k): v for n in d.names for k, v in reasons[n].items()})


def real_clients(d, cert, sent, kinds):
    """One real client each on the TLS, PROXY and plain listeners, served
    byte-exact and closed normally."""
    data = os.urandom(4096)
    s = client_ctx(cert).wrap_socket(connect(d.ports["tls"]), server_hostname="localhost")
    assert_echo_tls(s, data)
    s = connect(d.ports["pp"])
    s.sendall(b"PROXY TCP4 192.0.2.1 192.0.2.2 1234 443\r\n")
    assert_echo(s, data)
    s.shutdown(socket.SHUT_WR)
    assert ended(s)
    s = connect(d.ports["plain"])
    assert_echo(s, data)
    s.shutdown(socket.SHUT_WR)
    assert ended(s)
    for name in ("tls", "pp", "plain"):
        sent[name] += 1
    kinds["real"] = kinds.get("real", 0) + 1


def assert_echo_tls(s, data):
    s.settimeout(5)
    s.sendall(data)
    got = b""
    while len(got) < len(data):
        chunk = s.recv(65536)
        assert chunk, "EOF after %d bytes" % len(got)
        got += chunk
    assert got == data
    s = s.unwrap()
    s.shutdown(socket.SHUT_WR)
    assert ended(s)
