"""What the torture scenarios share: how long a run is (the short form in
`make check`, the long one in `make torture`), and the figures each
scenario records for RESULTS.md (report.py writes it).

A scenario calls record("1 workers killed", connections=500, ...) once
it has checked its invariants; the figures go, one JSON line each, to
$TORTURE_RESULTS when it is set (make torture sets it), tagged with the
build ($TORTURE_BUILD: plain or asan) and whether the run was long.
"""
import json
import os
import time


def is_long(request):
    """True under --long (make torture)."""
    return bool(request.config.getoption("--long"))


def scale(request, short, long):
    """short in make check, long in make torture."""
    return long if is_long(request) else short


def record(request, scenario, **figures):
    """Keep one scenario's figures for RESULTS.md (no-op outside make torture)."""
    path = os.environ.get("TORTURE_RESULTS")
    if not path:
        return
    line = {"scenario": scenario, "build": os.environ.get("TORTURE_BUILD", "plain"),
            "long": is_long(request), "time": time.strftime("%Y-%m-%d %H:%M:%S"),
            "figures": figures}
    with open(path, "a") as f:
        f.write(json.dumps(line, sort_keys=True) + "\n")
