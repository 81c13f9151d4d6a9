#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_service_daemon.py: exrelay's -d/pidfile, privilege drop, syslog and logrotate (TAP).

  * `-d -p PIDFILE`: the starting process exits 0, the daemon (another pid, its own session,
    stdio on /dev/null) is alive and serves; -p wins over global.pidfile; SIGTERM stops it with
    exit 0 (seen through PR_SET_CHILD_SUBREAPER) and removes the pidfile. global.pidfile alone
    is written too.
  * As root with global.user = "nobody", group = "nogroup" and a listener on a port below 1024:
    the port is bound before the drop, every thread's real/effective/saved/fs uid and gid are
    nobody/nogroup, no capabilities are left; a reload keeping that listener works (its socket
    is kept), a reload adding another port below 1024 fails and the old configuration stays.
    Asked to drop to "root", to an unknown user or group, or given a group without a user (it would
    stay root), exrelay refuses to start (exit 2).
  * error_log = "syslog" and access_log path "syslog": exrelay runs in a private mount namespace
    whose /dev/log is the test's datagram socket; messages arrive with facility daemon, the right
    severities and `exrelay[PID]:`; nothing is written to stderr.
  * logrotate (a private config and state file, `postrotate` sends SIGUSR1 to the pid in the
    pidfile), run twice while two clients send requests: every request is in exactly one of
    access.log.2, access.log.1, access.log, in order per client, each line whole; the error log
    gets `log files reopened` in the file opened by each reopen.
Run (root for the privilege and syslog parts): cd tests && EXRELAY=... python3 integration/t_service_daemon.py
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, free_port, start_standin, wait_for, tmpdir  # noqa: E402
import harness  # noqa: E402
import rpch  # noqa: E402
from service import spawn_exrelay, proc_status, listening_sockets, sanitizer_lines, stop_all  # noqa: E402

T0 = time.monotonic()
ROOT = os.geteuid() == 0
ex = start_standin(ping_interval=0)
relays = []


def base_config(port, extra_global="", extra="", listeners=None, owa="/owa"):
    """A minimal config: one public listener, one backend, a route for `owa` and a default one."""
    return '''global = { drain_timeout = 5; log_level = "info"; %s };
timeouts = { request_head = 10; client_idle = 30; connect = 3; };
listeners = ( %s );
backends = ( { name = "one"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 60; } );
routes = ( { backend = "one"; paths = [ "%s" ]; }, { backend = "one"; } );
%s''' % (extra_global, listeners or '{ name = "public"; bind = "127.0.0.1:%d"; }' % port, ex.port, owa, extra)


def get(port, target, timeout=10.0):
    """Status of one GET on a fresh connection."""
    with rpch.HttpConn("127.0.0.1", port, timeout=timeout) as c:
        resp, _ = c.request("GET", target, [("Host", "x"), ("Connection", "close")], timeout=timeout)
        return resp.status


def wait_exit(p, timeout=10.0):
    """Waits for a harness process to exit; returns its exit status (None if still running)."""
    wait_for(lambda: not p.alive(), timeout)
    return p.returncode


# ----------------------------------------------------------------------------------------------
# -d and pidfile
# ----------------------------------------------------------------------------------------------

class Daemon:
    """A daemonized exrelay found through its pidfile: stopped (SIGKILL if need be) at exit."""

    def __init__(self, pid):
        """Registers pid with the harness clean-up."""
        self.pid = pid
        harness._started.append(self)

    def alive(self):
        """True while the pid exists and is not a zombie."""
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                return f.read().rsplit(")", 1)[1].split()[0] != "Z"
        except OSError:
            return False

    def reap(self):
        """waitpid() it (it is our child through PR_SET_CHILD_SUBREAPER); the exit status or None."""
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        self.status = os.waitstatus_to_exitcode(status)
        return self.status

    def stop(self):
        """SIGTERM, then SIGKILL after 10 s."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            if not wait_for(lambda: not self.alive(), 10):
                os.kill(self.pid, signal.SIGKILL)
        self.reap()


def check_daemonize():
    """-d with -p and global.pidfile."""
    libc = ctypes.CDLL(None, use_errno=True)
    subreaper = libc.prctl(36, 1, 0, 0, 0) == 0          # PR_SET_CHILD_SUBREAPER
    work = tmpdir("exrelay-daemonize-")
    cli_pid, cfg_pid, elog = (os.path.join(work, n) for n in ("cli.pid", "global.pid", "error.log"))
    p = spawn_exrelay(base_config(0, 'pidfile = "%s"; error_log = "%s";' % (cfg_pid, elog)),
                      args=["-d", "-p", cli_pid], wait=False)
    is_(wait_exit(p), 0, "-d: the starting process exits 0")
    ok(wait_for(lambda: os.path.exists(cli_pid) and open(cli_pid).read().endswith("\n"), 10), "-d: -p pidfile written")
    try:
        pid = int(open(cli_pid).read())
    except (OSError, ValueError):
        pid = None
    if not pid:
        return
    d = Daemon(pid)
    ok(d.alive() and pid != p.pid, "-d: the pid in the pidfile (%d) is alive and not the direct child (%d)" % (pid, p.pid))
    ok(not os.path.exists(cfg_pid), "-d: -p overrides global.pidfile (not written)")
    ok(os.getsid(pid) == pid and os.getsid(pid) != os.getsid(0), "-d: the daemon leads its own session")
    fds = {n: os.readlink("/proc/%d/fd/%d" % (pid, n)) for n in (0, 1, 2)}
    is_(fds, {0: "/dev/null", 1: "/dev/null", 2: "/dev/null"}, "-d: stdin/stdout/stderr on /dev/null")
    port = wait_for(lambda: p.read_addrs() and p.port("public"), 10)   # -a FILE is absolute: -d changes to /
    ok(port and get(port, "/daemon") == 200, "-d: the daemon writes its address file and serves")
    ok(wait_for(lambda: re.search(r"started \(pid %d" % pid, open(elog).read()), 5),
       "-d: the error log file names the daemon's pid")
    os.kill(pid, signal.SIGTERM)
    ok(wait_for(lambda: not d.alive(), 10), "-d: SIGTERM stops the daemon")
    if subreaper:
        is_(wait_for(lambda: d.reap() is not None or None, 5) and d.status, 0, "-d: the daemon's exit status is 0")
    ok(wait_for(lambda: not os.path.exists(cli_pid), 5) and not os.path.exists(p.addr_path),
       "-d: the pidfile and the address file are removed at exit")

    # global.pidfile alone, foreground.
    r = spawn_exrelay(base_config(0, 'pidfile = "%s";' % cfg_pid))
    relays.append(r)
    ok(wait_for(lambda: os.path.exists(cfg_pid) and open(cfg_pid).read() == "%d\n" % r.pid, 5),
       "global.pidfile: holds the pid and a newline")
    is_(r.stop(), 0, "global.pidfile: SIGTERM, exit 0")
    ok(not os.path.exists(cfg_pid), "global.pidfile: removed at exit")


# ----------------------------------------------------------------------------------------------
# user / group
# ----------------------------------------------------------------------------------------------

def low_free_port():
    """A free TCP port below 1024 on 127.0.0.1 (None if none found)."""
    for port in range(1000, 600, -1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return None


def check_privileges():
    """user/group drop after binding a port below 1024; refusals."""
    if not ROOT:
        ok(True, "privilege drop: not root, skipped # SKIP needs root")
        return
    import pwd
    import grp
    uid, gid = pwd.getpwnam("nobody").pw_uid, grp.getgrnam("nogroup").gr_gid
    low = low_free_port()
    low2 = low_free_port_excluding(low)
    if not low or not low2:
        ok(True, "privilege drop: no free port below 1024 # SKIP")
        return
    # (the low ports are fixed: binding below 1024 before the drop is the point)
    listeners = '{ name = "low"; bind = "127.0.0.1:%d"; }, { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; }' \
        % low
    g = 'user = "nobody"; group = "nogroup"; workers = 2;'
    r = spawn_exrelay(base_config(low, g, listeners=listeners), ports=[low])
    r.errors_expected = True            # the failed reload below
    relays.append(r)
    is_(get(low, "/low"), 200, "user/group: a listener on port %d (< 1024) bound before the drop serves" % low)
    bad = []
    wait_for(lambda: len(os.listdir("/proc/%d/task" % r.pid)) >= 3, 5)   # main and both workers
    for tid in os.listdir("/proc/%d/task" % r.pid):
        st = proc_status(int(tid)) if tid == str(r.pid) else _task_status(r.pid, tid)
        want = {"Uid": [str(uid)] * 4, "Gid": [str(gid)] * 4}
        got = {"Uid": st["Uid"].split(), "Gid": st["Gid"].split()}
        if got != want or st.get("CapEff") != "0000000000000000" or st.get("CapPrm") != "0000000000000000":
            bad.append((tid, got, st.get("CapEff"), st.get("CapPrm")))
        groups = st.get("Groups", "").split()
        if groups not in ([], [str(gid)]):
            bad.append((tid, "Groups", groups))
    ok(not bad and len(os.listdir("/proc/%d/task" % r.pid)) >= 3,
       "user/group: every thread runs as nobody/nogroup (real, effective, saved, fs), no capabilities (%r)" % (bad,))
    # A reload after the drop: the file must be readable by nobody, and so must every folder
    # above it (a package build may run the tests below a private 0700 folder: then skip).
    os.chmod(r.workdir, 0o755)
    os.chmod(r.config_path, 0o644)
    parent, closed = os.path.dirname(r.workdir), None
    while parent not in ("/", ""):
        if not os.stat(parent).st_mode & 0o001:
            closed = parent
            break
        parent = os.path.dirname(parent)
    if closed:
        ok(True, "user/group: reload after the drop # SKIP %s is not searchable by nobody" % closed)
        ok(True, "user/group: low port after the reload # SKIP %s is not searchable by nobody" % closed)
    else:
        before = len(r.stderr_text())
        r.reload(base_config(low, g, listeners=listeners, owa="/owa2"))
        ok(wait_for(lambda: "configuration reloaded" in r.stderr_text()[before:], 5),
           "user/group: a reload keeping the port below 1024 succeeds after the drop")
        is_((listening_sockets(low, r.pid), get(low, "/after-reload")), (2, 200),
            "user/group: after the reload the low port keeps its two sockets and serves")
    before = len(r.stderr_text())
    r.reload(base_config(low, g, listeners=listeners + ', { name = "low2"; bind = "127.0.0.1:%d"; }' % low2))
    ok(wait_for(lambda: re.search(r"reload failed.*low2.*(Permission denied|not permitted)",
                                  r.stderr_text()[before:]), 5),
       "user/group: a reload adding port %d fails after the drop (%r)" % (low2, r.stderr_text()[before:].strip()[-200:]))
    is_(get(low, "/after-failed"), 200, "user/group: after the failed reload the old configuration serves")
    is_(r.stop(), 0, "user/group: SIGTERM, exit 0")

    # Refusals: exit 2 and a message, nothing left listening.
    for name, glob, pattern in (
            ("user root", 'user = "root";', r"refusing to run"),
            ("unknown user", 'user = "no-such-user-exrelay";', r"unknown user"),
            ("unknown group", 'user = "nobody"; group = "no-such-group-exrelay";', r"unknown group"),
            ("group only (uid stays root)", 'group = "nogroup";', r"refusing")):
        port = free_port()      # a fixed port: after the refusal, nothing may listen on it
        # Without leak detection first: the exit status of the refusal itself.
        asan = (os.environ.get("ASAN_OPTIONS", "") + ":detect_leaks=0").lstrip(":")
        p = spawn_exrelay(base_config(port, glob), wait=False, env={"ASAN_OPTIONS": asan})
        rc = wait_exit(p)
        err = p.stderr_text()
        ok(rc == 2 and re.search(pattern, err) and not listening_sockets(port),
           "asked to drop to %s as root: refuses to start, exit 2 (rc %r, %r)" % (name, rc, err.strip()[-200:]))
        p = spawn_exrelay(base_config(port, glob), wait=False)
        rc = wait_exit(p)
        san = sanitizer_lines(p.stderr_text())
        ok(rc == 2 and not san, "asked to drop to %s: exit 2 with leak detection on, no sanitizer report (rc %r, %r)"
           % (name, rc, san[:2]))


def low_free_port_excluding(port):
    """Another free port below 1024."""
    for q in range(999, 600, -1):
        if q == port:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", q))
                return q
            except OSError:
                continue
    return None


def _task_status(pid, tid):
    """/proc/PID/task/TID/status as a dict."""
    out = {}
    with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


# ----------------------------------------------------------------------------------------------
# syslog
# ----------------------------------------------------------------------------------------------

_NS_SCRIPT = r'''set -e
mount --make-rprivate /
mkdir "$T/olddev"
mount --rbind /dev "$T/olddev"
mount -t tmpfs -o mode=755 tmpfs /dev
for n in null zero full random urandom; do
  touch "/dev/$n"; mount --bind "$T/olddev/$n" "/dev/$n"
done
umount -l "$T/olddev"
ln -s "$T/log.sock" /dev/log
exec "$@"
'''

SYSLOG_RE = re.compile(r"^<(\d+)>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d exrelay\[(\d+)\]: (.*)$", re.S)


def check_syslog():
    """error_log and access_log to syslog, received on a private /dev/log."""
    if not ROOT or not shutil.which("unshare"):
        ok(True, "syslog # SKIP needs root and unshare(1) for a private /dev/log")
        return
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    if probe.returncode != 0:
        ok(True, "syslog # SKIP no mount namespaces here (%s)" % probe.stderr.decode().strip())
        return
    work = tmpdir("exrelay-syslog-")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(os.path.join(work, "log.sock"))
    sock.settimeout(0.2)
    got = []
    lock = threading.Lock()
    running = [True]

    def collect():
        """Receives syslog datagrams."""
        while running[0]:
            try:
                data = sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with lock:
                got.append(data.decode("utf-8", "replace"))
    th = threading.Thread(target=collect, daemon=True)
    th.start()

    def messages():
        """[(priority, pid, text)] received so far (malformed ones as (None, None, raw))."""
        with lock:
            out = []
            for g in got:
                m = SYSLOG_RE.match(g)
                out.append((int(m.group(1)), int(m.group(2)), m.group(3)) if m else (None, None, g))
            return out
    text = base_config(0, 'error_log = "syslog";', extra='access_log = { path = "syslog"; format = "combined"; };\n')
    r = spawn_exrelay(text, env={"T": work},
                      wrapper=lambda argv: ["unshare", "-m", "sh", "-c", _NS_SCRIPT, "sh"] + argv)
    relays.append(r)
    port = r.port("public")
    started = wait_for(lambda: [m for m in messages() if "started" in m[2]], 10)
    ok(started and started[0][0] == 30 and started[0][1] == r.pid,
       "syslog: the start message arrives with <30> (daemon.info) and exrelay[%d] (%r)" % (r.pid, started[:1]))
    is_(get(port, "/syslog-test"), 200, "syslog: a request served")
    acc = wait_for(lambda: [m for m in messages() if '"GET /syslog-test HTTP/1.1" 200' in m[2]], 5)
    ok(acc and acc[0][0] == 30 and acc[0][2].startswith("127.0.0.1 - "),
       "syslog: the access log line arrives as daemon.info (%r)" % (acc[:1],))
    before = len(messages())
    r.reload("global = { workers = ; };\n")
    err = wait_for(lambda: [m for m in messages()[before:] if "reload failed" in m[2]], 5)
    ok(err and err[0][0] == 27, "syslog: a failed reload is logged as daemon.err <27> (%r)" % (err[:1],))
    before = len(messages())
    r.reload(base_config(port, 'error_log = "syslog"; workers = 7;',
                         extra='access_log = { path = "syslog"; format = "combined"; };\n'))
    warn = wait_for(lambda: [m for m in messages()[before:] if "workers" in m[2] and "restart" in m[2]], 5)
    ok(warn and warn[0][0] == 28, "syslog: a warning is logged as daemon.warning <28> (%r)" % (warn[:1],))
    before = len(messages())
    r.send_signal(signal.SIGUSR1)
    ok(wait_for(lambda: [m for m in messages()[before:] if "log files reopened" in m[2]], 5),
       "syslog: SIGUSR1 with syslog logging keeps logging")
    is_(r.stop(), 0, "syslog: SIGTERM, exit 0")
    ok(wait_for(lambda: [m for m in messages() if m[2].strip() == "stopped"], 5), "syslog: `stopped` logged")
    bad = [m for m in messages() if m[0] is None]
    is_(bad, [], "syslog: every datagram is a well-formed `<PRI>TIMESTAMP exrelay[PID]: message`")
    leaked = [l for l in r.stderr_text().splitlines() if l.strip() and "Sanitizer" not in l]
    is_(leaked, [], "syslog: nothing logged to stderr")
    diag("syslog: %d datagrams" % len(messages()))
    running[0] = False
    th.join(2)
    sock.close()


# ----------------------------------------------------------------------------------------------
# logrotate
# ----------------------------------------------------------------------------------------------

LINE_RE = re.compile(r'^127\.0\.0\.1 - \S+ \[[^\]]+\] "GET /rot/(\d+)/(\d+) HTTP/1\.1" 200 \d+ "[^"]*" "[^"]*" '
                     r'[\d.]+ \S+ \S+\s*$')


def check_logrotate():
    """Two forced rotations during traffic: no access log line lost or doubled."""
    lr = shutil.which("logrotate") or ("/usr/sbin/logrotate" if os.access("/usr/sbin/logrotate", os.X_OK) else None)
    if not lr:
        ok(True, "logrotate # SKIP logrotate is not installed (apt-get install logrotate)")
        return
    work = tmpdir("exrelay-logrotate-")
    access, elog, pidfile = (os.path.join(work, n) for n in ("access.log", "error.log", "exrelay.pid"))
    r = spawn_exrelay(base_config(0, 'workers = 2; error_log = "%s";' % elog,
                                  extra='access_log = { path = "%s"; format = "combined"; };\n' % access),
                      args=["-p", pidfile])
    relays.append(r)
    port = r.port("public")
    conf = os.path.join(work, "logrotate.conf")
    with open(conf, "w") as f:
        f.write('''"%s" "%s" {
    rotate 5
    missingok
    create 0640
    sharedscripts
    postrotate
        kill -USR1 "$(cat '%s')"
    endscript
}
''' % (access, elog, pidfile))
    os.chmod(conf, 0o644)
    state = os.path.join(work, "logrotate.state")
    stop = threading.Event()
    sent = [0, 0]
    errors = []

    def client(k):
        """Sequential keep-alive requests /rot/K/I until stopped."""
        i = 0
        try:
            with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
                while not stop.is_set():
                    resp, _ = c.request("GET", "/rot/%d/%d" % (k, i), [("Host", "x")], timeout=10)
                    if resp.status != 200:
                        errors.append(resp.status)
                    i += 1
                    sent[k] = i
        except Exception as e:                  # noqa: BLE001
            errors.append(repr(e))
    threads = [threading.Thread(target=client, args=(k,)) for k in range(2)]
    t = time.monotonic()
    for th in threads:
        th.start()
    rcs = []
    for n in range(2):
        time.sleep(max(0.0, t + 0.8 * (n + 1) - time.monotonic()))      # rotation schedule
        p = subprocess.run([lr, "-f", "-s", state, conf], capture_output=True, text=True, timeout=30)
        rcs.append((p.returncode, p.stderr.strip()[-300:]))
        # the reopen of this rotation is done once the new error log says so
        wait_for(lambda: "log files reopened" in (open(elog).read() if os.path.exists(elog) else ""), 5)
    time.sleep(max(0.0, t + 2.4 - time.monotonic()))
    stop.set()
    for th in threads:
        th.join(20)
    is_(rcs, [(0, "")] * 2, "logrotate -f twice during traffic: exit 0, nothing on stderr")
    is_(errors, [], "logrotate: every request answered 200")
    files = [access + ".2", access + ".1", access]
    total = sum(sent)

    def lines():
        """All access log lines, per file (oldest first)."""
        out = []
        for fn in files:
            try:
                with open(fn) as f:
                    out.append(f.read().splitlines())
            except FileNotFoundError:
                out.append([])
        return out
    wait_for(lambda: sum(len(x) for x in lines()) >= total, 5)
    per_file = lines()
    diag("logrotate: %d requests; lines per file (.2, .1, current): %r" % (total, [len(x) for x in per_file]))
    ok(all(per_file), "logrotate: each of access.log.2, access.log.1, access.log got lines")
    malformed = [l for x in per_file for l in x if not LINE_RE.match(l)]
    is_(malformed[:3], [], "logrotate: every line whole and well-formed")
    seq = {0: [], 1: []}
    for x in per_file:
        for l in x:
            m = LINE_RE.match(l)
            if m:
                seq[int(m.group(1))].append(int(m.group(2)))
    is_((seq[0], seq[1]), (list(range(sent[0])), list(range(sent[1]))),
        "logrotate: each request in exactly one file, in order per client, none lost or doubled (%d + %d)"
        % (sent[0], sent[1]))
    counts = []
    for fn in (elog + ".2", elog + ".1", elog):
        try:
            counts.append(open(fn).read().count("log files reopened"))
        except FileNotFoundError:
            counts.append(None)
    is_(counts, [0, 1, 1], "logrotate: error.log.2/.1/current hold 0/1/1 `log files reopened` (each reopen "
        "writes to the new file)")
    st = os.stat(access)
    is_(oct(st.st_mode & 0o777), oct(0o640), "logrotate: the new access.log keeps logrotate's create mode 0640")



def check_stop():
    """Every daemon started here stops cleanly."""
    stop_all(relays)


run_checks((check_daemonize, check_privileges, check_syslog, check_logrotate, check_stop), t0=T0)
