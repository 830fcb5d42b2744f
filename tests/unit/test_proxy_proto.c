/*
 * test_proxy_proto.c: the PROXY v2 header, byte for byte, for each kind
 * of address pair a listener can see.
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(tcp4_carries_both_addresses_and_ports),
		cmocka_unit_test(tcp6_carries_both_addresses_and_ports),
		cmocka_unit_test(mapped_ipv4_is_sent_as_tcp4),
		cmocka_unit_test(other_pairs_get_the_local_command),
		cmocka_unit_test(a_short_buffer_gets_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
