/*
 * proxy_proto.h: the PROXY protocol version 2 header that tells a backend
 * who the client is (haproxy.org/download/2.9/doc/proxy-protocol.txt),
 * and the TLVs after it: the client's TLS identity, a connection id, a
 * checksum, and the TLVs a proxy in front of esockd sent (proxy_in.h)
 * passed on.
 */
#ifndef ESOCKD_PROXY_PROTO_H
#define ESOCKD_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header proxy_v2_header writes (TCP over IPv6). */
#define PROXY_V2_MAX	52

/* The spec's TLV types and PP2_TYPE_SSL's client flags. */
#define PP2_TYPE_ALPN			0x01
#define PP2_TYPE_AUTHORITY		0x02
#define PP2_TYPE_CRC32C			0x03
#define PP2_TYPE_NOOP			0x04
#define PP2_TYPE_UNIQUE_ID		0x05
#define PP2_TYPE_SSL			0x20
#define PP2_SUBTYPE_SSL_VERSION		0x21
#define PP2_SUBTYPE_SSL_CN		0x22
#define PP2_SUBTYPE_SSL_CIPHER		0x23
#define PP2_SUBTYPE_SSL_SIG_ALG		0x24
#define PP2_SUBTYPE_SSL_KEY_ALG		0x25
#define PP2_TYPE_NETNS			0x30
#define PP2_TYPE_MIN_CUSTOM		0xe0
#define PP2_TYPE_MAX_CUSTOM		0xef
#define PP2_CLIENT_SSL			0x01
#define PP2_CLIENT_CERT_CONN		0x02
#define PP2_CLIENT_CERT_SESS		0x04

/*
 * Bounds on each value, so that the longest header has a fixed size:
 * a CN, an SNI name and an ALPN protocol are at most 255 bytes (the
 * latter two by their RFCs), the unique id at most 128 (the spec's
 * bound), and OpenSSL's names (version, cipher, algorithms) far less
 * than 63.  A longer value makes the builder refuse the header.
 */
#define PROXY_STR_MAX		255
#define PROXY_UNIQUE_ID_MAX	128
#define PROXY_NAME_MAX		63

/*
 * The longest header proxy_v2_header_tlv writes from esockd's own
 * values, every TLV at its bound: ALPN, AUTHORITY, CRC32C, UNIQUE_ID,
 * then SSL (client flags, verify; VERSION, CIPHER, SIG_ALG, KEY_ALG; CN).
 */
#define PROXY_V2_OWN_MAX	(PROXY_V2_MAX +			\
	3 + PROXY_STR_MAX + 3 + PROXY_STR_MAX + 3 + 4 +		\
	3 + PROXY_UNIQUE_ID_MAX +				\
	3 + 1 + 4 + 4 * (3 + PROXY_NAME_MAX) + 3 + PROXY_STR_MAX)

/*
 * The received TLVs passed on (struct proxy_tlvs, passed) take at most
 * this many bytes, types and lengths included; more makes the builder
 * refuse the header.  With it the longest header is PROXY_V2_TLV_MAX,
 * which proxy_in_parse accepts (PROXY_IN_MAX): an esockd behind another
 * esockd reads everything the one in front can send.
 */
#define PROXY_PASS_MAX		2048
#define PROXY_V2_TLV_MAX	(PROXY_V2_OWN_MAX + PROXY_PASS_MAX)

/*
 * What a TLS client negotiated, as tls_identity (tls.c) fills it: plain
 * strings, no OpenSSL types, so the builder stays pure.
 */
struct proxy_tls {
	uint8_t		 client;	/* PP2_CLIENT_* flags */
	uint32_t	 verify;	/* 0: presented and verified */
	const char	*version;	/* "TLSv1.3" */
	const char	*cipher;	/* OpenSSL's name */
	const char	*sig_alg;	/* our certificate's, "RSA-SHA256" */
	char		 key_alg[PROXY_NAME_MAX + 1];	/* "RSA2048" */
	char		 cn[PROXY_STR_MAX + 1];	/* client's CN */
	size_t		 cn_len;	/* 0: none; > PROXY_STR_MAX: refused */
	const char	*sni;		/* NULL: none sent */
	const uint8_t	*alpn;		/* NULL: none agreed */
	size_t		 alpn_len;
};

/* One TLV: its value points into a buffer someone else owns. */
struct proxy_tlv {
	uint8_t		 type;
	uint16_t	 len;
	const uint8_t	*value;
};

/*
 * The TLVs to send after the addresses.  passed are TLVs received from
 * a proxy in front of esockd (proxy_in_parse's), merged with esockd's
 * own as proxy_proto.c says: only ALPN, AUTHORITY, UNIQUE_ID, the custom
 * types 0xE0-0xEF and, on a plain listener, SSL go on, and esockd's own
 * value of a type wins over a received one.
 */
struct proxy_tlvs {
	const struct proxy_tls	*tls;		/* NULL: plain listener */
	const char		*unique_id;	/* NULL: none */
	int			 crc32c;	/* add PP2_TYPE_CRC32C */
	const struct proxy_tlv	*passed;	/* NULL: nothing passed on */
	size_t			 npassed;
};

size_t	proxy_v2_header(const struct sockaddr *src, const struct sockaddr *dst,
	    uint8_t *buf, size_t cap);
size_t	proxy_v2_header_tlv(const struct sockaddr *src,
	    const struct sockaddr *dst, const struct proxy_tlvs *,
	    uint8_t *buf, size_t cap);
uint32_t proxy_crc32c(const uint8_t *, size_t);
uint32_t proxy_crc32c_more(uint32_t crc, const uint8_t *, size_t);

#endif
