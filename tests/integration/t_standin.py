#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_standin.py: self-test of the Exchange stand-in and of the Apache harness (TAP), no exrelay.

Talks to tests/standin/exchange.py directly: echo requests, the RPC over HTTP v2 handshake,
IN->OUT echo latency, 100-continue, NTLM on one connection and across connections,
NotificationWait chunks, sink (64 MiB upload, sha256) and source (64 MiB, verified byte for byte),
the 503 error mode and a few framing knobs; then starts Apache through the harness and checks that
a PROXY v1 header sets REMOTE_ADDR. Run: cd tests && python3 integration/t_standin.py
"""

import hashlib
import json
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, done, free_port, start_standin, start_apache, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
MiB = 1 << 20
ex = start_standin(ping_interval=0, notify_interval=30)
diag("stand-in on port %d, log %s" % (ex.port, ex.log))


def connect():
    """A fresh raw connection to the stand-in."""
    return rpch.HttpConn("127.0.0.1", ex.port, timeout=10)


def check_echo_requests():
    """Echo requests: both methods, Content-Length 4 and 0, keep-alive on one connection."""
    with connect() as c:
        resp, body = c.request("RPC_IN_DATA", "/rpc/rpcproxy.dll?exchange.example.com:6001",
                               [("Host", "mail.example.com"), ("Content-Length", "4")], b"\0\0\0\0")
        is_((resp.status, resp.reason, len(body)), (200, "Success", 20), "echo: 200 Success with 20 bytes")
        ok(rpch.parse_rts(body)["flags"] == rpch.RTS_FLAG_ECHO, "echo: body is an Echo RTS PDU")
        resp, body = c.request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?exchange.example.com:6001",
                               [("Host", "mail.example.com"), ("Content-Length", "0")])
        is_((resp.status, len(body)), (200, 20), "echo: second request on the same connection (keep-alive)")
    reqs = ex.events("request", method="RPC_OUT_DATA")
    ok(reqs and reqs[-1]["headers"][0] == ["Host", "mail.example.com"], "log keeps header names and order")


def check_handshake_and_echo_latency():
    """Full handshake, then a 100-byte write on IN must come back on OUT quickly."""
    vc = rpch.open_virtual_connection(connect)
    r = vc.out_response
    is_((r.status, r.reason, r.header("Content-Type"), r.header("Content-Length")),
        (200, "Success", "application/rpc", "1073741824"), "OUT: 200 Success, application/rpc, 1 GiB")
    ok(True, "handshake: A3 then C2 on OUT after B1 on IN")
    paired = ex.wait_event("paired", cookie=vc.cookie.hex())
    ok(paired and paired[0]["out_conn"] != paired[0]["in_conn"], "log: paired event names both connections")
    payload = os.urandom(100)
    worst = 0.0
    for _ in range(20):
        t = time.monotonic()
        vc.inn.send(payload)
        got = vc.out.read_exact(100, timeout=5)
        worst = max(worst, time.monotonic() - t)
        if got != payload:
            break
    is_(got, payload, "100-byte write on IN echoed on OUT")
    ok(worst < 0.05, "echo latency worst of 20: %.1f ms" % (worst * 1000))
    vc.inn.close()
    closed = ex.wait_event("in_closed", cookie=vc.cookie.hex())
    ok(closed and closed[0]["bytes"] == 104 + 2000 and closed[0]["complete"] is False,
       "IN closed early: in_closed with bytes=B1+data, complete=false")
    vc.out.close()
    ok(ex.wait_event("out_closed", cookie=vc.cookie.hex()), "OUT close logged")


def check_100_continue():
    """Expect: 100-continue: exactly one 100 before the body is read, then the final answer."""
    with connect() as c:
        c.send_request("POST", "/ews/exchange.asmx", [("Host", "mail.example.com"),
                                                      ("Expect", "100-continue"), ("Content-Length", "10")])
        first = c.read_head(timeout=5)
        is_(first.status, 100, "100 Continue arrives before the body is sent")
        c.send(b"0123456789")
        resp = c.read_response(timeout=5)
        body = c.read_body(resp)
        is_((resp.status, len(resp.interim)), (200, 0), "then the final 200, no second 100")
        is_(json.loads(body)["body_bytes"], 10, "body read after the 100")
        c.sock.settimeout(0.2)
        try:
            extra = c.sock.recv(100)
        except socket.timeout:
            extra = b""
        is_(extra, b"", "nothing more on the wire")


def check_ntlm():
    """NTLM: three legs on one connection pass; leg 3 on another connection is refused."""
    with connect() as a:
        resp, _ = a.request("GET", "/auth/whoami", [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type1())])
        is_(resp.status, 401, "NTLM leg 1: 401")
        challenge = resp.header("WWW-Authenticate")
        ok(challenge and challenge.startswith("NTLM "), "NTLM leg 2: challenge in WWW-Authenticate")
        resp, body = a.request("GET", "/auth/whoami",
                               [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type3(challenge, "EX\\bob"))])
        is_((resp.status, json.loads(body)["ntlm_user"]), (200, "EX\\bob"), "NTLM leg 3 on the same connection: 200")
        resp, body = a.request("GET", "/auth/again", [("Host", "x")])
        is_(resp.status, 200, "connection stays authenticated")
    with connect() as b, connect() as c:
        resp, _ = b.request("GET", "/ews/x?auth=ntlm", [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type1())])
        challenge = resp.header("WWW-Authenticate")
        resp, _ = c.request("GET", "/ews/x?auth=ntlm",
                            [("Host", "x"), ("Authorization", "NTLM " + rpch.ntlm_type3(challenge))])
        is_(resp.status, 401, "NTLM leg 3 on another connection: 401")
    ok(ex.wait_event("ntlm_wrong_connection"), "log: ntlm_wrong_connection")


def check_notification_wait():
    """NotificationWait: chunked, PROCESSING, PENDING every interval, DONE, last chunk."""
    with connect() as c:
        c.send_request("POST", "/mapi/emsmdb/?MailboxId=x@example.com&interval=0.2&pending=3",
                       [("Host", "x"), ("X-RequestType", "NotificationWait"),
                        ("Content-Type", "application/mapi-http"), ("Content-Length", "3")], b"abc")
        resp = c.read_response(timeout=5)
        is_((resp.status, resp.header("Transfer-Encoding")), (200, "chunked"), "NotificationWait: 200 chunked")
        chunks, times = [], []
        while True:
            data = c.read_chunk(timeout=5)
            if data is None:
                break
            chunks.append(data)
            times.append(time.monotonic())
        kinds = [d.split(b"\r\n", 1)[0] for d in chunks]
        is_(kinds, [b"PROCESSING", b"PENDING", b"PENDING", b"PENDING", b"DONE"], "chunk sequence")
        gaps = [b - a for a, b in zip(times, times[1:4])]
        ok(all(0.15 < g < 0.5 for g in gaps), "PENDING chunks about 0.2 s apart: %s" % ["%.2f" % g for g in gaps])
        resp, _ = c.request("GET", "/after", [("Host", "x")])
        is_(resp.status, 200, "connection reusable after the chunked answer")


def check_sink():
    """Sink mode: a 64 MiB upload on IN is counted and hashed; closing early is normal."""
    vc = rpch.open_virtual_connection(connect, in_query="mode=sink")
    h = hashlib.sha256(vc.b1)
    t = time.monotonic()
    for piece in rpch.Pattern(7).pieces(64 * MiB):
        h.update(piece)
        vc.inn.send(piece)
    vc.inn.close()
    ev = ex.wait_event("in_closed", timeout=20, cookie=vc.cookie.hex())
    dt = time.monotonic() - t
    ok(ev and ev[0]["bytes"] == 104 + 64 * MiB, "sink: 64 MiB + B1 counted")
    ok(ev and ev[0]["sha256"] == h.hexdigest() and ev[0]["complete"] is False, "sink: sha256 matches, complete=false")
    diag("sink: %.0f MB/s" % (64 * MiB / dt / 1e6))
    vc.close()


def check_source():
    """Source mode: 64 MiB of the pattern on OUT after C2, verified byte for byte."""
    vc = rpch.open_virtual_connection(connect, out_query="source=%d&seed=3" % (64 * MiB))
    v = rpch.PatternVerifier(3)
    t = time.monotonic()
    for piece in vc.out.iter_exact(64 * MiB, timeout=20):
        if not v.update(piece):
            break
    dt = time.monotonic() - t
    ok(v.ok and v.offset == 64 * MiB, "source: 64 MiB verified (mismatch at %r)" % v.mismatch_at)
    diag("source: %.0f MB/s" % (64 * MiB / dt / 1e6))
    # the verifier must catch a swapped block
    bad = rpch.PatternVerifier(3)
    p = rpch.Pattern(3)
    ok(not bad.update(p.block(1)), "verifier rejects a misordered block")
    ok(ex.wait_event("source_done", bytes=64 * MiB), "log: source_done")
    vc.close()


def check_error_mode():
    """?fail_after=N: the IN channel gets `HTTP/1.0 503 RPC Error: 6ba` mid-stream."""
    vc = rpch.open_virtual_connection(connect, in_query="fail_after=10")
    vc.inn.send(b"x" * 10)
    resp = vc.inn.read_response(timeout=5)
    is_((resp.version, resp.status, resp.reason), ("HTTP/1.0", 503, "RPC Error: 6ba"), "IN error: 503 RPC Error: 6ba")
    ok(vc.inn.wait_closed(timeout=5), "IN closed after the error")
    vc.close()


def check_framing_knobs():
    """Generic knobs: len, chunked, close, status, and a broken (cut) response."""
    with connect() as c:
        resp, body = c.request("GET", "/x?len=100000&seed=1", [("Host", "x")])
        is_(body, rpch.Pattern(1).chunk(0, 100000), "?len=N: pattern body")
        resp, body = c.request("GET", "/x?chunked=1&len=70000", [("Host", "x")])
        is_((resp.header("Transfer-Encoding"), len(body)), ("chunked", 70000), "?chunked=1")
        resp, body = c.request("GET", "/x?status=404&rh=X-Test:%20a%20b", [("Host", "x")])
        is_((resp.status, resp.header("X-Test")), (404, "a b"), "?status= and ?rh=")
        resp, body = c.request("GET", "/x?close=1&len=5000", [("Host", "x")])
        is_((resp.header("Content-Length"), len(body)), (None, 5000), "?close=1: body delimited by close")
    with connect() as c:
        c.send_request("GET", "/x?broken=cut", [("Host", "x")])
        resp = c.read_response(timeout=5)
        is_(len(c.read_until_close(timeout=5)), 10, "?broken=cut: 10 of 1000 bytes, then close")
    with connect() as c:
        c.send(b"GET /x HTTP/1.1\r\nHost : x\r\n\r\n")
        resp = c.read_response(timeout=5)
        is_(resp.status, 400, "stand-in refuses whitespace before a colon")


def check_apache():
    """Apache via the harness: a PROXY v1 header sets REMOTE_ADDR seen by the echo CGI."""
    ap = start_apache(free_port(), proxy_protocol=True)
    with rpch.HttpConn("127.0.0.1", ap.port, timeout=10) as c:
        c.send(b"PROXY TCP4 203.0.113.7 127.0.0.1 5555 80\r\n")
        resp, body = c.request("POST", "/cgi-bin/echo?x=1", [("Host", "www.example.com"),
                                                               ("X-Custom", "Value"), ("Content-Length", "5")],
                               b"hello")
        is_(resp.status, 200, "Apache: /cgi-bin/echo answers")
        info = json.loads(body) if resp.status == 200 else {}
        is_(info.get("remote_addr"), "203.0.113.7", "Apache: REMOTE_ADDR from the PROXY v1 header")
        is_((info.get("body_bytes"), info.get("body_sha256")), (5, hashlib.sha256(b"hello").hexdigest()),
            "Apache: CGI sees the body")
        is_(info.get("headers", {}).get("X-Custom"), "Value", "Apache: CGI sees request headers")
    lines = wait_for(lambda: [l for l in ap.access_log_lines() if "/cgi-bin/echo" in l], 5)
    ok(lines and lines[0].startswith("203.0.113.7 127.0.0.1 "), "Apache access log: %s" % (lines or ["none"])[0])
    ap.stop()


for check in (check_echo_requests, check_handshake_and_echo_latency, check_100_continue, check_ntlm,
              check_notification_wait, check_sink, check_source, check_error_mode, check_framing_knobs,
              check_apache):
    try:
        check()
    except Exception as e:
        ok(False, "%s raised %s: %s" % (check.__name__, type(e).__name__, e))
diag("total %.1f s" % (time.monotonic() - T0))
done()
