#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_multi_drain.py: health checks per protocol, drain and maint, over three Exchange servers (TAP).

Three stand-ins (ex1, ex2, ex3) behind exrelay with active checks (check.path = "auto": each
route's virtual directory has its own health page) and HAProxy's runtime API on
global.admin_socket. Clients are played through PROXY v1 from 127.0.0.1; for each server the test
picks client addresses and RPC cookies that hrw_pick() places on it, so "did it move" is a
question about one request. Every condition is polled with a deadline.
  - a server whose /rpc and /owa health pages answer 503 stops taking new channels and OWA
    requests within fall x interval; an IN/OUT pair open on it keeps echoing to its end;
  - a server whose /owa page alone answers 503 still takes RPC channels;
  - drain in the file (reload) and through the socket: nothing new, except a channel whose
    partner is already open there; maint: nothing new at all; a state set at run time survives
    a SIGHUP reload;
  - a black-holed server (SYNs dropped) is marked down and costs new requests at most the
    connect timeout, once;
  - every server down: 503 from exrelay, and the agent port says drain.
"""

import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (ok, is_, diag, start_standin, start_exrelay, hrw_pick, run_checks, tmpdir,  # noqa: E402
                     wait_for, agent_line, cookie_placed_on)
import rpch  # noqa: E402

T0 = time.monotonic()
NAMES = ["ex1", "ex2", "ex3"]
INTERVAL, TIMEOUT, RISE, FALL, CONNECT = 0.3, 0.5, 2, 2, 2
DOWN_WITHIN = FALL * INTERVAL + TIMEOUT + 1.0     # fall x interval, plus one check in flight, plus slack
standins = [start_standin(name=n) for n in NAMES]
SOCK = os.path.join(tmpdir("exrelay-admin-"), "admin.sock")


def config(states=None):
    states = states or {}
    servers = ",\n    ".join('{ name = "%s"; address = "127.0.0.1:%d"; weight = 100; state = "%s"; }'
                           % (n, s.port, states.get(n, "ready")) for n, s in zip(NAMES, standins))
    return """
global = { log_level = "info"; admin_socket = { path = "%s"; mode = "0600"; }; };
timeouts = { connect = %d; request_head = 5; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "required";
                trusted_proxies = [ "127.0.0.1/32" ]; },
              { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
              { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = ( { name = "exchange"; servers = (
    %s );
    check = { interval = %s; timeout = %s; rise = %d; fall = %d; path = "auto"; };
    idle_timeout = 60; } );
routes = ( { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews" ]; } );
""" % (SOCK, CONNECT, servers, INTERVAL, TIMEOUT, RISE, FALL)


relay = start_exrelay(config())


def via(client="192.0.2.1"):
    """A connection to the public listener announcing `client` in a PROXY v1 header."""
    port = relay.port("public")
    c = rpch.HttpConn("127.0.0.1", port, timeout=10)
    c.send(b"PROXY TCP4 %s 127.0.0.1 40000 %d\r\n" % (client.encode(), port))
    return c


# Client addresses and cookies that hrw_pick places on each server (first choice among all three).
CLIENTS = {n: [] for n in NAMES}
for i in range(2000):
    cl = "10.20.%d.%d" % (i // 250, i % 250 + 1)
    CLIENTS[NAMES[hrw_pick(NAMES, cl)]].append(cl)


def owa(client, timeout=10):
    """(status, server name or None, seconds) of GET /owa/ for `client`."""
    t = time.monotonic()
    try:
        with via(client) as c:
            resp, body = c.request("GET", "/owa/", [("Host", "mail.example.com")], timeout=timeout)
    except Exception as e:  # noqa: BLE001
        return "error %r" % e, None, time.monotonic() - t
    server = json.loads(body)["server"] if resp.status == 200 else None
    return resp.status, server, time.monotonic() - t


class Channel:
    """One RPC virtual connection through exrelay: .open_out(), .open_in(), .echo(), .close();
    .server is the stand-in that paired it."""

    def __init__(self, cookie):
        self.cookie, self.out, self.inn, self.server = cookie, None, None, None

    def open_out(self):
        self.out = via()
        self.out.send(rpch.rpc_out_request() + rpch.conn_a1(self.cookie))
        resp = self.out.read_response(5)
        if resp.status != 200:
            raise ValueError("OUT channel answered %d" % resp.status)
        rpch.parse_a3(self.out.read_exact(rpch.A3_LEN, 5))

    def open_in(self):
        self.inn = via()
        self.inn.send(rpch.rpc_in_request() + rpch.conn_b1(self.cookie))
        rpch.parse_c2(self.out.read_exact(rpch.C2_LEN, 5))
        self.server = wait_for(lambda: next((n for n, s in zip(NAMES, standins)
                                             if s.events("paired", cookie=self.cookie.hex())), None), 2)
        return self

    def echo(self, n=100):
        """Writes n bytes on IN; True when the same bytes come back on OUT."""
        data = os.urandom(n)
        self.inn.send(data)
        return self.out.read_exact(n, 5) == data

    def close(self):
        for c in (self.inn, self.out):
            if c is not None:
                c.close()


def channel(cookie):
    """Opens a whole channel pair with `cookie`; returns it (its .server), or None on failure."""
    ch = Channel(cookie)
    try:
        ch.open_out()
        ch.open_in()
        return ch
    except Exception as e:  # noqa: BLE001
        diag("channel %s: %r" % (cookie.hex(), e))
        ch.close()
        return None


def channel_server(cookie):
    """The server a new channel with `cookie` pairs on (closed at once), or None."""
    ch = channel(cookie)
    if ch is None:
        return None
    ch.close()
    return ch.server


def stat_status(server):
    """The `status` column of exchange/server in `show stat` on exrelay's admin socket."""
    row = relay.server_stat("exchange", server)
    return row and row.get("status")


def poll_moved(name, timeout, want_owa=True, want_rpc=True):
    """Polls until new OWA requests (and new channels) of `name`'s clients (cookies) go elsewhere;
    returns the seconds it took, or None on timeout."""
    t = time.monotonic()
    i = [0]

    def moved():
        i[0] += 1
        cl = CLIENTS[name][100 + i[0] % 50]
        st, srv, _ = owa(cl)
        if want_owa and not (st == 200 and srv != name):
            return False
        if want_rpc:
            s = channel_server(cookie_placed_on(NAMES, name))
            if s is None or s == name:
                return False
        return True
    return time.monotonic() - t if wait_for(moved, timeout, 0.05) else None


def on_name(name, k=10, start=0):
    """How many of k OWA requests of `name`'s clients reach `name`."""
    return sum(1 for cl in CLIENTS[name][start:start + k] if owa(cl)[1] == name)


def new_channels_on(name, k=6):
    """How many of k new channels with `name`'s cookies pair on `name`."""
    return sum(1 for _ in range(k) if channel_server(cookie_placed_on(NAMES, name)) == name)


def restore():
    """Every stand-in healthy and reachable, every server ready; waits until all take traffic."""
    for s in standins:
        s.control(health={}, mode="normal")
    try:
        for n in NAMES:
            relay.command("set server exchange/%s state ready" % n)
    except OSError:
        pass
    return wait_for(lambda: all(owa(CLIENTS[n][0])[1] == n for n in NAMES), 10, 0.1)


# --------------------------------------------------------------------------------------------------

def check_checker_probes():
    """The checker asks every server for the health page of each routed vdir."""
    for n, s in zip(NAMES, standins):
        ok(wait_for(lambda: s.health_requests("rpc") and s.health_requests("owa") and s.health_requests("ews"), 5),
           "%s: health checks GET /rpc/, /owa/ and /ews/healthcheck.htm" % n)


def check_maintenance_page():
    """ex2's /rpc and /owa pages answer 503: no new channels or OWA there within fall x interval;
    an IN/OUT pair open on it keeps echoing to its end."""
    keep = channel(cookie_placed_on(NAMES, "ex2"))
    ok(keep is not None and keep.server == "ex2" and keep.echo(), "a channel pair open on ex2 echoes 100 bytes")
    standins[1].control(health={"rpc": 503, "owa": 503})
    took = poll_moved("ex2", DOWN_WITHIN + 5)
    ok(took is not None and took <= DOWN_WITHIN,
       "ex2 /rpc and /owa 503: new channels and OWA requests go elsewhere within fall x interval (%s s, bound %.1f)"
       % (None if took is None else "%.2f" % took, DOWN_WITHIN))
    is_(on_name("ex2"), 0, "none of 10 more OWA requests of ex2's clients reaches ex2")
    is_(new_channels_on("ex2"), 0, "none of 6 more new channels with ex2's cookies pairs on ex2")
    ok("server exchange/ex2 protocol owa is DOWN" in relay.stderr_text(), "the DOWN transition is logged")
    if keep is not None:
        ok(all(keep.echo() for _ in range(5)), "the pair open on ex2 still echoes 100 bytes, 5 times")
        keep.close()
        ok(standins[1].wait_event("in_closed", 5, cookie=keep.cookie.hex()), "and ends when the client closes it")
    standins[1].control(health={})
    ok(wait_for(lambda: owa(CLIENTS["ex2"][0])[1] == "ex2", DOWN_WITHIN + 5, 0.1),
       "ex2 healthy again: its clients come back")


def check_owa_only():
    """ex3's /owa page alone answers 503: OWA goes elsewhere, RPC channels still go to ex3."""
    standins[2].control(health={"owa": 503})
    took = poll_moved("ex3", DOWN_WITHIN + 5, want_rpc=False)
    ok(took is not None, "ex3 /owa 503: OWA requests of ex3's clients go elsewhere (%s s)" % (took if took is None else "%.2f" % took))
    is_(new_channels_on("ex3"), 6, "ex3 /owa 503: new channels with ex3's cookies still pair on ex3 (6 of 6)")
    ok(wait_for(lambda: stat_status("ex3") == "UP 2/3", 3), "show stat says UP 2/3 for ex3")
    standins[2].control(health={})
    ok(wait_for(lambda: owa(CLIENTS["ex3"][0])[1] == "ex3", DOWN_WITHIN + 5, 0.1), "ex3 takes OWA again")


def drain_checks(how, set_drain):
    """Drains ex2 with set_drain(); checks what drain means; leaves ex2 draining."""
    keep = channel(cookie_placed_on(NAMES, "ex2"))
    half = Channel(cookie_placed_on(NAMES, "ex2"))
    try:
        half.open_out()                               # OUT on ex2, its IN still to come
        set_drain()
        drain_expect(how, keep, half)
    finally:
        for c in (keep, half):
            if c is not None:
                c.close()


def drain_expect(how, keep, half):
    """What drain means for new and open channels and requests (see drain_checks)."""
    took = poll_moved("ex2", 5)
    ok(took is not None, "%s: new channels and OWA requests of ex2's go elsewhere (%s s)" % (how, took if took is None else "%.2f" % took))
    is_(on_name("ex2", start=20), 0, "%s: none of 10 OWA requests of ex2's clients reaches ex2" % how)
    is_(new_channels_on("ex2"), 0, "%s: none of 6 new channels with ex2's cookies pairs on ex2" % how)
    ok(keep is not None and keep.server == "ex2" and all(keep.echo() for _ in range(3)),
       "%s: the pair open on ex2 still echoes" % how)
    half.open_in()
    ok(half.server == "ex2" and half.echo(), "%s: an IN channel whose OUT is on ex2 still goes to ex2" % how)


def check_drain_in_file():
    """state = "drain" in the file, by reload."""
    def set_drain():
        relay.reload(config({"ex2": "drain"}))
        ok(relay.wait_reloaded(), "reloaded with ex2 state drain")
    try:
        drain_checks("drain in the file", set_drain)
    finally:
        relay.reload(config())
        ok(relay.wait_reloaded() and restore(), "reloaded with ex2 ready: ex2's clients are back")


def check_drain_socket():
    """set server exchange/ex2 state drain through the runtime API."""
    def set_drain():
        is_(relay.command("set server exchange/ex2 state drain"), "\n", "set server exchange/ex2 state drain: an empty line, as HAProxy answers")
    try:
        drain_checks("drain by the socket", set_drain)
        is_(stat_status("ex2"), "DRAIN", "show stat says DRAIN for ex2")
    finally:
        restore()


def check_maint_and_reload():
    """maint takes nothing new, not even a channel whose partner is there; it survives a reload."""
    half = Channel(cookie_placed_on(NAMES, "ex2"))
    half.open_out()
    is_(relay.command("set server exchange/ex2 state maint"), "\n", "set server exchange/ex2 state maint: an empty line, as HAProxy answers")
    try:
        ok(poll_moved("ex2", 5) is not None, "maint: new channels and OWA requests of ex2's go elsewhere")
        half.inn = via()
        half.inn.send(rpch.rpc_in_request() + rpch.conn_b1(half.cookie))
        ok(not standins[1].wait_event("in_open", 1, cookie=half.cookie.hex()),
           "maint: not even an IN channel whose OUT is on ex2 goes there")
        half.close()
        is_(stat_status("ex2"), "MAINT", "show stat says MAINT for ex2")
        relay.reload()
        ok(relay.wait_reloaded(), "SIGHUP reload")
        is_(stat_status("ex2"), "MAINT", "after the reload, show stat still says MAINT")
        is_(on_name("ex2", start=40), 0, "after the reload, no OWA request of ex2's clients reaches ex2")
        is_(relay.command("set server exchange/ex2 state ready"), "\n", "set server exchange/ex2 state ready: an empty line")
        ok(wait_for(lambda: owa(CLIENTS["ex2"][0])[1] == "ex2", 5, 0.1), "ready: ex2's clients come back")
    finally:
        restore()


def check_blackhole():
    """ex1 drops SYNs: marked down; new requests pay at most the connect timeout, once."""
    down_re = re.compile(r"server exchange/ex1 (protocol owa )?is DOWN")   # the checker, or a passive timeout
    standins[0].control(mode="blackhole")
    t0 = time.monotonic()
    runs, down_at, fast_run, i = [], None, 0, 0           # runs: (start, seconds, status, server)
    while fast_run < 5 and time.monotonic() - t0 < 15:
        start = time.monotonic() - t0
        st, srv, took = owa(CLIENTS["ex1"][60 + i % 40], timeout=CONNECT + 5)
        i += 1
        runs.append((start, took, st, srv))
        if down_at is None and down_re.search(relay.stderr_text()):
            down_at = time.monotonic() - t0
        fast_run = fast_run + 1 if took <= 1.0 and st == 200 and srv != "ex1" else 0
    diag("black hole: marked down after %s s; requests (start, seconds, status): %s" % (
        down_at if down_at is None else "%.2f" % down_at,
        ", ".join("(%.2f, %.2f, %s)" % r[:3] for r in runs)))
    slow = [r for r in runs if r[1] > 1.0]
    ok(fast_run >= 5, "black-holed ex1: its clients end up served elsewhere, fast")
    ok(down_at is not None, "ex1 is marked down (logged)")
    ok(all(r[1] <= CONNECT + 1.0 for r in runs), "no request pays more than the connect timeout (%d s) once" % CONNECT)
    ok(all(r[2] == 200 for r in runs),
       "a request that paid the connect timeout is still answered, by another server (no 504)")
    ok(down_at is not None and all(r[1] <= 1.0 for r in runs if r[0] >= down_at),
       "once ex1 is marked down, no new request pays the connect timeout")
    ok(len(slow) <= 1, "only one request paid the connect timeout (%d did)" % len(slow))
    standins[0].control(mode="normal")
    ok(wait_for(lambda: owa(CLIENTS["ex1"][0])[1] == "ex1", 10, 0.1), "ex1 reachable again: its clients come back")


def check_all_down():
    """Every server's health pages answer 503: exrelay answers 503 and the agent says drain."""
    agent = relay.port("agent")
    is_(agent_line(agent), b"up ready\n", "agent: up ready while servers are up")
    for s in standins:
        s.control(health={"*": 503})
    try:
        ok(wait_for(lambda: owa(CLIENTS["ex1"][1])[0] == 503, DOWN_WITHIN + 5, 0.1),
           "every server down: exrelay answers 503")
        ok(wait_for(lambda: agent_line(agent) == b"drain\n", 3), "every server down: the agent port says drain")
    finally:
        restore()
    ok(wait_for(lambda: agent_line(agent) == b"up ready\n", 5), "servers back: the agent says up ready")


def check_all_maint_in_file():
    """Every server in maint in the file: 503 and drain too (no checker needed)."""
    relay.reload(config({n: "maint" for n in NAMES}))
    ok(relay.wait_reloaded(), "reloaded with every server in maint")
    is_(owa(CLIENTS["ex2"][0])[0], 503, "every server in maint: 503 from exrelay")
    is_(agent_line(relay.port("agent")), b"drain\n", "every server in maint: the agent says drain")
    relay.reload(config())
    ok(relay.wait_reloaded() and restore(), "reloaded with every server ready")


checks = [check_checker_probes, check_maintenance_page, check_owa_only, check_drain_in_file, check_drain_socket,
          check_maint_and_reload, check_blackhole, check_all_down, check_all_maint_in_file]
if len(sys.argv) > 1:                                  # run some checks only: t_multi_drain.py NAME...
    checks = [c for c in checks if c.__name__ in sys.argv[1:]]
run_checks(checks, relay=relay, t0=T0)
