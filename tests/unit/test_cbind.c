/* SPDX-License-Identifier: BSD-2-Clause */
/*
 * test_cbind.c: the tls-server-end-point hash (RFC 5929 §4.1) of the test certificates
 * tests/certs/ep-*.pem (make-certs.sh: signed by the test CA with ecdsa-with-SHA256, -SHA384,
 * -SHA512 and -SHA1). Each is checked twice: against the digest openssl computed when the
 * certificates were made (`openssl x509 -outform DER | openssl dgst -sha384`, pasted below),
 * and against GnuTLS's hash of the DER with the function the RFC names, computed here.
 */
#include "autoconf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "cbind.h"
#include "tap.h"

static const struct {
	const char *file;
	gnutls_digest_algorithm_t want;	/* RFC 5929: SHA-1 -> SHA-256 */
	const char *openssl_ep;		/* openssl dgst of the DER with that function */
	const char *openssl_sha256;	/* openssl dgst -sha256 of the DER (the fingerprint) */
} certs[] = {
	{ "ep-sha256.pem", GNUTLS_DIG_SHA256,
	    "39b7a8b77a4fd9c41632aa14a050d07de1c15b6de4c552597d10dbe151230b35",
	    "39b7a8b77a4fd9c41632aa14a050d07de1c15b6de4c552597d10dbe151230b35" },
	{ "ep-sha384.pem", GNUTLS_DIG_SHA384,
	    "6168efe25be2306fdf8c97e2aa4390cd0e84089d51ed544d1fa414cbae195f7bffe4fcc338fcd0ecbf4c32c367515f63",
	    "37ea2e62db7a97495a8b7cc7a098d0ca4f7aac18aa470058fa5968ae5249eca9" },
	{ "ep-sha512.pem", GNUTLS_DIG_SHA512,
	    "2cd5fa1bdcdc71639d7265ceb201c396649b2cc215d8ea1565432a944b420f558b649e377b304829"
	    "b1a424613b553006abbae498f395c0e6e50032a7b3b5098d",
	    "1be7c986956383273ed9149a46d69fc7c2269430208dc6ef1548e5eed95900d0" },
	{ "ep-sha1.pem", GNUTLS_DIG_SHA256,
	    "5fc958987c3e1d23fe45319f575ceafae64b117d4db6ad1d8c1a50a487cc78d8",
	    "5fc958987c3e1d23fe45319f575ceafae64b117d4db6ad1d8c1a50a487cc78d8" },
};

/* Reads tests/certs/NAME (from $srcdir, else the current folder) as DER into *der: 0 or -1. */
static int
load_der(const char *name, gnutls_datum_t *der)
{
	const char *srcdir = getenv("srcdir");
	char path[4096];
	gnutls_datum_t pem = { NULL, 0 };
	int r;

	snprintf(path, sizeof(path), "%s/certs/%s", srcdir && *srcdir ? srcdir : ".", name);
	if (gnutls_load_file(path, &pem) < 0) {
		diag("cannot read %s", path);
		return -1;
	}
	r = gnutls_pem_base64_decode2("CERTIFICATE", &pem, der);
	gnutls_free(pem.data);
	return r < 0 ? -1 : 0;
}

static void
hex(const unsigned char *p, size_t n, char *out)
{
	for (size_t i = 0; i < n; i++)
		sprintf(out + 2 * i, "%02x", p[i]);
	out[2 * n] = '\0';
}

/* One certificate: end-point hash, its function, the fingerprint, and a one-byte change. */
static void
check_cert(size_t k)
{
	gnutls_datum_t der;
	unsigned char ep[CBIND_MAX_HASH], ref[CBIND_MAX_HASH];
	char got[2 * CBIND_MAX_HASH + 1], fp[96];
	struct cbind_cert c, d;
	int hash = 0, n;

	if (load_der(certs[k].file, &der) == -1) {
		ok(0, "%s: loaded", certs[k].file);
		return;
	}
	n = cbind_end_point(der.data, der.size, ep, sizeof(ep), &hash);
	is_int(n, (int)gnutls_hash_get_len(certs[k].want), "%s: end-point hash length", certs[k].file);
	is_int(hash, certs[k].want, "%s: hashed with %s", certs[k].file, gnutls_digest_get_name(certs[k].want));
	hex(ep, n > 0 ? (size_t)n : 0, got);
	is_str(got, certs[k].openssl_ep, "%s: equals openssl's digest", certs[k].file);
	gnutls_hash_fast(certs[k].want, der.data, der.size, ref);
	ok(n > 0 && memcmp(ep, ref, (size_t)n) == 0, "%s: equals GnuTLS's %s of the DER", certs[k].file,
	    gnutls_digest_get_name(certs[k].want));
	is_int(cbind_end_point(der.data, der.size, ep, 31, NULL), -1, "%s: too small an output: -1", certs[k].file);

	ok(cbind_cert_from_der(&c, der.data, der.size) == 0 && c.known, "%s: described", certs[k].file);
	hex(c.sha256, sizeof(c.sha256), got);
	is_str(got, certs[k].openssl_sha256, "%s: SHA-256 fingerprint", certs[k].file);
	cbind_fingerprint(&c, fp, sizeof(fp));
	ok(strlen(fp) == 95 && fp[2] == ':' && strncasecmp(fp, certs[k].openssl_sha256, 2) == 0,
	    "%s: fingerprint text %s", certs[k].file, fp);
	ok(strstr(c.subject, "CN=ep-") != NULL, "%s: subject %s", certs[k].file, c.subject);
	ok(cbind_same(&c, &c), "%s: binds like itself", certs[k].file);
	der.data[der.size - 1] ^= 1;	/* inside the signature: still parses, hashes differently */
	ok(cbind_cert_from_der(&d, der.data, der.size) == 0 && !cbind_same(&c, &d),
	    "%s: a one-bit change binds differently", certs[k].file);
	gnutls_free(der.data);
}

int
main(void)
{
	struct cbind_cert a, unknown;
	unsigned char ep[CBIND_MAX_HASH], junk[64] = { 0x30, 0x03, 0x02, 0x01, 0x01 };
	char fp[96];

	for (size_t k = 0; k < sizeof(certs) / sizeof(certs[0]); k++)
		check_cert(k);
	is_int(cbind_end_point(junk, sizeof(junk), ep, sizeof(ep), NULL), -1, "not a certificate: -1");
	is_int(cbind_end_point(junk, 0, ep, sizeof(ep), NULL), -1, "nothing: -1");
	ok(cbind_cert_from_der(&unknown, junk, sizeof(junk)) == -1 && !unknown.known, "not a certificate: unknown");
	cbind_fingerprint(&unknown, fp, sizeof(fp));
	is_str(fp, "-", "unknown certificate: fingerprint -");
	is_str(cbind_hash_name(&unknown), "-", "unknown certificate: hash -");
	memset(&a, 0, sizeof(a));
	ok(!cbind_same(&a, &unknown), "two unknown certificates never match");
	return done_testing();
}
