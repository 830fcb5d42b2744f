/*
 * fuzz_proxy_in.c: libFuzzer target for proxy_in_parse, the PROXY header
 * parser, in each mode on the same bytes.  Beyond "no crash, no read
 * past the buffer" (ASan; libFuzzer's buffer is exactly the input), it
 * checks what a caller relies on: a header's length is within the
 * buffer and its version's bound, the bytes after it do not change the
 * verdict, every shorter prefix asks for more, a refusal stays a refusal
 * as bytes come, "any" agrees with the version its first byte picks,
 * "off" refuses everything, and every TLV lies inside the header.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy_in.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c)	do { if (!(c)) abort(); } while (0)

/* What a parse of the whole says about one of its prefixes. */
static void
check_prefix(enum proxy_in_mode mode, const uint8_t *buf, size_t len,
    int whole, size_t cut)
{
	struct proxy_in in;
	int r = proxy_in_parse(mode, buf, cut, &in);

	if (whole > 0 && cut < (size_t)whole)
		CHECK(r == 0);			/* not complete yet */
	else if (whole > 0)
		CHECK(r == whole);		/* complete, data after it */
	else if (whole < 0)
		CHECK(r == 0 || r == whole);	/* no verdict, or this one */
	else
		CHECK(r == 0);
	(void)len;
}

/* A header's fields, as a caller would use them. */
static void
check_header(const uint8_t *buf, int r, const struct proxy_in *in)
{
	CHECK(in->version == 1 || in->version == 2);
	CHECK(r <= (in->version == 1 ? PROXY_V1_MAX : PROXY_IN_MAX));
	CHECK(in->command == PROXY_IN_LOCAL || in->command == PROXY_IN_PROXY);
	CHECK(in->src.ss_family == in->family);
	CHECK(in->dst.ss_family == in->family);
	if (in->command == PROXY_IN_LOCAL)
		CHECK(in->family == AF_UNSPEC);
	CHECK(in->ntlvs <= PROXY_IN_TLVS);
	CHECK(in->tlvs_over == 0 || in->ntlvs == PROXY_IN_TLVS);
	for (size_t i = 0; i < in->ntlvs; i++) {
		const struct proxy_tlv *t = &in->tlvs[i];

		CHECK(t->value >= buf + 3 && t->value <= buf + r);
		CHECK((size_t)(t->value - buf) + t->len <= (size_t)r);
		CHECK(t->value[-3] == t->type);
	}
}

static int
one_mode(enum proxy_in_mode mode, const uint8_t *buf, size_t len)
{
	struct proxy_in in;
	int r = proxy_in_parse(mode, buf, len, &in);

	CHECK(r <= (int)len);
	/* A reason of the parser's (never timeout or untrusted), named. */
	CHECK(r >= 0 || r >= PROXY_IN_ERR_BAD_CHECKSUM);
	if (r < 0)
		CHECK(strcmp(proxy_in_reason(r), "unknown") != 0);
	if (r > 0)
		check_header(buf, r, &in);
	check_prefix(mode, buf, len, r, len / 2);
	if (len > 0)
		check_prefix(mode, buf, len, r, len - 1);
	if (r > 0)
		check_prefix(mode, buf, len, r, (size_t)r);
	return r;
}

int
LLVMFuzzerTestOneInput(const uint8_t *buf, size_t len)
{
	int v1 = one_mode(PROXY_IN_V1, buf, len);
	int v2 = one_mode(PROXY_IN_V2, buf, len);
	int any = one_mode(PROXY_IN_ANY, buf, len);
	struct proxy_in in;

	if (len > 0)
		CHECK(any == (buf[0] == 'P' ? v1 : v2));
	CHECK(proxy_in_parse(PROXY_IN_OFF, buf, len, &in) ==
	    PROXY_IN_ERR_BAD_SIGNATURE);
	return 0;
}
