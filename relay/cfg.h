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

#include "http1.h"
#include "log.h"
#include "route.h"
#include "tls.h"

enum listener_role { ROLE_TRAFFIC, ROLE_ADMIN, ROLE_AGENT };
enum pp_mode { PPM_OFF, PPM_OPTIONAL, PPM_REQUIRED };

struct cidr {
	int family;			/* AF_INET or AF_INET6 (IPv4 also matches v4-mapped IPv6 peers) */
	unsigned char addr[16];
	int prefix;
};

struct cfg_listener {
	const char *name;
	const char *bind;		/* as written */
	struct sockaddr_storage addr;
	socklen_t addrlen;
	enum listener_role role;
	enum pp_mode proxy_protocol;
	struct cidr *trusted;
	size_t ntrusted;
	const char *health_path;	/* NULL: unset */
	struct tls_server *tls;		/* NULL: plaintext */
	int line;
};

struct cfg_server {
	const char *text;		/* "host:port" as written */
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

struct cfg_backend {
	const char *name;
	struct cfg_server *servers;
	size_t nservers;
	int send_proxy;			/* 0 off, 1 v1, 2 v2 */
	double idle_timeout;
	const char **add_headers;
	size_t nadd;
	struct tls_client *tls;		/* NULL: plaintext */
};

struct config {
	int refs;
	config_t lc;			/* owns every string below */
	const char *path;

	const char *user, *group, *pidfile;
	int workers;
	int max_connections;
	double drain_timeout;
	const char *error_log;
	enum log_level log_level;

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

/* True when addr (a peer address) is inside one of the listener's trusted_proxies. */
bool config_trusted(const struct cfg_listener *l, const struct sockaddr *addr);

/* Parses "host:port", "[v6]:port" (numeric hosts only when numeric_only); 0 or -1. */
int config_parse_hostport(const char *s, struct sockaddr_storage *ss, socklen_t *len, bool numeric_only);

#endif
