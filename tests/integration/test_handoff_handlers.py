"""The two example hand-off handlers, without esockd: build/echo-handler
--handoff (C, examples/handoff.c) and examples/handoff-echo.py (Python).

The test plays an esockd worker: it connects a channel to the handler's
socket, expects the hello, makes a real TCP connection on loopback and
passes its server side to the handler with a PROXY v2 header carrying a
UNIQUE_ID (socket.send_fds, the descriptor on the header's first byte),
then checks the echo on the client and the records on the channels
("closed <id>", "held <id> <source>").  Traffic only on loopback and Unix sockets;
every wait is bounded.
"""

import os
import socket
import struct
import subprocess
import time

import pytest

from esockd_helpers import (ECHO_HANDLER_BIN, REPO, _terminate, assert_echo, exchange,
                            read_log, recv_until_eof, sanitizer_reports, scaled,
                            wait_until)

PY_HANDLER = REPO / "examples" / "handoff-echo.py"
HELLO = b"esockd-handoff 1\n"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"


# --------------------------------------------------------------------------
# the handler under test
# --------------------------------------------------------------------------

class Handler:
    """A hand-off handler process on a Unix socket path."""

    def __init__(self, kind, path, log_path):
        self.kind = kind
        self.path = str(path)
        self.log_path = log_path
        if kind == "c":
            if not os.access(ECHO_HANDLER_BIN, os.X_OK):
                pytest.fail("binary not found: %s (build first)" % ECHO_HANDLER_BIN)
            argv = [ECHO_HANDLER_BIN, "--handoff", self.path]
        else:
            argv = ["/usr/bin/python3", str(PY_HANDLER), self.path]
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        # Both say "hand-off on PATH" once listening: waiting on the log,
        # not on a probe connection, opens no channel of its own.
        wait_until(lambda: self._alive() and "hand-off on" in self.log(), 10.0,
                   message="%s handler listening on %s" % (kind, self.path))

    def _alive(self):
        if self.proc.poll() is not None:
            raise AssertionError("handler exited with %s; output:\n%s"
                                 % (self.proc.returncode, self.log()))
        return True

    def log(self):
        return read_log(self.log_path)

    def channel_ends(self):
        """How many channel ends the handler has logged."""
        return self.log().count("ended")

    def stop(self):
        rc = _terminate(self.proc, timeout=5.0)
        self._log.close()
        return rc


@pytest.fixture(params=["c", "py"])
def handler(request, tmp_path):
    h = Handler(request.param, tmp_path / "h.sock", tmp_path / "handler.log")
    try:
        yield h
    finally:
        rc = h.stop()
    findings = sanitizer_reports(h.log())
    assert not findings, "sanitizer reports:\n" + "\n".join(findings[:20])
    assert rc == 0, "handler exited with %s; output:\n%s" % (rc, h.log()[-3000:])


# --------------------------------------------------------------------------
# the esockd worker's part
# --------------------------------------------------------------------------

class Channel:
    """A channel to the handler, as an esockd worker holds it."""

    def __init__(self, path, hello=True):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.buf = b""
        if hello:
            assert self.line() == HELLO

    def line(self, timeout=5.0):
        """The next record line, its "\\n" included."""
        deadline = time.monotonic() + scaled(timeout)
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no record within %.1fs (have %r)" % (timeout, self.buf)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            assert chunk, "channel EOF while waiting for a record (have %r)" % self.buf
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        assert len(line) < 128, "record over 128 bytes: %r" % line
        return line + b"\n"

    def lines(self, n, timeout=5.0):
        return [self.line(timeout) for _ in range(n)]

    def expect_eof(self, timeout=5.0):
        """The handler ended this channel: EOF, with no record before it."""
        deadline = time.monotonic() + scaled(timeout)
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "the handler did not end the channel within %.1fs" % timeout
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                continue
            except ConnectionResetError:
                chunk = b""
            if not chunk:
                assert self.buf == b"", "records before EOF: %r" % self.buf
                return
            self.buf += chunk

    def hand(self, server_side, uid, **kw):
        """Pass one accepted TCP socket with its header; close our copy."""
        hdr = v2_header(server_side, uid, **kw)
        socket.send_fds(self.sock, [hdr], [server_side.fileno()])
        server_side.close()

    def close(self):
        self.sock.close()


def tlv(t, value):
    return struct.pack("!BH", t, len(value)) + value


def v2_header(sock, uid, family=0x11, extra_tlvs=b"", cmd=0x21, sig=SIG, length=None,
              trailing=b""):
    """A PROXY v2 header for an accepted TCP socket: its peer is the
    source, its own address the destination, like esockd's."""
    if family == 0x11:
        s, d = sock.getpeername(), sock.getsockname()
        addrs = (socket.inet_aton(s[0]) + socket.inet_aton(d[0]) + struct.pack("!HH", s[1], d[1]))
    elif family == 0x21:
        addrs = (socket.inet_pton(socket.AF_INET6, "2001:db8::1") +
                 socket.inet_pton(socket.AF_INET6, "2001:db8::2") + struct.pack("!HH", 40000, 443))
    else:
        addrs = b""
    body = addrs + extra_tlvs
    if uid is not None:
        body += tlv(0x05, uid.encode() if isinstance(uid, str) else uid)
    body += trailing
    n = len(body) if length is None else length
    return sig + bytes([cmd, family]) + struct.pack("!H", n) + body


@pytest.fixture
def tcp():
    """make() -> (client, accepted server side), a real TCP pair on loopback."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(64)
    made = []

    def make():
        c = socket.create_connection(lsock.getsockname(), timeout=5)
        s, _ = lsock.accept()
        made.append(c)
        return c, s

    try:
        yield make
    finally:
        for c in made:
            c.close()
        lsock.close()


def close_client(c):
    """Half-close the client, check the echo's EOF, then close it."""
    c.shutdown(socket.SHUT_WR)
    assert recv_until_eof(c) == b""
    c.close()


# --------------------------------------------------------------------------
# the scenarios
# --------------------------------------------------------------------------

def test_client_echoed_byte_exact_then_closed_record(handler, tcp):
    """Hello first; a handed client is echoed byte-exact (1 byte to 1 MiB),
    its half-close comes back as EOF after the last byte, and then
    "closed <id>" comes on the channel."""
    ch = Channel(handler.path)
    c, s = tcp()
    # Unknown TLVs before the id (ALPN, a custom one) are skipped.
    ch.hand(s, "66204200bbfbf-5-395",
            extra_tlvs=tlv(0x01, b"h2") + tlv(0xE3, b"\x00" * 40))
    for size in (1, 17, 4096, 300_001):
        assert_echo(c, os.urandom(size), timeout=10)
    big = os.urandom(1 << 20)
    got, eof = exchange(c, big, shut_wr=True, until_eof=True, timeout=20)
    assert eof and got == big, "1 MiB then EOF: got %d bytes, eof=%s" % (len(got), eof)
    c.close()
    assert ch.line() == b"closed 66204200bbfbf-5-395\n"
    ch.close()


def test_half_close_finishes_sending_first(handler, tcp):
    """The client's EOF arrives while most of its echo still waits in the
    handler: the handler sends all of it, then EOF, then "closed"."""
    ch = Channel(handler.path)
    c, s = tcp()
    # A small send buffer on the handler's side, and a client that does
    # not read (so its receive buffer does not grow past ~128 KiB): most
    # of the echo stays in the handler's own buffer.  (A small SO_RCVBUF
    # on the connected client would stall TCP on loopback's large MSS.)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ch.hand(s, "half-1")
    data = os.urandom(512 * 1024)
    c.settimeout(scaled(10))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    # Not a wait for a result: time for the EOF to reach the handler
    # before the client starts reading.
    time.sleep(0.3)
    assert recv_until_eof(c, timeout=10) == data
    assert ch.line() == b"closed half-1\n"


@pytest.mark.parametrize("family", [0x11, 0x21, 0x00], ids=["tcp4", "tcp6", "unspec"])
def test_each_family_is_taken(handler, tcp, family):
    """TCP4, TCP6 and UNSPEC headers each hand a client over."""
    ch = Channel(handler.path)
    c, s = tcp()
    ch.hand(s, "fam-%d" % family, family=family)
    assert_echo(c, b"family %d\n" % family)
    close_client(c)
    assert ch.line() == b"closed fam-%d\n" % family


@pytest.mark.parametrize("family", [0x00, 0x11], ids=["unspec", "tcp4"])
def test_the_local_command_is_taken(handler, tcp, family):
    """LOCAL (0x20), which esockd sends when it cannot name the
    addresses, hands the client over: the spec says to take it."""
    ch = Channel(handler.path)
    c, s = tcp()
    ch.hand(s, "local-%d" % family, family=family, cmd=0x20)
    assert_echo(c, b"local\n")
    close_client(c)
    assert ch.line() == b"closed local-%d\n" % family


@pytest.mark.parametrize("form,held", [
    (dict(), b"held src-1 127.0.0.1\n"),
    (dict(family=0x21), b"held src-1 2001:db8::1\n"),
    (dict(family=0x11, cmd=0x20), b"held src-1\n"),
    (dict(family=0x00), b"held src-1\n"),
], ids=["tcp4", "tcp6", "local", "unspec"])
def test_held_names_the_source_the_header_gave(handler, tcp, form, held):
    """'held' carries the client's address as the header named it (esockd
    counts the client in that source's count), and none when the header
    named none (LOCAL, UNSPEC)."""
    ch1 = Channel(handler.path)
    c, s = tcp()
    ch1.hand(s, "src-1", **form)
    assert_echo(c, b"before\n")
    ch1.close()
    ch2 = Channel(handler.path)
    assert ch2.line() == held
    assert_echo(c, b"after\n")
    close_client(c)
    assert ch2.line() == b"closed src-1\n"


def test_header_in_pieces_and_messages_back_to_back(handler, tcp):
    """A header that arrives in pieces (the descriptor with the first
    byte) is put together; two messages back to back are not mixed."""
    ch = Channel(handler.path)
    c1, s1 = tcp()
    hdr = v2_header(s1, "piece-1")
    socket.send_fds(ch.sock, [hdr[:1]], [s1.fileno()])
    s1.close()
    for i in range(1, len(hdr), 7):
        time.sleep(0.01)   # separate reads on the handler's side
        ch.sock.sendall(hdr[i:i + 7])
    c2, s2 = tcp()
    c3, s3 = tcp()
    msgs = [(s2, v2_header(s2, "back-2")), (s3, v2_header(s3, "back-3"))]
    for s, h in msgs:
        socket.send_fds(ch.sock, [h], [s.fileno()])
        s.close()
    for i, c in enumerate((c1, c2, c3)):
        assert_echo(c, b"client %d\n" % i)
    close_client(c2)
    assert ch.line() == b"closed back-2\n"
    close_client(c1)
    assert ch.line() == b"closed piece-1\n"
    close_client(c3)
    assert ch.line() == b"closed back-3\n"


def test_several_clients_on_one_channel(handler, tcp):
    """Eight clients at once on one channel each get their own echo, and
    each close gives its own record."""
    ch = Channel(handler.path)
    clients = []
    for i in range(8):
        c, s = tcp()
        ch.hand(s, "multi-%d" % i)
        clients.append(c)
    for i, c in enumerate(clients):
        assert_echo(c, b"I am %d\n" % i * 100)
    for i in (3, 0, 7, 1, 6, 2, 5, 4):
        close_client(clients[i])
        assert ch.line() == b"closed multi-%d\n" % i


def test_two_channels_records_on_their_own_channel(handler, tcp):
    """Two channels (two workers): each client's "closed" comes on the
    channel that handed it over."""
    ch1 = Channel(handler.path)
    ch2 = Channel(handler.path)
    a, sa = tcp()
    b, sb = tcp()
    ch1.hand(sa, "one-a")
    ch2.hand(sb, "two-b")
    assert_echo(a, b"a" * 1000)
    assert_echo(b, b"b" * 1000)
    close_client(b)
    assert ch2.line() == b"closed two-b\n"
    close_client(a)
    assert ch1.line() == b"closed one-a\n"


def test_ended_channel_clients_held_on_newest_live_channel(handler, tcp):
    """Three channels; the oldest ends with two clients open: both are
    announced "held" on the newest (not the middle one), keep echoing,
    and their "closed" comes there."""
    ch1 = Channel(handler.path)
    ch2 = Channel(handler.path)
    ch3 = Channel(handler.path)
    a, sa = tcp()
    b, sb = tcp()
    ch1.hand(sa, "held-a")
    ch1.hand(sb, "held-b")
    assert_echo(a, b"before\n")
    assert_echo(b, b"before\n")
    ch1.close()
    assert sorted(ch3.lines(2)) == [b"held held-a 127.0.0.1\n", b"held held-b 127.0.0.1\n"]
    assert_echo(a, os.urandom(100_000), timeout=10)
    assert_echo(b, b"still here\n")
    # Nothing went to ch2: its first record is its own client's.
    d, sd = tcp()
    ch2.hand(sd, "mid-d")
    close_client(d)
    assert ch2.line() == b"closed mid-d\n"
    close_client(a)
    assert ch3.line() == b"closed held-a\n"
    # The newest ends too: b moves on to the only one left.
    ch3.close()
    assert ch2.line() == b"held held-b 127.0.0.1\n"
    close_client(b)
    assert ch2.line() == b"closed held-b\n"


def test_orphans_held_after_next_hello(handler, tcp):
    """The only channel ends: its clients keep echoing as orphans; one
    closed meanwhile is forgotten; the next channel gets the hello, then
    "held" for the others only, and their "closed" later."""
    ch1 = Channel(handler.path)
    a, sa = tcp()
    b, sb = tcp()
    gone, sg = tcp()
    ch1.hand(sa, "orphan-a")
    ch1.hand(sb, "orphan-b")
    ch1.hand(sg, "orphan-gone")
    for c in (a, b, gone):
        assert_echo(c, b"hi\n")
    ends = handler.channel_ends()
    ch1.close()
    wait_until(lambda: handler.channel_ends() > ends, 5.0, message="the handler seeing ch1 end")
    assert_echo(a, b"echo while an orphan\n")
    # Its EOF echo is sent in the same step as its forgetting.
    close_client(gone)
    ch2 = Channel(handler.path)        # asserts the hello comes first
    assert sorted(ch2.lines(2)) == [b"held orphan-a 127.0.0.1\n", b"held orphan-b 127.0.0.1\n"]
    close_client(b)
    assert ch2.line() == b"closed orphan-b\n"   # not "orphan-gone"
    assert_echo(a, b"adopted\n")
    close_client(a)
    assert ch2.line() == b"closed orphan-a\n"


MALFORMED = {
    "bad_signature": dict(sig=b"\r\n\r\n\x00\r\nQUIX\n"),
    "version_1": dict(cmd=0x11),
    "unix_family": dict(family=0x31),
    "length_too_long": dict(length=0xFFFF),
    "length_short_of_addresses": dict(length=5),
    # After the id, so that only the bounds check can refuse it.
    "tlv_past_the_end": dict(trailing=b"\xe0\x00\x50abc"),
    "tlv_cut_short": dict(trailing=b"\xe0\x00"),
    "no_unique_id": dict(uid=None, extra_tlvs=tlv(0x01, b"h2")),
    "unique_id_too_long": dict(uid="x" * 65),
    "unique_id_with_space": dict(uid="bad id"),
    "two_unique_ids": dict(extra_tlvs=tlv(0x05, b"first")),
}


@pytest.mark.parametrize("bad", sorted(MALFORMED) + ["no_descriptor"])
def test_malformed_header_ends_only_that_channel(handler, tcp, bad):
    """A malformed message ends its channel: the descriptor it came with
    is closed (its client sees EOF), the channel's good client is held on
    the next channel, and the handler serves that channel."""
    ch1 = Channel(handler.path)
    good, sgood = tcp()
    ch1.hand(sgood, "good-1")
    assert_echo(good, b"good\n")
    victim, sv = tcp()
    if bad == "no_descriptor":
        ch1.sock.sendall(v2_header(sv, "no-fd"))
        sv.close()
    else:
        kw = dict(MALFORMED[bad])
        uid = kw.pop("uid", "victim-1")
        hdr = v2_header(sv, uid, **kw)
        if bad == "length_short_of_addresses":
            hdr = hdr[:16 + 5]
        socket.send_fds(ch1.sock, [hdr], [sv.fileno()])
        sv.close()
    ch1.expect_eof()
    victim.settimeout(scaled(5))
    try:
        assert victim.recv(1) == b"", "the victim's socket was not closed"
    except ConnectionResetError:
        pass
    assert handler.proc.poll() is None
    ch2 = Channel(handler.path)
    assert ch2.line() == b"held good-1 127.0.0.1\n"
    assert_echo(good, b"still good\n")
    c, s = tcp()
    ch2.hand(s, "after-1")
    assert_echo(c, b"after\n")
    close_client(c)
    assert ch2.line() == b"closed after-1\n"
    close_client(good)
    assert ch2.line() == b"closed good-1\n"


def test_abstract_socket_name(tmp_path, tcp):
    """Both handlers take "@name" (the Linux abstract namespace)."""
    for kind in ("c", "py"):
        name = "@esockd-handoff-test-%d-%s" % (os.getpid(), kind)
        h = Handler(kind, name, tmp_path / ("%s.log" % kind))
        try:
            ch = Channel("\0" + name[1:])
            c, s = tcp()
            ch.hand(s, "abs-" + kind)
            assert_echo(c, b"abstract\n")
            close_client(c)
            assert ch.line() == b"closed abs-%s\n" % kind.encode()
            ch.close()
        finally:
            assert h.stop() == 0, h.log()
