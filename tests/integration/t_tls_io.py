#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_tls_io.py: how exrelay moves bytes, counted with strace (TAP).

exrelay runs under `strace -f` (its network calls and epoll_wait), in front of a loopback backend
of this test's own, with a TLS and a plaintext listener:
* One record, one send: a small keep-alive response (head rebuilt by exrelay + 100 body bytes
  read with it) leaves in ONE send call, and over TLS in ONE record (counted by the client, which
  reads the raw TLS stream itself); a request head and its small body reach the backend in one
  send; pipelined answers exrelay makes itself leave together. Counted as the difference between a connection with several exchanges and one with one
  (the handshakes are alike), so nothing depends on how many calls a handshake takes.
* Read-ahead and batching: an 8 MiB upload in 16 KiB records through TLS arrives byte for byte
  (SHA-256 at the backend) with fewer recv calls than records (GnuTLS alone pulls each record in
  two), and never more recv calls that found nothing (EAGAIN) than event-loop wakeups.
* Fairness: a TLS upload with megabytes waiting (its backend held back, then let go) is read
  at most two buffers and a read-ahead (160 KiB) per event-loop turn, not until its socket is
  empty: a fast channel cannot starve the other connections of its worker.
* Batched records: a 2 MiB download through TLS leaves in at most one send per two records
  (up to four records are made and sent together; one send per record before).
* Partial writes: pipelined requests whose answers (2 MiB, then a small one gathered with its
  head) meet a slow reader with a small receive buffer arrive byte for byte, TLS and plaintext;
  a last answer (Connection: close) to a slow TLS reader arrives whole, then close_notify:
  records made in a batch and not yet taken by the socket leave before the end.
Skipped when strace is missing or cannot trace.
"""

import hashlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import ok, is_, done, skip_all, serve_loopback, tmpdir, wait_for, exrelay_argv, read_head, cert  # noqa: E402
import harness  # noqa: E402

SMALL = b"s" * 100
UPLOAD = 8 << 20
BIG = 2 << 20

STRACE = shutil.which("strace")
if not STRACE or subprocess.run([STRACE, "-qq", "-e", "trace=none", "true"], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL).returncode != 0:
    skip_all("strace is missing or cannot trace here")


def pattern(n):
    """n bytes of a pattern that shows a lost, doubled or reordered piece."""
    base = bytes((i * 7 + i // 251) % 256 for i in range(65536))
    return (base * (n // len(base) + 1))[:n]


BIGBODY = pattern(BIG)


def backend(c):
    """GET /small: 100 bytes in one send with the head; GET /big: BIG bytes; POST: reads the body
    (throttled for /slow: 64 KiB per 2 ms, so that exrelay's reader finds its socket full; for
    /stall not read before STALL is set), answers its SHA-256. Keep-alive."""
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    while True:
        head, buf = read_head(c, buf)
        if head is None:
            return
        line = head.split(b"\r\n")[0]
        m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        left = int(m.group(1)) if m else 0
        h = hashlib.sha256()
        if b"/stall" in line:
            STALL.wait(60)
        while left > 0:
            if not buf:
                buf = c.recv(65536)
                if not buf:
                    return
                if b"/slow" in line:
                    time.sleep(0.002)	# a slow consumer (throttle, not a readiness wait)
            k = min(left, len(buf))
            h.update(buf[:k])
            buf, left = buf[k:], left - k
        if line.startswith(b"POST"):
            body = h.hexdigest().encode()
        elif b"/big" in line:
            body = BIGBODY
        else:
            body = SMALL
        hdr = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
        if len(body) <= 100:
            c.sendall(hdr + body)
        else:
            c.sendall(hdr)
            c.sendall(body)


STALL = threading.Event()
BPORT = serve_loopback(backend)
CONFIG = '''
global = { log_level = "info"; workers = 1; drain_timeout = 1; };
timeouts = { client_idle = 60; request_head = 30; };
listeners = (
  { name = "tls"; bind = "127.0.0.1:0"; tls = { certificates = ( { cert = "%(cert)s"; key = "%(key)s"; } ); }; },
  { name = "plain"; bind = "127.0.0.1:0"; health_path = "/exrelay/health"; }
);
backends = ( { name = "be"; servers = [ "127.0.0.1:%(port)d" ]; idle_timeout = 60; } );
routes = ( { backend = "be"; } );
''' % dict(cert=cert("mail-ecdsa")[0], key=cert("mail-ecdsa")[1], port=BPORT)

# LeakSanitizer stops the world with ptrace, which a traced process cannot: no leak check here
# (the other tests run the same code paths with it).
ENV = dict(os.environ)
ENV["ASAN_OPTIONS"] = ":".join(filter(None, [ENV.get("ASAN_OPTIONS"), "detect_leaks=0"]))
WORK = tmpdir("exrelay-io-")
TRACE = os.path.join(WORK, "trace")
argv, cfg, addr_path = exrelay_argv(WORK, CONFIG)
relay = harness.Exrelay("exrelay", [STRACE, "-f", "-qq", "-s", "0", "-o", TRACE, "-e", "signal=none", "-e",
                                    "trace=accept4,connect,recvfrom,read,recvmsg,sendto,sendmsg,write,writev,"
                                    "epoll_wait,epoll_pwait", "--"] + argv, WORK, env=ENV)
relay.config_path, relay.addr_path = cfg, addr_path
relay.wait_addrs(30)

CALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)")
RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>")
RESULT = re.compile(r"= (-?\d+)(?: (E[A-Z]+))?")
CONNECT = re.compile(r"^(\d+)\s+connect\((\d+), \{sa_family=AF_INET, sin_port=htons\((\d+)\)")


def calls(offset=0):
    """The trace from byte offset on: [(thread, syscall, fd, result, errno name)] in order
    (unfinished calls paired with their resumption per thread)."""
    out, open_calls = [], {}
    with open(TRACE, errors="replace") as f:
        f.seek(offset)
        for line in f:
            m = CALL.match(line)
            if m and "<unfinished" in line:
                open_calls[m.group(1)] = (m.group(2), int(m.group(3)))
                continue
            r = RESUMED.match(line)
            if r:
                tid = r.group(1)
                name, fd = open_calls.pop(tid, (r.group(2), -1))
            elif m:
                tid, name, fd = m.group(1), m.group(2), int(m.group(3))
            else:
                continue
            res = RESULT.search(line.rsplit(")", 1)[-1] if ")" in line else line)
            if not res:
                continue
            out.append((tid, name, fd, int(res.group(1)), res.group(2)))
    return out


def events():
    """The whole trace so far: [(syscall, fd, result, errno name)]."""
    return [e[1:] for e in calls()]


def accepted_since(n0):
    """The fd of the first connection exrelay accepted after event n0 (waits for it)."""
    found = []

    def look():
        for name, fd, ret, _ in events()[n0:]:
            if name == "accept4" and ret >= 0:
                found.append(ret)
                return True
        return False
    wait_for(look, 10)
    return found[0] if found else None


def backend_fd_since(n0):
    """The fd of the first backend connection exrelay opened after event n0."""
    with open(TRACE, errors="replace") as f:
        lines = f.readlines()
    seen = 0
    for line in lines:
        if CALL.match(line) or RESUMED.match(line):
            seen += 1
        m = CONNECT.match(line)
        if m and seen > n0 and int(m.group(3)) == BPORT:
            return int(m.group(2))
    return None


SENDS = ("sendto", "sendmsg", "write", "writev")
RECVS = ("recvfrom", "read", "recvmsg")


def count(evs, fd, names):
    """Calls of the given names on fd."""
    return sum(1 for e in evs if e[1] == fd and e[0] in names)


def settle():
    """Waits until the trace stops growing (strace writes as it goes), bounded."""
    last = [-1]

    def still():
        n = os.path.getsize(TRACE)
        same = n == last[0]
        last[0] = n
        return same
    wait_for(still, 5, 0.1)


# --- raw TLS: the client reads records itself ---------------------------------------------------

CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE


class RawTls:
    """A TLS client over MemoryBIOs that sees every record: .response() returns the response and
    how many records carried its bytes."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(30)
        self.sock.connect(("127.0.0.1", port))
        self.inc, self.outg = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = CTX.wrap_bio(self.inc, self.outg, server_hostname="mail.example.com")
        self.raw, self.plain = b"", b""
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.flush()
                self.feed_record()
        self.flush()

    def flush(self):
        """Sends what the TLS object wrote."""
        d = self.outg.read()
        if d:
            self.sock.sendall(d)

    def feed_record(self):
        """Reads one whole record from the socket into the TLS object; the plaintext it carried."""
        while len(self.raw) < 5 or len(self.raw) < 5 + int.from_bytes(self.raw[3:5], "big"):
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed")
            self.raw += d
        n = 5 + int.from_bytes(self.raw[3:5], "big")
        self.inc.write(self.raw[:n])
        self.raw = self.raw[n:]
        got = b""
        try:
            while True:
                d = self.tls.read(65536)
                if not d:
                    break
                got += d
        except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
            pass
        return got

    def send(self, data):
        """Sends data through TLS."""
        self.tls.write(data)
        self.flush()

    def response(self, slow=False):
        """One response (Content-Length): (head, body, records that carried any of its bytes)."""
        records = 0
        while b"\r\n\r\n" not in self.plain:
            d = self.feed_record()
            records += bool(d)
            self.plain += d
            if slow:
                time.sleep(0.001)
        head, rest = self.plain.split(b"\r\n\r\n", 1)
        n = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
        while len(rest) < n:
            d = self.feed_record()
            records += bool(d)
            rest += d
            if slow:
                time.sleep(0.001)
        self.plain = rest[n:]
        return head, rest[:n], records

    def close_notify(self):
        """Reads to the end of the stream: True when close_notify came before the TCP end."""
        while True:
            while len(self.raw) < 5 or len(self.raw) < 5 + int.from_bytes(self.raw[3:5], "big"):
                d = self.sock.recv(65536)
                if not d:
                    return False
                self.raw += d
            n = 5 + int.from_bytes(self.raw[3:5], "big")
            self.inc.write(self.raw[:n])
            self.raw = self.raw[n:]
            try:
                d = self.tls.read(65536)
            except ssl.SSLWantReadError:	# a record without application data
                continue
            except ssl.SSLZeroReturnError:
                return True
            if not d:
                return True		# SSLObject.read's answer to close_notify
            self.plain += d

    def close(self):
        self.sock.close()


def plain_response(s, buf, slow=False):
    """One response (Content-Length) from a plain socket: (head, body, rest of buf)."""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096 if slow else 65536)
        if not d:
            raise EOFError("closed")
        buf += d
        if slow:
            time.sleep(0.001)
    head, rest = buf.split(b"\r\n\r\n", 1)
    n = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))
    while len(rest) < n:
        d = s.recv(4096 if slow else 65536)
        if not d:
            raise EOFError("closed")
        rest += d
        if slow:
            time.sleep(0.001)
    return head, rest[:n], rest[n:]


GET = b"GET /small HTTP/1.1\r\nHost: mail.example.com\r\n\r\n"
TLS_PORT, PLAIN_PORT = relay.port("tls"), relay.port("plain")

# --- 1. one record, one send (TLS) -------------------------------------------------------------


def tls_gets(k):
    """k keep-alive GETs on one TLS connection: (sends on exrelay's side, records per response)."""
    settle()
    n0 = len(events())
    c = RawTls(TLS_PORT)
    fd = accepted_since(n0)
    recs = []
    for _ in range(k):
        c.send(GET)
        head, body, r = c.response()
        if body != SMALL or b" 200 " not in head:
            recs.append(-1)
        recs.append(r)
    settle()
    sends = count(events()[n0:], fd, SENDS)
    c.close()
    return sends, recs


s1, r1 = tls_gets(1)
s6, r6 = tls_gets(6)
is_(r6, [1] * 6, "TLS: each small response (head + 100-byte body) arrives in one record")
is_(s6 - s1, 5, "TLS: each small keep-alive response leaves in one send call (%d sends for 1 GET, %d for 6)" % (s1, s6))

# --- 2. one send (plaintext), request head + body in one send to the backend ------------------------


def plain_exchanges(k, req):
    """k keep-alive exchanges of req on one plaintext connection: (sends to the client, sends to
    the backend, bodies)."""
    settle()
    n0 = len(events())
    s = socket.create_connection(("127.0.0.1", PLAIN_PORT), timeout=30)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    fd = accepted_since(n0)
    bodies, buf = [], b""
    for _ in range(k):
        s.sendall(req)
        head, body, buf = plain_response(s, buf)
        bodies.append(body)
    settle()
    evs = events()[n0:]
    bfd = backend_fd_since(n0)
    s.close()
    return count(evs, fd, SENDS), count(evs, bfd, SENDS), bodies


p1, _, _ = plain_exchanges(1, GET)
p6, _, bodies = plain_exchanges(6, GET)
ok(bodies == [SMALL] * 6, "plaintext: six small responses intact")
is_(p6 - p1, 5, "plaintext: each small keep-alive response leaves in one send call (%d for 1, %d for 6)" % (p1, p6))
POSTBODY = pattern(100)
POST = b"POST /p HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: 100\r\n\r\n" + POSTBODY
_, b1, _ = plain_exchanges(1, POST)
_, b4, bodies = plain_exchanges(4, POST)
ok(bodies == [hashlib.sha256(POSTBODY).hexdigest().encode()] * 4, "POST bodies reach the backend intact")
is_(b4 - b1, 3, "a request head and its body reach the backend in one send (%d for 1, %d for 4)" % (b1, b4))

# Pipelined requests exrelay answers itself: the answers leave together.
settle()
n0 = len(events())
s = socket.create_connection(("127.0.0.1", PLAIN_PORT), timeout=30)
fd = accepted_since(n0)
s.sendall(b"GET /exrelay/health HTTP/1.1\r\nHost: h\r\n\r\n" * 3)
buf, bodies = b"", []
for _ in range(3):
    head, body, buf = plain_response(s, buf)
    bodies.append(body)
settle()
ok(bodies == [b"ok\n"] * 3, "three pipelined health answers")
is_(count(events()[n0:], fd, SENDS), 1, "pipelined answers exrelay makes itself leave in one send")
s.close()

# --- 3. read-ahead and batching: an upload through TLS --------------------------------------------

settle()
n0 = len(events())
c = RawTls(TLS_PORT)
fd = accepted_since(n0)
data = pattern(UPLOAD)
c.send(b"POST /slow HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
for i in range(0, UPLOAD, 16384):
    c.send(data[i:i + 16384])		# one 16 KiB record each
head, body, _ = c.response()
is_(body.decode(), hashlib.sha256(data).hexdigest(), "8 MiB TLS upload: byte for byte (SHA-256 at the backend)")
settle()
evs = events()[n0:]
recvs = count(evs, fd, RECVS)
again = sum(1 for e in evs if e[1] == fd and e[0] in RECVS and e[3] == "EAGAIN")
wakeups = sum(1 for e in evs if e[0] in ("epoll_wait", "epoll_pwait"))
records = UPLOAD // 16384
ok(0 < recvs < records * 3 // 4, "TLS upload: %d recv calls for %d records (read-ahead; GnuTLS alone: 2 per record)"
   % (recvs, records))
ok(wakeups < records // 2, "TLS upload: %d event-loop wakeups for %d records (a wakeup reads until its buffer is full)"
   % (wakeups, records))
ok(again <= wakeups, "TLS upload: %d recv calls found nothing, for %d event-loop wakeups" % (again, wakeups))
c.close()

# --- 4. fairness: a channel with a backlog, one event-loop turn at a time --------------------------

settle()
n0 = len(events())
c = RawTls(TLS_PORT)
fd = accepted_since(n0)
# A first upload lets the kernel grow exrelay's receive buffer for this connection (autotuning).
c.send(b"POST /warm HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: %d\r\n\r\n" % UPLOAD)
for i in range(0, UPLOAD, 16384):
    c.send(data[i:i + 16384])
c.response()
BACKLOG = 32 << 20
backlog = pattern(BACKLOG)
c.send(b"POST /stall HTTP/1.1\r\nHost: mail.example.com\r\nContent-Length: %d\r\n\r\n" % BACKLOG)
sent = [0]


def upload():
    for i in range(0, BACKLOG, 16384):
        c.send(backlog[i:i + 16384])
        sent[0] = i + 16384


sender = threading.Thread(target=upload, daemon=True)
sender.start()


def sender_stuck():
    """The client's sends stopped moving: its buffers and exrelay's are full (a stability window)."""
    before = sent[0]
    time.sleep(0.3)
    return sent[0] == before
wait_for(sender_stuck, 20)
waiting = sent[0]
settle()
off = os.path.getsize(TRACE)
STALL.set()
sender.join(60)
head, body, _ = c.response()
ok(body.decode() == hashlib.sha256(backlog).hexdigest(), "TLS: a 32 MiB upload held back, then let go, arrives byte for byte")
settle()
evs = calls(off)
worker = {e[0] for e in evs if e[2] == fd and e[1] in RECVS}
turns, cur = [], 0
for tid, name, cfd, ret, _ in evs:
    if tid not in worker:
        continue
    if name in ("epoll_wait", "epoll_pwait"):
        turns.append(cur)
        cur = 0
    elif cfd == fd and name in RECVS and ret > 0:
        cur += ret
turns.append(cur)
ok(waiting >= 1 << 20, "fairness: %d bytes were waiting for exrelay when the backend let go" % waiting)
ok(0 < max(turns) <= 3 * 65536, "fairness: at most %d bytes read from the channel per event-loop turn (%d turns; "
   "two 64 KiB buffers and the 32 KiB read-ahead at most, not until its socket is empty)" % (max(turns), len(turns)))
c.close()

# --- 5. batched records: a download through TLS ---------------------------------------------------

settle()
n0 = len(events())
c = RawTls(TLS_PORT)
fd = accepted_since(n0)
c.send(GET.replace(b"/small", b"/big"))
head, body, records = c.response()
ok(body == BIGBODY, "TLS: a 2 MiB download arrives byte for byte")
settle()
sends = count(events()[n0:], fd, SENDS)
ok(0 < sends <= records // 2, "TLS download: %d send calls for %d records (up to four records per send)"
   % (sends, records))
c.close()

# --- 6. partial writes: pipelined answers to a slow reader ----------------------------------------

PIPE = GET.replace(b"/small", b"/big") + GET
c = RawTls(TLS_PORT, rcvbuf=16384)
c.send(PIPE + PIPE)
res = [c.response(slow=(i == 0)) for i in range(4)]
ok([r[1] for r in res] == [BIGBODY, SMALL, BIGBODY, SMALL],
   "TLS: pipelined 2 MiB and small answers to a slow reader arrive byte for byte")
c.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
s.settimeout(30)
s.connect(("127.0.0.1", PLAIN_PORT))
s.sendall(PIPE + PIPE)
buf, got = b"", []
for i in range(4):
    head, body, buf = plain_response(s, buf, slow=(i == 0))
    got.append(body)
ok(got == [BIGBODY, SMALL, BIGBODY, SMALL], "plaintext: pipelined 2 MiB and small answers to a slow reader arrive byte for byte")
s.close()
c = RawTls(TLS_PORT, rcvbuf=16384)
c.send(GET.replace(b"/small", b"/big").replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
head, body, _ = c.response(slow=True)
ok(body == BIGBODY, "TLS: a last 2 MiB answer to a slow reader arrives byte for byte")
ok(c.close_notify(), "TLS: then close_notify, before the connection ends")
c.close()

ok(relay.alive(), "exrelay still running")
# strace keeps fatal signals for itself while it decodes: stop exrelay, its child, directly.
with open("/proc/%d/task/%d/children" % (relay.pid, relay.pid)) as f:
    os.kill(int(f.read().split()[0]), signal.SIGTERM)
wait_for(lambda: not relay.alive(), 20)
is_(relay.returncode, 0, "exrelay stopped cleanly on SIGTERM")
done()
