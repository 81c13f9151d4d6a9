#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_addrfile.py: `exrelay -a FILE`, the addresses exrelay bound (TAP).

Listeners on 127.0.0.1 and [::1] with port 0: the file has one `NAME ADDRESS:PORT` line per
listener in the configuration's order, IPv6 in brackets, the ports the kernel chose, and each
accepts; no temporary file is left beside it. A SIGHUP that changes the listener set (one
removed, one added on port 0) rewrites it; a failed reload leaves it alone; a normal stop
removes it. `exrelay -h` documents -a.
"""

import os
import re
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, diag, run_checks, skip_all, start_standin, start_exrelay, exrelay_path, \
    wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
try:
    with socket.socket(socket.AF_INET6) as s6:
        s6.bind(("::1", 0))
except OSError as e:
    skip_all("no IPv6 loopback (::1): %s" % e)

ex = start_standin(ping_interval=0)


def config(listeners):
    """A config with the given listener lines, one backend (the stand-in), one route."""
    return '''global = { workers = 2; drain_timeout = 2; };
listeners = (
%s );
backends = ( { name = "one"; servers = [ "127.0.0.1:%d" ]; } );
routes = ( { backend = "one"; } );
''' % (",\n".join("  " + l for l in listeners), ex.port)


PUB4 = '{ name = "pub4"; bind = "127.0.0.1:0"; health_path = "/hc"; }'
PUB6 = '{ name = "pub6"; bind = "[::1]:0"; health_path = "/hc"; }'
ADMIN = '{ name = "admin"; bind = "127.0.0.1:0"; role = "admin"; }'
EXTRA = '{ name = "extra"; bind = "127.0.0.1:0"; health_path = "/hc"; }'
relay = start_exrelay(config([PUB4, PUB6, ADMIN]))


def lines():
    """The address file's lines."""
    with open(relay.addr_path) as f:
        return f.read().splitlines()


def health(host, port, path="/hc"):
    """The status of GET path on host:port (a fresh connection)."""
    with rpch.HttpConn(host, port, timeout=5) as c:
        resp, _ = c.request("GET", path, [("Host", "x"), ("Connection", "close")], timeout=5)
        return resp.status


def refused(host, port):
    """True when a connect to host:port is refused."""
    try:
        with socket.create_connection((host, port), timeout=2):
            return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def check_start():
    """The file after start-up: format, order, IPv6 brackets, real ports that accept."""
    got = lines()
    diag("\n".join(got))
    ok(len(got) == 3 and re.match(r"^pub4 127\.0\.0\.1:\d+$", got[0]) and re.match(r"^pub6 \[::1\]:\d+$", got[1])
       and re.match(r"^admin 127\.0\.0\.1:\d+$", got[2]),
       "one `NAME ADDRESS:PORT` line per listener, in the configuration's order, IPv6 as [::1]:PORT")
    ports = relay.ports
    ok(all(0 < p < 65536 for p in ports.values()) and len(set(ports.values())) == 3,
       "port 0 resolved: three distinct ports (%r)" % (ports,))
    is_((health("127.0.0.1", ports["pub4"]), health("::1", ports["pub6"]), health("127.0.0.1", ports["admin"], "/health")),
        (200, 200, 200), "each address in the file is exrelay's listener (IPv4, IPv6, admin)")
    is_(sorted(os.listdir(os.path.dirname(relay.addr_path))), ["addrs", "exrelay.conf", "exrelay.stderr",
                                                               "exrelay.stdout"],
        "no temporary file left beside the address file")
    lr = re.findall(r"listening name=(\S+) addr=(\S+)", relay.stderr_text())
    is_(["%s %s" % x for x in lr[:3]], got, "the file agrees with the `listening` log lines")


def check_reload():
    """SIGHUP with a changed listener set rewrites the file; a failed reload does not."""
    before = dict(relay.ports)
    relay.reload(config([PUB4, ADMIN, EXTRA]))        # pub4, admin pinned to their ports
    ok(relay.wait_reloaded(10), "SIGHUP with a changed listener set: the file is rewritten")
    got = lines()
    diag("\n".join(got))
    is_([l.split()[0] for l in got], ["pub4", "admin", "extra"], "after the reload: pub6 gone, extra added, in order")
    is_((relay.ports.get("pub4"), relay.ports.get("admin")), (before["pub4"], before["admin"]),
        "listeners kept by the reload keep their ports")
    extra = relay.ports.get("extra", 0)
    ok(extra not in (0, before["pub4"], before["pub6"], before["admin"]), "the new listener got a port of its own (%d)" % extra)
    is_(health("127.0.0.1", extra), 200, "the new listener serves at the address in the file")
    ok(wait_for(lambda: refused("::1", before["pub6"]), 5), "the removed listener's address refuses connections")
    stamp = relay.addr_stamp()
    text = "\n".join(got)
    relay.reload("listeners = ( { name = \"broken\" ; bind = ; } );\n")
    ok(wait_for(lambda: "reload failed" in relay.stderr_text(), 5), "an invalid file on SIGHUP: reload failed")
    # The failed reload is logged after the point where a successful one writes the file.
    is_((relay.addr_stamp(), "\n".join(lines())), (stamp, text), "a failed reload leaves the file as it was")
    relay.reload(config([PUB4, ADMIN, EXTRA]))
    ok(relay.wait_reloaded(10) and relay.ports.get("extra") == extra, "a valid file again: rewritten, same ports")


def check_usage():
    """exrelay -h names -a."""
    p = subprocess.run([exrelay_path(), "-h"], capture_output=True, text=True, timeout=10)
    ok(p.returncode == 0 and "[-a FILE]" in p.stdout and re.search(r"^\s+-a FILE\s", p.stdout, re.M),
       "exrelay -h documents -a FILE")


def check_stop():
    """A normal stop removes the file."""
    path = relay.addr_path
    is_(relay.stop(), 0, "SIGTERM: exit status 0")
    ok(not os.path.exists(path), "a normal stop removes the address file")
    errs = [l for l in relay.stderr_text().splitlines() if "Sanitizer" in l or "runtime error" in l]
    is_(errs, [], "no sanitizer lines in exrelay's stderr")


run_checks((check_start, check_reload, check_usage, check_stop), None, T0)
