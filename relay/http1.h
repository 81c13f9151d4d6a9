/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * http1.h: incremental, zero-copy HTTP/1.x head parser and body framing (RFC 9112).
 *
 * Parsers are pure: they read a buffer that holds the start of a head, never copy header
 * text, and describe the head as slices (pointer + length) into that buffer. The caller
 * parses from the start once the head can be complete: http1_head_end finds the end of a
 * head incrementally (each byte looked at once however the head is trickled in), so a head
 * is parsed once, not once per read. Body framing is a small state machine fed with whatever bytes
 * arrived; it says how many of them belong to the body and when the body ended, so bytes
 * can be forwarded as-is (chunked bodies are passed through, not re-encoded).
 *
 * The one header of http1.c (request heads; the case-insensitive compare and list matcher
 * route.c and rewrite.c use too), http1_field.c (field lines), http1_resp.c (response heads)
 * and http1_body.c (body framing); http1_int.h is private to those files.
 */
#ifndef EXRELAY_HTTP1_H
#define EXRELAY_HTTP1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP1_NEED_MORE (-2)	/* the buffer is a valid prefix of a head: read more */
#define HTTP1_ERROR     (-1)	/* invalid: see ->status and ->error */

struct http1_slice {
	const char *p;
	size_t len;
};

struct http1_header {
	struct http1_slice name;	/* as sent: case kept */
	struct http1_slice value;	/* leading and trailing OWS removed */
};

/* Body framing kinds, for requests and responses. */
#define HTTP1_BODY_KINDS(X) \
	X(BODY_NONE)	/* no body (no CL/TE on a request; HEAD/1xx/204/304 responses) */ \
	X(BODY_LENGTH)	/* Content-Length bytes */ \
	X(BODY_CHUNKED)	/* Transfer-Encoding: chunked */ \
	X(BODY_CLOSE)	/* response delimited by the backend closing */ \
	X(BODY_TUNNEL)	/* after 101 Switching Protocols or a 2xx CONNECT: raw bytes both ways */

enum http1_body_kind {
#define X(n) HTTP1_##n,
	HTTP1_BODY_KINDS(X)
#undef X
};
const char *http1_body_kind_str(enum http1_body_kind k);

/* Parse limits, from limits = { ... } in the configuration. */
struct http1_limits {
	size_t max_head_size;	/* bytes of request/status line + headers + final CRLF */
	size_t max_headers;	/* header fields; also the capacity of the caller's array */
};

struct http1_request {
	struct http1_slice method;	/* any RFC 9110 token, e.g. RPC_IN_DATA */
	struct http1_slice target;	/* as sent */
	struct http1_slice path;	/* origin-form part of target: from its first '/' (before '?') */
					/* len 0 for CONNECT; "*" for OPTIONS *; for absolute-form without
					 * a path (RFC 9112 3.2.2) a static "/" ("http://h", "http://h?q"),
					 * or "*" for OPTIONS without path and query (RFC 9112 3.2.4):
					 * the only slice that may point outside buf */
	struct http1_slice query;	/* after '?', without it; len 0 if none */
	struct http1_slice authority;	/* absolute-form: host[:port] of the target, else len 0 */
	struct http1_slice host;	/* Host header value (or authority for absolute-form) */
	int minor;			/* 0 or 1: HTTP/1.minor */
	struct http1_header *headers;	/* the caller's array (capacity limits.max_headers) */
	size_t nheaders;
	size_t head_len;		/* bytes of the head including the final CRLF */

	enum http1_body_kind body;	/* BODY_NONE, BODY_LENGTH or BODY_CHUNKED */
	uint64_t content_length;	/* for BODY_LENGTH (up to 2^63-1; 0 is BODY_LENGTH too); the
					 * value of every Content-Length element ("5, 5" is 5) */
	bool keep_alive;		/* by version and Connection tokens */
	bool expect_continue;		/* Expect: 100-continue (HTTP/1.1 only; other values ignored) */
	bool upgrade_requested;		/* Upgrade header present and Connection names "upgrade" */
	bool upgrade;			/* upgrade_requested, and every protocol Upgrade lists is one of
					 * HTTP1_UPGRADE_PROTOCOLS (websocket): the upgrade is forwarded.
					 * Otherwise the request goes on as plain HTTP/1.1 (Upgrade and
					 * HTTP2-Settings dropped). A per-route list would call
					 * http1_upgrade_allowed after routing and set upgrade from it. */
	bool is_connect;		/* CONNECT method (refused by the relay with 501/405) */
	bool absolute_form;

	int status;			/* on HTTP1_ERROR: 400, 414, 431, 501 or 505 */
	const char *error;		/* on HTTP1_ERROR: a short static reason for the log */
};

struct http1_response {
	int minor;
	int status;			/* 100..999 */
	struct http1_slice reason;
	struct http1_header *headers;
	size_t nheaders;
	size_t head_len;

	enum http1_body_kind body;	/* any kind */
	uint64_t content_length;	/* the Content-Length value when has_content_length (any kind) */
	bool has_content_length;	/* a valid Content-Length: one value, or a list of equal ones */
	bool keep_alive;		/* the backend is willing to keep the connection */

	const char *error;		/* on HTTP1_ERROR: short static reason (the relay answers 502) */
};

/*
 * Parses a request head at the start of buf[0..len).
 * Returns head_len (> 0) when a complete valid head is there (fields of req filled, headers
 * in req->headers which the caller points at an array of lim->max_headers entries);
 * HTTP1_NEED_MORE when buf is a valid proper prefix and shorter than lim->max_head_size;
 * HTTP1_ERROR with req->status and req->error otherwise:
 *   400 malformed line or field (whitespace before ':', obs-fold, bare CR/LF, NUL or CTL in a
 *       value, bad token, bad version), a '#' (fragment) in the target (RFC 9112 3.2),
 *       missing/repeated/invalid Host on HTTP/1.1, invalid or conflicting Content-Length
 *       (a list of equal values, "5, 5", is one value: RFC 9110 8.6), Content-Length together
 *       with Transfer-Encoding,
 *   414 request line longer than max_head_size (no CRLF yet at the limit),
 *   431 head longer than max_head_size or more than max_headers fields,
 *   501 Transfer-Encoding other than "chunked" (e.g. gzip, or chunked not last),
 *   505 HTTP version other than 1.0/1.1.
 * Leading empty lines (CRLF) before a request line are skipped (RFC 9112 2.2) and count in head_len.
 */
ssize_t http1_parse_request(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_request *req);

/*
 * Incremental search for the end of a request head, so that a head trickled in pieces is
 * looked at once per byte rather than parsed again from its start on every read.
 * buf[0..len) is the start of a head that grows between calls; *scanned is where the last
 * call stopped (0 for a new head; reset it whenever buf stops being that same head).
 * Returns true when http1_parse_request has something to decide: a CRLF CRLF right after a
 * byte other than CR and LF (the only way a valid head ends), or a bare LF or bare CR (an
 * error the parser reports at once). *scanned is then past that point, so a parse that still
 * says HTTP1_NEED_MORE resumes the search after it. Returns false (*scanned advanced) when
 * buf cannot be a complete head yet. Other errors (a bad byte in a line) are found when the
 * head ends, reaches max_head_size, or the client stops: the caller parses in those cases
 * whatever this says. Never reads past len.
 */
bool http1_head_end(const char *buf, size_t len, size_t *scanned);

/*
 * Parses a response head at the start of buf[0..len); req_method is the method of the request
 * it answers (HEAD and CONNECT change framing). Same return values; on HTTP1_ERROR only
 * resp->error is set (the relay answers 502 and does not reuse that backend connection).
 * Framing per RFC 9112 6.3: 1xx/204/304/HEAD -> BODY_NONE, 101 -> BODY_TUNNEL, chunked,
 * Content-Length, else BODY_CLOSE. CL+TE together, invalid CL, TE not ending in chunked
 * (unless BODY_CLOSE applies) are errors.
 */
ssize_t http1_resp_parse(const char *buf, size_t len, const struct http1_limits *lim,
    struct http1_slice req_method, struct http1_response *resp);

/* True when a[0..an) and b[0..bn) are equal, ASCII case-insensitively (the locale plays no part). */
bool http1_ci_eq(const char *a, size_t an, const char *b, size_t bn);
/* The same, with '_' and '-' equal too (CGI and IIS fold field names that way). */
bool http1_ci_eq_dash(const char *a, size_t an, const char *b, size_t bn);

/* Upgrade protocols (RFC 9110 7.8) forwarded to a backend; others are dropped (RFC 9113 3.1:
 * exrelay cannot follow h2c after a 101). Names compare case-insensitively. */
#define HTTP1_UPGRADE_PROTOCOLS { "websocket" }

/*
 * True when the Upgrade value lists at least one protocol and the name of every one (before
 * an optional "/version") is among protocols[0..n), case-insensitively.
 */
bool http1_upgrade_allowed(struct http1_slice value, const char *const *protocols, size_t n);

/* Finds the first header named name (case-insensitive); NULL if none. */
const struct http1_header *http1_find_header(const struct http1_header *h, size_t n, const char *name);

/*
 * True when the comma-separated list value has an element equal to token[0..toklen),
 * case-insensitively, with OWS around elements trimmed. Empty elements never match, nor does
 * an empty token.
 */
bool http1_list_has_n(struct http1_slice value, const char *token, size_t toklen);

/* http1_list_has_n for a C string token. */
bool http1_list_has(struct http1_slice value, const char *token);

/* Chunked body parser states (struct http1_body.state), one comment per state. */
#define HTTP1_CHUNK_STATES(X) \
	X(CS_SIZE_FIRST)	/* expecting the first hex digit of a chunk-size */ \
	X(CS_SIZE)		/* in the chunk-size; ext_len counts its digits */ \
	X(CS_SIZE_BWS)		/* BWS after the size: more BWS or ';' must follow */ \
	X(CS_EXT)		/* in chunk-ext, up to the CR; ext_len bounds it */ \
	X(CS_SIZE_LF)		/* CR of the size line seen: LF must follow */ \
	X(CS_DATA)		/* chunk data: remaining bytes left */ \
	X(CS_DATA_CR)		/* the CR after chunk data */ \
	X(CS_DATA_LF)		/* the LF after chunk data */ \
	X(CS_TRAILER)		/* start of a trailer field line, or of the final CRLF */ \
	X(CS_TR_NAME)		/* in a trailer field name, up to ':' */ \
	X(CS_TR_VALUE)		/* in a trailer field value, up to CR */ \
	X(CS_TR_LF)		/* CR of a trailer field line seen: LF must follow */ \
	X(CS_END_LF)		/* CR of the final empty line seen: LF ends the body */ \
	X(CS_ERROR)		/* a framing error was reported; sticky */

enum http1_chunk_state {
#define X(n) HTTP1_##n,
	HTTP1_CHUNK_STATES(X)
#undef X
};
const char *http1_chunk_state_str(enum http1_chunk_state s);

/* Body framing state, fed with the bytes that follow the head. */
struct http1_body {
	enum http1_body_kind kind;
	uint64_t remaining;		/* BODY_LENGTH: bytes left; BODY_CHUNKED: data bytes left in chunk */
	enum http1_chunk_state state;	/* chunked parser state (private) */
	unsigned ext_len;		/* chunked: bytes of chunk-ext / trailer line seen (bounded) */
	unsigned trailer_bytes;		/* chunked: total trailer size (bounded) */
	bool done;			/* the body has ended: the next byte is the next message */
	const char *error;		/* on -1 */
};

/* Starts framing a body of the given kind (content_length for BODY_LENGTH). done is set at
 * once for BODY_NONE and for BODY_LENGTH with content_length 0. */
void http1_body_init(struct http1_body *b, enum http1_body_kind kind, uint64_t content_length);

/*
 * Feeds buf[0..len) to the framing state. Returns how many of those bytes belong to the body
 * (0..len; all of them for BODY_CLOSE/BODY_TUNNEL), setting b->done when the body's last byte
 * was among them (then bytes after the returned count belong to the next message); or -1 on
 * a framing error (bad chunk size, overflow, missing CRLF, bare LF, chunk-ext or trailers over
 * their bounds) with b->error set. Never reads past len; never stores pointers into buf.
 */
ssize_t http1_body_feed(struct http1_body *b, const char *buf, size_t len);

/*
 * How many of the next bytes belong to the body as opaque data, so that they may pass
 * without being looked at (splice): BODY_LENGTH the bytes left; BODY_CHUNKED inside chunk
 * data the bytes left of that chunk (0 on a size line, CRLF or trailer: those are parsed);
 * BODY_CLOSE and BODY_TUNNEL UINT64_MAX; 0 once done or for BODY_NONE.
 */
uint64_t http1_body_opaque(const struct http1_body *b);
/* Counts n opaque bytes (n <= http1_body_opaque(b)) as fed, as http1_body_feed would. */
void http1_body_skip(struct http1_body *b, uint64_t n);

#endif
