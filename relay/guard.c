/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * guard.c: the authentication guard against password spraying and targeted lockout
 * (DESIGN.md, "Exchange protection"). It counts failed logins (a 401 to credentials) per user
 * name and per client address, and tells the caller which attempts to answer itself, so that
 * they never reach Exchange and Active Directory's bad-password counter does not move.
 *
 * - Per user, two counters, as AD FS Extranet Smart Lockout keeps them: failures from
 *   familiar addresses (one that had a success for that user within familiar_days) and from
 *   the others. max_failures failures of a kind within `window` block that kind for `block`
 *   seconds: an attacker elsewhere cannot lock out the user's own devices.
 * - Per client address: more than max_failures_per_client failures over all users within
 *   the window block the address.
 * - State is bounded: two tables of max_entries slots each (48 and 24 bytes a slot), keyed by
 *   SipHash-2-4 with a random key, so names are never stored and slots cannot be aimed at.
 *   A full probe window evicts its least recently used entry that is not blocked.
 * - Shared by all workers behind one mutex, taken only for requests that carry credentials;
 *   kept across reloads. Windows are fixed (they start at the first failure).
 *
 * Pure but for the lock: times come from the caller, events go back to the caller to log.
 */
#include "autoconf.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "guard.h"

#define PROBE 8		/* slots looked at per key */
#define FAMILIAR 2	/* familiar addresses kept per user */

struct uslot {
	uint64_t key;			/* 0: empty */
	uint32_t last;			/* last use (for eviction) */
	uint32_t win_start[2];		/* the current failure windows */
	uint16_t fails[2];		/* failures in the window: [0] unfamiliar, [1] familiar */
	uint32_t until[2];		/* blocked until (0: not blocked) */
	uint32_t fam_addr[FAMILIAR];	/* hashes of familiar client addresses */
	uint32_t fam_time[FAMILIAR];	/* their last success */
};

struct cslot {
	uint64_t key;
	uint32_t last, win_start, fails, until;
};

static struct {
	pthread_mutex_t lock;
	struct uslot *users;
	struct cslot *clients;
	size_t n;
	uint8_t seed[16];
	uint64_t counts[GUARD_COUNTERS];
} g = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* --- SipHash-2-4 (Aumasson and Bernstein, 2012) ----------------------------------------- */

static uint64_t
le64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

static uint64_t
rotl(uint64_t x, int b)
{
	return x << b | x >> (64 - b);
}

static void
sipround(uint64_t v[4])
{
	v[0] += v[1]; v[1] = rotl(v[1], 13); v[1] ^= v[0]; v[0] = rotl(v[0], 32);
	v[2] += v[3]; v[3] = rotl(v[3], 16); v[3] ^= v[2];
	v[0] += v[3]; v[3] = rotl(v[3], 21); v[3] ^= v[0];
	v[2] += v[1]; v[1] = rotl(v[1], 17); v[1] ^= v[2]; v[2] = rotl(v[2], 32);
}

uint64_t
guard_siphash(const uint8_t key[16], const void *data, size_t n)
{
	const uint8_t *p = data;
	uint64_t k0 = le64(key), k1 = le64(key + 8), last = (uint64_t)n << 56;
	uint64_t v[4] = { 0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1,
	    0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1 };
	size_t i;

	for (i = 0; i + 8 <= n; i += 8) {
		uint64_t m = le64(p + i);
		v[3] ^= m;
		sipround(v);
		sipround(v);
		v[0] ^= m;
	}
	for (size_t k = 0; i + k < n; k++)
		last |= (uint64_t)p[i + k] << (8 * k);
	v[3] ^= last;
	sipround(v);
	sipround(v);
	v[0] ^= last;
	v[2] ^= 0xff;
	for (int r = 0; r < 4; r++)
		sipround(v);
	return v[0] ^ v[1] ^ v[2] ^ v[3];
}

uint64_t
guard_key(const char *s)
{
	uint64_t h = guard_siphash(g.seed, s, strlen(s));

	return h ? h : 1;	/* 0 marks an empty slot */
}

/* --- the tables ------------------------------------------------------------------------- */

int
guard_init(size_t max_entries, const uint8_t *seed)
{
	if (g.users && max_entries == g.n)
		return 0;	/* a reload keeps the state */
	if (g.users)
		return -1;	/* a new size takes a restart */
	if (max_entries < PROBE)
		max_entries = PROBE;
	g.users = calloc(max_entries, sizeof(*g.users));
	g.clients = calloc(max_entries, sizeof(*g.clients));
	if (!g.users || !g.clients) {
		guard_free();
		errno = ENOMEM;
		return -1;
	}
	g.n = max_entries;
	if (seed)
		memcpy(g.seed, seed, sizeof(g.seed));
	else if (getrandom(g.seed, sizeof(g.seed), 0) != (ssize_t)sizeof(g.seed))
		return -1;
	return 0;
}

void
guard_free(void)
{
	free(g.users);
	free(g.clients);
	g.users = NULL;
	g.clients = NULL;
	g.n = 0;
	memset(g.counts, 0, sizeof(g.counts));
}

size_t
guard_bytes(void)
{
	return g.n * (sizeof(struct uslot) + sizeof(struct cslot));
}

/* The slot of key among its PROBE candidates: its own, an empty one, or the one to evict. */
#define FIND_SLOT(table, key, now, victim) do { \
	size_t base_ = (size_t)((key) % g.n), best_ = g.n; \
	for (size_t i_ = 0; i_ < PROBE; i_++) { \
		size_t j_ = (base_ + i_) % g.n; \
		if ((table)[j_].key == (key) || (table)[j_].key == 0) { \
			best_ = j_; \
			break; \
		} \
		if (best_ == g.n || victim(&(table)[j_], &(table)[best_], now)) \
			best_ = j_; \
	} \
	if ((table)[best_].key != (key)) { \
		memset(&(table)[best_], 0, sizeof((table)[best_])); \
		(table)[best_].key = (key); \
	} \
	(table)[best_].last = (now); \
	return &(table)[best_]; \
} while (0)

/* True when a is a better eviction victim than b: not blocked first, then least recently used. */
static bool
user_victim(const struct uslot *a, const struct uslot *b, uint32_t now)
{
	bool ab = a->until[0] > now || a->until[1] > now, bb = b->until[0] > now || b->until[1] > now;

	return ab != bb ? !ab : a->last < b->last;
}

static bool
client_victim(const struct cslot *a, const struct cslot *b, uint32_t now)
{
	bool ab = a->until > now, bb = b->until > now;

	return ab != bb ? !ab : a->last < b->last;
}

static struct uslot *
user_slot(uint64_t key, uint32_t now)
{
	FIND_SLOT(g.users, key, now, user_victim);
}

static struct cslot *
client_slot(uint64_t key, uint32_t now)
{
	FIND_SLOT(g.clients, key, now, client_victim);
}

/* Which of u's counters an attempt from address hash a counts in: 1 familiar, 0 not. */
static int
familiar(const struct uslot *u, uint32_t a, uint32_t now, const struct guard_params *p)
{
	for (int i = 0; i < FAMILIAR; i++)
		if (u->fam_addr[i] == a && u->fam_time[i] && now - u->fam_time[i] <= p->familiar_days * 86400.0)
			return 1;
	return 0;
}

static void
count(enum guard_counter c)
{
	g.counts[c]++;
}

uint64_t
guard_count(enum guard_counter c)
{
	pthread_mutex_lock(&g.lock);
	uint64_t v = g.counts[c];
	pthread_mutex_unlock(&g.lock);
	return v;
}

/* --- decisions -------------------------------------------------------------------------- */

enum guard_verdict
guard_check(const struct guard_params *p, uint64_t user, uint64_t client, double now_s,
    struct guard_event *ev)
{
	uint32_t now = (uint32_t)now_s, a = (uint32_t)client;
	enum guard_verdict v = GUARD_ALLOW;

	memset(ev, 0, sizeof(*ev));
	if (!p->enabled || !g.users)
		return GUARD_ALLOW;
	pthread_mutex_lock(&g.lock);
	struct cslot *c = client_slot(client, now);
	struct uslot *u = user_slot(user, now);
	int k = familiar(u, a, now, p);
	if (c->until && c->until <= now) {
		c->until = 0;
		ev->kind = GUARD_EV_UNBLOCK_CLIENT;
	}
	if (u->until[k] && u->until[k] <= now) {
		u->until[k] = 0;
		ev->kind = GUARD_EV_UNBLOCK_USER;
	}
	ev->familiar = k;
	if (c->until > now) {
		v = GUARD_BLOCK_CLIENT;
		ev->retry_after = c->until - now;
		count(GUARD_BLOCKED_CLIENT);
	} else if (u->until[k] > now) {
		v = GUARD_BLOCK_USER;
		ev->retry_after = u->until[k] - now;
		count(GUARD_BLOCKED_USER);
	}
	pthread_mutex_unlock(&g.lock);
	return v;
}

/* A failure in a fixed window: the count after it (the window restarts once it is over). */
static unsigned
window_fail(uint32_t *win_start, unsigned *fails, uint32_t now, double window)
{
	if (*fails == 0 || now - *win_start > window) {
		*win_start = now;
		*fails = 0;
	}
	return ++*fails;
}

void
guard_result(const struct guard_params *p, uint64_t user, uint64_t client, bool success,
    double now_s, struct guard_event *ev)
{
	uint32_t now = (uint32_t)now_s, a = (uint32_t)client;

	memset(ev, 0, sizeof(*ev));
	if (!p->enabled || !g.users)
		return;
	pthread_mutex_lock(&g.lock);
	struct uslot *u = user_slot(user, now);
	int k = familiar(u, a, now, p);
	ev->familiar = k;
	if (success) {
		int i = u->fam_addr[0] == a || (u->fam_addr[1] != a && u->fam_time[0] <= u->fam_time[1]) ? 0 : 1;
		u->fam_addr[i] = a;
		u->fam_time[i] = now ? now : 1;
		u->fails[k] = 0;
		count(GUARD_SUCCESSES);
		pthread_mutex_unlock(&g.lock);
		return;
	}
	count(GUARD_FAILURES);
	struct cslot *c = client_slot(client, now);
	unsigned uf = u->fails[k], cf = c->fails;
	uf = window_fail(&u->win_start[k], &uf, now, p->window);
	u->fails[k] = (uint16_t)(uf > 65535 ? 65535 : uf);
	cf = window_fail(&c->win_start, &cf, now, p->window);
	c->fails = cf;
	if (uf >= (unsigned)p->max_failures && u->until[k] <= now) {
		u->until[k] = now + (uint32_t)p->block;
		ev->kind = GUARD_EV_BLOCK_USER;
		ev->failures = uf;
		count(GUARD_BLOCKS_USER);
	}
	if (cf > (unsigned)p->max_failures_per_client && c->until <= now) {
		c->until = now + (uint32_t)p->block;
		ev->kind = ev->kind ? GUARD_EV_BLOCK_BOTH : GUARD_EV_BLOCK_CLIENT;
		ev->client_failures = cf;
		count(GUARD_BLOCKS_CLIENT);
	}
	ev->retry_after = (uint32_t)p->block;
	pthread_mutex_unlock(&g.lock);
}
