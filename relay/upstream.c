/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * upstream.c: the backend side of a connection: choosing a server, the non-blocking
 * connect, and the PROXY header that opens each backend connection when send_proxy is set.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "epcheck.h"
#include "proxyproto.h"
#include "relay.h"
#include "servers.h"
#include "tls.h"

/* Encodes the PROXY header describing this client into out[0..cap); its length or -1. */
static ssize_t
proxy_header(struct conn *c, int version, char *out, size_t cap)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	ssize_t n;

	if (getsockname(c->client.fd, (struct sockaddr *)&local, &len) == -1)
		return -1;
	/* Both addresses in one family: an IPv4 client on an IPv6 socket is sent as TCP4. */
	if (local.ss_family != c->client_addr.ss_family)
		addr_unmap(&local);
	if (local.ss_family != c->client_addr.ss_family) {
		/* Mixed families: describe the destination with the client's family's "any". */
		memset(&local, 0, sizeof(local));
		local.ss_family = c->client_addr.ss_family;
	}
	if (version == 1)
		n = pp_encode_v1(out, cap, (struct sockaddr *)&c->client_addr, (struct sockaddr *)&local);
	else
		n = pp_encode_v2(out, cap, PP_CMD_PROXY, (struct sockaddr *)&c->client_addr,
		    (struct sockaddr *)&local, NULL, 0);
	return n;
}

/* Puts the PROXY header at the front of the backend's output (before the request head). */
static int
put_proxy_header(struct conn *c, int version)
{
	struct buf *o = c->backend.out;
	char hdr[256];
	ssize_t n = proxy_header(c, version, hdr, sizeof(hdr));

	if (n < 0 || buf_room(o) < (size_t)n)
		return -1;
	memmove(o->data + o->r + n, o->data + o->r, buf_len(o));
	memcpy(o->data + o->r, hdr, (size_t)n);
	o->w += (size_t)n;
	return 0;
}

/*
 * Starts a non-blocking connect to the current server. 0, or -1 with errno (sock_local_error:
 * this host ran short, which is no failure of the server).
 */
static int
upstream_connect(struct conn *c)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
	const struct cfg_server *s = &b->servers[c->server];
	int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		/* Out of descriptors, every request says so: once a second is enough. */
		static __thread time_t last;
		time_t now = time(NULL);
		int err = errno;
		if (now != last)
			log_error("backend %s: socket: %s", b->name, strerror(err));
		last = now;
		errno = err;
		return -1;
	}
	sock_set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&s->addr, s->addrlen) == -1 && errno != EINPROGRESS) {
		int err = errno;
		log_warn("backend %s server %s: connect: %s", b->name, s->text, strerror(err));
		close(fd);
		errno = err;
		return -1;
	}
	pump_half_open(&c->backend, fd);
	c->backend.connecting = true;
	c->breusable = true;
	ev_io_start(c->loop, &c->backend.wio);
	return 0;
}

/* Closes the socket of a connect that failed, keeping the request waiting in out. */
static void
drop_socket(struct conn *c)
{
	struct half *h = &c->backend;

	ev_io_stop(c->loop, &h->rio);
	ev_io_stop(c->loop, &h->wio);
	h->ops->release(h);
	close(h->fd);
	h->fd = -1;
	h->connecting = h->handshaking = false;
}

/* The run-time state of the current server, or NULL. */
static struct srv *
current(const struct conn *c)
{
	return c->bidx >= 0 && c->bcfg && c->server >= 0 ? c->bcfg->backends[c->bidx].servers[c->server].rt : NULL;
}

/* Tries the servers of c's order from c->tries on until a connect starts. 0 or -1. */
static int
connect_next(struct conn *c)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];

	for (; c->tries < c->norder; c->tries++) {
		c->server = c->order[c->tries];
		if (upstream_connect(c) == 0)
			return 0;
		if (sock_local_error(errno))
			return -1;	/* every server would fail alike, and none is to blame */
		if (current(c))
			servers_failure(current(c), "connect");
		if (c->tries + 1 < c->norder) {
			metrics_backend_error(b->name, "retry");	/* the retry on the next server, counted */
			log_info("client=%s backend %s: trying the next server", c->client_ip, b->name);
		}
	}
	c->server = c->norder ? c->order[c->norder - 1] : -1;
	return -1;
}

/*
 * Opens the backend connection: ranks the backend's servers usable for c->proto by key (and
 * an RPC channel's cookie, which keeps an IN/OUT pair on one server even while it drains),
 * then connects to the first, moving to the next when a connect fails at once (the same
 * order on every instance). 0, UPSTREAM_NONE_USABLE, or -1 when every server failed.
 */
int
upstream_open(struct conn *c, const char *key, size_t keylen, const uint8_t *cookie)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
	size_t order[SRV_PER_BACKEND];
	size_t n = servers_rank(b, c->proto, key, keylen, cookie, order);

	if (n > UPSTREAM_TRIES)
		n = UPSTREAM_TRIES;
	c->norder = (int)n;
	for (size_t i = 0; i < n; i++)
		c->order[i] = (uint8_t)order[i];
	c->tries = 0;
	if (n == 0) {
		c->server = -1;
		return UPSTREAM_NONE_USABLE;
	}
	if (connect_next(c) == -1)
		return -1;
	if (cookie && current(c)) {
		memcpy(c->cookie, cookie, sizeof(c->cookie));
		c->cookie_srv = current(c);
		servers_rpc_open(c->cookie_srv, c->cookie);
	}
	return 0;
}

/*
 * After a connect failed late (refused, reset, timed out): the next server in the order, if
 * any. An RPC channel's pin moves with it, so that its partner channel follows it to the server
 * it now uses, not to the one that failed. 0 or -1.
 */
int
upstream_retry(struct conn *c)
{
	drop_socket(c);
	c->tries++;
	int r = connect_next(c);
	if (c->cookie_srv && c->cookie_srv != current(c)) {
		servers_rpc_close(c->cookie_srv, c->cookie);
		c->cookie_srv = r == 0 ? current(c) : NULL;
		if (c->cookie_srv)
			servers_rpc_open(c->cookie_srv, c->cookie);
	}
	return r;
}

/* A failure of the current server (connect, tls, 5xx) counts toward its passive health. */
void
upstream_failed(struct conn *c, const char *kind)
{
	if (current(c))
		servers_failure(current(c), kind);
}

/* Sends the PROXY header in clear before a TLS handshake (a fresh socket takes 232 bytes). */
static int
send_proxy_clear(struct conn *c, int version)
{
	char hdr[256];
	ssize_t n = proxy_header(c, version, hdr, sizeof(hdr));

	return n > 0 && send(c->backend.fd, hdr, (size_t)n, MSG_NOSIGNAL) == n ? 0 : -1;
}

/* Starts the TLS session to the server (after the PROXY header, sent in clear). 0 or -1. */
static int
start_tls(struct conn *c, const struct cfg_backend *b)
{
	char host[256], key[160];
	const char *t = b->servers[c->server].text, *colon = strrchr(t, ':');
	size_t hl = colon ? (size_t)(colon - t) : strlen(t);

	if (*t == '[' && hl >= 2) {
		t++;
		hl -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", (int)hl, t);
	/* Per configuration: a reload that changes verification never resumes old sessions. */
	snprintf(key, sizeof(key), "%llu/%s/%s", b->tls->generation, b->name, b->servers[c->server].text);
	if ((b->send_proxy && send_proxy_clear(c, (int)b->send_proxy) == -1) ||
	    tls_start_client(&c->backend, b->tls, host, key) == -1)
		return step_why(c, -1, "cannot start TLS");
	c->backend.handshaking = true;
	return 0;
}

/* The connect ended: checks it, then starts TLS or puts the PROXY header. 0 or -1 (c->reason). */
static int
connect_done(struct conn *c, const struct cfg_backend *b)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err)
		return step_why(c, -1, "connect to %s: %s", b->servers[c->server].text, strerror(err));
	if (b->tls)
		return start_tls(c, b);
	/* In front of the request head, so both usually leave in one segment. */
	if (b->send_proxy && put_proxy_header(c, (int)b->send_proxy) == -1)
		return step_why(c, -1, "cannot describe the client in a PROXY header");
	return 0;
}

/*
 * Called when the backend socket is writable during the connect: checks the connect, then
 * starts and steps the TLS handshake when the backend uses TLS. Returns 1 when the backend
 * is ready, 0 while the handshake goes on, -1 on failure with the reason in c->reason (a
 * copy: nothing of the failed TLS state is referred to once this returns), or
 * UPSTREAM_NONE_USABLE when channel_binding = "require" and the server's certificate turned
 * out not to bind like exrelay's (503: a login could never succeed there).
 */
int
upstream_connected(struct conn *c)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
	struct half *h = &c->backend;

	if (!h->handshaking && connect_done(c, b) == -1)
		return -1;
	if (h->handshaking) {
		const char *why = NULL;
		int r = tls_handshake(h, &why);
		if (r < 0)
			return step_why(c, -1, "%s", why ? why : "TLS handshake failed");
		if (r == 0)
			return 0;
		h->handshaking = false;
		log_debug("client=%s backend %s: %s %s%s", c->client_ip, b->name, tls_version_name(h),
		    tls_cipher_name(h), tls_resumed(h) ? " (resumed)" : "");
		/* Without checks, a full handshake shows the server's certificate for the comparison. */
		if (b->channel_binding != CB_OFF && !b->check.enabled && !tls_resumed(h))
			epcheck_seen(current(c), h);
		if (b->channel_binding == CB_REQUIRE && current(c) && servers_cb_match(current(c)) == 0)
			return step_why(c, UPSTREAM_NONE_USABLE, "server %s: certificate mismatch (channel_binding = require)",
			    b->servers[c->server].name);
	}
	h->connecting = false;
	ev_io_stop(c->loop, &h->wio);
	if (current(c)) {
		servers_success(current(c));
		servers_conn(current(c), 1);
		c->srv_counted = true;
	}
	log_debug("client=%s connected to backend %s server %s", c->client_ip, b->name, b->servers[c->server].text);
	return 1;
}

/* The name of the connection's backend, "-" when it has none. */
const char *
upstream_name(const struct conn *c)
{
	return c->bidx >= 0 && c->bcfg ? c->bcfg->backends[c->bidx].name : "-";
}

/* Closes the backend connection, keeping which server it was (for the access log). */
void
upstream_release(struct conn *c)
{
	if (c->srv_counted && current(c))
		servers_conn(current(c), -1);
	c->srv_counted = false;
	pump_close_half(c, &c->backend);
	c->client.fwd = 0;
}

/* Ends an RPC channel's pin to its server (the channel is over). */
void
upstream_unpin(struct conn *c)
{
	if (c->cookie_srv)
		servers_rpc_close(c->cookie_srv, c->cookie);
	c->cookie_srv = NULL;
}

void
upstream_close(struct conn *c)
{
	upstream_release(c);
	c->bidx = -1;
	c->bcfg = NULL;
	c->server = -1;
}

/* --- one connection per backend --------------------------------------------------------- */

/* Moves half `from` into `to` (its watchers are stopped): watchers and TLS follow the struct. */
static void
move_half(struct conn *c, struct half *to, struct half *from)
{
	ev_io_stop(c->loop, &from->rio);
	ev_io_stop(c->loop, &from->wio);
	*to = *from;
	to->rio.data = to;
	to->wio.data = to;
	tls_rebind(to);
	memset(from, 0, sizeof(*from));
	from->c = c;
	from->fd = -1;
	from->ops = to->ops;
	ev_io_init(&from->rio, to->rio.cb, -1, EV_READ);
	ev_io_init(&from->wio, to->wio.cb, -1, EV_WRITE);
	from->rio.data = from;
	from->wio.data = from;
}

/* True when the parked connection is still open and quiet (no end, no stray bytes waiting). */
static bool
parked_alive(struct conn *c)
{
	char b;

	if (c->parked.h.fd < 0 || c->parked.h.ops->pending(&c->parked.h))
		return false;
	ssize_t n = recv(c->parked.h.fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
	return n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

/* Closes the parked backend connection, if any. */
void
upstream_close_parked(struct conn *c)
{
	struct parked *p = &c->parked;

	if (p->h.fd < 0)
		return;
	if (p->srv_counted && p->bcfg && p->bcfg->backends[p->bidx].servers[p->server].rt)
		servers_conn(p->bcfg->backends[p->bidx].servers[p->server].rt, -1);
	pump_close_half(c, &p->h);
	p->srv_counted = false;
	p->bcfg = NULL;
}

/*
 * Before a request for backend bidx (of c->cfg): keeps the current connection when it is
 * bidx's; otherwise parks an idle, reusable one (NTLM authenticates the TCP connection: a
 * client that mixes Apache and Exchange requests on one connection keeps both) and takes
 * back bidx's parked connection when it is still open. 1 when c->backend is bidx's, else 0.
 */
int
upstream_switch(struct conn *c, int bidx)
{
	struct half *be = &c->backend;
	struct parked *p = &c->parked, cur = { .h = { .fd = -1 } };

	if (be->fd >= 0 && c->bidx == bidx && c->bcfg == c->cfg && c->breusable)
		return 1;
	bool park = be->fd >= 0 && !be->connecting && c->breusable && !be->eof && c->bcfg == c->cfg &&
	    buf_len(be->in) == 0 && !pump_has_output(be);
	bool take = p->h.fd >= 0 && p->bidx == bidx && p->bcfg == c->cfg && parked_alive(c);
	if (!take)
		upstream_close_parked(c);
	if (!park) {
		upstream_close(c);
	} else {
		cur = (struct parked){ .bidx = c->bidx, .server = c->server, .bcfg = c->bcfg, .srv_counted = c->srv_counted };
		move_half(c, &cur.h, be);
		c->srv_counted = false;
	}
	if (take) {
		move_half(c, be, &p->h);
		c->bidx = p->bidx;
		c->server = p->server;
		c->bcfg = p->bcfg;
		c->srv_counted = p->srv_counted;
		c->breusable = true;
		p->srv_counted = false;
		p->bcfg = NULL;
	} else if (park) {
		c->bidx = -1;
		c->bcfg = NULL;
		c->server = -1;
	}
	if (park) {
		move_half(c, &p->h, &cur.h);
		p->bidx = cur.bidx;
		p->server = cur.server;
		p->bcfg = cur.bcfg;
		p->srv_counted = cur.srv_counted;
	}
	c->client.fwd = 0;
	return take;
}
