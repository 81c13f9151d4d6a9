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

#include <gnutls/gnutls.h>

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
	return rewrite_status_response(out, cap, relay_health_draining() ? 503 : 200, close,
	    "Cache-Control: no-store\r\n", relay_health_draining() ? "draining\n" : "ok\n", head_only);
}

/*
 * The metrics body's capacity: the whole answer goes into the client's output buffer at once,
 * so the body may take all of it but room for the head (about 62 KiB; a few dozen servers
 * with a dozen checked protocols each fit).
 */
#define METRICS_BODY_CAP (BUF_CAP - 1024)

/* Writes the metrics text: the workers' counters, build, servers, process. */
static void
admin_metrics_text(struct metrics_out *o)
{
	static int warned;
	char libev[32], libconfig[32];

	snprintf(libev, sizeof(libev), "%d.%d", ev_version_major(), ev_version_minor());
	snprintf(libconfig, sizeof(libconfig), "%d.%d.%d", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
	    LIBCONFIG_VER_REVISION);
	metrics_write(o);
	metrics_proc_build_info(o, PACKAGE_VERSION, gnutls_check_version(NULL), libev, libconfig);
	metrics_server_write(o);
	metrics_proc_write(o);
	if (o->cut && !__atomic_exchange_n(&warned, 1, __ATOMIC_RELAXED))
		log_warn("/metrics: the answer is cut at %zu bytes (too many servers or routes); "
		    "the families after that are left out", o->n);
}

/* The metrics answer: every counter, summed over the workers (HEAD: the head alone). */
static ssize_t
admin_metrics(char *out, size_t cap, bool head_only, bool close)
{
	static __thread char body[METRICS_BODY_CAP];
	struct metrics_out o = { body, sizeof(body) - 1, 0, false };

	admin_metrics_text(&o);
	o.n += epcheck_metrics(body + o.n, o.cap - o.n);
	body[o.n] = '\0';
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
	const char *line = relay_health_draining() || servers_all_down(cfg) ? "drain\n" : "up ready\n";

	(void)!send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}
