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
#include "metrics.h"

#define MAX_NAMES 64
#define MAX_KEYS 256

struct named {
	char name[64];		/* listener, route or backend */
	char kind[24];		/* backend error kind; "" elsewhere */
	int code;		/* status code (requests) */
	int64_t a, b, c;	/* the counters of this key */
};

struct table {
	struct named e[MAX_KEYS];
	int n;			/* slots in use; written with release by the owner */
};

struct block {
	struct table listeners;	/* a: active, b: total, c: PROXY header errors */
	struct table requests;	/* a: count */
	struct table berrors;	/* a: count */
	int64_t bytes_in, bytes_out, rpc_in, rpc_out;
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
	struct named *e = slot(&block()->listeners, listener, "", 0);

	add(&e->a, 1);
	add(&e->b, 1);
}

void
metrics_conn_close(const char *listener)
{
	add(&slot(&block()->listeners, listener, "", 0)->a, -1);
}

void
metrics_proxy_error(const char *listener)
{
	add(&slot(&block()->listeners, listener, "", 0)->c, 1);
}

void
metrics_request(const char *route, int code)
{
	add(&slot(&block()->requests, route, "", code)->a, 1);
}

void
metrics_bytes(uint64_t in, uint64_t out)
{
	add(&block()->bytes_in, (int64_t)in);
	add(&block()->bytes_out, (int64_t)out);
}

void
metrics_rpc_channel(const char *method, int delta)
{
	add(strcmp(method, "RPC_IN_DATA") == 0 ? &block()->rpc_in : &block()->rpc_out, delta);
}

void
metrics_backend_error(const char *backend, const char *kind)
{
	add(&slot(&block()->berrors, backend, kind, 0)->a, 1);
}

/* Adds every block's table `off` into sum (keys in order of first appearance). */
static void
sum_table(struct table *sum, size_t off)
{
	memset(sum, 0, sizeof(*sum));
	for (int k = 0; k < nblocks; k++) {
		const struct table *t = (const struct table *)((const char *)&blocks[k] + off);
		int n = __atomic_load_n(&t->n, __ATOMIC_ACQUIRE);
		for (int i = 0; i < n; i++) {
			struct named *s = slot(sum, t->e[i].name, t->e[i].kind, t->e[i].code);
			s->a += get(&t->e[i].a);
			s->b += get(&t->e[i].b);
			s->c += get(&t->e[i].c);
		}
	}
}

static int64_t
sum_scalar(size_t off)
{
	int64_t s = 0;

	for (int k = 0; k < nblocks; k++)
		s += get((const int64_t *)((const char *)&blocks[k] + off));
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
    const struct table *t, size_t field)
{
	size_t n = 0;

	PUT("# HELP %s %s\n# TYPE %s %s\n", metric, help, metric,
	    strstr(metric, "_total") ? "counter" : "gauge");
	for (int i = 0; i < t->n; i++) {
		const int64_t *v = (const int64_t *)((const char *)&t->e[i] + field);
		PUT("%s{%s=\"%s\"} %lld\n", metric, label, t->e[i].name, (long long)*v);
	}
	return n;
}

/*
 * Writes the Prometheus text exposition of all counters, summed over the workers, into
 * out[0..cap); returns its length (what fits, when cap is short).
 */
size_t
metrics_format(char *out, size_t cap)
{
	static __thread struct table l, r, e;
	size_t n = 0;

	sum_table(&l, offsetof(struct block, listeners));
	sum_table(&r, offsetof(struct block, requests));
	sum_table(&e, offsetof(struct block, berrors));
	n += put_series(out + n, cap - n, "Client connections open, per listener.",
	    "exrelay_connections_active", "listener", &l, offsetof(struct named, a));
	n += put_series(out + n, cap - n, "Client connections accepted, per listener.",
	    "exrelay_connections_total", "listener", &l, offsetof(struct named, b));
	n += put_series(out + n, cap - n, "Connections closed for a missing or bad PROXY header.",
	    "exrelay_proxy_header_errors_total", "listener", &l, offsetof(struct named, c));
	PUT("# HELP exrelay_requests_total Requests answered, per route and status code.\n"
	    "# TYPE exrelay_requests_total counter\n");
	for (int i = 0; i < r.n; i++)
		PUT("exrelay_requests_total{route=\"%s\",code=\"%d\"} %lld\n", r.e[i].name, r.e[i].code,
		    (long long)r.e[i].a);
	PUT("# HELP exrelay_bytes_total Bytes received from (in) and sent to (out) clients, counted at close.\n"
	    "# TYPE exrelay_bytes_total counter\n"
	    "exrelay_bytes_total{direction=\"in\"} %lld\nexrelay_bytes_total{direction=\"out\"} %lld\n",
	    (long long)sum_scalar(offsetof(struct block, bytes_in)),
	    (long long)sum_scalar(offsetof(struct block, bytes_out)));
	PUT("# HELP exrelay_rpc_channels_active RPC over HTTP channels open.\n"
	    "# TYPE exrelay_rpc_channels_active gauge\n"
	    "exrelay_rpc_channels_active{method=\"RPC_IN_DATA\"} %lld\n"
	    "exrelay_rpc_channels_active{method=\"RPC_OUT_DATA\"} %lld\n",
	    (long long)sum_scalar(offsetof(struct block, rpc_in)),
	    (long long)sum_scalar(offsetof(struct block, rpc_out)));
	PUT("# HELP exrelay_backend_errors_total Backend failures, per backend and kind.\n"
	    "# TYPE exrelay_backend_errors_total counter\n");
	for (int i = 0; i < e.n; i++)
		PUT("exrelay_backend_errors_total{backend=\"%s\",kind=\"%s\"} %lld\n", e.e[i].name,
		    e.e[i].kind, (long long)e.e[i].a);
	return n;
}
