# SPDX-License-Identifier: BSD-2-Clause
"""
soak_setup.py: the chaos soak's processes (contrib/soak/soak.py): exrelay's configurations A, B
and the invalid X, HAProxy's, and Setup, which starts the three stand-ins, Apache, exrelay,
HAProxy and the /health poller, and reads exrelay's /metrics, descriptors and error logs.
"""

import collections
import glob
import os
import random
import re
import sys
import time

from soak_book import BOOK, DRAIN_TIMEOUT, HERE, NAMES  # first: it puts tests/lib on sys.path
import harness
from soak_client import sha


# ----------------------------------------------------------------------------------------------
# The setup
# ----------------------------------------------------------------------------------------------

EXRELAY_CONF = '''# soak configuration %(gen)s
global = { drain_timeout = %(drain)d; max_connections = %(maxconn)d; log_level = "info";
           error_log = "%(dir)s/error.log"; };
access_log = { path = "%(dir)s/access.log"; format = "%(fmt)s"; };
timeouts = { proxy_header = 5; tls_handshake = 5; request_head = 10; client_idle = 30; connect = %(connect)d; };
listeners = (
  { name = "front"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32" ];
    health_path = "/exrelay/health"; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; },
  { name = "agent"; bind = "127.0.0.1:0"; role = "agent"; } );
backends = (
  { name = "exchange";
    servers = ( %(servers)s );
    check = { interval = 0.5; timeout = 1; rise = 2; fall = 2; path = "/owa/healthcheck.htm"; };
    idle_timeout = 3600; add_headers = [ "X-Soak-Config: %(gen)s" ]; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60;
    add_headers = [ "X-Soak-Config: %(gen)s" ]; } );
routes = (
  { backend = "exchange"; paths = [ "/rpc", "/owa", "/ews", "/mapi", "/autodiscover", "/ecp" ]; },
  { backend = "%(fallback)s"; } );
'''

HAPROXY_CONF = '''
global
    stats socket @HAPROXY_DIR@/haproxy.sock mode 600 level admin
    maxconn 8000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout client-fin 30s
    timeout server-fin 30s
    timeout check 3s
    retries 2
frontend fe
    bind 127.0.0.1:%(front)d
    default_backend be
backend be
    option httpchk GET /exrelay/health
    http-check expect status 200
    server exrelay1 127.0.0.1:%(relay)d send-proxy-v2 proxy-v2-options crc32c check check-send-proxy inter 2s fall 5 rise 2 agent-check agent-port %(agent)d agent-inter 1s
'''


class Setup:
    """The processes: stand-ins (restartable on their ports), Apache, exrelay, HAProxy."""

    def __init__(self, args):
        """Starts everything and waits until each is ready."""
        self.args = args
        self.dir = harness.tmpdir("exrelay-soak-")
        self.ports = {n: harness.free_port() for n in NAMES}
        self.standins, self.logs, self.gens = {}, [], collections.Counter()
        for n in NAMES:
            self.start_standin(n)
        self.apache = harness.start_apache(harness.free_port(), proxy_protocol=True)
        self.blobs = {}
        os.mkdir(os.path.join(self.apache.root, "htdocs", "soak"))
        for i, size in enumerate((1000, 65536, 300000, 1 << 20)):
            data = random.randbytes(size)
            with open(os.path.join(self.apache.root, "htdocs", "soak", "blob%d.bin" % i), "wb") as f:
                f.write(data)
            self.blobs["/soak/blob%d.bin" % i] = (size, sha(data))
        self.maxconn = 2 * args.pairs + 20 * args.clients + 150
        servers = ", ".join('{ name = "%s"; address = "127.0.0.1:%d"; }' % (n, self.ports[n]) for n in NAMES)
        base = dict(dir=self.dir, drain=DRAIN_TIMEOUT, maxconn=self.maxconn, servers=servers,
                    aport=self.apache.port, fallback="apache")
        self.confs = {
            "A": EXRELAY_CONF % dict(base, gen="A", fmt="json", connect=3),
            "B": EXRELAY_CONF % dict(base, gen="B", fmt="combined", connect=4),
            # invalid: the catch-all route names a backend that does not exist
            "X": EXRELAY_CONF % dict(base, gen="X", fmt="json", connect=3, fallback="nosuchbackend"),
        }
        if "misroute" in args.inject:       # /owa to Apache in config A: wrong_backend must fire
            self.confs["A"] = self.confs["A"].replace('"/rpc", "/owa", ', '"/rpc", ')
        self.relay = harness.start_exrelay(self.confs["A"])
        self.gen = "A"
        self.front, self.admin, self.agent = (self.relay.port(n) for n in ("front", "admin", "agent"))
        self.hport = harness.free_port()
        self.haproxy = harness.start_haproxy(HAPROXY_CONF % dict(front=self.hport, relay=self.front, agent=self.agent),
                                             ports=[self.hport])
        harness.wait_for(lambda: "UP" in (self.haproxy.server_stat("be", "exrelay1") or {}).get("status", ""), 20)
        self.poll_out = os.path.join(self.dir, "health.txt")
        self.poller = harness.Process("healthpoll", [sys.executable, os.path.join(HERE, "healthpoll.py"),
                                                     str(self.admin), self.poll_out, str(args.minutes * 60 + 600)],
                                      self.dir)
        self.port_of = {"127.0.0.1:%d" % p: n for n, p in self.ports.items()}

    def start_standin(self, name, timeout=15.0):
        """(Re)starts stand-in `name` on its fixed port with a fresh log; waits for its port file."""
        self.gens[name] += 1
        d = os.path.join(self.dir, "%s-%d" % (name, self.gens[name]))
        os.mkdir(d)
        log, pf, ctl = (os.path.join(d, f) for f in ("standin.log", "ports", "control.json"))
        argv = [sys.executable, harness.STANDIN, "--log", log, "--port-file", pf, "--control", ctl,
                "--name", name, "--name-header", "--listen", "127.0.0.1:%d" % self.ports[name]]
        deadline = time.monotonic() + timeout
        while True:
            p = harness.Standin("standin-" + name, argv, d)
            p.log, p.control_path = log, ctl
            if harness.wait_for(lambda: os.path.exists(pf) or not p.alive(), 10) and p.alive():
                break
            if time.monotonic() > deadline:     # the port still taken (a stopped process's socket?)
                raise RuntimeError("stand-in %s did not start: %s" % (name, p.stderr_text()[-1500:]))
            time.sleep(0.2)
        self.standins[name] = p
        self.logs.append((name, self.gens[name], log))
        return p

    def relay_fds(self):
        """Open descriptors of exrelay, less the splice pool's empty pipes (2 descriptors each,
        kept for the next transfer; the pool is bounded per worker, so those must stay few)."""
        m = re.search(r"^exrelay_splice_pipes (\d+)$", self.metrics(), re.M)
        pipes = int(m.group(1)) if m else 0
        if pipes > 4 * 8:
            BOOK.fail("pipe_leak", "%d splice pipes open while idle" % pipes)
        return len(os.listdir("/proc/%d/fd" % self.relay.pid)) - 2 * pipes

    def metrics(self):
        """exrelay's /metrics text (admin port)."""
        return harness.metrics_text(self.admin, timeout=5).decode("utf-8", "replace")

    def active(self):
        """Client connections open on the traffic listener (from /metrics)."""
        m = re.search(r'exrelay_connections_active\{listener="front"\} (\d+)', self.metrics())
        return int(m.group(1)) if m else -1

    def error_log_text(self):
        """exrelay's error log, all rotated files included, and its stderr."""
        out = self.relay.stderr_text()
        for p in sorted(glob.glob(os.path.join(self.dir, "error.log*"))):
            with open(p, encoding="utf-8", errors="replace") as f:
                out += f.read()
        return out
