# SPDX-License-Identifier: BSD-2-Clause
"""
soak_load.py: the chaos soak's load (contrib/soak/soak.py): one coroutine per client, each looping
until the wave ends: RPC over HTTP virtual connections, OWA/EWS/MAPI keep-alive clients, NTLM
clients, slow readers and writers, malformed requests, resets; and the probe of the running
configuration. Every request and outcome goes to BOOK.
"""

import asyncio
import hashlib
import json
import random
import time

from soak_book import BOOK, NAMES, T_IO, USERS, check_choice  # first: it puts tests/lib on sys.path
import ntlm
import rpch
from soak_client import Client, Cut, chunked, req, sha


# ----------------------------------------------------------------------------------------------
# Load: one coroutine per client, each looping until the wave ends
# ----------------------------------------------------------------------------------------------

class Wave:
    """Shared state of one wave: its deadline."""

    def __init__(self, setup, n, seconds):
        """A wave numbered n lasting `seconds` from now."""
        self.s, self.n, self.end = setup, n, time.monotonic() + seconds

    def on(self):
        """True while the wave runs."""
        return time.monotonic() < self.end


async def c2_or_refusal(out, inn):
    """CONN/C2 on the OUT channel, or the IN channel's refusal (an answer or a close: ValueError
    or Cut at once, rather than waiting for the stand-in to give up on the pair)."""
    c2 = asyncio.ensure_future(out.exactly(rpch.C2_LEN))
    inh = asyncio.ensure_future(inn.head())
    done, _ = await asyncio.wait({c2, inh}, timeout=T_IO, return_when=asyncio.FIRST_COMPLETED)
    loser = inh if c2 in done else c2
    loser.cancel()
    await asyncio.gather(loser, return_exceptions=True)
    if c2 in done:
        return c2.result()
    if inh in done:
        r = inh.result()
        raise ValueError("IN channel answered %d from %s" % (r.status, r.origin))
    raise asyncio.TimeoutError()


async def rpc_vc(s, mode, pdus, end):
    """One RPC over HTTP virtual connection through HAProxy: OUT (A1 -> 200 + A3), IN (B1 ->
    C2 on OUT), then per mode: echo (random PDUs on IN, each read back on OUT and compared),
    source (the stand-in streams a pattern on OUT, verified), sink (a stream on IN, hashed by
    the stand-in). Returns the record checked later against the stand-in's in_closed event."""
    kind = "rpc_" + mode
    cookie = rpch.new_cookie()
    ro, ri = BOOK.rid(kind), BOOK.rid(kind)
    base = "/rpc/rpcproxy.dll?soak.example.com:6001&rid="
    src = "127.0.0.%d" % random.randint(2, 250)
    t0 = time.monotonic()
    rec = {"cookie": cookie.hex(), "kind": kind, "server": None, "sent": 0, "sha": hashlib.sha256(), "clean": False}
    out = inn = None
    BOOK.log_expect(ro, "atmost")
    BOOK.log_expect(ri, "atmost")
    step = "OUT connect"
    try:
        out = await Client.open(s.hport, src)
        source = random.randint(1, 4) << 20 if mode == "source" else 0
        q = "&source=%d&seed=%d" % (source, source % 97) if source else ""
        await out.send(rpch.rpc_out_request(base + ro + q) + rpch.conn_a1(cookie))
        step = "OUT head"
        resp = await out.head()
        if resp.status != 200 or resp.origin not in NAMES:
            raise ValueError("OUT channel answered %d from %s" % (resp.status, resp.origin))
        rec["server"] = resp.origin
        check_choice(cookie, resp.origin, t0, "RPC OUT")
        step = "A3"
        rpch.parse_a3(await out.exactly(rpch.A3_LEN))
        step = "IN connect"
        inn = await Client.open(s.hport, src)
        b1 = rpch.conn_b1(cookie)
        rec["sha"].update(b1)
        rec["sent"] = len(b1)
        qi = "&mode=sink" if mode == "sink" else ""
        await inn.send(rpch.rpc_in_request(base + ri + qi) + b1)
        step = "C2"
        rpch.parse_c2(await c2_or_refusal(out, inn))
        step = "stream"
        BOOK.log_expect(ro, "exact")
        BOOK.log_expect(ri, "exact")
        if mode == "source":
            v = rpch.PatternVerifier(source % 97)
            left = source
            while left:
                data = await out.some(min(left, 262144))
                if not data:
                    raise Cut("OUT stream ended after %d of %d bytes" % (source - left, source))
                if not v.update(data):
                    BOOK.fail("corrupt_body", "RPC source stream differs at %d" % v.mismatch_at)
                    break
                left -= len(data)
        else:
            for _ in range(pdus):
                if time.monotonic() > end:
                    break
                data = random.randbytes(random.choice((20, 100, 1000, 4000, 16000, 60000)) if mode == "echo"
                                        else random.choice((65536, 262144)))
                step = "IN write %d after %d" % (len(data), rec["sent"])
                await inn.send(data)
                rec["sha"].update(data)
                rec["sent"] += len(data)
                if mode == "echo":
                    step = "echo read %d after %d" % (len(data), rec["sent"])
                    back = await out.exactly(len(data))
                    if back != data:
                        BOOK.fail("corrupt_body", "RPC echo on %s differs" % rec["server"])
                        break
                await asyncio.sleep(random.uniform(0.05, 0.4))
        rec["clean"] = True
        BOOK.outcome(kind, "ok", t0)
    except Cut as e:
        BOOK.outcome(kind, "cut", t0, "%s on %s at %s: %s" % (rec["cookie"][:8], rec["server"], step, e),
                     [rec["server"]] if rec["server"] else None)
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        BOOK.outcome(kind, "err", t0, "%s: %s on %s at %s (%.1f s in): %s" % (
            type(e).__name__, rec["cookie"][:8], rec["server"], step, time.monotonic() - t0, e),
            [rec["server"]] if rec["server"] else None)
    finally:
        for c in (inn, out):
            if c:
                c.close()
    rec["t0"], rec["t1"] = t0, time.monotonic()
    BOOK.rpc.append(rec)


async def rpc_loop(w, i):
    """One RPC client: virtual connections one after another until the wave ends."""
    await asyncio.sleep(random.uniform(0, 3))
    while w.on():
        mode = random.choices(("echo", "source", "sink"), (7, 2, 2))[0]
        await rpc_vc(w.s, mode, random.randint(5, 60), w.end)


def check_exchange(resp, kind, rid, t0, state):
    """A response on an Exchange path: from a stand-in (or exrelay's own error); the same
    stand-in for the whole client connection (state: the connection's pin)."""
    if resp.origin == "apache":
        BOOK.fail("wrong_backend", "%s %s answered by Apache" % (kind, rid))
        return False
    if resp.origin == "relay":
        return False
    if state.get("server") is None:
        state["server"] = resp.origin
        check_choice(state["src"], resp.origin, t0, kind)
    elif state["server"] != resp.origin and not BOOK.disturbed(state["t0"], time.monotonic(), [state["server"]]):
        BOOK.fail("pinning", "%s %s: connection pinned to %s answered by %s" % (kind, rid, state["server"], resp.origin))
    return True


async def get_pattern(c, target, n, seed, kind, rid, t0, state, slow=0.0):
    """GET target on c, whose answer is n pattern bytes from seed (`slow`: see Client.body); a
    stand-in's 200 with other bytes is booked as corrupt_body. Returns the response."""
    await c.send(req("GET", target))
    resp = await c.head()
    v = rpch.PatternVerifier(seed)
    got = [0]

    def sink(d):
        got[0] += len(d)
        v.update(d)
    await c.body(resp, sink=sink, slow=slow)
    if check_exchange(resp, kind, rid, t0, state) and resp.status == 200 and (not v.ok or got[0] != n):
        BOOK.fail("corrupt_body", "%s %s: %d of %d bytes, pattern %s" % (kind, rid, got[0], n, v.ok))
    return resp


def check_json(body, kind, rid, state, want_sha=None, want_len=None):
    """The stand-in's JSON echo: same backend connection as before on this client connection,
    the request body as sent."""
    try:
        j = json.loads(body)
    except ValueError:
        BOOK.fail("corrupt_body", "%s %s: JSON answer does not parse" % (kind, rid))
        return None
    if rid not in j.get("target", ""):
        BOOK.fail("wrong_answer", "%s %s: answer for %r" % (kind, rid, j.get("target")))
    if "conn" in j and "server" in j:
        key = (j["server"], j["conn"])
        if state.get("bconn") is None:
            state["bconn"] = key
        elif state["bconn"] != key and not BOOK.disturbed(state["t0"], time.monotonic(), [state["bconn"][0]]):
            BOOK.fail("pinning", "%s %s: backend connection %s then %s" % (kind, rid, state["bconn"], key))
            state["bconn"] = key
    if want_sha is not None and (j.get("body_sha256") != want_sha or j.get("body_bytes") != want_len):
        BOOK.fail("corrupt_body", "%s %s: the stand-in got %s bytes (%s), sent %d" % (
            kind, rid, j.get("body_bytes"), str(j.get("body_sha256"))[:12], want_len))
    return j


async def owa_conn(w):
    """One keep-alive client connection with a random mix of OWA/EWS/MAPI/Apache requests."""
    s = w.s
    c = await Client.open(s.hport)
    state = {"src": c.src, "t0": time.monotonic()}
    try:
        for _ in range(random.randint(3, 30)):
            if not w.on():
                break
            op = random.choices(("get", "getchunked", "post", "postchunked", "static", "cgi", "mapi", "cut"),
                                (6, 2, 5, 2, 3, 1, 1, 1))[0]
            if not await owa_one(s, c, op, state):
                return
            await asyncio.sleep(random.uniform(0, 0.3))
    finally:
        c.close()


async def owa_one(s, c, op, state):
    """One request of owa_conn; False when the connection is over."""
    kind = "owa_" + op
    rid = BOOK.rid(kind)
    t0 = time.monotonic()
    BOOK.log_expect(rid, "atmost")
    try:
        if op in ("get", "getchunked"):
            n = random.choice((0, 100, 5000, 70000, 300000))
            seed = random.randint(0, 1000)
            resp = await get_pattern(c, "/owa/service.svc?rid=%s&len=%d&seed=%d%s" % (
                rid, n, seed, "&chunked=1" if op == "getchunked" else ""), n, seed, kind, rid, t0, state)
        elif op in ("post", "postchunked", "mapi"):
            body = random.randbytes(random.choice((0, 10, 3000, 60000, 200000)))
            path = "/ews/exchange.asmx" if op != "mapi" else "/mapi/emsmdb/"
            q = "&NotificationWait=1&interval=0.2&pending=2" if op == "mapi" else ""
            hs = [("Content-Type", "text/xml")]
            if op == "postchunked":
                hs.append(("Transfer-Encoding", "chunked"))
                raw = req("POST", path + "?rid=" + rid + q, hs) + chunked(body)
            else:
                raw = req("POST", path + "?rid=" + rid + q, hs + [("Content-Length", str(len(body)))], body)
            await c.send(raw)
            resp = await c.head()
            data = await c.body(resp)
            if check_exchange(resp, kind, rid, t0, state) and resp.status == 200:
                if op == "mapi":
                    if not (data.startswith(b"PROCESSING\r\nPENDING\r\nPENDING\r\nDONE") and data.endswith(b"events:1")):
                        BOOK.fail("corrupt_body", "%s %s: NotificationWait body %r" % (kind, rid, data[:80]))
                else:
                    check_json(data, kind, rid, state, sha(body), len(body))
        elif op == "static":
            path = random.choice(sorted(s.blobs))
            await c.send(req("GET", path + "?rid=" + rid))
            resp = await c.head()
            data = await c.body(resp)
            if resp.origin in NAMES:
                BOOK.fail("wrong_backend", "%s %s answered by %s" % (kind, rid, resp.origin))
            elif resp.status == 200 and (len(data), sha(data)) != s.blobs[path]:
                BOOK.fail("corrupt_body", "%s %s: %d bytes, not the file" % (kind, rid, len(data)))
        elif op == "cgi":
            body = random.randbytes(random.choice((0, 500, 40000)))
            await c.send(req("POST", "/cgi-bin/echo?rid=" + rid, [("Content-Length", str(len(body)))], body))
            resp = await c.head()
            data = await c.body(resp)
            if resp.origin in NAMES:
                BOOK.fail("wrong_backend", "%s %s answered by %s" % (kind, rid, resp.origin))
            elif resp.status == 200:
                j = json.loads(data)
                if j.get("body_sha256") != sha(body) or rid not in (j.get("uri") or ""):
                    BOOK.fail("corrupt_body", "%s %s: CGI got %s bytes" % (kind, rid, j.get("body_bytes")))
        elif op == "cut":
            # the stand-in sends Content-Length 1000 and 10 bytes, then closes: the client must see a cut
            await c.send(req("GET", "/owa/?rid=%s&broken=cut" % rid))
            try:
                resp = await c.head()
            except Cut:
                BOOK.outcome(kind, "ok", t0)
                return False
            if resp.status == 200:
                try:
                    data = await c.body(resp)
                    BOOK.fail("invented_end", "%s %s: a cut body arrived whole (%d bytes)" % (kind, rid, len(data)))
                except Cut:
                    pass
                except asyncio.TimeoutError:
                    BOOK.fail("invented_end", "%s %s: a cut body left the connection open" % (kind, rid))
            elif resp.status < 500:
                BOOK.fail("wrong_answer", "%s %s: status %d for a cut response" % (kind, rid, resp.status))
            BOOK.log_expect(rid, "exact")
            BOOK.outcome(kind, "ok", t0)
            return False
        if resp.origin == "relay" and resp.status >= 500:
            BOOK.outcome(kind, "err", t0, "status %d from exrelay" % resp.status,
                         [state["server"]] if state.get("server") else None)
        else:
            BOOK.outcome(kind, "ok", t0)
        BOOK.log_expect(rid, "exact", resp.status, resp.origin)
        return resp.h("connection") != "close"
    except Cut as e:
        BOOK.outcome(kind, "cut", t0, "%s %s" % (rid, e), [state["server"]] if state.get("server") else None)
        return False
    except (OSError, asyncio.TimeoutError, ValueError) as e:
        BOOK.outcome(kind, "err", t0, "%s: %s %s" % (type(e).__name__, rid, e),
                     [state["server"]] if state.get("server") else None)
        return False


async def owa_loop(w, i):
    """An OWA-like client: keep-alive connections one after another."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        try:
            await owa_conn(w)
        except (OSError, asyncio.TimeoutError) as e:
            BOOK.outcome("owa_connect", "err", time.monotonic(), "%s: %s" % (type(e).__name__, e))
            await asyncio.sleep(0.5)


async def ntlm_loop(w, i):
    """An NTLM client: per connection, legs 1 and 3, then keep-alive requests without
    credentials that must all reach the same stand-in connection, still authenticated."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        kind = "ntlm"
        user = USERS[i % len(USERS)]
        t0 = time.monotonic()
        state = {"t0": t0}
        c = None
        try:
            c = await Client.open(w.s.hport)
            state["src"] = c.src
            rid = BOOK.rid(kind)
            BOOK.log_expect(rid, "atmost")
            await c.send(req("GET", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Authorization", "NTLM " + rpch.ntlm_type1())]))
            r1 = await c.head()
            await c.body(r1)
            BOOK.log_expect(rid, "exact", r1.status, r1.origin)
            if not check_exchange(r1, kind, rid, t0, state):
                BOOK.outcome(kind, "err", t0, "leg 1: %d" % r1.status, None)
                continue
            if r1.status != 401:
                BOOK.fail("wrong_answer", "NTLM leg 1 %s: status %d" % (rid, r1.status))
                continue
            token = rpch.ntlm_type3(r1.h("www-authenticate"), user)
            rid = BOOK.rid(kind)
            BOOK.log_expect(rid, "atmost")
            await c.send(req("GET", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Authorization", "NTLM " + token)]))
            r3 = await c.head()
            data = await c.body(r3)
            BOOK.log_expect(rid, "exact", r3.status, r3.origin)
            if not check_exchange(r3, kind, rid, t0, state):
                BOOK.outcome(kind, "err", t0, "leg 3: %d" % r3.status, [state.get("server")])
                continue
            j = check_json(data, kind, rid, state) if r3.status == 200 else None
            if not j or (j.get("ntlm_user") or "").lower() != user:
                if not BOOK.disturbed(t0, time.monotonic(), [state.get("server")]):
                    BOOK.fail("pinning", "NTLM leg 3 %s: status %d, user %r" % (rid, r3.status, j and j.get("ntlm_user")))
                continue
            BOOK.outcome(kind, "ok", t0)
            for _ in range(random.randint(3, 20)):
                if not w.on():
                    break
                await asyncio.sleep(random.uniform(0.05, 0.8))
                rid = BOOK.rid(kind)
                t1 = time.monotonic()
                BOOK.log_expect(rid, "atmost")
                body = random.randbytes(random.choice((0, 2000, 30000)))
                await c.send(req("POST", "/ews/exchange.asmx?auth=ntlm&rid=" + rid, [("Content-Length", str(len(body)))], body))
                r = await c.head()
                data = await c.body(r)
                BOOK.log_expect(rid, "exact", r.status, r.origin)
                if not check_exchange(r, kind, rid, t1, state):
                    BOOK.outcome(kind, "err", t1, "status %d from exrelay" % r.status, [state.get("server")])
                    break
                j = check_json(data, kind, rid, state, sha(body), len(body)) if r.status == 200 else None
                if not j or (j.get("ntlm_user") or "").lower() != user:
                    if not BOOK.disturbed(t0, time.monotonic(), [state.get("server")]):
                        BOOK.fail("pinning", "NTLM %s: status %d, connection user %r (want %s)" % (
                            rid, r.status, j and j.get("ntlm_user"), user))
                    break
                BOOK.outcome(kind, "ok", t1)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e), [state.get("server")] if state.get("server") else None)
        except (OSError, asyncio.TimeoutError, ValueError, ntlm.NtlmError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e), [state.get("server")] if state.get("server") else None)
        finally:
            if c:
                c.close()


async def slow_loop(w, i):
    """Slow readers (a large body read 8 KiB at a time) and slow writers (head and body
    trickled), alternately."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        reader = random.random() < 0.5
        kind = "slow_reader" if reader else "slow_writer"
        rid = BOOK.rid(kind)
        t0 = time.monotonic()
        state = {"t0": t0}
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            state["src"] = c.src
            if reader:
                n, seed = random.choice((400000, 1500000)), random.randint(0, 99)
                resp = await get_pattern(c, "/owa/?rid=%s&len=%d&seed=%d" % (rid, n, seed), n, seed, kind, rid, t0,
                                         state, slow=0.01)
            else:
                body = random.randbytes(random.choice((30000, 150000)))
                raw = req("POST", "/owa/?rid=" + rid, [("Content-Length", str(len(body)))], body)
                for k in range(0, len(raw), 1500):
                    await c.send(raw[k:k + 1500])
                    await asyncio.sleep(0.01 if k > 400 else 0.05)
                resp = await c.head()
                data = await c.body(resp)
                if check_exchange(resp, kind, rid, t0, state) and resp.status == 200:
                    check_json(data, kind, rid, state, sha(body), len(body))
            BOOK.log_expect(rid, "exact", resp.status, resp.origin)
            BOOK.outcome(kind, "ok" if resp.status < 500 else "err", t0, "status %d" % resp.status,
                         [state.get("server")] if state.get("server") else None)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e), [state.get("server")] if state.get("server") else None)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e), [state.get("server")] if state.get("server") else None)
        finally:
            if c:
                c.close()


# Malformed requests: (name, bytes with RID in place of the request id). exrelay must answer
# with its own 4xx/5xx (501 for an unknown transfer coding, 505 for HTTP/2) and close, or close
# without an answer; never pass them on.
MALFORMED = [
    ("cl_te", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ("bad_cl", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5x\r\n\r\nhello"),
    ("two_cl", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
    ("obs_fold", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n"),
    ("space_colon", b"GET /owa/?rid=RID HTTP/1.1\r\nHost : a\r\n\r\n"),
    ("nul", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-A: b\x00c\r\n\r\n"),
    ("no_host", b"GET /owa/?rid=RID HTTP/1.1\r\n\r\n"),
    ("two_hosts", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ("te_gzip", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("bad_chunk", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
    ("slash_escape", b"GET /owa/..%2F..%2Fetc/passwd?rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("dotdot_root", b"GET /../../owa/?rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("proxyshell", b"GET /autodiscover/autodiscover.json?@evil.com/owa/&Email=autodiscover/autodiscover.json%3F@evil.com&rid=RID HTTP/1.1\r\nHost: a\r\n\r\n"),
    ("huge_head", b"GET /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nX-Big: " + b"x" * 70000 + b"\r\n\r\n"),
    ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03RID garbage\r\n\r\n"),
    ("h2_preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nRID"),
    ("bare_lf_chunk", b"POST /owa/?rid=RID HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"),
]


async def malformed_loop(w, i):
    """Sends malformed requests, one per connection; exrelay must refuse them itself."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        name, raw = random.choice(MALFORMED)
        kind = "bad_" + name
        rid = BOOK.rid("malformed")
        BOOK.req[kind] += 0
        t0 = time.monotonic()
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            await c.send(raw.replace(b"RID", rid.encode()))
            try:
                resp = await c.head(15)
            except Cut:
                resp = None
            if resp is not None:
                if resp.origin != "relay" or resp.status < 400:
                    BOOK.fail("malformed_passed", "%s %s: %d from %s" % (name, rid, resp.status, resp.origin))
                elif not await c.closed(15):
                    # a 4xx that keeps the connection must at least be complete and well-framed
                    if resp.h("connection") == "close" or name in ("cl_te", "bad_cl", "two_cl", "bad_chunk",
                                                                   "te_gzip", "huge_head", "garbage", "bare_lf_chunk"):
                        BOOK.fail("no_close", "%s %s: %d and the connection stayed open" % (name, rid, resp.status))
            BOOK.outcome("malformed", "ok", t0)
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome("malformed", "err", t0, "%s: %s %s: %s" % (type(e).__name__, name, rid, e))
        finally:
            if c:
                c.close()
        await asyncio.sleep(random.uniform(0.05, 0.3))


async def reset_loop(w, i):
    """Clients that reset: mid request body (the stand-in must see the body cut) and mid
    response body."""
    await asyncio.sleep(random.uniform(0, 2))
    while w.on():
        mid_request = random.random() < 0.6
        kind = "reset_request" if mid_request else "reset_response"
        rid = BOOK.rid(kind)
        t0 = time.monotonic()
        BOOK.log_expect(rid, "atmost")
        c = None
        try:
            c = await Client.open(w.s.hport)
            if mid_request:
                total = 1 << 20
                await c.send(req("POST", "/owa/?rid=" + rid, [("Content-Length", str(total))]))
                await c.send(random.randbytes(random.randint(1, 300) * 1000))
                await asyncio.sleep(random.uniform(0.05, 0.5))
                BOOK.cuts.append((rid, total))
            else:
                await c.send(req("GET", "/owa/?rid=%s&len=%d" % (rid, 8 << 20)))
                resp = await c.head()
                await c.exactly(random.randint(1, 200) * 1000 if resp.status == 200 else 0)
            c.reset()
            c = None
            BOOK.outcome(kind, "ok", t0)
        except Cut as e:
            BOOK.outcome(kind, "cut", t0, str(e))
        except (OSError, asyncio.TimeoutError, ValueError) as e:
            BOOK.outcome(kind, "err", t0, "%s: %s" % (type(e).__name__, e))
        finally:
            if c:
                c.close()
        await asyncio.sleep(random.uniform(0.1, 0.5))


async def probe(s, what):
    """One request on a new connection: the X-Soak-Config the stand-in received (None on error)."""
    rid = BOOK.rid("probe")
    BOOK.log_expect(rid, "atmost")
    c = None
    try:
        c = await Client.open(s.hport)
        await c.send(req("GET", "/owa/?rid=" + rid, [("Connection", "close")]))
        resp = await c.head()
        data = await c.body(resp)
        BOOK.log_expect(rid, "exact", resp.status, resp.origin)
        if resp.status != 200 or resp.origin not in NAMES:
            return None
        hs = {k.lower(): v for k, v in json.loads(data)["headers"]}
        return hs.get("x-soak-config")
    except (OSError, asyncio.TimeoutError, ValueError, Cut) as e:
        if not BOOK.disturbed(time.monotonic() - 5, time.monotonic()):
            BOOK.fail("probe", "%s: %s: %s" % (what, type(e).__name__, e))
        return None
    finally:
        if c:
            c.close()
