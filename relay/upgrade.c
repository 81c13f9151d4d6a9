/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * upgrade.c: the binary upgrade (SIGUSR2), both sides. The running process spawns the binary at
 * the path it was started from with its listening sockets inherited (every other descriptor
 * of exrelay's is close-on-exec), then waits on a pipe for "ready PID". The new process
 * takes the inherited sockets that match its configuration instead of binding, closes the
 * rest, and writes "ready PID" once its workers accept. The kernel's socket (and its backlog)
 * never closes in between, so no connection attempt is refused. See upgrade.h for the
 * hand-over's format.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include "relay.h"
#include "runtime.h"
#include "servers.h"
#include "upgrade.h"

extern char **environ;

#define UPGRADE_ENV "EXRELAY_UPGRADE"
#define INHERIT_MAX 4096		/* sockets handed over at most (workers x listeners + 2) */

/* A server's state set through the runtime API, carried to the new process. */
struct kept_server {
	int admin, weight;		/* -1: the configuration's */
	char down[CFG_MAX_PROTOS * 33];	/* the protocols a check found down, comma-separated; "-" none */
	char backend[64], name[64];
};

/* An inherited listening socket, until something takes it. */
struct inherited {
	int fd;				/* -1 once taken or closed */
	char name[64];
};

static struct {
	/* What the new process needs: taken at start. */
	char exe[PATH_MAX];		/* "" = not found: no upgrade */
	char cwd[PATH_MAX];
	char **argv;
	/* The new side: sockets handed to this process, the ready pipe. */
	struct inherited *inh;
	size_t ninh;
	struct kept_server *kept;
	size_t nkept;
	int ready_fd;
	/* The old side: one upgrade at a time. */
	bool running;
	pid_t child;
	pid_t bg;			/* the new process once it went on in a child of its own ("pid PID") */
	int pipe_fd;
	char msg[64];
	size_t msglen;
	ev_io pipe_io;
	ev_timer timer;
	ev_child child_w;
	struct ev_loop *loop;
	void (*done)(pid_t);
} up = { .ready_fd = -1, .pipe_fd = -1 };

/* Makes path absolute in out (relative to the current folder); -1 when it does not fit. */
static int
absolute(const char *path, char *out, size_t outlen)
{
	int n = path[0] == '/' ? snprintf(out, outlen, "%s", path) :
	    snprintf(out, outlen, "%s/%s", up.cwd, path);

	return n > 0 && (size_t)n < outlen ? 0 : -1;
}

/* Finds the binary: argv[0] with a slash, else the first executable of that name in $PATH. */
static void
find_exe(const char *arg0)
{
	const char *path = getenv("PATH");
	char cand[PATH_MAX];

	up.exe[0] = '\0';
	if (strchr(arg0, '/')) {
		while (arg0[0] == '.' && arg0[1] == '/')
			arg0 += 2;
		if (absolute(arg0, up.exe, sizeof(up.exe)) == -1)
			up.exe[0] = '\0';
		return;
	}
	while (path && *path) {
		size_t len = strcspn(path, ":");
		int n = snprintf(cand, sizeof(cand), "%.*s/%s", (int)len, len ? path : ".", arg0);
		if (n > 0 && (size_t)n < sizeof(cand) && access(cand, X_OK) == 0) {
			if (absolute(cand, up.exe, sizeof(up.exe)) == -1)
				up.exe[0] = '\0';
			return;
		}
		path += len + (path[len] == ':');
	}
}

/* A descriptor handed over, if it is a listening socket: kept (close-on-exec again), else closed. */
static void
inherit_fd(int fd, const char *name)
{
	int on = 0;
	socklen_t len = sizeof(on);

	if (fd < 3 || fd == up.ready_fd || fcntl(fd, F_SETFD, FD_CLOEXEC) == -1)
		return;
	for (size_t i = 0; i < up.ninh; i++)
		if (up.inh[i].fd == fd)
			return;		/* named twice: one entry owns it */
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &on, &len) == -1 || !on || up.ninh == INHERIT_MAX) {
		log_warn("upgrade: inherited descriptor %d (%s) is not a listening socket; closed", fd, name);
		close(fd);
		return;
	}
	if (!up.inh && !(up.inh = calloc(INHERIT_MAX, sizeof(*up.inh)))) {
		close(fd);
		return;
	}
	up.inh[up.ninh].fd = fd;
	snprintf(up.inh[up.ninh].name, sizeof(up.inh[up.ninh].name), "%s", name);
	up.ninh++;
}

/* "server ADMIN WEIGHT DOWN BACKEND/NAME": kept until upgrade_apply_servers(). */
static void
inherit_server(const char *line)
{
	struct kept_server k;
	int off = 0;
	const char *slash;

	if (sscanf(line, "server %d %d %527s %n", &k.admin, &k.weight, k.down, &off) != 3 || off == 0 ||
	    !(slash = strchr(line + off, '/')) || up.nkept == SRV_MAX)
		return;
	snprintf(k.backend, sizeof(k.backend), "%.*s", (int)(slash - (line + off)), line + off);
	snprintf(k.name, sizeof(k.name), "%s", slash + 1);
	if (!up.kept && !(up.kept = calloc(SRV_MAX, sizeof(*up.kept))))
		return;
	up.kept[up.nkept++] = k;
}

/* Reads EXRELAY_UPGRADE (see upgrade.h) and removes it from the environment. */
static void
inherit_env(void)
{
	const char *env = getenv(UPGRADE_ENV);
	char *copy, *line, *save = NULL;

	if (!env || !(copy = strdup(env)))
		return;
	unsetenv(UPGRADE_ENV);
	for (line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		int fd, off = 0;
		if (sscanf(line, "ready %d", &fd) == 1 && fd > 2 && fcntl(fd, F_SETFD, FD_CLOEXEC) == 0)
			up.ready_fd = fd;
		else if (sscanf(line, "fd %d %n", &fd, &off) == 1 && off > 0)
			inherit_fd(fd, line + off);
		else if (strncmp(line, "server ", 7) == 0)
			inherit_server(line);
	}
	free(copy);
}

void
upgrade_init(int argc, char **argv)
{
	(void)argc;
	up.argv = argv;
	if (!getcwd(up.cwd, sizeof(up.cwd)))
		snprintf(up.cwd, sizeof(up.cwd), "/");
	find_exe(argv[0]);
	inherit_env();
}

void
upgrade_apply_servers(void)
{
	size_t n = 0;

	for (size_t i = 0; i < up.nkept; i++) {
		struct srv *s = servers_find(up.kept[i].backend, up.kept[i].name);
		if (!s)
			continue;	/* no longer configured */
		if (up.kept[i].admin >= 0 && strcmp(config_srv_admin_str((enum srv_admin)up.kept[i].admin), "?") != 0)
			servers_set_admin(s, (enum srv_admin)up.kept[i].admin);
		if (up.kept[i].weight >= 0)
			servers_set_weight(s, up.kept[i].weight);
		for (char *save = NULL, *p = strtok_r(up.kept[i].down, ",", &save); p; p = strtok_r(NULL, ",", &save))
			if (strcmp(p, "-") != 0)
				servers_keep_down(s, p);
		n++;
	}
	if (up.nkept)
		log_info("upgrade: kept the run-time state of %zu of %zu server(s)", n, up.nkept);
	free(up.kept);
	up.kept = NULL;
	up.nkept = 0;
}

bool
upgrade_is_child(void)
{
	return up.ready_fd != -1;
}

/* The port of a TCP address (network order), 0 for other families. */
static in_port_t
port_of(const struct sockaddr_storage *a)
{
	if (a->ss_family == AF_INET)
		return ((const struct sockaddr_in *)a)->sin_port;
	if (a->ss_family == AF_INET6)
		return ((const struct sockaddr_in6 *)a)->sin6_port;
	return 0;
}

/* Whether a and b have the same family and address, and the same port unless any_port. */
static bool
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b, bool any_port)
{
	if (a->ss_family != b->ss_family || (!any_port && port_of(a) != port_of(b)))
		return false;
	if (a->ss_family == AF_INET)
		return memcmp(&((const struct sockaddr_in *)a)->sin_addr, &((const struct sockaddr_in *)b)->sin_addr,
		    sizeof(struct in_addr)) == 0;
	if (a->ss_family == AF_INET6)
		return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr, &((const struct sockaddr_in6 *)b)->sin6_addr,
		    sizeof(struct in6_addr)) == 0 &&
		    ((const struct sockaddr_in6 *)a)->sin6_scope_id == ((const struct sockaddr_in6 *)b)->sin6_scope_id;
	return false;
}

int
upgrade_take(const char *name, const struct sockaddr_storage *addr, socklen_t len)
{
	bool any_port = port_of(addr) == 0;
	(void)len;

	for (size_t i = 0; i < up.ninh; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = up.inh[i].fd;
		if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &sl) == -1)
			continue;
		if (any_port && strcmp(up.inh[i].name, name) != 0)
			continue;	/* port 0: only the listener's own socket (the port it got) */
		if (same_addr(&ss, addr, any_port)) {
			up.inh[i].fd = -1;
			return fd;
		}
	}
	return -1;
}

int
upgrade_take_unix(const char *path)
{
	for (size_t i = 0; i < up.ninh; i++) {
		struct sockaddr_un sa;
		socklen_t sl = sizeof(sa);
		int fd = up.inh[i].fd;
		if (fd < 0 || strcmp(up.inh[i].name, UPGRADE_ADMIN_UNIX) != 0 ||
		    getsockname(fd, (struct sockaddr *)&sa, &sl) == -1 || sa.sun_family != AF_UNIX)
			continue;
		sa.sun_path[sizeof(sa.sun_path) - 1] = '\0';
		if (strcmp(sa.sun_path, path) == 0) {
			up.inh[i].fd = -1;
			return fd;
		}
	}
	return -1;
}

void
upgrade_close_unused(void)
{
	size_t taken = 0;

	for (size_t i = 0; i < up.ninh; i++)
		taken += up.inh[i].fd < 0;
	if (up.ninh)
		log_info("upgrade: took over %zu of the %zu listening socket(s) handed over", taken, up.ninh);
	for (size_t i = 0; i < up.ninh; i++)
		if (up.inh[i].fd >= 0) {
			log_info("upgrade: inherited socket of %s is not in the configuration; closed", up.inh[i].name);
			close(up.inh[i].fd);
			up.inh[i].fd = -1;
		}
	free(up.inh);
	up.inh = NULL;
	up.ninh = 0;
}

void
upgrade_detached(void)
{
	char msg[32];
	int n;

	if (up.ready_fd == -1)
		return;
	n = snprintf(msg, sizeof(msg), "pid %d\n", (int)getpid());
	if (write(up.ready_fd, msg, (size_t)n) != n)
		log_warn("upgrade: cannot tell the previous process this one's pid: %s", strerror(errno));
}

void
upgrade_ready(void)
{
	char msg[32];
	int n;

	if (up.ready_fd == -1)
		return;
	n = snprintf(msg, sizeof(msg), "ready %d\n", (int)getpid());
	if (write(up.ready_fd, msg, (size_t)n) != n)
		log_warn("upgrade: cannot tell the previous process that this one is ready: %s", strerror(errno));
	close(up.ready_fd);
	up.ready_fd = -1;
}

/* --- the old side --------------------------------------------------------------------------- */

/* Ends the wait: stops the pipe and the timer; done(pid) (pid > 0 ready, -1 failed). */
static void
finish(pid_t pid)
{
	ev_io_stop(up.loop, &up.pipe_io);
	ev_timer_stop(up.loop, &up.timer);
	if (up.pipe_fd != -1)
		close(up.pipe_fd);
	up.pipe_fd = -1;
	up.running = false;
	up.done(pid);
}

/* Logs why the upgrade failed (fmt as printf) and ends the wait with done(-1). */
static void __attribute__((format(printf, 1, 2)))
fail(const char *fmt, ...)
{
	char why[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	log_error("upgrade failed, this process keeps serving: %s", why);
	finish(-1);
}

static void
pipe_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	ssize_t n;
	int pid = 0;
	(void)loop; (void)w; (void)revents;

	n = read(up.pipe_fd, up.msg + up.msglen, sizeof(up.msg) - 1 - up.msglen);
	if (n == -1 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n > 0) {
		char *nl;
		up.msglen += (size_t)n;
		up.msg[up.msglen] = '\0';
		while ((nl = strchr(up.msg, '\n'))) {
			size_t used = (size_t)(nl + 1 - up.msg);
			int bg = 0;
			*nl = '\0';
			if (sscanf(up.msg, "ready %d", &pid) == 1 && pid > 0) {
				log_info("upgrade: the new process (pid %d) is ready", pid);
				finish(pid);
				return;
			}
			if (sscanf(up.msg, "pid %d", &bg) != 1 || bg <= 0) {
				fail("unexpected answer from the new process: %.40s", up.msg);
				return;
			}
			up.bg = bg;
			memmove(up.msg, nl + 1, up.msglen - used + 1);
			up.msglen -= used;
		}
		if (up.msglen < sizeof(up.msg) - 1)
			return;
		fail("unexpected answer from the new process: %.40s", up.msg);
		return;
	}
	fail("the new process ended before it was ready (its log says why)");
}

static void
timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)loop; (void)w; (void)revents;
	if (up.child > 0 || up.bg > 0) {
		pid_t pid = up.bg > 0 ? up.bg : up.child;
		if (up.child > 0)
			kill(up.child, SIGKILL);
		if (up.bg > 0)
			kill(up.bg, SIGKILL);	/* still holds the pipe (else it had ended the wait) */
		fail("the new process (pid %d) was not ready in time; killed", (int)pid);
	} else {
		fail("the new process (in the background) was not ready in time");
	}
}

/* The child (the new process, or the parent half of its daemon()) ended. */
static void
child_cb(struct ev_loop *loop, ev_child *w, int revents)
{
	int st = w->rstatus;
	(void)revents;

	ev_child_stop(loop, w);
	if (w->rpid == up.child)
		up.child = 0;	/* reaped: its pid may be reused, never signalled again */
	if (WIFEXITED(st) && WEXITSTATUS(st) == 0 && up.running)
		return;		/* -d: the new process went on in the background; its pipe tells */
	if (WIFEXITED(st))
		log_info("upgrade: process %d exited with status %d", w->rpid, WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		log_info("upgrade: process %d was killed by signal %d", w->rpid, WTERMSIG(st));
}

/* Appends "fd FD NAME\n" to the hand-over text; -1 when full. */
static int
env_add(char *env, size_t cap, size_t *len, int fd, const char *name)
{
	int n = snprintf(env + *len, cap - *len, "fd %d %s\n", fd, name);

	if (n < 0 || (size_t)n >= cap - *len)
		return -1;
	*len += (size_t)n;
	return 0;
}

/* Where collect() writes the servers' lines. */
struct env_buf {
	char *env;
	size_t cap, *len;
	bool full;
};

/*
 * One "server ADMIN WEIGHT DOWN BACKEND/NAME" line for a server with a run-time state or weight,
 * or a checked protocol down (DOWN: those protocols, comma-separated, or "-"): the new process
 * starts from them instead of "ready, configured weight, up" until its checks say otherwise.
 */
static void
env_server(struct srv *s, void *arg)
{
	struct env_buf *b = arg;
	int admin = __atomic_load_n(&s->admin_rt, __ATOMIC_ACQUIRE);
	int weight = __atomic_load_n(&s->weight_rt, __ATOMIC_ACQUIRE);
	char down[sizeof(((struct kept_server *)NULL)->down)] = "";
	size_t dl = 0;

	for (int p = 0; __atomic_load_n(&s->checked, __ATOMIC_ACQUIRE) && p < s->nprotos; p++)
		if (!__atomic_load_n(&s->health[p].up, __ATOMIC_ACQUIRE)) {
			int k = snprintf(down + dl, sizeof(down) - dl, "%s%s", dl ? "," : "", s->protos[p]);
			if (k > 0 && (size_t)k < sizeof(down) - dl)
				dl += (size_t)k;
		}
	if (admin < 0 && weight < 0 && !dl)
		return;
	int n = snprintf(b->env + *b->len, b->cap - *b->len, "server %d %d %s %s/%s\n", admin, weight,
	    dl ? down : "-", s->backend, s->name);
	if (n < 0 || (size_t)n >= b->cap - *b->len)
		b->full = true;
	else
		*b->len += (size_t)n;
}

/* Collects every listening socket into fds and the hand-over text; the number, or -1 logged. */
static int
collect(int *fds, char *env, size_t cap, int ready)
{
	size_t len = 0;
	int n = 0, rt_tcp, rt_unix;

	len = (size_t)snprintf(env, cap, "%s=ready %d\n", UPGRADE_ENV, ready);
	for (int k = 0; k < relay.nworkers; k++)
		for (struct listener *l = relay.workers[k].listeners; l; l = l->next) {
			if (l->fd < 0)
				continue;
			if (n == INHERIT_MAX || env_add(env, cap, &len, l->fd, l->name) == -1)
				goto full;
			fds[n++] = l->fd;
		}
	runtime_fds(&rt_tcp, &rt_unix);
	if (rt_tcp >= 0) {
		if (n == INHERIT_MAX || env_add(env, cap, &len, rt_tcp, UPGRADE_ADMIN_TCP) == -1)
			goto full;
		fds[n++] = rt_tcp;
	}
	if (rt_unix >= 0) {
		if (n == INHERIT_MAX || env_add(env, cap, &len, rt_unix, UPGRADE_ADMIN_UNIX) == -1)
			goto full;
		fds[n++] = rt_unix;
	}
	struct env_buf b = { .env = env, .cap = cap, .len = &len, .full = false };
	servers_foreach(env_server, &b);
	if (b.full)
		goto full;
	return n;
full:
	log_error("upgrade: too many listening sockets to hand over");
	return -1;
}

/* The new environment: ours without an old EXRELAY_UPGRADE, plus hand (NULL when out of memory). */
static char **
child_environ(char *hand)
{
	size_t n = 0, k = 0;
	char **envp;

	while (environ[n])
		n++;
	if (!(envp = calloc(n + 2, sizeof(*envp))))
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], UPGRADE_ENV "=", sizeof(UPGRADE_ENV)) != 0)
			envp[k++] = environ[i];
	envp[k++] = hand;
	envp[k] = NULL;
	return envp;
}

/*
 * Starts the new binary with posix_spawn (a vfork-like clone: the page tables of a large
 * process are not copied, so the workers do not stall as they would across a fork). Every
 * descriptor of exrelay's is close-on-exec; the actions clear the flag on the sockets handed
 * over and on the pipe (dup2 of a descriptor onto itself, POSIX 2024, glibc 2.29), set the
 * folder exrelay was started in and an empty signal mask. 0 with *pid, or an errno value.
 */
static int
spawn(pid_t *pid, char **envp, const int *fds, int n, int ready)
{
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	sigset_t none;
	int rc;

	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		return rc;
	if ((rc = posix_spawnattr_init(&at)) != 0) {
		posix_spawn_file_actions_destroy(&fa);
		return rc;
	}
	for (int i = 0; i < n && rc == 0; i++)
		rc = posix_spawn_file_actions_adddup2(&fa, fds[i], fds[i]);
	if (rc == 0)
		rc = posix_spawn_file_actions_adddup2(&fa, ready, ready);
	if (rc == 0)
		rc = posix_spawn_file_actions_addchdir_np(&fa, up.cwd);
	sigemptyset(&none);
	if (rc == 0 && (rc = posix_spawnattr_setsigmask(&at, &none)) == 0 &&
	    (rc = posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSIGMASK)) == 0)
		rc = posix_spawn(pid, up.exe, &fa, &at, up.argv, envp);
	posix_spawnattr_destroy(&at);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

int
upgrade_start(struct ev_loop *loop, void (*done)(pid_t pid))
{
	static int fds[INHERIT_MAX];
	static char hand[INHERIT_MAX * 80];
	int p[2], n, rc;
	char **envp;
	pid_t pid = 0;

	if (up.running)
		return -1;
	if (!up.exe[0]) {
		log_error("upgrade: the binary's path is unknown (started without a path and not found in $PATH)");
		return -1;
	}
	if (access(up.exe, X_OK) == -1) {
		log_error("upgrade: cannot run %s: %s", up.exe, strerror(errno));
		return -1;
	}
	if (pipe2(p, O_CLOEXEC) == -1) {
		log_error("upgrade: pipe: %s", strerror(errno));
		return -1;
	}
	if ((n = collect(fds, hand, sizeof(hand), p[1])) == -1 || !(envp = child_environ(hand))) {
		close(p[0]);
		close(p[1]);
		return -1;
	}
	rc = spawn(&pid, envp, fds, n, p[1]);
	free(envp);
	close(p[1]);
	if (rc != 0) {
		log_error("upgrade: cannot start %s: %s", up.exe, strerror(rc));
		close(p[0]);
		return -1;
	}
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	up.loop = loop;
	up.done = done;
	up.child = pid;
	up.bg = 0;
	up.pipe_fd = p[0];
	up.msglen = 0;
	up.running = true;
	ev_io_init(&up.pipe_io, pipe_cb, p[0], EV_READ);
	ev_io_start(loop, &up.pipe_io);
	ev_timer_init(&up.timer, timeout_cb, UPGRADE_TIMEOUT, 0.);
	ev_timer_start(loop, &up.timer);
	ev_child_init(&up.child_w, child_cb, pid, 0);
	ev_child_start(loop, &up.child_w);
	log_info("upgrade: started %s (pid %d) with %d listening socket(s)", up.exe, (int)pid, n);
	return 0;
}

bool
upgrade_running(void)
{
	return up.running;
}
