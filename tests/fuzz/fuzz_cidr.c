/*
 * fuzz_cidr.c: libFuzzer target for cidr_parse, the address blocks of
 * allow, deny and proxy_sources.  The input is the text (up to its first
 * NUL, as the config hands it over).  A block that parses must write
 * back to text that parses to the same block, must hold its own first
 * and last address (and an IPv4 block the mapped form of them), and must
 * not hold the address just outside it.  An IPv4-mapped address is
 * IPv4 (cidr.c): an IPv6 block never holds one.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cidr.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c)	do { if (!(c)) abort(); } while (0)

/*
 * Does cidr_match find the address a (the block's length) in c as want
 * says?  An IPv4 address is asked as IPv4 and as mapped IPv6.
 */
static void
holds(const struct cidr *c, const uint8_t *a, int want)
{
	struct sockaddr_in s4 = { .sin_family = AF_INET };
	struct sockaddr_in6 s6 = { .sin6_family = AF_INET6 };
	int in;

	if (c->family == AF_INET) {
		memcpy(&s4.sin_addr, a, 4);
		in = cidr_match(c, 1, (struct sockaddr *)&s4);
		s6.sin6_addr.s6_addr[10] = s6.sin6_addr.s6_addr[11] = 0xff;
		memcpy(s6.sin6_addr.s6_addr + 12, a, 4);
		CHECK(cidr_match(c, 1, (struct sockaddr *)&s6) == in);
		CHECK(in == want);
		return;
	}
	memcpy(&s6.sin6_addr, a, 16);
	if (IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr))
		want = 0;
	CHECK(cidr_match(c, 1, (struct sockaddr *)&s6) == want);
}

static void
check_block(const struct cidr *c)
{
	size_t alen = c->family == AF_INET ? 4 : 16;
	char text[INET6_ADDRSTRLEN + 8], host[INET6_ADDRSTRLEN];
	const char *why = NULL;
	uint8_t last[16];
	struct cidr again;

	CHECK(c->family == AF_INET || c->family == AF_INET6);
	CHECK(c->bits <= 8 * alen);
	CHECK(inet_ntop(c->family, c->addr, host, sizeof(host)) != NULL);
	snprintf(text, sizeof(text), "%s/%u", host, c->bits);
	CHECK(cidr_parse(text, &again, &why) == 0);
	CHECK(memcmp(&again, c, sizeof(again)) == 0);

	holds(c, c->addr, 1);
	memcpy(last, c->addr, alen);
	for (size_t b = c->bits; b < 8 * alen; b++)
		last[b / 8] |= (uint8_t)(0x80 >> (b % 8));
	holds(c, last, 1);
	if (c->bits > 0) {
		last[(c->bits - 1) / 8] ^= (uint8_t)(0x80 >> ((c->bits - 1) % 8));
		holds(c, last, 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
	const char *why = NULL;
	struct cidr c;
	char *s;

	if ((s = malloc(len + 1)) == NULL)
		return 0;
	memcpy(s, buf, len);
	s[len] = '\0';
	if (cidr_parse(s, &c, &why) == 0)
		check_block(&c);
	else
		CHECK(why != NULL && why[0] != '\0');
	free(s);
	return 0;
}
