"""Crash-loop damping of worker restarts, and journal-style log lines."""

import os
import re
import signal
import subprocess
import time

from esockd_helpers import esockd_argv, echo_once, free_port, pid_alive, wait_until


def _restart_after_kill(d, slot):
    """SIGKILL the worker in `slot`; return (seconds until its replacement's
    'started' line, the new pid)."""
    old = d.worker_pids()[slot]
    t0 = time.monotonic()
    os.kill(old, signal.SIGKILL)
    new = wait_until(lambda: d.worker_pids().get(slot) not in (None, old)
                     and d.worker_pids()[slot], 10,
                     message="worker %d restarted after pid %d" % (slot, old))
    return time.monotonic() - t0, new


def test_crash_loop_restarts_back_off_instead_of_spinning(esockd):
    """Five quick restarts are immediate; past five in ten seconds the
    master waits 1 s, then 2 s, says so in the log, and still serves."""
    d = esockd.start(workers=1)
    delays = [_restart_after_kill(d, 1)[0] for _ in range(5)]
    assert max(delays) < 0.8, delays
    sixth, _ = _restart_after_kill(d, 1)
    seventh, pid = _restart_after_kill(d, 1)
    assert sixth >= 0.9, (delays, sixth)
    assert seventh >= 1.8 and seventh > sixth, (sixth, seventh)
    assert re.search(r"worker 1 killed by signal 9 .*crash loop.*next restart in 1 s",
                     d.log()), d.log()
    assert d.alive() and pid_alive(pid)
    assert echo_once(d.port, b"still serving\n")


def test_log_lines_use_journal_priorities_when_stderr_is_the_journal(esockd, tmp_path):
    """With JOURNAL_STREAM naming stderr, lines carry <N> priority prefixes
    instead of timestamps (info is <6>, warn is <4>)."""
    sock = esockd.echo_handler()
    port = free_port()
    conf = esockd.write_config(
        'workers = 1;\nmax_open_files = 4096;\ncontrol_socket = "";\n'
        'listeners = ( { name = "j"; '
        'bind = "127.0.0.1:%d";\n backlog = 65535;\n backend = { socket = "%s"; }; } );\n'
        % (port, sock))
    log_path = tmp_path / "journal.log"
    with open(log_path, "wb") as log:
        st = os.fstat(log.fileno())
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        proc = subprocess.Popen(esockd_argv("-c", str(conf)), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, env=env)
    try:
        wait_until(lambda: b"ready:" in log_path.read_bytes(), 10, message="ready line")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = log_path.read_text().splitlines()
    assert any(l.startswith("<6>master[%d] info: ready:" % proc.pid) for l in lines), lines
    # backlog above somaxconn (4096 by default) is a warning: priority 4
    with open("/proc/sys/net/core/somaxconn") as f:
        somaxconn = int(f.read())
    if somaxconn < 65535:
        assert any(l.startswith("<4>master[") and "somaxconn" in l for l in lines), lines
    else:
        print("somaxconn is %d: no backlog warning to check the <4> prefix on" % somaxconn)
    assert not any(re.match(r"\d{4}-\d\d-\d\dT", l) for l in lines), lines
