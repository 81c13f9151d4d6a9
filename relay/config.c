/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config.c: reads the libconfig file into struct config and validates every setting.
 * Unknown settings and wrong types are errors; every error names FILE:LINE.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"

/* Reading state: the error buffer and the file name, for messages. */
struct ctx {
	struct config *cfg;
	char *err;
	size_t errlen;
	bool unusable_file;	/* the error is a named file that cannot be used */
};

/* Writes "FILE:LINE: message" for setting s into the error buffer; returns -1. */
static int __attribute__((format(printf, 3, 4)))
fail(struct ctx *x, const config_setting_t *s, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	const char *file = s ? config_setting_source_file(s) : NULL;
	int line = s ? (int)config_setting_source_line(s) : 0;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (!file)
		file = x->cfg->path;
	if (line > 0)
		snprintf(x->err, x->errlen, "%s:%d: %s", file, line, msg);
	else
		snprintf(x->err, x->errlen, "%s: %s", file, msg);
	return -1;
}

/* Refuses any member of group g whose name is not in the NULL-terminated list allowed. */
static int
check_known(struct ctx *x, const config_setting_t *g, const char *what, const char *const *allowed)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(m);
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = name && strcmp(name, *a) == 0;
		if (!ok)
			return fail(x, m, "unknown setting '%s' in %s", name ? name : "?", what);
	}
	return 0;
}

static int
want_group(struct ctx *x, const config_setting_t *s, const char *what)
{
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return fail(x, s, "%s must be a group { ... }", what);
	return 0;
}

/* Reads an optional string member; *out keeps its default when absent. */
static int
get_str(struct ctx *x, const config_setting_t *g, const char *name, const char **out, bool nonempty)
{
	config_setting_t *m = config_setting_get_member(g, name);

	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return fail(x, m, "'%s' must be a string", name);
	*out = config_setting_get_string(m);
	if (nonempty && !**out)
		return fail(x, m, "'%s' must not be empty", name);
	return 0;
}

/* Reads an optional integer member within [lo, hi]. */
static int
get_int(struct ctx *x, const config_setting_t *g, const char *name, int *out, long long lo, long long hi)
{
	config_setting_t *m = config_setting_get_member(g, name);
	long long v;

	if (!m)
		return 0;
	if (config_setting_type(m) == CONFIG_TYPE_INT)
		v = config_setting_get_int(m);
	else if (config_setting_type(m) == CONFIG_TYPE_INT64)
		v = config_setting_get_int64(m);
	else
		return fail(x, m, "'%s' must be an integer", name);
	if (v < lo || v > hi)
		return fail(x, m, "'%s' must be between %lld and %lld", name, lo, hi);
	*out = (int)v;
	return 0;
}

/* Reads an optional duration (seconds, int or float) within (lo, hi]. */
static int
get_duration(struct ctx *x, const config_setting_t *g, const char *name, double *out, double lo, double hi)
{
	config_setting_t *m = config_setting_get_member(g, name);
	double v;

	if (!m)
		return 0;
	switch (config_setting_type(m)) {
	case CONFIG_TYPE_INT: v = config_setting_get_int(m); break;
	case CONFIG_TYPE_INT64: v = (double)config_setting_get_int64(m); break;
	case CONFIG_TYPE_FLOAT: v = config_setting_get_float(m); break;
	default: return fail(x, m, "'%s' must be a number of seconds", name);
	}
	if (!(v > lo && v <= hi))
		return fail(x, m, "'%s' must be more than %g and at most %g seconds", name, lo, hi);
	*out = v;
	return 0;
}

/* Reads an optional array/list of strings into a NULL-terminated array (malloc'd). */
static int
get_strings(struct ctx *x, const config_setting_t *g, const char *name, const char ***out, size_t *n)
{
	config_setting_t *m = config_setting_get_member(g, name);
	int len;

	*out = NULL;
	*n = 0;
	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_ARRAY && config_setting_type(m) != CONFIG_TYPE_LIST)
		return fail(x, m, "'%s' must be a list of strings [ \"...\", ... ]", name);
	len = config_setting_length(m);
	*out = calloc((size_t)len + 1, sizeof(char *));
	if (!*out)
		return fail(x, m, "out of memory");
	for (int i = 0; i < len; i++) {
		config_setting_t *e = config_setting_get_elem(m, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return fail(x, e, "'%s' must hold only strings", name);
		(*out)[i] = config_setting_get_string(e);
	}
	*n = (size_t)len;
	return 0;
}

/* Picks one of the NULL-terminated names; returns its index or -1 after fail(). */
static int
get_enum(struct ctx *x, const config_setting_t *g, const char *name, int *out, const char *const *names)
{
	const char *v = NULL;

	if (get_str(x, g, name, &v, false) == -1)
		return -1;
	if (!v)
		return 0;
	for (int i = 0; names[i]; i++)
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	char list[256] = "";
	for (int i = 0; names[i]; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s\"%s\"", i ? ", " : "", names[i]);
	return fail(x, config_setting_get_member(g, name), "'%s' must be one of %s, not \"%s\"", name, list, v);
}

int
config_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len, bool numeric_only)
{
	char host[256];
	const char *port, *h = s;
	size_t hl;

	if (*s == '[') {
		const char *e = strchr(s, ']');
		if (!e || e[1] != ':')
			return -1;
		h = s + 1;
		hl = (size_t)(e - h);
		port = e + 2;
	} else {
		const char *c = strrchr(s, ':');
		if (!c || strchr(s, ':') != c)
			return -1;
		hl = (size_t)(c - s);
		port = c + 1;
	}
	if (hl == 0 || hl >= sizeof(host) || !*port || strspn(port, "0123456789") != strlen(port) ||
	    strlen(port) > 5 || atoi(port) > 65535)
		return -1;
	memcpy(host, h, hl);
	host[hl] = '\0';

	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV }, *res;
	if (numeric_only)
		hints.ai_flags |= AI_NUMERICHOST;
	if (getaddrinfo(host, port, &hints, &res) != 0)
		return -1;
	memcpy(ss, res->ai_addr, res->ai_addrlen);
	*len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

/* Parses "a.b.c.d/n" or "v6/n" (or a bare address: a host route). */
static int
parse_cidr(const char *s, struct cidr *c)
{
	char buf[64];
	const char *slash = strchr(s, '/');
	size_t l = slash ? (size_t)(slash - s) : strlen(s);
	int max;

	if (l == 0 || l >= sizeof(buf))
		return -1;
	memcpy(buf, s, l);
	buf[l] = '\0';
	memset(c, 0, sizeof(*c));
	if (inet_pton(AF_INET, buf, c->addr) == 1) {
		c->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, c->addr) == 1) {
		c->family = AF_INET6;
		max = 128;
	} else {
		return -1;
	}
	c->prefix = max;
	if (slash) {
		const char *p = slash + 1;
		if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) > 3 || atoi(p) > max)
			return -1;
		c->prefix = atoi(p);
	}
	return 0;
}

static bool
prefix_eq(const unsigned char *a, const unsigned char *b, int bits)
{
	int bytes = bits / 8, rem = bits % 8;

	if (memcmp(a, b, (size_t)bytes) != 0)
		return false;
	if (rem == 0)
		return true;
	unsigned char mask = (unsigned char)(0xff << (8 - rem));
	return (a[bytes] & mask) == (b[bytes] & mask);
}

bool
config_trusted(const struct cfg_listener *l, const struct sockaddr *addr)
{
	static const unsigned char v4mapped[12] = { 0,0,0,0,0,0,0,0,0,0,0xff,0xff };
	const unsigned char *a4 = NULL, *a6 = NULL;

	if (addr->sa_family == AF_INET) {
		a4 = (const unsigned char *)&((const struct sockaddr_in *)addr)->sin_addr;
	} else if (addr->sa_family == AF_INET6) {
		a6 = ((const struct sockaddr_in6 *)addr)->sin6_addr.s6_addr;
		if (memcmp(a6, v4mapped, 12) == 0)
			a4 = a6 + 12;
	}
	for (size_t i = 0; i < l->ntrusted; i++) {
		const struct cidr *c = &l->trusted[i];
		if (c->family == AF_INET && a4 && prefix_eq(a4, c->addr, c->prefix))
			return true;
		if (c->family == AF_INET6 && a6 && prefix_eq(a6, c->addr, c->prefix))
			return true;
	}
	return false;
}

static int
load_global(struct ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "user", "group", "pidfile", "workers", "max_connections",
	    "drain_timeout", "error_log", "log_level", NULL };
	struct config *c = x->cfg;
	config_setting_t *g = config_setting_get_member(root, "global");
	const char *lvl = NULL;

	if (!g)
		return 0;
	if (want_group(x, g, "global") || check_known(x, g, "global", known) ||
	    get_str(x, g, "user", &c->user, false) || get_str(x, g, "group", &c->group, false) ||
	    get_str(x, g, "pidfile", &c->pidfile, false) ||
	    get_int(x, g, "workers", &c->workers, 0, 256) ||
	    get_int(x, g, "max_connections", &c->max_connections, 1, 10000000) ||
	    get_duration(x, g, "drain_timeout", &c->drain_timeout, 0, 86400) ||
	    get_str(x, g, "error_log", &c->error_log, true) ||
	    get_str(x, g, "log_level", &lvl, true))
		return -1;
	if (lvl && (int)(c->log_level = (enum log_level)log_level_parse(lvl)) < 0)
		return fail(x, config_setting_get_member(g, "log_level"),
		    "'log_level' must be \"error\", \"warning\", \"info\" or \"debug\", not \"%s\"", lvl);
	if (c->user && !*c->user)
		c->user = NULL;
	if (c->group && !*c->group)
		c->group = NULL;
	if (c->pidfile && !*c->pidfile)
		c->pidfile = NULL;
	return 0;
}

static int
load_access_log(struct ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "path", "format", NULL };
	static const char *const formats[] = { "combined", "json", NULL };
	config_setting_t *g = config_setting_get_member(root, "access_log");
	int fmt = ACCESS_COMBINED;

	if (!g)
		return 0;
	if (want_group(x, g, "access_log") || check_known(x, g, "access_log", known) ||
	    get_str(x, g, "path", &x->cfg->access_log, false) ||
	    get_enum(x, g, "format", &fmt, formats))
		return -1;
	if (x->cfg->access_log && !*x->cfg->access_log)
		x->cfg->access_log = NULL;
	x->cfg->access_format = (enum access_format)fmt;
	return 0;
}

static int
load_timeouts_limits(struct ctx *x, const config_setting_t *root)
{
	static const char *const tknown[] = { "proxy_header", "tls_handshake", "request_head",
	    "client_idle", "connect", NULL };
	static const char *const lknown[] = { "max_head_size", "max_headers", NULL };
	struct config *c = x->cfg;
	config_setting_t *t = config_setting_get_member(root, "timeouts");
	config_setting_t *l = config_setting_get_member(root, "limits");
	int mhs = (int)c->limits.max_head_size, mh = (int)c->limits.max_headers;

	if (t && (want_group(x, t, "timeouts") || check_known(x, t, "timeouts", tknown) ||
	    get_duration(x, t, "proxy_header", &c->timeouts.proxy_header, 0, 3600) ||
	    get_duration(x, t, "tls_handshake", &c->timeouts.tls_handshake, 0, 3600) ||
	    get_duration(x, t, "request_head", &c->timeouts.request_head, 0, 3600) ||
	    get_duration(x, t, "client_idle", &c->timeouts.client_idle, 0, 86400) ||
	    get_duration(x, t, "connect", &c->timeouts.connect, 0, 3600)))
		return -1;
	/* A head must fit one relay buffer (64 KiB). */
	if (l && (want_group(x, l, "limits") || check_known(x, l, "limits", lknown) ||
	    get_int(x, l, "max_head_size", &mhs, 1024, 65536) ||
	    get_int(x, l, "max_headers", &mh, 8, 1000)))
		return -1;
	c->limits.max_head_size = (size_t)mhs;
	c->limits.max_headers = (size_t)mh;
	return 0;
}

/* Reads an optional boolean member. */
static int
get_bool(struct ctx *x, const config_setting_t *g, const char *name, bool *out)
{
	config_setting_t *m = config_setting_get_member(g, name);

	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_BOOL)
		return fail(x, m, "'%s' must be true or false", name);
	*out = config_setting_get_bool(m);
	return 0;
}

/* listeners[].tls = { certificates = ( { cert; key; }, ... ); priority; } */
static int
load_listener_tls(struct ctx *x, config_setting_t *g, struct cfg_listener *l)
{
	static const char *const known[] = { "certificates", "priority", NULL };
	static const char *const cknown[] = { "cert", "key", NULL };
	const char *prio = NULL;
	char msg[512];
	config_setting_t *certs = config_setting_get_member(g, "certificates");

	if (want_group(x, g, "tls") || check_known(x, g, "tls", known) || get_str(x, g, "priority", &prio, true))
		return -1;
	if (!(l->tls = calloc(1, sizeof(*l->tls))))
		return fail(x, g, "out of memory");
	if (!certs || config_setting_type(certs) != CONFIG_TYPE_LIST || config_setting_length(certs) == 0)
		return fail(x, certs ? certs : g, "tls needs 'certificates = ( { cert = \"...\"; key = \"...\"; } )'");
	for (int i = 0; i < config_setting_length(certs); i++) {
		config_setting_t *c = config_setting_get_elem(certs, (unsigned)i);
		const char *cert = NULL, *key = NULL;
		if (want_group(x, c, "a certificate") || check_known(x, c, "a certificate", cknown) ||
		    get_str(x, c, "cert", &cert, true) || get_str(x, c, "key", &key, true))
			return -1;
		if (!cert || !key)
			return fail(x, c, "a certificate needs 'cert' and 'key'");
		if (tls_server_add_cert(l->tls, cert, key, msg, sizeof(msg)) == -1) {
			x->unusable_file = true;
			return fail(x, c, "listener '%s': %s", l->name ? l->name : "?", msg);
		}
	}
	if (tls_server_set_priority(l->tls, prio, msg, sizeof(msg)) == -1)
		return fail(x, config_setting_get_member(g, "priority"), "'priority': %s", msg);
	return 0;
}

/* backends[].tls = { verify; ca_file; sni; cert; key; } */
static int
load_backend_tls(struct ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	static const char *const known[] = { "verify", "ca_file", "sni", "cert", "key", NULL };
	const char *ca = NULL, *sni = NULL, *cert = NULL, *key = NULL;
	bool verify = true;
	char msg[512];

	if (want_group(x, g, "tls") || check_known(x, g, "tls", known) || get_bool(x, g, "verify", &verify) ||
	    get_str(x, g, "ca_file", &ca, false) || get_str(x, g, "sni", &sni, false) ||
	    get_str(x, g, "cert", &cert, false) || get_str(x, g, "key", &key, false))
		return -1;
	if (!(b->tls = calloc(1, sizeof(*b->tls))))
		return fail(x, g, "out of memory");
	if (tls_client_setup(b->tls, verify, ca, cert, key, sni, msg, sizeof(msg)) == -1) {
		x->unusable_file = true;
		return fail(x, g, "backend '%s': %s", b->name ? b->name : "?", msg);
	}
	return 0;
}

static int
load_listener(struct ctx *x, config_setting_t *g, struct cfg_listener *l)
{
	static const char *const known[] = { "name", "bind", "role", "proxy_protocol",
	    "trusted_proxies", "tls", "health_path", NULL };
	static const char *const roles[] = { "traffic", "admin", "agent", NULL };
	static const char *const ppm[] = { "off", "optional", "required", NULL };
	const char **trusted;
	size_t nt;
	int role = ROLE_TRAFFIC, pp = PPM_OFF;

	l->line = (int)config_setting_source_line(g);
	if (want_group(x, g, "a listener") || check_known(x, g, "a listener", known) ||
	    get_str(x, g, "name", &l->name, true) || get_str(x, g, "bind", &l->bind, true) ||
	    get_enum(x, g, "role", &role, roles) || get_enum(x, g, "proxy_protocol", &pp, ppm) ||
	    get_str(x, g, "health_path", &l->health_path, true) ||
	    get_strings(x, g, "trusted_proxies", &trusted, &nt))
		return -1;
	l->role = (enum listener_role)role;
	l->proxy_protocol = (enum pp_mode)pp;
	if (!l->name)
		return fail(x, g, "a listener needs a 'name'");
	if (!l->bind)
		return fail(x, g, "listener '%s' needs 'bind' (\"address:port\")", l->name);
	if (config_parse_hostport(l->bind, &l->addr, &l->addrlen, true) == -1) {
		free(trusted);
		return fail(x, config_setting_get_member(g, "bind"),
		    "'bind' must be a numeric \"address:port\" or \"[v6]:port\", not \"%s\"", l->bind);
	}
	if (l->health_path && l->health_path[0] != '/') {
		free(trusted);
		return fail(x, config_setting_get_member(g, "health_path"), "'health_path' must start with '/'");
	}
	if (config_setting_get_member(g, "tls") && load_listener_tls(x, config_setting_get_member(g, "tls"), l) == -1) {
		free(trusted);
		return -1;
	}
	l->trusted = calloc(nt + 1, sizeof(*l->trusted));
	for (size_t i = 0; l->trusted && i < nt; i++)
		if (parse_cidr(trusted[i], &l->trusted[i]) == -1) {
			int line = (int)config_setting_source_line(config_setting_get_elem(
			    config_setting_get_member(g, "trusted_proxies"), (unsigned)i));
			snprintf(x->err, x->errlen, "%s:%d: '%s' is not an address or address/prefix",
			    x->cfg->path, line, trusted[i]);
			free(trusted);
			return -1;
		}
	free(trusted);
	l->ntrusted = nt;
	if (l->proxy_protocol != PPM_OFF && nt == 0)
		return fail(x, g, "listener '%s': proxy_protocol needs 'trusted_proxies'", l->name);
	if (l->role == ROLE_AGENT && l->tls)
		return fail(x, config_setting_get_member(g, "tls"), "listener '%s': the agent port speaks plain text", l->name);
	if (l->role != ROLE_TRAFFIC && l->proxy_protocol != PPM_OFF)
		return fail(x, g, "listener '%s': the %s port never takes a PROXY header", l->name,
		    roles[l->role]);
	return 0;
}

static int
load_backend(struct ctx *x, config_setting_t *g, struct cfg_backend *b)
{
	static const char *const known[] = { "name", "servers", "tls", "send_proxy", "idle_timeout",
	    "add_headers", NULL };
	static const char *const sp[] = { "off", "v1", "v2", NULL };
	const char **servers;
	size_t ns;
	int send_proxy = 0;

	b->idle_timeout = 3600;
	if (want_group(x, g, "a backend") || check_known(x, g, "a backend", known) ||
	    get_str(x, g, "name", &b->name, true) || get_enum(x, g, "send_proxy", &send_proxy, sp) ||
	    get_duration(x, g, "idle_timeout", &b->idle_timeout, 0, 7 * 86400) ||
	    get_strings(x, g, "add_headers", &b->add_headers, &b->nadd) ||
	    get_strings(x, g, "servers", &servers, &ns))
		return -1;
	b->send_proxy = send_proxy;
	if (!b->name)
		return fail(x, g, "a backend needs a 'name'");
	if (ns == 0) {
		free(servers);
		return fail(x, g, "backend '%s' needs at least one entry in 'servers'", b->name);
	}
	if (config_setting_get_member(g, "tls") && load_backend_tls(x, config_setting_get_member(g, "tls"), b) == -1) {
		free(servers);
		return -1;
	}
	b->servers = calloc(ns, sizeof(*b->servers));
	for (size_t i = 0; b->servers && i < ns; i++) {
		b->servers[i].text = servers[i];
		if (config_parse_hostport(servers[i], &b->servers[i].addr, &b->servers[i].addrlen, false) == -1) {
			config_setting_t *e = config_setting_get_elem(config_setting_get_member(g, "servers"), (unsigned)i);
			free(servers);
			return fail(x, e, "backend '%s': cannot resolve server \"%s\" (want \"host:port\")",
			    b->name, b->servers[i].text);
		}
	}
	free(servers);
	b->nservers = ns;
	for (size_t i = 0; i < b->nadd; i++) {
		const char *h = b->add_headers[i], *colon = strchr(h, ':');
		bool ok = colon && colon > h && !strpbrk(h, "\r\n");
		for (const char *p = h; ok && p < colon; p++)
			ok = *p > 0x20 && *p < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", *p);
		if (!ok)
			return fail(x, config_setting_get_elem(config_setting_get_member(g, "add_headers"), (unsigned)i),
			    "backend '%s': add_headers entry \"%s\" is not \"Name: value\"", b->name, h);
	}
	return 0;
}

static int
find_backend(const struct config *c, const char *name)
{
	for (size_t i = 0; i < c->nbackends; i++)
		if (strcmp(c->backends[i].name, name) == 0)
			return (int)i;
	return -1;
}

static int
load_route(struct ctx *x, config_setting_t *g, struct route *r)
{
	static const char *const known[] = { "backend", "hosts", "paths", "methods", NULL };
	const char *backend = NULL;
	char **hosts;

	if (want_group(x, g, "a route") || check_known(x, g, "a route", known) ||
	    get_str(x, g, "backend", &backend, true) ||
	    get_strings(x, g, "hosts", (const char ***)&r->hosts, &r->nhosts))
		return -1;
	/* Host names are compared case-insensitively: keep lower-case copies (freed with the config). */
	hosts = (char **)r->hosts;
	for (size_t i = 0; i < r->nhosts; i++)
		hosts[i] = strdup(hosts[i]);
	for (size_t i = 0; i < r->nhosts; i++) {
		char *h = hosts[i];
		for (char *p = h; p && *p; p++)
			*p = (char)((*p >= 'A' && *p <= 'Z') ? *p + 32 : *p);
		if (!h || !*h || strpbrk(h, " /\t"))
			return fail(x, config_setting_get_member(g, "hosts"), "invalid host name \"%s\"", h ? h : "");
	}
	if (get_strings(x, g, "paths", (const char ***)&r->paths, &r->npaths) ||
	    get_strings(x, g, "methods", (const char ***)&r->methods, &r->nmethods))
		return -1;
	if (!backend)
		return fail(x, g, "a route needs a 'backend'");
	if ((r->backend = find_backend(x->cfg, backend)) < 0)
		return fail(x, config_setting_get_member(g, "backend"), "no backend named \"%s\"", backend);
	r->backend_name = backend;
	for (size_t i = 0; i < r->npaths; i++) {
		const char *p = r->paths[i];
		char norm[1024];
		ssize_t n = route_normalize_path(p, strlen(p), norm, sizeof(norm), NULL);
		if (p[0] != '/' || n < 0 || (size_t)n != strlen(p) || strncasecmp(norm, p, (size_t)n) != 0)
			return fail(x, config_setting_get_elem(config_setting_get_member(g, "paths"), (unsigned)i),
			    "path \"%s\" must be a normalised absolute path (like \"/rpc\")", p);
	}
	for (size_t i = 0; i < r->nmethods; i++) {
		const char *m = r->methods[i];
		bool ok = *m != '\0';
		for (const char *p = m; ok && *p; p++)
			ok = *p > 0x20 && *p < 0x7f && !strchr("\"(),/:;<=>?@[\\]{}", *p);
		if (!ok)
			return fail(x, config_setting_get_elem(config_setting_get_member(g, "methods"), (unsigned)i),
			    "\"%s\" is not a method token", m);
	}
	return 0;
}

/* Loads a list setting named name into an array of n elements of size sz with loader fn. */
static int
load_list(struct ctx *x, const config_setting_t *root, const char *name, void **arr, size_t *n,
    size_t sz, int (*fn)(struct ctx *, config_setting_t *, void *))
{
	config_setting_t *l = config_setting_get_member(root, name);
	int len;

	*arr = NULL;
	*n = 0;
	if (!l)
		return 0;
	if (config_setting_type(l) != CONFIG_TYPE_LIST)
		return fail(x, l, "'%s' must be a list ( { ... }, ... )", name);
	len = config_setting_length(l);
	if (!(*arr = calloc((size_t)len + 1, sz)))
		return fail(x, l, "out of memory");
	for (int i = 0; i < len; i++) {
		if (fn(x, config_setting_get_elem(l, (unsigned)i), (char *)*arr + (size_t)i * sz) == -1)
			return -1;
		(*n)++;
	}
	return 0;
}

static int
load_listener_v(struct ctx *x, config_setting_t *g, void *p) { return load_listener(x, g, p); }
static int
load_backend_v(struct ctx *x, config_setting_t *g, void *p) { return load_backend(x, g, p); }
static int
load_route_v(struct ctx *x, config_setting_t *g, void *p) { return load_route(x, g, p); }

/* Cross-checks: unique names, one traffic listener at least, distinct binds. */
static int
check_whole(struct ctx *x, const config_setting_t *root)
{
	struct config *c = x->cfg;
	size_t traffic = 0;

	for (size_t i = 0; i < c->nlisteners; i++) {
		traffic += c->listeners[i].role == ROLE_TRAFFIC;
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->listeners[i].name, c->listeners[j].name) == 0) {
				snprintf(x->err, x->errlen, "%s:%d: listener name \"%s\" is used twice",
				    c->path, c->listeners[i].line, c->listeners[i].name);
				return -1;
			}
	}
	for (size_t i = 0; i < c->nlisteners; i++)
		for (size_t j = 0; j < i; j++) {
			const struct cfg_listener *a = &c->listeners[i], *b = &c->listeners[j];
			if (a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0 &&
			    ((const struct sockaddr_in *)&a->addr)->sin_port != 0) {
				snprintf(x->err, x->errlen, "%s:%d: listener \"%s\" binds %s like listener \"%s\"",
				    c->path, a->line, a->name, a->bind, b->name);
				return -1;
			}
		}
	if (traffic == 0)
		return fail(x, config_setting_get_member(root, "listeners") ?
		    config_setting_get_member(root, "listeners") : NULL,
		    "at least one traffic listener is needed in 'listeners'");
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->backends[i].name, c->backends[j].name) == 0)
				return fail(x, config_setting_get_elem(config_setting_get_member(root, "backends"),
				    (unsigned)i), "backend name \"%s\" is used twice", c->backends[i].name);
	if (c->nroutes == 0)
		return fail(x, NULL, "at least one entry is needed in 'routes'");
	return 0;
}

struct config *
config_load(const char *path, char *err, size_t errlen, bool *unusable_file)
{
	static const char *const known[] = { "global", "access_log", "timeouts", "limits", "listeners",
	    "backends", "routes", NULL };
	struct config *c = calloc(1, sizeof(*c));
	struct ctx x = { c, err, errlen, false };
	config_setting_t *root;

	if (!c) {
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	c->refs = 1;
	c->path = path;
	config_init(&c->lc);
	c->max_connections = 20000;
	c->drain_timeout = 30;
	c->error_log = "stderr";
	c->log_level = LVL_INFO;
	c->timeouts.proxy_header = 5;
	c->timeouts.tls_handshake = 10;
	c->timeouts.request_head = 10;
	c->timeouts.client_idle = 60;
	c->timeouts.connect = 5;
	c->limits.max_head_size = 65536;
	c->limits.max_headers = 100;

	if (config_read_file(&c->lc, path) != CONFIG_TRUE) {
		if (config_error_type(&c->lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno ? errno : ENOENT));
		else
			snprintf(err, errlen, "%s:%d: %s", config_error_file(&c->lc) ? config_error_file(&c->lc) : path,
			    config_error_line(&c->lc), config_error_text(&c->lc));
		config_unref(c);
		return NULL;
	}
	root = config_root_setting(&c->lc);
	if (check_known(&x, root, "the file", known) || load_global(&x, root) ||
	    load_access_log(&x, root) || load_timeouts_limits(&x, root) ||
	    load_list(&x, root, "listeners", (void **)&c->listeners, &c->nlisteners, sizeof(*c->listeners), load_listener_v) ||
	    load_list(&x, root, "backends", (void **)&c->backends, &c->nbackends, sizeof(*c->backends), load_backend_v) ||
	    load_list(&x, root, "routes", (void **)&c->routes, &c->nroutes, sizeof(*c->routes), load_route_v) ||
	    check_whole(&x, root)) {
		if (unusable_file)
			*unusable_file = x.unusable_file;
		config_unref(c);
		return NULL;
	}
	return c;
}

struct config *
config_ref(struct config *c)
{
	__atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
	return c;
}

void
config_unref(struct config *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	for (size_t i = 0; i < c->nlisteners + 1 && c->listeners; i++) {
		free(c->listeners[i].trusted);
		if (c->listeners[i].tls) {
			tls_server_free(c->listeners[i].tls);
			free(c->listeners[i].tls);
		}
	}
	for (size_t i = 0; i < c->nbackends + 1 && c->backends; i++) {
		if (c->backends[i].tls) {
			tls_client_free(c->backends[i].tls);
			free(c->backends[i].tls);
		}
		free(c->backends[i].servers);
		free(c->backends[i].add_headers);
	}
	for (size_t i = 0; i < c->nroutes + 1 && c->routes; i++) {
		for (size_t j = 0; j < c->routes[i].nhosts; j++)
			free((char *)c->routes[i].hosts[j]);
		free((void *)c->routes[i].hosts);
		free((void *)c->routes[i].paths);
		free((void *)c->routes[i].methods);
	}
	free(c->listeners);
	free(c->backends);
	free(c->routes);
	config_destroy(&c->lc);
	free(c);
}
