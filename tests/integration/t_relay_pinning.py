#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_pinning.py: one backend connection per backend per client connection (TAP). A client
that logs in to Exchange with NTLM, then asks the web backend (Apache) something on the same
connection, then Exchange again, finds its Exchange connection still authenticated: exrelay
parked it while the web request went to the other backend, and took it back. A parked
connection the backend closed meanwhile is not reused (a new one is opened), and closing the
client connection closes both backend connections.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_pinning.py
"""

import http.server
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, start_standin, start_exrelay, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
WEB_CONNS = []


class Web(http.server.BaseHTTPRequestHandler):
    """The web backend: 200 "web", keep-alive; remembers each connection it served."""
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        WEB_CONNS.append(self.client_address)
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"web")
        if self.path.startswith("/then-close"):
            self.close_connection = True        # a keep-alive answer, then the connection ends

    def log_message(self, *args):
        pass


ex = start_standin(ping_interval=0)
web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Web)
threading.Thread(target=web.serve_forever, daemon=True).start()
relay = start_exrelay('''
global = { drain_timeout = 2; };
listeners = ( { name = "pub"; bind = "127.0.0.1:0"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%d" ]; },
             { name = "apache"; servers = [ "127.0.0.1:%d" ]; } );
routes = ( { backend = "exchange"; paths = [ "/owa", "/ews" ]; }, { backend = "apache"; } );
''' % (ex.port, web.server_address[1]))
PORT = relay.port("pub")
H = [("Host", "mail.example.com")]


def check_interleaved():
    """NTLM to Exchange, a web request, Exchange again: still authenticated, same backend connection."""
    c = rpch.HttpConn("127.0.0.1", PORT, timeout=10)
    try:
        _, r3, body = rpch.ntlm_login(c, "GET", "/ews/exchange.asmx", "EXAMPLE\\alice", "Secret1", headers=H)
        ok(r3 is not None and r3.status == 200, "NTLM login to Exchange: 200")
        first = json.loads(body) if r3 is not None and r3.status == 200 else {}
        resp, wbody = c.request("GET", "/index.html", H, timeout=10)
        is_((resp.status, wbody), (200, b"web"), "then a request for the web backend on the same connection: 200")
        for i in range(2):
            resp, body = c.request("GET", "/owa/?again=%d" % i, H, timeout=10)
            info = json.loads(body) if resp.status == 200 else {}
            is_((resp.status, info.get("ntlm_user")), (200, first.get("ntlm_user")),
                "Exchange again (%d): still authenticated as %s, no new login" % (i + 1, first.get("ntlm_user")))
            is_(info.get("conn"), first.get("conn"), "Exchange again (%d): the same backend connection" % (i + 1))
            resp, wbody = c.request("GET", "/web-%d" % i, H, timeout=10)
            is_(resp.status, 200, "the web backend again (%d)" % (i + 1))
        is_(len(set(WEB_CONNS)), 1, "the web backend saw one connection for all its requests (%r)" % WEB_CONNS)
    finally:
        c.close()
    ok(wait_for(lambda: ex.events("close") and any(e.get("conn") == first.get("conn") for e in ex.events("close")), 5),
       "closing the client connection closes the parked Exchange connection too")


def check_parked_closed():
    """A parked connection the backend closed meanwhile is not reused: a new one serves."""
    c = rpch.HttpConn("127.0.0.1", PORT, timeout=10)
    try:
        before = len(set(WEB_CONNS))
        resp, _ = c.request("GET", "/then-close", H, timeout=10)
        is_(resp.status, 200, "the web backend answers keep-alive, then closes its connection")
        resp, _ = c.request("GET", "/owa/between", H, timeout=10)
        is_(resp.status, 200, "an Exchange request meanwhile (the web connection is parked or dropped)")
        resp, wbody = c.request("GET", "/after-close", H, timeout=10)
        is_((resp.status, wbody), (200, b"web"), "the web backend again: served, on a new connection")
        is_(len(set(WEB_CONNS)) - before, 2, "the web backend saw a second connection, the closed one not reused")
    finally:
        c.close()


try:
    run_checks((check_interleaved, check_parked_closed), relay, T0)
finally:
    web.shutdown()
