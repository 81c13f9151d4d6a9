/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * hrw.h: weighted rendezvous hashing (hrw.c). Pure.
 */
#ifndef EXRELAY_HRW_H
#define EXRELAY_HRW_H

#include <stddef.h>
#include <stdint.h>

/* The score of server `name` with weight (0: never chosen, -inf) for key. */
double hrw_score(const char *name, int weight, const char *key, size_t keylen);
/* The index of the best of n servers for key, or n when no weight is positive. */
size_t hrw_pick(const char *const *names, const int *weights, size_t n, const char *key, size_t keylen);
/* A stable 64-bit hash of p[0..n). */
uint64_t hrw_hash(const void *p, size_t n);

#endif
