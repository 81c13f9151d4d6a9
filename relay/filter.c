/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * filter.c: the request filters that stop known Exchange exploit chains before they reach a
 * backend (DESIGN.md, "Exchange protection"). Pure: no I/O, no allocation, no state.
 *
 * - ProxyShell (CVE-2021-34473) and ProxyNotShell (CVE-2022-41040): the target, percent-decoded
 *   until it no longer changes and lower-cased, names "autodiscover" together with
 *   "powershell"; or an autodiscover.json request whose query carries '@' followed by a path
 *   or an "Email=autodiscover" self-reference (the shape of Microsoft's mitigation M1 and of
 *   EEMS's URL Rewrite rule).
 * - ProxyLogon (CVE-2021-26855): a Cookie carrying X-AnonResource-Backend, or X-BEResource with
 *   a '~' in its value (the rules of Microsoft's EOMT.ps1, as Kemp's LoadMaster guide repeats).
 * - The administrator's rules: method, path prefix, query substring (all case-insensitive,
 *   on the decoded target), for the next CVE.
 */
#include "autoconf.h"

#include <stdbool.h>
#include <string.h>
#include <strings.h>

#include "filter.h"

/* The longest target the filters read (the largest head exrelay accepts). */
#define FILTER_TARGET_MAX (64 * 1024)

/* Rounds of percent-decoding before a target counts as stable; more rounds is an attack. */
#define DECODE_ROUNDS 4

static int
hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch = (char)(ch | 0x20);
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* One round of percent-decoding of p[0..n) in place, lower-casing; true when it changed. */
static bool
decode_once(char *p, size_t *n)
{
	size_t k = 0;
	bool changed = false;

	for (size_t i = 0; i < *n; i++, k++) {
		int hi, lo;
		char ch = p[i];
		if (ch == '%' && i + 2 < *n && (hi = hexval(p[i + 1])) >= 0 && (lo = hexval(p[i + 2])) >= 0) {
			ch = (char)(hi << 4 | lo);
			i += 2;
			changed = true;
		}
		p[k] = (char)(ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
	}
	*n = k;
	return changed;
}

/* ASCII lower case by table: the copy of a target is one load and one store a byte. */
#define LC(c) (unsigned char)((c) >= 'A' && (c) <= 'Z' ? (c) + 32 : (c))
#define L4(b) LC(b), LC((b) + 1), LC((b) + 2), LC((b) + 3)
#define L16(b) L4(b), L4((b) + 4), L4((b) + 8), L4((b) + 12)
static const unsigned char filter_lower[256] = {
	L16(0), L16(16), L16(32), L16(48), L16(64), L16(80), L16(96), L16(112),
	L16(128), L16(144), L16(160), L16(176), L16(192), L16(208), L16(224), L16(240),
};
#undef L16
#undef L4
#undef LC

/*
 * Decodes the target into out (NUL-terminated, lower-case) until stable. Returns its length,
 * or -1 when it does not fit or is still changing after DECODE_ROUNDS rounds.
 */
static ssize_t
decode_target(const char *t, size_t n, char *out, size_t cap)
{
	if (n >= cap)
		return -1;
	bool escaped = n > 0 && memchr(t, '%', n) != NULL;

	for (size_t i = 0; i < n; i++)	/* copy, lower-cased (the usual target has no escape) */
		out[i] = (char)filter_lower[(unsigned char)t[i]];
	for (int round = 0; escaped && decode_once(out, &n); round++)
		if (round == DECODE_ROUNDS)
			return -1;
	out[n] = '\0';
	for (char *z = memchr(out, '\0', n); z; z = memchr(z + 1, '\0', (size_t)(out + n - z - 1)))
		*z = '?';	/* a NUL must not end the matching early */
	return (ssize_t)n;
}

/* The ProxyShell/ProxyNotShell shapes, on the decoded, lower-cased target. */
static const char *
exchange_target_rule(const char *t)
{
	const char *q = strchr(t, '?');

	if (strstr(t, "autodiscover") && strstr(t, "powershell"))
		return "proxyshell";
	if (!strstr(t, "autodiscover.json") || !q)
		return NULL;
	if (strstr(q, "email=autodiscover"))
		return "proxynotshell";
	for (const char *at = strchr(q, '@'); at; at = strchr(at + 1, '@')) {
		size_t span = strcspn(at, "&/");
		if (at[span] == '/')
			return "proxynotshell";	/* "@host/path": a path smuggled into the query */
	}
	return NULL;
}

/* True when value v[0..n) (a cookie value) holds a '~', plain or as %7E. */
static bool
has_tilde(const char *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == '~' || (v[i] == '%' && i + 2 < n && v[i + 1] == '7' && (v[i + 2] | 0x20) == 'e'))
			return true;
	return false;
}

/* The next 'x' or 'X' in [p, end), or NULL (two vectorised scans, not a loop per byte). */
static const char *
next_x(const char *p, const char *end)
{
	const char *a = memchr(p, 'x', (size_t)(end - p)), *b = memchr(p, 'X', (size_t)(end - p));

	return !a ? b : !b ? a : a < b ? a : b;
}

/* The ProxyLogon cookie shapes in one Cookie field value. */
static const char *
exchange_cookie_rule(const char *v, size_t n)
{
	static const char anon[] = "x-anonresource-backend", be[] = "x-beresource";
	const char *end = v + n;

	for (const char *p = next_x(v, end); p; p = next_x(p + 1, end))
		if ((size_t)(end - p) >= sizeof(anon) - 1 && strncasecmp(p, anon, sizeof(anon) - 1) == 0)
			return "proxylogon";
	for (const char *s = v; s < end;) {
		const char *semi = memchr(s, ';', (size_t)(end - s)), *e = semi ? semi : end;
		while (s < e && (*s == ' ' || *s == '\t'))
			s++;
		if ((size_t)(e - s) > sizeof(be) - 1 && strncasecmp(s, be, sizeof(be) - 1) == 0) {
			const char *eq = memchr(s, '=', (size_t)(e - s));
			if (eq && has_tilde(eq + 1, (size_t)(e - eq - 1)))
				return "proxylogon";
		}
		s = e + 1;
	}
	return NULL;
}

/* True when rule r matches (method, decoded path and query). */
static bool
rule_matches(const struct filter_rule *r, struct http1_slice method, const char *path, size_t plen,
    const char *query)
{
	bool m = r->nmethods == 0;

	for (size_t i = 0; i < r->nmethods && !m; i++)
		m = method.len == strlen(r->methods[i]) && strncasecmp(method.p, r->methods[i], method.len) == 0;
	if (!m)
		return false;
	if (r->path && r->path[0]) {
		size_t n = strlen(r->path);
		if (plen < n || strncasecmp(path, r->path, n) != 0 ||
		    (plen > n && r->path[n - 1] != '/' && path[n] != '/'))
			return false;
	}
	return !r->query || !r->query[0] || (query && strcasestr(query, r->query));
}

/* The administrator's rules, on the decoded path and query. */
static const char *
admin_rules(const struct http1_request *req, const struct filter_config *f)
{
	static __thread char p[FILTER_TARGET_MAX], q[FILTER_TARGET_MAX];
	ssize_t pn = decode_target(req->path.p, req->path.len, p, sizeof(p));
	ssize_t qn = decode_target(req->query.p, req->query.len, q, sizeof(q));

	if (pn < 0 || qn < 0)
		return "undecodable-target";
	for (size_t i = 0; i < f->nrules; i++)
		if (rule_matches(&f->rules[i], req->method, p, (size_t)pn, req->query.len ? q : NULL))
			return f->rules[i].name;
	return NULL;
}

const char *
filter_request(const struct http1_request *req, const struct filter_config *f)
{
	static __thread char t[FILTER_TARGET_MAX];
	const char *why;

	if (f->exchange) {
		if (decode_target(req->target.p, req->target.len, t, sizeof(t)) < 0)
			return "undecodable-target";
		if ((why = exchange_target_rule(t)))
			return why;
		for (size_t i = 0; i < req->nheaders; i++) {
			const struct http1_header *h = &req->headers[i];
			if (h->name.len == 6 && strncasecmp(h->name.p, "Cookie", 6) == 0 &&
			    (why = exchange_cookie_rule(h->value.p, h->value.len)))
				return why;
		}
	}
	return f->nrules ? admin_rules(req, f) : NULL;
}
