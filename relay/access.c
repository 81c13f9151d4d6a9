/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * access.c: the access-log record of a request: the fields of its head that the log needs,
 * copied before the head's bytes are dropped (with the user name of Basic credentials, never
 * the password), and the record written when the response ends or the connection is cut.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "relay.h"
#include "tls.h"

enum { F_METHOD, F_TARGET, F_PROTO, F_REFERER, F_USER_AGENT, F_USER, F_COUNT };

/*
 * The user name of "Authorization: Basic base64(user:password)" into out (at most cap-1
 * bytes, printable only); returns its length, 0 when the field is absent, another scheme, or
 * malformed. NTLM and Negotiate name no user in the clear: they log "-".
 */
static size_t
basic_user(const struct http1_request *req, char *out, size_t cap)
{
	static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	const struct http1_header *a = http1_find_header(req->headers, req->nheaders, "Authorization");
	size_t n = 0, i;
	unsigned acc = 0;
	int bits = 0;

	if (!a || a->value.len < 7 || strncasecmp(a->value.p, "Basic ", 6) != 0)
		return 0;
	for (i = 6; i < a->value.len && a->value.p[i] == ' '; i++)
		;
	for (; i < a->value.len && a->value.p[i] != '='; i++) {
		const char *d = memchr(b64, a->value.p[i], 64);
		if (!d)
			return 0;
		acc = (acc << 6) | (unsigned)(d - b64);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			char ch = (char)((acc >> bits) & 0xff);
			if (ch == ':')
				return n;
			if (n + 1 >= cap || ch < 0x21 || ch > 0x7e)
				return 0;
			out[n++] = ch;
		}
	}
	return 0;	/* no ':' */
}

/* Copies the fields the access log needs into c->loginfo (NUL-separated, each cut at 2 KiB). */
void
access_save(struct conn *c, const struct http1_request *req)
{
	const struct http1_header *ref = http1_find_header(req->headers, req->nheaders, "Referer");
	const struct http1_header *ua = http1_find_header(req->headers, req->nheaders, "User-Agent");
	char user[128];
	size_t ulen = basic_user(req, user, sizeof(user));
	struct http1_slice f[F_COUNT] = { req->method, req->target, { req->minor ? "HTTP/1.1" : "HTTP/1.0", 8 },
	    ref ? ref->value : (struct http1_slice){ "", 0 }, ua ? ua->value : (struct http1_slice){ "", 0 },
	    { user, ulen } };
	size_t total = 0;

	for (int i = 0; i < F_COUNT; i++) {
		if (f[i].len > 2048)
			f[i].len = 2048;
		total += f[i].len + 1;
	}
	free(c->loginfo);
	if (!(c->loginfo = malloc(total)))
		return;
	char *p = c->loginfo;
	for (int i = 0; i < F_COUNT; i++) {
		memcpy(p, f[i].p, f[i].len);
		for (size_t k = 0; k < f[i].len; k++)
			if (p[k] == '\0')
				p[k] = '?';
		p += f[i].len;
		*p++ = '\0';
	}
}

/* The wall clock, in seconds (the access log's times). */
double
access_clock(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Writes the request's access-log line and counts it; frees the saved fields. */
void
access_log(struct conn *c, const char *termination)
{
	const char *f[F_COUNT] = { NULL };
	char *p = c->loginfo;
	char server[128] = "-";

	if (!p)
		return;
	for (int i = 0; i < F_COUNT; i++) {
		f[i] = *p ? p : NULL;
		p += strlen(p) + 1;
	}
	if (c->bidx >= 0 && c->bcfg && c->server >= 0)
		snprintf(server, sizeof(server), "%s", c->bcfg->backends[c->bidx].servers[c->server].text);
	struct access_record r = {
		.client = c->client_ip, .user = f[F_USER], .start = c->req_start,
		.method = f[F_METHOD], .target = f[F_TARGET], .proto = f[F_PROTO],
		.referer = f[F_REFERER], .user_agent = f[F_USER_AGENT],
		.status = c->status, .bytes_out = c->client.nwritten - c->resp_bytes_start,
		.bytes_in = c->req_bytes, .duration_ms = (access_clock() - c->req_start) * 1000.0,
		.route = c->route_name ? c->route_name : "-", .server = server,
		.termination = termination,
		.tls_version = c->client.tls ? tls_version_name(&c->client) : NULL,
		.tls_cipher = c->client.tls ? tls_cipher_name(&c->client) : NULL,
	};
	log_access(&r);
	metrics_request(c->route_name ? c->route_name : "-", c->status);
	free(c->loginfo);
	c->loginfo = NULL;
}
