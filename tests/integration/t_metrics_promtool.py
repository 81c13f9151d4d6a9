#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_metrics_promtool.py: /metrics passes `promtool check metrics`, and the operator's families
(issue 12, section 3) are there with the right values (TAP).

exrelay with a TLS listener, an admin one, and two backends: "exchange" with three servers in
groups on one stand-in (ex1 ready, ex2 drain, ex3 maint, so every request goes to ex1) and
`check = { interval = 0.2; }` (the metrics must render whether or not the checker runs), and
"apache" with one plain server. Known numbers of requests, one 503 from the backend, one RPC
echo, TLS handshakes full, resumed and failed; then one scrape is linted by promtool (exit 0,
nothing reported) and its samples compared: server state, weight, up per protocol, connection
and error counters, the request histograms' counts, TLS handshakes, build_info against
`exrelay -V`, the process_* families against /proc. Last, the size: 30 servers (8 with a dozen
checked protocols each) give a whole /metrics; 36 (12 of them checked per protocol) pass the
~63 KiB cap (the client's output buffer), so the text is cut on a line, the cut logged, and
promtool still accepts it. promtool missing is a failure, not a skip (contrib/install-deps).
"""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, start_standin, wait_for, exrelay_path  # noqa: E402
from service import spawn_exrelay, admin_get, parse_metrics, metric  # noqa: E402

T0 = time.monotonic()
TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CERT = os.path.join(TESTS, "certs", "mail-ecdsa.pem")
KEY = os.path.join(TESTS, "certs", "mail-ecdsa.test-key.pem")
CA = os.path.join(TESTS, "certs", "ca.pem")
PROMTOOL = shutil.which("promtool") or ("/usr/bin/promtool" if os.path.exists("/usr/bin/promtool") else None)

N_EX = 5        # requests to the exchange route, one connection each (2 of them slow)
N_AP = 4        # requests to the apache route, on one keep-alive connection

ex = start_standin(listens=1)
ap = start_standin(listens=1)
CONFIG = '''global = { workers = 2; drain_timeout = 5; log_level = "info"; };
timeouts = { request_head = 10; client_idle = 30; connect = 3; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); }; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = (
  { name = "exchange"; idle_timeout = 60; check = { interval = 0.2; };
    servers = ( { name = "ex1"; address = "127.0.0.1:%(ex)d"; },
                { name = "ex2"; address = "127.0.0.1:%(ex)d"; weight = 50; state = "drain"; },
                { name = "ex3"; address = "127.0.0.1:%(ex)d"; state = "maint"; } ); },
  { name = "apache"; servers = [ "127.0.0.1:%(ap)d" ]; idle_timeout = 60; } );
routes = (
  { backend = "exchange"; paths = [ "/owa", "/ews", "/rpc" ]; },
  { backend = "apache"; } );
''' % dict(cert=CERT, key=KEY, ex=ex.port, ap=ap.port)

relay = spawn_exrelay(CONFIG)
PUBLIC, ADMIN = relay.port("public"), relay.port("admin")
CTX = ssl.create_default_context(cafile=CA)
CTX.check_hostname = False
hs = {"full": 0, "resumed": 0, "failed": 0}


def tls_conn(session=None):
    """A TLS connection to the public listener; counts its handshake as the client saw it."""
    raw = socket.create_connection(("127.0.0.1", PUBLIC), timeout=10)
    s = CTX.wrap_socket(raw, server_hostname="mail.example.com", session=session)
    hs["resumed" if s.session_reused else "full"] += 1
    return s


def request(s, method, target, body=b"", close=True):
    """Sends one request on s and reads the response (to EOF when close); returns (status, raw)."""
    head = "%s %s HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: %d\r\n%s\r\n" % (
        method, target, len(body), "Connection: close\r\n" if close else "")
    s.sendall(head.encode() + body)
    data = b""
    while True:
        piece = s.recv(65536)
        if not piece:
            break
        data += piece
        if not close and b"\r\n\r\n" in data:
            h, _, rest = data.partition(b"\r\n\r\n")
            n = [int(l.split(b":")[1]) for l in h.split(b"\r\n") if l.lower().startswith(b"content-length:")]
            if n and len(rest) >= n[0]:
                break
    return int(data.split(b" ", 2)[1]), data


def scrape():
    status, body = admin_get(ADMIN, "/metrics", timeout=10)
    if status != 200:
        raise ValueError("/metrics answered %d" % status)
    return body.decode()


def promtool(text, what):
    """promtool check metrics on text: exit 0 and nothing reported."""
    if not ok(PROMTOOL is not None, "%s: promtool is installed (contrib/install-deps: prometheus)" % what):
        return
    p = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    out = (p.stdout + p.stderr).decode(errors="replace").strip()
    ok(p.returncode == 0 and out == "", "%s: promtool check metrics: exit %d, %s" % (
        what, p.returncode, "no problems" if not out else "reported problems"))
    if out:
        diag(out[:3000])


def types(text):
    return {l.split()[2]: l.split()[3] for l in text.splitlines() if l.startswith("# TYPE ")}


# ----------------------------------------------------------------------------------------------

before = {}


def check_drive():
    """The requests, handshakes and failures the rest compares against."""
    before.update(parse_metrics(scrape()))
    first = None
    for i in range(N_EX):
        s = tls_conn(first)
        status, _ = request(s, "GET", "/owa/page%d%s" % (i, "?sleep=0.3" if i < 2 else ""))
        is_(status, 200, "exchange request %d: 200" % i)
        if first is None:
            first = s.session
        s.close()
    s = tls_conn()
    status, _ = request(s, "GET", "/ews/exchange.asmx?status=503")
    s.close()
    is_(status, 503, "exchange request with the backend's 503")
    s = tls_conn()
    status, _ = request(s, "RPC_IN_DATA", "/rpc/rpcproxy.dll?ex1:6001", b"x" * 8)
    s.close()
    is_(status, 200, "RPC echo (RPC_IN_DATA, 8 bytes): 200")
    s = tls_conn()
    for i in range(N_AP):
        status, _ = request(s, "GET", "/index%d.html" % i, close=i == N_AP - 1)
        is_(status, 200, "apache request %d on one connection: 200" % i)
    s.close()
    bad = socket.create_connection(("127.0.0.1", PUBLIC), timeout=10)
    hs["failed"] += 1
    bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")     # not a ClientHello
    try:
        bad.recv(100)
    except OSError:
        pass        # a reset is fine: the handshake failed
    bad.close()
    ok(hs["resumed"] >= 1, "the client resumed a TLS session (%d of %d)" % (hs["resumed"], hs["full"] + hs["resumed"]))


samples = {}
text = {}


def check_promtool():
    """One scrape, once every connection is closed, linted by promtool."""
    def settled():
        t = scrape()
        s = parse_metrics(t)
        if metric(s, "exrelay_connections_active", listener="public") == 0 and \
                metric(s, "exrelay_server_connections_active", backend="exchange", server="ex1") == 0:
            return t
        return None
    t = wait_for(settled, 15, 0.05)
    ok(t, "connections closed")
    text["t"] = t or scrape()
    samples.update(parse_metrics(text["t"]))
    diag("/metrics: %d bytes, %d samples" % (len(text["t"]), len(samples)))
    promtool(text["t"], "/metrics")


def check_servers():
    s, t = samples, text["t"]
    want_types = {"exrelay_server_up": "gauge", "exrelay_server_state": "gauge", "exrelay_server_weight": "gauge",
                  "exrelay_server_connections_active": "gauge", "exrelay_server_connections_total": "counter",
                  "exrelay_server_errors_total": "counter", "exrelay_server_checks_total": "counter",
                  "exrelay_server_check_duration_seconds": "gauge"}
    ty = types(t)
    is_({k: ty.get(k) for k in want_types}, want_types, "per-server families and their types")
    for srv, state in (("ex1", "ready"), ("ex2", "drain"), ("ex3", "maint")):
        is_({st: metric(s, "exrelay_server_state", backend="exchange", server=srv, state=st)
             for st in ("ready", "drain", "maint")},
            {st: 1.0 if st == state else 0.0 for st in ("ready", "drain", "maint")},
            "server_state of %s: 1 for %s only" % (srv, state))
    is_([metric(s, "exrelay_server_weight", backend="exchange", server=n) for n in ("ex1", "ex2", "ex3")],
        [100.0, 50.0, 100.0], "server_weight: the configured weights")
    is_(metric(s, "exrelay_server_state", backend="apache", server="127.0.0.1:%d" % ap.port, state="ready"), 1.0,
        "a plain server string is a server named by itself")
    ups = {k[1]: v for k, v in s.items() if k[0] == "exrelay_server_up" and ("server", "ex1") in k[1]}
    is_(sorted(dict(l)["protocol"] for l in ups), ["ews", "owa", "rpc"],
        "server_up of a checked Exchange server: one per protocol of its routes")
    ok(all(v in (0.0, 1.0) for v in ups.values()), "server_up is 1 or 0")
    is_(metric(s, "exrelay_server_up", backend="apache", server="127.0.0.1:%d" % ap.port, protocol="all"), 1.0,
        "server_up of an unchecked server: protocol \"all\", 1")
    n_ex = N_EX + 2
    delta = metric(s, "exrelay_server_connections_total", backend="exchange", server="ex1") - \
        metric(before, "exrelay_server_connections_total", backend="exchange", server="ex1")
    is_(delta, n_ex, "server_connections_total of ex1: one backend connection per client connection (%d)" % n_ex)
    is_([metric(s, "exrelay_server_connections_total", backend="exchange", server=n) for n in ("ex2", "ex3")],
        [0.0, 0.0], "server_connections_total: nothing to the drained and the maint server")
    is_(metric(s, "exrelay_server_connections_total", backend="apache", server="127.0.0.1:%d" % ap.port), 1.0,
        "server_connections_total of apache: one keep-alive connection")
    is_(metric(s, "exrelay_server_connections_active", backend="exchange", server="ex1"), 0.0,
        "server_connections_active: 0 once closed")
    is_({k: metric(s, "exrelay_server_errors_total", backend="exchange", server="ex1", kind=k)
         for k in ("connect", "tls", "5xx")}, {"connect": 0.0, "tls": 0.0, "5xx": 1.0},
        "server_errors_total of ex1: the one 503, per kind")
    checks = [k for k in s if k[0] == "exrelay_server_checks_total" and ("server", "ex1") in k[1]]
    is_(sorted(dict(k[1])["result"] for k in checks), ["failed", "ok", "skipped"],
        "server_checks_total: ok, failed and skipped (no local descriptor)")
    durs = [k for k in s if k[0] == "exrelay_server_check_duration_seconds"]
    is_(sorted((dict(k[1])["server"], dict(k[1])["protocol"]) for k in durs if ("server", "ex1") in k[1]),
        [("ex1", "ews"), ("ex1", "owa"), ("ex1", "rpc")], "check_duration_seconds per protocol of a checked server")
    ok(not [k for k in durs if ("backend", "apache") in k[1]], "no check_duration_seconds for an unchecked server")


def hist(s, name, **labels):
    """{le: count} of a histogram series, and its _count and _sum."""
    b = {dict(k[1])["le"]: v for k, v in s.items()
         if k[0] == name + "_bucket" and all((l, labels[l]) in k[1] for l in labels)}
    return b, metric(s, name + "_count", **labels), metric(s, name + "_sum", **labels)


def check_histograms():
    s, t = samples, text["t"]
    ty = types(t)
    for name in ("exrelay_request_first_byte_seconds", "exrelay_request_duration_seconds",
                 "exrelay_rpc_channel_duration_seconds"):
        is_(ty.get(name), "histogram", "%s is a histogram" % name)
    les = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf"]
    n_ex = N_EX + 1         # the 503 too; the RPC echo is not a request here
    for name in ("exrelay_request_duration_seconds", "exrelay_request_first_byte_seconds"):
        b, count, total = hist(s, name, route="exchange")
        is_(sorted(b, key=les.index), les, "%s{route=exchange}: buckets 0.005 .. 10, +Inf" % name)
        is_(count, n_ex, "%s_count{route=exchange}: every request but the RPC one (%d)" % (name, n_ex))
        is_(b.get("+Inf"), count, "%s: +Inf bucket = _count" % name)
        ok(all(b[les[i]] <= b[les[i + 1]] for i in range(len(les) - 1)), "%s: buckets cumulative" % name)
        is_(b.get("0.25", 0), n_ex - 2, "%s: the two ?sleep=0.3 requests above 0.25 s" % name)
        ok(total >= 0.6, "%s_sum >= 2 x 0.3 s (%.3f)" % (name, total))
    b, count, _ = hist(s, "exrelay_request_duration_seconds", route="apache")
    is_(count, N_AP, "request_duration_seconds_count{route=apache}: %d requests" % N_AP)
    is_(count, sum(v for k, v in s.items() if k[0] == "exrelay_requests_total" and ("route", "apache") in k[1]),
        "request_duration_seconds_count{route=apache} = requests_total{route=apache}")
    b, count, _ = hist(s, "exrelay_rpc_channel_duration_seconds", method="RPC_IN_DATA")
    is_(count, 1, "rpc_channel_duration_seconds_count{method=RPC_IN_DATA}: the RPC request")
    is_(sorted(b, key=lambda x: float(x)), ["1", "10", "60", "300", "900", "1800", "3600", "7200", "14400",
                                            "28800", "+Inf"], "rpc_channel_duration_seconds: buckets 1 s .. 8 h")


def check_tls():
    s = samples
    got = {k: metric(s, "exrelay_tls_handshakes_total", listener="public", kind=k) for k in hs}
    is_(got, {k: float(v) for k, v in hs.items()}, "tls_handshakes_total{listener=public}: as the client saw them")
    is_(types(text["t"]).get("exrelay_tls_handshakes_total"), "counter", "tls_handshakes_total is a counter")


def check_build_and_process():
    s, t = samples, text["t"]
    v = subprocess.run([exrelay_path(), "-V"], capture_output=True, text=True, timeout=10).stdout.splitlines()
    want = {"version": v[0].split()[1], "gnutls": v[1].split()[1], "libev": v[2].split()[1],
            "libconfig": v[3].split()[1]}
    bi = [dict(k[1]) for k in s if k[0] == "exrelay_build_info"]
    is_(bi, [want], "build_info labels match exrelay -V")
    is_(metric(s, "exrelay_build_info", **want), 1.0, "build_info is 1")
    fds = len(os.listdir("/proc/%d/fd" % relay.pid))
    ok(0 < metric(s, "process_open_fds") <= fds + 8, "process_open_fds %d (now %d)" % (metric(s, "process_open_fds"), fds))
    ok(metric(s, "process_max_fds") >= metric(s, "process_open_fds"), "process_max_fds >= open fds")
    start = metric(s, "process_start_time_seconds")
    ok(time.time() - 300 < start <= time.time(), "process_start_time_seconds is a recent epoch time (%.0f)" % start)
    ok(metric(s, "process_resident_memory_bytes") > 1 << 20, "process_resident_memory_bytes > 1 MiB")
    ok(metric(s, "process_virtual_memory_bytes") >= metric(s, "process_resident_memory_bytes"), "virtual >= resident")
    ok(metric(s, "process_cpu_seconds_total") > 0, "process_cpu_seconds_total > 0")
    ty = types(t)
    is_([ty.get(n) for n in ("process_cpu_seconds_total", "process_open_fds", "exrelay_build_info")],
        ["counter", "gauge", "gauge"], "process and build_info types")


def big_config(nex, nap):
    """nex Exchange servers checked per protocol (a dozen virtual directories), nap plain ones."""
    routes_ex = ", ".join('"/%s"' % p for p in ("rpc", "rpcwithcert", "owa", "ecp", "ews", "mapi", "autodiscover",
                                                  "oab", "microsoft-server-activesync", "exchange", "exchweb", "public"))
    ex_srv = ", ".join('{ name = "exchange-mbx-%02d"; address = "127.0.0.1:%d"; }' % (i, ex.port) for i in range(nex))
    ap_srv = ", ".join('"127.0.0.%d:%d"' % (i + 1, ap.port) for i in range(nap))
    return """global = { workers = 1; log_level = "info"; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; }, { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = ( { name = "exchange"; check = { interval = 5; }; servers = ( %s ); },
             { name = "apache"; servers = [ %s ]; } );
routes = ( { backend = "exchange"; paths = [ %s ]; }, { backend = "apache"; } );
""" % (ex_srv, ap_srv, routes_ex)


def scrape_big(nex, nap):
    """(status, text, log) of /metrics for big_config(nex, nap) after a request on each route."""
    big = spawn_exrelay(big_config(nex, nap))
    try:
        for target in ("/owa/", "/index.html"):
            with socket.create_connection(("127.0.0.1", big.port("public")), timeout=10) as c:
                request(c, "GET", target)
        status, body = admin_get(big.port("admin"), "/metrics", timeout=10)
        return status, body.decode(), big.stderr_text()
    finally:
        big.stop()


def check_many_servers():
    """30 servers (8 Exchange servers with 12 checked protocols each, 22 plain): whole, promtool-clean."""
    status, t, log = scrape_big(8, 22)
    is_(status, 200, "30 servers: /metrics answers 200")
    diag("30 servers: /metrics is %d bytes (cap 63 KiB)" % len(t))
    ok(t.endswith("\n") and "\nprocess_max_fds " in t, "30 servers: nothing cut (the last family is there)")
    ok("is cut at" not in log, "30 servers: no 'cut' warning in the log")
    is_(len([l for l in t.splitlines() if l.startswith("exrelay_server_up{")]), 8 * 12 + 22,
        "30 servers: server_up for every server and protocol")
    promtool(t, "30 servers")


def check_too_many_servers():
    """Past the cap (12 x 12 protocols + 24): cut on a line, a warning logged, still promtool-clean."""
    status, t, log = scrape_big(12, 24)
    is_(status, 200, "36 servers: /metrics answers 200")
    diag("36 servers: /metrics is %d bytes" % len(t))
    ok(t.endswith("\n") and "\nprocess_max_fds " not in t, "36 servers: cut, on a line boundary")
    ok("/metrics: the answer is cut at" in log, "36 servers: the cut is logged")
    promtool(t, "36 servers, cut")


run_checks([check_drive, check_promtool, check_servers, check_histograms, check_tls, check_build_and_process,
            check_many_servers, check_too_many_servers], relay=relay, t0=T0)
