/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config_security.c: the Exchange protection settings (DESIGN.md, "Exchange protection"):
 * `security` (the built-in exploit filters, internal-header stripping and the
 * administrator's rules), `auth_guard` (failed-login limits) and a route's `allow_from`.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"

/* One element of security.rules into r; name defaults to "rule<i+1>". */
static int
config_rule_load(struct config_ctx *x, config_setting_t *g, struct filter_rule *r, size_t i)
{
	static const char *const known[] = { "name", "methods", "path", "query_contains", NULL };
	const char **methods = NULL;
	int rc = config_want_section(x, g, "a rule", known) ||
	    config_get_str(x, g, "name", &r->name, true) ||
	    config_get_str(x, g, "path", &r->path, true) ||
	    config_get_str(x, g, "query_contains", &r->query, true) ||
	    config_get_strings(x, g, "methods", &methods, &r->nmethods);

	r->methods = methods;
	if (rc)
		return -1;
	if (!r->name) {
		char *n = malloc(32);
		if (!n)
			return config_fail(x, g, "out of memory");
		snprintf(n, 32, "rule%zu", i + 1);
		r->name = n;
		r->name_owned = true;
	}
	if (r->path && r->path[0] != '/')
		return config_fail(x, config_setting_get_member(g, "path"), "a rule's 'path' must start with '/'");
	if (!(r->path && r->path[0]) && !(r->query && r->query[0]) && r->nmethods == 0)
		return config_fail(x, g, "a rule needs 'path', 'query_contains' or 'methods' (it would refuse everything)");
	return 0;
}

/* security = { exchange_filters; strip_internal_headers; rules = ( ... ); } */
int
config_security_load(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "exchange_filters", "strip_internal_headers", "rules", NULL };
	struct config *c = x->cfg;
	config_setting_t *g = config_setting_get_member(root, "security"), *l;

	if (!g)
		return 0;
	if (config_want_section(x, g, "security", known) ||
	    config_get_bool(x, g, "exchange_filters", &c->filters.exchange) ||
	    config_get_bool(x, g, "strip_internal_headers", &c->strip_internal))
		return -1;
	if (!(l = config_setting_get_member(g, "rules")))
		return 0;
	if (config_setting_type(l) != CONFIG_TYPE_LIST)
		return config_fail(x, l, "'rules' must be a list ( { ... }, ... )");
	size_t n = (size_t)config_setting_length(l);
	if (!(c->rules = calloc(n + 1, sizeof(*c->rules))))
		return config_fail(x, l, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (config_rule_load(x, config_setting_get_elem(l, (unsigned)i), &c->rules[i], i) == -1)
			return -1;
		c->filters.nrules = i + 1;
	}
	c->filters.rules = c->rules;
	return 0;
}

/* auth_guard = { enabled; max_failures; window; block; familiar_days; max_failures_per_client; max_entries; } */
int
config_guard_load(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "enabled", "max_failures", "window", "block", "familiar_days",
	    "max_failures_per_client", "max_entries", NULL };
	struct guard_params *p = &x->cfg->guard;
	config_setting_t *g = config_setting_get_member(root, "auth_guard");
	int entries = (int)p->max_entries;

	if (!g)
		return 0;
	if (config_want_section(x, g, "auth_guard", known) ||
	    config_get_bool(x, g, "enabled", &p->enabled) ||
	    config_get_int(x, g, "max_failures", &p->max_failures, 1, 1000) ||
	    config_get_duration(x, g, "window", &p->window, 0, 86400 * 7) ||
	    config_get_duration(x, g, "block", &p->block, 0, 86400 * 7) ||
	    config_get_number(x, g, "familiar_days", &p->familiar_days, 0, 365, "days") ||
	    config_get_int(x, g, "max_failures_per_client", &p->max_failures_per_client, 1, 1000000) ||
	    config_get_int(x, g, "max_entries", &entries, 1000, 50000000))
		return -1;
	p->max_entries = (size_t)entries;
	return 0;
}

/* A route's allow_from into c->route_acl[i] (the array is made with the first route). */
int
config_route_acl_load(struct config_ctx *x, config_setting_t *g, size_t i)
{
	struct config *c = x->cfg;

	if (!c->route_acl) {
		size_t n = (size_t)config_setting_length(config_setting_parent(g));
		if (!(c->route_acl = calloc(n + 1, sizeof(*c->route_acl))))
			return config_fail(x, g, "out of memory");
	}
	return config_get_prefixes(x, g, "allow_from", &c->route_acl[i].allow, &c->route_acl[i].nallow);
}

/* Frees what the loaders above allocated. */
void
config_security_free(struct config *c)
{
	for (size_t i = 0; c->rules && i < c->filters.nrules + 1; i++) {
		config_free_const(c->rules[i].methods);
		if (c->rules[i].name_owned)
			config_free_const(c->rules[i].name);
	}
	free(c->rules);
	for (size_t i = 0; c->route_acl && i < c->nroutes + 1; i++)
		free(c->route_acl[i].allow);
	free(c->route_acl);
}

/* True when route i lets the client at addr in (no allow_from: everyone). */
bool
config_route_allows(const struct config *c, size_t i, const struct sockaddr *addr)
{
	if (!c->route_acl || c->route_acl[i].nallow == 0)
		return true;
	for (size_t k = 0; k < c->route_acl[i].nallow; k++)
		if (addr_prefix_match(&c->route_acl[i].allow[k], addr))
			return true;
	return false;
}
