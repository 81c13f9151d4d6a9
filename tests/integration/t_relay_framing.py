#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_framing.py: HTTP/1.1 framing at exrelay (RFC 9112, PROTOCOLS.md section 5), errors, timeouts (TAP).

Client side: CL+TE, invalid Content-Length, unknown Transfer-Encoding, obs-fold, whitespace before
a colon, bare LF / CR / NUL, missing / repeated / invalid Host, oversize head (431), long request
line (414), too many headers (431), chunk-size overflow, an early final answer whose unread body
must not be parsed as a request. Keep-alive and pipelining (in order, across two backends), HTTP/1.0
close, one backend connection reused for one client connection, chunked bodies both ways, HEAD/204.
Backend side: broken responses (cl-te, badchunk, cut, badstatus, badcl, dupcl, none), refused
connect (502 in < 1 s), connect timeout (504: a loopback listener whose accept queue is full).
Timeouts: request_head (slowloris, 408), client_idle (close), backend idle_timeout on a stream.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_framing.py
"""

import hashlib
import json
import os
import select
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, done, free_port, start_standin, start_apache, start_exrelay, \
    wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
REQUEST_HEAD, CLIENT_IDLE, CONNECT = 2, 2, 1

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 2; };
timeouts = { request_head = %(rh)d; client_idle = %(ci)d; connect = %(ct)d; proxy_header = 3; };
limits = { max_head_size = 8192; max_headers = 20; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; },
  { name = "shortidle"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 1; },
  { name = "dead"; servers = [ "127.0.0.1:%(dead)d" ]; },
  { name = "blackhole"; servers = [ "127.0.0.1:%(hole)d" ]; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60; } );
routes = (
  { backend = "shortidle"; paths = [ "/rpc" ]; },
  { backend = "dead"; paths = [ "/dead" ]; },
  { backend = "blackhole"; paths = [ "/hole" ]; },
  { backend = "exchange"; paths = [ "/owa", "/ews", "/mapi" ]; },
  { backend = "apache"; } );
'''

# A loopback listener whose accept queue is full: further SYNs are dropped, so a connect hangs.
hole = socket.socket()
hole.bind(("127.0.0.1", 0))
hole.listen(0)
HOLE = hole.getsockname()[1]
hole_fill = []
for _ in range(4):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", HOLE))
    except BlockingIOError:
        pass
    hole_fill.append(s)

ex = start_standin(ping_interval=0)
ap = start_apache(free_port(), proxy_protocol=True)
dead = socket.socket()      # bound, never listening: connects are refused, and the port stays ours
dead.bind(("127.0.0.1", 0))
DEAD = dead.getsockname()[1]
relay = start_exrelay(CONFIG % dict(rh=REQUEST_HEAD, ci=CLIENT_IDLE, ct=CONNECT, sport=ex.port,
                                    dead=DEAD, hole=HOLE, aport=ap.port))
PORT = relay.port("public")


def connect(timeout=10):
    """A raw client connection to exrelay."""
    return rpch.HttpConn("127.0.0.1", PORT, timeout=timeout)


def sentinel(tag):
    """Sends, on a fresh connection, a request that must reach the stand-in and waits until the
    stand-in logged it: whatever exrelay forwarded before it has arrived by then. True if it did."""
    target = "/owa/sentinel-%s" % tag
    with connect() as c:
        c.request("GET", target, [("Host", "x")], timeout=5)
    return bool(ex.wait_event("request", timeout=5, target=target))


def n_requests():
    """How many requests the stand-in logged."""
    return len(ex.events("request"))


def raw_exchange(data, timeout=5):
    """Sends raw bytes on a fresh connection; returns (status or None, closed-after-response)."""
    with connect() as c:
        try:
            c.send(data)
            resp = c.read_response(timeout=timeout)
        except (EOFError, OSError):
            return None, True
        try:
            c.read_body(resp, timeout=timeout)
        except (EOFError, OSError):
            return resp.status, True
        return resp.status, c.wait_closed(timeout=2)


def check_client_errors():
    """Each malformed request gets its status and the connection closes; nothing reaches a backend."""
    big = "a" * 3000
    cases = [
        ("CL and TE together", 400,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
        ("TE and CL together (TE first)", 400,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"),
        ("Content-Length: abc", 400, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"),
        ("Content-Length: -1", 400, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n"),
        ("Content-Length: +5", 400, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello"),
        ("Content-Length: 0x10", 400, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n"),
        ("Content-Length list 5, 6", 400, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello"),
        ("two Content-Length 5 and 6", 400,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"),
        ("Content-Length overflow", 400,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
        ("Content-Length 2^63", 400,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nContent-Length: 9223372036854775808\r\n\r\n"),
        ("Transfer-Encoding: gzip", 501, b"POST /owa/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"),
        ("Transfer-Encoding: gzip, chunked", None,
         b"POST /owa/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ("obs-fold", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
        ("space before colon", 400, b"GET /owa/x HTTP/1.1\r\nHost : x\r\n\r\n"),
        ("tab before colon", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\r\nX-A\t: b\r\n\r\n"),
        ("missing Host on 1.1", 400, b"GET /owa/x HTTP/1.1\r\nX-A: b\r\n\r\n"),
        ("duplicate Host", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n"),
        ("invalid Host", 400, b"GET /owa/x HTTP/1.1\r\nHost: a b\r\n\r\n"),
        ("bare LF line ends", 400, b"GET /owa/x HTTP/1.1\nHost: x\n\n"),
        ("bare LF in one header", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n"),
        ("bare CR in a value", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n"),
        ("NUL in a value", 400, b"GET /owa/x HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n"),
        ("bad request line", 400, b"GET  /owa/x HTTP/1.1\r\nHost: x\r\n\r\n"),
        ("bad version", 400, b"GET /owa/x HTTP/1.2x\r\nHost: x\r\n\r\n"),
        ("oversize head", 431, ("GET /owa/x HTTP/1.1\r\nHost: x\r\nX-A: %s\r\nX-B: %s\r\nX-C: %s\r\n\r\n"
                                % (big, big, big)).encode()),
        ("long request line", 414, ("GET /owa/%s HTTP/1.1\r\nHost: x\r\n\r\n" % ("b" * 9000)).encode()),
        ("too many headers", 431, ("GET /owa/x HTTP/1.1\r\nHost: x\r\n%s\r\n"
                                   % "".join("X-H%d: v\r\n" % i for i in range(25))).encode()),
    ]
    n = n_requests()
    for name, want, data in cases:
        status, closed = raw_exchange(data)
        if want is None:
            ok(status in (400, 501) and closed, "%s: 400 or 501 and close (got %r, closed %r)" % (name, status, closed))
        else:
            is_((status, closed), (want, True), "%s: %d and close" % (name, want))
    is_((sentinel("malformed"), n_requests()), (True, n + 1),
        "no malformed request reached the stand-in (only the sentinel after them)")
    # just under the limits: accepted
    status, _ = raw_exchange(("GET /owa/x HTTP/1.1\r\nHost: x\r\n%s\r\n"
                              % "".join("X-H%d: v\r\n" % i for i in range(19))).encode())
    is_(status, 200, "20 headers (the limit): accepted")


def check_body_framing():
    """Chunk-level errors in a request body; an early answer's unread body is never a request."""
    n = n_requests()
    for name, body in [("chunk size overflow", b"ffffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
                       ("bare LF in a chunk line", b"5\nhello\r\n0\r\n\r\n"),
                       ("non-hex chunk size", b"zz\r\nhello\r\n0\r\n\r\n")]:
        with connect() as c:
            c.send(b"POST /owa/chunkerr HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + body
                   + b"GET /owa/smuggled-chunk HTTP/1.1\r\nHost: x\r\n\r\n")
            try:
                resp = c.read_response(timeout=5)
                status = resp.status
            except (EOFError, OSError):
                status = None
            closed = c.wait_closed(timeout=5)
        ok(status != 200 and closed, "%s: no 200, connection closed (status %r)" % (name, status))
    is_((sentinel("chunk"), ex.events("request", target="/owa/smuggled-chunk")), (True, []),
        "nothing after a broken chunk became a request (checked after a sentinel arrived)")
    # the stand-in answers 403 at once without reading the body; the body holds a request
    smuggled = b"GET /owa/smuggled-early HTTP/1.1\r\nHost: x\r\n\r\n"
    body = smuggled + b"x" * (100 - len(smuggled))
    with connect() as c:
        c.send(b"POST /owa/early?early=403 HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        resp = c.read_response(timeout=5)
        c.read_body(resp, timeout=5)
        try:
            c.send(body)
            c.send(b"GET /owa/after-early HTTP/1.1\r\nHost: x\r\n\r\n")
            resp2 = c.read_response(timeout=3)
            c.read_body(resp2, timeout=3)
        except (EOFError, OSError, socket.timeout):
            resp2 = None
    is_(resp.status, 403, "early final answer passed on")
    is_((sentinel("early"), ex.events("request", target="/owa/smuggled-early")), (True, []),
        "the unread body was never parsed as a request (checked after a sentinel arrived)")
    ok(resp2 is None or ex.events("request", target="/owa/after-early"),
       "after the early answer: connection closed or the next request served properly")
    ok(n_requests() >= n, "stand-in still counting")


def check_keepalive_pipelining():
    """Keep-alive reuse, pipelining in order (across backends), HTTP/1.0 close, HEAD/204."""
    with connect() as c:
        r1, b1 = c.request("GET", "/owa/ka1", [("Host", "x")], timeout=5)
        r2, b2 = c.request("POST", "/ews/ka2", [("Host", "x"), ("Content-Length", "3")], b"abc", timeout=5)
    j1, j2 = json.loads(b1), json.loads(b2)
    is_((r1.status, r2.status), (200, 200), "keep-alive: two requests answered")
    is_(j1["conn"], j2["conn"], "keep-alive: both on one backend connection (%s)" % j1["conn"])
    with connect() as c:
        c.send(b"GET /owa/p1 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /cgi-bin/echo?p2 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"POST /owa/p3 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nbody"
               b"GET /owa/p4?len=5000&seed=2 HTTP/1.1\r\nHost: x\r\n\r\n"
               b"GET /owa/p5 HTTP/1.1\r\nHost: x\r\n\r\n")
        got = []
        for _ in range(5):
            resp = c.read_response(timeout=10)
            got.append((resp, c.read_body(resp, timeout=10)))
    targets = []
    for resp, body in got:
        try:
            j = json.loads(body)
            targets.append(j.get("target") or j.get("uri"))
        except ValueError:
            targets.append("pattern" if body == rpch.Pattern(2).chunk(0, 5000) else repr(body[:30]))
    is_(targets, ["/owa/p1", "/cgi-bin/echo?p2", "/owa/p3", "pattern", "/owa/p5"],
        "pipelined requests (exchange, apache, exchange) answered in order")
    conns = [json.loads(b).get("conn") if b.startswith(b"{") else None for r, b in got]
    ok(conns[2] is not None and conns[2] == conns[4],
       "pipelined: consecutive Exchange requests share one backend connection (%r)" % conns)
    diag("pipelined: Exchange connection before/after the Apache request: %s / %s" % (conns[0], conns[2]))
    with connect() as c:
        resp, body = c.request("GET", "/owa/ten", [("Host", "x")], version="HTTP/1.0", timeout=5)
        is_(resp.status, 200, "HTTP/1.0 without keep-alive: answered")
        ok(c.wait_closed(timeout=3), "HTTP/1.0 without keep-alive: closed after the response")
    with connect() as c:
        resp, body = c.request("GET", "/owa/ten", [("Host", "x"), ("Connection", "keep-alive")], version="HTTP/1.0",
                               timeout=5)
        resp2, body2 = c.request("GET", "/owa/ten2", [("Host", "x"), ("Connection", "keep-alive")],
                                 version="HTTP/1.0", timeout=5)
        is_((resp.status, resp2.status), (200, 200), "HTTP/1.0 with keep-alive: two requests")
        ok(resp.header("Transfer-Encoding") is None, "HTTP/1.0 client: response not chunked")
    with connect() as c:
        resp, body = c.request("GET", "/owa/x?close=1", [("Host", "x"), ("Connection", "close")], timeout=5)
        is_(resp.status, 200, "Connection: close request answered")
        ok(c.wait_closed(timeout=3), "Connection: close: closed after the response")
    with connect() as c:
        resp, body = c.request("HEAD", "/owa/head?len=1000", [("Host", "x")], timeout=5)
        is_((resp.status, resp.header("Content-Length"), body), (200, "1000", b""), "HEAD: length header, no body")
        resp, body = c.request("GET", "/owa/nc?status=204", [("Host", "x")], timeout=5)
        is_((resp.status, body), (204, b""), "204: no body")
        resp, body = c.request("GET", "/owa/after-head", [("Host", "x")], timeout=5)
        is_((resp.status, json.loads(body)["target"]), (200, "/owa/after-head"), "in sync after HEAD and 204")


def check_chunked():
    """Chunked request bodies and chunked responses pass through."""
    parts = [os.urandom(10), os.urandom(70000), b"", os.urandom(1)]
    body = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(p), p) for p in parts if p) + b"0\r\nX-Trailer: t\r\n\r\n"
    with connect() as c:
        c.send(b"POST /owa/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        half = len(body) // 2
        c.send(body[:half])
        time.sleep(0.1)
        c.send(body[half:])
        resp = c.read_response(timeout=10)
        j = json.loads(c.read_body(resp, timeout=10))
        data = b"".join(parts)
        is_((resp.status, j["body_bytes"], j["body_sha256"]), (200, len(data), hashlib.sha256(data).hexdigest()),
            "chunked request body: stand-in got the data (sha256)")
        resp, body2 = c.request("GET", "/owa/cr?chunked=1&len=200000&seed=4", [("Host", "x")], timeout=10)
        is_((resp.header("Transfer-Encoding"), body2 == rpch.Pattern(4).chunk(0, 200000)), ("chunked", True),
            "chunked response passed through intact")
        resp, body3 = c.request("GET", "/owa/after-chunked", [("Host", "x")], timeout=5)
        is_((resp.status, json.loads(body3)["conn"]), (200, j["conn"]), "in sync after chunked bodies, same backend conn")
    with connect() as c:
        resp, body = c.request("GET", "/owa/rc?close=1&len=30000&seed=6", [("Host", "x")], timeout=10)
        is_(body, rpch.Pattern(6).chunk(0, 30000), "read-until-close response passed through")
        ok(c.wait_closed(timeout=3), "read-until-close response: client connection closed after it")


def check_broken_backend():
    """Broken backend responses: 502, or the client connection cut (never a clean end)."""
    for kind in ("cl-te", "badstatus", "badcl", "dupcl", "none"):
        with connect() as c:
            c.send_request("GET", "/owa/b?broken=%s" % kind, [("Host", "x")])
            try:
                resp = c.read_response(timeout=5)
                status = resp.status
            except (EOFError, OSError) as e:
                status = None
            closed = c.wait_closed(timeout=5)
        is_(status, 502, "backend ?broken=%s: 502 (closed %r)" % (kind, closed))
    with connect() as c:
        c.send_request("GET", "/owa/b?broken=badchunk", [("Host", "x")])
        status, clean = None, False
        try:
            resp = c.read_response(timeout=5)
            status = resp.status
            if status == 200:
                c.read_body(resp, timeout=5)
                clean = True
        except (EOFError, OSError, ValueError):
            pass
        closed = c.wait_closed(timeout=5)
    ok((status == 502 or not clean) and closed, "backend ?broken=badchunk: 502 or cut, never clean (status %r)" % status)
    with connect() as c:
        c.send_request("GET", "/owa/b?broken=cut", [("Host", "x")])
        resp = c.read_response(timeout=5)
        try:
            c.read_exact(1000, timeout=5)
            cut = False
        except EOFError:
            cut = True
        except socket.timeout:
            cut = "hung"
        is_((resp.status, cut), (200, True), "backend ?broken=cut: client connection closed before Content-Length")
    t = time.monotonic()
    status, closed = raw_exchange(b"GET /dead/x HTTP/1.1\r\nHost: x\r\n\r\n")
    dt = time.monotonic() - t
    is_(status, 502, "backend refused: 502")
    ok(dt < 1.0, "backend refused: answered in %.3f s (< 1 s)" % dt)
    t = time.monotonic()
    status, closed = raw_exchange(b"GET /hole/x HTTP/1.1\r\nHost: x\r\n\r\n", timeout=CONNECT + 5)
    dt = time.monotonic() - t
    is_(status, 504, "backend connect timeout: 504 (%.2f s)" % dt)
    ok(CONNECT - 0.3 <= dt <= CONNECT + 2, "connect timeout after ~%d s (%.2f s)" % (CONNECT, dt))


def check_timeouts():
    """request_head (slowloris), client_idle, backend idle_timeout on a stream."""
    with connect() as c:
        t = time.monotonic()
        c.send(b"GET /owa/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        status, dt = None, None
        while time.monotonic() - t < REQUEST_HEAD + 3:    # a byte every 0.1 s: never idle, no head end
            try:
                c.send(b"a")
            except OSError:
                break
            r, _, _ = select.select([c.sock], [], [], 0.1)
            if r:
                break
        try:
            resp = c.read_response(timeout=REQUEST_HEAD + 3)
            status = resp.status
        except (EOFError, OSError):
            pass
        dt = time.monotonic() - t
        closed = c.wait_closed(timeout=3)
    is_((status, closed), (408, True), "slowloris (a byte every 0.1 s): 408 and close")
    ok(REQUEST_HEAD - 0.3 <= dt <= REQUEST_HEAD + 1.5, "408 after request_head=%d s (%.2f s)" % (REQUEST_HEAD, dt))
    with connect() as c:
        resp, body = c.request("GET", "/owa/idle", [("Host", "x")], timeout=5)
        t = time.monotonic()
        closed = c.wait_closed(timeout=CLIENT_IDLE + 4)
        dt = time.monotonic() - t
        rest = bytes(c.buf)
    ok(closed and rest == b"", "client_idle: closed with no bytes sent")
    ok(CLIENT_IDLE - 0.3 <= dt <= CLIENT_IDLE + 1.5, "client_idle=%d s: closed after %.2f s" % (CLIENT_IDLE, dt))
    # backend idle_timeout 1 s on an RPC OUT channel with no traffic (no IN channel, no pings)
    with connect() as c:
        cookie = rpch.new_cookie()
        c.send(rpch.rpc_out_request() + rpch.conn_a1(cookie))
        resp = c.read_response(timeout=5)
        rpch.parse_a3(c.read_exact(rpch.A3_LEN, timeout=5))
        t = time.monotonic()
        closed = c.wait_closed(timeout=6)
        dt = time.monotonic() - t
    ok(resp.status == 200 and closed and 0.7 <= dt <= 3.0,
       "backend idle_timeout=1 on a silent OUT stream: closed after %.2f s" % dt)
    ok(wait_for(lambda: "idle timeout during a stream" in relay.stderr_text(), 3),
       "idle stream: exrelay logged the idle timeout")
    # a stream with traffic in time is not cut: echo requests every 0.4 s over 2 s on /rpc
    with connect() as c:
        good = 0
        for _ in range(5):
            r, b = c.request("RPC_IN_DATA", "/rpc/rpcproxy.dll?x:6001", [("Host", "x"), ("Content-Length", "4")],
                             b"\0" * 4, timeout=5)
            good += r.status == 200 and len(b) == 20
            time.sleep(0.4)
        is_(good, 5, "traffic every 0.4 s on a backend with idle_timeout 1: never cut")


run_checks((check_client_errors, check_body_framing, check_keepalive_pipelining, check_chunked,
              check_broken_backend, check_timeouts), relay, T0)
