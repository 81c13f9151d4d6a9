/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * health.h: the active health checker (health.c): one thread with its own event loop that
 * checks the servers of every backend with `check`, one connection at a time per server, and
 * reports each result to servers.c (servers_check_result). Called by the main thread only.
 */
#ifndef EXRELAY_HEALTH_H
#define EXRELAY_HEALTH_H

#include "cfg.h"

/*
 * Starts checking the servers of cfg (bound by servers_bind) in a thread of its own; no
 * thread when no backend has checks. A failure is logged and leaves the servers unchecked.
 */
void health_start(struct config *cfg);
/*
 * A new configuration (after servers_bind): servers added start being checked, removed ones
 * stop; the thread starts or stops when checks appear or disappear.
 */
void health_reload(struct config *cfg);
/* Stops the checks in flight and joins the thread (if any). */
void health_stop(void);

#endif
