/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * tls.h: GnuTLS for both sides: credentials and priorities loaded with the configuration
 * (so `exrelay -t` checks certificates), and the TLS transport behind transport_ops.
 */
#ifndef EXRELAY_TLS_H
#define EXRELAY_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <gnutls/gnutls.h>

struct half;
struct cbind_cert;

/* A listener's TLS settings, loaded and checked with the configuration. */
struct tls_server {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	size_t ncerts;
	bool ktls;			/* tls.ktls: let the kernel do record encryption where it can */
};

/* A backend's TLS settings. */
struct tls_client {
	gnutls_certificate_credentials_t cred;
	gnutls_priority_t prio;
	bool verify;
	const char *sni;		/* name to send and verify; NULL: the server's host */
	unsigned long long generation;	/* unique per set-up: keys the session cache (never reused) */
	bool ktls;			/* tls.ktls, as the listeners' */
};

#define TLS_DEFAULT_PRIORITY "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-RSA:-DHE-RSA:-CIPHER-ALL:" \
	"+AES-256-GCM:+AES-128-GCM:+CHACHA20-POLY1305"

/* Process-wide set-up (the session ticket key, shared by every listener and reload). 0 or -1. */
int tls_global_init(void);
void tls_global_free(void);

/*
 * Loads a certificate/key pair into a server context (created on first use); -1 with a
 * message in err. Priority: NULL for the default; an invalid string names GnuTLS's position.
 */
int tls_server_add_cert(struct tls_server *t, const char *cert, const char *key, char *err, size_t errlen);
int tls_server_set_priority(struct tls_server *t, const char *prio, char *err, size_t errlen);
void tls_server_free(struct tls_server *t);

int tls_client_setup(struct tls_client *t, bool verify, const char *ca_file, const char *cert,
    const char *key, const char *sni, char *err, size_t errlen);
void tls_client_free(struct tls_client *t);

/*
 * Starts a TLS session on h (server side); preread[0..n) are bytes already read from the
 * socket (after a PROXY header) that belong to the TLS stream. 0 or -1.
 */
int tls_start_server(struct half *h, const struct tls_server *t, const char *preread, size_t n);
/*
 * Starts a client session toward a backend; host names the server (SNI and verification).
 * Sessions are resumed and kept per cache_key; "" asks for a full handshake, kept for none.
 */
int tls_start_client(struct half *h, const struct tls_client *t, const char *host, const char *cache_key);

/* Steps the handshake: 1 done, 0 in progress (h->want says which way), -1 failed (*why set). */
int tls_handshake(struct half *h, const char **why);

/* The negotiated version and cipher names (for the access log); "-" without TLS. */
const char *tls_version_name(const struct half *h);
const char *tls_cipher_name(const struct half *h);
bool tls_resumed(const struct half *h);
/* True when the kernel encrypts and decrypts h's records (kTLS both ways): splice may be used. */
bool tls_ktls(const struct half *h);
void tls_rebind(struct half *h);

/*
 * The certificate a listener presents to a client that names host (SNI) into out: the first
 * of its certificates whose names match host (GnuTLS's choice), else its first (the default;
 * also for host NULL). 0, or -1 when it has none.
 */
int tls_server_cert_for(const struct tls_server *t, const char *host, struct cbind_cert *out);
/* The certificate the peer of h presented (the first of its chain) into out: 0, or -1. */
int tls_peer_cert(const struct half *h, struct cbind_cert *out);

extern const struct transport_ops tls_ops;

#endif
