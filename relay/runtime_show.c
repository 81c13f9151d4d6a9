/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * runtime_show.c: the answers of the runtime API's `show info`, `show stat` and `show servers
 * state`, in HAProxy 2.6's formats (doc/management.txt, "show stat" and "show servers state";
 * the CSV header is byte for byte what haproxy 2.6 prints, checked by t_runtime.py). exrelay's
 * listeners are the FRONTEND lines, its backends the proxies with their servers and a BACKEND
 * line. A field exrelay does not know stays empty, as HAProxy leaves fields that do not apply.
 */
#include "autoconf.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "relay.h"
#include "runtime.h"
#include "servers.h"

/* HAProxy 2.6's `show stat` columns, in order: X(index name, column name). */
#define STAT_COLUMNS(X) \
	X(PXNAME, "pxname") X(SVNAME, "svname") X(QCUR, "qcur") X(QMAX, "qmax") X(SCUR, "scur") \
	X(SMAX, "smax") X(SLIM, "slim") X(STOT, "stot") X(BIN, "bin") X(BOUT, "bout") X(DREQ, "dreq") \
	X(DRESP, "dresp") X(EREQ, "ereq") X(ECON, "econ") X(ERESP, "eresp") X(WRETR, "wretr") \
	X(WREDIS, "wredis") X(STATUS, "status") X(WEIGHT, "weight") X(ACT, "act") X(BCK, "bck") \
	X(CHKFAIL, "chkfail") X(CHKDOWN, "chkdown") X(LASTCHG, "lastchg") X(DOWNTIME, "downtime") \
	X(QLIMIT, "qlimit") X(PID, "pid") X(IID, "iid") X(SID, "sid") X(THROTTLE, "throttle") \
	X(LBTOT, "lbtot") X(TRACKED, "tracked") X(TYPE, "type") X(RATE, "rate") X(RATE_LIM, "rate_lim") \
	X(RATE_MAX, "rate_max") X(CHECK_STATUS, "check_status") X(CHECK_CODE, "check_code") \
	X(CHECK_DURATION, "check_duration") X(HRSP_1XX, "hrsp_1xx") X(HRSP_2XX, "hrsp_2xx") \
	X(HRSP_3XX, "hrsp_3xx") X(HRSP_4XX, "hrsp_4xx") X(HRSP_5XX, "hrsp_5xx") X(HRSP_OTHER, "hrsp_other") \
	X(HANAFAIL, "hanafail") X(REQ_RATE, "req_rate") X(REQ_RATE_MAX, "req_rate_max") X(REQ_TOT, "req_tot") \
	X(CLI_ABRT, "cli_abrt") X(SRV_ABRT, "srv_abrt") X(COMP_IN, "comp_in") X(COMP_OUT, "comp_out") \
	X(COMP_BYP, "comp_byp") X(COMP_RSP, "comp_rsp") X(LASTSESS, "lastsess") X(LAST_CHK, "last_chk") \
	X(LAST_AGT, "last_agt") X(QTIME, "qtime") X(CTIME, "ctime") X(RTIME, "rtime") X(TTIME, "ttime") \
	X(AGENT_STATUS, "agent_status") X(AGENT_CODE, "agent_code") X(AGENT_DURATION, "agent_duration") \
	X(CHECK_DESC, "check_desc") X(AGENT_DESC, "agent_desc") X(CHECK_RISE, "check_rise") \
	X(CHECK_FALL, "check_fall") X(CHECK_HEALTH, "check_health") X(AGENT_RISE, "agent_rise") \
	X(AGENT_FALL, "agent_fall") X(AGENT_HEALTH, "agent_health") X(ADDR, "addr") X(COOKIE, "cookie") \
	X(MODE, "mode") X(ALGO, "algo") X(CONN_RATE, "conn_rate") X(CONN_RATE_MAX, "conn_rate_max") \
	X(CONN_TOT, "conn_tot") X(INTERCEPTED, "intercepted") X(DCON, "dcon") X(DSES, "dses") \
	X(WREW, "wrew") X(CONNECT, "connect") X(REUSE, "reuse") X(CACHE_LOOKUPS, "cache_lookups") \
	X(CACHE_HITS, "cache_hits") X(SRV_ICUR, "srv_icur") X(SRC_ILIM, "src_ilim") \
	X(QTIME_MAX, "qtime_max") X(CTIME_MAX, "ctime_max") X(RTIME_MAX, "rtime_max") \
	X(TTIME_MAX, "ttime_max") X(EINT, "eint") X(IDLE_CONN_CUR, "idle_conn_cur") \
	X(SAFE_CONN_CUR, "safe_conn_cur") X(USED_CONN_CUR, "used_conn_cur") \
	X(NEED_CONN_EST, "need_conn_est") X(UWEIGHT, "uweight") X(AGG_SERVER_STATUS, "agg_server_status") \
	X(AGG_SERVER_CHECK_STATUS, "agg_server_check_status") X(AGG_CHECK_STATUS, "agg_check_status") \
	/* the statistics modules follow HAProxy's "-" column: SSL, HTTP/2, HTTP/1 */ \
	X(MODULES, "-") X(SSL_SESS, "ssl_sess") X(SSL_REUSED_SESS, "ssl_reused_sess") \
	X(SSL_FAILED_HANDSHAKE, "ssl_failed_handshake") X(H2_HEADERS_RCVD, "h2_headers_rcvd") \
	X(H2_DATA_RCVD, "h2_data_rcvd") X(H2_SETTINGS_RCVD, "h2_settings_rcvd") \
	X(H2_RST_STREAM_RCVD, "h2_rst_stream_rcvd") X(H2_GOAWAY_RCVD, "h2_goaway_rcvd") \
	X(H2_DETECTED_CONN_PROTOCOL_ERRORS, "h2_detected_conn_protocol_errors") \
	X(H2_DETECTED_STRM_PROTOCOL_ERRORS, "h2_detected_strm_protocol_errors") \
	X(H2_RST_STREAM_RESP, "h2_rst_stream_resp") X(H2_GOAWAY_RESP, "h2_goaway_resp") \
	X(H2_OPEN_CONNECTIONS, "h2_open_connections") X(H2_BACKEND_OPEN_STREAMS, "h2_backend_open_streams") \
	X(H2_TOTAL_CONNECTIONS, "h2_total_connections") X(H2_BACKEND_TOTAL_STREAMS, "h2_backend_total_streams") \
	X(H1_OPEN_CONNECTIONS, "h1_open_connections") X(H1_OPEN_STREAMS, "h1_open_streams") \
	X(H1_TOTAL_CONNECTIONS, "h1_total_connections") X(H1_TOTAL_STREAMS, "h1_total_streams") \
	X(H1_BYTES_IN, "h1_bytes_in") X(H1_BYTES_OUT, "h1_bytes_out") \
	X(H1_SPLICED_BYTES_IN, "h1_spliced_bytes_in") X(H1_SPLICED_BYTES_OUT, "h1_spliced_bytes_out")

enum stat_col {
#define X(id, name) ST_##id,
	STAT_COLUMNS(X)
#undef X
	ST_NCOLS
};

static const char *const stat_names[] = {
#define X(id, name) name,
	STAT_COLUMNS(X)
#undef X
};

/* One `show stat` line: a value per column, "" when unknown. */
struct stat_row {
	char v[ST_NCOLS][112];
};

static void __attribute__((format(printf, 3, 4)))
row_set(struct stat_row *r, enum stat_col c, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->v[c], sizeof(r->v[c]), fmt, ap);
	va_end(ap);
}

/* Appends the row as one CSV line: every value followed by a comma, as HAProxy does. */
static void
row_emit(struct rt_out *o, const struct stat_row *r)
{
	for (int c = 0; c < ST_NCOLS; c++) {
		/* CSV: a value never carries the separator or a line break. */
		char v[sizeof(r->v[0])];
		snprintf(v, sizeof(v), "%s", r->v[c]);
		for (char *p = v; *p; p++)
			if (*p == ',' || *p == '\n' || *p == '\r')
				*p = ' ';
		rt_printf(o, "%s,", v);
	}
	rt_puts(o, "\n");
}

static double
wall_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The run-time entry of a configured server (bound by servers_bind), or NULL. */
static struct srv *
srv_of(const struct cfg_backend *b, const struct cfg_server *cs)
{
	return cs->rt ? cs->rt : servers_find(b->name, cs->name);
}

/* The health shown for s: the first protocol that is down, else the first one. */
static const struct srv_health *
shown_health(const struct srv *s)
{
	for (int p = 0; p < s->nprotos; p++)
		if (!__atomic_load_n(&s->health[p].up, __ATOMIC_RELAXED))
			return &s->health[p];
	return &s->health[0];
}

/*
 * HAProxy's check status words and their numbers in `show servers state` (enum
 * healthcheck_status of HAProxy 2.6); a status of another kind ("passive connect") is none.
 */
static const struct { const char *word; int num; } check_words[] = {
	{ "UNK", 0 }, { "INI", 1 }, { "SOCKERR", 5 }, { "L4OK", 6 }, { "L4TOUT", 7 }, { "L4CON", 8 },
	{ "L6OK", 9 }, { "L6TOUT", 10 }, { "L6RSP", 11 }, { "L7TOUT", 12 }, { "L7RSP", 13 },
	{ "L7OK", 15 }, { "L7OKC", 16 }, { "L7STS", 17 },
};

/* Splits a last_status ("L7STS 503") into HAProxy's word and code; the word's number, or -1. */
static int
check_word(const char *status, char *word, size_t wcap, int *code)
{
	size_t n = strcspn(status, " ");

	*code = n < strlen(status) ? atoi(status + n + 1) : 0;
	for (size_t i = 0; i < sizeof(check_words) / sizeof(check_words[0]); i++)
		if (strlen(check_words[i].word) == n && strncmp(check_words[i].word, status, n) == 0) {
			snprintf(word, wcap, "%s", check_words[i].word);
			return check_words[i].num;
		}
	word[0] = '\0';
	return -1;
}

/* The last change of s (admin state or health), wall clock. */
static double
srv_last_change(const struct srv *s)
{
	double t = s->admin_change;

	for (int p = 0; p < s->nprotos; p++)
		if (s->health[p].last_change > t)
			t = s->health[p].last_change;
	return t;
}

/* True when s takes new requests: ready, a weight, and up (or not checked). */
static bool
srv_usable(const struct srv *s)
{
	return servers_admin(s) == SRV_READY && servers_weight(s) > 0 && servers_up(s, -1);
}

static int64_t
get64(const int64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

/* The line of server s (sid: its position in the backend, from 1). */
static void
stat_server(struct rt_out *o, const struct cfg_backend *b, const struct srv *s, int iid, int sid)
{
	static struct stat_row r;
	char status[32], word[16];
	int code;

	memset(&r, 0, sizeof(r));
	servers_status(s, status, sizeof(status));
	row_set(&r, ST_PXNAME, "%s", b->name);
	row_set(&r, ST_SVNAME, "%s", s->name);
	row_set(&r, ST_QCUR, "0");
	row_set(&r, ST_SCUR, "%" PRId64, get64(&s->conns_active));
	row_set(&r, ST_STOT, "%" PRId64, get64(&s->conns_total));
	row_set(&r, ST_ECON, "%" PRId64, get64(&s->connect_errors));
	row_set(&r, ST_STATUS, "%s", status);
	row_set(&r, ST_WEIGHT, "%d", servers_weight(s));
	row_set(&r, ST_ACT, "1");
	row_set(&r, ST_BCK, "0");
	row_set(&r, ST_LASTCHG, "%.0f", wall_now() - srv_last_change(s));
	row_set(&r, ST_PID, "1");
	row_set(&r, ST_IID, "%d", iid);
	row_set(&r, ST_SID, "%d", sid);
	row_set(&r, ST_TYPE, "2");
	row_set(&r, ST_HRSP_5XX, "%" PRId64, get64(&s->resp_5xx));
	if (s->checked) {
		const struct srv_health *h = shown_health(s);
		int num = check_word(h->last_status, word, sizeof(word), &code);
		row_set(&r, ST_CHKFAIL, "%" PRId64, get64(&s->checks_failed));
		row_set(&r, ST_CHECK_STATUS, "%s", word);
		if (num > 1 && code > 0)
			row_set(&r, ST_CHECK_CODE, "%d", code);
		if (num > 1)
			row_set(&r, ST_CHECK_DURATION, "%.0f", h->last_duration * 1000.0);
		row_set(&r, ST_CHECK_RISE, "%d", b->check.rise);
		row_set(&r, ST_CHECK_FALL, "%d", b->check.fall);
		row_set(&r, ST_CHECK_HEALTH, "%d", servers_up(s, -1) ? b->check.rise + b->check.fall - 1 : 0);
	}
	row_set(&r, ST_ADDR, "%s", s->addr);
	row_set(&r, ST_MODE, "http");
	row_set(&r, ST_UWEIGHT, "%d", servers_weight(s));
	row_set(&r, ST_MODULES, "-");
	row_emit(o, &r);
}

/* The servers of backend b, then its BACKEND line (iid: its proxy number). */
static void
stat_backend(struct rt_out *o, const struct cfg_backend *b, int iid)
{
	static struct stat_row r;
	int64_t scur = 0, stot = 0, econ = 0, r5xx = 0;
	int weight = 0, act = 0;
	double last = 0;

	for (size_t k = 0; k < b->nservers; k++) {
		const struct srv *s = srv_of(b, &b->servers[k]);
		if (!s)
			continue;
		stat_server(o, b, s, iid, (int)k + 1);
		scur += get64(&s->conns_active);
		stot += get64(&s->conns_total);
		econ += get64(&s->connect_errors);
		r5xx += get64(&s->resp_5xx);
		if (srv_usable(s)) {
			weight += servers_weight(s);
			act++;
		}
		if (srv_last_change(s) > last)
			last = srv_last_change(s);
	}
	memset(&r, 0, sizeof(r));
	row_set(&r, ST_PXNAME, "%s", b->name);
	row_set(&r, ST_SVNAME, "BACKEND");
	row_set(&r, ST_QCUR, "0");
	row_set(&r, ST_SCUR, "%" PRId64, scur);
	row_set(&r, ST_STOT, "%" PRId64, stot);
	row_set(&r, ST_ECON, "%" PRId64, econ);
	row_set(&r, ST_STATUS, "%s", act > 0 ? "UP" : "DOWN");
	row_set(&r, ST_WEIGHT, "%d", weight);
	row_set(&r, ST_ACT, "%d", act);
	row_set(&r, ST_BCK, "0");
	if (last > 0)
		row_set(&r, ST_LASTCHG, "%.0f", wall_now() - last);
	row_set(&r, ST_PID, "1");
	row_set(&r, ST_IID, "%d", iid);
	row_set(&r, ST_SID, "0");
	row_set(&r, ST_TYPE, "1");
	row_set(&r, ST_HRSP_5XX, "%" PRId64, r5xx);
	row_set(&r, ST_MODE, "http");
	row_set(&r, ST_UWEIGHT, "%d", weight);
	row_set(&r, ST_MODULES, "-");
	row_emit(o, &r);
}

void
runtime_show_stat(struct rt_out *o)
{
	static struct stat_row r;
	const struct config *cfg = relay.cfg;
	int iid = 0;

	rt_puts(o, "# ");
	for (int c = 0; c < ST_NCOLS; c++)
		rt_printf(o, "%s,", stat_names[c]);
	rt_puts(o, "\n");
	for (size_t i = 0; i < cfg->nlisteners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		memset(&r, 0, sizeof(r));
		row_set(&r, ST_PXNAME, "%s", l->name);
		row_set(&r, ST_SVNAME, "FRONTEND");
		row_set(&r, ST_SLIM, "%d", cfg->max_connections);
		row_set(&r, ST_STATUS, "%s", relay_draining() && l->role == ROLE_TRAFFIC ? "STOP" : "OPEN");
		row_set(&r, ST_PID, "1");
		row_set(&r, ST_IID, "%d", ++iid);
		row_set(&r, ST_SID, "0");
		row_set(&r, ST_TYPE, "0");
		row_set(&r, ST_MODE, "%s", l->role == ROLE_AGENT ? "tcp" : "http");
		row_set(&r, ST_MODULES, "-");
		row_emit(o, &r);
	}
	for (size_t b = 0; b < cfg->nbackends; b++)
		stat_backend(o, &cfg->backends[b], ++iid);
}

/* Splits "host:port" (IPv6 in brackets) into host and port; port "0" when absent. */
static void
split_addr(const char *text, char *host, size_t hcap, char *port, size_t pcap)
{
	const char *colon = strrchr(text, ':');
	const char *h = text;
	size_t n = colon ? (size_t)(colon - text) : strlen(text);

	if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
		h++;
		n -= 2;
	}
	snprintf(host, hcap, "%.*s", (int)n, h);
	snprintf(port, pcap, "%s", colon ? colon + 1 : "0");
}

/* One `show servers state` line of server s (HAProxy's format version 1). */
static void
state_line(struct rt_out *o, const struct cfg_backend *b, int be_id, const struct srv *s, int srv_id)
{
	enum srv_admin a = servers_admin(s);
	bool runtime = __atomic_load_n(&s->admin_rt, __ATOMIC_RELAXED) >= 0;
	char host[96], port[16], word[16];
	int code, num = 1, result = 0, health = 2, chk_state = 0;

	/* srv_admin_state: HAProxy's flags, FMAINT 0x01, CMAINT 0x04 (with FMAINT), FDRAIN 0x08. */
	int admin = a == SRV_MAINT ? (runtime ? 0x01 : 0x05) : a == SRV_DRAIN ? 0x08 : 0;
	/* srv_op_state: 0 stopped (down or in maintenance), 2 running. */
	int op = a == SRV_MAINT || !servers_up(s, -1) ? 0 : 2;
	if (s->checked) {
		num = check_word(shown_health(s)->last_status, word, sizeof(word), &code);
		if (num < 0)
			num = 0;
		result = num <= 1 ? 0 : (strstr(word, "OK") ? 3 : 2);
		health = servers_up(s, -1) ? b->check.rise + b->check.fall - 1 : 0;
		chk_state = 6;	/* CHK_ST_CONFIGURED | CHK_ST_ENABLED */
	}
	split_addr(s->addr, host, sizeof(host), port, sizeof(port));
	rt_printf(o, "%d %s %d %s %s %d %d %d %d %.0f %d %d %d %d 0 0 0 - %s - %d 0 - - 0\n",
	    be_id, b->name, srv_id, s->name, host, op, admin, servers_weight(s), s->weight_cfg,
	    wall_now() - srv_last_change(s), num, result, health, chk_state, port, b->tls ? 1 : 0);
}

int
runtime_show_servers_state(struct rt_out *o, const char *backend)
{
	const struct config *cfg = relay.cfg;
	bool found = !backend || !*backend;

	for (size_t b = 0; b < cfg->nbackends && !found; b++)
		found = strcmp(cfg->backends[b].name, backend) == 0;
	if (!found)
		return -1;
	rt_puts(o, "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
	    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
	    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
	    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n");
	for (size_t b = 0; b < cfg->nbackends; b++) {
		const struct cfg_backend *be = &cfg->backends[b];
		if (backend && *backend && strcmp(be->name, backend) != 0)
			continue;
		for (size_t k = 0; k < be->nservers; k++) {
			const struct srv *s = srv_of(be, &be->servers[k]);
			if (s)	/* be_id: the proxy number of `show stat` (listeners first) */
				state_line(o, be, (int)(cfg->nlisteners + b + 1), s, (int)k + 1);
		}
	}
	return 0;
}

/* --- show info ---------------------------------------------------------------------------- */

static double start_wall;
static bool started;

void
runtime_mark_start(void)
{
	if (!started)
		start_wall = wall_now();
	started = true;
}

void
runtime_show_info(struct rt_out *o)
{
	const struct config *cfg = relay.cfg;
	long up = (long)(wall_now() - start_wall);
	struct rlimit rl;
	char host[256] = "";

	gethostname(host, sizeof(host) - 1);
	rt_printf(o, "Name: exrelay\nVersion: %s\nRelease_date: \n", PACKAGE_VERSION);
	rt_printf(o, "Nbthread: %d\nNbproc: 1\nProcess_num: 1\nPid: %d\n", relay.nworkers, (int)getpid());
	rt_printf(o, "Uptime: %ldd %ldh%02ldm%02lds\nUptime_sec: %ld\n", up / 86400, up / 3600 % 24,
	    up / 60 % 60, up % 60, up);
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		rt_printf(o, "Ulimit-n: %llu\n", (unsigned long long)rl.rlim_cur);
	rt_printf(o, "Maxconn: %ld\nHard_maxconn: %d\nCurrConns: %ld\n",
	    __atomic_load_n(&relay.max_conns, __ATOMIC_RELAXED), cfg->max_connections,
	    __atomic_load_n(&relay.nconns, __ATOMIC_RELAXED));
	rt_printf(o, "node: %s\nStopping: %d\nListeners: %zu\nStart_time_sec: %.0f\n", host,
	    relay_health_draining() ? 1 : 0, cfg->nlisteners, start_wall);
}
