#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
upgrade-test.py DEB: a package upgrade keeps open Outlook channels (TAP; run by ci-package.sh,
as root, with the exrelay package DEB installed).

A newer package is made from DEB (its version bumped to VERSION+upgradetest1: the same files,
which dpkg installs as new inodes, like any upgrade), then:
  - /usr/sbin/exrelay runs as _exrelay with exrelay.service's ExecStart line (the test's
    configuration in place of /etc/exrelay/exrelay.conf; no systemd here: the postinst takes the
    path it uses without systemd), in front of the Exchange stand-in (tests/standin);
  - three RPC over HTTP channels (IN/OUT pairs) are open and echoing, and a prober connects every
    10 ms to the traffic port and asks its health_path;
  - `dpkg -i` of the newer package: its postinst sends SIGUSR2 to the running exrelay, which
    starts the new /usr/sbin/exrelay with its listening sockets;
  - the new process (the new file, as _exrelay) takes the pidfile and answers; the channels opened
    before still echo; the old process drains them and exits 0 as soon as the last one ends (the
    cut at drain_timeout is t_service_upgrade.py's); no probe is refused; the longest gap between
    answers is printed.
"""

import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time

SRC = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "lib"))
from harness import (ok, is_, diag, done, bail_out, start_standin, tmpdir, wait_for, pid_alive,  # noqa: E402
                     read_pidfile, Prober, Process, free_port)
import rpch  # noqa: E402

T0 = time.monotonic()
DRAIN = 120     # longer than a slow dpkg -i: the channels end by themselves here (t_service_upgrade.py cuts at the timeout)
UNIT = "/lib/systemd/system/exrelay.service"

if len(sys.argv) != 2 or os.geteuid() != 0:
    bail_out("usage (as root): upgrade-test.py EXRELAY.deb")
DEB = os.path.abspath(sys.argv[1])


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


work = tmpdir("exrelay-pkg-upgrade-")
os.chmod(work, 0o755)       # _exrelay reads its configuration here and runs from here
version, newer = newer_package(DEB, work)
rc, installed = sh("dpkg-query", "-W", "-f=${Version}", "exrelay")
if rc or installed != version:
    rc, out = sh("apt-get", "install", "-y", "-qq", "--allow-downgrades", DEB)
    if rc:
        bail_out("cannot install %s: %s" % (DEB, out))
is_(sh("dpkg-query", "-W", "-f=${Version}", "exrelay")[1], version, "exrelay %s installed" % version)

run = os.path.join(work, "run")
os.mkdir(run)
shutil.chown(run, "_exrelay", "_exrelay")
PIDFILE, ADDRS = os.path.join(run, "exrelay.pid"), os.path.join(run, "addrs")
PORT = free_port()
ex = start_standin(ping_interval=0, notify_interval=30)
cfg = os.path.join(work, "exrelay.conf")
with open(cfg, "w") as f:
    f.write('''
global = { log_level = "info"; drain_timeout = %d; workers = 2; pidfile = "%s"; };
access_log = { path = "%s/access.log"; };
listeners = (
  { name = "public"; bind = "127.0.0.1:%d"; health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%d" ]; idle_timeout = 3600; } );
routes = ( { backend = "exchange"; paths = [ "/rpc" ]; } );
''' % (DRAIN, PIDFILE, run, PORT, ex.port))
os.chmod(cfg, 0o644)

with open(UNIT) as f:
    start = re.search(r"^ExecStart=(.*)$", f.read(), re.M).group(1).replace("/etc/exrelay/exrelay.conf", cfg)
argv = ["setpriv", "--reuid=_exrelay", "--regid=_exrelay", "--init-groups"] + start.split() + ["-a", ADDRS]
relay = Process("exrelay", argv, work)
ok(wait_for(lambda: read_pidfile(PIDFILE) == relay.pid and os.path.exists(ADDRS), 10),
   "exrelay started as the unit starts it: %s" % start)
if not relay.alive():
    bail_out("exrelay did not start: " + relay.stderr_text()[-2000:])
new = None
try:
    def vc_open():
        return rpch.open_virtual_connection(lambda: rpch.HttpConn("127.0.0.1", PORT, timeout=10))

    vcs = [vc_open() for _ in range(3)]
    ok(all(v.echoes() for v in vcs), "3 RPC channels open and echo before the upgrade")
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
    ok(wait_for(lambda: "handed over to pid %d" % new in relay.stderr_text(), 10), "the old process handed over")
    ok(all(v.echoes() for v in vcs), "the 3 channels opened before the upgrade still echo after it")
    vc4 = vc_open()
    ok(vc4.echoes(), "a channel opened after the upgrade echoes (new process)")
    vcs[0].close()
    vcs[1].close()
    time.sleep(0.5)
    ok(relay.alive() and vcs[2].echoes(), "two channels ended: the old process still drains the third, which echoes")
    vcs[2].close()
    ok(wait_for(lambda: not relay.alive(), 15), "the last channel ended: the old process is gone")
    is_(relay.returncode, 0, "the old process exited with status 0")
    diag("old process gone %.2f s after dpkg -i started" % (time.monotonic() - t_up))
    ok(vc4.echoes(), "the new process's channel still echoes")
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
    errs = [ln for ln in relay.stderr_text().splitlines() if "]: error: " in ln]
    is_(errs, [], "no error-level line from either process")
    os.kill(new, signal.SIGTERM)
    ok(wait_for(lambda: not pid_alive(new), 15), "the new process stops on SIGTERM")
finally:
    if new and pid_alive(new):
        os.kill(new, signal.SIGKILL)
diag("total %.1f s" % (time.monotonic() - T0))
done()
