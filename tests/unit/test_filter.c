/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_filter.c: TAP tests for filter.c: the ProxyShell, ProxyNotShell and ProxyLogon shapes
 * are refused in every spelling (case, percent-escapes, nested escapes), ordinary Exchange
 * traffic passes, and the administrator's rules match by method, path prefix and query.
 */
#include <stdio.h>
#include <string.h>

#include "filter.h"
#include "reqparse.h"
#include "tap.h"

struct fcase {
	const char *head;
	const char *want;	/* rule name, or NULL: passes */
};

static const struct fcase exchange_cases[] = {
	/* ProxyShell (CVE-2021-34473) */
	{ "GET /autodiscover/autodiscover.json?@x.com/powershell/?X-Rps-CAT=AA HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /AutoDiscover/AutoDiscover.json?@x.com/PowerShell/?X-Rps-CAT=AA HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /autodiscover/autodiscover.json?@x.com/%70owershell/ HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /autodiscover/autodiscover.json?@x.com/%2570owershell/ HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /autodiscover/autodiscover.json?@x.com/%252570owershell/ HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /%61utodiscover/x?a=%50OWERSHELL HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "POST /powershell/?x=autodiscover HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n", "proxyshell" },
	/* ProxyNotShell (CVE-2022-41040) */
	{ "GET /autodiscover/autodiscover.json?@x.com/owa/&Email=autodiscover/autodiscover.json%3f@x.com&Protocol=XYZ&FooProtocol=%50owershell HTTP/1.1\r\nHost: m\r\n\r\n", "proxyshell" },
	{ "GET /autodiscover/autodiscover.json?@x.com/owa/&Email=autodiscover/autodiscover.json%3f@x.com&Protocol=XYZ HTTP/1.1\r\nHost: m\r\n\r\n", "proxynotshell" },
	{ "GET /autodiscover/autodiscover.json?a=b&Email=AutoDiscover/x HTTP/1.1\r\nHost: m\r\n\r\n", "proxynotshell" },
	{ "GET /autodiscover/autodiscover.json?@evil.com/mapi/nspi HTTP/1.1\r\nHost: m\r\n\r\n", "proxynotshell" },
	{ "GET /autodiscover/autodiscover.json?%40evil.com%2Fews%2Fexchange.asmx HTTP/1.1\r\nHost: m\r\n\r\n", "proxynotshell" },
	/* ProxyLogon (CVE-2021-26855) */
	{ "GET /owa/auth/x.js HTTP/1.1\r\nHost: m\r\nCookie: X-BEResource=localhost/owa/auth/x.js~1942062522\r\n\r\n", "proxylogon" },
	{ "GET /ecp/y.js HTTP/1.1\r\nHost: m\r\nCookie: a=b; x-beresource=Admin@ex:444/ecp/DDI.svc?a=~1942062522;\r\n\r\n", "proxylogon" },
	{ "GET /ecp/y.js HTTP/1.1\r\nHost: m\r\nCookie: a=b\r\nCookie: X-BERESOURCE=h/p%7e1\r\n\r\n", "proxylogon" },
	{ "GET /owa/ HTTP/1.1\r\nHost: m\r\nCookie: X-AnonResource-Backend=localhost/ecp/default.flt?~3\r\n\r\n", "proxylogon" },
	{ "GET /owa/ HTTP/1.1\r\nHost: m\r\nCookie: x=1; x-anonresource-backend=h\r\n\r\n", "proxylogon" },
	/* ordinary traffic passes */
	{ "GET /autodiscover/autodiscover.json?Email=u%40example.com&Protocol=EWS&RedirectCount=1 HTTP/1.1\r\nHost: m\r\n\r\n", NULL },
	{ "GET /autodiscover/autodiscover.json/v1.0/u@example.com?Protocol=ActiveSync HTTP/1.1\r\nHost: m\r\n\r\n", NULL },
	{ "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n", NULL },
	{ "GET /owa/ HTTP/1.1\r\nHost: m\r\nCookie: X-BackEndCookie=S-1-5-21=rJqNiZqNgZqHnJeek; X-OWA-CANARY=abc; ClientId=1\r\n\r\n", NULL },
	{ "GET /owa/ HTTP/1.1\r\nHost: m\r\nCookie: X-BEResource=mbx01.example.com/owa/\r\n\r\n", NULL },
	{ "RPC_IN_DATA /rpc/rpcproxy.dll?mbx.example.com:6001 HTTP/1.1\r\nHost: m\r\nContent-Length: 1073741824\r\n\r\n", NULL },
	{ "POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=x&DeviceType=iPhone HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n", NULL },
	{ "GET /powershell/ HTTP/1.1\r\nHost: m\r\n\r\n", NULL },
	{ "GET /ecp/?x=%25 HTTP/1.1\r\nHost: m\r\n\r\n", NULL },
};

int
main(void)
{
	struct filter_config on = { true, NULL, 0 }, off = { false, NULL, 0 };
	char name[80];

	for (size_t i = 0; i < sizeof(exchange_cases) / sizeof(exchange_cases[0]); i++) {
		const struct fcase *fc = &exchange_cases[i];
		const struct http1_request *req = parse_req(fc->head);
		snprintf(name, sizeof(name), "case %zu: %.*s", i, (int)strcspn(fc->head, "\r"), fc->head);
		if (!ok(req != NULL, "%s parses", name))
			continue;
		const char *got = filter_request(req, &on);
		if (fc->want)
			is_str(got, fc->want, "%s: refused by %s", name, fc->want);
		else
			ok(got == NULL, "%s: passes (got %s)", name, got ? got : "none");
		ok(filter_request(parse_req(fc->head), &off) == NULL, "%s: passes with exchange_filters off", name);
	}

	/* Nested escapes beyond 4 rounds: refused, never guessed. */
	ok(filter_request(parse_req("GET /a%2525252525 HTTP/1.1\r\nHost: m\r\n\r\n"), &on) != NULL,
	    "an escape nested 5 deep is refused");
	ok(filter_request(parse_req("GET /a%25252525 HTTP/1.1\r\nHost: m\r\n\r\n"), &on) == NULL,
	    "an escape nested 4 deep decodes and passes");

	/* The administrator's rules. */
	static const char *const post[] = { "POST" };
	struct filter_rule rules[] = {
		{ .name = "rule1", .path = "/autodiscover", .query = "powershell" },
		{ .name = "no-ecp-post", .methods = post, .nmethods = 1, .path = "/ecp" },
		{ .name = "any-q", .query = "evil=1" },
	};
	struct filter_config adm = { false, rules, 3 };
	is_str(filter_request(parse_req("GET /Autodiscover/x?a=PowerShell HTTP/1.1\r\nHost: m\r\n\r\n"), &adm),
	    "rule1", "rule: path prefix and query substring, any case");
	is_str(filter_request(parse_req("GET /autodiscover/x?a=%50owershell HTTP/1.1\r\nHost: m\r\n\r\n"), &adm),
	    "rule1", "rule: the query is decoded first");
	ok(filter_request(parse_req("GET /autodiscoverx/x?a=powershell HTTP/1.1\r\nHost: m\r\n\r\n"), &adm) == NULL,
	    "rule: the path prefix ends at a segment boundary");
	ok(filter_request(parse_req("GET /autodiscover/x HTTP/1.1\r\nHost: m\r\n\r\n"), &adm) == NULL,
	    "rule: a query substring needs a query");
	is_str(filter_request(parse_req("post /ECP/DDI HTTP/1.1\r\nHost: m\r\nContent-Length: 0\r\n\r\n"), &adm),
	    "no-ecp-post", "rule: methods compare case-insensitively");
	ok(filter_request(parse_req("GET /ecp/DDI HTTP/1.1\r\nHost: m\r\n\r\n"), &adm) == NULL,
	    "rule: another method passes");
	is_str(filter_request(parse_req("GET /x?EVIL=1 HTTP/1.1\r\nHost: m\r\n\r\n"), &adm), "any-q",
	    "rule: no path and no methods: the query alone");
	return done_testing();
}
