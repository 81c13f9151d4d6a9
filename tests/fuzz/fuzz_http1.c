/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_http1.c: libFuzzer target for relay/http1.c.
 *
 * The input is parsed as a request head and as a response head (limits and the request
 * method chosen from its last byte), then the bytes after the head (or the whole input) are
 * fed to the body framer in pieces whose sizes derive from the input, each piece in its own
 * exact-size allocation so ASan catches any read past len. Invariants are checked with
 * abort(): counts never exceed len, slices stay inside the head (but the "/" or "*" implied by
 * an absolute-form target without a path), no target holds a '#', done stays done, errors are
 * sticky, a prefix never disagrees with the whole, reading in pieces through http1_head_end
 * gives the whole's verdict, and any split gives the same framing.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAXH 100
#define INT63_MAX UINT64_C(0x7fffffffffffffff)

static const size_t head_limits[4] = { 64, 512, 8192, 65536 };
static const size_t field_limits[4] = { 0, 1, 8, MAXH };
static const char *const methods[4] = { "GET", "HEAD", "CONNECT", "RPC_OUT_DATA" };

#define CHECK(c) do { if (!(c)) abort(); } while (0)

/* A slice must be empty or lie inside buf[0..len). */
static void
check_slice(struct http1_slice s, const char *buf, size_t len)
{
	if (s.len == 0)
		return;
	CHECK(s.p >= buf && s.p + s.len <= buf + len && s.len <= len);
}

static void
check_headers(const struct http1_header *h, size_t n, const char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < n; i++) {
		CHECK(h[i].name.len > 0);
		check_slice(h[i].name, buf, len);
		check_slice(h[i].value, buf, len);
	}
}

/* Copies data into an exact-size allocation (so ASan sees a read past len). */
static char *
dup_exact(const uint8_t *data, size_t n)
{
	char *p = malloc(n ? n : 1);

	CHECK(p != NULL);
	if (n)
		memcpy(p, data, n);
	return p;
}

static ssize_t
run_request(const uint8_t *data, size_t n, const struct http1_limits *lim,
    struct http1_request *req, struct http1_header *h)
{
	char *buf = dup_exact(data, n);
	ssize_t rc;

	req->headers = h;
	rc = http1_parse_request(buf, n, lim, req);
	CHECK(req->headers == h);
	if (rc == HTTP1_NEED_MORE) {
		CHECK(n < lim->max_head_size);
	} else if (rc == HTTP1_ERROR) {
		CHECK(req->error != NULL);
		CHECK(req->status == 400 || req->status == 414 || req->status == 431 ||
		    req->status == 501 || req->status == 505);
	} else {
		CHECK(rc > 0 && (size_t)rc <= n && (size_t)rc <= lim->max_head_size);
		CHECK(req->head_len == (size_t)rc);
		CHECK(req->nheaders <= lim->max_headers);
		CHECK(req->minor == 0 || req->minor == 1);
		CHECK(req->body == HTTP1_BODY_NONE || req->body == HTTP1_BODY_LENGTH ||
		    req->body == HTTP1_BODY_CHUNKED);
		CHECK(req->content_length <= INT63_MAX);
		CHECK(req->method.len > 0 && req->target.len > 0);
		CHECK(req->minor == 0 || req->host.len > 0);
		CHECK(!req->absolute_form || req->authority.len > 0);
		check_slice(req->method, buf, (size_t)rc);
		check_slice(req->target, buf, (size_t)rc);
		if (req->absolute_form && req->path.len == 1 && (req->path.p < buf || req->path.p >= buf + rc))
			CHECK(req->path.p[0] == '/' || req->path.p[0] == '*');	/* the implied path */
		else
			check_slice(req->path, buf, (size_t)rc);
		CHECK(memchr(req->target.p, '#', req->target.len) == NULL);
		check_slice(req->query, buf, (size_t)rc);
		check_slice(req->authority, buf, (size_t)rc);
		check_slice(req->host, buf, (size_t)rc);
		check_headers(req->headers, req->nheaders, buf, (size_t)rc);
	}
	free(buf);
	return rc;
}

static ssize_t
run_response(const uint8_t *data, size_t n, const struct http1_limits *lim, const char *method,
    struct http1_response *resp, struct http1_header *h)
{
	char *buf = dup_exact(data, n);
	struct http1_slice m = { method, strlen(method) };
	ssize_t rc;

	resp->headers = h;
	rc = http1_resp_parse(buf, n, lim, m, resp);
	if (rc == HTTP1_NEED_MORE) {
		CHECK(n < lim->max_head_size);
	} else if (rc == HTTP1_ERROR) {
		CHECK(resp->error != NULL);
	} else {
		CHECK(rc > 0 && (size_t)rc <= n && (size_t)rc <= lim->max_head_size);
		CHECK(resp->head_len == (size_t)rc);
		CHECK(resp->nheaders <= lim->max_headers);
		CHECK(resp->status >= 100 && resp->status <= 999);
		CHECK(resp->content_length <= INT63_MAX);
		CHECK(resp->body != HTTP1_BODY_CLOSE || !resp->keep_alive);
		check_slice(resp->reason, buf, (size_t)rc);
		check_headers(resp->headers, resp->nheaders, buf, (size_t)rc);
	}
	free(buf);
	return rc;
}

/*
 * Reads the request as exrelay does when it trickles in pieces (sizes from seed): a parse only
 * when http1_head_end says so or the limit is reached, and once more at the end (the client
 * stopped). The verdict must be the whole input's: a head is never missed nor found early.
 */
static void
check_head_end(const uint8_t *data, size_t n, const struct http1_limits *lim, ssize_t whole,
    int whole_status, uint32_t seed, struct http1_header *h)
{
	struct http1_request req;
	size_t k = 0, scanned = 0, piece;
	ssize_t rc = HTTP1_NEED_MORE;
	bool decided = false;

	while (k < n && !decided) {
		seed = seed * 1103515245u + 12345u;
		piece = 1 + (seed >> 16) % 7;
		k = piece < n - k ? k + piece : n;
		if (k < lim->max_head_size && !http1_head_end((const char *)data, k, &scanned)) {
			CHECK(scanned <= k);
			continue;
		}
		CHECK(scanned <= k);
		rc = run_request(data, k, lim, &req, h);
		decided = rc != HTTP1_NEED_MORE;
	}
	if (!decided)
		rc = run_request(data, n, lim, &req, h);
	CHECK(rc == whole);
	if (rc == HTTP1_ERROR)
		CHECK(req.status == whole_status);
}

struct feed_result {
	ssize_t total;		/* bytes that belonged to the body, or -1 */
	bool done;
};

/*
 * Feeds body[0..n) in pieces: piece sizes come from seed (0 = all at once). Checks the
 * per-call invariants and returns what the framer decided.
 */
static struct feed_result
feed(enum http1_body_kind kind, uint64_t cl, const uint8_t *body, size_t n, uint32_t seed)
{
	struct feed_result r = { 0, false };
	struct http1_body b;
	size_t off = 0, piece;
	ssize_t rc;
	char *p;

	http1_body_init(&b, kind, cl);
	CHECK(b.done == (kind == HTTP1_BODY_NONE || (kind == HTTP1_BODY_LENGTH && cl == 0)));
	while (off < n || (off == n && n == 0)) {
		if (seed == 0) {
			piece = n - off;
		} else {
			seed = seed * 1103515245u + 12345u;
			piece = 1 + (seed >> 16) % ((seed & 3) == 0 ? 4096 : 17);
			if (piece > n - off)
				piece = n - off;
		}
		p = dup_exact(body + off, piece);
		rc = http1_body_feed(&b, p, piece);
		free(p);
		if (rc == -1) {
			CHECK(b.error != NULL && !b.done);
			CHECK(http1_body_feed(&b, "0\r\n\r\n", 5) == -1);
			r.total = -1;
			return r;
		}
		CHECK(rc >= 0 && (size_t)rc <= piece);
		CHECK(b.done || (size_t)rc == piece || kind == HTTP1_BODY_NONE);
		r.total += rc;
		off += (size_t)rc;
		if (b.done) {
			CHECK(http1_body_feed(&b, "xyz", 3) == 0 && b.done);
			break;
		}
		if (piece == 0)
			break;
	}
	if (kind == HTTP1_BODY_LENGTH)
		CHECK((uint64_t)r.total <= cl && b.done == ((uint64_t)r.total == cl));
	if (kind == HTTP1_BODY_CLOSE || kind == HTTP1_BODY_TUNNEL)
		CHECK(!b.done && (size_t)r.total == n);
	r.done = b.done;
	return r;
}

/* Feeds the same body whole and split two ways; all must agree. */
static void
feed_all_ways(enum http1_body_kind kind, uint64_t cl, const uint8_t *body, size_t n,
    uint32_t seed)
{
	struct feed_result whole = feed(kind, cl, body, n, 0);
	struct feed_result a = feed(kind, cl, body, n, seed | 1);
	struct feed_result c = feed(kind, cl, body, n, (seed ^ 0x9e3779b9u) | 1);

	CHECK(a.total == whole.total && a.done == whole.done);
	CHECK(c.total == whole.total && c.done == whole.done);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_header h[MAXH];
	struct http1_request req, req2;
	struct http1_response resp;
	struct http1_limits lim;
	const char *method;
	uint8_t ctl;
	uint32_t seed = 0;
	ssize_t rc, rc2;
	size_t i, k;

	if (size == 0)
		return 0;
	ctl = data[size - 1];
	lim.max_head_size = head_limits[ctl & 3];
	lim.max_headers = field_limits[(ctl >> 2) & 3];
	method = methods[(ctl >> 4) & 3];
	for (i = 0; i < size && i < 4; i++)
		seed = seed * 257u + data[i];

	/* request: whole, a prefix, and the framing of what follows */
	rc = run_request(data, size, &lim, &req, h);
	k = seed % size;
	rc2 = run_request(data, k, &lim, &req2, h);
	if (rc > 0 && k < (size_t)rc)
		CHECK(rc2 == HTTP1_NEED_MORE);
	if (rc2 == HTTP1_ERROR)
		CHECK(rc == HTTP1_ERROR && req.status == req2.status);
	if (rc2 > 0)
		CHECK(rc == rc2);
	check_head_end(data, size, &lim, rc, req.status, seed, h);
	if (rc > 0)
		feed_all_ways(req.body, req.content_length, data + rc, size - (size_t)rc, seed);

	/* response */
	rc = run_response(data, size, &lim, method, &resp, h);
	if (rc > 0) {
		feed_all_ways(resp.body, resp.content_length, data + rc, size - (size_t)rc, seed);
	} else {
		/* raw body framing of the whole input */
		feed_all_ways(HTTP1_BODY_CHUNKED, 0, data, size, seed);
		feed_all_ways(HTTP1_BODY_LENGTH, ctl, data, size, seed);
	}
	return 0;
}
