"""Several certificates on one TLS listener, chosen by the name the client
sends (SNI): real clients (Python ssl, openssl s_client) check which
certificate they were served; strict mode refuses unknown names; a reload
adds a name; `esockd -t` reports bad entries at their line; an expired
certificate is a warning, and every certificate's notAfter is in /metrics."""
import calendar
import shutil
import socket
import ssl
import subprocess
import time

import pytest

from ctl_helpers import fetch, parse_exposition
from esockd_helpers import esockd_argv, free_port, recv_exact

OPENSSL = shutil.which("openssl")


def openssl(*args, cwd=None):
    if OPENSSL is None:
        pytest.skip("openssl(1) is not installed (make deps installs Debian's openssl)")
    return subprocess.run([OPENSSL, *args], check=True, capture_output=True,
                          timeout=30, cwd=cwd)


def make_ca(tmp_path):
    """A CA that signs every certificate of a test: (cert, key)."""
    cert, key = tmp_path / "ca.crt", tmp_path / "ca.key"
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=esockd test CA",
            "-keyout", str(key), "-out", str(cert))
    return str(cert), str(key)


def make_leaf(tmp_path, ca, cn, sans):
    """A certificate for cn and the DNS names sans, signed by ca: (cert, key)."""
    base = tmp_path / cn.replace("*", "star")
    cert, key, csr, ext = (str(base) + s for s in (".crt", ".key", ".csr", ".ext"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=" + cn, "-keyout", key, "-out", csr)
    with open(ext, "w") as f:
        f.write("subjectAltName=" + ",".join("DNS:" + s for s in sans) + "\n")
    openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
            "-days", "2", "-extfile", ext, "-out", cert)
    return cert, key


def make_expired(tmp_path, cn, start="20200101000000Z", end="20200102000000Z"):
    """A self-signed certificate valid from start to end (by default
    only on 2020-01-01): (cert, key)."""
    db = tmp_path / ("ca-db-" + cn)
    db.mkdir()
    (db / "index").write_text("")
    (db / "serial").write_text("01\n")
    cnf = tmp_path / ("ca-%s.cnf" % cn)
    cnf.write_text("[ ca ]\ndefault_ca = x\n[ x ]\ndatabase = %s/index\n"
                   "new_certs_dir = %s\nserial = %s/serial\ndefault_md = sha256\n"
                   "policy = p\nunique_subject = no\n[ p ]\ncommonName = supplied\n"
                   % (db, db, db))
    cert, key, csr = (str(tmp_path / (cn + s)) for s in (".crt", ".key", ".csr"))
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", "/CN=" + cn, "-keyout", key, "-out", csr)
    openssl("ca", "-batch", "-config", str(cnf), "-selfsign", "-keyfile", key, "-in", csr,
            "-startdate", start, "-enddate", end, "-notext",
            "-out", cert)
    return cert, key


def served_cn(port, ca, name, timeout=5):
    """The CN of the certificate served to a client naming name (None: send
    no name), verified against ca."""
    ctx = ssl.create_default_context(cafile=ca)
    ctx.check_hostname = False	# the default is served for unknown names
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    with ctx.wrap_socket(raw, server_hostname=name) as s:
        subject = dict(x[0] for x in s.getpeercert()["subject"])
        return subject["commonName"]


def not_after(cert):
    out = openssl("x509", "-in", cert, "-noout", "-enddate").stdout.decode()
    return ssl.cert_time_to_seconds(out.strip().split("=", 1)[1])


@pytest.fixture
def certs(tmp_path):
    ca = make_ca(tmp_path)
    return {
        "ca": ca[0],
        "default": make_leaf(tmp_path, ca, "default.example", ["default.example"]),
        "a": make_leaf(tmp_path, ca, "a.example", ["a.example"]),
        "b": make_leaf(tmp_path, ca, "b.example", ["b.example", "www.b.example"]),
        "wild": make_leaf(tmp_path, ca, "*.c.example", ["*.c.example"]),
        "x": make_leaf(tmp_path, ca, "x.c.example", ["x.c.example"]),
        "d": make_leaf(tmp_path, ca, "d.example", ["d.example"]),
    }


def entry(names, pair):
    return {"names": names, "certificate": pair[0], "key": pair[1]}


def sni_listener(certs, *entries, **kw):
    lst = {"name": "tls", "tls_certificate": certs["default"][0],
           "tls_key": certs["default"][1], "tls_sni": list(entries)}
    lst.update(kw)
    return lst


def test_the_name_chooses_the_certificate_exact_before_wildcard(esockd, certs):
    d = esockd.start(listeners=[sni_listener(
        certs, entry(["a.example"], certs["a"]),
        entry(["b.example", "www.b.example"], certs["b"]),
        entry(["*.c.example"], certs["wild"]),
        entry(["x.c.example"], certs["x"]))])
    ca = certs["ca"]
    assert served_cn(d.port, ca, "a.example") == "a.example"
    assert served_cn(d.port, ca, "B.Example") == "b.example"
    assert served_cn(d.port, ca, "www.b.example") == "b.example"
    assert served_cn(d.port, ca, "y.c.example") == "*.c.example"
    # An exact name wins over the wildcard that also covers it.
    assert served_cn(d.port, ca, "x.c.example") == "x.c.example"
    # A wildcard covers one label; no name or an unknown one: the default.
    assert served_cn(d.port, ca, "z.y.c.example") == "default.example"
    assert served_cn(d.port, ca, "c.example") == "default.example"
    assert served_cn(d.port, ca, "nobody.example") == "default.example"
    assert served_cn(d.port, ca, None) == "default.example"

    # The chosen certificate's connection is relayed like any other.
    ctx = ssl.create_default_context(cafile=ca)
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="www.b.example") as s:
        s.sendall(b"hello sni\n")
        assert recv_exact(s, 10) == b"hello sni\n"


def test_strict_refuses_an_unknown_name_with_unrecognized_name(esockd, certs):
    d = esockd.start(listeners=[sni_listener(
        certs, entry(["a.example"], certs["a"]), tls_sni_strict=True)])
    ca = certs["ca"]
    assert served_cn(d.port, ca, "a.example") == "a.example"
    for name in ("nobody.example", None):
        with pytest.raises(ssl.SSLError, match="UNRECOGNIZED_NAME"):
            served_cn(d.port, ca, name)
    out = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % d.port,
                          "-servername", "nobody.example"], stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "unrecognized name" in out.stderr + out.stdout, out.stderr
    assert served_cn(d.port, ca, "A.EXAMPLE.") == "a.example"
    # Three refusals (two Python clients, s_client), each counted as such.
    st = d.wait_stats(lambda st: st["tls_fail_unknown_sni"] == 3)
    assert st["tls_fail_unknown_sni"] == 3 and st["tls_failures"] == 3, st
    assert st["tls_fail_other"] == 0, st


def test_a_reload_adds_an_sni_entry(esockd, certs):
    lst = sni_listener(certs, entry(["a.example"], certs["a"]))
    d = esockd.start(listeners=[lst])
    ca = certs["ca"]
    assert served_cn(d.port, ca, "d.example") == "default.example"
    lst = dict(lst, bind="127.0.0.1:%d" % d.port, backend=d.listeners[0]["backend"])
    lst["tls_sni"] = lst["tls_sni"] + [entry(["d.example"], certs["d"])]
    d.rewrite(listeners=[lst])
    ok, gen = d.reload()
    assert ok, gen
    deadline = time.monotonic() + 10
    while served_cn(d.port, ca, "d.example") != "d.example":
        assert time.monotonic() < deadline, "the new generation never served d.example"
        time.sleep(0.1)
    assert served_cn(d.port, ca, "a.example") == "a.example"


def check(tmp_path, text):
    path = tmp_path / "check.conf"
    path.write_text(text)
    r = subprocess.run(esockd_argv("-t", "-c", str(path)), capture_output=True,
                       text=True, timeout=30)
    return r, str(path)


def conf_with_sni(certs, sni_text):
    return ("listeners = (\n"
            "  {\n"
            "    name = \"tls\";\n"
            "    bind = \"127.0.0.1:%d\";\n"
            "    tls_certificate = \"%s\";\n"
            "    tls_key = \"%s\";\n"
            "    tls_sni = (\n%s    );\n"
            "    backend = { socket = \"/run/nobody.sock\"; };\n"
            "  }\n"
            ");\n" % (free_port(), certs["default"][0], certs["default"][1], sni_text))


def test_check_reports_a_missing_certificate_and_a_bad_wildcard_at_their_line(
        tmp_path, certs):
    missing = str(tmp_path / "missing.crt")
    r, path = check(tmp_path, conf_with_sni(certs,
        "      { names = ( \"a.example\" ); certificate = \"%s\"; key = \"%s\"; },\n"
        "      { names = ( \"x.*.b.example\" ); certificate = \"%s\"; },\n"
        "      { names = ( \"c.example\" ); certificate = \"%s\"; }\n"
        % (certs["a"][0], certs["a"][1], certs["b"][0], missing)))
    assert r.returncode == 1, r.stderr
    # The entries are on lines 8, 9 and 10.
    assert "%s:9: tls_sni name \"x.*.b.example\" is not valid" % path in r.stderr, r.stderr
    r, path = check(tmp_path, conf_with_sni(certs,
        "      { names = ( \"a.example\" ); certificate = \"%s\"; key = \"%s\"; },\n"
        "      { names = ( \"c.example\" ); certificate = \"%s\"; }\n"
        % (certs["a"][0], certs["a"][1], missing)))
    assert r.returncode == 1, r.stderr
    assert "%s:9: listener 'tls': cannot load the certificate chain from %s" % (
        path, missing) in r.stderr, r.stderr
    assert "1 error;" in r.stderr


def test_check_needs_tls_certificate_for_sni(tmp_path, certs):
    r, path = check(tmp_path,
                    "listeners = ( { name = \"tls\"; bind = \"127.0.0.1:%d\";\n"
                    "  tls_sni_strict = true;\n"
                    "  backend = { socket = \"/run/nobody.sock\"; }; } );\n" % free_port())
    assert r.returncode == 1
    assert "%s:2: 'tls_sni_strict' in listener 'tls' needs 'tls_certificate'" % path \
        in r.stderr, r.stderr


def test_an_expired_certificate_is_a_warning_and_every_expiry_is_a_metric(
        esockd, certs, tmp_path):
    old = make_expired(tmp_path, "old.example")
    future = make_expired(tmp_path, "future.example", "20990101000000Z", "20990102000000Z")
    text = conf_with_sni(certs,
                         "      { names = ( \"a.example\" ); certificate = \"%s\"; "
                         "key = \"%s\"; },\n"
                         "      { names = ( \"old.example\" ); certificate = \"%s\"; "
                         "key = \"%s\"; }\n" % (certs["a"] + old))
    r, path = check(tmp_path, text)
    assert r.returncode == 0, r.stderr
    assert ("%s:9: listener 'tls': the certificate in %s expired on "
            "2020-01-02T00:00:00Z" % (path, old[0])) in r.stderr, r.stderr

    port = free_port()
    d = esockd.start(metrics="127.0.0.1:%d" % port, listeners=[
        {"name": "plain"},
        sni_listener(certs, entry(["a.example"], certs["a"]),
                     entry(["old.example"], old))])
    # Once: the check before the start keeps quiet, the load says it.
    assert d.log().count("expired on 2020-01-02T00:00:00Z") == 1, d.log()
    status, _, body = fetch("http://127.0.0.1:%d/metrics" % port)
    assert status == 200
    samples, _, types = parse_exposition(body.decode())
    fam = "esockd_tls_certificate_not_after_seconds"
    assert types[fam] == "gauge"

    def expiry(name):
        return samples[(fam, frozenset({"listener": "tls", "name": name}.items()))]

    assert expiry("old.example") == calendar.timegm((2020, 1, 2, 0, 0, 0)) == not_after(old[0])
    assert expiry("a.example") == not_after(certs["a"][0])
    assert expiry("default") == not_after(certs["default"][0])

    # Not yet valid is a warning too, with the date it starts.
    r, path = check(tmp_path, conf_with_sni(
        certs, "      { names = \"f.example\"; certificate = \"%s\"; key = \"%s\"; }\n"
        % future))
    assert r.returncode == 0, r.stderr
    assert ("%s:8: listener 'tls': the certificate in %s is not valid before "
            "2099-01-01T00:00:00Z" % (path, future[0])) in r.stderr, r.stderr
    # A plain TCP listener has no certificate.
    assert not [k for k in samples if k[0] == fam and ("listener", "plain") in k[1]]


def test_64_mib_each_way_with_sni_and_a_client_certificate(esockd, certs, tmp_path):
    """The whole stack at once: a name chosen by SNI, a client certificate
    verified against tls_client_ca, and 64 MiB each way through the echo,
    checked by SHA-256, with nothing counted as a failure."""
    import hashlib
    import os
    from test_tls import exchange
    from test_tls_clients import CA
    clients = CA(tmp_path, "clients")
    client = clients.client("device-1")
    d = esockd.start(listeners=[sni_listener(
        certs, entry(["a.example"], certs["a"]),
        tls_client_ca=clients.crt, tls_verify_client="required")])
    data = os.urandom(64 << 20)
    ctx = ssl.create_default_context(cafile=certs["ca"])
    ctx.load_cert_chain(*client)
    raw = socket.create_connection(("127.0.0.1", d.port), timeout=60)
    with ctx.wrap_socket(raw, server_hostname="a.example") as s:
        assert s.getpeercert()["subject"][0][0][1] == "a.example"
        got = exchange(s, data, timeout=240)
    assert len(got) == len(data), len(got)
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    st = d.wait_stats(lambda st: st["connections"] == 0)
    assert st["bytes_in"] == st["bytes_out"] == len(data), st
    assert st["tls_failures"] == 0 and st["closed_normal"] == 1, st
