/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * admin.c: what exrelay answers itself: which requests are its own (/health and /metrics on
 * an admin listener, a listener's health_path), their answers (the Prometheus text comes from
 * metrics.c), and the HAProxy agent-check line.
 */
#include "autoconf.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "epcheck.h"
#include "relay.h"
#include "rewrite.h"
#include "servers.h"

ENUM_STR(admin_answer_str, enum admin_answer, ADMIN_ANSWERS)

static bool
slice_is(struct http1_slice s, const char *text)
{
	return s.len == strlen(text) && memcmp(s.p, text, s.len) == 0;
}

/* Which of exrelay's own answers a request on listener l gets (ADMIN_NONE: route it). */
enum admin_answer
admin_route(const struct cfg_listener *l, const struct http1_request *req)
{
	bool get = slice_is(req->method, "GET") || slice_is(req->method, "HEAD");

	if (l->role == ROLE_ADMIN) {
		if (get && slice_is(req->path, "/health"))
			return ADMIN_HEALTH;
		if (get && slice_is(req->path, "/metrics"))
			return ADMIN_METRICS;
		return get ? ADMIN_NOT_FOUND : ADMIN_BAD_METHOD;
	}
	if (l->health_path && get && req->query.len == 0 && slice_is(req->path, l->health_path))
		return ADMIN_HEALTH;
	return ADMIN_NONE;
}

/* The health answer: 200 "ok" while accepting, 503 "draining" while draining. */
static ssize_t
admin_health(char *out, size_t cap, bool head_only, bool close)
{
	return rewrite_status_response(out, cap, relay_draining() ? 503 : 200, close,
	    "Cache-Control: no-store\r\n", relay_draining() ? "draining\n" : "ok\n", head_only);
}

/* The metrics answer: every counter, summed over the workers (HEAD: the head alone). */
static ssize_t
admin_metrics(char *out, size_t cap, bool head_only, bool close)
{
	static __thread char body[48 * 1024];
	size_t n = metrics_format(body, sizeof(body) - 1);

	n += epcheck_metrics(body + n, sizeof(body) - 1 - n);

	body[n] = '\0';
	return rewrite_status_response(out, cap, 200, close, NULL, body, head_only);
}

/*
 * Writes the answer a (ADMIN_HEALTH or ADMIN_METRICS) into out[0..cap): its length, or -1
 * when it does not fit.
 */
ssize_t
admin_write(enum admin_answer a, char *out, size_t cap, bool head_only, bool close)
{
	ASSERT(a == ADMIN_HEALTH || a == ADMIN_METRICS);
	return a == ADMIN_HEALTH ? admin_health(out, cap, head_only, close) : admin_metrics(out, cap, head_only, close);
}

/*
 * Answers an agent-check connection with one line, then closes it: "drain" while draining, or
 * while no server of a checked backend is usable (HAProxy then sends this host nothing new).
 */
void
admin_agent_reply(int fd, const struct config *cfg)
{
	const char *line = relay_draining() || servers_all_down(cfg) ? "drain\n" : "up ready\n";

	(void)!send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}
