/*
 * test_proxy_in.c: the PROXY header a proxy in front of esockd sends,
 * parsed from buffers: every field of v1 and v2, every prefix of a valid
 * header (need more, never a verdict), each refusal at the first byte
 * that decides it, the bounds (v1's 107 bytes, PROXY_IN_MAX, the longest
 * TLV), the checksum, the client's bytes after the header left alone,
 * and esockd's own header (with TLVs passed on) read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/un.h>

#include "proxy_in.h"

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a,
    0x51, 0x55, 0x49, 0x54, 0x0a };

/* The 12-byte IPv4 address block: 192.0.2.7:40000 to 127.0.0.1:5000. */
static const uint8_t addr4[12] = { 192, 0, 2, 7, 127, 0, 0, 1,
    0x9c, 0x40, 0x13, 0x88 };

/* A v2 header: signature, ver_cmd, family, then the block (its length). */
static size_t
v2(uint8_t *buf, uint8_t ver_cmd, uint8_t fam, const void *block,
    size_t blen)
{
	memcpy(buf, sig, 12);
	buf[12] = ver_cmd;
	buf[13] = fam;
	buf[14] = (uint8_t)(blen >> 8);
	buf[15] = (uint8_t)blen;
	if (blen > 0)
		memcpy(buf + 16, block, blen);
	return 16 + blen;
}

/*
 * Feed every prefix of buf[0..len) in mode: each must ask for more.  The
 * whole must give len, and so must the whole with the client's bytes
 * after it, which stay as they were.
 */
static void
every_prefix_needs_more(enum proxy_in_mode mode, const uint8_t *buf,
    size_t len)
{
	static const char data[] = "GET / HTTP/1.0\r\n\r\n";
	uint8_t more[PROXY_IN_MAX + sizeof(data)];
	struct proxy_in in;
	int r;

	for (size_t i = 0; i < len; i++)
		if ((r = proxy_in_parse(mode, buf, i, &in)) != 0)
			fail_msg("prefix of %zu of %zu bytes gave %d (%s)", i,
			    len, r, proxy_in_reason(r));
	assert_int_equal(proxy_in_parse(mode, buf, len, &in), (int)len);
	memcpy(more, buf, len);
	memcpy(more + len, data, sizeof(data));
	assert_int_equal(proxy_in_parse(mode, more, len + sizeof(data), &in),
	    (int)len);
	assert_memory_equal(more, buf, len);
	assert_memory_equal(more + len, data, sizeof(data));
}

/* Both in the header's own mode and in "any". */
static void
valid_in(enum proxy_in_mode mode, const uint8_t *buf, size_t len)
{
	every_prefix_needs_more(mode, buf, len);
	every_prefix_needs_more(PROXY_IN_ANY, buf, len);
}

/*
 * Refused with reason, decided by byte at (0-based): every shorter
 * prefix asks for more, the one that includes it is refused.
 */
static void
refused_at(enum proxy_in_mode mode, const uint8_t *buf, size_t len,
    size_t at, int reason)
{
	struct proxy_in in;
	int r;

	assert_true(at < len);
	for (size_t i = 0; i <= at; i++)
		if ((r = proxy_in_parse(mode, buf, i, &in)) != 0)
			fail_msg("prefix of %zu bytes gave %d (%s), expected "
			    "0 until %zu", i, r, proxy_in_reason(r), at + 1);
	for (size_t i = at + 1; i <= len; i++)
		if ((r = proxy_in_parse(mode, buf, i, &in)) != reason)
			fail_msg("prefix of %zu bytes gave %d (%s), expected "
			    "%s", i, r, proxy_in_reason(r),
			    proxy_in_reason(reason));
}

static void
refused_str_at(enum proxy_in_mode mode, const char *s, size_t at, int reason)
{
	refused_at(mode, (const uint8_t *)s, strlen(s), at, reason);
}

static int
parse_str(enum proxy_in_mode mode, const char *s, struct proxy_in *in)
{
	return proxy_in_parse(mode, (const uint8_t *)s, strlen(s), in);
}

static void
assert_in4(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	char text[INET_ADDRSTRLEN];

	assert_int_equal(ss->ss_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &s4->sin_addr, text, sizeof(text)));
	assert_string_equal(text, ip);
	assert_int_equal(ntohs(s4->sin_port), port);
}

static void
assert_in6(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	struct in6_addr want;

	assert_int_equal(ss->ss_family, AF_INET6);
	assert_int_equal(inet_pton(AF_INET6, ip, &want), 1);
	assert_memory_equal(&s6->sin6_addr, &want, 16);
	assert_int_equal(ntohs(s6->sin6_port), port);
}

static void
assert_no_address(const struct proxy_in *in)
{
	assert_int_equal(in->family, AF_UNSPEC);
	assert_int_equal(in->socktype, 0);
	assert_int_equal(in->src.ss_family, AF_UNSPEC);
	assert_int_equal(in->dst.ss_family, AF_UNSPEC);
}

/* ---- version 1 ---- */

static void
v1_tcp4_gives_every_field(void **state)
{
	const char *line = "PROXY TCP4 192.0.2.7 127.0.0.1 40000 5000\r\n";
	struct proxy_in in;

	(void)state;
	assert_int_equal(parse_str(PROXY_IN_V1, line, &in), (int)strlen(line));
	assert_int_equal(in.version, 1);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_int_equal(in.family, AF_INET);
	assert_int_equal(in.socktype, SOCK_STREAM);
	assert_in4(&in.src, "192.0.2.7", 40000);
	assert_in4(&in.dst, "127.0.0.1", 5000);
	assert_int_equal(in.ntlvs, 0);
	valid_in(PROXY_IN_V1, (const uint8_t *)line, strlen(line));
}

static void
v1_tcp6_gives_every_field(void **state)
{
	const char *line = "PROXY TCP6 2001:db8::7 ::1 0 65535\r\n";
	const char *mapped = "PROXY TCP6 ::ffff:10.1.2.3 FE80::1 1 2\r\n";
	struct proxy_in in;

	(void)state;
	assert_int_equal(parse_str(PROXY_IN_V1, line, &in), (int)strlen(line));
	assert_int_equal(in.version, 1);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_int_equal(in.family, AF_INET6);
	assert_int_equal(in.socktype, SOCK_STREAM);
	assert_in6(&in.src, "2001:db8::7", 0);
	assert_in6(&in.dst, "::1", 65535);
	valid_in(PROXY_IN_V1, (const uint8_t *)line, strlen(line));
	assert_int_equal(parse_str(PROXY_IN_V1, mapped, &in),
	    (int)strlen(mapped));
	assert_in6(&in.src, "::ffff:10.1.2.3", 1);
	assert_in6(&in.dst, "fe80::1", 2);
}

/* UNKNOWN: LOCAL, no addresses, whatever follows it ignored. */
static void
v1_unknown_is_local(void **state)
{
	const char *lines[] = { "PROXY UNKNOWN\r\n",
	    "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
	    "PROXY UNKNOWN \x01\n\x7f\xff garbage\r\n" };
	struct proxy_in in;

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++) {
		assert_int_equal(parse_str(PROXY_IN_V1, lines[i], &in),
		    (int)strlen(lines[i]));
		assert_int_equal(in.version, 1);
		assert_int_equal(in.command, PROXY_IN_LOCAL);
		assert_no_address(&in);
		valid_in(PROXY_IN_V1, (const uint8_t *)lines[i],
		    strlen(lines[i]));
	}
}

/* 107 bytes with the CRLF are a line; 108 are refused at byte 107. */
static void
v1_line_is_at_most_107_bytes(void **state)
{
	const char *a = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";	/* 39 */
	const char *b42 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.25.5";
	const char *b43 = "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.5";
	char line[128], pad[128];
	struct proxy_in in;

	(void)state;
	/* 11 + 39 + 1 + 42 + 1 + 11 ("65535 65535") + 2 */
	snprintf(line, sizeof(line), "PROXY TCP6 %s %s 65535 65535\r\n", a, b42);
	assert_int_equal(strlen(line), 107);
	assert_int_equal(parse_str(PROXY_IN_V1, line, &in), 107);
	assert_in6(&in.src, a, 65535);
	assert_in6(&in.dst, b42, 65535);
	valid_in(PROXY_IN_V1, (const uint8_t *)line, 107);
	snprintf(line, sizeof(line), "PROXY TCP6 %s %s 65535 65535\r\n", a, b43);
	assert_int_equal(strlen(line), 108);
	refused_str_at(PROXY_IN_V1, line, 106, PROXY_IN_ERR_BAD_LENGTH);

	memset(pad, 'x', sizeof(pad));
	snprintf(line, sizeof(line), "PROXY UNKNOWN %.*s\r\n", 91, pad);
	assert_int_equal(strlen(line), 107);
	valid_in(PROXY_IN_V1, (const uint8_t *)line, 107);
	snprintf(line, sizeof(line), "PROXY UNKNOWN %.*s\r\n", 92, pad);
	refused_str_at(PROXY_IN_V1, line, 106, PROXY_IN_ERR_BAD_LENGTH);
	/* No CRLF at all: refused once 107 bytes have none. */
	memset(line, 0, sizeof(line));
	snprintf(line, sizeof(line), "PROXY UNKNOWN %.*s", 110, pad);
	refused_str_at(PROXY_IN_V1, line, 106, PROXY_IN_ERR_BAD_LENGTH);
}

/* A wrong byte anywhere in "PROXY " is refused at that byte. */
static void
v1_bad_signature_at_each_byte(void **state)
{
	const char *good = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
	char bad[64];

	(void)state;
	for (size_t i = 0; i < 6; i++) {
		snprintf(bad, sizeof(bad), "%s", good);
		bad[i] = '_';		/* "_ROXY ", "P_OXY "... "PROXY_" */
		refused_str_at(PROXY_IN_V1, bad, i, PROXY_IN_ERR_BAD_SIGNATURE);
		refused_str_at(PROXY_IN_ANY, bad, i, PROXY_IN_ERR_BAD_SIGNATURE);
	}
}

/* Protocol words: TCP4, TCP6 and UNKNOWN only, refused when they part. */
static void
v1_bad_family(void **state)
{
	(void)state;
	refused_str_at(PROXY_IN_V1, "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", 9,
	    PROXY_IN_ERR_BAD_FAMILY);
	refused_str_at(PROXY_IN_V1, "PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", 6,
	    PROXY_IN_ERR_BAD_FAMILY);
	refused_str_at(PROXY_IN_V1, "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n", 7,
	    PROXY_IN_ERR_BAD_FAMILY);
	refused_str_at(PROXY_IN_V1, "PROXY TCP4\r\n", 10,
	    PROXY_IN_ERR_BAD_FAMILY);
	refused_str_at(PROXY_IN_V1, "PROXY UNKNOWNX\r\n", 13,
	    PROXY_IN_ERR_BAD_FAMILY);
	refused_str_at(PROXY_IN_V1, "PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", 6,
	    PROXY_IN_ERR_BAD_FAMILY);
}

#define LAST	SIZE_MAX	/* the line's last byte: it is complete */

/* Addresses, ports and spacing: refused at the byte that decides. */
static void
v1_fields_are_strict(void **state)
{
	static const struct {
		const char	*line;
		size_t		 at;
	} bad[] = {
		/* Spacing and the line's end. */
		{ "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n", 11 },
		{ "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", 19 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", 30 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n", 30 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", 28 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", 30 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n", 31 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\tx\r\n", 30 },
		/* Characters no address or port of the family has. */
		{ "PROXY TCP4 ::1 ::1 1 2\r\n", 11 },
		{ "PROXY TCP4 1.2.3.x 5.6.7.8 1 2\r\n", 17 },
		{ "PROXY TCP6 ::g ::1 1 2\r\n", 13 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n", 27 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1.0 2\r\n", 28 },
		{ "PROXY TCP6 ::1 ::1 a 2\r\n", 19 },
		/* Longer than any address or port can be. */
		{ "PROXY TCP4 1111.222.333.444 5.6.7.8 1 2\r\n", 26 },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 123456 2\r\n", 32 },
		/* The right characters, but no address or port: at the LF. */
		{ "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", LAST },
		{ "PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n", LAST },
		{ "PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n", LAST },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", LAST },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n", LAST },
		{ "PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n", LAST },
		{ "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n", LAST },
		{ "PROXY TCP6 1::2::3 ::1 1 2\r\n", LAST },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		refused_str_at(PROXY_IN_V1, bad[i].line, bad[i].at == LAST ?
		    strlen(bad[i].line) - 1 : bad[i].at,
		    PROXY_IN_ERR_BAD_ADDRESS);
}

/* The extremes of what is allowed. */
static void
v1_accepts_the_extremes(void **state)
{
	const char *lines[] = {
		"PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n",
		"PROXY TCP6 :: ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 0\r\n",
	};

	(void)state;
	for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]); i++)
		valid_in(PROXY_IN_V1, (const uint8_t *)lines[i],
		    strlen(lines[i]));
}

/* ---- version 2 ---- */

static void
v2_tcp4_gives_every_field(void **state)
{
	uint8_t block[12 + 3 + 2 + 3 + 5], buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	memcpy(block + 12, "\x01\x00\x02" "h2" "\xe7\x00\x05" "hello", 13);
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.version, 2);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_int_equal(in.family, AF_INET);
	assert_int_equal(in.socktype, SOCK_STREAM);
	assert_in4(&in.src, "192.0.2.7", 40000);
	assert_in4(&in.dst, "127.0.0.1", 5000);
	assert_int_equal(in.ntlvs, 2);
	assert_int_equal(in.tlvs_over, 0);
	assert_int_equal(in.tlvs[0].type, PP2_TYPE_ALPN);
	assert_int_equal(in.tlvs[0].len, 2);
	assert_ptr_equal(in.tlvs[0].value, buf + 31);
	assert_int_equal(in.tlvs[1].type, 0xe7);
	assert_int_equal(in.tlvs[1].len, 5);
	assert_ptr_equal(in.tlvs[1].value, buf + 36);
	assert_ptr_equal(proxy_in_tlv(&in, 0xe7), &in.tlvs[1]);
	assert_null(proxy_in_tlv(&in, PP2_TYPE_AUTHORITY));
	valid_in(PROXY_IN_V2, buf, len);

	buf[13] = 0x12;		/* UDP over IPv4 */
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.family, AF_INET);
	assert_int_equal(in.socktype, SOCK_DGRAM);
}

static void
v2_tcp6_gives_every_field(void **state)
{
	struct sockaddr_in6 s, d;
	uint8_t block[36], buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1", &s.sin6_addr), 1);
	assert_int_equal(inet_pton(AF_INET6, "::1", &d.sin6_addr), 1);
	memcpy(block, &s.sin6_addr, 16);
	memcpy(block + 16, &d.sin6_addr, 16);
	memcpy(block + 32, "\x00\x01\xff\xff", 4);
	len = v2(buf, 0x21, 0x21, block, sizeof(block));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.version, 2);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_int_equal(in.family, AF_INET6);
	assert_int_equal(in.socktype, SOCK_STREAM);
	assert_in6(&in.src, "2001:db8::1", 1);
	assert_in6(&in.dst, "::1", 65535);
	assert_int_equal(in.ntlvs, 0);
	valid_in(PROXY_IN_V2, buf, len);
	buf[13] = 0x22;
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.socktype, SOCK_DGRAM);
}

/* UNIX: two 108-byte paths, an abstract one (leading NUL) as it came. */
static void
v2_unix_gives_both_paths(void **state)
{
	uint8_t block[216], buf[16 + 216];
	const struct sockaddr_un *su, *du;
	struct proxy_in in;
	size_t len;

	(void)state;
	memset(block, 0, sizeof(block));
	memcpy(block, "/run/client.sock", 16);
	memcpy(block + 108, "\0abstract", 9);
	len = v2(buf, 0x21, 0x31, block, sizeof(block));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.family, AF_UNIX);
	assert_int_equal(in.socktype, SOCK_STREAM);
	su = (const struct sockaddr_un *)&in.src;
	du = (const struct sockaddr_un *)&in.dst;
	assert_int_equal(su->sun_family, AF_UNIX);
	assert_int_equal(du->sun_family, AF_UNIX);
	assert_string_equal(su->sun_path, "/run/client.sock");
	assert_memory_equal(du->sun_path, block + 108, 108);
	valid_in(PROXY_IN_V2, buf, len);
	buf[13] = 0x32;
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.socktype, SOCK_DGRAM);
	/* A full 108 bytes, no NUL: the storage's room after it stays 0. */
	memset(buf + 16, 'p', 216);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_memory_equal(su->sun_path, buf + 16, 108);
	assert_int_equal(((const uint8_t *)&in.src)[offsetof(struct sockaddr_un,
	    sun_path) + 108], 0);
}

/* PROXY over UNSPEC: accepted, no address; TLVs start at once. */
static void
v2_unspec_names_no_address(void **state)
{
	uint8_t buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	len = v2(buf, 0x21, 0x00, "\x05\x00\x03" "abc", 6);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_no_address(&in);
	assert_int_equal(in.ntlvs, 1);
	assert_int_equal(in.tlvs[0].type, PP2_TYPE_UNIQUE_ID);
	assert_memory_equal(in.tlvs[0].value, "abc", 3);
	valid_in(PROXY_IN_V2, buf, len);
	len = v2(buf, 0x21, 0x00, NULL, 0);
	valid_in(PROXY_IN_V2, buf, len);
}

/*
 * LOCAL: the addresses are discarded, whatever the family; the family
 * still says where the TLVs start.
 */
static void
v2_local_discards_the_addresses(void **state)
{
	uint8_t block[12 + 6], buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	len = v2(buf, 0x20, 0x00, NULL, 0);	/* a health check */
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), 16);
	assert_int_equal(in.version, 2);
	assert_int_equal(in.command, PROXY_IN_LOCAL);
	assert_no_address(&in);
	valid_in(PROXY_IN_V2, buf, len);

	memcpy(block, addr4, 12);
	memcpy(block + 12, "\xe0\x00\x03" "xyz", 6);
	len = v2(buf, 0x20, 0x11, block, sizeof(block));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.command, PROXY_IN_LOCAL);
	assert_no_address(&in);
	assert_int_equal(in.ntlvs, 1);
	assert_int_equal(in.tlvs[0].type, 0xe0);
	assert_ptr_equal(in.tlvs[0].value, buf + 31);
	valid_in(PROXY_IN_V2, buf, len);
	/* Shorter than its family's addresses: refused, as under PROXY. */
	len = v2(buf, 0x20, 0x11, addr4, 11);
	refused_at(PROXY_IN_V2, buf, len, 15, PROXY_IN_ERR_BAD_LENGTH);
}

/* A wrong byte anywhere in the 12-byte signature, at that byte. */
static void
v2_bad_signature_at_each_byte(void **state)
{
	uint8_t buf[64];
	size_t len;

	(void)state;
	for (size_t i = 0; i < 12; i++) {
		len = v2(buf, 0x21, 0x11, addr4, 12);
		buf[i] ^= 0x01;
		refused_at(PROXY_IN_V2, buf, len, i, PROXY_IN_ERR_BAD_SIGNATURE);
		refused_at(PROXY_IN_ANY, buf, len, i,
		    PROXY_IN_ERR_BAD_SIGNATURE);
	}
}

/* Version 2 only, LOCAL or PROXY only: the other 254 bytes refused. */
static void
v2_bad_version_or_command(void **state)
{
	uint8_t buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	for (unsigned b = 0; b < 256; b++) {
		len = v2(buf, (uint8_t)b, 0x11, addr4, 12);
		if (b == 0x20 || b == 0x21) {
			assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len,
			    &in), (int)len);
			continue;
		}
		refused_at(PROXY_IN_V2, buf, len, 12, PROXY_IN_ERR_BAD_VERSION);
	}
}

/* The seven family bytes the spec defines, and no other. */
static void
v2_bad_family(void **state)
{
	static const uint8_t ok[] = { 0x00, 0x11, 0x12, 0x21, 0x22, 0x31, 0x32 };
	uint8_t block[216], buf[256];
	struct proxy_in in;
	size_t len;

	(void)state;
	memset(block, 0, sizeof(block));
	for (unsigned b = 0; b < 256; b++) {
		len = v2(buf, 0x21, (uint8_t)b, block, sizeof(block));
		if (memchr(ok, (int)b, sizeof(ok)) != NULL) {
			/* Whatever the block does not use is TLVs: none. */
			buf[14] = 0;
			buf[15] = b == 0 ? 0 : b >> 4 == 1 ? 12 :
			    b >> 4 == 2 ? 36 : 216;
			len = 16 + buf[15];
			assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len,
			    &in), (int)len);
			continue;
		}
		refused_at(PROXY_IN_V2, buf, len, 13, PROXY_IN_ERR_BAD_FAMILY);
		buf[12] = 0x20;		/* LOCAL too */
		refused_at(PROXY_IN_V2, buf, len, 13, PROXY_IN_ERR_BAD_FAMILY);
	}
}

/* The length: over PROXY_IN_MAX, or short of the family's addresses. */
static void
v2_bad_length_is_known_from_the_length_field(void **state)
{
	static uint8_t big[PROXY_IN_MAX + 1];
	uint8_t buf[64];
	size_t len;

	(void)state;
	len = v2(buf, 0x21, 0x11, addr4, 11);
	refused_at(PROXY_IN_V2, buf, len, 15, PROXY_IN_ERR_BAD_LENGTH);
	len = v2(buf, 0x21, 0x21, addr4, 12);
	refused_at(PROXY_IN_V2, buf, len, 15, PROXY_IN_ERR_BAD_LENGTH);
	len = v2(buf, 0x21, 0x31, addr4, 12);
	refused_at(PROXY_IN_V2, buf, len, 15, PROXY_IN_ERR_BAD_LENGTH);
	/* 0xffff: the spec's largest, over esockd's bound, at byte 15. */
	len = v2(buf, 0x21, 0x11, addr4, 12);
	buf[14] = buf[15] = 0xff;
	refused_at(PROXY_IN_V2, buf, len, 15, PROXY_IN_ERR_BAD_LENGTH);
	/* PROXY_IN_MAX + 1 refused before a byte of it comes. */
	v2(big, 0x21, 0x11, addr4, 12);
	big[14] = (uint8_t)((PROXY_IN_MAX + 1 - 16) >> 8);
	big[15] = (uint8_t)(PROXY_IN_MAX + 1 - 16);
	refused_at(PROXY_IN_V2, big, sizeof(big), 15, PROXY_IN_ERR_BAD_LENGTH);
}

/*
 * The longest TLV that fits PROXY_IN_MAX is accepted, its value intact;
 * a TLV one byte longer than what is left is refused as soon as its
 * 3-byte head is in, before its value comes.
 */
static void
v2_longest_tlv(void **state)
{
	static uint8_t buf[PROXY_IN_MAX + 64];
	const size_t vlen = PROXY_IN_MAX - 16 - 12 - 3;
	uint8_t block[12 + 3];
	struct proxy_in in;
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	block[12] = 0xee;
	block[13] = (uint8_t)(vlen >> 8);
	block[14] = (uint8_t)vlen;
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	memset(buf + len, 'v', vlen);
	len += vlen;
	buf[14] = (uint8_t)((len - 16) >> 8);
	buf[15] = (uint8_t)(len - 16);
	assert_int_equal(len, PROXY_IN_MAX);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.ntlvs, 1);
	assert_int_equal(in.tlvs[0].type, 0xee);
	assert_int_equal(in.tlvs[0].len, vlen);
	assert_ptr_equal(in.tlvs[0].value, buf + 31);
	valid_in(PROXY_IN_V2, buf, len);

	/* One byte more of value than the header holds. */
	buf[29] = (uint8_t)((vlen + 1) >> 8);
	buf[30] = (uint8_t)(vlen + 1);
	refused_at(PROXY_IN_V2, buf, len, 30, PROXY_IN_ERR_BAD_LENGTH);
	/* The largest TLV length of all, in a small header. */
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	buf[29] = buf[30] = 0xff;
	refused_at(PROXY_IN_V2, buf, len, 30, PROXY_IN_ERR_BAD_LENGTH);
}

/*
 * One or two bytes left at the end cannot hold a TLV's head: refused
 * once the TLV before them is in.
 */
static void
v2_a_tlv_head_cut_short_is_bad_length(void **state)
{
	uint8_t block[12 + 5], buf[64];
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	memcpy(block + 12, "\x04\x00\x00" "\x04\x00", 5);
	len = v2(buf, 0x21, 0x11, block, 12 + 4);
	refused_at(PROXY_IN_V2, buf, len, 30, PROXY_IN_ERR_BAD_LENGTH);
	len = v2(buf, 0x21, 0x11, block, 12 + 5);
	refused_at(PROXY_IN_V2, buf, len, 30, PROXY_IN_ERR_BAD_LENGTH);
	len = v2(buf, 0x21, 0x11, block, 12 + 3);
	valid_in(PROXY_IN_V2, buf, len);	/* a NOOP of length 0 */
}

static void
put_crc(uint8_t *buf, size_t len, size_t at)
{
	uint32_t crc;

	memset(buf + at, 0, 4);
	crc = proxy_crc32c(buf, len);
	buf[at] = (uint8_t)(crc >> 24);
	buf[at + 1] = (uint8_t)(crc >> 16);
	buf[at + 2] = (uint8_t)(crc >> 8);
	buf[at + 3] = (uint8_t)crc;
}

/*
 * PP2_TYPE_CRC32C: a match is accepted, any changed bit refused as bad
 * checksum; not 4 bytes is bad length; two are refused.
 */
static void
v2_crc32c_is_checked(void **state)
{
	uint8_t block[12 + 14], buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	memcpy(block + 12, "\x03\x00\x04" "\0\0\0\0" "\x05\x00\x03" "abc", 13);
	len = v2(buf, 0x21, 0x11, block, 12 + 13);
	put_crc(buf, len, 31);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.ntlvs, 2);
	assert_int_equal(in.tlvs[0].type, PP2_TYPE_CRC32C);
	valid_in(PROXY_IN_V2, buf, len);
	for (size_t i = 0; i < len * 8; i++) {
		uint8_t copy[64];

		if (i / 8 >= 12 && i / 8 < 16)
			continue;	/* version, family, length: own reasons */
		if (i / 8 >= 28 && i / 8 < 31)
			continue;	/* the CRC TLV's head: its type, length */
		if (i / 8 >= 35 && i / 8 < 38)
			continue;	/* the UNIQUE_ID TLV's head */
		if (i / 8 < 12)
			continue;	/* the signature */
		memcpy(copy, buf, len);
		copy[i / 8] ^= (uint8_t)(1u << (i % 8));
		assert_int_equal(proxy_in_parse(PROXY_IN_V2, copy, len, &in),
		    PROXY_IN_ERR_BAD_CHECKSUM);
	}
	/* Three bytes of value: bad length, as soon as its head is in. */
	memcpy(block + 12, "\x03\x00\x03" "\0\0\0" "\x04\x00\x01" "x", 10);
	len = v2(buf, 0x21, 0x11, block, 12 + 10);
	refused_at(PROXY_IN_V2, buf, len, 30, PROXY_IN_ERR_BAD_LENGTH);
	/* Twice. */
	memcpy(block + 12, "\x03\x00\x04" "\0\0\0\0" "\x03\x00\x04" "\0\0\0\0",
	    14);
	len = v2(buf, 0x21, 0x11, block, 12 + 14);
	refused_at(PROXY_IN_V2, buf, len, 37, PROXY_IN_ERR_BAD_CHECKSUM);
}

/*
 * PP2_TYPE_SSL: its 5 fixed bytes and a chain of sub-TLVs that ends
 * where it does, or bad length.
 */
static void
v2_ssl_tlv_must_be_well_formed(void **state)
{
	static const char good[] = "\x20\x00\x0f" "\x07" "\0\0\0\0"
	    "\x21\x00\x07" "TLSv1.3";
	uint8_t block[12 + 32], buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	memcpy(block + 12, good, sizeof(good) - 1);
	len = v2(buf, 0x21, 0x11, block, 12 + sizeof(good) - 1);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.tlvs[0].type, PP2_TYPE_SSL);
	assert_int_equal(in.tlvs[0].len, 15);
	valid_in(PROXY_IN_V2, buf, len);

	buf[38] = 0x08;		/* the sub-TLV runs past the SSL TLV */
	refused_at(PROXY_IN_V2, buf, len, len - 1, PROXY_IN_ERR_BAD_LENGTH);
	buf[38] = 0x06;		/* ends before it, one byte left over */
	refused_at(PROXY_IN_V2, buf, len, len - 1, PROXY_IN_ERR_BAD_LENGTH);
	/* Fewer than the 5 fixed bytes. */
	len = v2(buf, 0x21, 0x11, block, 12);
	memcpy(buf + len, "\x20\x00\x04" "\x01\0\0\0", 7);
	len += 7;
	buf[15] = 12 + 7;
	refused_at(PROXY_IN_V2, buf, len, len - 1, PROXY_IN_ERR_BAD_LENGTH);
	/* Exactly the 5 fixed bytes: no sub-TLV is fine. */
	memcpy(buf + 28, "\x20\x00\x05" "\x01\0\0\0\0", 8);
	len = 36;
	buf[15] = 12 + 8;
	valid_in(PROXY_IN_V2, buf, len);
}

/* More TLVs than kept: all checked, the first PROXY_IN_TLVS kept. */
static void
v2_tlvs_past_the_array_are_counted(void **state)
{
	uint8_t block[12 + 40 * 4], buf[256];
	struct proxy_in in;
	size_t len;

	(void)state;
	memcpy(block, addr4, 12);
	for (size_t i = 0; i < 40; i++) {
		memcpy(block + 12 + 4 * i, "\xe1\x00\x01", 3);
		block[12 + 4 * i + 3] = (uint8_t)i;
	}
	len = v2(buf, 0x21, 0x11, block, sizeof(block));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.ntlvs, PROXY_IN_TLVS);
	assert_int_equal(in.tlvs_over, 40 - PROXY_IN_TLVS);
	assert_int_equal(in.tlvs[PROXY_IN_TLVS - 1].value[0],
	    PROXY_IN_TLVS - 1);
	/* The last one is checked even so. */
	buf[16 + 12 + 4 * 39 + 2] = 2;
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in),
	    PROXY_IN_ERR_BAD_LENGTH);
}

/* ---- modes ---- */

static void
each_mode_takes_its_own_version(void **state)
{
	const char *line = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
	uint8_t buf[64];
	struct proxy_in in;
	size_t len;

	(void)state;
	len = v2(buf, 0x21, 0x11, addr4, 12);
	refused_at(PROXY_IN_V1, buf, len, 0, PROXY_IN_ERR_BAD_SIGNATURE);
	refused_str_at(PROXY_IN_V2, line, 0, PROXY_IN_ERR_BAD_SIGNATURE);
	assert_int_equal(proxy_in_parse(PROXY_IN_ANY, buf, len, &in), 28);
	assert_int_equal(in.version, 2);
	assert_int_equal(parse_str(PROXY_IN_ANY, line, &in), (int)strlen(line));
	assert_int_equal(in.version, 1);
	/* Not a header at all: a TLS ClientHello, an HTTP request. */
	refused_str_at(PROXY_IN_ANY, "\x16\x03\x01\x02\x00", 0,
	    PROXY_IN_ERR_BAD_SIGNATURE);
	refused_str_at(PROXY_IN_ANY, "GET / HTTP/1.0\r\n", 0,
	    PROXY_IN_ERR_BAD_SIGNATURE);
	refused_str_at(PROXY_IN_ANY, "POST / HTTP/1.0\r\n", 1,
	    PROXY_IN_ERR_BAD_SIGNATURE);
	/* "off" refuses everything, even nothing yet. */
	assert_int_equal(proxy_in_parse(PROXY_IN_OFF, buf, len, &in),
	    PROXY_IN_ERR_BAD_SIGNATURE);
	assert_int_equal(proxy_in_parse(PROXY_IN_OFF, buf, 0, &in),
	    PROXY_IN_ERR_BAD_SIGNATURE);
}

/* Each reason its own name; -err - 1 indexes PROXY_IN_NERR counters. */
static void
every_reason_has_a_name(void **state)
{
	(void)state;
	for (int a = 1; a <= PROXY_IN_NERR; a++) {
		assert_string_not_equal(proxy_in_reason(-a), "unknown");
		for (int b = 1; b < a; b++)
			assert_string_not_equal(proxy_in_reason(-a),
			    proxy_in_reason(-b));
	}
	assert_string_equal(proxy_in_reason(PROXY_IN_ERR_BAD_SIGNATURE),
	    "bad_signature");
	assert_string_equal(proxy_in_reason(PROXY_IN_ERR_TIMEOUT), "timeout");
	assert_string_equal(proxy_in_reason(PROXY_IN_ERR_UNTRUSTED),
	    "untrusted");
	assert_string_equal(proxy_in_reason(-PROXY_IN_NERR - 1), "unknown");
	assert_string_equal(proxy_in_reason(0), "unknown");
}

/* ---- esockd's own header, read back ---- */

static struct sockaddr_in
sin4(const char *ip, uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
	    .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
	return sa;
}

static struct sockaddr_in6
sin6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6,
	    .sin6_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
	return sa;
}

static void
assert_tlv(const struct proxy_in *in, size_t i, uint8_t type,
    const char *value)
{
	assert_true(i < in->ntlvs);
	assert_int_equal(in->tlvs[i].type, type);
	assert_int_equal(in->tlvs[i].len, strlen(value));
	assert_memory_equal(in->tlvs[i].value, value, strlen(value));
}

/*
 * A plain listener passing on what it was told: the parser reads back
 * the addresses, esockd's own UNIQUE_ID (the received one dropped), the
 * received ALPN, AUTHORITY, SSL and custom TLVs, and a CRC32C that
 * matches; the received CRC32C and NOOP are not passed on.
 */
static void
the_builder_round_trips_with_passed_tlvs(void **state)
{
	static const uint8_t ssl[] = { 0x01, 0, 0, 0, 0,
	    0x21, 0x00, 0x07, 'T', 'L', 'S', 'v', '1', '.', '2' };
	const struct proxy_tlv passed[] = {
		{ PP2_TYPE_ALPN, 8, (const uint8_t *)"http/1.1" },
		{ PP2_TYPE_AUTHORITY, 11, (const uint8_t *)"example.com" },
		{ PP2_TYPE_CRC32C, 4, (const uint8_t *)"\1\2\3\4" },
		{ PP2_TYPE_NOOP, 0, (const uint8_t *)"" },
		{ PP2_TYPE_UNIQUE_ID, 5, (const uint8_t *)"front" },
		{ PP2_TYPE_SSL, sizeof(ssl), ssl },
		{ 0xea, 6, (const uint8_t *)"vpce-1" },
	};
	struct proxy_tlvs t = { .unique_id = "esockd-1", .crc32c = 1,
	    .passed = passed, .npassed = 7 };
	struct sockaddr_in s = sin4("192.0.2.7", 40000), d = sin4("10.0.0.1", 443);
	uint8_t buf[PROXY_V2_TLV_MAX];
	struct proxy_in in;
	size_t len;

	(void)state;
	len = proxy_v2_header_tlv((struct sockaddr *)&s, (struct sockaddr *)&d,
	    &t, buf, sizeof(buf));
	assert_true(len > 0);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.command, PROXY_IN_PROXY);
	assert_in4(&in.src, "192.0.2.7", 40000);
	assert_in4(&in.dst, "10.0.0.1", 443);
	assert_int_equal(in.ntlvs, 6);
	assert_tlv(&in, 0, PP2_TYPE_ALPN, "http/1.1");
	assert_tlv(&in, 1, PP2_TYPE_AUTHORITY, "example.com");
	assert_int_equal(in.tlvs[2].type, PP2_TYPE_CRC32C);
	assert_memory_not_equal(in.tlvs[2].value, "\1\2\3\4", 4);
	assert_tlv(&in, 3, PP2_TYPE_UNIQUE_ID, "esockd-1");
	assert_int_equal(in.tlvs[4].type, PP2_TYPE_SSL);
	assert_int_equal(in.tlvs[4].len, sizeof(ssl));
	assert_memory_equal(in.tlvs[4].value, ssl, sizeof(ssl));
	assert_tlv(&in, 5, 0xea, "vpce-1");
	valid_in(PROXY_IN_V2, buf, len);
}

/*
 * A TLS listener: its own ALPN, SNI and SSL win over the received ones;
 * IPv6 addresses; the whole read back.  A UNIX pair gives LOCAL, with
 * the TLVs still read.
 */
static void
the_builder_round_trips_on_a_tls_listener(void **state)
{
	const struct proxy_tlv passed[] = {
		{ PP2_TYPE_ALPN, 8, (const uint8_t *)"http/1.1" },
		{ PP2_TYPE_AUTHORITY, 5, (const uint8_t *)"other" },
		{ PP2_TYPE_SSL, 5, (const uint8_t *)"\0\0\0\0\0" },
		{ 0xe0, 1, (const uint8_t *)"!" },
	};
	struct proxy_tls tls = { .client = PP2_CLIENT_SSL, .version = "TLSv1.3",
	    .cipher = "TLS_AES_128_GCM_SHA256", .key_alg = "EC256",
	    .sni = "example.com", .alpn = (const uint8_t *)"h2", .alpn_len = 2 };
	struct proxy_tlvs t = { .tls = &tls, .unique_id = "u", .passed = passed,
	    .npassed = 4 };
	struct sockaddr_in6 s = sin6("2001:db8::7", 1), d = sin6("::1", 2);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	uint8_t buf[PROXY_V2_TLV_MAX];
	struct proxy_in in;
	size_t len;

	(void)state;
	len = proxy_v2_header_tlv((struct sockaddr *)&s, (struct sockaddr *)&d,
	    &t, buf, sizeof(buf));
	assert_int_equal(proxy_in_parse(PROXY_IN_ANY, buf, len, &in), (int)len);
	assert_in6(&in.src, "2001:db8::7", 1);
	assert_in6(&in.dst, "::1", 2);
	assert_int_equal(in.ntlvs, 5);
	assert_tlv(&in, 0, PP2_TYPE_ALPN, "h2");
	assert_tlv(&in, 1, PP2_TYPE_AUTHORITY, "example.com");
	assert_tlv(&in, 2, PP2_TYPE_UNIQUE_ID, "u");
	assert_int_equal(in.tlvs[3].type, PP2_TYPE_SSL);
	assert_int_equal(in.tlvs[3].value[0], PP2_CLIENT_SSL);
	assert_tlv(&in, 4, 0xe0, "!");

	len = proxy_v2_header_tlv((struct sockaddr *)&un, (struct sockaddr *)&un,
	    &t, buf, sizeof(buf));
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, len, &in), (int)len);
	assert_int_equal(in.command, PROXY_IN_LOCAL);
	assert_no_address(&in);
	assert_int_equal(in.ntlvs, 5);
}

/* The longest header esockd can send is one esockd reads. */
static void
the_longest_header_esockd_sends_is_read(void **state)
{
	static uint8_t custom[PROXY_PASS_MAX];
	char uid[PROXY_UNIQUE_ID_MAX + 1], name[PROXY_NAME_MAX + 1];
	char sni[PROXY_STR_MAX + 1];
	uint8_t alpn[PROXY_STR_MAX], buf[PROXY_V2_TLV_MAX];
	struct proxy_tls tls = { .client = 7, .cn_len = PROXY_STR_MAX,
	    .alpn = alpn, .alpn_len = PROXY_STR_MAX };
	struct proxy_tlv passed = { 0xef, PROXY_PASS_MAX - 3, custom };
	struct proxy_tlvs t = { .tls = &tls, .unique_id = uid, .crc32c = 1,
	    .passed = &passed, .npassed = 1 };
	struct sockaddr_in6 s = sin6("2001:db8::1", 1), d = sin6("::1", 2);
	struct proxy_in in;

	(void)state;
	memset(uid, 'u', PROXY_UNIQUE_ID_MAX);
	uid[PROXY_UNIQUE_ID_MAX] = '\0';
	memset(name, 'n', PROXY_NAME_MAX);
	name[PROXY_NAME_MAX] = '\0';
	memset(sni, 's', PROXY_STR_MAX);
	sni[PROXY_STR_MAX] = '\0';
	memset(alpn, 'a', sizeof(alpn));
	memset(tls.cn, 'c', PROXY_STR_MAX);
	memcpy(tls.key_alg, name, sizeof(name));
	tls.version = tls.cipher = tls.sig_alg = name;
	tls.sni = sni;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&s,
	    (struct sockaddr *)&d, &t, buf, sizeof(buf)), PROXY_V2_TLV_MAX);
	assert_int_equal(proxy_in_parse(PROXY_IN_V2, buf, PROXY_V2_TLV_MAX,
	    &in), PROXY_V2_TLV_MAX);
	assert_int_equal(in.tlvs[in.ntlvs - 1].type, 0xef);
	assert_int_equal(in.tlvs[in.ntlvs - 1].len, PROXY_PASS_MAX - 3);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(v1_tcp4_gives_every_field),
		cmocka_unit_test(v1_tcp6_gives_every_field),
		cmocka_unit_test(v1_unknown_is_local),
		cmocka_unit_test(v1_line_is_at_most_107_bytes),
		cmocka_unit_test(v1_bad_signature_at_each_byte),
		cmocka_unit_test(v1_bad_family),
		cmocka_unit_test(v1_fields_are_strict),
		cmocka_unit_test(v1_accepts_the_extremes),
		cmocka_unit_test(v2_tcp4_gives_every_field),
		cmocka_unit_test(v2_tcp6_gives_every_field),
		cmocka_unit_test(v2_unix_gives_both_paths),
		cmocka_unit_test(v2_unspec_names_no_address),
		cmocka_unit_test(v2_local_discards_the_addresses),
		cmocka_unit_test(v2_bad_signature_at_each_byte),
		cmocka_unit_test(v2_bad_version_or_command),
		cmocka_unit_test(v2_bad_family),
		cmocka_unit_test(v2_bad_length_is_known_from_the_length_field),
		cmocka_unit_test(v2_longest_tlv),
		cmocka_unit_test(v2_a_tlv_head_cut_short_is_bad_length),
		cmocka_unit_test(v2_crc32c_is_checked),
		cmocka_unit_test(v2_ssl_tlv_must_be_well_formed),
		cmocka_unit_test(v2_tlvs_past_the_array_are_counted),
		cmocka_unit_test(each_mode_takes_its_own_version),
		cmocka_unit_test(every_reason_has_a_name),
		cmocka_unit_test(the_builder_round_trips_with_passed_tlvs),
		cmocka_unit_test(the_builder_round_trips_on_a_tls_listener),
		cmocka_unit_test(the_longest_header_esockd_sends_is_read),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
