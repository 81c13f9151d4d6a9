/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_cred.c: TAP tests for cred.c: the user of Basic credentials and of NTLM AUTHENTICATE
 * messages (UTF-16LE and OEM, bare and inside SPNEGO), the account key, and malformed or
 * truncated tokens (every truncation of a valid message, every offset pointing outside it).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "cred.h"
#include "reqparse.h"
#include "tap.h"

static char *
b64(const unsigned char *p, size_t n, char *out)
{
	static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	char *o = out;

	for (size_t i = 0; i < n; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
		*o++ = a[v >> 18 & 63];
		*o++ = a[v >> 12 & 63];
		*o++ = i + 1 < n ? a[v >> 6 & 63] : '=';
		*o++ = i + 2 < n ? a[v & 63] : '=';
	}
	*o = '\0';
	return out;
}

static void
put16(unsigned char *p, unsigned v) { p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8); }
static void
put32(unsigned char *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i)); }

/* Builds an NTLM AUTHENTICATE message naming domain\user; its length. */
static size_t
ntlm3(unsigned char *m, const char *domain, const char *user, int unicode)
{
	size_t off = 72;
	const char *names[2] = { domain, user };

	memset(m, 0, 72);
	memcpy(m, "NTLMSSP", 8);
	put32(m + 8, 3);
	put32(m + 60, unicode ? 0xE2888215u : 0xE2888214u);
	for (int f = 0; f < 2; f++) {
		size_t len = 0;
		for (const char *c = names[f]; *c; c++) {
			m[off + len++] = (unsigned char)*c;
			if (unicode)
				m[off + len++] = 0;
		}
		put16(m + 28 + 8 * f, (unsigned)len);
		put16(m + 30 + 8 * f, (unsigned)len);
		put32(m + 32 + 8 * f, (uint32_t)off);
		off += len;
	}
	memcpy(m + off, "NTRESPONSE......", 16);	/* responses: not read */
	return off + 16;
}

static enum cred_kind
read_auth(const char *scheme, const unsigned char *tok, size_t n, struct cred *c)
{
	static char head[90000], enc[70000];

	snprintf(head, sizeof(head), "GET /ews/ HTTP/1.1\r\nHost: m\r\nAuthorization: %s %s\r\n\r\n", scheme,
	    b64(tok, n, enc));
	const struct http1_request *req = parse_req(head);
	return req ? cred_read(req, c) : CRED_UNREADABLE;
}

int
main(void)
{
	unsigned char m[4096], w[4200];
	struct cred c;
	size_t n;

	is_int(read_auth("Basic", (const unsigned char *)"alice:secret", 12, &c), CRED_BASIC, "Basic: read");
	is_str(c.user, "alice", "Basic: the user");
	is_str(c.key, "alice", "Basic: the key");
	ok(strstr(c.user, "secret") == NULL && strstr(c.key, "secret") == NULL, "Basic: never the password");
	read_auth("basic", (const unsigned char *)"EXAMPLE\\Bob:x:y", 15, &c);
	is_str(c.key, "bob", "Basic: DOMAIN\\user gives the short name, lower-cased");
	read_auth("Basic", (const unsigned char *)"Carol@Example.COM:pw", 20, &c);
	is_str(c.key, "carol", "Basic: a UPN gives the short name");
	is_int(read_auth("Basic", (const unsigned char *)"nocolon", 7, &c), CRED_UNREADABLE, "Basic without ':'");
	is_int(read_auth("Basic", (const unsigned char *)":pw", 3, &c), CRED_UNREADABLE, "Basic with an empty user");

	n = ntlm3(m, "EXAMPLE", "Alice", 1);
	is_int(read_auth("NTLM", m, n, &c), CRED_NTLM, "NTLM type 3, UTF-16LE");
	is_str(c.user, "Alice", "NTLM: user");
	is_str(c.domain, "EXAMPLE", "NTLM: domain");
	is_str(c.key, "alice", "NTLM: key");
	n = ntlm3(m, "EX", "dave", 0);
	is_int(read_auth("NTLM", m, n, &c), CRED_NTLM, "NTLM type 3, OEM");
	is_str(c.user, "dave", "NTLM OEM: user");
	n = ntlm3(m, "EXAMPLE", "Erin", 1);
	/* SPNEGO NegTokenResp: a1 len 30 len a2 len 04 len <NTLM> (short DER lengths suffice here). */
	memcpy(w, "\xa1\x82\x00\x00\x30\x82\x00\x00\xa2\x82\x00\x00\x04\x82\x00\x00", 16);
	memcpy(w + 16, m, n);
	is_int(read_auth("Negotiate", w, n + 16, &c), CRED_NTLM, "Negotiate wrapping NTLM (SPNEGO)");
	is_str(c.key, "erin", "Negotiate/NTLM: key");
	is_int(read_auth("Negotiate", (const unsigned char *)"\x60\x82\x01\x00\x06\x06+\x06\x01\x05\x05\x02", 12, &c),
	    CRED_OTHER, "Negotiate with Kerberos: no user in the clear");
	unsigned char t1[16] = "NTLMSSP";
	put32(t1 + 8, 1);
	is_int(read_auth("NTLM", t1, 16, &c), CRED_HANDSHAKE, "NTLM type 1: a handshake leg");
	n = ntlm3(m, "EX", "", 1);
	is_int(read_auth("NTLM", m, n, &c), CRED_ANONYMOUS, "NTLM with an empty user: anonymous");
	is_int(read_auth("Bearer", (const unsigned char *)"abc", 3, &c), CRED_OTHER, "another scheme");

	/* Every truncation of a valid message: never read outside it. */
	n = ntlm3(m, "EXAMPLE", "frank", 1);
	int bad = 0;
	for (size_t k = 0; k < n; k++) {
		enum cred_kind kd = read_auth("NTLM", m, k, &c);
		if (kd == CRED_NTLM && k < 72 + 14 + 10)
			bad++;
	}
	is_int(bad, 0, "no truncation of the names reads as a user");
	/* Offsets and lengths pointing outside the message. */
	n = ntlm3(m, "EXAMPLE", "grace", 1);
	put32(m + 40, 0xfffffff0u);
	is_int(read_auth("NTLM", m, n, &c), CRED_UNREADABLE, "user offset outside the message");
	n = ntlm3(m, "EXAMPLE", "grace", 1);
	put16(m + 36, 0xffff);
	is_int(read_auth("NTLM", m, n, &c), CRED_UNREADABLE, "user length outside the message");
	n = ntlm3(m, "EXAMPLE", "grace", 1);
	put16(m + 36, 3);
	is_int(read_auth("NTLM", m, n, &c), CRED_UNREADABLE, "odd UTF-16 length");
	/* Control characters and non-ASCII. */
	n = ntlm3(m, "EX", "h\x01x", 0);
	read_auth("NTLM", m, n, &c);
	is_str(c.user, "h?x", "control characters are replaced");
	/* bad base64 */
	const struct http1_request *req = parse_req("GET / HTTP/1.1\r\nHost: m\r\nAuthorization: NTLM !!!!\r\n\r\n");
	is_int(cred_read(req, &c), CRED_UNREADABLE, "bad base64");
	req = parse_req("GET / HTTP/1.1\r\nHost: m\r\n\r\n");
	is_int(cred_read(req, &c), CRED_NONE, "no Authorization");
	is_str(cred_kind_str(CRED_NTLM), "CRED_NTLM", "cred_kind_str");
	return done_testing();
}
