/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics.c: the counters behind /metrics. Each worker counts into its own block, with no
 * lock and no atomic read-modify-write on the hot path: only the owning thread writes a
 * block (plain relaxed loads and stores), and a reader sums the blocks of all workers when
 * /metrics is read. A name slot is published with a release store of the slot count, so a
 * reader that sees the count sees the name. Histograms count per bucket (not cumulative) in
 * the owner's block; the reader sums and accumulates them, so a scrape's _count always equals
 * its +Inf bucket.
 */
#include "autoconf.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "guard.h"
#include "metrics.h"

#define MAX_KEYS 256

struct named {
	char name[64];		/* listener, route or backend */
	char kind[24];		/* backend error kind; "" elsewhere */
	int code;		/* status code (requests) */
	int64_t v[3];		/* the counters of this key (V_*) */
};

enum { V_ACTIVE, V_TOTAL, V_PP_ERRORS };	/* listeners; the others count in v[0] */
enum { V_TLS_FULL, V_TLS_RESUMED, V_TLS_FAILED };	/* TLS handshakes per listener */
enum { T_LISTENERS, T_REQUESTS, T_BERRORS, T_FILTERS, T_TLS, T_COUNT };
enum { S_BYTES_IN, S_BYTES_OUT, S_RPC_IN, S_RPC_OUT, S_SPLICE_BYTES, S_SPLICE_PIPES, S_SPLICE_FALLBACKS,
    S_COUNT };

struct table {
	struct named e[MAX_KEYS];
	int n;			/* slots in use; written with release by the owner */
};

#define HIST_KEYS 64		/* routes per histogram */
#define HIST_MAX 12		/* finite buckets, at most */

static const double req_bounds[] = METRICS_REQ_BUCKETS, rpc_bounds[] = METRICS_RPC_BUCKETS;
#define NREQ ((int)(sizeof(req_bounds) / sizeof(req_bounds[0])))
#define NRPC ((int)(sizeof(rpc_bounds) / sizeof(rpc_bounds[0])))
_Static_assert(NREQ <= HIST_MAX && NRPC <= HIST_MAX, "HIST_MAX buckets at most");

/* One histogram series: observations per bucket (b[nbounds] is +Inf) and their sum. */
struct hist {
	char name[64];		/* route, or method (RPC channels) */
	int64_t b[HIST_MAX + 1];
	int64_t sum_ns;
};

struct htable {
	struct hist e[HIST_KEYS];
	int n;			/* as struct table's */
};

enum { H_FIRST_BYTE, H_DURATION, H_RPC, H_COUNT };

struct block {
	struct table t[T_COUNT];	/* per listener, per route and code, per backend and kind */
	int64_t s[S_COUNT];
	struct htable h[H_COUNT];	/* per route (H_RPC: per method) */
};

static struct block *blocks;
static int nblocks;
static __thread struct block *mine;

/* Allocates one block per worker plus one for the main thread; 0 or -1. */
int
metrics_init(int nworkers)
{
	AZ(blocks);
	blocks = calloc((size_t)nworkers + 1, sizeof(*blocks));
	if (!blocks)
		return -1;
	nblocks = nworkers + 1;
	return 0;
}

/* The calling thread counts into block id (a worker's id; the main thread uses none). */
void
metrics_attach(int id)
{
	ASSERT(id >= 0 && id + 1 < nblocks);
	mine = &blocks[id + 1];
}

void
metrics_free(void)
{
	free(blocks);
	blocks = NULL;
	nblocks = 0;
}

static struct block *
block(void)
{
	return mine ? mine : &blocks[0];
}

static void
add(int64_t *v, int64_t d)
{
	__atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

static int64_t
get(const int64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

static bool
key_eq(const struct named *e, const char *name, const char *kind, int code)
{
	return e->code == code && strcmp(e->name, name) == 0 && strcmp(e->kind, kind) == 0;
}

/* The owner's slot for a key, created on first use; the last slot when the table is full. */
static struct named *
slot(struct table *t, const char *name, const char *kind, int code)
{
	int n = t->n;

	for (int i = 0; i < n; i++)
		if (key_eq(&t->e[i], name, kind, code))
			return &t->e[i];
	if (n == MAX_KEYS)
		return &t->e[MAX_KEYS - 1];
	struct named *e = &t->e[n];
	snprintf(e->name, sizeof(e->name), "%s", name);
	snprintf(e->kind, sizeof(e->kind), "%s", kind);
	e->code = code;
	__atomic_store_n(&t->n, n + 1, __ATOMIC_RELEASE);
	return e;
}

void
metrics_conn_open(const char *listener)
{
	struct named *e = slot(&block()->t[T_LISTENERS], listener, "", 0);

	add(&e->v[V_ACTIVE], 1);
	add(&e->v[V_TOTAL], 1);
}

void
metrics_conn_close(const char *listener)
{
	add(&slot(&block()->t[T_LISTENERS], listener, "", 0)->v[V_ACTIVE], -1);
}

void
metrics_proxy_error(const char *listener)
{
	add(&slot(&block()->t[T_LISTENERS], listener, "", 0)->v[V_PP_ERRORS], 1);
}

void
metrics_request(const char *route, int code)
{
	add(&slot(&block()->t[T_REQUESTS], route, "", code)->v[0], 1);
}

void
metrics_bytes(uint64_t in, uint64_t out)
{
	add(&block()->s[S_BYTES_IN], (int64_t)in);
	add(&block()->s[S_BYTES_OUT], (int64_t)out);
}

void
metrics_rpc_channel(const char *method, int delta)
{
	add(&block()->s[strcmp(method, "RPC_IN_DATA") == 0 ? S_RPC_IN : S_RPC_OUT], delta);
}

/* Bytes written by splice(2) (splice.c). */
void
metrics_splice_bytes(uint64_t n)
{
	add(&block()->s[S_SPLICE_BYTES], (int64_t)n);
}

/* Splice pipes opened (+1) or closed (-1). */
void
metrics_splice_pipes(int delta)
{
	add(&block()->s[S_SPLICE_PIPES], delta);
}

/* A read that could have been spliced went through the buffers (pool empty, refused). */
void
metrics_splice_fallback(void)
{
	add(&block()->s[S_SPLICE_FALLBACKS], 1);
}

void
metrics_filter_blocked(const char *rule)
{
	add(&slot(&block()->t[T_FILTERS], rule, "", 0)->v[0], 1);
}

void
metrics_backend_error(const char *backend, const char *kind)
{
	add(&slot(&block()->t[T_BERRORS], backend, kind, 0)->v[0], 1);
}

/* A client TLS handshake on listener ended: failed (!ok), resumed, or full. */
void
metrics_tls_handshake(const char *listener, bool ok, bool resumed)
{
	add(&slot(&block()->t[T_TLS], listener, "", 0)->v[!ok ? V_TLS_FAILED : resumed ? V_TLS_RESUMED : V_TLS_FULL], 1);
}

/* The owner's histogram series for name, created on first use (the last when full). */
static struct hist *
hslot(struct htable *t, const char *name)
{
	int n = t->n;

	for (int i = 0; i < n; i++)
		if (strcmp(t->e[i].name, name) == 0)
			return &t->e[i];
	if (n == HIST_KEYS)
		return &t->e[HIST_KEYS - 1];
	struct hist *e = &t->e[n];
	snprintf(e->name, sizeof(e->name), "%s", name);
	__atomic_store_n(&t->n, n + 1, __ATOMIC_RELEASE);
	return e;
}

/* Counts one observation of seconds (negative: 0, the wall clock stepped back) into e. */
static void
observe(struct hist *e, const double *bounds, int nb, double seconds)
{
	int i = 0;

	if (!(seconds > 0))
		seconds = 0;
	while (i < nb && seconds > bounds[i])
		i++;
	add(&e->b[i], 1);
	add(&e->sum_ns, seconds > 9e9 ? (int64_t)9e18 : (int64_t)(seconds * 1e9 + 0.5));
}

static bool
is_rpc(const char *method)
{
	return strcmp(method, "RPC_IN_DATA") == 0 || strcmp(method, "RPC_OUT_DATA") == 0;
}

/*
 * The final response head of a request on route arrived, seconds after its head began. RPC
 * channels are left out: RPC_IN_DATA's answer comes when the channel ends.
 */
void
metrics_first_byte(const char *route, const char *method, double seconds)
{
	if (!is_rpc(method))
		observe(hslot(&block()->h[H_FIRST_BYTE], route), req_bounds, NREQ, seconds);
}

/*
 * A request routed to a backend ended, seconds after its head began. RPC_IN_DATA and
 * RPC_OUT_DATA (channels that last hours) go to their own histogram, per method.
 */
void
metrics_request_time(const char *route, const char *method, double seconds)
{
	if (is_rpc(method))
		observe(hslot(&block()->h[H_RPC], method), rpc_bounds, NRPC, seconds);
	else
		observe(hslot(&block()->h[H_DURATION], route), req_bounds, NREQ, seconds);
}

/* Adds table `which` of every block into sum (keys in order of first appearance). */
static void
sum_table(struct table *sum, int which)
{
	memset(sum, 0, sizeof(*sum));
	for (int k = 0; k < nblocks; k++) {
		const struct table *t = &blocks[k].t[which];
		int n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
		for (int i = 0; i < n; i++) {
			struct named *s = slot(sum, t->e[i].name, t->e[i].kind, t->e[i].code);
			for (int j = 0; j < 3; j++)
				s->v[j] += get(&t->e[i].v[j]);
		}
	}
}

/* Adds histogram table `which` of every block into sum. */
static void
sum_hist(struct htable *sum, int which)
{
	memset(sum, 0, sizeof(*sum));
	for (int k = 0; k < nblocks; k++) {
		const struct htable *t = &blocks[k].h[which];
		int n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
		for (int i = 0; i < n; i++) {
			struct hist *s = hslot(sum, t->e[i].name);
			for (int j = 0; j <= HIST_MAX; j++)
				s->b[j] += get(&t->e[i].b[j]);
			s->sum_ns += get(&t->e[i].sum_ns);
		}
	}
}

static int64_t
sum_scalar(int which)
{
	int64_t s = 0;

	for (int k = 0; k < nblocks; k++)
		s += get(&blocks[k].s[which]);
	return s;
}

void
metrics_printf(struct metrics_out *o, const char *fmt, ...)
{
	va_list ap;

	if (o->cut)
		return;
	va_start(ap, fmt);
	int k = vsnprintf(o->p + o->n, o->cap - o->n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= o->cap - o->n) {
		o->cut = true;
		if (o->n < o->cap)
			o->p[o->n] = '\0';
		return;
	}
	o->n += (size_t)k;
}

const char *
metrics_label(char *tmp, size_t cap, const char *v)
{
	size_t n = 0;

	if (!strpbrk(v, "\\\"\n"))
		return v;
	ASSERT(cap > 0);
	for (; *v && n + 3 <= cap; v++) {
		if (*v == '\\' || *v == '"' || *v == '\n')
			tmp[n++] = '\\';
		tmp[n++] = *v == '\n' ? 'n' : *v;
	}
	tmp[n] = '\0';
	return tmp;
}

static void
family(struct metrics_out *o, const char *metric, const char *type, const char *help)
{
	metrics_printf(o, "# HELP %s %s\n# TYPE %s %s\n", metric, help, metric, type);
}

/* One labelled series per key of t: `name{label="key"} value`. */
static void
put_series(struct metrics_out *o, const char *help, const char *metric, const char *label,
    const struct table *t, int field)
{
	char esc[160];

	family(o, metric, strstr(metric, "_total") ? "counter" : "gauge", help);
	for (int i = 0; i < t->n; i++)
		metrics_printf(o, "%s{%s=\"%s\"} %lld\n", metric, label, metrics_label(esc, sizeof(esc), t->e[i].name),
		    (long long)t->e[i].v[field]);
}

/* The TLS handshakes per listener (those with a TLS listener only). */
static void
put_tls(struct metrics_out *o, const struct table *t)
{
	static const char *const kinds[] = { "full", "resumed", "failed" };
	char esc[160];

	family(o, "exrelay_tls_handshakes_total", "counter",
	    "Client TLS handshakes ended, per listener and kind (full, resumed, failed).");
	for (int i = 0; i < t->n; i++)
		for (int k = 0; k < 3; k++)
			metrics_printf(o, "exrelay_tls_handshakes_total{listener=\"%s\",kind=\"%s\"} %lld\n",
			    metrics_label(esc, sizeof(esc), t->e[i].name), kinds[k], (long long)t->e[i].v[k]);
}

/* A histogram family: cumulative buckets, _sum and _count per key of t. */
static void
put_hist(struct metrics_out *o, const char *metric, const char *label, const char *help,
    const struct htable *t, const double *bounds, int nb)
{
	char esc[160];

	family(o, metric, "histogram", help);
	for (int i = 0; i < t->n; i++) {
		const char *v = metrics_label(esc, sizeof(esc), t->e[i].name);
		int64_t c = 0;
		for (int j = 0; j < nb; j++) {
			c += t->e[i].b[j];
			metrics_printf(o, "%s_bucket{%s=\"%s\",le=\"%g\"} %lld\n", metric, label, v, bounds[j], (long long)c);
		}
		c += t->e[i].b[nb];
		metrics_printf(o, "%s_bucket{%s=\"%s\",le=\"+Inf\"} %lld\n%s_sum{%s=\"%s\"} %.6f\n"
		    "%s_count{%s=\"%s\"} %lld\n", metric, label, v, (long long)c, metric, label, v,
		    (double)t->e[i].sum_ns / 1e9, metric, label, v, (long long)c);
	}
}

/* The authentication guard's counters (shared by all workers, kept by guard.c). */
static void
put_guard(struct metrics_out *o)
{
	metrics_printf(o, "# HELP exrelay_auth_failures_total Logins the backend refused (401 to credentials).\n"
	    "# TYPE exrelay_auth_failures_total counter\nexrelay_auth_failures_total %llu\n"
	    "# HELP exrelay_auth_successes_total Logins the backend accepted.\n"
	    "# TYPE exrelay_auth_successes_total counter\nexrelay_auth_successes_total %llu\n",
	    (unsigned long long)guard_count(GUARD_FAILURES), (unsigned long long)guard_count(GUARD_SUCCESSES));
	metrics_printf(o, "# HELP exrelay_auth_blocks_total Blocks started by the authentication guard.\n"
	    "# TYPE exrelay_auth_blocks_total counter\n"
	    "exrelay_auth_blocks_total{scope=\"user\"} %llu\nexrelay_auth_blocks_total{scope=\"client\"} %llu\n",
	    (unsigned long long)guard_count(GUARD_BLOCKS_USER), (unsigned long long)guard_count(GUARD_BLOCKS_CLIENT));
	metrics_printf(o, "# HELP exrelay_auth_blocked_requests_total Logins answered by exrelay while blocked.\n"
	    "# TYPE exrelay_auth_blocked_requests_total counter\n"
	    "exrelay_auth_blocked_requests_total{scope=\"user\"} %llu\n"
	    "exrelay_auth_blocked_requests_total{scope=\"client\"} %llu\n",
	    (unsigned long long)guard_count(GUARD_BLOCKED_USER), (unsigned long long)guard_count(GUARD_BLOCKED_CLIENT));
}

/* The histograms per route, and the RPC channels' per method. */
static void
put_hists(struct metrics_out *o)
{
	static __thread struct htable h;

	sum_hist(&h, H_FIRST_BYTE);
	put_hist(o, "exrelay_request_first_byte_seconds", "route", "Time from a request's head to the "
	    "backend's final response head, per route (RPC channels left out).", &h, req_bounds, NREQ);
	sum_hist(&h, H_DURATION);
	put_hist(o, "exrelay_request_duration_seconds", "route", "Time from a request's head to the end "
	    "of its response, per route, for requests routed to a backend (RPC channels left out).", &h,
	    req_bounds, NREQ);
	sum_hist(&h, H_RPC);
	put_hist(o, "exrelay_rpc_channel_duration_seconds", "method", "How long RPC over HTTP channels "
	    "(RPC_IN_DATA, RPC_OUT_DATA requests) lasted, per method.", &h, rpc_bounds, NRPC);
}

void
metrics_write(struct metrics_out *o)
{
	static __thread struct table l, r, e, f, t;
	char esc[160], esc2[64];

	sum_table(&l, T_LISTENERS);
	sum_table(&r, T_REQUESTS);
	sum_table(&e, T_BERRORS);
	sum_table(&f, T_FILTERS);
	sum_table(&t, T_TLS);
	put_series(o, "Client connections open, per listener.", "exrelay_connections_active", "listener", &l, V_ACTIVE);
	put_series(o, "Client connections accepted, per listener.", "exrelay_connections_total", "listener",
	    &l, V_TOTAL);
	put_series(o, "Connections closed for a missing or bad PROXY header.", "exrelay_proxy_header_errors_total",
	    "listener", &l, V_PP_ERRORS);
	family(o, "exrelay_requests_total", "counter", "Requests answered, per route and status code.");
	for (int i = 0; i < r.n; i++)
		metrics_printf(o, "exrelay_requests_total{route=\"%s\",code=\"%d\"} %lld\n",
		    metrics_label(esc, sizeof(esc), r.e[i].name), r.e[i].code, (long long)r.e[i].v[0]);
	metrics_printf(o, "# HELP exrelay_bytes_total Bytes received from (in) and sent to (out) clients, counted at close.\n"
	    "# TYPE exrelay_bytes_total counter\n"
	    "exrelay_bytes_total{direction=\"in\"} %lld\nexrelay_bytes_total{direction=\"out\"} %lld\n",
	    (long long)sum_scalar(S_BYTES_IN), (long long)sum_scalar(S_BYTES_OUT));
	metrics_printf(o, "# HELP exrelay_rpc_channels_active RPC over HTTP channels open.\n"
	    "# TYPE exrelay_rpc_channels_active gauge\n"
	    "exrelay_rpc_channels_active{method=\"RPC_IN_DATA\"} %lld\n"
	    "exrelay_rpc_channels_active{method=\"RPC_OUT_DATA\"} %lld\n",
	    (long long)sum_scalar(S_RPC_IN), (long long)sum_scalar(S_RPC_OUT));
	metrics_printf(o, "# HELP exrelay_splice_bytes_total Body and tunnel bytes relayed with splice(2), without a copy.\n"
	    "# TYPE exrelay_splice_bytes_total counter\nexrelay_splice_bytes_total %lld\n"
	    "# HELP exrelay_splice_pipes Pipes open for splice(2): held by transfers and pooled.\n"
	    "# TYPE exrelay_splice_pipes gauge\nexrelay_splice_pipes %lld\n"
	    "# HELP exrelay_splice_fallbacks_total Reads that could have been spliced but went through buffers.\n"
	    "# TYPE exrelay_splice_fallbacks_total counter\nexrelay_splice_fallbacks_total %lld\n",
	    (long long)sum_scalar(S_SPLICE_BYTES), (long long)sum_scalar(S_SPLICE_PIPES),
	    (long long)sum_scalar(S_SPLICE_FALLBACKS));
	family(o, "exrelay_backend_errors_total", "counter", "Backend failures, per backend and kind.");
	for (int i = 0; i < e.n; i++)
		metrics_printf(o, "exrelay_backend_errors_total{backend=\"%s\",kind=\"%s\"} %lld\n",
		    metrics_label(esc, sizeof(esc), e.e[i].name), metrics_label(esc2, sizeof(esc2), e.e[i].kind),
		    (long long)e.e[i].v[0]);
	put_series(o, "Requests refused by a filter, a rule or allow_from, per rule.", "exrelay_filter_blocked_total",
	    "rule", &f, 0);
	put_guard(o);
	put_tls(o, &t);
	put_hists(o);
}

size_t
metrics_format(char *out, size_t cap)
{
	struct metrics_out o = { out, cap, 0, false };

	metrics_write(&o);
	return o.n;
}

/* The Extended Protection family: whether each TLS backend server binds like exrelay's listener. */
size_t
metrics_format_cert_match(char *out, size_t cap, const struct metrics_cert_match *m, size_t count)
{
	struct metrics_out o = { out, cap, 0, false };
	char b[160], s[160];

	metrics_printf(&o, "# HELP exrelay_backend_cert_match 1 when the server's certificate binds like the one "
	    "exrelay's listener presents for it (Extended Protection can work), else 0.\n"
	    "# TYPE exrelay_backend_cert_match gauge\n");
	for (size_t i = 0; i < count; i++)
		metrics_printf(&o, "exrelay_backend_cert_match{backend=\"%s\",server=\"%s\"} %d\n",
		    metrics_label(b, sizeof(b), m[i].backend), metrics_label(s, sizeof(s), m[i].server), m[i].match);
	return o.n;
}
