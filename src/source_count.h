/*
 * source_count.h: what the listener knows per client source, shared by
 * all workers: the connections each source has open, for
 * max_connections_per_source, and when its next connection is due, for
 * rate_limit_per_source.  A source is an address masked to the
 * listener's source_prefix_v4 or source_prefix_v6.  Each worker slot owns
 * one table of open counts in the shared region and is its only writer;
 * admission sums the tables.  The rates are one table for all, a word
 * per source, moved with a compare-and-swap.
 */
#ifndef ESOCKD_SOURCE_COUNT_H
#define ESOCKD_SOURCE_COUNT_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOURCE_ENTRIES	16384	/* per worker slot: distinct sources open */
#define SOURCE_PROBES	64	/* entries looked at for one address */
#define SOURCE_RATE_ENTRIES (1 << 17) /* rate words, for all listeners */

/*
 * A client's source as the tables key it: its IPv6 address masked to
 * source_prefix_v6, or ::ffff: and its IPv4 address masked to
 * source_prefix_v4 (an IPv4-mapped IPv6 address is the IPv4 one).
 */
struct source_key {
	uint64_t	w[2];
};

/*
 * One source's count in one slot.  seq is 0 until the entry is first
 * used, odd while its owner rewrites the key (only when count is 0), so
 * a reader in another process never credits a count to the wrong key.
 */
struct source_entry {
	_Atomic uint32_t	seq;
	_Atomic uint32_t	li;		/* listener (shm index) */
	_Atomic uint64_t	key[2];		/* struct source_key */
	_Atomic int32_t		count;		/* open now */
	uint32_t		pad;
};

struct source_table {
	_Atomic uint32_t	used;	/* an entry was ever written */
	struct source_entry	e[SOURCE_ENTRIES];
};

/*
 * The per-source rates: each source's word holds when its next
 * connection is due and a fingerprint of whose it is (source_count.c).
 * seed keys the hash, so that no client can choose addresses that meet
 * another's in a table; set once by the master before it forks.
 */
struct source_rates {
	uint64_t		seed;
	_Atomic uint64_t	w[SOURCE_RATE_ENTRIES];
};

struct shm_region;

int	source_key_of(const struct sockaddr *, int prefix_v4, int prefix_v6,
	    struct source_key *);
void	source_init(struct shm_region *);
int	source_admit(struct shm_region *, int li, int slot,
	    const struct source_key *, int limit, int32_t *entry);
void	source_release(struct shm_region *, int slot, int32_t entry);
int	source_open(struct shm_region *, int li, const struct source_key *);
int	source_rate_admit(struct shm_region *, int li,
	    const struct source_key *, uint64_t now_us, uint64_t interval_us,
	    uint64_t burst);
void	source_reclaim_slot(struct shm_region *, int slot);

#endif
