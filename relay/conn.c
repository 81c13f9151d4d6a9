/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * conn.c: one client connection from accept to close: its lifecycle and phases, its timer,
 * the PROXY header and the client's TLS handshake, the run loop that steps the exchange
 * (txn.c) until nothing moves, the libev callbacks, the lingering close, and the one teardown,
 * conn_close() (DESIGN.md section 2).
 *
 * A connection has two halves. Bytes read from a half land in its `in` buffer; the peer's
 * `fwd` says how many of them are cleared to be written on. Every event ends in conn_run(),
 * which steps the state machine until nothing moves, then lets pump.c set the watchers from
 * the state (a full buffer stops its reader, a drained one restarts it). The steps report with
 * codes (relay.h); only this file changes a phase (conn_set_phase) or ends a connection.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "addr.h"
#include "proxyproto.h"
#include "relay.h"
#include "splice.h"
#include "tls.h"

static void conn_run(struct conn *c);

/* Seconds an answered request's body may stand still before the connection is closed. */
#define EARLY_ANSWER_GRACE 3.0

ENUM_STR(conn_phase_str, enum conn_phase, CONN_PHASES)
ENUM_STR(conn_timeout_str, enum conn_timeout, CONN_TIMEOUTS)

/* --- teardown --------------------------------------------------------------------------- */

void
conn_close(struct conn *c, const char *reason)
{
	CHECK_OBJ(c, CONN_MAGIC);
	if (log_enabled(LVL_DEBUG))
		log_debug("close client=%s phase=%s reason=\"%s\" handled=%llu", c->client_ip,
		    conn_phase_str(c->phase), reason, (unsigned long long)c->handled);
	txn_end(c, reason);
	metrics_bytes(c->client.nread, c->client.nwritten);
	upstream_close(c);
	upstream_close_parked(c);
	pump_close_half(c, &c->client);
	ev_timer_stop(c->loop, &c->timer);
	ev_idle_stop(c->loop, &c->refeed);
	struct worker *w = c->w;
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	metrics_conn_close(c->lcfg->name);
	config_unref(c->cfg);
	c->magic = 0;
	free(c);
	w->nconns--;
	__atomic_sub_fetch(&relay.nconns, 1, __ATOMIC_RELAXED);
}

/*
 * Ends a connection whose stream was cut (the backend reset, broke framing, or ended a TLS
 * stream without close_notify; one side of a tunnel reset): both sides get a reset, never a
 * clean end they could take for a complete message.
 */
static void
conn_abort(struct conn *c, const char *reason)
{
	struct linger lg = { 1, 0 };

	pump_flush(c, &c->client);
	if (c->client.fd >= 0)
		setsockopt(c->client.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	if (c->backend.fd >= 0)
		setsockopt(c->backend.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	conn_close(c, reason);
}

/* --- timers ----------------------------------------------------------------------------- */

static double
backend_idle(const struct conn *c)
{
	return c->bidx >= 0 && c->bcfg ? c->bcfg->backends[c->bidx].idle_timeout : 60;
}

/* The deadline of the current phase (absolute, ev_now clock), and what it waits for. */
static ev_tstamp
conn_deadline(const struct conn *c, enum conn_timeout *t)
{
	const struct config *cfg = c->cfg;
	double idle = backend_idle(c);

	switch (c->phase) {
	case PH_PROXY: *t = TO_PROXY_HEADER; return c->phase_start + cfg->timeouts.proxy_header;
	case PH_TLS: *t = TO_TLS_HANDSHAKE; return c->phase_start + cfg->timeouts.tls_handshake;
	case PH_IDLE: *t = TO_CLIENT_IDLE; return c->phase_start + cfg->timeouts.client_idle;
	case PH_HEAD: *t = TO_REQUEST_HEAD; return c->phase_start + cfg->timeouts.request_head;
	case PH_TUNNEL: *t = TO_TUNNEL; return c->last_activity + idle;
	case PH_CLOSING: *t = TO_CLOSING; return c->last_activity + (c->client.shut ? 2 : 10);
	case PH_ACTIVE: break;
	}
	if (c->await_cookie) {
		*t = TO_RPC_COOKIE;
		return c->phase_start + cfg->timeouts.request_head;
	}
	if (c->rs == RS_DONE) {
		*t = TO_BODY_NOT_TAKEN;
		return c->last_activity + (idle < EARLY_ANSWER_GRACE ? idle : EARLY_ANSWER_GRACE);
	}
	if (c->backend.connecting) {
		*t = TO_CONNECT;
		return c->phase_start + cfg->timeouts.connect;
	}
	*t = c->rs == RS_HEAD && !c->resp_started ? TO_RESPONSE : TO_STREAM;
	return c->last_activity + idle;
}

/*
 * Makes the timer fire no later than the current deadline. A deadline that moved later is
 * left to the callback, which re-arms (activity moves deadlines on every byte).
 */
static void
conn_timer_sync(struct conn *c)
{
	enum conn_timeout t;
	ev_tstamp at = conn_deadline(c, &t), now = ev_now(c->loop);

	if (ev_is_active(&c->timer) && at >= c->timer_at)
		return;
	if (at < now + 0.001)
		at = now + 0.001;
	ev_timer_stop(c->loop, &c->timer);
	ev_timer_set(&c->timer, at - now, 0.);
	ev_timer_start(c->loop, &c->timer);
	c->timer_at = at;
}

/* The only way a connection changes phase: its timer starts over. */
static void
conn_set_phase(struct conn *c, enum conn_phase p)
{
	c->phase = p;
	c->phase_start = ev_now(c->loop);
	if (p == PH_CLOSING)
		c->last_activity = c->phase_start;
	ev_timer_stop(c->loop, &c->timer);
	conn_timer_sync(c);
}

/* Acts on a step's code: a phase change, or the end. False when c is gone. */
static bool
conn_apply(struct conn *c, int r)
{
	if (r == STEP_CLOSE) {
		conn_close(c, c->reason);
		return false;
	}
	if (r == STEP_ABORT) {
		conn_abort(c, c->reason);
		return false;
	}
	ASSERT(r >= 0);
	if (STEP_IS_GOTO(r))
		conn_set_phase(c, STEP_PHASE(r));
	return true;
}

/* The connection's own timeouts; those of an exchange go to txn.c. */
static int
conn_timeout(struct conn *c, enum conn_timeout t)
{
	switch (t) {
	case TO_PROXY_HEADER:
		log_info("client=%s PROXY header timeout", c->client_ip);
		metrics_proxy_error(c->lcfg->name);
		return step_why(c, STEP_CLOSE, "proxy header timeout");
	case TO_TLS_HANDSHAKE:
		log_info("client=%s TLS handshake timeout", c->client_ip);
		return step_why(c, STEP_CLOSE, "TLS handshake timeout");
	case TO_CLIENT_IDLE:
		return step_why(c, STEP_CLOSE, "client idle timeout");
	case TO_TUNNEL:
		return step_why(c, STEP_CLOSE, "tunnel idle timeout");
	case TO_CLOSING:
		return step_why(c, STEP_CLOSE, "closing timeout");
	case TO_REQUEST_HEAD:
	case TO_RPC_COOKIE:
	case TO_BODY_NOT_TAKEN:
	case TO_CONNECT:
	case TO_RESPONSE:
	case TO_STREAM:
		return txn_timeout(c, t);
	}
	WRONG("a timeout kind without an action");
}

static void
conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	enum conn_timeout t;
	(void)loop; (void)revents;

	CHECK_OBJ(c, CONN_MAGIC);
	ev_tstamp at = conn_deadline(c, &t);
	if (at > ev_now(c->loop) + 0.0005) {
		conn_timer_sync(c);	/* activity moved the deadline */
		return;
	}
	log_debug("client=%s timeout %s in phase %s", c->client_ip, conn_timeout_str(t), conn_phase_str(c->phase));
	if (conn_apply(c, conn_timeout(c, t)))
		conn_run(c);
}

/* --- the PROXY header and the client's TLS handshake ------------------------------------ */

static bool
looks_like_proxy(const char *p, size_t n)
{
	static const char v1[] = "PROXY ";
	static const char v2[] = "\r\n\r\n\0\r\nQUIT\n";
	size_t k1 = n < 6 ? n : 6, k2 = n < 12 ? n : 12;

	return memcmp(p, v1, k1) == 0 || memcmp(p, v2, k2) == 0;
}

/*
 * After the PROXY header (or without one): a TLS listener starts its handshake, handing
 * GnuTLS the bytes that arrived behind the header; a plaintext one waits for a request.
 */
static int
conn_after_proxy(struct conn *c)
{
	struct half *cl = &c->client;

	if (!c->lcfg->tls)
		return STEP_GOTO(PH_IDLE);
	if (tls_start_server(cl, c->lcfg->tls, cl->in ? buf_head(cl->in) : NULL, buf_len(cl->in)) == -1) {
		log_error("client=%s cannot start TLS", c->client_ip);
		return step_why(c, STEP_CLOSE, "TLS start failed");
	}
	if (cl->in)
		cl->in->r = cl->in->w;
	cl->handshaking = true;
	cl->want = EV_READ;
	c->https = true;
	return STEP_GOTO(PH_TLS);
}

/* Steps the client's TLS handshake. */
static int
conn_step_tls(struct conn *c)
{
	const char *why = NULL;
	int r = tls_handshake(&c->client, &why);

	if (r == 0)
		return 0;
	metrics_tls_handshake(c->lcfg->name, r > 0, r > 0 && tls_resumed(&c->client));
	if (r < 0) {
		log_info("client=%s %s", c->client_ip, why ? why : "TLS handshake failed");
		return step_why(c, STEP_CLOSE, "TLS handshake failed");
	}
	c->client.handshaking = false;
	log_debug("client=%s %s %s%s", c->client_ip, tls_version_name(&c->client), tls_cipher_name(&c->client),
	    tls_resumed(&c->client) ? " (resumed)" : "");
	return STEP_GOTO(PH_IDLE);
}

/* Takes the client's address (and TLS) from a parsed PROXY header. */
static void
conn_proxied(struct conn *c, const struct pp_header *h)
{
	if (h->command == PP_CMD_PROXY && (h->family == AF_INET || h->family == AF_INET6)) {
		memcpy(&c->client_addr, &h->src, sizeof(h->src));
		addr_unmap(&c->client_addr);
		addr_text(&c->client_addr, c->client_ip, sizeof(c->client_ip));
	}
	if (h->version == 2 && pp_client_used_tls(h))
		c->https = true;
}

/* Reads the PROXY header (PH_PROXY). */
static int
conn_step_proxy(struct conn *c)
{
	struct half *cl = &c->client;
	struct pp_header h;
	size_t n = buf_len(cl->in);
	const char *why = NULL;

	if (n == 0)
		return cl->eof ? step_why(c, STEP_CLOSE, "client closed before the PROXY header") : 0;
	if (c->lcfg->proxy_protocol == PPM_OPTIONAL && !looks_like_proxy(buf_head(cl->in), n))
		return conn_after_proxy(c);
	ssize_t r = pp_parse_ex(buf_head(cl->in), n, &h, &why);
	if (r == PP_NEED_MORE && !cl->eof && buf_room(cl->in) > 0)
		return 0;
	if (r < 0) {
		log_info("client=%s listener=%s bad PROXY header: %s", c->client_ip, c->lcfg->name,
		    r == PP_NEED_MORE ? "closed inside the header" : why ? why : pp_strerror(r));
		metrics_proxy_error(c->lcfg->name);
		return step_why(c, STEP_CLOSE, "bad PROXY header");
	}
	conn_proxied(c, &h);
	cl->in->r += (size_t)r;
	return conn_after_proxy(c);
}

/* --- the lingering close and the run loop ----------------------------------------------- */

/*
 * After a last response: half-close, then read and drop what the client still sends until it
 * closes (or the closing timer ends), so that closing never resets the connection before
 * the client has read the response (a "lingering close").
 */
static int
conn_step_closing(struct conn *c)
{
	struct half *cl = &c->client;

	if (pump_flush(c, cl) == -1)
		return step_why(c, STEP_CLOSE, "client write failed");
	if (pump_has_output(cl))
		return 0;
	if (!cl->shut) {
		if (cl->ops->shutdown_wr(cl) == -1 && errno == EAGAIN) {
			pump_io_set(c, &cl->wio, true);	/* TLS: close_notify first, when it fits */
			return 0;
		}
		cl->shut = true;
		c->last_activity = ev_now(c->loop);
	}
	if (cl->in)
		cl->in->r = cl->in->w;
	return cl->eof ? step_why(c, STEP_CLOSE, "response sent") : 0;
}

/* Sets the watchers from the state (a client is not read while a last answer leaves). */
static void
conn_arm(struct conn *c)
{
	pump_trim(c);
	pump_arm(c, c->phase == PH_CLOSING && !c->client.shut);
}

/* Steps the state machine until nothing moves; then sets the timer and the watchers. */
static void
conn_run(struct conn *c)
{
	int guard;

	CHECK_OBJ(c, CONN_MAGIC);
	/* Bounded, so one connection never holds its worker for long (pipelined requests). */
	for (guard = 0; guard < 4096; guard++) {
		int r = 0;

		switch (c->phase) {
		case PH_PROXY: r = conn_step_proxy(c); break;
		case PH_TLS: r = conn_step_tls(c); break;
		case PH_IDLE:
		case PH_HEAD: r = txn_head(c); break;
		case PH_ACTIVE: r = txn_active(c); break;
		case PH_TUNNEL: r = txn_tunnel(c); break;
		case PH_CLOSING: r = conn_step_closing(c); break;
		}
		if (!conn_apply(c, r))
			return;
		if (r == 0)
			break;
	}
	if (guard == 4096)
		ev_feed_event(c->loop, &c->client.wio, EV_WRITE);	/* more to do: come back soon */
	conn_timer_sync(c);
	conn_arm(c);
}

/* --- I/O callbacks ---------------------------------------------------------------------- */

/* The backend connect (or its TLS handshake) made progress or failed. */
static void
conn_backend_setup(struct conn *c)
{
	int r = upstream_connected(c);

	if (r == 0) {
		conn_arm(c);
		return;
	}
	if (r == UPSTREAM_NONE_USABLE) {
		metrics_backend_error(c->bcfg->backends[c->bidx].name, "no_server");
		if (!conn_apply(c, txn_fail(c, 503, c->reason)))
			return;
	} else if (r < 0) {
		/* A TLS failure (verification, handshake) is the server's answer: no other server is tried. */
		bool tls = c->backend.tls != NULL;
		metrics_backend_error(c->bcfg->backends[c->bidx].name, tls ? "tls" : "connect");
		upstream_failed(c, tls ? "tls" : "connect");
		if (!tls && upstream_retry(c) == 0) {
			metrics_backend_error(c->bcfg->backends[c->bidx].name, "retry");
			log_info("client=%s %s; trying the next server", c->client_ip, c->reason);
			conn_set_phase(c, PH_ACTIVE);	/* the connect timer starts over */
			return;
		}
		if (!conn_apply(c, txn_fail(c, 502, c->reason)))
			return;
	}
	conn_run(c);
}

/* Reads from h: spliced straight to the other half when splice.c can, else into h's buffer. */
static int
conn_read(struct conn *c, struct half *h)
{
	int r = splice_read(c, h);

	return r == SPLICE_NO ? pump_read(c, h) : r;
}

/*
 * A half's socket is readable or writable. During the backend's connect or a TLS handshake
 * the event steps the setup; otherwise it reads (a read event, or a write event the
 * transport's last read waited for) and runs the connection.
 */
static void
half_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct half *h = w->data;
	struct conn *c = h->c;
	int r = 0;
	(void)loop;

	CHECK_OBJ(c, CONN_MAGIC);
	if (h->connecting) {
		conn_backend_setup(c);
		return;
	}
	if (!h->handshaking && ((revents & EV_READ) || h->read_wants_write))
		r = conn_read(c, h);
	if (r < 0)
		conn_close(c, "out of memory");
	else if (r == 1 || (revents & EV_WRITE) || h->handshaking)
		conn_run(c);
	else
		conn_arm(c);	/* nothing read: a TLS read may wait for writability */
}

/*
 * After a poll: a half whose transport holds bytes the socket will not signal is read now,
 * in turn with the connections the poll found ready (pump.c's arm_pending starts this).
 */
static void
conn_refeed_cb(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct conn *c = w->data;
	struct half *hs[2] = { &c->client, &c->backend };
	(void)revents;

	CHECK_OBJ(c, CONN_MAGIC);
	ev_idle_stop(loop, w);
	for (int i = 0; i < 2; i++)
		if (hs[i]->fd >= 0 && ev_is_active(&hs[i]->rio) && hs[i]->ops->pending(hs[i]))
			ev_feed_event(loop, &hs[i]->rio, EV_READ);
}

/* Sets up one half's watchers; the socket comes with pump_half_open. */
static void
conn_half_init(struct conn *c, struct half *h)
{
	h->c = c;
	h->fd = -1;
	h->ops = &sock_ops;
	ev_io_init(&h->rio, half_io_cb, -1, EV_READ);
	ev_io_init(&h->wio, half_io_cb, -1, EV_WRITE);
	h->rio.data = h;
	h->wio.data = h;
}

/* --- accepting, draining, stopping ------------------------------------------------------ */

/* The first phase of a new connection: PROXY header, TLS, or a request. */
static int
conn_first_phase(struct conn *c, const struct sockaddr_storage *peer)
{
	if (c->lcfg->proxy_protocol == PPM_OFF)
		return conn_after_proxy(c);
	if (config_trusted(c->lcfg, (const struct sockaddr *)peer))
		return STEP_GOTO(PH_PROXY);
	if (c->lcfg->proxy_protocol == PPM_OPTIONAL)
		return conn_after_proxy(c);
	log_info("client=%s listener=%s PROXY header required from an untrusted peer", c->client_ip,
	    c->lcfg->name);
	metrics_proxy_error(c->lcfg->name);
	return step_why(c, STEP_CLOSE, "untrusted peer");
}

void
conn_accept(struct listener *l, int fd, const struct sockaddr_storage *peer)
{
	struct conn *c = calloc(1, sizeof(*c));

	CHECK_OBJ(l, LISTENER_MAGIC);
	if (!c) {
		close(fd);
		__atomic_sub_fetch(&relay.nconns, 1, __ATOMIC_RELAXED);	/* the listener's reservation */
		return;
	}
	c->magic = CONN_MAGIC;
	c->w = l->w;
	c->loop = l->w->loop;
	c->cfg = config_ref(l->cfg);
	c->lcfg = l->lcfg;
	c->bidx = -1;
	c->server = -1;
	memcpy(&c->client_addr, peer, sizeof(*peer));
	addr_unmap(&c->client_addr);
	addr_text(&c->client_addr, c->client_ip, sizeof(c->client_ip));
	sock_set_nodelay(fd);
	conn_half_init(c, &c->client);
	conn_half_init(c, &c->backend);
	conn_half_init(c, &c->parked.h);
	pump_half_open(&c->client, fd);
	ev_init(&c->timer, conn_timeout_cb);
	ev_idle_init(&c->refeed, conn_refeed_cb);
	ev_set_priority(&c->refeed, EV_MAXPRI);	/* runs after every poll, before the I/O it found */
	c->refeed.data = c;
	c->timer.data = c;
	c->next = c->w->conns;
	if (c->w->conns)
		c->w->conns->prev = c;
	c->w->conns = c;
	c->w->nconns++;	/* relay.nconns: the listener reserved this connection's slot */
	metrics_conn_open(c->lcfg->name);
	c->last_activity = ev_now(c->loop);
	if (conn_apply(c, conn_first_phase(c, peer)))
		conn_arm(c);
}

/* Draining: idle keep-alive connections close now; the others after their exchange. */
void
conn_drain_idle(struct worker *w)
{
	struct conn *c = w->conns, *next;

	CHECK_OBJ(w, WORKER_MAGIC);
	for (; c; c = next) {
		next = c->next;
		if (c->phase == PH_IDLE && c->handled > 0 && buf_len(c->client.in) == 0)
			conn_close(c, "draining");
		else
			c->close_after = true;
	}
}

void
conn_close_all(struct worker *w, const char *reason)
{
	CHECK_OBJ(w, WORKER_MAGIC);
	while (w->conns)
		conn_close(w->conns, reason);
}
