#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_edge_guard.py: exrelay's authentication guard against password spraying and lockout (TAP).

exrelay (auth_guard with small numbers: max_failures 3, window 60 s, block 5 s,
max_failures_per_client 10) in front of the Exchange stand-in, which checks Basic and NTLMv2
logins against real passwords and logs auth_ok/auth_fail for every attempt that reaches it. Client
addresses are chosen with PROXY v1 headers from the trusted loopback peer.

Checks: after 3 failed Basic logins for one user from unfamiliar addresses, further attempts (even
with the right password, from any unfamiliar address) get exrelay's own 401 with
`WWW-Authenticate: Basic realm=...` and never reach the stand-in; the error log has one
fail2ban-format block line; the block ends after `block` seconds (unblock line) and the user
logs in again. The same for NTLM and Negotiate (exrelay's 401 offers Negotiate and NTLM and closes
the connection; the AUTHENTICATE never reaches the stand-in). Targeted lockout: one user attacked
from 20 addresses reaches the stand-in only 3 times while the user's familiar address keeps
logging in. Spraying 200 users from 10 addresses: each address is blocked (429 with Retry-After,
one block line) after more than 10 failures, right passwords included. Failure counts survive a
SIGHUP reload. /metrics counts failures, successes, blocks and blocked attempts exactly; the
access log's user field names the Basic or NTLM user and its ROUTE field guard:user/guard:client.
A second exrelay with the guard off forwards every attempt.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_edge_guard.py
"""

import os
import sys
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, start_standin, start_exrelay, wait_for, tmpdir  # noqa: E402
import ntlm  # noqa: E402
import rpch  # noqa: E402
import service  # noqa: E402

T0 = time.monotonic()
LOGDIR = tmpdir("exrelay-edge-guard-")
ACCESS = os.path.join(LOGDIR, "access.log")
MAX_FAILURES, BLOCK, PER_CLIENT = 3, 5, 10

CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; };
access_log = { path = "%(access)s"; format = "combined"; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = 5; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ]; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
auth_guard = { enabled = %(enabled)s; max_failures = %(maxf)d; window = 60; block = %(block)d; familiar_days = 14;
               max_failures_per_client = %(perclient)d; max_entries = 1000; };
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; } );
routes = ( { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews", "/autodiscover", "/mapi",
                                             "/microsoft-server-activesync" ]; } );
'''


def config(enabled="true", access=ACCESS):
    """The configuration text (guard on unless told)."""
    return CONFIG % dict(access=access, enabled=enabled, maxf=MAX_FAILURES, block=BLOCK, perclient=PER_CLIENT,
                         sport=ex.port)


ex = start_standin(ping_interval=0, extra_args=["--user", "frank:Frank-pw", "--user", "gina:Gina-pw",
                                                 "--user", "hank:Hank-pw"])
relay = start_exrelay(config())
PUB, ADMIN = relay.port("public"), relay.port("admin")
diag("exrelay on %d (admin %d), stand-in %d" % (PUB, ADMIN, ex.port))

SEQ = [0]
# what the test did, for the metrics check: failures and successes that reached the stand-in
# through the guard, blocks started, attempts exrelay answered itself
TALLY = {"failures": 0, "successes": 0, "blocks_user": 0, "blocks_client": 0, "blocked_user": 0, "blocked_client": 0}


def mark():
    """A fresh marker for one request (in its target and User-Agent)."""
    SEQ[0] += 1
    return "g%d" % SEQ[0]


def proxy_line(src):
    """A PROXY v1 header from the trusted loopback peer with client address `src`."""
    return ("PROXY TCP4 %s 127.0.0.1 %d 443\r\n" % (src, 40000 + SEQ[0] % 20000)).encode()


def reached(m):
    """True when a request marked `m` reached the stand-in."""
    return any(("m=" + m) in e["target"] for e in ex.events("request"))


def access_line(ua):
    """The parsed access-log line of the request with User-Agent `ua` (service.access_line)."""
    return service.access_line(ACCESS, ua)


def basic(src, user, password, path="/owa/"):
    """One Basic login from client address `src` on a fresh connection: (Response, marker)."""
    m = mark()
    with rpch.HttpConn("127.0.0.1", PUB, timeout=10) as c:
        c.send(proxy_line(src))
        resp, _ = c.request("GET", "%s?m=%s" % (path, m), [("Host", "mail.example.com"), ("User-Agent", "ua-" + m),
                                                            ("Authorization", ntlm.basic(user, password))], timeout=10)
    return resp, m


def ntlm_attempt(src, user, password, scheme="NTLM"):
    """NTLM legs 1 and 3 from `src` on one connection (leg 3 marked apart). Returns (leg-3
    Response or None if leg 1 failed, leg-3 marker, whether the connection was closed after)."""
    m1, m3 = mark(), mark()
    with rpch.HttpConn("127.0.0.1", PUB, timeout=10) as c:
        c.send(proxy_line(src))
        r1, _ = c.request("GET", "/ews/exchange.asmx?m=" + m1, [("Host", "mail.example.com"), (
            "Authorization", "%s %s" % (scheme, rpch.ntlm_type1()))], timeout=10)
        chal = [v for n, v in r1.headers if n.lower() == "www-authenticate" and v.startswith(scheme + " ")]
        if r1.status != 401 or not chal:
            return None, m3, False
        token = rpch.ntlm_type3(chal[0], user, password)
        r3, _ = c.request("GET", "/ews/exchange.asmx?m=" + m3, [("Host", "mail.example.com"), ("User-Agent", "ua-" + m3),
                          ("Authorization", "%s %s" % (scheme, token))], timeout=10)
        closed = c.wait_closed(timeout=3) if r3.status == 401 else False
    return r3, m3, closed


def guard_lines(kind="block"):
    """The `auth-guard: block|unblock ...` lines of exrelay's error log (text after the prefix)."""
    return [l[l.index("auth-guard: "):] for l in relay.stderr_text().splitlines() if "auth-guard: " + kind + " " in l]


def metric(name, labels=""):
    """The value of metric name{labels} on the admin port (0 when absent)."""
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % ADMIN, timeout=5).read().decode()
    want = name + ("{" + labels + "}" if labels else "")
    for line in text.splitlines():
        if line.split(" ")[0] == want:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def fail_until_blocked(src_of, user, n=MAX_FAILURES):
    """n failed Basic logins for `user` (address src_of(i)); returns the statuses."""
    out = []
    for i in range(n):
        resp, _ = basic(src_of(i), user, "wrong-%d" % i)
        out.append(resp.status)
        TALLY["failures"] += resp.status == 401
    return out


def check_basic_block():
    """Basic: 3 failures for bob from unfamiliar addresses, then exrelay answers for him."""
    statuses = fail_until_blocked(lambda i: "203.0.113.10", "bob")
    is_(statuses, [401] * MAX_FAILURES, "Basic: %d wrong passwords for bob reach the stand-in: 401 each" % MAX_FAILURES)
    is_(len(ex.events("auth_fail", user="bob", scheme="Basic")), MAX_FAILURES, "stand-in saw %d failures" % MAX_FAILURES)
    t_block = time.monotonic()
    TALLY["blocks_user"] += 1
    resp, m = basic("203.0.113.10", "bob", "Secret2")
    TALLY["blocked_user"] += 1
    is_((resp.status, resp.header("WWW-Authenticate")), (401, 'Basic realm="mail.example.com"'),
        "blocked: even the right password gets 401 with the Basic challenge")
    line = access_line("ua-" + m)
    ok(line and line["status"] == 401 and line["route"] == "guard:user" and line["user"] == "bob",
       "access log: 401, ROUTE guard:user, user bob (%r)" % (line,))
    resp, m2 = basic("198.51.100.200", "EXAMPLE\\Bob", "Secret2", path="/Microsoft-Server-ActiveSync")
    TALLY["blocked_user"] += 1
    is_(resp.status, 401, "blocked from another unfamiliar address too, whatever the name's case and domain")
    resp, m3 = basic("203.0.113.10", "alice", "Secret1")
    TALLY["successes"] += resp.status == 200
    is_(resp.status, 200, "another user from the same address is not blocked")
    ok(wait_for(lambda: reached(m3), 5) and not reached(m) and not reached(m2), "blocked attempts never reached the stand-in")
    is_(len(ex.events("auth_ok", user="bob")), 0, "stand-in: no login for bob while blocked")
    want = 'auth-guard: block user="bob" client=203.0.113.10 failures=%d seconds=%d scope=unfamiliar' % (MAX_FAILURES, BLOCK)
    is_([l for l in guard_lines() if 'user="bob"' in l], [want], "error log: one block line in the fail2ban format")
    # the block ends after BLOCK seconds
    ok(time.monotonic() - t_block < BLOCK - 1, "(the checks above ran inside the block)")
    got, polls = None, 0
    while got is None and time.monotonic() - t_block < BLOCK + 5:
        resp, _ = basic("203.0.113.10", "bob", "Secret2")
        if resp.status == 200:
            got = resp
        else:
            polls += 1
            time.sleep(0.25)                      # poll interval while the block lasts
    took = time.monotonic() - t_block
    TALLY["blocked_user"] += polls
    TALLY["successes"] += got is not None
    ok(got is not None and BLOCK - 1 <= took <= BLOCK + 5,
       "block ends after about %d s: bob logs in again after %.1f s" % (BLOCK, took))
    ok(wait_for(lambda: [l for l in guard_lines("unblock") if 'user="bob"' in l], 3),
       "error log: an unblock line for bob (%r)" % [l for l in guard_lines("unblock") if 'user="bob"' in l][:1])


def check_ntlm_block():
    """NTLM and Negotiate: 3 failed AUTHENTICATEs for carol, then exrelay answers the next ones
    with 401 (Negotiate, NTLM) and closes; they never reach the stand-in."""
    for i in range(MAX_FAILURES):
        r3, _, _ = ntlm_attempt("203.0.113.20", "EXAMPLE\\carol", "wrong-%d" % i, "NTLM" if i % 2 == 0 else "Negotiate")
        TALLY["failures"] += bool(r3 and r3.status == 401)
    is_(len(ex.events("auth_fail", user="EXAMPLE\\carol")), MAX_FAILURES,
        "NTLM/Negotiate: %d failed AUTHENTICATEs for carol reached the stand-in" % MAX_FAILURES)
    TALLY["blocks_user"] += 1
    for scheme in ("NTLM", "Negotiate"):
        r3, m3, closed = ntlm_attempt("203.0.113.21", "EXAMPLE\\carol", "Secret3", scheme)
        TALLY["blocked_user"] += 1
        offers = sorted(v for n, v in r3.headers if n.lower() == "www-authenticate") if r3 else None
        ok(r3 is not None and r3.status == 401 and offers == ["NTLM", "Negotiate"],
           "%s blocked: 401 offering Negotiate and NTLM (%r)" % (scheme, offers))
        ok(r3 is not None and (r3.header("Connection", "").lower() == "close") and closed,
           "%s blocked: Connection: close, and the connection is closed" % scheme)
        ok(not reached(m3), "%s blocked: the AUTHENTICATE never reached the stand-in" % scheme)
        line = access_line("ua-" + m3)
        ok(line and line["route"] == "guard:user" and line["user"].endswith("carol"),
           "access log: ROUTE guard:user, user field names the NTLM user (%r)" % (line,))
    is_(len(ex.events("auth_ok", user="EXAMPLE\\carol")), 0, "stand-in: no login for carol while blocked")
    want = 'auth-guard: block user="carol" client=203.0.113.20 failures=%d seconds=%d scope=unfamiliar' % (
        MAX_FAILURES, BLOCK)
    is_([l for l in guard_lines() if 'user="carol"' in l], [want], "error log: one block line for carol")
    r3, m3, _ = ntlm_attempt("203.0.113.21", "EXAMPLE\\dave", "Secret4")
    TALLY["successes"] += bool(r3 and r3.status == 200)
    ok(r3 and r3.status == 200 and reached(m3), "NTLM: another user logs in meanwhile")


def check_targeted_lockout():
    """frank attacked from 20 addresses: 3 attempts reach the stand-in (AD's counter moves 3
    times), the rest are answered by exrelay; frank's familiar address keeps logging in."""
    home = "198.51.100.7"
    resp, _ = basic(home, "frank", "Frank-pw")
    TALLY["successes"] += resp.status == 200
    is_(resp.status, 200, "frank logs in from his own address (it becomes familiar)")
    statuses, marks = [], []
    for i in range(20):
        resp, m = basic("192.0.2.%d" % (100 + i), "frank", "guess-%d" % i)
        statuses.append(resp.status)
        marks.append(m)
        if i < MAX_FAILURES:
            TALLY["failures"] += 1
        else:
            TALLY["blocked_user"] += 1
        if i % 5 == 4:
            r, m_home = basic(home, "frank", "Frank-pw", path="/ews/exchange.asmx")
            TALLY["successes"] += r.status == 200
            ok(r.status == 200 and reached(m_home), "frank's familiar address logs in during the attack (after %d)" % (i + 1))
    TALLY["blocks_user"] += 1
    is_(statuses, [401] * 20, "all 20 attackers get 401")
    is_([reached(m) for m in marks], [True] * MAX_FAILURES + [False] * (20 - MAX_FAILURES),
        "only the first %d attempts reached the stand-in" % MAX_FAILURES)
    is_(len(ex.events("auth_fail", user="frank")), MAX_FAILURES, "stand-in counted %d bad passwords for frank" % MAX_FAILURES)
    r3, m3, _ = ntlm_attempt(home, "EXAMPLE\\frank", "Frank-pw")
    TALLY["successes"] += bool(r3 and r3.status == 200)
    ok(r3 and r3.status == 200 and reached(m3), "frank's familiar address logs in with NTLM too")
    lines = [l for l in guard_lines() if 'user="frank"' in l]
    ok(len(lines) == 1 and "scope=unfamiliar" in lines[0] and "client=192.0.2.102" in lines[0],
       "error log: one block line for frank (%r)" % lines)


def check_spraying():
    """200 users from 10 addresses: each address is blocked with 429 after more than 10 failures."""
    per = 20
    for a in range(10):
        src = "203.0.113.%d" % (100 + a)
        statuses, marks = [], []
        for u in range(per):
            resp, m = basic(src, "spray%03d" % (a * per + u), "Summer2024!")
            statuses.append((resp.status, resp.header("Retry-After")))
            marks.append(m)
        first = [s for s, _ in statuses[:PER_CLIENT + 1]]
        rest = statuses[PER_CLIENT + 1:]
        TALLY["failures"] += PER_CLIENT + 1
        TALLY["blocked_client"] += len(rest)
        TALLY["blocks_client"] += 1
        ok(first == [401] * (PER_CLIENT + 1) and all(s == 429 and ra and ra.isdigit() and 1 <= int(ra) <= BLOCK
                                                      for s, ra in rest),
           "%s: %d failures reach the stand-in, then 429 with Retry-After (%r)" % (src, PER_CLIENT + 1, statuses[-1]))
        ok(not any(reached(m) for m in marks[PER_CLIENT + 1:]), "%s: nothing after the block reached the stand-in" % src)
    src = "203.0.113.100"
    resp, m = basic(src, "alice", "Secret1")
    TALLY["blocked_client"] += 1
    ok(resp.status == 429 and not reached(m), "a blocked address gets 429 even for a right password (%d)" % resp.status)
    line = access_line("ua-" + m)
    ok(line and line["status"] == 429 and line["route"] == "guard:client", "access log: 429, ROUTE guard:client (%r)" % (line,))
    lines = [l for l in guard_lines() if l.startswith("auth-guard: block client=")]
    is_(sorted(lines), sorted("auth-guard: block client=203.0.113.%d failures=%d seconds=%d" % (100 + a, PER_CLIENT + 1, BLOCK)
                              for a in range(10)), "error log: one block line per spraying address")


def check_reload_keeps_state():
    """Failure counts survive a SIGHUP reload: 2 failures, reload, 1 failure: blocked."""
    fail_until_blocked(lambda i: "203.0.113.30", "gina", MAX_FAILURES - 1)
    relay.reload(config() + "\n# reloaded\n")
    ok(relay.wait_reloaded(), "SIGHUP reload")
    fail_until_blocked(lambda i: "203.0.113.31", "gina", 1)
    TALLY["blocks_user"] += 1
    resp, m = basic("203.0.113.32", "gina", "Gina-pw")
    TALLY["blocked_user"] += 1
    ok(resp.status == 401 and not reached(m), "after the reload the earlier failures still count: gina blocked")
    is_(len(ex.events("auth_fail", user="gina")), MAX_FAILURES, "stand-in saw %d failures for gina" % MAX_FAILURES)


def check_metrics():
    """/metrics: failures, successes, blocks and blocked attempts as counted by this test."""
    blocked_user = len([l for l in open(ACCESS) if service.COMBINED.match(l.rstrip("\n")) and
                        service.COMBINED.match(l.rstrip("\n")).group(9) == "guard:user"])
    blocked_client = len([l for l in open(ACCESS) if service.COMBINED.match(l.rstrip("\n")) and
                          service.COMBINED.match(l.rstrip("\n")).group(9) == "guard:client"])
    is_((blocked_user, blocked_client), (TALLY["blocked_user"], TALLY["blocked_client"]),
        "access log: guard:user and guard:client lines as the test counted")
    for name, labels, key in (("exrelay_auth_failures_total", "", "failures"),
                              ("exrelay_auth_successes_total", "", "successes"),
                              ("exrelay_auth_blocks_total", 'scope="user"', "blocks_user"),
                              ("exrelay_auth_blocks_total", 'scope="client"', "blocks_client"),
                              ("exrelay_auth_blocked_requests_total", 'scope="user"', "blocked_user"),
                              ("exrelay_auth_blocked_requests_total", 'scope="client"', "blocked_client")):
        is_(metric(name, labels), float(TALLY[key]), "%s%s = %d" % (name, "{%s}" % labels if labels else "", TALLY[key]))


def check_guard_off():
    """A second exrelay with auth_guard.enabled = false forwards every attempt."""
    r2 = start_exrelay(config(enabled="false", access=os.path.join(LOGDIR, "access2.log")))
    port = r2.port("public")
    before = len(ex.events("auth_fail", user="hank"))
    statuses = []
    for i in range(MAX_FAILURES + 3):
        with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
            c.send(proxy_line("203.0.113.40"))
            resp, _ = c.request("GET", "/owa/", [("Host", "x"), ("Authorization", ntlm.basic("hank", "bad"))], timeout=10)
            statuses.append(resp.status)
    is_((statuses, len(ex.events("auth_fail", user="hank")) - before), ([401] * (MAX_FAILURES + 3), MAX_FAILURES + 3),
        "guard off: every failed attempt reaches the stand-in")
    is_(r2.stop(), 0, "second exrelay stops with exit status 0")


run_checks((check_basic_block, check_ntlm_block, check_targeted_lockout, check_spraying, check_reload_keeps_state,
            check_metrics, check_guard_off), relay, T0)
