/*
 * tls.h: TLS termination with OpenSSL 3, the one file that includes it.
 * The master loads a listener's certificate into a context when it reads
 * the config (so "esockd -t" checks it too); workers inherit it by fork
 * and run one SSL per client connection.
 */
#ifndef ESOCKD_TLS_H
#define ESOCKD_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct config_diag;
struct esd_config;
struct session;

/* Master (and esockd -t): a context for every TLS listener of conf. */
int	 tls_load(struct esd_config *, struct config_diag *);
void	 tls_ctx_free(void *ctx);
/* OpenSSL's reasons for the last failure; its error queue is emptied. */
void	 tls_reasons(char *buf, size_t len);

/* Worker: the handshake of a new session, then backend_connect. */
void	 tls_start(struct session *);
void	 tls_free(struct session *);

/* Worker, relay.c: like read(2), send(2) and shutdown(SHUT_WR). */
ssize_t	 tls_read(struct session *, void *, size_t);
ssize_t	 tls_write(struct session *, const void *, size_t);
int	 tls_pending(struct session *);
void	 tls_shutdown(struct session *);

#endif
