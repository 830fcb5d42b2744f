/*
 * test_proxy_proto.c: the PROXY v2 header, byte for byte, for each kind
 * of address pair a listener can see, and its TLVs: each type, the
 * CRC32c, the bounds that keep the header within its buffer, and the
 * merge of received TLVs passed on with esockd's own.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

#include "proxy_proto.h"

static const uint8_t sig[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a,
    0x51, 0x55, 0x49, 0x54, 0x0a };

static struct sockaddr_in
v4(const char *ip, uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET,
	    .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, ip, &sa.sin_addr), 1);
	return sa;
}

static struct sockaddr_in6
v6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 sa = { .sin6_family = AF_INET6,
	    .sin6_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET6, ip, &sa.sin6_addr), 1);
	return sa;
}

static void
tcp4_carries_both_addresses_and_ports(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	const uint8_t want[28 - 12] = { 0x21, 0x11, 0x00, 0x0c,
	    192, 0, 2, 7, 127, 0, 0, 1, 0x9c, 0x40, 0x13, 0x88 };
	uint8_t buf[PROXY_V2_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, buf, sizeof(buf)), 28);
	assert_memory_equal(buf, sig, 12);
	assert_memory_equal(buf + 12, want, sizeof(want));
}

static void
tcp6_carries_both_addresses_and_ports(void **state)
{
	struct sockaddr_in6 src = v6("2001:db8::1", 1), dst = v6("::1", 65535);
	uint8_t buf[PROXY_V2_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, buf, sizeof(buf)), 52);
	assert_memory_equal(buf, sig, 12);
	assert_int_equal(buf[12], 0x21);
	assert_int_equal(buf[13], 0x21);
	assert_int_equal(buf[14], 0);
	assert_int_equal(buf[15], 36);
	assert_memory_equal(buf + 16, &src.sin6_addr, 16);
	assert_memory_equal(buf + 32, &dst.sin6_addr, 16);
	assert_int_equal(buf[48], 0);
	assert_int_equal(buf[49], 1);
	assert_int_equal(buf[50], 0xff);
	assert_int_equal(buf[51], 0xff);
}

/* A dual-stack socket shows an IPv4 client as ::ffff:a.b.c.d. */
static void
mapped_ipv4_is_sent_as_tcp4(void **state)
{
	struct sockaddr_in6 src = v6("::ffff:10.1.2.3", 80);
	struct sockaddr_in6 dst = v6("::ffff:127.0.0.1", 443);
	const uint8_t want[16] = { 0x21, 0x11, 0x00, 0x0c,
	    10, 1, 2, 3, 127, 0, 0, 1, 0x00, 0x50, 0x01, 0xbb };
	uint8_t buf[PROXY_V2_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, buf, sizeof(buf)), 28);
	assert_memory_equal(buf + 12, want, sizeof(want));
}

/* Mixed or non-IP families: LOCAL, never a made-up address. */
static void
other_pairs_get_the_local_command(void **state)
{
	struct sockaddr_in6 src = v6("::ffff:10.1.2.3", 80), dst = v6("::1", 443);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	struct sockaddr_in four = v4("127.0.0.1", 1);
	const uint8_t want[4] = { 0x20, 0x00, 0x00, 0x00 };
	uint8_t buf[PROXY_V2_MAX];

	(void)state;
	/* One end mapped, one not: IPv6 as seen, not a guess at IPv4. */
	assert_int_equal(proxy_v2_header((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, buf, sizeof(buf)), 52);
	assert_int_equal(buf[13], 0x21);
	assert_memory_equal(buf + 16, &src.sin6_addr, 16);
	assert_int_equal(proxy_v2_header((struct sockaddr *)&un,
	    (struct sockaddr *)&un, buf, sizeof(buf)), 16);
	assert_memory_equal(buf + 12, want, 4);
	assert_int_equal(proxy_v2_header((struct sockaddr *)&four,
	    (struct sockaddr *)&dst, buf, sizeof(buf)), 16);
	assert_memory_equal(buf + 12, want, 4);
}

static void
a_short_buffer_gets_nothing(void **state)
{
	struct sockaddr_in src = v4("127.0.0.1", 1), dst = v4("127.0.0.1", 2);
	uint8_t buf[PROXY_V2_MAX];

	(void)state;
	memset(buf, 0xaa, sizeof(buf));
	assert_int_equal(proxy_v2_header((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, buf, PROXY_V2_MAX - 1), 0);
	assert_int_equal(buf[0], 0xaa);
}

/* A TLS client's identity as tls_identity would fill it. */
static struct proxy_tls
tls_alice(void)
{
	struct proxy_tls t = { .client = PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN |
	    PP2_CLIENT_CERT_SESS, .verify = 0, .version = "TLSv1.3",
	    .cipher = "TLS_AES_128_GCM_SHA256", .sig_alg = "RSA-SHA256",
	    .key_alg = "RSA2048", .cn = "alice", .cn_len = 5,
	    .sni = "example.com", .alpn = (const uint8_t *)"h2",
	    .alpn_len = 2 };

	return t;
}

/* A plain listener: the addresses, then UNIQUE_ID only. */
static void
a_plain_listener_sends_the_unique_id_only(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	struct proxy_tlvs t = { .unique_id = "abc-1-7" };
	static const char want[] = "\x21\x11\x00\x16"
	    "\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x13\x88"
	    "\x05\x00\x07" "abc-1-7";
	uint8_t buf[PROXY_V2_TLV_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 16 + 22);
	assert_memory_equal(buf, sig, 12);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);
}

/* Every TLV a TLS client brings, in type order, SSL's subtypes in theirs. */
static void
a_tls_client_brings_alpn_authority_and_ssl(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	struct proxy_tls tls = tls_alice();
	struct proxy_tlvs t = { .tls = &tls, .unique_id = "u1" };
	static const char want[] = "\x21\x11\x00\x6e"
	    "\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x13\x88"
	    "\x01\x00\x02" "h2"
	    "\x02\x00\x0b" "example.com"
	    "\x05\x00\x02" "u1"
	    "\x20\x00\x47" "\x07" "\x00\x00\x00\x00"
	    "\x21\x00\x07" "TLSv1.3"
	    "\x22\x00\x05" "alice"
	    "\x23\x00\x16" "TLS_AES_128_GCM_SHA256"
	    "\x24\x00\x0a" "RSA-SHA256"
	    "\x25\x00\x07" "RSA2048";
	uint8_t buf[PROXY_V2_TLV_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    12 + sizeof(want) - 1);
	assert_memory_equal(buf, sig, 12);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);
}

/*
 * No client certificate: no CN, the verify result as given (non-zero),
 * and a name tls_identity could not find (NULL) is left out; no SNI and
 * no ALPN: no AUTHORITY, no ALPN.
 */
static void
what_the_client_did_not_send_is_left_out(void **state)
{
	struct sockaddr_in src = v4("10.0.0.1", 1), dst = v4("10.0.0.2", 2);
	struct proxy_tls tls = { .client = PP2_CLIENT_SSL, .verify = 1,
	    .version = "TLSv1.2", .cipher = "AES128-SHA", .key_alg = "EC256" };
	struct proxy_tlvs t = { .tls = &tls, .unique_id = "u" };
	static const char want[] = "\x21\x11\x00\x37"
	    "\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x01\x00\x02"
	    "\x05\x00\x01" "u"
	    "\x20\x00\x24" "\x01" "\x00\x00\x00\x01"
	    "\x21\x00\x07" "TLSv1.2"
	    "\x23\x00\x0a" "AES128-SHA"
	    "\x25\x00\x05" "EC256";
	uint8_t buf[PROXY_V2_TLV_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    12 + sizeof(want) - 1);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);
}

/* The published CRC32c check values (RFC 3720 B.4 and "123456789"). */
static void
crc32c_matches_the_known_vectors(void **state)
{
	uint8_t zeros[32] = { 0 }, ones[32];

	(void)state;
	memset(ones, 0xff, sizeof(ones));
	assert_int_equal(proxy_crc32c((const uint8_t *)"123456789", 9),
	    0xe3069283u);
	assert_int_equal(proxy_crc32c(zeros, sizeof(zeros)), 0x8a9136aau);
	assert_int_equal(proxy_crc32c(ones, sizeof(ones)), 0x62a8ab43u);
	assert_int_equal(proxy_crc32c(NULL, 0), 0);
}

/*
 * PP2_TYPE_CRC32C: the CRC32c of the whole header with its own 4 bytes
 * zero, big-endian, after UNIQUE_ID's predecessors in type order.
 */
static void
the_crc32c_tlv_covers_the_whole_header(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	struct proxy_tlvs t = { .unique_id = "abc-1-7", .crc32c = 1 };
	static const char want[] = "\x21\x11\x00\x1d"
	    "\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x13\x88"
	    "\x03\x00\x04";
	uint8_t buf[PROXY_V2_TLV_MAX], copy[PROXY_V2_TLV_MAX];
	uint32_t crc;

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 16 + 29);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);
	assert_memory_equal(buf + 35, "\x05\x00\x07" "abc-1-7", 10);
	crc = (uint32_t)buf[31] << 24 | (uint32_t)buf[32] << 16 |
	    (uint32_t)buf[33] << 8 | buf[34];
	memcpy(copy, buf, 45);
	memset(copy + 31, 0, 4);
	assert_int_equal(crc, proxy_crc32c(copy, 45));
	assert_int_not_equal(crc, 0);
}

/*
 * The longest values (a CN and an SNI name of 255 bytes, and every
 * other value at its bound) fill PROXY_V2_OWN_MAX exactly; one byte
 * less of buffer, or one byte more of any value, and there is no header.
 */
static void
the_longest_header_fits_and_one_byte_more_does_not(void **state)
{
	struct sockaddr_in6 src = v6("2001:db8::1", 1), dst = v6("::1", 2);
	char cn[PROXY_STR_MAX + 2], sni[PROXY_STR_MAX + 2];
	char uid[PROXY_UNIQUE_ID_MAX + 2], name[PROXY_NAME_MAX + 2];
	uint8_t alpn[PROXY_STR_MAX + 1];
	uint8_t buf[PROXY_V2_OWN_MAX + 64];
	struct proxy_tls tls = { .client = 7, .cn_len = PROXY_STR_MAX,
	    .alpn = alpn, .alpn_len = PROXY_STR_MAX };
	struct proxy_tlvs t = { .tls = &tls, .unique_id = uid, .crc32c = 1 };

	(void)state;
	assert_int_equal(PROXY_V2_OWN_MAX, 1236);
	assert_int_equal(PROXY_V2_TLV_MAX, 1236 + PROXY_PASS_MAX);
	memset(cn, 'c', sizeof(cn));
	memset(sni, 's', PROXY_STR_MAX);
	sni[PROXY_STR_MAX] = '\0';
	memset(uid, 'u', PROXY_UNIQUE_ID_MAX);
	uid[PROXY_UNIQUE_ID_MAX] = '\0';
	memset(name, 'n', PROXY_NAME_MAX);
	name[PROXY_NAME_MAX] = '\0';
	memset(alpn, 'a', sizeof(alpn));
	memcpy(tls.cn, cn, PROXY_STR_MAX);
	memcpy(tls.key_alg, name, PROXY_NAME_MAX + 1);
	tls.version = tls.cipher = tls.sig_alg = name;
	tls.sni = sni;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), PROXY_V2_OWN_MAX);
	assert_int_equal(buf[14] << 8 | buf[15], PROXY_V2_OWN_MAX - 16);
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, PROXY_V2_OWN_MAX - 1), 0);

	tls.cn_len = PROXY_STR_MAX + 1;		/* the CN */
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);
	tls.cn_len = PROXY_STR_MAX;
	sni[PROXY_STR_MAX] = 's';		/* the SNI name */
	sni[PROXY_STR_MAX + 1] = '\0';
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);
	sni[PROXY_STR_MAX] = '\0';
	uid[PROXY_UNIQUE_ID_MAX] = 'u';		/* the unique id */
	uid[PROXY_UNIQUE_ID_MAX + 1] = '\0';
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);
	uid[PROXY_UNIQUE_ID_MAX] = '\0';
	tls.alpn_len = PROXY_STR_MAX + 1;	/* the ALPN protocol */
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);
	tls.alpn_len = PROXY_STR_MAX;
	name[PROXY_NAME_MAX] = 'n';		/* a name */
	name[PROXY_NAME_MAX + 1] = '\0';
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);
	name[PROXY_NAME_MAX] = '\0';
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), PROXY_V2_OWN_MAX);
}

/*
 * A plain listener behind a proxy: ALPN, AUTHORITY, UNIQUE_ID (esockd
 * has none of its own here), SSL and the custom types go on, each in
 * its place in type order, the custom ones last in the order they came;
 * CRC32C, NOOP, NETNS, an unassigned and an experimental type stop.
 */
static void
received_tlvs_pass_on_a_plain_listener_in_type_order(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	const struct proxy_tlv passed[] = {
		{ 0xe5, 2, (const uint8_t *)"c5" },
		{ PP2_TYPE_NETNS, 2, (const uint8_t *)"ns" },
		{ PP2_TYPE_UNIQUE_ID, 7, (const uint8_t *)"front-9" },
		{ PP2_TYPE_NOOP, 3, (const uint8_t *)"\0\0\0" },
		{ PP2_TYPE_CRC32C, 4, (const uint8_t *)"abcd" },
		{ PP2_TYPE_AUTHORITY, 11, (const uint8_t *)"example.org" },
		{ 0xf0, 1, (const uint8_t *)"x" },
		{ PP2_TYPE_SSL, 5, (const uint8_t *)"\x01\0\0\0\0" },
		{ 0x06, 1, (const uint8_t *)"y" },
		{ PP2_TYPE_ALPN, 2, (const uint8_t *)"h2" },
		{ 0xe0, 2, (const uint8_t *)"c0" },
	};
	struct proxy_tlvs t = { .passed = passed, .npassed = 11 };
	static const char want[] = "\x21\x11\x00\x3b"
	    "\xc0\x00\x02\x07\x7f\x00\x00\x01\x9c\x40\x13\x88"
	    "\x01\x00\x02" "h2"
	    "\x02\x00\x0b" "example.org"
	    "\x05\x00\x07" "front-9"
	    "\x20\x00\x05" "\x01\0\0\0\0"
	    "\xe5\x00\x02" "c5"
	    "\xe0\x00\x02" "c0";
	uint8_t buf[PROXY_V2_TLV_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    12 + sizeof(want) - 1);
	assert_memory_equal(buf, sig, 12);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);
}

/*
 * A TLS listener: its own ALPN, SNI name, connection id and SSL win, and
 * the received ones of those types are dropped; the custom ones still
 * go on.  Without an ALPN or SNI name of its own, the received ALPN and
 * AUTHORITY go on, but never a received SSL: esockd's is the truth.
 */
static void
own_tls_details_win_over_received_ones(void **state)
{
	struct sockaddr_in src = v4("10.0.0.1", 1), dst = v4("10.0.0.2", 2);
	const struct proxy_tlv passed[] = {
		{ PP2_TYPE_SSL, 5, (const uint8_t *)"\x01\0\0\0\0" },
		{ PP2_TYPE_ALPN, 8, (const uint8_t *)"http/1.1" },
		{ PP2_TYPE_AUTHORITY, 5, (const uint8_t *)"other" },
		{ PP2_TYPE_UNIQUE_ID, 5, (const uint8_t *)"front" },
		{ 0xef, 1, (const uint8_t *)"z" },
	};
	struct proxy_tls tls = { .client = PP2_CLIENT_SSL, .version = "TLSv1.3",
	    .sni = "example.com", .alpn = (const uint8_t *)"h2", .alpn_len = 2 };
	struct proxy_tlvs t = { .tls = &tls, .unique_id = "u", .passed = passed,
	    .npassed = 5 };
	static const char want[] = "\x21\x11\x00\x39"
	    "\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x01\x00\x02"
	    "\x01\x00\x02" "h2"
	    "\x02\x00\x0b" "example.com"
	    "\x05\x00\x01" "u"
	    "\x20\x00\x0f" "\x01" "\x00\x00\x00\x00"
	    "\x21\x00\x07" "TLSv1.3"
	    "\xef\x00\x01" "z";
	static const char bare[] = "\x21\x11\x00\x39"
	    "\x0a\x00\x00\x01\x0a\x00\x00\x02\x00\x01\x00\x02"
	    "\x01\x00\x08" "http/1.1"
	    "\x02\x00\x05" "other"
	    "\x05\x00\x01" "u"
	    "\x20\x00\x0f" "\x01" "\x00\x00\x00\x00"
	    "\x21\x00\x07" "TLSv1.3"
	    "\xef\x00\x01" "z";
	uint8_t buf[PROXY_V2_TLV_MAX];

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    12 + sizeof(want) - 1);
	assert_memory_equal(buf + 12, want, sizeof(want) - 1);

	tls.sni = NULL;
	tls.alpn = NULL;
	tls.alpn_len = 0;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    12 + sizeof(bare) - 1);
	assert_memory_equal(buf + 12, bare, sizeof(bare) - 1);
}

/* The CRC32c covers the final header, passed-on TLVs included. */
static void
the_crc32c_covers_the_passed_tlvs(void **state)
{
	struct sockaddr_in src = v4("192.0.2.7", 40000), dst = v4("127.0.0.1", 5000);
	const struct proxy_tlv passed[] = {
		{ PP2_TYPE_CRC32C, 4, (const uint8_t *)"\xde\xad\xbe\xef" },
		{ 0xe3, 3, (const uint8_t *)"abc" },
	};
	struct proxy_tlvs t = { .crc32c = 1, .passed = passed, .npassed = 2 };
	uint8_t buf[PROXY_V2_TLV_MAX], copy[PROXY_V2_TLV_MAX];
	uint32_t crc;

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 16 + 12 + 7 + 6);
	assert_memory_equal(buf + 28, "\x03\x00\x04", 3);
	assert_memory_equal(buf + 35, "\xe3\x00\x03" "abc", 6);
	crc = (uint32_t)buf[31] << 24 | (uint32_t)buf[32] << 16 |
	    (uint32_t)buf[33] << 8 | buf[34];
	memcpy(copy, buf, 41);
	memset(copy + 31, 0, 4);
	assert_int_equal(crc, proxy_crc32c(copy, 41));
	/* In pieces, as proxy_in.c checks a received one. */
	assert_int_equal(proxy_crc32c_more(proxy_crc32c_more(0, copy, 20),
	    copy + 20, 21), proxy_crc32c(copy, 41));
}

/*
 * The TLVs that go on take at most PROXY_PASS_MAX bytes, heads
 * included; one byte more and there is no header.  TLVs that stop at
 * esockd do not count.  Nothing passed (npassed 0) is the header of
 * before, byte for byte.
 */
static void
passed_tlvs_are_bounded(void **state)
{
	static uint8_t big[PROXY_PASS_MAX + 16];
	struct sockaddr_in src = v4("10.0.0.1", 1), dst = v4("10.0.0.2", 2);
	struct proxy_tlv passed[] = {
		{ 0xe1, PROXY_PASS_MAX - 3 - 4, big },
		{ 0xe2, 1, big },
		{ PP2_TYPE_NETNS, 3000, big },
	};
	struct proxy_tlvs t = { .unique_id = "u", .passed = passed,
	    .npassed = 3 };
	struct proxy_tlvs none = { .unique_id = "u", .passed = passed };
	struct proxy_tlvs before = { .unique_id = "u" };
	uint8_t buf[PROXY_V2_TLV_MAX], buf2[PROXY_V2_TLV_MAX];
	size_t len;

	(void)state;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)),
	    16 + 12 + 4 + PROXY_PASS_MAX);
	passed[1].len = 2;
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), 0);

	len = proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &none, buf, sizeof(buf));
	assert_int_equal(len, 16 + 12 + 4);
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &before, buf2, sizeof(buf2)), len);
	assert_memory_equal(buf, buf2, len);
}

/*
 * Every own value at its bound and PROXY_PASS_MAX passed on fill
 * PROXY_V2_TLV_MAX exactly, the buffer every caller gives.
 */
static void
the_longest_header_with_passed_tlvs_is_proxy_v2_tlv_max(void **state)
{
	static uint8_t custom[PROXY_PASS_MAX];
	struct sockaddr_in6 src = v6("2001:db8::1", 1), dst = v6("::1", 2);
	char uid[PROXY_UNIQUE_ID_MAX + 1], name[PROXY_NAME_MAX + 1];
	char sni[PROXY_STR_MAX + 1];
	uint8_t alpn[PROXY_STR_MAX], buf[PROXY_V2_TLV_MAX];
	struct proxy_tls tls = { .client = 7, .cn_len = PROXY_STR_MAX,
	    .alpn = alpn, .alpn_len = PROXY_STR_MAX };
	struct proxy_tlv passed[] = {
		{ PP2_TYPE_ALPN, 300, custom },		/* dropped: own wins */
		{ 0xe9, PROXY_PASS_MAX - 3 - 3, custom },
		{ 0xea, 0, custom },
	};
	struct proxy_tlvs t = { .tls = &tls, .unique_id = uid, .crc32c = 1,
	    .passed = passed, .npassed = 3 };

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
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, sizeof(buf)), PROXY_V2_TLV_MAX);
	assert_int_equal(buf[14] << 8 | buf[15], PROXY_V2_TLV_MAX - 16);
	assert_memory_equal(buf + PROXY_V2_TLV_MAX - 3, "\xea\x00\x00", 3);
	assert_int_equal(proxy_v2_header_tlv((struct sockaddr *)&src,
	    (struct sockaddr *)&dst, &t, buf, PROXY_V2_TLV_MAX - 1), 0);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tcp4_carries_both_addresses_and_ports),
		cmocka_unit_test(tcp6_carries_both_addresses_and_ports),
		cmocka_unit_test(mapped_ipv4_is_sent_as_tcp4),
		cmocka_unit_test(other_pairs_get_the_local_command),
		cmocka_unit_test(a_short_buffer_gets_nothing),
		cmocka_unit_test(a_plain_listener_sends_the_unique_id_only),
		cmocka_unit_test(a_tls_client_brings_alpn_authority_and_ssl),
		cmocka_unit_test(what_the_client_did_not_send_is_left_out),
		cmocka_unit_test(crc32c_matches_the_known_vectors),
		cmocka_unit_test(the_crc32c_tlv_covers_the_whole_header),
		cmocka_unit_test(the_longest_header_fits_and_one_byte_more_does_not),
		cmocka_unit_test(received_tlvs_pass_on_a_plain_listener_in_type_order),
		cmocka_unit_test(own_tls_details_win_over_received_ones),
		cmocka_unit_test(the_crc32c_covers_the_passed_tlvs),
		cmocka_unit_test(passed_tlvs_are_bounded),
		cmocka_unit_test(the_longest_header_with_passed_tlvs_is_proxy_v2_tlv_max),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
