"""`make install` and `make uninstall` into a DESTDIR, and the systemd
units checked with `systemd-analyze verify` (systemd 252 on bookworm).

The install uses the build directory of $ESOCKD_BIN, so the sanitizer run
installs the sanitizer build and never rebuilds another.
"""

import filecmp
import glob
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from esockd_helpers import ESOCKD_BIN, REPO

ANALYZE = shutil.which("systemd-analyze")
UNITS = ("esockd.service", "esockd.socket")


def build_dir():
    """The BUILD that holds $ESOCKD_BIN (build/ or build/san/)."""
    return str(Path(ESOCKD_BIN).resolve().parent)


def make(*args, check=True):
    env = {k: v for k, v in os.environ.items()
           if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    r = subprocess.run(["make", "-C", str(REPO), "BUILD=" + build_dir()] + list(args),
                       capture_output=True, text=True, timeout=300, env=env)
    if check and r.returncode != 0:
        raise AssertionError("make %s failed (%d):\n%s\n%s"
                             % (" ".join(args), r.returncode, r.stdout, r.stderr))
    return r


def install(dest, prefix="/usr"):
    return make("install", "DESTDIR=%s" % dest, "PREFIX=%s" % prefix)


def esockdctl_has_a_rule():
    """True once the ctl branch is merged: the Makefile can build esockdctl."""
    return make("-n", os.path.join(build_dir(), "esockdctl"), check=False).returncode == 0


def mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


def installed_files(root):
    return {str(p.relative_to(root)) for p in Path(root).rglob("*") if not p.is_dir()}


def test_install_puts_every_file_in_place(tmp_path):
    """PREFIX=/usr DESTDIR=tmp: the programs (0755), both man sections and
    the units (0644, with /usr/sbin in place of @SBINDIR@), the system
    config in /etc/esockd (0644), and nothing else; the installed esockd
    runs and accepts the installed config."""
    dest = tmp_path / "dest"
    r = install(dest)
    want = {"usr/sbin/esockd", "usr/lib/systemd/system/esockd.service",
            "usr/lib/systemd/system/esockd.socket", "etc/esockd/esockd.conf"}
    want |= {"usr/share/man/man5/" + os.path.basename(p) for p in glob.glob(str(REPO / "man/*.5"))}
    want |= {"usr/share/man/man8/" + os.path.basename(p) for p in glob.glob(str(REPO / "man/*.8"))}
    assert "usr/share/man/man8/esockd.8" in want and "usr/share/man/man5/esockd.conf.5" in want
    if esockdctl_has_a_rule():
        want.add("usr/sbin/esockdctl")
    else:
        # Until the ctl branch is merged there is nothing to install.
        print("esockdctl not required: no rule builds it yet (the ctl branch adds it)")
        assert "skipping esockdctl" in r.stdout, r.stdout
    assert installed_files(dest) == want

    for f in want:
        expect = 0o755 if f.startswith("usr/sbin/") else 0o644
        assert mode(dest / f) == expect, "%s has mode %o" % (f, mode(dest / f))
    for f in want:
        if "/man/" in f:
            assert filecmp.cmp(dest / f, REPO / "man" / os.path.basename(f), shallow=False), f
    assert filecmp.cmp(dest / "etc/esockd/esockd.conf", REPO / "conf/system.conf", shallow=False)

    service = (dest / "usr/lib/systemd/system/esockd.service").read_text()
    assert "@" not in re.sub(r"#.*", "", service), "a placeholder is left"
    assert re.search(r"^ExecStart=/usr/sbin/esockd -c /etc/esockd/esockd.conf$", service, re.M)
    assert re.search(r"^ExecStartPre=/usr/sbin/esockd -t -c /etc/esockd/esockd.conf$", service,
                     re.M)
    for unit in UNITS:
        text = (dest / "usr/lib/systemd/system" / unit).read_text()
        src = (REPO / "systemd" / unit).read_text()
        assert text == src.replace("@SBINDIR@", "/usr/sbin"), unit

    sbin = dest / "usr/sbin/esockd"
    v = subprocess.run([str(sbin), "-V"], capture_output=True, text=True, timeout=10)
    assert v.returncode == 0 and re.match(r"esockd \S+", v.stdout), (v.stdout, v.stderr)
    t = subprocess.run([str(sbin), "-t", "-c", str(dest / "etc/esockd/esockd.conf")],
                       capture_output=True, text=True, timeout=10)
    assert t.returncode == 0, t.stderr


def test_the_installed_config_fits_the_unit(tmp_path):
    """The unit has PrivateTmp= and ProtectHome=, and makes /run/esockd:
    the config install puts in /etc names no path under /tmp or /home (the
    demo's /tmp sockets would be invisible to esockdctl and to backends
    outside the unit), and its control socket is in /run/esockd."""
    dest = tmp_path / "dest"
    install(dest)
    text = (dest / "etc/esockd/esockd.conf").read_text()
    settings = re.sub(r"#.*", "", text)
    paths = re.findall(r'"(/[^"]*)"', settings)
    assert paths, "no path found in the installed config"
    for path in paths:
        assert not path.startswith(("/tmp/", "/home/", "/root/", "/run/user/")), path
    assert re.search(r'^control_socket = "/run/esockd/[^"/]+";', settings, re.M), settings
    service = (REPO / "systemd/esockd.service").read_text()
    assert re.search(r"^PrivateTmp=yes$", service, re.M)
    assert re.search(r"^RuntimeDirectory=esockd$", service, re.M)


def test_a_second_install_keeps_an_edited_config(tmp_path):
    """An operator's edits to /etc/esockd/esockd.conf survive a reinstall,
    and install says it kept the file; the rest is replaced."""
    dest = tmp_path / "dest"
    install(dest)
    conf = dest / "etc/esockd/esockd.conf"
    edited = conf.read_text().replace('workers = "auto";', "workers = 7;") + "# local edit\n"
    assert "workers = 7;" in edited
    conf.write_text(edited)
    (dest / "usr/share/man/man8/esockd.8").write_text("stale\n")
    r = install(dest)
    assert conf.read_text() == edited
    assert "keeping the existing %s" % conf in r.stdout, r.stdout
    assert filecmp.cmp(dest / "usr/share/man/man8/esockd.8", REPO / "man/esockd.8",
                       shallow=False)


def test_prefix_decides_the_paths_in_the_units(tmp_path):
    """The default PREFIX=/usr/local puts esockd in /usr/local/sbin, the
    units in /usr/local/lib/systemd/system (which systemd reads) and names
    /usr/local/sbin/esockd in them; the config still goes to /etc."""
    dest = tmp_path / "dest"
    make("install", "DESTDIR=%s" % dest)
    assert (dest / "usr/local/sbin/esockd").is_file()
    assert (dest / "etc/esockd/esockd.conf").is_file()
    service = (dest / "usr/local/lib/systemd/system/esockd.service").read_text()
    assert "ExecStart=/usr/local/sbin/esockd -c" in service


def test_uninstall_removes_all_but_the_config(tmp_path):
    dest = tmp_path / "dest"
    install(dest)
    r = make("uninstall", "DESTDIR=%s" % dest, "PREFIX=/usr")
    assert installed_files(dest) == {"etc/esockd/esockd.conf"}
    assert "left in place" in r.stdout


# ---------------------------------------------------------------------------
# systemd-analyze verify
# ---------------------------------------------------------------------------

@pytest.fixture
def analyze():
    if ANALYZE is None:
        pytest.fail("systemd-analyze not found (Debian package systemd; `make deps`)")
    if shutil.which("man") is None:
        pytest.fail("man not found (Debian package man-db): systemd-analyze verify "
                    "checks Documentation= with it")
    return ANALYZE


def verify(analyze, units, manpath, root=None):
    """Run systemd-analyze verify; returns (exit code, output).  MANPATH
    makes it check Documentation=man:... against the given man tree."""
    env = dict(os.environ, MANPATH=str(manpath), SYSTEMD_LOG_COLOR="0")
    argv = [analyze] + (["--root=%s" % root] if root else []) + ["verify"] + [str(u) for u in units]
    r = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
    return r.returncode, (r.stdout + r.stderr).strip()


def with_host_files(root):
    """--root resolves everything inside root: give it what a real system
    has besides esockd, the host's targets and slices (sysinit.target,
    sockets.target, system.slice...) in root/etc/systemd/system and the
    /bin/kill that ExecReload= runs."""
    kill = Path(root) / "bin/kill"
    kill.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(os.path.realpath("/bin/kill"), kill)
    etc = Path(root) / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    n = 0
    for d in ("/usr/lib/systemd/system", "/lib/systemd/system"):
        for p in glob.glob(d + "/*.target") + glob.glob(d + "/*.slice"):
            if not (etc / os.path.basename(p)).exists():
                shutil.copy(p, etc)
                n += 1
    assert n > 0, "no systemd targets on this host to verify against"


def test_installed_units_pass_systemd_analyze_verify(tmp_path, analyze):
    """The installed units verify inside the DESTDIR (--root): their
    ExecStart path exists there and Documentation= names installed pages.
    The same check fails on a unit with a missing program or an unknown
    directive, so a pass means something."""
    dest = tmp_path / "dest"
    install(dest)
    with_host_files(dest)
    unitdir = "/usr/lib/systemd/system"
    rc, out = verify(analyze, [unitdir + "/" + u for u in UNITS], dest / "usr/share/man", dest)
    assert (rc, out) == (0, ""), out

    good = (dest / "usr/lib/systemd/system/esockd.service").read_text()
    (dest / "usr/lib/systemd/system/esockd.service").write_text(
        good.replace("ExecStart=/usr/sbin/esockd", "ExecStart=/usr/sbin/esockd-missing"))
    rc, out = verify(analyze, [unitdir + "/esockd.service"], dest / "usr/share/man", dest)
    assert rc != 0 and "esockd-missing" in out, (rc, out)
    (dest / "usr/lib/systemd/system/esockd.service").write_text(
        good.replace("[Service]", "[Service]\nNoSuchDirective=yes"))
    rc, out = verify(analyze, [unitdir + "/esockd.service"], dest / "usr/share/man", dest)
    assert "NoSuchDirective" in out, (rc, out)


def test_units_in_the_tree_pass_systemd_analyze_verify(tmp_path, analyze):
    """systemd/esockd.{service,socket} with @SBINDIR@ set to the build
    directory verify on the host, man pages taken from man/."""
    units = tmp_path / "units"
    units.mkdir()
    for u in UNITS:
        (units / u).write_text((REPO / "systemd" / u).read_text()
                               .replace("@SBINDIR@", build_dir()))
    manpath = tmp_path / "man"
    for page in glob.glob(str(REPO / "man/*.[0-9]")):
        section = manpath / ("man" + page.rsplit(".", 1)[1])
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section)
    rc, out = verify(analyze, [units / u for u in UNITS], manpath)
    assert (rc, out) == (0, ""), out
