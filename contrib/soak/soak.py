#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
soak.py: exrelay's chaos soak (run it through contrib/soak/run; see contrib/soak/README).

Topology, all on loopback with free ports:
  clients (asyncio, from 127.0.0.2..250) -> HAProxy (mode tcp, send-proxy-v2, checks + agent)
      -> exrelay (the build's relay/exrelay: ASan+UBSan with --enable-sanitizers)
           -> three Exchange stand-ins ex1..ex3 (tests/standin/exchange.py --name-header)
           -> Apache (PROXY v1; static files and the echo CGI) for every other path
Load, in waves, all at once: RPC over HTTP virtual connections (echo, source and sink streams,
SHA-256 checked by the client and by the stand-in), OWA/EWS-like keep-alive GETs and POSTs
(pattern bodies, chunked both ways, Apache files and CGI), NTLM keep-alive clients, MAPI
NotificationWait, slow readers and writers, malformed requests, clients that reset mid-body and
broken backend responses. Faults: SIGHUP every 10 s over config A, B and an invalid one; log
rotation (mv + SIGUSR1) every 15 s; per wave a stand-in killed and restarted, stopped (SIGSTOP)
or black-holed, and the descriptor limit hit (RLIMIT_NOFILE lowered, or a burst over
max_connections); a drain (SIGTERM) at the end. Then the checks listed in the README; a summary
table; exit status 1 on any failure.
"""

import argparse
import asyncio
import collections
import glob
import hashlib
import json
import os
import random
import re
import resource
import signal
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(TOP, "tests", "lib"))
import harness  # noqa: E402
import rpch  # noqa: E402
import ntlm  # noqa: E402

NAMES = ["ex1", "ex2", "ex3"]
GRACE = 6.0             # s after a fault during which its effects (health state, retries) excuse errors
T_IO = 30.0             # s: any single read or write of a client (SIGSTOP lasts 4 s; the box is busy)
DRAIN_TIMEOUT = 25
RID_RE = re.compile(r"rid=([a-z0-9]+)")
USERS = sorted(ntlm.DEFAULT_USERS)

# ----------------------------------------------------------------------------------------------
# Book-keeping: counters, failures, fault windows, expected access-log lines
# ----------------------------------------------------------------------------------------------


class Book:
    """Everything the run counts and every failure, with the fault windows that excuse errors."""

    def __init__(self):
        """Empty counters."""
        self.req = collections.Counter()        # kind -> requests
        self.res = collections.Counter()        # (kind, outcome) -> n; outcome ok|cut|err
        self.bytes_out = self.bytes_in = 0
        self.faults = collections.Counter()
        self.failures = collections.defaultdict(list)
        self.windows = []                       # (target, t0, t1): a stand-in name or "all"
        self.expect = {}                        # rid -> dict(mode="exact"|"atmost", status, server)
        self.seq = 0
        self.rpc = []                           # finished virtual connections, checked at the stand-ins
        self.cuts = []                          # rid of request bodies the client cut: checked at the stand-ins
        self.expected_errors = collections.Counter()
        self.excused = []                       # details of the cuts and errors inside fault windows
        self.timeline = []                      # (t0, t1, fault, target)

    def rid(self, kind):
        """A new request id (goes into the target as rid=...); counts a request of `kind`."""
        self.seq += 1
        self.req[kind] += 1
        return "%s%x" % (kind[:2], self.seq)

    def fail(self, kind, detail):
        """Records a failure of `kind`."""
        self.failures[kind].append("%.1f %s" % (time.monotonic() - T0, detail))

    def window(self, target, t0, t1):
        """Records that `target` (stand-in name or "all") was disturbed from t0 to t1."""
        self.windows.append((target, t0, t1))

    def disturbed(self, t0, t1, targets=None):
        """True when a fault on one of `targets` (None: any) or on "all" overlaps [t0, t1]."""
        for tg, a, b in self.windows:
            if (targets is None or tg == "all" or tg in targets) and a <= t1 and (b is None or b + GRACE >= t0):
                return True
        return False

    def outcome(self, kind, what, t0, detail="", servers=None):
        """Counts an outcome ok|cut|err of a request; a cut or error outside every fault
        window is a failure "unexpected_<what>"."""
        if what == "err" and detail.split(":")[0].endswith("TimeoutError"):
            what = "stall"          # 30 s without progress: no fault lasts that long
        self.res[(kind, what)] += 1
        if what == "stall":
            self.fail("stalled", "%s: %s" % (kind, detail))
        elif what != "ok":
            if self.disturbed(t0, time.monotonic(), servers):
                self.expected_errors[what] += 1
                self.excused.append("%.1f %s %s: %s" % (time.monotonic() - T0, kind, what, detail))
            else:
                self.fail("unexpected_" + what, "%s: %s" % (kind, detail))

    def log_expect(self, rid, mode, status=None, server=None):
        """The access log must hold exactly one line (mode exact) or at most one (atmost) for rid."""
        self.expect[rid] = {"mode": mode, "status": status, "server": server}


BOOK = Book()
T0 = time.monotonic()


def ranking(key):
    """exrelay's order of the stand-ins for a hash key (client address text, or a cookie)."""
    rest, out = list(NAMES), []
    while rest:
        out.append(rest.pop(harness.hrw_pick(rest, key)))
    return out


def check_choice(key, server, t0, what):
    """A first request (backend connection opened) must reach the first stand-in of the ranking
    that was not disturbed; otherwise a failure wrong_server."""
    for name in ranking(key):
        if name == server:
            return
        if not BOOK.disturbed(t0, time.monotonic(), [name]):
            BOOK.fail("wrong_server", "%s key %r reached %s, expected %s (ranking %s)" % (
                what, key if isinstance(key, str) else key.hex(), server, name, ranking(key)))
            return


# ----------------------------------------------------------------------------------------------
# A minimal HTTP/1.1 client over asyncio streams
# ----------------------------------------------------------------------------------------------

class Cut(Exception):
    """The peer closed or reset the connection before the framing said the message ended."""


class Resp:
    """A response head: status, headers (lower-case names -> last value), raw."""

    def __init__(self, raw):
        """Parses the head bytes (status line to the blank line)."""
        self.raw = raw
        lines = raw.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise ValueError("bad status line %r" % lines[0][:80])
        self.status = int(parts[1])
        self.headers = {}
        for line in lines[1:]:
            if line:
                n, _, v = line.partition(":")
                self.headers[n.strip().lower()] = v.strip()

    def h(self, name):
        """The value of header `name` (lower case), or None."""
        return self.headers.get(name)

    @property
    def origin(self):
        """Who produced the response: a stand-in name, "apache", or "relay"."""
        if self.h("x-standin-name"):
            return self.h("x-standin-name")
        if "apache" in (self.h("server") or "").lower():
            return "apache"
        return "relay"


class Client:
    """One TCP connection through HAProxy (or straight to a port), from a chosen source address."""

    def __init__(self, reader, writer, src):
        """Wraps an open stream pair."""
        self.r, self.w, self.src = reader, writer, src

    @classmethod
    async def open(cls, port, src=None, timeout=T_IO):
        """Connects to 127.0.0.1:port from src (random 127.0.0.x when None)."""
        src = src or "127.0.0.%d" % random.randint(2, 250)
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port, local_addr=(src, 0),
                                                              limit=1 << 20), timeout)
        sock = w.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(r, w, src)

    async def send(self, data):
        """Writes data (bounded wait for the buffer to drain)."""
        self.w.write(data)
        BOOK.bytes_out += len(data)
        await asyncio.wait_for(self.w.drain(), T_IO)

    async def head(self, timeout=T_IO):
        """Reads a final response head (1xx skipped). Cut on EOF."""
        while True:
            try:
                raw = await asyncio.wait_for(self.r.readuntil(b"\r\n\r\n"), timeout)
            except asyncio.IncompleteReadError as e:
                raise Cut("EOF before a response head (%d bytes)" % len(e.partial))
            except ConnectionError as e:
                raise Cut("reset before a response head: %s" % e)
            BOOK.bytes_in += len(raw)
            resp = Resp(raw)
            if resp.status >= 200 or resp.status == 101:
                return resp

    async def exactly(self, n, timeout=T_IO):
        """Reads exactly n bytes; Cut on EOF or reset."""
        try:
            data = await asyncio.wait_for(self.r.readexactly(n), timeout)
        except asyncio.IncompleteReadError as e:
            raise Cut("EOF after %d of %d bytes" % (len(e.partial), n))
        except ConnectionError as e:
            raise Cut("reset: %s" % e)
        BOOK.bytes_in += n
        return data

    async def some(self, n=65536, timeout=T_IO):
        """Reads up to n bytes (b"" at EOF)."""
        try:
            data = await asyncio.wait_for(self.r.read(n), timeout)
        except ConnectionError as e:
            raise Cut("reset: %s" % e)
        BOOK.bytes_in += len(data)
        return data

    async def body(self, resp, method="GET", sink=None, slow=0.0):
        """Reads the body by its framing and returns it (or feeds `sink` and returns b"").
        Cut when the connection ends before the framing does; `slow` sleeps between 8 KiB reads."""
        if method == "HEAD" or resp.status in (204, 304):
            return b""
        out = []

        def take(data):
            if sink:
                sink(data)
            else:
                out.append(data)
        if (resp.h("transfer-encoding") or "").lower() == "chunked":
            while True:
                try:
                    line = await asyncio.wait_for(self.r.readuntil(b"\r\n"), T_IO)
                except asyncio.IncompleteReadError:
                    raise Cut("EOF inside chunked framing")
                except ConnectionError as e:
                    raise Cut("reset in chunked framing: %s" % e)
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (await self.exactly(2)) != b"\r\n":      # trailers: none expected
                        await asyncio.wait_for(self.r.readuntil(b"\r\n"), T_IO)
                    return b"".join(out)
                take(await self.exactly(size))
                if await self.exactly(2) != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
        cl = resp.h("content-length")
        if cl is None:
            raise ValueError("response without framing (status %d)" % resp.status)
        left = int(cl)
        while left:
            data = await self.exactly(min(left, 8192 if slow else 262144))
            take(data)
            left -= len(data)
            if slow:
                await asyncio.sleep(slow)
        return b"".join(out)

    async def closed(self, timeout=10.0):
        """True when the peer closes (EOF or reset) within timeout, discarding what comes."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                data = await asyncio.wait_for(self.r.read(65536), max(0.01, deadline - time.monotonic()))
                if not data:
                    return True
        except ConnectionError:
            return True
        except asyncio.TimeoutError:
            return False
        return False

    def reset(self):
        """Closes with a TCP RST (SO_LINGER 0)."""
        sock = self.w.get_extra_info("socket")
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.w.transport.abort()

    def close(self):
        """Closes the connection (FIN)."""
        try:
            self.w.close()
        except Exception:  # noqa: BLE001 - closing never fails the run
            pass


def req(method, target, headers=(), body=b"", version="HTTP/1.1", host="mail.example.com"):
    """Request bytes."""
    hs = [("Host", host)] + list(headers)
    if body and not any(n.lower() in ("content-length", "transfer-encoding") for n, _ in hs):
        hs.append(("Content-Length", str(len(body))))
    return ("%s %s %s\r\n" % (method, target, version) + "".join("%s: %s\r\n" % h for h in hs) + "\r\n").encode() + body


def chunked(body, piece=7000):
    """A body in chunked framing."""
    out = b""
    for i in range(0, len(body), piece):
        out += b"%x\r\n" % len(body[i:i + piece]) + body[i:i + piece] + b"\r\n"
    return out + b"0\r\n\r\n"


def sha(data):
    """SHA-256 hex."""
    return hashlib.sha256(data).hexdigest()


# ----------------------------------------------------------------------------------------------
# The setup
# ----------------------------------------------------------------------------------------------

EXRELAY_CONF = '''# soak configuration %(gen)s
global = { drain_timeout = %(drain)d; max_connections = %(maxconn)d; log_level = "info";
           error_log = "%(dir)s/error.log"; };
access_log = { path = "%(dir)s/access.log"; format = "%(fmt)s"; };
timeouts = { proxy_header = 5; tls_handshake = 5; request_head = 10; client_idle = 30; connect = %(connect)d; };
listeners = (
  { name = "front"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32" ];
    health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = (
  { name = "exchange";
    servers = ( %(servers)s );
    check = { interval = 0.5; timeout = 1; rise = 2; fall = 2; path = "/owa/healthcheck.htm"; };
    idle_timeout = 3600; add_headers = [ "X-Soak-Config: %(gen)s" ]; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60;
    add_headers = [ "X-Soak-Config: %(gen)s" ]; } );
routes = (
  { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews", "/mapi", "/autodiscover", "/ecp" ]; },
  { backend = "%(fallback)s"; } );
'''

HAPROXY_CONF = '''
global
    stats socket @HAPROXY_DIR@/haproxy.sock mode 600 level admin
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 30s
    timeout server-fin 30s
    timeout check 3s
    retries 2
frontend fe
    bind 127.0.0.1:%(front)d
    default_backend be
backend be
    option httpchk GET /exrelay/health
    http-check expect status 200
    server exrelay1 127.0.0.1:%(relay)d send-proxy-v2 proxy-v2-options crc32c check check-send-proxy inter 2s fall 5 rise 2 agent-check agent-port %(agent)d agent-inter 1s
'''


class Setup:
    """The processes: stand-ins (restartable on their ports), Apache, exrelay, HAProxy."""

    def __init__(self, args):
        """Starts everything and waits until each is ready."""
        self.args = args
        self.dir = harness.tmpdir("exrelay-soak-")
        self.ports = {n: harness.free_port() for n in NAMES}
        self.standins, self.logs, self.gens = {}, [], collections.Counter()
        for n in NAMES:
            self.start_standin(n)
        self.apache = harness.start_apache(harness.free_port(), proxy_protocol=True)
        self.blobs = {}
        os.mkdir(os.path.join(self.apache.root, "htdocs", "soak"))
        for i, size in enumerate((1000, 65536, 300000, 1 << 20)):
            data = random.randbytes(size)
            with open(os.path.join(self.apache.root, "htdocs", "soak", "blob%d.bin" % i), "wb") as f:
                f.write(data)
            self.blobs["/soak/blob%d.bin" % i] = (size, sha(data))
        self.maxconn = 2 * args.pairs + 20 * args.clients + 150
        servers = ", ".join('{ name = "%s"; address = "127.0.0.1:%d"; }' % (n, self.ports[n]) for n in NAMES)
        base = dict(dir=self.dir, drain=DRAIN_TIMEOUT, maxconn=self.maxconn, servers=servers,
                    aport=self.apache.port, fallback="apache")
        self.confs = {
            "A": EXRELAY_CONF % dict(base, gen="A", fmt="json", connect=3),
            "B": EXRELAY_CONF % dict(base, gen="B", fmt="combined", connect=4),
            # invalid: the catch-all route names a backend that does not exist
            "X": EXRELAY_CONF % dict(base, gen="X", fmt="json", connect=3, fallback="nosuchbackend"),
        }
        if "misroute" in args.inject:       # /owa to Apache in config A: wrong_backend must fire
            self.confs["A"] = self.confs["A"].replace('"/rpc", "/owa", ', '"/rpc", ')
        self.relay = harness.start_exrelay(self.confs["A"])
        self.gen = "A"
        self.front, self.admin, self.agent = (self.relay.port(n) for n in ("front", "admin", "agent"))
        self.hport = harness.free_port()
        self.haproxy = harness.start_haproxy(HAPROXY_CONF % dict(front=self.hport, relay=self.front, agent=self.agent),
                                             ports=[self.hport])
        harness.wait_for(lambda: "UP" in (self.haproxy.server_stat("be", "exrelay1") or {}).get("status", ""), 20)
        self.poll_out = os.path.join(self.dir, "health.txt")
        self.poller = harness.Process("healthpoll", [sys.executable, os.path.join(HERE, "healthpoll.py"),
                                                     str(self.admin), self.poll_out, str(args.minutes * 60 + 600)],
                                      self.dir)
        self.port_of = {"127.0.0.1:%d" % p: n for n, p in self.ports.items()}

    def start_standin(self, name, timeout=15.0):
        """(Re)starts stand-in `name` on its fixed port with a fresh log; waits for its port file."""
        self.gens[name] += 1
        d = os.path.join(self.dir, "%s-%d" % (name, self.gens[name]))
        os.mkdir(d)
        log, pf, ctl = (os.path.join(d, f) for f in ("standin.log", "ports", "control.json"))
        argv = [sys.executable, harness.STANDIN, "--log", log, "--port-file", pf, "--control", ctl,
                "--name", name, "--name-header", "--listen", "127.0.0.1:%d" % self.ports[name]]
        deadline = time.monotonic() + timeout
        while True:
            p = harness.Standin("standin-" + name, argv, d)
            p.log, p.control_path = log, ctl
            if harness.wait_for(lambda: os.path.exists(pf) or not p.alive(), 10) and p.alive():
                break
            if time.monotonic() > deadline:     # the port still taken (a stopped process's socket?)
                raise RuntimeError("stand-in %s did not start: %s" % (name, p.stderr_text()[-1500:]))
            time.sleep(0.2)
        self.standins[name] = p
        self.logs.append((name, self.gens[name], log))
        return p

    def relay_fds(self):
        """Open descriptors of exrelay, less the splice pool's empty pipes (2 descriptors each,
        kept for the next transfer; the pool is bounded per worker, so those must stay few)."""
        m = re.search(r"^exrelay_splice_pipes (\d+)$", self.metrics(), re.M)
        pipes = int(m.group(1)) if m else 0
        if pipes > 4 * 8:
            BOOK.fail("pipe_leak", "%d splice pipes open while idle" % pipes)
        return len(os.listdir("/proc/%d/fd" % self.relay.pid)) - 2 * pipes

    def metrics(self):
        """exrelay's /metrics text (admin port)."""
        return harness.metrics_text(self.admin, timeout=5).decode("utf-8", "replace")

    def active(self):
        """Client connections open on the traffic listener (from /metrics)."""
        m = re.search(r'exrelay_connections_active\{listener="front"\} (\d+)', self.metrics())
        return int(m.group(1)) if m else -1

    def error_log_text(self):
        """exrelay's error log, all rotated files included, and its stderr."""
        out = self.relay.stderr_text()
        for p in sorted(glob.glob(os.path.join(self.dir, "error.log*"))):
            with open(p, encoding="utf-8", errors="replace") as f:
                out += f.read()
        return out


# ----------------------------------------------------------------------------------------------
# Load: one coroutine per client, each looping until the wave ends
# ----------------------------------------------------------------------------------------------

class Wave:
    """Shared state of one wave: its deadline."""

    def __init__(self, setup, n, seconds):
        """A wave numbered n lasting `seconds` from now."""
        self.s, self.n, self.end = setup, n, time.monotonic() + seconds

    def on(self):
        """True while the wave runs."""
        return time.monotonic() < self.end


async def c2_or_refusal(out, inn):
    """CONN/C2 on the OUT channel, or the IN channel's refusal (an answer or a close: ValueError
    or Cut at once, rather than waiting for the stand-in to give up on the pair)."""
    c2 = asyncio.ensure_future(out.exactly(rpch.C2_LEN))
    inh = asyncio.ensure_future(inn.head())
    done, _ = await asyncio.wait({c2, inh}, timeout=T_IO, return_when=asyncio.FIRST_COMPLETED)
    loser = inh if c2 in done else c2
    loser.cancel()
    await asyncio.gather(loser, return_exceptions=True)
    if c2 in done:
        return c2.result()
    if inh in done:
        r = inh.result()
        raise ValueError("IN channel answered %d from %s" % (r.status, r.origin))
    raise asyncio.TimeoutError()


async def rpc_vc(s, mode, pdus, end):
    """One RPC over HTTP virtual connection through HAProxy: OUT (A1 -> 200 + A3), IN (B1 ->
    C2 on OUT), then per mode: echo (random PDUs on IN, each read back on OUT and compared),
    source (the stand-in streams a pattern on OUT, verified), sink (a stream on IN, hashed by
    the stand-in). Returns the record checked later against the stand-in's in_closed event."""
    kind = "rpc_" + mode
    cookie = rpch.new_cookie()
    ro, ri = BOOK.rid(kind), BOOK.rid(kind)
    base = "/rpc/rpcproxy.dll?soak.example.com:6001&rid="
    src = "127.0.0.%d" % random.randint(2, 250)
    t0 = time.monotonic()
    rec = {"cookie": cookie.hex(), "kind": kind, "server": None, "sent": 0, "sha": hashlib.sha256(), "clean": False}
    out = inn = None
    BOOK.log_expect(ro, "atmost")
    BOOK.log_expect(ri, "atmost")
    step = "OUT connect"
    try:
        out = await Client.open(s.hport, src)
        source = random.randint(1, 4) << 20 if mode == "source" else 0
        q = "&source=%d&seed=%d" % (source, source % 97) if source else ""
        await out.send(rpch.rpc_out_request(base + ro + q) + rpch.conn_a1(cookie))
        step = "OUT head"
        resp = await out.head()
        if resp.status != 200 or resp.origin not in NAMES:
            raise ValueError("OUT channel answered %d from %s" % (resp.status, resp.origin))
        rec["server"] = resp.origin
        check_choice(cookie, resp.origin, t0, "RPC OUT")
        step = "A3"
        rpch.parse_a3(await out.exactly(rpch.A3_LEN))
        step = "IN connect"
        inn = await Client.open(s.hport, src)
        b1 = rpch.conn_b1(cookie)
        rec["sha"].update(b1)
        rec["sent"] = len(b1)
        qi = "&mode=sink" if mode == "sink" else ""
        await inn.send(rpch.rpc_in_request(base + ri + qi) + b1)
        step = "C2"
        rpch.parse_c2(await c2_or_refusal(out, inn))
        step = "stream"
        BOOK.log_expect(ro, "exact")
        BOOK.log_expect(ri, "exact")
        if mode == "source":
            v = rpch.PatternVerifier(source % 97)
            left = source
            while left:
                data = await out.some(min(left, 262144))
                if not data:
                    raise Cut("OUT stream ended after %d of %d bytes" % (source - left, source))
                if not v.update(data):
                    BOOK.fail("corrupt_body", "RPC source stream differs at %d" % v.mismatch_at)
                    break
                left -= len(data)
        else:
            for _ in range(pdus):
                if time.monotonic() > end:
                    break
                data = random.randbytes(random.choice((20, 100, 1000, 4000, 16000, 60000)) if mode == "echo"
                                        else random.choice((65536, 262144)))
                step = "IN write %d after %d" % (len(data), rec["sent"])
                await inn.send(data)
                rec["sha"].update(data)
                rec["sent"] += len(data)
                if mode == "echo":
                    step = "echo read %d after %d" % (len(data), rec["sent"])
                    back = await out.exactly(len(data))
                    if back != data:
                        BOOK.fail("corrupt_body", "RPC echo on %s differs" % rec["server"])
                        break
                await asyncio.sleep(random.uniform(0.05, 0.4))
        rec["clean"] = True
        BOOK.outcome(kind, "ok", t0)
    except Cut as e:
        BOOK.outcome(kind, "cut", t0, "%s on %s at %s: %s" % (rec["cookie"][:8], rec["server"], step, e),
                     [rec["server"]] if rec["server"] else None)
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        BOOK.outcome(kind, "err", t0, "%s: %s on %s at %s (%.1f s in): %s" % (
            type(e).__name__, rec["cookie"][:8], rec["server"], step, time.monotonic() - t0, e),
            [rec["server"]] if rec["server"] else None)
    finally:
        for c in (inn, out):
            if c:
                c.close()
    rec["t0"], rec["t1"] = t0, time.monotonic()
    BOOK.rpc.append(rec)


async def rpc_loop(w, i):
    """One RPC client: virtual connections one after another until the wave ends."""
    await asyncio.sleep(random.uniform(0, 3))
    while w.on():
        mode = random.choices(("echo", "source", "sink"), (7, 2, 2))[0]
        await rpc_vc(w.s, mode, random.randint(5, 60), w.end)


def check_exchange(resp, kind, rid, t0, state):
    """A response on an Exchange path: from a stand-in (or exrelay's own error); the same
    stand-in for the whole client connection (state: the connection's pin)."""
    if resp.origin == "apache":
        BOOK.fail("wrong_backend", "%s %s answered by Apache" % (kind, rid))
        return False
    if resp.origin == "relay":
        return False
    if state.get("server") is None:
        state["server"] = resp.origin
        check_choice(state["src"], resp.origin, t0, kind)
    elif state["server"] != resp.origin and not BOOK.disturbed(state["t0"], time.monotonic(), [state["server"]]):
        BOOK.fail("pinning", "%s %s: connection pinned to %s answered by %s" % (kind, rid, state["server"], resp.origin))
    return True


def check_json(body, kind, rid, state, want_sha=None, want_len=None):
    """The stand-in's JSON echo: same backend connection as before on this client connection,
    the request body as sent."""
    try:
        j = json.loads(body)
    except ValueError:
        BOOK.fail("corrupt_body", "%s %s: JSON answer does not parse" % (kind, rid))
        return None
    if rid not in j.get("target", ""):
        BOOK.fail("wrong_answer", "%s %s: answer for %r" % (kind, rid, j.get("target")))
    if "conn" in j and "server" in j:
        key = (j["server"], j["conn"])
        if state.get("bconn") is None:
            state["bconn"] = key
        elif state["bconn"] != key and not BOOK.disturbed(state["t0"], time.monotonic(), [state["bconn"][0]]):
            BOOK.fail("pinning", "%s %s: backend connection %s then %s" % (kind, rid, state["bconn"], key))
            state["bconn"] = key
    if want_sha is not None and (j.get("body_sha256") != want_sha or j.get("body_bytes") != want_len):
        BOOK.fail("corrupt_body", "%s %s: the stand-in got %s bytes (%s), sent %d" % (
            kind, rid, j.get("body_bytes"), str(j.get("body_sha256"))[:12], want_len))
    return j


async def owa_conn(w):
    """One keep-alive client connection with a random mix of OWA/EWS/MAPI/Apache requests."""
    s = w.s
    c = await Client.open(s.hport)
    state = {"src": c.src, "t0": time.monotonic()}
    try:
        for _ in range(random.randint(3, 30)):
            if not w.on():
                break
            op = random.choices(("get", "getchunked", "post", "postchunked", "static", "cgi", "mapi", "cut"),
                                (6, 2, 5, 2, 3, 1, 1, 1))[0]
            if not await owa_one(s, c, op, state):
                return
            await asyncio.sleep(random.uniform(0, 0.3))
    finally:
        c.close()


async def owa_one(s, c, op, state):
    """One request of owa_conn; False when the connection is over."""
    kind = "owa_" + op
    rid = BOOK.rid(kind)
    t0 = time.monotonic()
    BOOK.log_expect(rid, "atmost")
    try:
        if op in ("get", "getchunked"):
            n = random.choice((0, 100, 5000, 70000, 300000))
            seed = random.randint(0, 1000)
            await c.send(req("GET", "/owa/service.svc?rid=%s&len=%d&seed=%d%s" % (
                rid, n, seed, "&chunked=1" if op == "getchunked" else "")))
            resp = await c.head()
            v = rpch.PatternVerifier(seed)
            got = [0]

            def sink(d):
                got[0] += len(d)
                v.update(d)
            await c.body(resp, sink=sink)
            if check_exchange(resp, kind, rid, t0, state) and resp.status == 200:
                if not v.ok or got[0] != n:
                    BOOK.fail("corrupt_body", "%s %s: %d of %d bytes, pattern %s" % (kind, rid, got[0], n, v.ok))
        elif op in ("post", "postchunked", "mapi"):
            body = random.randbytes(random.choice((0, 10, 3000, 60000, 200000)))
            path = "/ews/exchange.asmx" if op != "mapi" else "/mapi/emsmdb/"
            q = "&NotificationWait=1&interval=0.2&pending=2" if op == "mapi" else ""
            hs = [("Content-Type", "text/xml")]
            if op == "postchunked":
                hs.append(("Transfer-Encoding", "chunked"))
                raw = req("POST", path + "?rid=" + rid + q, hs) + chunked(body)
            else:
                raw = req("POST", path + "?rid=" + rid + q, hs + [("Content-Length", str(len(body)))], body)
            await c.send(raw)
            resp = await c.head()
            data = await c.body(resp)
            if check_exchange(resp, kind, rid, t0, state) and resp.status == 200:
                if op == "mapi":
                    if not (data.startswith(b"PROCESSING\r\nPENDING\r\nPENDING\r\nDONE") and data.endswith(b"events:1")):
                        BOOK.fail("corrupt_body", "%s %s: NotificationWait body %r" % (kind, rid, data[:80]))
                else:
                    check_json(data, kind, rid, state, sha(body), len(body))
        elif op == "static":
            path = random.choice(sorted(s.blobs))
            await c.send(req("GET", path + "?rid=" + rid))
            resp = await c.head()
            data = await c.body(resp)
            if resp.origin in NAMES:
                BOOK.fail("wrong_backend", "%s %s answered by %s" % (kind, rid, resp.origin))
            elif resp.status == 200 and (len(data), sha(data)) != s.blobs[path]:
                BOOK.fail("corrupt_body", "%s %s: %d bytes, not the file" % (kind, rid, len(data)))
        elif op == "cgi":
            body = random.randbytes(random.choice((0, 500, 40000)))
            await c.send(req("POST", "/cgi-bin/echo?rid=" + rid, [("Content-Length", str(len(body)))], body))
            resp = await c.head()
            data = await c.body(resp)
            if resp.origin in NAMES:
                BOOK.fail("wrong_backend", "%s %s answered by %s" % (kind, rid, resp.origin))
            elif resp.status == 200:
                j = json.loads(data)
                if j.get("body_sha256") != sha(body) or rid not in (j.get("uri") or ""):
                    BOOK.fail("corrupt_body", "%s %s: CGI got %s bytes" % (kind, rid, j.get("body_bytes")))
        elif op == "cut":
            # the stand-in sends Content-Length 1000 and 10 bytes, then closes: the client must see a cut
            await c.send(req("GET", "/owa/?rid=%s&broken=cut" % rid))
            try:
                resp = await c.head()
            except Cut:
                BOOK.outcome(kind, "ok", t0)
                return False
            if resp.status == 200:
                try:
                    data = await c.body(resp)
                    BOOK.fail("invented_end", "%s %s: a cut body arrived whole (%d bytes)" % (kind, rid, len(data)))
                except Cut:
                    pass
                except asyncio.TimeoutError:
                    BOOK.fail("invented_end", "%s %s: a cut body left the connection open" % (kind, rid))
            elif resp.status < 500:
                BOOK.fail("wrong_answer", "%s %s: status %d for a cut response" % (kind, rid, resp.status))
            BOOK.log_expect(rid, "exact")
            BOOK.outcome(kind, "ok", t0)
            return False
        if resp.origin == "relay" and resp.status >= 500:
            BOOK.outcome(kind, "err", t0, "status %d from exrelay" % resp.status,
                         [state["server"]] if state.get("server") else None)
        else:
            BOOK.outcome(kind, "ok", t0)
        BOOK.log_expect(rid, "exact", resp.status, resp.origin)
        return resp.h("connection") != "close"
    except Cut as e:
        BOOK.outcome(kind, "cut", t0, "%s %s" % (rid, e), [state["server"]] if state.get("server") else None)
        return False
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        BOOK.outcome(kind, "err", t0, "%s: %s %s" % (type(e).__name__, rid, e),
                     [state["server"]] if state.get("server") else None)
        return False


async def owa_loop(w, i):
    """An OWA-like client: keep-alive connections one after another."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        try:
            await owa_conn(w)
        except (OSError, asyncio.TimeoutError) as e:
            BOOK.outcome("owa_connect", "err", time.monotonic(), "%s: %s" % (type(e).__name__, e))
            await asyncio.sleep(0.5)


async def ntlm_loop(w, i):
    """An NTLM client: per connection, legs 1 and 3, then keep-alive requests without
    credentials that must all reach the same stand-in connection, still authenticated."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        kind = "ntlm"
        user = USERS[i % len(USERS)]
        t0 = time.monotonic()
        state = {"t0": t0}
        c = None
        try:
            c = await Client.open(w.s.hport)
            state["src"] = c.src
            rid = BOOK.rid(kind)
            BOOK.log_expect(rid, "atmost")
            await c.send(req("GET", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Authorization", "NTLM " + rpch.ntlm_type1())]))
            r1 = await c.head()
            await c.body(r1)
            BOOK.log_expect(rid, "exact", r1.status, r1.origin)
            if not check_exchange(r1, kind, rid, t0, state):
                BOOK.outcome(kind, "err", t0, "leg 1: %d" % r1.status, None)
                continue
            if r1.status != 401:
                BOOK.fail("wrong_answer", "NTLM leg 1 %s: status %d" % (rid, r1.status))
                continue
            token = rpch.ntlm_type3(r1.h("www-authenticate"), user)
            rid = BOOK.rid(kind)
            BOOK.log_expect(rid, "atmost")
            await c.send(req("GET", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Authorization", "NTLM " + token)]))
            r3 = await c.head()
            data = await c.body(r3)
            BOOK.log_expect(rid, "exact", r3.status, r3.origin)
            if not check_exchange(r3, kind, rid, t0, state):
                BOOK.outcome(kind, "err", t0, "leg 3: %d" % r3.status, [state.get("server")])
                continue
            j = check_json(data, kind, rid, state) if r3.status == 200 else None
            if not j or (j.get("ntlm_user") or "").lower() != user:
                if not BOOK.disturbed(t0, time.monotonic(), [state.get("server")]):
                    BOOK.fail("pinning", "NTLM leg 3 %s: status %d, user %r" % (rid, r3.status, j and j.get("ntlm_user")))
                continue
            BOOK.outcome(kind, "ok", t0)
            for _ in range(random.randint(3, 20)):
                if not w.on():
                    break
                await asyncio.sleep(random.uniform(0.05, 0.8))
                rid = BOOK.rid(kind)
                t1 = time.monotonic()
                BOOK.log_expect(rid, "atmost")
                body = random.randbytes(random.choice((0, 2000, 30000)))
                await c.send(req("POST", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Content-Length", str(len(body)))], body))
                r = await c.head()
                data = await c.body(r)
                BOOK.log_expect(rid, "exact", r.status, r.origin)
                if not check_exchange(r, kind, rid, t1, state):
                    BOOK.outcome(kind, "err", t1, "status %d from exrelay" % r.status, [state.get("server")])
                    break
                j = check_json(data, kind, rid, state, sha(body), len(body)) if r.status == 200 else None
                if not j or (j.get("ntlm_user") or "").lower() != user:
                    if not BOOK.disturbed(t0, time.monotonic(), [state.get("server")]):
                        BOOK.fail("pinning", "NTLM %s: status %d, connection user %r (want %s)" % (
                            rid, r.status, j and j.get("ntlm_user"), user))
                    break
                BOOK.outcome(kind, "ok", t1)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e), [state.get("server")] if state.get("server") else None)
        except (OSError, asyncio.TimeoutError, ValueError, ntlm.NtlmError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e), [state.get("server")] if state.get("server") else None)
        finally:
            if c:
                c.close()


async def slow_loop(w, i):
    """Slow readers (a large body read 8 KiB at a time) and slow writers (head and body
    trickled), alternately."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        reader = random.random() < 0.5
        kind = "slow_reader" if reader else "slow_writer"
        rid = BOOK.rid(kind)
        t0 = time.monotonic()
        state = {"t0": t0}
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            state["src"] = c.src
            if reader:
                n, seed = random.choice((400000, 1500000)), random.randint(0, 99)
                await c.send(req("GET", "/owa/?rid=%s&len=%d&seed=%d" % (rid, n, seed)))
                resp = await c.head()
                v = rpch.PatternVerifier(seed)
                got = [0]

                def sink(d):
                    got[0] += len(d)
                    v.update(d)
                await c.body(resp, sink=sink, slow=0.01)
                if check_exchange(resp, kind, rid, t0, state) and resp.status == 200 and (not v.ok or got[0] != n):
                    BOOK.fail("corrupt_body", "%s %s: %d of %d bytes, pattern %s" % (kind, rid, got[0], n, v.ok))
            else:
                body = random.randbytes(random.choice((30000, 150000)))
                raw = req("POST", "/owa/?rid=" + rid, [("Content-Length", str(len(body)))], body)
                for k in range(0, len(raw), 1500):
                    await c.send(raw[k:k + 1500])
                    await asyncio.sleep(0.01 if k > 400 else 0.05)
                resp = await c.head()
                data = await c.body(resp)
                if check_exchange(resp, kind, rid, t0, state) and resp.status == 200:
                    check_json(data, kind, rid, state, sha(body), len(body))
            BOOK.log_expect(rid, "exact", resp.status, resp.origin)
            BOOK.outcome(kind, "ok" if resp.status < 500 else "err", t0, "status %d" % resp.status,
                         [state.get("server")] if state.get("server") else None)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e), [state.get("server")] if state.get("server") else None)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e), [state.get("server")] if state.get("server") else None)
        finally:
            if c:
                c.close()


# Malformed requests: (name, bytes with RID in place of the request id). exrelay must answer
# with its own 4xx/5xx (501 for an unknown transfer coding, 505 for HTTP/2) and close, or close
# without an answer; never pass them on.
MALFORMED = [
    ("cl_te", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad_cl", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello"),
    ("two_cl", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("obs_fold", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n"),
    ("space_colon", b"GET /owa/?rid=RID HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("nul", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
    ("no_host", b"GET /owa/?rid=RID HTTP/1.1\r\n\r\n"),
    ("two_hosts", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("te_gzip", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("bad_chunk", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("slash_escape", b"GET /owa/..%2F..%2Fetc/passwd?rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("dotdot_root", b"GET /../../owa/?rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("proxyshell", b"GET /autodiscover/autodiscover.json?@evil.com/owa/&Email=autodiscover/autodiscover.json%3F@evil.com&rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("huge_head", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n"),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03RID garbage\r\n\r\n"),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nRID"),
    ("bare_lf_chunk", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
]


async def malformed_loop(w, i):
    """Sends malformed requests, one per connection; exrelay must refuse them itself."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        name, raw = random.choice(MALFORMED)
        kind = "bad_" + name
        rid = BOOK.rid("malformed")
        BOOK.req[kind] += 0
        t0 = time.monotonic()
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            await c.send(raw.replace(b"RID", rid.encode()))
            try:
                resp = await c.head(15)
            except Cut:
                resp = None
            if resp is not None:
                if resp.origin != "relay" or resp.status < 400:
                    BOOK.fail("malformed_passed", "%s %s: %d from %s" % (name, rid, resp.status, resp.origin))
                elif not await c.closed(15):
                    # a 4xx that keeps the connection must at least be complete and well-framed
                    if resp.h("connection") == "close" or name in ("cl_te", "bad_cl", "two_cl", "bad_chunk",
                                                                   "te_gzip", "huge_head", "garbage", "bare_lf_chunk"):
                        BOOK.fail("no_close", "%s %s: %d and the connection stayed open" % (name, rid, resp.status))
            BOOK.outcome("malformed", "ok", t0)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome("malformed", "err", t0, "%s: %s %s: %s" % (type(e).__name__, name, rid, e))
        finally:
            if c:
                c.close()
        await asyncio.sleep(random.uniform(0.05, 0.3))


async def reset_loop(w, i):
    """Clients that reset: mid request body (the stand-in must see the body cut) and mid
    response body."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        mid_request = random.random() < 0.6
        kind = "reset_request" if mid_request else "reset_response"
        rid = BOOK.rid(kind)
        t0 = time.monotonic()
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            if mid_request:
                total = 1 << 20
                await c.send(req("POST", "/owa/?rid=" + rid, [("Content-Length", str(total))]))
                await c.send(random.randbytes(random.randint(1, 300) * 1000))
                await asyncio.sleep(random.uniform(0.05, 0.5))
                BOOK.cuts.append((rid, total))
            else:
                await c.send(req("GET", "/owa/?rid=%s&len=%d" % (rid, 8 << 20)))
                resp = await c.head()
                await c.exactly(random.randint(1, 200) * 1000 if resp.status == 200 else 0)
            c.reset()
            c = None
            BOOK.outcome(kind, "ok", t0)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e))
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e))
        finally:
            if c:
                c.close()
        await asyncio.sleep(random.uniform(0.1, 0.5))


async def probe(s, what):
    """One request on a new connection: the X-Soak-Config the stand-in received (None on error)."""
    rid = BOOK.rid("probe")
    BOOK.log_expect(rid, "atmost")
    c = None
    try:
        c = await Client.open(s.hport)
        await c.send(req("GET", "/owa/?rid=" + rid, [("Connection", "close")]))
        resp = await c.head()
        data = await c.body(resp)
        BOOK.log_expect(rid, "exact", resp.status, resp.origin)
        if resp.status != 200 or resp.origin not in NAMES:
            return None
        hs = {k.lower(): v for k, v in json.loads(data)["headers"]}
        return hs.get("x-soak-config")
    except (OSError, asyncio.TimeoutError, ValueError, Cut) as e:
        if not BOOK.disturbed(time.monotonic() - 5, time.monotonic()):
            BOOK.fail("probe", "%s: %s: %s" % (what, type(e).__name__, e))
        return None
    finally:
        if c:
            c.close()


# ----------------------------------------------------------------------------------------------
# Faults
# ----------------------------------------------------------------------------------------------

async def reloader(s, stop, lock):
    """SIGHUP every 10 s cycling over configs A, B and the invalid X; checks each took (or, X,
    was refused and the running one kept) with a probe on a new connection."""
    cycle = ["B", "X", "A", "X"]
    k = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 10)
            return
        except asyncio.TimeoutError:
            pass
        gen = cycle[k % len(cycle)]
        k += 1
        async with lock:
            BOOK.faults["reload_" + ("invalid" if gen == "X" else "valid")] += 1
            before = s.error_log_text().count("reload failed")
            s.relay.reload(s.confs[gen])
            if gen == "X":
                refused = await asyncio.to_thread(harness.wait_for,
                                                  lambda: s.error_log_text().count("reload failed") > before, 10)
                if not refused:
                    BOOK.fail("reload", "the invalid configuration was not refused (no 'reload failed' line)")
                if s.relay.addr_stamp() != s.relay.reload_stamp:
                    BOOK.fail("reload", "the invalid configuration rewrote the address file")
            else:
                if not await asyncio.to_thread(s.relay.wait_reloaded, 10):
                    BOOK.fail("reload", "configuration %s not applied within 10 s" % gen)
                else:
                    s.gen = gen
            t1 = time.monotonic()
            for _ in range(5):      # a probe may land on a stand-in that a fault has just taken away
                got = await probe(s, "after reload %s" % gen)
                if got is not None or not BOOK.disturbed(t1, time.monotonic()):
                    break
                await asyncio.sleep(1)
            if got != s.gen:
                BOOK.fail("reload", "after SIGHUP with %s a new connection runs config %r, expected %s" % (gen, got, s.gen))


async def rotator(s, stop, lock):
    """Every 15 s: the access and error logs moved aside, SIGUSR1; the files must come back."""
    await asyncio.sleep(5)
    k = 0
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 15)
            return
        except asyncio.TimeoutError:
            pass
        k += 1
        async with lock:
            BOOK.faults["log_rotation"] += 1
            for name in ("access.log", "error.log"):
                p = os.path.join(s.dir, name)
                if os.path.exists(p):
                    os.rename(p, "%s.%d" % (p, k))
            s.relay.send_signal(signal.SIGUSR1)
            ok = await asyncio.to_thread(harness.wait_for, lambda: all(
                os.path.exists(os.path.join(s.dir, n)) for n in ("access.log", "error.log")), 10)
            if not ok:
                BOOK.fail("log_reopen", "access.log/error.log not reopened 10 s after SIGUSR1")


async def standin_fault(s, wave):
    """One stand-in fault, rotating over kind and victim: killed and restarted, stopped
    (SIGSTOP) for 4 s, black-holed (SYNs dropped) for 6 s."""
    kind = ("kill", "sigstop", "blackhole")[wave % 3]
    name = NAMES[(wave // 3 + wave) % 3]
    p = s.standins[name]
    t0 = time.monotonic()
    BOOK.window(name, t0, None)
    idx = len(BOOK.windows) - 1
    BOOK.faults["standin_" + kind] += 1
    if kind == "kill":
        os.killpg(p.pid, signal.SIGKILL)
        await asyncio.to_thread(p.proc.wait, 10)
        await asyncio.sleep(2)
        await asyncio.to_thread(s.start_standin, name)
    elif kind == "sigstop":
        os.kill(p.pid, signal.SIGSTOP)
        await asyncio.sleep(4)
        os.kill(p.pid, signal.SIGCONT)
    else:
        if not await asyncio.to_thread(p.control, None, "blackhole"):
            BOOK.fail("fault", "stand-in %s did not enter blackhole mode" % name)
        await asyncio.sleep(6)
        if not await asyncio.to_thread(p.control, None, "normal"):
            BOOK.fail("fault", "stand-in %s did not leave blackhole mode" % name)
    BOOK.windows[idx] = (name, t0, time.monotonic())
    BOOK.timeline.append((t0, time.monotonic(), kind, name))


async def fd_fault(s, wave):
    """The descriptor limit hit: exrelay's RLIMIT_NOFILE lowered to what it uses plus 16 while
    a burst of 60 connections arrives (0.5 s), or a burst of max_connections + 40 connections
    held for 2 s. The burst goes straight to exrelay's traffic port (no PROXY header yet)."""
    kind = ("prlimit", "maxconn")[wave % 2]
    t0 = time.monotonic()
    BOOK.window("all", t0, None)
    idx = len(BOOK.windows) - 1
    BOOK.faults["fd_" + kind] += 1
    socks = []
    old = resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE)

    def burst(n):
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            try:
                c.connect_ex(("127.0.0.1", s.front))
            except OSError:
                c.close()
                break
            socks.append(c)
    try:
        if kind == "prlimit":
            resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, (len(os.listdir("/proc/%d/fd" % s.relay.pid)) + 16, old[1]))
            burst(60)
            await asyncio.sleep(0.5)
            resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, old)
            await asyncio.sleep(0.5)
        else:
            burst(s.maxconn + 40)
            await asyncio.sleep(2)
    finally:
        resource.prlimit(s.relay.pid, resource.RLIMIT_NOFILE, old)
        for c in socks:
            c.close()
    BOOK.windows[idx] = ("all", t0, time.monotonic())
    BOOK.timeline.append((t0, time.monotonic(), kind, "exrelay"))


async def wave_faults(w):
    """The faults of one wave: a stand-in fault at 5 s, the descriptor limit at half-time."""
    length = w.end - time.monotonic()
    if "relay-stop" in w.s.args.inject and w.n == 1:     # exrelay frozen: health_gap must fire
        await asyncio.sleep(3)
        os.kill(w.s.relay.pid, signal.SIGSTOP)
        await asyncio.sleep(2.5)
        os.kill(w.s.relay.pid, signal.SIGCONT)
        await asyncio.sleep(0.5)
    else:
        await asyncio.sleep(5)
    await standin_fault(w.s, w.n)
    await asyncio.sleep(max(0.0, length / 2 - (length - (w.end - time.monotonic()))))
    if w.on():
        await fd_fault(w.s, w.n)


# ----------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------

async def quiet(s, lock, series, label):
    """After a wave: waits until exrelay holds no client connection, then samples its
    descriptors (the minimum over 1 s: health checks come and go) and RSS."""
    ok = await asyncio.to_thread(harness.wait_for, lambda: s.active() == 0, 30, 0.2)
    async with lock:
        fds = []
        for _ in range(10):
            fds.append(s.relay_fds())
            await asyncio.sleep(0.1)
    series.append((label, min(fds), s.relay.rss_kib(), ok))


async def run_wave(s, n, seconds, args):
    """One wave of load with its faults; returns when every client finished."""
    w = Wave(s, n, seconds)
    tasks = [rpc_loop(w, i) for i in range(args.pairs)]
    tasks += [owa_loop(w, i) for i in range(args.clients)]
    tasks += [ntlm_loop(w, i) for i in range(max(2, args.clients * 2 // 3))]
    tasks += [slow_loop(w, i) for i in range(max(2, args.clients // 3))]
    tasks += [malformed_loop(w, i) for i in range(2)]
    tasks += [reset_loop(w, i) for i in range(2)]
    tasks = [asyncio.ensure_future(t) for t in tasks]
    faults = asyncio.ensure_future(wave_faults(w))
    done, pending = await asyncio.wait(tasks + [faults], timeout=seconds + 2 * T_IO + 30)
    for t in pending:
        t.cancel()
    if pending:
        BOOK.fail("hung_client", "%d client(s) still running %.0f s after the wave" % (len(pending), 2 * T_IO + 30))
    for t in done:
        if t.exception() is not None:
            BOOK.fail("client_crash", "%s: %s" % (type(t.exception()).__name__, t.exception()))


async def final_drain(s):
    """SIGTERM with RPC channels and NTLM connections open: health says draining, the channels
    keep echoing, then they close and exrelay exits 0 before drain_timeout."""
    BOOK.faults["drain"] += 1
    vcs = []
    for _ in range(6):
        try:
            cookie = rpch.new_cookie()
            out = await Client.open(s.hport)
            rid = BOOK.rid("drain")
            BOOK.log_expect(rid, "exact")
            await out.send(rpch.rpc_out_request("/rpc/rpcproxy.dll?x:6001&rid=" + rid) + rpch.conn_a1(cookie))
            await out.head()
            await out.exactly(rpch.A3_LEN)
            inn = await Client.open(s.hport, out.src)
            rid = BOOK.rid("drain")
            BOOK.log_expect(rid, "exact")
            await inn.send(rpch.rpc_in_request("/rpc/rpcproxy.dll?x:6001&rid=" + rid) + rpch.conn_b1(cookie))
            await out.exactly(rpch.C2_LEN)
            vcs.append((inn, out))
        except (OSError, asyncio.TimeoutError, ValueError, Cut) as e:
            BOOK.fail("drain", "opening a channel before the drain: %s" % e)
    t0 = time.monotonic()
    s.relay.send_signal(signal.SIGTERM)
    draining = await asyncio.to_thread(harness.wait_for, lambda: "draining" in health_body(s), 5)
    if not draining:
        BOOK.fail("drain", "/health did not say draining after SIGTERM")
    for _ in range(3):
        for inn, out in vcs:
            data = random.randbytes(3000)
            try:
                await inn.send(data)
                if await out.exactly(len(data)) != data:
                    BOOK.fail("drain", "echo differs during the drain")
            except (OSError, asyncio.TimeoutError, Cut) as e:
                BOOK.fail("drain", "a channel broke during the drain: %s" % e)
        await asyncio.sleep(0.5)
    for inn, out in vcs:
        inn.close()
        out.close()
    rc = await asyncio.to_thread(lambda: s.relay.proc.wait(DRAIN_TIMEOUT + 10))
    took = time.monotonic() - t0
    if rc != 0:
        BOOK.fail("drain", "exrelay exit status %r after SIGTERM" % rc)
    if took >= DRAIN_TIMEOUT:
        BOOK.fail("drain", "exrelay took %.1f s to drain (drain_timeout %d): connections left open" % (took, DRAIN_TIMEOUT))
    return rc, took


def health_body(s):
    """The admin port's /health answer (status line and body), or ""."""
    try:
        with socket.create_connection(("127.0.0.1", s.admin), timeout=2) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: soak\r\nConnection: close\r\n\r\n")
            c.settimeout(2)
            return c.recv(4096).decode("latin-1")
    except OSError:
        return ""


# ----------------------------------------------------------------------------------------------
# Checks after the run
# ----------------------------------------------------------------------------------------------

def parse_access(s):
    """rid -> list of (status, server name) from every access log file (json and combined)."""
    seen = collections.defaultdict(list)
    other = 0
    for p in glob.glob(os.path.join(s.dir, "access.log*")):
        with open(p, encoding="utf-8", errors="replace") as f:
            for line in f:
                if not line.endswith("\n"):
                    BOOK.fail("access_log", "a partial line in %s: %r" % (os.path.basename(p), line[:100]))
                    continue
                m = RID_RE.search(line)
                if not m:
                    other += 1
                    continue
                if line.startswith("{"):
                    try:
                        j = json.loads(line)
                    except ValueError:
                        BOOK.fail("access_log", "a JSON line does not parse: %r" % line[:120])
                        continue
                    status, server = j["status"], j["server"]
                else:
                    mm = re.search(r'" (\d+) \d+ ".*" \S+ \S+ (\S+)$', line)
                    if not mm:
                        BOOK.fail("access_log", "a combined line does not parse: %r" % line[:120])
                        continue
                    status, server = int(mm.group(1)), mm.group(2)
                seen[m.group(1)].append((status, s.port_of.get(server, server)))
    return seen, other


def tamper_access(s):
    """--inject log-dup: in the current access.log, the first line with a request id is written
    twice and the last one removed."""
    p = os.path.join(s.dir, "access.log")
    with open(p, encoding="utf-8", errors="replace") as f:
        lines = f.readlines()
    ids = [i for i, line in enumerate(lines) if RID_RE.search(line)]
    if len(ids) >= 2:
        lines.insert(ids[0], lines[ids[0]])
        del lines[ids[-1] + 1]
        with open(p, "w", encoding="utf-8") as f:
            f.writelines(lines)


def check_access(s):
    """One line per completed request, none for a request never made, none twice."""
    seen, other = parse_access(s)
    lost = doubled = unknown = mism = 0
    for rid, e in BOOK.expect.items():
        lines = seen.get(rid, [])
        if len(lines) > 1:
            doubled += 1
            BOOK.fail("access_log_doubled", "%s: %d lines" % (rid, len(lines)))
        elif e["mode"] == "exact" and not lines:
            lost += 1
            BOOK.fail("access_log_lost", "%s (status %s) has no line" % (rid, e["status"]))
        elif lines and e["status"] is not None and e["server"] in NAMES:
            st, srv = lines[0]
            if st != e["status"] or srv != e["server"]:
                mism += 1
                BOOK.fail("access_log_mismatch", "%s: line says %s from %s, the client got %s from %s" % (
                    rid, st, srv, e["status"], e["server"]))
    for rid in seen:
        if rid not in BOOK.expect:
            unknown += 1
            BOOK.fail("access_log_unknown", "a line for request id %s that was never sent" % rid)
    return {"lines": sum(len(v) for v in seen.values()), "other_lines": other, "lost": lost,
            "doubled": doubled, "unknown": unknown, "mismatched": mism}


def standin_events(s):
    """Every event of every stand-in incarnation: (name, gen, event)."""
    out = []
    for name, gen, path in s.logs:
        try:
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        out.append((name, gen, json.loads(line)))
        except FileNotFoundError:
            pass
    return out


def check_standins(s):
    """The stand-ins' side: each cleanly ended RPC IN stream hashed as the client sent it; each
    request body the client reset seen as cut."""
    events = standin_events(s)
    in_closed = {}
    reqs = {}
    bodies = collections.defaultdict(list)
    for name, gen, e in events:
        if e["ev"] == "in_closed":
            in_closed[e["cookie"]] = (name, e)
        elif e["ev"] == "request":
            m = RID_RE.search(e.get("target", ""))
            if m:
                reqs[m.group(1)] = (name, gen, e["conn"])
        elif e["ev"] == "body":
            bodies[(name, gen, e["conn"])].append(e)
    checked = 0
    for rec in BOOK.rpc:
        if not rec["clean"]:
            continue
        got = in_closed.get(rec["cookie"])
        if got is None:
            if not BOOK.disturbed(rec["t0"], rec["t1"] + 5, [rec["server"]]):
                BOOK.fail("rpc_unseen", "%s %s: the stand-in logged no end of the IN channel" % (rec["kind"], rec["cookie"]))
            continue
        name, e = got
        checked += 1
        if name != rec["server"]:
            BOOK.fail("wrong_server", "%s %s: OUT on %s, IN on %s" % (rec["kind"], rec["cookie"], rec["server"], name))
        if e["bytes"] != rec["sent"] or e["sha256"] != rec["sha"].hexdigest():
            BOOK.fail("corrupt_body", "%s %s: the stand-in got %d bytes, the client sent %d" % (
                rec["kind"], rec["cookie"], e["bytes"], rec["sent"]))
    cuts_seen = 0
    for rid, total in BOOK.cuts:
        r = reqs.get(rid)
        if r is None:
            continue
        bs = bodies.get(r)
        if not bs:
            continue
        cuts_seen += 1
        if bs[-1]["complete"] or bs[-1]["bytes"] >= total:
            BOOK.fail("invented_end", "reset %s: the stand-in saw the body complete (%d bytes)" % (rid, bs[-1]["bytes"]))
    return {"rpc_checked": checked, "cut_bodies_checked": cuts_seen}


def check_health(s, t_start, t_end):
    """The longest time without an answer from /health between start and exrelay's exit."""
    times = []
    fails = 0
    with open(s.poll_out) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1] != "fail":
                times.append(float(parts[0]))
            elif len(parts) >= 2:
                fails += 1
    times = [t for t in times if t_start <= t <= t_end]
    gaps = [(b - a, a) for a, b in zip(times, times[1:])]
    if times:
        gaps.append((t_end - times[-1], times[-1]))
    worst = max(gaps) if gaps else (float("inf"), t_start)
    if worst[0] > 1.0:
        BOOK.fail("health_gap", "/health unanswered for %.2f s at t=%.1f" % (worst[0], worst[1] - T0))
    return {"answers": len(times), "failed_polls": fails, "max_gap_s": round(worst[0], 3)}


def check_sanitizers(s):
    """No sanitizer report in exrelay's stderr or error logs."""
    text = s.error_log_text()
    bad = [line for line in text.splitlines() if "Sanitizer" in line or "runtime error" in line]
    for line in bad[:20]:
        BOOK.fail("sanitizer", line)
    return len(bad)


def check_series(series):
    """Descriptors back to the start after each wave; RSS, once warm (the highest sample of the
    first quarter of the waves, at least the first: ASan's quarantine and the allocator's caches
    fill up then), never above that by more than 25 % + 16 MiB: a leak grows with the requests."""
    base_fd = series[0][1]
    warm = series[1:1 + max(1, (len(series) - 1) // 4)] or series[:1]
    base_rss = max(r for _, _, r, _ in warm if r is not None)
    for label, fds, rss, ok in series[1:]:
        if not ok:
            BOOK.fail("conn_leak", "%s: exrelay still had client connections 30 s after the wave" % label)
        if fds > base_fd + 2:
            BOOK.fail("fd_leak", "%s: %d descriptors, baseline %d" % (label, fds, base_fd))
        if rss is not None and rss > base_rss * 1.25 + 16 * 1024:
            BOOK.fail("rss_growth", "%s: RSS %d KiB, warm baseline %d KiB" % (label, rss, base_rss))


def report(series, extra, args, elapsed):
    """Prints the summary table."""
    print("\n== exrelay soak: %d min requested, %.0f s run, %d RPC clients, %d other clients ==" % (
        args.minutes, elapsed, args.pairs, args.clients))
    print("\n%-18s %8s %8s %8s %8s" % ("requests", "total", "ok", "cut", "error"))
    kinds = sorted(set(k for k, _ in BOOK.res))
    tot = [0, 0, 0, 0]
    for k in kinds:
        row = [BOOK.res[(k, "ok")] + BOOK.res[(k, "cut")] + BOOK.res[(k, "err")], BOOK.res[(k, "ok")],
               BOOK.res[(k, "cut")], BOOK.res[(k, "err")]]
        tot = [a + b for a, b in zip(tot, row)]
        print("%-18s %8d %8d %8d %8d" % ((k,) + tuple(row)))
    print("%-18s %8d %8d %8d %8d" % (("all",) + tuple(tot)))
    print("request ids issued %d; cuts and errors inside fault windows: %s" % (
        BOOK.seq, dict(BOOK.expected_errors) or "none"))
    print("\nbytes: %.1f MiB sent by clients, %.1f MiB received" % (BOOK.bytes_out / 2 ** 20, BOOK.bytes_in / 2 ** 20))
    print("\n%-22s %6s" % ("faults injected", "count"))
    for k in sorted(BOOK.faults):
        print("%-22s %6d" % (k, BOOK.faults[k]))
    print("\nfault windows (s from start): " + ", ".join(
        "%s %s %.0f-%.0f" % (k, tg, a - T0, b - T0) for a, b, k, tg in BOOK.timeline))
    if BOOK.excused:
        with open(os.path.join(args.workdir, "excused.txt"), "w") as f:
            f.write("\n".join(BOOK.excused) + "\n")
        print("first cuts/errors inside fault windows (all in excused.txt of the work folder):")
        for d in BOOK.excused[:6]:
            print("  " + d[:200])
    print("\nexrelay after each wave (idle):")
    print("%-12s %6s %10s" % ("when", "fds", "RSS KiB"))
    for label, fds, rss, _ in series:
        print("%-12s %6d %10s" % (label, fds, rss))
    for k, v in extra.items():
        print("%s: %s" % (k, v))
    print("\n%-22s %6s" % ("failures", "count"))
    if not BOOK.failures:
        print("%-22s %6d" % ("(none)", 0))
    for k in sorted(BOOK.failures):
        print("%-22s %6d" % (k, len(BOOK.failures[k])))
    for k in sorted(BOOK.failures):
        for d in BOOK.failures[k][:8]:
            print("  %s: %s" % (k, d))
    print("\nRESULT: %s" % ("PASS" if not BOOK.failures else "FAIL"), flush=True)


async def main_async(args):
    """Sets up, runs the waves with the faults, drains, checks, reports."""
    s = await asyncio.to_thread(Setup, args)
    print("# soak: workdir %s; HAProxy :%d -> exrelay :%d (admin :%d); stand-ins %s; Apache :%d" % (
        s.dir, s.hport, s.front, s.admin, s.ports, s.apache.port), flush=True)
    lock = asyncio.Lock()
    stop = asyncio.Event()
    series = []
    t_start = time.monotonic()
    await quiet(s, lock, series, "start")
    bg = [asyncio.ensure_future(reloader(s, stop, lock)), asyncio.ensure_future(rotator(s, stop, lock))]
    total = args.minutes * 60
    wave_len = min(45, max(20, total / 3 - 10))
    n = 0
    while n == 0 or time.monotonic() - t_start + wave_len + 10 < total:
        n += 1
        print("# wave %d (%.0f s) at t=%.0f" % (n, wave_len, time.monotonic() - T0), flush=True)
        await run_wave(s, n, wave_len, args)
        await quiet(s, lock, series, "wave %d" % n)
        if not s.relay.alive():
            BOOK.fail("crash", "exrelay exited during wave %d (status %r)" % (n, s.relay.returncode))
            break
    stop.set()
    await asyncio.gather(*bg, return_exceptions=True)
    rc, took = (None, 0.0)
    if s.relay.alive():
        rc, took = await final_drain(s)
    t_end = time.monotonic()
    s.poller.stop()
    extra = {"drain": "exit status %r after %.1f s" % (rc, took)}
    extra["health"] = check_health(s, t_start, t_end)
    extra["sanitizer lines"] = check_sanitizers(s)
    if "log-dup" in args.inject:            # one line doubled, one removed: both must be caught
        tamper_access(s)
    extra["access log"] = check_access(s)
    extra["stand-ins"] = check_standins(s)
    check_series(series)
    args.workdir = s.dir
    report(series, extra, args, time.monotonic() - t_start)
    return 1 if BOOK.failures else 0


def main():
    """Command line."""
    ap = argparse.ArgumentParser(description="exrelay chaos soak (see contrib/soak/README)")
    ap.add_argument("--minutes", type=float, default=3, help="length of the load phase (default 3)")
    ap.add_argument("--pairs", type=int, default=40, help="concurrent RPC virtual connections (default 40)")
    ap.add_argument("--clients", type=int, default=8, help="OWA-like clients; NTLM and slow ones scale with it (default 8)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--inject", action="append", default=[], choices=("relay-stop", "log-dup", "misroute"),
                    help="break something on purpose, to see the checks catch it (the run must FAIL): "
                    "relay-stop (exrelay SIGSTOPped 2.5 s: health_gap), log-dup (an access-log line doubled "
                    "and one removed), misroute (/owa sent to Apache: wrong_backend)")
    args = ap.parse_args()
    for path in (harness.HAPROXY_BIN, harness.APACHE_BIN, harness.exrelay_path()):
        if not os.access(path, os.X_OK):
            sys.exit("soak: %s is missing (build exrelay first; apt-get install haproxy apache2)" % path)
    seed = args.seed if args.seed is not None else int(time.time())
    random.seed(seed)
    print("# soak seed %d" % seed, flush=True)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    asan = os.environ.get("ASAN_OPTIONS", "")
    os.environ["ASAN_OPTIONS"] = "quarantine_size_mb=16:detect_leaks=1" + (":" + asan if asan else "")
    lsan = os.environ.get("LSAN_OPTIONS", "")
    os.environ["LSAN_OPTIONS"] = "suppressions=%s/tests/lsan.supp" % TOP + (":" + lsan if lsan else "")
    try:
        rc = asyncio.run(main_async(args))
    except RuntimeError as e:
        print("soak: setup failed: %s" % e, flush=True)
        rc = 2
    harness.cleanup()
    sys.exit(rc)


if __name__ == "__main__":
    main()
