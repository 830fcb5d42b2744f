"""Hostile clients (resets at every stage, half-sent data, vanishing
peers) must not disturb other connections or leave the counts wrong."""

import os
import socket
import struct
import threading
import time

from esockd_helpers import assert_echo, connect, wait_until

LINGER_RST = struct.pack("ii", 1, 0)


def _reset(sock):
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RST)
    sock.close()


def _hostile(port, rounds, stop):
    """Each round: one client resets at once, one resets mid-transfer,
    one sends half a message and shuts down, one floods then resets."""
    for i in range(rounds):
        if stop.is_set():
            return
        try:
            _reset(socket.create_connection(("127.0.0.1", port), timeout=2))
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(os.urandom(200000))
            _reset(s)
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.sendall(b"half a mess")
            s.shutdown(socket.SHUT_RDWR)
            s.close()
            s = socket.create_connection(("127.0.0.1", port), timeout=2)
            s.setblocking(False)
            try:
                for _ in range(64):
                    s.send(b"z" * 65536)
            except BlockingIOError:
                pass
            _reset(s)
        except OSError:
            pass  # a refused or reset attempt is part of the abuse


def test_hostile_clients_do_not_disturb_others_and_counts_stay_exact(esockd):
    d = esockd.start(workers=2)
    steady = connect(d.port)
    stop = threading.Event()
    threads = [threading.Thread(target=_hostile, args=(d.port, 60, stop), daemon=True)
               for _ in range(4)]
    try:
        for t in threads:
            t.start()
        n = 0
        deadline = time.monotonic() + 20
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            payload = os.urandom(4096 + n % 5000)
            assert_echo(steady, payload, timeout=5)   # byte-exact, in order
            n += 1
        assert n >= 10, "the steady connection made only %d round trips" % n
        for t in threads:
            t.join(5)
        assert d.alive()
        assert len(d.worker_pids()) == 2 and d.log().count("started (pid") == 2, \
            "a worker died under hostile clients"
    finally:
        stop.set()
        steady.close()
    st = d.wait_stats(lambda st: st["connections"] == 0, timeout=10)
    assert st["connections"] == 0, st
    assert st["accepted"] == st["closed"], st
    assert st["accepted"] >= 4 * 60 * 4 * 0.9, st   # nearly every abuse was relayed
