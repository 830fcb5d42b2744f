"""idle_timeout closes connections without traffic, and only those.

Some tests place their steps at fixed fractions of the wall-clock second
(`at_wall_fraction`).  This is positioning, not a sleep-as-assert: an
implementation that keeps "last activity" in whole seconds misjudges idle
time by up to a second depending on where in the second the traffic and
the timer fall, and these tests put them where such rounding shows.
"""

import time

from esockd_helpers import assert_echo, connect, recv_until_eof


def at_wall_fraction(frac):
    """Sleep until time.time() next has fractional part `frac` (< 1 s)."""
    now = time.time()
    target = int(now) + frac
    if target <= now + 0.01:
        target += 1
    time.sleep(target - now)


def wait_closed(sock, timeout):
    """Seconds until the daemon closes sock (EOF or reset, no data)."""
    t0 = time.monotonic()
    try:
        rest = recv_until_eof(sock, timeout=timeout)
    except ConnectionResetError:
        rest = b""
    assert rest == b"", "unexpected data before close: %r" % rest
    return time.monotonic() - t0


def test_idle_connection_is_closed_after_idle_timeout(esockd):
    """With idle_timeout = 1 a silent connection is closed after ~1 s
    (not before 0.8 s, surely within 4 s)."""
    d = esockd.start(workers=1, listeners=[{"name": "idle", "idle_timeout": 1}])
    with connect(d.port) as s:
        assert_echo(s, b"one message, then silence\n")
        elapsed = wait_closed(s, 4.0)
    assert 0.8 <= elapsed <= 4.0, "closed after %.2fs of silence (idle_timeout = 1)" % elapsed
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0 and st["closed"] == 1, st


def test_idle_time_is_measured_from_the_last_traffic_not_in_whole_seconds(esockd):
    """Connect at second X.5, last traffic at X.9: the connection must stay
    open until at least ~X+1.8, i.e. not be closed by the timer due at X+1.5
    (a whole-second clock would see 'X+1 - X >= 1' and close after 0.6 s)."""
    d = esockd.start(workers=1, listeners=[{"name": "idle", "idle_timeout": 1}])
    for attempt in range(2):
        at_wall_fraction(0.5)
        with connect(d.port) as s:
            at_wall_fraction(0.9)
            assert_echo(s, b"last words\n", timeout=0.5)
            elapsed = wait_closed(s, 4.0)
        assert elapsed >= 0.8, (
            "attempt %d: closed %.2fs after the last traffic, idle_timeout is 1 s" % (attempt, elapsed))


def test_traffic_just_before_the_idle_timer_keeps_the_connection_open(esockd):
    """Connect at X.5 (idle timer due at X+1.5), traffic at X.9: at X+1.7 the
    connection has been idle only 0.8 s and must still relay."""
    d = esockd.start(workers=1, listeners=[{"name": "idle", "idle_timeout": 1}])
    at_wall_fraction(0.5)
    with connect(d.port) as s:
        at_wall_fraction(0.9)
        assert_echo(s, b"a", timeout=0.5)
        at_wall_fraction(0.7)
        assert_echo(s, b"b", timeout=0.5)
        assert_echo(s, b"c", timeout=0.5)


def test_connection_with_regular_traffic_outlives_idle_timeout(esockd):
    """A byte every 0.3 s for 3 s keeps the connection open past idle_timeout."""
    d = esockd.start(workers=1, listeners=[{"name": "idle", "idle_timeout": 1}])
    with connect(d.port) as s:
        t0 = time.monotonic()
        n = 0
        while time.monotonic() - t0 < 3.0:
            try:
                assert_echo(s, bytes([97 + n % 26]), timeout=1.0)
            except AssertionError as e:
                raise AssertionError("byte %d at %.2fs (0.3 s after the previous echo): %s"
                                     % (n, time.monotonic() - t0, e))
            n += 1
            time.sleep(0.3)
        assert n >= 8
        assert_echo(s, b"still open after %.1fs\n" % (time.monotonic() - t0), timeout=1.0)
        st = d.stats()[d.name]
        assert st["connections"] == 1 and st["closed"] == 0, st
