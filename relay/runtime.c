/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime.c: HAProxy's runtime API subset on global.admin_socket, on the main thread's loop:
 * the Unix socket (created owner-only under a umask, then given its group and mode), its
 * clients (a bounded input line, a bounded output buffer written without blocking, an idle
 * timeout that also drops a client that does not read), HAProxy 2.6's command line (commands
 * separated by unescaped ';', words by spaces or tabs, '\' escapes the next character;
 * `prompt` toggles the interactive mode, `quit` ends) and the commands that change servers.
 * The answers' texts are HAProxy 2.6's (src/cli.c, src/server.c); runtime_show.c has the
 * `show` commands. Without `prompt`, one line of commands is answered and the socket closed.
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
#include "servers.h"

#define RT_MAGIC 0x72746d63U		/* "rtmc" */
#define RT_LINE_MAX 4096		/* one command line; a longer one drops the client */
#define RT_OUT_HIGH (64 * 1024)		/* interactive: stop reading while this much is unsent */
#define RT_CLIENTS_MAX 16
#define RT_TIMEOUT 10.0			/* seconds without progress (HAProxy's `stats timeout`) */
#define RT_ARGS_MAX 64			/* HAProxy's MAX_CLI_ARGS */
#define RT_KW_WORDS 5			/* HAProxy's CLI_PREFIX_KW_NB */
#define RT_MAX_MATCHES 5		/* HAProxy's CLI_MAX_MATCHES */

struct rt_client {
	unsigned magic;
	int fd;
	ev_io rio, wio;
	ev_timer timer;
	char in[RT_LINE_MAX];
	size_t inlen;
	struct rt_out out;
	size_t sent;			/* bytes of out already written */
	bool prompt;			/* interactive mode */
	bool closing;			/* close once out is sent */
	struct rt_client *prev, *next;
};

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

/* --- the command table and HAProxy's help -------------------------------------------------- */

enum rt_result { RT_DONE, RT_QUIT };

struct rt_kw {
	const char *words[RT_KW_WORDS];
	const char *usage;		/* HAProxy 2.6's help line; NULL: help, prompt, quit */
	enum rt_result (*fn)(struct rt_client *cl, char **args);
};

static enum rt_result rt_help(struct rt_client *cl, char **args);
static enum rt_result rt_prompt(struct rt_client *cl, char **args);
static enum rt_result rt_quit(struct rt_client *cl, char **args);
static enum rt_result rt_show_info(struct rt_client *cl, char **args);
static enum rt_result rt_show_stat(struct rt_client *cl, char **args);
static enum rt_result rt_show_state(struct rt_client *cl, char **args);
static enum rt_result rt_enable(struct rt_client *cl, char **args);
static enum rt_result rt_get_weight(struct rt_client *cl, char **args);
static enum rt_result rt_set_weight(struct rt_client *cl, char **args);
static enum rt_result rt_set_server(struct rt_client *cl, char **args);

/* In the order of HAProxy's help (sorted by usage line). */
static const struct rt_kw rt_kws[] = {
	{ { "disable", "server" }, "disable server (DEPRECATED)             : disable a server for maintenance (use 'set server' instead)", rt_enable },
	{ { "enable", "server" }, "enable server  (DEPRECATED)             : enable a disabled server (use 'set server' instead)", rt_enable },
	{ { "get", "weight" }, "get weight <bk>/<srv>                   : report a server's current weight", rt_get_weight },
	{ { "set", "server" }, "set server <bk>/<srv> [opts]            : change a server's state, weight, address or ssl", rt_set_server },
	{ { "set", "weight" }, "set weight <bk>/<srv>  (DEPRECATED)     : change a server's weight (use 'set server' instead)", rt_set_weight },
	{ { "show", "info" }, "show info [desc|json|typed|float]*      : report information about the running process", rt_show_info },
	{ { "show", "servers", "state" }, "show servers state [<backend>]          : dump volatile server information (all or for a single backend)", rt_show_state },
	{ { "show", "stat" }, "show stat [desc|json|no-maint|typed|up]*: report counters for each proxy and server", rt_show_stat },
	{ { "help" }, NULL, rt_help },
	{ { "prompt" }, NULL, rt_prompt },
	{ { "quit" }, NULL, rt_quit },
};
#define RT_NKWS (sizeof(rt_kws) / sizeof(rt_kws[0]))

/* The first keyword whose words all begin args (HAProxy's cli_find_kw), or NULL. */
static const struct rt_kw *
rt_find(char **args)
{
	for (size_t k = 0; k < RT_NKWS; k++) {
		size_t i = 0;
		while (i < RT_KW_WORDS && rt_kws[k].words[i] && strcmp(rt_kws[k].words[i], args[i]) == 0)
			i++;
		if (i == RT_KW_WORDS || !rt_kws[k].words[i])
			return &rt_kws[k];
	}
	return NULL;
}

/*
 * Adds word to a fingerprint: the count of each transition between character classes
 * (26 letters, digit, other; 28 is the word's beginning and end), as HAProxy's
 * update_word_fingerprint() does to suggest a command close to a mistyped one.
 */
static void
rt_fingerprint(unsigned char *fp, const char *word)
{
	int from = 28;

	for (const char *p = word; *p; p++) {
		int c = *p >= 'A' && *p <= 'Z' ? *p - 'A' + 'a' : *p;
		int to = c >= 'a' && c <= 'z' ? c - 'a' : c >= '0' && c <= '9' ? 26 : 27;
		fp[32 * from + to]++;
		from = to;
	}
	fp[32 * from + 28]++;
}

/* The distance of the words args[from..] to the keyword's words kw[from..]; *totlen: their lengths. */
static int
rt_distance(char **args, const char *const *kw, size_t from, int *totlen)
{
	unsigned char a[1024] = { 0 }, b[1024] = { 0 };
	int dist = 0;

	*totlen = 0;
	for (size_t i = from; i < RT_KW_WORDS && *args[i]; i++) {
		rt_fingerprint(a, args[i]);
		*totlen += (int)strlen(args[i]);
	}
	for (size_t i = from; i < RT_KW_WORDS && kw[i]; i++) {
		rt_fingerprint(b, kw[i]);
		*totlen += (int)strlen(kw[i]);
	}
	for (size_t i = 0; i < sizeof(a); i++)
		dist += a[i] > b[i] ? a[i] - b[i] : b[i] - a[i];
	return dist;
}

/* How many of the first words of args name keyword k's first words. */
static size_t
rt_prefix(const struct rt_kw *k, char **args, size_t limit)
{
	size_t i = 0;

	while (i < limit && i < RT_KW_WORDS && k->words[i] && *args[i] && strcmp(k->words[i], args[i]) == 0)
		i++;
	return i;
}

/*
 * HAProxy's answer to `help [words]` and to an unknown command (cli_gen_usage_msg): a title,
 * the commands that begin with the words that matched (or, for a mistyped word, the closest
 * ones), then help, prompt and quit. The commands listed are exrelay's.
 */
static void
rt_usage(struct rt_out *o, char **args)
{
	bool ishelp = strcmp(args[0], "help") == 0;
	const struct rt_kw *match[RT_MAX_MATCHES] = { NULL };
	int mdist[RT_MAX_MATCHES];
	size_t length = 0;

	if (ishelp)
		args++;
	for (size_t k = 0; k < RT_NKWS; k++) {
		size_t n = rt_prefix(&rt_kws[k], args, RT_KW_WORDS);
		length = n > length ? n : length;
	}
	rt_puts(o, ishelp ? "The following commands are valid at this level:\n" :
	    !length && !*args[0] ? "Unknown command. Please enter one of the following commands only:\n" :
	    "Unknown command, but maybe one of the following ones is a better match:\n");
	for (int m = 0; m < RT_MAX_MATCHES; m++)
		mdist[m] = 1 << 30;
	for (size_t k = 0; *args[length] && k < RT_NKWS; k++) {
		int totlen, d;
		if (!rt_kws[k].usage || rt_prefix(&rt_kws[k], args, length) != length)
			continue;
		d = rt_distance(args, rt_kws[k].words, length, &totlen);
		if (d >= 5 * totlen / 2 || d >= mdist[RT_MAX_MATCHES - 1])
			continue;
		int m = RT_MAX_MATCHES - 1;
		for (; m > 0 && mdist[m - 1] > d; m--) {
			match[m] = match[m - 1];
			mdist[m] = mdist[m - 1];
		}
		match[m] = &rt_kws[k];
		mdist[m] = d;
	}
	/* rt_kws is sorted by usage line, as HAProxy sorts what it lists. */
	for (size_t k = 0; k < RT_NKWS; k++) {
		bool listed = false;
		for (int m = 0; m < RT_MAX_MATCHES && match[m]; m++)
			listed |= match[m] == &rt_kws[k] && mdist[m] <= 5 * mdist[0] / 2;
		if (!match[0])
			listed = rt_prefix(&rt_kws[k], args, length) == length;
		if (listed && rt_kws[k].usage)
			rt_printf(o, "  %s\n", rt_kws[k].usage);
	}
	rt_puts(o, "  help [<command>]                        : list matching or all commands\n"
	    "  prompt                                  : toggle interactive mode with prompt\n"
	    "  quit                                    : disconnect\n");
}

/* --- the commands --------------------------------------------------------------------------- */

static enum rt_result
rt_help(struct rt_client *cl, char **args)
{
	rt_usage(&cl->out, args);
	return RT_DONE;
}

static enum rt_result
rt_prompt(struct rt_client *cl, char **args)
{
	(void)args;
	cl->prompt = !cl->prompt;
	return RT_DONE;
}

static enum rt_result
rt_quit(struct rt_client *cl, char **args)
{
	(void)cl; (void)args;
	return RT_QUIT;
}

/* True (with a note written) when args ask for a form of `show` that exrelay does not have. */
static bool
rt_other_form(struct rt_out *o, char **args, size_t from)
{
	for (size_t i = from; *args[i]; i++)
		if (strcmp(args[i], "json") == 0 || strcmp(args[i], "typed") == 0 || strcmp(args[i], "desc") == 0) {
			rt_printf(o, "exrelay answers '%s %s' in the plain form only, not '%s'.\n", args[0], args[1], args[i]);
			return true;
		}
	return false;
}

static enum rt_result
rt_show_info(struct rt_client *cl, char **args)
{
	if (!rt_other_form(&cl->out, args, 2))
		runtime_show_info(&cl->out);
	return RT_DONE;
}

static enum rt_result
rt_show_stat(struct rt_client *cl, char **args)
{
	if (!rt_other_form(&cl->out, args, 2))
		runtime_show_stat(&cl->out);
	return RT_DONE;
}

static enum rt_result
rt_show_state(struct rt_client *cl, char **args)
{
	if (runtime_show_servers_state(&cl->out, args[3]) == -1)
		rt_puts(&cl->out, "Can't find backend.\n");
	return RT_DONE;
}

/* The server named by "backend/server" (HAProxy's errors written when none), or NULL. */
static struct srv *
rt_server(struct rt_out *o, const char *arg)
{
	const struct config *cfg = relay.cfg;
	const char *slash = strchr(arg, '/');

	if (!slash || slash == arg || !slash[1]) {
		rt_puts(o, "Require 'backend/server'.\n");
		return NULL;
	}
	for (size_t b = 0; b < cfg->nbackends; b++) {
		const struct cfg_backend *be = &cfg->backends[b];
		if (strlen(be->name) != (size_t)(slash - arg) || strncmp(be->name, arg, (size_t)(slash - arg)) != 0)
			continue;
		for (size_t k = 0; k < be->nservers; k++)
			if (strcmp(be->servers[k].name, slash + 1) == 0) {
				struct srv *s = be->servers[k].rt ? be->servers[k].rt : servers_find(be->name, slash + 1);
				if (s)
					return s;
			}
		rt_puts(o, "No such server.\n");
		return NULL;
	}
	rt_puts(o, "No such backend.\n");
	return NULL;
}

/* HAProxy's server_parse_weight_change_request(): the new weight in *w, or its error text. */
static const char *
rt_parse_weight(const struct srv *s, const char *text, int *w)
{
	char *end;
	long v;

	if (!*text)
		return "Require <weight> or <weight%>.\n";
	v = strtol(text, &end, 10);
	if (end == text)
		return "Empty weight string empty or preceded by garbage";
	if (end[0] == '%' && end[1] == '\0') {
		if (v < 0)
			return "Relative weight must be positive.\n";
		v = (v > 25600 ? 25600 : v) * s->weight_cfg / 100;
		v = v > 256 ? 256 : v;
	} else if (v < 0 || v > 256)
		return "Absolute weight can only be between 0 and 256 inclusive.\n";
	else if (*end)
		return "Trailing garbage in weight string";
	*w = (int)v;
	return NULL;
}

/* Sets s's weight from text, or writes why not. */
static void
rt_weight(struct rt_out *o, struct srv *s, const char *text)
{
	int w;
	const char *err = rt_parse_weight(s, text, &w);

	if (err)
		rt_puts(o, err);
	else
		servers_set_weight(s, w);
}

/* Sets s's administrative state when it changes. */
static void
rt_admin(struct srv *s, enum srv_admin a)
{
	if (servers_admin(s) != a)
		servers_set_admin(s, a);
}

static enum rt_result
rt_enable(struct rt_client *cl, char **args)
{
	struct srv *s = rt_server(&cl->out, args[2]);

	/* HAProxy's `enable server` ends maintenance only; a drain stays. `disable` is maintenance. */
	if (s && (args[0][0] == 'd' || servers_admin(s) == SRV_MAINT))
		rt_admin(s, args[0][0] == 'd' ? SRV_MAINT : SRV_READY);
	return RT_DONE;
}

static enum rt_result
rt_get_weight(struct rt_client *cl, char **args)
{
	struct srv *s = rt_server(&cl->out, args[2]);

	if (s)
		rt_printf(&cl->out, "%d (initial %d)\n", servers_weight(s), s->weight_cfg);
	return RT_DONE;
}

static enum rt_result
rt_set_weight(struct rt_client *cl, char **args)
{
	struct srv *s = rt_server(&cl->out, args[2]);

	if (s)
		rt_weight(&cl->out, s, args[3]);
	return RT_DONE;
}

static enum rt_result
rt_set_server(struct rt_client *cl, char **args)
{
	static const char *const other[] = { "addr", "agent", "agent-addr", "agent-port", "agent-send",
	    "check-addr", "check-port", "fqdn", "health", "ssl", NULL };
	struct srv *s = rt_server(&cl->out, args[2]);

	if (!s)
		return RT_DONE;
	if (strcmp(args[3], "state") == 0) {
		int a = config_srv_admin_parse(args[4]);
		if (a < 0)
			rt_puts(&cl->out, "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n");
		else
			rt_admin(s, (enum srv_admin)a);
		return RT_DONE;
	}
	if (strcmp(args[3], "weight") == 0) {
		rt_weight(&cl->out, s, args[4]);
		return RT_DONE;
	}
	for (size_t i = 0; other[i]; i++)
		if (strcmp(args[3], other[i]) == 0) {
			rt_printf(&cl->out, "'set server <srv> %s' is not supported by exrelay.\n", other[i]);
			return RT_DONE;
		}
	rt_puts(&cl->out, "usage: set server <backend>/<server> addr | agent | agent-addr | agent-port | "
	    "agent-send | check-addr | check-port | fqdn | health | ssl | state | weight\n");
	return RT_DONE;
}

/* --- the command line ---------------------------------------------------------------------- */

/*
 * Splits cmd in place into words, as HAProxy's cli_parse_request(): spaces and tabs separate,
 * '\' escapes the next character (and is removed). args gets at most RT_ARGS_MAX words, then ""
 * up to RT_ARGS_MAX + 1 entries.
 */
static void
rt_words(char *cmd, char **args)
{
	static char empty[1] = "";
	size_t n = 0;
	char *p = cmd;

	while (n < RT_ARGS_MAX) {
		p += strspn(p, " \t");
		if (!*p)
			break;
		char *w = p, *q = p;
		while (*p && *p != ' ' && *p != '\t') {
			if (*p == '\\' && p[1])
				p++;
			*q++ = *p++;
		}
		if (*p)
			p++;
		*q = '\0';
		args[n++] = w;
	}
	while (n <= RT_ARGS_MAX)
		args[n++] = empty;
}

/* Runs one command and appends its answer and HAProxy's end of answer ("\n", or "\n> " in prompt mode). */
static enum rt_result
rt_command(struct rt_client *cl, char *cmd)
{
	char *args[RT_ARGS_MAX + 1];
	const struct rt_kw *kw;

	rt_words(cmd, args);
	if (!(kw = rt_find(args)))
		rt_usage(&cl->out, args);
	else if (kw->fn(cl, args) == RT_QUIT)
		return RT_QUIT;
	rt_puts(&cl->out, cl->prompt ? "\n> " : "\n");
	return RT_DONE;
}

/* Runs the commands of one line (without its "\n"), separated by ';' that '\' does not escape. */
static enum rt_result
rt_line(struct rt_client *cl, char *line)
{
	char *cmd = line;

	for (;;) {
		char *p = cmd;
		while (*p && *p != ';')
			p += p[0] == '\\' && p[1] ? 2 : 1;
		bool last = *p == '\0';
		*p = '\0';
		if (p > cmd && p[-1] == '\r')
			p[-1] = '\0';
		if (rt_command(cl, cmd) == RT_QUIT)
			return RT_QUIT;
		if (last)
			return RT_DONE;
		cmd = p + 1;
	}
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
		if (rt_line(cl, line) == RT_QUIT || !cl->prompt)
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
	fd = socket(cfg->admin_socket.bind_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    bind(fd, (const struct sockaddr *)&cfg->admin_socket.bind_addr, cfg->admin_socket.bind_len) == -1 ||
	    listen(fd, RT_CLIENTS_MAX) == -1) {
		log_error("admin socket %s: %s", cfg->admin_socket.bind, strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
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
	if ((fd = rt_open(path, mode, cfg->admin_socket.group)) == -1)
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
runtime_stop(void)
{
	rt_close_socket();
}
