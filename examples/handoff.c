/*
 * handoff.c: the handler's side of esockd's hand-off protocol (see
 * handoff.h and esockd(8)): the listening socket, the channels (hello,
 * the per-channel receive state of one PROXY v2 header and its
 * descriptor), the header's parse, and the "closed" and "held" records
 * with the orphans they move between channels.
 *
 * Plain POSIX and no event library: the caller polls the descriptors.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "handoff.h"

#define FIXED		16	/* signature, ver_cmd, family, length */
#define RECORD_MAX	128	/* the protocol's longest record line */

static const unsigned char v2sig[12] = {
	0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a
};

struct handoff_channel {
	struct handoff_server	*srv;
	int			 fd;
	unsigned long		 serial;	/* accept order, for messages */
	int			 dead;		/* shut down: a record failed */
	int			 rfd;		/* the message's descriptor, -1 */
	size_t			 have;		/* bytes of the message read */
	size_t			 want;		/* FIXED, then FIXED + length */
	unsigned char		 buf[HANDOFF_HEADER_MAX];
	LIST_ENTRY(handoff_channel) entry;
};

struct handoff_server {
	int			 fd;
	int			 abstract;
	char			 path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	unsigned long		 serial;
	LIST_HEAD(, handoff_channel) channels;	/* newest first */
	LIST_HEAD(, handoff_client) clients;
};

/* Write "what went wrong" into a caller's buffer. */
static void
seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* A big-endian 16-bit field, as PROXY v2 writes its lengths. */
static uint16_t
be16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* The address block's size for a family byte, or -1 for one not taken. */
static int
family_addrlen(unsigned char fam)
{
	switch (fam) {
	case 0x11:
		return 12;
	case 0x21:
		return 36;
	case 0x00:
		return 0;
	default:
		return -1;
	}
}

/* Check the 16 fixed bytes; set *hlen to the length that follows them. */
static int
check_fixed(const unsigned char *buf, size_t *hlen, char *err, size_t errlen)
{
	unsigned char vc = buf[12], fam = buf[13];
	size_t len = be16(buf + 14);

	if (memcmp(buf, v2sig, sizeof(v2sig)) != 0) {
		seterr(err, errlen, "header: not the PROXY v2 signature "
		    "(\\r\\n\\r\\n\\0\\r\\nQUIT\\n is right)");
		return -1;
	}
	/* LOCAL (0x20): esockd could not name the addresses; the spec
	 * says take the connection and use its own endpoints. */
	if (vc != 0x21 && vc != 0x20) {
		seterr(err, errlen, "header: version/command byte 0x%02x; "
		    "0x21 (v2, PROXY) or 0x20 (v2, LOCAL) is right", vc);
		return -1;
	}
	if (family_addrlen(fam) < 0) {
		seterr(err, errlen, "header: family byte 0x%02x; 0x11 (TCP4), "
		    "0x21 (TCP6) or 0x00 (UNSPEC) is right", fam);
		return -1;
	}
	if (len > HANDOFF_HEADER_MAX - FIXED) {
		seterr(err, errlen, "header: length %zu; at most %d is taken",
		    len, HANDOFF_HEADER_MAX - FIXED);
		return -1;
	}
	if (len < (size_t)family_addrlen(fam)) {
		seterr(err, errlen, "header: length %zu is shorter than family "
		    "0x%02x's %d address bytes", len, fam, family_addrlen(fam));
		return -1;
	}
	*hlen = len;
	return 0;
}

/* Fill src and dst from the address block of family fam at p. */
static void
parse_addrs(unsigned char fam, const unsigned char *p,
    struct handoff_client *c)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)&c->src;
	struct sockaddr_in *d4 = (struct sockaddr_in *)&c->dst;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&c->src;
	struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&c->dst;

	memset(&c->src, 0, sizeof(c->src));
	memset(&c->dst, 0, sizeof(c->dst));
	c->src.ss_family = c->dst.ss_family = AF_UNSPEC;
	if (fam == 0x11) {
		s4->sin_family = d4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, p, 4);
		memcpy(&d4->sin_addr, p + 4, 4);
		memcpy(&s4->sin_port, p + 8, 2);	/* both big-endian */
		memcpy(&d4->sin_port, p + 10, 2);
	} else if (fam == 0x21) {
		s6->sin6_family = d6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, p, 16);
		memcpy(&d6->sin6_addr, p + 16, 16);
		memcpy(&s6->sin6_port, p + 32, 2);
		memcpy(&d6->sin6_port, p + 34, 2);
	}
}

/* Take a UNIQUE_ID value into c->id: it goes into record lines, so
 * it must be short and printable without spaces. */
static int
take_id(const unsigned char *v, size_t l, struct handoff_client *c,
    char *err, size_t errlen)
{
	size_t i;

	if (c->id[0] != '\0') {
		seterr(err, errlen, "header: a second UNIQUE_ID TLV; one is right");
		return -1;
	}
	if (l == 0 || l > HANDOFF_ID_MAX) {
		seterr(err, errlen, "header: UNIQUE_ID of %zu bytes; 1 to %d "
		    "is right", l, HANDOFF_ID_MAX);
		return -1;
	}
	for (i = 0; i < l; i++) {
		if (v[i] < 0x21 || v[i] > 0x7e) {
			seterr(err, errlen, "header: UNIQUE_ID byte %zu is 0x%02x;"
			    " printable ASCII without spaces is right", i, v[i]);
			return -1;
		}
	}
	memcpy(c->id, v, l);
	c->id[l] = '\0';
	return 0;
}

int
handoff_parse_header(const unsigned char *buf, size_t len,
    struct handoff_client *c, char *err, size_t errlen)
{
	const unsigned char *p, *end;
	size_t hlen, l;

	c->id[0] = '\0';
	if (len < FIXED) {
		seterr(err, errlen, "header: %zu bytes; at least %d are right",
		    len, FIXED);
		return -1;
	}
	if (check_fixed(buf, &hlen, err, errlen) == -1)
		return -1;
	if (FIXED + hlen != len) {
		seterr(err, errlen, "header: length %zu, but %zu bytes follow "
		    "the fixed part", hlen, len - FIXED);
		return -1;
	}
	/* LOCAL: whatever the block holds, the addresses are not named. */
	parse_addrs(buf[12] == 0x20 ? 0x00 : buf[13], buf + FIXED, c);
	p = buf + FIXED + family_addrlen(buf[13]);
	end = buf + len;
	while (p < end) {
		if (end - p < 3) {
			seterr(err, errlen, "header: %td bytes at offset %td, "
			    "too few for a TLV (3 at least)", end - p, p - buf);
			return -1;
		}
		l = be16(p + 1);
		if (l > (size_t)(end - p - 3)) {
			seterr(err, errlen, "header: TLV 0x%02x at offset %td "
			    "has length %zu, past the header's end (%td left)",
			    p[0], p - buf, l, end - p - 3);
			return -1;
		}
		/* Unknown types are skipped, as the spec asks. */
		if (p[0] == 0x05 && take_id(p + 3, l, c, err, errlen) == -1)
			return -1;
		p += 3 + l;
	}
	if (c->id[0] == '\0') {
		seterr(err, errlen, "header: no UNIQUE_ID TLV (0x05); esockd "
		    "always sends one");
		return -1;
	}
	return 0;
}

/* Write one record line within HANDOFF_SEND_TIMEOUT_MS; on failure shut
 * the channel down so that its next read reports it ended. */
static int
chan_send(struct handoff_channel *ch, const char *line, size_t len)
{
	struct pollfd pfd = { .fd = ch->fd, .events = POLLOUT };
	struct timespec t0, now;
	size_t off = 0;
	ssize_t n;
	long left;

	if (ch->dead)
		return -1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (off < len) {
		n = send(ch->fd, line + off, len - off,
		    MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1 && errno != EAGAIN && errno != EWOULDBLOCK) {
			fprintf(stderr, "handoff: channel %lu: send: %s\n",
			    ch->serial, strerror(errno));
			goto fail;
		}
		clock_gettime(CLOCK_MONOTONIC, &now);
		left = HANDOFF_SEND_TIMEOUT_MS -
		    ((now.tv_sec - t0.tv_sec) * 1000 +
		    (now.tv_nsec - t0.tv_nsec) / 1000000);
		if (left <= 0) {
			fprintf(stderr, "handoff: channel %lu: a record waited "
			    "%d ms to be sent; esockd reads them at once\n",
			    ch->serial, HANDOFF_SEND_TIMEOUT_MS);
			goto fail;
		}
		if (poll(&pfd, 1, (int)left) == -1 && errno != EINTR) {
			fprintf(stderr, "handoff: channel %lu: poll: %s\n",
			    ch->serial, strerror(errno));
			goto fail;
		}
	}
	return 0;
fail:
	ch->dead = 1;
	/* The caller's poll sees EOF and ends the channel from its loop. */
	if (shutdown(ch->fd, SHUT_RDWR) == -1)
		fprintf(stderr, "handoff: channel %lu: shutdown: %s\n",
		    ch->serial, strerror(errno));
	return -1;
}

/* Send "<verb> <id>\n", or "<verb> <id> <address>\n", on ch. */
static int
chan_record(struct handoff_channel *ch, const char *verb, const char *id,
    const char *addr)
{
	char line[RECORD_MAX];
	int n;

	n = snprintf(line, sizeof(line), "%s %s%s%s\n", verb, id,
	    addr != NULL ? " " : "", addr != NULL ? addr : "");
	if (n < 0 || (size_t)n >= sizeof(line))
		return -1;	/* cannot happen: ids are at most 64 bytes */
	return chan_send(ch, line, (size_t)n);
}

/* The newest channel that can still take records, or NULL. */
static struct handoff_channel *
newest_live(struct handoff_server *srv)
{
	struct handoff_channel *ch;

	LIST_FOREACH(ch, &srv->channels, entry)
		if (!ch->dead)
			return ch;
	return NULL;
}

/* c's source address as text, for "held" (esockd counts the client in
 * its source's count by it), or NULL when the header named none. */
static const char *
client_source(const struct handoff_client *c, char *buf, size_t len)
{
	const void *a;

	if (c->src.ss_family == AF_INET)
		a = &((const struct sockaddr_in *)&c->src)->sin_addr;
	else if (c->src.ss_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)&c->src)->sin6_addr;
	else
		return NULL;
	return inet_ntop(c->src.ss_family, a, buf, (socklen_t)len);
}

/* Announce every orphan with "held <id> <source>" on the newest live
 * channel, which then owns it.  A channel that fails is shut down; the
 * next one is tried, so each orphan ends up announced or still an
 * orphan. */
static void
announce_orphans(struct handoff_server *srv)
{
	struct handoff_channel *ch;
	struct handoff_client *c;
	char addr[INET6_ADDRSTRLEN];

	while ((ch = newest_live(srv)) != NULL) {
		LIST_FOREACH(c, &srv->clients, entry) {
			if (c->chan != NULL)
				continue;
			if (chan_record(ch, "held", c->id,
			    client_source(c, addr, sizeof(addr))) == -1)
				break;
			c->chan = ch;
		}
		if (c == NULL)
			return;
	}
}

struct handoff_server *
handoff_server_new(const char *path, char *err, size_t errlen)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct handoff_server *srv;
	socklen_t sunlen = sizeof(sun);

	if (path == NULL || path[0] == '\0' || strcmp(path, "@") == 0 ||
	    strlen(path) >= sizeof(sun.sun_path)) {
		seterr(err, errlen, "socket path \"%s\": 1 to %zu bytes, or "
		    "@NAME, is right", path ? path : "", sizeof(sun.sun_path) - 1);
		return NULL;
	}
	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		seterr(err, errlen, "out of memory");
		return NULL;
	}
	LIST_INIT(&srv->channels);
	LIST_INIT(&srv->clients);
	srv->abstract = path[0] == '@';
	strcpy(srv->path, path);
	if (srv->abstract) {
		/* The exact length: the NULs after the name are not part of it. */
		memcpy(sun.sun_path + 1, path + 1, strlen(path + 1));
		sunlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
		    strlen(path));
	} else {
		strcpy(sun.sun_path, path);
		if (unlink(path) == -1 && errno != ENOENT) {
			seterr(err, errlen, "unlink %s: %s", path, strerror(errno));
			goto err0;
		}
	}
	srv->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (srv->fd == -1) {
		seterr(err, errlen, "socket: %s", strerror(errno));
		goto err0;
	}
	if (bind(srv->fd, (struct sockaddr *)&sun, sunlen) == -1) {
		seterr(err, errlen, "bind %s: %s", path, strerror(errno));
		goto err1;
	}
	if (listen(srv->fd, 128) == -1) {
		seterr(err, errlen, "listen %s: %s", path, strerror(errno));
		goto err1;
	}
	return srv;
err1:
	close(srv->fd);
err0:
	free(srv);
	return NULL;
}

int
handoff_server_fd(const struct handoff_server *srv)
{
	return srv->fd;
}

/* Free ch and its unfinished message; its clients become orphans. */
static void
chan_free(struct handoff_channel *ch)
{
	struct handoff_server *srv = ch->srv;
	struct handoff_client *c;

	if (ch->rfd != -1)
		close(ch->rfd);
	if (close(ch->fd) == -1)
		fprintf(stderr, "handoff: channel %lu: close: %s\n",
		    ch->serial, strerror(errno));
	LIST_FOREACH(c, &srv->clients, entry)
		if (c->chan == ch)
			c->chan = NULL;
	LIST_REMOVE(ch, entry);
	free(ch);
}

void
handoff_server_free(struct handoff_server *srv)
{
	struct handoff_client *c;

	if (srv == NULL)
		return;
	while (!LIST_EMPTY(&srv->channels))
		chan_free(LIST_FIRST(&srv->channels));
	while ((c = LIST_FIRST(&srv->clients)) != NULL) {
		LIST_REMOVE(c, entry);
		free(c);
	}
	close(srv->fd);
	if (!srv->abstract && unlink(srv->path) == -1 && errno != ENOENT)
		fprintf(stderr, "handoff: unlink %s: %s\n", srv->path,
		    strerror(errno));
	free(srv);
}

struct handoff_channel *
handoff_accept(struct handoff_server *srv)
{
	struct handoff_channel *ch;
	int fd, saved;

	fd = accept4(srv->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd == -1) {
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
		    errno != ECONNABORTED) {
			saved = errno;
			fprintf(stderr, "handoff: accept on %s: %s\n",
			    srv->path, strerror(errno));
			errno = saved;
		}
		return NULL;
	}
	if ((ch = calloc(1, sizeof(*ch))) == NULL) {
		fprintf(stderr, "handoff: out of memory for a channel\n");
		close(fd);
		errno = ENOMEM;
		return NULL;
	}
	ch->srv = srv;
	ch->fd = fd;
	ch->rfd = -1;
	ch->want = FIXED;
	ch->serial = ++srv->serial;
	LIST_INSERT_HEAD(&srv->channels, ch, entry);
	/* The hello first: esockd hands nothing over before it, and a
	 * "held" record before it would be taken for a bad hello. */
	if (chan_send(ch, HANDOFF_HELLO, strlen(HANDOFF_HELLO)) == -1) {
		chan_free(ch);
		errno = ECONNRESET;
		return NULL;
	}
	announce_orphans(srv);
	return ch;
}

int
handoff_channel_fd(const struct handoff_channel *ch)
{
	return ch->fd;
}

/* One recvmsg of at most len bytes into p, with room for the one
 * descriptor esockd attaches; a descriptor is kept in ch->rfd. */
static ssize_t
chan_recv(struct handoff_channel *ch, unsigned char *p, size_t len)
{
	union {
		struct cmsghdr	h;
		char		b[CMSG_SPACE(sizeof(int))];
	} cbuf;
	struct iovec iov = { .iov_base = p, .iov_len = len };
	struct msghdr msg = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b)
	};
	struct cmsghdr *cm;
	ssize_t n;
	size_t i, nfds;
	int fd, extra = 0;

	n = recvmsg(ch->fd, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
	if (n == -1)
		return -1;
	for (cm = CMSG_FIRSTHDR(&msg); cm != NULL; cm = CMSG_NXTHDR(&msg, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		nfds = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (i = 0; i < nfds; i++) {
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (ch->rfd == -1) {
				ch->rfd = fd;
				continue;
			}
			close(fd);
			extra = 1;
		}
	}
	if (extra || (msg.msg_flags & MSG_CTRUNC)) {
		fprintf(stderr, "handoff: channel %lu: more than one descriptor "
		    "for one message; exactly one is right\n", ch->serial);
		errno = EPROTO;
		return -2;
	}
	return n;
}

/* End the channel's reading: drop the unfinished message's descriptor. */
static int
chan_ended(struct handoff_channel *ch)
{
	if (ch->rfd != -1) {
		close(ch->rfd);
		ch->rfd = -1;
	}
	ch->dead = 1;
	return HANDOFF_ENDED;
}

/* The message in ch->buf is whole: make it a client, or fail. */
static int
chan_take(struct handoff_channel *ch, struct handoff_client **out)
{
	struct handoff_server *srv = ch->srv;
	struct handoff_client *c;
	char err[256];

	if (ch->rfd == -1) {
		fprintf(stderr, "handoff: channel %lu: a message without its "
		    "client's descriptor (SCM_RIGHTS on its first byte is "
		    "right)\n", ch->serial);
		return chan_ended(ch);
	}
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		fprintf(stderr, "handoff: channel %lu: out of memory for a "
		    "client\n", ch->serial);
		return chan_ended(ch);
	}
	if (handoff_parse_header(ch->buf, ch->have, c, err, sizeof(err)) == -1) {
		fprintf(stderr, "handoff: channel %lu: %s\n", ch->serial, err);
		free(c);
		return chan_ended(ch);
	}
	c->fd = ch->rfd;
	c->chan = ch;
	LIST_INSERT_HEAD(&srv->clients, c, entry);
	ch->rfd = -1;
	ch->have = 0;
	ch->want = FIXED;
	*out = c;
	return HANDOFF_CLIENT;
}

int
handoff_channel_read(struct handoff_channel *ch, struct handoff_client **out)
{
	char err[256];
	size_t hlen;
	ssize_t n;

	*out = NULL;
	if (ch->dead)
		return chan_ended(ch);
	for (;;) {
		/* Exactly what this message still lacks, never into the next. */
		n = chan_recv(ch, ch->buf + ch->have, ch->want - ch->have);
		if (n == -2)
			return chan_ended(ch);
		if (n == -1) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return HANDOFF_AGAIN;
			fprintf(stderr, "handoff: channel %lu: recvmsg: %s\n",
			    ch->serial, strerror(errno));
			return chan_ended(ch);
		}
		if (n == 0) {
			if (ch->have > 0)
				fprintf(stderr, "handoff: channel %lu: EOF after "
				    "%zu bytes of a message\n", ch->serial,
				    ch->have);
			return chan_ended(ch);
		}
		ch->have += (size_t)n;
		if (ch->have < ch->want)
			continue;
		if (ch->want == FIXED) {
			if (check_fixed(ch->buf, &hlen, err, sizeof(err)) == -1) {
				fprintf(stderr, "handoff: channel %lu: %s\n",
				    ch->serial, err);
				return chan_ended(ch);
			}
			ch->want = FIXED + hlen;
			if (ch->have < ch->want)
				continue;
		}
		return chan_take(ch, out);
	}
}

void
handoff_channel_close(struct handoff_channel *ch)
{
	struct handoff_server *srv;

	if (ch == NULL)
		return;
	srv = ch->srv;
	chan_free(ch);
	announce_orphans(srv);
}

void
handoff_client_closed(struct handoff_client *c)
{
	if (c == NULL)
		return;
	/* An orphan (or a client of a channel shut down) is not reported:
	 * esockd counts it closed when that channel ends. */
	if (c->chan != NULL && !c->chan->dead)
		(void)chan_record(c->chan, "closed", c->id, NULL);
	LIST_REMOVE(c, entry);
	free(c);
}
