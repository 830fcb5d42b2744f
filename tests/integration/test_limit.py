"""max_connections is global across workers and exact."""

import socket
import threading
import time

from esockd_helpers import assert_echo, connect, read_outcome, wait_outcomes

LIMIT = 50
TOTAL = 200
THREADS = 8
ECHO_WAIT = 3.0


def flood(port, round_no):
    """TOTAL simultaneous connects from THREADS threads released by a barrier.
    Each sends a ping and waits for its echo.  Returns (held, outcomes):
    held = the sockets that got their echo (left open), outcomes = counts."""
    barrier = threading.Barrier(THREADS)
    per_thread = TOTAL // THREADS
    results = [None] * THREADS
    errors = []

    def run(t):
        items = []
        presend = {}
        try:
            barrier.wait(timeout=10)
            for j in range(per_thread):
                s = socket.create_connection(("127.0.0.1", port), timeout=5)
                ping = b"ping-r%d-t%d-c%d\n" % (round_no, t, j)
                try:
                    s.sendall(ping)
                except (ConnectionResetError, BrokenPipeError):
                    presend[j] = "reset"
                items.append((s, ping))
            outs = wait_outcomes([(s, p) if j not in presend else (None, p)
                                  for j, (s, p) in enumerate(items)], ECHO_WAIT)
            for j, o in presend.items():
                outs[j] = o
            results[t] = [(s, o) for (s, _), o in zip(items, outs)]
        except BaseException as e:  # reported by the main thread
            errors.append(repr(e))
            for s, _ in items:
                s.close()

    threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert not any(th.is_alive() for th in threads), "flood threads hung"
    all_results = [r for res in results if res for r in res]
    held = [s for s, o in all_results if o == "echo"]
    counts = {}
    for s, o in all_results:
        counts[o] = counts.get(o, 0) + 1
        if o != "echo":
            s.close()
    if errors:
        for s in held:
            s.close()
        raise AssertionError("flood thread errors: %s" % errors)
    return held, counts


def test_max_connections_is_exact_under_a_simultaneous_flood(esockd):
    """200 simultaneous clients, limit 50, 2 workers: exactly 50 are relayed,
    the other 150 are closed without data; counters match; twice in a row."""
    d = esockd.start(workers=2, listeners=[{"name": "limited", "max_connections": LIMIT,
                                            "backlog": 511}])
    for round_no in (1, 2):
        base = d.stats()[d.name]
        held, counts = flood(d.port, round_no)
        try:
            assert counts.get("echo", 0) == LIMIT, (
                "round %d: %d relayed, expected exactly %d; outcomes %s"
                % (round_no, counts.get("echo", 0), LIMIT, counts))
            assert counts.get("eof", 0) + counts.get("reset", 0) == TOTAL - LIMIT, (
                "round %d: outcomes %s (expected %d closed without data)"
                % (round_no, counts, TOTAL - LIMIT))

            st = d.wait_stats(lambda st: st["rejected_limit"] - base["rejected_limit"]
                              >= TOTAL - LIMIT, timeout=5)
            assert st["connections"] == LIMIT, st
            assert len(st["per_worker"]) == 2 and sum(st["per_worker"]) == LIMIT, st
            assert st["max_connections"] == LIMIT, st
            assert st["accepted"] - base["accepted"] == LIMIT, (base, st)
            assert st["rejected_limit"] - base["rejected_limit"] == TOTAL - LIMIT, (base, st)

            # one more client while full: still rejected, never relayed
            with connect(d.port) as extra:
                try:
                    extra.sendall(b"one-too-many\n")
                except (ConnectionResetError, BrokenPipeError):
                    pass
                assert read_outcome(extra, b"one-too-many\n", timeout=ECHO_WAIT) in ("eof", "reset")

            # the held connections still relay
            for s in held[:5]:
                s.setblocking(True)
                assert_echo(s, b"still here\n")
        finally:
            for s in held:
                s.close()

        st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
        assert st["connections"] == 0, st
        assert st["closed"] == st["accepted"], st
        assert st["accepted"] == LIMIT * round_no, st
        assert st["rejected_limit"] == (TOTAL - LIMIT) * round_no + round_no, st
