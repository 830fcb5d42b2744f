"""Running out of file descriptors (EMFILE) in accept()."""

import errno
import re
import socket
import time

from esockd_helpers import assert_echo, connect, cpu_seconds, echo_once, pid_alive, wait_until

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
