/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * relay.h: the daemon's shared types (a connection and its two halves, listeners, the
 * process state) and the prototypes of conn.c, listener.c, upstream.c, admin.c, sock.c
 * and main.c, grouped per file.
 */
#ifndef EXRELAY_RELAY_H
#define EXRELAY_RELAY_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>
#include <sys/socket.h>

#include <ev.h>

#include "buf.h"
#include "cfg.h"
#include "http1.h"
#include "transport.h"

#define CONN_MAGIC 0x636f6e6eU	/* "conn" */

/* One side of a connection: the client, or the backend it is relayed to. */
struct half {
	struct conn *c;
	int fd;				/* -1: not open */
	const struct transport_ops *ops;
	void *tls;			/* transport state (TLS session), or NULL */
	int want;			/* EV_READ or EV_WRITE: what the transport waits for after EAGAIN */
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

struct listener;

struct conn {
	unsigned magic;
	struct ev_loop *loop;
	struct worker *w;
	struct conn *prev, *next;	/* all connections of this loop */
	struct config *cfg;		/* the configuration this connection started with */
	const struct cfg_listener *lcfg;
	struct listener *listener;
	struct half client, backend;
	enum conn_phase phase;
	ev_timer timer;
	ev_tstamp phase_start;		/* when the current phase (or connect) began */
	ev_tstamp last_activity;	/* last byte moved in either direction */

	struct sockaddr_storage peer;	/* the TCP peer */
	struct sockaddr_storage client_addr; /* the real client (from the PROXY header, else peer) */
	char client_ip[64];
	bool https;			/* client used TLS (ours, or the PROXY v2 SSL TLV) */

	/* The request in flight. */
	struct http1_body reqb;		/* request body framing (client -> backend) */
	struct http1_body respb;	/* response body framing (backend -> client) */
	enum resp_state rs;
	int status;			/* final status sent to the client, 0 none */
	bool resp_started;		/* bytes of a response reached client->out/fwd */
	bool client_http10;
	bool req_keep_alive;
	bool req_upgrade;
	bool req_head_method;
	bool expect_continue;
	bool got_continue;
	bool close_after;		/* close the client connection once this response is sent */
	bool rpc_channel;		/* RPC_IN_DATA / RPC_OUT_DATA counted as an open channel */
	char method_buf[24];		/* the method, for response framing (HEAD) and metrics */
	uint64_t req_bytes;		/* request bytes from the client (head + body) */
	uint64_t resp_bytes_start;	/* client->nwritten when the request began */
	double req_start;		/* wall clock when the request head began */
	char *loginfo;			/* method, target, proto, referer, user-agent: NUL-separated copy */
	const char *route_name;

	/* The backend connection. */
	int bidx;			/* backend index in cfg, -1 none */
	struct config *bcfg;		/* the configuration bidx refers to */
	int server;			/* server index */
	bool breusable;			/* the backend connection may carry another request */
	bool await_cookie;		/* RPC channel: server chosen by its cookie, once 48 body bytes are in */
	int tries;			/* servers tried for this connection */
	uint64_t handled;		/* requests handled on this connection */
};

/* One event-loop thread: its listening sockets (SO_REUSEPORT) and its connections. */
struct worker {
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
	long nconns;			/* atomic: client connections over all workers */
	long max_conns;			/* atomic: global.max_connections of the current configuration */
	int nworkers;
	struct worker *workers;
};
extern struct relay_state relay;

static inline bool relay_draining(void) { return __atomic_load_n(&relay.draining, __ATOMIC_ACQUIRE); }

/* conn.c */
const char *conn_phase_str(enum conn_phase p);
void conn_accept(struct listener *l, int fd, const struct sockaddr_storage *peer);
void conn_close(struct conn *c, const char *reason);
void conn_drain_idle(struct worker *w);
void conn_close_all(struct worker *w, const char *reason);

/* pump.c */
struct half *pump_peer(struct half *h);
void pump_io_set(struct conn *c, ev_io *w, bool on);
bool pump_has_output(struct half *h);
void pump_arm(struct conn *c);
int pump_flush(struct conn *c, struct half *dst);
void pump_trim(struct conn *c);
bool pump_out(struct half *h);
char *pump_out_tail(struct half *h, size_t *room);
void pump_close_half(struct conn *c, struct half *h);
int pump_read(struct conn *c, struct half *h);

/* listener.c */
struct listener {
	struct listener *next;
	struct worker *w;
	const struct cfg_listener *lcfg;	/* in cfg */
	struct config *cfg;			/* one reference per set (held by the first listener) */
	int fd;
	bool moved;				/* the fd now belongs to a newer set */
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
void listener_conn_closed(struct worker *w);

/* worker.c */
int worker_init_all(int n);
int worker_start_all(int n, struct listener **sets, char *err, size_t errlen);
void worker_hand_over(struct listener **sets);
void worker_wake_all(void);
void worker_join_all(void);

/* upstream.c */
int upstream_connect(struct conn *c);
int upstream_open(struct conn *c, size_t first);
int upstream_retry(struct conn *c);
int upstream_connected(struct conn *c, const char **why);
void upstream_close(struct conn *c);
size_t upstream_pick(const struct conn *c, const struct cfg_backend *b, const char *key, size_t keylen);

/* admin.c */
struct metrics_listener;
void admin_agent_reply(int fd);
ssize_t admin_health(char *out, size_t cap, bool head_only, bool close);
ssize_t admin_metrics(char *out, size_t cap, bool close);
void metrics_conn_open(const char *listener);
void metrics_conn_close(const char *listener);
void metrics_proxy_error(const char *listener);
void metrics_request(const char *route, int code);
void metrics_bytes(uint64_t in, uint64_t out);
void metrics_rpc_channel(const char *method, int delta);
void metrics_backend_error(const char *backend, const char *kind);

/* sock.c */
int sock_set_nodelay(int fd);

#endif
