/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1_resp.c: HTTP/1.x response heads from a backend (RFC 9112 4): the status line and
 * the framing decision of RFC 9112 6.3 (HEAD/1xx/204/304/CONNECT, Transfer-Encoding,
 * Content-Length, else delimited by close). Field lines are parsed by http1_field.c.
 * Pure: no allocation, no copies; every read is bounded by the length the caller gave.
 */
#include "autoconf.h"

#include <string.h>

#include "http1_int.h"

/* Sets the error of a response; returns HTTP1_ERROR. */
static ssize_t
http1_resp_fail(struct http1_response *resp, const char *error)
{
	resp->error = error;
	return HTTP1_ERROR;
}

/* Sets f->error for a refused status line; returns P_BAD. */
static int
http1_resp_line_fail(struct http1_fail *f, const char *error)
{
	f->error = error;
	return P_BAD;
}

/*
 * Parses "HTTP/1.x SP ddd" at buf[*pos]: the version into resp->minor, the status code into
 * resp->status. Returns P_OK (*pos at the byte after the code), P_NEED, or P_BAD with *f.
 */
static int
http1_resp_version_status(const char *buf, size_t cap, size_t *pos, struct http1_response *resp,
    struct http1_fail *f)
{
	static const char proto[] = "HTTP/1.";
	size_t i = *pos, k;

	for (k = 0; k < 7; k++, i++) {
		if (i == cap)
			return P_NEED;
		if (buf[i] != proto[k])
			return http1_resp_line_fail(f, "bad status line");
	}
	if (i == cap)
		return P_NEED;
	if (buf[i] != '0' && buf[i] != '1')
		return http1_resp_line_fail(f, "unsupported HTTP version");
	resp->minor = buf[i++] - '0';
	if (i == cap)
		return P_NEED;
	if (buf[i++] != ' ')
		return http1_resp_line_fail(f, "bad status line");
	for (k = 0; k < 3; k++, i++) {
		if (i == cap)
			return P_NEED;
		if (!IS(buf[i], C_D) || (k == 0 && buf[i] == '0'))
			return http1_resp_line_fail(f, "bad status code");
		resp->status = resp->status * 10 + (buf[i] - '0');
	}
	*pos = i;
	return P_OK;
}

/*
 * Parses the status line at buf[*pos] into msg (a struct http1_response). Returns P_OK
 * (*pos past its CRLF), P_NEED, or P_BAD with f->error.
 */
static int
http1_resp_status_line(const char *buf, size_t cap, size_t *pos, void *msg, struct http1_fail *f)
{
	struct http1_response *resp = msg;
	size_t i = *pos, s;
	int rc;

	if ((rc = http1_resp_version_status(buf, cap, &i, resp, f)) != P_OK)
		return rc;
	if (i == cap)
		return P_NEED;
	if (buf[i] == ' ') {
		for (s = ++i; i < cap && http1_is_fvchar((unsigned char)buf[i]); i++)
			;
		if (i == cap)
			return P_NEED;
		resp->reason = http1_mkslice(buf + s, i - s);
	} else {
		resp->reason = http1_mkslice(buf + i, 0);
	}
	if ((rc = http1_field_crlf(buf, cap, &i, &f->error)) != P_OK)
		return rc;
	*pos = i;
	return P_OK;
}

/* The body kind of a response with status st to a request with method m (RFC 9112 6.3). */
static enum http1_body_kind
http1_resp_kind(int st, struct http1_slice m, const struct http1_fields *f)
{
	if (st == 101)
		return HTTP1_BODY_TUNNEL;
	if ((st >= 100 && st < 200) || st == 204 || st == 304 || http1_slice_is(m, "HEAD"))
		return HTTP1_BODY_NONE;
	if (http1_slice_is(m, "CONNECT") && st >= 200 && st < 300)
		return HTTP1_BODY_TUNNEL;
	if (f->te_seen)
		return f->te_last_chunked ? HTTP1_BODY_CHUNKED : HTTP1_BODY_CLOSE;
	if (f->cl_seen)
		return HTTP1_BODY_LENGTH;
	return HTTP1_BODY_CLOSE;
}

/* Decides the framing of a parsed response head (RFC 9112 6.3). */
static ssize_t
http1_resp_semantics(struct http1_response *resp, struct http1_slice req_method)
{
	struct http1_fields f;

	http1_field_scan(resp->headers, resp->nheaders, &f);
	if (f.cl_bad)
		return http1_resp_fail(resp, "invalid Content-Length");
	if (f.cl_seen && f.te_seen)
		return http1_resp_fail(resp, "Content-Length with Transfer-Encoding");
	if (f.te_seen && f.te_codings == 0)
		return http1_resp_fail(resp, "empty Transfer-Encoding");
	if (f.te_chunked > 1)
		return http1_resp_fail(resp, "chunked applied more than once");
	resp->keep_alive = resp->minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
	resp->body = http1_resp_kind(resp->status, req_method, &f);
	resp->has_content_length = f.cl_seen;
	if (f.cl_seen)
		resp->content_length = f.cl;	/* also for HEAD/304: rewrite_response writes it once */
	/* RFC 9112 6.1: TE in an HTTP/1.0 message means faulty framing: close after it. */
	if (resp->body == HTTP1_BODY_CLOSE || resp->body == HTTP1_BODY_TUNNEL ||
	    (f.te_seen && resp->minor == 0))
		resp->keep_alive = false;
	return (ssize_t)resp->head_len;
}

ssize_t
http1_resp_parse(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_slice req_method, struct http1_response *resp)
{
	static const struct http1_start_line line = {
		http1_resp_status_line, "status line too long", "response head too large"
	};
	struct http1_header *headers = resp->headers;
	struct http1_fail f;
	ssize_t n;

	memset(resp, 0, sizeof(*resp));
	resp->headers = headers;
	n = http1_field_head(buf, len, lim, &line, resp, headers, &resp->nheaders, &resp->head_len,
	    &f);
	if (n > 0)
		return http1_resp_semantics(resp, req_method);
	return n == HTTP1_ERROR ? http1_resp_fail(resp, f.error) : n;
}
