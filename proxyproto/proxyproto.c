/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxyproto.c: the PROXY protocol v1 parser and encoder (pp_encode_v1) and the
 * entry points common to both versions (pp_parse*, pp_strerror); the v2 binary
 * header, its TLVs and pp_encode_v2* are in proxyproto_v2.c. Pure: no allocation,
 * no logging.
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

#include "proxyproto.h"
#include "proxyproto_priv.h"

static const char v1_sig[] = "PROXY ";

#define V6_TEXT_MAX 45   /* INET6_ADDRSTRLEN - 1 */

/* Sets the reason and returns PP_INVALID. */
ssize_t
pp_fail(const char **why, const char *msg)
{
	*why = msg;
	return PP_INVALID;
}

/* Sets the reason and returns -1: "invalid" for the token and TLV checks. */
int
pp_reject(const char **why, const char *msg)
{
	*why = msg;
	return -1;
}

/* Sets the reason and returns PP_NEED_MORE. */
ssize_t
pp_need_more(const char **why)
{
	*why = "incomplete header";
	return PP_NEED_MORE;
}

/* Returns 1 for an ASCII decimal digit. */
static int
is_digit(uint8_t c)
{
	return c >= '0' && c <= '9';
}

/* Returns 1 for an ASCII hex digit, either case. */
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
				return pp_reject(why, "v1: leading zero in an IPv4 octet");
			val = val * 10 + (t[i] - '0');
			digits++;
			if (val > 255)
				return pp_reject(why, "v1: IPv4 octet over 255");
		} else if (t[i] == '.') {
			if (digits == 0)
				return pp_reject(why, "v1: empty IPv4 octet");
			if (noct == 3)
				return pp_reject(why, "v1: more than four IPv4 octets");
			oct[noct++] = (uint8_t)val;
			val = digits = 0;
		} else {
			return pp_reject(why, "v1: bad character in an IPv4 address");
		}
	}
	if (!complete)
		return 0;
	if (noct != 3 || digits == 0)
		return pp_reject(why, "v1: IPv4 address is not a dotted quad");
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
		return pp_reject(why, "v1: IPv6 address too long");
	for (i = 0; i < n; i++) {
		if (t[i] == ':') {
			if (dotted)
				return pp_reject(why, "v1: colon after an IPv4 tail");
			if (i >= 1 && t[i - 1] == ':' && ++dcolons > 1)
				return pp_reject(why, "v1: more than one :: in an IPv6 address");
			group = 0;
			tail = i + 1;
		} else if (t[i] == '.') {
			dotted = 1;
		} else if (is_hex(t[i])) {
			if (!dotted && ++group > 4)
				return pp_reject(why, "v1: IPv6 group over 4 hex digits");
		} else {
			return pp_reject(why, "v1: bad character in an IPv6 address");
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
		return pp_reject(why, "v1: bad IPv6 address");
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
			return pp_reject(why, "v1: bad character in a port");
		if (i == 1 && val == 0)
			return pp_reject(why, "v1: leading zero in a port");
		val = val * 10 + (t[i] - '0');
		if (val > 65535)
			return pp_reject(why, "v1: port over 65535");
	}
	if (!complete)
		return 0;
	if (n == 0)
		return pp_reject(why, "v1: empty port");
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
			return pp_fail(why, "v1: bare LF");
		if (s[pos] == '\r') {
			if (pos + 1 >= n)
				return pp_need_more(why);
			if (s[pos + 1] != '\n')
				return pp_fail(why, "v1: CR not followed by LF");
			h->family = AF_UNSPEC;
			return (ssize_t)(pos + 2);
		}
	}
	return pp_need_more(why);
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
			return pp_fail(why, "v1: empty or missing field");
		if (field >= 2)
			r = v1_check_port(s + pos, e - pos, e < n, &port[field - 2], why);
		else if (family == AF_INET)
			r = v1_check_v4(s + pos, e - pos, e < n, &a4[field], why);
		else
			r = v1_check_v6(s + pos, e - pos, e < n, &a6[field], why);
		if (r < 0)
			return PP_INVALID;
		if (r == 0)
			return pp_need_more(why);
		pos = e;
		if (field < 3) {
			if (s[pos] != ' ')
				return pp_fail(why, "v1: missing field");
			pos++;
		}
	}
	if (s[pos] != '\r')
		return pp_fail(why, "v1: bare LF or junk after the ports");
	if (pos + 1 >= n)
		return pp_need_more(why);
	if (s[pos + 1] != '\n')
		return pp_fail(why, "v1: CR not followed by LF");
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
		return pp_fail(why, "no PROXY signature");
	if (r4 == 0)
		return pp_need_more(why);
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
		r = pp_need_more(why);
	else
		r = pp_fail(why, "v1: protocol is not TCP4, TCP6 or UNKNOWN");
	if (r == PP_NEED_MORE && len >= PP_V1_MAX_LEN)
		return pp_fail(why, "v1: no CRLF within 107 bytes");
	return r;
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
		return pp_need_more(why);
	memset(&h, 0, sizeof(h));
	if (b[0] == (uint8_t)v1_sig[0])
		r = v1_parse(b, len, &h, why);
	else if (b[0] == pp_v2_sig[0])
		r = pp_v2_parse(b, len, &h, why);
	else
		r = pp_fail(why, "no PROXY signature");
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

/*
 * The parts of an AF_INET or AF_INET6 sockaddr (the caller checked the family): returns its
 * address bytes (*len: 4 or 16) and sets *port to its port (2 bytes, network order).
 */
const void *
pp_inet_parts(const struct sockaddr *a, size_t *len, const void **port)
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
	addr = pp_inet_parts(a, &len, &pp);
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
