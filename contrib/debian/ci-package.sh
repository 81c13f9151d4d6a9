#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# ci-package.sh: the package half of CI (TAP on stdout). Builds the .deb with contrib/build-deb
# (nocheck: make check has just run), runs lintian on the .deb and the .changes, installs it with
# apt-get, checks hardening-check on the installed binary, runs the autopkgtest suite against the
# installed package, upgrades it to a newer build with RPC channels open (upgrade-test.py: no
# channel cut, no connection refused; prints the longest gap), purges it, and checks that
# nothing of it is left but the _exrelay user.
# Needs root and Debian 12; installs lintian, autopkgtest and devscripts when missing.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
out=$(mktemp -d "${TMPDIR:-/tmp}/exrelay-ci-deb.XXXXXX")
log=$out/log
n=0
failed=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; echo "# see $log:"; tail -n 40 "$log" | sed 's/^/#   /'; }
check() { desc=$1; shift; if "$@" >>"$log" 2>&1; then ok "$desc"; else notok "$desc"; fi; }
trap 'apt-get purge -y -qq exrelay >/dev/null 2>&1 || true' EXIT

export DEBIAN_FRONTEND=noninteractive
set --
for p in lintian autopkgtest devscripts; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q '^install ok installed$' || set -- "$@" "$p"
done
[ $# -eq 0 ] || apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1

if DEB_BUILD_OPTIONS=nocheck "$src/contrib/build-deb" "$out" >"$out/debs" 2>>"$log" && [ -s "$out/debs" ]; then
	ok "contrib/build-deb wrote $(grep -c . "$out/debs") .deb file(s)"
else
	notok "contrib/build-deb"
	echo "1..$n"
	exit 1
fi
deb=$(grep '/exrelay_[^/]*_[a-z0-9]*\.deb$' "$out/debs" | head -n 1)
check "lintian --fail-on error,warning on the .changes (and its .deb)" \
	lintian --fail-on error,warning "$out"/exrelay_*.changes
check "apt-get install ./$(basename "$deb")" apt-get install -y -qq "$deb"
check "hardening-check /usr/sbin/exrelay (control flow integrity included)" hardening-check /usr/sbin/exrelay
check "autopkgtest against the installed package" \
	autopkgtest --no-built-binaries "$src/contrib/" -- null
# An upgrade to a newer build while RPC channels are open: the postinst hands over (SIGUSR2).
check "package upgrade keeps open RPC channels, refuses no connection (upgrade-test.py)" \
	python3 "$src/contrib/debian/upgrade-test.py" "$deb"
sed -n 's/^# \(longest refusal gap .*\)/# \1/p' "$log" | tail -n 1
check "apt-get purge exrelay" apt-get purge -y -qq exrelay
# Where a package puts things (not the checkouts that may sit elsewhere on the machine).
left=$(find /etc /usr /lib /var /run /opt /srv -xdev \( -path /var/tmp -o -path /var/cache/exrelay-piuparts \
	-o -path /var/lib/dpkg -o -path /var/cache/apt -o -path /var/lib/apt \) -prune -o \
	-name '*exrelay*' -print 2>/dev/null | head -n 5)
if [ -z "$left" ]; then ok "purge left no file named *exrelay*"; else notok "purge left: $left"; fi
check "the _exrelay user stays after purge (Debian policy)" getent passwd _exrelay
echo "1..$n"
[ "$failed" -eq 0 ] && rm -rf "$out"
exit "$failed"
