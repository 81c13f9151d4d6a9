#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_runtime.py: the runtime API on global.admin_socket, beside a real HAProxy 2.6 (TAP).

exrelay and HAProxy get the same names (frontend/listener `public`, backends `exchange` with
ex1..ex3 and `apache` with ap1, ap2, the same weights; the servers are dead addresses, no
traffic is needed). The same commands go to both sockets through socat: the `show stat` CSV
header, the error texts, the answers of get/set weight, `;`-separated commands and a `prompt`
session must be byte for byte HAProxy's. Then exrelay alone: each command's effect in `show
stat`, `show servers state` and `show info`; one line per connection without `prompt`; a too
long line; a client that does not read does not stall the others; the socket's mode and group;
state set at run time survives a SIGHUP; a new path moves the socket; the socket is removed at
stop.
"""

import grp
import os
import shutil
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, done, skip_all, start_exrelay, start_haproxy, tmpdir, \
    wait_for, free_port  # noqa: E402

if not shutil.which("socat"):
    skip_all("socat is not installed (contrib/install-deps)")

T0 = time.monotonic()
D = tmpdir("exrelay-runtime-")
SOCK = os.path.join(D, "admin.sock")
SOCK2 = os.path.join(D, "admin2.sock")


def pick_group():
    """A group the socket can be given: as root one that is not root's, else one of ours."""
    if os.geteuid() == 0:
        for name in ("adm", "daemon", "nogroup"):
            try:
                return grp.getgrnam(name)
            except KeyError:
                pass
    gids = [g for g in os.getgroups() if g != os.getgid()] or [os.getgid()]
    return grp.getgrgid(gids[0])


GROUP = pick_group()

EXRELAY_CONF = '''global = { workers = 1; drain_timeout = 1;
  admin_socket = { path = "%(sock)s"; mode = "0660"; group = "%(group)s"; }; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; } );
backends = (
  { name = "exchange"; servers = (
      { name = "ex1"; address = "127.0.0.1:9"; weight = 100; },
      { name = "ex2"; address = "127.0.0.1:10"; weight = 50; },
      { name = "ex3"; address = "127.0.0.1:11"; weight = 100; } ); },
  { name = "apache"; servers = (
      { name = "ap1"; address = "127.0.0.1:12"; weight = 100; },
      { name = "ap2"; address = "127.0.0.1:13"; weight = 100; } ); } );
routes = ( { backend = "exchange"; paths = [ "/owa" ]; }, { backend = "apache"; } );
'''

HAPROXY_CONF = '''global
    stats socket @HAPROXY_DIR@/stats.sock level admin
defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend public
    bind 127.0.0.1:%(port)d
    default_backend exchange
backend exchange
    server ex1 127.0.0.1:9 weight 100
    server ex2 127.0.0.1:10 weight 50
    server ex3 127.0.0.1:11 weight 100
backend apache
    server ap1 127.0.0.1:12 weight 100
    server ap2 127.0.0.1:13 weight 100
'''


def socat(path, text, timeout=5):
    """Sends text to the socket through socat (as the HAProxy documentation does); its answer."""
    r = subprocess.run(["socat", "-t", "2", "stdio", "UNIX-CONNECT:" + path], input=text.encode(),
                       capture_output=True, timeout=timeout)
    return r.stdout.decode("utf-8", "replace")


def session(path, steps, timeout=5.0):
    """A socket session: for each (bytes to send, text that ends the expected answer or None for
    the end of the connection), sends and reads; returns the transcript of the answers."""
    out = b""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(path)
        for data, until in steps:
            s.sendall(data)
            got = b""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if until is not None and got.endswith(until.encode()):
                    break
                try:
                    chunk = s.recv(65536)
                except ConnectionResetError:    # closed with our bytes unread
                    chunk = b""
                if not chunk:
                    got += b"<EOF>"
                    break
                got += chunk
            out += got + b"|"
    return out.decode("utf-8", "replace")


relay = start_exrelay(EXRELAY_CONF % {"sock": SOCK, "group": GROUP.gr_name})
hp = start_haproxy(HAPROXY_CONF % {"port": free_port()})
ok(wait_for(lambda: os.path.exists(SOCK), 5), "the admin socket exists")

# --- permissions ------------------------------------------------------------------------------
st = os.stat(SOCK)
ok(stat.S_ISSOCK(st.st_mode), "admin_socket is a Unix socket")
is_(oct(stat.S_IMODE(st.st_mode)), oct(0o660), "its mode is admin_socket.mode (0660): nothing for others")
is_(st.st_gid, GROUP.gr_gid, "its group is admin_socket.group (%s)" % GROUP.gr_name)
is_(st.st_uid, os.geteuid(), "its owner is the user exrelay started as")

# --- the show stat header, byte for byte ------------------------------------------------------
ex_stat = socat(SOCK, "show stat\n")
hp_stat = socat(hp.stats_socket, "show stat\n")
ex_lines, hp_lines = ex_stat.split("\n"), hp_stat.split("\n")
is_(ex_lines[0], hp_lines[0], "`show stat` header line is byte for byte HAProxy 2.6's")
ncols = hp_lines[0].count(",")
ok(all(l.count(",") == ncols for l in ex_lines[1:] if l), "every `show stat` line has the header's %d fields" % ncols)
ok(ex_stat.endswith(",\n\n") and hp_stat.endswith(",\n\n"), "`show stat` ends with an empty line, as HAProxy's")
ex_rows = relay.show_stat()
hp_rows = hp.show_stat()
is_([(r["pxname"], r["svname"], r["type"]) for r in ex_rows],
    [(r["pxname"], r["svname"], r["type"]) for r in hp_rows],
    "the same lines in the same order: FRONTEND (type 0), servers (type 2), BACKEND (type 1)")
for col in ("status", "weight", "act", "bck", "uweight", "addr", "mode", "pid", "sid"):
    is_([(r["svname"], r[col]) for r in ex_rows if r["type"] == "2"],
        [(r["svname"], r[col]) for r in hp_rows if r["type"] == "2"], "servers' %s column as HAProxy's" % col)
is_([r["status"] for r in ex_rows if r["type"] != "2"], [r["status"] for r in hp_rows if r["type"] != "2"],
    "FRONTEND and BACKEND status as HAProxy's (OPEN, UP)")

# --- the same commands, the same answers --------------------------------------------------------
SAME = [
    "disable server exchange", "disable server", "disable server exchange/nope", "disable server nope/ex1",
    "enable server exchange/", "get weight exchange/zz", "get weight exchange/ex1/x", "get weight",
    "get weight exchange/ex2", "set weight exchange/ex1", "set weight exchange/ex1 abc",
    "set weight exchange/ex1 300", "set weight exchange/ex1 -1", "set weight exchange/ex1 12x",
    "set weight exchange/ex1 -5%", "set weight exchange/ex1 12.5", "set server exchange/ex1",
    "set server exchange/ex1 foo", "set server exchange/ex1 state", "set server exchange/ex1 state up",
    "set server exchange/ex1 weight", "set server exchange/ex1 weight 999", "set server exchange",
    "set server", "set server /ex1 state ready", "set server exchange/zz state ready",
    "show servers state nope",
    # successful commands (the same effect on both, checked by the reads that follow)
    "set server exchange/ex2 state drain", "set weight exchange/ex2 50%", "get weight exchange/ex2",
    "set server exchange/ex3 weight 10", "get weight exchange/ex3", "set weight apache/ap2 200%",
    "get weight apache/ap2", "disable server apache/ap1", "enable server apache/ap1",
    "set server exchange/ex3 state maint", "set server exchange/ex3 state ready",
    "get weight exchange/ex1;get weight apache/ap1", "get weight exchange/ex1 ; get weight exchange/zz",
    "get weight exchange/ex1\r", "get   weight\texchange/ex1", "get weight exchange/ex1\\;x",
    "quit;get weight exchange/ex1", "set server exchange/ex1 state drain;set server exchange/ex1 state ready",
]
for cmd in SAME:
    is_(socat(SOCK, cmd + "\n"), socat(hp.stats_socket, cmd + "\n"), "same answer as HAProxy: %r" % cmd)

for cmd in ["show servers state", "show servers state exchange"]:
    ex_s, hp_s = socat(SOCK, cmd + "\n").split("\n"), socat(hp.stats_socket, cmd + "\n").split("\n")
    is_(ex_s[:2], hp_s[:2], "`%s`: format version 1 and HAProxy's header line" % cmd)
    is_([l.split()[1:4] + l.split()[5:9] + l.split()[18:19] for l in ex_s[2:] if l.strip()],
        [l.split()[1:4] + l.split()[5:9] + l.split()[18:19] for l in hp_s[2:] if l.strip()],
        "`%s`: names, ids, op and admin state, weights, port as HAProxy's" % cmd)

# The help and the unknown-command texts: HAProxy's titles and lines, listing exrelay's commands.
hp_help = socat(hp.stats_socket, "help\n").split("\n")
for cmd in ["help", "foo", "show stats", "set wieght exchange/ex1 3", "show", "", ";", "help set"]:
    ex_u, hp_u = socat(SOCK, cmd + "\n").split("\n"), socat(hp.stats_socket, cmd + "\n").split("\n")
    is_(ex_u[0], hp_u[0], "%r: HAProxy's title line" % cmd)
    is_(ex_u[-5:], hp_u[-5:], "%r: ends with HAProxy's help, prompt and quit lines" % cmd)
    ok(all(l in hp_help for l in ex_u if l.startswith("  ")),
       "%r: every command listed is listed as HAProxy lists it" % cmd)
ex_help = socat(SOCK, "help\n")
for c in ["show stat ", "show servers state ", "show info ", "enable server ", "disable server ",
          "get weight ", "set weight ", "set server "]:
    ok("\n  " + c in ex_help, "help lists %r" % c.strip())

# prompt mode: the same transcript as HAProxy's.
steps = [(b"prompt\n", "\n> "), (b"get weight exchange/ex1\n", "\n> "),
         (b"get weight exchange/ex1;get weight apache/ap1\n", "\n\n> 100 (initial 100)\n\n> "),
         (b"set weight exchange/zz 1\n", "\n> "), (b"prompt\n", None)]
# (Compared as one text: where the reads split two answers of one line depends on timing.)
is_(session(SOCK, steps).replace("|", ""), session(hp.stats_socket, steps).replace("|", ""),
    "`prompt` session transcript as HAProxy's")
is_(session(SOCK, [(b"prompt\n", "\n> "), (b"quit\n", None)]), "\n> |<EOF>|", "`quit` ends a prompt session")

# --- exrelay alone: effects ---------------------------------------------------------------------
is_(socat(SOCK, "set server exchange/ex1 state drain\n"), "\n", "set server exchange/ex1 state drain: empty answer")
is_(relay.server_stat("exchange", "ex1")["status"], "DRAIN", "then `show stat` shows ex1 DRAIN")
is_(relay.server_stat("exchange", "ex2")["status"], "DRAIN", "ex2 DRAIN (set earlier)")
socat(SOCK, "set server exchange/ex3 state maint\n")
is_(relay.server_stat("exchange", "ex3")["status"], "MAINT", "set server exchange/ex3 state maint: MAINT")
socat(SOCK, "disable server apache/ap2\n")
is_(relay.server_stat("apache", "ap2")["status"], "MAINT", "disable server apache/ap2: MAINT")
socat(SOCK, "enable server apache/ap2\n")
is_(relay.server_stat("apache", "ap2")["status"], "no check", "enable server apache/ap2: back (no check)")
socat(SOCK, "set weight exchange/ex2 10\n")
is_(relay.server_stat("exchange", "ex2")["weight"], "10", "set weight exchange/ex2 10: `show stat` weight 10")
is_(socat(SOCK, "get weight exchange/ex2\n"), "10 (initial 50)\n\n", "get weight: \"10 (initial 50)\"")
be = relay.server_stat("exchange", "BACKEND")
is_((be["status"], be["act"], be["type"]), ("DOWN", "0", "1"), "exchange BACKEND: DOWN, no usable server, type 1")
state = {r["srv_name"]: r for r in relay.show_servers_state("exchange")}
is_((state["ex1"]["srv_admin_state"], state["ex3"]["srv_admin_state"], state["ex2"]["srv_uweight"],
     state["ex2"]["srv_iweight"]), ("8", "1", "10", "50"),
    "show servers state: drain 8 (FDRAIN), maint 1 (FMAINT), uweight 10, iweight 50")
info = dict(l.split(": ", 1) for l in socat(SOCK, "show info\n").splitlines() if ": " in l)
is_((info.get("Name"), info.get("Pid")), ("exrelay", str(relay.proc.pid)), "show info: Name and Pid")
ok(info.get("Uptime_sec", "x").isdigit() and info.get("Nbthread") == "1" and "CurrConns" in info,
   "show info: Uptime_sec, Nbthread, CurrConns")
ok(socat(SOCK, "show stat json\n").startswith("exrelay answers"), "show stat json: said to be unsupported")

# One line per connection without prompt; a line too long is dropped.
is_(session(SOCK, [(b"get weight exchange/ex1\nget weight exchange/ex2\n", None)]), "100 (initial 100)\n\n<EOF>|",
    "without prompt, one line is answered and the connection closed")
is_(session(SOCK, [(b"x" * 5000, None)]), "<EOF>|", "a line longer than 4 KiB: closed without an answer")
with socket.socket(socket.AF_UNIX) as s:
    s.connect(SOCK)
    s.sendall(b"get weight exchange/ex1")
    s.shutdown(socket.SHUT_WR)
    s.settimeout(5)
    is_(s.recv(100), b"", "a partial line then EOF: closed without an answer, as HAProxy")

# A client that does not read stalls neither the main loop nor the other clients.
slow = socket.socket(socket.AF_UNIX)
slow.connect(SOCK)
slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
slow.sendall(b"prompt\n")
try:
    slow.settimeout(0.5)
    for _ in range(300):
        slow.send(b"show stat\n")
except OSError:
    pass
t = time.monotonic()
is_(socat(SOCK, "get weight exchange/ex1\n"), "100 (initial 100)\n\n", "another client answered while one does not read")
ok(time.monotonic() - t < 2, "... at once (%.2f s)" % (time.monotonic() - t))
slow.close()

# --- reload: run-time state survives; a new path moves the socket -----------------------------
ino = os.stat(SOCK).st_ino
relay.reload()
ok(relay.wait_reloaded(), "SIGHUP reload")
is_(os.stat(SOCK).st_ino, ino, "same path: the socket is kept")
is_((relay.server_stat("exchange", "ex1")["status"], relay.server_stat("exchange", "ex3")["status"],
     relay.server_stat("exchange", "ex2")["weight"]), ("DRAIN", "MAINT", "10"),
    "state and weight set at run time survive the reload")
relay.reload(open(relay.config_path).read().replace(SOCK, SOCK2))
ok(relay.wait_reloaded(), "reload with a new admin_socket path")
ok(wait_for(lambda: os.path.exists(SOCK2) and not os.path.exists(SOCK), 5), "the socket moved to the new path")
relay.stats_socket = SOCK2
is_(relay.server_stat("exchange", "ex1")["status"], "DRAIN", "the new socket answers, state intact")
is_(oct(stat.S_IMODE(os.stat(SOCK2).st_mode)), oct(0o660), "the new socket has the mode too")

# --- the TCP admin socket (admin_socket.bind): loopback by default, else allow_from -----------
def tcp_open(port):
    """True when something accepts on 127.0.0.1:port."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def tcp_command(port, line, timeout=5.0):
    """One command line over TCP; the whole answer until the other side closes ("" if refused)."""
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(line.encode())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not d:
                break
            out += d
    return out.decode("utf-8", "replace")


tport = free_port()
conf = open(relay.config_path).read()
conf_tcp = conf.replace('group = "%s"; }' % GROUP.gr_name, 'group = "%s"; bind = "127.0.0.1:%d"; }' % (GROUP.gr_name, tport))
ok(conf_tcp != conf, "a configuration with admin_socket.bind")
relay.reload(conf_tcp)
ok(relay.wait_reloaded(), "reload adding admin_socket.bind")
ok(wait_for(lambda: tcp_command(tport, "get weight exchange/ex1\n").startswith("100 (initial 100)"), 5),
   "the TCP admin socket answers a loopback client (allow_from defaults to loopback)")
relay.reload(conf_tcp.replace('bind = "127.0.0.1:%d";' % tport, 'bind = "127.0.0.1:%d"; allow_from = [ "10.0.0.0/8" ];' % tport))
ok(relay.wait_reloaded(), "reload with allow_from = 10.0.0.0/8")
is_(tcp_command(tport, "show info\n"), "", "a client outside allow_from is closed without an answer")
ok(wait_for(lambda: "is not in admin_socket.allow_from" in relay.stderr_text(), 5), "... and the refusal is logged")
relay.reload(conf)
ok(relay.wait_reloaded(), "reload without admin_socket.bind")
ok(wait_for(lambda: not tcp_open(tport), 5), "the TCP admin socket is closed again")

# --- stop: the socket is removed ---------------------------------------------------------------
is_(relay.stop(), 0, "exrelay stops (exit 0)")
ok(not os.path.exists(SOCK2), "the socket file is removed at stop")
err = relay.stderr_text()
ok("Sanitizer" not in err and "runtime error" not in err, "no sanitizer report")
if "Sanitizer" in err:
    diag(err[-3000:])
diag("%.1f s" % (time.monotonic() - T0))
done()
