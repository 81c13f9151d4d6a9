/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * admin.c: what exrelay answers itself: /health, /metrics (Prometheus text format) and the
 * HAProxy agent-check line; and the counters behind /metrics.
 */
#include "autoconf.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "rewrite.h"

#define MAX_NAMES 64
#define MAX_REQ_KEYS 256

struct name_counters {
	char name[64];
	long active, total, pp_errors;
};

static struct {
	pthread_mutex_t lock;
	struct name_counters listeners[MAX_NAMES];
	struct { char route[64]; int code; unsigned long long n; } req[MAX_REQ_KEYS];
	struct { char backend[64]; char kind[24]; unsigned long long n; } berr[MAX_REQ_KEYS];
	unsigned long long bytes_in, bytes_out;
	long rpc_in, rpc_out;
} m = { .lock = PTHREAD_MUTEX_INITIALIZER };

static struct name_counters *
listener_counters(const char *name)
{
	for (int i = 0; i < MAX_NAMES; i++) {
		if (strcmp(m.listeners[i].name, name) == 0)
			return &m.listeners[i];
		if (!m.listeners[i].name[0]) {
			snprintf(m.listeners[i].name, sizeof(m.listeners[i].name), "%s", name);
			return &m.listeners[i];
		}
	}
	return &m.listeners[MAX_NAMES - 1];
}

void
metrics_conn_open(const char *listener)
{
	pthread_mutex_lock(&m.lock);
	struct name_counters *n = listener_counters(listener);
	n->active++;
	n->total++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_conn_close(const char *listener)
{
	pthread_mutex_lock(&m.lock);
	listener_counters(listener)->active--;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_proxy_error(const char *listener)
{
	pthread_mutex_lock(&m.lock);
	listener_counters(listener)->pp_errors++;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_request(const char *route, int code)
{
	pthread_mutex_lock(&m.lock);
	for (int i = 0; i < MAX_REQ_KEYS; i++) {
		if (!m.req[i].route[0]) {
			snprintf(m.req[i].route, sizeof(m.req[i].route), "%s", route);
			m.req[i].code = code;
		}
		if (m.req[i].code == code && strcmp(m.req[i].route, route) == 0) {
			m.req[i].n++;
			break;
		}
	}
	pthread_mutex_unlock(&m.lock);
}

void
metrics_bytes(uint64_t in, uint64_t out)
{
	pthread_mutex_lock(&m.lock);
	m.bytes_in += in;
	m.bytes_out += out;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_rpc_channel(const char *method, int delta)
{
	pthread_mutex_lock(&m.lock);
	if (strcmp(method, "RPC_IN_DATA") == 0)
		m.rpc_in += delta;
	else
		m.rpc_out += delta;
	pthread_mutex_unlock(&m.lock);
}

void
metrics_backend_error(const char *backend, const char *kind)
{
	pthread_mutex_lock(&m.lock);
	for (int i = 0; i < MAX_REQ_KEYS; i++) {
		if (!m.berr[i].backend[0]) {
			snprintf(m.berr[i].backend, sizeof(m.berr[i].backend), "%s", backend);
			snprintf(m.berr[i].kind, sizeof(m.berr[i].kind), "%s", kind);
		}
		if (strcmp(m.berr[i].backend, backend) == 0 && strcmp(m.berr[i].kind, kind) == 0) {
			m.berr[i].n++;
			break;
		}
	}
	pthread_mutex_unlock(&m.lock);
}

void
admin_agent_reply(int fd)
{
	const char *line = relay_draining() ? "drain\n" : "up ready\n";

	(void)!send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
	close(fd);
}

ssize_t
admin_health(char *out, size_t cap, bool head_only, bool close)
{
	return rewrite_status_response(out, cap, relay_draining() ? 503 : 200, close,
	    "Cache-Control: no-store\r\n", relay_draining() ? "draining\n" : "ok\n", head_only);
}

#define PUT(...) do { int k_ = snprintf(body + n, sizeof(body) - n, __VA_ARGS__); \
	if (k_ < 0 || (size_t)k_ >= sizeof(body) - n) \
		goto full; \
	n += (size_t)k_; \
} while (0)

ssize_t
admin_metrics(char *out, size_t cap, bool close)
{
	static char body[48 * 1024];
	size_t n = 0;
	ssize_t r;

	pthread_mutex_lock(&m.lock);
	PUT("# HELP exrelay_connections_active Client connections open, per listener.\n"
	    "# TYPE exrelay_connections_active gauge\n");
	for (int i = 0; i < MAX_NAMES && m.listeners[i].name[0]; i++)
		PUT("exrelay_connections_active{listener=\"%s\"} %ld\n", m.listeners[i].name, m.listeners[i].active);
	PUT("# HELP exrelay_connections_total Client connections accepted, per listener.\n"
	    "# TYPE exrelay_connections_total counter\n");
	for (int i = 0; i < MAX_NAMES && m.listeners[i].name[0]; i++)
		PUT("exrelay_connections_total{listener=\"%s\"} %ld\n", m.listeners[i].name, m.listeners[i].total);
	PUT("# HELP exrelay_proxy_header_errors_total Connections closed for a missing or bad PROXY header.\n"
	    "# TYPE exrelay_proxy_header_errors_total counter\n");
	for (int i = 0; i < MAX_NAMES && m.listeners[i].name[0]; i++)
		PUT("exrelay_proxy_header_errors_total{listener=\"%s\"} %ld\n", m.listeners[i].name,
		    m.listeners[i].pp_errors);
	PUT("# HELP exrelay_requests_total Requests answered, per route and status code.\n"
	    "# TYPE exrelay_requests_total counter\n");
	for (int i = 0; i < MAX_REQ_KEYS && m.req[i].route[0]; i++)
		PUT("exrelay_requests_total{route=\"%s\",code=\"%d\"} %llu\n", m.req[i].route, m.req[i].code, m.req[i].n);
	PUT("# HELP exrelay_bytes_total Bytes received from (in) and sent to (out) clients, counted at close.\n"
	    "# TYPE exrelay_bytes_total counter\n"
	    "exrelay_bytes_total{direction=\"in\"} %llu\nexrelay_bytes_total{direction=\"out\"} %llu\n",
	    m.bytes_in, m.bytes_out);
	PUT("# HELP exrelay_rpc_channels_active RPC over HTTP channels open.\n"
	    "# TYPE exrelay_rpc_channels_active gauge\n"
	    "exrelay_rpc_channels_active{method=\"RPC_IN_DATA\"} %ld\n"
	    "exrelay_rpc_channels_active{method=\"RPC_OUT_DATA\"} %ld\n", m.rpc_in, m.rpc_out);
	PUT("# HELP exrelay_backend_errors_total Backend failures, per backend and kind.\n"
	    "# TYPE exrelay_backend_errors_total counter\n");
	for (int i = 0; i < MAX_REQ_KEYS && m.berr[i].backend[0]; i++)
		PUT("exrelay_backend_errors_total{backend=\"%s\",kind=\"%s\"} %llu\n", m.berr[i].backend,
		    m.berr[i].kind, m.berr[i].n);
full:
	r = rewrite_status_response(out, cap, 200, close,
	    NULL, body, false);
	pthread_mutex_unlock(&m.lock);
	return r;
}
