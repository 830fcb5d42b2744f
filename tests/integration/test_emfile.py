"""Running out of file descriptors (EMFILE) in accept()."""

import errno
import re
import socket
import time

from ctl_helpers import ctl_ok, fetch, listener_json, metric, parse_exposition, parse_stats_text
from esockd_helpers import (admitted, free_port, assert_echo, connect, cpu_seconds, echo_once, pid_alive,
                            read_outcome, wait_until)

FLOOD = 300
HOLD = 2.0
ACCEPT_ERR_RE = re.compile(r"accept|emfile|enfile|too many open files|file descriptor", re.I)


def open_flood(port, n):
    """n non-blocking connects, waited for (kernel handshake) up to 5 s."""
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex(("127.0.0.1", port))
        assert rc in (0, errno.EINPROGRESS), errno.errorcode.get(rc, rc)
        socks.append(s)
    return socks


def test_emfile_backs_off_without_spinning_and_recovers(esockd):
    """max_open_files=64 and 300 held connections: the worker hits EMFILE,
    counts accept_errors, does not busy-spin, logs rarely, keeps serving its
    open connection, and accepts again once the flood is gone."""
    d = esockd.start(workers=1, max_open_files=64,
                     listeners=[{"name": "tight", "backlog": 511}])
    worker = d.worker_pids()[1]
    before = connect(d.port)
    try:
        assert_echo(before, b"before the flood\n")

        log_offset = d.log_size()
        flood_start = time.monotonic()
        flood = open_flood(d.port, FLOOD)
        try:
            # Wait until the worker actually ran into the fd limit.
            st = d.wait_stats(lambda st: st["accept_errors"] > 0, timeout=5)
            assert st["accept_errors"] > 0, st

            # Hold the flood for HOLD seconds and measure the worker's CPU.
            cpu0 = cpu_seconds(worker)
            t0 = time.monotonic()
            echoes = 0
            slowest = 0.0
            while time.monotonic() - t0 < HOLD:
                e0 = time.monotonic()
                assert_echo(before, b"during the flood %d\n" % echoes, timeout=2)
                slowest = max(slowest, time.monotonic() - e0)
                echoes += 1
                time.sleep(0.2)
            cpu = cpu_seconds(worker) - cpu0
            wall = time.monotonic() - t0
            assert cpu < 1.0, "worker used %.2fs CPU in %.2fs of EMFILE flood (busy loop?)" % (cpu, wall)
            assert echoes >= 5
            # The back-off must not block the event loop (e.g. sleep(1)).
            assert slowest < 0.5, "an echo on the open connection took %.2fs during the flood" % slowest

            assert d.alive(), "master died during the flood"
            assert pid_alive(worker), "worker died during the flood"
            assert d.worker_pids() == {1: worker}, "worker was restarted: %s" % d.worker_pids()
            assert d.stats()[d.name]["accept_errors"] > 0
        finally:
            for s in flood:
                s.close()
        flood_secs = time.monotonic() - flood_start

        # Rate-limited logging of the accept failures.
        err_lines = [r["line"] for r in d.log_lines(since=log_offset)
                     if r["label"] == "worker" and r["level"] in ("warn", "error")
                     and ACCEPT_ERR_RE.search(r["msg"])]
        assert len(err_lines) <= 3 * flood_secs + 2, (
            "%d accept-error log lines in %.1fs of flood:\n%s"
            % (len(err_lines), flood_secs, "\n".join(err_lines[:20])))

        # The connection from before the flood still works afterwards.
        assert_echo(before, b"after the flood\n")
    finally:
        before.close()

    # New connections are accepted again without outside help.
    wait_until(lambda: echo_once(d.port, b"recovered\n", timeout=1.0), 10,
               interval=0.2, message="a new connection to echo after the flood")
    assert d.alive() and pid_alive(worker)
    assert d.worker_pids() == {1: worker}


def hold_until_refused(port, limit=200):
    """Open echoing connections one at a time until the gateway closes one
    unserved; returns the held sockets (each relayed once)."""
    held = []
    for i in range(limit):
        s, ok = admitted(port, b"hold %d\n" % i)
        if not ok:
            return held
        held.append(s)
    for s in held:
        s.close()
    raise AssertionError("%d connections and none refused: the descriptor "
                         "limit was never reached" % limit)


def closed_within(port, tag, timeout):
    """Connect, send tag, and return (outcome, seconds until the outcome)."""
    t0 = time.monotonic()
    with connect(port) as s:
        try:
            s.sendall(tag)
            outcome = read_outcome(s, tag, timeout=timeout)
        except (ConnectionResetError, BrokenPipeError):
            outcome = "reset"
    return outcome, time.monotonic() - t0


FAST_REJECTS = 25


def test_out_of_descriptors_new_clients_are_closed_at_once_and_counted(esockd):
    """max_open_files=64, 1 worker: hold connections until the worker has
    no descriptor for one more.  From then on each new client is closed
    within 0.3 s (not left to hang in the backlog through the backoff,
    which grows to 1 s, for a descriptor that never comes), each is
    counted once in rejected_emfile and nowhere else, the worker does not
    spin, the held connections still relay, and once they close the very
    next client is served."""
    mport = free_port()
    d = esockd.start(workers=1, max_open_files=64, metrics="127.0.0.1:%d" % mport,
                     listeners=[{"name": "tight", "backlog": 511}])
    worker = d.worker_pids()[1]
    held = hold_until_refused(d.port)
    try:
        assert len(held) >= 10, "only %d connections before the limit" % len(held)
        st = d.wait_stats(lambda st: st["rejected_emfile"] >= 1, timeout=5)
        assert st["rejected_emfile"] == 1, st
        base = st

        cpu0 = cpu_seconds(worker)
        t0 = time.monotonic()
        slowest = 0.0
        for i in range(FAST_REJECTS):
            outcome, secs = closed_within(d.port, b"no room %d\n" % i, timeout=3.0)
            assert outcome in ("eof", "reset"), (i, outcome)
            slowest = max(slowest, secs)
            time.sleep(0.08)    # across several backoff periods (20 ms .. 1 s)
        cpu = cpu_seconds(worker) - cpu0
        wall = time.monotonic() - t0
        assert slowest < 0.3, "a client out of descriptors waited %.2f s to be closed" % slowest
        assert cpu < 0.5, "worker used %.2f s CPU in %.2f s out of descriptors" % (cpu, wall)

        st = d.wait_stats(lambda st: st["rejected_emfile"] >= 1 + FAST_REJECTS, timeout=5)
        assert st["rejected_emfile"] == 1 + FAST_REJECTS, st
        for k in ("accepted", "connections", "rejected_limit", "rejected_rule",
                  "rejected_rate", "rejected_source", "backend_failures"):
            assert st[k] == base[k], (k, base, st)
        assert st["accept_errors"] >= 1, st
        # The same count in every report.
        status, _, body = fetch("http://127.0.0.1:%d/metrics" % mport)
        assert status == 200, status
        samples = parse_exposition(body.decode())[0]
        assert metric(samples, "esockd_connections_refused_total", listener="tight",
                      reason="emfile") == 1 + FAST_REJECTS
        assert listener_json(d)["refused"]["emfile"] == 1 + FAST_REJECTS
        row = parse_stats_text(ctl_ok(d, "stats"))[1]["tight"]
        assert row["REFUSED_EMFILE"] == str(1 + FAST_REJECTS), row

        for i, s in enumerate(held[:3]):
            assert_echo(s, b"still relayed %d\n" % i)

        # Refuse clients until one starts a new pause (now 1 s long), so
        # that the held connections close early in it: the pause must end
        # as soon as they free room, not a second later.
        errors = st["accept_errors"]
        deadline = time.monotonic() + 5
        while d.stats()[d.name]["accept_errors"] == errors:
            assert time.monotonic() < deadline, "no new pause within 5 s"
            assert closed_within(d.port, b"pause\n", timeout=3.0)[0] in ("eof", "reset")
            time.sleep(0.02)
    finally:
        for s in held:
            s.close()
    d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert echo_once(d.port, b"served again\n", timeout=2.0), \
        "the first client after the held connections closed was not served"
    assert d.worker_pids() == {1: worker} and pid_alive(worker)
