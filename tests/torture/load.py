"""Load for the torture scenarios: clients whose every byte is checked.

Stream: the bytes one connection sends, a function of (seed, offset)
only, so what comes back can be compared with what was sent at the same
offset without keeping it, and hashed (sha256) on both sides.

Relays: long-lived connections through an echo backend, all in one
thread with a selector, each sending its stream continuously (a bounded
window in flight, a bounded total rate), every byte received compared
with the stream.  A connection that ends keeps what it had received (a
prefix of what it sent, checked) and is counted lost.

Churn: short connections in a loop, K at a time in one thread: connect,
send a few KiB, read the echo back byte-exact, shut down, see EOF, close.
Every try ends as done, or as a failure with its kind (refused, reset,
short, timeout).
"""
import hashlib
import os
import selectors
import socket
import struct
import threading
import time

CHUNK = 65536


def _make_pattern():
    rnd = os.urandom(1 << 18)
    return rnd + rnd


# Made once, at import, for every stream of the process.  (It was made
# lazily by whichever thread asked first, unlocked: the Relays and Churn
# threads starting together could each make one, so a connection's
# sender and verifier read different patterns and its first chunk came
# back "corrupt" though esockd had relayed it byte for byte.)
_PATTERN = _make_pattern()


def _pattern():
    return _PATTERN


class Stream:
    """The endless byte stream of one connection: 64 KiB chunks, each the
    seed and chunk number (16 bytes) then a slice of a random pattern
    chosen by both, so no two chunks of any two streams are alike."""

    def __init__(self, seed):
        self.seed = seed
        self._k = -1
        self._chunk = b""

    def chunk(self, k):
        if k != self._k:
            pat = _pattern()
            off = (self.seed * 1000003 + k * 7919) % (1 << 18)
            self._chunk = struct.pack("<QQ", self.seed, k) + pat[off:off + CHUNK - 16]
            self._k = k
        return self._chunk

    def read(self, offset, n):
        """n bytes (or fewer, to the end of a chunk) from offset."""
        k, o = divmod(offset, CHUNK)
        return self.chunk(k)[o:o + n]


class Verifier:
    """Checks what comes back against a Stream and hashes it."""

    def __init__(self, seed):
        self.stream = Stream(seed)
        self.offset = 0
        self.sha = hashlib.sha256()
        self.bad_at = None     # first offset that differed
        self.bad_got = self.bad_want = b""

    def feed(self, data):
        mv = memoryview(data)
        pos = 0
        while pos < len(mv):
            want = self.stream.read(self.offset, len(mv) - pos)
            got = mv[pos:pos + len(want)]
            if self.bad_at is None and got != want:
                self.bad_at = self.offset
                # What came and what was due there (a chunk starts with
                # its seed and number: whose bytes they were).
                self.bad_got, self.bad_want = bytes(got[:32]), bytes(want[:32])
            pos += len(want)
            self.offset += len(want)
        self.sha.update(data)


class Sender:
    """The sending side: the stream's bytes from offset, hashed."""

    def __init__(self, seed):
        self.stream = Stream(seed)
        self.offset = 0
        self.sha = hashlib.sha256()

    def next(self, n):
        return self.stream.read(self.offset, n)

    def sent(self, data):
        self.offset += len(data)
        self.sha.update(data)


class Relay:
    """One long-lived connection of Relays."""

    def __init__(self, sock, seed):
        self.sock = sock
        self.seed = seed
        self.tx = Sender(seed)
        self.rx = Verifier(seed)
        self.open = True
        self.ended = None        # "eof" or "reset" or repr(error)
        self.ended_at = None
        self.echoed = False      # got a byte back since connecting

    def in_flight(self):
        return self.tx.offset - self.rx.offset

    def __repr__(self):
        return ("Relay(seed=%d sent=%d received=%d ended=%s bad_at=%s got=%s due=%s)"
                % (self.seed, self.tx.offset, self.rx.offset, self.ended, self.rx.bad_at,
                   self.rx.bad_got.hex(), self.rx.bad_want.hex()))


class Relays:
    """n connections to port relaying through an echo backend, in a thread.

    window: bytes in flight per connection; rate: bytes per second sent
    by all of them together (the machine is shared).  stop_sending()
    then drained() ends a run: every open connection got back all it
    sent."""

    def __init__(self, port, n, window=16384, rate=8 << 20, seed_base=0):
        self.port = port
        self.window = window
        self.rate = rate
        self.sel = selectors.DefaultSelector()
        self.lock = threading.Lock()
        self.relays = []
        self.lost = []
        self.sending = True
        self._stop = threading.Event()
        self._seed = seed_base
        self.error = None
        self.add(n)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def add(self, n):
        """Open n more connections (blocking connects, loopback)."""
        new = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            s.setblocking(False)
            self._seed += 1
            new.append(Relay(s, self._seed))
        with self.lock:
            for r in new:
                self.relays.append(r)
                self.sel.register(r.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, r)
        return new

    def open_relays(self):
        with self.lock:
            return [r for r in self.relays if r.open]

    def all_echoing(self):
        return all(r.echoed for r in self.open_relays())

    def _end(self, r, how):
        r.open = False
        r.ended = how
        r.ended_at = time.monotonic()
        try:
            self.sel.unregister(r.sock)
        except (KeyError, ValueError):
            pass
        r.sock.close()
        self.lost.append(r)

    def _run(self):
        tokens, last, turn = 0.0, time.monotonic(), 0
        try:
            while not self._stop.is_set():
                with self.lock:
                    events = self.sel.select(0.05) if self.sel.get_map() else []
                    now = time.monotonic()
                    tokens = min(tokens + (now - last) * self.rate, self.rate / 10)
                    last = now
                    # Round-robin by descriptor from where the rate last
                    # ran out, so that no connection starves.
                    events.sort(key=lambda e: e[0].fd)
                    cut = next((i for i, e in enumerate(events) if e[0].fd > turn), 0)
                    events = events[cut:] + events[:cut]
                    for key, mask in events:
                        r = key.data
                        if not r.open:
                            continue
                        if mask & selectors.EVENT_READ:
                            try:
                                data = r.sock.recv(CHUNK)
                            except BlockingIOError:
                                data = None
                            except OSError:
                                self._end(r, "reset")
                                continue
                            if data == b"":
                                self._end(r, "eof")
                                continue
                            if data:
                                r.rx.feed(data)
                                r.echoed = True
                        if mask & selectors.EVENT_WRITE and r.open:
                            room = self.window - r.in_flight()
                            if self.sending and room > 0 and tokens > 0:
                                buf = r.tx.next(min(room, 4096))
                                try:
                                    n = r.sock.send(buf)
                                except BlockingIOError:
                                    n = 0
                                except OSError:
                                    self._end(r, "reset")
                                    continue
                                r.tx.sent(buf[:n])
                                tokens -= n
                                turn = key.fd
                    # Write interest only where it can be used.
                    for r in self.relays:
                        if r.open:
                            want = selectors.EVENT_READ
                            if self.sending and r.in_flight() < self.window:
                                want |= selectors.EVENT_WRITE
                            if self.sel.get_key(r.sock).events != want:
                                self.sel.modify(r.sock, want, r)
                if tokens <= 0:
                    time.sleep(0.005)
        except Exception as e:  # reported by check()
            self.error = repr(e)

    def stop_sending(self):
        self.sending = False

    def drained(self):
        """True once every open connection got back all it sent."""
        return all(r.rx.offset == r.tx.offset for r in self.open_relays())

    def close(self):
        self._stop.set()
        self.thread.join(timeout=5)
        with self.lock:
            for r in self.relays:
                if r.open:
                    r.open = False
                    r.sock.close()
        self.sel.close()

    def bytes_sent(self):
        return sum(r.tx.offset for r in self.relays)

    def bytes_received(self):
        return sum(r.rx.offset for r in self.relays)

    def corrupt(self):
        """Connections where a byte came back that was not sent there."""
        return [r for r in self.relays if r.rx.bad_at is not None or r.rx.offset > r.tx.offset]


class Churn:
    """k short connections at a time to port, in a thread, until stop():
    each sends size bytes of a fresh stream, reads them back, shuts down
    its side and waits for EOF.  done counts those that did; failures
    the others by kind."""

    def __init__(self, port, k, size=2048, timeout=10.0, seed_base=1 << 40, rate=None):
        self.port = port
        self.k = k
        self.size = size
        self.timeout = timeout
        self.rate = rate        # new connections per second at most
        self.done = 0
        self.bytes = 0
        self.failures = {}
        self.fail_detail = []
        self._seed = seed_base
        self._stop = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _fail(self, kind, detail):
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if len(self.fail_detail) < 20:
            self.fail_detail.append((kind, detail))

    def _new(self, sel):
        self._seed += 1
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        c = {"sock": s, "tx": Sender(self._seed), "rx": Verifier(self._seed),
             "state": "connecting", "start": time.monotonic()}
        err = s.connect_ex(("127.0.0.1", self.port))
        if err not in (0, 115):  # EINPROGRESS
            s.close()
            self._fail("refused" if err == 111 else "connect:%d" % err, "")
            return
        sel.register(s, selectors.EVENT_WRITE, c)

    def _finish(self, sel, c, kind=None, detail=""):
        sel.unregister(c["sock"])
        c["sock"].close()
        if kind is None:
            self.done += 1
            self.bytes += self.size
        else:
            self._fail(kind, detail)

    def _run(self):
        sel = selectors.DefaultSelector()
        gap = 1.0 / self.rate if self.rate else 0.0
        next_new = time.monotonic()
        try:
            while True:
                stopping = self._stop.is_set()
                if not stopping:
                    while len(sel.get_map()) < self.k and time.monotonic() >= next_new:
                        self._new(sel)
                        next_new = max(next_new + gap, time.monotonic() - 1.0)
                if not sel.get_map():
                    if stopping:
                        return
                    time.sleep(max(0.001, next_new - time.monotonic()))
                    continue
                now = time.monotonic()
                wait = 0.1 if not gap else min(0.1, max(0.0, next_new - now))
                for key, mask in sel.select(wait):
                    c = key.data
                    s = c["sock"]
                    try:
                        if c["state"] == "connecting":
                            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                            if err:
                                self._finish(sel, c, "refused" if err == 111 else "connect:%d" % err)
                                continue
                            c["state"] = "relay"
                            sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, c)
                            continue
                        if mask & selectors.EVENT_WRITE:
                            left = self.size - c["tx"].offset
                            if left > 0:
                                buf = c["tx"].next(left)
                                n = s.send(buf)
                                c["tx"].sent(buf[:n])
                            if c["tx"].offset == self.size:
                                s.shutdown(socket.SHUT_WR)
                                sel.modify(s, selectors.EVENT_READ, c)
                        if mask & selectors.EVENT_READ:
                            data = s.recv(CHUNK)
                            if data:
                                c["rx"].feed(data)
                                if c["rx"].bad_at is not None or c["rx"].offset > self.size:
                                    self._finish(sel, c, "corrupt", (c["rx"].bad_at, c["rx"].bad_got.hex(),
                                                                    c["rx"].bad_want.hex()))
                            elif c["rx"].offset == self.size and c["tx"].offset == self.size:
                                self._finish(sel, c)
                            else:
                                self._finish(sel, c, "short", "%d of %d" % (c["rx"].offset, self.size))
                    except BlockingIOError:
                        pass
                    except OSError as e:   # reset, broken pipe, not connected
                        self._finish(sel, c, "reset", repr(e))
                for key in list(sel.get_map().values()):
                    if now - key.data["start"] > self.timeout:
                        self._finish(sel, key.data, "timeout", key.data["state"])
        except Exception as e:
            self.error = repr(e)
        finally:
            for key in list(sel.get_map().values()):
                key.data["sock"].close()
            sel.close()

    def stop(self, timeout=15):
        """Let the connections under way finish, then stop."""
        self._stop.set()
        self.thread.join(timeout=timeout)
        assert not self.thread.is_alive(), "churn did not finish its last connections"
        assert self.error is None, self.error

    def tries(self):
        return self.done + sum(self.failures.values())


def pss_kib(pid):
    """Proportional set size of pid in KiB (None if it is gone)."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


CLOSE_REASONS = ("closed_normal", "closed_idle_timeout", "closed_handshake_timeout",
                 "closed_handshake_failed", "closed_handshake_evicted",
                 "closed_backend_unavailable", "closed_client_reset",
                 "closed_backend_reset", "closed_shutdown", "closed_local_error",
                 "closed_proxy_failed", "closed_refused", "closed_by_handler",
                 "closed_handler_lost", "closed_handoff_released", "closed_worker_lost")
REJECTIONS = ("rejected_limit", "rejected_global_limit", "rejected_rule", "rejected_rate",
              "rejected_source", "rejected_source_rate", "rejected_emfile",
              "rejected_handshakes", "rejected_early_drop")


def assert_books_balance(st, what=""):
    """accepted + adopted - closed = connections, and the close reasons
    sum to closed."""
    assert st["accepted"] + st["adopted"] - st["closed"] == st["connections"], (what, st)
    assert sum(st[r] for r in CLOSE_REASONS) == st["closed"], (what, st)
