/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * txn_resp.c: the response half of an exchange (txn.c has the request half and the end):
 * response heads from the backend (interim ones passed on, the final one checked against the
 * request and rebuilt into the client's output) and the response body's framing, including
 * a backend that ends it early. Step codes as in txn.c; nothing here closes the connection.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "relay.h"
#include "rewrite.h"

struct response_args { const struct http1_response *resp; const struct rewrite_response_ctx *ctx; };

static ssize_t
write_response(char *out, size_t room, const void *arg)
{
	const struct response_args *r = arg;

	return rewrite_response(out, room, r->resp, r->ctx);
}

/* Appends a response head (interim or final) to the client's output. */
static int
txn_resp_put(struct conn *c, const struct http1_response *resp, bool close, const char *too_large)
{
	struct rewrite_response_ctx rc = { close, c->client_http10 };
	struct response_args ra = { resp, &rc };

	if (pump_put(&c->client, write_response, &ra) < 0)
		return errno == ENOSPC ? txn_fail(c, 502, too_large) : step_why(c, STEP_CLOSE, "out of memory");
	return 1;
}

/* A final response head: checks it against the request, then starts its body. */
static int
txn_resp_final(struct conn *c, const struct http1_response *resp, size_t head_len)
{
	struct half *be = &c->backend, *cl = &c->client;
	const char *bname = upstream_name(c);

	if ((resp->status == 101 && !c->req_upgrade) || (c->client_http10 && resp->body == HTTP1_BODY_CHUNKED)) {
		metrics_backend_error(bname, "bad_response");
		return txn_fail(c, 502, resp->status == 101 ? "backend switched protocols without an Upgrade request" :
		    "backend sent chunked to an HTTP/1.0 request");
	}
	/* An early final answer to a request whose body was never invited: don't wait for it. */
	if ((!c->reqb.done && c->expect_continue && !c->got_continue && resp->status >= 300) ||
	    resp->body == HTTP1_BODY_CLOSE)
		c->close_after = true;
	if (!resp->keep_alive)
		c->breusable = false;
	int r = txn_resp_put(c, resp, c->close_after && resp->status != 101,
	    "response head too large after rewriting");
	if (r != 1)
		return r;
	be->in->r += head_len;
	metrics_first_byte(c->route_name ? c->route_name : "-", c->method_buf, access_clock() - c->req_start);
	edge_response(c, resp->status);	/* the guard counts a login's answer */
	if (resp->status >= 502 && resp->status <= 504)
		upstream_failed(c, "5xx");	/* a gateway error storm counts toward the server's fall */
	c->status = resp->status;
	c->resp_started = true;
	http1_body_init(&c->respb, resp->body, resp->content_length);
	c->rs = RS_BODY;
	if (resp->status != 101)
		return 1;
	c->rs = RS_DONE;
	c->breusable = false;
	c->close_after = true;
	access_log(c, "upgraded");
	/* Everything both sides still hold, and all that follows, is tunnel data. */
	be->fwd = buf_len(cl->in);
	cl->fwd = buf_len(be->in);
	return STEP_GOTO(PH_TUNNEL);
}

/* Reads response heads from the backend: 1xx forwarded, a final head starts the body. */
int
txn_resp_head(struct conn *c)
{
	const char *bname = upstream_name(c);
	struct half *be = &c->backend;
	struct http1_slice m = { c->method_buf, strlen(c->method_buf) };
	struct http1_header hdrs[TXN_MAX_HEADERS];
	struct http1_response resp = { .headers = hdrs };
	size_t n = buf_len(be->in);

	ASSERT(c->cfg->limits.max_headers <= TXN_MAX_HEADERS);
	if (n == 0) {
		if (!be->eof)
			return 0;
		metrics_backend_error(bname, "closed");
		return txn_fail(c, 502, "backend closed without a response");
	}
	ssize_t r = http1_resp_parse(buf_head(be->in), n, &c->cfg->limits, m, &resp);
	if (r == HTTP1_NEED_MORE && !be->eof)
		return 0;
	if (r < 0) {
		metrics_backend_error(bname, "bad_response");
		step_why(c, STEP_CLOSE, "bad response from backend %s: %s", bname,
		    r == HTTP1_NEED_MORE ? "closed inside the head" : resp.error ? resp.error : "?");
		return txn_fail(c, 502, c->reason);
	}
	if (resp.status < 100 || resp.status >= 200 || resp.status == 101)
		return txn_resp_final(c, &resp, (size_t)r);
	/* Interim responses: passed on to HTTP/1.1 clients, exactly as many as the backend sent. */
	if (resp.status == 100)
		c->got_continue = true;
	if (!c->client_http10) {
		int k = txn_resp_put(c, &resp, false, "interim response too large");
		if (k != 1)
			return k;
	}
	be->in->r += (size_t)r;
	return 1;
}

/* The backend ended while the response body was incomplete (or close-delimited). */
static int
txn_resp_end(struct conn *c)
{
	const char *bname = upstream_name(c);

	/* A close-delimited body ends with the backend's close, unless that close was a cut. */
	if (c->respb.kind == HTTP1_BODY_CLOSE && !c->backend.cut) {
		c->respb.done = true;
		c->rs = RS_DONE;
		c->breusable = false;
		return 1;
	}
	/* Cut short: the client must see it, so close without a clean end. */
	log_warn("client=%s backend %s closed inside a response body", c->client_ip, bname);
	metrics_backend_error(bname, "truncated");
	if (c->respb.kind == HTTP1_BODY_CLOSE)
		return step_why(c, STEP_ABORT, "backend cut the response body");	/* a FIN would read as the end */
	pump_flush(c, &c->client);	/* Content-Length or chunked: the client sees the body is short */
	return step_why(c, STEP_CLOSE, "backend cut the response body");
}

/* Feeds response body bytes to the framing state; handles the backend's end. */
int
txn_resp_body(struct conn *c)
{
	struct half *be = &c->backend, *cl = &c->client;
	ssize_t k = pump_feed(&c->respb, be, cl);

	if (k < 0) {
		log_warn("client=%s backend %s broke response framing: %s; closing", c->client_ip,
		    upstream_name(c), c->respb.error ? c->respb.error : "?");
		metrics_backend_error(upstream_name(c), "bad_framing");
		pump_flush(c, cl);	/* the client's framing shows the cut */
		return step_why(c, STEP_CLOSE, "backend broke response framing");
	}
	if (c->respb.done) {
		if (buf_len(be->in) > cl->fwd)
			c->breusable = false;	/* bytes after the response: never reuse */
		c->rs = RS_DONE;	/* a request body still pending now has a short grace */
		return 1;
	}
	if (be->eof && buf_len(be->in) <= cl->fwd)
		return txn_resp_end(c);
	return k > 0;
}
