"""rate_limit_per_source and rate_burst_per_source: new connections per
second per source, across workers, by the same prefixes as
max_connections_per_source.  Sources are picked in 127.0.0.0/8 by
binding the client socket; the prefixes are tried with IPv4 (::1 is the
only IPv6 loopback address: IPv6 prefixes are unit-tested)."""
import multiprocessing
import time

from ctl_helpers import (ctl_ok, fetch, listener_json, metric, parse_exposition,
                         parse_stats_text)
from esockd_helpers import admitted, free_port

RATE = 1
BURST = 5


def attempt(port, source, tag, host="127.0.0.1"):
    """One connection from source: True when relayed, False when refused.
    Closed at once either way: the rate is about new connections, and a
    source keeps its budget with nothing open."""
    s, ok = admitted(port, tag, host=host, source=source)
    if s is not None:
        s.close()
    return ok


def racer(port, source, k, n, go, out):
    """A client process: wait for the others, then n connections."""
    go.wait(10)
    out.put([attempt(port, source, b"race %d %d\n" % (k, i)) for i in range(n)])


def test_a_source_over_its_rate_is_refused_while_another_is_served(esockd):
    """1/s with a burst of 5: 127.0.0.2 gets 6 at once, then is refused;
    127.0.0.3 still gets its own 6.  Every refusal is counted, the same in
    the SIGUSR1 line, the stats table, its JSON and /metrics."""
    mport = free_port()
    d = esockd.start(workers=2, metrics="127.0.0.1:%d" % mport, listeners=[
        {"name": "s", "rate_limit_per_source": RATE, "rate_burst_per_source": BURST}])
    t0 = time.monotonic()
    first = [attempt(d.port, "127.0.0.2", b"a %d\n" % i) for i in range(12)]
    took = time.monotonic() - t0
    served = sum(first)
    assert BURST + 1 <= served <= BURST + 1 + int(RATE * took), (first, took)
    assert first[:BURST + 1] == [True] * (BURST + 1), first
    other = [attempt(d.port, "127.0.0.3", b"b %d\n" % i) for i in range(BURST + 1)]
    assert all(other), other

    refused = 12 - served
    st = d.wait_stats(lambda st: st["rejected_source_rate"] == refused
                      and st["connections"] == 0)
    assert st["rejected_source_rate"] == refused, (st, refused)
    assert st["accepted"] == served + BURST + 1, st
    assert st["rejected_rate"] == st["rejected_source"] == st["rejected_limit"] == 0, st
    js = listener_json(d)
    assert js["refused"]["source_rate"] == refused, js
    _, rows = parse_stats_text(ctl_ok(d, "stats"))
    assert int(rows["s"]["REFUSED_SOURCE_RATE"]) == refused, rows["s"]
    status, _, body = fetch("http://127.0.0.1:%d/metrics" % mport)
    assert status == 200
    samples = parse_exposition(body.decode())[0]
    assert metric(samples, "esockd_connections_refused_total", listener="s",
                  reason="source_rate") == refused
    assert ("listener 's': 127.0.0.2:" in d.log() and
            "over rate_limit_per_source 1/s (rate_burst_per_source 5); "
            "connection refused" in d.log()), d.log()


def test_the_source_rate_is_exact_when_processes_race_every_worker(esockd):
    """Four client processes, started together, open 40 connections from
    one address against two workers: at most burst + 1 plus one per
    second elapsed are served, at least burst + 1, and every other one is
    refused and counted.  Two workers each with a budget of their own
    would serve up to twice the burst."""
    d = esockd.start(workers=2, listeners=[
        {"name": "s", "rate_limit_per_source": RATE, "rate_burst_per_source": BURST}])
    procs, n = 4, 10
    ctx = multiprocessing.get_context("fork")
    go, out = ctx.Barrier(procs + 1), ctx.Queue()
    ps = [ctx.Process(target=racer, args=(d.port, "127.0.0.5", k, n, go, out))
          for k in range(procs)]
    for p in ps:
        p.start()
    try:
        go.wait(10)
        t0 = time.monotonic()
        results = [r for _ in ps for r in out.get(timeout=60)]
        took = time.monotonic() - t0
    finally:
        for p in ps:
            p.join(10)
    assert all(p.exitcode == 0 for p in ps), [p.exitcode for p in ps]
    served = sum(results)
    assert len(results) == procs * n
    assert BURST + 1 <= served <= BURST + 1 + int(RATE * took), (served, took)
    st = d.wait_stats(lambda st: st["rejected_source_rate"] == procs * n - served
                      and st["connections"] == 0)
    assert st["rejected_source_rate"] + st["accepted"] == procs * n, st
    assert st["accepted"] == served, (st, served)


def test_a_prefix_makes_one_source_of_a_network_for_the_rate(esockd):
    """source_prefix_v4 = 24: 127.0.0.2, .3 and .4 draw from one budget;
    127.0.1.2, in another /24, from its own."""
    d = esockd.start(workers=2, listeners=[
        {"name": "s", "rate_limit_per_source": 1, "rate_burst_per_source": 2,
         "source_prefix_v4": 24}])
    assert attempt(d.port, "127.0.0.2", b"one\n")
    assert attempt(d.port, "127.0.0.3", b"two\n")
    assert attempt(d.port, "127.0.0.4", b"three\n")
    assert not attempt(d.port, "127.0.0.3", b"four\n")
    assert not attempt(d.port, "127.0.0.9", b"five\n")
    assert attempt(d.port, "127.0.1.2", b"elsewhere\n")
    st = d.wait_stats(lambda st: st["rejected_source_rate"] == 2)
    assert (st["rejected_source_rate"], st["accepted"]) == (2, 4), st


def test_an_ipv6_source_is_rated_too(esockd):
    d = esockd.start(listeners=[{"name": "s6", "host": "::1",
                                 "rate_limit_per_source": 1, "rate_burst_per_source": 0}])
    assert attempt(d.port, "::1", b"one\n", host="::1")
    assert not attempt(d.port, "::1", b"two\n", host="::1")
    st = d.wait_stats(lambda st: st["rejected_source_rate"] == 1)
    assert (st["rejected_source_rate"], st["accepted"]) == (1, 1), st


def test_a_reload_changes_the_source_rate_and_the_prefix(esockd):
    """1/s, no burst, by address: 127.0.0.2 and 127.0.0.3 one each.  A
    reload to /24 makes them one source; another to no rate serves all."""
    d = esockd.start(listeners=[{"name": "s", "rate_limit_per_source": 1,
                                 "rate_burst_per_source": 0}])
    assert attempt(d.port, "127.0.0.2", b"a\n")
    assert not attempt(d.port, "127.0.0.2", b"b\n")
    assert attempt(d.port, "127.0.0.3", b"c\n")

    lst = dict(d.listeners[0], source_prefix_v4=24)
    d.rewrite(listeners=[lst])
    ok, gen = d.reload()
    assert ok and gen == 2, gen
    assert attempt(d.port, "127.0.0.4", b"d\n")
    assert not attempt(d.port, "127.0.0.5", b"e\n")

    lst["rate_limit_per_source"] = 0
    d.rewrite(listeners=[lst])
    ok, gen = d.reload()
    assert ok and gen == 3, gen
    assert all(attempt(d.port, "127.0.0.6", b"f %d\n" % i) for i in range(5))
