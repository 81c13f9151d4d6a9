/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * proxyproto_v2.c: the PROXY protocol v2 binary header: its parser (called by
 * pp_parse_ex in proxyproto.c), TLV checks and access (pp_tlv_*, pp_client_used_tls)
 * and its encoder (pp_encode_v2*). Pure: no allocation, no logging. How its
 * validation compares with HAProxy's is listed at the top of proxyproto.c.
 */
#include "autoconf.h"

#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "proxyproto.h"
#include "proxyproto_priv.h"

const uint8_t pp_v2_sig[PP_V2_SIG_LEN] = {
	0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A
};

/* Address block length of a v2 address family nibble (0..3). */
static const size_t v2_addr_len[4] = {
	0, PP_V2_ADDR_LEN_INET, PP_V2_ADDR_LEN_INET6, PP_V2_ADDR_LEN_UNIX
};

/* Reads a big-endian 16-bit value. */
static size_t
be16(const uint8_t *p)
{
	return (size_t)p[0] << 8 | p[1];
}

/*
 * Checks a v2 TLV block p[0..n) (the rules are in the file comment of proxyproto.c).
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
				return pp_reject(why, "v2: CRC32C TLV length is not 4");
			if (*crc_pos != SIZE_MAX)
				return pp_reject(why, "v2: more than one CRC32C TLV");
			*crc_pos = (size_t)(v - p);
			break;
		case PP2_TYPE_UNIQUE_ID:
			if (l > PP2_UNIQUE_ID_MAX)
				return pp_reject(why, "v2: UNIQUE_ID TLV over 128 bytes");
			break;
		case PP2_TYPE_SSL:
			if (l < PP2_SSL_FIXED_LEN)
				return pp_reject(why, "v2: SSL TLV shorter than 5 bytes");
			sub.p = v + PP2_SSL_FIXED_LEN;
			sub.left = l - PP2_SSL_FIXED_LEN;
			while ((sr = pp_tlv_next(&sub, &st, &sv, &sl)) == 1)
				;
			if (sr < 0)
				return pp_reject(why, "v2: SSL sub-TLVs do not fill the SSL TLV exactly");
			break;
		default:
			break;
		}
	}
	if (r < 0)
		return pp_reject(why, "v2: TLVs do not end exactly at the header end");
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
ssize_t
pp_v2_parse(const uint8_t *b, size_t len, struct pp_header *h, const char **why)
{
	size_t m = len < sizeof(pp_v2_sig) ? len : sizeof(pp_v2_sig);
	size_t body, total, ablock, tlv_off, crc_pos;
	int cmd, fam, proto;

	if (memcmp(b, pp_v2_sig, m) != 0)
		return pp_fail(why, "no PROXY signature");
	if (len <= 12)
		return pp_need_more(why);
	if ((b[12] >> 4) != 2)
		return pp_fail(why, "v2: version is not 2");
	cmd = b[12] & 0x0f;
	if (cmd != PP_CMD_LOCAL && cmd != PP_CMD_PROXY)
		return pp_fail(why, "v2: command is not LOCAL or PROXY");
	if (len <= 13)
		return pp_need_more(why);
	fam = b[13] >> 4;
	proto = b[13] & 0x0f;
	if (fam > 3)
		return pp_fail(why, "v2: unknown address family");
	if (proto > 2)
		return pp_fail(why, "v2: unknown transport protocol");
	if (len < PP_V2_HDR_LEN)
		return pp_need_more(why);
	body = be16(b + 14);
	total = PP_V2_HDR_LEN + body;
	ablock = v2_addr_len[fam];
	if (cmd == PP_CMD_PROXY && body < ablock)
		return pp_fail(why, "v2: length shorter than the address block");
	if (len < total)
		return pp_need_more(why);

	/* LOCAL with a short body: no TLVs, the bytes are skipped. */
	tlv_off = body >= ablock ? PP_V2_HDR_LEN + ablock : total;
	if (tlv_check(b + tlv_off, total - tlv_off, &crc_pos, why) < 0)
		return PP_INVALID;
	if (crc_pos != SIZE_MAX && !v2_crc_ok(b, total, tlv_off + crc_pos))
		return pp_fail(why, "v2: CRC32C mismatch");

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

		sa = pp_inet_parts(src, &n, &sport);
		da = pp_inet_parts(dst, &n, &dport);
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
	memcpy(o, pp_v2_sig, sizeof(pp_v2_sig));
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
