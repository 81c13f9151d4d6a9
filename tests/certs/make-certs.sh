#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# Makes the TEST certificates and keys used by the integration tests (certtool, from
# gnutls-bin). The keys are test keys, committed on purpose and named *.test-key.pem:
# never use them for anything else. Re-run to regenerate (valid for 20 years).
set -eu
cd "$(dirname "$0")"

tmpfiles=""
trap 'rm -f $tmpfiles' EXIT
tmpl() { f=$(mktemp); printf '%s\n' "$@" > "$f"; echo "$f"; }
key() { certtool --generate-privkey --key-type="$1" ${2:+--bits=$2} --outfile "$3" 2>/dev/null; }

# sign NAME KEYTYPE BITS TEMPLATE-LINES...: a certificate signed by the test CA (with the
# signature hash $hash when set: certtool --hash).
sign() {
	name=$1 kt=$2 bits=$3; shift 3
	key "$kt" "$bits" "$name.test-key.pem"
	t=$(tmpl "$@" 'expiration_days = 7300'); tmpfiles="$tmpfiles $t"
	certtool --generate-certificate ${hash:+--hash="$hash"} --load-privkey "$name.test-key.pem" \
	    --load-ca-certificate ca.pem --load-ca-privkey ca.test-key.pem --template "$t" --outfile "$name.pem" 2>/dev/null
}

# Extended Protection (tests/unit/test_cbind.c): one certificate per signature hash, for the
# tls-server-end-point hash RFC 5929 §4.1 picks (SHA-1 -> SHA-256). The test CA's ECDSA key signs.
ep_certs() {
	for h in SHA256 SHA384 SHA512 SHA1; do
		lc=$(echo "$h" | tr '[:upper:]' '[:lower:]')
		hash=$h sign "ep-$lc" ecdsa "" "cn = \"ep-$lc.example.com\"" "dns_name = \"ep-$lc.example.com\"" \
		    'tls_www_server' 'signing_key'
	done
}
if [ "${1:-}" = ep ]; then
	ep_certs
	exit 0
fi

# The test CA.
key ecdsa "" ca.test-key.pem
t=$(tmpl 'cn = "exrelay test CA"' 'ca' 'cert_signing_key' 'expiration_days = 7300'); tmpfiles="$tmpfiles $t"
certtool --generate-self-signed --load-privkey ca.test-key.pem --template "$t" --outfile ca.pem 2>/dev/null

# Server certificates for the listeners and the Exchange stand-in: mail.example.com,
# localhost and 127.0.0.1 / ::1; one ECDSA and one RSA, for the same names.
srv='tls_www_server'
sign mail-ecdsa ecdsa "" 'cn = "mail.example.com"' 'dns_name = "mail.example.com"' 'dns_name = "localhost"' \
    'ip_address = "127.0.0.1"' 'ip_address = "::1"' "$srv" 'signing_key'
sign mail-rsa rsa 2048 'cn = "mail.example.com"' 'dns_name = "mail.example.com"' 'dns_name = "localhost"' \
    'ip_address = "127.0.0.1"' 'ip_address = "::1"' "$srv" 'signing_key' 'encryption_key'
# A second name, for SNI selection.
sign other ecdsa "" 'cn = "other.example.com"' 'dns_name = "other.example.com"' "$srv" 'signing_key'
# A certificate for a name the tests never connect to (wrong host name).
sign wronghost ecdsa "" 'cn = "wrong.example.net"' 'dns_name = "wrong.example.net"' "$srv" 'signing_key'
# A client certificate, for backends that require one.
sign client ecdsa "" 'cn = "exrelay test client"' 'tls_www_client' 'signing_key'

# A self-signed server certificate (not from the test CA).
key ecdsa "" selfsigned.test-key.pem
t=$(tmpl 'cn = "mail.example.com"' 'dns_name = "mail.example.com"' 'dns_name = "localhost"' \
    'ip_address = "127.0.0.1"' "$srv" 'signing_key' 'expiration_days = 7300'); tmpfiles="$tmpfiles $t"
certtool --generate-self-signed --load-privkey selfsigned.test-key.pem --template "$t" --outfile selfsigned.pem 2>/dev/null
ep_certs
ls
