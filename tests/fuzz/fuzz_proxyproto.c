/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_proxyproto.c: libFuzzer target for libproxyproto. Besides "no crash, no
 * over-read", it checks the parser's contract on every input: a valid header
 * keeps its length and fields when cut anywhere after it, every shorter prefix
 * needs more, a refused prefix is never accepted later, TLV lookups stay in the
 * block, and a parsed header re-encodes to something that parses the same.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "proxyproto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Aborts when a contract check fails (libFuzzer then reports a crash). */
static void
check(int cond)
{
	if (!cond)
		abort();
}

/* Checks every prefix against the full result (up to a bound, to stay fast). */
static void
check_prefixes(const uint8_t *data, size_t size, ssize_t full)
{
	size_t k, lim = size < 512 ? size : 512;
	int refused = 0;
	ssize_t r;

	for (k = 0; k < lim; k++) {
		r = pp_parse(data, k, NULL);
		if (full > 0) {
			check(r == (k < (size_t)full ? PP_NEED_MORE : full));
		} else {
			check(r == PP_NEED_MORE || r == PP_INVALID);
			if (refused)
				check(r == PP_INVALID);
			if (r == PP_INVALID)
				refused = 1;
		}
	}
	if (refused)
		check(full == PP_INVALID);
}

/* Looks up every TLV type and checks the slices stay inside the TLV block. */
static void
check_tlvs(const struct pp_header *h)
{
	const uint8_t *v;
	size_t l;
	int t;

	for (t = 0; t < 256; t++) {
		if (pp_tlv_find(h, (uint8_t)t, &v, &l) == 0)
			check(v >= h->tlv && v + l <= h->tlv + h->tlv_len);
	}
	(void)pp_client_used_tls(h);
}

/* Re-encodes a parsed header and checks it parses to the same addresses. */
static void
check_reencode(const struct pp_header *h)
{
	static uint8_t out[PP_V2_MAX_LEN + 16];
	struct pp_header h2;
	ssize_t n;

	if (h->family == AF_INET || h->family == AF_INET6) {
		n = pp_encode_v1(out, sizeof(out), (const struct sockaddr *)&h->src,
		    (const struct sockaddr *)&h->dst);
		check(n > 0);
		check(pp_parse(out, (size_t)n, &h2) == n);
		check(h2.family == h->family);
	}
	if (h->version == 2) {
		int proxy = h->command == PP_CMD_PROXY && h->family != AF_UNSPEC;
		const uint8_t *tlv = h->tlv;
		size_t tlv_len = h->tlv_len;

		n = pp_encode_v2_ex(out, sizeof(out), proxy ? PP_CMD_PROXY : PP_CMD_LOCAL,
		    (const struct sockaddr *)&h->src, (const struct sockaddr *)&h->dst,
		    tlv, tlv_len, PP_ENC_CRC32C);
		/* Refused only when the TLVs hold a CRC32C or would overflow len. */
		if (n > 0) {
			check(pp_parse(out, (size_t)n, &h2) == n);
			check(h2.family == (proxy ? h->family : AF_UNSPEC));
			if (proxy && h->family != AF_UNIX)
				check(memcmp(&h2.src, &h->src, sizeof(h->src)) == 0 &&
				    memcmp(&h2.dst, &h->dst, sizeof(h->dst)) == 0);
		}
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pp_header h;
	const char *why = NULL;
	ssize_t r;

	r = pp_parse_ex(data, size, &h, &why);
	check(why != NULL);
	check(r == PP_NEED_MORE || r == PP_INVALID || (r > 0 && (size_t)r <= size));
	check(r != PP_NEED_MORE || size < PP_V2_MAX_LEN);
	check_prefixes(data, size, r);
	if (r > 0) {
		check(h.version == 1 || h.version == 2);
		check(h.tlv == NULL || (h.tlv >= data && h.tlv + h.tlv_len <= data + r));
		check_tlvs(&h);
		check_reencode(&h);
	}
	return 0;
}
