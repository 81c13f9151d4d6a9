/*
 * upstream.c: the backend side of a connection: choosing a server, the non-blocking
 * connect, and the PROXY header that opens each backend connection when send_proxy is set.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxyproto.h"
#include "relay.h"

void conn_half_init(struct conn *c, struct half *h, int fd);

/* FNV-1a: a stable hash, the same on every instance and every run. */
static uint64_t
fnv1a(const char *p, size_t n)
{
	uint64_t h = 1469598103934665603ULL;

	for (size_t i = 0; i < n; i++) {
		h ^= (unsigned char)p[i];
		h *= 1099511628211ULL;
	}
	return h;
}

size_t
upstream_pick(const struct conn *c, const struct cfg_backend *b, const char *key, size_t keylen)
{
	(void)c;
	if (b->nservers <= 1)
		return 0;
	return (size_t)(fnv1a(key, keylen) % b->nservers);
}

/* Puts the PROXY header for this client at the front of the backend's output. */
static int
put_proxy_header(struct conn *c, int version)
{
	struct buf *o = c->backend.out;
	struct sockaddr_storage local;
	socklen_t len = sizeof(local);
	ssize_t n;

	if (getsockname(c->client.fd, (struct sockaddr *)&local, &len) == -1)
		return -1;
	/* Both addresses in one family: an IPv4 client on an IPv6 socket is sent as TCP4. */
	if (local.ss_family != c->client_addr.ss_family) {
		struct sockaddr_in6 *l6 = (struct sockaddr_in6 *)&local;
		if (local.ss_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr)) {
			struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = l6->sin6_port };
			memcpy(&s4.sin_addr, l6->sin6_addr.s6_addr + 12, 4);
			memset(&local, 0, sizeof(local));
			memcpy(&local, &s4, sizeof(s4));
		} else {
			/* Mixed families: describe the destination with the client's family's "any". */
			memset(&local, 0, sizeof(local));
			local.ss_family = c->client_addr.ss_family;
		}
	}
	if (version == 1)
		n = pp_encode_v1(o->data + o->w, BUF_CAP - o->w, (struct sockaddr *)&c->client_addr,
		    (struct sockaddr *)&local);
	else
		n = pp_encode_v2(o->data + o->w, BUF_CAP - o->w, PP_CMD_PROXY, (struct sockaddr *)&c->client_addr,
		    (struct sockaddr *)&local, NULL, 0);
	if (n < 0)
		return -1;
	o->w += (size_t)n;
	return 0;
}

int
upstream_connect(struct conn *c)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
	const struct cfg_server *s = &b->servers[c->server];
	int fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		log_error("backend %s: socket: %s", b->name, strerror(errno));
		return -1;
	}
	sock_set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&s->addr, s->addrlen) == -1 && errno != EINPROGRESS) {
		log_warn("backend %s server %s: connect: %s", b->name, s->text, strerror(errno));
		close(fd);
		return -1;
	}
	conn_half_init(c, &c->backend, fd);
	c->backend.connecting = true;
	c->breusable = true;
	if (b->send_proxy && put_proxy_header(c, b->send_proxy) == -1) {
		log_warn("backend %s: cannot describe client %s in a PROXY header", b->name, c->client_ip);
		upstream_close(c);
		return -1;
	}
	ev_io_start(c->loop, &c->backend.wio);
	return 0;
}

int
upstream_connected(struct conn *c)
{
	const struct cfg_backend *b = &c->bcfg->backends[c->bidx];
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(c->backend.fd, SOL_SOCKET, SO_ERROR, &err, &len) == -1)
		err = errno;
	if (err) {
		log_warn("client=%s backend %s server %s: connect: %s", c->client_ip, b->name,
		    b->servers[c->server].text, strerror(err));
		return -1;
	}
	c->backend.connecting = false;
	ev_io_stop(c->loop, &c->backend.wio);
	log_debug("client=%s connected to backend %s server %s", c->client_ip, b->name, b->servers[c->server].text);
	return 0;
}

void
upstream_close(struct conn *c)
{
	struct half *h = &c->backend;

	if (h->fd >= 0) {
		ev_io_stop(c->loop, &h->rio);
		ev_io_stop(c->loop, &h->wio);
		h->ops->release(h);
		close(h->fd);
		h->fd = -1;
	}
	buf_put(h->in);
	buf_put(h->out);
	h->in = h->out = NULL;
	h->fwd = 0;
	c->client.fwd = 0;
	h->eof = h->shut = h->connecting = false;
	c->bidx = -1;
	c->bcfg = NULL;
	c->server = -1;
}
