#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_bulk.py: bulk RPC over HTTP streams through exrelay with flat memory (TAP).

  * an RPC_IN_DATA upload of EXRELAY_BULK_BYTES (Content-Length; default 64 MiB) in the
    stand-in's sink mode: the stand-in's in_closed bytes/sha256 equal what was sent;
  * an RPC_OUT_DATA download of EXRELAY_BULK_BYTES of the stand-in's source pattern, verified byte
    for byte;
  * a slow consumer: the client stops reading an OUT download (64 MiB) for 3 s while the stand-in
    keeps sending, then reads the rest (verified).
exrelay's RSS is sampled every 20 ms during each transfer and must stay within 8 MiB of its value
after the handshake (its buffers are bounded at 64 KiB per direction). Throughput is printed.
Run: cd tests && EXRELAY=/path/to/exrelay [EXRELAY_BULK_BYTES=N] python3 integration/t_relay_bulk.py
The 2 GiB version is a benchmark, outside `make check`: contrib/bench/bulk.sh.
"""

import hashlib
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, done, start_standin, start_exrelay  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
MiB = 1 << 20
BULK = int(os.environ.get("EXRELAY_BULK_BYTES", str(64 * MiB)))
RSS_SLACK_KIB = 8 * 1024
SLOW_BYTES = 64 * MiB           # far more than the socket buffers and exrelay's hold during the stall

CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = 3; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; } );
routes = ( { backend = "exchange"; paths = [ "/rpc" ]; } );
'''

ex = start_standin(ping_interval=0)
relay = start_exrelay(CONFIG % dict(sport=ex.port))
PORT = relay.port("public")
diag("bulk size %d bytes (EXRELAY_BULK_BYTES)" % BULK)


def connect():
    """A raw client connection to exrelay."""
    return rpch.HttpConn("127.0.0.1", PORT, timeout=30)


class RssSampler:
    """Samples exrelay's VmRSS every `interval` s in a thread until stopped."""

    def __init__(self, interval=0.02):
        """Starts sampling."""
        self.samples, self.stop_ev = [], threading.Event()
        self.t = threading.Thread(target=self.run, args=(interval,), daemon=True)
        self.t.start()

    def run(self, interval):
        """The sampling loop."""
        while not self.stop_ev.wait(interval):
            v = relay.rss_kib()
            if v is not None:
                self.samples.append(v)

    def stop(self):
        """Stops sampling; returns the maximum seen (KiB)."""
        self.stop_ev.set()
        self.t.join(5)
        return max(self.samples) if self.samples else None


def check_rss(name, base, peak):
    """One test point: peak RSS within RSS_SLACK_KIB of base."""
    diag("%s: RSS after handshake %d KiB, max during transfer %d KiB (+%d KiB)" % (name, base, peak, peak - base))
    ok(peak - base < RSS_SLACK_KIB, "%s: exrelay RSS stays flat (+%d KiB < %d KiB)" % (name, peak - base,
                                                                                         RSS_SLACK_KIB))


def check_upload():
    """RPC_IN_DATA with Content-Length BULK in sink mode: bytes and sha256 at the stand-in."""
    vc = rpch.open_virtual_connection(connect, in_query="mode=sink", in_length=BULK)
    base = relay.rss_kib()
    sampler = RssSampler()
    h = hashlib.sha256(vc.b1)
    left = BULK - rpch.B1_LEN
    t = time.monotonic()
    for piece in rpch.Pattern(11).pieces(left, piece_size=4 * MiB):
        h.update(piece)
        vc.inn.sock.sendall(piece)
    send_dt = time.monotonic() - t
    ev = ex.wait_event("in_closed", timeout=60, cookie=vc.cookie.hex())
    dt = time.monotonic() - t
    peak = sampler.stop()
    ok(ev, "upload: stand-in logged in_closed")
    ev = ev[0] if ev else {}
    is_((ev.get("bytes"), ev.get("complete")), (BULK, True), "upload: the stand-in received all %d bytes" % BULK)
    is_(ev.get("sha256"), h.hexdigest(), "upload: sha256 matches what was sent")
    diag("upload: %d bytes in %.1f s: %.0f MB/s (client sendall done after %.1f s)" % (BULK, dt, BULK / dt / 1e6,
                                                                                      send_dt))
    check_rss("upload", base, peak)
    vc.close()


def check_download():
    """RPC_OUT_DATA streaming BULK bytes of the pattern after C2: verified byte for byte."""
    vc = rpch.open_virtual_connection(connect, out_query="source=%d&seed=5" % BULK)
    base = relay.rss_kib()
    sampler = RssSampler()
    v = rpch.PatternVerifier(5)
    t = time.monotonic()
    try:
        for piece in vc.out.iter_exact(BULK, timeout=600, bufsize=4 * MiB):
            if not v.update(piece):
                break
    except (EOFError, OSError) as e:
        diag("download: %s after %d bytes" % (e, v.offset))
    dt = time.monotonic() - t
    peak = sampler.stop()
    ok(v.ok and v.offset == BULK, "download: %d bytes verified byte for byte (got %d, mismatch at %r)"
       % (BULK, v.offset, v.mismatch_at))
    diag("download: %d bytes in %.1f s: %.0f MB/s" % (v.offset, dt, v.offset / dt / 1e6))
    check_rss("download", base, peak)
    ok(ex.wait_event("source_done", timeout=10, bytes=BULK), "download: stand-in logged source_done")
    vc.close()


def check_slow_consumer():
    """The client stops reading for 3 s while the backend keeps sending: exrelay's RSS stays flat,
    the stream is intact afterwards."""
    vc = rpch.open_virtual_connection(connect, out_query="source=%d&seed=9" % SLOW_BYTES)
    base = relay.rss_kib()
    sampler = RssSampler()
    v = rpch.PatternVerifier(9)
    it = vc.out.iter_exact(SLOW_BYTES, timeout=120, bufsize=MiB)
    for piece in it:                               # read some, then stop
        v.update(piece)
        if v.offset >= 8 * MiB:
            break
    stalled_at = v.offset
    time.sleep(3.0)                                # deliberate: the consumer stalls
    mid = max(sampler.samples) if sampler.samples else base
    diag("slow consumer: stopped after %d bytes for 3 s; exrelay RSS max during the stall +%d KiB"
         % (stalled_at, mid - base))
    paired = ex.events("paired", cookie=vc.cookie.hex())
    out_conn = paired[0]["out_conn"] if paired else None
    ok(out_conn and not ex.events("source_done", conn=out_conn),
       "slow consumer: the backend was held back (source not done during the stall)")
    try:
        for piece in it:
            if not v.update(piece):
                break
    except (EOFError, OSError) as e:
        diag("slow consumer: %s after %d bytes" % (e, v.offset))
    peak = sampler.stop()
    ok(v.ok and v.offset == SLOW_BYTES, "slow consumer: all %d bytes verified after the stall (got %d, mismatch %r)"
       % (SLOW_BYTES, v.offset, v.mismatch_at))
    check_rss("slow consumer", base, peak)
    vc.close()


run_checks((check_upload, check_download, check_slow_consumer), relay, T0)
