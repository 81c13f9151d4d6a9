#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_multi_hash.py: rendezvous hashing over several Exchange servers, through two instances (TAP).

Three stand-ins (ex1, ex2, ex3) behind two exrelay instances with the same configuration. The
listener takes PROXY v1 from 127.0.0.1 (trusted_proxies), so one test process plays a few hundred
clients. Requests are placed by client address, RPC channels by VirtualConnectionCookie:
  - both instances choose the same server for the same client address and the same cookie, and
    it is the one harness.hrw_pick() computes (relay/hrw.c);
  - removing ex2 from the file and reloading moves only the clients and channels that were on
    ex2 (about 1/3 of them), to the server hrw_pick() gives among the two left;
  - putting ex2 back takes back exactly its share.
Which server answered: the stand-in's --name in its JSON answer; for channels, which stand-in
paired the cookie.
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, start_standin, start_exrelay, hrw_pick, run_checks, wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
NAMES = ["ex1", "ex2", "ex3"]
NCLIENTS = 300
NCOOKIES = 30
standins = [start_standin(name=n) for n in NAMES]


def config(names):
    servers = ",\n    ".join('{ name = "%s"; address = "127.0.0.1:%d"; weight = 100; state = "ready"; }'
                           % (n, standins[NAMES.index(n)].port) for n in names)
    return """
global = { log_level = "info"; };
timeouts = { connect = 2; request_head = 5; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "required";
                trusted_proxies = [ "127.0.0.1/32" ]; } );
backends = ( { name = "exchange"; servers = (
    %s ); idle_timeout = 60; } );
routes = ( { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews" ]; } );
""" % servers


relays = [start_exrelay(config(NAMES)), start_exrelay(config(NAMES))]
clients = ["10.%d.%d.%d" % (i // 250 % 250, i % 250, 7 + i % 11) for i in range(NCLIENTS)]
cookies = [rpch.new_cookie() for _ in range(NCOOKIES)]


def via(relay, client="192.0.2.1"):
    """A connection to relay's public listener that announces `client` in a PROXY v1 header."""
    port = relay.port("public")
    c = rpch.HttpConn("127.0.0.1", port, timeout=10)
    c.send(b"PROXY TCP4 %s 127.0.0.1 40000 %d\r\n" % (client.encode(), port))
    return c


def server_for(relay, client):
    """The name of the server that answered GET /owa/ for `client` through `relay` (or the status)."""
    with via(relay, client) as c:
        resp, body = c.request("GET", "/owa/?c=" + client, [("Host", "mail.example.com")], timeout=10)
    return json.loads(body)["server"] if resp.status == 200 else "status %d" % resp.status


def channel(cookie, relay_out, relay_in):
    """One virtual connection with `cookie`, OUT through relay_out and IN through relay_in, 100
    bytes echoed; returns the server that paired it, or None when the handshake failed."""
    out = inn = None
    before = {n: len(s.events("paired", cookie=cookie.hex())) for n, s in zip(NAMES, standins)}
    try:
        out = via(relay_out)
        out.send(rpch.rpc_out_request() + rpch.conn_a1(cookie))
        if out.read_response(5).status != 200:
            return None
        rpch.parse_a3(out.read_exact(rpch.A3_LEN, 5))
        inn = via(relay_in)
        inn.send(rpch.rpc_in_request() + rpch.conn_b1(cookie))
        rpch.parse_c2(out.read_exact(rpch.C2_LEN, 5))
        data = os.urandom(100)
        inn.send(data)
        if out.read_exact(100, 5) != data:
            return None
    except Exception as e:  # noqa: BLE001
        diag("channel %s failed: %r" % (cookie.hex(), e))
        return None
    finally:
        for c in (inn, out):
            if c is not None:
                c.close()

    def pairer():
        for n, s in zip(NAMES, standins):
            if len(s.events("paired", cookie=cookie.hex())) > before[n]:
                return n
        return None
    # The echo went through, so a stand-in paired it; its event may be logged a moment later.
    return wait_for(pairer, timeout=5) or None


placed = {}     # client -> server, with three servers
chans = {}      # cookie -> server, with three servers


def check_same_choice():
    """Both instances choose the same server for each client address, the one hrw_pick gives."""
    a = [server_for(relays[0], cl) for cl in clients]
    b = [server_for(relays[1], cl) for cl in clients]
    want = [NAMES[hrw_pick(NAMES, cl)] for cl in clients]
    is_(sum(x == y for x, y in zip(a, b)), NCLIENTS, "%d client addresses: both instances choose the same server"
        % NCLIENTS)
    is_(sum(x == w for x, w in zip(a, want)), NCLIENTS, "and it is harness.hrw_pick's choice (rendezvous hashing)")
    shares = {n: a.count(n) for n in NAMES}
    ok(all(v > NCLIENTS // 5 for v in shares.values()), "clients spread over the three servers %r" % shares)
    placed.update(zip(clients, a))


def check_same_channel():
    """Channels split over the two instances (OUT via one, IN via the other) pair on hrw_pick's server."""
    got = [channel(ck, relays[i % 2], relays[1 - i % 2]) for i, ck in enumerate(cookies)]
    want = [NAMES[hrw_pick(NAMES, ck)] for ck in cookies]
    is_(sum(g == w for g, w in zip(got, want)), NCOOKIES,
        "%d channels, OUT and IN through different instances, pair on hrw_pick's server" % NCOOKIES)
    chans.update(zip(cookies, got))


def reload_both(names):
    for r in relays:
        r.reload(config(names))
    return all(r.wait_reloaded() for r in relays)


def check_remove_one():
    """ex2 leaves the file: only the clients and channels that were on it move."""
    ok(reload_both(["ex1", "ex3"]), "both instances reloaded without ex2")
    left = ["ex1", "ex3"]
    now = [server_for(relays[i % 2], cl) for i, cl in enumerate(clients)]
    stayed = sum(1 for cl, n in zip(clients, now) if placed[cl] != "ex2" and n == placed[cl])
    others = sum(1 for cl in clients if placed[cl] != "ex2")
    moved_right = sum(1 for cl, n in zip(clients, now) if placed[cl] == "ex2" and n == left[hrw_pick(left, cl)])
    on2 = NCLIENTS - others
    is_(stayed, others, "clients on ex1 and ex3 stay where they were (%d)" % others)
    is_(moved_right, on2, "clients on ex2 move to hrw_pick's choice among ex1, ex3 (%d)" % on2)
    moved = sum(1 for cl, n in zip(clients, now) if n != placed[cl])
    diag("clients moved when one of three servers left: %d of %d (%.3f; expect about 1/3)"
         % (moved, NCLIENTS, moved / NCLIENTS))
    ok(abs(moved / NCLIENTS - 1 / 3) < 0.1, "about 1/3 of the clients moved (%.3f)" % (moved / NCLIENTS))
    got = [channel(ck, relays[0], relays[1]) for ck in cookies]
    same = sum(1 for ck, g in zip(cookies, got) if chans[ck] != "ex2" and g == chans[ck])
    is_(same, sum(1 for ck in cookies if chans[ck] != "ex2"), "channels on ex1 and ex3 stay where they were")
    is_(sum(1 for ck, g in zip(cookies, got) if chans[ck] == "ex2" and g == left[hrw_pick(left, ck)]),
        sum(1 for ck in cookies if chans[ck] == "ex2"), "channels that were on ex2 go to hrw_pick's choice of the two")


def check_add_back():
    """ex2 comes back: it takes back exactly the clients it had, nobody else moves."""
    ok(reload_both(NAMES), "both instances reloaded with ex2 again")
    now = [server_for(relays[i % 2], cl) for i, cl in enumerate(clients)]
    is_(sum(1 for cl, n in zip(clients, now) if n == placed[cl]), NCLIENTS,
        "every client is back on its first server (ex2 took only its share)")


def check_second_instance():
    """The second instance is checked and stopped here, the first by run_checks."""
    ok(relays[1].alive(), "second instance still running")
    is_(relays[1].stop(), 0, "second instance stops on SIGTERM with exit status 0")


run_checks([check_same_choice, check_same_channel, check_remove_one, check_add_back, check_second_instance],
           relay=relays[0], t0=T0)
