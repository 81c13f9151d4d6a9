/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_guard.c: TAP tests for guard.c: SipHash-2-4 against the reference vectors, blocking a
 * user after max_failures, familiar addresses unaffected by failures elsewhere, the
 * per-address block, expiry and windows (with a fake clock), and the bounded tables under a
 * million distinct names.
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"
#include "tap.h"

static const struct guard_params P = { true, 5, 600, 900, 14, 30, 1000 };

/* Resident memory of this process, in bytes (/proc/self/statm). */
static long
rss_bytes(void)
{
	long pages = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return rss * 4096;
}

static void
fail(const char *user, const char *ip, double now)
{
	struct guard_event ev;

	guard_result(&P, guard_key(user), guard_key(ip), false, now, &ev);
}

static enum guard_verdict
check(const char *user, const char *ip, double now)
{
	struct guard_event ev;

	return guard_check(&P, guard_key(user), guard_key(ip), now, &ev);
}

int
main(void)
{
	uint8_t key[16], in[64];
	struct guard_event ev;
	double t = 1000;

	for (int i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (int i = 0; i < 64; i++)
		in[i] = (uint8_t)i;
	/* Reference vectors of the SipHash paper (key 00..0f, input 00..len-1). */
	ok(guard_siphash(key, in, 0) == 0x726fdb47dd0e0e31ULL, "siphash-2-4, empty input");
	ok(guard_siphash(key, in, 15) == 0xa129ca6149be45e5ULL, "siphash-2-4, 15 bytes");
	ok(guard_siphash(key, in, 63) == 0x958a324ceb064572ULL, "siphash-2-4, 63 bytes");

	ok(guard_init(P.max_entries, key) == 0, "init");
	ok(guard_init(P.max_entries, NULL) == 0, "init again with the same size keeps the state (reload)");
	ok(guard_init(P.max_entries * 2, NULL) == -1, "another size takes a restart");

	/* A success makes 10.0.0.1 familiar for alice. */
	guard_result(&P, guard_key("alice"), guard_key("10.0.0.1"), true, t, &ev);
	for (int i = 0; i < 4; i++)
		fail("alice", "203.0.113.9", t + i);
	is_int(check("alice", "203.0.113.9", t + 5), GUARD_ALLOW, "4 failures: still allowed");
	guard_result(&P, guard_key("alice"), guard_key("203.0.113.9"), false, t + 5, &ev);
	is_int(ev.kind, GUARD_EV_BLOCK_USER, "the 5th failure blocks the user (event)");
	is_int(ev.failures, 5, "the event counts 5 failures");
	is_int(check("alice", "203.0.113.9", t + 6), GUARD_BLOCK_USER, "blocked from the attacker's address");
	is_int(check("alice", "198.51.100.7", t + 6), GUARD_BLOCK_USER, "blocked from any unfamiliar address");
	is_int(check("alice", "10.0.0.1", t + 6), GUARD_ALLOW, "the familiar address still logs in");
	is_int(check("bob", "198.51.100.7", t + 6), GUARD_ALLOW, "another user is not affected");
	guard_check(&P, guard_key("alice"), guard_key("203.0.113.9"), t + 6, &ev);
	is_int(ev.retry_after, 899, "retry_after counts down the block");
	is_int(check("alice", "203.0.113.9", t + 5 + 900), GUARD_ALLOW, "the block ends after `block` seconds");

	/* An old password on the familiar phone: blocked too, but only from familiar addresses. */
	for (int i = 0; i < 5; i++)
		fail("carol", "10.0.0.2", t + i);
	is_int(check("carol", "10.0.0.2", t + 6), GUARD_BLOCK_USER, "unfamiliar failures block (no success yet)");
	guard_result(&P, guard_key("dave"), guard_key("10.0.0.3"), true, t, &ev);
	for (int i = 0; i < 5; i++)
		fail("dave", "10.0.0.3", t + i);
	is_int(check("dave", "10.0.0.3", t + 6), GUARD_BLOCK_USER, "a familiar device's failures block it");
	is_int(check("dave", "203.0.113.1", t + 6), GUARD_ALLOW, "... and not the unfamiliar kind");

	/* The window: failures spread wider than `window` never block. */
	for (int i = 0; i < 20; i++)
		fail("erin", "192.0.2.1", t + i * 200.0);
	is_int(check("erin", "192.0.2.1", t + 20 * 200.0), GUARD_ALLOW, "4 failures per 10 minutes never block");

	/* Per client address: more than 30 failures over many users. */
	t = 100000;
	char u[32];
	for (int i = 0; i < 30; i++) {
		snprintf(u, sizeof(u), "user%d", i);
		fail(u, "192.0.2.99", t);
	}
	is_int(check("someone", "192.0.2.99", t), GUARD_ALLOW, "30 failures from one address: allowed");
	guard_result(&P, guard_key("user31"), guard_key("192.0.2.99"), false, t, &ev);
	is_int(ev.kind, GUARD_EV_BLOCK_CLIENT, "the 31st blocks the address");
	is_int(check("someone", "192.0.2.99", t + 1), GUARD_BLOCK_CLIENT, "every user from that address is refused");
	is_int(check("someone", "192.0.2.100", t + 1), GUARD_ALLOW, "another address is not");
	guard_check(&P, guard_key("x"), guard_key("192.0.2.99"), t + 901, &ev);
	is_int(ev.kind, GUARD_EV_UNBLOCK_CLIENT, "the first check after the block reports the unblock");

	/* Bounded: a million distinct names fit in the same tables; blocked entries survive. */
	for (int i = 0; i < 5; i++)
		fail("victim", "203.0.113.50", t + 2000);
	for (int i = 0; i < 1000000; i++) {
		snprintf(u, sizeof(u), "spray%d", i);
		fail(u, "198.18.0.1", t + 2001);
	}
	is_int(check("victim", "203.0.113.50", t + 2002), GUARD_BLOCK_USER, "a block survives a million sprayed names");
	ok(guard_bytes() == P.max_entries * 72, "memory: %zu bytes for %zu slots per table", guard_bytes(), P.max_entries);
	ok(guard_count(GUARD_FAILURES) > 1000000, "failures counted");
	ok(guard_count(GUARD_BLOCKS_USER) >= 3, "user blocks counted");
	guard_free();

	/* The documented bound at the default size: 100,000 slots a table, 72 bytes a user and address. */
	long rss0 = rss_bytes();
	ok(guard_init(100000, key) == 0, "init with the default max_entries");
	for (int i = 0; i < 1000000; i++) {
		snprintf(u, sizeof(u), "name%d", i);
		char ip[32];
		snprintf(ip, sizeof(ip), "10.%d.%d.%d", (i >> 16) & 255, (i >> 8) & 255, i & 255);
		fail(u, ip, t + 3000);
	}
	long grew = rss_bytes() - rss0;
	/* 7.2 MB of tables, an eighth more for AddressSanitizer's shadow when built with it, 1 MiB slack. */
	ok(grew <= 7200000 + 7200000 / 8 + 1048576,
	    "a million names and addresses: RSS grew %ld bytes (bound: 7.2 MB, +1/8 under ASan, +1 MiB)", grew);
	is_int((long long)guard_bytes(), 7200000, "guard_bytes at the default size: 7.2 MB");
	guard_free();
	struct guard_params off = P;
	off.enabled = false;
	ok(guard_check(&off, 1, 2, 0, &ev) == GUARD_ALLOW, "disabled: always allowed");
	return done_testing();
}
