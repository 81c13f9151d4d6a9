/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1.c: HTTP/1.x request and response head parsers and body framing (RFC 9112).
 *
 * Owns the wire syntax of heads (start line, field lines, limits), the framing decision of
 * RFC 9112 6.3 (Content-Length, Transfer-Encoding, HEAD/1xx/204/304/CONNECT), and the
 * incremental chunked-body state machine. Pure functions: no allocation, no copies, no
 * globals but const tables; every read is bounded by the length the caller gave.
 * Strict by design (this runs on an internet-facing proxy): bare LF, bare CR, obs-fold,
 * whitespace before ':' and ambiguous framing are errors, never guessed at.
 */
#include "autoconf.h"

#include <string.h>

#include "http1.h"

/* Internal results of the sub-parsers. */
#define P_OK		0
#define P_NEED		(-2)	/* ran out of bytes: a valid prefix so far */
#define P_BAD		(-1)	/* malformed: *err says why */
#define P_TOOMANY	(-3)	/* more than max_headers fields */

#define CHUNK_EXT_MAX	4096u		/* bytes of BWS + chunk-ext on one size line */
#define TRAILER_MAX	16384u		/* bytes of the whole trailer section */
#define INT63_MAX	UINT64_C(0x7fffffffffffffff)

/* Character classes: T tchar (RFC 9110 5.6.2), H HEXDIG, R reg-name byte (RFC 3986
 * unreserved / sub-delims, without ',' so a Host list is refused), D DIGIT. */
#define C_T	1
#define C_H	2
#define C_R	4
#define C_D	8
static const unsigned char ctab[256] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,	/* 0x00 */
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,	/* 0x10 */
	0, 5, 0, 1, 5, 1, 5, 5, 4, 4, 5, 5, 0, 5, 5, 0,	/* 0x20 */
	15, 15, 15, 15, 15, 15, 15, 15, 15, 15, 0, 4, 0, 4, 0, 0,	/* 0x30 */
	0, 7, 7, 7, 7, 7, 7, 5, 5, 5, 5, 5, 5, 5, 5, 5,	/* 0x40 */
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 0, 0, 0, 1, 5,	/* 0x50 */
	1, 7, 7, 7, 7, 7, 7, 5, 5, 5, 5, 5, 5, 5, 5, 5,	/* 0x60 */
	5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 0, 1, 0, 5, 0,	/* 0x70 */
	/* 0x80-0xff: none of the classes */
};

#define IS(c, cls)	((ctab[(unsigned char)(c)] & (cls)) != 0)

/* True for a visible ASCII byte (VCHAR, 0x21-0x7e): request-target and version bytes. */
static inline bool
is_vchar(unsigned char c)
{
	return c > 0x20 && c < 0x7f;
}

/* True for a byte allowed inside a field value or reason phrase: HTAB, SP, VCHAR, obs-text. */
static inline bool
is_fvchar(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static inline bool
is_ows(char c)
{
	return c == ' ' || c == '\t';
}

static inline unsigned char
lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* Case-insensitive comparison of n bytes of p with the lower-case ASCII string s. */
static bool
ci_eqn(const char *p, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (s[i] == '\0' || lower((unsigned char)p[i]) != lower((unsigned char)s[i]))
			return false;
	return s[n] == '\0';
}

/* Case-insensitive: does p[0..n) start with s? */
static bool
ci_prefix(const char *p, size_t n, const char *s)
{
	size_t k = strlen(s);

	return n >= k && ci_eqn(p, k, s);
}

static inline struct http1_slice
mkslice(const char *p, size_t len)
{
	struct http1_slice s = { p, len };

	return s;
}

/* Case-sensitive: is the slice exactly the string s (methods are case-sensitive)? */
static bool
slice_is(struct http1_slice v, const char *s)
{
	size_t k = strlen(s);

	return v.len == k && (k == 0 || memcmp(v.p, s, k) == 0);
}

/*
 * Next element of a comma-separated list: *pos advances past it and its comma; *el is the
 * element with OWS trimmed (possibly empty). False when the list is exhausted.
 */
static bool
list_next(struct http1_slice v, size_t *pos, struct http1_slice *el)
{
	size_t i = *pos, s, e;

	if (i > v.len || v.len == 0)
		return false;
	s = i;
	while (i < v.len && v.p[i] != ',')
		i++;
	e = i;
	while (s < e && is_ows(v.p[s]))
		s++;
	while (e > s && is_ows(v.p[e - 1]))
		e--;
	*el = mkslice(v.p + s, e - s);
	*pos = i + 1;		/* past the comma, or len + 1 at the end */
	return true;
}

bool
http1_list_has(struct http1_slice value, const char *token)
{
	struct http1_slice el;
	size_t pos = 0;

	while (list_next(value, &pos, &el))
		if (el.len > 0 && ci_eqn(el.p, el.len, token))
			return true;
	return false;
}

const struct http1_header *
http1_find_header(const struct http1_header *h, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (ci_eqn(h[i].name.p, h[i].name.len, name))
			return &h[i];
	return NULL;
}

const char *
http1_body_kind_str(enum http1_body_kind k)
{
	static const char *const names[] = {
#define X(n) #n,
		HTTP1_BODY_KINDS(X)
#undef X
	};

	if ((size_t)k < sizeof(names) / sizeof(names[0]))
		return names[k];
	return "BODY_?";
}

/*
 * Validates host [":" port] (RFC 3986 reg-name / IPv4 / "[" IPv6 "]"; port 1-5 digits up to
 * 65535). need_port: the port is mandatory (CONNECT). No userinfo, no list, never empty.
 */
static bool
valid_authority(const char *p, size_t n, bool need_port)
{
	size_t i = 0, digits;
	unsigned port = 0;

	if (n == 0)
		return false;
	if (p[0] == '[') {
		for (i = 1; i < n && (IS(p[i], C_H) || p[i] == ':' || p[i] == '.'); i++)
			;
		if (i == 1 || i == n || p[i] != ']')
			return false;
		i++;
	} else {
		while (i < n && p[i] != ':') {
			if (p[i] == '%') {
				if (i + 2 >= n || !IS(p[i + 1], C_H) || !IS(p[i + 2], C_H))
					return false;
				i += 3;
			} else if (IS(p[i], C_R)) {
				i++;
			} else {
				return false;
			}
		}
		if (i == 0)
			return false;
	}
	if (i == n)
		return !need_port;
	if (p[i++] != ':')
		return false;
	for (digits = 0; i < n; i++, digits++) {
		if (!IS(p[i], C_D) || digits == 5)
			return false;
		port = port * 10 + (unsigned)(p[i] - '0');
	}
	return digits > 0 && port <= 65535;
}

/*
 * Parses one Content-Length field value: a list of decimal values that must all equal each
 * other and *cl if *seen. Digits only, at most 2^63-1. Returns 0, or -1 when invalid.
 */
static int
parse_content_length(struct http1_slice v, bool *seen, uint64_t *cl)
{
	struct http1_slice el;
	size_t pos = 0, i;
	uint64_t x;

	if (v.len == 0)
		return -1;
	while (list_next(v, &pos, &el)) {
		if (el.len == 0)
			return -1;
		x = 0;
		for (i = 0; i < el.len; i++) {
			unsigned d = (unsigned char)el.p[i] - '0';

			if (d > 9 || x > (INT63_MAX - d) / 10)
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

/* What the framing-relevant fields of a head said. */
struct fields {
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
};

/* Adds the codings of one Transfer-Encoding value to f (list order = coding order). */
static void
scan_te(struct http1_slice v, struct fields *f)
{
	struct http1_slice el;
	size_t pos = 0;

	f->te_seen = true;
	while (list_next(v, &pos, &el)) {
		if (el.len == 0)
			continue;
		f->te_codings++;
		f->te_last_chunked = ci_eqn(el.p, el.len, "chunked");
		if (f->te_last_chunked)
			f->te_chunked++;
	}
}

/* Collects the framing and connection facts of n header fields into f. */
static void
scan_fields(const struct http1_header *h, size_t n, struct fields *f)
{
	size_t i;

	memset(f, 0, sizeof(*f));
	for (i = 0; i < n; i++) {
		const char *np = h[i].name.p;
		size_t nl = h[i].name.len;
		struct http1_slice v = h[i].value;

		if (ci_eqn(np, nl, "host")) {
			if (f->hosts++ == 0)
				f->host = v;
		} else if (ci_eqn(np, nl, "content-length")) {
			if (parse_content_length(v, &f->cl_seen, &f->cl) != 0)
				f->cl_bad = true;
		} else if (ci_eqn(np, nl, "transfer-encoding")) {
			scan_te(v, f);
		} else if (ci_eqn(np, nl, "connection")) {
			f->conn_close |= http1_list_has(v, "close");
			f->conn_keep_alive |= http1_list_has(v, "keep-alive");
			f->conn_upgrade |= http1_list_has(v, "upgrade");
		} else if (ci_eqn(np, nl, "expect")) {
			f->expect_continue |= ci_eqn(v.p, v.len, "100-continue");
		} else if (ci_eqn(np, nl, "upgrade")) {
			f->upgrade_field = true;
		}
	}
}

/*
 * Skips the empty lines allowed before a request line (RFC 9112 2.2).
 * Returns P_OK (*pos at the first non-empty byte), P_NEED, or P_BAD.
 */
static int
skip_empty_lines(const char *buf, size_t cap, size_t *pos, const char **err)
{
	size_t i = *pos;

	while (i < cap && (buf[i] == '\r' || buf[i] == '\n')) {
		if (buf[i] == '\n') {
			*err = "bare LF";
			return P_BAD;
		}
		if (i + 1 == cap)
			return P_NEED;
		if (buf[i + 1] != '\n') {
			*err = "bare CR";
			return P_BAD;
		}
		i += 2;
	}
	*pos = i;
	return i == cap ? P_NEED : P_OK;
}

/*
 * Expects CRLF at buf[*pos]. Returns P_OK (*pos past it), P_NEED, or P_BAD with *err.
 */
static int
expect_crlf(const char *buf, size_t cap, size_t *pos, const char **err)
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
 * Parses field lines from buf[*pos] up to and including the empty line that ends the head.
 * Returns P_OK (*pos = head length, *np = fields), P_NEED, P_BAD (*err) or P_TOOMANY.
 */
static int
parse_fields(const char *buf, size_t cap, size_t *pos, struct http1_header *h, size_t max,
    size_t *np, const char **err)
{
	size_t i = *pos, n = 0, ns, vs, ve;
	int rc;

	for (;;) {
		if (i == cap)
			return P_NEED;
		if (buf[i] == '\r' || buf[i] == '\n') {
			if ((rc = expect_crlf(buf, cap, &i, err)) != P_OK)
				return rc;
			*pos = i;
			*np = n;
			return P_OK;
		}
		if (is_ows(buf[i])) {
			*err = "obs-fold or whitespace before a field name";
			return P_BAD;
		}
		if (n == max)
			return P_TOOMANY;
		for (ns = i; i < cap && IS(buf[i], C_T); i++)
			;
		if (i == cap)
			return P_NEED;
		if (buf[i] != ':' || i == ns) {
			*err = is_ows(buf[i]) ? "whitespace before ':'" : "bad field name";
			return P_BAD;
		}
		h[n].name = mkslice(buf + ns, i - ns);
		for (i++; i < cap && is_ows(buf[i]); i++)
			;
		for (vs = i; i < cap && is_fvchar((unsigned char)buf[i]); i++)
			;
		if (i == cap)
			return P_NEED;
		if (buf[i] != '\r') {
			*err = buf[i] == '\n' ? "bare LF" : "control character in a field value";
			return P_BAD;
		}
		for (ve = i; ve > vs && is_ows(buf[ve - 1]); ve--)
			;
		h[n].value = mkslice(buf + vs, ve - vs);
		if ((rc = expect_crlf(buf, cap, &i, err)) != P_OK)
			return rc;
		n++;
	}
}

/* Sets the error of a request; returns HTTP1_ERROR. */
static ssize_t
req_fail(struct http1_request *req, int status, const char *error)
{
	req->status = status;
	req->error = error;
	return HTTP1_ERROR;
}

/* Splits p[0..n) at its first '?' into req->path and req->query. */
static void
split_path(struct http1_request *req, const char *p, size_t n)
{
	const char *q = n ? memchr(p, '?', n) : NULL;

	if (q) {
		req->path = mkslice(p, (size_t)(q - p));
		req->query = mkslice(q + 1, n - (size_t)(q - p) - 1);
	} else {
		req->path = mkslice(p, n);
	}
}

/*
 * Classifies and splits req->target (origin, absolute, asterisk or authority form).
 * Returns 0, or -1 with *err.
 */
static int
parse_target(struct http1_request *req, const char **err)
{
	const char *p = req->target.p, *a, *end = req->target.p + req->target.len;
	size_t n = req->target.len, s;

	if (slice_is(req->method, "CONNECT")) {
		req->is_connect = true;
		if (!valid_authority(p, n, true)) {
			*err = "bad CONNECT target";
			return -1;
		}
		req->path = mkslice(end, 0);
		return 0;
	}
	if (p[0] == '/') {
		split_path(req, p, n);
		return 0;
	}
	if (n == 1 && p[0] == '*') {
		if (!slice_is(req->method, "OPTIONS")) {
			*err = "asterisk-form outside OPTIONS";
			return -1;
		}
		req->path = req->target;
		return 0;
	}
	if (ci_prefix(p, n, "http://"))
		s = 7;
	else if (ci_prefix(p, n, "https://"))
		s = 8;
	else {
		*err = "bad request target";
		return -1;
	}
	for (a = p + s; a < end && *a != '/' && *a != '?'; a++)
		;
	req->authority = mkslice(p + s, (size_t)(a - (p + s)));
	if (memchr(req->authority.p, '@', req->authority.len)) {
		*err = "userinfo in absolute-form target";
		return -1;
	}
	if (!valid_authority(req->authority.p, req->authority.len, false)) {
		*err = "bad authority in absolute-form target";
		return -1;
	}
	req->absolute_form = true;
	split_path(req, a, (size_t)(end - a));
	return 0;
}

/*
 * Parses the request line at buf[*pos]. Returns P_OK (past its CRLF), P_NEED, P_BAD with
 * req->status/error set (400 or 505).
 */
static int
parse_request_line(const char *buf, size_t cap, size_t *pos, struct http1_request *req)
{
	size_t i = *pos, s;
	const char *v, *err = NULL;
	int rc;

	for (s = i; i < cap && IS(buf[i], C_T); i++)
		;
	if (i == cap)
		return P_NEED;
	if (buf[i] != ' ' || i == s)
		return req_fail(req, 400, "bad method"), P_BAD;
	req->method = mkslice(buf + s, i - s);
	for (s = ++i; i < cap && is_vchar((unsigned char)buf[i]); i++)
		;
	if (i == cap)
		return P_NEED;
	if (buf[i] != ' ' || i == s)
		return req_fail(req, 400, "bad request target"), P_BAD;
	req->target = mkslice(buf + s, i - s);
	for (s = ++i; i < cap && is_vchar((unsigned char)buf[i]); i++)
		;
	if (i == cap)
		return P_NEED;
	if (buf[i] != '\r')
		return req_fail(req, 400, buf[i] == '\n' ? "bare LF" : "bad request line"), P_BAD;
	v = buf + s;
	if (i - s != 8 || memcmp(v, "HTTP/", 5) != 0 || !IS(v[5], C_D) || v[6] != '.' ||
	    !IS(v[7], C_D))
		return req_fail(req, 400, "bad HTTP version"), P_BAD;
	if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
		return req_fail(req, 505, "HTTP version not supported"), P_BAD;
	req->minor = v[7] - '0';
	if ((rc = expect_crlf(buf, cap, &i, &err)) != P_OK) {
		if (rc == P_BAD)
			req_fail(req, 400, err);
		return rc;
	}
	if (parse_target(req, &err) != 0)
		return req_fail(req, 400, err), P_BAD;
	*pos = i;
	return P_OK;
}

/* Applies Host, framing and connection rules to a parsed request head. */
static ssize_t
request_semantics(struct http1_request *req)
{
	struct fields f;

	scan_fields(req->headers, req->nheaders, &f);
	if (f.hosts > 1)
		return req_fail(req, 400, "repeated Host");
	if (f.hosts == 0 && req->minor == 1)
		return req_fail(req, 400, "missing Host");
	if (f.hosts == 1 && !valid_authority(f.host.p, f.host.len, false))
		return req_fail(req, 400, "invalid Host");
	req->host = req->absolute_form ? req->authority : f.host;
	if (f.cl_bad)
		return req_fail(req, 400, "invalid Content-Length");
	if (f.te_seen) {
		if (req->minor == 0)
			return req_fail(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (f.cl_seen)
			return req_fail(req, 400, "Content-Length with Transfer-Encoding");
		if (f.te_codings == 0)
			return req_fail(req, 400, "empty Transfer-Encoding");
		if (f.te_codings != 1 || !f.te_last_chunked)
			return req_fail(req, 501, "Transfer-Encoding other than chunked");
		req->body = HTTP1_BODY_CHUNKED;
	} else if (f.cl_seen) {
		req->body = HTTP1_BODY_LENGTH;
		req->content_length = f.cl;
	} else {
		req->body = HTTP1_BODY_NONE;
	}
	req->keep_alive = req->minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
	req->expect_continue = f.expect_continue && req->minor == 1;
	req->upgrade = f.upgrade_field && f.conn_upgrade;
	return (ssize_t)req->head_len;
}

ssize_t
http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_request *req)
{
	struct http1_header *headers = req->headers;
	size_t cap = len < lim->max_head_size ? len : lim->max_head_size;
	size_t pos = 0;
	const char *err = NULL;
	bool in_line = true;
	int rc;

	memset(req, 0, sizeof(*req));
	req->headers = headers;
	rc = skip_empty_lines(buf, cap, &pos, &err);
	if (rc == P_OK) {
		rc = parse_request_line(buf, cap, &pos, req);
		if (rc == P_BAD)
			return HTTP1_ERROR;
	}
	if (rc == P_OK) {
		in_line = false;
		rc = parse_fields(buf, cap, &pos, headers, lim->max_headers, &req->nheaders, &err);
	}
	switch (rc) {
	case P_OK:
		req->head_len = pos;
		return request_semantics(req);
	case P_NEED:
		if (len < lim->max_head_size)
			return HTTP1_NEED_MORE;
		return in_line ? req_fail(req, 414, "request line too long") :
		    req_fail(req, 431, "request head too large");
	case P_TOOMANY:
		return req_fail(req, 431, "too many header fields");
	default:
		return req_fail(req, 400, err);
	}
}

/* Sets the error of a response; returns HTTP1_ERROR. */
static ssize_t
resp_fail(struct http1_response *resp, const char *error)
{
	resp->error = error;
	return HTTP1_ERROR;
}

/* Parses the status line at buf[*pos]. Returns P_OK, P_NEED or P_BAD with resp->error. */
static int
parse_status_line(const char *buf, size_t cap, size_t *pos, struct http1_response *resp)
{
	static const char proto[] = "HTTP/1.";
	size_t i = *pos, s, k;
	int rc;

	for (k = 0; k < 7; k++, i++) {
		if (i == cap)
			return P_NEED;
		if (buf[i] != proto[k])
			return resp_fail(resp, "bad status line"), P_BAD;
	}
	if (i == cap)
		return P_NEED;
	if (buf[i] != '0' && buf[i] != '1')
		return resp_fail(resp, "unsupported HTTP version"), P_BAD;
	resp->minor = buf[i++] - '0';
	if (i == cap)
		return P_NEED;
	if (buf[i++] != ' ')
		return resp_fail(resp, "bad status line"), P_BAD;
	for (k = 0; k < 3; k++, i++) {
		if (i == cap)
			return P_NEED;
		if (!IS(buf[i], C_D) || (k == 0 && buf[i] == '0'))
			return resp_fail(resp, "bad status code"), P_BAD;
		resp->status = resp->status * 10 + (buf[i] - '0');
	}
	if (i == cap)
		return P_NEED;
	if (buf[i] == ' ') {
		for (s = ++i; i < cap && is_fvchar((unsigned char)buf[i]); i++)
			;
		if (i == cap)
			return P_NEED;
		resp->reason = mkslice(buf + s, i - s);
	} else {
		resp->reason = mkslice(buf + i, 0);
	}
	if ((rc = expect_crlf(buf, cap, &i, &resp->error)) != P_OK)
		return rc;
	*pos = i;
	return P_OK;
}

/* Decides the framing of a parsed response head (RFC 9112 6.3). */
static ssize_t
response_semantics(struct http1_response *resp, struct http1_slice req_method)
{
	struct fields f;
	int st = resp->status;

	scan_fields(resp->headers, resp->nheaders, &f);
	if (f.cl_bad)
		return resp_fail(resp, "invalid Content-Length");
	if (f.cl_seen && f.te_seen)
		return resp_fail(resp, "Content-Length with Transfer-Encoding");
	if (f.te_seen && f.te_codings == 0)
		return resp_fail(resp, "empty Transfer-Encoding");
	if (f.te_chunked > 1)
		return resp_fail(resp, "chunked applied more than once");
	resp->keep_alive = resp->minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
	if (st == 101) {
		resp->body = HTTP1_BODY_TUNNEL;
	} else if ((st >= 100 && st < 200) || st == 204 || st == 304 ||
	    slice_is(req_method, "HEAD")) {
		resp->body = HTTP1_BODY_NONE;
	} else if (slice_is(req_method, "CONNECT") && st >= 200 && st < 300) {
		resp->body = HTTP1_BODY_TUNNEL;
	} else if (f.te_seen) {
		resp->body = f.te_last_chunked ? HTTP1_BODY_CHUNKED : HTTP1_BODY_CLOSE;
	} else if (f.cl_seen) {
		resp->body = HTTP1_BODY_LENGTH;
		resp->content_length = f.cl;
	} else {
		resp->body = HTTP1_BODY_CLOSE;
	}
	/* RFC 9112 6.1: TE in an HTTP/1.0 message means faulty framing: close after it. */
	if (resp->body == HTTP1_BODY_CLOSE || resp->body == HTTP1_BODY_TUNNEL ||
	    (f.te_seen && resp->minor == 0))
		resp->keep_alive = false;
	return (ssize_t)resp->head_len;
}

ssize_t
http1_parse_response(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_slice req_method, struct http1_response *resp)
{
	struct http1_header *headers = resp->headers;
	size_t cap = len < lim->max_head_size ? len : lim->max_head_size;
	size_t pos = 0;
	const char *err = NULL;
	bool in_line = true;
	int rc;

	memset(resp, 0, sizeof(*resp));
	resp->headers = headers;
	rc = parse_status_line(buf, cap, &pos, resp);
	if (rc == P_BAD)
		return HTTP1_ERROR;
	if (rc == P_OK) {
		in_line = false;
		rc = parse_fields(buf, cap, &pos, headers, lim->max_headers, &resp->nheaders, &err);
	}
	switch (rc) {
	case P_OK:
		resp->head_len = pos;
		return response_semantics(resp, req_method);
	case P_NEED:
		if (len < lim->max_head_size)
			return HTTP1_NEED_MORE;
		return resp_fail(resp, in_line ? "status line too long" : "response head too large");
	case P_TOOMANY:
		return resp_fail(resp, "too many header fields");
	default:
		return resp_fail(resp, err);
	}
}

/* Chunked body parser states (struct http1_body.state). */
enum chunk_state {
	CS_SIZE_FIRST,	/* expecting the first hex digit of a chunk-size */
	CS_SIZE,	/* in the chunk-size; ext_len counts its digits */
	CS_SIZE_BWS,	/* BWS after the size: more BWS or ';' must follow */
	CS_EXT,		/* in chunk-ext, up to the CR; ext_len bounds it */
	CS_SIZE_LF,	/* CR of the size line seen: LF must follow */
	CS_DATA,	/* chunk data: remaining bytes left */
	CS_DATA_CR,	/* the CR after chunk data */
	CS_DATA_LF,	/* the LF after chunk data */
	CS_TRAILER,	/* start of a trailer field line, or of the final CRLF */
	CS_TR_NAME,	/* in a trailer field name, up to ':' */
	CS_TR_VALUE,	/* in a trailer field value, up to CR */
	CS_TR_LF,	/* CR of a trailer field line seen: LF must follow */
	CS_END_LF,	/* CR of the final empty line seen: LF ends the body */
	CS_ERROR	/* a framing error was reported; sticky */
};

void
http1_body_init(struct http1_body *b, enum http1_body_kind kind, uint64_t content_length)
{
	memset(b, 0, sizeof(*b));
	b->kind = kind;
	b->state = CS_SIZE_FIRST;
	if (kind == HTTP1_BODY_LENGTH)
		b->remaining = content_length;
	b->done = kind == HTTP1_BODY_NONE || (kind == HTTP1_BODY_LENGTH && content_length == 0);
}

/* Records a chunked framing error; returns -1. */
static ssize_t
chunk_fail(struct http1_body *b, const char *error)
{
	b->state = CS_ERROR;
	b->error = error;
	return -1;
}

/* Value of a hex digit (the caller checked C_H). */
static unsigned
hexval(unsigned char c)
{
	return c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10;
}

/* Consumes one byte of a chunk-size line, trailer or CRLF; returns 0 or -1 (b->error). */
static int
chunk_byte(struct http1_body *b, unsigned char c)
{
	switch (b->state) {
	case CS_SIZE_FIRST:
		if (!IS(c, C_H))
			return (int)chunk_fail(b, "bad chunk size");
		b->remaining = hexval(c);
		b->ext_len = 1;
		b->state = CS_SIZE;
		return 0;
	case CS_SIZE:
		if (IS(c, C_H)) {
			if (++b->ext_len > 16 || b->remaining > (INT63_MAX >> 4))
				return (int)chunk_fail(b, "chunk size overflow");
			b->remaining = (b->remaining << 4) | hexval(c);
			return 0;
		}
		b->ext_len = 0;
		if (c == '\r')
			b->state = CS_SIZE_LF;
		else if (c == ';')
			b->state = CS_EXT;
		else if (is_ows((char)c))
			b->state = CS_SIZE_BWS;
		else
			return (int)chunk_fail(b, c == '\n' ? "bare LF in chunk size line" :
			    "bad chunk size");
		return 0;
	case CS_SIZE_BWS:
	case CS_EXT:
		if (++b->ext_len > CHUNK_EXT_MAX)
			return (int)chunk_fail(b, "chunk extension too long");
		if (b->state == CS_SIZE_BWS) {
			if (c == ';')
				b->state = CS_EXT;
			else if (!is_ows((char)c))
				return (int)chunk_fail(b, "bad chunk size line");
		} else if (c == '\r') {
			b->state = CS_SIZE_LF;
		} else if (!is_fvchar(c)) {
			return (int)chunk_fail(b, c == '\n' ? "bare LF in chunk extension" :
			    "control character in chunk extension");
		}
		return 0;
	case CS_SIZE_LF:
		if (c != '\n')
			return (int)chunk_fail(b, "bare CR in chunk size line");
		b->state = b->remaining ? CS_DATA : CS_TRAILER;
		return 0;
	case CS_DATA_CR:
		if (c != '\r')
			return (int)chunk_fail(b, "missing CRLF after chunk data");
		b->state = CS_DATA_LF;
		return 0;
	case CS_DATA_LF:
		if (c != '\n')
			return (int)chunk_fail(b, "missing CRLF after chunk data");
		b->state = CS_SIZE_FIRST;
		return 0;
	default:
		break;
	}
	/* trailer section */
	if (++b->trailer_bytes > TRAILER_MAX)
		return (int)chunk_fail(b, "trailer section too large");
	switch (b->state) {
	case CS_TRAILER:
		if (c == '\r')
			b->state = CS_END_LF;
		else if (IS(c, C_T))
			b->state = CS_TR_NAME;
		else
			return (int)chunk_fail(b, "bad trailer field");
		return 0;
	case CS_TR_NAME:
		if (c == ':')
			b->state = CS_TR_VALUE;
		else if (!IS(c, C_T))
			return (int)chunk_fail(b, "bad trailer field name");
		return 0;
	case CS_TR_VALUE:
		if (c == '\r')
			b->state = CS_TR_LF;
		else if (!is_fvchar(c))
			return (int)chunk_fail(b, "control character in a trailer field");
		return 0;
	case CS_TR_LF:
	case CS_END_LF:
		if (c != '\n')
			return (int)chunk_fail(b, "bare CR in trailer section");
		if (b->state == CS_END_LF)
			b->done = true;
		b->state = CS_TRAILER;
		return 0;
	default:
		return (int)chunk_fail(b, "chunked parser in a bad state");
	}
}

/* Feeds a chunked body; see http1_body_feed. */
static ssize_t
chunked_feed(struct http1_body *b, const char *buf, size_t len)
{
	size_t i = 0, n;

	if (b->state == CS_ERROR)
		return -1;
	while (i < len && !b->done) {
		if (b->state == CS_DATA) {
			n = len - i;
			if (b->remaining < n)
				n = (size_t)b->remaining;
			b->remaining -= n;
			i += n;
			if (b->remaining == 0)
				b->state = CS_DATA_CR;
			continue;
		}
		if (chunk_byte(b, (unsigned char)buf[i]) != 0)
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
		return chunked_feed(b, buf, len);
	case HTTP1_BODY_CLOSE:
	case HTTP1_BODY_TUNNEL:
		return (ssize_t)len;
	default:
		b->done = true;
		return 0;
	}
}
