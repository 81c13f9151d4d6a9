/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * health_probe.c: one active health check (health.c schedules them). A check is one
 * connection: non-blocking connect, the backend's PROXY header (LOCAL), the backend's TLS
 * (tls.c on a struct half of our own: credentials, priority, SNI, verification, session
 * resumption shared with the request path), the request, and the status line read into a
 * bounded buffer; check.timeout bounds the whole of it. Results go to servers_check_result()
 * with HAProxy's words: "L7OK 200", "L7STS 503", "L4CON", "L4TOUT", "L6RSP", "L6TOUT",
 * "L7RSP", "L7TOUT", "SOCKERR". A check holds a reference to the configuration it started
 * with, so a reload never pulls its backend, server or TLS settings away.
 */
#include "autoconf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/socket.h>
#include <unistd.h>

#include "epcheck.h"
#include "health_int.h"
#include "proxyproto.h"
#include "relay.h"
#include "servers.h"
#include "tls.h"

#define PROBE_MAGIC 0x70726f62U	/* "prob" */

#define PROBE_STEPS(X) \
	X(PS_CONNECT)	/* the non-blocking connect */ \
	X(PS_HANDSHAKE)	/* the TLS handshake (after the PROXY header, sent in clear) */ \
	X(PS_SEND)	/* the request (after the PROXY header, without TLS) */ \
	X(PS_READ)	/* the status line */

enum probe_step {
#define X(n) n,
	PROBE_STEPS(X)
#undef X
};

/* What a step reports to probe_run(). */
#define STEP_WAIT	0	/* waiting for the socket (the watcher is set) */
#define STEP_END	1	/* the check has its result (p->ok, p->status) */
#define STEP_NEXT	2	/* p->step moved on: run it now */

/* One check in flight: one connection to one server for one protocol. */
struct probe {
	unsigned magic;
	struct hsrv *owner;		/* the server entry waiting for it */
	struct config *cfg;		/* a reference: b, cs and b->tls live in it */
	const struct cfg_backend *b;
	const struct cfg_server *cs;
	struct srv *rt;
	char proto[32];			/* the protocol's name ("owa"; "*" for SRV_WHOLE) */
	enum probe_step step;
	struct half h;			/* fd, ops, tls, want: what tls.c and sock.c use */
	ev_io io;
	ev_timer timer;			/* check.timeout, for the whole check */
	double start;			/* ev_time() at the start */
	bool ok;
	char status[48];
	char pp[64];			/* the PROXY header, sent in clear before TLS */
	size_t pplen;
	char out[512];			/* what is left to send: [PROXY header] request */
	size_t outlen, outoff;
	char in[256];			/* the start of the response: its status line */
	size_t inlen;
};

static ENUM_STR(probe_step_str, enum probe_step, PROBE_STEPS)

/* The host part of "host:port" ("[::1]:443" -> "::1") into out. */
static void
server_host(const char *text, char *out, size_t cap)
{
	const char *colon = strrchr(text, ':');
	size_t n = colon ? (size_t)(colon - text) : strlen(text);

	if (*text == '[' && n >= 2) {
		text++;
		n -= 2;
	}
	snprintf(out, cap, "%.*s", (int)n, text);
}

/* Records the result; returns STEP_END. */
static int
probe_result(struct probe *p, bool ok, const char *status)
{
	p->ok = ok;
	snprintf(p->status, sizeof(p->status), "%s", status);
	return STEP_END;
}

/* Waits for events on the socket. */
static void
probe_wait(struct probe *p, int events)
{
	if (ev_is_active(&p->io) && (p->io.events & (EV_READ | EV_WRITE)) == events)
		return;
	ev_io_stop(health_loop(), &p->io);
	ev_io_set(&p->io, p->h.fd, events);
	ev_io_start(health_loop(), &p->io);
}

/* Closes the check's connection and frees it; its server entry has none in flight any more. */
void
health_probe_free(struct probe *p)
{
	CHECK_OBJ(p, PROBE_MAGIC);
	p->owner->p = NULL;
	ev_io_stop(health_loop(), &p->io);
	ev_timer_stop(health_loop(), &p->timer);
	if (p->h.fd != -1) {
		p->h.ops->release(&p->h);
		close(p->h.fd);
	}
	config_unref(p->cfg);
	p->magic = 0;
	free(p);
}

/*
 * Reports the check's result to servers.c (by protocol name: a reload may have renumbered the
 * protocols since it started), then frees it. Returns the server entry it belonged to.
 */
static struct hsrv *
probe_end(struct probe *p)
{
	struct hsrv *hs = p->owner;
	struct srv *s = p->rt;
	double took = ev_time() - p->start;

	CHECK_OBJ(p, PROBE_MAGIC);
	servers_check_result(s, p->proto, p->ok, took, p->status, p->b->check.rise, p->b->check.fall);
	log_debug("health check %s/%s %s: %s in %.3f s", p->b->name, p->cs->name, p->proto, p->status, took);
	health_probe_free(p);
	return hs;
}

/* The connect ended: sends the PROXY header in clear and starts TLS, or goes on to the request. */
static int
probe_connected(struct probe *p)
{
	char host[256], key[160];
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(p->h.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err) {
		log_debug("health check %s/%s: connect: %s", p->b->name, p->cs->name, strerror(err));
		return probe_result(p, false, "L4CON");
	}
	if (!p->b->tls) {
		p->step = PS_SEND;
		return STEP_NEXT;
	}
	/* A fresh socket takes a PROXY header whole. */
	if (p->pplen && send(p->h.fd, p->pp, p->pplen, MSG_NOSIGNAL) != (ssize_t)p->pplen)
		return probe_result(p, false, "L4CON");
	server_host(p->cs->text, host, sizeof(host));
	/* The request path's session cache key: checks and requests resume each other's sessions. */
	snprintf(key, sizeof(key), "%llu/%s/%s", p->b->tls->generation, p->b->name, p->cs->text);
	/* Comparing certificates: a full handshake, so that the server presents its current one. */
	if (p->b->channel_binding != CB_OFF)
		key[0] = '\0';
	if (tls_start_client(&p->h, p->b->tls, host, key) == -1)
		return probe_result(p, false, "L6RSP");
	p->step = PS_HANDSHAKE;
	return STEP_NEXT;
}

/* Steps the TLS handshake. */
static int
probe_handshake(struct probe *p)
{
	const char *why = NULL;
	int r = tls_handshake(&p->h, &why);

	if (r < 0) {
		log_debug("health check %s/%s: %s", p->b->name, p->cs->name, why ? why : "TLS handshake failed");
		return probe_result(p, false, "L6RSP");
	}
	if (r == 0) {
		probe_wait(p, p->h.want);
		return STEP_WAIT;
	}
	if (p->b->channel_binding != CB_OFF)
		epcheck_seen(p->rt, &p->h);
	p->step = PS_SEND;
	return STEP_NEXT;
}

/* Sends what is left of the request. */
static int
probe_send(struct probe *p)
{
	while (p->outoff < p->outlen) {
		p->h.want = EV_WRITE;
		ssize_t n = p->h.ops->send(&p->h, p->out + p->outoff, p->outlen - p->outoff);
		if (n > 0) {
			p->outoff += (size_t)n;
			continue;
		}
		if (n == -1 && errno == EAGAIN) {
			probe_wait(p, p->h.want);
			return STEP_WAIT;
		}
		log_debug("health check %s/%s: send: %s", p->b->name, p->cs->name, strerror(errno));
		return probe_result(p, false, p->h.tls ? "L6RSP" : "L4CON");
	}
	p->step = PS_READ;
	return STEP_NEXT;
}

/*
 * The status code of the HTTP/1.x status line at the start of buf[0..n): 100..599, or -1 when
 * buf does not start with one ("HTTP/1.1 200 OK", "HTTP/1.0 503").
 */
static int
probe_status(const char *buf, size_t n)
{
	if (n < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[7] < '0' || buf[7] > '9' || buf[8] != ' ')
		return -1;
	for (int i = 9; i < 12; i++)
		if (buf[i] < '0' || buf[i] > '9')
			return -1;
	if (n > 12 && buf[12] != ' ' && buf[12] != '\r' && buf[12] != '\n')
		return -1;
	int code = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
	return code >= 100 && code <= 599 ? code : -1;
}

/* The check's result from the response read so far (the status line is complete, or no more comes). */
static int
probe_verdict(struct probe *p)
{
	char status[48];
	int code = probe_status(p->in, p->inlen);

	if (code < 0)
		return probe_result(p, false, "L7RSP");
	snprintf(status, sizeof(status), "%s %d", code == 200 ? "L7OK" : "L7STS", code);
	return probe_result(p, code == 200, status);
}

/* Reads the response until its status line is complete (or the buffer is full, or it ends). */
static int
probe_read(struct probe *p)
{
	for (;;) {
		p->h.want = EV_READ;
		ssize_t n = p->h.ops->recv(&p->h, p->in + p->inlen, sizeof(p->in) - p->inlen);
		if (n > 0) {
			p->inlen += (size_t)n;
			if (memchr(p->in, '\n', p->inlen) || p->inlen == sizeof(p->in))
				return probe_verdict(p);
			continue;
		}
		if (n == 0)
			return probe_verdict(p);
		if (errno == EAGAIN) {
			probe_wait(p, p->h.want);
			return STEP_WAIT;
		}
		log_debug("health check %s/%s: receive: %s", p->b->name, p->cs->name, strerror(errno));
		return probe_result(p, false, p->h.tls && errno == EPROTO ? "L6RSP" : "L7RSP");
	}
}

/* Runs the check's steps until one waits for the socket (0) or the check ends (1). */
static int
probe_run(struct probe *p)
{
	int r;

	do {
		switch (p->step) {
		case PS_CONNECT: r = probe_connected(p); break;
		case PS_HANDSHAKE: r = probe_handshake(p); break;
		case PS_SEND: r = probe_send(p); break;
		case PS_READ: r = probe_read(p); break;
		default: WRONG("probe step"); return STEP_END;
		}
	} while (r == STEP_NEXT);
	return r;
}


/* The socket is ready: steps the check; at its end, reports and goes on with the server's round. */
static void
probe_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct probe *p = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(p, PROBE_MAGIC);
	if (probe_run(p) == STEP_END)
		health_hsrv_run(probe_end(p));
}

/* check.timeout has passed: the step it stopped in names the failure. */
static void
probe_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct probe *p = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(p, PROBE_MAGIC);
	log_debug("health check %s/%s %s: timeout in %s", p->b->name, p->cs->name, p->proto,
	    probe_step_str(p->step));
	probe_result(p, false, p->step == PS_CONNECT ? "L4TOUT" : p->step == PS_HANDSHAKE ? "L6TOUT" : "L7TOUT");
	health_hsrv_run(probe_end(p));
}

/* Writes the PROXY header of a check (LOCAL: no client behind it) into p->pp. */
static void
probe_proxy_header(struct probe *p)
{
	ssize_t n = 0;

	if (p->b->send_proxy == SEND_PROXY_V1)
		n = snprintf(p->pp, sizeof(p->pp), "PROXY UNKNOWN\r\n");
	else if (p->b->send_proxy == SEND_PROXY_V2)
		n = pp_encode_v2(p->pp, sizeof(p->pp), PP_CMD_LOCAL, NULL, NULL, NULL, 0);
	p->pplen = n > 0 ? (size_t)n : 0;
}

/* Writes the request (after the PROXY header when there is no TLS) into p->out. */
static void
probe_request(struct probe *p, const char *path)
{
	char host[256];
	const struct tls_client *t = p->b->tls;

	if (t && t->sni)
		snprintf(host, sizeof(host), "%s", t->sni);
	else if (p->cs->text[0] == '[')
		snprintf(host, sizeof(host), "%.*s", (int)(strcspn(p->cs->text, "]") + 1), p->cs->text);
	else
		server_host(p->cs->text, host, sizeof(host));
	if (!t && p->pplen)
		memcpy(p->out, p->pp, p->pplen);
	int n = snprintf(p->out + (t ? 0 : p->pplen), sizeof(p->out) - (t ? 0 : p->pplen),
	    "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: exrelay-health\r\nConnection: close\r\n\r\n", path, host);
	p->outlen = (t ? 0 : p->pplen) + (n > 0 ? (size_t)n : 0);
	if (p->outlen > sizeof(p->out))
		p->outlen = sizeof(p->out);	/* a path too long for a check: the server says 4xx */
}

/* Makes the check of protocol proto of hs (not started). */
static struct probe *
probe_new(struct hsrv *hs, int proto)
{
	const struct cfg_backend *b = hs->b;
	struct probe *p = calloc(1, sizeof(*p));
	char path[160];

	if (!p)
		return NULL;
	p->magic = PROBE_MAGIC;
	p->owner = hs;
	p->cfg = config_ref(health_config());
	p->b = b;
	p->cs = hs->cs;
	p->rt = hs->cs->rt;
	p->h.fd = -1;
	p->h.ops = &sock_ops;
	p->start = ev_time();
	if (health_per_proto(b)) {
		snprintf(p->proto, sizeof(p->proto), "%s", b->protos[proto]);
		snprintf(path, sizeof(path), "/%s/healthcheck.htm", b->protos[proto]);
	} else {
		snprintf(p->proto, sizeof(p->proto), "*");
		snprintf(path, sizeof(path), "%s", strcmp(b->check.path, "auto") == 0 ? "/" : b->check.path);
	}
	probe_proxy_header(p);
	probe_request(p, path);
	ev_init(&p->io, probe_io_cb);
	p->io.data = p;
	ev_timer_init(&p->timer, probe_timeout_cb, b->check.timeout, 0.);
	p->timer.data = p;
	return p;
}

/*
 * Starts the check of protocol proto of hs: hs->p while it runs. A check that fails at once
 * (no socket, connect refused at once) is reported here, and hs->p stays NULL.
 */
void
health_probe_start(struct hsrv *hs, int proto)
{
	struct probe *p = probe_new(hs, proto);

	if (!p) {
		log_error("health check %s/%s: out of memory", hs->b->name, hs->cs->name);
		return;
	}
	hs->p = p;
	p->h.fd = socket(p->cs->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->h.fd == -1 || (connect(p->h.fd, (const struct sockaddr *)&p->cs->addr, p->cs->addrlen) == -1 &&
	    errno != EINPROGRESS)) {
		int err = errno;
		if (sock_local_error(err)) {
			/*
			 * This host ran short, not the server: the check is skipped, its state kept (a
			 * moment without descriptors would otherwise take every server down at once,
			 * and the agent port would drain this exrelay). Logged once a second.
			 */
			static time_t last;
			time_t now = time(NULL);
			if (now != last)
				log_warn("health check %s/%s skipped: %s: %s", p->b->name, p->cs->name,
				    p->h.fd == -1 ? "socket" : "connect", strerror(err));
			last = now;
			servers_check_skipped(p->rt, p->proto, "SOCKERR");
			health_probe_free(p);
			return;
		}
		log_debug("health check %s/%s: connect: %s", p->b->name, p->cs->name, strerror(err));
		probe_result(p, false, p->h.fd == -1 ? "SOCKERR" : "L4CON");
		probe_end(p);
		return;
	}
	sock_set_nodelay(p->h.fd);
	ev_timer_start(health_loop(), &p->timer);
	probe_wait(p, EV_WRITE);
}

/* Hands the check in flight over to hs, its server's entry in a new configuration. */
void
health_probe_move(struct probe *p, struct hsrv *hs)
{
	p->owner = hs;
}
