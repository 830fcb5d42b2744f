/*
 * listener.c: bind and listen on one listener's address (master only).
 *
 * The master binds every socket before it forks, so a port in use or a
 * privileged port is reported once, with the listener's name, and the
 * daemon exits instead of starting half-configured.  Workers inherit the
 * sockets; the master keeps its copies so a restarted worker gets the
 * same kernel accept queue and no queued connection is lost.
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

static const char *
bind_hint(int err)
{
	switch (err) {
	case EADDRINUSE:
		return "another program (or listener) holds it; stop it or "
		    "choose another port";
	case EACCES:
		return "ports below 1024 need CAP_NET_BIND_SERVICE; run as root "
		    "or choose a port of 1024 or more";
	case EADDRNOTAVAIL:
		return "no local interface has that address; use an address of "
		    "this host or \"*\"";
	}
	return "check the address";
}

/* Return a listening, non-blocking socket for lc, or -1 (logged). */
int
listener_bind(const struct listener_conf *lc)
{
	int fd, on = 1, max;

	fd = socket(lc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (fd == -1) {
		log_error("listener '%s': cannot create a socket for %s",
		    lc->name, lc->bind);
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) == -1)
		goto fail_opt;
	/* "[::]:P" means IPv6 only, so "*:P" can be bound beside it. */
	if (lc->addr.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on)) == -1)
		goto fail_opt;
	/* Inherited by every accepted socket: no setsockopt per connection. */
	if (lc->tcp_nodelay &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == -1)
		goto fail_opt;
	if (lc->tcp_keepalive &&
	    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1)
		goto fail_opt;
	if (bind(fd, (const struct sockaddr *)&lc->addr, lc->addrlen) == -1) {
		int err = errno;
		log_errorx("listener '%s': cannot bind %s: %s; %s", lc->name,
		    lc->bind, strerror(err), bind_hint(err));
		goto fail;
	}
	max = listener_somaxconn();
	if (max > 0 && lc->backlog > max)
		log_warnx("listener '%s': backlog %d is above "
		    "net.core.somaxconn (%d); the kernel uses %d", lc->name,
		    lc->backlog, max, max);
	if (listen(fd, lc->backlog) == -1) {
		log_error("listener '%s': cannot listen on %s", lc->name,
		    lc->bind);
		goto fail;
	}
	return fd;
fail_opt:
	log_error("listener '%s': cannot set socket options on %s", lc->name,
	    lc->bind);
fail:
	close(fd);
	return -1;
}

/*
 * A reload kept fd (bound to the same address): bring the socket's
 * options up to lc's.  listen(2) on a listening socket only sets the
 * backlog; the queue and everything in it stay.  Returns 0 or -1 (logged).
 */
int
listener_update(int fd, const struct listener_conf *old,
    const struct listener_conf *lc)
{
	int on;

	if (lc->backlog != old->backlog && listen(fd, lc->backlog) == -1) {
		log_error("listener '%s': cannot set backlog %d on %s", lc->name,
		    lc->backlog, lc->bind);
		return -1;
	}
	on = lc->tcp_nodelay;
	if (on != old->tcp_nodelay &&
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on)) == -1)
		goto fail_opt;
	on = lc->tcp_keepalive;
	if (on != old->tcp_keepalive &&
	    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on)) == -1)
		goto fail_opt;
	return 0;
fail_opt:
	log_error("listener '%s': cannot set socket options on %s", lc->name,
	    lc->bind);
	return -1;
}
