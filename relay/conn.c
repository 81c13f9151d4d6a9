/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * conn.c: one client connection from accept to close: the PROXY header, request heads,
 * routing, and relaying bodies both ways with backpressure (DESIGN.md section 2).
 *
 * A connection has two halves. Bytes read from a half land in its `in` buffer; the peer's
 * `fwd` says how many of them are cleared to be written on (the current message's body, as
 * the framing state accepted it). Heads are parsed in place, rebuilt into the peer's `out`
 * buffer, then dropped from `in`. Every event ends in conn_run(), which steps the state
 * machine until nothing moves, then lets pump.c set the watchers from the state (a full buffer
 * stops its reader, a drained one restarts it). One teardown: conn_close().
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "proxyproto.h"
#include "relay.h"
#include "rewrite.h"
#include "route.h"
#include "tls.h"

static void conn_run(struct conn *c);
static void conn_timer_update(struct conn *c);
static int conn_closing(struct conn *c);
static void conn_abort(struct conn *c, const char *reason);

/* Seconds an answered request's body may stand still before the connection is closed. */
#define EARLY_ANSWER_GRACE 3.0

static const char *const phase_names[] = {
#define X(n) #n,
	CONN_PHASES(X)
#undef X
};

const char *
conn_phase_str(enum conn_phase p)
{
	return phase_names[p];
}

static double
wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Writes the address as text, IPv4-mapped IPv6 as plain IPv4. */
static void
addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)cap);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)cap);
	else
		snprintf(out, cap, "unknown");
}

/* Turns an IPv4-mapped IPv6 address into AF_INET in place. */
static void
addr_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in s4;

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = s6->sin6_port;
	memcpy(&s4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &s4, sizeof(s4));
}

static void
log_request(struct conn *c, const char *termination)
{
	const char *f[6] = { NULL, NULL, NULL, NULL, NULL, NULL };
	char *p = c->loginfo;
	char server[128] = "-";

	if (!p)
		return;
	for (int i = 0; i < 6; i++) {
		f[i] = *p ? p : NULL;
		p += strlen(p) + 1;
	}
	if (c->bidx >= 0 && c->bcfg && c->server >= 0)
		snprintf(server, sizeof(server), "%s", c->bcfg->backends[c->bidx].servers[c->server].text);
	struct access_record r = {
		.client = c->client_ip, .user = f[5], .start = c->req_start,
		.method = f[0], .target = f[1], .proto = f[2], .referer = f[3], .user_agent = f[4],
		.status = c->status, .bytes_out = c->client.nwritten - c->resp_bytes_start,
		.bytes_in = c->req_bytes, .duration_ms = (wall_now() - c->req_start) * 1000.0,
		.route = c->route_name ? c->route_name : "-", .server = server,
		.termination = termination,
		.tls_version = c->client.tls ? tls_version_name(&c->client) : NULL,
		.tls_cipher = c->client.tls ? tls_cipher_name(&c->client) : NULL,
	};
	log_access(&r);
	metrics_request(c->route_name ? c->route_name : "-", c->status);
	free(c->loginfo);
	c->loginfo = NULL;
}

/* Ends the request in flight (access log, counters). */
static void
conn_end_request(struct conn *c, const char *termination)
{
	if (c->loginfo)
		log_request(c, termination);
	if (c->rpc_channel) {
		metrics_rpc_channel(c->method_buf, -1);
		c->rpc_channel = false;
	}
	c->rs = RS_NONE;
}

void
conn_close(struct conn *c, const char *reason)
{
	assert(c->magic == CONN_MAGIC);
	if (log_enabled(LVL_DEBUG))
		log_debug("close client=%s phase=%s reason=\"%s\" handled=%llu", c->client_ip,
		    conn_phase_str(c->phase), reason, (unsigned long long)c->handled);
	conn_end_request(c, reason);
	metrics_bytes(c->client.nread, c->client.nwritten);
	pump_close_half(c, &c->backend);
	pump_close_half(c, &c->client);
	ev_timer_stop(c->loop, &c->timer);
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
	listener_conn_closed(w);
}

/*
 * Answers with a response made by exrelay (only when no response byte was sent yet), then
 * closes the client connection once it is written. Backend connection closed.
 * Returns -1 when the connection is already closed (c is gone), else 1 (phase PH_CLOSING).
 */
static int
conn_fail(struct conn *c, int status, const char *why)
{
	char reason[256];

	/* why may live in the backend's TLS state, freed below with the backend half. */
	snprintf(reason, sizeof(reason), "%s", why);
	why = reason;
	if (status >= 500)
		log_warn("client=%s %d: %s", c->client_ip, status, why);
	else
		log_info("client=%s %d: %s", c->client_ip, status, why);
	pump_close_half(c, &c->backend);
	if (c->resp_started || !pump_out(&c->client)) {
		conn_close(c, why);
		return -1;
	}
	size_t room;
	char *o = pump_out_tail(&c->client, &room);
	ssize_t n = rewrite_status_response(o, room, status, true, NULL, NULL, c->req_head_method);
	if (n < 0) {
		conn_close(c, why);
		return -1;
	}
	c->client.out->w += (size_t)n;
	c->client.fwd = 0;
	c->status = status;
	c->resp_started = true;
	c->phase = PH_CLOSING;
	conn_timer_update(c);
	return 1;
}

/* --- timers ----------------------------------------------------------------------------- */

static double
backend_idle(const struct conn *c)
{
	return c->bidx >= 0 && c->bcfg ? c->bcfg->backends[c->bidx].idle_timeout : 60;
}

/* The deadline of the current phase (absolute, ev_now clock). */
static ev_tstamp
conn_deadline(const struct conn *c)
{
	const struct config *cfg = c->cfg;

	switch (c->phase) {
	case PH_PROXY: return c->phase_start + cfg->timeouts.proxy_header;
	case PH_TLS: return c->phase_start + cfg->timeouts.tls_handshake;
	case PH_IDLE: return c->phase_start + cfg->timeouts.client_idle;
	case PH_HEAD: return c->phase_start + cfg->timeouts.request_head;
	case PH_ACTIVE:
		if (c->await_cookie)
			return c->phase_start + cfg->timeouts.request_head;
		if (c->rs == RS_DONE)	/* answered; the request body must keep moving */
			return c->last_activity + (backend_idle(c) < EARLY_ANSWER_GRACE ? backend_idle(c) : EARLY_ANSWER_GRACE);
		if (c->backend.connecting)
			return c->phase_start + cfg->timeouts.connect;
		return c->last_activity + backend_idle(c);
	case PH_TUNNEL: return c->last_activity + backend_idle(c);
	case PH_CLOSING: return c->last_activity + (c->client.shut ? 2 : 10);
	}
	return c->phase_start;
}

static void
conn_timer_update(struct conn *c)
{
	ev_tstamp left = conn_deadline(c) - ev_now(c->loop);

	ev_timer_stop(c->loop, &c->timer);
	ev_timer_set(&c->timer, left > 0.001 ? left : 0.001, 0.);
	ev_timer_start(c->loop, &c->timer);
}

static void
conn_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	(void)loop; (void)revents;

	assert(c->magic == CONN_MAGIC);
	if (conn_deadline(c) > ev_now(c->loop) + 0.0005) {
		conn_timer_update(c);	/* activity moved the deadline */
		return;
	}
	switch (c->phase) {
	case PH_PROXY:
		log_info("client=%s PROXY header timeout", c->client_ip);
		metrics_proxy_error(c->lcfg->name);
		conn_close(c, "proxy header timeout");
		return;
	case PH_TLS:
		log_info("client=%s TLS handshake timeout", c->client_ip);
		conn_close(c, "TLS handshake timeout");
		return;
	case PH_IDLE:
		conn_close(c, "client idle timeout");
		return;
	case PH_HEAD:
		if (conn_fail(c, 408, "request head timeout") < 0)
			return;
		break;
	case PH_ACTIVE:
		if (c->rs == RS_DONE) {
			/* The backend answered early and stopped taking the request body: end here. */
			log_info("client=%s backend %s answered but stopped reading the request body; closing",
			    c->client_ip, c->bcfg ? c->bcfg->backends[c->bidx].name : "-");
			conn_end_request(c, "request body not taken");
			upstream_close(c);
			conn_closing(c);
		} else if (c->await_cookie) {
			if (conn_fail(c, 408, "no RPC channel cookie in time") < 0)
				return;
		} else if (c->backend.connecting) {
			metrics_backend_error(c->bcfg->backends[c->bidx].name, "connect_timeout");
			if (conn_fail(c, 504, "backend connect timeout") < 0)
				return;
		} else if (c->rs == RS_HEAD && !c->resp_started) {
			metrics_backend_error(c->bcfg->backends[c->bidx].name, "timeout");
			if (conn_fail(c, 504, "backend response timeout") < 0)
				return;
		} else {
			log_info("client=%s idle timeout during a stream", c->client_ip);
			conn_close(c, "stream idle timeout");
			return;
		}
		break;
	case PH_TUNNEL:
		conn_close(c, "tunnel idle timeout");
		return;
	case PH_CLOSING:
		conn_close(c, "closing timeout");
		return;
	}
	conn_run(c);
}

static void
conn_set_phase(struct conn *c, enum conn_phase p)
{
	c->phase = p;
	c->phase_start = ev_now(c->loop);
	conn_timer_update(c);
}

/* --- the PROXY header ------------------------------------------------------------------- */

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

	if (!c->lcfg->tls) {
		conn_set_phase(c, PH_IDLE);
		return 1;
	}
	if (tls_start_server(cl, c->lcfg->tls, cl->in ? buf_head(cl->in) : NULL, buf_len(cl->in)) == -1) {
		log_error("client=%s cannot start TLS", c->client_ip);
		conn_close(c, "TLS start failed");
		return -1;
	}
	if (cl->in)
		cl->in->r = cl->in->w;
	cl->handshaking = true;
	cl->want = EV_READ;
	c->https = true;
	conn_set_phase(c, PH_TLS);
	return 1;
}

/* Steps the client's TLS handshake. */
static int
step_tls(struct conn *c)
{
	const char *why = NULL;
	int r = tls_handshake(&c->client, &why);

	if (r == 0)
		return 0;
	if (r < 0) {
		log_info("client=%s %s", c->client_ip, why);
		conn_close(c, "TLS handshake failed");
		return -1;
	}
	c->client.handshaking = false;
	log_debug("client=%s %s %s%s", c->client_ip, tls_version_name(&c->client), tls_cipher_name(&c->client),
	    tls_resumed(&c->client) ? " (resumed)" : "");
	conn_set_phase(c, PH_IDLE);
	return 1;
}

/* Returns 1 when progress was made, 0 when more bytes are needed, -1 when closed. */
static int
step_proxy(struct conn *c)
{
	struct half *cl = &c->client;
	struct pp_header h;
	size_t n = buf_len(cl->in);

	if (n == 0) {
		if (cl->eof) {
			conn_close(c, "client closed before the PROXY header");
			return -1;
		}
		return 0;
	}
	if (c->lcfg->proxy_protocol == PPM_OPTIONAL && !looks_like_proxy(buf_head(cl->in), n))
		return conn_after_proxy(c);
	const char *why = NULL;
	ssize_t r = pp_parse_ex(buf_head(cl->in), n, &h, &why);
	if (r == PP_NEED_MORE && !cl->eof && buf_room(cl->in) > 0)
		return 0;
	if (r < 0) {
		log_info("client=%s listener=%s bad PROXY header: %s", c->client_ip, c->lcfg->name,
		    r == PP_NEED_MORE ? "closed inside the header" : why ? why : pp_strerror(r));
		metrics_proxy_error(c->lcfg->name);
		conn_close(c, "bad PROXY header");
		return -1;
	}
	if (h.command == PP_CMD_PROXY && (h.family == AF_INET || h.family == AF_INET6)) {
		memcpy(&c->client_addr, &h.src, sizeof(h.src));
		addr_unmap(&c->client_addr);
		addr_text(&c->client_addr, c->client_ip, sizeof(c->client_ip));
	}
	if (h.version == 2 && pp_client_used_tls(&h))
		c->https = true;
	cl->in->r += (size_t)r;
	return conn_after_proxy(c);
}

/* --- requests --------------------------------------------------------------------------- */

/*
 * The user name of "Authorization: Basic base64(user:password)" into out (at most cap-1
 * bytes, printable only), or "" when the field is absent, another scheme, or malformed.
 * NTLM and Negotiate name no user in the clear: they log "-".
 */
static size_t
basic_user(const struct http1_request *req, char *out, size_t cap)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const struct http1_header *a = http1_find_header(req->headers, req->nheaders, "Authorization");
	size_t n = 0, i;
	unsigned acc = 0;
	int bits = 0;

	if (!a || a->value.len < 7 || strncasecmp(a->value.p, "Basic ", 6) != 0)
		return 0;
	for (i = 6; i < a->value.len && a->value.p[i] == ' '; i++)
		;
	for (; i < a->value.len && a->value.p[i] != '='; i++) {
		const char *d = memchr(b64, a->value.p[i], 64);
		if (!d)
			return 0;
		acc = (acc << 6) | (unsigned)(d - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			char ch = (char)((acc >> bits) & 0xff);
			if (ch == ':')
				return n;
			if (n + 1 >= cap || ch < 0x21 || ch > 0x7e)
				return 0;
			out[n++] = ch;
		}
	}
	return 0;	/* no ':' */
}

/* Copies the fields the access log needs (the head's bytes are about to be dropped). */
static void
save_loginfo(struct conn *c, const struct http1_request *req)
{
	const struct http1_header *ref = http1_find_header(req->headers, req->nheaders, "Referer");
	const struct http1_header *ua = http1_find_header(req->headers, req->nheaders, "User-Agent");
	char user[128];
	size_t ulen = basic_user(req, user, sizeof(user));
	struct http1_slice f[6] = { req->method, req->target, { req->minor ? "HTTP/1.1" : "HTTP/1.0", 8 },
	    ref ? ref->value : (struct http1_slice){ "", 0 }, ua ? ua->value : (struct http1_slice){ "", 0 },
	    { user, ulen } };
	size_t total = 0;

	for (int i = 0; i < 6; i++) {
		if (f[i].len > 2048)
			f[i].len = 2048;
		total += f[i].len + 1;
	}
	free(c->loginfo);
	if (!(c->loginfo = malloc(total)))
		return;
	char *p = c->loginfo;
	for (int i = 0; i < 6; i++) {
		memcpy(p, f[i].p, f[i].len);
		for (size_t k = 0; k < f[i].len; k++)
			if (p[k] == '\0')
				p[k] = '?';
		p += f[i].len;
		*p++ = '\0';
	}
}

/*
 * After exrelay wrote its own n-byte answer into client->out: drops the request head, logs,
 * and waits for the next request (or closes once the answer is out).
 */
static int
local_answered(struct conn *c, const struct http1_request *req, ssize_t n, int status, bool close,
    const char *why)
{
	c->client.out->w += (size_t)n;
	c->resp_bytes_start -= (uint64_t)n;	/* counted now, written just after */
	c->status = status;
	c->client.in->r += req->head_len;
	c->req_bytes = req->head_len;
	log_request(c, why);
	c->handled++;
	if (close) {
		c->phase = PH_CLOSING;
		conn_timer_update(c);
	} else {
		conn_set_phase(c, PH_IDLE);
	}
	return 1;
}

/* No room for an answer: wait while earlier answers drain (pipelining); else give up. */
static int
local_no_room(struct conn *c)
{
	if (buf_len(c->client.out) > 0)
		return 0;
	conn_close(c, "answer does not fit");
	return -1;
}

static bool
has_body(const struct http1_request *req)
{
	return req->body == HTTP1_BODY_CHUNKED || (req->body == HTTP1_BODY_LENGTH && req->content_length > 0);
}

/* Answers a request exrelay handles itself (health, metrics), keeping the connection when it can. */
static int
answer_local(struct conn *c, const struct http1_request *req, int kind)
{
	bool close = !req->keep_alive || has_body(req) || relay_draining();
	size_t room;
	ssize_t n;

	if (!pump_out(&c->client)) {
		conn_close(c, "out of memory");
		return -1;
	}
	char *o = pump_out_tail(&c->client, &room);
	n = kind == 0 ? admin_health(o, room, c->req_head_method, close) : admin_metrics(o, room, close);
	if (n < 0)
		return local_no_room(c);
	return local_answered(c, req, n, relay_draining() && kind == 0 ? 503 : 200, close, "local");
}

/*
 * Refuses a request exrelay answers itself (no route, method not allowed, ambiguous target).
 * A request without a body keeps its connection alive; one with a body is answered and
 * closed, so the body is never read as a request.
 */
static int
refuse_request(struct conn *c, const struct http1_request *req, int status, const char *why)
{
	size_t room;
	ssize_t n;

	if (has_body(req) || !req->keep_alive || relay_draining() || !pump_out(&c->client))
		return conn_fail(c, status, why);
	char *o = pump_out_tail(&c->client, &room);
	n = rewrite_status_response(o, room, status, false, NULL, NULL, c->req_head_method);
	if (n < 0)
		return buf_len(c->client.out) > 0 ? 0 : conn_fail(c, status, why);
	log_info("client=%s %d: %s", c->client_ip, status, why);
	return local_answered(c, req, n, status, false, why);
}

static bool
method_is(const struct http1_request *req, const char *m)
{
	return req->method.len == strlen(m) && memcmp(req->method.p, m, req->method.len) == 0;
}

/* Picks the backend server; the same request gives the same server on every instance. */
static size_t
choose_server(struct conn *c, const struct cfg_backend *b)
{
	return upstream_pick(c, b, c->client_ip, strlen(c->client_ip));
}

/* Starts relaying a parsed request: route, backend connection, rewritten head. */
static int
start_request(struct conn *c, struct http1_request *req)
{
	char npath[4096];
	const char *why = NULL;
	ssize_t nlen;

	c->req_start = wall_now();
	c->status = 0;
	c->resp_started = false;
	c->client_http10 = req->minor == 0;
	c->req_keep_alive = req->keep_alive;
	c->req_head_method = method_is(req, "HEAD");
	c->expect_continue = req->expect_continue;
	c->got_continue = false;
	c->close_after = !req->keep_alive || relay_draining();
	c->route_name = NULL;
	c->req_upgrade = req->upgrade;
	snprintf(c->method_buf, sizeof(c->method_buf), "%.*s", (int)req->method.len, req->method.p);
	c->resp_bytes_start = c->client.nwritten;
	save_loginfo(c, req);

	if (c->lcfg->role == ROLE_ADMIN || (c->lcfg->health_path && (method_is(req, "GET") ||
	    c->req_head_method) && req->path.len == strlen(c->lcfg->health_path) && req->query.len == 0 &&
	    memcmp(req->path.p, c->lcfg->health_path, req->path.len) == 0)) {
		if (c->lcfg->role == ROLE_ADMIN) {
			bool get = method_is(req, "GET") || c->req_head_method;
			if (get && req->path.len == 7 && memcmp(req->path.p, "/health", 7) == 0)
				return answer_local(c, req, 0);
			if (get && req->path.len == 8 && memcmp(req->path.p, "/metrics", 8) == 0)
				return answer_local(c, req, 1);
			return refuse_request(c, req, get ? 404 : 405, "unknown admin request");
		}
		return answer_local(c, req, 0);
	}
	if (req->is_connect) {
		return conn_fail(c, 501, "CONNECT is not supported");
	}
	nlen = route_normalize_path(req->path.p, req->path.len, npath, sizeof(npath), &why);
	if (nlen < 0) {
		char msg[128];
		snprintf(msg, sizeof(msg), "refused target: %s", why ? why : "ambiguous path");
		return refuse_request(c, req, 400, msg);
	}
	int ri = route_match(c->cfg->routes, c->cfg->nroutes, req->host, npath, (size_t)nlen, req->method);
	if (ri == ROUTE_NOT_FOUND || ri == ROUTE_BAD_METHOD) {
		return refuse_request(c, req, ri == ROUTE_NOT_FOUND ? 404 : 405,
		    ri == ROUTE_NOT_FOUND ? "no route" : "method not allowed");
	}
	const struct route *rt = &c->cfg->routes[ri];
	const struct cfg_backend *b = &c->cfg->backends[rt->backend];
	c->route_name = rt->backend_name;

	/* One backend connection per client connection: keep it only for the same backend. */
	if (c->backend.fd >= 0 && (c->bidx != rt->backend || c->bcfg != c->cfg || !c->breusable))
		upstream_close(c);
	if (!pump_out(&c->backend)) {
		return conn_fail(c, 503, "out of memory");
	}
	bool fresh = c->backend.fd < 0;
	if (fresh) {
		c->bidx = rt->backend;
		c->bcfg = c->cfg;
		/*
		 * RPC over HTTP: both channels of a virtual connection carry one cookie (bytes 32..47
		 * of the first PDU); hashing it sends them to the same Exchange server from any
		 * instance. The client sends that PDU at once unless it waits for 100-continue.
		 */
		c->await_cookie = b->nservers > 1 && req->body == HTTP1_BODY_LENGTH && req->content_length >= 48 &&
		    !req->expect_continue && (method_is(req, "RPC_IN_DATA") || method_is(req, "RPC_OUT_DATA"));
		if (!c->await_cookie && upstream_open(c, choose_server(c, b)) == -1) {
			metrics_backend_error(b->name, "connect");
			return conn_fail(c, 502, "backend connect failed");
		}
	}
	struct rewrite_request_ctx rc = { c->client_ip, c->https, b->add_headers, b->nadd };
	size_t room;
	char *o = pump_out_tail(&c->backend, &room);
	ssize_t n = rewrite_request(o, room, req, &rc);
	if (n < 0) {
		return conn_fail(c, 431, "request head too large after rewriting");
	}
	c->backend.out->w += (size_t)n;
	c->breusable = true;

	if ((method_is(req, "RPC_IN_DATA") || method_is(req, "RPC_OUT_DATA")) &&
	    req->body == HTTP1_BODY_LENGTH && req->content_length > 16) {
		c->rpc_channel = true;
		metrics_rpc_channel(c->method_buf, 1);
	}
	c->client.in->r += req->head_len;
	c->req_bytes = req->head_len;
	http1_body_init(&c->reqb, req->body, req->content_length);
	c->backend.fwd = 0;
	c->client.fwd = 0;
	c->rs = RS_HEAD;
	c->handled++;
	c->last_activity = ev_now(c->loop);
	if (c->backend.connecting || c->await_cookie)
		conn_set_phase(c, PH_ACTIVE);
	else {
		c->phase = PH_ACTIVE;
		conn_timer_update(c);
	}
	return 1;
}

/* Reads a request head from the client. */
static int
step_head(struct conn *c)
{
	struct half *cl = &c->client;
	size_t n = buf_len(cl->in);
	struct http1_header hdrs[c->cfg->limits.max_headers];
	struct http1_request req;

	if (n == 0) {
		if (cl->eof) {
			if (c->phase == PH_HEAD)
				conn_set_phase(c, PH_IDLE);
			conn_close(c, "client closed");
			return -1;
		}
		return 0;
	}
	if (c->phase == PH_IDLE) {
		if (relay_draining() && c->handled > 0) {
			conn_close(c, "draining");
			return -1;
		}
		c->resp_started = false;	/* a 400/408/431 for this head may still be sent */
		c->status = 0;
		conn_set_phase(c, PH_HEAD);
	}
	memset(&req, 0, sizeof(req));
	req.headers = hdrs;
	ssize_t r = http1_parse_request(buf_head(cl->in), n, &c->cfg->limits, &req);
	if (r == HTTP1_NEED_MORE) {
		if (cl->eof) {
			return conn_fail(c, 400, "client closed inside a request head");
		}
		return 0;
	}
	if (r < 0) {
		c->req_head_method = false;
		return conn_fail(c, req.status ? req.status : 400, req.error ? req.error : "bad request");
	}
	return start_request(c, &req);
}

/* Feeds request body bytes to the framing state; they become forwardable to the backend. */
static int
step_request_body(struct conn *c)
{
	struct half *cl = &c->client, *be = &c->backend;
	int progress = 0;

	if (!c->reqb.done && buf_len(cl->in) > be->fwd) {
		ssize_t k = http1_body_feed(&c->reqb, buf_head(cl->in) + be->fwd, buf_len(cl->in) - (size_t)be->fwd);
		if (k < 0) {
			char msg[128];
			snprintf(msg, sizeof(msg), "bad request body framing: %s", c->reqb.error ? c->reqb.error : "?");
			if (c->resp_started) {
				log_info("client=%s %s", c->client_ip, msg);
				conn_close(c, msg);
				return -1;
			}
			return conn_fail(c, 400, msg);
		}
		be->fwd += (uint64_t)k;
		c->req_bytes += (uint64_t)k;
		progress = k > 0;
	}
	if (c->await_cookie && (be->fwd >= 48 || c->reqb.done)) {
		const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
		size_t first = be->fwd >= 48 ? upstream_pick(c, b, buf_head(cl->in) + 32, 16) : choose_server(c, b);
		c->await_cookie = false;
		if (upstream_open(c, first) == -1) {
			metrics_backend_error(b->name, "connect");
			return conn_fail(c, 502, "backend connect failed");
		}
		conn_set_phase(c, PH_ACTIVE);
		progress = 1;
	}
	if (c->reqb.done && c->reqb.kind == HTTP1_BODY_NONE)
		return progress;
	if (!c->reqb.done && cl->eof && buf_len(cl->in) <= be->fwd) {
		/* The client ended before its body did. For an RPC_IN_DATA channel that is how it ends. */
		if (c->rpc_channel)
			log_info("client=%s %s channel closed by the client after %llu bytes", c->client_ip,
			    c->method_buf, (unsigned long long)c->req_bytes);
		else
			log_info("client=%s closed during the request body", c->client_ip);
		if (be->fwd > 0 && be->fd >= 0 && !be->connecting)
			pump_flush(c, be);
		conn_close(c, "client cut the request body");
		return -1;
	}
	return progress;
}

/* --- responses -------------------------------------------------------------------------- */

/* Reads response heads from the backend: 1xx forwarded, a final head starts the body. */
static int
step_response_head(struct conn *c)
{
	struct half *be = &c->backend, *cl = &c->client;
	size_t n = buf_len(be->in);
	struct http1_header hdrs[c->cfg->limits.max_headers];
	struct http1_response resp;
	struct http1_slice m = { c->method_buf, strlen(c->method_buf) };
	const char *bname = c->bcfg->backends[c->bidx].name;

	if (n == 0) {
		if (be->eof) {
			metrics_backend_error(bname, "closed");
			return conn_fail(c, 502, "backend closed without a response");
		}
		return 0;
	}
	memset(&resp, 0, sizeof(resp));
	resp.headers = hdrs;
	ssize_t r = http1_resp_parse(buf_head(be->in), n, &c->cfg->limits, m, &resp);
	if (r == HTTP1_NEED_MORE && !be->eof)
		return 0;
	if (r < 0) {
		char msg[160];
		snprintf(msg, sizeof(msg), "bad response from backend %s: %s", bname,
		    r == HTTP1_NEED_MORE ? "closed inside the head" : resp.error ? resp.error : "?");
		metrics_backend_error(bname, "bad_response");
		return conn_fail(c, 502, msg);
	}
	if (resp.status >= 100 && resp.status < 200 && resp.status != 101) {
		/* Interim responses: passed on to HTTP/1.1 clients, exactly as many as the backend sent. */
		if (resp.status == 100)
			c->got_continue = true;
		if (!c->client_http10) {
			struct rewrite_response_ctx rc = { false, false };
			if (!pump_out(cl)) {
				conn_close(c, "out of memory");
				return -1;
			}
			size_t room;
			char *o = pump_out_tail(cl, &room);
			ssize_t k = rewrite_response(o, room, &resp, &rc);
			if (k < 0) {
				return conn_fail(c, 502, "interim response too large");
			}
			cl->out->w += (size_t)k;
		}
		be->in->r += (size_t)r;
		return 1;
	}
	if (resp.status == 101 && !c->req_upgrade) {
		metrics_backend_error(bname, "bad_response");
		return conn_fail(c, 502, "backend switched protocols without an Upgrade request");
	}
	if (c->client_http10 && resp.body == HTTP1_BODY_CHUNKED) {
		metrics_backend_error(bname, "bad_response");
		return conn_fail(c, 502, "backend sent chunked to an HTTP/1.0 request");
	}
	/* An early final answer to a request whose body was never invited: don't wait for it. */
	if (!c->reqb.done && c->expect_continue && !c->got_continue && resp.status >= 300)
		c->close_after = true;
	if (resp.body == HTTP1_BODY_CLOSE)
		c->close_after = true;
	if (!resp.keep_alive)
		c->breusable = false;
	struct rewrite_response_ctx rc = { c->close_after && resp.status != 101, c->client_http10 };
	if (!pump_out(cl)) {
		conn_close(c, "out of memory");
		return -1;
	}
	size_t room;
	char *o = pump_out_tail(cl, &room);
	ssize_t k = rewrite_response(o, room, &resp, &rc);
	if (k < 0) {
		return conn_fail(c, 502, "response head too large after rewriting");
	}
	cl->out->w += (size_t)k;
	be->in->r += (size_t)r;
	c->status = resp.status;
	c->resp_started = true;
	http1_body_init(&c->respb, resp.body, resp.content_length);
	c->rs = RS_BODY;
	if (resp.status == 101) {
		c->phase = PH_TUNNEL;
		c->rs = RS_DONE;
		c->breusable = false;
		c->close_after = true;
		log_request(c, "upgraded");
		/* Everything both sides still hold, and all that follows, is tunnel data. */
		be->fwd = buf_len(cl->in);
		cl->fwd = buf_len(be->in);
		conn_timer_update(c);
	}
	return 1;
}

/* Feeds response body bytes to the framing state; handles the backend's end. */
static int
step_response_body(struct conn *c)
{
	struct half *be = &c->backend, *cl = &c->client;
	int progress = 0;

	if (!c->respb.done && buf_len(be->in) > cl->fwd) {
		ssize_t k = http1_body_feed(&c->respb, buf_head(be->in) + cl->fwd, buf_len(be->in) - (size_t)cl->fwd);
		if (k < 0) {
			log_warn("client=%s backend %s broke response framing: %s; closing", c->client_ip,
			    c->bcfg->backends[c->bidx].name, c->respb.error ? c->respb.error : "?");
			metrics_backend_error(c->bcfg->backends[c->bidx].name, "bad_framing");
			pump_flush(c, cl);	/* the client's framing shows the cut */
			conn_close(c, "backend broke response framing");
			return -1;
		}
		cl->fwd += (uint64_t)k;
		progress = k > 0;
	}
	if (c->respb.done) {
		if (buf_len(be->in) > cl->fwd)
			c->breusable = false;	/* bytes after the response: never reuse */
		c->rs = RS_DONE;
		conn_timer_update(c);	/* a request body still pending now has a short grace */
		return 1;
	}
	if (be->eof && buf_len(be->in) <= cl->fwd) {
		/* A close-delimited body ends with the backend's close, unless that close was a cut. */
		if (c->respb.kind == HTTP1_BODY_CLOSE && !be->cut) {
			c->respb.done = true;
			c->rs = RS_DONE;
			conn_timer_update(c);
			c->breusable = false;
			return 1;
		}
		/* Cut short: the client must see it, so close without a clean end. */
		log_warn("client=%s backend %s closed inside a response body", c->client_ip,
		    c->bcfg->backends[c->bidx].name);
		metrics_backend_error(c->bcfg->backends[c->bidx].name, "truncated");
		if (c->respb.kind == HTTP1_BODY_CLOSE) {
			conn_abort(c, "backend cut the response body");	/* a FIN would read as the end */
		} else {
			pump_flush(c, cl);	/* Content-Length or chunked: the client sees the body is short */
			conn_close(c, "backend cut the response body");
		}
		return -1;
	}
	return progress;
}

/* Closes after what is queued for the client is sent (close_notify, FIN, lingering close). */
static int
conn_closing(struct conn *c)
{
	c->phase = PH_CLOSING;
	c->last_activity = ev_now(c->loop);
	conn_timer_update(c);
	return 1;
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

/* After a transaction: log it, then keep the connection for the next request or close it. */
static int
step_finish(struct conn *c)
{
	struct half *cl = &c->client;

	if (c->phase != PH_ACTIVE)
		return 0;	/* a 101 just turned the connection into a tunnel */
	if (cl->eof && !c->reqb.done)
		return 0;	/* step_request_body handles a cut request */
	if (cl->eof && c->rs != RS_DONE && c->rpc_channel) {
		/*
		 * An RPC channel ends when the client closes it (Outlook never half-closes); waiting
		 * for the response to end would keep the backend channel open for hours. Other
		 * clients may half-close after their request (gnutls-cli does): they get the whole
		 * response, and a client that is really gone is found by the next write.
		 */
		log_info("client=%s %s channel closed by the client", c->client_ip, c->method_buf);
		conn_close(c, "client closed the channel");
		return -1;
	}
	if (c->rs != RS_DONE || pump_has_output(cl))
		return 0;
	if (!c->reqb.done) {
		/*
		 * The response ended before the request body (an RPC error on an IN channel, an
		 * early 4xx). If the backend keeps reading, the body goes on; if it said close or
		 * closed, the rest of the body has nowhere to go: close, never parse it as a request.
		 */
		if (!c->breusable || c->backend.eof || c->close_after) {
			conn_end_request(c, "response ended before the request body");
			upstream_close(c);
			return conn_closing(c);
		}
		return 0;
	}
	/*
	 * Every byte of this request must have reached the backend before the next request is
	 * parsed: body bytes still waiting in client->in would otherwise be read as a request.
	 */
	bool unsent = pump_has_output(&c->backend);
	if (unsent && c->breusable && !c->backend.eof && !c->close_after && !cl->eof)
		return 0;
	conn_end_request(c, "ok");
	if (!c->breusable || c->backend.eof || unsent)
		upstream_close(c);
	if (unsent || c->close_after)
		return conn_closing(c);
	if (cl->eof && buf_len(cl->in) == 0) {
		conn_close(c, "done");
		return -1;
	}
	conn_set_phase(c, PH_IDLE);	/* (after a half-close, requests still buffered are answered) */
	return 1;
}

/* Tunnel: both directions raw; an end on one side is passed on as a half-close. */
static int
step_tunnel(struct conn *c)
{
	struct half *cl = &c->client, *be = &c->backend;
	int progress = 0;

	if (buf_len(cl->in) > be->fwd) {
		be->fwd = buf_len(cl->in);
		progress = 1;
	}
	if (buf_len(be->in) > cl->fwd) {
		cl->fwd = buf_len(be->in);
		progress = 1;
	}
	if ((cl->cut && !pump_has_output(be)) || (be->cut && !pump_has_output(cl))) {
		conn_abort(c, "tunnel cut");
		return -1;
	}
	struct half *hs[2] = { cl, be };
	for (int i = 0; i < 2; i++) {
		struct half *dst = pump_peer(hs[i]);
		if (hs[i]->eof && !dst->shut && !pump_has_output(dst)) {
			dst->ops->shutdown_wr(dst);
			dst->shut = true;
			progress = 1;
		}
	}
	if (cl->eof && be->eof && !pump_has_output(cl) && !pump_has_output(be)) {
		conn_close(c, "tunnel closed");
		return -1;
	}
	return progress;
}

/* The backend connection has something to say while no request is in flight. */
static int
step_backend_idle(struct conn *c)
{
	struct half *be = &c->backend;

	if (be->fd < 0 || be->connecting)
		return 0;
	if (buf_len(be->in) > 0 || be->eof) {
		if (buf_len(be->in) > 0)
			log_debug("client=%s unsolicited bytes from backend; closing it", c->client_ip);
		upstream_close(c);
		return 1;
	}
	return 0;
}

/*
 * After a last response: half-close, then read and drop what the client still sends until it
 * closes (or the closing timer ends), so that closing never resets the connection before
 * the client has read the response (a "lingering close").
 */
static int
step_closing(struct conn *c)
{
	struct half *cl = &c->client;

	if (pump_has_output(cl))
		return 0;
	if (!cl->shut) {
		cl->ops->shutdown_wr(cl);	/* TLS: close_notify first */
		cl->shut = true;
		c->last_activity = ev_now(c->loop);
		conn_timer_update(c);
	}
	if (cl->in)
		cl->in->r = cl->in->w;
	if (cl->eof) {
		conn_close(c, "response sent");
		return -1;
	}
	return 0;
}

/* Steps the state machine until nothing moves; then writes and sets watchers. */
static void
conn_run(struct conn *c)
{
	int guard;

	/* Bounded, so one connection never holds its worker for long (pipelined requests). */
	for (guard = 0; guard < 4096; guard++) {
		int p = 0, r;

		switch (c->phase) {
		case PH_PROXY:
			r = step_proxy(c);
			break;
		case PH_TLS:
			r = step_tls(c);
			break;
		case PH_IDLE:
		case PH_HEAD: {
			/* Answers exrelay made (health, 404, pipelined) go out first, making room. */
			size_t before = buf_len(c->client.out);
			if (pump_flush(c, &c->client) == -1) {
				conn_close(c, "client write failed");
				return;
			}
			p |= buf_len(c->client.out) < before;
			if ((r = step_backend_idle(c)) < 0)
				return;
			p |= r;
			r = step_head(c);
			break;
		}
		case PH_ACTIVE:
			if ((r = step_request_body(c)) < 0)
				return;
			p |= r;
			if (pump_flush(c, &c->backend) == -1) {
				metrics_backend_error(c->bcfg->backends[c->bidx].name, "write");
				if (conn_fail(c, 502, "backend write failed") < 0)
					return;
				continue;
			}
			if (c->rs == RS_HEAD)
				r = step_response_head(c);
			else if (c->rs == RS_BODY)
				r = step_response_body(c);
			else
				r = 0;
			if (r < 0)
				return;
			p |= r;
			if (pump_flush(c, &c->client) == -1) {
				conn_close(c, "client write failed");
				return;
			}
			r = step_finish(c);
			break;
		case PH_TUNNEL:
			if (pump_flush(c, &c->backend) == -1 || pump_flush(c, &c->client) == -1) {
				conn_close(c, "tunnel write failed");
				return;
			}
			r = step_tunnel(c);
			break;
		case PH_CLOSING:
			if (pump_flush(c, &c->client) == -1) {
				conn_close(c, "client write failed");
				return;
			}
			r = step_closing(c);
			break;
		default:
			r = 0;
		}
		if (r < 0)
			return;
		p |= r;
		if (!p)
			break;
	}
	if (guard == 4096)
		ev_feed_event(c->loop, &c->client.wio, EV_WRITE);	/* more to do: come back soon */
	pump_trim(c);
	pump_arm(c);
}

/* --- I/O callbacks ---------------------------------------------------------------------- */

/* A handshaking or connecting half made progress possible. Returns -1 when c is gone. */
static int
half_setup_event(struct conn *c, struct half *h)
{
	if (h == &c->client) {
		conn_run(c);
		return 0;
	}
	const char *why = NULL;
	char reason[256];
	int r = upstream_connected(c, &why);
	if (r < 0) {
		/*
		 * A TLS failure (verification, handshake) is the server's answer: no other server is
		 * tried. Only a failed TCP connect moves on. why may point into the TLS state, which
		 * the retry or the failure frees: keep a copy.
		 */
		bool tls = h->tls != NULL;
		snprintf(reason, sizeof(reason), "%s", why ? why : "backend connect failed");
		metrics_backend_error(c->bcfg->backends[c->bidx].name, tls ? "tls" : "connect");
		if (!tls && upstream_retry(c) == 0) {
			log_info("client=%s %s; trying the next server", c->client_ip, reason);
			conn_set_phase(c, PH_ACTIVE);
			return 0;
		}
		if (conn_fail(c, 502, reason) < 0)
			return -1;
	} else if (r == 0) {
		pump_arm(c);
		return 0;
	} else if (c->phase == PH_ACTIVE) {
		conn_timer_update(c);
	}
	conn_run(c);
	return 0;
}

static void
half_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct half *h = w->data;
	struct conn *c = h->c;
	(void)loop; (void)revents;

	assert(c->magic == CONN_MAGIC);
	if (h->handshaking || h->connecting) {
		half_setup_event(c, h);
		return;
	}
	int r = pump_read(c, h);

	if (r == 1) {
		conn_run(c);
	} else if (r == 0) {
		pump_trim(c);
		pump_arm(c);	/* a TLS read may wait for writability */
	}
}

static void
half_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct half *h = w->data;
	struct conn *c = h->c;
	(void)loop; (void)revents;

	assert(c->magic == CONN_MAGIC);
	if (h->handshaking || h->connecting) {
		half_setup_event(c, h);
		return;
	}
	if (h->read_wants_write) {
		int r = pump_read(c, h);
		if (r < 0)
			return;
	}
	conn_run(c);
}

/* Initialises one half's watchers (fd may be set later for the backend). */
void conn_half_init(struct conn *c, struct half *h, int fd);
void
conn_half_init(struct conn *c, struct half *h, int fd)
{
	h->c = c;
	h->fd = fd;
	h->ops = &sock_ops;
	ev_io_init(&h->rio, half_read_cb, fd, EV_READ);
	ev_io_init(&h->wio, half_write_cb, fd, EV_WRITE);
	h->rio.data = h;
	h->wio.data = h;
}

void
conn_accept(struct listener *l, int fd, const struct sockaddr_storage *peer)
{
	struct conn *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->magic = CONN_MAGIC;
	c->w = l->w;
	c->loop = l->w->loop;
	c->cfg = config_ref(l->cfg);
	c->lcfg = l->lcfg;
	c->listener = l;
	c->bidx = -1;
	c->server = -1;
	memcpy(&c->peer, peer, sizeof(*peer));
	memcpy(&c->client_addr, peer, sizeof(*peer));
	addr_unmap(&c->client_addr);
	addr_text(&c->client_addr, c->client_ip, sizeof(c->client_ip));
	sock_set_nodelay(fd);
	conn_half_init(c, &c->client, fd);
	conn_half_init(c, &c->backend, -1);
	ev_init(&c->timer, conn_timeout_cb);
	c->timer.data = c;
	c->next = c->w->conns;
	if (c->w->conns)
		c->w->conns->prev = c;
	c->w->conns = c;
	c->w->nconns++;
	__atomic_add_fetch(&relay.nconns, 1, __ATOMIC_RELAXED);
	metrics_conn_open(c->lcfg->name);
	c->last_activity = ev_now(c->loop);

	enum conn_phase first = PH_IDLE;
	if (c->lcfg->proxy_protocol != PPM_OFF) {
		if (config_trusted(c->lcfg, (const struct sockaddr *)peer))
			first = PH_PROXY;
		else if (c->lcfg->proxy_protocol == PPM_REQUIRED) {
			log_info("client=%s listener=%s PROXY header required from an untrusted peer", c->client_ip,
			    c->lcfg->name);
			metrics_proxy_error(c->lcfg->name);
			conn_close(c, "untrusted peer");
			return;
		}
	}
	if (first == PH_PROXY)
		conn_set_phase(c, PH_PROXY);
	else if (conn_after_proxy(c) < 0)
		return;
	pump_arm(c);
}

void
conn_drain_idle(struct worker *w)
{
	struct conn *c = w->conns, *next;

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
	while (w->conns)
		conn_close(w->conns, reason);
}
