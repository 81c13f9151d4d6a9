# SPDX-License-Identifier: BSD-2-Clause
"""
harness.py: process harness and TAP output for exrelay's Python integration tests.

A test script does:

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
    from harness import *
    ex = start_standin(ping_interval=0)        # Exchange stand-in (tests/standin/exchange.py)
    ap = start_apache(free_port())             # Debian's apache2, unprivileged, in a temp dir (its
                                               # port guessed: the readiness probe needs it up front)
    relay = start_exrelay(config_text)          # listeners bind "127.0.0.1:0"; relay.port("public")
    ok(cond, "name"); is_(got, want, "name"); diag("...")
    done()

Everything started here is registered and stopped at exit (normal exit, exception, SIGTERM,
SIGINT, SIGHUP), each process in its own process group so that nothing outlives the test. Every wait
has a deadline; nothing sleeps a fixed time. Temporary directories are removed at exit unless
EXRELAY_TEST_KEEP=1 is set (their paths are then printed as TAP diagnostics).
"""

import atexit
import json
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

LIB_DIR = os.path.dirname(os.path.abspath(__file__))
TESTS_DIR = os.path.dirname(LIB_DIR)
STANDIN = os.path.join(TESTS_DIR, "standin", "exchange.py")
APACHE_BIN = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
HAPROXY_BIN = "/usr/sbin/haproxy"
CERTS = os.path.join(TESTS_DIR, "certs")
CA = os.path.join(CERTS, "ca.pem")      # the test CA: it signed the test certificates

__all__ = ["hrw_pick", "serve_loopback", "ok", "is_", "diag", "done", "skip_all", "bail_out", "free_port", "wait_port", "wait_for",
           "start_standin", "start_apache", "start_exrelay", "start_haproxy", "exrelay_path", "exrelay_argv", "tmpdir",
           "cleanup"]

# ----------------------------------------------------------------------------------------------
# TAP
# ----------------------------------------------------------------------------------------------

_tap = {"n": 0, "failed": 0}
_tap_lock = threading.Lock()


def _fnv1a(data, h):
    for b in data:
        h = ((h ^ b) * 1099511628211) & (2 ** 64 - 1)
    return h


def _mix(z):
    m = 2 ** 64 - 1
    z = ((z ^ (z >> 30)) * 0xbf58476d1ce4e5b9) & m
    z = ((z ^ (z >> 27)) * 0x94d049bb133111eb) & m
    return z ^ (z >> 31)


def hrw_pick(names, key, weights=None):
    """The index of the server exrelay chooses first for `key` among servers `names` (relay/hrw.c:
    weighted rendezvous hashing; key is the client address text or an RPC cookie's 16 bytes)."""
    import math
    key = key.encode() if isinstance(key, str) else bytes(key)
    weights = weights or [100] * len(names)
    def score(name, w):
        h = _mix(_fnv1a(key, _fnv1a(name.encode() + b"\0", 1469598103934665603)))
        u = ((h >> 11) + 0.5) / 9007199254740992.0
        return -w / math.log(u) if w > 0 else -math.inf
    scores = [score(n, w) for n, w in zip(names, weights)]
    return max(range(len(names)), key=lambda i: scores[i])


def cookie_placed_on(names, name):
    """A fresh random 16-byte RPC cookie (rpch.new_cookie) that hrw_pick places on server `name`
    first among `names`."""
    while True:
        cookie = os.urandom(16)
        if names[hrw_pick(names, cookie)] == name:
            return cookie


def ok(cond, name="", todo=None):
    """Reports one test point (`ok N - name` or `not ok N - name`); returns bool(cond).

    `todo` (a reason) marks a known bug: the line gets a TAP `# TODO reason` directive and a
    failure does not fail the script."""
    with _tap_lock:
        _tap["n"] += 1
        if not cond and not todo:
            _tap["failed"] += 1
        print("%sok %d - %s%s" % ("" if cond else "not ", _tap["n"], name.replace("\n", " "),
                                  " # TODO " + todo.replace("\n", " ") if todo else ""), flush=True)
    return bool(cond)


def is_(got, want, name=""):
    """Test point comparing got == want; on failure prints both as diagnostics."""
    res = ok(got == want, name)
    if not res:
        diag("     got: %r" % (got,))
        diag("expected: %r" % (want,))
    return res


def diag(msg):
    """Prints a diagnostic (`# ...`, one per line) that TAP consumers show but do not count."""
    for line in str(msg).splitlines() or [""]:
        print("# " + line, flush=True)


def done():
    """Prints the plan, cleans up, and exits with 1 if any test point failed (else 0)."""
    print("1..%d" % _tap["n"], flush=True)
    cleanup()
    sys.exit(1 if _tap["failed"] or _tap["n"] == 0 else 0)


def skip_all(reason):
    """Skips the rest of the script: before any test point, prints `1..0 # SKIP reason`; after
    some (a peer found missing midway), one skipped point and the plan, so TAP stays valid.
    Exits 0 unless an earlier point failed."""
    if _tap["n"] == 0:
        print("1..0 # SKIP %s" % reason, flush=True)
        cleanup()
        sys.exit(0)
    with _tap_lock:
        _tap["n"] += 1
        print("ok %d - the rest # SKIP %s" % (_tap["n"], reason.replace("\n", " ")), flush=True)
    done()


def bail_out(reason):
    """Aborts the whole run (`Bail out! reason`), cleaning up first; exits 1."""
    print("Bail out! %s" % reason, flush=True)
    cleanup()
    sys.exit(1)


# ----------------------------------------------------------------------------------------------
# Ports and waiting
# ----------------------------------------------------------------------------------------------

def free_port(host="127.0.0.1"):
    """Returns a TCP port that was free a moment ago (bind port 0, read it, close)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def cert(name):
    """(certificate path, key path) of the test certificate `name` in tests/certs."""
    return os.path.join(CERTS, name + ".pem"), os.path.join(CERTS, name + ".test-key.pem")


def recv_all(s):
    """Everything the socket s receives until the peer closes (bytes)."""
    data = b""
    while True:
        d = s.recv(65536)
        if not d:
            return data
        data += d


def read_head(s, buf=b""):
    """Reads from s until buf (bytes already read) holds a whole head, up to the blank line;
    returns (head, the bytes after it), or (None, buf) when the peer closes first."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(262144)
        if not d:
            return None, buf
        buf += d
    head, rest = buf.split(b"\r\n\r\n", 1)
    return head, rest


def metrics_text(port, timeout=10.0):
    """exrelay's whole /metrics answer (head and body, bytes) from the admin port `port`."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return recv_all(s)


def wait_for(predicate, timeout=10.0, interval=0.02):
    """Polls predicate() every `interval` s until it returns a true value or `timeout` s pass.

    Returns the last value of predicate() (falsy on timeout). Exceptions from the predicate count
    as false while time remains.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except Exception:
            value = None
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_port(host, port, timeout=10.0, alive=None):
    """Polls a TCP connect to host:port every 20 ms until it succeeds or `timeout` s pass.

    `alive`, if given, is a callable that returns False when the process that should open the
    port has died (the wait then ends at once). Returns True when the port accepted.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=max(0.05, deadline - time.monotonic())):
                return True
        except OSError:
            time.sleep(0.02)
    return False


# ----------------------------------------------------------------------------------------------
# Registry of things to clean up
# ----------------------------------------------------------------------------------------------

_started = []           # objects with .stop(), stopped in reverse order
_tmpdirs = []
_cleaned = [False]


def serve_loopback(handler, backlog=64, rcvbuf=None, keep=None):
    """Listens on a free loopback port; each accepted connection runs handler(conn) in a thread
    of its own (an OSError there ends it quietly). rcvbuf sets SO_RCVBUF (accepted sockets inherit
    it); accepted connections are appended to the list `keep` when given, so a test can close
    them. Returns the port; the listening socket is closed at exit."""
    ls = socket.socket()
    if rcvbuf:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ls.bind(("127.0.0.1", 0))
    ls.listen(backlog)
    atexit.register(ls.close)

    def run(c):
        try:
            handler(c)
        except OSError:
            pass

    def loop():
        while True:
            try:
                c, _ = ls.accept()
            except OSError:
                return
            c.settimeout(15)
            if keep is not None:
                keep.append(c)
            threading.Thread(target=run, args=(c,), daemon=True).start()
    threading.Thread(target=loop, daemon=True).start()
    return ls.getsockname()[1]


def tmpdir(prefix="exrelay-test-"):
    """Creates a temporary directory that is removed at exit (kept with EXRELAY_TEST_KEEP=1)."""
    d = tempfile.mkdtemp(prefix=prefix)
    _tmpdirs.append(d)
    return d


def cleanup():
    """Stops everything started (last first) and removes temporary directories. Idempotent."""
    if _cleaned[0]:
        return
    _cleaned[0] = True
    for obj in reversed(_started):
        try:
            obj.stop()
        except Exception as e:          # cleanup must go on
            print("# cleanup: %s: %s" % (type(obj).__name__, e), flush=True)
    keep = os.environ.get("EXRELAY_TEST_KEEP") == "1"
    for d in _tmpdirs:
        if keep:
            print("# kept %s" % d, flush=True)
        else:
            shutil.rmtree(d, ignore_errors=True)


def _on_signal(signum, frame):
    """Signal handler: clean up, then exit with 128+signum."""
    cleanup()
    os._exit(128 + signum)


atexit.register(cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    try:
        signal.signal(_sig, _on_signal)
    except (ValueError, OSError):       # not the main thread / not allowed
        pass


class Process:
    """A child process in its own process group, with stdout/stderr captured to files."""

    def __init__(self, name, argv, workdir, env=None):
        """Starts argv with stdout/stderr going to workdir/NAME.stdout and .stderr."""
        self.name, self.argv, self.workdir = name, argv, workdir
        self.stdout_path = os.path.join(workdir, name + ".stdout")
        self.stderr_path = os.path.join(workdir, name + ".stderr")
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=workdir, env=env, start_new_session=True)
        self.pid = self.proc.pid
        _started.append(self)

    def alive(self):
        """True while the process has not exited."""
        return self.proc.poll() is None

    @property
    def returncode(self):
        """Exit status (None while running; negative: killed by that signal)."""
        return self.proc.poll()

    def send_signal(self, sig):
        """Sends `sig` to the process (not its group)."""
        if self.alive():
            self.proc.send_signal(sig)

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Sends `sig`, waits up to `timeout` s, then SIGKILLs the process group. Returns the
        exit status. Whatever is left in the group (e.g. Apache children) is killed too."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print("# %s (pid %d) ignored signal %d for %.1f s: SIGKILL" % (self.name, self.pid, sig, timeout),
                      flush=True)
        try:
            os.killpg(self.pid, signal.SIGKILL)     # its own group (start_new_session): leftovers
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return self.proc.returncode

    def stderr_text(self):
        """Everything the process wrote to stderr so far."""
        with open(self.stderr_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stdout_text(self):
        """Everything the process wrote to stdout so far."""
        with open(self.stdout_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def rss_kib(self):
        """Resident set size in KiB (VmRSS of /proc/PID/status), or None if it exited."""
        try:
            with open("/proc/%d/status" % self.pid) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None


# ----------------------------------------------------------------------------------------------
# Exchange stand-in
# ----------------------------------------------------------------------------------------------

class Standin(Process):
    """The running stand-in: .port (first listener), .ports, .addrs, .log, .events(), .stop()."""

    def events(self, ev=None, **match):
        """Parses the JSON log; returns events, optionally only those named `ev` whose fields
        equal every keyword given (e.g. events("request", conn="conn-3"))."""
        out = []
        try:
            with open(self.log, encoding="utf-8") as f:
                for line in f:
                    if not line.endswith("\n"):
                        break                    # a line being written
                    e = json.loads(line)
                    if ev is not None and e.get("ev") != ev:
                        continue
                    if all(e.get(k) == v for k, v in match.items()):
                        out.append(e)
        except FileNotFoundError:
            pass
        return out

    def wait_event(self, ev, timeout=10.0, count=1, **match):
        """Waits until at least `count` matching events were logged; returns them (or [])."""
        return wait_for(lambda: (lambda es: es if len(es) >= count else None)(self.events(ev, **match)),
                        timeout) or []

    def url(self, path="/"):
        """http://127.0.0.1:PORT/path of the first listener."""
        return "http://%s%s" % (self.addrs[0], path)

    def control(self, health=None, mode=None, timeout=10.0):
        """Changes the stand-in at run time through its knob file (see the stand-in's header):
        `health` ({vdir: status or "hang"}, "*" for the others) replaces the health pages' answers
        when given, `mode` ("normal", "hang", "blackhole", "refuse") the whole server's. Waits
        until the stand-in logged that it applied this change; returns True (False on timeout)."""
        self.knobs = dict(getattr(self, "knobs", None) or {"health": {}, "mode": "normal", "gen": 0})
        if health is not None:
            self.knobs["health"] = dict(health)
        if mode is not None:
            self.knobs["mode"] = mode
        self.knobs["gen"] += 1
        tmp = self.control_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.knobs, f)
        os.rename(tmp, self.control_path)
        return bool(self.wait_event("control", timeout, gen=self.knobs["gen"]))

    def health_requests(self, vdir=None):
        """The health page requests this stand-in answered (events "health"), of one vdir or all."""
        return self.events("health", **({"vdir": vdir} if vdir else {}))


def start_standin(listens=1, ping_interval=0, notify_interval=30, tls_cert=None, tls_key=None,
                  require_client_cert=None, host="127.0.0.1", timeout=10.0, extra_args=(), name=None):
    """Starts tests/standin/exchange.py on `listens` free ports of `host` and waits until ready.

    Readiness: the port file (written atomically once every socket listens) exists. Connection
    ids in the log therefore start at conn-1 with the test's own first connection. `name` is the
    server name in its health pages and JSON answers. Its knob file is .control_path (use
    .control()). Returns a Standin.
    """
    d = tmpdir("exrelay-standin-")
    log = os.path.join(d, "standin.log")
    port_file = os.path.join(d, "ports")
    control = os.path.join(d, "control.json")
    argv = [sys.executable, STANDIN, "--log", log, "--port-file", port_file, "--control", control,
            "--ping-interval", str(ping_interval), "--notify-interval", str(notify_interval)]
    if name:
        argv += ["--name", name]
    for _ in range(listens):
        argv += ["--listen", "%s:0" % host]
    if tls_cert:
        argv += ["--tls-cert", tls_cert, "--tls-key", tls_key]
    if require_client_cert:
        argv += ["--require-client-cert", require_client_cert]
    argv += list(extra_args)
    p = Standin("standin", argv, d)
    p.log, p.control_path = log, control
    if not wait_for(lambda: os.path.exists(port_file) or not p.alive(), timeout) or not p.alive():
        raise RuntimeError("stand-in did not start: %s" % p.stderr_text()[-2000:])
    with open(port_file) as f:
        p.addrs = [line.strip() for line in f if line.strip()]
    p.ports = [int(a.rsplit(":", 1)[1]) for a in p.addrs]
    p.port = p.ports[0]
    # No probe connection: the port file is written after listen(), and a probe would show up
    # in the log as a connection of its own.
    return p


# ----------------------------------------------------------------------------------------------
# Apache
# ----------------------------------------------------------------------------------------------

# The CGI at /cgi-bin/echo: what Apache received, as JSON (REMOTE_ADDR as mod_remoteip set it).
_ECHO_CGI = r'''#!/usr/bin/python3
# echo CGI for exrelay's tests: REMOTE_ADDR, method, target, HTTP_* headers, body length and sha256.
import hashlib, json, os, sys
h, n = hashlib.sha256(), 0
while True:
    data = sys.stdin.buffer.read(1 << 20)
    if not data:
        break
    h.update(data)
    n += len(data)
out = {
    "remote_addr": os.environ.get("REMOTE_ADDR"),
    "remote_port": os.environ.get("REMOTE_PORT"),
    "method": os.environ.get("REQUEST_METHOD"),
    "uri": os.environ.get("REQUEST_URI"),
    "protocol": os.environ.get("SERVER_PROTOCOL"),
    "https": os.environ.get("HTTPS"),
    "content_length": os.environ.get("CONTENT_LENGTH"),
    "headers": {k[5:].replace("_", "-").title(): v for k, v in os.environ.items() if k.startswith("HTTP_")},
    "body_bytes": n,
    "body_sha256": h.hexdigest(),
}
body = (json.dumps(out, sort_keys=True) + "\n").encode()
sys.stdout.buffer.write(b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
'''

# The start of every private Apache configuration (a template: root, user_group, mods; see apache_root()).
APACHE_HEAD = '''ServerRoot "{root}"
ServerName 127.0.0.1
PidFile "{root}/run/apache2.pid"
DefaultRuntimeDir "{root}/run"
Mutex file:{root}/run default
ScoreBoardFile "{root}/run/scoreboard"
{user_group}
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authz_core_module {mods}/mod_authz_core.so
'''

_APACHE_CONF = "# generated by tests/lib/harness.py: a private Apache on 127.0.0.1:{port}\n" + APACHE_HEAD + r'''LoadModule alias_module {mods}/mod_alias.so
LoadModule cgid_module {mods}/mod_cgid.so
LoadModule remoteip_module {mods}/mod_remoteip.so
Listen 127.0.0.1:{port}
StartServers 1
ServerLimit 4
ThreadsPerChild 25
MaxRequestWorkers 100
KeepAlive On
KeepAliveTimeout 15
Timeout 60
ErrorLog "{root}/logs/error.log"
LogLevel warn
# %a: client address as mod_remoteip sees it, %{{c}}a: the TCP peer, then request line, status, bytes
LogFormat "%a %{{c}}a \"%r\" %>s %B" relaytest
CustomLog "{root}/logs/access.log" relaytest
ScriptSock "{root}/run/cgisock"
DocumentRoot "{root}/htdocs"
ScriptAlias /cgi-bin/ "{root}/cgi-bin/"
<Directory />
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}/htdocs">
    Require all granted
</Directory>
<Directory "{root}/cgi-bin">
    Options +ExecCGI
    Require all granted
</Directory>
{remoteip}
'''


_READY_PATH = "/harness-ready.txt"     # probed until Apache answers; left out of access_log_lines()


class Apache(Process):
    """The running Apache: .port, .root, .access_log_lines(), .error_log_text(), .stop()."""

    def access_log_lines(self):
        """The access log lines written so far ("%a %{c}a \"%r\" %>s %B")."""
        try:
            with open(os.path.join(self.root, "logs", "access.log"), encoding="latin-1") as f:
                return [line.rstrip("\n") for line in f
                        if line.endswith("\n") and _READY_PATH not in line]
        except FileNotFoundError:
            return []

    def error_log_text(self):
        """The contents of Apache's error log."""
        try:
            with open(os.path.join(self.root, "logs", "error.log"), encoding="latin-1") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def stop(self, timeout=10.0, sig=signal.SIGTERM):
        """Stops Apache (SIGTERM to the parent: children and cgid exit with it)."""
        return Process.stop(self, timeout, sig)


def apache_root(prefix, subdirs=()):
    """A temp ServerRoot for a private Apache, with run/, logs/ and `subdirs`. Run as root, the
    children drop to nobody/nogroup: run/ and logs/ are then theirs. Returns (root, the User and
    Group lines for APACHE_HEAD's {user_group}, empty when not root)."""
    root = tmpdir(prefix)
    for sub in ("run", "logs") + tuple(subdirs):
        os.mkdir(os.path.join(root, sub))
    user_group = ""
    if os.geteuid() == 0:
        user, group = "nobody", "nogroup"
        try:
            uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
        except KeyError:
            uid, gid = 65534, 65534
            user, group = "#65534", "#65534"
        user_group = "User %s\nGroup %s" % (user, group)
        os.chmod(root, 0o755)                   # mkdtemp makes 0700: the children must get in
        for sub in ("run", "logs"):
            os.chown(os.path.join(root, sub), uid, gid)
    return root, user_group


def start_apache(port, proxy_protocol=True, timeout=15.0):
    """Starts Debian's apache2 in the foreground on 127.0.0.1:port with a private config.

    mpm_event, mod_remoteip (`RemoteIPProxyProtocol On` when proxy_protocol, else
    `RemoteIPHeader X-Forwarded-For` + `RemoteIPInternalProxy 127.0.0.1 ::1`), mod_cgid with the
    echo CGI at /cgi-bin/echo, access log with %a. Run as root it drops to nobody/nogroup.
    Nothing under /etc/apache2 is read and port 80 is not touched. Calls skip_all() when
    apache2 is not installed. Returns an Apache once the port accepts connections.
    """
    if not os.access(APACHE_BIN, os.X_OK):
        skip_all("apache2 is not installed (apt-get install -y apache2)")
    root, user_group = apache_root("exrelay-apache-", ("htdocs", "cgi-bin"))
    if proxy_protocol:
        remoteip = "RemoteIPProxyProtocol On"
    else:
        remoteip = "RemoteIPHeader X-Forwarded-For\nRemoteIPInternalProxy 127.0.0.1 ::1"
    cgi = os.path.join(root, "cgi-bin", "echo")
    with open(cgi, "w") as f:
        f.write(_ECHO_CGI)
    os.chmod(cgi, 0o755)
    with open(os.path.join(root, "htdocs", _READY_PATH.lstrip("/")), "w") as f:
        f.write("ready\n")
    conf = os.path.join(root, "apache2.conf")
    with open(conf, "w") as f:
        f.write(_APACHE_CONF.format(root=root, port=port, mods=APACHE_MODULES,
                                    user_group=user_group, remoteip=remoteip))
    # A clean environment: Debian's envvars (APACHE_RUN_DIR etc.) are deliberately not sourced.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    p = Apache("apache2", [APACHE_BIN, "-d", root, "-f", conf, "-DFOREGROUND"], root, env=env)
    p.port, p.root, p.conf = port, root, conf
    # A bound port is not enough: Apache binds before it has finished reading its configuration
    # (and may still exit). Ready means a complete HTTP answer to a real request.
    if not wait_for(lambda: not p.alive() or _apache_answers(port, proxy_protocol), timeout) or not p.alive():
        raise RuntimeError("apache2 did not start on port %d: %s %s" % (
            port, p.stderr_text()[-2000:], p.error_log_text()[-2000:]))
    return p


def _apache_answers(port, proxy_protocol):
    """True when Apache on 127.0.0.1:port answers GET _READY_PATH with a 200 status line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            req = b"GET " + _READY_PATH.encode() + b" HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n"
            if proxy_protocol:
                req = b"PROXY TCP4 127.0.0.1 127.0.0.1 1 %d\r\n" % port + req
            s.sendall(req)
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------
# Runtime API sockets (HAProxy's stats socket, exrelay's admin_socket)
# ----------------------------------------------------------------------------------------------

class RuntimeSocket:
    """A client of a runtime API socket (HAProxy's `stats socket`, exrelay's `admin_socket`),
    at .stats_socket: .command(), .show_stat(), .server_stat(), .show_servers_state()."""

    stats_socket = None

    def command(self, cmd, timeout=5.0):
        """Sends one command to the stats socket and returns the whole answer as text."""
        if not self.stats_socket:
            raise RuntimeError("no 'stats socket' in the HAProxy configuration")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.stats_socket)
            s.sendall(cmd.encode() + b"\n")
            out = bytearray()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                data = s.recv(65536)
                if not data:
                    break
                out += data
        return out.decode("utf-8", "replace")

    def show_stat(self):
        """`show stat` parsed: a list of dicts keyed by the CSV columns (pxname, svname, status,
        check_status, agent_status, ...)."""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            raise RuntimeError("unexpected 'show stat' answer: %r" % lines[:2])
        cols = lines[0][2:].split(",")
        return [dict(zip(cols, line.split(","))) for line in lines[1:] if line.strip()]

    def server_stat(self, backend, server):
        """The `show stat` row of one server (dict), or None."""
        for row in self.show_stat():
            if row.get("pxname") == backend and row.get("svname") == server:
                return row
        return None

    def show_servers_state(self, backend=""):
        """`show servers state [backend]` parsed: a list of dicts keyed by the column names."""
        lines = self.command(("show servers state " + backend).strip()).splitlines()
        cols, out = None, []
        for line in lines:
            if line.startswith("# "):
                cols = line[2:].split()
            elif cols and line.strip():    # the format version line comes before the header
                out.append(dict(zip(cols, line.split())))
        return out


# ----------------------------------------------------------------------------------------------
# exrelay
# ----------------------------------------------------------------------------------------------

def exrelay_path():
    """The daemon under test: $EXRELAY, else $top_builddir/relay/exrelay, else ../relay/exrelay
    relative to the tests directory."""
    if os.environ.get("EXRELAY"):
        return os.environ["EXRELAY"]
    if os.environ.get("top_builddir"):
        return os.path.join(os.environ["top_builddir"], "relay", "exrelay")
    return os.path.normpath(os.path.join(TESTS_DIR, "..", "relay", "exrelay"))


class Exrelay(Process, RuntimeSocket):
    """The running daemon: .config_path, .addr_path, .addrs, .ports, .port(), .stop(), .reload(),
    .wait_reloaded(), .rss_kib(), .stderr_text(); with `global.admin_socket`, .stats_socket
    (its path) and the runtime API helpers (.command(), .show_stat(), ...).

    exrelay runs with `-a ADDR_FILE`: the listeners bind port 0 in the tests' configurations and
    .addrs ({name: (host, port)}) and .ports ({name: port}) say where they are."""

    addr_path = None
    addrs, ports = {}, {}

    def read_addrs(self):
        """Parses the address file ("NAME ADDRESS:PORT" lines); sets and returns .addrs."""
        addrs = {}
        with open(self.addr_path) as f:
            for line in f:
                name, addr = line.split()
                host, port = addr.rsplit(":", 1)
                addrs[name] = (host.strip("[]"), int(port))
        self.addrs = addrs
        self.ports = {n: a[1] for n, a in addrs.items()}
        return addrs

    def port(self, name):
        """The port listener `name` is bound to (as the address file said last)."""
        return self.ports[name]

    def addr_stamp(self):
        """The address file's inode (every rewrite renames a new file into place), or None."""
        try:
            return os.stat(self.addr_path).st_ino
        except OSError:
            return None

    def wait_addrs(self, timeout=10.0):
        """Waits until the address file exists (RuntimeError with stderr if exrelay exits or the
        deadline passes); reads it. Returns .addrs."""
        if not wait_for(lambda: not self.alive() or self.addr_stamp() is not None, timeout) or \
                not self.alive() or self.addr_stamp() is None:
            raise RuntimeError("exrelay wrote no address file %s (exit %r): %s" % (
                self.addr_path, self.returncode, self.stderr_text()[-3000:]))
        return self.read_addrs()

    def pin(self, config_text):
        """config_text with each `name = "N"; bind = "HOST:0"` of a listener already running
        replaced by the port it got, so that a reload keeps that listener's socket (a listener
        new to exrelay keeps port 0)."""
        def port_of(m):
            if m.group(1) not in self.ports:
                return m.group(0)
            return m.group(0)[:-len(':0"')] + ':%d"' % self.ports[m.group(1)]
        return re.sub(r'name\s*=\s*"([^"]*)";\s*bind\s*=\s*"[^"]*:0"', port_of, config_text)

    def reload(self, config_text=None, pin=True):
        """Rewrites the config file (atomically) with config_text, or the current text when None,
        its port-0 listeners pinned to the ports they got (unless not `pin`); then sends SIGHUP.
        Remembers the address file's stamp for wait_reloaded()."""
        if config_text is None:
            with open(self.config_path) as f:
                config_text = f.read()
        if pin:
            config_text = self.pin(config_text)
        tmp = self.config_path + ".new"
        with open(tmp, "w") as f:
            f.write(config_text)
        os.rename(tmp, self.config_path)
        self.reload_stamp = self.addr_stamp()
        self.send_signal(signal.SIGHUP)

    def wait_reloaded(self, timeout=10.0):
        """After reload(): waits until exrelay has rewritten the address file (a successful
        reload: the new listeners bound, the logs reopened; the file is written just before the
        new configuration is handed to the workers, logged and reported READY=1), then reads it.
        Returns True, or False on timeout."""
        if not wait_for(lambda: self.addr_stamp() not in (None, self.reload_stamp), timeout):
            return False
        self.read_addrs()
        return True

    def stop(self, timeout=35.0, sig=signal.SIGTERM):
        """SIGTERM (drain), wait up to `timeout` s, then SIGKILL. Returns the exit status."""
        return Process.stop(self, timeout, sig)


def exrelay_argv(workdir, config_text, args=()):
    """Writes config_text to workdir/exrelay.conf; returns (argv, config path, address file):
    `$EXRELAY -f FILE -a ADDR_FILE [args]`."""
    cfg = os.path.join(workdir, "exrelay.conf")
    with open(cfg, "w") as f:
        f.write(config_text)
    binary = exrelay_path()
    if not os.access(binary, os.X_OK):
        raise RuntimeError("exrelay binary not found at %s (set EXRELAY)" % binary)
    addr_path = os.path.join(workdir, "addrs")
    return [binary, "-f", cfg, "-a", addr_path] + list(args), cfg, addr_path


def start_exrelay(config_text, ports=(), host="127.0.0.1", timeout=10.0, args=(), wait=True):
    """Writes `config_text` to a temp file and runs `$EXRELAY -f FILE -a ADDR_FILE [args]`.

    When `wait`, waits for the address file (every listener bound; RuntimeError with the daemon's
    stderr if it exits or the deadline passes) and reads it into .addrs/.ports; then polls every
    port in `ports` (fixed ports, if any) until it accepts. Returns an Exrelay.
    """
    d = tmpdir("exrelay-daemon-")
    argv, cfg, addr_path = exrelay_argv(d, config_text, args)
    p = Exrelay("exrelay", argv, d)
    p.config_path, p.addr_path = cfg, addr_path
    m = re.search(r'admin_socket\s*=\s*\{[^}]*path\s*=\s*"([^"]+)"', config_text)
    p.stats_socket = m.group(1) if m else None
    if wait:
        p.wait_addrs(timeout)
        for port in ports:
            if not wait_port(host, port, timeout, p.alive):
                raise RuntimeError("exrelay not listening on %s:%d (exit %r): %s" % (
                    host, port, p.returncode, p.stderr_text()[-3000:]))
    return p


# ----------------------------------------------------------------------------------------------
# HAProxy
# ----------------------------------------------------------------------------------------------

class Haproxy(Process, RuntimeSocket):
    """The running HAProxy: .dir, .config_path, .stats_socket, .command(), .show_stat(),
    .server_stat(), .show_servers_state(), .stop()."""


def start_haproxy(config_text, ports=(), host="127.0.0.1", timeout=10.0):
    """Runs Debian's haproxy in the foreground (`haproxy -db -f FILE`) with a generated config.

    `@HAPROXY_DIR@` in config_text is replaced by the private temp directory (for the stats socket,
    PEM files...). The config is checked first (`haproxy -c`: RuntimeError with its output when
    refused). Ready means: every port in `ports` accepts a connection and, when the config has a
    `stats socket`, the socket answers `show info`. Calls skip_all() when haproxy is missing.
    Returns a Haproxy (stopped at exit like the other processes).
    """
    if not os.access(HAPROXY_BIN, os.X_OK):
        skip_all("haproxy is not installed (apt-get install -y haproxy)")
    d = tmpdir("exrelay-haproxy-")
    config_text = config_text.replace("@HAPROXY_DIR@", d)
    cfg = os.path.join(d, "haproxy.cfg")
    with open(cfg, "w") as f:
        f.write(config_text)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
    try:
        chk = subprocess.run([HAPROXY_BIN, "-c", "-f", cfg], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError("haproxy -c -f %s did not finish in %.0f s" % (cfg, timeout))
    if chk.returncode != 0:
        raise RuntimeError("haproxy refused its configuration %s: %s%s" % (
            cfg, chk.stdout.decode("utf-8", "replace")[-2000:], chk.stderr.decode("utf-8", "replace")[-2000:]))
    p = Haproxy("haproxy", [HAPROXY_BIN, "-db", "-f", cfg], d, env=env)
    p.dir, p.config_path, p.stats_socket = d, cfg, None
    for line in config_text.splitlines():
        words = line.split("#", 1)[0].split()
        if len(words) >= 3 and words[0] == "stats" and words[1] == "socket" and words[2].startswith("/"):
            p.stats_socket = words[2]
            break
    deadline = time.monotonic() + timeout
    for port in ports:
        if not wait_port(host, port, max(0.1, deadline - time.monotonic()), p.alive):
            raise RuntimeError("haproxy not listening on %s:%d (exit %r): %s" % (
                host, port, p.returncode, p.stderr_text()[-3000:]))
    if p.stats_socket and not wait_for(lambda: not p.alive() or "Name: HAProxy" in p.command("show info", 1.0),
                                       max(0.1, deadline - time.monotonic())) or not p.alive():
        raise RuntimeError("haproxy stats socket %s did not answer (exit %r): %s" % (
            p.stats_socket, p.returncode, p.stderr_text()[-3000:]))
    return p


def run_checks(checks, relay=None, t0=None, errors_expected=False):
    """Runs each check function in turn (an exception is reported as a failed point and the next
    check still runs); then, when `relay` is given, asserts that exrelay is still running, stops
    on SIGTERM with exit status 0 and wrote no sanitizer line, nor an error-level one unless the
    test provoked some (`errors_expected`); prints the plan."""
    for check in checks:
        try:
            check()
        except Exception as e:  # noqa: BLE001 - any failure of a check is a test failure
            ok(False, "%s raised %s: %s" % (check.__name__, type(e).__name__, e))
            if relay is not None:
                diag(relay.stderr_text()[-1500:])
    if relay is not None:
        ok(relay.alive(), "exrelay still running at the end")
        rc = relay.stop()
        is_(rc, 0, "exrelay stops on SIGTERM with exit status 0")
        errs = [l for l in relay.stderr_text().splitlines()
                if "Sanitizer" in l or "runtime error" in l or ("]: error: " in l and not errors_expected)]
        is_(errs, [], "no %ssanitizer lines in exrelay's stderr" % ("" if errors_expected else "error-level / "))
    if t0 is not None:
        diag("total %.1f s" % (time.monotonic() - t0))
    done()


def agent_line(port, timeout=5.0):
    """The agent port's whole answer (one line, then close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        data = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            piece = s.recv(100)
            if not piece:
                break
            data += piece
        return data


# ----------------------------------------------------------------------------------------------
# Upgrades (t_service_upgrade.py, contrib/debian/upgrade-test.py)
# ----------------------------------------------------------------------------------------------

def pid_alive(pid):
    """True while pid runs (a zombie, or a process that is not ours to see, counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def parent_of(pid):
    """The parent pid of pid (0 when it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def read_pidfile(path):
    """The pid in a pidfile, or 0 when it is missing or empty."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


class Prober(threading.Thread):
    """Every `interval` seconds, connects to 127.0.0.1:port, sends `request` and reads the whole
    answer (until close), which must start with `expect`; records the time of each good answer and
    every failure (refused, reset, timeout, wrong answer). .start(); .finish() stops it."""

    def __init__(self, port, request=b"GET /exrelay/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                 expect=b"HTTP/1.1 200 ", interval=0.01, timeout=3.0):
        super().__init__(daemon=True)
        self.port, self.request, self.expect, self.interval, self.timeout = port, request, expect, interval, timeout
        self.stop_ev = threading.Event()
        self.ok_times, self.failures, self.count = [], [], 0

    def probe(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        try:
            s.sendall(self.request)
            data = recv_all(s)
        finally:
            s.close()
        if not data.startswith(self.expect):
            raise ValueError("answer %r" % data[:60])

    def run(self):
        t0 = time.monotonic()
        while not self.stop_ev.is_set():
            t = time.monotonic()
            self.count += 1
            try:
                self.probe()
                self.ok_times.append(time.monotonic())
            except Exception as e:  # noqa: BLE001 - every failure counts
                self.failures.append("+%.3f s: %r" % (t - t0, e))
            self.stop_ev.wait(max(0.0, self.interval - (time.monotonic() - t)))

    def finish(self, timeout=10.0):
        self.stop_ev.set()
        self.join(timeout)

    def longest_gap(self, since=0.0, until=None):
        """(longest time between two good answers in [since, until], number of answers there)."""
        until = time.monotonic() if until is None else until
        ts = [t for t in self.ok_times if since <= t <= until]
        return max((b - a for a, b in zip(ts, ts[1:])), default=None), len(ts)

    def gaps(self, since=0.0, until=None, over=0.05):
        """[(start, length)] of the gaps between good answers longer than `over` seconds."""
        until = time.monotonic() if until is None else until
        ts = [t for t in self.ok_times if since <= t <= until]
        return [(a, b - a) for a, b in zip(ts, ts[1:]) if b - a > over]
