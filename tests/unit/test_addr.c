/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_addr.c: TAP tests for addr.c: "host:port" parsing (IPv4, bracketed IPv6, bad inputs)
 * and address prefixes (parsing, /0 /32 /128 edges, odd lengths, v4-mapped IPv6 peers).
 */
#include <arpa/inet.h>
#include <string.h>

#include "addr.h"
#include "tap.h"

/* Parses s numerically and checks family, text form of the address and port. */
static void
hostport_ok(const char *s, int family, const char *addr, unsigned port)
{
	struct sockaddr_storage ss;
	socklen_t len = 0;
	char text[INET6_ADDRSTRLEN] = "";
	unsigned got = 0;

	memset(&ss, 0, sizeof(ss));
	if (!ok(addr_parse_hostport(s, &ss, &len, true) == 0, "hostport \"%s\" accepted", s))
		return;
	if (ss.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&ss;
		inet_ntop(AF_INET, &a->sin_addr, text, sizeof(text));
		got = ntohs(a->sin_port);
		is_int(len, sizeof(*a), "  %s: sockaddr_in length", s);
	} else if (ss.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&ss;
		inet_ntop(AF_INET6, &a->sin6_addr, text, sizeof(text));
		got = ntohs(a->sin6_port);
		is_int(len, sizeof(*a), "  %s: sockaddr_in6 length", s);
	}
	is_int(ss.ss_family, family, "  %s: family", s);
	is_str(text, addr, "  %s: address", s);
	is_int(got, port, "  %s: port", s);
}

static void
test_hostport(void)
{
	static const char *const bad[] = {
		"", ":", "1.2.3.4", "1.2.3.4:", ":80", "1.2.3.4:x", "1.2.3.4:80x", "1.2.3.4:-1",
		"1.2.3.4:65536", "1.2.3.4:123456", "::1:80", "[::1]", "[::1]80", "[::1]:", "[]:80",
		"[::1:80", "localhost:80", "1.2.3.256:80", "[1.2.3.4]:80x",
	};
	struct sockaddr_storage ss;
	socklen_t len;
	char longhost[300];

	hostport_ok("127.0.0.1:8080", AF_INET, "127.0.0.1", 8080);
	hostport_ok("0.0.0.0:0", AF_INET, "0.0.0.0", 0);
	hostport_ok("10.1.1.14:65535", AF_INET, "10.1.1.14", 65535);
	hostport_ok("10.1.1.14:00443", AF_INET, "10.1.1.14", 443);
	hostport_ok("[::1]:443", AF_INET6, "::1", 443);
	hostport_ok("[::]:0", AF_INET6, "::", 0);
	hostport_ok("[2001:DB8::a]:8443", AF_INET6, "2001:db8::a", 8443);
	hostport_ok("[::ffff:192.0.2.1]:80", AF_INET6, "::ffff:192.0.2.1", 80);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(addr_parse_hostport(bad[i], &ss, &len, true) == -1, "hostport \"%s\" refused", bad[i]);
	memset(longhost, '1', sizeof(longhost));
	strcpy(longhost + 280, ":80");
	ok(addr_parse_hostport(longhost, &ss, &len, false) == -1, "hostport: 280-byte host refused");
}

/* A sockaddr for a numeric address (IPv4 or IPv6 text). */
static struct sockaddr_storage
sa(const char *text)
{
	struct sockaddr_storage ss;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, text, &((struct sockaddr_in *)&ss)->sin_addr) == 1)
		ss.ss_family = AF_INET;
	else if (inet_pton(AF_INET6, text, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1)
		ss.ss_family = AF_INET6;
	return ss;
}

/* True when prefix p (text) parses and matches the address text. */
static int
in(const char *prefix, const char *addr)
{
	struct addr_prefix p;
	struct sockaddr_storage ss = sa(addr);

	if (addr_prefix_parse(prefix, &p) != 0)
		return -1;
	return addr_prefix_match(&p, (const struct sockaddr *)&ss);
}

static void
test_prefix_parse(void)
{
	static const char *const bad[] = {
		"", "/8", "10.0.0.0/", "10.0.0.0/33", "10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/8x",
		"10.0.0.0/0008", "::/129", "::/1000", "10.0.0/8", "host/8", "10.0.0.0 /8",
		"0123456789012345678901234567890123456789012345678901234567890123456789",
	};
	struct addr_prefix p;

	ok(addr_prefix_parse("10.0.0.0/8", &p) == 0 && p.family == AF_INET && p.bits == 8,
	    "prefix 10.0.0.0/8");
	ok(addr_prefix_parse("192.0.2.7", &p) == 0 && p.family == AF_INET && p.bits == 32,
	    "bare IPv4 address: /32");
	ok(addr_prefix_parse("::1", &p) == 0 && p.family == AF_INET6 && p.bits == 128,
	    "bare IPv6 address: /128");
	ok(addr_prefix_parse("2001:db8::/32", &p) == 0 && p.family == AF_INET6 && p.bits == 32,
	    "prefix 2001:db8::/32");
	ok(addr_prefix_parse("0.0.0.0/0", &p) == 0 && p.bits == 0, "prefix /0");
	ok(addr_prefix_parse("10.0.0.0/008", &p) == 0 && p.bits == 8, "leading zeros in the length");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ok(addr_prefix_parse(bad[i], &p) == -1, "prefix \"%s\" refused", bad[i]);
}

static void
test_prefix_match(void)
{
	struct addr_prefix p = { 0 };
	struct sockaddr_storage un;

	is_int(in("0.0.0.0/0", "203.0.113.9"), 1, "v4 /0 matches any IPv4");
	is_int(in("0.0.0.0/0", "::ffff:203.0.113.9"), 1, "v4 /0 matches a v4-mapped peer");
	is_int(in("0.0.0.0/0", "2001:db8::1"), 0, "v4 /0 does not match plain IPv6");
	is_int(in("::/0", "2001:db8::1"), 1, "v6 /0 matches any IPv6");
	is_int(in("::/0", "203.0.113.9"), 0, "v6 /0 does not match IPv4");
	is_int(in("192.0.2.7/32", "192.0.2.7"), 1, "/32 matches itself");
	is_int(in("192.0.2.7/32", "192.0.2.6"), 0, "/32 not its neighbour");
	is_int(in("192.0.2.7", "::ffff:192.0.2.7"), 1, "bare v4 matches its v4-mapped form");
	is_int(in("192.0.2.7", "::ffff:192.0.2.8"), 0, "bare v4 not another v4-mapped");
	is_int(in("::1/128", "::1"), 1, "/128 matches itself");
	is_int(in("::1/128", "::2"), 0, "/128 not its neighbour");
	is_int(in("::1", "127.0.0.1"), 0, "::1 is not 127.0.0.1");
	is_int(in("::ffff:10.0.0.0/104", "::ffff:10.1.2.3"), 1, "v6 prefix over the v4-mapped range");
	is_int(in("::ffff:10.0.0.0/104", "10.1.2.3"), 0, "v6 prefix never matches plain IPv4");
	is_int(in("10.0.0.0/8", "10.255.255.255"), 1, "/8 top address");
	is_int(in("10.0.0.0/8", "11.0.0.0"), 0, "/8 next network");
	is_int(in("10.0.0.0/8", "9.255.255.255"), 0, "/8 previous network");
	is_int(in("192.0.2.128/25", "192.0.2.200"), 1, "/25 inside (odd length)");
	is_int(in("192.0.2.128/25", "192.0.2.127"), 0, "/25 outside (odd length)");
	is_int(in("192.0.2.1/24", "192.0.2.99"), 1, "host bits in the prefix are ignored");
	is_int(in("2001:db8::/33", "2001:db8:7fff::1"), 1, "v6 /33 inside");
	is_int(in("2001:db8::/33", "2001:db8:8000::1"), 0, "v6 /33 outside");
	is_int(in("fe80::/10", "febf::1"), 1, "fe80::/10 top");
	is_int(in("fe80::/10", "fec0::1"), 0, "fe80::/10 next");
	memset(&un, 0, sizeof(un));
	un.ss_family = AF_UNIX;
	addr_prefix_parse("0.0.0.0/0", &p);
	ok(!addr_prefix_match(&p, (const struct sockaddr *)&un), "AF_UNIX never matches a v4 /0");
	addr_prefix_parse("::/0", &p);
	ok(!addr_prefix_match(&p, (const struct sockaddr *)&un), "AF_UNIX never matches a v6 /0");
}

int
main(void)
{
	test_hostport();
	test_prefix_parse();
	test_prefix_match();
	return done_testing();
}
