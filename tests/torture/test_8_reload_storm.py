"""Torture 8: a reload storm under load.

R reloads in T seconds (long: 100 in 20 s; short: 15 in 4 s), the worker
count changing between 2 and 3 each time, while 8 clients at a time
(2,000 a second at most) connect, echo 4 KiB byte-exact, shut down and
close, in a loop.  No client is refused, reset, cut short or left
waiting; every reload succeeds; esockd accepted exactly the connections
the clients completed, and closed them all normally.  The master's log gives each generation's
retirement ("reloaded: generation N ...; generation N-1 drains") and its
end ("generation M has drained"): at no moment are more than two
generations draining.
"""
import re
import time

import pytest

from load import REJECTIONS, Churn, assert_books_balance
from torture import record, scale

RELOADED_RE = re.compile(r"reloaded: generation (\d+).*generation (\d+) drains")
DRAINED_RE = re.compile(r"generation (\d+) has drained")


def most_draining(d):
    """The most generations draining at once, from the master's log, and
    the generations still draining at its end."""
    draining, most = set(), 0
    for rec in d.log_lines():
        if rec["label"] != "master":
            continue
        m = RELOADED_RE.search(rec["msg"])
        if m:
            draining.add(int(m.group(2)))
            most = max(most, len(draining))
            continue
        m = DRAINED_RE.search(rec["msg"])
        if m:
            draining.discard(int(m.group(1)))
    return most, draining


@pytest.mark.timeout(180)
def test_a_reload_storm_under_load_drops_nothing(esockd, request):
    reloads = scale(request, 15, 100)
    period = scale(request, 4.0, 20.0) / reloads
    d = esockd.start(workers=2)
    churn = Churn(d.port, 8, size=4096, timeout=10, rate=2000)
    gens, slowest = [], 0.0
    try:
        t0 = time.monotonic()
        for i in range(reloads):
            d.rewrite(top={"workers": 3 if i % 2 == 0 else 2})
            t = time.monotonic()
            ok, gen = d.reload()
            slowest = max(slowest, time.monotonic() - t)
            assert ok, gen
            gens.append(gen)
            time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
        storm_s = time.monotonic() - t0
        time.sleep(0.5)   # load on the last generation too
    finally:
        churn.stop()
    assert churn.failures == {}, churn.fail_detail
    assert gens == list(range(2, reloads + 2)), gens
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    assert st["accepted"] == churn.done, (churn.done, st)
    assert st["closed"] == st["closed_normal"] == churn.done, st
    assert all(st[r] == 0 for r in REJECTIONS) and st["accept_errors"] == 0, st
    assert st["bytes_in"] == st["bytes_out"] == 4096 * churn.done, st
    assert_books_balance(st)
    most, left = wait_drained(d)
    assert most <= 2, "%d generations were draining at once" % most
    assert not left, "generations %s never drained" % sorted(left)
    assert d.alive() and len(d.generation_pids()) == (3 if reloads % 2 else 2)
    record(request, "8 reload storm", reloads=reloads, seconds=round(storm_s, 1),
           slowest_reload_ms=round(slowest * 1000), connections=churn.done,
           refused_or_reset=0, most_generations_draining=most)
    print(reloads, storm_s, slowest, churn.done, most)


def wait_drained(d, timeout=10):
    deadline = time.monotonic() + timeout
    while True:
        most, left = most_draining(d)
        if not left or time.monotonic() > deadline:
            return most, left
        time.sleep(0.1)
