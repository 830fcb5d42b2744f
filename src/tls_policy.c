/*
 * tls_policy.c: a listener's demands on its clients' TLS, applied by the
 * master to the context tls_ctx.c makes: client certificates (the CAs,
 * the CRL, how much is required), ALPN, the newest version, and the
 * cipher and group lists.
 *
 * config.c checks how these keys hang together; only OpenSSL can say
 * whether a cipher string or a CA file is good, so that is checked here,
 * at start, reload and "esockd -t", with the key's line and OpenSSL's
 * reason.  The ALPN callback this sets runs in the workers, which
 * inherit the context and the listener's config by fork.
 */
#include "tls_policy.h"

#include <stdio.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>

#include "tls_ctx.h"

/* Fill why as "WHAT: OpenSSL's reasons; HINT", the error queue emptied. */
static int
refused(char *why, size_t len, int *line, int at, const char *what,
    const char *hint)
{
	char r[512];

	tls_reasons(r, sizeof(r));
	snprintf(why, len, "%s: %s; %s", what, r, hint);
	*line = at;
	return -1;
}

/*
 * ALPN (RFC 7301): the first of the server's protocols that the client
 * offers.  None shared is fatal with no_application_protocol, as the RFC
 * says; a client that offers none never gets here and goes on.
 */
static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	const struct listener_conf *lc = arg;

	(void)ssl;
	if (SSL_select_next_proto((unsigned char **)out, outlen, lc->tls_alpn,
	    (unsigned int)lc->tls_alpn_len, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED) {
		*outlen = 0;
		return SSL_TLSEXT_ERR_ALERT_FATAL;	/* alert 120 */
	}
	return SSL_TLSEXT_ERR_OK;
}

/* The CRL checked against every client certificate's chain. */
static int
load_crl(SSL_CTX *ctx, const struct listener_conf *lc, char *why,
    size_t len, int *line)
{
	X509_STORE *store = SSL_CTX_get_cert_store(ctx);
	X509_LOOKUP *lu;

	if (store == NULL ||
	    (lu = X509_STORE_add_lookup(store, X509_LOOKUP_file())) == NULL ||
	    X509_load_crl_file(lu, lc->tls_crl, X509_FILETYPE_PEM) <= 0)
		return refused(why, len, line, lc->tls_crl_line, "cannot load "
		    "the CRL", "give a readable PEM file of one or more CRLs");
	/* The leaf only: a CA's own revocation needs its issuer's CRL,
	 * which an operator of one CA does not have. */
	if (X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK) != 1)
		return refused(why, len, line, lc->tls_crl_line, "cannot turn "
		    "on CRL checks", "report this");
	return 0;
}

/* Ask for client certificates, verified against tls_client_ca. */
static int
client_auth(SSL_CTX *ctx, const struct listener_conf *lc, char *why,
    size_t len, int *line)
{
	STACK_OF(X509_NAME) *names;
	int mode = SSL_VERIFY_PEER;

	if (lc->tls_verify_client == TLS_VERIFY_NONE)
		return 0;
	if (SSL_CTX_load_verify_locations(ctx, lc->tls_client_ca, NULL) != 1)
		return refused(why, len, line, lc->tls_client_ca_line,
		    "cannot load the client CAs", "give a readable PEM file "
		    "of CA certificates");
	if ((names = SSL_load_client_CA_file(lc->tls_client_ca)) == NULL)
		return refused(why, len, line, lc->tls_client_ca_line,
		    "cannot read the CA names", "give a readable PEM file of "
		    "CA certificates");
	SSL_CTX_set_client_CA_list(ctx, names);	/* ctx owns names now */
	if (lc->tls_verify_client == TLS_VERIFY_REQUIRED)
		mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
	SSL_CTX_set_verify(ctx, mode, NULL);
	SSL_CTX_set_verify_depth(ctx, lc->tls_verify_depth);
	/* A session that was verified may resume only here; OpenSSL
	 * refuses to resume without a context id once it verifies. */
	if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)
	    lc->name, (unsigned int)strnlen(lc->name, SSL_MAX_SID_CTX_LENGTH))
	    != 1)
		return refused(why, len, line, lc->tls_client_ca_line,
		    "cannot set the session context", "report this");
	if (lc->tls_crl[0] != '\0')
		return load_crl(ctx, lc, why, len, line);
	return 0;
}

/* The newest version and the algorithm lists, each as OpenSSL takes it. */
static int
algorithms(SSL_CTX *ctx, const struct listener_conf *lc, char *why,
    size_t len, int *line)
{
	if (SSL_CTX_set_max_proto_version(ctx, lc->tls_max_version == 12 ?
	    TLS1_2_VERSION : TLS1_3_VERSION) != 1)
		return refused(why, len, line, lc->tls_line, "cannot set "
		    "tls_max_version", "report this");
	if (lc->tls_ciphers[0] != '\0' &&
	    SSL_CTX_set_cipher_list(ctx, lc->tls_ciphers) != 1)
		return refused(why, len, line, lc->tls_ciphers_line,
		    "OpenSSL refuses tls_ciphers", "give a cipher list as "
		    "openssl-ciphers(1) reads it, such as "
		    "\"ECDHE+AESGCM:ECDHE+CHACHA20\"");
	if (lc->tls_ciphersuites[0] != '\0' &&
	    SSL_CTX_set_ciphersuites(ctx, lc->tls_ciphersuites) != 1)
		return refused(why, len, line, lc->tls_ciphersuites_line,
		    "OpenSSL refuses tls_ciphersuites", "give TLS 1.3 suites "
		    "such as \"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384\"");
	if (lc->tls_groups[0] != '\0' &&
	    SSL_CTX_set1_groups_list(ctx, lc->tls_groups) != 1)
		return refused(why, len, line, lc->tls_groups_line,
		    "OpenSSL refuses tls_groups", "give groups such as "
		    "\"X25519:P-256\"");
	return 0;
}

int
tls_policy_apply(SSL_CTX *ctx, const struct listener_conf *lc, char *why,
    size_t len, int *line)
{
	ERR_clear_error();
	if (algorithms(ctx, lc, why, len, line) == -1 ||
	    client_auth(ctx, lc, why, len, line) == -1)
		return -1;
	if (lc->tls_alpn_len > 0)
		SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)lc);
	return 0;
}
