"""The top-level max_connections, shared by every listener, and
reserved_connections, the part of it only one listener may take: each
refusal counted as rejected_global_limit, the use shown in every report,
exact across workers, and changed by a reload."""

import re
import socket
import threading

from ctl_helpers import (ctl_ok, fetch, metric, parse_exposition, parse_stats_text,
                         stats_json, wait_listener)
from esockd_helpers import admitted, assert_echo, free_port, wait_outcomes, wait_until

GLOBAL_RE = re.compile(r"master\[\d+\] info: stats global (.*)$", re.M)


def logged_global(d):
    """The 'stats global' SIGUSR1 line as {key: int}, from the same
    SIGUSR1 as d.stats()."""
    offset = d.log_size()
    d.stats()
    found = wait_until(lambda: GLOBAL_RE.findall(d.log_since(offset)), 5,
                       message="the 'stats global' line after SIGUSR1")
    return {k: int(v) for k, v in re.findall(r"(\w+)=(-?\d+)", found[-1])}


def hold(d, name, n, tag):
    """n more relayed connections to listener `name` (each echoed once)."""
    socks = []
    for i in range(n):
        s, ok = admitted(d.ports[name], b"%s %d\n" % (tag, i))
        assert ok, "%s: client %d of %d was refused" % (name, i + 1, n)
        socks.append(s)
    return socks


def refused(d, name, tag):
    s, ok = admitted(d.ports[name], tag)
    if ok:
        s.close()
    return not ok


def test_a_reservation_keeps_room_for_its_listener(esockd):
    """max_connections = 4 at the top, the second listener reserves 2:
    the first takes 2 and no more while the second is empty, the second
    still gets its 2, and then a third only once the first gives one
    back; each refusal counted in rejected_global_limit, none in
    rejected_limit; stats, JSON, SIGUSR1 and /metrics show the use."""
    mport = free_port()
    d = esockd.start(workers=2, max_connections=4, metrics="127.0.0.1:%d" % mport,
                     listeners=[{"name": "first"},
                                {"name": "second", "reserved_connections": 2}])
    held = []
    try:
        held += hold(d, "first", 2, b"first")
        assert refused(d, "first", b"first, third\n")
        wait_listener(d, lambda l: l["refused"]["global_limit"] == 1, name="first")
        assert refused(d, "first", b"first, fourth\n")

        second = hold(d, "second", 2, b"second")     # its reservation
        held += second
        assert refused(d, "second", b"second, third\n")

        held[0].close()                               # the first gives one back
        wait_listener(d, lambda l: l["connections"] == 1, name="first")
        held += hold(d, "second", 1, b"second, third")
        assert refused(d, "first", b"first, again\n")

        full = stats_json(d)
        by = {l["name"]: l for l in full["listeners"]}
        assert by["first"]["connections"] == 1 and by["second"]["connections"] == 3, by
        assert by["first"]["refused"]["global_limit"] == 3, by["first"]
        assert by["second"]["refused"]["global_limit"] == 1, by["second"]
        assert by["first"]["refused"]["limit"] == by["second"]["refused"]["limit"] == 0
        assert (by["first"]["reserved_connections"],
                by["second"]["reserved_connections"]) == (0, 2)
        want = {"max_connections": 4, "connections": 4, "reserved": 2, "committed": 4}
        assert full["global"] == want, full["global"]

        g = logged_global(d)
        assert {k: g[k] for k in want} == want, g
        logged = d.stats()
        assert logged["first"]["rejected_global_limit"] == 3, logged["first"]
        assert logged["second"]["reserved_connections"] == 2, logged["second"]

        header, rows = parse_stats_text(ctl_ok(d, "stats"))
        assert header["connections"] == "4 open of max_connections 4 (2 reserved, 4 committed)", \
            header
        assert rows["first"]["REFUSED_GLOBAL"] == "3" and rows["second"]["RESERVED"] == "2", rows

        status, _, body = fetch("http://127.0.0.1:%d/metrics" % mport)
        assert status == 200
        samples = parse_exposition(body.decode())[0]
        assert metric(samples, "esockd_connections_refused_total", listener="first",
                      reason="global_limit") == 3
        assert metric(samples, "esockd_reserved_connections", listener="second") == 2
        assert metric(samples, "esockd_global_max_connections") == 4
        assert metric(samples, "esockd_global_connections") == 4
        assert metric(samples, "esockd_global_reserved_connections") == 2
        assert metric(samples, "esockd_global_committed_connections") == 4

        for i, s in enumerate(held[1:]):
            assert_echo(s, b"still relayed %d\n" % i)
    finally:
        for s in held:
            s.close()


GLOBAL = 10
RESERVED = 3
TOTAL = 200
THREADS = 8


def flood_two(ports, round_no):
    """TOTAL simultaneous connects over both listeners (alternating), from
    THREADS threads behind a barrier; each sends a ping and waits for its
    echo.  Returns ({listener: held sockets}, {outcome: count})."""
    barrier = threading.Barrier(THREADS)
    results, errors = [None] * THREADS, []
    names = sorted(ports)

    def run(t):
        items = []
        try:
            barrier.wait(timeout=10)
            for j in range(TOTAL // THREADS):
                name = names[(t + j) % 2]
                s = socket.create_connection(("127.0.0.1", ports[name]), timeout=5)
                ping = b"ping-r%d-t%d-c%d\n" % (round_no, t, j)
                try:
                    s.sendall(ping)
                except (ConnectionResetError, BrokenPipeError):
                    pass
                items.append((name, s, ping))
            outs = wait_outcomes([(s, p) for _, s, p in items], 3.0)
            results[t] = [(n, s, o) for (n, s, _), o in zip(items, outs)]
        except BaseException as e:  # reported by the main thread
            errors.append(repr(e))
            for _, s, _ in items:
                s.close()

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads), "flood threads hung"
    held, counts = {n: [] for n in names}, {}
    for n, s, o in [r for res in results if res for r in res]:
        counts[o] = counts.get(o, 0) + 1
        if o == "echo":
            held[n].append(s)
        else:
            s.close()
    if errors:
        for socks in held.values():
            for s in socks:
                s.close()
        raise AssertionError("flood thread errors: %s" % errors)
    return held, counts


def test_the_global_limit_is_exact_under_a_flood_over_two_listeners(esockd):
    """200 simultaneous clients over two listeners and 2 workers, global
    max_connections 10, the second reserving 3: exactly 10 are relayed,
    the second holds at least its 3 and the first at most 7, the other
    190 are refused as rejected_global_limit; twice in a row."""
    d = esockd.start(workers=2, max_connections=GLOBAL,
                     listeners=[{"name": "a", "backlog": 511},
                                {"name": "b", "backlog": 511,
                                 "reserved_connections": RESERVED}])
    for round_no in (1, 2):
        base = d.stats()
        held, counts = flood_two(d.ports, round_no)
        try:
            n = {k: len(v) for k, v in held.items()}
            assert n["a"] + n["b"] == GLOBAL, (n, counts)
            assert n["b"] >= RESERVED and n["a"] <= GLOBAL - RESERVED, n
            assert counts.get("eof", 0) + counts.get("reset", 0) == TOTAL - GLOBAL, counts

            def settled():
                st = d.stats()
                gone = sum(st[k]["rejected_global_limit"] - base[k]["rejected_global_limit"]
                           for k in ("a", "b"))
                return st if gone >= TOTAL - GLOBAL else None
            st = wait_until(settled, 5, message="the refusals to be counted")
            for k in ("a", "b"):
                assert st[k]["connections"] == n[k], (k, st[k], n)
                assert st[k]["accepted"] - base[k]["accepted"] == n[k], (k, st[k])
                assert st[k]["rejected_limit"] == base[k]["rejected_limit"], (k, st[k])
            assert sum(st[k]["rejected_global_limit"] - base[k]["rejected_global_limit"]
                       for k in ("a", "b")) == TOTAL - GLOBAL, st
            g = stats_json(d)["global"]
            assert g == {"max_connections": GLOBAL, "connections": GLOBAL,
                         "reserved": RESERVED, "committed": GLOBAL}, g
            assert refused(d, "a", b"a, one too many\n")
            assert refused(d, "b", b"b, one too many\n")
        finally:
            for socks in held.values():
                for s in socks:
                    s.close()
        wait_until(lambda: stats_json(d)["global"]["connections"] == 0, 10,
                   message="every connection to close")


def test_a_reload_changes_the_global_limit_and_a_bad_one_changes_nothing(esockd):
    """Global 2: a third client is refused; reloaded to 3 it is served.
    A reload whose reservations (2 + 2) exceed its limit (3) is refused
    with FILE:LINE of the limit, and the running limit stays 3."""
    d = esockd.start(workers=2, max_connections=2,
                     listeners=[{"name": "one"}, {"name": "two"}])
    held = hold(d, "one", 1, b"one") + hold(d, "two", 1, b"two")
    try:
        assert refused(d, "one", b"one, third\n")
        d.rewrite(top={"max_connections": 3})
        assert d.reload() == (True, 2)
        assert stats_json(d)["global"]["max_connections"] == 3
        held += hold(d, "one", 1, b"one, after")
        assert refused(d, "two", b"two, fourth\n")

        listeners = [dict(l, reserved_connections=2) for l in d.listeners]
        d.rewrite(listeners=listeners)
        ok, errors = d.reload()
        assert not ok, errors
        line = next(i for i, l in enumerate(d.conf_path.read_text().splitlines(), 1)
                    if l.startswith("max_connections"))
        assert any(re.search(r"%s:%d: max_connections 3 at top level is below the 4 "
                             r"connections the listeners reserve \(one 2, two 2\); raise it "
                             r"to at least 4" % (re.escape(str(d.conf_path)), line), e)
                   for e in errors), errors
        g = stats_json(d)["global"]
        assert g["max_connections"] == 3 and g["reserved"] == 0, g
        assert refused(d, "two", b"two, still refused\n")
    finally:
        for s in held:
            s.close()


def test_a_listener_a_reload_drops_reserves_nothing_and_its_connections_count(esockd):
    """Global 3, 'gone' reserving 2 holds 1: 'kept' gets 1.  A reload drops
    'gone' while its connection drains: its reservation is given back, so
    'kept' gets one more, and no more, since the draining connection still
    counts; the draining listener's queue is unknown (its socket closed)."""
    d = esockd.start(workers=2, max_connections=3,
                     listeners=[{"name": "kept"},
                                {"name": "gone", "reserved_connections": 2}])
    held = hold(d, "gone", 1, b"gone")
    try:
        held += hold(d, "kept", 1, b"kept")
        assert refused(d, "kept", b"kept, second\n")

        d.rewrite(listeners=[l for l in d.listeners if l["name"] == "kept"])
        ok, _ = d.reload()
        assert ok
        full = stats_json(d)
        gone = [l for l in full["listeners"] if l["name"] == "gone"][0]
        assert gone["state"] == "draining" and gone["connections"] == 1, gone
        assert gone["reserved_connections"] == 0, gone
        assert gone["accept_queue"] is None and gone["accept_queue_max"] is None, gone
        row = parse_stats_text(ctl_ok(d, "stats"))[1]["gone"]
        assert (row["QUEUE"], row["QUEUE_MAX"], row["RESERVED"]) == ("-", "-", "0"), row
        assert full["global"] == {"max_connections": 3, "connections": 2, "reserved": 0,
                                  "committed": 2}, full["global"]

        held += hold(d, "kept", 1, b"kept, after")
        assert refused(d, "kept", b"kept, third\n")
        assert_echo(held[0], b"gone, still relayed\n")
    finally:
        for s in held:
            s.close()
