/*
 * sni_match.h: which tls_sni entry serves a client's server name.
 */
#ifndef ESOCKD_SNI_MATCH_H
#define ESOCKD_SNI_MATCH_H

#include <stddef.h>

#include "config.h"

/*
 * The index in e[0..n) of the entry for host, or -1 for none (no name,
 * an empty one, or one no entry names).  An exact name wins over a
 * wildcard; "*.b.example" covers exactly one label before "b.example".
 * Case does not matter, and a trailing dot (the root) is ignored.
 */
int	sni_match(const struct sni_conf *e, size_t n, const char *host);

#endif
