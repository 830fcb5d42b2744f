#!/usr/bin/env python3
"""Summarize the memcheck logs of `make valgrind` (one per pid, %p.log).

For each pid: its command, its memcheck errors and its definitely lost
bytes; then every distinct finding once (its kind and the first stack
seen, with the pids that had it).  Exit status 1 if any process had an
error that no suppression covers (with --errors-for-leak-kinds=definite a
definite leak is an error), 0 otherwise.  Logs cut short (a process
SIGKILLed before valgrind's summary) are listed, and their findings so far
still count.

usage: summarize.py DIR
"""

import os
import re
import sys

PREFIX_RE = re.compile(r"^==(\d+)== ?(.*)$")
ERRSUM_RE = re.compile(r"ERROR SUMMARY: (\d+) errors? from (\d+) contexts? "
                       r"\(suppressed: (\d+) from (\d+)\)")
# Not a finding: a process ended by a signal (the tests' SIGTERM, SIGKILL).
SIGNALLED_RE = re.compile(r"Process terminating with default action of signal \d+ \((\w+)\)")
DEFLOST_RE = re.compile(r"definitely lost: ([\d,]+) bytes in ([\d,]+) blocks")
FRAME_RE = re.compile(r"^\s+(?:at|by) 0x[0-9A-F]+: (.*)$")
# Headlines of findings; anything else in a block is valgrind's chatter.
FINDING_RE = re.compile(
    r"^(Invalid (?:read|write|free|free\(\) / delete / delete\[\] / realloc\(\))"
    r"|Conditional jump|Use of uninitialised|Syscall param|Mismatched free"
    r"|Source and destination overlap|Argument .* of function"
    r"|.* bytes in .* blocks are (?:definitely|possibly) lost"
    r"|Jump to the invalid address|Invalid .*|Memory leak)")


def parse(path):
    """(pid, command, blocks, summary) of one log: blocks are lists of
    lines (the headline first); summary is the ERROR SUMMARY match or None."""
    pid, command, blocks, cur, summary, deflost = None, "", [], [], None, 0
    signalled = None
    with open(path, errors="replace") as f:
        for raw in f:
            m = PREFIX_RE.match(raw.rstrip("\n"))
            if not m:
                continue
            pid, text = int(m.group(1)), m.group(2)
            if text.startswith("Command: "):
                command = text[len("Command: "):]
            s = ERRSUM_RE.search(text)
            if s:
                summary = s
            g = SIGNALLED_RE.search(text)
            if g:
                signalled = g.group(1)
            d = DEFLOST_RE.search(text)
            if d:
                deflost = int(d.group(1).replace(",", ""))
            if text.strip() == "":
                if cur:
                    blocks.append(cur)
                cur = []
            else:
                cur.append(text)
    if cur:
        blocks.append(cur)
    findings = [b for b in blocks if FINDING_RE.match(b[0])
                and any(FRAME_RE.match(l) for l in b[1:])]
    return pid, command, findings, summary, deflost, signalled


def key_of(block):
    """What makes two findings the same: the kind without its sizes, and
    the functions of the first stack."""
    kind = re.sub(r"[\d,]+", "N", block[0])
    kind = re.sub(r" in loss record N of N", "", kind)
    fns = []
    for l in block[1:]:
        m = FRAME_RE.match(l)
        if not m:
            break           # only the first stack ("Address ... was" after)
        fns.append(re.sub(r"\s*\(.*\)$", "", m.group(1)))
    return kind.strip(), tuple(fns[:8])


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    logs = sorted((f for f in os.listdir(d) if f.endswith(".log")),
                  key=lambda f: int(f.split(".")[0]) if f.split(".")[0].isdigit() else 0)
    if not logs:
        print("valgrind: no logs in %s: did any esockd run?" % d)
        return 1
    distinct = {}
    failed, cut, clean, signalled = [], [], 0, {}
    print("valgrind: %d processes (logs in %s)" % (len(logs), d))
    for name in logs:
        pid, cmd, findings, summary, deflost, sig = parse(os.path.join(d, name))
        if sig:
            signalled[sig] = signalled.get(sig, 0) + 1
        errors = int(summary.group(1)) if summary else None
        real = [b for b in findings if "possibly lost" not in b[0]]
        for b in findings:
            k = key_of(b)
            e = distinct.setdefault(k, {"block": b, "pids": []})
            if pid not in e["pids"]:
                e["pids"].append(pid)
        if summary is None:
            cut.append(name)
        if errors or (summary is None and real):
            failed.append(pid)
            print("  pid %s: %s errors, %d bytes definitely lost%s  [%s]" % (
                pid, errors if errors is not None else "%d+" % len(real), deflost,
                "" if summary else " (log cut short)", cmd))
        else:
            clean += 1
    print("  %d processes with no error%s" % (clean, "" if not cut else
          "; %d logs cut short (SIGKILLed before the summary): %s"
          % (len(cut), " ".join(cut[:10]) + (" ..." if len(cut) > 10 else ""))))
    if signalled:
        print("  ended by a signal's default action (not a finding: the tests' "
              "signals, some before a new worker's handlers were set): %s"
              % ", ".join("%s %d" % kv for kv in sorted(signalled.items())))
    for (kind, _), e in sorted(distinct.items(), key=lambda kv: -len(kv[1]["pids"])):
        pids = e["pids"]
        print("\n== %s  (%d process%s: %s)" % (kind, len(pids), "" if len(pids) == 1 else "es",
              " ".join(map(str, pids[:8])) + (" ..." if len(pids) > 8 else "")))
        for l in e["block"]:
            print("   " + l)
    if failed:
        print("\nvalgrind: FAILED: memcheck errors or definite leaks in %d process%s"
              % (len(failed), "" if len(failed) == 1 else "es"))
        return 1
    print("\nvalgrind: no memcheck error and no definite leak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
