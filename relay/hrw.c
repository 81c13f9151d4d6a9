/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * hrw.c: rendezvous (highest random weight) hashing, weighted: a key goes to the server with
 * the highest score -weight / ln(u), u uniform in (0, 1) from a hash of (server name, key).
 * Any instance with the same names and weights agrees; removing a server moves only the keys
 * it had, adding one takes only its share. Pure and stable across runs and machines (FNV-1a,
 * then splitmix64's finaliser; no random seed).
 */
#include "autoconf.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "hrw.h"

static uint64_t
fnv1a(const void *p, size_t n, uint64_t h)
{
	const unsigned char *c = p;

	for (size_t i = 0; i < n; i++) {
		h ^= c[i];
		h *= 1099511628211ULL;
	}
	return h;
}

/* splitmix64's finaliser: spreads the bits of a combined hash. */
static uint64_t
mix(uint64_t z)
{
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

double
hrw_score(const char *server, int weight, const char *key, size_t keylen)
{
	uint64_t h = mix(fnv1a(key, keylen, fnv1a(server, strlen(server) + 1, 1469598103934665603ULL)));
	double u = ((double)(h >> 11) + 0.5) / 9007199254740992.0;	/* (0, 1) */

	return weight <= 0 ? -HUGE_VAL : -(double)weight / log(u);
}

uint64_t
hrw_hash(const void *p, size_t n)
{
	return mix(fnv1a(p, n, 1469598103934665603ULL));
}

size_t
hrw_pick(const char *const *names, const int *weights, size_t n, const char *key, size_t keylen)
{
	size_t best = n;
	double top = -HUGE_VAL;

	for (size_t i = 0; i < n; i++) {
		double s = hrw_score(names[i], weights[i], key, keylen);
		if (s > top) {
			top = s;
			best = i;
		}
	}
	return best;
}
