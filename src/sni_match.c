/*
 * sni_match.c: the choice of a listener's certificate by the name a
 * client sent (SNI), apart from OpenSSL so that a unit test can feed it
 * names.  tls_ctx.c's servername callback calls it; config.c stores the
 * names lowercase, without a trailing dot, and a wildcard only as the
 * whole first label.
 */
#include "sni_match.h"

#include <strings.h>
#include <string.h>

/* host (hlen bytes, any case) is name (lowercase) exactly. */
static int
same(const char *name, const char *host, size_t hlen)
{
	return strlen(name) == hlen && strncasecmp(name, host, hlen) == 0;
}

/* The first entry naming host (hlen bytes) exactly, or -1. */
static int
find(const struct sni_conf *e, size_t n, const char *host, size_t hlen,
    int wildcard)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < e[i].nnames; j++) {
			const char *name = e[i].names[j];

			if ((name[0] == '*') != wildcard)
				continue;
			if (same(wildcard ? name + 2 : name, host, hlen))
				return (int)i;
		}
	return -1;
}

int
sni_match(const struct sni_conf *e, size_t n, const char *host)
{
	size_t hlen;
	const char *dot;
	int i;

	if (host == NULL || (hlen = strlen(host)) == 0)
		return -1;
	if (host[hlen - 1] == '.')
		hlen--;			/* "a.example." is "a.example" */
	if (hlen == 0)
		return -1;
	if ((i = find(e, n, host, hlen, 0)) != -1)
		return i;
	/* A wildcard stands for the first label, which must not be empty:
	 * what follows its dot must be the wildcard's rest exactly. */
	if ((dot = memchr(host, '.', hlen)) == NULL || dot == host)
		return -1;
	return find(e, n, dot + 1, hlen - (size_t)(dot + 1 - host), 1);
}
