"""Shared helpers for the esockd integration tests.

Only the Python standard library is used here.  Everything that waits is
bounded by an explicit timeout; nothing sleeps and then asserts.
"""

import os
import re
import selectors
import select
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ESOCKD_BIN = os.environ.get("ESOCKD_BIN", str(REPO / "build" / "esockd"))
ECHO_HANDLER_BIN = os.environ.get("ECHO_HANDLER_BIN", str(REPO / "build" / "echo-handler"))

# A command put before esockd wherever the suite starts a daemon (make
# valgrind: memcheck), split as a shell would; empty by default, so the
# plain and sanitizer runs start esockd itself.  It must run esockd in its
# own pid (valgrind does), so that the pid the tests signal is the master.
ESOCKD_WRAPPER = shlex.split(os.environ.get("ESOCKD_WRAPPER", ""))
UNDER_VALGRIND = bool(ESOCKD_WRAPPER) and "valgrind" in os.path.basename(ESOCKD_WRAPPER[0])
# How much slower the daemon runs under the wrapper (valgrind: 20-50x the
# CPU, less in wall time for a mostly idle daemon): the waits that only
# bound "eventually" (startup, wait_until, reads, the per-test limit,
# teardown) are multiplied by it.  1 by default: the plain run is unchanged.
TIME_SCALE = float(os.environ.get("ESOCKD_TIME_SCALE", "1"))


def scaled(seconds):
    """A wait of `seconds` stretched by ESOCKD_TIME_SCALE."""
    return seconds * TIME_SCALE


def esockd_argv(*args):
    """The command line that runs esockd with `args` (under the wrapper)."""
    return ESOCKD_WRAPPER + [ESOCKD_BIN] + list(args)


def skip_under_valgrind(reason):
    """pytest mark: skip this timing-sensitive test under make valgrind,
    saying why (the plain and ASan runs still run it unchanged)."""
    import pytest
    return pytest.mark.skipif(UNDER_VALGRIND, reason="under valgrind: " + reason)


STARTUP_TIMEOUT = scaled(10.0)

# Reports from the sanitizer build (build/san/): ASan, LSan, UBSan, TSan.
SANITIZER_RE = re.compile(r"ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|"
                          r"WARNING: (?:Address|Thread)Sanitizer|"
                          r"SUMMARY: \w+Sanitizer|runtime error: ")


def sanitizer_reports(text):
    """Lines of `text` that are sanitizer findings (empty list if none)."""
    return [line for line in text.splitlines() if SANITIZER_RE.search(line)]


# --------------------------------------------------------------------------
# generic waiting / socket helpers
# --------------------------------------------------------------------------

def wait_until(predicate, timeout, interval=0.05, message=None):
    """Call predicate() until it returns a truthy value; return that value.

    Raises AssertionError after `timeout` seconds (times ESOCKD_TIME_SCALE).
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, message or getattr(predicate, "__name__", predicate)))
        time.sleep(interval)


def free_port(host="127.0.0.1"):
    """A currently unused TCP port on the loopback address `host`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_usable():
    """Return None if [::1] can be bound and connected to, else a reason string."""
    if not socket.has_ipv6:
        return "Python was built without IPv6 support"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as srv:
            srv.bind(("::1", 0))
            srv.listen(1)
            with socket.create_connection(("::1", srv.getsockname()[1]), timeout=2):
                pass
    except OSError as e:
        return "::1 is not usable on this host: %s" % e
    return None


def connect(port, host="127.0.0.1", timeout=5.0, source=None):
    """A blocking TCP connection to the gateway (loopback only), from a
    chosen loopback source address when given (127.0.0.0/8 or ::1)."""
    assert host in ("127.0.0.1", "::1"), "tests must only talk to loopback"
    if source is None:
        return socket.create_connection((host, port), timeout=timeout)
    assert source == "::1" or source.startswith("127."), source
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET,
                      socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.bind((source, 0))
        s.connect((host, port))
    except BaseException:
        s.close()
        raise
    return s


def recv_exact(sock, n, timeout=5.0):
    """Receive exactly n bytes or raise AssertionError (EOF / timeout)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("timeout: got %d of %d bytes" % (len(buf), n))
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(min(n - len(buf), 1 << 20))
        except socket.timeout:
            raise AssertionError("timeout: got %d of %d bytes" % (len(buf), n)) from None
        if not chunk:
            raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return bytes(buf)


def recv_until_eof(sock, timeout=5.0, max_bytes=1 << 30):
    """Read until EOF; return the data.  Raises AssertionError on timeout.

    ConnectionResetError is passed through to the caller.
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no EOF within %.1fs (got %d bytes)" % (timeout, len(buf)))
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 20)
        except socket.timeout:
            raise AssertionError("no EOF within %.1fs (got %d bytes)" % (timeout, len(buf))) from None
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise AssertionError("more than %d bytes before EOF" % max_bytes)


def exchange(sock, data, expect_len=None, shut_wr=False, until_eof=False, timeout=10.0):
    """Send `data` while receiving at the same time (no buffer deadlock).

    Stops when `expect_len` bytes were received (default len(data)), or, with
    until_eof, at EOF.  With shut_wr the write side is shut down after the
    last byte was sent.  Returns (received_bytes, saw_eof).
    Raises AssertionError on timeout; socket errors are passed through.
    """
    if expect_len is None:
        expect_len = len(data)
    timeout = scaled(timeout)
    view = memoryview(data)
    sent = 0
    received = bytearray()
    eof = False
    shut = False
    old_timeout = sock.gettimeout()
    sock.setblocking(False)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if sent == len(view) and shut_wr and not shut:
                sock.shutdown(socket.SHUT_WR)
                shut = True
            if eof or (not until_eof and len(received) >= expect_len and sent == len(view)):
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError("exchange timed out after %.1fs: sent %d/%d, received %d/%s"
                                     % (timeout, sent, len(view), len(received),
                                        "EOF" if until_eof else expect_len))
            wlist = [sock] if sent < len(view) else []
            r, w, _ = select.select([sock], wlist, [], min(remaining, 0.5))
            if w:
                try:
                    sent += sock.send(view[sent:sent + (1 << 18)])
                except BlockingIOError:
                    pass
            if r:
                try:
                    chunk = sock.recv(1 << 20)
                except BlockingIOError:
                    continue
                if not chunk:
                    eof = True
                    if sent < len(view) and not until_eof:
                        break
                else:
                    received += chunk
    finally:
        try:
            sock.settimeout(old_timeout)
        except OSError:
            pass
    return bytes(received), eof


def assert_echo(sock, data, timeout=5.0):
    """Send data and assert that exactly the same bytes come back."""
    got, eof = exchange(sock, data, timeout=timeout)
    if got != data:
        raise AssertionError("echo mismatch: sent %d bytes, got %d bytes%s (first bytes %r vs %r)"
                             % (len(data), len(got), " then EOF" if eof else "",
                                data[:32], got[:32]))
    return got


def echo_once(port, data=b"ping\n", host="127.0.0.1", timeout=2.0):
    """Open a fresh connection, check one echo, close.  Returns True/False."""
    try:
        with connect(port, host=host, timeout=timeout) as s:
            assert_echo(s, data, timeout=timeout)
        return True
    except (OSError, AssertionError):
        return False


def try_echo(port, tag, host="127.0.0.1", source=None, timeout=5.0):
    """Connect (from source, if given) and send tag: (read_outcome's
    word, or "reset", and the socket, left open only when echoed)."""
    s = connect(port, host=host, source=source)
    try:
        s.sendall(tag)
        outcome = read_outcome(s, tag, timeout=timeout)
    except (ConnectionResetError, BrokenPipeError):
        outcome = "reset"
    if outcome != "echo":
        s.close()
    return outcome, s


def admitted(port, tag, host="127.0.0.1", source=None, timeout=5.0):
    """Connect (from source, if given) and send tag: (socket, True) when
    it is relayed (its echo came back), (None, False) when the gateway
    closed it; anything else fails the test."""
    outcome, s = try_echo(port, tag, host=host, source=source, timeout=timeout)
    if outcome == "echo":
        return s, True
    assert outcome in ("eof", "reset"), "unexpected outcome %s for %r" % (outcome, tag)
    return None, False


def read_outcome(sock, expect, timeout=3.0):
    """Classify what the peer does after we sent `expect`.

    Returns one of 'echo' (got exactly `expect`), 'eof' (EOF with no data),
    'reset' (connection reset without data), 'data' (other/partial data),
    'timeout'.
    """
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return "timeout" if not buf else "data"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            return "timeout" if not buf else "data"
        except (ConnectionResetError, BrokenPipeError):
            return "reset" if not buf else "data"
        if not chunk:
            return "eof" if not buf else "data"
        buf += chunk
        if len(buf) >= len(expect):
            return "echo" if bytes(buf) == expect else "data"


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

def wait_outcomes(items, timeout):
    """items: [(sock, expected_bytes)] -> list of outcomes ('echo', 'eof',
    'reset', 'data', 'timeout'), all waited for concurrently."""
    outcomes = [None] * len(items)
    bufs = [bytearray() for _ in items]
    sel = selectors.DefaultSelector()
    for i, (s, _) in enumerate(items):
        if s is None:
            continue
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(min(remaining, 0.5)):
                i = key.data
                s, expected = items[i]
                try:
                    chunk = s.recv(4096)
                except BlockingIOError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    outcomes[i] = "reset" if not bufs[i] else "data"
                    sel.unregister(s)
                    continue
                if not chunk:
                    outcomes[i] = "eof" if not bufs[i] else "data"
                    sel.unregister(s)
                    continue
                bufs[i] += chunk
                if len(bufs[i]) >= len(expected):
                    outcomes[i] = "echo" if bytes(bufs[i]) == expected else "data"
                    sel.unregister(s)
    finally:
        sel.close()
    for s, _ in items:
        if s is not None:
            s.setblocking(True)
    return [o or "timeout" for o in outcomes]


def read_log(path):
    """A log file's text so far ("" before it exists)."""
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _proc_stat_fields(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    # fields after "(comm)"; index 0 = state (field 3 in proc(5))
    return data[data.rindex(")") + 2:].split()


def pid_alive(pid):
    """True if pid exists and is not a zombie."""
    try:
        return _proc_stat_fields(pid)[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, ValueError):
        return False


def cpu_seconds(pid):
    """utime + stime of pid in seconds."""
    f = _proc_stat_fields(pid)
    ticks = int(f[11]) + int(f[12])  # utime (14), stime (15)
    return ticks / os.sysconf("SC_CLK_TCK")


def pid_is_binary(pid, binary):
    """True if /proc/pid/exe is `binary` (guards against pid reuse)."""
    try:
        exe = os.readlink("/proc/%d/exe" % pid)
    except OSError:
        return False
    exe = exe.replace(" (deleted)", "")
    if os.path.realpath(exe) == os.path.realpath(binary):
        return True
    # Under the wrapper the exe is valgrind's tool; the client's path is
    # on its command line (workers are forks: the same command line).
    if ESOCKD_WRAPPER and binary == ESOCKD_BIN:
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            return False
        return os.fsencode(binary) in argv
    return False


def _terminate(proc, timeout=5.0):
    """SIGTERM, then SIGKILL, a Popen we started.  Returns the exit code."""
    timeout = scaled(timeout)
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    return proc.returncode


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------

class EchoHandler:
    """build/echo-handler serving a Unix socket."""

    def __init__(self, path, log_path):
        self.path = str(path)
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self._command(),
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT)
        try:
            wait_until(self._connectable, 5.0, message="echo-handler socket %s" % self.path)
        except AssertionError:
            self.stop()
            raise AssertionError("echo-handler did not come up at %s; output:\n%s"
                                 % (self.path, self.log()))

    def _command(self):
        return [ECHO_HANDLER_BIN, "-s", self.path]

    def _connectable(self):
        if self.proc.poll() is not None:
            raise AssertionError("echo-handler exited with %s; output:\n%s"
                                 % (self.proc.returncode, self.log()))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(self.path)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def log(self):
        return read_log(self.log_path)

    def stop(self):
        _terminate(self.proc, timeout=3.0)
        self._log.close()


def unix_address(path):
    """A socket path as Python's socket module takes it: "@name" is the
    Linux abstract namespace, a NUL and the name."""
    path = str(path)
    return "\0" + path[1:] if path.startswith("@") else path


class AbstractEchoHandler(EchoHandler):
    """build/echo-handler on an abstract name ("@name"): no file exists,
    so it is checked by connecting to the name itself."""

    def _connectable(self):
        # EchoHandler's probe, connecting to the address the name stands
        # for; self.path stays "@name" for the command line and messages.
        shown, self.path = self.path, unix_address(self.path)
        try:
            return super()._connectable()
        finally:
            self.path = shown


def record_until_eof(conn, record, echo=False):
    """A PyBackend handler's loop: keep what comes in record['received']
    (and send it back when echo), until EOF sets record['eof']."""
    while True:
        data = conn.recv(65536)
        if not data:
            record["eof"] = True
            return
        record["received"] += data
        if echo:
            conn.sendall(data)


def unix_listener(path, backlog):
    """A listening Unix stream socket at path whose accept() times out
    every 0.1 s, so that a serving thread can see it was told to stop."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.listen(backlog)
    s.settimeout(0.1)
    return s


class PyBackend:
    """A Unix-socket backend in a thread; `handler(conn, record)` runs per
    connection in its own thread.  `record` is a dict stored in .sessions."""

    def __init__(self, path, handler):
        self.path = str(path)
        self.handler = handler
        self.sessions = []
        self.errors = []
        self._stop = threading.Event()
        self.sock = unix_listener(self.path, 128)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = {"received": bytearray(), "eof": False, "done": threading.Event()}
            self.sessions.append(record)
            threading.Thread(target=self._run, args=(conn, record), daemon=True).start()

    def _run(self, conn, record):
        try:
            conn.settimeout(30)
            self.handler(conn, record)
        except Exception as e:  # recorded for the test to inspect
            self.errors.append(repr(e))
            record["error"] = repr(e)
        finally:
            conn.close()
            record["done"].set()

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=2)
        self.sock.close()


# --------------------------------------------------------------------------
# config rendering
# --------------------------------------------------------------------------

def cfg_value(v):
    """Render a Python value as a libconfig value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"%s"' % v.replace("\\", "\\\\").replace('"', '\\"')
    if isinstance(v, (list, tuple)):
        return "( " + ", ".join(cfg_value(x) for x in v) + " )"
    if isinstance(v, dict):
        return "{ " + " ".join("%s = %s;" % (k, cfg_value(x)) for k, x in v.items()) + " }"
    raise TypeError("cannot render %r" % (v,))


def render_config(top, listeners):
    """top: dict of top-level settings; listeners: list of dicts (each with
    'name', 'bind', 'backend' = dict, plus optional listener settings)."""
    lines = []
    for k, v in top.items():
        if v is not None:
            lines.append("%s = %s;" % (k, cfg_value(v)))
    lines.append("listeners = (")
    for i, lst in enumerate(listeners):
        lines.append("  {")
        for k, v in lst.items():
            if k == "backend":
                lines.append("    backend = {")
                for bk, bv in v.items():
                    lines.append("      %s = %s;" % (bk, cfg_value(bv)))
                lines.append("    };")
            else:
                lines.append("    %s = %s;" % (k, cfg_value(v)))
        lines.append("  }" + ("," if i < len(listeners) - 1 else ""))
    lines.append(");")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# the daemon
# --------------------------------------------------------------------------

LOG_LINE_RE = re.compile(
    r"(?P<label>master|worker\s+(?P<slot>\d+))\[(?P<pid>\d+)\]\s+(?P<level>[a-z]+):\s?(?P<msg>.*)$")
WORKER_STARTED_RE = re.compile(r"worker (\d+) started \(pid (\d+)\)")
WORKER_GEN_RE = re.compile(r"worker (\d+) started \(pid (\d+)\) in generation (\d+)")
STATS_RE = re.compile(r"\bstats listener=(\S+)(.*)$")
KV_RE = re.compile(r"(\w+)=(\S+)")


def parse_log_lines(text):
    """Yield dicts (label, slot, pid, level, msg, line) for each parseable line."""
    for line in text.splitlines():
        m = LOG_LINE_RE.search(line)
        if not m:
            continue
        yield {
            "label": "master" if m.group("label") == "master" else "worker",
            "slot": int(m.group("slot")) if m.group("slot") else None,
            "pid": int(m.group("pid")),
            "level": m.group("level"),
            "msg": m.group("msg"),
            "line": line,
        }


def parse_stats_msg(msg):
    m = STATS_RE.search(msg)
    if not m:
        return None
    name = m.group(1)
    st = {}
    for k, v in KV_RE.findall(m.group(2)):
        if k == "per_worker":
            st[k] = [int(x) for x in v.split("/") if x != ""]
        else:
            try:
                st[k] = int(v)
            except ValueError:
                st[k] = v
    return name, st


class Daemon:
    """A running `esockd -c conf` (started by DaemonFactory)."""

    def __init__(self, conf_path, log_path, listeners, env=None, argv_prefix=()):
        """env: variables added to (or, with value None, removed from) the
        daemon's environment.  argv_prefix: a command that execs esockd in
        its own pid (a shell or systemd-socket-activate), so that
        proc.pid is still the master's pid."""
        self.conf_path = Path(conf_path)
        self.log_path = Path(log_path)
        self.listeners = listeners
        self.names = [lst["name"] for lst in listeners]
        self.name = self.names[0]
        self.ports = {}
        for lst in listeners:
            self.ports[lst["name"]] = int(lst["bind"].rsplit(":", 1)[1])
        self.port = self.ports[self.name]
        self._log_file = open(self.log_path, "wb")
        environ = None
        if env:
            environ = dict(os.environ)
            for k, v in env.items():
                if v is None:
                    environ.pop(k, None)
                else:
                    environ[k] = v
        self.proc = subprocess.Popen(list(argv_prefix) + esockd_argv("-c", str(self.conf_path)),
                                     stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env=environ)
        self.master_pid = self.proc.pid
        self._all_worker_pids = set()

    # -- log ---------------------------------------------------------------
    def log(self):
        return read_log(self.log_path)

    def log_size(self):
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset):
        """Complete lines written after byte `offset`."""
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        text = data.decode(errors="replace")
        if not text.endswith("\n"):
            text = text[:text.rfind("\n") + 1]
        return text

    def log_lines(self, since=0):
        return list(parse_log_lines(self.log_since(since)))

    def wait_ready(self, timeout=STARTUP_TIMEOUT):
        """Wait for 'ready:'; returns None if ready, else the failure text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for rec in parse_log_lines(self.log_since(0)):
                if rec["label"] == "master" and rec["msg"].startswith("ready:"):
                    return None
            if self.proc.poll() is not None:
                return "esockd exited with status %s before ready" % self.proc.returncode
            time.sleep(0.02)
        return "no 'ready:' line within %.0fs" % timeout

    # -- processes -----------------------------------------------------------
    def alive(self):
        return self.proc.poll() is None

    def signal(self, sig):
        assert self.proc.poll() is None, "master already exited (%s)" % self.proc.returncode
        os.kill(self.master_pid, sig)

    def worker_pids(self):
        """{slot: pid} from 'worker N started (pid P)' lines (latest per slot)."""
        pids = {}
        for rec in parse_log_lines(self.log_since(0)):
            if rec["label"] != "master":
                continue
            m = WORKER_STARTED_RE.search(rec["msg"])
            if m:
                pids[int(m.group(1))] = int(m.group(2))
                self._all_worker_pids.add(int(m.group(2)))
        return pids

    def generation_pids(self, generation=None):
        """{slot: pid} of one generation's workers (default: the newest)."""
        gens = {}
        for rec in parse_log_lines(self.log_since(0)):
            m = WORKER_GEN_RE.search(rec["msg"]) if rec["label"] == "master" else None
            if m:
                gens.setdefault(int(m.group(3)), {})[int(m.group(1))] = int(m.group(2))
                self._all_worker_pids.add(int(m.group(2)))
        if not gens:
            return {}
        return gens.get(generation if generation is not None else max(gens), {})

    # -- reload ------------------------------------------------------------
    def rewrite(self, top=None, listeners=None, text=None):
        """Write a new config to the same file (not applied until reload).
        top: changes to the top-level settings; listeners: the full new
        list (dicts with name, bind, backend, ...); text: raw text instead."""
        if text is None:
            if top:
                self.top.update(top)
            if listeners is not None:
                self.listeners = listeners
            text = render_config(self.top, self.listeners)
        if listeners is not None:
            self.names = [lst["name"] for lst in listeners]
            self.name = self.names[0]
            for lst in listeners:
                self.ports[lst["name"]] = int(lst["bind"].rsplit(":", 1)[1])
        self.conf_path.write_text(text)

    def reload(self, timeout=10.0):
        """SIGHUP and wait for the outcome: (True, generation) once
        'reloaded: generation N' is logged, (False, error lines) on
        'reload failed'."""
        offset = self.log_size()
        self.signal(signal.SIGHUP)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = [r for r in parse_log_lines(self.log_since(offset)) if r["label"] == "master"]
            for rec in recs:
                m = re.match(r"reloaded: generation (\d+)", rec["msg"])
                if m:
                    return True, int(m.group(1))
                if rec["msg"].startswith("reload failed"):
                    return False, [r["msg"] for r in recs if r["level"] == "error"]
            if self.proc.poll() is not None:
                raise AssertionError("master exited (%s) during reload" % self.proc.returncode)
            time.sleep(0.02)
        raise AssertionError("no reload outcome within %.0fs:\n%s" % (timeout, self.log_since(offset)))

    def all_worker_pids(self):
        self.worker_pids()
        return set(self._all_worker_pids)

    # -- stats -------------------------------------------------------------
    def stats(self, timeout=5.0):
        """SIGUSR1 the master and return {listener: {counter: int, per_worker: [..]}}
        from the new stats lines (one per listener)."""
        offset = self.log_size()
        self.signal(signal.SIGUSR1)
        timeout = scaled(timeout)
        deadline = time.monotonic() + timeout
        while True:
            found = {}
            complete = False
            for rec in parse_log_lines(self.log_since(offset)):
                if rec["label"] != "master":
                    continue
                # The global line follows every listener's (a draining
                # one's last, after those the config names).
                if rec["msg"].startswith("stats global "):
                    complete = True
                    break
                parsed = parse_stats_msg(rec["msg"])
                if parsed and parsed[0] not in found:
                    found[parsed[0]] = parsed[1]
            if complete and all(n in found for n in self.names):
                return found
            if time.monotonic() >= deadline:
                raise AssertionError("no stats lines for %s within %.1fs after SIGUSR1 (got %s)"
                                     % (self.names, timeout, sorted(found)))
            if self.proc.poll() is not None:
                raise AssertionError("master exited (%s) while waiting for stats"
                                     % self.proc.returncode)
            time.sleep(0.02)

    def wait_stats(self, predicate, name=None, timeout=5.0, interval=0.1):
        """Poll stats for listener `name` until predicate(st) is true or the
        timeout passes; return the last stats either way (assert on them)."""
        name = name or self.name
        deadline = time.monotonic() + timeout
        while True:
            st = self.stats()[name]
            if predicate(st) or time.monotonic() >= deadline:
                return st
            time.sleep(interval)

    # -- teardown ------------------------------------------------------------
    def stop(self, timeout=5.0):
        workers = self.all_worker_pids()
        _terminate(self.proc, timeout=timeout)
        # Workers are our grandchildren: kill only the pids the log told us
        # about, and only if they still run the esockd binary.
        for pid in workers:
            if pid_alive(pid) and pid_is_binary(pid, ESOCKD_BIN):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + scaled(2.0)
        for pid in workers:
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if pid_alive(pid) and pid_is_binary(pid, ESOCKD_BIN):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._log_file.close()


class DaemonFactory:
    """Starts echo handlers, Python backends and esockd daemons inside
    tmp_path, and stops all of them at teardown."""

    def __init__(self, tmp_path):
        self.tmp_path = Path(tmp_path)
        self.daemons = []
        self.handlers = []
        self.backends = []
        self._n = 0

    def _next(self, prefix):
        self._n += 1
        return "%s%d" % (prefix, self._n)

    def _sock_path(self, name):
        path = self.tmp_path / ("%s.sock" % name)
        assert len(str(path)) < 104, (
            "Unix socket path too long (%d chars; use a shorter --basetemp/TMPDIR): %s"
            % (len(str(path)), path))
        return path

    def echo_handler(self, name=None):
        """Start build/echo-handler on a fresh socket; return the socket path."""
        name = name or self._next("echo")
        path = self._sock_path(name)
        h = EchoHandler(path, self.tmp_path / ("%s.log" % name))
        self.handlers.append(h)
        return str(path)

    def abstract_echo_handler(self, name):
        """Start build/echo-handler on the abstract name "@name"; return it."""
        h = AbstractEchoHandler("@" + name, self.tmp_path / ("%s.log" % name))
        self.handlers.append(h)
        return "@" + name

    def py_backend(self, handler, name=None):
        name = name or self._next("py")
        b = PyBackend(self._sock_path(name), handler)
        self.backends.append(b)
        return b

    def write_config(self, text, name=None):
        path = self.tmp_path / ((name or self._next("esockd")) + ".conf")
        path.write_text(text)
        return path

    def start(self, listeners=None, workers=2, max_open_files=4096, log_level="info",
              shutdown_timeout=5, attempts=5, env=None, argv_prefix=(), **extra_top):
        """Start esockd and wait for 'ready:'.

        listeners: list of dicts.  Each may give 'host' ("127.0.0.1" default,
        or "::1") instead of 'bind' (a free port is chosen, and re-chosen if
        the start fails with address-in-use), and 'backend' as a dict, a
        socket path or a list of paths (default: a new echo-handler).
        env, argv_prefix: passed to Daemon (extra environment variables, a
        command that execs esockd in its own pid).
        """
        if listeners is None:
            listeners = [{"name": "echo"}]
        specs = []
        for lst in listeners:
            lst = dict(lst)
            if "backend" not in lst:
                lst["backend"] = {"socket": self.echo_handler(), "connect_timeout": 1000}
            elif not isinstance(lst["backend"], dict):
                lst["backend"] = {"socket": lst["backend"], "connect_timeout": 1000}
            specs.append(lst)
        top = {"workers": workers, "max_open_files": max_open_files, "log_level": log_level,
               "shutdown_timeout": shutdown_timeout}
        top.update(extra_top)
        own_control = "control_socket" in extra_top

        last_err = None
        for attempt in range(attempts):
            final = []
            for lst in specs:
                lst = dict(lst)
                host = lst.pop("host", "127.0.0.1")
                if "bind" not in lst:
                    port = free_port(host)
                    lst["bind"] = ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)
                # keep 'name' and 'bind' first for readability
                ordered = {"name": lst.pop("name"), "bind": lst.pop("bind")}
                ordered.update(lst)
                final.append(ordered)
            name = self._next("esockd")
            # Never the default /run path: two runs must not collide.
            top.setdefault("control_socket", str(self._sock_path(name + "-ctl")))
            conf = self.write_config(render_config(top, final), name)
            d = Daemon(conf, self.tmp_path / ("%s.log" % name), final, env=env,
                       argv_prefix=argv_prefix)
            d.control_path = top["control_socket"]
            d.top = dict(top)
            self.daemons.append(d)
            err = d.wait_ready()
            if err is None:
                d.worker_pids()
                return d
            if not own_control:
                del top["control_socket"]
            log = d.log()
            d.stop(timeout=2.0)
            last_err = "%s\nconfig:\n%s\nlog:\n%s" % (err, conf.read_text(), log)
            if "in use" not in log.lower() or any("bind" in l for l in listeners):
                break
        raise AssertionError("esockd failed to start: " + last_err)

    def teardown(self):
        for d in self.daemons:
            try:
                d.stop()
            except Exception:
                pass
        for h in self.handlers:
            try:
                h.stop()
            except Exception:
                pass
        for b in self.backends:
            try:
                b.stop()
            except Exception:
                pass

    def sanitizer_findings(self):
        """{log name: [report lines]} for every log with sanitizer output."""
        found = {}
        for name, text in ([(d.log_path.name, d.log()) for d in self.daemons] +
                           [(h.log_path.name, h.log()) for h in self.handlers]):
            lines = sanitizer_reports(text)
            if lines:
                found[name] = lines
        return found

    def report(self, max_lines=150):
        """Text for the failure report: the tail of each daemon's log."""
        parts = []
        for d in self.daemons:
            lines = d.log().splitlines()
            head = "---- %s (pid %d, exit %s), last %d of %d lines ----" % (
                d.log_path.name, d.master_pid, d.proc.returncode, min(max_lines, len(lines)), len(lines))
            parts.append(head)
            parts.extend(lines[-max_lines:])
        for h in self.handlers:
            text = h.log().strip()
            if text:
                parts.append("---- %s ----" % h.log_path.name)
                parts.extend(text.splitlines()[-30:])
        for b in self.backends:
            if b.errors:
                parts.append("---- python backend %s errors: %s" % (b.path, b.errors))
        return "\n".join(parts)
