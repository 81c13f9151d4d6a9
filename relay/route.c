/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * route.c: request-target normalisation and the route table (DESIGN.md, "Routing").
 *
 * Pure: no I/O, no allocation, no state. The normalised path is only used to choose a route;
 * the request target is forwarded as the client sent it, so anything a backend (IIS, Apache)
 * could read differently from us is refused rather than guessed at.
 */
#include "autoconf.h"

#include <stdbool.h>
#include <string.h>

#include "route.h"

/* ASCII lower case, independent of the locale. */
static int
route_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* Value of a hex digit, or -1. */
static int
route_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = route_lower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* True for RFC 3986 unreserved characters: ALPHA DIGIT - . _ ~ */
static bool
route_unreserved(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '.' || c == '_' || c == '~';
}

/* True when a[0..n) equals the C string b, ASCII case-insensitively. */
static bool
route_eq_nocase(const char *a, size_t n, const char *b)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (b[i] == '\0' || route_lower((unsigned char)a[i]) != route_lower((unsigned char)b[i]))
			return false;
	return b[n] == '\0';
}

/* Sets *why (when wanted) and returns -1. */
static ssize_t
route_refuse(const char **why, const char *reason)
{
	if (why != NULL)
		*why = reason;
	return -1;
}

/*
 * Decodes the segment path[*ip..) (up to '/' or end) into out[o..cap).
 * Returns the decoded length and advances *ip to the '/' or end; -1 with *why on refusal.
 */
static ssize_t
route_decode_segment(const char *path, size_t len, size_t *ip, char *out, size_t o, size_t cap,
    const char **why)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i = *ip, start = o;
	int hi, lo, v;
	unsigned char c;

	for (; i < len && path[i] != '/'; i++) {
		c = (unsigned char)path[i];
		if (c == '\\')
			return route_refuse(why, "backslash in path");
		if (c < 0x20 || c >= 0x7f)
			return route_refuse(why, "control or non-ASCII byte in path");
		if (c != '%') {
			if (o >= cap)
				return route_refuse(why, "normalised path too long");
			out[o++] = (char)c;
			continue;
		}
		if (i + 1 < len && (path[i + 1] == 'u' || path[i + 1] == 'U'))
			return route_refuse(why, "%u escape in path");
		if (i + 2 >= len)
			return route_refuse(why, "truncated escape in path");
		hi = route_hexval((unsigned char)path[i + 1]);
		lo = route_hexval((unsigned char)path[i + 2]);
		if (hi < 0 || lo < 0)
			return route_refuse(why, "malformed escape in path");
		v = hi * 16 + lo;
		if (v == '/' || v == '\\')
			return route_refuse(why, "escaped slash or backslash in path");
		if (v < 0x20 || v == 0x7f)
			return route_refuse(why, "escaped control byte in path");
		if (route_unreserved(v)) {
			if (o >= cap)
				return route_refuse(why, "normalised path too long");
			out[o++] = (char)v;
		} else {
			if (o >= cap || cap - o < 3)
				return route_refuse(why, "normalised path too long");
			out[o++] = '%';
			out[o++] = hex[hi];
			out[o++] = hex[lo];
		}
		i += 2;
	}
	*ip = i;
	return (ssize_t)(o - start);
}

/*
 * Normalises a path (see route.h). Works segment by segment: each segment is decoded at the
 * end of out, then dropped ("."), used to pop the previous segment (".."), or kept. out always
 * starts with '/' and, between segments, ends with '/'. The result is never longer than the
 * input and cap >= len always suffices; a smaller cap may be refused even when the result
 * would fit (dropped segments are decoded in out first).
 */
ssize_t
route_normalize_path(const char *path, size_t len, char *out, size_t cap, const char **why)
{
	size_t i, o;
	ssize_t n;
	const char *q;

	if (why != NULL)
		*why = NULL;
	q = memchr(path, '?', len);
	if (q != NULL)
		len = (size_t)(q - path);
	if (len == 1 && path[0] == '*') {
		if (cap < 1)
			return route_refuse(why, "normalised path too long");
		out[0] = '*';
		return 1;
	}
	if (len == 0 || path[0] != '/')
		return route_refuse(why, "path does not start with '/'");
	if (cap < 1)
		return route_refuse(why, "normalised path too long");
	out[0] = '/';
	o = 1;
	i = 1;
	while (i < len) {
		if (path[i] == '/') {		/* empty segment: collapse "//" */
			i++;
			continue;
		}
		n = route_decode_segment(path, len, &i, out, o, cap, why);
		if (n < 0)
			return -1;
		if (n == 1 && out[o] == '.') {
			/* "." : drop it (and the '/' after it, if any) */
		} else if (n == 2 && out[o] == '.' && out[o + 1] == '.') {
			if (o == 1)
				return route_refuse(why, "'..' above the root");
			o--;			/* past the '/' ending the previous segment */
			while (out[o - 1] != '/')
				o--;
		} else {
			o += (size_t)n;
			if (i < len) {		/* path[i] == '/' */
				if (o >= cap)
					return route_refuse(why, "normalised path too long");
				out[o++] = '/';
			}
		}
		if (i < len)
			i++;			/* the '/' */
	}
	return (ssize_t)o;
}

/*
 * True when npath matches prefix at a segment boundary, case-insensitively. Trailing '/'s of
 * the prefix are ignored ("/owa/" behaves as "/owa" and matches "/owa" too); a prefix of "/"
 * (or "") matches every path, "*" included.
 */
int
route_path_matches(const char *npath, size_t nlen, const char *prefix)
{
	size_t plen = strlen(prefix), i;

	while (plen > 0 && prefix[plen - 1] == '/')
		plen--;
	if (plen == 0)
		return 1;
	if (nlen < plen)
		return 0;
	for (i = 0; i < plen; i++)
		if (route_lower((unsigned char)npath[i]) != route_lower((unsigned char)prefix[i]))
			return 0;
	return nlen == plen || npath[plen] == '/';
}

/*
 * True when the Host value equals name, case-insensitively, once a ":port" is removed
 * ("[v6]:port" keeps its brackets) and one trailing '.' of a DNS name is ignored
 * ("mail.example.com." is the same host). An empty Host matches nothing.
 */
int
route_host_matches(struct http1_slice host, const char *name)
{
	const char *p = host.p, *colon;
	size_t n = host.len, i;

	if (n == 0 || name == NULL)
		return 0;
	if (p[0] == '[') {
		colon = memchr(p, ']', n);
		if (colon == NULL)
			return 0;
		i = (size_t)(colon - p) + 1;
		if (i < n && p[i] != ':')
			return 0;
		n = i;
	} else {
		colon = memchr(p, ':', n);
		if (colon != NULL) {
			if (memchr(colon + 1, ':', n - (size_t)(colon - p) - 1) != NULL)
				return 0;	/* bare IPv6 or junk: never a name we route on */
			n = (size_t)(colon - p);
		}
		if (n > 1 && p[n - 1] == '.')
			n--;
	}
	if (n == 0)
		return 0;
	return route_eq_nocase(p, n, name);
}

/* True when any of the route's hosts matches (or it has none). */
static bool
route_hosts_match(const struct route *r, struct http1_slice host)
{
	size_t i;

	if (r->nhosts == 0)
		return true;
	for (i = 0; i < r->nhosts; i++)
		if (route_host_matches(host, r->hosts[i]))
			return true;
	return false;
}

/* True when any of the route's path prefixes matches (or it has none). */
static bool
route_paths_match(const struct route *r, const char *npath, size_t nlen)
{
	size_t i;

	if (r->npaths == 0)
		return true;
	for (i = 0; i < r->npaths; i++)
		if (route_path_matches(npath, nlen, r->paths[i]))
			return true;
	return false;
}

/* True when the route allows the method (exact, case-sensitive: methods are case-sensitive). */
static bool
route_method_allowed(const struct route *r, struct http1_slice method)
{
	size_t i;

	if (r->nmethods == 0)
		return true;
	for (i = 0; i < r->nmethods; i++)
		if (strlen(r->methods[i]) == method.len &&
		    memcmp(r->methods[i], method.p, method.len) == 0)
			return true;
	return false;
}

/*
 * First route whose hosts and paths match; ROUTE_BAD_METHOD when its methods list excludes
 * method (later routes are not tried), ROUTE_NOT_FOUND when none matches.
 */
int
route_match(const struct route *routes, size_t n, struct http1_slice host,
    const char *npath, size_t nlen, struct http1_slice method)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (!route_hosts_match(&routes[i], host) || !route_paths_match(&routes[i], npath, nlen))
			continue;
		return route_method_allowed(&routes[i], method) ? (int)i : ROUTE_BAD_METHOD;
	}
	return ROUTE_NOT_FOUND;
}
