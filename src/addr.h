/*
 * addr.h: listener address parsing and printing, and backend socket
 * paths as addresses.
 */
#ifndef ESOCKD_ADDR_H
#define ESOCKD_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

int	addr_parse_bind(const char *, struct sockaddr_storage *, socklen_t *,
	    const char **why);
int	addr_parse_ip(const char *, struct sockaddr_storage *);
int	addr_equal(const struct sockaddr *, const struct sockaddr *);
void	addr_format(const struct sockaddr *, char *, size_t);
struct sockaddr_un;
/* A backend socket's path ("/path" or "@abstract", which config.c has
 * bounded to fit) as the address to connect to. */
void	addr_unix(const char *path, struct sockaddr_un *, socklen_t *);

#endif
