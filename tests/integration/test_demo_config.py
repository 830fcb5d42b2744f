"""The shipped demo config is valid and names the socket `make run` uses."""

import re
import subprocess
from pathlib import Path

from esockd_helpers import ESOCKD_BIN

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_passes_the_check_mode():
    conf = REPO / "conf" / "esockd.conf"
    proc = subprocess.run([ESOCKD_BIN, "-t", "-c", str(conf)], capture_output=True,
                          text=True, timeout=10)
    assert proc.returncode == 0, proc.stderr
    assert "configuration is valid" in proc.stderr


def test_demo_config_backend_matches_make_run():
    text = (REPO / "conf" / "esockd.conf").read_text()
    sock = re.search(r'^\s*socket\s*=\s*"([^"]+)"', text, re.M).group(1)
    make = (REPO / "Makefile").read_text()
    assert re.search(r"^DEMO_SOCK\s*=\s*%s\s*$" % re.escape(sock), make, re.M), sock
    assert '"127.0.0.1:5000"' in text
