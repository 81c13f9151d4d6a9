#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
exchange.py: an Exchange stand-in for exrelay's integration tests (Python 3 standard library only).

On the wire it behaves like Exchange's RPC proxy and IIS as far as a reverse proxy can tell:
HTTP/1.1 with keep-alive, RPC over HTTP v2 channels (RPC_IN_DATA / RPC_OUT_DATA, [MS-RPCH]),
connection-bound NTLM, MAPI NotificationWait with PENDING chunks, and a generic echo endpoint with
knobs for framing tests (including deliberately broken responses). Everything it sees is written
to a JSON-lines log (--log) that the tests assert on.

Usage:
  exchange.py --listen 127.0.0.1:PORT [--listen ...] [--port-file FILE] [--log FILE]
              [--ping-interval S] [--notify-interval S]
              [--tls-cert C --tls-key K [--require-client-cert CA] [--extended-protection]]
              [--user NAME:PASSWORD ...] [--no-default-users]
              [--name NAME] [--name-header] [--control FILE]

--name-header adds "X-Standin-Name: NAME" to every response head (tests that spread requests
over several stand-ins check which one answered). Port 0 picks a free port; the bound addresses
("host:port", one line per --listen, in order) are written to --port-file atomically (temp file +
rename) once every socket listens.

Run-time control (--control FILE): a JSON knob file that the stand-in re-reads whenever it is
replaced (polled every 20 ms; write it to a temp file and rename it into place). All keys optional:
  {"gen": N,                        echoed in the "control" event once applied (tests wait for it)
   "health": {"owa": 503, "rpc": "hang", "*": 200},
                                    status of GET|HEAD /<vdir>/healthcheck.htm per virtual directory
                                    (lower case; "*" is the default for the others, itself 200 by
                                    default); a number is that status, "hang" reads the request and
                                    never answers (until the client closes)
   "mode": "normal" | "hang" | "blackhole" | "refuse"}
                                    the whole server, for connections from then on:
                                      hang      TCP connects complete; the connection is read and
                                                discarded and never answered (accept, never answer)
                                      blackhole SYNs are dropped, so connects time out: no more
                                                accept(), the listen backlog cut to 0 and filled by
                                                the stand-in's own connections to itself
                                      refuse    the listening sockets are closed (connects are
                                                refused); back to normal, they are bound again on
                                                the same ports
                                    Connections open before a change keep running.
Every applied file logs "control" {gen, mode, health}, after the change took effect.

Health pages (any virtual directory, as Exchange's Managed Availability answers them, anonymous):
  GET or HEAD /<vdir>/healthcheck.htm   200 "200 OK<br/>NAME" (NAME: --name), or what the knob file
                                        says for that vdir; logs "health" {vdir, status}.

Requests (query parameters are parsed from the target; bare words like "server:6001" are ignored):
  RPC_IN_DATA / RPC_OUT_DATA on /rpc/rpcproxy.dll* or /rpcwithcert/rpcproxy.dll*:
    Content-Length 0..16 (either method)   echo: 200 Success, 20-byte Echo RTS PDU, keep-alive.
    RPC_OUT_DATA, Content-Length 76 or 120 OUT channel: reads A1, answers "200 Success",
                                           Content-Length 1073741824, CONN/A3 at once, CONN/C2 once
                                           the IN channel with the same cookie arrived.
        ?source=N [&seed=S]                after C2, stream N bytes of rpch.Pattern(S) (S default 0).
                                           The announced Content-Length becomes max(1 GiB, 72+N).
        ?outlen=N                          announce this Content-Length instead.
    RPC_IN_DATA, Content-Length >= 128 KiB IN channel: no response; reads B1, pairs by cookie
                                           (either side waits up to 30 s), then reads PDUs:
        (default) ?mode=echo               every read is written as-is onto the paired OUT channel.
        ?mode=sink                         only counted and hashed.
        ?fail_after=N                      after N bytes beyond B1: "HTTP/1.0 503 RPC Error: 6ba",
                                           then close.
        The header "X-Standin-Mode: sink|echo" works like ?mode=.
    Every IN channel logs "in_closed" {bytes, sha256, complete} over its whole body (B1 included).
  Authentication (any request that carries Authorization: Basic, NTLM or Negotiate is checked, as
    IIS does; accounts from --user NAME:PASSWORD, added to the default set ntlm.DEFAULT_USERS unless
    --no-default-users; names match case-insensitively as "user", "DOMAIN\\user" or "user@domain"):
    Required without credentials on /auth/ (401 offering NTLM, Negotiate and Basic), ?auth=ntlm or
      "X-Standin-Auth: ntlm" (NTLM, Negotiate), ?auth=basic or "X-Standin-Auth: basic" (Basic).
    Basic: right password -> the request proceeds; wrong password, unknown user or a malformed
      token -> 401 with `WWW-Authenticate: Basic realm="<Host without port>"`.
    NTLM per [MS-NLMP] (tests/lib/ntlm.py; scheme NTLM, or Negotiate carrying a bare NTLM token):
      NEGOTIATE -> 401 with a CHALLENGE (server challenge, TargetInfo AV pairs with MsvAvTimestamp)
      bound to this TCP connection; AUTHENTICATE -> the NTLMv2 response is verified with the
      user's password against that challenge: right -> the request proceeds and the connection
      stays authenticated (later requests without Authorization pass); wrong password, unknown
      user, no challenge on this connection -> 401 `WWW-Authenticate: <scheme>`. A response that
      is right for a challenge issued on another connection logs "ntlm_wrong_connection".
    --extended-protection (with TLS): on /rpc /owa /ecp /mapi /oab /powershell an NTLMv2 response
      must carry MsvAvChannelBindings = MD5 of the RFC 2743 channel bindings with application data
      "tls-server-end-point:" + the RFC 5929 hash of our own certificate ([MS-NLMP] §2.2.2.1,
      §3.1.5.1.2); missing (or all zero) or different -> 401, as IIS with Extended Protection
      "Required". Basic is not bound (as in IIS).
    The generic answer carries "ntlm_user" (the connection's NTLM user), "auth_user" and
    "auth_scheme" (who this request authenticated as).
  MAPI NotificationWait (POST /mapi/... with "NotificationWait" in the target, or header
    "X-RequestType: NotificationWait"): 200, chunked; chunk "PROCESSING\r\n" at once, then a
    "PENDING\r\n" chunk every --notify-interval seconds (?interval=S overrides), after ?pending=N
    (default 3) of them a final "DONE\r\n..." chunk with the result, then the last chunk.
  Anything else: 200 with a JSON body {method, target, version, headers, conn, peer, body_bytes,
    body_sha256, ntlm_user, auth_user, auth_scheme, server (--name)}, Content-Length framed, keep-alive as the client asked. Knobs:
        ?status=NNN      status code (204/304 send no body)
        ?len=N[&seed=S]  body is N bytes of rpch.Pattern(S) instead of JSON
        ?chunked=1       chunked framing (HTTP/1.0 clients get a read-until-close body instead)
        ?close=1         no length: body delimited by closing the connection
        ?sleep=S         wait S seconds (after reading the request body) before answering
        ?rh=Name:Value   add a response header (repeatable)
        ?early=NNN       answer NNN at once without reading the body (no 100), then close
        ?broken=cl-te    Content-Length and Transfer-Encoding: chunked together, then close
        ?broken=badchunk chunked body with an invalid chunk size line, then close
        ?broken=cut      Content-Length 1000 but only 10 bytes, then close
        ?broken=badcl    Content-Length: 12abc, then close
        ?broken=dupcl    two different Content-Length fields, then close
        ?broken=badstatus a malformed status line, then close
        ?broken=none     close without any response
  "Expect: 100-continue" on any request: exactly one "HTTP/1.1 100 Continue" before the body is read.

Log events (one JSON object per line, each with "ev", "t" (epoch seconds) and usually "conn"):
  listen, accept {peer, local, tls}, request {method, target, version, headers [[n,v]...], peer},
  continue_sent, body {bytes, sha256, complete}, response {status}, out_open {cookie},
  in_open {cookie, mode}, paired {cookie, out_conn, in_conn}, pair_timeout, source_done {bytes},
  in_closed {cookie, bytes, sha256, complete, mode}, in_error {status}, out_closed {cookie},
  ntlm_challenge {nonce}, ntlm_ok {user}, ntlm_wrong_connection {issued_on}, ntlm_bad_token {reason},
  auth_ok {user, scheme}, auth_fail {user, scheme, reason} (reason: bad_password, unknown_user,
  malformed, no_challenge, wrong_connection, not_ntlmv2, channel_binding_missing,
  channel_binding_wrong),
  notify_chunk {n, kind}, ping {channels}, bad_request {reason}, close, conn_error {error},
  health {vdir, status ("hang" for a hung page)}, control {gen, mode, health}, control_error {error},
  hang_accept {peer} and hang_close {bytes} (mode hang), listen_closed {addr} (mode refuse).
  Cookies are logged in hex.

Design: one thread per connection (small stacks), blocking sockets. Bodies are never accumulated:
large reads go through recv_into() a pooled 1 MiB buffer and are hashed on the fly.
"""

import argparse
import base64
import hashlib
import hmac
import http
import itertools
import json
import os
import re
import resource
import select
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import traceback
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import rpch  # noqa: E402  (shared PDU and pattern definitions)
import ntlm  # noqa: E402  (NTLMv2, MD4, channel bindings: shared with the test clients)

MAX_HEAD = 256 * 1024          # Negotiate tokens make heads over 48 KiB
SMALL = 65536                  # recv size for heads and interactive streams
BIG = 1 << 20                  # pooled buffer size for bulk bodies
RPC_CHANNEL_MIN = 128 * 1024   # smallest Content-Length of an IN channel
PAIR_WAIT = 30.0               # how long one channel waits for its partner
OUT_LENGTH = 1073741824        # Content-Length announced on OUT channels
TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
REQLINE_RE = re.compile(r"([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP/(1\.[01])")
HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
# Virtual directories where Exchange 2019 CU14+ sets IIS Extended Protection to "Required"
# (Microsoft, "Exchange Server Support for Windows Extended Protection").
EP_VDIRS = ("rpc", "owa", "ecp", "mapi", "oab", "powershell")
HEALTH_RE = re.compile(r"/([^/]+)/healthcheck\.htm", re.IGNORECASE)
MODES = ("normal", "hang", "blackhole", "refuse")


class HttpError(Exception):
    """A request the stand-in refuses: answered with `status` and the connection closed."""

    def __init__(self, status, reason):
        """Stores the status code and a reason string (also logged as bad_request)."""
        super().__init__(reason)
        self.status, self.reason = status, reason


class Log:
    """The JSON-lines event log: one object per line, flushed per line, thread-safe."""

    def __init__(self, path):
        """Opens `path` for appending (None: events are dropped)."""
        self.f = open(path, "a", encoding="utf-8") if path else None
        self.lock = threading.Lock()

    def __call__(self, ev, **fields):
        """Writes event `ev` with the given fields and the current time."""
        if self.f is None:
            return
        rec = {"ev": ev, "t": round(time.time(), 6)}
        rec.update(fields)
        line = json.dumps(rec, separators=(",", ":")) + "\n"
        with self.lock:
            self.f.write(line)
            self.f.flush()


class BufferPool:
    """A few reusable 1 MiB bytearrays for bulk reads, so idle connections hold none."""

    def __init__(self, size=BIG, keep=16):
        """Pool of buffers of `size` bytes; at most `keep` are kept when returned."""
        self.size, self.keep, self.free, self.lock = size, keep, [], threading.Lock()

    def get(self):
        """Takes a buffer (allocating one if none is free)."""
        with self.lock:
            if self.free:
                return self.free.pop()
        return bytearray(self.size)

    def put(self, buf):
        """Returns a buffer to the pool."""
        with self.lock:
            if len(self.free) < self.keep:
                self.free.append(buf)


class VirtualConnection:
    """The server side of one RPC over HTTP virtual connection: its OUT and IN channels."""

    def __init__(self, cookie):
        """A virtual connection for the 16-byte cookie, with no channel yet."""
        self.cookie = cookie
        self.out = None          # Conn of the OUT channel
        self.inn = None          # Conn of the IN channel
        self.c2_sent = False     # True once CONN/C2 went out on OUT (IN may then echo onto OUT)
        self.c2_count = 0        # C2s sent on this VC so far (never reset: an IN that slept through
                                 # a whole short OUT channel still knows it was paired)


class Registry:
    """Pairs IN and OUT channels by VirtualConnectionCookie, and lists OUT channels for pings."""

    def __init__(self):
        """Empty registry."""
        self.cond = threading.Condition()
        self.vcs = {}

    def attach(self, cookie, side, conn):
        """Registers `conn` as the `side` ("out"/"inn") channel of `cookie`; returns the VC."""
        with self.cond:
            vc = self.vcs.get(cookie)
            if vc is None:
                vc = self.vcs[cookie] = VirtualConnection(cookie)
            setattr(vc, side, conn)
            if side == "out":
                vc.c2_sent = False
            self.cond.notify_all()
            return vc

    def attach_in(self, cookie, conn):
        """attach() for an IN channel; returns (vc, the VC's C2 count at that moment) for paired()."""
        with self.cond:
            vc = self.attach(cookie, "inn", conn)
            return vc, vc.c2_count

    @staticmethod
    def paired(vc, base):
        """Whether the IN channel attached when vc.c2_count was `base` has been paired: an OUT
        channel is there with C2 sent, or C2 went out since (the OUT may already have ended: a
        short source stream can send C2, its data and close before the IN's thread runs again)."""
        return (vc.out is not None and vc.c2_sent) or vc.c2_count != base

    def wait(self, predicate, timeout):
        """Waits until predicate() holds (checked under the lock); returns its final value."""
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def mark_c2(self, vc):
        """Records that C2 was sent on vc's OUT channel and wakes a waiting IN channel."""
        with self.cond:
            vc.c2_sent = True
            vc.c2_count += 1
            self.cond.notify_all()

    def detach(self, vc, side, conn):
        """Removes `conn` from `side` of vc (if still there); forgets vc once both sides left."""
        with self.cond:
            if getattr(vc, side) is conn:
                setattr(vc, side, None)
                if side == "out":
                    vc.c2_sent = False
            if vc.out is None and vc.inn is None and self.vcs.get(vc.cookie) is vc:
                del self.vcs[vc.cookie]
            self.cond.notify_all()

    def out_channels(self):
        """The OUT channels that currently accept pings."""
        with self.cond:
            return [vc.out for vc in self.vcs.values() if vc.out is not None and vc.out.pingable]


class Request:
    """One parsed request head plus its body framing."""

    def __init__(self, method, target, version, headers):
        """Parses the target's path and query; computes framing and keep-alive (raises HttpError)."""
        self.method, self.target, self.version, self.headers = method, target, version, headers
        self.auth_user = self.auth_scheme = None     # set when this request's credentials passed
        path, _, query = target.partition("?")
        if path.startswith("http://") or path.startswith("https://"):   # absolute-form
            path = "/" + path.split("/", 3)[3] if path.count("/") >= 3 else "/"
        self.path = path
        self.query = urllib.parse.parse_qs(query, keep_blank_values=True)
        self.length, self.chunked = 0, False
        te = self.header_all("Transfer-Encoding")
        cl = self.header_all("Content-Length")
        if te and cl:
            raise HttpError(400, "both Content-Length and Transfer-Encoding")
        if te:
            if version == "1.0":
                raise HttpError(400, "Transfer-Encoding in an HTTP/1.0 request")
            if len(te) != 1 or te[0].strip().lower() != "chunked":
                raise HttpError(501, "unsupported Transfer-Encoding %r" % te)
            self.chunked, self.length = True, None
        elif cl:
            values = {v.strip() for field in cl for v in field.split(",")}
            if len(values) != 1 or not next(iter(values)).isdigit() or not next(iter(values)).isascii():
                raise HttpError(400, "invalid Content-Length %r" % cl)
            self.length = int(next(iter(values)))
        tokens = {t.strip().lower() for v in self.header_all("Connection") for t in v.split(",")}
        self.keep_alive = ("keep-alive" in tokens) if version == "1.0" else ("close" not in tokens)

    def header(self, name, default=None):
        """First value of header `name` (case-insensitive), or default."""
        name = name.lower()
        for n, v in self.headers:
            if n.lower() == name:
                return v
        return default

    def header_all(self, name):
        """All values of header `name` (case-insensitive)."""
        name = name.lower()
        return [v for n, v in self.headers if n.lower() == name]

    def q(self, name, default=None):
        """First value of query parameter `name`, or default."""
        vals = self.query.get(name)
        return vals[0] if vals else default

    def qint(self, name, default=None):
        """Query parameter `name` as an int (default when absent)."""
        v = self.q(name)
        return default if v in (None, "") else int(v)


class Conn:
    """One accepted client connection: buffered reads, locked writes, per-connection auth state."""

    def __init__(self, server, sock, cid, peer):
        """Wraps the socket `sock` of connection id `cid` from address `peer` ("ip:port")."""
        self.server, self.sock, self.id, self.peer = server, sock, cid, peer
        self.pending = bytearray()       # bytes received and not yet consumed
        self.big = None                  # pooled buffer, held only during bulk reads
        self.bigview = None
        self.send_lock = threading.Lock()
        self.pingable = False            # OUT channel that receives pings
        self.ntlm_nonce = None           # challenge issued on this connection
        self.ntlm_user = None            # user authenticated on this connection
        self.closed = threading.Event()

    # -- writing ------------------------------------------------------------------------------

    def sendall(self, data):
        """Writes all of `data` (serialised with other writers such as the ping thread)."""
        with self.send_lock:
            self.sock.sendall(data)

    def shutdown(self):
        """Half-closes our side and marks the connection closed (wakes an OUT channel's wait)."""
        self.closed.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def drain_and_close(self, limit=2.0):
        """After a final answer: stop writing, discard input for up to `limit` seconds or until
        EOF (so the peer sees our response rather than a reset), then close."""
        try:
            if isinstance(self.sock, ssl.SSLSocket):
                self.sock.settimeout(0.5)
                try:
                    self.sock.unwrap()
                except (OSError, ValueError):
                    pass
            else:
                self.sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + limit
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self.sock.settimeout(remaining)
                if not self.sock.recv(SMALL):
                    break
        except (OSError, ValueError):
            pass

    # -- reading ------------------------------------------------------------------------------

    def _recv_more(self):
        """Appends the next received bytes to `pending`; returns False on EOF."""
        data = self.sock.recv(SMALL)
        if not data:
            return False
        self.pending += data
        return True

    def read_head(self):
        """Reads and parses one request head; returns a Request, or None on EOF between requests."""
        while True:
            while self.pending[:2] == b"\r\n":       # tolerated empty lines before a request
                del self.pending[:2]
            i = self.pending.find(b"\r\n\r\n")
            if i >= 0:
                break
            if len(self.pending) > MAX_HEAD:
                raise HttpError(431, "request head over %d bytes" % MAX_HEAD)
            if not self._recv_more():
                if self.pending:
                    self.server.log("bad_request", conn=self.id, reason="EOF inside a request head")
                return None
        raw = bytes(self.pending[:i])
        del self.pending[:i + 4]
        lines = raw.split(b"\r\n")
        for line in lines:
            if b"\r" in line or b"\n" in line or b"\0" in line:
                raise HttpError(400, "bare CR, LF or NUL in the head")
        m = REQLINE_RE.fullmatch(lines[0].decode("latin-1"))
        if not m:
            raise HttpError(400, "bad request line %r" % lines[0][:200])
        headers = []
        for line in lines[1:]:
            if line[:1] in (b" ", b"\t"):
                raise HttpError(400, "obs-fold")
            name, sep, value = line.partition(b":")
            if not sep or not TOKEN_RE.fullmatch(name):
                raise HttpError(400, "bad header line %r" % line[:200])
            headers.append((name.decode("latin-1"), value.strip(b" \t").decode("latin-1")))
        return Request(m.group(1), m.group(2), m.group(3), headers)

    def read_some(self, limit, bulk=False):
        """Returns up to `limit` body bytes as soon as some are available; b"" on EOF.

        With bulk=True the bytes come from recv_into() the pooled 1 MiB buffer (the returned
        memoryview is valid until the next call); otherwise from plain recv() of at most 64 KiB.
        """
        if self.pending:
            n = min(limit, len(self.pending))
            data = bytes(self.pending[:n])
            del self.pending[:n]
            return data
        if bulk and limit > SMALL:
            if self.big is None:
                self.big = self.server.pool.get()
                self.bigview = memoryview(self.big)
            n = self.sock.recv_into(self.big, min(limit, BIG))
            return self.bigview[:n]
        return self.sock.recv(min(limit, SMALL))

    def release_big(self):
        """Returns the pooled buffer, if this connection holds one."""
        if self.big is not None:
            self.bigview.release()
            self.server.pool.put(self.big)
            self.big = self.bigview = None

    def read_line(self, limit=4096):
        """Reads one CRLF-terminated line (chunk framing); bare LF is an error."""
        while True:
            i = self.pending.find(b"\n")
            if i >= 0:
                if i == 0 or self.pending[i - 1] != 13:
                    raise HttpError(400, "bare LF in chunk framing")
                line = bytes(self.pending[:i - 1])
                del self.pending[:i + 1]
                return line
            if len(self.pending) > limit:
                raise HttpError(400, "chunk line too long")
            if not self._recv_more():
                raise EOFError("EOF inside chunk framing")

    def read_exact(self, n):
        """Reads exactly n bytes (small n: PDUs, CRLFs); EOFError if the peer closes first."""
        while len(self.pending) < n:
            if not self._recv_more():
                raise EOFError("EOF after %d of %d bytes" % (len(self.pending), n))
        data = bytes(self.pending[:n])
        del self.pending[:n]
        return data

    def body(self, req, bulk=True):
        """Yields the request body in pieces (Content-Length or chunked); EOFError if cut short."""
        if req.chunked:
            while True:
                line = self.read_line()
                size = line.split(b";", 1)[0]
                if not HEX_RE.fullmatch(size):
                    raise HttpError(400, "bad chunk size line %r" % line[:100])
                remaining = int(size, 16)
                if remaining == 0:
                    while self.read_line(MAX_HEAD):     # trailer fields, dropped
                        pass
                    return
                while remaining:
                    data = self.read_some(remaining, bulk)
                    if not data:
                        raise EOFError("EOF inside a chunk")
                    remaining -= len(data)
                    yield data
                if self.read_exact(2) != b"\r\n":
                    raise HttpError(400, "chunk data not followed by CRLF")
        remaining = req.length
        while remaining:
            data = self.read_some(remaining, bulk)
            if not data:
                raise EOFError("EOF with %d body bytes to go" % remaining)
            remaining -= len(data)
            yield data

    def consume_body(self, req):
        """Reads the whole body, logging event "body"; returns (bytes, sha256 hex, complete)."""
        h, n, complete = hashlib.sha256(), 0, False
        try:
            for data in self.body(req):
                h.update(data)
                n += len(data)
            complete = True
        finally:
            self.release_big()
            self.server.log("body", conn=self.id, bytes=n, sha256=h.hexdigest(), complete=complete)
        return n, h.hexdigest(), complete


NAME_HEADER = None              # --name-header: "X-Standin-Name" value added to every response head


def head_bytes(status, reason, headers, version="HTTP/1.1"):
    """Serialises a response head: status line, headers as given (then X-Standin-Name with
    --name-header), blank line."""
    out = "%s %d %s\r\n" % (version, status, reason)
    out += "".join("%s: %s\r\n" % (n, v) for n, v in headers)
    if NAME_HEADER is not None:
        out += "X-Standin-Name: %s\r\n" % NAME_HEADER
    return (out + "\r\n").encode("latin-1")


def reason_of(status):
    """The standard reason phrase of `status` (or "Status" for unknown codes)."""
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Status"


class Server:
    """The stand-in: listeners, connection threads, RPC registry, ping thread, request handlers."""

    def __init__(self, args):
        """Sets up logging, TLS and shared state from the parsed command line."""
        self.args = args
        self.log = Log(args.log)
        self.pool = BufferPool()
        self.registry = Registry()
        self.ids = itertools.count(1)
        self.ntlm_issued = {}            # nonce -> connection id that issued it
        self.ntlm_lock = threading.Lock()
        self.users = {} if args.no_default_users else dict(ntlm.DEFAULT_USERS)
        for spec in args.user or ():
            name, sep, password = spec.partition(":")
            if not sep or not name:
                raise SystemExit("--user wants NAME:PASSWORD, got %r" % spec)
            self.users[name.lower()] = password
        self.cb_expected = None          # MsvAvChannelBindings required (--extended-protection)
        self.tls = None
        if args.tls_cert:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
            if args.require_client_cert:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(args.require_client_cert)
            self.tls = ctx
            if args.extended_protection:
                with open(args.tls_cert) as f:
                    pem = f.read()
                first = pem[:pem.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]
                self.cb_expected = ntlm.channel_binding_hash(ssl.PEM_cert_to_DER_cert(first))
        self.listeners = []              # listening sockets (None while refusing), per --listen
        self.bound = []                  # (family, host, port) of each, to bind again
        self.mode = "normal"             # see "Run-time control" in the file header
        self.health = {}                 # vdir -> status or "hang" ("*": the default)
        self.fillers = []                # our own connections filling the backlog (blackhole)
        self.filler_peers = set()        # their addresses, as accept() will see them
        self.mode_lock = threading.Lock()

    # -- sockets and threads -------------------------------------------------------------------

    def listen(self):
        """Binds every --listen address; writes --port-file; starts the accept threads and the
        control-file watcher."""
        addrs = []
        for spec in self.args.listen:
            host, _, port = spec.rpartition(":")
            host = host.strip("[]")
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = self.bind_one(family, host, int(port))
            bound = s.getsockname()
            addr = ("[%s]:%d" if family == socket.AF_INET6 else "%s:%d") % (bound[0], bound[1])
            addrs.append(addr)
            self.listeners.append(s)
            self.bound.append((family, host, bound[1]))
            self.log("listen", addr=addr, tls=self.tls is not None)
        if self.args.control:
            self.control_poll()                    # a file written before start applies at once
        if self.args.port_file:
            tmp = self.args.port_file + ".tmp.%d" % os.getpid()
            with open(tmp, "w") as f:
                f.write("".join(a + "\n" for a in addrs))
            os.rename(tmp, self.args.port_file)
        for i, s in enumerate(self.listeners):
            if s is not None:
                threading.Thread(target=self.accept_loop, args=(i, s), daemon=True).start()
        if self.args.ping_interval > 0:
            threading.Thread(target=self.ping_loop, daemon=True).start()
        if self.args.control:
            threading.Thread(target=self.control_loop, daemon=True).start()

    @staticmethod
    def bind_one(family, host, port):
        """A listening socket on host:port (SO_REUSEADDR, so a port closed by "refuse" binds again)."""
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(4096)
        return s

    def accept_loop(self, idx, lsock):
        """Accepts connections on listener idx, one thread each (backs off briefly when out of
        fds), while lsock is still that listener; accepts nothing while the mode is blackhole."""
        poller = select.poll()
        poller.register(lsock.fileno(), select.POLLIN)
        while self.listeners[idx] is lsock:
            if self.mode == "blackhole" or not poller.poll(100):
                time.sleep(0.02 if self.mode == "blackhole" else 0)
                continue
            try:
                lsock.setblocking(False)
                sock, addr = lsock.accept()
            except (BlockingIOError, InterruptedError):
                continue
            except OSError as e:
                if self.listeners[idx] is not lsock or lsock.fileno() < 0:
                    return
                self.log("accept_error", error=str(e))
                time.sleep(0.05)
                continue
            sock.setblocking(True)
            if addr[:2] in self.filler_peers:      # one of our own backlog fillers: not a client
                self.filler_peers.discard(addr[:2])
                sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cid = "conn-%d" % next(self.ids)
            peer = ("[%s]:%d" if sock.family == socket.AF_INET6 else "%s:%d") % addr[:2]
            target = self.serve_hang if self.mode == "hang" else self.serve
            try:
                threading.Thread(target=target, args=(sock, cid, peer), daemon=True).start()
            except RuntimeError as e:          # cannot start a thread: refuse the connection
                self.log("conn_error", conn=cid, error=str(e))
                sock.close()

    def serve_hang(self, sock, cid, peer):
        """Mode hang: the connection is accepted and read, and never answered, until the peer closes."""
        self.log("hang_accept", conn=cid, peer=peer)
        n = 0
        try:
            while True:
                data = sock.recv(SMALL)
                if not data:
                    break
                n += len(data)
        except OSError:
            pass
        finally:
            sock.close()
            self.log("hang_close", conn=cid, bytes=n)

    # -- run-time control (--control FILE) -----------------------------------------------------

    def control_loop(self):
        """Polls the knob file every 20 ms; applies it whenever it was replaced or changed."""
        while True:
            time.sleep(0.02)
            self.control_poll()

    def control_poll(self):
        """Applies the knob file if it changed since the last look (inode, size, mtime)."""
        try:
            st = os.stat(self.args.control)
        except FileNotFoundError:
            return
        stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
        if stamp == getattr(self, "control_stamp", None):
            return
        self.control_stamp = stamp
        try:
            with open(self.args.control, encoding="utf-8") as f:
                knobs = json.load(f)
            health = {str(k).lower(): v for k, v in (knobs.get("health") or {}).items()}
            for v in health.values():
                if v != "hang" and not (isinstance(v, int) and 100 <= v <= 599):
                    raise ValueError("health status %r: a status code or \"hang\"" % (v,))
            mode = knobs.get("mode", "normal")
            if mode not in MODES:
                raise ValueError("mode %r: one of %s" % (mode, ", ".join(MODES)))
        except (OSError, ValueError, AttributeError) as e:
            self.log("control_error", error=str(e))
            return
        self.health = health
        self.set_mode(mode)
        self.log("control", gen=knobs.get("gen"), mode=mode, health=health)

    def set_mode(self, mode):
        """Moves the whole server to `mode` (normal, hang, blackhole, refuse)."""
        with self.mode_lock:
            old = self.mode
            if old == mode:
                return
            if old == "refuse":
                for i, (family, host, port) in enumerate(self.bound):
                    s = self.bind_one(family, host, port)
                    self.listeners[i] = s
                    threading.Thread(target=self.accept_loop, args=(i, s), daemon=True).start()
            elif old == "blackhole":
                self.unfill()
            if mode == "refuse":
                for i, s in enumerate(self.listeners):
                    self.listeners[i] = None
                    try:
                        s.shutdown(socket.SHUT_RDWR)   # stops listening at once (wakes poll)
                    except OSError:
                        pass
                    s.close()
                    self.log("listen_closed", addr="%s:%d" % self.bound[i][1:])
            elif mode == "blackhole":
                self.mode = mode                   # accept loops stop accepting first
                self.fill()
            self.mode = mode

    def fill(self):
        """Blackhole: cuts each listener's backlog to 0 and fills it with connections of our own,
        so that the kernel drops further SYNs (the client's connect times out)."""
        time.sleep(0.15)                           # an accept loop inside accept() finishes it
        for i, s in enumerate(self.listeners):
            s.listen(0)
            family, host, port = self.bound[i]
            for _ in range(8):
                c = socket.socket(family, socket.SOCK_STREAM)
                c.settimeout(0.1)
                try:
                    c.connect((host, port))
                except OSError:                    # not completed: the queue is full
                    c.close()
                    break
                self.filler_peers.add(c.getsockname()[:2])
                self.fillers.append(c)

    def unfill(self):
        """Leaving blackhole: the full backlog again; our fillers are accepted and dropped."""
        for i, s in enumerate(self.listeners):
            if s is not None:
                s.listen(4096)
        for c in self.fillers:
            c.close()
        self.fillers = []

    def ping_loop(self):
        """Every --ping-interval seconds, sends a Ping RTS PDU on each idle OUT channel."""
        ping = rpch.ping_pdu()
        while True:
            time.sleep(self.args.ping_interval)
            chans = self.registry.out_channels()
            sent = 0
            for c in chans:
                if c.send_lock.acquire(blocking=False):     # skip channels busy writing
                    try:
                        c.sock.sendall(ping)
                        sent += 1
                    except OSError:
                        pass
                    finally:
                        c.send_lock.release()
            self.log("ping", channels=sent)

    def serve(self, sock, cid, peer):
        """Runs one connection: TLS handshake, then requests until close or error."""
        conn = None
        try:
            tlsinfo = None
            if self.tls is not None:
                sock.settimeout(10)
                sock = self.tls.wrap_socket(sock, server_side=True)
                sock.settimeout(None)
                cert = sock.getpeercert()
                subject = dict(x[0] for x in cert.get("subject", ())) if cert else None
                tlsinfo = {"version": sock.version(), "cipher": sock.cipher()[0],
                           "client_cert": subject}
            conn = Conn(self, sock, cid, peer)
            local = sock.getsockname()
            self.log("accept", conn=cid, peer=peer, local="%s:%d" % local[:2], tls=tlsinfo)
            while True:
                try:
                    req = conn.read_head()
                except HttpError as e:
                    self.log("bad_request", conn=cid, reason=e.reason)
                    conn.sendall(head_bytes(e.status, reason_of(e.status),
                                            [("Content-Length", "0"), ("Connection", "close")]))
                    conn.drain_and_close()
                    return
                if req is None:
                    return
                if not self.handle(conn, req):
                    return
        except HttpError as e:                 # framing error inside a body
            self.log("bad_request", conn=cid, reason=e.reason)
            try:
                conn.sendall(head_bytes(e.status, reason_of(e.status),
                                        [("Content-Length", "0"), ("Connection", "close")]))
            except OSError:
                pass
        except (OSError, EOFError, ssl.SSLError, ValueError) as e:
            self.log("conn_error", conn=cid, error="%s: %s" % (type(e).__name__, e))
        except Exception as e:                 # a bug here: keep serving others, say why
            self.log("conn_error", conn=cid, error="%s: %s" % (type(e).__name__, e))
            traceback.print_exc()
        finally:
            if conn is not None:
                conn.release_big()
                self.forget_challenge(conn)
                conn.closed.set()
            try:
                sock.close()
            except OSError:
                pass
            self.log("close", conn=cid)

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, conn, req):
        """Logs and answers one request; returns True to keep the connection for another."""
        self.log("request", conn=conn.id, method=req.method, target=req.target,
                 version=req.version, headers=[[n, v] for n, v in req.headers], peer=conn.peer)
        m = HEALTH_RE.fullmatch(req.path)
        if m and req.method in ("GET", "HEAD"):
            return self.health_page(conn, req, m.group(1).lower())
        early = req.qint("early")
        if early is not None:
            return self.send_early(conn, req, early)
        if req.header("Expect", "").lower() == "100-continue":
            conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            self.log("continue_sent", conn=conn.id)
        passed = self.auth_gate(conn, req)
        if passed is not None:
            return passed
        path = req.path.lower()
        if req.method in ("RPC_IN_DATA", "RPC_OUT_DATA") and (
                path.startswith("/rpc/rpcproxy.dll") or path.startswith("/rpcwithcert/rpcproxy.dll")):
            if not req.chunked and req.length <= 16:
                return self.rpc_echo(conn, req)
            if req.method == "RPC_OUT_DATA" and req.length in (76, 120):
                return self.rpc_out(conn, req)
            if req.method == "RPC_IN_DATA" and not req.chunked and req.length >= RPC_CHANNEL_MIN:
                return self.rpc_in(conn, req)
        if path.startswith("/mapi/") and req.method == "POST" and (
                "notificationwait" in req.target.lower()
                or req.header("X-RequestType", "").lower() == "notificationwait"):
            return self.notification_wait(conn, req)
        return self.generic(conn, req)

    def respond(self, conn, req, status, headers, body=b"", reason=None):
        """Sends a Content-Length framed response; returns whether to keep the connection."""
        keep = req.keep_alive
        headers = list(headers)
        if status not in (204, 304):
            headers.append(("Content-Length", str(len(body))))
        else:
            body = b""
        if not keep:
            headers.append(("Connection", "close"))
        elif req.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        if req.method == "HEAD":
            body = b""
        conn.sendall(head_bytes(status, reason or reason_of(status), headers) + body)
        self.log("response", conn=conn.id, status=status)
        return keep

    def health_page(self, conn, req, vdir):
        """GET /<vdir>/healthcheck.htm: 200 "200 OK<br/>NAME", or the status the knob file sets
        for this vdir; "hang" never answers (the request is held until the client closes)."""
        status = self.health.get(vdir, self.health.get("*", 200))
        self.log("health", conn=conn.id, vdir=vdir, status=status)
        conn.consume_body(req)
        if status == "hang":
            while conn.sock.recv(SMALL):
                pass
            return False
        if status == 200:
            body = ("200 OK<br/>%s\r\n" % self.args.name).encode()
        else:
            body = ("%d %s<br/>%s\r\n" % (status, reason_of(status), self.args.name)).encode()
        return self.respond(conn, req, status, [("Content-Type", "text/html"), ("Cache-Control", "no-cache")],
                            body)

    def send_early(self, conn, req, status):
        """?early=NNN: a final answer before the body was read, then drain and close."""
        body = b"early answer\n"
        conn.sendall(head_bytes(status, reason_of(status), [
            ("Content-Type", "text/plain"), ("Content-Length", str(len(body))),
            ("Connection", "close")]) + body)
        self.log("response", conn=conn.id, status=status, early=True)
        conn.drain_and_close()
        return False

    # -- authentication ------------------------------------------------------------------------

    @staticmethod
    def auth_required(req):
        """The scheme family this request must authenticate with regardless of what it carries:
        "any" (/auth/), "ntlm" (?auth=ntlm, X-Standin-Auth: ntlm), "basic" (?auth=basic,
        X-Standin-Auth: basic), or None (anonymous allowed)."""
        want = (req.q("auth") or req.header("X-Standin-Auth") or "").lower()
        if want in ("ntlm", "basic"):
            return want
        return "any" if req.path.lower().startswith("/auth/") else None

    def extended_protection_applies(self, req):
        """True when --extended-protection is on and the path is under one of the virtual
        directories IIS protects by default (/rpc /owa /ecp /mapi /oab /powershell)."""
        if not self.cb_expected:
            return False
        first = req.path.lower().split("/")[1] if req.path.startswith("/") else ""
        return first in EP_VDIRS

    def lookup_user(self, name):
        """The password of account `name` ("DOMAIN\\user", "user@domain" or "user",
        case-insensitive), or None for an unknown account."""
        short = name.rpartition("\\")[2].partition("@")[0].lower()
        return self.users.get(short)

    def auth_gate(self, conn, req):
        """Checks the request's credentials like IIS would. Returns None when the request may
        proceed, else the keep-alive decision after a 401 was sent."""
        auth = req.header("Authorization")
        required = self.auth_required(req)
        scheme, _, token = (auth or "").partition(" ")
        kind = scheme.lower()
        if kind == "basic":
            return self.basic_check(conn, req, scheme, token.strip())
        if kind in ("ntlm", "negotiate"):
            return self.ntlm_step(conn, req, scheme, token.strip())
        if required is None or (conn.ntlm_user is not None and required != "basic"):
            return None                                    # anonymous, or an authenticated connection
        return self.auth_401(conn, req, self.offers(req, required))

    def offers(self, req, required="any"):
        """WWW-Authenticate values of a 401 (one field each), for the schemes `required` allows."""
        host = re.sub(r":[0-9]*$", "", req.header("Host") or "") or "mail.example.com"
        out = []
        if required in ("any", "ntlm", None):
            out += ["NTLM", "Negotiate"]
        if required in ("any", "basic", None):
            out.append('Basic realm="%s"' % host)
        return out

    def basic_check(self, conn, req, scheme, token):
        """Authorization: Basic: the user's password must match (401 with a Basic challenge,
        event auth_fail, otherwise); on success the request proceeds as that user."""
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            user, sep, password = "", "", ""
        known = self.lookup_user(user) if sep else None
        if known is None or not hmac.compare_digest(known.encode(), password.encode()):
            reason = "malformed" if not sep else ("unknown_user" if known is None else "bad_password")
            self.log("auth_fail", conn=conn.id, user=user, scheme="Basic", reason=reason)
            return self.auth_401(conn, req, self.offers(req, "basic"))
        req.auth_user, req.auth_scheme = user, "Basic"
        self.log("auth_ok", conn=conn.id, user=user, scheme="Basic")
        return None

    def ntlm_step(self, conn, req, scheme, token):
        """One NTLM leg (bare, or a bare NTLM token inside Negotiate): NEGOTIATE -> 401 with a
        CHALLENGE bound to this TCP connection; AUTHENTICATE -> NTLMv2 verified with the user's
        password against this connection's challenge (and, under Extended Protection, the
        channel binding); success authenticates the connection."""
        try:
            raw = base64.b64decode(token, validate=True) if token else b""
        except ValueError:
            raw = b""
        mtype = ntlm.message_type(raw)
        if mtype == ntlm.NEGOTIATE:
            return self.ntlm_challenge(conn, req, scheme)
        if mtype != ntlm.AUTHENTICATE:
            if not token and conn.ntlm_user is not None:
                return None
            self.log("ntlm_bad_token", conn=conn.id, reason="not an NTLM NEGOTIATE or AUTHENTICATE message"
                     if raw[:1] != b"\x60" else "SPNEGO-wrapped token (only bare NTLM is understood)")
            return self.auth_401(conn, req, [scheme if scheme.lower() == "negotiate" else "NTLM"])
        try:
            msg = ntlm.parse_authenticate(raw)
        except ntlm.NtlmError as e:
            self.log("ntlm_bad_token", conn=conn.id, reason=str(e))
            return self.auth_401(conn, req, [scheme])
        user = ("%s\\%s" % (msg["domain"], msg["user"])) if msg["domain"] else msg["user"]
        reason, av = self.ntlm_verify(conn, msg)
        if reason is None and self.extended_protection_applies(req):
            cb = dict(av).get(ntlm.MSV_AV_CHANNEL_BINDINGS)
            if cb is None or cb == bytes(16):
                reason = "channel_binding_missing"
            elif not hmac.compare_digest(cb, self.cb_expected):
                reason = "channel_binding_wrong"
        if reason is not None:
            self.log("auth_fail", conn=conn.id, user=user, scheme=scheme, reason=reason)
            return self.auth_401(conn, req, [scheme])
        conn.ntlm_user = user
        req.auth_user, req.auth_scheme = user, scheme
        self.log("ntlm_ok", conn=conn.id, user=user)
        self.log("auth_ok", conn=conn.id, user=user, scheme=scheme)
        return None

    def ntlm_challenge(self, conn, req, scheme):
        """Answers a NEGOTIATE with 401 and a CHALLENGE_MESSAGE ([MS-NLMP] §2.2.1.2): a fresh
        server challenge and TargetInfo (NetBIOS and DNS names, MsvAvTimestamp)."""
        self.forget_challenge(conn)
        nonce = os.urandom(8)
        info = ntlm.av_pairs([
            (ntlm.MSV_AV_NB_DOMAIN_NAME, "EXAMPLE".encode("utf-16-le")),
            (ntlm.MSV_AV_NB_COMPUTER_NAME, "EXCH01".encode("utf-16-le")),
            (ntlm.MSV_AV_DNS_DOMAIN_NAME, "example.com".encode("utf-16-le")),
            (ntlm.MSV_AV_DNS_COMPUTER_NAME, "exch01.example.com".encode("utf-16-le")),
            (ntlm.MSV_AV_DNS_TREE_NAME, "example.com".encode("utf-16-le")),
            (ntlm.MSV_AV_TIMESTAMP, struct.pack("<Q", ntlm.filetime_now()))])
        challenge = ntlm.challenge_message(nonce, info)
        conn.ntlm_nonce, conn.ntlm_user = nonce, None
        with self.ntlm_lock:
            self.ntlm_issued[nonce] = conn.id
        self.log("ntlm_challenge", conn=conn.id, nonce=nonce.hex())
        return self.auth_401(conn, req, ["%s %s" % (scheme, ntlm.b64(challenge))])

    def forget_challenge(self, conn):
        """Drops the challenge pending on conn (answered, replaced, or the connection closed)."""
        if conn.ntlm_nonce is not None:
            with self.ntlm_lock:
                self.ntlm_issued.pop(conn.ntlm_nonce, None)
            conn.ntlm_nonce = None

    def ntlm_verify(self, conn, msg):
        """Checks an AUTHENTICATE against conn's challenge. Returns (None, client AV pairs) on
        success, else (reason, None); the pending challenge is used up either way. A response
        that is right for a challenge issued on another connection logs ntlm_wrong_connection."""
        password = self.lookup_user(msg["user"])
        nonce = conn.ntlm_nonce
        self.forget_challenge(conn)
        if password is None:
            return "unknown_user", None
        try:
            if nonce is not None:
                av = ntlm.verify_ntlmv2(msg, nonce, password)
                if av is not None:
                    return None, av
            with self.ntlm_lock:
                others = list(self.ntlm_issued.items())
            for other, issuer in others:
                if issuer != conn.id and ntlm.verify_ntlmv2(msg, other, password) is not None:
                    self.log("ntlm_wrong_connection", conn=conn.id, issued_on=issuer)
                    return "wrong_connection", None
        except ntlm.NtlmError as e:
            self.log("ntlm_bad_token", conn=conn.id, reason=str(e))
            return "not_ntlmv2", None
        if nonce is None:
            self.log("ntlm_bad_token", conn=conn.id, reason="no challenge pending on this connection")
            return "no_challenge", None
        return "bad_password", None

    def auth_401(self, conn, req, www_authenticate):
        """Sends 401 with one WWW-Authenticate field per value given; small bodies are read first
        so the connection stays usable, large ones are not read and the connection closes."""
        if req.chunked or req.length <= BIG:
            conn.consume_body(req)
            keep = True
        else:
            keep = req.keep_alive = False
        body = b"401 - Unauthorized\n"
        keep = self.respond(conn, req, 401, [("WWW-Authenticate", v) for v in www_authenticate]
                            + [("Content-Type", "text/plain")], body) and keep
        if not keep and not req.chunked and req.length > BIG:
            conn.drain_and_close()
        return keep

    # -- RPC over HTTP -------------------------------------------------------------------------

    def rpc_echo(self, conn, req):
        """Echo request (Content-Length 0..16): 200 Success with the 20-byte Echo RTS PDU."""
        conn.consume_body(req)
        return self.respond(conn, req, 200, [("Content-Type", "application/rpc")],
                            rpch.echo_pdu(), reason="Success")

    def rpc_out(self, conn, req):
        """OUT channel: A1 in, 200 + A3 out at once, C2 once paired, optional source stream,
        then hold the channel until the client closes it."""
        a1 = conn.read_exact(req.length)
        self.log("body", conn=conn.id, bytes=len(a1), sha256=hashlib.sha256(a1).hexdigest(), complete=True)
        cookie = rpch.cookie_of(a1)
        source = req.qint("source")
        length = req.qint("outlen", max(OUT_LENGTH, 72 + (source or 0)))
        self.log("out_open", conn=conn.id, cookie=cookie.hex(), source=source)
        conn.sendall(head_bytes(200, "Success", [("Content-Type", "application/rpc"),
                                                 ("Content-Length", str(length))]) + rpch.conn_a3())
        self.log("response", conn=conn.id, status=200)
        vc = self.registry.attach(cookie, "out", conn)
        try:
            if not self.registry.wait(lambda: vc.inn is not None, PAIR_WAIT):
                self.log("pair_timeout", conn=conn.id, cookie=cookie.hex(), side="out")
                return False
            conn.sendall(rpch.conn_c2())
            self.registry.mark_c2(vc)
            self.log("paired", conn=conn.id, cookie=cookie.hex(), out_conn=conn.id,
                     in_conn=vc.inn.id if vc.inn else None)
            if source:
                sent = 0
                for piece in rpch.Pattern(req.qint("seed", 0)).pieces(source):
                    conn.sendall(piece)
                    sent += len(piece)
                self.log("source_done", conn=conn.id, bytes=sent)
            else:
                conn.pingable = True
            self.hold_out(conn)
            return False
        finally:
            conn.pingable = False
            self.registry.detach(vc, "out", conn)
            self.log("out_closed", conn=conn.id, cookie=cookie.hex())

    def hold_out(self, conn):
        """Keeps an OUT channel open until the client closes it (or we shut it down).

        Others (the IN channel's echo, pings) write on it meanwhile, so input is only read
        under the send lock, non-blocking, when poll() says some arrived (safe with TLS too).
        """
        poller = select.poll()
        poller.register(conn.sock.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        while not conn.closed.is_set():
            if not poller.poll(5000):
                continue
            with conn.send_lock:
                conn.sock.setblocking(False)
                try:
                    data = conn.sock.recv(SMALL)
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    data = None
                except OSError:
                    data = b""
                finally:
                    conn.sock.setblocking(True)
            if data == b"":
                return
            if data is None:
                time.sleep(0.01)
            else:
                self.log("out_extra", conn=conn.id, bytes=len(data))

    def rpc_in(self, conn, req):
        """IN channel: no response; B1 pairs it with OUT by cookie, then PDUs are echoed onto
        OUT (mode echo) or counted and hashed (mode sink). ?fail_after=N answers 503 mid-stream."""
        mode = (req.q("mode") or req.header("X-Standin-Mode") or "echo").lower()
        fail_after = req.qint("fail_after")
        h, count, complete, vc = hashlib.sha256(), 0, False, None
        cookie = b""
        try:
            b1 = conn.read_exact(rpch.B1_LEN)
            h.update(b1)
            count = len(b1)
            cookie = rpch.cookie_of(b1)
            self.log("in_open", conn=conn.id, cookie=cookie.hex(), mode=mode, length=req.length)
            vc, base = self.registry.attach_in(cookie, conn)
            if not self.registry.wait(lambda: self.registry.paired(vc, base), PAIR_WAIT):
                self.log("pair_timeout", conn=conn.id, cookie=cookie.hex(), side="in")
                return False
            remaining = req.length - count
            bulk = mode == "sink"
            while True:
                if fail_after is not None and count - rpch.B1_LEN >= fail_after:
                    self.rpc_fail(conn)
                    return False
                if remaining == 0:
                    complete = True
                    return False
                try:
                    data = conn.read_some(min(remaining, BIG), bulk)
                except OSError:
                    data = b""
                if not data:
                    return False                   # the client closed: normal for IN channels
                h.update(data)
                count += len(data)
                remaining -= len(data)
                if mode == "echo":
                    out = vc.out
                    if out is not None:
                        try:
                            out.sendall(data)
                        except OSError:
                            pass
        except EOFError:
            return False
        finally:
            conn.release_big()
            if vc is not None:
                self.registry.detach(vc, "inn", conn)
            self.log("in_closed", conn=conn.id, cookie=cookie.hex(), bytes=count,
                     sha256=h.hexdigest(), complete=complete, mode=mode)
            self.log("body", conn=conn.id, bytes=count, sha256=h.hexdigest(), complete=complete)

    def rpc_fail(self, conn):
        """Answers an IN channel mid-stream the way the RPC proxy does on error, then closes."""
        body = b"<html><body>RPC Error: 6ba</body></html>"
        conn.sendall(head_bytes(503, "RPC Error: 6ba", [
            ("Content-Type", "text/html"), ("Content-Length", str(len(body))),
            ("Connection", "close")], version="HTTP/1.0") + body)
        self.log("in_error", conn=conn.id, status=503)
        conn.drain_and_close()

    # -- MAPI ----------------------------------------------------------------------------------

    def notification_wait(self, conn, req):
        """MAPI NotificationWait: chunked, PROCESSING at once, PENDING every interval, DONE."""
        conn.consume_body(req)
        interval = float(req.q("interval", self.args.notify_interval))
        pending = req.qint("pending", 3)
        chunked = req.version == "1.1"
        keep = req.keep_alive and chunked
        headers = [("Content-Type", "application/mapi-http"), ("X-RequestType", "NotificationWait"),
                   ("X-ResponseCode", "0"), ("Cache-Control", "private")]
        headers.append(("Transfer-Encoding", "chunked") if chunked else ("Connection", "close"))
        if chunked and not keep:
            headers.append(("Connection", "close"))
        conn.sendall(head_bytes(200, "OK", headers))
        self.log("response", conn=conn.id, status=200)

        def chunk(data, n, kind):
            """Sends one piece of the streamed answer (framed as a chunk when chunked)."""
            conn.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
            self.log("notify_chunk", conn=conn.id, n=n, kind=kind)

        chunk(b"PROCESSING\r\n", 0, "PROCESSING")
        for i in range(1, pending + 1):
            time.sleep(interval)
            chunk(b"PENDING\r\n", i, "PENDING")
        result = b"DONE\r\nX-ResponseCode: 0\r\nX-ElapsedTime: 1\r\n\r\n" + b"\x00" * 8 + b"events:1"
        chunk(result, pending + 1, "DONE")
        if chunked:
            conn.sendall(b"0\r\n\r\n")
        return keep

    # -- generic -------------------------------------------------------------------------------

    def generic(self, conn, req):
        """Echoes the request as JSON, or follows the framing knobs (see the file header)."""
        n, digest, _ = conn.consume_body(req)
        sleep = req.q("sleep")
        if sleep:
            time.sleep(float(sleep))
        broken = req.q("broken")
        if broken is not None:
            return self.send_broken(conn, broken)
        status = req.qint("status", 200)
        headers = []
        for rh in req.query.get("rh", []):
            name, _, value = rh.partition(":")
            headers.append((name.strip(), value.strip()))
        length = req.qint("len")
        if length is None:
            body = json.dumps({
                "method": req.method, "target": req.target, "version": req.version,
                "headers": [[k, v] for k, v in req.headers], "conn": conn.id, "peer": conn.peer,
                "body_bytes": n, "body_sha256": digest, "ntlm_user": conn.ntlm_user,
                "auth_user": req.auth_user or conn.ntlm_user, "auth_scheme": req.auth_scheme,
                "server": self.args.name,
            }).encode() + b"\n"
            headers.insert(0, ("Content-Type", "application/json"))
            pieces, total = [body], len(body)
        else:
            headers.insert(0, ("Content-Type", "application/octet-stream"))
            pieces, total = rpch.Pattern(req.qint("seed", 0)).pieces(length), length
        no_body = status in (204, 304) or 100 <= status < 200 or req.method == "HEAD"
        chunked = req.q("chunked") == "1" and req.version == "1.1" and not no_body
        close = req.q("close") == "1" or (req.q("chunked") == "1" and req.version == "1.0")
        keep = req.keep_alive and not close
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif not close and status not in (204, 304):
            headers.append(("Content-Length", str(total)))
        if not keep:
            headers.append(("Connection", "close"))
        elif req.version == "1.0":
            headers.append(("Connection", "keep-alive"))
        conn.sendall(head_bytes(status, reason_of(status), headers))
        if not no_body:
            for piece in pieces:
                if chunked:
                    conn.sendall(b"%x\r\n" % len(piece))
                    conn.sendall(piece)
                    conn.sendall(b"\r\n")
                else:
                    conn.sendall(piece)
            if chunked:
                conn.sendall(b"0\r\n\r\n")
        self.log("response", conn=conn.id, status=status)
        if close:
            conn.drain_and_close(0.5)
        return keep

    def send_broken(self, conn, kind):
        """Sends one deliberately broken response (?broken=KIND), then closes."""
        responses = {
            "cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n",
            "badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
            "cut": b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
            "badcl": b"HTTP/1.1 200 OK\r\nContent-Length: 12abc\r\n\r\nhello world!",
            "dupcl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "badstatus": b"HTTP/1.1 2x0 Broken\r\nContent-Length: 0\r\n\r\n",
            "none": b"",
        }
        data = responses.get(kind, responses["cut"])
        if data:
            conn.sendall(data)
        self.log("response", conn=conn.id, status=0, broken=kind)
        conn.drain_and_close(0.5)
        return False


def main(argv=None):
    """Parses the command line, starts listening and runs until SIGTERM/SIGINT."""
    ap = argparse.ArgumentParser(description="Exchange stand-in for exrelay's integration tests")
    ap.add_argument("--listen", action="append", required=True, help="HOST:PORT (port 0: any)")
    ap.add_argument("--port-file", help="write the bound addresses here (atomically)")
    ap.add_argument("--log", help="JSON-lines event log")
    ap.add_argument("--ping-interval", type=float, default=0, help="seconds between OUT pings (0: off)")
    ap.add_argument("--notify-interval", type=float, default=30, help="seconds between PENDING chunks")
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    ap.add_argument("--require-client-cert", metavar="CA")
    ap.add_argument("--user", action="append", metavar="NAME:PASSWORD",
                    help="an account (repeatable; added to the default set)")
    ap.add_argument("--no-default-users", action="store_true", help="only the --user accounts")
    ap.add_argument("--extended-protection", action="store_true",
                    help="require NTLM channel binding to our certificate on /rpc /owa /ecp /mapi /oab /powershell")
    ap.add_argument("--name", default="EXCH01", help="server name in health pages and JSON answers")
    ap.add_argument("--name-header", action="store_true",
                    help="add X-Standin-Name: NAME to every response head (which server answered)")
    ap.add_argument("--control", metavar="FILE", help="JSON knob file: health pages and server mode")
    args = ap.parse_args(argv)
    if args.name_header:
        global NAME_HEADER
        NAME_HEADER = args.name

    if bool(args.tls_cert) != bool(args.tls_key):
        ap.error("--tls-cert and --tls-key go together")
    if args.extended_protection and not args.tls_cert:
        ap.error("--extended-protection needs TLS (--tls-cert)")

    threading.stack_size(512 * 1024)               # thousands of connection threads
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    server = Server(args)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server.listen()
    while not stop.wait(3600):
        pass
    server.log("shutdown")
    for s in server.listeners:
        if s is not None:
            s.close()
    sys.stdout.flush()
    os._exit(0)                                    # connection threads are daemons: no join


if __name__ == "__main__":
    main()
