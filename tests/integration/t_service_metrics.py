#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_service_metrics.py: /metrics exact under load (TAP).

exrelay with workers = 2, a plain listener, a `proxy_protocol = "required"` one and an admin one;
backends "one" (the stand-in), "dead" (a closed port) and "slow" (idle_timeout 1 s). Every byte
every client sends and receives is counted on the client side (including the /metrics scrapes).

  * The format: HELP and TYPE for each family of the contract (gauges and counters), every sample
    line well-formed.
  * RPC channels: with a virtual connection open, exrelay_rpc_channels_active is 1 per method and
    connections_active{public} 2; 0 and 0 after it closes.
  * Then concurrently from several threads (and a scraper running meanwhile, whose counters must
    never go down): known numbers of requests per route and status (200, 404, 503 from the
    backend, 404 for no route), backend failures of six kinds (connect, bad_response, closed,
    truncated, bad_framing, timeout) and bad PROXY headers; then the deltas of every counter from
    the first scrape are compared exactly: requests_total{route,code}, backend_errors_total
    {backend,kind}, proxy_header_errors_total{listener}, connections_total{listener},
    bytes_total{direction} (counted at close: compared once every connection closed) and the
    gauges back at 0 (admin: 1, the scrape itself).
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_service_metrics.py
"""

import os
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, start_standin, wait_for  # noqa: E402
import rpch  # noqa: E402
from service import spawn_exrelay, CountingConn, parse_metrics, metric, stop_all  # noqa: E402

T0 = time.monotonic()
ex = start_standin(ping_interval=0)
_dead = socket.socket()         # bound, never listening: connects are refused, and the port stays ours
_dead.bind(("127.0.0.1", 0))
DEAD = _dead.getsockname()[1]
CONFIG = '''global = { workers = 2; drain_timeout = 5; log_level = "info"; };
timeouts = { request_head = 10; client_idle = 30; connect = 3; proxy_header = 5; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; },
  { name = "pp"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32" ]; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = (
  { name = "one"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 60; },
  { name = "dead"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 60; },
  { name = "slow"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 1; } );
routes = (
  { backend = "dead"; paths = [ "/dead" ]; },
  { backend = "slow"; paths = [ "/slow" ]; },
  { backend = "one"; paths = [ "/one", "/rpc" ]; } );
''' % (ex.port, DEAD, ex.port)

relay = spawn_exrelay(CONFIG)
PUBLIC, PP, ADMIN = relay.port("public"), relay.port("pp"), relay.port("admin")

# Client-side accounting of every connection to exrelay.
acct = {"lock": threading.Lock(), "in": 0, "out": 0, "conns": {"public": 0, "pp": 0, "admin": 0}}
SCRAPE_LABEL = ("-", "200")


def account(listener, c):
    """Adds a closed CountingConn's bytes to the totals (in = what exrelay received)."""
    with acct["lock"]:
        acct["in"] += c.nsent
        acct["out"] += c.nrecv
        acct["conns"][listener] += 1


def conn(listener="public"):
    """A new counted connection to the listener."""
    return CountingConn("127.0.0.1", {"public": PUBLIC, "pp": PP, "admin": ADMIN}[listener], timeout=15)


scrapes = {"n": 0}


def scrape():
    """GET /metrics on a fresh admin connection (counted); returns (samples, body text).
    The connection's (sent, received) byte counts are left in scrapes["last"]."""
    c = conn("admin")
    try:
        resp, body = c.request("GET", "/metrics", [("Host", "x")], timeout=10)
        if resp.status != 200:
            raise ValueError("/metrics answered %d" % resp.status)
    finally:
        c.close()
        account("admin", c)
        with acct["lock"]:
            scrapes["n"] += 1
            scrapes["last"] = (c.nsent, c.nrecv)
    return parse_metrics(body.decode()), body.decode()


def close_counted(listener, c):
    """Closes a counted connection (everything exrelay sent was read) and accounts it."""
    c.close()
    account(listener, c)


def settled(pub=0, pp=0):
    """A scrape once only the scrape itself is open (and `pub`/`pp` connections)."""
    def pred():
        s, _ = scrape()
        if metric(s, "exrelay_connections_active", listener="admin") == 1 and \
                metric(s, "exrelay_connections_active", listener="public") == pub and \
                metric(s, "exrelay_connections_active", listener="pp") == pp:
            return s
        return None
    return wait_for(pred, 15, 0.05)


# ----------------------------------------------------------------------------------------------

def check_format():
    """HELP/TYPE of every family; all sample lines parse."""
    _, text = scrape()
    want = {"exrelay_connections_active": "gauge", "exrelay_connections_total": "counter",
            "exrelay_requests_total": "counter", "exrelay_bytes_total": "counter",
            "exrelay_rpc_channels_active": "gauge", "exrelay_backend_errors_total": "counter",
            "exrelay_proxy_header_errors_total": "counter"}
    types = {}
    helps = set()
    for line in text.splitlines():
        parts = line.split(None, 3)
        if line.startswith("# TYPE ") and len(parts) == 4:
            types[parts[2]] = parts[3]
        elif line.startswith("# HELP ") and len(parts) >= 3:
            helps.add(parts[2])
    is_({k: types.get(k) for k in want}, want, "/metrics: TYPE of every family of the contract")
    is_(sorted(set(want) - helps), [], "/metrics: HELP of every family")
    try:
        parse_metrics(text)
        good = True
    except ValueError as e:
        good = str(e)
    ok(good is True, "/metrics: every sample line well-formed (%s)" % good)


def check_rpc():
    """rpc_channels_active and connections_active with a virtual connection open, then closed."""
    base = settled()
    vc = rpch.open_virtual_connection(lambda: conn("public"))
    s = settled(pub=2)
    ok(s, "RPC: a virtual connection open: connections_active{public} 2")
    s = s or {}
    is_((metric(s, "exrelay_rpc_channels_active", method="RPC_IN_DATA"),
         metric(s, "exrelay_rpc_channels_active", method="RPC_OUT_DATA")), (1, 1),
        "RPC: rpc_channels_active{RPC_IN_DATA} 1 and {RPC_OUT_DATA} 1")
    vc.inn.send(b"r" * 300)
    is_(vc.out.read_exact(300, timeout=5), b"r" * 300, "RPC: the channel pair streams")
    close_counted("public", vc.inn)
    close_counted("public", vc.out)
    s = settled()
    ok(s, "RPC: after the close: connections_active{public} 0")
    s = s or {}
    is_((metric(s, "exrelay_rpc_channels_active", method="RPC_IN_DATA"),
         metric(s, "exrelay_rpc_channels_active", method="RPC_OUT_DATA")), (0, 0),
        "RPC: rpc_channels_active back to 0 and 0")
    got = {k[1]: v - base.get(k, 0) for k, v in s.items()
           if k[0] == "exrelay_requests_total" and v != base.get(k, 0) and dict(k[1]).get("route") != "-"}
    diag("RPC: requests_total deltas of the two channels: %r" % got)


def load():
    """The concurrent traffic; returns the expected deltas (requests, backend errors, proxy errors)."""
    req = {}
    berr = {}
    lock = threading.Lock()
    problems = []

    def count(d, key, n=1):
        """d[key] += n under the lock."""
        with lock:
            d[key] = d.get(key, 0) + n

    def keepalive(listener, targets, prefix=b""):
        """One connection, the targets in order (keep-alive); returns the statuses."""
        c = conn(listener)
        out = []
        try:
            if prefix:
                c.send(prefix)
            for t in targets:
                resp, _ = c.request("GET", t, [("Host", "x")], timeout=15)
                out.append(resp.status)
        finally:
            close_counted(listener, c)
        return out

    def one_shot(target):
        """One request on its own connection that exrelay may close: (status or None, bytes after head)."""
        c = conn("public")
        try:
            c.send_request("GET", target, [("Host", "x")])
            resp = c.read_response(timeout=15)
            rest = c.read_until_close(timeout=15)
            return resp.status, rest
        except (EOFError, OSError) as e:
            return repr(e), b""
        finally:
            c.close()
            account("public", c)

    def t_ok(k):
        for i in range(10):
            sts = keepalive("public", ["/one/ok-%d-%d-%d" % (k, i, j) for j in range(3)])
            for st in sts:
                count(req, ("one", str(st)))
            if sts != [200] * 3:
                problems.append(("ok", sts))

    def t_status():
        for i in range(10):
            sts = keepalive("public", ["/one/s404-%d?status=404" % i, "/one/s503-%d?status=503" % i,
                                       "/nomatch/%d" % i, "/one/s404b-%d?status=404" % i])
            for st, route in zip(sts, ("one", "one", "-", "one")):
                count(req, (route, str(st)))
            if sts != [404, 503, 404, 404]:
                problems.append(("status", sts))

    def t_errors(kind, target, route, n, want_status):
        for i in range(n):
            st, rest = one_shot(target % i)
            count(req, (route, str(st)))
            count(berr, (route, kind))
            if st != want_status:
                problems.append((kind, st, rest[:80]))

    def t_pp():
        valid = b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 %d\r\n" % PP
        for i in range(3):
            sts = keepalive("pp", ["/one/pp-%d" % i], prefix=valid)
            for st in sts:
                count(req, ("one", str(st)))
        for i, garbage in enumerate([b"GET /one/x HTTP/1.1\r\nHost: x\r\n\r\n"] * 4 +
                                    [b"PROXY TCP4 not-an-address\r\n"] * 3 +
                                    [b"\r\n\r\n\x00\r\nQUIT\n" + b"\x00" * 4]):
            c = conn("pp")
            try:
                c.send(garbage)
                data = c.read_until_close(timeout=10)
                if data:
                    problems.append(("pp answered", data[:80]))
            except OSError:
                pass
            finally:
                c.close()
                account("pp", c)
            count(berr, ("pp", "proxy_error"))
        for i in range(2):      # a bare connect and close, like a TCP check: not a header error
            c = conn("pp")
            c.close()
            account("pp", c)

    scraping = threading.Event()
    scrape_seen = []

    def scraper():
        while not scraping.wait(0.005):
            s, _ = scrape()
            scrape_seen.append(s)

    jobs = [threading.Thread(target=t_ok, args=(k,)) for k in range(3)]
    jobs += [threading.Thread(target=t_status),
             threading.Thread(target=t_pp),
             threading.Thread(target=t_errors, args=("connect", "/dead/%d", "dead", 4, 502)),
             threading.Thread(target=t_errors, args=("bad_response", "/one/bs-%d?broken=badstatus", "one", 3, 502)),
             threading.Thread(target=t_errors, args=("closed", "/one/none-%d?broken=none", "one", 3, 502)),
             threading.Thread(target=t_errors, args=("truncated", "/one/cut-%d?broken=cut", "one", 2, 200)),
             threading.Thread(target=t_errors, args=("bad_framing", "/one/bc-%d?broken=badchunk", "one", 2, 200)),
             threading.Thread(target=t_errors, args=("timeout", "/slow/%d?sleep=2.5", "slow", 1, 504)),
             threading.Thread(target=t_errors, args=("timeout", "/slow/b%d?sleep=2.5", "slow", 1, 504))]
    sc = threading.Thread(target=scraper)
    sc.start()
    t = time.monotonic()
    for j in jobs:
        j.start()
    for j in jobs:
        j.join(60)
    scraping.set()
    sc.join(20)
    diag("load: %.2f s, %d scrapes meanwhile" % (time.monotonic() - t, len(scrape_seen)))
    is_(problems, [], "load: every request got the status its backend behaviour implies")
    decreasing = []
    for a, b in zip(scrape_seen, scrape_seen[1:]):
        for k, v in a.items():
            if k[0].endswith("_total") and b.get(k, 0) < v:
                decreasing.append((k, v, b.get(k)))
    is_(decreasing[:3], [], "load: no counter went down between %d scrapes taken during the load" % len(scrape_seen))
    pp_errors = berr.pop(("pp", "proxy_error"), 0)
    return req, berr, pp_errors


def check_exact():
    """Counter deltas over the load equal what was sent."""
    base = settled()
    if not base:
        ok(False, "metrics: could not settle before the load")
        return
    with acct["lock"]:
        a_in, a_out, a_conns, a_scrapes = acct["in"], acct["out"], dict(acct["conns"]), scrapes["n"]
        base_bytes = scrapes["last"]
    req, berr, pp_errors = load()
    final = settled()
    ok(final, "metrics: every connection closed after the load (active: public 0, pp 0, admin 1)")
    final = final or {}
    with acct["lock"]:
        # A scrape's body counts its own connection as accepted, but neither its request (logged
        # after the body is built) nor its bytes (counted at close). So the deltas between the
        # base and the final scrape hold the base scrape's request and bytes, not the final's.
        final_bytes = scrapes["last"]
        d_in = acct["in"] - a_in - final_bytes[0] + base_bytes[0]
        d_out = acct["out"] - a_out - final_bytes[1] + base_bytes[1]
        d_conns = {k: acct["conns"][k] - a_conns[k] for k in a_conns}
        d_scrapes = scrapes["n"] - a_scrapes
    req[SCRAPE_LABEL] = req.get(SCRAPE_LABEL, 0) + d_scrapes
    got_req = {}
    for k, v in final.items():
        if k[0] == "exrelay_requests_total":
            lab = dict(k[1])
            dv = v - base.get(k, 0)
            if dv:
                got_req[(lab["route"], lab["code"])] = int(dv)
    is_(dict(sorted(got_req.items())), dict(sorted(req.items())),
        "metrics: requests_total{route,code} deltas exact (%d requests)" % sum(req.values()))
    got_berr = {}
    for k, v in final.items():
        if k[0] == "exrelay_backend_errors_total":
            lab = dict(k[1])
            dv = v - base.get(k, 0)
            if dv:
                got_berr[(lab["backend"], lab["kind"])] = int(dv)
    is_(dict(sorted(got_berr.items())), dict(sorted(berr.items())),
        "metrics: backend_errors_total{backend,kind} deltas exact (six kinds)")
    is_({l: int(metric(final, "exrelay_proxy_header_errors_total", listener=l) -
                metric(base, "exrelay_proxy_header_errors_total", listener=l)) for l in ("public", "pp", "admin")},
        {"public": 0, "pp": pp_errors, "admin": 0}, "metrics: proxy_header_errors_total{listener} deltas exact")
    is_({l: int(metric(final, "exrelay_connections_total", listener=l) -
                metric(base, "exrelay_connections_total", listener=l)) for l in ("public", "pp", "admin")},
        d_conns, "metrics: connections_total{listener} deltas exact")
    is_((int(metric(final, "exrelay_bytes_total", direction="in") - metric(base, "exrelay_bytes_total", direction="in")),
         int(metric(final, "exrelay_bytes_total", direction="out") - metric(base, "exrelay_bytes_total", direction="out"))),
        (d_in, d_out), "metrics: bytes_total{in,out} deltas equal the bytes the clients sent and received")
    is_({l: metric(final, "exrelay_connections_active", listener=l) for l in ("public", "pp", "admin")},
        {"public": 0, "pp": 0, "admin": 1}, "metrics: connections_active back to 0 (admin: the scrape itself)")
    is_((metric(final, "exrelay_rpc_channels_active", method="RPC_IN_DATA"),
         metric(final, "exrelay_rpc_channels_active", method="RPC_OUT_DATA")), (0, 0),
        "metrics: rpc_channels_active 0 and 0")
    diag("metrics: %d bytes in, %d bytes out, connections %r" % (d_in, d_out, d_conns))



def check_stop():
    """The daemon stops cleanly."""
    stop_all([relay])


run_checks((check_format, check_rpc, check_exact, check_stop), t0=T0)
