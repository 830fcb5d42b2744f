/*
 * proxy_proto.c: build the PROXY protocol v2 header sent first on a
 * backend connection, from the client's address and the address it
 * connected to.  Pure: addresses in, bytes out, so unit tests feed it.
 *
 * The addresses are the PROXY command with TCP over IPv4 or IPv6.  After
 * them proxy_v2_header_tlv appends TLVs: the connection's unique id, on
 * a TLS listener what the client negotiated (PP2_TYPE_SSL and its
 * subtypes, ALPN, AUTHORITY), and optionally a CRC32c of the whole
 * header, each value bounded (proxy_proto.h) so that the header has a
 * bounded size and goes in one send(2).  An IPv4 client seen
 * through a dual-stack IPv6 socket (::ffff:a.b.c.d on both ends) is sent
 * as TCP over IPv4, as the backend would have seen it on an IPv4 bind.
 * Any other pair of addresses gets the LOCAL command, which tells the
 * backend to use the connection's own addresses, rather than a guess.
 *
 * Behind another proxy, the TLVs it sent (proxy_in.c parses them) can
 * be passed on, so that a chain of proxies keeps the client's identity.
 * The merge, decided by passes():
 *  - ALPN, AUTHORITY and UNIQUE_ID go on unless esockd has its own value
 *    of that type (its TLS handshake's ALPN and SNI name, its connection
 *    id): what esockd saw itself wins over what it was told;
 *  - the custom types 0xE0-0xEF go on as they came;
 *  - SSL goes on only from a plain listener, where it tells the backend
 *    that the proxy in front ended the client's TLS.  On a TLS listener
 *    esockd's own SSL TLV is the truth about the client's TLS, and a
 *    received one would describe a hop the backend cannot see;
 *  - CRC32C never goes on: it covered the header it came in, and esockd
 *    computes its own over the header it sends when asked to.  NOOP,
 *    NETNS (the front proxy's namespace means nothing here) and every
 *    other type stop at esockd.
 * A passed-on TLV takes its place in type order next to esockd's own,
 * the custom ones last; the passed-on total is bounded by PROXY_PASS_MAX,
 * beyond which the header is refused rather than cut.
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

/*
 * CRC32c (Castagnoli, reflected polynomial 0x82f63b78), a table of the
 * 256 one-byte steps made on first use: a header is hashed once per
 * connection, so a byte at a time is enough.  crc is the CRC32c of the
 * bytes before p (0 for none), so that a header can be hashed in pieces
 * (proxy_in.c hashes a received one around its own checksum's bytes).
 */
uint32_t
proxy_crc32c_more(uint32_t crc, const uint8_t *p, size_t n)
{
	static uint32_t table[256];
	uint32_t c;
	size_t i;
	int k;

	if (table[1] == 0)
		for (i = 0; i < 256; i++) {
			c = (uint32_t)i;
			for (k = 0; k < 8; k++)
				c = (c >> 1) ^ (c & 1 ? 0x82f63b78u : 0);
			table[i] = c;
		}
	crc ^= 0xffffffffu;
	for (i = 0; i < n; i++)
		crc = table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return crc ^ 0xffffffffu;
}

/* The CRC32c of n bytes at p. */
uint32_t
proxy_crc32c(const uint8_t *p, size_t n)
{
	return proxy_crc32c_more(0, p, n);
}

static void
put16(uint8_t *p, size_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

/*
 * One TLV at *at: type, length, value.  Returns -1 (nothing written)
 * when the value is over max or the TLV would pass cap.
 */
static int
tlv(uint8_t *buf, size_t *at, size_t cap, uint8_t type, const void *v,
    size_t len, size_t max)
{
	if (len > max || cap - *at < 3 + len)
		return -1;
	buf[*at] = type;
	put16(buf + *at + 1, len);
	memcpy(buf + *at + 3, v, len);
	*at += 3 + len;
	return 0;
}

/* A TLV whose value is a string (no NUL sent); none for NULL or "". */
static int
tlv_str(uint8_t *buf, size_t *at, size_t cap, uint8_t type, const char *v,
    size_t max)
{
	if (v == NULL || v[0] == '\0')
		return 0;
	return tlv(buf, at, cap, type, v, strnlen(v, max + 1), max);
}

/*
 * PP2_TYPE_SSL: client flags, the 4-byte verify result, then the
 * subtypes; CN only when the client presented a certificate.
 */
static int
tlv_ssl(uint8_t *buf, size_t *at, size_t cap, const struct proxy_tls *t)
{
	size_t start = *at;

	if (cap - *at < 3 + 1 + 4)
		return -1;
	buf[*at] = PP2_TYPE_SSL;
	buf[*at + 3] = t->client;
	buf[*at + 4] = (uint8_t)(t->verify >> 24);
	buf[*at + 5] = (uint8_t)(t->verify >> 16);
	buf[*at + 6] = (uint8_t)(t->verify >> 8);
	buf[*at + 7] = (uint8_t)t->verify;
	*at += 8;
	if (tlv_str(buf, at, cap, PP2_SUBTYPE_SSL_VERSION, t->version,
	    PROXY_NAME_MAX) == -1)
		return -1;
	if (t->cn_len > 0 && tlv(buf, at, cap, PP2_SUBTYPE_SSL_CN, t->cn,
	    t->cn_len, PROXY_STR_MAX) == -1)
		return -1;
	if (tlv_str(buf, at, cap, PP2_SUBTYPE_SSL_CIPHER, t->cipher,
	    PROXY_NAME_MAX) == -1 ||
	    tlv_str(buf, at, cap, PP2_SUBTYPE_SSL_SIG_ALG, t->sig_alg,
	    PROXY_NAME_MAX) == -1 ||
	    tlv_str(buf, at, cap, PP2_SUBTYPE_SSL_KEY_ALG, t->key_alg,
	    PROXY_NAME_MAX) == -1)
		return -1;
	put16(buf + start + 1, *at - start - 3);
	return 0;
}

/* Did the TLS client agree on a protocol, or send a server name? */
static int
has_alpn(const struct proxy_tls *t)
{
	return t != NULL && t->alpn != NULL && t->alpn_len > 0;
}

static int
has_sni(const struct proxy_tls *t)
{
	return t != NULL && t->sni != NULL && t->sni[0] != '\0';
}

/* Does a received TLV of this type go on to the backend?  (The merge.) */
static int
passes(const struct proxy_tlvs *t, uint8_t type)
{
	switch (type) {
	case PP2_TYPE_ALPN:
		return !has_alpn(t->tls);
	case PP2_TYPE_AUTHORITY:
		return !has_sni(t->tls);
	case PP2_TYPE_UNIQUE_ID:
		return t->unique_id == NULL || t->unique_id[0] == '\0';
	case PP2_TYPE_SSL:
		return t->tls == NULL;
	default:
		return type >= PP2_TYPE_MIN_CUSTOM && type <= PP2_TYPE_MAX_CUSTOM;
	}
}

/* Within PROXY_PASS_MAX, all the received TLVs that go on? */
static int
passed_fit(const struct proxy_tlvs *t)
{
	size_t sum = 0;

	for (size_t i = 0; i < t->npassed; i++)
		if (passes(t, t->passed[i].type))
			sum += 3 + (size_t)t->passed[i].len;
	return sum <= PROXY_PASS_MAX;
}

/*
 * The received TLVs with a type from lo to hi that go on, in the order
 * they came.
 */
static int
tlv_passed(uint8_t *buf, size_t *at, size_t cap, const struct proxy_tlvs *t,
    uint8_t lo, uint8_t hi)
{
	const struct proxy_tlv *p;

	for (size_t i = 0; i < t->npassed; i++) {
		p = &t->passed[i];
		if (p->type < lo || p->type > hi || !passes(t, p->type))
			continue;
		if (tlv(buf, at, cap, p->type, p->value, p->len,
		    PROXY_PASS_MAX) == -1)
			return -1;
	}
	return 0;
}

/* ALPN and AUTHORITY: the TLS client's when there were any, else passed. */
static int
tlv_alpn_authority(uint8_t *buf, size_t *at, size_t cap,
    const struct proxy_tlvs *t)
{
	const struct proxy_tls *tls = t->tls;

	if (has_alpn(tls) && tlv(buf, at, cap, PP2_TYPE_ALPN, tls->alpn,
	    tls->alpn_len, PROXY_STR_MAX) == -1)
		return -1;
	if (tlv_passed(buf, at, cap, t, PP2_TYPE_ALPN, PP2_TYPE_ALPN) == -1)
		return -1;
	if (tls != NULL && tlv_str(buf, at, cap, PP2_TYPE_AUTHORITY, tls->sni,
	    PROXY_STR_MAX) == -1)
		return -1;
	return tlv_passed(buf, at, cap, t, PP2_TYPE_AUTHORITY,
	    PP2_TYPE_AUTHORITY);
}

/* Write v big-endian at p. */
static void
put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

/*
 * The header of proxy_v2_header followed by the TLVs in t, in type
 * order, the passed-on custom types last.  The CRC32c, when asked for,
 * covers the whole header with its own value zeroed, and is written
 * last.  Returns the length, or 0 when a value is over its bound, the
 * passed-on TLVs are over PROXY_PASS_MAX, or the header would pass cap
 * (what was written then is no header: do not send it).
 */
size_t
proxy_v2_header_tlv(const struct sockaddr *src, const struct sockaddr *dst,
    const struct proxy_tlvs *t, uint8_t *buf, size_t cap)
{
	static const uint8_t zero[4];
	size_t at, crc_at = 0;

	if (!passed_fit(t))
		return 0;
	if ((at = proxy_v2_header(src, dst, buf, cap)) == 0)
		return 0;
	if (tlv_alpn_authority(buf, &at, cap, t) == -1)
		return 0;
	if (t->crc32c) {
		crc_at = at + 3;
		if (tlv(buf, &at, cap, PP2_TYPE_CRC32C, zero, 4, 4) == -1)
			return 0;
	}
	if (tlv_str(buf, &at, cap, PP2_TYPE_UNIQUE_ID,
	    t->unique_id, PROXY_UNIQUE_ID_MAX) == -1 ||
	    tlv_passed(buf, &at, cap, t, PP2_TYPE_UNIQUE_ID,
	    PP2_TYPE_UNIQUE_ID) == -1)
		return 0;
	if (t->tls != NULL && tlv_ssl(buf, &at, cap, t->tls) == -1)
		return 0;
	if (tlv_passed(buf, &at, cap, t, PP2_TYPE_SSL, PP2_TYPE_SSL) == -1 ||
	    tlv_passed(buf, &at, cap, t, PP2_TYPE_MIN_CUSTOM,
	    PP2_TYPE_MAX_CUSTOM) == -1)
		return 0;
	put16(buf + 14, at - 16);
	if (crc_at != 0)
		put32(buf + crc_at, proxy_crc32c(buf, at));
	return at;
}
