/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cbind.c: the tls-server-end-point channel binding of a certificate (RFC 5929 §4.1) and the
 * description of a certificate in exrelay's log lines (subject, SHA-256 fingerprint). Pure:
 * GnuTLS parses and hashes; nothing here reads files, logs or keeps state.
 *
 * RFC 5929 §4.1: "if the certificate's signatureAlgorithm uses a single hash function, and
 * that hash function is either MD5 or SHA-1, then use SHA-256; if the certificate's
 * signatureAlgorithm uses a single hash function and that hash function neither MD5 nor
 * SHA-1, then use the hash function associated with the certificate's signatureAlgorithm".
 * Windows (and the project's test client, tests/lib/ntlm.py) hash a certificate whose
 * signature names no single hash with SHA-256 as well; so does this.
 */
#include "autoconf.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#include "cbind.h"

/* The end-point hash function for a certificate signed with algorithm sign (RFC 5929 §4.1). */
static gnutls_digest_algorithm_t
cbind_hash_for(int sign)
{
	gnutls_digest_algorithm_t d = sign > 0 ? gnutls_sign_get_hash_algorithm((gnutls_sign_algorithm_t)sign) :
	    GNUTLS_DIG_UNKNOWN;

	if (d == GNUTLS_DIG_MD5 || d == GNUTLS_DIG_SHA1 || d == GNUTLS_DIG_MD5_SHA1 || d == GNUTLS_DIG_UNKNOWN)
		return GNUTLS_DIG_SHA256;
	return d;
}

/* Parses der[0..len) into a new certificate (*crt), 0; or -1 with nothing to free. */
static int
cbind_parse(const unsigned char *der, size_t len, gnutls_x509_crt_t *crt)
{
	gnutls_datum_t d = { (unsigned char *)(uintptr_t)der, (unsigned)len };

	if (len == 0 || len > 1u << 20 || gnutls_x509_crt_init(crt) < 0)
		return -1;
	if (gnutls_x509_crt_import(*crt, &d, GNUTLS_X509_FMT_DER) < 0) {
		gnutls_x509_crt_deinit(*crt);
		return -1;
	}
	return 0;
}

/* The end-point hash of the certificate crt whose DER is der[0..len) (see cbind_end_point). */
static int
cbind_hash_crt(gnutls_x509_crt_t crt, const unsigned char *der, size_t len, unsigned char *out, size_t cap,
    int *hash)
{
	gnutls_digest_algorithm_t d = cbind_hash_for(gnutls_x509_crt_get_signature_algorithm(crt));
	unsigned n = gnutls_hash_get_len(d);

	if (n == 0 || n > cap || gnutls_hash_fast(d, der, len, out) < 0)
		return -1;
	if (hash)
		*hash = (int)d;
	return (int)n;
}

int
cbind_end_point(const unsigned char *der, size_t len, unsigned char *out, size_t cap, int *hash)
{
	gnutls_x509_crt_t crt;
	int n;

	if (cbind_parse(der, len, &crt) == -1)
		return -1;
	n = cbind_hash_crt(crt, der, len, out, cap, hash);
	gnutls_x509_crt_deinit(crt);
	return n;
}

int
cbind_cert_from_der(struct cbind_cert *c, const unsigned char *der, size_t len)
{
	gnutls_x509_crt_t crt;
	gnutls_datum_t dn = { NULL, 0 };
	int n;

	memset(c, 0, sizeof(*c));
	if (cbind_parse(der, len, &crt) == -1)
		return -1;
	n = cbind_hash_crt(crt, der, len, c->ep, sizeof(c->ep), &c->hash);
	if (n > 0 && gnutls_hash_fast(GNUTLS_DIG_SHA256, der, len, c->sha256) == 0) {
		c->eplen = (size_t)n;
		c->known = true;
		if (gnutls_x509_crt_get_dn3(crt, &dn, 0) == 0) {
			snprintf(c->subject, sizeof(c->subject), "%.*s", (int)dn.size, (const char *)dn.data);
			gnutls_free(dn.data);
		} else {
			snprintf(c->subject, sizeof(c->subject), "(no subject)");
		}
	}
	gnutls_x509_crt_deinit(crt);
	return c->known ? 0 : -1;
}

bool
cbind_same(const struct cbind_cert *a, const struct cbind_cert *b)
{
	return a->known && b->known && a->hash == b->hash && a->eplen == b->eplen &&
	    memcmp(a->ep, b->ep, a->eplen) == 0;
}

void
cbind_fingerprint(const struct cbind_cert *c, char *out, size_t cap)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;

	if (cap == 0)
		return;
	if (!c->known || cap < 3 * sizeof(c->sha256)) {
		snprintf(out, cap, "-");
		return;
	}
	for (size_t i = 0; i < sizeof(c->sha256); i++) {
		out[o++] = hex[c->sha256[i] >> 4];
		out[o++] = hex[c->sha256[i] & 15];
		out[o++] = i + 1 < sizeof(c->sha256) ? ':' : '\0';
	}
}

const char *
cbind_hash_name(const struct cbind_cert *c)
{
	const char *n = c->known ? gnutls_digest_get_name((gnutls_digest_algorithm_t)c->hash) : NULL;

	return n ? n : "-";
}
