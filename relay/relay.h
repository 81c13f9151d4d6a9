/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * relay.h: the daemon's shared types (a connection and its two halves, listeners, workers,
 * the process state), the rule of who calls whom, and the prototypes of conn.c, txn.c,
 * access.c, pump.c, listener.c, worker.c, upstream.c, admin.c and sock.c, grouped per file.
 */
#ifndef EXRELAY_RELAY_H
#define EXRELAY_RELAY_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <sys/socket.h>

#include <ev.h>

#include "buf.h"
#include "cred.h"
#include "check.h"
#include "cfg.h"
#include "http1.h"
#include "metrics.h"
#include "transport.h"

#define CONN_MAGIC 0x636f6e6eU	/* "conn" */
#define UPSTREAM_TRIES 16		/* servers a request tries at most, in rendezvous order */

struct srv;
struct spipe;
#define WORKER_MAGIC 0x776f726bU	/* "work" */
#define LISTENER_MAGIC 0x6c69736eU	/* "lisn" */

/* One side of a connection: the client, or the backend it is relayed to. */
struct half {
	struct conn *c;
	int fd;				/* -1: not open */
	const struct transport_ops *ops;
	void *tls;			/* transport state (TLS session), or NULL */
	int want;			/* EV_READ or EV_WRITE: what the transport waits for after EAGAIN */
	unsigned fed_iter;		/* pump.c: the event-loop turn a read was last fed in */
	ev_io rio, wio;
	struct buf *in;			/* bytes read from this side, not yet written to the other */
	struct buf *out;		/* bytes exrelay made for this side, sent before peer->in */
	uint64_t fwd;			/* bytes at the front of the peer's in cleared to go to this side */
	bool eof;			/* this side ended its sending direction */
	bool shut;			/* we ended our sending direction to this side */
	bool connecting;		/* backend: connect (and TLS handshake) in progress */
	bool handshaking;		/* TLS handshake in progress */
	bool read_wants_write;		/* the transport's last read waits for writability */
	bool cut;			/* the side ended with an error (reset, TLS without close_notify) */
	bool nosplice;			/* splice.c: the kernel refused splice on this socket: buffers only */
	struct spipe *pipe;		/* splice.c: bytes spliced from the peer, not yet written to this side */
	uint64_t nread, nwritten;
};

#define CONN_PHASES(X) \
	X(PH_PROXY)	/* reading the PROXY protocol header */ \
	X(PH_TLS)	/* TLS handshake with the client */ \
	X(PH_IDLE)	/* waiting for the first byte of a request (keep-alive) */ \
	X(PH_HEAD)	/* reading a request head */ \
	X(PH_ACTIVE)	/* a request is being relayed */ \
	X(PH_TUNNEL)	/* after 101: raw bytes both ways */ \
	X(PH_CLOSING)	/* sending a last response, then close */

enum conn_phase {
#define X(n) n,
	CONN_PHASES(X)
#undef X
};

#define RESP_STATES(X) \
	X(RS_NONE)	/* no request in flight */ \
	X(RS_HEAD)	/* waiting for the backend's response head (1xx forwarded) */ \
	X(RS_BODY)	/* relaying the response body */ \
	X(RS_DONE)	/* the response has ended */

enum resp_state {
#define X(n) n,
	RESP_STATES(X)
#undef X
};

/* What a connection's timer is waiting for (conn_deadline names one; its expiry acts on it). */
#define CONN_TIMEOUTS(X) \
	X(TO_PROXY_HEADER)	/* the whole PROXY header */ \
	X(TO_TLS_HANDSHAKE)	/* the client's TLS handshake */ \
	X(TO_CLIENT_IDLE)	/* keep-alive: the next request */ \
	X(TO_REQUEST_HEAD)	/* the whole request head (408) */ \
	X(TO_RPC_COOKIE)	/* the first PDU of an RPC channel, to choose its server (408) */ \
	X(TO_BODY_NOT_TAKEN)	/* answered early: the request body must keep moving */ \
	X(TO_CONNECT)		/* backend connect and TLS handshake (504) */ \
	X(TO_RESPONSE)		/* the backend's response head (504) */ \
	X(TO_STREAM)		/* silence in both directions while a message streams */ \
	X(TO_TUNNEL)		/* silence in both directions of an upgraded connection */ \
	X(TO_CLOSING)		/* a last response to leave, then the client's close */

enum conn_timeout {
#define X(n) n,
	CONN_TIMEOUTS(X)
#undef X
};

/*
 * What a step of the connection's state machine reports to conn.c, the only layer that
 * changes phases and tears down: >= 0 is progress (0 nothing moved, 1 moved), STEP_GOTO(p)
 * asks conn.c to enter phase p, and the negative codes ask it to end the connection with the
 * reason the step wrote into c->reason.
 */
#define STEP_CLOSE	(-1)		/* close now */
#define STEP_ABORT	(-2)		/* close with resets: a stream was cut, no clean end */
#define STEP_GOTO(p)	(16 + (int)(p))	/* enter phase p (its timer starts now) */
#define STEP_IS_GOTO(r)	((r) >= 16)
#define STEP_PHASE(r)	((enum conn_phase)((r) - 16))

struct conn {
	unsigned magic;
	struct ev_loop *loop;
	struct worker *w;
	struct conn *prev, *next;	/* all connections of this loop */
	struct config *cfg;		/* the configuration this connection started with */
	const struct cfg_listener *lcfg;
	struct half client, backend;
	enum conn_phase phase;		/* changed only by conn_set_phase() */
	ev_timer timer;
	ev_idle refeed;			/* pump.c: a half's held bytes are read after the next poll */
	ev_tstamp timer_at;		/* when the timer fires (absolute, ev_now clock) */
	ev_tstamp phase_start;		/* when the current phase (or connect) began */
	ev_tstamp last_activity;	/* last byte moved in either direction */
	char reason[192];		/* why the connection ends: owned here, never a pointer into freed state */

	struct sockaddr_storage client_addr; /* the real client (from the PROXY header, else peer) */
	char client_ip[64];
	bool https;			/* client used TLS (ours, or the PROXY v2 SSL TLV) */

	/* The request in flight (txn.c). */
	struct http1_body reqb;		/* request body framing (client -> backend) */
	struct http1_body respb;	/* response body framing (backend -> client) */
	enum resp_state rs;
	int status;			/* final status sent to the client, 0 none */
	bool resp_started;		/* bytes of a response reached client->out/fwd */
	bool client_http10;
	bool req_upgrade;
	bool req_head_method;
	bool expect_continue;
	bool got_continue;
	bool close_after;		/* close the client connection once this response is sent */
	bool rpc_channel;		/* RPC_IN_DATA / RPC_OUT_DATA counted as an open channel */
	size_t head_scanned;		/* http1_head_end: bytes of the request head searched so far */
	char method_buf[24];		/* the method, for response framing (HEAD) and metrics */
	uint64_t req_bytes;		/* request bytes from the client (head + body) */
	uint64_t resp_bytes_start;	/* client->nwritten when the request began */
	double req_start;		/* wall clock when the request head began */
	char *loginfo;			/* access.c: method, target, proto, referer, user-agent, user */
	const char *route_name;		/* the access log's ROUTE field: a backend, or route_tag */
	char route_tag[48];		/* "filter:proxyshell", "guard:user": who refused the request */
	uint64_t auth_ukey;		/* edge.c: the guard's key of credentials sent on, until the answer */
	uint64_t auth_ckey;		/* edge.c: the guard's key of the client address (0: not yet) */
	char auth_user[32];		/* edge.c: that account's name, for a block line */

	/* An idle authenticated connection to another backend, kept while the client talks to this one. */
	struct parked {
		struct half h;		/* fd -1: none; its watchers stopped */
		int bidx, server;
		struct config *bcfg;
		bool srv_counted;
	} parked;

	/* The backend connection (upstream.c). */
	int bidx;			/* backend index in cfg, -1 none */
	struct config *bcfg;		/* the configuration bidx refers to */
	int server;			/* server index */
	bool breusable;			/* the backend connection may carry another request */
	bool await_cookie;		/* RPC channel: server chosen by its cookie, once 48 body bytes are in */
	bool srv_counted;		/* counted in its server's active connections */
	int proto;			/* the request's protocol in its backend's protos, -1 none */
	int tries;			/* servers of order tried */
	int norder;
	uint8_t order[UPSTREAM_TRIES];	/* the servers to try, best first (rendezvous hashing) */
	uint8_t cookie[16];		/* an RPC channel's VirtualConnectionCookie, while pinned */
	struct srv *cookie_srv;		/* the server it is pinned to (servers.c), or NULL */
	uint64_t handled;		/* requests handled on this connection */
};

/* One event-loop thread: its listening sockets (SO_REUSEPORT) and its connections. */
struct worker {
	unsigned magic;
	int id;
	struct ev_loop *loop;
	pthread_t thread;
	ev_async wake;			/* main thread -> worker: a new listener set, drain, stop */
	struct listener *listeners;	/* the set in use */
	struct listener *pending;	/* a new set handed over by the main thread (under lock) */
	pthread_mutex_t lock;
	struct conn *conns;
	long nconns;
	bool draining, stopping;	/* what this worker has applied */
	bool paused;			/* accepting paused (max_connections) */
};

/* The process (main.c): shared by all workers; changed only by the main thread. */
struct relay_state {
	struct config *cfg;		/* the current configuration (new connections) */
	struct ev_loop *loop;		/* the main thread's loop: signals only */
	int draining;			/* atomic: SIGTERM received */
	int stopping;			/* atomic: close everything now */
	int handed_over;		/* atomic: a new process took the listening sockets (SIGUSR2) */
	long nconns;			/* atomic: client connections over all workers */
	long max_conns;			/* atomic: global.max_connections of the current configuration */
	int nworkers;
	struct worker *workers;
};
extern struct relay_state relay;

static inline bool relay_draining(void) { return __atomic_load_n(&relay.draining, __ATOMIC_ACQUIRE); }
/*
 * What health answers, the agent and `show info` report: draining, except after an upgrade's
 * hand-over, where the host goes on serving (the new process) and only this process drains.
 */
static inline bool
relay_health_draining(void)
{
	return relay_draining() && !__atomic_load_n(&relay.handed_over, __ATOMIC_ACQUIRE);
}

/*
 * Who may call whom (relay/README): conn.c -> txn.c -> admin.c, access.c, upstream.c, pump.c;
 * listener.c and worker.c -> conn.c. A lower layer reports with return codes (0 or 1, -1 with
 * errno, or the STEP_* codes above, with the reason in c->reason) and never frees or closes
 * what called it: conn.c alone changes phases (conn_set_phase) and tears down (conn_close).
 * So a pointer to a connection stays valid until the conn.c function that holds it returns.
 */

/* Writes why the connection ends into c->reason and returns code (STEP_CLOSE, STEP_ABORT). */
static inline int __attribute__((format(printf, 3, 4)))
step_why(struct conn *c, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(c->reason, sizeof(c->reason), fmt, ap);
	va_end(ap);
	return code;
}

/* conn.c */
const char *conn_phase_str(enum conn_phase p);
const char *conn_timeout_str(enum conn_timeout t);
/* Takes a connection the listener accepted; it owns the slot the listener reserved in relay.nconns. */
void conn_accept(struct listener *l, int fd, const struct sockaddr_storage *peer);
/*
 * The one teardown: logs the request in flight, closes both halves, frees c. reason is a
 * literal or c->reason. c is gone when it returns: the caller returns at once, and only
 * conn.c calls it (from a libev callback, or a worker's drain or stop).
 */
void conn_close(struct conn *c, const char *reason);
void conn_drain_idle(struct worker *w);
void conn_close_all(struct worker *w, const char *reason);

/* txn.c: one HTTP request/response exchange on a connection. */
/* The largest limits.max_headers the configuration accepts: the size of the parsers' arrays. */
#define TXN_MAX_HEADERS 1000
const char *txn_state_str(enum resp_state s);
int txn_head(struct conn *c);
int txn_active(struct conn *c);
int txn_tunnel(struct conn *c);
int txn_timeout(struct conn *c, enum conn_timeout t);
int txn_fail(struct conn *c, int status, const char *why);

/* txn_resp.c: the response half of an exchange. */
int txn_resp_head(struct conn *c);
int txn_resp_body(struct conn *c);
void txn_end(struct conn *c, const char *termination);

/* edge.c: Exchange protection for one request; txn.c answers what it refuses. */
struct edge_refusal {
	int status;			/* 403, 401 or 429 */
	bool close;			/* close the connection after the answer (NTLM) */
	char tag[48];			/* the access log's ROUTE field: "filter:<rule>", "guard:user" */
	char extra[160];		/* header lines for the answer (WWW-Authenticate, Retry-After) */
};
int edge_filter(struct conn *c, const struct http1_request *req, struct edge_refusal *r);
int edge_route(struct conn *c, const struct http1_request *req, size_t route, const struct cred *cr,
    struct edge_refusal *r);
void edge_response(struct conn *c, int status);

/* access.c: the access-log record of a request. */
void access_save(struct conn *c, const struct http1_request *req, const struct cred *cr);
void access_log(struct conn *c, const char *termination);
double access_clock(void);

/* pump.c: moving bytes between the halves; never closes the connection. */
typedef ssize_t (*pump_writer)(char *out, size_t room, const void *arg);
struct half *pump_peer(struct half *h);
void pump_half_open(struct half *h, int fd);
void pump_io_set(struct conn *c, ev_io *w, bool on);
bool pump_has_output(struct half *h);
void pump_arm(struct conn *c, bool hold_client);
int pump_flush(struct conn *c, struct half *dst);
void pump_trim(struct conn *c);
bool pump_out(struct half *h);
int pump_put(struct half *h, pump_writer fn, const void *arg);
void pump_close_half(struct conn *c, struct half *h);
int pump_read(struct conn *c, struct half *h);
ssize_t pump_feed(struct http1_body *b, struct half *src, struct half *dst);

/* listener.c */
struct listener {
	unsigned magic;
	struct listener *next;
	struct worker *w;
	const struct cfg_listener *lcfg;	/* in cfg */
	struct config *cfg;			/* one reference per set (held by the first listener) */
	int fd;
	bool moved;				/* the fd now belongs to a newer set */
	struct listener *took;			/* while building: the current listener whose fd this took */
	ev_io io;
	ev_timer backoff;
	char name[64];
};
int listener_build(struct config *cfg, struct listener **sets, char *err, size_t errlen);
void listener_set_start(struct listener *set);
void listener_set_free(struct listener *set);
void listener_sets_discard(struct listener **sets, int n);
void listener_close_traffic(struct worker *w);
void listener_report(struct listener *set);
int listener_addr(const struct listener *l, char *out, size_t outlen);

/* worker.c */
int worker_init_all(int n);
int worker_start_all(int n, struct listener **sets, char *err, size_t errlen);
void worker_hand_over(struct listener **sets);
void worker_wake_all(void);
void worker_join_all(void);

/* upstream.c: the backend half: server choice, connect, TLS, PROXY header. */
#define UPSTREAM_NONE_USABLE (-2)	/* no server of the backend may take the request */
int upstream_open(struct conn *c, const char *key, size_t keylen, const uint8_t *cookie);
int upstream_retry(struct conn *c);
int upstream_connected(struct conn *c);
void upstream_failed(struct conn *c, const char *kind);
void upstream_release(struct conn *c);
void upstream_unpin(struct conn *c);
void upstream_close(struct conn *c);
int upstream_switch(struct conn *c, int bidx);
void upstream_close_parked(struct conn *c);
const char *upstream_name(const struct conn *c);

/* admin.c: what exrelay answers itself. */
#define ADMIN_ANSWERS(X) \
	X(ADMIN_NONE)		/* not for exrelay: route it */ \
	X(ADMIN_HEALTH)		/* /health, or the listener's health_path */ \
	X(ADMIN_METRICS)	/* /metrics */ \
	X(ADMIN_NOT_FOUND)	/* another path on the admin port (404) */ \
	X(ADMIN_BAD_METHOD)	/* not GET or HEAD on the admin port (405) */

enum admin_answer {
#define X(n) n,
	ADMIN_ANSWERS(X)
#undef X
};
const char *admin_answer_str(enum admin_answer a);
enum admin_answer admin_route(const struct cfg_listener *l, const struct http1_request *req);
ssize_t admin_write(enum admin_answer a, char *out, size_t cap, bool head_only, bool close);
void admin_agent_reply(int fd, const struct config *cfg);

/* sock.c */
int sock_set_nodelay(int fd);
/*
 * True when err says this host ran short (descriptors, memory, local ports), not that the
 * peer failed: such an error says nothing about a server's health.
 */
bool sock_local_error(int err);

#endif
