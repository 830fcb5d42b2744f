"""max_connections_per_source: open connections per client address,
exact across workers and after a worker dies.  Sources are picked in
127.0.0.0/8 by binding the client socket."""
import os
import signal
import threading

from ctl_helpers import listener_json
from esockd_helpers import admitted, wait_until


def open_from(port, source, tag, host="127.0.0.1"):
    """(socket, True) when relayed (echo seen), (None, False) when closed."""
    return admitted(port, tag, host=host, source=source)


def test_each_source_gets_its_own_limit(esockd):
    d = esockd.start(workers=4, listeners=[{"name": "s", "max_connections_per_source": 2}])
    held = []
    try:
        for src in ("127.0.0.2", "127.0.0.3"):
            for i in range(2):
                s, ok = open_from(d.port, src, b"%s %d\n" % (src.encode(), i))
                assert ok, (src, i)
                held.append(s)
        assert not open_from(d.port, "127.0.0.2", b"third\n")[1]
        assert not open_from(d.port, "127.0.0.3", b"third\n")[1]
        s, ok = open_from(d.port, "127.0.0.4", b"another source\n")
        assert ok
        held.append(s)
        st = d.wait_stats(lambda st: st["rejected_source"] == 2)
        assert (st["rejected_source"], st["accepted"], st["connections"]) == (2, 5, 5), st
        assert listener_json(d)["refused"]["source"] == 2
        # One of 127.0.0.2's closes: it may have one more again.
        held.pop(0).close()
        d.wait_stats(lambda st: st["connections"] == 4)
        s, ok = open_from(d.port, "127.0.0.2", b"again\n")
        assert ok
        held.append(s)
        assert "has max_connections_per_source open; connection refused" in d.log()
    finally:
        for s in held:
            s.close()
    st = d.wait_stats(lambda st: st["connections"] == 0)
    assert st["accepted"] == st["closed"] == 6, st


def test_the_limit_is_exact_when_one_source_races_every_worker(esockd):
    """40 connections from one address at once, on four workers, a limit
    of 5: exactly 5 are relayed, 35 refused and counted."""
    d = esockd.start(workers=4, listeners=[{"name": "s", "max_connections_per_source": 5}])
    go = threading.Barrier(8)
    results, lock = [], threading.Lock()

    def run(k):
        go.wait(10)
        for i in range(5):
            s, ok = open_from(d.port, "127.0.0.5", b"race %d %d\n" % (k, i))
            with lock:
                results.append(s)
    ts = [threading.Thread(target=run, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    held = [s for s in results if s is not None]
    try:
        assert len(results) == 40
        assert len(held) == 5, "%d relayed from one source with a limit of 5" % len(held)
        st = d.wait_stats(lambda st: st["rejected_source"] == 35)
        assert (st["rejected_source"], st["connections"]) == (35, 5), st
    finally:
        for s in held:
            s.close()
    st = d.wait_stats(lambda st: st["connections"] == 0)
    assert st["accepted"] == st["closed"] == 5, st


def test_a_dead_workers_connections_stop_counting(esockd):
    """One worker holds all 3 of a source's connections and is killed:
    after its restart the source may open 3 again, not 0."""
    d = esockd.start(workers=1, listeners=[{"name": "s", "max_connections_per_source": 3}])
    held = [open_from(d.port, "127.0.0.6", b"before %d\n" % i) for i in range(3)]
    assert all(ok for _, ok in held)
    assert not open_from(d.port, "127.0.0.6", b"fourth\n")[1]
    old = d.worker_pids()[1]
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: d.worker_pids().get(1) not in (None, old), 5,
               message="the worker to be restarted")
    for s, _ in held:
        s.close()
    d.wait_stats(lambda st: st["connections"] == 0)
    again = [open_from(d.port, "127.0.0.6", b"after %d\n" % i) for i in range(3)]
    try:
        assert all(ok for _, ok in again), "the dead worker's connections still count"
        assert not open_from(d.port, "127.0.0.6", b"fourth again\n")[1]
    finally:
        for s, _ in again:
            if s is not None:
                s.close()


def test_ipv6_sources_are_limited_too(esockd):
    d = esockd.start(listeners=[{"name": "s6", "host": "::1", "max_connections_per_source": 1}])
    s, ok = open_from(d.port, "::1", b"one\n", host="::1")
    try:
        assert ok
        assert not open_from(d.port, "::1", b"two\n", host="::1")[1]
    finally:
        s.close()
    st = d.wait_stats(lambda st: st["rejected_source"] == 1 and st["connections"] == 0)
    assert st["accepted"] == 1, st


def test_a_prefix_makes_one_source_of_a_network(esockd):
    """source_prefix_v4 = 24 and a limit of 2: 127.0.0.2 and 127.0.0.3
    hold the /24's two, so 127.0.0.4 is refused; 127.0.1.2, in another
    /24, is not.  One closing frees a place for any address of the /24."""
    d = esockd.start(workers=2, listeners=[
        {"name": "s", "max_connections_per_source": 2, "source_prefix_v4": 24}])
    held = []
    try:
        for src in ("127.0.0.2", "127.0.0.3"):
            s, ok = open_from(d.port, src, b"from %s\n" % src.encode())
            assert ok, src
            held.append(s)
        assert not open_from(d.port, "127.0.0.4", b"same /24\n")[1]
        s, ok = open_from(d.port, "127.0.1.2", b"another /24\n")
        assert ok
        held.append(s)
        st = d.wait_stats(lambda st: st["rejected_source"] == 1)
        assert (st["rejected_source"], st["connections"]) == (1, 3), st
        held.pop(0).close()
        d.wait_stats(lambda st: st["connections"] == 2)
        s, ok = open_from(d.port, "127.0.0.4", b"room now\n")
        assert ok
        held.append(s)
    finally:
        for s in held:
            s.close()
