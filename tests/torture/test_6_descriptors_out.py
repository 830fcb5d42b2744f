"""Scenario 6: descriptors out.

One worker with a small descriptor limit (max_open_files 128; 1,024 in
the long form) under load: a few connections stream echoes, byte-exact,
the whole time, while held connections fill the worker until accept
fails.  Then: no crash (same worker, master up), no spin (the worker's
CPU over a second out of descriptors, with clients knocking, stays
small), every client refused fast (closed well under a second) and
counted once in rejected_emfile, the loaded connections never falter,
and once held connections close, a new client is served within 100 ms.
"""
import socket
import statistics
import threading
import time

import pytest

from esockd_helpers import admitted, connect, cpu_seconds, pid_alive, recv_exact, try_echo
from stalls import expected
from torture import record, scale

LOADED = 4              # connections streaming echoes throughout
ECHO = 16384            # bytes per echo on them
REFUSED_WITHIN = 0.3    # s: a refused client hears this soon at the latest
CPU_BOUND = 0.3         # s of worker CPU in the second out of descriptors
RECOVERY = 0.100        # s from releasing held connections to a client served
PAUSES = 5              # accept pauses before a release: the 5th is 320 ms long
RELEASE = 8             # held connections closed per recovery round


class Load:
    """LOADED connections echoing the stream in a thread, each checked."""

    def __init__(self, port):
        self.socks = [connect(port) for _ in range(LOADED)]
        self.echoes, self.slowest, self.errors = 0, 0.0, []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        off = 0
        try:
            while not self._stop.is_set():
                data = expected(off, ECHO)
                for s in self.socks:
                    t0 = time.monotonic()
                    s.sendall(data)
                    got = recv_exact(s, ECHO, timeout=5)
                    self.slowest = max(self.slowest, time.monotonic() - t0)
                    if got != data:
                        raise AssertionError("a loaded connection got other bytes")
                    self.echoes += 1
                off += ECHO
                time.sleep(0.005)
        except Exception as e:  # for the test to see
            self.errors.append(repr(e))

    def stop(self):
        self._stop.set()
        self.thread.join(timeout=10)
        for s in self.socks:
            s.close()


def knock(port, tag, timeout=3.0):
    """One client: ('echo', s) when served (s left open), else (outcome,
    seconds until the gateway closed it)."""
    t0 = time.monotonic()
    outcome, s = try_echo(port, tag, timeout=timeout)
    if outcome == "echo":
        return outcome, s
    return outcome, time.monotonic() - t0


@pytest.mark.timeout(180)
def test_out_of_descriptors_no_crash_no_spin_refused_fast_and_back_within_100_ms(
        esockd, request):
    limit = scale(request, 128, 1024)
    rounds = scale(request, 3, 10)
    d = esockd.start(workers=1, max_open_files=limit, listeners=[{"name": "tight"}])
    worker = d.worker_pids()[1]
    held, refused = [], 0
    load = Load(d.port)
    try:
        def fill():
            """Hold served clients until one is refused; returns how many."""
            nonlocal refused
            n = 0
            for i in range(limit):
                outcome, s = knock(d.port, b"hold %d\n" % i)
                if outcome != "echo":
                    assert outcome in ("eof", "reset"), outcome
                    refused += 1
                    return n
                held.append(s)
                n += 1
            raise AssertionError("%d clients held and none refused" % n)

        filled = fill()
        assert filled >= 10, "only %d connections before the limit" % filled
        base = d.wait_stats(lambda st: st["rejected_emfile"] == refused, timeout=5)
        assert base["rejected_emfile"] == refused, base

        # A second out of descriptors, with a client knocking every 20 ms.
        cpu0, t0 = cpu_seconds(worker), time.monotonic()
        waits = []
        while time.monotonic() - t0 < 1.0:
            outcome, secs = knock(d.port, b"no room\n")
            assert outcome in ("eof", "reset"), "a client was %s with no descriptor free" % outcome
            refused += 1
            waits.append(secs)
            time.sleep(0.02)
        cpu = cpu_seconds(worker) - cpu0
        wall = time.monotonic() - t0
        assert cpu < CPU_BOUND, "the worker used %.2f s of CPU in %.2f s out of descriptors" % (cpu, wall)
        assert max(waits) < REFUSED_WITHIN, (
            "a refused client waited %.3f s for its close" % max(waits))
        st = d.wait_stats(lambda st: st["rejected_emfile"] == refused, timeout=5)
        assert st["rejected_emfile"] == refused, (refused, st)
        assert st["accepted"] == base["accepted"], "a client was accepted with no room"

        # Out of descriptors long enough that the worker's pause is long
        # (20 ms doubling to 1 s), then release some held connections just
        # as a new pause begins: the next client must not wait it out.
        recovery = []
        for r in range(rounds):
            e0 = d.stats()["tight"]["accept_errors"]
            while d.stats()["tight"]["accept_errors"] < e0 + PAUSES:
                outcome, _ = knock(d.port, b"no room\n")
                assert outcome in ("eof", "reset"), outcome
                refused += 1
            for s in held[:RELEASE]:
                s.close()
            del held[:RELEASE]
            t0 = time.monotonic()
            while True:
                outcome, s = knock(d.port, b"recovered %d\n" % r, timeout=2.0)
                if outcome == "echo":
                    break
                assert outcome in ("eof", "reset"), outcome
                refused += 1
                assert time.monotonic() - t0 < 3.0, "not served 3 s after descriptors freed"
            recovery.append(time.monotonic() - t0)
            held.append(s)
            fill()          # and out of descriptors again
        assert max(recovery) < RECOVERY, (
            "served %s s after held connections closed: over %.0f ms"
            % (["%.3f" % x for x in recovery], RECOVERY * 1000))

        load.stop()
        assert not load.errors, load.errors
        assert load.echoes > 0
        assert d.alive() and pid_alive(worker), "a process died out of descriptors"
        assert d.worker_pids() == {1: worker}, "the worker was replaced"
        n_held = len(held)
        for s in held:
            s.close()
        held = []
        st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
        assert st["connections"] == 0 and st["accepted"] == st["closed"], st
        assert st["rejected_emfile"] == refused, (refused, st)
        for k in ("rejected_limit", "rejected_global_limit", "rejected_rule", "rejected_rate",
                  "rejected_source", "rejected_source_rate", "rejected_handshakes",
                  "backend_failures", "closed_local_error"):
            assert st[k] == 0, (k, st)
        assert st["accept_errors"] >= 1, st
    finally:
        load.stop()
        for s in held:
            s.close()

    record(request, "6 descriptors out", max_open_files=limit, held_at_limit=filled,
           refused=refused, refused_slowest_s=round(max(waits), 4),
           worker_cpu_s_in_1s_out=round(cpu, 3),
           recovery_median_ms=round(statistics.median(recovery) * 1000, 1),
           recovery_max_ms=round(max(recovery) * 1000, 1), recovery_rounds=rounds,
           loaded_echoes=load.echoes, loaded_slowest_echo_s=round(load.slowest, 3),
           accepted=st["accepted"], closed=st["closed"])
