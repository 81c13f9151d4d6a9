/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cred.c: who a request logs in as, read from its Authorization field: the user of Basic
 * credentials (never the password), and the user and domain of an NTLM AUTHENTICATE message,
 * bare (`NTLM`) or inside SPNEGO (`Negotiate`). Pure: no I/O, no allocation, no state.
 *
 * NTLM (MS-NLMP §2.2.1.3): "NTLMSSP\0", message type 3, then security buffers (length u16,
 * maximum length u16, offset u32, little-endian) for the LM and NT responses, the domain, the
 * user and the workstation; NegotiateFlags at offset 60. Names are UTF-16LE when
 * NTLMSSP_NEGOTIATE_UNICODE is set, else OEM bytes. Every offset and length is checked against
 * the message before it is read.
 */
#include "autoconf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cred.h"

#define NTLM_UNICODE 0x00000001u

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Decodes base64 (padding optional, no white space) into out; its length, or -1. */
static ssize_t
b64_decode(const char *in, size_t n, unsigned char *out, size_t cap)
{
	size_t k = 0;
	unsigned acc = 0;
	int bits = 0;

	while (n > 0 && in[n - 1] == '=')
		n--;
	for (size_t i = 0; i < n; i++) {
		const char *d = memchr(b64, in[i], 64);
		if (!d || in[i] == '\0')
			return -1;
		acc = (acc << 6) | (unsigned)(d - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (k == cap)
				return -1;
			out[k++] = (unsigned char)((acc >> bits) & 0xff);
		}
	}
	return (ssize_t)k;
}

static uint32_t
le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Appends code point cp as UTF-8 to out (room for 4 bytes is checked by the caller). */
static size_t
put_utf8(char *out, uint32_t cp)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/*
 * Copies a name from an NTLM message into out as UTF-8 (from UTF-16LE when unicode, else
 * bytes as they are); control characters and unpaired surrogates become '?'. Its length, or
 * -1 when it does not fit.
 */
static ssize_t
name_copy(const unsigned char *p, size_t n, bool unicode, char *out, size_t cap)
{
	size_t k = 0;

	for (size_t i = 0; i < n; i += unicode ? 2 : 1) {
		uint32_t cp = p[i];
		if (unicode) {
			if (i + 1 >= n)
				return -1;
			cp |= (uint32_t)p[i + 1] << 8;
			if (cp >= 0xd800 && cp < 0xdc00 && i + 3 < n) {
				uint32_t lo = p[i + 2] | (uint32_t)p[i + 3] << 8;
				if (lo >= 0xdc00 && lo < 0xe000) {
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
					i += 2;
				}
			}
			if (cp >= 0xd800 && cp < 0xe000)
				cp = '?';
		}
		if (cp < 0x20 || cp == 0x7f || (!unicode && cp >= 0x80))
			cp = '?';
		if (k + 4 >= cap)
			return -1;
		k += put_utf8(out + k, cp);
	}
	out[k] = '\0';
	return (ssize_t)k;
}

/* Reads security buffer field `at` of msg: its bytes, or NULL when they lie outside msg. */
static const unsigned char *
ntlm_field(const unsigned char *msg, size_t n, size_t at, size_t *len)
{
	if (at + 8 > n)
		return NULL;
	*len = (size_t)msg[at] | (size_t)msg[at + 1] << 8;
	size_t off = le32(msg + at + 4);
	if (off > n || *len > n - off)
		return NULL;
	return msg + off;
}

/* Reads the domain and user of an NTLM message (any type; type 3 names a user). */
static enum cred_kind
ntlm_read(const unsigned char *msg, size_t n, struct cred *c)
{
	size_t dlen, ulen;

	if (n < 12 || memcmp(msg, "NTLMSSP", 8) != 0)
		return CRED_UNREADABLE;
	if (le32(msg + 8) != 3)
		return CRED_HANDSHAKE;
	if (n < 64)
		return CRED_UNREADABLE;
	bool unicode = (le32(msg + 60) & NTLM_UNICODE) != 0;
	const unsigned char *d = ntlm_field(msg, n, 28, &dlen), *u = ntlm_field(msg, n, 36, &ulen);
	if (!d || !u || name_copy(d, dlen, unicode, c->domain, sizeof(c->domain)) < 0 ||
	    name_copy(u, ulen, unicode, c->user, sizeof(c->user)) < 0)
		return CRED_UNREADABLE;
	return c->user[0] ? CRED_NTLM : CRED_ANONYMOUS;
}

/* Finds "NTLMSSP\0" in a decoded token (bare, or wrapped in SPNEGO's DER). */
static const unsigned char *
find_ntlm(const unsigned char *p, size_t n)
{
	for (size_t i = 0; i + 8 <= n; i++)
		if (p[i] == 'N' && memcmp(p + i, "NTLMSSP", 8) == 0)
			return p + i;
	return NULL;
}

/* Splits Basic's "user:password" (decoded) and keeps the user. */
static enum cred_kind
basic_read(const unsigned char *p, size_t n, struct cred *c)
{
	const unsigned char *colon = memchr(p, ':', n);

	if (!colon || colon == p)
		return CRED_UNREADABLE;
	if (name_copy(p, (size_t)(colon - p), false, c->user, sizeof(c->user)) < 0)
		return CRED_UNREADABLE;
	return CRED_BASIC;
}

/* Lower-cases ASCII and drops a "DOMAIN\" prefix and an "@suffix": the account's short name. */
static void
make_key(struct cred *c)
{
	const char *u = c->user, *bs = strrchr(u, '\\');
	size_t k = 0;

	if (bs)
		u = bs + 1;
	for (; *u && *u != '@' && k + 1 < sizeof(c->key); u++, k++)
		c->key[k] = (char)(*u >= 'A' && *u <= 'Z' ? *u + 32 : *u);
	c->key[k] = '\0';
}

enum cred_kind
cred_read(const struct http1_request *req, struct cred *c)
{
	static __thread unsigned char tok[CRED_TOKEN_MAX];
	const struct http1_header *a = http1_find_header(req->headers, req->nheaders, "Authorization");
	enum cred_kind k;

	memset(c, 0, sizeof(*c));
	if (!a)
		return c->kind = CRED_NONE;
	const char *v = a->value.p, *sp = memchr(v, ' ', a->value.len);
	size_t vlen = a->value.len, slen = sp ? (size_t)(sp - v) : vlen;
	snprintf(c->scheme, sizeof(c->scheme), "%.*s", (int)(slen < sizeof(c->scheme) ? slen : 0), v);
	while (sp && sp < v + vlen && *sp == ' ')
		sp++;
	ssize_t n = sp ? b64_decode(sp, (size_t)(v + vlen - sp), tok, sizeof(tok)) : -1;
	if (n < 0)
		return c->kind = CRED_UNREADABLE;
	if (strcasecmp(c->scheme, "Basic") == 0) {
		k = basic_read(tok, (size_t)n, c);
	} else if (strcasecmp(c->scheme, "NTLM") == 0 || strcasecmp(c->scheme, "Negotiate") == 0) {
		const unsigned char *m = find_ntlm(tok, (size_t)n);
		k = m ? ntlm_read(m, (size_t)n - (size_t)(m - tok), c) : CRED_OTHER;
	} else {
		k = CRED_OTHER;
	}
	if (k == CRED_BASIC || k == CRED_NTLM)
		make_key(c);
	if (!c->key[0] && (k == CRED_BASIC || k == CRED_NTLM))
		k = CRED_UNREADABLE;
	return c->kind = k;
}

#define X(n) #n,
static const char *const kind_names[] = { CRED_KINDS(X) };
#undef X

const char *
cred_kind_str(enum cred_kind k)
{
	return (size_t)k < sizeof(kind_names) / sizeof(kind_names[0]) ? kind_names[k] : "?";
}
