#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# shellcheck disable=SC2016 # the sh -c scripts below take their arguments as $1
# make check (TAP), no package build: the Debian package's default configuration
# (contrib/debian/exrelay.conf) passes `exrelay -t`, listens on loopback only and leaves
# Apache's ports alone; the logrotate file (contrib/logrotate/exrelay) parses with
# `logrotate -d` (skipped without logrotate) and rotates with SIGUSR1, never copytruncate.
# Environment (set by tests/Makefile.am): top_srcdir, EXRELAY (the built binary).
set -u
top_srcdir=${top_srcdir:-$(cd "$(dirname "$0")/../.." && pwd)}
EXRELAY=${EXRELAY:-$top_srcdir/relay/exrelay}
CONF=$top_srcdir/contrib/debian/exrelay.conf
LOGROTATE=$top_srcdir/contrib/logrotate/exrelay

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; }
skip() { n=$((n + 1)); echo "ok $n # SKIP $*"; }
check() { desc=$1; shift; if "$@"; then ok "$desc"; else notok "$desc"; fi; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "1..7"

out=$("$EXRELAY" -t -f "$CONF" 2>&1)
check "exrelay -t on the package's default configuration: $out" [ "$out" = "configuration OK" ]

# Every bind address is on loopback; none is a port Apache or HAProxy use by default.
binds=$(sed -n 's/^[^#]*bind *= *"\([^"]*\)".*/\1/p' "$CONF")
bad=$(printf '%s\n' "$binds" | grep -Ev '^(127\.0\.0\.1|\[::1\]):[0-9]+$' || true)
list=$(printf '%s\n' "$binds" | tr '\n' ' ')
check "default listeners on loopback only (${list% })" [ -n "$binds" -a -z "$bad" ]
bad=$(printf '%s\n' "$binds" | grep -E ':(80|443|8080|8443|8404|8405)$' || true)
check "default listeners avoid ports 80, 443, 8080, 8443, 8404, 8405" [ -z "$bad" ]

# The Apache backend: 127.0.0.1:80 without a PROXY header (stock Apache has no
# RemoteIPProxyProtocol); the Exchange backend and route are present, commented out.
apache=$(sed -n '/name = "apache"/,/}/p' "$CONF" | grep -v '^ *#')
check "apache backend: 127.0.0.1:80, send_proxy off" \
	sh -c 'printf "%s\n" "$1" | grep -q "servers = \[ \"127.0.0.1:80\" \]" &&
	       printf "%s\n" "$1" | grep -q "send_proxy = \"off\""' sh "$apache"
check "exchange backend and route present but commented out" \
	sh -c '[ "$(grep -c "^ *# *{ *\(name = \"exchange\"\|backend = \"exchange\"\)" "$1")" -eq 2 ] &&
	       ! grep -q "^ *[^# ].*\"exchange\"" "$1"' sh "$CONF"

if ! grep -q '^[^#]*copytruncate' "$LOGROTATE" && grep -q 'USR1' "$LOGROTATE"; then
	ok "logrotate: SIGUSR1, no copytruncate"
else
	notok "logrotate: SIGUSR1, no copytruncate"
fi

if command -v logrotate >/dev/null 2>&1 || [ -x /usr/sbin/logrotate ]; then
	PATH=$PATH:/usr/sbin
	# logrotate wants its files owned by the user running it and not writable by others;
	# where the package's user does not exist (a build machine), the current one stands in.
	sed "s|/var/log/exrelay/|$tmp/log/|" "$LOGROTATE" > "$tmp/exrelay"
	if ! getent passwd _exrelay >/dev/null; then
		sed -i "s/_exrelay/$(id -un)/g; s/ adm\$/ $(id -gn)/" "$tmp/exrelay"
	fi
	chmod 0644 "$tmp/exrelay"
	mkdir "$tmp/log"
	: > "$tmp/log/access.log"
	if logrotate -d -s "$tmp/state" "$tmp/exrelay" > "$tmp/out" 2>&1 &&
	    ! grep -qi '^error' "$tmp/out"; then
		ok "logrotate -d accepts contrib/logrotate/exrelay"
	else
		sed 's/^/# /' "$tmp/out"
		notok "logrotate -d accepts contrib/logrotate/exrelay"
	fi
else
	skip "logrotate is not installed"
fi
exit $failed
