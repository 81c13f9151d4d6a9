/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * listener.c: listening sockets, accept, the connection limit and EMFILE back-off.
 *
 * Every worker has its own socket per configured listener (SO_REUSEPORT: the kernel spreads
 * new connections over the workers). The main thread builds a whole new set per worker on
 * start and on reload; a listener whose address is unchanged takes over the worker's current
 * socket, so no connection is refused or lost while the configuration changes. After a binary
 * upgrade (upgrade.c), a listener takes the previous process's socket for it instead of binding.
 * A set is started, stopped and freed by its worker's thread.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay.h"
#include "upgrade.h"

/* Pauses (or resumes) accepting on all of this worker's listeners. */
static void
listener_pause(struct worker *w, bool pause)
{
	w->paused = pause;
	for (struct listener *l = w->listeners; l; l = l->next) {
		/* The admin and agent ports answer at the limit too: that is when they matter. */
		if (l->fd < 0 || l->lcfg->role != ROLE_TRAFFIC)
			continue;
		if (pause) {
			ev_io_stop(w->loop, &l->io);
			/* Other workers' connections may close: look again shortly. */
			if (!ev_is_active(&l->backoff)) {
				ev_timer_set(&l->backoff, 0.05, 0.);
				ev_timer_start(w->loop, &l->backoff);
			}
		} else if (!w->draining || l->lcfg->role != ROLE_TRAFFIC) {
			ev_io_start(w->loop, &l->io);
		}
	}
}

static bool
at_limit(void)
{
	return __atomic_load_n(&relay.nconns, __ATOMIC_RELAXED) >= __atomic_load_n(&relay.max_conns, __ATOMIC_RELAXED);
}

/*
 * Takes one of the connection slots before an accept (the connection then owns it, and
 * conn_close gives it back): never more than max_connections, even with every worker racing
 * for the last slot. Traffic listeners only may be refused; admin connections always count.
 */
static bool
reserve(bool limited)
{
	long n = __atomic_add_fetch(&relay.nconns, 1, __ATOMIC_ACQ_REL);

	if (!limited || n <= __atomic_load_n(&relay.max_conns, __ATOMIC_RELAXED))
		return true;
	__atomic_sub_fetch(&relay.nconns, 1, __ATOMIC_ACQ_REL);
	return false;
}

static void
unreserve(void)
{
	__atomic_sub_fetch(&relay.nconns, 1, __ATOMIC_ACQ_REL);
}

static void
listener_accept_cb(struct ev_loop *loop, ev_io *io, int revents)
{
	struct listener *l = io->data;
	(void)revents;

	CHECK_OBJ(l, LISTENER_MAGIC);

	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage peer;
		socklen_t len = sizeof(peer);

		if (!reserve(l->lcfg->role == ROLE_TRAFFIC)) {
			listener_pause(l->w, true);
			return;
		}
		int fd = accept4(l->fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1 || l->lcfg->role == ROLE_AGENT)
			unreserve();	/* no connection to own the slot */
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
			admin_agent_reply(fd, l->cfg);
			continue;
		}
		conn_accept(l, fd, &peer);
	}
}

static void
listener_backoff_cb(struct ev_loop *loop, ev_timer *t, int revents)
{
	struct listener *l = t->data;
	(void)revents;

	CHECK_OBJ(l, LISTENER_MAGIC);

	if (l->w->paused) {
		if (at_limit()) {
			ev_timer_set(&l->backoff, 0.05, 0.);
			ev_timer_start(loop, &l->backoff);
			return;
		}
		listener_pause(l->w, false);
		return;
	}
	if (l->fd >= 0 && (!l->w->draining || l->lcfg->role != ROLE_TRAFFIC))
		ev_io_start(loop, &l->io);
}

/* Opens and binds a listening socket at addr; -1 with a message in err. */
static int
bind_one(const struct cfg_listener *lc, const struct sockaddr_storage *addr, socklen_t alen, char *err, size_t errlen)
{
	int one = 1, fd = socket(addr->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd == -1) {
		snprintf(err, errlen, "listener %s: socket: %s", lc->name, strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
	if (addr->ss_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)addr, alen) == -1 || listen(fd, 1024) == -1) {
		snprintf(err, errlen, "listener %s: cannot listen on %s: %s", lc->name, lc->bind, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

/* The worker's current (or pending) listener bound to the same configured address, if any. */
static struct listener *
find_same(struct worker *w, const struct cfg_listener *lc)
{
	struct listener *set = w->pending ? w->pending : w->listeners;

	if (((const struct sockaddr_in *)&lc->addr)->sin_port == 0)
		return NULL;	/* port 0: a new port each time */
	for (struct listener *l = set; l; l = l->next) {
		struct sockaddr_storage ss;
		socklen_t len = sizeof(ss);
		if (l->fd < 0 || l->moved)
			continue;
		if (l->lcfg->addrlen == lc->addrlen && memcmp(&l->lcfg->addr, &lc->addr, lc->addrlen) == 0)
			return l;
		/* A port-0 listener keeps its socket when the new file names the port it got. */
		if (getsockname(l->fd, (struct sockaddr *)&ss, &len) == 0 && len == lc->addrlen &&
		    memcmp(&ss, &lc->addr, len) == 0)
			return l;
	}
	return NULL;
}

void
listener_sets_discard(struct listener **sets, int n)
{
	for (int k = 0; k < n; k++) {
		listener_set_free(sets[k]);
		sets[k] = NULL;
	}
}

/* A new listener of worker w for configured listener lc, with no socket yet; NULL when out of memory. */
static struct listener *
listener_new(struct config *cfg, const struct cfg_listener *lc, struct worker *w)
{
	struct listener *l = calloc(1, sizeof(*l));

	if (!l)
		return NULL;
	l->magic = LISTENER_MAGIC;
	l->w = w;
	l->lcfg = lc;
	l->fd = -1;
	l->cfg = config_ref(cfg);
	snprintf(l->name, sizeof(l->name), "%s", lc->name);
	ev_init(&l->io, listener_accept_cb);
	ev_init(&l->backoff, listener_backoff_cb);
	l->io.data = l;
	l->backoff.data = l;
	return l;
}

/*
 * Gives l (listener i of worker k) its socket: the worker's current one for the same address,
 * else a new one; workers after the first join the first worker's port (it differs from the
 * configured one for port 0). 0, or -1 with err.
 */
static int
listener_open(struct listener *l, struct listener **sets, int k, size_t i, char *err, size_t errlen)
{
	const struct cfg_listener *lc = l->lcfg;
	struct sockaddr_storage a = lc->addr;

	if ((l->took = find_same(l->w, lc))) {
		l->fd = l->took->fd;
	} else {
		if (k > 0 && sets[0]) {
			struct listener *first = sets[0];
			for (size_t j = 0; j < i; j++)
				first = first->next;
			socklen_t len = sizeof(a);
			getsockname(first->fd, (struct sockaddr *)&a, &len);
		}
		/* After an upgrade: the previous process's socket for this listener, else a new one. */
		if ((l->fd = upgrade_take(lc->name, &lc->addr, lc->addrlen)) == -1 &&
		    (l->fd = bind_one(lc, &a, lc->addrlen, err, errlen)) == -1)
			return -1;
	}
	ev_io_set(&l->io, l->fd, EV_READ);
	return 0;
}

/*
 * Builds, for each worker, the listeners of cfg into sets[worker]. Unchanged addresses take
 * over the worker's current socket; new ones are bound (port 0: the first worker's socket
 * picks the port, the others join it). All or nothing: on failure -1 with err, and the
 * current sets are untouched.
 */
int
listener_build(struct config *cfg, struct listener **sets, char *err, size_t errlen)
{
	int n = relay.nworkers;

	for (int k = 0; k < n; k++)
		sets[k] = NULL;
	for (int k = 0; k < n; k++) {
		struct listener **tail = &sets[k];
		for (size_t i = 0; i < cfg->nlisteners; i++) {
			struct listener *l = listener_new(cfg, &cfg->listeners[i], &relay.workers[k]);
			if (!l) {
				snprintf(err, errlen, "out of memory");
				goto fail;
			}
			*tail = l;
			tail = &l->next;
			if (listener_open(l, sets, k, i, err, errlen) == -1)
				goto fail;
		}
	}
	/* Everything is bound: the sockets taken over now belong to the new sets. */
	for (int k = 0; k < n; k++)
		for (struct listener *l = sets[k]; l; l = l->next)
			if (l->took) {
				l->took->moved = true;
				l->took = NULL;	/* the old set goes once the worker takes this one */
			}
	return 0;
fail:
	listener_sets_discard(sets, n);
	return -1;
}

/* The address l's socket is bound to as "A.B.C.D:PORT" or "[V6]:PORT"; -1 when unknown. */
int
listener_addr(const struct listener *l, char *out, size_t outlen)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[64];
	bool v4;

	if (l->fd < 0 || getsockname(l->fd, (struct sockaddr *)&ss, &len) == -1)
		return -1;
	v4 = ss.ss_family == AF_INET;
	if (!inet_ntop(ss.ss_family, v4 ? (void *)&((struct sockaddr_in *)&ss)->sin_addr :
	    (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host)))
		return -1;
	snprintf(out, outlen, v4 ? "%s:%d" : "[%s]:%d", host, ntohs(v4 ?
	    ((struct sockaddr_in *)&ss)->sin_port : ((struct sockaddr_in6 *)&ss)->sin6_port));
	return 0;
}

void
listener_report(struct listener *set)
{
	char addr[80];

	for (struct listener *l = set; l; l = l->next)
		if (listener_addr(l, addr, sizeof(addr)) == 0)
			log_info("listening name=%s addr=%s", l->name, addr);
}

/* Starts a set's watchers (in its worker's thread). */
void
listener_set_start(struct listener *set)
{
	for (struct listener *l = set; l; l = l->next) {
		bool traffic = l->lcfg->role == ROLE_TRAFFIC;
		if (l->fd < 0 || (traffic && l->w->draining))
			continue;
		if (traffic && l->w->paused) {
			/* At max_connections: the new set looks again like the old one did. */
			ev_timer_set(&l->backoff, 0.05, 0.);
			ev_timer_start(l->w->loop, &l->backoff);
		} else {
			ev_io_start(l->w->loop, &l->io);
		}
	}
}

/* Stops and frees a set (in its worker's thread); sockets taken over by a newer set stay open. */
void
listener_set_free(struct listener *set)
{
	while (set) {
		struct listener *next = set->next;
		ev_io_stop(set->w->loop, &set->io);
		ev_timer_stop(set->w->loop, &set->backoff);
		/* Not a socket a newer set took over, nor one this (discarded) set took over. */
		if (set->fd >= 0 && !set->took && !__atomic_load_n(&set->moved, __ATOMIC_ACQUIRE))
			close(set->fd);
		if (set->cfg)
			config_unref(set->cfg);
		free(set);
		set = next;
	}
}

/*
 * Draining: stop accepting traffic (admin and agent ports keep answering); after an upgrade
 * (relay.handed_over), every listener closes: the new process answers on all of them.
 */
void
listener_close_traffic(struct worker *w)
{
	bool all = __atomic_load_n(&relay.handed_over, __ATOMIC_ACQUIRE);

	for (struct listener *l = w->listeners; l; l = l->next)
		if ((all || l->lcfg->role == ROLE_TRAFFIC) && l->fd >= 0) {
			ev_io_stop(w->loop, &l->io);
			ev_timer_stop(w->loop, &l->backoff);
			close(l->fd);
			l->fd = -1;
		}
}
