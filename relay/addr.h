/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * addr.h: socket-address helpers: parsing, formatting, prefix matching.
 * Pure: no libev, no configuration structures; callers pass plain arguments.
 */
#ifndef EXRELAY_ADDR_H
#define EXRELAY_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

/* An address prefix ("10.0.0.0/8", "2001:db8::/32"; a bare address is a host prefix). */
struct addr_prefix {
	int family;			/* AF_INET or AF_INET6 */
	unsigned char addr[16];		/* network byte order; 4 bytes used for AF_INET */
	int bits;			/* 0..32 or 0..128 */
};

/*
 * Parses "host:port" or "[v6]:port" into *ss and *len. The port is 1-5 digits up to 65535;
 * the host is non-empty and under 256 bytes, numeric only when numeric_only, else resolved
 * (getaddrinfo, first result). "v6:port" without brackets is refused.
 * Returns 0, or -1 when s is malformed or the host does not resolve.
 */
int addr_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len,
    bool numeric_only);

/*
 * Parses "a.b.c.d/n", "v6/n", or a bare address (all bits) into *p. n is 1-3 digits, at most
 * 32 (IPv4) or 128 (IPv6). Returns 0, or -1 when s is not one of these.
 */
int addr_prefix_parse(const char *s, struct addr_prefix *p);

/*
 * True when the socket address sa is inside prefix p. An IPv4 prefix also matches
 * v4-mapped IPv6 addresses (::ffff:a.b.c.d); other families never match.
 */
bool addr_prefix_match(const struct addr_prefix *p, const struct sockaddr *sa);

/* Writes the address (no port) as text into out; "unknown" for other families. */
void addr_text(const struct sockaddr_storage *ss, char *out, size_t cap);

/* Turns an IPv4-mapped IPv6 address (::ffff:a.b.c.d) into AF_INET in place, port kept. */
void addr_unmap(struct sockaddr_storage *ss);

#endif
