/*
 * tls.c: TLS in a worker: the handshake, then reads and writes of the
 * client for relay.c (the contexts are made in tls_ctx.c, by the master).
 *
 * The handshake is a phase of the session (tls_start, from session_next),
 * within tls_handshake_timeout of the accept; when it is done, session.c
 * decides what comes next (the backend connect).  relay.c then reads and
 * writes the client through tls_read and tls_write, which behave like
 * read(2) and send(2) on a non-blocking socket.  A failed or late
 * handshake is logged here and closed by session_close, which counts it
 * in tls_failures.
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "proxy_proto.h"
#include "session.h"
#include "tls_ctx.h"

static void handshake_step(struct session *);

/*
 * The handshake failed (why: SC_CLOSED_HANDSHAKE_FAILED) or ran out of
 * time (SC_CLOSED_HANDSHAKE_TIMEOUT): say so now and then, with
 * OpenSSL's reasons (which only this file can read), and close.
 */
static void
handshake_failed(struct session *s, enum shm_counter why, const char *what)
{
	char r[512], id[SESSION_ID_LEN];
	uint64_t suppressed;

	if (what == NULL)
		tls_reasons(r, sizeof(r));
	else {
		snprintf(r, sizeof(r), "%s", what);
		ERR_clear_error();
	}
	if (log_ratelimit_pass(&s->acc->rl_tls, &suppressed)) {
		session_id(session_worker(s), s->seq, id);
		log_info("listener '%s': TLS handshake failed: %s (%llu more "
		    "since the last report) [conn %s]", s->acc->lc->name, r,
		    (unsigned long long)suppressed, id);
	}
	session_close(s, why);
}

static void
on_handshake(evutil_socket_t fd, short what, void *arg)
{
	struct session *s = arg;

	(void)fd;
	if (what & EV_TIMEOUT) {
		handshake_failed(s, SC_CLOSED_HANDSHAKE_TIMEOUT,
		    "no handshake within tls_handshake_timeout");
		return;
	}
	handshake_step(s);
}

/* Run the handshake as far as the socket lets it, then wait or go on. */
static void
handshake_step(struct session *s)
{
	struct timeval now, tv;
	int rc, err;
	short ev;

	errno = 0;
	if ((rc = SSL_do_handshake(s->ssl)) == 1) {
		event_del(&s->cev);
		session_next(s);
		return;
	}
	err = SSL_get_error(s->ssl, rc);
	if (err == SSL_ERROR_WANT_READ)
		ev = EV_READ;
	else if (err == SSL_ERROR_WANT_WRITE)
		ev = EV_WRITE;
	else {
		handshake_failed(s, SC_CLOSED_HANDSHAKE_FAILED,
		    err == SSL_ERROR_SYSCALL &&
		    ERR_peek_error() == 0 ? (errno ? strerror(errno) :
		    "the client closed the connection") : NULL);
		return;
	}
	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	evutil_timersub(&s->deadline, &now, &tv);
	if (tv.tv_sec < 0) {
		handshake_failed(s, SC_CLOSED_HANDSHAKE_TIMEOUT,
		    "no handshake within tls_handshake_timeout");
		return;
	}
	event_del(&s->cev);
	event_assign(&s->cev, session_worker(s)->base, s->cfd, ev, on_handshake,
	    s);
	if (event_add(&s->cev, &tv) == -1)
		handshake_failed(s, SC_CLOSED_LOCAL_ERROR,
		    "cannot watch the connection");
}

/* The handshake phase (from session_next): an SSL for the client. */
void
tls_start(struct session *s)
{
	struct timeval now, tv = { s->acc->lc->tls_handshake_timeout, 0 };

	ERR_clear_error();
	if ((s->ssl = SSL_new(s->acc->tls_ctx)) == NULL ||
	    SSL_set_fd(s->ssl, s->cfd) != 1) {
		handshake_failed(s, SC_CLOSED_LOCAL_ERROR, NULL);
		return;
	}
	SSL_set_accept_state(s->ssl);
	event_base_gettimeofday_cached(session_worker(s)->base, &now);
	evutil_timeradd(&now, &tv, &s->deadline);
	handshake_step(s);
}

void
tls_free(struct session *s)
{
	SSL_free(s->ssl);	/* the socket is not its to close */
	s->ssl = NULL;
}

/*
 * SSL_read's or SSL_write's result as read(2) or send(2) would give it.
 * SSL_ERROR_ZERO_RETURN is EOF for a read; for a write it is a failure
 * after the client's EOF (its close_notify, or an EOF taken as one with
 * SSL_OP_IGNORE_UNEXPECTED_EOF), that is a client that is gone: EPIPE,
 * never 0, which a caller would take as "try again when writable".
 */
static ssize_t
io_result(struct session *s, int rc, int writing)
{
	switch (SSL_get_error(s->ssl, rc)) {
	case SSL_ERROR_ZERO_RETURN:
		if (!writing)
			return 0;
		ERR_clear_error();
		s->flags |= S_TLS_DEAD;
		errno = EPIPE;
		return -1;
	case SSL_ERROR_WANT_READ:
	case SSL_ERROR_WANT_WRITE:
		errno = EAGAIN;
		return -1;
	case SSL_ERROR_SYSCALL:
		ERR_clear_error();
		s->flags |= S_TLS_DEAD;
		if (errno == 0 || errno == EAGAIN)
			errno = ECONNRESET;
		return -1;
	default:
		ERR_clear_error();
		s->flags |= S_TLS_DEAD;
		errno = EPROTO;
		return -1;
	}
}

ssize_t
tls_read(struct session *s, void *buf, size_t n)
{
	int rc = SSL_read(s->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);

	return rc > 0 ? rc : io_result(s, rc, 0);
}

ssize_t
tls_write(struct session *s, const void *buf, size_t n)
{
	int rc = SSL_write(s->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);

	return rc > 0 ? rc : io_result(s, rc, 1);
}

/* Decrypted bytes waiting in the SSL, which epoll cannot see. */
int
tls_pending(struct session *s)
{
	return SSL_has_pending(s->ssl);
}

/*
 * Our close_notify, before the FIN: once, only after a finished
 * handshake and never after a fatal error (OpenSSL forbids it then).
 * Best effort: a client that is gone just does not get it.
 */
void
tls_shutdown(struct session *s)
{
	if ((s->flags & S_TLS_DEAD) || !SSL_is_init_finished(s->ssl) ||
	    (SSL_get_shutdown(s->ssl) & SSL_SENT_SHUTDOWN))
		return;
	if (SSL_shutdown(s->ssl) < 0) {
		ERR_clear_error();
		s->flags |= S_TLS_DEAD;
	}
}

/*
 * The name of our certificate's key for PP2_SUBTYPE_SSL_KEY_ALG, as
 * HAProxy writes it: "RSA2048", "EC256", else the key type's short name.
 */
static void
key_alg_name(EVP_PKEY *pk, char *buf, size_t cap)
{
	int id = EVP_PKEY_get_base_id(pk);

	if (id == EVP_PKEY_RSA)
		snprintf(buf, cap, "RSA%d", EVP_PKEY_get_bits(pk));
	else if (id == EVP_PKEY_EC)
		snprintf(buf, cap, "EC%d", EVP_PKEY_get_bits(pk));
	else if (id == EVP_PKEY_DSA)
		snprintf(buf, cap, "DSA%d", EVP_PKEY_get_bits(pk));
	else if (OBJ_nid2sn(id) != NULL)
		snprintf(buf, cap, "%s", OBJ_nid2sn(id));
}

/*
 * The client certificate's subject CN as UTF-8 in t->cn, its whole
 * length in t->cn_len (0: none; over PROXY_STR_MAX: the header builder
 * refuses it rather than send a cut name).
 */
static void
client_cn(X509 *peer, struct proxy_tls *t)
{
	X509_NAME *name = X509_get_subject_name(peer);
	unsigned char *utf8 = NULL;
	int i, n;

	i = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
	if (i < 0 || (n = ASN1_STRING_to_UTF8(&utf8,
	    X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i)))) < 0) {
		ERR_clear_error();
		return;
	}
	t->cn_len = (size_t)n;
	memcpy(t->cn, utf8, t->cn_len > PROXY_STR_MAX ? PROXY_STR_MAX :
	    t->cn_len);
	OPENSSL_free(utf8);
}

/*
 * What the client negotiated, for the PROXY header's TLVs (proxy_proto.c
 * stays free of OpenSSL).  The strings point into OpenSSL's tables or
 * the SSL, so t lives no longer than the session.  The verify result
 * is the spec's: zero only when the client presented a certificate and
 * it was verified, else non-zero (1, X509_V_ERR_UNSPECIFIED, when it
 * presented none).  A session resumed with a certificate had it checked
 * in the full handshake: CERT_SESS without CERT_CONN.
 */
void
tls_identity(struct session *s, struct proxy_tls *t)
{
	X509 *peer = SSL_get0_peer_certificate(s->ssl);
	X509 *ours = SSL_get_certificate(s->ssl);
	EVP_PKEY *pk;
	unsigned int alpn_len = 0;
	int nid;

	memset(t, 0, sizeof(*t));
	t->client = PP2_CLIENT_SSL;
	t->verify = X509_V_ERR_UNSPECIFIED;
	t->version = SSL_get_version(s->ssl);
	t->cipher = SSL_get_cipher_name(s->ssl);
	if (ours != NULL && (nid = X509_get_signature_nid(ours)) != NID_undef)
		t->sig_alg = OBJ_nid2sn(nid);	/* NULL: no such TLV */
	if (ours != NULL && (pk = X509_get0_pubkey(ours)) != NULL)
		key_alg_name(pk, t->key_alg, sizeof(t->key_alg));
	if (peer != NULL) {
		t->client |= PP2_CLIENT_CERT_SESS;
		if (!SSL_session_reused(s->ssl))
			t->client |= PP2_CLIENT_CERT_CONN;
		t->verify = (uint32_t)SSL_get_verify_result(s->ssl);
		client_cn(peer, t);
	}
	t->sni = SSL_get_servername(s->ssl, TLSEXT_NAMETYPE_host_name);
	SSL_get0_alpn_selected(s->ssl, &t->alpn, &alpn_len);
	t->alpn_len = alpn_len;
}
