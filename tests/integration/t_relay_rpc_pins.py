#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_rpc_pins.py: every open RPC channel keeps its partner on its server, however many (TAP).

Found by the chaos soak (contrib/soak, 200 virtual connections): exrelay remembered at most 64
open RPC cookies per server; beyond that a channel was not pinned, so when its server changed
state between the OUT and the IN channel (a drain, a health check failing) the IN channel went
by the hash to another server and the virtual connection never completed its handshake.

Two stand-ins "a" and "b"; 100 OUT channels whose cookies rank "a" first (all on "a"); then
`set server exchange/a state drain` on the runtime socket; then the 100 IN channels: each must
still reach "a" (CONN/C2 on its OUT channel) and echo.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, start_standin, start_exrelay, cookie_placed_on, run_checks, tmpdir  # noqa: E402
import rpch  # noqa: E402

N = 100
a = start_standin(name="a")
b = start_standin(name="b")
SOCK = os.path.join(tmpdir("exrelay-pins-"), "admin.sock")
CONF = """
global = { log_level = "info"; admin_socket = { path = "%s"; }; };
timeouts = { connect = 2; request_head = 5; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = ( { name = "exchange"; idle_timeout = 60;
               servers = ( { name = "a"; address = "127.0.0.1:%d"; }, { name = "b"; address = "127.0.0.1:%d"; } ); } );
routes = ( { backend = "exchange"; } );
""" % (SOCK, a.port, b.port)
relay = start_exrelay(CONF)
port = relay.port("public")


def check_many_pins_survive_drain():
    """100 OUT channels on a; a drained; the 100 IN channels still reach a."""
    vcs = []
    try:
        for cookie in (cookie_placed_on(["a", "b"], "a") for _ in range(N)):
            out = rpch.HttpConn("127.0.0.1", port, timeout=10)
            vcs.append((cookie, out, None))
            out.send(rpch.rpc_out_request() + rpch.conn_a1(cookie))
            if out.read_response(10).status != 200:
                break
            rpch.parse_a3(out.read_exact(rpch.A3_LEN, 5))
        is_(len(a.events("out_open")), N, "%d OUT channels opened on server a" % N)
        is_(relay.command("set server exchange/a state drain").strip(), "", "server a set to drain")
        paired = 0
        for i, (cookie, out, _) in enumerate(vcs):
            inn = rpch.HttpConn("127.0.0.1", port, timeout=10)
            vcs[i] = (cookie, out, inn)
            inn.send(rpch.rpc_in_request() + rpch.conn_b1(cookie))
            try:
                rpch.parse_c2(out.read_exact(rpch.C2_LEN, 5))
                data = os.urandom(200)
                inn.send(data)
                if out.read_exact(len(data), 5) == data:
                    paired += 1
            except Exception as e:  # noqa: BLE001 - a missing C2 is the failure under test
                diag("channel %d: %r" % (i, e))
        is_(paired, N, "every IN channel met its OUT channel on the drained server and echoed")
        ok(not b.events("in_open"), "no IN channel went to server b")
    finally:
        for _, out, inn in vcs:
            out.close()
            if inn:
                inn.close()


run_checks([check_many_pins_survive_drain], relay)
