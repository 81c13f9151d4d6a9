/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * config.c: reads the libconfig file into struct config (cfg.h) and validates every setting:
 * the typed readers every section uses, the keyword tables, the top-level sections (global,
 * access_log, timeouts, limits), the cross-checks over the whole file, and the reference
 * count. Listeners are read by config_listener.c, backends and routes by config_backend.c.
 * Unknown settings and wrong types are errors; every error names FILE:LINE.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_int.h"

#define CONFIG_KW(e, kw) [e] = kw,
const char *const config_role_kw[] = { LISTENER_ROLES(CONFIG_KW) NULL };
const char *const config_pp_mode_kw[] = { PP_MODES(CONFIG_KW) NULL };
const char *const config_send_proxy_kw[] = { SEND_PROXY_MODES(CONFIG_KW) NULL };
const char *const config_srv_admin_kw[] = { SRV_ADMIN_STATES(CONFIG_KW) NULL };
const char *const config_cb_mode_kw[] = { CB_MODES(CONFIG_KW) NULL };
static const char *const config_log_level_kw[] = { LOG_LEVELS(CONFIG_KW) NULL };
#undef CONFIG_KW

/* Writes the keywords of kw into buf as "\"a\", \"b\"<last>\"c\"" (last: ", " or " or "). */
static void
config_kw_list(const char *const *kw, const char *last, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int i = 0; kw[i] && len < cap; i++) {
		snprintf(buf + len, cap - len, "%s\"%s\"", i == 0 ? "" : kw[i + 1] ? ", " : last, kw[i]);
		len = strlen(buf);
	}
}

/* The keyword of value v in the NULL-terminated table kw, or "?" past its end. */
static const char *
config_kw_str(const char *const *kw, int v)
{
	for (int i = 0; kw[i]; i++)
		if (i == v)
			return kw[i];
	return "?";
}

/* The keyword of each value of a keyword enum: `const char *fn(type v)`. */
#define CONFIG_KW_STR(fn, type, table) \
	const char *fn(type v) \
	{ \
		return config_kw_str(table, (int)v); \
	}
CONFIG_KW_STR(config_role_str, enum listener_role, config_role_kw)
CONFIG_KW_STR(config_pp_mode_str, enum pp_mode, config_pp_mode_kw)
CONFIG_KW_STR(config_send_proxy_str, enum send_proxy, config_send_proxy_kw)
CONFIG_KW_STR(config_srv_admin_str, enum srv_admin, config_srv_admin_kw)
#undef CONFIG_KW_STR

const char *
config_cb_mode_str(enum cb_mode m)
{
	return config_kw_str(config_cb_mode_kw, (int)m);
}

int
config_srv_admin_parse(const char *kw)
{
	for (int i = 0; config_srv_admin_kw[i]; i++)
		if (strcmp(config_srv_admin_kw[i], kw) == 0)
			return i;
	return -1;
}

int
config_fail(struct config_ctx *x, const config_setting_t *s, const char *fmt, ...)
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

int
config_check_known(struct config_ctx *x, const config_setting_t *g, const char *what,
    const char *const *allowed)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		config_setting_t *m = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(m);
		bool ok = false;
		for (const char *const *a = allowed; *a && !ok; a++)
			ok = name && strcmp(name, *a) == 0;
		if (!ok)
			return config_fail(x, m, "unknown setting '%s' in %s", name ? name : "?", what);
	}
	return 0;
}

int
config_want_group(struct config_ctx *x, const config_setting_t *s, const char *what)
{
	if (config_setting_type(s) != CONFIG_TYPE_GROUP)
		return config_fail(x, s, "%s must be a group { ... }", what);
	return 0;
}

int
config_want_section(struct config_ctx *x, const config_setting_t *g, const char *what,
    const char *const *allowed)
{
	if (config_want_group(x, g, what) || config_check_known(x, g, what, allowed))
		return -1;
	return 0;
}

int
config_get_str(struct config_ctx *x, const config_setting_t *g, const char *name,
    const char **out, bool nonempty)
{
	config_setting_t *m = config_setting_get_member(g, name);

	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_STRING)
		return config_fail(x, m, "'%s' must be a string", name);
	*out = config_setting_get_string(m);
	if (nonempty && !**out)
		return config_fail(x, m, "'%s' must not be empty", name);
	return 0;
}

int
config_get_int(struct config_ctx *x, const config_setting_t *g, const char *name, int *out,
    long long lo, long long hi)
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
		return config_fail(x, m, "'%s' must be an integer", name);
	if (v < lo || v > hi)
		return config_fail(x, m, "'%s' must be between %lld and %lld", name, lo, hi);
	*out = (int)v;
	return 0;
}

/* Reads an optional number (int or float) within (lo, hi], in `unit` ("seconds", "days"). */
int
config_get_number(struct config_ctx *x, const config_setting_t *g, const char *name,
    double *out, double lo, double hi, const char *unit)
{
	config_setting_t *m = config_setting_get_member(g, name);
	double v;

	if (!m)
		return 0;
	switch (config_setting_type(m)) {
	case CONFIG_TYPE_INT: v = config_setting_get_int(m); break;
	case CONFIG_TYPE_INT64: {
		long long i = config_setting_get_int64(m);
		v = (double)i;
		break;
	}
	case CONFIG_TYPE_FLOAT: v = config_setting_get_float(m); break;
	default: return config_fail(x, m, "'%s' must be a number of %s", name, unit);
	}
	if (!(v > lo && v <= hi))
		return config_fail(x, m, "'%s' must be more than %g and at most %g %s", name, lo, hi, unit);
	*out = v;
	return 0;
}

/* Reads an optional duration (seconds, int or float) within (lo, hi]. */
int
config_get_duration(struct config_ctx *x, const config_setting_t *g, const char *name,
    double *out, double lo, double hi)
{
	return config_get_number(x, g, name, out, lo, hi, "seconds");
}

int
config_get_bool(struct config_ctx *x, const config_setting_t *g, const char *name, bool *out)
{
	config_setting_t *m = config_setting_get_member(g, name);

	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_BOOL)
		return config_fail(x, m, "'%s' must be true or false", name);
	*out = config_setting_get_bool(m);
	return 0;
}

int
config_get_strings(struct config_ctx *x, const config_setting_t *g, const char *name,
    const char ***out, size_t *n)
{
	config_setting_t *m = config_setting_get_member(g, name);
	int len;

	*out = NULL;
	*n = 0;
	if (!m)
		return 0;
	if (config_setting_type(m) != CONFIG_TYPE_ARRAY && config_setting_type(m) != CONFIG_TYPE_LIST)
		return config_fail(x, m, "'%s' must be a list of strings [ \"...\", ... ]", name);
	len = config_setting_length(m);
	*out = calloc((size_t)len + 1, sizeof(char *));
	if (!*out)
		return config_fail(x, m, "out of memory");
	for (int i = 0; i < len; i++) {
		config_setting_t *e = config_setting_get_elem(m, (unsigned)i);
		if (config_setting_type(e) != CONFIG_TYPE_STRING)
			return config_fail(x, e, "'%s' must hold only strings", name);
		(*out)[i] = config_setting_get_string(e);
	}
	*n = (size_t)len;
	return 0;
}

/*
 * Reads an optional list of addresses or address/prefixes into *out (calloc'd, freed with the
 * configuration) and *n.
 */
int
config_get_prefixes(struct config_ctx *x, const config_setting_t *g, const char *name,
    struct addr_prefix **out, size_t *n)
{
	const char **list = NULL;
	size_t len = 0;
	int rc = config_get_strings(x, g, name, &list, &len);

	*out = NULL;
	*n = 0;
	if (rc == 0 && list && !(*out = calloc(len + 1, sizeof(**out))))
		rc = config_fail(x, config_setting_get_member(g, name), "out of memory");
	for (size_t i = 0; rc == 0 && i < len; i++)
		if (addr_prefix_parse(list[i], &(*out)[i]) == -1)
			rc = config_fail(x, config_elem(g, name, i), "'%s' is not an address or address/prefix",
			    list[i]);
	config_free_const(list);
	*n = rc == 0 ? len : 0;
	return rc;
}

int
config_get_enum(struct config_ctx *x, const config_setting_t *g, const char *name, int *out,
    const char *const *kw)
{
	const char *v = NULL;
	char list[256];

	if (config_get_str(x, g, name, &v, false) == -1)
		return -1;
	if (!v)
		return 0;
	for (int i = 0; kw[i]; i++)
		if (strcmp(v, kw[i]) == 0) {
			*out = i;
			return 0;
		}
	config_kw_list(kw, ", ", list, sizeof(list));
	return config_fail(x, config_setting_get_member(g, name),
	    "'%s' must be one of %s, not \"%s\"", name, list, v);
}

const config_setting_t *
config_elem(const config_setting_t *g, const char *name, size_t i)
{
	return config_setting_get_elem(config_setting_get_member(g, name), (unsigned)i);
}

/* global = { user; group; pidfile; workers; max_connections; drain_timeout; error_log; log_level;
 * splice_pipes; admin_socket; } */
static int
config_load_global(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "user", "group", "pidfile", "workers", "max_connections",
	    "drain_timeout", "error_log", "log_level", "admin_socket", "splice_pipes", NULL };
	struct config *c = x->cfg;
	config_setting_t *g = config_setting_get_member(root, "global");
	const char *lvl = NULL;
	char list[256];

	if (!g)
		return 0;
	if (config_want_section(x, g, "global", known) ||
	    config_get_str(x, g, "user", &c->user, false) ||
	    config_get_str(x, g, "group", &c->group, false) ||
	    config_get_str(x, g, "pidfile", &c->pidfile, false) ||
	    config_get_int(x, g, "workers", &c->workers, 0, 256) ||
	    config_get_int(x, g, "max_connections", &c->max_connections, 1, 10000000) ||
	    config_get_int(x, g, "splice_pipes", &c->splice_pipes, 0, 4096) ||
	    config_get_duration(x, g, "drain_timeout", &c->drain_timeout, 0, 86400) ||
	    config_get_str(x, g, "error_log", &c->error_log, true) ||
	    config_get_str(x, g, "log_level", &lvl, true))
		return -1;
	int level = lvl ? log_level_parse(lvl) : (int)c->log_level;
	if (level < 0) {
		config_kw_list(config_log_level_kw, " or ", list, sizeof(list));
		return config_fail(x, config_setting_get_member(g, "log_level"),
		    "'log_level' must be %s, not \"%s\"", list, lvl);
	}
	c->log_level = (enum log_level)level;
	if (config_admin_socket_load(x, g) == -1)
		return -1;
	if (c->user && !*c->user)
		c->user = NULL;
	if (c->group && !*c->group)
		c->group = NULL;
	if (c->pidfile && !*c->pidfile)
		c->pidfile = NULL;
	return 0;
}

/* access_log = { path; format; } */
static int
config_load_access_log(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "path", "format", NULL };
	static const char *const formats[] = {
		[ACCESS_COMBINED] = "combined", [ACCESS_JSON] = "json", NULL
	};
	config_setting_t *g = config_setting_get_member(root, "access_log");
	int fmt = ACCESS_COMBINED;

	if (!g)
		return 0;
	if (config_want_section(x, g, "access_log", known) ||
	    config_get_str(x, g, "path", &x->cfg->access_log, false) ||
	    config_get_enum(x, g, "format", &fmt, formats))
		return -1;
	if (x->cfg->access_log && !*x->cfg->access_log)
		x->cfg->access_log = NULL;
	x->cfg->access_format = (enum access_format)fmt;
	return 0;
}

/* timeouts = { proxy_header; tls_handshake; request_head; client_idle; connect; } */
static int
config_load_timeouts(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "proxy_header", "tls_handshake", "request_head",
	    "client_idle", "connect", NULL };
	struct config *c = x->cfg;
	config_setting_t *t = config_setting_get_member(root, "timeouts");

	if (t && (config_want_section(x, t, "timeouts", known) ||
	    config_get_duration(x, t, "proxy_header", &c->timeouts.proxy_header, 0, 3600) ||
	    config_get_duration(x, t, "tls_handshake", &c->timeouts.tls_handshake, 0, 3600) ||
	    config_get_duration(x, t, "request_head", &c->timeouts.request_head, 0, 3600) ||
	    config_get_duration(x, t, "client_idle", &c->timeouts.client_idle, 0, 86400) ||
	    config_get_duration(x, t, "connect", &c->timeouts.connect, 0, 3600)))
		return -1;
	return 0;
}

/* limits = { max_head_size; max_headers; } */
static int
config_load_limits(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "max_head_size", "max_headers", NULL };
	struct config *c = x->cfg;
	config_setting_t *l = config_setting_get_member(root, "limits");
	int mhs = (int)c->limits.max_head_size, mh = (int)c->limits.max_headers;

	/* A head must fit one relay buffer (64 KiB). */
	if (l && (config_want_section(x, l, "limits", known) ||
	    config_get_int(x, l, "max_head_size", &mhs, 1024, 65536) ||
	    config_get_int(x, l, "max_headers", &mh, 8, 1000)))
		return -1;
	c->limits.max_head_size = (size_t)mhs;
	c->limits.max_headers = (size_t)mh;
	return 0;
}

/* Loads a list setting named name into an array of n elements of size sz with loader fn. */
static int
config_load_list(struct config_ctx *x, const config_setting_t *root, const char *name, void **arr,
    size_t *n, size_t sz, int (*fn)(struct config_ctx *, config_setting_t *, void *))
{
	config_setting_t *l = config_setting_get_member(root, name);
	int len;

	*arr = NULL;
	*n = 0;
	if (!l)
		return 0;
	if (config_setting_type(l) != CONFIG_TYPE_LIST)
		return config_fail(x, l, "'%s' must be a list ( { ... }, ... )", name);
	len = config_setting_length(l);
	if (!(*arr = calloc((size_t)len + 1, sz)))
		return config_fail(x, l, "out of memory");
	for (int i = 0; i < len; i++) {
		if (fn(x, config_setting_get_elem(l, (unsigned)i), (char *)*arr + (size_t)i * sz) == -1)
			return -1;
		(*n)++;
	}
	return 0;
}

/* Cross-checks of the listeners: unique names, distinct binds (port 0 aside), one traffic. */
static int
config_check_listeners(struct config_ctx *x, const config_setting_t *root)
{
	struct config *c = x->cfg;
	size_t traffic = 0;

	for (size_t i = 0; i < c->nlisteners; i++) {
		const struct cfg_listener *a = &c->listeners[i];

		traffic += a->role == ROLE_TRAFFIC;
		for (size_t j = 0; j < i; j++)
			if (strcmp(a->name, c->listeners[j].name) == 0) {
				snprintf(x->err, x->errlen, "%s:%d: listener name \"%s\" is used twice",
				    c->path, a->line, a->name);
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
		return config_fail(x, config_setting_get_member(root, "listeners"),
		    "at least one traffic listener is needed in 'listeners'");
	return 0;
}

/* Cross-checks: the listeners', unique backend names, one route at least. */
static int
config_check_whole(struct config_ctx *x, const config_setting_t *root)
{
	struct config *c = x->cfg;

	if (config_check_listeners(x, root) == -1)
		return -1;
	for (size_t i = 0; i < c->nbackends; i++)
		for (size_t j = 0; j < i; j++)
			if (strcmp(c->backends[i].name, c->backends[j].name) == 0)
				return config_fail(x, config_elem(root, "backends", i),
				    "backend name \"%s\" is used twice", c->backends[i].name);
	if (c->nroutes == 0)
		return config_fail(x, NULL, "at least one entry is needed in 'routes'");
	return config_protos_load(x);
}

/* A new configuration with one reference and every default set (DESIGN.md). */
static struct config *
config_new(const char *path)
{
	struct config *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->refs = 1;
	c->path = path;
	config_init(&c->lc);
	c->max_connections = 20000;
	c->splice_pipes = 16;
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
	c->filters.exchange = true;
	c->strip_internal = true;
	c->guard = (struct guard_params){ .enabled = true, .max_failures = 5, .window = 600, .block = 900,
	    .familiar_days = 14, .max_failures_per_client = 30, .max_entries = 100000 };
	return c;
}

/* Reads the libconfig syntax of path into c->lc. Returns 0, or -1 with the error in err. */
static int
config_read_path(struct config *c, const char *path, char *err, size_t errlen)
{
	const char *file;

	if (config_read_file(&c->lc, path) == CONFIG_TRUE)
		return 0;
	if (config_error_type(&c->lc) == CONFIG_ERR_FILE_IO) {
		snprintf(err, errlen, "%s: cannot read: %s", path, strerror(errno ? errno : ENOENT));
	} else {
		file = config_error_file(&c->lc) ? config_error_file(&c->lc) : path;
		snprintf(err, errlen, "%s:%d: %s", file, config_error_line(&c->lc),
		    config_error_text(&c->lc));
	}
	return -1;
}

/* Reads every section of the file and cross-checks them; 0 or -1. */
static int
config_load_sections(struct config_ctx *x, const config_setting_t *root)
{
	static const char *const known[] = { "global", "access_log", "timeouts", "limits", "listeners",
	    "backends", "routes", "security", "auth_guard", NULL };
	struct config *c = x->cfg;

	if (config_check_known(x, root, "the file", known) || config_load_global(x, root) ||
	    config_load_access_log(x, root) || config_load_timeouts(x, root) ||
	    config_load_limits(x, root) || config_security_load(x, root) || config_guard_load(x, root) ||
	    config_load_list(x, root, "listeners", (void **)&c->listeners, &c->nlisteners,
	    sizeof(*c->listeners), config_listener_load) ||
	    config_load_list(x, root, "backends", (void **)&c->backends, &c->nbackends,
	    sizeof(*c->backends), config_backend_load) ||
	    config_load_list(x, root, "routes", (void **)&c->routes, &c->nroutes,
	    sizeof(*c->routes), config_backend_route_load))
		return -1;
	return config_check_whole(x, root);
}

struct config *
config_load(const char *path, char *err, size_t errlen, bool *unusable_file)
{
	struct config *c = config_new(path);
	struct config_ctx x = { c, err, errlen, false };

	if (!c) {
		snprintf(err, errlen, "%s: out of memory", path);
		return NULL;
	}
	if (config_read_path(c, path, err, errlen) == -1) {
		config_unref(c);
		return NULL;
	}
	if (config_load_sections(&x, config_root_setting(&c->lc)) == -1) {
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

/* Frees memory the configuration holds through a pointer to const (lists it built). */
void
config_free_const(const void *p)
{
	void *q;

	memcpy(&q, &p, sizeof(q));
	free(q);
}

/* Frees what the loaders allocated for the listeners, backends and routes of c. */
static void
config_free_lists(struct config *c)
{
	config_security_free(c);
	config_protos_free(c);
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
			config_free_const(c->routes[i].hosts[j]);
		config_free_const(c->routes[i].hosts);
		config_free_const(c->routes[i].paths);
		config_free_const(c->routes[i].methods);
	}
}

void
config_unref(struct config *c)
{
	if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	config_free_lists(c);
	free(c->listeners);
	free(c->backends);
	free(c->routes);
	config_destroy(&c->lc);
	free(c);
}

bool
config_trusted(const struct cfg_listener *l, const struct sockaddr *addr)
{
	for (size_t i = 0; i < l->ntrusted; i++)
		if (addr_prefix_match(&l->trusted[i], addr))
			return true;
	return false;
}
