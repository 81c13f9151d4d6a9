#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_holes.py: the "related holes" of issue 11, section 3, through exrelay (TAP).

Starts the Exchange stand-in (it logs every request with its headers) and a small Python backend
for the catch-all route (it records every request head and can answer with a doubled
Content-Length), then checks:
 1. `Content-Length: 5, 5` (and repeated equal fields) reaches a backend as one `Content-Length: 5`;
    a backend's `5, 5` reaches the client as one 5; differing values stay 400 / 502;
 2. `..` after an empty segment (`/powershell//../owa/`) is refused with 400, reaching no backend;
 3. a `#` in the request target is refused with 400, reaching no backend;
 4. `Upgrade: h2c` (with HTTP2-Settings) goes on as plain HTTP/1.1 without Upgrade, HTTP2-Settings
    or Connection; `Upgrade: websocket` is still forwarded;
 5. `GET http://host HTTP/1.1` (absolute-form without a path) is routed as `/`, sent as `GET /`;
 6. a head trickled in one-byte writes is answered once it is complete (and a bare LF at once);
    exrelay's CPU time for a 60 KiB head sent byte by byte is printed;
 7. Exchange-internal headers (X-CommonAccessToken, X-IsFromCafe, ...) and `_` look-alikes
    (X-Forwarded_For, X_Real_IP, Front_End_Https) sent by a client do not reach the stand-in;
    X-AnchorMailbox and Cookie (X-BackEndCookie) do, unchanged.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_holes.py
"""

import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (serve_loopback, run_checks, ok, is_, diag, start_standin, start_exrelay, wait_for,  # noqa: E402
                     read_head)

T0 = time.monotonic()

# ----------------------------------------------------------------------------------------------
# The catch-all backend: records request heads; /dupcl* answer with doubled Content-Length
# ----------------------------------------------------------------------------------------------

SEEN = []               # request heads (bytes) the catch-all backend received
_socks = []

CANNED = {
    b"/dupcl-list": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nX-Seen: 1\r\n\r\nhello",
    b"/dupcl-fields": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello",
    b"/dupcl-differ": b"HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello",
}


def catchall(c):
    """Serves requests without bodies on one connection until the peer closes."""
    buf = b""
    while True:
        head, buf = read_head(c, buf)
        if head is None:
            return
        SEEN.append(head)
        target = head.split(b" ", 2)[1]
        c.sendall(CANNED.get(target, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))


def start_catchall():
    """The catch-all backend on a free loopback port; one thread per connection (harness)."""
    return serve_loopback(catchall, backlog=16, keep=_socks)


CONFIG = '''
global = { drain_timeout = 2; };
timeouts = { request_head = 20; client_idle = 10; connect = 2; };
limits = { max_head_size = 65536; max_headers = 100; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; add_headers = [ "Front-End-Https: On" ]; },
  { name = "other"; servers = [ "127.0.0.1:%(cport)d" ]; } );
routes = (
  { backend = "exchange"; paths = [ "/owa", "/ecp", "/ews", "/rpc", "/powershell" ]; },
  { backend = "other"; } );
'''

ex = start_standin(ping_interval=0)
CPORT = start_catchall()
relay = start_exrelay(CONFIG % dict(sport=ex.port, cport=CPORT))
PORT = relay.port("public")
diag("exrelay on %d, stand-in %d, catch-all %d" % (PORT, ex.port, CPORT))

STATUS_RE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def read_response(s, timeout=5.0):
    """One response with a Content-Length body (or none): (status, head bytes, body) or (None, data, b"")."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if b"\r\n\r\n" in data:
            head, rest = data.split(b"\r\n\r\n", 1)
            m = re.search(rb"\r\ncontent-length: *(\d+)", head, re.I)
            n = int(m.group(1)) if m else 0
            if len(rest) >= n:
                st = STATUS_RE.match(head + b" ")
                return (int(st.group(1)) if st else None), head, rest[:n]
        s.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            d = s.recv(65536)
        except (socket.timeout, OSError):
            break
        if not d:
            break
        data += d
    return None, data, b""


def ask(raw, timeout=5.0):
    """Sends raw bytes on a fresh connection; returns read_response's answer."""
    with socket.create_connection(("127.0.0.1", PORT), timeout=timeout) as s:
        s.sendall(raw)
        return read_response(s, timeout)


def n_reached():
    """Requests that reached any backend so far."""
    return len(ex.events("request")) + len(SEEN)


def sentinel(tag):
    """A request to each backend after the ones under test: once both arrived, whatever exrelay
    forwarded before them has arrived too. Returns the count of requests before the sentinels."""
    ask(b"GET /owa/sentinel-%s HTTP/1.1\r\nHost: x\r\n\r\n" % tag.encode())
    ask(b"GET /sentinel-%s HTTP/1.1\r\nHost: x\r\n\r\n" % tag.encode())
    ex.wait_event("request", timeout=5, target="/owa/sentinel-%s" % tag)
    wait_for(lambda: any(b"/sentinel-%s " % tag.encode() in h for h in SEEN), 5)
    return n_reached() - 2


def headers_of(target):
    """The headers the stand-in logged for the last request with this target ([] if none)."""
    got = ex.wait_event("request", timeout=5, target=target)
    return [tuple(h) for h in got[-1]["headers"]] if got else []


def check_content_length():
    """1. A Content-Length list or repeated equal fields become one value, both ways."""
    for tag, fields in (("list", b"Content-Length: 5, 5\r\n"),
                        ("fields", b"Content-Length: 5\r\ncontent-length: 5\r\n"),
                        ("three", b"Content-Length: 5,5 , 5\r\nContent-Length: 5\r\n")):
        target = "/owa/cl-%s" % tag
        st, _, body = ask(b"POST %s HTTP/1.1\r\nHost: x\r\n%shello" % (target.encode(), fields + b"\r\n"))
        try:
            nbody = json.loads(body).get("body_bytes")
        except ValueError:
            nbody = None
        is_((st, nbody), (200, 5), "request with %r: 200, the 5 body bytes arrived" % fields)
        cls = [(n, v) for n, v in headers_of(target) if n.lower() == "content-length"]
        is_(cls, [("Content-Length", "5")], "request %s: the backend saw one Content-Length: 5" % tag)
    before = n_reached()
    st, _, _ = ask(b"POST /owa/cl-differ HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello")
    is_(st, 400, "request Content-Length 5, 6: 400")
    is_(sentinel("cl"), before, "the 400 reached no backend")

    for name in ("list", "fields"):
        with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
            s.sendall(b"GET /dupcl-%s HTTP/1.1\r\nHost: x\r\n\r\n" % name.encode())
            st, head, body = read_response(s)
            cls = re.findall(rb"\r\ncontent-length:[ \t]*([^\r]*)", head, re.I)
            is_((st, cls, body), (200, [b"5"], b"hello"),
                "response with doubled Content-Length (%s): the client gets one Content-Length: 5" % name)
            s.sendall(b"GET /after-dupcl HTTP/1.1\r\nHost: x\r\n\r\n")
            st, _, body = read_response(s)
            is_((st, body), (200, b"ok"), "and the connection carries the next request")
    st, _, _ = ask(b"GET /dupcl-differ HTTP/1.1\r\nHost: x\r\n\r\n")
    is_(st, 502, "response Content-Length 5, 6: 502")


def refused(targets, tag):
    """Each target gets 400 and none reaches a backend."""
    before = n_reached()
    for t in targets:
        st, _, _ = ask(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode())
        is_(st, 400, "%s -> 400" % t)
    is_(sentinel(tag), before, "%s targets reached no backend" % tag)


def check_dotdot_after_empty():
    """2. '..' after an empty segment is refused; the harmless forms still route."""
    refused(["/powershell//../owa/", "/owa//../ecp/", "/owa//%2e%2e/x", "//../owa/", "/x//y/../owa/"], "dotdot")
    for t in ("/owa//x", "/owa/../ews/x", "/a/..//owa/y"):
        st, _, _ = ask(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % t.encode())
        ok(st == 200 and ex.wait_event("request", timeout=5, target=t), "%s still routed to Exchange" % t)


def check_fragment():
    """3. A '#' anywhere in the target is refused."""
    refused(["/ecp#/../index.html", "/owa/#x", "/owa/?a=1#b", "/#"], "fragment")


def check_upgrade():
    """4. h2c goes on as plain HTTP/1.1; websocket is forwarded as an upgrade."""
    st, _, _ = ask(b"GET /owa/h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nX-Kept: 1\r\n\r\n")
    is_(st, 200, "Upgrade: h2c: answered as plain HTTP/1.1 (200)")
    names = [n.lower() for n, _ in headers_of("/owa/h2c")]
    ok(names and "upgrade" not in names and "http2-settings" not in names and "connection" not in names
       and "x-kept" in names, "h2c: no Upgrade, HTTP2-Settings or Connection reached the backend (%s)" % names)
    st, _, _ = ask(b"GET /owa/h2c-bare HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: h2c\r\n"
                   b"HTTP2-Settings: AAMA\r\n\r\n")
    names = [n.lower() for n, _ in headers_of("/owa/h2c-bare")]
    ok(st == 200 and names and "http2-settings" not in names and "upgrade" not in names,
       "h2c without Connection naming HTTP2-Settings: dropped too")
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        s.sendall(b"GET /owa/ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                  b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        read_response(s)
    hs = headers_of("/owa/ws")
    ok(("Upgrade", "websocket") in hs and ("Connection", "Upgrade") in hs,
       "Upgrade: websocket still forwarded with Connection: Upgrade")


def check_absolute_no_path():
    """5. 'GET http://host HTTP/1.1' is '/': routed as / and sent in origin-form."""
    del SEEN[:]
    st, _, body = ask(b"GET http://mail.example.com HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
    is_((st, body), (200, b"ok"), "absolute-form without a path: 200 from the catch-all route")
    wait_for(lambda: SEEN, 5)
    line = SEEN[0].split(b"\r\n")[0] if SEEN else b""
    is_(line, b"GET / HTTP/1.1", "sent as origin-form /")
    st, _, _ = ask(b"GET http://mail.example.com?x=1 HTTP/1.1\r\nHost: mail.example.com\r\n\r\n")
    ok(st == 200 and wait_for(lambda: any(h.startswith(b"GET /?x=1 HTTP/1.1") for h in SEEN), 5),
       "absolute-form with a query only: GET /?x=1")


def cpu_s(pid):
    """utime + stime of a process in seconds."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def check_trickle():
    """6. A head trickled one byte per write is answered when complete; a bare LF at once."""
    head = (b"GET /owa/trickle HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"Q" * (60 * 1024)
            + b"\r\nX-Last: 1\r\n\r\n")
    with socket.create_connection(("127.0.0.1", PORT), timeout=20) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c0, t0 = cpu_s(relay.pid), time.monotonic()
        for i in range(len(head) - 1):
            s.send(head[i:i + 1])
        s.settimeout(0.3)
        try:
            early = s.recv(100)
        except socket.timeout:
            early = b""
        is_(early, b"", "no answer while the last byte is missing")
        s.send(head[-1:])
        st, _, _ = read_response(s, 10)
        c1, t1 = cpu_s(relay.pid), time.monotonic()
    is_(st, 200, "a 60 KiB head sent one byte per write: 200")
    diag("60 KiB head in %d one-byte writes: exrelay used %.0f ms CPU over %.1f s" %
         (len(head), (c1 - c0) * 1000, t1 - t0))
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
        for b in b"GET /owa/x HTTP/1.1\nHo":
            s.send(bytes([b]))
        st, _, _ = read_response(s, 3)       # the head is unfinished: only an early verdict answers
        is_(st, 400, "bare LF in a trickled head: 400 at once, before the head ends")


def check_strip_internal():
    """7. Internal headers and '_' look-alikes never reach the stand-in; ordinary ones do."""
    stripped = [("X-CommonAccessToken", "VgEAVAdXaW5kb3dz"), ("x-isfromcafe", "1"),
                ("X-SourceCafeServer", "cafe01"), ("msExchProxyUri", "https://x/owa"),
                ("X-MSExchangeProxyLogonToken", "t"), ("X-BEResource", "localhost/owa/auth/x.js"),
                ("X-AnonResource", "true"), ("X-AnonResource-Backend", "localhost/ecp/default.flt"),
                ("msExchLogonAccount", "S-1-5-20"), ("msExchLogonMailbox", "S-1-5-20"),
                ("msExchTargetMailbox", "x"), ("X_CommonAccessToken", "a"), ("X_IsFromCafe", "1"),
                ("X-Forwarded_For", "6.6.6.6"), ("X_Forwarded_For", "6.6.6.6"), ("X-Forwarded_Proto", "https"),
                ("X_Real_IP", "6.6.6.6"), ("X-Real_IP", "6.6.6.6"), ("Front_End_Https", "Off")]
    kept = [("X-AnchorMailbox", "SMTP:alice@example.com"),
            ("Cookie", "X-BackEndCookie=S-1-5-21-1-2-3-1001=u56Lnp2ejJqBy8zGyM3Hz83SnM; X-OWA-CANARY=abc"),
            ("X_Custom", "kept")]
    raw = b"GET /owa/strip HTTP/1.1\r\nHost: mail.example.com\r\n" + \
        b"".join(b"%s: %s\r\n" % (n.encode(), v.encode()) for n, v in stripped + kept) + b"\r\n"
    st, _, _ = ask(raw)
    is_(st, 200, "request with internal headers: 200")
    hs = headers_of("/owa/strip")
    names = {n.lower() for n, _ in hs}
    is_(sorted(n for n, _ in stripped if n.lower() in names), [], "no internal header or look-alike reached the stand-in")
    is_([h for h in hs if h in kept], kept, "X-AnchorMailbox, Cookie (X-BackEndCookie) and X_Custom reached it unchanged")
    is_([v for n, v in hs if n == "Front-End-Https"], ["On"], "Front-End-Https is exrelay's own (add_headers)")
    ok(not any("6.6.6.6" in v for _, v in hs), "no forged address survives")


run_checks((check_content_length, check_dotdot_after_empty, check_fragment, check_upgrade,
            check_absolute_no_path, check_trickle, check_strip_internal), relay, T0)
for sk in _socks:
    try:
        sk.close()
    except OSError:
        pass
