/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_http1_resp.c: libFuzzer target for relay/http1_resp.c, the response head parser, and
 * for the response head exrelay writes from it (rewrite_response in relay/rewrite.c).
 *
 * The last input byte picks the limits, the method of the request answered and the rewrite's
 * options; the rest is the backend's bytes. Invariants (abort() on failure): counts within
 * the input and the limits, slices inside the head (ASan: the head sits in an exact-size
 * allocation), a prefix never disagrees with the whole, the verdict is the same on a second
 * call, and a head that parses is rewritten into a head that parses again to the same status,
 * the same framing (body kind and length) and no hop-by-hop field but exrelay's own
 * Connection, whose keep-alive the rewrite decides.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "rewrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXH 100
#define INT63_MAX UINT64_C(0x7fffffffffffffff)

static const size_t head_limits[4] = { 64, 512, 8192, 65536 };
static const size_t field_limits[4] = { 1, 8, 32, MAXH };
static const char *const methods[4] = { "GET", "HEAD", "CONNECT", "RPC_OUT_DATA" };

/* A slice must be empty or lie inside buf[0..len). */
static void
check_slice(struct http1_slice s, const char *buf, size_t len)
{
	if (s.len > 0)
		CHECK(s.p >= buf && s.len <= len && s.p + s.len <= buf + len);
}

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
parse(const char *buf, size_t n, const struct http1_limits *lim, const char *method,
    struct http1_response *r, struct http1_header *h)
{
	struct http1_slice m = { method, strlen(method) };
	ssize_t rc;

	memset(r, 0, sizeof(*r));
	r->headers = h;
	rc = http1_resp_parse(buf, n, lim, m, r);
	if (rc == HTTP1_NEED_MORE) {
		CHECK(n < lim->max_head_size);
	} else if (rc == HTTP1_ERROR) {
		CHECK(r->error != NULL);
	} else {
		CHECK(rc > 0 && (size_t)rc <= n && (size_t)rc <= lim->max_head_size);
		CHECK(r->head_len == (size_t)rc && r->nheaders <= lim->max_headers);
		CHECK(r->minor == 0 || r->minor == 1);
		CHECK(r->status >= 100 && r->status <= 999);
		CHECK(r->content_length <= INT63_MAX);
		CHECK(r->body != HTTP1_BODY_CLOSE || !r->keep_alive);
		if (r->body == HTTP1_BODY_LENGTH)
			CHECK(r->has_content_length);
		if (r->status < 200 || r->status == 204 || r->status == 304 || strcmp(method, "HEAD") == 0)
			CHECK(r->body == HTTP1_BODY_NONE || r->body == HTTP1_BODY_TUNNEL);
		check_slice(r->reason, buf, (size_t)rc);
		for (size_t i = 0; i < r->nheaders; i++) {
			CHECK(h[i].name.len > 0);
			check_slice(h[i].name, buf, (size_t)rc);
			check_slice(h[i].value, buf, (size_t)rc);
		}
	}
	return rc;
}

static bool
is(struct http1_slice s, const char *name)
{
	return http1_ci_eq(s.p, s.len, name, strlen(name));
}

/* The rewritten head parses again to the same status and framing, without hop-by-hop fields. */
static void
check_rewrite(const struct http1_response *r, const char *method, bool close, bool http10)
{
	static struct http1_header h2[MAXH + 4];
	static char out[65536 + 256];
	struct rewrite_response_ctx ctx = { close, http10 };
	struct http1_limits lim = { sizeof(out), MAXH + 4 };
	struct http1_response r2;
	size_t nconn = 0;

	ssize_t n = rewrite_response(out, sizeof(out), r, &ctx);
	CHECK(n > 0);
	char *copy = dup_exact((const uint8_t *)out, (size_t)n);
	CHECK(parse(copy, (size_t)n, &lim, method, &r2, h2) == n);
	CHECK(r2.status == r->status && r2.minor == r->minor);
	CHECK(r2.reason.len == r->reason.len && memcmp(r2.reason.p, r->reason.p, r->reason.len) == 0);
	CHECK(r2.body == r->body);
	if (r->body == HTTP1_BODY_LENGTH)
		CHECK(r2.content_length == r->content_length);
	if (close && r->status >= 200)
		CHECK(!r2.keep_alive);
	for (size_t i = 0; i < r2.nheaders; i++) {
		struct http1_slice nm = h2[i].name;
		CHECK(!is(nm, "Keep-Alive") && !is(nm, "Proxy-Connection") && !is(nm, "TE"));
		if (r->status != 101)
			CHECK(!is(nm, "Upgrade"));
		if (is(nm, "Connection"))
			nconn++;
	}
	CHECK(nconn <= 1);
	free(copy);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_header h[MAXH];
	struct http1_response r, r2;
	struct http1_limits lim;

	if (size == 0)
		return 0;
	uint8_t ctl = data[size - 1];
	size--;
	lim.max_head_size = head_limits[ctl & 3];
	lim.max_headers = field_limits[(ctl >> 2) & 3];
	const char *method = methods[(ctl >> 4) & 3];
	char *buf = dup_exact(data, size);

	ssize_t rc = parse(buf, size, &lim, method, &r, h);
	int status = r.status;
	enum http1_body_kind kind = r.body;
	uint64_t cl = r.content_length;
	ssize_t again = parse(buf, size, &lim, method, &r2, h);
	CHECK(again == rc);
	if (rc > 0)
		CHECK(r2.status == status && r2.body == kind && r2.content_length == cl);

	/* Every prefix: NEED_MORE before the end of a head, an error stays an error. */
	size_t step = size > 256 ? size / 64 : 1;
	for (size_t k = 0; k < size; k += step) {
		char *p = dup_exact(data, k);
		ssize_t pr = parse(p, k, &lim, method, &r2, h);
		if (rc > 0 && k < (size_t)rc)
			CHECK(pr == HTTP1_NEED_MORE);
		if (pr == HTTP1_ERROR)
			CHECK(rc == HTTP1_ERROR);
		if (pr > 0)
			CHECK(pr == rc);
		free(p);
	}
	if (rc > 0) {
		CHECK(parse(buf, size, &lim, method, &r, h) == rc);
		check_rewrite(&r, method, (ctl & 0x40) != 0, (ctl & 0x80) != 0);
	}
	free(buf);
	return 0;
}
