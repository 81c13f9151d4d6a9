/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1_body.c: HTTP/1.x body framing (RFC 9112 6 and 7): Content-Length counting and the
 * incremental chunked-body state machine (chunk sizes, extensions, data, trailer section),
 * fed with whatever bytes arrived. Says how many bytes belong to the body and when it ended,
 * so bytes are forwarded as-is (chunked bodies are passed through, never re-encoded).
 * Pure: no allocation, never stores pointers into the caller's buffer.
 */
#include "autoconf.h"

#include <string.h>

#include "check.h"
#include "http1_int.h"

#define CHUNK_EXT_MAX	4096u		/* bytes of BWS + chunk-ext on one size line */
#define TRAILER_MAX	16384u		/* bytes of the whole trailer section */

static const char *const http1_chunk_state_names[] = { HTTP1_CHUNK_STATES(HTTP1_NAME) };

const char *
http1_chunk_state_str(enum http1_chunk_state s)
{
	return HTTP1_NAME_OF(http1_chunk_state_names, s, "CS_?");
}

void
http1_body_init(struct http1_body *b, enum http1_body_kind kind, uint64_t content_length)
{
	memset(b, 0, sizeof(*b));
	b->kind = kind;
	b->state = HTTP1_CS_SIZE_FIRST;
	if (kind == HTTP1_BODY_LENGTH)
		b->remaining = content_length;
	b->done = kind == HTTP1_BODY_NONE || (kind == HTTP1_BODY_LENGTH && content_length == 0);
}

/* Records a chunked framing error; returns -1. */
static int
http1_body_fail(struct http1_body *b, const char *error)
{
	b->state = HTTP1_CS_ERROR;
	b->error = error;
	return -1;
}

/* Value of a hex digit (the caller checked C_H). */
static unsigned
http1_body_hexval(unsigned char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* CS_SIZE_FIRST, CS_SIZE: one byte of a chunk-size and what ends it. Returns 0 or -1. */
static int
http1_body_size_byte(struct http1_body *b, unsigned char c)
{
	if (b->state == HTTP1_CS_SIZE_FIRST) {
		if (!IS(c, C_H))
			return http1_body_fail(b, "bad chunk size");
		b->remaining = http1_body_hexval(c);
		b->ext_len = 1;
		b->state = HTTP1_CS_SIZE;
		return 0;
	}
	if (IS(c, C_H)) {
		if (++b->ext_len > 16 || b->remaining > (HTTP1_INT63_MAX >> 4))
			return http1_body_fail(b, "chunk size overflow");
		b->remaining = (b->remaining << 4) | http1_body_hexval(c);
		return 0;
	}
	b->ext_len = 0;
	if (c == '\r')
		b->state = HTTP1_CS_SIZE_LF;
	else if (c == ';')
		b->state = HTTP1_CS_EXT;
	else if (http1_is_ows((char)c))
		b->state = HTTP1_CS_SIZE_BWS;
	else
		return http1_body_fail(b, c == '\n' ? "bare LF in chunk size line" : "bad chunk size");
	return 0;
}

/* CS_SIZE_BWS, CS_EXT: one byte of BWS or chunk-ext after the size. Returns 0 or -1. */
static int
http1_body_ext_byte(struct http1_body *b, unsigned char c)
{
	if (++b->ext_len > CHUNK_EXT_MAX)
		return http1_body_fail(b, "chunk extension too long");
	if (b->state == HTTP1_CS_SIZE_BWS) {
		if (c == ';')
			b->state = HTTP1_CS_EXT;
		else if (!http1_is_ows((char)c))
			return http1_body_fail(b, "bad chunk size line");
	} else if (c == '\r') {
		b->state = HTTP1_CS_SIZE_LF;
	} else if (!http1_is_fvchar(c)) {
		return http1_body_fail(b, c == '\n' ? "bare LF in chunk extension" :
		    "control character in chunk extension");
	}
	return 0;
}

/* CS_SIZE_LF, CS_DATA_CR, CS_DATA_LF: the CRLF ending a size line or chunk data. */
static int
http1_body_crlf_byte(struct http1_body *b, unsigned char c)
{
	if (b->state == HTTP1_CS_SIZE_LF) {
		if (c != '\n')
			return http1_body_fail(b, "bare CR in chunk size line");
		b->state = b->remaining ? HTTP1_CS_DATA : HTTP1_CS_TRAILER;
		return 0;
	}
	if (b->state == HTTP1_CS_DATA_CR) {
		if (c != '\r')
			return http1_body_fail(b, "missing CRLF after chunk data");
		b->state = HTTP1_CS_DATA_LF;
		return 0;
	}
	if (c != '\n')	/* HTTP1_CS_DATA_LF */
		return http1_body_fail(b, "missing CRLF after chunk data");
	b->state = HTTP1_CS_SIZE_FIRST;
	return 0;
}

/* CS_TR_LF, CS_END_LF: the LF ending a trailer field line, or the whole body. */
static int
http1_body_trailer_lf(struct http1_body *b, unsigned char c)
{
	if (c != '\n')
		return http1_body_fail(b, "bare CR in trailer section");
	if (b->state == HTTP1_CS_END_LF)
		b->done = true;
	b->state = HTTP1_CS_TRAILER;
	return 0;
}

/* The trailer section states: one byte of a trailer field line or the final CRLF. */
static int
http1_body_trailer_byte(struct http1_body *b, unsigned char c)
{
	if (b->state == HTTP1_CS_TRAILER) {
		if (c == '\r')
			b->state = HTTP1_CS_END_LF;
		else if (IS(c, C_T))
			b->state = HTTP1_CS_TR_NAME;
		else
			return http1_body_fail(b, "bad trailer field");
		return 0;
	}
	if (b->state == HTTP1_CS_TR_NAME) {
		if (c == ':')
			b->state = HTTP1_CS_TR_VALUE;
		else if (!IS(c, C_T))
			return http1_body_fail(b, "bad trailer field name");
		return 0;
	}
	if (b->state == HTTP1_CS_TR_VALUE) {
		if (c == '\r')
			b->state = HTTP1_CS_TR_LF;
		else if (!http1_is_fvchar(c))
			return http1_body_fail(b, "control character in a trailer field");
		return 0;
	}
	return http1_body_trailer_lf(b, c);	/* HTTP1_CS_TR_LF, HTTP1_CS_END_LF */
}

/* Consumes one byte of a chunk-size line, trailer or CRLF; returns 0 or -1 (b->error). */
static int
http1_body_byte(struct http1_body *b, unsigned char c)
{
	switch (b->state) {
	case HTTP1_CS_SIZE_FIRST:
	case HTTP1_CS_SIZE:
		return http1_body_size_byte(b, c);
	case HTTP1_CS_SIZE_BWS:
	case HTTP1_CS_EXT:
		return http1_body_ext_byte(b, c);
	case HTTP1_CS_SIZE_LF:
	case HTTP1_CS_DATA_CR:
	case HTTP1_CS_DATA_LF:
		return http1_body_crlf_byte(b, c);
	case HTTP1_CS_TRAILER:
	case HTTP1_CS_TR_NAME:
	case HTTP1_CS_TR_VALUE:
	case HTTP1_CS_TR_LF:
	case HTTP1_CS_END_LF:
		if (++b->trailer_bytes > TRAILER_MAX)
			return http1_body_fail(b, "trailer section too large");
		return http1_body_trailer_byte(b, c);
	case HTTP1_CS_DATA:
	case HTTP1_CS_ERROR:
		break;
	}
	return http1_body_fail(b, "chunked parser in a bad state");
}

/* Feeds a chunked body; see http1_body_feed. */
static ssize_t
http1_body_chunked(struct http1_body *b, const char *buf, size_t len)
{
	size_t i = 0, n;

	if (b->state == HTTP1_CS_ERROR)
		return -1;
	while (i < len && !b->done) {
		if (b->state == HTTP1_CS_DATA) {
			n = len - i;
			if (b->remaining < n)
				n = (size_t)b->remaining;
			b->remaining -= n;
			i += n;
			if (b->remaining == 0)
				b->state = HTTP1_CS_DATA_CR;
			continue;
		}
		if (http1_body_byte(b, (unsigned char)buf[i]) != 0)
			return -1;
		i++;
	}
	return (ssize_t)i;
}

ssize_t
http1_body_feed(struct http1_body *b, const char *buf, size_t len)
{
	size_t n;

	if (b->done)
		return 0;
	switch (b->kind) {
	case HTTP1_BODY_LENGTH:
		n = len;
		if (b->remaining < n)
			n = (size_t)b->remaining;
		b->remaining -= n;
		b->done = b->remaining == 0;
		return (ssize_t)n;
	case HTTP1_BODY_CHUNKED:
		return http1_body_chunked(b, buf, len);
	case HTTP1_BODY_CLOSE:
	case HTTP1_BODY_TUNNEL:
		return (ssize_t)len;
	case HTTP1_BODY_NONE:
		break;
	}
	b->done = true;
	return 0;
}

uint64_t
http1_body_opaque(const struct http1_body *b)
{
	if (b->done)
		return 0;
	switch (b->kind) {
	case HTTP1_BODY_LENGTH:
		return b->remaining;
	case HTTP1_BODY_CHUNKED:
		return b->state == HTTP1_CS_DATA ? b->remaining : 0;
	case HTTP1_BODY_CLOSE:
	case HTTP1_BODY_TUNNEL:
		return UINT64_MAX;
	case HTTP1_BODY_NONE:
		break;
	}
	return 0;
}

void
http1_body_skip(struct http1_body *b, uint64_t n)
{
	if (n == 0)
		return;
	ASSERT(n <= http1_body_opaque(b));
	if (b->kind == HTTP1_BODY_CLOSE || b->kind == HTTP1_BODY_TUNNEL)
		return;
	b->remaining -= n;
	if (b->remaining > 0)
		return;
	if (b->kind == HTTP1_BODY_LENGTH)
		b->done = true;
	else
		b->state = HTTP1_CS_DATA_CR;
}
