/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_hrw.c: TAP tests for hrw.c, weighted rendezvous hashing: the same choice every time,
 * an even spread, weights honoured, and the 1/N property over 100,000 keys: removing one of
 * three servers moves only the keys it had (about a third), adding a fourth takes only its
 * quarter, and nothing else moves.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "hrw.h"
#include "tap.h"

#define KEYS 100000

static size_t
pick(const char *const *names, const int *w, size_t n, int k)
{
	char key[32];

	snprintf(key, sizeof(key), "203.0.%d.%d", (k >> 8) & 255, k & 255);
	if (k >= 65536)
		snprintf(key, sizeof(key), "cookie-%d", k);
	return hrw_pick(names, w, n, key, strlen(key));
}

int
main(void)
{
	static const char *const three[] = { "ex1", "ex2", "ex3" };
	static const char *const two[] = { "ex1", "ex3" };	/* ex2 left */
	static const char *const four[] = { "ex1", "ex2", "ex3", "ex4" };
	int w3[] = { 100, 100, 100 }, w2[] = { 100, 100 }, w4[] = { 100, 100, 100, 100 };
	static size_t before[KEYS];
	size_t count[3] = { 0, 0, 0 }, moved = 0, wrong = 0, moved4 = 0, wrong4 = 0;

	for (int k = 0; k < KEYS; k++) {
		before[k] = pick(three, w3, 3, k);
		count[before[k]]++;
	}
	ok(pick(three, w3, 3, 12345) == before[12345], "the same key gives the same server");
	for (int i = 0; i < 3; i++)
		ok(fabs((double)count[i] / KEYS - 1.0 / 3) < 0.01, "server %d gets a third of the keys (%zu)", i + 1, count[i]);
	for (int k = 0; k < KEYS; k++) {
		size_t now = pick(two, w2, 2, k);
		const char *was = three[before[k]], *is = two[now];
		if (strcmp(was, is) != 0) {
			moved++;
			if (strcmp(was, "ex2") != 0)
				wrong++;
		}
	}
	is_int(wrong, 0, "removing ex2: no key that was on another server moves");
	ok(fabs((double)moved / KEYS - 1.0 / 3) < 0.01, "removing ex2 moves %.4f of the keys (1/3 expected)",
	    (double)moved / KEYS);
	for (int k = 0; k < KEYS; k++) {
		size_t now = pick(four, w4, 4, k);
		if (strcmp(three[before[k]], four[now]) != 0) {
			moved4++;
			if (strcmp(four[now], "ex4") != 0)
				wrong4++;
		}
	}
	is_int(wrong4, 0, "adding ex4: keys move only to ex4");
	ok(fabs((double)moved4 / KEYS - 0.25) < 0.01, "adding ex4 moves %.4f of the keys (1/4 expected)",
	    (double)moved4 / KEYS);
	int wd[] = { 100, 200, 100 };
	size_t heavy = 0;
	for (int k = 0; k < KEYS; k++)
		heavy += pick(three, wd, 3, k) == 1;
	ok(fabs((double)heavy / KEYS - 0.5) < 0.01, "weight 200 among 100s takes half the keys (%.4f)",
	    (double)heavy / KEYS);
	int wz[] = { 0, 100, 100 };
	size_t zero = 0;
	for (int k = 0; k < KEYS; k++)
		zero += pick(three, wz, 3, k) == 0;
	is_int(zero, 0, "weight 0: never chosen");
	int wn[] = { 0, 0, 0 };
	is_int(hrw_pick(three, wn, 3, "k", 1), 3, "no positive weight: no server");
	/* Fixed values: the same choice on every machine and every run (cross-instance agreement). */
	ok(hrw_hash("exrelay", 7) == 0x7ea92835b0214417ULL, "hrw_hash: the value every instance computes");
	is_int(hrw_pick(three, w3, 3, "203.0.113.7", 11), 0, "203.0.113.7 goes to ex1 on every instance");
	return done_testing();
}
