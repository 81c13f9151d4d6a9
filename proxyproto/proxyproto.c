/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxyproto.c: the PROXY protocol v1/v2 parser (pp_parse*), TLV access
 * (pp_tlv_*) and encoders (pp_encode_*). Pure: no allocation, no logging.
 *
 * Validation follows HAProxy's doc/proxy-protocol.txt (the protocol's specification).
 * Compared with HAProxy's receiver (conn_recv_proxy, reg-tests/connection/
 * proxy_protocol_tlv_validation.vtc), we reject the same TLV errors (a TLV
 * overrunning 16+len, bytes left over after the last TLV, a CRC32C TLV whose
 * length is not 4 or whose value does not match, a UNIQUE_ID over 128 bytes)
 * and are stricter in these places:
 *   - the family and transport nibbles must be 0..3 and 0..2, also for LOCAL
 *     (HAProxy ignores the family byte);
 *   - a LOCAL header's TLVs (after the address block its family implies) are
 *     validated like PROXY ones (HAProxy skips LOCAL bodies unread);
 *   - at most one CRC32C TLV;
 *   - the SSL TLV must hold at least client+verify (5 bytes) and its sub-TLVs
 *     must tile its value exactly (HAProxy stores the value unchecked);
 *   - v1: single spaces, no leading zeros, strict dotted quads, CRLF only.
 * And laxer in one: HAProxy refuses an AUTHORITY TLV over 255 bytes (its own
 * limit, not the spec's); we accept any length.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proxyproto.h"

static const uint8_t v2_sig[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};
static const char v1_sig[] = "PROXY ";

/* Address block length of a v2 address family nibble (0..3). */
static const size_t v2_addr_len[4] = {
	0, PP_V2_ADDR_LEN_INET, PP_V2_ADDR_LEN_INET6, PP_V2_ADDR_LEN_UNIX
};

#define V6_TEXT_MAX 45   /* INET6_ADDRSTRLEN - 1 */

/* Sets the reason and returns PP_INVALID. */
static ssize_t
fail(const char **why, const char *msg)
{
	*why = msg;
	return PP_INVALID;
}

/* Sets the reason and returns -1: "invalid" for the token and TLV checks below. */
static int
reject(const char **why, const char *msg)
{
	*why = msg;
	return -1;
}

/* Sets the reason and returns PP_NEED_MORE. */
static ssize_t
need_more(const char **why)
{
	*why = "incomplete header";
	return PP_NEED_MORE;
}

static int
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

static int
is_hex(uint8_t c)
{
	return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/*
 * Checks an IPv4 dotted quad token t[0..n). complete: the token is known to end
 * at n. Returns 1 valid (*out filled), 0 viable prefix, -1 invalid (*why set).
 */
static int
v1_check_v4(const uint8_t *t, size_t n, int complete, struct in_addr *out, const char **why)
{
	uint8_t oct[4];
	unsigned val = 0, digits = 0, noct = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (is_digit(t[i])) {
			if (digits == 1 && val == 0)
				return reject(why, "v1: leading zero in an IPv4 octet");
			val = val * 10 + (t[i] - '0');
			digits++;
			if (val > 255)
				return reject(why, "v1: IPv4 octet over 255");
		} else if (t[i] == '.') {
			if (digits == 0)
				return reject(why, "v1: empty IPv4 octet");
			if (noct == 3)
				return reject(why, "v1: more than four IPv4 octets");
			oct[noct++] = (uint8_t)val;
			val = digits = 0;
		} else {
			return reject(why, "v1: bad character in an IPv4 address");
		}
	}
	if (!complete)
		return 0;
	if (noct != 3 || digits == 0)
		return reject(why, "v1: IPv4 address is not a dotted quad");
	oct[3] = (uint8_t)val;
	memcpy(&out->s_addr, oct, 4);
	return 1;
}

/*
 * Checks an IPv6 token t[0..n) (RFC 4291 text, dotted-quad tail allowed).
 * Prefixes are checked for charset, length, hex groups of at most 4 digits, at
 * most one "::" and a strict dotted tail; inet_pton judges the complete text.
 * Returns 1 valid (*out filled), 0 viable prefix, -1 invalid (*why set).
 */
static int
v1_check_v6(const uint8_t *t, size_t n, int complete, struct in6_addr *out, const char **why)
{
	char text[V6_TEXT_MAX + 1];
	size_t i, group = 0, tail = 0, dcolons = 0;
	int dotted = 0;

	if (n > V6_TEXT_MAX)
		return reject(why, "v1: IPv6 address too long");
	for (i = 0; i < n; i++) {
		if (t[i] == ':') {
			if (dotted)
				return reject(why, "v1: colon after an IPv4 tail");
			if (i >= 1 && t[i - 1] == ':' && ++dcolons > 1)
				return reject(why, "v1: more than one :: in an IPv6 address");
			group = 0;
			tail = i + 1;
		} else if (t[i] == '.') {
			dotted = 1;
		} else if (is_hex(t[i])) {
			if (!dotted && ++group > 4)
				return reject(why, "v1: IPv6 group over 4 hex digits");
		} else {
			return reject(why, "v1: bad character in an IPv6 address");
		}
	}
	if (dotted) {
		struct in_addr a4;

		if (v1_check_v4(t + tail, n - tail, complete, &a4, why) < 0)
			return -1;
	}
	if (!complete)
		return 0;
	memcpy(text, t, n);
	text[n] = '\0';
	if (n == 0 || inet_pton(AF_INET6, text, out) != 1)
		return reject(why, "v1: bad IPv6 address");
	return 1;
}

/* Checks a decimal port token (0..65535, no leading zero); same returns as v1_check_v4. */
static int
v1_check_port(const uint8_t *t, size_t n, int complete, uint16_t *out, const char **why)
{
	unsigned val = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!is_digit(t[i]))
			return reject(why, "v1: bad character in a port");
		if (i == 1 && val == 0)
			return reject(why, "v1: leading zero in a port");
		val = val * 10 + (t[i] - '0');
		if (val > 65535)
			return reject(why, "v1: port over 65535");
	}
	if (!complete)
		return 0;
	if (n == 0)
		return reject(why, "v1: empty port");
	*out = (uint16_t)val;
	return 1;
}

/* Matches word against s[pos..n): 1 full match, 0 s ends inside a prefix of word, -1 mismatch. */
static int
match_word(const uint8_t *s, size_t n, size_t pos, const char *word)
{
	size_t i, wl = strlen(word);

	for (i = 0; i < wl; i++) {
		if (pos + i >= n)
			return 0;
		if (s[pos + i] != (uint8_t)word[i])
			return -1;
	}
	return 1;
}

/* Parses the rest of a "PROXY UNKNOWN" line from pos: anything, then CRLF. */
static ssize_t
v1_parse_unknown(const uint8_t *s, size_t n, size_t pos, struct pp_header *h, const char **why)
{
	for (; pos < n; pos++) {
		if (s[pos] == '\n')
			return fail(why, "v1: bare LF");
		if (s[pos] == '\r') {
			if (pos + 1 >= n)
				return need_more(why);
			if (s[pos + 1] != '\n')
				return fail(why, "v1: CR not followed by LF");
			h->family = AF_UNSPEC;
			return (ssize_t)(pos + 2);
		}
	}
	return need_more(why);
}

/* Fills h->src/h->dst from the v1 fields (addresses in a4/a6 by family). */
static void
v1_fill(struct pp_header *h, int family, const struct in_addr a4[2],
        const struct in6_addr a6[2], const uint16_t port[2])
{
	int i;

	h->family = family;
	h->socktype = SOCK_STREAM;
	for (i = 0; i < 2; i++) {
		struct sockaddr_storage *ss = i == 0 ? &h->src : &h->dst;

		if (family == AF_INET) {
			struct sockaddr_in *sin = (struct sockaddr_in *)ss;

			sin->sin_family = AF_INET;
			sin->sin_addr = a4[i];
			sin->sin_port = htons(port[i]);
		} else {
			struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

			sin6->sin6_family = AF_INET6;
			sin6->sin6_addr = a6[i];
			sin6->sin6_port = htons(port[i]);
		}
	}
}

/*
 * Parses the four fields and CRLF of a TCP4/TCP6 line from pos.
 * Each field ends at a space, CR or LF; the byte after it must be the expected
 * single space (or CRLF after the last field).
 */
static ssize_t
v1_parse_tcp(const uint8_t *s, size_t n, size_t pos, int family, struct pp_header *h,
             const char **why)
{
	struct in_addr a4[2];
	struct in6_addr a6[2];
	uint16_t port[2];
	int field, r;

	for (field = 0; field < 4; field++) {
		size_t e = pos;

		while (e < n && s[e] != ' ' && s[e] != '\r' && s[e] != '\n')
			e++;
		if (e == pos && e < n)
			return fail(why, "v1: empty or missing field");
		if (field >= 2)
			r = v1_check_port(s + pos, e - pos, e < n, &port[field - 2], why);
		else if (family == AF_INET)
			r = v1_check_v4(s + pos, e - pos, e < n, &a4[field], why);
		else
			r = v1_check_v6(s + pos, e - pos, e < n, &a6[field], why);
		if (r < 0)
			return PP_INVALID;
		if (r == 0)
			return need_more(why);
		pos = e;
		if (field < 3) {
			if (s[pos] != ' ')
				return fail(why, "v1: missing field");
			pos++;
		}
	}
	if (s[pos] != '\r')
		return fail(why, "v1: bare LF or junk after the ports");
	if (pos + 1 >= n)
		return need_more(why);
	if (s[pos + 1] != '\n')
		return fail(why, "v1: CR not followed by LF");
	v1_fill(h, family, a4, a6, port);
	return (ssize_t)(pos + 2);
}

/* Parses a v1 line; looks at no more than PP_V1_MAX_LEN bytes. */
static ssize_t
v1_parse(const uint8_t *b, size_t len, struct pp_header *h, const char **why)
{
	size_t n = len < PP_V1_MAX_LEN ? len : PP_V1_MAX_LEN;
	size_t pos = sizeof(v1_sig) - 1;
	int r4, r6, ru;
	ssize_t r;

	r4 = match_word(b, n, 0, v1_sig);
	if (r4 < 0)
		return fail(why, "no PROXY signature");
	if (r4 == 0)
		return need_more(why);
	h->version = 1;
	h->command = PP_CMD_PROXY;
	r4 = match_word(b, n, pos, "TCP4 ");
	r6 = match_word(b, n, pos, "TCP6 ");
	ru = match_word(b, n, pos, "UNKNOWN");
	if (r4 == 1)
		r = v1_parse_tcp(b, n, pos + 5, AF_INET, h, why);
	else if (r6 == 1)
		r = v1_parse_tcp(b, n, pos + 5, AF_INET6, h, why);
	else if (ru == 1)
		r = v1_parse_unknown(b, n, pos + 7, h, why);
	else if (r4 == 0 || r6 == 0 || ru == 0)
		r = need_more(why);
	else
		r = fail(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (r == PP_NEED_MORE && len >= PP_V1_MAX_LEN)
		return fail(why, "v1: no CRLF within 107 bytes");
	return r;
}

/* Reads a big-endian 16-bit value. */
static size_t
be16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

/*
 * Checks a v2 TLV block p[0..n) (the rules are in the file comment).
 * *crc_pos gets the offset in p of the CRC32C value, or SIZE_MAX if none.
 * Returns 0 if well-formed, -1 with *why set.
 */
static int
tlv_check(const uint8_t *p, size_t n, size_t *crc_pos, const char **why)
{
	struct pp_tlv_iter it = { p, n }, sub;
	const uint8_t *v, *sv;
	size_t l, sl;
	uint8_t t, st;
	int r, sr;

	*crc_pos = SIZE_MAX;
	while ((r = pp_tlv_next(&it, &t, &v, &l)) == 1) {
		switch (t) {
		case PP2_TYPE_CRC32C:
			if (l != 4)
				return reject(why, "v2: CRC32C TLV length is not 4");
			if (*crc_pos != SIZE_MAX)
				return reject(why, "v2: more than one CRC32C TLV");
			*crc_pos = (size_t)(v - p);
			break;
		case PP2_TYPE_UNIQUE_ID:
			if (l > PP2_UNIQUE_ID_MAX)
				return reject(why, "v2: UNIQUE_ID TLV over 128 bytes");
			break;
		case PP2_TYPE_SSL:
			if (l < PP2_SSL_FIXED_LEN)
				return reject(why, "v2: SSL TLV shorter than 5 bytes");
			sub.p = v + PP2_SSL_FIXED_LEN;
			sub.left = l - PP2_SSL_FIXED_LEN;
			while ((sr = pp_tlv_next(&sub, &st, &sv, &sl)) == 1)
				;
			if (sr < 0)
				return reject(why, "v2: SSL sub-TLVs do not fill the SSL TLV exactly");
			break;
		default:
			break;
		}
	}
	if (r < 0)
		return reject(why, "v2: TLVs do not end exactly at the header end");
	return 0;
}

/* Checks the CRC32C at b[pos..pos+4) of the header b[0..total), computed with it zeroed. */
static int
v2_crc_ok(const uint8_t *b, size_t total, size_t pos)
{
	static const uint8_t zero[4];
	uint32_t want, got;

	want = (uint32_t)b[pos] << 24 | (uint32_t)b[pos + 1] << 16 |
	    (uint32_t)b[pos + 2] << 8 | b[pos + 3];
	got = pp_crc32c(0, b, pos);
	got = pp_crc32c(got, zero, 4);
	got = pp_crc32c(got, b + pos + 4, total - pos - 4);
	return got == want;
}

/* The address field of an AF_INET or AF_INET6 sockaddr (by its family); *port: its port. */
static uint8_t *
inet_slots(struct sockaddr_storage *ss, uint8_t **port)
{
	struct sockaddr_in *s4 = (void *)ss;
	struct sockaddr_in6 *s6 = (void *)ss;

	if (ss->ss_family == AF_INET) {
		*port = (uint8_t *)&s4->sin_port;
		return (uint8_t *)&s4->sin_addr;
	}
	*port = (uint8_t *)&s6->sin6_port;
	return (uint8_t *)&s6->sin6_addr;
}

/* Fills h->src/h->dst from a v2 address block of family nibble fam. */
static void
v2_fill(struct pp_header *h, int fam, const uint8_t *a)
{
	if (fam == 1 || fam == 2) {
		size_t n = fam == 1 ? 4 : 16;
		uint8_t *sp, *dp;

		h->family = h->src.ss_family = h->dst.ss_family = fam == 1 ? AF_INET : AF_INET6;
		memcpy(inet_slots(&h->src, &sp), a, n);
		memcpy(inet_slots(&h->dst, &dp), a + n, n);
		memcpy(sp, a + 2 * n, 2);
		memcpy(dp, a + 2 * n + 2, 2);
	} else {
		struct sockaddr_un *s = (struct sockaddr_un *)&h->src, *d = (struct sockaddr_un *)&h->dst;
		size_t pl = sizeof(s->sun_path) < PP_V2_UNIX_PATH_LEN ?
		    sizeof(s->sun_path) : PP_V2_UNIX_PATH_LEN;

		h->family = s->sun_family = d->sun_family = AF_UNIX;
		memcpy(s->sun_path, a, pl);
		memcpy(d->sun_path, a + PP_V2_UNIX_PATH_LEN, pl);
	}
}

/* Parses a v2 header: 16 fixed bytes, then len bytes (address block, TLVs). */
static ssize_t
v2_parse(const uint8_t *b, size_t len, struct pp_header *h, const char **why)
{
	size_t m = len < sizeof(v2_sig) ? len : sizeof(v2_sig);
	size_t body, total, ablock, tlv_off, crc_pos;
	int cmd, fam, proto;

	if (memcmp(b, v2_sig, m) != 0)
		return fail(why, "no PROXY signature");
	if (len <= 12)
		return need_more(why);
	if ((b[12] >> 4) != 2)
		return fail(why, "v2: version is not 2");
	cmd = b[12] & 0x0f;
	if (cmd != PP_CMD_LOCAL && cmd != PP_CMD_PROXY)
		return fail(why, "v2: command is not LOCAL or PROXY");
	if (len <= 13)
		return need_more(why);
	fam = b[13] >> 4;
	proto = b[13] & 0x0f;
	if (fam > 3)
		return fail(why, "v2: unknown address family");
	if (proto > 2)
		return fail(why, "v2: unknown transport protocol");
	if (len < PP_V2_HDR_LEN)
		return need_more(why);
	body = be16(b + 14);
	total = PP_V2_HDR_LEN + body;
	ablock = v2_addr_len[fam];
	if (cmd == PP_CMD_PROXY && body < ablock)
		return fail(why, "v2: length shorter than the address block");
	if (len < total)
		return need_more(why);

	/* LOCAL with a short body: no TLVs, the bytes are skipped. */
	tlv_off = body >= ablock ? PP_V2_HDR_LEN + ablock : total;
	if (tlv_check(b + tlv_off, total - tlv_off, &crc_pos, why) < 0)
		return PP_INVALID;
	if (crc_pos != SIZE_MAX && !v2_crc_ok(b, total, tlv_off + crc_pos))
		return fail(why, "v2: CRC32C mismatch");

	h->version = 2;
	h->command = cmd;
	h->family = AF_UNSPEC;
	h->socktype = 0;
	if (cmd == PP_CMD_PROXY) {
		h->socktype = proto == 1 ? SOCK_STREAM : proto == 2 ? SOCK_DGRAM : 0;
		if (fam != 0 && proto != 0)
			v2_fill(h, fam, b + PP_V2_HDR_LEN);
	}
	if (total > tlv_off) {
		h->tlv = b + tlv_off;
		h->tlv_len = total - tlv_off;
	}
	return (ssize_t)total;
}

/* Parses a PROXY v1 or v2 header and says why it failed (see proxyproto.h). */
ssize_t
pp_parse_ex(const void *buf, size_t len, struct pp_header *hdr, const char **why)
{
	const uint8_t *b = buf;
	struct pp_header h;
	const char *dummy;
	ssize_t r;

	if (why == NULL)
		why = &dummy;
	if (len == 0)
		return need_more(why);
	memset(&h, 0, sizeof(h));
	if (b[0] == (uint8_t)v1_sig[0])
		r = v1_parse(b, len, &h, why);
	else if (b[0] == v2_sig[0])
		r = v2_parse(b, len, &h, why);
	else
		r = fail(why, "no PROXY signature");
	if (r > 0) {
		*why = "ok";
		if (hdr != NULL)
			*hdr = h;
	}
	return r;
}

/* Parses a PROXY v1 or v2 header (see proxyproto.h). */
ssize_t
pp_parse(const void *buf, size_t len, struct pp_header *hdr)
{
	return pp_parse_ex(buf, len, hdr, NULL);
}

/* Returns the next TLV of an iterator: 1 found, 0 at the end, -1 malformed. */
int
pp_tlv_next(struct pp_tlv_iter *it, uint8_t *type, const uint8_t **value, size_t *len)
{
	size_t l;

	if (it->left == 0)
		return 0;
	if (it->left < 3)
		return -1;
	l = be16(it->p + 1);
	if (l > it->left - 3)
		return -1;
	*type = it->p[0];
	*value = it->p + 3;
	*len = l;
	it->p += 3 + l;
	it->left -= 3 + l;
	return 1;
}

/* Finds the first TLV of a type; SSL sub-types are looked up inside SSL TLVs. */
int
pp_tlv_find(const struct pp_header *hdr, uint8_t type, const uint8_t **value, size_t *len)
{
	int sub = type >= PP2_SUBTYPE_SSL_VERSION && type <= PP2_SUBTYPE_SSL_KEY_ALG;
	struct pp_tlv_iter it, sit;
	const uint8_t *v, *sv;
	size_t l, sl;
	uint8_t t, st;

	if (hdr == NULL || hdr->tlv == NULL)
		return -1;
	it.p = hdr->tlv;
	it.left = hdr->tlv_len;
	while (pp_tlv_next(&it, &t, &v, &l) == 1) {
		if (!sub && t == type) {
			*value = v;
			*len = l;
			return 0;
		}
		if (!sub || t != PP2_TYPE_SSL || l < PP2_SSL_FIXED_LEN)
			continue;
		sit.p = v + PP2_SSL_FIXED_LEN;
		sit.left = l - PP2_SSL_FIXED_LEN;
		while (pp_tlv_next(&sit, &st, &sv, &sl) == 1) {
			if (st == type) {
				*value = sv;
				*len = sl;
				return 0;
			}
		}
	}
	return -1;
}

/* Returns 1 when an SSL TLV says the client used TLS. */
int
pp_client_used_tls(const struct pp_header *hdr)
{
	const uint8_t *v;
	size_t l;

	if (pp_tlv_find(hdr, PP2_TYPE_SSL, &v, &l) < 0 || l < 1)
		return 0;
	return (v[0] & PP2_CLIENT_SSL) != 0;
}

/*
 * The parts of an AF_INET or AF_INET6 sockaddr (the caller checked the family): returns its
 * address bytes (*len: 4 or 16) and sets *port to its port (2 bytes, network order).
 */
static const void *
inet_parts(const struct sockaddr *a, size_t *len, const void **port)
{
	const struct sockaddr_in *s4 = (const void *)a;
	const struct sockaddr_in6 *s6 = (const void *)a;

	if (a->sa_family == AF_INET) {
		*len = 4;
		*port = &s4->sin_port;
		return &s4->sin_addr;
	}
	*len = 16;
	*port = &s6->sin6_port;
	return &s6->sin6_addr;
}

/* Writes the address of an AF_INET or AF_INET6 sockaddr as text into buf[0..cap) and its
 * port into *port; returns 0, or -1 for another family. */
static int
v1_addr_text(const struct sockaddr *a, char *buf, size_t cap, unsigned *port)
{
	const void *addr, *pp;
	uint16_t be;
	size_t len;

	if (a->sa_family != AF_INET && a->sa_family != AF_INET6)
		return -1;
	addr = inet_parts(a, &len, &pp);
	memcpy(&be, pp, 2);
	*port = ntohs(be);
	return inet_ntop(a->sa_family, addr, buf, (socklen_t)cap) ? 0 : -1;
}

/* Writes a v1 TCP4/TCP6 line for an address pair of one family. */
ssize_t
pp_encode_v1(void *out, size_t cap, const struct sockaddr *src, const struct sockaddr *dst)
{
	char line[160], sa[INET6_ADDRSTRLEN], da[INET6_ADDRSTRLEN];
	unsigned sp, dp;
	const char *proto;
	int n;

	if (out == NULL || src == NULL || dst == NULL || src->sa_family != dst->sa_family)
		return -1;
	if (v1_addr_text(src, sa, sizeof(sa), &sp) == -1 || v1_addr_text(dst, da, sizeof(da), &dp) == -1)
		return -1;
	proto = src->sa_family == AF_INET ? "TCP4" : "TCP6";
	n = snprintf(line, sizeof(line), "PROXY %s %s %s %u %u\r\n", proto, sa, da, sp, dp);
	if (n < 0 || n > PP_V1_MAX_LEN || (size_t)n > cap)
		return -1;
	memcpy(out, line, (size_t)n);
	return n;
}

/* Writes one v2 UNIX address: the path, zero-padded to 108 bytes (all 108 for abstract names). */
static void
v2_put_unix(uint8_t *p, const struct sockaddr_un *su)
{
	size_t max = sizeof(su->sun_path) < PP_V2_UNIX_PATH_LEN ?
	    sizeof(su->sun_path) : PP_V2_UNIX_PATH_LEN;
	size_t n = su->sun_path[0] == '\0' ? max : strnlen(su->sun_path, max);

	memset(p, 0, PP_V2_UNIX_PATH_LEN);
	memcpy(p, su->sun_path, n);
}

/* Writes the v2 address block for a same-family pair; returns its family byte, or -1. */
static int
v2_put_addrs(uint8_t *p, const struct sockaddr *src, const struct sockaddr *dst)
{
	if (src->sa_family == AF_INET || src->sa_family == AF_INET6) {
		const void *sport, *dport, *sa, *da;
		size_t n;

		sa = inet_parts(src, &n, &sport);
		da = inet_parts(dst, &n, &dport);
		memcpy(p, sa, n);
		memcpy(p + n, da, n);
		memcpy(p + 2 * n, sport, 2);
		memcpy(p + 2 * n + 2, dport, 2);
		return src->sa_family == AF_INET ? 0x11 : 0x21;
	}
	v2_put_unix(p, (const struct sockaddr_un *)(const void *)src);
	v2_put_unix(p + PP_V2_UNIX_PATH_LEN, (const struct sockaddr_un *)(const void *)dst);
	return 0x31;
}

/* Writes a v2 header, optionally with a CRC32C TLV appended (see proxyproto.h). */
ssize_t
pp_encode_v2_ex(void *out, size_t cap, int command, const struct sockaddr *src,
                const struct sockaddr *dst, const uint8_t *tlv, size_t tlv_len, int flags)
{
	uint8_t *o = out;
	size_t alen = 0, extra = (flags & PP_ENC_CRC32C) ? PP2_CRC32C_TLV_LEN : 0;
	size_t body, total, crc_pos;
	const char *why;
	uint32_t crc;

	if (out == NULL || (tlv == NULL && tlv_len > 0) || tlv_len > 65535)
		return -1;
	if (command == PP_CMD_PROXY) {
		if (src == NULL || dst == NULL || src->sa_family != dst->sa_family)
			return -1;
		if (src->sa_family == AF_INET)
			alen = PP_V2_ADDR_LEN_INET;
		else if (src->sa_family == AF_INET6)
			alen = PP_V2_ADDR_LEN_INET6;
		else if (src->sa_family == AF_UNIX)
			alen = PP_V2_ADDR_LEN_UNIX;
		else
			return -1;
	} else if (command != PP_CMD_LOCAL) {
		return -1;
	}
	/* Never emit what pp_parse would refuse; a CRC32C TLV only via PP_ENC_CRC32C. */
	if (tlv_check(tlv, tlv_len, &crc_pos, &why) < 0 || crc_pos != SIZE_MAX)
		return -1;
	body = alen + tlv_len + extra;
	total = PP_V2_HDR_LEN + body;
	if (body > 65535 || total > cap)
		return -1;
	if (tlv_len > 0)
		memmove(o + PP_V2_HDR_LEN + alen, tlv, tlv_len);
	memcpy(o, v2_sig, sizeof(v2_sig));
	o[12] = (uint8_t)(0x20 | command);
	o[13] = command == PP_CMD_PROXY ? (uint8_t)v2_put_addrs(o + PP_V2_HDR_LEN, src, dst) : 0x00;
	o[14] = (uint8_t)(body >> 8);
	o[15] = (uint8_t)body;
	if (extra) {
		uint8_t *c = o + total - PP2_CRC32C_TLV_LEN;

		c[0] = PP2_TYPE_CRC32C;
		c[1] = 0;
		c[2] = 4;
		memset(c + 3, 0, 4);
		crc = pp_crc32c(0, o, total);
		c[3] = (uint8_t)(crc >> 24);
		c[4] = (uint8_t)(crc >> 16);
		c[5] = (uint8_t)(crc >> 8);
		c[6] = (uint8_t)crc;
	}
	return (ssize_t)total;
}

/* Writes a v2 header (see proxyproto.h). */
ssize_t
pp_encode_v2(void *out, size_t cap, int command, const struct sockaddr *src,
             const struct sockaddr *dst, const uint8_t *tlv, size_t tlv_len)
{
	return pp_encode_v2_ex(out, cap, command, src, dst, tlv, tlv_len, 0);
}

/* Names a pp_parse result. */
const char *
pp_strerror(ssize_t code)
{
	if (code >= 0)
		return "ok";
	if (code == PP_NEED_MORE)
		return "incomplete PROXY header";
	if (code == PP_INVALID)
		return "invalid PROXY header";
	return "unknown PROXY parser result";
}
