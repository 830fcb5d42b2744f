/*
 * source_count.h: connections open per client address, shared by all
 * workers, for max_connections_per_source.  Each worker slot owns one
 * table in the shared region and is its only writer; admission sums the
 * tables.
 */
#ifndef ESOCKD_SOURCE_COUNT_H
#define ESOCKD_SOURCE_COUNT_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOURCE_ENTRIES	16384	/* per worker slot: distinct sources open */
#define SOURCE_PROBES	64	/* entries looked at for one address */

/*
 * One address's count in one slot.  seq is 0 until the entry is first
 * used, odd while its owner rewrites the key (only when count is 0), so
 * a reader in another process never credits a count to the wrong key.
 */
struct source_entry {
	_Atomic uint32_t	seq;
	_Atomic uint32_t	li;		/* listener (shm index) */
	_Atomic uint64_t	key[2];		/* IPv6, or ::ffff:IPv4 */
	_Atomic int32_t		count;		/* open now */
	uint32_t		pad;
};

struct source_table {
	_Atomic uint32_t	used;	/* an entry was ever written */
	struct source_entry	e[SOURCE_ENTRIES];
};

struct shm_region;

int	source_admit(struct shm_region *, int li, int slot,
	    const struct sockaddr *, int limit, int32_t *entry);
void	source_release(struct shm_region *, int slot, int32_t entry);
int	source_open(struct shm_region *, int li, const struct sockaddr *);
void	source_reclaim_slot(struct shm_region *, int slot);

#endif
