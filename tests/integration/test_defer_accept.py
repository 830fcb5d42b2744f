"""defer_accept: with TCP_DEFER_ACCEPT the kernel keeps a client that has
sent nothing, so no worker accepts it and no backend hears of it; its first
bytes bring it in and they are relayed as usual.  Without it (the
default), a silent client is accepted and gets its backend at once.  A
reload applies a new value to the kept listening socket."""

import time

from esockd_helpers import assert_echo, connect, record_until_eof, wait_until


def counting_echo(conn, record):
    """Echo until EOF; record['received'] holds what came."""
    record_until_eof(conn, record, echo=True)


def listener(backend, defer):
    return {"name": "deferred", "backend": {"socket": backend, "connect_timeout": 1000},
            "defer_accept": defer}


def test_silent_client_is_not_accepted_until_it_speaks(esockd, tmp_path):
    be = esockd.py_backend(counting_echo)
    d = esockd.start(workers=2, listeners=[listener(be.path, 5)])
    with connect(d.port) as s:
        time.sleep(0.8)
        assert be.sessions == [], "a backend connection before the client spoke"
        st = d.stats()["deferred"]
        assert st["accepted"] == 0, st
        assert_echo(s, b"first bytes\n", timeout=3)
    wait_until(lambda: len(be.sessions) == 1, 3, message="one backend connection")
    st = d.wait_stats(lambda st: st["closed"] == 1, timeout=5)
    assert st["accepted"] == 1 and st["connections"] == 0, st
    assert bytes(be.sessions[0]["received"]) == b"first bytes\n"


def test_without_defer_accept_a_silent_client_gets_its_backend_at_once(esockd, tmp_path):
    be = esockd.py_backend(counting_echo)
    d = esockd.start(workers=2, listeners=[listener(be.path, 0)])
    with connect(d.port) as s:
        wait_until(lambda: len(be.sessions) == 1, 3,
                   message="the backend connection of a client that sent nothing")
        assert d.stats()["deferred"]["accepted"] == 1
        assert_echo(s, b"late bytes\n", timeout=3)


def test_reload_turns_defer_accept_on_for_the_kept_socket(esockd, tmp_path):
    be = esockd.py_backend(counting_echo)
    d = esockd.start(workers=2, listeners=[listener(be.path, 0)])
    bind = "127.0.0.1:%d" % d.port
    with connect(d.port) as s:
        assert_echo(s, b"before\n", timeout=3)
    wait_until(lambda: len(be.sessions) == 1, 3)
    d.rewrite(listeners=[dict(listener(be.path, 5), bind=bind)])
    ok, gen = d.reload()
    assert ok, gen
    assert d.port == int(bind.rsplit(":", 1)[1])
    with connect(d.port) as s:
        time.sleep(0.8)
        assert len(be.sessions) == 1, "accepted before speaking after the reload"
        assert_echo(s, b"after\n", timeout=3)
    wait_until(lambda: len(be.sessions) == 2, 3)
