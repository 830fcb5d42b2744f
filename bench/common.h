/*
 * bench/common.h: what the load generator and the echo server share: the
 * rule that benchmark traffic stays on loopback, and the clock they
 * measure with.  Header-only, so each tool stays one file to build.
 */
#ifndef ESOCKD_BENCH_COMMON_H
#define ESOCKD_BENCH_COMMON_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BENCH_ADDR_SYNTAX	(-1)	/* not IPV4:PORT */
#define BENCH_ADDR_REMOTE	(-2)	/* well-formed, outside 127.0.0.0/8 */

/*
 * Parse "IPV4:PORT" (port 1..65535) into *sin.  Only 127.0.0.0/8 is
 * accepted: benchmarks never send traffic off this machine.
 */
static inline int
bench_parse_loopback(const char *s, struct sockaddr_in *sin)
{
	const char *colon = strrchr(s, ':');
	char host[INET_ADDRSTRLEN], *end;
	unsigned long port;
	size_t len;

	if (colon == NULL || colon == s ||
	    (len = (size_t)(colon - s)) >= sizeof(host))
		return BENCH_ADDR_SYNTAX;
	memcpy(host, s, len);
	host[len] = '\0';
	memset(sin, 0, sizeof(*sin));
	sin->sin_family = AF_INET;
	if (inet_pton(AF_INET, host, &sin->sin_addr) != 1)
		return BENCH_ADDR_SYNTAX;
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (colon[1] < '0' || colon[1] > '9' || *end != '\0' || errno != 0 ||
	    port < 1 || port > 65535)
		return BENCH_ADDR_SYNTAX;
	if (ntohl(sin->sin_addr.s_addr) >> 24 != 127)
		return BENCH_ADDR_REMOTE;
	sin->sin_port = htons((uint16_t)port);
	return 0;
}

/* Monotonic nanoseconds: a wall-clock step must not bend a measurement. */
static inline uint64_t
bench_now_ns(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
		abort();
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * One line on stderr, "PROG: TAGTEXT": one fprintf per line, which stdio
 * locks, so the threads of a tool do not interleave their lines.
 */
static inline void bench_log(const char *prog, const char *tag,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static inline void
bench_log(const char *prog, const char *tag, const char *fmt, ...)
{
	char line[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: %s%s\n", prog, tag, line);
}

#endif
