/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_metrics.c: TAP tests for metrics.c: counters kept per worker thread are summed by
 * name when read, from any thread, while the workers keep counting (no lock: run under
 * ASan/UBSan here; the totals must come out exact once the workers stop). Also: TLS
 * handshakes per listener, the request histograms' bucket math (bounds are inclusive, _count is
 * the +Inf bucket, RPC channels kept apart), label escaping and the cut of a short buffer.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "tap.h"

#define ROUNDS 20000

/* Durations the workers observe in turn: below 0 (a clock step), on a bound, just above it, past 10. */
static const double durations[] = { -1, 0.005, 0.0050001, 10, 11 };
#define NDUR 5

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
		metrics_tls_handshake(a->listener, i % 7 != 0, i % 3 == 0);
		metrics_request_time("exchange", "GET", durations[i % NDUR]);
		metrics_first_byte("exchange", i % 2 ? "GET" : "RPC_OUT_DATA", 0.02);
		if (i % 100 == 0)
			metrics_request_time("exchange", "RPC_OUT_DATA", 3600);
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

/* Like value(), for a float (a histogram's _sum). */
static double
fvalue(const char *text, const char *series)
{
	char key[256];
	const char *p;

	snprintf(key, sizeof(key), "\n%s ", series);
	if (!(p = strstr(text, key)))
		return -1;
	return strtod(p + strlen(key), NULL);
}

/* Handshakes: failed every 7th, else resumed every 3rd, else full; per listener, summed. */
static void
check_tls(const char *text)
{
	long long failed = 0, resumed = 0, full = 0;

	for (int i = 0; i < ROUNDS; i++)
		if (i % 7 == 0)
			failed++;
		else if (i % 3 == 0)
			resumed++;
		else
			full++;
	is_int(value(text, "exrelay_tls_handshakes_total{listener=\"public\",kind=\"full\"}"), 2 * full,
	    "tls_handshakes_total full, summed over two workers");
	is_int(value(text, "exrelay_tls_handshakes_total{listener=\"public\",kind=\"resumed\"}"), 2 * resumed,
	    "tls_handshakes_total resumed");
	is_int(value(text, "exrelay_tls_handshakes_total{listener=\"admin\",kind=\"failed\"}"), failed,
	    "tls_handshakes_total failed, one worker");
	ok(strstr(text, "# TYPE exrelay_tls_handshakes_total counter\n") != NULL, "tls_handshakes_total is a counter");
}

/* The duration histogram of route exchange: every bucket of the 3 x ROUNDS observations. */
static void
check_histograms(const char *text)
{
	static const struct { const char *le; int hits; } want[] = {
		{ "0.005", 2 }, { "0.01", 3 }, { "0.025", 3 }, { "0.05", 3 }, { "0.1", 3 }, { "0.25", 3 },
		{ "0.5", 3 }, { "1", 3 }, { "2.5", 3 }, { "5", 3 }, { "10", 4 }, { "+Inf", 5 },
	};
	const long long each = 3 * ROUNDS / NDUR;	/* each duration, over three workers */
	char series[160];

	ok(strstr(text, "# TYPE exrelay_request_duration_seconds histogram\n") != NULL, "request_duration is a histogram");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(series, sizeof(series), "exrelay_request_duration_seconds_bucket{route=\"exchange\",le=\"%s\"}",
		    want[i].le);
		is_int(value(text, series), want[i].hits * each, "duration bucket le=%s (cumulative; bounds inclusive; "
		    "below 0 counts as 0)", want[i].le);
	}
	is_int(value(text, "exrelay_request_duration_seconds_count{route=\"exchange\"}"), 5 * each,
	    "duration _count = +Inf bucket = every observation");
	double sum = fvalue(text, "exrelay_request_duration_seconds_sum{route=\"exchange\"}");
	double wsum = (double)each * (0 + 0.005 + 0.0050001 + 10 + 11);
	ok(sum > wsum - 0.001 && sum < wsum + 0.001, "duration _sum in seconds: %.6f (want %.6f)", sum, wsum);
	is_int(value(text, "exrelay_request_first_byte_seconds_count{route=\"exchange\"}"), 3 * ROUNDS / 2,
	    "first_byte _count: RPC_OUT_DATA left out");
	is_int(value(text, "exrelay_request_first_byte_seconds_bucket{route=\"exchange\",le=\"0.01\"}"), 0,
	    "first_byte: 0.02 s is above le=0.01");
	is_int(value(text, "exrelay_request_first_byte_seconds_bucket{route=\"exchange\",le=\"0.025\"}"), 3 * ROUNDS / 2,
	    "first_byte: 0.02 s is within le=0.025");
	is_int(value(text, "exrelay_rpc_channel_duration_seconds_bucket{method=\"RPC_OUT_DATA\",le=\"1800\"}"), 0,
	    "RPC channel of an hour: above le=1800");
	is_int(value(text, "exrelay_rpc_channel_duration_seconds_bucket{method=\"RPC_OUT_DATA\",le=\"3600\"}"),
	    3 * (ROUNDS / 100), "RPC channels in their own histogram, per method (le=3600)");
	ok(!strstr(text, "exrelay_request_duration_seconds_count{route=\"exchange\"} 0"), "RPC not in request_duration");
}

/* metrics_printf keeps whole pieces and stops at the first that does not fit; label escapes. */
static void
check_output(void)
{
	char small[32], tmp[32];
	struct metrics_out o = { small, sizeof(small), 0, false };

	metrics_printf(&o, "a 1\n");
	metrics_printf(&o, "a_long_series_name 12345678901234567890\n");
	metrics_printf(&o, "b 2\n");
	ok(o.cut && o.n == 4 && strcmp(small, "a 1\n") == 0, "a piece that does not fit cuts: whole pieces only");
	is_str(metrics_label(tmp, sizeof(tmp), "plain"), "plain", "label without specials: as is");
	is_str(metrics_label(tmp, sizeof(tmp), "a\"b\\c\nd"), "a\\\"b\\\\c\\nd", "label: \\, \" and newline escaped");
	static char text[100];
	ok(metrics_format(text, sizeof(text)) < sizeof(text), "a short buffer gets what fits");
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
	check_tls(text);
	check_histograms(text);
	check_output();
	metrics_free();
	return done_testing();
}
