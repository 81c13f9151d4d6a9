#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
rpc-bench.py: exrelay against HAProxy (and no proxy at all) on RPC over HTTP v2 channels.

Everything runs on loopback in one invocation: the Exchange stand-in (tests/standin/exchange.py),
exrelay and HAProxy 2.6 side by side, both proxies in front of the same stand-in. Each proxy is
pinned to CPU 1 (`taskset -c 1`); this script (the client) and the stand-in are pinned to CPU 0.
exrelay runs with `workers = 1`, HAProxy with `nbthread 1`, so each proxy gets exactly one core.

What is measured, per target (exrelay, haproxy, and "direct" = client straight to the stand-in):

1. Idle memory per RPC channel pair (proxies only). One warm-up virtual connection is opened and
   closed, then the proxy's VmRSS (/proc/PID/status) is read; N virtual connections are opened
   (each one RPC_OUT_DATA + A1, then RPC_IN_DATA + B1, handshake completed: C2 received on OUT)
   and held idle; VmRSS is read again. Printed: (after - before) / N in KiB per pair, i.e. per two
   proxied client connections plus two backend connections. Then the client closes every pair
   (FIN, as Outlook does); the script waits until the stand-in saw every backend IN channel close,
   gives the OUT channels 3 s more, and reads VmRSS a third time. Also printed: how many backend
   OUT channels were still open by then. A proxy that does not watch the client socket while a
   response streams learns of the close only when the backend next writes (a Ping, normally),
   so "RSS after close" may still hold those OUT channels.
2. Latency of a 100-byte write through an open channel: one virtual connection in the stand-in's
   echo mode (whatever arrives on IN is written onto the paired OUT channel). 100 bytes are written
   on IN and read back on OUT, 1000 times, ~5 ms apart (10 warm-up round trips not counted).
   Printed: median, p99 and max round trip in ms. Each round trip crosses the proxy twice.
3. Streaming throughput. Download: an RPC_OUT_DATA channel in source mode whose response body is
   --bytes long (A3 + C2 + pattern bytes); timed from C2 to the last byte, checked for length and
   (by default) every 8th received piece against the pattern. Upload: an RPC_IN_DATA channel in
   sink mode with `Content-Length: --bytes` (B1 + pattern bytes); timed from the first pattern
   byte sent to the stand-in's `in_closed` event (its own timestamp), whose byte count and SHA-256
   over the whole body are checked against a digest computed before the timer starts. Printed:
   MB/s (10^6 bytes per second of pattern bytes) and the proxy's CPU seconds (utime + stime from
   /proc/PID/stat, all threads) per GiB moved.

Caveat: the client and the stand-in are Python, and both share CPU 0. They may well be the
bottleneck of the throughput tests (not the proxy). That is why the "direct" column exists: it is
the same transfer with no proxy, in the same run. A proxy whose MB/s is close to "direct" is
limited by the Python ends, and then its CPU seconds per GiB is the number to compare. Latency also
includes two Python hops (client and stand-in) on a shared core; compare columns, not absolutes.

Output: a plain text table, then one final line of JSON with every number (and any errors).
Every wait is bounded; every process started is stopped at exit (tests/lib/harness.py).
If a proxy hangs, crashes or delivers wrong bytes, the test records an error (with the tail of
the proxy's stderr) and the run goes on with the other tests.

Usage: contrib/bench/rpc-bench.py [--pairs N] [--bytes N] [--only exrelay|haproxy]
                                  [--exrelay PATH] [--haproxy PATH] [--no-direct]
                                  [--latency-count N] [--verify sample|full|none]
Run it as root or with a hard RLIMIT_NOFILE high enough for 4*N + a few hundred descriptors.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import resource
import socket
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

import harness  # noqa: E402  (registers cleanup at exit and on signals)
import rpch  # noqa: E402
from benchlib import (log, cpu_seconds, rss_kib, pin, start_with_config, begin, git_commit,  # noqa: E402
                      haproxy_version, machine, end)

GiB = 1 << 30
PROXY_CPU = 1          # the core the proxies are pinned to
CLIENT_CPU = 0         # this script and the stand-in
STALL = 15.0           # seconds without progress before a transfer counts as hung

EXRELAY_CONF = """\
global = {{ log_level = "warning"; max_connections = 20000; workers = 1; drain_timeout = 2; }};
listeners = ( {{ name = "public"; bind = "127.0.0.1:{port}"; }} );
backends = ( {{ name = "exchange"; servers = [ "127.0.0.1:{sport}" ]; idle_timeout = 3600; }} );
routes = ( {{ backend = "exchange"; }} );
"""

HAPROXY_CONF = """\
global
    maxconn {maxconn}
    nbthread 1
defaults
    mode http
    option http-no-delay
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    maxconn {maxconn}
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{sport}
"""


# ----------------------------------------------------------------------------------------------
# Small helpers
# ----------------------------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an already sorted list."""
    k = max(0, math.ceil(p / 100.0 * len(sorted_values)) - 1)
    return sorted_values[k]


class LogTail:
    """Reads the stand-in's JSON-lines log incrementally (only the new bytes on each poll)."""

    def __init__(self, path):
        """Starts at the current end of `path`: earlier events are not seen."""
        self.path = path
        self.offset = os.path.getsize(path) if os.path.exists(path) else 0
        self.partial = b""

    def poll(self):
        """Returns the events appended since the last poll."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]

    def wait(self, predicate, timeout, interval=0.05):
        """Polls until predicate(event) holds for one new event; returns it (None on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            for e in self.poll():
                if predicate(e):
                    return e
            if time.monotonic() >= deadline:
                return None
            time.sleep(interval)


class Target:
    """One thing the client talks to: a pinned proxy process, or the stand-in itself (direct)."""

    def __init__(self, name, port, proc=None):
        """`proc` is a harness.Process (None for direct)."""
        self.name, self.port, self.proc = name, port, proc
        self.dead_reason = None

    def connect(self, timeout=10.0):
        """A new HttpConn (TCP_NODELAY) to this target."""
        return rpch.HttpConn("127.0.0.1", self.port, timeout=timeout)

    def check_alive(self):
        """Raises RuntimeError (with the stderr tail) if the proxy process exited."""
        if self.proc is not None and not self.proc.alive():
            raise RuntimeError("%s exited with status %r; stderr tail:\n%s" % (
                self.name, self.proc.returncode, self.proc.stderr_text()[-3000:]))

    def stderr_tail(self, n=3000):
        """Last bytes of the proxy's stderr ('' for direct)."""
        try:
            return self.proc.stderr_text()[-n:] if self.proc is not None else ""
        except OSError as e:
            return "(stderr unreadable: %s)" % e


# ----------------------------------------------------------------------------------------------
# Starting the proxies (pinned)
# ----------------------------------------------------------------------------------------------

def start_exrelay(path, sport, pinning):
    """exrelay with a plaintext listener in front of the stand-in, one worker."""
    port = harness.free_port()
    conf = EXRELAY_CONF.format(port=port, sport=sport)
    p = start_with_config("exrelay", pin(PROXY_CPU, pinning) + [path, "-f", "{cfg}"], "exrelay.conf", conf, port,
                          "exrelay-bench")
    return Target("exrelay", port, p)


def haproxy_maxconn():
    """20000, or less when RLIMIT_NOFILE cannot hold 2 descriptors per connection (HAProxy
    refuses to start when it cannot raise its FD limit to about 2 * maxconn)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return min(20000, (hard - 200) // 2)


def start_haproxy(path, sport, pinning):
    """HAProxy in http mode (http-no-delay, keep-alive, 1 h timeouts), foreground, one thread."""
    port = harness.free_port()
    conf = HAPROXY_CONF.format(port=port, sport=sport, maxconn=haproxy_maxconn())
    p = start_with_config("haproxy", pin(PROXY_CPU, pinning) + [path, "-db", "-f", "{cfg}"], "haproxy.cfg",
                          conf, port, "exrelay-bench")
    return Target("haproxy", port, p)


# ----------------------------------------------------------------------------------------------
# The tests
# ----------------------------------------------------------------------------------------------

def wait_closed_events(tail, cookies, ev, timeout):
    """Waits until the stand-in logged event `ev` (in_closed / out_closed) for every cookie (hex).

    Returns the set of cookies still missing when the wait ended (empty: all seen).
    """
    want = set(cookies)
    deadline = time.monotonic() + timeout
    while want:
        for e in tail.poll():
            if e.get("ev") == ev:
                want.discard(e.get("cookie"))
        if not want or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    return want


def test_memory(t, standin, pairs):
    """Idle RSS per virtual connection (see the file header, test 1)."""
    pid = t.proc.pid
    tail = LogTail(standin.log)
    warm = rpch.open_virtual_connection(t.connect)
    warm.close()
    wait_closed_events(tail, [warm.cookie.hex()], "in_closed", 10.0)
    before = rss_kib(pid)
    fds_before = len(os.listdir("/proc/%d/fd" % pid))
    vcs = []
    t0 = time.monotonic()
    try:
        for i in range(pairs):
            vcs.append(rpch.open_virtual_connection(t.connect, timeout=10.0))
            if i % 200 == 199:
                t.check_alive()
        open_s = time.monotonic() - t0
        t.check_alive()
        after = rss_kib(pid)
    finally:
        for vc in vcs:
            vc.close()
    cookies = [vc.cookie.hex() for vc in vcs]
    in_left = wait_closed_events(tail, cookies, "in_closed", 30.0)
    # A proxy learns that the client closed an OUT channel (request complete, response streaming)
    # only if it watches the client socket; many notice only when the backend next writes.
    out_left = wait_closed_events(tail, cookies, "out_closed", 3.0)
    # The proxy's own view: sockets it still holds (client and backend sides).
    fds_left = len(os.listdir("/proc/%d/fd" % pid)) - fds_before
    t.check_alive()
    closed = rss_kib(pid)
    res = {"pairs": pairs, "rss_before_kib": before, "rss_after_kib": after,
           "rss_after_close_kib": closed, "kib_per_pair": round((after - before) / pairs, 2),
           "retained_kib": closed - before, "open_seconds": round(open_s, 2),
           "backend_in_left_open": len(in_left), "backend_out_left_open": len(out_left),
           "proxy_sockets_left": fds_left}
    if in_left:
        res["error"] = "%d backend IN channels still open 30 s after the clients closed" % len(in_left)
    return res


def test_latency(t, count, interval):
    """100-byte IN -> OUT echo round trips (see the file header, test 2)."""
    vc = rpch.open_virtual_connection(t.connect)
    try:
        rtts = []
        for i in range(count + 10):
            msg = (b"%08d" % i) * 12 + b"\r\n\r\n"           # 100 bytes, different every time
            t0 = time.perf_counter()
            vc.inn.send(msg)
            got = vc.out.read_exact(len(msg), timeout=10.0)
            dt = time.perf_counter() - t0
            if got != msg:
                raise RuntimeError("round trip %d: echoed %r, sent %r" % (i, got[:40], msg[:40]))
            if i >= 10:
                rtts.append(dt * 1000.0)
            time.sleep(interval)
    finally:
        vc.close()
    rtts.sort()
    return {"count": len(rtts), "median_ms": round(statistics.median(rtts), 3),
            "p99_ms": round(percentile(rtts, 99), 3), "max_ms": round(max(rtts), 3),
            "min_ms": round(rtts[0], 3)}


def test_download(t, nbytes, verify):
    """RPC_OUT_DATA source-mode download of nbytes of body (see the file header, test 3)."""
    payload = nbytes - rpch.A3_LEN - rpch.C2_LEN
    vc = rpch.open_virtual_connection(t.connect, out_query="source=%d" % payload)
    try:
        verifier = rpch.PatternVerifier(0)
        sock = vc.out.sock
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        pid = t.proc.pid if t.proc else None
        cpu0 = cpu_seconds(pid) if pid else None
        t0 = time.perf_counter()
        got = 0
        if vc.out.buf:                          # bytes read together with C2
            first = bytes(vc.out.buf[:payload])
            vc.out.buf.clear()
            if verify != "none" and not verifier.update(first):
                raise RuntimeError("wrong byte at stream offset %d" % verifier.mismatch_at)
            verifier.offset = got = len(first)
        deadline = time.monotonic() + 30 + nbytes / 20e6
        sock.settimeout(STALL)
        pieces = 0
        while got < payload:
            if time.monotonic() > deadline:
                raise RuntimeError("download not done by the deadline: %d of %d bytes" % (got, payload))
            try:
                n = sock.recv_into(buf, min(len(buf), payload - got))
            except socket.timeout:
                raise RuntimeError("download stalled for %.0f s after %d of %d bytes" % (STALL, got, payload))
            if n == 0:
                raise RuntimeError("download: EOF after %d of %d bytes" % (got, payload))
            pieces += 1
            if verify == "full" or (verify == "sample" and pieces % 8 == 0):
                verifier.offset = got
                if not verifier.update(view[:n]):
                    raise RuntimeError("download: wrong byte at stream offset %d" % verifier.mismatch_at)
            got += n
        dt = time.perf_counter() - t0
        cpu = cpu_seconds(pid) - cpu0 if pid else None
    finally:
        vc.close()
    return {"bytes": payload, "seconds": round(dt, 3), "mb_s": round(payload / dt / 1e6, 1),
            "proxy_cpu_s": round(cpu, 3) if cpu is not None else None,
            "proxy_cpu_s_per_gib": round(cpu / (payload / GiB), 3) if cpu is not None else None,
            "verify": verify}


def test_upload(t, standin, nbytes):
    """RPC_IN_DATA sink-mode upload with Content-Length nbytes (see the file header, test 3)."""
    payload = nbytes - rpch.B1_LEN
    tail = LogTail(standin.log)
    vc = rpch.open_virtual_connection(t.connect, in_query="mode=sink", in_length=nbytes)
    try:
        cookie = vc.cookie.hex()
        h = hashlib.sha256(vc.b1)               # expected digest, computed before the timer starts
        for piece in rpch.Pattern(0).pieces(payload):
            h.update(piece)
        want_sha = h.hexdigest()
        pid = t.proc.pid if t.proc else None
        cpu0 = cpu_seconds(pid) if pid else None
        sock = vc.inn.sock
        sock.settimeout(STALL)
        deadline = time.monotonic() + 30 + nbytes / 20e6
        start_epoch = time.time()
        t0 = time.perf_counter()
        sent = 0
        for piece in rpch.Pattern(0).pieces(payload):
            if time.monotonic() > deadline:
                raise RuntimeError("upload not sent by the deadline: %d of %d bytes" % (sent, payload))
            try:
                sock.sendall(piece)
            except socket.timeout:
                raise RuntimeError("upload stalled for %.0f s after about %d of %d bytes" % (STALL, sent, payload))
            sent += len(piece)
        send_s = time.perf_counter() - t0
        ev = tail.wait(lambda e: e.get("ev") == "in_closed" and e.get("cookie") == cookie,
                       max(STALL, deadline - time.monotonic()))
        if ev is None:
            raise RuntimeError("upload: the stand-in never closed the IN channel (all %d bytes sent)" % payload)
        cpu = cpu_seconds(pid) - cpu0 if pid else None
        dt = ev["t"] - start_epoch
        if ev.get("bytes") != nbytes or ev.get("sha256") != want_sha:
            raise RuntimeError("upload: stand-in got %r bytes (want %d), sha256 %s (want %s), complete=%r" % (
                ev.get("bytes"), nbytes, ev.get("sha256"), want_sha, ev.get("complete")))
    finally:
        vc.close()
    return {"bytes": payload, "seconds": round(dt, 3), "mb_s": round(payload / dt / 1e6, 1),
            "client_send_seconds": round(send_s, 3),
            "proxy_cpu_s": round(cpu, 3) if cpu is not None else None,
            "proxy_cpu_s_per_gib": round(cpu / (payload / GiB), 3) if cpu is not None else None,
            "sha256_ok": True}


def run_test(results, t, key, fn, *a):
    """Runs one test against one target, storing its result or the error (never raises)."""
    if t.dead_reason:
        results[t.name][key] = {"error": "skipped: " + t.dead_reason}
        return
    log("%s: %s ..." % (t.name, key))
    try:
        t.check_alive()
        res = fn(t, *a)
        log("%s: %s: %s" % (t.name, key, json.dumps(res)))
    except Exception as e:        # a misbehaving proxy must not stop the run
        res = {"error": "%s: %s" % (type(e).__name__, e)}
        if t.proc is not None:
            if not t.proc.alive():
                t.dead_reason = "%s exited (status %r)" % (t.name, t.proc.returncode)
                res["exit_status"] = t.proc.returncode
            res["stderr_tail"] = t.stderr_tail()
        log("%s: %s FAILED: %s" % (t.name, key, res["error"]))
        if res.get("stderr_tail"):
            log("%s stderr tail:\n%s" % (t.name, res["stderr_tail"]))
    results[t.name][key] = res


# ----------------------------------------------------------------------------------------------
# Report
# ----------------------------------------------------------------------------------------------

ROWS = [
    ("idle memory per pair (KiB)", "memory", "kib_per_pair"),
    ("  RSS before (KiB)", "memory", "rss_before_kib"),
    ("  RSS with N pairs (KiB)", "memory", "rss_after_kib"),
    ("  RSS after close (KiB)", "memory", "rss_after_close_kib"),
    ("  backend OUT left open (stand-in's view)", "memory", "backend_out_left_open"),
    ("  sockets the proxy still holds", "memory", "proxy_sockets_left"),
    ("100 B echo latency median (ms)", "latency", "median_ms"),
    ("  p99 (ms)", "latency", "p99_ms"),
    ("  max (ms)", "latency", "max_ms"),
    ("download MB/s", "download", "mb_s"),
    ("  proxy CPU s per GiB", "download", "proxy_cpu_s_per_gib"),
    ("upload MB/s", "upload", "mb_s"),
    ("  proxy CPU s per GiB", "upload", "proxy_cpu_s_per_gib"),
]


def cell(results, name, test, field):
    """One table cell: the number, ERROR, or '-' when not measured."""
    r = results.get(name, {}).get(test)
    if r is None:
        return "-"
    if "error" in r:
        return "ERROR"
    v = r.get(field)
    return "-" if v is None else str(v)


def print_table(results, names, args):
    """The side-by-side table on stdout."""
    w0, w = 34, 12
    print()
    print("RPC over HTTP benchmark: %d pairs, %d-byte bodies (%.2f GiB), %d latency samples" % (
        args.pairs, args.bytes, args.bytes / GiB, args.latency_count))
    print("%-*s" % (w0, "") + "".join("%*s" % (w, n) for n in names))
    for label, test, field in ROWS:
        print("%-*s" % (w0, label) + "".join("%*s" % (w, cell(results, n, test, field)) for n in names))
    for n in names:
        for test, r in results[n].items():
            if isinstance(r, dict) and "error" in r:
                print("ERROR %s %s: %s" % (n, test, r["error"]))
    print("MB = 10^6 bytes. Proxies pinned to CPU %d, client and stand-in to CPU %d. "
          "direct = no proxy (the ceiling of the Python ends)." % (PROXY_CPU, CLIENT_CPU))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def main():
    """Parses options, starts everything, runs the tests, prints the table and the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=1000, help="idle virtual connections (default 1000)")
    ap.add_argument("--bytes", type=int, default=2 * GiB, help="body size of each transfer (default 2 GiB)")
    ap.add_argument("--only", choices=["exrelay", "haproxy"], help="measure one proxy only")
    ap.add_argument("--exrelay", default=harness.exrelay_path(),
                    help="exrelay binary (default $EXRELAY or the in-tree relay/exrelay)")
    ap.add_argument("--haproxy", default="/usr/sbin/haproxy", help="haproxy binary")
    ap.add_argument("--no-direct", action="store_true", help="skip the no-proxy column")
    ap.add_argument("--latency-count", type=int, default=1000, help="round trips (default 1000)")
    ap.add_argument("--latency-interval", type=float, default=0.005, help="seconds between round trips")
    ap.add_argument("--verify", choices=["sample", "full", "none"], default="sample",
                    help="download check: every 8th piece (default), every piece, or length only")
    args = ap.parse_args()
    if args.bytes < 1 << 20:
        ap.error("--bytes must be at least 1 MiB (IN channels need Content-Length >= 128 KiB)")
    if args.pairs < 1:
        ap.error("--pairs must be at least 1")

    need_fds = 4 * args.pairs + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(65536, need_fds)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        if hard < need_fds:
            log("warning: RLIMIT_NOFILE hard limit %d < %d: the memory test may run out of descriptors"
                % (hard, need_fds))
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)

    # Pinned (the stand-in inherits CPU 0), with a private base directory for the temp dirs of the
    # stand-in and the proxies.
    pinning, base, load = begin("rpc-bench", CLIENT_CPU, PROXY_CPU)

    standin = harness.start_standin(ping_interval=0)
    targets = []
    results = {}
    if args.only in (None, "exrelay"):
        if not os.access(args.exrelay, os.X_OK):
            harness.bail_out("exrelay binary not found at %s (use --exrelay)" % args.exrelay)
        targets.append(start_exrelay(args.exrelay, standin.port, pinning))
    if args.only in (None, "haproxy"):
        targets.append(start_haproxy(args.haproxy, standin.port, pinning))
    proxies = list(targets)
    if not args.no_direct:
        targets.append(Target("direct", standin.port))
    for t in targets:
        results[t.name] = {}
    names = [t.name for t in targets]
    log("stand-in pid %d port %d; %s" % (standin.pid, standin.port, ", ".join(
        "%s pid %d port %d" % (t.name, t.proc.pid, t.port) for t in proxies)))

    started = time.monotonic()
    for t in proxies:
        run_test(results, t, "memory", test_memory, standin, args.pairs)
    for t in targets:
        run_test(results, t, "latency", test_latency, args.latency_count, args.latency_interval)
    for t in targets:
        run_test(results, t, "download", test_download, args.bytes, args.verify)
    for t in targets:
        run_test(results, t, "upload", test_upload, standin, args.bytes)
    for t in proxies:
        if t.proc.alive():
            results[t.name]["final_rss_kib"] = rss_kib(t.proc.pid)
        else:
            results[t.name]["exit_status"] = t.proc.returncode
        results[t.name]["stderr_tail"] = t.stderr_tail(2000)

    results["params"] = {
        "pairs": args.pairs, "bytes": args.bytes, "latency_count": args.latency_count,
        "latency_interval_s": args.latency_interval, "verify": args.verify, "pinned": pinning,
        "proxy_cpu": PROXY_CPU if pinning else None, "client_cpu": CLIENT_CPU if pinning else None,
        "nofile": list(nofile), "haproxy_maxconn": haproxy_maxconn(), "exrelay": args.exrelay if args.only != "haproxy" else None,
        "haproxy_version": haproxy_version(args.haproxy) if args.only != "exrelay" else None,
        "source_commit": git_commit(), "python": platform.python_version(),
        "elapsed_s": round(time.monotonic() - started, 1), **machine(load),
    }
    print_table(results, names, args)
    print(json.dumps(results, sort_keys=True))
    end(base, any(isinstance(r, dict) and "error" in r for n in names for r in results[n].values()))


if __name__ == "__main__":
    main()
