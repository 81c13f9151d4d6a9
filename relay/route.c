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

/* Value of a hex digit, or -1. */
static int
route_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* True for RFC 3986 unreserved characters: ALPHA DIGIT - . _ ~ */
static bool
route_unreserved(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	    c == '-' || c == '.' || c == '_' || c == '~';
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
 * Decodes the escape at path[i] ('%') into out[*o..cap): an unreserved character decoded,
 * any other valid escape kept with upper-case hex digits. Returns 0 (*o advanced; the escape
 * is 3 bytes long), or -1 with *why when it is malformed, ambiguous or out does not fit it.
 */
static ssize_t
route_decode_escape(const char *path, size_t len, size_t i, char *out, size_t *o, size_t cap,
    const char **why)
{
	static const char hex[] = "0123456789ABCDEF";
	int hi, lo, v;

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
		if (*o >= cap)
			return route_refuse(why, "normalised path too long");
		out[(*o)++] = (char)v;
	} else {
		if (*o >= cap || cap - *o < 3)
			return route_refuse(why, "normalised path too long");
		out[(*o)++] = '%';
		out[(*o)++] = hex[hi];
		out[(*o)++] = hex[lo];
	}
	return 0;
}

/*
 * Decodes the segment path[*ip..) (up to '/' or end) into out[o..cap).
 * Returns the decoded length and advances *ip to the '/' or end; -1 with *why on refusal.
 */
static ssize_t
route_decode_segment(const char *path, size_t len, size_t *ip, char *out, size_t o, size_t cap,
    const char **why)
{
	size_t i = *ip, start = o;
	unsigned char c;

	for (; i < len && path[i] != '/'; i++) {
		c = (unsigned char)path[i];
		if (c == '\\')
			return route_refuse(why, "backslash in path");
		if (c == '#')
			return route_refuse(why, "fragment in path");
		if (c < 0x20 || c >= 0x7f)
			return route_refuse(why, "control or non-ASCII byte in path");
		if (c == '%') {
			if (route_decode_escape(path, len, i, out, &o, cap, why) < 0)
				return -1;
			i += 2;
		} else {
			if (o >= cap)
				return route_refuse(why, "normalised path too long");
			out[o++] = (char)c;
		}
	}
	*ip = i;
	return (ssize_t)(o - start);
}

/*
 * Applies the segment of n bytes just decoded at out[*o]: "." is dropped, ".." removes the
 * segment before it, any other is kept, followed by '/' when more (path bytes) follow.
 * after_empty: an empty segment ("//") came earlier in the path, collapsed already.
 * Returns 0, or -1 with *why (".." above the root or after an empty segment, out too small).
 */
static ssize_t
route_apply_segment(char *out, size_t *o, size_t n, size_t cap, bool more, bool after_empty,
    const char **why)
{
	if (n == 1 && out[*o] == '.')
		return 0;		/* "." : drop it (and the '/' after it, if any) */
	if (n == 2 && out[*o] == '.' && out[*o + 1] == '.') {
		/*
		 * RFC 3986 5.2.4 resolves ".." against the empty segment that we collapsed:
		 * "/powershell//../owa/" is "/powershell/owa/" there and "/owa/" here.
		 */
		if (after_empty)
			return route_refuse(why, "'..' after an empty segment");
		if (*o == 1)
			return route_refuse(why, "'..' above the root");
		(*o)--;			/* past the '/' ending the previous segment */
		while (out[*o - 1] != '/')
			(*o)--;
		return 0;
	}
	*o += n;
	if (more) {			/* path[i] == '/' */
		if (*o >= cap)
			return route_refuse(why, "normalised path too long");
		out[(*o)++] = '/';
	}
	return 0;
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
	bool after_empty = false;

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
			after_empty = true;
			i++;
			continue;
		}
		n = route_decode_segment(path, len, &i, out, o, cap, why);
		if (n < 0 || route_apply_segment(out, &o, (size_t)n, cap, i < len, after_empty, why) < 0)
			return -1;
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
	size_t plen = strlen(prefix);

	while (plen > 0 && prefix[plen - 1] == '/')
		plen--;
	if (plen == 0)
		return 1;
	if (nlen < plen || !http1_ci_eq(npath, plen, prefix, plen))
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
	return http1_ci_eq(p, n, name, strlen(name));
}

/* True when method is exactly name (case-sensitive: methods are case-sensitive). */
static int
route_method_is(struct http1_slice method, const char *name)
{
	return strlen(name) == method.len && memcmp(name, method.p, method.len) == 0;
}

/* route_path_matches for a path held in a slice. */
static int
route_path_in(struct http1_slice npath, const char *prefix)
{
	return route_path_matches(npath.p, npath.len, prefix);
}

/* True when one of names[0..n) matches s by match, or when the list is empty (any). */
static bool
route_any(const char *const *names, size_t n, struct http1_slice s,
    int (*match)(struct http1_slice, const char *))
{
	size_t i;

	if (n == 0)
		return true;
	for (i = 0; i < n; i++)
		if (match(s, names[i]))
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
	struct http1_slice path = { npath, nlen };
	size_t i;

	for (i = 0; i < n; i++) {
		const struct route *r = &routes[i];

		if (!route_any(r->hosts, r->nhosts, host, route_host_matches) ||
		    !route_any(r->paths, r->npaths, path, route_path_in))
			continue;
		return route_any(r->methods, r->nmethods, method, route_method_is) ? (int)i :
		    ROUTE_BAD_METHOD;
	}
	return ROUTE_NOT_FOUND;
}
