/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * txn.c: one HTTP request/response exchange on a connection: the request head (parsed in
 * place, routed, rebuilt into the backend's output), the request and response bodies (their
 * framing decides how many buffered bytes are cleared to go on), the response head, the end
 * of the exchange (keep-alive, lingering close) and an upgraded tunnel.
 *
 * Every function reports to conn.c with a step code (relay.h): progress, STEP_GOTO(phase),
 * or STEP_CLOSE / STEP_ABORT with the reason in c->reason. Nothing here closes or frees the
 * connection.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "relay.h"
#include "rewrite.h"
#include "route.h"
#include "servers.h"

ENUM_STR(txn_state_str, enum resp_state, RESP_STATES)

/* --- writing heads ---------------------------------------------------------------------- */

struct status_args { int status; bool close; bool head_only; const char *extra; };
struct request_args { const struct http1_request *req; const struct rewrite_request_ctx *ctx; };
struct admin_args { enum admin_answer a; bool head_only; bool close; };

static ssize_t
write_status(char *out, size_t room, const void *arg)
{
	const struct status_args *s = arg;

	return rewrite_status_response(out, room, s->status, s->close, s->extra, NULL, s->head_only);
}

static ssize_t
write_request(char *out, size_t room, const void *arg)
{
	const struct request_args *r = arg;

	return rewrite_request(out, room, r->req, r->ctx);
}

static ssize_t
write_admin(char *out, size_t room, const void *arg)
{
	const struct admin_args *a = arg;

	return admin_write(a->a, out, room, a->head_only, a->close);
}

/* --- exrelay's own answers -------------------------------------------------------------- */

/*
 * Answers with a response made by exrelay (only when no response byte was sent yet), then
 * closes the client connection once it is written; the backend connection is closed.
 * STEP_GOTO(PH_CLOSING), or STEP_CLOSE when no answer can be sent.
 */
static int txn_fail_with(struct conn *c, int status, const char *why, const char *extra);

int
txn_fail(struct conn *c, int status, const char *why)
{
	return txn_fail_with(c, status, why, NULL);
}

/* txn_fail, with extra header lines in the answer (WWW-Authenticate, Retry-After). */
static int
txn_fail_with(struct conn *c, int status, const char *why, const char *extra)
{
	if (why != c->reason)
		snprintf(c->reason, sizeof(c->reason), "%s", why);
	if (status >= 500)
		log_warn("client=%s %d: %s", c->client_ip, status, c->reason);
	else
		log_info("client=%s %d: %s", c->client_ip, status, c->reason);
	upstream_release(c);
	if (c->resp_started)
		return STEP_CLOSE;
	struct status_args a = { status, true, c->req_head_method, extra };
	if (pump_put(&c->client, write_status, &a) < 0)
		return STEP_CLOSE;
	c->status = status;
	c->resp_started = true;
	return STEP_GOTO(PH_CLOSING);
}

/*
 * After exrelay wrote its own n-byte answer into client->out: drops the request head, logs,
 * and waits for the next request (or closes once the answer is out).
 */
static int
local_answered(struct conn *c, const struct http1_request *req, int n, int status, bool close,
    const char *why)
{
	c->resp_bytes_start -= (uint64_t)n;	/* counted now, written just after */
	c->status = status;
	c->client.in->r += req->head_len;
	c->req_bytes = req->head_len;
	access_log(c, why);
	c->handled++;
	return STEP_GOTO(close ? PH_CLOSING : PH_IDLE);
}

/* No room for an answer: wait while earlier answers drain (pipelining); else give up. */
static int
local_no_room(struct conn *c, int err)
{
	if (err == ENOSPC && buf_len(c->client.out) > 0)
		return 0;
	return step_why(c, STEP_CLOSE, err == ENOSPC ? "answer does not fit" : "out of memory");
}

static bool
has_body(const struct http1_request *req)
{
	return req->body == HTTP1_BODY_CHUNKED || (req->body == HTTP1_BODY_LENGTH && req->content_length > 0);
}

/*
 * Refuses a request with exrelay's own answer (no route, method not allowed, ambiguous
 * target, a filter, the guard). A refused request with a body is answered and closed, so
 * the body is never read as a request; close forces that too (NTLM).
 */
static int
txn_refuse(struct conn *c, const struct http1_request *req, int status, const char *why,
    const char *extra, bool close)
{
	int n;

	if (close || !req->keep_alive || has_body(req) || relay_draining())
		return txn_fail_with(c, status, why, extra);
	struct status_args s = { status, false, c->req_head_method, extra };
	n = pump_put(&c->client, write_status, &s);
	if (n < 0)
		return errno == ENOSPC && buf_len(c->client.out) > 0 ? 0 : txn_fail_with(c, status, why, extra);
	log_info("client=%s %d: %s", c->client_ip, status, why);
	return local_answered(c, req, n, status, false, why);
}

/* Answers health or metrics, keeping the connection when it can; refuses other admin requests. */
static int
answer_local(struct conn *c, const struct http1_request *req, enum admin_answer a, int status,
    const char *why)
{
	bool close = !req->keep_alive || has_body(req) || relay_draining();
	int n;

	if (a == ADMIN_NOT_FOUND || a == ADMIN_BAD_METHOD || a == ADMIN_NONE)
		return txn_refuse(c, req, status, why, NULL, false);
	struct admin_args aa = { a, c->req_head_method, close };
	if ((n = pump_put(&c->client, write_admin, &aa)) < 0)
		return local_no_room(c, errno);
	return local_answered(c, req, n, relay_health_draining() && a == ADMIN_HEALTH ? 503 : 200, close, "local");
}

/* --- requests --------------------------------------------------------------------------- */

static bool
method_is(const struct http1_request *req, const char *m)
{
	return req->method.len == strlen(m) && memcmp(req->method.p, m, req->method.len) == 0;
}

static bool
is_rpc_method(const struct http1_request *req)
{
	return method_is(req, "RPC_IN_DATA") || method_is(req, "RPC_OUT_DATA");
}

/* Resets the per-request state for a newly parsed head; cr gets its credentials. */
static void
txn_begin(struct conn *c, const struct http1_request *req, struct cred *cr)
{
	c->req_start = access_clock();
	c->status = 0;
	c->resp_started = false;
	c->client_http10 = req->minor == 0;
	c->req_head_method = method_is(req, "HEAD");
	c->expect_continue = req->expect_continue;
	c->got_continue = false;
	c->close_after = !req->keep_alive || relay_draining();
	c->route_name = NULL;
	c->req_upgrade = req->upgrade;
	snprintf(c->method_buf, sizeof(c->method_buf), "%.*s", (int)req->method.len, req->method.p);
	c->resp_bytes_start = c->client.nwritten;
	cred_read(req, cr);
	access_save(c, req, cr);
}

/* Routes the request: its route index, or a refusal already answered (*step). */
static int
txn_route(struct conn *c, const struct http1_request *req, int *step)
{
	char npath[4096], msg[128];
	const char *why = NULL;
	ssize_t nlen = route_normalize_path(req->path.p, req->path.len, npath, sizeof(npath), &why);

	if (nlen < 0) {
		snprintf(msg, sizeof(msg), "refused target: %s", why ? why : "ambiguous path");
		*step = answer_local(c, req, ADMIN_NONE, 400, msg);
		return -1;
	}
	int ri = route_match(c->cfg->routes, c->cfg->nroutes, req->host, npath, (size_t)nlen, req->method);
	if (ri == ROUTE_NOT_FOUND || ri == ROUTE_BAD_METHOD) {
		*step = answer_local(c, req, ADMIN_NONE, ri == ROUTE_NOT_FOUND ? 404 : 405,
		    ri == ROUTE_NOT_FOUND ? "no route" : "method not allowed");
		return -1;
	}
	/* The protocol (virtual directory) decides which health counts for the server choice. */
	c->proto = servers_proto(&c->cfg->backends[c->cfg->routes[ri].backend], npath, (size_t)nlen);
	return ri;
}

/* Opens a connection to the backend's best server for the client's address (any instance agrees). */
static int
open_by_client(struct conn *c)
{
	return upstream_open(c, c->client_ip, strlen(c->client_ip), NULL);
}

/*
 * The answer when no server could be reached: 503 when none was usable or this host ran short
 * (no descriptor: a moment's overload, not a bad gateway; errno from upstream_open), else 502.
 */
static int
txn_no_server(struct conn *c, int r)
{
	bool local = r != UPSTREAM_NONE_USABLE && sock_local_error(errno);

	metrics_backend_error(upstream_name(c), r == UPSTREAM_NONE_USABLE ? "no_server" : "connect");
	if (local)
		return txn_fail(c, 503, "no descriptor or memory for a backend connection");
	return r == UPSTREAM_NONE_USABLE ? txn_fail(c, 503, "no server available") :
	    txn_fail(c, 502, "backend connect failed");
}

/*
 * Makes sure a backend connection to route rt's backend exists or is being opened: one per
 * client connection, kept only for the same backend. 0, or a step code on failure.
 */
static int
txn_backend(struct conn *c, const struct http1_request *req, const struct route *rt)
{
	const struct cfg_backend *b = &c->cfg->backends[rt->backend];

	if (upstream_switch(c, rt->backend))
		return 0;	/* this backend's connection: kept, or taken back from the parked one */
	c->bidx = rt->backend;
	c->bcfg = c->cfg;
	/*
	 * RPC over HTTP: both channels of a virtual connection carry one cookie (bytes 32..47 of
	 * the first PDU); hashing it sends them to the same Exchange server from any instance.
	 * The client sends that PDU at once unless it waits for 100-continue.
	 */
	c->await_cookie = b->nservers > 1 && req->body == HTTP1_BODY_LENGTH && req->content_length >= 48 &&
	    !req->expect_continue && is_rpc_method(req);
	int r = c->await_cookie ? 0 : open_by_client(c);
	return r < 0 ? txn_no_server(c, r) : 0;
}

/* Answers what edge.c refused; the access log's ROUTE field names who refused it. */
static int
txn_edge_refused(struct conn *c, const struct http1_request *req, const struct edge_refusal *r)
{
	snprintf(c->route_tag, sizeof(c->route_tag), "%s", r->tag);
	c->route_name = c->route_tag;
	return txn_refuse(c, req, r->status, r->tag, r->extra[0] ? r->extra : NULL, r->close);
}

/* Starts relaying a parsed request: local answers, route, backend connection, rewritten head. */
static int
txn_start(struct conn *c, struct http1_request *req)
{
	struct edge_refusal refusal;
	struct cred cr;
	int step;

	txn_begin(c, req, &cr);
	enum admin_answer a = admin_route(c->lcfg, req);
	if (a != ADMIN_NONE)
		return answer_local(c, req, a, a == ADMIN_NOT_FOUND ? 404 : 405, "unknown admin request");
	if (req->is_connect)
		return txn_fail(c, 501, "CONNECT is not supported");
	if (edge_filter(c, req, &refusal))
		return txn_edge_refused(c, req, &refusal);
	int ri = txn_route(c, req, &step);
	if (ri < 0)
		return step;
	if (edge_route(c, req, (size_t)ri, &cr, &refusal))
		return txn_edge_refused(c, req, &refusal);
	const struct route *rt = &c->cfg->routes[ri];
	const struct cfg_backend *b = &c->cfg->backends[rt->backend];
	c->route_name = rt->backend_name;
	if ((step = txn_backend(c, req, rt)) != 0)
		return step;
	struct rewrite_request_ctx rc = { .client_addr = c->client_ip, .https = c->https,
	    .add_headers = b->add_headers, .nadd = b->nadd, .strip_internal = c->cfg->strip_internal };
	struct request_args ra = { req, &rc };
	if (pump_put(&c->backend, write_request, &ra) < 0)
		return errno == ENOSPC ? txn_fail(c, 431, "request head too large after rewriting") :
		    txn_fail(c, 503, "out of memory");
	c->breusable = true;
	if (is_rpc_method(req) && req->body == HTTP1_BODY_LENGTH && req->content_length > 16) {
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
	return STEP_GOTO(PH_ACTIVE);
}

/* The backend connection has something to say while no request is in flight: drop it. */
static int
txn_backend_idle(struct conn *c)
{
	struct half *be = &c->backend;

	if (be->fd < 0 || be->connecting || (buf_len(be->in) == 0 && !be->eof))
		return 0;
	if (buf_len(be->in) > 0)
		log_debug("client=%s unsolicited bytes from backend; closing it", c->client_ip);
	upstream_close(c);
	return 1;
}

/* Parses the request head in client->in (phases PH_IDLE, PH_HEAD). */
static int
txn_parse_head(struct conn *c)
{
	struct half *cl = &c->client;
	size_t n = buf_len(cl->in);
	struct http1_header hdrs[TXN_MAX_HEADERS];
	struct http1_request req;

	ASSERT(c->cfg->limits.max_headers <= TXN_MAX_HEADERS);
	if (n == 0)
		return cl->eof ? step_why(c, STEP_CLOSE, "client closed") : 0;
	if (c->phase == PH_IDLE) {
		if (relay_draining() && c->handled > 0)
			return step_why(c, STEP_CLOSE, "draining");
		c->resp_started = false;	/* a 400/408/431 for this head may still be sent */
		c->status = 0;
		c->head_scanned = 0;		/* a new head starts at buf_head(cl->in) */
		return STEP_GOTO(PH_HEAD);
	}
	/* Parse only once the head can be complete (or must be judged now): no quadratic re-parse. */
	if (!cl->eof && n < c->cfg->limits.max_head_size &&
	    !http1_head_end(buf_head(cl->in), n, &c->head_scanned))
		return 0;
	memset(&req, 0, sizeof(req));
	req.headers = hdrs;
	ssize_t r = http1_parse_request(buf_head(cl->in), n, &c->cfg->limits, &req);
	if (r == HTTP1_NEED_MORE)
		return cl->eof ? txn_fail(c, 400, "client closed inside a request head") : 0;
	if (r < 0) {
		c->req_head_method = false;
		return txn_fail(c, req.status ? req.status : 400, req.error ? req.error : "bad request");
	}
	return txn_start(c, &req);
}

/*
 * Waiting for or reading a request head: earlier answers go out first, making room. While
 * pipelined requests wait behind them (and there is room), answers made here are gathered and
 * leave together once no further head can be parsed.
 */
int
txn_head(struct conn *c)
{
	struct half *cl = &c->client;
	bool gather = buf_len(cl->in) > 0 && !relay_draining() && cl->out && buf_room(cl->out) >= 4096;
	size_t before = buf_len(cl->out);
	int moved = 0, r;

	if (!gather && pump_flush(c, cl) == -1)
		return step_why(c, STEP_CLOSE, "client write failed");
	moved |= txn_backend_idle(c);
	r = txn_parse_head(c);
	if (r == 0 && gather && pump_flush(c, cl) == -1)
		return step_why(c, STEP_CLOSE, "client write failed");
	moved |= buf_len(cl->out) < before;
	return r == 0 ? moved : r;
}

/* The RPC channel's first 48 body bytes are in (or its body ended): open its server. */
static int
txn_cookie_server(struct conn *c)
{
	struct half *cl = &c->client, *be = &c->backend;
	int r;

	c->await_cookie = false;
	if (be->fwd >= 48)
		r = upstream_open(c, buf_head(cl->in) + 32, 16, (const uint8_t *)buf_head(cl->in) + 32);
	else
		r = open_by_client(c);
	if (r < 0)
		return txn_no_server(c, r);
	return STEP_GOTO(PH_ACTIVE);	/* the connect timer starts now */
}

/* The client ended before its request body did. For an RPC_IN_DATA channel that is how it ends. */
static int
txn_request_cut(struct conn *c)
{
	struct half *be = &c->backend;

	if (c->rpc_channel)
		log_info("client=%s %s channel closed by the client after %llu bytes", c->client_ip,
		    c->method_buf, (unsigned long long)c->req_bytes);
	else
		log_info("client=%s closed during the request body", c->client_ip);
	if ((be->fwd > 0 || be->pipe) && be->fd >= 0 && !be->connecting)
		pump_flush(c, be);
	return step_why(c, STEP_CLOSE, "client cut the request body");
}

/* Feeds request body bytes to the framing state; they become forwardable to the backend. */
static int
txn_request_body(struct conn *c)
{
	struct half *cl = &c->client, *be = &c->backend;
	ssize_t k = pump_feed(&c->reqb, cl, be);

	if (k < 0) {
		step_why(c, STEP_CLOSE, "bad request body framing: %s", c->reqb.error ? c->reqb.error : "?");
		if (!c->resp_started)
			return txn_fail(c, 400, c->reason);
		log_info("client=%s %s", c->client_ip, c->reason);
		return STEP_CLOSE;
	}
	c->req_bytes += (uint64_t)k;
	int progress = k > 0;
	if (c->await_cookie && (be->fwd >= 48 || c->reqb.done))
		return txn_cookie_server(c);
	if (c->reqb.done && c->reqb.kind == HTTP1_BODY_NONE)
		return progress;
	if (!c->reqb.done && cl->eof && buf_len(cl->in) <= be->fwd)
		return txn_request_cut(c);
	return progress;
}

/* --- the end of an exchange ------------------------------------------------------------- */

/* Ends the request in flight: access log, counters. */
void
txn_end(struct conn *c, const char *termination)
{
	c->auth_ukey = 0;
	upstream_unpin(c);
	if (c->loginfo)
		access_log(c, termination);
	if (c->rpc_channel) {
		metrics_rpc_channel(c->method_buf, -1);
		c->rpc_channel = false;
	}
	c->rs = RS_NONE;
}

/* The response ended before the request body (an RPC error on an IN channel, an early 4xx). */
static int
txn_early_answer(struct conn *c)
{
	/*
	 * If the backend keeps reading, the body goes on; if it said close or closed, the rest of
	 * the body has nowhere to go: close, never parse it as a request.
	 */
	if (c->breusable && !c->backend.eof && !c->close_after)
		return 0;
	txn_end(c, "response ended before the request body");
	upstream_close(c);
	return STEP_GOTO(PH_CLOSING);
}

/* After a transaction: log it, then keep the connection for the next request or close it. */
static int
txn_finish(struct conn *c)
{
	struct half *cl = &c->client;

	if (cl->eof && !c->reqb.done)
		return 0;	/* txn_request_body handles a cut request */
	if (cl->eof && c->rs != RS_DONE && c->rpc_channel) {
		/*
		 * An RPC channel ends when the client closes it (Outlook never half-closes); waiting
		 * for the response to end would keep the backend channel open for hours. Other
		 * clients may half-close after their request (gnutls-cli does): they get the whole
		 * response, and a client that is really gone is found by the next write.
		 */
		log_info("client=%s %s channel closed by the client", c->client_ip, c->method_buf);
		return step_why(c, STEP_CLOSE, "client closed the channel");
	}
	if (c->rs != RS_DONE || pump_has_output(cl))
		return 0;
	if (!c->reqb.done)
		return txn_early_answer(c);
	/*
	 * Every byte of this request must have reached the backend before the next request is
	 * parsed: body bytes still waiting in client->in would otherwise be read as a request.
	 */
	bool unsent = pump_has_output(&c->backend);
	if (unsent && c->breusable && !c->backend.eof && !c->close_after && !cl->eof)
		return 0;
	txn_end(c, "ok");
	if (!c->breusable || c->backend.eof || unsent)
		upstream_close(c);
	if (unsent || c->close_after)
		return STEP_GOTO(PH_CLOSING);
	if (cl->eof && buf_len(cl->in) == 0)
		return step_why(c, STEP_CLOSE, "done");
	return STEP_GOTO(PH_IDLE);	/* (after a half-close, requests still buffered are answered) */
}

/* Steps a request in flight (PH_ACTIVE): bodies both ways, the response head, the end. */
int
txn_active(struct conn *c)
{
	int r, progress;

	if ((r = txn_request_body(c)) < 0 || STEP_IS_GOTO(r))
		return r;
	progress = r;
	if (pump_flush(c, &c->backend) == -1) {
		metrics_backend_error(upstream_name(c), "write");
		return txn_fail(c, 502, "backend write failed");
	}
	r = c->rs == RS_HEAD ? txn_resp_head(c) : 0;
	if (r < 0 || STEP_IS_GOTO(r))
		return r;
	progress |= r;
	/* The body bytes behind a final head are cleared now, so that both leave in one write. */
	r = c->rs == RS_BODY ? txn_resp_body(c) : 0;
	if (r < 0 || STEP_IS_GOTO(r))
		return r;
	progress |= r;
	if (pump_flush(c, &c->client) == -1)
		return step_why(c, STEP_CLOSE, "client write failed");
	r = txn_finish(c);
	return r == 0 ? progress : r;
}

/* Tunnel: both directions raw; an end on one side is passed on as a half-close. */
int
txn_tunnel(struct conn *c)
{
	struct half *cl = &c->client, *be = &c->backend;
	int progress = 0;

	if (pump_flush(c, be) == -1 || pump_flush(c, cl) == -1)
		return step_why(c, STEP_CLOSE, "tunnel write failed");
	if (buf_len(cl->in) > be->fwd || buf_len(be->in) > cl->fwd) {
		be->fwd = buf_len(cl->in);
		cl->fwd = buf_len(be->in);
		progress = 1;
	}
	if ((cl->cut && !pump_has_output(be)) || (be->cut && !pump_has_output(cl)))
		return step_why(c, STEP_ABORT, "tunnel cut");
	struct half *hs[2] = { cl, be };
	for (int i = 0; i < 2; i++) {
		struct half *dst = pump_peer(hs[i]);
		if (hs[i]->eof && !dst->shut && !pump_has_output(dst)) {
			if (dst->ops->shutdown_wr(dst) == -1 && errno == EAGAIN) {
				pump_io_set(c, &dst->wio, true);	/* close_notify, when it fits */
				continue;
			}
			dst->shut = true;
			progress = 1;
		}
	}
	if (cl->eof && be->eof && !pump_has_output(cl) && !pump_has_output(be))
		return step_why(c, STEP_CLOSE, "tunnel closed");
	return progress;
}

/* A timer of the exchange expired (conn.c handles the connection's own timers). */
int
txn_timeout(struct conn *c, enum conn_timeout t)
{
	switch (t) {
	case TO_REQUEST_HEAD:
		return txn_fail(c, 408, "request head timeout");
	case TO_RPC_COOKIE:
		return txn_fail(c, 408, "no RPC channel cookie in time");
	case TO_BODY_NOT_TAKEN:
		/* The backend answered early and stopped taking the request body: end here. */
		log_info("client=%s backend %s answered but stopped reading the request body; closing",
		    c->client_ip, upstream_name(c));
		txn_end(c, "request body not taken");
		upstream_close(c);
		return STEP_GOTO(PH_CLOSING);
	case TO_CONNECT:
		metrics_backend_error(upstream_name(c), "connect_timeout");
		/* A server that never answers the connect counts as failed; the next one is tried. */
		upstream_failed(c, "connect_timeout");
		if (c->backend.tls == NULL && upstream_retry(c) == 0) {
			metrics_backend_error(upstream_name(c), "retry");
			log_info("client=%s backend %s: connect timed out; trying the next server", c->client_ip,
			    upstream_name(c));
			return STEP_GOTO(PH_ACTIVE);	/* the connect timer starts over */
		}
		return txn_fail(c, 504, "backend connect timeout");
	case TO_RESPONSE:
		metrics_backend_error(upstream_name(c), "timeout");
		return txn_fail(c, 504, "backend response timeout");
	case TO_STREAM:
		log_info("client=%s idle timeout during a stream", c->client_ip);
		return step_why(c, STEP_CLOSE, "stream idle timeout");
	case TO_PROXY_HEADER:
	case TO_TLS_HANDSHAKE:
	case TO_CLIENT_IDLE:
	case TO_TUNNEL:
	case TO_CLOSING:
		break;
	}
	WRONG("a connection's own timeout reached txn_timeout");
}
