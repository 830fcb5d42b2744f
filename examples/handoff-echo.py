#!/usr/bin/python3
"""handoff-echo.py SOCKET: an esockd hand-off handler that echoes, built
only on Python's standard library (3.9 or later: socket.recv_fds).

esockd, with a backend group's mode = "handoff", does not relay bytes:
each worker keeps one persistent Unix-socket "channel" to this handler
and passes it every admitted client's own socket.  The protocol, as used
here (esockd(8) has the contract):

- The handler listens on SOCKET (a path, or "@name" for the Linux
  abstract namespace) and greets each channel it accepts with the line
  "esockd-handoff 1\\n"; esockd hands nothing over before it.
- Per client, esockd sends one message: a PROXY protocol v2 header
  (16 fixed bytes, then `length` bytes of addresses and TLVs, always
  with a UNIQUE_ID TLV, type 0x05), with the client's descriptor attached
  (SCM_RIGHTS) to the header's first byte.  The handler reads the 16
  bytes, then exactly `length` more, never into the next message, and
  every read is socket.recv_fds with room for one descriptor: a read
  without that room would make the kernel close the descriptor.
- The handler then owns the client: here it echoes the client's bytes
  back, half-close aware (on the client's EOF it sends what is left,
  then shuts its write side and closes), and says "closed <id>\\n" on the
  client's channel when it closes it.
- When a channel ends (a worker exited, a reload retired it), its
  clients stay open: they are announced "held <id> <source>\\n" (the
  client's address as the header named it, which esockd counts under
  max_connections_per_source; just "held <id>\\n" after a LOCAL header)
  on the newest live channel, or after the hello of the next channel
  accepted when none is open, and belong to that channel from then on.
  A client that closes while it is such an orphan is simply forgotten:
  esockd counted it closed when its channel ended.
- A malformed message (bad signature, a length past what is taken, a
  TLV past the header's end, no UNIQUE_ID, no descriptor) ends that
  channel only; its descriptor is closed.

Single-threaded, one selectors loop.  SIGTERM or SIGINT stops it.
"""

import errno
import os
import selectors
import signal
import socket
import struct
import sys

HELLO = b"esockd-handoff 1\n"
SIG = b"\r\n\r\n\x00\r\nQUIT\n"
FIXED = 16
HEADER_MAX = 4096          # esockd's longest header fits (its PROXY_IN_MAX)
ID_MAX = 64                # the protocol's bound on the unique id
ADDRLEN = {0x11: 12, 0x21: 36, 0x00: 0}   # TCP4, TCP6, UNSPEC
HIGH = 1 << 20             # stop reading a client while this much waits
SEND_TIMEOUT = 1.0         # a record that waits longer ends its channel


class Malformed(Exception):
    """A message that ends its channel."""


def check_fixed(buf):
    """The length after the 16 fixed bytes, or Malformed."""
    if buf[:12] != SIG:
        raise Malformed("header: not the PROXY v2 signature")
    # LOCAL (0x20): esockd could not name the addresses; the spec says
    # take the connection and use its own endpoints.
    if buf[12] not in (0x21, 0x20):
        raise Malformed("header: version/command byte 0x%02x; 0x21 (v2, PROXY) "
                        "or 0x20 (v2, LOCAL) is right" % buf[12])
    fam = buf[13]
    if fam not in ADDRLEN:
        raise Malformed("header: family byte 0x%02x; 0x11, 0x21 or 0x00 is right" % fam)
    length = struct.unpack("!H", buf[14:16])[0]
    if length > HEADER_MAX - FIXED:
        raise Malformed("header: length %d; at most %d is taken" % (length, HEADER_MAX - FIXED))
    if length < ADDRLEN[fam]:
        raise Malformed("header: length %d is shorter than family 0x%02x's %d address bytes"
                        % (length, fam, ADDRLEN[fam]))
    return length


def parse_header(buf):
    """(id, src, dst) from one whole header; src/dst are (host, port) or None."""
    length = check_fixed(buf)
    if len(buf) != FIXED + length:
        raise Malformed("header: length %d but %d bytes" % (length, len(buf) - FIXED))
    fam = buf[13]
    p = FIXED
    src = dst = None
    if buf[12] == 0x20:
        pass        # LOCAL: whatever the block holds, no addresses named
    elif fam == 0x11:
        src = (socket.inet_ntop(socket.AF_INET, buf[p:p + 4]), struct.unpack("!H", buf[p + 8:p + 10])[0])
        dst = (socket.inet_ntop(socket.AF_INET, buf[p + 4:p + 8]), struct.unpack("!H", buf[p + 10:p + 12])[0])
    elif fam == 0x21:
        src = (socket.inet_ntop(socket.AF_INET6, buf[p:p + 16]), struct.unpack("!H", buf[p + 32:p + 34])[0])
        dst = (socket.inet_ntop(socket.AF_INET6, buf[p + 16:p + 32]), struct.unpack("!H", buf[p + 34:p + 36])[0])
    p += ADDRLEN[fam]
    uid = None
    while p < len(buf):
        if len(buf) - p < 3:
            raise Malformed("header: %d bytes at offset %d, too few for a TLV" % (len(buf) - p, p))
        t = buf[p]
        n = struct.unpack("!H", buf[p + 1:p + 3])[0]
        if n > len(buf) - p - 3:
            raise Malformed("header: TLV 0x%02x at offset %d has length %d, past the end" % (t, p, n))
        if t == 0x05:   # UNIQUE_ID; other types are skipped
            v = bytes(buf[p + 3:p + 3 + n])
            if uid is not None:
                raise Malformed("header: a second UNIQUE_ID")
            if not 1 <= n <= ID_MAX or any(b < 0x21 or b > 0x7e for b in v):
                raise Malformed("header: UNIQUE_ID must be 1 to %d printable bytes without spaces" % ID_MAX)
            uid = v.decode("ascii")
        p += 3 + n
    if uid is None:
        raise Malformed("header: no UNIQUE_ID TLV (0x05)")
    return uid, src, dst


def log(msg):
    print("handoff-echo: " + msg, file=sys.stderr, flush=True)


class Channel:
    """One connection from an esockd worker and its receive state."""

    def __init__(self, sock, serial):
        self.sock = sock
        self.serial = serial
        self.dead = False
        self.buf = bytearray()
        self.want = FIXED
        self.fd = -1        # the unfinished message's descriptor

    def send(self, line):
        """Write a record within SEND_TIMEOUT; False (and dead) if not."""
        if self.dead:
            return False
        try:
            self.sock.settimeout(SEND_TIMEOUT)
            self.sock.sendall(line)
            return True
        except OSError as e:
            log("channel %d: send: %s" % (self.serial, e))
            self.dead = True
            try:
                self.sock.shutdown(socket.SHUT_RDWR)   # the loop sees EOF
            except OSError:
                pass
            return False
        finally:
            if not self.dead:
                self.sock.setblocking(False)

    def drop_fd(self):
        if self.fd != -1:
            os.close(self.fd)
            self.fd = -1

    def read(self):
        """Yield (fd, id, src, dst) for each whole message; raise EOFError
        when the channel ended (closed, failed or malformed)."""
        if self.dead:
            raise EOFError("shut down")
        while True:
            try:
                data, fds, flags, _ = socket.recv_fds(self.sock, self.want - len(self.buf), 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                raise EOFError("recvmsg: %s" % e)
            for fd in fds:
                if self.fd == -1:
                    self.fd = fd
                else:
                    os.close(fd)
                    raise EOFError("more than one descriptor for one message")
            if flags & socket.MSG_CTRUNC:
                raise EOFError("descriptors truncated: exactly one is right")
            if not data:
                if self.buf:
                    raise EOFError("EOF after %d bytes of a message" % len(self.buf))
                raise EOFError("EOF")
            self.buf += data
            if len(self.buf) < self.want:
                continue
            try:
                if self.want == FIXED:
                    self.want = FIXED + check_fixed(self.buf)
                    if len(self.buf) < self.want:
                        continue
                uid, src, dst = parse_header(self.buf)
            except Malformed as e:
                raise EOFError(str(e))
            if self.fd == -1:
                raise EOFError("a message without its client's descriptor")
            fd, self.fd = self.fd, -1
            self.buf = bytearray()
            self.want = FIXED
            yield fd, uid, src, dst


class Client:
    """One echoed client: its socket, output and channel."""

    def __init__(self, sock, uid, src, chan):
        self.sock = sock
        self.id = uid
        self.src = src         # (host, port) the header named, or None
        self.chan = chan       # None: an orphan
        self.out = bytearray()
        self.eof = False


class Server:
    def __init__(self, path):
        self.path = path
        self.abstract = path.startswith("@")
        addr = "\0" + path[1:] if self.abstract else path
        if not self.abstract:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.lsock.bind(addr)
        self.lsock.listen(128)
        self.lsock.setblocking(False)
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, ("listen", None))
        self.channels = []     # oldest first
        self.clients = []
        self.serial = 0

    # -- channels --------------------------------------------------------

    def newest_live(self):
        for ch in reversed(self.channels):
            if not ch.dead:
                return ch
        return None

    def announce_orphans(self):
        """'held <id> <source>' for each orphan on the newest live channel
        (esockd counts it in its source's count by the address)."""
        while True:
            ch = self.newest_live()
            if ch is None:
                return
            for c in self.clients:
                if c.chan is None:
                    rec = "held %s" % c.id
                    if c.src is not None:
                        rec += " %s" % c.src[0]
                    if not ch.send(rec.encode() + b"\n"):
                        break
                    c.chan = ch
            else:
                return

    def accept_channel(self):
        try:
            sock, _ = self.lsock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            log("accept on %s: %s" % (self.path, e))
            return
        self.serial += 1
        ch = Channel(sock, self.serial)
        self.channels.append(ch)
        # The hello first: a "held" before it would be a bad hello.
        if not ch.send(HELLO):
            self.end_channel(ch, "hello not sent")
            return
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, ("chan", ch))
        self.announce_orphans()

    def forget(self, sock):
        """Stop watching sock and close it."""
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def end_channel(self, ch, why):
        log("channel %d ended (%s); its clients stay open" % (ch.serial, why))
        ch.dead = True
        ch.drop_fd()
        self.forget(ch.sock)
        self.channels.remove(ch)
        for c in self.clients:
            if c.chan is ch:
                c.chan = None
        self.announce_orphans()

    def on_channel(self, ch):
        try:
            for fd, uid, src, dst in ch.read():
                self.start_client(fd, uid, src, ch)
        except EOFError as e:
            self.end_channel(ch, str(e))

    # -- clients ---------------------------------------------------------

    def start_client(self, fd, uid, src, ch):
        try:
            sock = socket.socket(fileno=fd)
            sock.setblocking(False)
        except OSError as e:
            log("client %s: cannot take it: %s" % (uid, e))
            os.close(fd)
            ch.send(b"closed %s\n" % uid.encode())
            return
        c = Client(sock, uid, src, ch)
        self.clients.append(c)
        self.sel.register(sock, selectors.EVENT_READ, ("client", c))

    def close_client(self, c):
        self.forget(c.sock)
        self.clients.remove(c)
        # Closed, then said so; an orphan is forgotten (see the docstring).
        if c.chan is not None:
            c.chan.send(b"closed %s\n" % c.id.encode())

    def update(self, c):
        ev = 0
        if not c.eof and len(c.out) < HIGH:
            ev |= selectors.EVENT_READ
        if c.out:
            ev |= selectors.EVENT_WRITE
        if ev == 0:
            return
        self.sel.modify(c.sock, ev, ("client", c))

    def on_client(self, c, mask):
        if mask & selectors.EVENT_READ:
            try:
                data = c.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                self.close_client(c)
                return
            if data == b"":
                c.eof = True
            elif data:
                c.out += data
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                self.close_client(c)
                return
        if c.eof and not c.out:
            # Everything echoed: say EOF back, then leave.
            try:
                c.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self.close_client(c)
            return
        self.update(c)

    # -- loop --------------------------------------------------------------

    def run(self):
        while True:
            for key, mask in self.sel.select():
                kind, obj = key.data
                if kind == "listen":
                    self.accept_channel()
                elif kind == "chan":
                    if obj in self.channels:
                        self.on_channel(obj)
                elif kind == "client":
                    if obj in self.clients:
                        self.on_client(obj, mask)

    def close(self):
        for c in list(self.clients):
            self.close_client(c)
        for ch in list(self.channels):
            ch.drop_fd()
            ch.sock.close()
        self.lsock.close()
        if not self.abstract:
            try:
                os.unlink(self.path)
            except OSError:
                pass


def main(argv):
    if len(argv) != 2 or not argv[1] or argv[1] == "@":
        print("usage: handoff-echo.py SOCKET (a path, or @NAME)", file=sys.stderr)
        return 2
    try:
        srv = Server(argv[1])
    except OSError as e:
        log("cannot listen on %s: %s" % (argv[1], e))
        return 1

    def stop(signum, frame):
        # select() restarts after a handler (PEP 475): leave the loop.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    log("hand-off on %s" % argv[1])
    try:
        srv.run()
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
