#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_splice.py: splice(2) between two plaintext halves (relay/splice.c), through exrelay (TAP).

A small Python backend (threads, loopback) answers uploads with their length and SHA-256, sends
downloads (Content-Length, chunked, close-delimited) of random bytes, cuts bodies on request
(FIN or reset) and echoes a 101 tunnel. Checks, with exrelay_splice_bytes_total on /metrics as
the proof that splice carried the bytes:
 1. several MiB up and down byte-exact (SHA-256): Content-Length, RPC_IN_DATA / RPC_OUT_DATA,
    chunked and close-delimited downloads; the splice counter grows by about those bytes; the
    access log's bytes and bytes_in and exrelay_bytes_total count them;
 2. a request pipelined right behind a spliced Content-Length body is parsed and answered (the
    bytes after the body are not swallowed), and the body is exact;
 3. a client reset in the middle of a request body reaches the backend as a short body and an
    end (never a complete one); a backend that resets inside a close-delimited body makes the
    client see a reset, not a clean end; one that closes inside a Content-Length body leaves the
    client a short body;
 4. a 101 tunnel is spliced both ways (echo, SHA-256) and its half-close is passed on;
 5. idle channels hold no pipe: 30 RPC_IN_DATA channels stopped mid-body add 2 fds each (client
    and backend sockets), not 4, and exrelay_splice_pipes stays within the pool's cache (4);
 6. timeouts: with idle_timeout = 1 a spliced body whose pieces come 0.4 s apart arrives whole
    (splice counts as activity), and one that stops is cut about a second later;
 7. with global.splice_pipes = 1 and that pipe held by a stalled download, an upload falls back
    to the buffers (exrelay_splice_fallbacks_total grows) and is still byte-exact, and so is the
    stalled download once read; with splice_pipes = 0 nothing is spliced.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_splice.py
"""

import hashlib
import json
import os
import re
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import (serve_loopback, run_checks, ok, is_, start_exrelay, wait_for, tmpdir, metrics_text,  # noqa: E402
                     read_head)

T0 = time.monotonic()
MiB = 1 << 20
BLOBS = {}              # name -> bytes the backend sends
EVENTS = []             # what the backend saw: dicts
EV_LOCK = threading.Lock()


def blob(name, n):
    """Random bytes of length n, kept under name for the backend."""
    if name not in BLOBS:
        BLOBS[name] = os.urandom(n)
    return BLOBS[name]


def event(**kw):
    """Records one backend event."""
    with EV_LOCK:
        EVENTS.append(kw)


def find_event(**match):
    """The first backend event with these fields, or None."""
    with EV_LOCK:
        for e in EVENTS:
            if all(e.get(k) == v for k, v in match.items()):
                return e
    return None


def header(head, name):
    """The value of header `name` in head (bytes), or None."""
    m = re.search(rb"\r\n" + name.encode() + rb":\s*([^\r\n]*)", head, re.I)
    return m.group(1).strip().decode() if m else None


def rst_close(s):
    """Closes s with a reset (SO_LINGER 0)."""
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def send_body(c, data, chunked=False):
    """Sends data, in 1 MiB chunks when chunked (then the last chunk)."""
    if not chunked:
        c.sendall(data)
        return
    for i in range(0, len(data), MiB):
        part = data[i:i + MiB]
        c.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
    c.sendall(b"0\r\n\r\n")


def read_chunked(c, buf):
    """Reads a chunked body from c (buf: bytes already read): (data, rest)."""
    body = bytearray()
    while True:
        while b"\r\n" not in buf:
            d = c.recv(262144)
            if not d:
                raise EOFError("closed in a chunk head")
            buf += d
        size_line, buf = buf.split(b"\r\n", 1)
        n = int(size_line.split(b";")[0], 16)
        while len(buf) < n + 2:
            d = c.recv(262144)
            if not d:
                raise EOFError("closed in a chunk")
            buf += d
        if n == 0:
            return bytes(body), buf[2:]
        body += buf[:n]
        buf = buf[n + 2:]


def backend(c):
    """Serves requests on one connection until the peer closes (see the module docstring)."""
    buf = b""
    while True:
        head, buf = read_head(c, buf)
        if head is None:
            return
        line = head.split(b"\r\n", 1)[0].decode()
        method, target = line.split()[:2]
        q = dict(p.split("=", 1) for p in target.split("?", 1)[1].split("&")) if "?" in target else {}
        path = target.split("?", 1)[0]
        cl = int(header(head, "Content-Length") or 0)
        if path == "/upgrade":
            c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
            if buf:
                c.sendall(buf)
            while True:
                d = c.recv(262144)
                if not d:
                    break
                c.sendall(d)
            event(kind="tunnel_eof")
            c.shutdown(socket.SHUT_WR)
            return
        if header(head, "Transfer-Encoding") == "chunked":
            data, buf = read_chunked(c, buf)
            event(kind="request", method=method, path=path, tag=q.get("tag"), got=len(data), cl=-1,
                  sha=sha(data), complete=True)
            ans = ("%d %s" % (len(data), sha(data))).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(ans) + ans)
            continue
        # The request body: exactly cl bytes, whatever follows stays in buf.
        h, got = hashlib.sha256(), 0
        take = min(cl, len(buf))
        h.update(buf[:take])
        got, buf = take, buf[take:]
        while got < cl:
            try:
                d = c.recv(min(262144, cl - got))
            except OSError:
                d = b""
            if not d:
                event(kind="body_end", path=path, tag=q.get("tag"), got=got, cl=cl, complete=False)
                return
            h.update(d)
            got += len(d)
            PROGRESS["body:%s" % q.get("tag")] = got
        event(kind="request", method=method, path=path, tag=q.get("tag"), got=got, cl=cl,
              sha=h.hexdigest(), complete=True)
        if path == "/up":
            ans = ("%d %s" % (got, h.hexdigest())).encode()
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(ans) + ans)
        elif path == "/small":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nsmall")
        elif path in ("/down", "/short/down"):
            data = BLOBS[q["blob"]]
            mode = q.get("mode", "cl")
            if mode == "chunked":
                c.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                send_body(c, data, chunked=True)
            elif mode == "close":
                c.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                c.sendall(data)
                c.close()
                return
            elif mode == "trickle":
                # Pieces every `gap` s: `stop` pieces, then silence until the client gives up.
                n, gap, stop = int(q["pieces"]), float(q["gap"]), int(q.get("stop", q["pieces"]))
                piece = len(data) // n
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (piece * n))
                for i in range(n):
                    if i == stop:
                        c.recv(1)       # until exrelay closes
                        return
                    c.sendall(data[i * piece:(i + 1) * piece])
                    time.sleep(gap)
            elif mode in ("closerst", "clcut"):
                cut = int(q["cut"])
                lenhdr = b"Content-Length: %d\r\n" % len(data) if mode == "clcut" else b"Connection: close\r\n"
                c.sendall(b"HTTP/1.1 200 OK\r\n" + lenhdr + b"\r\n")
                c.sendall(data[:cut])
                event(kind="cut_sent", tag=q.get("tag"))
                # Wait until the client has all of it, so the reset cannot drop bytes in flight.
                wait_for(lambda: find_event(kind="client_got", tag=q.get("tag")), 15)
                if mode == "closerst":
                    rst_close(c)
                else:
                    c.close()
                return
            else:
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(data))
                sent = 0
                view = memoryview(data)
                while sent < len(data):
                    sent += c.send(view[sent:sent + 262144])
                    PROGRESS[q["blob"]] = sent
        else:
            c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")


PROGRESS = {}
BPORT = serve_loopback(backend, backlog=128)
WORK = tmpdir("exrelay-splice-")
ACCESS = os.path.join(WORK, "access.log")

CONFIG = '''
global = { log_level = "info"; drain_timeout = 2; workers = 1; %(extra)s };
access_log = { path = "%(access)s"; format = "json"; };
timeouts = { request_head = 5; client_idle = 30; connect = 2; };
listeners = ( { name = "public"; bind = "127.0.0.1:0"; },
              { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = ( { name = "plain"; servers = [ "127.0.0.1:%(bport)d" ]; idle_timeout = 60; },
             { name = "short"; servers = [ "127.0.0.1:%(bport)d" ]; idle_timeout = 1; } );
routes = ( { backend = "short"; paths = [ "/short" ]; }, { backend = "plain"; } );
'''


def start(extra=""):
    """An exrelay with one worker in front of the Python backend."""
    r = start_exrelay(CONFIG % dict(extra=extra, access=ACCESS, bport=BPORT))
    return r


def metric(relay, name):
    """The value of an unlabelled metric on /metrics."""
    m = re.search(rb"\n" + name.encode() + rb" (\d+)", metrics_text(relay.port("admin")))
    return int(m.group(1)) if m else None


def connect(relay, rcvbuf=None):
    """A client connection to exrelay's public listener."""
    s = socket.socket()
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(30)
    s.connect(("127.0.0.1", relay.port("public")))
    return s


def read_response(s, buf=b""):
    """Reads one response (Content-Length, chunked, or to EOF): (status, head, body, rest)."""
    head, buf = read_head(s, buf)
    if head is None:
        return None, None, buf, b""
    status = int(head.split(b" ", 2)[1])
    if header(head, "Transfer-Encoding") == "chunked":
        body = bytearray()
        while True:
            while b"\r\n" not in buf:
                buf += s.recv(262144)
            size_line, buf = buf.split(b"\r\n", 1)
            n = int(size_line.split(b";")[0], 16)
            if n == 0:
                while b"\r\n" not in buf:
                    buf += s.recv(65536)
                buf = buf.split(b"\r\n", 1)[1]
                return status, head, bytes(body), buf
            while len(buf) < n + 2:
                d = s.recv(262144)
                if not d:
                    raise EOFError("closed inside a chunk")
                buf += d
            body += buf[:n]
            buf = buf[n + 2:]
    cl = header(head, "Content-Length")
    if cl is None:
        body = bytearray(buf)
        while True:
            d = s.recv(262144)
            if not d:
                return status, head, bytes(body), b""
            body += d
    n = int(cl)
    body = bytearray(buf[:n])
    buf = buf[n:]
    while len(body) < n:
        d = s.recv(min(262144, n - len(body)))
        if not d:
            break
        body += d
    return status, head, bytes(body), buf


def upload(relay, data, method="POST", tag="u", chunked=False, s=None):
    """Uploads data to /up; returns (status, answer body)."""
    own = s is None
    s = s or connect(relay)
    framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % len(data)
    s.sendall(b"%s /up?tag=%s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (method.encode(), tag.encode(), framing))
    send_body(s, data, chunked)
    st, _, body, _ = read_response(s)
    if own:
        s.close()
    return st, body


def download(relay, name, mode="cl", method="GET", s=None):
    """Downloads blob `name` with the given framing; returns (status, body)."""
    own = s is None
    s = s or connect(relay)
    s.sendall(b"%s /down?blob=%s&mode=%s HTTP/1.1\r\nHost: x\r\n\r\n" % (method.encode(), name.encode(), mode.encode()))
    st, _, body, _ = read_response(s)
    if own:
        s.close()
    return st, body


def sha(b):
    return hashlib.sha256(b).hexdigest()


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def access_lines():
    with open(ACCESS) as f:
        return [json.loads(x) for x in f if x.strip()]


# ----------------------------------------------------------------------------------------------
relay = start()
SIZE = 8 * MiB
up = blob("up8", SIZE)
down = blob("down8", SIZE)


def check_transfers():
    s0 = metric(relay, "exrelay_splice_bytes_total")
    is_(s0, 0, "splice counter starts at 0")
    st, ans = upload(relay, up, tag="cl")
    is_((st, ans.decode()), (200, "%d %s" % (SIZE, sha(up))), "Content-Length upload: 8 MiB byte-exact")
    s1 = metric(relay, "exrelay_splice_bytes_total")
    ok(s1 >= SIZE * 0.9, "the upload was spliced (%d of %d bytes)" % (s1, SIZE))
    st, body = download(relay, "down8")
    ok(st == 200 and sha(body) == sha(down), "Content-Length download: 8 MiB byte-exact (%d bytes)" % len(body))
    s2 = metric(relay, "exrelay_splice_bytes_total")
    ok(s2 - s1 >= SIZE * 0.9, "the download was spliced (%d bytes)" % (s2 - s1))
    st, ans = upload(relay, up, method="RPC_IN_DATA", tag="rpcin")
    is_((st, ans.decode()), (200, "%d %s" % (SIZE, sha(up))), "RPC_IN_DATA: 8 MiB byte-exact")
    st, body = download(relay, "down8", method="RPC_OUT_DATA")
    ok(st == 200 and body == down, "RPC_OUT_DATA: 8 MiB byte-exact")
    s3 = metric(relay, "exrelay_splice_bytes_total")
    ok(s3 - s2 >= 2 * SIZE * 0.9, "the RPC channels were spliced (%d bytes)" % (s3 - s2))
    st, body = download(relay, "down8", mode="chunked")
    ok(st == 200 and body == down, "chunked download (1 MiB chunks): byte-exact")
    s4 = metric(relay, "exrelay_splice_bytes_total")
    ok(s4 - s3 >= SIZE * 0.8, "chunk data was spliced between the chunk heads (%d bytes)" % (s4 - s3))
    st, ans = upload(relay, up, tag="chunkup", chunked=True)
    is_((st, ans.decode()), (200, "%d %s" % (SIZE, sha(up))), "chunked upload (1 MiB chunks): byte-exact")
    s45 = metric(relay, "exrelay_splice_bytes_total")
    ok(s45 - s4 >= SIZE * 0.8, "chunk data of the upload was spliced (%d bytes)" % (s45 - s4))
    s4 = s45
    st, body = download(relay, "down8", mode="close")
    ok(st == 200 and body == down, "close-delimited download: byte-exact")
    s5 = metric(relay, "exrelay_splice_bytes_total")
    ok(s5 - s4 >= SIZE * 0.8, "the close-delimited body was spliced (%d bytes)" % (s5 - s4))
    lines = access_lines()
    ok(any(x.get("bytes_in", 0) >= SIZE for x in lines), "access log: bytes_in counts the spliced upload")
    ok(any(SIZE < x.get("bytes", 0) < SIZE + 256 for x in lines),
       "access log: bytes counts the spliced download and its head (%s)" % [x.get("bytes") for x in lines][:8])
    bi, bo = metric_bytes(relay)
    ok(bi >= 3 * SIZE and bo >= 4 * SIZE, "exrelay_bytes_total counts spliced bytes (in %d, out %d)" % (bi, bo))


def metric_bytes(r):
    data = metrics_text(r.port("admin"))
    bi = int(re.search(rb'exrelay_bytes_total\{direction="in"\} (\d+)', data).group(1))
    bo = int(re.search(rb'exrelay_bytes_total\{direction="out"\} (\d+)', data).group(1))
    return bi, bo


def check_pipelined():
    body = blob("pipe4", 4 * MiB)
    s = connect(relay)
    req = (b"POST /up?tag=pipe HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body +
           b"GET /small?tag=after HTTP/1.1\r\nHost: x\r\n\r\n")
    t = threading.Thread(target=s.sendall, args=(req,), daemon=True)
    t.start()
    st1, _, b1, rest = read_response(s)
    st2, _, b2, _ = read_response(s, rest)
    t.join(10)
    s.close()
    is_((st1, b1.decode()), (200, "%d %s" % (len(body), sha(body))), "pipelined: the spliced body is exact")
    is_((st2, b2), (200, b"small"), "pipelined: the request after the body was parsed and answered")
    ok(find_event(kind="request", path="/small", tag="after") is not None,
       "pipelined: the backend got the second request as a request")


def check_cuts():
    # A client reset inside a request body.
    s = connect(relay)
    s.sendall(b"POST /up?tag=rst HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (8 * MiB))
    s.sendall(blob("part2", 2 * MiB))
    # Let exrelay pass the bytes on (the backend sees them), then reset.
    ok(wait_for(lambda: PROGRESS.get("body:rst", 0) >= 2 * MiB, 15), "client reset: the first 2 MiB reached the backend")
    rst_close(s)
    e = wait_for(lambda: find_event(kind="body_end", tag="rst"), 15)
    ok(e is not None and not e["complete"] and e["got"] < e["cl"],
       "client reset mid-body: the backend saw a short body and an end, never a complete one (%s)" % e)
    # A backend reset inside a close-delimited response.
    data = blob("cut4", 4 * MiB)
    s = connect(relay)
    s.sendall(b"GET /down?blob=cut4&mode=closerst&cut=%d&tag=rst2 HTTP/1.1\r\nHost: x\r\n\r\n" % (2 * MiB))
    head, buf = read_head(s, b"")
    got = bytearray(buf)
    while len(got) < 2 * MiB:
        d = s.recv(262144)
        if not d:
            break
        got += d
    event(kind="client_got", tag="rst2")
    outcome = "eof"
    try:
        while True:
            d = s.recv(262144)
            if not d:
                break
            got += d
    except ConnectionResetError:
        outcome = "reset"
    s.close()
    ok(outcome == "reset" and bytes(got) == data[:len(got)],
       "backend reset inside a close-delimited body: the client sees a reset, not a clean end (%s, %d bytes)" %
       (outcome, len(got)))
    # A backend close inside a Content-Length response.
    s = connect(relay)
    s.sendall(b"GET /down?blob=cut4&mode=clcut&cut=%d&tag=fin HTTP/1.1\r\nHost: x\r\n\r\n" % (1 * MiB))
    head, buf = read_head(s, b"")
    got = bytearray(buf)
    while len(got) < 1 * MiB:
        d = s.recv(262144)
        if not d:
            break
        got += d
    event(kind="client_got", tag="fin")
    ended = False
    try:
        while True:
            d = s.recv(262144)
            if not d:
                ended = True
                break
            got += d
    except ConnectionResetError:
        ended = True
    s.close()
    ok(ended and len(got) == 1 * MiB and bytes(got) == data[:len(got)],
       "backend close inside a Content-Length body: the client has a short body (%d of %d) and an end" %
       (len(got), len(data)))


def check_tunnel():
    before = metric(relay, "exrelay_splice_bytes_total")
    s = connect(relay)
    s.sendall(b"GET /upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
    head, rest = read_head(s, b"")
    is_(head.split(b" ", 2)[1], b"101", "tunnel: 101 Switching Protocols")
    data = blob("tun8", SIZE)
    got = bytearray(rest)

    def reader():
        while len(got) < len(data):
            d = s.recv(262144)
            if not d:
                break
            got.extend(d)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    s.sendall(data)
    t.join(30)
    ok(bytes(got) == data, "tunnel: 8 MiB echoed byte-exact (%d bytes)" % len(got))
    after = metric(relay, "exrelay_splice_bytes_total")
    ok(after - before >= 2 * SIZE * 0.9, "tunnel: both directions spliced (%d bytes)" % (after - before))
    s.shutdown(socket.SHUT_WR)
    ok(wait_for(lambda: find_event(kind="tunnel_eof"), 10), "tunnel: the client's half-close reached the backend")
    s.settimeout(10)
    ok(s.recv(10) == b"", "tunnel: the backend's half-close reached the client")
    s.close()


def check_timeouts():
    """idle_timeout = 1: a spliced body that moves every 0.4 s lives on; one that stops is cut."""
    data = blob("trickle", 2 * MiB)
    before = metric(relay, "exrelay_splice_bytes_total")
    s = connect(relay)
    s.sendall(b"GET /short/down?blob=trickle&mode=trickle&pieces=8&gap=0.4 HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, body, _ = read_response(s)
    s.close()
    ok(st == 200 and body == data, "idle_timeout 1 s: a body spliced in pieces 0.4 s apart over 3 s arrives whole")
    ok(metric(relay, "exrelay_splice_bytes_total") - before >= len(data) * 0.8, "idle_timeout: the pieces were spliced")
    s = connect(relay)
    t0 = time.monotonic()
    s.sendall(b"GET /short/down?blob=trickle&mode=trickle&pieces=8&gap=0.1&stop=3 HTTP/1.1\r\nHost: x\r\n\r\n")
    st, _, body, _ = read_response(s)
    s.close()
    took = time.monotonic() - t0
    ok(st == 200 and len(body) == 3 * len(data) // 8 and took < 10,
       "idle_timeout 1 s: a spliced body that stops is cut after the timeout (%d of %d bytes, %.1f s)" %
       (len(body), len(data), took))


def check_idle():
    pid = relay.pid
    base = fd_count(pid)
    n = 30
    socks = []
    for i in range(n):
        s = connect(relay)
        s.sendall(b"RPC_IN_DATA /up?tag=idle%d HTTP/1.1\r\nHost: x\r\nContent-Length: 1073741824\r\n\r\n" % i)
        socks.append(s)
    first = metric(relay, "exrelay_splice_bytes_total")
    chunk = os.urandom(512 * 1024)
    for s in socks:
        s.sendall(chunk)
    ok(wait_for(lambda: metric(relay, "exrelay_splice_bytes_total") - first >= n * len(chunk) * 0.5, 15),
       "idle channels: their first bytes were spliced")
    # Everything sent has reached the backend (its receive side drains): the channels are idle.
    wait_for(lambda: metric(relay, "exrelay_splice_bytes_total") - first >= n * len(chunk) * 0.95, 10)
    grown = fd_count(pid) - base
    pipes = metric(relay, "exrelay_splice_pipes")
    ok(grown <= 2 * n + 8, "%d idle channels hold no pipe: fds grew by %d (their sockets: %d; with a pipe each: %d)"
       % (n, grown, 2 * n, 4 * n))
    ok(pipes <= 4, "idle channels: exrelay_splice_pipes %d is the pool's cache at most" % pipes)
    for s in socks:
        s.close()


def check_pool_exhausted():
    """splice_pipes = 1, held by a stalled download: an upload falls back to the buffers."""
    r2 = start("splice_pipes = 1;")
    try:
        big = blob("stall32", 32 * MiB)
        s = connect(r2, rcvbuf=65536)
        s.sendall(b"GET /down?blob=stall32 HTTP/1.1\r\nHost: x\r\n\r\n")
        # The backend stalls once every buffer on the way is full; the pipe then holds bytes.
        last, same = [-1], [0]

        def stalled():
            """True once the backend's count stood still for 4 polls in a row (1.2 s)."""
            v = PROGRESS.get("stall32", 0)
            same[0] = same[0] + 1 if v == last[0] and 0 < v < len(big) else 0
            last[0] = v
            return same[0] >= 4
        ok(wait_for(stalled, 30, interval=0.3), "pool test: the download stalled (%d bytes sent)" %
           PROGRESS.get("stall32", 0))
        fb0 = metric(r2, "exrelay_splice_fallbacks_total")
        data = blob("up4", 4 * MiB)
        st, ans = upload(r2, data, tag="pool")
        is_((st, ans.decode()), (200, "%d %s" % (len(data), sha(data))), "pool empty: the upload is still byte-exact")
        fb1 = metric(r2, "exrelay_splice_fallbacks_total")
        ok(fb1 > fb0, "pool empty: the upload fell back to the buffers (fallbacks %d -> %d)" % (fb0, fb1))
        is_(metric(r2, "exrelay_splice_pipes"), 1, "pool: one pipe open, as configured")
        st, _, body, _ = read_response(s)
        s.close()
        ok(st == 200 and body == big, "pool test: the stalled download completes byte-exact")
        rc = r2.stop()
        is_(rc, 0, "the splice_pipes = 1 exrelay stops cleanly")
        r3 = start("splice_pipes = 0;")
        st, ans = upload(r3, data, tag="nosplice")
        is_((st, ans.decode()), (200, "%d %s" % (len(data), sha(data))), "splice_pipes = 0: upload byte-exact")
        is_(metric(r3, "exrelay_splice_bytes_total"), 0, "splice_pipes = 0: nothing spliced")
        is_(metric(r3, "exrelay_splice_pipes"), 0, "splice_pipes = 0: no pipe open")
        r3.stop()
    finally:
        if r2.alive():
            r2.stop()


checks = [check_transfers, check_pipelined, check_cuts, check_tunnel, check_timeouts, check_idle,
          check_pool_exhausted]
run_checks(checks, relay=relay, t0=T0, errors_expected=True)
