#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
failover.py: several Exchange servers behind exrelay and behind HAProxy 2.6, side by side in one
run: how fast a server whose health page turns 503 stops receiving new requests, what choosing
a server costs per request, and how many clients move when a server is removed.

Everything runs on loopback:

- backends: three tiny HTTP servers of this script's own (one asyncio child process, pinned to
  CPU 0 with the client): `/owa/healthcheck.htm` answers 200 or 503 as the script switches it,
  any other GET 200 with `X-Bench-Server: exN`; each records the arrival time (CLOCK_MONOTONIC)
  and the request id of every request that is not a check.
- exrelay: one worker, plaintext listener with `proxy_protocol = "required"; trusted_proxies =
  [ "127.0.0.1/32" ]`, one backend with three named servers and `check = { interval; timeout;
  rise; fall; path = "auto"; }` (the route's /owa: GET /owa/healthcheck.htm), rendezvous hashing
  of the client address.
- haproxy: HAProxy as an Exchange admin sets it up: `bind ... accept-proxy`, `balance source`,
  `option httpchk GET /owa/healthcheck.htm`, `http-check expect status 200`, `inter/rise/fall` and
  `timeout check` the same as exrelay's. Master-worker (-W), so that it can be reloaded.
- haproxy-consistent: the same plus `hash-type consistent` (only in the "moves" part).

Every request of the client is a new connection opening with a PROXY v1 header from a varying
client address (10.x.y.z), then `GET /owa/?fo=ID`, `Connection: close`.

1. failover: a steady stream (--rate requests per second) through one proxy; after 1 s plus a
   random part of the check interval (T0), one server's health page turns 503 (the server
   changes every run). Reported: the time from T0 to the last request sent after T0 that still
   reached that server (its arrival there), and how many did. Then the page turns 200 again and
   the script waits until every server takes requests. --runs runs per proxy, alternating.
2. hashing: wrk (one thread, --connections connections, the same PROXY + GET + close stream from
   a Lua request()) against each proxy with 3 servers, with 1 server, and with 3 servers that
   all have the address of the 1 (the same choosing, one destination for every backend
   connection, as with 1 server); the backend is HAProxy
   answering itself on three ports (so that the Python backends are not the limit); requests per
   proxy CPU second (process CPU clock). Proxies pinned to CPU 1, wrk and the backend to CPU 0.
   The six proxies take turns, --runs rounds of --hash-duration seconds each.
3. moves: --addresses client addresses, one request each, through each proxy with three servers;
   then the proxy is reloaded with ex3 removed (exrelay: SIGHUP; HAProxy: SIGUSR2 to the master)
   and the same addresses asked again. Reported: the fraction that changed server, and the
   fraction of those that were not on ex3 (moved for nothing).

Usage: contrib/bench/failover.py [--exrelay PATH] [--haproxy PATH] [--wrk PATH] [--runs N]
           [--rate R] [--interval S] [--rise N] [--fall N] [--timeout S] [--hash-duration S]
           [--connections N] [--addresses N] [--parts failover,hashing,moves]
Output: progress on stderr; the tables, then one line of JSON, on stdout. Exit status 1 on error.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))

from benchlib import log, pin, cpu_clock, check_exited, begin, git_commit, haproxy_version, machine, end  # noqa: E402

PROXY_CPU = 1           # the proxies
CLIENT_CPU = 0          # this script, the backends, wrk
NAMES = ("ex1", "ex2", "ex3")
HEALTH = "/owa/healthcheck.htm"

# ----------------------------------------------------------------------------------------------
# The backends (a child process: `failover.py --serve-backends N`)
# ----------------------------------------------------------------------------------------------


class Backends:
    """N HTTP servers ex1..exN and a control port, in one asyncio loop. Control lines:
    `health NAME STATUS` -> the monotonic time of the switch; `log` -> JSON [[name, t, id], ...]
    of the requests since the last `log` (checks not included), then forgotten; `checks` -> JSON
    {name: count}."""

    def __init__(self, n):
        self.names = ["ex%d" % (i + 1) for i in range(n)]
        self.status = {name: 200 for name in self.names}
        self.log, self.checks = [], {name: 0 for name in self.names}

    async def serve(self, reader, writer, name):
        """One connection: requests until Connection: close (or HTTP/1.0) or EOF."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                t = time.monotonic()
                line, _, rest = head.partition(b"\r\n")
                parts = line.split()
                target = parts[1].decode("latin-1") if len(parts) == 3 else ""
                if target == HEALTH:
                    status = self.status[name]
                    self.checks[name] += 1
                else:
                    status = 200
                    rid = target.rpartition("fo=")[2]
                    self.log.append((name, t, int(rid) if rid.isdigit() else -1))
                close = parts[2:] != [b"HTTP/1.1"] or b"\nconnection: close" in rest.lower()
                writer.write(b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n"
                             b"X-Bench-Server: %s\r\n%s\r\nok" % (
                                 status, b"OK" if status == 200 else b"Service Unavailable", name.encode(),
                                 b"Connection: close\r\n" if close else b""))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        writer.close()

    async def control(self, reader, writer):
        """The control connection: one command per line, one answer line each."""
        while True:
            line = await reader.readline()
            if not line:
                break
            words = line.decode().split()
            if words[:1] == ["health"]:
                self.status[words[1]] = int(words[2])
                answer = "%.6f" % time.monotonic()
            elif words[:1] == ["log"]:
                answer, self.log = json.dumps(self.log), []
            elif words[:1] == ["checks"]:
                answer = json.dumps(self.checks)
            else:
                answer = "error"
            writer.write(answer.encode() + b"\n")
            await writer.drain()
        writer.close()

    async def main(self):
        """Binds every server and the control port on 127.0.0.1:0, prints the ports, serves."""
        ports = {}
        for name in self.names:
            srv = await asyncio.start_server(lambda r, w, n=name: self.serve(r, w, n), "127.0.0.1", 0,
                                             backlog=1024)
            ports[name] = srv.sockets[0].getsockname()[1]
        ctl = await asyncio.start_server(self.control, "127.0.0.1", 0)
        print(json.dumps({"ports": ports, "control": ctl.sockets[0].getsockname()[1]}), flush=True)
        await asyncio.Event().wait()


class BackendsClient:
    """The parent's side: starts the child and talks to its control port."""

    def __init__(self, n, pinning):
        d = harness.tmpdir("failover-backends-")
        self.proc = harness.Process("backends", pin(CLIENT_CPU, pinning) + [
            sys.executable, os.path.abspath(__file__), "--serve-backends", str(n)], d)
        if not harness.wait_for(lambda: not self.proc.alive() or self.proc.stdout_text().endswith("\n"), 10):
            raise RuntimeError("backends did not start: %s" % self.proc.stderr_text()[-2000:])
        info = json.loads(self.proc.stdout_text())
        self.ports = info["ports"]
        self.ctl = socket.create_connection(("127.0.0.1", info["control"]), timeout=10)
        self.ctl_file = self.ctl.makefile("r")

    def command(self, line):
        """One control command; its answer line."""
        self.ctl.sendall(line.encode() + b"\n")
        return self.ctl_file.readline().strip()

    def health(self, name, status):
        """Switches name's health page to status; returns the backend's monotonic time of it."""
        return float(self.command("health %s %d" % (name, status)))

    def take_log(self):
        """The requests since the last call: [(name, t, id)]."""
        return [tuple(x) for x in json.loads(self.command("log"))]


# ----------------------------------------------------------------------------------------------
# Proxies
# ----------------------------------------------------------------------------------------------

EXRELAY_CONF = """\
global = {{ log_level = "warning"; max_connections = 4000; workers = 1; drain_timeout = 1; }};
listeners = (
  {{ name = "public"; bind = "127.0.0.1:{port}"; proxy_protocol = "required";
     trusted_proxies = [ "127.0.0.1/32" ]; }}
);
backends = (
  {{ name = "exchange"; idle_timeout = 60;
     servers = (
{servers}
     );
     check = {{ interval = {interval}; timeout = {timeout}; rise = {rise}; fall = {fall}; path = "auto"; }}; }}
);
routes = ( {{ backend = "exchange"; paths = [ "/owa" ]; }} );
"""

HAPROXY_CONF = """\
global
    maxconn 4000
    nbthread 1
    stats socket {dir}/stats.sock level admin
defaults
    mode http
    option http-no-delay
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout check {timeout_ms}ms
frontend fe
    bind 127.0.0.1:{port} accept-proxy
    default_backend exchange
backend exchange
    balance source
{hash_type}    option httpchk GET /owa/healthcheck.htm
    http-check expect status 200
    default-server inter {interval_ms}ms rise {rise} fall {fall}
{servers}
"""

# The fast backend of the hashing part: HAProxy answering every request itself, on three ports.
FAST_BACKEND_CONF = """\
global
    maxconn 8000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
{frontends}
"""

FAST_FRONTEND = """\
frontend {name}
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string ok hdr X-Bench-Server {name}
"""


class Proxy:
    """One proxy under test: .name, .kind ("exrelay"/"haproxy"), .port, .proc; .reload(servers)."""

    def __init__(self, name, kind, args, servers, pinning, hash_type=""):
        """Writes the configuration for `servers` ([(name, port)]) and starts the proxy."""
        self.name, self.kind, self.args, self.hash_type = name, kind, args, hash_type
        self.dir = harness.tmpdir("failover-%s-" % name)
        self.port = harness.free_port()
        self.cfg = os.path.join(self.dir, "exrelay.conf" if kind == "exrelay" else "haproxy.cfg")
        self.write(servers)
        if kind == "exrelay":
            self.addr_file = os.path.join(self.dir, "addrs")
            argv = [args.exrelay, "-f", self.cfg, "-a", self.addr_file]
        else:
            argv = [args.haproxy, "-W", "-db", "-f", self.cfg]
            chk = subprocess.run([args.haproxy, "-c", "-f", self.cfg], capture_output=True, text=True, timeout=20)
            if chk.returncode != 0:
                raise RuntimeError("haproxy refused %s: %s%s" % (self.cfg, chk.stdout[-2000:], chk.stderr[-2000:]))
        self.proc = harness.Process(name, pin(PROXY_CPU, pinning) + argv, self.dir)
        if not harness.wait_port("127.0.0.1", self.port, 10.0, self.proc.alive):
            raise RuntimeError("%s not listening on %d (exit %r): %s" % (
                name, self.port, self.proc.returncode, self.proc.stderr_text()[-3000:]))

    def write(self, servers):
        """Writes the configuration file (atomically) for `servers`."""
        a = self.args
        if self.kind == "exrelay":
            text = EXRELAY_CONF.format(
                port=self.port, interval=a.interval, timeout=a.timeout, rise=a.rise, fall=a.fall,
                servers=",\n".join('       { name = "%s"; address = "127.0.0.1:%d"; }' % s for s in servers))
        else:
            text = HAPROXY_CONF.format(
                dir=self.dir, port=self.port, timeout_ms=round(a.timeout * 1000), interval_ms=round(a.interval * 1000),
                rise=a.rise, fall=a.fall, hash_type="    hash-type %s\n" % self.hash_type if self.hash_type else "",
                servers="\n".join("    server %s 127.0.0.1:%d check" % s for s in servers))
        with open(self.cfg + ".new", "w") as f:
            f.write(text)
        os.rename(self.cfg + ".new", self.cfg)

    def pid(self):
        """The pid whose CPU time counts: exrelay's, or HAProxy's worker (not the master)."""
        if self.kind == "exrelay":
            return self.proc.pid
        return self.worker_pid()

    def worker_pid(self):
        """HAProxy's current worker, from `show info` on the stats socket (None if it does not answer)."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(os.path.join(self.dir, "stats.sock"))
                s.sendall(b"show info\n")
                out = harness.recv_all(s)
        except OSError:
            return None
        for line in out.decode().splitlines():
            if line.startswith("Pid: "):
                return int(line[5:])
        return None

    def reload(self, servers):
        """Rewrites the configuration for `servers` and reloads; returns once the new one serves."""
        self.write(servers)
        if self.kind == "exrelay":
            before = os.stat(self.addr_file).st_ino
            self.proc.send_signal(signal.SIGHUP)
            done = harness.wait_for(lambda: os.path.exists(self.addr_file) and
                                    os.stat(self.addr_file).st_ino != before, 10)
        else:
            before = self.worker_pid()
            self.proc.send_signal(signal.SIGUSR2)
            done = harness.wait_for(lambda: self.worker_pid() not in (None, before), 10)
        if not done or not self.proc.alive():
            raise RuntimeError("%s: reload did not complete: %s" % (self.name, self.proc.stderr_text()[-2000:]))
        time.sleep(0.5)     # the old worker stops listening / the workers take the new configuration

    def check_alive(self):
        """RuntimeError with the stderr tail when the proxy exited."""
        check_exited(self.name, self.proc)


# ----------------------------------------------------------------------------------------------
# The client
# ----------------------------------------------------------------------------------------------

def client_addr(i):
    """The i-th client address (10.0.0.1 on; never .0 or .255)."""
    i = i % (254 * 256 * 256)
    return "10.%d.%d.%d" % (i // (254 * 256), (i // 254) % 256, i % 254 + 1)


def request(port, src, rid, timeout=5.0):
    """One request on a new connection with a PROXY v1 header from `src`; (status, server) where
    status 0 means no HTTP answer and server is the X-Bench-Server header ('' when absent)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("PROXY TCP4 %s 127.0.0.1 %d %d\r\nGET /owa/?fo=%d HTTP/1.1\r\nHost: mail.example.com\r\n"
                       "User-Agent: failover-bench\r\nConnection: close\r\n\r\n" % (
                           src, 1024 + rid % 60000, port, rid)).encode())
            data = harness.recv_all(s)
    except OSError:
        return 0, ""
    if not data.startswith(b"HTTP/1."):
        return 0, ""
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    server = ""
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "x-bench-server":
            server = v.strip()
    return int(head.split(" ", 2)[1]), server


def wait_all_serving(proxy, names, timeout, base=900000):
    """Sends requests from fresh addresses until every server in `names` has answered one."""
    deadline, seen, i = time.monotonic() + timeout, set(), 0
    while time.monotonic() < deadline:
        status, server = request(proxy.port, client_addr(base + i), base + i)
        i += 1
        if status == 200:
            seen.add(server)
        if seen >= set(names):
            return True
        if i % 30 == 0:
            time.sleep(0.1)
    raise RuntimeError("%s: servers %s never answered within %.0f s" % (
        proxy.name, sorted(set(names) - seen), timeout))


# ----------------------------------------------------------------------------------------------
# 1. Failover
# ----------------------------------------------------------------------------------------------

def failover_run(args, proxy, backends, victim, run_no):
    """One failover run through `proxy`: stream, turn `victim`'s health page 503, stream on."""
    proxy.check_alive()
    backends.take_log()
    period = 1.0 / args.rate
    flip_after = 1.0 + random.uniform(0, args.interval)
    stop_after = flip_after + args.fall * args.interval + args.timeout + 2.0
    sent, statuses = {}, {}
    t_start = time.monotonic()
    t0 = None
    rid = run_no * 1000000
    next_t = t_start
    while True:
        now = time.monotonic()
        if t0 is None and now - t_start >= flip_after:
            t0 = backends.health(victim, 503)
        if now - t_start >= stop_after:
            break
        if now < next_t:
            time.sleep(next_t - now)
        next_t += period
        rid += 1
        sent[rid] = time.monotonic()
        status, _ = request(proxy.port, client_addr(rid), rid)
        statuses[status] = statuses.get(status, 0) + 1
    t_end = time.monotonic()
    arrivals = backends.take_log()
    after = [t for name, t, i in arrivals if name == victim and i in sent and sent[i] >= t0]
    n_sent = len(sent)
    r = {"victim": victim, "last_s": round(max(after) - t0, 3) if after else 0.0, "after_t0": len(after),
         "requests": n_sent, "rate": round(n_sent / (t_end - t_start)), "non_200": n_sent - statuses.get(200, 0),
         "flip_at_s": round(flip_after, 3)}
    # back to health: the page answers 200 again, wait until the proxy uses the server again
    backends.health(victim, 200)
    wait_all_serving(proxy, NAMES, args.rise * args.interval + args.timeout + 10)
    backends.take_log()
    return r


def part_failover(args, proxies, backends, out):
    """--runs failover runs per proxy, alternating; the victim rotates over the servers."""
    for p in proxies:
        wait_all_serving(p, NAMES, 10)
        p.failover = []
    for k in range(args.runs):
        for p in proxies:
            victim = NAMES[k % len(NAMES)]
            r = failover_run(args, p, backends, victim, k * 10 + proxies.index(p) + 1)
            p.failover.append(r)
            log("failover %s run %d: %s" % (p.name, k + 1, json.dumps(r)))
    out["failover"] = {p.name: {"runs": p.failover,
                                "median_last_s": round(statistics.median(r["last_s"] for r in p.failover), 3),
                                "median_after_t0": statistics.median(r["after_t0"] for r in p.failover)}
                       for p in proxies}


def print_failover(args, proxies, out):
    """The failover table."""
    print()
    print("1. Failover: one server's /owa/healthcheck.htm turns 503 at T0; check interval %g s, timeout %g s, "
          "rise %d, fall %d; ~%d new connections/s, PROXY v1 from varying 10.x.y.z" % (
              args.interval, args.timeout, args.rise, args.fall, args.rate))
    fmt = "%-10s %4s %6s %14s %14s %9s %7s %8s"
    print(fmt % ("proxy", "run", "server", "last req (s)", "reqs after T0", "requests", "req/s", "non-200"))
    for p in proxies:
        for i, r in enumerate(p.failover, 1):
            print(fmt % (p.name, i, r["victim"], "%.3f" % r["last_s"], r["after_t0"], r["requests"], r["rate"],
                         r["non_200"]))
    for p in proxies:
        s = out["failover"][p.name]
        print(fmt % (p.name, "med", "", "%.3f" % s["median_last_s"], s["median_after_t0"], "", "", ""))
    print("last req = arrival at that server of the last request sent after T0, minus T0 (the backend's clock); "
          "reqs after T0 = requests sent after T0 that reached it.")


# ----------------------------------------------------------------------------------------------
# 2. Hashing cost
# ----------------------------------------------------------------------------------------------

# wrk parses the first request() of thread 0 as HTTP to count pipelined requests: that one goes
# without the PROXY header (it is never sent).
WRK_SCRIPT = """
local n = -1
request = function()
  n = n + 1
  if n == 0 then
    return "GET / HTTP/1.1\\r\\nHost: mail.example.com\\r\\nConnection: close\\r\\n\\r\\n"
  end
  local a = n %% (254 * 65536)
  return string.format("PROXY TCP4 10.%%d.%%d.%%d 127.0.0.1 %%d %(port)d\\r\\n" ..
    "GET /owa/?fo=%%d HTTP/1.1\\r\\nHost: mail.example.com\\r\\nUser-Agent: failover-bench\\r\\n" ..
    "Connection: close\\r\\n\\r\\n", math.floor(a / 65536), math.floor(a / 256) %% 256, a %% 254 + 1, 1024 + n %% 60000, n)
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("FO-RESULT requests=%%d duration_us=%%d connect=%%d read=%%d write=%%d " ..
    "status=%%d timeout=%%d\\n", summary.requests, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout))
end
"""


def run_wrk(args, proxy, seconds, pinning):
    """wrk against proxy for `seconds`; the run's numbers (RuntimeError on wrk errors)."""
    proxy.check_alive()
    script = os.path.join(proxy.dir, "failover.lua")
    with open(script, "w") as f:
        f.write(WRK_SCRIPT % {"port": proxy.port})
    argv = pin(CLIENT_CPU, pinning) + [args.wrk, "-t", "1", "-c", str(args.connections), "-d", "%ds" % seconds,
                                      "-s", script, "http://127.0.0.1:%d/" % proxy.port]
    pid = proxy.pid()
    c0, t0 = cpu_clock(pid), time.monotonic()
    res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    cpu, wall = cpu_clock(pid) - c0, time.monotonic() - t0
    proxy.check_alive()
    line = [x for x in res.stdout.splitlines() if x.startswith("FO-RESULT ")]
    if res.returncode != 0 or not line:
        raise RuntimeError("wrk against %s failed (%d): %s %s" % (proxy.name, res.returncode, res.stdout[-2000:],
                                                                 res.stderr[-2000:]))
    r = {k: int(v) for k, v in (kv.split("=") for kv in line[0].split()[1:])}
    errors = {k: r[k] for k in ("connect", "read", "write", "status", "timeout") if r[k]}
    if errors:
        raise RuntimeError("wrk against %s: errors %r" % (proxy.name, errors))
    return {"requests": r["requests"], "rps": round(r["requests"] / (r["duration_us"] / 1e6)),
            "cpu_s": round(cpu, 3), "cpu_share": round(cpu / wall, 3),
            "req_per_cpu_s": round(r["requests"] / cpu) if cpu > 0 else None,
            "us_per_req": round(1e6 * cpu / r["requests"], 2) if r["requests"] else None}


def fast_name(port, fast_ports):
    """The name the fast backend answers with on `port`."""
    return [n for n, p in fast_ports.items() if p == port][0]


def part_hashing(args, pinning, out):
    """exrelay and HAProxy with 3 servers and with 1, in front of a fast backend; wrk in turns."""
    fast_ports = {n: harness.free_port() for n in NAMES}
    d = harness.tmpdir("failover-fast-")
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(FAST_BACKEND_CONF.format(frontends="".join(FAST_FRONTEND.format(name=n, port=p)
                                                           for n, p in fast_ports.items())))
    fast = harness.Process("fast-backend", pin(CLIENT_CPU, pinning) + [args.haproxy, "-db", "-f", cfg], d)
    for p in fast_ports.values():
        if not harness.wait_port("127.0.0.1", p, 10.0, fast.alive):
            raise RuntimeError("fast backend not listening: %s" % fast.stderr_text()[-2000:])
    three = list(fast_ports.items())
    # "3x1": three servers (three names, three hash scores) at ex1's one address: the cost of
    # choosing, without spreading the backend connections over three destinations
    variants = (("3", three), ("1", three[:1]), ("3x1", [(n, fast_ports["ex1"]) for n in NAMES]))
    proxies = []
    for kind in ("exrelay", "haproxy"):
        for suffix, servers in variants:
            p = Proxy("%s-%s" % (kind, suffix), kind, args, servers, pinning)
            p.answering = sorted({fast_name(port, fast_ports) for _, port in servers})
            proxies.append(p)
    for p in proxies:
        wait_all_serving(p, p.answering, 10)
        log("%s: warm-up 1 s" % p.name)
        run_wrk(args, p, 1, pinning)
        p.hashing = []
    n = len(variants)
    for k in range(args.runs):
        # the variants of each proxy in the opposite order every other round: a drift in the
        # machine's load does not favour one of them
        turn = proxies if k % 2 == 0 else [q for i in range(0, len(proxies), n) for q in proxies[i:i + n][::-1]]
        for p in turn:
            r = run_wrk(args, p, args.hash_duration, pinning)
            p.hashing.append(r)
            log("hashing %s run %d: %s" % (p.name, k + 1, json.dumps(r)))
    res = {}
    for p in proxies:
        res[p.name] = {"runs": p.hashing,
                       "median_req_per_cpu_s": round(statistics.median(r["req_per_cpu_s"] for r in p.hashing)),
                       "median_us_per_req": round(statistics.median(r["us_per_req"] for r in p.hashing), 2),
                       "median_rps": round(statistics.median(r["rps"] for r in p.hashing))}
    for kind in ("exrelay", "haproxy"):
        for v in ("3", "3x1"):
            a, b = res["%s-%s" % (kind, v)], res["%s-1" % kind]
            per_round = [round(1000 * (x["us_per_req"] - y["us_per_req"])) for x, y in zip(a["runs"], b["runs"])]
            res["%s_%s_vs_1" % (kind, v)] = {
                "ns_per_req": round(1000 * (a["median_us_per_req"] - b["median_us_per_req"])),
                "pct": round(100 * (a["median_us_per_req"] / b["median_us_per_req"] - 1), 2),
                "per_round_ns": per_round}
    out["hashing"] = res
    for p in proxies:
        p.proc.stop()
    fast.stop()
    return proxies


def print_hashing(args, proxies, out):
    """The hashing table."""
    print()
    print("2. Cost of choosing a server: wrk -t1 -c%d, %d s per run, new connection + PROXY v1 + GET per request; "
          "proxy pinned to CPU %d" % (args.connections, args.hash_duration, PROXY_CPU))
    fmt = "%-12s %4s %9s %8s %7s %6s %10s %8s"
    print(fmt % ("proxy", "run", "requests", "req/s", "cpu s", "cpu%", "req/cpu s", "us/req"))
    for p in proxies:
        for i, r in enumerate(p.hashing, 1):
            print(fmt % (p.name, i, r["requests"], r["rps"], "%.2f" % r["cpu_s"], "%.1f" % (100 * r["cpu_share"]),
                         r["req_per_cpu_s"], "%.2f" % r["us_per_req"]))
    for p in proxies:
        s = out["hashing"][p.name]
        print(fmt % (p.name, "med", "", s["median_rps"], "", "", s["median_req_per_cpu_s"],
                     "%.2f" % s["median_us_per_req"]))
    for kind in ("exrelay", "haproxy"):
        for v, what in (("3", "3 servers"), ("3x1", "3 servers at one address")):
            s = out["hashing"]["%s_%s_vs_1" % (kind, v)]
            print("%s: %s vs 1: %+d ns per request (%+.2f%%) of the medians; per round: %s ns" % (
                kind, what, s["ns_per_req"], s["pct"], ", ".join("%+d" % x for x in s["per_round_ns"])))
    print("-3: ex1..ex3 at three ports; -1: ex1 alone; -3x1: ex1..ex3 all at ex1's port. cpu s = the proxy's "
          "CPU time (process CPU clock, all threads; HAProxy's worker); us/req = cpu s / requests.")


# ----------------------------------------------------------------------------------------------
# 3. Moves
# ----------------------------------------------------------------------------------------------

def mapping(proxy, n):
    """{address index: server} for n addresses, one request each."""
    m = {}
    for i in range(n):
        status, server = request(proxy.port, client_addr(i), 5000000 + i)
        if status != 200 or not server:
            raise RuntimeError("%s: address %s answered %d" % (proxy.name, client_addr(i), status))
        m[i] = server
    return m


def part_moves(args, proxies, backends, out):
    """Mapping with three servers, reload without ex3, mapping again, for each proxy."""
    res = {}
    two = [(n, backends.ports[n]) for n in NAMES[:2]]
    for p in proxies:
        wait_all_serving(p, NAMES, 10)
        before = mapping(p, args.addresses)
        p.reload(two)
        wait_all_serving(p, NAMES[:2], 10)
        after = mapping(p, args.addresses)
        if "ex3" in after.values():
            raise RuntimeError("%s: ex3 still answers after the reload" % p.name)
        moved = sum(1 for i in before if before[i] != after[i])
        needless = sum(1 for i in before if before[i] != "ex3" and before[i] != after[i])
        share = {n: sum(1 for v in before.values() if v == n) for n in NAMES}
        if p.kind == "exrelay":     # the choice is relay/hrw.c's, of the address in the PROXY header
            wrong = sum(1 for i in before if before[i] != NAMES[harness.hrw_pick(NAMES, client_addr(i))])
            if wrong:
                raise RuntimeError("exrelay: %d addresses not on the server hrw_pick() predicts" % wrong)
        res[p.name] = {"moved": moved, "moved_frac": round(moved / args.addresses, 4), "not_on_ex3_moved": needless,
                       "not_on_ex3_moved_frac": round(needless / args.addresses, 4), "on_ex3": share["ex3"],
                       "shares": share}
        log("moves %s: %s" % (p.name, json.dumps(res[p.name])))
    out["moves"] = res


def print_moves(args, proxies, out):
    """The moves table."""
    print()
    print("3. Clients moved when ex3 of ex1..ex3 is removed (reload), %d client addresses, one request each "
          "before and after" % args.addresses)
    fmt = "%-20s %-38s %12s %8s %20s"
    print(fmt % ("proxy", "hashing", "on ex1/2/3", "moved", "moved, not from ex3"))
    how = {"exrelay": "rendezvous (client address)", "haproxy": "balance source (map-based)",
           "haproxy-consistent": "balance source, hash-type consistent"}
    for p in proxies:
        r = out["moves"][p.name]
        print(fmt % (p.name, how.get(p.name, ""), "/".join(str(r["shares"][n]) for n in NAMES),
                     "%.1f%%" % (100 * r["moved_frac"]), "%.1f%%" % (100 * r["not_on_ex3_moved_frac"])))
    print("moved = addresses whose server changed / all; the ideal is the share of ex3 (~33%), with 0% moved "
          "from ex1 and ex2.")


# ----------------------------------------------------------------------------------------------

def main():
    """Parses options, runs the parts asked for, prints the tables and the JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].strip(),
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exrelay", default=os.environ.get("EXRELAY") or os.path.join(TOP, "relay", "exrelay"),
                    help="exrelay binary (default $EXRELAY, else the checkout's relay/exrelay; build with -O2)")
    ap.add_argument("--haproxy", default="/usr/sbin/haproxy", help="haproxy binary (2.6)")
    ap.add_argument("--wrk", default="wrk", help="wrk binary (Debian package wrk), for the hashing part")
    ap.add_argument("--parts", default="failover,hashing,moves", help="which parts to run (default all three)")
    ap.add_argument("--runs", type=int, default=3, help="failover and hashing runs per proxy (default 3)")
    ap.add_argument("--rate", type=int, default=300, help="failover: new requests per second (default 300)")
    ap.add_argument("--interval", type=float, default=1.0, help="check interval, s (default 1)")
    ap.add_argument("--timeout", type=float, default=0.5, help="check timeout, s (default 0.5)")
    ap.add_argument("--rise", type=int, default=2, help="checks to go up (default 2)")
    ap.add_argument("--fall", type=int, default=2, help="checks to go down (default 2)")
    ap.add_argument("--hash-duration", type=int, default=5, help="hashing: seconds per wrk run (default 5)")
    ap.add_argument("--connections", type=int, default=20, help="hashing: wrk connections (default 20)")
    ap.add_argument("--addresses", type=int, default=2000, help="moves: client addresses (default 2000)")
    ap.add_argument("--serve-backends", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_backends:
        asyncio.run(Backends(args.serve_backends).main())
        return
    parts = set(args.parts.split(","))
    if parts - {"failover", "hashing", "moves"} or not parts:
        ap.error("--parts is a comma-separated list of failover, hashing, moves")
    if args.runs < 1 or args.rate < 1 or args.interval <= 0 or args.addresses < 1:
        ap.error("--runs, --rate, --interval and --addresses must be positive")
    if not os.access(args.exrelay, os.X_OK):
        ap.error("exrelay binary not found at %s (use --exrelay)" % args.exrelay)
    if not os.access(args.haproxy, os.X_OK):
        ap.error("haproxy not found at %s (apt-get install -y haproxy)" % args.haproxy)
    if "hashing" in parts and not shutil.which(args.wrk):
        ap.error("wrk not found (apt-get install -y wrk), or leave out the hashing part (--parts)")

    pinning, base, load = begin("failover", CLIENT_CPU, PROXY_CPU)

    out, errors, tables = {}, [], []
    try:
        if parts & {"failover", "moves"}:
            backends = BackendsClient(len(NAMES), pinning)
            three = [(n, backends.ports[n]) for n in NAMES]
            proxies = [Proxy("exrelay", "exrelay", args, three, pinning),
                       Proxy("haproxy", "haproxy", args, three, pinning)]
            if "failover" in parts:
                part_failover(args, proxies, backends, out)
                tables.append((print_failover, list(proxies)))
            if "moves" in parts:
                proxies.append(Proxy("haproxy-consistent", "haproxy", args, three, pinning, "consistent"))
                part_moves(args, proxies, backends, out)
                tables.append((print_moves, proxies))
            out["checks_answered"] = json.loads(backends.command("checks"))
            for p in proxies:
                p.proc.stop()
        if "hashing" in parts:
            tables.insert(1 if "failover" in parts else 0, (print_hashing, part_hashing(args, pinning, out)))
    except (RuntimeError, OSError, subprocess.SubprocessError, ValueError) as e:
        errors.append("%s: %s" % (type(e).__name__, e))
        log("FAILED: %s" % errors[-1])
    for fn, proxies in tables:
        fn(args, proxies, out)
    print()
    print(json.dumps({"results": out, "errors": errors, "params": dict(
        machine(load), runs=args.runs, rate=args.rate, interval_s=args.interval, timeout_s=args.timeout,
        rise=args.rise, fall=args.fall, hash_duration_s=args.hash_duration, connections=args.connections,
        addresses=args.addresses, pinned=pinning, exrelay=args.exrelay, source_commit=git_commit(),
        haproxy_version=haproxy_version(args.haproxy))}, sort_keys=True))
    end(base, errors)


if __name__ == "__main__":
    if "--serve-backends" not in sys.argv:
        import harness  # noqa: E402  (stops every process it started, at exit and on signals)
    main()
