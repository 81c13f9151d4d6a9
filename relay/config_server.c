/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config_server.c: a backend's servers (DESIGN.md, "Several servers per backend": strings
 * "host:port", or groups { name; address; weight; state; }), its health `check`, the
 * protocols its checks tell apart (the first path segment of the routes that reach it), and
 * global.admin_socket (HAProxy's runtime API).
 */
#include "autoconf.h"

#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"
#include "servers.h"

/* One server given as a group: { name; address; weight; state; }. */
static int
config_server_group(struct config_ctx *x, config_setting_t *g, struct cfg_server *s)
{
	static const char *const known[] = { "name", "address", "weight", "state", NULL };
	int state = SRV_READY;

	if (config_want_section(x, g, "a server", known) ||
	    config_get_str(x, g, "name", &s->name, true) ||
	    config_get_str(x, g, "address", &s->text, true) ||
	    config_get_int(x, g, "weight", &s->weight, 0, 256) ||
	    config_get_enum(x, g, "state", &state, config_srv_admin_kw))
		return -1;
	if (!s->name || !s->text)
		return config_fail(x, g, "a server group needs 'name' and 'address'");
	if (strpbrk(s->name, " ,/;\t") || strlen(s->name) > 63)
		return config_fail(x, config_setting_get_member(g, "name"),
		    "server name \"%s\": at most 63 characters, without spaces, ',', '/' or ';'", s->name);
	s->state = (enum srv_admin)state;
	return 0;
}

/* One entry of servers: a "host:port" string or a group; resolved. */
static int
config_server_one(struct config_ctx *x, config_setting_t *e, struct cfg_backend *b, struct cfg_server *s)
{
	s->weight = 100;
	s->state = SRV_READY;
	if (config_setting_type(e) == CONFIG_TYPE_STRING) {
		s->text = s->name = config_setting_get_string(e);
	} else if (config_setting_type(e) == CONFIG_TYPE_GROUP) {
		if (config_server_group(x, e, s) == -1)
			return -1;
	} else {
		return config_fail(x, e, "backend '%s': a server is \"host:port\" or { name; address; }", b->name);
	}
	if (addr_parse_hostport(s->text, &s->addr, &s->addrlen, false) == -1)
		return config_fail(x, e, "backend '%s': cannot resolve server \"%s\" (want \"host:port\")",
		    b->name, s->text);
	for (struct cfg_server *o = b->servers; o < s; o++)
		if (strcmp(o->name, s->name) == 0)
			return config_fail(x, e, "backend '%s': server name \"%s\" is used twice", b->name, s->name);
	return 0;
}

/* backends[].servers = [ "host:port", ... ] or ( "host:port", { name; address; ... }, ... ). */
int
config_servers_load(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	config_setting_t *l = config_setting_get_member(g, "servers");

	if (!l || config_setting_length(l) == 0 ||
	    (config_setting_type(l) != CONFIG_TYPE_ARRAY && config_setting_type(l) != CONFIG_TYPE_LIST))
		return config_fail(x, l ? l : g, "backend '%s' needs at least one entry in 'servers'", b->name);
	size_t n = (size_t)config_setting_length(l);
	if (n > SRV_PER_BACKEND)
		return config_fail(x, l, "backend '%s': at most %d servers", b->name, SRV_PER_BACKEND);
	if (!(b->servers = calloc(n, sizeof(*b->servers))))
		return config_fail(x, l, "out of memory");
	for (size_t i = 0; i < n; i++) {
		if (config_server_one(x, config_setting_get_elem(l, (unsigned)i), b, &b->servers[i]) == -1)
			return -1;
		b->nservers = i + 1;
	}
	return 0;
}

/* backends[].check = { interval; timeout; rise; fall; path; } */
int
config_check_load(struct config_ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	static const char *const known[] = { "interval", "timeout", "rise", "fall", "path", NULL };
	config_setting_t *c = config_setting_get_member(g, "check");
	struct cfg_check *k = &b->check;

	*k = (struct cfg_check){ false, 5, 2, 2, 3, "auto" };
	if (!c)
		return 0;
	if (config_want_section(x, c, "check", known) ||
	    config_get_duration(x, c, "interval", &k->interval, 0, 3600) ||
	    config_get_duration(x, c, "timeout", &k->timeout, 0, 600) ||
	    config_get_int(x, c, "rise", &k->rise, 1, 100) ||
	    config_get_int(x, c, "fall", &k->fall, 1, 100) ||
	    config_get_str(x, c, "path", &k->path, true))
		return -1;
	if (strcmp(k->path, "auto") != 0 && k->path[0] != '/')
		return config_fail(x, config_setting_get_member(c, "path"),
		    "backend '%s': check 'path' is \"auto\" or starts with '/'", b->name);
	k->enabled = true;
	return 0;
}

/* Adds the first segment of path p (lower case) to b's protocols, once. */
static int
config_proto_add(struct config_ctx *x, struct cfg_backend *b, const char *p)
{
	char seg[32];
	size_t n = 0;

	for (p += *p == '/'; *p && *p != '/' && n + 1 < sizeof(seg); p++)
		seg[n++] = (char)(*p >= 'A' && *p <= 'Z' ? *p + 32 : *p);
	seg[n] = '\0';
	if (n == 0)
		return 0;
	for (size_t i = 0; i < b->nprotos; i++)
		if (strcmp(b->protos[i], seg) == 0)
			return 0;
	if (b->nprotos == CFG_MAX_PROTOS)
		return config_fail(x, NULL, "backend '%s': more than %d virtual directories to check",
		    b->name, CFG_MAX_PROTOS);
	if (!(b->protos[b->nprotos] = strdup(seg)))
		return config_fail(x, NULL, "out of memory");
	b->nprotos++;
	return 0;
}

/*
 * After the routes: the protocols of each backend, from the first path segment of the routes
 * that reach it ("rpc", "owa"). With `check.path = "auto"`, each is checked apart.
 */
int
config_protos_load(struct config_ctx *x)
{
	struct config *c = x->cfg;

	for (size_t r = 0; r < c->nroutes; r++) {
		struct cfg_backend *b = &c->backends[c->routes[r].backend];
		for (size_t i = 0; i < c->routes[r].npaths; i++)
			if (config_proto_add(x, b, c->routes[r].paths[i]) == -1)
				return -1;
	}
	return 0;
}

/* admin_socket's TCP part: bind (numeric), allow_from (default: loopback only). */
static int
config_admin_tcp(struct config_ctx *x, config_setting_t *g)
{
	static const char *const loopback[] = { "127.0.0.0/8", "::1/128" };
	struct config *c = x->cfg;

	if (config_get_prefixes(x, g, "allow_from", &c->admin_socket.allow, &c->admin_socket.nallow))
		return -1;
	if (!c->admin_socket.bind)
		return 0;
	if (addr_parse_hostport(c->admin_socket.bind, &c->admin_socket.bind_addr, &c->admin_socket.bind_len, true) == -1)
		return config_fail(x, config_setting_get_member(g, "bind"),
		    "admin_socket 'bind' must be a numeric \"address:port\", not \"%s\"", c->admin_socket.bind);
	if (c->admin_socket.nallow)
		return 0;
	if (!(c->admin_socket.allow = calloc(2, sizeof(*c->admin_socket.allow))))
		return config_fail(x, g, "out of memory");
	for (size_t i = 0; i < 2; i++)
		addr_prefix_parse(loopback[i], &c->admin_socket.allow[i]);
	c->admin_socket.nallow = 2;
	return 0;
}

/* global.admin_socket = { path; mode; group; bind; allow_from; } */
int
config_admin_socket_load(struct config_ctx *x, const config_setting_t *global)
{
	static const char *const known[] = { "path", "mode", "group", "bind", "allow_from", NULL };
	config_setting_t *g = config_setting_get_member(global, "admin_socket");
	const char *mode = NULL;
	char *end;

	x->cfg->admin_socket.mode = 0660;
	if (!g)
		return 0;
	if (config_want_section(x, g, "admin_socket", known) ||
	    config_get_str(x, g, "path", &x->cfg->admin_socket.path, true) ||
	    config_get_str(x, g, "mode", &mode, true) ||
	    config_get_str(x, g, "group", &x->cfg->admin_socket.group, false) ||
	    config_get_str(x, g, "bind", &x->cfg->admin_socket.bind, true) ||
	    config_admin_tcp(x, g))
		return -1;
	if (!x->cfg->admin_socket.path && !x->cfg->admin_socket.bind)
		return config_fail(x, g, "admin_socket needs an absolute 'path' (and may add a TCP 'bind')");
	if (x->cfg->admin_socket.path && x->cfg->admin_socket.path[0] != '/')
		return config_fail(x, g, "admin_socket needs an absolute 'path'");
	if (x->cfg->admin_socket.path && strlen(x->cfg->admin_socket.path) >= 100)
		return config_fail(x, config_setting_get_member(g, "path"), "admin_socket 'path' is too long");
	if (mode) {
		long m = strtol(mode, &end, 8);
		if (*end || m < 0 || m > 0777 || !*mode)
			return config_fail(x, config_setting_get_member(g, "mode"),
			    "admin_socket 'mode' is octal permissions like \"0660\", not \"%s\"", mode);
		x->cfg->admin_socket.mode = (int)m;
	}
	if (x->cfg->admin_socket.group && !getgrnam(x->cfg->admin_socket.group))
		return config_fail(x, config_setting_get_member(g, "group"), "no group named \"%s\"",
		    x->cfg->admin_socket.group);
	return 0;
}

/* Frees the protocol names of every backend, and admin_socket's allow list. */
void
config_protos_free(struct config *c)
{
	free(c->admin_socket.allow);
	for (size_t i = 0; c->backends && i < c->nbackends + 1; i++)
		for (size_t k = 0; k < c->backends[i].nprotos; k++)
			config_free_const(c->backends[i].protos[k]);
}
