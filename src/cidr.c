/*
 * cidr.c: parse "ADDRESS/BITS" (or a bare address, the block of one) and
 * match a client's address against a list of them.  Pure: strings and
 * socket addresses in, answers out, so unit tests feed it directly.
 *
 * An IPv4 client seen through a dual-stack IPv6 socket (::ffff:a.b.c.d)
 * is matched as the IPv4 address it is, so "10.0.0.0/8" means the same
 * on every kind of bind.  For the same reason a block written in that
 * form ("::ffff:10.0.0.0/104") is the IPv4 block it names (10.0.0.0/8):
 * as an IPv6 block it could never match anything.  A block whose address has bits set past its
 * prefix ("10.1.2.3/8") is refused rather than silently widened: it is
 * most often a typo for a host or for a narrower block.
 */
#include "cidr.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* Are any bits of addr past the first bits set? */
static int
host_bits_set(const uint8_t *addr, size_t len, unsigned bits)
{
	for (size_t i = 0; i < len; i++) {
		unsigned keep = bits >= 8 * (i + 1) ? 8 :
		    bits > 8 * i ? bits - 8 * (unsigned)i : 0;
		uint8_t mask = keep == 0 ? 0 : (uint8_t)(0xff << (8 - keep));

		if (addr[i] & (uint8_t)~mask)
			return 1;
	}
	return 0;
}

/*
 * An IPv6 block within ::ffff:0:0/96 (the IPv4-mapped addresses) as the
 * IPv4 block it is.
 */
static void
unmap(struct cidr *c)
{
	static const uint8_t prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };

	if (c->family != AF_INET6 || c->bits < 96 ||
	    memcmp(c->addr, prefix, sizeof(prefix)) != 0)
		return;
	c->family = AF_INET;
	c->bits -= 96;
	memmove(c->addr, c->addr + 12, 4);
	memset(c->addr + 4, 0, 12);
}

/*
 * Parse s into c.  Returns 0, or -1 with *why saying what is wrong (a
 * static string).
 */
int
cidr_parse(const char *s, struct cidr *c, const char **why)
{
	char host[INET6_ADDRSTRLEN];
	const char *slash = strchr(s, '/');
	size_t hlen = slash != NULL ? (size_t)(slash - s) : strlen(s);
	unsigned long bits;
	unsigned max;
	char *end;

	memset(c, 0, sizeof(*c));
	if (hlen == 0 || hlen >= sizeof(host)) {
		*why = "expected an IPv4 or IPv6 address, optionally with /BITS";
		return -1;
	}
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	if (inet_pton(AF_INET, host, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, host, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		*why = "the address is neither IPv4 nor IPv6 (host names are "
		    "not allowed)";
		return -1;
	}
	bits = max;
	if (slash != NULL) {
		if (slash[1] < '0' || slash[1] > '9' ||
		    (bits = strtoul(slash + 1, &end, 10), *end != '\0') ||
		    bits > max) {
			*why = c->family == AF_INET ? "the prefix must be /0 to "
			    "/32 for IPv4" : "the prefix must be /0 to /128 for IPv6";
			return -1;
		}
	}
	c->bits = (uint8_t)bits;
	if (host_bits_set(c->addr, c->family == AF_INET ? 4 : 16, c->bits)) {
		*why = "the address has bits set past the prefix; write the "
		    "block's first address (10.0.0.0/8, not 10.1.2.3/8)";
		return -1;
	}
	unmap(c);
	return 0;
}

/* Does the block hold the address addr (len bytes, network order)? */
static int
holds(const struct cidr *c, const uint8_t *addr)
{
	unsigned full = c->bits / 8, rest = c->bits % 8;

	if (memcmp(c->addr, addr, full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((c->addr[full] ^ addr[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

/* Is sa in any of the n blocks? */
int
cidr_match(const struct cidr *list, size_t n, const struct sockaddr *sa)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
	const uint8_t *addr;
	sa_family_t fam = sa->sa_family;

	if (fam == AF_INET)
		addr = (const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr;
	else if (fam == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		addr = s6->sin6_addr.s6_addr + 12;
		fam = AF_INET;
	} else if (fam == AF_INET6)
		addr = s6->sin6_addr.s6_addr;
	else
		return 0;
	for (size_t i = 0; i < n; i++)
		if (list[i].family == fam && holds(&list[i], addr))
			return 1;
	return 0;
}
