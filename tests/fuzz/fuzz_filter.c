/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_filter.c: libFuzzer target for relay/filter.c, the exploit filters and rules.
 *
 * The input is parsed as a request head (relay/http1.c); a head that parses goes through the
 * filters with the built-in Exchange rules on and two administrator rules. Invariants
 * (abort() on failure): no read outside the head (ASan; the head sits in an exact-size
 * allocation), a verdict is NULL or one of the known rule names, and the verdict is the same
 * on a second call (the filters keep no state).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "filter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static const char *const post[] = { "POST", "RPC_IN_DATA" };
static const struct filter_rule rules[] = {
	{ .name = "ps", .path = "/autodiscover", .query = "powershell" },
	{ .name = "ecp-post", .methods = post, .nmethods = 2, .path = "/ecp" },
};

static bool
known(const char *v)
{
	static const char *const names[] = { "proxyshell", "proxynotshell", "proxylogon", "undecodable-target",
	    "ps", "ecp-post" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(v, names[i]) == 0)
			return true;
	return false;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_header h[100];
	struct http1_limits lim = { 65536, 100 };
	struct http1_request req;
	struct filter_config f = { true, rules, 2 };

	char *buf = malloc(size ? size : 1);
	CHECK(buf != NULL);
	if (size)
		memcpy(buf, data, size);
	memset(&req, 0, sizeof(req));
	req.headers = h;
	if (http1_parse_request(buf, size, &lim, &req) > 0) {
		const char *v = filter_request(&req, &f), *w = filter_request(&req, &f);
		CHECK(v == w);
		CHECK(v == NULL || known(v));
		f.exchange = false;
		v = filter_request(&req, &f);
		CHECK(v == NULL || strcmp(v, "ps") == 0 || strcmp(v, "ecp-post") == 0 ||
		    strcmp(v, "undecodable-target") == 0);
	}
	free(buf);
	return 0;
}
