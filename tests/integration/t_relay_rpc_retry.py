#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_rpc_retry.py: an RPC channel whose first server times out keeps its partner with it (TAP).

Found by the chaos soak (contrib/soak): an OUT channel's cookie is pinned to the server exrelay
connects to first; when that connect timed out and exrelay moved the channel to the next server,
the pin stayed on the dead one, so the IN channel with the same cookie was sent there, waited for
its own connect timeout and then went wherever the ranking sent it: OUT and IN could end on two
servers, and the handshake (CONN/C2, sent only once both channels meet) never completed.

Two stand-ins "a" and "b"; a cookie that ranks "a" first; "a" black-holed (SYNs dropped, so
the connect times out: timeouts.connect = 1). The OUT channel lands on "b" after the timeout; the
IN channel must go straight to "b" (no connect timeout of its own) and the handshake completes.
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, start_standin, start_exrelay, cookie_placed_on, run_checks  # noqa: E402
import rpch  # noqa: E402

a = start_standin(name="a")
b = start_standin(name="b")
CONF = """
global = { log_level = "debug"; };
timeouts = { connect = 1; request_head = 5; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = ( { name = "exchange"; idle_timeout = 60;
               servers = ( { name = "a"; address = "127.0.0.1:%d"; }, { name = "b"; address = "127.0.0.1:%d"; } ); } );
routes = ( { backend = "exchange"; } );
""" % (a.port, b.port)
relay = start_exrelay(CONF)
port = relay.port("public")


def check_pin_follows_retry():
    """OUT times out on "a", moves to "b"; IN with the same cookie goes to "b" at once."""
    ok(a.control(mode="blackhole"), "server a black-holed (connects to it time out)")
    cookie = cookie_placed_on(["a", "b"], "a")     # exrelay's rendezvous hashing puts "a" first
    out = rpch.HttpConn("127.0.0.1", port, timeout=10)
    inn = rpch.HttpConn("127.0.0.1", port, timeout=10)
    try:
        t0 = time.monotonic()
        out.send(rpch.rpc_out_request() + rpch.conn_a1(cookie))
        r = out.read_response(10)
        is_(r.status, 200, "OUT channel answered after the connect to a timed out")
        rpch.parse_a3(out.read_exact(rpch.A3_LEN, 5))
        ok(b.wait_event("out_open", 5, cookie=cookie.hex()), "the OUT channel reached server b")
        out_took = time.monotonic() - t0
        ok(out_took >= 0.9, "the OUT channel tried server a first and waited for its connect timeout "
           "(%.2f s; else the cookie did not rank a first and nothing here was tested)" % out_took)
        t1 = time.monotonic()
        inn.send(rpch.rpc_in_request() + rpch.conn_b1(cookie))
        try:
            rpch.parse_c2(out.read_exact(rpch.C2_LEN, 10))
            paired = True
        except Exception as e:  # noqa: BLE001 - any failure to pair is the failure under test
            diag("no CONN/C2: %r" % e)
            paired = False
        took = time.monotonic() - t1
        ok(paired, "the handshake completed (IN met OUT on one server)")
        ok(b.events("in_open", cookie=cookie.hex()), "the IN channel went to server b, where its OUT is")
        ok(paired and took < 0.9, "the IN channel did not wait for a connect timeout of its own (%.2f s)" % took)
        payload = os.urandom(3000)
        inn.send(payload)
        is_(out.read_exact(len(payload), 5) if paired else None, payload, "the pair echoes")
    finally:
        inn.close()
        out.close()
        a.control(mode="normal")


run_checks([check_pin_follows_retry], relay)
