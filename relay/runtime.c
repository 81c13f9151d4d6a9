/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime.c: HAProxy's runtime API subset on global.admin_socket, on the main thread's loop:
 * the Unix socket (created owner-only under a umask, then given its group and mode) and the
 * TCP one (admin_socket.bind, allow_from), their clients (a bounded input line, a bounded
 * output buffer written without blocking, an idle timeout that also drops a client that does
 * not read) and the answers' output buffers. runtime_cmd.c runs the command lines and
 * runtime_show.c has the `show` commands. Without `prompt`, one line of commands is answered
 * and the socket closed.
 */
#include "autoconf.h"

#include <errno.h>
#include <grp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "addr.h"
#include "relay.h"
#include "runtime.h"
#include "upgrade.h"
#include "runtime_int.h"

#define RT_OUT_HIGH (64 * 1024)		/* interactive: stop reading while this much is unsent */
#define RT_CLIENTS_MAX 16
#define RT_TIMEOUT 10.0			/* seconds without progress (HAProxy's `stats timeout`) */

#define RT_ALLOW_MAX 32

static struct {
	int fd;				/* the listening socket, or -1 */
	ev_io accept_io;
	int tcp_fd;			/* the TCP listening socket (admin_socket.bind), or -1 */
	ev_io tcp_io;
	char tcp_bind[96];
	struct addr_prefix allow[RT_ALLOW_MAX];	/* who may use the TCP socket */
	size_t nallow;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int mode;
	char group[64];			/* "" when none */
	struct rt_client *clients;
	int nclients;
} rt = { .fd = -1, .tcp_fd = -1 };

/* --- output --------------------------------------------------------------------------------- */

/* Makes room for n more bytes in o; false (overflow set) past RUNTIME_OUT_MAX. */
static bool
rt_room(struct rt_out *o, size_t n)
{
	if (o->overflow || o->len + n + 1 > RUNTIME_OUT_MAX) {
		o->overflow = true;
		return false;
	}
	if (o->len + n + 1 <= o->cap)
		return true;
	size_t cap = o->cap ? o->cap : 4096;
	while (cap < o->len + n + 1)
		cap *= 2;
	if (cap > RUNTIME_OUT_MAX)
		cap = RUNTIME_OUT_MAX;
	char *p = realloc(o->p, cap);
	if (!p) {
		o->overflow = true;
		return false;
	}
	o->p = p;
	o->cap = cap;
	return true;
}

void
rt_puts(struct rt_out *o, const char *s)
{
	size_t n = strlen(s);

	if (!rt_room(o, n))
		return;
	memcpy(o->p + o->len, s, n + 1);
	o->len += n;
}

void
rt_printf(struct rt_out *o, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		o->overflow = true;	/* every formatted piece is short: a longer one is a bug */
		return;
	}
	rt_puts(o, line);
}


/* --- clients ------------------------------------------------------------------------------- */

static void
rt_close(struct rt_client *cl, const char *why)
{
	CHECK_OBJ(cl, RT_MAGIC);
	if (why)
		log_info("admin socket: client closed: %s", why);
	ev_io_stop(relay.loop, &cl->rio);
	ev_io_stop(relay.loop, &cl->wio);
	ev_timer_stop(relay.loop, &cl->timer);
	close(cl->fd);
	if (cl->prev)
		cl->prev->next = cl->next;
	else
		rt.clients = cl->next;
	if (cl->next)
		cl->next->prev = cl->prev;
	rt.nclients--;
	free(cl->out.p);
	cl->magic = 0;
	free(cl);
}

/* Writes what the client has not received yet: 0, or -1 when the client was closed. */
static int
rt_flush(struct rt_client *cl)
{
	if (cl->out.overflow) {
		rt_close(cl, "answer larger than the output limit");
		return -1;
	}
	while (cl->sent < cl->out.len) {
		ssize_t n = send(cl->fd, cl->out.p + cl->sent, cl->out.len - cl->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			cl->sent += (size_t)n;
			ev_timer_again(relay.loop, &cl->timer);
			continue;
		}
		if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			ev_io_start(relay.loop, &cl->wio);
			return 0;
		}
		rt_close(cl, NULL);	/* the client went away */
		return -1;
	}
	ev_io_stop(relay.loop, &cl->wio);
	cl->out.len = cl->sent = 0;
	if (cl->closing) {
		rt_close(cl, NULL);
		return -1;
	}
	return 0;
}

/* Runs the complete lines received, as far as the mode and the unsent output allow. */
static void
rt_process(struct rt_client *cl)
{
	char *nl;

	while (!cl->closing && cl->out.len - cl->sent < RT_OUT_HIGH &&
	    (nl = memchr(cl->in, '\n', cl->inlen))) {
		size_t len = (size_t)(nl - cl->in);
		char line[RT_LINE_MAX];
		memcpy(line, cl->in, len);
		line[len] = '\0';
		cl->inlen -= len + 1;
		memmove(cl->in, nl + 1, cl->inlen);
		if (runtime_cmd_line(cl, line) == RT_QUIT || !cl->prompt)
			cl->closing = true;	/* without prompt: one line per connection */
	}
	if (cl->closing || cl->out.len - cl->sent >= RT_OUT_HIGH)
		ev_io_stop(relay.loop, &cl->rio);
	else
		ev_io_start(relay.loop, &cl->rio);
}

static void
rt_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct rt_client *cl = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(cl, RT_MAGIC);
	if (cl->inlen == sizeof(cl->in)) {
		rt_close(cl, "command line too long");
		return;
	}
	ssize_t n = recv(cl->fd, cl->in + cl->inlen, sizeof(cl->in) - cl->inlen, MSG_DONTWAIT);
	if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		cl->closing = true;	/* the client is done sending: answer what came, then close */
		ev_io_stop(relay.loop, &cl->rio);
		rt_flush(cl);
		return;
	}
	cl->inlen += (size_t)n;
	ev_timer_again(relay.loop, &cl->timer);
	rt_process(cl);
	if (cl->inlen == sizeof(cl->in) && !memchr(cl->in, '\n', cl->inlen)) {
		rt_close(cl, "command line too long");
		return;
	}
	rt_flush(cl);
}

static void
rt_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct rt_client *cl = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(cl, RT_MAGIC);
	if (rt_flush(cl) == -1)
		return;
	rt_process(cl);		/* lines held back while the output was full */
	rt_flush(cl);
}

static void
rt_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct rt_client *cl = w->data;
	(void)loop; (void)revents;

	CHECK_OBJ(cl, RT_MAGIC);
	rt_close(cl, cl->sent < cl->out.len ? "not reading its answer" : "idle");
}

/* True when a TCP client's address is in admin_socket.allow_from. */
static bool
rt_allowed(const struct sockaddr_storage *peer)
{
	for (size_t i = 0; i < rt.nallow; i++)
		if (addr_prefix_match(&rt.allow[i], (const struct sockaddr *)peer))
			return true;
	return false;
}

static void
rt_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	(void)loop; (void)revents;

	for (;;) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED)
				log_warn("admin socket %s: accept: %s", rt.path, strerror(errno));
			return;
		}
		if (w->fd == rt.tcp_fd && !rt_allowed(&peer)) {
			char ip[64];
			addr_text(&peer, ip, sizeof(ip));
			log_warn("admin socket %s: %s is not in admin_socket.allow_from; closed", rt.tcp_bind, ip);
			close(fd);
			continue;
		}
		struct rt_client *cl = rt.nclients < RT_CLIENTS_MAX ? calloc(1, sizeof(*cl)) : NULL;
		if (!cl) {
			log_warn("admin socket %s: more than %d clients, closing one", rt.path, RT_CLIENTS_MAX);
			close(fd);
			continue;
		}
		cl->magic = RT_MAGIC;
		cl->fd = fd;
		ev_io_init(&cl->rio, rt_read_cb, fd, EV_READ);
		ev_io_init(&cl->wio, rt_write_cb, fd, EV_WRITE);
		ev_init(&cl->timer, rt_timer_cb);
		cl->timer.repeat = RT_TIMEOUT;
		cl->rio.data = cl->wio.data = cl->timer.data = cl;
		ev_io_start(relay.loop, &cl->rio);
		ev_timer_again(relay.loop, &cl->timer);
		cl->next = rt.clients;
		if (rt.clients)
			rt.clients->prev = cl;
		rt.clients = cl;
		rt.nclients++;
	}
}

/* --- the socket ---------------------------------------------------------------------------- */

/* Gives the socket file its group and mode (group first: it is owner-only until then). 0 or -1 logged. */
static int
rt_permissions(const char *path, int mode, const char *group)
{
	if (group && *group) {
		struct group *gr = getgrnam(group);
		if (!gr || chown(path, (uid_t)-1, gr->gr_gid) == -1) {
			log_error("admin socket %s: cannot give it group %s: %s", path, group,
			    gr ? strerror(errno) : "no such group");
			return -1;
		}
	}
	if (chmod(path, (mode_t)mode) == -1) {
		log_error("admin socket %s: chmod %04o: %s", path, (unsigned)mode, strerror(errno));
		return -1;
	}
	return 0;
}

/* Removes a socket file left by an earlier run; -1 logged when path is something else or in use. */
static int
rt_clear(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;

	if (lstat(path, &st) == -1)
		return 0;
	if (!S_ISSOCK(st.st_mode)) {
		log_error("admin socket %s: the path exists and is not a socket", path);
		return -1;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd != -1 && connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
		close(fd);
		log_error("admin socket %s: in use by another process", path);
		return -1;
	}
	if (fd != -1)
		close(fd);
	unlink(path);
	return 0;
}

/* Opens the listening socket at path: its fd, or -1 logged (nothing left behind). */
static int
rt_open(const char *path, int mode, const char *group)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path)) {
		log_error("admin socket %s: path too long", path);
		return -1;
	}
	memcpy(sa.sun_path, path, strlen(path));
	if (rt_clear(path, &sa) == -1)
		return -1;
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		log_error("admin socket %s: socket: %s", path, strerror(errno));
		return -1;
	}
	/* Owner-only from the moment it exists; the group and mode follow. */
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (rc == -1) {
		log_error("admin socket %s: bind: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	if (rt_permissions(path, mode, group) == -1)
		goto fail;
	if (listen(fd, RT_CLIENTS_MAX) == -1) {
		log_error("admin socket %s: listen: %s", path, strerror(errno));
		goto fail;
	}
	return fd;
fail:
	unlink(path);
	close(fd);
	return -1;
}

/* The mode to apply: cfg's, without any access for others (warned). */
static int
rt_mode(const struct config *cfg)
{
	int mode = cfg->admin_socket.mode;

	if (mode & 0007)
		log_warn("admin socket %s: mode %04o gives others access; using %04o", cfg->admin_socket.path,
		    (unsigned)mode, (unsigned)(mode & 0770));
	return mode & 0770;
}

/* Opens admin_socket.bind (TCP) when set: 0, or -1 logged. */
static int
rt_open_tcp(const struct config *cfg)
{
	int one = 1, fd;

	if (!cfg->admin_socket.bind)
		return 0;
	/* An upgrade handed over the previous process's socket for this address: keep it. */
	if ((fd = upgrade_take(UPGRADE_ADMIN_TCP, &cfg->admin_socket.bind_addr, cfg->admin_socket.bind_len)) >= 0)
		goto bound;
	fd = socket(cfg->admin_socket.bind_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (const struct sockaddr *)&cfg->admin_socket.bind_addr, cfg->admin_socket.bind_len) == -1 ||
	    listen(fd, RT_CLIENTS_MAX) == -1) {
		log_error("admin socket %s: %s", cfg->admin_socket.bind, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
bound:
	rt.tcp_fd = fd;
	snprintf(rt.tcp_bind, sizeof(rt.tcp_bind), "%s", cfg->admin_socket.bind);
	rt.nallow = cfg->admin_socket.nallow < RT_ALLOW_MAX ? cfg->admin_socket.nallow : RT_ALLOW_MAX;
	memcpy(rt.allow, cfg->admin_socket.allow, rt.nallow * sizeof(rt.allow[0]));
	ev_io_init(&rt.tcp_io, rt_accept_cb, fd, EV_READ);
	ev_io_start(relay.loop, &rt.tcp_io);
	log_info("admin socket on TCP %s (%zu allowed prefixes)", rt.tcp_bind, rt.nallow);
	return 0;
}

static void
rt_close_tcp(void)
{
	if (rt.tcp_fd == -1)
		return;
	ev_io_stop(relay.loop, &rt.tcp_io);
	close(rt.tcp_fd);
	rt.tcp_fd = -1;
	rt.tcp_bind[0] = '\0';
}

static void
rt_close_socket(void)
{
	while (rt.clients)
		rt_close(rt.clients, NULL);
	rt_close_tcp();
	if (rt.fd == -1)
		return;
	ev_io_stop(relay.loop, &rt.accept_io);
	close(rt.fd);
	if (unlink(rt.path) == -1 && errno != ENOENT)
		log_warn("admin socket %s: cannot remove it: %s", rt.path, strerror(errno));
	rt.fd = -1;
	rt.path[0] = '\0';
}

int
runtime_start(const struct config *cfg)
{
	const char *path = cfg->admin_socket.path;
	int fd, mode;

	runtime_mark_start();
	if (rt_open_tcp(cfg) == -1)
		return -1;
	if (!path)
		return 0;
	mode = rt_mode(cfg);
	/* An upgrade handed over the socket at this path: keep it (the file stays as it was). */
	if ((fd = upgrade_take_unix(path)) >= 0) {
		struct stat st;
		if (lstat(path, &st) == -1 || !S_ISSOCK(st.st_mode)) {
			close(fd);	/* its file is gone: bind a new one */
			fd = -1;
		} else {
			(void)rt_permissions(path, mode, cfg->admin_socket.group);
		}
	}
	if (fd == -1 && (fd = rt_open(path, mode, cfg->admin_socket.group)) == -1)
		return -1;
	rt.fd = fd;
	rt.mode = mode;
	snprintf(rt.path, sizeof(rt.path), "%s", path);
	snprintf(rt.group, sizeof(rt.group), "%s", cfg->admin_socket.group ? cfg->admin_socket.group : "");
	ev_io_init(&rt.accept_io, rt_accept_cb, fd, EV_READ);
	ev_io_start(relay.loop, &rt.accept_io);
	log_info("admin socket %s (mode %04o%s%s)", path, (unsigned)mode, rt.group[0] ? ", group " : "", rt.group);
	return 0;
}

void
runtime_reload(const struct config *cfg)
{
	const char *path = cfg->admin_socket.path;
	const char *group = cfg->admin_socket.group ? cfg->admin_socket.group : "";

	bool same_tcp = (!cfg->admin_socket.bind && rt.tcp_fd == -1) ||
	    (cfg->admin_socket.bind && rt.tcp_fd != -1 && strcmp(cfg->admin_socket.bind, rt.tcp_bind) == 0);
	if (same_tcp && rt.tcp_fd != -1) {	/* a new allow_from applies at once */
		rt.nallow = cfg->admin_socket.nallow < RT_ALLOW_MAX ? cfg->admin_socket.nallow : RT_ALLOW_MAX;
		memcpy(rt.allow, cfg->admin_socket.allow, rt.nallow * sizeof(rt.allow[0]));
	}
	if (same_tcp && rt.fd != -1 && path && strcmp(path, rt.path) == 0) {
		int mode = rt_mode(cfg);
		if ((mode != rt.mode || strcmp(group, rt.group) != 0) && rt_permissions(path, mode, group) == 0) {
			rt.mode = mode;
			snprintf(rt.group, sizeof(rt.group), "%s", group);
		}
		return;
	}
	rt_close_socket();
	if ((path || cfg->admin_socket.bind) && runtime_start(cfg) == -1)
		log_error("reload: admin socket %s not opened; the runtime API is off", path ? path : cfg->admin_socket.bind);
}

void
runtime_fds(int *tcp_fd, int *unix_fd)
{
	*tcp_fd = rt.tcp_fd;
	*unix_fd = rt.fd;
}

void
runtime_release(void)
{
	rt_close_tcp();
	if (rt.fd == -1)
		return;
	ev_io_stop(relay.loop, &rt.accept_io);
	close(rt.fd);	/* the file stays: the new process listens on it */
	rt.fd = -1;
	rt.path[0] = '\0';
}

void
runtime_stop(void)
{
	rt_close_socket();
}
