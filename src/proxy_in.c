/*
 * proxy_in.c: parse the PROXY protocol header a proxy in front of esockd
 * sends first on a client's connection.  Pure: bytes in, a struct out,
 * no I/O, so unit tests and fuzzers feed it buffers.
 *
 * The caller calls it again each time more bytes arrive, with all of
 * them from the first; it is stateless, and a header is short enough
 * (PROXY_V1_MAX, PROXY_IN_MAX) that parsing it again from the start
 * costs nothing that matters.  Every byte is judged as soon as it is
 * there, so a prefix that cannot become a header is refused at once,
 * rather than at the timeout: a wrong signature byte, a v2 version,
 * command or family, a v2 length over the bound or shorter than its
 * addresses, a TLV running past the end, a v1 character that cannot be
 * in its field, a v1 line reaching 108 bytes.
 *
 * Strictness, where the spec leaves a choice:
 *  - v1: single spaces; addresses as inet_pton reads them (so no leading
 *    zeros in IPv4, as the spec says); ports 0..65535 in decimal with no
 *    leading zero; after UNKNOWN, anything up to the CRLF is ignored, as
 *    the spec says, but UNKNOWN must be followed by a space or the CRLF.
 *  - v2: only the seven family bytes the spec defines (0x00, 0x11, 0x12,
 *    0x21, 0x22, 0x31, 0x32), under either command.  LOCAL discards the
 *    addresses (the connection's own are used) but its family still says
 *    how many bytes to skip before the TLVs, as the spec says.  PROXY
 *    over UNSPEC is accepted with no addresses.
 *  - TLVs: each must end within the header.  PP2_TYPE_CRC32C must be 4
 *    bytes (else bad length), come once, and match the CRC32c of the
 *    whole header with its value zeroed (else its own reason, bad
 *    checksum: a header damaged in flight says something else than one
 *    badly made).  PP2_TYPE_SSL must hold its 5 fixed bytes and a chain
 *    of sub-TLVs ending exactly at its end, so that one passed on to a
 *    backend (proxy_proto.c) is well formed.
 */
#include "proxy_in.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

_Static_assert(PROXY_V2_TLV_MAX <= PROXY_IN_MAX,
    "esockd must be able to read the longest header esockd sends");
_Static_assert(sizeof(((struct sockaddr_un *)0)->sun_path) == 108,
    "the spec's UNIX address is 108 bytes, as Linux's sun_path");

static const uint8_t v2_signature[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

#define V1_SIGNATURE	"PROXY "
#define V1_SIGLEN	(sizeof(V1_SIGNATURE) - 1)
#define V2_FIXED	16	/* signature, version and command, family,
				   length */
#define UNIX_PATH	108	/* the spec's, and Linux's sun_path */

static size_t
min_size(size_t a, size_t b)
{
	return a < b ? a : b;
}

static unsigned
get16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* Do the n bytes at p agree with s as far as they go? */
static int
prefix_of(const uint8_t *p, size_t n, const char *s, size_t slen)
{
	return memcmp(p, s, min_size(n, slen)) == 0;
}

/* ---- version 1 ---- */

/*
 * The v1 protocol words: TCP4 and TCP6 with the space that must follow
 * them; what may follow UNKNOWN is v1_unknown_line's to judge.
 */
static const struct v1_proto {
	const char	*word;
	int		 family;
} v1_protos[] = {
	{ "TCP4 ", AF_INET },
	{ "TCP6 ", AF_INET6 },
	{ "UNKNOWN", AF_UNSPEC },
};

/*
 * Which protocol word starts p (n bytes).  Returns the word's length,
 * 0 when n is too short to tell, or PROXY_IN_ERR_BAD_FAMILY.
 */
static int
v1_proto(const uint8_t *p, size_t n, const struct v1_proto **which)
{
	for (size_t i = 0; i < sizeof(v1_protos) / sizeof(v1_protos[0]); i++) {
		size_t wl = strlen(v1_protos[i].word);

		if (!prefix_of(p, n, v1_protos[i].word, wl))
			continue;
		if (n < wl)
			return 0;	/* "TCP" could still be either */
		*which = &v1_protos[i];
		return (int)wl;
	}
	return PROXY_IN_ERR_BAD_FAMILY;
}

/*
 * Where the CRLF at p[i] ends the line: its length, 0 when the LF has
 * not come yet, PROXY_IN_ERR_BAD_ADDRESS for a CR alone.
 */
static int
v1_crlf(const uint8_t *p, size_t n, size_t i)
{
	if (i + 1 >= n)
		return 0;
	if (p[i + 1] != '\n')
		return PROXY_IN_ERR_BAD_ADDRESS;
	return (int)(i + 2);
}

/* After UNKNOWN: a space or the CRLF, then anything up to the CRLF. */
static int
v1_unknown_line(const uint8_t *p, size_t n, size_t from)
{
	for (size_t i = from; i < n; i++) {
		if (i > PROXY_V1_MAX - 2)
			return PROXY_IN_ERR_BAD_LENGTH;
		if (i == from && p[i] != ' ' && p[i] != '\r')
			return PROXY_IN_ERR_BAD_FAMILY;	/* "UNKNOWNX" */
		if (p[i] == '\r')
			return v1_crlf(p, n, i);
	}
	return 0;
}

/* May c be in field f (0, 1: addresses; 2, 3: ports) of family fam? */
static int
v1_char_ok(int fam, int f, uint8_t c)
{
	if (c >= '0' && c <= '9')
		return 1;
	if (f >= 2)
		return 0;
	if (c == '.')
		return 1;
	return fam == AF_INET6 && (c == ':' || (c >= 'a' && c <= 'f') ||
	    (c >= 'A' && c <= 'F'));
}

/* The longest text field f can have: an address's, or "65535". */
static size_t
v1_field_max(int fam, int f)
{
	if (f >= 2)
		return 5;
	return fam == AF_INET ? INET_ADDRSTRLEN - 1 : INET6_ADDRSTRLEN - 1;
}

/*
 * The four fields after TCP4 or TCP6, from p[from]: each character is
 * judged as it comes.  Returns the line's length once its CRLF is in,
 * 0 before, or a reason.
 */
static int
v1_tcp_line(const uint8_t *p, size_t n, size_t from, int fam)
{
	size_t flen = 0;
	int f = 0;

	for (size_t i = from; i < n; i++) {
		if (i > PROXY_V1_MAX - 2)
			return PROXY_IN_ERR_BAD_LENGTH;
		if (p[i] == ' ' || p[i] == '\r') {
			if (flen == 0 || (p[i] == ' ' && f == 3) ||
			    (p[i] == '\r' && f != 3))
				return PROXY_IN_ERR_BAD_ADDRESS;
			if (p[i] == '\r')
				return v1_crlf(p, n, i);
			f++;
			flen = 0;
			continue;
		}
		if (!v1_char_ok(fam, f, p[i]) || ++flen > v1_field_max(fam, f))
			return PROXY_IN_ERR_BAD_ADDRESS;
	}
	return 0;
}

/* A port in decimal, 0 to 65535, no leading zero; -1 when it is not. */
static int
v1_port(const char *s)
{
	long v = 0;

	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return -1;
	for (; *s != '\0'; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (*s - '0');
		if (v > 65535)
			return -1;
	}
	return (int)v;
}

/* An address and port into ss, in the family's sockaddr. */
static int
v1_endpoint(int fam, const char *addr, const char *port,
    struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	int pv = v1_port(port);

	if (pv == -1)
		return -1;
	if (fam == AF_INET) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)pv);
		return inet_pton(AF_INET, addr, &s4->sin_addr) == 1 ? 0 : -1;
	}
	s6->sin6_family = AF_INET6;
	s6->sin6_port = htons((uint16_t)pv);
	return inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1 ? 0 : -1;
}

/*
 * The complete line's fields (single-spaced, v1_tcp_line checked) into
 * out.  The line is copied to split it: at most PROXY_V1_MAX bytes.
 */
static int
v1_fields(const uint8_t *p, size_t from, size_t end, int fam,
    struct proxy_in *out)
{
	char line[PROXY_V1_MAX + 1], *field[4], *save = NULL;
	size_t len = end - 2 - from;	/* without the CRLF */

	memcpy(line, p + from, len);
	line[len] = '\0';
	field[0] = strtok_r(line, " ", &save);
	for (int f = 1; f < 4; f++)
		field[f] = strtok_r(NULL, " ", &save);
	if (field[3] == NULL)
		return PROXY_IN_ERR_BAD_ADDRESS;	/* cannot be: checked */
	if (v1_endpoint(fam, field[0], field[2], &out->src) == -1 ||
	    v1_endpoint(fam, field[1], field[3], &out->dst) == -1) {
		memset(&out->src, 0, sizeof(out->src));
		memset(&out->dst, 0, sizeof(out->dst));
		return PROXY_IN_ERR_BAD_ADDRESS;
	}
	return 0;
}

/* "PROXY TCP4 a b p q\r\n", "PROXY TCP6 ...", "PROXY UNKNOWN ...\r\n". */
static int
v1_parse(const uint8_t *p, size_t n, struct proxy_in *out)
{
	const struct v1_proto *proto = NULL;
	size_t at;
	int r;

	if (!prefix_of(p, n, V1_SIGNATURE, V1_SIGLEN))
		return PROXY_IN_ERR_BAD_SIGNATURE;
	if (n <= V1_SIGLEN)
		return 0;
	if ((r = v1_proto(p + V1_SIGLEN, n - V1_SIGLEN, &proto)) <= 0)
		return r;
	at = V1_SIGLEN + (size_t)r;
	if (proto->family == AF_UNSPEC)
		r = v1_unknown_line(p, n, at);
	else
		r = v1_tcp_line(p, n, at, proto->family);
	if (r <= 0)
		return r;
	out->version = 1;
	if (proto->family == AF_UNSPEC)
		return r;	/* LOCAL, AF_UNSPEC: out is zeroed */
	out->command = PROXY_IN_PROXY;
	out->family = proto->family;
	out->socktype = SOCK_STREAM;
	if (v1_fields(p, at, (size_t)r, proto->family, out) < 0)
		return PROXY_IN_ERR_BAD_ADDRESS;
	return r;
}

/* ---- version 2 ---- */

/* The family byte: what it means and how long its addresses are. */
static const struct v2_family {
	uint8_t		 byte;
	int		 family;
	int		 socktype;
	size_t		 addrlen;	/* both ends, ports included */
} v2_families[] = {
	{ 0x00, AF_UNSPEC, 0, 0 },
	{ 0x11, AF_INET, SOCK_STREAM, 12 },
	{ 0x12, AF_INET, SOCK_DGRAM, 12 },
	{ 0x21, AF_INET6, SOCK_STREAM, 36 },
	{ 0x22, AF_INET6, SOCK_DGRAM, 36 },
	{ 0x31, AF_UNIX, SOCK_STREAM, 2 * UNIX_PATH },
	{ 0x32, AF_UNIX, SOCK_DGRAM, 2 * UNIX_PATH },
};

static const struct v2_family *
v2_family(uint8_t byte)
{
	for (size_t i = 0; i < sizeof(v2_families) / sizeof(v2_families[0]);
	    i++)
		if (v2_families[i].byte == byte)
			return &v2_families[i];
	return NULL;
}

/*
 * PP2_TYPE_SSL's value (len bytes at v): client flags, verify result,
 * then sub-TLVs that end exactly at its end.
 */
static int
v2_ssl_ok(const uint8_t *v, size_t len)
{
	size_t at = 5;

	if (len < 5)
		return 0;
	while (at < len) {
		if (len - at < 3 || len - at - 3 < get16(v + at + 1))
			return 0;
		at += 3 + get16(v + at + 1);
	}
	return 1;
}

/* Keep one TLV in out (the first PROXY_IN_TLVS; the rest are counted). */
static void
v2_keep(struct proxy_in *out, const uint8_t *t)
{
	struct proxy_tlv *k;

	if (out->ntlvs == PROXY_IN_TLVS) {
		out->tlvs_over++;
		return;
	}
	k = &out->tlvs[out->ntlvs++];
	k->type = t[0];
	k->len = (uint16_t)get16(t + 1);
	k->value = t + 3;
}

/*
 * One TLV at b[at] of a header total bytes long, n of them received.
 * Returns the offset after it, 0 when more bytes are needed to judge
 * it, or a reason.  *crc_at is set at a CRC32C's value.
 */
static long
v2_tlv(const uint8_t *b, size_t n, size_t at, size_t total, size_t *crc_at,
    struct proxy_in *out)
{
	size_t end;
	unsigned len;

	if (total - at < 3)
		return PROXY_IN_ERR_BAD_LENGTH;	/* no room for a TLV */
	if (n < at + 3)
		return 0;
	len = get16(b + at + 1);
	if (total - at - 3 < len)
		return PROXY_IN_ERR_BAD_LENGTH;
	end = at + 3 + len;
	if (b[at] == PP2_TYPE_CRC32C) {
		if (len != 4)
			return PROXY_IN_ERR_BAD_LENGTH;
		if (*crc_at != 0)
			return PROXY_IN_ERR_BAD_CHECKSUM;
		*crc_at = at + 3;
	}
	if (n < end)
		return 0;
	if (b[at] == PP2_TYPE_SSL && !v2_ssl_ok(b + at + 3, len))
		return PROXY_IN_ERR_BAD_LENGTH;
	v2_keep(out, b + at);
	return (long)end;
}

/*
 * The TLVs from b[at] to the header's end (total), as far as the n
 * bytes received go.  Returns 1 when all are in and valid, 0 when more
 * bytes are needed, or a reason.
 */
static int
v2_tlvs(const uint8_t *b, size_t n, size_t at, size_t total, size_t *crc_at,
    struct proxy_in *out)
{
	long r;

	while (at < total) {
		if ((r = v2_tlv(b, n, at, total, crc_at, out)) <= 0)
			return (int)r;
		at = (size_t)r;
	}
	return 1;
}

/* Does the CRC32C at b[crc_at] match the header, its value zeroed? */
static int
v2_crc_ok(const uint8_t *b, size_t total, size_t crc_at)
{
	static const uint8_t zero[4];
	uint32_t crc, sent;

	sent = (uint32_t)b[crc_at] << 24 | (uint32_t)b[crc_at + 1] << 16 |
	    (uint32_t)b[crc_at + 2] << 8 | b[crc_at + 3];
	crc = proxy_crc32c_more(0, b, crc_at);
	crc = proxy_crc32c_more(crc, zero, 4);
	crc = proxy_crc32c_more(crc, b + crc_at + 4, total - crc_at - 4);
	return crc == sent;
}

/* The addresses of a PROXY command (at b[16]) into out. */
static void
v2_addresses(const uint8_t *b, const struct v2_family *fam,
    struct proxy_in *out)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&out->src;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&out->dst;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&out->src;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&out->dst;
	struct sockaddr_un *su = (struct sockaddr_un *)&out->src;
	struct sockaddr_un *du = (struct sockaddr_un *)&out->dst;
	const uint8_t *a = b + V2_FIXED;

	out->family = fam->family;
	out->socktype = fam->socktype;
	switch (fam->family) {
	case AF_INET:
		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&d4->sin_addr, a + 4, 4);
		memcpy(&s4->sin_port, a + 8, 2);
		memcpy(&d4->sin_port, a + 10, 2);
		break;
	case AF_INET6:
		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&d6->sin6_addr, a + 16, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		memcpy(&d6->sin6_port, a + 34, 2);
		break;
	case AF_UNIX:
		su->sun_family = du->sun_family = AF_UNIX;
		memcpy(su->sun_path, a, UNIX_PATH);
		memcpy(du->sun_path, a + UNIX_PATH, UNIX_PATH);
		break;
	}
}

/*
 * The fixed 16 bytes, judged as they come: signature, version and
 * command, family, length.  Returns 1 with *fam and *total once all are
 * in and valid, 0 before, or a reason.
 */
static int
v2_fixed(const uint8_t *b, size_t n, const struct v2_family **fam,
    size_t *total)
{
	if (!prefix_of(b, n, (const char *)v2_signature, sizeof(v2_signature)))
		return PROXY_IN_ERR_BAD_SIGNATURE;
	if (n <= 12)
		return 0;
	if ((b[12] >> 4) != 2 || (b[12] & 0x0f) > PROXY_IN_PROXY)
		return PROXY_IN_ERR_BAD_VERSION;
	if (n <= 13)
		return 0;
	if ((*fam = v2_family(b[13])) == NULL)
		return PROXY_IN_ERR_BAD_FAMILY;
	if (n < V2_FIXED)
		return 0;
	*total = V2_FIXED + get16(b + 14);
	if (*total > PROXY_IN_MAX || *total - V2_FIXED < (*fam)->addrlen)
		return PROXY_IN_ERR_BAD_LENGTH;
	return 1;
}

/* The binary header: 16 fixed bytes, the addresses, the TLVs. */
static int
v2_parse(const uint8_t *b, size_t n, struct proxy_in *out)
{
	const struct v2_family *fam = NULL;
	size_t total = 0, crc_at = 0;
	int r;

	if ((r = v2_fixed(b, n, &fam, &total)) <= 0)
		return r;
	if ((r = v2_tlvs(b, n, V2_FIXED + fam->addrlen, total, &crc_at,
	    out)) <= 0)
		return r;
	if (n < total)
		return 0;	/* no TLVs, and the addresses not all in */
	if (crc_at != 0 && !v2_crc_ok(b, total, crc_at))
		return PROXY_IN_ERR_BAD_CHECKSUM;
	out->version = 2;
	out->command = b[12] & 0x0f;
	if (out->command == PROXY_IN_PROXY)
		v2_addresses(b, fam, out);
	return (int)total;
}

/* ---- both ---- */

/* The header in the listener's mode; proxy_in.h says what it returns. */
int
proxy_in_parse(enum proxy_in_mode mode, const uint8_t *buf, size_t len,
    struct proxy_in *out)
{
	memset(out, 0, sizeof(*out));
	if (mode == PROXY_IN_OFF)
		return PROXY_IN_ERR_BAD_SIGNATURE;
	if (len == 0)
		return 0;
	switch (mode) {
	case PROXY_IN_V1:
		return v1_parse(buf, len, out);
	case PROXY_IN_V2:
		return v2_parse(buf, len, out);
	case PROXY_IN_ANY:
		if (buf[0] == V1_SIGNATURE[0])
			return v1_parse(buf, len, out);
		return v2_parse(buf, len, out);
	default:
		return PROXY_IN_ERR_BAD_SIGNATURE;
	}
}

/* A reason's name, as counters and log lines give it. */
const char *
proxy_in_reason(int err)
{
	switch (err) {
	case PROXY_IN_ERR_BAD_SIGNATURE:	return "bad_signature";
	case PROXY_IN_ERR_BAD_VERSION:		return "bad_version";
	case PROXY_IN_ERR_BAD_FAMILY:		return "bad_family";
	case PROXY_IN_ERR_BAD_LENGTH:		return "bad_length";
	case PROXY_IN_ERR_BAD_ADDRESS:		return "bad_address";
	case PROXY_IN_ERR_BAD_CHECKSUM:		return "bad_checksum";
	case PROXY_IN_ERR_TIMEOUT:		return "timeout";
	case PROXY_IN_ERR_UNTRUSTED:		return "untrusted";
	default:				return "unknown";
	}
}

/* The first TLV of a type that was kept, or NULL. */
const struct proxy_tlv *
proxy_in_tlv(const struct proxy_in *in, uint8_t type)
{
	for (size_t i = 0; i < in->ntlvs; i++)
		if (in->tlvs[i].type == type)
			return &in->tlvs[i];
	return NULL;
}
