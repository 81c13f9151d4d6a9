/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_ppenc.c: round trip of libproxyproto, encode then parse (the other direction of
 * fuzz_proxyproto.c).
 *
 * The input describes a header: family, command, addresses and ports, and a list of TLVs
 * (types other than CRC32C, UNIQUE_ID within its 128 bytes, SSL with sub-TLVs that tile its
 * value). It is encoded as v1 (TCP4/TCP6) and as v2 with and without a CRC32C, and each
 * encoding must (abort() otherwise): parse to its full length, with the same version,
 * command, family, addresses and ports, and the same TLVs in the same order (plus the
 * CRC32C); every proper prefix must need more; and, with a CRC32C, a PROXY header with one
 * bit flipped in its command byte, its addresses or its checksum must be refused.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)

struct reader {
	const uint8_t *p;
	size_t left;
};

static uint8_t
take(struct reader *r)
{
	if (r->left == 0)
		return 0;
	r->left--;
	return *r->p++;
}

static void
take_n(struct reader *r, void *out, size_t n)
{
	uint8_t *o = out;

	for (size_t i = 0; i < n; i++)
		o[i] = take(r);
}

/* Fills a pair of addresses of family fam from the input. */
static void
make_addrs(struct reader *r, int fam, struct sockaddr_storage *src, struct sockaddr_storage *dst)
{
	memset(src, 0, sizeof(*src));
	memset(dst, 0, sizeof(*dst));
	for (int k = 0; k < 2; k++) {
		struct sockaddr_storage *ss = k ? dst : src;
		if (fam == AF_INET) {
			struct sockaddr_in sin = { .sin_family = AF_INET };
			take_n(r, &sin.sin_addr, 4);
			take_n(r, &sin.sin_port, 2);
			memcpy(ss, &sin, sizeof(sin));
		} else if (fam == AF_INET6) {
			struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };
			take_n(r, &sin6.sin6_addr, 16);
			take_n(r, &sin6.sin6_port, 2);
			memcpy(ss, &sin6, sizeof(sin6));
		} else {
			struct sockaddr_un sun = { .sun_family = AF_UNIX };
			size_t n = take(r) % sizeof(sun.sun_path);
			take_n(r, sun.sun_path, n);
			memcpy(ss, &sun, sizeof(sun));
		}
	}
}

/* Appends one well-formed TLV of the input to tlv[*len..cap); false when none fits. */
static bool
make_tlv(struct reader *r, uint8_t *tlv, size_t *len, size_t cap)
{
	static const uint8_t types[] = { PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NOOP,
		PP2_TYPE_UNIQUE_ID, PP2_TYPE_SSL, PP2_TYPE_NETNS, 0xE0, 0x42 };
	uint8_t t = types[take(r) & 7];
	size_t n = take(r);

	if (t == PP2_TYPE_UNIQUE_ID && n > PP2_UNIQUE_ID_MAX)
		n = PP2_UNIQUE_ID_MAX;
	if (t == PP2_TYPE_SSL) {
		uint8_t v[PP2_SSL_FIXED_LEN + 3 * 40];
		size_t vl = PP2_SSL_FIXED_LEN, subs = n % 4;
		take_n(r, v, PP2_SSL_FIXED_LEN);
		for (size_t i = 0; i < subs; i++) {
			size_t sl = take(r) % 37;
			v[vl] = (uint8_t)(PP2_SUBTYPE_SSL_VERSION + take(r) % 5);
			v[vl + 1] = 0;
			v[vl + 2] = (uint8_t)sl;
			take_n(r, v + vl + 3, sl);
			vl += 3 + sl;
		}
		if (cap - *len < 3 + vl)
			return false;
		tlv[*len] = t;
		tlv[*len + 1] = (uint8_t)(vl >> 8);
		tlv[*len + 2] = (uint8_t)vl;
		memcpy(tlv + *len + 3, v, vl);
		*len += 3 + vl;
		return true;
	}
	if (cap - *len < 3 + n)
		return false;
	tlv[*len] = t;
	tlv[*len + 1] = 0;
	tlv[*len + 2] = (uint8_t)n;
	take_n(r, tlv + *len + 3, n);
	*len += 3 + n;
	return true;
}

static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b, int fam)
{
	if (fam == AF_INET) {
		const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
		return x->sin_family == y->sin_family && x->sin_port == y->sin_port &&
		    memcmp(&x->sin_addr, &y->sin_addr, 4) == 0;
	}
	if (fam == AF_INET6) {
		const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
		return x->sin6_family == y->sin6_family && x->sin6_port == y->sin6_port &&
		    memcmp(&x->sin6_addr, &y->sin6_addr, 16) == 0;
	}
	const struct sockaddr_un *x = (const struct sockaddr_un *)a, *y = (const struct sockaddr_un *)b;
	return x->sun_family == y->sun_family && strncmp(x->sun_path, y->sun_path, sizeof(x->sun_path)) == 0;
}

/* Every proper prefix needs more; the whole parses to n bytes. */
static void
check_prefixes(const uint8_t *out, size_t n)
{
	for (size_t k = 0; k < n; k++)
		CHECK(pp_parse(out, k, NULL) == PP_NEED_MORE);
}

/* The TLVs of h are tlv[0..len), in order, then (crc) one CRC32C. */
static void
check_tlvs(const struct pp_header *h, const uint8_t *tlv, size_t len, bool crc)
{
	struct pp_tlv_iter it = { h->tlv, h->tlv_len }, want = { tlv, len };
	uint8_t t, wt;
	const uint8_t *v, *wv;
	size_t l, wl;
	int got;

	while ((got = pp_tlv_next(&it, &t, &v, &l)) == 1) {
		if (pp_tlv_next(&want, &wt, &wv, &wl) == 1) {
			CHECK(t == wt && l == wl && memcmp(v, wv, l) == 0);
		} else {
			CHECK(crc && t == PP2_TYPE_CRC32C && l == 4);
			crc = false;
		}
	}
	CHECK(got == 0 && !crc && want.left == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t out[PP_V2_MAX_LEN], tlv[4096];
	static const int fams[4] = { AF_INET, AF_INET6, AF_UNIX, AF_INET };
	struct reader r = { data, size };
	struct sockaddr_storage src, dst;
	struct pp_header h;
	size_t tlv_len = 0;

	uint8_t ctl = take(&r);
	int fam = fams[ctl & 3];
	int cmd = (ctl & 4) ? PP_CMD_LOCAL : PP_CMD_PROXY;
	make_addrs(&r, fam, &src, &dst);
	size_t ntlv = take(&r) % 8;
	for (size_t i = 0; i < ntlv && make_tlv(&r, tlv, &tlv_len, sizeof(tlv)); i++)
		;

	/* v1 */
	if (fam != AF_UNIX) {
		ssize_t n = pp_encode_v1(out, sizeof(out), (struct sockaddr *)&src, (struct sockaddr *)&dst);
		CHECK(n > 0 && n <= PP_V1_MAX_LEN);
		CHECK(pp_parse(out, (size_t)n, &h) == n);
		CHECK(h.version == 1 && h.command == PP_CMD_PROXY && h.family == fam);
		CHECK(same_addr(&h.src, &src, fam) && same_addr(&h.dst, &dst, fam));
		check_prefixes(out, (size_t)n);
	}

	/* v2, without and with a CRC32C */
	for (int flags = 0; flags <= PP_ENC_CRC32C; flags += PP_ENC_CRC32C) {
		ssize_t n = pp_encode_v2_ex(out, sizeof(out), cmd, (struct sockaddr *)&src,
		    (struct sockaddr *)&dst, tlv, tlv_len, flags);
		CHECK(n > 0);
		CHECK(pp_parse(out, (size_t)n, &h) == n);
		CHECK(h.version == 2 && h.command == cmd);
		if (cmd == PP_CMD_PROXY) {
			CHECK(h.family == fam);
			CHECK(same_addr(&h.src, &src, fam) && same_addr(&h.dst, &dst, fam));
		} else {
			CHECK(h.family == AF_UNSPEC);
		}
		check_tlvs(&h, tlv, tlv_len, flags != 0);
		check_prefixes(out, (size_t)n);
		if (flags && cmd == PP_CMD_PROXY) {
			/*
			 * Flips that keep the framing: the version/command byte, the address block,
			 * the checksum itself. (A flip in a TLV's type or length, or in the family,
			 * changes what the bytes mean, and can hide the CRC32C TLV inside another.)
			 */
			static const size_t ablock[4] = { 12, 36, 216, 12 };
			const uint8_t *crc;
			size_t crc_len;
			CHECK(pp_tlv_find(&h, PP2_TYPE_CRC32C, &crc, &crc_len) == 0 && crc_len == 4);
			size_t crc_at = (size_t)(crc - out);
			for (size_t bit = 12 * 8; bit < (size_t)n * 8; bit++) {
				size_t byte = bit / 8;
				bool addr = byte >= 16 && byte < 16 + ablock[ctl & 3];
				if (!(byte == 12 || (addr && bit % 8 == byte % 8) ||	/* one bit per address byte */
				    (byte >= crc_at && byte < crc_at + 4)))
					continue;
				out[byte] ^= (uint8_t)(1u << (bit % 8));
				CHECK(pp_parse(out, (size_t)n, NULL) == PP_INVALID);
				out[byte] ^= (uint8_t)(1u << (bit % 8));
			}
		}
	}
	return 0;
}
