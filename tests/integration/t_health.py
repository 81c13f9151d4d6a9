#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_health.py: exrelay's active health checks (relay/health.c), TAP.

Small HTTP servers of the test's own answer Exchange's per-virtual-directory health pages
(`/rpc/healthcheck.htm`, `/owa/healthcheck.htm`, ...) with statuses the test switches (the
Exchange stand-in has no switchable health pages yet). Checked, through exrelay's log lines:
- the checks' requests (`GET /<vdir>/healthcheck.htm`, Host, User-Agent, Connection: close);
- a server whose /owa page turns 503 goes DOWN for owa after `fall` checks and UP again after
  `rise` 200s, while its rpc stays up;
- a server that accepts and never answers is DOWN (L7TOUT), a refused one DOWN (L4CON);
- `path = "/check"`: one check per server, behind a plain PROXY v2 LOCAL header; a 404 is
  DOWN (L7STS 404), an answer that is not HTTP DOWN (L7RSP);
- TLS checks with verification against the test CA, behind a PROXY v2 LOCAL header; a
  self-signed server is DOWN (L6RSP);
- one check in flight per server at most, even when a health page answers slower than the interval;
- a reload adding a server starts checking it, a removed one stops being checked, and a
  server's health survives the reload; a reload without checks stops the checker;
- reloads in a row that renumber a server's protocols while its checks are in flight keep
  each protocol's state (the checker reports by protocol name, under servers.c's lock).
Intervals are 0.2 s; every wait polls.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_health.py
"""

import os
import socket
import ssl
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import CA, cert, run_checks, ok, is_, start_exrelay, free_port, wait_for  # noqa: E402

T0 = time.monotonic()
PP2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


class HealthServer:
    """A threaded HTTP/1.1 server for health pages: .status[path] (404 when absent) and
    .delay[path] (seconds before answering) are switched by the test; it records each request
    (.hits: (path, headers) tuples), the PROXY v2 commands seen, and the most connections it
    had open at once before answering (.max_active). With `tls`, a (cert, key) pair; with
    `proxy`, each connection starts with a PROXY v2 header (before TLS)."""

    def __init__(self, tls=None, proxy=False, pages=("rpc", "owa")):
        self.status = {"/%s/healthcheck.htm" % p: 200 for p in pages}
        self.delay = {}
        self.hits, self.pp_commands = [], []
        self.active = self.max_active = 0
        self.lock = threading.Lock()
        self.proxy = proxy
        self.ctx = None
        if tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(*tls)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def count(self, path=None, status=None):
        """Requests for path (any, when None) answered with status (any, when None)."""
        with self.lock:
            return sum(1 for p, _, st in self.hits if (path is None or p == path) and (status is None or st == status))

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _read_pp2(self, c):
        head = b""
        while len(head) < 16:
            piece = c.recv(16 - len(head))
            if not piece:
                raise OSError("closed in the PROXY header")
            head += piece
        if head[:12] != PP2_SIG:
            raise OSError("no PROXY v2 signature")
        rest = int.from_bytes(head[14:16], "big")
        while rest > 0:
            rest -= len(c.recv(rest))
        with self.lock:
            self.pp_commands.append(head[12] & 0x0f)

    def _serve(self, c):
        answered = False
        try:
            c.settimeout(5)
            if self.proxy:
                self._read_pp2(c)
            if self.ctx:
                c = self.ctx.wrap_socket(c, server_side=True)
            data = b""
            while b"\r\n\r\n" not in data:
                piece = c.recv(4096)
                if not piece:
                    return
                data += piece
            lines = data.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            path = lines[0].split(" ")[1]
            headers = dict((k.strip().lower(), v.strip()) for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l))
            status = self.status.get(path, 404)
            if self.delay.get(path):
                time.sleep(self.delay[path])
            with self.lock:
                self.hits.append((path, headers, status))
                self.active -= 1     # before the answer: the checker may connect again once it has it
                answered = True
            if isinstance(status, bytes):       # not HTTP at all
                c.sendall(status)
                return
            body = b"<html>ok</html>" if status == 200 else b"unhealthy"
            c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                      % (status, len(body), body))
        except (OSError, ssl.SSLError, ValueError, IndexError):
            pass
        finally:
            if not answered:
                with self.lock:
                    self.active -= 1
            try:
                c.close()
            except OSError:
                pass


class HangServer:
    """Accepts connections and never answers (they stay open until the peer closes)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._hold, args=(c,), daemon=True).start()

    @staticmethod
    def _hold(c):
        try:
            while c.recv(4096):
                pass
        except OSError:
            pass
        c.close()


ex1, ex2, ex3 = HealthServer(), HealthServer(), HealthServer()
ex2.delay["/rpc/healthcheck.htm"] = 0.3     # slower than the interval: the budget holds
t1 = HealthServer(tls=cert("mail-ecdsa"), proxy=True, pages=("ews",))
selfsigned = HealthServer(tls=cert("selfsigned"), proxy=True, pages=("ews",))
hang = HangServer()
p1 = HealthServer(proxy=True, pages=())
p1.status["/check"] = 200
REFUSED = free_port()

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 1; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = (
  { name = "exchange"; servers = (
%(exchange)s
    );
    check = { interval = 0.2; timeout = 1; rise = 2; fall = 3; }; },
  { name = "dead"; servers = ( { name = "hang"; address = "127.0.0.1:%(hang)d"; },
      { name = "refused"; address = "127.0.0.1:%(refused)d"; } );
    check = { interval = 0.2; timeout = 0.3; rise = 1; fall = 2; path = "/"; }; },
  { name = "secure"; send_proxy = "v2"; tls = { verify = true; ca_file = "%(ca)s"; };
    servers = ( { name = "t1"; address = "127.0.0.1:%(t1)d"; }, { name = "self"; address = "127.0.0.1:%(self)d"; } );
    check = { interval = 0.2; timeout = 1; rise = 1; fall = 2; }; },
  { name = "plainpp"; send_proxy = "v2"; servers = ( { name = "p1"; address = "127.0.0.1:%(p1)d"; } );
    check = { interval = 0.2; timeout = 1; rise = 1; fall = 1; path = "/check"; }; }
);
routes = (
  { backend = "exchange"; paths = [ "/rpc", "/owa" ]; },
  { backend = "dead"; paths = [ "/dead" ]; },
  { backend = "secure"; paths = [ "/ews" ]; },
  { backend = "plainpp"; paths = [ "/p" ]; }
);
'''


def config(servers):
    return CONFIG % dict(exchange=",\n".join('    { name = "%s"; address = "127.0.0.1:%d"; }' % (n, s.port)
                                             for n, s in servers),
                         hang=hang.port, refused=REFUSED, ca=CA, t1=t1.port, self=selfsigned.port, p1=p1.port)


relay = start_exrelay(config([("ex1", ex1), ("ex2", ex2)]))


def log_count(text):
    return relay.stderr_text().count(text)


def wait_log(text, count=1, timeout=10.0):
    """Waits until exrelay's log has `text` at least `count` times."""
    return wait_for(lambda: log_count(text) >= count, timeout)


RPC, OWA, EWS = "/rpc/healthcheck.htm", "/owa/healthcheck.htm", "/ews/healthcheck.htm"


def check_requests():
    ok(wait_for(lambda: ex1.count(RPC) >= 2 and ex1.count(OWA) >= 2 and ex2.count(OWA) >= 2, 10),
       "every protocol of every server is checked: GET /rpc/healthcheck.htm and /owa/healthcheck.htm")
    with ex1.lock:
        paths = {p for p, _, _ in ex1.hits}
        _, h, _ = ex1.hits[0]
    is_(paths, {RPC, OWA}, "only the health pages of the routes' virtual directories are asked for")
    is_((h.get("host"), h.get("user-agent"), h.get("connection")), ("127.0.0.1", "exrelay-health", "close"),
        "Host is the server's host, User-Agent exrelay-health, Connection: close")
    is_(log_count("protocol rpc is DOWN") + log_count("protocol owa is DOWN"), 0, "healthy servers stay UP")


def check_owa_down_and_up():
    ex1.status[OWA] = 503
    down = "server exchange/ex1 protocol owa is DOWN (L7STS 503)"
    ok(wait_log(down), "a 503 on /owa/healthcheck.htm: '%s' logged" % down)
    n503 = ex1.count(OWA, 503)
    ok(n503 >= 3, "DOWN after fall = 3 failed checks (%d answered 503 when it was logged)" % n503)
    is_(log_count("server exchange/ex1 protocol rpc is DOWN"), 0, "rpc of the same server stays UP")
    ok(wait_for(lambda: ex1.count(OWA, 503) >= n503 + 2 and ex1.count(RPC) >= 6, 10), "checks go on while DOWN")
    is_(log_count("server exchange/ex1 protocol owa is UP"), 0, "no UP while the page answers 503")

    ex1.status[OWA] = 200
    n200 = ex1.count(OWA, 200)
    up = "server exchange/ex1 protocol owa is UP (L7OK 200)"
    ok(wait_log(up), "the page answers 200 again: '%s' logged" % up)
    got = ex1.count(OWA, 200) - n200
    ok(got >= 2, "UP after rise = 2 good checks (%d answered 200 when it was logged)" % got)


def check_timeout_and_refused():
    for line in ("server dead/hang protocol * is DOWN (L7TOUT)",
                 "server dead/refused protocol * is DOWN (L4CON)"):
        ok(wait_log(line), "'%s' logged" % line)
    ok(hang.accepted >= 2, "the silent server's connections were accepted (%d)" % hang.accepted)


def check_path():
    ok(wait_for(lambda: p1.count("/check", 200) >= 2, 10), "path = \"/check\": GET /check")
    with p1.lock:
        cmds, paths = set(p1.pp_commands), {p for p, _, _ in p1.hits}
    is_((cmds, paths), ({0}, {"/check"}), "only /check, each behind a PROXY v2 LOCAL header (no TLS)")
    del p1.status["/check"]
    line = "server plainpp/p1 protocol * is DOWN (L7STS 404)"
    ok(wait_log(line), "'%s' logged" % line)
    p1.status["/check"] = 200
    ok(wait_log("server plainpp/p1 protocol * is UP (L7OK 200)"), "UP again on 200")
    p1.status["/check"] = b"SSH-2.0-OpenSSH_9.2\r\n"
    line = "server plainpp/p1 protocol * is DOWN (L7RSP)"
    ok(wait_log(line), "an answer that is not HTTP: '%s' logged" % line)


def check_tls():
    ok(wait_for(lambda: t1.count(EWS, 200) >= 2, 10), "TLS checks with verification reach the TLS server")
    with t1.lock:
        cmds = set(t1.pp_commands)
        host = t1.hits[0][1].get("host")
    is_(cmds, {0}, "each TLS check starts with a PROXY v2 LOCAL header (send_proxy)")
    is_(host, "127.0.0.1", "Host of a TLS check without sni: the server's host")
    is_(log_count("server secure/t1 protocol ews is DOWN"), 0, "the TLS server verified by the test CA is UP")
    line = "server secure/self protocol ews is DOWN (L6RSP)"
    ok(wait_log(line), "a self-signed server fails verification: '%s' logged" % line)
    t1.status[EWS] = 503
    line = "server secure/t1 protocol ews is DOWN (L7STS 503)"
    ok(wait_log(line), "503 over TLS: '%s' logged" % line)
    t1.status[EWS] = 200
    line = "server secure/t1 protocol ews is UP (L7OK 200)"
    ok(wait_log(line), "200 over TLS again: '%s' logged" % line)


def check_budget():
    ok(wait_for(lambda: ex2.count(RPC) >= 6, 15), "a server whose rpc page takes 0.3 s (> interval) is checked")
    for name, s in (("ex1", ex1), ("ex2", ex2), ("t1", t1)):
        is_(s.max_active, 1, "%s: at most one check in flight at a time" % name)
    line = "health check exchange/ex2 rpc: L7OK 200 in 0.3"
    ok(log_count(line) >= 1, "the duration of a check is measured ('%s...')" % line)


def check_reload():
    # ex1's owa goes DOWN again and stays so across the reload: its state is kept by name.
    ex1.status[OWA] = 503
    down = "server exchange/ex1 protocol owa is DOWN (L7STS 503)"
    ok(wait_log(down, 2), "ex1 owa DOWN again before the reload")
    ex3.status[OWA] = 503
    relay.reload(config([("ex1", ex1), ("ex3", ex3)]))
    ok(relay.wait_reloaded(), "reload adding ex3 and removing ex2")
    ok(wait_for(lambda: ex3.count(RPC) >= 1, 10), "the server added by the reload is checked")
    n2 = ex2.count()
    line = "server exchange/ex3 protocol owa is DOWN (L7STS 503)"
    ok(wait_log(line), "'%s' logged" % line)
    ok(wait_for(lambda: ex3.count(RPC) >= 5, 10), "ex3 keeps being checked")
    ok(ex2.count() <= n2 + 1, "the removed server is no longer checked (%d then %d)" % (n2, ex2.count()))
    is_(log_count(down), 2, "ex1's owa stayed DOWN across the reload (no new DOWN after fall checks)")
    is_(log_count("server exchange/ex1 protocol owa is UP"), 1, "and did not come UP")
    is_(log_count("server exchange/ex1 protocol rpc is DOWN"), 0, "ex1's rpc still UP")


def check_reload_without_checks():
    text = config([("ex1", ex1)])
    for part in text.split("check = {")[1:]:
        text = text.replace("check = {" + part.split("};", 1)[0] + "};", "")
    relay.reload(text)
    ok(relay.wait_reloaded(), "reload without any check")
    ok(wait_log("health checks stopped"), "the checker thread stops when no backend has checks")
    n = ex1.count()
    relay.reload(config([("ex1", ex1)]))
    ok(relay.wait_reloaded(), "reload with checks again")
    ok(wait_for(lambda: ex1.count() >= n + 2, 10), "checks start again")


def check_reload_renumbering():
    # ex1's owa is DOWN; the routes swap the order of /rpc and /owa (and add /ecp) at each
    # reload, so the protocols are renumbered while checks run every 0.2 s.
    ex1.status[OWA] = 503
    ex1.status["/ecp/healthcheck.htm"] = 200
    down = "server exchange/ex1 protocol owa is DOWN (L7STS 503)"
    n = log_count(down)
    ok(wait_log(down, n + 1), "ex1 owa DOWN before the reloads")
    swapped = config([("ex1", ex1)]).replace('paths = [ "/rpc", "/owa" ]', 'paths = [ "/owa", "/ecp", "/rpc" ]')
    reloads = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        relay.reload(swapped if reloads % 2 == 0 else config([("ex1", ex1)]))
        if not relay.wait_reloaded():
            break
        reloads += 1
    ok(reloads >= 4, "reloads renumbering the protocols, in a row for 3 s (%d)" % reloads)
    c = ex1.count(RPC)
    ok(wait_for(lambda: ex1.count(RPC) >= c + 3, 10), "checks go on after the reloads")
    is_(log_count("server exchange/ex1 protocol owa is UP"), 1, "ex1's owa stayed DOWN through the renumbering")
    is_(log_count("server exchange/ex1 protocol rpc is DOWN"), 0, "ex1's rpc stayed UP")


run_checks([check_requests, check_owa_down_and_up, check_timeout_and_refused, check_path, check_tls, check_budget,
            check_reload, check_reload_without_checks, check_reload_renumbering], relay=relay, t0=T0)
