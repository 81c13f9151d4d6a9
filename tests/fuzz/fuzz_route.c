/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_route.c: libFuzzer target for relay/route.c, path normalisation and the route table.
 *
 * The input is a request target, then optionally a NUL and a Host value. Properties (abort()
 * on failure): route_normalize_path agrees with a second, simple implementation written here
 * (split into segments, decode, a stack for "." and "..") on refusal and on the result; a
 * result starts with '/' (or is "*"), is no longer than the input, holds no "//", no dot
 * segment and no escape of an unreserved character, and normalises to itself; a smaller
 * output buffer gives the same result or a refusal, never another path; route_match picks the
 * first route whose hosts and paths match by the rule of DESIGN.md (segment-boundary prefix,
 * case-insensitive), computed here independently.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXLEN 4096

static int
hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c |= 0x20;
	return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static bool
unreserved(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '.' || c == '_' || c == '~';
}

/*
 * The reference: decodes one segment p[0..n) into out (escapes of unreserved characters
 * decoded, other escapes kept upper-case); -1 when the segment must be refused.
 */
static ssize_t
ref_segment(const char *p, size_t n, char *out)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)p[i];
		if (c == '\\' || c == '#' || c < 0x20 || c >= 0x7f)
			return -1;
		if (c != '%') {
			out[o++] = (char)c;
			continue;
		}
		if (n - i < 3)
			return -1;
		int hi = hexval((unsigned char)p[i + 1]), lo = hexval((unsigned char)p[i + 2]);
		if (hi < 0 || lo < 0)
			return -1;
		int v = hi * 16 + lo;
		if (v == '/' || v == '\\' || v < 0x20 || v == 0x7f)
			return -1;
		if (unreserved(v)) {
			out[o++] = (char)v;
		} else {
			out[o++] = '%';
			out[o++] = hex[hi];
			out[o++] = hex[lo];
		}
		i += 2;
	}
	return (ssize_t)o;
}

/* The reference normaliser: the same contract as route_normalize_path, written differently. */
static ssize_t
ref_normalize(const char *path, size_t len, char *out)
{
	static char seg[MAXLEN];
	size_t stack[MAXLEN], depth = 0, o = 1, i = 1;
	bool empty_seen = false, trailing = false;
	const char *q = memchr(path, '?', len);

	if (q != NULL)
		len = (size_t)(q - path);
	if (len == 1 && path[0] == '*') {
		out[0] = '*';
		return 1;
	}
	if (len == 0 || path[0] != '/')
		return -1;
	out[0] = '/';
	stack[0] = 1;
	while (i <= len) {
		const char *slash = i < len ? memchr(path + i, '/', len - i) : NULL;
		size_t end = slash ? (size_t)(slash - path) : len;
		if (end == i) {			/* empty segment (or the end after a '/') */
			if (slash)
				empty_seen = true;
			trailing = true;
			if (!slash)
				break;
			i = end + 1;
			continue;
		}
		ssize_t n = ref_segment(path + i, end - i, seg);
		if (n < 0)
			return -1;
		trailing = slash != NULL;
		if (n == 1 && seg[0] == '.') {
			trailing = true;
		} else if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			if (empty_seen || depth == 0)
				return -1;
			o = stack[--depth];
			trailing = true;
		} else {
			stack[depth++] = o;
			memcpy(out + o, seg, (size_t)n);
			o += (size_t)n;
			out[o++] = '/';
		}
		/* o is past a '/' after each kept segment; trimmed at the end */
		if (!slash)
			break;
		i = end + 1;
	}
	if (o > 1 && !trailing)
		o--;
	return (ssize_t)o;
}

/* Segment-boundary prefix match, case-insensitive (DESIGN.md "Routing"), written here. */
static bool
ref_prefix(const char *np, size_t nlen, const char *prefix)
{
	size_t pl = strlen(prefix);

	while (pl > 0 && prefix[pl - 1] == '/')
		pl--;
	if (pl == 0)
		return true;
	if (nlen < pl)
		return false;
	for (size_t i = 0; i < pl; i++) {
		int a = np[i], b = prefix[i];
		if (a >= 'A' && a <= 'Z')
			a += 32;
		if (b >= 'A' && b <= 'Z')
			b += 32;
		if (a != b)
			return false;
	}
	return nlen == pl || np[pl] == '/';
}

static const char *const ex_paths[] = { "/rpc", "/owa/", "/Microsoft-Server-ActiveSync", "/ews" };
static const char *const ex_hosts[] = { "mail.example.com", "[2001:db8::1]" };
static const char *const post_only[] = { "POST", "RPC_IN_DATA" };
static const char *const ecp_paths[] = { "/ecp" };
static const char *const any_paths[] = { "/" };
static const struct route routes[] = {
	{ 0, "exchange", ex_hosts, 2, ex_paths, 4, NULL, 0 },
	{ 1, "ecp", NULL, 0, ecp_paths, 1, post_only, 2 },
	{ 2, "apache", ex_hosts, 1, any_paths, 1, NULL, 0 },
};

static void
check_routes(const char *np, size_t nlen, struct http1_slice host)
{
	static const char *const meths[3] = { "GET", "POST", "RPC_IN_DATA" };
	int want = ROUTE_NOT_FOUND;

	for (size_t m = 0; m < 3; m++) {
		struct http1_slice method = { meths[m], strlen(meths[m]) };
		want = ROUTE_NOT_FOUND;
		for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]) && want == ROUTE_NOT_FOUND; i++) {
			const struct route *r = &routes[i];
			bool h = r->nhosts == 0, p = r->npaths == 0, ok = r->nmethods == 0;
			for (size_t k = 0; k < r->nhosts; k++)
				h = h || route_host_matches(host, r->hosts[k]);
			for (size_t k = 0; k < r->npaths; k++)
				p = p || ref_prefix(np, nlen, r->paths[k]);
			for (size_t k = 0; k < r->nmethods; k++)
				ok = ok || strcmp(r->methods[k], meths[m]) == 0;
			if (h && p)
				want = ok ? (int)i : ROUTE_BAD_METHOD;
		}
		CHECK(route_match(routes, sizeof(routes) / sizeof(routes[0]), host, np, nlen, method) == want);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char out[MAXLEN], ref[MAXLEN], again[MAXLEN], small[MAXLEN];
	const char *why = NULL;

	if (size > MAXLEN - 8)
		return 0;
	const uint8_t *nul = memchr(data, '\0', size);
	size_t plen = nul ? (size_t)(nul - data) : size;
	struct http1_slice host = { nul ? (const char *)nul + 1 : "", nul ? size - plen - 1 : 0 };
	char *path = malloc(plen ? plen : 1);
	CHECK(path != NULL);
	if (plen)
		memcpy(path, data, plen);

	ssize_t n = route_normalize_path(path, plen, out, plen ? plen : 1, &why);
	ssize_t r = ref_normalize(path, plen, ref);
	CHECK((n < 0) == (r < 0));
	if (n < 0) {
		CHECK(why != NULL);
	} else {
		size_t nl = (size_t)n;
		CHECK(why == NULL && n == r && memcmp(out, ref, nl) == 0);
		CHECK(nl <= plen);
		CHECK(out[0] == '/' || (nl == 1 && out[0] == '*'));
		for (size_t i = 0; i + 1 < nl; i++)
			CHECK(!(out[i] == '/' && out[i + 1] == '/'));
		for (size_t i = 0; i + 2 < nl; i++)
			if (out[i] == '%')
				CHECK(!unreserved(hexval((unsigned char)out[i + 1]) * 16 + hexval((unsigned char)out[i + 2])));
		CHECK(route_normalize_path(out, nl, again, sizeof(again), NULL) == n);
		CHECK(memcmp(out, again, nl) == 0);
		size_t cap = plen > 1 ? (size_t)data[0] % plen : 0;
		ssize_t s = route_normalize_path(path, plen, small, cap, NULL);
		CHECK(s < 0 || (s == n && memcmp(small, out, nl) == 0));
		check_routes(out, nl, host);
	}
	free(path);
	return 0;
}
