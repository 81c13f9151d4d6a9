/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_rewrite.c: libFuzzer target for relay/rewrite.c, the request head exrelay sends to a
 * backend.
 *
 * The input (but its last byte) is a client's request head; the last byte picks the client
 * address (IPv4, IPv6, none), https, strip_internal and add_headers. A head that parses is
 * rewritten, and the result must (abort() otherwise): parse again with the same parser; keep
 * the method, the origin-form target (absolute-form turned into path and query), the version,
 * the Host (the authority of an absolute-form target), the body framing and its length;
 * carry exactly exrelay's own X-Forwarded-For, X-Forwarded-Proto, X-Real-IP and Forwarded
 * (DESIGN.md: the client's are removed), no hop-by-hop field (Keep-Alive, Proxy-Connection,
 * TE, HTTP2-Settings, a field the client's Connection named, unless it is one exrelay writes
 * itself), each add_headers field exactly once with its configured value and, with
 * strip_internal, no Exchange-internal header in any spelling ('_' for '-', any case).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"
#include "rewrite.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXH 100

static const char *const internal[] = { "X-CommonAccessToken", "X-IsFromCafe", "X-SourceCafeServer",
	"msExchProxyUri", "X-MSExchangeProxyLogonToken", "X-BEResource", "X-AnonResource",
	"X-AnonResource-Backend", "msExchLogonAccount", "msExchLogonMailbox", "msExchTargetMailbox" };
static const char *const forwarded[] = { "X-Forwarded-For", "X-Forwarded-Proto", "X-Real-IP", "Forwarded" };
static const char *const addrs[4] = { "203.0.113.7", "2001:db8::1", "", "10.0.0.1" };
static const char *const adds[] = { "Front-End-Https: On", "X-Test: 1" };

static bool
is(struct http1_slice s, const char *name)
{
	return http1_ci_eq(s.p, s.len, name, strlen(name));
}

static bool
slice_eq(struct http1_slice a, struct http1_slice b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

static bool
value_is(struct http1_slice s, const char *v)
{
	return s.len == strlen(v) && memcmp(s.p, v, s.len) == 0;
}

/* The one field named name in h[0..n) has the value want (NULL: there is none). */
static void
check_own(const struct http1_header *h, size_t n, const char *name, const char *want)
{
	size_t seen = 0;

	for (size_t i = 0; i < n; i++)
		if (is(h[i].name, name)) {
			seen++;
			CHECK(want != NULL && value_is(h[i].value, want));
		}
	CHECK(seen == (want ? 1u : 0u));
}

/* True when a Connection field of the client's head names the field name. */
static bool
named_by_connection(const struct http1_request *req, struct http1_slice name)
{
	for (size_t i = 0; i < req->nheaders; i++)
		if (is(req->headers[i].name, "Connection") && http1_list_has_n(req->headers[i].value, name.p, name.len))
			return true;
	return false;
}

/* True when exrelay itself writes a field named name: a forwarding header or an add_headers one. */
static bool
own_field(const struct rewrite_request_ctx *ctx, struct http1_slice name)
{
	for (size_t k = 0; k < sizeof(forwarded) / sizeof(forwarded[0]); k++)
		if (is(name, forwarded[k]))
			return true;
	for (size_t k = 0; k < ctx->nadd; k++) {
		const char *colon = strchr(ctx->add_headers[k], ':');

		if (http1_ci_eq(name.p, name.len, ctx->add_headers[k], (size_t)(colon - ctx->add_headers[k])))
			return true;
	}
	return false;
}

static void
check_rewritten(const struct http1_request *req, const struct http1_request *r2,
    const struct rewrite_request_ctx *ctx)
{
	char xff[80], fwd[96];
	const char *a = ctx->client_addr, *proto = ctx->https ? "https" : "http";
	bool known = a[0] != '\0';

	CHECK(slice_eq(r2->method, req->method) && r2->minor == req->minor);
	if (!req->absolute_form)
		CHECK(slice_eq(r2->target, req->target));
	else
		CHECK(!r2->absolute_form && slice_eq(r2->path, req->path) && slice_eq(r2->query, req->query));
	CHECK(slice_eq(r2->host, req->host));
	CHECK(r2->body == req->body && r2->content_length == req->content_length);
	CHECK(r2->upgrade == req->upgrade);

	snprintf(xff, sizeof(xff), "%s", a);
	if (strchr(a, ':'))
		snprintf(fwd, sizeof(fwd), "for=\"[%s]\";proto=%s", a, proto);
	else
		snprintf(fwd, sizeof(fwd), "for=%s;proto=%s", known ? a : "unknown", proto);
	check_own(r2->headers, r2->nheaders, "X-Forwarded-For", known ? xff : NULL);
	check_own(r2->headers, r2->nheaders, "X-Real-IP", known ? xff : NULL);
	check_own(r2->headers, r2->nheaders, "X-Forwarded-Proto", proto);
	check_own(r2->headers, r2->nheaders, "Forwarded", fwd);
	for (size_t k = 0; k < ctx->nadd; k++) {
		char name[64];
		const char *colon = strchr(ctx->add_headers[k], ':');

		snprintf(name, sizeof(name), "%.*s", (int)(colon - ctx->add_headers[k]), ctx->add_headers[k]);
		check_own(r2->headers, r2->nheaders, name, colon + 2);
	}

	for (size_t i = 0; i < r2->nheaders; i++) {
		struct http1_slice nm = r2->headers[i].name;
		CHECK(!is(nm, "Keep-Alive") && !is(nm, "Proxy-Connection") && !is(nm, "TE") &&
		    !is(nm, "HTTP2-Settings"));
		if (!req->upgrade)
			CHECK(!is(nm, "Upgrade"));
		if (is(nm, "Connection"))
			CHECK(value_is(r2->headers[i].value, req->upgrade ? "Upgrade" : "keep-alive"));
		/*
		 * A field the client's Connection named is the client's hop-by-hop field and goes;
		 * a field exrelay writes itself under that name (checked above and below to be its
		 * own, exactly once) is another hop's field and stays: RFC 9110 7.6.1.
		 */
		if (!is(nm, "Host") && !is(nm, "Content-Length") && !is(nm, "Transfer-Encoding") &&
		    !is(nm, "Connection") && !(req->upgrade && is(nm, "Upgrade")) && !own_field(ctx, nm))
			CHECK(!named_by_connection(req, nm));
		if (ctx->strip_internal)
			for (size_t k = 0; k < sizeof(internal) / sizeof(internal[0]); k++)
				CHECK(!http1_ci_eq_dash(nm.p, nm.len, internal[k], strlen(internal[k])));
		/* a client's look-alike of a forwarding header never passes with strip_internal */
		for (size_t k = 0; ctx->strip_internal && k < 4; k++)
			if (http1_ci_eq_dash(nm.p, nm.len, forwarded[k], strlen(forwarded[k])))
				CHECK(is(nm, forwarded[k]));
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_header h[MAXH], h2[MAXH + 16];
	static char out[65536 + 1024];
	struct http1_limits lim = { 65536, MAXH }, lim2 = { sizeof(out), MAXH + 16 };
	struct http1_request req, r2;

	if (size == 0)
		return 0;
	uint8_t ctl = data[size - 1];
	size--;
	char *buf = malloc(size ? size : 1);
	CHECK(buf != NULL);
	if (size)
		memcpy(buf, data, size);
	memset(&req, 0, sizeof(req));
	req.headers = h;
	if (http1_parse_request(buf, size, &lim, &req) > 0) {
		struct rewrite_request_ctx ctx = { addrs[ctl & 3], (ctl & 4) != 0, adds,
			(ctl >> 3) % 3, (ctl & 0x20) != 0 };
		ssize_t n = rewrite_request(out, sizeof(out), &req, &ctx);
		CHECK(n > 0);
		char *copy = malloc((size_t)n);
		CHECK(copy != NULL);
		memcpy(copy, out, (size_t)n);
		memset(&r2, 0, sizeof(r2));
		r2.headers = h2;
		CHECK(http1_parse_request(copy, (size_t)n, &lim2, &r2) == n);
		check_rewritten(&req, &r2, &ctx);
		/* a buffer one byte short is refused, never cut */
		CHECK(rewrite_request(out, (size_t)n - 1, &req, &ctx) == -1);
		free(copy);
	}
	free(buf);
	return 0;
}
