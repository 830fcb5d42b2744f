"""pytest fixtures for the esockd integration tests.

Binaries: $ESOCKD_BIN (default <repo>/build/esockd) and $ECHO_HANDLER_BIN
(default <repo>/build/echo-handler), so the same suite can run against the
sanitizer build in build/san/.  $ESOCKD_WRAPPER (make valgrind: memcheck)
goes before esockd wherever a test starts it, and $ESOCKD_TIME_SCALE
stretches the waits (see esockd_helpers.py).
"""

import os
import resource
import shutil
import signal
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from esockd_helpers import (ECHO_HANDLER_BIN, ESOCKD_BIN, DaemonFactory,  # noqa: E402
                            scaled)

DEFAULT_TEST_TIMEOUT = 60
FD_CAP = 20000


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test wall-clock limit (SIGALRM)")
    # Each process gets at most 20,000 fds (the daemons set their own limit
    # from max_open_files, which the tests keep below this).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    cap = FD_CAP if hard == resource.RLIM_INFINITY else min(FD_CAP, hard)
    if soft != cap:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (cap, hard))
        except (ValueError, OSError):
            pass


class TestTimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _wall_clock_limit(request):
    """Abort a hung test with an exception instead of hanging the suite."""
    marker = request.node.get_closest_marker("timeout")
    # Stretched under make valgrind (ESOCKD_TIME_SCALE), like every wait.
    seconds = scaled(marker.args[0] if marker else DEFAULT_TEST_TIMEOUT)

    def on_alarm(signum, frame):
        raise TestTimeout("test exceeded its %ss wall-clock limit" % seconds)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On failure, attach the daemon logs to the report."""
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and call.when in ("setup", "call"):
        factory = item.funcargs.get("esockd") if hasattr(item, "funcargs") else None
        if factory is not None:
            try:
                rep.sections.append(("esockd logs", factory.report()))
            except Exception as e:  # never break reporting
                rep.sections.append(("esockd logs", "could not read logs: %r" % e))


@pytest.fixture
def binaries():
    """Fail (not skip) when the binaries are missing: a missing build must
    not look like a green test run."""
    for path in (ESOCKD_BIN, ECHO_HANDLER_BIN):
        if not os.access(path, os.X_OK):
            pytest.fail("binary not found or not executable: %s "
                        "(build first, or set ESOCKD_BIN / ECHO_HANDLER_BIN)" % path)
    return ESOCKD_BIN, ECHO_HANDLER_BIN


@pytest.fixture
def esockd(tmp_path, binaries):
    """Factory: esockd.start(...) -> Daemon, esockd.echo_handler() -> socket
    path, esockd.py_backend(handler) -> PyBackend.  Everything it started is
    stopped at teardown (SIGTERM, then SIGKILL, only our own pids)."""
    factory = DaemonFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.teardown()
    # After everything stopped (leak reports come at exit): any sanitizer
    # finding in a daemon or handler log fails the test.
    findings = factory.sanitizer_findings()
    if findings:
        pytest.fail("sanitizer reports in %s:\n%s" % (
            ", ".join(sorted(findings)),
            "\n".join(l for lines in findings.values() for l in lines[:20])), pytrace=False)


@pytest.fixture
def public_dir():
    """A 0755 directory outside pytest's 0700 tree, so another user (the
    tests use nobody) can reach a socket in it and only the socket's own
    mode decides."""
    path = tempfile.mkdtemp(prefix="esockd-pub-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
