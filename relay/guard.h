/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * guard.h: the authentication guard (guard.c): failed logins counted per user name (familiar
 * and unfamiliar addresses apart) and per client address; attempts to block before they reach
 * Exchange. Thread-safe; no I/O.
 */
#ifndef EXRELAY_GUARD_H
#define EXRELAY_GUARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct guard_params {
	bool enabled;
	int max_failures;		/* per user and kind of address, within window: then blocked */
	double window;			/* seconds */
	double block;			/* seconds */
	double familiar_days;		/* a success from an address makes it familiar for this long */
	int max_failures_per_client;	/* more than this within window: the address is blocked */
	size_t max_entries;		/* slots per table (users, clients) */
};

enum guard_verdict {
	GUARD_ALLOW,
	GUARD_BLOCK_USER,		/* this user, from this kind of address, is blocked */
	GUARD_BLOCK_CLIENT,		/* this client address is blocked */
};

/* What changed, for the caller's log line (one per block and per unblock). */
enum guard_event_kind {
	GUARD_EV_NONE,
	GUARD_EV_BLOCK_USER,
	GUARD_EV_BLOCK_CLIENT,
	GUARD_EV_BLOCK_BOTH,
	GUARD_EV_UNBLOCK_USER,
	GUARD_EV_UNBLOCK_CLIENT,
};

struct guard_event {
	enum guard_event_kind kind;
	unsigned failures;		/* the user's failures that led to the block */
	unsigned client_failures;	/* the address's failures that led to the block */
	unsigned retry_after;		/* seconds until the block ends */
	int familiar;			/* 1: the address is familiar for this user */
};

enum guard_counter {
	GUARD_FAILURES,			/* 401s to credentials */
	GUARD_SUCCESSES,
	GUARD_BLOCKS_USER,		/* blocks started */
	GUARD_BLOCKS_CLIENT,
	GUARD_BLOCKED_USER,		/* attempts answered by exrelay */
	GUARD_BLOCKED_CLIENT,
	GUARD_COUNTERS
};

/*
 * Allocates the tables (max_entries slots each) on first use; a later call with the same
 * size keeps the state (a reload), another size fails (-1: it takes a restart). seed: 16
 * bytes for the hash key (tests), or NULL for a random one.
 */
int guard_init(size_t max_entries, const uint8_t *seed);
void guard_free(void);
size_t guard_bytes(void);

/* The key of a user name or a client address (SipHash with the tables' random key; never 0). */
uint64_t guard_key(const char *s);

/* Before credentials go to the backend: whether this attempt may. now: monotonic seconds. */
enum guard_verdict guard_check(const struct guard_params *p, uint64_t user, uint64_t client,
    double now, struct guard_event *ev);

/* After the backend answered credentials: success (2xx, 3xx) or failure (401). */
void guard_result(const struct guard_params *p, uint64_t user, uint64_t client, bool success,
    double now, struct guard_event *ev);

uint64_t guard_count(enum guard_counter c);
uint64_t guard_siphash(const uint8_t key[16], const void *data, size_t n);

#endif
