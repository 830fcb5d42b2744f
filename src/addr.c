/*
 * addr.c: the "HOST:PORT" forms a listener may bind, with no I/O.
 *
 * Accepted: "192.0.2.1:5000", "[2001:db8::1]:5000" and "*:5000" (all IPv4
 * addresses, as in nginx and HAProxy; "[::]:5000" is all IPv6 addresses).
 * Names are refused on purpose: a gateway must not depend on DNS to start.
 * And a backend's Unix socket path as the address connect(2) takes.
 */
#include "addr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

/* Parse a decimal port 1..65535 that runs to the end of the string. */
static int
parse_port(const char *s, in_port_t *out)
{
	char *end;
	long v;

	if (*s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < 1 || v > 65535)
		return -1;
	*out = htons((in_port_t)v);
	return 0;
}

/*
 * Parse a bind address.  On failure return -1 and point *why at a
 * sentence saying what a right value looks like.
 */
int
addr_parse_bind(const char *s, struct sockaddr_storage *ss, socklen_t *len,
    const char **why)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
	char host[64];
	const char *colon, *port;
	in_port_t p;
	size_t hlen;

	memset(ss, 0, sizeof(*ss));
	*why = "use \"IPV4:PORT\", \"[IPV6]:PORT\" or \"*:PORT\" with a numeric "
	    "address and a port from 1 to 65535";
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (close == NULL || close[1] != ':')
			return -1;
		hlen = (size_t)(close - s - 1);
		port = close + 2;
		if (hlen == 0 || hlen >= sizeof(host))
			return -1;
		memcpy(host, s + 1, hlen);
		host[hlen] = '\0';
		if (parse_port(port, &p) == -1 ||
		    inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1)
			return -1;
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = p;
		*len = sizeof(*sin6);
		return 0;
	}
	colon = strrchr(s, ':');
	if (colon == NULL || strchr(s, ':') != colon)
		return -1;
	hlen = (size_t)(colon - s);
	if (hlen == 0 || hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (parse_port(colon + 1, &p) == -1)
		return -1;
	if (strcmp(host, "*") == 0)
		sin->sin_addr.s_addr = htonl(INADDR_ANY);
	else if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return -1;
	sin->sin_family = AF_INET;
	sin->sin_port = p;
	*len = sizeof(*sin);
	return 0;
}

/*
 * A bare IPv4 or IPv6 address ("192.0.2.1", "2001:db8::1"), as a
 * handler's "held" record gives it, with port 0.  -1: neither.
 */
int
addr_parse_ip(const char *s, struct sockaddr_storage *ss)
{
	struct sockaddr_in *sin = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
		sin->sin_family = AF_INET;
		return 0;
	}
	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
		sin6->sin6_family = AF_INET6;
		return 0;
	}
	return -1;
}

/* Same family, address and port. */
int
addr_equal(const struct sockaddr *a, const struct sockaddr *b)
{
	if (a->sa_family != b->sa_family)
		return 0;
	if (a->sa_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port &&
		    x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	if (a->sa_family == AF_INET6) {
		const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
		return x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
	}
	return 0;
}

/* Print an address the way a bind value is written. */
void
addr_format(const struct sockaddr *sa, char *buf, size_t len)
{
	char host[INET6_ADDRSTRLEN];

	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const void *)sa;
		inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
		snprintf(buf, len, "%s:%u", host, ntohs(sin->sin_port));
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const void *)sa;
		inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
		snprintf(buf, len, "[%s]:%u", host, ntohs(sin6->sin6_port));
	} else {
		snprintf(buf, len, "(family %d)", sa->sa_family);
	}
}

void
addr_unix(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
	memset(sun, 0, sizeof(*sun));
	sun->sun_family = AF_UNIX;
	*len = sizeof(*sun);
	if (path[0] == '@') {
		/* The abstract name goes after a NUL; its length is exact. */
		memcpy(sun->sun_path + 1, path + 1, strlen(path + 1));
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
		    strlen(path + 1));
		return;
	}
	snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", path);
}
