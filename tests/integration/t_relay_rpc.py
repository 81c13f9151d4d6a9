#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_rpc.py: Outlook Anywhere (RPC over HTTP v2), NTLM and MAPI NotificationWait through exrelay (TAP).

Checks: the handshake (OUT + A1 -> 200 Success + A3, IN + B1 -> C2) over HTTP/1.1, with
`Expect: 100-continue` (exactly one 100 reaches the client), and over HTTP/1.0 with
`Connection: Keep-Alive`; exrelay_rpc_channels_active while channels are open; echo requests with
keep-alive; 200 100-byte writes on IN echoed back on OUT one by one (delay median/max); an IN channel
closed early by the client; a 503 mid-stream on IN; NTLM three legs from 20 clients at once (each on
one backend connection); NotificationWait chunks passed on as the stand-in sends them.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_rpc.py
"""

import json
import os
import re
import socket
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, done, start_standin, start_exrelay, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
TARGET = "/rpc/rpcproxy.dll?exchange.example.com:6001"

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 2; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = 3; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ]; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; add_headers = [ "Front-End-Https: On" ]; idle_timeout = 3600; } );
routes = ( { backend = "exchange"; paths = [ "/rpc", "/mapi", "/ews", "/auth" ]; } );
'''

# accounts user0..user19 for the concurrent NTLM logins (the stand-in checks NTLMv2 passwords)
ex = start_standin(ping_interval=0, notify_interval=30,
                   extra_args=[a for i in range(20) for a in ("--user", "user%d:Pw-%d" % (i, i))])
relay = start_exrelay(CONFIG % dict(sport=ex.port))
PORT, ADMIN = relay.port("public"), relay.port("admin")


def connect():
    """A raw client connection to exrelay."""
    return rpch.HttpConn("127.0.0.1", PORT, timeout=10)


def nothing_more(c, wait=0.3):
    """True when no byte arrives on `c` within `wait` s (and the connection is still open)."""
    if c.buf:
        return False
    c.sock.settimeout(wait)
    try:
        data = c.sock.recv(100)
    except socket.timeout:
        return True
    if data:
        c.buf += data
    return False


def rpc_active():
    """exrelay_rpc_channels_active per method from the admin port."""
    with rpch.HttpConn("127.0.0.1", ADMIN, timeout=5) as c:
        resp, body = c.request("GET", "/metrics", [("Host", "x")], timeout=5)
    return {m: int(v) for m, v in re.findall(r'^exrelay_rpc_channels_active\{method="(\w+)"\} (\d+)',
                                             body.decode("latin-1"), re.M)}


def check_handshake_11():
    """HTTP/1.1 handshake; channels counted while open; PDUs flow both ways."""
    vc = rpch.VirtualConnection()
    vc.cookie = rpch.new_cookie()
    vc.out = connect()
    vc.out.send(rpch.rpc_out_request(TARGET) + rpch.conn_a1(vc.cookie))
    r = vc.out_response = vc.out.read_response(5)
    is_((r.status, r.reason, r.header("Content-Type"), r.header("Content-Length")),
        (200, "Success", "application/rpc", "1073741824"), "1.1 OUT: 200 Success, application/rpc, 1 GiB")
    a3 = rpch.parse_a3(vc.out.read_exact(rpch.A3_LEN, 5))
    early = bytes(vc.out.buf)           # anything after A3 before B1 was sent (C2 must wait for B1)
    vc.inn = connect()
    vc.inn.send(rpch.rpc_in_request(TARGET) + rpch.conn_b1(vc.cookie))
    c2 = rpch.parse_c2(vc.out.read_exact(rpch.C2_LEN, 5))
    ok(a3 > 0 and early == b"" and c2["connection_timeout"] > 0,
       "1.1 handshake: A3 (timeout %r ms) then C2 only after B1 on IN (%r)" % (a3, c2))
    paired = ex.wait_event("paired", cookie=vc.cookie.hex())
    ok(paired and paired[0]["out_conn"] != paired[0]["in_conn"], "stand-in paired IN and OUT")
    is_(wait_for(lambda: (lambda a: a if a.get("RPC_IN_DATA") == 1 and a.get("RPC_OUT_DATA") == 1 else None)(
        rpc_active()), 3), {"RPC_IN_DATA": 1, "RPC_OUT_DATA": 1}, "exrelay_rpc_channels_active: 1 IN, 1 OUT")
    vc.inn.send(rpch.ping_pdu())
    is_(vc.out.read_exact(20, timeout=5), rpch.ping_pdu(), "a PDU on IN comes back on OUT")
    ok(nothing_more(vc.inn), "IN channel: no response while it works")
    vc.close()
    is_(wait_for(lambda: (lambda a: a if a.get("RPC_IN_DATA") == 0 and a.get("RPC_OUT_DATA") == 0 else None)(
        rpc_active()), 5), {"RPC_IN_DATA": 0, "RPC_OUT_DATA": 0}, "channels no longer active after close")


def check_handshake_expect():
    """Expect: 100-continue on both channels: exactly one 100 before the body, none after."""
    cookie = rpch.new_cookie()
    a1, b1 = rpch.conn_a1(cookie), rpch.conn_b1(cookie)
    out = connect()
    out.send(rpch.rpc_out_request(TARGET, headers=[("Expect", "100-continue")]))
    h = out.read_head(timeout=5)
    is_(h.status, 100, "Expect OUT: 100 Continue before the body")
    out.send(a1)
    resp = out.read_response(timeout=5)
    is_((resp.status, len(resp.interim)), (200, 0), "Expect OUT: then 200, no second 100")
    rpch.parse_a3(out.read_exact(rpch.A3_LEN, timeout=5))
    inn = connect()
    inn.send(rpch.rpc_in_request(TARGET, headers=[("Expect", "100-continue")]))
    h = inn.read_head(timeout=5)
    is_((h.status, h.raw.count(b"HTTP/")), (100, 1), "Expect IN: one 100 Continue")
    inn.send(b1)
    c2 = out.read_exact(rpch.C2_LEN, timeout=5)
    ok(rpch.parse_c2(c2), "Expect: C2 on OUT after B1")
    inn.send(b"A" * 100)
    is_(out.read_exact(100, timeout=5), b"A" * 100, "Expect: data flows IN -> OUT")
    ok(nothing_more(inn, 0.5), "Expect IN: nothing after the single 100")
    is_(len(ex.events("continue_sent")), 2, "the stand-in sent two 100s (one per channel): each passed on once")
    inn.close()
    out.close()


def check_handshake_10():
    """HTTP/1.0 with Connection: Keep-Alive, no Expect."""
    cookie = rpch.new_cookie()
    hdrs = [("Host", "mail.example.com"), ("Accept", "application/rpc"), ("User-Agent", "MSRPC"),
            ("Connection", "Keep-Alive"), ("Pragma", "no-cache")]
    out = connect()
    out.send(rpch.HttpConn.build_request("RPC_OUT_DATA", TARGET, hdrs + [("Content-Length", "76")],
                                         rpch.conn_a1(cookie), version="HTTP/1.0"))
    resp = out.read_response(timeout=5)
    is_((resp.status, resp.reason, resp.header("Content-Length")), (200, "Success", "1073741824"),
        "1.0 OUT: 200 Success, Content-Length 1 GiB")
    ok(resp.header("Transfer-Encoding") is None, "1.0 OUT: not chunked")
    rpch.parse_a3(out.read_exact(rpch.A3_LEN, timeout=5))
    inn = connect()
    inn.send(rpch.HttpConn.build_request("RPC_IN_DATA", TARGET, hdrs + [("Content-Length", "1073741824")],
                                         rpch.conn_b1(cookie), version="HTTP/1.0"))
    ok(rpch.parse_c2(out.read_exact(rpch.C2_LEN, timeout=5)), "1.0 handshake: C2 after B1")
    got = [r for r in ex.events("request") if r["method"] == "RPC_IN_DATA" and r["version"] == "1.0"]
    ok(got, "stand-in saw the IN request as HTTP/1.0")
    inn.send(b"z" * 100)
    is_(out.read_exact(100, timeout=5), b"z" * 100, "1.0: data flows IN -> OUT")
    inn.close()
    out.close()


def check_echo():
    """Echo requests (Content-Length 4 and 0): 20-byte body, several on one connection."""
    with connect() as c:
        for i, (method, body) in enumerate([("RPC_IN_DATA", b"\0" * 4), ("RPC_OUT_DATA", b"\0" * 4),
                                            ("RPC_IN_DATA", b""), ("RPC_OUT_DATA", b"")]):
            resp, data = c.request(method, TARGET, [("Host", "mail.example.com"), ("Accept", "application/rpc"),
                                                    ("Content-Length", str(len(body)))], body, timeout=5)
            ok(resp.status == 200 and len(data) == 20 and rpch.parse_rts(data)["flags"] == rpch.RTS_FLAG_ECHO,
               "echo %d (%s, CL %d): 200 + 20-byte Echo PDU on the same connection" % (i + 1, method, len(body)))
    with connect() as c:
        for i in range(2):
            resp, data = c.request("RPC_IN_DATA", TARGET, [("Host", "mail.example.com"), ("Connection", "Keep-Alive"),
                                                           ("Content-Length", "4")], b"\0" * 4,
                                   version="HTTP/1.0", timeout=5)
            is_((resp.status, len(data)), (200, 20), "HTTP/1.0 keep-alive echo %d" % (i + 1))
    conns = {e["conn"] for e in ex.events("request", method="RPC_IN_DATA") if e["target"] == TARGET}
    ok(conns, "echo requests reached the stand-in")


def check_small_writes():
    """200 writes of 100 bytes on IN, each echoed on OUT before the next: delays."""
    vc = rpch.open_virtual_connection(connect)
    delays, bad = [], None
    for i in range(200):
        payload = bytes([i & 0xFF]) * 100
        t = time.monotonic()
        vc.inn.send(payload)
        got = vc.out.read_exact(100, timeout=5)
        delays.append(time.monotonic() - t)
        if got != payload:
            bad = i
            break
    is_(bad, None, "200 100-byte writes echoed intact and in order")
    med, worst = statistics.median(delays) * 1000, max(delays) * 1000
    diag("100-byte write IN->OUT round trip through exrelay (x2 hops): median %.2f ms, max %.2f ms, p90 %.2f ms"
         % (med, worst, sorted(delays)[int(len(delays) * 0.9)] * 1000))
    ok(worst < 50, "every 100-byte write comes back within 50 ms (max %.2f ms)" % worst)
    # a burst: 20 writes without waiting, then the total must arrive (no write held back)
    for i in range(20):
        vc.inn.send(b"%03d" % i + b"." * 97)
    data = vc.out.read_exact(2000, timeout=5)
    ok(data == b"".join(b"%03d" % i + b"." * 97 for i in range(20)), "a burst of 20 writes arrives whole, in order")
    # IN closed early by the client: normal
    vc.inn.close()
    ev = ex.wait_event("in_closed", cookie=vc.cookie.hex())
    ok(ev and ev[0]["complete"] is False and ev[0]["bytes"] == rpch.B1_LEN + 200 * 100 + 2000,
       "IN closed early: stand-in in_closed complete=false, bytes=B1+22000 (%r)" % (ev[0] if ev else None))
    vc.out.close()
    ok(ex.wait_event("out_closed", timeout=5, cookie=vc.cookie.hex()), "OUT close reached the stand-in")
    lines = wait_for(lambda: [l for l in relay.stderr_text().splitlines() if "closed by the client" in l], 5) or []
    ok(relay.alive(), "exrelay keeps running after the early close")
    ok(lines and all(" info: " in l or " debug: " in l for l in lines),
       "early IN close logged as info, not error (%r)" % (lines[-1] if lines else None))
    resp, _ = connect().request("RPC_IN_DATA", TARGET, [("Host", "x"), ("Content-Length", "4")], b"\0" * 4, timeout=5)
    is_(resp.status, 200, "a new request works after the early close")


def check_error_midstream():
    """?fail_after=N: the 503 sent mid-stream on IN reaches the client, then the channel closes."""
    vc = rpch.open_virtual_connection(connect, in_query="fail_after=10")
    vc.inn.send(b"x" * 10)
    resp = vc.inn.read_response(timeout=5)
    body = vc.inn.read_body(resp, timeout=5)
    is_((resp.status, resp.reason), (503, "RPC Error: 6ba"), "IN: 503 RPC Error: 6ba reaches the client mid-stream")
    ok(b"RPC Error: 6ba" in body, "IN: the error body arrives")
    ok(vc.inn.wait_closed(timeout=5), "IN closed after the error")
    vc.close()
    ok(relay.alive(), "exrelay still running")


def check_ntlm_concurrent(n=20):
    """n clients at once, each doing the three NTLM legs through exrelay."""
    results = [None] * n
    barrier = threading.Barrier(n)

    def client(i):
        """Legs 1-3 (+ a 4th request) on one client connection."""
        try:
            with connect() as c:
                barrier.wait(10)
                resp, _ = c.request("POST", "/rpc/rpcproxy.dll?x:6001&auth=ntlm",
                                    [("Host", "mail.example.com"), ("Authorization", "NTLM " + rpch.ntlm_type1()),
                                     ("Content-Length", "0")], timeout=10)
                if resp.status != 401:
                    results[i] = "leg1 %d" % resp.status
                    return
                challenge = resp.header("WWW-Authenticate")
                user = "EX\\user%d" % i
                resp, body = c.request("GET", "/auth/whoami", [("Host", "mail.example.com"), (
                    "Authorization", "NTLM " + rpch.ntlm_type3(challenge, user, "Pw-%d" % i))], timeout=10)
                if resp.status != 200:
                    results[i] = "leg3 %d" % resp.status
                    return
                info = json.loads(body)
                resp, body2 = c.request("GET", "/auth/again", [("Host", "mail.example.com")], timeout=10)
                info2 = json.loads(body2) if resp.status == 200 else {}
                results[i] = (info["ntlm_user"] == user and info2.get("ntlm_user") == user, info["conn"],
                              info2.get("conn"))
        except Exception as e:
            results[i] = "%s: %s" % (type(e).__name__, e)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    good = [r for r in results if isinstance(r, tuple) and r[0] and r[1] == r[2]]
    is_(len(good), n, "NTLM: %d clients at once all authenticated, later requests on the same backend "
        "connection (%r)" % (n, [r for r in results if r not in good][:3]))
    is_(len({r[1] for r in good}), len(good), "NTLM: every client had its own backend connection")
    is_(ex.events("ntlm_wrong_connection"), [], "NTLM: no ntlm_wrong_connection event")


def check_notification_wait():
    """NotificationWait: each chunk reaches the client within ~100 ms of the stand-in sending it."""
    with connect() as c:
        c.send_request("POST", "/mapi/emsmdb/?MailboxId=x@example.com&interval=0.3&pending=4",
                       [("Host", "mail.example.com"), ("X-RequestType", "NotificationWait"),
                        ("Content-Type", "application/mapi-http"), ("Content-Length", "3")], b"abc")
        resp = c.read_response(timeout=5)
        is_((resp.status, resp.header("Transfer-Encoding")), (200, "chunked"), "NotificationWait: 200 chunked")
        arrivals = []
        while True:
            data = c.read_chunk(timeout=5)
            if data is None:
                break
            arrivals.append((time.time(), data.split(b"\r\n", 1)[0]))
        is_([k for _, k in arrivals], [b"PROCESSING", b"PENDING", b"PENDING", b"PENDING", b"PENDING", b"DONE"],
            "NotificationWait: chunk sequence")
        conn_id = ex.events("request", target="/mapi/emsmdb/?MailboxId=x@example.com&interval=0.3&pending=4")
        sent = ex.events("notify_chunk", conn=conn_id[-1]["conn"]) if conn_id else []
        lags = [a[0] - s["t"] for a, s in zip(arrivals, sent)]
        diag("NotificationWait chunk lags (ms): %s" % ", ".join("%.1f" % (x * 1000) for x in lags))
        ok(len(lags) == 6 and all(-0.01 < x < 0.1 for x in lags),
           "each chunk arrived within 100 ms of the stand-in sending it")
        resp, body = c.request("POST", "/ews/after", [("Host", "x"), ("Content-Length", "0")], timeout=5)
        is_(resp.status, 200, "connection reusable after the chunked NotificationWait")


run_checks((check_handshake_11, check_handshake_expect, check_handshake_10, check_echo, check_small_writes,
              check_error_midstream, check_ntlm_concurrent, check_notification_wait), relay, T0)
