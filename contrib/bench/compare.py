#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
compare.py: exrelay, HAProxy 2.6 and nginx 1.22 side by side, in one run, in one table.

Everything runs on loopback. The proxies are started once, each pinned to the proxy core
(`taskset -c 1`) with one worker/thread, each with a TLS listener (the same ECDSA P-256 test
certificate, tests/certs/mail-ecdsa.pem) and a plaintext listener, all in front of the same
backend. The load (wrk, and loadgen: the C program beside this script, compiled at start) and the
backend (loadgen backend) run on the load core (`taskset -c 0`).

Tests (each proxy in turn, the order rotated every round; the medians of --rounds rounds):
  idle      N TLS connections opened (handshake done) and held: (VmRSS with them - VmRSS
            before) / N, over the proxy's processes (first round only, on fresh proxies).
  hs        full, then resumed (TLS 1.3 ticket) handshakes in a loop from loadgen threads:
            handshakes per second of the proxy's CPU time.
  get       wrk over keep-alive HTTPS connections, GET of a 100-byte file: requests/s and
            requests per proxy CPU second.
  getrate   the same GETs at one fixed offered rate for every proxy (--get-rate, 10000/s:
            loadgen sends one GET on each of the --connections connections every
            connections/rate seconds, then reads the answers): requests per proxy CPU second
            with every proxy doing the same work at the same pace. wrk's figure compares
            proxies at different loads when the load core is the ceiling (a proxy that answers
            sooner gets woken for fewer requests at a time); this one does not.
  latency   an RPC_OUT_DATA / RPC_IN_DATA echo pair over TLS: 100 bytes written on IN come back
            on OUT (the backend writes them there); median and p99 round trip.
  tls-up, tls-down, plain-up, plain-down
            one RPC_IN_DATA upload / RPC_OUT_DATA download channel with a --bytes body, through
            the TLS or the plaintext listener: MB/s (10^6 bytes) and proxy CPU s per GiB.
  verify    (--verify) the four transfers again with --verify-bytes (2 GiB), the pattern, and
            SHA-256 on the receiving end compared with the pattern's digest.

Proxy CPU: utime + stime from /proc/PID/stat of every process of the proxy (nginx's master and
worker), before and after. The load core's busy share comes from /proc/stat; at or above
LOAD_BOUND a cell is marked "*": the load side, not the proxy, set the pace.

Output: progress on stderr; the table, then one JSON line, on stdout. Exit status 1 when anything
failed (a proxy that died, a client error, a wrong digest). See README.md for the options.
"""

import argparse
import contextlib
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

import harness  # noqa: E402  (registers cleanup at exit and on signals)
from benchlib import log, cpu_seconds, rss_kib, summed, git_commit  # noqa: E402
from service import socket_inodes  # noqa: E402

GiB = 1 << 30
MiB = 1 << 20
LOAD_BOUND = 95.0        # % busy of the load core at which a result counts as load-bound
OTHER_BOUND = 20.0       # % of the proxy core used by other processes at which a result is marked
CERT = os.path.join(TOP, "tests", "certs", "mail-ecdsa.pem")
KEY = os.path.join(TOP, "tests", "certs", "mail-ecdsa.test-key.pem")
GET_PATH = "/100b.txt"
NOFILE = 65536          # RLIMIT_NOFILE asked for (the hard limit when that is lower)

EXRELAY_CONF = """\
global = {{ log_level = "error"; workers = 1; max_connections = {maxconn}; drain_timeout = 1; }};
timeouts = {{ tls_handshake = 30; request_head = 3600; client_idle = 3600; connect = 5; }};
listeners = (
  {{ name = "tls"; bind = "127.0.0.1:{tls}";
     tls = {{ certificates = ( {{ cert = "{cert}"; key = "{key}"; }} ); }}; }},
  {{ name = "plain"; bind = "127.0.0.1:{plain}"; }}
);
backends = ( {{ name = "b"; servers = [ "127.0.0.1:{backend}" ]; idle_timeout = 3600; }} );
routes = ( {{ backend = "b"; }} );
"""

HAPROXY_CONF = """\
global
    maxconn {maxconn}
    nbthread 1
defaults
    mode http
    option http-no-delay
    option splice-auto
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout tunnel 1h
    timeout http-request 1h
    timeout http-keep-alive 1h
    maxconn {maxconn}
frontend tls
    bind 127.0.0.1:{tls} ssl crt {pem}
    default_backend b
frontend plain
    bind 127.0.0.1:{plain}
    default_backend b
backend b
    server s1 127.0.0.1:{backend}
"""

NGINX_CONF = """\
daemon off;
worker_processes 1;
worker_rlimit_nofile {nofile};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
{user}
events {{ worker_connections {maxconn}; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    client_max_body_size 0;
    client_header_timeout 3600s;
    client_body_timeout 3600s;
    send_timeout 3600s;
    keepalive_timeout 3600s;
    keepalive_requests 100000000;
    upstream b {{
        server 127.0.0.1:{backend};
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 3600s;
    }}
    server {{
        listen 127.0.0.1:{tls} ssl;
        listen 127.0.0.1:{plain};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        location / {{
            proxy_pass http://b;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_connect_timeout 5s;
            proxy_read_timeout 3600s;
            proxy_send_timeout 3600s;
        }}
    }}
}}
"""


# ----------------------------------------------------------------------------------------------
# /proc readings
# ----------------------------------------------------------------------------------------------

def proc_tree(pid):
    """pid and all its descendants (from /proc/*/stat), those still alive."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def client_conns(pids, port):
    """Established TCP connections on local port `port` whose socket one of pids holds (the
    proxy's accepted client connections on that listener; not those still in its accept queue).
    /proc/net/tcp is read in pieces while other connections come and go, so that a socket may
    show twice or not at all: sockets are counted once each, and the best of three reads wins."""
    inodes = set()
    for p in pids:
        try:
            inodes |= socket_inodes(p)
        except OSError:
            pass
    best = 0
    for _ in range(3):
        found = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                v = line.split()
                if v[3] == "01" and int(v[1].rsplit(":", 1)[1], 16) == port and v[9] in inodes:
                    found.add(v[9])
        best = max(best, len(found))
    return best


def core_jiffies(cpu):
    """(busy, total) jiffies of one CPU from /proc/stat."""
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu%d " % cpu):
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                return sum(v) - idle, sum(v)
    raise RuntimeError("no cpu%d in /proc/stat" % cpu)


def loadavg():
    """The three load averages."""
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


# ----------------------------------------------------------------------------------------------
# The proxies
# ----------------------------------------------------------------------------------------------

class Proxy:
    """One proxy under test: a pinned process (group) with a TLS and a plaintext listener."""

    def __init__(self, label, kind, path):
        """kind: exrelay | haproxy | nginx; path: its binary."""
        self.label, self.kind, self.path = label, kind, path
        self.proc = None
        self.tls = self.plain = None
        self.dead = None        # why it is out of the run
        self.version = None

    def pids(self):
        """The proxy's processes (nginx: master and worker)."""
        return proc_tree(self.proc.pid)

    def start(self, args, backend):
        """Writes the configuration into a temp dir, starts the proxy, waits until both ports
        accept and a request goes through each."""
        d = harness.tmpdir("exrelay-compare-%s-" % self.kind)
        self.tls = harness.free_port()
        self.plain = harness.free_port()
        while self.plain in (self.tls, backend):
            self.plain = harness.free_port()
        pin = ["taskset", "-c", str(args.proxy_cpu)]
        v = dict(tls=self.tls, plain=self.plain, backend=backend, cert=CERT, key=KEY, dir=d, nofile=args.nofile,
                 maxconn=args.maxconn)
        if self.kind == "exrelay":
            cfg = os.path.join(d, "exrelay.conf")
            text = EXRELAY_CONF.format(**v)
            argv = pin + [self.path, "-f", cfg]
            self.version = first_line([self.path, "-V"])
        elif self.kind == "haproxy":
            pem = os.path.join(d, "haproxy.pem")
            with open(pem, "w") as f, open(CERT) as c, open(KEY) as k:
                f.write(c.read() + k.read())
            cfg = os.path.join(d, "haproxy.cfg")
            text = HAPROXY_CONF.format(pem=pem, **v)
            argv = pin + [self.path, "-db", "-f", cfg]
            self.version = first_line([self.path, "-v"])
        else:
            cfg = os.path.join(d, "nginx.conf")
            text = NGINX_CONF.format(user="user root;" if os.geteuid() == 0 else "", **v)
            argv = pin + [self.path, "-p", d, "-e", os.path.join(d, "error.log"), "-c", cfg]
            self.version = first_line([self.path, "-v"])
        with open(cfg, "w") as f:
            f.write(text)
        log("starting %s: %s" % (self.label, " ".join(argv)))
        self.proc = harness.Process(self.label, argv, d)
        for port in (self.tls, self.plain):
            if not harness.wait_port("127.0.0.1", port, 15.0, self.proc.alive):
                raise RuntimeError("%s not listening on %d (exit %r): %s" % (
                    self.label, port, self.proc.returncode, self.stderr_tail()))
        # the whole path works: a small download through each listener (retried while it starts)
        for flags in (["-t"], []):
            ok = harness.wait_for(lambda: loadgen(args, ["down"] + flags + [
                str(self.tls if flags else self.plain), "1000"], timeout=10, check=False) is not None, 10.0, 0.2)
            if not ok:
                raise RuntimeError("%s: no download through its %s listener" % (
                    self.label, "TLS" if flags else "plaintext"))

    def check_alive(self):
        """Raises RuntimeError (with its log tail) if the proxy exited."""
        if not self.proc.alive():
            raise RuntimeError("%s exited with status %r: %s" % (self.label, self.proc.returncode,
                                                                  self.stderr_tail()))

    def stderr_tail(self, n=2000):
        """The end of its stderr (and nginx's error log)."""
        text = self.proc.stderr_text() if self.proc else ""
        el = os.path.join(self.proc.workdir, "error.log") if self.proc else ""
        if el and os.path.exists(el):
            with open(el, errors="replace") as f:
                text += f.read()
        return text[-n:]


def first_line(argv):
    """First non-empty line of argv's output (stdout or stderr), or None."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (r.stdout + r.stderr).splitlines():
        if line.strip():
            return line.strip()
    return None


# ----------------------------------------------------------------------------------------------
# Load generators
# ----------------------------------------------------------------------------------------------

def build_loadgen(args):
    """Compiles loadgen.c into a temp dir; returns the binary's path."""
    d = harness.tmpdir("exrelay-compare-build-")
    out = os.path.join(d, "loadgen")
    flags = subprocess.run(["pkg-config", "--cflags", "--libs", "gnutls"], capture_output=True, text=True,
                           check=True).stdout.split()
    argv = [args.cc, "-O2", "-g", "-Wall", "-Wextra", "-pthread", "-o", out,
            os.path.join(HERE, "loadgen.c")] + flags
    r = subprocess.run(argv, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit("compare: building loadgen failed:\n%s\n%s" % (" ".join(argv), r.stderr))
    return out


class Clients:
    """The load processes running now, killed (with their groups) when the run is cut short."""

    running = set()

    def stop(self):
        """Called by harness.cleanup() at exit and on SIGINT/SIGTERM/SIGHUP."""
        for c in list(self.running):
            try:
                os.killpg(c.pid, 9)
            except (ProcessLookupError, PermissionError):
                pass


harness._started.append(Clients())


def run_client(argv, timeout):
    """Runs a load process (in its own process group) to its end; returns (status, stdout, stderr).
    Raises subprocess.TimeoutExpired after killing it."""
    c = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    Clients.running.add(c)
    try:
        out, err = c.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(c.pid, 9)
        c.communicate()
        raise
    finally:
        Clients.running.discard(c)
    return c.returncode, out, err


def load_argv(args, argv):
    """argv pinned to the load core."""
    return ["taskset", "-c", str(args.load_cpu)] + argv


def loadgen(args, argv, timeout, check=True, raw=False):
    """Runs `loadgen ARGV` on the load core; returns its JSON line as a dict (raw: its whole
    output). On failure raises RuntimeError (check) or returns None."""
    try:
        status, out, err = run_client(load_argv(args, [args.loadgen] + argv), timeout)
    except subprocess.TimeoutExpired:
        if check:
            raise RuntimeError("loadgen %s: no result within %d s" % (" ".join(argv), timeout))
        return None
    if status != 0:
        if check:
            raise RuntimeError("loadgen %s: exit %d: %s" % (" ".join(argv), status, err.strip()[-500:]))
        return None
    return out if raw else json.loads(out.strip().splitlines()[-1])


@contextlib.contextmanager
def get_client(args, p, requests, extra=()):
    """`loadgen get` on the load core: --connections keep-alive connections to p's TLS listener,
    opened and waiting ("ready") for get_go(); stopped (killed after 30 s) when the block ends."""
    c = subprocess.Popen(load_argv(args, [args.loadgen, "get", str(p.tls), str(args.connections), str(requests)]
                                   + list(extra)),
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    Clients.running.add(c)
    try:
        if not c.stdout.readline().startswith("ready"):
            raise RuntimeError("loadgen get: %s" % c.stderr.read().strip()[-500:])
        yield c
    finally:
        c.stdin.close()
        try:
            c.wait(30)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
        Clients.running.discard(c)


def get_go(c):
    """Starts the GETs of a get_client(); returns its result line."""
    c.stdin.write("go\n")
    c.stdin.flush()
    return c.stdout.readline()


class Meter:
    """Proxy CPU time, wall time and both cores' busy share over a `with` block."""

    def __init__(self, args, proxy):
        """Measures `proxy` (its process tree as it is when the block starts)."""
        self.args, self.proxy = args, proxy

    def __enter__(self):
        """Takes the first readings."""
        self.pids = self.proxy.pids()
        self.cores0 = [core_jiffies(c) for c in (self.args.proxy_cpu, self.args.load_cpu)]
        self.cpu0 = summed(cpu_seconds, self.pids)
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        """Takes the second readings: .cpu (s), .wall (s), .proxy_busy and .load_busy (%)."""
        self.wall = time.monotonic() - self.t0
        self.cpu = summed(cpu_seconds, self.pids) - self.cpu0
        busy = []
        for (b0, t0), c in zip(self.cores0, (self.args.proxy_cpu, self.args.load_cpu)):
            b1, t1 = core_jiffies(c)
            busy.append(100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0)
        self.proxy_core_busy, self.load_busy = busy
        self.proxy_busy = 100.0 * self.cpu / self.wall if self.wall > 0 else 0.0
        return False

    def info(self):
        """The readings for the JSON."""
        return {"proxy_cpu_s": round(self.cpu, 3), "wall_s": round(self.wall, 3),
                "proxy_busy_pct": round(self.proxy_busy, 1), "proxy_core_busy_pct": round(self.proxy_core_busy, 1),
                "load_core_busy_pct": round(self.load_busy, 1)}


# ----------------------------------------------------------------------------------------------
# The tests: each returns ({metric: value}, {reading: value}); the readings go to the JSON
# ----------------------------------------------------------------------------------------------

def t_idle(args, p):
    """Idle KiB per TLS connection after the handshake."""
    n = args.idle
    loadgen(args, ["idle", str(p.tls), str(max(1, n // 10))], timeout=120, raw=True)   # warm-up, closed again
    if not harness.wait_for(lambda: client_conns(p.pids(), p.tls) == 0, 10.0, 0.05):
        raise RuntimeError("the warm-up connections are still open 10 s after they closed")
    before = summed(rss_kib, p.pids())
    c = subprocess.Popen(load_argv(args, [args.loadgen, "idle", str(p.tls), str(n)]), stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    Clients.running.add(c)
    try:
        line = c.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError("loadgen idle: %s" % c.stderr.read().strip()[-500:])
        # the proxy has accepted all of them, and its RSS no longer moves
        harness.wait_for(lambda: client_conns(p.pids(), p.tls) >= n, 20.0, 0.05)
        prev = [summed(rss_kib, p.pids()), time.monotonic()]

        def settled():
            """True when a reading at least 200 ms after the previous one is the same."""
            if time.monotonic() - prev[1] < 0.2:
                return False
            r = summed(rss_kib, p.pids())
            same = r == prev[0]
            prev[:] = [r, time.monotonic()]
            return same
        harness.wait_for(settled, 5.0, 0.05)
        p.check_alive()
        pids = p.pids()
        after, conns = summed(rss_kib, pids), client_conns(pids, p.tls)
    finally:
        try:
            c.stdin.close()
            c.wait(60)
        except subprocess.TimeoutExpired:
            c.kill()
            c.wait()
        Clients.running.discard(c)
    if conns != n:
        raise RuntimeError("the proxy holds %d client connections, not %d" % (conns, n))
    return {"idle_kib": (after - before) / n}, {"connections": n, "rss_before_kib": before,
                                               "rss_after_kib": after}


def t_hs(args, p, resume):
    """Handshakes per proxy CPU second (full or resumed)."""
    argv = ["hs"] + (["-r"] if resume else []) + [str(p.tls), str(args.hs_seconds), str(args.hs_threads)]
    with Meter(args, p) as m:
        r = loadgen(args, argv, timeout=args.hs_seconds + 60)
    p.check_alive()
    if r["failed"]:
        raise RuntimeError("%d handshakes failed: %s" % (r["failed"], r["last_error"]))
    if resume and r["resumed"] != r["handshakes"]:
        raise RuntimeError("only %d of %d handshakes resumed" % (r["resumed"], r["handshakes"]))
    if not resume and r["resumed"]:
        raise RuntimeError("%d 'full' handshakes resumed" % r["resumed"])
    key = "hs_resumed" if resume else "hs_full"
    return {key + "_per_cpu": r["handshakes"] / m.cpu if m.cpu > 0 else None,
            key + "_per_s": r["handshakes"] / r["seconds"]}, dict(m.info(), **r)


WRK_REQS = re.compile(r"(\d+) requests in ([\d.]+)(m?s)")
WRK_ERRS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_NON2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def run_wrk(args, p, seconds):
    """wrk against p's TLS listener; returns (requests, seconds, errors text or None, output)."""
    argv = load_argv(args, [args.wrk, "-t1", "-c%d" % args.connections, "-d%ds" % seconds, "--timeout", "10s",
                            "https://127.0.0.1:%d%s" % (p.tls, GET_PATH)])
    status, out, err = run_client(argv, seconds + 60)
    m = WRK_REQS.search(out)
    if status != 0 or not m:
        raise RuntimeError("wrk failed (exit %d): %s %s" % (status, out[-500:], err[-500:]))
    secs = float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
    errs = []
    e = WRK_ERRS.search(out)
    if e and any(int(x) for x in e.groups()):
        errs.append(e.group(0))
    e = WRK_NON2XX.search(out)
    if e:
        errs.append(e.group(0))
    return int(m.group(1)), secs, "; ".join(errs) or None, out


def t_get(args, p):
    """Small HTTPS GETs with wrk: requests/s and requests per proxy CPU second."""
    run_wrk(args, p, args.warmup)
    with Meter(args, p) as m:
        n, secs, errs, _ = run_wrk(args, p, args.duration)
    p.check_alive()
    if errs:
        raise RuntimeError("wrk: %s" % errs)
    return {"get_per_s": n / secs, "get_per_cpu": n / m.cpu if m.cpu > 0 else None,
            "get_proxy_busy": m.proxy_busy}, dict(m.info(), requests=n, seconds=secs)


def t_getrate(args, p):
    """GETs at the fixed offered rate --get-rate: requests per proxy CPU second."""
    round_us = int(args.connections * 1e6 / args.get_rate)
    requests = max(1, int(args.get_rate * args.duration) // args.connections) * args.connections
    with get_client(args, p, requests, [str(round_us)]) as c:
        with Meter(args, p) as m:
            line = get_go(c)
        if not line.startswith("{"):
            raise RuntimeError("loadgen get: %s" % c.stderr.read().strip()[-500:])
        r = json.loads(line)
    p.check_alive()
    if r["late"] > r["rounds"] // 20:
        raise RuntimeError("loadgen get: %d of %d rounds started late: lower --get-rate" % (r["late"], r["rounds"]))
    return {"getrate_per_cpu": r["requests"] / m.cpu if m.cpu > 0 else None,
            "getrate_busy": m.proxy_busy}, dict(m.info(), **r)


def t_latency(args, p):
    """100-byte round trips through an echo pair over TLS."""
    with Meter(args, p) as m:
        r = loadgen(args, ["echo", "-t", str(p.tls), str(args.latency_count), str(args.latency_interval_us)],
                    timeout=60 + args.latency_count * (args.latency_interval_us / 1e6 + 0.05))
    p.check_alive()
    return {"lat_median_ms": r["median_us"] / 1000.0, "lat_p99_ms": r["p99_us"] / 1000.0}, dict(m.info(), **r)


def t_transfer(args, p, tls, up):
    """One upload or download channel: MB/s and proxy CPU s per GiB."""
    name = ("tls" if tls else "plain") + ("_up" if up else "_down")
    nbytes = args.bytes
    argv = ["up" if up else "down"] + (["-t"] if tls else []) + [str(p.tls if tls else p.plain), str(nbytes)]
    with Meter(args, p) as m:
        r = loadgen(args, argv, timeout=60 + nbytes / (20 * MiB))
    p.check_alive()
    if r["bytes"] != nbytes or (up and not r["backend"].startswith("bytes=%d " % nbytes)):
        raise RuntimeError("%s: %r" % (name, r))
    return {name + "_mbs": nbytes / r["seconds"] / 1e6, name + "_cpu_gib": m.cpu / (nbytes / GiB)}, \
        dict(m.info(), **r)


def t_verify(args, p, expect):
    """The four transfers with the pattern and SHA-256, --verify-bytes each: "ok" or "FAIL" each,
    and the failures as readings["error"]."""
    nbytes = args.verify_bytes
    res, readings, bad = {}, {}, []
    for tls in (True, False):
        for up in (True, False):
            name = ("tls" if tls else "plain") + ("_up" if up else "_down")
            argv = ["up" if up else "down", "-v"] + (["-t"] if tls else []) + [
                str(p.tls if tls else p.plain), str(nbytes)]
            try:
                r = loadgen(args, argv, timeout=120 + nbytes / (5 * MiB))
            except RuntimeError as e:
                r = {"error": str(e)}
            got = (r.get("backend", "").split("sha256=")[-1] if up else r.get("sha256"))
            good = r.get("bytes") == nbytes and got == expect and (
                not up or r["backend"].startswith("bytes=%d " % nbytes))
            res["verify_" + name] = "ok" if good else "FAIL"
            readings[name] = r
            if not good:
                bad.append("%s: %r (want %d bytes, sha256 %s)" % (name, r, nbytes, expect))
    if bad:
        readings["error"] = "byte-exact check failed: " + "; ".join(bad)
    return res, readings


# ----------------------------------------------------------------------------------------------
# System calls (--syscalls): a separate, untimed pass under strace -c
# ----------------------------------------------------------------------------------------------

def strace_counts(path):
    """{syscall: calls} and the total from an `strace -c` summary file."""
    calls, total = {}, 0
    with open(path) as f:
        for line in f:
            v = line.split()
            if len(v) < 5 or not v[3].isdigit():
                continue
            if v[-1] == "total":
                total = int(v[3])
            else:
                calls[v[-1]] = int(v[3])
    return calls, total


def traced(args, p, fn):
    """Runs fn() with strace -c attached to every thread of the proxy; returns (fn's result,
    {syscall: calls}, total calls)."""
    d = p.proc.workdir
    out = os.path.join(d, "strace.txt")
    pids = p.pids()
    argv = load_argv(args, ["strace", "-c", "-f", "-qq", "-o", out] + sum((["-p", str(x)] for x in pids), []))
    st = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, start_new_session=True)
    Clients.running.add(st)

    def tracer(pid):
        """The TracerPid of pid."""
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("TracerPid:"):
                    return int(line.split()[1])
        return 0
    try:
        if not harness.wait_for(lambda: all(tracer(x) == st.pid for x in pids), 10.0, 0.02):
            raise RuntimeError("strace did not attach: %s" % (st.stderr.read() if st.poll() is not None else ""))
        result = fn()
    finally:
        st.send_signal(2)
        try:
            st.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(st.pid, 9)
            st.wait()
        Clients.running.discard(st)
    calls, total = strace_counts(out)
    return result, calls, total


def t_syscalls(args, p):
    """System calls per GET (wrk) and per MiB of each transfer, counted by strace -c."""
    res, readings = {}, {}
    # GETs on --connections open keep-alive connections: their set-up is not counted
    with get_client(args, p, args.syscall_requests) as c:
        r, calls, total = traced(args, p, lambda: json.loads(get_go(c)))
    n = r["requests"]
    res["sys_get"] = total / n
    readings["get"] = {"requests": n, "connections": args.connections, "calls": total, "top": top(calls, n)}
    nbytes = args.syscall_bytes
    for tls in (True, False):
        for up in (True, False):
            name = ("tls" if tls else "plain") + ("_up" if up else "_down")
            argv = ["up" if up else "down"] + (["-t"] if tls else []) + [str(p.tls if tls else p.plain), str(nbytes)]
            r, calls, total = traced(args, p, lambda argv=argv: loadgen(args, argv, timeout=120 + nbytes / MiB))
            if r["bytes"] != nbytes:
                raise RuntimeError("%s under strace: %r" % (name, r))
            res["sys_" + name] = total / (nbytes / MiB)
            readings[name] = {"bytes": nbytes, "calls": total, "top": top(calls, nbytes / MiB)}
    p.check_alive()
    return res, readings


def top(calls, per):
    """The system calls making up 95% of the count, each per unit (request, MiB)."""
    out, seen, total = {}, 0, sum(calls.values())
    for name, n in sorted(calls.items(), key=lambda kv: -kv[1]):
        if seen >= 0.95 * total:
            break
        out[name] = round(n / per, 2)
        seen += n
    return out


# ----------------------------------------------------------------------------------------------
# The table
# ----------------------------------------------------------------------------------------------

# (metric, row label, format, higher is better (True/False) or None for no ratio)
ROWS = [
    ("get_per_s", "small HTTPS GETs (wrk, -c{c}): req/s", "k", True),
    ("get_per_cpu", "  req per proxy CPU s", "k", True),
    ("getrate_per_cpu", "GETs at a fixed {r}/s: per proxy CPU s", "k", True),
    ("getrate_busy", "  proxy core busy", "pct", None),
    ("get_proxy_busy", "  proxy busy %", "pct", None),
    ("tls_up_mbs", "TLS upload (RPC_IN_DATA, {b}): MB/s", "int", True),
    ("tls_up_cpu_gib", "  proxy CPU s/GiB", "f2", False),
    ("tls_down_mbs", "TLS download (RPC_OUT_DATA): MB/s", "int", True),
    ("tls_down_cpu_gib", "  proxy CPU s/GiB", "f2", False),
    ("plain_up_mbs", "plaintext upload: MB/s", "int", True),
    ("plain_up_cpu_gib", "  proxy CPU s/GiB", "f2", False),
    ("plain_down_mbs", "plaintext download: MB/s", "int", True),
    ("plain_down_cpu_gib", "  proxy CPU s/GiB", "f2", False),
    ("hs_full_per_cpu", "full TLS handshakes per proxy CPU s", "int", True),
    ("hs_full_per_s", "  per s", "int", True),
    ("hs_resumed_per_cpu", "resumed TLS handshakes per proxy CPU s", "int", True),
    ("hs_resumed_per_s", "  per s", "int", True),
    ("idle_kib", "idle TLS connection: KiB ({n} open)", "f1", False),
    ("lat_median_ms", "100 B round trip over TLS: median ms", "f3", False),
    ("lat_p99_ms", "  p99 ms", "f3", False),
    ("sys_get", "system calls (strace -c): per GET", "f1", False),
    ("sys_tls_up", "  per MiB TLS upload", "f1", False),
    ("sys_tls_down", "  per MiB TLS download", "f1", False),
    ("sys_plain_up", "  per MiB plaintext upload", "f1", False),
    ("sys_plain_down", "  per MiB plaintext download", "f1", False),
    ("verify_tls_up", "{vb} SHA-256: TLS upload", "str", None),
    ("verify_tls_down", "  TLS download", "str", None),
    ("verify_plain_up", "  plaintext upload", "str", None),
    ("verify_plain_down", "  plaintext download", "str", None),
]


def fmt(v, kind):
    """A cell."""
    if v is None:
        return "-"
    if kind == "str":
        return str(v)
    if kind == "k":
        return "%.1fk" % (v / 1000.0)
    if kind == "int":
        return "%.0f" % v
    if kind == "pct":
        return "%.0f%%" % v
    if kind == "f1":
        return "%.1f" % v
    if kind == "f2":
        return "%.2f" % v
    return "%.3f" % v


def human_bytes(n):
    """1 GiB, 256 MiB, 1000 B."""
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if n >= size and n % size == 0:
            return "%d %s" % (n // size, unit)
    return "%d B" % n


def summarize(runs):
    """From {label: {test: [round]}}: the medians {label: {metric: value}} (a check: "ok" only if
    every round said so) and the marks {label: {metric: "*!"}} from each test's median readings."""
    results, marks = {}, {}
    for lb, tests in runs.items():
        results[lb], marks[lb] = {}, {}
        for rounds in tests.values():
            load = median([r["readings"].get("load_core_busy_pct") for r in rounds]) or 0.0
            other = median([r["readings"].get("proxy_core_busy_pct", 0) - r["readings"].get("proxy_busy_pct", 0)
                            for r in rounds]) or 0.0
            mark = ("*" if load >= LOAD_BOUND else "") + ("!" if other >= OTHER_BOUND else "")
            for k in rounds[0]["metrics"]:
                values = [r["metrics"].get(k) for r in rounds]
                if isinstance(values[0], str):
                    results[lb][k] = "ok" if all(v == "ok" for v in values) else "FAIL"
                else:
                    results[lb][k] = median(values)
                marks[lb][k] = mark
    return results, marks


def median(values):
    """Median of the non-None values, or None."""
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def print_table(args, proxies, results, marks):
    """The side-by-side table: medians, load-bound marks, ratios of the first column."""
    labels = [p.label for p in proxies]
    first = labels[0]
    others = labels[1:] if proxies[0].kind == "exrelay" else []
    head = ["%-44s" % ""] + ["%11s  " % lb for lb in labels] + ["%12s" % ("%s/%s" % (first[:5], o[:6]))
                                                                for o in others]
    print("".join(head).rstrip())
    for metric, label, kind, better in ROWS:
        if not any(metric in results[lb] for lb in labels):
            continue
        label = label.format(c=args.connections, b=human_bytes(args.bytes), n=args.idle, r=args.get_rate,
                             vb=human_bytes(args.verify_bytes))
        cells = []
        for lb in labels:
            v = results[lb].get(metric)
            cells.append("%13s" % (fmt(v, kind) + "%-2s" % marks[lb].get(metric, "")))
        for o in others:
            a, b = results[first].get(metric), results[o].get(metric)
            if better is None or not a or not b:
                cells.append("%12s" % "")
            else:
                cells.append("%12s" % ("x%.2f" % (a / b if better else b / a)))
        print(("%-44s" % label[:44]) + "".join(cells).rstrip())
    if others:
        print("%s/X: the first column against X, > 1 when %s is better (less CPU, more per CPU s, less memory)"
              % (first[:5], first))
    print("*: the load core (CPU %d) was >= %.0f%% busy: the load side set the pace, compare per CPU s"
          % (args.load_cpu, LOAD_BOUND))
    print("!: other work took >= %.0f%% of the proxy core (CPU %d) meanwhile: a busy machine, numbers noisy"
          % (OTHER_BOUND, args.proxy_cpu))


# ----------------------------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------------------------

def parse_args():
    """Command line."""
    ap = argparse.ArgumentParser(description="exrelay, HAProxy and nginx side by side (see README.md)")
    ap.add_argument("--exrelay", action="append", metavar="[LABEL=]PATH",
                    help="an exrelay binary (repeat to compare builds; default $EXRELAY, else relay/exrelay)")
    ap.add_argument("--haproxy", default="/usr/sbin/haproxy")
    ap.add_argument("--nginx", default="/usr/sbin/nginx")
    ap.add_argument("--wrk", default=shutil.which("wrk") or "/usr/bin/wrk")
    ap.add_argument("--cc", default=os.environ.get("CC", "cc"))
    ap.add_argument("--only", default="exrelay,haproxy,nginx", help="which proxies (comma-separated)")
    ap.add_argument("--tests", default="idle,hs,get,getrate,latency,transfer",
                    help="which tests (comma-separated, of idle,hs,get,getrate,latency,transfer)")
    ap.add_argument("--quick", action="store_true", help="one short round (about a minute)")
    ap.add_argument("--rounds", type=int, help="rounds, medians reported (3; --quick 1)")
    ap.add_argument("--bytes", type=int, help="body of each timed transfer (1 GiB; --quick 256 MiB)")
    ap.add_argument("--duration", type=int, help="wrk seconds per run (8; --quick 4)")
    ap.add_argument("--warmup", type=int, default=1, help="wrk warm-up seconds before each run")
    ap.add_argument("--connections", type=int, default=50, help="wrk (and getrate) connections")
    ap.add_argument("--get-rate", type=int, default=10000, help="getrate: GETs per second offered")
    ap.add_argument("--hs-seconds", type=float, help="seconds per handshake test (3; --quick 2)")
    ap.add_argument("--hs-threads", type=int, default=4)
    ap.add_argument("--idle", type=int, help="idle TLS connections (2000; --quick 500)")
    ap.add_argument("--latency-count", type=int, help="round trips (1000; --quick 500)")
    ap.add_argument("--latency-interval-us", type=int, default=1000)
    ap.add_argument("--syscalls", action="store_true",
                    help="count system calls per GET and per MiB (strace -c, a separate pass)")
    ap.add_argument("--syscall-requests", type=int, default=2000, help="GETs under strace")
    ap.add_argument("--syscall-bytes", type=int, default=64 * MiB, help="transfers under strace")
    ap.add_argument("--verify", action="store_true", help="the 2 GiB byte-exact SHA-256 transfers too")
    ap.add_argument("--verify-bytes", type=int, default=2 * GiB)
    ap.add_argument("--proxy-cpu", type=int, default=1)
    ap.add_argument("--load-cpu", type=int, default=0)
    a = ap.parse_args()
    defaults = {"rounds": (3, 1), "bytes": (GiB, 256 * MiB), "duration": (8, 4), "hs_seconds": (3.0, 2.0),
                "idle": (2000, 500), "latency_count": (1000, 500)}
    for k, (normal, quick) in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, quick if a.quick else normal)
    return a


def make_proxies(args):
    """The Proxy objects, in column order."""
    only = set(args.only.split(","))
    proxies = []
    if "exrelay" in only:
        specs = args.exrelay or [os.environ.get("EXRELAY") or os.path.join(TOP, "relay", "exrelay")]
        for i, spec in enumerate(specs):
            label, path = spec.split("=", 1) if "=" in spec else ("exrelay" if i == 0 else "exrelay-%d" % (i + 1),
                                                                 spec)
            proxies.append(Proxy(label, "exrelay", os.path.abspath(path)))
    if "haproxy" in only:
        proxies.append(Proxy("haproxy", "haproxy", args.haproxy))
    if "nginx" in only:
        proxies.append(Proxy("nginx", "nginx", args.nginx))
    missing = [p.path for p in proxies if not os.access(p.path, os.X_OK)]
    if "get" in args.tests.split(",") and not os.access(args.wrk, os.X_OK):
        missing.append(args.wrk)
    for tool in ["taskset", "pkg-config", args.cc] + (["strace"] if args.syscalls else []):
        if not shutil.which(tool):
            missing.append(tool)
    if missing:
        raise SystemExit("compare: not found: %s (contrib/bench/install-deps installs the peers and tools; "
                         "build exrelay first)" % ", ".join(missing))
    if len({p.label for p in proxies}) != len(proxies):
        raise SystemExit("compare: two columns with the same label; use --exrelay LABEL=PATH")
    return proxies


def main():
    """Runs everything; prints the table and the JSON line."""
    args = parse_args()
    tests = args.tests.split(",")
    proxies = make_proxies(args)
    if os.cpu_count() < 2 or max(args.proxy_cpu, args.load_cpu) >= os.cpu_count():
        raise SystemExit("compare: needs two CPUs (--proxy-cpu and --load-cpu)")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    args.nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    # HAProxy wants about 2.5 descriptors per connection of maxconn and will not start without them
    args.maxconn = min(30000, int((args.nofile - 200) / 2.5))
    if args.maxconn < args.idle + 500:
        raise SystemExit("compare: RLIMIT_NOFILE %d is too low for --idle %d" % (args.nofile, args.idle))
    la0 = loadavg()
    if la0[0] > 0.5:
        log("warning: load average %.2f: other work on this machine moves every number" % la0[0])
    t_start = time.monotonic()
    args.loadgen = build_loadgen(args)
    backend_port = harness.free_port()
    bd = harness.tmpdir("exrelay-compare-backend-")
    backend = harness.Process("backend", load_argv(args, [args.loadgen, "backend", str(backend_port)]), bd)
    if not harness.wait_port("127.0.0.1", backend_port, 10.0, backend.alive):
        raise SystemExit("compare: the backend did not start: %s" % backend.stderr_text())

    errors = []
    runs = {p.label: {} for p in proxies}         # label -> test -> [{"metrics", "readings"} per round]
    for p in proxies:
        for attempt in range(3):      # a port picked free may be taken before the proxy binds it
            try:
                p.start(args, backend_port)
                break
            except (RuntimeError, OSError, subprocess.SubprocessError) as e:
                if p.proc:
                    p.proc.stop()
                if attempt == 2:
                    p.dead = str(e)
                    errors.append("%s: start: %s" % (p.label, e))
                    log("ERROR %s" % errors[-1])

    def run(p, test, fn):
        """Runs one test on one proxy, records its numbers or its error."""
        if p.dead:
            return
        log("%s: %s" % (p.label, test))
        try:
            metrics, readings = fn()
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
            errors.append("%s: %s: %s" % (p.label, test, e))
            log("ERROR %s" % errors[-1])
            if not p.proc.alive():
                p.dead = "exited during %s" % test
            return
        runs[p.label].setdefault(test, []).append({"metrics": metrics, "readings": readings})
        if readings.get("error"):
            errors.append("%s: %s: %s" % (p.label, test, readings["error"]))
            log("ERROR %s" % errors[-1])
        if not p.proc.alive():
            p.dead = "exited during %s" % test
            errors.append("%s: %s: %s" % (p.label, test, p.stderr_tail()))

    plan = []
    if "hs" in tests:
        plan += [("hs-full", lambda p: t_hs(args, p, False)), ("hs-resumed", lambda p: t_hs(args, p, True))]
    if "get" in tests:
        plan.append(("get", lambda p: t_get(args, p)))
    if "getrate" in tests:
        plan.append(("getrate", lambda p: t_getrate(args, p)))
    if "latency" in tests:
        plan.append(("latency", lambda p: t_latency(args, p)))
    if "transfer" in tests:
        for tls in (True, False):
            for up in (True, False):
                plan.append((("tls" if tls else "plain") + ("-up" if up else "-down"),
                             lambda p, tls=tls, up=up: t_transfer(args, p, tls, up)))
    for rnd in range(args.rounds):
        order = proxies[rnd % len(proxies):] + proxies[:rnd % len(proxies)]
        log("round %d of %d: %s" % (rnd + 1, args.rounds, ", ".join(p.label for p in order)))
        if rnd == 0 and "idle" in tests:      # on fresh proxies: what earlier tests freed is not reused
            for p in order:
                run(p, "idle", lambda p=p: t_idle(args, p))
        for test, fn in plan:
            for p in order:
                run(p, test, lambda p=p, fn=fn: fn(p))
    if args.syscalls:
        for p in proxies:
            run(p, "syscalls", lambda p=p: t_syscalls(args, p))
    if args.verify:
        log("computing the SHA-256 of %d pattern bytes" % args.verify_bytes)
        r = subprocess.run([args.loadgen, "digest", str(args.verify_bytes)], capture_output=True, text=True,
                           check=True, timeout=600)
        expect = r.stdout.strip()
        for p in proxies:
            run(p, "verify", lambda p=p: t_verify(args, p, expect))

    results, marks = summarize(runs)
    la1 = loadavg()
    elapsed = time.monotonic() - t_start

    print("exrelay compare: %s UTC, commit %s, %d round(s), proxies on CPU %d, load on CPU %d, %.0f s" % (
        time.strftime("%Y-%m-%d %H:%M", time.gmtime()), git_commit(), args.rounds, args.proxy_cpu, args.load_cpu,
        elapsed))
    print("load average %.2f at the start, %.2f at the end%s" % (
        la0[0], la1[0], " (busy machine: the numbers are noisy)" if max(la0[0], la1[0]) > 0.5 else ""))
    for p in proxies:
        print("  %-10s %s (%s)%s" % (p.label, p.version, p.path, "  [OUT: %s]" % p.dead if p.dead else ""))
    print_table(args, proxies, results, marks)
    for e in errors:
        print("ERROR: %s" % e)
    out = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": git_commit(),
        "host": platform.node(), "kernel": platform.release(), "elapsed_s": round(elapsed, 1),
        "loadavg_start": la0, "loadavg_end": la1,
        "settings": {k: getattr(args, k) for k in (
            "rounds", "bytes", "duration", "warmup", "connections", "hs_seconds", "hs_threads", "idle",
            "latency_count", "latency_interval_us", "syscalls", "syscall_requests", "syscall_bytes", "verify",
            "verify_bytes", "proxy_cpu", "load_cpu", "nofile", "maxconn")},
        "proxies": {p.label: {"kind": p.kind, "path": p.path, "version": p.version, "dead": p.dead,
                              "median": results[p.label], "runs": runs[p.label]}
                    for p in proxies},
        "errors": errors,
    }
    print(json.dumps(out, sort_keys=True))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
