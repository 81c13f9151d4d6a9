#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# piuparts.sh DEB...: piuparts (install, remove, purge; files left behind; processes left
# running; the logrotate file) for the given .deb files in a clean Debian 12 (bookworm) chroot.
#
#   contrib/build-deb out && contrib/debian/piuparts.sh out/exrelay_*_amd64.deb
#
# Runs as root; installs piuparts and debootstrap when missing. The first run debootstraps a
# minimal bookworm into a base tarball (a few minutes, network needed) and keeps it in
# $BASETGZ (default /var/cache/exrelay-piuparts/bookworm.tar.gz); later runs take 1-2 minutes.
# Environment: MIRROR (default http://deb.debian.org/debian), DIST (default bookworm), BASETGZ.
# Exit status: piuparts' own (0 = passed); its log is in $LOGDIR (default /tmp), last lines shown.
set -eu

[ $# -ge 1 ] || { echo "usage: $0 DEB..." >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "piuparts.sh: run as root" >&2; exit 2; }
MIRROR=${MIRROR:-http://deb.debian.org/debian}
DIST=${DIST:-bookworm}
BASETGZ=${BASETGZ:-/var/cache/exrelay-piuparts/$DIST.tar.gz}
LOGDIR=${LOGDIR:-/tmp}

for tool in piuparts debootstrap; do
	if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends piuparts debootstrap
		break
	fi
done
PATH=$PATH:/usr/sbin

if [ ! -s "$BASETGZ" ]; then
	echo "piuparts.sh: creating $BASETGZ (debootstrap $DIST, a few minutes)"
	mkdir -p "$(dirname "$BASETGZ")"
	root=$(mktemp -d)
	trap 'rm -rf "$root"' EXIT
	debootstrap --variant=minbase "$DIST" "$root" "$MIRROR" >/dev/null
	tar -C "$root" -czf "$BASETGZ.tmp" .
	mv "$BASETGZ.tmp" "$BASETGZ"
	rm -rf "$root"
	trap - EXIT
fi

# The .deb paths made absolute, in place in the positional parameters.
for d; do
	set -- "$@" "$(cd "$(dirname "$d")" && pwd)/$(basename "$d")"
	shift
done
log="$LOGDIR/piuparts-exrelay.log"
status=0
piuparts --basetgz "$BASETGZ" --distribution "$DIST" --mirror "$MIRROR" \
	--log-file "$log" "$@" >/dev/null 2>&1 || status=$?
tail -n 5 "$log"
exit "$status"
