/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * servers.h: the run-time state of every backend server (servers.c): its administrative
 * state and weight (configuration, or set at run time through the runtime API, which survives
 * reloads), its health per protocol (the health checker, passive failures), its counters, and
 * the open RPC channels pinned to it. Entries are keyed by backend and server name, never
 * freed, and shared by the workers, the health checker and the main thread: fields that
 * change are read and written with atomics; binding a configuration takes a lock.
 *
 * Server choice is rendezvous (highest random weight) hashing over the servers usable for the
 * request's protocol: the same key gives the same server on every instance with the same
 * configuration and health view, and a server leaving moves only the keys that were on it.
 */
#ifndef EXRELAY_SERVERS_H
#define EXRELAY_SERVERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbind.h"
#include "cfg.h"

#define SRV_MAX 1024		/* backend servers over all configurations of a run */
#define SRV_PER_BACKEND 256	/* servers in one backend */
#define SRV_WHOLE 0		/* the protocol index used when check.path is a single path */

/* The health of one protocol of one server (index: the backend's protos; or SRV_WHOLE). */
struct srv_health {
	int up;				/* atomic: 1 usable, 0 down */
	int streak;			/* checker only: consecutive results against the state */
	double last_change;		/* wall clock of the last up/down change */
	double last_duration;		/* seconds the last check took */
	char last_status[48];		/* "L7OK 200", "L7STS 503", "L4TOUT", "L4CON", "L6RSP" (HAProxy's words) */
};

struct srv {
	char backend[64], name[64];	/* the key */
	char addr[96];			/* "host:port" as configured */
	int live;			/* atomic: named by the current configuration */
	int bound;			/* bound to a configuration before (main thread) */
	int admin_cfg, admin_rt;	/* configured state; run-time state or -1 (enum srv_admin) */
	int weight_cfg, weight_rt;	/* configured weight; run-time weight or -1 */
	int checked;			/* active checks are configured */
	/*
	 * Written under servers.c's lock (bind at reload, check results, passive failures); the
	 * workers read per_proto, nprotos and health[].up as atomics without it, the runtime API
	 * and /metrics read the rest under it (servers_foreach).
	 */
	int per_proto;			/* check.path = "auto": one health per protocol */
	int nprotos;
	char protos[CFG_MAX_PROTOS][32];
	struct srv_health health[CFG_MAX_PROTOS];
	int passive;			/* atomic: consecutive passive failures (connect, TLS, 5xx) */
	int fall;			/* check.fall: passive failures in a row that take it down */
	int64_t conns_active, conns_total, connect_errors, tls_errors, resp_5xx;	/* atomic */
	int64_t checks_ok, checks_failed, checks_skipped;	/* atomic */
	double admin_change;		/* wall clock of the last state change */

	/*
	 * Extended Protection (epcheck.c): the certificate exrelay's listener presents for the
	 * server's host name and the one the server presents, compared by their channel bindings.
	 * Under servers.c's certificate lock, except cb_mode and cb_match (atomics).
	 */
	int cb_mode;			/* enum cb_mode of the backend */
	int cb_match;			/* 1 same binding, 0 mismatch, -1 not compared (off, or a side unknown) */
	struct cbind_cert cb_front, cb_peer;
	char cb_host[128];		/* the host name cb_front was chosen for ("" : the default) */
	char cb_vdirs[192];		/* the backend's virtual directories ("/rpc /owa") */
	int cb_logged;			/* the verdict last logged, -1 none */
	unsigned char cb_logged_fp[2][32];	/* and the two fingerprints it named */
};

/* Binds the servers of cfg (main thread; at start and at each reload before the hand-over). */
int servers_bind(struct config *cfg);

/* The entry of backend/server, or NULL (runtime API). */
struct srv *servers_find(const char *backend, const char *server);
/* Visits every entry named by the current configuration, in configuration order. */
void servers_foreach(void (*fn)(struct srv *s, void *arg), void *arg);

enum srv_admin servers_admin(const struct srv *s);
int servers_weight(const struct srv *s);
void servers_set_admin(struct srv *s, enum srv_admin a);
void servers_set_weight(struct srv *s, int w);
/* After an upgrade (main thread, before the checker starts): proto ("*": the whole server) starts down. */
void servers_keep_down(struct srv *s, const char *proto);
/* "UP", "DOWN", "DRAIN", "MAINT", "no check", or "UP 1/3" / "DOWN 1/2" on the way. */
void servers_status(const struct srv *s, char *out, size_t cap);
/* True when the protocol (or any, proto < 0) is up, or the server is not checked. */
bool servers_up(const struct srv *s, int proto);

/* The backend's protocol of a normalised path ("/rpc/rpcproxy.dll" -> index of "rpc"), or -1. */
int servers_proto(const struct cfg_backend *b, const char *path, size_t len);

/*
 * Orders the servers of b for key, best first, into order (at most b->nservers): those
 * usable for protocol proto (ready, weight > 0, up). An RPC channel passes its cookie (16
 * bytes, else NULL): a server where a channel with that cookie is open comes first even
 * while draining, so an IN/OUT pair is never split. Returns how many.
 */
size_t servers_rank(const struct cfg_backend *b, int proto, const char *key, size_t keylen,
    const uint8_t *cookie, size_t *order);

/* Counting, from the workers. */
void servers_conn(struct srv *s, int delta);
void servers_failure(struct srv *s, const char *kind);	/* "connect", "connect_timeout", "tls", "5xx" */
void servers_success(struct srv *s);
void servers_rpc_open(struct srv *s, const uint8_t *cookie);
void servers_rpc_close(struct srv *s, const uint8_t *cookie);

/*
 * A health check's result (the checker), by protocol name (a reload may have renumbered the
 * protocols since the check started): moves the protocol up or down by rise and fall.
 */
void servers_check_result(struct srv *s, const char *proto, bool ok, double duration,
    const char *status, int rise, int fall);
/*
 * A check that could not run for want of local resources (no descriptor: "SOCKERR"): shown as
 * its last status and counted, but neither a success nor a failure of the server.
 */
void servers_check_skipped(struct srv *s, const char *proto, const char *status);

/*
 * Extended Protection: the listener's certificate for the server's host name, with the
 * backend's channel_binding mode and virtual directories (main thread, after servers_bind);
 * the server's certificate (the checker after each handshake, or a worker). Each compares the
 * two and logs a change of verdict or of certificates once: a mismatch as a warning.
 */
void servers_cb_front(struct srv *s, enum cb_mode mode, const struct cbind_cert *front, const char *host,
    const char *vdirs);
void servers_cb_peer(struct srv *s, const struct cbind_cert *peer);
/* 1 the certificates bind the same, 0 they do not, -1 not compared (off, or one is unknown). */
int servers_cb_match(const struct srv *s);
/* A copy of s's two certificates and host name, taken under the lock (for -T and the metrics). */
void servers_cb_get(struct srv *s, struct cbind_cert *front, struct cbind_cert *peer, char *host, size_t cap);

/* True when no server of any backend reached by Exchange-like routes is usable (the agent). */
bool servers_all_down(const struct config *cfg);

#endif
