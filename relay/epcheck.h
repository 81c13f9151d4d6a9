/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * epcheck.h: Extended Protection through exrelay (epcheck.c). A client binds its NTLM or
 * Kerberos login to the certificate it sees (exrelay's listener); Exchange checks the binding
 * against its own certificate. The two must bind the same (cbind.h), and exrelay compares
 * them for every TLS backend server: the expected certificate at start and at each reload, the
 * server's after each health check's handshake (or a request's, without checks).
 */
#ifndef EXRELAY_EPCHECK_H
#define EXRELAY_EPCHECK_H

#include <stddef.h>

#include "cfg.h"

struct half;
struct srv;

/* The listener's certificate for each TLS backend server of cfg into servers.c (main thread, after servers_bind). */
void epcheck_bind(const struct config *cfg);
/* h finished its handshake with server s: s's certificate into servers.c (checker or worker). */
void epcheck_seen(struct srv *s, const struct half *h);
/* exrelay_backend_cert_match, one sample per compared server, into out[0..cap): its length. */
size_t epcheck_metrics(char *out, size_t cap);
/*
 * `exrelay -T`: connects once to each TLS backend server of cfg and prints both fingerprints
 * and "match" or "MISMATCH" per server. Returns the exit status: 0 all match, 1 a mismatch,
 * 2 a server could not be reached (or its handshake failed).
 */
int epcheck_test(const struct config *cfg);

#endif
