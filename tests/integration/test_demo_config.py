"""The shipped demo config is valid and names the socket `make run` uses."""

import re
import subprocess
from pathlib import Path

from esockd_helpers import esockd_argv

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_passes_the_check_mode():
    # -t loads the TLS listener's certificate: make it as `make run` does.
    made = subprocess.run(["make", "-s", "-C", str(REPO), "demo-cert"],
                          capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stdout + made.stderr
    conf = REPO / "conf" / "esockd.conf"
    proc = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert "configuration is valid" in proc.stderr


def test_demo_config_backend_matches_make_run():
    text = (REPO / "conf" / "esockd.conf").read_text()
    sock = re.search(r'^\s*socket\s*=\s*"([^"]+)"', text, re.M).group(1)
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^DEMO_SOCK\s*=\s*%s\s*$" % re.escape(sock), make, re.M), sock
    assert '"127.0.0.1:5000"' in text


def test_demo_has_a_tls_listener_on_5001_with_the_certificate_make_run_makes():
    text = (REPO / "conf" / "esockd.conf").read_text()
    make = (REPO / "Makefile").read_text()
    tls_dir = re.search(r"^DEMO_TLS\s*=\s*(\S+)\s*$", make, re.M).group(1)
    assert '"127.0.0.1:5001"' in text
    assert 'tls_certificate = "%s/cert.pem"' % tls_dir in text
    assert 'tls_key = "%s/key.pem"' % tls_dir in text
