#!/bin/sh
# SPDX-License-Identifier: BSD-2-Clause
# bulk.sh: the long bulk transfers through exrelay, run by hand (not part of `make check`).
#
# Runs tests/integration/t_relay_bulk.py (plaintext upload, download, slow consumer) and
# tests/integration/t_tls_bulk.py (TLS listener and backend, certificate reload, handshake rates)
# with BYTES per transfer (default 2 GiB): every transfer checked byte for byte, exrelay's RSS
# checked flat. `make check` runs the same scripts with 64 MiB.
#
# Usage: contrib/bench/bulk.sh [BYTES]     (from any folder; EXRELAY=path overrides the binary)
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
bytes=${1:-2147483648}
EXRELAY=${EXRELAY:-$top/relay/exrelay}
EXRELAY_BULK_BYTES=$bytes
EXRELAY_TLS_BULK_BYTES=$bytes
LSAN_OPTIONS="suppressions=$top/tests/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export EXRELAY EXRELAY_BULK_BYTES EXRELAY_TLS_BULK_BYTES LSAN_OPTIONS

status=0
for t in t_relay_bulk.py t_tls_bulk.py; do
	start=$(date +%s)
	echo "# $t: $bytes bytes per transfer, $EXRELAY"
	python3 "$top/tests/integration/$t" || status=1
	echo "# $t: $(( $(date +%s) - start )) s"
done
exit "$status"
