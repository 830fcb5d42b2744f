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

from stalls import Backend, Pusher, StallRig, pss_kib, settled


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_backends_that_never_read_cost_the_worker_a_bounded_few_kib_each(
        esockd, tmp_path, request, kind):
    sink = Backend(tmp_path / "sink.sock", "sink")
    pushers = []
    try:
        rig = StallRig(esockd, tmp_path, request, kind, sink)
        n, d = rig.n, rig.d

        # One stalled connection first, so that the worker has run every
        # path a stalled connection takes before the baseline.
        pushers.append(Pusher([rig.client()]))
        settled(pushers[0].total)
        pss0 = pss_kib(rig.worker)
        socks = [rig.client() for _ in range(n)]
        pushers.append(Pusher(socks))
        stalled_at = settled(pushers[1].total)
        pss1, per_conn, during_mbs = rig.check_stalled(
            pss0, "connection whose backend never reads")

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
        rig.check_books(st)
    finally:
        for p in pushers:
            for s in p.socks:
                s.close()
        sink.stop()

    rig.record(request, "4 backends that never read (%s)" % kind, pss0, pss1, per_conn,
               during_mbs, client_bytes_sent_when_stalled=stalled_at,
               bytes_checked_after=sum(sent))
