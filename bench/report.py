#!/usr/bin/python3
"""bench/report.py: turn the records of bench/run.sh into RESULTS.md and
PNG bar charts, and print esockd's ratio to each peer.

usage: report.py --tmp DIR --out DIR [--plot bench/plot.gp]

DIR (run.sh's temporary directory) holds:
  results.txt  one record a line: "run gw=.. mode=.. round=.. key=value ..."
               (the load generator's RESULT fields plus what run.sh measured
               in /proc), and "big ..." for the 100k test;
  meta.tsv     facts about the machine and the run (key<TAB>value);
  sysctl.tsv   key<TAB>before<TAB>after<TAB>outcome;
  cmd.<gw>     each gateway's command line; runs/<tag>.cmd the load
               generator's; logs/*.log what each process printed.
The chart data files are written to DIR, the charts and RESULTS.md to --out.
Standard library only: this is Debian's /usr/bin/python3.
"""
import argparse
import collections
import os
import re
import statistics
import subprocess
import sys

# "handoff": esockd with mode = "handoff" in front of a hand-off echo
# backend; not a peer, a second column of esockd's.
GATEWAYS = ["esockd", "handoff", "haproxy", "nginx", "stunnel", "direct"]
PEERS = ["haproxy", "nginx", "stunnel", "direct"]
REAL_PEERS = ["haproxy", "nginx", "stunnel"]  # "best peer": not direct
TLS_MODES = ["tls-rsa", "tls-ecdsa", "tls-resume", "tls-stream", "tls-idle"]
COLOURS = {"esockd": 0x2E7D32, "handoff": 0x81C784,
           "haproxy": 0x1565C0, "nginx": 0x6A1B9A,
           "stunnel": 0xEF6C00, "direct": 0x757575}
BACKEND_BUSY = 0.90     # of one core: above it the backend may be the limit
OTHER_BUSY = 0.10       # cores used by processes not ours: a disturbed run
RELAY_BOUND = 1.05      # relay: no peer more than 5% cheaper per unit
HANDOFF_CONN_BOUND = 0.35   # hand-off: CPU per connection vs the best peer
HANDOFF_RATE_BOUND = 0.85   # hand-off: connections/s vs direct
NEAR_ZERO = 0.05        # hand-off: the gateway's share of the CPU per
                        # message or MB that reads as "near zero"


def num(s):
    """A float from a record's value, or None."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def read_records(path):
    """The records of results.txt as (kind, {key: value}) pairs."""
    recs = []
    if not os.path.exists(path):
        return recs
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            kv = {}
            for w in words[1:]:
                if "=" in w:
                    k, v = w.split("=", 1)
                    kv.setdefault(k, v)     # run.sh's own keys come first
            recs.append((words[0], kv))
    return recs


def read_tsv(path):
    rows = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.rstrip("\n")
                if line:
                    rows.append(line.split("\t"))
    return rows


def read_text(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def derive(r):
    """Add the figures computed from run.sh's /proc samples to record r.

    CPU is sampled around the whole load-generator run (warm-up, set-up
    and tear-down included), so per-unit costs divide the gateway's mean
    CPU use (CPU seconds / wall seconds) by the measured rate: this assumes
    the same rate over the warm-up as over the measured window."""
    d = dict(r)
    tck = num(r.get("clk_tck")) or 100.0
    wall = num(r.get("wall_s"))
    gw = num(r.get("gw_cpu_ticks"))
    be = num(r.get("backend_cpu_ticks"))
    if wall and wall > 0:
        if gw is not None:
            d["gw_cpu_util"] = gw / tck / wall
        if be is not None:
            d["backend_cpu_util"] = be / tck / wall
    util = d.get("gw_cpu_util")
    cps = num(r.get("conns_per_s"))
    mps = num(r.get("msgs_per_s"))
    mbs = num(r.get("mb_per_s"))
    # the backend's CPU per unit too: in hand-off mode it does the echo
    butil = d.get("backend_cpu_util")
    if r.get("gw") == "direct":
        butil = None    # no backend behind it: the echo server is hit
    for prefix, u in (("cpu", util), ("be", butil)):
        if u is None:
            continue
        for unit, rate in (("conn", cps), ("msg", mps), ("mb", mbs)):
            if rate:
                d["%s_us_per_%s" % (prefix, unit)] = u / rate * 1e6
    if util is not None and mbs:
        d["cpu_ms_per_mb"] = util / mbs * 1e3
    hps = num(r.get("hs_per_s"))
    if util is not None and hps:
        d["cpu_us_per_hs"] = util / hps * 1e6
    hs, resumed = num(r.get("hs")), num(r.get("resumed"))
    if hs:
        d["resumed_pct"] = 100.0 * (resumed or 0) / hs
    # which protocol the handshakes were: a gateway that negotiates
    # TLS 1.2 where the others do 1.3 is not doing the same work
    tls13 = num(r.get("tls13"))
    done = hs or num(r.get("established"))
    if tls13 is not None and done:
        d["tls13_pct"] = 100.0 * tls13 / done
    base, held = num(r.get("pss_base_kb")), num(r.get("pss_held_kb"))
    est = num(r.get("established"))
    if base is not None and held and est:
        d["pss_per_conn_kib"] = (held - base) / est
    return d


def read_snapshot(path):
    """{(pid, starttime): (ticks, ppid, comm)} from run.sh's cpu_snapshot."""
    snap = {}
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) == 5:
                    snap[(w[0], w[1])] = (int(w[2]), w[3], w[4])
    except (OSError, ValueError):
        return None
    return snap


def foreign_cpu(tmp, r):
    """Ticks that processes not started by run.sh (nor kernel threads)
    used during run r, and the top consumers by name; None if unknown.
    Processes that began and ended inside the run are not seen."""
    tag = r.get("tag") or f"{r.get('gw')}-{r.get('mode')}-r{r.get('round')}"
    base = os.path.join(tmp, "runs", tag)
    s0, s1 = read_snapshot(base + ".snap0"), read_snapshot(base + ".snap1")
    if s0 is None or s1 is None:
        return None
    ours = set(read_text(base + ".ours").split())
    total, kernel, by = 0, 0, collections.Counter()
    for (pid, start), (ticks, ppid, comm) in s1.items():
        if pid in ours:
            continue
        before = s0.get((pid, start), (0,))[0]
        if ticks <= before:
            continue
        if pid == "2" or ppid == "2":
            kernel += ticks - before
        else:
            total += ticks - before
            by[comm] += ticks - before
    return total, by.most_common(3), kernel


def other_cpu(tmp, r):
    """Set r["other_cpu_util"]: the cores that processes not started by
    run.sh took during run r.  Long-lived ones are seen in the snapshots
    (r["other_top"] names the top ones); short-lived ones only as the
    machine's busy time (/proc/stat) that no known process explains."""
    fc = foreign_cpu(tmp, r)
    wall = num(r.get("wall_s"))
    tck = num(r.get("clk_tck")) or 100.0
    if fc is None or not wall:
        return None
    seen = fc[0] / tck / wall
    r["other_top"] = ", ".join(f"{c} {t / tck / wall:.2f}" for c, t in fc[1])
    unseen = 0.0
    busy = num(r.get("sys_busy_ticks"))
    if busy is not None:
        known = ((num(r.get("gw_cpu_ticks")) or 0) +
                 (num(r.get("backend_cpu_ticks")) or 0) + fc[0] + fc[2]) / tck \
            + (num(r.get("shell_cpu_s")) or 0) \
            + (num(r.get("children_cpu_s")) or 0)
        # a few hundredths either way are accounting noise
        unseen = max(0.0, (busy / tck - known) / wall)
        r["unseen_cpu_util"] = unseen
    if unseen >= 0.05:
        r["other_top"] += (", " if r["other_top"] else "") + \
            f"short-lived processes {unseen:.2f}"
    # Time the hypervisor gave to other guests: it slows the whole run.
    steal = max(0.0, (num(r.get("sys_steal_ticks")) or 0) / tck / wall)
    r["steal_util"] = steal
    if steal >= 0.01:
        r["other_top"] += (", " if r["other_top"] else "") + \
            f"other guests of the host (steal) {steal:.2f}"
    r["other_cpu_util"] = seen + unseen + steal
    return r["other_cpu_util"]


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(v, digits=3):
    """A figure for a table: 3 significant digits, thousands separated."""
    if v is None:
        return "–"
    if v == 0:
        return "0"
    a = abs(v)
    if v == int(v) and a < 1000:
        return f"{int(v)}"
    if a >= 1000:
        return f"{v:,.0f}"
    decimals = max(0, digits - 1 - int(f"{a:e}".split("e")[1]))
    return f"{v:,.{decimals}f}"


def fratio(v):
    return "–" if v is None else f"{v:.2f}×"


# The brief's targets: (text, mode, figure, peer, comparison, bound, unit).
# The comparison applies to the ratio esockd ÷ peer.
TARGETS = [
    ("rate: connections/s ≥ 1.2× HAProxy", "rate", "conns_per_s",
     "haproxy", ">=", 1.2, "conn/s"),
    ("rate: connections/s ≥ 1.0× nginx", "rate", "conns_per_s",
     "nginx", ">=", 1.0, "conn/s"),
    ("echo: messages/s ≥ 1.1× HAProxy", "echo", "msgs_per_s",
     "haproxy", ">=", 1.1, "msg/s"),
    ("echo: esockd p99 ≤ HAProxy p99", "echo", "p99_us",
     "haproxy", "<=", 1.0, "µs"),
    ("stream: MB/s ≥ 1.0× HAProxy", "stream", "mb_per_s",
     "haproxy", ">=", 1.0, "MB/s"),
    ("idle: PSS per connection ≤ 0.5× HAProxy's", "idle", "pss_per_conn_kib",
     "haproxy", "<=", 0.5, "KiB"),
    ("rate: CPU per connection ≤ HAProxy's", "rate", "cpu_us_per_conn",
     "haproxy", "<=", 1.0, "µs"),
    ("stream: CPU per MB ≤ HAProxy's", "stream", "cpu_ms_per_mb",
     "haproxy", "<=", 1.0, "ms"),
    # issue 13: the TLS targets, against the best of HAProxy, nginx and
    # stunnel in the same run ("best"), or an absolute bound ("abs")
    ("tls-rsa: CPU per full RSA-2048 handshake ≤ best peer's", "tls-rsa",
     "cpu_us_per_hs", "best", "<=", 1.0, "µs"),
    ("tls-ecdsa: CPU per full ECDSA P-256 handshake ≤ best peer's",
     "tls-ecdsa", "cpu_us_per_hs", "best", "<=", 1.0, "µs"),
    ("tls-resume: CPU per resumed handshake ≤ best peer's", "tls-resume",
     "cpu_us_per_hs", "best", "<=", 1.0, "µs"),
    ("tls-stream: CPU per MB through TLS ≤ 0.9× best peer's", "tls-stream",
     "cpu_ms_per_mb", "best", "<=", 0.9, "ms"),
    ("tls-idle: PSS per idle TLS connection ≤ 10 KiB", "tls-idle",
     "pss_per_conn_kib", "abs", "<=", 10.0, "KiB"),
]

def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


# The figures reported per mode: (key, title, unit, higher is better)
FIGURES = {
    "rate": [("conns_per_s", "connections/s", "", True),
             ("p50_us", "connect+close p50", "µs", False),
             ("p99_us", "connect+close p99", "µs", False),
             ("cpu_us_per_conn", "gateway CPU per connection", "µs", False),
             ("be_us_per_conn", "backend CPU per connection", "µs", False),
             ("gw_cpu_util", "gateway CPU", "cores", False),
             ("errors", "errors", "", False)],
    "echo": [("msgs_per_s", "messages/s", "", True),
             ("p50_us", "round trip p50", "µs", False),
             ("p99_us", "round trip p99", "µs", False),
             ("cpu_us_per_msg", "gateway CPU per message", "µs", False),
             ("be_us_per_msg", "backend CPU per message", "µs", False),
             ("gw_cpu_util", "gateway CPU", "cores", False),
             ("errors", "errors", "", False)],
    "stream": [("mb_per_s", "throughput", "MB/s", True),
               ("cpu_ms_per_mb", "gateway CPU per MB", "ms", False),
               ("cpu_us_per_mb", "gateway CPU per MB", "µs", False),
               ("be_us_per_mb", "backend CPU per MB", "µs", False),
               ("gw_cpu_util", "gateway CPU", "cores", False),
               ("lost_bytes", "lost bytes", "", False),
               ("errors", "errors", "", False)],
    "idle": [("pss_per_conn_kib", "PSS per idle connection", "KiB", False),
             ("established", "established", "", True),
             ("failed", "failed", "", False),
             ("pss_base_kb", "PSS before", "KiB", False),
             ("pss_held_kb", "PSS while holding", "KiB", False),
             ("gw_fds_held", "gateway descriptors while holding", "", True),
             ("establish_s", "time to establish", "s", False)],
}
_HS = [("cpu_us_per_hs", "gateway CPU per handshake", "µs", False),
       ("hs_per_s", "handshakes/s", "", True),
       ("resumed_pct", "resumed", "%", True),
       ("tls13_pct", "TLS 1.3", "%", True),
       ("p50_us", "connect+handshake+echo p50", "µs", False),
       ("p99_us", "connect+handshake+echo p99", "µs", False),
       ("gw_cpu_util", "gateway CPU", "cores", False),
       ("errors", "errors", "", False)]
FIGURES.update({
    "tls-rsa": _HS, "tls-ecdsa": _HS, "tls-resume": _HS,
    "tls-stream": [("cpu_ms_per_mb", "gateway CPU per MB", "ms", False),
                   ("mb_per_s", "throughput", "MB/s", True),
                   ("gw_cpu_util", "gateway CPU", "cores", False),
                   ("lost_bytes", "lost bytes", "", False),
                   ("errors", "errors", "", False)],
    "tls-idle": FIGURES["idle"] + [("tls13_pct", "TLS 1.3", "%", True)],
})
# The shapes of issue 16: more sizes of the same load generator modes.
for _m in ("echo64", "echo1k", "echo16k", "latency"):
    FIGURES[_m] = FIGURES["echo"]
for _m in ("stream4k", "stream16k", "stream1m"):
    FIGURES[_m] = FIGURES["stream"]

# The summary table "esockd ÷ best peer and ÷ direct": (mode, figure,
# title, higher is better, the backend's figure for the same unit).
SHAPES = [
    ("rate", "cpu_us_per_conn", "connect, 64 B echo, close: CPU per "
     "connection (µs)", False, "be_us_per_conn"),
    ("rate", "conns_per_s", "connect, 64 B echo, close: connections/s",
     True, None),
    ("echo64", "cpu_us_per_msg", "64 connections, 64 B messages: CPU per "
     "message (µs)", False, "be_us_per_msg"),
    ("echo1k", "cpu_us_per_msg", "64 connections, 1 KiB messages: CPU per "
     "message (µs)", False, "be_us_per_msg"),
    ("echo16k", "cpu_us_per_msg", "64 connections, 16 KiB messages: CPU "
     "per message (µs)", False, "be_us_per_msg"),
    ("echo", "cpu_us_per_msg", "1,000 connections, 1 KiB messages: CPU per "
     "message (µs)", False, "be_us_per_msg"),
    ("stream4k", "cpu_us_per_mb", "8 connections, 4 KiB writes: CPU per MB "
     "(µs)", False, "be_us_per_mb"),
    ("stream16k", "cpu_us_per_mb", "8 connections, 16 KiB writes: CPU per "
     "MB (µs)", False, "be_us_per_mb"),
    ("stream", "cpu_us_per_mb", "8 connections, 64 KiB writes: CPU per MB "
     "(µs)", False, "be_us_per_mb"),
    ("stream1m", "cpu_us_per_mb", "8 connections, 1 MiB writes: CPU per MB "
     "(µs)", False, "be_us_per_mb"),
    ("latency", "p50_us", "1 connection, 64 B: round trip p50 (µs)", False,
     None),
    ("latency", "p99_us", "1 connection, 64 B: round trip p99 (µs)", False,
     None),
    ("idle", "pss_per_conn_kib", "idle: PSS per connection (KiB)", False,
     None),
]
# per unit of work: the rows the relay bound applies to
CPU_KEYS = ("cpu_us_per_conn", "cpu_us_per_msg", "cpu_us_per_mb")
# The headline figure of each mode: the ratio table and the chart.
HEADLINE = {"rate": "conns_per_s", "echo": "msgs_per_s",
            "stream": "mb_per_s", "idle": "pss_per_conn_kib",
            "echo64": "msgs_per_s", "echo1k": "msgs_per_s",
            "echo16k": "msgs_per_s", "latency": "p50_us",
            "stream4k": "mb_per_s", "stream16k": "mb_per_s",
            "stream1m": "mb_per_s",
            "tls-rsa": "cpu_us_per_hs", "tls-ecdsa": "cpu_us_per_hs",
            "tls-resume": "cpu_us_per_hs", "tls-stream": "cpu_ms_per_mb",
            "tls-idle": "pss_per_conn_kib"}
CHARTS = [("rate", "conns_per_s", "rate.png", "Connections per second",
           "connections/s (higher is better)"),
          ("echo", "msgs_per_s", "echo.png", "Echo messages per second",
           "messages/s (higher is better)"),
          ("stream", "mb_per_s", "stream.png", "Stream throughput",
           "MB/s (higher is better)"),
          ("idle", "pss_per_conn_kib", "memory.png",
           "Memory (PSS) per idle relayed connection",
           "KiB per connection (lower is better)"),
          ("echo", "p99_us", "echo-p99.png", "Echo round trip, 99th percentile",
           "µs (lower is better)"),
          ("rate", "cpu_us_per_conn", "cpu.png",
           "Gateway CPU per connection (rate mode)",
           "CPU µs per connection (lower is better)"),
          ("tls-rsa", "cpu_us_per_hs", "tls-rsa.png",
           "Gateway CPU per full TLS handshake, RSA-2048",
           "CPU µs per handshake (lower is better)"),
          ("tls-ecdsa", "cpu_us_per_hs", "tls-ecdsa.png",
           "Gateway CPU per full TLS handshake, ECDSA P-256",
           "CPU µs per handshake (lower is better)"),
          ("tls-resume", "cpu_us_per_hs", "tls-resume.png",
           "Gateway CPU per resumed TLS handshake",
           "CPU µs per handshake (lower is better)"),
          ("tls-stream", "cpu_ms_per_mb", "tls-stream.png",
           "Gateway CPU per MB through TLS",
           "CPU ms per MB (lower is better)"),
          ("tls-idle", "pss_per_conn_kib", "tls-memory.png",
           "Memory (PSS) per idle TLS connection",
           "KiB per connection (lower is better)")]


def best_peer(vals, higher):
    """(peer, value): the best of HAProxy, nginx and stunnel in VALS."""
    have = [(p, vals.get(p)) for p in REAL_PEERS if vals.get(p) is not None]
    if not have:
        return None, None
    return (max if higher else min)(have, key=lambda pv: pv[1])


class Report:
    def __init__(self, tmp, out, plot):
        self.tmp, self.out, self.plot = tmp, out, plot
        self.meta = dict((r[0], r[1] if len(r) > 1 else "")
                         for r in read_tsv(os.path.join(tmp, "meta.tsv")))
        recs = read_records(os.path.join(tmp, "results.txt"))
        self.runs = [derive(kv) for kind, kv in recs if kind == "run"]
        self.disturbed = [kv for kind, kv in recs if kind == "disturbed"]
        for r in self.runs + self.disturbed:
            other_cpu(tmp, r)
        self.big = [kv for kind, kv in recs if kind == "big"]
        self.modes = [m for m in self.meta.get("modes", "").split(",") if m]
        gws = self.meta.get("gateways", ",".join(GATEWAYS)).split(",")
        self.gateways = [g for g in GATEWAYS if g in gws]
        self.warnings = []
        pre = foreign_cpu(tmp, {"gw": "preflight", "mode": "check",
                                "round": "0"})
        self.preflight = None
        if pre is not None:
            tck = num(self.meta.get("clk_tck")) or 100.0
            self.preflight = (pre[0] / tck, ", ".join(
                f"{c} {t / tck:.2f}" for c, t in pre[1]))
        self.med = {}   # (mode, gw) -> {figure: median}
        for mode in self.modes:
            for gw in self.gateways:
                rs = self.of(mode, gw)
                figs = {}
                for key, *_ in FIGURES[mode]:
                    figs[key] = median(num(r.get(key)) for r in rs)
                for key in ("backend_cpu_util", "other_cpu_util"):
                    figs[key] = max((num(r.get(key)) for r in rs
                                     if num(r.get(key)) is not None),
                                    default=None)
                figs["rounds"] = len(rs)
                self.med[(mode, gw)] = figs

    def of(self, mode, gw):
        return [r for r in self.runs if r.get("mode") == mode and
                r.get("gw") == gw]

    def fig(self, mode, gw, key):
        return self.med.get((mode, gw), {}).get(key)

    # ------------------------------------------------------------ checks

    def check_runs(self):
        """Note what looks wrong: errors, missing results, a busy backend."""
        for r in self.disturbed:
            self.warnings.append(
                f"{r.get('mode')} via {r.get('gw')}, round {r.get('round')}: "
                f"an attempt was set aside (not counted) because other "
                f"processes took {r.get('other_cpu_util', 0):.2f} cores "
                f"({r.get('other_top', '')})")
        if self.preflight and self.preflight[0] > OTHER_BUSY:
            self.warnings.append(
                f"before the first run, other processes on this machine used "
                f"{self.preflight[0]:.2f} cores ({self.preflight[1]}): the "
                "machine was not quiet")
        for r in self.runs:
            tag = f"{r.get('mode')} via {r.get('gw')}, round {r.get('round')}"
            if r.get("result") == "missing":
                self.warnings.append(f"{tag}: the load generator printed no "
                                     f"RESULT line (exit {r.get('lg_rc')})")
                continue
            rc = r.get("lg_rc")
            if rc not in (None, "0"):
                self.warnings.append(
                    f"{tag}: the load generator exited {rc}"
                    + (" (more than 1% failed)" if rc == "2" else
                       " (stopped: over its time limit)" if rc == "124" else ""))
            errs = num(r.get("errors"))
            if errs:
                detail = ", ".join(f"{k}={r[k]}" for k in sorted(r)
                                   if k.startswith("err_") and num(r[k]))
                self.warnings.append(f"{tag}: {fmt(errs)} errors"
                                     + (f" ({detail})" if detail else ""))
            if num(r.get("lost_bytes")):
                self.warnings.append(f"{tag}: lost_bytes={r['lost_bytes']}")
            if r.get("mode") in ("idle", "tls-idle") and \
                    r.get("holding") == "0":
                self.warnings.append(f"{tag}: never reached HOLDING; no "
                                     "memory figure")
            bu = r.get("backend_cpu_util")
            # in hand-off mode the backend does the echo itself: busy by
            # design, as direct's echo server is
            if r.get("gw") not in ("direct", "handoff") and \
                    bu is not None and bu > BACKEND_BUSY:
                self.warnings.append(
                    f"{tag}: the backend echo server used {bu:.0%} of one "
                    "core: it may be the bottleneck of this run")
            oc = r.get("other_cpu_util")
            if oc is not None and oc > OTHER_BUSY:
                self.warnings.append(
                    f"{tag}: other processes on this machine (not started by "
                    f"run.sh) used {oc:.2f} cores during the run "
                    f"({r.get('other_top')}): this run's figures are "
                    "disturbed")
            p0, p1 = r.get("gw_procs"), r.get("gw_procs_after")
            if p0 and p1 and p0 != p1:
                self.warnings.append(f"{tag}: the gateway had {p0} processes "
                                     f"before the run and {p1} after (a "
                                     "crash?)")

    def gateway_logs(self):
        """Distinct lines the gateways and backends logged, with counts."""
        logdir = os.path.join(self.tmp, "logs")
        seen = collections.OrderedDict()
        if not os.path.isdir(logdir):
            return []
        for name in sorted(os.listdir(logdir)):
            who = name.split("-")[0].split(".")[0]
            with open(os.path.join(logdir, name), errors="replace") as f:
                for line in f:
                    line = line.rstrip()
                    if not line or " started (pid " in line or \
                            "stats listener=" in line or \
                            "listening on" in line or \
                            "hand-off handler on" in line:
                        continue
                    line = re.sub(r"^\d{4}-\d\d-\d\dT[\d:.]+Z ", "", line)
                    key = (who, re.sub(r"\d+", "N", line))
                    if key not in seen:
                        seen[key] = [line, 0]
                    seen[key][1] += 1
        ng = read_text(os.path.join(self.tmp, "nginx-error.log"))
        for line in ng.splitlines():
            key = ("nginx", re.sub(r"\d+", "N", line))
            seen.setdefault(key, [line, 0])[1] += 1
        return [(who, ex, n) for (who, _), (ex, n) in seen.items()]

    # ------------------------------------------------------------ charts

    def charts(self):
        made = []
        for mode, key, png, title, yaxis in CHARTS:
            if mode not in self.modes:
                continue
            rows = [(gw, self.fig(mode, gw, key)) for gw in self.gateways]
            rows = [(g, v) for g, v in rows if v is not None]
            if not rows:
                continue
            dat = os.path.join(self.tmp, png.replace(".png", ".dat"))
            with open(dat, "w") as f:
                for g, v in rows:
                    f.write(f'"{g}" {v:.6g} "{fmt(v)}" {COLOURS[g]}\n')
            sub = (f"median of {self.meta.get('rounds', '?')} rounds; "
                   f"{self.mode_desc(mode)}")
            vals = dict(rows)
            rat = [f"esockd÷{p} {ratio(vals.get('esockd'), vals.get(p)):.2f}"
                   for p in PEERS if ratio(vals.get("esockd"),
                                           vals.get(p)) is not None]
            if rat:
                sub += "; " + ", ".join(rat)
            out = os.path.join(self.out, png)
            small = max(v for _, v in rows) < 20
            expr = (f"yfmt='{'%.1f' if small else '%.0f'}'; "
                    f"datafile='{dat}'; outfile='{out}'; "
                    f"charttitle='{title}'; yaxis='{yaxis}'; "
                    f"subtitle='{sub}'")
            p = subprocess.run(["gnuplot", "-e", expr, self.plot],
                               capture_output=True, text=True)
            if p.returncode != 0:
                print(f"report.py: gnuplot failed for {png}: {p.stderr}",
                      file=sys.stderr)
                continue
            made.append(png)
        return made

    def mode_desc(self, mode):
        sizes = self.meta.get("sizes", "")
        for part in sizes.split(";"):
            part = part.strip()
            if part.startswith(mode + " "):
                d = part[len(mode) + 1:]
                if not mode.endswith("idle"):
                    d += f" -d {self.meta.get('duration', '?')}"
                return f"{mode} {d}"
        return mode

    # ------------------------------------------------------------ tables

    def ratio_rows(self):
        """(mode, figure title, better, {gw: value}, {peer: ratio})"""
        rows = []
        for mode in self.modes:
            for key, title, unit, higher in FIGURES[mode]:
                if key not in ("conns_per_s", "msgs_per_s", "mb_per_s",
                               "pss_per_conn_kib", "p99_us",
                               "cpu_us_per_conn", "cpu_ms_per_mb",
                               "cpu_us_per_hs"):
                    continue
                if mode.startswith("tls-") and key == "p99_us":
                    continue
                vals = {g: self.fig(mode, g, key) for g in self.gateways}
                ratios = {p: ratio(vals.get("esockd"), vals.get(p))
                          for p in PEERS if p in self.gateways}
                bp, bv = best_peer(vals, higher)
                ratios["best"] = ratio(vals.get("esockd"), bv)
                ratios["best_name"] = bp
                t = title + (f" ({unit})" if unit else "")
                rows.append((mode, t, "higher" if higher else "lower",
                             vals, ratios))
        return rows

    def targets(self):
        """(target, figures, verdict) for each target of the brief."""
        out = []
        for text, mode, key, peer, op, bound, unit in TARGETS:
            ok = mode in self.modes
            if not ok and any(m in self.modes for m in TLS_MODES) != \
                    mode.startswith("tls-"):
                continue    # the other family of modes was not asked for
            a = self.fig(mode, "esockd", key) if ok else None
            if peer == "abs":
                if a is None:
                    out.append((text, "not measured", "not measured"))
                    continue
                met = a <= bound if op == "<=" else a >= bound
                out.append((text, f"esockd {fmt(a)} {unit} (bound "
                            f"{fmt(bound)})",
                            "**met**" if met else "**not met**"))
                continue
            if peer == "best":
                vals = {g: self.fig(mode, g, key) for g in self.gateways}
                peer, b = best_peer(vals, op == ">=")
            else:
                b = self.fig(mode, peer, key) if ok else None
            r = ratio(a, b)
            if a is None or b is None or r is None:
                out.append((text, "not measured", "not measured"))
                continue
            met = r >= bound if op == ">=" else r <= bound
            out.append((text, f"esockd {fmt(a)} vs {fmt(b)} {unit} "
                        f"(esockd÷{peer}): {r:.2f}×",
                        "**met**" if met else "**not met**"))
        return out

    def shape_rows(self):
        """One dict per SHAPES row measured: esockd relay and hand-off,
        the best peer and direct, and the ratios of both modes to them."""
        rows = []
        for mode, key, title, higher, bekey in SHAPES:
            if mode not in self.modes:
                continue
            vals = {g: self.fig(mode, g, key) for g in self.gateways}
            bp, bv = best_peer(vals, higher)
            relay, ho, di = (vals.get("esockd"), vals.get("handoff"),
                             vals.get("direct"))
            rows.append({
                "mode": mode, "key": key, "title": title, "higher": higher,
                "relay": relay, "handoff": ho, "best": bv, "best_name": bp,
                "direct": di,
                "relay_best": ratio(relay, bv), "relay_direct": ratio(relay, di),
                "handoff_best": ratio(ho, bv), "handoff_direct": ratio(ho, di),
                "be_relay": self.fig(mode, "esockd", bekey) if bekey else None,
                "be_handoff": (self.fig(mode, "handoff", bekey)
                               if bekey else None)})
        return rows

    def verdict(self, text, who, a, b, peer, op, bound, unit):
        """(target, figures, verdict) for a ÷ b against bound."""
        r = ratio(a, b)
        if r is None:
            return (text, "not measured", "not measured")
        met = r >= bound if op == ">=" else r <= bound
        return (text, f"{who} {fmt(a)} vs {fmt(b)} {unit} ({who}÷{peer}): "
                f"{r:.2f}×", "**met**" if met else "**not met**")

    def shape_targets(self):
        """The targets of issue 16: hand-off against the best peer and
        direct, relay against the best peer in every shape."""
        out = []
        units = {"cpu_us_per_conn": "µs per connection",
                 "cpu_us_per_msg": "µs per message",
                 "cpu_us_per_mb": "µs per MB"}

        def fig(mode, gw, key):
            return self.fig(mode, gw, key) if mode in self.modes else None

        def best(mode, key, higher):
            return best_peer({g: fig(mode, g, key) for g in self.gateways},
                             higher)

        if "handoff" in self.gateways:
            bp, b = best("rate", "cpu_us_per_conn", False)
            out.append(self.verdict(
                f"hand-off, rate: gateway CPU per connection ≤ "
                f"{HANDOFF_CONN_BOUND}× the best peer's", "hand-off",
                fig("rate", "handoff", "cpu_us_per_conn"), b, bp or "best",
                "<=", HANDOFF_CONN_BOUND, "µs"))
            out.append(self.verdict(
                f"hand-off, rate: connections/s ≥ {HANDOFF_RATE_BOUND}× "
                "direct's", "hand-off", fig("rate", "handoff", "conns_per_s"),
                fig("rate", "direct", "conns_per_s"), "direct", ">=",
                HANDOFF_RATE_BOUND, "conn/s"))
            for mode, key, be, what in (
                    ("echo64", "cpu_us_per_msg", "be_us_per_msg",
                     "message (64 connections, 64 B)"),
                    ("stream", "cpu_us_per_mb", "be_us_per_mb",
                     "MB (8 connections, 64 KiB writes)")):
                a, b = fig(mode, "handoff", key), fig(mode, "handoff", be)
                text = (f"hand-off, {mode}: esockd's share of the CPU per "
                        f"{what} near zero (≤ {NEAR_ZERO:.0%})")
                if a is None or b is None or a + b <= 0:
                    out.append((text, "not measured", "not measured"))
                    continue
                share = a / (a + b)
                out.append((text, f"esockd {fmt(a)} µs, hand-off backend "
                            f"{fmt(b)} µs: esockd's share {share:.1%}",
                            "**met**" if share <= NEAR_ZERO else
                            "**not met**"))
        if "esockd" in self.gateways:
            for mode, key, title, higher, _ in SHAPES:
                if key not in CPU_KEYS or mode not in self.modes:
                    continue
                bp, b = best(mode, key, higher)
                out.append(self.verdict(
                    f"relay, {mode}: CPU per unit ≤ {RELAY_BOUND}× the best "
                    "peer's", "esockd", fig(mode, "esockd", key), b,
                    bp or "best", "<=", RELAY_BOUND, units[key]))
        return out

    def shapes_markdown(self):
        """The summary table of issue 16."""
        rows = self.shape_rows()
        if not rows:
            return []
        ho = "handoff" in self.gateways
        L = ["## esockd ÷ best peer and ÷ direct", "",
             "Per shape, esockd relaying (`mode = \"relay\"`) and handing "
             "off (`mode = \"handoff\"`, in front of "
             "`esockd-bench-echo -H`), against the best of HAProxy and "
             "nginx and against the load generator hitting the TCP echo "
             "server with no gateway (`direct`, the floor: its \"gateway "
             "CPU\" is the echo server's). Gateway CPU is esockd's master "
             "and workers in both modes; the backend's CPU per unit is in "
             "the last column (relay / hand-off): in hand-off mode the "
             "backend does the echo itself. Lower is better except for "
             f"connections/s. A relay CPU ratio above {RELAY_BOUND} to the "
             "best peer is flagged ⚠. Medians of "
             f"{self.meta.get('rounds', '?')} rounds.", "",
             "| shape | esockd relay | esockd hand-off | best peer | direct "
             "| relay ÷ best peer | relay ÷ direct | hand-off ÷ best peer | "
             "hand-off ÷ direct | backend per unit (relay / hand-off) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            rb = fratio(r["relay_best"])
            if r["key"] in CPU_KEYS and r["relay_best"] is not None and \
                    r["relay_best"] > RELAY_BOUND:
                rb = f"**{rb}** ⚠"
            bn = f" ({r['best_name']})" if r["best_name"] else ""
            be = "–"
            if r["be_relay"] is not None or r["be_handoff"] is not None:
                be = f"{fmt(r['be_relay'])} / {fmt(r['be_handoff'])}"
            L.append(f"| {r['title']} | {fmt(r['relay'])} | "
                     f"{fmt(r['handoff']) if ho else '–'} | "
                     f"{fmt(r['best'])}{bn} | {fmt(r['direct'])} | {rb} | "
                     f"{fratio(r['relay_direct'])} | "
                     f"{fratio(r['handoff_best'])} | "
                     f"{fratio(r['handoff_direct'])} | {be} |")
        L.append("")
        return L

    # ------------------------------------------------------------ output

    def console(self):
        """The ratio table, for the terminal."""
        lines = ["", "esockd ÷ peer (median of %s rounds)" %
                 self.meta.get("rounds", "?")]
        hdr = f"{'mode':10} {'figure':36} {'better':6} {'esockd':>11}"
        for p in PEERS:
            if p in self.gateways:
                hdr += f" {p:>9} {'÷' + p:>9}"
        hdr += f" {'÷best peer':>18}"
        lines.append(hdr)
        for mode, title, better, vals, ratios in self.ratio_rows():
            s = f"{mode:10} {title[:36]:36} {better:6} " \
                f"{fmt(vals.get('esockd')):>11}"
            for p in PEERS:
                if p in self.gateways:
                    s += f" {fmt(vals.get(p)):>9} {fratio(ratios.get(p)):>9}"
            s += f" {fratio(ratios.get('best')):>7} " \
                f"({ratios.get('best_name') or '–'})"
            lines.append(s)
        lines.append("")
        rows = self.shape_rows()
        if rows:
            lines.append("esockd ÷ best peer and ÷ direct (relay | hand-off)")
            for r in rows:
                lines.append(
                    f"{r['title'][:58]:58} relay {fmt(r['relay']):>9} "
                    f"{fratio(r['relay_best']):>7} {fratio(r['relay_direct']):>7}"
                    f" | hand-off {fmt(r['handoff']):>9} "
                    f"{fratio(r['handoff_best']):>7} "
                    f"{fratio(r['handoff_direct']):>7}")
            lines.append("")
        for text, figures, verdict in self.targets() + self.shape_targets():
            lines.append(f"{verdict.strip('*'):13} {text}: {figures}")
        big = self.big_figures()
        if big:
            lines.append("")
            lines.append(f"100k: {big['summary']}")
        for row in read_tsv(os.path.join(self.tmp, "sysctl.tsv")):
            row = (row + ["", "", "", ""])[:4]
            lines.append(f"sysctl {row[0]}: {row[1]} -> {row[2]}: {row[3]}")
        for w in self.warnings:
            lines.append("warning: " + w)
        return "\n".join(lines)

    def big_figures(self):
        if not self.big:
            return None
        b = self.big[-1]
        runs = [r for r in self.runs if r.get("gw") == "esockd-big"]
        r = runs[-1] if runs else {}
        want = int(num(b.get("clients")) or 0)
        est = num(r.get("established"))
        held, base = num(r.get("pss_held_kb")), num(r.get("pss_base_kb"))
        per = num(r.get("pss_per_conn_kib"))
        if est is None:
            summary = "no result"
        else:
            summary = (f"{fmt(est)} of {fmt(want)} established; esockd PSS "
                       f"{fmt(held / 1024 if held else None)} MiB while "
                       f"holding ({fmt(per)} KiB per connection)")
        return {"b": b, "r": r, "want": want, "est": est, "held": held,
                "base": base, "per": per, "summary": summary}

    def markdown(self, charts):
        m, L = self.meta, []
        L += ["# esockd benchmark results", "",
              "Written by `bench/run.sh` (via `bench/report.py`); do not edit "
              "by hand. Rerun with `make bench`.", "",
              "## Run", "",
              "| | |", "|---|---|",
              f"| date | {m.get('date', '?')} |",
              f"| commit | `{m.get('commit', '?')}` |",
              f"| machine | {m.get('nproc', '?')} CPUs ({m.get('cpu', '?')}), "
              f"{m.get('memory', '?')}, {m.get('kernel', '?')}, "
              f"open files hard limit {m.get('nofile', '?')} |",
              f"| HAProxy | {m.get('haproxy', '?')} |",
              f"| nginx | {m.get('nginx', '?')} |",
              f"| stunnel | {m.get('stunnel', '?')} |",
              f"| OpenSSL | {m.get('openssl', '?')} |",
              f"| command | `{m.get('flags', '?')}` |",
              f"| rounds | {m.get('rounds', '?')}, gateways alternating "
              f"({', '.join(self.gateways)}) in every mode, the order "
              "rotated each round; the figure is the median |",
              f"| per run | {m.get('warmup', '?')} s warm-up, then "
              f"{m.get('duration', '?')} s measured |",
              f"| sizes | {m.get('sizes', '?')} |",
              f"| backend | `{m.get('backend', '?')}` |",
              f"| hand-off backend | `{m.get('handoff_backend') or '–'}` |",
              "| machine quiet? | " + self.quiet_text() + " |", ""]
        L += ["Everything runs on this one machine: the load generator, the "
              "gateway (2 workers or threads), and the echo backend share "
              f"its {m.get('nproc', '?')} CPUs, so the figures measure how "
              "much work each gateway needs per connection, message and "
              "byte as much as its raw speed. `direct` is the load "
              "generator talking to a 2-thread TCP echo server with no "
              "gateway: the ceiling. `handoff` is esockd with `mode = "
              "\"handoff\"`: it passes each client's socket to the "
              "hand-off echo backend and leaves the data path.", ""]
        L += self.shapes_markdown()

        # summary
        L += ["## esockd ÷ peer", "",
              "The median figure of each gateway and esockd's ratio to it. "
              "For figures where lower is better, a ratio below 1 is good "
              "for esockd.", ""]
        hdr = "| mode | figure | better | esockd |"
        sep = "|---|---|---|---:|"
        for p in PEERS:
            if p in self.gateways:
                hdr += f" {p} | esockd÷{p} |"
                sep += "---:|---:|"
        hdr += " esockd÷best peer |"
        sep += "---:|"
        L += [hdr, sep]
        for mode, title, better, vals, ratios in self.ratio_rows():
            s = f"| {mode} | {title} | {better} | {fmt(vals.get('esockd'))} |"
            for p in PEERS:
                if p in self.gateways:
                    s += f" {fmt(vals.get(p))} | {fratio(ratios.get(p))} |"
            bn = ratios.get("best_name")
            s += f" {fratio(ratios.get('best'))}" + \
                (f" ({bn})" if bn else "") + " |"
            L.append(s)
        L.append("")
        if any(m.startswith("tls-") for m in self.modes) and \
                "--quick" in self.meta.get("flags", ""):
            L += ["**Smoke run (`--quick`):** the TLS rows above come from "
                  "seconds-long runs, possibly on a busy machine; they show "
                  "that the TLS modes work, they are not final figures.",
                  ""]

        L += ["## Targets", "", "| target | figures | verdict |",
              "|---|---|---|"]
        for text, figures, verdict in self.targets() + self.shape_targets():
            L.append(f"| {text} | {figures} | {verdict} |")
        L.append("")

        if charts:
            L += ["## Charts", ""]
            for c in charts:
                L.append(f"![{c}]({c})")
            L.append("")

        # per mode
        desc = {
            "rate": "Each client loops: connect, send 64 bytes, read their "
                    "echo, close (the client closes first), as fast as it "
                    "can; sources are spread over several 127.0.0.x "
                    "addresses. Connections/s counts the cycles completed in "
                    "the measured window; the latency is one cycle, from "
                    "connect() to the last byte of the echo.",
            "echo": "Every client keeps one connection, sends a message, "
                    "waits for its whole echo, and repeats. The latency is "
                    "one message's round trip.",
            "latency": "One client keeps one connection and ping-pongs "
                       "64-byte messages: the round trip p50 and p99 of a "
                       "single connection, with nothing else queued.",
            "stream": "Every client writes chunks (64 KiB) as fast as its "
                      "socket takes them and reads the echo back. MB/s "
                      "counts both directions (bytes sent + bytes received "
                      "in the measured window), and so does CPU per MB.",
            "idle": "The clients open their connections, check each with one "
                    "16-byte round trip, and hold them without traffic. PSS "
                    "is the sum of the `Pss:` line of "
                    "`/proc/PID/smaps_rollup` over the gateway's processes: "
                    "before (after one check echo) and the highest of the "
                    "samples taken while the load generator holds (after it "
                    "printed HOLDING). Per connection = (while holding − "
                    "before) ÷ established. Kernel socket memory is not in "
                    "PSS: this is the gateway's own memory.",
        }
        hs = ("Each client loops: connect, TLS handshake, one 64-byte "
              "echo, close_notify and close (`esockd-bench-tls hs`). "
              "Handshakes/s counts the loops completed in the measured "
              "window; the gateway's CPU per handshake includes the TCP "
              "accept, the backend connect and the relayed echo, which "
              "cost about what one rate-mode connection costs.")
        desc.update({
            "tls-rsa": hs + " Full handshakes with an RSA-2048 certificate: "
                       "the client keeps no session and sends no ticket "
                       "extension (`SSL_OP_NO_TICKET`); a TLS 1.3 server "
                       "still sends its NewSessionTicket messages, which "
                       "every gateway pays alike.",
            "tls-ecdsa": hs + " Full handshakes as in tls-rsa, with an "
                         "ECDSA P-256 certificate.",
            "tls-resume": hs + " Resumed handshakes (`-r`): each client "
                          "keeps the session (TLS 1.3 ticket) of its last "
                          "connection and offers it on the next; "
                          "\"resumed\" is the share the gateway accepted. "
                          "ECDSA P-256 certificate.",
            "tls-stream": "A few clients each write 64 KiB `SSL_write`s "
                          "through TLS (ECDSA P-256) and read the echo "
                          "back, with at most 1 MiB outstanding. MB/s "
                          "counts both directions of plaintext, and so "
                          "does CPU per MB (the gateway decrypts one "
                          "direction and encrypts the other).",
            "tls-idle": "As idle, through TLS (ECDSA P-256): each "
                        "connection does its handshake and one 64-byte "
                        "echo, then is held without traffic; PSS per "
                        "connection as in idle.",
        })
        for mode, base, size in (("echo64", "echo", "64-byte"),
                                 ("echo1k", "echo", "1 KiB"),
                                 ("echo16k", "echo", "16 KiB"),
                                 ("stream4k", "stream", "4 KiB"),
                                 ("stream16k", "stream", "16 KiB"),
                                 ("stream1m", "stream", "1 MiB")):
            desc[mode] = desc[base] + f" Here: {size} " + (
                "messages on each of 64 connections." if base == "echo"
                else "chunks on each of 8 connections.")
        for mode in self.modes:
            L += [f"## {mode}", "", desc[mode], "",
                  f"Load generator: `{self.lg_cmd(mode)}`", ""]
            figs = FIGURES[mode]
            L.append("| gateway | " + " | ".join(
                t + (f" ({u})" if u else "") for _, t, u, _ in figs) +
                " | backend CPU (max) | other processes' and guests' CPU (max) | runs |")
            L.append("|---|" + "---:|" * (len(figs) + 3))
            for gw in self.gateways:
                row = [fmt(self.fig(mode, gw, k)) for k, *_ in figs]
                bu = self.fig(mode, gw, "backend_cpu_util")
                if gw == "direct":
                    bu = None   # no Unix backend: the echo server is hit
                oc = self.fig(mode, gw, "other_cpu_util")
                L.append(f"| {gw} | " + " | ".join(row) +
                         f" | {'–' if bu is None else f'{bu:.0%}'} | "
                         f"{'–' if oc is None else f'{oc:.2f} cores'} | "
                         f"{self.fig(mode, gw, 'rounds')} |")
            L.append("")
            if not mode.endswith("idle"):
                L += self.balance(mode)
                busy = [(gw, self.fig(mode, gw, "backend_cpu_util"))
                        for gw in self.gateways
                        if gw not in ("direct", "handoff")]
                busy = [(g, u) for g, u in busy if u is not None and
                        u > BACKEND_BUSY]
                if busy:
                    L += ["**Warning:** the echo backend used more than "
                          f"{BACKEND_BUSY:.0%} of one core during "
                          + ", ".join(f"{g} ({u:.0%})" for g, u in busy)
                          + ": there it may be the bottleneck, not the "
                          "gateway.", ""]
                else:
                    L += [f"The echo backend stayed below {BACKEND_BUSY:.0%} "
                          "of one core in every run of this mode (the "
                          "hand-off backend, which does the echo itself, "
                          "aside).", ""]

        # 100k
        big = self.big_figures()
        if big is not None or read_tsv(os.path.join(self.tmp, "sysctl.tsv")):
            L += self.big_markdown(big)

        # logs and warnings
        L += ["## Anything that looked wrong", ""]
        if self.warnings:
            L += ["- " + w for w in self.warnings]
        else:
            L.append("Nothing: no errors, no missing results, no busy "
                     "backend, no gateway process lost.")
        L.append("")
        logs = self.gateway_logs()
        L += ["### What the processes logged", ""]
        if logs:
            L += ["Distinct lines (numbers folded), with how often:", "",
                  "| process | line | times |", "|---|---|---:|"]
            for who, ex, n in logs[:40]:
                ex = ex.replace("|", "\\|")
                if len(ex) > 300:
                    ex = ex[:300] + "…"
                L.append(f"| {who} | `{ex}` | {n} |")
        else:
            L.append("Nothing.")
        L.append("")

        # every run, for the spread behind the medians
        if self.runs:
            L += ["## Every run", "",
                  "In the order they ran, rounds alternating over the "
                  "gateways, the order rotated each round. The headline "
                  "figure is connections/s (rate), messages/s (echo), MB/s "
                  "(stream) or KiB PSS per connection (idle).", "",
                  "| mode | gateway | round | headline | p99 (µs) | gateway "
                  "CPU (cores) | backend CPU | others' CPU (cores) | errors "
                  "| exit |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"
                  "---:|"]
            for r in self.runs:
                mode = r.get("mode")
                key = HEADLINE.get(mode)
                bu, oc = r.get("backend_cpu_util"), r.get("other_cpu_util")
                gwu = r.get("gw_cpu_util")
                if r.get("gw") == "direct":
                    bu = None   # no Unix backend behind the echo server
                L.append(
                    f"| {mode} | {r.get('gw')} | {r.get('round')} | "
                    f"{fmt(num(r.get(key)) if key in r else None)} | "
                    f"{fmt(num(r.get('p99_us')))} | "
                    f"{'–' if gwu is None else f'{gwu:.2f}'} | "
                    f"{'–' if bu is None else f'{bu:.0%}'} | "
                    f"{'–' if oc is None else f'{oc:.2f}'} | "
                    f"{fmt(num(r.get('errors')))} | {r.get('lg_rc', '?')} |")
            L.append("")

        # fairness
        L += ["## Configuration choices", "",
              "- All three gateways: 2 workers or threads, listen backlog "
              "4096, no per-connection logging, connect timeout 5 s, no "
              "idle timeout that could fire during a run, the same backend "
              "socket.",
              "- `handoff` is the same esockd configuration with "
              "`mode = \"handoff\"` in its backend group, in front of "
              "`esockd-bench-echo -H` (2 threads, like the relay backend): "
              "each worker keeps one channel to it, and the backend echoes "
              "on the clients itself and reports each close (`closed ID`). "
              "Its gateway CPU is esockd's master and workers, as for "
              "relay; the backend's CPU per unit is reported beside it.",
              "- HAProxy's `maxconn` is 9,900, not 100,000: HAProxy refuses "
              "to start when `maxconn` does not fit the descriptor limit "
              "(2 per connection + ~17), and every process here is capped "
              "at 20,000 open files. 9,900 is above the 8,000 connections "
              "of the idle test, so it never limits a run.",
              "- Every client here speaks first, so esockd runs with "
              "`defer_accept = 1` and HAProxy with `defer-accept` on its "
              "bind line: the same `TCP_DEFER_ACCEPT`. nginx's stream "
              "`listen` has no such parameter (its `deferred` is for http "
              "only), so nginx runs without it.",
              "- nginx keeps its default `multi_accept off` and "
              "`accept_mutex off`, as operators run it; `user root` only "
              "lets its workers reach the backend socket in the private "
              "temporary directory.",
              "- TLS modes: every gateway terminates TLS with the same "
              "self-signed certificate (RSA-2048 for tls-rsa, ECDSA P-256 "
              "otherwise, made with the openssl CLI for each run) and its "
              "defaults otherwise (TLS 1.3, session tickets on), except "
              "that nginx is given `ssl_protocols TLSv1.2 TLSv1.3`: "
              "nginx 1.22 leaves TLS 1.3 off by default (on since "
              "1.23.4), and its TLS 1.2 handshakes and resumptions (no "
              "key exchange on resumption) are other, cheaper work. The "
              "\"TLS 1.3\" row of each mode shows the share each gateway "
              "negotiated. stunnel "
              "has no worker or thread count (it runs a thread per "
              "connection in one process), so it is pinned to CPUs 0 and "
              "1 with `taskset`; with `debug = 0`, `syslog = no` it logs "
              "nothing. `direct` has no TLS and runs no TLS mode; stunnel "
              "runs only those.",
              "- esockd logs at `warn`; its start-up warning that "
              "`max_connections = 100000` needs more descriptors than "
              "`max_open_files = 20000` is expected with these settings and "
              "harmless here (no run comes near the budget except the "
              "100k test, which is built around it).",
              ""]
        # method
        L += ["## How it was measured", "",
              "- Each run starts a fresh gateway on a free 127.0.0.1 port, "
              "checks that one message echoes through it, runs the load "
              "generator once, and stops the gateway.",
              "- CPU is utime+stime from `/proc/PID/stat` (÷ `getconf "
              "CLK_TCK`) summed over the gateway's processes (master and "
              "workers; HAProxy's one process with its threads), read right "
              "before and right after the load generator runs. The per-unit "
              "costs divide the mean CPU use over that window (CPU s ÷ wall "
              "s) by the measured rate, so warm-up and set-up are not charged "
              "to the measured connections. The backend's CPU is read the "
              "same way.",
              "- Memory is PSS (`/proc/PID/smaps_rollup`), which shares "
              "pages of a forked master and its workers fairly instead of "
              "counting them in each.",
              "", "### Command lines", ""]
        for gw in self.gateways + [g + "-tls" for g in self.gateways] + \
                ["big"]:
            cmd = read_text(os.path.join(self.tmp, f"cmd.{gw}"))
            if cmd:
                L.append(f"- {gw}: `{cmd}`")
        L.append(f"- backend: `{m.get('backend', '?')}`")
        L.append("")
        L += ["### Configurations", ""]
        for name, lang in (("esockd.conf", ""), ("esockd-handoff.conf", ""),
                           ("haproxy.cfg", ""),
                           ("nginx.conf", "nginx"), ("esockd-big.conf", ""),
                           ("esockd-tls.conf", ""), ("haproxy-tls.cfg", ""),
                           ("nginx-tls.conf", "nginx"), ("stunnel.conf", "")):
            text = read_text(os.path.join(self.tmp, name))
            if text:
                L += [f"`{name}` (the port and directory change every run):",
                      "", "```" + lang, text, "```", ""]
        text = "\n".join(L) + "\n"
        # the temporary directory is gone after the run: name it as such
        return text.replace(self.tmp.rstrip("/"), "$TMP")

    def balance(self, mode):
        """Per-process CPU (cores) and descriptors mid-run, per run."""
        L = []
        for gw in self.gateways:
            parts = []
            for r in self.of(mode, gw):
                split = r.get("gw_cpu_split", "")
                wall = num(r.get("wall_s"))
                tck = num(r.get("clk_tck")) or 100.0
                if "/" not in split or not wall:
                    continue
                cores = "/".join(f"{int(t) / tck / wall:.2f}"
                                 for t in split.split("/"))
                parts.append(f"round {r.get('round')}: CPU {cores} cores, "
                             f"descriptors {r.get('gw_fds_mid', '?')}")
            if parts:
                L.append(f"- {gw} (master first): " + "; ".join(parts))
        if L:
            L = ["How the work was spread over each gateway's processes "
                 "(CPU over the run; open descriptors halfway through the "
                 "measured window):", ""] + L + [""]
        return L

    def quiet_text(self):
        if self.preflight is None:
            return "not checked"
        cores, top = self.preflight
        busiest = max((r.get("other_cpu_util") or 0 for r in self.runs),
                      default=0)
        t = (f"other processes used {cores:.2f} cores in the second before "
             f"the first run" + (f" ({top})" if cores > 0.01 and top else "")
             + f"; at most {busiest:.2f} cores during a measured run")
        return t + (" — see the warnings below" if max(cores, busiest) >
                    OTHER_BUSY else "")

    def lg_cmd(self, mode):
        runs = os.path.join(self.tmp, "runs")
        for gw in self.gateways:
            c = read_text(os.path.join(runs, f"{gw}-{mode}-r1.cmd"))
            if c:
                return re.sub(r"-t 127\.0\.0\.1:\d+", "-t 127.0.0.1:PORT", c)
        return "?"

    def big_markdown(self, big):
        L = ["## 100,000 connections (esockd only)", ""]
        if big is None:
            L += ["Not run (`--no-big`).", ""]
        else:
            b, r = big["b"], big["r"]
            L += [f"esockd with {b.get('workers')} workers "
                  "(`max_open_files = 20000` each), "
                  f"{b.get('backends')} echo backends on as many Unix "
                  "sockets (round-robin), the load generator "
                  f"`{read_text(os.path.join(self.tmp, 'runs', 'big.cmd'))}`"
                  ".", "",
                  "| figure | value |", "|---|---:|",
                  f"| connections asked for | {fmt(big['want'])} |",
                  f"| established (load generator) | {fmt(big['est'])} |",
                  f"| failed | {fmt(num(r.get('failed')))} |",
                  f"| time to establish | {fmt(num(r.get('establish_s')))} s |",
                  f"| esockd PSS before | "
                  f"{fmt(big['base'] / 1024 if big['base'] else None)} MiB |",
                  f"| esockd PSS while holding | "
                  f"{fmt(big['held'] / 1024 if big['held'] else None)} MiB |",
                  f"| PSS per connection | {fmt(big['per'])} KiB |",
                  f"| esockd descriptors while holding | "
                  f"{fmt(num(r.get('gw_fds_held')))} |", ""]
            stats = read_text(os.path.join(self.tmp, "big-stats.txt"))
            fds = read_text(os.path.join(self.tmp, "big-fds.txt"))
            if stats:
                L += ["esockd's own count while holding (SIGUSR1):", "",
                      "```", stats, "```", ""]
            if fds:
                L += ["Descriptors per worker while holding: " +
                      ", ".join(fds.split()) + ".", ""]
            reached = big["est"] is not None and big["est"] >= big["want"]
            if reached:
                L += [f"**Reached**: all {fmt(big['want'])} connections were "
                      "established and held.", ""]
            else:
                L += [f"**Not reached**: {fmt(big['est'])} of "
                      f"{fmt(big['want'])}. What the load generator said "
                      f"(exit {r.get('lg_rc', '?')}; result: "
                      + ", ".join(f"{k}={v}" for k, v in r.items()
                                  if k.startswith("err") or k in
                                  ("failed", "established", "result"))
                      + "):", "", "```",
                      read_text(os.path.join(self.tmp, "big-lg-tail.txt"),
                                "(nothing)"), "```", "",
                      "esockd's log (last lines):", "", "```",
                      read_text(os.path.join(self.tmp, "big-log-tail.txt"),
                                "(nothing)"), "```", ""]
        rows = read_tsv(os.path.join(self.tmp, "sysctl.tsv"))
        if rows:
            L += ["### System limits (sysctl -w before the 100k test; put "
                  "back afterwards)", "",
                  "| key | before | after | outcome |", "|---|---|---|---|"]
            for row in rows:
                row = (row + ["", "", "", ""])[:4]
                L.append("| " + " | ".join(c.replace("|", "\\|")
                                           for c in row) + " |")
            L.append("")
        return L


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out")
    ap.add_argument("--other-cpu", metavar="TAG",
                    help="only print the cores other processes took during "
                         "run TAG (run.sh uses it to repeat a disturbed run)")
    ap.add_argument("--plot", default=os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "plot.gp"))
    a = ap.parse_args()
    if a.other_cpu:
        for kind, r in reversed(read_records(os.path.join(a.tmp,
                                                          "results.txt"))):
            if r.get("tag") == a.other_cpu:
                v = other_cpu(a.tmp, r)
                print("unknown" if v is None else
                      f"{v:.3f} {r.get('other_top', '')}")
                return 0
        print("unknown")
        return 0
    if not a.out:
        ap.error("--out is required")
    rep = Report(a.tmp, a.out, a.plot)
    if not rep.runs and not rep.big:
        print("report.py: no records in " + a.tmp, file=sys.stderr)
        return 1
    rep.check_runs()
    os.makedirs(a.out, exist_ok=True)
    charts = rep.charts()
    path = os.path.join(a.out, "RESULTS.md")
    with open(path, "w") as f:
        f.write(rep.markdown(charts))
    print(rep.console())
    print(f"\nwrote {path}" + (f" and {', '.join(charts)}" if charts else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
