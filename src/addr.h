/*
 * addr.h: listener address parsing and printing.
 */
#ifndef ESOCKD_ADDR_H
#define ESOCKD_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

int	addr_parse_bind(const char *, struct sockaddr_storage *, socklen_t *,
	    const char **why);
int	addr_equal(const struct sockaddr *, const struct sockaddr *);
void	addr_format(const struct sockaddr *, char *, size_t);

#endif
