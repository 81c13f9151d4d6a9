#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_demo_conf.py: conf/demo.conf, the configuration `contrib/demo` runs, protects Exchange out of
the box (TAP): its own text, with only the listen ports set to 0 and the backends pointed at this
test's stand-in and a small web server, refuses the examples at the top of issue 11 (ProxyShell,
ProxyNotShell, the ProxyLogon cookies) with 403, strips X-CommonAccessToken, and still serves
OWA, EWS, autodiscover, the web backend and an RPC_IN_DATA/RPC_OUT_DATA pair.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_demo_conf.py
"""

import http.server
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, start_standin, start_exrelay  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
TOP = os.environ.get("top_srcdir") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")


class Web(http.server.BaseHTTPRequestHandler):
    """The web backend (standing in for Apache): 200 "web" for anything."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"web")

    def log_message(self, *args):
        pass


ex = start_standin(ping_interval=0)
web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Web)
threading.Thread(target=web.serve_forever, daemon=True).start()

text = open(os.path.join(TOP, "conf", "demo.conf")).read()
text = re.sub(r'bind = "127\.0\.0\.1:\d+"', 'bind = "127.0.0.1:0"', text)
text = text.replace("127.0.0.1:9443", "127.0.0.1:%d" % ex.port).replace("127.0.0.1:9080",
                                                                         "127.0.0.1:%d" % web.server_address[1])
text = text.replace('path = "/dev/stdout"', 'path = "/dev/null"')
ok("security" not in text and "auth_guard" not in text, "demo.conf relies on the defaults (no security settings)")
relay = start_exrelay(text)
PUB = relay.port("public")


def get(target, headers=()):
    """One request on a fresh connection: (status, body)."""
    c = rpch.HttpConn("127.0.0.1", PUB, timeout=10)
    try:
        resp, body = c.request("GET", target, [("Host", "mail.example.com")] + list(headers), timeout=10)
        return resp.status, body
    finally:
        c.close()


def check_blocked():
    """The examples at the top of issue 11 get 403 and never reach the stand-in."""
    before = len(ex.events("request"))
    cases = [
        ("ProxyShell", "/autodiscover/autodiscover.json?@x.com/powershell/?X-Rps-CAT=AA", []),
        ("ProxyNotShell", "/autodiscover/autodiscover.json?@x.com/owa/&Email=autodiscover/autodiscover.json%3f@x.com"
                          "&Protocol=XYZ&FooProtocol=%50owershell", []),
        ("ProxyLogon X-BEResource", "/owa/auth/x.js", [("Cookie", "X-BEResource=localhost/owa/auth/x.js~1942062522")]),
        ("ProxyLogon X-AnonResource-Backend", "/owa/auth/y.js",
         [("Cookie", "X-AnonResource-Backend=localhost/ecp/default.flt?~3")]),
    ]
    for name, target, headers in cases:
        is_(get(target, headers)[0], 403, "demo.conf refuses %s with 403" % name)
    is_(get("/owa/demo-sentinel")[0], 200, "a sentinel request after them reaches the stand-in")
    reached = [e["target"] for e in ex.events("request")[before:]]
    is_(reached, ["/owa/demo-sentinel"], "none of the refused requests reached the stand-in")


def check_served():
    """OWA, EWS, autodiscover, the web backend and an RPC channel pair still work."""
    for target in ("/owa/", "/ews/exchange.asmx", "/autodiscover/autodiscover.json?Email=u%40example.com&Protocol=EWS"):
        is_(get(target)[0], 200, "demo.conf serves %s" % target.split("?")[0])
    is_(get("/index.html"), (200, b"web"), "demo.conf sends other paths to the web backend")
    get("/ews/strip", [("X-CommonAccessToken", "VgEAVAdXaW5kb3dz"), ("User-Agent", "strip-check")])
    got = [e for e in ex.events("request") if ["User-Agent", "strip-check"] in e["headers"]]
    ok(got and not any(n.lower() == "x-commonaccesstoken" for n, _ in got[0]["headers"]),
       "demo.conf strips X-CommonAccessToken")
    vc = rpch.open_virtual_connection(lambda: rpch.HttpConn("127.0.0.1", PUB, timeout=10))
    try:
        payload = os.urandom(100)
        vc.inn.send(payload)
        is_(vc.out.read_exact(100, timeout=5), payload, "demo.conf relays an RPC_IN_DATA/RPC_OUT_DATA pair")
    finally:
        vc.close()


try:
    run_checks((check_blocked, check_served), relay, T0)
finally:
    web.shutdown()
