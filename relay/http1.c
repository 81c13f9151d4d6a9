/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1.c: HTTP/1.x request heads (RFC 9112 3) and the token and list helpers every http1*
 * file, route.c and rewrite.c share: the character classes, the one case-insensitive compare
 * (http1_ci_eq) and the one list matcher (http1_list_has_n).
 *
 * The rest of the HTTP/1 parser: field lines and the head driver (http1_field.c), response
 * heads (http1_resp.c), body framing (http1_body.c). Pure functions: no allocation, no copies,
 * no globals but const tables; every read is bounded by the length the caller gave.
 * Strict by design (this runs on an internet-facing proxy): bare LF, bare CR, obs-fold,
 * whitespace before ':' and ambiguous framing are errors, never guessed at.
 */
#include "autoconf.h"

#include <string.h>

#include "http1_int.h"

/* Character classes (http1_int.h): bit C_T, C_H, C_R, C_D per byte. */
const unsigned char http1_ctab[256] = {
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

/* ASCII lower case, independent of the locale. */
static inline unsigned char
http1_lower(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

/* ASCII lower case, with '_' read as '-' when dash. */
static inline unsigned char
http1_fold(unsigned char c, bool dash)
{
	return dash && c == '_' ? '-' : http1_lower(c);
}

/* True when a[0..an) equals b[0..bn) case-insensitively (and '_' equals '-' when dash). */
static bool
http1_folded_eq(const char *a, size_t an, const char *b, size_t bn, bool dash)
{
	if (an != bn)
		return false;
	for (size_t i = 0; i < an; i++)
		if (http1_fold((unsigned char)a[i], dash) != http1_fold((unsigned char)b[i], dash))
			return false;
	return true;
}

bool
http1_ci_eq(const char *a, size_t an, const char *b, size_t bn)
{
	return http1_folded_eq(a, an, b, bn, false);
}

bool
http1_ci_eq_dash(const char *a, size_t an, const char *b, size_t bn)
{
	return http1_folded_eq(a, an, b, bn, true);
}

/* Case-insensitive: is p[0..n) exactly the string s? */
bool
http1_ci_is(const char *p, size_t n, const char *s)
{
	return http1_ci_eq(p, n, s, strlen(s));
}

/* Case-sensitive: is the slice exactly the string s (methods are case-sensitive)? */
bool
http1_slice_is(struct http1_slice v, const char *s)
{
	size_t k = strlen(s);

	return v.len == k && (k == 0 || memcmp(v.p, s, k) == 0);
}

/* Next element of a comma-separated list (see http1_int.h). */
bool
http1_list_next(struct http1_slice v, size_t *pos, struct http1_slice *el)
{
	size_t i = *pos, s, e;

	if (i > v.len || v.len == 0)
		return false;
	s = i;
	while (i < v.len && v.p[i] != ',')
		i++;
	e = i;
	while (s < e && http1_is_ows(v.p[s]))
		s++;
	while (e > s && http1_is_ows(v.p[e - 1]))
		e--;
	*el = http1_mkslice(v.p + s, e - s);
	*pos = i + 1;		/* past the comma, or len + 1 at the end */
	return true;
}

bool
http1_list_has_n(struct http1_slice value, const char *token, size_t toklen)
{
	struct http1_slice el;
	size_t pos = 0;

	while (http1_list_next(value, &pos, &el))
		if (el.len > 0 && http1_ci_eq(el.p, el.len, token, toklen))
			return true;
	return false;
}

bool
http1_list_has(struct http1_slice value, const char *token)
{
	return http1_list_has_n(value, token, strlen(token));
}

bool
http1_upgrade_allowed(struct http1_slice value, const char *const *protocols, size_t n)
{
	struct http1_slice el;
	size_t pos = 0, k, nlen, seen = 0;
	const char *slash;
	bool known;

	while (http1_list_next(value, &pos, &el)) {
		if (el.len == 0)
			continue;
		slash = memchr(el.p, '/', el.len);
		nlen = slash != NULL ? (size_t)(slash - el.p) : el.len;
		for (known = false, k = 0; k < n && !known; k++)
			known = http1_ci_is(el.p, nlen, protocols[k]);
		if (!known)
			return false;
		seen++;
	}
	return seen > 0;
}

const struct http1_header *
http1_find_header(const struct http1_header *h, size_t n, const char *name)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (http1_ci_is(h[i].name.p, h[i].name.len, name))
			return &h[i];
	return NULL;
}

static const char *const http1_body_kind_names[] = { HTTP1_BODY_KINDS(HTTP1_NAME) };

const char *
http1_body_kind_str(enum http1_body_kind k)
{
	return HTTP1_NAME_OF(http1_body_kind_names, k, "BODY_?");
}

/*
 * Length of the host part of an authority at p[0..n) (n > 0): "[" IPv6 "]", or a reg-name /
 * IPv4 (RFC 3986 bytes and %XX escapes) up to ':' or the end. 0 when it is not valid.
 */
static size_t
http1_authority_host(const char *p, size_t n)
{
	size_t i = 0;

	if (p[0] == '[') {
		for (i = 1; i < n && (IS(p[i], C_H) || p[i] == ':' || p[i] == '.'); i++)
			;
		if (i == 1 || i == n || p[i] != ']')
			return 0;
		return i + 1;
	}
	while (i < n && p[i] != ':') {
		if (p[i] == '%') {
			if (i + 2 >= n || !IS(p[i + 1], C_H) || !IS(p[i + 2], C_H))
				return 0;
			i += 3;
		} else if (IS(p[i], C_R)) {
			i++;
		} else {
			return 0;
		}
	}
	return i;
}

/*
 * Validates host [":" port] (RFC 3986 reg-name / IPv4 / "[" IPv6 "]"; port 1-5 digits up to
 * 65535). need_port: the port is mandatory (CONNECT). No userinfo, no list, never empty.
 */
static bool
http1_valid_authority(const char *p, size_t n, bool need_port)
{
	size_t i, digits;
	unsigned port = 0;

	if (n == 0 || (i = http1_authority_host(p, n)) == 0)
		return false;
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

/* Sets the error of a request; returns HTTP1_ERROR. */
static ssize_t
http1_req_fail(struct http1_request *req, int status, const char *error)
{
	req->status = status;
	req->error = error;
	return HTTP1_ERROR;
}

/* Sets *f for a refused request line; returns P_BAD. */
static int
http1_req_line_fail(struct http1_fail *f, int status, const char *error)
{
	f->status = status;
	f->error = error;
	return P_BAD;
}

/* Splits p[0..n) at its first '?' into req->path and req->query. */
static void
http1_split_path(struct http1_request *req, const char *p, size_t n)
{
	const char *q = n ? memchr(p, '?', n) : NULL;

	if (q) {
		req->path = http1_mkslice(p, (size_t)(q - p));
		req->query = http1_mkslice(q + 1, n - (size_t)(q - p) - 1);
	} else {
		req->path = http1_mkslice(p, n);
	}
}

/* Sets *err; returns -1. */
static int
http1_target_fail(const char **err, const char *why)
{
	*err = why;
	return -1;
}

/* Splits an absolute-form target ("http://" or "https://", any case). Returns 0, or -1 with *err. */
static int
http1_parse_absolute(struct http1_request *req, const char **err)
{
	const char *p = req->target.p, *a, *end = req->target.p + req->target.len;
	size_t n = req->target.len, s;

	if (n >= 7 && http1_ci_eq(p, 7, "http://", 7))
		s = 7;
	else if (n >= 8 && http1_ci_eq(p, 8, "https://", 8))
		s = 8;
	else
		return http1_target_fail(err, "bad request target");
	for (a = p + s; a < end && *a != '/' && *a != '?'; a++)
		;
	req->authority = http1_mkslice(p + s, (size_t)(a - (p + s)));
	if (memchr(req->authority.p, '@', req->authority.len))
		return http1_target_fail(err, "userinfo in absolute-form target");
	if (!http1_valid_authority(req->authority.p, req->authority.len, false))
		return http1_target_fail(err, "bad authority in absolute-form target");
	req->absolute_form = true;
	http1_split_path(req, a, (size_t)(end - a));
	if (req->path.len == 0)		/* RFC 9112 3.2.2 (and 3.2.4 for OPTIONS) */
		req->path = req->query.len == 0 && http1_slice_is(req->method, "OPTIONS") ?
		    http1_mkslice("*", 1) : http1_mkslice("/", 1);
	return 0;
}

/*
 * Classifies and splits req->target (origin, absolute, asterisk or authority form).
 * Returns 0, or -1 with *err.
 */
static int
http1_parse_target(struct http1_request *req, const char **err)
{
	const char *p = req->target.p;
	size_t n = req->target.len;

	if (memchr(p, '#', n) != NULL)
		return http1_target_fail(err, "fragment in request target");
	if (http1_slice_is(req->method, "CONNECT")) {
		req->is_connect = true;
		if (!http1_valid_authority(p, n, true))
			return http1_target_fail(err, "bad CONNECT target");
		req->path = http1_mkslice(p + n, 0);
		return 0;
	}
	if (p[0] == '/') {
		http1_split_path(req, p, n);
		return 0;
	}
	if (n == 1 && p[0] == '*') {
		if (!http1_slice_is(req->method, "OPTIONS"))
			return http1_target_fail(err, "asterisk-form outside OPTIONS");
		req->path = req->target;
		return 0;
	}
	return http1_parse_absolute(req, err);
}

/*
 * Skips the empty lines allowed before a request line (RFC 9112 2.2).
 * Returns P_OK (*pos at the first non-empty byte), P_NEED, or P_BAD.
 */
static int
http1_skip_empty_lines(const char *buf, size_t cap, size_t *pos, const char **err)
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
 * Scans the run of tchars (token) or VCHARs (!token) at buf[*i] into *w. Returns P_OK with *i
 * at the byte that ended the run (possibly empty), or P_NEED when the run reaches cap.
 */
static int
http1_req_word(const char *buf, size_t cap, size_t *i, bool token, struct http1_slice *w)
{
	size_t s = *i, j;

	for (j = s; j < cap && (token ? IS(buf[j], C_T) : http1_is_vchar((unsigned char)buf[j])); j++)
		;
	if (j == cap)
		return P_NEED;
	*w = http1_mkslice(buf + s, j - s);
	*i = j;
	return P_OK;
}

/*
 * Scans a word as http1_req_word and the SP that must end it; *w is set only then.
 * Returns P_OK (*i past the SP), P_NEED, or P_BAD with *f (400, why) for an empty word or
 * another byte after it.
 */
static int
http1_req_word_sp(const char *buf, size_t cap, size_t *i, bool token, struct http1_slice *w,
    struct http1_fail *f, const char *why)
{
	struct http1_slice s;

	if (http1_req_word(buf, cap, i, token, &s) != P_OK)
		return P_NEED;
	if (buf[*i] != ' ' || s.len == 0)
		return http1_req_line_fail(f, 400, why);
	*w = s;
	(*i)++;
	return P_OK;
}

/* Checks the version of a request line ("HTTP/1.0" or "HTTP/1.1") and sets req->minor. */
static int
http1_req_version(struct http1_slice v, struct http1_request *req, struct http1_fail *f)
{
	const char *p = v.p;

	if (v.len != 8 || memcmp(p, "HTTP/", 5) != 0 || !IS(p[5], C_D) || p[6] != '.' ||
	    !IS(p[7], C_D))
		return http1_req_line_fail(f, 400, "bad HTTP version");
	if (p[5] != '1' || (p[7] != '0' && p[7] != '1'))
		return http1_req_line_fail(f, 505, "HTTP version not supported");
	req->minor = p[7] - '0';
	return P_OK;
}

/*
 * Parses the request line at buf[*pos] into msg (a struct http1_request), after the empty
 * lines allowed before it. Returns P_OK (*pos past its CRLF), P_NEED, or P_BAD with *f
 * (400, or 505 for a version other than 1.0/1.1).
 */
static int
http1_request_line(const char *buf, size_t cap, size_t *pos, void *msg, struct http1_fail *f)
{
	struct http1_request *req = msg;
	struct http1_slice w;
	size_t i = *pos;
	int rc;

	if ((rc = http1_skip_empty_lines(buf, cap, &i, &f->error)) != P_OK ||
	    (rc = http1_req_word_sp(buf, cap, &i, true, &req->method, f, "bad method")) != P_OK ||
	    (rc = http1_req_word_sp(buf, cap, &i, false, &req->target, f, "bad request target")) != P_OK)
		return rc;
	if (http1_req_word(buf, cap, &i, false, &w) != P_OK)
		return P_NEED;
	if (buf[i] != '\r')
		return http1_req_line_fail(f, 400, buf[i] == '\n' ? "bare LF" : "bad request line");
	if ((rc = http1_req_version(w, req, f)) != P_OK ||
	    (rc = http1_field_crlf(buf, cap, &i, &f->error)) != P_OK)
		return rc;
	if (http1_parse_target(req, &f->error) != 0)
		return P_BAD;
	*pos = i;
	return P_OK;
}

/* The request line, for the head driver (http1_field_head). */
static const struct http1_start_line http1_request_start = {
	http1_request_line, "request line too long", "request head too large"
};

/* Decides the body framing of a request from f. Returns 0, or HTTP1_ERROR (req_fail). */
static ssize_t
http1_request_framing(struct http1_request *req, const struct http1_fields *f)
{
	if (f->cl_bad)
		return http1_req_fail(req, 400, "invalid Content-Length");
	if (f->te_seen) {
		if (req->minor == 0)
			return http1_req_fail(req, 400, "Transfer-Encoding in an HTTP/1.0 request");
		if (f->cl_seen)
			return http1_req_fail(req, 400, "Content-Length with Transfer-Encoding");
		if (f->te_codings == 0)
			return http1_req_fail(req, 400, "empty Transfer-Encoding");
		if (f->te_codings != 1 || !f->te_last_chunked)
			return http1_req_fail(req, 501, "Transfer-Encoding other than chunked");
		req->body = HTTP1_BODY_CHUNKED;
	} else if (f->cl_seen) {
		req->body = HTTP1_BODY_LENGTH;
		req->content_length = f->cl;
	} else {
		req->body = HTTP1_BODY_NONE;
	}
	return 0;
}

/* Applies Host, framing and connection rules to a parsed request head. */
static ssize_t
http1_request_semantics(struct http1_request *req)
{
	struct http1_fields f;

	http1_field_scan(req->headers, req->nheaders, &f);
	if (f.hosts > 1)
		return http1_req_fail(req, 400, "repeated Host");
	if (f.hosts == 0 && req->minor == 1)
		return http1_req_fail(req, 400, "missing Host");
	if (f.hosts == 1 && !http1_valid_authority(f.host.p, f.host.len, false))
		return http1_req_fail(req, 400, "invalid Host");
	req->host = req->absolute_form ? req->authority : f.host;
	if (http1_request_framing(req, &f) != 0)
		return HTTP1_ERROR;
	req->keep_alive = req->minor == 1 ? !f.conn_close : (f.conn_keep_alive && !f.conn_close);
	req->expect_continue = f.expect_continue && req->minor == 1;
	req->upgrade_requested = f.upgrade_field && f.conn_upgrade;
	req->upgrade = req->upgrade_requested && !f.upgrade_refused;
	return (ssize_t)req->head_len;
}

ssize_t
http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_request *req)
{
	struct http1_fail f;
	ssize_t n;

	*req = (struct http1_request){ .headers = req->headers };
	n = http1_field_head(buf, len, lim, &http1_request_start, req, req->headers, &req->nheaders,
	    &req->head_len, &f);
	if (n == HTTP1_ERROR)
		return http1_req_fail(req, f.status, f.error);
	return n > 0 ? http1_request_semantics(req) : n;
}

/* True when c is neither CR nor LF. */
static inline bool
http1_not_crlf(char c)
{
	return c != '\r' && c != '\n';
}

/*
 * The search of http1_head_end (see http1.h). Invariant between calls: every byte before
 * *scanned was looked at, and *scanned is never inside a CRLF CRLF that could still end the
 * head (it stops on the CR where such a run begins but is not complete yet).
 */
bool
http1_head_end(const char *buf, size_t len, size_t *scanned)
{
	size_t i;

	for (i = *scanned; i < len; i++) {
		if (buf[i] == '\n') {
			if (i == 0 || buf[i - 1] != '\r')
				break;				/* bare LF: an error */
			continue;
		}
		if (buf[i] != '\r')
			continue;
		if (i + 1 == len) {
			*scanned = i;			/* its LF may come next */
			return false;
		}
		if (buf[i + 1] != '\n')
			break;				/* bare CR: an error */
		if (i > 0 && http1_not_crlf(buf[i - 1]) && (i + 2 == len || buf[i + 2] == '\r')) {
			if (i + 3 >= len) {
				*scanned = i;		/* "x CR LF [CR]": the end may come next */
				return false;
			}
			if (buf[i + 3] == '\n') {
				*scanned = i + 4;
				return true;		/* the end of the head */
			}
		}
		i++;					/* past the LF */
	}
	if (i >= len) {
		*scanned = len;
		return false;
	}
	*scanned = i + 1;
	return true;
}
