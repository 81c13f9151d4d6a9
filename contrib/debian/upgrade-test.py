#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
upgrade-test.py [--systemd] DEB: a package upgrade keeps open Outlook channels (TAP; as root, with
the exrelay package DEB installed or installable).

A newer package is made from DEB (its version bumped to VERSION+upgradetest1: the same files,
which dpkg installs as new inodes, like any upgrade), then:
  - exrelay runs in front of the Exchange stand-in (tests/standin) with the test's configuration:
    without --systemd (ci-package.sh; no systemd here: the postinst takes the path it uses without
    systemd), /usr/sbin/exrelay started as _exrelay with exrelay.service's ExecStart line (the
    test's configuration in place of /etc/exrelay/exrelay.conf); with --systemd (systemd-test.sh,
    inside a booted systemd), exrelay.service itself, the test's configuration written to
    /etc/exrelay/exrelay.conf (put back at the end) and `systemctl restart`: the Type=notify
    start under the unit's sandbox, then `systemctl reload` (a good file applied, a bad one
    refused);
  - three RPC over HTTP channels (IN/OUT pairs) are open and echoing, and a prober connects every
    10 ms to the traffic port and asks its health_path;
  - `dpkg -i` of the newer package: its postinst sends SIGUSR2 to the running exrelay (under
    systemd: the service's main process, then waits until MainPID changes), which starts the new
    /usr/sbin/exrelay with its listening sockets;
  - the new process (the new file, as _exrelay) takes the pidfile (and MainPID, the service never
    leaving "active") and answers; the channels opened before still echo; the old process drains
    them and exits 0 as soon as the last one ends (the cut at drain_timeout is
    t_service_upgrade.py's); no probe is refused; the longest gap between answers is printed;
  - with --systemd: a reload after the upgrade reaches the new main process, and `systemctl stop`
    drains a channel still open and ends with status 0 (Result=success) well within
    TimeoutStopSec.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
from harness import (ok, is_, diag, done, bail_out, start_standin, tmpdir, wait_for, pid_alive,  # noqa: E402
                     parent_of, read_pidfile, Prober, Process, free_port)
import rpch  # noqa: E402

T0 = time.monotonic()
UNIT = "/lib/systemd/system/exrelay.service"
SERVICE = "exrelay.service"
CONF = "/etc/exrelay/exrelay.conf"

args = sys.argv[1:]
SYSTEMD = args[:1] == ["--systemd"]
if SYSTEMD:
    args = args[1:]
if len(args) != 1 or os.geteuid() != 0:
    bail_out("usage (as root): upgrade-test.py [--systemd] EXRELAY.deb")
if SYSTEMD and not os.path.isdir("/run/systemd/system"):
    bail_out("--systemd: systemd is not running here (contrib/debian/systemd-test.sh boots one)")
DEB = os.path.abspath(args[0])
# Without systemd: longer than a slow dpkg -i, the channels end by themselves here. With it: below
# the unit's TimeoutStopSec (45 s), as exrelay.service asks.
DRAIN = 40 if SYSTEMD else 120


def sh(*argv):
    """Runs argv; returns (exit status, stdout and stderr together)."""
    p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
    return p.returncode, p.stdout.decode("utf-8", "replace")


def newer_package(deb, folder):
    """DEB unpacked, its Version bumped, packed again: the path of the newer .deb."""
    root = os.path.join(folder, "pkg")
    rc, out = sh("dpkg-deb", "-R", deb, root)
    if rc:
        bail_out("dpkg-deb -R: " + out)
    ctl = os.path.join(root, "DEBIAN", "control")
    with open(ctl) as f:
        text = f.read()
    version = re.search(r"^Version: (\S+)$", text, re.M).group(1)
    with open(ctl, "w") as f:
        f.write(re.sub(r"^Version: \S+$", "Version: %s+upgradetest1" % version, text, flags=re.M))
    newer = os.path.join(folder, "exrelay_%s+upgradetest1.deb" % version)
    rc, out = sh("dpkg-deb", "--build", root, newer)
    if rc:
        bail_out("dpkg-deb --build: " + out)
    return version, newer


def unit(*props):
    """exrelay.service's properties (systemctl show) as a dict."""
    out = sh("systemctl", "show", SERVICE, *["--property=" + p for p in props])[1]
    return dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)


def main_pid():
    return int(unit("MainPID").get("MainPID", "0") or 0)


def journal_cursor():
    out = sh("journalctl", "-n", "0", "--show-cursor", "--no-pager")[1]
    m = re.search(r"^-- cursor: (\S+)", out, re.M)
    return m.group(1) if m else None


def health(port):
    """The status line of GET /exrelay/health on port, or the error."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /exrelay/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.makefile("rb").readline().decode("latin-1").strip()
    except OSError as e:
        return "%s" % e.__class__.__name__


work = tmpdir("exrelay-pkg-upgrade-")
os.chmod(work, 0o755)       # _exrelay reads its configuration here and runs from here
version, newer = newer_package(DEB, work)
rc, installed = sh("dpkg-query", "-W", "-f=${Version}", "exrelay")
if rc or installed != version:
    rc, out = sh("apt-get", "install", "-y", "-qq", "--no-install-recommends", "--allow-downgrades", DEB)
    if rc:
        bail_out("cannot install %s: %s" % (DEB, out))
is_(sh("dpkg-query", "-W", "-f=${Version}", "exrelay")[1], version, "exrelay %s installed" % version)

if SYSTEMD:
    run = "/run/exrelay"            # RuntimeDirectory= and LogsDirectory=: the sandbox's writable places
    logs = "/var/log/exrelay"
else:
    run = logs = os.path.join(work, "run")
    os.mkdir(run)
    shutil.chown(run, "_exrelay", "_exrelay")
PIDFILE, ADDRS = os.path.join(run, "exrelay.pid"), os.path.join(run, "addrs")
PORT, PORT2 = free_port(), free_port()
ex = start_standin(ping_interval=0, notify_interval=30)
CONFIG = '''
global = { log_level = "info"; drain_timeout = %d; workers = 2; pidfile = "%s"; };
access_log = { path = "%s/access.log"; };
listeners = (
  { name = "public"; bind = "127.0.0.1:%d"; health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 3600; } );
routes = ( { backend = "exchange"; paths = [ "/rpc" ]; } );
''' % (DRAIN, PIDFILE, logs, PORT, ex.port)
# The reload's change: a second traffic listener.
CONFIG2 = CONFIG.replace('role = "admin"; } );', 'role = "admin"; },\n  { name = "extra"; bind = "127.0.0.1:%d"; '
                         'health_path = "/exrelay/health"; } );' % PORT2)


def vc_open():
    return rpch.open_virtual_connection(lambda: rpch.HttpConn("127.0.0.1", PORT, timeout=10))


def vc_echo(vc, n=1000):
    """vc.echoes(), False (and why) on an error."""
    try:
        return vc.echoes(n)
    except (OSError, ValueError) as e:
        diag("echo failed: %r" % e)
        return False


class Direct:
    """The old process without systemd: started here, as the unit's ExecStart line says."""

    def __init__(self):
        self.cfg = os.path.join(work, "exrelay.conf")
        with open(self.cfg, "w") as f:
            f.write(CONFIG)
        os.chmod(self.cfg, 0o644)
        with open(UNIT) as f:
            start = re.search(r"^ExecStart=(.*)$", f.read(), re.M).group(1).replace(CONF, self.cfg)
        argv = ["setpriv", "--reuid=_exrelay", "--regid=_exrelay", "--init-groups"] + start.split() + ["-a", ADDRS]
        self.proc = Process("exrelay", argv, work)
        self.pid = self.proc.pid
        ok(wait_for(lambda: read_pidfile(PIDFILE) == self.pid and os.path.exists(ADDRS), 10),
           "exrelay started as the unit starts it: %s" % start)
        if not self.proc.alive():
            bail_out("exrelay did not start: " + self.proc.stderr_text()[-2000:])

    def alive(self):
        return self.proc.alive()

    def log(self):
        return self.proc.stderr_text()

    def check_exit(self):
        is_(self.proc.returncode, 0, "the old process exited with status 0")


class Systemd:
    """exrelay.service under systemd, with the test's configuration in /etc/exrelay/exrelay.conf."""

    def __init__(self):
        self.cursor = journal_cursor()
        self.was_active = unit("ActiveState")["ActiveState"] == "active"
        with open(CONF) as f:
            self.original = f.read()
        with open(CONF, "w") as f:      # keeps the file's owner and mode
            f.write(CONFIG)
        t = time.monotonic()
        rc, out = sh("systemctl", "restart", SERVICE)
        took = time.monotonic() - t
        is_(rc, 0, "systemctl restart exrelay (%.2f s) %s" % (took, out.strip()))
        # Type=notify: systemctl returns once exrelay said READY=1, i.e. once it listens.
        is_(health(PORT), "HTTP/1.1 200 OK", "it answers as soon as systemctl returns (Type=notify readiness)")
        self.pid = main_pid()
        st = unit("ActiveState", "SubState", "NRestarts", "Type", "NotifyAccess")
        is_((st["ActiveState"], st["SubState"], st["NRestarts"]), ("active", "running", "0"),
            "active (running), no restart (%s)" % st)
        ok(self.pid > 0 and read_pidfile(PIDFILE) == self.pid,
           "MainPID %d is the process that wrote the pidfile (%d)" % (self.pid, read_pidfile(PIDFILE)))
        ok(wait_for(lambda: "exrelay %s started (pid %d" % (version.split("-")[0], self.pid) in self.log(), 10),
           "the journal has its start line (exrelay's stderr)")
        diag("journal so far:\n" + self.log().strip())

    def log(self, whole=False):
        """exrelay.service's journal since the test started (exrelay's lines and systemd's about it)."""
        argv = ["journalctl", "--no-pager", "-o", "cat"] + ([] if whole else ["-u", SERVICE])
        return sh(*(argv + (["--after-cursor=" + self.cursor] if self.cursor else [])))[1]

    def alive(self):
        return pid_alive(self.pid)

    def check_exit(self):
        ok(wait_for(lambda: "exrelay[%d]: info: stopped" % self.pid in self.log(), 10),
           "the old process logged its normal end (not our child: systemd does not see its status)")

    def reload(self, text, name, applied):
        with open(CONF, "w") as f:
            f.write(text)
        pid = main_pid()
        rc, out = sh("systemctl", "reload", SERVICE)
        is_(rc, 0, "%s: systemctl reload exrelay %s" % (name, out.strip()))
        ok(wait_for(applied, 10), "%s: the new configuration is applied" % name)
        ok(wait_for(lambda: "exrelay[%d]: info: configuration reloaded" % pid in self.log(), 10),
           "%s: the main process (%d) logged the reload" % (name, pid))
        st = unit("ActiveState", "SubState", "MainPID")
        is_((st["ActiveState"], st["SubState"], st["MainPID"]), ("active", "running", str(pid)),
            "%s: still active (running), same MainPID" % name)

    def restore(self):
        with open(CONF, "w") as f:
            f.write(self.original)
        if self.was_active:
            sh("systemctl", "restart", SERVICE)
        else:
            sh("systemctl", "stop", SERVICE)


relay = Systemd() if SYSTEMD else Direct()
new = None
try:
    vcs = [vc_open() for _ in range(3)]
    ok(all(vc_echo(v) for v in vcs), "3 RPC channels open and echo before the upgrade")

    if SYSTEMD:
        relay.reload(CONFIG2, "reload", lambda: health(PORT2) == "HTTP/1.1 200 OK")
        with open(CONF, "w") as f:
            f.write(CONFIG2.replace("routes", "routes_typo"))
        rc, out = sh("systemctl", "reload", SERVICE)
        ok(rc != 0, "a bad file: systemctl reload fails (ExecReload's exrelay -t) (%d)" % rc)
        st = unit("ActiveState", "MainPID")
        is_((st["ActiveState"], st["MainPID"], health(PORT2)), ("active", str(relay.pid), "HTTP/1.1 200 OK"),
            "a bad file: still active, same MainPID, the good configuration still in use")
        with open(CONF, "w") as f:
            f.write(CONFIG2)
        ok(all(vc_echo(v) for v in vcs), "the 3 channels still echo after the reloads")
        invocation = unit("InvocationID")["InvocationID"]

    prober = Prober(PORT)
    prober.start()
    wait_for(lambda: len(prober.ok_times) >= 20, 5)

    t_up = time.monotonic()
    rc, out = sh("dpkg", "-i", newer)
    diag("dpkg -i took %.2f s:\n%s" % (time.monotonic() - t_up, out.strip()))
    is_(rc, 0, "dpkg -i %s (the newer package)" % os.path.basename(newer))
    is_(sh("dpkg-query", "-W", "-f=${Version}", "exrelay")[1], version + "+upgradetest1", "the newer version is installed")
    ok("pid %d hands its listening sockets to the new /usr/sbin/exrelay" % relay.pid in out,
       "the postinst asked the running exrelay to hand over (SIGUSR2)")
    ok(wait_for(lambda: read_pidfile(PIDFILE) not in (0, relay.pid) and pid_alive(read_pidfile(PIDFILE)), 20),
       "a new process wrote its pid to the pidfile")
    new = read_pidfile(PIDFILE)
    ok(os.readlink("/proc/%d/exe" % new) == "/usr/sbin/exrelay", "it runs the new /usr/sbin/exrelay")
    ok(os.readlink("/proc/%d/exe" % relay.pid).endswith("(deleted)"), "the old process runs the replaced file")
    with open("/proc/%d/status" % new) as f:
        uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
    is_(int(uid), pwd.getpwnam("_exrelay").pw_uid, "it runs as _exrelay")
    ok(wait_for(lambda: "handed over to pid %d" % new in relay.log(), 10), "the old process handed over")
    if SYSTEMD:
        st = unit("MainPID", "ActiveState", "SubState", "InvocationID", "NRestarts")
        diag("MainPID before the upgrade %d, after %s" % (relay.pid, st["MainPID"]))
        is_(st["MainPID"], str(new), "MainPID is the new process (the postinst waited for it)")
        is_((st["ActiveState"], st["SubState"], st["NRestarts"], st["InvocationID"]),
            ("active", "running", "0", invocation), "the service stayed active: no restart, same invocation")
        is_(parent_of(new), 1, "the new main process is systemd's child (supervised, not 'alien')")
        ok("not our child" not in relay.log(), "systemd did not log 'Supervising process ... which is not our child'")
    ok(all(vc_echo(v) for v in vcs), "the 3 channels opened before the upgrade still echo after it")
    vc4 = vc_open()
    ok(vc_echo(vc4), "a channel opened after the upgrade echoes (new process)")
    vcs[0].close()
    vcs[1].close()
    time.sleep(0.5)
    ok(relay.alive() and vc_echo(vcs[2]), "two channels ended: the old process still drains the third, which echoes")
    vcs[2].close()
    ok(wait_for(lambda: not relay.alive(), 15), "the last channel ended: the old process is gone")
    relay.check_exit()
    diag("old process gone %.2f s after dpkg -i started" % (time.monotonic() - t_up))
    ok(vc_echo(vc4), "the new process's channel still echoes")
    if SYSTEMD:
        st = unit("MainPID", "ActiveState")
        is_((st["ActiveState"], st["MainPID"]), ("active", str(new)), "the old process's end left the service alone")
    vc4.close()
    time.sleep(0.2)
    prober.finish()
    gap, n = prober.longest_gap(t_up - 0.5)
    diag("longest refusal gap during the package upgrade: %.1f ms (%d probes sent, %d answered, %d failed)" % (
        gap * 1000 if gap else -1, prober.count, len(prober.ok_times), len(prober.failures)))
    for start, length in prober.gaps(t_up - 0.5, over=0.1):
        diag("gap of %.1f ms at +%.3f s after dpkg -i started" % (length * 1000, start - t_up))
    is_(prober.failures, [], "no probe was refused or failed during the package upgrade")
    ok(gap is not None and gap < 1.0, "answers kept coming (longest gap %.1f ms)" % (gap * 1000 if gap else -1))

    if SYSTEMD:
        relay.reload(CONFIG, "reload after the upgrade",
                     lambda: health(PORT2) == "ConnectionRefusedError" and health(PORT) == "HTTP/1.1 200 OK")
        # systemctl stop: SIGTERM to the main process, which drains; a channel still open goes on.
        vc5 = vc_open()
        ok(vc_echo(vc5), "a channel is open before systemctl stop")
        t_stop = time.monotonic()
        stop = subprocess.Popen(["systemctl", "stop", SERVICE], stdin=subprocess.DEVNULL)
        ok(wait_for(lambda: unit("ActiveState")["ActiveState"] == "deactivating", 10),
           "systemctl stop: the service is deactivating (draining)")
        time.sleep(1)
        ok(pid_alive(new) and vc_echo(vc5), "1 s into the stop, the channel still echoes (the drain)")
        vc5.close()
        try:
            stop.wait(60)
        except subprocess.TimeoutExpired:
            stop.kill()
        took = time.monotonic() - t_stop
        is_(stop.returncode, 0, "systemctl stop returned 0")
        diag("systemctl stop took %.2f s (the channel closed after about 1 s; TimeoutStopSec=45)" % took)
        ok(took < 10, "the stop ended once the channel closed (%.2f s), long before TimeoutStopSec" % took)
        st = unit("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
        is_((st["ActiveState"], st["Result"], st["ExecMainCode"], st["ExecMainStatus"]),
            ("inactive", "success", "1", "0"), "inactive, Result=success, the main process exited with status 0")
        ok(wait_for(lambda: "exrelay[%d]: info: stopped" % new in relay.log(), 10), "the main process logged its end")
        ok("SIGKILL" not in relay.log(), "systemd killed nothing (no SIGKILL in the journal)")
        ok("reception only permitted" not in relay.log(whole=True),
           "systemd accepted every sd_notify message (none from a process that was not the main one)")
    errs = [ln for ln in relay.log().splitlines() if "]: error: " in ln]
    is_(errs, [], "no error-level line from either process")
    if not SYSTEMD:
        os.kill(new, signal.SIGTERM)
        ok(wait_for(lambda: not pid_alive(new), 15), "the new process stops on SIGTERM")
finally:
    if SYSTEMD:
        diag("exrelay.service's journal:\n" + relay.log().strip())
        relay.restore()
    elif new and pid_alive(new):
        os.kill(new, signal.SIGKILL)
diag("total %.1f s" % (time.monotonic() - T0))
done()
