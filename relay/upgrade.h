/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * upgrade.h: the binary upgrade (SIGUSR2). The running process starts the binary at the path it
 * was started from, with the same arguments, and hands it its listening sockets by
 * inheritance; the new process adopts them instead of binding, and says when it is ready.
 *
 * The hand-over (environment of the new process, one line each):
 *   EXRELAY_UPGRADE="ready FD\nfd FD NAME\nfd FD NAME\n..."
 * "ready FD": the write end of a pipe; the new process writes "ready PID\n" there once its
 * workers accept, and closes it. Before that, once it went on in a child of its own (always,
 * so that it is reparented to the service manager; or -d), it writes "pid PID\n" (the process
 * to kill when it is not ready in time). "fd FD NAME": a listening socket, NAME the listener it served
 * (one line per worker socket), "@admin_socket.bind" or "@admin_socket.path" for the runtime
 * API's sockets. "server ADMIN WEIGHT DOWN BACKEND/NAME": a state (enum srv_admin) or weight
 * set through the runtime API (-1: none), which the new process keeps, like a reload does, and
 * the protocols its checks found down (comma-separated, "-" none), which start down there.
 * Everything runs on the main thread.
 */
#ifndef EXRELAY_UPGRADE_H
#define EXRELAY_UPGRADE_H

#include <stdbool.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <ev.h>

/* The names of the runtime API's sockets in EXRELAY_UPGRADE. */
#define UPGRADE_ADMIN_TCP	"@admin_socket.bind"
#define UPGRADE_ADMIN_UNIX	"@admin_socket.path"

/*
 * At start: remembers the binary's absolute path (argv[0], else found in $PATH; symbolic links
 * are kept, so a package's new file is what runs), the arguments and the current folder; then
 * takes the sockets a previous process handed over in EXRELAY_UPGRADE (removed from the
 * environment). Call once, before the configuration is loaded.
 */
void upgrade_init(int argc, char **argv);
/* After servers_bind(): applies the run-time server states and weights handed over. */
void upgrade_apply_servers(void);
/* True when this process was started by an upgrade (and has not said it is ready yet). */
bool upgrade_is_child(void);
/*
 * An inherited listening socket for the listener name at addr: same family and address; for
 * port 0, the same listener name and address with any port. Its fd (now owned by the caller), or -1.
 */
int upgrade_take(const char *name, const struct sockaddr_storage *addr, socklen_t len);
/* An inherited Unix listening socket bound to path: its fd (owned by the caller), or -1. */
int upgrade_take_unix(const char *path);
/* Closes the inherited sockets nothing took (logged): the new configuration has no use for them. */
void upgrade_close_unused(void);
/* Tells the process that started this one the pid this one goes on with (writes "pid PID"). */
void upgrade_detached(void);
/* Tells the process that started this one that it is ready (writes "ready PID"); once. */
void upgrade_ready(void);

/*
 * SIGUSR2 in the running process: starts the new binary with the listening sockets of every
 * worker and of the runtime API. done(pid) is called later on the main loop: pid > 0 once the
 * new process is ready, -1 when it failed (logged: exited, crashed, not ready in
 * UPGRADE_TIMEOUT seconds, then killed). 0, or -1 logged when nothing could be started.
 */
#define UPGRADE_TIMEOUT 30.
int upgrade_start(struct ev_loop *loop, void (*done)(pid_t pid));
/* True between upgrade_start() and done(). */
bool upgrade_running(void);

#endif
