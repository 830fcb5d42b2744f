/*
 * fuzz_proxy_tlv.c: libFuzzer target for the round trip of the outgoing
 * header: proxy_v2_header_tlv builds one from fields taken from the
 * input (a pair of addresses, a TLS client's details, a unique id, the
 * CRC32C flag, received TLVs to pass on), and proxy_in_parse must read
 * back exactly what should be there: the same addresses (LOCAL for a
 * pair the builder cannot name), esockd's own TLVs, the received ones
 * the merge keeps, in the builder's order, and a CRC32C that matches.
 * The builder must refuse precisely the inputs over a bound.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "proxy_in.h"

int	LLVMFuzzerTestOneInput(const uint8_t *, size_t);

#define CHECK(c)	do { if (!(c)) abort(); } while (0)
#define NPASSED_MAX	12
#define EXPECT_MAX	(2 * NPASSED_MAX + 8)

/* The input, taken from the front; past its end every byte is 0. */
struct input {
	const uint8_t	*p;
	size_t		 n;
};

static uint8_t
take8(struct input *in)
{
	if (in->n == 0)
		return 0;
	in->n--;
	return *in->p++;
}

static unsigned
take16(struct input *in)
{
	unsigned hi = take8(in);

	return hi << 8 | take8(in);
}

/* Up to n bytes into dst, the rest zero. */
static void
take(struct input *in, void *dst, size_t n)
{
	size_t k = n < in->n ? n : in->n;

	memcpy(dst, in->p, k);
	memset((uint8_t *)dst + k, 0, n - k);
	in->p += k;
	in->n -= k;
}

/* A pointer to up to *n bytes of the input (fewer at its end). */
static const uint8_t *
take_ptr(struct input *in, size_t *n)
{
	const uint8_t *p = in->p;

	if (*n > in->n)
		*n = in->n;
	in->p += *n;
	in->n -= *n;
	return p;
}

/* A string of up to max bytes (a NUL in it ends it early). */
static void
take_str(struct input *in, char *dst, size_t max)
{
	take(in, dst, take8(in) % (max + 1));
	dst[max] = '\0';
}

/* One TLV the parser should give back; value NULL: not compared. */
struct expect {
	uint8_t		 type;
	size_t		 len;
	const uint8_t	*value;
};

struct model {
	struct expect	 e[EXPECT_MAX];
	size_t		 n;
	int		 ok;		/* every value within its bound */
};

static void
expect(struct model *m, uint8_t type, const void *value, size_t len)
{
	CHECK(m->n < EXPECT_MAX);
	m->e[m->n].type = type;
	m->e[m->n].len = len;
	m->e[m->n].value = value;
	m->n++;
}

/* A string TLV: none for "", over max refuses the header. */
static void
expect_str(struct model *m, uint8_t type, const char *s, size_t max)
{
	size_t len = s != NULL ? strlen(s) : 0;

	if (len > max)
		m->ok = 0;
	else if (len > 0)
		expect(m, type, s, len);
}

/* The merge of proxy_proto.c, written again from its comment. */
static int
passes(const struct proxy_tlvs *t, uint8_t type)
{
	const struct proxy_tls *tls = t->tls;

	if (type == PP2_TYPE_ALPN)
		return tls == NULL || tls->alpn_len == 0;
	if (type == PP2_TYPE_AUTHORITY)
		return tls == NULL || tls->sni[0] == '\0';
	if (type == PP2_TYPE_UNIQUE_ID)
		return t->unique_id[0] == '\0';
	if (type == PP2_TYPE_SSL)
		return tls == NULL;
	return type >= 0xe0 && type <= 0xef;
}

static void
expect_passed(struct model *m, const struct proxy_tlvs *t, uint8_t lo,
    uint8_t hi)
{
	for (size_t i = 0; i < t->npassed; i++)
		if (t->passed[i].type >= lo && t->passed[i].type <= hi &&
		    passes(t, t->passed[i].type))
			expect(m, t->passed[i].type, t->passed[i].value,
			    t->passed[i].len);
}

/* PP2_TYPE_SSL's value as the builder should write it, into v. */
static size_t
ssl_value(const struct proxy_tls *tls, uint8_t *v, struct model *m)
{
	const char *names[3] = { tls->cipher, tls->sig_alg, tls->key_alg };
	uint8_t types[3] = { PP2_SUBTYPE_SSL_CIPHER, PP2_SUBTYPE_SSL_SIG_ALG,
	    PP2_SUBTYPE_SSL_KEY_ALG };
	size_t at = 5, len;

	v[0] = tls->client;
	v[1] = (uint8_t)(tls->verify >> 24);
	v[2] = (uint8_t)(tls->verify >> 16);
	v[3] = (uint8_t)(tls->verify >> 8);
	v[4] = (uint8_t)tls->verify;
	if ((len = strlen(tls->version)) > PROXY_NAME_MAX)
		m->ok = 0;
	else if (len > 0) {
		v[at] = PP2_SUBTYPE_SSL_VERSION;
		v[at + 1] = 0;
		v[at + 2] = (uint8_t)len;
		memcpy(v + at + 3, tls->version, len);
		at += 3 + len;
	}
	if (tls->cn_len > PROXY_STR_MAX)
		m->ok = 0;
	else if (tls->cn_len > 0) {
		v[at] = PP2_SUBTYPE_SSL_CN;
		v[at + 1] = 0;
		v[at + 2] = (uint8_t)tls->cn_len;
		memcpy(v + at + 3, tls->cn, tls->cn_len);
		at += 3 + tls->cn_len;
	}
	for (int i = 0; i < 3; i++) {
		if ((len = strlen(names[i])) > PROXY_NAME_MAX)
			m->ok = 0;
		else if (len > 0) {
			v[at] = types[i];
			v[at + 1] = 0;
			v[at + 2] = (uint8_t)len;
			memcpy(v + at + 3, names[i], len);
			at += 3 + len;
		}
	}
	return at;
}

/* Every TLV the header should hold, in order, and whether it may exist. */
static void
model(const struct proxy_tlvs *t, uint8_t *ssl, struct model *m)
{
	const struct proxy_tls *tls = t->tls;
	size_t sum = 0;

	m->n = 0;
	m->ok = 1;
	if (tls != NULL && tls->alpn_len > 0) {
		if (tls->alpn_len > PROXY_STR_MAX)
			m->ok = 0;
		else
			expect(m, PP2_TYPE_ALPN, tls->alpn, tls->alpn_len);
	}
	expect_passed(m, t, PP2_TYPE_ALPN, PP2_TYPE_ALPN);
	if (tls != NULL)
		expect_str(m, PP2_TYPE_AUTHORITY, tls->sni, PROXY_STR_MAX);
	expect_passed(m, t, PP2_TYPE_AUTHORITY, PP2_TYPE_AUTHORITY);
	if (t->crc32c)
		expect(m, PP2_TYPE_CRC32C, NULL, 4);
	expect_str(m, PP2_TYPE_UNIQUE_ID, t->unique_id, PROXY_UNIQUE_ID_MAX);
	expect_passed(m, t, PP2_TYPE_UNIQUE_ID, PP2_TYPE_UNIQUE_ID);
	if (tls != NULL)
		expect(m, PP2_TYPE_SSL, ssl, ssl_value(tls, ssl, m));
	expect_passed(m, t, PP2_TYPE_SSL, PP2_TYPE_SSL);
	expect_passed(m, t, 0xe0, 0xef);
	for (size_t i = 0; i < t->npassed; i++)
		if (passes(t, t->passed[i].type))
			sum += 3 + t->passed[i].len;
	if (sum > PROXY_PASS_MAX)
		m->ok = 0;
}

/*
 * A received SSL TLV as the parser would have let it through: 5 fixed
 * bytes, then sub-TLVs.
 */
static size_t
take_ssl(struct input *in, uint8_t *v)
{
	size_t at = 5, k = take8(in) % 4;

	take(in, v, 5);
	for (size_t i = 0; i < k; i++) {
		size_t len = take8(in) % 40;

		v[at] = take8(in);
		v[at + 1] = 0;
		v[at + 2] = (uint8_t)len;
		take(in, v + at + 3, len);
		at += 3 + len;
	}
	return at;
}

struct fields {
	struct sockaddr_storage	 src, dst;
	struct proxy_tls	 tls;
	char			 version[PROXY_NAME_MAX + 8];
	char			 cipher[PROXY_NAME_MAX + 8];
	char			 sig_alg[PROXY_NAME_MAX + 8];
	char			 sni[PROXY_STR_MAX + 8];
	uint8_t			 alpn[PROXY_STR_MAX + 8];
	char			 uid[PROXY_UNIQUE_ID_MAX + 8];
	struct proxy_tlv	 passed[NPASSED_MAX];
	uint8_t			 ssl_in[NPASSED_MAX][5 + 3 * 42];
	struct proxy_tlvs	 t;
	int			 shape;		/* 0 v4, 1 v6, 2 mapped, 3 other */
};

static void
take_addresses(struct input *in, struct fields *f)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&f->src;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&f->dst;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&f->src;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&f->dst;

	f->shape = take8(in) % 4;
	if (f->shape == 0 || (f->shape == 3 && (take8(in) & 1))) {
		s4->sin_family = AF_INET;
		take(in, &s4->sin_addr, 4);
		take(in, &s4->sin_port, 2);
	} else if (f->shape == 3) {
		f->src.ss_family = AF_UNIX;
	} else {
		s6->sin6_family = AF_INET6;
		take(in, &s6->sin6_addr, 16);
		take(in, &s6->sin6_port, 2);
	}
	if (f->shape == 0) {
		d4->sin_family = AF_INET;
		take(in, &d4->sin_addr, 4);
		take(in, &d4->sin_port, 2);
	} else {
		d6->sin6_family = AF_INET6;
		take(in, &d6->sin6_addr, 16);
		take(in, &d6->sin6_port, 2);
	}
	/* Shape 3, IPv4 or UNIX to IPv6 (mapped or not): LOCAL. */
	if (f->shape == 1 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) &&
	    IN6_IS_ADDR_V4MAPPED(&d6->sin6_addr))
		f->shape = 2;
	if (f->shape == 2) {
		memset(s6->sin6_addr.s6_addr, 0, 10);
		memset(d6->sin6_addr.s6_addr, 0, 10);
		s6->sin6_addr.s6_addr[10] = s6->sin6_addr.s6_addr[11] = 0xff;
		d6->sin6_addr.s6_addr[10] = d6->sin6_addr.s6_addr[11] = 0xff;
	}
}

static void
take_tls(struct input *in, struct fields *f)
{
	struct proxy_tls *tls = &f->tls;

	tls->client = take8(in);
	tls->verify = (uint32_t)take16(in) << 16 | take16(in);
	take_str(in, f->version, PROXY_NAME_MAX + 2);
	take_str(in, f->cipher, PROXY_NAME_MAX + 2);
	take_str(in, f->sig_alg, PROXY_NAME_MAX + 2);
	take_str(in, tls->key_alg, PROXY_NAME_MAX);
	tls->version = f->version;
	tls->cipher = f->cipher;
	tls->sig_alg = f->sig_alg;
	tls->cn_len = take16(in) % (PROXY_STR_MAX + 3);
	take(in, tls->cn, tls->cn_len > PROXY_STR_MAX ? PROXY_STR_MAX + 1 :
	    tls->cn_len);
	take(in, f->sni, take16(in) % (PROXY_STR_MAX + 3));
	f->sni[PROXY_STR_MAX + 2] = '\0';
	tls->sni = f->sni;
	tls->alpn_len = take16(in) % (PROXY_STR_MAX + 3);
	take(in, f->alpn, tls->alpn_len);
	tls->alpn = tls->alpn_len > 0 ? f->alpn : NULL;
	f->t.tls = tls;
}

static void
take_passed(struct input *in, struct fields *f)
{
	f->t.npassed = take8(in) % (NPASSED_MAX + 1);
	f->t.passed = f->passed;
	for (size_t i = 0; i < f->t.npassed; i++) {
		struct proxy_tlv *p = &f->passed[i];
		size_t len = take16(in) % 1200;

		p->type = take8(in);
		if (p->type == PP2_TYPE_SSL) {
			p->len = (uint16_t)take_ssl(in, f->ssl_in[i]);
			p->value = f->ssl_in[i];
			continue;
		}
		p->value = take_ptr(in, &len);
		p->len = (uint16_t)len;
	}
}

/* The parsed addresses are the ones built from, or none for LOCAL. */
static void
check_addresses(const struct fields *f, const struct proxy_in *in)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&f->src;
	const struct sockaddr_in6 *d6 = (const struct sockaddr_in6 *)&f->dst;
	const struct sockaddr_in *p4 = (const struct sockaddr_in *)&in->src;
	const struct sockaddr_in *q4 = (const struct sockaddr_in *)&in->dst;

	switch (f->shape) {
	case 0:
		CHECK(in->command == PROXY_IN_PROXY && in->family == AF_INET);
		CHECK(memcmp(&in->src, &f->src, sizeof(struct sockaddr_in)) == 0);
		CHECK(memcmp(&in->dst, &f->dst, sizeof(struct sockaddr_in)) == 0);
		break;
	case 1:
		CHECK(in->command == PROXY_IN_PROXY && in->family == AF_INET6);
		CHECK(memcmp(&in->src, &f->src, sizeof(struct sockaddr_in6)) == 0);
		CHECK(memcmp(&in->dst, &f->dst, sizeof(struct sockaddr_in6)) == 0);
		break;
	case 2:
		CHECK(in->command == PROXY_IN_PROXY && in->family == AF_INET);
		CHECK(memcmp(&p4->sin_addr, s6->sin6_addr.s6_addr + 12, 4) == 0);
		CHECK(memcmp(&q4->sin_addr, d6->sin6_addr.s6_addr + 12, 4) == 0);
		CHECK(p4->sin_port == s6->sin6_port);
		CHECK(q4->sin_port == d6->sin6_port);
		break;
	default:
		CHECK(in->command == PROXY_IN_LOCAL && in->family == AF_UNSPEC);
	}
	CHECK(in->socktype == (in->family == AF_UNSPEC ? 0 : SOCK_STREAM));
}

static void
check_tlvs(const struct model *m, const struct proxy_in *in)
{
	size_t kept = m->n < PROXY_IN_TLVS ? m->n : PROXY_IN_TLVS;

	CHECK(in->ntlvs == kept);
	CHECK(in->tlvs_over == m->n - kept);
	for (size_t i = 0; i < kept; i++) {
		CHECK(in->tlvs[i].type == m->e[i].type);
		CHECK(in->tlvs[i].len == m->e[i].len);
		if (m->e[i].value != NULL)
			CHECK(memcmp(in->tlvs[i].value, m->e[i].value,
			    m->e[i].len) == 0);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fields f;
	static uint8_t buf[PROXY_V2_TLV_MAX], ssl[1024];
	struct input in = { data, size };
	struct proxy_in parsed;
	struct model m;
	uint8_t flags;
	size_t len;

	memset(&f, 0, sizeof(f));
	take_addresses(&in, &f);
	flags = take8(&in);
	if (flags & 1)
		take_tls(&in, &f);
	f.t.crc32c = (flags & 2) != 0;
	take_str(&in, f.uid, PROXY_UNIQUE_ID_MAX + 2);
	f.t.unique_id = f.uid;
	take_passed(&in, &f);

	model(&f.t, ssl, &m);
	len = proxy_v2_header_tlv((struct sockaddr *)&f.src,
	    (struct sockaddr *)&f.dst, &f.t, buf, sizeof(buf));
	CHECK((len > 0) == m.ok);
	if (len == 0)
		return 0;
	CHECK(proxy_in_parse(PROXY_IN_V2, buf, len, &parsed) == (int)len);
	CHECK(proxy_in_parse(PROXY_IN_ANY, buf, len, &parsed) == (int)len);
	check_addresses(&f, &parsed);
	check_tlvs(&m, &parsed);
	return 0;
}
