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
from stalls import (STALL_REFUSALS, Backend, client, client_ctx, expected, make_cert, pss_kib, sanitized,
                    settled, side_mb_per_s)
from torture import record, scale

# KiB of worker PSS per stalled connection, at most.
BOUND_KIB = {"plain": 4.0, "tls": 40.0}
SIDE_FACTOR = 4         # the side connection keeps 1/4 of its MB/s at least
READ_ON = 256 * 1024    # what each stalled client reads once it reads again


@pytest.mark.timeout(240)
@pytest.mark.parametrize("kind", ["plain", "tls"])
def test_clients_that_never_read_cost_the_worker_a_bounded_few_kib_each(
        esockd, tmp_path, request, kind):
    n = scale(request, 100, 1000)
    side_bytes = scale(request, 8 << 20, 32 << 20)
    san = sanitized()           # its PSS is the sanitizer's: no bound then
    tls, ctx = {}, None
    if kind == "tls":
        cert, key = make_cert(tmp_path)
        tls, ctx = {"tls_certificate": cert, "tls_key": key}, client_ctx(cert)
    flood = Backend(tmp_path / "flood.sock", "flood")
    clients = []
    try:
        d = esockd.start(workers=1, max_open_files=4 * n + 1000,
                         listeners=[dict(name="stall", backend=flood.path, **tls),
                                    dict(name="side", **tls)])
        worker = d.worker_pids()[1]
        side = d.ports["side"]
        base_mbs = max(side_mb_per_s(side, ctx, side_bytes) for _ in range(2))

        # One stalled connection first, so that the worker has run every
        # path a stalled connection takes before the baseline.
        clients.append(client(d.ports["stall"], ctx))
        settled(flood.total_sent)
        pss0 = pss_kib(worker)
        for _ in range(n):
            clients.append(client(d.ports["stall"], ctx))
        stalled_at = settled(flood.total_sent)
        st = d.stats()["stall"]
        assert st["accepted"] - st["closed"] == n + 1 == st["connections"], st
        pss1 = pss_kib(worker)
        per_conn = (pss1 - pss0) / n
        during_mbs = max(side_mb_per_s(side, ctx, side_bytes) for _ in range(2))
        assert san or pss_kib(worker) <= pss1 + 1024, (
            "the worker grew while the side connection ran")

        assert san or per_conn <= BOUND_KIB[kind], (
            "%s: %.1f KiB of worker PSS per client that never reads (bound %.0f KiB; "
            "%d KiB before, %d after %d connections)"
            % (kind, per_conn, BOUND_KIB[kind], pss0, pss1, n))
        assert during_mbs >= base_mbs / SIDE_FACTOR, (
            "the side connection fell from %.0f MB/s to %.0f while %d clients never read"
            % (base_mbs, during_mbs, n))

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
        side_st = d.stats()["side"]
        assert side_st["accepted"] == side_st["closed"] == 4, side_st
        for k in STALL_REFUSALS:
            assert st[k] == 0 and side_st[k] == 0, (k, st, side_st)
        assert not flood.errors, flood.errors
    finally:
        for c in clients:
            c.close()
        flood.stop()

    record(request, "3 clients that never read (%s)" % kind, connections=n,
           pss_per_connection_kib=round(per_conn, 2),
           bound_kib="none (sanitizer)" if san else BOUND_KIB[kind],
           worker_pss_before_kib=pss0, worker_pss_after_kib=pss1,
           backend_bytes_sent_when_stalled=stalled_at,
           side_mb_s_before=round(base_mbs, 1), side_mb_s_during=round(during_mbs, 1),
           bytes_checked_after=(n + 1) * READ_ON)
