"""Write tests/torture/RESULTS.md from the JSON lines of a `make torture`
run (torture.record): one table per scenario, a column per build.

usage: report.py RESULTS.jsonl COMMIT [NOTE] > RESULTS.md

NOTE, when given, is printed under the run's table: how the run differed
from a plain `make torture` (scenarios run apart, a shorter long run).
"""
import json
import sys
import time


def main(path, commit, note=None):
    runs = [json.loads(l) for l in open(path) if l.strip()]
    builds = sorted({r["build"] for r in runs}, key=lambda b: (b != "plain", b))
    scenarios = []
    for r in runs:
        if r["scenario"] not in scenarios:
            scenarios.append(r["scenario"])
    out = ["# esockd torture results", "",
           "Written by `make torture` (tests/torture/report.py); do not edit by hand.", "",
           "| | |", "|---|---|",
           "| commit | `%s` |" % commit,
           "| written | %s UTC |" % time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
           "| builds | %s |" % ", ".join(builds), ""]
    if note:
        out += [note, ""]
    for sc in sorted(scenarios, key=lambda s: (int(s.split()[0]) if s.split()[0].isdigit() else 99, s)):
        rows = {}
        for r in runs:
            if r["scenario"] != sc:
                continue
            for k, v in r["figures"].items():
                rows.setdefault(k, {})[r["build"]] = v
        out += ["## " + sc, "", "| figure | " + " | ".join(builds) + " |",
                "|---|" + "---:|" * len(builds)]
        for k, by in rows.items():
            out.append("| %s | %s |" % (k, " | ".join(fmt(by.get(b)) for b in builds)))
        out.append("")
    sys.stdout.write("\n".join(out))


def fmt(v):
    if v is None:
        return "–"
    if isinstance(v, float):
        return "%.3g" % v if abs(v) < 1000 else "{:,.0f}".format(v)
    if isinstance(v, int):
        return "{:,}".format(v)
    return str(v)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "unknown",
         sys.argv[3] if len(sys.argv) > 3 else None)
