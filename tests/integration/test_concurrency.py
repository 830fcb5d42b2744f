"""Many simultaneous connections, driven by one selector (no threads)."""

import errno
import selectors
import socket
import time

N = 1000


def open_many(port, n, timeout=15.0):
    """n non-blocking connects to 127.0.0.1:port; returns the sockets once all
    are connected (raises AssertionError otherwise)."""
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            socks.append(s)
            rc = s.connect_ex(("127.0.0.1", port))
            assert rc in (0, errno.EINPROGRESS), "connect: %s" % errno.errorcode.get(rc, rc)
            sel.register(s, selectors.EVENT_WRITE)
        pending = len(socks)
        deadline = time.monotonic() + timeout
        while pending:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "%d of %d connects still pending" % (pending, n)
            for key, _ in sel.select(min(remaining, 0.5)):
                err = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                assert err == 0, "connect failed: %s" % errno.errorcode.get(err, err)
                sel.unregister(key.fileobj)
                pending -= 1
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def test_thousand_concurrent_connections_each_get_their_own_echo(esockd):
    """1,000 connections open at once; each unique message returns on its own
    connection; the daemon reports all 1,000 open, then 0 after they close."""
    d = esockd.start(workers=2, max_open_files=8192,
                     listeners=[{"name": "echo", "backlog": 2048, "max_connections": 10000}])
    socks = open_many(d.port, N)
    try:
        expected = {}
        sel = selectors.DefaultSelector()
        outbox = {}
        for i, s in enumerate(socks):
            msg = (b"conn-%04d:" % i) + bytes([65 + i % 26]) * (i % 200) + b"\n"
            expected[s] = msg
            outbox[s] = memoryview(msg)
        received = {s: bytearray() for s in socks}
        for s in socks:
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)

        done = 0
        deadline = time.monotonic() + 30
        while done < N:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "only %d of %d connections got their full echo" % (done, N)
            for key, events in sel.select(min(remaining, 0.5)):
                s = key.fileobj
                if events & selectors.EVENT_WRITE and outbox[s]:
                    n = s.send(outbox[s])
                    outbox[s] = outbox[s][n:]
                    if not outbox[s]:
                        sel.modify(s, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    chunk = s.recv(4096)
                    assert chunk, "connection %d: EOF before its echo" % socks.index(s)
                    received[s] += chunk
                    if len(received[s]) >= len(expected[s]):
                        assert bytes(received[s]) == expected[s], (
                            "connection %d got %r, expected %r"
                            % (socks.index(s), bytes(received[s][:40]), expected[s][:40]))
                        sel.unregister(s)
                        done += 1
        sel.close()

        st = d.stats()[d.name]
        assert st["connections"] == N, st
        assert sum(st["per_worker"]) == N, st
        assert st["accepted"] == N, st
    finally:
        for s in socks:
            s.close()

    total = sum(len(m) for m in expected.values())
    st = d.wait_stats(lambda st: st["connections"] == 0 and st["closed"] == N
                      and st["bytes_in"] == st["bytes_out"] == total, timeout=10)
    assert st["connections"] == 0, st
    assert st["accepted"] == N, st
    assert st["closed"] == N, st
    assert st["rejected_limit"] == 0, st
    assert st["bytes_in"] == st["bytes_out"] == total, st
