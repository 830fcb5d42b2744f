/*
 * early_drop.h: refusing new connections at random as the handshake
 * budget fills, in the style of OpenSSH's MaxStartups ("start:rate:full"
 * in percent of max_handshakes), and the small generator the draw uses.
 */
#ifndef ESOCKD_EARLY_DROP_H
#define ESOCKD_EARLY_DROP_H

#include <stdint.h>

/* handshake_early_drop as parsed; on = 0 when it is "" (off). */
struct early_drop {
	int	on;
	int	start;		/* percent of max_handshakes: drops begin */
	int	rate;		/* percent: the chance at start */
	int	full;		/* percent of max_handshakes: every one drops */
};

#define EARLY_DROP_PPM	1000000u	/* early_drop_ppm's certainty */

int		early_drop_parse(const char *, struct early_drop *,
		    const char **why);
uint32_t	early_drop_ppm(const struct early_drop *, int64_t n,
		    int64_t max);
int		early_drop_hit(const struct early_drop *, int64_t n,
		    int64_t max, uint64_t *rng);
uint64_t	early_drop_random(uint64_t *state);
uint64_t	early_drop_seed(uint64_t entropy);

#endif
