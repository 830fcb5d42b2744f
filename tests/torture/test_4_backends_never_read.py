"""Scenario 4: backends that never read.

Scenario 3 the other way: clients send without end (1,000 of them; 100
in the short form), plain and TLS, and the backend accepts them and
reads nothing.  Flow control pushes back to the clients, so each
connection costs the worker a bounded amount: what the backend does not
take waits in a kernel pipe, and a TLS client's record is read and
decrypted only when the last one has gone on.  A side connection on the
same worker keeps its throughput.  Then the backend reads: every
connection's bytes arrive whole and in order, exactly as many as its
client sent, and the counters add up.
"""
import pytest

from stalls import (STALL_REFUSALS, Backend, Pusher, client, client_ctx, make_cert, pss_kib, sanitized,
                    settled, side_mb_per_s)
from torture import record, scale

BOUND_KIB = {"plain": 4.0, "tls": 40.0}
SIDE_FACTOR = 4


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_backends_that_never_read_cost_the_worker_a_bounded_few_kib_each(
        esockd, tmp_path, request, kind):
    n = scale(request, 100, 1000)
    side_bytes = scale(request, 8 << 20, 32 << 20)
    san = sanitized()           # its PSS is the sanitizer's: no bound then
    tls, ctx = {}, None
    if kind == "tls":
        cert, key = make_cert(tmp_path)
        tls, ctx = {"tls_certificate": cert, "tls_key": key}, client_ctx(cert)
    sink = Backend(tmp_path / "sink.sock", "sink")
    pushers = []
    try:
        d = esockd.start(workers=1, max_open_files=4 * n + 1000,
                         listeners=[dict(name="stall", backend=sink.path, **tls),
                                    dict(name="side", **tls)])
        worker = d.worker_pids()[1]
        side = d.ports["side"]
        base_mbs = max(side_mb_per_s(side, ctx, side_bytes) for _ in range(2))

        # One stalled connection first, so that the worker has run every
        # path a stalled connection takes before the baseline.
        pushers.append(Pusher([client(d.ports["stall"], ctx)]))
        settled(pushers[0].total)
        pss0 = pss_kib(worker)
        socks = [client(d.ports["stall"], ctx) for _ in range(n)]
        pushers.append(Pusher(socks))
        stalled_at = settled(pushers[1].total)
        st = d.stats()["stall"]
        assert st["accepted"] - st["closed"] == n + 1 == st["connections"], st
        pss1 = pss_kib(worker)
        per_conn = (pss1 - pss0) / n
        during_mbs = max(side_mb_per_s(side, ctx, side_bytes) for _ in range(2))

        assert san or per_conn <= BOUND_KIB[kind], (
            "%s: %.1f KiB of worker PSS per connection whose backend never reads "
            "(bound %.0f KiB; %d KiB before, %d after %d connections)"
            % (kind, per_conn, BOUND_KIB[kind], pss0, pss1, n))
        assert during_mbs >= base_mbs / SIDE_FACTOR, (
            "the side connection fell from %.0f MB/s to %.0f while %d backends never read"
            % (base_mbs, during_mbs, n))

        # The backend reads at last; the clients stop and shut for writing.
        sink.release()
        for p in pushers:
            p.finish()
        sent = pushers[0].sent + pushers[1].sent
        st = d.wait_stats(lambda st: st["connections"] == 0, name="stall", timeout=30)
        assert not sink.errors and not any(p.errors for p in pushers), (
            sink.errors, [p.errors for p in pushers])
        assert len(sink.conns) == n + 1
        # The backend's connections come in the clients' order (one worker
        # accepts and connects in turn), but match them by size anyway.
        got = sorted(c["received"] for c in sink.conns)
        assert got == sorted(sent), "bytes lost or added on the way to a backend"
        bad = [c["bad"] for c in sink.conns if c["bad"]]
        assert not bad, "%d backend connections got other bytes: %s" % (len(bad), bad[:3])
        assert all(c["eof"] for c in sink.conns)
        assert st["accepted"] == st["closed"] == st["closed_normal"] == n + 1, st
        side_st = d.stats()["side"]
        assert side_st["accepted"] == side_st["closed"] == 4, side_st
        for k in STALL_REFUSALS:
            assert st[k] == 0 and side_st[k] == 0, (k, st, side_st)
    finally:
        for p in pushers:
            for s in p.socks:
                s.close()
        sink.stop()

    record(request, "4 backends that never read (%s)" % kind, connections=n,
           pss_per_connection_kib=round(per_conn, 2),
           bound_kib="none (sanitizer)" if san else BOUND_KIB[kind],
           worker_pss_before_kib=pss0, worker_pss_after_kib=pss1,
           client_bytes_sent_when_stalled=stalled_at,
           side_mb_s_before=round(base_mbs, 1), side_mb_s_during=round(during_mbs, 1),
           bytes_checked_after=sum(sent))
