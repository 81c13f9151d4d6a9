/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_cred.c: libFuzzer target for relay/cred.c, the reader of Authorization fields.
 *
 * The first input byte picks the scheme (Basic, NTLM, Negotiate, another); the rest is the
 * token's bytes, which the harness base64-encodes into an `Authorization` field of a request
 * head, so the fuzzer works on the decoded NTLM and SPNEGO structures themselves. Invariants
 * (abort() on failure): the reader never reads outside the message (ASan), every name is
 * NUL-terminated within its array, a read user has a non-empty key of lower-case ASCII
 * without '\' or '@', and the password of a Basic token never shows in the result.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cred.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

static const char *const schemes[4] = { "Basic", "NTLM", "Negotiate", "Bearer" };

static size_t
b64(const uint8_t *p, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t k = 0;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0u) |
		    (i + 2 < n ? (unsigned)p[i + 2] : 0u);
		out[k++] = a[v >> 18 & 63];
		out[k++] = a[v >> 12 & 63];
		out[k++] = i + 1 < n ? a[v >> 6 & 63] : '=';
		out[k++] = i + 2 < n ? a[v & 63] : '=';
	}
	return k;
}

static void
check_name(const char *s, size_t cap)
{
	CHECK(memchr(s, '\0', cap) != NULL);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http1_header h[1];
	struct http1_request req;
	struct cred c;

	if (size < 1 || size > 40000)
		return 0;
	const char *scheme = schemes[data[0] & 3];
	size_t sl = strlen(scheme), cap = sl + 1 + (size / 3 + 1) * 4;
	char *v = malloc(cap);
	CHECK(v != NULL);
	memcpy(v, scheme, sl);
	v[sl] = ' ';
	size_t n = sl + 1 + b64(data + 1, size - 1, v + sl + 1);
	memset(&req, 0, sizeof(req));
	h[0].name = (struct http1_slice){ "Authorization", 13 };
	h[0].value = (struct http1_slice){ v, n };
	req.headers = h;
	req.nheaders = 1;
	enum cred_kind k = cred_read(&req, &c);
	CHECK(k == c.kind);
	check_name(c.scheme, sizeof(c.scheme));
	check_name(c.domain, sizeof(c.domain));
	check_name(c.user, sizeof(c.user));
	check_name(c.key, sizeof(c.key));
	if (k == CRED_BASIC || k == CRED_NTLM) {
		CHECK(c.user[0] != '\0' && c.key[0] != '\0');
		for (const char *p = c.key; *p; p++)
			CHECK(*p != '\\' && *p != '@' && !(*p >= 'A' && *p <= 'Z'));
	}
	if (k == CRED_BASIC) {
		const uint8_t *colon = memchr(data + 1, ':', size - 1);
		CHECK(colon != NULL);
		CHECK(strlen(c.user) <= (size_t)(colon - data - 1) * 3 + 1);
	}
	free(v);
	return 0;
}
