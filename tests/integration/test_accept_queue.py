"""Each listener's accept queue (TCP_INFO of the listening socket) and the
machine's ListenOverflows/ListenDrops, in `esockdctl stats`, its JSON, the
SIGUSR1 line and /metrics: an operator sees a backlog filling before the
clients in it time out."""

import errno
import socket

from ctl_helpers import (ctl_ok, fetch, listener_json, metric, parse_exposition,
                         parse_stats_text, stats_json)
from esockd_helpers import assert_echo, connect, free_port, wait_until

BACKLOG = 8


def proc_netstat(name):
    """The machine's TcpExt counter `name`, as the test reads it itself."""
    with open("/proc/net/netstat") as f:
        lines = [l.split() for l in f if l.startswith("TcpExt:")]
    return int(lines[1][lines[0].index(name)])


def scrape(mport):
    status, _, body = fetch("http://127.0.0.1:%d/metrics" % mport)
    assert status == 200, status
    return parse_exposition(body.decode())[0]


def queue_everywhere(d, mport, name):
    """(depth, max) of listener `name` in each of the four reports; they
    must agree."""
    js = listener_json(d, name)
    row = parse_stats_text(ctl_ok(d, "stats"))[1][name]
    logged = d.stats()[name]
    samples = scrape(mport)
    views = {"json": (js["accept_queue"], js["accept_queue_max"]),
             "table": (int(row["QUEUE"]), int(row["QUEUE_MAX"])),
             "sigusr1": (logged["accept_queue"], logged["accept_queue_max"]),
             "metrics": (metric(samples, "esockd_listener_accept_queue", listener=name),
                         metric(samples, "esockd_listener_accept_queue_max",
                                listener=name))}
    assert len(set(views.values())) == 1, views
    return views["json"]


def test_a_suspended_listeners_waiting_clients_show_as_its_queue(esockd):
    """backlog 8, suspended (no worker accepts): 5 clients connect and the
    queue reads 5 of 8 everywhere, the other listener 0 of its 511; 20 more
    overflow it: the queue is full and the machine's ListenOverflows, read
    by the test too, moved in /metrics and the JSON; resumed, the queue
    drains and the 5 are served."""
    mport = free_port()
    d = esockd.start(workers=2, metrics="127.0.0.1:%d" % mport,
                     listeners=[{"name": "small", "backlog": BACKLOG}, {"name": "other"}])
    assert queue_everywhere(d, mport, "small") == (0, BACKLOG)
    assert queue_everywhere(d, mport, "other") == (0, 511)

    ctl_ok(d, "suspend", "small")
    waiting, flood = [], []
    try:
        for _ in range(5):
            waiting.append(connect(d.ports["small"]))
        assert queue_everywhere(d, mport, "small") == (5, BACKLOG)
        assert queue_everywhere(d, mport, "other") == (0, 511)

        overflows = proc_netstat("ListenOverflows")
        for _ in range(20):
            s = socket.socket()
            s.setblocking(False)
            assert s.connect_ex(("127.0.0.1", d.ports["small"])) in (0, errno.EINPROGRESS)
            flood.append(s)
        # The kernel queues one past the backlog, then drops handshakes.
        depth = wait_until(lambda: listener_json(d, "small")["accept_queue"] >= BACKLOG
                           and listener_json(d, "small")["accept_queue"], 5,
                           message="a full accept queue")
        assert BACKLOG <= depth <= BACKLOG + 1, depth
        wait_until(lambda: metric(scrape(mport), "esockd_listen_overflows_total") > overflows,
                   5, message="esockd_listen_overflows_total to move")
        samples, full = scrape(mport), stats_json(d)
        assert metric(samples, "esockd_listen_overflows_total") <= proc_netstat("ListenOverflows")
        assert full["listen_overflows"] > overflows, full
        assert metric(samples, "esockd_listen_drops_total") >= \
            metric(samples, "esockd_listen_overflows_total")
        header = parse_stats_text(ctl_ok(d, "stats"))[0]
        assert header["listen queues"].endswith("(this machine, since boot)"), header

        ctl_ok(d, "resume", "small")
        for i, s in enumerate(waiting):
            assert_echo(s, b"waited %d\n" % i)
        wait_until(lambda: listener_json(d, "small")["accept_queue"] == 0, 5,
                   message="the queue to drain")
    finally:
        for s in waiting + flood:
            s.close()
