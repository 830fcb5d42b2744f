/*
 * proxy_in.h: the PROXY protocol header (version 1 text or version 2
 * binary, haproxy.org/download/2.9/doc/proxy-protocol.txt) that a proxy
 * in front of esockd sends first on a client's connection: parsed from
 * the bytes received so far, with the reason when it is refused.
 */
#ifndef ESOCKD_PROXY_IN_H
#define ESOCKD_PROXY_IN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "proxy_proto.h"	/* struct proxy_tlv, PP2_TYPE_*, PROXY_V2_TLV_MAX */

/* Which header a listener expects (its proxy_protocol_in). */
enum proxy_in_mode {
	PROXY_IN_OFF = 0,	/* none: proxy_in_parse refuses any bytes */
	PROXY_IN_V1,		/* "PROXY TCP4 ...\r\n" only */
	PROXY_IN_V2,		/* the binary header only */
	PROXY_IN_ANY		/* either, told apart by the first byte */
};

/*
 * Why a header is refused: proxy_in_parse's negative results, and two
 * the caller decides (the parser never returns those).  -err - 1 indexes
 * an array of PROXY_IN_NERR counters; proxy_in_reason names each.
 */
enum proxy_in_err {
	PROXY_IN_ERR_BAD_SIGNATURE = -1, /* not "PROXY " nor the v2 signature */
	PROXY_IN_ERR_BAD_VERSION = -2,	/* v2: version not 2, command not
					   LOCAL or PROXY */
	PROXY_IN_ERR_BAD_FAMILY = -3,	/* v1: not TCP4, TCP6, UNKNOWN; v2: a
					   family byte the spec does not define */
	PROXY_IN_ERR_BAD_LENGTH = -4,	/* v1: no CRLF in 107 bytes; v2: over
					   PROXY_IN_MAX, shorter than its
					   addresses, a TLV past the end */
	PROXY_IN_ERR_BAD_ADDRESS = -5,	/* v1: an address or port that does
					   not parse, or fields not single-
					   spaced */
	PROXY_IN_ERR_BAD_CHECKSUM = -6,	/* v2: PP2_TYPE_CRC32C does not match,
					   or comes twice */
	PROXY_IN_ERR_TIMEOUT = -7,	/* caller: not complete in time */
	PROXY_IN_ERR_UNTRUSTED = -8	/* caller: from outside proxy_sources */
};
#define PROXY_IN_NERR	8

/* The longest v1 line, CRLF included (the spec's). */
#define PROXY_V1_MAX	107

/*
 * The longest v2 header accepted, its 16 fixed bytes included (the
 * spec's is 16 + 65535).  It bounds what a connection holds before its
 * client is known; real proxies send a few hundred bytes, and esockd's
 * own longest (PROXY_V2_TLV_MAX) fits, so esockd can stand behind esockd.
 */
#define PROXY_IN_MAX	4096

/* TLVs kept in struct proxy_in; more are checked but not kept. */
#define PROXY_IN_TLVS	32

enum proxy_in_cmd {
	PROXY_IN_LOCAL = 0,	/* v2 LOCAL, v1 UNKNOWN: a health check or
				   the proxy's own connection */
	PROXY_IN_PROXY = 1	/* on behalf of the client named */
};

/*
 * A parsed header.  family is AF_UNSPEC, and src and dst have
 * ss_family AF_UNSPEC, when the header names no address (LOCAL, v1
 * UNKNOWN, v2 PROXY over UNSPEC): the connection's own addresses are
 * then the client's.  Each TLV's value points into the parsed buffer,
 * so it lives as long as that buffer does.
 */
struct proxy_in {
	int			 version;	/* 1 or 2 */
	enum proxy_in_cmd	 command;
	int			 family;	/* AF_INET, AF_INET6, AF_UNIX,
						   AF_UNSPEC */
	int			 socktype;	/* SOCK_STREAM, SOCK_DGRAM; 0
						   with AF_UNSPEC */
	struct sockaddr_storage	 src, dst;	/* port in network order */
	size_t			 ntlvs;		/* in tlvs, as they came */
	size_t			 tlvs_over;	/* valid, past PROXY_IN_TLVS */
	struct proxy_tlv	 tlvs[PROXY_IN_TLVS];
};

/*
 * Parse the header at the start of buf (len bytes received so far).
 * Returns > 0 when it is complete: its length, the bytes after it being
 * the client's; 0 when more bytes are needed (every prefix of a valid
 * header gives 0); < 0, an enum proxy_in_err, as soon as no more bytes
 * could make it valid.  *out is meaningful only after a result > 0.
 */
int			 proxy_in_parse(enum proxy_in_mode, const uint8_t *buf,
			    size_t len, struct proxy_in *out);
/* "bad_signature" and so on, for counters and logs. */
const char		*proxy_in_reason(int err);
/* The first TLV of a type, or NULL. */
const struct proxy_tlv	*proxy_in_tlv(const struct proxy_in *, uint8_t type);

#endif
