/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * cbind.h: what Extended Protection binds an NTLM or Kerberos login to (cbind.c, pure: no
 * I/O, no logging, no state). HTTP clients bind to the `tls-server-end-point` of the
 * certificate they see (RFC 5929 §4.1): a hash of the server's DER certificate with the hash
 * function of the certificate's signature, except that MD5 and SHA-1 are replaced by SHA-256.
 * Two certificates give the same binding exactly when their end-point hashes are equal, so
 * that is what exrelay compares between its listener's certificate and a backend server's.
 */
#ifndef EXRELAY_CBIND_H
#define EXRELAY_CBIND_H

#include <stdbool.h>
#include <stddef.h>

#define CBIND_MAX_HASH 64	/* SHA-512 */

/* One certificate as the comparison and its log lines need it. */
struct cbind_cert {
	bool known;			/* false: not seen yet (or not parsable) */
	int hash;			/* gnutls_digest_algorithm_t of ep */
	size_t eplen;
	unsigned char ep[CBIND_MAX_HASH];	/* the tls-server-end-point hash */
	unsigned char sha256[32];	/* the SHA-256 fingerprint (of the DER certificate) */
	char subject[192];		/* RFC 4514 subject, cut to fit */
};

/*
 * The tls-server-end-point hash of the DER certificate der[0..len) into out[0..cap): its
 * length (32, 48 or 64), or -1 when der is not a certificate, its signature algorithm is
 * unknown to GnuTLS, or cap is too small. *hash (when not NULL) gets the
 * gnutls_digest_algorithm_t used: the signature's hash; SHA-256 for MD5, SHA-1, MD5+SHA-1 and
 * a signature that names no hash of its own.
 */
int cbind_end_point(const unsigned char *der, size_t len, unsigned char *out, size_t cap, int *hash);

/* Fills c from a DER certificate (end-point hash, fingerprint, subject): 0, or -1 (c unknown). */
int cbind_cert_from_der(struct cbind_cert *c, const unsigned char *der, size_t len);

/* True when both are known and bind the same (equal end-point hashes with the same function). */
bool cbind_same(const struct cbind_cert *a, const struct cbind_cert *b);

/* The SHA-256 fingerprint as "AB:CD:...:EF" (95 characters and NUL), or "-" when unknown. */
void cbind_fingerprint(const struct cbind_cert *c, char *out, size_t cap);

/* The name of c's end-point hash ("SHA256", "SHA384"), or "-". */
const char *cbind_hash_name(const struct cbind_cert *c);

#endif
