/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * health_int.h: private to health.c and health_probe.c, both on the checker's thread: a
 * checked server's entry and its schedule (health.c), and the one check in flight that it may
 * hold (health_probe.c, opaque here).
 */
#ifndef EXRELAY_HEALTH_INT_H
#define EXRELAY_HEALTH_INT_H

#include <stdbool.h>

#include "relay.h"

#define HSRV_MAGIC 0x68737276U	/* "hsrv" */

struct probe;

/* One checked server of the current configuration, and its schedule. */
struct hsrv {
	unsigned magic;
	const struct cfg_backend *b;
	const struct cfg_server *cs;
	int nprotos;			/* checks per round */
	int next;			/* the round's next protocol; nprotos: between rounds */
	ev_tstamp round_start;
	ev_timer timer;			/* the next check of the round, or the next round */
	struct probe *p;		/* the check in flight, or NULL */
	bool moved;			/* a reload moved it to a new entry */
};

/* --- health.c ------------------------------------------------------------------------------ */

/* The checker's event loop. */
struct ev_loop *health_loop(void);
/* The configuration checked (the checker's reference). */
struct config *health_config(void);
/* True when b's checks are per protocol (path "auto" and routes that name protocols). */
bool health_per_proto(const struct cfg_backend *b);
/*
 * Goes on with hs's round while nothing is in flight: starts the next protocol's check when
 * its time has come, else arms the timer for it or for the next round.
 */
void health_hsrv_run(struct hsrv *hs);

/* --- health_probe.c ------------------------------------------------------------------------ */

/*
 * Starts the check of protocol proto of hs: hs->p while it runs. A check that fails at once
 * (no socket, connect refused at once) is reported here, and hs->p stays NULL. At its end the
 * check reports to servers.c and calls health_hsrv_run(hs).
 */
void health_probe_start(struct hsrv *hs, int proto);
/* Closes the check's connection and frees it, without a result; its entry has none in flight. */
void health_probe_free(struct probe *p);
/* Hands the check in flight over to hs, its server's entry in a new configuration. */
void health_probe_move(struct probe *p, struct hsrv *hs);

#endif
