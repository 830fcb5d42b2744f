"""Helpers for the control socket and /metrics tests: running esockdctl,
reading its tables and JSON, fetching and parsing the Prometheus text
format, finding a process's sockets in /proc, and starting a daemon that
is expected to refuse to start.

$ESOCKDCTL_BIN (default <repo>/build/esockdctl) names the client, so the
suite can run against the sanitizer build too.
"""

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from esockd_helpers import esockd_argv, REPO, free_port, render_config

ESOCKDCTL_BIN = os.environ.get("ESOCKDCTL_BIN", str(REPO / "build" / "esockdctl"))


def ctl_bin():
    """The esockdctl binary; a missing build fails the test, never skips it."""
    if not os.access(ESOCKDCTL_BIN, os.X_OK):
        pytest.fail("esockdctl not found or not executable: %s (build first, "
                    "or set ESOCKDCTL_BIN)" % ESOCKDCTL_BIN)
    return ESOCKDCTL_BIN


def ctl(target, *args, prefix=(), timeout=20):
    """Run `esockdctl -s PATH ARGS...`; target is a Daemon or a socket path.
    Returns the CompletedProcess (text)."""
    path = target if isinstance(target, str) else target.control_path
    return subprocess.run(list(prefix) + [ctl_bin(), "-s", path] + list(args),
                          capture_output=True, text=True, timeout=timeout)


def describe(r):
    return "exit %d\nstdout:\n%s\nstderr:\n%s" % (r.returncode, r.stdout, r.stderr)


def ctl_ok(target, *args):
    """esockdctl ARGS must exit 0; returns its stdout."""
    r = ctl(target, *args)
    assert r.returncode == 0, "esockdctl %s: %s" % (" ".join(args), describe(r))
    assert r.stderr == "", describe(r)
    return r.stdout


def ctl_err(target, *args, code=1):
    """esockdctl ARGS must fail with `code`; returns its stderr."""
    r = ctl(target, *args)
    assert r.returncode == code, "esockdctl %s: expected exit %d, %s" % (
        " ".join(args), code, describe(r))
    assert r.stdout == "", describe(r)
    return r.stderr


def stats_json(d):
    return json.loads(ctl_ok(d, "--json", "stats"))


ENDPOINT_EVENTS = ("accepted", "answered", "late_request", "late_answer", "dropped",
                   "pushed_out_answered", "pushed_out_idle", "refused",
                   "accept_pauses", "errors")


def endpoint_json(d, which):
    """The counters of the operator endpoint `which` ("control" or
    "metrics") from `stats json`.  The reading's own connection is
    counted as accepted on the control socket, not yet as answered."""
    ep = stats_json(d)["endpoints"][which]
    assert sorted(ep) == sorted(ENDPOINT_EVENTS + ("enabled",)), ep
    return ep


def listener_json(d, name=None):
    name = name or d.name
    for lst in stats_json(d)["listeners"]:
        if lst["name"] == name:
            return lst
    raise AssertionError("no listener %r in stats json" % name)


def wait_listener(d, predicate, name=None, timeout=5.0):
    """Poll `stats json` until predicate(listener) holds; return the last
    reading either way (the caller asserts on it)."""
    deadline = time.monotonic() + timeout
    while True:
        lst = listener_json(d, name)
        if predicate(lst) or time.monotonic() >= deadline:
            return lst
        time.sleep(0.05)


def parse_stats_text(text):
    """`stats` output -> (header {key: value}, rows {name: {COLUMN: str}}),
    each row with the columns of both tables (counters, close reasons)."""
    head_part, _, tables = text.partition("\n\n")
    # The backend sockets' table, one row per socket, is not a listener's.
    tables, _, _ = tables.partition("\nbackend sockets:\n")
    header = {}
    for line in head_part.splitlines():
        key, sep, value = line.partition(": ")
        assert sep, "not a 'key: value' header line: %r" % line
        header[key] = value
    counters, sep, reasons = tables.partition("\nclosed, by reason:\n")
    assert sep, "no close-reason table in %r" % text
    rows = parse_table(counters)
    # The close reasons, then any further tables (TLS), each titled "...:".
    for table in re.split(r"\n\n[^\n]*:\n", reasons):
        for name, cells in parse_table(table).items():
            assert name in rows, "close reasons for unknown listener %r" % name
            rows[name].update(cells)
    return header, rows


def parse_backends_text(text):
    """`stats` output -> {(listener, socket): {COLUMN: str}}, from its
    table of backend sockets (the last one)."""
    _, sep, table = text.partition("\nbackend sockets:\n")
    assert sep, "no backend sockets table in %r" % text
    lines = [l for l in table.splitlines() if l.strip()]
    head = lines[0].split()
    rows = {}
    for line in lines[1:]:
        cells = line.split(None, len(head) - 1)
        assert len(cells) == len(head), "row %r does not fit %r" % (line, head)
        row = dict(zip(head, cells))
        rows[(row["NAME"], row["SOCKET"])] = row
    return rows


def parse_table(text):
    """A heading line and rows split on runs of spaces; the last column
    takes the rest of the line.  Returns {first cell: {COLUMN: cell}}."""
    lines = [l for l in text.splitlines() if l.strip()]
    head = lines[0].split()
    rows = {}
    for line in lines[1:]:
        cells = line.split(None, len(head) - 1)
        assert len(cells) == len(head), "row %r does not fit %r" % (line, head)
        rows[cells[0]] = dict(zip(head, cells))
    return rows


def hold_echoing(port, n, payload=b"hello\n"):
    """n connections, each of which has echoed `payload` once (so each was
    admitted and relayed).  Returns the open sockets."""
    from esockd_helpers import assert_echo, connect
    socks = []
    try:
        for _ in range(n):
            s = connect(port)
            socks.append(s)
            assert_echo(s, payload)
    except BaseException:
        for s in socks:
            s.close()
        raise
    return socks


def unix_connect(path, timeout=5.0):
    """A connected Unix socket.  The connect blocks while the listener's
    backlog is full (a non-blocking one would fail with EAGAIN), for at
    most `timeout` seconds (SO_SNDTIMEO bounds it)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO,
                     struct.pack("ll", int(timeout), int(timeout % 1 * 1e6)))
        s.connect(path)
        s.settimeout(timeout)
    except BaseException:
        s.close()
        raise
    return s


def read_all(sock, timeout=5.0, limit=1 << 20):
    """Bytes until EOF (a reset after data ends it too); AssertionError on
    timeout.  Returns (data, how) with how 'eof' or 'reset'."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError("no EOF within %.1fs (got %r)" % (timeout, bytes(buf[:200])))
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        buf += chunk
        assert len(buf) <= limit, "reply longer than %d bytes" % limit


def run_expecting_exit(factory, top, listeners, timeout=10.0):
    """Start esockd on a config expected to make it refuse to start.
    Returns (exit status, output).  A daemon that starts anyway is stopped
    with SIGTERM (it is our own child) and the test fails."""
    final = []
    for lst in listeners:
        lst = dict(lst)
        lst.setdefault("bind", "127.0.0.1:%d" % free_port())
        if "backend" not in lst:
            lst["backend"] = {"socket": factory.echo_handler()}
        final.append({"name": lst.pop("name"), "bind": lst.pop("bind"), **lst})
    conf = factory.write_config(render_config(top, final))
    log_path = conf.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(esockd_argv("-c", str(conf)), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            raise AssertionError("esockd did not exit within %.0fs; log:\n%s"
                                 % (timeout, log_path.read_text(errors="replace")))
    return rc, log_path.read_text(errors="replace")


# --------------------------------------------------------------------------
# Prometheus text format 0.0.4
# --------------------------------------------------------------------------

NAME_RE = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
SAMPLE_RE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)$" % NAME_RE)
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')


def unescape_label(v):
    return re.sub(r'\\([\\"n])', lambda m: "\n" if m.group(1) == "n" else m.group(1), v)


def parse_labels(text):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        assert m, "bad label set %r at %d" % (text, pos)
        labels[m.group(1)] = unescape_label(m.group(2))
        pos = m.end()
    return labels


def parse_exposition(text):
    """Parse and check the text format strictly: every sample belongs to
    a family announced by # HELP and # TYPE before it, each family once.
    Returns (samples {(name, frozenset(labels)): float}, helps, types)."""
    helps, types, samples = {}, {}, {}
    current = None
    assert text.endswith("\n"), "the exposition must end with a newline"
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            assert name not in helps, "HELP twice for %s" % name
            assert help_text.strip(), "empty HELP for %s" % name
            helps[name] = help_text
            current = name
            continue
        if line.startswith("# TYPE "):
            name, _, typ = line[7:].partition(" ")
            assert name == current, "TYPE %s not right after its HELP" % name
            assert typ in ("counter", "gauge", "histogram"), line
            assert name not in types, "TYPE twice for %s" % name
            types[name] = typ
            continue
        assert not line.startswith("#") and line.strip(), "unexpected line %r" % line
        m = SAMPLE_RE.match(line)
        assert m, "not a sample line: %r" % line
        name, labels, value = m.group(1), parse_labels(m.group(2) or ""), float(m.group(3))
        if types.get(current) == "histogram":
            # A histogram's samples: NAME_bucket{le=...}, NAME_sum, NAME_count.
            assert name in (current + "_bucket", current + "_sum", current + "_count"), (
                "sample %s outside histogram %s" % (name, current))
            assert (name == current + "_bucket") == ("le" in labels), line
        else:
            assert name == current and name in types, (
                "sample %s outside its family (HELP and TYPE must come first)" % name)
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = value
    return samples, helps, types


def fetch(url, method="GET", timeout=5.0):
    """(status, headers, body bytes), also for 4xx/5xx answers."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, e.headers, body


def metric(samples, name, **labels):
    key = (name, frozenset(labels.items()))
    assert key in samples, "no sample %s%s; have %s" % (
        name, labels, sorted(n for n, _ in samples if n.startswith(name)))
    return samples[key]


def socket_fds(pid):
    """{socket inode: descriptor number} of a process."""
    found = {}
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m:
            found[int(m.group(1))] = int(fd)
    return found


def tcp_inode(local_port, peer_port=None, state=None):
    """The inode of the IPv4 TCP socket on local_port: the one connected
    to peer_port, or the one in state (/proc/net/tcp's hex, "0A" LISTEN)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if (int(parts[1].split(":")[1], 16) == local_port and
                    (peer_port is None or int(parts[2].split(":")[1], 16) == peer_port) and
                    (state is None or parts[3] == state)):
                return int(parts[9])
    raise AssertionError("no TCP socket on port %d (peer %s, state %s) in /proc/net/tcp"
                         % (local_port, peer_port, state))
