"""`user` and `group`: workers drop privileges, the master keeps its uid.

These tests need root (to drop from); they run as root on the project's
machines and are skipped with a reason elsewhere.  The backend socket for
an unprivileged worker lives in a directory of its own under /tmp (mode
0755, socket 0666), since pytest's temp dirs are 0700 and root's.
"""

import grp
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess

import pytest

from esockd_helpers import (esockd_argv, Daemon, EchoHandler, assert_echo, connect,
                            free_port, pid_alive, render_config, wait_until)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="privilege drop needs root to drop from")


def unprivileged_user():
    """'nobody' if this host has it, else any user with a uid above 0."""
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pass
    for pw in pwd.getpwall():
        if pw.pw_uid != 0 and pw.pw_gid != 0:
            return pw
    pytest.fail("no unprivileged user on this host to drop to")



def public_echo_handler(esockd, public_dir):
    """An echo handler whose socket any user may connect to (0666)."""
    path = os.path.join(public_dir, "echo.sock")
    h = EchoHandler(path, esockd.tmp_path / "public-echo.log")
    esockd.handlers.append(h)
    os.chmod(path, 0o666)
    return path


def ids(pid):
    """{'Uid': [real, effective, saved, fs], 'Gid': [...], 'Groups': [...]}"""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Uid", "Gid", "Groups"):
                out[key] = [int(x) for x in value.split()]
    return out


def test_workers_run_as_user_and_the_master_stays_root(esockd, public_dir):
    """user = "nobody": every worker's real, effective, saved and fs uid
    and gid are nobody's and its only group is nobody's group; the master
    stays uid 0; clients are relayed to a backend only reachable through
    file permissions an unprivileged user has."""
    pw = unprivileged_user()
    sock = public_echo_handler(esockd, public_dir)
    d = esockd.start(workers=2, user=pw.pw_name,
                     listeners=[{"name": "echo", "backend": sock}])
    workers = d.worker_pids()
    assert len(workers) == 2
    for slot, pid in workers.items():
        # The drop happens as the worker starts: wait for its log line.
        dropped = re.compile(r"worker %d\[%d\] info: running as user '%s'"
                             % (slot, pid, re.escape(pw.pw_name)))
        wait_until(lambda: dropped.search(d.log()), 5, message=dropped.pattern)
        got = ids(pid)
        assert got["Uid"] == [pw.pw_uid] * 4, got
        assert got["Gid"] == [pw.pw_gid] * 4, got
        assert got["Groups"] == [pw.pw_gid], got
    assert ids(d.master_pid)["Uid"] == [0, 0, 0, 0]
    for i in range(4):
        with connect(d.port) as c:
            assert_echo(c, b"relayed by an unprivileged worker %d\n" % i)


def test_group_overrides_the_users_own(esockd, public_dir):
    """user plus group: the workers' gid and only supplementary group are
    the named group's, not the user's primary group."""
    pw = unprivileged_user()
    other = next((g for g in grp.getgrall() if g.gr_gid not in (0, pw.pw_gid)), None)
    if other is None:
        pytest.fail("no second group on this host to test 'group' with")
    sock = public_echo_handler(esockd, public_dir)
    d = esockd.start(workers=1, user=pw.pw_name, group=other.gr_name,
                     listeners=[{"name": "echo", "backend": sock}])
    wait_until(lambda: "running as user" in d.log(), 5)
    got = ids(d.worker_pids()[1])
    assert got["Uid"] == [pw.pw_uid] * 4 and got["Gid"] == [other.gr_gid] * 4, got
    assert got["Groups"] == [other.gr_gid], got
    with connect(d.port) as c:
        assert_echo(c, b"x\n")


def test_an_unprivileged_worker_still_drains_when_the_master_dies(esockd, public_dir):
    """The parent-death signal is set after the drop (a credential change
    clears it): SIGKILL to the master still makes every worker leave."""
    pw = unprivileged_user()
    sock = public_echo_handler(esockd, public_dir)
    d = esockd.start(workers=2, user=pw.pw_name, shutdown_timeout=1,
                     listeners=[{"name": "echo", "backend": sock}])
    workers = list(d.worker_pids().values())
    wait_until(lambda: d.log().count("running as user") >= 2, 5)
    os.kill(d.master_pid, signal.SIGKILL)
    d.proc.wait(timeout=5)
    wait_until(lambda: not any(pid_alive(p) for p in workers), 5,
               message="workers %s to exit after the master was killed" % workers)


def check(esockd, text):
    conf = esockd.write_config(text)
    r = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
                       text=True, timeout=10)
    return conf, r


LISTENERS = render_config({}, [{"name": "echo", "bind": "127.0.0.1:5000",
                                "backend": {"socket": "/run/x.sock"}}])


def test_a_user_that_does_not_exist_fails_the_check_at_its_line(esockd):
    """esockd -t exits 1 and names FILE:LINE of 'user'."""
    name = "esockd-nouser-" + secrets.token_hex(4)
    with pytest.raises(KeyError):
        pwd.getpwnam(name)
    conf, r = check(esockd, 'workers = 1;\nlog_level = "info";\nuser = "%s";\n%s'
                    % (name, LISTENERS))
    assert r.returncode == 1, r.stderr
    assert re.search(r"^%s:3: user \"%s\" does not exist" % (re.escape(str(conf)), name),
                     r.stderr, re.M), r.stderr


def test_group_without_user_fails_the_check_at_its_line(esockd):
    """'group' alone is refused at its FILE:LINE."""
    group = grp.getgrgid(os.getgid()).gr_name
    conf, r = check(esockd, 'workers = 1;\ngroup = "%s";\n%s' % (group, LISTENERS))
    assert r.returncode == 1, r.stderr
    assert re.search(r"^%s:2: 'group' needs 'user'" % re.escape(str(conf)), r.stderr, re.M), \
        r.stderr


SETPRIV = shutil.which("setpriv")


def test_a_worker_that_cannot_drop_exits_and_is_damped(esockd, public_dir):
    """A master that is not root cannot make its workers another user: each
    worker logs why and exits 1, the master logs the exit, keeps running and
    damps the restarts instead of spinning."""
    if SETPRIV is None:
        pytest.fail("setpriv not found (Debian package util-linux)")
    me = unprivileged_user()
    target = pwd.getpwuid(0).pw_name
    # The master runs as `me`: its config must be readable by it.
    conf = os.path.join(public_dir, "esockd.conf")
    with open(conf, "w") as f:
        f.write(render_config({"workers": 1, "max_open_files": 1024, "control_socket": "",
                               "user": target},
                              [{"name": "echo", "bind": "127.0.0.1:%d" % free_port(),
                                "backend": {"socket": os.path.join(public_dir, "none.sock")}}]))
    os.chmod(conf, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    d = Daemon(conf, esockd.tmp_path / "nonroot.log",
               [{"name": "echo", "bind": "127.0.0.1:1"}],
               argv_prefix=[SETPRIV, "--reuid=%d" % me.pw_uid, "--regid=%d" % me.pw_gid,
                            "--clear-groups"])
    esockd.daemons.append(d)
    wait_until(lambda: "crash loop" in d.log() or not d.alive(), 20,
               message="the master to damp the failing workers")
    log = d.log()
    assert d.alive(), log
    assert re.search(r"worker 1\[\d+\] error: cannot drop privileges to user '%s': setgroups"
                     % re.escape(target), log), log
    assert re.search(r"worker 1 \(pid \d+\) exited with status 1; restarting", log), log
    assert "ready:" in log
