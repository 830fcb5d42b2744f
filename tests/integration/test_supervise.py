"""The master restarts workers that die, and fixes up the accounting."""

import re
import signal
import os
import threading

from esockd_helpers import admitted, assert_echo, connect, pid_alive, wait_until


def test_sigkilled_worker_is_restarted_and_its_connections_are_subtracted(esockd):
    """SIGKILL a worker under traffic: the same slot gets a new pid, the
    master lives, the other worker's connections keep working, new
    connections echo, and the counters return to 0 after all clients close."""
    d = esockd.start(workers=2)
    pids = d.worker_pids()
    assert set(pids) == {1, 2}, pids

    conns = [connect(d.port) for _ in range(20)]
    new_conns = []
    stop = threading.Event()
    dead = set()
    lock = threading.Lock()
    try:
        for i, c in enumerate(conns):
            assert_echo(c, b"hello %d\n" % i)
        st = d.stats()[d.name]
        assert st["connections"] == 20 and sum(st["per_worker"]) == 20, st
        per = st["per_worker"]
        victim_slot = 1 if per[0] >= per[1] else 2
        victim = pids[victim_slot]
        other_slot = 3 - victim_slot
        expected_survivors = per[other_slot - 1]

        def traffic():
            n = 0
            while not stop.is_set():
                for i, c in enumerate(conns):
                    if stop.is_set():
                        return
                    with lock:
                        if i in dead:
                            continue
                    try:
                        assert_echo(c, b"tick %d on %d\n" % (n, i), timeout=2)
                    except (OSError, AssertionError):
                        with lock:
                            dead.add(i)
                n += 1

        t = threading.Thread(target=traffic, daemon=True)
        t.start()

        os.kill(victim, signal.SIGKILL)
        new_pid = wait_until(lambda: (d.worker_pids().get(victim_slot) not in (None, victim)
                                      and d.worker_pids()[victim_slot]), 5,
                             message="a new 'worker %d started' line" % victim_slot)
        assert new_pid != victim
        assert pid_alive(new_pid)
        assert d.alive(), "master exited (%s)" % d.proc.returncode
        assert d.worker_pids()[other_slot] == pids[other_slot], "the other worker was restarted too"
        assert re.search(r"worker %d \(pid %d\) killed by signal 9" % (victim_slot, victim), d.log()), \
            "no 'killed by signal 9' line for the dead worker"

        for i in range(10):
            c = connect(d.port)
            new_conns.append(c)
            assert_echo(c, b"after restart %d\n" % i)

        stop.set()
        t.join(timeout=10)
        assert not t.is_alive()
        for i, c in enumerate(conns):
            if i in dead:
                continue
            try:
                assert_echo(c, b"final check %d\n" % i, timeout=2)
            except (OSError, AssertionError):
                dead.add(i)
        survivors = 20 - len(dead)
        assert survivors == expected_survivors, (
            "%d of the 20 old connections still work; the surviving worker had %d (per_worker=%s)"
            % (survivors, expected_survivors, per))

        st = d.wait_stats(lambda st: st["connections"] == survivors + 10, timeout=5)
        assert st["connections"] == survivors + 10, (
            "expected %d open (%d survivors + 10 new): %s" % (survivors + 10, survivors, st))
        assert st["accepted"] - st["closed"] == st["connections"], st
    finally:
        stop.set()
        for c in conns + new_conns:
            c.close()

    st = d.wait_stats(lambda st: st["connections"] == 0 and st["accepted"] == st["closed"],
                      timeout=10)
    assert st["connections"] == 0, st
    assert st["accepted"] == st["closed"], st
    assert st["accepted"] == 30, st
    assert sum(st["per_worker"]) == 0, st
    assert d.alive()


def _admitted(port, tag):
    """Open a connection and send a ping: (socket, True) if it is relayed,
    (None, False) if the gateway closed it (limit reached)."""
    return admitted(port, tag, timeout=3)


def test_killed_workers_connections_free_their_places_under_the_limit(esockd):
    """max_connections = 10: after the worker holding k of the 10 connections
    is killed, exactly k new connections are admitted again, no more."""
    d = esockd.start(workers=2, listeners=[{"name": "lim", "max_connections": 10}])
    held = []
    try:
        for i in range(10):
            s, ok = _admitted(d.port, b"fill %d\n" % i)
            assert ok, "connection %d of 10 was not admitted" % i
            held.append(s)
        s, ok = _admitted(d.port, b"eleventh\n")
        assert not ok, "an 11th connection was relayed with max_connections = 10"

        st = d.stats()[d.name]
        per = st["per_worker"]
        slot = 1 if per[0] >= per[1] else 2
        lost = per[slot - 1]
        old = d.worker_pids()[slot]
        os.kill(old, signal.SIGKILL)
        wait_until(lambda: d.worker_pids().get(slot) not in (None, old), 5,
                   message="worker %d to be restarted" % slot)
        st = d.wait_stats(lambda st: st["connections"] == 10 - lost, timeout=5)
        assert st["connections"] == 10 - lost, (lost, st)

        for i in range(lost):
            s, ok = _admitted(d.port, b"refill %d\n" % i)
            assert ok, "refill %d of %d was not admitted (stats %s)" % (i, lost, d.stats()[d.name])
            held.append(s)
        s, ok = _admitted(d.port, b"over the limit again\n")
        assert not ok, "more than 10 connections relayed after the restart"
        st = d.stats()[d.name]
        assert st["connections"] == 10 and sum(st["per_worker"]) == 10, st
    finally:
        for s in held:
            s.close()
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=5)
    assert st["connections"] == 0 and st["accepted"] == st["closed"], st
