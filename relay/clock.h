/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * clock.h: the two clocks exrelay reads, in seconds: the wall clock (logs, HAProxy's lastchg)
 * and the monotonic clock (intervals that a clock change must not stretch or cut).
 */
#ifndef EXRELAY_CLOCK_H
#define EXRELAY_CLOCK_H

#include <time.h>

static inline double
clock_seconds(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Seconds since the epoch. */
static inline double
clock_wall(void)
{
	return clock_seconds(CLOCK_REALTIME);
}

/* Seconds on the monotonic clock. */
static inline double
clock_mono(void)
{
	return clock_seconds(CLOCK_MONOTONIC);
}

#endif
