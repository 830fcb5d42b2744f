"""Bulk transfer: 64 MiB each way, byte-exact."""

import hashlib
import os
import threading
import time

import pytest

from esockd_helpers import connect

TOTAL = 64 << 20
CHUNK = 256 << 10
DEADLINE = 120.0


@pytest.mark.timeout(180)
def test_64_mib_each_way_arrive_intact(esockd):
    """A sender thread streams 64 MiB of random data while the main thread
    reads the 64 MiB echo; SHA-256 digests match and byte counters agree."""
    d = esockd.start(workers=2)
    s = connect(d.port, timeout=30)
    sent_hash = hashlib.sha256()
    errors = []

    def sender():
        try:
            left = TOTAL
            while left:
                chunk = os.urandom(min(CHUNK, left))
                sent_hash.update(chunk)
                s.sendall(chunk)
                left -= len(chunk)
        except BaseException as e:
            errors.append(repr(e))

    t = threading.Thread(target=sender, daemon=True)
    start = time.monotonic()
    recv_hash = hashlib.sha256()
    received = 0
    try:
        t.start()
        while received < TOTAL:
            assert time.monotonic() - start < DEADLINE, (
                "only %d of %d bytes echoed after %.0fs" % (received, TOTAL, DEADLINE))
            assert not errors, "sender failed: %s" % errors
            chunk = s.recv(min(1 << 20, TOTAL - received))
            assert chunk, "EOF after %d of %d bytes" % (received, TOTAL)
            recv_hash.update(chunk)
            received += len(chunk)
        t.join(timeout=30)
        assert not t.is_alive(), "sender still running after all bytes came back"
        assert not errors, errors
    finally:
        s.close()
    elapsed = time.monotonic() - start
    print("64 MiB each way in %.1fs" % elapsed)
    assert recv_hash.hexdigest() == sent_hash.hexdigest(), "echoed data differs from sent data"

    st = d.wait_stats(lambda st: st["bytes_in"] >= TOTAL and st["bytes_out"] >= TOTAL
                      and st["connections"] == 0, timeout=5)
    assert st["bytes_in"] >= TOTAL, st
    assert st["bytes_out"] >= TOTAL, st
    assert st["connections"] == 0, st
