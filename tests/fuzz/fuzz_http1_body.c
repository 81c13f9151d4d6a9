/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_http1_body.c: libFuzzer target for relay/http1_body.c, body framing (chunked and
 * Content-Length), fed in pieces whose split points the input chooses.
 *
 * Input: byte 0 picks the framing (chunked, or a Content-Length from bytes 1..2), byte 3 the
 * number of split points, the next bytes the points; the rest is the body stream. The stream
 * is fed whole, one byte at a time, and cut at the chosen points, each piece in its own
 * exact-size allocation (ASan sees any read past a piece). Invariants (abort() on failure):
 * the framing decision -- done, the bytes that belong to the body, or an error -- is the
 * same however the stream is split; a call never takes more than it was given, takes all of
 * it until the end, errors are sticky, and nothing is taken once done. For chunked bodies a
 * simple decoder here checks that an accepted body holds what its chunk sizes say.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXCUTS 16

struct verdict {
	ssize_t taken;		/* bytes of the body, or -1 on a framing error */
	bool done;
};

/* Feeds body[0..n) cut before each of cuts[0..ncuts) (ascending offsets). */
static struct verdict
feed_cut(enum http1_body_kind kind, uint64_t cl, const uint8_t *body, size_t n,
    const size_t *cuts, size_t ncuts)
{
	struct verdict v = { 0, false };
	struct http1_body b;
	size_t off = 0;

	http1_body_init(&b, kind, cl);
	for (size_t i = 0; i <= ncuts && !b.done; i++) {
		size_t end = i < ncuts ? cuts[i] : n;
		if (end < off)
			continue;
		size_t len = end - off;
		char *p = malloc(len ? len : 1);
		CHECK(p != NULL);
		if (len)
			memcpy(p, body + off, len);
		ssize_t rc = http1_body_feed(&b, p, len);
		free(p);
		if (rc == -1) {
			CHECK(b.error != NULL && !b.done);
			CHECK(http1_body_feed(&b, "0\r\n\r\n", 5) == -1);
			v.taken = -1;
			return v;
		}
		CHECK(rc >= 0 && (size_t)rc <= len);
		CHECK(b.done || (size_t)rc == len);
		v.taken += rc;
		off += (size_t)rc;
	}
	if (b.done)
		CHECK(http1_body_feed(&b, "1\r\nx\r\n", 6) == 0 && b.done);
	if (kind == HTTP1_BODY_LENGTH)
		CHECK((uint64_t)v.taken <= cl && b.done == ((uint64_t)v.taken == cl));
	v.done = b.done;
	return v;
}

static int
hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Walks a chunked body the framer accepted as complete (body[0..n)): each size line starts
 * with hex digits and ends with CRLF, its data is followed by CRLF, and a size 0 comes last,
 * with the end of the trailers at n. False when the framer's "done" disagrees.
 */
static bool
chunked_consistent(const uint8_t *p, size_t n)
{
	size_t i = 0;

	for (;;) {
		uint64_t sz = 0;
		size_t digits = 0;
		while (i < n && hexval(p[i]) >= 0) {
			if (sz > (UINT64_MAX >> 4))
				return false;
			sz = sz << 4 | (uint64_t)hexval(p[i]);
			i++;
			digits++;
		}
		if (digits == 0)
			return false;
		while (i < n && p[i] != '\n')	/* BWS, extensions, CR */
			i++;
		if (i >= n || p[i - 1] != '\r')
			return false;
		i++;
		if (sz == 0)
			break;
		if (sz > n - i || n - i - sz < 2)
			return false;
		i += (size_t)sz;
		if (p[i] != '\r' || p[i + 1] != '\n')
			return false;
		i += 2;
	}
	/* trailer lines, then CRLF at the very end */
	for (;;) {
		if (n - i >= 2 && p[i] == '\r' && p[i + 1] == '\n')
			return i + 2 == n;
		const uint8_t *lf = memchr(p + i, '\n', n - i);
		if (lf == NULL || lf == p + i || lf[-1] != '\r')
			return false;
		i = (size_t)(lf - p) + 1;
	}
}

static int
cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t cuts[MAXCUTS];

	if (size < 4)
		return 0;
	enum http1_body_kind kind = (data[0] & 1) ? HTTP1_BODY_LENGTH : HTTP1_BODY_CHUNKED;
	uint64_t cl = (uint64_t)data[1] << 8 | data[2];
	if (data[0] & 2)
		cl <<= 20;	/* large lengths too */
	size_t ncuts = (size_t)(data[3] % (MAXCUTS + 1));
	const uint8_t *p = data + 4;
	size_t n = size - 4;
	if (ncuts > n / 2)
		ncuts = n / 2;
	for (size_t i = 0; i < ncuts; i++)
		cuts[i] = p[2 * i];
	p += 2 * ncuts;
	n -= 2 * ncuts;
	for (size_t i = 0; i < ncuts; i++)
		cuts[i] = n ? cuts[i] % (n + 1) : 0;
	if (ncuts > 1)
		qsort(cuts, ncuts, sizeof(cuts[0]), cmp_size);

	struct verdict whole = feed_cut(kind, cl, p, n, NULL, 0);
	struct verdict split = feed_cut(kind, cl, p, n, cuts, ncuts);
	CHECK(split.taken == whole.taken && split.done == whole.done);

	/* one byte at a time (bounded, to keep the target fast) */
	if (n <= 2048) {
		struct http1_body b;
		ssize_t taken = 0;
		bool err = false;
		http1_body_init(&b, kind, cl);
		for (size_t i = 0; i < n && !b.done; i++) {
			ssize_t rc = http1_body_feed(&b, (const char *)p + i, 1);
			if (rc == -1) {
				err = true;
				break;
			}
			taken += rc;
		}
		CHECK(err ? whole.taken == -1 : (taken == whole.taken && b.done == whole.done));
	}

	if (kind == HTTP1_BODY_CHUNKED && whole.done)
		CHECK(chunked_consistent(p, (size_t)whole.taken));
	return 0;
}
