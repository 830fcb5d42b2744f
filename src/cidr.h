/*
 * cidr.h: address blocks ("10.0.0.0/8", "::1") for a listener's allow and
 * deny rules: parse them, and match a client's address against them.
 */
#ifndef ESOCKD_CIDR_H
#define ESOCKD_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define CIDR_MAX_RULES	1024	/* entries in one allow or deny list */

struct cidr {
	sa_family_t	family;		/* AF_INET or AF_INET6 */
	uint8_t		bits;		/* prefix length */
	uint8_t		addr[16];	/* network order; 4 used for IPv4 */
};

int	cidr_parse(const char *, struct cidr *, const char **why);
int	cidr_match(const struct cidr *, size_t n, const struct sockaddr *);

#endif
