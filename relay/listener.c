/*
 * listener.c: listening sockets, accept, the connection limit and EMFILE back-off.
 * Sockets survive a reload: a listener whose bind address is unchanged keeps its socket,
 * so no connection is refused or lost while the configuration changes.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"

static void
listener_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	(void)revents;

	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);

		if (relay.nconns >= relay.cfg->max_connections) {
			listener_pause_all(true);
			return;
		}
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				log_warn("listener %s: accept: %s; pausing accepts for 100 ms", l->name, strerror(errno));
				ev_io_stop(loop, &l->io);
				ev_timer_set(&l->backoff, 0.1, 0.);
				ev_timer_start(loop, &l->backoff);
			}
			return;
		}
		if (l->lcfg->role == ROLE_AGENT) {
			admin_agent_reply(fd);
			continue;
		}
		conn_accept(l, fd, &peer);
	}
}

static void
listener_backoff_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct listener *l = w->data;
	(void)revents;

	if (!l->paused && l->fd >= 0)
		ev_io_start(loop, &l->io);
}

/* Opens and binds a listening socket for lc; -1 with a message in err. */
static int
listener_bind(const struct cfg_listener *lc, char *err, size_t errlen)
{
	int one = 1, fd = socket(lc->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		snprintf(err, errlen, "listener %s: socket: %s", lc->name, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (lc->addr.ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&lc->addr, lc->addrlen) == -1 || listen(fd, 1024) == -1) {
		snprintf(err, errlen, "listener %s: cannot listen on %s: %s", lc->name, lc->bind, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* Finds an existing listener bound to the same address (for reuse across reloads). */
static struct listener *
find_same(struct listener *head, const struct cfg_listener *lc)
{
	for (struct listener *l = head; l; l = l->next)
		if (l->fd >= 0 && l->lcfg->addrlen == lc->addrlen &&
		    memcmp(&l->lcfg->addr, &lc->addr, lc->addrlen) == 0 &&
		    ((struct sockaddr_in *)&lc->addr)->sin_port != 0)
			return l;
	return NULL;
}

/*
 * Builds the listeners of cfg into *head. Sockets of the current listeners (relay.listeners)
 * with the same address are taken over (their fd moves). Returns 0, or -1 with err set and
 * nothing changed in the current listeners.
 */
int
listener_setup(struct config *cfg, struct listener **head, char *err, size_t errlen)
{
	struct listener *list = NULL, **tail = &list;

	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *lc = &cfg->listeners[i];
		struct listener *l = calloc(1, sizeof(*l)), *old = find_same(relay.listeners, lc);
		if (!l) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		*tail = l;
		tail = &l->next;
		l->lcfg = lc;
		l->cfg = cfg;
		snprintf(l->name, sizeof(l->name), "%s", lc->name);
		l->fd = old ? -2 : listener_bind(lc, err, errlen);
		if (l->fd == -1)
			goto fail;
		ev_io_init(&l->io, listener_accept_cb, 0, EV_READ);
		ev_init(&l->backoff, listener_backoff_cb);
		l->io.data = l;
		l->backoff.data = l;
	}
	/* All binds worked: take over the sockets of unchanged listeners. */
	for (struct listener *l = list; l; l = l->next) {
		if (l->fd >= 0)
			continue;
		struct listener *old = find_same(relay.listeners, l->lcfg);
		l->fd = old->fd;
		ev_io_stop(relay.loop, &old->io);
		ev_timer_stop(relay.loop, &old->backoff);
		old->fd = -1;
	}
	for (struct listener *l = list; l; l = l->next)
		ev_io_set(&l->io, l->fd, EV_READ);
	*head = list;
	return 0;
fail:
	listener_free_all(list, true);
	return -1;
}

/* Writes each listener's bound address, one "name address:port" line, for tests using port 0. */
void listener_report(struct listener *head);
void
listener_report(struct listener *head)
{
	for (struct listener *l = head; l; l = l->next) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		char host[64] = "?";
		int port = 0;

		if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == -1)
			continue;
		if (ss.ss_family == AF_INET) {
			inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
			port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
			log_info("listening name=%s addr=%s:%d", l->name, host, port);
		} else {
			inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
			port = ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
			log_info("listening name=%s addr=[%s]:%d", l->name, host, port);
		}
	}
}

void
listener_start(struct listener *head)
{
	for (struct listener *l = head; l; l = l->next)
		if (l->fd >= 0 && !relay.draining)
			ev_io_start(relay.loop, &l->io);
}

void
listener_stop(struct listener *head)
{
	for (struct listener *l = head; l; l = l->next) {
		ev_io_stop(relay.loop, &l->io);
		ev_timer_stop(relay.loop, &l->backoff);
	}
}

void
listener_free_all(struct listener *head, bool close_fds)
{
	while (head) {
		struct listener *next = head->next;
		ev_io_stop(relay.loop, &head->io);
		ev_timer_stop(relay.loop, &head->backoff);
		if (close_fds && head->fd >= 0)
			close(head->fd);
		free(head);
		head = next;
	}
}

void
listener_pause_all(bool pause)
{
	for (struct listener *l = relay.listeners; l; l = l->next) {
		l->paused = pause;
		if (pause)
			ev_io_stop(relay.loop, &l->io);
		else if (l->fd >= 0 && !relay.draining)
			ev_io_start(relay.loop, &l->io);
	}
}

void
listener_conn_closed(void)
{
	if (relay.listeners && relay.listeners->paused && relay.nconns < relay.cfg->max_connections)
		listener_pause_all(false);
}
