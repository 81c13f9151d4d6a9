#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# check-unit.sh: checks contrib/systemd/exrelay.service (TAP on stdout, exit 0 or 1).
#   - `systemd-analyze verify` is clean, with the unit's /usr/sbin/exrelay pointed at the built
#     binary ($EXRELAY) in a temporary copy, and its man: links resolved against contrib/man;
#   - `systemd-analyze security --offline=yes` rates the unit's exposure at most 1.5;
#   - the contract lines the sandbox must not lose (Type=notify, -t before start and reload, ...);
#   - `logrotate -d` accepts contrib/logrotate/exrelay (user and paths rewritten for this host).
# Environment (exported by the test harness): EXRELAY (binary), top_srcdir (source tree).
# Without systemd-analyze: "1..0 # SKIP". Runs on loopback only; needs no root.

set -u

: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${EXRELAY:=${top_builddir:-$top_srcdir}/relay/exrelay}"
UNIT=$top_srcdir/contrib/systemd/exrelay.service
LOGROTATE_CONF=$top_srcdir/contrib/logrotate/exrelay
MAX_EXPOSURE=1.5

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze not installed"
	exit 0
fi

n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
not_ok() { n=$((n + 1)); failed=1; echo "not ok $n - $1"; }
skip() { n=$((n + 1)); echo "ok $n - $1 # SKIP $2"; }
diag() { sed 's/^/# /'; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-unit.XXXXXX") || { echo "Bail out! mktemp"; exit 1; }
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' INT TERM

echo "1..7"

# 1-2: verify. The unit keeps its name (verify derives the unit type from it); only the
# ExecStart*/ExecReload binary path is rewritten, to an absolute path of the built binary.
case $EXRELAY in /*) ;; *) EXRELAY=$(pwd)/$EXRELAY ;; esac
if [ ! -x "$EXRELAY" ]; then
	not_ok "exrelay binary exists ($EXRELAY)"
	not_ok "systemd-analyze verify prints nothing (binary missing)"
else
	mkdir "$tmp/unit" "$tmp/man" "$tmp/man/man5" "$tmp/man/man8"
	sed "s|/usr/sbin/exrelay|$EXRELAY|g" "$UNIT" >"$tmp/unit/exrelay.service"
	# Documentation=man:... is checked with man(1): point MANPATH at the pages in the tree.
	cp "$top_srcdir/contrib/man/exrelay.8" "$tmp/man/man8/" 2>/dev/null
	cp "$top_srcdir/contrib/man/exrelay.conf.5" "$tmp/man/man5/" 2>/dev/null
	manopt=--man=yes
	command -v man >/dev/null 2>&1 || manopt=--man=no
	MANPATH=$tmp/man SYSTEMD_LOG_COLOR=0 systemd-analyze verify $manopt "$tmp/unit/exrelay.service" \
	    >"$tmp/verify.out" 2>&1
	rc=$?
	if [ $rc -eq 0 ]; then ok "systemd-analyze verify exits 0"; else not_ok "systemd-analyze verify exits 0 (exit $rc)"; fi
	if [ -s "$tmp/verify.out" ]; then
		not_ok "systemd-analyze verify prints nothing"
		diag <"$tmp/verify.out"
	else
		ok "systemd-analyze verify prints nothing"
	fi
	[ "$manopt" = --man=no ] && echo "# man(1) not installed: man pages not checked by verify"
fi

# 3: exposure. --offline needs systemd >= 250.
SYSTEMD_COLORS=0 systemd-analyze security --offline=yes --no-pager "$UNIT" >"$tmp/security.out" 2>&1
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: *\([0-9][0-9.]*\).*/\1/p' "$tmp/security.out")
if [ -z "$exposure" ]; then
	if grep -q -i -e "unrecognized option" -e "unknown option" "$tmp/security.out"; then
		skip "exposure <= $MAX_EXPOSURE" "systemd-analyze too old for --offline"
	else
		not_ok "exposure <= $MAX_EXPOSURE (no score found)"
		diag <"$tmp/security.out"
	fi
elif awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e + 0 <= m + 0) }'; then
	ok "exposure $exposure <= $MAX_EXPOSURE"
else
	not_ok "exposure $exposure <= $MAX_EXPOSURE"
	grep -v '^✓' "$tmp/security.out" | diag
fi

# 4-6: the contract lines of the unit (DESIGN.md, issue 7).
setting() { sed -n "s/^$1=//p" "$UNIT"; }
if [ "$(setting Type)" = notify ] && [ "$(setting User)" = _exrelay ] && [ "$(setting Group)" = _exrelay ] &&
   [ "$(setting CapabilityBoundingSet)" = CAP_NET_BIND_SERVICE ] &&
   [ "$(setting AmbientCapabilities)" = CAP_NET_BIND_SERVICE ] &&
   [ "$(setting NoNewPrivileges)" = yes ] && [ "$(setting ProtectSystem)" = strict ] &&
   ! grep -q '^PrivateUsers=\(yes\|true\|on\|1\)' "$UNIT"; then
	ok "Type=notify, runs as _exrelay with CAP_NET_BIND_SERVICE only, no PrivateUsers"
else
	not_ok "Type=notify, runs as _exrelay with CAP_NET_BIND_SERVICE only, no PrivateUsers"
fi
check='/usr/sbin/exrelay -t -f /etc/exrelay/exrelay.conf'
pre=$(setting ExecStartPre)
reload=$(setting ExecReload | tr '\n' '|')
if [ "$pre" = "$check" ] && [ "$reload" = "$check|/bin/kill -HUP \$MAINPID|" ] &&
   [ "$(setting ExecStart)" = '/usr/sbin/exrelay -f /etc/exrelay/exrelay.conf' ]; then
	ok "exrelay -t runs before start and before the reload's SIGHUP"
else
	not_ok "exrelay -t runs before start and before the reload's SIGHUP"
	printf 'ExecStartPre=%s\nExecReload=%s\n' "$pre" "$reload" | diag
fi
stop=$(setting TimeoutStopSec)
if [ -n "$stop" ] && [ "$stop" -gt 30 ] 2>/dev/null && [ "$(setting KillMode)" = mixed ] &&
   [ "$(setting RuntimeDirectory)" = exrelay ] && [ "$(setting LogsDirectory)" = exrelay ]; then
	ok "TimeoutStopSec ($stop) > default drain_timeout (30), KillMode=mixed, Runtime/LogsDirectory"
else
	not_ok "TimeoutStopSec > default drain_timeout (30), KillMode=mixed, Runtime/LogsDirectory"
fi

# 7: logrotate -d on the shipped file, with its paths and owner rewritten for this host.
if ! command -v logrotate >/dev/null 2>&1 && [ ! -x /usr/sbin/logrotate ]; then
	skip "logrotate -d accepts contrib/logrotate/exrelay" "logrotate not installed"
elif grep -q copytruncate "$LOGROTATE_CONF"; then
	not_ok "logrotate file does not use copytruncate"
else
	PATH=$PATH:/usr/sbin
	mkdir "$tmp/log"
	: >"$tmp/log/access.log"
	sed -e "s|/var/log/exrelay|$tmp/log|g" -e "s|_exrelay adm|$(id -un) $(id -gn)|" \
	    "$LOGROTATE_CONF" >"$tmp/logrotate.conf"
	if logrotate -d -s "$tmp/logrotate.state" "$tmp/logrotate.conf" >"$tmp/logrotate.out" 2>&1 &&
	   ! grep -q -i '^error' "$tmp/logrotate.out"; then
		ok "logrotate -d accepts contrib/logrotate/exrelay"
	else
		not_ok "logrotate -d accepts contrib/logrotate/exrelay"
		diag <"$tmp/logrotate.out"
	fi
fi

exit $failed
