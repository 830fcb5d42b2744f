"""The key table the parser uses (esockd -K) and every place that
documents keys must agree: esockd.conf(5), the README table, the demo
config and the config `make install` puts in /etc.  A key added to the parser without docs, or documented but not
accepted, fails here."""

import re
import subprocess
from pathlib import Path

from esockd_helpers import esockd_argv

REPO = Path(__file__).resolve().parents[2]


def parser_keys():
    out = subprocess.run(esockd_argv("-K"), capture_output=True, text=True,
                         timeout=10, check=True).stdout
    keys = {line.split()[1] for line in out.splitlines() if line.strip()}
    assert len(keys) >= 10, out
    return keys


def test_man_page_documents_exactly_the_parser_keys():
    page = (REPO / "man" / "esockd.conf.5").read_text()
    documented = set(re.findall(r"^\.It Ic (\w+)", page, re.M))
    keys = parser_keys()
    assert keys - documented == set(), "keys missing from esockd.conf.5"
    assert documented - keys == set(), "esockd.conf.5 documents keys the parser refuses"


def test_readme_table_and_both_configs_name_every_key():
    readme = (REPO / "README.md").read_text()
    confs = {name: (REPO / "conf" / name).read_text() for name in ("esockd.conf", "system.conf")}
    for key in parser_keys():
        assert re.search(r"^\| `%s` \|" % key, readme, re.M), "README table lacks %s" % key
        for name, text in confs.items():
            assert re.search(r"^\s*%s\s*=" % key, text, re.M), "conf/%s lacks %s" % (name, key)
