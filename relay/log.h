/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log.h: the error log (stderr, syslog or a file, with levels) and the access log
 * (combined or json, one line per request).
 */
#ifndef EXRELAY_LOG_H
#define EXRELAY_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#define LOG_LEVELS(X) X(LVL_ERROR, "error") X(LVL_WARNING, "warning") X(LVL_INFO, "info") X(LVL_DEBUG, "debug")
enum log_level {
#define X(e, s) e,
	LOG_LEVELS(X)
#undef X
};

/* Parses "error" | "warning" | "info" | "debug"; -1 if none. */
int log_level_parse(const char *s);

/* Points the error log at "stderr", "syslog" or a file path; returns 0 or -1 with errno. */
int log_open(const char *target, enum log_level level);
/* Reopens the error and access log files (SIGUSR1, after logrotate moved them). */
/*
 * Opens the log files again by name (after a rotation). -1 with errno when one could not be
 * opened (out of descriptors): that file keeps its previous descriptor, nothing is lost.
 */
int log_reopen(void);
void log_close(void);

void log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
bool log_enabled(enum log_level level);

/* One access log record; strings may be NULL (logged as "-"). */
struct access_record {
	const char *client;		/* real client address */
	const char *user;		/* Basic auth user name, or NULL */
	double start;			/* wall clock, seconds */
	const char *method, *target, *proto;
	int status;			/* 0 when no response was sent */
	uint64_t bytes_out;		/* response bytes sent to the client (head included) */
	uint64_t bytes_in;		/* request bytes received from the client (head included) */
	const char *referer, *user_agent;
	double duration_ms;
	const char *route;		/* backend name of the route, or "-" */
	const char *server;		/* backend server "host:port", or "-" */
	const char *tls_version, *tls_cipher;	/* json only */
	const char *termination;	/* json only: how the request ended ("ok", "client_cut", ...) */
};

enum access_format { ACCESS_COMBINED, ACCESS_JSON };

/* Opens the access log ("syslog" or a path; NULL turns it off). Returns 0 or -1 with errno. */
int log_access_open(const char *path, enum access_format fmt);
void log_access(const struct access_record *r);

#endif
