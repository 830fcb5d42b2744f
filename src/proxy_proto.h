/*
 * proxy_proto.h: the PROXY protocol version 2 header that tells a backend
 * who the client is (haproxy.org/download/2.9/doc/proxy-protocol.txt).
 */
#ifndef ESOCKD_PROXY_PROTO_H
#define ESOCKD_PROXY_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header proxy_v2_header writes (TCP over IPv6). */
#define PROXY_V2_MAX	52

size_t	proxy_v2_header(const struct sockaddr *src, const struct sockaddr *dst,
	    uint8_t *buf, size_t cap);

#endif
