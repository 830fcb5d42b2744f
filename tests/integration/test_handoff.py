"""mode = "handoff": esockd passes each admitted client's socket to a
handler (SCM_RIGHTS with a PROXY v2 header) and leaves its data path.

Against the real daemon, with the two example handlers (build/echo-handler
--handoff, examples/handoff-echo.py) and, where the test must see or
misbehave on the protocol itself, a handler written here (ProtoHandler):
echo byte-exact, the books (handed_off, closed_by_handler, accepted +
adopted - closed = connections), max_connections holding across
handlers, a handler that dies (closed_handler_lost), connections that
survive a worker killed, a reload and a restart of esockd (held ->
adopted, in their source's count too), the books under churn while
workers die and reload, a client no channel can take (refused after
connect_timeout),
the header's contents (client, unique id, a load balancer's TLVs), and
hostile handlers (bad hello, unknown records, unknown ids).
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from ctl_helpers import listener_json
from esockd_helpers import (ECHO_HANDLER_BIN, REPO, EchoHandler, assert_echo, connect,
                            free_port, read_log, recv_exact, unix_listener,
                            wait_until)

PY_HANDLER = REPO / "examples" / "handoff-echo.py"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class ExampleHandler(EchoHandler):
    """An example hand-off handler process on a Unix socket: "c" is
    build/echo-handler --handoff, "py" examples/handoff-echo.py."""

    def __init__(self, kind, path, log_path):
        self.kind = kind
        super().__init__(path, log_path)

    def _command(self):
        if self.kind == "c":
            return [ECHO_HANDLER_BIN, "--handoff", self.path]
        return ["/usr/bin/python3", str(PY_HANDLER), self.path]


def start_example(esockd, kind, name):
    path = esockd._sock_path(name)
    h = ExampleHandler(kind, path, esockd.tmp_path / ("%s.log" % name))
    esockd.handlers.append(h)
    return h


def handoff_listener(sock, **extra):
    lst = {"name": "h", "backend": {"socket": sock, "mode": "handoff",
                                    "connect_timeout": extra.pop("connect_timeout", 1000)}}
    lst.update(extra)
    return lst


def ready_lines(d):
    return sum(1 for l in d.log().splitlines()
               if "hand-off channel to" in l and l.endswith(" ready"))


def channels_ready(d, n):
    """Wait until n channels were logged ready."""
    wait_until(lambda: ready_lines(d) >= n, 10, message="%d hand-off channels ready" % n)


def until(d, predicate, timeout=10):
    """Listener h's stats once predicate holds on them (else fail)."""
    st = d.wait_stats(predicate, name="h", timeout=timeout)
    assert predicate(st), st
    return st


def echo_round(s, n=2048):
    data = os.urandom(n)
    assert_echo(s, data)


def books(st):
    return st["accepted"] + st["adopted"] - st["closed"]


# ----------------------------------------------------------- the handlers

@pytest.fixture(params=["c", "py"])
def kind(request):
    if request.param == "py" and not PY_HANDLER.exists():
        pytest.fail("examples/handoff-echo.py is missing")
    return request.param


def test_clients_are_echoed_by_the_handler_and_counted_until_it_closes_them(esockd, kind):
    h = start_example(esockd, kind, "ho")
    d = esockd.start(workers=2, listeners=[handoff_listener(h.path)])
    channels_ready(d, 2)
    socks = []
    for i in range(12):
        s = connect(d.ports["h"])
        echo_round(s, 1 + 997 * i)
        socks.append(s)
    big = os.urandom(1 << 20)
    assert_echo(socks[0], big, timeout=20)
    # Open in the books while the handler has them: esockd holds no
    # session, yet counts each connection.
    st = until(d, lambda st: st["handed_off"] == 12)
    assert st["connections"] == 12 and st["accepted"] == 12, st
    assert st["bytes_in"] == 0 and st["bytes_out"] == 0, st   # not relayed
    # Half-close: the handler finishes, shuts down, closes, says so.
    for s in socks:
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""
        s.close()
    st = until(d, lambda st: st["connections"] == 0, timeout=10)
    assert st["closed_by_handler"] == 12 and st["closed"] == 12, st
    assert books(st) == 0 and st["handoff_bad_records"] == 0, st


def test_max_connections_counts_handed_off_connections(esockd, kind):
    h = start_example(esockd, kind, "ho")
    d = esockd.start(workers=2, listeners=[handoff_listener(h.path, max_connections=3)])
    channels_ready(d, 2)
    held = [connect(d.ports["h"]) for _ in range(3)]
    for s in held:
        echo_round(s)
    until(d, lambda st: st["connections"] == 3)
    extra = connect(d.ports["h"])
    extra.settimeout(5)
    assert extra.recv(1) == b""          # refused at the limit: closed
    st = until(d, lambda st: st["rejected_limit"] == 1)
    assert st["handed_off"] == 3, st
    held.pop().close()
    until(d, lambda st: st["connections"] == 2, timeout=10)
    s = connect(d.ports["h"])
    echo_round(s)
    assert d.stats()["h"]["handed_off"] == 4


def handed_clients(esockd, kind, n):
    """An example handler, esockd with 2 workers handing to it, and n
    clients echoed and counted handed off."""
    h = start_example(esockd, kind, "ho")
    d = esockd.start(workers=2, listeners=[handoff_listener(h.path)])
    channels_ready(d, 2)
    socks = [connect(d.ports["h"]) for _ in range(n)]
    for s in socks:
        echo_round(s)
    until(d, lambda st: st["handed_off"] == n)
    return h, d, socks


def test_a_handler_that_dies_takes_its_connections_with_it(esockd, kind):
    h, d, socks = handed_clients(esockd, kind, 6)
    assert listener_json(d, "h")["backends"][0]["state"] == "up"
    h.proc.send_signal(signal.SIGKILL)
    h.proc.wait(timeout=5)
    for s in socks:
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
    st = until(d, lambda st: st["connections"] == 0, timeout=5)
    assert st["closed_handler_lost"] == 6 and books(st) == 0, st
    b = listener_json(d, "h")["backends"][0]
    assert b["state"] == "down" and b["open"] == 0, b
    # A new handler on the same path: the channels come back.
    h2 = start_example(esockd, kind, "ho")
    assert h2.path == h.path
    wait_until(lambda: sum(1 for l in d.log().splitlines()
                           if l.endswith("hand-off channel to %s ready" % h.path)) >= 4,
               15, message="channels back")
    s = connect(d.ports["h"])
    echo_round(s)
    assert d.alive()


def test_handed_off_clients_survive_a_worker_killed_a_reload_and_a_restart(esockd, kind):
    h, d, socks = handed_clients(esockd, kind, 8)

    # A worker killed: its share is counted lost by the master, then
    # announced by the handler and adopted by a live channel.
    victim = sorted(d.worker_pids().values())[0]
    os.kill(victim, signal.SIGKILL)
    st = until(d, lambda st: st["connections"] == 8 and st["closed_worker_lost"] > 0
               and st["adopted"] == st["closed_worker_lost"], timeout=15)
    assert books(st) == 8, st
    for s in socks:
        echo_round(s)

    # A reload: the old generation releases, the new one adopts.  (A
    # client announced to an old worker whose own retirement had not
    # come yet is released again: the books balance whichever way.)
    lost = st["closed_worker_lost"]
    assert d.reload()[0]
    st = until(d, lambda st: st["connections"] == 8 and st["closed_handoff_released"] >= 8
               and st["adopted"] == lost + st["closed_handoff_released"], timeout=15)
    assert books(st) == 8 and st["closed_worker_lost"] == lost, st
    for s in socks:
        echo_round(s)

    # esockd stopped and started again: the handler keeps its clients
    # and the new daemon counts them from the first channel.
    port = d.ports["h"]
    d.stop()
    for s in socks:
        echo_round(s)
    d2 = esockd.start(workers=2, listeners=[handoff_listener(h.path, bind="127.0.0.1:%d" % port)])
    st = until(d2, lambda st: st["connections"] == 8 and st["adopted"] == 8, timeout=15)
    assert st["accepted"] == 0, st
    for s in socks:
        echo_round(s)
        s.close()
    st = until(d2, lambda st: st["connections"] == 0, timeout=10)
    assert st["closed_by_handler"] == 8 and books(st) == 0, st


def refused(port, source):
    """A client from source that esockd closes unanswered."""
    s = connect(port, source=source)
    s.settimeout(5)
    try:
        s.sendall(b"x")
        return s.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        s.close()


def test_adopted_clients_count_in_their_source_limit_after_a_restart(esockd, kind):
    """The handler announces each held client with its address, so a
    restarted esockd counts it under max_connections_per_source: the
    source stays at its limit, another source is served."""
    h = start_example(esockd, kind, "ho")
    lst = handoff_listener(h.path, max_connections_per_source=4)
    d = esockd.start(workers=2, listeners=[lst])
    channels_ready(d, 2)
    socks = [connect(d.ports["h"], source="127.0.0.1") for _ in range(4)]
    for s in socks:
        echo_round(s)
    until(d, lambda st: st["handed_off"] == 4)
    assert refused(d.ports["h"], "127.0.0.1")
    until(d, lambda st: st["rejected_source"] == 1)

    port = d.ports["h"]
    d.stop()
    d2 = esockd.start(workers=2, listeners=[dict(lst, bind="127.0.0.1:%d" % port)])
    st = until(d2, lambda st: st["adopted"] == 4 and st["connections"] == 4, timeout=15)
    assert st["handoff_bad_records"] == 0, st
    # The source's four held clients fill its limit in the new daemon.
    assert refused(port, "127.0.0.1")
    st = until(d2, lambda st: st["rejected_source"] == 1)
    other = connect(port, source="127.0.0.2")
    echo_round(other)
    # One of them closes: its source has room for one again.
    socks.pop().close()
    until(d2, lambda st: st["closed_by_handler"] == 1 and st["connections"] == 4)
    again = connect(port, source="127.0.0.1")
    echo_round(again)
    st = until(d2, lambda st: st["handed_off"] == 2)
    assert st["rejected_source"] == 1 and books(st) == st["connections"] == 5, st
    for s in socks + [other, again]:
        s.close()
    st = until(d2, lambda st: st["connections"] == 0, timeout=10)
    assert books(st) == 0, st


def test_a_client_no_channel_can_take_waits_connect_timeout_then_is_refused(esockd, tmp_path):
    path = str(tmp_path / "nobody.sock")
    d = esockd.start(workers=1, listeners=[handoff_listener(path, connect_timeout=300)])
    s = connect(d.ports["h"])
    s.settimeout(5)
    t0 = time.monotonic()
    assert s.recv(1) == b""
    waited = time.monotonic() - t0
    assert 0.2 <= waited < 3, waited
    st = until(d, lambda st: st["closed"] == 1)
    assert st["closed_backend_unavailable"] == 1 and st["backend_failures"] == 1, st
    assert st["handed_off"] == 0 and st["connections"] == 0, st
    assert "no hand-off channel could take a client" in d.log()


def test_esockd_t_refuses_handoff_on_a_tls_listener(tmp_path):
    from esockd_helpers import ESOCKD_BIN
    from test_tls import make_cert
    cert, key = make_cert(tmp_path, "server")
    conf = tmp_path / "e.conf"
    conf.write_text('listeners = ( { name = "t"; bind = "127.0.0.1:%d";\n'
                    '  tls_certificate = "%s"; tls_key = "%s";\n'
                    '  backend = { socket = "/tmp/x.sock";\n'
                    '    mode = "handoff"; }; } );\n' % (free_port(), cert, key))
    r = subprocess.run([ESOCKD_BIN, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert r.returncode == 1, r
    assert "%s:4: 'mode' = \"handoff\"" % conf in r.stderr, r.stderr
    assert "TLS listener" in r.stderr and 'mode = "relay"' in r.stderr, r.stderr


# ------------------------------------------- a handler written for the test

def parse_v2(hdr):
    """(src (ip, port), dst (ip, port), {type: value}) of a PROXY v2 header."""
    assert hdr[:12] == SIG, hdr
    fam = hdr[13]
    body = hdr[16:]
    if fam == 0x11:
        src = (socket.inet_ntop(socket.AF_INET, body[0:4]), struct.unpack("!H", body[8:10])[0])
        dst = (socket.inet_ntop(socket.AF_INET, body[4:8]), struct.unpack("!H", body[10:12])[0])
        i = 12
    elif fam == 0x21:
        src = (socket.inet_ntop(socket.AF_INET6, body[0:16]), struct.unpack("!H", body[32:34])[0])
        dst = (socket.inet_ntop(socket.AF_INET6, body[16:32]), struct.unpack("!H", body[34:36])[0])
        i = 36
    else:
        src = dst = None
        i = 0
    tlvs = {}
    while i + 3 <= len(body):
        t, n = body[i], struct.unpack("!H", body[i + 1:i + 3])[0]
        tlvs[t] = bytes(body[i + 3:i + 3 + n])
        i += 3 + n
    return src, dst, tlvs


def recv_exact_fds(ch, n):
    buf, fds = b"", []
    while len(buf) < n:
        data, got, _, _ = socket.recv_fds(ch, n - len(buf), 1)
        if not data:
            return None, fds
        buf += data
        fds += got
    return buf, fds


class ProtoHandler:
    """A hand-off handler in a thread, speaking the protocol as told:
    hello is its first line; each client is recorded (header, id) and
    echoed in a thread, and 'closed ID' follows its close unless
    silent.  send(line) writes a raw record on the newest channel."""

    def __init__(self, path, hello=b"esockd-handoff 1\n", silent=False, read=True):
        self.path = str(path)
        self.hello, self.silent, self.read = hello, silent, read
        self.clients = []
        self.channels = []
        self.lock = threading.Lock()
        self.sock = unix_listener(self.path, 64)
        self._stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop.is_set():
            try:
                ch, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.channels.append(ch)
            ch.sendall(self.hello)
            if self.read:
                threading.Thread(target=self._channel, args=(ch,), daemon=True).start()

    def _channel(self, ch):
        while True:
            try:
                head, fds = recv_exact_fds(ch, 16)
                if head is None:
                    return
                rest, more = recv_exact_fds(ch, struct.unpack("!H", head[14:16])[0])
            except OSError:
                return
            fds += more
            src, dst, tlvs = parse_v2(head + rest)
            c = {"src": src, "dst": dst, "tlvs": tlvs, "id": tlvs.get(5, b""), "fds": len(fds)}
            with self.lock:
                self.clients.append(c)
            threading.Thread(target=self._echo, args=(ch, fds[0], c), daemon=True).start()

    def _echo(self, ch, fd, c):
        s = socket.socket(fileno=fd)
        s.setblocking(True)
        try:
            while True:
                data = s.recv(65536)
                if not data:
                    break
                s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        s.close()
        if not self.silent:
            try:
                ch.sendall(b"closed " + c["id"] + b"\n")
            except OSError:
                pass

    def send(self, line):
        with self.lock:
            self.channels[-1].sendall(line)

    def stop(self):
        self._stop.set()
        self.sock.close()
        with self.lock:
            for ch in self.channels:
                ch.close()


@pytest.fixture
def proto(tmp_path):
    made = []

    def make(name="p", **kw):
        h = ProtoHandler(tmp_path / ("%s.sock" % name), **kw)
        made.append(h)
        return h
    yield make
    for h in made:
        h.stop()


def test_the_header_names_the_client_with_its_id_and_a_balancers_tlvs(esockd, proto):
    h = proto()
    d = esockd.start(workers=1, log_level="debug", listeners=[
        handoff_listener(h.path, proxy_protocol_in="v2", proxy_sources=["127.0.0.1/32"])])
    channels_ready(d, 1)
    s = connect(d.ports["h"])
    # A load balancer's v2 header: client 192.0.2.7:4242 to 198.51.100.1:443,
    # with an AUTHORITY TLV and a custom one, which go on to the handler.
    tlvs = b"\x02" + struct.pack("!H", 11) + b"example.org" + b"\xe3" + struct.pack("!H", 2) + b"hi"
    body = (socket.inet_aton("192.0.2.7") + socket.inet_aton("198.51.100.1") +
            struct.pack("!HH", 4242, 443) + tlvs)
    s.sendall(SIG + b"\x21\x11" + struct.pack("!H", len(body)) + body + b"after")
    assert recv_exact(s, 5) == b"after"      # the header is not the client's data
    echo_round(s)
    c = h.clients[0]
    assert c["src"] == ("192.0.2.7", 4242) and c["dst"] == ("198.51.100.1", 443), c
    assert c["tlvs"][2] == b"example.org" and c["tlvs"][0xe3] == b"hi", c
    assert c["fds"] == 1, c
    line = "handed off to %s [conn %s]" % (h.path, c["id"].decode())
    wait_until(lambda: line in d.log(), 5, message="the hand-off's log line")
    s.close()
    st = until(d, lambda st: st["connections"] == 0, timeout=10)
    assert st["closed_by_handler"] == 1, st


def test_rules_refuse_before_the_hand_off(esockd, proto):
    h = proto()
    d = esockd.start(workers=1, listeners=[handoff_listener(h.path, deny=["127.0.0.0/8"])])
    channels_ready(d, 1)
    s = connect(d.ports["h"])
    s.settimeout(5)
    assert s.recv(1) == b""
    st = until(d, lambda st: st["rejected_rule"] == 1)
    assert st["handed_off"] == 0 and st["accepted"] == 0 and h.clients == [], st


def test_a_handler_without_the_hello_gets_no_client(esockd, proto):
    h = proto(hello=b"HTTP/1.0 200 OK\n")
    d = esockd.start(workers=1, listeners=[handoff_listener(h.path, connect_timeout=300)])
    st = until(d, lambda st: st["handoff_bad_records"] >= 2, timeout=10)
    s = connect(d.ports["h"])
    s.settimeout(5)
    assert s.recv(1) == b""
    st = until(d, lambda st: st["closed_backend_unavailable"] == 1)
    assert h.clients == [] and st["handed_off"] == 0, st
    assert "does not speak the hand-off protocol version 1" in d.log()
    assert d.alive()


def test_records_for_unknown_ids_are_counted_and_unknown_verbs_end_the_channel(esockd, proto):
    h = proto()
    d = esockd.start(workers=1, listeners=[handoff_listener(h.path)])
    channels_ready(d, 1)
    s = connect(d.ports["h"])
    echo_round(s)
    until(d, lambda st: st["handed_off"] == 1)
    h.send(b"closed no-such-id\n")
    st = until(d, lambda st: st["handoff_bad_records"] == 1)
    assert st["connections"] == 1, st            # the real one stays counted
    h.send(b"open sesame\n")
    st = until(d, lambda st: st["handoff_bad_records"] == 2 and st["connections"] == 0,
               timeout=5)
    # The channel ended: its connection is counted with it, and a new
    # channel comes (the client itself is still served by this handler).
    assert st["closed_handler_lost"] == 1, st
    wait_until(lambda: len(h.channels) >= 2, 5, message="a new channel")
    assert d.alive()


def test_held_with_an_address_counts_in_that_source_and_a_bad_one_is_counted(esockd, proto):
    h = proto()
    d = esockd.start(workers=1, listeners=[handoff_listener(h.path, max_connections_per_source=1)])
    channels_ready(d, 1)
    h.send(b"held ext-1 127.0.0.1\n")
    st = until(d, lambda st: st["adopted"] == 1 and st["connections"] == 1)
    assert st["handoff_bad_records"] == 0, st
    # 127.0.0.1 has its one connection, held: its next is refused, never
    # the held one; 127.0.0.2 is served.
    assert refused(d.ports["h"], "127.0.0.1")
    until(d, lambda st: st["rejected_source"] == 1)
    s = connect(d.ports["h"], source="127.0.0.2")
    echo_round(s)
    s.close()
    # Over the limit is no reason to refuse an adoption: it is open.
    h.send(b"held ext-2 127.0.0.1\n")
    until(d, lambda st: st["adopted"] == 2 and st["connections"] == 2)
    h.send(b"closed ext-1\n")
    until(d, lambda st: st["closed_by_handler"] >= 2 and st["connections"] == 1)
    assert refused(d.ports["h"], "127.0.0.1")       # ext-2 still holds it
    until(d, lambda st: st["rejected_source"] == 2)
    h.send(b"closed ext-2\n")
    until(d, lambda st: st["connections"] == 0)
    s = connect(d.ports["h"], source="127.0.0.1")
    echo_round(s)
    s.close()
    # Not an address: counted, and the connection adopted all the same.
    h.send(b"held ext-3 not-an-address\n")
    st = until(d, lambda st: st["adopted"] == 3 and st["handoff_bad_records"] == 1)
    h.send(b"closed ext-3\n")
    st = until(d, lambda st: st["connections"] == 0, timeout=10)
    assert books(st) == 0 and d.alive(), st


def test_a_handler_that_stops_reading_leaves_clients_refused_after_connect_timeout(esockd, proto):
    h = proto(read=False)
    d = esockd.start(workers=1, max_open_files=8192,
                     listeners=[handoff_listener(h.path, connect_timeout=300)])
    channels_ready(d, 1)
    # Each message holds a descriptor in the channel until the handler
    # reads it; once the channel's buffer is full, clients wait and are
    # refused after connect_timeout instead of waiting forever.
    socks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(socks) < 3000:
        socks.append(connect(d.ports["h"]))
        if len(socks) % 100 == 0:
            st = d.stats()["h"]
            if st["closed_backend_unavailable"] > 0:
                break
    st = until(d, lambda st: st["closed_backend_unavailable"] > 0, timeout=10)
    assert st["handed_off"] > 0, st
    assert st["handed_off"] + st["closed_backend_unavailable"] <= len(socks), st
    print("handed off before the channel was full:", st["handed_off"], "of", len(socks))
    assert d.alive()
    for s in socks:
        s.close()


def two_socket_listener(a, b, **extra):
    lst = handoff_listener(a.path, **extra)
    lst["backend"]["socket"] = [a.path, b.path]
    return lst


def test_clients_are_spread_over_the_sockets_by_fewest_open(esockd, proto):
    a, b = proto("a"), proto("b")
    d = esockd.start(workers=2, listeners=[two_socket_listener(a, b)])
    channels_ready(d, 4)
    socks = []
    for i in range(20):
        s = connect(d.ports["h"])
        echo_round(s, 64)
        socks.append(s)
        until(d, lambda st: st["handed_off"] == i + 1)
    # One at a time, each to the socket with fewer open across workers.
    assert (len(a.clients), len(b.clients)) == (10, 10)
    for s in socks[:10]:
        s.close()
    until(d, lambda st: st["connections"] == 10)
    assert d.alive()


def test_a_socket_whose_handler_stops_reading_is_skipped_for_the_other(esockd, proto):
    silent, live = proto("s", read=False), proto("l")
    # connect_timeout: time for the live handler (a thread per client,
    # in this test's process) to take its share on a loaded machine; at
    # 300 ms, with the CPUs busy elsewhere, 233 of the 1,000 clients waited
    # it out, though no client was ever offered to the silent socket.
    d = esockd.start(workers=1, max_open_files=8192,
                     listeners=[two_socket_listener(silent, live, connect_timeout=3000)])
    channels_ready(d, 2)
    socks = []
    try:
        for i in range(1000):
            # Not connect(): select() cannot watch descriptors past 1024.
            socks.append(socket.create_connection(("127.0.0.1", d.ports["h"]), timeout=5))
        st = until(d, lambda st: st["handed_off"] == 1000, timeout=30)
        # Clients went to the silent handler only while its channel took
        # them; none waited out connect_timeout, none was refused.
        assert st["closed_backend_unavailable"] == 0 and st["closed"] == 0, st
        wait_until(lambda: len(live.clients) >= 600, 10, message="the live handler took the rest")
        socks[-1].sendall(b"still served")
        assert recv_exact(socks[-1], 12) == b"still served"
    finally:
        # Closed however it ends: 1,000 left open would push the next
        # tests' descriptors past select()'s 1024.
        for s in socks:
            s.close()


def test_counts_stay_exact_under_concurrent_churn(esockd):
    """8 threads, each 150 connect-echo-close cycles through two workers
    and the C handler: every connection handed off once and closed by
    the handler once, nothing left open, the socket's open count 0."""
    h = start_example(esockd, "c", "ho")
    d = esockd.start(workers=2, listeners=[handoff_listener(h.path)])
    channels_ready(d, 2)
    errors = []

    def churn():
        try:
            for i in range(150):
                s = connect(d.ports["h"])
                echo_round(s, 64 + i)
                s.close()
        except Exception as e:   # reported below
            errors.append(repr(e))
    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    st = until(d, lambda st: st["connections"] == 0 and st["closed"] == 1200, timeout=15)
    assert st["accepted"] == st["handed_off"] == st["closed_by_handler"] == 1200, st
    assert st["handoff_bad_records"] == 0, st
    assert listener_json(d, "h")["backends"][0]["open"] == 0


def test_books_stay_exact_when_workers_die_and_reload_under_churn(esockd, kind):
    """The race, not the happy path: 4 threads churn connect-echo-close
    while 16 long-lived clients stay open, and meanwhile a worker is
    SIGKILLed twice and esockd reloads once.  The long-lived clients
    echo throughout (the handler has them); a churning client caught in
    a dying worker before its hand-off may be cut, and is counted as
    such, never lost from the books: at the end accepted + adopted -
    closed = connections = 16, then 0 once they close."""
    h = start_example(esockd, kind, "ho")
    d = esockd.start(workers=2, listeners=[handoff_listener(h.path)])
    channels_ready(d, 2)
    held = [connect(d.ports["h"]) for _ in range(16)]
    for s in held:
        echo_round(s, 256)
    until(d, lambda st: st["handed_off"] == 16)
    done, cut, errors = [0], [0], []
    stop = threading.Event()

    def churn(seed):
        i = 0
        while not stop.is_set() and i < 400:
            i += 1
            try:
                s = connect(d.ports["h"])
            except OSError:
                cut[0] += 1          # the listener between workers
                continue
            try:
                echo_round(s, 32 + (seed * 7 + i) % 500)
                done[0] += 1
            except (OSError, AssertionError) as e:
                # Cut before its hand-off (its worker died), or a reset.
                cut[0] += 1
                if not isinstance(e, (ConnectionError, socket.timeout, AssertionError)):
                    errors.append(repr(e))
            finally:
                s.close()
    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    try:
        for round_ in range(2):
            wait_until(lambda: done[0] >= 150 * (round_ + 1), 30, message="churn going")
            victim = sorted(d.worker_pids().values())[0]
            os.kill(victim, signal.SIGKILL)
            wait_until(lambda: victim not in d.worker_pids().values(), 10,
                       message="the killed worker replaced")
            channels_ready(d, 3 + round_)
        wait_until(lambda: done[0] >= 450, 30, message="churn going after the kills")
        assert d.reload()[0]
        wait_until(lambda: done[0] >= 600, 30, message="churn going after the reload")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert errors == [], errors
    for s in held:
        echo_round(s, 512)           # the handler kept them throughout
    st = until(d, lambda st: st["connections"] == 16 and books(st) == 16, timeout=20)
    assert st["closed_worker_lost"] > 0 and st["adopted"] > 0, st
    assert st["handoff_bad_records"] == 0, st
    print("churned %d, cut %d; accepted %d adopted %d closed %d (worker_lost %d)"
          % (done[0], cut[0], st["accepted"], st["adopted"], st["closed"],
             st["closed_worker_lost"]))
    for s in held:
        s.close()
    st = until(d, lambda st: st["connections"] == 0, timeout=20)
    assert books(st) == 0 and st["accepted"] >= done[0] + 16, st
    assert d.alive()
