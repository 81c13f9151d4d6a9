/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1_int.h: private to http1*.c (never included elsewhere): character classes, slice
 * helpers, the sub-parsers' result codes, and the field-line parser that request heads
 * (http1.c) and response heads (http1_resp.c) share (http1_field.c).
 */
#ifndef EXRELAY_HTTP1_INT_H
#define EXRELAY_HTTP1_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "http1.h"

/* Internal results of the sub-parsers. */
#define P_OK		0
#define P_NEED		(-2)	/* ran out of bytes: a valid prefix so far */
#define P_BAD		(-1)	/* malformed: the error says why */
#define P_TOOMANY	(-3)	/* more than max_headers fields */

#define HTTP1_INT63_MAX	UINT64_C(0x7fffffffffffffff)

/* Character classes of http1_ctab: T tchar (RFC 9110 5.6.2), H HEXDIG, R reg-name byte
 * (RFC 3986 unreserved / sub-delims, without ',' so a Host list is refused), D DIGIT. */
#define C_T	1
#define C_H	2
#define C_R	4
#define C_D	8
extern const unsigned char http1_ctab[256];

#define IS(c, cls)	((http1_ctab[(unsigned char)(c)] & (cls)) != 0)

/* True for a visible ASCII byte (VCHAR, 0x21-0x7e): request-target and version bytes. */
static inline bool
http1_is_vchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/* True for a byte allowed inside a field value or reason phrase: HTAB, SP, VCHAR, obs-text. */
static inline bool
http1_is_fvchar(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* True for optional whitespace (SP or HTAB). */
static inline bool
http1_is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* A slice of len bytes at p. */
static inline struct http1_slice
http1_mkslice(const char *p, size_t len)
{
	struct http1_slice s = { p, len };

	return s;
}

/* For X-macro tables: X(n) gives the name "n"; HTTP1_NAME_OF looks value v up in table t. */
#define HTTP1_NAME(n)	#n,
#define HTTP1_NAME_OF(t, v, unknown) \
	((size_t)(v) < sizeof(t) / sizeof((t)[0]) ? (t)[(size_t)(v)] : (unknown))

/* Case-sensitive: is the slice exactly the string s (methods are case-sensitive)? */
bool http1_slice_is(struct http1_slice v, const char *s);

/* Case-insensitive: is p[0..n) exactly the string s? */
bool http1_ci_is(const char *p, size_t n, const char *s);

/*
 * Next element of a comma-separated list: *pos advances past it and its comma; *el is the
 * element with OWS trimmed (possibly empty). False when the list is exhausted.
 */
bool http1_list_next(struct http1_slice v, size_t *pos, struct http1_slice *el);

/* What the framing-relevant fields of a head said (http1_field_scan). */
struct http1_fields {
	unsigned hosts;			/* Host field lines */
	struct http1_slice host;	/* the first Host value */
	bool cl_seen, cl_bad;
	uint64_t cl;
	bool te_seen;			/* a Transfer-Encoding field line */
	unsigned te_codings;		/* non-empty codings over all TE lines */
	unsigned te_chunked;		/* how many of them are "chunked" */
	bool te_last_chunked;		/* the final coding is "chunked" */
	bool conn_close, conn_keep_alive, conn_upgrade;
	bool expect_continue;
	bool upgrade_field;
	bool upgrade_refused;		/* an Upgrade field lists a protocol not in HTTP1_UPGRADE_PROTOCOLS */
};

/* Collects the framing and connection facts of n header fields into f. */
void http1_field_scan(const struct http1_header *h, size_t n, struct http1_fields *f);

/* Expects CRLF at buf[*pos]. Returns P_OK (*pos past it), P_NEED, or P_BAD with *err. */
int http1_field_crlf(const char *buf, size_t cap, size_t *pos, const char **err);

/* Why a head was refused: the status a request gets (responses ignore it) and a reason. */
struct http1_fail {
	int status;
	const char *error;
};

/*
 * A start-line parser for http1_field_head: parses the line at buf[*pos] into msg (a request
 * or a response). Returns P_OK (*pos past its CRLF), P_NEED, or P_BAD with *f set.
 */
struct http1_start_line {
	int (*parse)(const char *buf, size_t cap, size_t *pos, void *msg, struct http1_fail *f);
	const char *line_too_long;	/* the error when the limit falls inside the start line */
	const char *head_too_large;	/* ... inside the field lines */
};

/*
 * Parses a head at the start of buf[0..len): the start line with sl, then the field lines
 * into h[0..lim->max_headers) (*nh set). Returns the head length (> 0, also in *head_len),
 * HTTP1_NEED_MORE while buf is a valid prefix shorter than lim->max_head_size, or HTTP1_ERROR
 * with *f: the start line's own failure, 414 / 431 (limit reached in the start line / the
 * fields), 431 more than max_headers fields, 400 a malformed field line.
 */
ssize_t http1_field_head(const char *buf, size_t len, const struct http1_limits *lim,
    const struct http1_start_line *sl, void *msg, struct http1_header *h, size_t *nh,
    size_t *head_len, struct http1_fail *f);

#endif
