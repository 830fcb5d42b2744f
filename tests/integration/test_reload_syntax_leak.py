"""A storm of reloads on a file with a syntax error does not grow the master.

libconfig 1.5 leaks the string token its parser stopped on at a syntax
error (the look-ahead is dropped without being freed): as many bytes as the
string, rounded up to its 64-byte buffer, plus malloc's header; 80 bytes
for `socket "/run/esockd/echo.sock";` (a forgotten '='), 64 KiB for a 64 KiB
string.  Without a containment every SIGHUP on such a file would keep them
in the master for good.  The master reads the file in a short-lived child
first (master.c: syntax_check), which refuses the reload with libconfig's
message and takes the leak with it when it exits.
"""

import os
import re

from esockd_helpers import free_port, render_config, skip_under_valgrind

N = 200
# The token the parser stops on: large enough that the leak, if any,
# shows in the master's RSS above its noise (200 x 64 KiB = 12.8 MiB).
TOKEN = 64 * 1024
# What 200 failed reloads may grow the master by: well under the 12.8 MiB
# the leak would cost, and above the allocator's and the log's noise.
BOUND = 1 << 20


def rss(pid):
    """The master's resident set in bytes (/proc/PID/smaps_rollup)."""
    with open("/proc/%d/smaps_rollup" % pid) as f:
        m = re.search(r"^Rss:\s+(\d+) kB", f.read(), re.M)
    return int(m.group(1)) * 1024


@skip_under_valgrind("the process's size under valgrind is valgrind's own "
                     "(its shadow memory), not esockd's")
def test_failed_reloads_do_not_grow_the_master(esockd):
    backend = esockd.echo_handler()
    lst = {"name": "echo", "bind": "127.0.0.1:%d" % free_port(),
           "backend": {"socket": backend, "connect_timeout": 1000}}
    d = esockd.start(listeners=[lst])
    good = d.conf_path.read_text()
    # The error: a name, then a string (the '=' forgotten) on the last line.
    bad = good + 'socket "%s";\n' % ("x" * TOKEN)
    line = bad.count("\n")
    d.rewrite(text=bad)

    def storm(n):
        for _ in range(n):
            ok, errors = d.reload()
            assert not ok, errors
            assert any(re.search(r"%s:%d: syntax error" % (re.escape(str(d.conf_path)), line), e)
                       for e in errors), errors

    storm(10)                       # the allocator's and the log's first growth
    before = rss(d.master_pid)
    storm(N)
    grown = rss(d.master_pid) - before
    print("master RSS over %d failed reloads (a %d-byte string at the error): "
          "%+d bytes, %+.0f per reload" % (N, TOKEN, grown, grown / N))
    assert grown <= BOUND, (
        "the master grew by %d bytes over %d failed reloads (%d per reload; bound %d)"
        % (grown, N, grown // N, BOUND))
    # Still serving the first generation, and a good file still reloads.
    d.rewrite(text=good)
    ok, gen = d.reload()
    assert ok and gen == 2
