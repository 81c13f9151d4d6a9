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
#include <time.h>

#include "clock.h"
#include "relay.h"
#include "tls.h"

enum { F_METHOD, F_TARGET, F_PROTO, F_REFERER, F_USER_AGENT, F_USER, F_COUNT };

/*
 * Copies the fields the access log needs into c->loginfo (NUL-separated, each cut at 2 KiB).
 * The user is the one of Basic credentials or of an NTLM AUTHENTICATE (cr; never the
 * password), with spaces replaced so that it stays one field.
 */
void
access_save(struct conn *c, const struct http1_request *req, const struct cred *cr)
{
	const struct http1_header *ref = http1_find_header(req->headers, req->nheaders, "Referer");
	const struct http1_header *ua = http1_find_header(req->headers, req->nheaders, "User-Agent");
	char user[sizeof(cr->user)];
	size_t ulen = 0;

	if (cr->kind == CRED_BASIC || cr->kind == CRED_NTLM)
		for (const char *p = cr->user; *p && ulen + 1 < sizeof(user); p++)
			user[ulen++] = *p == ' ' ? '?' : *p;
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
	return clock_wall();
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
	if (c->route_name && c->route_name != c->route_tag)	/* routed to a backend: its duration */
		metrics_request_time(c->route_name, c->method_buf, r.duration_ms / 1000.0);
	free(c->loginfo);
	c->loginfo = NULL;
}
