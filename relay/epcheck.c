/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * epcheck.c: Extended Protection through exrelay (epcheck.h). What a client behind exrelay
 * binds its login to is exrelay's listener certificate for the name it asked for (SNI); what
 * Exchange checks is its own. For each TLS backend the expected certificate is the one the TLS
 * traffic listeners present for the backend's `sni`, else for the `hosts` of the routes that
 * reach it, else their default certificate; servers.c compares it with each server's and logs
 * and exports the verdict. `exrelay -T` does the same once, synchronously, before a change.
 */
#include "autoconf.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "epcheck.h"
#include "metrics.h"
#include "proxyproto.h"
#include "relay.h"
#include "servers.h"
#include "tls.h"

/* The names a client may ask for to reach b: its sni, else its routes' hosts; NULL ends. */
static size_t
epcheck_names(const struct config *cfg, size_t bi, const char **names, size_t cap)
{
	const struct cfg_backend *b = &cfg->backends[bi];
	size_t n = 0;

	if (b->tls && b->tls->sni) {
		names[n++] = b->tls->sni;
		return n;
	}
	for (size_t r = 0; r < cfg->nroutes && n < cap; r++)
		for (size_t h = 0; cfg->routes[r].backend == (int)bi && h < cfg->routes[r].nhosts && n < cap; h++)
			names[n++] = cfg->routes[r].hosts[h];
	if (n == 0)
		names[n++] = NULL;	/* any name: the default certificate */
	return n;
}

/*
 * The certificate exrelay presents to the clients of backend bi into front (the first TLS
 * traffic listener's for the first name; *host gets that name, NULL for the default). A
 * listener or name that gets another certificate is logged when log is set: it cannot bind
 * like the server. 0, or -1 when no TLS traffic listener exists.
 */
static int
epcheck_front(const struct config *cfg, size_t bi, struct cbind_cert *front, const char **host, bool log)
{
	const char *names[64];
	size_t n = epcheck_names(cfg, bi, names, 64);
	bool have = false;
	struct cbind_cert c;

	for (size_t l = 0; l < cfg->nlisteners; l++) {
		const struct cfg_listener *li = &cfg->listeners[l];
		for (size_t k = 0; li->tls && li->role == ROLE_TRAFFIC && k < n; k++) {
			if (tls_server_cert_for(li->tls, names[k], &c) == -1)
				continue;
			if (!have) {
				*front = c;
				*host = names[k];
				have = true;
			} else if (log && !cbind_same(front, &c)) {
				log_warn("backend %s: listener %s presents \"%s\" for %s, another certificate than \"%s\" for %s: "
				    "the two cannot both bind like the server's", cfg->backends[bi].name, li->name, c.subject,
				    names[k] ? names[k] : "any name", front->subject, *host ? *host : "any name");
			}
		}
	}
	return have ? 0 : -1;
}

/* The backend's virtual directories, "/rpc /owa ...", or "every path" (when its routes name none). */
static void
epcheck_vdirs(const struct cfg_backend *b, char *out, size_t cap)
{
	size_t o = 0;

	out[0] = '\0';
	for (size_t p = 0; p < b->nprotos && o + 1 < cap; p++) {
		int k = snprintf(out + o, cap - o, "%s/%s", o ? " " : "", b->protos[p]);
		if (k < 0 || (size_t)k >= cap - o)
			break;
		o += (size_t)k;
	}
	if (!out[0])
		snprintf(out, cap, "every path");
}

void
epcheck_bind(const struct config *cfg)
{
	for (size_t bi = 0; bi < cfg->nbackends; bi++) {
		const struct cfg_backend *b = &cfg->backends[bi];
		struct cbind_cert front = { .known = false };
		const char *host = NULL;
		char vdirs[192];
		bool have = b->tls && b->channel_binding != CB_OFF && epcheck_front(cfg, bi, &front, &host, true) == 0;

		if (b->tls && b->channel_binding != CB_OFF && !have)
			log_info("backend %s: no TLS traffic listener, so no certificate to compare with its servers'", b->name);
		epcheck_vdirs(b, vdirs, sizeof(vdirs));
		for (size_t k = 0; k < b->nservers; k++)
			if (b->servers[k].rt)
				servers_cb_front(b->servers[k].rt, b->tls ? b->channel_binding : CB_OFF, have ? &front : NULL,
				    host, vdirs);
	}
}

void
epcheck_seen(struct srv *s, const struct half *h)
{
	struct cbind_cert peer;

	if (s && tls_peer_cert(h, &peer) == 0)
		servers_cb_peer(s, &peer);
}

/* Collects the compared servers for metrics_format_cert_match (under servers.c's lock). */
struct epcheck_list {
	struct metrics_cert_match m[SRV_MAX];
	size_t n;
};

static void
epcheck_collect(struct srv *s, void *arg)
{
	struct epcheck_list *l = arg;
	int match = servers_cb_match(s);

	if (match >= 0 && l->n < SRV_MAX)
		l->m[l->n++] = (struct metrics_cert_match){ s->backend, s->name, match };
}

size_t
epcheck_metrics(char *out, size_t cap)
{
	static __thread struct epcheck_list l;

	l.n = 0;
	servers_foreach(epcheck_collect, &l);
	return metrics_format_cert_match(out, cap, l.m, l.n);
}

/* --- exrelay -T ------------------------------------------------------------------------- */

/* Waits until fd is ready for events (POLLIN/POLLOUT) before deadline: 0, or -1 (ETIMEDOUT). */
static int
epcheck_wait(int fd, short events, double deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	double left = deadline - clock_mono();
	int r;

	if (left <= 0) {
		errno = ETIMEDOUT;
		return -1;
	}
	do
		r = poll(&p, 1, (int)(left * 1000) + 1);
	while (r == -1 && errno == EINTR);
	if (r == 0)
		errno = ETIMEDOUT;
	return r > 0 ? 0 : -1;
}

/* Connects to cs (and sends the backend's PROXY header, LOCAL): the socket, or -1 with why. */
static int
epcheck_connect(const struct cfg_backend *b, const struct cfg_server *cs, double deadline, char *why, size_t cap)
{
	int fd = socket(cs->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), err = 0;
	socklen_t len = sizeof(err);
	char pp[64];
	ssize_t n = 0;

	if (fd == -1 || (connect(fd, (const struct sockaddr *)&cs->addr, cs->addrlen) == -1 && errno != EINPROGRESS) ||
	    epcheck_wait(fd, POLLOUT, deadline) == -1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1 || err) {
		snprintf(why, cap, "connect: %s", strerror(err ? err : errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	if (b->send_proxy == SEND_PROXY_V1)
		n = snprintf(pp, sizeof(pp), "PROXY UNKNOWN\r\n");
	else if (b->send_proxy == SEND_PROXY_V2)
		n = pp_encode_v2(pp, sizeof(pp), PP_CMD_LOCAL, NULL, NULL, NULL, 0);
	if (n > 0 && send(fd, pp, (size_t)n, MSG_NOSIGNAL) != n) {
		snprintf(why, cap, "cannot send the PROXY header: %s", strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The certificate server cs of b presents into peer (one connection, a full handshake): 0, or -1 with why. */
static int
epcheck_fetch(const struct config *cfg, const struct cfg_backend *b, const struct cfg_server *cs,
    struct cbind_cert *peer, char *why, size_t cap)
{
	double deadline = clock_mono() + cfg->timeouts.connect + cfg->timeouts.tls_handshake;
	struct half h = { .fd = -1, .ops = &sock_ops };
	const char *t = cs->text, *colon = strrchr(t, ':'), *err = NULL;
	char host[256];
	size_t hl = colon ? (size_t)(colon - t) : strlen(t);
	int r = -1;

	if (*t == '[' && hl >= 2) {
		t++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)hl, t);
	if ((h.fd = epcheck_connect(b, cs, deadline, why, cap)) == -1)
		return -1;
	if (tls_start_client(&h, b->tls, host, "") == -1) {
		snprintf(why, cap, "cannot start TLS");
	} else {
		while ((r = tls_handshake(&h, &err)) == 0 &&
		    epcheck_wait(h.fd, h.want == EV_WRITE ? POLLOUT : POLLIN, deadline) == 0)
			;
		if (r == 0)
			snprintf(why, cap, "TLS handshake: %s", strerror(errno));
		else if (r < 0)
			snprintf(why, cap, "%s", err ? err : "TLS handshake failed");
		else if (tls_peer_cert(&h, peer) == -1)
			snprintf(why, cap, "no certificate from the server");
		r = r == 1 && peer->known ? 0 : -1;
	}
	h.ops->release(&h);
	close(h.fd);
	return r;
}

/* One server's line; returns its part of the exit status (0, 1 mismatch, 2 unreachable). */
static int
epcheck_server(const struct config *cfg, size_t bi, const struct cfg_server *cs)
{
	const struct cfg_backend *b = &cfg->backends[bi];
	struct cbind_cert front, peer;
	const char *host = NULL;
	char ffp[96], pfp[96], why[320];

	if (epcheck_front(cfg, bi, &front, &host, false) == -1) {
		printf("%s/%s %s: no TLS traffic listener: nothing to compare\n", b->name, cs->name, cs->text);
		return 0;
	}
	cbind_fingerprint(&front, ffp, sizeof(ffp));
	if (epcheck_fetch(cfg, b, cs, &peer, why, sizeof(why)) == -1) {
		printf("%s/%s %s: exrelay %s \"%s\", server unreachable (%s): UNREACHABLE\n", b->name, cs->name,
		    cs->text, ffp, front.subject, why);
		return 2;
	}
	cbind_fingerprint(&peer, pfp, sizeof(pfp));
	bool same = cbind_same(&front, &peer);
	printf("%s/%s %s: exrelay %s \"%s\" (%s), server %s \"%s\": %s\n", b->name, cs->name, cs->text, ffp,
	    front.subject, host ? host : "default certificate", pfp, peer.subject, same ? "match" : "MISMATCH");
	return same ? 0 : 1;
}

int
epcheck_test(const struct config *cfg)
{
	int status = 0, n = 0;

	for (size_t bi = 0; bi < cfg->nbackends; bi++) {
		const struct cfg_backend *b = &cfg->backends[bi];
		if (!b->tls)
			continue;
		if (b->channel_binding == CB_OFF) {
			printf("%s: channel_binding = \"off\": not compared\n", b->name);
			continue;
		}
		for (size_t k = 0; k < b->nservers; k++, n++) {
			int r = epcheck_server(cfg, bi, &b->servers[k]);
			status = r > status ? r : status;
		}
	}
	if (n == 0)
		printf("no TLS backend server to compare\n");
	fflush(stdout);
	return status;
}
