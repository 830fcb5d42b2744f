/*
 * tls_policy.h: what a listener asks of its clients' TLS, set on its
 * context by the master: client certificates, ALPN, versions and
 * algorithms.
 */
#ifndef ESOCKD_TLS_POLICY_H
#define ESOCKD_TLS_POLICY_H

#include <stddef.h>

#include "config.h"

struct ssl_ctx_st;

/*
 * Apply lc's tls_client_ca, tls_verify_client, tls_verify_depth, tls_crl,
 * tls_alpn, tls_max_version, tls_ciphers, tls_ciphersuites and tls_groups
 * to ctx.  -1 with why (quoting OpenSSL) and *line, the line of the key
 * OpenSSL refused.
 */
int	tls_policy_apply(struct ssl_ctx_st *, const struct listener_conf *,
	    char *why, size_t len, int *line);

#endif
