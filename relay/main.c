/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * main.c: the command line, start-up (configuration, logs, listeners, privileges), the
 * signals (SIGHUP reload, SIGTERM/SIGINT drain, SIGUSR1 log reopen, SIGUSR2 binary upgrade)
 * and the event loop.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <gnutls/gnutls.h>
#include <libconfig.h>

#include "epcheck.h"
#include "health.h"
#include "relay.h"
#include "runtime.h"
#include "servers.h"
#include "tls.h"
#include "upgrade.h"

#ifndef SYSCONFDIR
#define SYSCONFDIR "/etc"
#endif

struct relay_state relay;

/*
 * Tells systemd (Type=notify) about the service's state: one datagram to $NOTIFY_SOCKET
 * ("READY=1", "RELOADING=1", "STOPPING=1", ...), the sd_notify protocol without libsystemd.
 */
static void __attribute__((format(printf, 1, 2)))
notify(const char *fmt, ...)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char msg[256];
	va_list ap;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(sa.sun_path))
		return;
	va_start(ap, fmt);
	int n = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(msg))
		return;
	memcpy(sa.sun_path, path, strlen(path));
	if (path[0] == '@')
		sa.sun_path[0] = '\0';	/* abstract socket */
	if ((fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) == -1)
		return;
	(void)!sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&sa,
	    (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path)));
	close(fd);
}

/*
 * Raises the soft limit on open files toward what max_connections needs (two sockets per
 * connection, plus listeners and logs), within the hard limit; warns when it falls short.
 */
static void
raise_nofile(const struct config *cfg)
{
	struct rlimit rl;
	rlim_t want = (rlim_t)cfg->max_connections * 2 + 64 + cfg->nlisteners * 256;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return;
	if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = want < rl.rlim_max ? want : rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (rl.rlim_cur < want)
		log_warn("open files limited to %lu: fewer than max_connections = %d need (%lu); "
		    "accepting pauses when they run out", (unsigned long)rl.rlim_cur, cfg->max_connections,
		    (unsigned long)want);
}

/* The most worker threads (config.c caps 'workers' at it too): sizes the listener-set arrays. */
#define WORKERS_MAX 256

/* The number of worker threads: global.workers, or one per CPU (at most WORKERS_MAX). */
static int
worker_count(const struct config *cfg)
{
	long n = cfg->workers > 0 ? cfg->workers : sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > WORKERS_MAX ? WORKERS_MAX : (int)n;
}

static const char *conf_path = SYSCONFDIR "/exrelay/exrelay.conf";
static char addr_path[4096];		/* -a FILE, made absolute (-d changes to /); "" = none */
static ev_signal sig_hup, sig_term, sig_int, sig_usr1, sig_usr2;
static ev_timer drain_timer;
static ev_timer drain_check;
static const char *pid_path;		/* -p or global.pidfile once written; NULL = none */
static int write_pidfile(const char *path);

/* Prints the options and the default configuration file to f. */
static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: exrelay [-f FILE] [-t] [-T] [-d] [-p PIDFILE] [-a FILE] [-V] [-h]\n"
	    "  -f FILE     configuration file (default %s)\n"
	    "  -t          check the configuration and exit\n"
	    "  -T          Extended Protection check: connect once to each TLS backend server and\n"
	    "              print, per server, the SHA-256 fingerprints of the certificate exrelay\n"
	    "              presents and of the server's, and \"match\" or \"MISMATCH\"; exit 0 when\n"
	    "              all match, 1 on a mismatch, 2 when a server cannot be reached\n"
	    "  -d          run in the background (daemonize)\n"
	    "  -p PIDFILE  write the process id there (overrides global.pidfile)\n"
	    "  -a FILE     write the addresses bound, one \"NAME ADDRESS:PORT\" line per listener\n"
	    "              (port 0 resolved; rewritten on reload)\n"
	    "  -V          print the versions of exrelay, GnuTLS, libev and libconfig\n"
	    "  -h          this help\n"
	    "signals: SIGHUP reload, SIGTERM/SIGINT drain and stop, SIGUSR1 reopen the logs,\n"
	    "  SIGUSR2 upgrade: start the binary again from its path, hand it the listening sockets,\n"
	    "  then drain and stop\n", SYSCONFDIR "/exrelay/exrelay.conf");
}

/* Prints the versions of exrelay and of the libraries it runs with (-V). */
static void
version(void)
{
	printf("exrelay %s\nGnuTLS %s\nlibev %d.%d\nlibconfig %d.%d.%d\n", PACKAGE_VERSION,
	    gnutls_check_version(NULL), ev_version_major(), ev_version_minor(),
	    LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR, LIBCONFIG_VER_REVISION);
}

/* Applies the log settings of cfg; -1 with a message on stderr. */
static int
apply_logs(const struct config *cfg)
{
	if (log_open(cfg->error_log, cfg->log_level) == -1) {
		fprintf(stderr, "exrelay: cannot open error log %s: %s\n", cfg->error_log, strerror(errno));
		return -1;
	}
	if (log_access_open(cfg->access_log, cfg->access_format) == -1) {
		log_error("cannot open access log %s: %s", cfg->access_log, strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Writes the addresses the listeners of set actually bound (port 0 resolved), one line
 * "NAME ADDRESS:PORT" per listener in configuration order, to addr_path: a temporary file in
 * the same folder, then rename(), so a reader never sees a partial file. 0, or -1 logged.
 */
static int
write_addrfile(const struct listener *set)
{
	char tmp[sizeof(addr_path) + 32], addr[80];
	FILE *f;

	if (!addr_path[0])
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", addr_path, (int)getpid());
	if (!(f = fopen(tmp, "w")))
		goto fail;
	for (const struct listener *l = set; l; l = l->next)
		if (listener_addr(l, addr, sizeof(addr)) == 0)
			fprintf(f, "%s %s\n", l->name, addr);
	if (fclose(f) != 0 || rename(tmp, addr_path) == -1) {
		unlink(tmp);
		goto fail;
	}
	return 0;
fail:
	log_error("cannot write the address file %s: %s", addr_path, strerror(errno));
	return -1;
}

/* Keeps -a FILE as an absolute path in addr_path; -1 when it does not fit. */
static int
set_addr_path(const char *path)
{
	char cwd[sizeof(addr_path)];
	int n;

	if (path[0] == '/')
		n = snprintf(addr_path, sizeof(addr_path), "%s", path);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(addr_path, sizeof(addr_path), "%s/%s", cwd, path);
	else
		return -1;
	return n > 0 && (size_t)n < sizeof(addr_path) ? 0 : -1;
}

/* SIGHUP: reloads the configuration and hands new listener sets to the workers, or keeps the old. */
static void
reload_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	char err[1024];
	struct config *cfg;
	struct listener *sets[WORKERS_MAX];
	(void)loop; (void)w; (void)revents;

	if (relay_draining())
		return;
	if (upgrade_running()) {
		log_warn("reload: an upgrade is under way; SIGHUP ignored (the new process reads the file)");
		return;
	}
	notify("RELOADING=1");
	if (!(cfg = config_load(conf_path, err, sizeof(err), NULL))) {
		log_error("reload failed, keeping the running configuration: %s", err);
		notify("READY=1\nSTATUS=reload failed: %.200s", err);
		return;
	}
	if (listener_build(cfg, sets, err, sizeof(err)) == -1) {
		log_error("reload failed, keeping the running configuration: %s", err);
		notify("READY=1\nSTATUS=reload failed: %.200s", err);
		config_unref(cfg);
		return;
	}
	if (worker_count(cfg) != relay.nworkers)
		log_warn("reload: 'workers' changes need a restart; keeping %d", relay.nworkers);
	if (guard_init(cfg->guard.max_entries, NULL) == -1)
		log_warn("reload: 'auth_guard.max_entries' changes need a restart; keeping the current tables");
	if (servers_bind(cfg) == -1)
		log_warn("reload: more than %d backend servers over this run; the last ones are not tracked", SRV_MAX);
	epcheck_bind(cfg);	/* exrelay's own certificates may have changed: compare again */
	struct config *old = relay.cfg;
	relay.cfg = cfg;
	runtime_reload(cfg);
	__atomic_store_n(&relay.max_conns, cfg->max_connections, __ATOMIC_RELAXED);
	if (log_open(cfg->error_log, cfg->log_level) == -1 ||
	    log_access_open(cfg->access_log, cfg->access_format) == -1)
		log_error("reload: cannot open a log file: %s", strerror(errno));
	worker_hand_over(sets);
	/*
	 * After the hand-over, which waits until every worker took its set: a test (or a script)
	 * that sees the new file knows new connections get the new configuration. The sets are only
	 * freed by the workers at the next hand-over, which this (main) thread starts.
	 */
	write_addrfile(sets[0]);
	health_reload(cfg);
	config_unref(old);
	log_info("configuration reloaded from %s", conf_path);
	notify("READY=1\nSTATUS=configuration reloaded");
}

/* Ends the drain: tells the workers to stop and breaks the main loop. */
static void
stop_now(struct ev_loop *loop)
{
	__atomic_store_n(&relay.stopping, 1, __ATOMIC_RELEASE);
	worker_wake_all();
	ev_break(loop, EVBREAK_ALL);
}

/* drain_timeout has passed: stops with the connections still open. */
static void
drain_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	log_info("drain timeout: closing %ld connection(s)", __atomic_load_n(&relay.nconns, __ATOMIC_RELAXED));
	stop_now(loop);
}

/* Polled while draining: stops as soon as no connection is left. */
static void
drain_check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	if (__atomic_load_n(&relay.nconns, __ATOMIC_RELAXED) == 0)
		stop_now(loop);
}

/* Starts the drain: the workers stop accepting, live connections get drain_timeout seconds. */
static void
drain_start(struct ev_loop *loop)
{
	/* Workers stop accepting traffic; the admin and agent ports keep answering (draining). */
	__atomic_store_n(&relay.draining, 1, __ATOMIC_RELEASE);
	worker_wake_all();
	ev_timer_init(&drain_timer, drain_timeout_cb, relay.cfg->drain_timeout, 0.);
	ev_timer_start(loop, &drain_timer);
	ev_timer_init(&drain_check, drain_check_cb, 0.05, 0.05);
	ev_timer_start(loop, &drain_check);
}

/* SIGTERM/SIGINT: starts the drain (the workers stop accepting traffic); a second one stops at once. */
static void
term_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)revents;
	if (relay_draining()) {
		log_info("second stop signal: closing now");
		stop_now(loop);
		return;
	}
	if (upgrade_running())
		log_warn("signal %d during an upgrade: the new process may still take over", w->signum);
	notify("STOPPING=1\nSTATUS=draining");
	log_info("signal %d: draining %ld connection(s) for up to %g s", w->signum,
	    __atomic_load_n(&relay.nconns, __ATOMIC_RELAXED), relay.cfg->drain_timeout);
	drain_start(loop);
}

/*
 * The upgrade's end: pid > 0, the new process is ready and listens on every socket; systemd
 * is told it is the main process now (this one's NotifyAccess=main rights pass to it), then
 * this process closes its copies of the sockets (the kernel keeps them open in the new one)
 * and drains. pid -1: it failed (logged); this process goes on as before.
 */
static void
upgrade_done(pid_t pid)
{
	if (pid <= 0) {
		/* The new process may have written them before it failed: they are this one's again. */
		if (pid_path)
			write_pidfile(pid_path);
		if (!relay_draining())
			write_addrfile(relay.workers[0].listeners);
		notify("STATUS=upgrade failed, the running process goes on");
		return;
	}
	if (relay_draining()) {
		/* A stop was asked while the new process started: it stops too (it drains nothing yet). */
		log_info("upgrade: a stop was asked meanwhile; stopping the new process (pid %d) too", (int)pid);
		kill(pid, SIGTERM);
		return;
	}
	notify("MAINPID=%d\nREADY=1\nSTATUS=upgraded: pid %d serves, pid %d drains", (int)pid, (int)pid, (int)getpid());
	log_info("upgrade: handed over to pid %d; draining %ld connection(s) for up to %g s", (int)pid,
	    __atomic_load_n(&relay.nconns, __ATOMIC_RELAXED), relay.cfg->drain_timeout);
	__atomic_store_n(&relay.handed_over, 1, __ATOMIC_RELEASE);
	runtime_release();
	drain_start(relay.loop);
}

/* SIGUSR2: starts the binary again (a package upgrade's new file) and hands it the sockets. */
static void
usr2_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w; (void)revents;
	if (relay_draining() || upgrade_running()) {
		log_warn("upgrade: SIGUSR2 ignored (%s)", relay_draining() ? "draining" : "an upgrade is under way");
		return;
	}
	/*
	 * No RELOADING=1: systemd takes MAINPID= from the main process in the running state (252
	 * and later); the service stays "running" throughout, then its main process changes.
	 */
	notify("STATUS=upgrading");
	if (upgrade_start(loop, upgrade_done) == -1) {
		log_error("upgrade failed, this process keeps serving");
		notify("STATUS=upgrade failed, the running process goes on");
	}
}

/*
 * SIGUSR1: reopens the log files (after a rotation). A file that cannot be opened now (out of
 * descriptors) keeps being written where it was (the rotated file), and the reopen is tried
 * again every second until it works: logrotate signals once.
 */
static ev_timer reopen_retry;
static void reopen_retry_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void
reopen_logs(struct ev_loop *loop)
{
	if (log_reopen() == 0) {
		ev_timer_stop(loop, &reopen_retry);
		log_info("log files reopened");
		return;
	}
	if (!ev_is_active(&reopen_retry)) {
		log_error("cannot reopen the log files: %s; writing to the previous ones, trying again every second",
		    strerror(errno));
		ev_timer_init(&reopen_retry, reopen_retry_cb, 1., 1.);
		ev_timer_start(loop, &reopen_retry);
	}
}

static void
reopen_retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w; (void)revents;
	reopen_logs(loop);
}

static void
usr1_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	(void)w; (void)revents;
	reopen_logs(loop);
}

/* Drops root privileges to user/group after binding; -1 when that fails. */
static int
drop_privileges(const struct config *cfg)
{
	if (!cfg->user && !cfg->group)
		return 0;
	if (geteuid() != 0)
		return 0;
	if (!cfg->user) {
		log_error("global.group is set without global.user: refusing to stay root");
		return -1;
	}
	struct passwd *pw = cfg->user ? getpwnam(cfg->user) : NULL;
	struct group *gr = cfg->group ? getgrnam(cfg->group) : NULL;
	if ((cfg->user && !pw) || (cfg->group && !gr)) {
		log_error("unknown %s \"%s\"", cfg->user && !pw ? "user" : "group",
		    cfg->user && !pw ? cfg->user : cfg->group);
		return -1;
	}
	if ((pw && pw->pw_uid == 0) || (!pw && gr && gr->gr_gid == 0)) {
		log_error("global.user/group name root: refusing to run as root when asked to drop privileges");
		return -1;
	}
	gid_t gid = gr ? gr->gr_gid : pw->pw_gid;
	if (setgroups(0, NULL) == -1 || setgid(gid) == -1 || (pw && initgroups(pw->pw_name, gid) == -1) ||
	    (pw && setuid(pw->pw_uid) == -1)) {
		log_error("cannot drop privileges: %s", strerror(errno));
		return -1;
	}
	if (pw && (setuid(0) == 0 || geteuid() == 0)) {
		log_error("privileges could be regained after dropping them; refusing to run");
		return -1;
	}
	return 0;
}

/*
 * Writes the process id to path: a temporary file beside it renamed into place, so a reader
 * (an upgrade's old and new process write it in turn) never sees it empty; where the folder
 * takes no new file, the file itself is rewritten. -1 logged.
 */
static int
write_pidfile(const char *path)
{
	char tmp[4096 + 32];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.%d.tmp", path, (int)getpid());
	if ((f = fopen(tmp, "w"))) {
		bool bad = fprintf(f, "%d\n", (int)getpid()) < 0;
		bad |= fclose(f) != 0;
		if (!bad && rename(tmp, path) == 0)
			return 0;
		unlink(tmp);
	}
	f = fopen(path, "w");
	if (!f || fprintf(f, "%d\n", (int)getpid()) < 0 || fclose(f) != 0) {
		log_error("cannot write pidfile %s: %s", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* What the command line asks for besides -f and -a (kept in conf_path and addr_path). */
struct main_options {
	bool test;			/* -t: check the configuration and exit */
	bool ep_test;			/* -T: compare the certificates of exrelay and the TLS backends, exit */
	bool daemonize;			/* -d */
	const char *pidfile;		/* -p, else global.pidfile once loaded; NULL = none */
};

/* Parses the command line into o, conf_path and addr_path: -1 to go on, else the exit status. */
static int
main_options(int argc, char **argv, struct main_options *o)
{
	int ch;

	while ((ch = getopt(argc, argv, "f:tTdp:a:Vh")) != -1) {
		switch (ch) {
		case 'f': conf_path = optarg; break;
		case 't': o->test = true; break;
		case 'T': o->ep_test = true; break;
		case 'd': o->daemonize = true; break;
		case 'p': o->pidfile = optarg; break;
		case 'a':
			if (set_addr_path(optarg) == -1) {
				fprintf(stderr, "exrelay: -a %s: path too long or no current folder\n", optarg);
				return 1;
			}
			break;
		case 'V': version(); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 1;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 1;
	}
	return -1;
}

/*
 * Starts TLS, loads the configuration into relay.cfg (-t stops there), creates the main loop
 * and opens the logs: -1 to go on, else the exit status (1 configuration error, 2 start-up).
 */
static int
main_configure(const struct main_options *o)
{
	char err[1024];
	bool unusable_file = false;
	struct config *cfg;

	signal(SIGPIPE, SIG_IGN);
	if (tls_global_init() == -1) {
		fprintf(stderr, "exrelay: cannot initialise TLS\n");
		return 2;
	}
	if (!(cfg = config_load(conf_path, err, sizeof(err), &unusable_file))) {
		fprintf(stderr, "%s\n", err);
		/* -t reports every error as 1; starting, an unusable certificate is a start-up failure. */
		return !o->test && !o->ep_test && unusable_file ? 2 : 1;
	}
	if (o->test) {
		printf("configuration OK\n");
		config_unref(cfg);
		return 0;
	}
	if (o->ep_test) {
		int status = epcheck_test(cfg);
		config_unref(cfg);
		tls_global_free();
		return status;
	}
	relay.cfg = cfg;
	relay.max_conns = cfg->max_connections;
	if (servers_bind(cfg) == -1) {
		fprintf(stderr, "exrelay: more than %d backend servers\n", SRV_MAX);
		return 2;
	}
	upgrade_apply_servers();	/* after an upgrade: the states set through the runtime API */
	relay.loop = ev_default_loop(EVFLAG_AUTO);
	if (apply_logs(cfg) == -1)
		return 2;
	epcheck_bind(cfg);	/* after the logs: a listener/name with another certificate is logged */
	if (guard_init(cfg->guard.max_entries, NULL) == -1) {
		log_error("cannot allocate the authentication guard's tables (%zu entries)", cfg->guard.max_entries);
		return 2;
	}
	raise_nofile(cfg);
	return -1;
}

/* Creates the workers' event loops and binds one listener set per worker into sets: 0, or -1 logged. */
static int
main_listeners(struct listener **sets)
{
	char err[1024];

	if (worker_init_all(worker_count(relay.cfg)) == -1) {
		log_error("cannot create the event loops");
		return -1;
	}
	if (listener_build(relay.cfg, sets, err, sizeof(err)) == -1) {
		log_error("%s", err);
		return -1;
	}
	return 0;
}

/*
 * Started by an upgrade (without -d): goes on in a child of its own while the process the old
 * exrelay started exits (the old one reaps it), so that this one is reparented to the service
 * manager (or init) before it says it is ready. systemd takes a MAINPID= that is not its own
 * child as "alien": 252 neither waits for it on stop (SIGKILL right after SIGTERM: no drain,
 * Result=signal) nor can it wait for its exit. 0, or -1 logged.
 */
static int
detach_from_old(void)
{
	pid_t parent = getpid(), pid = fork();

	if (pid == -1) {
		log_error("upgrade: fork: %s", strerror(errno));
		return -1;
	}
	if (pid > 0)
		_exit(0);
	/* Reparented when the parent's exit completes: wait for it (it does nothing else). */
	for (int i = 0; i < 2000 && getppid() == parent; i++)
		usleep(1000);
	ev_loop_fork(relay.loop);
	for (int k = 0; k < relay.nworkers; k++)
		ev_loop_fork(relay.workers[k].loop);
	return 0;
}

/*
 * Once bound: writes the address file, drops privileges, goes to the background (-d) or, started
 * by an upgrade, away from the old process, and writes the pidfile (o->pidfile becomes
 * global.pidfile when -p is absent): 0, or -1 logged.
 */
static int
main_detach(struct main_options *o, struct listener **sets)
{
	/* Before the privilege drop, like a listener on a port below 1024 (the admin socket too). */
	if (write_addrfile(sets[0]) == -1 || runtime_start(relay.cfg) == -1 || drop_privileges(relay.cfg) == -1)
		return -1;
	upgrade_close_unused();		/* what an upgrade handed over and the configuration no longer has */
	if (o->daemonize) {
		if (daemon(0, 0) == -1) {
			log_error("daemon: %s", strerror(errno));
			return -1;
		}
		ev_loop_fork(relay.loop);
		for (int k = 0; k < relay.nworkers; k++)
			ev_loop_fork(relay.workers[k].loop);
	} else if (upgrade_is_child() && detach_from_old() == -1) {
		return -1;
	}
	upgrade_detached();	/* started by an upgrade: the pid that goes on */
	if (!o->pidfile && relay.cfg->pidfile) {
		/* A copy: the configuration that names it is freed by a later reload. */
		static char path[4096];
		snprintf(path, sizeof(path), "%s", relay.cfg->pidfile);
		o->pidfile = path;
	}
	if (o->pidfile && write_pidfile(o->pidfile) == -1)
		return -1;
	pid_path = o->pidfile;
	return 0;
}

/* Undoes a start-up that failed after the listener sets were built; returns 2, its exit status. */
static int
main_startup_failed(struct listener **sets)
{
	if (addr_path[0])
		unlink(addr_path);	/* no address file naming sockets that are about to close */
	runtime_stop();
	listener_sets_discard(sets, relay.nworkers);
	worker_join_all();
	config_unref(relay.cfg);
	tls_global_free();
	return 2;
}

/* Starts the main loop's signal watchers: SIGHUP reload, SIGTERM/SIGINT drain, SIGUSR1 log reopen. */
static void
main_signals(void)
{
	ev_signal_init(&sig_hup, reload_cb, SIGHUP);
	ev_signal_init(&sig_term, term_cb, SIGTERM);
	ev_signal_init(&sig_int, term_cb, SIGINT);
	ev_signal_init(&sig_usr1, usr1_cb, SIGUSR1);
	ev_signal_init(&sig_usr2, usr2_cb, SIGUSR2);
	ev_signal_start(relay.loop, &sig_hup);
	ev_signal_start(relay.loop, &sig_term);
	ev_signal_start(relay.loop, &sig_int);
	ev_signal_start(relay.loop, &sig_usr1);
	ev_signal_start(relay.loop, &sig_usr2);
}

/* Starts the signals and the workers on sets, then runs the main loop until a stop: 0, or -1 logged. */
static int
main_run(struct listener **sets)
{
	const struct config *cfg = relay.cfg;
	char err[1024];

	main_signals();
	listener_report(sets[0]);
	if (worker_start_all(relay.nworkers, sets, err, sizeof(err)) == -1) {
		log_error("%s", err);
		return -1;
	}
	health_start(relay.cfg);
	log_info("exrelay %s started (pid %d, %d worker(s), %zu listener(s), %zu backend(s), %zu route(s))",
	    PACKAGE_VERSION, (int)getpid(), relay.nworkers, cfg->nlisteners, cfg->nbackends, cfg->nroutes);
	/* Started by an upgrade: the previous process tells systemd (MAINPID) once this one is ready. */
	if (upgrade_is_child())
		upgrade_ready();
	else
		notify("READY=1\nMAINPID=%d\nSTATUS=%d worker(s) running", (int)getpid(), relay.nworkers);

	ev_run(relay.loop, 0);
	return 0;
}

/* After the main loop: stops and joins the workers, removes the pidfile and address file, frees all. */
static void
main_shutdown(const char *pidfile)
{
	__atomic_store_n(&relay.stopping, 1, __ATOMIC_RELEASE);
	worker_wake_all();
	worker_join_all();
	health_stop();
	/* After an upgrade, the pidfile and the address file are the new process's. */
	bool mine = !__atomic_load_n(&relay.handed_over, __ATOMIC_ACQUIRE);
	if (pidfile && mine)
		unlink(pidfile);
	runtime_stop();
	guard_free();
	if (addr_path[0] && mine)
		unlink(addr_path);
	log_info("stopped");
	config_unref(relay.cfg);
	buf_pool_drain();
	tls_global_free();
	ev_loop_destroy(relay.loop);
	log_close();
}

/* Exits 0 after a normal stop (or -t, -V, -h), 1 on a configuration or usage error, 2 when start-up fails. */
int
main(int argc, char **argv)
{
	struct main_options o = { .test = false, .ep_test = false, .daemonize = false, .pidfile = NULL };
	struct listener *sets[WORKERS_MAX];
	int status;

	if ((status = main_options(argc, argv, &o)) != -1)
		return status;
	if (!o.test && !o.ep_test)
		upgrade_init(argc, argv);
	if ((status = main_configure(&o)) != -1)
		return status;
	if (main_listeners(sets) == -1)
		return 2;
	if (main_detach(&o, sets) == -1)
		return main_startup_failed(sets);
	if (main_run(sets) == -1)
		return 2;
	main_shutdown(o.pidfile);
	return 0;
}
