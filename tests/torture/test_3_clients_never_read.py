"""Scenario 3: clients that never read.

Connections whose client stops reading while the backend sends without
end (1,000 of them; 100 in the short form), plain and TLS.  Flow control
pushes back to the backend, so each costs the worker a bounded amount:
about 1 KiB of PSS for a plain one (its bytes wait in kernel pipes), and
under 40 KiB for a TLS one (one encrypted record in OpenSSL's write
buffer; its plaintext waits in a pipe).  Meanwhile a side connection on
the same worker keeps its throughput.  Afterwards every stalled client
reads on and gets the backend's stream byte for byte, and the counters
add up: every connection accepted once and closed once, none refused.
"""
import pytest

from esockd_helpers import recv_exact
from stalls import Backend, StallRig, expected, pss_kib, settled

READ_ON = 256 * 1024    # what each stalled client reads once it reads again


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_clients_that_never_read_cost_the_worker_a_bounded_few_kib_each(
        esockd, tmp_path, request, kind):
    flood = Backend(tmp_path / "flood.sock", "flood")
    clients = []
    try:
        rig = StallRig(esockd, tmp_path, request, kind, flood)
        n, d = rig.n, rig.d

        # One stalled connection first, so that the worker has run every
        # path a stalled connection takes before the baseline.
        clients.append(rig.client())
        settled(flood.total_sent)
        pss0 = pss_kib(rig.worker)
        for _ in range(n):
            clients.append(rig.client())
        stalled_at = settled(flood.total_sent)
        pss1, per_conn, during_mbs = rig.check_stalled(pss0, "client that never reads")
        assert rig.san or pss_kib(rig.worker) <= pss1 + 1024, (
            "the worker grew while the side connection ran")

        # They read again: the backend's stream, byte for byte.
        want = expected(0, READ_ON)
        for i, c in enumerate(clients):
            got = recv_exact(c, READ_ON, timeout=30)
            assert got == want, "stalled client %d: its bytes differ from the backend's" % i
        for c in clients:
            c.close()
        clients = []
        st = d.wait_stats(lambda st: st["connections"] == 0, name="stall", timeout=20)
        assert st["connections"] == 0 and st["accepted"] == st["closed"] == n + 1, st
        rig.check_books(st)
        assert not flood.errors, flood.errors
    finally:
        for c in clients:
            c.close()
        flood.stop()

    rig.record(request, "3 clients that never read (%s)" % kind, pss0, pss1, per_conn,
               during_mbs, backend_bytes_sent_when_stalled=stalled_at,
               bytes_checked_after=(n + 1) * READ_ON)
