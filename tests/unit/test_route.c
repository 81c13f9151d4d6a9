/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_route.c: TAP tests for route.c: path normalisation (accepted and refused targets),
 * prefix and host matching, and the route table (first match, methods, 404/405).
 */
#include <string.h>

#include "route.h"
#include "tap.h"

#define S(lit) ((struct http1_slice){ (lit), sizeof(lit) - 1 })

struct norm_case {
	const char *in;
	size_t len;		/* 0: strlen(in) */
	const char *want;	/* NULL: refused */
};

static const struct norm_case norm_cases[] = {
	{ "/", 0, "/" },
	{ "*", 0, "*" },
	{ "/rpc/rpcproxy.dll", 0, "/rpc/rpcproxy.dll" },
	{ "/rpc/rpcproxy.dll?mail.example.com:6001", 0, "/rpc/rpcproxy.dll" },
	{ "/./", 0, "/" },
	{ "/.", 0, "/" },
	{ "/..", 0, NULL },
	{ "/../", 0, NULL },
	{ "/a/../../b", 0, NULL },
	{ "/a/./b/../c", 0, "/a/c" },
	{ "/a/b/..", 0, "/a/" },
	{ "/a/b/.", 0, "/a/b/" },
	{ "/a/b/../", 0, "/a/" },
	{ "/a/..", 0, "/" },
	{ "/a/../b", 0, "/b" },
	{ "//rpc//x", 0, "/rpc/x" },
	{ "///", 0, "/" },
	{ "/a//", 0, "/a/" },
	{ "/a/", 0, "/a/" },
	{ "/a/...", 0, "/a/..." },
	{ "/a/.../b", 0, "/a/.../b" },
	{ "/a/.b/..c", 0, "/a/.b/..c" },
	{ "/%7e", 0, "/~" },
	{ "/%7E", 0, "/~" },
	{ "/%41", 0, "/A" },
	{ "/%61%2D%5f%2e%30", 0, "/a-_.0" },
	{ "/%20", 0, "/%20" },
	{ "/a%3ab", 0, "/a%3Ab" },
	{ "/%e2%82%ac", 0, "/%E2%82%AC" },
	{ "/%25", 0, "/%25" },
	{ "/%252e%252e/x", 0, "/%252e%252e/x" },	/* decoded once: never '..' */
	{ "/a/%2e%2e", 0, "/" },
	{ "/%2E", 0, "/" },
	{ "/a/%2e.", 0, "/" },
	{ "/%2e.", 0, NULL },
	{ "/owa/%2e%2e/rpc", 0, "/rpc" },
	{ "/owa/.%2E/rpc/x", 0, "/rpc/x" },
	{ "/%2e%2e", 0, NULL },
	{ "/a/%2e%2e/%2e%2e", 0, NULL },
	{ "/%2e%2e/", 0, NULL },
	{ "/%2F", 0, NULL },
	{ "/%2f", 0, NULL },
	{ "/owa/..%2f", 0, NULL },
	{ "/owa/..%2frpc", 0, NULL },
	{ "/%5c", 0, NULL },
	{ "/%5C", 0, NULL },
	{ "/%00", 0, NULL },
	{ "/%0a", 0, NULL },
	{ "/%1F", 0, NULL },
	{ "/%7f", 0, NULL },
	{ "/%u002f", 0, NULL },
	{ "/%U002F", 0, NULL },
	{ "/%", 0, NULL },
	{ "/%4", 0, NULL },
	{ "/%G1", 0, NULL },
	{ "/%1G", 0, NULL },
	{ "/%zz", 0, NULL },
	{ "/%%41", 0, NULL },
	{ "/a\\b", 0, NULL },
	{ "/..\\", 0, NULL },
	{ "/a\x7f", 0, NULL },
	{ "/a\x80", 0, NULL },
	{ "/\xc3\xa9", 0, NULL },
	{ "/a\tb", 0, NULL },
	{ "/a\x01", 0, NULL },
	{ "/a\0b", 4, NULL },
	{ "", 0, NULL },
	{ "rpc", 0, NULL },
	{ "**", 0, NULL },
	{ "/Microsoft-Server-ActiveSync?Cmd=Sync", 0, "/Microsoft-Server-ActiveSync" },
	{ "/a;b/c", 0, "/a;b/c" },
	{ "/a/%2e%2e%2e", 0, "/a/..." },
	/* '..' after an empty segment: RFC 3986 5.2.4 pops the empty one, collapsing pops another */
	{ "/powershell//../owa/", 0, NULL },
	{ "//../owa/", 0, NULL },
	{ "/a//%2e%2e/b", 0, NULL },
	{ "/a//.%2E/b", 0, NULL },
	{ "/a//b/../..", 0, NULL },			/* RFC: "/a/", collapsed first: "/" */
	{ "/a//b/../c", 0, NULL },			/* refused too: any '..' after a '//' */
	{ "/a//./../b", 0, NULL },
	{ "/a/..//b", 0, "/b" },			/* '..' before the empty segment: same either way */
	{ "/a//b/./c", 0, "/a/b/c" },			/* '.' after one: harmless */
	{ "/a//...", 0, "/a/..." },
	/* a fragment is no part of a request target (RFC 9112 3.2) */
	{ "/ecp#/../index.html", 0, NULL },
	{ "/owa#", 0, NULL },
	{ "/a?b#c", 0, "/a" },				/* the query is not the path's business */
};

/* Runs the normalisation table. */
static void
test_normalize_table(void)
{
	char out[256];
	const char *why;
	size_t i, len;
	ssize_t n;

	for (i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		const struct norm_case *c = &norm_cases[i];

		len = c->len ? c->len : strlen(c->in);
		why = "unset";
		n = route_normalize_path(c->in, len, out, sizeof(out), &why);
		if (c->want == NULL) {
			if (!ok(n == -1 && why != NULL, "normalise case %zu refused (%s)", i, why ? why : "no reason"))
				diag("  got %zd \"%.*s\"", n, n > 0 ? (int)n : 0, out);
		} else {
			if (n < 0) {
				ok(0, "normalise case %zu \"%s\"", i, c->want);
				diag("  refused: %s", why ? why : "(null)");
				continue;
			}
			out[n] = '\0';
			is_str(out, c->want, "normalise case %zu -> \"%s\"", i, c->want);
		}
	}
	n = route_normalize_path("/x", 2, out, sizeof(out), NULL);
	is_int(n, 2, "why may be NULL");
	n = route_normalize_path("/%2f", 4, out, sizeof(out), NULL);
	is_int(n, -1, "why may be NULL on refusal");
}

/*
 * Every cap below the needed size fails without writing past cap; cap == input length always
 * works (dot-segments are decoded in out before being dropped, so the exact result size may not).
 */
static void
test_normalize_cap(void)
{
	static const char *const paths[] = { "/owa/%7euser/%e2%82%ac/x/./y/../z//w", "/a", "*" };
	char want[64], buf[64];
	size_t i, cap, bad;
	ssize_t need, n;

	for (i = 0; i < 3; i++) {
		need = route_normalize_path(paths[i], strlen(paths[i]), want, sizeof(want), NULL);
		ok(need > 0 && (size_t)need <= strlen(paths[i]), "cap: \"%s\" needs %zd, no more than its length", paths[i], need);
		bad = 0;
		for (cap = 0; cap < (size_t)need; cap++) {
			memset(buf, '#', sizeof(buf));
			n = route_normalize_path(paths[i], strlen(paths[i]), buf, cap, NULL);
			if (n != -1 || buf[cap] != '#')
				bad++;
		}
		is_int(bad, 0, "cap: every cap below %zd refused, canary intact", need);
		memset(buf, '#', sizeof(buf));
		cap = strlen(paths[i]);
		n = route_normalize_path(paths[i], cap, buf, cap, NULL);
		ok(n == need && memcmp(buf, want, (size_t)need) == 0 && buf[cap] == '#',
		    "cap: cap of the input length (%zu) works", cap);
	}
}

/* Prefix matching at segment boundaries. */
static void
test_path_matches(void)
{
	ok(route_path_matches("/rpc/rpcproxy.dll", 17, "/rpc"), "/rpc matches /rpc/rpcproxy.dll");
	ok(route_path_matches("/rpc", 4, "/rpc"), "/rpc matches /rpc");
	ok(route_path_matches("/rpc/", 5, "/rpc"), "/rpc matches /rpc/");
	ok(!route_path_matches("/rpcfoo", 7, "/rpc"), "/rpc does not match /rpcfoo");
	ok(!route_path_matches("/rp", 3, "/rpc"), "/rpc does not match /rp");
	ok(!route_path_matches("/", 1, "/rpc"), "/rpc does not match /");
	ok(route_path_matches("/RPC/x", 6, "/rpc"), "case-insensitive: /RPC/x");
	ok(route_path_matches("/microsoft-server-activesync", 28, "/Microsoft-Server-ActiveSync"),
	    "case-insensitive: configured mixed case");
	ok(route_path_matches("/anything/at/all", 16, "/"), "/ matches everything");
	ok(route_path_matches("*", 1, "/"), "/ matches *");
	ok(!route_path_matches("*", 1, "/rpc"), "/rpc does not match *");
	ok(route_path_matches("/owa/x", 6, "/owa/"), "trailing '/' in prefix: /owa/ matches /owa/x");
	ok(route_path_matches("/owa", 4, "/owa/"), "trailing '/' in prefix: /owa/ matches /owa");
	ok(!route_path_matches("/owax", 5, "/owa/"), "trailing '/' in prefix: /owa/ does not match /owax");
	ok(route_path_matches("/rpc/x", 4, "/rpc") && !route_path_matches("/rpcx", 4, "/rpc/x"),
	    "nlen is honoured (no reading past it)");
	ok(route_path_matches("/a/b/c", 6, "/a/b"), "multi-segment prefix");
	ok(!route_path_matches("/a/bc", 5, "/a/b"), "multi-segment prefix at boundary only");
}

/* Host matching: case, port, IPv6 literals. */
static void
test_host_matches(void)
{
	ok(route_host_matches(S("Mail.Example.com:443"), "mail.example.com"), "host: case and port ignored");
	ok(route_host_matches(S("mail.example.com"), "mail.example.com"), "host: exact");
	ok(route_host_matches(S("MAIL.EXAMPLE.COM"), "mail.example.com"), "host: upper case");
	ok(route_host_matches(S("mail.example.com."), "mail.example.com"), "host: trailing dot");
	ok(route_host_matches(S("mail.example.com.:443"), "mail.example.com"), "host: trailing dot and port");
	ok(!route_host_matches(S("mail.example.com.evil"), "mail.example.com"), "host: longer name");
	ok(!route_host_matches(S("xmail.example.com"), "mail.example.com"), "host: suffix only");
	ok(!route_host_matches(S("mail.example.co"), "mail.example.com"), "host: shorter name");
	ok(route_host_matches(S("[2001:db8::1]:443"), "[2001:db8::1]"), "host: IPv6 with port");
	ok(route_host_matches(S("[2001:DB8::1]"), "[2001:db8::1]"), "host: IPv6 without port, case");
	ok(!route_host_matches(S("[2001:db8::1]x"), "[2001:db8::1]"), "host: junk after IPv6");
	ok(!route_host_matches(S("[2001:db8::1"), "[2001:db8::1]"), "host: unterminated IPv6");
	ok(!route_host_matches(S("2001:db8::1"), "2001:db8::1"), "host: bare IPv6 never matches");
	ok(!route_host_matches(S(""), "mail.example.com"), "host: empty matches nothing named");
	ok(!route_host_matches(S(""), ""), "host: empty matches nothing");
	ok(!route_host_matches(S(":443"), ""), "host: port only matches nothing");
	ok(route_host_matches(S("10.1.1.14:8443"), "10.1.1.14"), "host: IPv4 with port");
}

static const char *const ex_hosts[] = { "mail.example.com", "autodiscover.example.com" };
static const char *const ex_paths[] = { "/rpc", "/rpcwithcert", "/owa", "/ecp", "/ews", "/mapi",
    "/autodiscover", "/oab", "/Microsoft-Server-ActiveSync", "/exchange", "/exchweb", "/public" };
static const char *const rpc_paths[] = { "/rpc/" };
static const char *const rpc_methods[] = { "RPC_IN_DATA", "RPC_OUT_DATA" };
static const char *const other_hosts[] = { "other.example.com" };

/* Normalises target and matches it; -100 when normalisation refused it. */
static int
match(const struct route *r, size_t n, struct http1_slice host, const char *target, struct http1_slice method)
{
	char np[256];
	ssize_t nlen;

	nlen = route_normalize_path(target, strlen(target), np, sizeof(np), NULL);
	if (nlen < 0)
		return -100;
	return route_match(r, n, host, np, (size_t)nlen, method);
}

/* The route table: order, hosts, paths, methods. */
static void
test_route_match(void)
{
	const struct route routes[] = {
		{ 0, "rpc", ex_hosts, 2, rpc_paths, 1, rpc_methods, 2 },
		{ 1, "exchange", ex_hosts, 2, ex_paths, 12, NULL, 0 },
		{ 2, "other", other_hosts, 1, NULL, 0, NULL, 0 },
		{ 3, "apache", NULL, 0, NULL, 0, NULL, 0 },
	};
	const struct route only_ex[] = {
		{ 1, "exchange", ex_hosts, 2, ex_paths, 12, NULL, 0 },
	};
	struct http1_slice mail = S("Mail.Example.Com:443"), get = S("GET");

	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll?mail:6001", S("RPC_IN_DATA")), 0, "RPC_IN_DATA -> rpc route");
	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll", S("RPC_OUT_DATA")), 0, "RPC_OUT_DATA -> rpc route");
	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll", get), ROUTE_BAD_METHOD, "GET on rpc route -> 405");
	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll", S("rpc_in_data")), ROUTE_BAD_METHOD, "methods are case-sensitive");
	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll", S("RPC_IN_DAT")), ROUTE_BAD_METHOD, "method prefix not enough");
	is_int(match(routes, 4, mail, "/rpc/rpcproxy.dll", S("RPC_IN_DATAX")), ROUTE_BAD_METHOD, "method longer not allowed");
	is_int(match(routes, 4, mail, "/owa/", get), 1, "/owa/ -> exchange");
	is_int(match(routes, 4, mail, "/OWA/auth/logon.aspx?x=1", S("POST")), 1, "/OWA/... -> exchange");
	is_int(match(routes, 4, mail, "/microsoft-server-activesync?Cmd=Ping", S("POST")), 1, "activesync -> exchange");
	is_int(match(routes, 4, mail, "/owafoo", get), 3, "/owafoo -> apache");
	is_int(match(routes, 4, mail, "/", get), 3, "/ -> apache");
	is_int(match(routes, 4, S("www.example.com"), "/owa/", get), 3, "other host -> apache");
	is_int(match(routes, 4, S(""), "/owa/", get), 3, "no host -> apache");
	is_int(match(routes, 4, S("other.example.com"), "/owa/", get), 2, "other.example.com -> other");
	is_int(match(routes, 4, S("autodiscover.example.com"), "/Autodiscover/Autodiscover.xml", S("POST")), 1,
	    "second host -> exchange");
	is_int(match(routes, 4, mail, "/owa/%2e%2e/rpc/x", S("RPC_IN_DATA")), 0, "/owa/%%2e%%2e/rpc/x routes to /rpc");
	is_int(match(routes, 4, mail, "/owa/%2e%2e/rpc/x", get), ROUTE_BAD_METHOD, "... and /rpc's methods apply");
	is_int(match(routes, 4, mail, "/owa/%2e%2e/", get), 3, "/owa/%%2e%%2e/ routes to apache");
	is_int(match(routes, 4, mail, "/owa/..%2f", get), -100, "/owa/..%%2f refused");
	is_int(match(routes, 4, mail, "/owa/..%2frpc/x", get), -100, "/owa/..%%2frpc/x refused");
	is_int(match(routes, 4, mail, "/x/../owa/", get), 1, "/x/../owa/ -> exchange");
	is_int(match(routes, 4, mail, "//owa//x", get), 1, "//owa//x -> exchange");
	is_int(match(routes, 4, mail, "/%6fwa/", get), 1, "/%%6fwa/ -> exchange");
	is_int(match(routes, 4, mail, "/%252e%252e/owa", get), 3, "double-encoded dots are a plain segment");
	is_int(match(routes, 4, mail, "*", S("OPTIONS")), 3, "OPTIONS * -> catch-all");
	is_int(match(only_ex, 1, mail, "/", get), ROUTE_NOT_FOUND, "no match -> 404");
	is_int(match(only_ex, 1, S("www.example.com"), "/owa", get), ROUTE_NOT_FOUND, "wrong host -> 404");
	is_int(match(only_ex, 1, mail, "*", S("OPTIONS")), ROUTE_NOT_FOUND, "* matches no named path");
	is_int(match(routes, 0, mail, "/", get), ROUTE_NOT_FOUND, "empty table -> 404");
}

int
main(void)
{
	test_normalize_table();
	test_normalize_cap();
	test_path_matches();
	test_host_matches();
	test_route_match();
	return done_testing();
}
