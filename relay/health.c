/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * health.c: the active health checker. One thread with its own libev loop owns the schedule:
 * for every server of a backend with `check`, a round every check.interval (the first rounds
 * spread over the interval, each next one jittered by +-10%) checks each protocol in turn
 * (`GET /<proto>/healthcheck.htm` with path "auto", else `GET <path>`). A server has at most one
 * check in flight: its protocols are queued and start interval/n apart, each no earlier than
 * the end of the one before, so a slow server never gets a herd of parallel checks.
 *
 * A check is one connection: non-blocking connect, the backend's PROXY header (LOCAL), the
 * backend's TLS (tls.c on a struct half of our own: credentials, priority, SNI, verification,
 * session resumption shared with the request path), the request, and the status line read
 * into a bounded buffer; check.timeout bounds the whole of it. Results go to
 * servers_check_result() with HAProxy's words: "L7OK 200", "L7STS 503", "L4CON", "L4TOUT",
 * "L6RSP", "L6TOUT", "L7RSP", "L7TOUT", "SOCKERR".
 *
 * The main thread hands a new configuration over through an ev_async (health_reload); the
 * checker holds its own reference, and each check in flight holds one to the configuration it
 * started with, so a reload never pulls its backend, server or TLS settings away.
 */
#include "autoconf.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "epcheck.h"
#include "health.h"
#include "proxyproto.h"
#include "relay.h"
#include "servers.h"
#include "tls.h"

#define PROBE_MAGIC 0x70726f62U	/* "prob" */
#define HSRV_MAGIC 0x68737276U	/* "hsrv" */

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

struct hsrv;

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

/* One checked server of the current configuration, and its schedule. */
struct hsrv {
	unsigned magic;
	const struct cfg_backend *b;
	const struct cfg_server *cs;
	int nprotos;			/* checks per round */
	int next;			/* the round's next protocol; nprotos: between rounds */
	ev_tstamp round_start;
	ev_timer timer;			/* the next check of the round, or the next round */
	struct probe *p;		/* the check in flight, or NULL */
	bool moved;			/* a reload moved it to a new entry */
};

static struct {
	/* Shared with the main thread (under lock). */
	pthread_mutex_t lock;
	struct config *pending;		/* a configuration handed over, or NULL */
	bool stop;
	/* The main thread's. */
	bool running;
	pthread_t thread;
	/* The checker's. */
	struct ev_loop *loop;
	ev_async wake;
	struct config *cfg;		/* the configuration checked */
	struct hsrv *srvs;
	size_t nsrvs;
	uint64_t rng;
} H = { .lock = PTHREAD_MUTEX_INITIALIZER };

static ENUM_STR(probe_step_str, enum probe_step, PROBE_STEPS)

/* A number in [0, 1) (splitmix64): jitter only, nothing secret. */
static double
health_rand(void)
{
	uint64_t z = (H.rng += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	z ^= z >> 31;
	return (double)(z >> 11) / 9007199254740992.0;
}

/* True when some backend of cfg has checks. */
static bool
health_wanted(const struct config *cfg)
{
	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].check.enabled)
			return true;
	return false;
}

/* True when b's checks are per protocol (path "auto" and routes that name protocols). */
static bool
per_proto(const struct cfg_backend *b)
{
	return strcmp(b->check.path, "auto") == 0 && b->nprotos > 0;
}

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

/* --- one check ----------------------------------------------------------------------------- */

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
	ev_io_stop(H.loop, &p->io);
	ev_io_set(&p->io, p->h.fd, events);
	ev_io_start(H.loop, &p->io);
}

/* Closes the check's connection and frees it; its server entry has none in flight any more. */
static void
probe_free(struct probe *p)
{
	CHECK_OBJ(p, PROBE_MAGIC);
	p->owner->p = NULL;
	ev_io_stop(H.loop, &p->io);
	ev_timer_stop(H.loop, &p->timer);
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
	for (int i = 0; i < s->nprotos && i < CFG_MAX_PROTOS; i++)
		if (strcmp(s->protos[i], p->proto) == 0) {
			servers_check_result(s, i, p->ok, took, p->status, p->b->check.rise, p->b->check.fall);
			break;
		}
	log_debug("health check %s/%s %s: %s in %.3f s", p->b->name, p->cs->name, p->proto, p->status, took);
	probe_free(p);
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

static void hsrv_run(struct hsrv *hs);

/* The socket is ready: steps the check; at its end, reports and goes on with the server's round. */
static void
probe_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct probe *p = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(p, PROBE_MAGIC);
	if (probe_run(p) == STEP_END)
		hsrv_run(probe_end(p));
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
	hsrv_run(probe_end(p));
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
	p->cfg = config_ref(H.cfg);
	p->b = b;
	p->cs = hs->cs;
	p->rt = hs->cs->rt;
	p->h.fd = -1;
	p->h.ops = &sock_ops;
	p->start = ev_time();
	if (per_proto(b)) {
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
static void
probe_start(struct hsrv *hs, int proto)
{
	struct probe *p = probe_new(hs, proto);

	if (!p) {
		log_error("health check %s/%s: out of memory", hs->b->name, hs->cs->name);
		return;
	}
	hs->p = p;
	p->h.fd = socket(p->cs->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->h.fd == -1) {
		log_warn("health check %s/%s: socket: %s", p->b->name, p->cs->name, strerror(errno));
		probe_result(p, false, "SOCKERR");
		probe_end(p);
		return;
	}
	sock_set_nodelay(p->h.fd);
	if (connect(p->h.fd, (const struct sockaddr *)&p->cs->addr, p->cs->addrlen) == -1 && errno != EINPROGRESS) {
		log_debug("health check %s/%s: connect: %s", p->b->name, p->cs->name, strerror(errno));
		probe_result(p, false, "L4CON");
		probe_end(p);
		return;
	}
	ev_timer_start(H.loop, &p->timer);
	probe_wait(p, EV_WRITE);
}

/* --- the schedule -------------------------------------------------------------------------- */

/* Arms hs's timer after seconds (clamped at 0). */
static void
hsrv_arm(struct hsrv *hs, double after)
{
	ev_timer_stop(H.loop, &hs->timer);
	ev_timer_set(&hs->timer, after > 0 ? after : 0., 0.);
	ev_timer_start(H.loop, &hs->timer);
}

/*
 * Goes on with hs's round while nothing is in flight: starts the next protocol's check when
 * its time (round start + k * interval / n) has come, else arms the timer for it; after the
 * last one, arms the timer for the next round (an interval after this one began, +-10%).
 */
static void
hsrv_run(struct hsrv *hs)
{
	double interval = hs->b->check.interval;

	CHECK_OBJ(hs, HSRV_MAGIC);
	while (!hs->p) {
		double now = ev_now(H.loop);
		if (hs->next >= hs->nprotos) {
			hsrv_arm(hs, hs->round_start + interval * (0.9 + 0.2 * health_rand()) - now);
			return;
		}
		double due = hs->round_start + interval * (double)hs->next / (double)hs->nprotos;
		if (due > now) {
			hsrv_arm(hs, due - now);
			return;
		}
		probe_start(hs, hs->next++);
	}
}

/* hs's timer: the next round begins, or the round's next check is due. */
static void
hsrv_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hsrv *hs = w->data;
	(void)revents;

	CHECK_OBJ(hs, HSRV_MAGIC);
	if (hs->next >= hs->nprotos) {
		hs->next = 0;
		hs->round_start = ev_now(loop);
	}
	hsrv_run(hs);
}

/* The entry of backend/server among the current entries, or NULL. */
static struct hsrv *
hsrv_find(const char *backend, const char *server)
{
	for (size_t i = 0; i < H.nsrvs; i++)
		if (strcmp(H.srvs[i].b->name, backend) == 0 && strcmp(H.srvs[i].cs->name, server) == 0)
			return &H.srvs[i];
	return NULL;
}

/*
 * Sets up hs, the entry of the k-th of n checked servers of b: a server checked before keeps
 * its schedule and its check in flight; a new one starts within one interval, in its k-th
 * share of it (jittered), so the servers of a backend do not align.
 */
static void
hsrv_init(struct hsrv *hs, const struct cfg_backend *b, const struct cfg_server *cs, size_t k, size_t n)
{
	struct hsrv *old = hsrv_find(b->name, cs->name);

	hs->magic = HSRV_MAGIC;
	hs->b = b;
	hs->cs = cs;
	hs->nprotos = per_proto(b) ? (int)b->nprotos : 1;
	hs->next = hs->nprotos;
	ev_init(&hs->timer, hsrv_timer_cb);
	hs->timer.data = hs;
	if (old && old->p) {
		/* The check in flight reports as it started; the round goes on if it is the same. */
		old->moved = true;
		hs->p = old->p;
		hs->p->owner = hs;
		old->p = NULL;
		hs->next = old->nprotos == hs->nprotos ? old->next : hs->nprotos;
		hs->round_start = old->round_start;
		return;
	}
	if (old && ev_is_active(&old->timer)) {
		double left = ev_timer_remaining(H.loop, &old->timer);
		old->moved = true;
		hs->next = old->nprotos == hs->nprotos ? old->next : hs->nprotos;
		hs->round_start = old->round_start;
		hsrv_arm(hs, left < b->check.interval ? left : b->check.interval);
		return;
	}
	hsrv_arm(hs, b->check.interval * ((double)k + health_rand()) / (double)n);
}

/* Stops an entry the new configuration no longer has (its check in flight is dropped). */
static void
hsrv_drop(struct hsrv *hs)
{
	ev_timer_stop(H.loop, &hs->timer);
	if (hs->p)
		probe_free(hs->p);	/* no result: the server is gone, or the checker stops */
	hs->magic = 0;
}

/* Checks the servers of cfg from now on (the checker's reference to cfg is taken over). */
static void
health_apply(struct config *cfg)
{
	struct hsrv *old = H.srvs, *srvs = NULL;
	size_t nold = H.nsrvs, n = 0, j = 0;

	for (size_t i = 0; i < cfg->nbackends; i++)
		if (cfg->backends[i].check.enabled)
			n += cfg->backends[i].nservers;
	if (n && !(srvs = calloc(n, sizeof(*srvs)))) {
		log_error("health checks: out of memory, keeping the previous configuration's");
		config_unref(cfg);
		return;
	}
	for (size_t i = 0; i < cfg->nbackends; i++) {
		const struct cfg_backend *b = &cfg->backends[i];
		for (size_t k = 0; b->check.enabled && k < b->nservers; k++) {
			if (!b->servers[k].rt) {
				log_warn("health check %s/%s: no run-time entry, not checked", b->name, b->servers[k].name);
				continue;
			}
			hsrv_init(&srvs[j++], b, &b->servers[k], k, b->nservers);
		}
	}
	for (size_t i = 0; i < nold; i++)
		if (!old[i].moved)
			hsrv_drop(&old[i]);
		else
			ev_timer_stop(H.loop, &old[i].timer);
	free(old);
	H.srvs = srvs;
	H.nsrvs = j;
	if (H.cfg)
		config_unref(H.cfg);
	H.cfg = cfg;
	log_info("health checks: %zu server(s)", j);
}

/* Stops every check and frees the schedule (the checker is about to end). */
static void
health_clear(void)
{
	for (size_t i = 0; i < H.nsrvs; i++)
		hsrv_drop(&H.srvs[i]);
	free(H.srvs);
	H.srvs = NULL;
	H.nsrvs = 0;
	if (H.cfg)
		config_unref(H.cfg);
	H.cfg = NULL;
}

/* The main thread's word: a new configuration, or stop. */
static void
health_wake_cb(struct ev_loop *loop, ev_async *a, int revents)
{
	struct config *cfg;
	bool stop;
	(void)a; (void)revents;

	pthread_mutex_lock(&H.lock);
	cfg = H.pending;
	H.pending = NULL;
	stop = H.stop;
	pthread_mutex_unlock(&H.lock);
	if (stop) {
		if (cfg)
			config_unref(cfg);
		health_clear();
		ev_async_stop(loop, &H.wake);
		ev_break(loop, EVBREAK_ALL);
		return;
	}
	if (cfg)
		health_apply(cfg);
}

static void *
health_main(void *arg)
{
	(void)arg;
	ev_run(H.loop, 0);
	return NULL;
}

void
health_start(struct config *cfg)
{
	sigset_t all, old;
	int e;

	if (H.running || !health_wanted(cfg))
		return;
	if (!(H.loop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK))) {
		log_error("health checks: cannot create an event loop; servers are not checked");
		return;
	}
	double now = ev_time();
	H.rng = (uint64_t)now * 1000003u ^ (uint64_t)getpid() << 32;
	H.stop = false;
	H.pending = config_ref(cfg);
	ev_async_init(&H.wake, health_wake_cb);
	ev_async_start(H.loop, &H.wake);
	ev_async_send(H.loop, &H.wake);	/* applies cfg first thing */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);	/* signals go to the main thread only */
	e = pthread_create(&H.thread, NULL, health_main, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e) {
		log_error("health checks: cannot start a thread: %s; servers are not checked", strerror(e));
		config_unref(H.pending);
		H.pending = NULL;
		ev_loop_destroy(H.loop);
		H.loop = NULL;
		return;
	}
	H.running = true;
}

void
health_reload(struct config *cfg)
{
	if (!health_wanted(cfg)) {
		health_stop();
		return;
	}
	if (!H.running) {
		health_start(cfg);
		return;
	}
	pthread_mutex_lock(&H.lock);
	if (H.pending)
		config_unref(H.pending);
	H.pending = config_ref(cfg);
	pthread_mutex_unlock(&H.lock);
	ev_async_send(H.loop, &H.wake);
}

void
health_stop(void)
{
	if (!H.running)
		return;
	pthread_mutex_lock(&H.lock);
	H.stop = true;
	pthread_mutex_unlock(&H.lock);
	ev_async_send(H.loop, &H.wake);
	pthread_join(H.thread, NULL);
	ev_loop_destroy(H.loop);
	H.loop = NULL;
	H.running = false;
	log_info("health checks stopped");
}
