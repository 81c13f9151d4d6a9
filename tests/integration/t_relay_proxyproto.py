#!/usr/bin/env python3
# SPDX-License-Identifier: BSD-2-Clause
"""
t_relay_proxyproto.py: the PROXY protocol on exrelay's listeners (TAP).

Headers are built here byte by byte (v1 text, v2 binary with TLVs and CRC32C). Checks: v1 TCP4/TCP6
(and the ::ffff: dotted-quad form HAProxy sends), UNKNOWN, v2 PROXY INET/INET6, v2 LOCAL (the real
peer is used), the v2 SSL TLV (X-Forwarded-Proto https), a valid and a wrong CRC32C, a header split
over several delayed writes; the client address as Apache sees it (REMOTE_ADDR through exrelay's
PROXY v1) and as the stand-in sees it (X-Forwarded-For). Refusals, each a close with no HTTP
response: required mode without a header, an untrusted peer, malformed headers, the proxy_header
timeout; exrelay_proxy_header_errors_total counts them.
Run: cd tests && EXRELAY=/path/to/exrelay python3 integration/t_relay_proxyproto.py
"""

import json
import os
import re
import socket
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from harness import run_checks, ok, is_, diag, done, free_port, start_standin, start_apache, start_exrelay, \
    wait_for  # noqa: E402
import rpch  # noqa: E402

T0 = time.monotonic()
PROXY_HEADER_TIMEOUT = 3

CONFIG = '''
global = { log_level = "debug"; drain_timeout = 2; };
timeouts = { request_head = 5; client_idle = 10; connect = 2; proxy_header = %(pht)d; };
listeners = (
  { name = "opt"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "127.0.0.1/32" ]; },
  { name = "req"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "127.0.0.1/32", "::1/128" ]; },
  { name = "untr"; bind = "127.0.0.1:0"; proxy_protocol = "required"; trusted_proxies = [ "10.0.0.0/8" ]; },
  { name = "untropt"; bind = "127.0.0.1:0"; proxy_protocol = "optional"; trusted_proxies = [ "10.0.0.0/8" ]; },
  { name = "admin"; bind = "127.0.0.1:0"; role = "admin"; } );
backends = (
  { name = "exchange"; servers = [ "127.0.0.1:%(sport)d" ]; idle_timeout = 3600; },
  { name = "apache"; servers = [ "127.0.0.1:%(aport)d" ]; send_proxy = "v1"; idle_timeout = 60; } );
routes = ( { backend = "exchange"; paths = [ "/owa", "/rpc" ]; }, { backend = "apache"; } );
'''

ex = start_standin(ping_interval=0)
ap = start_apache(free_port(), proxy_protocol=True)
relay = start_exrelay(CONFIG % dict(pht=PROXY_HEADER_TIMEOUT, sport=ex.port, aport=ap.port))
OPT, REQ, UNTR, UNTROPT, ADMIN = (relay.port(n) for n in ("opt", "req", "untr", "untropt", "admin"))

# ----------------------------------------------------------------------------------------------
# PROXY header builders
# ----------------------------------------------------------------------------------------------

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def _crc32c_table():
    """The CRC32C (Castagnoli, reflected 0x82F63B78) lookup table."""
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC32C of `data` (check value of b"123456789" is 0xE3069283)."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC_TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283


def tlv(t, value):
    """One v2 TLV."""
    return struct.pack(">BH", t, len(value)) + value


def v2(cmd=0x1, fam=0x11, src="203.0.113.7", dst="192.0.2.1", sport=40000, dport=443, tlvs=b"",
       crc=None, length=None):
    """A PROXY v2 header: cmd 0 LOCAL / 1 PROXY; fam 0x11 TCP4, 0x21 TCP6, 0x00 UNSPEC.
    crc: None (no CRC TLV), "good" or "bad". length overrides the len field."""
    if fam == 0x11:
        addr = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst) + \
            struct.pack(">HH", sport, dport)
    elif fam == 0x21:
        addr = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) + \
            struct.pack(">HH", sport, dport)
    else:
        addr = b""
    body = addr + tlvs
    if crc is not None:
        body += tlv(0x03, b"\0\0\0\0")
    hdr = V2_SIG + bytes([0x20 | cmd, fam]) + struct.pack(">H", len(body) if length is None else length) + body
    if crc is not None:
        value = crc32c(hdr)
        if crc == "bad":
            value ^= 0x1
        hdr = hdr[:-4] + struct.pack(">I", value)
    return hdr


def ssl_tlv(client=0x01):
    """PP2_TYPE_SSL with the client bits given, verify 0, and a version sub-TLV."""
    return tlv(0x20, bytes([client]) + b"\0\0\0\0" + tlv(0x21, b"TLSv1.3"))


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------

def metric(name, labels):
    """The value of one metric sample from the admin port (None if absent)."""
    with rpch.HttpConn("127.0.0.1", ADMIN, timeout=5) as c:
        resp, body = c.request("GET", "/metrics", [("Host", "x")], timeout=5)
    m = re.search(r"^%s\{%s\} (\d+)" % (re.escape(name), re.escape(labels)), body.decode("latin-1"), re.M)
    return int(m.group(1)) if m else None


def proxy_errors(listener):
    """exrelay_proxy_header_errors_total for one listener (0 if absent)."""
    return metric("exrelay_proxy_header_errors_total", 'listener="%s"' % listener) or 0


def via(port, header, target, pieces=None, delay=0.0):
    """Connects, sends `header` (or `pieces` with `delay` s between them), then one GET of `target`;
    returns (status, parsed JSON body or {})."""
    with rpch.HttpConn("127.0.0.1", port, timeout=10) as c:
        for i, p in enumerate(pieces if pieces is not None else [header]):
            if i and delay:
                time.sleep(delay)
            c.send(p)
        resp, body = c.request("GET", target, [("Host", "mail.example.com"), ("X-Forwarded-For", "6.6.6.6")],
                               timeout=10)
    try:
        return resp.status, json.loads(body)
    except ValueError:
        return resp.status, {}


def standin_header(info, name):
    """Values of header `name` in the stand-in's JSON echo."""
    return [v for n, v in info.get("headers", []) if n.lower() == name.lower()]


def refused(port, data, wait=5.0, request=True):
    """Sends `data` and an HTTP request; returns (closed, bytes received). Closed without any byte
    is the expected refusal."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        got = b""
        try:
            s.sendall(data)
            if request:
                s.sendall(b"GET /owa/x HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            return True, got
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            s.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                piece = s.recv(4096)
            except socket.timeout:
                return False, got
            except OSError:
                return True, got
            if not piece:
                return True, got
            got += piece
        return False, got


# ----------------------------------------------------------------------------------------------
# Checks
# ----------------------------------------------------------------------------------------------

def check_v1():
    """v1 TCP4 / TCP6 / ::ffff: form / UNKNOWN: client address at the stand-in and at Apache."""
    cases = [
        ("TCP4", b"PROXY TCP4 203.0.113.7 192.0.2.1 51000 443\r\n", "203.0.113.7"),
        ("TCP6", b"PROXY TCP6 2001:db8::7 2001:db8::1 51000 443\r\n", "2001:db8::7"),
        ("TCP6 dotted tail", b"PROXY TCP6 ::ffff:198.51.100.9 ::ffff:127.0.0.1 51000 443\r\n", None),
        ("UNKNOWN", b"PROXY UNKNOWN\r\n", "127.0.0.1"),
        ("UNKNOWN long", b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n", "127.0.0.1"),
    ]
    for name, hdr, want in cases:
        for port in (OPT, REQ):
            status, info = via(port, hdr, "/owa/v1")
            xff = standin_header(info, "X-Forwarded-For")
            if want is None:
                ok(status == 200 and len(xff) == 1 and xff[0] in ("198.51.100.9", "::ffff:198.51.100.9"),
                   "v1 %s on port %d: stand-in X-Forwarded-For %r" % (name, port, xff))
            else:
                is_((status, xff), (200, [want]), "v1 %s on port %d: stand-in X-Forwarded-For" % (name, port))
        status, info = via(REQ, hdr, "/cgi-bin/echo")
        ra = info.get("remote_addr")
        if want is None:
            ok(status == 200 and ra in ("198.51.100.9", "::ffff:198.51.100.9"), "v1 %s: Apache REMOTE_ADDR %r" % (name, ra))
        else:
            is_((status, ra), (200, want), "v1 %s: Apache REMOTE_ADDR" % name)
        is_(info.get("headers", {}).get("X-Forwarded-For"), want or info.get("headers", {}).get("X-Forwarded-For"),
            "v1 %s: Apache X-Forwarded-For replaced" % name)
    status, info = via(OPT, b"", "/owa/none")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["127.0.0.1"]),
        "optional listener without a header: the peer address")


def check_v2():
    """v2 PROXY INET/INET6, LOCAL, SSL TLV, CRC32C, other TLVs."""
    status, info = via(REQ, v2(), "/owa/v2")
    is_((status, standin_header(info, "X-Forwarded-For"), standin_header(info, "X-Forwarded-Proto")),
        (200, ["203.0.113.7"], ["http"]), "v2 TCP4: X-Forwarded-For, proto http")
    status, info = via(REQ, v2(fam=0x21, src="2001:db8::42", dst="2001:db8::1"), "/owa/v2")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["2001:db8::42"]), "v2 TCP6: X-Forwarded-For")
    status, info = via(REQ, v2(fam=0x21, src="2001:db8::42", dst="2001:db8::1"), "/cgi-bin/echo")
    is_((status, info.get("remote_addr")), (200, "2001:db8::42"), "v2 TCP6: Apache REMOTE_ADDR")
    status, info = via(REQ, v2(src="198.51.100.20"), "/cgi-bin/echo")
    is_((status, info.get("remote_addr")), (200, "198.51.100.20"), "v2 TCP4: Apache REMOTE_ADDR")
    status, info = via(REQ, v2(cmd=0x0, fam=0x00), "/owa/local")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["127.0.0.1"]), "v2 LOCAL UNSPEC: the real peer")
    status, info = via(REQ, v2(cmd=0x0, fam=0x11, src="203.0.113.99", tlvs=tlv(0x05, b"id-1")), "/owa/local")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["127.0.0.1"]),
        "v2 LOCAL with an address block and TLVs: the real peer, block skipped")
    status, info = via(REQ, v2(cmd=0x0, fam=0x00), "/cgi-bin/echo")
    is_((status, info.get("remote_addr")), (200, "127.0.0.1"), "v2 LOCAL: Apache REMOTE_ADDR is the real peer")
    status, info = via(REQ, v2(src="203.0.113.8", tlvs=ssl_tlv(0x01)), "/owa/ssl")
    is_((status, standin_header(info, "X-Forwarded-For"), standin_header(info, "X-Forwarded-Proto")),
        (200, ["203.0.113.8"], ["https"]), "v2 SSL TLV client bit: X-Forwarded-Proto https")
    fw = standin_header(info, "Forwarded")
    ok(len(fw) == 1 and "proto=https" in fw[0], "v2 SSL TLV: Forwarded proto=https (%r)" % fw)
    status, info = via(REQ, v2(src="203.0.113.9", tlvs=ssl_tlv(0x00)), "/owa/ssl")
    is_((status, standin_header(info, "X-Forwarded-Proto")), (200, ["http"]), "v2 SSL TLV without client bit: http")
    status, info = via(REQ, v2(src="203.0.113.10", tlvs=tlv(0x01, b"h2") + tlv(0x05, b"u" * 128), crc="good"),
                       "/owa/crc")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["203.0.113.10"]),
        "v2 with ALPN, 128-byte UNIQUE_ID and a good CRC32C: accepted")


def check_split():
    """A header split over several writes with delays is waited for."""
    hdr = v2(src="203.0.113.11", tlvs=ssl_tlv(0x01))
    pieces = [hdr[:5], hdr[5:13], hdr[13:16], hdr[16:20], hdr[20:]]
    t = time.monotonic()
    status, info = via(REQ, None, "/owa/split", pieces=pieces, delay=0.3)
    is_((status, standin_header(info, "X-Forwarded-For"), standin_header(info, "X-Forwarded-Proto")),
        (200, ["203.0.113.11"], ["https"]), "v2 split in 5 writes 0.3 s apart (%.1f s)" % (time.monotonic() - t))
    hdr = b"PROXY TCP4 203.0.113.12 192.0.2.1 51000 443\r\n"
    pieces = [hdr[:3], hdr[3:17], hdr[17:-1], hdr[-1:]]
    status, info = via(REQ, None, "/owa/split1", pieces=pieces, delay=0.3)
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["203.0.113.12"]), "v1 split in 4 writes (CR|LF apart)")
    # header and request in one write: the request bytes after the header are not lost
    status, info = via(REQ, None, "/owa/one", pieces=[b"PROXY TCP4 203.0.113.13 192.0.2.1 1 2\r\n"])
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["203.0.113.13"]), "v1 header, port 1 and 2")


def check_refusals():
    """Malformed headers, missing header in required mode, untrusted peers: closed, no response."""
    before_req, before_untr = proxy_errors("req"), proxy_errors("untr")
    n_ex = len(ex.events("request"))
    bad = [
        ("no header in required mode", b""),
        ("v1 port out of range", b"PROXY TCP4 203.0.113.7 192.0.2.1 65536 443\r\n"),
        ("v1 leading zero in address", b"PROXY TCP4 203.0.113.07 192.0.2.1 5000 443\r\n"),
        ("v1 leading zero in port", b"PROXY TCP4 203.0.113.7 192.0.2.1 05000 443\r\n"),
        ("v1 double space", b"PROXY TCP4  203.0.113.7 192.0.2.1 5000 443\r\n"),
        ("v1 TCP4 with an IPv6 address", b"PROXY TCP4 2001:db8::1 192.0.2.1 5000 443\r\n"),
        ("v1 bad protocol", b"PROXY UDP4 203.0.113.7 192.0.2.1 5000 443\r\n"),
        ("v1 bare LF", b"PROXY TCP4 203.0.113.7 192.0.2.1 5000 443\n"),
        ("v1 over 107 bytes", b"PROXY UNKNOWN " + b"x" * 100 + b"\r\n"),
        ("v2 bad CRC32C", v2(crc="bad")),
        ("v2 version 3", b"\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + b"\x01" * 12),
        ("v2 command 2", b"\r\n\r\n\x00\r\nQUIT\n\x22\x11\x00\x0c" + b"\x01" * 12),
        ("v2 len shorter than the INET block", v2(length=8)[:16] + b"\x01" * 8),
        ("v2 TLV overrunning len", v2(tlvs=b"\x05\x00\x10abc")),
        ("v2 UNIQUE_ID over 128 bytes", v2(tlvs=tlv(0x05, b"u" * 129))),
        ("garbage", b"HELLO WORLD\r\n\r\n"),
    ]
    for name, data in bad:
        closed, got = refused(REQ, data)
        is_((closed, got), (True, b""), "refused (closed, no response): %s" % name)
    t = time.monotonic()
    closed, got = refused(REQ, b"PROXY TCP4 203.0.113.7 192.0.2.1", wait=PROXY_HEADER_TIMEOUT + 4,
                          request=False)
    dt = time.monotonic() - t
    is_((closed, got), (True, b""), "incomplete header: closed, no response")
    ok(PROXY_HEADER_TIMEOUT - 0.5 <= dt <= PROXY_HEADER_TIMEOUT + 2,
       "closed by the proxy_header timeout (%.2f s, timeout %d s)" % (dt, PROXY_HEADER_TIMEOUT))
    closed, got = refused(UNTR, b"PROXY TCP4 203.0.113.7 192.0.2.1 5000 443\r\n")
    is_((closed, got), (True, b""), "untrusted peer, required mode, valid v1: closed, no response")
    closed, got = refused(UNTR, v2())
    is_((closed, got), (True, b""), "untrusted peer, required mode, valid v2: closed, no response")
    # optional listener, untrusted peer: a plain request is served with the peer address, a PROXY
    # header is never honoured
    status, info = via(UNTROPT, b"", "/owa/untrusted")
    is_((status, standin_header(info, "X-Forwarded-For")), (200, ["127.0.0.1"]),
        "untrusted peer, optional mode, no header: served with the peer address")
    n_mid = len(ex.events("request"))
    closed, got = refused(UNTROPT, b"PROXY TCP4 203.0.113.7 192.0.2.1 5000 443\r\n")
    ok(b"203.0.113.7" not in got and (got == b"" or got.startswith(b"HTTP/1.1 400")),
       "untrusted peer, optional mode, PROXY header: not honoured (%r)" % got[:40])
    # Sentinel: a request that must reach the stand-in; once it has, a forwarded PROXY one would have too.
    status, _ = via(UNTROPT, b"", "/owa/sentinel-untrusted")
    is_((status, len(ex.events("request"))), (200, n_mid + 1),
        "untrusted PROXY header: nothing reached the stand-in (only the sentinel after it)")
    is_(n_mid, n_ex + 1, "refused connections reached no backend")
    d_req = wait_for(lambda: (lambda v: v if v >= len(bad) + 1 else None)(proxy_errors("req") - before_req), 3)
    is_(d_req, len(bad) + 1, "exrelay_proxy_header_errors_total{req} counts the %d refusals" % (len(bad) + 1))
    d_untr = proxy_errors("untr") - before_untr
    is_(d_untr, 2, "exrelay_proxy_header_errors_total{untr} counts the untrusted peers")
    ok(relay.alive(), "exrelay still running after the refusals")


run_checks((check_v1, check_v2, check_split, check_refusals), relay, T0)
