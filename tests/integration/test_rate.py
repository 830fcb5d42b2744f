"""rate_limit and rate_burst: new connections per second, across workers."""
import threading
import time

from ctl_helpers import listener_json
from esockd_helpers import connect, read_outcome, wait_until

N = 40


def flood(port, n=N, threads=4):
    """n connections from several threads, each sending and waiting for
    its echo or its close.  Returns (echoed, closed, seconds taken)."""
    outcomes = []
    lock = threading.Lock()

    def run(k):
        for _ in range(k):
            s = connect(port)
            try:
                s.sendall(b"rate?\n")
                got = read_outcome(s, b"rate?\n", timeout=5)
            finally:
                s.close()
            with lock:
                outcomes.append(got)

    t0 = time.monotonic()
    ts = [threading.Thread(target=run, args=(n // threads,)) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    took = time.monotonic() - t0
    assert len(outcomes) == n, outcomes
    echoed = outcomes.count("echo")
    return echoed, n - echoed, took


def test_the_rate_holds_across_workers_and_every_refusal_is_counted(esockd):
    """2/s with a burst of 4, four workers: at most 5 at once plus 2 per
    second elapsed.  Four workers each with a rate of their own would let
    20 through at once."""
    d = esockd.start(workers=4, listeners=[{"name": "r", "rate_limit": 2, "rate_burst": 4}])
    echoed, closed, took = flood(d.port)
    assert 5 <= echoed <= 5 + int(2 * took) + 1, (echoed, took)
    st = d.wait_stats(lambda st: st["rejected_rate"] == closed and st["connections"] == 0)
    assert st["rejected_rate"] == closed and st["accepted"] == echoed, (st, echoed)
    assert st["rejected_limit"] == 0 and st["backend_failures"] == 0, st
    assert listener_json(d)["refused"]["rate"] == closed
    assert "listener 'r': over rate_limit 2/s (rate_burst 4); connection refused" in d.log()
    # The budget refills: half a second later one more gets in.
    time.sleep(0.6)
    s = connect(d.port)
    try:
        s.sendall(b"later\n")
        assert read_outcome(s, b"later\n") == "echo"
    finally:
        s.close()


def test_a_reload_changes_the_rate(esockd):
    d = esockd.start(listeners=[{"name": "r", "rate_limit": 1, "rate_burst": 0}])
    echoed, closed, _ = flood(d.port, n=8, threads=2)
    assert echoed <= 3 and closed >= 5, (echoed, closed)
    lst = dict(d.listeners[0])
    lst["rate_limit"] = 0
    d.rewrite(listeners=[lst])
    ok, gen = d.reload()
    assert ok and gen == 2, gen
    echoed, closed, _ = flood(d.port, n=8, threads=2)
    assert (echoed, closed) == (8, 0)
    wait_until(lambda: listener_json(d)["connections"] == 0, 5, message="all closed")
