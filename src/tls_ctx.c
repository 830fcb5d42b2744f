/*
 * tls_ctx.c: the TLS contexts, made by the master when it loads a config.
 *
 * One SSL_CTX per TLS listener per generation (tls_ctx_load, also run by
 * "esockd -t"), so a missing file or a key that does not match its
 * certificate is an error at FILE:LINE before anything starts or a
 * reload is applied.  The context is runtime state: it lives in the
 * generation's struct listener, never in the parsed config.  Workers
 * inherit it by fork: the certificate is read once, with the master's
 * rights, and the session-ticket keys OpenSSL makes with the context are
 * the same in every worker, so a client resumes on whichever worker it
 * reaches.
 */
#include "tls_ctx.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "config.h"
#include "tls_policy.h"

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

/* A listener's context, or NULL with why and *line, the key's line. */
static SSL_CTX *
ctx_new(const struct listener_conf *lc, char *why, size_t len, int *line)
{
	const char *key = lc->tls_key[0] != '\0' ? lc->tls_key :
	    lc->tls_certificate;
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
	if (SSL_CTX_use_certificate_chain_file(ctx, lc->tls_certificate) != 1) {
		tls_reasons(r, sizeof(r));
		snprintf(why, len, "cannot load the certificate chain from %s: "
		    "%s; give a PEM file with the certificate first", 
		    lc->tls_certificate, r);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 &&
	    ERR_GET_REASON(ERR_peek_last_error()) != X509_R_KEY_VALUES_MISMATCH) {
		tls_reasons(r, sizeof(r));
		snprintf(why, len, "cannot load the private key from %s: %s%s",
		    key, r, lc->tls_key[0] == '\0' ? "; set tls_key when the "
		    "key is in a file of its own" : "");
		goto fail;
	}
	/* A key of the certificate's type is checked as it loads (the
	 * mismatch left in the queue); a key of another type only here. */
	if (ERR_peek_error() != 0 || SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(why, len, "the private key in %s does not match the "
		    "certificate in %s", key, lc->tls_certificate);
		goto fail;
	}
	if (tls_policy_apply(ctx, lc, why, len, line) == -1)
		goto fail;
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

int
tls_ctx_load(const struct esd_config *conf, struct listener *l,
    struct config_diag *diag)
{
	int rc = 0;

	for (size_t i = 0; i < conf->nlisteners; i++) {
		const struct listener_conf *lc = &conf->listeners[i];
		char why[1024];
		int line = lc->tls_line;

		l[i].tls_ctx = NULL;
		if (lc->tls_certificate[0] == '\0')
			continue;
		if ((l[i].tls_ctx = ctx_new(lc, why, sizeof(why), &line)) ==
		    NULL) {
			config_diag_add(diag, "%s:%d: listener '%s': %s",
			    conf->path, line, lc->name, why);
			rc = -1;
		}
	}
	if (rc == -1)
		tls_ctx_free_all(l, conf->nlisteners);
	return rc;
}

void
tls_ctx_free_all(struct listener *l, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		SSL_CTX_free(l[i].tls_ctx);
		l[i].tls_ctx = NULL;
	}
}

int
tls_ctx_check(const struct esd_config *conf, struct config_diag *diag)
{
	struct listener *l = calloc(conf->nlisteners + 1, sizeof(*l));
	int rc;

	if (l == NULL) {
		config_diag_add(diag, "%s: out of memory to check the TLS "
		    "certificates", conf->path);
		return -1;
	}
	if ((rc = tls_ctx_load(conf, l, diag)) == 0)
		tls_ctx_free_all(l, conf->nlisteners);
	free(l);
	return rc;
}

