/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_http1.c: TAP tests of relay/http1.c (head parsers, framing, chunked bodies).
 *
 * Every input is parsed from a copy placed right before a PROT_NONE page, so a read past
 * len crashes (picohttpparser's trick); every head is also parsed at every proper prefix,
 * which must say NEED_MORE until the first error, and the same error from then on.
 */
#include <stdint.h>
#include <time.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http1.h"
#include "tap.h"

#define AREA		(256 * 1024)	/* readable bytes before the guard page */
#define MAXH		100
#define DEF_HEAD	65536

static char *area_end;			/* first byte of the PROT_NONE page */
static struct http1_header hdrs[MAXH + 1];
static struct http1_request R;
static struct http1_response S;

/* Maps the readable area followed by an unreadable page. */
static void
guard_setup(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, AREA + (size_t)pg, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED || mprotect(m + AREA, (size_t)pg, PROT_NONE) == -1) {
		perror("mmap/mprotect");
		exit(2);
	}
	area_end = m + AREA;
}

/* Copies s[0..n) so that its last byte is the last readable byte. */
static const char *
place(const char *s, size_t n)
{
	if (n > AREA)
		abort();
	memcpy(area_end - n, s, n);
	return area_end - n;
}

static ssize_t
preq_lim(const char *s, size_t n, size_t max_head, size_t max_headers)
{
	struct http1_limits lim = { max_head, max_headers };

	R.headers = hdrs;
	return http1_parse_request(place(s, n), n, &lim, &R);
}

static ssize_t
preq(const char *s, size_t n)
{
	return preq_lim(s, n, DEF_HEAD, MAXH);
}

static ssize_t
presp_m(const char *s, size_t n, const char *method)
{
	struct http1_limits lim = { DEF_HEAD, MAXH };
	struct http1_slice m = { method, strlen(method) };

	S.headers = hdrs;
	return http1_resp_parse(place(s, n), n, &lim, m, &S);
}

/*
 * Parses every proper prefix of a request with step `step`: NEED_MORE until an error, then
 * that same error for all longer prefixes, and the full result must continue that. True if so.
 */
static bool
req_prefixes(const char *s, size_t n, ssize_t full_rc, int full_status, size_t step)
{
	int err_status = 0;
	size_t k;
	ssize_t rc;

	for (k = 0; k < n; k += (k + 64 >= n) ? 1 : step) {
		rc = preq(s, k);
		if (rc == HTTP1_NEED_MORE && err_status == 0)
			continue;
		if (rc == HTTP1_ERROR && (err_status == 0 || R.status == err_status)) {
			err_status = R.status;
			continue;
		}
		diag("  prefix %zu: rc %zd status %d (earlier error %d)", k, rc, R.status, err_status);
		return false;
	}
	if (err_status)
		return full_rc == HTTP1_ERROR && full_status == err_status;
	return true;
}

/* Same for responses (only the error/need distinction: responses carry no status). */
static bool
resp_prefixes(const char *s, size_t n, const char *method)
{
	bool failed = false;
	size_t k;
	ssize_t rc;

	for (k = 0; k < n; k++) {
		rc = presp_m(s, k, method);
		if (rc == HTTP1_NEED_MORE && !failed)
			continue;
		if (rc == HTTP1_ERROR) {
			failed = true;
			continue;
		}
		diag("  prefix %zu: rc %zd", k, rc);
		return false;
	}
	return true;
}

/* Parses a complete request; checks the result and all its prefixes. status 0 = valid. */
static void
req_case(const char *name, const char *s, size_t n, int status)
{
	ssize_t rc = preq(s, n);
	int st = R.status;
	bool pref;

	if (status == 0) {
		if (!ok(rc == (ssize_t)n, "request %s: accepted", name))
			diag("  rc %zd status %d error %s", rc, R.status, R.error ? R.error : "");
	} else {
		if (!ok(rc == HTTP1_ERROR && st == status, "request %s: %d", name, status))
			diag("  rc %zd status %d error %s", rc, st, R.error ? R.error : "");
	}
	pref = req_prefixes(s, n, rc, st, 1);
	if (!pref)
		ok(0, "request %s: prefixes", name);
	(void)preq(s, n);	/* leave R describing the full head */
}

#define REQ(name, lit, status) req_case(name, lit, sizeof(lit) - 1, status)

static bool
slice_eq(struct http1_slice s, const char *want)
{
	return s.len == strlen(want) && (s.len == 0 || memcmp(s.p, want, s.len) == 0);
}

#define is_slice(s, want, ...) do { \
	struct http1_slice s_ = (s); \
	if (!ok(slice_eq(s_, want), __VA_ARGS__)) \
		diag("  got \"%.*s\", want \"%s\"", (int)s_.len, s_.p ? s_.p : "", want); \
} while (0)

static void
test_request_basics(void)
{
	static const char rpc_in[] =
	    "RPC_IN_DATA /rpc/rpcproxy.dll?mail.example.com:6001 HTTP/1.1\r\n"
	    "Accept: application/rpc\r\n"
	    "User-Agent: MSRPC\r\n"
	    "Host: mail.example.com\r\n"
	    "Content-Length: 1073741824\r\n"
	    "Connection: Keep-Alive\r\n"
	    "Cache-Control: no-cache\r\n"
	    "Pragma: SessionId=6f0e1f1c-1c3b-4c8e-8d6a-2b1e9d0f3a11\r\n"
	    "Authorization: Basic dXNlcjpwYXNz\r\n"
	    "\r\n";
	static const char rpc_out[] =
	    "RPC_OUT_DATA /rpc/rpcproxy.dll?mail.example.com:6001 HTTP/1.1\r\n"
	    "Host: mail.example.com\r\n"
	    "Content-Length: 76\r\n"
	    "\r\n"
	    "\x05\x00\x14\x03";	/* body bytes follow the head */

	REQ("RPC_IN_DATA", rpc_in, 0);
	is_slice(R.method, "RPC_IN_DATA", "RPC_IN_DATA method");
	is_slice(R.path, "/rpc/rpcproxy.dll", "RPC_IN_DATA path");
	is_slice(R.query, "mail.example.com:6001", "RPC_IN_DATA query");
	is_slice(R.host, "mail.example.com", "RPC_IN_DATA host");
	is_int(R.body, HTTP1_BODY_LENGTH, "RPC_IN_DATA BODY_LENGTH");
	ok(R.content_length == 1073741824u, "RPC_IN_DATA length 1073741824");
	ok(R.keep_alive && !R.expect_continue && !R.upgrade && !R.is_connect && !R.absolute_form,
	    "RPC_IN_DATA flags");
	is_int(R.nheaders, 8, "RPC_IN_DATA 8 fields");
	is_slice(R.headers[7].name, "Authorization", "field name case kept");
	is_slice(R.headers[7].value, "Basic dXNlcjpwYXNz", "field value");
	is_int(R.minor, 1, "minor 1");

	is_int(preq(rpc_out, sizeof(rpc_out) - 1), sizeof(rpc_out) - 1 - 4,
	    "RPC_OUT_DATA: head_len excludes the body bytes after it");
	is_int(R.head_len, sizeof(rpc_out) - 1 - 4, "head_len field");
	ok(R.content_length == 76, "RPC_OUT_DATA length 76");

	REQ("CL 2147483648",
	    "RPC_IN_DATA /rpc/rpcproxy.dll?x:6001 HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483648\r\n\r\n", 0);
	ok(R.content_length == UINT64_C(2147483648), "2 GiB length kept in 64 bits");
	REQ("CL 2^63-1",
	    "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775807\r\n\r\n", 0);
	ok(R.content_length == UINT64_C(9223372036854775807), "2^63-1 kept");
	REQ("CL 2^63", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n", 400);
	REQ("CL 2^64+5 (wraps)", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 18446744073709551621\r\n\r\n", 400);
	REQ("CL 0", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 0);
	ok(R.body == HTTP1_BODY_LENGTH && R.content_length == 0, "CL 0: BODY_LENGTH 0");
	REQ("CL leading zeros", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 007\r\n\r\n", 0);
	ok(R.content_length == 7, "007 is 7");
	REQ("echo CL 4", "RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n", 0);
	REQ("no body", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_int(R.body, HTTP1_BODY_NONE, "GET without CL/TE: BODY_NONE");
	REQ("PROPFIND", "PROPFIND /ews/ HTTP/1.1\r\nHost: x\r\nDepth: 0\r\n\r\n", 0);
	is_slice(R.method, "PROPFIND", "PROPFIND method");
	REQ("method with tchars", "X-MS.Method!~ / HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	REQ("leading CRLFs", "\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_slice(R.method, "GET", "method after leading CRLFs");
	REQ("query only", "GET /?a=b?c HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_slice(R.path, "/", "path before first ?");
	is_slice(R.query, "a=b?c", "query after first ?");
	REQ("empty query", "GET /p? HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	ok(slice_eq(R.path, "/p") && R.query.len == 0, "empty query");
}

static void
test_request_fields(void)
{
	static char big[60 * 1024];
	size_t n;
	ssize_t rc;

	REQ("OWS trimmed", "GET / HTTP/1.1\r\nHost:\t x \t\r\nX-A:  v w \r\n\r\n", 0);
	is_slice(R.headers[0].value, "x", "leading/trailing OWS trimmed");
	is_slice(R.headers[1].value, "v w", "inner SP kept");
	REQ("empty value", "GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nX-Sp:   \r\n\r\n", 0);
	ok(R.headers[1].value.len == 0 && R.headers[2].value.len == 0, "empty values have len 0");
	REQ("obs-text", "GET / HTTP/1.1\r\nHost: x\r\nX-N: caf\xc3\xa9 \xff\r\n\r\n", 0);
	is_slice(R.headers[1].value, "caf\xc3\xa9 \xff", "obs-text kept");
	REQ("HTAB inside value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\r\n\r\n", 0);

	REQ("NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n", 400);
	REQ("NUL in name", "GET / HTTP/1.1\r\nHost: x\r\nX\0: ab\r\n\r\n", 400);
	REQ("NUL in target", "GET /a\0b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("NUL in Host", "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n", 400);
	REQ("bare CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n", 400);
	REQ("bare LF in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\nb\r\n\r\n", 400);
	REQ("DEL in value", "GET / HTTP/1.1\r\nHost: x\r\nX: a\x7f\r\n\r\n", 400);
	REQ("VT in value", "GET / HTTP/1.1\r\nHost: x\r\nX: \x0b" "a\r\n\r\n", 400);
	REQ("ESC in value", "GET / HTTP/1.1\r\nHost: x\r\nX: \x1b[31m\r\n\r\n", 400);
	REQ("obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400);
	REQ("obs-fold HTAB", "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n\tb\r\n\r\n", 400);
	REQ("SP before first field", "GET / HTTP/1.1\r\n Host: x\r\n\r\n", 400);
	REQ("SP before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400);
	REQ("HTAB before colon", "GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400);
	REQ("no colon", "GET / HTTP/1.1\r\nHost: x\r\nNoColon\r\n\r\n", 400);
	REQ("empty name", "GET / HTTP/1.1\r\nHost: x\r\n: v\r\n\r\n", 400);
	REQ("bad name char", "GET / HTTP/1.1\r\nHost: x\r\nX(y): v\r\n\r\n", 400);
	REQ("LF-only lines", "GET / HTTP/1.1\nHost: x\n\n", 400);
	REQ("LF-only field line", "GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n", 400);
	REQ("LF-only final line", "GET / HTTP/1.1\r\nHost: x\r\n\n", 400);
	REQ("bare CR final line", "GET / HTTP/1.1\r\nHost: x\r\n\rX", 400);
	REQ("bare LF before request line", "\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("bare CR before request line", "\rGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400);

	/* a Negotiate token of 50 KiB in one field, within a 65536 head limit */
	n = (size_t)snprintf(big, sizeof(big), "RPC_IN_DATA /rpc/rpcproxy.dll?x:6001 HTTP/1.1\r\n"
	    "Host: x\r\nAuthorization: Negotiate ");
	memset(big + n, 'A', 50 * 1024);
	n += 50 * 1024;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nContent-Length: 104\r\n\r\n");
	rc = preq(big, n);
	is_int(rc, n, "50 KiB Negotiate field accepted");
	is_int(R.headers[1].value.len, 10 + 50 * 1024, "50 KiB value slice");
	ok(req_prefixes(big, n, rc, 0, 997), "50 KiB head: prefixes (step 997) need more");
	rc = preq_lim(big, n, n, MAXH);
	is_int(rc, n, "head exactly max_head_size accepted");
	rc = preq_lim(big, n, n - 1, MAXH);
	ok(rc == HTTP1_ERROR && R.status == 431, "head one byte over the limit: 431");
	rc = preq_lim(big, n - 1, n, MAXH);
	is_int(rc, HTTP1_NEED_MORE, "one byte short, under the limit: NEED_MORE");
	rc = preq_lim(big, 30000, 30000, MAXH);
	ok(rc == HTTP1_ERROR && R.status == 431, "limit reached inside a field: 431");
	rc = preq_lim(big, 20, 20, MAXH);
	ok(rc == HTTP1_ERROR && R.status == 414, "limit reached inside the request line: 414");
	rc = preq_lim(big, 200, 20, MAXH);
	ok(rc == HTTP1_ERROR && R.status == 414, "more bytes than the limit, line unfinished: 414");
	rc = preq_lim(big, 19, 20, MAXH);
	is_int(rc, HTTP1_NEED_MORE, "under the limit: NEED_MORE");
}

static void
test_request_line(void)
{
	REQ("HTTP/1.0", "GET / HTTP/1.0\r\n\r\n", 0);
	ok(R.minor == 0 && !R.keep_alive && R.host.len == 0, "HTTP/1.0 without Host, no keep-alive");
	REQ("HTTP/1.0 keep-alive",
	    "RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.0\r\nConnection: Keep-Alive\r\nContent-Length: 4\r\n\r\n", 0);
	ok(R.keep_alive, "HTTP/1.0 Connection: Keep-Alive keeps alive");
	REQ("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505);
	REQ("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505);
	REQ("HTTP/0.9 form", "GET /\r\n\r\n", 400);
	REQ("HTTP/1", "GET / HTTP/1\r\nHost: x\r\n\r\n", 400);
	REQ("http/1.1 lower case", "GET / http/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("HTTP/1.10", "GET / HTTP/1.10\r\nHost: x\r\n\r\n", 400);
	REQ("HTTP/1.1 trailing SP", "GET / HTTP/1.1 \r\nHost: x\r\n\r\n", 400);
	REQ("double SP", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("HTAB separator", "GET\t/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("empty method", " / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("bad method char", "GE(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("SP in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("0x80 in target", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("CTL in target", "GET /a\x01 HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("bare LF request line", "GET / HTTP/1.1\nHost: x\r\n\r\n", 400);
	REQ("bare CR request line", "GET / HTTP/1.1\rHost: x\r\n\r\n", 400);
	REQ("relative target", "GET index.html HTTP/1.1\r\nHost: x\r\n\r\n", 400);

	REQ("OPTIONS *", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_slice(R.path, "*", "asterisk-form path");
	REQ("GET *", "GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form", "GET http://Mail.Example.com:8080/owa/?a=1 HTTP/1.1\r\nHost: other\r\n\r\n", 0);
	ok(R.absolute_form, "absolute_form set");
	is_slice(R.authority, "Mail.Example.com:8080", "authority");
	is_slice(R.host, "Mail.Example.com:8080", "host is the authority");
	is_slice(R.path, "/owa/", "absolute-form path");
	is_slice(R.query, "a=1", "absolute-form query");
	REQ("absolute-form HTTPS upper case", "RPC_OUT_DATA HTTPS://x/rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: 76\r\n\r\n", 0);
	is_slice(R.path, "/rpc/rpcproxy.dll", "https path");
	REQ("absolute-form no path", "GET http://x HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	ok(slice_eq(R.path, "/") && slice_eq(R.authority, "x"), "no path: / (RFC 9112 3.2.2)");
	REQ("absolute-form query no path", "GET http://x?q HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	ok(slice_eq(R.path, "/") && slice_eq(R.query, "q"), "no path, query q: path /");
	REQ("absolute-form OPTIONS no path", "OPTIONS http://x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_slice(R.path, "*", "OPTIONS without path and query: * (RFC 9112 3.2.4)");
	REQ("absolute-form OPTIONS query", "OPTIONS http://x?q HTTP/1.1\r\nHost: x\r\n\r\n", 0);
	is_slice(R.path, "/", "OPTIONS with a query: /");
	REQ("fragment", "GET /ecp#/../index.html HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("fragment in query", "GET /owa/?a=b#c HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("empty fragment", "GET /# HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("fragment absolute-form", "GET http://x/a#b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("fragment after authority", "GET http://x#b HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form IPv6", "GET http://[::1]:80/ HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 0);
	REQ("absolute-form HTTP/1.0 no Host", "GET http://x/ HTTP/1.0\r\n\r\n", 0);
	is_slice(R.host, "x", "1.0 absolute-form host");
	REQ("absolute-form 1.1 without Host", "GET http://x/ HTTP/1.1\r\n\r\n", 400);
	REQ("absolute-form userinfo", "GET http://user:pw@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form userinfo no pw", "GET http://evil@x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form ftp", "GET ftp://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form empty authority", "GET http:///p HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("absolute-form bad port", "GET http://x:8o/ HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("CONNECT", "CONNECT mail.example.com:443 HTTP/1.1\r\nHost: mail.example.com:443\r\n\r\n", 0);
	ok(R.is_connect && !R.absolute_form && R.path.len == 0, "CONNECT: is_connect");
	REQ("CONNECT without port", "CONNECT mail.example.com HTTP/1.1\r\nHost: x\r\n\r\n", 400);
	REQ("CONNECT origin-form", "CONNECT / HTTP/1.1\r\nHost: x\r\n\r\n", 400);
}

static void
test_request_framing(void)
{
	REQ("chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0);
	is_int(R.body, HTTP1_BODY_CHUNKED, "chunked: BODY_CHUNKED");
	REQ("Chunked mixed case HTAB", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\tChunKed\r\n\r\n", 0);
	is_int(R.body, HTTP1_BODY_CHUNKED, "ChunKed: BODY_CHUNKED");
	REQ("TE empty list elements", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: , chunked ,\r\n\r\n", 0);
	REQ("CL.TE", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
	REQ("TE.CL", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n", 400);
	REQ("CL + TE gzip", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
	REQ("TE SP colon", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\n", 400);
	REQ("TE xchunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n", 501);
	REQ("TE chunkedx", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked-x\r\n\r\n", 501);
	REQ("TE gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501);
	REQ("TE identity", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: identity\r\n\r\n", 501);
	REQ("TE chunked, gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 501);
	REQ("TE gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
	REQ("TE chunked twice in a list", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 501);
	REQ("TE chunked in two fields", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501);
	REQ("TE chunked then identity field", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n", 501);
	REQ("TE chunked with parameter", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 501);
	REQ("TE empty", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n\r\n", 400);
	REQ("TE on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
	REQ("TE VT chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0b" "chunked\r\n\r\n", 400);
	REQ("TE obs-fold", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n", 400);

	REQ("CL +5", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\n", 400);
	REQ("CL -5", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400);
	REQ("CL hex", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400);
	REQ("CL ' 5 5'", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:  5 5\r\n\r\n", 400);
	REQ("CL 1e3", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1e3\r\n\r\n", 400);
	REQ("CL empty", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400);
	REQ("CL list '5, 5'", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 0);
	ok(R.body == HTTP1_BODY_LENGTH && R.content_length == 5, "5, 5 is 5");
	REQ("CL list '5,6'", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,6\r\n\r\n", 400);
	REQ("CL list '5,'", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5,\r\n\r\n", 400);
	REQ("CL two fields same", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\n", 0);
	ok(R.content_length == 5, "two identical CL fields: 5");
	REQ("CL two fields differ", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\n", 400);
	REQ("CL 5 and 05", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 05\r\n\r\n", 0);

	REQ("Host missing", "GET / HTTP/1.1\r\nX: y\r\n\r\n", 400);
	REQ("Host twice", "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
	REQ("Host twice on 1.0", "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n", 400);
	REQ("Host empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
	REQ("Host with SP", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
	REQ("Host list", "GET / HTTP/1.1\r\nHost: a,b\r\n\r\n", 400);
	REQ("Host userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400);
	REQ("Host slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
	REQ("Host port", "GET / HTTP/1.1\r\nHost: mail.example.com:443\r\n\r\n", 0);
	REQ("Host IPv4", "GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n", 0);
	REQ("Host IPv6", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8443\r\n\r\n", 0);
	REQ("Host pct", "GET / HTTP/1.1\r\nHost: ex%41mple\r\n\r\n", 0);
	REQ("Host bad pct", "GET / HTTP/1.1\r\nHost: ex%4\r\n\r\n", 400);
	REQ("Host unclosed [", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", 400);
	REQ("Host port letters", "GET / HTTP/1.1\r\nHost: a:http\r\n\r\n", 400);
	REQ("Host port too big", "GET / HTTP/1.1\r\nHost: a:65536\r\n\r\n", 400);
	REQ("Host port empty", "GET / HTTP/1.1\r\nHost: a:\r\n\r\n", 400);
	REQ("Host only port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n", 400);

	REQ("Connection close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 0);
	ok(!R.keep_alive, "1.1 Connection: close");
	REQ("Connection list close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: TE, Close\r\n\r\n", 0);
	ok(!R.keep_alive, "1.1 Connection: TE, Close");
	REQ("Connection second field", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", 0);
	ok(!R.keep_alive, "close in a second Connection field");
	REQ("1.1 default", "GET / HTTP/1.1\r\nHost: x\r\nConnection: closed\r\n\r\n", 0);
	ok(R.keep_alive, "1.1 'closed' is not 'close'");
	REQ("Expect", "RPC_IN_DATA / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\n", 0);
	ok(R.expect_continue, "Expect: 100-Continue");
	REQ("Expect other", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 200-ok\r\n\r\n", 0);
	ok(!R.expect_continue, "other Expect ignored");
	REQ("Expect on 1.0", "POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", 0);
	ok(!R.expect_continue, "Expect on HTTP/1.0 ignored");
	REQ("Upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n", 0);
	ok(R.upgrade, "Upgrade + Connection: upgrade");
	REQ("Upgrade without Connection", "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\r\n", 0);
	ok(!R.upgrade, "Upgrade without Connection: upgrade");
	REQ("Upgrade WebSocket/13", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: WebSocket/13\r\n\r\n", 0);
	ok(R.upgrade && R.upgrade_requested, "WebSocket/13: any case, a version: upgrade");
	REQ("Upgrade h2c", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
	    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n", 0);
	ok(!R.upgrade && R.upgrade_requested && R.keep_alive, "h2c: requested, not upgraded, plain HTTP/1.1 goes on");
	REQ("Upgrade websocket, h2c", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket, h2c\r\n\r\n", 0);
	ok(!R.upgrade, "a list with another protocol: not upgraded");
	REQ("Upgrade two fields", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\nUpgrade: TLS/1.2\r\n\r\n", 0);
	ok(!R.upgrade, "a second Upgrade field with another protocol: not upgraded");
	REQ("Upgrade empty", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: ,\r\n\r\n", 0);
	ok(!R.upgrade, "an empty Upgrade list: not upgraded");
	REQ("Upgrade websocketx", "GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocketx\r\n\r\n", 0);
	ok(!R.upgrade, "websocketx is not websocket");
}

static void
test_request_limits(void)
{
	char buf[4096];
	size_t n, i;
	ssize_t rc;

	n = (size_t)snprintf(buf, sizeof(buf), "GET / HTTP/1.1\r\nHost: x\r\n");
	for (i = 1; i < 10; i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "X-%zu: v\r\n", i);
	n += (size_t)snprintf(buf + n, sizeof(buf) - n, "\r\n");
	rc = preq_lim(buf, n, DEF_HEAD, 10);
	ok(rc == (ssize_t)n && R.nheaders == 10, "exactly max_headers fields accepted");
	rc = preq_lim(buf, n, DEF_HEAD, 9);
	ok(rc == HTTP1_ERROR && R.status == 431, "max_headers + 1 fields: 431");
	rc = preq_lim(buf, n, DEF_HEAD, 0);
	ok(rc == HTTP1_ERROR && R.status == 431, "max_headers 0: 431");
	rc = preq_lim("GET / HTTP/1.0\r\n\r\n", 18, DEF_HEAD, 0);
	is_int(rc, 18, "max_headers 0, no fields: accepted");
	rc = preq_lim("\r\n\r\n\r\n\r\n", 8, 8, MAXH);
	ok(rc == HTTP1_ERROR && R.status == 414, "empty lines up to the limit: 414");
	rc = preq_lim("GET / HTTP/1.1\r\nHost: x\r\n\r\nGET", 30, 27, MAXH);
	is_int(rc, 27, "head fits exactly, following bytes ignored");
}

static void
test_response(void)
{
	static const char rpc_out[] = "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n"
	    "Content-Length: 1073741824\r\n\r\n";
	static const struct {
		const char *name, *raw, *method;
		ssize_t rc;		/* 0: len of raw */
		int status;
		enum http1_body_kind body;
		int keep_alive;
	} t[] = {
		{ "RPC_OUT_DATA 200", rpc_out, "RPC_OUT_DATA", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "Exchange 503", "HTTP/1.0 503 RPC Error: 6ba\r\n\r\n", "RPC_IN_DATA", 0, 503, HTTP1_BODY_CLOSE, 0 },
		{ "no reason", "HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n", "GET", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "empty reason", "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n", "GET", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "100 Continue", "HTTP/1.1 100 Continue\r\n\r\n", "POST", 0, 100, HTTP1_BODY_NONE, 1 },
		{ "101", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", "GET", 0, 101, HTTP1_BODY_TUNNEL, 0 },
		{ "204 with CL", "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n", "GET", 0, 204, HTTP1_BODY_NONE, 1 },
		{ "304", "HTTP/1.1 304 Not Modified\r\nContent-Length: 500\r\n\r\n", "GET", 0, 304, HTTP1_BODY_NONE, 1 },
		{ "HEAD 200 CL", "HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", "HEAD", 0, 200, HTTP1_BODY_NONE, 1 },
		{ "HEAD 200 chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "HEAD", 0, 200, HTTP1_BODY_NONE, 1 },
		{ "CONNECT 200", "HTTP/1.1 200 Connection established\r\n\r\n", "CONNECT", 0, 200, HTTP1_BODY_TUNNEL, 0 },
		{ "CONNECT 407", "HTTP/1.1 407 Auth\r\nContent-Length: 3\r\n\r\n", "CONNECT", 0, 407, HTTP1_BODY_LENGTH, 1 },
		{ "chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CHUNKED, 1 },
		{ "gzip, chunked", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CHUNKED, 1 },
		{ "chunked, gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CLOSE, 0 },
		{ "TE gzip", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CLOSE, 0 },
		{ "1.0 chunked", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CHUNKED, 0 },
		{ "no framing", "HTTP/1.1 200 OK\r\n\r\n", "GET", 0, 200, HTTP1_BODY_CLOSE, 0 },
		{ "1.0 keep-alive CL", "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 20\r\n\r\n", "RPC_IN_DATA", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "1.0 CL", "HTTP/1.0 200 OK\r\nContent-Length: 20\r\n\r\n", "GET", 0, 200, HTTP1_BODY_LENGTH, 0 },
		{ "1.1 close", "HTTP/1.1 401 Unauthorized\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", "GET", 0, 401, HTTP1_BODY_LENGTH, 0 },
		{ "CL list same", "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n", "GET", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "status 999", "HTTP/1.1 999 Odd\r\nContent-Length: 0\r\n\r\n", "GET", 0, 999, HTTP1_BODY_LENGTH, 1 },
		{ "obs-text reason", "HTTP/1.1 200 \xc3\x89t\xc3\xa9\r\nContent-Length: 0\r\n\r\n", "GET", 0, 200, HTTP1_BODY_LENGTH, 1 },
		{ "CL+TE", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "CL+TE 304", "HTTP/1.1 304 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "CL differ", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "CL bad", "HTTP/1.1 200 OK\r\nContent-Length: 5a\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "CL overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "TE chunked twice", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "TE empty", "HTTP/1.1 200 OK\r\nTransfer-Encoding: \r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "status 4 digits", "HTTP/1.1 2000 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "status 2 digits", "HTTP/1.1 20 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "status 099", "HTTP/1.1 099 x\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "HTTP/1.2", "HTTP/1.2 200 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "HTTP/2", "HTTP/2 200 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "lower-case version", "http/1.1 200 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "bare LF status line", "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "bare LF field", "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "LF-only", "HTTP/1.1 200 OK\nContent-Length: 0\n\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "obs-fold", "HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "CTL in reason", "HTTP/1.1 200 O\x01K\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "SP before colon", "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
		{ "leading CRLF", "\r\nHTTP/1.1 200 OK\r\n\r\n", "GET", HTTP1_ERROR, 0, 0, 0 },
	};
	size_t i, n;
	ssize_t rc;

	for (i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		n = strlen(t[i].raw);
		rc = presp_m(t[i].raw, n, t[i].method);
		if (t[i].rc == 0) {
			ok(rc == (ssize_t)n && S.status == t[i].status && S.body == t[i].body &&
			    S.keep_alive == (t[i].keep_alive != 0),
			    "response %s: %d %s keep_alive=%d", t[i].name, t[i].status,
			    http1_body_kind_str(t[i].body), t[i].keep_alive);
			if (rc != (ssize_t)n || S.body != t[i].body)
				diag("  rc %zd status %d body %s ka %d error %s", rc, S.status,
				    http1_body_kind_str(S.body), S.keep_alive, S.error ? S.error : "");
		} else {
			if (!ok(rc == HTTP1_ERROR && S.error != NULL, "response %s: error", t[i].name))
				diag("  rc %zd body %s", rc, http1_body_kind_str(S.body));
		}
		if (!resp_prefixes(t[i].raw, n, t[i].method))
			ok(0, "response %s: prefixes", t[i].name);
	}
	presp_m(rpc_out, sizeof(rpc_out) - 1, "RPC_OUT_DATA");
	ok(S.content_length == 1073741824u && slice_eq(S.reason, "Success"), "RPC_OUT_DATA length and reason");
	presp_m("HTTP/1.0 503 RPC Error: 6ba\r\n\r\n", 31, "RPC_IN_DATA");
	is_slice(S.reason, "RPC Error: 6ba", "Exchange 503 reason");
	presp_m("HTTP/1.1 200\r\n\r\n", 16, "GET");
	ok(S.reason.len == 0, "no reason: len 0");
	rc = presp_m("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1", 49, "GET");
	is_int(rc, 38, "response head_len excludes the body");
	static const char cl3[] = "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n";
	static const char cl7[] = "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\n\r\n";

	presp_m(cl3, sizeof(cl3) - 1, "GET");
	ok(S.has_content_length && S.content_length == 5 && S.body == HTTP1_BODY_LENGTH,
	    "response Content-Length 5, 5 and 5: one length 5");
	presp_m(cl7, sizeof(cl7) - 1, "HEAD");
	ok(S.has_content_length && S.content_length == 7 && S.body == HTTP1_BODY_NONE,
	    "HEAD response Content-Length 7, 7: length 7 kept, no body");
	presp_m("HTTP/1.1 200 OK\r\n\r\n", 19, "GET");
	ok(!S.has_content_length, "no Content-Length: has_content_length false");
}

/*
 * How a caller reads a head trickled in `step`-byte pieces: with use_end, it parses only when
 * http1_head_end says so (or at the limit); without, at every read (the old way). Returns the
 * parse result and sets *at to the prefix length it was decided at (n when undecided) and
 * *parses to the number of full parses run.
 */
static ssize_t
trickle(const char *s, size_t n, size_t step, bool use_end, size_t max_head, size_t *at, size_t *parses)
{
	struct http1_limits lim = { max_head, MAXH };
	const char *buf = place(s, n);		/* the bytes stay put; only the length grows */
	size_t k = 0, scanned = 0;
	ssize_t rc = HTTP1_NEED_MORE;

	*parses = 0;
	while (k < n) {
		k = k + step < n ? k + step : n;
		if (use_end && k < max_head && !http1_head_end(buf, k, &scanned))
			continue;
		(*parses)++;
		R.headers = hdrs;
		rc = http1_parse_request(buf, k, &lim, &R);
		if (rc != HTTP1_NEED_MORE)
			break;
	}
	*at = k;
	return rc;
}

/* http1_head_end: found exactly where a parse would be, never misses a head, and is linear. */
static void
test_head_end(void)
{
	static const char *const same[] = {	/* decided at the same byte as parsing every read */
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
		"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nX:\r\nY: \t\r\n\r\nGET",
		"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n\r\n\r\n",
		"GET / HTTP/1.1\nHost: x\r\n\r\n",		/* bare LF: 400 at once */
		"GET / HTTP/1.1\r\nHost: x\rY: z\r\n\r\n",	/* bare CR */
		"GET / HTTP/1.1\r\nHost: x\r\n\n",
		"GET / HTTP/1.1\r\nHost: x\r\n\r\r\n",
		"\n",
		"\r\r",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\n",
	};
	static const char *const later[] = {	/* same verdict, decided at the end of the head */
		"GET /\x01 HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET / HTTP/2.0\r\nHost: x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nA b: c\r\n\r\n",
	};
	size_t i, n, at0, at1, p0, p1, step;
	ssize_t rc0, rc1;
	int st0;
	bool good = true;

	for (i = 0; i < sizeof(same) / sizeof(same[0]); i++)
		for (step = 1; step <= 3; step++) {
			n = strlen(same[i]);
			rc0 = trickle(same[i], n, step, false, DEF_HEAD, &at0, &p0);
			st0 = R.status;
			rc1 = trickle(same[i], n, step, true, DEF_HEAD, &at1, &p1);
			if (rc0 != rc1 || at0 != at1 || (rc0 == HTTP1_ERROR && st0 != R.status) || p1 != 1) {
				diag("  case %zu step %zu: rc %zd/%zd at %zu/%zu parses %zu", i, step, rc0, rc1,
				    at0, at1, p1);
				good = false;
			}
		}
	ok(good, "head_end: heads and bare CR/LF decided at the same byte, with one parse");
	good = true;
	for (i = 0; i < sizeof(later) / sizeof(later[0]); i++) {
		n = strlen(later[i]);
		rc0 = trickle(later[i], n, 1, false, DEF_HEAD, &at0, &p0);
		st0 = R.status;
		rc1 = trickle(later[i], n, 1, true, DEF_HEAD, &at1, &p1);
		if (rc0 != HTTP1_ERROR || rc1 != HTTP1_ERROR || st0 != R.status || at1 != n || p1 != 1)
			good = false;
	}
	ok(good, "head_end: other errors get the same status once the head ends");
	rc1 = trickle("GET / HTTP/1.1\r\nHost: x\r\nX: aaaaaaaaaaaaaaaa", 42, 1, true, 32, &at1, &p1);
	ok(rc1 == HTTP1_ERROR && R.status == 431 && at1 == 32, "head_end: the limit still gives 431 at max_head_size");
}

/* Nanoseconds of a monotonic clock. */
static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* A 60 KiB head (a Negotiate token) trickled one byte at a time: one parse instead of 61,000. */
static void
test_head_end_trickle(void)
{
	static char head[62000];
	size_t n = 0, at0, at1, p0, p1;
	ssize_t rc0, rc1;
	double t0, t1, t2;

	n += (size_t)snprintf(head, sizeof(head), "POST /ews/exchange.asmx HTTP/1.1\r\nHost: mail.example.com\r\n"
	    "Authorization: Negotiate ");
	while (n < 60 * 1024)
		head[n++] = 'Q';
	n += (size_t)snprintf(head + n, sizeof(head) - n, "\r\nContent-Length: 0\r\n\r\n");
	t0 = now_ns();
	rc0 = trickle(head, n, 1, false, DEF_HEAD + 1024, &at0, &p0);
	t1 = now_ns();
	rc1 = trickle(head, n, 1, true, DEF_HEAD + 1024, &at1, &p1);
	t2 = now_ns();
	ok(rc0 == (ssize_t)n && rc1 == (ssize_t)n && at0 == n && at1 == n, "60 KiB head, 1 byte a read: parsed both ways");
	is_int(p1, 1, "with http1_head_end: one parse (was %zu)", p0);
	diag("60 KiB head fed 1 byte at a time: parse every read %.1f ms (%zu parses), "
	    "head_end + one parse %.3f ms", (t1 - t0) / 1e6, p0, (t2 - t1) / 1e6);
}

static void
test_helpers(void)
{
	struct http1_slice v = { "keep-alive, Upgrade ,\tTE,", 25 };
	struct http1_header h[2] = {
		{ { "Host", 4 }, { "x", 1 } },
		{ { "Content-Length", 14 }, { "5", 1 } },
	};

	ok(http1_list_has(v, "upgrade"), "list_has: upgrade (OWS, case)");
	ok(http1_list_has(v, "te"), "list_has: te");
	ok(http1_list_has(v, "KEEP-ALIVE"), "list_has: KEEP-ALIVE");
	ok(!http1_list_has(v, "keep"), "list_has: no partial match");
	ok(!http1_list_has(v, ""), "list_has: empty token never matches");
	ok(http1_find_header(h, 2, "content-length") == &h[1], "find_header case-insensitive");
	ok(http1_find_header(h, 2, "content") == NULL, "find_header no prefix match");
	ok(http1_find_header(h, 2, "Hostx") == NULL, "find_header longer name");
	is_str(http1_body_kind_str(HTTP1_BODY_CHUNKED), "BODY_CHUNKED", "body_kind_str");
	is_str(http1_body_kind_str(HTTP1_BODY_TUNNEL), "BODY_TUNNEL", "body_kind_str tunnel");
}

/* Feeds body[0..n) to a fresh chunked framer in pieces cut at cuts[0..ncuts); -1 on error. */
static ssize_t
feed_split(enum http1_body_kind kind, uint64_t cl, const char *body, size_t n,
    const size_t *cuts, size_t ncuts, bool *done)
{
	struct http1_body b;
	size_t from = 0, i, to;
	ssize_t total = 0, rc;

	http1_body_init(&b, kind, cl);
	for (i = 0; i <= ncuts; i++) {
		to = i < ncuts ? cuts[i] : n;
		rc = http1_body_feed(&b, place(body + from, to - from), to - from);
		if (rc < 0 || (size_t)rc > to - from || (b.done == false && (size_t)rc != to - from)) {
			*done = b.done;
			return rc < 0 ? -1 : -2;
		}
		total += rc;
		if (b.done) {
			/* done stays done */
			if (http1_body_feed(&b, place("x", 1), 1) != 0 || !b.done)
				return -3;
			break;
		}
		from = to;
	}
	*done = b.done;
	return total;
}

/* A valid chunked body: whole, one byte at a time, every 2-way split; always followed by
 * the next request, which must not be consumed. */
static void
chunked_ok(const char *name, const char *body, size_t n)
{
	char buf[1024];
	size_t tot, i, cuts[1024];
	ssize_t rc;
	bool done, all = true;

	memcpy(buf, body, n);
	memcpy(buf + n, "GET / HTTP/1.1\r\n", 16);
	tot = n + 16;
	rc = feed_split(HTTP1_BODY_CHUNKED, 0, buf, tot, NULL, 0, &done);
	if (!ok(rc == (ssize_t)n && done, "chunked %s: whole body consumed, done", name))
		diag("  rc %zd done %d", rc, done);
	for (i = 0; i + 1 < tot; i++)
		cuts[i] = i + 1;
	rc = feed_split(HTTP1_BODY_CHUNKED, 0, buf, tot, cuts, tot - 1, &done);
	if (!ok(rc == (ssize_t)n && done, "chunked %s: one byte at a time", name))
		diag("  rc %zd done %d", rc, done);
	for (i = 1; i < tot; i++) {
		cuts[0] = i;
		rc = feed_split(HTTP1_BODY_CHUNKED, 0, buf, tot, cuts, 1, &done);
		if (rc != (ssize_t)n || !done) {
			diag("  split at %zu: rc %zd done %d", i, rc, done);
			all = false;
		}
	}
	ok(all, "chunked %s: every 2-way split", name);
}

/* An invalid chunked body: an error whole and byte by byte, and the error is sticky. */
static void
chunked_bad(const char *name, const char *body, size_t n)
{
	struct http1_body b;
	size_t i, cuts[20000];
	ssize_t rc;
	bool done;

	rc = feed_split(HTTP1_BODY_CHUNKED, 0, body, n, NULL, 0, &done);
	if (!ok(rc == -1 && !done, "chunked %s: error", name))
		diag("  rc %zd done %d", rc, done);
	for (i = 0; i + 1 < n; i++)
		cuts[i] = i + 1;
	rc = feed_split(HTTP1_BODY_CHUNKED, 0, body, n, cuts, n - 1, &done);
	ok(rc == -1 && !done, "chunked %s: error byte by byte", name);
	http1_body_init(&b, HTTP1_BODY_CHUNKED, 0);
	rc = http1_body_feed(&b, place(body, n), n);
	ok(rc == -1 && b.error && http1_body_feed(&b, place("0\r\n\r\n", 5), 5) == -1,
	    "chunked %s: error is sticky (%s)", name, b.error ? b.error : "");
}

#define CHUNKED_OK(name, lit) chunked_ok(name, lit, sizeof(lit) - 1)
#define CHUNKED_BAD(name, lit) chunked_bad(name, lit, sizeof(lit) - 1)

static void
test_bodies(void)
{
	static char big[20000];
	struct http1_body b;
	ssize_t rc;
	size_t n;

	http1_body_init(&b, HTTP1_BODY_LENGTH, 10);
	rc = http1_body_feed(&b, place("0123456789GET", 13), 13);
	ok(rc == 10 && b.done, "BODY_LENGTH 10: 10 of 13 bytes, done");
	is_int(http1_body_feed(&b, place("abc", 3), 3), 0, "BODY_LENGTH: done stays done");
	http1_body_init(&b, HTTP1_BODY_LENGTH, 10);
	rc = http1_body_feed(&b, place("0123", 4), 4);
	ok(rc == 4 && !b.done && b.remaining == 6, "BODY_LENGTH partial: 6 left");
	http1_body_init(&b, HTTP1_BODY_LENGTH, UINT64_C(2147483648));
	rc = http1_body_feed(&b, place("\x05\x00\x14\x03", 4), 4);
	ok(rc == 4 && !b.done && b.remaining == UINT64_C(2147483644), "BODY_LENGTH 2 GiB counts in 64 bits");
	http1_body_init(&b, HTTP1_BODY_LENGTH, 0);
	ok(b.done && http1_body_feed(&b, place("x", 1), 1) == 0, "BODY_LENGTH 0: done at init");
	http1_body_init(&b, HTTP1_BODY_NONE, 0);
	ok(http1_body_feed(&b, place("GET", 3), 3) == 0 && b.done, "BODY_NONE: 0, done");
	http1_body_init(&b, HTTP1_BODY_CLOSE, 0);
	ok(http1_body_feed(&b, place("abc", 3), 3) == 3 && !b.done, "BODY_CLOSE: all bytes, never done");
	http1_body_init(&b, HTTP1_BODY_TUNNEL, 0);
	ok(http1_body_feed(&b, place("abc", 3), 3) == 3 && !b.done, "BODY_TUNNEL: all bytes");
	http1_body_init(&b, HTTP1_BODY_CHUNKED, 0);
	ok(http1_body_feed(&b, place("", 0), 0) == 0 && !b.done, "chunked: empty feed");

	CHUNKED_OK("last chunk only", "0\r\n\r\n");
	CHUNKED_OK("one chunk", "5\r\nhello\r\n0\r\n\r\n");
	CHUNKED_OK("two chunks hex", "A\r\n0123456789\r\nb\r\nhello world\r\n0\r\n\r\n");
	CHUNKED_OK("data with CRLF", "4\r\n\r\n\r\n\r\n0\r\n\r\n");
	CHUNKED_OK("extension", "5;name=value;x=\"q s\"\r\nhello\r\n0;last\r\n\r\n");
	CHUNKED_OK("BWS before ;", "5 \t;e\r\nhello\r\n0\r\n\r\n");
	CHUNKED_OK("16 digits", "0000000000000005\r\nhello\r\n0000000000000000\r\n\r\n");
	CHUNKED_OK("trailers", "3\r\nabc\r\n0\r\nX-Checksum: 1234\r\nX-Empty:\r\n\r\n");
	CHUNKED_OK("RPC PDU", "14\r\n\x05\x00\x14\x03\x10\x00\x00\x00\x14\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\r\n0\r\n\r\n");

	http1_body_init(&b, HTTP1_BODY_CHUNKED, 0);
	rc = http1_body_feed(&b, place("7fffffffffffffff\r\nab", 20), 20);
	ok(rc == 20 && !b.done && b.remaining == UINT64_C(0x7fffffffffffffff) - 2,
	    "chunk size 2^63-1 accepted, counted down");

	CHUNKED_BAD("size 2^63", "8000000000000000\r\n");
	CHUNKED_BAD("17 digits", "00000000000000005\r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("size 2^64", "10000000000000000\r\n");
	CHUNKED_BAD("not hex", "g\r\n");
	CHUNKED_BAD("empty size", "\r\n0\r\n\r\n");
	CHUNKED_BAD("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("sign", "+5\r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("leading SP", " 5\r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("trailing SP", "5 \r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("bare LF size", "5\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("bare CR size", "5\rhello\r\n0\r\n\r\n");
	CHUNKED_BAD("bare LF in ext", "5;a\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("NUL in ext", "5;a\0b\r\nhello\r\n0\r\n\r\n");
	CHUNKED_BAD("missing CRLF after data", "5\r\nhello0\r\n\r\n");
	CHUNKED_BAD("data too long", "5\r\nhelloo\r\n0\r\n\r\n");
	CHUNKED_BAD("junk instead of CR after data", "5\r\nhelloX\n0\r\n\r\n");
	CHUNKED_BAD("bare LF after data", "5\r\nhello\n0\r\n\r\n");
	CHUNKED_BAD("bare LF last chunk", "0\n\r\n");
	CHUNKED_BAD("bare LF final", "0\r\n\n");
	CHUNKED_BAD("bare CR final", "0\r\n\rX");
	CHUNKED_BAD("bare LF in trailer", "0\r\nX: y\n\r\n");
	CHUNKED_BAD("trailer obs-fold", "0\r\nX: y\r\n z\r\n\r\n");
	CHUNKED_BAD("trailer no colon", "0\r\nXy\r\n\r\n");
	CHUNKED_BAD("trailer SP before colon", "0\r\nX : y\r\n\r\n");
	CHUNKED_BAD("trailer CTL", "0\r\nX: \x01\r\n\r\n");

	n = (size_t)snprintf(big, sizeof(big), "5;");
	memset(big + n, 'e', 4100);
	n += 4100;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nhello\r\n0\r\n\r\n");
	chunked_bad("chunk-ext over 4096", big, n);
	n = (size_t)snprintf(big, sizeof(big), "0\r\nX: ");
	memset(big + n, 'v', 16400);
	n += 16400;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\n\r\n");
	chunked_bad("trailers over 16 KiB", big, n);
	n = (size_t)snprintf(big, sizeof(big), "5;");
	memset(big + n, 'e', 4000);
	n += 4000;
	n += (size_t)snprintf(big + n, sizeof(big) - n, "\r\nhello\r\n0\r\n\r\n");
	rc = feed_split(HTTP1_BODY_CHUNKED, 0, big, n, NULL, 0, &(bool){ false });
	is_int(rc, n, "chunk-ext of 4000 bytes accepted");
}

/* The opaque part of a body (splice): how much may pass unparsed, and counting it as fed. */
static void
test_body_opaque(void)
{
	struct http1_body b;
	ssize_t rc;

	http1_body_init(&b, HTTP1_BODY_LENGTH, 10);
	ok(http1_body_opaque(&b) == 10, "opaque: BODY_LENGTH 10 at the start");
	http1_body_skip(&b, 4);
	ok(http1_body_opaque(&b) == 6 && !b.done, "opaque: 6 left after skipping 4");
	http1_body_skip(&b, 6);
	ok(b.done && http1_body_opaque(&b) == 0, "opaque: skipping the rest ends the body");
	ok(http1_body_feed(&b, place("GET", 3), 3) == 0, "opaque: the next bytes are the next message");
	http1_body_init(&b, HTTP1_BODY_NONE, 0);
	ok(http1_body_opaque(&b) == 0, "opaque: BODY_NONE has none");
	http1_body_init(&b, HTTP1_BODY_CLOSE, 0);
	http1_body_skip(&b, 1000);
	ok(http1_body_opaque(&b) == UINT64_MAX && !b.done, "opaque: BODY_CLOSE is unbounded, never done");
	http1_body_init(&b, HTTP1_BODY_TUNNEL, 0);
	ok(http1_body_opaque(&b) == UINT64_MAX, "opaque: BODY_TUNNEL is unbounded");

	http1_body_init(&b, HTTP1_BODY_CHUNKED, 0);
	ok(http1_body_opaque(&b) == 0, "opaque: chunked, a size line is parsed");
	rc = http1_body_feed(&b, place("a;x=1\r\n012", 10), 10);
	ok(rc == 10 && http1_body_opaque(&b) == 7, "opaque: chunked, 7 data bytes of the chunk left");
	http1_body_skip(&b, 7);
	ok(http1_body_opaque(&b) == 0, "opaque: chunked, the CRLF after the data is parsed");
	rc = http1_body_feed(&b, place("\r\n3\r\nabc\r\n0\r\n\r\nGET", 18), 18);
	ok(rc == 15 && b.done, "opaque: chunked, parsing goes on after skipped data (%zd)", rc);
	http1_body_init(&b, HTTP1_BODY_CHUNKED, 0);
	rc = http1_body_feed(&b, place("2\r\n", 3), 3);
	http1_body_skip(&b, 2);
	rc = http1_body_feed(&b, place("x\n", 2), 2);
	ok(rc == -1 && b.error, "opaque: chunked, a bad CRLF after skipped data is still an error");
}

int
main(void)
{
	guard_setup();
	test_request_basics();
	test_request_fields();
	test_request_line();
	test_request_framing();
	test_request_limits();
	test_response();
	test_head_end();
	test_head_end_trickle();
	test_helpers();
	test_bodies();
	test_body_opaque();
	return done_testing();
}
