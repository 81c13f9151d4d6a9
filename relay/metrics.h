/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics.h: the counters behind /metrics (metrics.c): one block per worker, summed when read.
 * Every counting function may be called from any worker thread without a lock.
 */
#ifndef EXRELAY_METRICS_H
#define EXRELAY_METRICS_H

#include <stddef.h>
#include <stdint.h>

int metrics_init(int nworkers);
void metrics_attach(int id);
void metrics_free(void);

void metrics_conn_open(const char *listener);
void metrics_conn_close(const char *listener);
void metrics_proxy_error(const char *listener);
void metrics_request(const char *route, int code);
void metrics_bytes(uint64_t in, uint64_t out);
void metrics_rpc_channel(const char *method, int delta);
void metrics_backend_error(const char *backend, const char *kind);
void metrics_filter_blocked(const char *rule);

size_t metrics_format(char *out, size_t cap);

/* One backend server's certificate comparison (Extended Protection, epcheck.c). */
struct metrics_cert_match {
	const char *backend, *server;
	int match;			/* 1 or 0 */
};
/* exrelay_backend_cert_match{backend,server} for m[0..n) into out[0..cap): its length. */
size_t metrics_format_cert_match(char *out, size_t cap, const struct metrics_cert_match *m, size_t n);

#endif
