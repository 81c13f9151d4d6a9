/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cfg.h: the configuration as one immutable, validated structure, loaded from a libconfig
 * file (DESIGN.md, "Configuration"). Errors are reported as "FILE:LINE: message".
 * A loaded configuration is reference-counted: each connection holds the one it started with,
 * so a reload (SIGHUP) never changes a live connection's settings.
 */
#ifndef EXRELAY_CONFIG_H
#define EXRELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include <libconfig.h>

#include "addr.h"
#include "filter.h"
#include "guard.h"
#include "http1.h"
#include "log.h"
#include "route.h"
#include "tls.h"

/*
 * The keyword enums of the configuration: X(value, keyword as written in the file). The enum,
 * its _str() name (the keyword) and the keyword parser of config.c come from these tables,
 * so their order can never drift apart.
 */
#define LISTENER_ROLES(X) \
	X(ROLE_TRAFFIC, "traffic")	/* client traffic, routed to backends */ \
	X(ROLE_ADMIN, "admin")		/* GET /health, GET /metrics */ \
	X(ROLE_AGENT, "agent")		/* HAProxy agent-check replies */

#define PP_MODES(X) \
	X(PPM_OFF, "off")		/* no PROXY header */ \
	X(PPM_OPTIONAL, "optional")	/* a trusted peer may send one */ \
	X(PPM_REQUIRED, "required")	/* every connection starts with one */

#define SEND_PROXY_MODES(X) \
	X(SEND_PROXY_OFF, "off")	/* no PROXY header to the backend */ \
	X(SEND_PROXY_V1, "v1")		/* value 1: PROXY protocol version 1 */ \
	X(SEND_PROXY_V2, "v2")		/* value 2: PROXY protocol version 2 */

#define SRV_ADMIN_STATES(X) \
	X(SRV_READY, "ready")		/* takes new requests */ \
	X(SRV_DRAIN, "drain")		/* only requests pinned to it (RPC channels already open there) */ \
	X(SRV_MAINT, "maint")		/* nothing new at all */

#define CB_MODES(X) \
	X(CB_OFF, "off")		/* certificates are not compared */ \
	X(CB_CHECK, "check")		/* compared; a mismatch is logged and exported */ \
	X(CB_REQUIRE, "require")	/* and a server that mismatches takes no new requests */

#define CFG_ENUM_VALUE(e, kw) e,
enum srv_admin { SRV_ADMIN_STATES(CFG_ENUM_VALUE) };
enum listener_role { LISTENER_ROLES(CFG_ENUM_VALUE) };
enum pp_mode { PP_MODES(CFG_ENUM_VALUE) };
enum send_proxy { SEND_PROXY_MODES(CFG_ENUM_VALUE) };
enum cb_mode { CB_MODES(CFG_ENUM_VALUE) };
#undef CFG_ENUM_VALUE

/* The keyword of a value ("traffic", "optional", "v2"), or "?" for a value out of range. */
const char *config_role_str(enum listener_role r);
const char *config_pp_mode_str(enum pp_mode m);
const char *config_send_proxy_str(enum send_proxy s);
const char *config_srv_admin_str(enum srv_admin a);
const char *config_cb_mode_str(enum cb_mode m);
int config_srv_admin_parse(const char *kw);	/* the state of a keyword, or -1 */

struct cfg_listener {
	const char *name;
	const char *bind;		/* as written */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	enum listener_role role;
	enum pp_mode proxy_protocol;
	struct addr_prefix *trusted;
	size_t ntrusted;
	const char *health_path;	/* NULL: unset */
	struct tls_server *tls;		/* NULL: plaintext */
	int line;
};

struct srv;

struct cfg_server {
	const char *text;		/* "host:port" as written */
	const char *name;		/* its name: the group's `name`, or text */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	int weight;			/* 0..256 (default 100) */
	enum srv_admin state;		/* configured state (default ready) */
	struct srv *rt;			/* its run-time state (servers.c), bound when the config goes live */
};

/* Protocols: the virtual directories a backend's health checks tell apart ("rpc", "owa"). */
#define CFG_MAX_PROTOS 16

/* backends[].check: active health checks (absent: none). */
struct cfg_check {
	bool enabled;
	double interval, timeout;
	int rise, fall;
	const char *path;		/* "auto": per protocol, /<vdir>/healthcheck.htm; else one path */
};

struct cfg_backend {
	const char *name;
	struct cfg_server *servers;
	size_t nservers;
	enum send_proxy send_proxy;	/* its value is the PROXY version (0: none) */
	double idle_timeout;
	const char **add_headers;
	size_t nadd;
	struct tls_client *tls;		/* NULL: plaintext */
	enum cb_mode channel_binding;	/* tls.channel_binding (default check; off without tls) */
	struct cfg_check check;
	const char *protos[CFG_MAX_PROTOS];	/* lower case, from the routes' paths ("rpc", "owa") */
	size_t nprotos;
};

struct config {
	int refs;
	config_t lc;			/* owns every string below */
	const char *path;

	const char *user, *group, *pidfile;
	int workers;
	int max_connections;
	int splice_pipes;		/* pipes per worker for splice(2) (0: never splice) */
	double drain_timeout;
	const char *error_log;
	enum log_level log_level;
	struct {			/* global.admin_socket: HAProxy's runtime API (path NULL: none) */
		const char *path;
		int mode;		/* permissions (default 0660) */
		const char *group;	/* owner group, or NULL */
		const char *bind;	/* also on TCP ("127.0.0.1:9999"), or NULL */
		struct sockaddr_storage bind_addr;
		socklen_t bind_len;
		struct addr_prefix *allow;	/* who may use the TCP socket (default: loopback) */
		size_t nallow;
	} admin_socket;

	const char *access_log;		/* NULL: off */
	enum access_format access_format;

	struct {
		double proxy_header, tls_handshake, request_head, client_idle, connect;
	} timeouts;
	struct http1_limits limits;

	struct cfg_listener *listeners;
	size_t nlisteners;
	struct cfg_backend *backends;
	size_t nbackends;
	struct route *routes;
	size_t nroutes;
	struct cfg_route_acl {		/* per route, like routes: allow_from (nallow 0: anyone) */
		struct addr_prefix *allow;
		size_t nallow;
	} *route_acl;			/* NULL when no route was loaded */

	/* Exchange protection (config_security.c). */
	struct filter_config filters;	/* security.exchange_filters and security.rules */
	struct filter_rule *rules;
	bool strip_internal;		/* security.strip_internal_headers */
	struct guard_params guard;	/* auth_guard */
};

/*
 * Loads and validates path. Returns a configuration with one reference, or NULL with
 * "FILE:LINE: message" (or "FILE: message") in err; *unusable_file (when not NULL) tells a
 * file the configuration names but that cannot be used (a certificate, a key, a CA file:
 * a start-up failure, exit status 2) from a configuration error (exit status 1).
 */
struct config *config_load(const char *path, char *err, size_t errlen, bool *unusable_file);
struct config *config_ref(struct config *c);
void config_unref(struct config *c);

/* True when route i lets the client at addr in (its allow_from; none: everyone). */
bool config_route_allows(const struct config *c, size_t i, const struct sockaddr *addr);

/* True when addr (a peer address) is inside one of the listener's trusted_proxies. */
bool config_trusted(const struct cfg_listener *l, const struct sockaddr *addr);

#endif
