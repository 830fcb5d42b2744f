"""Socket activation: listening sockets passed by systemd (LISTEN_FDS).

Debian's systemd-socket-activate stands in for systemd: it binds the
sockets, waits for the first connection on any of them, then execs esockd
in its own pid with LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES set.  The
first client is therefore already in the accept queue when esockd starts,
which is also what happens under a real .socket unit.
"""

import os
import re
import shutil
import socket
import time

import pytest

from esockd_helpers import (Daemon, assert_echo, connect, free_port,
                            render_config)

ACTIVATE = shutil.which("systemd-socket-activate")

# systemd-socket-activate passes on only TERM, PATH, HOME and what -E names.
PASS_ENV = ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS")


@pytest.fixture
def activate():
    if ACTIVATE is None:
        pytest.fail("systemd-socket-activate not found (Debian package systemd; "
                    "`make deps` installs it)")
    return ACTIVATE


def refused(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) != 0


def start_activated(esockd, activate, listeners, passed, workers=1, attempts=5,
                    control_socket=""):
    """Run esockd under systemd-socket-activate.

    listeners: dicts for the config; a 'bind' of the form "@KEY" is replaced
    by "127.0.0.1:" + the port chosen for KEY.  passed: [(KEY, fdname or
    None)], the sockets systemd-socket-activate binds, in fd order.
    Returns (daemon, ports by KEY, the client whose connection started
    esockd, still open)."""
    keys = sorted({k for k, _ in passed} |
                  {l["bind"][1:] for l in listeners if l["bind"].startswith("@")})
    last = None
    for _ in range(attempts):
        ports = {k: free_port() for k in keys}
        if len(set(ports.values())) != len(ports):
            continue
        final = []
        for l in listeners:
            l = dict(l)
            if l["bind"].startswith("@"):
                l["bind"] = "127.0.0.1:%d" % ports[l["bind"][1:]]
            l.setdefault("backend", {"socket": esockd.echo_handler(),
                                     "connect_timeout": 1000})
            final.append(l)
        conf = esockd.write_config(render_config(
            {"workers": workers, "max_open_files": 4096, "shutdown_timeout": 5,
             "control_socket": control_socket}, final))
        argv = [activate]
        for key, _ in passed:
            argv += ["-l", "127.0.0.1:%d" % ports[key]]
        names = [n for _, n in passed]
        if any(n is not None for n in names):
            argv.append("--fdname=" + ":".join(n or "unknown" for n in names))
        for var in PASS_ENV:
            if var in os.environ:
                argv += ["-E", "%s=%s" % (var, os.environ[var])]
        d = Daemon(conf, conf.with_suffix(".log"), final, argv_prefix=argv)
        d.control_path = control_socket
        esockd.daemons.append(d)
        client = None
        deadline = time.monotonic() + 5
        while client is None and time.monotonic() < deadline and d.alive():
            try:
                client = connect(ports[passed[0][0]], timeout=5)
            except OSError:
                time.sleep(0.05)
        if client is not None:
            err = d.wait_ready()
            if err is None:
                return d, ports, client
            client.close()
        last = "%s\n%s" % (err if client else "no connection", d.log())
        d.stop(timeout=2)
        if "in use" not in d.log():
            break
    raise AssertionError("esockd under systemd-socket-activate did not start:\n%s" % last)


def master_lines(d):
    return [l for l in d.log().splitlines() if re.search(r"master\[\d+\]", l)]


def test_sockets_are_matched_by_fdname(esockd, activate):
    """Two listeners, their sockets passed in the opposite order with
    --fdname: each listener takes the socket carrying its name, esockd binds
    nothing itself, and the first client (queued before esockd even ran)
    and later ones are relayed by the right listener."""
    d, ports, first = start_activated(
        esockd, activate,
        [{"name": "alpha", "bind": "@a"}, {"name": "beta", "bind": "@b"}],
        [("b", "beta"), ("a", "alpha")])
    with first:
        assert_echo(first, b"queued before esockd started\n")
    log = d.log()
    assert "listener 'beta': using the socket passed by systemd (fd 3)" in log
    assert "listener 'alpha': using the socket passed by systemd (fd 4)" in log
    assert "cannot bind" not in log and "used by no listener" not in log
    with connect(ports["a"]) as c:
        assert_echo(c, b"to alpha\n")
    st = d.stats()
    assert (st["alpha"]["accepted"], st["beta"]["accepted"]) == (1, 1), st


def test_a_name_match_wins_over_the_bind_address(esockd, activate):
    """The socket named like the listener is used even when it is bound
    elsewhere than `bind` says; the mismatch is logged, and nothing is
    bound at the configured address."""
    d, ports, first = start_activated(
        esockd, activate, [{"name": "web", "bind": "@configured"}],
        [("passed", "web")])
    with first:
        assert_echo(first, b"x\n")
    assert re.search(r"warn: listener 'web': the socket systemd passed under this name is "
                     r"bound to 127\.0\.0\.1:%d, not to bind 127\.0\.0\.1:%d"
                     % (ports["passed"], ports["configured"]), d.log()), d.log()
    assert refused(ports["configured"])


@pytest.mark.parametrize("fdname", ["not-the-listener", None], ids=["other-name", "no-names"])
def test_sockets_are_matched_by_address_when_the_name_differs(esockd, activate, fdname):
    """With a FileDescriptorName= that is no listener's (or none at all),
    the socket bound to the listener's address is the one taken; it is made
    non-blocking (systemd-socket-activate passes a blocking one), so one
    worker serves client after client."""
    d, ports, first = start_activated(
        esockd, activate, [{"name": "echo", "bind": "@a"}], [("a", fdname)], workers=1)
    with first:
        assert_echo(first, b"first\n")
    assert "listener 'echo': using the socket passed by systemd (fd 3)" in d.log()
    clients = [connect(ports["a"]) for _ in range(3)]
    try:
        for i, c in enumerate(clients):
            assert_echo(c, b"client %d\n" % i)
    finally:
        for c in clients:
            c.close()
    assert "used by no listener" not in d.log()


def test_a_passed_socket_no_listener_claims_is_closed_with_a_warning(esockd, activate):
    """A second passed socket matching no listener by name or address is
    closed, with a warning naming it, its fd and its address; after that
    nobody listens there."""
    d, ports, first = start_activated(
        esockd, activate, [{"name": "echo", "bind": "@a"}],
        [("a", "echo"), ("stray", "stray")])
    with first:
        assert_echo(first, b"hello\n")
    pattern = (r"warn: the socket systemd passed as 'stray' \(fd 4, 127\.0\.0\.1:%d\) is used "
               r"by no listener" % ports["stray"])
    assert any(re.search(pattern, l) for l in master_lines(d)), d.log()
    assert refused(ports["stray"])
    with connect(ports["a"]) as c:
        assert_echo(c, b"still serving\n")


def test_esockdctl_shows_the_address_a_passed_socket_serves(esockd, activate):
    """The listener's bind says one port, but systemd passed a socket of
    its name bound to another: esockdctl shows the address served, not
    the one written in the file."""
    from ctl_helpers import ctl_ok, listener_json, parse_stats_text
    ctl_path = str(esockd.tmp_path / "act-ctl.sock")
    d, ports, first = start_activated(
        esockd, activate, [{"name": "echo", "bind": "@written"}],
        [("served", "echo")], control_socket=ctl_path)
    with first:
        assert_echo(first, b"hello\n")
    served = "127.0.0.1:%d" % ports["served"]
    assert listener_json(d, "echo")["bind"] == served
    _, rows = parse_stats_text(ctl_ok(d, "stats"))
    assert rows["echo"]["BIND"] == served, rows
    assert ("127.0.0.1:%d" % ports["written"]) not in ctl_ok(d, "listeners")
