/*
 * netstat.c: the machine's listen-queue counters, for the stats and
 * /metrics (master only).
 *
 * A client the kernel could not queue because a listener's accept queue
 * was full is dropped before esockd ever sees it; the only trace is the
 * kernel's ListenOverflows (and ListenDrops, which counts it too) in
 * /proc/net/netstat.  They are the network namespace's, not esockd's
 * alone, and are shown as such.  The file holds a pair of lines per
 * protocol, "TcpExt: Name1 Name2 ..." then "TcpExt: 1 2 ..."; netstat_value
 * reads a number out of that text (pure, for the unit tests), and
 * netstat_listen is the one read of the file.
 */
#include "netstat.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NETSTAT_PATH	"/proc/net/netstat"
#define NETSTAT_MAX	(64 * 1024)	/* about 4 KiB on Linux 6 */

/* The length of the line at s, without its newline. */
static size_t
line_len(const char *s)
{
	const char *nl = strchr(s, '\n');

	return nl != NULL ? (size_t)(nl - s) : strlen(s);
}

/* The next space-separated word of a line: *s moves past it; 0 at the end. */
static size_t
next_word(const char **s, const char *end, const char **word)
{
	const char *p = *s;

	while (p < end && *p == ' ')
		p++;
	*word = p;
	while (p < end && *p != ' ')
		p++;
	*s = p;
	return (size_t)(p - *word);
}

/*
 * In the pair of lines "PROTO: names" and "PROTO: values" starting at
 * head, the value under name, or -1 when it is not there.
 */
static int
pair_value(const char *head, size_t hlen, const char *vals, size_t vlen,
    const char *name, uint64_t *v)
{
	const char *h = head, *hend = head + hlen, *w = vals, *wend = vals + vlen;
	const char *hw, *vw;
	size_t hn, vn, nlen = strlen(name);
	char num[24], *end;

	for (;;) {
		hn = next_word(&h, hend, &hw);
		vn = next_word(&w, wend, &vw);
		if (hn == 0 || vn == 0)
			return -1;
		if (hn == nlen && memcmp(hw, name, nlen) == 0)
			break;
	}
	if (vn >= sizeof(num) || vw[0] < '0' || vw[0] > '9')
		return -1;
	memcpy(num, vw, vn);
	num[vn] = '\0';
	errno = 0;
	*v = strtoull(num, &end, 10);
	return errno != 0 || *end != '\0' ? -1 : 0;
}

int
netstat_value(const char *text, const char *proto, const char *name,
    uint64_t *v)
{
	size_t plen = strlen(proto);
	const char *s = text;

	while (*s != '\0') {
		size_t n = line_len(s);
		const char *next = s[n] == '\n' ? s + n + 1 : s + n;

		/* "PROTO:" on this line and the next: names, then values. */
		if (n > plen && memcmp(s, proto, plen) == 0 && s[plen] == ':' &&
		    strncmp(next, proto, plen) == 0 && next[plen] == ':')
			return pair_value(s + plen + 1, n - plen - 1,
			    next + plen + 1, line_len(next) - plen - 1, name, v);
		s = next;
	}
	return -1;
}

/* The whole file into a new NUL-terminated buffer (caller frees), or NULL. */
static char *
read_all(const char *path)
{
	char *buf = malloc(NETSTAT_MAX);
	size_t len = 0;
	ssize_t n;
	int fd;

	if (buf == NULL)
		return NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1)
		goto err0;
	while (len < NETSTAT_MAX - 1 &&
	    (n = read(fd, buf + len, NETSTAT_MAX - 1 - len)) != 0) {
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			goto err1;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	return buf;
err1:
	close(fd);
err0:
	free(buf);
	return NULL;
}

int
netstat_listen(struct netstat_listen *ls)
{
	char *text = read_all(NETSTAT_PATH);
	int rc = -1;

	if (text == NULL)
		return -1;
	if (netstat_value(text, "TcpExt", "ListenOverflows",
	    &ls->overflows) == 0 &&
	    netstat_value(text, "TcpExt", "ListenDrops", &ls->drops) == 0)
		rc = 0;
	free(text);
	return rc;
}
