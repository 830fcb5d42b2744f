"""allow and deny: address blocks decide which clients a listener serves.

Sources are picked from 127.0.0.0/8 by binding the client socket, so
every test stays on loopback."""
import subprocess

from ctl_helpers import listener_json
from esockd_helpers import esockd_argv, admitted, assert_echo, connect, wait_until


def served(port, source, host="127.0.0.1"):
    """True when a client from source gets its echo, False when it is
    closed without one."""
    s, ok = admitted(port, b"ping\n", host=host, source=source)
    if s is not None:
        s.close()
    return ok


def test_deny_refuses_its_block_and_counts_it(esockd):
    d = esockd.start(listeners=[{"name": "r", "deny": ["127.0.0.2", "127.0.9.0/24"]}])
    assert served(d.port, "127.0.0.1")
    assert not served(d.port, "127.0.0.2")
    assert not served(d.port, "127.0.9.200")
    assert served(d.port, "127.0.10.1")
    st = d.wait_stats(lambda st: st["rejected_rule"] == 2 and st["connections"] == 0)
    # Refused before admission: never accepted, never a slot.
    assert (st["rejected_rule"], st["accepted"], st["closed"]) == (2, 2, 2), st
    assert st["rejected_limit"] == 0 and st["backend_failures"] == 0, st
    assert listener_json(d)["refused"]["rule"] == 2
    wait_until(lambda: "listener 'r': 127.0.0.2:" in d.log() and
               "refused by its allow/deny rules" in d.log(), 5,
               message="the refusal's log line naming the client")


def test_allow_serves_only_its_blocks_and_deny_wins(esockd):
    d = esockd.start(listeners=[{"name": "r", "allow": ["127.0.0.0/16"],
                                 "deny": "127.0.0.5"}])
    assert served(d.port, "127.0.0.1")
    assert served(d.port, "127.0.200.6")
    assert not served(d.port, "127.1.0.1")      # outside the allowed block
    assert not served(d.port, "127.0.0.5")      # allowed, but denied
    st = d.wait_stats(lambda st: st["rejected_rule"] == 2)
    assert st["rejected_rule"] == 2 and st["accepted"] == 2, st


def test_ipv6_clients_match_ipv6_blocks_only(esockd):
    d = esockd.start(listeners=[{"name": "v4only", "host": "::1", "allow": "127.0.0.0/8"},
                                {"name": "v6", "host": "::1", "allow": "::1"}])
    assert not served(d.ports["v4only"], "::1", host="::1")
    assert served(d.ports["v6"], "::1", host="::1")
    assert listener_json(d, "v4only")["refused"]["rule"] == 1
    assert listener_json(d, "v6")["refused"]["rule"] == 0


def test_a_refused_client_takes_no_slot_from_the_limit(esockd):
    """At max_connections = 1 with the one slot held, a denied client is
    a rule refusal, not a limit refusal; once the slot frees, an allowed
    client gets in."""
    d = esockd.start(listeners=[{"name": "r", "max_connections": 1, "deny": "127.0.0.7"}])
    held = connect(d.port)
    try:
        assert_echo(held, b"holding\n")
        assert not served(d.port, "127.0.0.7")
        assert not served(d.port, "127.0.0.8")
        st = d.wait_stats(lambda st: st["rejected_rule"] == 1 and st["rejected_limit"] == 1)
        assert (st["rejected_rule"], st["rejected_limit"], st["connections"]) == (1, 1, 1), st
    finally:
        held.close()
    d.wait_stats(lambda st: st["connections"] == 0)
    assert served(d.port, "127.0.0.8")


def test_a_reload_changes_the_rules_for_new_clients_only(esockd):
    d = esockd.start(listeners=[{"name": "r"}])
    old = connect(d.port, source="127.0.0.3")
    try:
        assert_echo(old, b"before\n")
        lst = dict(d.listeners[0])
        lst["deny"] = "127.0.0.3"
        d.rewrite(listeners=[lst])
        ok, gen = d.reload()
        assert ok and gen == 2, gen
        assert not served(d.port, "127.0.0.3")
        assert served(d.port, "127.0.0.4")
        assert_echo(old, b"after, still served\n")
    finally:
        old.close()
    st = d.wait_stats(lambda st: st["rejected_rule"] == 1 and st["connections"] == 0)
    assert st["accepted"] == st["closed"] == 2, st


def test_the_first_client_after_each_reload_meets_the_new_rules(esockd):
    """'reloaded' is logged while the old workers may still be reading
    their SIGTERM: none of them may take a client after it.  Eight
    reloads toggle a deny, and each time the very next client from that
    address gets the new answer (an old worker that accepted it would
    give the old one)."""
    d = esockd.start(workers=2, listeners=[{"name": "r"}])
    held = connect(d.port, source="127.0.0.5")    # an old worker stays busy
    try:
        assert_echo(held, b"held\n")
        refused = 0
        for i in range(8):
            lst = dict(d.listeners[0])
            deny = i % 2 == 0
            if deny:
                lst["deny"] = "127.0.0.3"
            else:
                lst.pop("deny", None)
            d.rewrite(listeners=[lst])
            ok, gen = d.reload()
            assert ok and gen == i + 2, gen
            assert served(d.port, "127.0.0.3") is not deny, "reload %d (deny=%s)" % (i + 1, deny)
            refused += deny
        assert_echo(held, b"still served\n")
    finally:
        held.close()
    st = d.wait_stats(lambda st: st["connections"] == 0)
    assert st["rejected_rule"] == refused == 4, st


def test_bad_blocks_are_refused_with_file_and_line(tmp_path):
    conf = tmp_path / "rules.conf"
    conf.write_text('listeners = ( { name = "a"; bind = "127.0.0.1:1";\n'
                    '  allow = ( "10.0.0.0/8",\n'
                    '            "10.1.2.3/8" );\n'
                    '  deny = 7;\n'
                    '  backend = { socket = "/x.sock"; }; } );\n')
    r = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert ('%s:3: \'allow\' entry "10.1.2.3/8" is not an address block: the address '
            'has bits set past the prefix' % conf) in r.stderr, r.stderr
    assert "%s:4: 'deny' must be an address block or a list of them" % conf in r.stderr, r.stderr
