/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * addr.c: socket-address helpers: parsing, formatting, prefix matching.
 * Pure: no libev, no configuration structures (see addr.h for the contracts).
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"

/* True when s is 1 to maxlen decimal digits. */
static bool
addr_digits(const char *s, size_t maxlen)
{
	size_t n = strlen(s);

	return n > 0 && n <= maxlen && strspn(s, "0123456789") == n;
}

/*
 * Splits "host:port" or "[v6]:port": host[0..hostcap) gets the host, *port points at the
 * port digits inside s. Returns 0, or -1 when s has neither shape or a part is bad.
 */
static int
addr_split_hostport(const char *s, char *host, size_t hostcap, const char **port)
{
	const char *h = s, *e, *c;
	size_t hl;

	if (*s == '[') {
		if (!(e = strchr(s, ']')) || e[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(e - h);
		*port = e + 2;
	} else {
		if (!(c = strrchr(s, ':')) || strchr(s, ':') != c)
			return -1;
		hl = (size_t)(c - s);
		*port = c + 1;
	}
	if (hl == 0 || hl >= hostcap || !addr_digits(*port, 5) || atoi(*port) > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';
	return 0;
}

int
addr_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len, bool numeric_only)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
	char host[256];
	const char *port;

	if (addr_split_hostport(s, host, sizeof(host), &port) == -1)
		return -1;
	if (numeric_only)
		hints.ai_flags |= AI_NUMERICHOST;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int
addr_prefix_parse(const char *s, struct addr_prefix *p)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t l = slash ? (size_t)(slash - s) : strlen(s);
	int max;

	if (l == 0 || l >= sizeof(buf))
		return -1;
	memcpy(buf, s, l);
	buf[l] = '\0';
	memset(p, 0, sizeof(*p));
	if (inet_pton(AF_INET, buf, p->addr) == 1) {
		p->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, p->addr) == 1) {
		p->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	p->bits = max;
	if (slash) {
		if (!addr_digits(slash + 1, 3) || atoi(slash + 1) > max)
			return -1;
		p->bits = atoi(slash + 1);
	}
	return 0;
}

/* True when the first bits bits of a and b are equal. */
static bool
addr_bits_eq(const unsigned char *a, const unsigned char *b, int bits)
{
	int bytes = bits / 8, rem = bits % 8;
	unsigned char mask;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return false;
	if (rem == 0)
		return true;
	mask = (unsigned char)(0xff << (8 - rem));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool
addr_prefix_match(const struct addr_prefix *p, const struct sockaddr *sa)
{
	static const unsigned char v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
	const unsigned char *a4 = NULL, *a6 = NULL;

	if (sa->sa_family == AF_INET) {
		a4 = (const unsigned char *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		a6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(a6, v4mapped, 12) == 0)
			a4 = a6 + 12;
	}
	if (p->family == AF_INET)
		return a4 != NULL && addr_bits_eq(a4, p->addr, p->bits);
	if (p->family == AF_INET6)
		return a6 != NULL && addr_bits_eq(a6, p->addr, p->bits);
	return false;
}

/* Writes the address (no port) as text into out; "unknown" for other families. */
void
addr_text(const struct sockaddr_storage *ss, char *out, size_t cap)
{
	if (ss->ss_family == AF_INET)
		inet_ntop(AF_INET, &((const struct sockaddr_in *)ss)->sin_addr, out, (socklen_t)cap);
	else if (ss->ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ss)->sin6_addr, out, (socklen_t)cap);
	else
		snprintf(out, cap, "unknown");
}

/* Turns an IPv4-mapped IPv6 address (::ffff:a.b.c.d) into AF_INET in place, port kept. */
void
addr_unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in s4;

	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = s6->sin6_port;
	memcpy(&s4.sin_addr, s6->sin6_addr.s6_addr + 12, 4);
	memset(ss, 0, sizeof(*ss));
	memcpy(ss, &s4, sizeof(s4));
}
