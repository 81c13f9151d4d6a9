/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * metrics.h: the counters behind /metrics (metrics.c): one block per worker, summed when read.
 * Every counting function may be called from any worker thread without a lock. The text is
 * written through a metrics_out, which keeps whole lines and remembers when one did not fit;
 * the per-server families (metrics_server.c) and the process ones (metrics_proc.c) write
 * through it too.
 */
#ifndef EXRELAY_METRICS_H
#define EXRELAY_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Upper bounds (seconds) of the request histograms' buckets (+Inf follows). */
#define METRICS_REQ_BUCKETS { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10 }
/* Upper bounds (seconds) of the RPC channel histogram's buckets: channels last hours. */
#define METRICS_RPC_BUCKETS { 1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800 }

/* Prometheus text under construction: p[0..n) holds whole lines; cut once a line did not fit. */
struct metrics_out {
	char *p;
	size_t cap, n;
	bool cut;
};

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
void metrics_splice_bytes(uint64_t n);
void metrics_splice_pipes(int delta);
void metrics_splice_fallback(void);
void metrics_tls_handshake(const char *listener, bool ok, bool resumed);
void metrics_first_byte(const char *route, const char *method, double seconds);
void metrics_request_time(const char *route, const char *method, double seconds);

/* Appends one formatted piece to o (nothing once o is cut; a piece that does not fit cuts o). */
void metrics_printf(struct metrics_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A label value for the text format: v itself, or v escaped into tmp (\\, \", \n). */
const char *metrics_label(char *tmp, size_t cap, const char *v);
/* Appends every per-worker counter, summed over the workers. */
void metrics_write(struct metrics_out *o);
/* metrics_write into out[0..cap): the length written (whole lines; what fits). */
size_t metrics_format(char *out, size_t cap);

/* metrics_server.c: per backend server, from servers.c's run-time state. */
void metrics_server_write(struct metrics_out *o);
/* metrics_proc.c: exrelay_build_info and the standard process_* families (/proc/self). */
void metrics_proc_build_info(struct metrics_out *o, const char *version, const char *gnutls,
    const char *libev, const char *libconfig);
void metrics_proc_write(struct metrics_out *o);
/* One backend server's certificate comparison (Extended Protection, epcheck.c). */
struct metrics_cert_match {
	const char *backend, *server;
	int match;			/* 1 or 0 */
};
/* exrelay_backend_cert_match{backend,server} for m[0..n) into out[0..cap): its length. */
size_t metrics_format_cert_match(char *out, size_t cap, const struct metrics_cert_match *m, size_t n);

#endif
