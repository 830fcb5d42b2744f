"""Scenario 7: slow and silent clients.

An attacker in a process of its own holds 2,000 silent connections (200
in the short form) to a TLS listener and 200 more (20) that trickle a
real ClientHello a byte a second, and opens each again a second after
esockd closes it.  The handshake budget (max_handshakes, here as many as
the silent ones) is full, so tricklers and real clients get in by
pushing out connections stuck over a second in their handshake.  Real
clients, one every 50 ms, are served as fast as before the attack
(a generous factor of their baseline latency), none is refused, and
afterwards every connection the attacker and the real clients opened is
counted once, accepted or refused, and every accepted one closed.
"""
import multiprocessing
import random
import selectors
import socket
import ssl
import statistics
import time

import pytest

from esockd_helpers import pid_alive, recv_exact
from stalls import REFUSALS, client_ctx, make_cert
from torture import record, scale

REAL_EVERY = 0.05       # s between real clients during the attack
P50_FACTOR, P90_FACTOR = 3, 5
SLACK = 0.05            # s added to the baselines: a parked client retries every 10 ms, and the machine is shared
WORST = 1.0             # s: no real client waits this long


def client_hello(cert):
    """The bytes of a real TLS ClientHello, as ssl would send them."""
    bio_in, bio_out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = client_ctx(cert).wrap_bio(bio_in, bio_out, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = bio_out.read()
    assert hello[:1] == b"\x16" and len(hello) > 100, hello[:16]
    return hello


def attacker(port, n_silent, n_trickle, hello, conn):
    """The attack, in its own process: silent and trickling connections,
    each opened again a second after it is closed.  Reports counts."""
    sel = selectors.DefaultSelector()
    counts = {"opened": 0, "cut": 0, "failed": 0, "trickled": 0}
    again = []          # (when, kind)
    tricklers = {}

    def open_one(kind):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(2.0)
        try:
            s.connect(("127.0.0.1", port))
        except OSError:
            s.close()
            counts["failed"] += 1
            again.append((time.monotonic() + 1.0, kind))
            return
        counts["opened"] += 1
        s.setblocking(False)
        info = {"kind": kind, "pos": 0, "next": time.monotonic() + random.random()}
        sel.register(s, selectors.EVENT_READ, info)
        if kind == "trickle":
            tricklers[s] = info

    def cut(s, kind):
        sel.unregister(s)
        tricklers.pop(s, None)
        s.close()
        counts["cut"] += 1
        again.append((time.monotonic() + 1.0, kind))

    for i in range(n_silent + n_trickle):
        open_one("silent" if i < n_silent else "trickle")
    conn.send(dict(counts))
    while not conn.poll():
        for key, _ in sel.select(0.05):
            try:
                data = key.fileobj.recv(4096)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:    # esockd says nothing to them but goodbye
                cut(key.fileobj, key.data["kind"])
        now = time.monotonic()
        for s, info in list(tricklers.items()):
            if info["next"] <= now and info["pos"] < len(hello):
                try:
                    s.send(hello[info["pos"]:info["pos"] + 1])
                except OSError:
                    cut(s, "trickle")
                    continue
                info["pos"] += 1
                info["next"] += 1.0
                counts["trickled"] += 1
        due = [a for a in again if a[0] <= now]
        again[:] = [a for a in again if a[0] > now]
        for _, kind in due:
            open_one(kind)
    for key in list(sel.get_map().values()):
        key.fileobj.close()
    conn.send(counts)


def real_client(port, ctx, i):
    """A real client: TLS handshake and one echo.  Seconds it took, or
    None when esockd closed it."""
    tag = b"real client %d\n" % i
    t0 = time.monotonic()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost")
    except (ssl.SSLError, OSError):
        raw.close()
        return None
    try:
        s.sendall(tag)
        if recv_exact(s, len(tag), timeout=5) != tag:
            raise AssertionError("real client %d: wrong echo" % i)
    except (OSError, ssl.SSLError):
        return None
    finally:
        s.close()
    return time.monotonic() - t0


def pct(xs, p):
    """The p-quantile of xs (nearest rank)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


@pytest.mark.timeout(240)
def test_silent_and_trickling_clients_do_not_slow_real_ones(esockd, tmp_path, request):
    n_silent = scale(request, 200, 2000)
    n_trickle = scale(request, 20, 200)
    attack_s = scale(request, 5.0, 30.0)
    cert, key = make_cert(tmp_path)
    ctx = client_ctx(cert)
    d = esockd.start(workers=2, max_open_files=4 * (n_silent + n_trickle) + 1000,
                     listeners=[{"name": "tls", "tls_certificate": cert, "tls_key": key,
                                 "backlog": 4096, "max_handshakes": n_silent}])
    workers = d.worker_pids()
    real = 0

    base = []
    for i in range(20):
        base.append(real_client(d.port, ctx, i))
        real += 1
    assert None not in base, "a real client was refused before the attack"

    mp = multiprocessing.get_context("fork")
    ours, theirs = mp.Pipe()
    proc = mp.Process(target=attacker, args=(d.port, n_silent, n_trickle,
                                             client_hello(cert), theirs), daemon=True)
    proc.start()
    try:
        assert ours.poll(60), "the attacker did not open its connections"
        opened_at_start = ours.recv()["opened"]
        time.sleep(1.2)         # the attack's connections now over a second old
        st = d.stats()["tls"]
        attack_open = st["connections"]
        assert attack_open >= n_silent * 0.9, "the attack holds only %d connections" % attack_open

        during, refused_real = [], 0
        end = time.monotonic() + attack_s
        while time.monotonic() < end:
            t = real_client(d.port, ctx, real)
            real += 1
            if t is None:
                refused_real += 1
            else:
                during.append(t)
            time.sleep(REAL_EVERY)
        st = d.stats()["tls"]
        ours.send("stop")
        assert ours.poll(30), "the attacker did not stop"
        counts = ours.recv()
    finally:
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=5)

    assert refused_real == 0, "%d of %d real clients were refused during the attack" % (
        refused_real, refused_real + len(during))
    assert st["closed_handshake_evicted"] > 0, "no connection was pushed out: no budget in play"
    b50, b90 = statistics.median(base), pct(base, 0.9)
    d50, d90, dmax = statistics.median(during), pct(during, 0.9), max(during)
    assert d50 <= P50_FACTOR * b50 + SLACK, (
        "real clients took %.1f ms (median) during the attack, %.1f ms before" % (d50 * 1e3, b50 * 1e3))
    assert d90 <= P90_FACTOR * b90 + SLACK, (
        "real clients took %.1f ms (90th percentile) during the attack, %.1f ms before"
        % (d90 * 1e3, b90 * 1e3))
    assert dmax < WORST, "a real client took %.2f s during the attack" % dmax

    # Every connection opened is counted once, and every accepted one closed.
    total = counts["opened"] + real
    st = d.wait_stats(lambda st: st["connections"] == 0 and
                      st["accepted"] + sum(st[k] for k in REFUSALS) == total, timeout=30)
    refusals = sum(st[k] for k in REFUSALS)
    assert st["accepted"] + refusals == total, (total, st)
    assert st["connections"] == 0 and st["accepted"] == st["closed"], st
    assert d.alive() and all(pid_alive(p) for p in workers.values())
    assert d.worker_pids() == workers, "a worker was replaced"

    record(request, "7 slow and silent clients", silent=n_silent, trickling=n_trickle,
           max_handshakes=n_silent, attack_s=attack_s, attack_connections_held=attack_open,
           attacker_opened=counts["opened"], attacker_opened_at_start=opened_at_start,
           attacker_cut=counts["cut"], bytes_trickled=counts["trickled"],
           pushed_out=st["closed_handshake_evicted"], refused=refusals,
           handshake_timeouts=st["closed_handshake_timeout"],
           real_clients=real, real_refused=refused_real,
           real_ms_p50_before=round(b50 * 1e3, 2), real_ms_p90_before=round(b90 * 1e3, 2),
           real_ms_p50_during=round(d50 * 1e3, 2), real_ms_p90_during=round(d90 * 1e3, 2),
           real_ms_max_during=round(dmax * 1e3, 2),
           accepted=st["accepted"], closed=st["closed"])
