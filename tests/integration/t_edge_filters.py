#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_edge_filters.py: exrelay's request filters against the Exchange exploit chains (TAP).

Through exrelay (security.exchange_filters on) to the Exchange stand-in: the ProxyShell
(CVE-2021-34473) and ProxyNotShell (CVE-2022-41040) targets and the ProxyLogon (CVE-2021-26855)
cookies, in variants of case, %-escaping and nested %25 escapes, get 403 from exrelay, the combined
access log names the rule in its ROUTE field (`filter:<rule>`), exrelay_filter_blocked_total counts
them, and none of them reaches the stand-in (a sentinel request sent afterwards does). Controls that
must pass untouched: OWA cookies, `autodiscover.json?Email=u%40example.com&Protocol=EWS`, the v1.0
autodiscover path, a 48 KiB Negotiate token, an RPC_IN_DATA/RPC_OUT_DATA pair. Internal headers
(X-CommonAccessToken, X-IsFromCafe, ... and `_` look-alikes) are stripped. A route's allow_from
(client address from PROXY v1/v2 headers) answers 403 `filter:allow_from` outside its prefixes. An
administrator's rule added by a SIGHUP reload takes effect (default names rule1, rule2...). A second
exrelay with exchange_filters = false forwards the same requests.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_edge_filters.py
"""

import base64
import os
import socket
import struct
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, start_standin, start_exrelay, wait_for, tmpdir  # noqa: E402
import rpch  # noqa: E402
import service  # noqa: E402

T0 = time.monotonic()
LOGDIR = tmpdir("exrelay-edge-filters-")
ACCESS = os.path.join(LOGDIR, "access.log")

CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; };
access_log = { path = "%(access)s"; format = "combined"; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = 5; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ]; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
security = { exchange_filters = %(filters)s; strip_internal_headers = true; rules = ( %(rules)s ); };
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; } );
routes = (
  { backend = "exchange"; paths = [ "/ecp", "/powershell" ]; allow_from = [ "10.0.0.0/8", "2001:db8::/32" ]; },
  { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews", "/autodiscover", "/mapi", "/oab",
                                    "/microsoft-server-activesync", "/sentinel" ]; } );
'''

ex = start_standin(ping_interval=0)
relay = start_exrelay(CONFIG % dict(access=ACCESS, filters="true", rules="", sport=ex.port))
PUB, ADMIN = relay.port("public"), relay.port("admin")
diag("exrelay on %d (admin %d), stand-in %d" % (PUB, ADMIN, ex.port))

SEQ = [0]
BLOCKED = {}            # rule -> number of requests the test expects exrelay to have refused with it


def tag():
    """A fresh User-Agent that names one request in the access log."""
    SEQ[0] += 1
    return "t-edge-filters/%d" % SEQ[0]


def access_line(ua):
    """The parsed access-log line of the request sent with User-Agent `ua` (service.access_line)."""
    return service.access_line(ACCESS, ua)


def send(method, target, headers=(), body=b"", port=None, proxy=None):
    """One request on a fresh connection (optionally after a PROXY header): (Response, body, ua)."""
    ua = tag()
    with rpch.HttpConn("127.0.0.1", port or PUB, timeout=10) as c:
        if proxy:
            c.send(proxy)
        hdrs = [("Host", "mail.example.com"), ("User-Agent", ua)] + list(headers)
        if body:
            hdrs.append(("Content-Length", str(len(body))))
        resp, data = c.request(method, target, hdrs, body, timeout=10)
    return resp, data, ua


def reached(ua):
    """True when a request with User-Agent `ua` reached the stand-in."""
    return any(["User-Agent", ua] in e["headers"] for e in ex.events("request"))


def sentinel(port=None):
    """A request that must reach the stand-in: once it did, every request sent before it was
    either forwarded already or never will be."""
    resp, _, ua = send("GET", "/sentinel/after", port=port)
    return resp.status == 200 and wait_for(lambda: reached(ua), 5)


def metric(name, labels):
    """The value of metric `name{labels}` on the admin port (0 when absent)."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ADMIN, timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{" + labels + "}") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


PROXYSHELL = [
    ("GET", "/autodiscover/autodiscover.json?@x.com/powershell/?X-Rps-CAT=AA", "ProxyShell as published"),
    ("GET", "/AutoDiscover/AutoDiscover.json?@x.com/PowerShell/?X-Rps-CAT=AA", "upper and mixed case"),
    ("GET", "/autodiscover/autodiscover.json?@x.com/%70ower%73hell/?X-Rps-CAT=AA", "%-escaped letters"),
    ("GET", "/autodiscover/autodiscover.json?@x.com/%2570owershell/?X-Rps-CAT=AA", "nested %2570"),
    ("GET", "/autodiscover/autodiscover.json?@x.com/%252570owershell/?X-Rps-CAT=AA", "doubly nested %252570"),
    ("POST", "/%61utodiscover/autodiscover.json?a@x.com/powershell/?X-Rps-CAT=AA&Email=autodiscover",
     "escaped path, POST"),
    ("GET", "/autodiscover/autodiscover.json?@x.com/Powershell?&Email=autodiscover/autodiscover.json%3F@x.com",
     "the original exploit's Email self-reference"),
]
PROXYNOTSHELL_COMBINED = ("GET", "/autodiscover/autodiscover.json?@x.com/owa/&Email=autodiscover/autodiscover.json"
                          "%3f@x.com&Protocol=XYZ&FooProtocol=%50owershell", "ProxyNotShell as published")
PROXYNOTSHELL = [
    ("GET", "/autodiscover/autodiscover.json?@x.com/owa/&Email=autodiscover/autodiscover.json%3f@x.com&Protocol=XYZ",
     "ProxyNotShell without the Powershell parameter"),
    ("GET", "/autodiscover/autodiscover.json?@x.com/mapi/nspi/?&Protocol=EWS", "'@host/path' smuggled in the query"),
    ("GET", "/autodiscover/autodiscover.json?a=%2540x.com%252fecp%252f", "the same, nested-escaped"),
    ("GET", "/Autodiscover/Autodiscover.json?EMAIL=AUTODISCOVER%2Fautodiscover.json%3F%40x.com", "Email= self-reference"),
]
PROXYLOGON = [
    ("X-BEResource=localhost/owa/auth/x.js~1942062522", "X-BEResource with ~"),
    ("x-beresource=Localhost/owa/auth/x.js~1942062522", "lower-case name"),
    ("X-BEResource=localhost/owa/auth/x.js%7E1942062522", "%7E for ~"),
    ("X-BEResource=localhost/owa/auth/x.js%7e1942062522", "%7e for ~"),
    ("ClientId=ABC; X-BEResource=exch01/EWS/Exchange.asmx?a=~1942062522", "after another cookie"),
    ("X-AnonResource-Backend=localhost/ecp/default.flt?~3", "X-AnonResource-Backend"),
    ("a=b; x-anonresource-backend=localhost/ecp/x.flt?~3; c=d", "X-AnonResource-Backend, lower case, in a list"),
    ("X-ANONRESOURCE-BACKEND=localhost/owa/", "X-AnonResource-Backend without ~, upper case"),
]


def expect_blocked(resp, ua, rule, what):
    """Asserts a 403 from exrelay, the access-log line naming filter:`rule`; counts it."""
    BLOCKED[rule] = BLOCKED.get(rule, 0) + 1
    line = access_line(ua)
    ok(resp.status == 403 and line is not None and line["status"] == 403 and line["route"] == "filter:" + rule,
       "%s: 403, access log ROUTE filter:%s (got %s, %r)" % (what, rule, resp.status, line and line["route"]))
    return ua


def check_exchange_targets():
    """ProxyShell / ProxyNotShell targets: 403 and filter:<rule>, never forwarded."""
    uas = []
    for method, target, what in PROXYSHELL:
        resp, _, ua = send(method, target)
        uas.append(expect_blocked(resp, ua, "proxyshell", "ProxyShell, " + what))
    method, target, what = PROXYNOTSHELL_COMBINED
    resp, _, ua = send(method, target)
    line = access_line(ua)
    rule = line["route"][len("filter:"):] if line and line["route"].startswith("filter:") else None
    ok(resp.status == 403 and rule in ("proxynotshell", "proxyshell"),
       "%s (it also names Powershell): 403, ROUTE filter:proxynotshell or filter:proxyshell (%r)"
       % (what, line and line["route"]))
    if rule:
        BLOCKED[rule] = BLOCKED.get(rule, 0) + 1
    uas.append(ua)
    for method, target, what in PROXYNOTSHELL:
        resp, _, ua = send(method, target)
        uas.append(expect_blocked(resp, ua, "proxynotshell", "ProxyNotShell, " + what))
    ok(sentinel(), "sentinel request after the blocked ones reaches the stand-in")
    is_([ua for ua in uas if reached(ua)], [], "no ProxyShell/ProxyNotShell request reached the stand-in")


def check_proxylogon_cookies():
    """ProxyLogon cookies: 403 and filter:proxylogon, never forwarded."""
    uas = []
    for cookie, what in PROXYLOGON:
        resp, _, ua = send("GET", "/owa/auth/x.js", [("Cookie", cookie)])
        uas.append(expect_blocked(resp, ua, "proxylogon", "ProxyLogon cookie, " + what))
    resp, _, ua = send("POST", "/ecp/y.js", [("Cookie", "ClientId=1"), ("cookie", "X-BEResource=a]@exch01:444/x~1")],
                       body=b"<r/>", proxy=b"PROXY TCP4 10.1.2.3 127.0.0.1 5000 443\r\n")
    uas.append(expect_blocked(resp, ua, "proxylogon", "ProxyLogon cookie in a second Cookie field (/ecp, allowed client)"))
    ok(sentinel(), "sentinel request after the blocked cookies reaches the stand-in")
    is_([ua for ua in uas if reached(ua)], [], "no ProxyLogon request reached the stand-in")


def check_controls():
    """Ordinary Exchange traffic passes untouched."""
    owa = ("X-BackEndCookie=S-1-5-21-1-2-3-1104=u56Lnp2ejJqBzc7Ix8nHyM/SyMjKz9LLy8vO0p7Oz8/Sy8/OyM/Lx8nJzc3Ggc3Ozs3Ozc7PzszOzg==; "
           "X-OWA-CANARY=Y2FuYXJ5LXZhbHVl.; ClientId=5C4B8E1A2B3C4D5E; PrivateComputer=true; PBack=0")
    controls = [
        ("GET", "/owa/", [("Cookie", owa)], "OWA cookies"),
        ("GET", "/autodiscover/autodiscover.json?Email=u%40example.com&Protocol=EWS&RedirectCount=1", [],
         "autodiscover.json?Email=u%40example.com&Protocol=EWS"),
        ("GET", "/autodiscover/autodiscover.json/v1.0/u@example.com?Protocol=AutodiscoverV1", [],
         "autodiscover.json/v1.0/u@example.com?Protocol=AutodiscoverV1"),
        ("POST", "/autodiscover/autodiscover.xml", [("Content-Type", "text/xml")], "autodiscover.xml POST"),
        ("GET", "/ews/exchange.asmx?q=~tilde&b=%7E", [("Cookie", "X-BackEndOverrideCookie=exch01~1")],
         "~ in the query and in another cookie"),
        ("GET", "/powershell-docs-are-not-a-route", [], "'powershell' outside autodiscover (404, never 403)"),
    ]
    for method, target, headers, what in controls:
        resp, _, ua = send(method, target, headers, body=b"<x/>" if method == "POST" else b"")
        want = 404 if "404" in what else 200
        ok(resp.status == want and (want == 404 or wait_for(lambda: reached(ua), 5)),
           "control passes: %s (%d)" % (what, resp.status))
    token = base64.b64encode(b"\x60\x82\xbf\xfc\x06\x06\x2b\x06\x01\x05\x05\x02" + os.urandom(36 * 1024 - 12)).decode()
    resp, _, ua = send("GET", "/ews/exchange.asmx", [("Authorization", "Negotiate " + token)])
    got = [e for e in ex.events("request") if ["User-Agent", ua] in e["headers"]]
    ok(resp.status == 401 and got and ["Authorization", "Negotiate " + token] in got[0]["headers"],
       "control passes: a %d-byte (48 KiB) Negotiate token reaches the stand-in unchanged (%d)" % (len(token), resp.status))
    vc = rpch.open_virtual_connection(lambda: rpch.HttpConn("127.0.0.1", PUB, timeout=10))
    payload = os.urandom(64)
    vc.inn.send(payload)
    is_(vc.out.read_exact(64, timeout=5), payload, "control passes: RPC_IN_DATA/RPC_OUT_DATA pair, echoed IN->OUT")
    vc.close()


def check_strip_internal():
    """Headers only Exchange's own front end may set never reach the backend; others do."""
    internal = [("X-CommonAccessToken", "VgEAVAdXaW5kb3dzQwBBCEtlcmJlcm9z"), ("X-IsFromCafe", "1"),
                ("X-SourceCafeServer", "exch01.example.com"), ("msExchProxyUri", "https://exch01/ecp"),
                ("X-MSExchangeProxyLogonToken", "abc"), ("X-Forwarded_For", "1.2.3.4"), ("X_Real_IP", "1.2.3.4"),
                ("Front_End_Https", "On")]
    resp, _, ua = send("GET", "/ews/strip", internal + [("X-Custom-Ok", "kept")])
    got = [e for e in ex.events("request") if ["User-Agent", ua] in e["headers"]]
    names = {n.lower() for n, _ in got[0]["headers"]} if got else set()
    ok(resp.status == 200 and got, "request with internal headers is forwarded (%d)" % resp.status)
    is_(sorted(n for n, _ in internal if n.lower() in names), [], "internal headers and '_' look-alikes stripped")
    ok("x-custom-ok" in names, "an ordinary X- header is kept")


def proxy_v2(src, dst="192.0.2.1", sport=40000, dport=443):
    """A PROXY v2 PROXY header for TCP over IPv4 or IPv6."""
    fam = socket.AF_INET6 if ":" in src else socket.AF_INET
    addr = socket.inet_pton(fam, src) + socket.inet_pton(fam, dst if fam == socket.AF_INET else "2001:db8::1")
    addr += struct.pack(">HH", sport, dport)
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11 if fam == socket.AF_INET else 0x21]) + \
        struct.pack(">H", len(addr)) + addr


def check_allow_from():
    """A route with allow_from: clients inside (PROXY v1/v2 source) pass, others get 403
    filter:allow_from and never reach the stand-in."""
    before = metric("exrelay_filter_blocked_total", 'rule="allow_from"')
    inside = [(b"PROXY TCP4 10.1.2.3 127.0.0.1 5000 443\r\n", "PROXY v1 10.1.2.3"),
              (proxy_v2("10.200.0.9"), "PROXY v2 10.200.0.9"), (proxy_v2("2001:db8:5::7"), "PROXY v2 2001:db8:5::7")]
    for hdr, what in inside:
        resp, _, ua = send("GET", "/ecp/default.aspx", proxy=hdr)
        ok(resp.status == 200 and wait_for(lambda: reached(ua), 5), "allow_from: %s reaches /ecp (%d)" % (what, resp.status))
    outside = [(b"PROXY TCP4 203.0.113.5 127.0.0.1 5000 443\r\n", "PROXY v1 203.0.113.5"),
               (proxy_v2("11.0.0.1"), "PROXY v2 11.0.0.1"), (proxy_v2("2001:db9::1"), "PROXY v2 2001:db9::1"),
               (None, "no PROXY header (peer 127.0.0.1)")]
    uas = []
    for hdr, what in outside:
        resp, _, ua = send("GET", "/ECP/default.aspx", proxy=hdr)
        line = access_line(ua)
        ok(resp.status == 403 and line and line["route"] == "filter:allow_from",
           "allow_from: %s gets 403, ROUTE filter:allow_from (%s, %r)" % (what, resp.status, line and line["route"]))
        uas.append(ua)
    resp, _, ua = send("GET", "/powershell/", proxy=outside[0][0])
    uas.append(ua)
    is_(resp.status, 403, "allow_from: /powershell from outside: 403")
    resp, _, ua = send("GET", "/owa/", proxy=outside[0][0])
    is_(resp.status, 200, "allow_from: the same client reaches /owa (a route without allow_from)")
    ok(sentinel(), "sentinel after the refused clients reaches the stand-in")
    is_([ua for ua in uas if reached(ua)], [], "no refused client reached the stand-in")
    is_(metric("exrelay_filter_blocked_total", 'rule="allow_from"') - before, 5.0,
        "exrelay_filter_blocked_total{rule=\"allow_from\"} counts the 5 refusals")


def check_metrics():
    """exrelay_filter_blocked_total{rule} equals what this test had refused so far."""
    for rule, n in sorted(BLOCKED.items()):
        is_(metric("exrelay_filter_blocked_total", 'rule="%s"' % rule), float(n),
            "exrelay_filter_blocked_total{rule=\"%s\"} = %d" % (rule, n))


def check_reload_rules():
    """Administrator's rules added by a SIGHUP reload take effect; unnamed rules are rule1, rule2."""
    target = "/ews/exchange.asmx?CmdLet=New-Evil&x=1"
    resp, _, ua = send("POST", target, body=b"<x/>")
    ok(resp.status == 200 and reached(ua), "before the reload: POST %s passes" % target)
    rules = ('{ name = "cve-next"; methods = [ "POST" ]; path = "/ews"; query_contains = "new-evil"; }, '
             '{ path = "/oab/evil"; }, { query_contains = "<script"; }')
    relay.reload(CONFIG % dict(access=ACCESS, filters="true", rules=rules, sport=ex.port))
    ok(relay.wait_reloaded(), "SIGHUP reload with three rules")
    uas = []
    resp, _, ua = send("POST", target.replace("New-Evil", "new%2Devil"), body=b"<x/>")
    uas.append(expect_blocked(resp, ua, "cve-next", "after the reload: named rule (method, path, escaped query)"))
    resp, _, ua = send("GET", "/OAB/Evil/x.lzx")
    uas.append(expect_blocked(resp, ua, "rule2", "unnamed second rule (path prefix, case-insensitive)"))
    resp, _, ua = send("GET", "/owa/?a=%253Cscript%253E")
    uas.append(expect_blocked(resp, ua, "rule3", "unnamed third rule (query substring, nested escape)"))
    for method, t, what in (("GET", target, "another method"),
                            ("GET", "/oab/evilness/x", "a path that only starts like the prefix")):
        resp, _, ua = send(method, t, body=b"<x/>" if method == "POST" else b"")
        ok(resp.status == 200 and wait_for(lambda: reached(ua), 5), "rules do not refuse %s (%d)" % (what, resp.status))
    resp, _, ua = send(*PROXYSHELL[0][:2])
    uas.append(expect_blocked(resp, ua, "proxyshell", "built-in filters still on after the reload"))
    ok(sentinel(), "sentinel after the reload reaches the stand-in")
    is_([ua for ua in uas if reached(ua)], [], "nothing a rule refused reached the stand-in")


def check_filters_off():
    """A second exrelay with exchange_filters = false forwards the exploit shapes."""
    r2 = start_exrelay(CONFIG % dict(access=os.path.join(LOGDIR, "access2.log"), filters="false", rules="",
                                     sport=ex.port))
    port = r2.port("public")
    for method, target, what in (PROXYSHELL[0], PROXYNOTSHELL_COMBINED):
        resp, _, ua = send(method, target, port=port)
        ok(resp.status == 200 and wait_for(lambda: reached(ua), 5), "exchange_filters = false: %s reaches the "
           "stand-in (%d)" % (what, resp.status))
    resp, _, ua = send("GET", "/owa/auth/x.js", [("Cookie", PROXYLOGON[0][0])], port=port)
    ok(resp.status == 200 and wait_for(lambda: reached(ua), 5),
       "exchange_filters = false: the ProxyLogon cookie reaches the stand-in (%d)" % resp.status)
    ok(r2.alive(), "second exrelay still running")
    is_(r2.stop(), 0, "second exrelay stops with exit status 0")


run_checks((check_exchange_targets, check_proxylogon_cookies, check_controls, check_strip_internal, check_allow_from,
            check_metrics, check_reload_rules, check_filters_off), relay, T0)
