/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * route.h: request-target normalisation and the route table (pure: no I/O, no allocation).
 *
 * Routes are tried in order and the first whose hosts and paths match wins (DESIGN.md,
 * "Routing"). Paths match as prefixes at a segment boundary, case-insensitively, against the
 * normalised path; hosts match case-insensitively, ignoring any port.
 */
#ifndef EXRELAY_ROUTE_H
#define EXRELAY_ROUTE_H

#include <stddef.h>
#include <sys/types.h>

#include "http1.h"

struct route {
	int backend;			/* index into the configuration's backends */
	const char *backend_name;
	const char *const *hosts;	/* lower case, no port; nhosts 0 = any host */
	size_t nhosts;
	const char *const *paths;	/* as configured ("/rpc", "/Microsoft-Server-ActiveSync"); npaths 0 = any */
	size_t npaths;
	const char *const *methods;	/* exact method tokens; nmethods 0 = any */
	size_t nmethods;
};

#define ROUTE_NOT_FOUND  (-1)	/* no route matches: 404 */
#define ROUTE_BAD_METHOD (-2)	/* the matching route's methods list excludes the method: 405 */

/*
 * Normalises the path of a request target (the bytes from its first '/' up to '?' or the end;
 * or "*" for OPTIONS *) into out[0..cap): percent-escapes of unreserved characters
 * (ALPHA DIGIT - . _ ~) decoded once, other valid escapes kept as they are (hex digits upper-cased),
 * "." and ".." segments removed, repeated '/' collapsed.
 * Returns the length written (the result starts with '/', or is "*"), or -1 when the path is
 * ambiguous and must be refused with 400: "%2F"/"%2f", "%5C", "%00", "%u", "\", '#', control
 * bytes (raw, or escaped: %01-%1F, %7F), raw bytes >= 0x7F (escaped ones, "%C3%A9", are kept
 * as escapes: tests/fuzz/fuzz_route.c checks both rules), ".." above the root, ".."
 * anywhere after an empty segment ("/a//../b": RFC 3986 5.2.4 gives "/a/b", collapsing "//"
 * first gives "/b"; a decoded "%2e%2e" likewise), a malformed
 * escape ("%", "%4", "%zz"), a path not starting with '/', or cap too small. *why gets a short
 * static reason when why is not NULL.
 */
ssize_t route_normalize_path(const char *path, size_t len, char *out, size_t cap, const char **why);

/* True when the normalised path npath matches prefix at a segment boundary, case-insensitively. */
int route_path_matches(const char *npath, size_t nlen, const char *prefix);

/* True when the Host value (port ignored, IPv6 literals in brackets kept whole) equals name, case-insensitively. */
int route_host_matches(struct http1_slice host, const char *name);

/*
 * Returns the index of the first route whose hosts and paths match (npath normalised,
 * host the Host value, possibly empty), ROUTE_BAD_METHOD when that route has a methods list
 * that does not contain method, or ROUTE_NOT_FOUND.
 */
int route_match(const struct route *routes, size_t n, struct http1_slice host,
    const char *npath, size_t nlen, struct http1_slice method);

#endif
