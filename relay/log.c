/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * log.c: the error log and the access log. Lines are formatted into a local buffer and
 * written with one write(2), so lines from several threads never interleave.
 */
#include "autoconf.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

static const char *level_names[] = {
#define X(e, s) s,
	LOG_LEVELS(X)
#undef X
};

static struct {
	pthread_mutex_t lock;
	enum log_level level;
	int fd;			/* -1: syslog */
	char *path;		/* file path, or NULL for stderr/syslog */
	int afd;		/* access log fd, -1 off or syslog */
	bool asyslog;
	char *apath;
	enum access_format afmt;
} lg = { PTHREAD_MUTEX_INITIALIZER, LVL_INFO, 2, NULL, -1, false, NULL, ACCESS_COMBINED };

int
log_level_parse(const char *s)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++)
		if (strcmp(s, level_names[i]) == 0)
			return (int)i;
	return -1;
}

static int
open_append(const char *path)
{
	return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
}

/*
 * Points *slot at newfd. Worker threads write to the descriptor number they read without the
 * lock, so a file descriptor number is never closed while in use: a new file replaces an old
 * one under the same number (dup2), and an old file no longer wanted is left open (a reload
 * moving a log from a file to stderr or syslog: one descriptor, once).
 */
static void
swap_fd(int *slot, int newfd)
{
	if (*slot > 2 && newfd > 2) {
		dup2(newfd, *slot);
		close(newfd);
		return;
	}
	__atomic_store_n(slot, newfd, __ATOMIC_RELEASE);
}

int
log_open(const char *target, enum log_level level)
{
	int fd = 2;
	char *path = NULL;

	if (strcmp(target, "syslog") == 0) {
		openlog("exrelay", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		fd = -1;
	} else if (strcmp(target, "stderr") != 0) {
		if ((fd = open_append(target)) == -1)
			return -1;
		path = strdup(target);
	}
	pthread_mutex_lock(&lg.lock);
	free(lg.path);
	swap_fd(&lg.fd, fd);
	lg.path = path;
	lg.level = level;
	pthread_mutex_unlock(&lg.lock);
	return 0;
}

int
log_reopen(void)
{
	int r = 0, err = 0;

	pthread_mutex_lock(&lg.lock);
	if (lg.path) {
		int fd = open_append(lg.path);
		if (fd != -1) {
			swap_fd(&lg.fd, fd);
		} else {
			r = -1;
			err = errno;
		}
	}
	if (lg.apath) {
		int fd = open_append(lg.apath);
		if (fd != -1) {
			swap_fd(&lg.afd, fd);
		} else {
			r = -1;
			err = errno;
		}
	}
	pthread_mutex_unlock(&lg.lock);
	errno = err;
	return r;
}

void
log_close(void)
{
	pthread_mutex_lock(&lg.lock);
	if (lg.path && lg.fd > 2)
		close(lg.fd);
	if (lg.afd != -1)
		close(lg.afd);
	free(lg.path);
	free(lg.apath);
	lg.path = lg.apath = NULL;
	lg.fd = 2;
	lg.afd = -1;
	pthread_mutex_unlock(&lg.lock);
}

bool
log_enabled(enum log_level level)
{
	return level <= lg.level;
}

static void
write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w == -1 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* Formats one error-log line: "TIME exrelay[PID]: LEVEL: message". */
static void __attribute__((format(printf, 2, 0)))
log_emit(enum log_level level, const char *fmt, va_list ap)
{
	static const int prio[] = { LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG };
	char line[2048];
	size_t n = 0;
	int fd;

	if (!log_enabled(level))
		return;
	fd = lg.fd;
	if (fd != -1) {
		struct timespec ts;
		struct tm tm;
		clock_gettime(CLOCK_REALTIME, &ts);
		gmtime_r(&ts.tv_sec, &tm);
		n = strftime(line, sizeof(line), "%Y-%m-%dT%H:%M:%S", &tm);
		n += (size_t)snprintf(line + n, sizeof(line) - n, ".%03ldZ exrelay[%d]: %s: ",
		    ts.tv_nsec / 1000000, (int)getpid(), level_names[level]);
	}
	int k = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	if (k < 0)
		return;
	n += (size_t)k;
	if (n > sizeof(line) - 2)
		n = sizeof(line) - 2;
	if (fd == -1) {
		line[n] = '\0';
		syslog(prio[level], "%s", line);
		return;
	}
	line[n++] = '\n';
	write_all(fd, line, n);
}

#define LOG_FN(name, lvl) \
void name(const char *fmt, ...) { va_list ap; va_start(ap, fmt); log_emit(lvl, fmt, ap); va_end(ap); }
LOG_FN(log_error, LVL_ERROR)
LOG_FN(log_warn, LVL_WARNING)
LOG_FN(log_info, LVL_INFO)
LOG_FN(log_debug, LVL_DEBUG)

int
log_access_open(const char *path, enum access_format fmt)
{
	int fd = -1;
	bool sys = false;
	char *p = NULL;

	if (path && strcmp(path, "syslog") == 0) {
		openlog("exrelay", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		sys = true;
	} else if (path) {
		if ((fd = open_append(path)) == -1)
			return -1;
		p = strdup(path);
	}
	pthread_mutex_lock(&lg.lock);
	free(lg.apath);
	if (fd == -1 && lg.afd > 2)
		fd = open("/dev/null", O_WRONLY | O_CLOEXEC);	/* off: keep the number, drop the lines */
	swap_fd(&lg.afd, fd);
	lg.apath = p;
	lg.asyslog = sys;
	lg.afmt = fmt;
	pthread_mutex_unlock(&lg.lock);
	return 0;
}

/* Appends s to out as the inside of a quoted field; quotes, backslashes and controls escaped. */
static size_t
put_escaped(char *out, size_t cap, size_t n, const char *s, bool json)
{
	static const char hex[] = "0123456789abcdef";

	if (!s)
		s = "-";
	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20 || ch >= 0x7f) {
			n += (size_t)snprintf(out + n, cap - n, json ? "\\u00" : "\\x");
			out[n++] = hex[ch >> 4];
			out[n++] = hex[ch & 15];
		} else {
			out[n++] = (char)ch;
		}
	}
	return n;
}

#define PUT(...) do { int k_ = snprintf(line + n, sizeof(line) - n, __VA_ARGS__); \
	if (k_ > 0) \
		n += (size_t)k_; \
	if (n >= sizeof(line)) \
		n = sizeof(line) - 1; \
} while (0)
#define PUTQ(s) do { n = put_escaped(line, sizeof(line) - 4, n, (s), json); } while (0)

void
log_access(const struct access_record *r)
{
	char line[8192], when[64];
	size_t n = 0;
	bool json = lg.afmt == ACCESS_JSON;
	time_t t = (time_t)r->start;
	struct tm tm;

	if (lg.afd == -1 && !lg.asyslog)
		return;
	if (json) {
		gmtime_r(&t, &tm);
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		PUT("{\"client\":\""); PUTQ(r->client);
		PUT("\",\"user\":\""); PUTQ(r->user);
		PUT("\",\"time\":\"%s\",\"method\":\"", when); PUTQ(r->method);
		PUT("\",\"target\":\""); PUTQ(r->target);
		PUT("\",\"proto\":\""); PUTQ(r->proto);
		PUT("\",\"status\":%d,\"bytes\":%llu,\"bytes_in\":%llu,\"referer\":\"", r->status,
		    (unsigned long long)r->bytes_out, (unsigned long long)r->bytes_in);
		PUTQ(r->referer);
		PUT("\",\"user_agent\":\""); PUTQ(r->user_agent);
		PUT("\",\"duration_ms\":%.3f,\"route\":\"", r->duration_ms); PUTQ(r->route);
		PUT("\",\"server\":\""); PUTQ(r->server);
		PUT("\",\"tls_version\":\""); PUTQ(r->tls_version);
		PUT("\",\"tls_cipher\":\""); PUTQ(r->tls_cipher);
		PUT("\",\"termination\":\""); PUTQ(r->termination);
		PUT("\"}\n");
	} else {
		localtime_r(&t, &tm);
		strftime(when, sizeof(when), "%d/%b/%Y:%H:%M:%S %z", &tm);
		PUT("%s - %s [%s] \"", r->client ? r->client : "-", r->user ? r->user : "-", when);
		PUTQ(r->method); PUT(" "); PUTQ(r->target); PUT(" "); PUTQ(r->proto);
		PUT("\" %d %llu \"", r->status, (unsigned long long)r->bytes_out);
		PUTQ(r->referer); PUT("\" \""); PUTQ(r->user_agent);
		PUT("\" %.0f %s %s\n", r->duration_ms, r->route ? r->route : "-", r->server ? r->server : "-");
	}
	if (n > 0 && line[n - 1] != '\n')
		line[n - 1] = '\n';
	if (lg.asyslog) {
		line[n - 1] = '\0';
		syslog(LOG_INFO, "%s", line);
	} else {
		write_all(lg.afd, line, n);
	}
}
