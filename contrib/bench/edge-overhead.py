#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
edge-overhead.py: what Exchange protection (filters, header stripping, auth guard) costs exrelay
on ordinary requests, measured as requests per exrelay CPU second, side by side with HAProxy.

Everything runs on loopback in one invocation:

- backend: HAProxy answering every request itself (`http-request return status 200`, body "ok"),
  keep-alive. It accepts any credentials, so every request with `Authorization: Basic` is a
  successful login as far as exrelay's guard can tell.
- "protected": exrelay with the defaults (security.exchange_filters, strip_internal_headers and
  auth_guard all on), one worker, no access log.
- "unprotected": the same configuration plus
      security = { exchange_filters = false; strip_internal_headers = false; };
      auth_guard = { enabled = false; };
- "haproxy": HAProxy 2.6, mode http, one thread, keep-alive, in front of the same backend (peer).

Each proxy is pinned to CPU 1 (taskset); wrk and the backend run on CPU 0. wrk (one thread,
keep-alive, --connections connections, --duration seconds) sends the same Exchange-like GET to
every proxy: a long OWA service.svc target with a query, a browser User-Agent, a Cookie with
X-BackEndCookie and X-OWA-CANARY (and the canary header), and `Authorization: Basic` (so the guard
parses the user, checks its tables and counts a success on every request).

Per run, the proxy's utime + stime (/proc/PID/stat, all threads) is read before and after wrk;
requests completed / CPU seconds = requests per CPU second. The three proxies run in turn
(protected, unprotected, haproxy; repeated --runs times), after one short warm-up each. The table
has every run and the medians; the overhead is 1 - median(protected) / median(unprotected) of
requests per CPU second (and the same of requests per second, for information), and also the
same for each round (protected run k against unprotected run k, which ran next to each other)
with the median of those.

Before measuring, a ProxyShell probe checks that the filters answer 403 in "protected" and that
"unprotected" forwards it; after measuring, /metrics must show one guard success per request in
"protected" and none in "unprotected". Any wrk error (socket errors, a non-2xx answer) fails
the run.

Usage: contrib/bench/edge-overhead.py [--exrelay PATH] [--haproxy PATH] [--runs N]
           [--duration S] [--connections N] [--no-peer] [--perf-dir DIR]
Output: progress on stderr; the table, then one line of JSON, on stdout. Exit status 1 on error.
"""

import argparse
import base64
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

import harness  # noqa: E402  (stops every process it started, at exit and on signals)
from benchlib import (log, cpu_seconds, cpu_clock, pin, start_with_config, check_exited, begin,  # noqa: E402
                      git_commit, haproxy_version, machine, end)

PROXY_CPU = 1           # the proxies
CLIENT_CPU = 0          # wrk, the backend and this script
WARMUP_S = 2

EXRELAY_CONF = """\
global = {{ log_level = "warning"; max_connections = 2000; workers = 1; drain_timeout = 1; }};
listeners = (
  {{ name = "public"; bind = "127.0.0.1:{port}"; }},
  {{ name = "admin"; bind = "127.0.0.1:{admin}"; role = "admin"; }}
);
backends = ( {{ name = "exchange"; servers = [ "127.0.0.1:{bport}" ]; idle_timeout = 60; }} );
routes = ( {{ backend = "exchange"; }} );
{extra}"""

UNPROTECTED = """\
security = { exchange_filters = false; strip_internal_headers = false; };
auth_guard = { enabled = false; };
"""

BACKEND_CONF = """\
global
    maxconn 2000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend backend
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok
"""

PEER_CONF = """\
global
    maxconn 2000
    nbthread 1
defaults
    mode http
    option http-no-delay
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{bport}
"""

# One OWA request as a browser sends it (a mail list refresh), with Basic credentials.
TARGET = ("/owa/service.svc?action=FindItem&EP=1&ID=-34&AC=1"
          "&app=Mail&n=63&folderId=AQMkADAwATM0MDAAMS1iNWE0LTFmMzEtMDACLTAwCgAuAAAD&UA=0")
USER, PASSWORD = "EXAMPLE\\alice", "Spring2024!"
CANARY = "kXmV7bq5-0yFUoJ2cHhR9gUqKJ3Lq9cI8Yk4Z2s1mN0wE6tB3vRaPfQ.eyJ2IjoiMSJ9"
COOKIE = ("ClientId=4F2A9C1E7B6D4E0F8A3B5C7D9E1F2A3B; PrivateComputer=true; PBack=0; "
          "X-BackEndCookie=S-1-5-21-1004336348-1177238915-682003330-1119="
          "u56Lnp2ejJqBzM3HzsnNy8rSnszMntLLm8zK0sbLzMvSmsnIm8vHnpzOx57MgYHNz87N0s/N0s7Gq87Kxc/Ixc3P; "
          "X-OWA-CANARY=" + CANARY)
HEADERS = [
    ("Host", "mail.example.com"),
    ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
                   "Chrome/124.0.0.0 Safari/537.36 Edg/124.0.0.0"),
    ("Accept", "*/*"),
    ("Accept-Language", "en-US,en;q=0.9"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Referer", "https://mail.example.com/owa/"),
    ("Action", "FindItem"),
    ("X-Requested-With", "XMLHttpRequest"),
    ("X-OWA-ActionName", "Browse_All"),
    ("X-OWA-ClientBuildVersion", "15.2.1258.12"),
    ("X-OWA-CANARY", CANARY),
    ("Authorization", "Basic " + base64.b64encode((USER + ":" + PASSWORD).encode()).decode()),
    ("Cookie", COOKIE),
]

# wrk prints one parseable line at the end (summary.errors.status counts non-2xx/3xx answers).
WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("EDGE-RESULT requests=%d duration_us=%d connect=%d read=%d write=%d " ..
    "status=%d timeout=%d p50_us=%d p99_us=%d\\n", summary.requests, summary.duration, e.connect,
    e.read, e.write, e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def lua_string(s):
    """s as a Lua string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def wrk_script():
    """The wrk Lua script: method, target, headers, and the done() line."""
    lines = ['wrk.method = "GET"', "wrk.path = " + lua_string(TARGET)]
    lines += ["wrk.headers[%s] = %s" % (lua_string(k), lua_string(v)) for k, v in HEADERS]
    return "\n".join(lines) + "\n" + WRK_DONE


class Proxy:
    """One proxy under test: name, port, process, optional admin port."""

    def __init__(self, name, port, proc, admin=None):
        """`admin`: exrelay's admin listener port (for /metrics), None for HAProxy."""
        self.name, self.port, self.proc, self.admin = name, port, proc, admin
        self.runs = []

    def check_alive(self):
        """RuntimeError with the stderr tail when the proxy exited."""
        check_exited(self.name, self.proc)


def start_exrelay(name, path, bport, extra, pinning):
    """exrelay in front of the backend, one worker, with `extra` appended to its configuration."""
    port, admin = harness.free_port(), harness.free_port()
    conf = EXRELAY_CONF.format(port=port, admin=admin, bport=bport, extra=extra)
    p = start_with_config(name, pin(PROXY_CPU, pinning) + [path, "-f", "{cfg}"], "exrelay.conf", conf, port,
                          "edge-overhead")
    return Proxy(name, port, p, admin)


def start_haproxy(name, path, conf, bport, cpu, pinning):
    """HAProxy in the foreground, pinned to `cpu`, with `conf` (a template: {port}, {bport})."""
    port = harness.free_port()
    p = start_with_config(name, pin(cpu, pinning) + [path, "-db", "-f", "{cfg}"], "haproxy.cfg",
                          conf.format(port=port, bport=bport), port, "edge-overhead")
    return Proxy(name, port, p)


def http_get(port, target, extra_headers=()):
    """One GET on a new connection; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        head = "GET %s HTTP/1.1\r\nHost: mail.example.com\r\nConnection: close\r\n" % target
        head += "".join("%s: %s\r\n" % kv for kv in extra_headers) + "\r\n"
        s.sendall(head.encode())
        data = harness.recv_all(s)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    return status, data.split(b"\r\n\r\n", 1)[-1]


def metric(proxy, name):
    """The value of an unlabelled counter on exrelay's /metrics (0 when absent)."""
    status, body = http_get(proxy.admin, "/metrics")
    if status != 200:
        raise RuntimeError("%s /metrics answered %d" % (proxy.name, status))
    m = re.search(rb"^%s (\d+)$" % name.encode(), body, re.M)
    return int(m.group(1)) if m else 0


def run_wrk(args, proxy, script, seconds, pinning):
    """Drives `proxy` with wrk for `seconds`; returns the run's numbers (RuntimeError on errors)."""
    proxy.check_alive()
    argv = pin(CLIENT_CPU, pinning) + [args.wrk, "-t", str(args.threads), "-c", str(args.connections),
                                      "-d", "%ds" % seconds, "-s", script,
                                      "http://127.0.0.1:%d%s" % (proxy.port, TARGET)]
    perf = None
    if args.perf_dir and seconds > WARMUP_S:
        out = os.path.join(args.perf_dir, "%s.%d.data" % (proxy.name, len(proxy.runs) + 1))
        perf = subprocess.Popen(["perf", "record", "-g", "-q", "-o", out, "-p", str(proxy.proc.pid)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        time.sleep(0.5)
    pid = proxy.proc.pid
    cpu0, clk0, t0 = cpu_seconds(pid), cpu_clock(pid), time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu, clk, wall = cpu_seconds(pid) - cpu0, cpu_clock(pid) - clk0, time.monotonic() - t0
    if perf:
        perf.send_signal(2)
        perf.wait(60)
    proxy.check_alive()
    m = re.search(r"^EDGE-RESULT (.*)$", res.stdout, re.M)
    if res.returncode != 0 or not m:
        raise RuntimeError("wrk against %s failed (status %d): %s %s" % (
            proxy.name, res.returncode, res.stdout[-2000:], res.stderr[-2000:]))
    r = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
    errors = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if errors:
        raise RuntimeError("wrk against %s: errors %r (status = non-2xx/3xx answers)" % (proxy.name, errors))
    rps = r["requests"] / (r["duration_us"] / 1e6)
    return {"requests": r["requests"], "seconds": round(r["duration_us"] / 1e6, 3), "rps": round(rps),
            "cpu_s": round(cpu, 2), "cpu_share": round(cpu / wall, 3),
            "req_per_cpu_s": round(r["requests"] / cpu) if cpu > 0 else None,
            "clock_cpu_s": round(clk, 4), "req_per_clock_cpu_s": round(r["requests"] / clk) if clk > 0 else None,
            "p50_ms": round(r["p50_us"] / 1000, 3), "p99_ms": round(r["p99_us"] / 1000, 3)}


def check_setup(prot, unprot):
    """The filters refuse ProxyShell in `prot` only; ordinary requests pass in both."""
    shell = "/autodiscover/autodiscover.json?@x.com/powershell/?X-Rps-CAT=AA"
    got = (http_get(prot.port, shell)[0], http_get(unprot.port, shell)[0])
    if got != (403, 200):
        raise RuntimeError("ProxyShell probe: protected %d, unprotected %d (want 403, 200)" % got)
    for p in (prot, unprot):
        status = http_get(p.port, TARGET, HEADERS[1:])[0]
        if status != 200:
            raise RuntimeError("%s answered %d to the benchmark request" % (p.name, status))


def overhead(a, b):
    """1 - a/b in percent (a: protected, b: unprotected), or None."""
    return round(100.0 * (1.0 - a / b), 2) if a and b else None


def print_table(proxies, args, summary):
    """Per-run rows and medians on stdout."""
    print()
    print("Edge protection overhead: wrk -t%d -c%d, %d s per run, %d runs per proxy (alternating), "
          "keep-alive GET %s..." % (args.threads, args.connections, args.duration, args.runs, TARGET[:32]))
    fmt = "%-12s %4s %9s %8s %7s %6s %11s %11s %7s %7s"
    print(fmt % ("proxy", "run", "requests", "req/s", "cpu s", "cpu%", "req/cpu s", "(clock)",
                 "p50 ms", "p99 ms"))
    for p in proxies:
        for i, r in enumerate(p.runs, 1):
            print(fmt % (p.name, i, r["requests"], r["rps"], "%.2f" % r["cpu_s"], "%.1f" % (100 * r["cpu_share"]),
                         r["req_per_cpu_s"], r["req_per_clock_cpu_s"], "%.2f" % r["p50_ms"], "%.2f" % r["p99_ms"]))
    for p in proxies:
        s = summary[p.name]
        print(fmt % (p.name, "med", "", s["rps"], "", "", s["req_per_cpu_s"], s["req_per_clock_cpu_s"], "", ""))
    print()
    print("overhead of protection, 1 - protected/unprotected of the medians:")
    print("  requests per CPU second: %s%% (utime+stime), %s%% (CPU clock); requests per second: %s%%"
          % (summary["overhead_cpu_pct"], summary["overhead_clock_pct"], summary["overhead_rps_pct"]))
    per_round = summary["overhead_per_round_pct"]
    print("  per round (protected run k against unprotected run k, CPU clock): %s; median %s%%" % (
        ", ".join("%s%%" % x for x in per_round), statistics.median(per_round)))
    print("Proxies pinned to CPU %d; wrk and the backend (HAProxy answering 200 itself) to CPU %d. "
          "cpu%% = proxy CPU time / wall time;" % (PROXY_CPU, CLIENT_CPU))
    print("cpu s = utime + stime (/proc/PID/stat, 10 ms ticks); (clock) = the same from the process "
          "CPU-time clock (ns).")


def main():
    """Parses options, starts the backend and the proxies, runs wrk, prints the table and JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exrelay", default=harness.exrelay_path(),
                    help="exrelay binary (default $EXRELAY or the in-tree relay/exrelay)")
    ap.add_argument("--haproxy", default="/usr/sbin/haproxy", help="haproxy binary (backend and peer)")
    ap.add_argument("--wrk", default="wrk", help="wrk binary (Debian package wrk)")
    ap.add_argument("--runs", type=int, default=3, help="runs per proxy, alternating (default 3)")
    ap.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    ap.add_argument("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1)")
    ap.add_argument("--no-peer", action="store_true", help="skip the HAProxy column")
    ap.add_argument("--perf-dir", help="record `perf record -g` of each measured run into this directory")
    args = ap.parse_args()
    if args.runs < 1 or args.duration < 1 or args.connections < 1:
        ap.error("--runs, --duration and --connections must be positive")
    if not os.access(args.exrelay, os.X_OK):
        ap.error("exrelay binary not found at %s (use --exrelay)" % args.exrelay)
    if not shutil.which(args.wrk):
        ap.error("wrk not found (apt-get install -y wrk)")
    if args.perf_dir:
        args.perf_dir = os.path.abspath(args.perf_dir)
        os.makedirs(args.perf_dir, exist_ok=True)

    pinning, base, load = begin("edge-overhead", CLIENT_CPU, PROXY_CPU)

    errors = []
    proxies = []
    summary = {}
    try:
        backend = start_haproxy("backend", args.haproxy, BACKEND_CONF, None, CLIENT_CPU, pinning)
        proxies.append(start_exrelay("protected", args.exrelay, backend.port, "", pinning))
        proxies.append(start_exrelay("unprotected", args.exrelay, backend.port, UNPROTECTED, pinning))
        if not args.no_peer:
            proxies.append(start_haproxy("haproxy", args.haproxy, PEER_CONF, backend.port, PROXY_CPU,
                                         pinning))
        check_setup(proxies[0], proxies[1])
        script = os.path.join(base, "exchange.lua")
        with open(script, "w") as f:
            f.write(wrk_script())
        before = {p.name: metric(p, "exrelay_auth_successes_total") for p in proxies if p.admin}
        for p in proxies:
            log("%s: warm-up %d s" % (p.name, WARMUP_S))
            run_wrk(args, p, script, WARMUP_S, pinning)
        warm = {p.name: metric(p, "exrelay_auth_successes_total") - before[p.name] for p in proxies if p.admin}
        for i in range(args.runs):
            for p in proxies:
                r = run_wrk(args, p, script, args.duration, pinning)
                p.runs.append(r)
                log("%s run %d: %s" % (p.name, i + 1, json.dumps(r)))
        for p in proxies:
            if p.admin:
                got = metric(p, "exrelay_auth_successes_total") - before[p.name] - warm[p.name]
                want = sum(r["requests"] for r in p.runs) if p.name == "protected" else 0
                # wrk counts the answers it read; a request in flight when a run stops (at most
                # one per connection) may still count.
                if not want <= got <= want + args.connections * args.runs:
                    errors.append("%s: guard counted %d successes for %d requests" % (p.name, got, want))
                summary.setdefault("guard_successes", {})[p.name] = got
        for p in proxies:
            summary[p.name] = {k: round(statistics.median(r[k] for r in p.runs))
                               for k in ("rps", "req_per_cpu_s", "req_per_clock_cpu_s")}
        summary["overhead_cpu_pct"] = overhead(summary["protected"]["req_per_cpu_s"],
                                               summary["unprotected"]["req_per_cpu_s"])
        summary["overhead_clock_pct"] = overhead(summary["protected"]["req_per_clock_cpu_s"],
                                                 summary["unprotected"]["req_per_clock_cpu_s"])
        pairs = zip(proxies[0].runs, proxies[1].runs)
        summary["overhead_per_round_pct"] = [overhead(a["req_per_clock_cpu_s"], b["req_per_clock_cpu_s"])
                                             for a, b in pairs]
        summary["overhead_rps_pct"] = overhead(summary["protected"]["rps"], summary["unprotected"]["rps"])
        print_table(proxies, args, summary)
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        errors.append("%s: %s" % (type(e).__name__, e))
        log("FAILED: %s" % errors[-1])
    result = {
        "summary": summary, "runs": {p.name: p.runs for p in proxies}, "errors": errors,
        "params": dict(machine(load), runs=args.runs, duration_s=args.duration, connections=args.connections,
                       wrk_threads=args.threads, pinned=pinning, exrelay=args.exrelay, target=TARGET,
                       source_commit=git_commit(), haproxy_version=haproxy_version(args.haproxy)),
    }
    print(json.dumps(result, sort_keys=True))
    end(base, errors)


if __name__ == "__main__":
    main()
