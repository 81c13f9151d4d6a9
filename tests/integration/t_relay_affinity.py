#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_affinity.py: RPC channel affinity over several Exchange servers (TAP).

Both channels of an RPC over HTTP virtual connection carry one cookie; exrelay hashes it to
choose the Exchange server, so IN and OUT meet on one server even through two different exrelay
instances (nothing is shared between instances). Three stand-ins play three Exchange servers: a
stand-in only completes the handshake (CONN/C2) when both channels reach it. Also: a refused
server is skipped for the next one, the same way on every instance.
"""

import os
import re
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, done, start_standin, start_exrelay, metrics_text  # noqa: E402
import rpch  # noqa: E402

servers = [start_standin() for _ in range(3)]
_dead = socket.socket()     # bound, never listening: connects are refused, and the port stays ours
_dead.bind(("127.0.0.1", 0))
dead = _dead.getsockname()[1]


def config(server_ports):
    return """
global = { log_level = "debug"; };
timeouts = { connect = 2; request_head = 3; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; }, { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = ( { name = "exchange"; servers = [ %s ]; idle_timeout = 60; } );
routes = ( { backend = "exchange"; } );
""" % ", ".join('"127.0.0.1:%d"' % p for p in server_ports)


ports = [s.port for s in servers]
ra = start_exrelay(config(ports))
rb = start_exrelay(config(ports))
pa, pb = ra.port("public"), rb.port("public")


def via(port):
    return lambda: rpch.HttpConn("127.0.0.1", port, timeout=10)


def split_vc(port_out, port_in):
    """One virtual connection, OUT through port_out and IN through port_in; returns the cookie
    when the handshake completed (both channels met on one server), else None."""
    vc = rpch.VirtualConnection()
    vc.cookie = rpch.new_cookie()
    try:
        vc.out = via(port_out)()
        vc.out.send(rpch.rpc_out_request() + rpch.conn_a1(vc.cookie))
        r = vc.out.read_response(5)
        rpch.parse_a3(vc.out.read_exact(rpch.A3_LEN, 5))
        vc.inn = via(port_in)()
        vc.inn.send(rpch.rpc_in_request() + rpch.conn_b1(vc.cookie))
        rpch.parse_c2(vc.out.read_exact(rpch.C2_LEN, 5))
        return vc.cookie if r.status == 200 else None
    except Exception as e:  # noqa: BLE001
        diag("virtual connection %d -> %d failed: %r" % (port_out, port_in, e))
        return None
    finally:
        vc.close()


def served_by(cookie):
    """Index of the stand-in whose log paired this cookie, or None."""
    for i, s in enumerate(servers):
        if s.events("paired", cookie=cookie.hex()):
            return i
    return None


# 1. Channels through one instance: every handshake completes (IN and OUT met on one server).
used = set()
n_ok = 0
for i in range(12):
    try:
        vc = rpch.open_virtual_connection(via(pa), timeout=5)
        n_ok += 1
        vc.close()
    except Exception as e:  # noqa: BLE001
        diag("virtual connection %d failed: %r" % (i, e))
is_(n_ok, 12, "12 virtual connections through one instance all paired")

# 2. OUT through instance A, IN through instance B: still the same server.
cookies = [c for c in (split_vc(pa, pb) for _ in range(12)) if c]
is_(len(cookies), 12, "OUT via instance A and IN via instance B pair on the same server (stateless choice)")
for c in cookies:
    idx = served_by(c)
    if idx is not None:
        used.add(idx)
ok(len(used) >= 2, "cookies spread over several servers (%d of 3 used)" % len(used))

# 3. A refused server is skipped for the next in order, on both instances alike.
ra.stop()
rb.stop()
rc = start_exrelay(config([dead] + ports[1:]))
rd = start_exrelay(config([dead] + ports[1:]))
pc, pd = rc.port("public"), rd.port("public")
# 24 cookies: the chance that none hashes to the dead first server is (2/3)^24, about 6e-5.
n_ok = sum(1 for _ in range(24) if split_vc(pc, pd))
is_(n_ok, 24, "with the first server refusing, channels still pair (failover in a fixed order)")
ok("trying the next server" in rc.stderr_text() or "trying the next server" in rd.stderr_text(),
   "the failover is logged")


def retries(r):
    """exrelay_backend_errors_total{backend="exchange",kind="retry"} of instance r."""
    data = metrics_text(r.port("admin"), timeout=5)
    m = re.search(rb'exrelay_backend_errors_total\{backend="exchange",kind="retry"\} (\d+)', data)
    return int(m.group(1)) if m else 0


logged = sum(r.stderr_text().count("trying the next server") for r in (rc, rd))
is_(retries(rc) + retries(rd), logged, "every retry on the next server is counted (%d)" % logged)

# 4. Plain requests (no cookie) are spread by client address: the same client, the same server.
seen = set()
for i in range(4):
    with via(pc)() as c:
        resp, body = c.request("GET", "/owa/x%d" % i, [("Host", "mail.example.com")])
        seen.add(resp.status)
is_(seen, {200}, "plain requests are answered")
done()
