"""Passive health of backend sockets: a socket that keeps failing is
ejected (no client waits on it), probed after its interval and brought
back; with every socket ejected the least recently failed is still tried;
balance = "least_connections" spreads connections by their open count
across workers; and the per-socket counts agree in the stats table, its
JSON and /metrics."""

import socket
import time

from ctl_helpers import (ctl_ok, fetch, metric, parse_backends_text,
                         parse_exposition, stats_json)
from esockd_helpers import (EchoHandler, assert_echo, connect, free_port,
                            read_outcome, wait_until)

EJECTED = "ejected after"
RETURNED = "returned: a connect succeeded"


def backends_of(d, name=None):
    """{socket path: its entry in stats json} of listener name."""
    name = name or d.name
    for lst in stats_json(d)["listeners"]:
        if lst["name"] == name:
            return {b["socket"]: b for b in lst["backends"]}
    raise AssertionError("no listener %r in stats json" % name)


def log_count(d, needle, path):
    return sum(1 for l in d.log().splitlines() if needle in l and path in l)


def timed_echo(port, tag):
    """Seconds a client took to connect and get its bytes back."""
    t0 = time.monotonic()
    with connect(port) as s:
        assert_echo(s, tag)
    return time.monotonic() - t0


def stalled_socket(tmp_path, name="stalled"):
    """A Unix socket whose accept queue is full and never drained: a
    connect to it waits (EAGAIN, retried) until connect_timeout.
    Returns (path, [sockets to keep open])."""
    path = str(tmp_path / ("%s.sock" % name))
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(0)
    fill = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fill.setblocking(False)
    fill.connect(path)			# the one place the queue holds
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
        raise AssertionError("the accept queue of %s is not full" % path)
    except BlockingIOError:
        pass
    finally:
        probe.close()
    return path, [srv, fill]


def echo_at(esockd, path):
    """build/echo-handler on the given path, stopped at teardown."""
    h = EchoHandler(path, str(path) + ".log")
    esockd.handlers.append(h)
    return h


def test_missing_socket_is_ejected_after_three_failures(esockd, tmp_path):
    """A missing socket first in a list of two: exactly 3 connects fail
    on it (reason missing), from either worker; then it is ejected, logged
    once, and every connection goes to the live socket without trying it."""
    missing = str(tmp_path / "missing.sock")
    live = esockd.echo_handler()
    d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
        "socket": [missing, live], "backend_retry_interval": 30000}}])
    for i in range(20):
        with connect(d.port) as s:
            assert_echo(s, b"client %d\n" % i)
    b = backends_of(d)
    assert b[missing]["state"] == "ejected", b
    assert b[missing]["failures"] == {"refused": 0, "missing": 3, "timeout": 0}, b
    assert b[missing]["connects"] == 0 and b[missing]["ejections"] == 1, b
    assert b[live]["state"] == "up" and b[live]["connects"] == 20, b
    assert b[live]["failures"] == {"refused": 0, "missing": 0, "timeout": 0}, b
    assert log_count(d, EJECTED, missing) == 1, d.log()
    assert "No such file or directory" in [l for l in d.log().splitlines()
                                           if EJECTED in l][0]
    lst = [l for l in stats_json(d)["listeners"] if l["name"] == "web"][0]
    assert lst["refused"]["backend_unavailable"] == 0 and lst["accepted"] == 20, lst


def test_clients_stop_waiting_on_a_stalled_socket_once_it_is_ejected(esockd, tmp_path):
    """A socket whose accept queue is full makes a client wait its
    connect_timeout (300 ms) before the failover.  Three such waits
    eject it; from then on no client waits: every one is served by the
    live socket in a fraction of connect_timeout."""
    stalled, keep = stalled_socket(tmp_path)
    live = esockd.echo_handler()
    try:
        d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
            "socket": [stalled, live], "connect_timeout": 300,
            "backend_retry_interval": 30000}}])
        waits = [timed_echo(d.port, b"client %d\n" % i) for i in range(16)]
        b = backends_of(d)
    finally:
        for s in keep:
            s.close()
    slow = [i for i, w in enumerate(waits) if w >= 0.29]
    assert len(slow) == 3, waits
    # After the third wait, nobody waits again.
    assert all(w < 0.15 for w in waits[slow[-1] + 1:]), waits
    assert max(slow) < 8, waits
    assert b[stalled]["failures"] == {"refused": 0, "missing": 0, "timeout": 3}, b
    assert b[stalled]["state"] == "ejected" and b[stalled]["ejections"] == 1, b
    assert b[live]["connects"] == 16, b
    assert log_count(d, EJECTED, stalled) == 1, d.log()


def test_ejected_socket_returns_after_its_interval_when_its_handler_starts(esockd, tmp_path):
    """Ejected while its handler is down, the socket is probed once its
    interval (300 ms) is over; with the handler started the probe
    connects, the socket is back (logged once) and takes connections."""
    late = str(tmp_path / "late.sock")
    live = esockd.echo_handler()
    d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
        "socket": [late, live], "backend_retry_interval": 300}}])
    for i in range(6):
        with connect(d.port) as s:
            assert_echo(s, b"before %d\n" % i)
    assert backends_of(d)[late]["state"] == "ejected"
    echo_at(esockd, late)
    time.sleep(0.4)
    for i in range(6):
        with connect(d.port) as s:
            assert_echo(s, b"after %d\n" % i)
    b = backends_of(d)
    assert b[late]["state"] == "up", b
    assert b[late]["ejections"] == 1 and b[late]["returns"] == 1, b
    # The probe, then its turns in the round-robin of both workers.
    assert b[late]["connects"] >= 3, b
    assert b[late]["connects"] + b[live]["connects"] == 12, b
    assert log_count(d, EJECTED, late) == 1, d.log()
    assert log_count(d, RETURNED, late) == 1, d.log()
    assert "(the probe)" in [l for l in d.log().splitlines() if RETURNED in l][0]


def test_probe_that_fails_ejects_again_without_making_clients_wait(esockd, tmp_path):
    """While the handler stays down, each probe fails and the socket is
    ejected again, twice as long; clients keep being served by the other
    socket, and the ejection is logged once only."""
    down = str(tmp_path / "down.sock")
    live = esockd.echo_handler()
    d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
        "socket": [down, live], "backend_retry_interval": 100}}])
    deadline = time.monotonic() + 1.5
    n = 0
    while time.monotonic() < deadline:
        with connect(d.port) as s:
            assert_echo(s, b"client %d\n" % n)
        n += 1
        time.sleep(0.02)
    b = backends_of(d)
    # 3 to eject, then probes at about 100, 200, 400, 800 ms intervals.
    assert 4 <= b[down]["failures"]["missing"] <= 3 + 5, b
    assert b[down]["ejections"] == 1 and b[down]["returns"] == 0, b
    assert b[live]["connects"] == n, b
    assert log_count(d, EJECTED, down) == 1, d.log()


def test_with_every_socket_ejected_the_least_recently_failed_is_tried(esockd, tmp_path):
    """A fails (ejected), later B fails (ejected): both handlers then
    start, and the next client is not refused untried but sent to A,
    the one that failed first, which comes back; B stays ejected."""
    a = str(tmp_path / "a.sock")
    b_path = str(tmp_path / "b.sock")
    hb = echo_at(esockd, b_path)
    d = esockd.start(workers=1, listeners=[{"name": "web", "backend": {
        "socket": [a, b_path], "backend_fail_threshold": 1,
        "backend_retry_interval": 30000}}])
    with connect(d.port) as s:		# A fails and is ejected; B serves
        assert_echo(s, b"one\n")
    hb.stop()
    time.sleep(0.05)
    with connect(d.port) as s:		# B fails: every socket ejected
        s.sendall(b"two\n")
        assert read_outcome(s, b"two\n") in ("eof", "reset")
    b = backends_of(d)
    assert b[a]["state"] == b[b_path]["state"] == "ejected", b
    echo_at(esockd, a)
    echo_at(esockd, b_path)
    for i in range(3):
        with connect(d.port) as s:
            assert_echo(s, b"three %d\n" % i)
    b = backends_of(d)
    assert b[a]["state"] == "up" and b[a]["connects"] == 3, b
    assert b[b_path]["state"] == "ejected" and b[b_path]["connects"] == 1, b
    assert log_count(d, RETURNED, a) == 1, d.log()
    assert "(not a probe)" in [l for l in d.log().splitlines() if RETURNED in l][0]


def test_least_connections_spreads_held_connections_across_workers(esockd):
    """Three sockets, two workers: held connections go to the socket with
    the fewest open, counted over both workers, so 9 held are 3 on each;
    after 4 are closed (wherever they were), 4 new ones fill the gaps
    back to 3 each, which per-worker round-robin would not."""
    socks = [esockd.echo_handler() for _ in range(3)]
    d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
        "socket": socks, "balance": "least_connections"}}])
    held = []
    try:
        for i in range(9):
            s = connect(d.port)
            held.append(s)
            assert_echo(s, b"held %d\n" % i)
        b = backends_of(d)
        assert [b[p]["open"] for p in socks] == [3, 3, 3], b
        for s in held[:4]:
            s.close()
        del held[:4]
        wait_until(lambda: sum(b["open"] for b in backends_of(d).values()) == 5,
                   5, message="4 connections closed")
        for i in range(4):
            s = connect(d.port)
            held.append(s)
            assert_echo(s, b"again %d\n" % i)
        b = backends_of(d)
        assert [b[p]["open"] for p in socks] == [3, 3, 3], b
        assert len(d.worker_pids()) == 2
    finally:
        for s in held:
            s.close()
    wait_until(lambda: all(b["open"] == 0 for b in backends_of(d).values()), 5,
               message="every connection released")
    b = backends_of(d)
    assert sum(b[p]["connects"] for p in socks) == 13, b


def test_backend_counts_agree_in_table_json_and_metrics_and_are_exact(esockd, tmp_path):
    """One worker, three sockets in turn: a missing one, a stale one
    (refused) and a live one, with a threshold too high to eject.  Of 9
    clients, 3 start on each socket: missing fails 3 times, stale 6 (its
    own 3 and the failovers from missing), live connects 9.  The table,
    the JSON and /metrics show exactly that, the latency histogram counts
    every connect, and connections = 0 once they are closed."""
    missing = str(tmp_path / "missing.sock")
    stale = str(tmp_path / "stale.sock")
    s0 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s0.bind(stale)
    s0.close()
    live = esockd.echo_handler()
    mport = free_port()
    d = esockd.start(workers=1, metrics="127.0.0.1:%d" % mport, listeners=[
        {"name": "web", "backend": {"socket": [missing, stale, live],
                                    "backend_fail_threshold": 1000}}])
    for i in range(9):
        with connect(d.port) as s:
            assert_echo(s, b"client %d\n" % i)
    wait_until(lambda: backends_of(d)[live]["open"] == 0, 5, message="closed")
    want = {missing: (0, {"refused": 0, "missing": 3, "timeout": 0}),
            stale: (0, {"refused": 6, "missing": 0, "timeout": 0}),
            live: (9, {"refused": 0, "missing": 0, "timeout": 0})}
    js = backends_of(d)
    rows = parse_backends_text(ctl_ok(d, "stats"))
    status, _, body = fetch("http://127.0.0.1:%d/metrics" % mport)
    assert status == 200
    samples, _, _ = parse_exposition(body.decode())
    for path, (connects, fails) in want.items():
        b = js[path]
        assert (b["state"], b["open"], b["connects"], b["failures"]) == (
            "up", 0, connects, fails), b
        assert (b["ejections"], b["returns"]) == (0, 0), b
        # Measured, not the loop's cached time: a connect takes some µs.
        assert (b["connect_us"] > 0) == (connects > 0), b
        row = rows[("web", path)]
        assert (row["STATE"], int(row["OPEN"]), int(row["CONNECTS"]),
                int(row["REFUSED"]), int(row["MISSING"]), int(row["TIMEOUT"]),
                int(row["EJECTIONS"]), int(row["RETURNS"])) == (
            "up", 0, connects, fails["refused"], fails["missing"],
            fails["timeout"], 0, 0), row
        lab = {"listener": "web", "socket": path}
        assert metric(samples, "esockd_backend_up", **lab) == 1
        assert metric(samples, "esockd_backend_connections", **lab) == 0
        assert metric(samples, "esockd_backend_connects_total", **lab) == connects
        for reason, n in fails.items():
            assert metric(samples, "esockd_backend_connect_failures_total",
                          reason=reason, **lab) == n
        assert metric(samples, "esockd_backend_ejections_total", **lab) == 0
        assert metric(samples, "esockd_backend_returns_total", **lab) == 0
        assert metric(samples, "esockd_backend_connect_seconds_count", **lab) == connects
        assert metric(samples, "esockd_backend_connect_seconds_bucket",
                      le="+Inf", **lab) == connects
        assert abs(metric(samples, "esockd_backend_connect_seconds_sum", **lab) -
                   b["connect_us"] / 1e6) < 1e-6
    lst = [l for l in stats_json(d)["listeners"] if l["name"] == "web"][0]
    assert (lst["accepted"], lst["closed"], lst["connections"]) == (9, 9, 0), lst


def test_reload_keeps_a_sockets_health_and_a_new_socket_starts_up(esockd, tmp_path):
    """A reload that keeps a socket keeps its health and counts (still
    ejected, its failures kept); a socket put in another's place starts
    afresh, up with nothing counted, and the balance key changes with it."""
    missing = str(tmp_path / "missing.sock")
    other = str(tmp_path / "other.sock")
    live = esockd.echo_handler()
    d = esockd.start(workers=2, listeners=[{"name": "web", "backend": {
        "socket": [missing, live], "backend_retry_interval": 30000}}])
    for i in range(6):
        with connect(d.port) as s:
            assert_echo(s, b"before %d\n" % i)
    lst = dict(d.listeners[0])
    lst["backend"] = dict(lst["backend"], socket=[missing, live], backend_fail_threshold=5)
    d.rewrite(listeners=[lst])
    assert d.reload()[0]
    b = backends_of(d)
    assert b[missing]["state"] == "ejected", b
    assert b[missing]["failures"]["missing"] == 3 and b[live]["connects"] == 6, b
    lst = dict(lst)
    lst["backend"] = dict(lst["backend"], socket=[other, live], balance="least_connections")
    d.rewrite(listeners=[lst])
    assert d.reload()[0]
    b = backends_of(d)
    assert set(b) == {other, live}, b
    assert b[other]["state"] == "up" and b[other]["failures"]["missing"] == 0, b
    assert b[other]["ejections"] == 0 and b[live]["connects"] == 6, b
    with connect(d.port) as s:
        assert_echo(s, b"after\n")
