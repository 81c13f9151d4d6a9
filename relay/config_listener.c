/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config_listener.c: one element of listeners = ( ... ): name, bind address, role, PROXY
 * protocol mode and the trusted_proxies allowed to use it, health_path, and the TLS
 * certificates (chosen by SNI) and priority of a TLS listener. The readers and the keyword
 * tables come from config.c; addresses and prefixes are parsed by addr.c.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>

#include "config_int.h"

/* One certificate = { cert; key; } of a listener's tls group, added to l->tls. */
static int
config_listener_cert(struct config_ctx *x, config_setting_t *c, struct cfg_listener *l)
{
	static const char *const known[] = { "cert", "key", NULL };
	const char *cert = NULL, *key = NULL;
	char msg[512];

	if (config_want_section(x, c, "a certificate", known) ||
	    config_get_str(x, c, "cert", &cert, true) || config_get_str(x, c, "key", &key, true))
		return -1;
	if (!cert || !key)
		return config_fail(x, c, "a certificate needs 'cert' and 'key'");
	if (tls_server_add_cert(l->tls, cert, key, msg, sizeof(msg)) == -1) {
		x->unusable_file = true;
		return config_fail(x, c, "listener '%s': %s", l->name ? l->name : "?", msg);
	}
	return 0;
}

/* listeners[].tls = { certificates = ( { cert; key; }, ... ); priority; ktls; } */
static int
config_listener_tls(struct config_ctx *x, config_setting_t *g, struct cfg_listener *l)
{
	static const char *const known[] = { "certificates", "priority", "ktls", NULL };
	const char *prio = NULL;
	char msg[512];
	config_setting_t *certs = config_setting_get_member(g, "certificates");

	if (config_want_section(x, g, "tls", known) || config_get_str(x, g, "priority", &prio, true))
		return -1;
	if (!(l->tls = calloc(1, sizeof(*l->tls))))
		return config_fail(x, g, "out of memory");
	if (config_get_bool(x, g, "ktls", &l->tls->ktls))
		return -1;
	if (!certs || config_setting_type(certs) != CONFIG_TYPE_LIST ||
	    config_setting_length(certs) == 0)
		return config_fail(x, certs ? certs : g,
		    "tls needs 'certificates = ( { cert = \"...\"; key = \"...\"; } )'");
	for (int i = 0; i < config_setting_length(certs); i++)
		if (config_listener_cert(x, config_setting_get_elem(certs, (unsigned)i), l) == -1)
			return -1;
	if (tls_server_set_priority(l->tls, prio, msg, sizeof(msg)) == -1)
		return config_fail(x, config_setting_get_member(g, "priority"), "'priority': %s", msg);
	return 0;
}

/* Reads the settings of one listener and checks name, bind, health_path and tls. */
static int
config_listener_read(struct config_ctx *x, config_setting_t *g, struct cfg_listener *l)
{
	static const char *const known[] = { "name", "bind", "role", "proxy_protocol",
	    "trusted_proxies", "tls", "health_path", NULL };
	int role = ROLE_TRAFFIC, pp = PPM_OFF;

	if (config_want_section(x, g, "a listener", known) ||
	    config_get_str(x, g, "name", &l->name, true) ||
	    config_get_str(x, g, "bind", &l->bind, true) ||
	    config_get_enum(x, g, "role", &role, config_role_kw) ||
	    config_get_enum(x, g, "proxy_protocol", &pp, config_pp_mode_kw) ||
	    config_get_str(x, g, "health_path", &l->health_path, true) ||
	    config_get_prefixes(x, g, "trusted_proxies", &l->trusted, &l->ntrusted))
		return -1;
	l->role = (enum listener_role)role;
	l->proxy_protocol = (enum pp_mode)pp;
	if (!l->name)
		return config_fail(x, g, "a listener needs a 'name'");
	if (!l->bind)
		return config_fail(x, g, "listener '%s' needs 'bind' (\"address:port\")", l->name);
	if (addr_parse_hostport(l->bind, &l->addr, &l->addrlen, true) == -1)
		return config_fail(x, config_setting_get_member(g, "bind"),
		    "'bind' must be a numeric \"address:port\" or \"[v6]:port\", not \"%s\"", l->bind);
	if (l->health_path && l->health_path[0] != '/')
		return config_fail(x, config_setting_get_member(g, "health_path"),
		    "'health_path' must start with '/'");
	if (config_setting_get_member(g, "tls") &&
	    config_listener_tls(x, config_setting_get_member(g, "tls"), l) == -1)
		return -1;
	return 0;
}

/* The rules that tie role, proxy_protocol, trusted_proxies and tls together. */
static int
config_listener_check(struct config_ctx *x, config_setting_t *g, const struct cfg_listener *l)
{
	if (l->proxy_protocol != PPM_OFF && l->ntrusted == 0)
		return config_fail(x, g, "listener '%s': proxy_protocol needs 'trusted_proxies'",
		    l->name);
	if (l->role == ROLE_AGENT && l->tls)
		return config_fail(x, config_setting_get_member(g, "tls"),
		    "listener '%s': the agent port speaks plain text", l->name);
	if (l->role != ROLE_TRAFFIC && l->proxy_protocol != PPM_OFF)
		return config_fail(x, g, "listener '%s': the %s port never takes a PROXY header",
		    l->name, config_role_str(l->role));
	return 0;
}

/* One element of listeners = ( ... ) into p (a struct cfg_listener). */
int
config_listener_load(struct config_ctx *x, config_setting_t *g, void *p)
{
	struct cfg_listener *l = p;

	l->line = (int)config_setting_source_line(g);
	return config_listener_read(x, g, l) == 0 ? config_listener_check(x, g, l) : -1;
}
