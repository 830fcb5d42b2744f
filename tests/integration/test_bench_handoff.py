"""The benchmark's echo server in hand-off mode (esockd-bench-echo -H), the
backend of bench/run.sh's "handoff" gateway, against the real esockd: a
listener with mode = "handoff" hands each client's socket to it, it echoes
on the client itself, and when the client closes it tells esockd with
"closed ID" on the channel the client came on.

Byte-exact echo over several connections held open at once (small and
large messages), then esockd's books: every connection made was handed
off, and once the clients closed, none is open and the handler closed
each one (closed_by_handler == handed_off).  Then a short run of the load
generator through it, with the same books.  No figure is timed.
"""

import os
import random
import signal
import subprocess
import time

import pytest

from esockd_helpers import REPO, connect, recv_exact, skip_under_valgrind, wait_until

ECHO = REPO / "build" / "esockd-bench-echo"
LOADGEN = REPO / "build" / "esockd-bench"
CLIENTS = 12


@pytest.fixture
def handoff_echo(esockd):
    """esockd-bench-echo -H on a fresh socket (2 threads, as in run.sh);
    yields the socket path; stopped (by pid) at teardown."""
    for tool in (ECHO, LOADGEN):
        if not tool.exists():
            pytest.fail("%s is missing: make bench-tools" % tool)
    path = esockd._sock_path("hoecho")
    log = open(esockd.tmp_path / "hoecho.log", "wb")
    proc = subprocess.Popen([str(ECHO), "-H", "unix:%s" % path, "-T", "2"],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: os.path.exists(path) or proc.poll() is not None, 10,
                   message="esockd-bench-echo -H did not create its socket")
        assert proc.poll() is None, (esockd.tmp_path / "hoecho.log").read_text()
        yield str(path)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    assert proc.returncode == 0, (esockd.tmp_path / "hoecho.log").read_text()


def start_handoff(esockd, path):
    return esockd.start(
        listeners=[{"name": "ho", "idle_timeout": 0,
                    "backend": {"socket": path, "mode": "handoff",
                                "connect_timeout": 5000}}],
        workers=2)


def echo_through(port, data):
    """One connection: send data, read exactly its echo, return the socket."""
    s = connect(port)
    s.sendall(data)
    got = recv_exact(s, len(data), timeout=10)
    assert got == data, "echo differs (%d bytes sent, %d back)" % (len(data), len(got))
    return s


def books_settle(d, made):
    """Wait until esockd counts every connection closed by the handler."""
    return d.wait_stats(
        lambda st: st["connections"] == 0 and st["closed_by_handler"] >= made,
        timeout=10)


@pytest.mark.timeout(90)
def test_handoff_echo_is_byte_exact_and_the_books_close(esockd, handoff_echo):
    d = start_handoff(esockd, handoff_echo)
    # the channels come up just after the workers: the first client may
    # wait for one (connect_timeout), so this one is counted too
    first = echo_through(d.port, b"hello through a hand-off\n")
    made = 1
    rng = random.Random(16)
    socks = [first]
    for i in range(CLIENTS):
        size = (64, 1024, 16384, 65536)[i % 4]
        socks.append(echo_through(d.port, rng.randbytes(size)))
        made += 1
    # all held open at once: a second round on each, in reverse order
    for s in reversed(socks):
        data = rng.randbytes(rng.randrange(1, 65536))
        s.sendall(data)
        assert recv_exact(s, len(data), timeout=10) == data
    st = d.stats()["ho"]
    assert st["handed_off"] == made, st
    assert st["connections"] == made, st
    for s in socks:
        s.close()
    st = books_settle(d, made)
    assert st["connections"] == 0, st
    assert st["handed_off"] == made, st
    assert st["closed_by_handler"] == st["handed_off"], st
    assert st["handoff_bad_records"] == 0, st
    assert st["closed_handler_lost"] == 0, st


@skip_under_valgrind("the load generator counts a round trip over 5 s as "
                     "failed, which esockd under memcheck may take")
@pytest.mark.timeout(90)
def test_loadgen_through_the_handoff_echo(esockd, handoff_echo):
    d = start_handoff(esockd, handoff_echo)
    echo_through(d.port, b"warm\n").close()
    for mode, extra in (("rate", ["-c", "4"]), ("echo", ["-c", "8", "-m", "64"]),
                        ("stream", ["-c", "2", "-m", "16384"])):
        p = subprocess.run([str(LOADGEN), mode, "-t", "127.0.0.1:%d" % d.port,
                            "-d", "1", "-w", "0"] + extra,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=60)
        out = p.stdout.decode(errors="replace")
        assert p.returncode == 0, out
        result = [l for l in out.splitlines() if l.startswith("RESULT ")]
        assert result and " errors=0 " in result[0], out
        assert "lost_bytes=" not in result[0] or " lost_bytes=0 " in result[0], out
    st = d.stats()["ho"]
    made = st["accepted"]
    assert made > 10, st
    st = books_settle(d, made)
    assert st["handed_off"] == st["accepted"], st
    assert st["connections"] == 0, st
    assert st["closed_by_handler"] == st["handed_off"], st
    assert st["handoff_bad_records"] == 0, st
