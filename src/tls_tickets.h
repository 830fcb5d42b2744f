/*
 * tls_tickets.h: the session-ticket keys, which belong to the daemon
 * rather than to a TLS context: kept in shared memory per listener
 * index, so they survive a reload and are the same in every worker;
 * rotated every tls_ticket_lifetime, or read from a tls_ticket_keys file
 * in HAProxy's format.
 */
#ifndef ESOCKD_TLS_TICKETS_H
#define ESOCKD_TLS_TICKETS_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "listener.h"

/* Keys kept per listener: HAProxy's TLS_TICKETS_NO, the file's last 3. */
#define TICKET_KEYS		3
#define TICKET_NAME_LEN		16
#define TICKET_KEY_SMALL	48	/* name, AES-128 key, HMAC key */
#define TICKET_KEY_LARGE	80	/* name, AES-256 key, HMAC key */

struct ticket_key {
	unsigned char	name[TICKET_NAME_LEN];
	unsigned char	aes[32];	/* 16 used by a 48-byte key */
	unsigned char	hmac[32];	/* 16 used by a 48-byte key */
	int		size;		/* 48 or 80 */
	int64_t		born;		/* random keys: began encrypting */
};

/* One listener's keys, as published to the workers. */
struct ticket_set {
	int			n;	/* keys in k; 0 = none yet */
	int			enc;	/* the one that encrypts */
	int			from_file; /* tls_ticket_keys: no rotation */
	int			lifetime;  /* seconds, random keys only */
	struct ticket_key	k[TICKET_KEYS];
};

/* Pure: one base64 line of a key file into k (48 or 80 bytes); -1 with
 * the reason in why. */
int	ticket_line_parse(const char *line, struct ticket_key *k, char *why,
	    size_t len);
/*
 * Pure: a key file's text into s, as HAProxy reads it: its last
 * TICKET_KEYS keys decrypt and the penultimate one encrypts.  -1 with
 * the reason in why and the file's line in *line (0: the whole file).
 */
int	ticket_text_parse(const char *text, struct ticket_set *s, int *line,
	    char *why, size_t len);
/*
 * Pure: rotate random keys at now.  A key encrypts for one lifetime from
 * its birth and decrypts for one more; fresh (80 random bytes) becomes
 * the encrypting key when none is or the current one's lifetime is over.
 * Returns 1 when fresh was used.
 */
int	ticket_rotate(struct ticket_set *s, int64_t now,
	    const unsigned char fresh[TICKET_KEY_LARGE]);
/* Pure: the index of the key named name in s, or -1. */
int	ticket_find(const struct ticket_set *s,
	    const unsigned char name[TICKET_NAME_LEN]);

/* Master, before any fork: the shared slots.  -1 when mmap failed. */
int	tls_tickets_init(void);
/*
 * Master, at load (also esockd -t): read l's tls_ticket_keys file into
 * l->tickets and make l->tls_ctx take its ticket keys from the shared
 * slot *si.  -1 with the error, FILE:LINE, in diag.
 */
int	tls_tickets_prepare(const struct esd_config *,
	    const struct listener_conf *, struct listener *l,
	    struct config_diag *);
/* Make ctx (a listener's, or one of its SNI contexts) use slot *si,
 * read at each handshake: the index is known only at the commit. */
int	tls_tickets_install(struct ssl_ctx_st *ctx, const int *si);
/* Master, once the listeners have their index: publish their keys. */
void	tls_tickets_commit(struct listener *l, size_t n);
/* Master: a listener index was released; its keys go with it. */
void	tls_tickets_forget(int si);
/* Master, on its timer: rotate every slot whose key is due. */
void	tls_tickets_rotate_all(void);
/* The listener's parsed file keys, or NULL; a no-op on NULL. */
void	tls_tickets_free(struct ticket_set *);

#endif
