"""New connections spread over the workers.

Every worker watches the one listening socket and the kernel wakes them
all, but the one already running used to win nearly every race (100
clients split 93/7 over two workers, 99/1/0/0 over four): one crash then
took almost every connection.  A burst of 200 held connections, from one
address and from 16, must leave no worker with more than 1.5 times its
even share.  The test counts shares, not time: every connection is
admitted and held before the per-worker counts are read."""
import socket

import pytest

from esockd_helpers import wait_outcomes

N = 200


def burst(port, sources):
    """Open N connections as fast as one thread can, then prove each is
    relayed (its tag echoed).  Returns the open sockets."""
    socks = []
    try:
        for i in range(N):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks.append(s)
            s.bind((sources[i % len(sources)], 0))
            s.settimeout(10)
            s.connect(("127.0.0.1", port))
        tags = [b"c%03d\n" % i for i in range(N)]
        for s, tag in zip(socks, tags):
            s.sendall(tag)
        outcomes = wait_outcomes(list(zip(socks, tags)), timeout=20)
        assert outcomes == ["echo"] * N, [o for o in outcomes if o != "echo"][:5]
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise


@pytest.mark.parametrize("nsources", [1, 16], ids=["one_source", "16_sources"])
@pytest.mark.parametrize("workers", [2, 4])
def test_a_burst_of_held_connections_spreads_over_the_workers(esockd, workers, nsources):
    d = esockd.start(workers=workers, listeners=[{"name": "spread"}])
    sources = ["127.0.0.%d" % (i + 1) for i in range(nsources)]
    socks = burst(d.port, sources)
    try:
        st = d.wait_stats(lambda st: st["connections"] == N)
        shares = st["per_worker"]
    finally:
        for s in socks:
            s.close()
    assert st["connections"] == N and sum(shares) == N, st
    assert len(shares) == workers, st
    even = N / workers
    assert max(shares) <= 1.5 * even, (
        "per-worker connections %s: the busiest holds more than 1.5 x %d" % (shares, even))
