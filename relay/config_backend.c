/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config_backend.c: where traffic goes: one element of backends = ( ... ) (name, servers,
 * send_proxy, idle_timeout, add_headers, TLS to the servers) and one element of
 * routes = ( ... ) (the backend it names, hosts, paths, methods). The readers and the
 * keyword tables come from config.c; server addresses are parsed by addr.c.
 */
#include "autoconf.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config_int.h"

/* True when p[0..n) is a non-empty RFC 9110 token (a field name or a method). */
static bool
config_backend_is_token(const char *p, size_t n)
{
	bool ok = n > 0;

	for (size_t i = 0; ok && i < n; i++)
		ok = p[i] > 0x20 && p[i] < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", p[i]);
	return ok;
}

/* backends[].tls = { verify; ca_file; sni; cert; key; channel_binding; ktls; } */
static int
config_backend_tls(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	static const char *const known[] = { "verify", "ca_file", "sni", "cert", "key", "channel_binding", "ktls",
	    NULL };
	const char *ca = NULL, *sni = NULL, *cert = NULL, *key = NULL;
	bool verify = true, ktls = false;
	int cb = CB_CHECK;
	char msg[512];

	if (config_want_section(x, g, "tls", known) || config_get_bool(x, g, "verify", &verify) ||
	    config_get_str(x, g, "ca_file", &ca, false) || config_get_str(x, g, "sni", &sni, false) ||
	    config_get_str(x, g, "cert", &cert, false) || config_get_str(x, g, "key", &key, false) ||
	    config_get_enum(x, g, "channel_binding", &cb, config_cb_mode_kw) ||
	    config_get_bool(x, g, "ktls", &ktls))
		return -1;
	b->channel_binding = (enum cb_mode)cb;
	if (!(b->tls = calloc(1, sizeof(*b->tls))))
		return config_fail(x, g, "out of memory");
	b->tls->ktls = ktls;
	if (tls_client_setup(b->tls, verify, ca, cert, key, sni, msg, sizeof(msg)) == -1) {
		x->unusable_file = true;
		return config_fail(x, g, "backend '%s': %s", b->name ? b->name : "?", msg);
	}
	return 0;
}

/* Checks that every add_headers entry is "Name: value" with a token name, on one line. */
static int
config_backend_headers(struct config_ctx *x, config_setting_t *g, const struct cfg_backend *b)
{
	for (size_t i = 0; i < b->nadd; i++) {
		const char *h = b->add_headers[i], *colon = strchr(h, ':');

		if (!colon || strpbrk(h, "\r\n") || !config_backend_is_token(h, (size_t)(colon - h)))
			return config_fail(x, config_elem(g, "add_headers", i),
			    "backend '%s': add_headers entry \"%s\" is not \"Name: value\"", b->name, h);
	}
	return 0;
}

/* Reads the settings of one backend. */
static int
config_backend_read(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	static const char *const known[] = { "name", "servers", "tls", "send_proxy", "idle_timeout",
	    "add_headers", "check", NULL };
	int send_proxy = SEND_PROXY_OFF;

	b->idle_timeout = 3600;
	if (config_want_section(x, g, "a backend", known) ||
	    config_get_str(x, g, "name", &b->name, true) ||
	    config_get_enum(x, g, "send_proxy", &send_proxy, config_send_proxy_kw) ||
	    config_get_duration(x, g, "idle_timeout", &b->idle_timeout, 0, 7 * 86400) ||
	    config_get_strings(x, g, "add_headers", &b->add_headers, &b->nadd))
		return -1;
	b->send_proxy = (enum send_proxy)send_proxy;
	if (!b->name)
		return config_fail(x, g, "a backend needs a 'name'");
	if (config_servers_load(x, g, b) == -1 || config_check_load(x, g, b) == -1)
		return -1;
	if (config_setting_get_member(g, "tls") &&
	    config_backend_tls(x, config_setting_get_member(g, "tls"), b) == -1)
		return -1;
	return 0;
}

/* One element of backends = ( ... ) into p (a struct cfg_backend). */
int
config_backend_load(struct config_ctx *x, config_setting_t *g, void *p)
{
	return config_backend_read(x, g, p) == 0 ? config_backend_headers(x, g, p) : -1;
}

/* The index of the backend named name, or -1. */
static int
config_backend_find(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Host names are compared case-insensitively: keeps lower-case copies (freed with the config). */
static int
config_backend_route_hosts(struct config_ctx *x, config_setting_t *g, const char **hosts, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char *h = strdup(hosts[i]);
		for (char *p = h; p && *p; p++)
			*p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
		hosts[i] = h;
	}
	for (size_t i = 0; i < n; i++) {
		const char *h = hosts[i];
		if (!h || !*h || strpbrk(h, " /\t"))
			return config_fail(x, config_setting_get_member(g, "hosts"),
			    "invalid host name \"%s\"", h ? h : "");
	}
	return 0;
}

/* Checks that paths are normalised absolute paths and methods are tokens. */
static int
config_backend_route_check(struct config_ctx *x, config_setting_t *g, const struct route *r)
{
	for (size_t i = 0; i < r->npaths; i++) {
		const char *p = r->paths[i];
		char norm[1024];
		ssize_t n = route_normalize_path(p, strlen(p), norm, sizeof(norm), NULL);
		if (p[0] != '/' || n < 0 || (size_t)n != strlen(p) || strncasecmp(norm, p, (size_t)n) != 0)
			return config_fail(x, config_elem(g, "paths", i),
			    "path \"%s\" must be a normalised absolute path (like \"/rpc\")", p);
	}
	for (size_t i = 0; i < r->nmethods; i++)
		if (!config_backend_is_token(r->methods[i], strlen(r->methods[i])))
			return config_fail(x, config_elem(g, "methods", i),
			    "\"%s\" is not a method token", r->methods[i]);
	return 0;
}

/* One element of routes = ( ... ) into p (a struct route); the backends are loaded already. */
int
config_backend_route_load(struct config_ctx *x, config_setting_t *g, void *p)
{
	static const char *const known[] = { "backend", "hosts", "paths", "methods", "allow_from", NULL };
	struct route *r = p;
	const char *backend = NULL;

	const char **hosts = NULL, **paths = NULL, **methods = NULL;
	/* Each list is handed to r as soon as it exists, so that a failure frees it with r. */
	int rc = config_want_section(x, g, "a route", known) ||
	    config_get_str(x, g, "backend", &backend, true) ||
	    config_get_strings(x, g, "hosts", &hosts, &r->nhosts);
	r->hosts = hosts;
	rc = rc || config_backend_route_hosts(x, g, hosts, r->nhosts) ||
	    config_get_strings(x, g, "paths", &paths, &r->npaths);
	r->paths = paths;
	rc = rc || config_get_strings(x, g, "methods", &methods, &r->nmethods);
	r->methods = methods;
	if (rc || config_route_acl_load(x, g, (size_t)(r - x->cfg->routes)))
		return -1;
	if (!backend)
		return config_fail(x, g, "a route needs a 'backend'");
	if ((r->backend = config_backend_find(x->cfg, backend)) < 0)
		return config_fail(x, config_setting_get_member(g, "backend"),
		    "no backend named \"%s\"", backend);
	r->backend_name = backend;
	return config_backend_route_check(x, g, r);
}
