#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_haproxy.py: a real HAProxy 2.6 in front of exrelay, with the shipped example configurations (TAP).

Topology (loopback only): client (bound to 127.0.0.2) -TLS-> HAProxy -PROXY-> exrelay -> the
Exchange stand-in (X-Forwarded-For) and Apache (PROXY v1, RemoteIPProxyProtocol: REMOTE_ADDR).

HAProxy's configuration is generated FROM contrib/haproxy/haproxy.cfg by replacing its @...@
placeholders (`haproxy -c` must accept it): instance "v2" runs the file as shipped (send-proxy-v2
with proxy-v2-options), instance "v1" the same file with `send-proxy` instead. Each has two
frontends, so the four modes are:
  (1) v1 / mode tcp  (TLS passes through HAProxy to exrelay's TLS listener, PROXY v1)
  (2) v2 / mode tcp  (send-proxy-v2 proxy-v2-options ssl,crc32c,unique-id,authority)
  (3) v2 / mode http (HAProxy ends TLS; SSL TLV -> X-Forwarded-Proto https; option http-no-delay)
  (4) v1 / mode http (HAProxy ends TLS; PROXY v1 -> X-Forwarded-Proto http)
In each: the client address at the stand-in and at Apache (CGI REMOTE_ADDR, access log), a spoofed
X-Forwarded-For replaced, and an RPC over HTTP virtual connection (A1->A3, B1->C2, 100-byte echo, then
the round trip of small PDUs: option http-no-delay at work). A capture server shows the header the
file's send-proxy-v2 line sends (PROXY, TCP4, CRC32C, SSL, UNIQUE_ID TLVs).
Health checks (option httpchk GET /exrelay/health, check-send-proxy, check-ssl) answered by exrelay
itself (UP/L7OK in `show stat`, never seen by a backend; a capture server shows HAProxy's checks
are PROXY v2 LOCAL with TLVs); the agent port (`up ready`); SIGTERM with RPC channels open:
HAProxy shows DRAIN, admin /health 503 draining, the channels keep working, exrelay exits 0.
contrib/apache/exrelay.conf: `apache2 -t` in both variants, and a live Apache run from it
(RemoteIPProxyProtocol, and RemoteIPHeader X-Forwarded-For with -D EXRELAY_XFF) behind exrelay.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_haproxy.py
"""

import json
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, done, skip_all, free_port, start_standin, start_apache, start_exrelay, \
    start_haproxy, tmpdir, wait_for, Process, APACHE_BIN, APACHE_MODULES, HAPROXY_BIN, APACHE_HEAD, apache_root, \
    CA, cert  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOP = os.path.dirname(TESTS)
HAPROXY_CFG = os.path.join(TOP, "contrib", "haproxy", "haproxy.cfg")
APACHE_CFG = os.path.join(TOP, "contrib", "apache", "exrelay.conf")
CLIENT_IP = "127.0.0.2"         # the test client's source address: what every peer must report
ECHO_MAX = 0.08                 # s: a round trip of a small PDU through HAProxy + exrelay + stand-in
SPOOF = "6.6.6.6"               # a client-sent X-Forwarded-For exrelay must replace
V2_OPTS = "send-proxy-v2 proxy-v2-options ssl,crc32c,unique-id,authority"
V2_OPTS_HTTP = "send-proxy-v2 proxy-v2-options ssl,crc32c"

for path in (HAPROXY_BIN, APACHE_BIN):
    if not os.access(path, os.X_OK):
        skip_all("%s is not installed" % path)
try:
    socket.create_connection(("127.0.0.1", 9), timeout=0.1, source_address=(CLIENT_IP, 0)).close()
except ConnectionRefusedError:
    pass
except OSError as e:
    skip_all("cannot bind a client socket to %s: %s" % (CLIENT_IP, e))


# ----------------------------------------------------------------------------------------------
# contrib/apache/exrelay.conf: apache2 -t, and live instances built from it
# ----------------------------------------------------------------------------------------------

APACHE_MIN = "# minimal server config around contrib/apache/exrelay.conf (t_haproxy.py)\n" + APACHE_HEAD + '''\
LoadModule remoteip_module {mods}/mod_remoteip.so
StartServers 1
ServerLimit 2
ThreadsPerChild 10
MaxRequestWorkers 20
ErrorLog "{root}/logs/error.log"
Include "{root}/exrelay.conf"
'''


def contrib_apache_root(port):
    """A temp ServerRoot holding the minimal config and contrib/apache/exrelay.conf with its
    Listen/VirtualHost address moved to 127.0.0.1:port. Returns (root, conf path, env)."""
    root, user_group = apache_root("exrelay-apache-contrib-")
    with open(APACHE_CFG) as f:
        text = f.read()
    with open(os.path.join(root, "exrelay.conf"), "w") as f:
        f.write(text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port))
    conf = os.path.join(root, "apache2.conf")
    with open(conf, "w") as f:
        f.write(APACHE_MIN.format(root=root, mods=APACHE_MODULES, user_group=user_group))
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "APACHE_LOG_DIR": os.path.join(root, "logs")}
    return root, conf, env


def apache_syntax(defines=()):
    """`apache2 -t` on the minimal config including the contrib file; returns (rc, output)."""
    root, conf, env = contrib_apache_root(8080)
    argv = [APACHE_BIN, "-d", root, "-f", conf, "-t"]
    for d in defines:
        argv += ["-D", d]
    r = subprocess.run(argv, capture_output=True, env=env, timeout=20, stdin=subprocess.DEVNULL)
    return r.returncode, (r.stdout + r.stderr).decode("utf-8", "replace")


def start_contrib_apache(port, xff=False, timeout=15.0):
    """Runs Apache from contrib/apache/exrelay.conf on 127.0.0.1:port (-D EXRELAY_XFF when xff).
    Ready: a request (PROXY-prefixed unless xff) gets an HTTP status line. Returns the Process
    with .log (the vhost's access log path)."""
    root, conf, env = contrib_apache_root(port)
    argv = [APACHE_BIN, "-d", root, "-f", conf, "-DFOREGROUND"] + (["-D", "EXRELAY_XFF"] if xff else [])
    p = Process("apache2-contrib" + ("-xff" if xff else ""), argv, root, env=env)
    p.log = os.path.join(root, "logs", "exrelay-access.log")
    p.error_log = os.path.join(root, "logs", "exrelay-error.log")

    def answers():
        """True when Apache answers a probe (which is then dropped from the log count)."""
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            req = b"GET /contrib-ready HTTP/1.0\r\n\r\n"
            s.sendall((b"" if xff else b"PROXY TCP4 127.0.0.9 127.0.0.1 1 %d\r\n" % port) + req)
            return s.recv(16).startswith(b"HTTP/1.1 ")
    if not wait_for(lambda: not p.alive() or answers(), timeout) or not p.alive():
        raise RuntimeError("contrib Apache did not start: %s" % p.stderr_text()[-2000:])
    return p


def check_apache_syntax():
    """`apache2 -t` accepts contrib/apache/exrelay.conf in a minimal config, in both variants."""
    rc, out = apache_syntax()
    ok(rc == 0 and "Syntax OK" in out, "contrib/apache/exrelay.conf: apache2 -t accepts it (RemoteIPProxyProtocol)")
    if rc:
        diag(out)
    rc, out = apache_syntax(["EXRELAY_XFF"])
    ok(rc == 0 and "Syntax OK" in out,
       "contrib/apache/exrelay.conf: apache2 -t -D EXRELAY_XFF accepts it (RemoteIPHeader)")
    if rc:
        diag(out)


def log_lines(path):
    """Complete lines of a log file (empty list while it does not exist)."""
    try:
        with open(path, encoding="latin-1") as f:
            return [line.rstrip("\n") for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


# ----------------------------------------------------------------------------------------------
# Peers and exrelay
# ----------------------------------------------------------------------------------------------

# Pings every second on OUT channels, as Exchange does (less often): in mode http HAProxy notices
# that a client closed an OUT channel (a response in progress) only when it next writes to it, so
# without them a closed channel would live on between HAProxy and exrelay until `timeout client`.
PING = rpch.ping_pdu()
ex = start_standin(ping_interval=1)
ap = start_apache(free_port(), proxy_protocol=True)
AP_PP_PORT, AP_XFF_PORT = free_port(), free_port()
ap_pp = start_contrib_apache(AP_PP_PORT)
ap_xff = start_contrib_apache(AP_XFF_PORT, xff=True)


ECDSA = cert("mail-ecdsa")
DRAIN_TIMEOUT = 20

EXRELAY_CONF = '''
global = { log_level = "debug"; drain_timeout = %(drain)d; };
timeouts = { proxy_header = 5; tls_handshake = 5; request_head = 10; client_idle = 30; connect = 3; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32" ];
    health_path = "/exrelay/health";
    tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); }; },
  { name = "plain"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32" ];
    health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60; },
  { name = "contrib_pp"; servers = [ "127.0.0.1:%(pport)d" ]; send_proxy = "v1"; idle_timeout = 60; },
  { name = "contrib_xff"; servers = [ "127.0.0.1:%(xport)d" ]; send_proxy = "off"; idle_timeout = 60; } );
routes = (
  { backend = "exchange"; paths = [ "/rpc", "/owa" ]; },
  { backend = "contrib_pp"; paths = [ "/contrib-pp" ]; },
  { backend = "contrib_xff"; paths = [ "/contrib-xff" ]; },
  { backend = "apache"; } );
'''
relay = start_exrelay(EXRELAY_CONF % dict(drain=DRAIN_TIMEOUT, cert=ECDSA[0], key=ECDSA[1], sport=ex.port,
                                          aport=ap.port, pport=AP_PP_PORT, xport=AP_XFF_PORT))
ETLS, EPLAIN, ADMIN, AGENT = (relay.port(n) for n in ("tls", "plain", "admin", "agent"))


# ----------------------------------------------------------------------------------------------
# A capture server: what HAProxy's checks send (PROXY v2 LOCAL + TLVs), answered 200
# ----------------------------------------------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
captured = []           # first bytes of each check connection


def capture_server():
    """Listens on a free port; each connection: read the PROXY header and the request head,
    record the bytes, answer 200. Returns the port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)

    def serve(c):
        """One check connection (bounded reads with a deadline)."""
        with c:
            c.settimeout(3)
            data = b""
            try:
                for _ in range(64):
                    if b"\r\n\r\n" in data[16:] or len(data) > 8192:
                        break
                    got = c.recv(4096)
                    if not got:
                        break
                    data += got
                captured.append(data)
                c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nok\n")
            except OSError:
                captured.append(data)

    def loop():
        """Accept loop (daemon thread; dies with the test)."""
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=serve, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


CAPTURE = capture_server()


def parse_v2(data):
    """Parses a PROXY v2 header: (command, family, {tlv type: value}) or None."""
    if not data.startswith(V2_SIG) or len(data) < 16:
        return None
    ver_cmd, fam, length = data[12], data[13], struct.unpack(">H", data[14:16])[0]
    body = data[16:16 + length]
    alen = {0x11: 12, 0x21: 36, 0x31: 216}.get(fam, 0)
    pos, tlvs = alen, {}
    while pos + 3 <= len(body):
        t, n = body[pos], struct.unpack(">H", body[pos + 1:pos + 3])[0]
        tlvs[t] = body[pos + 3:pos + 3 + n]
        pos += 3 + n
    return ver_cmd & 0x0F, fam, tlvs


# ----------------------------------------------------------------------------------------------
# HAProxy from contrib/haproxy/haproxy.cfg
# ----------------------------------------------------------------------------------------------

with open(HAPROXY_CFG) as f:
    SHIPPED = f.read()
PLACEHOLDERS = sorted(set(re.findall(r"@[A-Z_]+@", SHIPPED)))
diag("placeholders in contrib/haproxy/haproxy.cfg: %s" % " ".join(PLACEHOLDERS))
HDIR = tmpdir("exrelay-haproxy-pem-")
PEM = os.path.join(HDIR, "mail-ecdsa-with-key.pem")
with open(PEM, "w") as out:
    for p in ECDSA:
        with open(p) as f:
            out.write(f.read())


def haproxy_config(ftcp, fhttp, proxy_v1=False):
    """The shipped file with its placeholders replaced (the stats socket in the HAProxy temp dir);
    proxy_v1 turns both send-proxy-v2 server options into `send-proxy`."""
    text = SHIPPED
    for k, v in (("@STATS_SOCKET@", "@HAPROXY_DIR@/haproxy.sock"), ("@FRONT_TCP@", "127.0.0.1:%d" % ftcp),
                 ("@FRONT_HTTP@", "127.0.0.1:%d" % fhttp), ("@CERT@", PEM),
                 ("@EXRELAY_TLS@", "127.0.0.1:%d" % ETLS), ("@EXRELAY_PLAIN@", "127.0.0.1:%d" % EPLAIN),
                 ("@EXRELAY_AGENT_PORT@", str(AGENT))):
        text = text.replace(k, v)
    if proxy_v1:
        text = text.replace(V2_OPTS + " ", "send-proxy ").replace(V2_OPTS_HTTP + " ", "send-proxy ")
    return text


FTCP2, FHTTP2, FTCP1, FHTTP1 = (free_port() for _ in range(4))
# Instance "v2" also gets a capture backend: the http server line, pointed at the capture server.
http_server_line = re.search(r"^\s*server exrelay1 @EXRELAY_PLAIN@ .*$", SHIPPED, re.M).group(0)
capture_backend = "\nbackend be_capture\n    mode http\n    option httpchk GET /exrelay/health\n" + \
    http_server_line.replace("@EXRELAY_PLAIN@", "127.0.0.1:%d" % CAPTURE).split(" agent-check")[0] + "\n"
# ... and a mode tcp frontend whose server is the tcp server line of the file without its checks,
# pointed at the capture server: the exact PROXY v2 header exrelay gets in mode 2.
FCAP = free_port()
tcp_server_line = re.search(r"^\s*server exrelay1 @EXRELAY_TLS@ .*$", SHIPPED, re.M).group(0)
fe_tcp = re.search(r"(?ms)^frontend fe_exrelay_tcp\n.*?(?=^\S|\Z)", SHIPPED).group(0)
capture_backend += fe_tcp.replace("fe_exrelay_tcp", "fe_capture_tcp").replace("@FRONT_TCP@", "127.0.0.1:%d" % FCAP) \
    .replace("be_exrelay_tcp", "be_capture_tcp") + "\nbackend be_capture_tcp\n    mode tcp\n" + \
    tcp_server_line.replace("@EXRELAY_TLS@", "127.0.0.1:%d" % CAPTURE).split(" check")[0] + "\n"
try:
    hv2 = start_haproxy(haproxy_config(FTCP2, FHTTP2) + capture_backend, ports=[FTCP2, FHTTP2, FCAP])
    hv1 = start_haproxy(haproxy_config(FTCP1, FHTTP1, proxy_v1=True), ports=[FTCP1, FHTTP1])
except RuntimeError as e:           # e.g. the shipped file no longer passes `haproxy -c`
    ok(False, "HAProxy runs from contrib/haproxy/haproxy.cfg")
    diag(str(e))
    done()


def check_haproxy_cfg():
    """contrib/haproxy/haproxy.cfg: its placeholders, `haproxy -c` on it, the settings the setup needs,
    and the v1 derivation."""
    is_(PLACEHOLDERS, sorted(["@STATS_SOCKET@", "@FRONT_TCP@", "@FRONT_HTTP@", "@CERT@", "@EXRELAY_TLS@",
                              "@EXRELAY_PLAIN@", "@EXRELAY_AGENT_PORT@"]), "haproxy.cfg: the documented placeholders")
    # `haproxy -c` accepts the shipped file as-is, placeholders replaced.
    chk_dir = tmpdir("exrelay-haproxy-check-")
    chk_cfg = os.path.join(chk_dir, "haproxy.cfg")
    with open(chk_cfg, "w") as f:
        f.write(haproxy_config(free_port(), free_port()).replace("@HAPROXY_DIR@", chk_dir))
    r = subprocess.run([HAPROXY_BIN, "-c", "-f", chk_cfg], capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    ok(r.returncode == 0, "haproxy -c accepts contrib/haproxy/haproxy.cfg (placeholders replaced)")
    if r.returncode:
        diag((r.stdout + r.stderr).decode("utf-8", "replace"))
    ok(SHIPPED.count(V2_OPTS + " ") == 1 and SHIPPED.count(V2_OPTS_HTTP + " ") == 1,
       "haproxy.cfg: one tcp server line with %r, one http server line with %r" % (V2_OPTS, V2_OPTS_HTTP))
    ok(all(re.search(r"^\s*timeout %s 1h\b" % t, SHIPPED, re.M) for t in ("client", "server", "tunnel")) and
       re.search(r"^\s*option http-no-delay", SHIPPED, re.M),
       "haproxy.cfg: timeouts client/server/tunnel 1h, option http-no-delay")
    with open(hv1.config_path) as f:
        lines = re.findall(r"(?m)^\s*server exrelay1 .*$", f.read())
    ok(len(lines) == 2 and all(" send-proxy " in x and "send-proxy-v2" not in x and "proxy-v2-options" not in x
                               for x in lines), "instance v1: both servers use send-proxy (v1)")


MODES = [  # (number, label, HAProxy, front port, expected X-Forwarded-Proto)
    (1, "tcp+v1", hv1, FTCP1, "https"),
    (2, "tcp+v2", hv2, FTCP2, "https"),
    (3, "http+v2", hv2, FHTTP2, "https"),
    (4, "http+v1", hv1, FHTTP1, "http"),
]


# ----------------------------------------------------------------------------------------------
# Client
# ----------------------------------------------------------------------------------------------

CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.load_verify_locations(CA)


class Conn(rpch.HttpConn):
    """rpch.HttpConn over TLS from 127.0.0.2 (the socket is bound before connect)."""

    def __init__(self, port, timeout=10.0):
        """Connects from CLIENT_IP to 127.0.0.1:port and handshakes (SNI mail.example.com)."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(CLIENT_IP, 0))
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = CTX.wrap_socket(raw, server_hostname="mail.example.com")
        self.buf, self.timeout, self.eof = bytearray(), timeout, False


def get(port, target):
    """GET target through HAProxy with a spoofed X-Forwarded-For; returns (status, body bytes)."""
    with Conn(port) as c:
        resp, body = c.request("GET", target, [("Host", "mail.example.com"), ("X-Forwarded-For", SPOOF),
                                               ("X-Forwarded-Proto", "gopher")], timeout=10)
    return resp.status, body


def hdr(info, name):
    """First value of header `name` in the stand-in's JSON echo (None if absent)."""
    for n, v in (info or {}).get("headers", []):
        if n.lower() == name.lower():
            return v
    return None


def rpc(port, label):
    """An RPC over HTTP virtual connection through `port`: A1->A3, B1->C2, a 100-byte echo."""
    try:
        vc = rpch.open_virtual_connection(lambda: Conn(port), timeout=10)
    except Exception as e:
        ok(False, "%s: RPC over HTTP handshake (A1->A3, B1->C2): %s: %s" % (label, type(e).__name__, e))
        return None
    ok(vc.out_response.status == 200, "%s: RPC over HTTP handshake: OUT 200, A3, then C2 after B1" % label)
    paired = ex.wait_event("paired", timeout=5, cookie=vc.cookie.hex())
    conns = {paired[0]["out_conn"], paired[0]["in_conn"]} if paired else set()
    xff = [hdr(e, "X-Forwarded-For") for e in ex.events("request") if e.get("conn") in conns]
    is_(xff, [CLIENT_IP, CLIENT_IP], "%s: both RPC channels reach the stand-in with X-Forwarded-For %s"
        % (label, CLIENT_IP))
    is_(echo(vc), True, "%s: RPC 100-byte echo IN -> OUT" % label)
    if not label.startswith("drain"):
        times = []
        for _ in range(5):
            t = time.monotonic()
            if echo(vc, 20) is not True:
                break
            times.append(time.monotonic() - t)
        median = sorted(times)[len(times) // 2] if len(times) == 5 else None
        ok(median is not None and median < ECHO_MAX, "%s: small PDUs are not held back: echo round trip median "
           "%s ms (< %d ms; HAProxy http mode without option http-no-delay adds 100-250 ms)"
           % (label, "%.1f" % (median * 1000) if median is not None else None, ECHO_MAX * 1000))
    return vc


def echo(vc, n=100, timeout=5.0):
    """Sends n random bytes on IN and reads them back on OUT, dropping the stand-in's 20-byte Ping
    PDUs (whole PDUs, written between echo writes). True, or a description of what came back."""
    payload = os.urandom(n)
    deadline = time.monotonic() + timeout
    buf = b""
    try:
        vc.inn.send(payload)
        while len(buf.replace(PING, b"")) < n:
            buf += vc.out.read_some(timeout=max(0.01, deadline - time.monotonic()))
            if vc.out.eof:
                break
    except Exception as e:
        return "%s after %r" % (e.__class__.__name__, buf)
    return buf.replace(PING, b"") == payload or "got %r" % buf


# ----------------------------------------------------------------------------------------------
# Health checks and agent, before any traffic
# ----------------------------------------------------------------------------------------------

BACKENDS = ("be_exrelay_tcp", "be_exrelay_http")


def checked_up(h, be):
    """The show-stat row once the server is UP with a passing check and agent, else None."""
    row = h.server_stat(be, "exrelay1")
    if row and row["status"] == "UP" and row["check_status"] == "L7OK" and row.get("agent_status") == "L7OK":
        return row
    return None


def check_health_and_agent():
    """httpchk + agent UP/L7OK in show stat, servers state, the checks' PROXY v2 LOCAL + TLVs, the agent line."""
    for h, name in ((hv1, "v1"), (hv2, "v2")):
        for be in BACKENDS:
            row = wait_for(lambda: checked_up(h, be), timeout=8, interval=0.1)
            last = row or h.server_stat(be, "exrelay1") or {}
            ok(row, "HAProxy %s %s: UP, httpchk L7OK, agent L7OK in show stat" % (name, be))
            if not row:
                diag("show stat: %s" % {k: last.get(k) for k in ("status", "check_status", "check_code", "check_desc",
                                                                  "last_chk", "agent_status", "last_agt")})
            else:
                ok(row["check_code"] == "200" and int(row["check_duration"] or 9999) < 500,
                   "HAProxy %s %s: health check got 200 from exrelay in %s ms" % (name, be, row["check_duration"]))
            st = [s for s in h.show_servers_state(be) if s.get("srv_name") == "exrelay1"]
            ok(st and st[0].get("srv_op_state") == "2" and st[0].get("srv_admin_state") == "0",
               "HAProxy %s %s: show servers state: running (op 2), admin state 0" % (name, be))

    # What HAProxy's checks look like on the wire (capture backend, the http server line of the file).
    checks = wait_for(lambda: [c for c in captured if b"GET /exrelay/health" in c], timeout=6) or []
    parsed = [parse_v2(c) for c in checks]
    diag("captured %d check connection(s); first: %r" % (len(checks), checks[0][:120] if checks else None))
    ok(parsed and all(p and p[0] == 0 for p in parsed), "HAProxy's checks with check-send-proxy + send-proxy-v2 "
       "start with a PROXY v2 LOCAL header")
    ok(parsed and parsed[0] and 0x03 in parsed[0][2] and 0x20 in parsed[0][2],
       "... carrying TLVs (CRC32C 0x03, SSL 0x20): the case exrelay's listeners just answered with 200")

    # What exrelay gets in mode 2 (the tcp server line of the file, toward the capture server).
    n0 = len(captured)
    with socket.create_connection(("127.0.0.1", FCAP), timeout=5, source_address=(CLIENT_IP, 0)) as s:
        s.settimeout(5)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        s.recv(64)
    got = wait_for(lambda: [c for c in captured[n0:] if c.endswith(b"GET / HTTP/1.0\r\n\r\n")], timeout=5)
    hdr2 = parse_v2(got[0]) if got else None
    diag("mode 2 traffic header: %r" % (got[0][:200] if got else None))
    ok(hdr2 and hdr2[0] == 1 and hdr2[1] == 0x11 and got[0][16:20] == socket.inet_aton(CLIENT_IP),
       "send-proxy-v2 from the file: PROXY command, TCP4, source %s" % CLIENT_IP)
    ok(hdr2 and 0x03 in hdr2[2] and 0x20 in hdr2[2] and hdr2[2].get(0x05),
       "... with CRC32C, SSL and a non-empty UNIQUE_ID TLV (%r): what exrelay accepts in mode 2"
       % (hdr2[2].get(0x05) if hdr2 else None))

    with socket.create_connection(("127.0.0.1", AGENT), timeout=5) as s:
        s.settimeout(5)
        data = b""
        for _ in range(16):
            got = s.recv(256)
            if not got:
                break
            data += got
    is_(data, b"up ready\n", "agent port: 'up ready\\n', then close")


# ----------------------------------------------------------------------------------------------
# Traffic in the four modes
# ----------------------------------------------------------------------------------------------

def check_modes():
    """The four modes: client address at the stand-in and Apache, X-Forwarded-Proto, RPC over HTTP."""
    for n, label, h, port, proto in MODES:
        tag = "mode %d (%s)" % (n, label)
        # The stand-in: X-Forwarded-For and X-Forwarded-Proto.
        status, body = get(port, "/owa/haproxy-%d" % n)
        try:
            info = json.loads(body)
        except ValueError:
            info = {}
        is_(status, 200, "%s: GET /owa through HAProxy and exrelay to the stand-in" % tag)
        is_(hdr(info, "X-Forwarded-For"), CLIENT_IP, "%s: stand-in sees X-Forwarded-For %s (spoofed one replaced)"
            % (tag, CLIENT_IP))
        is_(hdr(info, "X-Forwarded-Proto"), proto, "%s: stand-in sees X-Forwarded-Proto %s" % (tag, proto))
        # Apache (harness config, RemoteIPProxyProtocol): REMOTE_ADDR and the access log.
        status, body = get(port, "/cgi-bin/echo?mode=%d" % n)
        try:
            info = json.loads(body)
        except ValueError:
            info = {}
        is_((status, info.get("remote_addr")), (200, CLIENT_IP), "%s: Apache CGI REMOTE_ADDR is %s" % (tag, CLIENT_IP))
        line = wait_for(lambda: [x for x in ap.access_log_lines() if "/cgi-bin/echo?mode=%d " % n in x], timeout=5)
        ok(line and line[0].startswith(CLIENT_IP + " 127.0.0.1 "), "%s: Apache access log: %%a %s, peer exrelay"
           % (tag, CLIENT_IP))
        if not line:
            diag(ap.access_log_lines()[-3:])
        # Apache from contrib/apache/exrelay.conf (RemoteIPProxyProtocol On): %a in its access log.
        status, _ = get(port, "/contrib-pp/mode-%d" % n)
        line = wait_for(lambda: [x for x in log_lines(ap_pp.log) if "/contrib-pp/mode-%d " % n in x], timeout=5)
        ok(line and line[0].startswith(CLIENT_IP + " 127.0.0.1 "), "%s: Apache run from contrib/apache/exrelay.conf "
           "(PROXY v1) logs %%a %s (status %d)" % (tag, CLIENT_IP, status))
        if not line:
            diag(log_lines(ap_pp.log)[-3:])
        # RPC over HTTP.
        vc = rpc(port, tag)
        if vc:
            vc.close()

    # The contrib Apache's X-Forwarded-For variant (exrelay send_proxy off), once, through mode 3.
    status, _ = get(FHTTP2, "/contrib-xff/via-header")
    line = wait_for(lambda: [x for x in log_lines(ap_xff.log) if "/contrib-xff/via-header " in x], timeout=5)
    ok(line and line[0].startswith(CLIENT_IP + " 127.0.0.1 "), "contrib/apache/exrelay.conf -D EXRELAY_XFF "
       "(RemoteIPHeader X-Forwarded-For): %%a %s (status %d)" % (CLIENT_IP, status))
    if not line:
        diag(log_lines(ap_xff.log)[-3:])


def check_checks_never_reached_backends():
    """No backend ever saw /exrelay/health; every server is still UP with no failed check."""
    reqs = [e["target"] for e in ex.events("request")]
    ok(not [t for t in reqs if "health" in t], "the stand-in never saw /exrelay/health (%d requests)" % len(reqs))
    alines = ap.access_log_lines() + log_lines(ap_pp.log) + log_lines(ap_xff.log)
    ok(not [x for x in alines if "/exrelay/health" in x], "no Apache access log has /exrelay/health (%d lines)"
       % len(alines))
    for h, name in ((hv1, "v1"), (hv2, "v2")):
        for be in BACKENDS:
            row = h.server_stat(be, "exrelay1") or {}
            ok(row.get("status") == "UP" and row.get("chkfail") == "0",
               "HAProxy %s %s: still UP, no failed check (chkfail %s)" % (name, be, row.get("chkfail")))


# ----------------------------------------------------------------------------------------------
# Drain with RPC channels open
# ----------------------------------------------------------------------------------------------

def check_drain():
    """SIGTERM with RPC channels open: agent drain, HAProxy DRAIN, admin 503, channels work, exit 0."""
    drain_vcs = [(label, rpc(port, "drain: %s" % label)) for _, label, _, port, _ in MODES
                 if label in ("tcp+v2", "http+v2")]
    drain_vcs = [(label, vc) for label, vc in drain_vcs if vc]
    t_sig = time.monotonic()
    relay.send_signal(15)

    def agent_says():
        """One agent reply."""
        with socket.create_connection(("127.0.0.1", AGENT), timeout=2) as s:
            s.settimeout(2)
            return s.recv(64)

    is_(wait_for(lambda: agent_says() == b"drain\n" and b"drain\n", timeout=5), b"drain\n",
        "SIGTERM: the agent port says 'drain\\n'")
    for be in BACKENDS:
        row = wait_for(lambda: (lambda r: r if r and r["status"].startswith("DRAIN") else None)(
            hv2.server_stat(be, "exrelay1")), timeout=5, interval=0.05)
        ok(row, "SIGTERM: HAProxy v2 %s shows DRAIN (%s) after %.1f s" % (
            be, (row or hv2.server_stat(be, "exrelay1") or {}).get("status"), time.monotonic() - t_sig))
    st = [s for s in hv2.show_servers_state("be_exrelay_tcp") if s.get("srv_name") == "exrelay1"]
    ok(st and st[0].get("srv_admin_state") not in (None, "0"), "show servers state: admin state set by the agent (%s)"
       % (st[0].get("srv_admin_state") if st else None))
    try:
        with rpch.HttpConn("127.0.0.1", ADMIN, timeout=5) as c:
            resp, body = c.request("GET", "/health", [("Host", "x")], timeout=5)
        is_((resp.status, body.strip()), (503, b"draining"), "SIGTERM: admin /health 503 draining")
    except Exception as e:
        ok(False, "SIGTERM: admin /health: %s" % e)
    for label, vc in drain_vcs:
        is_(echo(vc), True, "draining: the open RPC channel (%s) still echoes" % label)
    ok(relay.alive(), "draining: exrelay still runs while channels are open")
    for _, vc in drain_vcs:
        vc.close()
    wait_for(lambda: not relay.alive(), timeout=DRAIN_TIMEOUT - 5)
    is_(relay.returncode, 0, "exrelay exits 0 once the channels closed (%.1f s after SIGTERM, drain_timeout %d)"
        % (time.monotonic() - t_sig, DRAIN_TIMEOUT))
    if relay.returncode != 0:
        diag(relay.stderr_text()[-6000:])
    errs = [x for x in relay.stderr_text().splitlines()
            if "Sanitizer" in x or "runtime error" in x or " error: " in x]
    is_(errs, [], "no error-level / sanitizer lines in exrelay's stderr")


run_checks((check_apache_syntax, check_haproxy_cfg, check_health_and_agent, check_modes,
            check_checks_never_reached_backends, check_drain), None, T0)
