"""A reload is a plan (src/reload.c): a listener whose bind is unchanged
is KEPT (socket, queue and place in shared memory), under a new name too;
a new bind is bound; a dropped listener drains in the old workers and
stays in the reports until it has.  These are the bugs that planning by
name, not by bind, had."""
import re

from ctl_helpers import ctl_ok, fetch, listener_json, parse_exposition, stats_json
from esockd_helpers import admitted, assert_echo, connect, free_port, wait_until


def listener(esockd, name, port, **extra):
    lst = {"name": name, "bind": "127.0.0.1:%d" % port,
           "backend": {"socket": esockd.echo_handler(), "connect_timeout": 1000}}
    lst.update(extra)
    return lst


def test_a_renamed_listener_keeps_its_limit_and_its_counts(esockd):
    """max_connections = 5, five held; renamed on the same bind, the five
    still count: a sixth client is refused, and the stats under the new
    name show the five."""
    port = free_port()
    d = esockd.start(listeners=[listener(esockd, "old", port, max_connections=5)])
    held = [connect(port) for _ in range(5)]
    try:
        for i, s in enumerate(held):
            assert_echo(s, b"held %d\n" % i)
        d.rewrite(listeners=[listener(esockd, "new", port, max_connections=5)])
        ok, gen = d.reload()
        assert ok and gen == 2, gen
        s, served = admitted(port, b"sixth\n")
        assert not served, "a sixth client was served past max_connections = 5"
        st = listener_json(d, "new")
        assert st["connections"] == 5 and st["state"] == "accepting", st
        assert st["refused"]["limit"] == 1, st
        assert [l["name"] for l in stats_json(d)["listeners"]] == ["new"]
        for s in held:
            assert_echo(s, b"still relayed\n")
    finally:
        for s in held:
            s.close()
    st = d.wait_stats(lambda st: st["connections"] == 0, name="new")
    assert st["accepted"] == st["closed"] == 5, st


def test_a_removed_listener_is_reported_draining_until_it_has(esockd):
    port_a, port_b = free_port(), free_port()
    d = esockd.start(listeners=[listener(esockd, "a", port_a),
                                listener(esockd, "b", port_b)],
                     metrics="127.0.0.1:%d" % free_port())
    held = connect(port_b)
    try:
        assert_echo(held, b"on b\n")
        d.rewrite(listeners=[listener(esockd, "a", port_a)])
        ok, gen = d.reload()
        assert ok and gen == 2, gen
        st = listener_json(d, "b")
        assert st["state"] == "draining" and st["connections"] == 1, st
        text = ctl_ok(d, "stats")
        assert re.search(r"^b\s+127\.0\.0\.1:%d\s+draining\s+1\s" % port_b, text, re.M), text
        status, _, body = fetch("http://%s/metrics" % d.top["metrics"])
        samples = parse_exposition(body.decode())[0]
        assert samples[("esockd_listener_draining", frozenset({("listener", "b")}))] == 1
        assert samples[("esockd_listener_draining", frozenset({("listener", "a")}))] == 0
        assert samples[("esockd_connections", frozenset({("listener", "b")}))] == 1
        assert_echo(held, b"still relayed after the reload\n")
    finally:
        held.close()
    wait_until(lambda: all(l["name"] != "b" for l in stats_json(d)["listeners"]), 10,
               message="b to leave the stats once drained")


def test_a_listener_removed_while_suspended_comes_back_accepting(esockd):
    port_a, port_b = free_port(), free_port()
    a, b = listener(esockd, "a", port_a), listener(esockd, "b", port_b)
    d = esockd.start(listeners=[a, b])
    ctl_ok(d, "suspend", "b")
    assert listener_json(d, "b")["state"] == "suspended"
    d.rewrite(listeners=[a])
    ok, _ = d.reload()
    assert ok
    wait_until(lambda: all(l["name"] != "b" for l in stats_json(d)["listeners"]), 10,
               message="b gone")
    d.rewrite(listeners=[a, b])
    ok, _ = d.reload()
    assert ok
    assert listener_json(d, "b")["state"] == "accepting"
    s, served = admitted(port_b, b"back\n")
    assert served, "b came back suspended: its client was not served"
    s.close()


def test_a_failed_reload_says_when_it_was_tried(esockd):
    d = esockd.start(listeners=[{"name": "a"}])
    before = stats_json(d)
    assert before["last_reload"] == 0
    assert "last: never" in ctl_ok(d, "stats")
    d.rewrite(text=d.conf_path.read_text() + "\nwrokers = 3;\n")
    ok, errors = d.reload()
    assert not ok and errors
    after = stats_json(d)
    assert after["last_reload"] >= before["started"] and not after["last_reload_ok"], after
    assert after["reload_failures"] == 1, after
    m = re.search(r"^reloads: 0 ok, 1 failed; last: (\S+) failed", ctl_ok(d, "stats"), re.M)
    assert m and m.group(1) != "never", ctl_ok(d, "stats")
