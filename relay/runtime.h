/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime.h: HAProxy's runtime API subset on global.admin_socket (runtime.c: the sockets and
 * their clients; runtime_cmd.c: the command line and the commands that change servers;
 * runtime_show.c: the answers of the `show` commands, in HAProxy 2.6's formats).
 * Everything here runs on the main thread's loop (relay.loop).
 */
#ifndef EXRELAY_RUNTIME_H
#define EXRELAY_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include "cfg.h"

/*
 * Creates cfg's admin socket (none configured: nothing to do) and starts accepting on
 * relay.loop. Call before dropping privileges: the socket is bound under a umask that
 * leaves it owner-only, then given its group and its mode. 0, or -1 logged.
 */
int runtime_start(const struct config *cfg);
/* After a reload: a new path (or none) replaces the socket; a new mode or group is applied. */
void runtime_reload(const struct config *cfg);
/* Closes the socket and every client, and removes the socket file. */
void runtime_stop(void);
/* The listening sockets (admin_socket.bind, admin_socket.path), -1 for none (an upgrade hands them over). */
void runtime_fds(int *tcp_fd, int *unix_fd);
/* After an upgrade: stops listening, leaving the socket file to the new process; clients finish. */
void runtime_release(void);

/* --- internal to runtime.c, runtime_cmd.c and runtime_show.c ------------------------- */

/* A command's answer: grows up to RUNTIME_OUT_MAX; past it, overflow is set. */
#define RUNTIME_OUT_MAX (1024 * 1024)
struct rt_out {
	char *p;
	size_t len, cap;
	bool overflow;
};

void rt_puts(struct rt_out *o, const char *s);
void rt_printf(struct rt_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Remembers the start time for `show info` (the first call wins). */
void runtime_mark_start(void);
/* `show info`: "Name: value" lines. */
void runtime_show_info(struct rt_out *o);
/* `show stat`: HAProxy 2.6's CSV header, FRONTEND lines, then each backend's servers and BACKEND. */
void runtime_show_stat(struct rt_out *o);
/* `show servers state [backend]` (format version 1); -1 when backend names none (nothing written). */
int runtime_show_servers_state(struct rt_out *o, const char *backend);

#endif
