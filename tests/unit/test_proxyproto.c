/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_proxyproto.c: TAP unit tests of libproxyproto: every v1/v2 rule with an
 * accepting and a rejecting case, HAProxy's TLV validation reg-test cases, every
 * truncation of every vector, inputs placed right before an unreadable page,
 * encoder round trips, and CRC32C known answers (table and SSE4.2 paths).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "proxyproto.h"
#include "tap.h"

static const uint8_t SIG[12] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};
static const char TRAILER[] = "GET / HTTP/1.1\r\n";

/* The guard area: inputs are copied to end right before a PROT_NONE page. */
static uint8_t *guard_base;
static size_t guard_room;

/* Maps the guard area (room for the largest v2 header plus a trailer). */
static void
guard_init(void)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);

	guard_room = (PP_V2_MAX_LEN + 1024 + pg - 1) / pg * pg;
	guard_base = mmap(NULL, guard_room + pg, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (guard_base == MAP_FAILED || mprotect(guard_base + guard_room, pg, PROT_NONE) == -1) {
		perror("guard_init");
		exit(1);
	}
}

/* Copies in[0..n) to end at the unreadable page and returns where it starts. */
static const uint8_t *
guard_place(const void *in, size_t n)
{
	uint8_t *p = guard_base + guard_room - n;

	if (n > guard_room)
		abort();
	memcpy(p, in, n);
	return p;
}

/* Parses in[0..n) placed before the guard page; hdr->tlv is rebased onto in. */
static ssize_t
gparse(const void *in, size_t n, struct pp_header *hdr, const char **why)
{
	const uint8_t *p = guard_place(in, n);
	ssize_t r = pp_parse_ex(p, n, hdr, why);

	if (r > 0 && hdr && hdr->tlv)
		hdr->tlv = (const uint8_t *)in + (hdr->tlv - p);
	return r;
}

/* Compares two parse results field by field (tlv as offsets from their inputs). */
static int
same_header(const struct pp_header *a, const uint8_t *ina, const struct pp_header *b,
            const uint8_t *inb)
{
	if (a->version != b->version || a->command != b->command || a->family != b->family ||
	    a->socktype != b->socktype || a->tlv_len != b->tlv_len)
		return 0;
	if (memcmp(&a->src, &b->src, sizeof(a->src)) || memcmp(&a->dst, &b->dst, sizeof(a->dst)))
		return 0;
	if ((a->tlv == NULL) != (b->tlv == NULL))
		return 0;
	return a->tlv == NULL || a->tlv - ina == b->tlv - inb;
}

/*
 * Checks a valid vector: one-shot parse gives want; every proper prefix of the
 * header gives PP_NEED_MORE and every longer prefix gives want; with a trailer
 * appended it gives want and the same fields. Large vectors sample prefixes.
 * Returns the one-shot header (tlv pointing into in) in *out.
 */
static void
check_valid(const char *name, const void *in, size_t n, size_t want, struct pp_header *out)
{
	struct pp_header h, h2;
	const char *why = NULL;
	uint8_t *tb;
	size_t k, bad = 0, tested = 0;
	ssize_t r;

	memset(&h, 0, sizeof(h));
	r = gparse(in, n, &h, &why);
	if (!ok(r == (ssize_t)want, "%s: parses to %zu bytes", name, want))
		diag("  got %zd (%s)", r, why ? why : "?");
	for (k = 0; k < n; k++) {
		if (n > 2048 && k > 64 && k + 64 < n && k % 997 != 0)
			continue;
		r = gparse(in, k, NULL, NULL);
		tested++;
		if (r != (k < want ? PP_NEED_MORE : (ssize_t)want)) {
			if (bad++ == 0)
				diag("  prefix of %zu bytes gave %zd", k, r);
		}
	}
	ok(bad == 0, "%s: %zu truncations need more (or give the header once complete)", name, tested);
	tb = malloc(n + sizeof(TRAILER));
	memcpy(tb, in, n);
	memcpy(tb + n, TRAILER, sizeof(TRAILER) - 1);
	memset(&h2, 0, sizeof(h2));
	r = gparse(tb, n + sizeof(TRAILER) - 1, &h2, NULL);
	is_int(r, want, "%s: with a trailer still %zu bytes", name, want);
	ok(r > 0 && same_header(&h, in, &h2, tb), "%s: same fields with a trailer", name);
	free(tb);
	if (out)
		*out = h;
}

/*
 * Checks an invalid vector: PP_INVALID with a reason containing because; every
 * prefix gives PP_NEED_MORE or PP_INVALID, and once PP_INVALID never changes.
 */
static void
check_invalid(const char *name, const void *in, size_t n, const char *because)
{
	struct pp_header h;
	const char *why = NULL;
	size_t k, bad = 0;
	int seen_invalid = 0;
	ssize_t r;

	memset(&h, 0x5a, sizeof(h));
	r = gparse(in, n, &h, &why);
	is_int(r, PP_INVALID, "%s: rejected", name);
	if (!ok(why && strstr(why, because), "%s: because \"%s\"", name, because))
		diag("  reason was \"%s\"", why ? why : "(null)");
	for (k = 0; k < n; k++) {
		r = gparse(in, k, NULL, NULL);
		if (r == PP_INVALID)
			seen_invalid = 1;
		else if (r != PP_NEED_MORE || seen_invalid)
			bad++;
	}
	ok(bad == 0, "%s: prefixes need more until rejected, never accepted", name);
}

/* Checks the result of one (possibly partial) input, with no other checks. */
static void
check_result(const char *name, const void *in, size_t n, ssize_t want)
{
	is_int(gparse(in, n, NULL, NULL), want, "%s", name);
}

/* Builds a v2 header: signature, ver_cmd, fam, len = body_len, body. Returns its length. */
static size_t
v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const void *body, size_t body_len)
{
	memcpy(out, SIG, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(body_len >> 8);
	out[15] = (uint8_t)body_len;
	if (body_len)
		memcpy(out + 16, body, body_len);
	return 16 + body_len;
}

/* Appends a TLV at p; returns the bytes written. */
static size_t
tlv(uint8_t *p, uint8_t type, const void *val, size_t len)
{
	p[0] = type;
	p[1] = (uint8_t)(len >> 8);
	p[2] = (uint8_t)len;
	if (len)
		memcpy(p + 3, val, len);
	return 3 + len;
}

/* Fills a v2 header's CRC32C value at pos (header is zeroed there first). */
static void
set_crc(uint8_t *h, size_t total, size_t pos)
{
	uint32_t c;

	memset(h + pos, 0, 4);
	c = pp_crc32c_sw(0, h, total);
	h[pos] = (uint8_t)(c >> 24);
	h[pos + 1] = (uint8_t)(c >> 16);
	h[pos + 2] = (uint8_t)(c >> 8);
	h[pos + 3] = (uint8_t)c;
}

static const uint8_t A4[12] = { 127, 0, 0, 1, 127, 0, 0, 1, 0x00, 0x2A, 0x05, 0x39 };

/* Checks an IPv4 sockaddr against text and port. */
static int
is_v4(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
	const struct sockaddr_in *s = (const void *)ss;
	struct in_addr a;

	inet_pton(AF_INET, addr, &a);
	return s->sin_family == AF_INET && s->sin_addr.s_addr == a.s_addr && ntohs(s->sin_port) == port;
}

/* Checks an IPv6 sockaddr against text and port. */
static int
is_v6(const struct sockaddr_storage *ss, const char *addr, unsigned port)
{
	const struct sockaddr_in6 *s = (const void *)ss;
	struct in6_addr a;

	inet_pton(AF_INET6, addr, &a);
	return s->sin6_family == AF_INET6 && memcmp(&s->sin6_addr, &a, 16) == 0 &&
	    ntohs(s->sin6_port) == port;
}

/* Checks a found TLV's value against a string. */
static int
tlv_is(const struct pp_header *h, uint8_t type, const char *want)
{
	const uint8_t *v;
	size_t l;

	return pp_tlv_find(h, type, &v, &l) == 0 && l == strlen(want) && memcmp(v, want, l) == 0;
}

#define S(lit) (lit), (sizeof(lit) - 1)
/* A v1 line that must parse whole. */
#define check_line(name, lit, out) check_valid((name), (lit), sizeof(lit) - 1, sizeof(lit) - 1, (out))

/* v1 lines that must be accepted, with their fields. */
static void
test_v1_valid(void)
{
	struct pp_header h;
	char line[200];
	size_t n;

	check_line("v1 TCP4", "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n", &h);
	ok(h.version == 1 && h.command == PP_CMD_PROXY && h.family == AF_INET &&
	    h.socktype == SOCK_STREAM, "v1 TCP4: version, command, family");
	ok(is_v4(&h.src, "192.168.0.1", 56324), "v1 TCP4: source");
	ok(is_v4(&h.dst, "192.168.0.11", 443), "v1 TCP4: destination");
	ok(h.tlv == NULL && h.tlv_len == 0, "v1 TCP4: no TLVs");

	check_line("v1 TCP4 zeros and maxima", "PROXY TCP4 0.0.0.0 255.255.255.255 0 65535\r\n", &h);
	ok(is_v4(&h.src, "0.0.0.0", 0) && is_v4(&h.dst, "255.255.255.255", 65535),
	    "v1 TCP4: 0 and 65535 accepted");

	n = strlen("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n");
	is_int(n, 104, "v1 longest TCP6 line is 104 bytes");
	check_valid("v1 TCP6 longest", S("PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"), 104, &h);
	ok(h.family == AF_INET6 && is_v6(&h.src, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
	    "v1 TCP6 longest: fields");

	check_line("v1 TCP6 v4-mapped (HAProxy 2.6 dual stack)",
	    "PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.1 40000 8080\r\n", &h);
	ok(h.family == AF_INET6 && is_v6(&h.src, "::ffff:127.0.0.1", 40000) &&
	    is_v6(&h.dst, "::ffff:127.0.0.1", 8080), "v1 TCP6 v4-mapped: fields");

	check_line("v1 TCP6 compressed", "PROXY TCP6 2001:db8::1 ::1 0 443\r\n", &h);
	ok(is_v6(&h.src, "2001:db8::1", 0) && is_v6(&h.dst, "::1", 443), "v1 TCP6 compressed: fields");
	check_line("v1 TCP6 full form with leading zeros in groups (RFC 4291)",
	    "PROXY TCP6 2001:0db8:0000:0000:0000:0000:0000:0001 1:2:3:4:5:6:7:8 1 2\r\n", &h);
	ok(is_v6(&h.src, "2001:db8::1", 1) && is_v6(&h.dst, "1:2:3:4:5:6:7:8", 2),
	    "v1 TCP6 full form: fields");
	check_line("v1 TCP6 :: and compat tail", "PROXY TCP6 :: ::1.2.3.4 1 2\r\n", &h);
	ok(is_v6(&h.src, "::", 1) && is_v6(&h.dst, "::1.2.3.4", 2), "v1 TCP6 :: fields");
	check_line("v1 TCP6 upper-case hex", "PROXY TCP6 FE80::A 2001:DB8::B 1 2\r\n", &h);
	ok(is_v6(&h.src, "fe80::a", 1), "v1 TCP6 upper-case: fields");

	check_line("v1 UNKNOWN short", "PROXY UNKNOWN\r\n", &h);
	ok(h.version == 1 && h.family == AF_UNSPEC, "v1 UNKNOWN: family AF_UNSPEC");
	check_line("v1 UNKNOWN long form", "PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", &h);
	ok(h.family == AF_UNSPEC, "v1 UNKNOWN long: family AF_UNSPEC");
	check_line("v1 UNKNOWN with junk", "PROXY UNKNOWN?? junk  01 \t\r\n", NULL);

	/* The worst case of the spec: exactly 107 bytes. */
	n = (size_t)snprintf(line, sizeof(line), "PROXY UNKNOWN %s %s 65535 65535\r\n",
	    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	is_int(n, 107, "v1 worst case is 107 bytes");
	check_valid("v1 UNKNOWN of 107 bytes", line, n, 107, NULL);
}

/* v1 lines that must be refused, each for its own reason. */
static void
test_v1_invalid(void)
{
	char line[300];

	check_invalid("v1 leading zero in octet", S("PROXY TCP4 01.2.3.4 1.2.3.4 1 2\r\n"), "leading zero in an IPv4");
	check_invalid("v1 leading zero in dst octet", S("PROXY TCP4 1.2.3.4 1.2.3.00 1 2\r\n"), "leading zero in an IPv4");
	check_invalid("v1 leading zero in port", S("PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n"), "leading zero in a port");
	check_invalid("v1 port 00", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 00\r\n"), "leading zero in a port");
	check_invalid("v1 port over 65535", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n"), "port over 65535");
	check_invalid("v1 port sign", S("PROXY TCP4 1.2.3.4 1.2.3.4 +1 2\r\n"), "bad character in a port");
	check_invalid("v1 octet over 255", S("PROXY TCP4 256.2.3.4 1.2.3.4 1 2\r\n"), "octet over 255");
	check_invalid("v1 three octets", S("PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n"), "not a dotted quad");
	check_invalid("v1 trailing dot", S("PROXY TCP4 1.2.3. 1.2.3.4 1 2\r\n"), "not a dotted quad");
	check_invalid("v1 five octets", S("PROXY TCP4 1.2.3.4.5 1.2.3.4 1 2\r\n"), "more than four");
	check_invalid("v1 empty octet", S("PROXY TCP4 1..2.3 1.2.3.4 1 2\r\n"), "empty IPv4 octet");
	check_invalid("v1 hex IPv4", S("PROXY TCP4 0x7f.0.0.1 1.2.3.4 1 2\r\n"), "bad character in an IPv4");
	check_invalid("v1 TCP4 with IPv6", S("PROXY TCP4 ::1 ::1 1 2\r\n"), "bad character in an IPv4");
	check_invalid("v1 TCP6 with IPv4", S("PROXY TCP6 1.2.3.4 1.2.3.4 1 2\r\n"), "bad IPv6");
	check_invalid("v1 TCP6 dotted tail leading zero", S("PROXY TCP6 ::ffff:127.0.0.01 ::1 1 2\r\n"), "leading zero");
	check_invalid("v1 TCP6 two ::", S("PROXY TCP6 1::2::3 ::1 1 2\r\n"), "more than one ::");
	check_invalid("v1 TCP6 :::", S("PROXY TCP6 ::: ::1 1 2\r\n"), "more than one ::");
	check_invalid("v1 TCP6 5-digit group", S("PROXY TCP6 12345::1 ::1 1 2\r\n"), "over 4 hex");
	check_invalid("v1 TCP6 zone id", S("PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n"), "bad character in an IPv6");
	check_invalid("v1 TCP6 nine groups", S("PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n"), "bad IPv6");
	check_invalid("v1 TCP6 colon after tail", S("PROXY TCP6 ::1.2.3.4:1 ::1 1 2\r\n"), "colon after");
	check_invalid("v1 TCP6 tail octet over 255", S("PROXY TCP6 ::ffff:1.2.3.256 ::1 1 2\r\n"), "octet over 255");
	check_invalid("v1 double space before src", S("PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n"), "empty or missing field");
	check_invalid("v1 double space between addresses", S("PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n"), "empty or missing field");
	check_invalid("v1 double space after PROXY", S("PROXY  TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), "protocol is not");
	check_invalid("v1 tab separator", S("PROXY TCP4 1.2.3.4\t1.2.3.4 1 2\r\n"), "bad character");
	check_invalid("v1 missing port", S("PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n"), "missing field");
	check_invalid("v1 trailing space", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2 \r\n"), "junk after the ports");
	check_invalid("v1 bare LF", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"), "bare LF");
	check_invalid("v1 CR without LF", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX"), "CR not followed by LF");
	check_invalid("v1 CR CR LF", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r\r\n"), "CR not followed by LF");
	check_invalid("v1 protocol TCP5", S("PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n"), "protocol is not");
	check_invalid("v1 protocol lower case", S("PROXY tcp4 1.2.3.4 1.2.3.4 1 2\r\n"), "protocol is not");
	check_invalid("v1 no protocol", S("PROXY \r\n"), "protocol is not");
	check_invalid("v1 UNKNOWN bare LF", S("PROXY UNKNOWN\n"), "bare LF");
	check_invalid("v1 UNKNOWN CR alone", S("PROXY UNKNOWN\rX\r\n"), "CR not followed by LF");
	check_invalid("v1 PROXY without space", S("PROXY\r\n"), "no PROXY signature");
	check_invalid("v1 lower-case proxy", S("proxy TCP4 1.2.3.4 1.2.3.4 1 2\r\n"), "no PROXY signature");
	check_invalid("HTTP request", S("GET / HTTP/1.1\r\n"), "no PROXY signature");
	check_invalid("TLS ClientHello", "\x16\x03\x01\x02\x00\x01", 6, "no PROXY signature");

	memset(line, 'x', sizeof(line));
	memcpy(line, "PROXY UNKNOWN ", 14);
	memcpy(line + 106, "\r\n", 2);
	check_invalid("v1 UNKNOWN of 108 bytes", line, 108, "no CRLF within 107");
	check_invalid("v1 300 bytes without CRLF", line, 107, "no CRLF within 107");
	check_result("v1 106 bytes without CRLF need more", line, 106, PP_NEED_MORE);
	check_result("v1 108-byte buffer: refused", line, sizeof(line), PP_INVALID);
	line[105] = '\r';
	line[106] = '\n';
	check_valid("v1 UNKNOWN ending at byte 107", line, sizeof(line), 107, NULL);
}

/* Early decisions on partial input: refuse as soon as possible, never a valid prefix. */
static void
test_early(void)
{
	char buf[20];
	size_t i;

	check_result("empty input needs more", "", 0, PP_NEED_MORE);
	check_result("\"P\" needs more", S("P"), PP_NEED_MORE);
	check_result("\"\\r\" needs more", S("\r"), PP_NEED_MORE);
	check_result("\"X\" refused at once", S("X"), PP_INVALID);
	check_result("\"PROXY TCP4 01.\" refused early", S("PROXY TCP4 01."), PP_INVALID);
	check_result("\"PROXY TCP4 1.2.3.4  \" refused early", S("PROXY TCP4 1.2.3.4  "), PP_INVALID);
	check_result("\"PROXY  \" refused early", S("PROXY  "), PP_INVALID);
	check_result("\"PROXY TCP4 1.2.3.4 1.2.3.4 65536\" refused early", S("PROXY TCP4 1.2.3.4 1.2.3.4 65536"), PP_INVALID);
	check_result("\"PROXY TCP6 1::2::\" refused early", S("PROXY TCP6 1::2::"), PP_INVALID);
	check_result("\"PROXY TCP\" needs more", S("PROXY TCP"), PP_NEED_MORE);
	check_result("\"PROXY UNK\" needs more", S("PROXY UNK"), PP_NEED_MORE);
	check_result("\"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\\r\" needs more", S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\r"), PP_NEED_MORE);
	check_result("\"PROXY TCP6 ::ffff:1.2\" needs more", S("PROXY TCP6 ::ffff:1.2"), PP_NEED_MORE);
	/* Each signature byte is checked as soon as it arrives. */
	for (i = 0; i < 6; i++) {
		memcpy(buf, "PROXY ", 6);
		buf[i] ^= 0x20;
		if (i == 5)
			buf[i] = '_';
		check_result("v1 signature byte mismatch refused at once", buf, i + 1, PP_INVALID);
	}
	for (i = 0; i < 12; i++) {
		memcpy(buf, SIG, 12);
		buf[i] ^= 0x01;
		if (i == 0)
			buf[i] = 0x0D ^ 0x40;
		check_result("v2 signature byte mismatch refused at once", buf, i + 1, PP_INVALID);
	}
	memcpy(buf, SIG, 12);
	buf[12] = 0x11;
	check_result("v2 version 1 refused at byte 13", buf, 13, PP_INVALID);
	buf[12] = 0x21;
	buf[13] = 0x41;
	check_result("v2 family 4 refused at byte 14", buf, 14, PP_INVALID);
	buf[13] = 0x11;
	buf[14] = 0;
	buf[15] = 11;
	check_result("v2 TCP4 len 11 refused at byte 16", buf, 16, PP_INVALID);
	buf[15] = 12;
	check_result("v2 TCP4 len 12 needs the body", buf, 16, PP_NEED_MORE);
}

/* v2 headers that must be accepted, with their fields. */
static void
test_v2_valid(void)
{
	uint8_t body[70000], h[70016], sub[300], uid[128];
	struct pp_header p;
	size_t n, b;
	const uint8_t *v;
	size_t l;

	n = v2(h, 0x21, 0x11, A4, 12);
	check_valid("v2 TCP4", h, n, 28, &p);
	ok(p.version == 2 && p.command == PP_CMD_PROXY && p.family == AF_INET &&
	    p.socktype == SOCK_STREAM, "v2 TCP4: version, command, family, socktype");
	ok(is_v4(&p.src, "127.0.0.1", 42) && is_v4(&p.dst, "127.0.0.1", 1337), "v2 TCP4: addresses");
	ok(p.tlv == NULL && p.tlv_len == 0, "v2 TCP4: no TLVs");

	/* HAProxy reg-test c1: a correct header with an AUTHORITY TLV. */
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_AUTHORITY, "12345", 5);
	n = v2(h, 0x21, 0x11, body, b);
	check_valid("haproxy c1: AUTHORITY TLV", h, n, 36, &p);
	ok(tlv_is(&p, PP2_TYPE_AUTHORITY, "12345"), "haproxy c1: AUTHORITY is 12345");
	ok(p.tlv == h + 28 && p.tlv_len == 8, "haproxy c1: TLV block after the addresses");
	/* HAProxy reg-test c2: a TLV after the end of the header is not part of it. */
	n += tlv(h + n, PP2_TYPE_AUTHORITY, "54321", 5);
	check_valid("haproxy c2: TLV after the header ignored", h, n, 36, &p);
	ok(tlv_is(&p, PP2_TYPE_AUTHORITY, "12345"), "haproxy c2: AUTHORITY still 12345");

	n = v2(h, 0x21, 0x12, A4, 12);
	check_valid("v2 UDP4", h, n, 28, &p);
	ok(p.family == AF_INET && p.socktype == SOCK_DGRAM, "v2 UDP4: socktype DGRAM");

	memset(body, 0, 36);
	body[15] = 1;               /* ::1 */
	body[16] = 0x20; body[17] = 0x01; body[18] = 0x0d; body[19] = 0xb8; body[31] = 2;
	body[32] = 0x01; body[33] = 0xbb; body[34] = 0x00; body[35] = 0x50;
	b = 36;
	b += tlv(body + b, PP2_TYPE_ALPN, "h2", 2);
	b += tlv(body + b, PP2_TYPE_NOOP, NULL, 0);
	memset(uid, 'u', sizeof(uid));
	b += tlv(body + b, PP2_TYPE_UNIQUE_ID, uid, 128);
	b += tlv(body + b, 0xE1, "custom", 6);
	n = v2(h, 0x21, 0x21, body, b);
	check_valid("v2 TCP6 with ALPN, NOOP, UNIQUE_ID of 128, custom TLV", h, n, 16 + b, &p);
	ok(p.family == AF_INET6 && is_v6(&p.src, "::1", 443) && is_v6(&p.dst, "2001:db8::2", 80),
	    "v2 TCP6: addresses");
	ok(tlv_is(&p, PP2_TYPE_ALPN, "h2") && tlv_is(&p, 0xE1, "custom"), "v2 TCP6: ALPN and custom TLV");
	ok(pp_tlv_find(&p, PP2_TYPE_UNIQUE_ID, &v, &l) == 0 && l == 128 && v[127] == 'u',
	    "v2 TCP6: UNIQUE_ID of 128 bytes");
	ok(pp_tlv_find(&p, PP2_TYPE_NOOP, &v, &l) == 0 && l == 0, "v2 TCP6: empty NOOP found");
	ok(pp_tlv_find(&p, PP2_TYPE_NETNS, &v, &l) == -1, "v2 TCP6: absent NETNS not found");
	ok(pp_client_used_tls(&p) == 0, "v2 TCP6: no SSL TLV means no TLS");

	memset(body, 0, 216);
	strcpy((char *)body, "/run/src.sock");
	strcpy((char *)body + 108, "/run/dst.sock");
	n = v2(h, 0x21, 0x31, body, 216);
	check_valid("v2 UNIX stream", h, n, 232, &p);
	ok(p.family == AF_UNIX && p.socktype == SOCK_STREAM &&
	    strcmp(((struct sockaddr_un *)&p.src)->sun_path, "/run/src.sock") == 0 &&
	    strcmp(((struct sockaddr_un *)&p.dst)->sun_path, "/run/dst.sock") == 0, "v2 UNIX: paths");
	n = v2(h, 0x21, 0x32, body, 216);
	check_valid("v2 UNIX dgram", h, n, 232, &p);
	ok(p.family == AF_UNIX && p.socktype == SOCK_DGRAM, "v2 UNIX dgram: socktype");

	n = v2(h, 0x21, 0x00, NULL, 0);
	check_valid("v2 PROXY UNSPEC", h, n, 16, &p);
	ok(p.command == PP_CMD_PROXY && p.family == AF_UNSPEC && p.tlv == NULL, "v2 PROXY UNSPEC: use real peer");
	b = tlv(body, PP2_TYPE_AUTHORITY, "example.com", 11);
	n = v2(h, 0x21, 0x00, body, b);
	check_valid("v2 PROXY UNSPEC with TLV", h, n, 16 + b, &p);
	ok(p.tlv == h + 16 && tlv_is(&p, PP2_TYPE_AUTHORITY, "example.com"), "v2 PROXY UNSPEC: TLV right after 16");
	n = v2(h, 0x21, 0x10, A4, 12);
	check_valid("v2 PROXY INET with UNSPEC transport", h, n, 28, &p);
	ok(p.family == AF_UNSPEC && p.socktype == 0, "v2 INET/UNSPEC transport: address ignored");

	n = v2(h, 0x20, 0x00, NULL, 0);
	check_valid("v2 LOCAL (HAProxy health check)", h, n, 16, &p);
	ok(p.command == PP_CMD_LOCAL && p.family == AF_UNSPEC && p.tlv == NULL, "v2 LOCAL: AF_UNSPEC, no TLVs");
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_UNIQUE_ID, "id-1", 4);
	n = v2(h, 0x20, 0x11, body, b);
	check_valid("v2 LOCAL INET with address and TLV", h, n, 16 + b, &p);
	ok(p.command == PP_CMD_LOCAL && p.family == AF_UNSPEC, "v2 LOCAL INET: still AF_UNSPEC");
	ok(p.tlv == h + 28 && tlv_is(&p, PP2_TYPE_UNIQUE_ID, "id-1"), "v2 LOCAL INET: TLVs after the address block");
	n = v2(h, 0x20, 0x11, "\x01\x02\x03\x04\x05", 5);
	check_valid("v2 LOCAL INET with short body", h, n, 21, &p);
	ok(p.command == PP_CMD_LOCAL && p.tlv == NULL, "v2 LOCAL short body: skipped, no TLVs");
	b = tlv(body, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	n = v2(h, 0x20, 0x00, body, b);
	set_crc(h, n, 19);
	check_valid("v2 LOCAL with CRC32C", h, n, 23, &p);
	ok(p.command == PP_CMD_LOCAL && pp_tlv_find(&p, PP2_TYPE_CRC32C, &v, &l) == 0 && l == 4,
	    "v2 LOCAL with CRC32C: found");

	/* CRC32C: one vector computed by an independent implementation. */
	{
		static const uint8_t crcv[] = {
			0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
			0x21, 0x11, 0x00, 0x13, 0x7f, 0x00, 0x00, 0x01, 0x7f, 0x00, 0x00, 0x01,
			0x00, 0x2a, 0x05, 0x39, 0x03, 0x00, 0x04, 0xd3, 0xa5, 0x5d, 0x3b
		};
		check_valid("v2 CRC32C known header", crcv, sizeof(crcv), sizeof(crcv), &p);
	}
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_AUTHORITY, "a.example", 9);
	b += tlv(body + b, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	b += tlv(body + b, PP2_TYPE_NOOP, "pad", 3);
	n = v2(h, 0x21, 0x11, body, b);
	set_crc(h, n, 16 + 12 + 12 + 3);
	check_valid("v2 CRC32C between other TLVs", h, n, 16 + b, NULL);

	b = tlv(body, PP2_TYPE_UNIQUE_ID, NULL, 0);
	n = v2(h, 0x21, 0x00, body, b);
	check_valid("v2 empty UNIQUE_ID", h, n, 19, &p);
	ok(pp_tlv_find(&p, PP2_TYPE_UNIQUE_ID, &v, &l) == 0 && l == 0, "v2 empty UNIQUE_ID found");

	/* SSL TLV with sub-TLVs. */
	memcpy(sub, "\x07\0\0\0\0", 5);
	l = 5 + tlv(sub + 5, PP2_SUBTYPE_SSL_VERSION, "TLSv1.3", 7);
	l += tlv(sub + l, PP2_SUBTYPE_SSL_CN, "example.com", 11);
	l += tlv(sub + l, PP2_SUBTYPE_SSL_CIPHER, "TLS_AES_128_GCM_SHA256", 22);
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_SSL, sub, l);
	b += tlv(body + b, PP2_TYPE_ALPN, "http/1.1", 8);
	n = v2(h, 0x21, 0x11, body, b);
	check_valid("v2 SSL TLV with sub-TLVs", h, n, 16 + b, &p);
	ok(pp_client_used_tls(&p) == 1, "v2 SSL: client used TLS");
	ok(tlv_is(&p, PP2_SUBTYPE_SSL_VERSION, "TLSv1.3"), "v2 SSL: VERSION sub-TLV found inside SSL");
	ok(tlv_is(&p, PP2_SUBTYPE_SSL_CN, "example.com"), "v2 SSL: CN sub-TLV found");
	ok(tlv_is(&p, PP2_SUBTYPE_SSL_CIPHER, "TLS_AES_128_GCM_SHA256"), "v2 SSL: CIPHER sub-TLV found");
	ok(pp_tlv_find(&p, PP2_SUBTYPE_SSL_SIG_ALG, &v, &l) == -1, "v2 SSL: absent SIG_ALG not found");
	ok(tlv_is(&p, PP2_TYPE_ALPN, "http/1.1"), "v2 SSL: top-level TLV after SSL found");
	ok(pp_tlv_find(&p, PP2_TYPE_SSL, &v, &l) == 0 && v[0] == 0x07, "v2 SSL: the SSL TLV itself");

	/* HAProxy's send-proxy-v2-ssl on a plain connection: 5 zero bytes. */
	b = tlv(body, PP2_TYPE_SSL, "\0\0\0\0\0", 5);
	n = v2(h, 0x21, 0x00, body, b);
	check_valid("v2 SSL TLV of exactly 5 bytes", h, n, 16 + b, &p);
	ok(pp_client_used_tls(&p) == 0, "v2 SSL client=0: no TLS");
	ok(pp_tlv_find(&p, PP2_SUBTYPE_SSL_CN, &v, &l) == -1, "v2 SSL client=0: no CN");

	/* The largest header: len 65535. */
	memcpy(body, A4, 12);
	memset(body + 12, 'n', 65535 - 12);
	body[12] = PP2_TYPE_NOOP;
	body[13] = (65535 - 15) >> 8;
	body[14] = (uint8_t)(65535 - 15);
	n = v2(h, 0x21, 0x11, body, 65535);
	check_valid("v2 header of 65551 bytes", h, n, 65551, &p);
	ok(pp_tlv_find(&p, PP2_TYPE_NOOP, &v, &l) == 0 && l == 65520, "v2 largest: NOOP of 65520 bytes");
}

/* v2 headers that must be refused, HAProxy's reg-test cases among them. */
static void
test_v2_invalid(void)
{
	uint8_t body[1024], h[1100], sub[64];
	size_t n, b, l;

	n = v2(h, 0x11, 0x11, A4, 12);
	check_invalid("v2 version 1", h, n, "version is not 2");
	n = v2(h, 0x31, 0x11, A4, 12);
	check_invalid("v2 version 3", h, n, "version is not 2");
	n = v2(h, 0x22, 0x11, A4, 12);
	check_invalid("v2 command 2", h, n, "command is not LOCAL or PROXY");
	n = v2(h, 0x2F, 0x11, A4, 12);
	check_invalid("v2 command 15", h, n, "command is not LOCAL or PROXY");
	n = v2(h, 0x21, 0x41, A4, 12);
	check_invalid("v2 family 4", h, n, "unknown address family");
	n = v2(h, 0x21, 0xF1, A4, 12);
	check_invalid("v2 family 15", h, n, "unknown address family");
	n = v2(h, 0x21, 0x13, A4, 12);
	check_invalid("v2 transport 3", h, n, "unknown transport protocol");
	n = v2(h, 0x20, 0x50, NULL, 0);
	check_invalid("v2 LOCAL family 5 (stricter than HAProxy)", h, n, "unknown address family");
	n = v2(h, 0x21, 0x11, A4, 11);
	check_invalid("v2 TCP4 len 11", h, n, "shorter than the address block");
	memset(body, 0, sizeof(body));
	n = v2(h, 0x21, 0x21, body, 35);
	check_invalid("v2 TCP6 len 35", h, n, "shorter than the address block");
	n = v2(h, 0x21, 0x31, body, 215);
	check_invalid("v2 UNIX len 215", h, n, "shorter than the address block");

	/* HAProxy reg-test c3: the TLV length exceeds the header length. */
	memcpy(body, A4, 12);
	tlv(body + 12, PP2_TYPE_AUTHORITY, "1234512345", 10);
	n = v2(h, 0x21, 0x11, body, 20);
	check_invalid("haproxy c3: TLV overruns the header", h, n, "do not end exactly");
	/* HAProxy reg-test c4: the TLVs end before the header end. */
	b = 12 + tlv(body + 12, PP2_TYPE_AUTHORITY, "1234", 4);
	n = v2(h, 0x21, 0x11, body, b + 1);
	check_invalid("haproxy c4: TLVs end before the header", h, n, "do not end exactly");
	n = v2(h, 0x21, 0x11, body, b + 2);
	check_invalid("v2 two bytes after the last TLV", h, n, "do not end exactly");
	n = v2(h, 0x21, 0x11, body, 14);
	check_invalid("v2 a lone 2-byte TLV header", h, n, "do not end exactly");
	n = v2(h, 0x21, 0x00, "\x04\x00", 2);
	check_invalid("v2 UNSPEC with 2 stray bytes", h, n, "do not end exactly");
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_NOOP, "x", 1);
	n = v2(h, 0x20, 0x11, body, b + 1);
	check_invalid("v2 LOCAL with a stray byte after TLVs (stricter than HAProxy)", h, n, "do not end exactly");

	/* CRC32C. */
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_CRC32C, "\0\0\0", 3);
	n = v2(h, 0x21, 0x11, body, b);
	check_invalid("v2 CRC32C of length 3", h, n, "CRC32C TLV length is not 4");
	b = 12 + tlv(body + 12, PP2_TYPE_CRC32C, "\0\0\0\0\0", 5);
	n = v2(h, 0x21, 0x11, body, b);
	check_invalid("v2 CRC32C of length 5", h, n, "CRC32C TLV length is not 4");
	b = 12 + tlv(body + 12, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	n = v2(h, 0x21, 0x11, body, b);
	set_crc(h, n, 31);
	h[16] ^= 0x01;
	check_invalid("v2 CRC32C mismatch (address changed)", h, n, "CRC32C mismatch");
	h[16] ^= 0x01;
	h[34] ^= 0x80;
	check_invalid("v2 CRC32C mismatch (checksum changed)", h, n, "CRC32C mismatch");
	h[34] ^= 0x80;
	check_valid("v2 CRC32C restored", h, n, n, NULL);
	b = 12 + tlv(body + 12, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	b += tlv(body + b, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	n = v2(h, 0x21, 0x11, body, b);
	set_crc(h, n, 31);
	check_invalid("v2 two CRC32C TLVs", h, n, "more than one CRC32C");
	b = tlv(body, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	n = v2(h, 0x20, 0x00, body, b);
	check_invalid("v2 LOCAL with a zero CRC32C", h, n, "CRC32C mismatch");

	/* UNIQUE_ID and SSL. */
	memset(body, 'u', sizeof(body));
	memcpy(body, A4, 12);
	b = 12 + tlv(body + 12, PP2_TYPE_UNIQUE_ID, body + 200, 129);
	n = v2(h, 0x21, 0x11, body, b);
	check_invalid("v2 UNIQUE_ID of 129 bytes", h, n, "UNIQUE_ID TLV over 128");
	b = tlv(body, PP2_TYPE_SSL, "\x01\0\0\0", 4);
	n = v2(h, 0x21, 0x00, body, b);
	check_invalid("v2 SSL TLV of 4 bytes", h, n, "SSL TLV shorter than 5");
	b = tlv(body, PP2_TYPE_SSL, NULL, 0);
	n = v2(h, 0x21, 0x00, body, b);
	check_invalid("v2 empty SSL TLV", h, n, "SSL TLV shorter than 5");
	memcpy(sub, "\x01\0\0\0\0", 5);
	l = 5 + tlv(sub + 5, PP2_SUBTYPE_SSL_VERSION, "TLSv1.2", 7);
	b = tlv(body, PP2_TYPE_SSL, sub, l - 1);
	n = v2(h, 0x21, 0x00, body, b);
	check_invalid("v2 SSL sub-TLV overruns the SSL TLV", h, n, "SSL sub-TLVs");
	sub[l] = 0;
	b = tlv(body, PP2_TYPE_SSL, sub, l + 1);
	n = v2(h, 0x21, 0x00, body, b);
	check_invalid("v2 SSL TLV with a stray byte after sub-TLVs", h, n, "SSL sub-TLVs");
}

/* Over-read and header-untouched checks not tied to one vector. */
static void
test_misc(void)
{
	struct pp_header h, before;
	struct pp_tlv_iter it;
	uint8_t t;
	const uint8_t *v;
	size_t l;
	const char *why = NULL;

	memset(&h, 0x5a, sizeof(h));
	before = h;
	pp_parse(S("PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n"), &h);
	ok(memcmp(&h, &before, sizeof(h)) == 0, "hdr untouched when refused");
	pp_parse(S("PROXY TCP4 1.2.3.4"), &h);
	ok(memcmp(&h, &before, sizeof(h)) == 0, "hdr untouched when more is needed");
	is_int(pp_parse(S("PROXY UNKNOWN\r\n"), NULL), 15, "hdr may be NULL");
	is_int(pp_parse_ex(S("PROXY UNKNOWN\r\n"), NULL, &why), 15, "pp_parse_ex accepts");
	is_str(why, "ok", "pp_parse_ex reason on success");
	pp_parse_ex(S("PROXY TCP"), NULL, &why);
	is_str(why, "incomplete header", "pp_parse_ex reason when more is needed");
	is_str(pp_strerror(PP_NEED_MORE), "incomplete PROXY header", "pp_strerror(PP_NEED_MORE)");
	is_str(pp_strerror(PP_INVALID), "invalid PROXY header", "pp_strerror(PP_INVALID)");
	is_str(pp_strerror(28), "ok", "pp_strerror(length)");
	is_str(pp_strerror(-7), "unknown PROXY parser result", "pp_strerror(other)");

	memset(&h, 0, sizeof(h));
	ok(pp_tlv_find(&h, PP2_TYPE_ALPN, &v, &l) == -1, "pp_tlv_find without TLVs");
	ok(pp_tlv_find(NULL, PP2_TYPE_ALPN, &v, &l) == -1, "pp_tlv_find with NULL hdr");
	ok(pp_client_used_tls(&h) == 0, "pp_client_used_tls without TLVs");
	h.tlv = (const uint8_t *)"\x01\x00\x01" "a" "\x01\x00\x01" "b";
	h.tlv_len = 8;
	ok(pp_tlv_find(&h, PP2_TYPE_ALPN, &v, &l) == 0 && l == 1 && v[0] == 'a', "pp_tlv_find returns the first match");
	h.tlv = (const uint8_t *)"\x22\x00\x01" "x" "\x20\x00\x09" "\x01\0\0\0\0" "\x22\x00\x01" "y";
	h.tlv_len = 16;
	ok(pp_tlv_find(&h, PP2_SUBTYPE_SSL_CN, &v, &l) == 0 && l == 1 && v[0] == 'y',
	    "pp_tlv_find: an SSL sub-type is looked up only inside the SSL TLV");
	h.tlv_len = 4;
	ok(pp_tlv_find(&h, PP2_SUBTYPE_SSL_CN, &v, &l) == -1, "pp_tlv_find: a top-level 0x22 is not an SSL CN");
	it.p = (const uint8_t *)"\x01\x00\x05" "ab";
	it.left = 5;
	is_int(pp_tlv_next(&it, &t, &v, &l), -1, "pp_tlv_next: overrun is malformed");
	it.p = (const uint8_t *)"\x01\x00\x01" "a" "\x02";
	it.left = 5;
	ok(pp_tlv_next(&it, &t, &v, &l) == 1 && t == 1 && l == 1, "pp_tlv_next: first TLV");
	is_int(pp_tlv_next(&it, &t, &v, &l), -1, "pp_tlv_next: 1 stray byte is malformed");
	it.p = NULL;
	it.left = 0;
	is_int(pp_tlv_next(&it, &t, &v, &l), 0, "pp_tlv_next: empty block ends");
}

/* Fills a sockaddr_in. */
static struct sockaddr_in
sin4(const char *a, unsigned port)
{
	struct sockaddr_in s;

	memset(&s, 0, sizeof(s));
	s.sin_family = AF_INET;
	inet_pton(AF_INET, a, &s.sin_addr);
	s.sin_port = htons(port);
	return s;
}

/* Fills a sockaddr_in6. */
static struct sockaddr_in6
sin6(const char *a, unsigned port)
{
	struct sockaddr_in6 s;

	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	inet_pton(AF_INET6, a, &s.sin6_addr);
	s.sin6_port = htons(port);
	return s;
}

/* Encodes v2 with and without CRC, parses back, and checks fields and TLVs. */
static void
roundtrip_v2(const char *name, int cmd, const struct sockaddr *s, const struct sockaddr *d,
             size_t alen)
{
	uint8_t out[2048], tl[64];
	struct pp_header h;
	const uint8_t *v;
	size_t l, tn;
	ssize_t n;
	int crc;

	tn = tlv(tl, PP2_TYPE_AUTHORITY, "example.org", 11);
	tn += tlv(tl + tn, PP2_TYPE_UNIQUE_ID, "abc", 3);
	for (crc = 0; crc <= 1; crc++) {
		size_t want = 16 + alen + tn + (crc ? 7 : 0);

		n = pp_encode_v2_ex(out, sizeof(out), cmd, s, d, tl, tn, crc ? PP_ENC_CRC32C : 0);
		is_int(n, want, "%s%s: encoded length", name, crc ? " + CRC32C" : "");
		check_valid(name, out, (size_t)(n > 0 ? n : 0), want, &h);
		ok(h.command == cmd && h.version == 2, "%s: command", name);
		if (cmd == PP_CMD_LOCAL) {
			ok(h.family == AF_UNSPEC, "%s: LOCAL gives AF_UNSPEC", name);
		} else if (s->sa_family == AF_INET) {
			ok(memcmp(&((struct sockaddr_in *)&h.src)->sin_addr, &((const struct sockaddr_in *)(const void *)s)->sin_addr, 4) == 0 &&
			    ((struct sockaddr_in *)&h.dst)->sin_port == ((const struct sockaddr_in *)(const void *)d)->sin_port,
			    "%s: IPv4 addresses and ports", name);
		} else if (s->sa_family == AF_INET6) {
			ok(memcmp(&((struct sockaddr_in6 *)&h.dst)->sin6_addr, &((const struct sockaddr_in6 *)(const void *)d)->sin6_addr, 16) == 0 &&
			    ((struct sockaddr_in6 *)&h.src)->sin6_port == ((const struct sockaddr_in6 *)(const void *)s)->sin6_port,
			    "%s: IPv6 addresses and ports", name);
		} else {
			ok(strcmp(((struct sockaddr_un *)&h.src)->sun_path, ((const struct sockaddr_un *)(const void *)s)->sun_path) == 0 &&
			    strcmp(((struct sockaddr_un *)&h.dst)->sun_path, ((const struct sockaddr_un *)(const void *)d)->sun_path) == 0,
			    "%s: UNIX paths", name);
		}
		ok(tlv_is(&h, PP2_TYPE_AUTHORITY, "example.org") && tlv_is(&h, PP2_TYPE_UNIQUE_ID, "abc"),
		    "%s: TLVs survive", name);
		is_int(pp_tlv_find(&h, PP2_TYPE_CRC32C, &v, &l) == 0 && l == 4, crc, "%s: CRC32C TLV present iff asked", name);
		if (crc && n > 0) {
			out[n - 1] ^= 0x01;
			is_int(pp_parse(out, (size_t)n, NULL), PP_INVALID, "%s: a flipped CRC bit is refused", name);
			out[n - 1] ^= 0x01;
			out[17] ^= 0x01;
			is_int(pp_parse(out, (size_t)n, NULL), PP_INVALID, "%s: a flipped header bit is refused", name);
		}
	}
}

/* Encoders: round trips and refusals. */
static void
test_encode(void)
{
	struct sockaddr_in a = sin4("10.1.2.3", 12345), b = sin4("192.0.2.7", 443);
	struct sockaddr_in6 c = sin6("2001:db8::dead:beef", 1), d = sin6("::1", 65535);
	struct sockaddr_in6 m1 = sin6("::ffff:127.0.0.1", 5000), m2 = sin6("::ffff:127.0.0.2", 80);
	struct sockaddr_un u1, u2;
	struct pp_header h;
	uint8_t out[512], bad[8];
	char txt[128];
	ssize_t n;

	n = pp_encode_v1(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&b);
	memcpy(txt, out, n > 0 ? (size_t)n : 0);
	txt[n > 0 ? n : 0] = '\0';
	is_str(txt, "PROXY TCP4 10.1.2.3 192.0.2.7 12345 443\r\n", "v1 encode TCP4 text");
	check_valid("v1 encode TCP4 parses", out, (size_t)n, (size_t)n, &h);
	ok(is_v4(&h.src, "10.1.2.3", 12345) && is_v4(&h.dst, "192.0.2.7", 443), "v1 TCP4 round trip");
	n = pp_encode_v1(out, sizeof(out), (struct sockaddr *)&c, (struct sockaddr *)&d);
	check_valid("v1 encode TCP6 parses", out, (size_t)(n > 0 ? n : 0), 44, &h);
	ok(is_v6(&h.src, "2001:db8::dead:beef", 1) && is_v6(&h.dst, "::1", 65535), "v1 TCP6 round trip");
	n = pp_encode_v1(out, sizeof(out), (struct sockaddr *)&m1, (struct sockaddr *)&m2);
	memcpy(txt, out, n > 0 ? (size_t)n : 0);
	txt[n > 0 ? n : 0] = '\0';
	is_str(txt, "PROXY TCP6 ::ffff:127.0.0.1 ::ffff:127.0.0.2 5000 80\r\n", "v1 encode v4-mapped as TCP6");
	is_int(pp_parse(out, (size_t)n, &h), n, "v1 v4-mapped parses");
	ok(is_v6(&h.dst, "::ffff:127.0.0.2", 80), "v1 v4-mapped round trip");
	is_int(pp_encode_v1(out, 41, (struct sockaddr *)&a, (struct sockaddr *)&b), 41, "v1 encode into an exact buffer");
	is_int(pp_encode_v1(out, 40, (struct sockaddr *)&a, (struct sockaddr *)&b), -1, "v1 encode: cap too small");
	is_int(pp_encode_v1(out, sizeof(out), (struct sockaddr *)&a, (struct sockaddr *)&d), -1, "v1 encode: mixed families");
	is_int(pp_encode_v1(out, sizeof(out), NULL, (struct sockaddr *)&b), -1, "v1 encode: NULL src");

	memset(&u1, 0, sizeof(u1));
	memset(&u2, 0, sizeof(u2));
	u1.sun_family = u2.sun_family = AF_UNIX;
	strcpy(u1.sun_path, "/tmp/a.sock");
	memset(u2.sun_path, 'p', sizeof(u2.sun_path) - 1);
	is_int(pp_encode_v1(out, sizeof(out), (struct sockaddr *)&u1, (struct sockaddr *)&u2), -1, "v1 encode: AF_UNIX refused");

	roundtrip_v2("v2 round trip IPv4", PP_CMD_PROXY, (struct sockaddr *)&a, (struct sockaddr *)&b, 12);
	roundtrip_v2("v2 round trip IPv6", PP_CMD_PROXY, (struct sockaddr *)&c, (struct sockaddr *)&d, 36);
	roundtrip_v2("v2 round trip UNIX", PP_CMD_PROXY, (struct sockaddr *)&u1, (struct sockaddr *)&u2, 216);
	roundtrip_v2("v2 round trip LOCAL", PP_CMD_LOCAL, NULL, NULL, 0);

	n = pp_encode_v2(out, sizeof(out), PP_CMD_PROXY, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, 0);
	is_int(n, 28, "v2 encode IPv4 without TLVs");
	ok(n == 28 && memcmp(out, SIG, 12) == 0 && out[12] == 0x21 && out[13] == 0x11 && out[15] == 12,
	    "v2 encode IPv4: signature, ver_cmd, family, len");
	n = pp_encode_v2(out, sizeof(out), PP_CMD_LOCAL, NULL, NULL, NULL, 0);
	ok(n == 16 && out[12] == 0x20 && out[13] == 0x00 && out[14] == 0 && out[15] == 0,
	    "v2 encode LOCAL: the 16-byte health-check header");
	is_int(pp_encode_v2(out, 27, PP_CMD_PROXY, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, 0), -1,
	    "v2 encode: cap too small");
	is_int(pp_encode_v2(out, sizeof(out), 2, (struct sockaddr *)&a, (struct sockaddr *)&b, NULL, 0), -1,
	    "v2 encode: bad command");
	is_int(pp_encode_v2(out, sizeof(out), PP_CMD_PROXY, NULL, NULL, NULL, 0), -1,
	    "v2 encode: PROXY needs addresses");
	is_int(pp_encode_v2(out, sizeof(out), PP_CMD_PROXY, (struct sockaddr *)&a, (struct sockaddr *)&c, NULL, 0), -1,
	    "v2 encode: mixed families");
	memcpy(bad, "\x02\x00\x09" "ab", 5);
	is_int(pp_encode_v2(out, sizeof(out), PP_CMD_LOCAL, NULL, NULL, bad, 5), -1,
	    "v2 encode: malformed TLV block refused");
	is_int(pp_encode_v2(out, sizeof(out), PP_CMD_LOCAL, NULL, NULL, (const uint8_t *)"\x03\x00\x04\0\0\0\0", 7), -1,
	    "v2 encode: caller CRC32C TLV refused (use PP_ENC_CRC32C)");
	is_int(pp_encode_v2(out, sizeof(out), PP_CMD_LOCAL, NULL, NULL, NULL, 3), -1,
	    "v2 encode: NULL tlv with a length");
	{
		static uint8_t big[65600];

		tlv(big, PP2_TYPE_NOOP, NULL, 0);
		big[1] = (65524 - 3) >> 8;
		big[2] = (uint8_t)(65524 - 3);
		is_int(pp_encode_v2(big, sizeof(big), PP_CMD_PROXY, (struct sockaddr *)&a, (struct sockaddr *)&b,
		    big, 65524), -1, "v2 encode: body over 65535 refused");
		is_int(pp_encode_v2(big, sizeof(big), PP_CMD_LOCAL, NULL, NULL, big, 65524), 16 + 65524,
		    "v2 encode: overlapping TLV input, 65524-byte body");
		is_int(pp_parse(big, 16 + 65524, NULL), 16 + 65524, "v2 encode: large body parses");
	}
}

/* CRC32C known answers, chaining, and the SSE4.2 path against the table. */
static void
test_crc32c(void)
{
	uint8_t buf[4096 + 16];
	uint32_t seed = 12345;
	size_t i, len, off, mism = 0;

	is_int(pp_crc32c_sw(0, "123456789", 9), 0xE3069283u, "crc32c table: \"123456789\"");
	is_int(pp_crc32c_hw(0, "123456789", 9), 0xE3069283u, "crc32c hw: \"123456789\"");
	is_int(pp_crc32c(0, "123456789", 9), 0xE3069283u, "crc32c: \"123456789\"");
	is_int(pp_crc32c(0, "", 0), 0, "crc32c of nothing is 0");
	memset(buf, 0, 32);
	is_int(pp_crc32c_sw(0, buf, 32), 0x8A9136AAu, "crc32c table: 32 zero bytes (RFC 3720 B.4)");
	is_int(pp_crc32c_hw(0, buf, 32), 0x8A9136AAu, "crc32c hw: 32 zero bytes");
	memset(buf, 0xff, 32);
	is_int(pp_crc32c_sw(0, buf, 32), 0x62A8AB43u, "crc32c table: 32 0xff bytes");
	is_int(pp_crc32c_hw(0, buf, 32), 0x62A8AB43u, "crc32c hw: 32 0xff bytes");
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)i;
	is_int(pp_crc32c_sw(0, buf, 32), 0x46DD794Eu, "crc32c table: 0..31");
	is_int(pp_crc32c_hw(0, buf, 32), 0x46DD794Eu, "crc32c hw: 0..31");
	for (i = 0; i < 32; i++)
		buf[i] = (uint8_t)(31 - i);
	is_int(pp_crc32c_sw(0, buf, 32), 0x113FDB5Cu, "crc32c table: 31..0");
	is_int(pp_crc32c_hw(0, buf, 32), 0x113FDB5Cu, "crc32c hw: 31..0");
	is_int(pp_crc32c(pp_crc32c(0, "1234", 4), "56789", 5), 0xE3069283u, "crc32c chains");
	is_int(pp_crc32c_hw(pp_crc32c_sw(0, "12345", 5), "6789", 4), 0xE3069283u, "crc32c chains across paths");

	diag("SSE4.2 crc32 instruction %s", pp_crc32c_hw_available() ? "used" : "not available: hw path is the table");
	for (i = 0; i < sizeof(buf); i++) {
		seed = seed * 1103515245u + 12345u;
		buf[i] = (uint8_t)(seed >> 16);
	}
	for (len = 0; len < 300; len++)
		for (off = 0; off < 8; off++)
			if (pp_crc32c_hw(0, buf + off, len) != pp_crc32c_sw(0, buf + off, len))
				mism++;
	for (len = 300; len <= 4096; len += 379)
		if (pp_crc32c_hw(0x1234, buf + 3, len) != pp_crc32c_sw(0x1234, buf + 3, len))
			mism++;
	is_int(mism, 0, "crc32c hw equals table on random data, all alignments and lengths");
}

int
main(void)
{
	guard_init();
	test_crc32c();
	test_v1_valid();
	test_v1_invalid();
	test_early();
	test_v2_valid();
	test_v2_invalid();
	test_misc();
	test_encode();
	return done_testing();
}
