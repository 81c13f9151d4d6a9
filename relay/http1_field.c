/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1_field.c: the field section of HTTP/1.x heads (RFC 9112 5), shared by request heads
 * (http1.c) and response heads (http1_resp.c): field-line syntax, the head driver that runs
 * a start-line parser then the field lines under the size and count limits, and the scan of
 * the fields that decide framing (Content-Length, Transfer-Encoding, Connection, Host).
 * Pure: no allocation, no copies; every read is bounded by the length the caller gave.
 */
#include "autoconf.h"

#include <string.h>

#include "http1_int.h"

/*
 * Parses one Content-Length field value: a list of decimal values that must all equal each
 * other and *cl if *seen. Digits only, at most 2^63-1. Returns 0, or -1 when invalid.
 */
static int
http1_field_content_length(struct http1_slice v, bool *seen, uint64_t *cl)
{
	struct http1_slice el;
	size_t pos = 0, i;
	uint64_t x;

	if (v.len == 0)
		return -1;
	while (http1_list_next(v, &pos, &el)) {
		if (el.len == 0)
			return -1;
		x = 0;
		for (i = 0; i < el.len; i++) {
			unsigned d = (unsigned char)el.p[i] - '0';

			if (d > 9 || x > (HTTP1_INT63_MAX - d) / 10)
				return -1;
			x = x * 10 + d;
		}
		if (*seen && x != *cl)
			return -1;
		*seen = true;
		*cl = x;
	}
	return 0;
}

/* Adds the codings of one Transfer-Encoding value to f (list order = coding order). */
static void
http1_field_scan_te(struct http1_slice v, struct http1_fields *f)
{
	struct http1_slice el;
	size_t pos = 0;

	f->te_seen = true;
	while (http1_list_next(v, &pos, &el)) {
		if (el.len == 0)
			continue;
		f->te_codings++;
		f->te_last_chunked = http1_ci_is(el.p, el.len, "chunked");
		if (f->te_last_chunked)
			f->te_chunked++;
	}
}

/* Adds one field (name np[0..nl), value v) to the facts in f. */
static void
http1_field_scan_one(const char *np, size_t nl, struct http1_slice v, struct http1_fields *f)
{
	if (http1_ci_is(np, nl, "host")) {
		if (f->hosts++ == 0)
			f->host = v;
	} else if (http1_ci_is(np, nl, "content-length")) {
		if (http1_field_content_length(v, &f->cl_seen, &f->cl) != 0)
			f->cl_bad = true;
	} else if (http1_ci_is(np, nl, "transfer-encoding")) {
		http1_field_scan_te(v, f);
	} else if (http1_ci_is(np, nl, "connection")) {
		f->conn_close |= http1_list_has(v, "close");
		f->conn_keep_alive |= http1_list_has(v, "keep-alive");
		f->conn_upgrade |= http1_list_has(v, "upgrade");
	} else if (http1_ci_is(np, nl, "expect")) {
		f->expect_continue |= http1_ci_is(v.p, v.len, "100-continue");
	} else if (http1_ci_is(np, nl, "upgrade")) {
		static const char *const allowed[] = HTTP1_UPGRADE_PROTOCOLS;

		f->upgrade_field = true;
		if (!http1_upgrade_allowed(v, allowed, sizeof(allowed) / sizeof(allowed[0])))
			f->upgrade_refused = true;
	}
}

void
http1_field_scan(const struct http1_header *h, size_t n, struct http1_fields *f)
{
	size_t i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < n; i++)
		http1_field_scan_one(h[i].name.p, h[i].name.len, h[i].value, f);
}

int
http1_field_crlf(const char *buf, size_t cap, size_t *pos, const char **err)
{
	size_t i = *pos;

	if (i == cap)
		return P_NEED;
	if (buf[i] != '\r') {
		*err = buf[i] == '\n' ? "bare LF" : "unexpected byte where CRLF was due";
		return P_BAD;
	}
	if (i + 1 == cap)
		return P_NEED;
	if (buf[i + 1] != '\n') {
		*err = "bare CR";
		return P_BAD;
	}
	*pos = i + 2;
	return P_OK;
}

/*
 * Parses one field line at buf[*pos] (its first byte is neither CR, LF nor OWS) into *h.
 * Returns P_OK (*pos past its CRLF), P_NEED, or P_BAD with *err.
 */
static int
http1_field_line(const char *buf, size_t cap, size_t *pos, struct http1_header *h,
    const char **err)
{
	size_t i = *pos, ns, vs, ve;
	int rc;

	for (ns = i; i < cap && IS(buf[i], C_T); i++)
		;
	if (i == cap)
		return P_NEED;
	if (buf[i] != ':' || i == ns) {
		*err = http1_is_ows(buf[i]) ? "whitespace before ':'" : "bad field name";
		return P_BAD;
	}
	h->name = http1_mkslice(buf + ns, i - ns);
	for (i++; i < cap && http1_is_ows(buf[i]); i++)
		;
	for (vs = i; i < cap && http1_is_fvchar((unsigned char)buf[i]); i++)
		;
	if (i == cap)
		return P_NEED;
	if (buf[i] != '\r') {
		*err = buf[i] == '\n' ? "bare LF" : "control character in a field value";
		return P_BAD;
	}
	for (ve = i; ve > vs && http1_is_ows(buf[ve - 1]); ve--)
		;
	h->value = http1_mkslice(buf + vs, ve - vs);
	if ((rc = http1_field_crlf(buf, cap, &i, err)) != P_OK)
		return rc;
	*pos = i;
	return P_OK;
}

/*
 * Parses field lines from buf[*pos] up to and including the empty line that ends the head.
 * Returns P_OK (*pos = head length, *np = fields), P_NEED, P_BAD (*err) or P_TOOMANY.
 */
static int
http1_field_lines(const char *buf, size_t cap, size_t *pos, struct http1_header *h, size_t max,
    size_t *np, const char **err)
{
	size_t n = 0;
	int rc;

	for (;;) {
		if (*pos == cap)
			return P_NEED;
		if (buf[*pos] == '\r' || buf[*pos] == '\n') {
			if ((rc = http1_field_crlf(buf, cap, pos, err)) != P_OK)
				return rc;
			*np = n;
			return P_OK;
		}
		if (http1_is_ows(buf[*pos])) {
			*err = "obs-fold or whitespace before a field name";
			return P_BAD;
		}
		if (n == max)
			return P_TOOMANY;
		if ((rc = http1_field_line(buf, cap, pos, &h[n], err)) != P_OK)
			return rc;
		n++;
	}
}

/* Sets *f; returns HTTP1_ERROR. */
static ssize_t
http1_field_fail(struct http1_fail *f, int status, const char *error)
{
	f->status = status;
	f->error = error;
	return HTTP1_ERROR;
}

ssize_t
http1_field_head(const char *buf, size_t len, const struct http1_limits *lim,
    const struct http1_start_line *sl, void *msg, struct http1_header *h, size_t *nh,
    size_t *head_len, struct http1_fail *f)
{
	size_t cap = len < lim->max_head_size ? len : lim->max_head_size;
	size_t pos = 0;
	bool in_line = true;
	int rc;

	f->status = 400;
	f->error = NULL;
	rc = sl->parse(buf, cap, &pos, msg, f);
	if (rc == P_OK) {
		in_line = false;
		rc = http1_field_lines(buf, cap, &pos, h, lim->max_headers, nh, &f->error);
	}
	switch (rc) {
	case P_OK:
		*head_len = pos;
		return (ssize_t)pos;
	case P_NEED:
		if (len < lim->max_head_size)
			return HTTP1_NEED_MORE;
		return in_line ? http1_field_fail(f, 414, sl->line_too_long) :
		    http1_field_fail(f, 431, sl->head_too_large);
	case P_TOOMANY:
		return http1_field_fail(f, 431, "too many header fields");
	default:
		return HTTP1_ERROR;
	}
}
