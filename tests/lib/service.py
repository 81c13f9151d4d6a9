# SPDX-License-Identifier: BSD-2-Clause
"""
service.py: helpers for exrelay's "good Linux service" integration tests (t_service_*.py).

  * spawn_exrelay(): like harness.start_exrelay(), plus extra environment variables (NOTIFY_SOCKET)
    and an optional wrapper argv (e.g. `unshare -m sh -c ...`) that must `exec` exrelay, so the pid
    stays the daemon's own.
  * Notify: a unix datagram socket playing systemd's $NOTIFY_SOCKET; collects the datagrams.
  * CountingConn: rpch.HttpConn that counts the bytes sent and received (for /metrics checks).
  * metrics(), admin_get(), agent_line(): the admin and agent ports.
  * thread_stats(), listening_sockets(), socket_inodes(): what /proc tells about the daemon.
  * access_line(): one request's line in a combined access log.
Everything started or created here is registered with the harness and cleaned up at exit.
"""

import os
import re
import socket
import threading
import time

import harness
import rpch


def spawn_exrelay(config_text, ports=(), args=(), env=None, wrapper=None, timeout=10.0, wait=True,
                  host="127.0.0.1", name="exrelay"):
    """Writes config_text to a temp file and runs [wrapper...] exrelay -f FILE -a ADDR_FILE [args].

    `env`: extra environment variables (added to os.environ). `wrapper`: a function taking the
    exrelay argv and returning the argv to run (it must exec exrelay as its last step). When
    `wait`, waits for the address file (read into .addrs/.ports) and then until every port in
    `ports` accepts (RuntimeError with stderr otherwise). Returns a harness.Exrelay (stopped at
    exit).
    """
    d = harness.tmpdir("exrelay-daemon-")
    argv, cfg, addr_path = harness.exrelay_argv(d, config_text, args)
    if wrapper is not None:
        argv = wrapper(argv)
    full_env = dict(os.environ)
    full_env.update(env or {})
    p = harness.Exrelay(name, argv, d, env=full_env)
    p.config_path, p.addr_path = cfg, addr_path
    p.workdir = d
    if wait:
        p.wait_addrs(timeout)
        for port in ports:
            if not harness.wait_port(host, port, timeout, p.alive):
                raise RuntimeError("exrelay not listening on %s:%d (exit %r): %s" % (
                    host, port, p.returncode, p.stderr_text()[-3000:]))
    return p


class Notify:
    """systemd's side of sd_notify: a bound unix datagram socket; .path for $NOTIFY_SOCKET."""

    def __init__(self):
        """Binds a socket in a fresh temp dir and starts a thread collecting datagrams."""
        d = harness.tmpdir("exrelay-notify-")
        self.path = os.path.join(d, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []          # (monotonic time, text)
        self.lock = threading.Lock()
        self.running = True
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        harness._started.append(self)

    def _run(self):
        """Receives datagrams until stop()."""
        while self.running:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append((time.monotonic(), data.decode("utf-8", "replace")))

    def texts(self):
        """The datagrams received so far, as strings."""
        with self.lock:
            return [m for _, m in self.messages]

    def wait_count(self, pred, count, timeout=10.0):
        """Waits until at least `count` datagrams satisfy pred(text); returns those."""
        return harness.wait_for(lambda: (lambda ms: ms if len(ms) >= count else None)(
            [m for m in self.texts() if pred(m)]), timeout) or []

    def stop(self):
        """Stops the thread and closes the socket."""
        self.running = False
        self.thread.join(2)
        self.sock.close()


def notify_fields(text):
    """A notify datagram "A=1\\nB=x" as a dict."""
    return dict(line.split("=", 1) for line in text.split("\n") if "=" in line)


class CountingConn(rpch.HttpConn):
    """rpch.HttpConn counting every byte sent (.nsent) and received (.nrecv)."""

    def __init__(self, *a, **kw):
        """Connects like rpch.HttpConn."""
        self.nsent = self.nrecv = 0
        super().__init__(*a, **kw)

    def send(self, data):
        """Sends all of data and counts it."""
        super().send(data)
        self.nsent += len(data)

    def _fill(self, deadline, want=65536):
        """Receives more bytes (counted)."""
        before = len(self.buf)
        r = super()._fill(deadline, want)
        self.nrecv += len(self.buf) - before
        return r


def admin_get(port, path, timeout=5.0):
    """(status, body bytes) of GET path on the admin port (a fresh connection, closed after)."""
    with rpch.HttpConn("127.0.0.1", port, timeout=timeout) as c:
        resp, body = c.request("GET", path, [("Host", "x"), ("Connection", "close")], timeout=timeout)
        return resp.status, body


_METRIC_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
_LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format -> {(name, ((label, value), ...sorted)): float}. Comments skipped;
    a malformed sample line raises ValueError."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _METRIC_RE.match(line)
        if not m:
            raise ValueError("bad metrics line %r" % line)
        labels = tuple(sorted(_LABEL_RE.findall(m.group(2) or "")))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(samples, name, **labels):
    """The value of one sample (0 when absent: counters not yet created)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0)


def metrics(port, timeout=5.0):
    """Scrapes /metrics on the admin port; returns parse_metrics() of the body."""
    status, body = admin_get(port, "/metrics", timeout)
    if status != 200:
        raise ValueError("/metrics answered %d" % status)
    return parse_metrics(body.decode())


agent_line = harness.agent_line


def thread_stats(pid):
    """{tid: (voluntary context switches, utime+stime clock ticks)} of every thread of pid."""
    out = {}
    base = "/proc/%d/task" % pid
    for tid in os.listdir(base):
        try:
            with open("%s/%s/status" % (base, tid)) as f:
                vol = int(re.search(r"^voluntary_ctxt_switches:\s*(\d+)", f.read(), re.M).group(1))
            with open("%s/%s/stat" % (base, tid)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[int(tid)] = (vol, int(fields[11]) + int(fields[12]))
        except (OSError, AttributeError):
            pass
    return out


def socket_inodes(pid):
    """The inodes (text, as /proc/net/tcp shows them) of the sockets process pid holds open."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    return inodes


def listening_sockets(port, pid=None):
    """The number of TCP sockets in LISTEN state on local port `port` (IPv4 and IPv6).

    With `pid`, only sockets whose inode is among that process's open fds."""
    return len(listen_queues(port, pid))


def listen_queues(port, pid=None):
    """The accept queue lengths of the TCP sockets in LISTEN state on local port `port` (one entry
    per socket: with SO_REUSEPORT, one per exrelay worker). With `pid`, only that process's."""
    inodes = None if pid is None else socket_inodes(pid)
    # /proc/net/tcp is produced in pieces and may skip rows while other processes open and
    # close sockets (a busy parallel test run): merge three readings, keyed by socket inode.
    found = {}
    for _ in range(3):
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                with open(table) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port and \
                                (inodes is None or parts[9] in inodes):
                            found[parts[9]] = int(parts[4].split(":")[1], 16)   # rx_queue: the accept queue
            except OSError:
                pass
    return list(found.values())


# A combined line: CLIENT - USER [TIME] "REQUEST" STATUS BYTES "REFERER" "UA" DURATION ROUTE SERVER
COMBINED = re.compile(r'^(\S+) - (\S+) \[[^\]]+\] "([^"]*)" (\d{3}) (\S+) "([^"]*)" "([^"]*)" (\S+) (\S+) (\S+)$')


def access_line(path, ua, timeout=5):
    """The parsed line of the combined access log `path` for the request sent with User-Agent
    `ua` (polled for until `timeout`): a dict with client, user, request, status, route; or None."""
    def find():
        try:
            with open(path) as f:
                for line in f:
                    m = COMBINED.match(line.rstrip("\n"))
                    if m and m.group(7) == ua:
                        return {"client": m.group(1), "user": m.group(2), "request": m.group(3),
                                "status": int(m.group(4)), "route": m.group(9)}
        except FileNotFoundError:
            return None
        return None
    return harness.wait_for(find, timeout)


def proc_status(pid):
    """/proc/PID/status as a dict of field -> text."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def sanitizer_lines(text):
    """Lines of a stderr text that are sanitizer reports."""
    return [line for line in text.splitlines() if "Sanitizer" in line or "runtime error:" in line]


def stop_all(relays):
    """Stops each exrelay (SIGTERM) and asserts: exit status 0, no sanitizer line, and no
    error-level line unless the test provoked some (relay.errors_expected = True)."""
    for r in relays:
        rc = r.stop()
        harness.is_(rc, 0, "exrelay pid %d: exit status 0" % r.pid)
        text = r.stderr_text()
        errs = sanitizer_lines(text)
        if not getattr(r, "errors_expected", False):
            errs += [line for line in text.splitlines() if "]: error: " in line]
        harness.is_(errs, [], "exrelay pid %d: no %ssanitizer lines in stderr"
                    % (r.pid, "" if getattr(r, "errors_expected", False) else "error-level / "))
