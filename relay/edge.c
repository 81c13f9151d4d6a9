/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * edge.c: Exchange protection at the edge, for one request (DESIGN.md, "Exchange
 * protection"): the exploit filters and the administrator's rules (filter.c), a route's
 * allow_from, and the authentication guard (guard.c) with its log lines. It decides; txn.c
 * answers a refusal and forwards the rest. The guard's lines have one fixed format, for
 * fail2ban:
 *
 *   auth-guard: block user="alice" client=203.0.113.9 failures=5 seconds=900 scope=unfamiliar
 *   auth-guard: block client=203.0.113.9 failures=31 seconds=900
 *   auth-guard: unblock user="alice" client=203.0.113.9 scope=unfamiliar
 *   auth-guard: unblock client=203.0.113.9
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock.h"
#include "relay.h"

/* Fills a refusal: status, the access log's ROUTE tag and the reason. */
static int
refuse(struct edge_refusal *r, int status, const char *tag, const char *name)
{
	r->status = status;
	snprintf(r->tag, sizeof(r->tag), "%s:%s", tag, name);
	return status;
}

/* The filters and rules, before routing: 403, or 0 to go on. */
int
edge_filter(struct conn *c, const struct http1_request *req, struct edge_refusal *r)
{
	const char *rule = filter_request(req, &c->cfg->filters);

	memset(r, 0, sizeof(*r));
	if (!rule)
		return 0;
	metrics_filter_blocked(rule);
	return refuse(r, 403, "filter", rule);
}

/* A user name as a log field: quotes and control characters become '?'. */
static void
log_name(const char *in, char *out, size_t cap)
{
	size_t k = 0;

	for (; *in && k + 1 < cap; in++)
		out[k++] = (*in == '"' || *in == '\\' || (unsigned char)*in < 0x20) ? '?' : *in;
	out[k] = '\0';
}

/* Writes the guard's block and unblock lines for ev. */
static void
edge_guard_log(const struct conn *c, const struct guard_event *ev, const char *user)
{
	const char *scope = ev->familiar ? "familiar" : "unfamiliar";
	char name[160];

	log_name(user, name, sizeof(name));
	if (ev->kind == GUARD_EV_BLOCK_USER || ev->kind == GUARD_EV_BLOCK_BOTH)
		log_warn("auth-guard: block user=\"%s\" client=%s failures=%u seconds=%u scope=%s", name,
		    c->client_ip, ev->failures, ev->retry_after, scope);
	if (ev->kind == GUARD_EV_BLOCK_CLIENT || ev->kind == GUARD_EV_BLOCK_BOTH)
		log_warn("auth-guard: block client=%s failures=%u seconds=%u", c->client_ip,
		    ev->client_failures, ev->retry_after);
	if (ev->kind == GUARD_EV_UNBLOCK_USER)
		log_info("auth-guard: unblock user=\"%s\" client=%s scope=%s", name, c->client_ip, scope);
	if (ev->kind == GUARD_EV_UNBLOCK_CLIENT)
		log_info("auth-guard: unblock client=%s", c->client_ip);
}

/* The challenge of a refused login: the scheme the client used, as the backend offers it. */
static void
challenge(const struct http1_request *req, const struct cred *cr, struct edge_refusal *r)
{
	char realm[96];
	size_t k = 0;

	if (cr->kind == CRED_BASIC) {
		for (size_t i = 0; i < req->host.len && k + 1 < sizeof(realm); i++)
			if (req->host.p[i] != '"' && req->host.p[i] != '\\' && req->host.p[i] > 0x20)
				realm[k++] = req->host.p[i];
		realm[k] = '\0';
		snprintf(r->extra, sizeof(r->extra), "WWW-Authenticate: Basic realm=\"%s\"\r\n", realm);
		return;
	}
	/* NTLM authenticates the connection: a new one starts the handshake over. */
	snprintf(r->extra, sizeof(r->extra), "WWW-Authenticate: Negotiate\r\nWWW-Authenticate: NTLM\r\n");
	r->close = true;
}

/*
 * After routing: the route's allow_from, then the guard for a request carrying credentials
 * (cr). Returns the refusal's status (403, 401, 429), or 0 to forward; a login to forward is
 * remembered in c->auth_ukey (and its name in auth_user), for edge_response.
 */
int
edge_route(struct conn *c, const struct http1_request *req, size_t route, const struct cred *cr,
    struct edge_refusal *r)
{
	struct guard_event ev;

	memset(r, 0, sizeof(*r));
	c->auth_ukey = 0;
	if (!config_route_allows(c->cfg, route, (const struct sockaddr *)&c->client_addr)) {
		metrics_filter_blocked("allow_from");
		return refuse(r, 403, "filter", "allow_from");
	}
	if (!c->cfg->guard.enabled || (cr->kind != CRED_BASIC && cr->kind != CRED_NTLM))
		return 0;
	if (!c->auth_ckey)
		c->auth_ckey = guard_key(c->client_ip);	/* once per connection */
	uint64_t user = guard_key(cr->key);
	enum guard_verdict v = guard_check(&c->cfg->guard, user, c->auth_ckey, clock_mono(), &ev);
	if (ev.kind != GUARD_EV_NONE)
		edge_guard_log(c, &ev, cr->user);
	if (v == GUARD_BLOCK_CLIENT) {
		snprintf(r->extra, sizeof(r->extra), "Retry-After: %u\r\n", ev.retry_after);
		return refuse(r, 429, "guard", "client");
	}
	if (v == GUARD_BLOCK_USER) {
		challenge(req, cr, r);
		return refuse(r, 401, "guard", "user");
	}
	c->auth_ukey = user;
	size_t kl = strnlen(cr->key, sizeof(c->auth_user) - 1);
	memcpy(c->auth_user, cr->key, kl);
	c->auth_user[kl] = '\0';
	return 0;
}

/* The backend's final status for a request that carried credentials: the guard counts it. */
void
edge_response(struct conn *c, int status)
{
	struct guard_event ev;

	if (!c->auth_ukey)
		return;
	if (status == 401 || (status >= 200 && status < 400)) {
		guard_result(&c->cfg->guard, c->auth_ukey, c->auth_ckey, status != 401, clock_mono(), &ev);
		if (ev.kind != GUARD_EV_NONE)
			edge_guard_log(c, &ev, c->auth_user);
	}
	c->auth_ukey = 0;
}
