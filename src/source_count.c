/*
 * source_count.c: max_connections_per_source, exact across workers.
 *
 * The same "claim, then check" as the connection limit (shm.c): a worker
 * adds one to its own entry for the client's address, sums that
 * address's entries in every slot's table, and backs out if the sum is
 * over the limit.  With sequentially consistent counts, of two racing
 * claims at least one sees the other, so the limit is never exceeded.
 *
 * Each slot's table is open-addressed and written by its worker only.
 * An entry is never emptied, only reused once its count is 0, so a
 * probe chain never breaks under a reader.  The key is rewritten under
 * a sequence number (odd while writing); the count goes from 0 to 1
 * only after, so a reader that sees a key change in progress is right to
 * count that entry as 0.  A dead worker's table is zeroed by the master
 * (source_reclaim_slot), which keeps the counts exact across crashes.
 */
#include "source_count.h"

#include <netinet/in.h>
#include <string.h>

#include "shm.h"

/* The 16-byte key of an address; IPv4 as ::ffff:a.b.c.d.  -1: not IP. */
static int
key_of(const struct sockaddr *sa, uint64_t key[2])
{
	uint8_t b[16] = { 0 };

	if (sa->sa_family == AF_INET) {
		b[10] = b[11] = 0xff;
		memcpy(b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6)
		memcpy(b, &((const struct sockaddr_in6 *)sa)->sin6_addr, 16);
	else
		return -1;
	memcpy(&key[0], b, 8);
	memcpy(&key[1], b + 8, 8);
	return 0;
}

/* The 64-bit finalizer of MurmurHash3: every input bit moves every
 * output bit, so addresses that differ only in their last byte spread. */
static uint64_t
mix(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

/* Where the probe for (li, key) starts. */
static uint32_t
start_of(int li, const uint64_t key[2])
{
	return (uint32_t)(mix(mix(key[0] ^ (uint64_t)li) ^ key[1]) %
	    SOURCE_ENTRIES);
}

/* Is e, read consistently, (li, key)?  An entry mid-rewrite is not. */
static int
entry_is(struct source_entry *e, uint32_t seq, int li, const uint64_t key[2])
{
	return (seq & 1) == 0 && atomic_load(&e->li) == (uint32_t)li &&
	    atomic_load(&e->key[0]) == key[0] &&
	    atomic_load(&e->key[1]) == key[1] &&
	    atomic_load_explicit(&e->seq, memory_order_acquire) == seq;
}

/* The open count of (li, key) in one slot's table. */
static int64_t
count_in(struct source_table *t, int li, const uint64_t key[2], uint32_t at)
{
	int64_t sum = 0;

	for (int i = 0; i < SOURCE_PROBES; i++) {
		struct source_entry *e = &t->e[(at + (uint32_t)i) % SOURCE_ENTRIES];
		uint32_t seq = atomic_load_explicit(&e->seq,
		    memory_order_acquire);

		if (seq == 0)
			break;		/* never used: the chain ends */
		if (entry_is(e, seq, li, key))
			sum += atomic_load(&e->count);
	}
	return sum;
}

/*
 * This slot's entry for (li, key): the one it has, else one to reuse or
 * a fresh one, given the key.  Returns its index, or -1 when every entry
 * within SOURCE_PROBES is in use by other addresses.
 */
static int32_t
own_entry(struct source_table *t, int li, const uint64_t key[2], uint32_t at)
{
	int32_t spare = -1;
	struct source_entry *e;

	for (int i = 0; i < SOURCE_PROBES; i++) {
		int32_t idx = (int32_t)((at + (uint32_t)i) % SOURCE_ENTRIES);
		uint32_t seq;

		e = &t->e[idx];
		seq = atomic_load(&e->seq);
		if (seq != 0 && entry_is(e, seq, li, key))
			return idx;
		if (spare == -1 && (seq == 0 || atomic_load(&e->count) == 0))
			spare = idx;
		if (seq == 0)
			break;
	}
	if (spare == -1)
		return -1;
	atomic_store(&t->used, 1);
	e = &t->e[spare];
	atomic_store_explicit(&e->seq, atomic_load(&e->seq) | 1,
	    memory_order_release);
	atomic_store(&e->li, (uint32_t)li);
	atomic_store(&e->key[0], key[0]);
	atomic_store(&e->key[1], key[1]);
	atomic_store_explicit(&e->seq, atomic_load(&e->seq) + 1,
	    memory_order_release);
	return spare;
}

/*
 * Claim one connection for the client at sa on listener li.  Returns 0
 * with *entry set (release it later), -1 when the address already has
 * limit connections open, -2 when this slot's table has no room.
 * Refusals are counted by the caller.
 */
int
source_admit(struct shm_region *r, int li, int slot, const struct sockaddr *sa,
    int limit, int32_t *entry)
{
	uint64_t key[2];
	uint32_t at, n = atomic_load(&r->nslots);
	int64_t sum = 0;
	int32_t idx;

	*entry = -1;
	if (key_of(sa, key) == -1)
		return 0;	/* not an IP client: nothing to count by */
	at = start_of(li, key);
	if ((idx = own_entry(&r->sources[slot], li, key, at)) == -1)
		return -2;
	atomic_fetch_add(&r->sources[slot].e[idx].count, 1);
	for (uint32_t s = 0; s < n; s++)
		sum += count_in(&r->sources[s], li, key, at);
	if (sum > limit) {
		atomic_fetch_sub(&r->sources[slot].e[idx].count, 1);
		return -1;
	}
	*entry = idx;
	return 0;
}

/* A connection claimed with source_admit has ended. */
void
source_release(struct shm_region *r, int slot, int32_t entry)
{
	if (entry >= 0)
		atomic_fetch_sub(&r->sources[slot].e[entry].count, 1);
}

/* Connections open now from sa on listener li, over all slots. */
int
source_open(struct shm_region *r, int li, const struct sockaddr *sa)
{
	uint64_t key[2];
	uint32_t n = atomic_load(&r->nslots);
	int64_t sum = 0;

	if (key_of(sa, key) == -1)
		return 0;
	for (uint32_t s = 0; s < n; s++)
		sum += count_in(&r->sources[s], li, key, start_of(li, key));
	return (int)sum;
}

/*
 * A dead worker's slot (master only, after the reap: nothing else
 * writes it): its connections are gone, so are their counts.  Keys and
 * sequence numbers stay, so other slots' probe chains are unaffected.
 */
void
source_reclaim_slot(struct shm_region *r, int slot)
{
	struct source_table *t = &r->sources[slot];

	/* A slot that never counted a source: reading its 512 KiB would
	 * only fault in pages of zeros. */
	if (!atomic_load(&t->used))
		return;
	for (int i = 0; i < SOURCE_ENTRIES; i++)
		if (atomic_load(&t->e[i].seq) != 0)
			atomic_store(&t->e[i].count, 0);
}
