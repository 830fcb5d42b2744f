/*
 * tls_ctx.c: the TLS contexts, made by the master when it loads a config.
 *
 * One SSL_CTX per TLS listener per generation (tls_ctx_load, also run by
 * "esockd -t"), so a missing file or a key that does not match its
 * certificate is an error at FILE:LINE before anything starts or a
 * reload is applied.  The context is runtime state: it lives in the
 * generation's struct listener, never in the parsed config.  Workers
 * inherit it by fork: the certificate is read once, with the master's
 * rights.  The session-ticket keys are not the context's but the
 * daemon's (tls_tickets.c), so a client resumes on whichever worker it
 * reaches, also after a reload; the callback is on the default context,
 * whose keys OpenSSL uses after an SNI switch too.
 *
 * A listener with tls_sni has one more context per entry, made the same
 * way; a servername callback on the default context switches a
 * handshake to the entry sni_match picks.  Each certificate's validity
 * is checked as it loads: out of its dates is a warning with the date,
 * not an error (an operator may be about to replace it), and its
 * notAfter is kept for /metrics.
 */
#include "tls_ctx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config.h"
#include "log.h"
#include "sni_match.h"
#include "tls_policy.h"
#include "tls_tickets.h"

/* OpenSSL's reasons for the last failure, oldest first; the queue is
 * emptied so the next connection starts clean. */
void
tls_reasons(char *buf, size_t len)
{
	unsigned long e;
	size_t used = 0;

	buf[0] = '\0';
	while ((e = ERR_get_error()) != 0 && used + 2 < len) {
		char one[256];
		const char *r = ERR_reason_error_string(e);

		if (r == NULL) {
			ERR_error_string_n(e, one, sizeof(one));
			r = one;
		}
		used += (size_t)snprintf(buf + used, len - used, "%s%s",
		    used ? "; " : "", r);
	}
	ERR_clear_error();
	if (buf[0] == '\0')
		snprintf(buf, len, "%s", errno ? strerror(errno) : "unknown");
}

/*
 * A context for lc serving the chain in cert and the key in keyfile ("":
 * in cert); keyname is the setting that names the key, for the hint.
 * NULL with why; *line (the certificate's on entry) becomes the line of
 * a policy key OpenSSL refused.
 */
static SSL_CTX *
ctx_new(const struct listener_conf *lc, const char *cert, const char *keyfile,
    const char *keyname, char *why, size_t len, int *line)
{
	const char *key = keyfile[0] != '\0' ? keyfile : cert;
	char r[512];
	SSL_CTX *ctx;

	ERR_clear_error();
	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_reasons(r, sizeof(r));
		snprintf(why, len, "cannot make a TLS context: %s", r);
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, lc->tls_min_version == 13 ?
	    TLS1_3_VERSION : TLS1_2_VERSION);
	/* No renegotiation (a client could make us do the work again and
	 * again); EOF without close_notify is an EOF, as with plain TCP. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_COMPRESSION);
	/* Behave like send(2), and give the buffers back when idle. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
	    SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	/* Tickets resume across workers; a per-process cache would not. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	if (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
		tls_reasons(r, sizeof(r));
		snprintf(why, len, "cannot load the certificate chain from %s: "
		    "%s; give a PEM file with the certificate first", 
		    cert, r);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
	    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
		tls_reasons(r, sizeof(r));
		snprintf(why, len, "cannot load the private key from %s: %s%s%s%s",
		    key, r, keyfile[0] == '\0' ? "; set " : "",
		    keyfile[0] == '\0' ? keyname : "", keyfile[0] == '\0' ?
		    " when the key is in a file of its own" : "");
		goto fail;
	}
	/* A key of the certificate's type is checked as it loads (the
	 * mismatch left in the queue); a key of another type only here. */
	if (ERR_peek_error() != 0 || SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(why, len, "the private key in %s does not match the "
		    "certificate in %s", key, cert);
		goto fail;
	}
	if (tls_policy_apply(ctx, lc, why, len, line) == -1)
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

/* t as ISO 8601 UTC, "2026-01-31T23:59:59Z". */
static void
iso8601(time_t t, char *buf, size_t len)
{
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(buf, len, "@%lld", (long long)t);
}

/* An ASN.1 time as seconds since the epoch; -1 if it cannot be read. */
static int
asn1_time(const ASN1_TIME *a, time_t *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (a == NULL || ASN1_TIME_to_tm(a, &tm) != 1)
		return -1;
	*t = timegm(&tm);
	return 0;
}

/*
 * The notAfter of ctx's certificate into *not_after, and a warning with
 * the date at file:line when the certificate is expired or not yet
 * valid: a warning, so that a reload can still go through while the
 * new certificate is on its way.
 */
static void
check_dates(SSL_CTX *ctx, const char *file, int line, const char *lname,
    const char *cert, time_t *not_after, int warn)
{
	X509 *x = SSL_CTX_get0_certificate(ctx);
	time_t now = time(NULL), nb;
	char date[32];

	*not_after = 0;
	if (x == NULL || asn1_time(X509_get0_notAfter(x), not_after) == -1 ||
	    asn1_time(X509_get0_notBefore(x), &nb) == -1) {
		ERR_clear_error();
		if (warn)
			log_warnx("%s:%d: listener '%s': cannot read the validity "
			    "dates of the certificate in %s", file, line, lname,
			    cert);
		return;
	}
	if (!warn)
		return;
	if (*not_after < now) {
		iso8601(*not_after, date, sizeof(date));
		log_warnx("%s:%d: listener '%s': the certificate in %s expired "
		    "on %s; clients will refuse it: renew it", file, line,
		    lname, cert, date);
	} else if (nb > now) {
		iso8601(nb, date, sizeof(date));
		log_warnx("%s:%d: listener '%s': the certificate in %s is not "
		    "valid before %s; clients will refuse it until then",
		    file, line, lname, cert, date);
	}
}

/* One context, its error at file:line, its dates checked (and a warning
 * for dates out of range when warn). */
static SSL_CTX *
cert_load(const struct esd_config *conf, const struct listener_conf *lc,
    const char *cert, const char *key, const char *keyname, int line,
    time_t *not_after, struct config_diag *diag, int warn)
{
	char why[1024];
	SSL_CTX *ctx;

	int at = line;

	if ((ctx = ctx_new(lc, cert, key, keyname, why, sizeof(why), &at)) ==
	    NULL) {
		config_diag_add(diag, "%s:%d: listener '%s': %s", conf->path,
		    at, lc->name, why);
		return NULL;
	}
	check_dates(ctx, conf->path, line, lc->name, cert, not_after, warn);
	return ctx;
}

/*
 * The servername callback of a listener with tls_sni: serve the entry
 * the client named, else the default, or refuse with unrecognized_name
 * under tls_sni_strict.  OpenSSL calls it with or without a name.
 */
static int
servername(SSL *ssl, int *alert, void *arg)
{
	const struct listener *l = arg;
	const struct listener_conf *lc = l->conf;
	const char *host = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	int i = sni_match(lc->tls_sni.v, lc->tls_sni.n, host);

	if (i == -1) {
		if (!lc->tls_sni_strict)
			return SSL_TLSEXT_ERR_OK;	/* the default */
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	if (SSL_set_SSL_CTX(ssl, l->sni[i].ctx) == NULL) {
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	return SSL_TLSEXT_ERR_OK;
}

/* The default context of l, and one per tls_sni entry; -1 when any fails. */
static int
listener_load(const struct esd_config *conf, const struct listener_conf *lc,
    struct listener *l, struct config_diag *diag, int warn)
{
	int rc = 0;

	if ((l->tls_ctx = cert_load(conf, lc, lc->tls_certificate, lc->tls_key,
	    "tls_key", lc->tls_line, &l->tls_not_after, diag, warn)) == NULL)
		rc = -1;
	if (lc->tls_sni.n == 0 && !lc->tls_sni_strict)
		return rc;
	if (lc->tls_sni.n > 0 &&
	    (l->sni = calloc(lc->tls_sni.n, sizeof(*l->sni))) == NULL) {
		config_diag_add(diag, "%s:%d: listener '%s': out of memory for "
		    "the tls_sni contexts", conf->path, lc->tls_line, lc->name);
		return -1;
	}
	l->nsni = lc->tls_sni.n;
	for (size_t j = 0; j < lc->tls_sni.n; j++) {
		const struct sni_conf *e = &lc->tls_sni.v[j];

		if ((l->sni[j].ctx = cert_load(conf, lc, e->certificate, e->key,
		    "key", e->line, &l->sni[j].not_after, diag, warn)) == NULL)
			rc = -1;
	}
	if (rc == -1)
		return -1;
	if (SSL_CTX_set_tlsext_servername_callback(l->tls_ctx,
	    servername) != 1 ||
	    SSL_CTX_set_tlsext_servername_arg(l->tls_ctx, l) != 1) {
		config_diag_add(diag, "%s:%d: listener '%s': cannot set the "
		    "servername callback", conf->path, lc->tls_line, lc->name);
		return -1;
	}
	return 0;
}

/* tls_ctx_load, and the date warnings only when warn. */
static int
load_all(const struct esd_config *conf, struct listener *l,
    struct config_diag *diag, int warn)
{
	int rc = 0;

	for (size_t i = 0; i < conf->nlisteners; i++) {
		const struct listener_conf *lc = &conf->listeners[i];

		l[i].tls_ctx = NULL;
		l[i].sni = NULL;
		l[i].nsni = 0;
		if (lc->tls_certificate[0] == '\0')
			continue;
		if (listener_load(conf, lc, &l[i], diag, warn) == -1)
			rc = -1;
		/* The key file is checked even when the context failed. */
		if (tls_tickets_prepare(conf, lc, &l[i], diag) == -1)
			rc = -1;
	}
	if (rc == -1)
		tls_ctx_free_all(l, conf->nlisteners);
	return rc;
}

int
tls_ctx_load(const struct esd_config *conf, struct listener *l,
    struct config_diag *diag)
{
	return load_all(conf, l, diag, 1);
}

void
tls_ctx_free_all(struct listener *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		SSL_CTX_free(l[i].tls_ctx);
		l[i].tls_ctx = NULL;
		for (size_t j = 0; j < l[i].nsni; j++)
			SSL_CTX_free(l[i].sni[j].ctx);
		free(l[i].sni);
		l[i].sni = NULL;
		l[i].nsni = 0;
		tls_tickets_free(l[i].tickets);
		l[i].tickets = NULL;
	}
}

int
tls_ctx_check(const struct esd_config *conf, struct config_diag *diag,
    int warn)
{
	struct listener *l = calloc(conf->nlisteners + 1, sizeof(*l));
	int rc;

	if (l == NULL) {
		config_diag_add(diag, "%s: out of memory to check the TLS "
		    "certificates", conf->path);
		return -1;
	}
	if ((rc = load_all(conf, l, diag, warn)) == 0)
		tls_ctx_free_all(l, conf->nlisteners);
	free(l);
	return rc;
}

