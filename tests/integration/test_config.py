"""Config checking (`esockd -t -c FILE`) and start-up failures.

In the bad configs below every line where the error may legitimately be
reported carries the comment `#ERR`; each reported `FILE:LINE:` must point
at one of those lines.
"""

import re
import socket
import subprocess

import pytest

from esockd_helpers import esockd_argv, free_port, render_config, sanitizer_reports, wait_until

CONF = "bad.conf"

LISTENER = """\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    backend = { socket = "SOCK"; connect_timeout = 1000; };
  }
);
"""

BAD_CONFIGS = {
    "syntax_error": ("""\
workers = 2;
log_level = "info";
max_open_files == 4096;   #ERR
shutdown_timeout = 30;    #ERR
""" + LISTENER, None),

    "unknown_top_level_key": ("""\
workers = 2;
frobnicate = 1;   #ERR
""" + LISTENER, "frobnicate"),

    "unknown_listener_key_typo": ("""\
workers = 2;
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    max_conection = 100;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", r"max_conection.*did you mean .?max_connections"),

    "unknown_backend_key_typo": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    backend = {
      socket = "SOCK";
      conect_timeout = 100;   #ERR
    };
  }
);
""", "conect_timeout"),

    "workers_wrong_type": ("""\
workers = "two";   #ERR
""" + LISTENER, "workers"),

    "idle_timeout_wrong_type": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    idle_timeout = "300";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "idle_timeout"),

    "tcp_nodelay_wrong_type": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    tcp_nodelay = "yes";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "tcp_nodelay"),

    "bind_port_out_of_range": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:99999";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "bind|99999"),

    "bind_nonsense": ("""\
listeners = (
  {
    name = "echo";
    bind = "nonsense";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "bind|nonsense"),

    "bind_bad_ipv4_address": ("""\
listeners = (
  {
    name = "echo";
    bind = "256.1.1.1:5000";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "bind|256"),

    "duplicate_listener_names": ("""\
listeners = (
  {                  #ERR
    name = "echo";   #ERR
    bind = "127.0.0.1:5000";
    backend = { socket = "SOCK"; };
  },
  {                  #ERR
    name = "echo";   #ERR
    bind = "127.0.0.1:5001";
    backend = { socket = "SOCK"; };
  }
);
""", "echo|name"),

    "duplicate_binds": ("""\
listeners = (
  {                            #ERR
    name = "one";
    bind = "127.0.0.1:5000";   #ERR
    backend = { socket = "SOCK"; };
  },
  {                            #ERR
    name = "two";
    bind = "127.0.0.1:5000";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "bind|127.0.0.1:5000"),

    "listener_without_backend": ("""\
workers = 1;
listeners = (
  {                            #ERR
    name = "echo";             #ERR
    bind = "127.0.0.1:5000";   #ERR
  }                            #ERR
);
""", "backend"),

    "listener_without_bind": ("""\
listeners = (
  {                            #ERR
    name = "echo";             #ERR
    backend = { socket = "SOCK"; };   #ERR
  }                            #ERR
);
""", "bind"),

    "backlog_zero": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    backlog = 0;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "backlog"),

    "max_connections_negative": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    max_connections = -1;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "max_connections"),

    "source_prefix_v4_zero": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    source_prefix_v4 = 0;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "source_prefix_v4' = 0 is out of range; use an integer from 8 to 32 bits"),

    "source_prefix_v6_too_short": ("""\
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    source_prefix_v6 = 16;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", "source_prefix_v6' = 16 is out of range; use an integer from 32 to 128 bits"),

    "workers_zero": ("""\
workers = 0;   #ERR
""" + LISTENER, "workers"),

    "log_level_unknown": ("""\
log_level = "verbose";   #ERR
""" + LISTENER, "log_level|verbose"),

    "reservations_over_the_global_limit": ("""\
max_connections = 3;   #ERR
listeners = (
  {
    name = "a";
    bind = "127.0.0.1:5000";
    reserved_connections = 2;
    backend = { socket = "SOCK"; };
  },
  {
    name = "b";
    bind = "127.0.0.1:5001";
    reserved_connections = 2;
    backend = { socket = "SOCK"; };
  }
);
""", r"max_connections 3 at top level is below the 4 connections the listeners reserve "
     r"\(a 2, b 2\); raise it to at least 4"),

    "reservation_without_a_global_limit": ("""\
listeners = (
  {
    name = "a";
    bind = "127.0.0.1:5000";
    reserved_connections = 5;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", r"reserved_connections in listener 'a' is taken from the top-level max_connections, "
     r"which is not set; add max_connections = 5;"),

    "reservation_above_its_listener_limit": ("""\
max_connections = 100;
listeners = (
  {
    name = "a";
    bind = "127.0.0.1:5000";
    max_connections = 3;
    reserved_connections = 5;   #ERR
    backend = { socket = "SOCK"; };
  }
);
""", r"reserved_connections 5 in listener 'a' is above its own max_connections 3.*"
     r"at most 3"),

    "listener_name_bad_characters": ("""\
listeners = (
  {
    name = "no spaces/allowed";   #ERR
    bind = "127.0.0.1:5000";
    backend = { socket = "SOCK"; };
  }
);
""", "name"),
}


def check(tmp_path, text, name=CONF):
    sock = str(tmp_path / "echo.sock")
    (tmp_path / name).write_text(text.replace("SOCK", sock))
    r = subprocess.run(esockd_argv("-t", "-c", name), cwd=str(tmp_path),
                       stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    findings = sanitizer_reports(r.stderr + r.stdout)
    assert not findings, "sanitizer reports from esockd -t:\n" + r.stderr
    return r


def marked_lines(text):
    return {i for i, line in enumerate(text.splitlines(), 1) if "#ERR" in line}


def reported(stderr, name=CONF):
    """[(line_no, whole stderr line)] for each 'FILE:LINE:' in stderr."""
    out = []
    for line in stderr.splitlines():
        m = re.search(r"(?:^|[\s/])%s:(\d+):" % re.escape(name), line)
        if m:
            out.append((int(m.group(1)), line))
    return out


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_rejected_with_file_and_line(binaries, tmp_path, case):
    """`esockd -t` exits 1 and points at the offending line."""
    text, needle = BAD_CONFIGS[case]
    r = check(tmp_path, text)
    detail = "exit %s\nstderr:\n%s\nconfig:\n%s" % (
        r.returncode, r.stderr,
        "\n".join("%3d %s" % (i, l) for i, l in enumerate(text.splitlines(), 1)))
    assert r.returncode == 1, detail
    hits = reported(r.stderr)
    assert hits, "no '%s:LINE:' in stderr\n%s" % (CONF, detail)
    allowed = marked_lines(text)
    wrong = [line for n, line in hits if n not in allowed]
    assert not wrong, "errors reported on unexpected lines %s (allowed %s)\n%s" % (wrong, sorted(allowed), detail)
    if needle:
        assert any(re.search(needle, line, re.I) for _, line in hits), (
            "no error line matches /%s/\n%s" % (needle, detail))


def test_all_errors_in_a_file_are_reported(binaries, tmp_path):
    """Three different errors in one file: three FILE:LINE lines, one each."""
    text = """\
workers = 2;
frobnicate = 1;
listeners = (
  {
    name = "echo";
    bind = "nonsense";
    backlog = 0;
    backend = { socket = "SOCK"; };
  }
);
"""
    r = check(tmp_path, text)
    assert r.returncode == 1, r.stderr
    lines = {n for n, _ in reported(r.stderr)}
    assert {2, 6, 7} <= lines, "expected errors on lines 2, 6 and 7, got %s:\n%s" % (sorted(lines), r.stderr)


VALID_CONFIGS = {
    "documented_example": """\
workers = 2;                 # integer >= 1 or "auto"
max_open_files = 4096;
log_level = "info";
shutdown_timeout = 30;
listeners = (
  {
    name = "echo";
    bind = "127.0.0.1:5000";
    backlog = 511;
    max_connections = 10000;
    idle_timeout = 300;
    tcp_nodelay = true;
    tcp_keepalive = false;
    backend = {
      socket = "SOCK";
      connect_timeout = 1000;
    };
  }
);
""",
    "variants": """\
workers = "auto";
max_open_files = 0;
log_level = "debug";
listeners = (
  {
    name = "all-v4_1.x";
    bind = "*:5001";
    idle_timeout = 0;
    backend = { socket = ( "SOCK", "SOCK.2" ); };
  },
  {
    name = "v6";
    bind = "[::1]:5002";
    backend = { socket = "SOCK"; };
  }
);
""",
}


VALID_CONFIGS["global_limit_with_reservations"] = """\
max_connections = 10;        # over every listener
listeners = (
  {
    name = "a";
    bind = "127.0.0.1:5000";
    max_connections = 10;
    reserved_connections = 6;
    backend = { socket = "SOCK"; };
  },
  {
    name = "b";
    bind = "127.0.0.1:5001";
    reserved_connections = 4;  # 6 + 4: the whole global limit
    backend = { socket = "SOCK"; };
  }
);
"""


@pytest.mark.parametrize("case", sorted(VALID_CONFIGS))
def test_valid_config_passes_check(binaries, tmp_path, case):
    """`esockd -t` exits 0 on valid configs."""
    r = check(tmp_path, VALID_CONFIGS[case], name="good.conf")
    assert r.returncode == 0, "exit %s\nstderr:\n%s" % (r.returncode, r.stderr)
    assert not reported(r.stderr, name="good.conf"), r.stderr


def test_bind_conflict_at_start_names_the_listener_and_exits_nonzero(binaries, tmp_path):
    """A port already in use makes esockd exit non-zero within 5 s, naming the
    listener and the address."""
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    blocker.bind(("127.0.0.1", 0))
    blocker.listen(5)
    port = blocker.getsockname()[1]
    free = free_port()
    conf = tmp_path / "conflict.conf"
    conf.write_text(render_config(
        {"workers": 2, "shutdown_timeout": 1},
        [{"name": "fine", "bind": "127.0.0.1:%d" % free,
          "backend": {"socket": str(tmp_path / "echo.sock")}},
         {"name": "blocked", "bind": "127.0.0.1:%d" % port,
          "backend": {"socket": str(tmp_path / "echo.sock")}}]))
    log_path = tmp_path / "conflict.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(esockd_argv("-c", str(conf)), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            rc = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            rc = None
        out = log_path.read_text(errors="replace")
        assert rc is not None, "esockd still running 5 s after a bind conflict:\n" + out
        assert rc != 0, out
        assert "blocked" in out, "listener name not in stderr:\n" + out
        assert str(port) in out, "address not in stderr:\n" + out
        assert "ready:" not in out, out
        assert not sanitizer_reports(out), out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        blocker.close()
    # and nothing is left listening on the other listener's port
    def refused():
        with socket.socket() as probe:
            probe.settimeout(1)
            return probe.connect_ex(("127.0.0.1", free)) != 0
    wait_until(refused, 2, message="port of listener 'fine' to stop accepting after esockd exited")


def keys_printed_by_K():
    """{(scope, key): default as printed} from `esockd -K`; every line must
    carry default=."""
    out = subprocess.run(esockd_argv("-K"), capture_output=True, text=True,
                         timeout=10, check=True).stdout
    keys = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+) (\w+) \S+ default=(\"[^\"]*\"|\S+)(?: |$)", line)
        assert m, "no default= in -K line %r" % line
        keys[(m.group(1), m.group(2))] = m.group(3)
    return keys


def test_K_prints_every_keys_default(binaries):
    """`esockd -K` gives each key's default, booleans, workers, log_level and
    tls_min_version included, as it would be written in the file."""
    keys = keys_printed_by_K()
    assert len(keys) >= 30, keys
    want = {("global", "workers"): '"auto"', ("global", "log_level"): '"info"',
            ("global", "shutdown_timeout"): "30",
            ("global", "control_socket"): '"/run/esockd/control.sock"',
            ("global", "user"): '""', ("listener", "tcp_nodelay"): "true",
            ("listener", "tcp_keepalive"): "false",
            ("listener", "tls_min_version"): '"1.2"', ("listener", "backlog"): "511",
            ("listener", "allow"): "()", ("listener", "name"): "none",
            ("backend", "proxy_protocol"): "false",
            ("backend", "connect_timeout"): "1000"}
    for key, default in want.items():
        assert keys.get(key) == default, (key, keys.get(key))


def test_K_defaults_are_what_the_parser_applies(binaries, tmp_path):
    """A config writing every default -K prints is valid: the printed
    defaults are values the parser accepts."""
    keys = keys_printed_by_K()
    top = ["%s = %s;" % (k, v) for (sc, k), v in keys.items()
           if sc == "global" and v not in ("none",) and k != "control_socket"]
    lst = ["%s = %s;" % (k, v) for (sc, k), v in keys.items()
           if sc == "listener" and v not in ("none",)]
    text = "\n".join(top) + """
listeners = ( { name = "echo"; bind = "127.0.0.1:5000";
%s
  backend = { socket = "SOCK"; connect_timeout = %s; proxy_protocol = %s; }; } );
""" % ("\n".join(lst), keys[("backend", "connect_timeout")],
       keys[("backend", "proxy_protocol")])
    r = check(tmp_path, text, name="defaults.conf")
    assert r.returncode == 0, "exit %s\n%s\n%s" % (r.returncode, r.stderr, text)


def assert_one_error(tmp_path, text, line, message):
    """-t exits 1 with exactly one FILE:LINE error, at line, holding message."""
    r = check(tmp_path, text)
    assert r.returncode == 1, r.stderr
    hits = reported(r.stderr)
    assert [n for n, _ in hits] == [line], r.stderr
    assert message in hits[0][1], r.stderr


def test_mapped_ipv6_bind_is_refused_at_its_line(binaries, tmp_path):
    """[::ffff:127.0.0.1]:P would fail at start with EINVAL (IPv6-only
    sockets); -t says so at the bind line, with the IPv4 form to use."""
    text = """\
workers = 1;
listeners = (
  {
    name = "mapped";
    bind = "[::ffff:127.0.0.1]:5000";   #ERR
    backend = { socket = "SOCK"; };
  }
);
"""
    assert_one_error(tmp_path, text, 5, "IPv4-mapped IPv6 address, which esockd's "
                     "IPv6-only sockets cannot bind; write it as IPv4: \"127.0.0.1:5000\"")


@pytest.mark.parametrize("first,second", [
    ("127.0.0.1:5000", "*:5000"), ("*:5000", "127.0.0.1:5000"),
    ("0.0.0.0:5000", "127.0.0.1:5000"),
    ("[::1]:5000", "[::]:5000"), ("[::]:5000", "[::1]:5000")])
def test_specific_address_next_to_wildcard_is_refused(binaries, tmp_path, first, second):
    """A wildcard and a specific address of one family on one port would
    fail at start with EADDRINUSE; -t reports it at the second bind."""
    text = """\
listeners = (
  { name = "one"; bind = "%s"; backend = { socket = "SOCK"; }; },
  {
    name = "two";
    bind = "%s";   #ERR
    backend = { socket = "SOCK"; };
  }
);
""" % (first, second)
    assert_one_error(tmp_path, text, 5, "bind \"%s\" of listener 'two' overlaps \"%s\" "
                     "of listener 'one' (line 2)" % (second, first))


def test_wildcards_of_both_families_on_one_port_pass(binaries, tmp_path):
    """IPv6 sockets are IPv6-only, so *:P beside [::]:P is no overlap."""
    text = """\
listeners = (
  { name = "v4"; bind = "*:5000"; backend = { socket = "SOCK"; }; },
  { name = "v6"; bind = "[::]:5000"; backend = { socket = "SOCK"; }; }
);
"""
    r = check(tmp_path, text, name="good.conf")
    assert r.returncode == 0, r.stderr


def test_relative_backend_socket_is_refused_at_its_line(binaries, tmp_path):
    """A relative backend path would depend on the daemon's working
    directory: refused at FILE:LINE, pointing at absolute paths and @name."""
    text = """\
listeners = (
  {
    name = "rel";
    bind = "127.0.0.1:5000";
    backend = { socket = ( "SOCK", "handler.sock" ); };   #ERR
  }
);
"""
    assert_one_error(tmp_path, text, 5, "backend socket \"handler.sock\" is a relative "
                     "path; use an absolute path such as \"/run/handler.sock\", or "
                     "\"@name\" for an abstract socket")


def test_unknown_groups_are_reported_at_their_lines(binaries, tmp_path):
    """The resolver (proc.c) reports every unknown name at its FILE:LINE,
    with the same text the parser used to."""
    import pwd
    import secrets
    me = pwd.getpwuid(__import__("os").getuid()).pw_name
    nog = "esockd-nogroup-" + secrets.token_hex(4)
    text = """\
workers = 1;
user = "%s";
group = "%s";   #ERR
control_group = "%s";   #ERR
""" % (me, nog, nog + "x") + LISTENER
    r = check(tmp_path, text)
    assert r.returncode == 1, r.stderr
    hits = reported(r.stderr)
    assert [n for n, _ in hits] == [3, 4], r.stderr
    assert hits[0][1].endswith("bad.conf:3: 'group' = \"%s\" is not a group on this "
                               "host; create it or name an existing group" % nog), r.stderr
    assert "bad.conf:4: 'control_group' = \"%sx\" is not a group" % nog in hits[1][1]
    assert "2 errors; nothing started" in r.stderr, r.stderr


def test_backend_on_an_abstract_socket_relays(esockd):
    """socket = "@name": esockd connects in the abstract namespace (no file)
    and relays both ways."""
    import secrets
    from esockd_helpers import echo_once
    name = esockd.abstract_echo_handler("esockd-test-" + secrets.token_hex(6))
    d = esockd.start(listeners=[{"name": "x", "backend": {"socket": name,
                                                          "connect_timeout": 1000}}])
    assert echo_once(d.port), d.log()
