/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * fuzz_http1_ref.c: differential target for the request head parser (relay/http1.c,
 * relay/http1_field.c) against a second, simple implementation written here from RFC 9112
 * as /work/shared/PROTOCOLS.md section 5 summarises it, with exrelay's deliberate strictness.
 *
 * The reference works differently: it cuts the bytes into lines at each CRLF first, then
 * checks each line as a whole against the grammar (the last, unfinished piece as a prefix of
 * a line), then the head's meaning (Host, Content-Length, Transfer-Encoding). Both must agree
 * (abort() otherwise) on the decision -- a head of N bytes, need more, or refused -- and, for
 * a head, on its version, its number of fields, its Host, its body framing and its length.
 * Inputs are short (at most 512 bytes) and the limits small, so the size and field-count
 * rules are reached too. The last input byte picks the limits.
 *
 * exrelay's choices the reference encodes: a bare LF or CR anywhere, obs-fold, whitespace
 * before ':' or before the first field are refused; leading empty lines are skipped;
 * methods are any token; only HTTP/1.0 and HTTP/1.1; a Host (and an absolute-form or CONNECT
 * authority) is a reg-name without ',' (or an IPv4 text, or a bracketed IPv6 text) with an
 * optional port of up to 5 digits <= 65535, no userinfo; a '#' in the target is refused;
 * "*" only with OPTIONS; Content-Length is a list of equal decimal values <= 2^63-1;
 * Transfer-Encoding only in HTTP/1.1, never with Content-Length, and exactly "chunked".
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(c) do { if (!(c)) abort(); } while (0)
#define MAXLEN 512
#define MAXH 8

/* The verdicts. */
#define R_NEED (-2)
#define R_BAD (-1)

struct ref_head {
	int minor;
	size_t nfields;
	enum http1_body_kind body;
	uint64_t cl;
	const char *host;
	size_t host_len;
	bool host_set;
};

struct line {
	const char *p;
	size_t n;
};

static bool
is_tchar(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static bool
is_vchar(unsigned char c)
{
	return c >= 0x21 && c <= 0x7e;
}

/* A field value byte: HTAB, SP, VCHAR, obs-text. */
static bool
is_fvchar(unsigned char c)
{
	return c == '\t' || c == ' ' || is_vchar(c) || c >= 0x80;
}

static bool
is_hex(unsigned char c)
{
	return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'f');
}

/* reg-name bytes: unreserved and sub-delims, but ',' (a list in Host is refused). */
static bool
is_regname(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c != 0 && strchr("-._~!$&'()*+;=", c) != NULL);
}

static bool
all(const char *p, size_t n, bool (*cls)(unsigned char))
{
	for (size_t i = 0; i < n; i++)
		if (!cls((unsigned char)p[i]))
			return false;
	return true;
}

static bool
ci_eq(const char *a, size_t n, const char *b)
{
	if (strlen(b) != n)
		return false;
	for (size_t i = 0; i < n; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
		if ((x >= 'A' && x <= 'Z' ? x + 32 : x) != (y >= 'A' && y <= 'Z' ? y + 32 : y))
			return false;
	}
	return true;
}

/* host [":" port], port mandatory when need_port. */
static bool
ref_authority(const char *p, size_t n, bool need_port)
{
	size_t h;

	if (n == 0)
		return false;
	if (p[0] == '[') {
		const char *close = memchr(p, ']', n);
		if (close == NULL || close == p + 1)
			return false;
		h = (size_t)(close - p) + 1;
		for (size_t i = 1; i + 1 < h; i++)
			if (!is_hex((unsigned char)p[i]) && p[i] != ':' && p[i] != '.')
				return false;
	} else {
		const char *colon = memchr(p, ':', n);
		h = colon ? (size_t)(colon - p) : n;
		if (h == 0)
			return false;
		for (size_t i = 0; i < h; i++) {
			if (p[i] == '%') {
				if (h - i < 3 || !is_hex((unsigned char)p[i + 1]) || !is_hex((unsigned char)p[i + 2]))
					return false;
				i += 2;
			} else if (!is_regname((unsigned char)p[i])) {
				return false;
			}
		}
	}
	if (h == n)
		return !need_port;
	if (p[h] != ':' || n - h - 1 < 1 || n - h - 1 > 5)
		return false;
	unsigned long port = 0;
	for (size_t i = h + 1; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		port = port * 10 + (unsigned long)(p[i] - '0');
	}
	return port <= 65535;
}

/* The request target of method m (RFC 9112 3.2 and exrelay's rules). */
static bool
ref_target(const char *m, size_t ml, const char *t, size_t tl, struct ref_head *r)
{
	if (memchr(t, '#', tl) != NULL)
		return false;
	if (ml == 7 && memcmp(m, "CONNECT", 7) == 0)
		return ref_authority(t, tl, true);
	if (t[0] == '/')
		return true;
	if (tl == 1 && t[0] == '*')
		return ml == 7 && memcmp(m, "OPTIONS", 7) == 0;
	size_t s = tl >= 7 && ci_eq(t, 7, "http://") ? 7 : tl >= 8 && ci_eq(t, 8, "https://") ? 8 : 0;
	if (s == 0)
		return false;
	size_t e = s;
	while (e < tl && t[e] != '/' && t[e] != '?')
		e++;
	if (memchr(t + s, '@', e - s) != NULL || !ref_authority(t + s, e - s, false))
		return false;
	r->host = t + s;
	r->host_len = e - s;
	r->host_set = true;
	return true;
}

/* The version word: 1 ok (minor set), 0 refused. */
static bool
ref_version(const char *v, size_t n, int *minor)
{
	if (n != 8 || memcmp(v, "HTTP/1.", 7) != 0 || (v[7] != '0' && v[7] != '1'))
		return false;
	*minor = v[7] - '0';
	return true;
}

/* A complete request line: method SP target SP version. */
static bool
ref_request_line(struct line l, struct ref_head *r)
{
	const char *sp1 = memchr(l.p, ' ', l.n);
	if (sp1 == NULL || sp1 == l.p || !all(l.p, (size_t)(sp1 - l.p), is_tchar))
		return false;
	const char *t = sp1 + 1, *end = l.p + l.n;
	const char *sp2 = memchr(t, ' ', (size_t)(end - t));
	if (sp2 == NULL || sp2 == t || !all(t, (size_t)(sp2 - t), is_vchar))
		return false;
	if (!ref_version(sp2 + 1, (size_t)(end - sp2 - 1), &r->minor))
		return false;
	return ref_target(l.p, (size_t)(sp1 - l.p), t, (size_t)(sp2 - t), r);
}

/* An unfinished request line (no CRLF yet): true when it can still become a valid one. */
static bool
ref_request_prefix(struct line l)
{
	size_t i = 0, n = l.n;
	int minor;

	if (n > 0 && l.p[n - 1] == '\r')	/* the CR is there: the version is complete */
		n--;
	while (i < n && is_tchar((unsigned char)l.p[i]))
		i++;
	if (i == n)
		return n == l.n;		/* a CR right after a part of the method is refused */
	if (i == 0 || l.p[i] != ' ')
		return false;
	size_t t = ++i;
	while (i < n && is_vchar((unsigned char)l.p[i]))
		i++;
	if (i == n)
		return n == l.n;
	if (i == t || l.p[i] != ' ')
		return false;
	size_t v = ++i;
	while (i < n && is_vchar((unsigned char)l.p[i]))
		i++;
	if (i != n)
		return false;
	return n == l.n || ref_version(l.p + v, n - v, &minor);
}

/* A complete field line: token ":" field-value (OWS allowed around the value). */
static bool
ref_field_line(struct line l)
{
	const char *colon = memchr(l.p, ':', l.n);

	return colon != NULL && colon != l.p && all(l.p, (size_t)(colon - l.p), is_tchar) &&
	    all(colon + 1, l.n - (size_t)(colon - l.p) - 1, is_fvchar);
}

static bool
ref_field_prefix(struct line l)
{
	size_t n = l.n;

	if (n > 0 && l.p[n - 1] == '\r')
		n--;
	const char *colon = memchr(l.p, ':', n);
	if (colon == NULL)
		return n == l.n && all(l.p, n, is_tchar);
	return colon != l.p && all(l.p, (size_t)(colon - l.p), is_tchar) &&
	    all(colon + 1, n - (size_t)(colon - l.p) - 1, is_fvchar);
}

static void
trim(const char **p, size_t *n)
{
	while (*n > 0 && (**p == ' ' || **p == '\t')) {
		(*p)++;
		(*n)--;
	}
	while (*n > 0 && ((*p)[*n - 1] == ' ' || (*p)[*n - 1] == '\t'))
		(*n)--;
}

/* The value of a field line (OWS trimmed). */
static void
field_value(struct line l, const char **v, size_t *vn)
{
	const char *colon = memchr(l.p, ':', l.n);

	*v = colon + 1;
	*vn = l.n - (size_t)(colon - l.p) - 1;
	trim(v, vn);
}

static bool
field_is(struct line l, const char *name)
{
	const char *colon = memchr(l.p, ':', l.n);

	return ci_eq(l.p, (size_t)(colon - l.p), name);
}

/* The head's meaning: Host, Content-Length, Transfer-Encoding. */
static bool
ref_semantics(const struct line *f, size_t n, struct ref_head *r)
{
	size_t hosts = 0, codings = 0;
	bool cl_seen = false, cl_bad = false, te_seen = false, last_chunked = false;
	const char *host = NULL;
	size_t host_len = 0;

	for (size_t i = 0; i < n; i++) {
		const char *v;
		size_t vn;
		field_value(f[i], &v, &vn);
		if (field_is(f[i], "Host")) {
			if (hosts++ == 0) {
				host = v;
				host_len = vn;
			}
		} else if (field_is(f[i], "Content-Length")) {
			if (vn == 0)
				cl_bad = true;
			for (size_t s = 0; vn > 0 && s <= vn;) {
				const char *comma = memchr(v + s, ',', vn - s);
				size_t e = comma ? (size_t)(comma - v) : vn;
				const char *el = v + s;
				size_t en = e - s;
				trim(&el, &en);
				uint64_t x = 0;
				bool ok = en > 0;
				for (size_t k = 0; k < en && ok; k++) {
					unsigned d = (unsigned)((unsigned char)el[k] - '0');
					ok = d <= 9 && x <= (UINT64_C(0x7fffffffffffffff) - d) / 10;
					x = x * 10 + d;
				}
				if (!ok || (cl_seen && x != r->cl))
					cl_bad = true;
				cl_seen = true;
				r->cl = x;
				s = e + 1;
			}
		} else if (field_is(f[i], "Transfer-Encoding")) {
			te_seen = true;
			for (size_t s = 0; s <= vn;) {
				const char *comma = vn > s ? memchr(v + s, ',', vn - s) : NULL;
				size_t e = comma ? (size_t)(comma - v) : vn;
				const char *el = v + s;
				size_t en = e - s;
				trim(&el, &en);
				if (en > 0) {
					codings++;
					last_chunked = ci_eq(el, en, "chunked");
				}
				s = e + 1;
			}
		}
	}
	if (hosts > 1 || (hosts == 0 && r->minor == 1) || (hosts == 1 && !ref_authority(host, host_len, false)))
		return false;
	if (!r->host_set) {
		r->host = host;
		r->host_len = hosts ? host_len : 0;
	}
	if (cl_bad)
		return false;
	if (te_seen) {
		if (r->minor == 0 || cl_seen || codings != 1 || !last_chunked)
			return false;
		r->body = HTTP1_BODY_CHUNKED;
	} else {
		r->body = cl_seen ? HTTP1_BODY_LENGTH : HTTP1_BODY_NONE;
	}
	if (r->body != HTTP1_BODY_LENGTH)
		r->cl = 0;
	return true;
}

/*
 * The reference: the head length, R_NEED or R_BAD. Lines are cut at each CRLF of the first
 * min(len, max_head) bytes; the piece after the last CRLF is an unfinished line.
 */
static ssize_t
ref_parse(const char *buf, size_t len, size_t max_head, size_t max_fields, struct ref_head *r)
{
	struct line fields[MAXH + 1];
	size_t cap = len < max_head ? len : max_head, pos = 0, nf = 0;
	bool have_request = false;

	memset(r, 0, sizeof(*r));
	for (;;) {
		const char *crlf = NULL;
		for (size_t i = pos; i + 1 < cap && !crlf; i++)
			if (buf[i] == '\r' && buf[i + 1] == '\n')
				crlf = buf + i;
		struct line l = { buf + pos, crlf ? (size_t)(crlf - buf) - pos : cap - pos };
		if (!have_request) {
			if (crlf && l.n == 0) {		/* an empty line before the request line */
				pos += 2;
				continue;
			}
			if (!crlf) {
				if (!(l.n == 1 && l.p[0] == '\r') && !ref_request_prefix(l))
					return R_BAD;
				return len < max_head ? R_NEED : R_BAD;	/* 414 */
			}
			if (!ref_request_line(l, r))
				return R_BAD;
			have_request = true;
		} else if (crlf && l.n == 0) {		/* the end of the head */
			pos += 2;
			r->nfields = nf;
			return ref_semantics(fields, nf, r) ? (ssize_t)pos : R_BAD;
		} else {
			if (l.n > 0 && (l.p[0] == ' ' || l.p[0] == '\t' || l.p[0] == '\n'))
				return R_BAD;		/* obs-fold, whitespace, bare LF */
			if (l.n > 0 && l.p[0] == '\r' && (crlf || l.n > 1))
				return R_BAD;		/* a CR not followed by LF */
			if (!crlf && l.n == 1 && l.p[0] == '\r')
				return len < max_head ? R_NEED : R_BAD;	/* the final CRLF, half there */
			if (l.n > 0 && l.p[0] != '\r' && nf == max_fields)
				return R_BAD;		/* 431: too many fields */
			if (!crlf) {
				if (!ref_field_prefix(l))
					return R_BAD;
				return len < max_head ? R_NEED : R_BAD;	/* 431 */
			}
			if (!ref_field_line(l))
				return R_BAD;
			fields[nf++] = l;
		}
		pos += l.n + 2;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t heads[4] = { 16, 64, 200, 65536 };
	static const size_t nfields[4] = { 0, 1, 3, MAXH };
	struct http1_header h[MAXH];
	struct http1_request req;
	struct ref_head r;

	if (size == 0 || size > MAXLEN + 1)
		return 0;
	uint8_t ctl = data[size - 1];
	size--;
	struct http1_limits lim = { heads[ctl & 3], nfields[(ctl >> 2) & 3] };
	char *buf = malloc(size ? size : 1);
	CHECK(buf != NULL);
	if (size)
		memcpy(buf, data, size);

	memset(&req, 0, sizeof(req));
	req.headers = h;
	ssize_t got = http1_parse_request(buf, size, &lim, &req);
	ssize_t want = ref_parse(buf, size, lim.max_head_size, lim.max_headers, &r);
	CHECK(got == (want == R_BAD ? HTTP1_ERROR : want == R_NEED ? HTTP1_NEED_MORE : want));
	if (got > 0) {
		CHECK(req.minor == r.minor && req.nheaders == r.nfields);
		CHECK(req.body == r.body && req.content_length == r.cl);
		CHECK(req.host.len == r.host_len && (r.host_len == 0 || memcmp(req.host.p, r.host, r.host_len) == 0));
	}
	free(buf);
	return 0;
}
