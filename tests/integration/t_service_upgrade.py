#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_service_upgrade.py: binary upgrade on SIGUSR2 without dropping a channel (TAP).

exrelay runs from a copy of the built binary in a temporary folder; the copy is then replaced by
another file (a new inode, as dpkg does) and exrelay gets SIGUSR2. Meanwhile RPC over HTTP
channels (IN/OUT pairs to the Exchange stand-in) are open, and a prober connects every 10 ms and
asks the traffic port's health_path. The test shows:
  - the new process runs the new file, takes over the same ports (address file), writes its pid
    to the pidfile and answers on the traffic port, the admin port and the admin socket;
  - no probe is refused or fails at any time; the longest gap between answered probes is printed;
  - the channels opened before keep echoing after the hand-over (the old process drains them), a
    channel that ends by itself ends cleanly, and the old process cuts the rest at drain_timeout
    and exits 0; new channels go to the new process;
  - an upgrade whose configuration is invalid fails and the running process goes on serving,
    as does one whose new binary exits at once;
  - a server weight set through the runtime API carries over, and so does a health check's
    "down" (the new process does not send traffic to a server the old one knew down);
  - the upgraded process can be upgraded again (nothing of the first hand-over leaks);
  - sd_notify: the old (main) process sends MAINPID=<new pid> with READY=1 once the new one is
    ready, and nothing says STOPPING=1 (systemd would stop the service); a failed upgrade sends
    no MAINPID.
"""

import ctypes
import os
import re
import shutil
import signal
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (ok, is_, diag, done, start_standin, start_exrelay, tmpdir, wait_for, exrelay_path,  # noqa: E402
                     pid_alive, parent_of, read_pidfile, Prober, recv_all)
import rpch  # noqa: E402
from service import Notify, notify_fields  # noqa: E402

T0 = time.monotonic()
DRAIN = 5

SOURCE = exrelay_path()     # the built binary (EXRELAY then names the copy)
bindir = tmpdir("exrelay-bin-")
BIN = os.path.join(bindir, "exrelay")
work = tmpdir("exrelay-upgrade-")
PIDFILE = os.path.join(work, "exrelay.pid")
SOCK = os.path.join(work, "admin.sock")


def install_binary():
    """Puts a fresh copy of the built binary at BIN: a new file renamed over the old (dpkg's way)."""
    tmp = BIN + ".new"
    shutil.copy2(SOURCE, tmp)
    os.rename(tmp, BIN)


CONFIG = '''
global = { log_level = "info"; drain_timeout = %(drain)d; workers = 2; pidfile = "%(pidfile)s";
           admin_socket = { path = "%(sock)s"; mode = "0600"; }; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; };
listeners = (
  { name = "public"; bind = "127.0.0.1:0"; health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = ( { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; },
             { name = "owa"; servers = [ "127.0.0.1:%(oport)d" ];
               check = { interval = %(interval)s; timeout = 1; rise = 2; fall = 1; path = "auto"; }; } );
routes = ( { backend = "exchange"; paths = [ "/rpc" ]; }, { backend = "owa"; paths = [ "/owa" ]; } );
'''

ex = start_standin(ping_interval=0, notify_interval=30)
ex2 = start_standin(name="owa")         # its health page answers 503 at first: down in exrelay
ex2.control(health={"*": 503})
install_binary()
os.environ["EXRELAY"] = BIN
notify = Notify()       # systemd's side of sd_notify (Type=notify, NotifyAccess=main)
os.environ["NOTIFY_SOCKET"] = notify.path
# Like systemd (PID 1, or the manager of a user service), this test becomes the reaper of every
# orphan below it: a MAINPID= that is the reaper's own child is one systemd fully supervises (it
# waits for it on stop and sees its exit); another process's child is "alien" (systemd 252
# SIGKILLs it right after SIGTERM on stop, with no drain).
SUBREAPER = ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) == 0     # PR_SET_CHILD_SUBREAPER


relay = start_exrelay(CONFIG % dict(drain=DRAIN, pidfile=PIDFILE, sock=SOCK, sport=ex.port, oport=ex2.port,
                                    interval="0.3"))
OWA = "127.0.0.1:%d" % ex2.port
PORT = relay.port("public")
ADMIN = relay.port("admin")
extra_pids = []     # processes started by the upgrades (not the harness's children)


def read_pid():
    return read_pidfile(PIDFILE)


def get(port, path):
    """(status, body) of GET path on port (Connection: close)."""
    with rpch.HttpConn("127.0.0.1", port, timeout=5) as c:
        resp, body = c.request("GET", path, [("Host", "x"), ("Connection", "close")], timeout=5)
        return resp.status, body


def admin_command(cmd):
    """The runtime API's answer to cmd on the admin socket."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(SOCK)
    s.sendall(cmd.encode() + b"\n")
    data = recv_all(s)
    s.close()
    return data.decode()


def vc_open():
    return rpch.open_virtual_connection(lambda: rpch.HttpConn("127.0.0.1", PORT, timeout=10))


def upgrade(pid, timeout=20):
    """SIGUSR2 to pid; waits until the pidfile names another running process; returns its pid or None."""
    os.kill(pid, signal.SIGUSR2)
    if not wait_for(lambda: read_pid() not in (0, pid) and pid_alive(read_pid()), timeout):
        return None
    new = read_pid()
    extra_pids.append(new)
    return new


def cleanup_extra():
    for p in extra_pids:
        if pid_alive(p):
            os.kill(p, signal.SIGKILL)


def check_daemon():
    """-d: the new process goes to the background too; the pipe still says when it is ready."""
    d = tmpdir("exrelay-upgrade-d-")
    pidfile, elog = os.path.join(d, "pid"), os.path.join(d, "error.log")
    conf = CONFIG % dict(drain=DRAIN, pidfile=pidfile, sock=os.path.join(d, "admin.sock"), sport=ex.port,
                         oport=ex2.port, interval="60")
    conf = conf.replace('log_level = "info";', 'log_level = "info"; error_log = "%s";' % elog)
    p = start_exrelay(conf, args=["-d"], wait=False)
    ok(wait_for(lambda: read_pidfile(pidfile) and pid_alive(read_pidfile(pidfile)), 10), "-d: the daemon runs")
    first = read_pidfile(pidfile)
    extra_pids.append(first)
    port = wait_for(lambda: p.read_addrs() and p.port("public"), 10)
    os.kill(first, signal.SIGUSR2)
    ok(wait_for(lambda: read_pidfile(pidfile) not in (0, first) and pid_alive(read_pidfile(pidfile)), 15),
       "-d: SIGUSR2 starts a new daemon (pidfile)")
    second = read_pidfile(pidfile)
    extra_pids.append(second)
    ok(wait_for(lambda: not pid_alive(first), DRAIN + 5), "-d: the old daemon is gone (nothing to drain)")
    ok(port and get(port, "/exrelay/health") == (200, b"ok\n"), "-d: the new daemon answers on the same port")
    with open(elog) as f:
        log = f.read()
    ok("handed over to pid %d" % second in log, "-d: the old daemon handed over to the new one's pid")
    os.kill(second, signal.SIGTERM)
    ok(wait_for(lambda: not pid_alive(second), 10), "-d: the new daemon stops on SIGTERM")


try:
    old = relay.pid
    ok(wait_for(lambda: read_pid() == old, 10), "the pidfile names the first process (written after the -a file)")
    vcs = [vc_open() for _ in range(3)]
    ok(all(v.echoes() for v in vcs), "3 RPC channels open and echo before the upgrade")
    SRV = "exchange/127.0.0.1:%d" % ex.port
    admin_command("set weight %s 42" % SRV)
    ok(admin_command("get weight %s" % SRV).startswith("42 "), "runtime API: weight of %s set to 42" % SRV)

    ok(wait_for(lambda: (relay.server_stat("owa", OWA) or {}).get("status", "").startswith("DOWN"), 10),
       "a checked server whose health page says 503 is DOWN")
    # From here both processes check once a minute (the first check falls anywhere in that
    # minute) and need two good ones: the server stays down in the old process (reloaded first,
    # so that it cannot see the server come back before the hand-over, as it did every 0.3 s on
    # a slow machine), and the new one starts with what the old one knew, though it is healthy now.
    with open(relay.config_path) as f:
        text = f.read()
    for name in ("public", "admin", "agent"):      # the ports it has: a reload keeps these sockets
        text = text.replace('name = "%s"; bind = "127.0.0.1:0"' % name,
                            'name = "%s"; bind = "127.0.0.1:%d"' % (name, relay.port(name)))
    with open(relay.config_path, "w") as f:
        f.write(text.replace("interval = 0.3;", "interval = 60;"))
    mark = len(relay.stderr_text())
    os.kill(old, signal.SIGHUP)
    ok(wait_for(lambda: "configuration reloaded" in relay.stderr_text()[mark:], 10),
       "the old process reloaded (health checks once a minute)")
    ex2.control(health={})
    install_binary()    # the package's new file: the running process's binary is now deleted
    ok(os.readlink("/proc/%d/exe" % old).endswith("(deleted)"), "the running binary was replaced on disk")

    prober = Prober(PORT)
    prober.start()
    wait_for(lambda: len(prober.ok_times) >= 20, 5)
    t_sig = time.monotonic()
    new = upgrade(old)
    ok(new is not None, "SIGUSR2: a new process (pid %s) wrote its pid to the pidfile" % new)
    t_ready = time.monotonic()
    diag("hand-over took %.3f s (signal to new pidfile)" % (t_ready - t_sig))
    ok(new is not None and os.readlink("/proc/%d/exe" % new) == BIN, "the new process runs the new file %s" % BIN)
    relay.read_addrs()
    is_(relay.port("public"), PORT, "the new process listens on the same traffic port (address file)")
    is_(relay.port("admin"), ADMIN, "... and the same admin port")
    is_(get(ADMIN, "/health"), (200, b"ok\n"), "the admin port answers 'ok' (the new process, not draining)")
    ok(wait_for(lambda: "handed over to pid %d" % new in relay.stderr_text(), 10),
       "the old process logs the hand-over once the new one is ready")
    ok(notify.wait_count(lambda m: notify_fields(m).get("MAINPID") == str(new) and
                         notify_fields(m).get("READY") == "1", 1, 5),
       "sd_notify: MAINPID=%d with READY=1 (from the old main process)" % new)
    ok(SUBREAPER and parent_of(new) == os.getpid(),
       "the new main process is the reaper's child (systemd's own), not the old process's (parent %d)" %
       parent_of(new))
    ok(wait_for(lambda: "Pid: %d" % new in admin_command("show info"), 5),
       "the admin socket is answered by the new process (show info: Pid: %d)" % new)
    st = (relay.server_stat("owa", OWA) or {}).get("status")
    ok(st and st.startswith("DOWN"), "the server the old process saw down starts down in the new one (%s)" % st)
    w = admin_command("get weight %s" % SRV)
    ok(w.startswith("42 "), "the weight set through the runtime API carried over: %r" % w.strip())
    ok(relay.alive(), "the old process still runs (draining its channels)")

    ok(all(v.echoes() for v in vcs), "the 3 channels opened before the upgrade still echo after it")
    vc4 = vc_open()
    ok(vc4.echoes(), "a channel opened after the upgrade echoes (new process)")
    vcs[0].close()      # this one ends by itself

    ok(wait_for(lambda: not relay.alive(), DRAIN + 10), "the old process is gone after the drain")
    t_gone = time.monotonic()
    is_(relay.returncode, 0, "the old process exited with status 0")
    diag("old process gone %.2f s after the hand-over (drain_timeout %d s)" % (t_gone - t_ready, DRAIN))
    ok(t_gone - t_ready >= DRAIN - 0.5, "it waited for drain_timeout with channels open")
    cut = [v.out.read_until_close(5) for v in vcs[1:]]
    ok(all(c == b"" for c in cut), "the two channels left open were cut at drain_timeout (EOF)")
    ok(vc4.echoes(), "the channel on the new process still echoes after the old one left")
    ok(pid_alive(new) and read_pid() == new, "the pidfile still names the new process")
    ok(os.path.exists(relay.addr_path), "the old process left the address file (the new one's) in place")
    ok(os.path.exists(SOCK), "the old process left the admin socket file (the new one's) in place")

    ok(not [m for m in notify.texts() if "STOPPING=1" in m], "sd_notify: no STOPPING=1 from the draining old process")

    # A failed upgrade: the new configuration is invalid; the running process goes on.
    n_mainpid = len([m for m in notify.texts() if "MAINPID=" in m])
    with open(relay.config_path) as f:
        good = f.read()
    with open(relay.config_path, "w") as f:
        f.write(good + "\nbogus_setting = 1;\n")
    mark = len(relay.stderr_text())
    os.kill(new, signal.SIGUSR2)
    ok(wait_for(lambda: "upgrade failed, this process keeps serving" in relay.stderr_text()[mark:], 15),
       "an upgrade to an invalid configuration fails (logged)")
    ok(pid_alive(new) and read_pid() == new, "the running process goes on, the pidfile unchanged")
    is_(get(PORT, "/exrelay/health"), (200, b"ok\n"), "it still answers on the traffic port")
    ok(vc4.echoes(), "its channel still echoes")
    ok(notify.wait_count(lambda m: "upgrade failed" in notify_fields(m).get("STATUS", ""), 1, 5) and
       len([m for m in notify.texts() if "MAINPID=" in m]) == n_mainpid,
       "sd_notify: STATUS says the upgrade failed, no new MAINPID")
    bad_child = [ln for ln in relay.stderr_text()[mark:].splitlines() if "bogus_setting" in ln]
    ok(bad_child, "the new process said why: %s" % (bad_child[:1],))

    with open(relay.config_path, "w") as f:
        f.write(good)

    # A failed upgrade: the new binary exits at once (a broken file).
    with open(BIN + ".new", "w") as f:
        f.write("#!/bin/sh\nexit 3\n")
    os.chmod(BIN + ".new", 0o755)
    os.rename(BIN + ".new", BIN)
    mark = len(relay.stderr_text())
    os.kill(new, signal.SIGUSR2)
    ok(wait_for(lambda: "exited with status 3" in relay.stderr_text()[mark:], 15) and
       "upgrade failed, this process keeps serving" in relay.stderr_text()[mark:],
       "a new binary that exits at once: the upgrade fails (logged with its exit status)")
    ok(pid_alive(new) and read_pid() == new, "the running process goes on, the pidfile unchanged")
    ok(vc4.echoes(), "its channel still echoes")

    # A failed upgrade: the new binary goes on in a child of its own, as exrelay does, says which
    # ("pid PID") and never says it is ready: that process is killed at UPGRADE_TIMEOUT (30 s).
    with open(BIN + ".new", "w") as f:
        f.write("#!%s\nimport os, re, subprocess\n"
                "fd = int(re.search(r'^ready (\\d+)$', os.environ['EXRELAY_UPGRADE'], re.M).group(1))\n"
                "p = subprocess.Popen(['sleep', '300'], pass_fds=(fd,))\n"
                "os.write(fd, b'pid %%d\\n' %% p.pid)\n" % sys.executable)
    os.chmod(BIN + ".new", 0o755)
    os.rename(BIN + ".new", BIN)
    mark = len(relay.stderr_text())
    os.kill(new, signal.SIGUSR2)
    hung = [0]

    def hung_pid():
        m = re.search(r"the new process \(pid (\d+)\) was not ready in time; killed", relay.stderr_text()[mark:])
        hung[0] = int(m.group(1)) if m else 0
        return hung[0]
    ok(wait_for(hung_pid, 45), "a new process that never gets ready: the upgrade fails after 30 s (logged)")
    ok(hung[0] and wait_for(lambda: not pid_alive(hung[0]), 5),
       "the process it went on in (pid %d, not the old one's child) was killed" % hung[0])
    ok(pid_alive(new) and read_pid() == new, "the running process goes on, the pidfile unchanged")
    ok(vc4.echoes(), "its channel still echoes")
    install_binary()

    # Upgraded again, from the upgraded process.
    third = upgrade(new)
    ok(third is not None, "the upgraded process upgrades again (pid %s)" % third)
    ok(vc4.echoes(), "the channel opened on the second process echoes after the second upgrade")
    vc4.close()
    ok(wait_for(lambda: not pid_alive(new), DRAIN + 10), "the second process is gone once its channel ended")
    is_(get(PORT, "/exrelay/health"), (200, b"ok\n"), "the third process answers")
    time.sleep(0.2)     # a few probes after the last hand-over
    prober.finish()

    gap, n = prober.longest_gap(t_sig - 0.5, time.monotonic())
    diag("probes: %d sent, %d answered, %d failed; longest gap between answers: %.1f ms" % (
        prober.count, len(prober.ok_times), len(prober.failures), gap * 1000 if gap else -1))
    for start, length in prober.gaps(t_sig - 0.5):
        diag("gap of %.1f ms at +%.3f s after the first SIGUSR2" % (length * 1000, start - t_sig))
    is_(prober.failures, [], "no probe was refused or failed during the upgrades")
    ok(gap is not None and gap < 1.0, "answers kept coming (longest gap %.1f ms < 1 s)" % (gap * 1000 if gap else -1))

    errs = [ln for ln in relay.stderr_text().splitlines() if "Sanitizer" in ln or "runtime error" in ln]
    is_(errs, [], "no sanitizer lines from any of the processes")
    os.kill(third, signal.SIGTERM)
    ok(wait_for(lambda: not pid_alive(third), 10), "the third process stops on SIGTERM")
    ok(not os.path.exists(PIDFILE), "... and removes the pidfile")
    check_daemon()
finally:
    cleanup_extra()
diag("total %.1f s" % (time.monotonic() - T0))
done()
