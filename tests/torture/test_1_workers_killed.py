"""Torture 1: workers killed under load.

N connections relay continuously through an echo backend (every byte
checked against what its connection sent), and every 2 s one worker,
by the pid the daemon reported, is SIGKILLed.  Each time: exactly the
connections the stats had on that worker end (EOF or reset, none other),
all within a bound of the kill; the master counts them in
closed_worker_lost and starts a new worker in that slot; the clients
reconnect and the books balance (accepted - closed = connections = N).
At the end every surviving connection gets back exactly what it sent
(sha256 both ways), and every lost one got back a byte-exact prefix.

Kills are 2 s apart or a little more, never less: the supervisor damps
more than 5 restarts in 10 s (a crash loop), which is not this scenario.
"""
import os
import signal
import time

import pytest

from esockd_helpers import ESOCKD_BIN, pid_alive, pid_is_binary, wait_until
from load import REJECTIONS, Relays, assert_books_balance
from torture import is_long, record, scale

NOTICE_BOUND_S = 1.0    # a dead worker's connections end within this
REPLACE_BOUND_S = 2.0   # and its slot has a new worker within this


@pytest.mark.timeout(240)
def test_workers_killed_every_2_s_lose_no_byte_elsewhere(esockd, request):
    conns = scale(request, 50, 500)
    duration = scale(request, 6.0, 60.0)
    workers = 4
    d = esockd.start(workers=workers, max_open_files=4096)
    relays = Relays(d.port, conns, window=16384, rate=scale(request, 4 << 20, 16 << 20))
    try:
        wait_until(relays.all_echoing, 20, message="all connections relaying")
        st = d.stats()[d.name]
        assert (st["accepted"], st["connections"]) == (conns, conns), st

        kills, lost_total, notice = 0, 0, []
        replaced = []
        start = time.monotonic()
        next_kill = start + 2.0
        while time.monotonic() < start + duration:
            # A steady state before each kill: everyone relaying, the
            # books balanced, and how many each worker holds.
            wait_until(relays.all_echoing, 20, message="all connections relaying again")
            st = d.stats()[d.name]
            assert st["connections"] == conns, st
            assert st["accepted"] == conns + lost_total, st
            assert st["closed_worker_lost"] == lost_total == st["closed"], st
            assert_books_balance(st, "before kill %d" % (kills + 1))
            pids = d.worker_pids()
            assert len(pids) == workers and len(st["per_worker"]) == workers, (pids, st)
            slot = sorted(pids)[kills % workers]
            victim = pids[slot]
            on_victim = st["per_worker"][sorted(pids).index(slot)]
            assert pid_alive(victim) and pid_is_binary(victim, ESOCKD_BIN), victim

            time.sleep(max(0.0, next_kill - time.monotonic()))
            before = len(relays.lost)
            t_kill = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            kills += 1
            next_kill = max(t_kill + 2.0, time.monotonic())
            # Its connections end at once, and no other.
            wait_until(lambda: len(relays.lost) - before >= on_victim, NOTICE_BOUND_S + 5,
                       message="the killed worker's %d connections to end" % on_victim)
            gone = relays.lost[before:]
            notice.append(max([r.ended_at for r in gone], default=t_kill) - t_kill)
            assert notice[-1] <= NOTICE_BOUND_S, (
                "the killed worker's connections took %.2fs to end" % notice[-1])
            # ... and a new worker in its slot.
            wait_until(lambda: d.worker_pids().get(slot, victim) != victim and
                       pid_alive(d.worker_pids()[slot]), REPLACE_BOUND_S,
                       message="worker %d replaced" % slot)
            replaced.append(d.worker_pids()[slot])
            time.sleep(0.2)  # a late loss would show here
            assert len(relays.lost) - before == on_victim, (
                "%d connections ended, the stats had %d on the killed worker"
                % (len(relays.lost) - before, on_victim))
            lost_total += on_victim
            relays.add(on_victim)

        # The end: stop sending, every open connection gets back all it sent.
        wait_until(relays.all_echoing, 20, message="all connections relaying at the end")
        relays.stop_sending()
        wait_until(relays.drained, 30, message="every open connection's echo back")
        assert relays.error is None, relays.error
        assert not relays.corrupt(), [(r.seed, r.rx.bad_at) for r in relays.corrupt()]
        survivors = relays.open_relays()
        assert len(survivors) == conns
        for r in survivors:
            assert r.tx.sha.hexdigest() == r.rx.sha.hexdigest(), r.seed
        assert len(relays.lost) == lost_total
        st = d.stats()[d.name]
        assert st["accepted"] == conns + lost_total, st
        assert st["closed"] == st["closed_worker_lost"] == lost_total, st
        assert st["connections"] == conns, st
        assert all(st[k] == 0 for k in REJECTIONS), st
        assert_books_balance(st, "at the end")
        assert len(set(replaced)) == kills and "crash loop" not in d.log()
        assert d.alive()
        sent, got = relays.bytes_sent(), relays.bytes_received()
    finally:
        relays.close()
    elapsed = time.monotonic() - start
    record(request, "1 workers killed", connections=conns, workers=workers,
           kills=kills, seconds=round(elapsed, 1), connections_lost=lost_total,
           max_notice_ms=round(max(notice) * 1000, 1),
           mib_sent=round(sent / 2**20, 1), mib_received=round(got / 2**20, 1),
           bytes_lost_on_survivors=0, workers_replaced=len(replaced))
    print("kills=%d lost=%d max notice %.0f ms, %.1f MiB each way, long=%s"
          % (kills, lost_total, max(notice) * 1000, sent / 2**20, is_long(request)))
