"""GET /metrics: the Prometheus text format, parsed strictly, agrees with
real traffic and with `esockdctl stats --json`; other paths and methods
are refused; a metrics address that cannot be bound stops the start."""

import os
import re
import socket
import struct
import time

from ctl_helpers import (ENDPOINT_EVENTS, ctl_ok, endpoint_json, fetch, hold_echoing,
                         metric, parse_exposition,
                         run_expecting_exit, socket_fds, stats_json, tcp_inode,
                         wait_listener)
from esockd_helpers import connect, echo_once, free_port, read_outcome, wait_until

LISTENER_FAMILIES = {
    "esockd_connections": "gauge",
    "esockd_max_connections": "gauge",
    "esockd_reserved_connections": "gauge",
    "esockd_listener_suspended": "gauge",
    "esockd_listener_draining": "gauge",
    "esockd_listener_accept_queue": "gauge",
    "esockd_listener_accept_queue_max": "gauge",
    "esockd_connections_accepted_total": "counter",
    "esockd_connections_handed_off_total": "counter",
    "esockd_connections_adopted_total": "counter",
    "esockd_handoff_bad_records_total": "counter",
    "esockd_connections_closed_total": "counter",
    "esockd_connections_refused_total": "counter",
    "esockd_accept_errors_total": "counter",
    "esockd_tls_handshake_failures_total": "counter",
    "esockd_tls_handshakes_total": "counter",
    "esockd_tls_handshake_failures_by_reason_total": "counter",
    "esockd_tls_handshake_seconds": "histogram",
    "esockd_received_bytes_total": "counter",
    "esockd_sent_bytes_total": "counter",
    "esockd_tls_certificate_not_after_seconds": "gauge",
    "esockd_backend_up": "gauge",
    "esockd_backend_connections": "gauge",
    "esockd_backend_connects_total": "counter",
    "esockd_backend_connect_failures_total": "counter",
    "esockd_backend_ejections_total": "counter",
    "esockd_backend_returns_total": "counter",
    "esockd_backend_connect_seconds": "histogram",
}
GLOBAL_FAMILIES = {
    "esockd_workers": "gauge",
    "esockd_generation": "gauge",
    "esockd_reloads_total": "counter",
    "esockd_reload_failures_total": "counter",
    "esockd_config_last_reload_successful": "gauge",
    "esockd_worker_restarts_total": "counter",
    "esockd_start_time_seconds": "gauge",
    "esockd_global_max_connections": "gauge",
    "esockd_global_connections": "gauge",
    "esockd_global_reserved_connections": "gauge",
    "esockd_global_committed_connections": "gauge",
    "esockd_listen_overflows_total": "counter",
    "esockd_listen_drops_total": "counter",
}
ENDPOINT_FAMILIES = {"esockd_endpoint_events_total": "counter"}
CLOSE_REASONS = ("normal", "idle_timeout", "handshake_timeout", "handshake_failed",
                 "handshake_evicted", "backend_unavailable", "client_reset",
                 "backend_reset", "shutdown", "local_error", "proxy_failed",
                 "refused", "by_handler", "handler_lost",
                 "handoff_released", "worker_lost")


def closed_by(samples, listener):
    """{reason: value} of esockd_connections_closed_total for a listener;
    exactly the reasons, each once."""
    got = {dict(labels)["reason"]: v for (name, labels), v in samples.items()
           if name == "esockd_connections_closed_total"
           and dict(labels)["listener"] == listener}
    assert sorted(got) == sorted(CLOSE_REASONS), sorted(got)
    return got


def start_with_metrics(esockd, **kw):
    port = free_port()
    d = esockd.start(metrics="127.0.0.1:%d" % port, **kw)
    return d, "http://127.0.0.1:%d" % port


def metrics_port(base):
    return int(base.rsplit(":", 1)[1])


def open_metrics(base, timeout=5):
    """A raw TCP connection to the metrics address."""
    return socket.create_connection(("127.0.0.1", metrics_port(base)), timeout=timeout)


def scrape(base):
    status, headers, body = fetch(base + "/metrics")
    assert status == 200, (status, body)
    assert headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8", headers
    return parse_exposition(body.decode("utf-8"))


def test_metrics_agree_with_traffic_and_esockdctl(esockd):
    t0 = time.time()
    d, base = start_with_metrics(esockd, workers=2, listeners=[
        {"name": "echo", "max_connections": 500},
        {"name": "dead", "backend": str(esockd.tmp_path / "nobody-listens.sock")}])

    held = hold_echoing(d.port, 4, payload=b"y" * 50)
    try:
        held[0].close()
        st = wait_listener(d, lambda l: l["closed"] == 1)
        assert st["connections"] == 3, st

        # Over the limit once, and once with no backend to go to.
        ctl_ok(d, "set", "max_connections", "echo", "3")
        with connect(d.port) as extra:
            extra.sendall(b"no room\n")
            assert read_outcome(extra, b"no room\n") in ("eof", "reset")
        assert not echo_once(d.ports["dead"])
        ctl_ok(d, "suspend", "dead")
        wait_listener(d, lambda l: l["refused"]["backend_unavailable"] == 1, name="dead")
        wait_listener(d, lambda l: l["refused"]["limit"] == 1)

        samples, helps, types = scrape(base)
        full = stats_json(d)
    finally:
        for s in held:
            s.close()

    families = {**LISTENER_FAMILIES, **GLOBAL_FAMILIES, **ENDPOINT_FAMILIES}
    for family, typ in families.items():
        assert family in helps, "no HELP for %s" % family
        assert types.get(family) == typ, (family, types.get(family))
    assert set(types) == set(families), sorted(types)

    # The operator endpoints: this scrape is the first metrics connection,
    # accepted and not yet answered; `full` came one control command later.
    ep = lambda e, ev: metric(samples, "esockd_endpoint_events_total",  # noqa: E731
                              endpoint=e, event=ev)
    for ev in ENDPOINT_EVENTS:
        want = {"accepted": 1}.get(ev, 0)
        assert ep("metrics", ev) == want, (ev, ep("metrics", ev))
        ctl_now = full["endpoints"]["control"][ev]
        assert ep("control", ev) == ctl_now - (ev == "accepted"), (ev, ctl_now)
    # set, suspend, and at least one reading in each of the three waits
    assert full["endpoints"]["control"]["answered"] >= 5, full["endpoints"]
    assert full["endpoints"]["metrics"] == dict(
        {ev: 0 for ev in ENDPOINT_EVENTS}, enabled=True, accepted=1, answered=1)

    for lst in full["listeners"]:
        n = lst["name"]
        assert metric(samples, "esockd_connections", listener=n) == lst["connections"]
        assert metric(samples, "esockd_max_connections", listener=n) == lst["max_connections"]
        assert metric(samples, "esockd_listener_suspended", listener=n) == int(lst["suspended"])
        assert metric(samples, "esockd_listener_draining", listener=n) == 0
        assert metric(samples, "esockd_connections_accepted_total", listener=n) == lst["accepted"]
        assert closed_by(samples, n) == lst["closed_by"], (closed_by(samples, n), lst)
        assert sum(closed_by(samples, n).values()) == lst["closed"], lst
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="limit") == lst["refused"]["limit"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="backend_unavailable") == lst["refused"]["backend_unavailable"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="rule") == lst["refused"]["rule"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="rate") == lst["refused"]["rate"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="source") == lst["refused"]["source"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="source_rate") == lst["refused"]["source_rate"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="emfile") == lst["refused"]["emfile"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="global_limit") == lst["refused"]["global_limit"]
        assert metric(samples, "esockd_reserved_connections",
                      listener=n) == lst["reserved_connections"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="handshakes") == lst["refused"]["handshakes"]
        assert metric(samples, "esockd_connections_refused_total", listener=n,
                      reason="early_drop") == lst["refused"]["early_drop"]
        assert metric(samples, "esockd_accept_errors_total", listener=n) == lst["accept_errors"]
        assert metric(samples, "esockd_tls_handshake_failures_total",
                      listener=n) == lst["tls_failures"]
        assert metric(samples, "esockd_received_bytes_total", listener=n) == lst["bytes_in"]
        assert metric(samples, "esockd_sent_bytes_total", listener=n) == lst["bytes_out"]

    # ...and both agree with what the clients did.
    get = lambda name, **l: metric(samples, name, **l)  # noqa: E731
    assert get("esockd_connections", listener="echo") == 3
    assert get("esockd_max_connections", listener="echo") == 3
    assert get("esockd_connections_accepted_total", listener="echo") == 4
    assert closed_by(samples, "echo") == dict({r: 0 for r in CLOSE_REASONS}, normal=1)
    assert closed_by(samples, "dead") == dict({r: 0 for r in CLOSE_REASONS},
                                              backend_unavailable=1)
    assert get("esockd_connections_refused_total", listener="echo", reason="limit") == 1
    assert get("esockd_received_bytes_total", listener="echo") == 200
    assert get("esockd_sent_bytes_total", listener="echo") == 200
    assert get("esockd_connections_refused_total", listener="dead",
               reason="backend_unavailable") == 1
    assert get("esockd_listener_suspended", listener="dead") == 1
    assert get("esockd_listener_suspended", listener="echo") == 0
    assert get("esockd_workers") == 2 == full["workers_running"]
    assert get("esockd_generation") == 1 == full["generation"]
    assert get("esockd_reloads_total") == 0 and get("esockd_reload_failures_total") == 0
    assert get("esockd_config_last_reload_successful") == 1
    assert get("esockd_worker_restarts_total") == full["worker_restarts"]
    assert get("esockd_start_time_seconds") == full["started"]
    assert t0 - 2 <= full["started"] <= time.time() + 1

    # Every sample carries exactly its family's labels.
    for (name, labels) in samples:
        keys = sorted(k for k, _ in labels)
        if name in GLOBAL_FAMILIES:
            assert keys == [], (name, labels)
        elif name in ("esockd_connections_refused_total",
                      "esockd_connections_closed_total"):
            assert keys == ["listener", "reason"], (name, labels)
        elif name in ENDPOINT_FAMILIES:
            assert keys == ["endpoint", "event"], (name, labels)
        elif name == "esockd_tls_certificate_not_after_seconds":
            assert keys == ["listener", "name"], (name, labels)
        elif name == "esockd_tls_handshakes_total":
            assert keys == ["listener", "resumed", "version"], (name, labels)
        elif name == "esockd_tls_handshake_failures_by_reason_total":
            assert keys == ["listener", "reason"], (name, labels)
        elif name == "esockd_tls_handshake_seconds_bucket":
            assert keys == ["le", "listener"], (name, labels)
        elif name == "esockd_backend_connect_failures_total":
            assert keys == ["listener", "reason", "socket"], (name, labels)
        elif name == "esockd_backend_connect_seconds_bucket":
            assert keys == ["le", "listener", "socket"], (name, labels)
        elif name.startswith("esockd_backend_"):
            assert keys == ["listener", "socket"], (name, labels)
        else:
            assert keys == ["listener"], (name, labels)

    # Closing the held connections shows up in the next scrape.
    wait_listener(d, lambda l: l["connections"] == 0)
    samples, _, _ = scrape(base)
    assert metric(samples, "esockd_connections", listener="echo") == 0
    assert sum(closed_by(samples, "echo").values()) == 4
    assert closed_by(samples, "echo")["normal"] == 4


def test_other_paths_are_404_and_other_methods_405(esockd):
    d, base = start_with_metrics(esockd)
    status, _, body = fetch(base + "/")
    assert status == 404 and b"/metrics" in body, (status, body)
    status, _, _ = fetch(base + "/metricsx")
    assert status == 404
    for method in ("POST", "PUT", "DELETE"):
        status, headers, _ = fetch(base + "/metrics", method=method)
        assert status == 405, (method, status)
        assert headers["Allow"] == "GET, HEAD", headers
    status, headers, body = fetch(base + "/metrics", method="HEAD")
    assert status == 200 and body == b"" and int(headers["Content-Length"]) > 1000, headers
    status, _, body = fetch(base + "/metrics?from=test")
    assert status == 200 and b"esockd_generation 1\n" in body
    assert d.alive()


def test_metrics_connections_do_not_block_the_master(esockd):
    """An idle HTTP connection and a half-sent request do not stop a scrape
    or the control socket; evhttp closes them after its timeout."""
    d, base = start_with_metrics(esockd)
    idle = open_metrics(base)
    half = open_metrics(base)
    try:
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        scrape(base)
        assert "\necho " in ctl_ok(d, "stats")
        for s in (idle, half):
            s.settimeout(15)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    if not s.recv(4096):
                        break
                except (ConnectionResetError, socket.timeout):
                    break
            else:
                raise AssertionError("metrics connection not closed by its timeout")
    finally:
        idle.close()
        half.close()


def test_a_metrics_address_in_use_stops_the_start(esockd):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        addr = "127.0.0.1:%d" % taken.getsockname()[1]
        rc, log = run_expecting_exit(esockd, {"workers": 1, "metrics": addr,
                                              "control_socket": ""},
                                     [{"name": "echo"}])
    assert rc == 1, log
    assert ("metrics: cannot listen on %s: Address already in use; another program "
            "holds that port" % addr) in log, log
    assert "ready:" not in log


def raw_exchange(base, data, timeout=10):
    """Send raw bytes to the metrics address; everything it answers."""
    with open_metrics(base, timeout) as s:
        s.sendall(data)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk


def master_fds(d):
    return len(os.listdir("/proc/%d/fd" % d.master_pid))


def settled_fds(d, timeout=10):
    """The master's descriptor count once it stops changing (a scrape's
    connection closes a moment after the client's)."""
    deadline = time.monotonic() + timeout
    last = master_fds(d)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = master_fds(d)
        if now == last:
            return now
        last = now
    raise AssertionError("the master's descriptors kept changing")


def test_a_trickled_request_is_cut_at_its_deadline(esockd):
    """A request must be whole 5 s after the connect, however it trickles
    (an idle timer alone would let a byte every second hold it for ever):
    then the answer is 408 and the connection ends."""
    d, base = start_with_metrics(esockd)
    s = open_metrics(base)
    start = time.monotonic()
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    closed_at = None
    try:
        s.settimeout(1.0)
        while time.monotonic() - start < 12:
            try:
                s.send(b"X")
                if s.recv(4096) == b"":
                    closed_at = time.monotonic() - start
                    break
            except socket.timeout:
                continue
            except (BrokenPipeError, ConnectionResetError):
                closed_at = time.monotonic() - start
                break
    finally:
        s.close()
    assert closed_at is not None, "a trickling client held the connection 12 s"
    assert 4.0 <= closed_at <= 8.0, closed_at
    assert metric(scrape(base)[0], "esockd_generation") == 1
    ep = endpoint_json(d, "metrics")
    assert ep["late_request"] == 1 and ep["answered"] == 1 and ep["dropped"] == 0, ep


def test_metrics_connections_are_capped(esockd):
    """At most 16 metrics connections are open in the master at once (a
    new one pushes out the oldest still sending its request, as on the
    control socket), and the control socket still answers."""
    d, base = start_with_metrics(esockd)
    scrape(base)
    before = settled_fds(d)
    held = []
    try:
        for _ in range(40):   # under the 50 accepts/s pause
            s = open_metrics(base)
            s.sendall(b"GET /metrics HTTP/1.1\r\n")
            held.append(s)
        deadline = time.monotonic() + 2
        peak = 0
        while time.monotonic() < deadline:
            peak = max(peak, master_fds(d) - before)
            time.sleep(0.05)
        # libevent accepts the newcomer before the oldest is pushed out in
        # the same callback, so a sample may catch 17 for that instant
        # (seen once in the ASan run); once settled it is exactly 16.
        assert 16 <= peak <= 17, "master held %d more descriptors" % peak
        wait_until(lambda: endpoint_json(d, "metrics")["pushed_out_idle"] == 24, 5,
                   message="the 24 pushed out")
        assert settled_fds(d) - before == 16, "not 16 held once settled"
        assert "\necho " in ctl_ok(d, "stats")
    finally:
        for s in held:
            s.close()
    scrape(base)   # the queued ones see EOF at once; this one is answered
    assert settled_fds(d) == before
    # 40 over a cap of 16: 24 pushed out, 16 left by their clients.
    ep = endpoint_json(d, "metrics")
    assert ep["pushed_out_idle"] == 24 and ep["dropped"] == 16, ep
    assert ep["refused"] == 0 and ep["answered"] == 2 and ep["accepted"] == 42, ep


def test_bad_requests_are_answered_and_closed(esockd):
    d, base = start_with_metrics(esockd)
    out = raw_exchange(base, b"BREW\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 "), out[:80]
    out = raw_exchange(base, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 5000)
    assert out.startswith(b"HTTP/1.1 431 "), out[:80]
    out = raw_exchange(base, b"HEAD /nothing HTTP/1.0\n\n")
    assert out.startswith(b"HTTP/1.1 404 ") and out.endswith(b"\r\n\r\n"), out
    # an empty line first, the absolute form, a bare LF after CRLF lines
    out = raw_exchange(base, b"\r\nGET http://x:1/metrics HTTP/1.1\r\nHost: x\r\n\n")
    assert out.startswith(b"HTTP/1.1 200 ") and b"\nesockd_generation 1\n" in out, out[:200]
    assert metric(scrape(base)[0], "esockd_generation") == 1
    assert d.alive()
    # Answered, every one, with a status that says what was wrong.
    ep = endpoint_json(d, "metrics")
    assert ep["answered"] == 5 and ep["accepted"] == 5 and ep["dropped"] == 0, ep
    # Half a request, then a reset: nothing to answer, counted as dropped.
    s = open_metrics(base)
    s.sendall(b"GET /metrics HTTP/1.1\r\n")
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    wait_until(lambda: endpoint_json(d, "metrics")["dropped"] == 1, 5,
               message="the reset connection counted as dropped")
    ep = endpoint_json(d, "metrics")
    assert ep["answered"] == 5 and ep["accepted"] == 6 and ep["errors"] == 0, ep


def test_metrics_connections_are_close_on_exec(esockd):
    d, base = start_with_metrics(esockd)
    with open_metrics(base) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\n")   # held open: no blank line yet
        time.sleep(0.3)
        fd = socket_fds(d.master_pid)[tcp_inode(metrics_port(base), peer_port=s.getsockname()[1])]
        with open("/proc/%d/fdinfo/%d" % (d.master_pid, fd)) as f:
            flags = int(re.search(r"^flags:\s+(\d+)", f.read(), re.M).group(1), 8)
        assert flags & os.O_CLOEXEC, "flags %o" % flags


def test_answered_connections_left_open_cannot_lock_scrapes_out(esockd):
    """16 clients take their answer and never close: at the cap the next
    connection pushes out the oldest of them (not refused), so a scrape
    still gets through at once."""
    d, base = start_with_metrics(esockd)
    held = []
    try:
        for _ in range(16):
            s = open_metrics(base)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while b"esockd_start_time_seconds" not in got:
                chunk = s.recv(65536)
                assert chunk, "EOF before the whole answer"
                got += chunk
            held.append(s)   # answered, our FIN in, never closed by us
        t0 = time.monotonic()
        assert metric(scrape(base)[0], "esockd_generation") == 1
        assert time.monotonic() - t0 < 2, "the scrape waited behind answered connections"
        wait_until(lambda: "16 connections open, the most allowed; closed the oldest "
                   "answered one" in d.log(), 5, message="the shed log line")
        ep = endpoint_json(d, "metrics")
        assert ep["pushed_out_answered"] == 1 and ep["refused"] == 0, ep
        assert ep["pushed_out_idle"] == 0 and ep["answered"] == 17, ep
    finally:
        for s in held:
            s.close()
