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
 * in tls_failures; its reason (tls_fail_*) is counted here, the one
 * file that can read OpenSSL's, as are the handshakes done, by version,
 * resumed or not, and how long they took.
 */
#include "tls.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "proxy_proto.h"
#include "session.h"
#include "tls_ctx.h"

static void handshake_step(struct session *);

/* Why a client certificate did not verify, as a failure counter. */
static enum shm_counter
verify_reason(long v)
{
	switch (v) {
	case X509_V_ERR_CERT_HAS_EXPIRED:
	case X509_V_ERR_CERT_NOT_YET_VALID:
		return SC_TLS_FAIL_EXPIRED;
	case X509_V_ERR_CERT_REVOKED:
		return SC_TLS_FAIL_REVOKED;
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
	case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
	case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
	case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
	case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
		return SC_TLS_FAIL_UNKNOWN_CA;
	default:
		return SC_TLS_FAIL_BAD_CERT;
	}
}

/*
 * Why a handshake failed, from the certificate's verify result and the
 * reason of the oldest error queued (read before tls_reasons empties
 * the queue).  "wrong version number" is a first record that is not
 * TLS at all: a real TLS client of another version gets past the record
 * layer and fails on the versions it offers.
 */
static enum shm_counter
failure_reason(struct session *s)
{
	unsigned long e = ERR_peek_error();
	long v = SSL_get_verify_result(s->ssl);

	if (v != X509_V_OK && SSL_get0_peer_certificate(s->ssl) != NULL)
		return verify_reason(v);
	if (e == 0 || ERR_GET_LIB(e) != ERR_LIB_SSL)
		return SC_TLS_FAIL_OTHER;
	switch (ERR_GET_REASON(e)) {
	case SSL_R_HTTP_REQUEST:
	case SSL_R_HTTPS_PROXY_REQUEST:
	case SSL_R_WRONG_VERSION_NUMBER:
	case SSL_R_PACKET_LENGTH_TOO_LONG:
	case SSL_R_RECORD_LENGTH_MISMATCH:
		return SC_TLS_FAIL_PLAINTEXT;
	case SSL_R_UNSUPPORTED_PROTOCOL:
	case SSL_R_VERSION_TOO_LOW:
	case SSL_R_VERSION_TOO_HIGH:
	case SSL_R_NO_PROTOCOLS_AVAILABLE:
	case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
		return SC_TLS_FAIL_VERSION;
	case SSL_R_NO_SHARED_CIPHER:
	case SSL_R_NO_SHARED_GROUPS:
	case SSL_R_NO_SUITABLE_KEY_SHARE:
		return SC_TLS_FAIL_NO_CIPHER;
	case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
		return SC_TLS_FAIL_NO_CERT;
	case SSL_R_NO_APPLICATION_PROTOCOL:
		return SC_TLS_FAIL_NO_ALPN;
	case SSL_R_CERTIFICATE_VERIFY_FAILED:
		return verify_reason(v);
	case SSL_R_CALLBACK_FAILED:
		/* The servername callback's unrecognized_name (tls_ctx.c)
		 * is the one failing callback a strict listener has. */
		return s->acc->lc->tls_sni_strict ? SC_TLS_FAIL_UNKNOWN_SNI :
		    SC_TLS_FAIL_OTHER;
	default:
		return SC_TLS_FAIL_OTHER;
	}
}

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

	/* Each failure tls_failures counts has one reason, counted first
	 * (shm.h: read after tls_failures, so never behind it). */
	if (why == SC_CLOSED_HANDSHAKE_TIMEOUT)
		shm_count(&session_counters(s)->tls_fail_timeout, 1);
	else if (why == SC_CLOSED_HANDSHAKE_FAILED)
		shm_count(&session_counters(s)->n[failure_reason(s)], 1);
	/* OpenSSL's reasons are put in words only for a line that is
	 * written: a flood of bad handshakes mostly is not. */
	if (!log_ratelimit_pass(&s->acc->rl_tls, &suppressed))
		ERR_clear_error();
	else {
		if (what == NULL)
			tls_reasons(r, sizeof(r));
		else {
			snprintf(r, sizeof(r), "%s", what);
			ERR_clear_error();
		}
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

/* Now on the monotonic clock, in microseconds; 0 if it cannot be read. */
static int64_t
now_us(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) == -1)
		return 0;
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * A handshake done: its version, resumed or not, and how long it took,
 * on a clock of its own (the loop's cached time may not move between
 * the accept and the client's last flight).
 */
static void
handshake_done(struct session *s)
{
	static const uint64_t le_us[] = TLS_HS_BUCKETS_US;
	struct shm_counters *c = session_counters(s);
	int resumed = SSL_session_reused(s->ssl);
	int64_t took = now_us() - s->tls_began;
	uint64_t us = took > 0 && s->tls_began != 0 ? (uint64_t)took : 0;
	int b = 0;

	if (SSL_version(s->ssl) == TLS1_3_VERSION)
		shm_count(resumed ? &c->tls13_resumed : &c->tls13_full, 1);
	else
		shm_count(resumed ? &c->tls12_resumed : &c->tls12_full, 1);
	while (b < TLS_HS_NBUCKETS - 1 && us > le_us[b])
		b++;
	shm_count(&c->tls_hs_bucket[b], 1);
	shm_count(&c->tls_hs_us, us);
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
		handshake_done(s);
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
	s->tls_began = now_us();
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
