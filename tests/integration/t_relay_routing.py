#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_routing.py: exrelay's routing and what the backends receive (TAP).

Starts the Exchange stand-in, a real Apache (RemoteIPProxyProtocol On, fed PROXY v1 by exrelay) and
exrelay with a public listener (health_path), an admin and an agent listener. Checks: Exchange paths
to the stand-in and the rest to Apache (case-insensitive, segment boundary, normalised targets),
refused targets (400), a route with `methods` (405), a route with `hosts`, absolute-form targets,
the request target forwarded as sent, header case and order, hop-by-hop removal, forwarded headers
replaced, add_headers, health_path answered by exrelay itself, admin /health and /metrics, the
agent line, and 404 when no route matches (second instance).
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_routing.py
"""

import json
import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import agent_line, run_checks, ok, is_, diag, done, free_port, start_standin, start_apache, start_exrelay, \
    tmpdir, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 2; };
access_log = { path = "%(logdir)s/access.log"; format = "json"; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = 3; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "optional";
    trusted_proxies = [ "127.0.0.1/32" ]; health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; add_headers = [ "Front-End-Https: On" ];
    idle_timeout = 3600; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60; } );
routes = (
  { backend = "exchange"; hosts = [ "mail.example.com" ]; paths = [ "/hostonly" ]; },
  { backend = "exchange"; paths = [ "/dav" ]; methods = [ "GET", "PROPFIND" ]; },
  { backend = "exchange"; paths = [ "/rpc", "/owa", "/mapi", "/ews", "/auth", "/Microsoft-Server-ActiveSync" ]; },
  { backend = "apache"; } );
'''

ex = start_standin(ping_interval=0)
ap = start_apache(free_port(), proxy_protocol=True)
LOGDIR = tmpdir("exrelay-routing-log-")
relay = start_exrelay(CONFIG % dict(logdir=LOGDIR, sport=ex.port, aport=ap.port))
PORT, ADMIN, AGENT = relay.port("public"), relay.port("admin"), relay.port("agent")
diag("exrelay on %d (admin %d, agent %d), stand-in %d, apache %d" % (PORT, ADMIN, AGENT, ex.port, ap.port))

FORWARD_NAMES = {"x-forwarded-for", "x-forwarded-proto", "forwarded", "x-real-ip"}


def conn(port=PORT):
    """A raw client connection to exrelay (or another port)."""
    return rpch.HttpConn("127.0.0.1", port, timeout=10)


def http_get(port, path, timeout=5):
    """One GET on a fresh connection; returns (status, body) or (None, b'') on failure."""
    with conn(port) as c:
        resp, body = c.request("GET", path, [("Host", "127.0.0.1")], timeout=timeout)
        return resp.status, body


def standin_requests(target=None):
    """Requests the stand-in logged (optionally only those with this exact target)."""
    return ex.events("request", target=target) if target is not None else ex.events("request")


def sentinels(tag):
    """Sends, on fresh connections, one request that must reach the stand-in and one that must
    reach Apache, and waits until both logged theirs: whatever exrelay forwarded before has
    arrived by then. True if both did."""
    for target in ("/owa/sentinel-%s" % tag, "/sentinel-%s" % tag):
        with conn() as c:
            c.request("GET", target, [("Host", "x")], timeout=5)
    return bool(ex.wait_event("request", timeout=5, target="/owa/sentinel-%s" % tag)) and \
        bool(wait_for(lambda: apache_lines("/sentinel-%s " % tag), 5))


def apache_lines(fragment):
    """Apache access-log lines containing `fragment`."""
    return [line for line in ap.access_log_lines() if fragment in line]


def route_of(method, target, host="mail.example.com", extra=()):
    """Sends one request on a fresh connection; returns (status, where) where `where` is
    "exchange" (the stand-in logged this exact target), "apache" (Apache logged it) or None."""
    n_ex = len(standin_requests(target))
    n_ap = len(apache_lines(" %s " % target))
    with conn() as c:
        resp, body = c.request(method, target, [("Host", host)] + list(extra), timeout=5)
    if len(standin_requests(target)) > n_ex:
        return resp.status, "exchange"
    if wait_for(lambda: len(apache_lines(" %s " % target)) > n_ap, 3):
        return resp.status, "apache"
    return resp.status, None


def check_routing():
    """Exchange prefixes to the stand-in, the rest to Apache, at segment boundaries."""
    cases = [
        ("/rpc/rpcproxy.dll?mail.example.com:6001", "exchange"),
        ("/rpc", "exchange"),
        ("/rpc/", "exchange"),
        ("/RPC/RpcProxy.dll", "exchange"),
        ("/OWA/auth/logon.aspx?url=x", "exchange"),
        ("/microsoft-server-activesync?Cmd=Ping", "exchange"),
        ("/rpcfoo", "apache"),
        ("/owa2/x", "apache"),
        ("/cgi-bin/echo", "apache"),
        ("/", "apache"),
        ("/index.html", "apache"),
    ]
    for target, want in cases:
        status, where = route_of("GET", target)
        is_(where, want, "route %s -> %s (status %s)" % (target, want, status))


def check_normalised():
    """Targets whose normalised path hits an Exchange prefix go there; sent as the client wrote them."""
    cases = [
        ("/owa/%2e%2e/rpc/x", "exchange"),          # /rpc/x
        ("/x/%2E%2E/owa/y", "exchange"),            # /owa/y
        ("/%72pc/rpcproxy.dll", "exchange"),        # %72 = r: /rpc/...
        ("//owa//x", "exchange"),                   # repeated slashes
        ("/./owa/./x", "exchange"),
        ("/cgi-bin/../owa/x", "exchange"),
        ("/owa/../cgi-bin/echo", "apache"),         # normalises away from /owa
        ("/rpc%66oo", "apache"),                    # %66 = f: /rpcfoo
    ]
    for target, want in cases:
        status, where = route_of("GET", target)
        is_(where, want, "normalised %s -> %s (status %s)" % (target, want, status))
    got = standin_requests("/owa/%2e%2e/rpc/x")
    ok(got and got[-1]["target"] == "/owa/%2e%2e/rpc/x", "target forwarded exactly as sent (not normalised)")
    target = "/ews/Exchange.asmx?A=%41&b=%2F&c"
    route_of("POST", target, extra=[("Content-Length", "0")])
    got = standin_requests(target)
    ok(got and got[-1]["target"] == target, "query string forwarded byte for byte")


def check_refused():
    """Targets ambiguous to normalise are refused with 400 by exrelay (nothing reaches a backend)."""
    before_ex, before_ap = len(standin_requests()), len(ap.access_log_lines())
    for target in ["/owa/%2F..%2Fx", "/owa%2fx", "/rpc%5Cx", "/owa/%5c", "/owa/%00x", "/..", "/../owa/x",
                   "/owa/../../x", "/owa/%zz", "/owa/%u0041", "/owa\\x"]:
        with conn() as c:
            try:
                resp, _ = c.request("GET", target, [("Host", "mail.example.com")], timeout=5)
                status = resp.status
            except (EOFError, OSError) as e:
                status = "closed (%s)" % type(e).__name__
        is_(status, 400, "refused target %s -> 400" % target)
    is_((sentinels("refused"), len(standin_requests()), len(ap.access_log_lines())), (True, before_ex + 1, before_ap + 1),
        "refused targets reached no backend (only the sentinels after them)")


def check_methods_and_hosts():
    """A route with methods answers 405 for others; a route with hosts matches the Host header."""
    is_(route_of("GET", "/dav/x"), (200, "exchange"), "methods route: GET allowed")
    is_(route_of("PROPFIND", "/dav/y", extra=[("Content-Length", "0")]), (200, "exchange"),
        "methods route: PROPFIND allowed")
    n = len(standin_requests())
    with conn() as c:
        resp, _ = c.request("PUT", "/dav/z", [("Host", "x"), ("Content-Length", "3")], b"abc", timeout=5)
        is_(resp.status, 405, "methods route: PUT -> 405")
        if (resp.header("Connection") or "").lower() == "close":
            ok(c.wait_closed(timeout=5), "405 with Connection: close, then closed")
            expect = n
        else:
            resp, _ = c.request("GET", "/owa/after405", [("Host", "x")], timeout=5)
            is_(resp.status, 200, "connection usable after the 405 (the 3-byte body was not parsed as a request)")
            expect = n + 1
    is_(len(standin_requests()), expect, "the 405 reached no backend")
    is_(route_of("GET", "/hostonly/a", host="mail.example.com")[1], "exchange", "hosts route: Host matches")
    is_(route_of("GET", "/hostonly/b", host="MAIL.Example.COM:443")[1], "exchange",
        "hosts route: case-insensitive, port ignored")
    is_(route_of("GET", "/hostonly/c", host="www.example.com")[1], "apache", "hosts route: other Host falls through")
    # absolute-form: the authority replaces Host, the target goes on in origin-form
    with conn() as c:
        resp, body = c.request("GET", "http://mail.example.com/hostonly/abs?q=1", [("Host", "www.example.com")],
                               timeout=5)
    got = standin_requests("/hostonly/abs?q=1")
    is_((resp.status, bool(got)), (200, True), "absolute-form: routed by its authority, sent in origin-form")
    if got:
        hosts = [v for n, v in got[-1]["headers"] if n.lower() == "host"]
        is_(hosts, ["mail.example.com"], "absolute-form: authority replaces Host")


def check_headers_exchange():
    """Header names keep case and order; hop-by-hop removed; forwarded headers replaced; add_headers."""
    sent = [
        ("Host", "mail.example.com"),
        ("User-Agent", "MSRPC"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("accept", "application/rpc"),
        ("Connection", "X-Secret, keep-alive"),
        ("X-Secret", "drop me"),
        ("Cookie", "a=b; c=d"),
        ("Keep-Alive", "timeout=5"),
        ("forwarded", "for=6.6.6.6;proto=https"),
        ("Proxy-Connection", "keep-alive"),
        ("X-Real-IP", "6.6.6.6"),
        ("TE", "trailers"),
        ("X-Forwarded-Proto", "https"),
        ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
        ("X-MiXeD-CaSe", "Value  With  Spaces"),
        ("Upgrade", "websocket"),
        ("X-ClientApplication", "Outlook/16.0"),
    ]
    target = "/owa/headers-check"
    with conn() as c:
        resp, body = c.request("GET", target, sent, timeout=5)
    is_(resp.status, 200, "header check request answered")
    got = standin_requests(target)
    if not ok(got, "stand-in received the header check request"):
        return
    headers = [tuple(h) for h in got[-1]["headers"]]
    kept = [h for h in headers if h[0].lower() not in FORWARD_NAMES and h[0] != "Front-End-Https"]
    want = [("Host", "mail.example.com"), ("User-Agent", "MSRPC"), ("accept", "application/rpc"),
            ("Cookie", "a=b; c=d"), ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-MiXeD-CaSe", "Value  With  Spaces"), ("X-ClientApplication", "Outlook/16.0")]
    is_(kept, want, "client headers kept with case and order, hop-by-hop ones removed")
    fwd = {}
    for n, v in headers:
        if n.lower() in FORWARD_NAMES:
            fwd.setdefault(n.lower(), []).append(v)
    is_(fwd.get("x-forwarded-for"), ["127.0.0.1"], "X-Forwarded-For replaced by the peer address (one field)")
    is_(fwd.get("x-forwarded-proto"), ["http"], "X-Forwarded-Proto replaced: http")
    is_(fwd.get("x-real-ip"), ["127.0.0.1"], "X-Real-IP replaced")
    fw = fwd.get("forwarded") or []
    ok(len(fw) == 1 and "for=127.0.0.1" in fw[0] and "6.6.6.6" not in fw[0] and "https" not in fw[0],
       "Forwarded replaced: %r" % fw)
    ok(not any("6.6.6.6" in v for _, v in headers), "no forged address survives")
    is_([v for n, v in headers if n == "Front-End-Https"], ["On"], "add_headers: Front-End-Https: On added once")
    # the route to Apache carries no add_headers of the exchange backend
    with conn() as c:
        resp, body = c.request("GET", "/cgi-bin/echo?hdr=1", [("Host", "www.example.com"),
                                                               ("X-Forwarded-For", "6.6.6.6"),
                                                               ("Connection", "X-Gone"), ("X-Gone", "1")],
                               timeout=10)
    info = json.loads(body) if resp.status == 200 else {}
    h = info.get("headers", {})
    is_(info.get("remote_addr"), "127.0.0.1", "Apache: REMOTE_ADDR from exrelay's PROXY v1 header")
    is_(h.get("X-Forwarded-For"), "127.0.0.1", "Apache: X-Forwarded-For replaced")
    ok("Front-End-Https" not in h and "X-Gone" not in h, "Apache: no exchange add_headers, Connection-named header gone")


def check_health_path():
    """health_path on the public listener is answered by exrelay, no backend request."""
    wait_for(lambda: apache_lines("/cgi-bin/echo?hdr=1"), 3)     # earlier Apache log lines are written
    before_ex, before_ap = len(ex.events("accept")), len(ap.access_log_lines())
    with conn() as c:
        resp, body = c.request("GET", "/exrelay/health", [("Host", "x")], timeout=5)
        is_((resp.status, body.strip()), (200, b"ok"), "health_path GET: 200 ok")
        resp, body = c.request("HEAD", "/exrelay/health", [("Host", "x")], timeout=5)
        is_((resp.status, body), (200, b""), "health_path HEAD: 200, no body")
    with conn() as c:
        # PROXY v2 LOCAL header, as HAProxy's checks send it
        c.send(b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x20, 0x00, 0x00, 0x00]))
        resp, body = c.request("GET", "/exrelay/health", [("Host", "x")], timeout=5)
        is_((resp.status, body.strip()), (200, b"ok"), "health_path after a PROXY v2 LOCAL header")
    is_((sentinels("health"), len(ex.events("accept")), len(ap.access_log_lines())), (True, before_ex + 1, before_ap + 1),
        "health_path contacted no backend (only the sentinels after it)")
    status, where = route_of("GET", "/exrelay/health/x")
    is_(where, "apache", "only the exact health_path is answered locally")


def check_admin_agent():
    """Admin /health and /metrics; agent line."""
    status, body = http_get(ADMIN, "/health")
    is_((status, body.strip()), (200, b"ok"), "admin /health: 200 ok")
    status, body = http_get(ADMIN, "/metrics")
    is_(status, 200, "admin /metrics: 200")
    text = body.decode("latin-1")
    for name in ["exrelay_connections_active", "exrelay_connections_total", "exrelay_requests_total",
                 "exrelay_bytes_total", "exrelay_rpc_channels_active", "exrelay_backend_errors_total",
                 "exrelay_proxy_header_errors_total"]:
        ok(re.search(r"^# TYPE %s (counter|gauge)$" % name, text, re.M), "metrics has %s" % name)
    m = re.search(r'^exrelay_connections_total\{listener="public"\} (\d+)', text, re.M)
    ok(m and int(m.group(1)) >= 20, "connections_total{public} counts the test's connections (%s)"
       % (m.group(1) if m else None))
    ok(re.search(r'^exrelay_requests_total\{route="[^"]*",code="400"\} [1-9]', text, re.M),
       "requests_total counts the 400s")
    ok(re.search(r'^exrelay_requests_total\{route="[^"]*",code="405"\} [1-9]', text, re.M),
       "requests_total counts the 405")
    data = agent_line(AGENT)
    ok(data.startswith(b"up ready") and data.endswith(b"\n") and data.count(b"\n") == 1,
       "agent: one line `up ready` then close (%r)" % data)


def check_access_log():
    """The JSON access log has one line per request with the documented fields."""
    path = os.path.join(LOGDIR, "access.log")
    lines = wait_for(lambda: [l for l in open(path) if "headers-check" in l], 3) or []
    ok(len(lines) == 1, "access log: one line for the header check request")
    try:
        rec = json.loads(lines[0])
    except (ValueError, IndexError):
        rec = {}
    text = json.dumps(rec)
    ok(rec and "127.0.0.1" in text and "/owa/headers-check" in text and "200" in text and "exchange" in text,
       "access log json: client, target, status, route (%s)" % text[:300])
    ok("bytes_in" in rec, "access log json has bytes_in")
    is_(rec.get("user"), "-", "access log: no Authorization, user '-'")
    # Basic credentials name the user; NTLM ones do not
    import base64
    with conn() as c:
        c.request("GET", "/owa/basic-user", [("Host", "x"), ("Authorization", "Basic " +
                  base64.b64encode(b"EXAMPLE\\alice:s3cr:et").decode())], timeout=5)
        c.request("GET", "/owa/ntlm-user", [("Host", "x"), ("Authorization", "NTLM TlRMTVNTUAABAAAA")], timeout=5)
    recs = wait_for(lambda: (lambda r: r if len(r) == 2 else None)(
        [json.loads(l) for l in open(path) if "basic-user" in l or "ntlm-user" in l]), 3) or []
    is_([r.get("user") for r in recs], ["EXAMPLE\\alice", "-"],
        "access log: user from Basic credentials, '-' for NTLM")
    ok(all("s3cr" not in json.dumps(r) for r in recs), "access log: never the password")


def check_no_route():
    """A second exrelay whose routes do not cover / answers 404 itself."""
    cfg = '''
global = { drain_timeout = 2; };
listeners = ( { name = "p"; bind = "127.0.0.1:0"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%d" ]; } );
routes = ( { backend = "exchange"; paths = [ "/rpc" ]; } );
''' % ex.port
    r2 = start_exrelay(cfg)
    port = r2.port("p")
    n = len(standin_requests())
    with conn(port) as c:
        resp, _ = c.request("GET", "/nothing/here", [("Host", "x")], timeout=5)
        is_(resp.status, 404, "no matching route: 404 from exrelay")
    with conn(port) as c:
        resp, _ = c.request("GET", "/rpc/x", [("Host", "x")], timeout=5)
        is_(resp.status, 200, "matching route: 200")
    is_(len(standin_requests()), n + 1, "the 404 reached no backend")
    r2.stop()


run_checks((check_routing, check_normalised, check_refused, check_methods_and_hosts, check_headers_exchange,
              check_health_path, check_admin_agent, check_access_log, check_no_route), relay, T0)
