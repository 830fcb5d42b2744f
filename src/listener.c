/*
 * listener.c: bind and listen on one listener's address (master only),
 * and the one bind path of the master's TCP sockets (listener_open, which
 * the /metrics endpoint uses too), with the one table of bind hints.
 *
 * The master binds every socket before it forks, so a port in use or a
 * privileged port is reported once, with the listener's name, and the
 * daemon exits instead of starting half-configured.  Workers inherit the
 * sockets; the master keeps its copies so a restarted worker gets the
 * same kernel accept queue and no queued connection is lost.  A socket
 * that systemd passed (activation.c) gets the same options and backlog
 * through listener_set_options and listener_listen.  The master also
 * reads each socket's accept queue here, for the stats.
 */
#include "listener.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "log.h"

/* net.core.somaxconn, the kernel's cap on any backlog; -1 if unknown. */
static int
listener_somaxconn(void)
{
	char buf[32];
	ssize_t n;
	int fd = open("/proc/sys/net/core/somaxconn", O_RDONLY | O_CLOEXEC);

	if (fd == -1)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	return atoi(buf);
}

/*
 * Why bind(2) failed and what would be right, for the address that the
 * setting key gives; buf holds the hints that name key.
 */
static const char *
bind_hint(int err, const char *key, char *buf, size_t len)
{
	switch (err) {
	case EADDRINUSE:
		snprintf(buf, len, "another program holds that port (or "
		    "another socket of esockd does); stop it, or set '%s' to "
		    "another address", key);
		return buf;
	case EACCES:
		return "ports below 1024 need CAP_NET_BIND_SERVICE; run as root "
		    "or choose a port of 1024 or more";
	case EADDRNOTAVAIL:
		return "no local interface has that address; use an address of "
		    "this host or \"*\"";
	}
	snprintf(buf, len, "check the '%s' address", key);
	return buf;
}

/* "listener 'NAME'": how a listener's messages start. */
static void
listener_who(const struct listener_conf *lc, char *buf, size_t len)
{
	snprintf(buf, len, "listener '%s'", lc->name);
}

/*
 * TCP_NODELAY, SO_KEEPALIVE and TCP_DEFER_ACCEPT exactly as lc says, on
 * any listening socket (ours, or one systemd passed, which may carry other
 * values).  Accepted sockets inherit the first two, so a connection costs
 * no setsockopt.  TCP_DEFER_ACCEPT keeps a client in the kernel until its
 * first bytes arrive, so a worker wakes once per connection, not twice
 * (once for the handshake, once for the data).
 */
int
listener_set_options(int fd, const struct listener_conf *lc)
{
	int nodelay = lc->tcp_nodelay != 0, keepalive = lc->tcp_keepalive != 0;

	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &nodelay,
	    sizeof(nodelay)) == -1 ||
	    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &keepalive,
	    sizeof(keepalive)) == -1) {
		log_error("listener '%s': cannot set TCP_NODELAY/SO_KEEPALIVE "
		    "on %s", lc->name, lc->bind);
		return -1;
	}
	if (setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &lc->defer_accept,
	    sizeof(lc->defer_accept)) == -1) {
		log_error("listener '%s': cannot set TCP_DEFER_ACCEPT to %d s "
		    "on %s", lc->name, lc->defer_accept, lc->bind);
		return -1;
	}
	return 0;
}

/*
 * listen(2) with a backlog, warning when the kernel caps it.  On a socket
 * that already listens (one systemd passed) this only sets the backlog.
 */
static int
listen_backlog(int fd, const char *who, const char *text, int backlog)
{
	int max = listener_somaxconn();

	if (max > 0 && backlog > max)
		log_warnx("%s: backlog %d is above net.core.somaxconn (%d); "
		    "the kernel uses %d", who, backlog, max, max);
	if (listen(fd, backlog) == -1) {
		log_error("%s: cannot listen on %s", who, text);
		return -1;
	}
	return 0;
}

/* listen(2) with lc's backlog, so the config's value holds. */
int
listener_listen(int fd, const struct listener_conf *lc)
{
	char who[ESD_NAME_MAX + 16];

	listener_who(lc, who, sizeof(who));
	return listen_backlog(fd, who, lc->bind, lc->backlog);
}

/*
 * Return a listening, non-blocking socket on la's address, or -1 (logged,
 * each message starting with la->who).  The one bind path for the
 * master's TCP sockets: a listener's (listener_bind) and /metrics'.
 */
int
listener_open(const struct listen_addr *la)
{
	char hint[160];
	int fd, on = 1, err;

	fd = socket(la->addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_error("%s: cannot create a socket for %s", la->who,
		    la->text);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail_opt;
	/* "[::]:P" means IPv6 only, so "*:P" can be bound beside it. */
	if (la->addr->ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail_opt;
	if (la->tcp != NULL && listener_set_options(fd, la->tcp) == -1)
		goto fail;
	if (bind(fd, (const struct sockaddr *)la->addr, la->addrlen) == -1) {
		err = errno;
		log_errorx("%s: %s %s: %s; %s", la->who, la->cannot_bind,
		    la->text, strerror(err),
		    bind_hint(err, la->key, hint, sizeof(hint)));
		goto fail;
	}
	if (listen_backlog(fd, la->who, la->text, la->backlog) == -1)
		goto fail;
	return fd;
fail_opt:
	log_error("%s: cannot set socket options on %s", la->who, la->text);
fail:
	close(fd);
	return -1;
}

/* Return a listening, non-blocking socket for lc, or -1 (logged). */
int
listener_bind(const struct listener_conf *lc)
{
	char who[ESD_NAME_MAX + 16];
	struct listen_addr la = { .addr = &lc->addr, .addrlen = lc->addrlen,
	    .text = lc->bind, .who = who, .key = "bind",
	    .cannot_bind = "cannot bind", .backlog = lc->backlog, .tcp = lc };

	listener_who(lc, who, sizeof(who));
	return listener_open(&la);
}

/* Fill l->served from the socket itself (see listener.h). */
void
listener_served(struct listener *l)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == -1 ||
	    addr_equal((struct sockaddr *)&ss,
	    (const struct sockaddr *)&l->conf->addr)) {
		snprintf(l->served, sizeof(l->served), "%s", l->conf->bind);
		return;
	}
	addr_format((struct sockaddr *)&ss, l->served, sizeof(l->served));
}

/*
 * The accept queue of a listening socket now: connections the kernel has
 * completed that no worker has taken yet (*depth), and the most it holds
 * (*max: the backlog in effect, after net.core.somaxconn).  On Linux,
 * TCP_INFO of a listening socket gives both, as tcpi_unacked and
 * tcpi_sacked.  -1 when the socket cannot say (closed, or not listening).
 */
int
listener_queue(int fd, int *depth, int *max)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	if (fd == -1)
		return -1;
	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) == -1 ||
	    ti.tcpi_state != TCP_LISTEN)
		return -1;
	*depth = (int)ti.tcpi_unacked;
	*max = (int)ti.tcpi_sacked;
	return 0;
}
