/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics.c: the counters behind /metrics. Each worker counts into its own block, with no
 * lock and no atomic read-modify-write on the hot path: only the owning thread writes a
 * block (plain relaxed loads and stores), and a reader sums the blocks of all workers when
 * /metrics is read. A name slot is published with a release store of the slot count, so a
 * reader that sees the count sees the name.
 */
#include "autoconf.h"

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
enum { T_LISTENERS, T_REQUESTS, T_BERRORS, T_FILTERS, T_COUNT };
enum { S_BYTES_IN, S_BYTES_OUT, S_RPC_IN, S_RPC_OUT, S_COUNT };

struct table {
	struct named e[MAX_KEYS];
	int n;			/* slots in use; written with release by the owner */
};

struct block {
	struct table t[T_COUNT];	/* per listener, per route and code, per backend and kind */
	int64_t s[S_COUNT];
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

static int64_t
sum_scalar(int which)
{
	int64_t s = 0;

	for (int k = 0; k < nblocks; k++)
		s += get(&blocks[k].s[which]);
	return s;
}

#define PUT(...) do { int k_ = snprintf(out + n, cap - n, __VA_ARGS__); \
	if (k_ < 0 || (size_t)k_ >= cap - n) \
		return n; \
	n += (size_t)k_; \
} while (0)

/* One labelled series per key of t: `name{label="key"} value`. */
static size_t
put_series(char *out, size_t cap, const char *help, const char *metric, const char *label,
    const struct table *t, int field)
{
	size_t n = 0;

	PUT("# HELP %s %s\n# TYPE %s %s\n", metric, help, metric,
	    strstr(metric, "_total") ? "counter" : "gauge");
	for (int i = 0; i < t->n; i++) {
		PUT("%s{%s=\"%s\"} %lld\n", metric, label, t->e[i].name, (long long)t->e[i].v[field]);
	}
	return n;
}

/* The authentication guard's counters (shared by all workers, kept by guard.c). */
static size_t
metrics_format_guard(char *out, size_t cap)
{
	size_t n = 0;

	PUT("# HELP exrelay_auth_failures_total Logins the backend refused (401 to credentials).\n"
	    "# TYPE exrelay_auth_failures_total counter\nexrelay_auth_failures_total %llu\n"
	    "# HELP exrelay_auth_successes_total Logins the backend accepted.\n"
	    "# TYPE exrelay_auth_successes_total counter\nexrelay_auth_successes_total %llu\n",
	    (unsigned long long)guard_count(GUARD_FAILURES), (unsigned long long)guard_count(GUARD_SUCCESSES));
	PUT("# HELP exrelay_auth_blocks_total Blocks started by the authentication guard.\n"
	    "# TYPE exrelay_auth_blocks_total counter\n"
	    "exrelay_auth_blocks_total{scope=\"user\"} %llu\nexrelay_auth_blocks_total{scope=\"client\"} %llu\n",
	    (unsigned long long)guard_count(GUARD_BLOCKS_USER), (unsigned long long)guard_count(GUARD_BLOCKS_CLIENT));
	PUT("# HELP exrelay_auth_blocked_requests_total Logins answered by exrelay while blocked.\n"
	    "# TYPE exrelay_auth_blocked_requests_total counter\n"
	    "exrelay_auth_blocked_requests_total{scope=\"user\"} %llu\n"
	    "exrelay_auth_blocked_requests_total{scope=\"client\"} %llu\n",
	    (unsigned long long)guard_count(GUARD_BLOCKED_USER), (unsigned long long)guard_count(GUARD_BLOCKED_CLIENT));
	return n;
}

/*
 * Writes the Prometheus text exposition of all counters, summed over the workers, into
 * out[0..cap); returns its length (what fits, when cap is short).
 */
size_t
metrics_format(char *out, size_t cap)
{
	static __thread struct table l, r, e, f;
	size_t n = 0;

	sum_table(&l, T_LISTENERS);
	sum_table(&r, T_REQUESTS);
	sum_table(&e, T_BERRORS);
	sum_table(&f, T_FILTERS);
	n += put_series(out + n, cap - n, "Client connections open, per listener.",
	    "exrelay_connections_active", "listener", &l, V_ACTIVE);
	n += put_series(out + n, cap - n, "Client connections accepted, per listener.",
	    "exrelay_connections_total", "listener", &l, V_TOTAL);
	n += put_series(out + n, cap - n, "Connections closed for a missing or bad PROXY header.",
	    "exrelay_proxy_header_errors_total", "listener", &l, V_PP_ERRORS);
	PUT("# HELP exrelay_requests_total Requests answered, per route and status code.\n"
	    "# TYPE exrelay_requests_total counter\n");
	for (int i = 0; i < r.n; i++)
		PUT("exrelay_requests_total{route=\"%s\",code=\"%d\"} %lld\n", r.e[i].name, r.e[i].code,
		    (long long)r.e[i].v[0]);
	PUT("# HELP exrelay_bytes_total Bytes received from (in) and sent to (out) clients, counted at close.\n"
	    "# TYPE exrelay_bytes_total counter\n"
	    "exrelay_bytes_total{direction=\"in\"} %lld\nexrelay_bytes_total{direction=\"out\"} %lld\n",
	    (long long)sum_scalar(S_BYTES_IN), (long long)sum_scalar(S_BYTES_OUT));
	PUT("# HELP exrelay_rpc_channels_active RPC over HTTP channels open.\n"
	    "# TYPE exrelay_rpc_channels_active gauge\n"
	    "exrelay_rpc_channels_active{method=\"RPC_IN_DATA\"} %lld\n"
	    "exrelay_rpc_channels_active{method=\"RPC_OUT_DATA\"} %lld\n",
	    (long long)sum_scalar(S_RPC_IN), (long long)sum_scalar(S_RPC_OUT));
	PUT("# HELP exrelay_backend_errors_total Backend failures, per backend and kind.\n"
	    "# TYPE exrelay_backend_errors_total counter\n");
	for (int i = 0; i < e.n; i++)
		PUT("exrelay_backend_errors_total{backend=\"%s\",kind=\"%s\"} %lld\n", e.e[i].name,
		    e.e[i].kind, (long long)e.e[i].v[0]);
	n += put_series(out + n, cap - n, "Requests refused by a filter, a rule or allow_from, per rule.",
	    "exrelay_filter_blocked_total", "rule", &f, 0);
	return n + metrics_format_guard(out + n, cap - n);
}

/* The Extended Protection family: whether each TLS backend server binds like exrelay's listener. */
size_t
metrics_format_cert_match(char *out, size_t cap, const struct metrics_cert_match *m, size_t count)
{
	size_t n = 0;

	PUT("# HELP exrelay_backend_cert_match 1 when the server's certificate binds like the one exrelay's "
	    "listener presents for it (Extended Protection can work), else 0.\n"
	    "# TYPE exrelay_backend_cert_match gauge\n");
	for (size_t i = 0; i < count; i++)
		PUT("exrelay_backend_cert_match{backend=\"%s\",server=\"%s\"} %d\n", m[i].backend, m[i].server,
		    m[i].match);
	return n;
}
