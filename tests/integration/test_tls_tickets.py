"""Session tickets whose keys belong to the daemon: a session resumes on
every worker and across a reload, stops resuming once its key is two
lifetimes old, and with a tls_ticket_keys file resumes on another daemon
that shares the file (a fleet), also after a key is appended."""
import base64
import os
import socket
import subprocess

from esockd_helpers import esockd_argv, recv_exact
from test_tls import client_ctx, make_cert


def new_session(port, ctx):
    """A full handshake, and the session its ticket carries."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        s.sendall(b"hello\n")
        assert recv_exact(s, 6) == b"hello\n"   # the ticket came before it
        assert s.session is not None
        return s.session


def offer(port, ctx, session):
    """A connection offering session, after one echo (still open)."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=session)
    s.sendall(b"again\n")
    assert recv_exact(s, 6) == b"again\n"
    return s


def resume(port, ctx, session):
    """Connect offering session: (resumed?, the session to use next)."""
    with offer(port, ctx, session) as s:
        return s.session_reused, s.session


def key_file(path, keys):
    """keys (raw bytes) one base64 line each, mode 600."""
    path.write_text("".join(base64.b64encode(k).decode() + "\n" for k in keys))
    path.chmod(0o600)
    return str(path)


def tls_listener(cert, key, **kw):
    lst = {"name": "tls", "tls_certificate": cert, "tls_key": key}
    lst.update(kw)
    return lst


def test_sessions_resume_across_a_reload_on_every_worker(esockd, tmp_path):
    """A no-op reload makes new contexts and new workers; the keys stay, so
    a session made before it resumes after it, on each new worker (with
    OpenSSL's per-context keys: 0 resumed)."""
    cert, key = make_cert(tmp_path, "server")
    d = esockd.start(workers=3, listeners=[tls_listener(cert, key)])
    ctx = client_ctx(cert)
    session = new_session(d.port, ctx)
    assert resume(d.port, ctx, session)[0], "no resumption before the reload"
    ok, gen = d.reload()
    assert ok, gen
    held = []
    try:
        for _ in range(9):      # held open, so stats show where each went
            held.append(offer(d.port, ctx, session))
        per = d.stats()["tls"]["per_worker"]
        assert sum(1 for n in per if n > 0) >= 2, "all on one worker: %s" % per
        resumed = [s.session_reused for s in held]
    finally:
        for s in held:
            s.close()
    assert all(resumed), resumed


def test_a_session_two_lifetimes_old_takes_a_full_handshake(esockd, tmp_path):
    """tls_ticket_lifetime = 60, the master's clock driven by the test (no
    waiting): one lifetime on, a new key encrypts and the first still
    decrypts (the client is given a ticket under the new key); two
    lifetimes on, the first key is gone and its session is not resumed,
    while the ticket renewed under the second key still is."""
    cert, key = make_cert(tmp_path, "server")
    clock = tmp_path / "clock"
    clock.write_text("0\n")
    d = esockd.start(workers=2, env={"ESOCKD_TEST_TICKET_CLOCK": str(clock)},
                     listeners=[tls_listener(cert, key, tls_ticket_lifetime=60)])
    ctx = client_ctx(cert)
    first = new_session(d.port, ctx)

    clock.write_text("61\n")
    assert d.reload()[0]                  # a commit rotates what is due
    reused, renewed = resume(d.port, ctx, first)
    assert reused, "the previous key no longer decrypts after one lifetime"

    clock.write_text("121\n")
    assert d.reload()[0]
    assert not resume(d.port, ctx, first)[0], "a key two lifetimes old still decrypts"
    assert resume(d.port, ctx, renewed)[0], "the renewed ticket does not resume"


def test_two_daemons_with_one_key_file_resume_each_others_sessions(esockd, tmp_path):
    cert, key = make_cert(tmp_path, "server")
    keys = key_file(tmp_path / "tickets.key", [os.urandom(80) for _ in range(3)])
    a = esockd.start(workers=2, listeners=[tls_listener(cert, key, tls_ticket_keys=keys)])
    b = esockd.start(workers=2, listeners=[tls_listener(cert, key, tls_ticket_keys=keys)])
    assert a.port != b.port and a.proc.pid != b.proc.pid
    ctx = client_ctx(cert)
    assert resume(b.port, ctx, new_session(a.port, ctx))[0], "a's session on b"
    assert resume(a.port, ctx, new_session(b.port, ctx))[0], "b's session on a"


def test_appending_a_key_and_reloading_keeps_old_sessions_resuming(esockd, tmp_path):
    """HAProxy's rotation: the last three keys decrypt, the penultimate
    encrypts.  A session under key 2 of [1 2 3] resumes after 4 is
    appended (the file is read again), not after 5 is too."""
    cert, key = make_cert(tmp_path, "server")
    raw = [os.urandom(80) for _ in range(5)]
    path = tmp_path / "tickets.key"
    keys = key_file(path, raw[:3])
    d = esockd.start(workers=2, listeners=[tls_listener(cert, key, tls_ticket_keys=keys)])
    ctx = client_ctx(cert)
    session = new_session(d.port, ctx)      # its ticket is under key 2
    assert session.has_ticket

    key_file(path, raw[:4])
    assert d.reload()[0]
    assert resume(d.port, ctx, session)[0], "a session under key 2 of [2 3 4]"

    key_file(path, raw[:5])
    assert d.reload()[0]
    assert not resume(d.port, ctx, session)[0], "key 2 still used after [3 4 5]"


def check_refused(tmp_path, cert, key, keys, *wants):
    """esockd -t refuses a listener with these files, saying each of wants
    (CONF: the config's path); cert None: no certificate at all."""
    tls = ('  tls_certificate = "%s"; tls_key = "%s";\n' % (cert, key)
           if cert is not None else "")
    conf = tmp_path / "t.conf"
    conf.write_text('listeners = ( { name = "t"; bind = "127.0.0.1:1";\n' + tls +
                    '  tls_ticket_keys = "%s";\n'
                    '  backend = { socket = "/x.sock"; }; } );\n' % keys)
    r = subprocess.run(esockd_argv("-t", "-c", str(conf)), capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1, (r.returncode, r.stderr)
    for want in wants:
        assert want.replace("CONF", str(conf)) in r.stderr, r.stderr


def test_a_key_file_others_can_read_or_with_a_bad_line_is_refused(tmp_path):
    cert, key = make_cert(tmp_path, "server")
    path = tmp_path / "tickets.key"
    keys = key_file(path, [os.urandom(80) for _ in range(3)])
    path.chmod(0o644)
    check_refused(tmp_path, cert, key, keys,
                  "CONF:3: listener 't': the ticket key file %s is open to group "
                  "or others (mode 0644); it is a secret: chmod 600 %s" % (keys, keys))
    path.write_text(base64.b64encode(os.urandom(80)).decode() + "\nnot base64!\n" +
                    base64.b64encode(os.urandom(64)).decode() + "\n")
    path.chmod(0o600)
    check_refused(tmp_path, cert, key, keys, "%s:2: not base64" % keys)
    path.write_text("\n".join(base64.b64encode(os.urandom(n)).decode()
                              for n in (80, 80, 64)) + "\n")
    check_refused(tmp_path, cert, key, keys, "%s:3: a key of 64 bytes" % keys)
    check_refused(tmp_path, cert, key, str(tmp_path / "missing.key"),
                  "CONF:3: listener 't': cannot open the ticket key file")


def test_a_key_file_needs_a_certificate(tmp_path):
    check_refused(tmp_path, None, None, "/etc/esockd/tickets.key",
                  "CONF:2: 'tls_ticket_keys' in listener 't' needs 'tls_certificate'")


def test_a_resumed_tls13_session_gets_a_fresh_ticket(esockd, tmp_path):
    """After a resumption the client holds a new ticket (a new session),
    so a client that keeps only its last session resumes every time.
    OpenSSL sends a TLS 1.3 client no ticket after a resumption unless
    the key callback asks to renew: the TLS benchmark's client, which
    keeps its last session, resumed only every other handshake."""
    import ssl
    cert, key = make_cert(tmp_path, "server")
    d = esockd.start(workers=1, listeners=[tls_listener(cert, key)])
    ctx = client_ctx(cert)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    session = new_session(d.port, ctx)
    for i in range(4):
        reused, nxt = resume(d.port, ctx, session)
        assert reused, "connection %d did not resume" % (i + 1)
        assert nxt.id != session.id, "no fresh ticket after resumption %d" % (i + 1)
        session = nxt
