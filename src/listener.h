/*
 * listener.h: a listener at run time, and its listening socket.
 *
 * The parsed config (struct listener_conf) is data; what a generation
 * builds from it is here, as relayd's struct relay holds rl_conf, rl_s
 * and rl_ssl_ctx: the listening socket, the listener's index in shared
 * memory and its TLS context.  The master makes one per listener per
 * generation; the generation's workers inherit them by fork.
 */
#ifndef ESOCKD_LISTENER_H
#define ESOCKD_LISTENER_H

#include "config.h"

#include <time.h>

struct ssl_ctx_st;	/* OpenSSL's SSL_CTX, opaque outside tls*.c */
struct ticket_set;	/* tls_tickets.c */

/* The context of one tls_sni entry (tls_ctx.c), and its certificate's
 * notAfter for /metrics. */
struct tls_sni_ctx {
	struct ssl_ctx_st	*ctx;
	time_t			 not_after;
};

struct listener {
	const struct listener_conf *conf;
	int			 fd;	/* listening socket; -1 once closed */
	int			 si;	/* index in shared memory */
	struct ssl_ctx_st	*tls_ctx; /* NULL: plain TCP (tls_ctx.c) */
	time_t			 tls_not_after;	/* of tls_ctx's certificate */
	struct tls_sni_ctx	*sni;	/* one per conf->tls_sni entry */
	size_t			 nsni;
	/* tls_ticket_keys read at load, until the commit publishes them. */
	struct ticket_set	*tickets;
	/* The address served: the bind as written, unless the socket is
	 * bound elsewhere (one systemd passed); for esockdctl. */
	char			 served[80];
};

/*
 * An address for listener_open: a listener's, or the /metrics endpoint's.
 * Every message about it starts with who; a failed bind(2) reads
 * "WHO: CANNOT_BIND TEXT: strerror; hint", where the hint names key.
 */
struct listen_addr {
	const struct sockaddr_storage	*addr;
	socklen_t			 addrlen;
	const char			*text;	/* as written */
	const char			*who;	/* "listener 'a'" */
	const char			*key;	/* its setting: "bind" */
	/* "cannot bind"; "cannot listen on" for /metrics, whose log line
	 * operators (and tests) already match. */
	const char			*cannot_bind;
	int				 backlog;
	const struct listener_conf	*tcp;	/* its TCP options, or NULL */
};

/* Master: bind and listen on an address, or say why not (-1). */
int	listener_open(const struct listen_addr *);
int	listener_bind(const struct listener_conf *);
int	listener_set_options(int, const struct listener_conf *);
int	listener_listen(int, const struct listener_conf *);
void	listener_served(struct listener *);
int	listener_queue(int fd, int *depth, int *max);

#endif
