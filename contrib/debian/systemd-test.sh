#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# systemd-test.sh [DEB]: the package's exrelay.service under a real systemd (TAP on stdout).
# Boots a minimal Debian 12 with systemd as PID 1 in a systemd-nspawn container (private
# network: loopback only), then inside it: installs the package (the postinst enables and
# starts the service), asks it over HTTP, checks the sandbox's exposure, runs
# `upgrade-test.py --systemd` (Type=notify start with a test configuration, reloads, the package
# upgrade through the postinst's systemd branch with RPC channels open and a prober: MainPID
# changes, nothing refused, the old process drains; systemctl stop drains and exits 0), and
# purges the package. Not part of .ci/run: nspawn needs a machine that lets it boot a container.
#
# DEB: the exrelay .deb to test; without it, one is built from this checkout (contrib/build-deb,
# nocheck). Needs root and Debian 12; installs systemd-container and debootstrap when missing.
# Environment: EXRELAY_SYSTEMD_ROOTFS, the folder that keeps the debootstrap'ed root file system
# between runs (default /var/cache/exrelay-systemd-test; made again when the packages it needs
# change; each run boots a copy); EXRELAY_DEBIAN_MIRROR (default: the one apt uses for bookworm).
# Heavy steps run under nice -n 10. The container and the copy are removed at the end.
set -u
src=$(cd "$(dirname "$0")/../.." && pwd)
cache=${EXRELAY_SYSTEMD_ROOTFS:-/var/cache/exrelay-systemd-test}
tmp=$(mktemp -d "${TMPDIR:-/var/tmp}/exrelay-systemd-test.XXXXXX")
log=$tmp/log
machine=exrelay-test-$$
n=0
failed=0
nspawn=
leader=

ok() { n=$((n + 1)); echo "ok $n - $*"; }
notok() { n=$((n + 1)); failed=1; echo "not ok $n - $*"; echo "# see $log:"; tail -n 30 "$log" | sed 's/^/#   /'; }
bail() { notok "$*"; echo "1..$n"; exit 1; }
# Runs a command in the booted container (all its namespaces), with a clean environment.
inside() {
	nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		DEBIAN_FRONTEND=noninteractive "$@"
}

# shellcheck disable=SC2317 # called by the EXIT trap
cleanup() {
	if [ -n "$nspawn" ] && kill -0 "$nspawn" 2>/dev/null; then
		kill -TERM "$nspawn" 2>/dev/null	# nspawn asks the container's systemd to power off
		i=0
		while kill -0 "$nspawn" 2>/dev/null && [ "$i" -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
		kill -KILL "$nspawn" 2>/dev/null
		wait "$nspawn" 2>/dev/null
	fi
	if [ "$failed" -eq 0 ] || [ "${KEEP_TMP:-0}" != 1 ]; then
		rm -rf "$tmp"
	else
		echo "# kept $tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

[ "$(id -u)" -eq 0 ] || bail "run as root"
export DEBIAN_FRONTEND=noninteractive
deb=${1:-}

# --- Tools.
set --
command -v systemd-nspawn >/dev/null 2>&1 || set -- "$@" systemd-container
command -v debootstrap >/dev/null 2>&1 || set -- "$@" debootstrap
if [ $# -gt 0 ] && ! nice -n 10 apt-get install -y -qq --no-install-recommends "$@" >>"$log" 2>&1; then
	bail "apt-get install $*"
fi

# --- The package.
if [ -n "$deb" ]; then
	deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
else
	mkdir "$tmp/debs"
	if DEB_BUILD_OPTIONS="nocheck parallel=2" nice -n 10 "$src/contrib/build-deb" "$tmp/debs" >"$tmp/list" 2>>"$log"; then
		deb=$(grep '/exrelay_[^/]*_[a-z0-9]*\.deb$' "$tmp/list" | head -n 1)
	else
		deb=
	fi
fi
[ -f "$deb" ] || bail "an exrelay .deb (contrib/build-deb)"
ok "the package: $(basename "$deb")"

# --- The root file system: Debian 12 with systemd, the package's dependencies and what the
# tests need, kept in $cache (made again when that list changes).
deps=$(dpkg-deb -f "$deb" Depends Recommends | sed 's/^[A-Za-z-]*://' | tr ',' '\n' |
	sed -n 's/^[[:space:]]*\([a-z0-9][a-z0-9.+-]*\).*/\1/p')
# shellcheck disable=SC2086 # $deps: one package name a word
include=$(printf '%s\n' systemd systemd-sysv dbus util-linux procps python3 curl $deps | sort -u | paste -sd, -)
mirror=${EXRELAY_DEBIAN_MIRROR:-$(apt-cache policy 2>/dev/null |
	sed -n 's|^ *[0-9][0-9]* \(https\{0,1\}://[^ ]*\) bookworm/main .*|\1|p' | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}
if [ ! -f "$cache/rootfs.ok" ] || [ "$(cat "$cache/rootfs.ok")" != "$include" ]; then
	mkdir -p "$cache"
	rm -rf "$cache/rootfs" "$cache/rootfs.new" "$cache/rootfs.ok"
	echo "# debootstrap bookworm from $mirror into $cache (a few minutes, once)"
	if nice -n 10 debootstrap --variant=minbase --include="$include" bookworm "$cache/rootfs.new" "$mirror" \
		>>"$log" 2>&1 && mv "$cache/rootfs.new" "$cache/rootfs"; then
		printf '%s\n' "$include" >"$cache/rootfs.ok"
	else
		bail "debootstrap bookworm $cache/rootfs.new $mirror"
	fi
fi
ok "Debian 12 root file system in $cache ($include)"

# --- Boot a copy. Without systemd on the host: no machined registration, no scope of its own.
if ! nice -n 10 cp -a "$cache/rootfs" "$tmp/root"; then
	bail "copy of the root file system"
fi
mkdir "$tmp/root/debs"
cp "$deb" "$tmp/root/debs/"
deb=/debs/$(basename "$deb")
systemd-nspawn -q -D "$tmp/root" -M "$machine" -b --register=no --keep-unit --private-network \
	--console=passive --bind-ro="$src:/src" >"$tmp/boot.log" 2>&1 &
nspawn=$!
i=0
while [ -z "$leader" ] && kill -0 "$nspawn" 2>/dev/null && [ $i -lt 600 ]; do
	for p in $(pgrep -P "$nspawn"); do
		[ "$(cat "/proc/$p/comm" 2>/dev/null)" = systemd ] && leader=$p
	done
	[ -n "$leader" ] || sleep 0.1
	i=$((i + 1))
done
if [ -z "$leader" ]; then
	cat "$tmp/boot.log" >>"$log"
	bail "systemd-nspawn -b: no systemd running in the container"
fi
# Until its manager answers (its private socket appears during the boot), then until it booted.
i=0
while [ -z "$(inside systemctl is-system-running 2>/dev/null)" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
state=$(inside timeout 120 systemctl is-system-running --wait 2>>"$log")
inside systemctl --failed --no-legend >>"$log" 2>&1
case $state in
running | degraded) ok "systemd $(inside systemctl --version | sed -n '1s/^systemd //p') boots as PID 1 in the container ($state)" ;;
*) cat "$tmp/boot.log" >>"$log"; bail "the container's systemd is not running: '$state'" ;;
esac

# --- The package under systemd.
check() { desc=$1; shift; if "$@" >>"$log" 2>&1; then ok "$desc"; else notok "$desc"; fi; }
check "apt-get install $(basename "$deb") (offline: the dependencies are in the root file system)" \
	inside apt-get install -y -q --no-install-recommends "$deb"
check "the postinst enabled and started exrelay.service (Type=notify: active once ready)" \
	inside sh -c 'systemctl is-enabled exrelay.service && systemctl is-active exrelay.service'
check "the default configuration answers: GET http://127.0.0.1:6481/health (admin listener)" \
	inside sh -c 'curl -sS --max-time 5 http://127.0.0.1:6481/health | grep -qx ok'
exposure=$(inside systemd-analyze security exrelay.service 2>>"$log" |
	sed -n 's/.*Overall exposure level for exrelay.service: \([0-9.]*\).*/\1/p')
if [ -n "$exposure" ] && awk -v e="$exposure" 'BEGIN { exit !(e <= 1.5) }'; then
	ok "systemd-analyze security exrelay.service: exposure $exposure (at most 1.5)"
else
	notok "systemd-analyze security exrelay.service: exposure '$exposure' (at most 1.5)"
fi

# --- Start, reloads, upgrade with channels open, stop: upgrade-test.py --systemd.
inside nice -n 10 python3 /src/contrib/debian/upgrade-test.py --systemd "$deb" >"$tmp/upgrade.tap" 2>&1
rc=$?
cat "$tmp/upgrade.tap" >>"$log"
sed 's/^/#   /' "$tmp/upgrade.tap"
if [ $rc -eq 0 ] && grep -q '^1\.\.[1-9]' "$tmp/upgrade.tap" && ! grep -q '^not ok' "$tmp/upgrade.tap"; then
	ok "upgrade-test.py --systemd: $(grep -c '^ok' "$tmp/upgrade.tap") checks (start, reload, upgrade, stop)"
else
	notok "upgrade-test.py --systemd: $(grep '^not ok' "$tmp/upgrade.tap" | head -n 5 | tr '\n' ' ')"
fi
grep -E '^# (MainPID before|longest refusal gap|systemctl stop took)' "$tmp/upgrade.tap"

check "apt-get purge exrelay stops the service and removes the unit" \
	inside sh -c 'apt-get purge -y -q exrelay && ! systemctl is-active --quiet exrelay.service &&
		[ ! -e /lib/systemd/system/exrelay.service ]'
echo "1..$n"
exit "$failed"
