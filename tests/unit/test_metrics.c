/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_metrics.c: TAP tests for metrics.c: counters kept per worker thread are summed by
 * name when read, from any thread, while the workers keep counting (no lock: run under
 * ASan/UBSan here; the totals must come out exact once the workers stop).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tap.h"

#define ROUNDS 20000

struct worker_arg { int id; const char *listener; };

static void *
worker(void *p)
{
	const struct worker_arg *a = p;

	metrics_attach(a->id);
	for (int i = 0; i < ROUNDS; i++) {
		metrics_conn_open(a->listener);
		metrics_request(i % 2 ? "exchange" : "apache", i % 3 ? 200 : 404);
		metrics_bytes(3, 5);
		metrics_rpc_channel(i % 2 ? "RPC_IN_DATA" : "RPC_OUT_DATA", 1);
		if (i % 10 == 0)
			metrics_backend_error("exchange", "connect");
		if (i % 4 == 0)
			metrics_proxy_error(a->listener);
		metrics_conn_close(a->listener);
		metrics_rpc_channel(i % 2 ? "RPC_IN_DATA" : "RPC_OUT_DATA", -1);
	}
	metrics_conn_open(a->listener);	/* one left open per worker */
	return NULL;
}

/* The value of the series `name` (with labels, exactly) in text, or -1. */
static long long
value(const char *text, const char *series)
{
	char key[256];
	const char *p;

	snprintf(key, sizeof(key), "\n%s ", series);
	if (!(p = strstr(text, key)))
		return -1;
	return strtoll(p + strlen(key), NULL, 10);
}

int
main(void)
{
	static char text[64 * 1024];
	pthread_t t[3];
	struct worker_arg args[3] = { { 0, "public" }, { 1, "public" }, { 2, "admin" } };

	ok(metrics_init(3) == 0, "metrics_init for 3 workers");
	for (int i = 0; i < 3; i++)
		pthread_create(&t[i], NULL, worker, &args[i]);
	/* Reading while the workers count must be safe (the values are only lower bounds). */
	size_t n = 0;
	for (int i = 0; i < 50; i++)
		n = metrics_format(text, sizeof(text));
	ok(n > 0 && n < sizeof(text), "format while workers count: %zu bytes", n);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);

	n = metrics_format(text, sizeof(text));
	text[n] = '\0';
	is_int(value(text, "exrelay_connections_total{listener=\"public\"}"), 2 * ROUNDS + 2,
	    "connections_total summed over two workers of one listener");
	is_int(value(text, "exrelay_connections_total{listener=\"admin\"}"), ROUNDS + 1,
	    "connections_total of a listener counted by one worker");
	is_int(value(text, "exrelay_connections_active{listener=\"public\"}"), 2, "connections_active: the open ones");
	is_int(value(text, "exrelay_proxy_header_errors_total{listener=\"public\"}"), 2 * (ROUNDS / 4),
	    "proxy_header_errors_total summed");
	is_int(value(text, "exrelay_requests_total{route=\"exchange\",code=\"200\"}") +
	    value(text, "exrelay_requests_total{route=\"exchange\",code=\"404\"}") +
	    value(text, "exrelay_requests_total{route=\"apache\",code=\"200\"}") +
	    value(text, "exrelay_requests_total{route=\"apache\",code=\"404\"}"), 3 * ROUNDS,
	    "requests_total: every request counted once, by route and code");
	is_int(value(text, "exrelay_bytes_total{direction=\"in\"}"), 3LL * 3 * ROUNDS, "bytes in summed");
	is_int(value(text, "exrelay_bytes_total{direction=\"out\"}"), 5LL * 3 * ROUNDS, "bytes out summed");
	is_int(value(text, "exrelay_rpc_channels_active{method=\"RPC_IN_DATA\"}"), 0, "rpc channels closed again");
	is_int(value(text, "exrelay_backend_errors_total{backend=\"exchange\",kind=\"connect\"}"), 3 * (ROUNDS / 10),
	    "backend_errors_total summed");
	ok(strstr(text, "# TYPE exrelay_connections_active gauge\n") != NULL, "connections_active is a gauge");
	ok(strstr(text, "# TYPE exrelay_connections_total counter\n") != NULL, "connections_total is a counter");
	ok(metrics_format(text, 100) <= 100, "a short buffer gets what fits");
	metrics_free();
	return done_testing();
}
