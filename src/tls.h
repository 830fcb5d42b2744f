/*
 * tls.h: the worker's side of TLS: a session's handshake, then its reads
 * and writes for the relay.  The contexts come from the master
 * (tls_ctx.h), inherited by fork with the listeners.
 */
#ifndef ESOCKD_TLS_H
#define ESOCKD_TLS_H

#include <stddef.h>
#include <sys/types.h>

struct session;

/* The handshake phase of a new session; it ends in session_next or
 * session_close. */
void	 tls_start(struct session *);
void	 tls_free(struct session *);

/* The plaintext of one TLS record: what one SSL_write turns into a record. */
#define TLS_RECORD_MAX	16384

/* relay.c: like read(2), send(2) and shutdown(SHUT_WR). */
ssize_t	 tls_read(struct session *, void *, size_t);
ssize_t	 tls_write(struct session *, const void *, size_t);
int	 tls_pending(struct session *);
void	 tls_shutdown(struct session *);

/* backend.c: what the client negotiated, for the PROXY header's TLVs. */
struct proxy_tls;
void	 tls_identity(struct session *, struct proxy_tls *);

#endif
