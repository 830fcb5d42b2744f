/*
 * proxy_proto.c: build the PROXY protocol v2 header sent first on a
 * backend connection, from the client's address and the address it
 * connected to.  Pure: addresses in, bytes out, so unit tests feed it.
 *
 * Only what the spec's receivers must understand is sent: the PROXY
 * command with TCP over IPv4 or IPv6, and no TLVs.  An IPv4 client seen
 * through a dual-stack IPv6 socket (::ffff:a.b.c.d on both ends) is sent
 * as TCP over IPv4, as the backend would have seen it on an IPv4 bind.
 * Any other pair of addresses gets the LOCAL command, which tells the
 * backend to use the connection's own addresses, rather than a guess.
 */
#include "proxy_proto.h"

#include <netinet/in.h>
#include <string.h>

static const uint8_t signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

#define CMD_LOCAL	0x20	/* version 2, LOCAL */
#define CMD_PROXY	0x21	/* version 2, PROXY */
#define FAM_UNSPEC	0x00
#define FAM_TCP4	0x11
#define FAM_TCP6	0x21

/* The fixed 16 bytes: signature, command, family, length (big-endian). */
static size_t
start(uint8_t *buf, uint8_t cmd, uint8_t fam, uint16_t len)
{
	memcpy(buf, signature, sizeof(signature));
	buf[12] = cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(len >> 8);
	buf[15] = (uint8_t)len;
	return 16;
}

/* Copy an address and port (both in network order) into buf at *at. */
static void
put(uint8_t *buf, size_t *at, const void *addr, size_t alen)
{
	memcpy(buf + *at, addr, alen);
	*at += alen;
}

static int
mapped(const struct sockaddr *sa)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;

	return sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr);
}

static size_t
tcp4(const uint8_t *sip, const uint8_t *dip, const void *sport,
    const void *dport, uint8_t *buf)
{
	size_t at = start(buf, CMD_PROXY, FAM_TCP4, 12);

	put(buf, &at, sip, 4);
	put(buf, &at, dip, 4);
	put(buf, &at, sport, 2);
	put(buf, &at, dport, 2);
	return at;
}

/*
 * Write the header for a client at src that connected to dst into buf.
 * Returns its length, or 0 when cap is below PROXY_V2_MAX (nothing
 * written).
 */
size_t
proxy_v2_header(const struct sockaddr *src, const struct sockaddr *dst,
    uint8_t *buf, size_t cap)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)src;
	const struct sockaddr_in *d4 = (const struct sockaddr_in *)dst;
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)src;
	const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)dst;
	size_t at;

	if (cap < PROXY_V2_MAX)
		return 0;
	if (src->sa_family == AF_INET && dst->sa_family == AF_INET)
		return tcp4((const uint8_t *)&s4->sin_addr,
		    (const uint8_t *)&d4->sin_addr, &s4->sin_port,
		    &d4->sin_port, buf);
	if (mapped(src) && mapped(dst))
		return tcp4(s6->sin6_addr.s6_addr + 12,
		    d6->sin6_addr.s6_addr + 12, &s6->sin6_port, &d6->sin6_port,
		    buf);
	if (src->sa_family != AF_INET6 || dst->sa_family != AF_INET6)
		return start(buf, CMD_LOCAL, FAM_UNSPEC, 0);
	at = start(buf, CMD_PROXY, FAM_TCP6, 36);
	put(buf, &at, &s6->sin6_addr, 16);
	put(buf, &at, &d6->sin6_addr, 16);
	put(buf, &at, &s6->sin6_port, 2);
	put(buf, &at, &d6->sin6_port, 2);
	return at;
}
