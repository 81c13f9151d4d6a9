/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_rewrite.c: TAP tests for rewrite.c: the backend's request head (hop-by-hop removal,
 * forwarded fields, add_headers, absolute-form, HTTP/1.0, upgrade), the client's response
 * head, exrelay's own responses, and every too-small cap (never a byte past it).
 */
#include <string.h>
#include <strings.h>

#include "reqparse.h"
#include "rewrite.h"
#include "tap.h"

#define MAXH 32

static struct http1_header hbuf[MAXH];

/* A slice over a C string. */
static struct http1_slice
sl(const char *s)
{
	return (struct http1_slice){ s, s != NULL ? strlen(s) : 0 };
}

/*
 * Fills req as the parser would for "METHOD TARGET HTTP/1.minor" (origin-form or "*") and the
 * fields given as name, value, ..., NULL. keep_alive follows the version; upgrade is false.
 */
static void
req_init(struct http1_request *req, const char *method, const char *target, int minor, ...)
{
	const char *q, *name;
	va_list ap;

	memset(req, 0, sizeof(*req));
	req->method = sl(method);
	req->target = sl(target);
	q = strchr(target, '?');
	req->path = (struct http1_slice){ target, q != NULL ? (size_t)(q - target) : strlen(target) };
	req->query = q != NULL ? sl(q + 1) : (struct http1_slice){ "", 0 };
	req->minor = minor;
	req->keep_alive = minor == 1;
	req->headers = hbuf;
	va_start(ap, minor);
	while ((name = va_arg(ap, const char *)) != NULL) {
		hbuf[req->nheaders].name = sl(name);
		hbuf[req->nheaders].value = sl(va_arg(ap, const char *));
		if (strcasecmp(name, "Host") == 0)
			req->host = hbuf[req->nheaders].value;
		req->nheaders++;
	}
	va_end(ap);
}

/* Fills resp for "HTTP/1.minor STATUS REASON" and the fields name, value, ..., NULL. */
static void
resp_init(struct http1_response *resp, int minor, int status, const char *reason, ...)
{
	const char *name;
	va_list ap;

	memset(resp, 0, sizeof(*resp));
	resp->minor = minor;
	resp->status = status;
	resp->reason = sl(reason);
	resp->headers = hbuf;
	va_start(ap, reason);
	while ((name = va_arg(ap, const char *)) != NULL) {
		hbuf[resp->nheaders].name = sl(name);
		hbuf[resp->nheaders].value = sl(va_arg(ap, const char *));
		resp->nheaders++;
	}
	va_end(ap);
}

static char out[8192];

/* rewrite_request into out as a C string ("(-1)" on failure). */
static const char *
rq(const struct http1_request *req, const struct rewrite_request_ctx *ctx)
{
	ssize_t n = rewrite_request(out, sizeof(out) - 1, req, ctx);

	if (n < 0)
		return "(-1)";
	out[n] = '\0';
	return out;
}

/* rewrite_response into out as a C string ("(-1)" on failure). */
static const char *
rs(const struct http1_response *resp, bool close, bool http10)
{
	struct rewrite_response_ctx ctx = { close, http10 };
	ssize_t n = rewrite_response(out, sizeof(out) - 1, resp, &ctx);

	if (n < 0)
		return "(-1)";
	out[n] = '\0';
	return out;
}

/* rewrite_status_response into out as a C string ("(-1)" on failure). */
static const char *
st(int status, bool close, const char *extra, const char *body, bool head_only)
{
	ssize_t n = rewrite_status_response(out, sizeof(out) - 1, status, close, extra, body, head_only);

	if (n < 0)
		return "(-1)";
	out[n] = '\0';
	return out;
}

static const struct rewrite_request_ctx ctx4 = { "203.0.113.7", false, NULL, 0, false };
static const struct rewrite_request_ctx ctx4s = { "203.0.113.7", true, NULL, 0, false };

#define FWD4 "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\nX-Real-IP: 203.0.113.7\r\n" \
	"Forwarded: for=203.0.113.7;proto=http\r\n"
#define FWD4S "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 203.0.113.7\r\n" \
	"Forwarded: for=203.0.113.7;proto=https\r\n"

/* Plain requests: line and fields as sent, exrelay's fields appended. */
static void
test_request_basic(void)
{
	struct http1_request req;

	req_init(&req, "GET", "/owa/?ae=Folder", 1, "Host", "mail.example.com", "User-Agent", "t", NULL);
	is_str(rq(&req, &ctx4), "GET /owa/?ae=Folder HTTP/1.1\r\nHost: mail.example.com\r\nUser-Agent: t\r\n"
	    FWD4 "\r\n", "plain GET");
	is_str(rq(&req, &ctx4s), "GET /owa/?ae=Folder HTTP/1.1\r\nHost: mail.example.com\r\nUser-Agent: t\r\n"
	    FWD4S "\r\n", "https flag gives proto=https");

	req_init(&req, "RPC_IN_DATA", "/rpc/rpcproxy.dll?mail:6001", 1, "hOsT", "Mail", "content-LENGTH",
	    "1073741824", "X-b", "2", "X-a", "1", "Authorization", "NTLM TlRMTVNTUAAB", NULL);
	is_str(rq(&req, &ctx4), "RPC_IN_DATA /rpc/rpcproxy.dll?mail:6001 HTTP/1.1\r\nhOsT: Mail\r\n"
	    "content-LENGTH: 1073741824\r\nX-b: 2\r\nX-a: 1\r\nAuthorization: NTLM TlRMTVNTUAAB\r\n" FWD4 "\r\n",
	    "names keep case and order, method token kept");

	req_init(&req, "POST", "/ews/exchange.asmx", 1, "Host", "h", "Transfer-Encoding", "chunked",
	    "Proxy-Authorization", "Basic eA==", "Trailer", "X-T", NULL);
	is_str(rq(&req, &ctx4), "POST /ews/exchange.asmx HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n"
	    "Proxy-Authorization: Basic eA==\r\nTrailer: X-T\r\n" FWD4 "\r\n",
	    "Transfer-Encoding, Proxy-Authorization and Trailer kept");

	req_init(&req, "OPTIONS", "*", 1, "Host", "h", NULL);
	is_str(rq(&req, &ctx4), "OPTIONS * HTTP/1.1\r\nHost: h\r\n" FWD4 "\r\n", "OPTIONS *");

	req_init(&req, "GET", "/%2e%2e/x//y", 1, "Host", "h", "Empty", "", NULL);
	is_str(rq(&req, &ctx4), "GET /%2e%2e/x//y HTTP/1.1\r\nHost: h\r\nEmpty: \r\n" FWD4 "\r\n",
	    "target forwarded as sent; empty value kept");
}

/* Hop-by-hop fields, including the ones Connection names. */
static void
test_request_hop_by_hop(void)
{
	struct http1_request req;

	req_init(&req, "GET", "/", 1, "Host", "h", "Connection", "keep-alive, X-Foo", "X-Foo", "1",
	    "Keep-Alive", "timeout=5", "Proxy-Connection", "keep-alive", "TE", "trailers", "X-Bar", "2",
	    "Upgrade", "websocket", "x-foo", "3", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\nX-Bar: 2\r\n" FWD4 "\r\n",
	    "Connection, named X-Foo (any case), Keep-Alive, Proxy-Connection, TE, Upgrade removed");

	req_init(&req, "GET", "/", 1, "Host", "h", "X-A", "1", "connection", "x-a", "X-B", "2",
	    "CONNECTION", " X-B ,,\tX-C\t", "X-C", "3", "X-D", "4", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\nX-D: 4\r\n" FWD4 "\r\n",
	    "several Connection fields, fields named before and after, OWS and empty elements");

	req_init(&req, "GET", "/", 1, "Host", "h", "X-Foobar", "1", "Connection", "X-Foo, Bar", "Foo", "2", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\nX-Foobar: 1\r\nFoo: 2\r\n" FWD4 "\r\n",
	    "Connection options match whole names only");

	req_init(&req, "GET", "/", 1, "Host", "h", "Connection", "X-Forwarded-For, X-Real-IP, Forwarded",
	    "X-Forwarded-For", "1.2.3.4", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\n" FWD4 "\r\n",
	    "Connection cannot remove exrelay's own forwarded fields");

	req_init(&req, "POST", "/", 1, "Host", "h", "Connection", "Content-Length, Transfer-Encoding, Host",
	    "Content-Length", "5", NULL);
	is_str(rq(&req, &ctx4), "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n" FWD4 "\r\n",
	    "Connection cannot remove Host or body framing");

	req_init(&req, "GET", "/", 1, "Host", "h", "Connection", "Proxy-Authorization",
	    "Proxy-Authorization", "Basic eA==", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\n" FWD4 "\r\n",
	    "Proxy-Authorization removed only when Connection names it");

	req_init(&req, "GET", "/", 1, "Host", "h", "Connection", "close", NULL);
	req.keep_alive = false;
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\n" FWD4 "\r\n", "HTTP/1.1 close: no Connection field added");
}

/* The client's forwarding fields are replaced by exrelay's. */
static void
test_request_forwarded(void)
{
	static const struct rewrite_request_ctx ctx6 = { "2001:db8::1", true, NULL, 0, false };
	static const struct rewrite_request_ctx ctxnone = { NULL, false, NULL, 0, false };
	static const struct rewrite_request_ctx ctxempty = { "", true, NULL, 0, false };
	struct http1_request req;

	req_init(&req, "GET", "/", 1, "X-Forwarded-For", "6.6.6.6", "Host", "h", "x-forwarded-proto", "https",
	    "FORWARDED", "for=6.6.6.6", "X-Real-Ip", "6.6.6.6", "X-Forwarded-Host", "evil", NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Host: evil\r\n" FWD4 "\r\n",
	    "client XFF/XFP/Forwarded/X-Real-IP dropped (any case) and replaced");

	req_init(&req, "GET", "/", 1, "Host", "h", NULL);
	is_str(rq(&req, &ctx6), "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 2001:db8::1\r\n"
	    "X-Forwarded-Proto: https\r\nX-Real-IP: 2001:db8::1\r\nForwarded: for=\"[2001:db8::1]\";proto=https\r\n\r\n",
	    "IPv6: Forwarded quoted and bracketed, XFF bare");
	is_str(rq(&req, &ctxnone), "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: http\r\n"
	    "Forwarded: for=unknown;proto=http\r\n\r\n", "no client address: for=unknown, no XFF/X-Real-IP");
	is_str(rq(&req, &ctxempty), "GET / HTTP/1.1\r\nHost: h\r\nX-Forwarded-Proto: https\r\n"
	    "Forwarded: for=unknown;proto=https\r\n\r\n", "empty client address: same as none");
}

/* add_headers, HTTP/1.0 keep-alive and upgrades. */
static void
test_request_add_and_connection(void)
{
	static const char *const add[] = { "Front-End-Https: On", "X-Relay: exrelay" };
	static const struct rewrite_request_ctx ctxadd = { "203.0.113.7", true, add, 2, false };
	struct http1_request req;

	req_init(&req, "GET", "/owa/", 1, "Host", "h", "front-end-https", "Off", "X-Other", "1", NULL);
	is_str(rq(&req, &ctxadd), "GET /owa/ HTTP/1.1\r\nHost: h\r\nX-Other: 1\r\n" FWD4S
	    "Front-End-Https: On\r\nX-Relay: exrelay\r\n\r\n", "add_headers appended; the client's copies dropped");

	req_init(&req, "GET", "/", 0, "Host", "h", "Connection", "Keep-Alive", "Keep-Alive", "300", NULL);
	req.keep_alive = true;
	is_str(rq(&req, &ctx4), "GET / HTTP/1.0\r\nHost: h\r\n" FWD4 "Connection: keep-alive\r\n\r\n",
	    "HTTP/1.0 keep-alive gets Connection: keep-alive");
	req_init(&req, "GET", "/", 0, NULL);
	is_str(rq(&req, &ctx4), "GET / HTTP/1.0\r\n" FWD4 "\r\n", "HTTP/1.0 without keep-alive: no Connection, no Host added");

	req_init(&req, "GET", "/chat", 1, "Host", "h", "Connection", "Upgrade", "Upgrade", "websocket",
	    "Sec-WebSocket-Key", "k", NULL);
	req.upgrade = true;
	is_str(rq(&req, &ctx4), "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n"
	    FWD4 "Connection: Upgrade\r\n\r\n", "upgrade: Upgrade kept, Connection: Upgrade added");
	req.upgrade = false;
	is_str(rq(&req, &ctx4), "GET /chat HTTP/1.1\r\nHost: h\r\nSec-WebSocket-Key: k\r\n" FWD4 "\r\n",
	    "not upgrading: Upgrade dropped");
}

/* Absolute-form targets become origin-form; their authority replaces Host. */
static void
test_request_absolute(void)
{
	struct http1_request req;

	req_init(&req, "GET", "http://Mail.Example.com:8080/owa/?a=b", 1, "User-Agent", "t", "host", "other",
	    "Accept", "*/*", NULL);
	req.absolute_form = true;
	req.authority = sl("Mail.Example.com:8080");
	req.path = sl("/owa/");
	req.query = sl("a=b");
	req.host = req.authority;
	is_str(rq(&req, &ctx4), "GET /owa/?a=b HTTP/1.1\r\nUser-Agent: t\r\nhost: Mail.Example.com:8080\r\n"
	    "Accept: */*\r\n" FWD4 "\r\n", "absolute-form: path?query, Host value replaced in place");

	req_init(&req, "GET", "http://h.example/x", 0, "Accept", "*/*", NULL);
	req.absolute_form = true;
	req.authority = sl("h.example");
	req.path = sl("/x");
	is_str(rq(&req, &ctx4), "GET /x HTTP/1.0\r\nHost: h.example\r\nAccept: */*\r\n" FWD4 "\r\n",
	    "absolute-form without Host: Host added first");

	req_init(&req, "GET", "http://h.example", 1, "Host", "h.example", NULL);
	req.absolute_form = true;
	req.authority = sl("h.example");
	req.path = sl("");
	is_str(rq(&req, &ctx4), "GET / HTTP/1.1\r\nHost: h.example\r\n" FWD4 "\r\n", "absolute-form, empty path: /");

	req_init(&req, "GET", "http://h.example?q", 1, "Host", "h.example", NULL);
	req.absolute_form = true;
	req.authority = sl("h.example");
	req.path = sl("");
	req.query = sl("q");
	is_str(rq(&req, &ctx4), "GET /?q HTTP/1.1\r\nHost: h.example\r\n" FWD4 "\r\n", "absolute-form, query only: /?q");

	req_init(&req, "OPTIONS", "http://h.example", 1, "Host", "h.example", NULL);
	req.absolute_form = true;
	req.authority = sl("h.example");
	req.path = sl("");
	is_str(rq(&req, &ctx4), "OPTIONS * HTTP/1.1\r\nHost: h.example\r\n" FWD4 "\r\n", "absolute-form OPTIONS, empty path: *");
}

/* Response heads. */
static void
test_response(void)
{
	struct http1_response resp;

	resp_init(&resp, 1, 200, "OK", "Content-Type", "text/html", "connection", "keep-alive", "Keep-Alive",
	    "timeout=5", "Content-Length", "10", "X-OWA-Version", "15.2", NULL);
	is_str(rs(&resp, false, false), "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n"
	    "X-OWA-Version: 15.2\r\n\r\n", "200: hop-by-hop dropped, nothing added for HTTP/1.1 keep-alive");
	is_str(rs(&resp, true, false), "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n"
	    "X-OWA-Version: 15.2\r\nConnection: close\r\n\r\n", "close: Connection: close");
	is_str(rs(&resp, false, true), "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n"
	    "X-OWA-Version: 15.2\r\nConnection: keep-alive\r\n\r\n", "HTTP/1.0 client: Connection: keep-alive");
	is_str(rs(&resp, true, true), "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 10\r\n"
	    "X-OWA-Version: 15.2\r\nConnection: close\r\n\r\n", "HTTP/1.0 client and close: close wins");

	resp_init(&resp, 1, 401, "Unauthorized", "WWW-Authenticate", "Negotiate", "WWW-Authenticate", "NTLM",
	    "Connection", "X-Secret, Transfer-Encoding", "X-Secret", "s", "Transfer-Encoding", "chunked",
	    "Proxy-Connection", "x", "TE", "x", "Upgrade", "h2c", "Set-Cookie", "a=1", NULL);
	is_str(rs(&resp, false, false), "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Negotiate\r\n"
	    "WWW-Authenticate: NTLM\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\n\r\n",
	    "401: repeated fields kept in order; named, Proxy-Connection, TE, Upgrade dropped; framing kept");

	resp_init(&resp, 1, 101, "Switching Protocols", "Upgrade", "websocket", "Connection", "Upgrade",
	    "Sec-WebSocket-Accept", "x", NULL);
	is_str(rs(&resp, true, false), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
	    "Sec-WebSocket-Accept: x\r\nConnection: Upgrade\r\n\r\n", "101: Upgrade and Connection: Upgrade kept");

	resp_init(&resp, 1, 100, "Continue", NULL);
	is_str(rs(&resp, true, true), "HTTP/1.1 100 Continue\r\n\r\n", "100: no Connection field");

	resp_init(&resp, 0, 200, "", "Server", "x", NULL);
	is_str(rs(&resp, true, false), "HTTP/1.0 200 \r\nServer: x\r\nConnection: close\r\n\r\n",
	    "HTTP/1.0 backend, empty reason: status line as sent");

	resp_init(&resp, 1, 599, "Custom Thing", NULL);
	is_str(rs(&resp, false, false), "HTTP/1.1 599 Custom Thing\r\n\r\n", "unknown status and reason kept");
}

/* Content-Length written once, as one number (RFC 9110 8.6), both ways. */
static void
test_content_length_once(void)
{
	const struct http1_request *req;
	struct http1_response resp;

	req = parse_req("POST /owa/ HTTP/1.1\r\nHost: h\r\ncontent-length: 5, 5\r\nX: 1\r\n"
	    "Content-Length: 5\r\n\r\n");
	ok(req != NULL, "request with Content-Length 5, 5 and 5 parses");
	if (req != NULL)
		is_str(rq(req, &ctx4), "POST /owa/ HTTP/1.1\r\nHost: h\r\ncontent-length: 5\r\nX: 1\r\n" FWD4 "\r\n",
		    "request: one Content-Length 5, where and as the first was named");
	req = parse_req("POST /owa/ HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n");
	if (req != NULL)
		is_str(rq(req, &ctx4), "POST /owa/ HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\n" FWD4 "\r\n",
		    "request: Content-Length 007 as the number 7");
	req = parse_req("RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: h\r\nContent-Length: 2147483648\r\n\r\n");
	if (req != NULL)
		is_str(rq(req, &ctx4), "RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: h\r\n"
		    "Content-Length: 2147483648\r\n" FWD4 "\r\n", "request: 2 GiB RPC length unchanged");

	resp_init(&resp, 1, 200, "OK", "Content-Length", "5, 5", "X", "y", "content-length", "5", NULL);
	resp.has_content_length = true;
	resp.content_length = 5;
	resp.body = HTTP1_BODY_LENGTH;
	is_str(rs(&resp, false, false), "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\n",
	    "response: a backend's Content-Length 5, 5 and 5 reach the client as one 5");
	resp_init(&resp, 1, 200, "OK", "Content-Length", "9, 9", NULL);
	resp.has_content_length = true;
	resp.content_length = 9;
	resp.body = HTTP1_BODY_NONE;		/* an answer to HEAD */
	is_str(rs(&resp, false, false), "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
	    "response to HEAD: Content-Length 9, 9 as one 9");
}

/* Upgrade only for websocket; h2c requests go on as plain HTTP/1.1; absolute-form without a path. */
static void
test_upgrade_and_absolute(void)
{
	const struct http1_request *req;

	req = parse_req("GET /owa/ HTTP/1.1\r\nHost: h\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
	    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-A: 1\r\n\r\n");
	if (ok(req != NULL && !req->upgrade, "h2c: parsed, not an upgrade"))
		is_str(rq(req, &ctx4), "GET /owa/ HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n" FWD4 "\r\n",
		    "h2c: Upgrade, HTTP2-Settings and Connection dropped; plain HTTP/1.1");
	req = parse_req("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\nUpgrade: h2c\r\nHTTP2-Settings: x\r\n\r\n");
	if (req != NULL)
		is_str(rq(req, &ctx4), "GET / HTTP/1.1\r\nHost: h\r\n" FWD4 "\r\n",
		    "h2c: HTTP2-Settings dropped even when Connection does not name it");
	req = parse_req("GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n"
	    "Sec-WebSocket-Key: k\r\n\r\n");
	if (ok(req != NULL && req->upgrade, "websocket: an upgrade"))
		is_str(rq(req, &ctx4), "GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: WebSocket\r\nSec-WebSocket-Key: k\r\n"
		    FWD4 "Connection: Upgrade\r\n\r\n", "websocket: Upgrade kept, Connection: Upgrade added");

	req = parse_req("GET http://h.example HTTP/1.1\r\nHost: h.example\r\n\r\n");
	if (ok(req != NULL, "absolute-form without a path parses"))
		is_str(rq(req, &ctx4), "GET / HTTP/1.1\r\nHost: h.example\r\n" FWD4 "\r\n",
		    "absolute-form without a path: origin-form /");
	req = parse_req("OPTIONS http://h.example:80 HTTP/1.1\r\nHost: h.example\r\n\r\n");
	if (req != NULL)
		is_str(rq(req, &ctx4), "OPTIONS * HTTP/1.1\r\nHost: h.example:80\r\n" FWD4 "\r\n",
		    "absolute-form OPTIONS without a path: *");
}

/* strip_internal: Exchange-internal headers and '_' look-alikes dropped; Cookie and the rest kept. */
static void
test_strip_internal(void)
{
	static const char *const add[] = { "Front-End-Https: On", "X-Relay-Id: 1" };
	static const struct rewrite_request_ctx strip = { "203.0.113.7", false, add, 2, true };
	static const struct rewrite_request_ctx keep = { "203.0.113.7", false, NULL, 0, false };
	static const char head[] = "GET /owa/ HTTP/1.1\r\nHost: h\r\n"
	    "X-CommonAccessToken: a\r\nx-commonaccesstoken: a\r\nX_CommonAccessToken: a\r\n"
	    "X-IsFromCafe: 1\r\nx_isfromcafe: 1\r\nX-SourceCafeServer: s\r\nmsExchProxyUri: u\r\n"
	    "MSEXCHPROXYURI: u\r\nX-MSExchangeProxyLogonToken: t\r\nX_MSExchangeProxyLogonToken: t\r\n"
	    "X-BEResource: localhost/owa/auth/x.js~1942062522\r\nX_BEResource: b\r\nX-AnonResource: true\r\n"
	    "X-AnonResource-Backend: localhost/ecp/x.js~1\r\nX_AnonResource_Backend: b\r\n"
	    "msExchLogonAccount: a\r\nmsExchLogonMailbox: S-1-5-20\r\nmsExchTargetMailbox: m\r\n"
	    "X-Forwarded_For: 6.6.6.6\r\nX_Forwarded_For: 6.6.6.6\r\nX-Forwarded_Proto: https\r\n"
	    "X_Real_IP: 6.6.6.6\r\nX-Real_IP: 6.6.6.6\r\nFront_End_Https: On\r\nKeep_Alive: 1\r\n"
	    "Proxy_Connection: x\r\nHTTP2_Settings: x\r\nX_Relay_Id: forged\r\n"
	    "X-AnchorMailbox: SMTP:alice@example.com\r\n"
	    "Cookie: X-BackEndCookie=S-1-5-21=abc; X-BEResource=localhost~1; X-AnonResource-Backend=x\r\n"
	    "X_Custom: kept\r\nX-Forwarded-Host: kept\r\nX-IsFromCafeX: kept\r\n\r\n";
	const struct http1_request *req = parse_req(head);
	const char *got;

	if (!ok(req != NULL, "strip_internal: the head parses"))
		return;
	is_str(rq(req, &strip), "GET /owa/ HTTP/1.1\r\nHost: h\r\nX-AnchorMailbox: SMTP:alice@example.com\r\n"
	    "Cookie: X-BackEndCookie=S-1-5-21=abc; X-BEResource=localhost~1; X-AnonResource-Backend=x\r\n"
	    "X_Custom: kept\r\nX-Forwarded-Host: kept\r\nX-IsFromCafeX: kept\r\n"
	    "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: http\r\nX-Real-IP: 203.0.113.7\r\n"
	    "Forwarded: for=203.0.113.7;proto=http\r\nFront-End-Https: On\r\nX-Relay-Id: 1\r\n\r\n",
	    "strip_internal: every internal name in any case and spelling, every '_' look-alike (add_headers "
	    "too) dropped; Cookie values, X-AnchorMailbox, other '_' names kept");
	got = rq(req, &keep);
	ok(strstr(got, "X-CommonAccessToken: a\r\n") != NULL && strstr(got, "X_Real_IP: 6.6.6.6\r\n") != NULL &&
	    strstr(got, "msExchLogonMailbox: S-1-5-20\r\n") != NULL, "strip_internal false: nothing of it dropped");
	req = parse_req("GET / HTTP/1.1\r\nHost: h\r\nFront-End-Https: On\r\n\r\n");
	if (req != NULL)
		is_str(rq(req, &(struct rewrite_request_ctx){ "203.0.113.7", false, NULL, 0, true }),
		    "GET / HTTP/1.1\r\nHost: h\r\nFront-End-Https: On\r\n" FWD4 "\r\n",
		    "strip_internal: Front-End-Https itself is only replaced when add_headers sets it");
}

/* exrelay's own responses and the reason table. */
static void
test_status_response(void)
{
	static const int codes[] = { 100, 101, 200, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408,
	    411, 413, 414, 417, 421, 431, 500, 501, 502, 503, 504, 505 };
	size_t i, unknown = 0;

	for (i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
		if (strcmp(rewrite_reason(codes[i]), "Unknown") == 0)
			unknown++;
	is_int(unknown, 0, "every required status has a reason phrase");
	is_str(rewrite_reason(404), "Not Found", "reason 404");
	is_str(rewrite_reason(405), "Method Not Allowed", "reason 405");
	is_str(rewrite_reason(502), "Bad Gateway", "reason 502");
	is_str(rewrite_reason(431), "Request Header Fields Too Large", "reason 431");
	is_str(rewrite_reason(999), "Unknown", "reason 999: Unknown");
	is_str(rewrite_reason(0), "Unknown", "reason 0: Unknown");

	is_str(st(404, false, NULL, NULL, false), "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 10\r\n\r\nNot Found\n", "404 default body");
	is_str(st(400, true, NULL, NULL, false), "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 12\r\nConnection: close\r\n\r\nBad Request\n", "400 with close");
	is_str(st(503, false, "Retry-After: 5\r\n", "draining", false), "HTTP/1.1 503 Service Unavailable\r\n"
	    "Content-Type: text/plain\r\nContent-Length: 8\r\nRetry-After: 5\r\n\r\ndraining", "503 with extra and body");
	is_str(st(200, false, NULL, "ok", true), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 2\r\n\r\n", "head_only keeps Content-Length, no body");
	is_str(st(405, true, "Allow: RPC_IN_DATA, RPC_OUT_DATA\r\n", NULL, false),
	    "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain\r\nContent-Length: 19\r\n"
	    "Connection: close\r\nAllow: RPC_IN_DATA, RPC_OUT_DATA\r\n\r\nMethod Not Allowed\n", "405 with Allow");
	is_str(st(200, false, NULL, "", false), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 0\r\n\r\n", "empty body");
	is_str(st(100, true, NULL, NULL, false), "HTTP/1.1 100 Continue\r\n\r\n", "100: no content fields, no close");
	is_str(st(204, true, NULL, NULL, false), "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
	    "204: no content fields");
	is_str(st(299, false, NULL, NULL, false), "HTTP/1.1 299 Unknown\r\nContent-Type: text/plain\r\n"
	    "Content-Length: 8\r\n\r\nUnknown\n", "unknown status");
	is_int(rewrite_status_response(out, sizeof(out), 42, false, NULL, NULL, false), -1, "status 42 refused");
}

typedef ssize_t (*gen_fn)(char *buf, size_t cap, int which);

/* The heads the cap test builds, by number. */
static ssize_t
gen(char *buf, size_t cap, int which)
{
	static const char *const add[] = { "Front-End-Https: On" };
	static const struct rewrite_request_ctx ctx = { "2001:db8::1", true, add, 1, false };
	struct rewrite_response_ctx rctx = { true, false };
	struct http1_request req;
	struct http1_response resp;

	switch (which) {
	case 0:
		req_init(&req, "RPC_OUT_DATA", "/rpc/rpcproxy.dll?mail:6004", 0, "Host", "h", "Connection",
		    "Keep-Alive, X-A", "X-A", "1", "X-Forwarded-For", "9.9.9.9", "Content-Length", "76", NULL);
		req.keep_alive = true;
		return rewrite_request(buf, cap, &req, &ctx);
	case 1:
		req_init(&req, "GET", "http://h.example:81/x?y", 1, "Accept", "*/*", NULL);
		req.absolute_form = true;
		req.authority = sl("h.example:81");
		req.path = sl("/x");
		req.query = sl("y");
		return rewrite_request(buf, cap, &req, &ctx);
	case 2:
		resp_init(&resp, 1, 200, "OK", "Connection", "X-B", "X-B", "2", "Content-Length", "0", NULL);
		return rewrite_response(buf, cap, &resp, &rctx);
	case 3:
		resp_init(&resp, 1, 101, "Switching Protocols", "Upgrade", "websocket", NULL);
		return rewrite_response(buf, cap, &resp, &rctx);
	case 4:
		return rewrite_status_response(buf, cap, 502, true, "X-E: 1\r\n", NULL, false);
	default:
		return rewrite_status_response(buf, cap, 200, false, NULL, "ok", true);
	}
}

/* Every cap below the size needed fails with -1 and never writes past cap; the exact size works. */
static void
test_caps(void)
{
	static char want[2048], buf[2048];
	ssize_t need, n;
	size_t cap, bad;
	int which;

	for (which = 0; which < 6; which++) {
		need = gen(want, sizeof(want), which);
		ok(need > 0, "cap %d: builds (%zd bytes)", which, need);
		if (need <= 0)
			continue;
		bad = 0;
		for (cap = 0; cap < (size_t)need; cap++) {
			memset(buf, '#', sizeof(buf));
			n = gen(buf, cap, which);
			if (n != -1 || buf[cap] != '#')
				bad++;
		}
		is_int(bad, 0, "cap %d: every cap from 0 to %zd gives -1, canary intact", which, need - 1);
		memset(buf, '#', sizeof(buf));
		n = gen(buf, (size_t)need, which);
		ok(n == need && memcmp(buf, want, (size_t)need) == 0 && buf[need] == '#',
		    "cap %d: exact cap works, same bytes, nothing past it", which);
	}
}

int
main(void)
{
	test_request_basic();
	test_request_hop_by_hop();
	test_request_forwarded();
	test_request_add_and_connection();
	test_request_absolute();
	test_response();
	test_content_length_once();
	test_upgrade_and_absolute();
	test_strip_internal();
	test_status_response();
	test_caps();
	return done_testing();
}
