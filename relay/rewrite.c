/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * rewrite.c: builds the heads exrelay sends (DESIGN.md, "What the backend receives"): the
 * request head to a backend, the response head to the client, exrelay's own short responses.
 *
 * Pure: no I/O, no allocation. Every head is written in one pass from the parser's slices into
 * the caller's buffer through a bounded writer that never writes past cap; running out of room
 * is reported as -1, never truncated output.
 */
#include "autoconf.h"

#include <string.h>

#include "rewrite.h"

/* A bounded output buffer: once an append does not fit, nothing more is written. */
struct rw_buf {
	char *p;
	size_t cap;
	size_t len;
	bool full;
};

/* Appends s[0..n), or marks the buffer full. */
static void
rw_put(struct rw_buf *b, const char *s, size_t n)
{
	if (b->full || n > b->cap - b->len) {
		b->full = true;
		return;
	}
	if (n > 0)
		memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* Appends a C string. */
static void
rw_str(struct rw_buf *b, const char *s)
{
	rw_put(b, s, strlen(s));
}

/* Appends a slice. */
static void
rw_slice(struct rw_buf *b, struct http1_slice s)
{
	rw_put(b, s.p, s.len);
}

/* Appends an unsigned number in decimal. */
static void
rw_uint(struct rw_buf *b, unsigned long long v)
{
	char tmp[24];
	size_t i = sizeof(tmp);

	do {
		tmp[--i] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	rw_put(b, tmp + i, sizeof(tmp) - i);
}

/* Appends "name: value\r\n". */
static void
rw_field(struct rw_buf *b, struct http1_slice name, struct http1_slice value)
{
	rw_slice(b, name);
	rw_put(b, ": ", 2);
	rw_slice(b, value);
	rw_put(b, "\r\n", 2);
}

/* Appends "name: v\r\n" (v in decimal). */
static void
rw_field_uint(struct rw_buf *b, struct http1_slice name, unsigned long long v)
{
	rw_slice(b, name);
	rw_put(b, ": ", 2);
	rw_uint(b, v);
	rw_put(b, "\r\n", 2);
}

/* The writer's result: bytes written, or -1 when it ran out of room. */
static ssize_t
rw_done(const struct rw_buf *b)
{
	return b->full ? -1 : (ssize_t)b->len;
}

/* True when the slice equals the C string, case-insensitively. */
static bool
rw_is(struct http1_slice s, const char *name)
{
	return http1_ci_eq(s.p, s.len, name, strlen(name));
}

/* True when some Connection field of h[0..n) lists name as a connection option. */
static bool
rw_named_by_connection(const struct http1_header *h, size_t n, struct http1_slice name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (rw_is(h[i].name, "Connection") && http1_list_has_n(h[i].value, name.p, name.len))
			return true;
	return false;
}

/*
 * True for the fields that are hop-by-hop whatever Connection says (Upgrade is decided by the
 * caller). Host, Content-Length and Transfer-Encoding are never removed, even when Connection
 * names them: the body is forwarded as-is, so its framing must reach the backend unchanged.
 */
static bool
rw_always_hop(struct http1_slice name)
{
	return rw_is(name, "Connection") || rw_is(name, "Keep-Alive") ||
	    rw_is(name, "Proxy-Connection") || rw_is(name, "TE") ||
	    rw_is(name, "HTTP2-Settings");	/* connection-specific (RFC 9113 3.2.1 of RFC 7540) */
}

/* True for fields that Connection may not remove (see rw_always_hop). */
static bool
rw_protected(struct http1_slice name)
{
	return rw_is(name, "Host") || rw_is(name, "Content-Length") ||
	    rw_is(name, "Transfer-Encoding");
}

/* A field name and its length (compared without a strlen per request). */
struct rw_name {
	const char *s;
	size_t n;
};
#define RW_NAME(lit) { lit, sizeof(lit) - 1 }

/*
 * Headers that only Exchange's own front end (CAFE, the Client Access front end) sets on the
 * requests it proxies to a mailbox server, which trusts them there: a client that sends them
 * speaks to the backend as CAFE would. Where each name comes from:
 *   [I] issue 11 of this project (X-CommonAccessToken, X-IsFromCafe, X-SourceCafeServer,
 *       msExchProxyUri, X-MSExchangeProxyLogonToken);
 *   [M] Microsoft's CVE-2021-26855 mitigations (EOMT, CSS-Exchange BackendCookieMitigation.ps1:
 *       X-AnonResource-Backend and X-BEResource, which it filters as cookies);
 *   [P] public analyses of ProxyLogon (CVE-2021-26855/27065) and ProxyShell (CVE-2021-34473/
 *       34523/31207) and their proof-of-concept requests.
 * Compared case-insensitively with '_' read as '-' (http1_ci_eq_dash).
 */
static const struct rw_name rw_internal[] = {
	RW_NAME("X-CommonAccessToken"),		/* [I][P] CAFE's serialized identity (ProxyShell: X-Rps-CAT) */
	RW_NAME("X-IsFromCafe"),			/* [I] marks a request as proxied by CAFE */
	RW_NAME("X-SourceCafeServer"),		/* [I] the CAFE server that proxied it */
	RW_NAME("msExchProxyUri"),		/* [I][P] the URI CAFE received */
	RW_NAME("X-MSExchangeProxyLogonToken"),	/* [I] */
	RW_NAME("X-BEResource"),			/* [M][P] the backend CAFE chose (ProxyLogon SSRF) */
	RW_NAME("X-AnonResource"),		/* [P] ProxyLogon: anonymous-resource routing */
	RW_NAME("X-AnonResource-Backend"),	/* [M][P] ProxyLogon SSRF target */
	RW_NAME("msExchLogonAccount"),		/* [P] ProxyLogon: the logon identity (/ecp/proxyLogon.ecp) */
	RW_NAME("msExchLogonMailbox"),		/* [P] ProxyLogon PoCs send RW_NAME("msExchLogonMailbox: S-1-5-20") */
	RW_NAME("msExchTargetMailbox"),		/* [P] */
};

/*
 * Names with a '-' that exrelay sets or strips itself (besides add_headers, rw_added): a
 * client's spelling with '_' (X-Forwarded_For, X_Real_IP) is a look-alike, dropped.
 */
static const struct rw_name rw_lookalike[] = {
	RW_NAME("X-Forwarded-For"), RW_NAME("X-Forwarded-Proto"), RW_NAME("X-Real-IP"), RW_NAME("Front-End-Https"),
	RW_NAME("Keep-Alive"), RW_NAME("Proxy-Connection"), RW_NAME("HTTP2-Settings"),
};

/* True when name equals one of names[0..n) by http1_ci_eq_dash. */
static bool
rw_fold_in(struct http1_slice name, const struct rw_name *names, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (names[i].n == name.len && http1_ci_eq_dash(name.p, name.len, names[i].s, names[i].n))
			return true;
	return false;
}

/*
 * True when an add_headers entry ("Name: value") sets the field name: compared
 * case-insensitively, or with '_' and '-' read as one when fold.
 */
static bool
rw_added(const struct rewrite_request_ctx *ctx, struct http1_slice name, bool fold)
{
	const char *colon, *a;
	size_t i, n;

	for (i = 0; i < ctx->nadd; i++) {
		a = ctx->add_headers[i];
		if ((colon = strchr(a, ':')) == NULL)
			continue;
		n = (size_t)(colon - a);
		if (fold ? http1_ci_eq_dash(a, n, name.p, name.len) : http1_ci_eq(a, n, name.p, name.len))
			return true;
	}
	return false;
}

/*
 * True when ctx->strip_internal drops the client's field name: an Exchange-internal header
 * (any spelling), or a '_' look-alike of a name exrelay sets or strips.
 * Structured as lists so that a configured list could be added beside them.
 */
static bool
rw_stripped(const struct rewrite_request_ctx *ctx, struct http1_slice name)
{
	if (!ctx->strip_internal || name.len == 0)
		return false;
	/* Every internal name starts with "X" or "msExch": most fields are ruled out at once. */
	unsigned char first = (unsigned char)(name.p[0] | 0x20);
	if ((first == 'x' || first == 'm') &&
	    rw_fold_in(name, rw_internal, sizeof(rw_internal) / sizeof(rw_internal[0])))
		return true;
	if (memchr(name.p, '_', name.len) == NULL)
		return false;
	return rw_fold_in(name, rw_lookalike, sizeof(rw_lookalike) / sizeof(rw_lookalike[0])) ||
	    rw_added(ctx, name, true);
}


/* True when the client's field h must not reach the backend. */
static bool
rw_request_drops(const struct http1_request *req, const struct rewrite_request_ctx *ctx,
    const struct http1_header *h)
{
	if (rw_always_hop(h->name) || rw_is(h->name, "X-Forwarded-For") ||
	    rw_is(h->name, "X-Forwarded-Proto") || rw_is(h->name, "Forwarded") ||
	    rw_is(h->name, "X-Real-IP") || rw_stripped(ctx, h->name))
		return true;
	if (rw_is(h->name, "Upgrade"))
		return !req->upgrade;
	if (rw_protected(h->name))
		return false;
	return rw_named_by_connection(req->headers, req->nheaders, h->name) ||
	    rw_added(ctx, h->name, false);
}

/*
 * Writes a Content-Length field h of a head whose length is known (has_cl, cl): the first one
 * as one number, later ones not at all (RFC 9110 8.6: "5, 5" and repeated equal fields become
 * one value, never a list). Without a known length the field goes on as sent. *done: a
 * Content-Length was written.
 */
static void
rw_content_length(struct rw_buf *b, const struct http1_header *h, bool has_cl, uint64_t cl,
    bool *done)
{
	if (!has_cl)
		rw_field(b, h->name, h->value);
	else if (!*done)
		rw_field_uint(b, h->name, (unsigned long long)cl);
	*done = true;
}

/* Writes the request line, origin-form for an absolute-form target. */
static void
rw_request_line(struct rw_buf *b, const struct http1_request *req)
{
	rw_slice(b, req->method);
	rw_put(b, " ", 1);
	if (!req->absolute_form) {
		rw_slice(b, req->target);
	} else {
		if (req->path.len > 0)
			rw_slice(b, req->path);
		else if (req->query.len == 0 && http1_ci_eq(req->method.p, req->method.len, "OPTIONS", 7))
			rw_put(b, "*", 1);	/* RFC 9112 3.2.4 */
		else
			rw_put(b, "/", 1);
		if (req->query.len > 0) {
			rw_put(b, "?", 1);
			rw_slice(b, req->query);
		}
	}
	rw_put(b, req->minor == 0 ? " HTTP/1.0\r\n" : " HTTP/1.1\r\n", 11);
}

/* Writes exrelay's X-Forwarded-For, X-Forwarded-Proto, X-Real-IP and Forwarded fields. */
static void
rw_forwarded(struct rw_buf *b, const struct rewrite_request_ctx *ctx)
{
	const char *addr = ctx->client_addr, *proto = ctx->https ? "https" : "http";
	bool known = addr != NULL && addr[0] != '\0';

	if (known) {
		rw_str(b, "X-Forwarded-For: ");
		rw_str(b, addr);
		rw_put(b, "\r\n", 2);
	}
	rw_str(b, "X-Forwarded-Proto: ");
	rw_str(b, proto);
	rw_put(b, "\r\n", 2);
	if (known) {
		rw_str(b, "X-Real-IP: ");
		rw_str(b, addr);
		rw_put(b, "\r\n", 2);
	}
	rw_str(b, "Forwarded: for=");
	if (!known) {
		rw_str(b, "unknown");
	} else if (strchr(addr, ':') != NULL) {
		rw_str(b, "\"[");
		rw_str(b, addr);
		rw_str(b, "]\"");
	} else {
		rw_str(b, addr);
	}
	rw_str(b, ";proto=");
	rw_str(b, proto);
	rw_put(b, "\r\n", 2);
}

/*
 * Writes the backend's request head (see rewrite.h). Decisions beyond the header comment:
 * Connection cannot remove Host, Content-Length or Transfer-Encoding; client fields with the
 * name of an add_headers field are dropped (the configured value wins); with no client address
 * X-Forwarded-For and X-Real-IP are left out and Forwarded says for=unknown.
 */
ssize_t
rewrite_request(char *out, size_t cap, const struct http1_request *req,
    const struct rewrite_request_ctx *ctx)
{
	struct rw_buf b = { out, cap, 0, false };
	bool new_host, has_host = false, cl_done = false;
	size_t i;

	rw_request_line(&b, req);
	new_host = req->absolute_form && req->authority.len > 0;
	for (i = 0; new_host && i < req->nheaders; i++)
		if (rw_is(req->headers[i].name, "Host"))
			has_host = true;
	if (new_host && !has_host)
		rw_field(&b, (struct http1_slice){ "Host", 4 }, req->authority);
	for (i = 0; i < req->nheaders; i++) {
		const struct http1_header *h = &req->headers[i];

		if (rw_request_drops(req, ctx, h))
			continue;
		if (rw_is(h->name, "Content-Length"))
			rw_content_length(&b, h, req->body == HTTP1_BODY_LENGTH, req->content_length,
			    &cl_done);
		else
			rw_field(&b, h->name, new_host && rw_is(h->name, "Host") ? req->authority : h->value);
	}
	rw_forwarded(&b, ctx);
	for (i = 0; i < ctx->nadd; i++) {
		rw_str(&b, ctx->add_headers[i]);
		rw_put(&b, "\r\n", 2);
	}
	if (req->upgrade)
		rw_str(&b, "Connection: Upgrade\r\n");
	else if (req->minor == 0 && req->keep_alive)
		rw_str(&b, "Connection: keep-alive\r\n");
	rw_put(&b, "\r\n", 2);
	return rw_done(&b);
}

/* True when the backend's field h must not reach the client. */
static bool
rw_response_drops(const struct http1_response *resp, const struct http1_header *h)
{
	if (rw_always_hop(h->name))
		return true;
	if (rw_is(h->name, "Upgrade"))
		return resp->status != 101;
	if (rw_protected(h->name))
		return false;
	return rw_named_by_connection(resp->headers, resp->nheaders, h->name);
}

/*
 * Writes the client's response head (see rewrite.h). A 101 always gets "Connection: Upgrade"
 * (close and HTTP/1.0 do not apply to a tunnel); other 1xx get no Connection field.
 */
ssize_t
rewrite_response(char *out, size_t cap, const struct http1_response *resp,
    const struct rewrite_response_ctx *ctx)
{
	struct rw_buf b = { out, cap, 0, false };
	bool cl_done = false;
	size_t i;

	rw_put(&b, resp->minor == 0 ? "HTTP/1.0 " : "HTTP/1.1 ", 9);
	rw_uint(&b, (unsigned)resp->status);
	rw_put(&b, " ", 1);
	rw_slice(&b, resp->reason);
	rw_put(&b, "\r\n", 2);
	for (i = 0; i < resp->nheaders; i++) {
		const struct http1_header *h = &resp->headers[i];

		if (rw_response_drops(resp, h))
			continue;
		if (rw_is(h->name, "Content-Length"))
			rw_content_length(&b, h, resp->has_content_length, resp->content_length, &cl_done);
		else
			rw_field(&b, h->name, h->value);
	}
	if (resp->status == 101)
		rw_str(&b, "Connection: Upgrade\r\n");
	else if (resp->status >= 200 && ctx->close)
		rw_str(&b, "Connection: close\r\n");
	else if (resp->status >= 200 && ctx->client_http10)
		rw_str(&b, "Connection: keep-alive\r\n");
	rw_put(&b, "\r\n", 2);
	return rw_done(&b);
}

struct rw_reason {
	int status;
	const char *reason;
};

static const struct rw_reason rw_reasons[] = {
	{ 100, "Continue" }, { 101, "Switching Protocols" }, { 103, "Early Hints" },
	{ 200, "OK" }, { 201, "Created" }, { 202, "Accepted" }, { 204, "No Content" },
	{ 206, "Partial Content" }, { 207, "Multi-Status" },
	{ 301, "Moved Permanently" }, { 302, "Found" }, { 303, "See Other" },
	{ 304, "Not Modified" }, { 307, "Temporary Redirect" }, { 308, "Permanent Redirect" },
	{ 400, "Bad Request" }, { 401, "Unauthorized" }, { 403, "Forbidden" }, { 404, "Not Found" },
	{ 405, "Method Not Allowed" }, { 408, "Request Timeout" }, { 409, "Conflict" },
	{ 411, "Length Required" }, { 413, "Content Too Large" }, { 414, "URI Too Long" },
	{ 415, "Unsupported Media Type" }, { 417, "Expectation Failed" },
	{ 421, "Misdirected Request" }, { 426, "Upgrade Required" }, { 429, "Too Many Requests" },
	{ 431, "Request Header Fields Too Large" },
	{ 500, "Internal Server Error" }, { 501, "Not Implemented" }, { 502, "Bad Gateway" },
	{ 503, "Service Unavailable" }, { 504, "Gateway Timeout" },
	{ 505, "HTTP Version Not Supported" },
};

/* The standard reason phrase of status, or "Unknown". */
const char *
rewrite_reason(int status)
{
	size_t i;

	for (i = 0; i < sizeof(rw_reasons) / sizeof(rw_reasons[0]); i++)
		if (rw_reasons[i].status == status)
			return rw_reasons[i].reason;
	return "Unknown";
}

/*
 * Writes one of exrelay's own responses (see rewrite.h). Responses that cannot have content
 * (1xx, 204, 304) get neither Content-Type, Content-Length nor a body; a 1xx gets no
 * "Connection: close" either (it is not the final response).
 */
ssize_t
rewrite_status_response(char *out, size_t cap, int status, bool close,
    const char *extra_headers, const char *body, bool head_only)
{
	struct rw_buf b = { out, cap, 0, false };
	const char *reason = rewrite_reason(status);
	bool content = status >= 200 && status != 204 && status != 304;
	size_t blen = body != NULL ? strlen(body) : strlen(reason) + 1;

	if (status < 100 || status > 999)
		return -1;
	rw_str(&b, "HTTP/1.1 ");
	rw_uint(&b, (unsigned)status);
	rw_put(&b, " ", 1);
	rw_str(&b, reason);
	rw_put(&b, "\r\n", 2);
	if (content) {
		rw_str(&b, "Content-Type: text/plain\r\nContent-Length: ");
		rw_uint(&b, blen);
		rw_put(&b, "\r\n", 2);
	}
	if (close && status >= 200)
		rw_str(&b, "Connection: close\r\n");
	if (extra_headers != NULL)
		rw_str(&b, extra_headers);
	rw_put(&b, "\r\n", 2);
	if (content && !head_only) {
		if (body != NULL) {
			rw_put(&b, body, blen);
		} else {
			rw_str(&b, reason);
			rw_put(&b, "\n", 1);
		}
	}
	return rw_done(&b);
}
