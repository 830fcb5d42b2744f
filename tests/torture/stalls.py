"""What scenarios 3 and 4 (a peer that never reads) share: a byte stream
that can be checked at any offset, a backend in one thread that floods or
sinks many connections, stalled loopback clients that behave like ones
across the Internet, the worker's PSS, and a side connection's MB/s.

The clients set an Internet MSS (1460) and small socket buffers: over
loopback's 64 KiB MSS the kernel gives each of esockd's sockets a send
buffer of about 4 MiB at once, and a client that sends fast grows
esockd's receive buffer; a thousand stalled connections would then pin
gigabytes of the machine's TCP memory (tcp_mem), which is the kernel's
business, not esockd's, and would starve everything else on it.
"""
import random
import selectors
import socket
import ssl
import subprocess
import threading
import time

from esockd_helpers import ESOCKD_BIN


PERIOD = 65521          # a prime: no chunk size lines up with it
PATTERN = random.Random(15).randbytes(PERIOD)
_TWICE = PATTERN * 2
CHUNK = 32768
MSS = 1460
SOCKBUF = 16384


def expected(offset, n):
    """The stream's bytes [offset, offset + n)."""
    out = bytearray()
    while n > 0:
        o = offset % PERIOD
        take = min(n, PERIOD)
        out += _TWICE[o:o + take]
        offset += take
        n -= take
    return bytes(out)


def sanitized():
    """Is the esockd under test a sanitizer build?  Its allocator keeps
    freed memory in quarantine and pads every block, so its PSS says
    nothing about esockd's own: the memory bounds hold for the plain
    build only (make torture runs both)."""
    with open(ESOCKD_BIN, "rb") as f:
        return b"__asan_init" in f.read()


def pss_kib(pid):
    """The process's proportional set size (smaps_rollup), KiB."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    raise AssertionError("no Pss for pid %d" % pid)


def make_cert(tmp_path):
    """A self-signed ECDSA certificate for localhost: (cert, key)."""
    cert, key = str(tmp_path / "t.crt"), str(tmp_path / "t.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-keyout", key, "-out", cert],
                   check=True, capture_output=True, timeout=30)
    return cert, key


def client(port, ctx=None, timeout=10.0):
    """A loopback client with an Internet MSS and small buffers (see above), TLS when ctx is given (handshake done)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, MSS)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKBUF)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKBUF)
        s.settimeout(timeout)
        s.connect(("127.0.0.1", port))
        if ctx is not None:
            s = ctx.wrap_socket(s, server_hostname="localhost")
    except BaseException:
        s.close()
        raise
    return s


def client_ctx(cert):
    """A client context that trusts cert."""
    return ssl.create_default_context(cafile=cert)


class Backend:
    """A Unix-socket backend in one thread for many connections.  mode
    "flood": send the stream to each without end, read nothing; mode
    "sink": read nothing until release(), then read each to EOF, checking
    every byte against the stream.  .sent / .received per connection, in
    accept order."""

    def __init__(self, path, mode, sndbuf=65536):
        self.path, self.mode, self.sndbuf = str(path), mode, sndbuf
        self.conns = []         # [{"sock", "sent", "received", "eof", "bad"}]
        self.errors = []
        self._release = threading.Event()
        self._stop = threading.Event()
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(self.path)
        self.srv.listen(4096)
        self.srv.setblocking(False)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def total_sent(self):
        return sum(c["sent"] for c in list(self.conns))

    def release(self):
        self._release.set()

    def _accept(self, sel):
        while True:
            try:
                s, _ = self.srv.accept()
            except (BlockingIOError, InterruptedError):
                return
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
            s.setblocking(False)
            c = {"sock": s, "sent": 0, "received": 0, "eof": False, "bad": None}
            self.conns.append(c)
            if self.mode == "flood":
                sel.register(s, selectors.EVENT_WRITE, c)
            elif self._release.is_set():
                sel.register(s, selectors.EVENT_READ, c)
            else:
                c["parked"] = True      # read nothing until release()

    def _run(self):
        sel = selectors.DefaultSelector()
        sel.register(self.srv, selectors.EVENT_READ, None)
        released = False
        try:
            while not self._stop.is_set():
                if self.mode == "sink" and self._release.is_set() and not released:
                    released = True
                    for c in self.conns:
                        if c.pop("parked", False):
                            sel.register(c["sock"], selectors.EVENT_READ, c)
                for key, _ in sel.select(0.1):
                    c = key.data
                    if c is None:
                        self._accept(sel)
                    elif self.mode == "flood":
                        self._send(sel, c)
                    else:
                        self._recv(sel, c)
        except Exception as e:  # for the test to see
            self.errors.append(repr(e))
        finally:
            sel.close()

    def _send(self, sel, c):
        o = c["sent"] % PERIOD
        try:
            c["sent"] += c["sock"].send(_TWICE[o:o + CHUNK])
        except (BlockingIOError, InterruptedError):
            pass
        except OSError:
            sel.unregister(c["sock"])
            c["sock"].close()
            c["eof"] = True

    def _recv(self, sel, c):
        try:
            data = c["sock"].recv(1 << 18)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            data, c["bad"] = b"", c["bad"] or repr(e)
        if data and c["bad"] is None and data != expected(c["received"], len(data)):
            c["bad"] = "bytes differ from the stream after offset %d" % c["received"]
        c["received"] += len(data)
        if not data:
            sel.unregister(c["sock"])
            c["sock"].close()
            c["eof"] = True

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=5)
        self.srv.close()
        for c in self.conns:
            try:
                c["sock"].close()
            except OSError:
                pass


def settled(read, quiet=0.5, timeout=30.0):
    """Wait until read() stops growing for `quiet` seconds; its last value."""
    last, since = read(), time.monotonic()
    deadline = since + timeout
    while True:
        time.sleep(0.1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
        assert time.monotonic() < deadline, "still moving after %.0f s" % timeout


def side_mb_per_s(port, ctx, nbytes):
    """Echo nbytes through a fresh side connection: MB/s, bytes checked."""
    data = expected(12345, nbytes)
    s = client(port, ctx)
    try:
        t0 = time.monotonic()
        got = echo(s, data, timeout=60)
        secs = time.monotonic() - t0
    finally:
        s.close()
    assert got == data, "side connection: %d of %d bytes, or different ones" % (len(got), len(data))
    return nbytes / secs / 1e6


AGAIN = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


def echo(s, data, timeout=60):
    """Send data and read as much back, in one thread (an SSL object must
    not be used by two at once), with selectors (descriptors past 1024)."""
    s.setblocking(False)
    view, sent, got = memoryview(data), 0, bytearray()
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.monotonic() + timeout
    try:
        while len(got) < len(data):
            assert time.monotonic() < deadline, "TLS echo: %d of %d bytes" % (len(got), len(data))
            if sent == len(data):
                sel.modify(s, selectors.EVENT_READ)
            sel.select(0.5)
            if sent < len(data):
                try:
                    sent += s.send(view[sent:sent + CHUNK])
                except AGAIN:
                    pass
            while True:
                try:
                    chunk = s.recv(1 << 18)
                except AGAIN:
                    break
                assert chunk, "TLS echo: EOF after %d bytes" % len(got)
                got += chunk
    finally:
        sel.close()
        s.setblocking(True)
    return bytes(got)


class Pusher:
    """Clients that send the stream without end, in one thread: each
    sends whenever its socket takes more.  A TLS send that wants a retry
    is retried with the same bytes (the stream's, from the same offset),
    as OpenSSL requires; finish() completes such retries, then shuts each
    client for writing, so the backend can see exactly .sent[i] bytes."""

    def __init__(self, socks):
        self.socks = socks
        self.sent = [0] * len(socks)
        self.owe = [False] * len(socks)
        self.errors = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def total(self):
        return sum(self.sent)

    def _run(self):
        sel = selectors.DefaultSelector()
        for i, s in enumerate(self.socks):
            s.setblocking(False)
            sel.register(s, selectors.EVENT_WRITE, i)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.1):
                    i = key.data
                    o = self.sent[i] % PERIOD
                    try:
                        self.sent[i] += self.socks[i].send(_TWICE[o:o + CHUNK])
                        self.owe[i] = False
                    except AGAIN:
                        self.owe[i] = isinstance(self.socks[i], ssl.SSLSocket)
        except Exception as e:  # for the test to see
            self.errors.append(repr(e))
        finally:
            sel.close()

    def finish(self, timeout=30):
        self._stop.set()
        self.thread.join(timeout=5)
        for i, s in enumerate(self.socks):
            s.settimeout(timeout)
            if self.owe[i]:
                o = self.sent[i] % PERIOD
                self.sent[i] += s.send(_TWICE[o:o + CHUNK])
            s.shutdown(socket.SHUT_WR)


# Every refusal counter before admission; STALL_REFUSALS adds the failures
# a stalled connection must not cause either (scenarios 3 and 4).
REFUSALS = ("rejected_limit", "rejected_global_limit", "rejected_rule", "rejected_rate",
            "rejected_source", "rejected_source_rate", "rejected_emfile",
            "rejected_handshakes", "rejected_early_drop")
STALL_REFUSALS = REFUSALS + ("backend_failures", "tls_failures")


# KiB of worker PSS per stalled connection, at most, and the share of its
# MB/s the side connection keeps at least (1/SIDE_FACTOR).
BOUND_KIB = {"plain": 4.0, "tls": 40.0}
SIDE_FACTOR = 4


class StallRig:
    """The frame scenarios 3 and 4 share: one worker with a 'stall'
    listener on `backend` and a 'side' listener on an echo handler,
    plain or TLS (kind); n stalled connections (100 short, 1,000 long);
    the side connection's MB/s before.  check_stalled() judges the
    stalled state, check_books() the counts at the end."""

    def __init__(self, esockd, tmp_path, request, kind, backend):
        from torture import scale
        self.kind = kind
        self.n = scale(request, 100, 1000)
        self.side_bytes = scale(request, 8 << 20, 32 << 20)
        self.san = sanitized()      # its PSS is the sanitizer's: no bound then
        tls, self.ctx = {}, None
        if kind == "tls":
            cert, key = make_cert(tmp_path)
            tls, self.ctx = {"tls_certificate": cert, "tls_key": key}, client_ctx(cert)
        self.d = esockd.start(workers=1, max_open_files=4 * self.n + 1000,
                              listeners=[dict(name="stall", backend=backend.path, **tls),
                                         dict(name="side", **tls)])
        self.worker = self.d.worker_pids()[1]
        self.base_mbs = self.side_mbs()

    def side_mbs(self):
        return max(side_mb_per_s(self.d.ports["side"], self.ctx, self.side_bytes)
                   for _ in range(2))

    def client(self):
        return client(self.d.ports["stall"], self.ctx)

    def check_stalled(self, pss0, what):
        """n + 1 connections stalled, after pss0 was taken with the first:
        the books, the PSS per connection within its bound, the side's
        MB/s.  Returns (pss1, per_conn, during_mbs)."""
        st = self.d.stats()["stall"]
        assert st["accepted"] - st["closed"] == self.n + 1 == st["connections"], st
        pss1 = pss_kib(self.worker)
        per_conn = (pss1 - pss0) / self.n
        during_mbs = self.side_mbs()
        assert self.san or per_conn <= BOUND_KIB[self.kind], (
            "%s: %.1f KiB of worker PSS per %s (bound %.0f KiB; %d KiB before, "
            "%d after %d connections)"
            % (self.kind, per_conn, what, BOUND_KIB[self.kind], pss0, pss1, self.n))
        assert during_mbs >= self.base_mbs / SIDE_FACTOR, (
            "the side connection fell from %.0f MB/s to %.0f with %d of %s"
            % (self.base_mbs, during_mbs, self.n, what))
        return pss1, per_conn, during_mbs

    def check_books(self, st):
        """The end: the side's 4 transfers closed, nothing refused."""
        side_st = self.d.stats()["side"]
        assert side_st["accepted"] == side_st["closed"] == 4, side_st
        for k in STALL_REFUSALS:
            assert st[k] == 0 and side_st[k] == 0, (k, st, side_st)

    def record(self, request, title, pss0, pss1, per_conn, during_mbs, **more):
        from torture import record
        record(request, title, connections=self.n, pss_per_connection_kib=round(per_conn, 2),
               bound_kib="none (sanitizer)" if self.san else BOUND_KIB[self.kind],
               worker_pss_before_kib=pss0, worker_pss_after_kib=pss1,
               side_mb_s_before=round(self.base_mbs, 1),
               side_mb_s_during=round(during_mbs, 1), **more)
