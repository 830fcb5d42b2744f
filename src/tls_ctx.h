/*
 * tls_ctx.h: the master's side of TLS: one context per TLS listener,
 * made when a config is loaded (and checked by "esockd -t"), and
 * OpenSSL's reasons for a failure in words.
 */
#ifndef ESOCKD_TLS_CTX_H
#define ESOCKD_TLS_CTX_H

#include <stddef.h>

#include "config.h"
#include "listener.h"

/*
 * A context for every TLS listener of conf, into l[i].tls_ctx (l has
 * conf->nlisteners entries).  Returns -1 with every error in diag, as
 * FILE:LINE, and then no context is left made.
 */
int	tls_ctx_load(const struct esd_config *, struct listener *l,
	    struct config_diag *);
/* Free the contexts of l[0..n); a NULL one is skipped. */
void	tls_ctx_free_all(struct listener *l, size_t n);
/*
 * tls_ctx_load into a scratch set, then free it: esockd -t, and the check
 * before the start.  warn: say which certificates are out of their dates
 * (-t; at the start the first generation's load says it, once).
 */
int	tls_ctx_check(const struct esd_config *, struct config_diag *, int warn);
/* OpenSSL's reasons for the last failure; its error queue is emptied. */
void	tls_reasons(char *buf, size_t len);

#endif
