/*
 * test_cidr.c: address blocks for allow and deny, parsed and matched.
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

#include "cidr.h"

static struct cidr
block(const char *s)
{
	struct cidr c;
	const char *why = NULL;

	assert_int_equal(cidr_parse(s, &c, &why), 0);
	return c;
}

static const char *
refusal(const char *s)
{
	struct cidr c;
	const char *why = NULL;

	assert_int_equal(cidr_parse(s, &c, &why), -1);
	assert_non_null(why);
	return why;
}

/* Does the address text ip (v4 or v6) match the one block b? */
static int
in(const char *b, const char *ip)
{
	struct cidr c = block(b);
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };

	if (inet_pton(AF_INET, ip, &s4.sin_addr) == 1)
		return cidr_match(&c, 1, (struct sockaddr *)&s4);
	assert_int_equal(inet_pton(AF_INET6, ip, &s6.sin6_addr), 1);
	return cidr_match(&c, 1, (struct sockaddr *)&s6);
}

static void
blocks_parse_with_or_without_a_prefix(void **state)
{
	struct cidr c;

	(void)state;
	c = block("10.0.0.0/8");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.bits, 8);
	c = block("192.0.2.1");
	assert_int_equal(c.bits, 32);
	c = block("::1");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.bits, 128);
	c = block("2001:db8::/32");
	assert_int_equal(c.bits, 32);
	c = block("0.0.0.0/0");
	assert_int_equal(c.bits, 0);
	c = block("::/0");
	assert_int_equal(c.bits, 0);
}

static void
bad_blocks_say_why(void **state)
{
	(void)state;
	assert_non_null(strstr(refusal("10.1.2.3/8"), "past the prefix"));
	assert_non_null(strstr(refusal("10.0.0.0/33"), "/0 to /32"));
	assert_non_null(strstr(refusal("::/129"), "/0 to /128"));
	assert_non_null(strstr(refusal("10.0.0.0/"), "/0 to /32"));
	assert_non_null(strstr(refusal("10.0.0.0/8x"), "/0 to /32"));
	assert_non_null(strstr(refusal("10.0.0.0/-1"), "/0 to /32"));
	assert_non_null(strstr(refusal("localhost"), "host names"));
	assert_non_null(strstr(refusal("10.0.0"), "neither"));
	assert_non_null(strstr(refusal(""), "expected"));
	assert_non_null(strstr(refusal("/8"), "expected"));
	assert_non_null(strstr(refusal("2001:db8::1/64"), "past the prefix"));
}

static void
addresses_match_their_blocks_only(void **state)
{
	(void)state;
	assert_true(in("10.0.0.0/8", "10.255.1.2"));
	assert_false(in("10.0.0.0/8", "11.0.0.0"));
	/* A prefix that ends inside a byte. */
	assert_true(in("172.16.0.0/12", "172.31.255.255"));
	assert_false(in("172.16.0.0/12", "172.32.0.0"));
	assert_false(in("172.16.0.0/12", "172.15.255.255"));
	assert_true(in("127.0.0.2", "127.0.0.2"));
	assert_false(in("127.0.0.2", "127.0.0.3"));
	assert_true(in("0.0.0.0/0", "203.0.113.9"));
	assert_true(in("2001:db8::/33", "2001:db8:7fff::1"));
	assert_false(in("2001:db8::/33", "2001:db8:8000::1"));
	assert_true(in("::1", "::1"));
	assert_true(in("::/0", "fe80::1"));
	/* Families never cross, except an IPv4 client seen as mapped. */
	assert_false(in("::/0", "127.0.0.1"));
	assert_false(in("0.0.0.0/0", "::1"));
	assert_true(in("127.0.0.0/8", "::ffff:127.0.0.9"));
	assert_false(in("10.0.0.0/8", "::ffff:127.0.0.9"));
}

/*
 * A block written as IPv4-mapped IPv6 is the IPv4 block it names, and
 * matches IPv4 clients however they are seen (as an IPv6 block it would
 * match none: a mapped client is matched as IPv4).  Found by fuzz_cidr.
 */
static void
a_mapped_block_is_the_ipv4_block(void **state)
{
	struct cidr c;

	(void)state;
	c = block("::ffff:10.1.2.3/128");
	assert_int_equal(c.family, AF_INET);
	assert_int_equal(c.bits, 32);
	assert_memory_equal(c.addr, "\x0a\x01\x02\x03", 4);
	assert_true(in("::ffff:10.1.2.3/128", "10.1.2.3"));
	assert_true(in("::ffff:10.1.2.3", "::ffff:10.1.2.3"));
	assert_true(in("::ffff:10.0.0.0/104", "10.200.0.1"));
	assert_false(in("::ffff:10.0.0.0/104", "11.0.0.1"));
	assert_true(in("::ffff:0:0/96", "203.0.113.9"));
	assert_non_null(strstr(refusal("::ffff:10.1.2.3/104"), "past the prefix"));
	/* Wider than the mapped range: an IPv6 block as written. */
	c = block("::fffe:0:0/95");
	assert_int_equal(c.family, AF_INET6);
	assert_int_equal(c.bits, 95);
}

static void
a_list_matches_when_any_entry_does(void **state)
{
	struct cidr list[3];
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	struct sockaddr_un un = { .sun_family = AF_UNIX };

	(void)state;
	list[0] = block("10.0.0.0/8");
	list[1] = block("::1");
	list[2] = block("192.168.0.0/16");
	assert_int_equal(inet_pton(AF_INET, "192.168.4.4", &s4.sin_addr), 1);
	assert_true(cidr_match(list, 3, (struct sockaddr *)&s4));
	assert_false(cidr_match(list, 2, (struct sockaddr *)&s4));
	assert_false(cidr_match(list, 0, (struct sockaddr *)&s4));
	assert_false(cidr_match(list, 3, (struct sockaddr *)&un));
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(blocks_parse_with_or_without_a_prefix),
		cmocka_unit_test(bad_blocks_say_why),
		cmocka_unit_test(addresses_match_their_blocks_only),
		cmocka_unit_test(a_mapped_block_is_the_ipv4_block),
		cmocka_unit_test(a_list_matches_when_any_entry_does),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
