/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime_cmd.c: the runtime API's command line, in HAProxy 2.6's syntax (commands separated by
 * unescaped ';', words by spaces or tabs, '\' escapes the next character), the command table,
 * HAProxy's help and its answer to an unknown command (with the closest commands), `prompt`,
 * `quit`, and the commands that change servers (`enable|disable server`, `get|set weight`,
 * `set server`). The answers' texts are HAProxy 2.6's (src/cli.c, src/server.c); the `show`
 * commands' answers are runtime_show.c's. runtime.c owns the socket and its clients.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay.h"
#include "runtime.h"
#include "runtime_int.h"
#include "servers.h"

#define RT_ARGS_MAX 64			/* HAProxy's MAX_CLI_ARGS */
#define RT_KW_WORDS 5			/* HAProxy's CLI_PREFIX_KW_NB */
#define RT_MAX_MATCHES 5		/* HAProxy's CLI_MAX_MATCHES */

/* --- the command table and HAProxy's help -------------------------------------------------- */

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
enum rt_result
runtime_cmd_line(struct rt_client *cl, char *line)
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
